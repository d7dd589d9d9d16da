"""The cluster policy: a task instance whose provider pool is missing runs in default_pool; nothing else changes."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from importlib.metadata import entry_points

import pytest

from airflow_provider_portfolio import policies
from airflow_provider_portfolio.pools import DATABASE_POOL, DEFAULT_POOL, GPU_POOL, POOLS
from tests.airflow.realairflow import BIN, airflow_env, run_airflow, stop_group


class FakeTI:
    def __init__(self, pool: str, task_id: str = "fit") -> None:
        self.dag_id, self.task_id, self.run_id, self.pool = "desk", task_id, "manual__1", pool


@pytest.fixture
def pools_in_db(monkeypatch) -> list[int]:
    """The metadata database's pools as the policy reads them: ``default_pool`` and ``database_pool``; returns
    the list that counts the reads."""
    reads: list[int] = []

    def read() -> frozenset[str]:
        reads.append(1)
        return frozenset({DEFAULT_POOL, DATABASE_POOL})

    policies.clear_cache()
    monkeypatch.setattr(policies, "_read_pool_names", read)
    yield reads
    policies.clear_cache()


def test_missing_provider_pool_falls_back_to_default_pool_with_one_log_line(pools_in_db, caplog):
    ti = FakeTI(GPU_POOL)
    with caplog.at_level(logging.WARNING, logger=policies.__name__):
        policies.task_instance_mutation_hook(ti)
        policies.task_instance_mutation_hook(ti)  # Airflow calls it again on the same instance: nothing more
    assert ti.pool == DEFAULT_POOL
    lines = [r.getMessage() for r in caplog.records if r.name == policies.__name__]
    assert len(lines) == 1
    assert "desk.fit" in lines[0] and "'gpu_pool'" in lines[0]
    assert "python -m airflow_provider_portfolio setup" in lines[0]


def test_existing_provider_pool_and_other_pools_are_left_alone(pools_in_db, caplog):
    present, other, default = FakeTI(DATABASE_POOL), FakeTI("team_pool"), FakeTI(DEFAULT_POOL)
    with caplog.at_level(logging.DEBUG, logger=policies.__name__):
        for ti in (other, default):
            policies.task_instance_mutation_hook(ti)
        assert pools_in_db == []  # pools that are not the provider's never cost a read
        policies.task_instance_mutation_hook(present)
    assert (present.pool, other.pool, default.pool) == (DATABASE_POOL, "team_pool", DEFAULT_POOL)
    assert [r for r in caplog.records if r.name == policies.__name__] == []


def test_pool_names_are_read_once_per_cache_period(pools_in_db, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(policies, "_clock", lambda: now[0])
    for pool in POOLS:
        policies.task_instance_mutation_hook(FakeTI(pool))
    assert len(pools_in_db) == 1
    now[0] += policies.CACHE_SECONDS - 1
    policies.task_instance_mutation_hook(FakeTI(GPU_POOL))
    assert len(pools_in_db) == 1
    now[0] += 2
    policies.task_instance_mutation_hook(FakeTI(GPU_POOL))
    assert len(pools_in_db) == 2


def test_the_hook_never_raises(monkeypatch):
    def broken() -> frozenset[str]:
        raise RuntimeError("database gone")

    policies.clear_cache()
    monkeypatch.setattr(policies, "_read_pool_names", broken)
    ti = FakeTI(GPU_POOL)
    policies.task_instance_mutation_hook(ti)  # pools unreadable: left as it is
    assert ti.pool == GPU_POOL

    class Frozen(FakeTI):
        def __setattr__(self, name, value):
            if name == "pool" and hasattr(self, "pool"):
                raise AttributeError("read-only")
            super().__setattr__(name, value)

    monkeypatch.setattr(policies, "_read_pool_names", lambda: frozenset({DEFAULT_POOL}))
    policies.clear_cache()
    frozen = Frozen(GPU_POOL)
    policies.task_instance_mutation_hook(frozen)
    assert frozen.pool == GPU_POOL
    policies.task_instance_mutation_hook(object())  # no pool at all
    policies.clear_cache()


def test_airflow_loads_the_policy_through_its_entry_point_and_calls_it():
    import airflow.settings as settings

    assert [ep.value for ep in entry_points(group="airflow.policy") if ep.name == "airflow_provider_portfolio"] == [
        "airflow_provider_portfolio.policies"
    ]
    manager = settings.get_policy_plugin_manager() if hasattr(settings, "get_policy_plugin_manager") \
        else settings.POLICY_PLUGIN_MANAGER  # Airflow < 3.2
    impls = manager.hook.task_instance_mutation_hook.get_hookimpls()
    assert policies in [impl.plugin for impl in impls]
    # Without an airflow_local_settings, Airflow would insert task instances without calling any hook.
    assert settings.task_instance_mutation_hook.is_noop is False


def test_pool_fallback_false_leaves_airflow_s_task_creation_alone():
    """``[portfolio] pool_fallback = False``: the policy does not switch Airflow to calling the hook."""
    code = (
        "import airflow.settings as s, airflow_provider_portfolio.policies as p; "
        "print(s.task_instance_mutation_hook.is_noop)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__PORTFOLIO__")}
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "AIRFLOW__PORTFOLIO__POOL_FALLBACK": "False"})
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert (off.stdout.split()[-1], on.stdout.split()[-1]) == ("True", "False")


POOL_DAG = '''
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="pool_fallback", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1), catchup=False)
def pool_fallback():
    @task(pool="gpu_pool")
    def on_gpu():
        return 1

    @task(pool="database_pool")
    def on_db():
        return 2

    @task(pool="team_pool")
    def on_team():
        return 3

    on_gpu()
    on_db()
    on_team()


pool_fallback()
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_scheduler_queues_a_task_of_a_missing_provider_pool_in_default_pool(tmp_path):
    """gpu_pool is missing (-> default_pool, queued), database_pool exists (kept), team_pool is missing but not the
    provider's (untouched: the scheduler leaves it scheduled)."""
    home, dags = tmp_path / "home", tmp_path / "dags"
    dags.mkdir()
    (dags / "pool_fallback.py").write_text(POOL_DAG)
    env = airflow_env(home, AIRFLOW__CORE__DAGS_FOLDER=str(dags), AIRFLOW__CORE__EXECUTOR="LocalExecutor",
                      AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False")
    run_airflow(env, "db", "migrate")
    db = home / "airflow.db"
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO slot_pool (pool, slots, description, include_deferred) VALUES (?, 2, 'x', 0)",
                    (DATABASE_POOL,))
    run_airflow(env, "dags", "reserialize")

    log_path = home / "scheduler.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(BIN / "airflow"), "scheduler"], env=env, cwd=home, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline, tis = time.monotonic() + 180, {}
            while time.monotonic() < deadline and proc.poll() is None:
                with sqlite3.connect(db) as con:
                    tis = {t: (p, s) for t, p, s in con.execute("SELECT task_id, pool, state FROM task_instance")}
                if len(tis) == 3 and tis["on_gpu"][1] not in (None, "scheduled") \
                        and tis["on_db"][1] not in (None, "scheduled"):
                    break
                time.sleep(1)
        finally:
            stop_group(proc, grace=30)
    out = log_path.read_text()
    assert len(tis) == 3, json.dumps(tis) + out[-4000:]
    assert tis["on_gpu"][0] == DEFAULT_POOL and tis["on_gpu"][1] not in (None, "scheduled"), (tis, out[-4000:])
    assert tis["on_db"][0] == DATABASE_POOL and tis["on_db"][1] not in (None, "scheduled"), tis
    assert tis["on_team"] == ("team_pool", "scheduled"), tis
    lines = [line for line in out.splitlines() if "which does not exist: it runs in" in line]
    assert lines and all("pool_fallback.on_gpu" in line and "'gpu_pool'" in line for line in lines), lines
    assert "python -m airflow_provider_portfolio setup" in lines[0]
    assert "non-existent pool 'team_pool'" in out
