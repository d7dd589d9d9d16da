"""Notifications from a real Airflow, received by an SMTP server and a Slack webhook double on 127.0.0.1: a task that
fails under `airflow dags test`, and a run that misses its deadline in `airflow standalone` (scheduler + triggerer)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.airflow.realairflow import BIN, AirflowServer, airflow_env, migrated_db, run_airflow
from tests.notifications.doubles import SlackDouble, SmtpDouble

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")]

DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "portfolio_notifications_test.py"
BROKER_SECRET = "test-broker-secret-41d9"
SMTP_PASSWORD = "test-smtp-password-9c2e"
SLACK_TOKEN = "T000/B000/test-key-77ab"


def notify_env(home: Path, smtp: SmtpDouble, slack: SlackDouble, **extra: str) -> dict[str, str]:
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    return airflow_env(
        home,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW_CONN_PORTFOLIO_TEST_SMTP=json.dumps(smtp.connection()),
        AIRFLOW_CONN_PORTFOLIO_TEST_SLACK=json.dumps(slack.connection(SLACK_TOKEN)),
        AIRFLOW_CONN_PORTFOLIO_TEST_BROKER=json.dumps({"conn_type": "generic", "login": "desk",
                                                       "password": BROKER_SECRET}),
        AIRFLOW__PORTFOLIO__NOTIFY_SMTP_CONN_ID="portfolio_test_smtp",
        AIRFLOW__PORTFOLIO__NOTIFY_EMAIL_TO="desk@example.org",
        AIRFLOW__PORTFOLIO__NOTIFY_SLACK_CONN_ID="portfolio_test_slack",
        **extra,
    )


def _in_process_runner_passes_the_exception() -> bool:
    import inspect

    from airflow.sdk.execution_time import supervisor

    return 'context["exception"] = error' in inspect.getsource(supervisor.InProcessTestSupervisor.start)


def test_a_failing_task_is_mailed_and_posted_without_its_secret(tmp_path):
    with SmtpDouble(login="test-user", password=SMTP_PASSWORD) as smtp, SlackDouble() as slack:
        env = notify_env(tmp_path / "home", smtp, slack, AIRFLOW__API__BASE_URL="http://airflow.test:8080")
        run_airflow(env, "db", "migrate")
        proc = subprocess.run([str(BIN / "airflow"), "dags", "test", "portfolio_test_notify_failure", "2024-06-04"],
                              env=env, capture_output=True, text=True, timeout=300, cwd=env["AIRFLOW_HOME"])
        output = proc.stdout + proc.stderr
        mails, posts = smtp.wait(2, timeout=30), slack.wait(2, timeout=30)
    assert len(mails) == 2 and len(posts) == 2, output[-6000:]
    by_subject = {m.subject: html.unescape(m.text) for m in mails}
    task_mail = by_subject["[portfolio RED] task portfolio_test_notify_failure.login failed"]
    run_id = re.search(r"\nRun: (manual__\S+)\n", task_mail).group(1)  # dags test names the run after "now"
    assert f"DAG: portfolio_test_notify_failure\nRun: {run_id}\nTask: login\n" in task_mail
    if _in_process_runner_passes_the_exception():
        assert "Reason: broker login: PermissionError: broker refused desk:***\n" in task_mail
    else:  # Airflow 3.1's in-process runner (dags test) calls back without context["exception"]; workers pass it
        assert "Reason: broker login\n" in task_mail
    assert (f"Link: http://airflow.test:8080/dags/portfolio_test_notify_failure/runs/{quote(run_id, safe='')}"
            "/tasks/login") in task_mail
    # The DAG's own callback (templated subject) names the same run.
    dag_mail = by_subject["[portfolio RED] run of portfolio_test_notify_failure failed"]
    assert f"DAG: portfolio_test_notify_failure\nRun: {run_id}\n" in dag_mail
    texts = sorted(body["text"] for _, body in posts)
    assert [t.splitlines()[0] for t in texts] == ["[portfolio RED] run of portfolio_test_notify_failure failed",
                                                  "[portfolio RED] task portfolio_test_notify_failure.login failed"]
    assert smtp.auths == [("test-user", True), ("test-user", True)]
    # Airflow's own traceback in the `dags test` output shows the task's error as raised; our log lines do not.
    ours = [line for line in output.splitlines() if "airflow_provider_portfolio.notifications" in line]
    assert any("Notification sent through smtp, slack" in line for line in ours)
    for seen in [m.raw for m in mails] + texts + ours:
        assert BROKER_SECRET not in seen and SMTP_PASSWORD not in seen and SLACK_TOKEN not in seen


def test_a_run_that_misses_its_deadline_is_notified_by_the_triggerer(tmp_path):
    home = tmp_path / "home"
    with SmtpDouble() as smtp, SlackDouble() as slack:
        env = notify_env(home, smtp, slack)
        shutil.copyfile(migrated_db(), home / "airflow.db")  # standalone then has nothing to migrate
        extra = {k: v for k, v in env.items() if k.startswith(("AIRFLOW_CONN_", "AIRFLOW__PORTFOLIO__"))}
        with AirflowServer(home, AIRFLOW__CORE__DAGS_FOLDER=env["AIRFLOW__CORE__DAGS_FOLDER"], **extra) as airflow:
            path = "/api/v2/dags/portfolio_test_deadline"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                dags = airflow.request("GET", "/api/v2/dags?dag_id_pattern=portfolio_test_deadline")["dags"]
                if dags:
                    break
                time.sleep(2)
            else:
                raise AssertionError(airflow.tail())
            airflow.request("PATCH", path, {"is_paused": False})
            run_id = airflow.request("POST", f"{path}/dagRuns", {"logical_date": None})["dag_run_id"]
            mails, posts = smtp.wait(1, timeout=120), slack.wait(1, timeout=30)
            run = airflow.request("GET", f"{path}/dagRuns/{run_id}")
            assert mails and posts, airflow.tail()
    assert run["state"] == "running"  # the deadline fired while the task still slept
    [mail] = mails
    assert mail.subject == "[portfolio RED] deadline missed: test cycle within 5 seconds"
    text = html.unescape(mail.text)
    assert f"DAG: portfolio_test_deadline\nRun: {run_id}\nReason: deadline missed: test cycle within 5 seconds\n" in text
    assert "\nDeadline: " in text and "\nRun queued at: " in text
    [(url_path, body)] = posts
    assert url_path == f"/{SLACK_TOKEN}"
    assert body["text"].splitlines()[0] == "[portfolio RED] deadline missed: test cycle within 5 seconds"
    assert SLACK_TOKEN not in body["text"] and SLACK_TOKEN not in mail.raw
