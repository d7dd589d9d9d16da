"""The desk's day on the cluster: mapped ETL chunks, GPU-routed forecasting, the trader's chunks, monitoring.

The universe size, the chunk size and the day come from the run's conf (``symbols``, ``chunk``, ``as_of``), so the
same DAG serves the load run (500 symbols) and the smaller fault runs. Forecasting uses the GPU-capable operators
(SSA, GARCH), which go to ``[portfolio] gpu_queue`` and ``gpu_pool``; every other task stays on ``default``.
The trader trades the simulated broker (its book in the PostgreSQL store) at the close of ``as_of``'s session.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from cluster_common import DESK_TRADER_ARGS, universe_chunks, universe_symbols

from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.operators.forecasting import GarchForecastOperator, SSAForecastOperator
from airflow_provider_portfolio.operators.monitoring import MonitoringOperator
from airflow_provider_portfolio.operators.trading import AutoTraderOperator


@dag(
    dag_id="cluster_desk_day",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5), "execution_timeout": timedelta(minutes=30)},
    params={
        "symbols": Param(24, type="integer", minimum=1),
        "chunk": Param(12, type="integer", minimum=1),
        "start": Param("2024-01-02", type="string"),
        # The session before as_of's: a forecast made on as_of's own bar (closing at 16:00) is unknown at 15:00.
        "end": Param("2024-12-30", type="string"),
        "as_of": Param("2024-12-31T15:00:00-05:00", type="string"),
    },
    tags=["test", "cluster"],
)
def cluster_desk_day():
    parts = task(universe_chunks, task_id="chunks")()
    everything = task(universe_symbols, task_id="symbols")()
    etl = PortfolioETLOperator.partial(task_id="etl", start="{{ params.start }}", end="{{ params.end }}",
                                       mode="full").expand(symbols=parts)
    common = {"symbols": everything, "timeframe": "1Day", "history": 252, "horizon": 5}
    ssa = SSAForecastOperator(task_id="ssa", method="ssa", **common)
    garch = GarchForecastOperator(task_id="garch", **common)
    trade = AutoTraderOperator.partial(
        task_id="trade", timeframe="1Day", as_of="{{ params.as_of }}", forecast_model="ssa",
        simulated_account="cluster", max_active_tis_per_dagrun=1, **DESK_TRADER_ARGS,
    ).expand(symbols=parts)
    monitor = MonitoringOperator(task_id="monitoring", symbols=everything, account="simulated:cluster",
                                 notify_on_red=False, trigger_rule="all_done")
    [parts, everything] >> etl >> [ssa, garch] >> trade >> monitor


cluster_desk_day()
