"""Rebalancing: target weights and the plan hand-checked, and the job on a real SQLite store through the trader's
order path (simulated broker, and Alpaca's fake): targets reached within one share, nothing sent within the drift
threshold, a retry and a crash between submit and record sending nothing twice, risk limits naming their rule, bad
input refused with nothing sent, equities in their session and crypto around the clock."""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.orders import client_order_id
from airflow_provider_portfolio.trading.rebalance import (
    CASH,
    PlannedOrder,
    plan_rebalance,
    realised_volatility,
    rebalance,
    target_weights,
)
from airflow_provider_portfolio.trading.risk import RiskLimits
from tests.trading.conftest import RecordingBroker, at

SYMBOLS = ["AAPL", "MSFT", "SPY", "BTC/USD"]
TUE, WED, THU = at("2024-06-04", 11), at("2024-06-05", 11), at("2024-06-06", 11)  # NYSE open
SATURDAY = at("2024-06-08", 11)
MONDAY_BAR = pd.Timestamp("2024-06-03", tz="UTC")  # the last daily bar closed at TUE
DAG = "portfolio_rebalance"
LIMITS = RiskLimits(max_order_notional=60_000, max_position_fraction=0.6)


# -- target weights -------------------------------------------------------------------------------------

def alternating(start: float, step: float, n: int) -> list[float]:
    """``n + 1`` closes whose log returns alternate ``+step, -step``: a known realised volatility."""
    return list(start * np.exp(np.cumsum([0.0] + [step if i % 2 == 0 else -step for i in range(n)])))


def test_equal_weights_leave_the_cash_asked_for():
    assert target_weights("equal", symbols=["AAPL", "MSFT", "SPY", "QQQ"]) == dict.fromkeys(
        ["AAPL", "MSFT", "SPY", "QQQ"], 0.25)
    weights = target_weights("equal", symbols=["aapl", "MSFT"], cash=0.02)
    assert weights == {"AAPL": 0.49, "MSFT": 0.49}


def test_realised_volatility_is_the_annualised_sample_std_of_log_returns():
    closes = alternating(100.0, 0.01, 60)
    # 60 returns of +-0.01: mean 0, sum of squares 60e-4; ddof=1 -> var 60e-4 / 59
    assert realised_volatility(closes, "AAPL", 60) == pytest.approx(0.01 * math.sqrt(60 / 59) * math.sqrt(252), rel=1e-12)
    assert realised_volatility(closes, "BTC/USD", 60) == pytest.approx(0.01 * math.sqrt(60 / 59) * math.sqrt(365),
                                                                       rel=1e-12)
    assert realised_volatility(closes[:20], "AAPL", 60) is None  # 19 returns < 20


def test_inverse_volatility_weights_hand_checked():
    # Twice the per-day moves, half the weight: 1/0.01 : 1/0.02 = 2 : 1.
    closes = {"AAPL": alternating(100.0, 0.01, 60), "TSLA": alternating(200.0, 0.02, 60)}
    weights = target_weights("inverse_volatility", symbols=["AAPL", "TSLA"], closes=closes)
    assert weights == pytest.approx({"AAPL": 2 / 3, "TSLA": 1 / 3}, rel=1e-12)
    # Only the last `lookback` returns count: calm then wild history is judged on the wild part.
    closes["AAPL"] = alternating(100.0, 0.001, 100)[:-1] + alternating(closes["AAPL"][0], 0.02, 40)[1:]
    weights = target_weights("inverse_volatility", symbols=["AAPL", "TSLA"], closes=closes, lookback=30)
    assert weights == pytest.approx({"AAPL": 0.5, "TSLA": 0.5}, rel=1e-9)
    # The same daily moves: a crypto day is a shorter time than an equity session, sqrt(365) vs sqrt(252).
    same = {"SPY": alternating(100.0, 0.01, 60), "BTC/USD": alternating(100.0, 0.01, 60)}
    weights = target_weights("inverse_volatility", symbols=["SPY", "BTC/USD"], closes=same, cash=0.1)
    spy = math.sqrt(365) / (math.sqrt(365) + math.sqrt(252))  # 19.105 / 34.980 = 0.5462
    assert weights == pytest.approx({"SPY": 0.9 * spy, "BTC/USD": 0.9 * (1 - spy)}, rel=1e-12)


