"""EnvSanityOperator.execute() in-process: adapter checks, the report as XCom, downstream skipped on RED."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pendulum
import pytest
import time_machine
from airflow.providers.common.compat.sdk import DownstreamTasksSkipped
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.operators.environment import EnvSanityOperator
from airflow_provider_portfolio.operators.trading import KILL_SWITCH_VARIABLE
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.schema import latest_version
from tests.vendorkeys import FINNHUB_KEY

# Mon 2026-12-28 15:00 UTC = 10:00 New York: an NYSE session, so the session check is green.
SESSION_DAY = datetime(2026, 12, 28, 15, 0, tzinfo=timezone.utc)
QUOTE = "https://finnhub.io/api/v1/quote"
# The checks' limits that every disk passes: these tests are about the other checks.
ANY_DISK = {"min_free_bytes": 1, "min_free_fraction": 0.0}


class RecordingTI:
    """The task instance of an in-process run: records what the operator pushes."""

    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


@pytest.fixture(autouse=True)
def desk(tmp_path, monkeypatch, add_connection):
    """A migrated SQLite store behind connection ``desk_store``, logs under tmp, no Variables, a session day."""
    monkeypatch.delenv(f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}", raising=False)
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path / "logs"))
    add_connection("desk_store", "sqlite", host=str(tmp_path / "desk.db"))
    store = PortfolioStore.for_sqlite_file(tmp_path / "desk.db")
    store.migrate()
    store.dispose()
    with time_machine.travel(SESSION_DAY, tick=False):
        yield tmp_path


def gated(**kwargs):
    """The gate with a trader and a report task after it, in a DAG; returns (gate, context, ti)."""
    with DAG("env_gate", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        gate = EnvSanityOperator(task_id="env_sanity", **{"store_conn_id": "desk_store", **ANY_DISK, **kwargs})
        gate >> EmptyOperator(task_id="trade") >> EmptyOperator(task_id="report")
    ti = RecordingTI()
    return gate, {"ti": ti}, ti


def checks(report) -> dict[str, dict]:
    return {c["name"] + (f"[{c['subject']}]" if "subject" in c else ""): c for c in report["checks"]}


def run_skipping(**kwargs):
    """Run a gate that must skip its downstream; returns (skipped task ids, the report pushed as XCom)."""
    gate, context, ti = gated(**kwargs)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        gate.execute(context)
    return sorted(skipped.value.tasks), ti.pushed["return_value"]


def test_a_sound_environment_is_green_and_the_trader_runs(desk):
    gate, context, ti = gated()
    report = gate.execute(context)  # no skip
    assert report["level"] == "GREEN", [c["message"] for c in report["checks"] if c["level"] != "GREEN"]
    assert json.loads(json.dumps(report)) == report and ti.pushed == {}
    found = checks(report)
    assert found["store"]["value"] == latest_version() and found["session[XNYS]"]["value"] == "2026-12-28"
    assert found["disk[store]"]["message"].startswith(f"store ({desk})")
    assert found["disk[logs]"]["message"].startswith(f"logs ({desk / 'logs'})")
    assert found["provider_config"]["value"] == "synthetic"
    # The default connections do not exist: fine, the embedded defaults serve.
    for conn_id in ("alpaca_default", "alphavantage_default", "finnhub_default"):
        assert found[f"connection[{conn_id}]"]["level"] == "GREEN"
        assert "not configured, using the embedded default" in found[f"connection[{conn_id}]"]["message"]
    assert found["connection[desk_store]"]["message"] == "connection 'desk_store' present (type sqlite)"


def test_a_configured_connection_that_does_not_exist_is_red_and_skips_downstream(desk):
    skipped, report = run_skipping(connection_ids=["alpaca_paper", "desk_store"])
    assert skipped == ["report", "trade"]  # every downstream task, not only the direct one
    assert report["level"] == "RED" and report["failed"] == ["connection[alpaca_paper]"]
    missing = checks(report)["connection[alpaca_paper]"]
    assert missing["message"].startswith("connection 'alpaca_paper' does not exist")
    assert "connection[alpaca_default]" not in checks(report)  # a list given: the defaults are not looked at


def logged(capsys, caplog) -> str:
    """What the task logged (the task logger writes through structlog to stdout, or to logging)."""
    return capsys.readouterr().out + caplog.text


def test_the_skip_is_recorded_for_airflow_and_the_failed_checks_logged(desk, capsys, caplog):
    gate, context, ti = gated(connection_ids="alpaca_paper")  # a comma-separated string, as a template renders
    with pytest.raises(DownstreamTasksSkipped):
        gate.execute(context)
    # SkipMixin's record, read by NotPreviouslySkippedDep when the tasks are cleared
    assert sorted(ti.pushed["skipmixin_key"]["skipped"]) == ["report", "trade"]
    assert ti.pushed["return_value"]["failed"] == ["connection[alpaca_paper]"]
    out = logged(capsys, caplog)
    assert "RED connection[alpaca_paper]: connection 'alpaca_paper' does not exist" in out
    assert "skipping 2 downstream task(s): report, trade" in out


def test_a_halted_kill_switch_skips_the_trader(desk, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}", "halted")
    skipped, report = run_skipping()
    assert skipped == ["report", "trade"] and report["failed"] == ["kill_switch"]


def test_reduce_only_and_a_holiday_are_yellow_and_the_trader_runs(desk, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}", "reduce_only")
    gate, context, _ = gated()
    with time_machine.travel(datetime(2026, 12, 25, 14, 0, tzinfo=timezone.utc), tick=False):
        report = gate.execute(context)
    assert report["level"] == "YELLOW"
    assert {label for label, c in checks(report).items() if c["level"] == "YELLOW"} == {"kill_switch", "session[XNYS]"}


def test_opt_in_test_connection_of_a_failing_vendor_is_red_without_its_key(desk, add_connection, requests_mock,
                                                                            capsys, caplog):
    add_connection("finnhub_default", "finnhub", password=FINNHUB_KEY)
    requests_mock.get(QUOTE, status_code=401, json={"error": f"Invalid API key {FINNHUB_KEY}"})
    gate, context, _ = gated()
    assert gate.execute(context)["level"] == "GREEN"  # present; not tested unless asked: no call made
    assert requests_mock.call_count == 0

    skipped, report = run_skipping(test_connections=True)
    assert skipped == ["report", "trade"] and report["failed"] == ["connection_test[finnhub_default]"]
    failed = checks(report)["connection_test[finnhub_default]"]
    assert failed["message"].startswith("connection 'finnhub_default' test failed: AuthenticationError")
    assert requests_mock.call_count == 1
    assert checks(report)["connection_test[desk_store]"]["message"] == \
        f"connection 'desk_store' test passed: connected; schema version {latest_version()}"
    out = logged(capsys, caplog)
    assert "connection 'finnhub_default' test failed: AuthenticationError" in out  # logged, without the key
    assert FINNHUB_KEY not in json.dumps(report) and FINNHUB_KEY not in out


def test_fail_on_red_fails_naming_every_failed_check(desk, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}", "stop")
    gate, context, ti = gated(connection_ids=["alpaca_paper"], fail_on_red=True)
    with pytest.raises(PortfolioError) as err:
        gate.execute(context)
    message = str(err.value)
    assert message.startswith("environment check RED, 2 failed check(s): ")
    assert "kill_switch: kill switch 'stop' is no known state" in message
    assert "connection[alpaca_paper]: connection 'alpaca_paper' does not exist" in message
    assert ti.pushed == {}  # nothing skipped: the task fails instead


def test_a_named_store_connection_that_does_not_exist_is_red(desk):
    skipped, report = run_skipping(store_conn_id="no_such_store")
    assert skipped == ["report", "trade"]
    assert set(report["failed"]) == {"store", "connection[no_such_store]"}
    assert checks(report)["store"]["message"] == \
        "store cannot be opened: StoreError: store connection 'no_such_store' does not exist"


def test_a_configured_store_connection_that_does_not_exist_is_red_not_the_embedded_store(desk, monkeypatch):
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__STORE_CONN_ID", "prod_store")
    with DAG("env_gate2", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        gate = EnvSanityOperator(task_id="env_sanity", **ANY_DISK)
        gate >> EmptyOperator(task_id="trade")
    with pytest.raises(DownstreamTasksSkipped):
        gate.execute({"ti": RecordingTI()})


def test_bad_provider_config_is_red_naming_the_option(desk, monkeypatch):
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__EXECUTION_MODE", "paper")
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__STORE_CONNECT_TIMEOUT", "0")
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEVICE", "tpu")
    _, report = run_skipping()
    assert set(report["failed"]) == {"provider_config[portfolio.execution_mode]",
                                     "provider_config[portfolio.store_connect_timeout]",
                                     "provider_config[portfolio.device]", "store"}
    assert "[portfolio] store_connect_timeout must be a number of seconds > 0, got '0'" in \
        checks(report)["store"]["message"]  # the store cannot be opened with that timeout either
    assert "[portfolio] execution_mode must be one of ('synthetic', 'live'), got 'paper'" in \
        checks(report)["provider_config[portfolio.execution_mode]"]["message"]
    assert checks(report)["provider_config[portfolio.device]"]["message"] == \
        "[portfolio] device: must be one of ('auto', 'cuda', 'cpu'), got 'tpu'"


def test_a_full_disk_is_red(desk):
    _, report = run_skipping(min_free_bytes=10**18)
    assert set(report["failed"]) == {"disk[store]", "disk[logs]"}


def test_a_red_gate_without_downstream_tasks_just_returns_its_report(desk):
    with DAG("env_alone", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        gate = EnvSanityOperator(task_id="env_sanity", store_conn_id="desk_store", connection_ids=["gone"], **ANY_DISK)
    assert gate.execute({"ti": RecordingTI()})["failed"] == ["connection[gone]"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"connection_ids": ["alpaca default"]}, "connection_ids: 'alpaca default' is no connection id"),
    ({"connection_ids": [3]}, "connection_ids must be a list of connection ids"),
    ({"connection_ids": {"a": 1}}, "connection_ids must be a list of connection ids"),
    ({"min_free_bytes": -1}, "min_free_bytes must be a number of bytes >= 0, got -1"),
    ({"min_free_fraction": 2}, "min_free_fraction must be a fraction in [0, 1], got 2"),
])
def test_bad_input_fails_before_anything_is_checked(desk, kwargs, message, requests_mock):
    gate, context, _ = gated(**kwargs)
    with pytest.raises(InvalidInputError) as err:
        gate.execute(context)
    assert message in str(err.value)


def test_template_fields_cover_the_connections_and_the_exchange():
    assert set(EnvSanityOperator.template_fields) == {"exchange", "store_conn_id", "connection_ids"}
    assert EnvSanityOperator.inherits_from_skipmixin is True


def test_the_report_is_stored_for_the_trading_gate(desk):
    """The desk gate reads today's environment report from the store: each run appends it, RED ones included."""
    gate, context, _ = gated()
    context["dag_run"] = type("Run", (), {"dag_id": "env_gate", "run_id": "manual__1"})()
    report = gate.execute(context)
    store = PortfolioStore.for_sqlite_file(desk / "desk.db")
    try:
        stored = store.latest_health_report("environment")
        assert stored is not None and stored.report == report
        assert (stored.dag_id, stored.run_id) == ("env_gate", "manual__1")
    finally:
        store.dispose()
