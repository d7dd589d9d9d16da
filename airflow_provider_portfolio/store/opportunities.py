"""Discovery rankings in the portfolio store: a run's ranked opportunities, replaced as a unit.

:class:`OpportunityTables` keeps the ``opportunities`` table (see :mod:`~airflow_provider_portfolio.store.schema`):
one row per (``run_id``, ``symbol``) of a discovery run (:mod:`airflow_provider_portfolio.desk.discovery`: what is
measured and scored is the desk's; the store keeps rows and answers).

- :meth:`~OpportunityTables.save`: a ranking frame checked whole, then written in one transaction that first deletes
  what an earlier save of the same ``run_id`` left, so a retried task leaves one copy (on PostgreSQL a
  transaction-scoped advisory lock on the run id queues two concurrent saves of one run; SQLite's writers queue
  anyway);
- :meth:`~OpportunityTables.latest`: the rows of the newest run made at or before an instant (by ``ts``, then by when
  it was written), by rank, bounded.

Plain Python: never imports Airflow.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.params import validate_symbols
from airflow_provider_portfolio.market.timeutil import ensure_utc, utc_now
from airflow_provider_portfolio.store import schema
from airflow_provider_portfolio.store.database import TableGroup

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["MAX_RANKING_ROWS", "OPPORTUNITY_COLUMNS", "RANKING_COLUMNS", "OpportunityTables"]

#: Columns a ranking frame must hold (``regime_probability`` and ``features`` are optional).
RANKING_COLUMNS: tuple[str, ...] = ("rank", "symbol", "score", "regime", "components", "reasons")
#: Columns of :meth:`OpportunityTables.latest`: the contract's first, then the details.
OPPORTUNITY_COLUMNS: tuple[str, ...] = ("run_id", "ts", "rank", "symbol", "score", "regime", "components", "reasons",
                                        "regime_probability", "features", "dag_id", "created_at")
#: The most rows one ranking holds (so a read of a whole run is bounded).
MAX_RANKING_ROWS = 100_000
_ROWS_PER_STATEMENT = 400

_now = utc_now


def _text(value: object, name: str, length: int, *, empty: bool = False) -> str:
    if value is None and empty:
        return ""
    if not isinstance(value, str) or (not value.strip() and not empty) or len(value) > length:
        raise InvalidInputError(f"{name} must be {'' if empty else 'non-empty '}text of at most {length} characters, "
                                f"got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """JSON of a numpy scalar, and ``None`` for a non-finite float (``json.dumps`` sees NaN before ``default``)."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float inside (NaN, inf) as ``None``: a measurement that is undefined."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _dumps(value: Any, where: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{where} must be plain JSON (finite numbers, text, lists, dicts): {err}") from None


def _row(item: Mapping[str, Any], i: int, has: set[str]) -> dict[str, Any]:
    """One ranking row, checked; messages name the row and the column."""
    where = f"ranking row {i}"
    symbol = item["symbol"]
    rank = item["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or rank < 1:
        raise InvalidInputError(f"{where} ({symbol}): rank must be a whole number >= 1, got {rank!r}")
    score = item["score"]
    if isinstance(score, bool) or not isinstance(score, int | float | np.integer | np.floating) \
            or not math.isfinite(score):
        raise InvalidInputError(f"{where} ({symbol}): score must be a finite number, got {score!r}")
    regime = _text(item["regime"], f"{where} ({symbol}): regime", 32)
    probability = item.get("regime_probability") if "regime_probability" in has else None
    if probability is not None and not (isinstance(probability, float | np.floating) and math.isnan(probability)):
        if isinstance(probability, bool) or not isinstance(probability, int | float | np.integer | np.floating) \
                or not 0 <= probability <= 1:
            raise InvalidInputError(f"{where} ({symbol}): regime_probability must be a number in [0, 1] or null, "
                                    f"got {probability!r}")
        probability = float(probability)
    else:
        probability = None
    components = item["components"]
    if not isinstance(components, Mapping) or not all(
            isinstance(k, str) and not isinstance(v, bool) and isinstance(v, int | float | np.integer | np.floating)
            and math.isfinite(v) for k, v in components.items()):
        raise InvalidInputError(f"{where} ({symbol}): components must be a dict of name -> finite number, got "
                                f"{components!r}")
    reasons = item["reasons"]
    if isinstance(reasons, str) or not isinstance(reasons, Sequence | np.ndarray) or not all(
            isinstance(r, str) for r in reasons):
        raise InvalidInputError(f"{where} ({symbol}): reasons must be a list of strings, got {reasons!r}")
    features = item.get("features") if "features" in has else None
    if features is None:
        features = {}
    if not isinstance(features, Mapping):
        raise InvalidInputError(f"{where} ({symbol}): features must be a dict (NaN as null), got {features!r}")
    return {"symbol": symbol, "rank": int(rank), "score": float(score), "regime": regime,
            "regime_probability": probability,
            "components": _dumps({k: float(v) for k, v in components.items()}, f"{where} ({symbol}): components"),
            "features": _dumps(_finite_or_none(dict(features)), f"{where} ({symbol}): features"),
            "reasons": _dumps([str(r) for r in reasons], f"{where} ({symbol}): reasons")}


def _rows(ranking: Any) -> list[dict[str, Any]]:
    """The rows of a ranking frame, checked whole: nothing is written when this raises."""
    if not isinstance(ranking, pd.DataFrame):
        raise InvalidInputError(f"a ranking is a pandas DataFrame, got {type(ranking).__name__}")
    missing = [c for c in RANKING_COLUMNS if c not in ranking.columns]
    if missing:
        raise InvalidInputError(f"the ranking lacks column(s) {missing}; it needs {list(RANKING_COLUMNS)}")
    if ranking.empty:
        raise InvalidInputError("the ranking has no rows: nothing to save (a run that ranked nothing stores nothing)")
    if len(ranking) > MAX_RANKING_ROWS:
        raise InvalidInputError(f"a ranking holds at most {MAX_RANKING_ROWS} rows, got {len(ranking)}")
    symbols = ranking["symbol"].tolist()
    if not all(isinstance(s, str) for s in symbols) or validate_symbols(symbols) != symbols:
        raise InvalidInputError("the ranking's symbols must be distinct tickers written canonically (upper case), "
                                f"got {[s for s in symbols if not isinstance(s, str) or s != s.upper()][:5] or symbols[:5]}"
                                " (or repeated ones)")
    has = set(ranking.columns)
    rows = [_row(item, i, has) for i, item in enumerate(ranking.to_dict("records"))]
    ranks = sorted(r["rank"] for r in rows)
    if ranks != list(range(1, len(rows) + 1)):
        raise InvalidInputError(f"the ranking's ranks must be 1..{len(rows)}, each once; got {ranks[:10]}")
    return rows


class OpportunityTables(TableGroup):
    """The ``opportunities`` of a migrated store (schema version 6 or later).

    :param database: the store's database (``PortfolioStore(...).database``).
    """

    def _ready(self, conn: Connection) -> bool:
        return self.database.has_table(conn, schema.opportunities.name)

    def save(self, ranking: pd.DataFrame, *, run_id: str, ts: datetime, dag_id: str | None = None) -> int:
        """Write a run's ranking in one transaction, replacing every row an earlier save of ``run_id`` left.

        :param ranking: one row per symbol with ``rank`` (1..n, each once; 1 = best), ``symbol`` (canonical,
            distinct), ``score`` (finite), ``regime`` (text), ``components`` (dict name -> finite number),
            ``reasons`` (list of strings) and optionally ``regime_probability`` (in [0, 1], NaN/None: unknown) and
            ``features`` (a JSON dict; NaN stored as null). Other columns are ignored.
        :param run_id: the discovery run (the Airflow run id, or any caller id).
        :param ts: the run's instant (aware): the desk's clock it ranked at.
        :param dag_id: the DAG of the run that made it.
        :return: the rows written.
        :raises InvalidInputError: naming the row and the column for a malformed value, an empty ranking, or a
            repeated symbol or rank; nothing is written.
        :raises StoreError: when the store cannot be written or has no ``opportunities`` table (nothing written).
        """
        run_id = _text(run_id, "run_id", 250)
        ts = ensure_utc(ts, "the ranking's ts")
        dag = _text(dag_id, "dag_id", 250, empty=True)
        now = _now()
        rows = [{**r, "run_id": run_id, "ts": ts, "dag_id": dag, "created_at": now} for r in _rows(ranking)]
        o = schema.opportunities.c
        with self.database.write(f"save the ranking of run {run_id}") as conn:
            if not self._ready(conn):
                raise StoreError(f"store {self.url}: no opportunities table (schema version "
                                 f"{self.database.version(conn)}); call migrate() first")
            if self.dialect == "postgresql":  # two saves of one run take turns: the second replaces the first whole
                key = int.from_bytes(hashlib.blake2b(f"portfolio-opportunities:{run_id}".encode(),
                                                     digest_size=8).digest(), "big", signed=True)
                conn.execute(select(func.pg_advisory_xact_lock(key)))
            conn.execute(delete(schema.opportunities).where(o.run_id == run_id))
            for i in range(0, len(rows), _ROWS_PER_STATEMENT):
                conn.execute(schema.opportunities.insert(), rows[i:i + _ROWS_PER_STATEMENT])
        return len(rows)

    def latest(self, *, limit: int | None = None, until: datetime | None = None,
               run_id: str | None = None) -> pd.DataFrame:
        """The ranking of the newest run made at or before ``until`` (by ``ts``, then by when it was written), by rank.

        :param limit: the best ``limit`` rows (a whole number >= 1); ``None``: the whole ranking (at most
            :data:`MAX_RANKING_ROWS`).
        :param until: only runs made at or before this instant (a replay's clock); ``None``: any.
        :param run_id: this run's ranking instead of the newest (``until`` still applies).
        :return: columns :data:`OPPORTUNITY_COLUMNS`: ``run_id``, ``ts`` (``datetime64[ns, UTC]``), ``rank``, ``symbol``,
            ``score``, ``regime``, ``components`` (dict), ``reasons`` (list of strings), ``regime_probability`` (NaN
            when unknown), ``features`` (dict, null for undefined measurements), ``dag_id`` (``None`` when made
            outside a run), ``created_at``; ordered by rank. An empty frame with those columns when there is none
            (an unmigrated store included).
        :raises InvalidInputError: for a bad limit, instant or run id.
        :raises StoreError: when the store cannot be read, or holds a row whose JSON cannot be read.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 1 <= limit <= MAX_RANKING_ROWS):
            raise InvalidInputError(f"limit must be a whole number from 1 to {MAX_RANKING_ROWS}, or None; got "
                                    f"{limit!r}")
        o = schema.opportunities.c
        where = []
        if until is not None:
            where.append(o.ts <= ensure_utc(until, "until"))
        if run_id is not None:
            where.append(o.run_id == _text(run_id, "run_id", 250))
        names = list(OPPORTUNITY_COLUMNS)
        with self.database.read("read the latest ranking of opportunities") as conn:
            rows: list[Any] = []
            if self._ready(conn):
                newest = conn.execute(select(o.run_id).where(*where)
                                      .order_by(o.ts.desc(), o.created_at.desc(), o.run_id.desc()).limit(1)).first()
                if newest is not None:
                    stmt = (select(*(o[n] for n in names)).where(o.run_id == newest.run_id)
                            .order_by(o.rank, o.symbol).limit(limit or MAX_RANKING_ROWS))
                    rows = list(conn.execute(stmt).all())
        return self._frame(rows)

    def _loads(self, text: str, run_id: str, symbol: str, column: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise StoreError(f"store {self.url}: could not read the ranking of run {run_id!r}: {symbol}'s {column} "
                             "holds text that is not JSON") from None

    def _frame(self, rows: Sequence[Any]) -> pd.DataFrame:
        data: dict[str, Any] = {
            "run_id": pd.Series([r.run_id for r in rows], dtype="object"),
            "ts": pd.to_datetime(pd.Series([r.ts for r in rows], dtype="object"), utc=True).astype("datetime64[ns, UTC]"),
            "rank": np.asarray([r.rank for r in rows], dtype=np.int64),
            "symbol": pd.Series([r.symbol for r in rows], dtype="object"),
            "score": np.asarray([r.score for r in rows], dtype=np.float64),
            "regime": pd.Series([r.regime for r in rows], dtype="object"),
            "components": pd.Series([self._loads(r.components, r.run_id, r.symbol, "components") for r in rows],
                                    dtype="object"),
            "reasons": pd.Series([self._loads(r.reasons, r.run_id, r.symbol, "reasons") for r in rows], dtype="object"),
            "regime_probability": np.asarray([np.nan if r.regime_probability is None else r.regime_probability
                                              for r in rows], dtype=np.float64),
            "features": pd.Series([self._loads(r.features, r.run_id, r.symbol, "features") for r in rows],
                                  dtype="object"),
            "dag_id": pd.Series([r.dag_id or None for r in rows], dtype="object"),
            "created_at": pd.to_datetime(pd.Series([r.created_at for r in rows], dtype="object"),
                                         utc=True).astype("datetime64[ns, UTC]"),
        }
        return pd.DataFrame(data, columns=list(OPPORTUNITY_COLUMNS))
