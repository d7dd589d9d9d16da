"""Daily signal validation: the desk's forecasts and trading signals against the bars that followed them.

Copy this file into your dags folder; it needs no connection. ``SignalValidationOperator`` looks back 30 days and
validates every stored forecast step whose target bar has closed (its log close, or log return for GARCH: error,
band coverage, direction) and every trading decision whose next bar has closed (the close-to-close return of that
bar against the sign of the decision's score, with its confidence). Targets not closed yet wait for a later run, and
days this DAG missed are filled by the next run; a retry validates nothing twice. The rows land in the store's
``signal_validations``; the window's hit rate, MAE and RMSE, coverage against the nominal level and the calibration
of confidence, per model and trading DAG and per symbol, are a ``signal_validation`` study (``studies``) and the
task's XCom. Hourly monitoring grades them (``validation_*`` checks; thresholds in ``portfolio.health_thresholds``).

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


portfolio_signal_validation_dag = portfolio_signal_validation()
