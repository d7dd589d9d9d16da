"""The trading ledger on SQLite and PostgreSQL: accounts, orders, fills, positions, cash, equity, decisions."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import event, func, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.accounting import apply_fill, value_book

ACCOUNT = "simulated:test"
T0 = datetime(2024, 3, 4, 20, 0, tzinfo=timezone.utc)
BAR = datetime(2024, 3, 4, tzinfo=timezone.utc)


@pytest.fixture
def ledger(migrated) -> TradingLedger:
    ledger = TradingLedger(migrated)
    ledger.open_account(ACCOUNT, 10_000.0)
    return ledger


def _intent(cid: str, symbol: str = "AAPL", side: str = "buy", qty: float = 10.0, *, ref_price: float = 100.0,
            created_at: datetime = T0, bar_ts: datetime = BAR, run_id: str = "run-1") -> dict:
    return {"account": ACCOUNT, "client_order_id": cid, "dag_id": "dag", "run_id": run_id, "symbol": symbol,
            "side": side, "qty": qty, "ref_price": ref_price, "bar_ts": bar_ts, "created_at": created_at}


def _accepted(ledger: TradingLedger, cid: str, symbol: str = "AAPL", side: str = "buy", qty: float = 10.0) -> None:
    ledger.record_intents([_intent(cid, symbol, side, qty)])
    assert ledger.accept(ACCOUNT, cid, f"b-{cid}")["status"] == "new"


def _fill(ledger: TradingLedger, cid: str, symbol: str, side: str, qty: float, price: float,
          commission: float = 0.0):
    _accepted(ledger, cid, symbol, side, qty)
    return ledger.fill(ACCOUNT, cid, price=price, commission=commission, bar_ts=BAR + timedelta(days=1), rule=apply_fill)


def _snapshot(ledger: TradingLedger, ts, run_id: str) -> dict[str, float]:
    """The simulated broker's snapshot: the book read in one transaction, valued by the accounting, written."""
    book = ledger.book(ACCOUNT)
    worth = value_book(book.cash, book.positions.values())
    return ledger.snapshot(ACCOUNT, ts, run_id, cash=worth.cash, equity=worth.equity,
                           positions_value=worth.positions_value)


def _count(store: PortfolioStore, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


# -- accounts --------------------------------------------------------------------------------------------

def test_open_account_is_idempotent_and_keeps_the_cash(migrated):
    ledger = TradingLedger(migrated)
    assert ledger.open_account("simulated:a", 1_000.0) == 1_000.0
    ledger.record_intents([{**_intent("c1"), "account": "simulated:a"}])
    ledger.accept("simulated:a", "c1", "b1")
    ledger.fill("simulated:a", "c1", price=50.0, commission=1.0, bar_ts=BAR, rule=apply_fill)
    assert ledger.cash("simulated:a") == (499.0, 1_000.0)
    assert ledger.open_account("simulated:a", 5_000.0) == 499.0  # exists: neither reset nor re-funded
    assert ledger.cash("simulated:a") == (499.0, 1_000.0)
    assert _count(migrated, schema.accounts) == 1


def test_real_broker_account_has_no_book(migrated):
    ledger = TradingLedger(migrated)
    assert ledger.open_account("alpaca:paper", None) is None
    with pytest.raises(StoreError, match="has no simulated book"):
        ledger.cash("alpaca:paper")
    with pytest.raises(StoreError, match="has no simulated book"):
        ledger.cash("simulated:never-opened")
    for bad in (0, -5.0, float("nan"), True, "100"):
        with pytest.raises(InvalidInputError, match="initial_cash"):
            ledger.open_account("simulated:b", bad)


def test_ledger_on_a_version_2_store_asks_for_migrate(store, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])  # a store made by the released version 2
    assert store.migrate() == 2
    ledger = TradingLedger(store)
    with pytest.raises(StoreError, match=r"no trading tables \(schema version 2\); call migrate\(\) first"):
        ledger.open_account(ACCOUNT, 1_000.0)
    with pytest.raises(StoreError, match=r"call migrate\(\) first"):
        ledger.record_intents([_intent("c1")])
    with pytest.raises(StoreError, match=r"call migrate\(\) first"):
        ledger.claim_decisions([_decision("AAPL", "run-1")])
    monkeypatch.undo()
    assert store.migrate() == schema.latest_version() >= 3
    assert ledger.open_account(ACCOUNT, 1_000.0) == 1_000.0


