"""Airflow-only twin of ``example_dags/portfolio_strategy_optimization.py``: the same cron string, params and mapping
(a ``@task`` for each provider operator: plan, the split mapped with ``expand_kwargs``, pick, apply), the same pool,
and a plain ``on_failure_callback`` for ``PortfolioNotifier()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import DATABASE_POOL, on_failure
from airflow.sdk import Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

SPACE: dict[str, list[Any]] = {
    "weights": [{"technical": 1.0}, {"technical": 0.5, "sentiment": 0.5},
                {"forecast": 0.6, "technical": 0.25, "sentiment": 0.15}, {"forecast": 0.5, "technical": 0.5}],
    "min_confidence": [0.1, 0.2, 0.3, 0.45],
    "min_score": [0.05, 0.1, 0.2],
    "max_position_fraction": [0.05, 0.1],
}


@dag(
    dag_id="portfolio_strategy_optimization",
    schedule=CronTriggerTimetable("0 6 * * 6", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": on_failure},
    params={
        "apply": Param(False, type="boolean", description="write the recommendation to portfolio.trading_settings"),
        "space": Param(SPACE, type="object", description="setting -> values searched"),
        "sample": Param(24, type=["integer", "null"], description="candidates drawn from the space (null: all)"),
        "seed": Param(0, type="integer", description="the sample's seed"),
        "sessions": Param(120, type="integer", minimum=4, description="cycles of history"),
        "train": Param(40, type="integer", minimum=2, description="cycles of each train window"),
        "test": Param(20, type="integer", minimum=2, description="cycles of each test window"),
    },
    render_template_as_native_obj=True,
    tags=["portfolio", "studies"],
    doc_md=__doc__,
)
def portfolio_strategy_optimization():
    @task
    def plan(space: Any, sample: Any, seed: Any, sessions: Any, train: Any, test: Any) -> list[dict[str, Any]]:
        return [{"split": {}, "candidates": []}]

    @task(pool=DATABASE_POOL)
    def split(split: dict[str, Any], candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return []

    @task(pool=DATABASE_POOL)
    def pick(results: Any, min_trades: int) -> dict[str, Any]:
        return {"status": "ok"}

    @task(pool=DATABASE_POOL)
    def apply(kind: str, apply: Any) -> dict[str, Any]:
        return {"applied": False}

    planned = plan("{{ params.space }}", "{{ params.sample }}", "{{ params.seed }}", "{{ params.sessions }}",
                   "{{ params.train }}", "{{ params.test }}")
    scored = split.expand_kwargs(planned)
    pick(scored, 5) >> apply("strategy_optimization", "{{ params.apply }}")


portfolio_strategy_optimization_dag = portfolio_strategy_optimization()
