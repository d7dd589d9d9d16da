"""Housekeeping of the portfolio store: retention, online backups, restore of a corrupt SQLite store, VACUUM/ANALYZE,
copy into another database.

One entry point, :func:`housekeep`, runs the whole job in this order (each step also on its own):

1. **Integrity** (:func:`~airflow_provider_portfolio.store.health.check_store`, ``PRAGMA integrity_check`` on SQLite).
   A corrupt SQLite store (integrity problems, "file is not a database", "malformed") is restored from its last
   good backup (:func:`restore_store`) and the report says so; with no good backup the job fails, changing nothing.
   A store that cannot be reached for another reason (locked, server down) fails the job: it is not corrupt.
2. **Retention** (:func:`apply_retention`): rows older than N days are deleted per table, in batches of
   ``batch_rows`` rows, each batch its own short transaction, so a large delete never holds a long write lock
   (SQLite's file lock, PostgreSQL's row locks) against the desk's writers. Retention is idempotent: a run that
   stops half-way leaves only rows that the next run deletes. Every setting is checked before anything is deleted.
3. **Backup** (:func:`backup_store`): SQLite only, online (the ``sqlite3`` backup API, one step: a consistent
   snapshot while other connections keep writing in WAL mode), into ``<store file>.backups/`` by default. The copy
   is written under a temporary name, checked with ``PRAGMA integrity_check``, fsynced, and only then renamed to
   ``<stem>-<UTC instant>.db``: every file of that name is a backup that was sound when written (the newest one that
   still passes ``integrity_check`` is "the last good backup"). The newest ``keep_backups`` are kept. PostgreSQL
   stores are not copied: use ``pg_dump`` or the server's own backups (base backups and WAL archiving).
4. **VACUUM / ANALYZE** (:func:`vacuum_store`): SQLite ``ANALYZE`` (sampled: ``analysis_limit``), then ``VACUUM``
   when at least ``min_free_fraction`` of the pages are free and the disk has room (VACUUM writes a copy of the
   store, and in WAL mode the WAL grows by as much: twice the store's size is asked for); PostgreSQL
   ``VACUUM (ANALYZE)`` of the store's tables, in autocommit.

Retention is driven by one registry, :data:`RETENTION_TABLES`: a table's name, the timestamp column that gives a
row's age, its default number of days, whether it belongs to the trading ledger (kept), and the rows it must never
lose. Defaults (days; ``None`` keeps every row):

- ``bars``: ``None``. Bars are the desk's raw material (forecast windows and backtests want years of them) and
  cost scarce vendor quota to load again; set e.g. ``{"bars": 730}`` for intraday bars, which grow fast.
- ``forecasts``, ``model_evaluations``: 180, by ``created_at`` (when written, so a replay's forecasts of past
  bars live as long as new ones): enough for half a year of model-health history.
- ``health_reports``: 90, by ``created_at``: monitoring and the desk gate only read the last hours.
- ``opportunities``: 180, by ``created_at``: the discovery rankings (a replay's rankings of past instants live as
  long as new ones); the trader reads only the latest.
- The trading ledger (``trading_decisions``, ``orders``, ``fills``, ``equity_curve``, ``accounts``, ``positions``) is
  kept: pruned only when ``retention`` names the table AND ``allow_kept_tables`` names it too, and even then never an
  order that is not in a final state (``pending_submit``, ``new``, ``accepted``...), a fill or decision of such an
  order, any row of an (account, symbol) that holds an open position, an open position, an account with an open
  position or order, nor the latest equity snapshot of an account (risk's "today's loss" starts from it).

Adding a table (e.g. ``studies``): declare it in :mod:`~airflow_provider_portfolio.store.schema` with a
:class:`~airflow_provider_portfolio.store.schema.UtcTimestamp` column, then append one
``RetentionTable("studies", "created_at", 180)`` to :data:`RETENTION_TABLES` (a ``guard`` when some rows must
never go). Tables the database does not have yet are skipped.

**Copying a store** (:func:`copy_store`, ``airflow-portfolio copy-store --from URL|PATH --to URL``): a one-shot copy of
every portfolio table into another database, typically a SQLite file moved to PostgreSQL. The source must be at the
latest schema version: it is refused otherwise (migrate it first), because the copy never writes to its source. The
target is migrated to the latest schema, then filled in ONE transaction: table by table (:func:`copy_tables`: tables
referred to first), ``batch_rows`` rows per statement, each value going through the store's column types (a
``UtcTimestamp`` read from SQLite's epoch microseconds is written as ``TIMESTAMP WITH TIME ZONE``); ``schema_version``
rows are the target's own migrations'. Before the commit each table's rows are counted in the target and must equal the
source's; any failure rolls the whole copy back, leaving the target as it was (migrated, with its rows). A target that
already holds rows is refused, naming the tables and their rows; with ``force`` those rows are deleted in the same
transaction and replaced. The source is read in one transaction (a snapshot): stop the DAGs writing to it first, then
point the store's connection at the target.

Plain Python: never imports Airflow. Restoring replaces the store's file: stop the store's writers first (the
housekeeping DAG runs at night, in ``database_pool``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, func, insert, inspect, select, tuple_

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.timeutil import ensure_utc, utc_now
from airflow_provider_portfolio.store import schema
from airflow_provider_portfolio.store.health import StoreCheck, check_store

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.sql.elements import ColumnElement
    from sqlalchemy.sql.selectable import NamedFromClause

    from airflow_provider_portfolio.store.repository import PortfolioStore

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_BATCH_ROWS", "DEFAULT_KEEP_BACKUPS", "DEFAULT_MIN_FREE_FRACTION", "MAX_RETENTION_DAYS",
           "RETENTION_TABLES", "BackupResult", "HousekeepingReport", "RestoreResult", "RetentionTable",
           "VacuumResult", "apply_retention", "backup_store", "default_backup_dir", "housekeep", "last_good_backup",
           "list_backups", "resolve_retention", "restore_store", "vacuum_store",
           "DEFAULT_COPY_BATCH_ROWS", "CopyResult", "copy_store", "copy_tables"]

#: Backups kept by default (the newest ones).
DEFAULT_KEEP_BACKUPS = 7
#: Rows deleted per transaction by retention.
DEFAULT_BATCH_ROWS = 10_000
#: Rows read and inserted per statement by :func:`copy_store`.
DEFAULT_COPY_BATCH_ROWS = 5_000
#: SQLite: VACUUM only when at least this share of the store's pages are free.
DEFAULT_MIN_FREE_FRACTION = 0.10
#: The longest retention accepted, days (a century).
MAX_RETENTION_DAYS = 36_500
#: SQLite VACUUM asks for this many times the store's size free on its disk (the copy, and the WAL in WAL mode).
VACUUM_SPACE_FACTOR = 2
#: Rows ``ANALYZE`` samples per index on SQLite (``PRAGMA analysis_limit``): statistics in bounded time.
ANALYSIS_LIMIT = 1000
_SQLITE_MAGIC = b"SQLite format 3\x00"
_CORRUPT_MARKERS = ("not a database", "malformed", "corrupt")
_STAMP_RE = r"\d{8}T\d{6}\.\d{6}Z"
_PG_BACKUP_ADVICE = ("PostgreSQL store: no file backup; use pg_dump or the server's own backups (base backups with "
                     "WAL archiving)")
_MEMORY_ADVICE = "in-memory SQLite store: nothing to back up"

_now = utc_now

Guard = Callable[["NamedFromClause"], "ColumnElement[bool]"]


# ---------------------------------------------------------------------------------------------- the registry
def _open_order(account: Any, client_order_id: Any = None) -> ColumnElement[bool]:
    """An order of ``account`` (with ``client_order_id`` when given) not in a final state."""
    o = schema.orders.c
    where = [o.account == account, o.status.not_in(schema.TERMINAL_ORDER_STATES)]
    if client_order_id is not None:
        where.append(o.client_order_id == client_order_id)
    return exists().where(*where)


def _open_position(account: Any, symbol: Any = None) -> ColumnElement[bool]:
    """A non-zero position of ``account`` (in ``symbol`` when given)."""
    p = schema.positions.c
    where = [p.account == account, p.qty != 0.0]
    if symbol is not None:
        where.append(p.symbol == symbol)
    return exists().where(*where)


def _decision_may_go(r: NamedFromClause) -> ColumnElement[bool]:
    return ~_open_order(r.c.account, r.c.client_order_id) & ~_open_position(r.c.account, r.c.symbol)


def _order_may_go(r: NamedFromClause) -> ColumnElement[bool]:
    return r.c.status.in_(schema.TERMINAL_ORDER_STATES) & ~_open_position(r.c.account, r.c.symbol)


def _fill_may_go(r: NamedFromClause) -> ColumnElement[bool]:
    return ~_open_order(r.c.account, r.c.client_order_id) & ~_open_position(r.c.account, r.c.symbol)


def _equity_may_go(r: NamedFromClause) -> ColumnElement[bool]:
    latest = schema.equity_curve.alias("latest")
    return r.c.ts < select(func.max(latest.c.ts)).where(latest.c.account == r.c.account).scalar_subquery()


def _position_may_go(r: NamedFromClause) -> ColumnElement[bool]:
    return r.c.qty == 0.0


def _account_may_go(r: NamedFromClause) -> ColumnElement[bool]:
    return ~_open_position(r.c.account) & ~_open_order(r.c.account)


def _applied_study(kind: ColumnElement[Any], study_id: ColumnElement[Any]) -> ColumnElement[bool]:
    s = schema.studies.c
    return exists().where(s.kind == kind, s.study_id == study_id, s.applied.is_(True))


def _study_point_may_go(r: NamedFromClause) -> ColumnElement[bool]:
    return ~_applied_study(r.c.kind, r.c.study_id)


def _study_may_go(r: NamedFromClause) -> ColumnElement[bool]:
    return r.c.applied.is_(False)


@dataclass(frozen=True)
class RetentionTable:
    """A store table retention may prune.

    :param name: the table, declared in :data:`~airflow_provider_portfolio.store.schema.metadata`.
    :param column: its ``UtcTimestamp`` column giving a row's age: rows with ``column < now - days`` go.
    :param default_days: days kept when ``retention`` does not name the table; ``None``: every row is kept.
    :param kept: part of the trading ledger: pruned only when also named in ``allow_kept_tables``.
    :param guard: the condition a row must also meet to be deleted (built on an alias of the table).
    """

    name: str
    column: str
    default_days: int | None
    kept: bool = False
    guard: Guard | None = None


#: Every table retention knows, in the order it prunes them (children before what they refer to).
RETENTION_TABLES: tuple[RetentionTable, ...] = (
    RetentionTable("bars", "ts", None),
    RetentionTable("forecasts", "created_at", 180),
    RetentionTable("model_evaluations", "created_at", 180),
    RetentionTable("health_reports", "created_at", 90),
    RetentionTable("signal_validations", "created_at", 180),
    RetentionTable("opportunities", "created_at", 180),
    # A study's points go before the study; a study whose recommendation was applied is kept with its points (the
    # record of why the live settings are what they are).
    RetentionTable("study_points", "ts", 365, guard=_study_point_may_go),
    RetentionTable("studies", "ts", 365, guard=_study_may_go),
    RetentionTable("trading_decisions", "created_at", None, kept=True, guard=_decision_may_go),
    RetentionTable("fills", "filled_at", None, kept=True, guard=_fill_may_go),
    RetentionTable("orders", "updated_at", None, kept=True, guard=_order_may_go),
    RetentionTable("equity_curve", "created_at", None, kept=True, guard=_equity_may_go),
    RetentionTable("positions", "updated_at", None, kept=True, guard=_position_may_go),
    RetentionTable("accounts", "updated_at", None, kept=True, guard=_account_may_go),
)
_REGISTRY: dict[str, RetentionTable] = {spec.name: spec for spec in RETENTION_TABLES}


def _check_registry() -> None:
    """Every entry names a declared table and one of its ``UtcTimestamp`` columns, once."""
    if len(_REGISTRY) != len(RETENTION_TABLES):
        raise RuntimeError("RETENTION_TABLES names a table twice")
    for spec in RETENTION_TABLES:
        table = schema.metadata.tables.get(spec.name)
        if table is None or spec.column not in table.c or not isinstance(table.c[spec.column].type,
                                                                          schema.UtcTimestamp):
            raise RuntimeError(f"RETENTION_TABLES: {spec.name}.{spec.column} is not a UtcTimestamp column of a table "
                               "declared in store/schema.py")


_check_registry()


# ---------------------------------------------------------------------------------------------- results
def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _stamp(at: datetime) -> str:
    at = ensure_utc(at)
    return at.strftime("%Y%m%dT%H%M%S") + f".{at.microsecond:06d}Z"


@dataclass(frozen=True)
class BackupResult:
    """What :func:`backup_store` did.

    :param path: the new backup, or ``None`` when skipped.
    :param skipped: why no backup was made (PostgreSQL, an in-memory store), else ``None``.
    :param integrity: the backup's ``integrity_check`` answer (``ok``).
    :param size_bytes: its size.
    :param kept: backups in the folder after rotation.
    :param removed: the older backups deleted by rotation.
    :param elapsed_s: how long it took.
    """

    path: str | None
    skipped: str | None = None
    integrity: str | None = None
    size_bytes: int | None = None
    kept: int = 0
    removed: tuple[str, ...] = ()
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "skipped": self.skipped, "integrity": self.integrity,
                "size_bytes": self.size_bytes, "kept": self.kept, "removed": list(self.removed),
                "elapsed_s": round(self.elapsed_s, 3)}


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_store` did.

    :param store: the store's file.
    :param backup: the backup it was restored from.
    :param reason: what was wrong with the store (its integrity problems or error; ``missing``; ``forced``).
    :param moved_aside: where the replaced file now is (``<store>.corrupt-<stamp>``, or
        ``<store>.replaced-<stamp>`` for a sound store restored with ``force``); ``None`` when there was no file.
    :param elapsed_s: how long it took.
    """

    store: str
    backup: str
    reason: str
    moved_aside: str | None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "backup": self.backup, "reason": self.reason, "moved_aside": self.moved_aside,
                "elapsed_s": round(self.elapsed_s, 3)}


