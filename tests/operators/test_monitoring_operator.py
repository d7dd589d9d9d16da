"""MonitoringOperator and DeskGateOperator in-process, on a real SQLite store: the RED report in XCom and in
``health_reports``, mailed to a real SMTP server on 127.0.0.1, the kill switch tightened (never loosened), bad
thresholds refused before anything is written, Alpha Vantage's quota spared; the gate skipping the trader on a
failed check, letting it run on a sound desk, and staying closed (not crashing) on an unreachable store."""

from __future__ import annotations

import html
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pendulum
import pytest
from airflow.models.connection import Connection
from airflow.providers.common.compat.sdk import DownstreamTasksSkipped
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from airflow_provider_portfolio import notifications
from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.operators.monitoring import DeskGateOperator, MonitoringOperator
from airflow_provider_portfolio.operators.trading import KILL_SWITCH_VARIABLE, read_kill_switch
from airflow_provider_portfolio.store import PortfolioStore
from tests.airflow.realairflow import free_port
from tests.notifications.doubles import SmtpDouble
from tests.vendorkeys import ALPHAVANTAGE_KEY

# Airflow configures its ORM mappers when the first connection is read (about a second, once per process): done at
# import, so that no test's duration includes it.
Connection(conn_id="portfolio_warm_up", conn_type="sqlite")

UTC = timezone.utc
MARKET = SyntheticMarket(seed=11)
# Wednesday 18 Nov 2026, 10:00 New York: Tuesday's daily bar was due at 08:30.
NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
RUN_ID = "scheduled__2026-11-18T15:00:00+00:00"
BASE = "http://airflow.test:8080"
AV_URL = "https://www.alphavantage.co/query"
AV_FIXTURES = Path(__file__).parent.parent / "hooks" / "fixtures" / "alphavantage"
THRESHOLDS_ENV = "AIRFLOW_VAR_PORTFOLIO.HEALTH_THRESHOLDS"
KILL_SWITCH_ENV = f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}"


class RecordingTI:
    """The task instance of an in-process run: records what the operator pushes."""

    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


def context(dag_id: str = "portfolio_monitoring", run_id: str = RUN_ID, at: datetime = NOW) -> dict:
    ti = RecordingTI()
    return {"ti": ti, "dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=at),
            "data_interval_end": at, "run_id": run_id}


