"""AutoTraderOperator.execute() on the synthetic market, the simulated broker and a real SQLite store."""

from __future__ import annotations

import json
import math
import sqlite3
from types import SimpleNamespace

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.operators.trading import KILL_SWITCH_VARIABLE, AutoTraderOperator, read_kill_switch
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.trading.brokers import OrderStateUnknownError
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker

SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "SPY", "BTC/USD"]
# A Tuesday 15:00 New York: NYSE open, last closed daily bar Monday 2024-06-03.
AT = pd.Timestamp("2024-06-04 15:00", tz="America/New_York")
LOOSE = {"min_confidence": 0.2, "max_order_notional": 50_000}


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "desk.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    monkeypatch.delenv(f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}", raising=False)
    return path


def context(run_id="scheduled__1", at=AT, dag_id="trader"):
    run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=at.to_pydatetime())
    return {"dag_run": run, "data_interval_end": at.to_pydatetime(), "run_id": run_id}


def trader(**kwargs):
    args = {"task_id": "auto_trader", "symbols": SYMBOLS, "sources": "synthetic", "broker_conn_id": "simulated",
            "store_conn_id": "desk_store", "risk_limits": LOOSE, "min_score": 0.02, "fraction": 0.05,
            "weights": {"technical": 0.5, "sentiment": 0.5}}
    args.update(kwargs)
    return AutoTraderOperator(**args)


def rows(db, sql, *params):
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(db) as con:
        return con.execute(sql, params).fetchall()


def test_a_cycle_records_signals_decisions_verdicts_orders_and_equity(db):
    summary = trader().execute(context())
    assert json.loads(json.dumps(summary)) == summary  # small and JSON-able
    assert summary["account"] == "simulated:default" and summary["symbols"] == len(SYMBOLS)
    assert summary["decided"] == len(SYMBOLS) and summary["errors"] == {}
    decisions = rows(db, "SELECT symbol, action, approved, client_order_id, signals, bar_ts FROM trading_decisions")
    assert sorted(d[0] for d in decisions) == sorted(SYMBOLS)
    for symbol, action, approved, cid, signals, bar_ts in decisions:
        assert set(json.loads(signals)) == {"technical", "forecast", "sentiment"}
        assert (cid is not None) == bool(approved) and (approved is None) == (action == "hold")
        # the last CLOSED daily bar, never today's forming one (BTC/USD's 06-04 bar closes at midnight UTC)
        assert bar_ts == pd.Timestamp("2024-06-03", tz="UTC").value // 1000, symbol
    orders = rows(db, "SELECT client_order_id, status FROM orders")
    approved_ids = {d[3] for d in decisions if d[2]}
    assert orders and {o[0] for o in orders} == approved_ids and {o[1] for o in orders} == {"new"}
    assert summary["submitted"] == len(orders)
    (cash, value, equity), = rows(db, "SELECT cash, positions_value, equity FROM equity_curve")
    assert math.isclose(cash + value, equity) and equity == summary["equity"]["equity"] == 100_000.0


def test_a_retry_of_the_same_run_sends_nothing_new_and_a_later_bar_fills_the_orders(db):
    first = trader().execute(context())
    again = trader().execute(context())
    assert again["decided"] == first["decided"] and again["submitted"] == first["submitted"]
    assert rows(db, "SELECT COUNT(*) FROM orders") == [(first["submitted"],)]
    overlapping = trader().execute(context(run_id="scheduled__other"))
    assert overlapping["decided"] == 0 and overlapping["skipped"] == len(SYMBOLS)
    # The next day's cycle sees the next bar: the orders fill at its open.
    trader().execute(context(run_id="scheduled__2", at=AT + pd.Timedelta(days=1)))
    fills = rows(db, "SELECT client_order_id FROM fills")
    assert len(fills) == first["submitted"]


def test_the_kill_switch_halts_every_order(db, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}", "halted")
    summary = trader().execute(context())
    assert summary["submitted"] == 0 and summary["risk_rejected"]
    assert all(reason.startswith("kill_switch") for reason in summary["risk_rejected"].values())
    assert rows(db, "SELECT COUNT(*) FROM orders") == [(0,)]


def test_the_kill_switch_variable_is_read_again_right_before_sending(db, monkeypatch):
    """The Variable goes to halted after the risk step stored its approvals: nothing is sent."""
    import airflow_provider_portfolio.trading.cycle as cycle_module

    real_risk_step = cycle_module.risk_step

    def risk_then_halt(*args, **kwargs):
        real_risk_step(*args, **kwargs)
        monkeypatch.setenv(f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}", "halted")

    monkeypatch.setattr(cycle_module, "risk_step", risk_then_halt)
    summary = trader().execute(context())
    assert summary["submitted"] == 0 and summary["risk_rejected"]
    assert all("kill switch is 'halted'" in reason for reason in summary["risk_rejected"].values())
    statuses = rows(db, "SELECT DISTINCT status FROM orders")
    assert statuses == [("not_placed",)]
    assert rows(db, "SELECT COUNT(*) FROM trading_decisions WHERE approved = 1") == [(0,)]


@pytest.mark.parametrize(("raw", "state"), [(None, "active"), ("Reduce-Only", "reduce_only"), ("HALTED", "halted"),
                                            ("stop", "halted"), ("  ", "active")])
def test_reading_the_kill_switch(monkeypatch, raw, state):
    name = f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}"
    if raw is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, raw)
    assert read_kill_switch() == state


