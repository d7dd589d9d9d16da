"""Every example DAG imports cleanly, and importing them loads nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_provider_portfolio.pools import POOLS

REPO = Path(__file__).resolve().parents[2]

EXAMPLE_DAGS = REPO / "example_dags"


def dagbag(path):
    """A DagBag over ``path`` (its module moved in Airflow 3.2; examples are off through the environment)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=str(path))


HEAVY = ["pandas", "numpy", "scipy", "statsmodels", "arch", "alpaca", "finnhub", "alpha_vantage",
         "pandas_market_calendars", "cupy", "openlineage", "slack_sdk", "aiosmtpd", "matplotlib", "fastapi"]


def test_example_dags_import_without_errors_or_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = dagbag(EXAMPLE_DAGS)
    assert bag.import_errors == {}
    assert "portfolio_daily_etl" in bag.dag_ids
    ours = [w for w in caught if str(EXAMPLE_DAGS) in str(w.filename) or "airflow_provider_portfolio" in str(w.filename)]
    assert ours == [], [str(w.message) for w in ours]
    for dag in bag.dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"
        for t in dag.tasks:
            # Only the provider's pools (setup creates them; the cluster policy runs a task whose pool is missing
            # in default_pool) or Airflow's own.
            assert t.pool in {"default_pool", *POOLS}, f"{dag.dag_id}.{t.task_id} uses pool {t.pool!r}"


def test_daily_etl_shape():
    dag = dagbag(EXAMPLE_DAGS / "portfolio_daily_etl.py").dags["portfolio_daily_etl"]
    assert dag.catchup is False
    # Airflow 3.3's DagBag yields SDK timetables (``expression``); 3.1 yields core ones (``summary``).
    timetable = dag.timetable
    cron = getattr(timetable, "expression", None) or timetable.summary
    assert "15 5 * * 1-5" in cron
    assert str(getattr(timetable, "timezone", None) or timetable._timezone) == "America/New_York"
    load = dag.get_task("load_daily_bars")
    assert load.retries == 3 and load.retry_exponential_backoff


def test_importing_example_dags_loads_no_heavy_module():
    code = f"""
import importlib.util, json, sys, pathlib
for path in sorted(pathlib.Path({str(EXAMPLE_DAGS)!r}).glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing the example DAGs loaded {loaded}"


def test_forecast_dag_shape_and_asset_schedule():
    bag = dagbag(EXAMPLE_DAGS)
    etl, fc = bag.dags["portfolio_daily_etl"], bag.dags["portfolio_forecast"]
    outlets = etl.get_task("load_daily_bars").outlets
    assert [o.name for o in outlets] == ["portfolio_daily_bars"]
    assert type(fc.timetable).__name__ == "AssetTriggeredTimetable"
    assert "portfolio_daily_bars" in repr(fc.timetable.asset_condition)
    assert set(fc.task_ids) == {"ssa", "samossa", "mssa", "garch", "sarimax", "ensemble"}
    ensemble = fc.get_task("ensemble")
    assert ensemble.upstream_task_ids == {"ssa", "samossa", "mssa", "sarimax"}
    assert ensemble.trigger_rule == "all_done"
    for task_id in ("ssa", "samossa", "mssa", "garch"):
        t = fc.get_task(task_id)
        assert (t.pool, t.pool_slots, t.queue) == ("gpu_pool", 1, "default"), task_id


def test_gpu_routing_comes_from_config_and_default_args_win():
    code = """
import json, pendulum
from airflow.sdk import DAG
from airflow_provider_portfolio.operators.forecasting import GarchForecastOperator, SarimaxForecastOperator, SSAForecastOperator
with DAG("d", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):
    ssa = SSAForecastOperator(task_id="ssa")
    sarimax = SarimaxForecastOperator(task_id="sarimax")
with DAG("e", schedule=None, start_date=pendulum.datetime(2024, 1, 1), default_args={"pool": "mine", "queue": "q2"}):
    garch = GarchForecastOperator(task_id="garch")
    pinned = SSAForecastOperator(task_id="pinned", pool="explicit", pool_slots=2)
