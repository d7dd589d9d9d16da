"""A private, throw-away PostgreSQL server for tests and benchmarks.

Uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/<major>/bin``,
newest major first; ``$PG_BINDIR`` overrides). The cluster lives in a temporary directory, listens on
127.0.0.1 only (unix socket inside the directory), trusts loopback connections and is removed on
exit. PostgreSQL refuses to run as root, so under root the binaries run as the ``postgres`` system
user through ``runuser``::

    with PostgresServer() as server:
        url = server.url                     # postgresql+psycopg://portfolio@127.0.0.1:PORT/portfolio
        other = server.create_database("x")  # a fresh database, its URL

Needs ``psycopg`` (3) for :meth:`PostgresServer.create_database` and :meth:`drop_database`.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = "PostgreSQL server binaries not found: install them with `apt-get install postgresql` (Debian/Ubuntu)"


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (``$PG_BINDIR``, else Debian's newest), or ``None``."""
    env = os.environ.get("PG_BINDIR")
    candidates = [env] if env else []

    def major(path: str) -> float:
        match = re.search(r"/postgresql/(\d+(?:\.\d+)?)/", path)
        return float(match.group(1)) if match else 0.0

    candidates += sorted(
        (str(Path(p).parent) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")), key=lambda p: major(p + "/"),
        reverse=True,
    )
    for directory in candidates:
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServerError(RuntimeError):
    """The server could not be initialised or started."""


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, started on a free loopback port.

    :param user: superuser name created by ``initdb`` (trust authentication, no password).
    :param database: database created at start; :attr:`url` points to it.
    :param bindir: directory of ``initdb``/``pg_ctl``; found with :func:`find_bindir` when ``None``.
    :param durable: keep ``fsync`` on. Tests leave it off (faster); benchmarks should turn it on.
    """

    def __init__(self, *, user: str = "portfolio", database: str = "portfolio", bindir: str | Path | None = None,
                 durable: bool = False, max_connections: int = 100) -> None:
        self.user = user
        self.max_connections = max_connections
        self.database = database
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.durable = durable
        self.port: int | None = None
        self.root: Path | None = None
        self._running = False

    @staticmethod
    def available() -> bool:
        """Whether PostgreSQL server binaries were found."""
        return find_bindir() is not None

    # -- lifecycle -------------------------------------------------------------------------------
    def _as_owner(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            msg = "running as root and there is no 'postgres' system user to run the server"
            raise PostgresServerError(msg) from None
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.root is not None
        cmd = [*self._as_owner(), *args]
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            detail = proc.stderr.strip() or proc.stdout.strip()
            raise PostgresServerError(f"{Path(args[0]).name} failed ({proc.returncode}): {detail}")
        return proc

    def start(self) -> PostgresServer:
        """``initdb`` a fresh cluster, start it and create :attr:`database`. Returns ``self``."""
        if self._running:
            return self
        if self.bindir is None:
            raise PostgresServerError(INSTALL_HINT)
        self.root = Path(tempfile.mkdtemp(prefix="portfolio-pg-"))
        if os.geteuid() == 0:
            self._as_owner()
            shutil.chown(self.root, user="postgres", group="postgres")
        data = self.root / "data"
        atexit.register(self.stop)
        try:
            self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            options = ["-c listen_addresses=127.0.0.1", f"-k {self.root}", f"-c max_connections={self.max_connections}"]
            if not self.durable:
                options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            last: Exception | None = None
            self._options = options
            for _ in range(3):  # a free port can be taken between the probe and the bind: retry
                self.port = _free_port()
                try:
                    self._pg_ctl_start()
                    break
                except PostgresServerError as err:
                    last = err
            else:
                logfile = self.root / "server.log"
                log = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
                raise PostgresServerError(f"{last}\n{log}")
            self._running = True
            self._execute(f'CREATE DATABASE "{self.database}"')
        except BaseException:
            self.stop()
            raise
        return self

    def _pg_ctl_start(self) -> None:
        assert self.root is not None and self.bindir is not None
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "-o", " ".join([*self._options, f"-p {self.port}"]), "start")

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (``-m immediate``: sessions cut as by a crash), wait ``down_s`` seconds, start it again on the
        same port with the same data."""
        import time

        if not self._running or self.root is None or self.bindir is None:
            raise PostgresServerError("server is not running")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        time.sleep(down_s)
        self._pg_ctl_start()

    def log_tail(self, n: int = 3000) -> str:
        """The end of the server's log."""
        logfile = self.root / "server.log" if self.root else None
        return logfile.read_text(errors="replace")[-n:] if logfile and logfile.exists() else ""

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and remove its directory. Idempotent."""
        root, self.root = self.root, None
        if root is None:
            return
        try:
            if self._running and self.bindir is not None:
                self._running = False
                subprocess.run([*self._as_owner(), str(self.bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast",
                                "-w", "stop"], cwd=root, capture_output=True, timeout=60, check=False)
        finally:
            shutil.rmtree(root, ignore_errors=True)
            atexit.unregister(self.stop)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------
    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3) of ``database`` on this server."""
        if not self._running:
            raise PostgresServerError("server is not running")
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of :attr:`database`."""
        return self.url_for(self.database)

    def _execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (from ``template0``); return its URL."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_password_user(self, name: str, password: str) -> None:
        """Create login role ``name`` that must authenticate with ``password`` over TCP (scram-sha-256).

        Everyone else keeps trust authentication; the rule is put first in ``pg_hba.conf`` and the
        server reloads its configuration.
        """
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain role name: {name!r}")
        assert self.root is not None and self.bindir is not None
        literal = password.replace("'", "''")
        self._execute(f"CREATE ROLE {name} LOGIN PASSWORD '{literal}'")
        hba = self.root / "data" / "pg_hba.conf"
        hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "reload")
        import time

        time.sleep(0.3)  # reload is asynchronous