def test_an_order_in_an_unknown_state_fails_the_task_after_recording_everything(db, monkeypatch):
    def lost(self, request):
        raise OrderStateUnknownError("timed out")

    with monkeypatch.context() as patched, \
            pytest.raises(PortfolioError, match=r"unknown state .* looks these orders up by client_order_id"):
        patched.setattr(SimulatedBroker, "submit", lost)
        trader().execute(context())
    pending = rows(db, "SELECT status, reason FROM orders")
    assert pending and all(p == ("pending_submit", "timed out") for p in pending)
    assert rows(db, "SELECT COUNT(*) FROM trading_decisions") == [(len(SYMBOLS),)]
    retry = trader().execute(context())  # the same run: sends each pending order once
    assert retry["unknown"] == {} and retry["submitted"] == len(pending)
    assert {s for s, in rows(db, "SELECT status FROM orders")} == {"new"}


def test_unknown_symbols_and_a_closed_market_are_recorded_with_reasons(db):
    saturday = pd.Timestamp("2024-06-08 12:00", tz="America/New_York")
    summary = trader(symbols=["AAPL", "BTC/USD"], risk_limits={**LOOSE, "min_confidence": 0.0},
                     min_score=0.0).execute(context(at=saturday))
    rejected = summary["risk_rejected"]
    assert "BTC/USD" not in rejected  # crypto trades around the clock
    assert rejected.get("AAPL", "market_open").startswith("market_open")


def test_forecasts_from_the_store_feed_the_forecast_signal(db):
    store = PortfolioStore.for_sqlite_file(db)
    store.migrate()
    close = SyntheticMarket(seed=0).bars("AAPL", "2024-05-01", "2024-06-03")["close"].iloc[-1]
    base = math.log(close)
    forecasts = pd.DataFrame([{
        "run_id": "fc", "model": "ensemble", "symbol": "AAPL", "timeframe": "1Day", "step": 1,
        "asof": pd.Timestamp("2024-06-03", tz="UTC"), "target_ts": pd.Timestamp("2024-06-04", tz="UTC"),
        "target": "log_close", "point": base + 0.02, "lower": base - 0.01, "upper": base + 0.05, "level": 0.9,
        "variance": None, "backend": "numpy", "device": "cpu"}])
    evaluations = pd.DataFrame([{
        "run_id": "fc", "model": "ensemble", "symbol": "AAPL", "timeframe": "1Day",
        "asof": pd.Timestamp("2024-06-03", tz="UTC"), "horizon": 5, "origins": 3, "rmse": None, "mae": None,
        "directional_accuracy": None, "coverage": None, "baseline": "last_value", "baseline_rmse": None,
        "skill": None, "label": "healthy", "healthy": True, "weight": None, "backend": "numpy", "device": "cpu"}])
    store.write_forecasts(forecasts, evaluations)
    store.dispose()
    trader(symbols=["AAPL", "MSFT"]).execute(context())
    signals = {s: json.loads(j)["forecast"] for s, j in rows(db, "SELECT symbol, signals FROM trading_decisions")}
    assert signals["AAPL"]["confidence"] == 1.0
    assert math.isclose(signals["AAPL"]["score"], math.tanh(0.02 / 0.03), rel_tol=1e-9)
    assert signals["MSFT"] == {"score": 0.0, "confidence": 0.0, "reason": "no stored forecast: ignored"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"symbols": "AAPL,not a symbol"}, "symbol"),
    ({"risk_limits": {"max_notional": 5}}, "unknown risk limit key"),
    ({"weights": {"astrology": 1.0}}, "unknown signal name"),
    ({"max_trades_per_day": -1}, "max_trades_per_day"),
    ({"as_of": "2024-06-04T15:00:00"}, "time zone"),
    ({"as_of": "2999-01-01T15:00:00+00:00"}, "more than 7 days after now"),
    ({"as_of": "yesterday"}, "ISO 8601"),
    ({"as_of": "2024-06-04"}, "instant with a time and a zone"),
    ({"symbols": "None"}, "rendered empty"),
    ({"timeframe": "7Weeks"}, "unknown timeframe"),
])
def test_bad_arguments_fail_before_anything_is_written(db, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        trader(**kwargs).execute(context())
    assert not db.exists() or rows(db, "SELECT name FROM sqlite_master WHERE name = 'accounts'") == [] \
        or rows(db, "SELECT COUNT(*) FROM accounts") == [(0,)], "nothing may be written before the input is checked"


def test_as_of_overrides_the_run_instant(db):
    summary = trader(as_of="2024-06-05T15:00:00-04:00").execute(context())
    assert summary["as_of"] == "2024-06-05T19:00:00+00:00"


def test_a_cycle_waits_for_the_accounts_lock_then_fails_clearly(db):
    """Another cycle holds the simulated account: the operator gives up after lock_timeout_s, writing nothing."""
    from airflow_provider_portfolio.exceptions import AccountLockedError
    from airflow_provider_portfolio.store.ledger import TradingLedger
    from tests.trading.conftest import held_by_another_cycle

    store = PortfolioStore.for_sqlite_file(db)
    store.migrate()
    try:
        with held_by_another_cycle(TradingLedger(store), "simulated:default", "portfolio_auto_trader_core/run-9"):
            with pytest.raises(AccountLockedError, match="portfolio_auto_trader_core/run-9"):
                trader(lock_timeout_s=0.2).execute(context())
            assert rows(db, "SELECT COUNT(*) FROM trading_decisions") == [(0,)]
    finally:
        store.dispose()
    assert trader().execute(context())["decided"] == len(SYMBOLS)
