"""Row codecs of the portfolio store: validated frames as driver-ready columns, and fetched rows decoded.

- :class:`_PreparedBars`: a canonical bar frame checked whole (columns, canonical symbols and timeframes,
  finite values, unique keys) and held as column arrays: tuples for SQLite's ``executemany`` and PostgreSQL's
  binary ``COPY`` built with numpy.
- :class:`_PreparedRows`: a forecast or model-evaluation frame checked whole, naming the column and the first
  offending row, held as one list per column: tuples for ``executemany`` and text ``COPY`` data.
- :func:`_decode`: fetched ``ts``/``int``/``float`` columns as arrays, with the mask of the stored values that
  cannot be decoded (SQLite keeps whatever it is given).

Plain Python on numpy and pandas; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, Boolean, Float, Integer, func
from sqlalchemy.sql.expression import cast, type_coerce

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, parse_timeframe
from airflow_provider_portfolio.market.params import validate_symbols
from airflow_provider_portfolio.store import schema

#: Rows per ``executemany`` batch (SQLite) and per ``COPY`` write (PostgreSQL).
BATCH_ROWS = 50_000
#: Symbols per query when a symbol list is given (keeps SQLite's bound-parameter limit far away).
SYMBOLS_PER_QUERY = 500
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds: PostgreSQL's timestamp origin
_UNIT_TO_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
#: The value columns of a bar, in the bar frame's order.
_VALUES = ("open", "high", "low", "close", "volume")
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_PG_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def _utc(value: Any, name: str) -> pd.Timestamp | None:
    """A bound as a UTC ``Timestamp`` (naive means UTC); ``None`` stays ``None``."""
    if value is None:
        return None
    if not isinstance(value, (str, date, datetime, pd.Timestamp, np.datetime64)):
        raise InvalidInputError(f"{name} must be a timestamp, datetime, date or ISO string, got {value!r}")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InvalidInputError(f"{name}: cannot read {value!r} as a timestamp") from None
    if pd.isna(ts):
        raise InvalidInputError(f"{name} is not a timestamp: {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _symbol_list(symbols: Any) -> list[str]:
    if isinstance(symbols, str):
        symbols = [symbols]
    if not isinstance(symbols, (list, tuple, set, frozenset, pd.Index, np.ndarray)) or not all(
        isinstance(s, str) for s in symbols
    ):
        raise InvalidInputError(f"symbols must be a list of strings, got {symbols!r}")
    return list(dict.fromkeys(symbols))


def _chunks(items: Sequence[str], size: int | None = None) -> Iterator[list[str]]:
    """``items`` in lists of at most ``size`` (default :data:`SYMBOLS_PER_QUERY`, read at call time)."""
    size = SYMBOLS_PER_QUERY if size is None else size
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


class _PreparedBars:
    """A validated bar frame as column arrays ready for the drivers."""

    def __init__(self, frame: Any) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(f"upsert_bars needs a pandas DataFrame, got {type(frame).__name__}")
        missing = [c for c in BAR_COLUMNS if c not in frame.columns]
        if missing:
            raise InvalidInputError(f"bar frame lacks column(s) {missing}; expected {list(BAR_COLUMNS)}")
        self.n = len(frame)
        codes: dict[str, tuple[np.ndarray, pd.Index]] = {}
        for name in ("symbol", "timeframe", "source"):
            col_codes, uniques = pd.factorize(frame[name])
            missing_rows = col_codes < 0
            if missing_rows.any():
                raise InvalidInputError(f"bar frame: column {name!r} has missing values at rows "
                                        f"{list(frame.index[missing_rows][:5])}")
            odd = [v for v in uniques if not isinstance(v, str) or not v]
            if odd:
                raise InvalidInputError(f"bar frame: column {name!r} holds empty or non-string values {odd[:5]}")
            codes[name] = (col_codes, uniques)
        self.sym_codes, self.sym_names = codes["symbol"]
        self.tf_codes, self.tf_names = codes["timeframe"]
        self.src_codes, self.src_names = codes["source"]
        names = [str(s) for s in self.sym_names]
        if names and validate_symbols(names) != names:  # validate_symbols raises on a non-ticker
            raise InvalidInputError(
                "bar frame: symbols must be written canonically (upper case): "
                f"{[s for s in names if s != s.upper()][:5]}"
            )
        for tf in self.tf_names:
            if parse_timeframe(tf).name != tf:
                canonical = parse_timeframe(tf).name
                raise InvalidInputError(f"bar frame: timeframe {tf!r} is not canonical (write {canonical!r})")
        self.ts_us = self._timestamps(frame["ts"])
        self.values: dict[str, np.ndarray] = {}
        for name in _VALUES:
            try:
                arr = np.asarray(frame[name], dtype="float64")
            except (TypeError, ValueError):
                raise InvalidInputError(f"bar frame: column {name!r} is not numeric") from None
            bad = ~np.isfinite(arr)
            if bad.any():
                raise InvalidInputError(f"bar frame: column {name!r} holds NaN or infinite values at rows "
                                        f"{list(frame.index[bad][:5])}")
            self.values[name] = arr
        self._check_unique_keys(frame)
        self.strings = {k: frame[k].to_numpy(dtype=object) for k in ("symbol", "timeframe", "source")}

    @staticmethod
    def _timestamps(col: pd.Series) -> np.ndarray:
        if not isinstance(col.dtype, pd.DatetimeTZDtype):
            try:
                col = pd.to_datetime(col, utc=True)  # naive means UTC; offsets are converted
            except (TypeError, ValueError, OverflowError):
                raise InvalidInputError("bar frame: column 'ts' does not hold timestamps") from None
        if col.isna().any():
            raise InvalidInputError("bar frame: column 'ts' holds missing timestamps (NaT)")
        col = col.dt.tz_convert("UTC")
        ints = col.array.asi8
        factor = _UNIT_TO_US[col.dt.unit]
        if factor is None:
            if (ints % 1000).any():
                raise InvalidInputError("bar frame: timestamps finer than a microsecond cannot be stored")
            return ints // 1000
        return ints * factor

    def _check_unique_keys(self, frame: pd.DataFrame) -> None:
        key = self.sym_codes.astype(np.int64) * max(len(self.tf_names), 1) + self.tf_codes
        ts = self.ts_us
        if self.n > 1:
            dk, dt = np.diff(key), np.diff(ts)
            if ((dk > 0) | ((dk == 0) & (dt > 0))).all():  # grouped by key and sorted by ts: unique
                return
            order = np.lexsort((ts, key))
            same = (key[order][1:] == key[order][:-1]) & (ts[order][1:] == ts[order][:-1])
            if same.any():
                rows = frame.index[order[1:][same]][:5]
                raise InvalidInputError(f"bar frame: duplicate (symbol, timeframe, ts) keys at rows {list(rows)}")

    def key_ranges(self) -> tuple[list[str], list[str], list[int], list[int]]:
        """The batch's (symbol, timeframe) pairs and the first and last timestamp of each (epoch microseconds):
        parallel lists of symbols, timeframes, lows and highs."""
        key = self.sym_codes.astype(np.int64) * max(len(self.tf_names), 1) + self.tf_codes
        frame = pd.DataFrame({"key": key, "ts": self.ts_us}).groupby("key", sort=True)["ts"].agg(["min", "max"])
        keys = frame.index.to_numpy()
        width = max(len(self.tf_names), 1)
        return ([str(self.sym_names[k // width]) for k in keys], [str(self.tf_names[k % width]) for k in keys],
                frame["min"].astype(np.int64).tolist(), frame["max"].astype(np.int64).tolist())

    def sqlite_batches(self, size: int) -> Iterator[list[tuple]]:
        cols = [self.strings["symbol"], self.strings["timeframe"], self.ts_us, *self.values.values(),
                self.strings["source"]]
        for i in range(0, self.n, size):
            yield list(zip(*(c[i : i + size].tolist() for c in cols), strict=True))

    def pg_copy_chunks(self, size: int) -> Iterator[bytes]:
        """PostgreSQL binary ``COPY`` data, built with numpy in blocks of at most ``size`` rows.

        Text fields are variable length, so rows are grouped by the byte lengths of their symbol,
        timeframe and source (a handful of groups); each group is one fixed-layout record array.
        Order inside a group is kept (a stable sort), so each symbol's rows stay contiguous and sorted.
        """
        encoded = {
            name: [str(v).encode() for v in uniques]
            for name, uniques in (("symbol", self.sym_names), ("timeframe", self.tf_names), ("source", self.src_names))
        }
        codes = {"symbol": self.sym_codes, "timeframe": self.tf_codes, "source": self.src_codes}
        lengths = {name: np.array([len(b) for b in enc], dtype=np.int64)[codes[name]] for name, enc in encoded.items()}
        luts = {name: np.array(enc, dtype=f"S{max(len(b) for b in enc)}") for name, enc in encoded.items()}
        span = int(max(int(v.max()) for v in lengths.values())) + 1
        group = (lengths["symbol"] * span + lengths["timeframe"]) * span + lengths["source"]
        if group.min() == group.max():
            order, bounds = np.arange(self.n), np.empty(0, dtype=np.int64)
        else:
            order = np.argsort(group, kind="stable")
            bounds = np.flatnonzero(np.diff(group[order])) + 1
        yield _PG_COPY_HEADER
        for block in np.split(order, bounds):
            first = block[0]
            widths = {name: int(lengths[name][first]) for name in encoded}
            layout = np.dtype([
                ("n", ">i2"),
                ("len_symbol", ">i4"), ("symbol", f"S{widths['symbol']}"),
                ("len_timeframe", ">i4"), ("timeframe", f"S{widths['timeframe']}"),
                ("len_ts", ">i4"), ("ts", ">i8"),
                *[item for name in _VALUES for item in ((f"len_{name}", ">i4"), (name, ">f8"))],
                ("len_source", ">i4"), ("source", f"S{widths['source']}"),
            ])
            for i in range(0, len(block), size):
                rows_idx = block[i : i + size]
                rows = np.empty(len(rows_idx), dtype=layout)
                rows["n"] = len(BAR_COLUMNS)
                for name in encoded:
                    rows[f"len_{name}"] = widths[name]
                    rows[name] = luts[name][codes[name][rows_idx]]
                rows["len_ts"] = 8
                rows["ts"] = self.ts_us[rows_idx] - _PG_EPOCH_US
                for name in _VALUES:
                    rows[f"len_{name}"] = 8
                    rows[name] = self.values[name][rows_idx]
                yield rows.tobytes()
        yield _PG_COPY_TRAILER


#: Range rules ``(low, low_open, high, high_open)`` checked on numeric columns of the forecast tables.
_RANGES: dict[str, dict[str, tuple[float | None, bool, float | None, bool]]] = {
    "forecasts": {
        "step": (1, False, None, False),
        "level": (0.0, True, 1.0, True),
        "variance": (0.0, False, None, False),
    },
    "model_evaluations": {
        "horizon": (1, False, None, False),
        "origins": (0, False, None, False),
        "rmse": (0.0, False, None, False),
        "mae": (0.0, False, None, False),
        "directional_accuracy": (0.0, False, 1.0, False),
        "coverage": (0.0, False, 1.0, False),
        "baseline_rmse": (0.0, False, None, False),
    },
}
_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {"model_evaluations": {"label": schema.EVALUATION_LABELS}}
_INT32_MAX = 2**31 - 1
#: Relative slack allowed on ``lower <= point <= upper`` (rounding in interval arithmetic).
_INTERVAL_SLACK = 1e-9


def _kind(column: Any) -> str:
    """The value kind of a table column: ``ts``, ``bool``, ``int``, ``float`` or ``text``."""
    if isinstance(column.type, schema.UtcTimestamp):
        return "ts"
    if isinstance(column.type, Boolean):
        return "bool"
    if isinstance(column.type, Integer):
        return "int"
    if isinstance(column.type, Float):
        return "float"
    return "text"


def _name_list(value: Any, name: str) -> list[str] | None:
    """``None``, one string or a list of strings as a de-duplicated list (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset, pd.Index, np.ndarray)) or not all(
        isinstance(v, str) for v in value
    ):
        raise InvalidInputError(f"{name} must be a string or a list of strings, got {value!r}")
    return list(dict.fromkeys(value))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (for messages: ``3``, not ``np.int64(3)``)."""
    return value.item() if isinstance(value, np.generic) else value


#: Fetched values of each decoded kind: the numpy dtype and what a stored value must be (for messages).
_DECODED = {"ts": ("int64", "an instant (epoch microseconds)"), "int": ("int64", "an integer"),
            "float": ("float64", "a number")}
#: Epoch microseconds pandas can hold (``datetime64[ns]``: 1677-09-21 .. 2262-04-11).
_TS_US_RANGE = (-(2**63 - 1) // 1000 + 1, (2**63 - 1) // 1000)


def _decode(values: Sequence[Any], kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A fetched ``ts``, ``int`` or ``float`` column as an array, and the mask of values that cannot be decoded.

    A healthy column costs one vectorised conversion (and a range check for timestamps); only a column
    that fails it is decoded value by value to find the corrupt ones (SQLite stores whatever it is given:
    a close or a timestamp written as text by hand stays text). The mask is ``None`` when all are fine;
    corrupt positions hold 0 in the array. ``None`` is NaN in a float column (a nullable one) and corrupt
    elsewhere.

    :param values: the column's fetched values.
    :param kind: ``ts``, ``int`` or ``float``.
    """
    dtype = _DECODED[kind][0]
    try:
        arr = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        arr = None
    if arr is not None and arr.ndim == 1 and len(values) == len(arr):
        if kind != "ts" or not len(arr) or (_TS_US_RANGE[0] <= arr.min() and arr.max() <= _TS_US_RANGE[1]):
            return arr, None
    arr = np.zeros(len(values), dtype=dtype)
    bad = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        if value is None and kind == "float":
            arr[i] = np.nan
            continue
        if value is None or isinstance(value, (bytes, bytearray, memoryview)):
            bad[i] = True
            continue
        try:
            arr[i] = value
        except (TypeError, ValueError, OverflowError):
            bad[i] = True
    if kind == "ts":
        bad |= (arr < _TS_US_RANGE[0]) | (arr > _TS_US_RANGE[1])
        arr[bad] = 0
    return arr, bad if bad.any() else None


