"""Airflow-only twin of ``example_dags/agent_tsla_trading.py``: the same schedule and the eight steps of
``trading_agent_dag`` as bare ``@task`` functions, with no provider import (see ``bench/bench_import.py``)."""

from __future__ import annotations

import pendulum
from _agent import agent_twin
from airflow.timetables.trigger import CronTriggerTimetable

agent_tsla_trading = agent_twin(
    dag_id="agent_tsla_trading",
    symbol="TSLA",
    schedule=CronTriggerTimetable("*/5 9-15 * * 1-5", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    timeframe="5Min",
    doc_md=__doc__,
)
