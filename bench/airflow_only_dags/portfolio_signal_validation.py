"""Airflow-only twin of ``example_dags/portfolio_signal_validation.py``: the same cron string, a ``@task`` for each
``SignalValidationOperator`` (the daily ``signal_validation`` and the 30-minute ``trader_signal_validation``) in the
same pool, and a plain ``on_failure_callback`` for ``PortfolioNotifier()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import DATABASE_POOL, on_failure
from airflow.sdk import dag, task


@dag(
    dag_id="portfolio_signal_validation",
    schedule="5 2 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": on_failure},
    tags=["portfolio", "monitoring", "studies"],
    doc_md=__doc__,
)
def portfolio_signal_validation():
    @task(pool=DATABASE_POOL)
    def signal_validation(lookback_days: int) -> dict[str, Any]:
        return {"status": "ok"}

    @task(pool=DATABASE_POOL)
    def trader_signal_validation(timeframe: str, kinds: list[str], lookback_days: int) -> dict[str, Any]:
        return {"status": "ok"}

    signal_validation(lookback_days=30)
    trader_signal_validation(timeframe="30Min", kinds=["signal"], lookback_days=30)


portfolio_signal_validation_dag = portfolio_signal_validation()
