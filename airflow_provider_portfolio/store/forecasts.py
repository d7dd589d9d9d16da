"""Forecasts and model evaluations in the portfolio store: replaced per (run_id, model, symbol, timeframe) key.

One transaction deletes the stored rows of the keys in the call (in bulk, per run/model/timeframe and symbol
chunk) and inserts the new ones (``executemany`` on SQLite, text ``COPY`` on PostgreSQL); PostgreSQL writers
of forecasts queue on an advisory lock, so concurrent replaces of one key never interleave. Frames are checked
whole before anything is written (:class:`~airflow_provider_portfolio.store.codecs._PreparedRows`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import and_, delete, func, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.store import codecs, schema
from airflow_provider_portfolio.store.codecs import (
    _DECODED,
    _ChunkReader,
    _chunks,
    _decode,
    _kind,
    _name_list,
    _PreparedRows,
    _stored,
    _symbol_list,
    _ts_us,
)
from airflow_provider_portfolio.store.database import TableGroup

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


log = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock that serialises forecast writes (replace = delete + insert).
_FORECAST_LOCK_KEY = 0x666F7265636173  # "forecas"


class ForecastTables(TableGroup):
    """The ``forecasts`` and ``model_evaluations`` tables of a
    :class:`~airflow_provider_portfolio.store.database.Database`.

    :param database: the store's database.
    """

    def _has_forecasts(self, conn: Connection) -> bool:
        return self.database.has_table(conn, schema.forecasts.name)

    def write_forecasts(self, forecasts: pd.DataFrame | None,
                        evaluations: pd.DataFrame | None = None) -> tuple[int, int]:
        """Store a run's forecasts and model evaluations in one transaction, replacing the keys they hold.

        Each (run_id, model, symbol, timeframe) present in either frame is replaced as a unit in both
        tables: its stored forecast rows and evaluation rows are deleted, then the frames' rows inserted.
        Keys absent from both frames are left alone, so a rerun over fewer symbols replaces only those,
        and writing the same frames twice leaves the same rows. Nothing of the call is visible if any
        part fails.

        :param forecasts: rows of :data:`~airflow_provider_portfolio.store.schema.FORECAST_COLUMNS`
            (extra columns ignored). ``created_at`` is optional (absent or missing means now, UTC); NaN
            or ``None`` in ``variance`` is stored as NULL; naive timestamps mean UTC. ``None`` is an
            empty frame: the keys of ``evaluations`` then lose their stored forecasts.
        :param evaluations: rows of :data:`~airflow_provider_portfolio.store.schema.EVALUATION_COLUMNS`;
            NaN or ``None`` in the nullable columns is stored as NULL. ``None`` (the default) is an empty
            frame: the keys of ``forecasts`` then lose their stored evaluations.
        :return: (forecast rows written, evaluation rows written); (0, 0) for empty frames, without I/O.
        :raises InvalidInputError: before anything is written, naming the column and the first offending
            row: missing columns, empty or over-long keys, non-canonical symbols or timeframes, step < 1,
            non-finite point/lower/upper, lower > point or point > upper, level outside (0, 1), horizon < 1,
            an unknown label, unreadable timestamps, duplicate keys.
        :raises StoreError: before :meth:`migrate` created the tables, or when the store cannot be
            written (nothing is written then).
        """
        now = datetime.now(timezone.utc)
        parts = [
            _PreparedRows(pd.DataFrame() if frame is None else frame, table, what, now)
            for frame, table, what in (
                (forecasts, schema.forecasts, "forecast frame"),
                (evaluations, schema.model_evaluations, "evaluation frame"),
            )
        ]
        keys = parts[0].run_keys() | parts[1].run_keys()
        if not keys:
            return 0, 0
        runs: dict[tuple[str, str, str], list[str]] = {}
        for run_id, model, symbol, timeframe in sorted(keys):
            runs.setdefault((run_id, model, timeframe), []).append(symbol)
        with self.database.write("write forecasts") as conn:
            if not self._has_forecasts(conn):
                raise StoreError(f"store {self.url}: no forecasts table (schema version {self.database.version(conn)}); "
                                 "call migrate() first")
            if self.dialect == "postgresql":  # concurrent replaces of one key must not interleave
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_FORECAST_LOCK_KEY})")
            for part in parts:
                self._delete_runs(conn, part.table, runs)
            written = [self._insert_rows(conn, part) for part in parts]
        log.info("store %s: wrote %d forecast and %d evaluation rows for %d (run, model, symbol, timeframe) keys",
                 self.url, written[0], written[1], len(keys))
        return written[0], written[1]

    @staticmethod
    def _delete_runs(conn: Connection, table: Any, runs: dict[tuple[str, str, str], list[str]]) -> None:
        """Delete the rows of ``table`` of the given keys: one statement per (run, model, timeframe) and chunk."""
        t = table.c
        for (run_id, model, timeframe), symbols in runs.items():
            for group in _chunks(symbols):
                conn.execute(delete(table).where(t.run_id == run_id, t.model == model, t.timeframe == timeframe,
                                                 t.symbol.in_(group)))

    def _insert_rows(self, conn: Connection, rows: _PreparedRows) -> int:
        """Bulk-insert prepared rows (``executemany`` on SQLite, text ``COPY`` on PostgreSQL); returns the count."""
        if rows.n == 0:
            return 0
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c.name) for c in rows.table.columns)
        raw = conn.connection.driver_connection
        assert raw is not None  # the DBAPI connection of an open transaction
        cur = raw.cursor()
        try:
            if self.dialect == "postgresql":
                sql = f"COPY {quote(rows.table.name)} ({names}) FROM STDIN"
                if hasattr(cur, "copy"):  # psycopg 3
                    with cur.copy(sql) as copy:
                        for chunk in rows.pg_copy_chunks(codecs.BATCH_ROWS):
                            copy.write(chunk)
                else:  # psycopg2
                    cur.copy_expert(sql, _ChunkReader(rows.pg_copy_chunks(codecs.BATCH_ROWS)))
            else:
                marks = ", ".join("?" * len(rows.table.columns))
                sql = f"INSERT INTO {quote(rows.table.name)} ({names}) VALUES ({marks})"
                for batch in rows.sqlite_batches(codecs.BATCH_ROWS):
                    cur.executemany(sql, batch)
        finally:
            cur.close()
        return rows.n

    def read_forecasts(self, symbols: list[str] | None = None, model: str | list[str] | None = None,
                       timeframe: str | None = "1Day", run_id: str | None = None, latest: bool = True) -> pd.DataFrame:
        """Stored forecasts, one row per (run_id, model, symbol, timeframe, step).

        Columns are :data:`~airflow_provider_portfolio.store.schema.FORECAST_COLUMNS` (timestamps
        ``datetime64[ns, UTC]``, NULL ``variance`` as NaN), sorted by (symbol, model, timeframe, asof,
        run_id, step): with one run per (symbol, model) that is (symbol, model, step).

        :param symbols: symbols to read; ``None`` reads all (unknown symbols give no rows).
        :param model: one model name or a list; ``None`` reads all.
        :param timeframe: the timeframe (``1Day``, ``5Min`` ...); ``None`` reads all.
        :param run_id: read this run only (``latest`` is then ignored).
        :param latest: for each (symbol, model, timeframe) keep only the run with the newest ``asof``
            (ties: the newest ``created_at``, then the greatest ``run_id``); ``False`` returns every run.
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read. An unmigrated store gives an empty frame.
        """
        return self._read_runs(schema.forecasts, "read forecasts", symbols, model, timeframe, run_id, latest)

    def read_evaluations(self, symbols: list[str] | None = None, model: str | list[str] | None = None,
                         timeframe: str | None = "1Day", run_id: str | None = None,
                         latest: bool = True) -> pd.DataFrame:
        """Stored model evaluations, one row per (run_id, model, symbol, timeframe).

        Columns are :data:`~airflow_provider_portfolio.store.schema.EVALUATION_COLUMNS` (timestamps
        ``datetime64[ns, UTC]``, NULL metrics as NaN, ``healthy`` bool), sorted by (symbol, model,
        timeframe, asof, run_id): with one run per (symbol, model) that is (symbol, model).

        :param symbols: symbols to read; ``None`` reads all (unknown symbols give no rows).
        :param model: one model name or a list; ``None`` reads all.
        :param timeframe: the timeframe (``1Day``, ``5Min`` ...); ``None`` reads all.
        :param run_id: read this run only (``latest`` is then ignored).
        :param latest: for each (symbol, model, timeframe) keep only the run with the newest ``asof``
            (ties: the newest ``created_at``, then the greatest ``run_id``); ``False`` returns every run.
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read. An unmigrated store gives an empty frame.
        """
        return self._read_runs(schema.model_evaluations, "read model evaluations", symbols, model, timeframe,
                               run_id, latest)

    def _read_runs(self, table: Any, action: str, symbols: Any, model: Any, timeframe: str | None,
                   run_id: str | None, latest: bool) -> pd.DataFrame:
        t = table.c
        conds: list[Any] = []
        if timeframe is not None:
            conds.append(t.timeframe == parse_timeframe(timeframe).name)
        models = _name_list(model, "model")
        if models is not None:
            conds.append(t.model.in_(models))
        if run_id is not None:
            if not isinstance(run_id, str):
                raise InvalidInputError(f"run_id must be a string, got {run_id!r}")
            conds.append(t.run_id == run_id)
        if not isinstance(latest, (bool, np.bool_)):
            raise InvalidInputError(f"latest must be True or False, got {latest!r}")
        groups: list[list[str] | None] = [None] if symbols is None else list(_chunks(_symbol_list(symbols)))
        cols = [_ts_us(self.dialect, c) if _kind(c) == "ts" else c for c in table.columns]
        order = [t.symbol, t.model, t.timeframe, t.asof, t.run_id] + ([t.step] if "step" in t else [])
        rows: list[Any] = []
        with self.database.read(action) as conn:
            if models == [] or not self._has_forecasts(conn):
                groups = []
            for group in groups:
                where = conds if group is None else [*conds, t.symbol.in_(group)]
                stmt = select(*cols).where(*where)
                if run_id is None and latest:
                    best = self._latest_runs(table, where)
                    stmt = stmt.join_from(table, best, and_(*(t[k] == best.c[k] for k in schema.FORECAST_RUN_KEY)))
                rows.extend(conn.execute(stmt.order_by(*order)).cursor.fetchall())
        frame = self._run_frame(table, rows)
        if len(groups) > 1:
            frame = frame.sort_values([c.name for c in order], kind="stable").reset_index(drop=True)
        return frame

    @staticmethod
    def _latest_runs(table: Any, where: list[Any]) -> Any:
        """The (run_id, model, symbol, timeframe) keys of the newest run of each (symbol, model, timeframe)."""
        t = table.c
        key = [t[k] for k in schema.FORECAST_RUN_KEY]
        runs = (select(*key, func.max(t.asof).label("asof"), func.max(t.created_at).label("created_at"))
                .where(*where).group_by(*key).subquery("runs"))
        rank = func.row_number().over(
            partition_by=(runs.c.symbol, runs.c.model, runs.c.timeframe),
            order_by=(runs.c.asof.desc(), runs.c.created_at.desc(), runs.c.run_id.desc()),
        ).label("run_rank")
        ranked = select(*(runs.c[k] for k in schema.FORECAST_RUN_KEY), rank).subquery("ranked")
        return (select(*(ranked.c[k] for k in schema.FORECAST_RUN_KEY)).where(ranked.c.run_rank == 1)
                .subquery("best"))

    def _run_frame(self, table: Any, rows: list[Any]) -> pd.DataFrame:
        """Fetched tuples (timestamps as epoch microseconds) as a frame with the table's columns and dtypes.

        :raises StoreError: naming the table, the row's key and the column, for a stored value that cannot
            be decoded (a number or a timestamp stored as text).
        """
        data = list(zip(*rows, strict=True)) if rows else [()] * len(table.columns)
        out: dict[str, Any] = {}
        for values, column in zip(data, table.columns, strict=True):
            kind = _kind(column)
            if kind in _DECODED:  # NULL (None) in a float column becomes NaN
                arr, bad = _decode(values, kind)
                if bad is not None:
                    i = int(np.flatnonzero(bad)[0])
                    key = ", ".join(f"{c.name} {_stored(data[k][i])}" for k, c in enumerate(table.columns)
                                    if c.primary_key)
                    raise StoreError(f"store {self.url}: could not read {table.name}: corrupt rows: table "
                                     f"{table.name}, symbol {data[table.columns.keys().index('symbol')][i]}: row ({key}): "
                                     f"column {column.name} holds {_stored(values[i])}, not {_DECODED[kind][1]} "
                                     f"({int(bad.sum())} such row(s))")
                out[column.name] = (pd.Series((arr * 1000).view("datetime64[ns]")).dt.tz_localize("UTC")
                                    if kind == "ts" else arr)
            elif kind == "bool":
                out[column.name] = np.asarray(values, dtype=bool)
            else:
                out[column.name] = pd.Series(values, dtype="str")
        return pd.DataFrame(out, columns=[c.name for c in table.columns])
