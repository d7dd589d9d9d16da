"""Airflow-only twin of ``example_dags/portfolio_master.py``: the same cron string, a ``@task`` for each of
``EnvSanityOperator``, ``PortfolioETLOperator`` and ``MonitoringOperator`` (same pools, trigger rule and Airflow
``Asset`` outlets), a plain ``on_failure_callback`` for ``PortfolioNotifier()`` and Airflow's ``DeadlineAlert``
(the logical date + 60 minutes: 06:00 for the 05:00 schedule) for ``daily_etl_deadline(scheduled_at=time(5, 0))``
(no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import (
    API_POOL,
    DAILY_BARS,
    DATABASE_POOL,
    ENVIRONMENT_REPORT,
    HEALTH_REPORT,
    SYMBOLS,
    deadline,
    on_failure,
)
from airflow.sdk import dag, task


@dag(
    dag_id="portfolio_master",
    schedule="0 5 * * 1-5",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True,
                  "execution_timeout": timedelta(hours=2), "on_failure_callback": on_failure},
    deadline=deadline(timedelta(minutes=60), reference="logical_date",
                      what="daily ETL done by 06:00 (scheduled 05:00)"),
    tags=["portfolio", "master"],
    doc_md=__doc__,
)
def portfolio_master():
    @task(pool=DATABASE_POOL, outlets=[ENVIRONMENT_REPORT])
    def env_sanity() -> dict[str, Any]:
        return {"level": "GREEN"}

    @task(pool=API_POOL, outlets=[DAILY_BARS])
    def daily_etl(symbols: str, timeframe: str, history_sessions: int) -> dict[str, Any]:
        return {"symbols": symbols}

    @task(pool=DATABASE_POOL, outlets=[HEALTH_REPORT], trigger_rule="all_done")
    def monitoring(symbols: str) -> dict[str, Any]:
        return {"level": "GREEN"}

    env_sanity() >> daily_etl(symbols=SYMBOLS, timeframe="1Day", history_sessions=252) >> monitoring(symbols=SYMBOLS)


portfolio_master_dag = portfolio_master()
