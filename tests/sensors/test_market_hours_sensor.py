"""MarketHoursSensor at frozen instants of the NYSE's published calendar (instants written out literally).

NYSE: 09:30-16:00 ET (13:30-20:00 UTC under EDT, 14:30-21:00 UTC under EST); early close 2024-07-03 at
17:00 UTC; closed 2024-07-04, 2024-12-25, 2024-03-29 (Good Friday), 2025-01-01 and 2025-01-09.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor
from airflow_provider_portfolio.triggers.market_hours import MarketOpenTrigger

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sensor(**kwargs) -> MarketHoursSensor:
    kwargs.setdefault("task_id", "trading_window")
    kwargs.setdefault("exchange", "XNYS")
    return MarketHoursSensor(**kwargs)


def deferred_moment(op: MarketHoursSensor, at: datetime, **call) -> tuple[datetime, TaskDeferred]:
    with time_machine.travel(at, tick=False), pytest.raises(TaskDeferred) as info:
        if call:
            op.execute_complete({}, **call)
        else:
            op.execute({})
    trigger = info.value.trigger
    assert isinstance(trigger, MarketOpenTrigger)
    assert info.value.method_name == "execute_complete"
    assert trigger.exchange == "XNYS"
    return trigger.moment, info.value


# -- open: the window as XCom --------------------------------------------------------------------

def test_open_returns_the_window():
    with time_machine.travel(utc(2024, 6, 5, 15, 0), tick=False):
        result = sensor().execute({})
    assert result == {
        "exchange": "XNYS",
        "session": "2024-06-05",
        "session_open": "2024-06-05T13:30:00+00:00",
        "session_close": "2024-06-05T20:00:00+00:00",
        "window_start": "2024-06-05T13:30:00+00:00",
        "window_end": "2024-06-05T20:00:00+00:00",
    }


def test_open_with_offsets_on_an_early_close():
    op = sensor(open_offset=timedelta(minutes=5), close_offset=timedelta(minutes=15))
    with time_machine.travel(utc(2024, 7, 3, 16, 0), tick=False):
        result = op.execute({})
    assert (result["session_close"], result["window_start"], result["window_end"]) == (
        "2024-07-03T17:00:00+00:00", "2024-07-03T13:35:00+00:00", "2024-07-03T16:45:00+00:00")
    with time_machine.travel(utc(2024, 7, 3, 16, 45), tick=False), pytest.raises(AirflowSkipException):
        sensor(open_offset=5, close_offset=15, when_closed="skip").execute({})


def test_at_the_open_and_at_the_close():
    with time_machine.travel(utc(2024, 11, 4, 14, 30), tick=False):  # first EST open after fall back
        assert sensor().execute({})["window_start"] == "2024-11-04T14:30:00+00:00"
    moment, _ = deferred_moment(sensor(max_defer=timedelta(days=5)), utc(2024, 11, 4, 21, 0))
    assert moment == utc(2024, 11, 5, 14, 30)


def test_default_exchange_comes_from_provider_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEFAULT_EXCHANGE", "24/7")
    with time_machine.travel(utc(2024, 12, 25, 12, 0), tick=False):
        result = MarketHoursSensor(task_id="t").execute({})
    assert result["exchange"] == "24/7"
    assert (result["window_start"], result["window_end"]) == ("2024-12-25T00:00:00+00:00", "2024-12-26T00:00:00+00:00")


def test_extended_hours():
    with time_machine.travel(utc(2024, 6, 5, 8, 30), tick=False):  # 04:30 EDT: pre-market
        result = sensor(extended_hours=True).execute({})
    assert (result["window_start"], result["window_end"]) == ("2024-06-05T08:00:00+00:00", "2024-06-06T00:00:00+00:00")


# -- closed: defer to the next window, capped by max_defer ---------------------------------------

@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2024, 6, 5, 12, 0), utc(2024, 6, 5, 13, 30)),  # before the open
        (utc(2024, 6, 5, 20, 0), utc(2024, 6, 6, 13, 30)),  # at the close
        (utc(2024, 6, 8, 12, 0), utc(2024, 6, 10, 13, 30)),  # Saturday
        (utc(2024, 7, 3, 17, 0), utc(2024, 7, 5, 13, 30)),  # early close, then Independence Day
        (utc(2024, 12, 25, 12, 0), utc(2024, 12, 26, 14, 30)),  # Christmas
        (utc(2024, 3, 29, 12, 0), utc(2024, 4, 1, 13, 30)),  # Good Friday
        (utc(2025, 1, 9, 12, 0), utc(2025, 1, 10, 14, 30)),  # Carter's National Day of Mourning
        (utc(2024, 12, 31, 21, 0), utc(2025, 1, 2, 14, 30)),  # year boundary
        (utc(2024, 3, 8, 21, 0), utc(2024, 3, 11, 13, 30)),  # spring forward
        (utc(2024, 11, 1, 20, 0), utc(2024, 11, 4, 14, 30)),  # fall back
    ],
)
def test_closed_defers_until_the_next_window(now, expected):
    moment, deferred = deferred_moment(sensor(max_defer=timedelta(days=7)), now)
    assert moment == expected
    assert deferred.kwargs == {"deadline": (now + timedelta(days=7)).isoformat()}  # the default 7-day timeout


def test_closed_defer_is_capped_by_max_defer():
    moment, _ = deferred_moment(sensor(), utc(2024, 6, 8, 12, 0))  # default horizon: 6 hours
    assert moment == utc(2024, 6, 8, 18, 0)
    moment, _ = deferred_moment(sensor(max_defer=timedelta(minutes=1)), utc(2024, 6, 5, 12, 0))
    assert moment == utc(2024, 6, 5, 12, 1)


def test_closed_defer_is_capped_by_the_timeout():
    moment, deferred = deferred_moment(sensor(timeout=600, max_defer=timedelta(days=1)), utc(2024, 6, 8, 12, 0))
    assert moment == utc(2024, 6, 8, 12, 10)
    assert deferred.kwargs == {"deadline": "2024-06-08T12:10:00+00:00"}


def test_defer_with_offsets_waits_for_the_window_start():
    op = sensor(open_offset=timedelta(minutes=5), close_offset=timedelta(minutes=15), max_defer=timedelta(days=3))
    moment, _ = deferred_moment(op, utc(2024, 7, 3, 16, 50))  # after 16:45, the early window's end
    assert moment == utc(2024, 7, 5, 13, 35)


# -- execute_complete ----------------------------------------------------------------------------

FIRED = {"status": "fired", "moment": "2024-06-05T13:30:00+00:00", "exchange": "XNYS"}


def test_execute_complete_returns_the_window_when_open():
    with time_machine.travel(utc(2024, 6, 5, 13, 30), tick=False):
        result = sensor().execute_complete({}, event=FIRED, deadline="2024-06-12T12:00:00+00:00")
    assert (result["window_start"], result["window_end"]) == ("2024-06-05T13:30:00+00:00", "2024-06-05T20:00:00+00:00")


def test_execute_complete_defers_again_while_closed():
    # the horizon fired on Saturday: still closed, defer again towards Monday's open
    op = sensor()
    moment, deferred = deferred_moment(op, utc(2024, 6, 8, 18, 0), event=FIRED, deadline="2024-06-15T12:00:00+00:00")
    assert moment == utc(2024, 6, 9, 0, 0)
    assert deferred.kwargs == {"deadline": "2024-06-15T12:00:00+00:00"}
    moment, _ = deferred_moment(op, utc(2024, 6, 10, 12, 0), event=FIRED, deadline="2024-06-15T12:00:00+00:00")
    assert moment == utc(2024, 6, 10, 13, 30)


def test_execute_complete_times_out_at_the_deadline():
    with time_machine.travel(utc(2024, 6, 8, 12, 10), tick=False):
        with pytest.raises(AirflowSensorTimeout, match="still closed"):
            sensor().execute_complete({}, event=FIRED, deadline="2024-06-08T12:10:00+00:00")
        with pytest.raises(AirflowSkipException, match="still closed"):
            sensor(soft_fail=True).execute_complete({}, event=FIRED, deadline="2024-06-08T12:10:00+00:00")


@pytest.mark.parametrize("event", [None, {}, {"status": "error", "message": "boom"}, "fired"])
def test_execute_complete_refuses_an_unexpected_event(event):
    with time_machine.travel(utc(2024, 6, 5, 15, 0), tick=False), pytest.raises(RuntimeError, match="unexpected"):
        sensor().execute_complete({}, event=event)


# -- skip and poke modes -------------------------------------------------------------------------

@pytest.mark.parametrize("now", [utc(2024, 7, 4, 15, 0), utc(2024, 6, 5, 20, 0), utc(2025, 1, 9, 15, 0)])
def test_skip_mode_skips_when_closed(now):
    with time_machine.travel(now, tick=False), pytest.raises(AirflowSkipException, match="XNYS trading window closed"):
        sensor(when_closed="skip").execute({})


def test_skip_mode_message_names_the_next_window():
    with time_machine.travel(utc(2024, 7, 4, 15, 0), tick=False), pytest.raises(AirflowSkipException) as info:
        sensor(when_closed="skip").execute({})
    assert "2024-07-05T13:30:00+00:00..2024-07-05T20:00:00+00:00" in str(info.value)


def test_poke_mode_not_done_then_done():
    op = sensor(deferrable=False, mode="reschedule", poke_interval=60)
    with time_machine.travel(utc(2024, 11, 4, 14, 29), tick=False):
        first = op.poke({})
    assert first.is_done is False and first.xcom_value is None
    with time_machine.travel(utc(2024, 11, 4, 14, 30), tick=False):
        second = op.poke({})
    assert second.is_done is True
    assert second.xcom_value["window_start"] == "2024-11-04T14:30:00+00:00"
    assert second.xcom_value["window_end"] == "2024-11-04T21:00:00+00:00"


def test_non_deferrable_execute_returns_at_once_when_open():
    with time_machine.travel(utc(2024, 6, 5, 15, 0), tick=False):
        assert sensor(deferrable=False).execute({})["session"] == "2024-06-05"


# -- bad input -----------------------------------------------------------------------------------

def test_bad_when_closed_fails_at_parse_time():
    with pytest.raises(ValueError, match="when_closed must be one of \\('wait', 'skip'\\), got 'sometimes'"):
        sensor(when_closed="sometimes")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"open_offset": "5m"}, "open_offset must be a timedelta or a number of minutes"),
    ({"close_offset": -5}, "close_offset must be >= 0"),
    ({"open_offset": timedelta(hours=4), "close_offset": timedelta(hours=3)}, "leave no trading window"),
    ({"max_defer": timedelta(0)}, "max_defer must be a positive timedelta"),
])
def test_bad_arguments_fail_at_parse_time(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        sensor(**kwargs)


def test_offsets_of_exchanges_not_in_the_table_are_checked_at_execute():
    op = sensor(exchange="XPAR", open_offset=timedelta(hours=12), close_offset=timedelta(hours=12))
    with time_machine.travel(utc(2024, 6, 5, 3, 0), tick=False), pytest.raises(InvalidInputError,
                                                                                match="leave no trading window"):
        op.execute({})


def test_unknown_exchange_lists_valid_names():
    op = sensor(exchange="NYSEE")
    with time_machine.travel(utc(2024, 6, 5, 15, 0), tick=False), pytest.raises(InvalidInputError) as info:
        op.execute({})
    message = str(info.value)
    assert "unknown market calendar 'NYSEE'" in message and "Valid names:" in message and "XNYS" in message


def test_exchange_is_templated():
    assert "exchange" in MarketHoursSensor.template_fields
    sensor(exchange="{{ params.exchange }}", open_offset=timedelta(hours=30))  # checked once rendered


def test_importing_the_sensor_and_trigger_loads_nothing_heavy():
    code = (
        "import sys\n"
        "import airflow_provider_portfolio.sensors.market_hours\n"
        "import airflow_provider_portfolio.triggers.market_hours\n"
        "print(sorted(m for m in ('pandas', 'numpy', 'pandas_market_calendars') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
