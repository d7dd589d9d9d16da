"""Health reports in the portfolio store, and what the desk's monitoring asks of the store itself.

:class:`HealthTables` keeps the ``health_reports`` table (see :mod:`~airflow_provider_portfolio.store.schema`):
:meth:`~HealthTables.append` writes a report (a plain dict in the shape of
:meth:`~airflow_provider_portfolio.desk.health.HealthReport.to_dict`: the store never imports the desk) in one
transaction, replacing the row of the same (kind, ts, dag_id, run_id), so a retried task leaves one row;
:meth:`~HealthTables.latest` and :meth:`~HealthTables.history` read them back, newest first and bounded.
:meth:`~HealthTables.risk_verdicts` counts the risk verdicts of a window of trading decisions.

:func:`check_store` looks at the database itself: whether it answers, its schema version and, on SQLite,
``PRAGMA quick_check`` (``integrity_check`` when asked). ``quick_check`` is the hourly default: it reads every
page and checks the b-trees, records and free list, but skips the cross-check of every index against its table,
which makes ``integrity_check`` O(N log N) and minutes long on a store of many millions of bars (a read
transaction held that long also stops WAL checkpoints). PostgreSQL checks its own pages; there, reaching the
server (``SELECT 1``) and reading the schema version is the check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.timeutil import ensure_utc, utc_now
from airflow_provider_portfolio.store import schema
from airflow_provider_portfolio.store.database import TableGroup

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from airflow_provider_portfolio.store.database import Database

__all__ = ["DEFAULT_HISTORY_LIMIT", "HEALTH_REPORTS_MIGRATION", "MAX_HISTORY_LIMIT", "HealthRecord", "HealthTables",
           "RiskTally", "StoreCheck", "check_store"]

#: The migration's description in ``schema_version``.
HEALTH_REPORTS_MIGRATION = "create health_reports"
#: Reports :meth:`HealthTables.history` returns when not told, and the most it returns.
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 10_000
#: Integrity problems SQLite is asked to list at most.
_MAX_PROBLEMS = 20

_now = utc_now


@dataclass(frozen=True)
class HealthRecord:
    """A stored health report.

    :param report: the report's dict as it was appended (``HealthReport.from_dict`` reads it).
    :param dag_id: the DAG of the run that made it, or ``None``.
    :param run_id: that run, or ``None``.
    :param created_at: when it was written.
    """

    kind: str
    ts: datetime
    level: str
    report: dict[str, Any]
    summary: str
    dag_id: str | None
    run_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class RiskTally:
    """The risk verdicts of a window of trading decisions that proposed an order (buy or sell, quantity > 0).

    :param proposed: decisions with a proposed order.
    :param rejected: of those, the ones risk rejected, by ``risk_rule`` (``unknown`` where none was stored).
    :param unchecked: of those, the ones without a verdict (a cycle that stopped before its risk step).
    """

    proposed: int
    rejected: dict[str, int]
    unchecked: int = 0


@dataclass(frozen=True)
class StoreCheck:
    """What :func:`check_store` found.

    :param reachable: the database answered.
    :param check: what was asked: ``quick_check`` or ``integrity_check`` (SQLite), ``SELECT 1`` (PostgreSQL).
    :param problems: what the integrity check reported (empty: sound, or not reached).
    :param version: the schema version (``None`` when not reached).
    :param latest: the version this code knows.
    :param error: why the database could not be reached (password hidden), else ``None``.
    :param elapsed_s: how long the check took.
    """

    reachable: bool
    dialect: str
    check: str
    problems: tuple[str, ...]
    version: int | None
    latest: int
    error: str | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """Reached, sound and at the latest schema version."""
        return self.reachable and not self.problems and self.version == self.latest


def check_store(database: Database, *, full: bool = False) -> StoreCheck:
    """Reach the database, read its schema version and check its integrity, in one read; never raises for a
    database that cannot be reached (that is the finding).

    :param database: the store's database (``PortfolioStore.database``).
    :param full: SQLite: ``PRAGMA integrity_check`` instead of ``quick_check`` (see the module docstring).
    """
    check = "SELECT 1" if database.dialect != "sqlite" else ("integrity_check" if full else "quick_check")
    started = time.monotonic()
    try:
        with database.read("check the store") as conn:
            if database.dialect == "sqlite":
                rows = [str(r[0]) for r in conn.exec_driver_sql(f"PRAGMA {check}({_MAX_PROBLEMS})").all()]
                problems = () if rows == ["ok"] else tuple(rows)
            else:
                conn.exec_driver_sql("SELECT 1").scalar()
                problems = ()
            version: int | None = database.version(conn)
        error = None
    except StoreError as err:
        problems, version, error = (), None, str(err)
    return StoreCheck(error is None, database.dialect, check, problems, version, schema.latest_version(), error,
                      time.monotonic() - started)


def _label(check: Mapping[str, Any]) -> str:
    return f"{check['name']}[{check['subject']}]" if check.get("subject") else str(check["name"])


def _report_row(report: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a report, checked; nothing is written when this raises."""
    if not isinstance(report, Mapping):
        raise InvalidInputError(f"a health report is a dict (HealthReport.to_dict()), got {type(report).__name__}")
    missing = [k for k in ("kind", "ts", "level", "checks") if k not in report]
    if missing:
        raise InvalidInputError(f"a health report needs the keys {missing} (HealthReport.to_dict() has them)")
    kind, level = report["kind"], report["level"]
    if kind not in schema.HEALTH_REPORT_KINDS:
        raise InvalidInputError(f"a health report's kind is one of {list(schema.HEALTH_REPORT_KINDS)}, got {kind!r}")
    if level not in schema.HEALTH_LEVELS:
        raise InvalidInputError(f"a health report's level is one of {list(schema.HEALTH_LEVELS)}, got {level!r}")
    ts = report["ts"]
    try:
        ts = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
    except ValueError:
        raise InvalidInputError(f"a health report's ts must be an ISO instant, got {ts!r}") from None
    ts = ensure_utc(ts, "the health report's ts")
    checks = report["checks"]
    if isinstance(checks, str | bytes) or not isinstance(checks, list | tuple) or not all(
            isinstance(c, Mapping) and isinstance(c.get("name"), str) and c.get("level") in schema.HEALTH_LEVELS
            for c in checks):
        raise InvalidInputError("a health report's checks must be a list of dicts, each with a name and a level "
                                f"among {list(schema.HEALTH_LEVELS)}")
    worst = max((schema.HEALTH_LEVELS.index(c["level"]) for c in checks), default=0)
    if schema.HEALTH_LEVELS[worst] != level:
        raise InvalidInputError(f"a health report's level must be the worst of its checks' "
                                f"({schema.HEALTH_LEVELS[worst]}), got {level!r}")
    try:
        text = json.dumps(dict(report), allow_nan=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"a health report must be plain JSON (finite numbers, text, lists, dicts): {err}") \
            from None
    bad = [c for c in checks if c["level"] != "GREEN"]
    summary = (f"{kind} {level}: " + "; ".join(f"{c['level']} {_label(c)}: {c.get('message', '')}" for c in bad)
               if bad else f"{kind} {level}: all {len(checks)} check(s) green")
    return {"kind": kind, "ts": ts, "level": level, "checks": text, "summary": summary}


