"""The desk on a cluster (`make test-cluster`): two Celery workers, the GPU queue, and faults.

One cluster (:class:`tests.cluster.cluster.Cluster`) serves the whole module; each fault test leaves it whole again
(a killed worker or service is started again) and ends with the same checks on the store
(:func:`tests.cluster.checks.check_desk`): every run ended (success, none stuck), no client order id at the broker
twice, broker orders = approved decisions, the book reconciles, bars complete and unique, no half-written forecast
run. Each fault test trades its own simulated book, so its counts are its own.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.cluster.checks import check_desk
from tests.cluster.cluster import GPU_QUEUE, WORKERS, Cluster, ClusterError, Redis, dag_module, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
DESK = "cluster_desk_day"
FAULTS = "cluster_fault_trade"
GPU_TASKS = {"ssa", "garch"}
START, END = "2024-01-02", "2024-12-31"
AS_OF = "2024-12-31T15:00:00-05:00"
#: Each fault test trades its own book on its own day: a bar decided by one run is skipped by another run of the same
#: DAG (``bar_aware``), whatever the account. Each of these days gives the 12 symbols three orders or more.
FAULT_DAYS = {"etl": "2024-12-31", "record-send": "2024-12-30", "send-answer": "2024-12-27",
              "redis": "2024-12-26", "postgres": "2024-12-23", "scheduler": "2024-12-19"}
FAULT_SYMBOLS = 12
#: The session after a trade fault's day, when the book's next cycle fills its orders.
FILL_DAYS = {"record-send": "2024-12-31", "send-answer": "2024-12-30"}


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # A SIGTERM (a CI job cancelled, a timeout's kill) tears the cluster down like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupted)
    root = tmp_path_factory.mktemp("cluster")
    dags = root / "dags"
    dags.mkdir()
    for source in (HERE / "dags").glob("*.py"):
        shutil.copy(source, dags / source.name)
    try:
        with Cluster(root / "services", dags) as running:
            running.dags = dags
            yield running
    finally:
        signal.signal(signal.SIGTERM, previous)


def symbols_of(n: int) -> list[str]:
    return dag_module("cluster_common").universe(n)


def by_task(tries: list[dict]) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = {}
    for t in tries:
        out.setdefault((t["task_id"], t.get("map_index", -1)), []).append(t)
    for v in out.values():
        v.sort(key=lambda t: t["try_number"])
    return out


def fault_run(cluster: Cluster, tmp_path: Path, *, pause: str, account: str, day: str, **conf) -> tuple[str, Path]:
    """Trigger ``cluster_fault_trade`` pausing at ``pause``; its ETL reloads every bar (``mode`` full), so an ETL
    pause comes even where earlier runs loaded the same bars."""
    cluster.revive()  # whole again after an earlier test, as a process supervisor would have it
    marker = tmp_path / f"{account}.marker"
    run = cluster.trigger(FAULTS, {"pause": pause, "marker": str(marker), "account": account,
                                   "symbols": FAULT_SYMBOLS, "start": START, "end": END,
                                   "as_of": f"{day}T15:00:00-05:00", "mode": "full", **conf})
    return run, marker


def wait_marker(cluster: Cluster, marker: Path, timeout: float = 240) -> dict:
    wait_for(f"the paused task's marker {marker.name}", marker.exists, timeout, every=0.3, tail=cluster.tails)
    return json.loads(marker.read_text())


def desk_checks(cluster: Cluster, account: str, symbols: list[str], **kw) -> dict[str, int]:
    return check_desk(cluster.store_url, account=account, symbols=symbols, start=START, end=END, **kw)


def kill_worker_at_marker(cluster: Cluster, marker: Path) -> tuple[str, dict]:
    """SIGKILL the worker whose task wrote ``marker`` (the worker and its task processes); start it again after the
    run has moved on. Returns the killed worker's name and the marker."""
    held = wait_marker(cluster, marker)
    worker = held["worker"]
    assert worker in WORKERS, held
    cluster.expected_down.add(worker)
    cluster.kill(worker)
    return worker, held


def restart_worker(cluster: Cluster, worker: str) -> None:
    cluster.expected_down.discard(worker)
    cluster.restart(worker)


