"""Test DAGs of the notifications: a task that fails with a connection's password in its error, and a run that misses
its deadline (a few seconds after it was queued, while its task sleeps)."""

from __future__ import annotations

import time
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from airflow_provider_portfolio.notifications import PortfolioNotifier, deadline_alert

START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dag(dag_id="portfolio_test_notify_failure", schedule=None, start_date=START, catchup=False, tags=["test"],
     on_failure_callback=PortfolioNotifier(subject="run of {{ dag.dag_id }} failed"))
def portfolio_test_notify_failure():
    @task(retries=0, on_failure_callback=PortfolioNotifier(reason="broker login"))
    def login() -> None:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection("portfolio_test_broker")
        raise PermissionError(f"broker refused {conn.login}:{conn.password}")

    login()


@dag(dag_id="portfolio_test_deadline", schedule=None, start_date=START, catchup=False, tags=["test"],
     is_paused_upon_creation=False,
     deadline=deadline_alert(timedelta(seconds=5), reference="queued", what="test cycle within 5 seconds"))
def portfolio_test_deadline():
    @task
    def slow_cycle() -> None:
        time.sleep(45)

    slow_cycle()


portfolio_test_notify_failure_dag = portfolio_test_notify_failure()
portfolio_test_deadline_dag = portfolio_test_deadline()
