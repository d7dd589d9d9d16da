"""BTC/USD trading agent: every hour, around the clock, on 1-hour bars, 60% sentiment and 40% technical.

Crypto trades 24/7, so the market-hours step always passes and positions are fractional. The same pipeline
as ``agent_tsla_trading`` (see ``airflow_provider_portfolio.agents``). Needs no connection: synthetic market
and simulated broker until ``alpaca_default`` exists.
"""

from __future__ import annotations

import pendulum
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_portfolio.agents import trading_agent_dag

agent_btc_trading = trading_agent_dag(
    dag_id="agent_btc_trading",
    symbol="BTC/USD",
    schedule=CronTriggerTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 2, tz="UTC"),
    timeframe="1Hour",
    risk_limits={"min_confidence": 0.3, "max_position_fraction": 0.10, "max_orders_per_symbol_per_day": 24},
    fraction=0.08,
    doc_md=__doc__,
)
