"""The fault DAG's pausing operators (tests/cluster/dags/cluster_faults.py) in-process, no Airflow processes: where
each pause stops, what the store holds there, how it is released, that a retry runs as normal, and that a process
killed at the pause leaves a store its retry finishes with nothing lost or sent twice (tests/cluster/checks.py)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger
from tests.cluster.checks import bars_complete, book_reconciles, no_double_sends, orders_match_decisions
from tests.pgserver import INSTALL_HINT, PostgresServer, find_bindir

DAGS = Path(__file__).resolve().parent / "dags"
AS_OF = "2024-12-31T15:00:00-05:00"
ACCOUNT = "simulated:faults"
RUN_ID = "manual__faults"
CONN_ID = "fault_store"
#: The longest a test waits for a pause to be reached, or for a released task to end, seconds.
WAIT_S = 120.0


@pytest.fixture(scope="module")
def faults():
    """The DAG file imported as Airflow imports it: with its folder on ``sys.path``."""
    sys.path.insert(0, str(DAGS))
    try:
        yield importlib.import_module("cluster_faults")
    finally:
        sys.path.remove(str(DAGS))


@pytest.fixture(scope="module")
def pg_server():
    if find_bindir() is None:
        pytest.fail(f"{INSTALL_HINT}; the PostgreSQL fault tests need it (make system-deps)")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def store_url(tmp_path, monkeypatch) -> str:
    """A SQLite store, connection ``fault_store``."""
    path = tmp_path / "faults.db"
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_store_url(request, tmp_path, monkeypatch) -> str:
    """A store on each dialect, connection ``fault_store``."""
    if request.param == "sqlite":
        yield request.getfixturevalue("store_url")
        return
    server = request.getfixturevalue("pg_server")
    name = f"faults_{os.getpid()}_{request.node.name.split('[')[0][-20:].replace('-', '_')}"
    server.drop_database(name)
    url = server.create_database(name)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": server.user, "schema": name}))
    yield url
    server.drop_database(name)


def context(conf: dict | None = None, *, try_number: int = 1, task_id: str = "trade") -> dict:
    run = SimpleNamespace(dag_id="cluster_fault_trade", run_id=RUN_ID, run_after=None, conf=conf or {})
    return {"dag_run": run, "ti": SimpleNamespace(try_number=try_number, task_id=task_id, map_index=-1),
            "params": {}, "run_id": RUN_ID}


def trader(faults, **kwargs):
    args = {"task_id": "trade", "symbols": faults.universe_symbols({"symbols": 12, "chunk": 6}), "as_of": AS_OF, "simulated_account": "faults",
            "store_conn_id": CONN_ID, **faults.TRADER_ARGS}
    return faults.PausingTrader(**{**args, **kwargs})


def ledger_of(url: str) -> tuple[PortfolioStore, TradingLedger]:
    store = PortfolioStore(url)
    return store, TradingLedger(store)


def statuses(url: str) -> dict[str, str]:
    store, ledger = ledger_of(url)
    try:
        return {o["client_order_id"]: o["status"] for o in ledger.orders(ACCOUNT)}
    finally:
        store.dispose()


def approved_ids(url: str) -> set[str]:
    store, ledger = ledger_of(url)
    try:
        return {d["client_order_id"] for d in ledger.decisions("cluster_fault_trade") if d["approved"]}
    finally:
        store.dispose()


def the_book_holds(url: str) -> dict[str, int]:
    """Nothing lost or sent twice: the checks of the desk's orders and book."""
    sent = no_double_sends(url, ACCOUNT).passed()
    matched = orders_match_decisions(url, ACCOUNT).passed()
    book_reconciles(url, ACCOUNT).passed()
    assert sent["duplicates"] == 0 and matched["pending"] == 0
    return {**sent, **matched}


def wait_for(marker: Path, alive=lambda: True, what: str = "the pause") -> dict:
    """The marker's payload, once the paused task wrote it."""
    deadline = time.monotonic() + WAIT_S
    while not marker.exists():
        assert alive(), f"the task ended before {what}"
        assert time.monotonic() < deadline, f"{what} not reached in {WAIT_S:g} s"
        time.sleep(0.05)
    return json.loads(marker.read_text())


