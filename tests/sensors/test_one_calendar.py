"""One calendar: the sensor (and its trigger's wake-up), the session timetable and window_state agree.

A grid of instants every 30 minutes across the NYSE week of 2024-07-01 (Independence Day on Thursday
2024-07-04, an early close at 13:00 New York = 17:00 UTC on Wednesday 2024-07-03), plus the instants
either side of the narrowed windows' edges. With ``open_offset=5`` and ``close_offset=15`` minutes the
windows are 13:35-19:45 UTC (13:35-16:45 on the early close).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pendulum
import pytest
from airflow.timetables.base import TimeRestriction

from airflow_provider_portfolio.market.windows import window_state
from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor
from airflow_provider_portfolio.timetables import MarketSessionTimetable

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSkipException, TaskDeferred

UTC = timezone.utc
OFFSETS = {"open_offset": 5, "close_offset": 15}
WEEK = datetime(2024, 7, 1, tzinfo=UTC)
EDGES = [datetime(2024, 7, d, h, m, s, us, tzinfo=UTC) for d, h, m, s, us in [
    (1, 13, 34, 59, 999999), (1, 13, 35, 0, 0), (1, 19, 44, 59, 999999), (1, 19, 45, 0, 0),
    (3, 16, 44, 59, 999999), (3, 16, 45, 0, 0), (3, 17, 0, 0, 0), (5, 13, 35, 0, 0), (5, 19, 44, 59, 999999),
]]
GRID = [WEEK + timedelta(minutes=30 * i) for i in range(7 * 24 * 2)] + EDGES


def _timetable_windows(timetable: MarketSessionTimetable) -> list[tuple[datetime, datetime]]:
    """The data intervals of the timetable's runs over the week (catchup from Monday)."""
    restriction = TimeRestriction(earliest=pendulum.instance(WEEK), latest=None, catchup=True)
    out, last = [], None
    while True:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.data_interval.start >= WEEK + timedelta(days=7):
            return out
        out.append((info.data_interval.start, info.data_interval.end))
        last = info.data_interval


@pytest.fixture(scope="module")
def schedules() -> dict[str, list[tuple[datetime, datetime]]]:
    return {
        "at_close": _timetable_windows(MarketSessionTimetable("XNYS", at="close", **OFFSETS)),
        "every_15": _timetable_windows(MarketSessionTimetable("XNYS", every=15, **OFFSETS)),
    }


def _sensor(when_closed: str, at: datetime) -> MarketHoursSensor:
    op = MarketHoursSensor(task_id="window", exchange="XNYS", when_closed=when_closed, max_defer=timedelta(days=7),
                           timeout=14 * 86_400, **OFFSETS)
    op._now = lambda: at  # the sensor's one clock
    return op


@pytest.mark.parametrize("at", GRID, ids=[at.strftime("%a %m-%d %H:%M:%S.%f") for at in GRID])
def test_sensor_timetable_and_window_state_agree(at, schedules):
    state = window_state("AAPL", at, exchange="XNYS", **OFFSETS)

    # The timetable: an instant is in a window when a run's data interval holds it.
    for name, windows in schedules.items():
        assert any(start <= at < end for start, end in windows) is state.is_open, name
    if state.is_open:
        assert (state.window.start, state.window.end) in schedules["at_close"]

    # The sensor: open gives the window; closed skips, or defers until the next window's start.
    if state.is_open:
        summary = _sensor("skip", at).execute({})
        assert (summary["window_start"], summary["window_end"]) == (state.window.start.isoformat(),
                                                                    state.window.end.isoformat())
    else:
        with pytest.raises(AirflowSkipException):
            _sensor("skip", at).execute({})
        with pytest.raises(TaskDeferred) as deferred:
            _sensor("wait", at).execute({})
        assert deferred.value.trigger.moment == state.window.start
    # Crypto trades through the week whatever the equities' calendar says.
    assert window_state("BTC/USD", at, exchange="XNYS", **OFFSETS).is_open


def test_the_grid_covers_every_kind_of_instant(schedules):
    """The grid is not trivially all-open or all-closed: it holds each case the test is about."""
    states = [window_state("AAPL", at, **OFFSETS) for at in GRID]
    reasons = " ".join(s.reason for s in states)
    assert 0 < sum(s.is_open for s in states) < len(states)
    for words in ("before the open", "before the window start", "after the window end", "after the close",
                  "no session on 2024-07-04 (Thursday: holiday or closure)", "Saturday: weekend"):
        assert words in reasons, words
    assert [(s.date().isoformat(), e.time().isoformat()) for s, e in schedules["at_close"]] == [
        ("2024-07-01", "19:45:00"), ("2024-07-02", "19:45:00"), ("2024-07-03", "16:45:00"), ("2024-07-05", "19:45:00"),
    ]
