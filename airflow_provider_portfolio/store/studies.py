"""The desk's studies in the portfolio store: a study run's summary and its points, replaced as a unit.

:class:`StudyTables` keeps the ``studies`` and ``study_points`` tables (see
:mod:`~airflow_provider_portfolio.store.schema`). A study is the result of one run of a desk study (``kind``:
``signal_validation``, ``transaction_costs``, ``threshold_sweep``, ``strategy_optimization``...) under its
``study_id``: its instant ``ts``, the Airflow run that made it, a ``status``, its ``params``, ``summary`` (metrics)
and ``recommended`` settings as plain JSON, and whether the recommendation was ``applied``. Its points are the
per-item results (a sweep's grid points, a symbol's costs, a model's validation summary).

:meth:`StudyTables.save` writes a study and its points in one transaction and replaces what a previous run of the
same (kind, study_id) left (its row and every point), so a retried task leaves one copy. Reads are newest first and
bounded. Plain Python: never imports Airflow.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.timeutil import ensure_utc, utc_now
from airflow_provider_portfolio.store import schema
from airflow_provider_portfolio.store.database import TableGroup

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["DEFAULT_POINTS_LIMIT", "DEFAULT_STUDIES_LIMIT", "MAX_POINTS", "MAX_STUDIES_LIMIT", "StudyPoint",
           "StudyRecord", "StudyTables", "check_kind"]

#: Studies :meth:`StudyTables.history` returns when not told, and the most it returns.
DEFAULT_STUDIES_LIMIT = 100
MAX_STUDIES_LIMIT = 10_000
#: Points :meth:`StudyTables.points` returns when not told; the most a study holds and a read returns.
DEFAULT_POINTS_LIMIT = 1_000
MAX_POINTS = 100_000
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ROWS_PER_STATEMENT = 400

_now = utc_now


@dataclass(frozen=True)
class StudyPoint:
    """One point of a study.

    :param point: its name within the study (a symbol, ``asset_class:crypto``, ``grid:0007``...).
    :param params: what it was computed with (JSON object).
    :param metrics: what was measured (JSON object).
    """

    point: str
    params: dict[str, Any]
    metrics: dict[str, Any]


@dataclass(frozen=True)
class StudyRecord:
    """A stored study (see the module docstring); ``dag_id``/``run_id`` are ``None`` when it was made outside a run,
    ``recommended`` is ``None`` when it recommends nothing."""

    kind: str
    study_id: str
    ts: datetime
    dag_id: str | None
    run_id: str | None
    status: str
    params: dict[str, Any]
    summary: dict[str, Any]
    recommended: dict[str, Any] | None
    applied: bool
    applied_at: datetime | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON (instants as ISO text)."""
        return {"kind": self.kind, "study_id": self.study_id, "ts": self.ts.isoformat(), "dag_id": self.dag_id,
                "run_id": self.run_id, "status": self.status, "params": self.params, "summary": self.summary,
                "recommended": self.recommended, "applied": self.applied,
                "applied_at": None if self.applied_at is None else self.applied_at.isoformat(),
                "created_at": self.created_at.isoformat()}


def check_kind(kind: object) -> str:
    """``kind`` checked: a lowercase identifier of at most 32 characters (``transaction_costs``).

    :raises InvalidInputError: naming the value otherwise.
    """
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InvalidInputError(f"a study's kind must be a lowercase identifier of at most 32 characters such as "
                                f"'transaction_costs', got {kind!r}")
    return kind