# -- the cluster ------------------------------------------------------------------------------------------------
def test_the_desk_day_on_two_workers_routes_forecasts_to_the_gpu_worker(cluster):
    run = cluster.trigger(DESK, {"symbols": 24, "chunk": 8, "start": START, "end": END, "as_of": AS_OF})
    assert cluster.wait_run(DESK, run, timeout=600) == "success", cluster.tails()
    tis = cluster.task_instances(DESK, run)
    assert {t["state"] for t in tis} == {"success"}, cluster.failed_logs(DESK, run)
    gpu = [t for t in tis if t["task_id"] in GPU_TASKS]
    other = [t for t in tis if t["task_id"] not in GPU_TASKS]
    assert {t["task_id"] for t in gpu} == GPU_TASKS
    # The GPU-capable forecasts went to the GPU queue and ran on the only worker serving it; nothing else did.
    assert {(t["queue"], t["hostname"]) for t in gpu} == {(GPU_QUEUE, "worker-b")}, gpu
    assert {t["queue"] for t in other} == {"default"}, other
    assert {t["hostname"] for t in other} <= set(WORKERS)
    assert len([t for t in other if t["task_id"] == "etl"]) == 3 and len([t for t in other if t["task_id"] == "trade"]) == 3
    symbols = symbols_of(24)
    counts = desk_checks(cluster, "cluster", symbols, forecast_models={"ssa", "garch"}, forecast_symbols=symbols)
    assert counts["duplicates"] == 0 and counts["pending"] == 0
    assert counts["forecast_runs"] >= 2 and counts["bars"] == counts["bars_expected"] > 0
    print("desk day counts:", counts, "workers:", sorted({t["hostname"] for t in tis}))


# -- worker faults ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pause", ["etl", "record-send", "send-answer"])
def test_a_worker_killed_mid_task_is_retried_on_the_other_worker_with_nothing_lost_or_sent_twice(cluster, tmp_path,
                                                                                              pause):
    account = f"kill-{pause}"
    run, marker = fault_run(cluster, tmp_path, pause=pause, account=account, day=FAULT_DAYS[pause])
    killed, held = kill_worker_at_marker(cluster, marker)
    try:
        state = cluster.wait_run(FAULTS, run, timeout=480)
    finally:
        restart_worker(cluster, killed)
    assert state == "success", cluster.tails()
    tries = by_task(cluster.tries(FAULTS, run))
    key = (held["task_id"], held["map_index"])
    first, *again = tries[key]
    assert first["hostname"] == killed and first["state"] != "success", tries[key]
    assert again and again[-1]["state"] == "success", tries[key]
    survivor = next(w for w in WORKERS if w != killed)
    assert again[-1]["hostname"] == survivor, tries[key]
    counts = desk_checks(cluster, account, symbols_of(FAULT_SYMBOLS), dag_ids={FAULTS})
    assert counts["duplicates"] == 0 and counts["pending"] == 0 and counts["orders"] > 0, counts
    if pause in FILL_DAYS:
        # The book's next cycle, on the next session: the simulated broker fills what the retry (and the dead try)
        # left at the broker, at that session's open. Each order fills once; the book reconciles with its positions.
        follow = cluster.trigger(FAULTS, {"pause": "none", "account": account, "symbols": FAULT_SYMBOLS,
                                          "start": START, "end": END, "as_of": f"{FILL_DAYS[pause]}T15:00:00-05:00"})
        assert cluster.wait_run(FAULTS, follow, timeout=300) == "success", cluster.failed_logs(FAULTS, follow)
        filled = desk_checks(cluster, account, symbols_of(FAULT_SYMBOLS), dag_ids={FAULTS})
        # Every order of the faulted run filled once (an order the next cycle places itself fills a session later).
        assert filled["fills"] == counts["orders"], (counts, filled)
        assert filled["positions"] > 0 and filled["duplicates"] == 0, filled
        counts = filled
    print(f"{pause}: killed {killed}; {len(tries[key])} tries of {key}; counts {counts}")


# -- broker, database and scheduler faults -----------------------------------------------------------------------
def release(marker: Path) -> None:
    """Let the paused task carry on (it polls for its marker)."""
    marker.unlink()


def test_a_redis_restart_during_a_run_loses_no_task(cluster, tmp_path):
    """Redis (no persistence: what was queued is gone) restarts while the ETL is paused; the run still ends."""
    account = "redis-restart"
    run, marker = fault_run(cluster, tmp_path, pause="etl", account=account, day=FAULT_DAYS["redis"])
    wait_marker(cluster, marker)
    cluster.redis.restart(down_s=2)
    release(marker)
    assert cluster.wait_run(FAULTS, run, timeout=480) == "success", cluster.failed_logs(FAULTS, run)
    counts = desk_checks(cluster, account, symbols_of(FAULT_SYMBOLS), dag_ids={FAULTS})
    assert counts["duplicates"] == 0 and counts["pending"] == 0 and counts["orders"] > 0, counts
    print(f"redis restart: counts {counts}")


