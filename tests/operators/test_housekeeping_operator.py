"""HousekeepingOperator in-process on a real SQLite store: retention from Variable ``portfolio.retention_days`` and the
operator's arguments, the backup in ``[portfolio] backup_dir``, the report as XCom; a corrupt store restored and the
restore mailed to a real SMTP server on 127.0.0.1; bad settings refused before the store is opened. The example DAG
and its Airflow-only twin: same id, schedule, time zone, task and pool."""

from __future__ import annotations

import html
import importlib.util
import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.models.connection import Connection
from sqlalchemy import insert

from airflow_provider_portfolio import notifications
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.operators.housekeeping import HousekeepingOperator
from airflow_provider_portfolio.store import PortfolioStore, schema
from tests.notifications.doubles import SmtpDouble

# Airflow configures its ORM mappers when the first connection is read (about a second, once per process): done at
# import, so that no test's duration includes it.
Connection(conn_id="portfolio_warm_up", conn_type="sqlite")

REPO = Path(__file__).resolve().parents[2]
UTC = timezone.utc
NOW = datetime(2026, 6, 30, 7, 30, tzinfo=UTC)
RUN_ID = "scheduled__2026-06-30T07:30:00+00:00"
RETENTION_ENV = "AIRFLOW_VAR_PORTFOLIO.RETENTION_DAYS"


def context(run_id: str = RUN_ID) -> dict:
    return {"dag_run": SimpleNamespace(dag_id="portfolio_housekeeping", run_id=run_id, run_after=NOW),
            "data_interval_end": NOW, "run_id": run_id}


def report_row(days: int) -> dict:
    at = NOW - timedelta(days=days)
    return {"kind": "monitoring", "ts": at, "dag_id": "portfolio_monitoring", "run_id": f"r{days}", "level": "GREEN",
            "checks": "{}", "summary": "ok", "created_at": at}


def order_row(coid: str, status: str, days: int) -> dict:
    at = NOW - timedelta(days=days)
    return {"account": "simulated:default", "client_order_id": coid, "dag_id": "trader", "run_id": "r",
            "symbol": "AAA", "side": "buy", "qty": 1.0, "ref_price": 1.0, "bar_ts": at, "status": status,
            "broker_order_id": None, "filled_qty": None, "filled_avg_price": None, "reason": None, "created_at": at,
            "updated_at": at}


@pytest.fixture
def db(tmp_path, monkeypatch, add_connection) -> Path:
    """A migrated SQLite store behind ``desk_store``: health reports 1, 20, 40 and 100 days old, orders (filled and
    new) 400 days old; no channels, no Variable, no backup_dir option."""
    for name in ("NOTIFY_SMTP_CONN_ID", "NOTIFY_EMAIL_TO", "NOTIFY_SLACK_CONN_ID", "STORE_CONN_ID", "BACKUP_DIR"):
        monkeypatch.delenv(f"AIRFLOW__PORTFOLIO__{name}", raising=False)
    monkeypatch.delenv(RETENTION_ENV, raising=False)
    monkeypatch.setattr(notifications, "_said", set())
    path = tmp_path / "desk.db"
    add_connection("desk_store", "sqlite", host=str(path))
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    with store.database.write("fill") as conn:
        conn.execute(insert(schema.health_reports), [report_row(d) for d in (1, 20, 40, 100)])
        conn.execute(insert(schema.orders), [order_row("o1", "filled", 400), order_row("o2", "new", 400)])
    store.dispose()
    return path


def rows(db: Path, sql: str) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def housekeeping(**kwargs) -> HousekeepingOperator:
    return HousekeepingOperator(**{"task_id": "housekeeping", "store_conn_id": "desk_store", **kwargs})


def test_retention_comes_from_the_variable_and_the_arguments_and_the_report_is_the_xcom(db, tmp_path, monkeypatch):
    monkeypatch.setenv(RETENTION_ENV, json.dumps({"health_reports": 30, "orders": 365}))
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__BACKUP_DIR", str(tmp_path / "nightly"))
    result = housekeeping(retention_days='{"health_reports": 10}', allow_kept_tables=["orders"]).execute(context())
    assert json.loads(json.dumps(result)) == result
    assert result["retention"]["health_reports"] == {"days": 10, "cutoff": "2026-06-20T07:30:00+00:00", "deleted": 3}
    assert result["retention"]["orders"]["deleted"] == 1  # the filled one; the new one is open
    assert (result["deleted"], result["restored"], result["integrity"]["ok"]) == (4, False, True)
    assert rows(db, "SELECT run_id FROM health_reports") == [("r1",)]
    assert rows(db, "SELECT client_order_id FROM orders") == [("o2",)]
    backup = Path(result["backup"]["path"])
    assert backup.parent == tmp_path / "nightly" and rows(backup, "SELECT count(*) FROM health_reports") == [(1,)]
    assert "notified" not in result


