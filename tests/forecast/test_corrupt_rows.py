"""A corrupt stored bar (a close or a timestamp stored as text) rejects its symbol, never the whole job."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import StoreError
from airflow_provider_portfolio.forecast.backend import NUMPY
from airflow_provider_portfolio.forecast.jobs import forecast_universe
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.operators.forecasting import SSAForecastOperator
from airflow_provider_portfolio.store import PortfolioStore

SYMBOLS = ["AAPL", "MSFT", "SPY"]


@pytest.fixture
def path(tmp_path, monkeypatch):
    path = tmp_path / "desk.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    market = SyntheticMarket(seed=5)
    store.upsert_bars(pd.concat([market.bars(s, "2023-06-01", "2024-06-03") for s in SYMBOLS], ignore_index=True))
    store.dispose()
    return path


def corrupt(path, sql: str) -> str:
    """Run ``sql`` on the 101st MSFT bar (``?`` binds its ts) behind the store's back; return that bar's date."""
    with sqlite3.connect(path) as db:
        (ts_us,) = db.execute("SELECT ts FROM bars WHERE symbol = 'MSFT' ORDER BY ts LIMIT 1 OFFSET 100").fetchone()
        db.execute(sql, (ts_us,))
    return str(pd.Timestamp(ts_us * 1000, tz="UTC").date())


@pytest.mark.parametrize(
    ("sql", "column", "value"),
    [
        ("UPDATE bars SET close = 'abc' WHERE symbol = 'MSFT' AND ts = ?", "close", "'abc'"),
        ("UPDATE bars SET ts = 'yesterday' WHERE symbol = 'MSFT' AND ts = ?", "ts", "'yesterday'"),
    ],
    ids=["close-as-text", "ts-as-text"],
)
def test_a_corrupt_row_rejects_its_symbol_and_the_others_are_forecast(path, sql, column, value):
    day = corrupt(path, sql)
    store = PortfolioStore.for_sqlite_file(path)
    report = forecast_universe(store, SYMBOLS, "ssa", device=NUMPY, run_id="r", history=200,
                               origins=3)
    assert sorted(report.forecast) == ["AAPL", "SPY"]
    why = report.failed["MSFT"]
    assert "table bars" in why and "symbol MSFT" in why and f"column {column}" in why and value in why
    if column == "close":  # the row is named by its key
        assert day in why
    assert report.forecast_rows == 2 * 5
    assert sorted(store.read_forecasts(SYMBOLS, run_id="r")["symbol"].unique()) == ["AAPL", "SPY"]
    store.dispose()


def test_read_bars_names_table_symbol_and_row_of_a_corrupt_row(path):
    day = corrupt(path, "UPDATE bars SET close = 'abc' WHERE symbol = 'MSFT' AND ts = ?")
    store = PortfolioStore.for_sqlite_file(path)
    with pytest.raises(StoreError, match=rf"table bars, symbol MSFT.*{day}.*column close holds 'abc'"):
        store.read_bars(SYMBOLS)
    frame, rejected = store.read_bars_checked(SYMBOLS)
    assert sorted(frame["symbol"].unique()) == ["AAPL", "SPY"] and list(rejected) == ["MSFT"]
    assert len(store.read_bars(["AAPL"])) == len(frame[frame["symbol"] == "AAPL"])  # the others read as before
    store.dispose()


def test_the_operator_summary_names_the_rejected_symbol_and_why(path):
    corrupt(path, "UPDATE bars SET close = 'abc' WHERE symbol = 'MSFT' AND ts = ?")
    op = SSAForecastOperator(task_id="ssa", store_conn_id="desk_store", symbols=SYMBOLS, device="cpu", history=200,
                             origins=3)
    summary = op.execute({"run_id": "manual__1"})
    assert json.loads(json.dumps(summary)) == summary
    assert summary["symbols"] == 2
    assert "symbol MSFT" in summary["failed"]["MSFT"] and "'abc'" in summary["failed"]["MSFT"]


def test_other_reads_of_a_corrupt_timestamp_name_it(path):
    corrupt(path, "UPDATE bars SET ts = 'yesterday' WHERE symbol = 'MSFT' AND ts = ?")
    store = PortfolioStore.for_sqlite_file(path)
    for read in (lambda: store.bar_timestamps("MSFT", "1Day"), lambda: store.latest_bar_ts(["MSFT", "AAPL"], "1Day"),
                 lambda: store.latest_bar_ts(None, "1Day")):
        with pytest.raises(StoreError, match=r"table bars, symbol MSFT: row \(1Day, ts 'yesterday' \(text\)\)"):
            read()
    assert len(store.bar_timestamps("AAPL", "1Day")) > 200
    store.dispose()


def test_a_corrupt_forecast_row_is_a_store_error_naming_it(path):
    store = PortfolioStore.for_sqlite_file(path)
    forecast_universe(store, ["AAPL"], "ssa", device=NUMPY, run_id="r", history=200, origins=3)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE forecasts SET point = 'abc' WHERE symbol = 'AAPL' AND step = 2")
    with pytest.raises(StoreError, match=r"table forecasts, symbol AAPL: row \(run_id 'r'.*step 2\): column point holds "
                                         r"'abc' \(text\), not a number"):
        store.read_forecasts(["AAPL"])
    store.dispose()
