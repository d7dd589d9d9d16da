"""Hourly health report: GREEN / YELLOW / RED for data, store, vendors, forecasts and the book.

Copy this file into your dags folder; it needs no connection. ``MonitoringOperator`` checks each symbol's bars
against the calendar's last closed bar, the store's integrity and schema, each configured vendor's cheapest call
(never Alpha Vantage's scarce quota unless ``probe_scarce=True``), the share of healthy forecast models, and the
trader's book (risk rejections, drawdown, win rate, profit factor, Sharpe, Sortino). Thresholds: the README's
defaults, overridden by Variable ``portfolio.health_thresholds`` (a JSON object). Each report is a row of the
store's ``health_reports`` (the trader's desk gate skips trading while the latest is RED) and the task's XCom.

RED notifies through ``[portfolio] notify_*`` (SMTP, Slack; else the log). Set ``reduce_only_on_red=True`` below
to also switch Variable ``portfolio.kill_switch`` from ``active`` to ``reduce_only`` on RED. A run not done
within 10 minutes of its start notifies (a deadline alert, with ``[portfolio] deadline_alerts = True``).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.assets import HEALTH_REPORT
from airflow_provider_portfolio.notifications import PortfolioNotifier, configured_deadline, monitoring_deadline
from airflow_provider_portfolio.operators.monitoring import MonitoringOperator
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_monitoring",
    schedule="5 * * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(minutes=10),
                  "on_failure_callback": PortfolioNotifier()},
    deadline=configured_deadline(monitoring_deadline),
    tags=["portfolio", "monitoring"],
    doc_md=__doc__,
)
def portfolio_monitoring():
    MonitoringOperator(task_id="monitoring", reduce_only_on_red=False, pool=DATABASE_POOL, outlets=[HEALTH_REPORT])


portfolio_monitoring_dag = portfolio_monitoring()
