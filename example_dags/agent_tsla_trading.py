"""TSLA trading agent: every 5 minutes in NYSE hours, on 5-minute bars, 60% sentiment and 40% technical.

check market hours -> fetch market data -> sentiment and technical analysis (in parallel) -> decision ->
risk validation -> execute -> log performance, one task each (see ``airflow_provider_portfolio.agents``).
Needs no connection: without one it trades the synthetic market on the simulated broker, whose book is in
the portfolio store. Add an ``alpaca_default`` connection (paper) and it trades Alpaca paper.
"""

from __future__ import annotations

import pendulum
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_portfolio.agents import trading_agent_dag

agent_tsla_trading = trading_agent_dag(
    dag_id="agent_tsla_trading",
    symbol="TSLA",
    schedule=CronTriggerTimetable("*/5 9-15 * * 1-5", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    timeframe="5Min",
    risk_limits={"min_confidence": 0.3, "max_position_fraction": 0.10, "max_orders_per_symbol_per_day": 6},
    fraction=0.08,
    doc_md=__doc__,
)
