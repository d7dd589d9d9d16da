"""Airflow-only twin of ``example_dags/portfolio_market_session.py``: Airflow's
``MultipleCronTriggerTimetable`` at the ends of the 15-minute bars of a regular NYSE session (09:45 to 16:00;
holidays and early closes not known) for ``MarketSessionTimetable("XNYS", every=15)``, a ``@task`` for
``MarketHoursSensor``, and the same ``EmptyOperator`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import dag, task
from airflow.timetables.trigger import MultipleCronTriggerTimetable


@dag(
    dag_id="portfolio_market_session",
    schedule=MultipleCronTriggerTimetable(
        "45 9 * * 1-5", "*/15 10-15 * * 1-5", "0 16 * * 1-5", timezone="America/New_York"
    ),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"execution_timeout": timedelta(minutes=10)},
    tags=["portfolio", "example", "intraday"],
    doc_md=__doc__,
)
def portfolio_market_session():
    @task
    def trading_window(exchange: str, when_closed: str, open_offset: timedelta,
                       close_offset: timedelta) -> dict[str, Any]:
        return {"exchange": exchange}

    window = trading_window(exchange="XNYS", when_closed="skip", open_offset=timedelta(minutes=5),
                            close_offset=timedelta(minutes=15))
    window >> EmptyOperator(task_id="trade_bar")


portfolio_market_session_dag = portfolio_market_session()
