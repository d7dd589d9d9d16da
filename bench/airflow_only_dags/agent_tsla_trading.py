"""Airflow-only twin of ``example_dags/agent_tsla_trading.py``: the same schedule and the eight steps of
``trading_agent_dag`` as bare ``@task`` functions, with no provider import (see ``bench/bench_import.py``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task
from airflow.timetables.trigger import CronTriggerTimetable

SYMBOL = "TSLA"


@dag(
    dag_id="agent_tsla_trading",
    schedule=CronTriggerTimetable("*/5 9-15 * * 1-5", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    tags=["portfolio", "example", "agent"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "execution_timeout": timedelta(minutes=10)},
)
def agent_tsla_trading() -> None:
    @task
    def check_market_hours() -> dict[str, Any]:
        return {"now": None, "calendar": None, "timeframe": "5Min"}

    @task
    def fetch_market_data(market: dict[str, Any]) -> dict[str, Any]:
        return {"now": market["now"], "bars": [], "forming": [], "missing": [], "news": []}

    @task
    def analyze_technical(data: dict[str, Any]) -> dict[str, Any]:
        return {"name": "technical", "score": [], "confidence": [], "reason": []}

    @task
    def analyze_sentiment(data: dict[str, Any]) -> dict[str, Any]:
        return {"name": "sentiment", "score": [], "confidence": [], "reason": []}

    @task
    def make_decision(data: dict[str, Any], technical: dict[str, Any], sentiment: dict[str, Any]) -> dict[str, Any]:
        return {"symbol": SYMBOL}

    @task
    def validate_risk(decided: dict[str, Any], market: dict[str, Any]) -> dict[str, Any]:
        return decided

    @task
    def execute_trade(verdict: dict[str, Any], market: dict[str, Any]) -> dict[str, Any]:
        return verdict

    @task(trigger_rule="none_failed_min_one_success")
    def log_performance(market: dict[str, Any]) -> dict[str, Any]:
        return {}

    market = check_market_hours()
    data = fetch_market_data(market)
    decided = make_decision(data, analyze_technical(data), analyze_sentiment(data))
    verdict = validate_risk(decided, market)
    done = execute_trade(verdict, market)
    performance = log_performance(market)
    done >> performance


agent_tsla_trading_dag = agent_tsla_trading()
