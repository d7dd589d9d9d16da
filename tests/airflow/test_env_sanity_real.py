"""The environment gate in a real Airflow: `airflow dags test` of tests/dags/portfolio_env_gate.py runs the trader
when nothing is RED and skips it (state ``skipped``) once the kill switch is ``halted``."""

from __future__ import annotations

import json

import pytest

from tests.airflow.realairflow import REPO, airflow_env, run_airflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAG_ID = "portfolio_env_gate"


def json_out(proc) -> list[dict]:
    """The JSON list an ``airflow ... -o json`` command printed (after any warning lines)."""
    return json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("[")))


def task_states(env, run_id: str) -> dict[str, str]:
    rows = json_out(run_airflow(env, "tasks", "states-for-dag-run", DAG_ID, run_id, "-o", "json"))
    return {row["task_id"]: row["state"] for row in rows}


def test_dags_test_runs_the_trader_on_a_sound_desk_and_skips_it_when_red(tmp_path):
    env = airflow_env(tmp_path / "home", AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "tests" / "dags"))
    run_airflow(env, "db", "migrate")
    green = run_airflow(env, "dags", "test", DAG_ID)
    run_airflow(env, "variables", "set", "portfolio.kill_switch", "halted")
    red = run_airflow(env, "dags", "test", DAG_ID)

    runs = sorted(json_out(run_airflow(env, "dags", "list-runs", DAG_ID, "-o", "json")), key=lambda r: r["run_after"])
    assert [r["state"] for r in runs] == ["success", "success"]
    assert task_states(env, runs[0]["run_id"]) == {"env_sanity": "success", "trade": "success"}
    assert task_states(env, runs[1]["run_id"]) == {"env_sanity": "success", "trade": "skipped"}
    assert "Returned value was: traded" in green.stdout + green.stderr
    out = red.stdout + red.stderr
    assert "RED kill_switch: kill switch halted" in out and "skipping 1 downstream task(s): trade" in out
    assert "Returned value was: traded" not in out