# -- orders ----------------------------------------------------------------------------------------------

def test_record_intents_inserts_or_ignores(ledger):
    ledger.record_intents([_intent("c1", qty=10.0)])
    ledger.record_intents([_intent("c1", qty=99.0, side="sell", run_id="run-2"), _intent("c2", "MSFT")])
    orders = {o["client_order_id"]: o for o in ledger.orders(ACCOUNT)}
    assert sorted(orders) == ["c1", "c2"]
    first = orders["c1"]
    assert (first["qty"], first["side"], first["run_id"], first["status"]) == (10.0, "buy", "run-1", "pending_submit")
    assert first["bar_ts"] == BAR and first["created_at"] == T0
    assert first["broker_order_id"] is None and first["filled_qty"] is None
    assert _count(ledger.store, schema.orders) == 2


def test_accept_moves_pending_submit_to_new_once(ledger):
    ledger.record_intents([_intent("c1")])
    first = ledger.accept(ACCOUNT, "c1", "broker-1")
    assert (first["status"], first["broker_order_id"], first["filled_qty"]) == ("new", "broker-1", 0.0)
    again = ledger.accept(ACCOUNT, "c1", "broker-2")  # the broker's uniqueness of ids: the first order stands
    assert (again["status"], again["broker_order_id"]) == ("new", "broker-1")
    ledger.record_intents([_intent("c2")])
    ledger.update_order(ACCOUNT, "c2", status="rejected", reason="no")
    assert ledger.accept(ACCOUNT, "c2", "broker-3")["status"] == "rejected"  # past pending_submit: as it is
    with pytest.raises(StoreError, match="no order 'nope'"):
        ledger.accept(ACCOUNT, "nope", "x")


def test_update_order_checks_fields_and_existence(ledger):
    ledger.record_intents([_intent("c1")])
    ledger.update_order(ACCOUNT, "c1", status="new", broker_order_id="b1")
    assert ledger.order(ACCOUNT, "c1")["broker_order_id"] == "b1"
    with pytest.raises(InvalidInputError, match=r"unknown order field\(s\) \['qty'\]"):
        ledger.update_order(ACCOUNT, "c1", qty=5.0)
    with pytest.raises(StoreError, match="no order 'c9'"):
        ledger.update_order(ACCOUNT, "c9", status="new")
    assert ledger.order(ACCOUNT, "c9") is None


def test_orders_filters_open_since_and_symbols(ledger):
    ledger.record_intents([_intent("c1", created_at=T0), _intent("c2", "MSFT", created_at=T0 + timedelta(hours=1)),
                           _intent("c3", "TSLA", created_at=T0 + timedelta(hours=2))])
    ledger.update_order(ACCOUNT, "c3", status="canceled")
    assert [o["client_order_id"] for o in ledger.orders(ACCOUNT)] == ["c1", "c2", "c3"]
    assert [o["client_order_id"] for o in ledger.orders(ACCOUNT, open_only=True)] == ["c1", "c2"]
    assert [o["client_order_id"] for o in ledger.orders(ACCOUNT, since=T0 + timedelta(minutes=30))] == ["c2", "c3"]
    assert [o["client_order_id"] for o in ledger.orders(ACCOUNT, symbols=["MSFT", "TSLA"])] == ["c2", "c3"]
    assert ledger.orders("simulated:other") == []


