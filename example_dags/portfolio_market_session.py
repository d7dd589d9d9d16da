"""Session-aware intraday DAG: a run for every 15-minute bar of NYSE sessions, gated by market hours.

Copy this file into your dags folder; it needs no connection. ``MarketSessionTimetable`` creates runs
only inside exchange sessions (no runs on weekends, holidays or after an early close), each run's data
interval being the bar it covers. ``MarketHoursSensor`` then checks the trading window itself (open
plus 5 minutes to close minus 15 minutes): a bar outside it is skipped, so nothing trades into the
close. Replace ``trade_bar`` with the desk's job for one bar (the auto-trader, a signal scan...).

When to use which: the timetable decides *when runs exist* (every N minutes in sessions, at the open,
before the close); the sensor decides *whether a running task may proceed now* (it can also wait,
deferred, for the next open without holding a worker slot). Both compute the same trading windows and
name the offsets alike: ``MarketSessionTimetable("XNYS", every=15, open_offset=5, close_offset=15)``
would create runs only for the bars of the narrowed window (``open_offset``/``close_offset`` replace the
timetable's older ``after_open``/``before_close``, which still work with a deprecation warning).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import dag

from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor
from airflow_provider_portfolio.timetables.market_session import MarketSessionTimetable


@dag(
    dag_id="portfolio_market_session",
    schedule=MarketSessionTimetable("XNYS", every=15),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    # One 15-minute bar's work must be done (or fail) before the next bar's run.
    default_args={"execution_timeout": timedelta(minutes=10)},
    tags=["portfolio", "example", "intraday"],
    doc_md=__doc__,
)
def portfolio_market_session():
    window = MarketHoursSensor(
        task_id="trading_window",
        exchange="XNYS",
        when_closed="skip",
        open_offset=timedelta(minutes=5),
        close_offset=timedelta(minutes=15),
    )

    # The desk's job for one bar goes here (the auto-trader, a signal scan...). It reads the window
    # the sensor returned with ``{{ ti.xcom_pull(task_ids='trading_window') }}`` and the bar from
    # ``data_interval_start``/``data_interval_end``. An EmptyOperator keeps this file cheap to parse:
    # ``@task`` alone costs the dag-processor about 50 ms of imports.
    window >> EmptyOperator(task_id="trade_bar")


portfolio_market_session_dag = portfolio_market_session()
