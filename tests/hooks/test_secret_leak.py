"""Keys never leak: every hook is driven through every kind of failure with key-shaped values.

Vendors that echo what they were sent (a proxy's HTML error page quoting the URL, Alpha Vantage's
quota note quoting the key, a 401 body quoting headers) are the worst case; each is simulated. What
is scanned: every log record (except the test double's own), every exception's text, repr and
formatted traceback, ``test_connection()`` messages, reprs of hooks and operators, and the ETL
operator's XCom summary and failure message.
"""

from __future__ import annotations

import json
import logging
import traceback
from types import SimpleNamespace

import pandas as pd
import pytest
import requests
import requests_mock as rm

from airflow_provider_portfolio.hooks.alpaca import AlpacaHook
from airflow_provider_portfolio.hooks.alphavantage import AlphaVantageHook
from airflow_provider_portfolio.hooks.finnhub import FinnhubHook
from airflow_provider_portfolio.hooks.vendor import VendorHook
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET, ALPHAVANTAGE_KEY, FINNHUB_KEY

SECRETS = (ALPACA_KEY_ID, ALPACA_SECRET, ALPHAVANTAGE_KEY, FINNHUB_KEY)


def sent_keys(request) -> str:
    """The keys this request carried (in its URL or headers), as a careless vendor would quote them."""
    sent = f"{request.url} {dict(request.headers)}"
    return " ".join(s for s in SECRETS if s in sent)


def echo_everything(request, context) -> str:
    """A body quoting the URL, the headers and the key, as careless proxies and vendors do."""
    return f"<html>error for {request.url} headers={dict(request.headers)} key={sent_keys(request)}</html>"


def echo_json(request, context) -> dict:
    return {"code": 42210000, "message": f"bad request, key {sent_keys(request)}", "error": sent_keys(request)}


def note_quoting_the_key(request, context) -> dict:
    return {"Information": f"We have detected your API key as {sent_keys(request)} and our standard API rate "
                           "limit is 25 requests per day.", "error": f"Invalid API key {sent_keys(request)}"}


def raise_with_url(request, context):
    raise requests.exceptions.ConnectionError(f"Max retries exceeded with url: {request.url} ({sent_keys(request)})")


FAILURES = {
    "401 echoing keys": {"status_code": 401, "text": echo_everything},
    "403 echoing keys": {"status_code": 403, "text": echo_everything},
    "404 echoing keys": {"status_code": 404, "text": echo_everything},
    "422 echoing keys": {"status_code": 422, "json": echo_json},
    "429 echoing keys": {"status_code": 429, "text": echo_everything},
    "500 echoing keys": {"status_code": 500, "text": echo_everything},
    "200 HTML echoing the URL": {"status_code": 200, "text": echo_everything, "headers": {"Content-Type": "text/html"}},
    "200 vendor note quoting the key": {"status_code": 200, "json": note_quoting_the_key},
    "timeout": {"exc": requests.exceptions.ConnectTimeout},
    "connection error quoting the URL": {"text": raise_with_url},
}

START, END = "2024-06-03", "2024-06-07"


def calls(alpaca: AlpacaHook, av: AlphaVantageHook, fh: FinnhubHook):
    """Every public method of the three hooks that talks to a vendor."""
    return {
        "alpaca.get_account": alpaca.get_account,
        "alpaca.get_clock": alpaca.get_clock,
        "alpaca.get_asset": lambda: alpaca.get_asset("AAPL"),
        "alpaca.get_positions": alpaca.get_positions,
        "alpaca.get_bars stocks": lambda: alpaca.get_bars(["AAPL"], START, END),
        "alpaca.get_bars crypto": lambda: alpaca.get_bars("BTC/USD", START, END, "1Hour"),
        "alpaca.get_news": lambda: alpaca.get_news(["AAPL"], START, END),
        "alpaca.get_order_by_client_order_id": lambda: alpaca.get_order_by_client_order_id("desk-leak-1"),
        "alpaca.submit_order": lambda: alpaca.submit_order(symbol="AAPL", side="buy", qty=1,
                                                           client_order_id="desk-leak-1"),
        "alphavantage.get_bars daily": lambda: av.get_bars("AAPL", START, END),
        "alphavantage.get_bars intraday": lambda: av.get_bars("AAPL", START, END, "5Min"),
        "alphavantage.get_news_sentiment": lambda: av.get_news_sentiment(["AAPL"], START, END),
        "finnhub.get_quote": lambda: fh.get_quote("AAPL"),
        "finnhub.get_company_news": lambda: fh.get_company_news("AAPL", START, END),
        "finnhub.get_bars": lambda: fh.get_bars("AAPL", START, END),
    }


