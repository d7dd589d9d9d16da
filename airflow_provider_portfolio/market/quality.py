"""The data-quality gate: a symbol's batch of bars passes whole or is rejected whole.

Rules, checked in this order; a batch is rejected at the first rule it breaks, with a
:class:`~airflow_provider_portfolio.exceptions.DataQualityError` naming the symbol, the rule and the
offending rows (``"2024-01-05T00:00:00Z high=10.0 low=11.0"``):

======================= ======================================================================
rule                    a row breaks it when
======================= ======================================================================
``missing_values``      ``ts``, ``open``, ``high``, ``low``, ``close`` or ``volume`` is missing
``non_finite``          a price or the volume is infinite
``non_positive_price``  a price is zero or negative
``high_below_low``      ``high < low``
``open_outside_range``  ``open`` lies outside ``[low, high]`` (``open == low`` or ``== high`` passes)
``close_outside_range`` ``close`` lies outside ``[low, high]`` (``close == low`` or ``== high`` passes)
``negative_volume``     ``volume < 0``
``duplicate_timestamp`` another row of the symbol has the same ``ts`` (every such row counts), even
                        when every value is equal: sources hand over every row a vendor sent
                        (no hook drops duplicates, none merges overlapping pages), so a repeated
                        bar is a vendor defect and this rule is the only place that judges it
``off_session``         daily bars: ``ts`` is not midnight UTC of a session date of the calendar;
                        intraday bars: ``ts`` is not within ``[market_open, market_close)`` of a
                        session (skipped without a calendar or with ``check_sessions=False``)
``implausible_jump``    ``|close / previous close - 1| > max_abs_return`` (a move of exactly
                        ``max_abs_return`` passes), rows ordered by ``ts``; the first row's
                        previous close is the ``previous`` bar (the last stored one, for the ETL)
                        when given, whatever the time between them: a long gap gets no wider
                        threshold
======================= ======================================================================

Everything is vectorised over the whole frame (one pass per rule, one calendar lookup per calendar, a
sort only when rows are out of (symbol, ts) order), so many symbols cost about as much as one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import DataQualityError, InvalidInputError
from airflow_provider_portfolio.market.bars import PRICE_COLUMNS, VALUE_COLUMNS, parse_timeframe
from airflow_provider_portfolio.market.calendar import session_positions
from airflow_provider_portfolio.market.timeutil import to_ns_array

RULES: tuple[str, ...] = (
    "missing_values",
    "non_finite",
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "negative_volume",
    "duplicate_timestamp",
    "off_session",
    "implausible_jump",
)
"""Rule names in the order they are checked."""

_REQUIRED = ("symbol", "timeframe", "ts", *VALUE_COLUMNS)
_DAY_NS = 86_400_000_000_000
_NAT = np.iinfo(np.int64).min
_SHOWN_ROWS = 10  # rows described per error; the error's count is the full number
_SHOWN_COLUMNS = {
    "high_below_low": ("high", "low"),
    "open_outside_range": ("open", "low", "high"),
    "close_outside_range": ("close", "low", "high"),
    "negative_volume": ("volume",),
    "duplicate_timestamp": ("open", "close", "volume"),
}


@dataclass(frozen=True)
class QualityRules:
    """Settings of the quality gate.

    :param max_abs_return: largest plausible move of the close from one bar to the next, as a
        fraction (``0.5`` = 50%); a larger move fails ``implausible_jump``, however long the gap
        between the two bars (a genuine move that large is for a person to load, with a wider
        threshold). ``None`` disables the rule.
    :param check_sessions: whether ``off_session`` is checked (it also needs a calendar).
    :raises InvalidInputError: when ``max_abs_return`` is not a positive finite number or ``None``.
    """

    max_abs_return: float | None = 0.5
    check_sessions: bool = True

    def __post_init__(self) -> None:
        value = self.max_abs_return
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
        ):
            raise InvalidInputError(f"max_abs_return must be a positive number or None, got {value!r}")


def check_bars(
    bars: pd.DataFrame,
    *,
    calendar: Any = None,
    rules: QualityRules | None = None,
    previous: pd.DataFrame | None = None,
) -> None:
    """Gate one symbol's batch of bars: return quietly, or raise at the first rule it breaks.

    :param bars: bar frame of one symbol (columns as :data:`~airflow_provider_portfolio.market.bars.BAR_COLUMNS`;
        ``source`` is not needed). An empty batch passes.
    :param calendar: the symbol's calendar (anything with ``sessions(start, end)`` like
        :class:`~airflow_provider_portfolio.market.calendar.MarketCalendar`); ``None`` skips ``off_session``.
    :param rules: settings; :class:`QualityRules` defaults when ``None``.
    :param previous: the bar of the same timeframe just before the batch (e.g. the last stored one), as a
        frame with ``symbol``, ``ts`` and ``close``; ``implausible_jump`` judges the batch's first row
        against its close. ``None`` or no row for the symbol: the first row is not compared.
    :raises DataQualityError: naming the symbol, the rule, the offending rows and their count.
    :raises InvalidInputError: when the frame lacks a column or holds several symbols or timeframes, or
        ``previous`` holds several bars of the symbol or one not before the batch.
    """
    _require_columns(bars)
    if len(bars) == 0:
        return
    symbols = pd.unique(bars["symbol"])
    if len(symbols) != 1:
        shown = ", ".join(repr(s) for s in symbols[:5])
        raise InvalidInputError(
            f"check_bars takes one symbol's batch, got {len(symbols)} symbols ({shown}...): use validate_bars"
        )
    _, _, errors = _gate(bars, None if calendar is None else (lambda _symbol: calendar), rules, previous)
    if errors:
        raise next(iter(errors.values()))


def validate_bars(
    bars: pd.DataFrame,
    *,
    calendar_for: Callable[[str], Any] | None = None,
    rules: QualityRules | None = None,
    previous: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, DataQualityError]]:
    """Gate a frame of many symbols, one batch per symbol; a failing symbol is rejected whole.

    :param bars: bar frame of any number of symbols.
    :param calendar_for: symbol -> its calendar (e.g. ``calendar_for_symbol``); ``None`` skips
        ``off_session``.
    :param rules: settings; :class:`QualityRules` defaults when ``None``.
    :param previous: each symbol's bar just before its batch (at most one per symbol), as for
        :func:`check_bars`; symbols without one are not compared across the boundary.
    :return: the rows of the symbols that passed (in their original order, index reset) and
        symbol -> the error of each symbol that failed.
    :raises InvalidInputError: when the frame lacks a column, a symbol holds several timeframes, or
        ``previous`` holds several bars of a symbol or one not before its batch.
    """
    _require_columns(bars)
    if len(bars) == 0:
        return bars.reset_index(drop=True), {}
    codes, uniques, errors = _gate(bars, calendar_for, rules, previous)
    if not errors:
        return bars.reset_index(drop=True), errors
    failed = np.array([str(symbol) in errors for symbol in uniques], dtype=bool)
    keep = ~failed[codes]
    return bars.loc[keep].reset_index(drop=True), errors


# --- the engine ---------------------------------------------------------------------------------


def _require_columns(bars: object) -> None:
    if not isinstance(bars, pd.DataFrame):
        raise InvalidInputError(f"bars must be a pandas DataFrame, got {type(bars).__name__}")
    missing = [c for c in _REQUIRED if c not in bars.columns]
    if missing:
        raise InvalidInputError(f"bar frame lacks column(s) {missing}; expected {list(_REQUIRED)}")


def _gate(
    bars: pd.DataFrame,
    calendar_for: Callable[[str], Any] | None,
    rules: QualityRules | None,
    previous: pd.DataFrame | None = None,
) -> tuple[np.ndarray, Any, dict[str, DataQualityError]]:
    """Check every symbol of ``bars`` at once.

    :return: each row's symbol code, the symbols (indexed by code) and symbol -> error.
    """
    rules = rules or QualityRules()
    row_codes, uniques = pd.factorize(bars["symbol"], use_na_sentinel=False)
    row_codes = np.asarray(row_codes, dtype=np.int64)
    n_symbols = len(uniques)
    daily = _daily_by_symbol(bars, row_codes, n_symbols)

    # Arrays in (symbol, ts) order; a frame from to_bar_frame is already in it and is not re-sorted.
    codes = row_codes
    ts_ns, ts_missing = _ts_ns(bars["ts"])
    values = {
        k: pd.to_numeric(bars[k], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        for k in VALUE_COLUMNS
    }
    d_code, d_ts = np.diff(codes), np.diff(ts_ns)
    if not bool(np.all((d_code > 0) | ((d_code == 0) & (d_ts >= 0)))):
        order = _symbol_ts_order(codes, ts_ns, n_symbols)
        codes, ts_ns, ts_missing = codes[order], ts_ns[order], ts_missing[order]
        values = {k: x[order] for k, x in values.items()}
    o, h, l, c, v = (values[k] for k in VALUE_COLUMNS)  # noqa: E741

    masks: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        nan = {k: np.isnan(x) for k, x in values.items()}
        inf = {k: np.isinf(x) for k, x in values.items()}
        masks["missing_values"] = ts_missing | np.logical_or.reduce(list(nan.values()))
        masks["non_finite"] = np.logical_or.reduce(list(inf.values()))
        masks["non_positive_price"] = np.logical_or.reduce([values[k] <= 0 for k in PRICE_COLUMNS])
        masks["high_below_low"] = h < l
        masks["open_outside_range"] = (o < l) | (o > h)
        masks["close_outside_range"] = (c < l) | (c > h)
        masks["negative_volume"] = v < 0
        same = codes[1:] == codes[:-1]
        dup = same & (ts_ns[1:] == ts_ns[:-1]) & ~ts_missing[1:]
        masks["duplicate_timestamp"] = np.r_[dup, False] | np.r_[False, dup]
        masks["off_session"], session_note = _off_session(
            codes, uniques, ts_ns, ts_missing, daily, calendar_for if rules.check_sessions else None
        )
        jump = np.zeros(len(codes), dtype=bool)
        prev_close, prev_ts = np.full(n_symbols, np.nan), np.full(n_symbols, _NAT, dtype=np.int64)
        if rules.max_abs_return is not None:
            jump[1:] = same & (np.abs(c[1:] / c[:-1] - 1.0) > rules.max_abs_return)
            if previous is not None:
                first = np.flatnonzero(np.r_[True, ~same])  # each symbol's first row
                _previous_by_symbol(previous, uniques, prev_close, prev_ts, codes[first], ts_ns[first])
                jump[first] = np.abs(c[first] / prev_close[codes[first]] - 1.0) > rules.max_abs_return
        masks["implausible_jump"] = jump

    counts = np.stack([np.bincount(codes[masks[r]], minlength=n_symbols) for r in RULES])
    errors: dict[str, DataQualityError] = {}
    failing = np.flatnonzero(counts.any(axis=0))
    if not len(failing):
        return row_codes, uniques, errors
    starts = np.searchsorted(codes, failing, side="left")
    ends = np.searchsorted(codes, failing, side="right")
    for s, lo, hi in zip(failing, starts, ends):
        r = int(np.argmax(counts[:, s] > 0))
        rule = RULES[r]
        described = []
        for i in lo + np.flatnonzero(masks[rule][lo:hi])[:_SHOWN_ROWS]:
            if rule == "missing_values":
                text = " ".join(f"{k}=nan" for k in VALUE_COLUMNS if nan[k][i]) or "ts missing"
            elif rule == "non_finite":
                text = " ".join(f"{k}={_num(values[k][i])}" for k in VALUE_COLUMNS if inf[k][i])
            elif rule == "non_positive_price":
                text = " ".join(f"{k}={_num(values[k][i])}" for k in PRICE_COLUMNS if values[k][i] <= 0)
            elif rule == "off_session":
                text = session_note(i)
            elif rule == "implausible_jump":
                if i == lo:  # the symbol's first row: its previous close is the bar before the batch
                    before = prev_close[s]
                    shown = f"{_num(before)} ({_ts_text(prev_ts[s], False)}, before the batch)"
                else:
                    before = c[i - 1]
                    shown = _num(before)
                text = f"close={_num(c[i])} previous_close={shown} return={c[i] / before - 1:+.1%}"
            else:
                text = " ".join(f"{k}={_num(values[k][i])}" for k in _SHOWN_COLUMNS[rule])
            described.append(f"{_ts_text(ts_ns[i], ts_missing[i])} {text}")
        symbol = str(uniques[s])
        errors[symbol] = DataQualityError(symbol, rule, described, int(counts[r, s]))
    return row_codes, uniques, errors


def _previous_by_symbol(
    previous: pd.DataFrame,
    uniques: Any,
    close: np.ndarray,
    ts: np.ndarray,
    first_codes: np.ndarray,
    first_ns: np.ndarray,
) -> None:
    """Fill ``close`` and ``ts`` (int64 UTC ns), indexed by symbol code, from each symbol's bar before its batch.

    :param first_codes: the code of each symbol's first row (rows in (symbol, ts) order).
    :param first_ns: those rows' timestamps; a previous bar must come strictly before them.
    :raises InvalidInputError: for a frame without ``symbol``, ``ts`` and ``close``, several bars of a
        symbol, or a bar not before its symbol's batch.
    """
    if not isinstance(previous, pd.DataFrame):
        raise InvalidInputError(f"previous must be a pandas DataFrame, got {type(previous).__name__}")
    missing = [col for col in ("symbol", "ts", "close") if col not in previous.columns]
    if missing:
        raise InvalidInputError(f"previous lacks column(s) {missing}; expected symbol, ts and close")
    pos = pd.Index(uniques).get_indexer(previous["symbol"])
    rows = np.flatnonzero(pos >= 0)  # bars of symbols not in the batch are ignored
    if not len(rows):
        return
    pos = pos[rows]
    several = np.flatnonzero(np.bincount(pos) > 1)
    if len(several):
        raise InvalidInputError(f"{uniques[several[0]]}: previous holds one bar per symbol, got several")
    ns, ns_missing = _ts_ns(previous["ts"].iloc[rows])
    values = pd.to_numeric(previous["close"].iloc[rows], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    close[pos] = np.where(ns_missing, np.nan, values)
    ts[pos] = ns
    # A batch whose first ts is missing fails missing_values; its order is not judged here.
    late = (ts[first_codes] != _NAT) & (first_ns != _NAT) & (ts[first_codes] >= first_ns)
    if late.any():
        k = int(np.argmax(late))
        raise InvalidInputError(
            f"{uniques[first_codes[k]]}: the previous bar ({_ts_text(ts[first_codes[k]], False)}) must come "
            f"before the batch, which starts at {_ts_text(first_ns[k], False)}"
        )


def _symbol_ts_order(codes: np.ndarray, ts_ns: np.ndarray, n_symbols: int) -> np.ndarray:
    """Permutation sorting rows by (symbol code, ts): a stable sort by ts, then a stable (radix, for
    fewer than 65,536 symbols) sort by code; faster than ``np.lexsort``."""
    by_ts = np.argsort(ts_ns, kind="stable")
    keys = codes[by_ts].astype(np.uint16 if n_symbols < 65_536 else np.int64)
    return by_ts[np.argsort(keys, kind="stable")]


def _num(x: float) -> str:
    return repr(float(x))


def _ts_text(ns: np.int64, missing: bool) -> str:
    """``2024-01-05T00:00:00Z`` (fractions of a second shown only when present)."""
    if missing:
        return "NaT"
    unit = "s" if ns % 1_000_000_000 == 0 else "ns"
    return f"{np.datetime_as_string(np.datetime64(int(ns), 'ns').astype(f'M8[{unit}]'))}Z"


def _ts_ns(ts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps as int64 UTC nanoseconds (naive ones taken as UTC) and where they are missing."""
    ns = to_ns_array(ts, coerce=True)
    return ns, ns == _NAT


