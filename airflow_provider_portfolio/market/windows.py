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

Importing this module is cheap (no pandas, numpy or pandas-market-calendars): the calendar is loaded
when a :class:`TradingWindows` is built. :func:`coerce_offset` and :func:`check_offsets_cheaply` are
for callers that validate at DAG parse time.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError

if TYPE_CHECKING:
    from airflow_provider_portfolio.market.calendar import MarketCalendar

_DAY_NS = 86_400_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

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
        return isinstance(at, datetime) and at.tzinfo is not None and self.start <= at < self.end

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


def _to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _to_ns(at: object, param: str) -> int:
    if not isinstance(at, datetime):
        raise InvalidInputError(f"{param} must be a timezone-aware datetime, got {at!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInputError(
            f"{param} must be timezone-aware, got naive {at!r}: "
            "pass e.g. datetime(2024, 7, 3, 15, 0, tzinfo=timezone.utc)"
        )
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _delta_ns(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


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
    """The trading windows of one exchange.

    :param exchange: calendar name (any pandas-market-calendars name, ``"XNYS"`` by default, or
        ``"24/7"`` for crypto).
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
        exchange: str = "XNYS",
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
        self._open_ns = _delta_ns(self.open_offset)
        self._close_ns = _delta_ns(self.close_offset)
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
        today = datetime.now(timezone.utc).date()
        rows = self._rows(today - timedelta(days=366), today)
        if not rows:
            rows = self._rows(date(2024, 1, 1), date(2024, 12, 31))
        lengths = Counter(end - start for _, _, _, start, end in self._edges(rows))
        return timedelta(microseconds=lengths.most_common(1)[0][0] // 1000)

    # -- raw sessions ----------------------------------------------------------------------------

    def _rows(self, first: date, last: date) -> list[tuple[int, int, int]]:
        days, opens, closes = self.calendar.session_bounds(first, last)
        return [(int(d), int(o), int(c)) for d, o, c in zip(days.tolist(), opens.tolist(), closes.tolist())]

    def _edges(self, rows: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int, int]]:
        """(day, open, close, unnarrowed start, unnarrowed end) per session."""
        if not self.extended_hours:
            return [(d, o, c, o, c) for d, o, c in rows]
        out = []
        for d, o, c in rows:
            year = _to_datetime(d).year
            pre, post = _extended_year(self._source, year).get(d, (o, c))  # type: ignore[arg-type]
            out.append((d, o, c, min(pre, o), max(post, c)))
        return out

    def _windows(self, first: date, last: date) -> list[Window]:
        windows = []
        for d, o, c, s, e in self._edges(self._rows(first, last)):
            start, end = s + self._open_ns, e - self._close_ns
            if end <= start:  # an early close shorter than the offsets: no window that session
                continue
            windows.append(
                Window(_to_datetime(d).date(), _to_datetime(o), _to_datetime(c), _to_datetime(start), _to_datetime(end))
            )
        return windows

    # -- questions -------------------------------------------------------------------------------

    def window_at(self, at: datetime) -> Window | None:
        """The window containing ``at`` (``start <= at < end``), else ``None``.

        :param at: a tz-aware instant.
        :raises InvalidInputError: when ``at`` is naive.
        """
        ns = _to_ns(at, "at")
        day = _to_datetime(ns).date()
        for window in self._windows(day - timedelta(days=2), day + timedelta(days=2)):
            if window.start <= at < window.end:
                return window
        return None

    def next_window(self, after: datetime) -> Window:
        """The window containing ``after``, else the first window starting after it.

        :param after: a tz-aware instant.
        :raises InvalidInputError: when ``after`` is naive, or no window starts within ten years.
        """
        ns = _to_ns(after, "after")
        first = _to_datetime(ns).date() - timedelta(days=2)
        span = 14
        while span <= 4000:
            for window in self._windows(first, first + timedelta(days=span)):
                if after < window.end:
                    return window
            first, span = first + timedelta(days=span), span * 2
        raise InvalidInputError(f"no {self.exchange} trading window found after {after.isoformat()}")

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
