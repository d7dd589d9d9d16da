"""The trading job's plain-Python entry point: trade_universe (inputs fetched from sources, stored forecasts,
one cycle), and the quotes a live cycle sizes at."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.sources import Quote
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.cycle import QUOTE_GRACE, quote_prices, run_cycle
from airflow_provider_portfolio.trading.risk import RiskLimits
from airflow_provider_portfolio.trading.session import fetch_inputs, trade_universe
from airflow_provider_portfolio.trading.settings import CycleSettings
from tests.trading.conftest import at, headlines, history

SYMBOLS = ["AAPL", "MSFT", "BTC/USD"]
SETTINGS = CycleSettings(weights={"technical": 0.4, "sentiment": 0.6}, min_score=0.05,
                         limits=RiskLimits(min_confidence=0.3))
NOW = at("2024-06-04", 15)


class Desk:
    """A source with the synthetic market's bars, fixed news and (optionally) quotes."""

    name = "desk"

    def __init__(self, news=(), quotes=None) -> None:
        self.market = SyntheticMarket(seed=7)
        self.news, self.quotes = list(news), quotes

    def get_bars(self, symbols, start, end, timeframe="1Day"):
        return self.market.get_bars(symbols, start, end, timeframe)

    def get_news(self, symbols, start, end):
        return [n for n in self.news if n.symbol in symbols and start <= n.published <= end]


class QuotingDesk(Desk):
    def get_quotes(self, symbols):
        return {s: q for s, q in self.quotes.items() if s in symbols}


def new_store(path) -> PortfolioStore:
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    return store


def test_trade_universe_is_the_cycle_on_the_inputs_its_sources_give(tmp_path):
    news = headlines({"AAPL": 0.9, "MSFT": -0.9, "BTC/USD": 0.8}, NOW)
    job_store, cycle_store = new_store(tmp_path / "job.db"), new_store(tmp_path / "cycle.db")
    job_broker = SimulatedBroker(TradingLedger(job_store))
    report = trade_universe(SYMBOLS, store=job_store, sources=[Desk(news)], broker=job_broker, now=NOW,
                            dag_id="desk", run_id="r1", settings=SETTINGS)
    ledger = TradingLedger(cycle_store)
    direct = run_cycle(SYMBOLS, history(SyntheticMarket(seed=7), SYMBOLS, NOW), NOW, broker=SimulatedBroker(ledger),
                       ledger=ledger, dag_id="desk", run_id="r1", settings=SETTINGS, news=news)

    def decisions(ledger):
        return sorted((d["symbol"], d["action"], d["target_qty"], d["price"]) for d in ledger.decisions("desk", "r1"))

    assert decisions(TradingLedger(job_store)) == decisions(ledger)
    assert report.decided == direct.decided == 3 and len(report.submitted) == len(direct.submitted) >= 2
    assert report.equity == direct.equity


def test_fetch_inputs_names_the_symbols_no_source_served(tmp_path):
    class Nothing:
        name = "nothing"

        def get_bars(self, symbols, start, end, timeframe="1Day"):
            raise InvalidInputError("unknown symbols")

    inputs = fetch_inputs([Nothing()], ["AAPL"], NOW, SETTINGS)
    assert inputs.bars.empty and "nothing: InvalidInputError: unknown symbols" in inputs.missing["AAPL"]
    assert inputs.no_news == "no source has a news feed"


def test_the_broker_must_trade_on_the_given_store(tmp_path):
    store, other = new_store(tmp_path / "a.db"), new_store(tmp_path / "b.db")
    with pytest.raises(InvalidInputError, match="ledger must be the given store's"):
        trade_universe(["AAPL"], store=store, sources=[Desk()], broker=SimulatedBroker(TradingLedger(other)),
                       now=NOW, dag_id="desk", run_id="r1")


def last_close(symbol: str) -> tuple[float, pd.Timestamp]:
    bars = history(SyntheticMarket(seed=7), [symbol], NOW)
    from airflow_provider_portfolio.market.timing import closed_bars

    closed = closed_bars(bars, NOW, "1Day")
    return float(closed["close"].iloc[-1]), closed["ts"].iloc[-1]


