"""Airflow-only twin of ``example_dags/agent_btc_trading.py``: the same schedule and the eight steps of
``trading_agent_dag`` as bare ``@task`` functions, with no provider import (see ``bench/bench_import.py``)."""

from __future__ import annotations

import pendulum
from _agent import agent_twin
from airflow.timetables.trigger import CronTriggerTimetable

agent_btc_trading = agent_twin(
    dag_id="agent_btc_trading",
    symbol="BTC/USD",
    schedule=CronTriggerTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 2, tz="UTC"),
    timeframe="1Hour",
    doc_md=__doc__,
)
