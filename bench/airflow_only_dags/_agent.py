"""The Airflow-only twin of ``trading_agent_dag``: the eight steps of the per-asset pipeline as bare ``@task``
functions, with no provider import (see ``bench/bench_import.py``). A helper module, not a DAG file."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task


def agent_twin(*, dag_id: str, symbol: str, schedule: Any, start_date: Any, timeframe: str, doc_md: str) -> Any:
    """A DAG with the same id, schedule, task ids and dependencies as ``trading_agent_dag`` builds."""

    @dag(
        dag_id=dag_id,
        schedule=schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,
        tags=["portfolio", "example", "agent"],
        doc_md=doc_md,
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30),
                      "execution_timeout": timedelta(minutes=10)},
    )
    def agent() -> None:
        @task
        def check_market_hours() -> dict[str, Any]:
            return {"now": None, "calendar": None, "timeframe": timeframe}

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
            return {"symbol": symbol}

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


    return agent()
