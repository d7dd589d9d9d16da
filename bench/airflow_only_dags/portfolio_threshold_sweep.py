"""Airflow-only twin of ``example_dags/portfolio_threshold_sweep.py``: the same cron string, params and mapping
(a ``@task`` for each provider operator: the grid in chunks, the sweep mapped over them, pick, apply), the same pool,
and a plain ``on_failure_callback`` for ``PortfolioNotifier()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import DATABASE_POOL, on_failure
from airflow.sdk import Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

SESSIONS = 60


@dag(
    dag_id="portfolio_threshold_sweep",
    schedule=CronTriggerTimetable("0 4 * * 1", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": on_failure},
    params={
        "apply": Param(False, type="boolean", description="write the recommendation to portfolio.trading_settings"),
        "min_confidence": Param([0.1, 0.2, 0.3, 0.4, 0.55], type="array", items={"type": "number"},
                                description="confidence thresholds swept"),
        "min_score": Param([0.05, 0.1, 0.15, 0.2, 0.3], type="array", items={"type": "number"},
                           description="minimum |combined score| values swept"),
    },
    render_template_as_native_obj=True,
    tags=["portfolio", "studies"],
    doc_md=__doc__,
)
def portfolio_threshold_sweep():
    @task
    def grid(confidence_grid: Any, score_grid: Any, chunk: int) -> list[list[dict[str, float]]]:
        return [[{"min_confidence": 0.55, "min_score": 0.1}]]

    @task(pool=DATABASE_POOL)
    def sweep(points: list[dict[str, float]], sessions: int) -> list[dict[str, Any]]:
        return []

    @task(pool=DATABASE_POOL)
    def pick(results: Any, sessions: int, min_trades: int) -> dict[str, Any]:
        return {"status": "ok"}

    @task(pool=DATABASE_POOL)
    def apply(kind: str, apply: Any) -> dict[str, Any]:
        return {"applied": False}

    points = grid("{{ params.min_confidence }}", "{{ params.min_score }}", 5)
    swept = sweep.partial(sessions=SESSIONS).expand(points=points)
    pick(swept, SESSIONS, 5) >> apply("threshold_sweep", "{{ params.apply }}")


portfolio_threshold_sweep_dag = portfolio_threshold_sweep()
