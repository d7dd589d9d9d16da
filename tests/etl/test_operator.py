"""PortfolioETLOperator.execute with a real store and the synthetic market; connections from the environment."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.store import PortfolioStore
from tests.etl.recording import RecordingSource


def context(at: str, *, interval_end: bool = True) -> dict:
    ts = pd.Timestamp(at, tz="UTC").to_pydatetime()
    ctx = {"dag_run": SimpleNamespace(run_after=ts)}
    if interval_end:
        ctx["data_interval_end"] = ts
    return ctx


@pytest.fixture
def store_conn(tmp_path, monkeypatch):
    path = tmp_path / "desk.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def test_execute_loads_the_last_closed_sessions_and_returns_a_small_summary(store_conn):
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL", "BTC/USD"], store_conn_id="desk_store", history_sessions=5)
    summary = op.execute(context("2024-06-08 12:00"))  # Saturday: the last closed session is Friday 06-07
    assert json.loads(json.dumps(summary)) == summary
    assert summary["end"] == "2024-06-07" and summary["start"] == "2024-06-03"
    assert summary["rows_written"] == 5 + 5
    assert summary["symbols"]["AAPL"]["source"] == "synthetic"
    assert "desk.db" in summary["store"]
    store = PortfolioStore.for_sqlite_file(store_conn)
    assert store.count_bars(["AAPL"]) == 5

    again = PortfolioETLOperator(task_id="etl", symbols="AAPL,BTC/USD", store_conn_id="desk_store", history_sessions=5)
    assert again.execute(context("2024-06-08 12:00"))["rows_written"] == 0


def test_run_without_data_interval_uses_run_after(store_conn):
    op = PortfolioETLOperator(task_id="etl", symbols='["SPY"]', store_conn_id="desk_store", history_sessions=3)
    summary = op.execute(context("2024-06-05 21:00", interval_end=False))  # after Wednesday's close
    assert (summary["start"], summary["end"]) == ("2024-06-03", "2024-06-05")


def test_embedded_store_under_airflow_home_when_no_connection(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL"], start="2024-06-03", end="2024-06-04")
    summary = op.execute(context("2024-06-08"))
    db = tmp_path / "home" / "portfolio" / "portfolio.db"
    assert db.exists() and str(db) in summary["store"]
    assert PortfolioStore.for_sqlite_file(db).count_bars() == 2


def test_a_named_store_connection_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL"], store_conn_id="no_such_store")
    with pytest.raises(StoreError, match="no_such_store"):
        op.execute(context("2024-06-08"))
    assert not (tmp_path / "home" / "portfolio").exists()


def test_unreachable_store_fails_before_fetching(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_PG_STORE",
        json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "desk", "password": "test-secret", "schema": "desk"}),
    )
    source = RecordingSource()
    monkeypatch.setattr("airflow_provider_portfolio.hooks.market_data.resolve_sources", lambda *a, **k: [source])
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL"], store_conn_id="pg_store", start="2024-06-03", end="2024-06-04")
    with pytest.raises(StoreError) as err:
        op.execute(context("2024-06-08"))
    assert "test-secret" not in str(err.value)
    assert source.calls == []


def test_failures_above_max_failed_fraction_fail_the_task_after_writing_the_rest(store_conn, monkeypatch):
    source = RecordingSource(fail_for={"MSFT"})
    monkeypatch.setattr("airflow_provider_portfolio.hooks.market_data.resolve_sources", lambda *a, **k: [source])
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL", "MSFT"], store_conn_id="desk_store", start="2024-06-03", end="2024-06-07")
    with pytest.raises(RuntimeError, match="1 of 2 symbol.*MSFT"):
        op.execute(context("2024-06-08"))
    assert PortfolioStore.for_sqlite_file(store_conn).count_bars(["AAPL"]) == 5

    tolerant = PortfolioETLOperator(
        task_id="etl", symbols=["AAPL", "MSFT"], store_conn_id="desk_store", start="2024-06-03", end="2024-06-07",
        max_failed_fraction=0.5,
    )
    summary = tolerant.execute(context("2024-06-08"))
    assert summary["failed"] == ["MSFT"] and "no data for MSFT" in summary["symbols"]["MSFT"]["error"]


def test_live_mode_refuses_the_synthetic_market(store_conn, monkeypatch):
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__EXECUTION_MODE", "live")
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL"], store_conn_id="desk_store")
    with pytest.raises(InvalidInputError, match="live"):
        op.execute(context("2024-06-08"))
    explicit = PortfolioETLOperator(task_id="etl", symbols=["AAPL"], store_conn_id="desk_store", sources=["synthetic"])
    with pytest.raises(InvalidInputError, match="refused"):
        explicit.execute(context("2024-06-08"))
    assert not store_conn.exists() or PortfolioStore.for_sqlite_file(store_conn).count_bars() == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"symbols": 42}, InvalidInputError, "list of tickers"),
        ({"symbols": ["AAPL"], "sources": ["no_such_conn"]}, InvalidInputError, "no_such_conn"),
        ({"symbols": ["AAPL"], "start": "2024-06-07", "end": "2024-06-03"}, InvalidInputError, "after end"),
        ({"symbols": ["AAPL"], "max_failed_fraction": 2}, InvalidInputError, "max_failed_fraction"),
        ({"symbols": ["AAPL"], "exchange": "NOPE"}, InvalidInputError, "NOPE"),
    ],
)
def test_bad_parameters_fail_before_anything_is_written(store_conn, kwargs, error, message):
    op = PortfolioETLOperator(task_id="etl", store_conn_id="desk_store", **kwargs)
    with pytest.raises(error, match=message):
        op.execute(context("2024-06-08"))
    assert not store_conn.exists() or PortfolioStore.for_sqlite_file(store_conn).count_bars() == 0


def test_template_fields_cover_every_conn_id_and_range():
    assert {"symbols", "start", "end", "timeframe", "sources", "store_conn_id"} <= set(PortfolioETLOperator.template_fields)
