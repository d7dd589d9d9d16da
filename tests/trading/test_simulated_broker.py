"""The simulated broker: fills at the next bar's open with slippage and commission, its book in the ledger."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import to_bar_frame
from airflow_provider_portfolio.trading.brokers import (
    AssetInfo,
    Broker,
    BrokerRejectedError,
    OrderRequest,
    OrderState,
)
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker

D0, D1, D2, D3 = (pd.Timestamp(d, tz="UTC") for d in ("2024-03-01", "2024-03-04", "2024-03-05", "2024-03-06"))
NOW = datetime(2024, 3, 4, 20, 0, tzinfo=timezone.utc)


def _bars(symbol: str, rows: list[tuple[pd.Timestamp, float, float]]) -> pd.DataFrame:
    """Daily bars of ``symbol`` from (ts, open, close) rows."""
    return to_bar_frame(pd.DataFrame({
        "symbol": symbol, "timeframe": "1Day", "ts": [r[0] for r in rows], "open": [r[1] for r in rows],
        "high": [max(r[1], r[2]) + 1 for r in rows], "low": [min(r[1], r[2]) - 1 for r in rows],
        "close": [r[2] for r in rows], "volume": 1000.0, "source": "test"}))


AAPL = _bars("AAPL", [(D0, 90.0, 91.0), (D1, 100.0, 101.0), (D2, 110.0, 112.0), (D3, 120.0, 118.0)])


@pytest.fixture
def sim(ledger) -> SimulatedBroker:
    return SimulatedBroker(ledger, name="hand", initial_cash=10_000.0, slippage_bps=10.0, commission_bps=5.0,
                           commission_per_order=1.0, untradable=["gme"])


def _order(sim: SimulatedBroker, cid: str, symbol: str = "AAPL", side: str = "buy", qty: float = 10.0,
           ref_price: float = 100.0, bar_ts=D1, *, submit: bool = True, placed=NOW) -> OrderRequest:
    request = OrderRequest(cid, symbol, side, qty, ref_price, bar_ts.to_pydatetime())
    sim.ledger.record_intents([{
        "account": sim.account, "client_order_id": cid, "dag_id": "dag", "run_id": "run", "symbol": symbol,
        "side": side, "qty": qty, "ref_price": ref_price, "bar_ts": bar_ts, "created_at": placed}])
    if submit:
        state = sim.submit(request)
        assert (state.status, state.broker_order_id) == ("new", f"sim-{cid}")
    return request


def test_is_a_broker_with_its_own_book(ledger):
    sim = SimulatedBroker(ledger, name=" desk ", initial_cash=5_000.0)
    assert isinstance(sim, Broker)
    assert (sim.account, sim.kind) == ("simulated:desk", "simulated")
    assert ledger.cash("simulated:desk") == (5_000.0, 5_000.0)
    again = SimulatedBroker(ledger, name="desk", initial_cash=1.0)  # the book exists: its cash stands
    assert ledger.cash(again.account) == (5_000.0, 5_000.0)
    for kwargs in ({"name": ""}, {"slippage_bps": -1.0}, {"commission_bps": float("nan")},
                   {"commission_per_order": True}, {"initial_cash": 0.0}):
        with pytest.raises(InvalidInputError):
            SimulatedBroker(ledger, **kwargs)


def test_commission_is_per_order_plus_basis_points_of_notional(sim):
    assert sim.commission(1000.0) == pytest.approx(1.0 + 5.0 * 1000.0 / 10_000, abs=1e-12)  # 1.50
    assert sim.commission(-1000.0) == sim.commission(1000.0)


def test_buy_fills_at_the_open_of_the_first_later_bar(sim, ledger):
    request = _order(sim, "c1", bar_ts=D1)
    assert sim.sync(AAPL[AAPL.ts <= D1]) == []  # no bar after the order's bar yet: no fill
    assert ledger.order(sim.account, "c1")["status"] == "new"
    assert ledger.cash(sim.account)[0] == 10_000.0

    changed = sim.sync(AAPL)
    price = 110.0 * (1 + 10.0 / 10_000)  # D2's open (the first bar after D1, not D3's), 10 bps worse: 110.11
    commission = 1.0 + 5.0 * (10 * price) / 10_000  # 1 + 5 bps of 1101.10 = 1.55055
    assert price == pytest.approx(110.11, abs=1e-12) and commission == pytest.approx(1.55055, abs=1e-12)
    assert changed == [OrderState("c1", "filled", "sim-c1", 10.0, pytest.approx(110.11, abs=1e-12))]
    order = ledger.order(sim.account, "c1")
    assert (order["status"], order["filled_qty"]) == ("filled", 10.0)
    assert order["filled_avg_price"] == pytest.approx(110.11, abs=1e-12)
    [fill] = ledger.fills(sim.account)
    assert fill["bar_ts"] == D2 and fill["commission"] == pytest.approx(1.55055, abs=1e-12)
    assert ledger.cash(sim.account)[0] == pytest.approx(10_000.0 - 1101.1 - 1.55055, abs=1e-9)  # 8897.34945
    position = ledger.positions(sim.account)["AAPL"]
    assert (position.qty, position.avg_price) == (10.0, pytest.approx(110.11, abs=1e-12))
    assert (position.mark_price, position.mark_ts) == (118.0, D3)  # marked at the last close seen

    assert sim.sync(AAPL) == []  # filled once
    assert len(ledger.fills(sim.account)) == 1
    assert sim.submit(request).status == "filled"  # asking again for the id finds the filled order


def test_sell_fills_below_the_open(sim, ledger):
    evening = pd.Timedelta(hours=21)  # each order placed after its decision bar's close
    _order(sim, "c1", bar_ts=D0, placed=D0 + evening)  # buys at D1's open: 100 * 1.001 = 100.1
    _order(sim, "c2", side="sell", qty=4.0, ref_price=112.0, bar_ts=D2, placed=D2 + evening)  # D3's open: 120 * 0.999
    sim.sync(AAPL)
    fills = {f["client_order_id"]: f for f in ledger.fills(sim.account)}
    assert fills["c1"]["price"] == pytest.approx(100.1, abs=1e-12) and fills["c1"]["bar_ts"] == D1
    assert fills["c2"]["price"] == pytest.approx(119.88, abs=1e-12) and fills["c2"]["bar_ts"] == D3
    assert fills["c2"]["commission"] == pytest.approx(1.0 + 5.0 * 4 * 119.88 / 10_000, abs=1e-12)  # 1.23976
    cash = 10_000.0 - 1001.0 - (1.0 + 0.5005) + 479.52 - 1.23976
    assert ledger.cash(sim.account)[0] == pytest.approx(cash, abs=1e-9)
    assert ledger.positions(sim.account)["AAPL"].qty == 6.0
    assert ledger.positions(sim.account)["AAPL"].avg_price == pytest.approx(100.1, abs=1e-12)


def test_a_fill_on_the_last_bar_is_marked_at_that_bar_close(sim, ledger):
    _order(sim, "c1", bar_ts=D1)
    sim.sync(AAPL[AAPL.ts <= D2])  # fills at D2's open (110.11); D2 is also the last close seen (112)
    position = ledger.positions(sim.account)["AAPL"]
    assert (position.mark_price, position.mark_ts) == (112.0, D2)
    state = sim.account_state()
    assert state.equity == pytest.approx(state.cash + 10 * 112.0, abs=1e-9)


def test_crypto_fills_fractions(sim, ledger):
    btc = _bars("BTC/USD", [(D1, 60_000.0, 61_000.0), (D2, 62_000.0, 61_500.0)])
    _order(sim, "c1", "BTC/USD", qty=0.015, ref_price=61_000.0, bar_ts=D1)
    sim.sync(pd.concat([AAPL, btc], ignore_index=True))
    [fill] = ledger.fills(sim.account)
    assert (fill["qty"], fill["price"]) == (0.015, pytest.approx(62_062.0, abs=1e-9))
    assert ledger.positions(sim.account)["BTC/USD"].qty == 0.015


def test_pending_submit_orders_are_never_filled_by_sync(sim, ledger):
    _order(sim, "c1", submit=False)  # recorded, never sent: only submit() settles it
    assert sim.sync(AAPL) == []
    assert ledger.order(sim.account, "c1")["status"] == "pending_submit"
    assert ledger.fills(sim.account) == [] and ledger.positions(sim.account) == {}
    assert sim.sync(AAPL.iloc[:0]) == []  # no bars at all: nothing to do


def test_submit_twice_is_one_order(sim, ledger):
    request = _order(sim, "c1", submit=False)
    first = sim.submit(request)
    second = sim.submit(request)
    assert first == second == OrderState("c1", "new", "sim-c1", 0.0, None, None)
    assert len(ledger.orders(sim.account)) == 1
    other = OrderRequest("c1", "AAPL", "sell", 10.0, 100.0, D1.to_pydatetime())
    with pytest.raises(BrokerRejectedError, match="already names another order"):
        sim.submit(other)
    with pytest.raises(InvalidInputError, match="was not recorded before submission"):
        sim.submit(OrderRequest("c9", "AAPL", "buy", 1.0, 100.0, D1.to_pydatetime()))


def test_untradable_symbol_is_rejected(sim, ledger):
    request = _order(sim, "c1", "GME", submit=False)
    with pytest.raises(BrokerRejectedError, match="GME is not tradable at the simulated broker"):
        sim.submit(request)
    assert ledger.order(sim.account, "c1")["status"] == "pending_submit"  # the cycle records the rejection


def test_assets(sim):
    assets = sim.assets(["AAPL", "BTC/USD", "GME"])
    assert assets["AAPL"] == AssetInfo(tradable=True, shortable=True, fractionable=False)
    assert assets["BTC/USD"] == AssetInfo(tradable=True, shortable=False, fractionable=True)
    assert assets["GME"].tradable is False and "not tradable" in assets["GME"].reason


def test_account_state_buying_power_is_cash_less_open_buys(sim, ledger):
    _order(sim, "c1", qty=10.0, ref_price=100.0, bar_ts=D1)  # open buy: 1000 reserved
    _order(sim, "c2", "MSFT", qty=5.0, ref_price=50.0, submit=False)  # pending_submit: not at the book, reserves nothing
    _order(sim, "c3", "TSLA", side="sell", qty=3.0, ref_price=200.0)  # sells reserve nothing
    _order(sim, "c4", "GME", qty=1.0, ref_price=20.0, submit=False)
    ledger.update_order(sim.account, "c4", status="rejected")  # closed: reserves nothing
    state = sim.account_state()
    assert (state.cash, state.equity, state.buying_power) == (10_000.0, 10_000.0, 9_000.0)
    assert state.positions == {} and state.start_of_day_equity is None

    sim.sync(AAPL)  # c1 fills at 110.11; TSLA has no bars
    cash = ledger.cash(sim.account)[0]
    state = sim.account_state()
    assert state.cash == cash
    assert state.buying_power == pytest.approx(cash, abs=1e-9)
    assert state.equity == pytest.approx(cash + 10 * 118.0, abs=1e-9)
    assert state.positions == {"AAPL": 10.0}


def test_an_order_never_fills_at_a_price_from_before_it_was_placed(sim):
    # Decided at 15:00 New York on D1 (20:00 UTC) on the last CLOSED daily bar, D0: D1's open (09:30) was
    # before the order, so the fill is at D2's open.
    request = _order(sim, "late", bar_ts=D0)
    assert request.bar_ts < NOW
    sim.sync(AAPL)
    (fill,) = sim.ledger.fills(sim.account)
    assert fill["price"] == pytest.approx(110.0 * (1 + 10 / 10_000)) and fill["bar_ts"] == D2
