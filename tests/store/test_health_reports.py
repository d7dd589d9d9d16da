"""health_reports on SQLite and PostgreSQL: appended once per (kind, ts, run), read back equal, bounded history;
the store's own check (reachable, sound, migrated); the risk verdicts monitoring grades."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store.health import HealthTables, check_store
from airflow_provider_portfolio.store.ledger import TradingLedger

T0 = datetime(2026, 11, 30, 15, 5, tzinfo=timezone.utc)
ACCOUNT = "simulated:desk"


def report(ts: datetime = T0, level: Level = Level.YELLOW, kind: str = "monitoring") -> HealthReport:
    return HealthReport(kind, ts, (
        Check("store_integrity", Level.GREEN, 0, 0, "quick_check ok"),
        Check("freshness", level, 1.0, {"yellow": 1, "red": 2}, "AAPL: 1 bar behind", "AAPL"),
        Check("profit_factor", Level.GREEN, float("inf"), {"yellow": 1.0, "red": 0.75}, "no losing trade", ACCOUNT),
    ))


def _rows(store: PortfolioStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.health_reports)).scalar()


def test_a_report_is_appended_once_per_run_and_read_back_equal(migrated):
    first = report()
    migrated.append_health_report(first.to_dict(), dag_id="portfolio_monitoring", run_id="scheduled__1")
    stored = migrated.latest_health_report("monitoring")
    assert (stored.kind, stored.ts, stored.level, stored.dag_id, stored.run_id) == (
        "monitoring", T0, "YELLOW", "portfolio_monitoring", "scheduled__1")
    assert stored.report == first.to_dict()
    assert HealthReport.from_dict(stored.report).to_dict() == first.to_dict()
    assert stored.report["checks"][2]["value"] is None  # an infinite profit factor is null in JSON
    assert stored.summary == "monitoring YELLOW: YELLOW freshness[AAPL]: AAPL: 1 bar behind"

    # the same run again at the same instant (a retried task): one row, the retry's report
    retry = report(level=Level.RED)
    migrated.append_health_report(retry.to_dict(), dag_id="portfolio_monitoring", run_id="scheduled__1")
    assert _rows(migrated) == 1
    assert migrated.latest_health_report("monitoring").report == retry.to_dict()
    # another run (or another DAG) at the same instant keeps its own row; no run at all is a run too
    migrated.append_health_report(first.to_dict(), dag_id="portfolio_master", run_id="scheduled__1")
    migrated.append_health_report(first.to_dict())
    migrated.append_health_report(first.to_dict())
    assert _rows(migrated) == 3
    assert {(r.dag_id, r.run_id) for r in migrated.health_history("monitoring")} == {
        ("portfolio_monitoring", "scheduled__1"), ("portfolio_master", "scheduled__1"), (None, None)}


def test_history_is_newest_first_bounded_and_windowed(migrated):
    tables = HealthTables(migrated.database)
    for hours, level in ((0, Level.GREEN), (1, Level.YELLOW), (2, Level.RED)):
        tables.append(report(T0 + timedelta(hours=hours), level).to_dict(), run_id=f"r{hours}")
    tables.append(report(T0 + timedelta(hours=5), kind="environment").to_dict())
    assert [r.level for r in tables.history("monitoring")] == ["RED", "YELLOW", "GREEN"]
    assert [r.run_id for r in tables.history("monitoring", limit=2)] == ["r2", "r1"]
    assert [r.run_id for r in tables.history("monitoring", T0 + timedelta(hours=1))] == ["r2", "r1"]
    assert [r.run_id for r in tables.history("monitoring", until=T0 + timedelta(minutes=90))] == ["r1", "r0"]
    assert tables.latest("environment").ts == T0 + timedelta(hours=5)
    assert tables.latest("monitoring").run_id == "r2"
    assert tables.latest("monitoring", until=T0 + timedelta(minutes=30)).run_id == "r0"
    assert tables.latest("monitoring", since=T0 + timedelta(hours=3)) is None
    for limit in (0, 10_001, 2.5, True):
        with pytest.raises(InvalidInputError, match="limit must be a whole number"):
            tables.history("monitoring", limit=limit)
    with pytest.raises(InvalidInputError, match="kind must be one of"):
        tables.latest("hourly")


def _bad(change: dict) -> dict:
    return {**report().to_dict(), **change}


@pytest.mark.parametrize("bad, match", [
    ({"kind": "hourly"}, "kind is one of"),
    ({"level": "AMBER"}, "level is one of"),
    ({"level": "GREEN"}, r"level must be the worst of its checks' \(YELLOW\)"),
    ({"ts": "yesterday"}, "ts must be an ISO instant"),
    ({"ts": "2026-11-30T15:05:00"}, "timezone-aware"),
    ({"checks": [{"name": "freshness"}]}, "checks must be a list of dicts"),
    ({"checks": [{"name": "x", "level": "GREEN", "value": float("nan")}], "level": "GREEN"}, "plain JSON"),
    ({"checks": [{"name": "x", "level": "GREEN", "value": object()}], "level": "GREEN"}, "plain JSON"),
])
def test_a_malformed_report_is_refused_and_nothing_written(migrated, bad, match):
    with pytest.raises(InvalidInputError, match=match):
        migrated.append_health_report(_bad(bad))
    with pytest.raises(InvalidInputError, match="needs the keys"):
        migrated.append_health_report({"kind": "monitoring"})
    with pytest.raises(InvalidInputError, match="run_id must be text"):
        migrated.append_health_report(report().to_dict(), run_id=7)
    assert _rows(migrated) == 0


def test_a_store_before_migration_4(store, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m.version <= 3])
    assert store.migrate() == 3
    assert store.latest_health_report("monitoring") is None and store.health_history("monitoring") == []
    with pytest.raises(StoreError, match=r"no health_reports table \(schema version 3\); call migrate\(\) first"):
        store.append_health_report(report().to_dict())
    found = store.check_store()
    assert (found.reachable, found.version, found.latest, found.ok) == (True, 3, 3, True)
    monkeypatch.undo()
    found = store.check_store()
    assert (found.version, found.latest, found.ok) == (3, schema.latest_version(), False)
    assert store.migrate() == schema.latest_version() and store.check_store().ok


# -- the store's own check ------------------------------------------------------------------------------------
def test_check_store_on_each_dialect(migrated):
    found = migrated.check_store()
    assert (found.reachable, found.problems, found.version, found.error) == (True, (), schema.latest_version(), None)
    assert found.ok and found.elapsed_s >= 0
    if migrated.dialect == "sqlite":
        assert found.check == "quick_check"
        assert migrated.check_store(full=True).check == "integrity_check"
    else:
        assert found.check == "SELECT 1"


def test_a_file_that_is_not_a_database_is_unreachable(tmp_path):
    path = tmp_path / "portfolio.db"
    path.write_bytes(b"this is not sqlite\n" * 300)
    found = check_store(PortfolioStore.for_sqlite_file(path).database)
    assert (found.reachable, found.version, found.ok) == (False, None, False)
    assert "not a database" in found.error


def test_a_corrupt_sqlite_page_is_a_problem(tmp_path):
    import sqlite3

    path = tmp_path / "corrupt.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA page_size = 4096")
    raw.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    raw.execute("CREATE INDEX ix_t_v ON t (v)")
    raw.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"value {i:06d}" * 4) for i in range(3000)])
    raw.commit()
    raw.close()
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    page = pages - 2  # an index or table leaf page near the end: rewritten with noise
    data[page * 4096 + 8: page * 4096 + 4096] = bytes((i * 37) % 251 for i in range(4096 - 8))
    path.write_bytes(bytes(data))
    found = check_store(PortfolioStore.for_sqlite_file(path).database, full=True)
    assert not found.ok
    assert found.problems or "malformed" in (found.error or "")


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_unreachable_postgresql_is_a_finding_without_its_password():
    store = PortfolioStore(f"postgresql://desk:hunter2@127.0.0.1:{_closed_port()}/portfolio", connect_timeout_s=2)
    found = store.check_store()
    assert (found.reachable, found.check, found.version, found.ok) == (False, "SELECT 1", None, False)
    assert "cannot connect" in found.error and "hunter2" not in found.error


# -- the risk verdicts ----------------------------------------------------------------------------------------
def _decision(symbol: str, bar_ts: datetime, *, action: str = "buy", order_qty: float = 10.0,
              approved: bool | None = True, rule: str | None = None, account: str = ACCOUNT) -> dict:
    return {"dag_id": "dag", "symbol": symbol, "timeframe": "1Day", "bar_ts": bar_ts, "run_key": "",
            "run_id": "run-1", "account": account, "action": action, "score": 0.5, "confidence": 0.7,
            "price": 100.0, "current_qty": 0.0, "target_qty": order_qty, "order_qty": order_qty, "reason": "r",
            "error": None, "signals": {}, "approved": approved, "risk_rule": rule,
            "risk_reason": None if approved else "refused"}


def test_risk_verdicts_count_proposed_orders_of_the_window(migrated):
    day = datetime(2026, 11, 16, tzinfo=timezone.utc)
    TradingLedger(migrated).claim_decisions([
        _decision("AAPL", day), _decision("MSFT", day, approved=False, rule="max_position"),
        _decision("TSLA", day, approved=False, rule="max_position"),
        _decision("NVDA", day, approved=False, rule="kill_switch"),
        _decision("AMZN", day, approved=None),  # never judged
        _decision("META", day, action="hold", order_qty=0.0, approved=None),  # no order proposed
        _decision("IWM", day, account="simulated:other", approved=False, rule="max_position"),
        _decision("SPY", day - timedelta(days=40), approved=False, rule="max_order_notional"),  # before the window
    ])
    tally = HealthTables(migrated.database).risk_verdicts(ACCOUNT, since=day - timedelta(days=30), until=day)
    assert (tally.proposed, tally.rejected, tally.unchecked) == (5, {"kill_switch": 1, "max_position": 2}, 1)
    assert HealthTables(migrated.database).risk_verdicts(
        ACCOUNT, since=day - timedelta(days=30), until=day - timedelta(days=1)).proposed == 0