def test_orders_per_symbol_counts_since_by_created_at_and_ignores_not_placed(ledger):
    day = datetime(2024, 3, 4, 5, 0, tzinfo=timezone.utc)
    ledger.record_intents([
        _intent("old", "AAPL", created_at=day - timedelta(seconds=1)),  # the day before: not counted
        _intent("a1", "AAPL", created_at=day),  # at the instant: counted
        _intent("a2", "AAPL", created_at=day + timedelta(hours=3)),
        _intent("m1", "MSFT", created_at=day + timedelta(hours=4)),
        _intent("m2", "MSFT", created_at=day + timedelta(hours=5)),
        _intent("t1", "TSLA", created_at=day + timedelta(hours=5)),
    ])
    ledger.update_order(ACCOUNT, "m2", status="not_placed")  # never reached the broker
    ledger.update_order(ACCOUNT, "a2", status="rejected", reason="broker said no")  # reached it: counts
    ledger.update_order(ACCOUNT, "t1", status="not_placed")
    assert ledger.orders_per_symbol(ACCOUNT, day) == {"AAPL": 2, "MSFT": 1}
    assert ledger.orders_per_symbol(ACCOUNT, day + timedelta(hours=4)) == {"MSFT": 1}
    assert ledger.orders_per_symbol("simulated:other", day) == {}


# -- fills, positions and cash ----------------------------------------------------------------------------

def test_fill_moves_order_fill_position_and_cash_together(ledger):
    _accepted(ledger, "c1", "AAPL", "buy", 10.0)
    result = ledger.fill(ACCOUNT, "c1", price=101.5, commission=2.25, bar_ts=BAR + timedelta(days=1), rule=apply_fill)
    assert result is not None
    assert (result.symbol, result.side, result.qty, result.price, result.commission) == ("AAPL", "buy", 10.0, 101.5,
                                                                                          2.25)
    assert result.cash_after == pytest.approx(10_000.0 - 1015.0 - 2.25, abs=1e-9)
    assert ledger.cash(ACCOUNT) == (pytest.approx(8982.75, abs=1e-9), 10_000.0)
    order = ledger.order(ACCOUNT, "c1")
    assert (order["status"], order["filled_qty"], order["filled_avg_price"]) == ("filled", 10.0, 101.5)
    [fill] = ledger.fills(ACCOUNT)
    assert (fill["client_order_id"], fill["symbol"], fill["side"], fill["qty"], fill["price"], fill["commission"]) \
        == ("c1", "AAPL", "buy", 10.0, 101.5, 2.25)
    assert fill["bar_ts"] == BAR + timedelta(days=1)
    position = ledger.positions(ACCOUNT)["AAPL"]
    assert (position.qty, position.avg_price, position.mark_price) == (10.0, 101.5, 101.5)
    assert position.mark_ts == BAR + timedelta(days=1)


def test_second_fill_of_an_order_changes_nothing(ledger):
    _fill(ledger, "c1", "AAPL", "buy", 10.0, 100.0, commission=1.0)
    before = (ledger.cash(ACCOUNT), ledger.positions(ACCOUNT), ledger.fills(ACCOUNT), ledger.order(ACCOUNT, "c1"))
    assert ledger.fill(ACCOUNT, "c1", price=50.0, commission=0.0, bar_ts=BAR + timedelta(days=2), rule=apply_fill) is None
    after = (ledger.cash(ACCOUNT), ledger.positions(ACCOUNT), ledger.fills(ACCOUNT), ledger.order(ACCOUNT, "c1"))
    assert after == before
    assert _count(ledger.store, schema.fills) == 1


def test_fill_refuses_orders_that_are_not_open(ledger):
    ledger.record_intents([_intent("pending")])  # never accepted by the broker: nothing to fill
    assert ledger.fill(ACCOUNT, "pending", price=100.0, commission=0.0, bar_ts=BAR, rule=apply_fill) is None
    assert ledger.fill(ACCOUNT, "unknown", price=100.0, commission=0.0, bar_ts=BAR, rule=apply_fill) is None
    _accepted(ledger, "canceled")
    ledger.update_order(ACCOUNT, "canceled", status="canceled")
    assert ledger.fill(ACCOUNT, "canceled", price=100.0, commission=0.0, bar_ts=BAR, rule=apply_fill) is None
    assert ledger.cash(ACCOUNT) == (10_000.0, 10_000.0) and ledger.positions(ACCOUNT) == {}
    assert ledger.fills(ACCOUNT) == [] and ledger.order(ACCOUNT, "pending")["status"] == "pending_submit"
    _accepted(ledger, "c1")
    for price, commission in ((0.0, 0.0), (-1.0, 0.0), (float("nan"), 0.0), (100.0, -1.0), (100.0, float("inf"))):
        with pytest.raises(InvalidInputError, match="bad fill price"):
            ledger.fill(ACCOUNT, "c1", price=price, commission=commission, bar_ts=BAR, rule=apply_fill)
    assert ledger.order(ACCOUNT, "c1")["status"] == "new"


