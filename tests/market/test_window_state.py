"""window_state / window_states: "is the market open for this symbol now", on the NYSE's published calendar.

NYSE facts used (UTC): regular sessions 09:30-16:00 New York = 13:30-20:00 UTC in summer (EDT) and
14:30-21:00 UTC in winter (EST); DST began Sunday 2024-03-10 and ended Sunday 2024-11-03; early close
at 13:00 New York on 2024-07-03 (17:00 UTC); closed on Independence Day, Thursday 2024-07-04.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market import windows as windows_module
from airflow_provider_portfolio.market.windows import Window, WindowState, window_state, window_states

UTC = timezone.utc
NARROW = {"open_offset": timedelta(minutes=5), "close_offset": timedelta(minutes=15)}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def span(window: Window) -> tuple[datetime, datetime]:
    return window.start, window.end


# -- equities ------------------------------------------------------------------------------------


def test_before_the_open():
    state = window_state("AAPL", utc(2024, 7, 1, 13, 29, 59))
    assert not state and state.is_open is False
    assert (state.symbol, state.calendar, state.at) == ("AAPL", "XNYS", utc(2024, 7, 1, 13, 29, 59))
    assert span(state.window) == (utc(2024, 7, 1, 13, 30), utc(2024, 7, 1, 20, 0))  # the next window
    assert state.reason == (
        "AAPL: XNYS trading window closed at 2024-07-01T13:29:59+00:00: before the open of session 2024-07-01; "
        "next window 2024-07-01 13:30..20:00 UTC"
    )


@pytest.mark.parametrize("at", [utc(2024, 7, 1, 13, 30), utc(2024, 7, 1, 16, 0), utc(2024, 7, 1, 19, 59, 59)])
def test_inside_the_window(at):
    state = window_state("AAPL", at)
    assert state and state.is_open and state.reason == ""
    assert state.window == Window(date(2024, 7, 1), utc(2024, 7, 1, 13, 30), utc(2024, 7, 1, 20, 0),
                                  utc(2024, 7, 1, 13, 30), utc(2024, 7, 1, 20, 0))


def test_at_and_after_the_close():
    at_close = window_state("AAPL", utc(2024, 7, 1, 20, 0))  # half-open: the close is outside
    assert not at_close
    assert at_close.reason == (
        "AAPL: XNYS trading window closed at 2024-07-01T20:00:00+00:00: after the close of session 2024-07-01 "
        "(window 13:30..20:00 UTC); next window 2024-07-02 13:30..20:00 UTC"
    )
    # 23:30 New York is still 2024-07-01 there, although 03:30 UTC on 2024-07-02.
    late = window_state("AAPL", utc(2024, 7, 2, 3, 30))
    assert not late and "after the close of session 2024-07-01" in late.reason
    assert span(late.window) == (utc(2024, 7, 2, 13, 30), utc(2024, 7, 2, 20, 0))


def test_early_close():
    assert window_state("MSFT", utc(2024, 7, 3, 16, 59)).is_open
    state = window_state("MSFT", utc(2024, 7, 3, 17, 0))
    assert not state
    assert state.reason == (
        "MSFT: XNYS trading window closed at 2024-07-03T17:00:00+00:00: after the early close of session "
        "2024-07-03 (window 13:30..17:00 UTC); next window 2024-07-05 13:30..20:00 UTC"
    )


def test_holiday_and_weekend():
    holiday = window_state("AAPL", utc(2024, 7, 4, 15, 0))
    assert not holiday and span(holiday.window) == (utc(2024, 7, 5, 13, 30), utc(2024, 7, 5, 20, 0))
    assert holiday.reason == (
        "AAPL: XNYS trading window closed at 2024-07-04T15:00:00+00:00: no session on 2024-07-04 "
        "(Thursday: holiday or closure); next window 2024-07-05 13:30..20:00 UTC"
    )
    weekend = window_state("AAPL", utc(2024, 7, 6, 15, 0))
    assert not weekend and "no session on 2024-07-06 (Saturday: weekend)" in weekend.reason
    assert weekend.window.session == date(2024, 7, 8)


def test_offsets_narrow_the_window():
    assert not window_state("AAPL", utc(2024, 7, 1, 13, 34, 59), **NARROW)
    opened = window_state("AAPL", utc(2024, 7, 1, 13, 35), **NARROW)
    assert opened and span(opened.window) == (utc(2024, 7, 1, 13, 35), utc(2024, 7, 1, 19, 45))
    assert (opened.window.session_open, opened.window.session_close) == (utc(2024, 7, 1, 13, 30),
                                                                         utc(2024, 7, 1, 20, 0))
    assert window_state("AAPL", utc(2024, 7, 1, 19, 44, 59), **NARROW)
    before = window_state("AAPL", utc(2024, 7, 1, 13, 32), **NARROW)
    assert "before the window start of session 2024-07-01 (open + 5 min); next window 2024-07-01 13:35..19:45 UTC" \
        in before.reason
    after = window_state("AAPL", utc(2024, 7, 1, 19, 45), **NARROW)
    assert "after the window end of session 2024-07-01 (close - 15 min; window 13:35..19:45 UTC)" in after.reason
    # Minutes work too, and the early close ends the narrowed window 15 minutes early.
    assert window_state("AAPL", utc(2024, 7, 3, 16, 44), open_offset=5, close_offset=15)
    assert not window_state("AAPL", utc(2024, 7, 3, 16, 45), open_offset=5, close_offset=15)


def test_a_session_too_short_for_the_offsets_has_no_window():
    state = window_state("AAPL", utc(2024, 7, 3, 14, 0), open_offset=240)  # 09:30 + 4 h > the 13:00 close
    assert not state
    assert "the session of 2024-07-03 is too short for open_offset 240 min + close_offset 0 min" in state.reason
    assert span(state.window) == (utc(2024, 7, 5, 17, 30), utc(2024, 7, 5, 20, 0))


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (utc(2024, 3, 8, 13, 45), False),  # Friday, EST: opens 14:30 UTC
        (utc(2024, 3, 8, 14, 30), True),
        (utc(2024, 3, 8, 20, 45), True),  # EST close 21:00 UTC
        (utc(2024, 3, 11, 13, 30), True),  # Monday after the change, EDT: opens 13:30 UTC
        (utc(2024, 3, 11, 20, 45), False),  # EDT close 20:00 UTC
        (utc(2024, 11, 1, 13, 30), True),  # Friday before the fall change, EDT
        (utc(2024, 11, 4, 13, 30), False),  # Monday after, EST: opens 14:30 UTC
        (utc(2024, 11, 4, 14, 30), True),
    ],
)
def test_dst_changes_move_the_utc_window(at, is_open):
    assert window_state("SPY", at).is_open is is_open


def test_other_time_zones_and_exchanges():
    new_york = timezone(timedelta(hours=-4))
    state = window_state("AAPL", datetime(2024, 7, 1, 9, 30, tzinfo=new_york))
    assert state and state.at == utc(2024, 7, 1, 13, 30) and state.at.tzinfo is UTC
    london = window_state("VOD", utc(2024, 7, 1, 8, 0), exchange="XLON")  # 09:00 BST
    assert london and london.calendar == "XLON"
    assert not window_state("VOD", utc(2024, 7, 1, 16, 0), exchange="xlon")  # 17:00 BST: closed


# -- crypto --------------------------------------------------------------------------------------


def test_crypto_is_open_at_3am_utc_on_a_sunday():
    state = window_state("BTC/USD", utc(2024, 7, 7, 3, 0))  # Sunday
    assert state and state.calendar == "24/7" and state.reason == ""
    assert span(state.window) == (utc(2024, 7, 7), utc(2024, 7, 8))


@pytest.mark.parametrize("at", [utc(2024, 7, 4, 0, 0), utc(2024, 7, 7, 0, 1), utc(2024, 7, 7, 23, 59, 59),
                                utc(2024, 12, 25, 12, 0)])
def test_crypto_ignores_offsets_and_holidays(at):
    assert window_state("ETH/USD", at, **NARROW)
    assert window_state("ETH/USD", at, exchange="XLON", extended_hours=True)  # XLON has none: not asked


# -- many symbols --------------------------------------------------------------------------------


def test_window_states_match_window_state_one_by_one():
    symbols = ["AAPL", "MSFT", "BTC/USD", "AAPL", "ETH/USD", "SPY"]
    for at in (utc(2024, 7, 4, 15, 0), utc(2024, 7, 5, 15, 0), utc(2024, 7, 3, 19, 50)):
        states = window_states(symbols, at, **NARROW)
        assert list(states) == ["AAPL", "MSFT", "BTC/USD", "ETH/USD", "SPY"]
        assert states == {s: window_state(s, at, **NARROW) for s in states}
    holiday = window_states(symbols, utc(2024, 7, 4, 15, 0))
    assert {s: st.is_open for s, st in holiday.items()} == {
        "AAPL": False, "MSFT": False, "BTC/USD": True, "ETH/USD": True, "SPY": False}
    assert holiday["SPY"].reason.startswith("SPY: XNYS trading window closed")


def test_window_states_ask_each_calendar_once(monkeypatch):
    asked: list[str] = []
    real = windows_module._calendar_state

    def counting(windows, at):
        asked.append(windows.exchange)
        return real(windows, at)

    monkeypatch.setattr(windows_module, "_calendar_state", counting)
    symbols = [f"S{i}" for i in range(500)] + ["BTC/USD", "ETH/USD"]
    states = window_states(symbols, utc(2024, 7, 5, 15, 0))
    assert len(states) == 502 and sorted(asked) == ["24/7", "XNYS"]
    assert window_states([], utc(2024, 7, 5, 15, 0)) == {}


def test_trading_windows_are_built_once_per_setting():
    first = windows_module.trading_windows("XNYS", open_offset=5, close_offset=timedelta(minutes=15))
    again = windows_module.trading_windows("XNYS", open_offset=timedelta(minutes=5), close_offset=15)
    assert first is again


# -- forms and errors ------------------------------------------------------------------------------


def test_to_dict_is_json():
    data = json.loads(json.dumps(window_state("AAPL", utc(2024, 7, 4, 15, 0)).to_dict()))
    assert data["symbol"] == "AAPL" and data["calendar"] == "XNYS" and data["is_open"] is False
    assert data["at"] == "2024-07-04T15:00:00+00:00" and data["window"]["start"] == "2024-07-05T13:30:00+00:00"
    assert data["reason"].startswith("AAPL: XNYS trading window closed")
    assert isinstance(window_state("BTC/USD", utc(2024, 7, 7, 3)), WindowState)


def test_bad_input():
    with pytest.raises(InvalidInputError, match="at must be timezone-aware"):
        window_state("AAPL", datetime(2024, 7, 1, 15, 0))
    with pytest.raises(InvalidInputError, match="unknown market calendar 'NYSEE'"):
        window_state("AAPL", utc(2024, 7, 1, 15, 0), exchange="NYSEE")
    with pytest.raises(InvalidInputError, match="close_offset must be >= 0"):
        window_state("AAPL", utc(2024, 7, 1, 15, 0), close_offset=-1)
    with pytest.raises(InvalidInputError, match="leave no trading window"):
        window_state("AAPL", utc(2024, 7, 1, 15, 0), open_offset=timedelta(hours=4), close_offset=timedelta(hours=3))
    with pytest.raises(InvalidInputError, match="symbols must be non-empty strings"):
        window_states(["AAPL", ""], utc(2024, 7, 1, 15, 0))