@dataclass(frozen=True)
class VacuumResult:
    """What :func:`vacuum_store` did.

    :param analyzed: statistics were refreshed (``ANALYZE``).
    :param vacuumed: the store was vacuumed.
    :param message: what was done or why VACUUM was skipped.
    :param elapsed_s: how long it took.
    """

    analyzed: bool
    vacuumed: bool
    message: str
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"analyzed": self.analyzed, "vacuumed": self.vacuumed, "message": self.message,
                "elapsed_s": round(self.elapsed_s, 3)}


@dataclass
class HousekeepingReport:
    """What :func:`housekeep` found and did; :meth:`to_dict` is small JSON (a task's XCom).

    :param store: the store's URL, password hidden.
    :param integrity: the check made first: ``check``, ``ok``, ``corrupt``, ``problems``, ``error``.
    :param restored: the store was corrupt and was restored from a backup.
    :param restore: the restore (:meth:`RestoreResult.to_dict`), or in a dry run the backup it would use.
    :param retention: per table: ``days``, ``cutoff`` and ``deleted`` (``would_delete`` in a dry run), or
        ``absent`` for a table the database does not have.
    :param backup: :meth:`BackupResult.to_dict`, ``None`` in a dry run.
    :param vacuum: :meth:`VacuumResult.to_dict`, ``None`` when not asked or in a dry run.
    :param durations_s: seconds per step, and ``total``.
    """

    store: str
    dialect: str
    dry_run: bool
    now: datetime
    integrity: dict[str, Any] = field(default_factory=dict)
    restored: bool = False
    restore: dict[str, Any] | None = None
    retention: dict[str, dict[str, Any]] = field(default_factory=dict)
    backup: dict[str, Any] | None = None
    vacuum: dict[str, Any] | None = None
    durations_s: dict[str, float] = field(default_factory=dict)

    @property
    def deleted(self) -> int:
        """Rows deleted (would be, in a dry run) by retention, all tables."""
        key = "would_delete" if self.dry_run else "deleted"
        return sum(int(entry.get(key, 0)) for entry in self.retention.values())

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "dialect": self.dialect, "dry_run": self.dry_run, "now": _iso(self.now),
                "integrity": self.integrity, "restored": self.restored, "restore": self.restore,
                "retention": self.retention, "deleted": self.deleted, "backup": self.backup, "vacuum": self.vacuum,
                "durations_s": {k: round(v, 3) for k, v in self.durations_s.items()}}

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"store {self.store}" + (" (dry run)" if self.dry_run else "")]
        if self.restored and self.restore:
            parts.append(f"RESTORED from {self.restore['backup']} (corrupt file kept as {self.restore['moved_aside']})")
        else:
            parts.append("integrity ok" if self.integrity.get("ok") else f"integrity: {self.integrity}")
        parts.append(f"{'would delete' if self.dry_run else 'deleted'} {self.deleted} row(s)")
        if self.backup:
            parts.append(f"backup {self.backup['path']}" if self.backup["path"] else self.backup["skipped"])
        if self.vacuum:
            parts.append(self.vacuum["message"])
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------- retention
def _whole_days(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RETENTION_DAYS:
        raise InvalidInputError(f"{name} must be a whole number of days from 1 to {MAX_RETENTION_DAYS} (or null to "
                                f"keep every row), got {value!r}")
    return value


def _names(value: object, name: str) -> set[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Collection) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{name} must be a list of table names, got {value!r}")
    return set(value)


def resolve_retention(retention: Mapping[str, object] | None = None, *,
                      allow_kept_tables: Collection[str] = (), setting: str = "retention") -> dict[str, int]:
    """The days kept per table: the defaults of :data:`RETENTION_TABLES` overridden by ``retention``.

    :param retention: table -> days (a whole number >= 1) or ``None`` to keep every row of the table.
    :param allow_kept_tables: the trading-ledger tables ``retention`` may prune (each must also be named there).
    :param setting: how messages name ``retention`` (``Variable portfolio.retention_days``).
    :return: table -> days, for the tables that are pruned, in pruning order.
    :raises InvalidInputError: for an unknown table, days out of range, or a kept table not allowed; naming it.
    """
    if retention is None:
        retention = {}
    if not isinstance(retention, Mapping):
        raise InvalidInputError(f"{setting} must be a mapping of table -> days, got {retention!r}")
    allowed = _names(allow_kept_tables, "allow_kept_tables")
    for name in sorted(allowed):
        if name not in _REGISTRY or not _REGISTRY[name].kept:
            raise InvalidInputError(f"allow_kept_tables: {name!r} is not a kept table; kept tables: "
                                    f"{[s.name for s in RETENTION_TABLES if s.kept]}")
    for name, days in retention.items():
        if name not in _REGISTRY:
            raise InvalidInputError(f"{setting}: unknown table {name!r}; tables: {list(_REGISTRY)}")
        _whole_days(days, f"{setting}[{name!r}]")
        if _REGISTRY[name].kept and days is not None and name not in allowed:
            raise InvalidInputError(f"{setting}: {name!r} is part of the trading ledger, kept unless allowed "
                                    f"explicitly: also name it in allow_kept_tables to prune it")
    out: dict[str, int] = {}
    for spec in RETENTION_TABLES:
        days = _whole_days(retention[spec.name], "") if spec.name in retention else spec.default_days
        if days is not None:
            out[spec.name] = days
    return out


def _has_table(conn: Any, name: str) -> bool:
    return bool(inspect(conn).has_table(name))


def _prune_statements(spec: RetentionTable, cutoff: datetime, batch_rows: int) -> tuple[Any, Any]:
    """(count of the rows that go, delete of one batch of them)."""
    table: Table = schema.metadata.tables[spec.name]
    r = table.alias("r")
    where = [r.c[spec.column] < cutoff]
    if spec.guard is not None:
        where.append(spec.guard(r))
    count = select(func.count()).select_from(r).where(*where)
    key = list(table.primary_key.columns)
    batch = select(*(r.c[c.name] for c in key)).where(*where).limit(batch_rows)
    return count, delete(table).where(tuple_(*key).in_(batch))


def apply_retention(store: PortfolioStore, retention: Mapping[str, object] | None = None, *,
                    allow_kept_tables: Collection[str] = (), now: datetime | None = None,
                    batch_rows: int = DEFAULT_BATCH_ROWS, dry_run: bool = False,
                    setting: str = "retention") -> dict[str, dict[str, Any]]:
    """Delete the rows older than their table's retention (see :func:`resolve_retention`), ``batch_rows`` per
    transaction; with ``dry_run``, only count them.

    :param store: the store.
    :param retention: table -> days (or ``None``), over the defaults.
    :param allow_kept_tables: the trading-ledger tables that ``retention`` may prune.
    :param now: the instant ages are measured from (default the current time).
    :param batch_rows: rows per delete transaction (>= 1).
    :param dry_run: count, delete nothing.
    :param setting: how messages name ``retention``.
    :return: per table: ``days``, ``cutoff`` (ISO) and ``deleted`` (``would_delete`` in a dry run), or ``absent``.
    :raises InvalidInputError: for bad settings, before anything is deleted.
    :raises StoreError: when the store fails; the batches already committed stay deleted (they were due).
    """
    days_of = resolve_retention(retention, allow_kept_tables=allow_kept_tables, setting=setting)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInputError(f"batch_rows must be a whole number >= 1, got {batch_rows!r}")
    now = _now() if now is None else ensure_utc(now, "now")
    out: dict[str, dict[str, Any]] = {}
    for name, days in days_of.items():
        spec = _REGISTRY[name]
        cutoff = now - timedelta(days=days)
        count, delete_batch = _prune_statements(spec, cutoff, batch_rows)
        entry: dict[str, Any] = {"days": days, "cutoff": cutoff.isoformat()}
        out[name] = entry
        with store.database.read(f"count the {name} rows older than {cutoff.isoformat()}") as conn:
            if not _has_table(conn, name):
                entry["absent"] = True
                continue
            due = int(conn.execute(count).scalar() or 0)
        if dry_run:
            entry["would_delete"] = due
            continue
        deleted = 0
        while due:
            with store.database.write(f"delete {name} rows older than {cutoff.isoformat()}") as conn:
                n = int(conn.execute(delete_batch).rowcount or 0)
            deleted += n
            if n < batch_rows:
                break
        entry["deleted"] = deleted
        if deleted:
            log.info("store %s: deleted %d %s row(s) older than %d day(s) (before %s)", store.url, deleted, name,
                     days, cutoff.isoformat())
    return out


# ---------------------------------------------------------------------------------------------- files
def _sqlite_file(store: PortfolioStore) -> Path | None:
    return store.database.sqlite_file


def default_backup_dir(store_file: str | os.PathLike[str]) -> Path:
    """Where the backups of a SQLite store go by default: ``<store file>.backups`` beside it."""
    path = Path(store_file)
    return path.with_name(path.name + ".backups")


def _backup_dir(store_file: Path, backup_dir: str | os.PathLike[str] | None) -> Path:
    if backup_dir is None or (isinstance(backup_dir, str) and not backup_dir.strip()):
        return default_backup_dir(store_file)
    if not isinstance(backup_dir, str | os.PathLike):
        raise InvalidInputError(f"backup_dir must be a folder path, got {backup_dir!r}")
    path = Path(backup_dir).expanduser()
    return path if path.is_absolute() else store_file.parent / path


def _pattern(store_file: Path) -> re.Pattern[str]:
    suffix = store_file.suffix or ".db"
    return re.compile(re.escape(store_file.stem) + r"-(" + _STAMP_RE + ")" + re.escape(suffix) + "$")


def list_backups(store_file: str | os.PathLike[str], backup_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The backups of a SQLite store's file in ``backup_dir`` (default beside it), newest first. Every one was sound
    when written; :func:`last_good_backup` checks them again.

    :param store_file: the store's database file.
    :param backup_dir: the backups' folder; a relative path is taken from the store's folder.
    """
    store_path = Path(store_file)
    folder = _backup_dir(store_path, backup_dir)
    pattern = _pattern(store_path)
    try:
        found = [(m.group(1), folder / name) for name in os.listdir(folder) if (m := pattern.match(name))]
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StoreError(f"cannot list the backups in {folder}: {err.strerror or err}") from None
    return [path for _, path in sorted(found, reverse=True)]


def _sound(path: Path) -> tuple[bool, str]:
    """Whether ``path`` is a SQLite database that passes ``integrity_check``, and the answer (or the error)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as err:
        return False, f"cannot read it: {err.strerror or err}"
    if head != _SQLITE_MAGIC:
        return False, "not a SQLite database"
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = [str(r[0]) for r in con.execute("PRAGMA integrity_check(20)").fetchall()]
        finally:
            con.close()
    except sqlite3.Error as err:
        return False, f"{type(err).__name__}: {err}"
    return rows == ["ok"], "ok" if rows == ["ok"] else "; ".join(rows)


def last_good_backup(store_file: str | os.PathLike[str],
                     backup_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The newest backup of the store's file that passes ``PRAGMA integrity_check``, or ``None``.

    :param store_file: the store's database file.
    :param backup_dir: the backups' folder (default beside the store).
    """
    for path in list_backups(store_file, backup_dir):
        ok, answer = _sound(path)
        if ok:
            return path
        log.warning("backup %s fails its integrity check (%s): skipped", path, answer)
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # platforms that cannot open or fsync a directory
        pass


def _writable_dir(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there; nothing is left behind.

    :raises InvalidInputError: naming the folder, when it cannot be.
    """
    probe = folder / f".probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as err:
        raise InvalidInputError(f"backup_dir {str(folder)!r} cannot be written: {err.strerror or err}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def backup_store(store: PortfolioStore, *, backup_dir: str | os.PathLike[str] | None = None,
                 keep: int = DEFAULT_KEEP_BACKUPS) -> BackupResult:
    """Back up a SQLite store online into ``backup_dir``, check the copy, and keep the newest ``keep`` backups.

    The copy is one step of the ``sqlite3`` backup API on a connection of the store (a consistent snapshot: other
    connections keep writing in WAL mode, their uncommitted work is not copied), written as ``.<name>.tmp-*``,
    switched to ``journal_mode=DELETE`` (one self-contained file), checked with ``PRAGMA integrity_check``, fsynced,
    and renamed to ``<stem>-<UTC instant>.db`` only then. On any failure the temporary file is removed.

    PostgreSQL and in-memory stores are skipped (``skipped`` says why).

    :param store: the store.
    :param backup_dir: the backups' folder, created when missing; default ``<store file>.backups``; a relative path
        is taken from the store's folder.
    :param keep: backups kept, newest first (>= 1); older ones are deleted after a good backup.
    :raises InvalidInputError: for a ``keep`` out of range or a folder that cannot be written (nothing left there).
    :raises StoreError: when the copy fails or is not sound (nothing left in the folder).
    """
    _check_keep(keep)
    started = time.monotonic()
    store_file = _sqlite_file(store)
    if store.dialect != "sqlite":
        return BackupResult(None, skipped=_PG_BACKUP_ADVICE)
    if store_file is None:
        return BackupResult(None, skipped=_MEMORY_ADVICE)
    folder = _backup_dir(store_file, backup_dir)
    _writable_dir(folder)
    final = folder / f"{store_file.stem}-{_stamp(_now())}{store_file.suffix or '.db'}"
    tmp = folder / f".{final.name}.tmp-{uuid.uuid4().hex}"
    try:
        answer = _copy_online(store, tmp)
        if answer != "ok":
            raise StoreError(f"store {store.url}: the backup failed its integrity check ({answer}); nothing kept")
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync_dir(folder)
    except OSError as err:
        raise StoreError(f"store {store.url}: cannot write the backup in {folder}: {err.strerror or err}") from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:
                pass
    removed = _rotate(store_file, folder, keep)
    size = final.stat().st_size
    log.info("store %s: backed up to %s (%d bytes, integrity ok)", store.url, final, size)
    return BackupResult(str(final), integrity="ok", size_bytes=size, kept=len(list_backups(store_file, folder)),
                        removed=tuple(removed), elapsed_s=time.monotonic() - started)


def _copy_online(store: PortfolioStore, dest: Path) -> str:
    """Copy the store into the new file ``dest`` with the backup API; the copy's ``integrity_check`` answer."""
    with store.database.errors("back up the store"):
        raw = store.engine.raw_connection()
        try:
            source = raw.driver_connection
            assert isinstance(source, sqlite3.Connection)  # a SQLite store's driver
            target = sqlite3.connect(dest)
            try:
                source.backup(target)  # all pages in one step: one consistent snapshot
                target.execute("PRAGMA journal_mode = DELETE")
                rows = [str(r[0]) for r in target.execute("PRAGMA integrity_check(20)").fetchall()]
            finally:
                target.close()
        finally:
            raw.close()
    return "ok" if rows == ["ok"] else "; ".join(rows)


def _check_keep(keep: object) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidInputError(f"keep_backups must be a whole number >= 1, got {keep!r}")


def _rotate(store_file: Path, folder: Path, keep: int) -> list[str]:
    removed = []
    for old in list_backups(store_file, folder)[keep:]:
        try:
            old.unlink()
        except OSError as err:
            log.warning("cannot remove the old backup %s: %s", old, err.strerror or err)
            continue
        removed.append(str(old))
    return removed


# ---------------------------------------------------------------------------------------------- restore
def _corrupt(check: StoreCheck) -> bool:
    """A SQLite store whose integrity check failed, or that SQLite refused as damaged (not merely unreachable)."""
    if check.dialect != "sqlite":
        return False
    if check.problems:
        return True
    return bool(check.error) and any(m in str(check.error).lower() for m in _CORRUPT_MARKERS)


def _integrity(check: StoreCheck) -> dict[str, Any]:
    return {"check": check.check, "ok": check.reachable and not check.problems, "corrupt": _corrupt(check),
            "problems": list(check.problems), "error": check.error, "version": check.version,
            "elapsed_s": round(check.elapsed_s, 3)}


def _what_is_wrong(check: StoreCheck) -> str:
    """The check's problems or error on one line, at most 300 characters."""
    text = " ".join(("; ".join(check.problems) if check.problems else str(check.error)).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _replace_file(store: PortfolioStore, store_file: Path, backup: Path, aside_tag: str) -> str | None:
    """Copy ``backup`` beside the store, fsync, move the store's file (and its -wal/-shm/-journal) aside, rename the
    copy over the store. Returns where the old file went (``None`` when there was none)."""
    stamp = _stamp(_now())
    tmp = store_file.with_name(f".{store_file.name}.restore-{uuid.uuid4().hex}.tmp")
    aside: Path | None = None
    try:
        shutil.copyfile(backup, tmp)
        _fsync(tmp)
        store.dispose()
        if store_file.exists():
            aside = store_file.with_name(f"{store_file.name}.{aside_tag}-{stamp}")
            try:
                os.link(store_file, aside)  # the old file keeps a name: the store's name is never missing
            except OSError:
                shutil.copy2(store_file, aside)
        for ext in ("-wal", "-shm", "-journal"):  # a stale WAL must never be replayed into the restored file
            side = store_file.with_name(store_file.name + ext)
            if side.exists():
                target = aside.with_name(aside.name + ext) if aside else side.with_name(f"{side.name}.{stamp}")
                os.replace(side, target)
        os.replace(tmp, store_file)
        _fsync_dir(store_file.parent)
    except OSError as err:
        raise StoreError(f"store {store.url}: cannot restore {store_file} from {backup}: {err.strerror or err}") \
            from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return None if aside is None else str(aside)


def _chosen_backup(store_file: Path, backup: str | os.PathLike[str] | None,
                   backup_dir: str | os.PathLike[str] | None) -> Path:
    if backup is not None:
        path = Path(backup).expanduser().resolve()
        if path == store_file:
            raise InvalidInputError(f"backup {str(path)!r} is the store's own file")
        ok, answer = _sound(path)
        if not ok:
            raise InvalidInputError(f"backup {str(path)!r} cannot be restored: {answer}")
        return path
    found = last_good_backup(store_file, backup_dir)
    if found is None:
        raise StoreError(f"no good backup of {store_file} in {_backup_dir(store_file, backup_dir)}")
    return found


def restore_store(store: PortfolioStore, *, backup: str | os.PathLike[str] | None = None,
                  backup_dir: str | os.PathLike[str] | None = None, force: bool = False) -> RestoreResult:
    """Restore a SQLite store from a backup: the given ``backup``, else the last good one in ``backup_dir``.

    A sound store is only overwritten with ``force``. The backup is checked (``integrity_check``), copied to a
    temporary file beside the store and fsynced; the store's file is kept as ``<store>.corrupt-<stamp>`` (with its
    ``-wal``/``-shm``), and the copy is renamed over the store (atomic). Stop the store's writers first: a process
    holding the old file open keeps writing to it.

    :param store: the store (SQLite file).
    :param backup: the backup file to restore; default the newest good one.
    :param backup_dir: the backups' folder (default ``<store file>.backups``).
    :param force: overwrite a store that is not corrupt.
    :raises InvalidInputError: for a PostgreSQL or in-memory store, a sound store without ``force``, or a ``backup``
        that is not a sound SQLite database; nothing is changed.
    :raises StoreError: when there is no good backup, or the files cannot be written.
    """
    started = time.monotonic()
    store_file = _sqlite_file(store)
    if store.dialect != "sqlite":
        raise InvalidInputError(f"store {store.url}: only a SQLite store is restored from a file backup; restore a "
                                "PostgreSQL store with pg_restore or the server's own backups")
    if store_file is None:
        raise InvalidInputError(f"store {store.url}: an in-memory store has no backups")
    if store_file.exists():
        check = check_store(store.database, full=True)
        store.dispose()
        if _corrupt(check):
            reason, tag = _what_is_wrong(check), "corrupt"
        elif not force:
            state = ("is sound (integrity_check ok)" if check.reachable
                     else f"cannot be checked but is not known to be corrupt ({check.error})")
            raise InvalidInputError(f"store {store_file} {state}: refusing to overwrite it with a backup; pass "
                                    "force (--force) to restore anyway")
        else:
            reason, tag = "forced", "replaced"
    else:
        reason, tag = "missing", "replaced"
    chosen = _chosen_backup(store_file, backup, backup_dir)
    aside = _replace_file(store, store_file, chosen, tag)
    log.error("STORE RESTORED: %s (%s) replaced by the backup %s; the old file is kept as %s", store_file, reason,
              chosen, aside)
    return RestoreResult(str(store_file), str(chosen), reason, aside, time.monotonic() - started)


# ---------------------------------------------------------------------------------------------- vacuum
def vacuum_store(store: PortfolioStore, *, min_free_fraction: float = DEFAULT_MIN_FREE_FRACTION) -> VacuumResult:
    """Refresh the query planner's statistics and give free space back.

    SQLite: ``ANALYZE`` (``analysis_limit`` rows per index), then ``VACUUM`` and a WAL checkpoint when at least
    ``min_free_fraction`` of the pages are free and the store's disk has :data:`VACUUM_SPACE_FACTOR` times its size
    free (else skipped, saying why). VACUUM holds the write lock while it runs: writers wait (up to the store's busy
    timeout). PostgreSQL: ``VACUUM (ANALYZE)`` of each store table, in autocommit, under the store's lock and
    statement timeouts (autovacuum does the rest).

    :param store: the store.
    :param min_free_fraction: SQLite: the share of free pages (0..1) from which VACUUM is worth it; 0: always.
    :raises InvalidInputError: for a fraction out of range.
    :raises StoreError: when the store fails.
    """
    if isinstance(min_free_fraction, bool) or not isinstance(min_free_fraction, int | float) \
            or not 0 <= min_free_fraction <= 1:
        raise InvalidInputError(f"min_free_fraction must be a number from 0 to 1, got {min_free_fraction!r}")
    started = time.monotonic()
    if store.dialect == "postgresql":
        with store.database.errors("vacuum the store"), store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            names = [n for n in inspect(conn).get_table_names() if n in schema.metadata.tables]
            quote = conn.dialect.identifier_preparer.quote
            for name in names:
                conn.exec_driver_sql(f"VACUUM (ANALYZE) {quote(name)}")
        return VacuumResult(True, True, f"VACUUM (ANALYZE) of {len(names)} table(s)", time.monotonic() - started)
    store_file = _sqlite_file(store)
    with store.database.errors("vacuum the store"):
        raw = store.engine.raw_connection()
        try:
            con = raw.driver_connection
            assert isinstance(con, sqlite3.Connection)  # a SQLite store's driver
            con.execute(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
            try:
                con.execute("ANALYZE")
            finally:
                con.execute("PRAGMA analysis_limit = 0")
            pages = int(con.execute("PRAGMA page_count").fetchone()[0])
            free = int(con.execute("PRAGMA freelist_count").fetchone()[0])
            share = free / pages if pages else 0.0
            blocker = _vacuum_blocker(store_file, share, min_free_fraction)
            if blocker is None:
                con.execute("VACUUM")
                if store_file is not None:
                    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
    vacuumed = blocker is None
    message = f"ANALYZE; VACUUM freed {free} of {pages} page(s)" if blocker is None else blocker
    log.info("store %s: %s", store.url, message)
    return VacuumResult(True, vacuumed, message, time.monotonic() - started)


def _vacuum_blocker(store_file: Path | None, share: float, min_free_fraction: float) -> str | None:
    """Why VACUUM is skipped, or ``None`` to run it."""
    if share < min_free_fraction:
        return f"ANALYZE; VACUUM skipped: {share:.1%} of the pages free (below {min_free_fraction:.0%})"
    if store_file is None:
        return None
    size = sum(p.stat().st_size for p in (store_file, store_file.with_name(store_file.name + "-wal")) if p.exists())
    free_disk = shutil.disk_usage(store_file.parent).free
    if free_disk < VACUUM_SPACE_FACTOR * size:
        return (f"ANALYZE; VACUUM skipped: {free_disk} bytes free on the store's disk, it needs "
                f"{VACUUM_SPACE_FACTOR} x the store's {size} bytes")
    return None


# ---------------------------------------------------------------------------------------------- the job
def housekeep(store: PortfolioStore, *, retention: Mapping[str, object] | None = None,
              allow_kept_tables: Collection[str] = (), backup_dir: str | os.PathLike[str] | None = None,
              keep_backups: int = DEFAULT_KEEP_BACKUPS, vacuum: bool = True, full_check: bool = True,
              now: datetime | None = None, dry_run: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
              retention_setting: str = "retention") -> HousekeepingReport:
    """The store's nightly housekeeping: integrity (restore a corrupt SQLite store from its last good backup),
    retention, backup, VACUUM/ANALYZE (see the module docstring).

    Every setting is checked first, and the backup folder proven writable, before anything is changed.

    :param store: the store (need not be migrated: a table it lacks is skipped).
    :param retention: table -> days (or ``None`` to keep the table) over the defaults of :data:`RETENTION_TABLES`.
    :param allow_kept_tables: trading-ledger tables ``retention`` may prune.
    :param backup_dir: SQLite backups' folder (default ``<store file>.backups``; relative: from the store's folder).
    :param keep_backups: backups kept (>= 1).
    :param vacuum: run :func:`vacuum_store` last.
    :param full_check: SQLite ``integrity_check`` (every index cross-checked; minutes on a very large store) rather
        than ``quick_check``.
    :param now: the instant retention measures ages from (default the current time).
    :param dry_run: restore, delete, copy and vacuum nothing: report the integrity, the backup a restore would use,
        and the rows retention would delete.
    :param batch_rows: rows per retention transaction.
    :param retention_setting: how messages name ``retention``.
    :raises InvalidInputError: for a bad setting or an unwritable backup folder; nothing is changed.
    :raises StoreError: when the store cannot be reached, or is corrupt with no good backup (nothing changed), or
        fails on the way.
    """
    started = time.monotonic()
    now = _now() if now is None else ensure_utc(now, "now")
    resolve_retention(retention, allow_kept_tables=allow_kept_tables, setting=retention_setting)
    _check_keep(keep_backups)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInputError(f"batch_rows must be a whole number >= 1, got {batch_rows!r}")
    store_file = _sqlite_file(store)
    folder = None if store_file is None else _backup_dir(store_file, backup_dir)
    report = HousekeepingReport(store.url, store.dialect, dry_run, now)

    mark = time.monotonic()
    check = check_store(store.database, full=full_check)
    report.integrity = _integrity(check)
    report.durations_s["check"] = time.monotonic() - mark
    if _corrupt(check):
        assert store_file is not None and folder is not None  # only a SQLite file is found corrupt
        mark = time.monotonic()
        found = last_good_backup(store_file, folder)
        if found is None:
            raise StoreError(f"store {store.url} is corrupt ({_what_is_wrong(check)}) and there is no good backup in "
                             f"{folder}: nothing was changed; restore it by hand or move it aside")
        if dry_run:
            report.restore = {"backup": str(found), "reason": _what_is_wrong(check)}
            report.durations_s["total"] = time.monotonic() - started
            return report
        store.dispose()
        restored = _replace_file(store, store_file, found, "corrupt")
        report.restored = True
        report.restore = RestoreResult(str(store_file), str(found), _what_is_wrong(check), restored,
                                       time.monotonic() - mark).to_dict()
        log.error("STORE RESTORED: %s was corrupt (%s); restored from the backup %s; the corrupt file is kept as %s",
                  store_file, _what_is_wrong(check), found, restored)
        after = check_store(store.database, full=False)
        report.integrity["after_restore"] = _integrity(after)
        if _corrupt(after) or not after.reachable:
            raise StoreError(f"store {store.url}: still unusable after the restore from {found}: "
                             f"{_what_is_wrong(after)}")
        report.durations_s["restore"] = time.monotonic() - mark
    elif not check.reachable:
        raise StoreError(f"cannot housekeep: {check.error}")

    if folder is not None and not dry_run:
        _writable_dir(folder)  # an unwritable folder fails before retention deletes anything

    mark = time.monotonic()
    report.retention = apply_retention(store, retention, allow_kept_tables=allow_kept_tables, now=now,
                                       batch_rows=batch_rows, dry_run=dry_run, setting=retention_setting)
    report.durations_s["retention"] = time.monotonic() - mark
    if not dry_run:
        mark = time.monotonic()
        report.backup = backup_store(store, backup_dir=folder, keep=keep_backups).to_dict()
        report.durations_s["backup"] = time.monotonic() - mark
        if vacuum:
            mark = time.monotonic()
            report.vacuum = vacuum_store(store).to_dict()
            report.durations_s["vacuum"] = time.monotonic() - mark
    report.durations_s["total"] = time.monotonic() - started
    return report


# ---------------------------------------------------------------------------------------------- copy
@dataclass(frozen=True)
class CopyResult:
    """What :func:`copy_store` did.

    :param source: the source store's URL (password hidden).
    :param target: the target store's URL (password hidden).
    :param rows: rows copied per table, in copy order (every portfolio table, ``0`` for an empty one); equal to
        the source's and the target's counts, checked before the commit.
    :param replaced: rows the target held per table and lost (``force``); empty when it held none.
    :param elapsed_s: how long it took.
    """

    source: str
    target: str
    rows: dict[str, int]
    replaced: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        """Rows copied, all tables."""
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "rows": dict(self.rows), "total": self.total,
                "replaced": dict(self.replaced), "elapsed_s": round(self.elapsed_s, 3)}


def copy_tables() -> list[Table]:
    """The tables :func:`copy_store` copies, in copy order: every table of the latest schema but
    ``schema_version`` (the target's own migrations write its rows), tables referred to before the tables that
    refer to them."""
    return [t for t in schema.metadata.sorted_tables if t.name != schema.schema_version.name]


def _count_rows(conn: Any, tables: Collection[Table]) -> dict[str, int]:
    return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0) for t in tables}


def _insert_batch(conn: Any, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert one batch of ``rows`` (values as the table's column types return them) into ``table``."""
    conn.execute(insert(table), rows)


def _same_database(source: PortfolioStore, target: PortfolioStore) -> bool:
    if source.dialect == "sqlite" and target.dialect == "sqlite":
        a, b = _sqlite_file(source), _sqlite_file(target)
        return a is not None and a == b
    return source.url == target.url


def _check_source(source: PortfolioStore) -> None:
    """A source that exists and is at the latest schema version; never creates or migrates it."""
    if source.dialect == "sqlite":
        store_file = _sqlite_file(source)
        if store_file is None:
            raise InvalidInputError(f"source store {source.url}: an in-memory store cannot be copied from")
        if not store_file.is_file():
            raise InvalidInputError(f"source store {source.url}: there is no file at {store_file}")
    latest = schema.latest_version()
    version = source.schema_version()
    if version > latest:
        raise StoreError(f"source store {source.url}: schema version {version} is newer than this code knows "
                         f"({latest}); upgrade airflow-provider-portfolio")
    if version < latest:
        state = "is not a migrated portfolio store (no schema version)" if version == 0 else \
            f"is at schema version {version}, behind the latest ({latest})"
        raise InvalidInputError(f"source store {source.url} {state}: migrate it first (PortfolioStore(url).migrate(), "
                                "or run any desk job on it); the copy never writes to its source")


def copy_store(source: PortfolioStore, target: PortfolioStore, *, batch_rows: int = DEFAULT_COPY_BATCH_ROWS,
               force: bool = False) -> CopyResult:
    """Copy every portfolio table of ``source`` into ``target`` in one transaction on the target (see the module
    docstring): a SQLite store moved to PostgreSQL, or any store to any other.

    The source must be at the latest schema version (it is read, never migrated or written); the target is migrated
    first. The source is read in one transaction (a consistent snapshot: stop the desk's writers first, or rows
    written after the copy began are not copied). Rows go table by table, ``batch_rows`` at a time, through the
    store's column types (instants stay instants on either dialect); ``schema_version`` is not copied. Before the
    commit, each table's rows in the target are counted and must equal the source's.

    :param source: the store copied from (typically a SQLite file).
    :param target: the store copied into (typically PostgreSQL); must not be the source.
    :param batch_rows: rows read and inserted per statement (>= 1).
    :param force: replace the rows a target already holds (deleted in the same transaction: a failure leaves them).
    :raises InvalidInputError: for a bad ``batch_rows``, the target being the source, a missing or unmigrated source,
        or a target that holds rows without ``force`` (naming the tables and their rows); nothing is written.
    :raises StoreError: when a store fails or the counts differ: the target's transaction is rolled back, leaving it
        as it was (migrated).
    """
    started = time.monotonic()
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInputError(f"batch_rows must be a whole number >= 1, got {batch_rows!r}")
    if _same_database(source, target):
        raise InvalidInputError(f"source and target are the same store ({source.url}): copy into another database")
    _check_source(source)
    target.migrate()
    tables = copy_tables()
    copied: dict[str, int] = {}
    with source.database.read("read the store to copy") as src:
        if source.dialect == "postgresql":
            src = src.execution_options(isolation_level="REPEATABLE READ")  # one snapshot for every table
        expected = _count_rows(src, tables)  # the first read: on SQLite it opens the snapshot read below
        with target.database.write(f"copy the store {source.url} into it") as dst:
            held = {name: n for name, n in _count_rows(dst, tables).items() if n}
            if held and not force:
                shown = ", ".join(f"{name}: {n}" for name, n in held.items())
                raise InvalidInputError(f"target store {target.url} already holds rows ({shown}): refusing to copy "
                                        "into it; pass force (--force) to replace them, or copy into an empty "
                                        "database")
            for table in reversed(tables):  # referring tables before the tables they refer to
                if table.name in held:
                    dst.execute(delete(table))
            for table in tables:
                key = [table.c[c.name] for c in table.primary_key.columns]
                stream = src.execute(select(table).order_by(*key).execution_options(yield_per=batch_rows))
                n = 0
                for part in stream.mappings().partitions():
                    rows = [dict(row) for row in part]
                    _insert_batch(dst, table, rows)
                    n += len(rows)
                copied[table.name] = n
                log.info("copy %s -> %s: %s: %d row(s)", source.url, target.url, table.name, n)
            landed = _count_rows(dst, tables)
            wrong = {name: (expected[name], copied[name], landed[name]) for name in expected
                     if not expected[name] == copied[name] == landed[name]}
            if wrong:
                shown = ", ".join(f"{name}: source {a}, read {b}, target {c}" for name, (a, b, c) in wrong.items())
                raise StoreError(f"copy {source.url} -> {target.url}: row counts differ ({shown}); nothing was "
                                 "written to the target")
    result = CopyResult(source.url, target.url, copied, held, time.monotonic() - started)
    log.info("copied the store %s into %s: %d row(s) in %d table(s)%s", source.url, target.url, result.total,
             len(copied), f"; replaced {sum(held.values())} row(s)" if held else "")
    return result