class InThread:
    """``op.execute(ctx)`` in a thread; :meth:`result` joins it."""

    def __init__(self, op, ctx) -> None:
        self.out: dict = {}
        self.thread = threading.Thread(target=self._run, args=(op, ctx), daemon=True)
        self.thread.start()

    def _run(self, op, ctx) -> None:
        try:
            self.out["result"] = op.execute(ctx)
        except BaseException as err:  # handed to the test
            self.out["error"] = err

    def result(self) -> dict:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the released task did not end"
        if "error" in self.out:
            raise self.out["error"]
        return self.out["result"]


# -- the DAG ------------------------------------------------------------------------------------------------

def test_the_dag_maps_the_etl_and_retries_both_tasks(faults):
    dag = faults.cluster_fault_trade()
    assert dag.dag_id == "cluster_fault_trade"
    assert set(dag.task_dict) == {"chunks", "symbols", "etl", "trade"}
    etl, trade = dag.get_task("etl"), dag.get_task("trade")
    assert isinstance(trade, faults.PausingTrader) and etl.operator_class is faults.PausingETL
    assert trade.upstream_task_ids == {"etl", "symbols"}
    for task in (etl, trade):
        assert task.retries == 2 and task.retry_delay == timedelta(seconds=5)
    assert "simulated_account" in trade.template_fields and trade.simulated_account == "{{ params.account }}"
    assert trade.broker_conn_id == "simulated" and trade.sources == "synthetic" and trade.forecast_model is None
    assert dag.params["pause"] == "none" and dag.params["pause_s"] == 300
    assert faults.universe_chunks({"symbols": 14, "chunk": 6}) == [
        ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META"], ["TSLA", "SPY", "QQQ", "IWM", "BTC/USD", "ETH/USD"],
        ["T0001", "T0002"]]


def test_without_a_pause_the_default_universe_trades_at_the_default_instant(faults, store_url, tmp_path):
    """So a run that asks for a trade pause gets one: the default day sends orders."""
    result = trader(faults).execute(context({"pause": "none", "marker": str(tmp_path / "never")}))
    assert result["submitted"] >= 3 and result["unknown"] == {} and result["account"] == ACCOUNT
    assert not (tmp_path / "never").exists()
    counts = the_book_holds(store_url)
    assert counts["orders"] == counts["at_broker"] == counts["decisions_approved"] == result["submitted"]


# -- where each pause stops ---------------------------------------------------------------------------------

def test_record_send_stops_before_the_first_order_reaches_the_book(faults, store_url, tmp_path):
    marker = tmp_path / "record-send.json"
    running = InThread(trader(faults), context({"pause": "record-send", "marker": str(marker), "pause_s": WAIT_S}))
    payload = wait_for(marker, running.thread.is_alive)
    assert payload["pause"] == "record-send" and payload["pid"] == os.getpid() and payload["try_number"] == 1
    assert payload["task_id"] == "trade" and payload["account"] == ACCOUNT
    at_pause = statuses(store_url)
    # every approved order is recorded before the first is sent; none is at the book
    assert set(at_pause) == approved_ids(store_url) and payload["client_order_id"] in at_pause
    assert set(at_pause.values()) == {"pending_submit"} and len(at_pause) >= 3
    marker.unlink()  # release
    result = running.result()
    assert result["submitted"] == len(at_pause)
    assert set(statuses(store_url).values()) == {"new"}
    assert the_book_holds(store_url)["orders"] == len(at_pause)


def test_send_answer_stops_after_the_book_accepted_the_first_order(faults, store_url, tmp_path):
    marker = tmp_path / "send-answer.json"
    running = InThread(trader(faults), context({"pause": "send-answer", "marker": str(marker), "pause_s": WAIT_S}))
    payload = wait_for(marker, running.thread.is_alive)
    at_pause = statuses(store_url)
    first = payload["client_order_id"]
    assert payload["status"] == "new" and at_pause.pop(first) == "new"
    assert at_pause and set(at_pause.values()) == {"pending_submit"}  # the others not sent yet
    marker.unlink()
    assert running.result()["submitted"] == len(at_pause) + 1
    assert set(statuses(store_url).values()) == {"new"}
    the_book_holds(store_url)


