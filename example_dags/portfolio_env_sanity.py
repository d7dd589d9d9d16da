"""Environment check before the open: is the desk sound enough to trade today?

Copy this file into your dags folder; it needs no connection. ``EnvSanityOperator`` checks Python and every
dependency against the provider's declared ranges, the ``[portfolio]`` config, the store (reachable, migrated),
the connections (those listed in ``connection_ids`` must exist; add ``test_connections=True`` to call each one's
Test Connection too: it spends one Alpha Vantage call of the day's 25), a session today on the exchange calendar,
the kill switch (Variable ``portfolio.kill_switch``) and free disk for the store and the logs. The report is the
task's XCom and a row of the store's ``health_reports``, where the trader's desk gate reads it: a RED check today
skips trading until the check passes. A RED check also skips this DAG's downstream tasks (add your own after
``env_sanity``) and notifies.

Runs weekdays at 05:00 New York time. ``portfolio_master`` runs the same check at the head of the desk's day; with
the master enabled, pause this one.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.assets import ENVIRONMENT_REPORT
from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.environment import EnvSanityOperator
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_env_sanity",
    schedule="0 5 * * 1-5",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=10),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "monitoring"],
    doc_md=__doc__,
)
def portfolio_env_sanity():
    EnvSanityOperator(task_id="env_sanity", pool=DATABASE_POOL, outlets=[ENVIRONMENT_REPORT])


portfolio_env_sanity_dag = portfolio_env_sanity()
