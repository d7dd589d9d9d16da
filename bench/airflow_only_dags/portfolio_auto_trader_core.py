"""Airflow-only twin of ``example_dags/portfolio_auto_trader_core.py``: Airflow's
``MultipleCronTriggerTimetable`` at the ends of the hourly bars of a regular NYSE session (10:30 to 15:30,
then 16:00; holidays and early closes not known) for ``MarketSessionTimetable("XNYS", every=60)``, and a
``@task`` for ``AutoTraderOperator`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task
from airflow.timetables.trigger import MultipleCronTriggerTimetable

CORE = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA"]


@dag(
    dag_id="portfolio_auto_trader_core",
    schedule=MultipleCronTriggerTimetable("30 10-15 * * 1-5", "0 16 * * 1-5", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(minutes=30)},
    tags=["portfolio", "example", "trading"],
    doc_md=__doc__,
)
def portfolio_auto_trader_core():
    @task
    def auto_trader(symbols: list[str], timeframe: str, simulated_account: str, risk_limits: dict[str, Any],
                    max_trades_per_day: int) -> dict[str, Any]:
        return {"symbols": symbols}

    auto_trader(
        symbols=CORE,
        timeframe="1Hour",
        simulated_account="core",
        risk_limits={"max_order_notional": 5_000, "max_position_fraction": 0.15, "min_confidence": 0.25},
        max_trades_per_day=10,
    )


portfolio_auto_trader_core_dag = portfolio_auto_trader_core()