@pytest.mark.parametrize(("stamp", "move", "used"), [
    (NOW - timedelta(minutes=1), 0.02, True),  # a live quote: sized at it
    (NOW + QUOTE_GRACE - timedelta(seconds=1), -0.01, True),  # fetched a moment after the instant
    (NOW + timedelta(hours=3), 0.02, False),  # later than the cycle's instant (a back-fill): look-ahead
    (NOW - timedelta(days=3), 0.02, False),  # older than the last closed bar
    (NOW - timedelta(minutes=1), 0.9, False),  # a bad tick
])
def test_a_live_cycle_sizes_at_the_quote_only_when_it_is_fresh_and_plausible(tmp_path, stamp, move, used):
    close, _ = last_close("AAPL")
    quote = Quote("AAPL", close * (1 + move), stamp, "alpaca", bid=close * (1 + move) - 0.01)
    store = new_store(tmp_path / "q.db")
    ledger = TradingLedger(store)
    trade_universe(["AAPL"], store=store, sources=[QuotingDesk(headlines({"AAPL": 0.9}, NOW), {"AAPL": quote})],
                   broker=SimulatedBroker(ledger), now=NOW, dag_id="desk", run_id="r1", settings=SETTINGS,
                   quotes=True)
    [decision] = ledger.decisions("desk", "r1")
    assert decision["action"] == "buy"
    assert decision["price"] == pytest.approx(quote.price if used else close)


def test_a_simulated_cycle_asks_for_no_quote_by_default(tmp_path):
    class Watched(QuotingDesk):
        asked = 0

        def get_quotes(self, symbols):
            Watched.asked += 1
            return {}

    store = new_store(tmp_path / "w.db")
    trade_universe(["AAPL"], store=store, sources=[Watched(quotes={})], broker=SimulatedBroker(TradingLedger(store)),
                   now=NOW, dag_id="desk", run_id="r1", settings=SETTINGS)
    assert Watched.asked == 0


def test_quote_prices_names_why_a_quote_is_not_used():
    end = int(pd.Timestamp(NOW - timedelta(hours=1)).value)
    quotes = {"A": Quote("A", 101.0, NOW, "x"), "B": Quote("B", 150.0, NOW, "x"),
              "C": Quote("C", 100.0, NOW - timedelta(hours=2), "x"), "D": Quote("D", 100.0, NOW, "x")}
    prices, refused = quote_prices(quotes, {"A": 100.0, "B": 100.0, "C": 100.0}, {"A": end, "B": end, "C": end},
                                   NOW, 0.2)
    assert prices == {"A": 101.0}
    assert "max_abs_return 0.2" in refused["B"] and "before the last closed bar ended" in refused["C"]
    assert "no last close" in refused["D"]


# The quote rule on each kind of bar: daily above; here 30-minute bars inside the NYSE session (the last closed
# bar ended at 15:00, the cycle runs at 15:10) and hourly bars of a crypto pair on a Sunday night (24/7).
BAR_KINDS = {
    "30min": ("AAPL", "30Min", at("2024-06-04", 15, 10), timedelta(minutes=15)),
    "crypto-24/7": ("BTC/USD", "1Hour", at("2024-06-09", 3, 20, tz="UTC"), timedelta(minutes=30)),
}


@pytest.mark.parametrize("kind", BAR_KINDS)
@pytest.mark.parametrize(("case", "used"), [("live", True), ("back-fill", False), ("stale", False),
                                            ("bad-tick", False)])
def test_the_quote_rule_on_intraday_and_crypto_bars(tmp_path, kind, case, used):
    from airflow_provider_portfolio.market.timing import closed_bars

    symbol, timeframe, now, before_last_end = BAR_KINDS[kind]
    closed = closed_bars(history(SyntheticMarket(seed=7), [symbol], now, days=30, timeframe=timeframe), now,
                         timeframe)
    close = float(closed["close"].iloc[-1])
    stamp = {"live": now - timedelta(seconds=30), "back-fill": now + timedelta(hours=3),
             "stale": now - before_last_end, "bad-tick": now - timedelta(seconds=30)}[case]
    quote = Quote(symbol, close * (1.9 if case == "bad-tick" else 1.01), stamp, "alpaca")
    store = new_store(tmp_path / "q.db")
    ledger = TradingLedger(store)
    settings = CycleSettings(timeframe=timeframe, weights={"technical": 0.4, "sentiment": 0.6}, min_score=0.05,
                             limits=RiskLimits(min_confidence=0.3))
    trade_universe([symbol], store=store, sources=[QuotingDesk(headlines({symbol: 0.9}, now), {symbol: quote})],
                   broker=SimulatedBroker(ledger), now=now, dag_id="desk", run_id="r1", settings=settings,
                   quotes=True)
    [decision] = ledger.decisions("desk", "r1")
    assert decision["action"] == "buy", decision
    assert decision["price"] == pytest.approx(quote.price if used else close)
