"""Nightly portfolio report: one self-contained HTML page of the book, and a PNG of its headline chart.

Copy this file into your dags folder; it needs no connection. At 18:00 New York on weekdays, after the close,
``PortfolioReportOperator`` reads the portfolio store and writes ``portfolio-report-daily-<date>.html`` and
``portfolio-report-daily-<date>-headline.png`` into ``$AIRFLOW_HOME/portfolio/reports``: equity and drawdown,
positions and exposure, P&L by symbol, forecast health, data freshness, the day's decisions with their reasons and
risk verdicts, and the session against the one before. The page holds its charts inline (no script, nothing
fetched): open it from disk, attach it to a message, or serve it from a bucket. A re-run of a day replaces that
day's files.

To write elsewhere, set ``out`` below: a folder, or an object-storage URL with the Airflow connection that holds
its credentials (``out="s3://my-bucket/reports", out_conn_id="aws_default"``; the storage's provider must be
installed), or any fsspec URL. The task's XCom holds where the files are and a summary (equity, return, drawdown,
counts). On a store with no book yet (the ETL has run, the trader not) the report says so and the task succeeds.
The universe is Variable ``portfolio.default_tickers``; the book, the auto trader's (``alpaca:alpaca_default`` with
that connection, else ``simulated:default``). A failed task notifies (``[portfolio] notify_*``: SMTP, Slack, else
the log). The weekly summary is ``portfolio_report_weekly``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.report import PortfolioReportOperator
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_report",
    # A cron string runs in the start date's time zone: 18:00 New York time, after the 16:00 close.
    schedule="0 18 * * 1-5",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=15),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "report"],
    doc_md=__doc__,
)
def portfolio_report():
    PortfolioReportOperator(task_id="daily_report", period="daily", pool=DATABASE_POOL)


portfolio_report_dag = portfolio_report()