@pytest.mark.parametrize("account", ["alpaca:paper", "simulated:never-opened"])
def test_fill_in_an_account_without_a_book_fails_and_changes_nothing(migrated, account):
    """A fill needs the account's cash: without a simulated book it is refused whole, order and position untouched."""
    ledger = TradingLedger(migrated)
    if account.startswith("alpaca:"):
        ledger.open_account(account, None)
    ledger.record_intents([{**_intent("c1"), "account": account}])
    ledger.accept(account, "c1", "b1")
    with pytest.raises(StoreError, match=f"account '{account}' has no simulated book"):
        ledger.fill(account, "c1", price=100.0, commission=1.0, bar_ts=BAR, rule=apply_fill)
    assert ledger.order(account, "c1")["status"] == "new"
    assert ledger.fills(account) == [] and _count(migrated, schema.positions) == 0


def test_position_open_add_reduce_close_and_flip(ledger):
    cash = 10_000.0
    steps = [  # (side, qty, price, commission) -> expected (qty, avg_price) after
        ("buy", 10.0, 100.0, 1.0, 10.0, 100.0),  # open
        ("buy", 5.0, 110.0, 0.5, 15.0, (10 * 100.0 + 5 * 110.0) / 15),  # add: weighted average
        ("sell", 6.0, 120.0, 0.25, 9.0, (10 * 100.0 + 5 * 110.0) / 15),  # reduce: what is left keeps its price
        ("sell", 9.0, 90.0, 0.0, 0.0, None),  # close to zero: no open position
        ("buy", 3.0, 50.0, 0.0, 3.0, 50.0),  # re-open at the new price
        ("sell", 5.0, 60.0, 0.0, -2.0, 60.0),  # flip through zero: the short is all at this price
        ("sell", 2.0, 70.0, 0.0, -4.0, 65.0),  # add to the short
        ("buy", 1.0, 40.0, 0.0, -3.0, 65.0),  # reduce the short
        ("buy", 5.0, 30.0, 0.0, 2.0, 30.0),  # flip back to long
    ]
    for i, (side, qty, price, commission, want_qty, want_avg) in enumerate(steps):
        result = _fill(ledger, f"c{i}", "AAPL", side, qty, price, commission)
        signed = qty if side == "buy" else -qty
        cash += -signed * price - commission  # buy: -qty*price-commission; sell: +qty*price-commission
        assert result.cash_after == pytest.approx(cash, abs=1e-9)
        assert ledger.cash(ACCOUNT)[0] == pytest.approx(cash, abs=1e-9)
        positions = ledger.positions(ACCOUNT)
        if want_avg is None:
            assert positions == {}, f"step {i}"
        else:
            assert positions["AAPL"].qty == want_qty, f"step {i}"
            assert positions["AAPL"].avg_price == pytest.approx(want_avg, rel=1e-12), f"step {i}"
    assert len(ledger.fills(ACCOUNT)) == len(steps)


def test_fractional_fills_sum_to_the_decimal_position(ledger):
    # 1.2345 + 1.4268 is 2.6612999999999998 in binary floating point: a later exit decides "sell 2.6613", which
    # must be recognised as closing the position (not selling through zero into a short).
    _fill(ledger, "c1", "BTC/USD", "buy", 1.2345, 60_000.0)
    _fill(ledger, "c2", "BTC/USD", "buy", 1.4268, 61_000.0)
    assert ledger.positions(ACCOUNT)["BTC/USD"].qty == 2.6613
    _fill(ledger, "c3", "BTC/USD", "sell", 2.6613, 62_000.0)
    assert ledger.positions(ACCOUNT) == {}


