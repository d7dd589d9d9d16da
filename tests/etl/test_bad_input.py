"""The ETL operator refuses bad input clearly, before the store is opened or anything fetched."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator


def context(at: str) -> dict:
    ts = pd.Timestamp(at, tz="UTC").to_pydatetime()
    return {"dag_run": SimpleNamespace(run_after=ts), "data_interval_end": ts}


@pytest.fixture
def store_path(tmp_path, monkeypatch):
    path = tmp_path / "desk.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    return path


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"end": "2999-01-01"}, r"end 2999-01-01T00:00:00\+00:00 is more than 7 days after now"),
        ({"start": "2999-01-01", "end": "2999-01-02"}, "is more than 7 days after now"),
        ({"start": "1066-10-14"}, "start 1066-10-14T00:00:00\\+00:00 is before 1900-01-01"),
        ({"end": "yesterday"}, "end must be an ISO 8601 date or instant"),
        ({"symbols": "None"}, "symbols rendered empty"),
        ({"symbols": "null"}, "symbols rendered empty"),
        ({"symbols": ""}, "symbols rendered empty"),
        ({"symbols": '["AAPL", "None"]'}, "symbols rendered empty"),
        ({"history_sessions": 0}, r"history_sessions must be an integer >= 1 .*, got 0"),
        ({"history_sessions": -5}, r"history_sessions must be an integer >= 1 .*, got -5"),
        ({"history_sessions": 2.5}, "history_sessions must be an integer"),
        ({"history_sessions": True}, "history_sessions must be an integer"),
        ({"history_sessions": 10**6}, "history_sessions must be an integer"),
        ({"max_failed_fraction": "lots"}, "max_failed_fraction must be within"),
    ],
)
def test_bad_input_fails_before_anything_is_written(store_path, tmp_path, kwargs, match):
    args = {"task_id": "etl", "symbols": ["AAPL"], "store_conn_id": "desk_store"} | kwargs
    with pytest.raises(InvalidInputError, match=match):
        PortfolioETLOperator(**args).execute(context("2024-06-08 12:00"))
    assert not store_path.exists()


def test_an_end_a_few_days_ahead_is_still_fine(store_path):
    # a date at most a week after now passes the check (clock skew, "the end of this week")
    end = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3)).date().isoformat()
    start = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=10)).date().isoformat()
    summary = PortfolioETLOperator(task_id="etl", symbols=["SPY"], store_conn_id="desk_store", start=start,
                                   end=end).execute(context("2024-06-08 12:00"))
    assert summary["start"] >= start


def test_history_sessions_of_one_loads_one_session(store_path):
    summary = PortfolioETLOperator(task_id="etl", symbols=["SPY"], store_conn_id="desk_store",
                                   history_sessions=1).execute(context("2024-06-08 12:00"))
    assert (summary["start"], summary["end"], summary["rows_written"]) == ("2024-06-07", "2024-06-07", 1)
