"""Trading windows: the part of each exchange session a job may act in.

A *window* is a session narrowed by two offsets: ``[session open + open_offset, session close -
close_offset)``, half-open like a session. Closes come from the calendar, so early closes (13:00 ET
on the day before Independence Day, the day after Thanksgiving, Christmas Eve) give early window
ends, and holidays or one-off closures give no window at all.

With ``extended_hours=True`` the window's edges are the pre-market start and the post-market end
instead of the regular open and close (NYSE: 04:00 and 20:00 ET, 17:00 ET after an early close).
Those times come from pandas-market-calendars and exist only for calendars that define ``pre`` and
``post`` market times (``NYSE``, ``NASDAQ``...). ``XNYS`` (the default exchange, an exchange_calendars
mirror without extended hours) takes them from pandas-market-calendars' ``NYSE`` calendar, matched by
session date. Other calendars, and ``"24/7"``, refuse ``extended_hours`` with
:class:`~airflow_provider_portfolio.exceptions.InvalidInputError`.

Offsets must be ``>= 0``; together they must leave a window in a regular full session of the
exchange (checked at construction). A session shorter than the offsets (an early close with large
offsets) has no window: it is skipped, and :meth:`TradingWindows.next_window` moves on to the next
session.

This module is the one place windows are computed. Its users: the market-hours sensor and the wake-up
instant of its trigger, the session timetable (its runs are the windows, cut into bars), and
:func:`window_state` / :func:`window_states`, the "is the market open for this symbol now" gate of the
per-asset agents and the trading cycle (a symbol's calendar from
:func:`~airflow_provider_portfolio.market.calendar.calendar_for_symbol`: crypto pairs trade 24/7).
:func:`trading_windows` builds one :class:`TradingWindows` per setting and process.

Importing this module is cheap (no pandas, numpy or pandas-market-calendars): the calendar is loaded
when a :class:`TradingWindows` is built. :func:`coerce_offset` and :func:`check_offsets_cheaply` are
for callers that validate at DAG parse time.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import (
    DEFAULT_EXCHANGE,
    ensure_utc,
    from_ns,
    is_aware,
    timedelta_ns,
    to_ns,
    utc_now,
)

if TYPE_CHECKING:
    import numpy as np

    from airflow_provider_portfolio.market.calendar import MarketCalendar

__all__ = [
    "DEFAULT_EXCHANGE", "TradingWindows", "Window", "WindowState", "check_offsets_cheaply", "coerce_offset",
    "trading_windows", "window_state", "window_states",
]

#: The around-the-clock calendar (crypto); the same name as ``market.calendar.ALWAYS_OPEN``.
_ALWAYS_OPEN = "24/7"

#: Calendars whose extended hours are read from another pandas-market-calendars calendar.
_EXTENDED_HOURS_SOURCE = {"XNYS": "NYSE"}

#: Length of a regular full session (and of pre-market start to post-market end) of common
#: exchanges, for checks at DAG parse time that must not load the calendar. Keys are casefolded.
TYPICAL_SESSION_LENGTH: dict[str, timedelta] = {
    "xnys": timedelta(hours=6, minutes=30),
    "nyse": timedelta(hours=6, minutes=30),
    "nasdaq": timedelta(hours=6, minutes=30),
    "xtse": timedelta(hours=6, minutes=30),
    "xlon": timedelta(hours=8, minutes=30),
    "24/7": timedelta(hours=24),
}
TYPICAL_EXTENDED_LENGTH: dict[str, timedelta] = {
    "xnys": timedelta(hours=16),
    "nyse": timedelta(hours=16),
    "nasdaq": timedelta(hours=16),
}


@dataclass(frozen=True)
class Window:
    """One trading window, all instants tz-aware UTC.

    :param session: the session's date (the exchange's trading date).
    :param session_open: the session's regular open.
    :param session_close: the session's regular close (early closes included).
    :param start: first instant of the window.
    :param end: first instant after the window (half-open ``[start, end)``).
    """

    session: date
    session_open: datetime
    session_close: datetime
    start: datetime
    end: datetime

    def __contains__(self, at: object) -> bool:
        return is_aware(at) and self.start <= at < self.end  # type: ignore[operator]

    def to_dict(self) -> dict[str, str]:
        """JSON-friendly form: ISO date and ISO instants with ``+00:00``."""
        return {
            "session": self.session.isoformat(),
            "session_open": self.session_open.isoformat(),
            "session_close": self.session_close.isoformat(),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }


def coerce_offset(value: object, param: str) -> timedelta:
    """An offset as a ``timedelta >= 0``; ints and floats are minutes.

    :param value: ``timedelta``, or a number of minutes.
    :param param: the parameter's name, for the error message.
    :raises InvalidInputError: for another type or a negative offset.
    """
    if isinstance(value, timedelta):
        offset = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInputError(f"{param} must be a finite number of minutes, got {value!r}")
        offset = timedelta(minutes=value)
    else:
        raise InvalidInputError(f"{param} must be a timedelta or a number of minutes, got {value!r}")
    if offset < timedelta(0):
        raise InvalidInputError(f"{param} must be >= 0, got -{-offset}")
    return offset


def _no_window_message(exchange: str, open_offset: timedelta, close_offset: timedelta, length: timedelta,
                       extended_hours: bool) -> str:
    kind = "pre-market start to post-market end" if extended_hours else "regular session"
    return (
        f"open_offset {open_offset} + close_offset {close_offset} leave no trading window: a {kind} of "
        f"{exchange} lasts {length}. Make the offsets sum to less than {length}."
    )


def check_offsets_cheaply(exchange: str, open_offset: timedelta, close_offset: timedelta,
                          extended_hours: bool = False) -> None:
    """Refuse offsets that leave no window, for exchanges in the small built-in table; else do nothing.

    Loads no calendar (for DAG parse time). :class:`TradingWindows` checks every exchange against
    its calendar.

    :raises InvalidInputError: when the offsets sum to at least the exchange's typical session length.
    """
    table = TYPICAL_EXTENDED_LENGTH if extended_hours else TYPICAL_SESSION_LENGTH
    length = table.get(exchange.strip().casefold())
    if length is not None and open_offset + close_offset >= length:
        raise InvalidInputError(_no_window_message(exchange, open_offset, close_offset, length, extended_hours))


@functools.lru_cache(maxsize=None)
def _extended_source(name: str) -> str | None:
    """The pandas-market-calendars calendar holding ``name``'s pre/post times, or None."""
    from airflow_provider_portfolio.market.calendar import _exchange_calendar

    source = _EXTENDED_HOURS_SOURCE.get(name, name)
    times = getattr(_exchange_calendar(source), "regular_market_times", {})
    return source if "pre" in times and "post" in times else None


