"""``MarketSessionTimetable``: DAG runs that exist only inside an exchange's sessions.

Each session of the exchange (from :class:`~airflow_provider_portfolio.market.calendar.MarketCalendar`,
early closes and one-off closures included) has a *trading window*::

    [market_open + open_offset, market_close - close_offset)

computed by :class:`~airflow_provider_portfolio.market.windows.TradingWindows`, the same windows the
:class:`~airflow_provider_portfolio.sensors.market_hours.MarketHoursSensor` and
:func:`~airflow_provider_portfolio.market.windows.window_state` answer from. The timetable turns windows
into runs, in exactly one of three modes:

``every=N`` (minutes, 1..1440)
    One run per bar ``[t, t + N min)``; bars start at the window's start and step by N minutes; the
    last bar of a window is cut at the window's end (an early close gives a short last bar). Data
    interval: the bar; ``run_after``: the bar's end.
``at="open"``
    One run per session; data interval ``[window start, window start]`` (exact), run at the window
    start (the open plus ``open_offset``).
``at="close"``
    One run per session; data interval: the whole window ``[window start, window end]``, run at the
    window end (the close minus ``close_offset``), so the run sees the session it closes.

No run ever lies outside a session: weekends, holidays and closures have none, and a session whose
window is empty (offsets longer than an early-close day) is skipped.

The offsets were named ``after_open`` and ``before_close`` before; those names are still accepted as
constructor keywords (with a ``DeprecationWarning``) and as read-only properties, and a DAG serialized with
the old field names (``after_open_seconds``, ``before_close_seconds``) still deserializes.

Importing this module is cheap: it imports Airflow's timetable base and nothing else of weight.
pandas, numpy and pandas-market-calendars are imported on the first call that needs the calendar
(:meth:`MarketSessionTimetable.validate`, :meth:`~MarketSessionTimetable.next_dagrun_info`,
:meth:`~MarketSessionTimetable.infer_manual_data_interval`), which Airflow makes in the DAG processor
and the scheduler, never when the DAG file is imported. Construction checks everything that needs no
calendar; :meth:`~MarketSessionTimetable.validate` (called by Airflow when it bags the DAG, so errors
show as DAG import errors) checks the exchange name and the offsets against a regular session.

The class derives from Airflow's core ``airflow.timetables.base.Timetable`` on every Airflow 3
version: Airflow 3.3 serializes a custom timetable through its own ``serialize()`` and finds the class
among the plugins' registered ``timetables`` (see :mod:`airflow_provider_portfolio.plugins`).
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, to_ns, utc_date_of, utc_now
from airflow_provider_portfolio.market.windows import check_offsets_cheaply

if TYPE_CHECKING:
    from airflow.timetables.base import TimeRestriction
    from pendulum import DateTime

    from airflow_provider_portfolio.market.windows import TradingWindows

__all__ = ["MarketSessionTimetable"]

_EPOCH_PENDULUM = pendulum.datetime(1970, 1, 1, tz="UTC")
_S = 1_000_000_000  # nanoseconds per second
_DAY_S = 86_400
_SCAN_NS = 10 * _DAY_S * _S  # sessions are looked up in 10-day slices...
_MAX_SCANS = 60  # ... at most 600 days away (longer than any exchange closure on record)
_MAX_EVERY_MIN = 1440
_AT = ("open", "close")

Slot = tuple[int, int]  # (start, end) in int64 nanoseconds since the epoch, UTC; run_after is end


def _seconds(value: object, name: str) -> int:
    """A duration given as int minutes or a ``timedelta`` of whole seconds, in seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, dt.timedelta)):
        raise InvalidInputError(f"{name} must be a number of minutes (int) or a timedelta, got {value!r}")
    if isinstance(value, int):
        return value * 60
    if value % dt.timedelta(seconds=1):
        raise InvalidInputError(f"{name} must be whole seconds, got {value!r}")
    return value // dt.timedelta(seconds=1)


def _fmt(seconds: int) -> str:
    """``15 min``, ``90 s``, ``6 h 30 min``."""
    if seconds % 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes // 60} h"
    if minutes > 120:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min"


#: Old spelling -> new spelling of the offsets (constructor keywords and properties).
_ALIASES = {"after_open": "open_offset", "before_close": "close_offset"}


def _to_ns(value: dt.datetime) -> int:
    """An instant from Airflow as int nanoseconds since the epoch (naive values are taken as UTC)."""
    return to_ns(value, "instant", naive_is_utc=True)


