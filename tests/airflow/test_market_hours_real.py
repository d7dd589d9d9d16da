"""The market-hours sensor and the session timetable in a real `airflow standalone` on 127.0.0.1.

- a deferred MarketHoursSensor shows the ``deferred`` state and holds no pool slot while it waits
  (read through the REST API), then completes when its trigger fires (a window that opens about a
  minute after the DAG is written: the "24/7" calendar with an open offset);
- the scheduler creates exactly the runs MarketSessionTimetable promises over a week with an early
  close and a holiday, with data intervals equal to the bars.
"""

from __future__ import annotations

import json
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.airflow.realairflow import AirflowServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WAIT_DAG = '''
from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor


@dag(dag_id="portfolio_test_market_wait", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     catchup=False, tags=["test"])
def portfolio_test_market_wait():
    # The 24/7 calendar's session is the UTC day: this window opens {offset_s} s after midnight UTC.
    MarketHoursSensor(task_id="wait_for_open", exchange="24/7", open_offset=timedelta(seconds={offset_s}),
                      deferrable=True)


portfolio_test_market_wait()
'''

SESSIONS_DAG = '''
import pendulum
from airflow.sdk import dag, task

from airflow_provider_portfolio.timetables.market_session import MarketSessionTimetable


@dag(dag_id="portfolio_test_hourly_bars", schedule=MarketSessionTimetable("XNYS", every=60),
     start_date=pendulum.datetime(2024, 7, 3, tz="UTC"), end_date=pendulum.datetime(2024, 7, 5, 23, tz="UTC"),
     catchup=True, max_active_runs=16, tags=["test"])
def portfolio_test_hourly_bars():
    @task
    def bar(data_interval_start=None, data_interval_end=None):
        return [data_interval_start.isoformat(), data_interval_end.isoformat()]

    bar()


portfolio_test_hourly_bars()
'''

# NYSE, published calendar: 2024-07-03 closes early at 13:00 ET (17:00 UTC); 2024-07-04 is closed;
# 2024-07-05 is a full session 09:30-16:00 ET (13:30-20:00 UTC). Hourly bars from the open, the last
# one cut at the close.
EXPECTED_BARS = [
    ("2024-07-03T13:30:00+00:00", "2024-07-03T14:30:00+00:00"),
    ("2024-07-03T14:30:00+00:00", "2024-07-03T15:30:00+00:00"),
    ("2024-07-03T15:30:00+00:00", "2024-07-03T16:30:00+00:00"),
    ("2024-07-03T16:30:00+00:00", "2024-07-03T17:00:00+00:00"),
    ("2024-07-05T13:30:00+00:00", "2024-07-05T14:30:00+00:00"),
    ("2024-07-05T14:30:00+00:00", "2024-07-05T15:30:00+00:00"),
    ("2024-07-05T15:30:00+00:00", "2024-07-05T16:30:00+00:00"),
    ("2024-07-05T16:30:00+00:00", "2024-07-05T17:30:00+00:00"),
    ("2024-07-05T17:30:00+00:00", "2024-07-05T18:30:00+00:00"),
    ("2024-07-05T18:30:00+00:00", "2024-07-05T19:30:00+00:00"),
    ("2024-07-05T19:30:00+00:00", "2024-07-05T20:00:00+00:00"),
]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def wait_until(fn, timeout: float, what: str, airflow: AirflowServer):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}:\n{airflow.tail()}")


def find_dag(airflow: AirflowServer, dag_id: str) -> None:
    wait_until(lambda: airflow.request("GET", f"/api/v2/dags?dag_id_pattern={dag_id}")["total_entries"], 120,
               f"{dag_id} to be parsed", airflow)
    airflow.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})


def test_deferred_sensor_holds_no_slot_and_completes_when_the_window_opens(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    home = tmp_path / "sensor-home"
    with AirflowServer(home, AIRFLOW__CORE__DAGS_FOLDER=str(dags)) as airflow:
        # Written once Airflow is up, so the window opens a fixed time after the run starts.
        opens_at = datetime.now(timezone.utc) + timedelta(seconds=90)
        midnight = opens_at.replace(hour=0, minute=0, second=0, microsecond=0)
        offset_s = int((opens_at - midnight).total_seconds())
        (dags / "wait.py").write_text(textwrap.dedent(WAIT_DAG.format(offset_s=offset_s)))
        find_dag(airflow, "portfolio_test_market_wait")
        run = airflow.request("POST", "/api/v2/dags/portfolio_test_market_wait/dagRuns", {"logical_date": None})
        ti_path = f"/api/v2/dags/portfolio_test_market_wait/dagRuns/{run['dag_run_id']}/taskInstances/wait_for_open"

        wait_until(lambda: airflow.request("GET", ti_path)["state"] == "deferred", 60, "the deferred state", airflow)
        assert datetime.now(timezone.utc) < midnight + timedelta(seconds=offset_s), "deferred too late to check"
        pool = airflow.request("GET", "/api/v2/pools/default_pool")
        assert pool["running_slots"] == 0 and pool["occupied_slots"] == 0, pool
        assert pool["deferred_slots"] == 1, pool

        ti = wait_until(lambda: (t := airflow.request("GET", ti_path))["state"] in ("success", "failed") and t,
                        240, "the sensor to finish", airflow)
        assert ti["state"] == "success", airflow.tail()
        assert utc(ti["end_date"]) >= midnight + timedelta(seconds=offset_s)
        xcom = airflow.request("GET", f"{ti_path}/xcomEntries/return_value")
        window = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
        assert window["exchange"] == "24/7"
        assert utc(window["window_start"]) == midnight + timedelta(seconds=offset_s)


def test_scheduler_creates_the_session_timetables_runs(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "sessions.py").write_text(textwrap.dedent(SESSIONS_DAG))
    with AirflowServer(tmp_path / "timetable-home", AIRFLOW__CORE__DAGS_FOLDER=str(dags)) as airflow:
        find_dag(airflow, "portfolio_test_hourly_bars")

        def runs():
            body = airflow.request("GET", "/api/v2/dags/portfolio_test_hourly_bars/dagRuns?limit=100")
            return body["dag_runs"] if body["total_entries"] >= len(EXPECTED_BARS) else None

        found = wait_until(runs, 240, "the timetable's runs", airflow)
        intervals = sorted((utc(r["data_interval_start"]), utc(r["data_interval_end"])) for r in found)
        assert intervals == [(utc(a), utc(b)) for a, b in EXPECTED_BARS]
        dag = airflow.request("GET", "/api/v2/dags/portfolio_test_hourly_bars")
        assert "XNYS" in (dag.get("timetable_summary") or "") and "60" in dag["timetable_summary"]
