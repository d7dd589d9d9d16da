"""The store's database: engine, URL, connection settings, transactions, schema migrations, driver errors.

:class:`Database` is what every part of the store (bars, forecasts, the trading ledger, account locks) runs
on. Its public API:

- :meth:`Database.read` / :meth:`Database.write`: context managers yielding a SQLAlchemy connection, one
  transaction each; a write on SQLite begins ``BEGIN IMMEDIATE`` (writers queue on the file lock instead of
  failing on upgrade). Any driver failure inside leaves as :class:`StoreError` naming the action.
- :meth:`Database.errors`: the same driver-error translation for code that manages its own connection.
- :meth:`Database.version` (inside a transaction), :meth:`Database.schema_version`, :meth:`Database.migrate`.
- :meth:`Database.has_table`: whether a table exists (cached once seen).

SQLite connections run in WAL mode with ``busy_timeout`` and ``synchronous=NORMAL``, and write
transactions start with ``BEGIN IMMEDIATE``, so several processes (parallel mapped tasks) can write
to one file: they queue for up to ``busy_timeout_s`` instead of failing.

Nothing waits forever on PostgreSQL either: every connection carries a server ``lock_timeout`` (a write
blocked by another session's row, table or advisory lock gives up after ``lock_timeout_s``, default
30 s), a ``statement_timeout`` (300 s), a ``connect_timeout`` (10 s) and TCP keepalives (a dead server
or network is noticed in about two minutes), all set as libpq parameters when the connection opens.

Every driver failure surfaces as :class:`StoreError` naming the store by its password-hidden URL; a
timeout says which one fired and its value. The engine is created on first use, and again in a forked child.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import create_engine, event, func, insert, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import schema

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_KEEPALIVES_IDLE_S", "DEFAULT_LOCK_TIMEOUT_S",
           "DEFAULT_STATEMENT_TIMEOUT_S", "Database"]

#: Key of the PostgreSQL advisory lock that serialises migrations.
_MIGRATION_LOCK_KEY = 0x706F7274666F6C69  # "portfoli"
_SCHEMES = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB (also postgres:// and postgresql+psycopg2://)"
#: Defaults of the PostgreSQL timeouts, seconds (see :class:`Database`).
DEFAULT_LOCK_TIMEOUT_S = 30.0
DEFAULT_STATEMENT_TIMEOUT_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVES_IDLE_S = 60.0
DEFAULT_BUSY_TIMEOUT_S = 30.0
_KEEPALIVES_INTERVAL_S = 10
_KEEPALIVES_COUNT = 5


def _normalise_url(url: str | URL) -> URL:
    """Parse and canonicalise a store URL; never echoes it (it may hold a password)."""
    if isinstance(url, Path):
        url = f"sqlite:///{url}"
    if not isinstance(url, (str, URL)) or not str(url).strip():
        raise InvalidInputError(f"store URL must be a non-empty string such as {_SCHEMES}")
    try:
        parsed = make_url(url.strip() if isinstance(url, str) else url)
    except Exception:  # the text may contain a password: do not repeat it
        raise InvalidInputError(f"cannot parse the store URL; expected {_SCHEMES}") from None
    backend, _, driver = parsed.drivername.partition("+")
    shown = parsed.render_as_string(hide_password=True)
    if backend in ("postgres", "postgresql"):
        if driver in ("", "psycopg"):
            return parsed.set(drivername="postgresql+psycopg")
        if driver == "psycopg2":
            try:
                import psycopg2  # noqa: F401
            except ImportError:
                raise InvalidInputError(
                    f"store URL {shown} asks for psycopg2, which is not installed; use postgresql:// (psycopg 3)"
                ) from None
            return parsed.set(drivername="postgresql+psycopg2")
        raise InvalidInputError(f"store URL {shown}: unsupported PostgreSQL driver {driver!r} (use psycopg)")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed.set(drivername="sqlite")
    raise InvalidInputError(f"store URL {shown}: unsupported scheme {parsed.drivername!r}; expected {_SCHEMES}")


def _seconds(value: Any, name: str, *, positive: bool = False) -> float:
    """A timeout parameter as float seconds: a finite number >= 0 (> 0 when ``positive``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0 or (positive and value == 0):
        raise InvalidInputError(f"{name} must be a finite number of seconds {'>' if positive else '>='} 0, "
                                f"got {value!r}")
    return float(value)


class Database:
    """One SQLite or PostgreSQL database: its engine, transactions, schema and errors (see the module docstring).

    Creating the object does no I/O.

    :param url: SQLAlchemy URL: ``sqlite:///PATH``, ``postgresql://...`` or ``postgres://...`` (driven by
        psycopg 3), or ``postgresql+psycopg2://...`` when psycopg2 is installed.
    :param busy_timeout_s: SQLite: how long a write waits for another writer's lock before failing.
    :param lock_timeout_s: PostgreSQL: server ``lock_timeout``; 0 waits without limit.
    :param statement_timeout_s: PostgreSQL: server ``statement_timeout``; 0 means no limit.
    :param connect_timeout_s: PostgreSQL: how long opening a connection may take (> 0).
    :param keepalives_idle_s: PostgreSQL: TCP keepalive probes start after this many idle seconds; 0: off.
    :raises InvalidInputError: for a URL that cannot be parsed or has an unsupported scheme, or a timeout
        that is not a finite number of seconds >= 0.
    """

    def __init__(self, url: str | URL, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 keepalives_idle_s: float = DEFAULT_KEEPALIVES_IDLE_S) -> None:
        self._url = _normalise_url(url)
        self.busy_timeout_s = _seconds(busy_timeout_s, "busy_timeout_s")
        self.lock_timeout_s = _seconds(lock_timeout_s, "lock_timeout_s")
        self.statement_timeout_s = _seconds(statement_timeout_s, "statement_timeout_s")
        self.connect_timeout_s = _seconds(connect_timeout_s, "connect_timeout_s", positive=True)
        self.keepalives_idle_s = _seconds(keepalives_idle_s, "keepalives_idle_s")
        #: The URL with the password hidden: safe to log.
        self.url: str = self._url.render_as_string(hide_password=True)
        #: ``"sqlite"`` or ``"postgresql"``.
        self.dialect: str = self._url.get_backend_name()
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._tables: set[str] = set()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file (resolved), or ``None`` for an in-memory SQLite store or PostgreSQL."""
        if self.dialect != "sqlite":
            return None
        database = self._url.database or ""
        if database.startswith("file:"):
            if "mode=memory" in database:
                return None
            database = database[len("file:"):].split("?", 1)[0]
        if database in ("", ":memory:"):
            return None
        return Path(database).expanduser().resolve()

    # -- engine and errors ----------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use and cached (per process)."""
        if self._engine is None or self._engine_pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)  # inherited through fork: leave the parent's connections alone
            with self.errors("open the store"):
                self._engine = self._create_engine()
            self._engine_pid = os.getpid()
        return self._engine

    def _pg_connect_args(self) -> dict[str, Any]:
        """libpq parameters of every PostgreSQL connection: timeouts and keepalives.

        Parameters the URL sets itself (``?keepalives_idle=...``) win; ``options`` of the URL are kept and
        come after the store's, so a ``-c lock_timeout=...`` there wins too.
        """
        query = self._url.query
        args: dict[str, Any] = {"connect_timeout": max(1, round(self.connect_timeout_s))}
        if self.keepalives_idle_s > 0:
            args.update(keepalives=1, keepalives_idle=max(1, round(self.keepalives_idle_s)),
                        keepalives_interval=_KEEPALIVES_INTERVAL_S, keepalives_count=_KEEPALIVES_COUNT)
        else:
            args["keepalives"] = 0
        settings = [f"-c {name}={max(1, round(seconds * 1000))}"  # milliseconds; 0 stays "no limit"
                    for name, seconds in (("lock_timeout", self.lock_timeout_s),
                                          ("statement_timeout", self.statement_timeout_s)) if seconds > 0]
        given = query.get("options")
        given = " ".join(given) if isinstance(given, tuple) else given
        if settings or given:
            args["options"] = " ".join([*settings, *([given] if given else [])])
        return {k: v for k, v in args.items() if k == "options" or k not in query}

    def _create_engine(self) -> Engine:
        if self.dialect == "postgresql":
            return create_engine(self._url, pool_pre_ping=True, connect_args=self._pg_connect_args())
        database = self._url.database or ""
        memory = database in ("", ":memory:") or "mode=memory" in database
        kwargs: dict[str, Any] = {"connect_args": {"timeout": self.busy_timeout_s}}
        if memory:
            from sqlalchemy.pool import StaticPool

            kwargs = {"connect_args": {"check_same_thread": False}, "poolclass": StaticPool}
        elif not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"store {self.url}: cannot create the directory of the database file: "
                                 f"{err.strerror or err}") from None
        engine = create_engine(self._url, **kwargs)
        busy_ms = int(self.busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun explicitly below
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
                if not memory:
                    _set_wal(cur, self.busy_timeout_s)
                cur.execute("PRAGMA synchronous = NORMAL")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("portfolio_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        errors: list[type[BaseException]] = [sa_exc.SQLAlchemyError, sqlite3.Error, OSError]
        if self.dialect == "postgresql":
            try:
                import psycopg

                errors.append(psycopg.Error)
            except ImportError:  # pragma: no cover - psycopg2-only installs
                pass
            try:
                import psycopg2

                errors.append(psycopg2.Error)
            except ImportError:
                pass
        return tuple(errors)

    def _explain(self, action: str, err: BaseException) -> str:
        orig = getattr(err, "orig", None) or err
        text = " ".join(str(orig).split()) or type(orig).__name__
        if self._url.password:
            text = text.replace(str(self._url.password), "***")
        if len(text) > 500:
            text = text[:500] + "..."
        lowered = text.lower()
        hint = ""
        if "lock timeout" in lowered:
            hint = (f" (gave up after lock_timeout_s={self.lock_timeout_s:g}: another session holds a lock on "
                    "these rows or the table; see pg_locks and pg_stat_activity on the server)")
        elif "statement timeout" in lowered:
            hint = (f" (the statement ran longer than statement_timeout_s={self.statement_timeout_s:g} and the "
                    "server cancelled it)")
        elif "locked" in lowered or "busy" in lowered:
            hint = f" (database is locked: another writer held it longer than busy_timeout_s={self.busy_timeout_s:g})"
        elif "not a database" in lowered:
            hint = " (the file is not a database: point the store at a SQLite file or a new path)"
        elif "unable to open database" in lowered:
            hint = " (cannot open the database file: check the path and its permissions)"
        elif "password authentication failed" in lowered:
            hint = " (wrong user or password)"
        elif any(w in lowered for w in ("connection refused", "could not connect", "connection failed", "resolve host",
                                        "could not translate host", "timeout expired")):
            hint = " (cannot connect: is the server running and reachable?)"
        return f"store {self.url}: could not {action}: {type(orig).__name__}: {text}{hint}"

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Translate driver failures inside the ``with`` block into :class:`StoreError` naming ``action``."""
        try:
            yield
        except (StoreError, InvalidInputError):
            raise
        except self._driver_errors() as err:
            raise StoreError(self._explain(action, err)) from None

    @contextmanager
    def read(self, action: str) -> Iterator[Connection]:
        """A read: a connection for the ``with`` block; driver failures raise :class:`StoreError` naming ``action``."""
        with self.errors(action), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self, action: str) -> Iterator[Connection]:
        """One write transaction for the ``with`` block: committed when it ends, rolled back (nothing written)
        when it raises. SQLite begins it ``BEGIN IMMEDIATE``.
        """
        with self.errors(action), self.engine.connect() as conn:
            conn.execution_options(portfolio_write=True)
            with conn.begin():
                yield conn

    # -- schema ---------------------------------------------------------------------------------
    @staticmethod
    def version(conn: Connection) -> int:
        """The schema version seen by ``conn`` (inside a :meth:`read` or :meth:`write`): 0 for an empty database."""
        if not inspect(conn).has_table(schema.schema_version.name):
            return 0
        return int(conn.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0)

    def schema_version(self) -> int:
        """The database's schema version: 0 for an empty database.

        :raises StoreError: when the database cannot be reached or read.
        """
        with self.read("read the schema version") as conn:
            return self.version(conn)

    def migrate(self) -> int:
        """Create or upgrade the schema to the latest version and return it. Idempotent.

        Concurrent callers (several processes) are serialised by a PostgreSQL advisory lock or a SQLite
        ``BEGIN IMMEDIATE``; all pending migrations apply in one transaction.

        :raises StoreError: when the database is newer than this code, or cannot be reached.
        """
        latest = schema.latest_version()
        current = self.schema_version()
        if current == latest:
            return current
        self._refuse_newer(current, latest)
        with self.write("migrate the schema") as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
            schema.schema_version.create(conn, checkfirst=True)
            current = self.version(conn)  # again, under the lock
            self._refuse_newer(current, latest)
            for migration in schema.MIGRATIONS[current:]:
                migration.apply(conn)
                conn.execute(insert(schema.schema_version).values(
                    version=migration.version, applied_at=datetime.now(timezone.utc),
                    description=migration.description))
                log.info("store %s: applied schema migration %d (%s)", self.url, migration.version,
                         migration.description)
            created = set(inspect(conn).get_table_names())
        self._tables.update(created)
        return latest

    def _refuse_newer(self, current: int, latest: int) -> None:
        if current > latest:
            raise StoreError(f"store {self.url}: schema version {current} is newer than this code knows ({latest}); "
                             "upgrade airflow-provider-portfolio")

    def has_table(self, conn: Connection, name: str) -> bool:
        """Whether the table ``name`` exists (a table once seen, or created by :meth:`migrate`, is not asked again:
        tables are never dropped).

        :param conn: a connection of :meth:`read` or :meth:`write`.
        """
        if name not in self._tables and inspect(conn).has_table(name):
            self._tables.add(name)
        return name in self._tables

    def dispose(self) -> None:
        """Close the engine's pooled connections (the store can still be used: it reconnects)."""
        if self._engine is not None:
            if self._engine_pid == os.getpid():
                self._engine.dispose()
            self._engine = None
            self._engine_pid = None


def _set_wal(cur: sqlite3.Cursor, timeout_s: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the file.

    Switching a file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once,
    without its busy handler, when two connections race to switch a new file. The mode persists in
    the file, so the loser's retry finds WAL already set. Retries back off up to ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


class TableGroup:
    """Tables of one :class:`Database` read and written together (the bars; the forecasts and evaluations).

    :param database: the store's database.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def url(self) -> str:
        return self.database.url

    @property
    def dialect(self) -> str:
        return self.database.dialect
