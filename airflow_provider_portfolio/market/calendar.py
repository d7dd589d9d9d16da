"""Exchange sessions and the canonical bar timestamps, over pandas-market-calendars.

One wrapper for every question about trading hours: which sessions lie in a date range, whether the
market is open at an instant, when it next opens or closes, and at which instants bars start.

Conventions:

- A *session* is identified by its date, a tz-naive midnight :class:`pandas.Timestamp` (the exchange's
  trading date, as pandas-market-calendars labels it). Its ``market_open`` and ``market_close`` are
  UTC instants; a session holds the instants ``market_open <= t < market_close``.
- Date parameters (``start``, ``end``) accept ``datetime.date``, ``datetime``, ISO strings and
  :class:`pandas.Timestamp`. A time of day is ignored; a tz-aware value is first converted to UTC and
  its UTC date is used (see :func:`parse_session_date`).
- Instant parameters (``at``, ``after``) must be tz-aware.
- ``"24/7"`` (crypto) has one session per UTC calendar day, 00:00 to the next 00:00 UTC.
- Early closes and one-off closures come from pandas-market-calendars. Lunch breaks (for example
  XHKG) are not modelled: a session runs from its open to its close.

Schedules are computed once per calendar name and process for whole years (extended on demand) and
answered with ``numpy.searchsorted`` on int64 nanosecond arrays, so repeated calls cost microseconds.
pandas-market-calendars is imported only when an exchange schedule is first needed.
"""

from __future__ import annotations

import difflib
import functools
import threading
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.params import is_crypto
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, from_ns_array, to_ns_array

__all__ = [
    "ALWAYS_OPEN", "DEFAULT_EXCHANGE", "MarketCalendar", "bar_times", "calendar_for_symbol", "intraday_bar_starts",
    "parse_session_date", "session_positions", "utc_ns",
]

ALWAYS_OPEN = "24/7"
"""Name of the around-the-clock calendar used for crypto pairs."""
# DEFAULT_EXCHANGE ("XNYS"), the calendar of equities when none is given, is defined in timeutil (a module
# that imports nothing heavy, for modules read at DAG parse time) and is public here.

_DAY_NS = 86_400_000_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MARGIN_NS = 3 * _DAY_NS  # a session's date and its UTC instants differ by at most a day or so
_FIRST_YEAR = 1999  # a first schedule covers at least this year through next year + 2
_MAX_YEAR = 2200
_UTC = "UTC"


@dataclass(frozen=True)
class _Block:
    """An immutable schedule for whole years ``first_year`` .. ``last_year`` (int64 nanoseconds)."""

    first_year: int
    last_year: int
    days: np.ndarray  # session dates, tz-naive midnight
    opens: np.ndarray  # UTC
    closes: np.ndarray  # UTC
    lo_ns: int  # instants in [lo_ns, hi_ns) are answered from this block alone
    hi_ns: int


_BLOCKS: dict[str, _Block] = {}
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _exchange_calendar(name: str) -> Any:
    import pandas_market_calendars as mcal

    return mcal.get_calendar(name)


