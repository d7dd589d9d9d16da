"""Alpha Vantage's scored news and Finnhub's company news reach the sentiment signal of a trading cycle.

The cycle used to take the first source with a ``news`` or ``get_news`` attribute, so neither vendor's news was
ever read by one. requests-mock only, bodies shaped like the vendors' (fixtures in ``tests/hooks/fixtures``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_portfolio.hooks.alphavantage import AlphaVantageHook
from airflow_provider_portfolio.hooks.finnhub import FinnhubHook
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.session import trade_universe
from airflow_provider_portfolio.trading.settings import CycleSettings, news_window
from airflow_provider_portfolio.trading.signals import sentiment_signal
from tests.vendorkeys import ALPHAVANTAGE_KEY, FINNHUB_KEY

FIXTURES = Path(__file__).parent / "fixtures"
AV = "https://www.alphavantage.co/query"
FH = "https://finnhub.io/api/v1"
JSON = {"Content-Type": "application/json; charset=utf-8"}
NOW = datetime(2024, 6, 11, 14, 0, tzinfo=timezone.utc)  # 10:00 New York, a Tuesday
SETTINGS = CycleSettings(weights={"technical": 0.4, "sentiment": 0.6})


def load(path: str) -> object:
    return json.loads((FIXTURES / path).read_text().replace("__APIKEY__", ALPHAVANTAGE_KEY))


class BarsOnly:
    """The synthetic market's bars, without its news feed: the vendors are the only news sources."""

    name = "bars"

    def get_bars(self, symbols, start, end, timeframe="1Day"):
        return SyntheticMarket(seed=5).get_bars(symbols, start, end, timeframe)


@pytest.fixture
def vendors(add_connection, no_sleep):
    add_connection("av", "alphavantage", password=ALPHAVANTAGE_KEY)
    add_connection("fh", "finnhub", password=FINNHUB_KEY)
    av, fh = AlphaVantageHook("av"), FinnhubHook("fh")
    av.sleep = fh.sleep = no_sleep.append
    return av, fh


def cycle_sentiment(tmp_path, sources) -> dict[str, dict]:
    store = PortfolioStore.for_sqlite_file(tmp_path / "desk.db")
    store.migrate()
    ledger = TradingLedger(store)
    trade_universe(["AAPL", "MSFT"], store=store, sources=sources, broker=SimulatedBroker(ledger), now=NOW,
                   dag_id="desk", run_id="r1", settings=SETTINGS)
    return {d["symbol"]: d["signals"]["sentiment"] for d in ledger.decisions("desk", "r1")}


def expected(items) -> dict[str, tuple[float, float]]:
    signal = sentiment_signal(["AAPL", "MSFT"], items, NOW, SETTINGS.news_half_life_hours)
    return {s: (float(signal.score[i]), float(signal.confidence[i])) for i, s in enumerate(["AAPL", "MSFT"])}


def test_alphavantage_scored_news_is_the_cycles_sentiment(tmp_path, vendors, requests_mock):
    av, fh = vendors
    requests_mock.get(AV, json=load("alphavantage/news_sentiment_aapl_msft.json"), headers=JSON)
    company_news = requests_mock.get(f"{FH}/company-news", json=load("finnhub/company_news_aapl.json"),
                                     headers=JSON)
    got = cycle_sentiment(tmp_path, [BarsOnly(), av, fh])
    items = av.get_news(["AAPL", "MSFT"], *news_window(NOW, SETTINGS.news_half_life_hours))
    assert {i.vendor_score for i in items} - {None}, "the fixture's items carry the vendor's scores"
    want = expected(items)
    for symbol in ("AAPL", "MSFT"):
        assert (got[symbol]["score"], got[symbol]["confidence"]) == pytest.approx(want[symbol])
    assert got["AAPL"]["score"] > 0 > got["MSFT"]["score"]  # the vendor's own per-ticker scores
    assert company_news.call_count == 0  # the first news source answered


def test_finnhub_news_serves_when_alphavantage_is_rate_limited(tmp_path, vendors, requests_mock):
    av, fh = vendors
    requests_mock.get(AV, json=load("alphavantage/note_burst_per_minute.json"), headers=JSON)
    bodies = {"AAPL": load("finnhub/company_news_aapl.json"), "MSFT": []}
    requests_mock.get(f"{FH}/company-news", json=lambda r, c: bodies[r.qs["symbol"][0].upper()], headers=JSON)
    got = cycle_sentiment(tmp_path, [BarsOnly(), av, fh])
    items = fh.get_news(["AAPL", "MSFT"], *news_window(NOW, SETTINGS.news_half_life_hours))
    assert items and {i.source for i in items} == {"finnhub"}
    want = expected(items)
    assert (got["AAPL"]["score"], got["AAPL"]["confidence"]) == pytest.approx(want["AAPL"])
    assert got["AAPL"]["confidence"] > 0 and got["MSFT"]["confidence"] == 0  # no news about MSFT
