"""Nightly housekeeping of the portfolio store: integrity, retention, backup, VACUUM/ANALYZE.

Copy this file into your dags folder; it needs no connection. ``HousekeepingOperator`` first checks the store's
integrity (SQLite ``PRAGMA integrity_check``): a corrupt SQLite store is restored from its last good backup, the
corrupt file kept as ``<store>.corrupt-<stamp>``, and the restore is notified; with no good backup the task fails,
changing nothing. Then it deletes rows past their retention (forecasts and model evaluations after 180 days, health
reports after 90; bars and the trading ledger are kept; Variable ``portfolio.retention_days``, a JSON object
table -> days, overrides), backs the SQLite store up online into ``[portfolio] backup_dir`` (default
``<store file>.backups`` beside it; the newest 7 kept; a PostgreSQL store is left to ``pg_dump`` and the server's
own backups) and runs ANALYZE, and VACUUM when a tenth of the store is free pages.

Runs daily at 03:30 New York time, while the equity desk is quiet; VACUUM holds the SQLite store's write lock while
it runs. A failure notifies through ``[portfolio] notify_*`` (SMTP, Slack; else the log). To restore by hand:
``airflow-portfolio restore-store --store sqlite:///PATH/portfolio.db``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.housekeeping import HousekeepingOperator
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_housekeeping",
    schedule="30 3 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10), "execution_timeout": timedelta(hours=2),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "maintenance"],
    doc_md=__doc__,
)
def portfolio_housekeeping():
    HousekeepingOperator(task_id="housekeeping", pool=DATABASE_POOL)


portfolio_housekeeping_dag = portfolio_housekeeping()
