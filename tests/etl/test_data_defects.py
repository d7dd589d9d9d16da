"""Data defects the ETL must not let through ("Safe with money").

- Defect 7: an incremental load of one or two bars was never checked against the store, so a close of
  1e12, x100 or x0.001 was stored; the first new bar is now judged against the last stored bar before it.
- Defect 8: vendor hooks dropped duplicate timestamps (keep last) before the gate; every duplicate
  now reaches the gate's ``duplicate_timestamp`` rule and rejects the symbol's batch, for every vendor.
- The ``now`` boundary of :func:`load_bars`: a session whose close is exactly ``now`` is stored.

Vendors are mocked at HTTP level (requests-mock) with bodies shaped like the recorded fixtures of
``tests/hooks/fixtures``; the store is a real SQLite file.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from airflow_provider_portfolio.hooks import alphavantage as av_module
from airflow_provider_portfolio.hooks.alpaca import AlpacaHook
from airflow_provider_portfolio.hooks.alphavantage import AlphaVantageHook
from airflow_provider_portfolio.hooks.finnhub import FinnhubHook
from airflow_provider_portfolio.market.bars import PRICE_COLUMNS
from airflow_provider_portfolio.market.calendar import MarketCalendar
from airflow_provider_portfolio.market.etl import last_closed_session, load_bars
from airflow_provider_portfolio.market.quality import QualityRules
from tests.etl.recording import RecordingSource
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET, ALPHAVANTAGE_KEY, FINNHUB_KEY

AFTER_JUNE = pd.Timestamp("2024-07-01", tz="UTC")
FIXTURES = Path(__file__).resolve().parents[1] / "hooks" / "fixtures"
ALPACA_BARS = "https://data.alpaca.markets/v2/stocks/bars"
FH_CANDLE = "https://finnhub.io/api/v1/stock/candle"
AV_URL = "https://www.alphavantage.co/query"


def fixture(path: str) -> dict:
    return json.loads((FIXTURES / path).read_text())


class Doctored(RecordingSource):
    """The synthetic market with every price of the bars dated on ``days`` multiplied by ``factor`` or set to
    ``price`` (a bar still consistent in itself: only a jump can catch it)."""

    def __init__(self, days: list[str], *, factor: float | None = None, price: float | None = None):
        super().__init__("doctored")
        self.days = [pd.Timestamp(d).date() for d in days]
        self.factor, self.price = factor, price

    def get_bars(self, symbol, start, end, timeframe="1Day") -> pd.DataFrame:
        bars = super().get_bars(symbol, start, end, timeframe)
        hit = bars["ts"].dt.date.isin(self.days)
        for col in PRICE_COLUMNS:
            bars.loc[hit, col] = self.price if self.price is not None else bars.loc[hit, col] * self.factor
        return bars


def stored(store, symbol: str, timeframe: str = "1Day") -> pd.DataFrame:
    return store.read_bars([symbol], timeframe=timeframe)


def utc(day: str) -> str:
    return f"{day}T00:00:00Z"


# --- defect 7: the first new bar is judged against the last stored one ------------------------------------


@pytest.mark.parametrize(
    ("doctor", "shown"),
    [({"price": 1e12}, "close=1000000000000.0"), ({"factor": 100.0}, "return=+"),
     ({"factor": 0.001}, "return=-99.9%")],
    ids=["close 1e12", "x100", "x0.001"],
)
def test_an_incremental_bar_that_jumps_from_the_stored_close_is_rejected(store, source, doctor, shown):
    load_bars(store, [source], ["SPY"], "2024-06-03", "2024-06-06", now=AFTER_JUNE)
    before = stored(store, "SPY")
    previous = before.iloc[-1]
    doctored = Doctored(["2024-06-07"], **doctor)
    served = float(doctored.get_bars("SPY", date(2024, 6, 7), date(2024, 6, 7))["close"].iloc[0])

    report = load_bars(store, [doctored], ["SPY"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)

    assert report.failed == ["SPY"]
    error = report.results[0].error
    assert report.results[0].rows_fetched == 1
    assert error.startswith(f"SPY: rule 'implausible_jump' failed on 1 row(s): {utc('2024-06-07')} close={served!r} ")
    assert shown in error
    assert f"previous_close={float(previous.close)!r} ({utc('2024-06-06')}, before the batch)" in error
    pd.testing.assert_frame_equal(stored(store, "SPY"), before)  # nothing written


def test_a_hole_filled_with_a_jump_is_judged_against_the_stored_bar_before_it(store, source):
    load_bars(store, [source], ["SPY"], "2024-06-03", "2024-06-04", now=AFTER_JUNE)
    load_bars(store, [source], ["SPY"], "2024-06-06", "2024-06-07", now=AFTER_JUNE)
    before = stored(store, "SPY")
    june_4 = float(before.loc[before["ts"] == pd.Timestamp("2024-06-04", tz="UTC"), "close"].iloc[0])

    report = load_bars(store, [Doctored(["2024-06-05"], factor=100.0)], ["SPY"], "2024-06-03", "2024-06-07",
                       now=AFTER_JUNE)

    assert report.failed == ["SPY"] and "'implausible_jump'" in report.results[0].error
    assert f"previous_close={june_4!r} ({utc('2024-06-04')}, before the batch)" in report.results[0].error
    pd.testing.assert_frame_equal(stored(store, "SPY"), before)


def test_a_hole_after_a_long_gap_is_judged_against_the_last_bar_before_it(store, source):
    load_bars(store, [source], ["SPY"], "2024-01-29", "2024-01-31", now=AFTER_JUNE)
    load_bars(store, [source], ["SPY"], "2024-06-07", "2024-06-07", now=AFTER_JUNE)
    january_31 = float(stored(store, "SPY")["close"].iloc[2])

    report = load_bars(store, [Doctored(["2024-06-03"], factor=0.001)], ["SPY"], "2024-06-03", "2024-06-07",
                       now=AFTER_JUNE)

    assert report.failed == ["SPY"]
    assert f"previous_close={january_31!r} ({utc('2024-01-31')}, before the batch)" in report.results[0].error


def test_rerunning_stored_sessions_passes(store, source):
    load_bars(store, [source], ["SPY", "BTC/USD"], "2024-05-20", "2024-06-07", now=AFTER_JUNE)
    before = store.read_bars(["SPY", "BTC/USD"])

    for mode, start in (("incremental", "2024-05-20"), ("full", "2024-06-03"), ("full", "2024-05-20")):
        report = load_bars(store, [source], ["SPY", "BTC/USD"], start, "2024-06-07", mode=mode, now=AFTER_JUNE)
        assert report.failed == [] and report.rows_written == 0, (mode, start, report.to_dict())

    pd.testing.assert_frame_equal(store.read_bars(["SPY", "BTC/USD"]), before)


def test_a_long_gap_gets_no_wider_threshold(store, source):
    """Decision: the first bar after a gap of any length is judged by the same ``max_abs_return``.
    A genuine large move across a gap is rejected; a person loads it with a wider threshold."""
    load_bars(store, [source], ["AAPL", "MSFT"], "2024-01-02", "2024-01-31", now=AFTER_JUNE)

    legit = load_bars(store, [source], ["AAPL"], "2024-01-02", "2024-06-07", now=AFTER_JUNE)
    assert legit.failed == [] and legit.rows_written > 0  # four months later, within 50%

    doubled = Doctored([str(d.date()) for d in pd.bdate_range("2024-02-01", "2024-06-07")], factor=2.0)
    report = load_bars(store, [doubled], ["MSFT"], "2024-01-02", "2024-06-07", now=AFTER_JUNE)
    assert report.failed == ["MSFT"] and "'implausible_jump'" in report.results[0].error
    assert f"({utc('2024-01-31')}, before the batch)" in report.results[0].error
    assert stored(store, "MSFT")["ts"].max() == pd.Timestamp("2024-01-31", tz="UTC")

    wider = load_bars(store, [doubled], ["MSFT"], "2024-01-02", "2024-06-07", now=AFTER_JUNE,
                      rules=QualityRules(max_abs_return=1.5))
    assert wider.failed == [] and stored(store, "MSFT")["ts"].max() == pd.Timestamp("2024-06-07", tz="UTC")


def test_the_stored_bar_compared_is_of_the_load_timeframe(store, source):
    # Daily bars stored at 100x; hourly bars of the same days are compared with hourly bars only.
    load_bars(store, [Doctored(["2024-06-03", "2024-06-04"], factor=100.0)], ["SPY"], "2024-06-03", "2024-06-04",
              now=AFTER_JUNE)
    report = load_bars(store, [source], ["SPY"], "2024-06-04", "2024-06-04", timeframe="1Hour", now=AFTER_JUNE)
    assert report.failed == [] and report.rows_written == 7

    jumpy = Doctored(["2024-06-05"], factor=100.0)
    report = load_bars(store, [jumpy], ["SPY"], "2024-06-04", "2024-06-05", timeframe="1Hour", now=AFTER_JUNE)
    assert report.failed == ["SPY"]
    assert "2024-06-05T13:30:00Z" in report.results[0].error and "(2024-06-04T19:30:00Z, before the batch)" in \
        report.results[0].error


def test_without_the_jump_rule_the_store_is_not_asked(store, source, monkeypatch):
    load_bars(store, [source], ["SPY"], "2024-06-03", "2024-06-06", now=AFTER_JUNE)
    monkeypatch.setattr(type(store), "latest_bar_ts", lambda *a, **k: pytest.fail("the store was asked"))
    report = load_bars(store, [Doctored(["2024-06-07"], factor=100.0)], ["SPY"], "2024-06-03", "2024-06-07",
                       now=AFTER_JUNE, rules=QualityRules(max_abs_return=None))
    assert report.failed == [] and report.rows_written == 1


# --- defect 8: duplicate vendor bars reach the gate and reject the batch ------------------------------------


@pytest.fixture
def alpaca(add_connection, no_sleep) -> AlpacaHook:
    add_connection("alpaca_dup", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET)
    hook = AlpacaHook("alpaca_dup")
    hook.sleep = no_sleep.append
    return hook


def alpaca_pages(repeat: str) -> list[dict]:
    """AAPL's week over two pages (recorded shape); the second repeats June 5, identical or changed."""
    rows = fixture("alpaca/stock_bars_daily_page1.json")["bars"]["AAPL"]
    again = copy.deepcopy(rows[2])
    if repeat == "changed":
        again.update(c=197.12, h=197.5, v=1200001)
    page1 = {"bars": {"AAPL": rows[:3]}, "next_page_token": "QUFQTHxEfDIwMjQtMDYtMDVUMDQ6MDA6MDBa"}
    page2 = {"bars": {"AAPL": [again, *rows[3:]]}, "next_page_token": None}
    return [{"json": page1}, {"json": page2}]


