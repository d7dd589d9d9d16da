"""Airflow-only twin of ``example_dags/portfolio_housekeeping.py``: the same cron string, a ``@task`` for
``HousekeepingOperator`` in the same pool, and a plain ``on_failure_callback`` for ``PortfolioNotifier()`` (no
provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import DATABASE_POOL, on_failure
from airflow.sdk import dag, task


@dag(
    dag_id="portfolio_housekeeping",
    schedule="30 3 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10), "execution_timeout": timedelta(hours=2),
                  "on_failure_callback": on_failure},
    tags=["portfolio", "maintenance"],
    doc_md=__doc__,
)
def portfolio_housekeeping():
    @task(pool=DATABASE_POOL)
    def housekeeping() -> dict[str, Any]:
        return {"deleted": 0}

    housekeeping()


portfolio_housekeeping_dag = portfolio_housekeeping()