@pytest.fixture
def db(tmp_path, monkeypatch, add_connection) -> Path:
    """A migrated SQLite store behind ``desk_store`` with AAPL's daily bars through Tuesday 17 Nov; no channels,
    no Variables, no default vendor connections."""
    for name in ("NOTIFY_SMTP_CONN_ID", "NOTIFY_EMAIL_TO", "NOTIFY_SLACK_CONN_ID", "STORE_CONN_ID"):
        monkeypatch.delenv(f"AIRFLOW__PORTFOLIO__{name}", raising=False)
    for name in (KILL_SWITCH_ENV, THRESHOLDS_ENV, "AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE)
    monkeypatch.setattr(notifications, "_said", set())
    path = tmp_path / "desk.db"
    add_connection("desk_store", "sqlite", host=str(path))
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    store.upsert_bars(MARKET.panel(["AAPL"], "2026-11-02", "2026-11-17", "1Day"))
    store.dispose()
    return path


@pytest.fixture
def variable_writes(monkeypatch) -> list[tuple[str, object]]:
    """``Variable.set`` outside a task runner has no API server to write to: record each write and make it visible
    to ``Variable.get`` (through the environment, as a deployment's Variable would be)."""
    from airflow.sdk import Variable

    writes: list[tuple[str, object]] = []

    def fake_set(cls, key, value, description=None, serialize_json=False):
        writes.append((key, value))
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", str(value))

    monkeypatch.setattr(Variable, "set", classmethod(fake_set))
    return writes


def rows(db: Path, sql: str, *params) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(db) as con:
        return con.execute(sql, params).fetchall()


def monitor(**kwargs) -> MonitoringOperator:
    return MonitoringOperator(**{"task_id": "monitor", "store_conn_id": "desk_store", **kwargs})


def checks(report: dict) -> dict[str, dict]:
    return {c["name"] + (f"[{c['subject']}]" if "subject" in c else ""): c for c in report["checks"]}


# -- MonitoringOperator -------------------------------------------------------------------------------------
def test_a_red_desk_is_reported_stored_and_mailed(db, monkeypatch, variable_writes):
    with SmtpDouble() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_PORTFOLIO_TEST_SMTP", json.dumps(smtp.connection()))
        monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_SMTP_CONN_ID", "portfolio_test_smtp")
        monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_EMAIL_TO", "desk@example.org")
        report = monitor(symbols=["AAPL", "NVDA"]).execute(context())  # NVDA has no bars
        [mail] = smtp.wait(1)
    assert json.loads(json.dumps(report)) == report
    assert (report["kind"], report["level"], report["failed"]) == ("monitoring", "RED", ["freshness[NVDA]"])
    assert report["ts"] == "2026-11-18T15:00:00+00:00" and report["notified"] == ["smtp"]
    found = checks(report)
    assert (found["freshness[AAPL]"]["level"], found["freshness[AAPL]"]["value"]) == ("GREEN", 0)
    assert found["store_integrity"]["level"] == "GREEN" and found["rejections[simulated:default]"]["level"] == "GREEN"
    assert "kill_switch" not in report and variable_writes == []  # not asked to tighten it

    [(kind, level, dag_id, run_id, stored)] = rows(
        db, "SELECT kind, level, dag_id, run_id, checks FROM health_reports")
    assert (kind, level, dag_id, run_id) == ("monitoring", "RED", "portfolio_monitoring", RUN_ID)
    assert json.loads(stored)["failed"] == ["freshness[NVDA]"]

    assert mail.recipients == ["desk@example.org"]
    assert mail.subject == "[portfolio RED] monitoring health RED: 1 failed check(s)"
    text = html.unescape(mail.text)
    assert f"DAG: portfolio_monitoring\nRun: {RUN_ID}\nTask: monitor\n" in text
    assert "Reason: monitoring health is RED: freshness[NVDA]\n" in text
    assert ("- freshness[NVDA]: value not measured, threshold yellow 1, red 2 "
            "(NVDA: no 1Day bars stored: run the ETL for it)") in text

    # a retry of the same run replaces its row
    monitor(symbols=["AAPL", "NVDA"], notify_on_red=False).execute(context())
    assert rows(db, "SELECT COUNT(*) FROM health_reports") == [(1,)]


def test_reduce_only_on_red_tightens_an_active_kill_switch(db, variable_writes):
    report = monitor(symbols="AAPL,NVDA", reduce_only_on_red=True).execute(context())
    assert report["level"] == "RED" and report["kill_switch"] == "reduce_only"
    assert report["notified"] == ["log"]  # no channel configured: the message went to the log
    assert variable_writes == [(KILL_SWITCH_VARIABLE, "reduce_only")]
    assert read_kill_switch() == "reduce_only"
    # the next RED hour finds it tightened already: nothing more is written
    again = monitor(symbols="AAPL,NVDA", reduce_only_on_red=True).execute(context(run_id="scheduled__2"))
    assert "kill_switch" not in again and variable_writes == [(KILL_SWITCH_VARIABLE, "reduce_only")]


def test_reduce_only_on_red_never_loosens_a_halted_switch(db, monkeypatch, variable_writes):
    monkeypatch.setenv(KILL_SWITCH_ENV, "halted")
    report = monitor(symbols=["NVDA"], reduce_only_on_red=True).execute(context())
    assert report["level"] == "RED" and "kill_switch" not in report
    assert variable_writes == [] and read_kill_switch() == "halted"


@pytest.mark.parametrize(("raw", "written"), [("stop", None), (" Reduce-Only ", None), ("Active", "reduce_only"),
                                              ("", "reduce_only")])
def test_reduce_only_on_red_writes_the_switch_only_to_tighten_it(db, monkeypatch, variable_writes, raw, written):
    """An unknown value already reads as halted and a spelling of reduce_only as reduce_only: a user's Variable is
    left as it is; only an active switch (however spelled, or empty) is set to reduce_only."""
    monkeypatch.setenv(KILL_SWITCH_ENV, raw)
    report = monitor(symbols=["NVDA"], reduce_only_on_red=True).execute(context())
    assert report["level"] == "RED" and report.get("kill_switch") == written
    assert variable_writes == ([] if written is None else [(KILL_SWITCH_VARIABLE, written)])


def test_a_desk_that_is_not_red_neither_notifies_nor_touches_the_switch(db, monkeypatch, variable_writes):
    with SmtpDouble() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_PORTFOLIO_TEST_SMTP", json.dumps(smtp.connection()))
        monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_SMTP_CONN_ID", "portfolio_test_smtp")
        monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_EMAIL_TO", "desk@example.org")
        report = monitor(symbols=["AAPL"], reduce_only_on_red=True).execute(context())
        assert smtp.mails == []  # notify() sends before execute() returns: nothing was sent
    # no model evaluated yet: YELLOW, worth a look, not a reason to stop trading
    assert report["level"] == "YELLOW" and report["failed"] == []
    assert checks(report)["forecast_health[AAPL]"]["level"] == "YELLOW"
    assert "notified" not in report and variable_writes == []
    assert rows(db, "SELECT level FROM health_reports") == [("YELLOW",)]


@pytest.mark.parametrize(("raw", "message"), [
    ('{"drawdown_red": "high"}', "portfolio.health_thresholds: drawdown_red must be a finite number or null (off), "
                                 "got 'high'"),
    ('{"drawdon_red": 0.3}', "portfolio.health_thresholds: unknown key(s) ['drawdon_red'] (value 0.3)"),
    ('{"drawdown_yellow": 0.3}', "portfolio.health_thresholds: drawdown_yellow=0.3 is above drawdown_red=0.2"),
    ("drawdown_red=0.3", "portfolio.health_thresholds must be a JSON object"),
])
def test_malformed_thresholds_fail_naming_the_key_before_anything_is_written(db, monkeypatch, variable_writes, raw,
                                                                             message):
    monkeypatch.setenv(THRESHOLDS_ENV, raw)
    op = monitor(symbols=["NVDA"], reduce_only_on_red=True)
    with pytest.raises(InvalidInputError) as err:
        op.execute(context())
    assert message in str(err.value)
    assert rows(db, "SELECT COUNT(*) FROM health_reports") == [(0,)] and variable_writes == []
    assert "store_hook" not in vars(op)  # the store was never even opened


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"exchange": "NOPE"}, "unknown market calendar 'NOPE'"),
    ({"timeframe": "7Fortnights"}, "unknown timeframe '7Fortnights'"),
    ({"thresholds": {"min_days": 0}}, "thresholds: min_days must be a whole number >= 1, got 0"),
    ({"vendor_conn_ids": [""]}, "vendor_conn_ids must be a list of connection ids"),
    ({"symbols": "AAPL,not a ticker"}, "not a ticker"),
])
def test_bad_monitoring_input_fails_before_the_store_is_opened(db, kwargs, message):
    op = monitor(**{"symbols": ["AAPL"], **kwargs})
    with pytest.raises(InvalidInputError) as err:
        op.execute(context())
    assert message in str(err.value)
    assert "store_hook" not in vars(op)


