"""The trading DAGs in a real Airflow: a simulated month of the agent DAGs (`airflow dags test` and the
`dag.test()` behind it), `dags test` of both auto traders, and `airflow standalone` running
`portfolio_auto_trader` end to end through its market-hours sensor and mapped chunks."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.airflow.realairflow import BIN, REPO, AirflowServer, airflow_env, run_airflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

UNIVERSE = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "SPY", "QQQ", "IWM", "BTC/USD"]


def store_rows(db: Path, sql: str, *params) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(db) as con:
        return con.execute(sql, params).fetchall()


def test_dags_test_runs_an_agent_pipeline(tmp_path):
    env = airflow_env(tmp_path / "home")
    run_airflow(env, "db", "migrate")
    proc = run_airflow(env, "dags", "test", "agent_tsla_trading", "2024-02-29T15:00:00-05:00")
    out = proc.stdout + proc.stderr
    for task_id in ("check_market_hours", "fetch_market_data", "analyze_sentiment", "analyze_technical",
                    "make_decision", "validate_risk", "execute_trade", "log_performance"):
        assert task_id in out
    assert re.search(r"DagRun Finished: dag_id=agent_tsla_trading.* state=success", out), out[-3000:]
    db = tmp_path / "home" / "portfolio" / "portfolio.db"
    assert store_rows(db, "SELECT dag_id, symbol FROM trading_decisions") == [("agent_tsla_trading", "TSLA")]
    assert store_rows(db, "SELECT account FROM equity_curve") == [("simulated:agent_tsla_trading",)]
    # The bars passed from fetch_market_data to the analysis went through the store, not XCom.
    assert store_rows(db, "SELECT count(*) FROM bars WHERE symbol = 'TSLA'")[0][0] >= 60


@pytest.mark.month
def test_a_simulated_month_of_the_agent_dags_reconciles(tmp_path):
    env = airflow_env(tmp_path / "home")
    run_airflow(env, "db", "migrate")
    # A month of sessions for the three agents, in one process: dag.test(), what `airflow dags test` runs.
    proc = subprocess.run([str(BIN / "python"), str(REPO / "scripts" / "simulate_month.py"), "--start", "2024-03-01",
                           "--end", "2024-03-28"], env=env, capture_output=True, text=True, timeout=1200,
                          cwd=env["AIRFLOW_HOME"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["sessions"] == 20  # March 2024 up to the 28th (Good Friday, the 29th, has no session)
    for dag_id, states in report["runs"].items():
        assert states == {"success": 20}, (dag_id, states)
    books = {b["account"]: b for b in report["books"]}
    assert all(b["problems"] == [] for b in books.values()), books
    assert sum(b["fills"] for b in books.values()) >= 5, books  # the month really traded
    db = tmp_path / "home" / "portfolio" / "portfolio.db"
    # The reconciliation, again from here: every snapshot adds up, one decision per DAG and bar.
    assert store_rows(db, "SELECT COUNT(*) FROM equity_curve WHERE ABS(cash + positions_value - equity) > 1e-6") \
        == [(0,)]
    dupes = store_rows(db, "SELECT dag_id, symbol, bar_ts, COUNT(*) FROM trading_decisions "
                           "GROUP BY dag_id, symbol, bar_ts HAVING COUNT(*) > 1")
    assert dupes == []
    per_dag = dict(store_rows(db, "SELECT dag_id, COUNT(*) FROM trading_decisions GROUP BY dag_id"))
    assert per_dag == {"agent_tsla_trading": 20, "agent_iwm_trading": 20, "agent_btc_trading": 20}
    # Orders fill on a bar after their decision's, at its open ...
    # ... and never at a bar that started before the order was placed (no price from the past).
    early = store_rows(db, "SELECT COUNT(*) FROM fills f JOIN orders o USING (account, client_order_id) "
                           "WHERE f.bar_ts <= o.bar_ts OR f.bar_ts < o.created_at")
    assert early == [(0,)]


def test_dags_test_of_both_auto_traders(tmp_path):
    env = airflow_env(tmp_path / "home")
    run_airflow(env, "db", "migrate")
    # The universe comes from the Variable (it was hard-coded), read when the run starts.
    run_airflow(env, "variables", "set", "portfolio.default_tickers", "AAPL, MSFT, BTC/USD")
    # The sensor watches the calendar of the run's param: "24/7" opens it whatever the clock says.
    run_airflow(env, "dags", "test", "portfolio_auto_trader", "2024-06-04T14:00:00-04:00",
                "--conf", json.dumps({"exchange": "24/7"}))
    run_airflow(env, "dags", "test", "portfolio_auto_trader_core", "2024-06-04T14:00:00-04:00")
    db = tmp_path / "home" / "portfolio" / "portfolio.db"
    decided = dict(store_rows(db, "SELECT dag_id, COUNT(*) FROM trading_decisions GROUP BY dag_id"))
    assert decided == {"portfolio_auto_trader": 3, "portfolio_auto_trader_core": 5}
    accounts = {a for a, in store_rows(db, "SELECT account FROM equity_curve")}
    assert accounts == {"simulated:default", "simulated:core"}
    bars = {b for b, in store_rows(db, "SELECT DISTINCT bar_ts FROM trading_decisions WHERE symbol = 'AAPL' "
                                       "AND dag_id = 'portfolio_auto_trader'")}
    # 14:00 New York: the last closed 30-minute bar started at 13:30 (17:30 UTC)
    assert bars == {pd.Timestamp("2024-06-04 17:30", tz="UTC").value // 1000}


def test_standalone_runs_the_auto_trader_through_its_sensor_and_mapped_chunks(tmp_path):
    home = tmp_path / "standalone-home"
    path = "/api/v2/dags/portfolio_auto_trader/dagRuns"
    with AirflowServer(home) as airflow:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            dags = airflow.request("GET", "/api/v2/dags?dag_id_pattern=portfolio_auto_trader")
            if "portfolio_auto_trader" in {d["dag_id"] for d in dags["dags"]}:
                break
            time.sleep(3)
        else:
            raise AssertionError(airflow.tail())
        # Unpausing may also start the latest scheduled run (weekdays 07:00-19:30 New York); it decides the
        # same bars as the manual run, so between them each symbol's bar is decided exactly once.
        airflow.request("PATCH", "/api/v2/dags/portfolio_auto_trader", {"is_paused": False})
        manual = airflow.request("POST", path, {"logical_date": None, "conf": {"exchange": "24/7"}})["dag_run_id"]
        deadline = time.monotonic() + 600
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = airflow.request("GET", path)["dag_runs"]
            if runs and all(r["state"] in ("success", "failed") for r in runs):
                break
            time.sleep(5)
        assert {r["state"] for r in runs} == {"success"}, (runs, airflow.tail())
        tis = airflow.request("GET", f"{path}/{manual}/taskInstances")["task_instances"]
        states = sorted((t["task_id"], t["map_index"], t["state"]) for t in tis)
        assert states == [("auto_trader", 0, "success"), ("auto_trader", 1, "success"), ("desk_gate", -1, "success"),
                          ("market_hours", -1, "success"), ("universe", -1, "success")], states
        run_ids = {r["dag_run_id"] for r in runs}
    db = home / "portfolio" / "portfolio.db"
    rows = store_rows(db, "SELECT run_id, symbol, bar_ts, approved FROM trading_decisions")
    assert {r[0] for r in rows} <= run_ids and manual in run_ids
    assert sorted({r[1] for r in rows}) == sorted(UNIVERSE)
    keys = [(r[1], r[2]) for r in rows]
    assert len(keys) == len(set(keys))  # one decision per symbol and bar, whichever run made it
    snapshots = {r for r, in store_rows(db, "SELECT run_id FROM equity_curve")}
    assert manual in snapshots
    orders = store_rows(db, "SELECT COUNT(*) FROM orders")
    assert orders == [(sum(1 for r in rows if r[3]),)]
