"""IWM trading agent: every 15 minutes in NYSE hours, on 15-minute bars, 60% sentiment and 40% technical.

The same pipeline as ``agent_tsla_trading`` (see ``airflow_provider_portfolio.agents``) for the Russell
2000 ETF. Needs no connection: synthetic market and simulated broker until ``alpaca_default`` exists.
"""

from __future__ import annotations

import pendulum
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_portfolio.agents import trading_agent_dag

agent_iwm_trading = trading_agent_dag(
    dag_id="agent_iwm_trading",
    symbol="IWM",
    schedule=CronTriggerTimetable("*/15 9-15 * * 1-5", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    timeframe="15Min",
    risk_limits={"min_confidence": 0.3, "max_position_fraction": 0.10, "max_orders_per_symbol_per_day": 4},
    fraction=0.08,
    doc_md=__doc__,
)
