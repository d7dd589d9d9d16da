"""Store housekeeping: retention per table on SQLite and PostgreSQL (rows on both sides of the cut-off, the trading
ledger kept unless allowed and then never an open order or what an open position depends on); bad settings and an
unwritable backup folder refused before anything changes; online backups (consistent while another connection
writes, rotated, checked); a corrupt SQLite store (damaged pages, or a file that is not a database) restored from its
last good backup with the corrupt file kept aside; VACUUM/ANALYZE."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, insert, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore, maintenance, schema
from airflow_provider_portfolio.store.maintenance import (
    RETENTION_TABLES,
    apply_retention,
    backup_store,
    housekeep,
    last_good_backup,
    list_backups,
    resolve_retention,
    restore_store,
    vacuum_store,
)
from tests.store.helpers import make_bars

UTC = timezone.utc
NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
LEDGER = ("trading_decisions", "fills", "orders", "equity_curve", "positions", "accounts")
A, B, C = "simulated:a", "simulated:b", "simulated:c"


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


# -- rows on both sides of the cut-offs ---------------------------------------------------------------------
def _forecast(run_id: str, step: int, created: datetime) -> dict:
    return {"run_id": run_id, "model": "ssa", "symbol": "AAA", "timeframe": "1Day", "step": step, "asof": created,
            "target_ts": created + timedelta(days=step), "target": "log_close", "point": 4.6, "lower": 4.5,
            "upper": 4.7, "level": 0.9, "variance": None, "backend": "numpy", "device": "cpu", "created_at": created}


def _evaluation(run_id: str, model: str, created: datetime) -> dict:
    return {"run_id": run_id, "model": model, "symbol": "AAA", "timeframe": "1Day", "asof": created, "horizon": 5,
            "origins": 20, "rmse": 0.01, "mae": 0.008, "directional_accuracy": 0.5, "coverage": 0.9,
            "baseline": "last_value", "baseline_rmse": 0.02, "skill": 0.5, "label": "healthy", "healthy": True,
            "weight": 1.0, "backend": "numpy", "device": "cpu", "created_at": created}


def _report(days: float) -> dict:
    return {"kind": "monitoring", "ts": ago(days), "dag_id": "portfolio_monitoring", "run_id": f"r{days}",
            "level": "GREEN", "checks": "{}", "summary": "ok", "created_at": ago(days)}


def _order(account: str, coid: str, symbol: str, status: str, days: float) -> dict:
    return {"account": account, "client_order_id": coid, "dag_id": "trader", "run_id": "r", "symbol": symbol,
            "side": "buy", "qty": 10.0, "ref_price": 100.0, "bar_ts": ago(days), "status": status,
            "broker_order_id": None, "filled_qty": None, "filled_avg_price": None, "reason": None,
            "created_at": ago(days), "updated_at": ago(days)}


def _fill(account: str, coid: str, symbol: str, days: float) -> dict:
    return {"account": account, "client_order_id": coid, "symbol": symbol, "side": "buy", "qty": 10.0,
            "price": 100.0, "commission": 0.1, "bar_ts": ago(days), "filled_at": ago(days)}


def _decision(symbol: str, days: float, coid: str | None, account: str = A) -> dict:
    return {"dag_id": "trader", "symbol": symbol, "timeframe": "1Day", "bar_ts": ago(days), "run_key": "",
            "run_id": "r", "account": account, "action": "buy", "score": 0.5, "confidence": 0.5, "price": 100.0,
            "current_qty": 0.0, "target_qty": 10.0, "order_qty": 10.0, "reason": "test", "error": None,
            "signals": "{}", "approved": True, "risk_rule": None, "risk_reason": None, "client_order_id": coid,
            "created_at": ago(days), "updated_at": ago(days)}


def _equity(account: str, days: float) -> dict:
    return {"account": account, "ts": ago(days), "cash": 1.0, "positions_value": 0.0, "equity": 1.0, "run_id": "r",
            "created_at": ago(days)}


def _position(account: str, symbol: str, qty: float, days: float) -> dict:
    return {"account": account, "symbol": symbol, "qty": qty, "avg_price": 100.0, "mark_price": None,
            "mark_ts": None, "updated_at": ago(days)}


def _account(account: str, days: float) -> dict:
    return {"account": account, "cash": 1000.0, "initial_cash": 1000.0, "created_at": ago(days),
            "updated_at": ago(days)}


ROWS = {
    # bars by their own time: 1, 500 and 800 days old
    schema.bars: [{"symbol": "AAA", "timeframe": "1Day", "ts": ago(d), "open": 1.0, "high": 1.0, "low": 1.0,
                   "close": 1.0, "volume": 1.0, "source": "test"} for d in (1, 500, 800)],
    # 5 rows 200 days old, 3 exactly 180 days old (kept: strictly older goes), 4 rows 10 days old
    schema.forecasts: [*(_forecast("old", s, ago(200)) for s in range(1, 6)),
                       *(_forecast("edge", s, ago(180)) for s in range(1, 4)),
                       *(_forecast("new", s, ago(10)) for s in range(1, 5))],
    schema.model_evaluations: [_evaluation("old", "ssa", ago(181)), _evaluation("old", "garch", ago(181)),
                               _evaluation("new", "ssa", ago(179))],
    schema.health_reports: [_report(d) for d in (91, 95, 200, 1, 89)],
    schema.accounts: [_account(A, 400), _account(B, 500), _account(C, 400)],
    # A holds AAA (open); BBB is flat and old, CCC flat and recent
    schema.positions: [_position(A, "AAA", 10.0, 400), _position(A, "BBB", 0.0, 400), _position(A, "CCC", 0.0, 10)],
    schema.orders: [_order(A, "o1", "AAA", "filled", 400),  # kept: AAA is an open position
                    _order(A, "o2", "BBB", "filled", 400),  # goes
                    _order(A, "o3", "BBB", "canceled", 400),  # goes
                    _order(A, "o4", "BBB", "pending_submit", 400),  # kept: not final
                    _order(A, "o5", "BBB", "accepted", 400),  # kept: not final
                    _order(A, "o6", "BBB", "filled", 10),  # kept: recent
                    _order(A, "o7", "BBB", "partially_filled", 400),  # kept: not final
                    _order(C, "o8", "CCC", "new", 10)],  # kept: recent and open (C keeps its account)
    schema.fills: [_fill(A, "o1", "AAA", 400), _fill(A, "o2", "BBB", 400), _fill(A, "o6", "BBB", 10),
                   _fill(A, "o7", "BBB", 400)],  # only o2's goes
    schema.trading_decisions: [_decision("AAA", 400, "o1"),  # kept: open position
                               _decision("BBB", 400, "o2"),  # goes
                               _decision("BBB", 401, "o5"),  # kept: its order is open
                               _decision("BBB", 402, None),  # goes
                               _decision("BBB", 10, None)],  # kept: recent
    # A: 400 and 399 days old go, its latest (1 day) stays; B's only snapshot is its latest: kept
    schema.equity_curve: [_equity(A, 400), _equity(A, 399), _equity(A, 1), _equity(B, 500)],
}
BEFORE = {"bars": 3, "forecasts": 12, "model_evaluations": 3, "health_reports": 5, "accounts": 3, "positions": 3,
          "orders": 8, "fills": 4, "trading_decisions": 5, "equity_curve": 4}


def fill_tables(store: PortfolioStore) -> None:
    with store.database.write("fill the test tables") as conn:
        for table, rows in ROWS.items():
            conn.execute(insert(table), rows)


def counts(store: PortfolioStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(schema.metadata.tables[name])).scalar()
                for name in BEFORE}


def keys(store: PortfolioStore, table, *columns: str) -> list[tuple]:
    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(*(table.c[c] for c in columns))).all())


@pytest.fixture
def filled(migrated) -> PortfolioStore:
    """A migrated store (each dialect) with :data:`ROWS`."""
    fill_tables(migrated)
    assert counts(migrated) == BEFORE
    return migrated


@pytest.fixture
def sqlite_filled(tmp_path) -> PortfolioStore:
    """A migrated SQLite store with :data:`ROWS` (for what does not depend on the dialect)."""
    store = PortfolioStore.for_sqlite_file(tmp_path / "filled.db")
    store.migrate()
    fill_tables(store)
    yield store
    store.dispose()


@pytest.fixture
def db(tmp_path) -> Path:
    """A migrated SQLite store's file, with 20 symbols x 1000 daily bars (many pages)."""
    path = tmp_path / "desk.db"
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    store.upsert_bars(make_bars([f"S{i:02d}" for i in range(20)], 1000))
    store.dispose()
    return path


