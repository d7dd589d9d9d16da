"""The ETL domain function: incremental plans, failover, quality gate, idempotence, bad input."""

from __future__ import annotations

import pandas as pd
import pandas_market_calendars as mcal
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.etl import load_bars
from tests.etl.recording import RecordingSource

AFTER_JUNE = pd.Timestamp("2024-07-01", tz="UTC")


def xnys(start: str, end: str) -> list[pd.Timestamp]:
    return list(mcal.get_calendar("XNYS").schedule(start, end).index)


def days(store, symbol, timeframe="1Day") -> list[pd.Timestamp]:
    bars = store.read_bars([symbol], timeframe=timeframe)
    return list(bars["ts"].dt.tz_localize(None))


def test_first_load_then_nothing_then_one_more_session(store, source):
    report = load_bars(store, [source], ["AAPL", "BTC/USD"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)
    assert report.failed == []
    assert days(store, "AAPL") == xnys("2024-06-03", "2024-06-07")
    assert len(days(store, "BTC/USD")) == 5
    assert report.rows_written == 10

    calls = len(source.calls)
    again = load_bars(store, [source], ["AAPL", "BTC/USD"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)
    assert again.rows_written == 0
    assert len(source.calls) == calls, "nothing missing, so nothing is fetched"
    assert all(r.sessions_missing == 0 for r in again.results)

    later = load_bars(store, [source], ["AAPL"], "2024-06-03", "2024-06-10", now=AFTER_JUNE)
    assert later.rows_written == 1
    assert source.calls[-1][1:3] == ("2024-06-10", "2024-06-10")
    assert days(store, "AAPL")[-1] == pd.Timestamp("2024-06-10")


def test_split_loads_equal_one_load(tmp_path, source):
    from airflow_provider_portfolio.store import PortfolioStore

    one = PortfolioStore.for_sqlite_file(tmp_path / "one.db")
    two = PortfolioStore.for_sqlite_file(tmp_path / "two.db")
    for s in (one, two):
        s.migrate()
    load_bars(one, [source], ["MSFT"], "2024-01-02", "2024-03-28", now=AFTER_JUNE)
    load_bars(two, [source], ["MSFT"], "2024-01-02", "2024-02-09", now=AFTER_JUNE)
    load_bars(two, [source], ["MSFT"], "2024-01-02", "2024-03-28", now=AFTER_JUNE)
    pd.testing.assert_frame_equal(one.read_bars(["MSFT"]), two.read_bars(["MSFT"]))


def test_gap_inside_the_range_is_filled(store, source):
    load_bars(store, [source], ["SPY"], "2024-06-03", "2024-06-04", now=AFTER_JUNE)
    load_bars(store, [source], ["SPY"], "2024-06-06", "2024-06-07", now=AFTER_JUNE)
    report = load_bars(store, [source], ["SPY"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)
    assert report.results[0].sessions_missing == 1 and report.rows_written == 1
    assert days(store, "SPY") == xnys("2024-06-03", "2024-06-07")


def test_failover_uses_the_next_source_and_records_why(store):
    broken = RecordingSource("broken", fail_for={"*"})
    good = RecordingSource("good")
    report = load_bars(store, [broken, good], ["AAPL"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)
    result = report.results[0]
    assert result.source == "good" and result.error is None
    assert "broken" in result.failed_sources and "no data for AAPL" in result.failed_sources["broken"]
    assert set(store.read_bars(["AAPL"])["source"]) == {"good"}


def test_symbol_no_source_can_serve_fails_alone(store):
    a = RecordingSource("a", fail_for={"MSFT"})
    b = RecordingSource("b", fail_for={"MSFT"})
    report = load_bars(store, [a, b], ["AAPL", "MSFT", "SPY"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)
    assert report.failed == ["MSFT"]
    error = report.to_dict()["symbols"]["MSFT"]["error"]
    assert "a:" in error and "b:" in error and "MSFT" in error
    assert store.count_bars(["MSFT"]) == 0
    assert store.count_bars(["AAPL", "SPY"]) == 10
    assert report.failed_fraction == pytest.approx(1 / 3)


def test_a_batch_failing_the_quality_gate_is_rejected_whole(store):
    source = RecordingSource(corrupt={"TSLA"})
    report = load_bars(store, [source], ["TSLA", "AAPL"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)
    assert report.failed == ["TSLA"]
    error = report.to_dict()["symbols"]["TSLA"]["error"]
    assert "TSLA" in error and "high_below_low" in error and "2024-06-04" in error
    assert store.count_bars(["TSLA"]) == 0
    assert store.count_bars(["AAPL"]) == 5


def test_sessions_not_closed_yet_are_not_stored(store, source):
    # 2024-06-07 15:00 UTC: Friday's session is open, so its daily bar would be partial.
    now = pd.Timestamp("2024-06-07 15:00", tz="UTC")
    load_bars(store, [source], ["AAPL", "BTC/USD"], "2024-06-03", "2024-06-07", now=now)
    assert days(store, "AAPL")[-1] == pd.Timestamp("2024-06-06")
    assert days(store, "BTC/USD")[-1] == pd.Timestamp("2024-06-06")


def test_intraday_incremental_across_an_early_close(store, source):
    # 2024-11-29 closes at 13:00 New York time (18:00 UTC).
    report = load_bars(store, [source], ["AAPL"], "2024-11-27", "2024-12-02", timeframe="1Hour", now=AFTER_JUNE + pd.Timedelta(days=365))
    assert report.failed == []
    bars = store.read_bars(["AAPL"], timeframe="1Hour")
    friday = bars[bars["ts"].dt.date == pd.Timestamp("2024-11-29").date()]
    assert len(friday) == 4 and friday["ts"].max() < pd.Timestamp("2024-11-29 18:00", tz="UTC")
    assert len(bars) == 7 + 4 + 7  # 27th, 29th (early close), 2nd; the 28th is Thanksgiving
    again = load_bars(store, [source], ["AAPL"], "2024-11-27", "2024-12-02", timeframe="1Hour", now=AFTER_JUNE + pd.Timedelta(days=365))
    assert again.rows_written == 0 and again.results[0].sessions_missing == 0


def test_full_mode_refetches_and_changes_nothing(store, source):
    load_bars(store, [source], ["AAPL"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)
    report = load_bars(store, [source], ["AAPL"], "2024-06-03", "2024-06-07", mode="full", now=AFTER_JUNE)
    assert report.results[0].sessions_missing == 5 and report.rows_written == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbols": ["AAPL"], "start": "2024-06-07", "end": "2024-06-03"}, "after end"),
        ({"symbols": 42, "start": "2024-06-03", "end": "2024-06-07"}, "list of tickers"),
        ({"symbols": ["AAPL", "not a ticker!"], "start": "2024-06-03", "end": "2024-06-07"}, "not a ticker"),
        ({"symbols": ["AAPL"], "start": "2024-06-08", "end": "2024-06-09"}, "no XNYS sessions"),
        ({"symbols": ["AAPL"], "start": "yesterday-ish", "end": "2024-06-09"}, "start must be a date"),
        ({"symbols": ["AAPL"], "start": "2024-06-03", "end": "2024-06-07", "timeframe": "2Weeks"}, "unknown timeframe"),
        ({"symbols": ["AAPL"], "start": "2024-06-03", "end": "2024-06-07", "mode": "sometimes"}, "mode must be"),
    ],
)
def test_bad_input_fails_before_anything_is_fetched_or_written(store, source, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        load_bars(store, [source], now=AFTER_JUNE, **kwargs)
    assert source.calls == []
    assert store.count_bars() == 0