def test_mark_values_positions_at_later_bars_only(ledger):
    _fill(ledger, "c1", "AAPL", "buy", 10.0, 100.0)
    day2 = BAR + timedelta(days=2)
    assert ledger.mark(ACCOUNT, {"AAPL": (105.0, day2), "MSFT": (50.0, day2)}) == 1  # MSFT: no position
    assert ledger.positions(ACCOUNT)["AAPL"].mark_price == 105.0
    assert ledger.mark(ACCOUNT, {"AAPL": (90.0, BAR)}) == 0  # an earlier bar never overrides a later mark
    assert ledger.mark(ACCOUNT, {"AAPL": (105.0, day2)}) == 1  # the same bar again: idempotent
    assert ledger.mark(ACCOUNT, {"AAPL": (float("nan"), day2 + timedelta(days=1))}) == 0
    position = ledger.positions(ACCOUNT)["AAPL"]
    assert (position.mark_price, position.mark_ts) == (105.0, day2)


# -- equity ------------------------------------------------------------------------------------------------

def test_the_close_of_the_fill_bar_replaces_the_fill_price_as_mark(ledger):
    # the simulated broker fills at a bar's open and then marks at the closes of the same bars
    _fill(ledger, "c1", "AAPL", "buy", 10.0, 100.0)  # fills on the bar BAR + 1 day
    position = ledger.positions(ACCOUNT)["AAPL"]
    assert (position.mark_price, position.mark_ts) == (100.0, BAR + timedelta(days=1))
    assert ledger.mark(ACCOUNT, {"AAPL": (104.0, BAR + timedelta(days=1))}) == 1
    assert ledger.positions(ACCOUNT)["AAPL"].mark_price == 104.0
    ledger.record_intents([_intent("c2", qty=5.0)])
    ledger.accept(ACCOUNT, "c2", "b2")
    ledger.fill(ACCOUNT, "c2", price=98.0, commission=0.0, bar_ts=BAR, rule=apply_fill)  # a fill on an earlier bar: the mark stands
    position = ledger.positions(ACCOUNT)["AAPL"]
    assert (position.qty, position.mark_price, position.mark_ts) == (15.0, 104.0, BAR + timedelta(days=1))


def test_snapshot_adds_up_and_replaces_at_the_same_instant(ledger):
    _fill(ledger, "c1", "AAPL", "buy", 10.0, 100.0, commission=1.0)
    _fill(ledger, "c2", "MSFT", "sell", 4.0, 50.0, commission=0.5)  # a short
    ledger.mark(ACCOUNT, {"AAPL": (103.0, BAR + timedelta(days=3)), "MSFT": (52.0, BAR + timedelta(days=3))})
    first = _snapshot(ledger, T0, "run-1")
    cash = 10_000.0 - 1000.0 - 1.0 + 200.0 - 0.5
    assert first["cash"] == pytest.approx(cash, abs=1e-9)
    assert first["positions_value"] == pytest.approx(10 * 103.0 - 4 * 52.0, abs=1e-9)
    assert first["cash"] + first["positions_value"] == pytest.approx(first["equity"], abs=1e-9)

    _fill(ledger, "c3", "AAPL", "sell", 10.0, 104.0)  # the position closes; a second snapshot at the same instant
    second = _snapshot(ledger, pd.Timestamp(T0).tz_convert("America/New_York"), "run-1-retry")
    curve = ledger.equity_curve(ACCOUNT)
    assert len(curve) == 1
    assert curve[0]["ts"] == T0 and curve[0]["run_id"] == "run-1-retry"
    assert curve[0]["equity"] == pytest.approx(second["equity"], abs=1e-9)
    assert second["cash"] == pytest.approx(cash + 1040.0, abs=1e-9)
    assert second["positions_value"] == pytest.approx(-4 * 52.0, abs=1e-9)
    for row in curve:
        assert row["cash"] + row["positions_value"] == row["equity"]

    later = ledger.snapshot(ACCOUNT, T0 + timedelta(days=1), "run-2", cash=5.0, equity=7.5)  # a real broker's numbers
    assert later == {"cash": 5.0, "positions_value": 2.5, "equity": 7.5}
    assert [r["ts"] for r in ledger.equity_curve(ACCOUNT)] == [T0, T0 + timedelta(days=1)]
    assert ledger.last_equity_at(ACCOUNT, T0 - timedelta(hours=1)) is None
    assert ledger.last_equity_at(ACCOUNT, T0) == pytest.approx(second["equity"])
    assert ledger.last_equity_at(ACCOUNT, T0 + timedelta(seconds=1)) == pytest.approx(second["equity"])
    assert ledger.last_equity_at(ACCOUNT, T0 + timedelta(days=2)) == 7.5
    with pytest.raises(InvalidInputError, match="give equity with cash"):
        ledger.snapshot(ACCOUNT, T0, "run-x", cash=5.0, equity=None)


