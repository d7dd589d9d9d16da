"""Airflow-only twin of ``example_dags/portfolio_env_sanity.py``: the same cron string, a ``@task`` for
``EnvSanityOperator`` in the same pool with Airflow's ``Asset`` for ``ENVIRONMENT_REPORT``, and a plain
``on_failure_callback`` for ``PortfolioNotifier()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import DATABASE_POOL, ENVIRONMENT_REPORT, on_failure
from airflow.sdk import dag, task


@dag(
    dag_id="portfolio_env_sanity",
    schedule="0 5 * * 1-5",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=10),
                  "on_failure_callback": on_failure},
    tags=["portfolio", "monitoring"],
    doc_md=__doc__,
)
def portfolio_env_sanity():
    @task(pool=DATABASE_POOL, outlets=[ENVIRONMENT_REPORT])
    def env_sanity() -> dict[str, Any]:
        return {"level": "GREEN"}

    env_sanity()


portfolio_env_sanity_dag = portfolio_env_sanity()