@pytest.mark.parametrize("repeat", ["identical", "changed"])
def test_alpaca_duplicate_bars_reject_the_batch(store, alpaca, requests_mock, repeat):
    requests_mock.get(ALPACA_BARS, alpaca_pages(repeat))
    frame = alpaca.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))
    assert len(frame) == 6 and (frame["ts"] == pd.Timestamp("2024-06-05", tz="UTC")).sum() == 2

    requests_mock.get(ALPACA_BARS, alpaca_pages(repeat))
    report = load_bars(store, [alpaca], ["AAPL"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)

    assert report.failed == ["AAPL"]
    error = report.results[0].error
    assert error.startswith("AAPL: rule 'duplicate_timestamp' failed on 2 row(s): ")
    assert error.count(utc("2024-06-05")) == 2
    assert store.count_bars() == 0


@pytest.mark.parametrize("repeat", ["identical", "changed"])
def test_finnhub_duplicate_candles_reject_the_batch(store, add_connection, no_sleep, requests_mock, repeat):
    add_connection("fh_dup", "finnhub", password=FINNHUB_KEY)
    hook = FinnhubHook("fh_dup")
    hook.sleep = no_sleep.append
    body = fixture("finnhub/stock_candle_aapl_daily.json")
    for key in ("c", "h", "l", "o", "t", "v"):
        body[key].insert(3, body[key][2])  # June 5 twice, in the recorded array shape
    if repeat == "changed":
        body["c"][3] = 196.0
    requests_mock.get(FH_CANDLE, json=body)

    frame = hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))
    assert len(frame) == 6 and (frame["ts"] == pd.Timestamp("2024-06-05", tz="UTC")).sum() == 2

    report = load_bars(store, [hook], ["AAPL"], "2024-06-03", "2024-06-07", now=AFTER_JUNE)
    assert report.failed == ["AAPL"]
    assert report.results[0].error.startswith("AAPL: rule 'duplicate_timestamp' failed on 2 row(s): ")
    assert store.count_bars() == 0


