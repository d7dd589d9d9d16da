"""One trading cycle per account at a time: an exclusive lock per ledger account, held across processes.

A cycle holds its account's lock from reading the account to recording its orders (and sending them), so
two DAGs trading one account (or two mapped chunks of one run) never size, check and send against the same
stale book. The lock lives where the store lives:

- **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own. The
  server releases it when that connection ends, so a killed worker never leaves the account locked.
- **SQLite file**: an exclusive ``flock`` on a file beside the database (``<db>.<digest>.lock``). The kernel
  releases it when the process ends, however it ends. The holder's label is written in the file, so a
  waiting cycle can say who holds the account.
- **In-memory SQLite** (one process): a process-wide lock per account.

Waiting polls every ``poll_s`` up to ``timeout_s``, then raises
:class:`~airflow_provider_portfolio.exceptions.AccountLockedError` naming the account and, where known, the
holder. Plain Python: never imports Airflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import AccountLockedError, InvalidInputError

if TYPE_CHECKING:
    from airflow_provider_portfolio.store.repository import PortfolioStore

log = logging.getLogger(__name__)

#: How long a cycle waits for its account by default, seconds.
DEFAULT_LOCK_TIMEOUT_S = 120.0

_MEMORY_LOCKS: dict[tuple[int, str], threading.Lock] = {}
_MEMORY_GUARD = threading.Lock()


def _digest(account: str) -> bytes:
    return hashlib.blake2b(f"portfolio-account:{account}".encode(), digest_size=8).digest()


def advisory_key(account: str) -> int:
    """The PostgreSQL advisory lock key of ``account`` (a signed 64-bit integer)."""
    return int.from_bytes(_digest(account), "big", signed=True)


def _label(owner: str) -> str:
    return (f"{owner} (pid {os.getpid()} on {socket.gethostname()}, since "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')})")


def _check(account: str, timeout_s: float, poll_s: float) -> None:
    if not isinstance(account, str) or not account.strip():
        raise InvalidInputError(f"account must be a non-empty string, got {account!r}")
    for name, value in (("timeout_s", timeout_s), ("poll_s", poll_s)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise InvalidInputError(f"{name} must be a number >= 0, got {value!r}")


def _wait(try_once: Any, account: str, timeout_s: float, poll_s: float, holder: Any) -> None:
    """Call ``try_once()`` until it returns True or ``timeout_s`` passes (then raise, naming ``holder()``)."""
    started = time.monotonic()
    logged = False
    while not try_once():
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise AccountLockedError(account, round(waited, 1), holder())
        if not logged:
            log.info("account %s is locked by another trading cycle (%s): waiting up to %g s", account,
                     holder() or "holder unknown", timeout_s)
            logged = True
        time.sleep(min(poll_s, max(timeout_s - waited, 0.0)))


@contextlib.contextmanager
def account_lock(store: PortfolioStore, account: str, *, owner: str = "", timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 poll_s: float = 0.05) -> Iterator[None]:
    """Hold ``account``'s exclusive lock for the ``with`` block (see the module docstring).

    :param store: the store whose accounts are locked.
    :param account: the ledger account (``simulated:default``, ``alpaca:alpaca_default``).
    :param owner: who holds it, for the messages of those who wait (``<dag_id>/<run_id>``).
    :param timeout_s: the longest wait, seconds (0: one try).
    :param poll_s: the pause between tries, seconds.
    :raises AccountLockedError: when the lock stays held by another cycle for ``timeout_s``.
    """
    _check(account, timeout_s, poll_s)
    if store.dialect == "postgresql":
        with _postgres_lock(store, account, owner, timeout_s, poll_s):
            yield
        return
    path = _sqlite_path(store)
    if path is None:
        with _memory_lock(store, account, timeout_s, poll_s):
            yield
        return
    with _file_lock(path.with_name(f"{path.name}.{_digest(account).hex()}.lock"), account, owner, timeout_s, poll_s):
        yield


def _sqlite_path(store: PortfolioStore) -> Path | None:
    """The SQLite store's database file, or ``None`` for an in-memory store."""
    return store.database.sqlite_file


@contextlib.contextmanager
def _memory_lock(store: PortfolioStore, account: str, timeout_s: float, poll_s: float) -> Iterator[None]:
    with _MEMORY_GUARD:
        lock = _MEMORY_LOCKS.setdefault((id(store), account), threading.Lock())
    _wait(lambda: lock.acquire(blocking=False), account, timeout_s, poll_s, lambda: "another cycle in this process")
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _file_lock(path: Path, account: str, owner: str, timeout_s: float, poll_s: float) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        def try_once() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        def holder() -> str:
            try:
                return path.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                return ""

        _wait(try_once, account, timeout_s, poll_s, holder)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _label(owner).encode(), 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _postgres_lock(store: PortfolioStore, account: str, owner: str, timeout_s: float,
                   poll_s: float) -> Iterator[None]:
    from sqlalchemy import text

    key = advisory_key(account)
    with store.database.errors(f"lock account {account}"):
        conn = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    released = False
    try:
        with store.database.errors(f"lock account {account}"):
            conn.execute(text("SELECT set_config('application_name', :name, false)"),
                         {"name": f"portfolio cycle {owner}"[:63]})

            def try_once() -> bool:
                return bool(conn.execute(text("SELECT pg_try_advisory_lock(CAST(:key AS bigint))"), {"key": key}).scalar())

            def holder() -> str:
                row = conn.execute(text(
                    "SELECT a.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.objsubid = 1 AND l.classid = ((CAST(:key AS bigint) >> 32) & 4294967295)::oid "
                    "AND l.objid = (CAST(:key AS bigint) & 4294967295)::oid LIMIT 1"),
                    {"key": key}).first()
                return "" if row is None else f"{row.application_name or 'a session'} (backend pid {row.pid})"

            _wait(try_once, account, timeout_s, poll_s, holder)
        try:
            yield
        finally:
            with store.database.errors(f"unlock account {account}"):
                released = bool(conn.execute(text("SELECT pg_advisory_unlock(CAST(:key AS bigint))"), {"key": key}).scalar())
    finally:
        if released:
            conn.close()
        else:  # never hand a connection that may still hold the lock back to the pool
            conn.invalidate()
            conn.close()
