"""Trading fixtures: a migrated SQLite store in tmp_path, its ledger, a simulated broker, a recording broker
wrapper that injects faults, and helpers for cycle instants, bars and news."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pandas as pd
import pytest

from airflow_provider_portfolio.market.news import NewsItem
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.brokers import OrderRequest, OrderState
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker

NEW_YORK = "America/New_York"


@pytest.fixture
def store(tmp_path) -> PortfolioStore:
    s = PortfolioStore.for_sqlite_file(tmp_path / "portfolio.db")
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def ledger(store) -> TradingLedger:
    return TradingLedger(store)


@pytest.fixture
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=7)


def at(day: str, hour: int = 15, minute: int = 0, tz: str = NEW_YORK) -> datetime:
    """``day`` at ``hour:minute`` New York time (by default), as an aware UTC datetime."""
    local = pd.Timestamp(day).tz_localize(tz) + pd.Timedelta(hours=hour, minutes=minute)
    return local.tz_convert("UTC").to_pydatetime()


def history(market: SyntheticMarket, symbols, now: datetime, days: int = 200, timeframe: str = "1Day") -> pd.DataFrame:
    """The market's bars of ``symbols`` from ``days`` before ``now`` up to ``now``'s date (still forming ones too:
    the cycle drops them)."""
    return market.panel(list(symbols), (now - timedelta(days=days)).date(), now.date(), timeframe)


def headlines(scores: dict[str, float], now: datetime, count: int = 3) -> list[NewsItem]:
    """``count`` fresh items per symbol with the given sentiment score: a strong, confident sentiment signal."""
    return [NewsItem(symbol, now - timedelta(minutes=30 + 10 * k), f"{symbol} news {k}", score, "test")
            for symbol, score in scores.items() for k in range(count)]


@contextlib.contextmanager
def held_by_another_cycle(ledger: TradingLedger, account: str, owner: str) -> Iterator[None]:
    """Hold ``account``'s lock from another thread (another cycle, as far as the lock can tell) for the block."""
    holding, release = threading.Event(), threading.Event()

    def other_cycle() -> None:
        with ledger.account_lock(account, owner=owner):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=other_cycle)
    thread.start()
    try:
        assert holding.wait(10), "the other cycle never got the lock"
        yield
    finally:
        release.set()
        thread.join()


class BrokerWrapper:
    """A broker that hands every call to ``inner``: subclasses override what they watch or break."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.account = inner.account
        self.kind = inner.kind

    def submit(self, request: OrderRequest) -> OrderState:
        return self.inner.submit(request)

    def sync(self, bars, *, closed=None, skip_run=None, exchange="XNYS"):
        return self.inner.sync(bars, closed=closed, skip_run=skip_run, exchange=exchange)

    def lookup(self, client_order_id):
        return self.inner.lookup(client_order_id)

    def account_state(self):
        return self.inner.account_state()

    def assets(self, symbols):
        return self.inner.assets(symbols)

    def snapshot(self, ts, run_id):
        return self.inner.snapshot(ts, run_id)


class RecordingBroker(BrokerWrapper):
    """A broker wrapper: counts the submits it is asked for and the acceptances they cause at the inner simulated
    broker (an order moving from ``pending_submit`` to accepted), and injects faults.

    :ivar before: symbol -> exception raised once, before the request reaches the inner broker.
    :ivar after: symbol -> exception raised once, after the inner broker accepted the order.
    :ivar always: symbol -> exception raised on every submit, before the request reaches the inner broker.
    """

    def __init__(self, inner: SimulatedBroker) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.before: dict[str, Exception] = {}
        self.after: dict[str, Exception] = {}
        self.always: dict[str, Exception] = {}

    def submit(self, request: OrderRequest) -> OrderState:
        cid = request.client_order_id
        self.calls[cid] += 1
        if request.symbol in self.always:
            raise self.always[request.symbol]
        if request.symbol in self.before:
            raise self.before.pop(request.symbol)
        status_before = self.inner.ledger.order(self.account, cid)["status"]
        state = self.inner.submit(request)
        if status_before == "pending_submit" and state.status != "pending_submit":
            self.accepted[cid] += 1
        if request.symbol in self.after:
            raise self.after.pop(request.symbol)
        return state


@pytest.fixture
def broker(ledger) -> RecordingBroker:
    return RecordingBroker(SimulatedBroker(ledger, name="test", initial_cash=100_000.0, slippage_bps=5.0,
                                           commission_bps=1.0, commission_per_order=0.5))