# -- decisions ---------------------------------------------------------------------------------------------

def _decision(symbol: str, run_id: str, *, run_key: str = "", action: str = "buy", score: float = 0.5,
              bar_ts: datetime = BAR, **extra) -> dict:
    return {"dag_id": "dag", "symbol": symbol, "timeframe": "1Day", "bar_ts": bar_ts, "run_key": run_key,
            "run_id": run_id, "account": ACCOUNT, "action": action, "score": score, "confidence": 0.7,
            "price": 100.0, "current_qty": 0.0, "target_qty": 10.0, "order_qty": 10.0, "reason": "r",
            "error": None, "signals": {"technical": {"score": 0.25, "confidence": 0.5, "reason": "up"}}, **extra}


def test_claim_decisions_first_run_wins_and_a_retry_gets_the_stored_row(ledger):
    mine = ledger.claim_decisions([_decision("AAPL", "run-1"), _decision("MSFT", "run-1", action="hold")])
    assert sorted(mine) == ["AAPL", "MSFT"]
    assert (mine["AAPL"]["action"], mine["AAPL"]["run_id"], mine["AAPL"]["score"]) == ("buy", "run-1", 0.5)
    assert mine["AAPL"]["signals"] == {"technical": {"score": 0.25, "confidence": 0.5, "reason": "up"}}
    assert mine["AAPL"]["approved"] is None and mine["AAPL"]["client_order_id"] is None

    # another run (overlapping, bar-aware) finds the keys taken: nothing of it is returned or stored
    theirs = ledger.claim_decisions([_decision("AAPL", "run-2", action="sell", score=-0.9),
                                     _decision("TSLA", "run-2")])
    assert sorted(theirs) == ["TSLA"]
    # the same run again (an Airflow retry) with different values gets what it stored the first time
    retry = ledger.claim_decisions([_decision("AAPL", "run-1", action="sell", score=-0.9,
                                              bar_ts=pd.Timestamp(BAR).tz_convert("Asia/Tokyo"))])
    assert (retry["AAPL"]["action"], retry["AAPL"]["score"], retry["AAPL"]["bar_ts"]) == ("buy", 0.5, BAR)
    stored = {(d["symbol"], d["run_id"]): d["action"] for d in ledger.decisions()}
    assert stored == {("AAPL", "run-1"): "buy", ("MSFT", "run-1"): "hold", ("TSLA", "run-2"): "buy"}
    assert [d["symbol"] for d in ledger.decisions(run_id="run-1")] == ["AAPL", "MSFT"]
    assert ledger.decisions(dag_id="other") == []


def test_claim_decisions_with_run_keys_lets_every_run_decide(ledger):
    a = ledger.claim_decisions([_decision("AAPL", "run-1", run_key="run-1")])
    b = ledger.claim_decisions([_decision("AAPL", "run-2", run_key="run-2", action="sell")])
    assert (a["AAPL"]["action"], b["AAPL"]["action"]) == ("buy", "sell")
    assert len(ledger.decisions(dag_id="dag")) == 2


def test_claim_decisions_validates(ledger):
    assert ledger.claim_decisions([]) == {}
    with pytest.raises(InvalidInputError, match="decisions of one run only"):
        ledger.claim_decisions([_decision("AAPL", "run-1"), _decision("MSFT", "run-2")])
    mine = ledger.claim_decisions([_decision("AAPL", "run-1", price=float("nan"), action="hold")])
    assert mine["AAPL"]["price"] is None  # no usable price: stored as NULL


