"""MarketHoursSensor: proceed inside an exchange's trading window; wait (deferred) or skip outside it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import utc_now
from airflow_provider_portfolio.market.windows import check_offsets_cheaply, coerce_offset, trading_windows

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSensorTimeout, AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_portfolio.market.windows import TradingWindows, Window

WHEN_CLOSED = ("wait", "skip")


class MarketHoursSensor(BaseSensorOperator):
    """Succeed while ``exchange`` is inside a trading window; wait for the next window or skip otherwise.

    A trading window is a session narrowed by ``open_offset`` and ``close_offset``: ``[open +
    open_offset, close - close_offset)``, with the calendar's early closes, holidays and one-off
    closures, computed by :class:`~airflow_provider_portfolio.market.windows.TradingWindows` like the
    session timetable's windows and :func:`~airflow_provider_portfolio.market.windows.window_state`. With ``extended_hours`` its edges
    are the pre-market start and post-market end (NYSE-type calendars only).

    When the window is open the sensor returns (XCom) ``{"exchange", "session", "session_open",
    "session_close", "window_start", "window_end"}``, ISO strings in UTC. When it is closed:

    - ``when_closed="skip"``: the task is skipped at once (so are downstream tasks with the default
      trigger rule), e.g. for a job that must only run for bars inside the window;
    - ``when_closed="wait"`` and ``deferrable=True`` (default): the task defers, holding no worker
      slot, on a :class:`~airflow_provider_portfolio.triggers.market_hours.MarketOpenTrigger` that fires
      at the next window's start or after ``max_defer``, whichever is first, or at the sensor's
      ``timeout``. On resuming, the calendar is checked again and the task defers again while closed, so
      long weekends, holidays and calendar updates are handled. Past ``timeout`` it fails with
      ``AirflowSensorTimeout`` (is skipped with ``soft_fail``);
    - ``when_closed="wait"`` and ``deferrable=False``: classic ``poke``/``reschedule`` sensing every
      ``poke_interval``.

    :param exchange: calendar name (templated), e.g. ``"XNYS"``, ``"XLON"``, ``"24/7"``. Default
        ``[portfolio] default_exchange``.
    :param when_closed: ``"wait"`` (default) or ``"skip"``.
    :param open_offset: start the window this long after the open; ``timedelta`` or minutes, ``>= 0``.
    :param close_offset: end the window this long before the close; ``timedelta`` or minutes, ``>= 0``.
    :param extended_hours: use pre-market start and post-market end instead of the regular hours.
    :param deferrable: wait in the triggerer rather than a worker slot (default True).
    :param max_defer: longest single deferral (default 6 hours); the calendar is re-checked after each.
    """

    template_fields: Sequence[str] = ("exchange",)
    ui_color = "#cfe2f3"

    def __init__(
        self,
        *,
        exchange: str | None = None,
        when_closed: str = "wait",
        open_offset: timedelta | int | float = timedelta(0),
        close_offset: timedelta | int | float = timedelta(0),
        extended_hours: bool = False,
        deferrable: bool = True,
        max_defer: timedelta = timedelta(hours=6),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if when_closed not in WHEN_CLOSED:
            raise InvalidInputError(f"when_closed must be one of {WHEN_CLOSED}, got {when_closed!r}")
        self.exchange = exchange
        self.when_closed = when_closed
        self.open_offset = coerce_offset(open_offset, "open_offset")
        self.close_offset = coerce_offset(close_offset, "close_offset")
        self.extended_hours = bool(extended_hours)
        self.deferrable = deferrable
        if isinstance(max_defer, (int, float)) and not isinstance(max_defer, bool):
            max_defer = timedelta(seconds=max_defer)
        if not isinstance(max_defer, timedelta) or max_defer <= timedelta(0):
            raise InvalidInputError(f"max_defer must be a positive timedelta, got {max_defer!r}")
        self.max_defer = max_defer
        # Cheap parse-time check for common exchanges; every exchange is checked against its calendar
        # when the task runs.
        if isinstance(exchange, str) and "{" not in exchange:
            check_offsets_cheaply(exchange, self.open_offset, self.close_offset, self.extended_hours)

    # -- pieces ----------------------------------------------------------------------------------

    def _now(self) -> datetime:
        """The current instant (UTC). The one clock of the sensor."""
        return utc_now()

    def _trading_windows(self) -> TradingWindows:
        from airflow_provider_portfolio.config import get_option

        exchange = self.exchange or get_option("default_exchange")
        # One validated TradingWindows per setting and process (cached), so later pokes skip the checks.
        return trading_windows(exchange, open_offset=self.open_offset, close_offset=self.close_offset,
                               extended_hours=self.extended_hours)

    def _defer(self, windows: TradingWindows, now: datetime, deadline: datetime) -> NoReturn:
        upcoming: Window = windows.next_window(now)
        moment = min(upcoming.start, now + self.max_defer, deadline)
        self.log.info(
            "%s trading window closed at %s; next window %s..%s; deferring until %s",
            windows.exchange, now.isoformat(), upcoming.start.isoformat(), upcoming.end.isoformat(),
            moment.isoformat(),
        )
        # Imported here, not at DAG parse: Airflow's trigger base pulls in ~10 ms of modules.
        from airflow_provider_portfolio.triggers.market_hours import MarketOpenTrigger

        self.defer(
            trigger=MarketOpenTrigger(moment=moment, exchange=windows.exchange),
            method_name="execute_complete",
            kwargs={"deadline": deadline.isoformat()},
        )

    # -- Airflow entry points --------------------------------------------------------------------

    def _look(self) -> tuple[TradingWindows, datetime, Window | None]:
        """The windows, the current instant, and the window open at that instant (``None`` when closed)."""
        windows = self._trading_windows()
        now = self._now()
        return windows, now, windows.window_at(now)

    def _open(self, windows: TradingWindows, window: Window) -> dict[str, str]:
        self.log.info("%s trading window open: %s..%s", windows.exchange, window.start, window.end)
        return windows.summary(window)

    def execute(self, context: Context) -> Any:
        windows, now, window = self._look()
        if window is not None:
            return self._open(windows, window)
        if self.when_closed == "skip":
            upcoming = windows.next_window(now)
            raise AirflowSkipException(
                f"{windows.exchange} trading window closed at {now.isoformat()}; "
                f"next window {upcoming.start.isoformat()}..{upcoming.end.isoformat()}"
            )
        if self.deferrable:
            self._defer(windows, now, now + timedelta(seconds=self.timeout))
        return super().execute(context)

    def poke(self, context: Context) -> PokeReturnValue:
        windows, now, window = self._look()
        if window is None:
            upcoming = windows.next_window(now)
            self.log.info("%s trading window closed; next opens at %s", windows.exchange, upcoming.start.isoformat())
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=windows.summary(window))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None,
                         deadline: str | None = None) -> Any:
        """Resume after the trigger fired: the window when open, else defer again (or time out)."""
        if not isinstance(event, dict) or event.get("status") != "fired":
            raise RuntimeError(f"MarketHoursSensor got an unexpected trigger event: {event!r}")
        windows, now, window = self._look()
        if window is not None:
            return self._open(windows, window)
        limit = datetime.fromisoformat(deadline) if deadline else now + timedelta(seconds=self.timeout)
        if now >= limit:
            message = f"{windows.exchange} trading window still closed at the sensor's timeout ({self.timeout} s)"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        self._defer(windows, now, limit)

