"""PortfolioStore: the bars, forecasts and model-evaluations repository on SQLAlchemy Core, for SQLite and PostgreSQL.

Writes are idempotent upserts on (symbol, timeframe, ts), one transaction per call, batched:
``executemany`` of pre-converted tuples on the raw ``sqlite3`` connection, and on PostgreSQL a binary
``COPY`` into a temporary staging table followed by one ``INSERT ... SELECT ... ON CONFLICT``. An
identical re-upsert changes nothing and reports 0 rows.

Forecasts and model evaluations are written per (run_id, model, symbol, timeframe) key: one transaction
deletes the stored rows of the keys in the call (in bulk, per run/model/timeframe and symbol chunk) and
inserts the new ones with ``executemany``; PostgreSQL writers of forecasts queue on an advisory lock.

SQLite connections run in WAL mode with ``busy_timeout`` and ``synchronous=NORMAL``, and write
transactions start with ``BEGIN IMMEDIATE``, so several processes (parallel mapped tasks) can write
to one file: they queue for up to ``busy_timeout_s`` instead of failing.

Nothing waits forever on PostgreSQL either: every connection carries a server ``lock_timeout`` (a write
blocked by another session's row, table or advisory lock gives up after ``lock_timeout_s``, default
30 s), a ``statement_timeout`` (300 s), a ``connect_timeout`` (10 s) and TCP keepalives (a dead server
or network is noticed in about two minutes), all set as libpq parameters when the connection opens.

Every driver failure surfaces as :class:`StoreError` naming the store by its password-hidden URL; a
timeout says which one fired and its value. A stored row that cannot be decoded (SQLite keeps a price
or a timestamp written as text by hand) is a :class:`StoreError` naming the table, the symbol and the
row; :meth:`PortfolioStore.read_bars_checked` reports such symbols instead and reads the others.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pandas as pd
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql.expression import cast, type_coerce

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, empty_bars, parse_timeframe
from airflow_provider_portfolio.market.params import validate_symbols
from airflow_provider_portfolio.store import schema

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

__all__ = ["PortfolioStore"]

#: Rows per ``executemany`` batch (SQLite) and per ``COPY`` write (PostgreSQL).
BATCH_ROWS = 50_000
#: Symbols per query when a symbol list is given (keeps SQLite's bound-parameter limit far away).
_SYMBOLS_PER_QUERY = 500
#: Key of the PostgreSQL advisory lock that serialises migrations.
_MIGRATION_LOCK_KEY = 0x706F7274666F6C69  # "portfoli"
#: Key of the PostgreSQL advisory lock that serialises forecast writes (replace = delete + insert).
_FORECAST_LOCK_KEY = 0x666F7265636173  # "forecas"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds: PostgreSQL's timestamp origin
_UNIT_TO_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
_SCHEMES = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB (also postgres:// and postgresql+psycopg2://)"

_VALUES = ("open", "high", "low", "close", "volume")
_SQLITE_UPSERT = (
    f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) VALUES ({', '.join('?' * len(BAR_COLUMNS))}) "
    "ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in schema.BAR_VALUE_COLUMNS)
    + " WHERE "
    + " OR ".join(f"bars.{c} IS NOT excluded.{c}" for c in schema.BAR_VALUE_COLUMNS)
)
_PG_STAGE = "_portfolio_bars_stage"
_PG_CREATE_STAGE = f"CREATE TEMPORARY TABLE {_PG_STAGE} (LIKE bars) ON COMMIT DROP"
_PG_COPY = f"COPY {_PG_STAGE} ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_KEY_MATCH = " AND ".join(f"b.{c} = s.{c}" for c in ("symbol", "timeframe", "ts"))
_PG_DIFFERS = (f"({', '.join('b.' + c for c in schema.BAR_VALUE_COLUMNS)}) IS DISTINCT FROM "
               f"({', '.join('s.' + c for c in schema.BAR_VALUE_COLUMNS)})")
# Step 1: update the stored rows whose values differ.
_PG_UPDATE = (
    f"UPDATE bars AS b SET {', '.join(f'{c} = s.{c}' for c in schema.BAR_VALUE_COLUMNS)} "
    f"FROM {_PG_STAGE} AS s WHERE {_PG_KEY_MATCH} AND {_PG_DIFFERS}"
)
# Step 2: plain insert of the new keys (twice as fast as ON CONFLICT on bulk loads)...
_PG_INSERT_NEW = (
    f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) SELECT {', '.join('s.' + c for c in BAR_COLUMNS)} "
    f"FROM {_PG_STAGE} AS s WHERE NOT EXISTS (SELECT 1 FROM bars AS b WHERE {_PG_KEY_MATCH})"
)
# ... or, when a concurrent writer inserted some of those keys meanwhile, the upsert itself.
_PG_UPSERT = (
    f"INSERT INTO bars AS b ({', '.join(BAR_COLUMNS)}) SELECT {', '.join(BAR_COLUMNS)} FROM {_PG_STAGE} "
    "ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in schema.BAR_VALUE_COLUMNS)
    + f" WHERE ({', '.join('b.' + c for c in schema.BAR_VALUE_COLUMNS)}) IS DISTINCT FROM "
    f"({', '.join('EXCLUDED.' + c for c in schema.BAR_VALUE_COLUMNS)})"
)
#: Defaults of the PostgreSQL timeouts, seconds (see :class:`PortfolioStore`).
DEFAULT_LOCK_TIMEOUT_S = 30.0
DEFAULT_STATEMENT_TIMEOUT_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVES_IDLE_S = 60.0
_KEEPALIVES_INTERVAL_S = 10
_KEEPALIVES_COUNT = 5
#: Attempts of a PostgreSQL upsert that lost a deadlock to a concurrent writer.
_PG_ATTEMPTS = 4
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_PG_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def _normalise_url(url: str | URL) -> URL:
    """Parse and canonicalise a store URL; never echoes it (it may hold a password)."""
    if isinstance(url, Path):
        url = f"sqlite:///{url}"
    if not isinstance(url, (str, URL)) or not str(url).strip():
        raise InvalidInputError(f"store URL must be a non-empty string such as {_SCHEMES}")
    try:
        parsed = make_url(url.strip() if isinstance(url, str) else url)
    except Exception:  # the text may contain a password: do not repeat it
        raise InvalidInputError(f"cannot parse the store URL; expected {_SCHEMES}") from None
    backend, _, driver = parsed.drivername.partition("+")
    shown = parsed.render_as_string(hide_password=True)
    if backend in ("postgres", "postgresql"):
        if driver in ("", "psycopg"):
            return parsed.set(drivername="postgresql+psycopg")
        if driver == "psycopg2":
            try:
                import psycopg2  # noqa: F401
            except ImportError:
                raise InvalidInputError(
                    f"store URL {shown} asks for psycopg2, which is not installed; use postgresql:// (psycopg 3)"
                ) from None
            return parsed.set(drivername="postgresql+psycopg2")
        raise InvalidInputError(f"store URL {shown}: unsupported PostgreSQL driver {driver!r} (use psycopg)")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed.set(drivername="sqlite")
    raise InvalidInputError(f"store URL {shown}: unsupported scheme {parsed.drivername!r}; expected {_SCHEMES}")


def _seconds(value: Any, name: str, *, positive: bool = False) -> float:
    """A timeout parameter as float seconds: a finite number >= 0 (> 0 when ``positive``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0 or (positive and value == 0):
        raise InvalidInputError(f"{name} must be a finite number of seconds {'>' if positive else '>='} 0, "
                                f"got {value!r}")
    return float(value)


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


def _chunks(items: Sequence[str], size: int = _SYMBOLS_PER_QUERY) -> Iterator[list[str]]:
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
            self._fail(name, first, "is missing" if code < 0 else problems[code], col.iloc[first])
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


class PortfolioStore:
    """The portfolio store: bars, forecasts and model evaluations (and later orders...) in SQLite or PostgreSQL.

    Creating the object does no I/O; the engine is created on first use (and again in a forked child).

    :param url: SQLAlchemy URL: ``sqlite:///PATH``, ``postgresql://...`` or ``postgres://...`` (driven by
        psycopg 3), or ``postgresql+psycopg2://...`` when psycopg2 is installed.
    :param busy_timeout_s: SQLite: how long a write waits for another writer's lock before failing.
    :param lock_timeout_s: PostgreSQL: how long one statement waits for a row, table or advisory lock
        held by another session before it fails (server ``lock_timeout``); 0 waits without limit.
    :param statement_timeout_s: PostgreSQL: how long one statement may run, waits included, before the
        server cancels it (``statement_timeout``); 0 means no limit.
    :param connect_timeout_s: PostgreSQL: how long opening a connection may take (> 0).
    :param keepalives_idle_s: PostgreSQL: TCP keepalive probes start after this many idle seconds (then
        every 10 s, 5 unanswered probes drop the connection), so a dead server or network never leaves
        a read waiting forever; 0 turns keepalives off.
    :raises InvalidInputError: for a URL that cannot be parsed or has an unsupported scheme, or a timeout
        that is not a finite number of seconds >= 0.
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 keepalives_idle_s: float = DEFAULT_KEEPALIVES_IDLE_S) -> None:
        self._url = _normalise_url(url)
        self.busy_timeout_s = _seconds(busy_timeout_s, "busy_timeout_s")
        self.lock_timeout_s = _seconds(lock_timeout_s, "lock_timeout_s")
        self.statement_timeout_s = _seconds(statement_timeout_s, "statement_timeout_s")
        self.connect_timeout_s = _seconds(connect_timeout_s, "connect_timeout_s", positive=True)
        self.keepalives_idle_s = _seconds(keepalives_idle_s, "keepalives_idle_s")
        #: The URL with the password hidden: safe to log.
        self.url: str = self._url.render_as_string(hide_password=True)
        #: ``"sqlite"`` or ``"postgresql"``.
        self.dialect: str = self._url.get_backend_name()
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._bars_ready = False
        self._forecasts_ready = False

    @classmethod
    def for_sqlite_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> PortfolioStore:
        """A store on the SQLite file ``path`` (created with its directory on first use).

        :param path: the database file.
        :param kwargs: passed to :class:`PortfolioStore` (``busy_timeout_s``).
        """
        return cls(URL.create("sqlite", database=os.fspath(path)).render_as_string(), **kwargs)

    def __repr__(self) -> str:
        return f"PortfolioStore({self.url!r})"

    # -- engine and errors ----------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use and cached (per process)."""
        if self._engine is None or self._engine_pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)  # inherited through fork: leave the parent's connections alone
            with self._errors("open the store"):
                self._engine = self._create_engine()
            self._engine_pid = os.getpid()
        return self._engine

    def _pg_connect_args(self) -> dict[str, Any]:
        """libpq parameters of every PostgreSQL connection: timeouts and keepalives.

        Parameters the URL sets itself (``?keepalives_idle=...``) win; ``options`` of the URL are kept and
        come after the store's, so a ``-c lock_timeout=...`` there wins too.
        """
        query = self._url.query
        args: dict[str, Any] = {"connect_timeout": max(1, round(self.connect_timeout_s))}
        if self.keepalives_idle_s > 0:
            args.update(keepalives=1, keepalives_idle=max(1, round(self.keepalives_idle_s)),
                        keepalives_interval=_KEEPALIVES_INTERVAL_S, keepalives_count=_KEEPALIVES_COUNT)
        else:
            args["keepalives"] = 0
        settings = [f"-c {name}={max(1, round(seconds * 1000))}"  # milliseconds; 0 stays "no limit"
                    for name, seconds in (("lock_timeout", self.lock_timeout_s),
                                          ("statement_timeout", self.statement_timeout_s)) if seconds > 0]
        given = query.get("options")
        given = " ".join(given) if isinstance(given, tuple) else given
        if settings or given:
            args["options"] = " ".join([*settings, *([given] if given else [])])
        return {k: v for k, v in args.items() if k == "options" or k not in query}

    def _create_engine(self) -> Engine:
        if self.dialect == "postgresql":
            return create_engine(self._url, pool_pre_ping=True, connect_args=self._pg_connect_args())
        database = self._url.database or ""
        memory = database in ("", ":memory:") or "mode=memory" in database
        kwargs: dict[str, Any] = {"connect_args": {"timeout": self.busy_timeout_s}}
        if memory:
            from sqlalchemy.pool import StaticPool

            kwargs = {"connect_args": {"check_same_thread": False}, "poolclass": StaticPool}
        elif not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"store {self.url}: cannot create the directory of the database file: "
                                 f"{err.strerror or err}") from None
        engine = create_engine(self._url, **kwargs)
        busy_ms = int(self.busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun explicitly below
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
                if not memory:
                    _set_wal(cur, self.busy_timeout_s)
                cur.execute("PRAGMA synchronous = NORMAL")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("portfolio_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        errors: list[type[BaseException]] = [sa_exc.SQLAlchemyError, sqlite3.Error, OSError]
        if self.dialect == "postgresql":
            try:
                import psycopg

                errors.append(psycopg.Error)
            except ImportError:  # pragma: no cover - psycopg2-only installs
                pass
            try:
                import psycopg2

                errors.append(psycopg2.Error)
            except ImportError:
                pass
        return tuple(errors)

    def _explain(self, action: str, err: BaseException) -> str:
        orig = getattr(err, "orig", None) or err
        text = " ".join(str(orig).split()) or type(orig).__name__
        if self._url.password:
            text = text.replace(str(self._url.password), "***")
        if len(text) > 500:
            text = text[:500] + "..."
        lowered = text.lower()
        hint = ""
        if "lock timeout" in lowered:
            hint = (f" (gave up after lock_timeout_s={self.lock_timeout_s:g}: another session holds a lock on "
                    "these rows or the table; see pg_locks and pg_stat_activity on the server)")
        elif "statement timeout" in lowered:
            hint = (f" (the statement ran longer than statement_timeout_s={self.statement_timeout_s:g} and the "
                    "server cancelled it)")
        elif "locked" in lowered or "busy" in lowered:
            hint = f" (database is locked: another writer held it longer than busy_timeout_s={self.busy_timeout_s:g})"
        elif "not a database" in lowered:
            hint = " (the file is not a database: point the store at a SQLite file or a new path)"
        elif "unable to open database" in lowered:
            hint = " (cannot open the database file: check the path and its permissions)"
        elif "password authentication failed" in lowered:
            hint = " (wrong user or password)"
        elif any(w in lowered for w in ("connection refused", "could not connect", "connection failed", "resolve host",
                                        "could not translate host", "timeout expired")):
            hint = " (cannot connect: is the server running and reachable?)"
        return f"store {self.url}: could not {action}: {type(orig).__name__}: {text}{hint}"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (StoreError, InvalidInputError):
            raise
        except self._driver_errors() as err:
            raise StoreError(self._explain(action, err)) from None

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        with self._errors(action), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        with self._errors(action), self.engine.connect() as conn:
            conn.execution_options(portfolio_write=True)
            with conn.begin():
                yield conn

    # -- schema ---------------------------------------------------------------------------------
    @staticmethod
    def _version(conn: Connection) -> int:
        if not inspect(conn).has_table(schema.schema_version.name):
            return 0
        return int(conn.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0)

    def schema_version(self) -> int:
        """The database's schema version: 0 for an empty database.

        :raises StoreError: when the database cannot be reached or read.
        """
        with self._read("read the schema version") as conn:
            return self._version(conn)

    def migrate(self) -> int:
        """Create or upgrade the schema to the latest version and return it. Idempotent.

        Concurrent callers (several processes) are serialised by a PostgreSQL advisory lock or a SQLite
        ``BEGIN IMMEDIATE``; all pending migrations apply in one transaction.

        :raises StoreError: when the database is newer than this code, or cannot be reached.
        """
        latest = schema.latest_version()
        current = self.schema_version()
        if current == latest:
            self._bars_ready = True
            return current
        self._refuse_newer(current, latest)
        with self._write("migrate the schema") as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
            schema.schema_version.create(conn, checkfirst=True)
            current = self._version(conn)  # again, under the lock
            self._refuse_newer(current, latest)
            for migration in schema.MIGRATIONS[current:]:
                migration.apply(conn)
                conn.execute(insert(schema.schema_version).values(
                    version=migration.version, applied_at=datetime.now(timezone.utc),
                    description=migration.description))
                log.info("store %s: applied schema migration %d (%s)", self.url, migration.version,
                         migration.description)
        self._bars_ready = True
        return latest

    def _refuse_newer(self, current: int, latest: int) -> None:
        if current > latest:
            raise StoreError(f"store {self.url}: schema version {current} is newer than this code knows ({latest}); "
                             "upgrade airflow-provider-portfolio")

    def _has_bars(self, conn: Connection) -> bool:
        if not self._bars_ready:
            self._bars_ready = inspect(conn).has_table(schema.bars.name)
        return self._bars_ready

    # -- bars: write ------------------------------------------------------------------------------
    def upsert_bars(self, bars: pd.DataFrame) -> int:
        """Insert or update bars on (symbol, timeframe, ts), all in one transaction.

        :param bars: a canonical bar frame (see ``market/bars.py``); extra columns are ignored.
        :return: the number of rows inserted or actually changed (0 for an identical re-upsert).
        :raises InvalidInputError: before anything is written, for a frame without the canonical
            columns, with missing or non-finite values, odd symbols/timeframes or duplicate keys.
        :raises StoreError: when the store cannot be written (nothing is written then).
        """
        prepared = _PreparedBars(bars)
        if prepared.n == 0:
            return 0
        attempts = _PG_ATTEMPTS if self.dialect == "postgresql" else 1
        for attempt in range(1, attempts + 1):
            try:
                with self._write("upsert bars") as conn:
                    if not self._has_bars(conn):
                        raise StoreError(f"store {self.url}: no bars table; call migrate() first")
                    raw = conn.connection.driver_connection
                    if self.dialect == "postgresql":
                        return self._pg_upsert(raw, prepared)
                    before = raw.total_changes
                    cur = raw.cursor()
                    try:
                        for batch in prepared.sqlite_batches(BATCH_ROWS):
                            cur.executemany(_SQLITE_UPSERT, batch)
                    finally:
                        cur.close()
                    return raw.total_changes - before
            except StoreError as err:
                # Two writers updating overlapping rows can deadlock; PostgreSQL aborts one: retry it.
                if attempt == attempts or "deadlock" not in str(err).lower():
                    raise
                log.info("store %s: upsert lost a deadlock to a concurrent writer; retrying (%d)", self.url, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _pg_upsert(raw: Any, prepared: _PreparedBars) -> int:
        """Stage the rows with a binary COPY, update the changed ones, insert the new ones."""
        cur = raw.cursor()
        try:
            cur.execute("SET LOCAL jit = off")  # compiling one bulk statement costs more than it saves
            cur.execute(_PG_CREATE_STAGE)
            if hasattr(cur, "copy"):  # psycopg 3
                with cur.copy(_PG_COPY) as copy:
                    for chunk in prepared.pg_copy_chunks(BATCH_ROWS):
                        copy.write(chunk)
            else:  # psycopg2
                cur.copy_expert(_PG_COPY, _ChunkReader(prepared.pg_copy_chunks(BATCH_ROWS)))
            cur.execute(f"ANALYZE {_PG_STAGE}")  # temporary tables get no statistics otherwise
            cur.execute(_PG_UPDATE)
            changed = max(cur.rowcount, 0)
            cur.execute("SAVEPOINT portfolio_insert_new")
            try:
                cur.execute(_PG_INSERT_NEW)
                changed += max(cur.rowcount, 0)
            except Exception as err:
                if getattr(err, "sqlstate", None) != "23505" and getattr(err, "pgcode", None) != "23505":
                    raise
                # A concurrent writer committed some of these keys after our snapshot: upsert instead.
                cur.execute("ROLLBACK TO SAVEPOINT portfolio_insert_new")
                cur.execute(_PG_UPSERT)
                changed += max(cur.rowcount, 0)
            cur.execute("RELEASE SAVEPOINT portfolio_insert_new")
            return changed
        finally:
            cur.close()

    # -- bars: read -------------------------------------------------------------------------------
    def _ts_us(self, expr: Any = None) -> Any:
        """``expr`` (default ``bars.ts``) as integer epoch microseconds: no per-row datetime objects."""
        expr = schema.bars.c.ts if expr is None else expr
        if self.dialect == "postgresql":
            return cast(func.extract("epoch", expr) * 1_000_000, BigInteger)
        return type_coerce(expr, BigInteger)

    def _where(self, timeframe: str | None, start: Any, end: Any) -> list[Any]:
        b = schema.bars.c
        conds = []
        if timeframe is not None:
            conds.append(b.timeframe == parse_timeframe(timeframe).name)
        lo, hi = _utc(start, "start"), _utc(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise InvalidInputError(f"start {lo.isoformat()} is after end {hi.isoformat()}")
        if lo is not None:
            conds.append(b.ts >= lo.to_pydatetime())
        if hi is not None:
            conds.append(b.ts <= hi.to_pydatetime())
        return conds

    def _symbol_order(self) -> Any:
        return schema.bars.c.symbol  # byte order on both dialects (COLLATE "C" column on PostgreSQL)

    def read_bars(self, symbols: list[str] | None = None, timeframe: str = "1Day", start: Any = None,
                  end: Any = None) -> pd.DataFrame:
        """Stored bars as a canonical bar frame sorted by (symbol, ts).

        :param symbols: symbols to read; ``None`` reads all.
        :param timeframe: the timeframe (``1Day``, ``5Min`` ...).
        :param start: inclusive lower bound on ``ts`` (Timestamp, datetime, date or string; naive = UTC).
        :param end: inclusive upper bound on ``ts``.
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read, or a row cannot be decoded (a price or a
            timestamp stored as text): the message names the table, the symbol and the row. Use
            :meth:`read_bars_checked` to read the other symbols anyway.
        """
        frame, rejected = self.read_bars_checked(symbols, timeframe, start, end)
        if rejected:
            shown = "; ".join(list(rejected.values())[:5])
            more = f" (+{len(rejected) - 5} more symbols)" if len(rejected) > 5 else ""
            raise StoreError(f"store {self.url}: could not read bars: corrupt rows: {shown}{more}")
        return frame

    def read_bars_checked(self, symbols: list[str] | None = None, timeframe: str = "1Day", start: Any = None,
                          end: Any = None) -> tuple[pd.DataFrame, dict[str, str]]:
        """Like :meth:`read_bars`, but a symbol with a row that cannot be decoded is reported, not raised.

        A stored row whose price, volume or timestamp is not a number (SQLite keeps whatever a hand-made
        ``UPDATE`` wrote, e.g. ``close = 'abc'``) makes its whole symbol unreadable: none of its bars are
        returned, so no caller works on a series with a silent gap. The other symbols read as usual.

        :param symbols: symbols to read; ``None`` reads all.
        :param timeframe: the timeframe (``1Day``, ``5Min`` ...).
        :param start: inclusive lower bound on ``ts`` (naive = UTC).
        :param end: inclusive upper bound on ``ts``.
        :return: (the bars of the readable symbols, sorted by (symbol, ts); symbol -> what is wrong, naming
            the table, the symbol and its first corrupt rows).
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read.
        """
        b = schema.bars.c
        conds = self._where(timeframe, start, end)
        groups: list[list[str] | None] = [None] if symbols is None else list(_chunks(_symbol_list(symbols)))
        cols = [b.symbol, b.timeframe, self._ts_us(), b.open, b.high, b.low, b.close, b.volume, b.source]
        rows: list[Any] = []
        with self._read("read bars") as conn:
            if not self._has_bars(conn):
                return empty_bars(), {}
            for group in groups:
                where = conds if group is None else [*conds, b.symbol.in_(group)]
                stmt = select(*cols).where(*where).order_by(self._symbol_order(), b.ts)
                rows.extend(conn.execute(stmt).cursor.fetchall())  # plain tuples: no per-row processing needed
        if not rows:
            return empty_bars(), {}
        data = list(zip(*rows, strict=True))
        decoded = {"ts": _decode(data[2], "ts"), **{name: _decode(data[3 + k], "float") for k, name in enumerate(_VALUES)}}
        symbol_col = pd.Series(data[0], dtype="str")
        rejected: dict[str, str] = {}
        keep: np.ndarray | None = None
        if any(mask is not None for _, mask in decoded.values()):
            rejected = self._corrupt_bars(data, decoded)
            keep = ~symbol_col.isin(list(rejected)).to_numpy()
        ts_us = decoded["ts"][0] if keep is None else decoded["ts"][0][keep]
        frame = pd.DataFrame({
            "symbol": symbol_col if keep is None else symbol_col[keep].reset_index(drop=True),
            "timeframe": pd.Series(data[1] if keep is None else np.asarray(data[1], dtype=object)[keep], dtype="str"),
            "ts": pd.Series((ts_us * 1000).view("datetime64[ns]")).dt.tz_localize("UTC"),
            **{name: decoded[name][0] if keep is None else decoded[name][0][keep] for name in _VALUES},
            "source": pd.Series(data[8] if keep is None else np.asarray(data[8], dtype=object)[keep], dtype="str"),
        })
        if not len(frame):
            frame = empty_bars()
        elif len(groups) > 1:
            frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
        return frame, rejected

    @staticmethod
    def _corrupt_bars(data: list[tuple[Any, ...]], decoded: dict[str, tuple[np.ndarray, np.ndarray | None]],
                      shown: int = 3) -> dict[str, str]:
        """symbol -> message naming the table, the symbol and its first ``shown`` corrupt rows and columns."""
        index = {"ts": 2, **{name: 3 + k for k, name in enumerate(_VALUES)}}
        bad_rows = np.zeros(len(data[0]), dtype=bool)
        for _, mask in decoded.values():
            if mask is not None:
                bad_rows |= mask
        ts_bad = decoded["ts"][1]
        found: dict[str, list[str]] = {}
        for i in np.flatnonzero(bad_rows).tolist():
            raw_ts = data[2][i]
            when = f"ts {_stored(raw_ts)}" if ts_bad is not None and ts_bad[i] else f"ts {_ts_text(decoded['ts'][0][i])}"
            problems = [f"column {name} holds {_stored(data[index[name]][i])}, not {_DECODED['ts' if name == 'ts' else 'float'][1]}"
                        for name, (_, mask) in decoded.items() if mask is not None and mask[i]]
            found.setdefault(str(data[0][i]), []).append(f"row ({data[1][i]}, {when}): {', '.join(problems)}")
        out = {}
        for symbol, rows in found.items():
            more = f" (+{len(rows) - shown} more)" if len(rows) > shown else ""
            out[symbol] = (f"table bars, symbol {symbol}: {len(rows)} corrupt row(s): "
                           f"{'; '.join(rows[:shown])}{more}")
        return out

    def bar_timestamps(self, symbol: str, timeframe: str, start: Any = None, end: Any = None) -> pd.DatetimeIndex:
        """Timestamps (UTC, ascending) of the stored bars of one symbol and timeframe.

        :param symbol: the symbol.
        :param timeframe: the timeframe.
        :param start: inclusive lower bound (naive = UTC).
        :param end: inclusive upper bound.
        """
        (symbol,) = _symbol_list([symbol])
        b = schema.bars.c
        stmt = select(self._ts_us()).where(b.symbol == symbol, *self._where(timeframe, start, end)).order_by(b.ts)
        with self._read("read bar timestamps") as conn:
            values_us = conn.execute(stmt).scalars().all() if self._has_bars(conn) else []
        us, bad = _decode(values_us, "ts")
        if bad is not None:
            self._corrupt_ts(symbol, timeframe, [values_us[i] for i in np.flatnonzero(bad)])
        return pd.DatetimeIndex((us * 1000).view("datetime64[ns]"), name="ts").tz_localize("UTC")

    def _corrupt_ts(self, symbol: str, timeframe: str, values: list[Any]) -> NoReturn:
        rows = "; ".join(f"row ({timeframe}, ts {_stored(v)})" for v in values[:3])
        more = f" (+{len(values) - 3} more)" if len(values) > 3 else ""
        raise StoreError(f"store {self.url}: could not read bar timestamps: corrupt rows: table bars, symbol {symbol}: "
                         f"{rows}{more}: column ts is not {_DECODED['ts'][1]}")

    def latest_bar_ts(self, symbols: list[str] | None, timeframe: str) -> dict[str, pd.Timestamp | None]:
        """Latest stored bar timestamp per symbol (``None`` for a symbol with no bars).

        :param symbols: symbols to ask about; ``None`` means every stored symbol.
        :param timeframe: the timeframe.
        """
        b = schema.bars.c
        tf = parse_timeframe(timeframe).name
        out: dict[str, pd.Timestamp | None] = {}
        with self._read("read latest bar timestamps") as conn:
            ready = self._has_bars(conn)
            if symbols is None:
                if ready:
                    stmt = select(b.symbol, self._ts_us(func.max(b.ts))).where(b.timeframe == tf).group_by(b.symbol)
                    out = dict(conn.execute(stmt).all())
            else:
                wanted = _symbol_list(symbols)
                out = dict.fromkeys(wanted)
                for group in _chunks(wanted) if ready else []:
                    req = self._symbol_rows(group)
                    # max(ts) (not of an expression of ts): one backward index seek per symbol
                    latest = (select(func.max(b.ts)).where(b.symbol == req.c.symbol, b.timeframe == tf)
                              .scalar_subquery())
                    out.update(conn.execute(select(req.c.symbol, self._ts_us(latest))).all())
        present = [(s, us) for s, us in out.items() if us is not None]
        decoded, bad = _decode([us for _, us in present], "ts")
        if bad is not None:
            i = int(np.flatnonzero(bad)[0])
            self._corrupt_ts(present[i][0], tf, [present[i][1]])
        latest = dict(zip((s for s, _ in present), decoded.tolist(), strict=True))
        return {s: None if s not in latest else pd.Timestamp(latest[s] * 1000, tz="UTC") for s in out}

    def _symbol_rows(self, symbols: list[str]) -> Any:
        """A one-column row source ``symbol`` holding ``symbols`` (one bound parameter)."""
        if self.dialect == "postgresql":
            array = bindparam("symbols", symbols, type_=ARRAY(String))
            return func.unnest(array).table_valued("symbol").render_derived(name="req")
        rows = func.json_each(bindparam("symbols", json.dumps(symbols))).table_valued("value").alias("req")
        return select(rows.c.value.label("symbol")).subquery("req")

    def count_bars(self, symbols: list[str] | None = None, timeframe: str | None = None) -> int:
        """Number of stored bars, optionally for some symbols and/or one timeframe (0 before migrate)."""
        b = schema.bars.c
        conds = self._where(timeframe, None, None)
        groups: list[list[str] | None] = [None] if symbols is None else list(_chunks(_symbol_list(symbols)))
        total = 0
        with self._read("count bars") as conn:
            if not self._has_bars(conn):
                return 0
            for group in groups:
                where = conds if group is None else [*conds, b.symbol.in_(group)]
                total += int(conn.execute(select(func.count()).select_from(schema.bars).where(*where)).scalar())
        return total

    # -- forecasts and model evaluations -------------------------------------------------------------
    def _has_forecasts(self, conn: Connection) -> bool:
        if not self._forecasts_ready:
            self._forecasts_ready = inspect(conn).has_table(schema.forecasts.name)
        return self._forecasts_ready

    def write_forecasts(self, forecasts: pd.DataFrame | None,
                        evaluations: pd.DataFrame | None = None) -> tuple[int, int]:
        """Store a run's forecasts and model evaluations in one transaction, replacing the keys they hold.

        Each (run_id, model, symbol, timeframe) present in either frame is replaced as a unit in both
        tables: its stored forecast rows and evaluation rows are deleted, then the frames' rows inserted.
        Keys absent from both frames are left alone, so a rerun over fewer symbols replaces only those,
        and writing the same frames twice leaves the same rows. Nothing of the call is visible if any
        part fails.

        :param forecasts: rows of :data:`~airflow_provider_portfolio.store.schema.FORECAST_COLUMNS`
            (extra columns ignored). ``created_at`` is optional (absent or missing means now, UTC); NaN
            or ``None`` in ``variance`` is stored as NULL; naive timestamps mean UTC. ``None`` is an
            empty frame: the keys of ``evaluations`` then lose their stored forecasts.
        :param evaluations: rows of :data:`~airflow_provider_portfolio.store.schema.EVALUATION_COLUMNS`;
            NaN or ``None`` in the nullable columns is stored as NULL. ``None`` (the default) is an empty
            frame: the keys of ``forecasts`` then lose their stored evaluations.
        :return: (forecast rows written, evaluation rows written); (0, 0) for empty frames, without I/O.
        :raises InvalidInputError: before anything is written, naming the column and the first offending
            row: missing columns, empty or over-long keys, non-canonical symbols or timeframes, step < 1,
            non-finite point/lower/upper, lower > point or point > upper, level outside (0, 1), horizon < 1,
            an unknown label, unreadable timestamps, duplicate keys.
        :raises StoreError: before :meth:`migrate` created the tables, or when the store cannot be
            written (nothing is written then).
        """
        now = datetime.now(timezone.utc)
        parts = [
            _PreparedRows(pd.DataFrame() if frame is None else frame, table, what, now)
            for frame, table, what in (
                (forecasts, schema.forecasts, "forecast frame"),
                (evaluations, schema.model_evaluations, "evaluation frame"),
            )
        ]
        keys = parts[0].run_keys() | parts[1].run_keys()
        if not keys:
            return 0, 0
        runs: dict[tuple[str, str, str], list[str]] = {}
        for run_id, model, symbol, timeframe in sorted(keys):
            runs.setdefault((run_id, model, timeframe), []).append(symbol)
        with self._write("write forecasts") as conn:
            if not self._has_forecasts(conn):
                raise StoreError(f"store {self.url}: no forecasts table (schema version {self._version(conn)}); "
                                 "call migrate() first")
            if self.dialect == "postgresql":  # concurrent replaces of one key must not interleave
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_FORECAST_LOCK_KEY})")
            for part in parts:
                self._delete_runs(conn, part.table, runs)
            written = [self._insert_rows(conn, part) for part in parts]
        log.info("store %s: wrote %d forecast and %d evaluation rows for %d (run, model, symbol, timeframe) keys",
                 self.url, written[0], written[1], len(keys))
        return written[0], written[1]

    @staticmethod
    def _delete_runs(conn: Connection, table: Any, runs: dict[tuple[str, str, str], list[str]]) -> None:
        """Delete the rows of ``table`` of the given keys: one statement per (run, model, timeframe) and chunk."""
        t = table.c
        for (run_id, model, timeframe), symbols in runs.items():
            for group in _chunks(symbols):
                conn.execute(delete(table).where(t.run_id == run_id, t.model == model, t.timeframe == timeframe,
                                                 t.symbol.in_(group)))

    def _insert_rows(self, conn: Connection, rows: _PreparedRows) -> int:
        """Bulk-insert prepared rows (``executemany`` on SQLite, text ``COPY`` on PostgreSQL); returns the count."""
        if rows.n == 0:
            return 0
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c.name) for c in rows.table.columns)
        raw = conn.connection.driver_connection
        cur = raw.cursor()
        try:
            if self.dialect == "postgresql":
                sql = f"COPY {quote(rows.table.name)} ({names}) FROM STDIN"
                if hasattr(cur, "copy"):  # psycopg 3
                    with cur.copy(sql) as copy:
                        for chunk in rows.pg_copy_chunks(BATCH_ROWS):
                            copy.write(chunk)
                else:  # psycopg2
                    cur.copy_expert(sql, _ChunkReader(rows.pg_copy_chunks(BATCH_ROWS)))
            else:
                marks = ", ".join("?" * len(rows.table.columns))
                sql = f"INSERT INTO {quote(rows.table.name)} ({names}) VALUES ({marks})"
                for batch in rows.sqlite_batches(BATCH_ROWS):
                    cur.executemany(sql, batch)
        finally:
            cur.close()
        return rows.n

    def read_forecasts(self, symbols: list[str] | None = None, model: str | list[str] | None = None,
                       timeframe: str | None = "1Day", run_id: str | None = None, latest: bool = True) -> pd.DataFrame:
        """Stored forecasts, one row per (run_id, model, symbol, timeframe, step).

        Columns are :data:`~airflow_provider_portfolio.store.schema.FORECAST_COLUMNS` (timestamps
        ``datetime64[ns, UTC]``, NULL ``variance`` as NaN), sorted by (symbol, model, timeframe, asof,
        run_id, step): with one run per (symbol, model) that is (symbol, model, step).

        :param symbols: symbols to read; ``None`` reads all (unknown symbols give no rows).
        :param model: one model name or a list; ``None`` reads all.
        :param timeframe: the timeframe (``1Day``, ``5Min`` ...); ``None`` reads all.
        :param run_id: read this run only (``latest`` is then ignored).
        :param latest: for each (symbol, model, timeframe) keep only the run with the newest ``asof``
            (ties: the newest ``created_at``, then the greatest ``run_id``); ``False`` returns every run.
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read. An unmigrated store gives an empty frame.
        """
        return self._read_runs(schema.forecasts, "read forecasts", symbols, model, timeframe, run_id, latest)

    def read_evaluations(self, symbols: list[str] | None = None, model: str | list[str] | None = None,
                         timeframe: str | None = "1Day", run_id: str | None = None,
                         latest: bool = True) -> pd.DataFrame:
        """Stored model evaluations, one row per (run_id, model, symbol, timeframe).

        Columns are :data:`~airflow_provider_portfolio.store.schema.EVALUATION_COLUMNS` (timestamps
        ``datetime64[ns, UTC]``, NULL metrics as NaN, ``healthy`` bool), sorted by (symbol, model,
        timeframe, asof, run_id): with one run per (symbol, model) that is (symbol, model).

        :param symbols: symbols to read; ``None`` reads all (unknown symbols give no rows).
        :param model: one model name or a list; ``None`` reads all.
        :param timeframe: the timeframe (``1Day``, ``5Min`` ...); ``None`` reads all.
        :param run_id: read this run only (``latest`` is then ignored).
        :param latest: for each (symbol, model, timeframe) keep only the run with the newest ``asof``
            (ties: the newest ``created_at``, then the greatest ``run_id``); ``False`` returns every run.
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read. An unmigrated store gives an empty frame.
        """
        return self._read_runs(schema.model_evaluations, "read model evaluations", symbols, model, timeframe,
                               run_id, latest)

    def _read_runs(self, table: Any, action: str, symbols: Any, model: Any, timeframe: str | None,
                   run_id: str | None, latest: bool) -> pd.DataFrame:
        t = table.c
        conds: list[Any] = []
        if timeframe is not None:
            conds.append(t.timeframe == parse_timeframe(timeframe).name)
        models = _name_list(model, "model")
        if models is not None:
            conds.append(t.model.in_(models))
        if run_id is not None:
            if not isinstance(run_id, str):
                raise InvalidInputError(f"run_id must be a string, got {run_id!r}")
            conds.append(t.run_id == run_id)
        if not isinstance(latest, (bool, np.bool_)):
            raise InvalidInputError(f"latest must be True or False, got {latest!r}")
        groups: list[list[str] | None] = [None] if symbols is None else list(_chunks(_symbol_list(symbols)))
        cols = [self._ts_us(c) if _kind(c) == "ts" else c for c in table.columns]
        order = [t.symbol, t.model, t.timeframe, t.asof, t.run_id] + ([t.step] if "step" in t else [])
        rows: list[Any] = []
        with self._read(action) as conn:
            if models == [] or not self._has_forecasts(conn):
                groups = []
            for group in groups:
                where = conds if group is None else [*conds, t.symbol.in_(group)]
                stmt = select(*cols).where(*where)
                if run_id is None and latest:
                    best = self._latest_runs(table, where)
                    stmt = stmt.join_from(table, best, and_(*(t[k] == best.c[k] for k in schema.FORECAST_RUN_KEY)))
                rows.extend(conn.execute(stmt.order_by(*order)).cursor.fetchall())
        frame = self._run_frame(table, rows)
        if len(groups) > 1:
            frame = frame.sort_values([c.name for c in order], kind="stable").reset_index(drop=True)
        return frame

    @staticmethod
    def _latest_runs(table: Any, where: list[Any]) -> Any:
        """The (run_id, model, symbol, timeframe) keys of the newest run of each (symbol, model, timeframe)."""
        t = table.c
        key = [t[k] for k in schema.FORECAST_RUN_KEY]
        runs = (select(*key, func.max(t.asof).label("asof"), func.max(t.created_at).label("created_at"))
                .where(*where).group_by(*key).subquery("runs"))
        rank = func.row_number().over(
            partition_by=(runs.c.symbol, runs.c.model, runs.c.timeframe),
            order_by=(runs.c.asof.desc(), runs.c.created_at.desc(), runs.c.run_id.desc()),
        ).label("run_rank")
        ranked = select(*(runs.c[k] for k in schema.FORECAST_RUN_KEY), rank).subquery("ranked")
        return (select(*(ranked.c[k] for k in schema.FORECAST_RUN_KEY)).where(ranked.c.run_rank == 1)
                .subquery("best"))

    def _run_frame(self, table: Any, rows: list[Any]) -> pd.DataFrame:
        """Fetched tuples (timestamps as epoch microseconds) as a frame with the table's columns and dtypes.

        :raises StoreError: naming the table, the row's key and the column, for a stored value that cannot
            be decoded (a number or a timestamp stored as text).
        """
        data = list(zip(*rows, strict=True)) if rows else [()] * len(table.columns)
        out: dict[str, Any] = {}
        for values, column in zip(data, table.columns, strict=True):
            kind = _kind(column)
            if kind in _DECODED:  # NULL (None) in a float column becomes NaN
                arr, bad = _decode(values, kind)
                if bad is not None:
                    i = int(np.flatnonzero(bad)[0])
                    key = ", ".join(f"{c.name} {_stored(data[k][i])}" for k, c in enumerate(table.columns)
                                    if c.primary_key)
                    raise StoreError(f"store {self.url}: could not read {table.name}: corrupt rows: table "
                                     f"{table.name}, symbol {data[table.columns.keys().index('symbol')][i]}: row ({key}): "
                                     f"column {column.name} holds {_stored(values[i])}, not {_DECODED[kind][1]} "
                                     f"({int(bad.sum())} such row(s))")
                out[column.name] = (pd.Series((arr * 1000).view("datetime64[ns]")).dt.tz_localize("UTC")
                                    if kind == "ts" else arr)
            elif kind == "bool":
                out[column.name] = np.asarray(values, dtype=bool)
            else:
                out[column.name] = pd.Series(values, dtype="str")
        return pd.DataFrame(out, columns=[c.name for c in table.columns])

    def dispose(self) -> None:
        """Close the engine's pooled connections (the store can still be used: it reconnects)."""
        if self._engine is not None:
            if self._engine_pid == os.getpid():
                self._engine.dispose()
            self._engine = None
            self._engine_pid = None


def _set_wal(cur: sqlite3.Cursor, timeout_s: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the file.

    Switching a file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once,
    without its busy handler, when two connections race to switch a new file. The mode persists in
    the file, so the loser's retry finds WAL already set. Retries back off up to ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


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
