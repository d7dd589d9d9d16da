"""The daily ETL in a real Airflow: `airflow db migrate`, `airflow dags test`, and `airflow standalone`."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pandas_market_calendars as mcal
import pytest

from airflow_provider_portfolio import __version__
from tests.airflow.realairflow import REPO, AirflowServer, airflow_env, run_airflow
from tests.fakevendor import FakeVendor
from tests.vendorkeys import FINNHUB_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EQUITIES = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "SPY", "QQQ", "IWM"]
UNIVERSE = [*EQUITIES, "BTC/USD"]


def stored_days(db: Path) -> dict[str, list[str]]:
    """symbol -> sorted session dates of its daily bars, read with plain sqlite3 (not the code under test).

    On SQLite the store keeps ``ts`` as an INTEGER of microseconds since the epoch, in UTC.
    """
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT symbol, ts FROM bars WHERE timeframe = '1Day'").fetchall()
    out: dict[str, list[str]] = {}
    for symbol, ts in rows:
        out.setdefault(symbol, []).append(str(pd.Timestamp(ts, unit="us", tz="UTC").date()))
    return {s: sorted(v) for s, v in out.items()}


def xnys_sessions(start: str, end: str) -> list[str]:
    """Sessions from the exchange calendar library directly."""
    return [str(d.date()) for d in mcal.get_calendar("XNYS").schedule(start, end).index]


def calendar_days(start: str, end: str) -> list[str]:
    return [str(d.date()) for d in pd.date_range(start, end)]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    run_airflow(airflow_env(home), "db", "migrate")
    return home


def test_dags_test_loads_the_expected_sessions_then_nothing_then_one_more(home):
    env = airflow_env(home)
    db = home / "portfolio" / "portfolio.db"

    # 2024-06-04 00:00 UTC: the last closed session is Monday 2024-06-03.
    run_airflow(env, "dags", "test", "portfolio_daily_etl", "2024-06-04")
    first = stored_days(db)
    assert sorted(first) == sorted(UNIVERSE)
    expected = xnys_sessions("2023-01-01", "2024-06-03")[-252:]
    assert "2024-05-27" not in expected  # Memorial Day
    for symbol in EQUITIES:
        assert first[symbol] == expected, symbol
    # Crypto shares the equities' date window and trades every day in it.
    assert first["BTC/USD"] == calendar_days(expected[0], "2024-06-03")
    assert "2024-06-01" in first["BTC/USD"]  # a Saturday

    # The same interval again: nothing new is written.
    proc = run_airflow(env, "dags", "test", "portfolio_daily_etl", "2024-06-04")
    assert stored_days(db) == first
    assert "Wrote 0 row(s)" in proc.stdout + proc.stderr

    # A day later: exactly one more session per symbol.
    run_airflow(env, "dags", "test", "portfolio_daily_etl", "2024-06-05")
    later = stored_days(db)
    for symbol in UNIVERSE:
        assert later[symbol] == [*first[symbol], "2024-06-04"], symbol


def test_standalone_runs_a_dag_triggered_through_the_rest_api_with_no_logical_date(tmp_path):
    home = tmp_path / "standalone-home"
    with AirflowServer(home) as airflow:
        deadline = time.monotonic() + 120
        while True:
            dags = airflow.request("GET", "/api/v2/dags?dag_id_pattern=portfolio_daily_etl")
            if dags["total_entries"] or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert dags["total_entries"] == 1, airflow.tail()
        airflow.request("PATCH", "/api/v2/dags/portfolio_daily_etl", {"is_paused": False})
        run = airflow.request("POST", "/api/v2/dags/portfolio_daily_etl/dagRuns", {"logical_date": None})
        assert run["logical_date"] is None
        run_id = run["dag_run_id"]
        deadline = time.monotonic() + 300
        state = run["state"]
        while state not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(3)
            state = airflow.request("GET", f"/api/v2/dags/portfolio_daily_etl/dagRuns/{run_id}")["state"]
        tasks = airflow.request("GET", f"/api/v2/dags/portfolio_daily_etl/dagRuns/{run_id}/taskInstances")
        assert state == "success", (tasks, airflow.tail())
        assert {t["task_id"]: t["state"] for t in tasks["task_instances"]} == {"load_daily_bars": "success"}
    # The manual run loads the 252 sessions ending at the last one closed when it was triggered.
    # Unpausing may also start the latest scheduled run, which loads a window ending a session
    # earlier; both write into one store, so compare the manual run's window with the tail.
    triggered = pd.Timestamp(run["run_after"])
    schedule = mcal.get_calendar("XNYS").schedule(triggered - pd.Timedelta(days=400), triggered)
    closed = schedule[schedule["market_close"] <= triggered]
    expected = [str(d.date()) for d in closed.index[-252:]]
    all_sessions = {str(d.date()) for d in schedule.index}
    days = stored_days(home / "portfolio" / "portfolio.db")
    assert sorted(days) == sorted(UNIVERSE)
    for symbol in EQUITIES:
        assert days[symbol][-252:] == expected, symbol
        assert set(days[symbol]) <= all_sessions, symbol
    # A crypto day's bar closes at the next 00:00 UTC: between the equity close (21:00 UTC) and midnight the
    # last closed crypto day is the one before the last session; the task's own clock decides, and it runs a
    # little after the trigger, so either side of a midnight that falls between them is right.
    finished = pd.Timestamp.now(tz="UTC")
    ends = {min(expected[-1], str((t.tz_convert("UTC").normalize() - pd.Timedelta(days=1)).date()))
            for t in (triggered, finished)}
    crypto = days["BTC/USD"]
    assert crypto[-1] in ends, (crypto[-3:], ends)
    assert crypto[-len(calendar_days(expected[0], crypto[-1])):] == calendar_days(expected[0], crypto[-1])


def test_etl_mapped_over_symbol_chunks(tmp_path):
    home = tmp_path / "mapped-home"
    env = airflow_env(home, AIRFLOW__CORE__DAGS_FOLDER=str(Path(__file__).resolve().parents[1] / "dags"))
    run_airflow(env, "db", "migrate")
    run_airflow(env, "dags", "test", "portfolio_etl_mapped", "2024-06-04")
    days = stored_days(home / "portfolio" / "portfolio.db")
    may = xnys_sessions("2024-05-01", "2024-05-31")
    assert "2024-05-27" not in may and len(may) == 22
    for symbol in ["AAPL", "MSFT", "NVDA", "AMZN", "SPY"]:
        assert days[symbol] == may, symbol
    for symbol in ["BTC/USD", "ETH/USD"]:
        assert days[symbol] == calendar_days("2024-05-01", "2024-05-31"), symbol


def test_airflow_cli_lists_the_provider_and_its_config(tmp_path):
    env = airflow_env(tmp_path / "cli-home")
    providers = json.loads(run_airflow(env, "providers", "list", "-o", "json").stdout.strip().splitlines()[-1])
    ours = [p for p in providers if p["package_name"] == "airflow-provider-portfolio"]
    assert ours and ours[0]["version"] == __version__
    value = run_airflow(env, "config", "get-value", "portfolio", "store_conn_id").stdout.strip().splitlines()[-1]
    assert value == "portfolio_store_default"


def test_adding_a_default_data_connection_switches_the_copied_dag_to_the_vendor(tmp_path):
    """The example DAG, unchanged: with a ``finnhub_default`` connection it loads Finnhub's bars."""
    candles = json.loads((REPO / "tests" / "hooks" / "fixtures" / "finnhub" / "stock_candle_aapl_daily.json").read_text())
    with FakeVendor({"/api/v1/stock/candle": candles}, keys={FINNHUB_KEY}) as finnhub:
        conn = {"conn_type": "finnhub", "password": FINNHUB_KEY, "extra": {"base_url": f"{finnhub.url}/api/v1"}}
        env = airflow_env(tmp_path / "vendor-home", AIRFLOW_CONN_FINNHUB_DEFAULT=json.dumps(conn))
        run_airflow(env, "db", "migrate")
        run_airflow(env, "variables", "set", "portfolio.default_tickers", "AAPL")
        proc = run_airflow(env, "dags", "test", "portfolio_daily_etl", "2024-06-08")
    assert "/api/v1/stock/candle" in finnhub.requests
    with sqlite3.connect(tmp_path / "vendor-home" / "portfolio" / "portfolio.db") as con:
        rows = con.execute("SELECT symbol, ts, source FROM bars ORDER BY ts").fetchall()
    assert [(s, str(pd.Timestamp(ts, unit="us").date()), src) for s, ts, src in rows] == [
        ("AAPL", day, "finnhub_default") for day in xnys_sessions("2024-06-03", "2024-06-07")
    ]
    assert FINNHUB_KEY not in proc.stdout + proc.stderr
