"""Daily signal validation: the desk's forecasts and trading signals against the bars that followed them.

Copy this file into your dags folder; it needs no connection. ``SignalValidationOperator`` looks back 30 days and
validates every stored forecast step whose target bar has closed (its log close, or log return for GARCH: error,
band coverage, direction) and every trading decision whose next bar has closed (the close-to-close return of that
bar against the sign of the decision's score, with its confidence). Targets not closed yet wait for a later run, and
days this DAG missed are filled by the next run; a retry validates nothing twice. The rows land in the store's
``signal_validations``; the window's hit rate, MAE and RMSE, coverage against the nominal level and the calibration
of confidence, per model and trading DAG and per symbol, are a ``signal_validation`` study (``studies``) and the
task's XCom. Hourly monitoring grades them (``validation_*`` checks; thresholds in ``portfolio.health_thresholds``).

Two tasks, both in the database pool:

- ``signal_validation``: the daily bars (``1Day``): ``portfolio_forecast``'s forecasts and daily trading decisions,
  on the bars ``portfolio_daily_etl`` stores.
- ``trader_signal_validation``: the 30-minute decisions of ``portfolio_auto_trader`` (``timeframe="30Min"``,
  ``kinds=["signal"]``). The trader fetches its 30-minute bars each cycle and never stores them, so the bars that
  followed its decisions are fetched from the market-data sources (``sources``; default: the default data
  connections that exist, else the synthetic market, as the trader reads) and never stored; only closed bars count.
  A symbol no source serves is retried the next day while it is in the window.

Runs daily at 02:05 New York time, after the evening's bars have closed and before the morning's jobs.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.validation import SignalValidationOperator
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_signal_validation",
    schedule="5 2 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "monitoring", "studies"],
    doc_md=__doc__,
)
def portfolio_signal_validation():
    SignalValidationOperator(task_id="signal_validation", lookback_days=30, pool=DATABASE_POOL)
    SignalValidationOperator(task_id="trader_signal_validation", timeframe="30Min", kinds=["signal"],
                             lookback_days=30, pool=DATABASE_POOL)


portfolio_signal_validation_dag = portfolio_signal_validation()
