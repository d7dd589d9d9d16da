"""Validated forecasts and trading signals in the portfolio store.

:class:`ValidationTables` keeps the ``signal_validations`` table (see :mod:`~airflow_provider_portfolio.store.schema`
for its columns): a validation compares a stored forecast step, or a stored trading decision, with the bar that
followed. What is compared is the desk's (:mod:`airflow_provider_portfolio.desk.validation`); the store keeps rows
and answers:

- :meth:`~ValidationTables.pending_forecasts` and :meth:`~ValidationTables.pending_decisions`: the forecast steps
  and decisions of a window that have no validation row yet (an anti-join on the validation key, so a second run
  finds nothing new);
- :meth:`~ValidationTables.append`: validation rows in one transaction; a row whose key is stored already is left
  as it is (the first validation stands, a concurrent run cannot add a second);
- :meth:`~ValidationTables.read`: the rows of a window as a frame (bounded), for hit rates, errors, coverage and
  calibration in NumPy;
- :meth:`~ValidationTables.summary`: counts and sums grouped by SQL (bounded output whatever the window holds);
- :meth:`~ValidationTables.validated_runs`: which forecast runs and decisions were validated, newest first.

Plain Python: never imports Airflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import case, exists, func, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.timeutil import ensure_utc, utc_now
from airflow_provider_portfolio.store import schema
from airflow_provider_portfolio.store.codecs import _chunks, _name_list, _symbol_list, _ts_us
from airflow_provider_portfolio.store.database import TableGroup

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["DEFAULT_VALIDATIONS_LIMIT", "MAX_VALIDATIONS_LIMIT", "SUMMARY_GROUPS", "ValidationTables"]

#: Rows :meth:`ValidationTables.read` returns when not told, and the most it returns.
DEFAULT_VALIDATIONS_LIMIT = 100_000
MAX_VALIDATIONS_LIMIT = 1_000_000
#: Columns :meth:`ValidationTables.summary` may group by.
SUMMARY_GROUPS: tuple[str, ...] = ("kind", "source", "symbol", "timeframe", "target", "step")
_ROWS_PER_STATEMENT = 400
#: Columns of a validation row the caller gives (``run_id`` and ``created_at`` are the store's).
_GIVEN = tuple(c.name for c in schema.signal_validations.columns if c.name not in ("run_id", "created_at"))
_TS_COLUMNS = ("asof", "target_ts", "created_at")
_BOOL_COLUMNS = ("hit", "covered")
_TEXT_COLUMNS = ("kind", "source", "symbol", "timeframe", "origin", "target", "action", "run_id")

_now = utc_now


def _instant(value: Any, name: str) -> datetime:
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    return ensure_utc(value, name)


def _number(value: Any, name: str, where: str, *, required: bool = False) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise InvalidInputError(f"{where}: {name} is required, got {value!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
            or not math.isfinite(value):
        raise InvalidInputError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


def _flag(value: Any, name: str, where: str) -> bool | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise InvalidInputError(f"{where}: {name} must be true, false or null, got {value!r}")


def _text(value: Any, name: str, where: str, length: int, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty) or len(value) > length:
        raise InvalidInputError(f"{where}: {name} must be {'' if empty else 'non-empty '}text of at most {length} "
                                f"characters, got {value!r}")
    return value


def _row(item: Mapping[str, Any], i: int) -> dict[str, Any]:
    """One validation row, checked; messages name the row and the column."""
    where = f"validation row {i}"
    missing = [k for k in ("kind", "source", "symbol", "timeframe", "asof", "origin", "step", "target_ts", "target",
                           "actual") if k not in item]
    if missing:
        raise InvalidInputError(f"{where}: missing column(s) {missing}")
    kind = item["kind"]
    if kind not in schema.VALIDATION_KINDS:
        raise InvalidInputError(f"{where}: kind must be one of {list(schema.VALIDATION_KINDS)}, got {kind!r}")
    step = item["step"]
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise InvalidInputError(f"{where}: step must be a whole number >= 1, got {step!r}")
    action = item.get("action")
    out: dict[str, Any] = {
        "kind": kind, "source": _text(item["source"], "source", where, 250),
        "symbol": _text(item["symbol"], "symbol", where, 32),
        "timeframe": parse_timeframe(item["timeframe"]).name,
        "asof": _instant(item["asof"], f"{where}: asof"),
        "origin": _text(item["origin"], "origin", where, 250, empty=True), "step": int(step),
        "target_ts": _instant(item["target_ts"], f"{where}: target_ts"),
        "target": _text(item["target"], "target", where, 16),
        "action": None if action is None else _text(action, "action", where, 8),
    }
    for name in ("point", "lower", "upper", "level", "score", "confidence", "reference", "error"):
        out[name] = _number(item.get(name), name, where)
    out["actual"] = _number(item["actual"], "actual", where, required=True)
    for name in _BOOL_COLUMNS:
        out[name] = _flag(item.get(name), name, where)
    if out["level"] is not None and not 0 < out["level"] < 1:
        raise InvalidInputError(f"{where}: level must lie in (0, 1), got {out['level']!r}")
    if out["confidence"] is not None and not 0 <= out["confidence"] <= 1:
        raise InvalidInputError(f"{where}: confidence must lie in [0, 1], got {out['confidence']!r}")
    return out


def _limit(limit: object, most: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidInputError(f"limit must be a whole number from 1 to {most}, got {limit!r}")
    return limit


def _ts_frame(values: Sequence[Any]) -> pd.Series:
    """Epoch microseconds (``None`` for NULL) as ``datetime64[ns, UTC]``."""
    arr = np.array([-(2**63) if v is None else int(v) * 1000 for v in values], dtype=np.int64)
    return pd.Series(arr.view("datetime64[ns]")).dt.tz_localize("UTC")


class ValidationTables(TableGroup):
    """The ``signal_validations`` of a migrated store (schema version 5 or later), and the reads of the forecasts and
    decisions still to validate.

    :param database: the store's database (``PortfolioStore(...).database``).
    """

    def _ready(self, conn: Connection) -> bool:
        return self.database.has_table(conn, schema.signal_validations.name)

    def _require(self, conn: Connection) -> None:
        if not self._ready(conn):
            raise StoreError(f"store {self.url}: no signal_validations table (schema version "
                             f"{self.database.version(conn)}); call migrate() first")

    # -- writes -----------------------------------------------------------------------------------------------
    def append(self, rows: Sequence[Mapping[str, Any]], *, run_id: str) -> int:
        """Write validation rows in one transaction; a row whose key (kind, source, symbol, timeframe, asof, origin,
        step) is stored already is left as it is.

        :param rows: dicts with the columns of ``signal_validations`` but ``run_id`` and ``created_at``; the optional
            ones (``point``... ``covered``) may be missing or ``None``.
        :param run_id: the validation run writing them.
        :return: the rows given (0 without I/O for none).
        :raises InvalidInputError: naming the row and the column, for a missing or malformed value, before anything
            is written.
        :raises StoreError: when the store cannot be written or has no ``signal_validations`` table.
        """
        run_id = _text(run_id, "run_id", "the validation", 250)
        now = _now()
        prepared = [{**_row(item, i), "run_id": run_id, "created_at": now} for i, item in enumerate(rows)]
        if not prepared:
            return 0
        keys = {tuple(r[k] for k in schema.VALIDATION_KEY) for r in prepared}
        if len(keys) != len(prepared):
            raise InvalidInputError("validation rows repeat a key (kind, source, symbol, timeframe, asof, origin, "
                                    "step)")
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # the other dialect's Insert, alike for on_conflict_do_*
        with self.database.write(f"append {len(prepared)} validation row(s)") as conn:
            self._require(conn)
            for i in range(0, len(prepared), _ROWS_PER_STATEMENT):
                conn.execute(insert(schema.signal_validations).on_conflict_do_nothing(),
                             prepared[i:i + _ROWS_PER_STATEMENT])
        return len(prepared)

    # -- what is still to validate ----------------------------------------------------------------------------
    def pending_forecasts(self, symbols: Sequence[str] | None, timeframe: str, *, since: datetime,
                          until: datetime) -> pd.DataFrame:
        """Stored forecast steps made in [``since``, ``until``] (by ``asof``) that have no validation row (whether
        their target bar has closed is the caller's question).

        :return: columns ``run_id``, ``model``, ``symbol``, ``timeframe``, ``step``, ``asof``, ``target_ts``,
            ``target``, ``point``, ``lower``, ``upper``, ``level`` (instants ``datetime64[ns, UTC]``), sorted by
            (symbol, model, run_id, step).
        :raises StoreError: when the store cannot be read or has no ``signal_validations`` table.
        """
        f, v = schema.forecasts.c, schema.signal_validations.c
        done = exists().where(v.kind == "forecast", v.source == f.model, v.symbol == f.symbol,
                              v.timeframe == f.timeframe, v.asof == f.asof, v.origin == f.run_id, v.step == f.step)
        names = ("run_id", "model", "symbol", "timeframe", "step", "asof", "target_ts", "target", "point", "lower",
                 "upper", "level")
        return self._pending(schema.forecasts, names, f.asof, [~done],
                             [f.symbol, f.model, f.run_id, f.step], symbols, timeframe, since, until,
                             "read the forecasts to validate")

    def pending_decisions(self, symbols: Sequence[str] | None, timeframe: str, *, since: datetime,
                          until: datetime) -> pd.DataFrame:
        """Stored trading decisions about bars stamped in [``since``, ``until``] that have no validation row.

        :return: columns ``dag_id``, ``symbol``, ``timeframe``, ``bar_ts``, ``run_key``, ``run_id``, ``action``,
            ``score``, ``confidence``, ``price``, sorted by (symbol, dag_id, bar_ts, run_key).
        :raises StoreError: when the store cannot be read or has no ``signal_validations`` table.
        """
        d, v = schema.trading_decisions.c, schema.signal_validations.c
        done = exists().where(v.kind == "signal", v.source == d.dag_id, v.symbol == d.symbol,
                              v.timeframe == d.timeframe, v.asof == d.bar_ts, v.origin == d.run_key, v.step == 1)
        names = ("dag_id", "symbol", "timeframe", "bar_ts", "run_key", "run_id", "action", "score", "confidence",
                 "price")
        return self._pending(schema.trading_decisions, names, d.bar_ts, [~done], [d.symbol, d.dag_id, d.bar_ts,
                                                                                  d.run_key],
                             symbols, timeframe, since, until, "read the decisions to validate")

    def _pending(self, table: Any, names: Sequence[str], clock: Any, extra: list[Any], order: list[Any],
                 symbols: Sequence[str] | None, timeframe: str, since: datetime, until: datetime,
                 action: str) -> pd.DataFrame:
        t = table.c
        where = [t.timeframe == parse_timeframe(timeframe).name, clock >= ensure_utc(since, "since"),
                 clock <= ensure_utc(until, "until"), *extra]
        groups: list[list[str] | None] = [None] if symbols is None else list(_chunks(_symbol_list(symbols)))
        cols = [_ts_us(self.dialect, t[n]) if isinstance(t[n].type, schema.UtcTimestamp) else t[n] for n in names]
        rows: list[Any] = []
        with self.database.read(action) as conn:
            self._require(conn)
            if not self.database.has_table(conn, table.name):
                groups = []
            for group in groups:
                stmt = select(*cols).where(*where, *([] if group is None else [t.symbol.in_(group)]))
                rows.extend(conn.execute(stmt.order_by(*order)).all())
        frame = self._frame(table, names, rows)
        if len(groups) > 1:
            frame = frame.sort_values([c.name for c in order], kind="stable").reset_index(drop=True)
        return frame

    @staticmethod
    def _frame(table: Any, names: Sequence[str], rows: Sequence[Any]) -> pd.DataFrame:
        data = list(zip(*rows, strict=True)) if rows else [()] * len(names)
        out: dict[str, Any] = {}
        for name, values in zip(names, data, strict=True):
            column = table.c[name]
            if isinstance(column.type, schema.UtcTimestamp):
                out[name] = _ts_frame(values)
            elif name in _BOOL_COLUMNS:
                out[name] = pd.array([None if v is None else bool(v) for v in values], dtype="boolean")
            elif name in ("step",):
                out[name] = np.asarray(values, dtype=np.int64)
            elif name in _TEXT_COLUMNS or name in ("run_key", "dag_id", "model", "run_id"):
                out[name] = pd.Series(values, dtype="object")
            else:
                out[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        return pd.DataFrame(out, columns=list(names))

    def signals_exist(self, timeframe: str | None, *, since: datetime, until: datetime) -> bool:
        """Whether the store holds a forecast made (``asof``) or a decision about a bar stamped in [``since``,
        ``until``]: whether there was anything to validate.

        :param timeframe: only of this timeframe (``None``: any).
        :raises StoreError: when the store cannot be read.
        """
        since, until = ensure_utc(since, "since"), ensure_utc(until, "until")
        frame = None if timeframe is None else parse_timeframe(timeframe).name
        with self.database.read("look for forecasts and decisions") as conn:
            for table, clock in ((schema.forecasts, "asof"), (schema.trading_decisions, "bar_ts")):
                if not self.database.has_table(conn, table.name):
                    continue
                t = table.c
                where = [t[clock] >= since, t[clock] <= until, *([] if frame is None else [t.timeframe == frame])]
                if conn.execute(select(t[clock]).where(*where).limit(1)).first() is not None:
                    return True
        return False

    # -- reads ------------------------------------------------------------------------------------------------
    def _where(self, kind: str | None, sources: Any, symbols: Any, timeframe: str | None, since: datetime | None,
               until: datetime | None) -> list[Any]:
        v = schema.signal_validations.c
        where: list[Any] = []
        if kind is not None:
            if kind not in schema.VALIDATION_KINDS:
                raise InvalidInputError(f"kind must be one of {list(schema.VALIDATION_KINDS)}, got {kind!r}")
            where.append(v.kind == kind)
        names = _name_list(sources, "sources")
        if names is not None:
            where.append(v.source.in_(names))
        if symbols is not None:
            where.append(v.symbol.in_(_symbol_list(symbols)))
        if timeframe is not None:
            where.append(v.timeframe == parse_timeframe(timeframe).name)
        if since is not None:
            where.append(v.asof >= ensure_utc(since, "since"))
        if until is not None:
            where.append(v.asof <= ensure_utc(until, "until"))
        return where

    def read(self, kind: str | None = None, *, sources: str | Sequence[str] | None = None,
             symbols: Sequence[str] | None = None, timeframe: str | None = "1Day", since: datetime | None = None,
             until: datetime | None = None, limit: int = DEFAULT_VALIDATIONS_LIMIT) -> pd.DataFrame:
        """Validation rows, newest first (by ``asof``, then the key), at most ``limit``.

        :param kind: ``forecast`` or ``signal``; ``None``: both.
        :param sources: models or DAG ids (one or a list); ``None``: all.
        :param symbols: symbols; ``None``: all.
        :param timeframe: the timeframe; ``None``: all.
        :param since: only rows with ``asof`` at or after this instant.
        :param until: only rows with ``asof`` at or before this instant.
        :param limit: the most returned, 1 to :data:`MAX_VALIDATIONS_LIMIT`.
        :return: the columns of ``signal_validations``; instants ``datetime64[ns, UTC]``, NULL numbers NaN, ``hit``
            and ``covered`` pandas ``boolean`` (NULL as ``<NA>``).
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read. An unmigrated store gives an empty frame.
        """
        limit = _limit(limit, MAX_VALIDATIONS_LIMIT)
        where = self._where(kind, sources, symbols, timeframe, since, until)
        table = schema.signal_validations
        v = table.c
        names = [c.name for c in table.columns]
        cols = [_ts_us(self.dialect, v[n]) if n in _TS_COLUMNS else v[n] for n in names]
        stmt = (select(*cols).where(*where)
                .order_by(v.asof.desc(), *(v[k] for k in schema.VALIDATION_KEY if k != "asof")).limit(limit))
        with self.database.read("read validations") as conn:
            rows = conn.execute(stmt).all() if self._ready(conn) else []
        return self._frame(table, names, rows)

    def summary(self, *, since: datetime | None = None, until: datetime | None = None,
                timeframe: str | None = "1Day", kind: str | None = None, sources: str | Sequence[str] | None = None,
                symbols: Sequence[str] | None = None, by: Sequence[str] = ("kind", "source", "target"),
                ) -> list[dict[str, Any]]:
        """Validation figures grouped in SQL, one dict per group (sorted by the group's values).

        Each dict holds the ``by`` columns and ``n`` (rows), ``hit_n`` (rows with a direction), ``hits``,
        ``hit_rate`` (``hits / hit_n``), ``covered_n`` (rows with a band), ``covered``, ``coverage``
        (``covered / covered_n``), ``level`` (mean nominal level of those), ``error_n``, ``mae``, ``rmse`` (of
        ``error``), ``first_asof``, ``last_asof`` and ``last_created_at``; a ratio without rows is ``None``.

        :param by: columns of :data:`SUMMARY_GROUPS`.
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read. An unmigrated store has no groups.
        """
        groups = list(by)
        bad = [c for c in groups if c not in SUMMARY_GROUPS]
        if bad or not groups:
            raise InvalidInputError(f"by must name columns among {list(SUMMARY_GROUPS)}, got {list(by)!r}")
        v = schema.signal_validations.c
        where = self._where(kind, sources, symbols, timeframe, since, until)

        def count_true(column: Any) -> Any:
            return func.sum(case((column.is_(True), 1), else_=0))

        keys = [v[c] for c in groups]
        stmt = (select(*keys, func.count().label("n"), func.count(v.hit).label("hit_n"),
                       count_true(v.hit).label("hits"), func.count(v.covered).label("covered_n"),
                       count_true(v.covered).label("covered"),
                       func.avg(case((v.covered.is_not(None), v.level))).label("level"),
                       func.count(v.error).label("error_n"), func.sum(func.abs(v.error)).label("abs_error"),
                       func.sum(v.error * v.error).label("sq_error"), func.min(v.asof).label("first_asof"),
                       func.max(v.asof).label("last_asof"), func.max(v.created_at).label("last_created_at"))
                .where(*where).group_by(*keys).order_by(*keys))
        with self.database.read("summarise validations") as conn:
            rows = conn.execute(stmt).all() if self._ready(conn) else []
        out = []
        for r in rows:
            m = r._mapping
            hit_n, covered_n, error_n = int(m["hit_n"]), int(m["covered_n"]), int(m["error_n"])
            item = {c: m[c] for c in groups}
            item.update(
                n=int(m["n"]), hit_n=hit_n, hits=int(m["hits"] or 0),
                hit_rate=int(m["hits"] or 0) / hit_n if hit_n else None,
                covered_n=covered_n, covered=int(m["covered"] or 0),
                coverage=int(m["covered"] or 0) / covered_n if covered_n else None,
                level=None if m["level"] is None else float(m["level"]), error_n=error_n,
                mae=float(m["abs_error"]) / error_n if error_n else None,
                rmse=math.sqrt(float(m["sq_error"]) / error_n) if error_n else None,
                first_asof=m["first_asof"], last_asof=m["last_asof"], last_created_at=m["last_created_at"])
            out.append(item)
        return out

    def validated_runs(self, kind: str | None = None, *, sources: str | Sequence[str] | None = None,
                       symbols: Sequence[str] | None = None, timeframe: str | None = "1Day",
                       since: datetime | None = None, until: datetime | None = None,
                       limit: int = DEFAULT_VALIDATIONS_LIMIT) -> list[dict[str, Any]]:
        """Validated forecast runs and decisions, newest first (by ``asof``), at most ``limit``: dicts with ``kind``,
        ``source``, ``symbol``, ``timeframe``, ``asof``, ``origin``, ``steps`` (validated steps) and
        ``validated_at`` (the newest row's ``created_at``).

        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read. An unmigrated store has none.
        """
        limit = _limit(limit, MAX_VALIDATIONS_LIMIT)
        v = schema.signal_validations.c
        keys = [v.kind, v.source, v.symbol, v.timeframe, v.asof, v.origin]
        stmt = (select(*keys, func.count().label("steps"), func.max(v.created_at).label("validated_at"))
                .where(*self._where(kind, sources, symbols, timeframe, since, until)).group_by(*keys)
                .order_by(v.asof.desc(), v.kind, v.source, v.symbol, v.timeframe, v.origin).limit(limit))
        with self.database.read("read the validated runs") as conn:
            rows = conn.execute(stmt).all() if self._ready(conn) else []
        return [dict(r._mapping) for r in rows]
