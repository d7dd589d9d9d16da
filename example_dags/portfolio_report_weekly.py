"""Weekly portfolio summary: the nightly report's page over the week, week over week.

Copy this file into your dags folder; it needs no connection. Saturdays at 09:00 New York,
``PortfolioReportOperator`` writes ``portfolio-report-weekly-<date>.html`` and its ``-headline.png`` into
``$AIRFLOW_HOME/portfolio/reports``: the same sections as ``portfolio_report`` over the 7 days to the run, and a
week-over-week table (return, P&L, maximum drawdown, orders, fills, traded notional, commissions, closed trades,
realised P&L, win rate, decisions and risk rejections against the week before). Set ``out`` (and ``out_conn_id``)
to send it to object storage, as in ``portfolio_report``. A failed task notifies.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.report import PortfolioReportOperator
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_report_weekly",
    schedule="0 9 * * 6",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=15),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "report"],
    doc_md=__doc__,
)
def portfolio_report_weekly():
    PortfolioReportOperator(task_id="weekly_report", period="weekly", pool=DATABASE_POOL)


portfolio_report_weekly_dag = portfolio_report_weekly()