@pytest.fixture
def hooks(add_connection, monkeypatch):
    monkeypatch.setattr(VendorHook, "backoff_s", 0.0)
    monkeypatch.setattr(VendorHook, "max_wait_s", 0.0)
    add_connection("alpaca_leak", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET, paper=True)
    add_connection("av_leak", "alphavantage", password=ALPHAVANTAGE_KEY)
    add_connection("fh_leak", "finnhub", password=FINNHUB_KEY)
    return AlpacaHook("alpaca_leak"), AlphaVantageHook("av_leak"), FinnhubHook("fh_leak")


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def own_records(caplog) -> str:
    """Every log line but the HTTP double's (requests-mock logs raw URLs; it is not in production)."""
    return "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records if not r.name.startswith("requests_mock")
    )


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_no_key_in_errors_or_logs_whatever_the_vendor_answers(hooks, requests_mock, caplog, failure):
    requests_mock.register_uri(rm.ANY, rm.ANY, **FAILURES[failure])
    texts = []
    with caplog.at_level(logging.DEBUG):
        failed = 0
        for call in calls(*hooks).values():
            try:
                texts.append(repr(call()))  # e.g. an order looked up by id: None on a 404
            except Exception as err:  # every failure is collected and scanned
                failed += 1
                texts += [str(err), repr(err), "".join(traceback.format_exception(err))]
        for hook in hooks:
            ok, message = hook.test_connection()
            assert not ok
            texts += [message, repr(hook)]
    assert requests_mock.call_count > 0 and failed >= len(calls(*hooks)) - 1
    found = {text[:200]: leaks(text) for text in texts if leaks(text)}
    assert found == {}
    assert leaks(own_records(caplog)) == []


def test_no_key_in_the_etl_summary_xcom_or_failure(hooks, requests_mock, caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "d.db")}))
    requests_mock.register_uri(rm.ANY, rm.ANY, status_code=401, text=echo_everything)
    ts = pd.Timestamp("2024-06-08 12:00", tz="UTC").to_pydatetime()
    context = {"dag_run": SimpleNamespace(run_after=ts), "data_interval_end": ts}
    params = {"task_id": "etl", "symbols": ["AAPL", "BTC/USD"], "start": START, "end": END,
              "store_conn_id": "desk_store", "sources": ["alpaca_leak", "av_leak", "fh_leak"]}
    with caplog.at_level(logging.DEBUG):
        summary = PortfolioETLOperator(**params, max_failed_fraction=1.0).execute(context)
        with pytest.raises(RuntimeError) as err:
            PortfolioETLOperator(**params).execute(context)
    xcom = json.dumps(summary)
    assert summary["failed"] == ["AAPL", "BTC/USD"]
    assert "AuthenticationError" in summary["symbols"]["AAPL"]["failed_sources"]["alpaca_leak"]
    assert leaks(xcom) == []
    assert leaks(str(err.value)) == [] and leaks("".join(traceback.format_exception(err.value))) == []
    assert leaks(own_records(caplog)) == []
    assert leaks(repr(PortfolioETLOperator(**params))) == []
