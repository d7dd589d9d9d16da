"""The desk's cluster on 127.0.0.1: PostgreSQL, Redis and Airflow on CeleryExecutor with two workers.

One object owns every process: its start, its health checks and its teardown. Each service runs in its own
process group (killed as a group on exit, whatever state the test left it in) and logs to its own file under
the cluster's folder; a service that does not come up fails the start at once with its name and its log's tail.
Every wait has a timeout.

- PostgreSQL (:class:`tests.pgserver.PostgresServer`): database ``airflow`` (Airflow's metadata and Celery's
  results) and database ``portfolio`` (the portfolio store, connection ``portfolio_store_default``);
- Redis: the Celery broker;
- Airflow: ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and two ``celery worker`` processes:
  ``worker-a`` serves queue ``default``, ``worker-b`` serves ``default`` and ``gpu`` (``[portfolio] gpu_queue =
  gpu``). Each worker's task processes report their own host name (``[core] hostname_callable``), so a task
  instance's ``hostname`` says which worker ran it.

The settings are those of ``docker-compose.yaml`` at the repository root (the same services and options).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

from tests.airflow.realairflow import free_port, stop_group
from tests.pgserver import PostgresServer

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
WORKERS = {"worker-a": "default", "worker-b": "default,gpu"}
GPU_QUEUE = "gpu"
RESTARTED = "\n=== restarted ===\n"


class ClusterError(AssertionError):
    """A service did not start, did not answer in time, or a wait ran out."""


@functools.cache
def dag_module(name: str) -> ModuleType:
    """A module of the cluster's DAG folder (``tests/cluster/dags/<name>.py``), loaded once, as the DAG files see it."""
    spec = importlib.util.spec_from_file_location(name, HERE / "dags" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_for(what: str, check: Callable[[], object], timeout: float, *, every: float = 1.0,
             tail: Callable[[], str] = lambda: "") -> object:
    """Call ``check`` until it returns something truthy; :class:`ClusterError` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"{what}: not done in {timeout:.0f} s\n{tail()}")
        time.sleep(every)


class Service:
    """One long-running process in its own process group, logging to ``<root>/<name>.log``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], root: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.root = root
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log_path, "a") as log:
            try:
                self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.root, start_new_session=True)
            except OSError as err:
                raise ClusterError(f"{self.name}: cannot start {self.argv[0]}: {err}") from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """:class:`ClusterError` with the log's tail when the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ClusterError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        try:
            return f"--- {self.log_path.name} ---\n" + self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group and to every descendant, as a machine's death would: a worker's task
        processes run in process groups of their own (Airflow's supervisor calls ``setpgid``). Waits for the leader."""
        if self.proc is None:
            return
        import psutil

        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        for child in descendants:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM the group, SIGKILL what is left after ``grace`` seconds (:func:`stop_group`), then the task processes
        that run in process groups of their own."""
        if self.proc is None:
            return
        import psutil

        try:
            leftovers = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            leftovers = []
        stop_group(self.proc, grace)
        for orphan in leftovers:  # task processes in groups of their own, outliving their worker
            try:
                orphan.kill()
            except psutil.NoSuchProcess:
                pass


class Redis(Service):
    """``redis-server`` on a loopback port, nothing persisted (a restart empties it, as a lost broker would)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise ClusterError("redis: redis-server not found (apt-get install redis-server; `make test-cluster` "
                               "installs it)")
        data = root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        super().__init__("redis", [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data),
                                   "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
                         dict(os.environ), root)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 20) -> Redis:
        super().start()
        wait_for("redis answering PING", lambda: (self.check_alive(), self.ping())[1], timeout, every=0.2,
                 tail=self.tail)
        return self

    def restart(self, down_s: float = 0.0) -> None:
        """Kill the broker (SIGKILL: queued messages not yet delivered are lost) and start it on the same port."""
        self.kill()
        time.sleep(down_s)
        self.start()


