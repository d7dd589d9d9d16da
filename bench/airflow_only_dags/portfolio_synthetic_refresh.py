"""Airflow-only twin of ``example_dags/portfolio_synthetic_refresh.py``: the same cron string, a ``@task`` for
``SyntheticRefreshOperator`` and a plain ``on_failure_callback`` for ``PortfolioNotifier()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import on_failure
from airflow.sdk import dag, task


@dag(
    dag_id="portfolio_synthetic_refresh",
    schedule="0 1 * * 1",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": on_failure},
    tags=["portfolio", "synthetic"],
    doc_md=__doc__,
)
def portfolio_synthetic_refresh():
    @task
    def refresh_datasets(keep: int) -> dict[str, Any]:
        return {"latest": "calm"}

    refresh_datasets(keep=4)


portfolio_synthetic_refresh_dag = portfolio_synthetic_refresh()