def test_thresholds_from_the_variable_are_applied(db, monkeypatch):
    # MSFT through Monday: one bar past due, YELLOW by default, RED when the Variable says one is enough
    store = PortfolioStore.for_sqlite_file(db)
    store.upsert_bars(MARKET.panel(["MSFT"], "2026-11-02", "2026-11-16", "1Day"))
    store.dispose()
    assert checks(monitor(symbols=["MSFT"]).execute(context()))["freshness[MSFT]"]["level"] == "YELLOW"
    monkeypatch.setenv(THRESHOLDS_ENV, '{"stale_bars_red": 1}')
    strict = monitor(symbols=["MSFT"], notify_on_red=False).execute(context(run_id="r2"))
    assert strict["failed"] == ["freshness[MSFT]"]
    assert checks(strict)["freshness[MSFT]"]["threshold"] == {"yellow": 1, "red": 1}


def test_alpha_vantage_is_probed_only_when_asked(db, add_connection, requests_mock):
    add_connection("alphavantage_default", "alphavantage", password=ALPHAVANTAGE_KEY)
    requests_mock.get(AV_URL, json=json.loads((AV_FIXTURES / "global_quote_ibm.json").read_text()))

    spared = checks(monitor(symbols=["AAPL"]).execute(context()))["vendor[alphavantage_default]"]
    assert (spared["level"], spared["value"]) == ("GREEN", "skipped")
    assert spared["message"] == "alphavantage_default: skipped (its probe would spend a scarce quota)"
    assert requests_mock.call_count == 0

    report = monitor(symbols=["AAPL"], probe_scarce=True).execute(context(run_id="r2"))
    probed = checks(report)["vendor[alphavantage_default]"]
    assert (probed["level"], probed["value"]) == ("GREEN", "up")
    assert probed["message"] == "alphavantage_default: Alpha Vantage answered: IBM 170.0100 (2024-06-07)"
    assert requests_mock.call_count == 1
    assert requests_mock.last_request.qs["function"] == ["global_quote"]
    assert ALPHAVANTAGE_KEY not in json.dumps(report)


