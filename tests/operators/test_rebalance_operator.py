"""RebalanceOperator.execute() in-process on a real SQLite store: the example DAG's task green on the embedded
defaults after a daily ETL (the first run from cash buys the whole universe), a retry of the same run sending nothing
twice, the kill switch Variable, bad input refused before the store is opened, live never a default."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.operators.rebalance import RebalanceOperator
from airflow_provider_portfolio.operators.trading import KILL_SWITCH_VARIABLE
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.variables import DEFAULT_TICKERS
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ["AAPL", "MSFT", "SPY", "BTC/USD"]
# Monday 2024-06-03: the daily ETL at 05:15 New York, the weekly rebalance at 10:00 (NYSE open).
ETL_AT = pd.Timestamp("2024-06-03 05:15", tz="America/New_York")
AT = pd.Timestamp("2024-06-03 10:00", tz="America/New_York")
RUN_ID = "scheduled__2024-06-03T14:00:00+00:00"
KILL_SWITCH_ENV = f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}"


def context(run_id: str = RUN_ID, at: pd.Timestamp = AT, dag_id: str = "portfolio_rebalance") -> dict:
    run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=at.to_pydatetime())
    return {"dag_run": run, "data_interval_end": at.to_pydatetime(), "run_id": run_id}


def rows(db: Path, sql: str, *params) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(db) as con:
        return con.execute(sql, params).fetchall()


@pytest.fixture(autouse=True)
def no_variables(monkeypatch):
    for name in (KILL_SWITCH_ENV, "AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS", "AIRFLOW_VAR_PORTFOLIO.SIMULATED_COSTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    """A store behind connection ``desk_store`` with daily bars of SYMBOLS through Friday 2024-05-31."""
    path = tmp_path / "desk.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    store.upsert_bars(SyntheticMarket(seed=7).panel(SYMBOLS, "2023-12-01", "2024-05-31"))
    store.dispose()
    return path


def rebalancer(**kwargs) -> RebalanceOperator:
    args = {"task_id": "rebalance", "symbols": SYMBOLS, "method": "equal", "store_conn_id": "desk_store",
            "risk_limits": {"max_order_notional": 50_000, "max_position_fraction": 0.5}}
    args.update(kwargs)
    return RebalanceOperator(**args)


def example_task():
    """The ``rebalance`` task of example_dags/portfolio_rebalance.py, as a copied DAG has it."""
    path = REPO / "example_dags" / "portfolio_rebalance.py"
    spec = importlib.util.spec_from_file_location("portfolio_rebalance_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.portfolio_rebalance_dag
    assert (dag.dag_id, dag.catchup, dag.max_active_runs) == ("portfolio_rebalance", False, 1)
    return dag.get_task("rebalance")


def test_the_example_dag_after_a_daily_etl_buys_the_universe_on_the_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))  # no connections: embedded store, synthetic market
    etl = PortfolioETLOperator(task_id="load_daily_bars", symbols=DEFAULT_TICKERS, timeframe="1Day",
                               history_sessions=252)
    etl.execute({"dag_run": SimpleNamespace(run_after=ETL_AT.to_pydatetime()),
                 "data_interval_end": ETL_AT.to_pydatetime()})
    task = example_task()
    assert (task.method, task.pool, task.drift_threshold) == ("inverse_volatility", "trading_pool", 0.05)
    summary = task.execute(context())
    assert json.loads(json.dumps(summary)) == summary
    assert summary["account"] == "simulated:rebalance" and summary["errors"] == {}
    assert summary["triggered"] and summary["drifts"]["CASH"] == pytest.approx(0.98)
    assert set(summary["targets"]) == set(DEFAULT_TICKERS) and sum(summary["targets"].values()) == pytest.approx(0.98, abs=1e-5)
    assert summary["risk_rejected"] == {} and summary["submitted"] == len(DEFAULT_TICKERS)  # from cash: everything
    db = tmp_path / "home" / "portfolio" / "portfolio.db"
    assert rows(db, "SELECT COUNT(*), MIN(side), MAX(side), MIN(status) FROM orders") == [
        (len(DEFAULT_TICKERS), "buy", "buy", "new")]
    # sized on Friday's close (equities) and bitcoin's last stored day closed by 10:00 Monday
    bars = dict(rows(db, "SELECT symbol, bar_ts FROM trading_decisions"))
    assert bars["AAPL"] == pd.Timestamp("2024-05-31", tz="UTC").value // 1000
    assert [(bars["BTC/USD"],)] == rows(db, "SELECT MAX(ts) FROM bars WHERE symbol = 'BTC/USD' AND ts <= ?",
                                        pd.Timestamp("2024-06-02", tz="UTC").value // 1000)
    # each position within one share below its target: 98% of equity spent, less than one share of each short
    spent = sum(o["notional"] for o in summary["orders"])
    assert 98_000 - sum(o["price"] for o in summary["orders"]) < spent <= 98_000


def test_a_retry_of_the_same_run_sends_nothing_twice(db):
    first = rebalancer().execute(context())
    assert first["submitted"] == 4 and first["approved"] == 4
    again = rebalancer().execute(context())  # the task's retry: same DAG, same run
    assert again["orders"] == first["orders"] and again["submitted"] == 4
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT client_order_id) FROM orders") == [(4, 4)]
    assert rows(db, "SELECT COUNT(*) FROM trading_decisions") == [(4,)]


def test_the_kill_switch_variable_halts_every_order(db, monkeypatch):
    monkeypatch.setenv(KILL_SWITCH_ENV, "halted")
    summary = rebalancer().execute(context())
    assert summary["submitted"] == 0 and set(summary["risk_rejected"]) == set(SYMBOLS)
    assert all(r.startswith("kill_switch") for r in summary["risk_rejected"].values())
    assert rows(db, "SELECT COUNT(*) FROM orders") == [(0,)]


def test_given_weights_as_rendered_json(db):
    summary = rebalancer(method="given", symbols=None, weights='{"SPY": 0.6, "BTC/USD": 0.3, "CASH": 0.1}',
                         top_n="None").execute(context())
    assert summary["targets"] == {"SPY": 0.6, "BTC/USD": 0.3}
    assert sorted(o["symbol"] for o in summary["orders"]) == ["BTC/USD", "SPY"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "given", "weights": '{"SPY": 0.6, "QQQ": 0.3}'}, r"must sum to 1 .*got a sum of 0\.9 "),
    ({"method": "given", "weights": "SPY=1"}, "weights must be a mapping or its JSON text"),
    ({"method": "momentum"}, "unknown rebalancing method 'momentum'"),
    ({"method": "discovery", "top_n": "ten"}, "top_n must be a whole number >= 1"),
    ({"drift_threshold": "five percent"}, r"drift_threshold must be a number in \[0, 1\), got 'five percent'"),
    ({"drift_threshold": "1.5"}, r"drift_threshold must be a number in \[0, 1\), got '1.5'"),
    ({"method": "equal", "weights": {"SPY": 1.0}}, "weights are for method 'given', not 'equal'"),
    ({"method": "given", "weights": {"SPY": 1.0}, "cash": 0.05}, "cash of 'given' weights is their CASH entry"),
    ({"risk_limits": {"max_leverage": 2}}, "unknown risk limit key"),
    ({"symbols": "None"}, None),  # the Variable's default universe: not an error
])
def test_bad_input_fails_before_the_store_is_opened(tmp_path, monkeypatch, kwargs, message):
    path = tmp_path / "never.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    op = rebalancer(**kwargs)
    if message is None:
        assert op.arguments()["symbols"] == DEFAULT_TICKERS
        return
    with pytest.raises(InvalidInputError, match=message):
        op.execute(context())
    assert not path.exists()


def test_an_empty_store_is_a_clear_error_with_nothing_sent(tmp_path, monkeypatch):
    path = tmp_path / "empty.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    with pytest.raises(InvalidInputError, match="has no 1Day bars of AAPL, MSFT, SPY, BTC/USD .*run the daily ETL"):
        rebalancer().execute(context())
    assert rows(path, "SELECT COUNT(*) FROM orders") == [(0,)]


def test_live_is_never_a_default(db, add_connection):
    add_connection("alpaca_live", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET, paper=False)
    with pytest.raises(InvalidInputError, match="LIVE Alpaca account: live trading needs allow_live=True"):
        rebalancer(broker_conn_id="alpaca_live").execute(context())
    assert rows(db, "SELECT COUNT(*) FROM orders") == [(0,)]


def test_templated_fields_and_defaults():
    op = RebalanceOperator(task_id="r")
    assert {"symbols", "method", "weights", "top_n", "drift_threshold", "broker_conn_id", "store_conn_id",
            "as_of"} <= set(op.template_fields)
    assert (op.pool, op.allow_live, op.simulated_account, op.broker_conn_id) == ("trading_pool", False, "rebalance",
                                                                                 None)
    assert RebalanceOperator(task_id="r", pool="mine").pool == "mine"