def test_inverse_volatility_from_bars_and_too_little_history():
    bars = SyntheticMarket(seed=7).panel(["AAPL", "MSFT"], "2024-01-02", "2024-03-28")
    weights = target_weights("inverse_volatility", symbols=["AAPL", "MSFT"], bars=bars, lookback=40)
    vols = {s: np.std(np.diff(np.log(g["close"].to_numpy()))[-40:], ddof=1) for s, g in bars.groupby("symbol")}
    expected = {s: (1 / vols[s]) / sum(1 / v for v in vols.values()) for s in vols}
    assert weights == pytest.approx(expected, rel=1e-9)
    with pytest.raises(InvalidInputError, match=r"at least 21 daily closes .*MSFT \(10 closes\)"):
        target_weights("inverse_volatility", symbols=["AAPL", "MSFT"],
                       closes={"AAPL": alternating(1.0, 0.01, 30), "MSFT": alternating(1.0, 0.01, 9)})
    with pytest.raises(InvalidInputError, match=r"NVDA \(0 closes\)"):
        target_weights("inverse_volatility", symbols=["NVDA"], bars=bars)


def ranking(rows: list[tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame({"run_id": "disc-1", "ts": pd.Timestamp("2024-06-03 10:00", tz="UTC"),
                         "rank": range(1, len(rows) + 1), "symbol": [s for s, _ in rows],
                         "score": [v for _, v in rows], "regime": "calm", "components": [{}] * len(rows),
                         "reasons": [["test"]] * len(rows)})


def test_discovery_takes_the_top_n_equal_or_by_score():
    ranked = ranking([("NVDA", 3.0), ("AAPL", 2.0), ("MSFT", 1.0), ("SPY", 0.5), ("TSLA", -1.0)])
    assert target_weights("discovery", ranking=ranked, top_n=3) == pytest.approx(
        {"NVDA": 1 / 3, "AAPL": 1 / 3, "MSFT": 1 / 3})
    assert target_weights("discovery", ranking=ranked, top_n=3, weighting="score") == pytest.approx(
        {"NVDA": 0.5, "AAPL": 2 / 6, "MSFT": 1 / 6})
    # within a universe: the best ranked of its symbols
    assert target_weights("discovery", ranking=ranked, top_n=2, symbols=["SPY", "TSLA", "MSFT"], cash=0.2) \
        == pytest.approx({"MSFT": 0.4, "SPY": 0.4})
    with pytest.raises(InvalidInputError, match="none of the top 1 ranked symbols has a positive score"):
        target_weights("discovery", ranking=ranked, symbols=["TSLA"], top_n=1, weighting="score")
    with pytest.raises(InvalidInputError, match="no discovery ranking"):
        target_weights("discovery", ranking=ranked.iloc[0:0])
    with pytest.raises(InvalidInputError, match="top_n must be an integer >= 1"):
        target_weights("discovery", ranking=ranked, top_n=0)


def test_given_weights_with_an_explicit_cash_entry():
    assert target_weights("given", weights={"spy": 0.6, "QQQ": 0.3, "cash": 0.1}) == {"SPY": 0.6, "QQQ": 0.3}
    assert target_weights("given", weights={"SPY": 0.5, "QQQ": 0.5 + 5e-7}) == {"SPY": 0.5, "QQQ": 0.5 + 5e-7}


@pytest.mark.parametrize(("weights", "message"), [
    ({"SPY": 0.6, "QQQ": 0.3}, r"must sum to 1 \(within 1e-06\), CASH included, got a sum of 0\.9 "),
    ({"SPY": 0.6, "QQQ": 0.3, "CASH": 0.2}, r"got a sum of 1\.1 "),
    ({"SPY": 1.2, "QQQ": -0.2}, r"weight of 'QQQ' is -0\.2: rebalancing is long-only"),
    ({"SPY": float("nan"), "QQQ": 1.0}, r"weight of 'SPY' must be a finite number, got nan"),
    ({"SPY": True}, r"weight of 'SPY' must be a finite number"),
    ({}, r"weights must be a non-empty mapping"),
    ({"not a ticker!": 1.0}, r"not a ticker"),
])
def test_bad_given_weights_are_refused(weights, message):
    with pytest.raises(InvalidInputError, match=message):
        target_weights("given", weights=weights)


def test_unknown_method_and_misplaced_arguments():
    with pytest.raises(InvalidInputError, match=r"unknown rebalancing method 'momentum': use one of equal, "
                                                r"inverse_volatility, discovery, given"):
        target_weights("momentum", symbols=["SPY"])
    with pytest.raises(InvalidInputError, match="weights are for method 'given', not 'equal'"):
        target_weights("equal", symbols=["SPY"], weights={"SPY": 1.0})
    with pytest.raises(InvalidInputError, match="cash of 'given' weights is their CASH entry"):
        target_weights("given", weights={"SPY": 1.0}, cash=0.1)
    with pytest.raises(InvalidInputError, match="method 'equal' needs symbols"):
        target_weights("equal")
    with pytest.raises(InvalidInputError, match=r"cash must be a number in \[0, 1\)"):
        target_weights("equal", symbols=["SPY"], cash=1.0)


# -- the plan -------------------------------------------------------------------------------------------

def test_plan_hand_checked_sells_first_whole_shares_and_crypto_fractions():
    # Equity 100,000: cash 40,000, AAPL 100 x 200 = 20%, MSFT 100 x 400 = 40%, no BTC.
    plan = plan_rebalance({"AAPL": 100, "MSFT": 100}, {"AAPL": 200.0, "MSFT": 400.0, "BTC/USD": 60_000.0}, 100_000.0,
                          {"AAPL": 0.3, "MSFT": 0.3, "BTC/USD": 0.35}, fractionable={"BTC/USD": True})
    assert plan.current == {"AAPL": 0.2, "MSFT": 0.4, "BTC/USD": 0.0}
    assert plan.drifts == pytest.approx({"AAPL": -0.1, "MSFT": 0.1, "BTC/USD": -0.35, CASH: 0.35})
    assert plan.triggered and plan.max_drift == pytest.approx(0.35) and plan.buy_scale == 1.0
    # MSFT 30,000 / 400 = 75 (sell 25); AAPL 30,000 / 200 = 150 (buy 50); BTC 35,000 / 60,000 = 0.583333(3) -> 0.583333
    assert plan.orders == [PlannedOrder("MSFT", "sell", 25.0, 400.0, 100.0, 75.0),
                           PlannedOrder("AAPL", "buy", 50.0, 200.0, 100.0, 150.0),
                           PlannedOrder("BTC/USD", "buy", 0.583333, 60_000.0, 0.0, 0.583333)]


def test_plan_scales_the_buys_to_the_cash_available():
    # As above with 30,000 to spend: buys of 10,000 (AAPL) + 34,999.98 (BTC) are scaled by 30,000 / 44,999.98.
    plan = plan_rebalance({"AAPL": 100, "MSFT": 100}, {"AAPL": 200.0, "MSFT": 400.0, "BTC/USD": 60_000.0}, 100_000.0,
                          {"AAPL": 0.3, "MSFT": 0.3, "BTC/USD": 0.35}, fractionable={"BTC/USD": True},
                          buying_power=30_000.0)
    scale = 30_000.0 / (50 * 200.0 + 0.583333 * 60_000.0)
    assert plan.buy_scale == pytest.approx(scale)  # 0.666667
    assert [(o.symbol, o.side, o.qty) for o in plan.orders] == [
        ("MSFT", "sell", 25.0), ("AAPL", "buy", 33.0), ("BTC/USD", "buy", 0.388888)]  # 50 x 0.6667 = 33.3 -> 33
    assert sum(o.notional for o in plan.orders if o.side == "buy") <= 30_000.0


def test_plan_ends_every_position_within_one_share_of_its_target():
    rng = np.random.default_rng(5)
    for _ in range(200):
        prices = {"A": float(rng.uniform(1, 900)), "B": float(rng.uniform(1, 900)), "C": float(rng.uniform(1, 900))}
        raw = rng.uniform(0, 1, 3)
        targets = dict(zip("ABC", (0.97 * raw / raw.sum()).tolist(), strict=True))
        held = {s: float(rng.integers(0, 200)) for s in "ABC"}
        equity = 50_000.0 + sum(held[s] * prices[s] for s in "ABC")
        plan = plan_rebalance(held, prices, equity, targets, drift_threshold=0.0)
        after = dict(held)
        for order in plan.orders:
            after[order.symbol] += order.qty if order.side == "buy" else -order.qty
            assert order.qty == int(order.qty)
        for s in "ABC":
            exact = targets[s] * equity / prices[s]
            assert 0 <= exact - after[s] < 1 or abs(after[s] - exact) * prices[s] < 1.0, (s, exact, after[s])


def test_nothing_is_planned_while_every_drift_is_within_the_threshold():
    prices = {"A": 100.0, "B": 100.0}
    # A at 50% for 25%: drift +0.25, B at 50% for 75%: -0.25, CASH 0. The threshold is inclusive.
    plan = plan_rebalance({"A": 500, "B": 500}, prices, 100_000.0, {"A": 0.25, "B": 0.75}, drift_threshold=0.25)
    assert plan.drifts == {"A": 0.25, "B": -0.25, CASH: 0.0} and not plan.triggered and plan.orders == []
    plan = plan_rebalance({"A": 500, "B": 500}, prices, 100_000.0, {"A": 0.25, "B": 0.75}, drift_threshold=0.24)
    assert plan.triggered and [(o.symbol, o.side, o.qty) for o in plan.orders] == [("A", "sell", 250), ("B", "buy", 250)]
    # Three symbols 3 points under each: no symbol beyond 5 points, but the cash is 9 points over.
    plan = plan_rebalance({"A": 300, "B": 300, "C": 300}, {"A": 100.0, "B": 100.0, "C": 100.0}, 100_000.0,
                          {"A": 0.33, "B": 0.33, "C": 0.33})
    assert plan.drifts == pytest.approx({"A": -0.03, "B": -0.03, "C": -0.03, CASH: 0.09})
    assert plan.triggered and [(o.symbol, o.qty) for o in plan.orders] == [("A", 30), ("B", 30), ("C", 30)]


def test_a_target_of_zero_sells_the_whole_position_and_tiny_orders_are_left_out():
    plan = plan_rebalance({"BTC/USD": 0.123457, "SPY": 10}, {"BTC/USD": 60_000.0, "SPY": 500.0}, 20_000.0,
                          {"BTC/USD": 0.0, "SPY": 0.25 + 0.00001}, fractionable={"BTC/USD": True})
    # SPY: 5,000.2 / 500 = 10.0004 -> 10: nothing; BTC sold whole, fractions and all.
    assert plan.orders == [PlannedOrder("BTC/USD", "sell", 0.123457, 60_000.0, 0.123457, 0.0)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"targets": {"A": 0.7, "B": 0.4}}, r"target weights sum to 1\.1 > 1"),
    ({"targets": {"A": -0.1}}, r"target weight of A must be a finite number >= 0"),
    ({"targets": {"A": 0.5, "C": 0.5}}, r"no usable price for C \(None\)"),
    ({"equity": 0.0}, r"equity must be a finite number > 0, got 0\.0"),
    ({"drift_threshold": 1.5}, r"drift_threshold must be a number in \[0, 1\)"),
    ({"buying_power": -1.0}, r"buying_power must be a finite number >= 0"),
])
def test_bad_plan_input(kwargs, message):
    args = {"positions": {}, "prices": {"A": 10.0, "B": 10.0}, "equity": 1_000.0, "targets": {"A": 0.5}, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        plan_rebalance(**args)


# -- the job --------------------------------------------------------------------------------------------

@pytest.fixture
def desk(store):
    """The store with daily bars of SYMBOLS (an ETL's) through 2024-06-10: later bars than an instant are in the
    store too, and must not be seen."""
    store.upsert_bars(SyntheticMarket(seed=7).panel(SYMBOLS, "2023-12-01", "2024-06-10"))
    return store


@pytest.fixture
def sim(ledger) -> RecordingBroker:
    """The simulated broker (no slippage or commission), counting what it is asked to submit."""
    broker = RecordingBroker(SimulatedBroker(ledger, name="rebalance", initial_cash=100_000.0, slippage_bps=0.0))
    broker.ledger = ledger  # the job checks that its orders and the store are one place
    return broker


def rows(store, sql: str, *params) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(store.url.removeprefix("sqlite:///")) as con:
        return con.execute(sql, params).fetchall()


def close_of(store, symbol: str, day: str) -> float:
    ts = pd.Timestamp(day, tz="UTC").value // 1000
    [(close,)] = rows(store, "SELECT close FROM bars WHERE symbol = ? AND ts = ?", symbol, ts)
    return close


def run(store, broker, now, run_id, **kwargs):
    kwargs = {"method": "given", "symbols": SYMBOLS, "limits": LIMITS, **kwargs}
    return rebalance(store, broker, now=now, dag_id=DAG, run_id=run_id, **kwargs)


def test_from_cash_to_targets_within_one_share_then_nothing_within_the_threshold(desk, sim, ledger):
    first = run(desk, sim, TUE, "w1", weights={"AAPL": 0.5, "MSFT": 0.3, "CASH": 0.2})
    assert first.triggered and first.equity == 100_000.0 and first.rejected == {} and first.errors == {}
    # No look-ahead: sized at Monday's close (Tuesday's bar is forming at 11:00, later ones are in the store too).
    prices = {s: close_of(desk, s, "2024-06-03") for s in SYMBOLS}
    assert {o["symbol"]: o["price"] for o in first.orders} == {"AAPL": prices["AAPL"], "MSFT": prices["MSFT"]}
    assert {o["symbol"]: o["qty"] for o in first.orders} == {"AAPL": math.floor(50_000 / prices["AAPL"]),
                                                             "MSFT": math.floor(30_000 / prices["MSFT"])}
    assert {o["status"] for o in first.orders} == {"new"} and len(first.submitted) == 2
    assert rows(desk, "SELECT DISTINCT bar_ts FROM trading_decisions") == [(MONDAY_BAR.value // 1000,)]
    assert {o["client_order_id"] for o in first.orders} == {
        client_order_id(DAG, "w1", s, MONDAY_BAR, "buy") for s in ("AAPL", "MSFT")}

    # Wednesday: Tuesday's orders filled at Wednesday's open; a constructed change of targets: sell AAPL, buy SPY
    # and bitcoin in fractions, within the cash.
    targets = {"AAPL": 0.3, "MSFT": 0.3, "SPY": 0.1, "BTC/USD": 0.05, "CASH": 0.25}
    second = run(desk, sim, WED, "w2", weights=targets)
    assert second.fills == 2 and second.triggered and second.buy_scale == 1.0 and second.rejected == {}
    sides = [(o["symbol"], o["side"]) for o in second.orders]
    assert {("AAPL", "sell"), ("SPY", "buy"), ("BTC/USD", "buy")} <= set(sides)
    assert [side for _, side in sides] == sorted((side for _, side in sides), key=lambda side: side != "sell")
    equity, prices = second.equity, {s: close_of(desk, s, "2024-06-04") for s in SYMBOLS}
    assert equity == pytest.approx(rows(desk, "SELECT equity FROM equity_curve WHERE run_id = 'w2'")[0][0])
    decided = {s: (q, t) for s, q, t in rows(desk, "SELECT symbol, order_qty, target_qty FROM trading_decisions "
                                                   "WHERE run_id = 'w2'")}
    for symbol in ("AAPL", "MSFT", "SPY"):  # whole shares, rounded toward zero: within one share of the exact target
        assert decided[symbol][1] == math.floor(targets[symbol] * equity / prices[symbol])
    assert decided["BTC/USD"][1] == pytest.approx(math.floor(0.05 * equity / prices["BTC/USD"] * 1e6) / 1e6, abs=1e-9)

    # Thursday: the fills land; every position is its decision's target; all within 5 points: nothing sent.
    third = run(desk, sim, THU, "w3", weights=targets)
    held = {s: p.qty for s, p in ledger.positions(sim.account).items()}
    assert held == pytest.approx({s: t for s, (_, t) in decided.items() if t})
    assert not third.triggered and third.orders == [] and third.submitted == [] and third.max_drift <= 0.05
    assert rows(desk, "SELECT COUNT(*) FROM orders WHERE run_id = 'w3'") == [(0,)]
    reasons = [r for r, in rows(desk, "SELECT reason FROM trading_decisions WHERE run_id = 'w3'")]
    assert len(reasons) == 4 and all("every drift within 5.00%" in r for r in reasons)
    assert sim.calls and set(sim.calls.values()) == {1}


def test_inverse_volatility_from_the_stored_closes(desk, sim):
    report = run(desk, sim, TUE, "iv", method="inverse_volatility", lookback=60)
    closes = {s: [c for c, in rows(desk, "SELECT close FROM bars WHERE symbol = ? AND ts <= ? ORDER BY ts", s,
                                  MONDAY_BAR.value // 1000)] for s in SYMBOLS}
    vol = {s: np.std(np.diff(np.log(closes[s]))[-60:], ddof=1) * math.sqrt(365 if "/" in s else 252)
           for s in SYMBOLS}
    expected = {s: 0.98 * (1 / vol[s]) / sum(1 / v for v in vol.values()) for s in SYMBOLS}
    assert report.targets == pytest.approx(expected, rel=1e-9)
    assert len(report.submitted) == 4 and report.drifts[CASH] == pytest.approx(0.98)


def test_an_airflow_retry_of_the_same_run_sends_nothing_twice(desk, sim):
    first = run(desk, sim, TUE, "retry", method="equal")
    again = run(desk, sim, TUE, "retry", method="equal")
    assert len(first.submitted) == 4 and sorted(again.submitted) == sorted(first.submitted)
    assert again.orders == first.orders  # the stored decisions, carried out once
    assert sim.calls == Counter(first.submitted) and sim.accepted == Counter(first.submitted)
    assert rows(desk, "SELECT COUNT(*) FROM orders") == [(4,)]
    assert rows(desk, "SELECT COUNT(*) FROM trading_decisions") == [(4,)]


def test_a_crash_after_submit_before_the_answer_is_recorded_is_reconciled(desk, sim):
    sim.after["AAPL"] = RuntimeError("worker killed")  # the broker accepted AAPL; the worker dies
    with pytest.raises(RuntimeError, match="worker killed"):
        run(desk, sim, TUE, "crash", method="equal")
    assert rows(desk, "SELECT symbol, status FROM orders ORDER BY symbol") == [
        ("AAPL", "new"), ("BTC/USD", "pending_submit"), ("MSFT", "pending_submit"), ("SPY", "pending_submit")]
    retry = run(desk, sim, TUE, "crash", method="equal")
    assert len(retry.submitted) == 4 and retry.unknown == {}
    assert set(sim.calls.values()) == {1} and set(sim.accepted.values()) == {1}  # AAPL found, not re-sent
    assert {s for s, in rows(desk, "SELECT DISTINCT status FROM orders")} == {"new"}


def test_a_new_run_after_a_dead_one_counts_its_orders_instead_of_repeating_them(desk, sim):
    sim.after["MSFT"] = RuntimeError("worker killed")  # AAPL, BTC/USD, MSFT accepted; SPY recorded, never sent
    with pytest.raises(RuntimeError):
        run(desk, sim, TUE, "dead", method="equal")
    later = run(desk, sim, TUE, "next", method="equal")  # never retried: another run, same instant
    assert [(o["symbol"], o["side"]) for o in later.orders] == [("SPY", "buy")]  # only what never reached the book
    # AAPL, BTC/USD and MSFT sent once by the dead run; SPY once, by the new run
    assert set(sim.calls.values()) == {1} and len(sim.calls) == 4
    assert later.orders[0]["client_order_id"] in sim.calls
    assert rows(desk, "SELECT run_id, status FROM orders WHERE symbol = 'SPY' ORDER BY run_id") == [
        ("dead", "not_placed"), ("next", "new")]


def test_risk_limits_reject_with_the_rule_named(desk, sim, monkeypatch):
    tight = RiskLimits(max_order_notional=20_000, max_position_fraction=0.6)
    report = run(desk, sim, TUE, "tight", weights={"AAPL": 0.5, "MSFT": 0.1, "CASH": 0.4}, limits=tight)
    assert set(report.rejected) == {"AAPL"} and report.rejected["AAPL"].startswith(
        "max_order_notional: notional ") and "> max_order_notional 20,000.00" in report.rejected["AAPL"]
    [aapl] = [o for o in report.orders if o["symbol"] == "AAPL"]
    assert (aapl["approved"], aapl["rule"], aapl["status"]) == (False, "max_order_notional", None)
    assert rows(desk, "SELECT symbol FROM orders") == [("MSFT",)]
    assert rows(desk, "SELECT risk_rule FROM trading_decisions WHERE symbol = 'AAPL'") == [("max_order_notional",)]

    concentrated = run(desk, sim, TUE, "fraction", weights={"SPY": 0.5, "CASH": 0.5},
                       limits=RiskLimits(max_order_notional=60_000))
    assert concentrated.rejected["SPY"].startswith("max_position_fraction: ")


def test_the_kill_switch_halts_and_reduce_only_lets_only_sells_through(desk, sim):
    halted = run(desk, sim, TUE, "halt", method="equal", kill_switch="halted")
    assert halted.submitted == [] and set(halted.rejected) == set(SYMBOLS)
    assert all(r.startswith("kill_switch: kill switch is 'halted'") for r in halted.rejected.values())
    run(desk, sim, TUE, "buy", weights={"AAPL": 0.5, "CASH": 0.5})
    run(desk, sim, WED, "fill", weights={"AAPL": 0.5, "CASH": 0.5})  # the AAPL buy fills at Wednesday's open
    state = iter(["active", "reduce_only"])  # read when judged, then again right before sending
    mixed = run(desk, sim, THU, "reduce", weights={"AAPL": 0.1, "MSFT": 0.4, "CASH": 0.5},
                kill_switch=lambda: next(state, "reduce_only"))
    assert [o["symbol"] for o in mixed.orders] == ["AAPL", "MSFT"]  # the sell first
    assert rows(desk, "SELECT symbol, side, status FROM orders WHERE run_id = 'reduce'") == [
        ("AAPL", "sell", "new"), ("MSFT", "buy", "not_placed")]
    assert "kill switch is 'reduce_only'" in mixed.rejected["MSFT"]


def test_equities_wait_for_their_session_while_crypto_trades_around_the_clock(desk, sim):
    weekend = run(desk, sim, SATURDAY, "sat", method="equal")
    assert set(weekend.rejected) == {"AAPL", "MSFT", "SPY"}
    assert all(r.startswith("market_open: market for ") for r in weekend.rejected.values())
    assert rows(desk, "SELECT symbol, status FROM orders") == [("BTC/USD", "new")]
    # bitcoin decided on Friday's UTC day, the equities on Friday's session
    assert dict(rows(desk, "SELECT symbol, bar_ts FROM trading_decisions")) == {
        s: pd.Timestamp("2024-06-07", tz="UTC").value // 1000 for s in SYMBOLS}


def test_discovery_buys_the_top_ranked_and_sells_what_drops_out(desk, sim):
    desk.save_opportunities(ranking([("AAPL", 2.0), ("MSFT", 1.5), ("SPY", 1.0)]), run_id="disc-mon",
                            ts=at("2024-06-03", 10))
    desk.save_opportunities(ranking([("SPY", 3.0), ("MSFT", 2.0), ("AAPL", -1.0)]), run_id="disc-wed",
                            ts=at("2024-06-05", 10))  # made after TUE: not seen by Tuesday's rebalance
    first = run(desk, sim, TUE, "d1", method="discovery", symbols=None, top_n=2)
    assert first.ranking["run_id"] == "disc-mon" and set(first.targets) == {"AAPL", "MSFT"}
    assert first.targets == pytest.approx({"AAPL": 0.49, "MSFT": 0.49})
    second = run(desk, sim, WED, "d2", method="discovery", symbols=None, top_n=2)
    assert second.ranking["run_id"] == "disc-wed"
    assert second.targets == pytest.approx({"SPY": 0.49, "MSFT": 0.49, "AAPL": 0.0})
    sides = {o["symbol"]: o["side"] for o in second.orders}
    assert sides["AAPL"] == "sell" and sides["SPY"] == "buy" and second.orders[0]["symbol"] == "AAPL"
    [aapl] = [o for o in second.orders if o["symbol"] == "AAPL"]
    assert aapl["qty"] == [o for o in first.orders if o["symbol"] == "AAPL"][0]["qty"]  # sold whole


def test_a_stale_symbol_is_not_traded_and_the_others_are(store, sim):
    bars = SyntheticMarket(seed=7).panel(SYMBOLS, "2023-12-01", "2024-06-10")
    store.upsert_bars(bars[(bars["symbol"] != "MSFT") | (bars["ts"] < pd.Timestamp("2024-05-24", tz="UTC"))])
    report = run(store, sim, TUE, "stale", method="equal")
    assert report.errors["MSFT"].startswith("stale bars: the last 1Day bar is 2024-05-23")
    assert "MSFT" not in report.targets and report.targets == pytest.approx(dict.fromkeys(["AAPL", "SPY", "BTC/USD"],
                                                                                          0.98 / 3))
    assert sorted(s for s, in rows(store, "SELECT symbol FROM orders")) == ["AAPL", "BTC/USD", "SPY"]
    assert rows(store, "SELECT action, error IS NOT NULL FROM trading_decisions WHERE symbol = 'MSFT'") == [("hold", 1)]
    with pytest.raises(InvalidInputError, match=r"no target symbol can be traded at .* \(MSFT: stale bars: .*nothing "
                                                r"was sent"):
        run(store, sim, TUE, "only-stale", method="equal", symbols=["MSFT"])
    assert rows(store, "SELECT COUNT(*) FROM trading_decisions WHERE run_id = 'only-stale'") == [(0,)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "given", "weights": {"AAPL": 0.5, "MSFT": 0.4}}, r"must sum to 1 .*got a sum of 0\.9 "),
    ({"method": "momentum"}, "unknown rebalancing method 'momentum'"),
    ({"method": "equal", "symbols": ["NVDA", "QQQ"]}, r"has no 1Day bars of NVDA, QQQ up to 2024-06-04: run the daily "
                                                      r"ETL first; nothing was sent"),
    ({"method": "discovery", "symbols": None}, "no discovery ranking in the store"),
    ({"method": "given", "weights": {"AAPL": 1.0}, "cash": 0.1}, "cash of 'given' weights is their CASH entry"),
    ({"method": "equal", "drift_threshold": -0.1}, r"drift_threshold must be a number in \[0, 1\)"),
    ({"method": "inverse_volatility", "lookback": 5}, r"lookback must be within \[20, 119\]"),
])
def test_bad_input_is_refused_and_nothing_is_sent(desk, sim, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        run(desk, sim, TUE, "bad", **kwargs)
    assert rows(desk, "SELECT COUNT(*) FROM orders") == [(0,)]
    assert rows(desk, "SELECT COUNT(*) FROM trading_decisions") == [(0,)]
    assert sim.calls == Counter()


def test_an_empty_store_is_a_clear_error(store, sim):
    with pytest.raises(InvalidInputError, match="has no 1Day bars of AAPL, MSFT, SPY, BTC/USD .*run the daily ETL"):
        run(store, sim, TUE, "empty", method="equal")
    assert rows(store, "SELECT COUNT(*) FROM orders") == [(0,)] and sim.calls == Counter()


def test_the_broker_must_keep_its_ledger_in_the_store(desk, tmp_path):
    from airflow_provider_portfolio.store import PortfolioStore

    other = PortfolioStore.for_sqlite_file(tmp_path / "other.db")
    other.migrate()
    broker = SimulatedBroker(TradingLedger(other), name="elsewhere")
    with pytest.raises(InvalidInputError, match="the broker's ledger must be the given store's"):
        run(desk, broker, TUE, "x", method="equal")
    other.dispose()


# -- Alpaca ---------------------------------------------------------------------------------------------

@pytest.fixture
def alpaca_setup(desk, requests_mock, add_connection, no_sleep):
    """Alpaca's fake (10 AAPL and some bitcoin held, equity 100,010.27, cash 98,059.97) and a broker maker: each call
    is a new task try's hook and broker."""
    from airflow_provider_portfolio.hooks.alpaca import AlpacaHook
    from airflow_provider_portfolio.trading.brokers.alpaca import AlpacaBroker
    from tests.trading.test_alpaca_broker import FakeAlpaca
    from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET

    fake = FakeAlpaca(requests_mock)
    add_connection("alpaca_paper", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET, timeout=7)

    def make() -> AlpacaBroker:
        hook = AlpacaHook("alpaca_paper")
        hook.sleep = no_sleep.append
        return AlpacaBroker(hook, TradingLedger(desk))

    return fake, make


def test_alpaca_crash_between_submit_and_record_is_looked_up_not_resent(desk, alpaca_setup, monkeypatch):
    fake, make = alpaca_setup
    now = datetime(2024, 6, 4, 15, 0, tzinfo=timezone.utc)
    crashes = []
    real_update = TradingLedger.update_order

    def crash_once(self, *args, **kwargs):
        if not crashes:
            crashes.append(args)
            raise RuntimeError("killed between submit and record")
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(TradingLedger, "update_order", crash_once)
    with pytest.raises(RuntimeError, match="killed"):
        run(desk, make(), now, "alp", method="equal", symbols=["AAPL", "MSFT"])
    ids = {s: client_order_id(DAG, "alp", s, MONDAY_BAR, "buy") for s in ("AAPL", "MSFT")}
    assert crashes[0][1] == ids["AAPL"] and set(fake.orders) == {ids["AAPL"]}
    retry = run(desk, make(), now, "alp", method="equal", symbols=["AAPL", "MSFT"])
    assert fake.posts() == Counter(ids.values())  # AAPL found by its id, MSFT sent once
    assert sorted(retry.submitted) == sorted(ids.values()) and retry.unknown == {}
    assert [s.replace("/", "") for s in retry.untouched] == ["BTCUSD"]  # held outside the universe: left alone
    # 10 AAPL held count: AAPL's order is the rest of its 49%, at Monday's close
    price = close_of(desk, "AAPL", "2024-06-03")
    [aapl] = [o for o in retry.orders if o["symbol"] == "AAPL"]
    assert aapl["qty"] == math.floor(0.49 * 100_010.27 / price) - 10
