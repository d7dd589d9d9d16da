"""timeutil: instants between aware datetimes and UTC nanoseconds, UTC dates, the clock."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pendulum
import pytest
import time_machine

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market import timeutil
from airflow_provider_portfolio.market.timeutil import (
    NAT_NS,
    ensure_utc,
    from_ns,
    from_ns_array,
    is_aware,
    timedelta_ns,
    to_ns,
    to_ns_array,
    utc_date_of,
    utc_now,
)

UTC = timezone.utc
NEW_YORK_EDT = timezone(timedelta(hours=-4))
# 2024-07-03T15:00:00Z
NS = 1_720_018_800_000_000_000


def test_to_ns_of_every_kind_of_aware_datetime():
    assert to_ns(datetime(2024, 7, 3, 15, 0, tzinfo=UTC)) == NS
    assert to_ns(datetime(2024, 7, 3, 11, 0, tzinfo=NEW_YORK_EDT)) == NS
    assert to_ns(pendulum.datetime(2024, 7, 3, 11, 0, tz="America/New_York")) == NS
    assert to_ns(pd.Timestamp("2024-07-03T15:00:00.000000123Z")) == NS + 123  # nanoseconds kept
    assert to_ns(datetime(2024, 7, 3, 15, 0, 0, 5, tzinfo=UTC)) == NS + 5000
    assert to_ns(datetime(1960, 1, 1, tzinfo=UTC)) == pd.Timestamp("1960-01-01", tz="UTC").value


def test_from_ns_floors_to_the_microsecond_and_round_trips():
    assert from_ns(NS) == datetime(2024, 7, 3, 15, 0, tzinfo=UTC) and from_ns(NS).tzinfo is UTC
    assert from_ns(NS + 999) == datetime(2024, 7, 3, 15, 0, tzinfo=UTC)
    assert from_ns(-1) == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for at in (datetime(2024, 3, 10, 7, 0, 0, 123456, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, tzinfo=UTC)):
        assert from_ns(to_ns(at)) == at


def test_naive_instants_are_refused_unless_said_utc():
    with pytest.raises(InvalidInputError, match="at must be timezone-aware, got naive"):
        to_ns(datetime(2024, 7, 3, 15, 0))
    with pytest.raises(InvalidInputError, match="after must be a timezone-aware datetime, got '2024-07-03'"):
        to_ns("2024-07-03", "after")
    assert to_ns(datetime(2024, 7, 3, 15, 0), naive_is_utc=True) == NS
    with pytest.raises(InvalidInputError, match="moment must be timezone-aware"):
        ensure_utc(datetime(2024, 7, 3), "moment")
    assert ensure_utc(datetime(2024, 7, 3, 15), naive_is_utc=True) == datetime(2024, 7, 3, 15, tzinfo=UTC)
    converted = ensure_utc(datetime(2024, 7, 3, 11, tzinfo=NEW_YORK_EDT))
    assert converted == datetime(2024, 7, 3, 15, tzinfo=UTC) and converted.utcoffset() == timedelta(0)
    assert is_aware(datetime(2024, 7, 3, tzinfo=UTC)) and not is_aware(datetime(2024, 7, 3))
    assert not is_aware("2024-07-03T15:00:00Z") and not is_aware(None)


def test_utc_date_of_an_instant():
    assert utc_date_of(datetime(2024, 7, 3, 23, 30, tzinfo=NEW_YORK_EDT)) == date(2024, 7, 4)
    assert utc_date_of(NS) == date(2024, 7, 3)
    assert utc_date_of(-1) == date(1969, 12, 31)
    assert utc_date_of(datetime(2024, 7, 3, 23, 30), naive_is_utc=True) == date(2024, 7, 3)
    with pytest.raises(InvalidInputError):
        utc_date_of(datetime(2024, 7, 3, 23, 30))


def test_timedelta_ns():
    assert timedelta_ns(timedelta(minutes=15)) == 900 * 10**9
    assert timedelta_ns(timedelta(days=-1, microseconds=1)) == -86_400 * 10**9 + 1000


@time_machine.travel("2024-07-03T15:00:00Z", tick=False)
def test_utc_now_is_aware_utc():
    now = utc_now()
    assert now == datetime(2024, 7, 3, 15, 0, tzinfo=UTC) and now.tzinfo is UTC


def test_arrays_naive_as_utc_aware_converted():
    naive = pd.Series(pd.to_datetime(["2024-07-03 15:00", "2024-07-03 15:30"]))
    aware = naive.dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    expected = np.array([NS, NS + 1800 * 10**9], dtype=np.int64)
    for values in (naive, aware, pd.DatetimeIndex(aware), naive.to_numpy(), list(aware)):
        got = to_ns_array(values)
        assert got.dtype == np.int64 and got.tolist() == expected.tolist()
    index = from_ns_array(expected, name="ts")
    assert index.name == "ts" and str(index.dtype) == "datetime64[ns, UTC]"
    assert list(index) == [pd.Timestamp("2024-07-03T15:00Z"), pd.Timestamp("2024-07-03T15:30Z")]
    assert to_ns_array(index).tolist() == expected.tolist()


def test_arrays_are_new_arrays():
    index = pd.DatetimeIndex(pd.to_datetime(["2024-07-03 15:00"], utc=True))
    ns = to_ns_array(index)
    ns[0] = 0
    assert index[0] == pd.Timestamp("2024-07-03T15:00Z")


def test_arrays_missing_and_coerced():
    got = to_ns_array(pd.Series([pd.Timestamp("2024-07-03T15:00Z"), pd.NaT]))
    assert got.tolist() == [NS, NAT_NS]
    text = pd.Series(["2024-07-03T15:00:00Z", "not a time", None])
    assert to_ns_array(text, coerce=True).tolist() == [NS, NAT_NS, NAT_NS]
    with pytest.raises((ValueError, TypeError)):
        to_ns_array(text)
    assert from_ns_array([NAT_NS]).isna().all()


def test_calendar_keeps_utc_ns_and_default_exchange():
    from airflow_provider_portfolio.market import calendar

    assert calendar.DEFAULT_EXCHANGE == timeutil.DEFAULT_EXCHANGE == "XNYS"
    assert calendar.utc_ns(pd.Series(pd.to_datetime(["2024-07-03 15:00"]))).tolist() == [NS]


def test_importing_timeutil_loads_nothing_heavy():
    code = ("import json, sys\n"
            "import airflow_provider_portfolio.market.timeutil\n"
            "import airflow_provider_portfolio.market.windows\n"
            "print(json.dumps(sorted(m for m in ('pandas', 'numpy', 'pandas_market_calendars') if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_ensure_utc_turns_pendulum_into_a_plain_datetime_that_stays_aware_in_arithmetic():
    """Airflow hands tasks pendulum instants; in a standard-library UTC zone pendulum drops the zone when a timedelta
    is subtracted, which made the monitoring's 30-day window and the desk gate's day start naive."""
    import pendulum

    from airflow_provider_portfolio.market.timeutil import ensure_utc

    instant = ensure_utc(pendulum.datetime(2024, 6, 5, 14, 0, 0, 123456, tz="America/New_York"))
    assert type(instant) is datetime
    assert instant == datetime(2024, 6, 5, 18, 0, 0, 123456, tzinfo=timezone.utc)
    assert (instant - timedelta(days=30)).tzinfo is not None
    naive = ensure_utc(pendulum.naive(2024, 6, 5, 18), naive_is_utc=True)
    assert type(naive) is datetime and naive.tzinfo is not None
