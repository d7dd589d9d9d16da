"""Daily ETL: clean daily bars for the desk's universe, into the portfolio store.

Copy this file into your dags folder. With no connections configured it runs on the synthetic
market and stores bars in the embedded SQLite store ($AIRFLOW_HOME/portfolio/portfolio.db).
To use real data, add a connection named ``alpaca_default``, ``alphavantage_default`` or
``finnhub_default``: with no ``sources`` given, the task uses those that exist, in that order, and
no longer the synthetic market. Or list connection ids in ``sources`` yourself. To use PostgreSQL,
create the connection named by ``[portfolio] store_conn_id`` (default ``portfolio_store_default``).

The universe comes from Variable ``portfolio.default_tickers`` (a JSON list or comma-separated
tickers), read when the task runs, never at parse time. For hundreds of symbols, map the operator
over chunks (see the README, "Large universes").

Runs weekdays at 05:15 New York time and loads the last closed session; a run triggered by hand
(no logical date) loads the last session closed before it was triggered. Each successful run updates
the Asset ``portfolio_daily_bars``, which schedules ``portfolio_forecast``. A run not done by 06:00 New York
notifies (a deadline alert, with ``[portfolio] deadline_alerts = True``), as does a failed task (``[portfolio] notify_*``: SMTP, Slack, else the log). The task
runs in pool ``api_pool`` (``python -m airflow_provider_portfolio setup`` creates it; where it does not exist the
task runs in ``default_pool``).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.assets import DAILY_BARS
from airflow_provider_portfolio.notifications import PortfolioNotifier, configured_deadline, daily_etl_deadline
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.pools import API_POOL
from airflow_provider_portfolio.variables import TICKERS_TEMPLATE


@dag(
    dag_id="portfolio_daily_etl",
    # A cron string runs in the start date's time zone: 05:15 New York time, DST included.
    schedule="15 5 * * 1-5",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        # A first load of a year of bars through rate-limited vendors takes a while; a stuck one must not
        # hold its worker slot until the next morning.
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": PortfolioNotifier(),
    },
    # Done by 06:00 New York (the 05:15 schedule + 45 minutes), with [portfolio] deadline_alerts = True.
    deadline=configured_deadline(daily_etl_deadline),
    tags=["portfolio", "etl"],
    doc_md=__doc__,
)
def portfolio_daily_etl():
    PortfolioETLOperator(
        task_id="load_daily_bars",
        symbols=TICKERS_TEMPLATE,
        timeframe="1Day",
        history_sessions=252,
        pool=API_POOL,
        # Success updates the asset that schedules portfolio_forecast.
        outlets=[DAILY_BARS],
    )


portfolio_daily_etl_dag = portfolio_daily_etl()