def test_a_refused_alpha_vantage_key_is_red_without_the_key(db, add_connection, requests_mock):
    add_connection("alphavantage_default", "alphavantage", password=ALPHAVANTAGE_KEY)
    requests_mock.get(AV_URL, json=json.loads((AV_FIXTURES / "error_invalid_apikey.json").read_text()))
    report = monitor(symbols=["AAPL"], probe_scarce=True, notify_on_red=False).execute(context())
    assert report["failed"] == ["vendor[alphavantage_default]"]
    down = checks(report)["vendor[alphavantage_default]"]
    assert down["value"] == "down" and "AuthenticationError" in down["message"]
    assert ALPHAVANTAGE_KEY not in json.dumps(report)


# -- DeskGateOperator ---------------------------------------------------------------------------------------
def put(db: Path, kind: str, ts: datetime, *checks_: Check, run_id: str = "r") -> None:
    store = PortfolioStore.for_sqlite_file(db)
    store.append_health_report(HealthReport(kind, ts, checks_).to_dict(), dag_id=f"portfolio_{kind}", run_id=run_id)
    store.dispose()


def sound(db: Path) -> None:
    put(db, "environment", NOW - timedelta(hours=5), Check("store", Level.GREEN, 5, 5, "schema version 5"))
    put(db, "monitoring", NOW - timedelta(minutes=40), Check("store_integrity", Level.GREEN, 0, 0, "ok"))


