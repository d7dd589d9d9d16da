"""PortfolioReportOperator in-process, on a real SQLite store: the report of a book after a daily ETL without trades
and with them, written to the default folder under $AIRFLOW_HOME, a given folder, an fsspec URL and an Airflow
ObjectStoragePath; its location and summary in XCom; bad settings refused before the store is opened; an
unwritable destination refused with nothing written. And the two example DAGs' shape."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest
from airflow.models.connection import Connection

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.operators.report import PortfolioReportOperator, default_report_dir
from airflow_provider_portfolio.pools import DATABASE_POOL
from airflow_provider_portfolio.store import PortfolioStore
from tests.desk.test_report import ACCOUNT, NOW, make_desk

# Airflow configures its ORM mappers when the first connection is read (about a second, once per process): done at
# import, so that no test's duration includes it.
Connection(conn_id="portfolio_warm_up", conn_type="sqlite")

UTC = timezone.utc
MARKET = SyntheticMarket(seed=11)
REPO = Path(__file__).resolve().parents[2]
RUN_ID = "scheduled__2026-11-18T23:00:00+00:00"
DAILY_FILES = ("portfolio-report-daily-2026-11-18.html", "portfolio-report-daily-2026-11-18-headline.png")


def context(at: datetime = NOW, dag_id: str = "portfolio_report", run_id: str = RUN_ID) -> dict:
    return {"dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=at), "data_interval_end": at,
            "run_id": run_id, "ti": SimpleNamespace(map_index=-1)}


@pytest.fixture
def etl_store(tmp_path, monkeypatch, add_connection) -> Path:
    """A store behind ``desk_store`` after a daily ETL of AAPL and MSFT through Wednesday 18 Nov; no trades. The
    default tickers are AAPL and MSFT; $AIRFLOW_HOME is the test's own."""
    for name in ("STORE_CONN_ID", "DEFAULT_EXCHANGE"):
        monkeypatch.delenv(f"AIRFLOW__PORTFOLIO__{name}", raising=False)
    monkeypatch.setenv("AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS", '["AAPL", "MSFT"]')
    monkeypatch.delenv("AIRFLOW_VAR_PORTFOLIO.HEALTH_THRESHOLDS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ALPACA_DEFAULT", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow-home"))
    path = tmp_path / "desk.db"
    add_connection("desk_store", "sqlite", host=str(path))
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    store.upsert_bars(MARKET.panel(["AAPL", "MSFT"], "2026-10-01", "2026-11-18", "1Day"))
    store.dispose()
    return path


def report_task(**kwargs) -> PortfolioReportOperator:
    return PortfolioReportOperator(**{"task_id": "daily_report", "store_conn_id": "desk_store", **kwargs})


def test_after_a_daily_etl_without_trades(etl_store, tmp_path):
    result = report_task().execute(context())
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    folder = tmp_path / "airflow-home" / "portfolio" / "reports"
    assert default_report_dir() == str(folder)
    assert result["paths"] == {"html": str(folder / DAILY_FILES[0]), "headline_png": str(folder / DAILY_FILES[1])}
    assert sorted(p.name for p in folder.iterdir()) == sorted(DAILY_FILES)
    s = result["summary"]
    # no book yet (the auto trader's simulated account), the universe from the Variable, its bars fresh
    assert (s["account"], s["empty"], s["equity"], s["positions"]) == ("simulated:default", True, None, 0)
    assert (s["symbols"], s["stale_symbols"], s["as_of"]) == (2, 0, NOW.isoformat())
    page = (folder / DAILY_FILES[0]).read_text(encoding="utf-8")
    assert "No book yet: account simulated:default" in page and "0 of 2 symbols behind their calendar" in page
    assert (folder / DAILY_FILES[1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_with_trades(etl_store, tmp_path, monkeypatch):
    store = PortfolioStore.for_sqlite_file(etl_store)
    make_desk(store, monkeypatch)
    store.dispose()
    out = tmp_path / "reports"
    result = report_task(account=ACCOUNT, symbols=["AAPL", "MSFT", "TSLA"], out=str(out)).execute(context())
    s = result["summary"]
    # the hand-checked desk of tests/desk/test_report.py
    assert (s["equity"], s["period_pnl"], s["positions"], s["decisions"], s["rejected"]) == (101_000.0, 1_000.0, 2,
                                                                                            4, 1)
    assert s["max_drawdown"] == pytest.approx(0.10) and s["stale_symbols"] == 1
    assert result["paths"]["html"] == str(out / DAILY_FILES[0])
    assert "rejected: max_position" in (out / DAILY_FILES[0]).read_text(encoding="utf-8")

    # the weekly summary of the same desk, stamped by the DAG
    weekly = report_task(account=ACCOUNT, period="weekly", stamp="2026-W47", out=str(out)).execute(
        context(dag_id="portfolio_report_weekly"))
    assert weekly["paths"]["html"] == str(out / "portfolio-report-weekly-2026-W47.html")
    assert weekly["summary"]["period_return"] == pytest.approx(101 / 99 - 1)


def test_the_account_defaults_to_the_auto_traders(etl_store, add_connection, tmp_path):
    add_connection("alpaca_default", "alpaca", login="test-key", password="test-secret", paper=True)
    result = report_task(out=str(tmp_path / "r")).execute(context())
    assert result["summary"]["account"] == "alpaca:alpaca_default"


def test_written_to_an_fsspec_url_and_an_object_storage_path(etl_store, tmp_path):
    from airflow.sdk import ObjectStoragePath

    fs = fsspec.filesystem("memory")
    try:
        result = report_task(out="memory://portfolio/reports").execute(context())
        assert result["paths"]["html"] == f"memory:///portfolio/reports/{DAILY_FILES[0]}"
        assert fs.cat_file(result["paths"]["headline_png"])[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        fs.rm("/portfolio", recursive=True)

    # Airflow's object storage: a URL with the connection of its credentials, or an ObjectStoragePath
    url = f"file://{tmp_path / 'object-storage'}"
    result = report_task(out=url, out_conn_id="local_files").execute(context())
    assert result["paths"]["html"] == str(tmp_path / "object-storage" / DAILY_FILES[0])
    result = report_task(out=ObjectStoragePath(f"{url}-2")).execute(context())
    assert Path(result["paths"]["headline_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"period": "hourly"}, "period must be one of ['daily', 'weekly'], got 'hourly'"),
    ({"stamp": "../../etc"}, "stamp must be"),
    ({"symbols": ["AAPL", "None"]}, "symbols rendered empty"),
    ({"exchange": "NOPE"}, "NOPE"),
    ({"timeframe": "1Fortnight"}, "timeframe"),
    ({"out_conn_id": "aws_default"}, "out_conn_id='aws_default' needs out"),
    ({"out": "/srv/reports", "out_conn_id": "aws_default"}, "out='/srv/reports' is a local path"),
    ({"out": "nosuchfs://aws_default@bucket/reports"}, "cannot be opened as Airflow object storage"),
])
def test_bad_settings_are_refused_before_the_store_is_opened(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.setenv("AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS", '["AAPL"]')
    never = tmp_path / "never.db"
    monkeypatch.setenv("AIRFLOW_CONN_NEVER_STORE", json.dumps({"conn_type": "sqlite", "host": str(never)}))
    with pytest.raises(InvalidInputError, match=__import__("re").escape(message)):
        report_task(store_conn_id="never_store", **kwargs).execute(context())
    assert not never.exists()


def test_an_unwritable_destination_is_refused_with_nothing_written(etl_store, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InvalidInputError, match="the report cannot be written there .* nothing was written"):
        report_task(out=str(blocker / "reports")).execute(context())
    assert blocker.read_text() == "not a folder"
    with pytest.raises(InvalidInputError, match="not a folder path or a known fsspec URL"):
        report_task(out="nosuchfs://bucket/reports").execute(context())


def test_the_example_dags(monkeypatch):
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag
    expected = {"portfolio_report": ("portfolio_report.py", "0 18 * * 1-5", "daily_report", "daily"),
                "portfolio_report_weekly": ("portfolio_report_weekly.py", "0 9 * * 6", "weekly_report", "weekly")}
    for dag_id, (file, cron, task_id, period) in expected.items():
        bag = DagBag(dag_folder=str(REPO / "example_dags" / file))
        assert bag.import_errors == {}
        dag = bag.dags[dag_id]
        timetable = dag.timetable
        assert cron in (getattr(timetable, "expression", None) or timetable.summary)
        assert str(getattr(timetable, "timezone", None) or timetable._timezone) == "America/New_York"
        assert dag.catchup is False and "report" in dag.tags
        (task,) = dag.tasks
        assert (task.task_id, task.period, task.pool) == (task_id, period, DATABASE_POOL)
        assert task.on_failure_callback and task.retries == 1
        assert task.execution_timeout == timedelta(minutes=15)
