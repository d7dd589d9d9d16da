"""Bars in the portfolio store: idempotent upserts on (symbol, timeframe, ts) and reads as canonical bar frames.

Writes are one transaction per call, batched: ``executemany`` of pre-converted tuples on the raw ``sqlite3``
connection, and on PostgreSQL a binary ``COPY`` into a temporary staging table, then an ``UPDATE`` of the
stored rows whose values differ and an ``INSERT`` of the new keys. A batch is checked whole before anything
is written (:class:`~airflow_provider_portfolio.store.codecs._PreparedBars`) and written whole or not at all.
An identical re-upsert changes nothing and reports 0 rows.

A stored row that cannot be decoded (SQLite keeps a price or a timestamp written as text by hand) is a
:class:`StoreError` naming the table, the symbol and the row; :meth:`BarTable.read_bars_checked` reports such
symbols instead and reads the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from sqlalchemy import ARRAY, String, bindparam, func, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, empty_bars, parse_timeframe
from airflow_provider_portfolio.store import codecs, schema
from airflow_provider_portfolio.store.codecs import (
    _DECODED,
    _VALUES,
    _ChunkReader,
    _chunks,
    _decode,
    _PreparedBars,
    _stored,
    _symbol_list,
    _ts_text,
    _ts_us,
    _utc,
)
from airflow_provider_portfolio.store.database import TableGroup

log = logging.getLogger(__name__)

_SQLITE_UPSERT = (
    f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) VALUES ({', '.join('?' * len(BAR_COLUMNS))}) "
    "ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in schema.BAR_VALUE_COLUMNS)
    + " WHERE "
    + " OR ".join(f"bars.{c} IS NOT excluded.{c}" for c in schema.BAR_VALUE_COLUMNS)
)
# First loads and appends: when no stored bar of the batch's (symbol, timeframe) pairs lies within the batch's
# time range, no key of the batch can be stored, and the rows are copied straight into the table (a savepoint
# guards the case where a concurrent writer commits one of those keys meanwhile: the staged upsert then runs).
_PG_PROBE = (
    "SELECT EXISTS (SELECT 1 FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) "
    "AS r(symbol, timeframe, lo, hi) WHERE EXISTS (SELECT 1 FROM bars AS b "
    "WHERE b.symbol = r.symbol COLLATE \"C\" AND b.timeframe = r.timeframe COLLATE \"C\" "
    "AND b.ts BETWEEN TIMESTAMPTZ 'epoch' + r.lo * INTERVAL '1 microsecond' "
    "AND TIMESTAMPTZ 'epoch' + r.hi * INTERVAL '1 microsecond'))"
)
_PG_COPY_BARS = f"COPY bars ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_STAGE = "_portfolio_bars_stage"
_PG_CREATE_STAGE = f"CREATE TEMPORARY TABLE {_PG_STAGE} (LIKE bars) ON COMMIT DROP"
_PG_COPY = f"COPY {_PG_STAGE} ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_KEY_MATCH = " AND ".join(f"b.{c} = s.{c}" for c in ("symbol", "timeframe", "ts"))
_PG_DIFFERS = (f"({', '.join('b.' + c for c in schema.BAR_VALUE_COLUMNS)}) IS DISTINCT FROM "
               f"({', '.join('s.' + c for c in schema.BAR_VALUE_COLUMNS)})")
# Step 1: update the stored rows whose values differ.
_PG_UPDATE = (
    f"UPDATE bars AS b SET {', '.join(f'{c} = s.{c}' for c in schema.BAR_VALUE_COLUMNS)} "
    f"FROM {_PG_STAGE} AS s WHERE {_PG_KEY_MATCH} AND {_PG_DIFFERS}"
)
# Step 2: plain insert of the new keys (twice as fast as ON CONFLICT on bulk loads)...
_PG_INSERT_NEW = (
    f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) SELECT {', '.join('s.' + c for c in BAR_COLUMNS)} "
    f"FROM {_PG_STAGE} AS s WHERE NOT EXISTS (SELECT 1 FROM bars AS b WHERE {_PG_KEY_MATCH})"
)
# ... or, when a concurrent writer inserted some of those keys meanwhile, the upsert itself.
_PG_UPSERT = (
    f"INSERT INTO bars AS b ({', '.join(BAR_COLUMNS)}) SELECT {', '.join(BAR_COLUMNS)} FROM {_PG_STAGE} "
    "ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in schema.BAR_VALUE_COLUMNS)
    + f" WHERE ({', '.join('b.' + c for c in schema.BAR_VALUE_COLUMNS)}) IS DISTINCT FROM "
    f"({', '.join('EXCLUDED.' + c for c in schema.BAR_VALUE_COLUMNS)})"
)
#: Attempts of a PostgreSQL upsert that lost a deadlock to a concurrent writer.
_PG_ATTEMPTS = 4


class BarTable(TableGroup):
    """The ``bars`` table of a :class:`~airflow_provider_portfolio.store.database.Database`.

    :param database: the store's database.
    """

    def _has_bars(self, conn: Any) -> bool:
        return self.database.has_table(conn, schema.bars.name)

    # -- bars: write ------------------------------------------------------------------------------
    def upsert_bars(self, bars: pd.DataFrame) -> int:
        """Insert or update bars on (symbol, timeframe, ts), all in one transaction.

        :param bars: a canonical bar frame (see ``market/bars.py``); extra columns are ignored.
        :return: the number of rows inserted or actually changed (0 for an identical re-upsert).
        :raises InvalidInputError: before anything is written, for a frame without the canonical
            columns, with missing or non-finite values, odd symbols/timeframes or duplicate keys.
        :raises StoreError: when the store cannot be written (nothing is written then).
        """
        prepared = _PreparedBars(bars)
        if prepared.n == 0:
            return 0
        attempts = _PG_ATTEMPTS if self.dialect == "postgresql" else 1
        for attempt in range(1, attempts + 1):
            try:
                with self.database.write("upsert bars") as conn:
                    if not self._has_bars(conn):
                        raise StoreError(f"store {self.url}: no bars table; call migrate() first")
                    raw = conn.connection.driver_connection
                    assert raw is not None  # the DBAPI connection of an open transaction
                    if self.dialect == "postgresql":
                        return self._pg_upsert(raw, prepared)
                    before = raw.total_changes
                    cur = raw.cursor()
                    try:
                        for batch in prepared.sqlite_batches(codecs.BATCH_ROWS):
                            cur.executemany(_SQLITE_UPSERT, batch)
                    finally:
                        cur.close()
                    return raw.total_changes - before
            except StoreError as err:
                # Two writers updating overlapping rows can deadlock; PostgreSQL aborts one: retry it.
                if attempt == attempts or "deadlock" not in str(err).lower():
                    raise
                log.info("store %s: upsert lost a deadlock to a concurrent writer; retrying (%d)", self.url, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _pg_upsert(raw: Any, prepared: _PreparedBars) -> int:
        """Copy the rows straight into the table when none of their keys can be stored (a first load, an append);
        else stage them with a binary COPY, update the changed ones and insert the new ones."""
        cur = raw.cursor()
        try:
            cur.execute("SET LOCAL jit = off")  # compiling one bulk statement costs more than it saves
            cur.execute(_PG_PROBE, prepared.key_ranges())
            if not cur.fetchone()[0]:
                cur.execute("SAVEPOINT portfolio_copy_new")
                try:
                    _pg_copy(cur, _PG_COPY_BARS, prepared)
                except Exception as err:
                    if not _unique_violation(err):
                        raise
                    # A concurrent writer committed some of these keys after the probe: upsert instead.
                    cur.execute("ROLLBACK TO SAVEPOINT portfolio_copy_new")
                else:
                    cur.execute("RELEASE SAVEPOINT portfolio_copy_new")
                    return prepared.n
            cur.execute(_PG_CREATE_STAGE)
            _pg_copy(cur, _PG_COPY, prepared)
            cur.execute(f"ANALYZE {_PG_STAGE}")  # temporary tables get no statistics otherwise
            cur.execute(_PG_UPDATE)
            changed = max(cur.rowcount, 0)
            cur.execute("SAVEPOINT portfolio_insert_new")
            try:
                cur.execute(_PG_INSERT_NEW)
                changed += max(cur.rowcount, 0)
            except Exception as err:
                if not _unique_violation(err):
                    raise
                # A concurrent writer committed some of these keys after our snapshot: upsert instead.
                cur.execute("ROLLBACK TO SAVEPOINT portfolio_insert_new")
                cur.execute(_PG_UPSERT)
                changed += max(cur.rowcount, 0)
            cur.execute("RELEASE SAVEPOINT portfolio_insert_new")
            return changed
        finally:
            cur.close()

    # -- bars: read -------------------------------------------------------------------------------
    def _ts_us(self, expr: Any = None) -> Any:
        """``expr`` (default ``bars.ts``) as integer epoch microseconds: no per-row datetime objects."""
        return _ts_us(self.dialect, expr)
    def _where(self, timeframe: str | None, start: Any, end: Any) -> list[Any]:
        b = schema.bars.c
        conds = []
        if timeframe is not None:
            conds.append(b.timeframe == parse_timeframe(timeframe).name)
        lo, hi = _utc(start, "start"), _utc(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise InvalidInputError(f"start {lo.isoformat()} is after end {hi.isoformat()}")
        if lo is not None:
            conds.append(b.ts >= lo.to_pydatetime())
        if hi is not None:
            conds.append(b.ts <= hi.to_pydatetime())
        return conds

    def _symbol_order(self) -> Any:
        return schema.bars.c.symbol  # byte order on both dialects (COLLATE "C" column on PostgreSQL)

    def read_bars(self, symbols: list[str] | None = None, timeframe: str = "1Day", start: Any = None,
                  end: Any = None) -> pd.DataFrame:
        """Stored bars as a canonical bar frame sorted by (symbol, ts).

        :param symbols: symbols to read; ``None`` reads all.
        :param timeframe: the timeframe (``1Day``, ``5Min`` ...).
        :param start: inclusive lower bound on ``ts`` (Timestamp, datetime, date or string; naive = UTC).
        :param end: inclusive upper bound on ``ts``.
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read, or a row cannot be decoded (a price or a
            timestamp stored as text): the message names the table, the symbol and the row. Use
            :meth:`read_bars_checked` to read the other symbols anyway.
        """
        frame, rejected = self.read_bars_checked(symbols, timeframe, start, end)
        if rejected:
            shown = "; ".join(list(rejected.values())[:5])
            more = f" (+{len(rejected) - 5} more symbols)" if len(rejected) > 5 else ""
            raise StoreError(f"store {self.url}: could not read bars: corrupt rows: {shown}{more}")
        return frame

    def read_bars_checked(self, symbols: list[str] | None = None, timeframe: str = "1Day", start: Any = None,
                          end: Any = None) -> tuple[pd.DataFrame, dict[str, str]]:
        """Like :meth:`read_bars`, but a symbol with a row that cannot be decoded is reported, not raised.

        A stored row whose price, volume or timestamp is not a number (SQLite keeps whatever a hand-made
        ``UPDATE`` wrote, e.g. ``close = 'abc'``) makes its whole symbol unreadable: none of its bars are
        returned, so no caller works on a series with a silent gap. The other symbols read as usual.

        :param symbols: symbols to read; ``None`` reads all.
        :param timeframe: the timeframe (``1Day``, ``5Min`` ...).
        :param start: inclusive lower bound on ``ts`` (naive = UTC).
        :param end: inclusive upper bound on ``ts``.
        :return: (the bars of the readable symbols, sorted by (symbol, ts); symbol -> what is wrong, naming
            the table, the symbol and its first corrupt rows).
        :raises InvalidInputError: for malformed arguments.
        :raises StoreError: when the store cannot be read.
        """
        b = schema.bars.c
        conds = self._where(timeframe, start, end)
        groups: list[list[str] | None] = [None] if symbols is None else list(_chunks(_symbol_list(symbols)))
        cols = [b.symbol, b.timeframe, self._ts_us(), b.open, b.high, b.low, b.close, b.volume, b.source]
        rows: list[Any] = []
        with self.database.read("read bars") as conn:
            if not self._has_bars(conn):
                return empty_bars(), {}
            for group in groups:
                where = conds if group is None else [*conds, b.symbol.in_(group)]
                stmt = select(*cols).where(*where).order_by(self._symbol_order(), b.ts)
                rows.extend(conn.execute(stmt).cursor.fetchall())  # plain tuples: no per-row processing needed
        if not rows:
            return empty_bars(), {}
        data = list(zip(*rows, strict=True))
        decoded = {"ts": _decode(data[2], "ts"), **{name: _decode(data[3 + k], "float") for k, name in enumerate(_VALUES)}}
        symbol_col = pd.Series(data[0], dtype="str")
        rejected: dict[str, str] = {}
        keep: np.ndarray | None = None
        if any(mask is not None for _, mask in decoded.values()):
            rejected = self._corrupt_bars(data, decoded)
            keep = ~symbol_col.isin(list(rejected)).to_numpy()
        ts_us = decoded["ts"][0] if keep is None else decoded["ts"][0][keep]
        frame = pd.DataFrame({
            "symbol": symbol_col if keep is None else symbol_col[keep].reset_index(drop=True),
            "timeframe": pd.Series(data[1] if keep is None else np.asarray(data[1], dtype=object)[keep], dtype="str"),
            "ts": pd.Series((ts_us * 1000).view("datetime64[ns]")).dt.tz_localize("UTC"),
            **{name: decoded[name][0] if keep is None else decoded[name][0][keep] for name in _VALUES},
            "source": pd.Series(data[8] if keep is None else np.asarray(data[8], dtype=object)[keep], dtype="str"),
        })
        if not len(frame):
            frame = empty_bars()
        elif len(groups) > 1:
            frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
        return frame, rejected

    @staticmethod
    def _corrupt_bars(data: list[tuple[Any, ...]], decoded: dict[str, tuple[np.ndarray, np.ndarray | None]],
                      shown: int = 3) -> dict[str, str]:
        """symbol -> message naming the table, the symbol and its first ``shown`` corrupt rows and columns."""
        index = {"ts": 2, **{name: 3 + k for k, name in enumerate(_VALUES)}}
        bad_rows = np.zeros(len(data[0]), dtype=bool)
        for _, mask in decoded.values():
            if mask is not None:
                bad_rows |= mask
        ts_bad = decoded["ts"][1]
        found: dict[str, list[str]] = {}
        for i in np.flatnonzero(bad_rows).tolist():
            raw_ts = data[2][i]
            when = f"ts {_stored(raw_ts)}" if ts_bad is not None and ts_bad[i] else f"ts {_ts_text(decoded['ts'][0][i])}"
            problems = [f"column {name} holds {_stored(data[index[name]][i])}, not {_DECODED['ts' if name == 'ts' else 'float'][1]}"
                        for name, (_, mask) in decoded.items() if mask is not None and mask[i]]
            found.setdefault(str(data[0][i]), []).append(f"row ({data[1][i]}, {when}): {', '.join(problems)}")
        out = {}
        for symbol, rows in found.items():
            more = f" (+{len(rows) - shown} more)" if len(rows) > shown else ""
            out[symbol] = (f"table bars, symbol {symbol}: {len(rows)} corrupt row(s): "
                           f"{'; '.join(rows[:shown])}{more}")
        return out

    def bar_timestamps(self, symbol: str, timeframe: str, start: Any = None, end: Any = None) -> pd.DatetimeIndex:
        """Timestamps (UTC, ascending) of the stored bars of one symbol and timeframe.

        :param symbol: the symbol.
        :param timeframe: the timeframe.
        :param start: inclusive lower bound (naive = UTC).
        :param end: inclusive upper bound.
        """
        (symbol,) = _symbol_list([symbol])
        b = schema.bars.c
        stmt = select(self._ts_us()).where(b.symbol == symbol, *self._where(timeframe, start, end)).order_by(b.ts)
        with self.database.read("read bar timestamps") as conn:
            values_us = conn.execute(stmt).scalars().all() if self._has_bars(conn) else []
        us, bad = _decode(values_us, "ts")
        if bad is not None:
            self._corrupt_ts(symbol, timeframe, [values_us[i] for i in np.flatnonzero(bad).tolist()])
        return pd.DatetimeIndex((us * 1000).view("datetime64[ns]"), name="ts").tz_localize("UTC")

    def _corrupt_ts(self, symbol: str, timeframe: str, values: list[Any]) -> NoReturn:
        rows = "; ".join(f"row ({timeframe}, ts {_stored(v)})" for v in values[:3])
        more = f" (+{len(values) - 3} more)" if len(values) > 3 else ""
        raise StoreError(f"store {self.url}: could not read bar timestamps: corrupt rows: table bars, symbol {symbol}: "
                         f"{rows}{more}: column ts is not {_DECODED['ts'][1]}")

    def latest_bar_ts(self, symbols: list[str] | None, timeframe: str) -> dict[str, pd.Timestamp | None]:
        """Latest stored bar timestamp per symbol (``None`` for a symbol with no bars).

        :param symbols: symbols to ask about; ``None`` means every stored symbol.
        :param timeframe: the timeframe.
        """
        b = schema.bars.c
        tf = parse_timeframe(timeframe).name
        out: dict[str, pd.Timestamp | None] = {}
        with self.database.read("read latest bar timestamps") as conn:
            ready = self._has_bars(conn)
            if symbols is None:
                if ready:
                    stmt = select(b.symbol, self._ts_us(func.max(b.ts))).where(b.timeframe == tf).group_by(b.symbol)
                    out = dict(conn.execute(stmt).all())
            else:
                wanted = _symbol_list(symbols)
                out = dict.fromkeys(wanted)
                for group in _chunks(wanted) if ready else []:
                    req = self._symbol_rows(group)
                    # max(ts) (not of an expression of ts): one backward index seek per symbol
                    max_ts = (select(func.max(b.ts)).where(b.symbol == req.c.symbol, b.timeframe == tf)
                              .scalar_subquery())
                    out.update(conn.execute(select(req.c.symbol, self._ts_us(max_ts))).all())
        present = [(s, us) for s, us in out.items() if us is not None]
        decoded, bad = _decode([us for _, us in present], "ts")
        if bad is not None:
            i = int(np.flatnonzero(bad)[0])
            self._corrupt_ts(present[i][0], tf, [present[i][1]])
        latest = dict(zip((s for s, _ in present), decoded.tolist(), strict=True))
        return {s: None if s not in latest else pd.Timestamp(latest[s] * 1000, tz="UTC") for s in out}

    def _symbol_rows(self, symbols: list[str]) -> Any:
        """A one-column row source ``symbol`` holding ``symbols`` (one bound parameter)."""
        if self.dialect == "postgresql":
            array = bindparam("symbols", symbols, type_=ARRAY(String))
            return func.unnest(array).table_valued("symbol").render_derived(name="req")
        rows = func.json_each(bindparam("symbols", json.dumps(symbols))).table_valued("value").alias("req")
        return select(rows.c.value.label("symbol")).subquery("req")

    def count_bars(self, symbols: list[str] | None = None, timeframe: str | None = None) -> int:
        """Number of stored bars, optionally for some symbols and/or one timeframe (0 before migrate)."""
        b = schema.bars.c
        conds = self._where(timeframe, None, None)
        groups: list[list[str] | None] = [None] if symbols is None else list(_chunks(_symbol_list(symbols)))
        total = 0
        with self.database.read("count bars") as conn:
            if not self._has_bars(conn):
                return 0
            for group in groups:
                where = conds if group is None else [*conds, b.symbol.in_(group)]
                total += int(conn.execute(select(func.count()).select_from(schema.bars).where(*where)).scalar_one())
        return total


def _unique_violation(err: BaseException) -> bool:
    """Whether a driver error is PostgreSQL's unique_violation (psycopg 3 ``sqlstate``, psycopg2 ``pgcode``)."""
    return "23505" in (getattr(err, "sqlstate", None), getattr(err, "pgcode", None))


def _pg_copy(cur: Any, sql: str, prepared: _PreparedBars) -> None:
    """Run a binary ``COPY ... FROM STDIN`` of the prepared bars on a psycopg 3 or psycopg2 cursor."""
    if hasattr(cur, "copy"):  # psycopg 3
        with cur.copy(sql) as copy:
            for chunk in prepared.pg_copy_chunks(codecs.BATCH_ROWS):
                copy.write(chunk)
    else:  # psycopg2
        cur.copy_expert(sql, _ChunkReader(prepared.pg_copy_chunks(codecs.BATCH_ROWS)))