def _text(value: str | None, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 250:
        raise InvalidInputError(f"{name} must be text of at most 250 characters, got {value!r}")
    return value


class HealthTables(TableGroup):
    """The ``health_reports`` of a migrated store (schema version 4 or later), and the risk verdicts monitoring
    grades.

    :param database: the store's database (``PortfolioStore(...).database``).
    """

    def _ready(self, conn: Connection) -> bool:
        return self.database.has_table(conn, schema.health_reports.name)

    def append(self, report: Mapping[str, Any], *, dag_id: str | None = None, run_id: str | None = None) -> None:
        """Write a report in one transaction, replacing the row of the same (kind, ts, dag_id, run_id): a retried
        run leaves one row, its latest report.

        :param report: ``HealthReport.to_dict()``: ``kind`` (``monitoring``/``environment``), ``ts`` (ISO text or an
            aware ``datetime``), ``level`` (the worst of its checks') and ``checks``; stored whole as JSON.
        :param dag_id: the DAG of the run that made it.
        :param run_id: the run that made it.
        :raises InvalidInputError: for a report without those keys, an unknown kind or level, a level that is not
            the worst of its checks', or values that are not plain JSON; nothing is written.
        :raises StoreError: when the store cannot be written or has no ``health_reports`` table (nothing written).
        """
        row = {**_report_row(report), "dag_id": _text(dag_id, "dag_id"), "run_id": _text(run_id, "run_id"),
               "created_at": _now()}
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # the other dialect's Insert, alike for on_conflict_do_*
        stmt = insert(schema.health_reports).values([row])
        key = ("kind", "ts", "dag_id", "run_id")
        stmt = stmt.on_conflict_do_update(index_elements=list(key),
                                          set_={k: stmt.excluded[k] for k in row if k not in key})
        with self.database.write(f"append the {row['kind']} health report of {row['ts'].isoformat()}") as conn:
            if not self._ready(conn):
                raise StoreError(f"store {self.url}: no health_reports table (schema version "
                                 f"{self.database.version(conn)}); call migrate() first")
            conn.execute(stmt)

    def latest(self, kind: str, *, since: datetime | None = None, until: datetime | None = None) -> HealthRecord | None:
        """The newest report of ``kind`` (by ``ts``, then by when it was written), or ``None``.

        :param since: only a report made at or after this instant (a gate should not trust last week's GREEN).
        :param until: only a report made at or before this instant (a replay's clock).
        :raises StoreError: when the store cannot be read. An unmigrated store has none.
        """
        found = self._read(kind, since, until, 1, "read the latest health report")
        return found[0] if found else None

    def history(self, kind: str, since: datetime | None = None, limit: int = DEFAULT_HISTORY_LIMIT, *,
                until: datetime | None = None) -> list[HealthRecord]:
        """Reports of ``kind``, newest first, at most ``limit``.

        :param since: only reports made at or after this instant.
        :param limit: the most returned, 1 to :data:`MAX_HISTORY_LIMIT`.
        :param until: only reports made at or before this instant.
        :raises InvalidInputError: for a limit out of range.
        :raises StoreError: when the store cannot be read. An unmigrated store has none.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise InvalidInputError(f"limit must be a whole number from 1 to {MAX_HISTORY_LIMIT}, got {limit!r}")
        return self._read(kind, since, until, limit, "read the health report history")

    def _read(self, kind: str, since: datetime | None, until: datetime | None, limit: int,
              action: str) -> list[HealthRecord]:
        if kind not in schema.HEALTH_REPORT_KINDS:
            raise InvalidInputError(f"kind must be one of {list(schema.HEALTH_REPORT_KINDS)}, got {kind!r}")
        t = schema.health_reports.c
        where = [t.kind == kind]
        if since is not None:
            where.append(t.ts >= ensure_utc(since, "since"))
        if until is not None:
            where.append(t.ts <= ensure_utc(until, "until"))
        stmt = (select(schema.health_reports).where(*where)
                .order_by(t.ts.desc(), t.created_at.desc(), t.dag_id, t.run_id).limit(limit))
        with self.database.read(action) as conn:
            if not self._ready(conn):
                return []
            rows = conn.execute(stmt).all()
        out = []
        for r in rows:
            try:
                report = json.loads(r.checks)
            except ValueError:
                raise StoreError(f"store {self.url}: could not read health_reports: the row ({r.kind}, "
                                 f"{r.ts.isoformat()}, {r.dag_id!r}, {r.run_id!r}) holds text that is not JSON") \
                    from None
            out.append(HealthRecord(r.kind, r.ts, r.level, report, r.summary, r.dag_id or None, r.run_id or None,
                                    r.created_at))
        return out

    def risk_verdicts(self, account: str, *, since: datetime, until: datetime) -> RiskTally:
        """The risk verdicts of ``account``'s decisions about bars stamped in (``since``, ``until``] that proposed an
        order: one grouped query (bounded output, whatever the size of the ledger).

        The window goes by the decision's ``bar_ts``, the desk's clock (a replay's simulated instants included).

        :raises StoreError: when the store cannot be read. A store without the trading tables has none.
        """
        d = schema.trading_decisions.c
        stmt = (select(d.approved, d.risk_rule, func.count())
                .where(d.account == account, d.action.in_(("buy", "sell")), d.order_qty > 0,
                       d.bar_ts > ensure_utc(since, "since"), d.bar_ts <= ensure_utc(until, "until"))
                .group_by(d.approved, d.risk_rule))
        with self.database.read(f"count the risk verdicts of {account}") as conn:
            if not self.database.has_table(conn, schema.trading_decisions.name):
                return RiskTally(0, {})
            rows = conn.execute(stmt).all()
        proposed = unchecked = 0
        rejected: dict[str, int] = {}
        for approved, rule, n in rows:
            proposed += int(n)
            if approved is None:
                unchecked += int(n)
            elif not approved:
                key = str(rule or "unknown")
                rejected[key] = rejected.get(key, 0) + int(n)
        return RiskTally(proposed, dict(sorted(rejected.items())), unchecked)
