"""The per-asset agents' decision step: the bars come from the store, and with a real broker the target is
sized at the latest quote where a source has one (the agents' "current price"); never with the simulated one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_portfolio.market.sources import Quote
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.market.timing import closed_bars, started_bars
from airflow_provider_portfolio.operators.agents import _Agent, _signal_dict
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.signals import Signal
from tests.trading.conftest import at, history

NOW = at("2024-06-04", 11)
SYMBOL = "AAPL"


class PaperLike(SimulatedBroker):
    """A broker that is not the simulated one, as far as the agent can tell (the book is still simulated)."""

    kind = "paper"


class Quoting:
    name = "quotes"

    def __init__(self, quote: Quote) -> None:
        self.quote, self.asked = quote, 0

    def get_bars(self, symbols, start, end, timeframe="1Day"):
        return SyntheticMarket(seed=7).get_bars(symbols, start, end, timeframe)

    def get_quotes(self, symbols):
        self.asked += 1
        return {SYMBOL: self.quote}


def strong(name: str) -> dict:
    return _signal_dict(Signal(name, [0.9], [0.9], ["strong"]))


def run_decision(tmp_path, monkeypatch, broker_cls, quote_move: float):
    store = PortfolioStore.for_sqlite_file(tmp_path / "agent.db")
    store.migrate()
    ledger = TradingLedger(store)
    broker = broker_cls(ledger, name="agent")
    started = started_bars(history(SyntheticMarket(seed=7), [SYMBOL], NOW), NOW)
    closed = closed_bars(started, NOW, "1Day")
    store.upsert_bars(closed)
    last_close = float(closed["close"].iloc[-1])
    source = Quoting(Quote(SYMBOL, last_close * (1 + quote_move), NOW - timedelta(seconds=5), "quotes"))
    agent = _Agent({"symbol": SYMBOL, "timeframe": "1Day", "weights": {"technical": 0.4, "sentiment": 0.6},
                    "exchange": "XNYS", "risk_limits": {"min_confidence": 0.3}, "max_trades_per_day": None,
                    "sizing": "fixed_fraction", "fraction": 0.05, "min_score": 0.05, "sources": ["quotes"]})
    monkeypatch.setattr(agent, "open", lambda: (store, ledger, broker))
    monkeypatch.setattr(agent, "sources", lambda settings: [source])
    monkeypatch.setattr(agent, "ids", lambda: {"dag_id": "agent_aapl", "run_id": "r1"})
    forming = started[started["ts"] > closed["ts"].max()]
    data = {"now": NOW.isoformat(), "bars": len(closed), "first_bar": closed["ts"].min().isoformat(),
            "last_bar": closed["ts"].max().isoformat(), "missing": {},
            "forming": forming.assign(ts=forming["ts"].map(lambda t: t.isoformat())).to_dict("records")}
    decided = agent.decide(data, strong("technical"), strong("sentiment"))
    return decided, ledger.decisions("agent_aapl", "r1")[0], last_close, source


def test_with_a_real_broker_the_agent_sizes_at_the_quote(tmp_path, monkeypatch):
    decided, stored, last_close, source = run_decision(tmp_path, monkeypatch, PaperLike, 0.01)
    assert source.asked == 1 and decided["action"] == "buy"
    assert stored["price"] == pytest.approx(last_close * 1.01)
    assert stored["order_qty"] == pytest.approx(int(0.05 * 0.9 * 100_000 / (last_close * 1.01)), abs=1)


def test_a_quote_far_from_the_last_close_is_not_used(tmp_path, monkeypatch):
    _, stored, last_close, source = run_decision(tmp_path, monkeypatch, PaperLike, 0.8)
    assert source.asked == 1 and stored["price"] == pytest.approx(last_close)


def test_the_simulated_broker_never_asks_for_a_quote(tmp_path, monkeypatch):
    _, stored, last_close, source = run_decision(tmp_path, monkeypatch, SimulatedBroker, 0.01)
    assert source.asked == 0 and stored["price"] == pytest.approx(last_close)