@functools.lru_cache(maxsize=None)
def _resolve_name(name: str) -> str:
    """Canonical calendar name for ``name`` (exact, then case-insensitive), else InvalidInputError."""
    if name == ALWAYS_OPEN:
        return name
    import pandas_market_calendars as mcal

    names = sorted(set(mcal.get_calendar_names()) | {ALWAYS_OPEN})
    if name in names:
        return name
    folded = [n for n in names if n.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    close = difflib.get_close_matches(name.upper(), names, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise InvalidInputError(f"unknown market calendar {name!r}.{hint} Valid names: {', '.join(names)}")


def _year_start_ns(year: int) -> int:
    return int(np.datetime64(f"{year:04d}-01-01", "ns").astype(np.int64))


def _compute_block(name: str, first_year: int, last_year: int) -> _Block:
    lo, hi = _year_start_ns(first_year), _year_start_ns(last_year + 1)
    if name == ALWAYS_OPEN:
        days = np.arange(lo, hi, _DAY_NS, dtype=np.int64)
        opens, closes = days.copy(), days + _DAY_NS
    else:
        schedule = _exchange_calendar(name).schedule(f"{first_year:04d}-01-01", f"{last_year:04d}-12-31")
        days = pd.DatetimeIndex(schedule.index).as_unit("ns").asi8.copy()
        opens = pd.DatetimeIndex(schedule["market_open"]).tz_convert(_UTC).as_unit("ns").asi8.copy()
        closes = pd.DatetimeIndex(schedule["market_close"]).tz_convert(_UTC).as_unit("ns").asi8.copy()
    for arr in (days, opens, closes):
        arr.flags.writeable = False
    return _Block(first_year, last_year, days, opens, closes, lo + _MARGIN_NS, hi - _MARGIN_NS)


def _block(name: str, lo_ns: int, hi_ns: int) -> _Block:
    """The cached block of ``name``, extended (whole years) so that it answers for [lo_ns, hi_ns]."""
    block = _BLOCKS.get(name)
    if block is not None and block.lo_ns <= lo_ns and hi_ns < block.hi_ns:
        return block
    with _LOCK:
        block = _BLOCKS.get(name)
        if block is not None and block.lo_ns <= lo_ns and hi_ns < block.hi_ns:
            return block
        lo_year = int(np.datetime64(lo_ns - _MARGIN_NS, "ns").astype("datetime64[Y]").astype(int)) + 1970
        hi_year = int(np.datetime64(hi_ns + _MARGIN_NS, "ns").astype("datetime64[Y]").astype(int)) + 1970
        if lo_year < 1800 or hi_year > _MAX_YEAR:
            raise InvalidInputError(f"dates must lie between 1800 and {_MAX_YEAR}; got years {lo_year}..{hi_year}")
        if block is None:
            first, last = min(lo_year, _FIRST_YEAR), max(hi_year, date.today().year + 2)
        else:  # grow generously so that walking forward or back does not recompute every call
            first = block.first_year if lo_year >= block.first_year else min(lo_year, block.first_year - 10)
            last = block.last_year if hi_year <= block.last_year else max(hi_year, block.last_year + 10)
        first, last = max(first, 1800), min(last, _MAX_YEAR)
        block = _compute_block(name, first, last)
        _BLOCKS[name] = block
        return block


def _day_ns(value: object, param: str) -> int:
    """A date parameter as int64 nanoseconds of its (UTC) date at midnight."""
    if isinstance(value, date) and not isinstance(value, datetime):  # the common case, without pandas
        return (value.toordinal() - _EPOCH_ORDINAL) * _DAY_NS
    if isinstance(value, (date, datetime, pd.Timestamp, np.datetime64)):
        ts = pd.Timestamp(value)
    elif isinstance(value, str) and value.strip():
        try:
            ts = pd.Timestamp(value.strip())
        except (ValueError, TypeError):
            raise InvalidInputError(f"{param} must be a date like '2024-06-03', got {value!r}") from None
    else:
        raise InvalidInputError(f"{param} must be a date like '2024-06-03', got {value!r}")
    if ts is pd.NaT:
        raise InvalidInputError(f"{param} must be a date like '2024-06-03', got {value!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert(_UTC).tz_localize(None)
    return int(ts.normalize().as_unit("ns").value)


def parse_session_date(value: object, param: str = "date") -> pd.Timestamp:
    """A date parameter as a tz-naive midnight Timestamp (tz-aware values: their UTC date).

    :param value: ``date``, ``datetime``, ISO string or ``pd.Timestamp``.
    :param param: the parameter's name, for the error message.
    :raises InvalidInputError: when ``value`` is not a date.
    """
    return pd.Timestamp(_day_ns(value, param))


def _instant_ns(value: object, param: str) -> int:
    """A tz-aware instant as int64 nanoseconds since the epoch (UTC)."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InvalidInputError(f"{param} must be a timezone-aware datetime, got {value!r}") from None
    if ts is pd.NaT:
        raise InvalidInputError(f"{param} must be a timezone-aware datetime, got {value!r}")
    if ts.tzinfo is None:
        raise InvalidInputError(
            f"{param} must be timezone-aware, got naive {value!r}: "
            "pass e.g. datetime(2024, 7, 3, 15, 0, tzinfo=timezone.utc)"
        )
    return int(ts.as_unit("ns").value)


class MarketCalendar:
    """The sessions of one exchange (any pandas-market-calendars name) or ``"24/7"`` for crypto.

    Construction only resolves the name; instances are cheap and share one schedule cache per name.

    :param name: calendar name, e.g. ``"XNYS"`` (:data:`DEFAULT_EXCHANGE`, the default), ``"XLON"``,
        ``"24/7"``. Matched exactly, then case-insensitively.
    :raises InvalidInputError: for an unknown name; the message suggests close matches and lists
        every valid name.
    """

    def __init__(self, name: str = DEFAULT_EXCHANGE) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"calendar name must be a non-empty string, got {name!r}")
        self.name: str = _resolve_name(name.strip())

    def __repr__(self) -> str:
        return f"MarketCalendar({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MarketCalendar) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("MarketCalendar", self.name))

    @property
    def is_24_7(self) -> bool:
        """True for the around-the-clock calendar (crypto)."""
        return self.name == ALWAYS_OPEN

    @property
    def timezone(self) -> str:
        """The exchange's time zone name (``"UTC"`` for 24/7)."""
        return _UTC if self.is_24_7 else str(_exchange_calendar(self.name).tz)

    # -- sessions ------------------------------------------------------------------------------

    def _slice(self, start: object, end: object) -> tuple[_Block, int, int]:
        lo, hi = _day_ns(start, "start"), _day_ns(end, "end")
        if lo > hi:
            first, last = (np.datetime64(v, "ns").astype("M8[D]") for v in (lo, hi))
            raise InvalidInputError(f"start {first} is after end {last}")
        block = _block(self.name, lo, hi)
        return block, int(block.days.searchsorted(lo, "left")), int(block.days.searchsorted(hi, "right"))

    def sessions(self, start: object, end: object) -> pd.DataFrame:
        """Sessions whose date lies in [start, end] (inclusive).

        :param start: first session date.
        :param end: last session date.
        :return: index ``session`` (tz-naive midnight dates), columns ``market_open`` and
            ``market_close`` (``datetime64[ns, UTC]``); empty with the same dtypes when the range
            holds no session.
        :raises InvalidInputError: when a date cannot be parsed or start is after end.
        """
        block, i, j = self._slice(start, end)
        index = pd.DatetimeIndex(block.days[i:j].view("M8[ns]"), name="session")
        return pd.DataFrame(
            {
                "market_open": from_ns_array(block.opens[i:j]).array,
                "market_close": from_ns_array(block.closes[i:j]).array,
            },
            index=index,
        )

    def session_bounds(self, start: object, end: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sessions in [start, end] as read-only int64 nanosecond arrays ``(dates, opens, closes)``.

        The raw form of :meth:`sessions` for vectorised callers (bar generators, gates).

        :param start: first session date.
        :param end: last session date.
        :raises InvalidInputError: when a date cannot be parsed or start is after end.
        """
        block, i, j = self._slice(start, end)
        return block.days[i:j], block.opens[i:j], block.closes[i:j]

    # -- instants ------------------------------------------------------------------------------

    def _locate(self, at: object, param: str) -> tuple[_Block, int]:
        ns = _instant_ns(at, param)
        return _block(self.name, ns, ns), ns

    def is_open(self, at: datetime) -> bool:
        """Whether a session is in progress at ``at`` (open <= at < close).

        :param at: a tz-aware instant.
        :raises InvalidInputError: when ``at`` is naive.
        """
        block, ns = self._locate(at, "at")
        i = int(block.opens.searchsorted(ns, "right")) - 1
        return i >= 0 and ns < int(block.closes[i])

    def session_of(self, at: datetime) -> pd.Timestamp | None:
        """The date of the session in progress at ``at`` (open <= at < close), else ``None``.

        :param at: a tz-aware instant.
        :raises InvalidInputError: when ``at`` is naive.
        """
        block, ns = self._locate(at, "at")
        i = int(block.opens.searchsorted(ns, "right")) - 1
        if i >= 0 and ns < int(block.closes[i]):
            return pd.Timestamp(int(block.days[i]))
        return None

    def _next(self, after: object, which: str) -> pd.Timestamp:
        block, ns = self._locate(after, "after")
        for _ in range(60):
            edges = block.opens if which == "open" else block.closes
            i = int(edges.searchsorted(ns, "right"))
            if i < len(edges):
                return pd.Timestamp(int(edges[i]), tz=_UTC)
            block = _block(self.name, ns, _year_start_ns(block.last_year + 2))
        raise InvalidInputError(f"no {self.name} market {which} found after {after!r}")

    def next_open(self, after: datetime) -> pd.Timestamp:
        """The first session open strictly after ``after`` (UTC).

        :param after: a tz-aware instant.
        :raises InvalidInputError: when ``after`` is naive.
        """
        return self._next(after, "open")

    def next_close(self, after: datetime) -> pd.Timestamp:
        """The first session close strictly after ``after`` (UTC): the current session's close when a
        session is in progress.

        :param after: a tz-aware instant.
        :raises InvalidInputError: when ``after`` is naive.
        """
        return self._next(after, "close")

    # -- bars ----------------------------------------------------------------------------------

    def bar_index(self, start: object, end: object, timeframe: str = "1Day") -> pd.DatetimeIndex:
        """The canonical bar timestamps (UTC) of every session in [start, end].

        ``1Day``: each session date at midnight UTC. Intraday: bar starts from each session's open,
        stepping by the timeframe while before its close (the last bar of an early close may be
        short). For 24/7, intraday bars cover each UTC day from 00:00.

        :param start: first session date.
        :param end: last session date.
        :param timeframe: ``1Min`` ... ``23Hour`` or ``1Day``.
        :raises InvalidInputError: for a bad timeframe or date, or start after end.
        """
        tf = parse_timeframe(timeframe)
        days, opens, closes = self.session_bounds(start, end)
        if tf.is_daily:
            return from_ns_array(days, name="ts")
        return from_ns_array(intraday_bar_starts(opens, closes, int(tf.delta.value)), name="ts")


    def bar_bounds(self, ts_ns: np.ndarray, timeframe: str) -> tuple[np.ndarray, np.ndarray]:
        """When each bar of this calendar starts and ends: the instants its open and its close exist.

        A bar's open exists once its session has opened, not at its timestamp: a daily bar is stamped at
        midnight UTC of its session date but starts at the session's open (09:30 New York) and ends at its
        close; an intraday bar starts at its timestamp (inside a session) and ends one timeframe later, cut
        at the session's close (the short last bar of an early close). A bar outside every session never
        starts nor ends (``int64`` max).

        :param ts_ns: bar timestamps, int64 nanoseconds UTC.
        :param timeframe: the bars' timeframe.
        :return: (starts, ends), int64 nanoseconds UTC.
        """
        tf = parse_timeframe(timeframe)
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        never = np.iinfo(np.int64).max
        if not len(ts_ns):
            return ts_ns.copy(), ts_ns.copy()
        days, opens, closes = self.session_bounds(pd.Timestamp(int(ts_ns.min()) - _DAY_NS),
                                                  pd.Timestamp(int(ts_ns.max()) + _DAY_NS))
        if not len(days):
            return np.full(len(ts_ns), never), np.full(len(ts_ns), never)
        if tf.is_daily:
            pos = np.minimum(np.searchsorted(days, ts_ns), len(days) - 1)
            ok = days[pos] == ts_ns
            return np.where(ok, opens[pos], never), np.where(ok, closes[pos], never)
        pos, inside = session_positions(opens, closes, ts_ns)
        session_close = closes[np.maximum(pos, 0)]
        return (np.where(inside, ts_ns, never),
                np.where(inside, np.minimum(ts_ns + int(tf.delta.value), session_close), never))


def utc_ns(values: object) -> np.ndarray:
    """Instants (a Series, DatetimeIndex or datetime array) as int64 nanoseconds UTC; naive ones are UTC.

    Kept for callers of this name: :func:`~airflow_provider_portfolio.market.timeutil.to_ns_array`.
    """
    return to_ns_array(values)


def session_positions(opens: np.ndarray, closes: np.ndarray, ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each instant ``ns``: the position of the last session opening at or before it, and whether
    it lies inside that session (open <= instant < close). All arguments int64 nanoseconds UTC;
    ``opens`` sorted ascending.
    """
    idx = np.searchsorted(opens, ns, side="right") - 1
    if not len(opens):
        return idx, np.zeros(len(ns), dtype=bool)
    return idx, (idx >= 0) & (ns < closes[np.maximum(idx, 0)])


def intraday_bar_starts(opens: np.ndarray, closes: np.ndarray, step_ns: int) -> np.ndarray:
    """Bar starts (int64 ns) of sessions ``opens[i] <= t < closes[i]`` stepping by ``step_ns``.

    :param opens: session opens, int64 nanoseconds.
    :param closes: session closes, int64 nanoseconds.
    :param step_ns: bar length in nanoseconds.
    """
    counts = -((opens - closes) // step_ns)  # ceil((close - open) / step)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts
    rank = np.arange(total, dtype=np.int64) - np.repeat(first, counts)
    return np.repeat(opens, counts) + rank * step_ns


def calendar_for_symbol(symbol: str, exchange: str = DEFAULT_EXCHANGE) -> MarketCalendar:
    """The calendar a symbol trades on: ``"24/7"`` for crypto pairs (``BTC/USD``), else ``exchange``.

    :param symbol: ticker or crypto pair.
    :param exchange: calendar of equities.
    """
    return MarketCalendar(ALWAYS_OPEN if is_crypto(symbol) else exchange)


def bar_times(bars: pd.DataFrame, exchange: str = DEFAULT_EXCHANGE) -> tuple[np.ndarray, np.ndarray]:
    """When each row of a bar frame starts and ends (see :meth:`MarketCalendar.bar_bounds`), each symbol on its
    own calendar (:func:`calendar_for_symbol`): the one rule for "has this bar's open / close happened yet".

    :param bars: canonical bars (``symbol``, ``timeframe``, ``ts``), any number of symbols and timeframes.
    :param exchange: the calendar of equities.
    :return: (starts, ends) aligned with the rows, int64 nanoseconds UTC.
    """
    n = len(bars)
    starts = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    ends = starts.copy()
    if not n:
        return starts, ends
    ts_ns = to_ns_array(bars["ts"])
    symbols, by_symbol = np.unique(bars["symbol"].to_numpy(dtype=str), return_inverse=True)
    names, by_calendar = np.unique([calendar_for_symbol(s, exchange).name for s in symbols], return_inverse=True)
    calendar_of_row = by_calendar[by_symbol]
    timeframes, timeframe_of_row = np.unique(bars["timeframe"].to_numpy(dtype=str), return_inverse=True)
    for c, name in enumerate(names):
        for t, timeframe in enumerate(timeframes):
            rows = (calendar_of_row == c) & (timeframe_of_row == t)
            if rows.any():
                starts[rows], ends[rows] = MarketCalendar(str(name)).bar_bounds(ts_ns[rows], str(timeframe))
    return starts, ends
