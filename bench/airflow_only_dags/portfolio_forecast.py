"""Airflow-only twin of ``example_dags/portfolio_forecast.py``: scheduled on Airflow's ``Asset`` for the
provider's ``DAILY_BARS``, a ``@task`` for each forecasting operator (the SSA family and GARCH in the default
``[portfolio] gpu_pool`` and ``gpu_queue``), Airflow's ``Asset`` for ``FORECASTS`` as the ensemble's outlet and a
plain ``on_failure_callback`` for ``PortfolioNotifier()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import DAILY_BARS, FORECASTS, GPU_POOL, GPU_QUEUE, SYMBOLS, on_failure
from airflow.sdk import dag, task


@dag(
    dag_id="portfolio_forecast",
    schedule=[DAILY_BARS],
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(hours=1),
                  "on_failure_callback": on_failure},
    tags=["portfolio", "forecast"],
    doc_md=__doc__,
)
def portfolio_forecast():
    @task(pool=GPU_POOL, queue=GPU_QUEUE)
    def ssa(method: str, symbols: str, timeframe: str, history: int, horizon: int) -> dict[str, Any]:
        return {"method": method}

    @task
    def sarimax(symbols: str, timeframe: str, history: int, horizon: int) -> dict[str, Any]:
        return {"method": "sarimax"}

    @task(pool=GPU_POOL, queue=GPU_QUEUE)
    def garch(symbols: str, timeframe: str, history: int, horizon: int) -> dict[str, Any]:
        return {"method": "garch"}

    @task(trigger_rule="all_done", outlets=[FORECASTS])
    def ensemble(models: list[str], symbols: str) -> dict[str, Any]:
        return {"models": models}

    common = {"symbols": SYMBOLS, "timeframe": "1Day", "history": 1000, "horizon": 5}
    models = [
        ssa.override(task_id="ssa")(method="ssa", **common),
        ssa.override(task_id="samossa")(method="samossa", **common),
        ssa.override(task_id="mssa")(method="mssa", **common),
        sarimax(**common),
    ]
    garch(**common)
    models >> ensemble(models=["ssa", "samossa", "mssa", "sarimax"], symbols=SYMBOLS)


portfolio_forecast_dag = portfolio_forecast()