def test_a_postgresql_restart_between_record_and_send_sends_each_order_once(cluster, tmp_path):
    """PostgreSQL (the store and Airflow's database) restarts while the trader holds recorded, unsent orders."""
    account = "pg-restart"
    run, marker = fault_run(cluster, tmp_path, pause="record-send", account=account, day=FAULT_DAYS["postgres"])
    wait_marker(cluster, marker)
    cluster.postgres.restart(down_s=2)
    release(marker)
    state = cluster.wait_run(FAULTS, run, timeout=480)
    assert state == "success", cluster.failed_logs(FAULTS, run) + cluster.postgres.log_tail()
    tries = by_task(cluster.tries(FAULTS, run))
    counts = desk_checks(cluster, account, symbols_of(FAULT_SYMBOLS), dag_ids={FAULTS})
    assert counts["duplicates"] == 0 and counts["pending"] == 0 and counts["orders"] > 0, counts
    # Airflow's scheduler exits when its database goes; the harness starts it again as a supervisor would.
    print(f"postgres restart: {len(tries[('trade', -1)])} tries of trade; services started again after exiting: "
          f"{cluster.revived}; counts {counts}")


def test_the_scheduler_killed_mid_run_and_started_again_finishes_the_run(cluster, tmp_path):
    account = "scheduler-kill"
    run, marker = fault_run(cluster, tmp_path, pause="record-send", account=account, day=FAULT_DAYS["scheduler"])
    wait_marker(cluster, marker)
    cluster.expected_down.add("scheduler")
    cluster.kill("scheduler")
    release(marker)  # the trader finishes while no scheduler runs
    time.sleep(5)
    cluster.expected_down.discard("scheduler")
    cluster.restart("scheduler")
    assert cluster.wait_run(FAULTS, run, timeout=480) == "success", cluster.failed_logs(FAULTS, run)
    counts = desk_checks(cluster, account, symbols_of(FAULT_SYMBOLS), dag_ids={FAULTS})
    assert counts["duplicates"] == 0 and counts["pending"] == 0 and counts["orders"] > 0, counts
    print(f"scheduler kill: counts {counts}")


WAIT_DAG = '''
from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor


@dag(dag_id="cluster_market_wait", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     tags=["test", "cluster"])
def cluster_market_wait():
    # The 24/7 calendar's session is the UTC day: this window opens {offset_s} s after midnight UTC.
    MarketHoursSensor(task_id="wait_for_open", exchange="24/7", open_offset=timedelta(seconds={offset_s}),
                      deferrable=True)


cluster_market_wait()
'''


def test_a_triggerer_restart_while_the_market_hours_sensor_is_deferred(cluster):
    cluster.revive()
    now = datetime.now(timezone.utc)
    if (now + timedelta(seconds=80)).date() != now.date():
        # The window must open on the session (UTC day) the sensor starts in: wait for the next day.
        next_day = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        time.sleep((next_day - now).total_seconds() + 5)
    opens_at = datetime.now(timezone.utc) + timedelta(seconds=80)
    midnight = opens_at.replace(hour=0, minute=0, second=0, microsecond=0)
    offset_s = int((opens_at - midnight).total_seconds())
    (cluster.dags / "cluster_market_wait.py").write_text(textwrap.dedent(WAIT_DAG.format(offset_s=offset_s)))
    run = cluster.trigger("cluster_market_wait")
    path = f"/api/v2/dags/cluster_market_wait/dagRuns/{run}/taskInstances/wait_for_open"
    wait_for("the sensor deferred", lambda: cluster.request("GET", path)["state"] == "deferred", 90,
             tail=cluster.tails)
    assert datetime.now(timezone.utc) < opens_at, "deferred too late to restart the triggerer before the window"
    cluster.expected_down.add("triggerer")
    cluster.kill("triggerer")
    time.sleep(3)
    cluster.expected_down.discard("triggerer")
    cluster.restart("triggerer")
    assert cluster.wait_run("cluster_market_wait", run, timeout=300) == "success", \
        cluster.failed_logs("cluster_market_wait", run)
    ti = cluster.request("GET", path)
    ended = datetime.fromisoformat(ti["end_date"].replace("Z", "+00:00"))
    assert ended >= midnight + timedelta(seconds=offset_s), ti
    print(f"triggerer restart: sensor ended {ended.isoformat()} after the window opened at {opens_at.isoformat()}")


# -- a service that cannot start ----------------------------------------------------------------------------------
def test_a_service_on_a_taken_port_fails_at_once_with_its_log(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ClusterError) as err:
            Redis(tmp_path, port=port).start(timeout=20)
    assert time.monotonic() - started < 20
    assert "redis exited" in str(err.value) and "Address already in use" in str(err.value), err.value


def test_a_missing_service_binary_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError, match="redis-server not found"):
        Redis(tmp_path)