@functools.lru_cache(maxsize=256)
def _extended_year(source: str, year: int) -> dict[int, tuple[int, int]]:
    """Session date (ns) -> (pre-market start, post-market end) in ns, for one year of ``source``."""
    import pandas as pd

    from airflow_provider_portfolio.market.calendar import _exchange_calendar

    schedule = _exchange_calendar(source).schedule(f"{year:04d}-01-01", f"{year:04d}-12-31", start="pre", end="post")
    days = pd.DatetimeIndex(schedule.index).as_unit("ns").asi8
    pre = pd.DatetimeIndex(schedule["pre"]).tz_convert("UTC").as_unit("ns").asi8
    post = pd.DatetimeIndex(schedule["post"]).tz_convert("UTC").as_unit("ns").asi8
    return {int(d): (int(a), int(b)) for d, a, b in zip(days, pre, post)}


class TradingWindows:
    """The trading windows of one exchange: the one place windows are computed.

    The sensor, its trigger's wake-up instant, the session timetable and :func:`window_state` (the
    agents' and the risk rules' "is the market open for this symbol now") all ask an instance of this
    class. Build one per setting and reuse it (:func:`trading_windows` caches them): construction
    checks the offsets against a year of sessions, questions afterwards cost microseconds.

    :param exchange: calendar name (any pandas-market-calendars name, :data:`DEFAULT_EXCHANGE` by
        default, or ``"24/7"`` for crypto).
    :param open_offset: time after the open (or pre-market start) when the window starts;
        ``timedelta`` or minutes, ``>= 0``.
    :param close_offset: time before the close (or post-market end) when the window ends;
        ``timedelta`` or minutes, ``>= 0``.
    :param extended_hours: use pre-market start and post-market end instead of the regular open and
        close (calendars with pre/post times only, see the module docstring).
    :raises InvalidInputError: for an unknown exchange (the message lists valid names), a bad or
        negative offset, offsets that leave no window in a regular full session, or extended hours
        on a calendar that does not define them.
    """

    def __init__(
        self,
        exchange: str = DEFAULT_EXCHANGE,
        *,
        open_offset: timedelta | int | float = timedelta(0),
        close_offset: timedelta | int | float = timedelta(0),
        extended_hours: bool = False,
    ) -> None:
        from airflow_provider_portfolio.market.calendar import MarketCalendar

        self.calendar: MarketCalendar = MarketCalendar(exchange)
        self.exchange: str = self.calendar.name
        self.open_offset = coerce_offset(open_offset, "open_offset")
        self.close_offset = coerce_offset(close_offset, "close_offset")
        self.extended_hours = bool(extended_hours)
        self._source: str | None = None
        if self.extended_hours:
            self._source = None if self.calendar.is_24_7 else _extended_source(self.exchange)
            if self._source is None:
                raise InvalidInputError(
                    f"extended_hours is not available for {self.exchange!r}: its calendar defines no pre-market "
                    "and post-market times. Calendars that do include NYSE, NASDAQ and XNYS."
                )
        self._open_ns = timedelta_ns(self.open_offset)
        self._close_ns = timedelta_ns(self.close_offset)
        self._regular_ns, self._session_ns = self._typical_lengths()
        length = self.regular_length()
        if self.open_offset + self.close_offset >= length:
            raise InvalidInputError(
                _no_window_message(self.exchange, self.open_offset, self.close_offset, length, self.extended_hours)
            )

    def __repr__(self) -> str:
        return (
            f"TradingWindows({self.exchange!r}, open_offset={self.open_offset!r}, "
            f"close_offset={self.close_offset!r}, extended_hours={self.extended_hours})"
        )

    def regular_length(self) -> timedelta:
        """The most common unnarrowed window length over the last year's sessions (a regular full
        session, or pre-market start to post-market end with extended hours)."""
        return timedelta(microseconds=self._regular_ns // 1000)

    def _typical_lengths(self) -> tuple[int, int]:
        """Most common (unnarrowed window, regular session) lengths in ns over the last year's sessions."""
        today = utc_now().date()
        days, opens, closes, starts, ends = self._edges(today - timedelta(days=366), today)
        if not len(days):
            days, opens, closes, starts, ends = self._edges(date(2024, 1, 1), date(2024, 12, 31))
        windows = Counter((ends - starts).tolist()).most_common(1)[0][0]
        sessions = Counter((closes - opens).tolist()).most_common(1)[0][0]
        return int(windows), int(sessions)

    # -- raw sessions ----------------------------------------------------------------------------

    def _edges(self, first: object, last: object) -> tuple[np.ndarray, ...]:
        """(dates, opens, closes, unnarrowed starts, unnarrowed ends) of the sessions dated in [first, last]."""
        import numpy as np

        days, opens, closes = self.calendar.session_bounds(first, last)
        if not self.extended_hours:
            return days, opens, closes, opens, closes
        pre, post = opens.copy(), closes.copy()
        for i, (d, o, c) in enumerate(zip(days.tolist(), opens.tolist(), closes.tolist())):
            pre[i], post[i] = _extended_year(self._source, from_ns(d).year).get(d, (o, c))
        return days, opens, closes, np.minimum(pre, opens), np.maximum(post, closes)

    def window_bounds(self, first: object, last: object) -> tuple[np.ndarray, ...]:
        """The windows of the sessions dated in [first, last], as int64 nanosecond arrays (UTC).

        The vectorised form of :meth:`window_at` and :meth:`next_window`, for callers that scan many
        windows (the timetable, many symbols). Sessions whose window is empty (an early close shorter
        than the offsets) are left out.

        :param first: first session date (``date``, ``datetime``, ISO text; see
            :func:`~airflow_provider_portfolio.market.calendar.parse_session_date`).
        :param last: last session date.
        :return: ``(sessions, session_opens, session_closes, starts, ends)``, aligned, sorted; a window
            is ``[start, end)``.
        :raises InvalidInputError: when a date cannot be parsed or ``first`` is after ``last``.
        """
        days, opens, closes, starts, ends = self._edges(first, last)
        starts, ends = starts + self._open_ns, ends - self._close_ns
        keep = starts < ends
        return days[keep], opens[keep], closes[keep], starts[keep], ends[keep]

    def _window(self, bounds: tuple[np.ndarray, ...], i: int) -> Window:
        day, session_open, session_close, start, end = (int(column[i]) for column in bounds)
        return Window(from_ns(day).date(), from_ns(session_open), from_ns(session_close), from_ns(start), from_ns(end))

    # -- questions -------------------------------------------------------------------------------

    def window_at(self, at: datetime) -> Window | None:
        """The window containing ``at`` (``start <= at < end``), else ``None``.

        :param at: a tz-aware instant.
        :raises InvalidInputError: when ``at`` is naive.
        """
        ns = to_ns(at, "at")
        day = from_ns(ns).date()
        bounds = self.window_bounds(day - timedelta(days=2), day + timedelta(days=2))
        i = int(bounds[3].searchsorted(ns, "right")) - 1  # the last window starting at or before ``at``
        return self._window(bounds, i) if i >= 0 and ns < int(bounds[4][i]) else None

    def next_window(self, after: datetime) -> Window:
        """The window containing ``after``, else the first window starting after it.

        :param after: a tz-aware instant.
        :raises InvalidInputError: when ``after`` is naive, or no window starts within ten years.
        """
        ns = to_ns(after, "after")
        first = from_ns(ns).date() - timedelta(days=2)
        span = 14
        while span <= 4000:
            bounds = self.window_bounds(first, first + timedelta(days=span))
            i = int(bounds[4].searchsorted(ns, "right"))  # the first window ending after ``after``
            if i < len(bounds[4]):
                return self._window(bounds, i)
            first, span = first + timedelta(days=span), span * 2
        raise InvalidInputError(f"no {self.exchange} trading window found after {after.isoformat()}")

    def previous_window(self, before: datetime) -> Window | None:
        """The last window that ended at or before ``before``, within the past three weeks, else ``None``.

        :param before: a tz-aware instant.
        :raises InvalidInputError: when ``before`` is naive.
        """
        ns = to_ns(before, "before")
        day = from_ns(ns).date()
        bounds = self.window_bounds(day - timedelta(days=21), day + timedelta(days=1))
        i = int(bounds[4].searchsorted(ns, "right")) - 1
        return self._window(bounds, i) if i >= 0 else None

    def why_closed(self, at: datetime) -> str:
        """Why ``at`` lies outside every window, in a few words naming the session and the window (the
        reason of a closed :class:`WindowState`); ``""`` when ``at`` is inside a window.

        :param at: a tz-aware instant.
        :raises InvalidInputError: when ``at`` is naive.
        """
        at = ensure_utc(at)
        if self.window_at(at) is not None:
            return ""
        upcoming, done = self.next_window(at), self.previous_window(at)
        local = at.astimezone(_zone(self.calendar.timezone)).date()
        if upcoming.session == local:
            if at >= upcoming.session_open and not self.extended_hours:
                why = f"before the window start of session {local} (open + {_minutes(self.open_offset)})"
            else:
                why = f"before the open of session {local}"
        elif done is not None and done.session == local:
            if at < done.session_close and not self.extended_hours:
                why = f"after the window end of session {local} (close - {_minutes(self.close_offset)}; window"
            else:
                early = "" if self.calendar.is_24_7 or self._is_full(done) else "early "
                why = f"after the {early}close of session {local} (window"
            why += f" {_span(done)})"
        elif len(self.calendar.session_bounds(local, local)[0]):
            why = (f"the session of {local} is too short for open_offset {_minutes(self.open_offset)} + "
                   f"close_offset {_minutes(self.close_offset)}")
        else:
            kind = "weekend" if local.weekday() >= 5 else "holiday or closure"
            why = f"no session on {local} ({local:%A}: {kind})"
        return f"{why}; next window {upcoming.session} {_span(upcoming)}"

    def _is_full(self, window: Window) -> bool:
        return timedelta_ns(window.session_close - window.session_open) >= self._session_ns

    def summary(self, window: Window) -> dict[str, Any]:
        """``window`` as the sensor's XCom: exchange, session, session_open, session_close,
        window_start, window_end (ISO strings)."""
        data = window.to_dict()
        return {
            "exchange": self.exchange,
            "session": data["session"],
            "session_open": data["session_open"],
            "session_close": data["session_close"],
            "window_start": data["start"],
            "window_end": data["end"],
        }


def _span(window: Window) -> str:
    """``13:35..16:45 UTC`` (dates shown when the window spans midnight UTC)."""
    if window.start.date() == window.end.date() or window.end == datetime.combine(
            window.end.date(), datetime.min.time(), window.end.tzinfo):
        return f"{window.start:%H:%M}..{window.end:%H:%M} UTC"
    return f"{window.start:%Y-%m-%d %H:%M}..{window.end:%Y-%m-%d %H:%M} UTC"


def _minutes(delta: timedelta) -> str:
    """``5 min``, ``90 min``, or the ``timedelta`` text when not whole minutes."""
    return f"{delta // timedelta(minutes=1)} min" if not delta % timedelta(minutes=1) else str(delta)


@functools.lru_cache(maxsize=None)
def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


@functools.lru_cache(maxsize=256)
def _cached_windows(exchange: str, open_offset: timedelta, close_offset: timedelta,
                    extended_hours: bool) -> TradingWindows:
    return TradingWindows(exchange, open_offset=open_offset, close_offset=close_offset,
                          extended_hours=extended_hours)


def trading_windows(
    exchange: str = DEFAULT_EXCHANGE,
    *,
    open_offset: timedelta | int | float = timedelta(0),
    close_offset: timedelta | int | float = timedelta(0),
    extended_hours: bool = False,
) -> TradingWindows:
    """The :class:`TradingWindows` of one setting, built once per process (instances are immutable).

    Same parameters and errors as :class:`TradingWindows`; a setting that fails is not cached.
    """
    if not isinstance(exchange, str) or not exchange.strip():
        raise InvalidInputError(f"calendar name must be a non-empty string, got {exchange!r}")
    return _cached_windows(exchange.strip(), coerce_offset(open_offset, "open_offset"),
                           coerce_offset(close_offset, "close_offset"), bool(extended_hours))


# -- is the market open for this symbol now ---------------------------------------------------------


@dataclass(frozen=True)
class WindowState:
    """Whether a symbol's trading window is open at an instant, and why not.

    Truthy when open, so ``if window_state(symbol, now): ...`` reads as the gate it is.

    :param symbol: the symbol asked about.
    :param calendar: the calendar it trades on (``"XNYS"``..., ``"24/7"`` for crypto pairs).
    :param at: the instant asked about, in UTC.
    :param is_open: whether ``at`` lies inside a window (``start <= at < end``).
    :param window: the window containing ``at`` when open; else the next window.
    :param reason: ``""`` when open; else one line naming the symbol, the calendar and the windows, e.g.
        ``"AAPL: XNYS trading window closed at 2024-07-04T15:00:00+00:00: no session on 2024-07-04
        (Thursday: holiday or closure); next window 2024-07-05 13:30..20:00 UTC"``.
    """

    symbol: str
    calendar: str
    at: datetime
    is_open: bool
    window: Window
    reason: str

    def __bool__(self) -> bool:
        return self.is_open

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (XCom, logs): the fields, ``window`` as :meth:`Window.to_dict`."""
        return {"symbol": self.symbol, "calendar": self.calendar, "at": self.at.isoformat(),
                "is_open": self.is_open, "window": self.window.to_dict(), "reason": self.reason}


def _calendar_state(windows: TradingWindows, at: datetime) -> tuple[bool, Window, str]:
    """(open, window containing ``at`` or the next one, why closed) for one calendar."""
    window = windows.window_at(at)
    if window is not None:
        return True, window, ""
    return False, windows.next_window(at), windows.why_closed(at)


def _windows_for(calendar_name: str, open_offset: object, close_offset: object,
                 extended_hours: bool) -> TradingWindows:
    if calendar_name == _ALWAYS_OPEN:  # no open or close to narrow: crypto trades around the clock
        return trading_windows(_ALWAYS_OPEN)
    return trading_windows(calendar_name, open_offset=open_offset, close_offset=close_offset,  # type: ignore[arg-type]
                           extended_hours=extended_hours)


def window_states(
    symbols: Iterable[str],
    at: datetime,
    *,
    exchange: str = DEFAULT_EXCHANGE,
    open_offset: timedelta | int | float = timedelta(0),
    close_offset: timedelta | int | float = timedelta(0),
    extended_hours: bool = False,
) -> dict[str, WindowState]:
    """:func:`window_state` of many symbols at one instant: each calendar is asked once, whatever the
    number of symbols (a cycle of 500 equities and 20 crypto pairs asks two calendars).

    Same parameters as :func:`window_state`, ``symbols`` instead of ``symbol``.

    :return: symbol -> state, in the order of ``symbols`` (duplicates once).
    """
    from airflow_provider_portfolio.market.calendar import calendar_for_symbol
    from airflow_provider_portfolio.market.params import is_crypto

    at = ensure_utc(at)
    symbols = list(dict.fromkeys(symbols))
    if bad := [s for s in symbols if not isinstance(s, str) or not s.strip()]:
        raise InvalidInputError(f"symbols must be non-empty strings, got {bad[0]!r}")
    # A symbol's calendar depends only on whether it is a crypto pair (calendar_for_symbol).
    names = {kind: calendar_for_symbol(s, exchange).name
             for kind, s in {is_crypto(s): s for s in reversed(symbols)}.items()}
    by_calendar = {name: _calendar_state(_windows_for(name, open_offset, close_offset, extended_hours), at)
                   for name in set(names.values())}
    out = {}
    for symbol in symbols:
        name = names[is_crypto(symbol)]
        is_open, window, why = by_calendar[name]
        reason = "" if is_open else f"{symbol}: {name} trading window closed at {at.isoformat()}: {why}"
        out[symbol] = WindowState(symbol, name, at, is_open, window, reason)
    return out


def window_state(
    symbol: str,
    at: datetime,
    *,
    exchange: str = DEFAULT_EXCHANGE,
    open_offset: timedelta | int | float = timedelta(0),
    close_offset: timedelta | int | float = timedelta(0),
    extended_hours: bool = False,
) -> WindowState:
    """Whether ``symbol``'s market is inside its trading window at ``at``, the window, and why not.

    The gate of "may this symbol trade now" for the per-asset agents and the trading cycle's
    ``market_open`` risk input, on the same windows as the sensor and the timetable.

    The symbol's calendar is :func:`~airflow_provider_portfolio.market.calendar.calendar_for_symbol`'s:
    ``"24/7"`` for crypto pairs (``BTC/USD``), else ``exchange``. The window is ``[session open +
    open_offset, session close - close_offset)`` (half-open, early closes, holidays and closures from the
    calendar). The offsets and ``extended_hours`` narrow or widen exchange sessions only: a 24/7 calendar
    has no open or close, so crypto pairs are open at every instant whatever they are.

    :param symbol: ticker or crypto pair.
    :param at: the instant; tz-aware (any zone).
    :param exchange: the calendar of equities (default :data:`DEFAULT_EXCHANGE`).
    :param open_offset: the window starts this long after the open; ``timedelta`` or minutes, ``>= 0``.
    :param close_offset: the window ends this long before the close; ``timedelta`` or minutes, ``>= 0``.
    :param extended_hours: pre-market start to post-market end instead of the regular session.
    :raises InvalidInputError: for a naive ``at``, an unknown exchange, bad offsets or offsets that leave
        no window in a regular session (as :class:`TradingWindows`).
    """
    return window_states([symbol], at, exchange=exchange, open_offset=open_offset, close_offset=close_offset,
                         extended_hours=extended_hours)[symbol]
