"""Core auto trader: once an hour in NYSE sessions, for the core tickers, on hourly bars.

``MarketSessionTimetable`` creates a run for every hour of a session and none outside (weekends, holidays,
after an early close): no sensor needed. Each run decides at its data interval's end on the hourly bar that
just closed. Same operator, guarantees and switches as ``portfolio_auto_trader``; a smaller universe and a
tighter order budget.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.operators.trading import AutoTraderOperator
from airflow_provider_portfolio.timetables.market_session import MarketSessionTimetable

CORE = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA"]


@dag(
    dag_id="portfolio_auto_trader_core",
    schedule=MarketSessionTimetable("XNYS", every=60),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    # A stuck cycle fails well before the next hourly bar's run is due.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(minutes=30)},
    tags=["portfolio", "example", "trading"],
    doc_md=__doc__,
)
def portfolio_auto_trader_core():
    AutoTraderOperator(
        task_id="auto_trader",
        symbols=CORE,
        timeframe="1Hour",
        simulated_account="core",
        risk_limits={"max_order_notional": 5_000, "max_position_fraction": 0.15, "min_confidence": 0.25},
        max_trades_per_day=10,
    )


portfolio_auto_trader_core_dag = portfolio_auto_trader_core()