@pytest.fixture
def clock(monkeypatch) -> list[datetime]:
    """The instants backups are stamped with: one minute apart, from 2026-06-30 03:30 UTC."""
    instants = [datetime(2026, 6, 30, 3, 30, tzinfo=UTC) + timedelta(minutes=k) for k in range(50)]
    used: list[datetime] = []

    def now() -> datetime:
        used.append(instants[len(used)])
        return used[-1]

    monkeypatch.setattr(maintenance, "_now", now)
    return used


def bar_count(path: Path) -> int:
    """Bars read with plain sqlite3, not the code under test."""
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT count(*) FROM bars").fetchone()[0]
    finally:
        con.close()


def damage(path: Path, pages: int = 3) -> bytes:
    """Overwrite ``pages`` pages in the middle of the file with zeros; returns the damaged bytes."""
    size = path.stat().st_size
    assert not path.with_name(path.name + "-wal").exists() or path.with_name(path.name + "-wal").stat().st_size == 0
    with open(path, "r+b") as f:
        f.seek((size // 4096 // 2) * 4096)
        f.write(b"\x00" * 4096 * pages)
    return path.read_bytes()


# -- the registry and the settings ---------------------------------------------------------------------------
def test_defaults_prune_forecasts_evaluations_and_reports_and_keep_bars_and_the_ledger():
    assert resolve_retention() == {"forecasts": 180, "model_evaluations": 180, "health_reports": 90,
                                   "signal_validations": 180, "opportunities": 180, "study_points": 365,
                                   "studies": 365}
    assert [t.name for t in RETENTION_TABLES if t.kept] == list(LEDGER)
    assert resolve_retention({"bars": 730, "forecasts": None}) == {
        "bars": 730, "model_evaluations": 180, "health_reports": 90, "signal_validations": 180,
        "opportunities": 180, "study_points": 365, "studies": 365}
    assert resolve_retention({"orders": 365}, allow_kept_tables=["orders"])["orders"] == 365


@pytest.mark.parametrize(("retention", "allow", "message"), [
    ({"forecasts": 0}, (), "retention['forecasts'] must be a whole number of days from 1"),
    ({"forecasts": -5}, (), "got -5"),
    ({"forecasts": 1.5}, (), "got 1.5"),
    ({"forecasts": True}, (), "got True"),
    ({"candles": 30}, (), "unknown table 'candles'"),
    ({"orders": 30}, (), "'orders' is part of the trading ledger"),
    ({"orders": 30}, ["forecasts"], "allow_kept_tables: 'forecasts' is not a kept table"),
    ([("forecasts", 30)], (), "must be a mapping"),
])
def test_bad_retention_changes_nothing(sqlite_filled, tmp_path, retention, allow, message):
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        housekeep(sqlite_filled, retention=retention, allow_kept_tables=allow, backup_dir=tmp_path / "backups",
                  now=NOW)
    assert counts(sqlite_filled) == BEFORE
    assert not (tmp_path / "backups").exists()


#: The tables of migrations 5 (validations, studies) and 6 (opportunities): empty in the filled store, pruned by
#: default, nothing to delete.
NOTHING_NEW = {"signal_validations": 0, "opportunities": 0, "study_points": 0, "studies": 0}


# -- retention ------------------------------------------------------------------------------------------------
def test_default_retention_deletes_exactly_the_old_rows(filled):
    done = apply_retention(filled, now=NOW, batch_rows=2)  # small batches: several transactions per table
    assert {name: entry["deleted"] for name, entry in done.items()} == {
        "forecasts": 5, "model_evaluations": 2, "health_reports": 3, **NOTHING_NEW}
    assert done["forecasts"]["cutoff"] == "2026-01-01T12:00:00+00:00"
    assert counts(filled) == {**BEFORE, "forecasts": 7, "model_evaluations": 1, "health_reports": 2}
    assert keys(filled, schema.forecasts, "run_id", "step") == [
        ("edge", 1), ("edge", 2), ("edge", 3), ("new", 1), ("new", 2), ("new", 3), ("new", 4)]
    assert keys(filled, schema.health_reports, "run_id") == [("r1",), ("r89",)]


def test_a_dry_run_counts_and_deletes_nothing(filled):
    done = apply_retention(filled, {"bars": 730}, now=NOW, dry_run=True)
    assert {name: entry["would_delete"] for name, entry in done.items()} == {
        "bars": 1, "forecasts": 5, "model_evaluations": 2, "health_reports": 3, **NOTHING_NEW}
    assert counts(filled) == BEFORE


def test_the_ledger_is_pruned_only_when_allowed_and_never_what_is_open(filled):
    ledger = dict.fromkeys(LEDGER, 365)
    done = apply_retention(filled, {**ledger, "forecasts": None, "model_evaluations": None,
                                    "health_reports": None, "bars": 730}, allow_kept_tables=LEDGER, now=NOW)
    assert {name: entry["deleted"] for name, entry in done.items()} == {
        "bars": 1, "trading_decisions": 2, "fills": 1, "orders": 2, "equity_curve": 2, "positions": 1, "accounts": 1,
        **NOTHING_NEW}
    assert counts(filled) == {**BEFORE, "bars": 2, "trading_decisions": 3, "fills": 3, "orders": 6,
                              "equity_curve": 2, "positions": 2, "accounts": 2}
    assert keys(filled, schema.orders, "client_order_id", "status") == [
        ("o1", "filled"), ("o4", "pending_submit"), ("o5", "accepted"), ("o6", "filled"),
        ("o7", "partially_filled"), ("o8", "new")]
    assert keys(filled, schema.fills, "client_order_id") == [("o1",), ("o6",), ("o7",)]
    assert keys(filled, schema.trading_decisions, "symbol", "bar_ts") == [("AAA", ago(400)), ("BBB", ago(401)),
                                                                          ("BBB", ago(10))]
    assert keys(filled, schema.equity_curve, "account", "ts") == [(A, ago(1)), (B, ago(500))]
    assert keys(filled, schema.positions, "symbol", "qty") == [("AAA", 10.0), ("CCC", 0.0)]
    assert keys(filled, schema.accounts, "account") == [(A,), (C,)]


def test_a_ledger_table_named_alone_prunes_only_itself(filled):
    done = apply_retention(filled, {"orders": 365}, allow_kept_tables="orders", now=NOW)
    assert done["orders"]["deleted"] == 2
    assert counts(filled) == {**BEFORE, "orders": 6, "forecasts": 7, "model_evaluations": 1, "health_reports": 2}


def test_a_table_the_database_lacks_is_skipped(tmp_path):
    store = PortfolioStore.for_sqlite_file(tmp_path / "empty.db")
    done = apply_retention(store, now=NOW)
    assert done["forecasts"] == {"days": 180, "cutoff": "2026-01-01T12:00:00+00:00", "absent": True}
    store.dispose()


# -- backups --------------------------------------------------------------------------------------------------
def test_a_backup_is_checked_named_by_its_instant_and_rotated(db, clock):
    store = PortfolioStore.for_sqlite_file(db)
    made = [backup_store(store, keep=2) for _ in range(3)]
    store.dispose()
    folder = db.with_name("desk.db.backups")
    assert [Path(m.path).name for m in made] == ["desk-20260630T033000.000000Z.db", "desk-20260630T033100.000000Z.db",
                                                 "desk-20260630T033200.000000Z.db"]
    assert (made[0].integrity, made[2].kept, made[2].removed) == ("ok", 2, (made[0].path,))
    assert sorted(p.name for p in folder.iterdir()) == ["desk-20260630T033100.000000Z.db",
                                                        "desk-20260630T033200.000000Z.db"]
    assert list_backups(db) == [Path(made[2].path), Path(made[1].path)]
    assert bar_count(Path(made[2].path)) == 20_000
    with sqlite3.connect(made[2].path) as con:  # one self-contained file
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_backup_taken_while_another_connection_writes_is_consistent(db):
    store = PortfolioStore.for_sqlite_file(db)
    writer = PortfolioStore.for_sqlite_file(db)
    writer.upsert_bars(make_bars(["W1"], 200, seed=1))  # committed, still in the WAL
    assert db.with_name("desk.db-wal").stat().st_size > 0
    with writer.database.write("hold a write transaction open") as conn:
        conn.execute(insert(schema.bars), make_bars(["W2"], 300, seed=2).to_dict("records"))
        made = backup_store(store)  # not blocked by the open write
    writer.dispose()
    store.dispose()
    assert made.integrity == "ok"
    assert bar_count(Path(made.path)) == 20_200  # the committed WAL rows, not the uncommitted ones
    assert bar_count(db) == 20_500


def test_backups_during_a_stream_of_writes_hold_whole_transactions(db, clock):
    store = PortfolioStore.for_sqlite_file(db)
    writer = PortfolioStore.for_sqlite_file(db)
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        k = 0
        while not stop.is_set() and k < 400:
            writer.upsert_bars(make_bars([f"T{k:03d}"], 50, seed=k))  # one transaction of 50 bars
            k += 1
            written.append(k)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        made = [backup_store(store, keep=10) for _ in range(3)]
    finally:
        stop.set()
        thread.join(60)
    writer.dispose()
    store.dispose()
    for m in made:
        con = sqlite3.connect(m.path)
        per_symbol = dict(con.execute("SELECT symbol, count(*) FROM bars WHERE symbol LIKE 'T%' GROUP BY symbol"))
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        assert set(per_symbol.values()) <= {50}  # never part of a transaction
    assert written and bar_count(db) == 20_000 + 50 * written[-1]


def test_an_unwritable_backup_folder_changes_nothing(sqlite_filled, tmp_path):
    filled = sqlite_filled
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InvalidInputError, match="backup_dir '.*a-file/backups' cannot be written"):
        housekeep(filled, backup_dir=blocker / "backups", now=NOW)
    assert counts(filled) == BEFORE  # retention did not run
    with pytest.raises(InvalidInputError, match="cannot be written"):
        backup_store(filled, backup_dir=blocker / "backups")
    assert blocker.read_text() == "not a folder"


def test_housekeeping_on_each_dialect(filled, tmp_path):
    report = housekeep(filled, backup_dir=tmp_path / "backups", now=NOW).to_dict()
    assert report["integrity"]["ok"] is True and report["restored"] is False
    assert report["deleted"] == 10
    assert {n: e["deleted"] for n, e in report["retention"].items()} == {
        "forecasts": 5, "model_evaluations": 2, "health_reports": 3, **NOTHING_NEW}
    if filled.dialect == "postgresql":
        assert report["backup"]["path"] is None and "pg_dump" in report["backup"]["skipped"]
        assert report["vacuum"]["vacuumed"] is True
        assert not (tmp_path / "backups").exists()
    else:
        assert Path(report["backup"]["path"]).parent == tmp_path / "backups"
        assert bar_count(Path(report["backup"]["path"])) == 3


# -- corruption and restore ------------------------------------------------------------------------------------
def test_damaged_pages_are_detected_and_restored_from_the_last_backup(db, clock):
    store = PortfolioStore.for_sqlite_file(db)
    backup = backup_store(store)
    store.upsert_bars(make_bars(["LATE"], 500))  # after the backup: lost by the restore
    store.dispose()
    damaged = damage(db)

    report = housekeep(store, now=NOW)
    store.dispose()
    assert report.integrity["corrupt"] is True and report.restored is True
    assert report.restore["backup"] == backup.path
    aside = Path(report.restore["moved_aside"])
    assert aside.name == "desk.db.corrupt-20260630T033100.000000Z" and aside.read_bytes() == damaged
    assert bar_count(db) == 20_000
    assert report.integrity["after_restore"]["corrupt"] is False
    assert Path(report.backup["path"]).name == "desk-20260630T033200.000000Z.db"  # a new backup of the restored store


def test_a_file_that_is_not_a_database_is_restored(db, clock):
    store = PortfolioStore.for_sqlite_file(db)
    backup_store(store)
    store.dispose()
    db.write_bytes(b"this is not a database\n" * 1000)

    report = housekeep(store, vacuum=False, now=NOW).to_dict()
    store.dispose()
    assert report["restored"] is True and "not a database" in report["integrity"]["error"]
    assert Path(report["restore"]["moved_aside"]).read_bytes() == b"this is not a database\n" * 1000
    assert bar_count(db) == 20_000


def test_a_corrupt_store_without_a_good_backup_is_left_as_it_is(db, clock):
    store = PortfolioStore.for_sqlite_file(db)
    bad = backup_store(store)
    store.dispose()
    Path(bad.path).write_bytes(b"rotten")  # the only backup has rotted
    damaged = damage(db)
    with pytest.raises(StoreError, match="is corrupt .* no good backup in .*desk.db.backups: nothing was changed"):
        housekeep(store, now=NOW)
    store.dispose()
    assert db.read_bytes() == damaged
    assert sorted(p.name for p in db.parent.iterdir()) == ["desk.db", "desk.db.backups"]


def test_the_last_good_backup_skips_a_newer_one_that_rotted(db, clock):
    store = PortfolioStore.for_sqlite_file(db)
    good = backup_store(store)
    store.upsert_bars(make_bars(["LATE"], 500))
    newer = backup_store(store)
    store.dispose()
    damage(Path(newer.path))
    assert last_good_backup(db) == Path(good.path)
    db.write_bytes(b"\x00" * 8192)
    result = restore_store(PortfolioStore.for_sqlite_file(db))
    assert (result.backup, bar_count(db)) == (good.path, 20_000)


def test_a_dry_run_names_the_backup_and_restores_nothing(db, clock):
    store = PortfolioStore.for_sqlite_file(db)
    made = backup_store(store)
    store.dispose()
    damaged = damage(db)
    report = housekeep(store, dry_run=True, now=NOW)
    store.dispose()
    assert (report.restored, report.restore["backup"]) == (False, made.path)
    assert db.read_bytes() == damaged


def test_a_sound_store_is_restored_only_with_force_and_never_from_a_stale_wal(db, tmp_path, clock):
    store = PortfolioStore.for_sqlite_file(db)
    made = backup_store(store)
    store.dispose()
    with pytest.raises(InvalidInputError, match="is sound .* refusing to overwrite it .* pass force"):
        restore_store(store)
    assert list(db.parent.glob("desk.db.*-*")) == []

    # A store with committed rows in its WAL: copy the file and its WAL while a writer holds it open.
    crashed = tmp_path / "crashed.db"
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("DELETE FROM bars WHERE symbol = 'S00'")
    writer.commit()
    shutil.copyfile(db, crashed)
    shutil.copyfile(db.with_name("desk.db-wal"), tmp_path / "crashed.db-wal")
    writer.close()

    result = restore_store(PortfolioStore.for_sqlite_file(crashed), backup=made.path, force=True)
    assert (result.reason, Path(result.moved_aside).name) == ("forced", "crashed.db.replaced-20260630T033100.000000Z")
    assert bar_count(crashed) == 20_000
    assert bar_count(Path(result.moved_aside)) == 19_000  # the replaced file kept its committed WAL rows


def test_a_stale_wal_goes_aside_with_the_file_and_is_never_replayed_into_the_restored_one(db, tmp_path, clock):
    store = PortfolioStore.for_sqlite_file(db)
    made = backup_store(store)
    store.dispose()
    crashed = tmp_path / "crashed.db"  # a file and its WAL as a writer that died left them
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("DELETE FROM bars WHERE symbol = 'S00'")
    writer.commit()
    shutil.copyfile(db, crashed)
    shutil.copyfile(db.with_name("desk.db-wal"), tmp_path / "crashed.db-wal")
    writer.close()

    aside = maintenance._replace_file(PortfolioStore.for_sqlite_file(crashed), crashed, Path(made.path), "corrupt")
    assert sorted(p.name for p in tmp_path.glob("crashed.db*")) == [
        "crashed.db", "crashed.db.corrupt-20260630T033100.000000Z", "crashed.db.corrupt-20260630T033100.000000Z-wal"]
    assert bar_count(crashed) == 20_000  # a WAL left beside it would have deleted S00's 1000 bars
    assert bar_count(Path(aside)) == 19_000


def test_restore_refuses_postgresql_and_a_backup_that_is_not_sound(tmp_path):
    with pytest.raises(InvalidInputError, match="only a SQLite store is restored"):
        restore_store(PortfolioStore("postgresql://portfolio@127.0.0.1:1/none"))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"junk")
    with pytest.raises(InvalidInputError, match="junk.db' cannot be restored: not a SQLite database"):
        restore_store(PortfolioStore.for_sqlite_file(tmp_path / "missing.db"), backup=junk)
    assert not (tmp_path / "missing.db").exists()