def _to_datetime(ns: int) -> DateTime:
    """A pendulum ``DateTime`` in UTC (what Airflow expects of a timetable)."""
    return _EPOCH_PENDULUM + dt.timedelta(microseconds=ns // 1000)


def _offset(new_name: str, new: object, old: object) -> tuple[str, object]:
    """The offset given under its new name or its deprecated alias (the name used, the value)."""
    old_name = next(k for k, v in _ALIASES.items() if v == new_name)
    if old is None:
        return new_name, 0 if new is None else new
    if new is not None:
        raise InvalidInputError(
            f"give {new_name}= or its deprecated alias {old_name}=, not both (got {new_name}={new!r}, "
            f"{old_name}={old!r})"
        )
    warnings.warn(f"MarketSessionTimetable({old_name}=...) is deprecated: use {new_name}= (same meaning)",
                  DeprecationWarning, stacklevel=3)
    return old_name, old


class MarketSessionTimetable(Timetable):
    """Runs inside the sessions of one exchange: every N minutes, at the open, or before the close.

    ``schedule=MarketSessionTimetable("XNYS", every=15)`` gives one run per 15-minute bar of every NYSE
    session (09:30-16:00 New York, 13:00 on early-close days), none on weekends, holidays or closures.

    :param exchange: a pandas-market-calendars name (``"XNYS"``, ``"XLON"``...) or ``"24/7"`` (one
        session per UTC day). Checked by :meth:`validate` (when Airflow parses the DAG).
    :param every: bar length: int minutes or a ``timedelta`` of whole minutes, 1 to 1440 minutes.
    :param at: ``"open"`` or ``"close"``: one run per session, at the window's start or end.
    :param open_offset: the window starts this long after the open (int minutes or timedelta of whole
        seconds), like the sensor's ``open_offset``.
    :param close_offset: the window ends this long before the close (int minutes or timedelta of whole
        seconds), like the sensor's ``close_offset``.
    :param after_open: deprecated alias of ``open_offset``.
    :param before_close: deprecated alias of ``close_offset``.
    :raises InvalidInputError: (a ``ValueError``) unless exactly one of ``every`` and ``at`` is given,
        for an ``every`` out of range, an unknown ``at``, negative offsets, offsets of a day or more (or
        of a regular session or more, for the exchanges whose session length is known without loading
        the calendar), or both spellings of one offset.
    """

    periodic = True
    can_be_scheduled = True

    def __init__(
        self,
        exchange: str = DEFAULT_EXCHANGE,
        *,
        every: dt.timedelta | int | None = None,
        at: str | None = None,
        open_offset: dt.timedelta | int | None = None,
        close_offset: dt.timedelta | int | None = None,
        after_open: dt.timedelta | int | None = None,
        before_close: dt.timedelta | int | None = None,
    ) -> None:
        if not isinstance(exchange, str) or not exchange.strip():
            raise InvalidInputError(f"exchange must be a calendar name like 'XNYS' or '24/7', got {exchange!r}")
        if (every is None) == (at is None):
            raise InvalidInputError(
                "give exactly one of every= (minutes between runs in a session) and at= ('open' or 'close'), "
                f"got every={every!r}, at={at!r}"
            )
        every_s: int | None = None
        if every is not None:
            every_s = _seconds(every, "every")
            if every_s % 60 or not 60 <= every_s <= _MAX_EVERY_MIN * 60:
                raise InvalidInputError(
                    f"every must be whole minutes from 1 to {_MAX_EVERY_MIN}, got {every!r}"
                )
        if at is not None:
            if not isinstance(at, str) or at.strip().lower() not in _AT:
                raise InvalidInputError(f"at must be 'open' or 'close', got {at!r}")
            at = at.strip().lower()
        open_name, open_given = _offset("open_offset", open_offset, after_open)
        close_name, close_given = _offset("close_offset", close_offset, before_close)
        open_s, close_s = _seconds(open_given, open_name), _seconds(close_given, close_name)
        for name, value, given in ((open_name, open_s, open_given), (close_name, close_s, close_given)):
            if value < 0:
                raise InvalidInputError(f"{name} must not be negative, got {given!r}")
        if open_s + close_s >= _DAY_S:
            raise InvalidInputError(
                f"{open_name} ({_fmt(open_s)}) plus {close_name} ({_fmt(close_s)}) leave no trading window"
            )
        check_offsets_cheaply(exchange.strip(), dt.timedelta(seconds=open_s), dt.timedelta(seconds=close_s))
        self._exchange = exchange.strip()
        self._every_s = every_s
        self._at = at
        self._open_s = open_s
        self._close_s = close_s

    # -- parameters --------------------------------------------------------------------------------

    @property
    def exchange(self) -> str:
        """The calendar name, as given."""
        return self._exchange

    @property
    def every(self) -> dt.timedelta | None:
        """Bar length (``every`` mode), else ``None``."""
        return None if self._every_s is None else dt.timedelta(seconds=self._every_s)

    @property
    def at(self) -> str | None:
        """``"open"`` or ``"close"`` (``at`` mode), else ``None``."""
        return self._at

    @property
    def open_offset(self) -> dt.timedelta:
        """How long after the open the window starts."""
        return dt.timedelta(seconds=self._open_s)

    @property
    def close_offset(self) -> dt.timedelta:
        """How long before the close the window ends."""
        return dt.timedelta(seconds=self._close_s)

    @property
    def after_open(self) -> dt.timedelta:
        """Deprecated alias of :attr:`open_offset`."""
        return self.open_offset

    @property
    def before_close(self) -> dt.timedelta:
        """Deprecated alias of :attr:`close_offset`."""
        return self.close_offset

    def __repr__(self) -> str:
        mode = f"every={self._every_s // 60}" if self._every_s is not None else f"at={self._at!r}"
        offsets = "".join(
            f", {name}=timedelta(seconds={value})"
            for name, value in (("open_offset", self._open_s), ("close_offset", self._close_s))
            if value
        )
        return f"MarketSessionTimetable({self._exchange!r}, {mode}{offsets})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MarketSessionTimetable):
            return NotImplemented
        return self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._exchange, self._every_s, self._at, self._open_s, self._close_s))

    # -- what the UI shows ---------------------------------------------------------------------------

    def _offsets_text(self) -> str:
        parts = []
        if self._open_s:
            parts.append(f"open +{_fmt(self._open_s)}")
        if self._close_s:
            parts.append(f"close -{_fmt(self._close_s)}")
        return f" ({', '.join(parts)})" if parts else ""

    @property
    def summary(self) -> str:
        """Short text for the UI: ``every 5 min in XNYS sessions``, ``at XNYS open``, ``15 min before XNYS close``."""
        ex = self._exchange
        if self._every_s is not None:
            return f"every {self._every_s // 60} min in {ex} sessions{self._offsets_text()}"
        if self._at == "open":
            return f"{_fmt(self._open_s)} after {ex} open" if self._open_s else f"at {ex} open"
        return f"{_fmt(self._close_s)} before {ex} close" if self._close_s else f"at {ex} close"

    @property
    def description(self) -> str:  # type: ignore[override]
        """One sentence for the UI: what runs when, and what each run's data interval covers."""
        ex = self._exchange
        window = f"[{ex} open{' + ' + _fmt(self._open_s) if self._open_s else ''}, " + (
            f"{ex} close{' - ' + _fmt(self._close_s) if self._close_s else ''})"
        )
        tail = "; no runs on weekends, holidays or closures, early closes included"
        if self._every_s is not None:
            return (
                f"One run per {self._every_s // 60}-minute bar of each trading window {window}, "
                f"run when the bar ends; the last bar of a window is cut at its end{tail}."
            )
        if self._at == "open":
            return f"One run per session at the start of the trading window {window}{tail}."
        return f"One run per session at the end of the trading window {window}, covering the window{tail}."

    # -- serialization -----------------------------------------------------------------------------

    def serialize(self) -> dict[str, Any]:
        return {
            "exchange": self._exchange,
            "every_minutes": None if self._every_s is None else self._every_s // 60,
            "at": self._at,
            "open_offset_seconds": self._open_s,
            "close_offset_seconds": self._close_s,
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> MarketSessionTimetable:
        """The timetable from :meth:`serialize`'s form, or the form of earlier versions, whose offsets were
        ``after_open_seconds`` and ``before_close_seconds``."""
        every = data.get("every_minutes")

        def seconds(key: str, old_key: str) -> dt.timedelta:
            value = data.get(key, data.get(old_key))
            return dt.timedelta(seconds=int(value or 0))

        return cls(
            data["exchange"],
            every=None if every is None else int(every),
            at=data.get("at"),
            open_offset=seconds("open_offset_seconds", "after_open_seconds"),
            close_offset=seconds("close_offset_seconds", "before_close_seconds"),
        )

    # -- validation with the calendar ---------------------------------------------------------------

    def validate(self) -> None:
        """Check the exchange name and that the offsets leave a window in a regular session.

        Airflow calls this when it puts the DAG in a DagBag (DAG processor, ``dags test``), so a
        mistake shows as a DAG import error. Loads pandas-market-calendars.

        :raises InvalidInputError: for an unknown exchange (the message lists the valid names), or
            offsets that leave no trading window in a regular session.
        """
        self._trading_windows()

    def _trading_windows(self) -> TradingWindows:
        """The exchange's trading windows for these offsets (built once per process and setting)."""
        from airflow_provider_portfolio.market.windows import trading_windows

        return trading_windows(self._exchange, open_offset=dt.timedelta(seconds=self._open_s),
                               close_offset=dt.timedelta(seconds=self._close_s))

    # -- slots: runs as (start, end) nanoseconds; run_after is always the end ------------------------

    def _windows(self, lo_ns: int, hi_ns: int) -> list[Slot]:
        """Non-empty trading windows of the sessions dated from the UTC day before ``lo_ns`` to the one
        after ``hi_ns``, in order (a session's UTC instants lie within a day of its date)."""
        day = dt.timedelta(days=1)
        *_, starts, ends = self._trading_windows().window_bounds(utc_date_of(lo_ns) - day, utc_date_of(hi_ns) + day)
        return list(zip(starts.tolist(), ends.tolist()))

    def _first_in_window(self, start: int, end: int, t: int) -> Slot | None:
        """The window's first slot starting at or after ``t``."""
        if self._every_s is None:
            if start < t:
                return None
            return (start, start) if self._at == "open" else (start, end)
        step = self._every_s * _S
        s = start + max(0, -(-(t - start) // step)) * step
        return (s, min(s + step, end)) if s < end else None

    def _last_ending_in_window(self, start: int, end: int, t: int) -> Slot | None:
        """The window's last slot whose run_after (end) is at or before ``t``."""
        if self._every_s is None:
            if self._at == "open":
                return (start, start) if start <= t else None
            return (start, end) if end <= t else None
        step = self._every_s * _S
        if t >= end:
            s = start + (end - start - 1) // step * step
            return (s, end)
        k = (t - start) // step - 1
        return (start + k * step, start + (k + 1) * step) if k >= 0 else None

    def _last_starting_in_window(self, start: int, end: int, t: int) -> Slot | None:
        """The window's last slot starting at or before ``t``."""
        if start > t:
            return None
        if self._every_s is None:
            return (start, start) if self._at == "open" else (start, end)
        step = self._every_s * _S
        s = start + min((t - start) // step, (end - start - 1) // step) * step
        return (s, min(s + step, end))

    def _search_forward(self, t: int, pick: Callable[[int, int, int], Slot | None]) -> Slot | None:
        lo = t
        for _ in range(_MAX_SCANS):
            hi = lo + _SCAN_NS
            for start, end in self._windows(lo, hi):
                if (slot := pick(start, end, t)) is not None:
                    return slot
            lo = hi
        return None

    def _search_back(self, t: int, pick: Callable[[int, int, int], Slot | None]) -> Slot | None:
        hi = t
        for _ in range(_MAX_SCANS):
            lo = hi - _SCAN_NS
            for start, end in reversed(self._windows(lo, hi)):
                if (slot := pick(start, end, t)) is not None:
                    return slot
            hi = lo
        return None

    def _first_from(self, t: int) -> Slot | None:
        """The first slot starting at or after ``t``."""
        return self._search_forward(t, self._first_in_window)

    # -- Airflow's timetable protocol ----------------------------------------------------------------

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        """The next run: the slot after the last automated run, bounded by the restriction.

        Follows Airflow's data-interval timetables: a run's data interval start (its logical date) must
        lie in ``[restriction.earliest, restriction.latest]``; with ``catchup=False`` the first run is
        the latest slot that has already ended (``run_after <= now``), or later ones, never older ones.
        A DAG with neither a start date nor a previous run starts the same way.
        """
        candidates: list[Slot] = []
        if last_automated_data_interval is not None:
            last_start = _to_ns(last_automated_data_interval.start)
            last_end = _to_ns(last_automated_data_interval.end)
            # The next slot starts once the last one ended (realigns after a schedule change).
            after_last = self._first_from(max(last_end, last_start + 1))
            if after_last is None:
                return None
            candidates.append(after_last)
        if restriction.earliest is not None:
            from_earliest = self._first_from(_to_ns(restriction.earliest))
            if from_earliest is None:
                return None
            candidates.append(from_earliest)
        if not restriction.catchup or not candidates:
            now = _to_ns(utc_now())
            latest_done = self._search_back(now, self._last_ending_in_window) or self._first_from(now)
            if latest_done is not None:
                candidates.append(latest_done)
        if not candidates:
            return None
        start, end = max(candidates)
        if restriction.latest is not None and start > _to_ns(restriction.latest):
            return None
        return DagRunInfo.interval(start=_to_datetime(start), end=_to_datetime(end))

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """The slot holding ``run_after`` (its start at or before it), else the last one before it.

        ``every``: the bar containing ``run_after`` or, between sessions, the session's last bar;
        ``at="open"``: the latest window start; ``at="close"``: the current or latest window.
        """
        t = _to_ns(run_after)
        slot = self._search_back(t, self._last_starting_in_window) or self._first_from(t)
        if slot is None:
            raise InvalidInputError(f"no {self._exchange} session near {run_after!r}")
        return DataInterval(start=_to_datetime(slot[0]), end=_to_datetime(slot[1]))
