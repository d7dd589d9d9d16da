"""Airflow-only twin of ``example_dags/portfolio_from_yaml.py``: the same ``example_dags/portfolio_desks.yaml`` read
with ``yaml.safe_load`` (no checks, no line numbers) and turned into each desk's DAGs from Airflow's own pieces, as a
hand-written generator would: a ``@task`` for each provider operator and sensor in the same pools, Airflow's
``Asset`` for the desk's bars and forecasts, a cron on the NYSE's hours for ``MarketSessionTimetable`` (holidays and
early closes not known), a plain ``on_failure_callback`` for ``PortfolioNotifier()`` and Airflow's ``DeadlineAlert``
for the trading DAGs' default 5 minutes (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import yaml
from _desk import API_POOL, GPU_POOL, GPU_QUEUE, TRADING_POOL, deadline, on_failure
from airflow.sdk import DAG, Asset, task
from airflow.timetables.trigger import CronTriggerTimetable

DESKS = Path(__file__).resolve().parents[2] / "example_dags" / "portfolio_desks.yaml"
MODELS = ["ssa", "samossa", "mssa", "garch", "sarimax"]
LEVEL = ("ssa", "samossa", "mssa", "sarimax")


@task
def load_bars(symbols: list[str], timeframe: str) -> dict[str, Any]:
    return {"symbols": symbols}


@task
def forecast(symbols: list[str], model: str, horizon: int) -> dict[str, Any]:
    return {"model": model}


@task(trigger_rule="all_done")
def ensemble(symbols: list[str], models: list[str]) -> dict[str, Any]:
    return {"models": models}


@task
def market_hours(exchange: str | None) -> dict[str, Any]:
    return {"open": True}


@task
def desk_gate(symbols: list[str], require: list[str]) -> dict[str, Any]:
    return {"sound": True}


@task(pool=TRADING_POOL)
def auto_trader(symbols: list[str], timeframe: str, weights: dict[str, float] | None,
                risk_limits: dict[str, Any] | None) -> dict[str, Any]:
    return {"symbols": symbols}


def desk_dag(desk: dict[str, Any], section: str, schedule: Any, default_args: dict[str, Any], **kwargs: Any) -> DAG:
    tz = desk.get("timezone", "America/New_York")
    return DAG(f"{desk['id']}_{section}", schedule=schedule, start_date=pendulum.datetime(2024, 1, 1, tz=tz),
               catchup=False, max_active_runs=1, default_args={**default_args, "on_failure_callback": on_failure},
               tags=["portfolio", section, desk["id"], DESKS.name], doc_md=__doc__, **kwargs)


for desk in yaml.safe_load(DESKS.read_text())["desks"]:
    tz, symbols = desk.get("timezone", "America/New_York"), desk["universe"]
    bars = Asset(name=f"{desk['id']}_bars", uri=f"portfolio://store/bars/1Day/{desk['id']}", group="portfolio")
    if "etl" in desk:
        etl = desk["etl"] or {}
        with desk_dag(desk, "etl", CronTriggerTimetable(etl.get("schedule", "15 5 * * 1-5"), timezone=tz),
                      {"retries": 3, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True,
                       "max_retry_delay": timedelta(minutes=30), "execution_timeout": timedelta(hours=2)}) as dag:
            load = load_bars.override(task_id="load_bars", pool=API_POOL, outlets=[bars])
            load(symbols, etl.get("timeframe", "1Day"))
        globals()[dag.dag_id] = dag
    if "forecast" in desk:
        fc = desk["forecast"] or {}
        with desk_dag(desk, "forecast", [bars] if "etl" in desk else None, {
                "retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(hours=1)}) as dag:
            tasks = {}
            for model in fc.get("models", MODELS):
                gpu = {} if model == "sarimax" else {"pool": GPU_POOL, "queue": GPU_QUEUE}
                tasks[model] = forecast.override(task_id=model, **gpu)(symbols, model, fc.get("horizon", 5))
            level = [m for m in tasks if m in LEVEL]
            forecasts = Asset(name=f"{desk['id']}_forecasts", uri=f"portfolio://store/forecasts/1Day/{desk['id']}",
                              group="portfolio")
            [tasks[m] for m in level] >> ensemble.override(outlets=[forecasts])(symbols, level)
        globals()[dag.dag_id] = dag
    if "trading" in desk:
        tr = desk["trading"] or {}
        every = (tr.get("session") or {"every": 30}).get("every", 30)
        schedule = CronTriggerTimetable(tr["schedule"], timezone=tz) if "schedule" in tr else \
            CronTriggerTimetable(f"*/{every} 9-15 * * 1-5", timezone="America/New_York")
        with desk_dag(desk, "trading", schedule,
                      {"retries": 2, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(minutes=15)},
                      deadline=deadline(timedelta(minutes=5), reference="queued", what="a cycle in 5 minutes")) as dag:
            gate = desk_gate(symbols, tr.get("require", []))
            auto_trader(symbols, tr.get("timeframe", "30Min"), tr.get("weights"), tr.get("limits"))
            gate >> dag.get_task("auto_trader")
            if "schedule" in tr:
                market_hours(desk.get("exchange")) >> gate
        globals()[dag.dag_id] = dag
