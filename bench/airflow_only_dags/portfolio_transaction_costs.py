"""Airflow-only twin of ``example_dags/portfolio_transaction_costs.py``: the same cron string, a ``@task`` for
``TransactionCostsOperator`` in the same pool, and a plain ``on_failure_callback`` for ``PortfolioNotifier()`` (no
provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import DATABASE_POOL, on_failure
from airflow.sdk import dag, task


@dag(
    dag_id="portfolio_transaction_costs",
    schedule="15 4 1 * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": on_failure},
    tags=["portfolio", "studies"],
    doc_md=__doc__,
)
def portfolio_transaction_costs():
    @task(pool=DATABASE_POOL)
    def transaction_costs(lookback_days: int, min_fills: int, apply: bool) -> dict[str, Any]:
        return {"status": "ok"}

    transaction_costs(lookback_days=90, min_fills=20, apply=False)


portfolio_transaction_costs_dag = portfolio_transaction_costs()
