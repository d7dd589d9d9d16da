"""Every task of every example DAG has an execution timeout: nothing a copied DAG runs may hang forever."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.airflow.test_dag_integrity import EXAMPLE_DAGS, dagbag

#: The longest timeout an example task may have (the daily ETL's first load through rate-limited vendors).
LONGEST = timedelta(hours=2)
#: The longest timeout a task of an intraday DAG (a fixed interval of an hour or less) may have.
INTRADAY_LONGEST = timedelta(hours=1)


@pytest.fixture(scope="module")
def bag():
    bag = dagbag(EXAMPLE_DAGS)
    assert bag.import_errors == {}
    return bag


def _interval(dag) -> timedelta | None:
    """The DAG's run interval when it is a fixed one: session bars, or a cron every N minutes or every hour."""
    timetable = dag.timetable
    every_s = getattr(timetable, "_every_s", None)
    if isinstance(every_s, int | float) and every_s:
        return timedelta(seconds=every_s)
    cron = getattr(timetable, "expression", None) or getattr(timetable, "_expression", None)
    if isinstance(cron, str) and len(cron.split()) == 5:
        minute, hour = cron.split()[:2]
        if minute.startswith("*/") and minute[2:].isdigit():
            return timedelta(minutes=int(minute[2:]))
        if minute.isdigit() and hour == "*":
            return timedelta(hours=1)
    return None


def test_every_example_task_has_an_execution_timeout(bag):
    missing = [f"{dag.dag_id}.{t.task_id}" for dag in bag.dags.values() for t in dag.tasks
               if t.execution_timeout is None]
    assert missing == [], f"tasks without execution_timeout: {missing}"


def test_execution_timeouts_are_sensible(bag):
    for dag in bag.dags.values():
        interval = _interval(dag)
        for t in dag.tasks:
            timeout = t.execution_timeout
            assert isinstance(timeout, timedelta) and timedelta(0) < timeout <= LONGEST, (dag.dag_id, t.task_id, timeout)
            if interval is not None:  # intraday: a stuck task must not block a trading day's later runs
                assert timeout <= INTRADAY_LONGEST, (dag.dag_id, t.task_id, timeout, interval)


def test_the_expected_example_dags_and_intervals_are_covered(bag):
    assert {"portfolio_daily_etl", "portfolio_forecast", "portfolio_auto_trader", "portfolio_auto_trader_core",
            "portfolio_market_session", "agent_btc_trading", "agent_iwm_trading", "agent_tsla_trading"} <= set(bag.dag_ids)
    intervals = {dag_id: _interval(bag.dags[dag_id]) for dag_id in
                 ("portfolio_auto_trader", "portfolio_market_session", "agent_btc_trading")}
    assert intervals == {"portfolio_auto_trader": timedelta(minutes=30),
                         "portfolio_market_session": timedelta(minutes=15), "agent_btc_trading": timedelta(hours=1)}