def test_record_verdicts_are_returned_to_a_retry(ledger):
    ledger.claim_decisions([_decision("AAPL", "run-1"), _decision("MSFT", "run-1")])
    ledger.record_verdicts("dag", [])  # nothing to do
    ledger.record_verdicts("dag", [
        {"symbol": "AAPL", "timeframe": "1Day", "bar_ts": BAR, "run_key": "", "approved": True,
         "risk_rule": None, "risk_reason": "approved", "client_order_id": "pf-AAPL-b-1"},
        {"symbol": "MSFT", "timeframe": "1Day", "bar_ts": BAR, "run_key": "", "approved": False,
         "risk_rule": "max_order_notional", "risk_reason": "too big", "client_order_id": None},
    ])
    retry = ledger.claim_decisions([_decision("AAPL", "run-1"), _decision("MSFT", "run-1")])
    assert (retry["AAPL"]["approved"], retry["AAPL"]["risk_reason"], retry["AAPL"]["client_order_id"]) \
        == (True, "approved", "pf-AAPL-b-1")
    assert (retry["MSFT"]["approved"], retry["MSFT"]["risk_rule"], retry["MSFT"]["client_order_id"]) \
        == (False, "max_order_notional", None)


# -- concurrent writers on PostgreSQL (SQLite serialises writers with BEGIN IMMEDIATE) ------------------------

def _race(store: PortfolioStore, prefixes: tuple[str, ...], *jobs):
    """Run ``jobs`` in threads that each wait, before their first statement starting with one of ``prefixes``,
    until all of them got there (every writer has read what it reads before any of them writes); return
    their results."""
    barrier = threading.Barrier(len(jobs), timeout=20)
    racers: set[int] = set()
    waited: set[int] = set()

    def before(conn, cursor, statement, parameters, context, executemany):
        me = threading.get_ident()
        text = statement.lstrip().upper()
        if me in racers and me not in waited and text.startswith(tuple(p.upper() for p in prefixes)):
            waited.add(me)
            barrier.wait()

    results, errors = [None] * len(jobs), []

    def run(i, job):
        racers.add(threading.get_ident())
        try:
            results[i] = job()
        except Exception as err:  # reported below
            errors.append(err)

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert len(waited) == len(jobs)  # they did meet
    return results


@pytest.fixture
def pg_book(fresh_pg_url):
    """(store, ledger) on a new PostgreSQL database, the account open with 10,000 in cash."""
    store = PortfolioStore(fresh_pg_url)
    store.migrate()
    ledger = TradingLedger(store)
    ledger.open_account(ACCOUNT, 10_000.0)
    yield store, ledger
    store.dispose()


@pytest.mark.postgres
def test_concurrent_fills_of_one_order_fill_it_once(pg_book):
    store, ledger = pg_book
    _accepted(ledger, "c1", "AAPL", "buy", 10.0)
    fill = lambda: ledger.fill(ACCOUNT, "c1", price=100.0, commission=1.0, bar_ts=BAR, rule=apply_fill)  # noqa: E731
    results = _race(store, ("UPDATE orders",), fill, fill)
    assert sum(r is not None for r in results) == 1
    assert ledger.cash(ACCOUNT)[0] == 10_000.0 - 1000.0 - 1.0
    assert ledger.positions(ACCOUNT)["AAPL"].qty == 10.0
    assert len(ledger.fills(ACCOUNT)) == 1


@pytest.mark.postgres
def test_concurrent_fills_of_one_symbol_add_up(pg_book):
    store, ledger = pg_book
    _accepted(ledger, "c1", "AAPL", "buy", 10.0)
    _accepted(ledger, "c2", "AAPL", "buy", 5.0)
    results = _race(store, ("INSERT INTO positions", "SELECT positions"), *(lambda cid=cid: ledger.fill(ACCOUNT, cid, price=100.0, commission=0.0, bar_ts=BAR, rule=apply_fill)
                          for cid in ("c1", "c2")))
    assert all(r is not None for r in results)
    assert ledger.positions(ACCOUNT)["AAPL"].qty == 15.0
    assert ledger.cash(ACCOUNT)[0] == 10_000.0 - 1500.0


