"""portfolio_forecast in a real Airflow: `dags test` after the ETL, and `airflow standalone` where the
ETL's Asset event schedules the forecast run in a fresh Airflow with no pool created."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.airflow.realairflow import AirflowServer, airflow_env, run_airflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

UNIVERSE = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "SPY", "QQQ", "IWM", "BTC/USD"]
MODELS = ["garch", "mssa", "samossa", "sarimax", "ssa"]


def store_rows(db: Path, sql: str) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def check_forecasts(db: Path) -> int:
    """Check every run's rows; return the number of runs."""
    rows = store_rows(db, "SELECT run_id, model, COUNT(*) FROM forecasts WHERE model != 'ensemble' "
                          "GROUP BY run_id, model")
    runs = {r for r, _, _ in rows}
    assert runs, "no forecast in the store"
    for run in runs:
        counts = {m: n for r, m, n in rows if r == run}
        assert counts == {m: 5 * len(UNIVERSE) for m in MODELS}, (run, counts)
    evaluations = store_rows(db, "SELECT run_id, model, symbol, label, origins FROM model_evaluations")
    per_model: dict[tuple[str, str], set[str]] = {}
    for run, model, symbol, label, origins in evaluations:
        per_model.setdefault((run, model), set()).add(symbol)
        assert label in ("healthy", "unhealthy", "insufficient_data")
        assert origins >= 1
    assert per_model == {(r, m): set(UNIVERSE) for r in runs for m in [*MODELS, "ensemble"]}, per_model
    targets = dict(store_rows(db, "SELECT model, MIN(target) FROM forecasts GROUP BY model"))
    assert targets["garch"] == "log_return" and targets["ssa"] == "log_close"
    bad = store_rows(db, "SELECT COUNT(*) FROM forecasts WHERE NOT (lower <= point AND point <= upper)")
    assert bad == [(0,)]
    # ensemble forecasts exist exactly for the symbols labelled healthy
    healthy = set(store_rows(db, "SELECT run_id, symbol FROM model_evaluations WHERE model = 'ensemble' AND healthy"))
    with_fc = set(store_rows(db, "SELECT DISTINCT run_id, symbol FROM forecasts WHERE model = 'ensemble'"))
    assert with_fc == healthy
    return len(runs)


def test_dags_test_forecasts_every_model_after_the_etl(tmp_path):
    env = airflow_env(tmp_path / "home")
    run_airflow(env, "db", "migrate")
    run_airflow(env, "dags", "test", "portfolio_daily_etl", "2024-06-04")
    proc = run_airflow(env, "dags", "test", "portfolio_forecast", "2024-06-04")
    out = proc.stdout + proc.stderr
    for task_id in [*MODELS, "ensemble"]:
        assert f"task_id={task_id}" in out or task_id in out
    db = tmp_path / "home" / "portfolio" / "portfolio.db"
    assert check_forecasts(db) == 1
    devices = {d for d, in store_rows(db, "SELECT DISTINCT device FROM forecasts")}
    assert devices == {"cpu"}  # no GPU on this machine: device 'auto' fell back to NumPy and said so
    assert "Forecast device 'auto': using numpy on cpu" in out


def test_standalone_asset_event_starts_the_forecast_in_the_default_pool(tmp_path):
    home = tmp_path / "standalone-home"
    with AirflowServer(home) as airflow:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            dags = airflow.request("GET", "/api/v2/dags?dag_id_pattern=portfolio_")
            if {"portfolio_daily_etl", "portfolio_forecast"} <= {d["dag_id"] for d in dags["dags"]}:
                break
            time.sleep(3)
        else:
            raise AssertionError(airflow.tail())
        airflow.request("PATCH", "/api/v2/dags/portfolio_forecast", {"is_paused": False})
        airflow.request("PATCH", "/api/v2/dags/portfolio_daily_etl", {"is_paused": False})
        airflow.request("POST", "/api/v2/dags/portfolio_daily_etl/dagRuns", {"logical_date": None})
        deadline = time.monotonic() + 600
        state, runs = None, {"dag_runs": []}
        while time.monotonic() < deadline:
            runs = airflow.request("GET", "/api/v2/dags/portfolio_forecast/dagRuns")
            states = [r["state"] for r in runs["dag_runs"]]
            if states and all(s in ("success", "failed") for s in states):
                state = "failed" if "failed" in states else "success"
                break
            time.sleep(5)
        assert runs["dag_runs"], ("no forecast run was created by the asset event", airflow.tail())
        # Unpausing the ETL may also start its latest scheduled run: each ETL success is an asset
        # event, so there may be one forecast run per ETL run.
        for run in runs["dag_runs"]:
            assert run["run_type"] == "asset_triggered"
            path = f"/api/v2/dags/portfolio_forecast/dagRuns/{run['dag_run_id']}/taskInstances"
            tis = airflow.request("GET", path)
            assert state == "success", (tis, airflow.tail())
            by_task = {t["task_id"]: t for t in tis["task_instances"]}
            assert {k: v["state"] for k, v in by_task.items()} == {t: "success" for t in [*MODELS, "ensemble"]}
            for task_id in ("ssa", "samossa", "mssa", "garch"):
                assert (by_task[task_id]["pool"], by_task[task_id]["pool_slots"]) == ("default_pool", 1)
    assert check_forecasts(home / "portfolio" / "portfolio.db") == len(runs["dag_runs"])
