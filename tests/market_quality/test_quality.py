"""The quality gate: one test per rule on a hand-built batch with one corrupted row, calendars, batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import DataQualityError, InvalidInputError
from airflow_provider_portfolio.market.bars import to_bar_frame
from airflow_provider_portfolio.market.calendar import MarketCalendar, calendar_for_symbol
from airflow_provider_portfolio.market.quality import RULES, QualityRules, check_bars, validate_bars


def bars(
    rows: list[tuple[str, float, float, float, float, float]],
    symbol: str = "AAPL",
    timeframe: str = "1Day",
) -> pd.DataFrame:
    """A bar frame from (ts, open, high, low, close, volume) rows; naive ts are UTC."""
    frame = pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])
    frame["ts"] = [pd.Timestamp(t) for t in frame["ts"]]
    return to_bar_frame(frame, symbol=symbol, timeframe=timeframe, source="test")


# Tue 2 Jan .. Fri 5 Jan 2024: four NYSE sessions (1 Jan is a holiday).
CLEAN = [
    ("2024-01-02", 100.0, 102.0, 99.0, 101.0, 1000.0),
    ("2024-01-03", 101.0, 103.0, 100.0, 102.0, 1100.0),
    ("2024-01-04", 102.0, 104.0, 101.0, 103.0, 1200.0),
    ("2024-01-05", 103.0, 105.0, 102.0, 104.0, 1300.0),
]
BAD_TS = "2024-01-04T00:00:00Z"


def corrupt(row: int = 2, **values: object) -> list[tuple]:
    rows = [list(r) for r in CLEAN]
    names = ["ts", "open", "high", "low", "close", "volume"]
    for name, value in values.items():
        rows[row][names.index(name)] = value
    return [tuple(r) for r in rows]


def raises(frame: pd.DataFrame, **kwargs: object) -> DataQualityError:
    with pytest.raises(DataQualityError) as info:
        check_bars(frame, **kwargs)
    return info.value


def test_a_clean_batch_passes(fake_calendar):
    check_bars(bars(CLEAN), calendar=fake_calendar)
    check_bars(bars(CLEAN))


def test_an_empty_batch_passes(fake_calendar):
    check_bars(bars([]), calendar=fake_calendar)
    kept, errors = validate_bars(bars([]), calendar_for=lambda s: fake_calendar)
    assert kept.empty and errors == {}


@pytest.mark.parametrize(
    ("rule", "values", "shown"),
    [
        ("missing_values", {"close": np.nan}, "close=nan"),
        ("missing_values", {"volume": None}, "volume=nan"),
        ("non_finite", {"volume": np.inf}, "volume=inf"),
        ("non_finite", {"high": np.inf}, "high=inf"),
        ("non_positive_price", {"low": 0.0}, "low=0.0"),
        ("non_positive_price", {"open": -1.0, "low": -2.0}, "open=-1.0 low=-2.0"),
        ("high_below_low", {"high": 100.5, "low": 101.0}, "high=100.5 low=101.0"),
        ("open_outside_range", {"open": 110.0}, "open=110.0 low=101.0 high=104.0"),
        ("open_outside_range", {"open": 100.0}, "open=100.0"),
        ("close_outside_range", {"close": 95.0}, "close=95.0 low=101.0 high=104.0"),
        ("negative_volume", {"volume": -5.0}, "volume=-5.0"),
        ("implausible_jump", {"open": 200.0, "high": 210.0, "low": 200.0, "close": 205.0}, "close=205.0"),
    ],
)
def test_each_rule_names_itself_the_symbol_and_the_row(fake_calendar, rule, values, shown):
    err = raises(bars(corrupt(**values), symbol="MSFT"), calendar=fake_calendar)
    assert (err.rule, err.symbol, err.count) == (rule, "MSFT", 1)
    assert len(err.rows) == 1 and err.rows[0].startswith(BAD_TS)
    assert shown in err.rows[0]
    assert "MSFT" in str(err) and repr(rule) in str(err) and BAD_TS in str(err)


def test_a_missing_timestamp_is_missing_values():
    frame = bars(CLEAN)
    frame.loc[2, "ts"] = pd.NaT
    err = raises(frame)
    assert (err.rule, err.count) == ("missing_values", 1)
    assert err.rows == ["NaT ts missing"]


def test_duplicate_timestamps_name_every_row_sharing_it(fake_calendar):
    err = raises(bars(corrupt(row=3, ts="2024-01-04")), calendar=fake_calendar)
    assert (err.rule, err.symbol, err.count) == ("duplicate_timestamp", "AAPL", 2)
    assert all(r.startswith(BAD_TS) for r in err.rows)


def test_a_daily_bar_on_a_weekend_is_off_session(fake_calendar):
    err = raises(bars(corrupt(ts="2024-01-06")), calendar=fake_calendar)
    assert (err.rule, err.symbol, err.count) == ("off_session", "AAPL", 1)
    assert err.rows[0].startswith("2024-01-06T00:00:00Z") and "FAKE" in err.rows[0]


def test_a_daily_bar_not_at_midnight_utc_is_off_session(fake_calendar):
    err = raises(bars(corrupt(ts="2024-01-04 14:30")), calendar=fake_calendar)
    assert err.rule == "off_session"
    assert err.rows[0].startswith("2024-01-04T14:30:00Z")


def test_a_daily_bar_on_a_holiday_of_the_calendar_is_off_session(make_calendar):
    err = raises(bars(CLEAN), calendar=make_calendar(closed=("2024-01-04",)))
    assert (err.rule, err.count) == ("off_session", 1) and err.rows[0].startswith(BAD_TS)


def test_the_calendar_is_asked_once_for_the_batch_span(fake_calendar):
    check_bars(bars(CLEAN), calendar=fake_calendar)
    assert fake_calendar.calls == [(pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-05"))]


INTRADAY = [
    ("2024-01-04 14:30", 100.0, 101.0, 99.5, 100.5, 10.0),
    ("2024-01-04 15:30", 100.5, 101.5, 100.0, 101.0, 10.0),
    ("2024-01-04 20:30", 101.0, 101.5, 100.5, 101.2, 10.0),
]


def test_intraday_bars_inside_session_hours_pass(fake_calendar):
    check_bars(bars(INTRADAY, timeframe="1Hour"), calendar=fake_calendar)


@pytest.mark.parametrize("when", ["2024-01-04 14:29", "2024-01-04 21:00", "2024-01-06 15:00"])
def test_intraday_bars_outside_session_hours_fail(fake_calendar, when):
    rows = [*INTRADAY[:2], (when, 101.0, 101.5, 100.5, 101.2, 10.0)]
    err = raises(bars(rows, timeframe="1Min"), calendar=fake_calendar)
    assert (err.rule, err.count) == ("off_session", 1)
    assert err.rows[0].startswith(pd.Timestamp(when).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert "session hours" in err.rows[0]


def test_off_session_is_skipped_without_a_calendar_or_when_disabled(fake_calendar):
    weekend = bars(corrupt(ts="2024-01-06"))
    check_bars(weekend)
    check_bars(weekend, calendar=fake_calendar, rules=QualityRules(check_sessions=False))


def test_the_jump_threshold_is_configurable_and_can_be_disabled(fake_calendar):
    # 103 -> 133.9 on 5 Jan: a 30% move.
    frame = bars(corrupt(row=3, open=130.0, high=135.0, low=129.0, close=133.9))
    check_bars(frame, calendar=fake_calendar)  # default 50%
    err = raises(frame, calendar=fake_calendar, rules=QualityRules(max_abs_return=0.2))
    assert (err.rule, err.count) == ("implausible_jump", 1)
    assert err.rows[0] == "2024-01-05T00:00:00Z close=133.9 previous_close=103.0 return=+30.0%"
    big = bars(corrupt(open=200.0, high=210.0, low=200.0, close=205.0))
    check_bars(big, rules=QualityRules(max_abs_return=None))
    check_bars(big, rules=QualityRules(max_abs_return=1.5))


def test_a_crash_is_a_jump_too():
    err = raises(bars(corrupt(open=50.0, high=52.0, low=49.0, close=50.0)))
    assert err.rule == "implausible_jump"
    assert err.count == 2  # down 51% into 4 Jan, up 106% out of it
    assert err.rows[0].startswith(BAD_TS) and "return=-51.0%" in err.rows[0]


@pytest.mark.parametrize("value", [0, -0.1, float("nan"), float("inf"), "0.5", True])
def test_rules_refuse_a_meaningless_threshold(value):
    with pytest.raises(InvalidInputError, match="max_abs_return"):
        QualityRules(max_abs_return=value)


def test_rows_are_checked_in_time_order_whatever_the_frame_order(fake_calendar):
    frame = bars(CLEAN).iloc[[3, 0, 2, 1]]
    check_bars(frame, calendar=fake_calendar)
    jumpy = bars(corrupt(row=3, open=130.0, high=135.0, low=129.0, close=133.9)).iloc[::-1]
    err = raises(jumpy, rules=QualityRules(max_abs_return=0.2))
    assert err.rows[0].startswith("2024-01-05T00:00:00Z")


def test_the_first_rule_broken_wins_and_every_offending_row_counts():
    rows = corrupt(row=0, high=1.0, low=2.0, open=1.5, close=1.5)
    rows = [rows[0], *[(f"2024-01-{d:02d}", 1.5, 1.0, 2.0, 1.5, 5.0) for d in range(8, 20)]]
    err = raises(bars(rows))
    assert (err.rule, err.count) == ("high_below_low", 13)
    assert "(+8 more)" in str(err)


def test_check_bars_refuses_a_frame_of_several_symbols():
    frame = pd.concat([bars(CLEAN, symbol="AAPL"), bars(CLEAN, symbol="MSFT")])
    with pytest.raises(InvalidInputError, match="one symbol"):
        check_bars(frame)


def test_a_batch_holds_one_timeframe():
    frame = pd.concat([bars(CLEAN), bars(INTRADAY, timeframe="1Hour")])
    with pytest.raises(InvalidInputError, match="one timeframe"):
        check_bars(frame)


def test_a_frame_lacking_columns_is_invalid_input():
    with pytest.raises(InvalidInputError, match="close"):
        check_bars(bars(CLEAN).drop(columns="close"))


def test_the_rule_order_is_documented():
    assert RULES == (
        "missing_values", "non_finite", "non_positive_price", "high_below_low", "open_outside_range",
        "close_outside_range", "negative_volume", "duplicate_timestamp", "off_session", "implausible_jump",
    )


# --- the real calendars ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xnys() -> MarketCalendar:
    return MarketCalendar("XNYS")


def test_a_daily_bar_on_independence_day_is_off_session(xnys):
    week = [(f"2024-07-0{d}", 10.0, 11.0, 9.0, 10.0, 1.0) for d in (1, 2, 3, 5)]
    check_bars(bars(week), calendar=xnys)
    err = raises(bars([*week, ("2024-07-04", 10.0, 11.0, 9.0, 10.0, 1.0)]), calendar=xnys)
    assert (err.rule, err.symbol, err.count) == ("off_session", "AAPL", 1)
    assert err.rows[0].startswith("2024-07-04T00:00:00Z") and "XNYS" in err.rows[0]


def test_an_intraday_bar_after_the_early_close_is_off_session(xnys):
    # Friday after Thanksgiving: NYSE closes 13:00 ET = 18:00 UTC.
    before = ("2024-11-29 17:30", 10.0, 11.0, 9.0, 10.0, 1.0)
    check_bars(bars([before], timeframe="30Min"), calendar=xnys)
    err = raises(bars([before, ("2024-11-29 18:30", 10.0, 11.0, 9.0, 10.0, 1.0)], timeframe="30Min"), calendar=xnys)
    assert (err.rule, err.count) == ("off_session", 1)
    assert err.rows[0].startswith("2024-11-29T18:30:00Z")


def test_the_winter_open_at_14_30_utc_passes_and_14_29_does_not(xnys):
    check_bars(bars([("2024-01-10 14:30", 10.0, 11.0, 9.0, 10.0, 1.0)], timeframe="1Min"), calendar=xnys)
    err = raises(bars([("2024-01-10 14:29", 10.0, 11.0, 9.0, 10.0, 1.0)], timeframe="1Min"), calendar=xnys)
    assert err.rule == "off_session"


def test_crypto_trades_on_saturday_on_the_24_7_calendar(xnys):
    saturday = [("2024-01-06", 40000.0, 41000.0, 39000.0, 40500.0, 12.5)]
    check_bars(bars(saturday, symbol="BTC/USD"), calendar=calendar_for_symbol("BTC/USD"))
    check_bars(bars([("2024-01-06 03:00", 1.0, 1.0, 1.0, 1.0, 0.0)], "BTC/USD", "1Hour"), calendar=MarketCalendar("24/7"))
    assert raises(bars(saturday, symbol="BTC/USD"), calendar=xnys).rule == "off_session"


# --- many symbols ---------------------------------------------------------------------------------


def test_validate_bars_rejects_only_the_bad_symbol_whole(fake_calendar):
    good_a, good_b = bars(CLEAN, symbol="AAPL"), bars(CLEAN, symbol="MSFT")
    bad = bars(corrupt(high=100.5, low=101.0), symbol="IBM")
    frame = pd.concat([good_a, bad, good_b], ignore_index=True)
    kept, errors = validate_bars(frame, calendar_for=lambda symbol: fake_calendar)
    assert list(errors) == ["IBM"]
    assert (errors["IBM"].rule, errors["IBM"].symbol) == ("high_below_low", "IBM")
    assert BAD_TS in str(errors["IBM"])
    expected = pd.concat([good_a, good_b], ignore_index=True)
    pd.testing.assert_frame_equal(kept, expected)


def test_validate_bars_chooses_each_symbols_calendar():
    saturday = ("2024-01-06", 10.0, 11.0, 9.0, 10.0, 1.0)
    frame = pd.concat([bars([saturday], symbol="BTC/USD"), bars([saturday], symbol="AAPL")], ignore_index=True)
    kept, errors = validate_bars(frame, calendar_for=calendar_for_symbol)
    assert list(errors) == ["AAPL"] and errors["AAPL"].rule == "off_session"
    assert list(kept["symbol"]) == ["BTC/USD"]


def test_validate_bars_without_a_calendar_skips_sessions():
    kept, errors = validate_bars(bars(corrupt(ts="2024-01-06")))
    assert errors == {} and len(kept) == 4


def test_validate_bars_gives_the_same_errors_as_check_bars(fake_calendar):
    frames = {
        "AAA": bars(corrupt(close=np.nan), "AAA"),
        "BBB": bars(corrupt(ts="2024-01-06"), "BBB"),
        "CCC": bars(corrupt(open=200.0, high=210.0, low=200.0, close=205.0), "CCC"),
        "DDD": bars(CLEAN, "DDD"),
    }
    whole = pd.concat(frames.values(), ignore_index=True).sample(frac=1, random_state=7)
    kept, errors = validate_bars(whole, calendar_for=lambda s: fake_calendar)
    assert sorted(errors) == ["AAA", "BBB", "CCC"]
    for symbol in errors:
        alone = raises(frames[symbol], calendar=fake_calendar)
        assert (errors[symbol].rule, errors[symbol].rows, errors[symbol].count) == (alone.rule, alone.rows, alone.count)
    assert set(kept["symbol"]) == {"DDD"} and len(kept) == 4


def test_a_desk_sized_frame_rejects_only_the_broken_symbol(xnys):
    # Its cost is measured by bench/bench_quality.py, not here.
    days = xnys.sessions("2014-01-01", "2024-12-31").index[:2520]
    symbols = [f"S{i:03d}" for i in range(500)]
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (len(symbols), len(days))), axis=1)).ravel()
    frame = pd.DataFrame(
        {
            "symbol": np.repeat(symbols, len(days)),
            "timeframe": "1Day",
            "ts": np.tile(days.tz_localize("UTC"), len(symbols)),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": 1e6,
            "source": "test",
        }
    )
    frame.loc[777, "low"] = frame.loc[777, "high"] * 2
    validate_bars(frame.head(10), calendar_for=calendar_for_symbol)  # warm the calendar's schedule
    kept, errors = validate_bars(frame, calendar_for=calendar_for_symbol)
    assert list(errors) == ["S000"] and errors["S000"].rule == "high_below_low"
    assert len(kept) == 499 * len(days)