def test_a_dry_run_counts_and_changes_nothing(db):
    result = housekeeping(dry_run=True).execute(context())
    assert result["retention"]["health_reports"] == {"days": 90, "cutoff": "2026-04-01T07:30:00+00:00",
                                                     "would_delete": 1}
    assert (result["backup"], result["vacuum"]) == (None, None)
    assert rows(db, "SELECT count(*) FROM health_reports") == [(4,)]
    assert not db.with_name("desk.db.backups").exists()


def test_a_corrupt_store_is_restored_and_the_restore_mailed(db, monkeypatch):
    first = housekeeping().execute(context("scheduled__1"))  # the nightly backup: 3 reports left
    db.write_bytes(b"garbage, not a database" * 100)
    with SmtpDouble() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_PORTFOLIO_TEST_SMTP", json.dumps(smtp.connection()))
        monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_SMTP_CONN_ID", "portfolio_test_smtp")
        monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_EMAIL_TO", "desk@example.org")
        result = housekeeping().execute(context())
        [mail] = smtp.wait(1)
    assert result["restored"] is True and result["notified"] == ["smtp"]
    assert result["restore"]["backup"] == first["backup"]["path"]
    assert Path(result["restore"]["moved_aside"]).read_bytes() == b"garbage, not a database" * 100
    assert rows(db, "SELECT count(*) FROM health_reports") == [(3,)]
    assert mail.subject == "[portfolio RED] portfolio store was corrupt and was restored from a backup"
    text = html.unescape(mail.text)
    assert f"Restored from: {first['backup']['path']}" in text and "Reason: store integrity check failed: " in text


@pytest.mark.parametrize(("variable", "kwargs", "message"), [
    ("{not json", {}, "Variable portfolio.retention_days must be a JSON object"),
    ('{"forecasts": 0}', {}, "Variable portfolio.retention_days\\['forecasts'\\] must be a whole number"),
    ('{"orders": 30}', {}, "Variable portfolio.retention_days: 'orders' is part of the trading ledger"),
    (None, {"retention_days": '{"candles": 5}'}, "retention_days: unknown table 'candles'"),
    (None, {"keep_backups": 0}, "keep_backups must be a whole number >= 1, got 0"),
])
def test_bad_settings_are_refused_before_the_store_is_opened(tmp_path, monkeypatch, add_connection, variable, kwargs,
                                                             message):
    monkeypatch.delenv(RETENTION_ENV, raising=False)
    if variable is not None:
        monkeypatch.setenv(RETENTION_ENV, variable)
    path = tmp_path / "never.db"
    add_connection("desk_store", "sqlite", host=str(path))
    with pytest.raises(InvalidInputError, match=message):
        housekeeping(**kwargs).execute(context())
    assert not path.exists()


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"dag_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.portfolio_housekeeping_dag


def test_the_example_dag_and_its_airflow_only_twin(monkeypatch):
    from airflow_provider_portfolio.notifications import PortfolioNotifier

    monkeypatch.syspath_prepend(str(REPO / "bench" / "airflow_only_dags"))  # the twins import their _desk helper
    example = _load(REPO / "example_dags" / "portfolio_housekeeping.py")
    twin = _load(REPO / "bench" / "airflow_only_dags" / "portfolio_housekeeping.py")
    sys.modules.pop("_desk", None)
    for dag in (example, twin):
        assert (dag.dag_id, dag.catchup, dag.max_active_runs) == ("portfolio_housekeeping", False, 1)
        timetable = dag.timetable  # an SDK timetable (``expression``) or, on older Airflow, a core one (``summary``)
        assert (getattr(timetable, "expression", None) or timetable.summary) == "30 3 * * *"
        assert str(getattr(timetable, "timezone", None) or timetable._timezone) == "America/New_York"
        assert [(t.task_id, t.pool) for t in dag.tasks] == [("housekeeping", "database_pool")]
    task = example.get_task("housekeeping")
    assert isinstance(task, HousekeepingOperator)
    assert isinstance(task.on_failure_callback[0] if isinstance(task.on_failure_callback, list)
                      else task.on_failure_callback, PortfolioNotifier)