class Cluster:
    """The whole cluster under ``root``; a context manager.

    :param root: a fresh folder for the services' data, logs and ``AIRFLOW_HOME``.
    :param dags_folder: the DAGs the dag-processor parses.
    :param env: extra environment for every Airflow process (``AIRFLOW__...``, ``AIRFLOW_CONN_...``).
    :param worker_concurrency: task slots of each Celery worker.
    """

    def __init__(self, root: Path, dags_folder: Path, *, env: dict[str, str] | None = None,
                 worker_concurrency: int = 2) -> None:
        self.root = root
        self.dags_folder = dags_folder
        self.extra_env = dict(env or {})
        self.worker_concurrency = worker_concurrency
        self.postgres: PostgresServer | None = None
        self.redis: Redis | None = None
        self.services: dict[str, Service] = {}
        self.api_port = free_port()
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.token: str | None = None
        self.store_url = ""
        self.airflow_url = ""
        self.expected_down = set()
        self.revived = []

    # -- start -----------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 240) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.postgres = PostgresServer(database="portfolio", max_connections=300).start()
        self.postgres.create_database("airflow")
        self.store_url = self.postgres.url
        pg = f"{self.postgres.user}@127.0.0.1:{self.postgres.port}"
        self.airflow_url = f"postgresql+psycopg2://{pg}/airflow"
        self.redis = Redis(self.root).start()
        self.env = self._airflow_env(pg)
        self.airflow("db", "migrate", timeout=600)
        self.airflow_portfolio("setup")  # the provider's pools (gpu_pool ...) and Variables
        self._start_airflow(timeout)

    def _airflow_env(self, pg: str) -> dict[str, str]:
        home = self.root / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
        from cryptography.fernet import Fernet

        env.update({
            "AIRFLOW_HOME": str(home),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.cluster.hostname.worker_name",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_url,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis.port}/0" if self.redis else "",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg}/airflow",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            # A task whose worker died is noticed within half a minute (Airflow's default: 5 minutes).
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__PORTFOLIO__GPU_QUEUE": GPU_QUEUE,
            "AIRFLOW__PORTFOLIO__DEVICE": "cpu",
            "AIRFLOW_CONN_PORTFOLIO_STORE_DEFAULT": json.dumps({
                "conn_type": "postgres", "host": "127.0.0.1", "port": self.postgres.port if self.postgres else 0,
                "login": self.postgres.user if self.postgres else "", "schema": "portfolio"}),
        })
        env.update(self.extra_env)
        return env

    def _start_airflow(self, timeout: float) -> None:
        af = str(BIN / "airflow")
        self.services["api-server"] = Service("api-server", [af, "api-server"], self.env, self.root).start()
        for name in ("scheduler", "dag-processor", "triggerer"):
            self.services[name] = Service(name, [af, name], self.env, self.root).start()
        for name, queues in WORKERS.items():
            self.services[name] = self._worker(name, queues).start()
        self.wait_healthy(timeout)

    def _worker(self, name: str, queues: str) -> Service:
        env = {**self.env, "PORTFOLIO_WORKER_NAME": name,
               "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        return Service(name, [str(BIN / "airflow"), "celery", "worker", "--queues", queues, "--concurrency",
                              str(self.worker_concurrency), "--celery-hostname", f"{name}@%h", "--pid",
                              str(self.root / f"{name}.pid"), "--skip-serve-logs"], env, self.root)

    def wait_healthy(self, timeout: float = 240) -> None:
        """Every Airflow component healthy and both workers ready; fails at once when a process exits."""

        def healthy() -> bool:
            for service in self.services.values():
                if service.name not in self.expected_down:
                    service.check_alive()
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as resp:
                    health = json.load(resp)
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                return False
            parts = [p for p in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                     if p.replace("_", "-") not in self.expected_down]
            if not all((health.get(p) or {}).get("status") == "healthy" for p in parts):
                return False
            return all(self.worker_ready(name) for name in WORKERS if name not in self.expected_down)

        wait_for("the cluster healthy (api-server, scheduler, dag-processor, triggerer, two workers)", healthy,
                 timeout, every=2, tail=self.tails)

    def worker_ready(self, name: str) -> bool:
        """The worker's log says it is ready (since its last start)."""
        text = self.services[name].log_text()
        return f"{name}@" in text and " ready." in text[text.rfind(RESTARTED) + 1:]

    # -- faults ----------------------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill service ``name`` (its whole process group)."""
        self.services[name].kill(sig)

    def restart(self, name: str, timeout: float = 180) -> None:
        """Start service ``name`` again (after :meth:`kill`) and wait until the cluster is healthy."""
        self._respawn(name)
        self.wait_healthy(timeout)

    def _respawn(self, name: str) -> None:
        service = self.services[name]
        if service.alive():
            service.stop()
        with open(service.log_path, "a") as log:
            log.write(RESTARTED)
        self.services[name] = Service(service.name, service.argv, service.env, self.root).start()

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def tails(self, names: Iterable[str] | None = None, n: int = 3000) -> str:
        chosen = [self.services[k] for k in (names or self.services)]
        if self.redis is not None and names is None:
            chosen.append(self.redis)
        return "\n".join(s.tail(n) for s in chosen)

    # -- commands and the REST API --------------------------------------------------------------
    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self._run([str(BIN / "airflow"), *args], timeout)

    def airflow_portfolio(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self._run([str(BIN / "airflow-portfolio"), *args], timeout)

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{' '.join(argv[:3])}: not done in {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(argv[:3])} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")
        return proc

    def request(self, method: str, path: str, payload: object = None) -> dict:
        if self.token is None:
            with urllib.request.urlopen(f"{self.base}/auth/token", timeout=30) as resp:
                self.token = json.load(resp)["access_token"]
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:
            raise ClusterError(f"{method} {path} -> {err.code}: {err.read().decode()[:2000]}") from None

    def wait_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag-processor has parsed ``dag_id`` (without import errors)."""

        def parsed() -> bool:
            try:
                self.request("GET", f"/api/v2/dags/{dag_id}")
                return True
            except ClusterError as err:
                if "-> 404" in str(err):
                    return False
                raise

        def errors() -> str:
            try:
                return json.dumps(self.request("GET", "/api/v2/importErrors"))[:4000]
            except ClusterError as err:
                return str(err)

        wait_for(f"DAG {dag_id} parsed", parsed, timeout, every=2, tail=errors)

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        """Trigger a run of ``dag_id`` now; returns its run id."""
        self.wait_dag(dag_id)
        body: dict = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        """Until the run ends (success or failed); its state. Fails when a service exits meanwhile."""

        def ended() -> str | None:
            self.revive()
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        return str(wait_for(f"run {dag_id}/{run_id} ended", ended, timeout, every=2, tail=self.tails))

    def revive(self) -> None:
        """Start again an Airflow service that exited, as a process supervisor does (``restart: always`` in
        ``docker-compose.yaml``; Airflow's scheduler exits when it loses its database), at most
        :attr:`MAX_REVIVALS` times each; each revival is kept in :attr:`revived`. Services a test stopped on purpose
        (:attr:`expected_down`) are left alone."""
        respawned = False
        for name, service in list(self.services.items()):
            if name in self.expected_down or service.alive():
                continue
            code = service.proc.returncode if service.proc else None
            if sum(1 for n, _ in self.revived if n == name) >= self.MAX_REVIVALS:
                raise ClusterError(f"{name} exited with {code} again, after {self.MAX_REVIVALS} restarts:\n"
                                   f"{service.tail()}")
            self.revived.append((name, code))
            self._respawn(name)
            respawned = True
        if respawned:
            self.wait_healthy()

    MAX_REVIVALS = 3
    expected_down: set[str] = set()
    revived: list[tuple[str, int | None]] = []

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        body = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return body["task_instances"]

    def failed_logs(self, dag_id: str, run_id: str, n: int = 6) -> str:
        """The last ``n`` log events of every try of the run that failed (for an assertion's message)."""
        logs = self.root / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        out = []
        for path in sorted(logs.rglob("attempt=*.log")):
            lines = path.read_text(errors="replace").splitlines()
            if not any("Task failed" in line or '"level":"error"' in line for line in lines):
                continue
            events = []
            for line in lines:
                try:
                    events.append(str(json.loads(line).get("event", ""))[:800])
                except ValueError:
                    events.append(line[:800])
            out.append(f"--- {path.relative_to(logs)} ---\n" + "\n".join(events[-n:]))
        return "\n".join(out) or "(no failed try logged)"

    def tries(self, dag_id: str, run_id: str) -> list[dict]:
        """Every try of every task instance of the run (hostname, queue, state of each try)."""
        out = []
        for ti in self.task_instances(dag_id, run_id):
            index = ti.get("map_index", -1)
            path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/{index}/tries"
            if index in (-1, None):
                path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/tries"
            out.extend(self.request("GET", path)["task_instances"])
        return out
