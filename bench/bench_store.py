"""Store upserts against pandas ``to_sql`` and a naive row loop, on SQLite and PostgreSQL, answers checked.

Data: 500 symbols x 2520 daily bars (1.26M rows) of valid random OHLCV in the canonical bar frame.
Per dialect (SQLite in a temporary file; PostgreSQL in a fresh database), side by side in one run:

- first load: ``upsert_bars`` into the empty store, in calls of 100 symbols (as parallel mapped ETL
  tasks would write); on PostgreSQL the rows go straight into the table by binary ``COPY`` (no stored key
  can conflict), and the same load through the staged upsert (``COPY`` into a temporary table, ``UPDATE``
  the changed rows, ``INSERT`` the new keys: the path every batch took before) is timed side by side;
- no-new re-run, the way the ETL does it: ``latest_bar_ts`` for every symbol, keep only the rows after
  it (none), upsert that;
- full identical re-upsert of all rows (for information: it must report 0 changed);
- baselines: ``DataFrame.to_sql(if_exists="append", method=None)`` into an empty table (all rows on
  SQLite; a 100k-row sample extrapolated on PostgreSQL), and a row-at-a-time loop (one
  ``INSERT ... ON CONFLICT`` per row through SQLAlchemy, a commit per row) on a sample, extrapolated.

Checks (exit status 1 when one fails): count after the load, a random sample of symbols read back
equals the input exactly, re-upserts report 0. Targets (FAIL lines, exit status 1 too): first load
< 10 s per dialect; the no-new re-run >= 10x faster than the first load.

Without ``--pg-url`` a private PostgreSQL server is started (``tests/pgserver.py``, fsync on); without
PostgreSQL binaries only SQLite is measured and the run fails (``make bench`` installs them).

Usage: python bench/bench_store.py [--pg-url URL] [--symbols 500] [--bars 2520]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from checks import FAILURES, check, exit_status

LOAD_TARGET_S = 10.0
RERUN_TARGET_RATIO = 10.0
CHUNK_SYMBOLS = 100
NAIVE_ROWS = 5_000
NAIVE_BUDGET_S = 15.0
PG_TO_SQL_SAMPLE = 100_000


def make_frame(n_symbols: int, n_bars: int, seed: int = 42):
    """Canonical bar frame of valid random OHLCV: ``n_symbols`` x ``n_bars`` daily bars."""
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.market.bars import to_bar_frame

    rng = np.random.default_rng(seed)
    n = n_symbols * n_bars
    symbols = np.array([f"T{i:03d}" if i % 3 else f"Z{i:04d}" for i in range(n_symbols)])  # two lengths
    days = pd.date_range("2015-01-02", periods=n_bars, freq="D", tz="UTC")
    rets = rng.normal(0.0003, 0.02, size=(n_symbols, n_bars))
    close = (rng.uniform(5, 500, size=(n_symbols, 1)) * np.exp(np.cumsum(rets, axis=1))).ravel()
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    frame = pd.DataFrame({
        "symbol": np.repeat(symbols, n_bars), "timeframe": "1Day", "ts": np.tile(days, n_symbols),
        "open": open_, "high": high, "low": low, "close": close,
        "volume": rng.integers(100, 50_000_000, n).astype("float64"), "source": "synthetic",
    })
    return to_bar_frame(frame)


def rows_after_latest(store, frame):
    """The ETL's incremental step: rows newer than what the store already holds, per symbol."""
    import pandas as pd

    latest = store.latest_bar_ts(sorted(frame["symbol"].unique()), "1Day")
    floor = frame["symbol"].map({s: (t if t is not None else pd.NaT) for s, t in latest.items()})
    floor = pd.to_datetime(floor, utc=True)
    keep = floor.isna().to_numpy() | (frame["ts"] > floor).to_numpy()
    return frame[keep]