def gated(**kwargs):
    """The gate before a trader and a report task, in a DAG; returns (gate, context)."""
    with DAG("portfolio_master_test", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        gate = DeskGateOperator(task_id="desk_gate", **{"symbols": ["AAPL"], "store_conn_id": "desk_store", **kwargs})
        gate >> EmptyOperator(task_id="auto_trader") >> EmptyOperator(task_id="report")
    return gate, context(dag_id="portfolio_master_test")


def test_a_sound_desk_opens_the_gate_and_the_trader_runs(db):
    sound(db)
    gate, ctx = gated()
    verdict = gate.execute(ctx)  # no skip
    assert (verdict["kind"], verdict["level"], verdict["failed"]) == ("gate", "GREEN", [])
    assert [c["name"] for c in verdict["checks"]] == ["environment", "health", "freshness"]
    assert ctx["ti"].pushed == {}


def test_a_failed_environment_check_skips_everything_downstream(db):
    sound(db)
    put(db, "environment", NOW - timedelta(hours=4), Check("kill_switch", Level.RED, "stop", None, "unknown state"),
        run_id="r2")
    gate, ctx = gated()
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        gate.execute(ctx)
    assert sorted(skipped.value.tasks) == ["auto_trader", "report"]
    verdict = ctx["ti"].pushed["return_value"]
    assert verdict["kind"] == "gate" and verdict["failed"] == ["environment"]
    assert checks(verdict)["environment"]["message"] == \
        "today's environment check at 2026-11-18T11:00+00:00 is RED: kill_switch"
    assert sorted(ctx["ti"].pushed["skipmixin_key"]["skipped"]) == ["auto_trader", "report"]


def test_stale_bars_and_a_red_health_report_close_the_gate_together(db):
    sound(db)
    put(db, "monitoring", NOW - timedelta(minutes=20), Check("drawdown", Level.RED, 0.3, None, "drawdown 0.3"),
        run_id="r2")
    gate, ctx = gated(symbols='["AAPL", "TSLA"]', require="environment,health,bars")
    store = PortfolioStore.for_sqlite_file(db)
    store.upsert_bars(MARKET.panel(["TSLA"], "2026-11-02", "2026-11-13", "1Day"))  # two sessions behind
    store.dispose()
    with pytest.raises(DownstreamTasksSkipped):
        gate.execute(ctx)
    assert ctx["ti"].pushed["return_value"]["failed"] == ["health", "freshness[TSLA]"]


def test_missing_reports_close_the_gate_only_when_required(db):
    gate, ctx = gated()
    with pytest.raises(DownstreamTasksSkipped):
        gate.execute(ctx)
    assert ctx["ti"].pushed["return_value"]["failed"] == ["environment", "health"]
    relaxed, ctx = gated(require='["bars"]')  # a JSON list, as a template renders it
    verdict = relaxed.execute(ctx)
    assert verdict["level"] == "YELLOW" and ctx["ti"].pushed == {}
    # a require that is not given (None, or a template that rendered empty) is the default: all three
    for blank in (None, "", "None"):
        strict, ctx = gated(require=blank)
        with pytest.raises(DownstreamTasksSkipped):
            strict.execute(ctx)
        assert ctx["ti"].pushed["return_value"]["failed"] == ["environment", "health"], blank


def test_the_universe_defaults_to_the_variable(db, monkeypatch):
    sound(db)
    monkeypatch.setenv("AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS", '["AAPL", "NVDA"]')
    gate, ctx = gated(symbols=None)
    with pytest.raises(DownstreamTasksSkipped):
        gate.execute(ctx)
    assert ctx["ti"].pushed["return_value"]["failed"] == ["freshness[NVDA]"]


def test_an_unreachable_store_closes_the_gate_and_does_not_crash(db, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_PG_STORE", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "desk", "password": "test-key-pg",
        "schema": "portfolio", "extra": {"connect_timeout": 2}}))
    gate, ctx = gated(store_conn_id="pg_store")
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        gate.execute(ctx)
    assert sorted(skipped.value.tasks) == ["auto_trader", "report"]
    verdict = ctx["ti"].pushed["return_value"]
    assert (verdict["kind"], verdict["level"], verdict["failed"]) == ("gate", "RED", ["store"])
    message = checks(verdict)["store"]["message"]
    assert message.startswith("cannot read the store: ") and str(port) in message
    assert "test-key-pg" not in json.dumps(verdict)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"require": ["weather"]}, "require must be a list of ['environment', 'health', 'bars'], got ['weather']"),
    ({"max_health_age_minutes": 0}, "max_health_age_minutes must be a number of minutes > 0 (under a week), got 0"),
    ({"max_health_age_minutes": "120"}, "got '120'"),
    ({"require": '{"bars": true}'}, "require must be a list of ['environment', 'health', 'bars'], got "
                                    "['{\"bars\": true}']"),
    ({"max_health_age_minutes": float("nan")}, "max_health_age_minutes must be a number of minutes > 0"),
    ({"symbols": ["AAPL", "no ticker"]}, "no ticker"),
    ({"exchange": "NOPE"}, "unknown market calendar 'NOPE'"),
])
def test_bad_gate_input_fails_the_task_naming_it_before_the_store_is_opened(db, kwargs, message):
    gate, ctx = gated(**kwargs)
    with pytest.raises(InvalidInputError) as err:
        gate.execute(ctx)
    assert message in str(err.value)
    assert "store_hook" not in vars(gate) and ctx["ti"].pushed == {}


def test_template_fields():
    assert set(MonitoringOperator.template_fields) == {"symbols", "timeframe", "exchange", "store_conn_id", "account",
                                                      "vendor_conn_ids"}
    assert set(DeskGateOperator.template_fields) == {"symbols", "exchange", "store_conn_id", "require"}
    assert DeskGateOperator.inherits_from_skipmixin is True


def test_the_run_instant_is_the_data_interval_end():
    from airflow_provider_portfolio.operators.monitoring import run_instant

    at = pd.Timestamp("2026-11-18 10:00", tz="America/New_York").to_pydatetime()
    assert run_instant({"data_interval_end": at, "dag_run": None}) == NOW
    assert run_instant({"data_interval_end": None, "dag_run": SimpleNamespace(run_after=at)}) == NOW


def test_the_run_instant_of_a_pendulum_date_keeps_its_zone_in_arithmetic():
    """Airflow hands tasks pendulum instants; in a standard-library UTC zone their arithmetic dropped the zone, so
    ``run_instant(context) - timedelta(days=90)`` (the cost study's window) was naive and the job failed."""
    from airflow_provider_portfolio.operators.gating import run_instant

    at = pendulum.datetime(2024, 6, 6, 4, 15, tz="America/New_York")
    for context in ({"data_interval_end": at, "dag_run": None},
                    {"data_interval_end": None, "dag_run": SimpleNamespace(run_after=at)}):
        instant = run_instant(context)
        assert instant == datetime(2024, 6, 6, 8, 15, tzinfo=UTC)
        assert (instant - timedelta(days=90)).utcoffset() == timedelta(0)
