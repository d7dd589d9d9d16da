"""MarketCalendar against the NYSE's published calendar (dates and hours written out literally)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market import calendar as calendar_module
from airflow_provider_portfolio.market.calendar import MarketCalendar, calendar_for_symbol

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture(scope="module")
def xnys() -> MarketCalendar:
    return MarketCalendar("XNYS")


def session(cal: MarketCalendar, day: str) -> pd.Series:
    frame = cal.sessions(day, day)
    assert list(frame.index) == [pd.Timestamp(day)], f"{day} should be a session"
    return frame.iloc[0]


# --- sessions -------------------------------------------------------------------------------------


def test_sessions_frame_shape_and_dtypes(xnys):
    frame = xnys.sessions("2024-07-01", "2024-07-12")
    assert list(frame.columns) == ["market_open", "market_close"]
    assert str(frame["market_open"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["market_close"].dtype) == "datetime64[ns, UTC]"
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.name == "session"
    assert frame.index.tz is None and str(frame.index.dtype) == "datetime64[ns]"


@pytest.mark.parametrize(
    ("day", "open_utc", "close_utc"),
    [
        ("2024-01-03", "2024-01-03 14:30", "2024-01-03 21:00"),  # EST: 09:30-16:00 = UTC-5
        ("2024-07-02", "2024-07-02 13:30", "2024-07-02 20:00"),  # EDT: UTC-4
        ("2024-03-08", "2024-03-08 14:30", "2024-03-08 21:00"),  # Friday before DST starts 2024-03-10
        ("2024-03-11", "2024-03-11 13:30", "2024-03-11 20:00"),  # Monday after: EDT
        ("2024-11-01", "2024-11-01 13:30", "2024-11-01 20:00"),  # Friday before DST ends 2024-11-03
        ("2024-11-04", "2024-11-04 14:30", "2024-11-04 21:00"),  # Monday after: EST
    ],
)
def test_regular_hours_in_utc_follow_dst(xnys, day, open_utc, close_utc):
    row = session(xnys, day)
    assert row["market_open"] == ts(open_utc)
    assert row["market_close"] == ts(close_utc)


@pytest.mark.parametrize(
    ("day", "close_utc"),
    [
        ("2024-07-03", "2024-07-03 17:00"),  # 13:00 EDT, eve of Independence Day
        ("2024-11-29", "2024-11-29 18:00"),  # 13:00 EST, day after Thanksgiving
        ("2024-12-24", "2024-12-24 18:00"),  # 13:00 EST, Christmas Eve
    ],
)
def test_early_closes_at_1pm_new_york(xnys, day, close_utc):
    row = session(xnys, day)
    assert row["market_close"] == ts(close_utc)
    assert row["market_close"].tz_convert(NEW_YORK).strftime("%H:%M") == "13:00"


@pytest.mark.parametrize(
    "day",
    [
        "2024-07-04",  # Independence Day
        "2024-12-25",  # Christmas
        "2025-01-01",  # New Year's Day
        "2025-01-09",  # national day of mourning for President Carter (one-off closure)
        "2024-07-06",  # Saturday
        "2024-07-07",  # Sunday
    ],
)
def test_closed_days_have_no_session(xnys, day):
    assert xnys.sessions(day, day).empty


def test_week_with_mourning_day(xnys):
    days = xnys.sessions("2025-01-06", "2025-01-10").index
    assert list(days) == [pd.Timestamp(d) for d in ("2025-01-06", "2025-01-07", "2025-01-08", "2025-01-10")]


def test_year_boundary(xnys):
    days = xnys.sessions("2024-12-30", "2025-01-03").index
    assert list(days) == [pd.Timestamp(d) for d in ("2024-12-30", "2024-12-31", "2025-01-02", "2025-01-03")]


def test_independence_day_week(xnys):
    days = xnys.sessions(date(2024, 7, 1), date(2024, 7, 7)).index
    assert list(days) == [pd.Timestamp(d) for d in ("2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05")]


def test_date_parameter_types_agree(xnys):
    expected = xnys.sessions("2024-07-01", "2024-07-05")
    for start, end in [
        (date(2024, 7, 1), date(2024, 7, 5)),
        (pd.Timestamp("2024-07-01"), pd.Timestamp("2024-07-05")),
        (datetime(2024, 7, 1, 23, 59), datetime(2024, 7, 5, 0, 1)),  # a time of day is ignored
        (utc(2024, 7, 1, 12), utc(2024, 7, 5, 12)),
    ]:
        pd.testing.assert_frame_equal(xnys.sessions(start, end), expected)


def test_tz_aware_dates_count_by_their_utc_date(xnys):
    # 22:00 in New York on 2024-07-03 is 02:00 UTC on 2024-07-04: a holiday.
    evening = datetime(2024, 7, 3, 22, 0, tzinfo=NEW_YORK)
    assert xnys.sessions(evening, evening).empty


def test_empty_range_keeps_columns_and_dtypes(xnys):
    empty = xnys.sessions("2024-07-06", "2024-07-07")
    assert empty.empty
    assert list(empty.columns) == ["market_open", "market_close"]
    assert str(empty["market_open"].dtype) == "datetime64[ns, UTC]"
    assert empty.index.name == "session"


def test_start_after_end_is_refused(xnys):
    with pytest.raises(InvalidInputError, match="after"):
        xnys.sessions("2024-07-05", "2024-07-01")


def test_bad_date_is_refused(xnys):
    with pytest.raises(InvalidInputError, match="start"):
        xnys.sessions("not a date", "2024-07-01")


def test_session_count_of_2024(xnys):
    # NYSE 2024: 262 weekdays minus 10 full-day holidays on weekdays = 252 sessions.
    assert len(xnys.sessions("2024-01-01", "2024-12-31")) == 252


# --- instants -------------------------------------------------------------------------------------


def test_is_open_at_open_close_and_between(xnys):
    assert xnys.is_open(utc(2024, 7, 2, 13, 30))  # the open instant belongs to the session
    assert xnys.is_open(utc(2024, 7, 2, 19, 59, 59))
    assert not xnys.is_open(utc(2024, 7, 2, 20, 0))  # the close instant does not
    assert not xnys.is_open(utc(2024, 7, 2, 13, 29, 59))
    assert not xnys.is_open(utc(2024, 7, 4, 15, 0))  # holiday
    assert not xnys.is_open(utc(2024, 7, 6, 15, 0))  # Saturday
    assert not xnys.is_open(utc(2024, 11, 29, 18, 30))  # after the early close
    assert xnys.is_open(utc(2024, 11, 29, 17, 59))


def test_is_open_accepts_any_time_zone(xnys):
    assert xnys.is_open(datetime(2024, 7, 2, 9, 30, tzinfo=NEW_YORK))
    assert not xnys.is_open(datetime(2024, 7, 2, 16, 0, tzinfo=NEW_YORK))
    assert xnys.is_open(pd.Timestamp("2024-07-02 15:00", tz="Europe/London"))


def test_naive_instant_is_refused(xnys):
    for method in (xnys.is_open, xnys.next_open, xnys.next_close, xnys.session_of):
        with pytest.raises(InvalidInputError, match="timezone-aware"):
            method(datetime(2024, 7, 2, 15, 0))


def test_next_open_from_friday_evening_is_monday(xnys):
    assert xnys.next_open(utc(2024, 7, 12, 22, 0)) == ts("2024-07-15 13:30")


def test_next_open_from_holiday_eves(xnys):
    assert xnys.next_open(utc(2024, 7, 3, 17, 30)) == ts("2024-07-05 13:30")  # skips July 4th
    assert xnys.next_open(utc(2024, 12, 24, 18, 0)) == ts("2024-12-26 14:30")  # skips Christmas
    assert xnys.next_open(utc(2024, 12, 31, 21, 0)) == ts("2025-01-02 14:30")  # skips New Year's Day
    assert xnys.next_open(utc(2025, 1, 8, 21, 0)) == ts("2025-01-10 14:30")  # skips the mourning day


def test_next_open_is_strictly_after(xnys):
    assert xnys.next_open(utc(2024, 7, 2, 13, 30)) == ts("2024-07-03 13:30")
    assert xnys.next_open(utc(2024, 7, 2, 13, 29)) == ts("2024-07-02 13:30")


def test_next_open_across_dst_change(xnys):
    assert xnys.next_open(utc(2024, 3, 8, 21, 0)) == ts("2024-03-11 13:30")
    assert xnys.next_open(utc(2024, 11, 1, 20, 0)) == ts("2024-11-04 14:30")


def test_next_close(xnys):
    assert xnys.next_close(utc(2024, 11, 29, 15, 0)) == ts("2024-11-29 18:00")  # inside: today's early close
    assert xnys.next_close(utc(2024, 11, 29, 18, 0)) == ts("2024-12-02 21:00")  # at the close: the next one
    assert xnys.next_close(utc(2024, 7, 3, 20, 0)) == ts("2024-07-05 20:00")


def test_session_of(xnys):
    assert xnys.session_of(utc(2024, 11, 29, 17, 59)) == pd.Timestamp("2024-11-29")
    assert xnys.session_of(utc(2024, 11, 29, 18, 0)) is None
    assert xnys.session_of(utc(2025, 1, 9, 15, 0)) is None
    assert xnys.session_of(utc(2024, 3, 11, 13, 30)) == pd.Timestamp("2024-03-11")


def test_far_dates_extend_the_schedule(xnys):
    assert xnys.next_open(utc(1995, 12, 29, 22, 0)) == ts("1996-01-02 14:30")
    later = xnys.sessions("2040-07-03", "2040-07-05").index
    assert list(later) == [pd.Timestamp("2040-07-03"), pd.Timestamp("2040-07-05")]
    # Extending does not change earlier answers.
    assert session(xnys, "2024-11-29")["market_close"] == ts("2024-11-29 18:00")


# --- names ----------------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(InvalidInputError) as info:
        MarketCalendar("NYES")
    message = str(info.value)
    assert "'NYES'" in message
    assert "Did you mean" in message and "NYSE" in message.split("Valid names")[0]
    assert "XNYS" in message and "24/7" in message and "XLON" in message


def test_name_is_resolved_case_insensitively():
    assert MarketCalendar("xnys").name == "XNYS"
    assert MarketCalendar().name == "XNYS"
    assert MarketCalendar("24/7").is_24_7
    assert not MarketCalendar("XNYS").is_24_7


def test_calendar_for_symbol():
    assert calendar_for_symbol("BTC/USD").name == "24/7"
    assert calendar_for_symbol("BTC/USD", "XLON").name == "24/7"
    assert calendar_for_symbol("AAPL").name == "XNYS"
    assert calendar_for_symbol("VOD", "XLON").name == "XLON"


def test_one_default_exchange():
    from airflow_provider_portfolio.config import OPTIONS
    from airflow_provider_portfolio.market.windows import TradingWindows

    assert calendar_module.DEFAULT_EXCHANGE == "XNYS"
    assert MarketCalendar().name == calendar_for_symbol("AAPL").name == calendar_module.DEFAULT_EXCHANGE
    assert TradingWindows().exchange == calendar_module.DEFAULT_EXCHANGE
    assert OPTIONS["default_exchange"][0] == calendar_module.DEFAULT_EXCHANGE


# --- 24/7 -----------------------------------------------------------------------------------------


def test_24_7_sessions_are_utc_days():
    crypto = MarketCalendar("24/7")
    frame = crypto.sessions("2024-03-09", "2024-03-11")  # Saturday to Monday, across the US DST change
    assert list(frame.index) == [pd.Timestamp(d) for d in ("2024-03-09", "2024-03-10", "2024-03-11")]
    assert list(frame["market_open"]) == [ts("2024-03-09"), ts("2024-03-10"), ts("2024-03-11")]
    assert list(frame["market_close"]) == [ts("2024-03-10"), ts("2024-03-11"), ts("2024-03-12")]
    assert crypto.is_open(utc(2024, 12, 25, 12, 0))
    assert crypto.session_of(utc(2024, 7, 6, 23, 59)) == pd.Timestamp("2024-07-06")
    assert crypto.next_open(utc(2024, 7, 6, 0, 0)) == ts("2024-07-07")
    assert crypto.next_close(utc(2024, 7, 6, 12, 0)) == ts("2024-07-07")
    assert len(crypto.sessions("2024-01-01", "2024-12-31")) == 366


# --- bar index ------------------------------------------------------------------------------------


def test_daily_bar_index_is_session_dates_at_midnight_utc(xnys):
    index = xnys.bar_index("2024-07-01", "2024-07-07", "1Day")
    assert str(index.dtype) == "datetime64[ns, UTC]"
    assert list(index) == [ts("2024-07-01"), ts("2024-07-02"), ts("2024-07-03"), ts("2024-07-05")]


def test_hourly_bars_on_regular_and_early_close_days(xnys):
    regular = xnys.bar_index("2024-07-02", "2024-07-02", "1Hour")
    assert list(regular) == [ts(f"2024-07-02 {h}:30") for h in range(13, 20)]  # 7 bars, the last 15:30-16:00 EDT
    early = xnys.bar_index("2024-11-29", "2024-11-29", "1Hour")
    assert list(early) == [ts(f"2024-11-29 {h}:30") for h in (14, 15, 16, 17)]  # 09:30 ... 12:30 EST
    assert early[-1].tz_convert(NEW_YORK).strftime("%H:%M") == "12:30"


def test_minute_bar_counts(xnys):
    regular = xnys.bar_index("2024-07-02", "2024-07-02", "1Min")
    assert len(regular) == 390
    assert regular[0] == ts("2024-07-02 13:30") and regular[-1] == ts("2024-07-02 19:59")
    early = xnys.bar_index("2024-11-29", "2024-11-29", "1Min")
    assert len(early) == 210
    assert early[-1] == ts("2024-11-29 17:59")
    week = xnys.bar_index("2024-07-01", "2024-07-07", "1Min")  # 3 full days, the 07-03 early close, 07-04 closed
    assert len(week) == 3 * 390 + 210
    assert week.is_monotonic_increasing and week.is_unique
    assert not (week.tz_convert(NEW_YORK).date == date(2024, 7, 4)).any()
    assert len(xnys.bar_index("2024-07-02", "2024-07-02", "5Min")) == 78
    assert len(xnys.bar_index("2024-11-29", "2024-11-29", "15Min")) == 14


def test_24_7_intraday_bar_index():
    crypto = MarketCalendar("24/7")
    assert len(crypto.bar_index("2024-03-09", "2024-03-10", "1Min")) == 2 * 24 * 60
    hours = crypto.bar_index("2024-03-09", "2024-03-09", "7Hour")  # the last bar is short: 21:00-24:00
    assert list(hours) == [ts(f"2024-03-09 {h}:00") for h in ("00", "07", "14", "21")]


def test_bar_index_of_empty_range_and_bad_timeframe(xnys):
    assert len(xnys.bar_index("2024-07-06", "2024-07-07", "1Min")) == 0
    assert str(xnys.bar_index("2024-07-06", "2024-07-07", "1Day").dtype) == "datetime64[ns, UTC]"
    with pytest.raises(InvalidInputError, match="timeframe"):
        xnys.bar_index("2024-07-01", "2024-07-02", "2Day")


# --- caching --------------------------------------------------------------------------------------


def test_instances_share_one_schedule_and_answer_identically():
    first, second = MarketCalendar("XNYS"), MarketCalendar("XNYS")
    a = first.sessions("2024-01-01", "2024-12-31")
    block = calendar_module._BLOCKS["XNYS"]
    b = second.sessions("2024-01-01", "2024-12-31")
    assert calendar_module._BLOCKS["XNYS"] is block  # the second instance computed nothing
    pd.testing.assert_frame_equal(a, b)
    assert a is not b  # callers get their own frame
    a.iloc[0, 0] = pd.Timestamp("1999-01-01", tz="UTC")  # and mutating it does not touch the cache
    pd.testing.assert_frame_equal(second.sessions("2024-01-01", "2024-12-31"), b)
    assert first == second and hash(first) == hash(second)


def test_repeated_answers_are_identical(xnys):
    instants = [utc(2024, 7, 2, 13, 30) + timedelta(minutes=17 * k) for k in range(200)]
    once = [(xnys.is_open(t), xnys.next_open(t), xnys.next_close(t), xnys.session_of(t)) for t in instants]
    again = [(xnys.is_open(t), xnys.next_open(t), xnys.next_close(t), xnys.session_of(t)) for t in instants]
    assert once == again
    assert sum(open_ for open_, *_ in once) == sum(1 for t in instants if xnys.session_of(t) is not None)


def test_session_bounds_match_sessions(xnys):
    days, opens, closes = xnys.session_bounds("2024-11-25", "2024-12-03")
    frame = xnys.sessions("2024-11-25", "2024-12-03")
    assert np.array_equal(days, frame.index.asi8)
    assert np.array_equal(opens, frame["market_open"].array.asi8)
    assert np.array_equal(closes, frame["market_close"].array.asi8)
    assert not opens.flags.writeable
