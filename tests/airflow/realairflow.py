"""A real Airflow for tests: a fresh AIRFLOW_HOME, the `airflow` CLI of this venv, loopback only."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment of an Airflow CLI process with its own ``AIRFLOW_HOME`` (created here)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "example_dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


_MIGRATED: list[Path] = []


def migrated_db() -> Path:
    """An ``airflow.db`` migrated by ``airflow db migrate``, made once per test process (shared by the real-Airflow
    tests: each new home gets a copy instead of paying a CLI start and a migration); removed at exit."""
    if not _MIGRATED:
        home = Path(tempfile.mkdtemp(prefix="airflow-migrated-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        _run(airflow_env(home), "db", "migrate", timeout=600)
        _MIGRATED.append(home / "airflow.db")
    return _MIGRATED[0]


def run_airflow(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an ``airflow`` command; ``db migrate`` of a new home on the default SQLite database copies the shared
    migrated database (:func:`migrated_db`) instead of migrating again."""
    home = Path(env["AIRFLOW_HOME"])
    if args == ("db", "migrate") and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env \
            and not (home / "airflow.db").exists():
        shutil.copyfile(migrated_db(), home / "airflow.db")
        return subprocess.CompletedProcess(["airflow", *args], 0, "migrated database copied\n", "")
    return _run(env, *args, timeout=timeout)


def _run(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=env["AIRFLOW_HOME"]
    )
    if proc.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


class AirflowServer:
    """A long-running Airflow command on 127.0.0.1, stopped on exit.

    ``airflow standalone`` (the default: scheduler, dag-processor, triggerer, api-server) or
    ``airflow api-server`` alone (give ``command=("api-server",)``; it needs a migrated DB and
    ``components=("metadatabase",)``).
    """

    def __init__(self, home: Path, command: tuple[str, ...] = ("standalone",),
                 components: tuple[str, ...] = ("metadatabase", "scheduler"), *, login: bool = True,
                 **extra_env: str):
        self.home = home
        self.command = command
        self.components = components
        self.login = login  # False: the simple auth manager treats everyone as admin (no password)
        self.port = free_port()
        self.env = airflow_env(
            home,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{self.port}",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.port}/execution/",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
            AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            **extra_env,
        )
        if not login:
            self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
        self.base = f"http://127.0.0.1:{self.port}"
        self.token: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = home / f"{command[0]}.log"

    def __enter__(self) -> AirflowServer:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(BIN / "airflow"), *self.command], env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            cwd=self.home, start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"airflow {self.command[0]} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as resp:
                    health = json.load(resp)
                if all(health.get(c, {}).get("status") == "healthy" for c in self.components):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(2)
        else:
            raise AssertionError(f"airflow {self.command[0]} not healthy in 180 s:\n{self.tail()}")
        # With a login, the generated admin password; without, the anonymous admin token that the
        # simple auth manager hands out in all-admins mode.
        self.token = self._login() if self.login else self.request("GET", "/auth/token", auth=False)["access_token"]
        return self

    def _login(self) -> str:
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + 60
        while not passwords.exists() and time.monotonic() < deadline:
            time.sleep(1)
        password = json.loads(passwords.read_text())["admin"]
        body = self.request("POST", "/auth/token", {"username": "admin", "password": password}, auth=False)
        return body["access_token"]

    def request(self, method: str, path: str, payload: object = None, *, auth: bool = True) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth and self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path} -> {err.code}: {err.read().decode()[:2000]}") from None

    def tail(self, n: int = 8000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        # The whole process group goes: `airflow standalone` may exit while its scheduler is still
        # shutting down, so wait for the group, not the leader, and kill what is left.
        if self.proc:
            stop_group(self.proc)
        self.log.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM ``proc``'s process group, wait up to ``grace`` seconds for every member, then SIGKILL it."""
    pgid = proc.pid
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader
        if not group_alive(pgid):
            break
        time.sleep(0.5)
    else:
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=30)