print(json.dumps([[t.pool, t.pool_slots, t.queue] for t in (ssa, sarimax, garch, pinned)]))
"""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__PORTFOLIO__")}
    env.update(AIRFLOW__PORTFOLIO__GPU_POOL="gpu_pool", AIRFLOW__PORTFOLIO__GPU_QUEUE="gpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    ssa, sarimax, garch, pinned = json.loads(out.stdout.strip().splitlines()[-1])
    assert ssa == ["gpu_pool", 1, "gpu"]
    assert sarimax[0] == "default_pool" and sarimax[2] != "gpu"  # CPU-only: Airflow's own defaults
    assert garch == ["mine", 1, "q2"]  # DAG default_args win over the configuration
    assert pinned == ["explicit", 2, "q2"]


def test_trading_dag_shapes():
    bag = dagbag(EXAMPLE_DAGS)
    trader = bag.dags["portfolio_auto_trader"]
    assert trader.max_active_runs == 1 and trader.catchup is False
    assert "*/30 7-19 * * 1-5" in repr(trader.timetable.summary) or "*/30 7-19" in trader.timetable.summary
    auto = trader.get_task("auto_trader")
    assert auto.upstream_task_ids == {"universe"}  # Variable portfolio.default_tickers, read when a run starts
    assert trader.get_task("universe").upstream_task_ids == {"desk_gate"}
    assert trader.get_task("desk_gate").upstream_task_ids == {"market_hours"}
    assert auto.partial_kwargs.get("pool", getattr(auto, "pool", None)) == "trading_pool"
    assert type(auto).__name__ == "MappedOperator" and auto.max_active_tis_per_dagrun == 1
    assert trader.get_task("market_hours").when_closed == "skip"
    core = bag.dags["portfolio_auto_trader_core"]
    assert type(core.timetable).__name__ == "MarketSessionTimetable" and core.max_active_runs == 1
    pipeline = {
        "check_market_hours": set(), "fetch_market_data": {"check_market_hours"},
        "analyze_technical": {"fetch_market_data"}, "analyze_sentiment": {"fetch_market_data"},
        "make_decision": {"fetch_market_data", "analyze_technical", "analyze_sentiment"},
        "validate_risk": {"make_decision", "check_market_hours"},
        "execute_trade": {"validate_risk", "check_market_hours"},
        "log_performance": {"execute_trade", "check_market_hours"},
    }
    schedules = {"agent_tsla_trading": "*/5 9-15 * * 1-5", "agent_iwm_trading": "*/15 9-15 * * 1-5",
                 "agent_btc_trading": "0 * * * *"}
    for dag_id, cron in schedules.items():
        agent = bag.dags[dag_id]
        assert {t: agent.get_task(t).upstream_task_ids for t in agent.task_ids} == pipeline, dag_id
        assert cron in agent.timetable.summary and agent.max_active_runs == 1, dag_id
        assert agent.get_task("log_performance").trigger_rule == "none_failed_min_one_success"


def test_the_auto_traders_universe_comes_from_the_variable(monkeypatch):
    """``portfolio_auto_trader`` read its universe from a hard-coded list although its docs named the Variable."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("auto_trader", EXAMPLE_DAGS / "portfolio_auto_trader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS", '["AAPL", "msft", "BTC/USD"]')
    assert module.universe_chunks(2) == [["AAPL", "MSFT"], ["BTC/USD"]]
    monkeypatch.setenv("AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS", "AAPL,,NOT A TICKER")
    with pytest.raises(ValueError, match="NOT A TICKER"):
        module.universe_chunks()
    monkeypatch.delenv("AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS")
    assert sum(module.universe_chunks(), []) == module.UNIVERSE


def test_desk_dag_shapes_schedules_deadlines_and_assets(monkeypatch):
    assert all(dag.deadline in (None, []) for dag in dagbag(EXAMPLE_DAGS).dags.values())  # off by default
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEADLINE_ALERTS", "True")
    bag = dagbag(EXAMPLE_DAGS)
    crons = {"portfolio_master": "0 5 * * 1-5", "portfolio_env_sanity": "0 5 * * 1-5",
             "portfolio_monitoring": "5 * * * *", "portfolio_daily_etl": "15 5 * * 1-5"}
    for dag_id, cron in crons.items():
        dag = bag.dags[dag_id]
        timetable = dag.timetable
        assert cron in (getattr(timetable, "expression", None) or timetable.summary), dag_id
        assert str(getattr(timetable, "timezone", None) or timetable._timezone) == "America/New_York", dag_id
    master = bag.dags["portfolio_master"]
    assert {t: master.get_task(t).upstream_task_ids for t in master.task_ids} == {
        "env_sanity": set(), "daily_etl": {"env_sanity"}, "monitoring": {"daily_etl"}}
    assert [o.name for o in master.get_task("daily_etl").outlets] == ["portfolio_daily_bars"]
    assert master.get_task("monitoring").trigger_rule == "all_done"
    forecast = bag.dags["portfolio_forecast"]
    assert [o.name for o in forecast.get_task("ensemble").outlets] == ["portfolio_forecasts"]
    # Deadline alerts: the ETL by 06:00 New York (logical date + 45 min / + 60 min for the 05:00 master), the
    # trader's cycle within 5 minutes and monitoring within 10 of their start.
    expected = {"portfolio_daily_etl": timedelta(minutes=45), "portfolio_master": timedelta(minutes=60),
                "portfolio_auto_trader": timedelta(minutes=5), "portfolio_monitoring": timedelta(minutes=10)}
    for dag_id, interval in expected.items():
        deadline = bag.dags[dag_id].deadline
        alerts = deadline if isinstance(deadline, list) else [deadline]
        assert [a.interval for a in alerts] == [interval], dag_id
    for dag_id in ("portfolio_master", "portfolio_env_sanity", "portfolio_monitoring", "portfolio_daily_etl",
                   "portfolio_forecast", "portfolio_auto_trader"):
        dag = bag.dags[dag_id]
        callbacks = [t.on_failure_callback for t in dag.tasks]
        assert all(cb for cb in callbacks), dag_id
