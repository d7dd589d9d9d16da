"""Airflow-only twin of ``example_dags/portfolio_daily_etl.py``: the same cron string, Airflow's ``Asset``
for the provider's ``DAILY_BARS``, a ``@task`` for ``PortfolioETLOperator`` in the same pool, a plain
``on_failure_callback`` for ``PortfolioNotifier()`` and Airflow's ``DeadlineAlert`` (the logical date + 45 minutes)
for ``daily_etl_deadline()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import API_POOL, DAILY_BARS, deadline, on_failure
from airflow.sdk import dag, task

DEFAULT_TICKERS = "AAPL,MSFT,NVDA,AMZN,GOOGL,META,TSLA,JPM,SPY,QQQ,IWM,BTC/USD"


@dag(
    dag_id="portfolio_daily_etl",
    schedule="15 5 * * 1-5",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": on_failure,
    },
    deadline=deadline(timedelta(minutes=45), reference="logical_date",
                      what="daily ETL done by 06:00 (scheduled 05:15)"),
    tags=["portfolio", "etl"],
    doc_md=__doc__,
)
def portfolio_daily_etl():
    @task(pool=API_POOL, outlets=[DAILY_BARS])
    def load_daily_bars(symbols: str, timeframe: str, history_sessions: int) -> dict[str, Any]:
        return {"symbols": symbols}

    load_daily_bars(
        symbols="{{ var.value.get('portfolio.default_tickers', '" + DEFAULT_TICKERS + "') }}",
        timeframe="1Day",
        history_sessions=252,
    )


portfolio_daily_etl_dag = portfolio_daily_etl()