def _key_text(value: object, name: str, *, empty: bool = False) -> str:
    if value is None and empty:
        return ""
    if not isinstance(value, str) or (not value.strip() and not empty) or len(value) > 250:
        raise InvalidInputError(f"{name} must be {'' if empty else 'non-empty '}text of at most 250 characters, "
                                f"got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value (``json.dumps`` default)."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _json(value: Any, name: str, *, nullable: bool = False) -> str | None:
    """A JSON object as canonical text; ``None`` for ``None`` when ``nullable``."""
    if value is None and nullable:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{name} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        return json.dumps(dict(value), allow_nan=False, sort_keys=True, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{name} must be plain JSON (finite numbers, text, lists, dicts; NaN as null): "
                                f"{err}") from None


def _points(points: Iterable[StudyPoint | Mapping[str, Any]] | None) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for item in points or ():
        name: Any
        if isinstance(item, StudyPoint):
            name, params, metrics = item.point, item.params, item.metrics
        elif isinstance(item, Mapping):
            name, params, metrics = item.get("point"), item.get("params", {}), item.get("metrics", {})
        else:
            raise InvalidInputError(f"a study point is a StudyPoint or a dict with point, params and metrics, got "
                                    f"{item!r}")
        name = _key_text(name, "a study point's name")
        if name in seen:
            raise InvalidInputError(f"the study point {name!r} is given twice")
        seen.add(name)
        out.append((name, str(_json(params, f"point {name!r}: params")),
                    str(_json(metrics, f"point {name!r}: metrics"))))
        if len(out) > MAX_POINTS:
            raise InvalidInputError(f"a study holds at most {MAX_POINTS} points")
    return out


def _limit(limit: object, most: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidInputError(f"limit must be a whole number from 1 to {most}, got {limit!r}")
    return limit


class StudyTables(TableGroup):
    """The ``studies`` and ``study_points`` of a migrated store (schema version 5 or later).

    :param database: the store's database (``PortfolioStore(...).database``).
    """

    def _ready(self, conn: Connection) -> bool:
        return self.database.has_table(conn, schema.studies.name)

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # the other dialect's Insert, alike for on_conflict_do_*
        return insert(table)

    def save(self, kind: str, study_id: str, *, ts: datetime, params: Mapping[str, Any],
             summary: Mapping[str, Any], status: str = "ok", recommended: Mapping[str, Any] | None = None,
             points: Iterable[StudyPoint | Mapping[str, Any]] | None = None, dag_id: str | None = None,
             run_id: str | None = None) -> int:
        """Write a study and its points in one transaction, replacing the row and every point a previous save of the
        same (``kind``, ``study_id``) left: a retried run leaves one copy, ``applied`` reset to false.

        :param kind: the study's kind (a lowercase identifier: ``transaction_costs``).
        :param study_id: the run's id within the kind (``<dag_id>/<run_id>``).
        :param ts: the study's instant (aware): the desk's clock it was made at.
        :param params: what it was run with (JSON object).
        :param summary: its metrics (JSON object).
        :param status: one of ``ok``, ``partial``, ``insufficient_data``, ``failed``.
        :param recommended: the settings it recommends (JSON object), or ``None``.
        :param points: :class:`StudyPoint` or dicts with ``point``, ``params`` and ``metrics``; names unique.
        :param dag_id: the DAG of the run that made it.
        :param run_id: that run.
        :return: the points written.
        :raises InvalidInputError: for a bad kind, id, status, instant or point, or values that are not plain JSON
            (NaN included); nothing is written.
        :raises StoreError: when the store cannot be written or has no ``studies`` table (nothing written).
        """
        kind = check_kind(kind)
        study_id = _key_text(study_id, "study_id")
        if status not in schema.STUDY_STATUSES:
            raise InvalidInputError(f"a study's status is one of {list(schema.STUDY_STATUSES)}, got {status!r}")
        ts = ensure_utc(ts, "the study's ts")
        now = _now()
        row = {"kind": kind, "study_id": study_id, "ts": ts, "dag_id": _key_text(dag_id, "dag_id", empty=True),
               "run_id": _key_text(run_id, "run_id", empty=True), "status": status,
               "params": _json(params, "params"), "summary": _json(summary, "summary"),
               "recommended": _json(recommended, "recommended", nullable=True), "applied": False, "applied_at": None,
               "created_at": now}
        rows = [{"kind": kind, "study_id": study_id, "point": name, "ts": ts, "params": p, "metrics": m}
                for name, p, m in _points(points)]
        stmt = self._insert(schema.studies).values([row])
        key = ("kind", "study_id")
        stmt = stmt.on_conflict_do_update(index_elements=list(key),
                                          set_={k: stmt.excluded[k] for k in row if k not in key})
        p = schema.study_points.c
        with self.database.write(f"save the {kind} study {study_id}") as conn:
            if not self._ready(conn):
                raise StoreError(f"store {self.url}: no studies table (schema version {self.database.version(conn)}); "
                                 "call migrate() first")
            conn.execute(stmt)  # first: on PostgreSQL its row lock queues a concurrent save of the same study
            conn.execute(delete(schema.study_points).where(p.kind == kind, p.study_id == study_id))
            for i in range(0, len(rows), _ROWS_PER_STATEMENT):
                conn.execute(self._insert(schema.study_points), rows[i:i + _ROWS_PER_STATEMENT])
        return len(rows)

    def mark_applied(self, kind: str, study_id: str, *, at: datetime | None = None) -> StudyRecord:
        """Record that the study's recommendation was applied at ``at`` (default now); return the study.

        :raises InvalidInputError: for a bad kind or instant.
        :raises StoreError: when there is no such study, or the store cannot be written.
        """
        kind = check_kind(kind)
        at = _now() if at is None else ensure_utc(at, "at")
        s = schema.studies.c
        with self.database.write(f"mark the {kind} study {study_id} applied") as conn:
            done = 0 if not self._ready(conn) else conn.execute(
                update(schema.studies).where(s.kind == kind, s.study_id == study_id)
                .values(applied=True, applied_at=at)).rowcount
        if done != 1:
            raise StoreError(f"store {self.url}: no {kind} study {study_id!r}")
        found = self.get(kind, study_id)
        assert found is not None  # just updated
        return found

    def get(self, kind: str, study_id: str) -> StudyRecord | None:
        """The study (``kind``, ``study_id``), or ``None``.

        :raises StoreError: when the store cannot be read. An unmigrated store has none.
        """
        kind = check_kind(kind)
        s = schema.studies.c
        found = self._read(select(schema.studies).where(s.kind == kind, s.study_id == study_id),
                           f"read the {kind} study {study_id}")
        return found[0] if found else None

    def latest(self, kind: str, *, since: datetime | None = None, until: datetime | None = None,
               status: str | None = None) -> StudyRecord | None:
        """The newest study of ``kind`` (by ``ts``, then by when it was written), or ``None``.

        :param since: only a study made at or after this instant.
        :param until: only a study made at or before this instant (a replay's clock).
        :param status: only a study of this status (``ok``).
        :raises StoreError: when the store cannot be read. An unmigrated store has none.
        """
        found = self.history(kind, 1, since=since, until=until, status=status)
        return found[0] if found else None

    def history(self, kind: str, limit: int = DEFAULT_STUDIES_LIMIT, *, since: datetime | None = None,
                until: datetime | None = None, status: str | None = None) -> list[StudyRecord]:
        """Studies of ``kind``, newest first, at most ``limit``.

        :param limit: the most returned, 1 to :data:`MAX_STUDIES_LIMIT`.
        :param since: only studies made at or after this instant.
        :param until: only studies made at or before this instant.
        :param status: only studies of this status.
        :raises InvalidInputError: for a bad kind, limit or status.
        :raises StoreError: when the store cannot be read. An unmigrated store has none.
        """
        kind = check_kind(kind)
        limit = _limit(limit, MAX_STUDIES_LIMIT)
        s = schema.studies.c
        where = [s.kind == kind]
        if since is not None:
            where.append(s.ts >= ensure_utc(since, "since"))
        if until is not None:
            where.append(s.ts <= ensure_utc(until, "until"))
        if status is not None:
            if status not in schema.STUDY_STATUSES:
                raise InvalidInputError(f"status must be one of {list(schema.STUDY_STATUSES)}, got {status!r}")
            where.append(s.status == status)
        stmt = (select(schema.studies).where(*where)
                .order_by(s.ts.desc(), s.created_at.desc(), s.study_id.desc()).limit(limit))
        return self._read(stmt, f"read the {kind} studies")

    def points(self, kind: str, study_id: str, limit: int = DEFAULT_POINTS_LIMIT) -> list[StudyPoint]:
        """The points of a study, by name, at most ``limit``.

        :param limit: the most returned, 1 to :data:`MAX_POINTS`.
        :raises InvalidInputError: for a bad kind or limit.
        :raises StoreError: when the store cannot be read. An unmigrated store has none.
        """
        kind = check_kind(kind)
        limit = _limit(limit, MAX_POINTS)
        p = schema.study_points.c
        stmt = (select(p.point, p.params, p.metrics).where(p.kind == kind, p.study_id == study_id)
                .order_by(p.point).limit(limit))
        with self.database.read(f"read the points of the {kind} study {study_id}") as conn:
            if not self._ready(conn):
                return []
            rows = conn.execute(stmt).all()
        return [StudyPoint(r.point, self._loads(r.params, kind, study_id, "params"),
                           self._loads(r.metrics, kind, study_id, "metrics")) for r in rows]

    def _loads(self, text: str | None, kind: str, study_id: str, column: str) -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise StoreError(f"store {self.url}: could not read the {kind} study {study_id!r}: its {column} holds "
                             "text that is not JSON") from None

    def _read(self, stmt: Any, action: str) -> list[StudyRecord]:
        with self.database.read(action) as conn:
            if not self._ready(conn):
                return []
            rows = conn.execute(stmt).all()
        return [StudyRecord(r.kind, r.study_id, r.ts, r.dag_id or None, r.run_id or None, r.status,
                            self._loads(r.params, r.kind, r.study_id, "params"),
                            self._loads(r.summary, r.kind, r.study_id, "summary"),
                            self._loads(r.recommended, r.kind, r.study_id, "recommended"), bool(r.applied),
                            r.applied_at, r.created_at) for r in rows]


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when missing or not finite (what a study's JSON holds for "undefined")."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
