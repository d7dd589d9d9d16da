"""Schema versions and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, inspect, select

from airflow_provider_portfolio.exceptions import StoreError
from airflow_provider_portfolio.store import PortfolioStore, schema
from tests.store.helpers import make_bars, migrate_worker


def test_migrate_from_empty_reaches_latest_and_is_idempotent(store):
    assert store.schema_version() == 0
    assert store.migrate() == schema.latest_version() >= 1
    assert store.migrate() == schema.latest_version()
    assert store.schema_version() == schema.latest_version()
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.schema_version).order_by(schema.schema_version.c.version)).all()
        tables = set(inspect(conn).get_table_names())
    assert [r.version for r in rows] == [m.version for m in schema.MIGRATIONS]  # each applied exactly once
    assert rows[0].description == "create bars" and rows[0].applied_at is not None
    assert {"bars", "schema_version"} <= tables


def test_bars_table_has_the_bar_columns_and_key(migrated):
    with migrated.engine.connect() as conn:
        insp = inspect(conn)
        cols = [c["name"] for c in insp.get_columns("bars")]
        pk = insp.get_pk_constraint("bars")["constrained_columns"]
    assert cols == ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "source"]
    assert pk == ["symbol", "timeframe", "ts"]


def test_a_database_newer_than_the_code_is_refused(migrated):
    with migrated.engine.begin() as conn:
        conn.execute(insert(schema.schema_version).values(version=99, applied_at=datetime.now(timezone.utc),
                                                          description="from the future"))
    assert migrated.schema_version() == 99
    with pytest.raises(StoreError, match=r"schema version 99 is newer than this code knows \(\d+\)"):
        migrated.migrate()


def test_appending_a_migration_upgrades_an_existing_database(migrated, monkeypatch):
    migrated.upsert_bars(make_bars(["AAPL"], 3))

    def create_notes(conn):
        Table("notes", MetaData(), Column("id", Integer, primary_key=True)).create(conn)

    following = schema.latest_version() + 1
    monkeypatch.setattr(schema, "MIGRATIONS",
                        [*schema.MIGRATIONS, schema.Migration(following, "create notes", create_notes)])
    assert migrated.migrate() == following
    assert migrated.migrate() == following
    with migrated.engine.connect() as conn:
        assert inspect(conn).has_table("notes")
    assert migrated.count_bars() == 3  # data survives the upgrade


def test_a_failing_migration_applies_nothing(store, monkeypatch):
    def broken(conn):
        schema._bars_table(MetaData()).create(conn)
        raise RuntimeError("boom")

    monkeypatch.setattr(schema, "MIGRATIONS", [schema.Migration(1, "create bars", broken)])
    with pytest.raises(RuntimeError, match="boom"):
        store.migrate()
    assert store.schema_version() == 0
    with store.engine.connect() as conn:
        assert not inspect(conn).has_table("bars")  # transactional DDL on both dialects


def test_sqlite_connections_use_wal_busy_timeout_and_normal_sync(tmp_path):
    store = PortfolioStore.for_sqlite_file(tmp_path / "deep" / "dir" / "p.db", busy_timeout_s=2.5)
    assert not (tmp_path / "deep").exists()  # constructing does no I/O
    store.migrate()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.dispose()


def test_sqlite_stores_ts_as_epoch_microseconds(tmp_path):
    store = PortfolioStore.for_sqlite_file(tmp_path / "p.db")
    store.migrate()
    store.upsert_bars(make_bars(["AAPL"], 1, start="2024-03-01 14:30:00.000123", timeframe="5Min"))
    raw = sqlite3.connect(tmp_path / "p.db")
    assert raw.execute("SELECT ts, typeof(ts) FROM bars").fetchone() == (1709303400000123, "integer")
    raw.close()


def test_two_processes_migrating_at_once(store_url):
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=migrate_worker, args=(store_url, go, results)) for _ in range(2)]
    for p in procs:
        p.start()
    go.set()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert outcomes == [schema.latest_version()] * 2
    store = PortfolioStore(store_url)
    with store.engine.connect() as conn:
        versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
    store.dispose()
    assert sorted(versions) == [m.version for m in schema.MIGRATIONS]


def test_migrations_are_numbered_in_order():
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, len(schema.MIGRATIONS) + 1))


def test_the_store_never_imports_airflow():
    code = "import sys, airflow_provider_portfolio.store; print(any(m.split('.')[0] == 'airflow' for m in sys.modules))"
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "False"


def test_switching_to_wal_waits_for_a_writer_of_a_new_file(tmp_path):
    # Another process is creating the file in rollback-journal mode and holds its write lock:
    # SQLite refuses `PRAGMA journal_mode = WAL` at once, without the busy handler. The store must
    # wait for the lock like any other busy wait, not fail (two workers migrating a new store raced
    # into this now and then).
    import threading

    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE scratch (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO scratch VALUES (1)")
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    store = PortfolioStore.for_sqlite_file(path, busy_timeout_s=10)
    try:
        assert store.schema_version() == 0
        release.join()
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        check.close()
    finally:
        release.cancel()
        store.dispose()
        other.close()
