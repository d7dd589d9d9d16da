"""TradingWindows against the NYSE's published calendar (every expected instant written out literally).

NYSE regular hours are 09:30-16:00 ET: 13:30-20:00 UTC under EDT, 14:30-21:00 UTC under EST. Early
closes at 13:00 ET: 2024-07-03 (17:00 UTC) and 2024-11-29 (18:00 UTC). Extended hours: pre-market from
04:00 ET, post-market to 20:00 ET (17:00 ET after an early close).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.windows import TradingWindows, Window, check_offsets_cheaply, coerce_offset

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def xnys() -> TradingWindows:
    return TradingWindows("XNYS")


@pytest.fixture(scope="module")
def narrowed() -> TradingWindows:
    return TradingWindows("XNYS", open_offset=timedelta(minutes=5), close_offset=timedelta(minutes=15))


@pytest.fixture(scope="module")
def extended() -> TradingWindows:
    return TradingWindows("XNYS", extended_hours=True)


def span(window: Window | None) -> tuple[str, str] | None:
    return None if window is None else (window.start.isoformat(), window.end.isoformat())


# -- a regular day -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2024, 6, 5, 13, 29, 59), None),  # before the open
        (utc(2024, 6, 5, 13, 30), ("2024-06-05T13:30:00+00:00", "2024-06-05T20:00:00+00:00")),  # at the open
        (utc(2024, 6, 5, 17, 0), ("2024-06-05T13:30:00+00:00", "2024-06-05T20:00:00+00:00")),  # mid-session
        (utc(2024, 6, 5, 19, 59, 59), ("2024-06-05T13:30:00+00:00", "2024-06-05T20:00:00+00:00")),
        (utc(2024, 6, 5, 20, 0), None),  # at the close: half-open
        (utc(2024, 6, 5, 22, 0), None),  # after the close
    ],
)
def test_window_at_on_a_regular_day(xnys, at, expected):
    assert span(xnys.window_at(at)) == expected


def test_window_fields_and_to_dict(xnys):
    window = xnys.window_at(utc(2024, 6, 5, 15, 0))
    assert window == Window(
        session=date(2024, 6, 5),
        session_open=utc(2024, 6, 5, 13, 30),
        session_close=utc(2024, 6, 5, 20, 0),
        start=utc(2024, 6, 5, 13, 30),
        end=utc(2024, 6, 5, 20, 0),
    )
    assert window.to_dict() == {
        "session": "2024-06-05",
        "session_open": "2024-06-05T13:30:00+00:00",
        "session_close": "2024-06-05T20:00:00+00:00",
        "start": "2024-06-05T13:30:00+00:00",
        "end": "2024-06-05T20:00:00+00:00",
    }
    assert utc(2024, 6, 5, 15, 0) in window and utc(2024, 6, 5, 20, 0) not in window
    with pytest.raises(Exception):
        window.start = utc(2024, 1, 1)  # frozen


def test_summary_is_the_sensor_xcom(xnys):
    window = xnys.window_at(utc(2024, 6, 5, 15, 0))
    assert xnys.summary(window) == {
        "exchange": "XNYS",
        "session": "2024-06-05",
        "session_open": "2024-06-05T13:30:00+00:00",
        "session_close": "2024-06-05T20:00:00+00:00",
        "window_start": "2024-06-05T13:30:00+00:00",
        "window_end": "2024-06-05T20:00:00+00:00",
    }


def test_window_at_accepts_other_time_zones(xnys):
    eastern = timezone(timedelta(hours=-4))
    assert span(xnys.window_at(datetime(2024, 6, 5, 9, 30, tzinfo=eastern))) == (
        "2024-06-05T13:30:00+00:00", "2024-06-05T20:00:00+00:00")


# -- next_window across closures -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # regular day: before the open -> that day's window; inside -> the current one; after -> next day
        (utc(2024, 6, 5, 12, 0), ("2024-06-05T13:30:00+00:00", "2024-06-05T20:00:00+00:00")),
        (utc(2024, 6, 5, 13, 30), ("2024-06-05T13:30:00+00:00", "2024-06-05T20:00:00+00:00")),
        (utc(2024, 6, 5, 16, 0), ("2024-06-05T13:30:00+00:00", "2024-06-05T20:00:00+00:00")),
        (utc(2024, 6, 5, 20, 0), ("2024-06-06T13:30:00+00:00", "2024-06-06T20:00:00+00:00")),
        # weekend: Saturday 2024-06-08 -> Monday 2024-06-10
        (utc(2024, 6, 8, 15, 0), ("2024-06-10T13:30:00+00:00", "2024-06-10T20:00:00+00:00")),
        # Independence Day 2024-07-04 (Thursday) -> Friday 2024-07-05
        (utc(2024, 7, 4, 14, 0), ("2024-07-05T13:30:00+00:00", "2024-07-05T20:00:00+00:00")),
        # early close 2024-07-03: 17:00 UTC ends the window; at 17:00 the next one is 2024-07-05
        (utc(2024, 7, 3, 16, 59), ("2024-07-03T13:30:00+00:00", "2024-07-03T17:00:00+00:00")),
        (utc(2024, 7, 3, 17, 0), ("2024-07-05T13:30:00+00:00", "2024-07-05T20:00:00+00:00")),
        # Christmas 2024-12-25 -> 2024-12-26 (EST)
        (utc(2024, 12, 25, 15, 0), ("2024-12-26T14:30:00+00:00", "2024-12-26T21:00:00+00:00")),
        # Good Friday 2024-03-29 -> Monday 2024-04-01 (EDT)
        (utc(2024, 3, 29, 14, 0), ("2024-04-01T13:30:00+00:00", "2024-04-01T20:00:00+00:00")),
        # National Day of Mourning for President Carter, 2025-01-09 -> 2025-01-10
        (utc(2025, 1, 8, 21, 0), ("2025-01-10T14:30:00+00:00", "2025-01-10T21:00:00+00:00")),
        # year boundary: 2024-12-31 close -> 2025-01-02 (New Year's Day closed)
        (utc(2024, 12, 31, 21, 0), ("2025-01-02T14:30:00+00:00", "2025-01-02T21:00:00+00:00")),
        # DST spring forward: Friday 2024-03-08 is EST (14:30), Monday 2024-03-11 opens 13:30 UTC
        (utc(2024, 3, 8, 21, 0), ("2024-03-11T13:30:00+00:00", "2024-03-11T20:00:00+00:00")),
        # DST fall back: Friday 2024-11-01 is EDT (13:30), Monday 2024-11-04 opens 14:30 UTC
        (utc(2024, 11, 1, 20, 0), ("2024-11-04T14:30:00+00:00", "2024-11-04T21:00:00+00:00")),
    ],
)
def test_next_window(xnys, after, expected):
    assert span(xnys.next_window(after)) == expected


@pytest.mark.parametrize(
    "at",
    [
        utc(2024, 6, 8, 15, 0),  # Saturday
        utc(2024, 6, 9, 15, 0),  # Sunday
        utc(2024, 7, 4, 15, 0),  # Independence Day
        utc(2024, 12, 25, 15, 0),  # Christmas
        utc(2024, 3, 29, 15, 0),  # Good Friday
        utc(2025, 1, 9, 15, 0),  # Carter's National Day of Mourning
        utc(2025, 1, 1, 15, 0),  # New Year's Day
        utc(2024, 7, 3, 17, 30),  # after the early close
        utc(2024, 11, 29, 18, 0),  # at the early close
        utc(2024, 3, 11, 13, 29),  # one minute before the first open after spring forward
        utc(2024, 11, 4, 14, 29),  # one minute before the first open after fall back
    ],
)
def test_closed(xnys, at):
    assert xnys.window_at(at) is None


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2024, 7, 3, 16, 59), ("2024-07-03T13:30:00+00:00", "2024-07-03T17:00:00+00:00")),
        (utc(2024, 11, 29, 17, 59), ("2024-11-29T14:30:00+00:00", "2024-11-29T18:00:00+00:00")),
        (utc(2024, 3, 11, 13, 30), ("2024-03-11T13:30:00+00:00", "2024-03-11T20:00:00+00:00")),
        (utc(2024, 11, 4, 14, 30), ("2024-11-04T14:30:00+00:00", "2024-11-04T21:00:00+00:00")),
        (utc(2024, 12, 31, 20, 59), ("2024-12-31T14:30:00+00:00", "2024-12-31T21:00:00+00:00")),
    ],
)
def test_open_on_special_days(xnys, at, expected):
    assert span(xnys.window_at(at)) == expected


# -- offsets -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2024, 6, 5, 13, 34, 59), None),
        (utc(2024, 6, 5, 13, 35), ("2024-06-05T13:35:00+00:00", "2024-06-05T19:45:00+00:00")),
        (utc(2024, 6, 5, 19, 44, 59), ("2024-06-05T13:35:00+00:00", "2024-06-05T19:45:00+00:00")),
        (utc(2024, 6, 5, 19, 45), None),
        # early closes: 17:00 and 18:00 UTC closes end the window 15 minutes before
        (utc(2024, 7, 3, 16, 44), ("2024-07-03T13:35:00+00:00", "2024-07-03T16:45:00+00:00")),
        (utc(2024, 7, 3, 16, 45), None),
        (utc(2024, 11, 29, 17, 44), ("2024-11-29T14:35:00+00:00", "2024-11-29T17:45:00+00:00")),
        (utc(2024, 11, 29, 17, 45), None),
    ],
)
def test_offsets(narrowed, at, expected):
    assert span(narrowed.window_at(at)) == expected


def test_offset_window_keeps_the_session_bounds(narrowed):
    window = narrowed.window_at(utc(2024, 7, 3, 15, 0))
    assert window.session_open == utc(2024, 7, 3, 13, 30)
    assert window.session_close == utc(2024, 7, 3, 17, 0)
    assert span(narrowed.next_window(utc(2024, 7, 3, 16, 45))) == (
        "2024-07-05T13:35:00+00:00", "2024-07-05T19:45:00+00:00")


def test_offsets_accept_minutes():
    windows = TradingWindows("XNYS", open_offset=5, close_offset=15.0)
    assert windows.open_offset == timedelta(minutes=5) and windows.close_offset == timedelta(minutes=15)
    assert span(windows.window_at(utc(2024, 6, 5, 15, 0))) == ("2024-06-05T13:35:00+00:00", "2024-06-05T19:45:00+00:00")


def test_an_early_close_shorter_than_the_offsets_has_no_window():
    # 3h30 before the close: a full session (13:30-20:00 UTC) keeps 13:35-16:30; the early close of
    # 2024-07-03 (13:30-17:00 UTC) would end at 13:30, before its start: skipped.
    windows = TradingWindows("XNYS", open_offset=timedelta(minutes=5), close_offset=timedelta(hours=3, minutes=30))
    assert windows.window_at(utc(2024, 7, 3, 13, 40)) is None
    assert span(windows.next_window(utc(2024, 7, 3, 12, 0))) == ("2024-07-05T13:35:00+00:00", "2024-07-05T16:30:00+00:00")
    assert span(windows.window_at(utc(2024, 7, 2, 16, 0))) == ("2024-07-02T13:35:00+00:00", "2024-07-02T16:30:00+00:00")


# -- extended hours ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2024, 6, 5, 7, 59), None),  # before 04:00 EDT
        (utc(2024, 6, 5, 8, 0), ("2024-06-05T08:00:00+00:00", "2024-06-06T00:00:00+00:00")),
        (utc(2024, 6, 5, 23, 59), ("2024-06-05T08:00:00+00:00", "2024-06-06T00:00:00+00:00")),
        (utc(2024, 6, 6, 0, 0), None),  # 20:00 EDT
        (utc(2024, 12, 31, 9, 0), ("2024-12-31T09:00:00+00:00", "2025-01-01T01:00:00+00:00")),  # EST
        (utc(2024, 7, 3, 20, 59), ("2024-07-03T08:00:00+00:00", "2024-07-03T21:00:00+00:00")),  # early close
        (utc(2024, 7, 3, 21, 0), None),
        (utc(2024, 11, 29, 21, 59), ("2024-11-29T09:00:00+00:00", "2024-11-29T22:00:00+00:00")),
        (utc(2024, 7, 4, 12, 0), None),  # holiday: no extended hours either
    ],
)
def test_extended_hours(extended, at, expected):
    assert span(extended.window_at(at)) == expected


def test_extended_hours_keep_regular_session_bounds_and_take_offsets(extended):
    window = extended.window_at(utc(2024, 6, 5, 9, 0))
    assert (window.session_open, window.session_close) == (utc(2024, 6, 5, 13, 30), utc(2024, 6, 5, 20, 0))
    offset = TradingWindows("NYSE", extended_hours=True, open_offset=30, close_offset=60)
    assert span(offset.window_at(utc(2024, 6, 5, 9, 0))) == ("2024-06-05T08:30:00+00:00", "2024-06-05T23:00:00+00:00")
    assert span(extended.next_window(utc(2024, 11, 1, 23, 0))) == (
        "2024-11-01T08:00:00+00:00", "2024-11-02T00:00:00+00:00")
    assert span(extended.next_window(utc(2024, 11, 2, 0, 0))) == (
        "2024-11-04T09:00:00+00:00", "2024-11-05T01:00:00+00:00")


@pytest.mark.parametrize("exchange", ["XLON", "24/7"])
def test_extended_hours_refused_where_unknown(exchange):
    with pytest.raises(InvalidInputError, match=f"extended_hours is not available for '{exchange}'"):
        TradingWindows(exchange, extended_hours=True)


# -- 24/7 ----------------------------------------------------------------------------------------

def test_always_open():
    windows = TradingWindows("24/7")
    for at in (utc(2024, 7, 4, 12, 0), utc(2024, 12, 25, 0, 0), utc(2024, 6, 8, 23, 59, 59)):
        assert windows.window_at(at) is not None
    assert span(windows.window_at(utc(2024, 7, 4, 12, 0))) == ("2024-07-04T00:00:00+00:00", "2024-07-05T00:00:00+00:00")
    opened = TradingWindows("24/7", open_offset=timedelta(minutes=1))
    assert opened.window_at(utc(2024, 7, 4, 0, 0, 30)) is None
    assert span(opened.next_window(utc(2024, 7, 4, 0, 0, 30))) == (
        "2024-07-04T00:01:00+00:00", "2024-07-05T00:00:00+00:00")


# -- bad input -----------------------------------------------------------------------------------

def test_unknown_exchange_lists_valid_names():
    with pytest.raises(InvalidInputError, match="unknown market calendar 'NOPE'") as info:
        TradingWindows("NOPE")
    assert "XNYS" in str(info.value) and "24/7" in str(info.value)


@pytest.mark.parametrize(
    ("exchange", "open_offset", "close_offset", "length"),
    [
        ("XNYS", timedelta(hours=4), timedelta(hours=2, minutes=30), "6:30:00"),
        ("XNYS", timedelta(hours=7), timedelta(0), "6:30:00"),
        ("24/7", timedelta(hours=12), timedelta(hours=12), "1 day, 0:00:00"),
    ],
)
def test_offsets_leaving_no_window(exchange, open_offset, close_offset, length):
    with pytest.raises(InvalidInputError, match=f"leave no trading window.*lasts {length}"):
        TradingWindows(exchange, open_offset=open_offset, close_offset=close_offset)


def test_offsets_leaving_no_extended_window():
    with pytest.raises(InvalidInputError, match="pre-market start to post-market end of XNYS lasts 16:00:00"):
        TradingWindows("XNYS", extended_hours=True, open_offset=timedelta(hours=10), close_offset=timedelta(hours=6))


def test_offsets_leaving_a_short_window_are_fine():
    windows = TradingWindows("XNYS", open_offset=timedelta(hours=3), close_offset=timedelta(hours=3))
    assert span(windows.window_at(utc(2024, 6, 5, 16, 45))) == ("2024-06-05T16:30:00+00:00", "2024-06-05T17:00:00+00:00")


@pytest.mark.parametrize("value", [-1, timedelta(minutes=-5), "5", None, True, float("nan")])
def test_bad_offsets(value):
    with pytest.raises(InvalidInputError, match="open_offset"):
        TradingWindows("XNYS", open_offset=value)


def test_coerce_offset_and_cheap_check():
    assert coerce_offset(timedelta(seconds=90), "x") == timedelta(seconds=90)
    assert coerce_offset(2.5, "x") == timedelta(minutes=2, seconds=30)
    check_offsets_cheaply("XNYS", timedelta(hours=3), timedelta(hours=3))
    check_offsets_cheaply("XHKG", timedelta(hours=30), timedelta(0))  # not in the table: checked later
    with pytest.raises(InvalidInputError, match="lasts 6:30:00"):
        check_offsets_cheaply("xnys", timedelta(hours=6, minutes=30), timedelta(0))


def test_naive_datetimes_are_refused(xnys):
    with pytest.raises(InvalidInputError, match="at must be timezone-aware"):
        xnys.window_at(datetime(2024, 6, 5, 15, 0))
    with pytest.raises(InvalidInputError, match="after must be timezone-aware"):
        xnys.next_window(datetime(2024, 6, 5, 15, 0))
    with pytest.raises(InvalidInputError, match="timezone-aware datetime"):
        xnys.window_at("2024-06-05T15:00:00+00:00")