def naive_loop(store, sample) -> tuple[float, int]:
    """One INSERT ... ON CONFLICT per row through SQLAlchemy Core, a commit per row; time-boxed."""
    from sqlalchemy.dialects import postgresql, sqlite

    from airflow_provider_portfolio.store.schema import BAR_VALUE_COLUMNS, bars

    dialect_insert = postgresql.insert if store.dialect == "postgresql" else sqlite.insert
    stmt = dialect_insert(bars)
    stmt = stmt.on_conflict_do_update(
        index_elements=["symbol", "timeframe", "ts"],
        set_={c: stmt.excluded[c] for c in BAR_VALUE_COLUMNS},
    )
    rows = [{**r, "ts": r["ts"].to_pydatetime()} for r in sample.to_dict("records")]
    done = 0
    start = time.perf_counter()
    with store.engine.connect() as conn:
        for row in rows:
            conn.execute(stmt, row)
            conn.commit()
            done += 1
            if time.perf_counter() - start > NAIVE_BUDGET_S:
                break
    return time.perf_counter() - start, done


def to_sql_baseline(url: str, frame) -> float:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        start = time.perf_counter()
        frame.to_sql("bars_to_sql", engine, if_exists="append", index=False, method=None)
        elapsed = time.perf_counter() - start
        with engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM bars_to_sql")).scalar() == len(frame)
            conn.execute(text("DROP TABLE bars_to_sql"))
    finally:
        engine.dispose()
    return elapsed


def bench_dialect(label: str, url: str, frame, rng) -> dict[str, float]:
    from airflow_provider_portfolio.store import PortfolioStore

    print(f"\n== {label}: {len(frame):,} rows ({frame['symbol'].nunique()} symbols) -> {PortfolioStore(url).url}")
    store = PortfolioStore(url)
    if store.schema_version() != 0:
        raise SystemExit(f"{store.url} already holds a portfolio store: give an empty database")
    store.migrate()
    try:
        return _bench_store(label, store, url, frame, rng)
    finally:
        from airflow_provider_portfolio.store.schema import metadata

        metadata.drop_all(store.engine)  # leave the database as empty as it was given
        store.dispose()


def _bench_store(label: str, store, url: str, frame, rng) -> dict[str, float]:
    import numpy as np
    import pandas as pd

    n = len(frame)

    symbols = frame["symbol"].unique()
    parts = [frame[frame["symbol"].isin(symbols[i : i + CHUNK_SYMBOLS])] for i in range(0, len(symbols), CHUNK_SYMBOLS)]
    start = time.perf_counter()
    written = sum(store.upsert_bars(p) for p in parts)
    load = time.perf_counter() - start

    start = time.perf_counter()
    new = rows_after_latest(store, frame)
    rerun_written = store.upsert_bars(new)
    rerun = time.perf_counter() - start

    start = time.perf_counter()
    reupsert_written = store.upsert_bars(frame)
    reupsert = time.perf_counter() - start

    pick = sorted(rng.choice(symbols, size=min(25, len(symbols)), replace=False))
    start = time.perf_counter()
    back = store.read_bars(list(pick), "1Day")
    read = time.perf_counter() - start
    expected = frame[frame["symbol"].isin(pick)].reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(back, expected)
        same = True
    except AssertionError as err:
        same, why = False, str(err).splitlines()[:3]
        print("   ", why)
    count = store.count_bars()
    staged = _staged_first_load(store, parts) if label == "PostgreSQL" else None

    # New keys (another timeframe) in the same table, so every row of the loop is a real insert.
    sample = frame.iloc[np.sort(rng.choice(n, size=NAIVE_ROWS, replace=False))].assign(timeframe="1Hour")
    naive_s, naive_n = naive_loop(store, sample)
    store.dispose()

    if label == "PostgreSQL" and n > PG_TO_SQL_SAMPLE:
        to_sql_frame = frame.iloc[np.sort(rng.choice(n, size=PG_TO_SQL_SAMPLE, replace=False))]
    else:
        to_sql_frame = frame
    to_sql_s = to_sql_baseline(url, to_sql_frame)

    ours = n / load
    to_sql_rate = len(to_sql_frame) / to_sql_s
    naive_rate = naive_n / naive_s
    sampled = "" if len(to_sql_frame) == n else f" (a {len(to_sql_frame):,}-row sample, extrapolated)"
    print(f"  first load, upsert_bars x{len(parts)} calls of {CHUNK_SYMBOLS} symbols: {load:7.2f} s  "
          f"{ours:>12,.0f} rows/s  ({written:,} written)")
    if staged is not None:
        print(f"  same first load through the staged upsert:    {staged[0]:7.2f} s  {n / staged[0]:>12,.0f} rows/s  "
              f"({staged[1]:,} written)  the direct COPY is {staged[0] / load:,.1f}x faster")
    print(f"  no-new re-run (latest_bar_ts + filter + upsert): {rerun:7.3f} s  ({len(new)} rows, "
          f"{rerun_written} written)  {load / rerun:,.0f}x faster than the first load")
    print(f"  full identical re-upsert:                     {reupsert:7.2f} s  {n / reupsert:>12,.0f} rows/s  "
          f"({reupsert_written} changed)")
    print(f"  read_bars of 25 symbols ({len(back):,} rows):          {read:7.3f} s")
    print(f"  baseline to_sql(append, method=None){sampled}: {len(to_sql_frame) / to_sql_rate:6.2f} s  "
          f"{to_sql_rate:>12,.0f} rows/s  -> full load ~{n / to_sql_rate:,.1f} s;  ours is {ours / to_sql_rate:,.1f}x")
    print(f"  baseline row loop, commit per row ({naive_n:,} rows): {naive_s:6.2f} s  {naive_rate:>12,.0f} rows/s  "
          f"-> full load ~{n / naive_rate / 60:,.1f} min;  ours is {ours / naive_rate:,.0f}x")
    check(written == n and count == n, f"{label}: {count:,} rows stored after the load (expected {n:,})")
    if staged is not None:
        check(staged[1] == staged[2] == n, f"{label}: the staged first load stored {staged[2]:,} rows (expected {n:,})")
    check(same, f"{label}: 25 random symbols read back equal the input exactly")
    check(len(new) == 0 and rerun_written == 0, f"{label}: the no-new re-run finds and writes nothing")
    check(reupsert_written == 0, f"{label}: the identical re-upsert reports 0 changed")
    check(load < LOAD_TARGET_S, f"{label}: first load {load:.2f} s < {LOAD_TARGET_S:g} s")
    check(load / rerun >= RERUN_TARGET_RATIO,
          f"{label}: no-new re-run {load / rerun:,.0f}x faster than the first load (>= {RERUN_TARGET_RATIO:g}x)")
    return {"load": load, "rerun": rerun, "reupsert": reupsert, "to_sql_rate": to_sql_rate, "naive_rate": naive_rate}