def test_a_retry_runs_as_normal(faults, store_url, tmp_path):
    marker = tmp_path / "retry.json"
    result = trader(faults).execute(context({"pause": "record-send", "marker": str(marker)}, try_number=2))
    assert not marker.exists() and result["submitted"] >= 3
    assert set(statuses(store_url).values()) == {"new"}


def test_the_pause_ends_after_pause_s_without_a_release(faults, store_url, tmp_path):
    marker = tmp_path / "short.json"
    result = trader(faults).execute(context({"pause": "send-answer", "marker": str(marker), "pause_s": 0.05}))
    assert marker.exists() and json.loads(marker.read_text())["pause"] == "send-answer"
    assert result["submitted"] >= 3 and set(statuses(store_url).values()) == {"new"}


def test_another_tasks_pause_is_left_alone(faults, tmp_path):
    """The marker is made at most once: a second task (a mapped chunk, a try delivered again) does not pause."""
    marker = tmp_path / "once.json"
    marker.write_text('{"pause": "etl", "pid": 1}')
    pause = faults.Pause("etl", marker, 300.0)
    log = SimpleNamespace(warning=lambda *a: None, info=lambda *a: None)
    assert pause.hold(log, symbols=["AAPL"]) is False
    assert json.loads(marker.read_text()) == {"pause": "etl", "pid": 1}
    assert pause.hold(log) is False  # once per try in any case
    assert not list(tmp_path.glob(".once.json.*"))  # no draft left


def test_the_conf_over_the_params_plans_a_pause_for_the_first_try_only(faults, tmp_path):
    log = SimpleNamespace(warning=lambda *a: None, info=lambda *a: None)
    ctx = context({"pause": "etl", "marker": str(tmp_path / "m")}, task_id="etl")
    ctx["params"] = {"pause": "none", "marker": "", "pause_s": 300}
    ctx["ti"].map_index = None  # an unmapped task instance may say None
    pause = faults.planned_pause(ctx, faults.ETL_PAUSES, 1.0, log)
    assert (pause.kind, pause.marker, pause.seconds) == ("etl", tmp_path / "m", 300.0)
    assert pause.task == {"dag_id": "cluster_fault_trade", "run_id": RUN_ID, "task_id": "etl", "map_index": -1,
                          "try_number": 1}
    assert faults.planned_pause(ctx, faults.TRADE_PAUSES, 1.0, log) is None  # not this task's pause
    ctx["ti"].try_number = 2
    assert faults.planned_pause(ctx, faults.ETL_PAUSES, 1.0, log) is None
    assert faults.planned_pause(context({"pause": "etl", "marker": "m"}), faults.ETL_PAUSES, 1.5, log).seconds == 1.5


def test_a_pause_needs_its_marker(faults, store_url, tmp_path):
    with pytest.raises(ValueError, match="needs 'marker'"):
        trader(faults).execute(context({"pause": "record-send"}))
    with pytest.raises(ValueError, match="pause_s"):
        trader(faults).execute(context({"pause": "send-answer", "marker": "m", "pause_s": -1}))
    assert not (tmp_path / "faults.db").exists()  # refused before the store was opened


def test_the_trader_ignores_the_etl_pause_and_the_etl_the_traders(faults, store_url, tmp_path):
    marker = tmp_path / "other.json"
    assert trader(faults).execute(context({"pause": "etl", "marker": str(marker)}))["submitted"] >= 3
    etl = faults.PausingETL(task_id="etl", symbols=["SPY"], start="2024-05-01", end="2024-05-31",
                            sources="synthetic", store_conn_id=CONN_ID)
    assert etl.execute(context({"pause": "record-send", "marker": str(marker)}, task_id="etl"))["rows_written"] == 22
    assert not marker.exists()


# -- killed at the pause: the retry finishes the job --------------------------------------------------------

CHILD = """
import json, sys
from types import SimpleNamespace
sys.path.insert(0, sys.argv[1])
import cluster_faults as faults
spec = json.loads(sys.argv[2])
cls = faults.PausingTrader if spec["task_id"] == "trade" else faults.PausingETL
args = {**(faults.TRADER_ARGS if spec["task_id"] == "trade" else {}), **spec["args"]}
run = SimpleNamespace(dag_id="cluster_fault_trade", run_id=spec["run_id"], run_after=None, conf=spec["conf"])
ti = SimpleNamespace(try_number=1, task_id=spec["task_id"], map_index=-1)
print(json.dumps(cls(**args).execute({"dag_run": run, "ti": ti, "params": {}, "run_id": spec["run_id"]})))
"""


