"""The desk's day in one DAG: environment check, daily ETL and monitoring, with forecasting following by Asset.

Copy this file (with ``portfolio_forecast.py`` and ``portfolio_auto_trader.py``) into your dags folder; it needs no
connection. Weekdays at 05:00 New York time:

1. ``env_sanity`` (``EnvSanityOperator``): versions, config, store, connections, today's session, kill switch,
   disk. A RED check skips everything after it: no ETL, no forecasts, and the trader's desk gate keeps trading
   off for the day (the report is in the store).
2. ``daily_etl``: the universe's daily bars (Variable ``portfolio.default_tickers``) into the store. It updates
   Asset ``portfolio_daily_bars``, which starts ``portfolio_forecast`` (its ensemble updates
   ``portfolio_forecasts``).
3. ``monitoring``, alongside forecasting: the health report of the freshly loaded desk (RED notifies).

The trader (``portfolio_auto_trader``, every 30 minutes in market hours) runs on its own schedule behind its
``desk_gate``, which skips the cycle when today's environment check failed, the latest health report is RED or
the daily bars are stale, with the reason in its log and XCom. Each DAG also runs alone: trigger any of them by
hand. With this DAG enabled, pause ``portfolio_env_sanity`` and ``portfolio_daily_etl`` (it runs both).

A run not done by 06:00 New York notifies (a deadline alert, with ``[portfolio] deadline_alerts = True``), as does
any failed task.
"""

from __future__ import annotations

from datetime import time, timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.assets import DAILY_BARS, ENVIRONMENT_REPORT, HEALTH_REPORT
from airflow_provider_portfolio.notifications import PortfolioNotifier, configured_deadline, daily_etl_deadline
from airflow_provider_portfolio.operators.environment import EnvSanityOperator
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.operators.monitoring import MonitoringOperator
from airflow_provider_portfolio.pools import API_POOL, DATABASE_POOL
from airflow_provider_portfolio.variables import TICKERS_TEMPLATE as SYMBOLS


@dag(
    dag_id="portfolio_master",
    schedule="0 5 * * 1-5",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True,
                  "execution_timeout": timedelta(hours=2), "on_failure_callback": PortfolioNotifier()},
    deadline=configured_deadline(daily_etl_deadline, scheduled_at=time(5, 0)),
    tags=["portfolio", "master"],
    doc_md=__doc__,
)
def portfolio_master():
    env_sanity = EnvSanityOperator(task_id="env_sanity", pool=DATABASE_POOL, outlets=[ENVIRONMENT_REPORT])
    daily_etl = PortfolioETLOperator(task_id="daily_etl", symbols=SYMBOLS, timeframe="1Day", history_sessions=252,
                                     pool=API_POOL, outlets=[DAILY_BARS])
    monitoring = MonitoringOperator(task_id="monitoring", symbols=SYMBOLS, pool=DATABASE_POOL, outlets=[HEALTH_REPORT],
                                    trigger_rule="all_done")
    env_sanity >> daily_etl >> monitoring


portfolio_master_dag = portfolio_master()