# -- VACUUM / ANALYZE --------------------------------------------------------------------------------------------
def test_vacuum_gives_back_the_space_retention_freed(db):
    store = PortfolioStore.for_sqlite_file(db)
    assert vacuum_store(store).vacuumed is False  # nothing free yet
    # make_bars starts on 2024-01-01: 1000 daily bars end 2026-09-26; keep 60 days before NOW
    done = apply_retention(store, {"bars": 60}, now=datetime(2026, 9, 27, tzinfo=UTC))
    assert done["bars"]["deleted"] == 20 * 940
    before = db.stat().st_size
    result = vacuum_store(store)
    store.dispose()
    assert result.analyzed and result.vacuumed and result.message.startswith("ANALYZE; VACUUM freed")
    assert db.stat().st_size < before / 4
    assert bar_count(db) == 20 * 60


def test_vacuum_is_skipped_without_room_on_the_disk(db, monkeypatch):
    store = PortfolioStore.for_sqlite_file(db)
    apply_retention(store, {"bars": 60}, now=datetime(2026, 9, 27, tzinfo=UTC))
    monkeypatch.setattr(maintenance.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    result = vacuum_store(store)
    store.dispose()
    assert (result.analyzed, result.vacuumed) == (True, False)
    assert "VACUUM skipped: 1000 bytes free on the store's disk, it needs 2 x" in result.message


@pytest.mark.postgres
def test_postgresql_vacuum_analyzes_the_store_tables(fresh_pg_url):
    store = PortfolioStore(fresh_pg_url)
    store.migrate()
    fill_tables(store)
    reltuples = "SELECT reltuples FROM pg_class WHERE relname = 'forecasts'"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql(reltuples).scalar() == -1  # never analyzed
    result = vacuum_store(store)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql(reltuples).scalar() == 12
    store.dispose()
    assert result.vacuumed and result.message.startswith("VACUUM (ANALYZE) of ")


def test_old_studies_go_with_their_points_but_an_applied_one_stays(migrated):
    store = migrated
    for study_id, days in (("old", 400), ("applied", 500), ("recent", 30)):
        store.save_study("threshold_sweep", study_id, ts=ago(days), params={"grid": 2}, summary={"points": 2},
                         points=[{"point": "p1", "params": {"min_confidence": 0.3}, "metrics": {"sharpe": 1.0}},
                                 {"point": "p2", "params": {"min_confidence": 0.5}, "metrics": {"sharpe": 0.5}}])
    store.mark_study_applied("threshold_sweep", "applied", at=ago(499))
    done = apply_retention(store, now=NOW)
    assert (done["study_points"]["deleted"], done["studies"]["deleted"]) == (2, 1)
    assert keys(store, schema.studies, "study_id") == [("applied",), ("recent",)]
    assert keys(store, schema.study_points, "study_id", "point") == [
        ("applied", "p1"), ("applied", "p2"), ("recent", "p1"), ("recent", "p2")]