class Worker:
    """Try 1 of a task in a process of its own (a worker's task process), to be killed at its pause."""

    def __init__(self, tmp_path: Path, task_id: str, args: dict, conf: dict) -> None:
        self.log = tmp_path / f"{task_id}-try-1.log"
        spec = {"task_id": task_id, "args": args, "conf": conf, "run_id": RUN_ID}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(DAGS), json.dumps(spec)], stdout=out,
                                         stderr=subprocess.STDOUT, env=dict(os.environ))

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        print(self.log.read_text()[-4000:])
        return False

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


PG = pytest.param("postgresql", marks=pytest.mark.postgres)


@pytest.mark.parametrize(("pause", "any_store_url"), [("record-send", "sqlite"), ("record-send", PG),
                                                       ("send-answer", PG)], indirect=["any_store_url"])
def test_killed_at_the_pause_the_retry_sends_each_order_once(faults, any_store_url, tmp_path, workers, pause):
    marker = tmp_path / f"{pause}.json"
    args = {"task_id": "trade", "symbols": faults.universe_symbols({"symbols": 12, "chunk": 6}), "as_of": AS_OF, "simulated_account": "faults",
            "store_conn_id": CONN_ID}
    worker = Worker(tmp_path, "trade", args, {"pause": pause, "marker": str(marker), "pause_s": WAIT_S})
    workers.append(worker)
    payload = wait_for(marker, worker.alive)
    assert payload["pid"] == worker.proc.pid
    worker.kill()  # the worker dies at the pause, holding the account's lock
    at_death = statuses(any_store_url)
    approved = approved_ids(any_store_url)
    assert set(at_death) == approved and len(approved) >= 3
    sent_before = {cid for cid, status in at_death.items() if status == "new"}
    assert sent_before == (set() if pause == "record-send" else {payload["client_order_id"]})

    retry = trader(faults).execute(context({"pause": pause, "marker": str(marker)}, try_number=2))
    assert retry["unknown"] == {} and retry["submitted"] == len(approved) and retry["decided"] == 12
    assert set(statuses(any_store_url).values()) == {"new"}
    counts = the_book_holds(any_store_url)
    assert counts["orders"] == counts["at_broker"] == counts["decisions_approved"] == len(approved)


@pytest.mark.parametrize("any_store_url", [PG], indirect=True)
def test_killed_after_the_first_symbols_bars_the_etl_retry_loads_the_rest(faults, any_store_url, tmp_path, workers):
    marker = tmp_path / "etl.json"
    args = {"task_id": "etl", "symbols": ["AAPL", "MSFT", "BTC/USD"], "start": "2024-05-01", "end": "2024-05-31",
            "sources": "synthetic", "store_conn_id": CONN_ID}
    worker = Worker(tmp_path, "etl", args, {"pause": "etl", "marker": str(marker), "pause_s": WAIT_S})
    workers.append(worker)
    payload = wait_for(marker, worker.alive)
    assert payload["symbols"] == ["AAPL"] and payload["rows"] == 22  # May 2024: 22 NYSE sessions
    worker.kill()
    store = PortfolioStore(any_store_url)
    try:
        assert [store.count_bars([s], "1Day") for s in ("AAPL", "MSFT", "BTC/USD")] == [22, 0, 0]
    finally:
        store.dispose()
    check = bars_complete(any_store_url, ["AAPL", "MSFT", "BTC/USD"], "2024-05-01", "2024-05-31")
    assert check.counts["bars_missing"] == 22 + 31 and check.violations

    etl = faults.PausingETL(**args)
    summary = etl.execute(context({"pause": "etl", "marker": str(marker)}, try_number=2, task_id="etl"))
    assert summary["failed"] == [] and summary["rows_written"] == 22 + 31  # incremental: AAPL is not fetched again
    assert bars_complete(any_store_url, ["AAPL", "MSFT", "BTC/USD"], "2024-05-01", "2024-05-31").passed()["bars"] \
        == 22 + 22 + 31