def _stored(value: Any) -> str:
    """A stored value for a message: its repr and, when it is not a number, its type (``'abc' (text)``)."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if isinstance(value, str):
        return f"{shown} (text)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{shown} (blob)"
    return shown


def _ts_text(us: int) -> str:
    """Epoch microseconds as ISO 8601 UTC (``2024-06-03T00:00:00+00:00``)."""
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(us))).isoformat()


class _PreparedRows:
    """A validated frame for ``forecasts`` or ``model_evaluations``: one Python list per column.

    :param frame: the caller's frame (extra columns are ignored; ``created_at`` is optional).
    :param table: the target table.
    :param what: how messages name the frame (``forecast frame``).
    :param now: ``created_at`` of rows that give none.
    """

    def __init__(self, frame: Any, table: Any, what: str, now: datetime) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
        self.table = table
        self.what = what
        self.n = len(frame)
        self.values: dict[str, list[Any]] = {}
        self.ts_us: dict[str, np.ndarray] = {}
        if self.n == 0:  # nothing to write: any columns will do
            return
        names = [c.name for c in table.columns]
        missing = [c for c in names if c != "created_at" and c not in frame.columns]
        if missing:
            raise InvalidInputError(f"{what} lacks column(s) {missing}; expected {names} (created_at is optional)")
        self._index = frame.index
        ranges, choices = _RANGES.get(table.name, {}), _CHOICES.get(table.name, {})
        now_us = (now - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
        for column in table.columns:
            name, kind = column.name, _kind(column)
            if name not in frame.columns:  # created_at
                self.ts_us[name] = np.full(self.n, now_us, dtype=np.int64)
            elif kind == "ts":
                self.ts_us[name] = self._timestamps(name, frame[name], now_us if name == "created_at" else None)
            elif kind == "text":
                self.values[name] = self._text(name, frame[name], column.type.length, choices.get(name))
            elif kind == "bool":
                self.values[name] = self._booleans(name, frame[name])
            else:
                self.values[name] = self._numbers(name, frame[name], kind, column.nullable, ranges.get(name))
        if table.name == "forecasts":
            self._check_interval()
        self._check_unique_keys()

    # -- validation helpers -------------------------------------------------------------------------
    def _fail(self, name: str, position: int, problem: str, value: Any) -> NoReturn:
        raise InvalidInputError(f"{self.what}: column {name!r} {problem} at row {_plain(self._index[position])!r} "
                                f"(value {_plain(value)!r})")

    def _text(self, name: str, col: pd.Series, length: int | None, choices: tuple[str, ...] | None) -> list[str]:
        codes, uniques = pd.factorize(col)
        problems = [self._text_problem(name, u, length, choices) for u in uniques]
        bad = np.array([p is not None for p in problems] + [True], dtype=bool)[codes]  # code -1: missing
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            code = int(codes[first])
            problem = "is missing" if code < 0 else problems[code]
            assert problem is not None  # ``bad`` marks missing values and those with a problem
            self._fail(name, first, problem, col.iloc[first])
        return np.array([str(u) for u in uniques] + [""], dtype=object)[codes].tolist()  # plain str, not np.str_

    @staticmethod
    def _text_problem(name: str, value: Any, length: int | None, choices: tuple[str, ...] | None) -> str | None:
        if not isinstance(value, str):
            return f"is not a string ({type(value).__name__})"
        if not value.strip():
            return "is empty"
        if length is not None and len(value) > length:
            return f"is longer than {length} characters"
        if choices is not None and value not in choices:
            return f"is not one of {list(choices)}"
        if name == "symbol":
            try:
                canonical = validate_symbols([value])
            except InvalidInputError:
                return "is not a ticker (e.g. 'AAPL', 'BRK.B' or a crypto pair 'BTC/USD')"
            if canonical != [value]:
                return f"is not written canonically (write {canonical[0]!r})"
        if name == "timeframe":
            try:
                canonical_tf = parse_timeframe(value).name
            except InvalidInputError:
                return "is not a timeframe (e.g. '5Min', '1Hour', '1Day')"
            if canonical_tf != value:
                return f"is not written canonically (write {canonical_tf!r})"
        return None

    def _numbers(self, name: str, col: pd.Series, kind: str, nullable: bool,
                 bounds: tuple[float | None, bool, float | None, bool] | None) -> list[Any]:
        if pd.api.types.is_bool_dtype(col.dtype):
            self._fail(name, 0, "holds booleans, not numbers", col.iloc[0])
        try:
            arr = col.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):
            coerced = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            odd = np.isnan(coerced) & col.notna().to_numpy()
            first = int(np.flatnonzero(odd)[0]) if odd.any() else 0
            self._fail(name, first, "is not a number", col.iloc[first])
        missing = np.isnan(arr)
        if not nullable and missing.any():
            first = int(np.flatnonzero(missing)[0])
            self._fail(name, first, "is missing (NaN)", col.iloc[first])
        infinite = np.isinf(arr)
        if infinite.any():
            first = int(np.flatnonzero(infinite)[0])
            self._fail(name, first, "is infinite" + (" (use NaN for an undefined value)" if nullable else ""),
                       col.iloc[first])
        if kind == "int":
            odd = (arr != np.round(arr)) | (np.abs(arr) > _INT32_MAX)
            if odd.any():
                first = int(np.flatnonzero(odd)[0])
                self._fail(name, first, "is not an integer (32-bit)", col.iloc[first])
        if bounds is not None:
            low, low_open, high, high_open = bounds
            out = np.zeros(len(arr), dtype=bool)
            with np.errstate(invalid="ignore"):
                if low is not None:
                    out |= (arr <= low) if low_open else (arr < low)
                if high is not None:
                    out |= (arr >= high) if high_open else (arr > high)
            if out.any():
                first = int(np.flatnonzero(out)[0])
                lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
                hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
                self._fail(name, first, f"must be {' and '.join(p for p in (lo, hi) if p)}", col.iloc[first])
        if kind == "int":
            return arr.astype(np.int64).tolist()
        values = arr.tolist()
        if nullable and missing.any():
            for i in np.flatnonzero(missing).tolist():
                values[i] = None
        return values

    def _booleans(self, name: str, col: pd.Series) -> list[bool]:
        codes, uniques = pd.factorize(col)
        ok = [isinstance(u, (bool, np.bool_)) or (isinstance(u, (int, np.integer)) and u in (0, 1)) for u in uniques]
        bad = np.array([not o for o in ok] + [True], dtype=bool)[codes]
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            self._fail(name, first, "is missing" if codes[first] < 0 else "is not a boolean", col.iloc[first])
        truth = np.array([bool(u) for u in uniques] + [False], dtype=bool)
        return truth[codes].tolist()

    def _timestamps(self, name: str, col: pd.Series, fill_us: int | None) -> np.ndarray:
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            stamps = col.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(col.dtype):
            stamps = col.dt.tz_localize("UTC")
        elif pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            self._fail(name, 0, "holds numbers, not timestamps", col.iloc[0])
        else:
            stamps = None
            for fmt in (None, "mixed"):  # strings in several ISO spellings need "mixed"
                try:
                    stamps = pd.to_datetime(col, utc=True, format=fmt)
                    break
                except (TypeError, ValueError, OverflowError):
                    continue
            if stamps is None:
                for i, value in enumerate(col.tolist()):
                    try:
                        pd.to_datetime(value, utc=True)
                    except (TypeError, ValueError, OverflowError):
                        self._fail(name, i, "is not a timestamp", value)
                self._fail(name, 0, "does not hold timestamps", col.iloc[0])
        missing = stamps.isna().to_numpy()
        try:
            ns = stamps.dt.as_unit("ns").array.asi8.copy()
        except (ValueError, OverflowError):
            self._fail(name, 0, "holds timestamps out of the range 1677..2262", col.iloc[0])
        if missing.any():
            if fill_us is None:
                first = int(np.flatnonzero(missing)[0])
                self._fail(name, first, "is missing (NaT)", col.iloc[first])
            ns[missing] = fill_us * 1000
        fine = ns % 1000 != 0
        if fine.any():
            first = int(np.flatnonzero(fine)[0])
            self._fail(name, first, "is finer than a microsecond (cannot be stored)", col.iloc[first])
        return ns // 1000

    def _check_interval(self) -> None:
        point, lower, upper = (np.asarray(self.values[c], dtype="float64") for c in ("point", "lower", "upper"))
        slack = _INTERVAL_SLACK * np.maximum(1.0, np.maximum(np.abs(point), np.maximum(np.abs(lower), np.abs(upper))))
        for name, bad, problem in (
            ("lower", lower - point > slack, "is above point"),
            ("upper", point - upper > slack, "is below point"),
        ):
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                self._fail(name, first, problem, self.values[name][first])

    def _check_unique_keys(self) -> None:
        key = [c.name for c in self.table.primary_key.columns]
        dup = pd.DataFrame({c: self.values[c] for c in key}).duplicated().to_numpy()
        if dup.any():
            first = int(np.flatnonzero(dup)[0])
            value = tuple(self.values[c][first] for c in key)
            raise InvalidInputError(f"{self.what}: duplicate key ({', '.join(key)}) at row "
                                    f"{_plain(self._index[first])!r} (value {value!r})")

    # -- output ---------------------------------------------------------------------------------------
    def run_keys(self) -> set[tuple[str, str, str, str]]:
        """The distinct (run_id, model, symbol, timeframe) keys of the frame."""
        if self.n == 0:
            return set()
        return set(zip(*(self.values[c] for c in schema.FORECAST_RUN_KEY), strict=True))

    def _column_lists(self) -> list[list[Any]]:
        """The table's columns in order, timestamps as epoch microseconds, nulls as ``None``."""
        return [self.ts_us[c.name].tolist() if c.name in self.ts_us else self.values[c.name]
                for c in self.table.columns]

    def sqlite_batches(self, size: int) -> Iterator[list[tuple]]:
        """Row tuples for ``executemany`` on ``sqlite3``, in batches of at most ``size`` rows."""
        columns = self._column_lists()
        for i in range(0, self.n, size):
            yield list(zip(*(c[i : i + size] for c in columns), strict=True))

    def pg_copy_chunks(self, size: int) -> Iterator[bytes]:
        """PostgreSQL text ``COPY`` data (tab-separated, ``\\N`` for NULL), in blocks of at most ``size`` rows.

        Floats are written with ``repr`` (the shortest text that reads back to the same double), timestamps
        as ISO 8601 UTC with microseconds.
        """
        columns: list[list[str]] = []
        for column in self.table.columns:
            kind = _kind(column)
            if kind == "ts":
                text = np.datetime_as_string(self.ts_us[column.name].view("datetime64[us]"), unit="us")
                columns.append([t + "+00" for t in text.tolist()])
            elif kind == "text":
                escaped = {v: _copy_escape(v) for v in set(self.values[column.name])}
                columns.append([escaped[v] for v in self.values[column.name]])
            elif kind == "bool":
                columns.append(["t" if v else "f" for v in self.values[column.name]])
            elif kind == "int":
                columns.append([str(v) for v in self.values[column.name]])
            else:
                columns.append(["\\N" if v is None else repr(v) for v in self.values[column.name]])
        for i in range(0, self.n, size):
            rows = zip(*(c[i : i + size] for c in columns), strict=True)
            yield ("".join("\t".join(row) + "\n" for row in rows)).encode()


def _copy_escape(text: str) -> str:
    """``text`` escaped for PostgreSQL's text ``COPY`` format."""
    if not any(ch in text for ch in "\\\t\n\r"):
        return text
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _ts_us(dialect: str, expr: Any = None) -> Any:
    """``expr`` (default ``bars.ts``) as integer epoch microseconds in SQL: no per-row datetime objects.

    :param dialect: ``sqlite`` or ``postgresql``.
    """
    expr = schema.bars.c.ts if expr is None else expr
    if dialect == "postgresql":
        return cast(func.extract("epoch", expr) * 1_000_000, BigInteger)
    return type_coerce(expr, BigInteger)


class _ChunkReader:
    """A file-like ``read()`` over an iterator of byte chunks (for psycopg2's ``copy_expert``)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out