def av_month(stamps: dict[str, float]) -> dict:
    """An intraday answer shaped like the recorded one, holding ``stamps`` (New York time) -> close."""
    body = fixture("alphavantage/time_series_intraday_ibm_5min.json")
    body["Time Series (5min)"] = {
        stamp: {"1. open": f"{close:.4f}", "2. high": f"{close + 0.2:.4f}", "3. low": f"{close - 0.2:.4f}",
                "4. close": f"{close:.4f}", "5. volume": "41235"}
        for stamp, close in stamps.items()
    }
    return body


@pytest.mark.parametrize("repeat", ["identical", "changed"])
def test_alphavantage_months_repeating_a_bar_reject_the_batch(store, add_connection, no_sleep, requests_mock,
                                                             monkeypatch, repeat):
    monkeypatch.setattr(av_module, "_today", lambda: date(2024, 9, 2))  # older than a month: one call per month
    add_connection("av_dup", "alphavantage", password=ALPHAVANTAGE_KEY)
    hook = AlphaVantageHook("av_dup")
    hook.sleep = no_sleep.append
    may = av_month({"2024-05-31 09:30:00": 168.1, "2024-05-31 09:35:00": 168.3, "2024-06-03 09:30:00": 169.0})
    june = av_month({"2024-06-03 09:30:00": 169.0 if repeat == "identical" else 169.4, "2024-06-03 09:35:00": 169.2})

    def answer(request, context):
        return may if request.qs["month"] == ["2024-05"] else june

    requests_mock.get(AV_URL, json=answer)
    frame = hook.get_bars("IBM", date(2024, 5, 31), date(2024, 6, 3), "5Min")
    assert len(frame) == 5 and (frame["ts"] == pd.Timestamp("2024-06-03 13:30", tz="UTC")).sum() == 2

    report = load_bars(store, [hook], ["IBM"], "2024-05-31", "2024-06-03", timeframe="5Min", now=AFTER_JUNE)
    assert report.failed == ["IBM"]
    error = report.results[0].error
    assert error.startswith("IBM: rule 'duplicate_timestamp' failed on 2 row(s): ")
    assert error.count("2024-06-03T13:30:00Z") == 2
    assert store.count_bars() == 0


# --- the ``now`` boundary ----------------------------------------------------------------------------------


def test_a_session_closing_exactly_at_now_is_stored(store, source):
    close = pd.Timestamp("2024-06-07 20:00", tz="UTC")  # NYSE closes at 16:00 New York time
    assert last_closed_session(MarketCalendar("XNYS"), close) == pd.Timestamp("2024-06-07")

    load_bars(store, [source], ["SPY"], "2024-06-03", "2024-06-07", now=close - pd.Timedelta(microseconds=1))
    assert stored(store, "SPY")["ts"].max() == pd.Timestamp("2024-06-06", tz="UTC")

    report = load_bars(store, [source], ["SPY"], "2024-06-03", "2024-06-07", now=close)
    assert report.rows_written == 1 and stored(store, "SPY")["ts"].max() == pd.Timestamp("2024-06-07", tz="UTC")
