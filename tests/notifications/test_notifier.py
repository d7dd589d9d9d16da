"""The notifier, notify(), notify_health() and the deadline helpers, against real SMTP and Slack servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import html
import json
import logging
from datetime import UTC, datetime, time, timedelta
from types import SimpleNamespace

import pytest

from airflow_provider_portfolio import notifications
from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.notifications import (
    PortfolioNotifier,
    daily_etl_deadline,
    deadline_alert,
    deadline_missed,
    monitoring_deadline,
    notify,
    notify_health,
    run_url,
    trader_cycle_deadline,
)
from tests.airflow.realairflow import free_port
from tests.notifications.doubles import SlackDouble, SmtpDouble

RUN_ID = "scheduled__2024-06-04T09:15:00+00:00"
RUN_ID_IN_URL = "scheduled__2024-06-04T09%3A15%3A00%2B00%3A00"
BASE = "http://airflow.test:8080"


@pytest.fixture(autouse=True)
def no_channels(monkeypatch):
    """No channel configured, a known UI address, and a process that has not given its advice yet."""
    monkeypatch.setattr(notifications, "_said", set())
    for name in ("NOTIFY_SMTP_CONN_ID", "NOTIFY_EMAIL_TO", "NOTIFY_SLACK_CONN_ID"):
        monkeypatch.delenv(f"AIRFLOW__PORTFOLIO__{name}", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE)


def use_smtp(monkeypatch, smtp: SmtpDouble, to: str = "desk@example.org, risk@example.org", **extra) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PORTFOLIO_TEST_SMTP", json.dumps(smtp.connection(**extra)))
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_SMTP_CONN_ID", "portfolio_test_smtp")
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_EMAIL_TO", to)


def use_slack(monkeypatch, slack: SlackDouble, token: str = "T000/B000/test-key") -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PORTFOLIO_TEST_SLACK", json.dumps(slack.connection(token)))
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_SLACK_CONN_ID", "portfolio_test_slack")


def failure_context(exception: BaseException | str | None):
    from airflow.sdk import DAG

    dag = DAG("portfolio_daily_etl", schedule=None)
    ti = SimpleNamespace(dag_id="portfolio_daily_etl", task_id="load", run_id=RUN_ID, map_index=-1)
    return {"dag": dag, "run_id": RUN_ID, "ti": ti, "task_instance": ti, "exception": exception}


def text_of(mail) -> str:
    return html.unescape(mail.text)


def test_run_url_has_the_airflow_3_ui_routes():
    assert run_url("portfolio_daily_etl") == f"{BASE}/dags/portfolio_daily_etl"
    assert run_url("portfolio_daily_etl", RUN_ID) == f"{BASE}/dags/portfolio_daily_etl/runs/{RUN_ID_IN_URL}"
    assert run_url("d", "r", "t", map_index=3, base_url="https://af.example/") == \
        "https://af.example/dags/d/runs/r/tasks/t/mapped/3"
    assert run_url("d", "r", "t", map_index=-1, base_url="https://af.example") == "https://af.example/dags/d/runs/r/tasks/t"


def test_a_failed_task_is_mailed_with_dag_run_task_reason_and_link(monkeypatch):
    with SmtpDouble() as smtp:
        use_smtp(monkeypatch, smtp)
        notifier = PortfolioNotifier(reason="loading bars of {{ dag.dag_id }}")
        notifier(failure_context(ValueError("AAPL: rule 'high_below_low' failed on 1 row(s)")))
        [mail] = smtp.wait(1)
    assert mail.sender == "desk@example.com"
    assert mail.recipients == ["desk@example.org", "risk@example.org"]
    assert mail.subject == "[portfolio RED] task portfolio_daily_etl.load failed"
    text = text_of(mail)
    assert "\nLevel: RED\nDAG: portfolio_daily_etl\n" in text
    assert f"\nRun: {RUN_ID}\nTask: load\n" in text
    assert ("\nReason: loading bars of portfolio_daily_etl: ValueError: AAPL: rule 'high_below_low' failed on 1 row(s)\n"
            in text)
    assert f"\nLink: {BASE}/dags/portfolio_daily_etl/runs/{RUN_ID_IN_URL}/tasks/load" in text


def test_a_dag_callback_names_airflows_reason_and_links_the_run(monkeypatch):
    from airflow.sdk import DAG

    with SlackDouble() as slack:
        use_slack(monkeypatch, slack)
        PortfolioNotifier()({"dag": DAG("portfolio_master", schedule=None), "run_id": "manual__1", "reason": "task_failure"})
        [(path, body)] = slack.wait(1)
    assert path == "/T000/B000/test-key"
    assert body["text"] == (f"[portfolio RED] DAG portfolio_master failed\n\nLevel: RED\nDAG: portfolio_master\n"
                            f"Run: manual__1\nReason: task_failure\nLink: {BASE}/dags/portfolio_master/runs/manual__1")


def test_without_channels_the_whole_message_is_logged_and_the_advice_given_once(caplog):
    with caplog.at_level(logging.INFO, logger=notifications.__name__):
        first = notify("store unreachable", "sqlite: disk I/O error", dag_id="portfolio_monitoring", run_id="r1",
                       reason="OperationalError", level="YELLOW")
        second = notify("store unreachable again", dag_id="portfolio_monitoring", run_id="r2", reason="again")
    assert first == second == ["log"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    advice = [m for m in warnings if "go to this log only" in m]
    assert len(advice) == 1 and "notify_smtp_conn_id" in advice[0] and "notify_slack_conn_id" in advice[0]
    assert (f"[portfolio YELLOW] store unreachable\n\nLevel: YELLOW\nDAG: portfolio_monitoring\nRun: r1\n"
            f"Reason: OperationalError\nLink: {BASE}/dags/portfolio_monitoring/runs/r1\n\nsqlite: disk I/O error") in warnings
    assert any(m.startswith("[portfolio RED] store unreachable again\n") for m in warnings)


def test_a_connection_that_does_not_exist_falls_back_to_the_log_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_SMTP_CONN_ID", "portfolio_no_such_smtp")
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_EMAIL_TO", "desk@example.org")
    with caplog.at_level(logging.WARNING, logger=notifications.__name__):
        assert notify("x", reason="y") == ["log"]
        assert notify("x", reason="y") == ["log"]
    said = [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()]
    assert said == ["[portfolio] notify_smtp_conn_id names connection 'portfolio_no_such_smtp', which does not exist: "
                    "that channel is off"]


def test_smtp_without_recipients_is_off(monkeypatch, caplog):
    with SmtpDouble() as smtp:
        use_smtp(monkeypatch, smtp, to=" , ")
        with caplog.at_level(logging.WARNING, logger=notifications.__name__):
            assert notify("x", reason="y") == ["log"]
        assert smtp.mails == []
    assert "notify_email_to is empty" in caplog.text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_both_channels_send_and_no_secret_appears_anywhere(monkeypatch, caplog):
    from airflow.sdk.log import mask_secret

    broker_secret = "test-broker-secret-7f3a"  # a task's connection password: Airflow's masker knows it
    mask_secret(broker_secret)
    token = "T000/B000/test-key-hook-token"
    with SmtpDouble(login="test-user", password="test-smtp-password") as smtp, SlackDouble() as slack:
        use_smtp(monkeypatch, smtp)
        use_slack(monkeypatch, slack, token)
        reason = (f"broker refused {broker_secret}; smtp login test-user:test-smtp-password; "
                  f"webhook https://hooks.example/{token}")
        with caplog.at_level(logging.DEBUG):
            sent = notify("login failed", f"body repeats {broker_secret}", dag_id="d", run_id="r", reason=reason)
        [mail], [(path, body)] = smtp.wait(1), slack.wait(1)
    assert sent == ["smtp", "slack"]
    assert smtp.auths == [("test-user", True)]  # the channel logged in with the password ...
    assert path == f"/{token}"  # ... and posted to the token's URL, but neither is in any message
    for seen in (mail.raw, text_of(mail), body["text"], caplog.text):
        for secret in (broker_secret, "test-smtp-password", token):
            assert secret not in seen
    assert "Reason: broker refused ***; smtp login test-user:***; webhook https://hooks.example/***" in body["text"]
    assert "body repeats ***" in text_of(mail)


def test_a_failing_slack_does_not_stop_smtp(monkeypatch, caplog):
    with SmtpDouble() as smtp, SlackDouble(status=500) as slack:
        use_smtp(monkeypatch, smtp)
        use_slack(monkeypatch, slack)
        with caplog.at_level(logging.ERROR, logger=notifications.__name__):
            assert notify("x", dag_id="d", run_id="r", reason="y") == ["smtp"]
        assert len(smtp.wait(1)) == 1 and len(slack.posts) == 1
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith("Notification through slack failed: ") and "Status Code: 500" in error
    assert "test-key" not in caplog.text


def test_a_dead_smtp_server_does_not_stop_slack(monkeypatch, caplog):
    dead = SmtpDouble()  # never started: its port refuses connections
    with SlackDouble() as slack:
        use_smtp(monkeypatch, dead)
        use_slack(monkeypatch, slack)
        with caplog.at_level(logging.ERROR, logger=notifications.__name__):
            assert notify("x", dag_id="d", run_id="r", reason="y") == ["slack"]
        assert len(slack.wait(1)) == 1
    assert any(r.getMessage().startswith("Notification through smtp failed: ConnectionRefusedError")
               for r in caplog.records)


def test_when_every_channel_fails_the_message_is_logged(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_PORTFOLIO_TEST_SLACK", json.dumps(
        {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{free_port()}", "password": "T0/B0/test-key"}))
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_SLACK_CONN_ID", "portfolio_test_slack")
    with caplog.at_level(logging.WARNING, logger=notifications.__name__):
        assert notify("nobody listens", reason="y") == ["log"]
    assert any(r.getMessage().startswith("[portfolio RED] nobody listens\n") for r in caplog.records)
    assert any(r.getMessage().startswith("Notification through slack failed") for r in caplog.records)


def test_the_notifier_never_raises_out_of_a_callback(monkeypatch, caplog):
    monkeypatch.setattr(notifications, "notify", lambda **kw: (_ for _ in ()).throw(RuntimeError("smtp exploded")))
    with caplog.at_level(logging.ERROR, logger=notifications.__name__):
        PortfolioNotifier()(failure_context(ValueError("x")))  # notify() raising
        PortfolioNotifier(reason="{{ no_such_function() }}")(failure_context(None))  # a template that cannot render
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == notifications.__name__]
    assert len(errors) == 2
    assert errors[0] == "Portfolio notification failed: RuntimeError: smtp exploded"
    assert errors[1].startswith("Portfolio notification failed: UndefinedError")


def test_bad_levels_are_refused_naming_the_value():
    with pytest.raises(InvalidInputError, match="notification level must be one of .*'PURPLE'"):
        PortfolioNotifier(level="PURPLE")
    with pytest.raises(InvalidInputError, match="'amber'"):
        notify("x", reason="y", level="amber")
    assert PortfolioNotifier(level=Level.YELLOW).level == "YELLOW"


def red_report() -> dict:
    return HealthReport("monitoring", datetime(2024, 6, 4, 14, 5, tzinfo=UTC), (
        Check("freshness", Level.RED, 3.0, {"yellow": 1, "red": 2}, "last bar 3 sessions old", "AAPL"),
        Check("store_integrity", Level.RED, None, None, "store unreachable"),
        Check("sharpe", Level.YELLOW, 0.4, {"yellow": 0.5, "red": 0.0}, "sharpe 0.4 <= YELLOW limit 0.5"),
        Check("freshness", Level.GREEN, 0.0, {"yellow": 1, "red": 2}, "fresh", "MSFT"),
    )).to_dict()


def test_a_red_health_report_lists_each_failed_check_with_value_and_threshold(monkeypatch):
    with SlackDouble() as slack:
        use_slack(monkeypatch, slack)
        sent = notify_health(red_report(), dag_id="portfolio_monitoring", run_id="scheduled__2024-06-04T14:05:00+00:00",
                             task_id="monitor")
        [(_, body)] = slack.wait(1)
    assert sent == ["slack"]
    assert body["text"] == (
        "[portfolio RED] monitoring health RED: 2 failed check(s)\n\n"
        "Level: RED\nDAG: portfolio_monitoring\nRun: scheduled__2024-06-04T14:05:00+00:00\nTask: monitor\n"
        "Reason: monitoring health is RED: freshness[AAPL], store_integrity\n"
        f"Link: {BASE}/dags/portfolio_monitoring/runs/scheduled__2024-06-04T14%3A05%3A00%2B00%3A00/tasks/monitor\n\n"
        "Failed checks (2):\n"
        "- freshness[AAPL]: value 3, threshold yellow 1, red 2 (last bar 3 sessions old)\n"
        "- store_integrity: value not measured, threshold none (store unreachable)\n\n"
        "Warnings (1):\n"
        "- sharpe: value 0.4, threshold yellow 0.5, red 0 (sharpe 0.4 <= YELLOW limit 0.5)\n\n"
        "Report time: 2024-06-04T14:05:00+00:00"
    )


def test_notify_health_refuses_what_is_not_a_report():
    with pytest.raises(InvalidInputError, match="notify_health: report must be .* got list"):
        notify_health([], dag_id="d", run_id="r")
    with pytest.raises(InvalidInputError, match="'BLUE'"):
        notify_health({"level": "BLUE", "checks": []}, dag_id="d", run_id="r")


# ---------------------------------------------------------------------------------------------- deadlines


def test_deadline_helpers_build_alerts_that_airflow_serializes():
    import airflow.serialization.serialized_objects as so
    from airflow.sdk import DAG
    from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineReference

    etl = daily_etl_deadline()
    assert etl.interval == timedelta(minutes=45)  # 05:15 + 45 min = 06:00
    assert isinstance(etl.reference, type(DeadlineReference.DAGRUN_LOGICAL_DATE))
    assert isinstance(etl.callback, AsyncCallback)
    assert etl.callback.path == "airflow_provider_portfolio.notifications.deadline_missed"
    assert etl.callback.kwargs == {"what": "daily ETL done by 06:00 (scheduled 05:15)"}
    trader, monitor = trader_cycle_deadline(), monitoring_deadline()
    assert (trader.interval, monitor.interval) == (timedelta(minutes=5), timedelta(minutes=10))
    assert isinstance(trader.reference, type(DeadlineReference.DAGRUN_QUEUED_AT))
    assert monitor.callback.kwargs == {"what": "monitoring within 10 minutes of its start"}
    assert daily_etl_deadline(scheduled_at=time(16, 30), done_by=time(17, 0)).interval == timedelta(minutes=30)

    serializer = getattr(so, "DagSerialization", None) or so.SerializedDAG
    dag = DAG("portfolio_daily_etl_deadline", schedule=None, deadline=[etl, trader])
    data = json.dumps(serializer.to_dict(dag), default=str)
    assert data.count("airflow_provider_portfolio.notifications.deadline_missed") == 2
    assert "DagRunLogicalDateDeadline" in data and "DagRunQueuedAtDeadline" in data and "2700" in data


def test_deadline_helpers_refuse_bad_input():
    with pytest.raises(InvalidInputError, match="interval must be a positive timedelta, got datetime.timedelta"):
        deadline_alert(timedelta(0), what="x")
    with pytest.raises(InvalidInputError, match="reference must be one of .*'run_after'"):
        deadline_alert(timedelta(minutes=1), reference="run_after", what="x")
    with pytest.raises(InvalidInputError, match="what must be a non-empty text"):
        deadline_alert(timedelta(minutes=1), what=" ")
    with pytest.raises(InvalidInputError, match="done_by 05:00:00 must be after scheduled_at 05:15:00"):
        daily_etl_deadline(done_by=time(5, 0))
    with pytest.raises(InvalidInputError, match="trader_cycle_deadline: minutes must be a positive number, got '5'"):
        trader_cycle_deadline("5")


def test_deadline_missed_notifies_with_airflows_deadline_context(monkeypatch):
    # The context Airflow's scheduler hands the callback (Deadline.handle_miss): the run as the REST API shows it.
    context = {
        "dag_run": {"dag_id": "portfolio_auto_trader", "dag_run_id": "scheduled__2024-06-04T14:00:00+00:00",
                    "queued_at": "2024-06-04T14:00:01.5+00:00", "logical_date": "2024-06-04T14:00:00+00:00",
                    "state": "running"},
        "deadline": {"id": 7, "deadline_time": datetime(2024, 6, 4, 14, 5, 1, tzinfo=UTC)},
    }
    with SmtpDouble() as smtp:
        use_smtp(monkeypatch, smtp, to="desk@example.org")
        sent = asyncio.run(deadline_missed(what="auto-trader cycle within 5 minutes of its start", context=context))
        [mail] = smtp.wait(1)
    assert sent == ["smtp"]
    assert mail.subject == "[portfolio RED] deadline missed: auto-trader cycle within 5 minutes of its start"
    text = text_of(mail)
    assert ("DAG: portfolio_auto_trader\nRun: scheduled__2024-06-04T14:00:00+00:00\n"
            "Reason: deadline missed: auto-trader cycle within 5 minutes of its start\n"
            f"Link: {BASE}/dags/portfolio_auto_trader/runs/scheduled__2024-06-04T14%3A00%3A00%2B00%3A00\n\n"
            "Deadline: 2024-06-04T14:05:01+00:00\nRun queued at: 2024-06-04T14:00:01.5+00:00\n"
            "Logical date: 2024-06-04T14:00:00+00:00\nRun state: running") in text


def test_deadline_missed_never_raises(monkeypatch, caplog):
    monkeypatch.setattr(notifications, "notify", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    with caplog.at_level(logging.ERROR, logger=notifications.__name__):
        assert asyncio.run(deadline_missed(what="x", context={"dag_run": {"dag_id": "d"}})) == []
    assert "Deadline notification failed: RuntimeError: boom" in caplog.text


def test_configured_deadline_is_attached_only_when_the_option_is_on(monkeypatch):
    from airflow_provider_portfolio.exceptions import InvalidInputError
    from airflow_provider_portfolio.notifications import configured_deadline, trader_cycle_deadline

    monkeypatch.delenv("AIRFLOW__PORTFOLIO__DEADLINE_ALERTS", raising=False)
    assert configured_deadline(trader_cycle_deadline) is None
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEADLINE_ALERTS", "True")
    alert = configured_deadline(trader_cycle_deadline, minutes=7)
    assert alert.interval == timedelta(minutes=7)
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEADLINE_ALERTS", "sometimes")
    with pytest.raises(InvalidInputError, match=r"\[portfolio\] deadline_alerts must be True or False, got 'sometimes'"):
        configured_deadline(trader_cycle_deadline)
