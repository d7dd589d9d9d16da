"""The ETL operator over real vendor hooks: the primary fails in each of its ways, the secondary serves.

Vendors are mocked at HTTP level (requests-mock) with bodies shaped like theirs; connections come
from the environment; the store is a real SQLite file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import requests

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.hooks.vendor import VendorHook
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.store import PortfolioStore
from tests.vendorkeys import ALPHAVANTAGE_KEY, FINNHUB_KEY

FIXTURES = Path(__file__).resolve().parents[1] / "hooks" / "fixtures"
AV_URL = "https://www.alphavantage.co/query"
FH_CANDLE = "https://finnhub.io/api/v1/stock/candle"
SESSIONS = ["2024-06-03", "2024-06-04", "2024-06-05", "2024-06-06", "2024-06-07"]


def fixture(path: str) -> dict:
    return json.loads((FIXTURES / path).read_text())


def context(at: str) -> dict:
    ts = pd.Timestamp(at, tz="UTC").to_pydatetime()
    return {"dag_run": SimpleNamespace(run_after=ts), "data_interval_end": ts}


@pytest.fixture
def desk(tmp_path, monkeypatch, add_connection):
    """Store, an Alpha Vantage primary and a Finnhub secondary; retries without waiting."""
    path = tmp_path / "desk.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    add_connection("av_primary", "alphavantage", password=ALPHAVANTAGE_KEY)
    add_connection("fh_secondary", "finnhub", password=FINNHUB_KEY)
    monkeypatch.setattr(VendorHook, "backoff_s", 0.0)
    monkeypatch.setattr(VendorHook, "max_wait_s", 0.0)
    return path


def etl(**kwargs) -> PortfolioETLOperator:
    params = {"task_id": "etl", "symbols": ["AAPL"], "start": "2024-06-03", "end": "2024-06-07",
              "store_conn_id": "desk_store", "sources": ["av_primary", "fh_secondary"], **kwargs}
    return PortfolioETLOperator(**params)


PRIMARY_FAILURES = {
    "burst limit (Note), retried until attempts run out": (
        {"json": fixture("alphavantage/note_burst_per_minute.json")}, "RateLimitError", 3),
    "daily quota (Information), not retried": (
        {"json": fixture("alphavantage/information_daily_quota.json")}, "RateLimitError", 1),
    "premium endpoint": ({"json": fixture("alphavantage/information_premium_endpoint.json")}, "PlanNotSupportedError", 1),
    "invalid key": ({"json": fixture("alphavantage/error_invalid_apikey.json")}, "AuthenticationError", 1),
    "HTTP 503, retried": ({"status_code": 503, "text": "Service Unavailable"}, "VendorUnavailableError", 3),
    "HTML instead of JSON": (
        {"text": "<html><body>Bad gateway</body></html>", "headers": {"Content-Type": "text/html"}}, "VendorError", 1),
    "timeout, retried": ({"exc": requests.exceptions.ConnectTimeout}, "VendorUnavailableError", 3),
    "malformed body": ({"json": fixture("alphavantage/malformed_no_series.json")}, "VendorError", 1),
}


@pytest.mark.parametrize("failure", sorted(PRIMARY_FAILURES))
def test_secondary_serves_when_the_primary_fails(desk, requests_mock, failure):
    response, error_name, attempts = PRIMARY_FAILURES[failure]
    requests_mock.get(AV_URL, **response)
    requests_mock.get(FH_CANDLE, json=fixture("finnhub/stock_candle_aapl_daily.json"))

    summary = etl().execute(context("2024-06-08 12:00"))

    aapl = summary["symbols"]["AAPL"]
    assert aapl["source"] == "fh_secondary" and "error" not in aapl
    assert error_name in aapl["failed_sources"]["av_primary"]
    assert summary["rows_written"] == 5
    assert len([r for r in requests_mock.request_history if r.url.startswith(AV_URL)]) == attempts
    bars = PortfolioStore.for_sqlite_file(desk).read_bars(["AAPL"])
    assert [str(t.date()) for t in bars["ts"]] == SESSIONS
    assert set(bars["source"]) == {"fh_secondary"}
    assert ALPHAVANTAGE_KEY not in json.dumps(summary) and FINNHUB_KEY not in json.dumps(summary)


def test_all_sources_failing_names_each_and_writes_nothing(desk, requests_mock):
    requests_mock.get(AV_URL, json=fixture("alphavantage/information_daily_quota.json"))
    requests_mock.get(FH_CANDLE, status_code=403, json=fixture("finnhub/error_403_no_access.json"))

    with pytest.raises(RuntimeError) as err:
        etl(symbols=["AAPL", "MSFT"]).execute(context("2024-06-08 12:00"))

    message = str(err.value)
    assert "2 of 2 symbol(s) failed" in message
    assert "av_primary: RateLimitError" in message and "fh_secondary: PlanNotSupportedError" in message
    assert "not available on this Finnhub plan" in message
    assert ALPHAVANTAGE_KEY not in message and FINNHUB_KEY not in message
    assert PortfolioStore.for_sqlite_file(desk).count_bars() == 0


def test_failures_below_the_threshold_are_reported_and_the_rest_loaded(desk, requests_mock):
    # AAPL: Alpha Vantage serves it. MSFT: unknown to Alpha Vantage, and Finnhub has no candles for it.
    def av(request, context_):
        if request.qs["symbol"] == ["aapl"]:
            return fixture("alphavantage/time_series_daily_ibm.json")
        return fixture("alphavantage/error_invalid_api_call.json")

    requests_mock.get(AV_URL, json=av)
    requests_mock.get(FH_CANDLE, json=fixture("finnhub/candle_no_data.json"))
    summary = etl(symbols=["AAPL", "MSFT"], max_failed_fraction=0.5).execute(context("2024-06-08 12:00"))
    assert summary["failed"] == ["MSFT"]
    msft = summary["symbols"]["MSFT"]
    assert "UnknownSymbolError" in msft["failed_sources"]["av_primary"]
    # An empty answer for closed sessions is no answer: the symbol fails, naming both sources.
    assert msft["failed_sources"]["fh_secondary"] == "no bars"
    assert "av_primary" in msft["error"] and "fh_secondary: no bars" in msft["error"]
    assert summary["symbols"]["AAPL"]["source"] == "av_primary"
    assert PortfolioStore.for_sqlite_file(desk).count_bars(["MSFT"]) == 0
    assert PortfolioStore.for_sqlite_file(desk).count_bars(["AAPL"]) == summary["symbols"]["AAPL"]["rows_written"] > 0


def test_a_source_connection_of_a_type_without_bars_is_refused_before_any_request(desk, requests_mock, add_connection):
    add_connection("some_db", "postgres", host="127.0.0.1")
    with pytest.raises(Exception, match="'some_db' has type 'postgres'.*alpaca, alphavantage, finnhub"):
        etl(sources=["some_db"]).execute(context("2024-06-08 12:00"))
    assert requests_mock.call_count == 0


def test_no_sources_given_uses_the_default_data_connections_that_exist(desk, requests_mock, add_connection, caplog):
    requests_mock.get(AV_URL, json=fixture("alphavantage/time_series_daily_ibm.json"))
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL"], start="2024-06-03", end="2024-06-07",
                              store_conn_id="desk_store")
    # No default data connection: the synthetic market, and no vendor is called.
    assert op.execute(context("2024-06-08 12:00"))["symbols"]["AAPL"]["source"] == "synthetic"
    assert requests_mock.call_count == 0

    add_connection("alphavantage_default", "alphavantage", password=ALPHAVANTAGE_KEY)
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL"], start="2024-06-03", end="2024-06-07",
                              store_conn_id="desk_store", mode="full")
    with caplog.at_level(logging.INFO):
        summary = op.execute(context("2024-06-08 12:00"))
    # A default connection exists: it alone serves; synthetic bars are never mixed in.
    assert summary["symbols"]["AAPL"]["source"] == "alphavantage_default"
    assert "using the default data connection(s) alphavantage_default" in caplog.text
    assert set(PortfolioStore.for_sqlite_file(desk).read_bars(["AAPL"])["source"]) == {"alphavantage_default"}


def test_live_mode_with_no_default_data_connection_is_refused(desk, monkeypatch, requests_mock):
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__EXECUTION_MODE", "live")
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL"], start="2024-06-03", end="2024-06-07",
                              store_conn_id="desk_store")
    with pytest.raises(InvalidInputError, match="no default data connection exists"):
        op.execute(context("2024-06-08 12:00"))
    assert requests_mock.call_count == 0
