"""Airflow-only twin of ``example_dags/portfolio_auto_trader.py``: the same cron schedule and params, a
``@task`` for ``MarketHoursSensor``, a ``@task`` for ``DeskGateOperator``, the same ``universe`` task and a ``@task``
for ``AutoTraderOperator`` in the same pool, mapped over its chunks; a plain ``on_failure_callback`` for
``PortfolioNotifier()`` and Airflow's ``DeadlineAlert`` (5 minutes after the run is queued) for
``trader_cycle_deadline()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import TRADING_POOL, deadline, on_failure
from airflow.sdk import Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

UNIVERSE = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "SPY", "QQQ", "IWM", "BTC/USD"]
CHUNK = 6


@dag(
    dag_id="portfolio_auto_trader",
    schedule=CronTriggerTimetable("*/30 7-19 * * 1-5", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(minutes=15),
                  "on_failure_callback": on_failure},
    deadline=deadline(timedelta(minutes=5), reference="queued", what="auto-trader cycle within 5 minutes of its start"),
    params={"exchange": Param("XNYS", type="string", description="calendar the market-hours sensor watches")},
    tags=["portfolio", "example", "trading"],
    doc_md=__doc__,
)
def portfolio_auto_trader():
    @task
    def market_hours(exchange: str, when_closed: str) -> dict[str, Any]:
        return {"exchange": exchange, "open": True}

    @task
    def desk_gate(exchange: str, require: list[str]) -> dict[str, Any]:
        return {"exchange": exchange, "sound": True}

    @task
    def universe() -> list[list[str]]:
        return [UNIVERSE[i:i + CHUNK] for i in range(0, len(UNIVERSE), CHUNK)]

    @task(max_active_tis_per_dagrun=1, pool=TRADING_POOL)
    def auto_trader(symbols: list[str], timeframe: str, risk_limits: dict[str, Any],
                    max_trades_per_day: int) -> dict[str, Any]:
        return {"symbols": symbols}

    market_open = market_hours(exchange="{{ params.exchange }}", when_closed="skip")
    gate = desk_gate(exchange="{{ params.exchange }}", require=[])
    chunks = universe()
    auto_trader.partial(
        timeframe="30Min",
        risk_limits={"max_order_notional": 10_000, "max_position_fraction": 0.10, "max_open_positions": 20,
                     "daily_loss_limit": 0.03, "min_confidence": 0.25},
        max_trades_per_day=40,
    ).expand(symbols=chunks)
    market_open >> gate >> chunks


portfolio_auto_trader_dag = portfolio_auto_trader()