@pytest.mark.postgres
def test_concurrent_snapshots_at_one_instant_both_succeed(pg_book):
    # mapped chunks of one run each end with a snapshot of the same account at the same instant
    store, ledger = pg_book
    snap = lambda: _snapshot(ledger, T0, "run-1")  # noqa: E731
    results = _race(store, ("DELETE FROM equity_curve", "INSERT INTO equity_curve"), snap, snap)
    assert results[0] == results[1] == {"cash": 10_000.0, "positions_value": 0.0, "equity": 10_000.0}
    assert len(ledger.equity_curve(ACCOUNT)) == 1


def test_all_money_is_finite(ledger):
    _fill(ledger, "c1", "AAPL", "buy", 3.0, 33.3, commission=0.1)
    snap = _snapshot(ledger, T0, "r")
    assert all(math.isfinite(v) for v in snap.values())


def test_fill_stores_what_its_rule_computes(ledger):
    _accepted(ledger, "c1", "AAPL", "buy", 10.0)
    seen = []

    def rule(qty, avg_price, *, side, fill_qty, price, commission):
        seen.append((qty, avg_price, side, fill_qty, price, commission))
        return 7.0, 12.5, -3.0

    result = ledger.fill(ACCOUNT, "c1", price=100.0, commission=1.5, bar_ts=BAR, rule=rule)
    assert seen == [(0.0, 0.0, "buy", 10.0, 100.0, 1.5)]  # the position as stored, and the fill
    position = ledger.positions(ACCOUNT)["AAPL"]
    assert (position.qty, position.avg_price) == (7.0, 12.5)
    assert result.cash_after == ledger.cash(ACCOUNT)[0] == 10_000.0 - 3.0


def test_book_reads_cash_every_position_and_the_fills_from_a_bar(ledger):
    _fill(ledger, "c1", "AAPL", "buy", 10.0, 100.0, commission=1.0)  # bar BAR + 1 day
    _accepted(ledger, "c2", "MSFT", "buy", 2.0)
    ledger.fill(ACCOUNT, "c2", price=50.0, commission=0.0, bar_ts=BAR + timedelta(days=3), rule=apply_fill)
    _accepted(ledger, "c3", "MSFT", "sell", 2.0)
    ledger.fill(ACCOUNT, "c3", price=55.0, commission=0.0, bar_ts=BAR + timedelta(days=4), rule=apply_fill)  # MSFT is flat again
    book = ledger.book(ACCOUNT)
    assert book.cash == pytest.approx(10_000.0 - 1001.0 - 100.0 + 110.0, abs=1e-9) and book.fills == []
    assert {s: p.qty for s, p in book.positions.items()} == {"AAPL": 10.0, "MSFT": 0.0}  # flat ones included
    later = ledger.book(ACCOUNT, fills_from=BAR + timedelta(days=3)).fills
    assert [(f.symbol, f.side, f.qty, f.price) for f in later] == [("MSFT", "buy", 2.0, 50.0), ("MSFT", "sell", 2.0, 55.0)]
    with pytest.raises(StoreError, match="no simulated book"):
        ledger.book("simulated:never-opened")


def test_claim_decisions_returns_a_run_s_decisions_in_symbol_order_on_each_dialect(ledger):
    """The cycle risk-checks and sends a run's orders in the order this returns (orders per day, buying power and
    open positions depend on it): symbol order on every database, whatever order the rows were written or stored in
    (a retry gets them back in the same order too)."""
    symbols = ["ZTS", "MSFT", "BTC/USD", "AAPL", "TSLA", "NVDA", "ETH/USD", "AMZN", "JPM", "IWM"]
    ledger.claim_decisions([_decision(s, "run-1") for s in symbols[:5]])
    # the same run decides more symbols (a later chunk of it): rows stored apart from the first ones
    mine = ledger.claim_decisions([_decision(s, "run-1") for s in symbols])
    assert list(mine) == sorted(symbols)