def _staged_first_load(store, parts) -> tuple[float, int, int]:
    """The first load again, into the emptied table, forced through the staged upsert: (seconds, written, stored).

    Runs after the main measurements; the table ends holding the same rows as before.
    """
    from sqlalchemy import text

    from airflow_provider_portfolio.store import bars

    with store.engine.begin() as conn:
        conn.execute(text("TRUNCATE bars"))
    probe = bars._PG_PROBE
    # "a stored key may conflict" for every batch: the staged path
    bars._PG_PROBE = ("SELECT %s::text[] IS NULL OR %s::text[] IS NULL OR %s::bigint[] IS NULL "
                      "OR %s::bigint[] IS NULL OR TRUE")
    try:
        start = time.perf_counter()
        written = sum(store.upsert_bars(p) for p in parts)
        elapsed = time.perf_counter() - start
    finally:
        bars._PG_PROBE = probe
    return elapsed, written, store.count_bars()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", help="an empty PostgreSQL database (default: start a private server)")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2520)
    args = parser.parse_args()

    import numpy as np

    from tests.pgserver import INSTALL_HINT, PostgresServer, find_bindir

    started = time.perf_counter()
    frame = make_frame(args.symbols, args.bars)
    print(f"data: {len(frame):,} rows generated in {time.perf_counter() - started:.1f} s")
    rng = np.random.default_rng(7)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        results["SQLite"] = bench_dialect("SQLite", f"sqlite:///{tmp}/store.db", frame, rng)

    server = None
    if args.pg_url:
        pg_url = args.pg_url
    elif find_bindir() is not None:
        server = PostgresServer(database="bench", durable=True).start()
        pg_url = server.url
    else:
        pg_url = None
        print(f"\n== PostgreSQL: cannot run: {INSTALL_HINT}")
        FAILURES.append("PostgreSQL benchmark could not run (make system-deps installs the server)")
    try:
        if pg_url:
            results["PostgreSQL"] = bench_dialect("PostgreSQL", pg_url, frame, rng)
    finally:
        if server is not None:
            server.stop()

    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