def _daily_by_symbol(bars: pd.DataFrame, codes: np.ndarray, n_symbols: int) -> np.ndarray:
    """Whether each symbol's batch is daily; one timeframe per symbol, else InvalidInputError."""
    tf_codes, timeframes = pd.factorize(bars["timeframe"], use_na_sentinel=False)
    present = np.bincount(codes * len(timeframes) + tf_codes, minlength=n_symbols * len(timeframes)) > 0
    present = present.reshape(n_symbols, len(timeframes))
    several = np.flatnonzero(present.sum(axis=1) > 1)
    if len(several):
        s = int(several[0])
        symbol = bars["symbol"].iloc[int(np.argmax(codes == s))]
        found = sorted(str(timeframes[t]) for t in np.flatnonzero(present[s]))
        raise InvalidInputError(f"{symbol}: a batch holds one timeframe, got {found}")
    daily_tf = np.array([parse_timeframe(str(tf)).is_daily for tf in timeframes], dtype=bool)
    return daily_tf[np.argmax(present, axis=1)]


def _off_session(
    codes: np.ndarray,
    uniques: Any,
    ts_ns: np.ndarray,
    ts_missing: np.ndarray,
    daily: np.ndarray,
    calendar_for: Callable[[str], Any] | None,
) -> tuple[np.ndarray, Callable[[int], str]]:
    """Rows outside their calendar's sessions, and a describer of such a row."""
    off = np.zeros(len(codes), dtype=bool)
    names: dict[int, str] = {}
    if calendar_for is None:
        return off, lambda i: "outside the sessions"
    groups: dict[Any, list[int]] = {}
    calendars: dict[Any, Any] = {}
    for s, symbol in enumerate(uniques):
        cal = calendar_for(str(symbol))
        try:
            key: Any = ("cal", cal)
            hash(key)
        except TypeError:
            key = ("id", id(cal))
        calendars[key] = cal
        groups.setdefault(key, []).append(s)
    for key, members in groups.items():
        cal = calendars[key]
        in_group = np.zeros(len(uniques), dtype=bool)
        in_group[members] = True
        label = str(getattr(cal, "name", type(cal).__name__))
        for s in members:
            names[s] = label
        for is_daily in (True, False):
            rows = np.flatnonzero(in_group[codes] & (daily[codes] == is_daily) & ~ts_missing)
            if len(rows):
                off[rows] = _outside(cal, ts_ns[rows], is_daily)
    kind = {True: "not midnight UTC of a session date", False: "outside session hours"}

    def note(i: int) -> str:
        return f"{kind[bool(daily[codes[i]])]} of {names.get(int(codes[i]), 'the calendar')}"

    return off, note


def _outside(calendar: Any, ns: np.ndarray, daily: bool) -> np.ndarray:
    """For instants ``ns`` (int64 UTC): whether each is off the calendar's sessions."""
    day = np.floor_divide(ns, _DAY_NS) * _DAY_NS
    pad = 0 if daily else 2 * _DAY_NS  # an exchange's session date and its UTC hours may differ by a day
    first, last = (pd.Timestamp(int(x)) for x in (day.min() - pad, day.max() + pad))
    sessions = calendar.sessions(first, last)
    if daily:
        dates = pd.DatetimeIndex(sessions.index)
        if dates.tz is not None:
            dates = dates.tz_convert("UTC").tz_localize(None)
        dates = np.sort(dates.normalize().as_unit("ns").asi8)
        pos = np.minimum(np.searchsorted(dates, day), max(len(dates) - 1, 0))
        found = dates[pos] == day if len(dates) else np.zeros(len(ns), dtype=bool)
        return ~(found & (ns == day))
    opens, closes = (to_ns_array(sessions[col]) for col in ("market_open", "market_close"))
    order = np.argsort(opens, kind="stable")
    _, inside = session_positions(opens[order], closes[order], ns)
    return ~inside
