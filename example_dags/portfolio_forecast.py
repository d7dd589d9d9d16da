"""Forecasting: every model over the desk's universe after each daily ETL, then the ensemble.

Copy this file (with ``portfolio_daily_etl.py``) into your dags folder. It is scheduled on the Asset
``portfolio_daily_bars``: each successful ``portfolio_daily_etl`` run starts one forecast run, so
forecasts always follow fresh bars without a polling sensor. Trigger it by hand to forecast from what
the store holds now.

Tasks (each reads bars from the store and writes forecasts and evaluations back; XCom carries only
summaries): ``ssa``, ``samossa`` and ``mssa`` (the SSA family), ``garch`` (volatility), ``sarimax``
(statsmodels on CPU processes) and ``ensemble``, which combines this run's price-level forecasts of
the models that beat the naive baseline in their backtest, weighted by inverse backtest MSE. The
ensemble runs when the models are done even if one failed (it uses the models present); it updates the Asset
``portfolio_forecasts``. A failed task notifies (``[portfolio] notify_*``: SMTP, Slack, else the log).

GPU: the SSA-family and GARCH tasks run in ``[portfolio] gpu_pool`` on ``[portfolio] gpu_queue`` and
use CuPy where the worker has a GPU. The defaults (``gpu_pool``, ``default``) work on any Airflow:
``python -m airflow_provider_portfolio setup`` creates ``gpu_pool`` (one slot per GPU), and where it does not
exist the provider's cluster policy runs the tasks in ``default_pool``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.assets import DAILY_BARS, FORECASTS
from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.forecasting import (
    EnsembleForecastOperator,
    GarchForecastOperator,
    SarimaxForecastOperator,
    SSAForecastOperator,
)
from airflow_provider_portfolio.variables import TICKERS_TEMPLATE

SYMBOLS = TICKERS_TEMPLATE


@dag(
    dag_id="portfolio_forecast",
    schedule=[DAILY_BARS],
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(hours=1),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "forecast"],
    doc_md=__doc__,
)
def portfolio_forecast():
    common = {"symbols": SYMBOLS, "timeframe": "1Day", "history": 1000, "horizon": 5}
    models = [
        SSAForecastOperator(task_id="ssa", method="ssa", **common),
        SSAForecastOperator(task_id="samossa", method="samossa", **common),
        SSAForecastOperator(task_id="mssa", method="mssa", **common),
        SarimaxForecastOperator(task_id="sarimax", **common),
    ]
    GarchForecastOperator(task_id="garch", **common)
    models >> EnsembleForecastOperator(
        task_id="ensemble",
        models=["ssa", "samossa", "mssa", "sarimax"],
        symbols=SYMBOLS,
        trigger_rule="all_done",
        outlets=[FORECASTS],
    )


portfolio_forecast_dag = portfolio_forecast()
