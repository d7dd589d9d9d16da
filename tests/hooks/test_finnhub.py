"""FinnhubHook against recorded-shape Finnhub bodies (requests-mock only, never the network)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests

from airflow_provider_portfolio.exceptions import (
    AuthenticationError,
    InvalidInputError,
    PlanNotSupportedError,
    RateLimitError,
    UnknownSymbolError,
    VendorError,
    VendorUnavailableError,
)
from airflow_provider_portfolio.hooks.finnhub import FinnhubHook
from airflow_provider_portfolio.market.bars import BAR_COLUMNS
from airflow_provider_portfolio.market.news import NewsItem

from .conftest import FINNHUB_KEY

FIXTURES = Path(__file__).parent / "fixtures" / "finnhub"
BASE = "https://finnhub.io/api/v1"
QUOTE, NEWS = f"{BASE}/quote", f"{BASE}/company-news"
STOCK_CANDLE, CRYPTO_CANDLE = f"{BASE}/stock/candle", f"{BASE}/crypto/candle"
JSON = {"Content-Type": "application/json; charset=utf-8"}


def load(name: str):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def params(request) -> dict[str, str]:
    """The exact query parameters of a recorded request (requests-mock's ``qs`` lower-cases values)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


def assert_key_in_header_only(request) -> None:
    assert request.headers["X-Finnhub-Token"] == FINNHUB_KEY
    assert FINNHUB_KEY not in request.url and "token=" not in request.url
    assert request.timeout == 10.0


def assert_no_key(err: BaseException, caplog=None) -> None:
    assert FINNHUB_KEY not in str(err)
    if caplog is not None:
        assert FINNHUB_KEY not in caplog.text


@pytest.fixture
def hook(add_connection, no_sleep) -> FinnhubHook:
    add_connection("fh", "finnhub", password=FINNHUB_KEY)
    h = FinnhubHook(finnhub_conn_id="fh")
    h.sleep = no_sleep.append
    return h


def make_hook(add_connection, no_sleep, conn_id: str = "fh2", **kwargs) -> FinnhubHook:
    add_connection(conn_id, "finnhub", **kwargs)
    h = FinnhubHook(conn_id)
    h.sleep = no_sleep.append
    return h


# --- construction -------------------------------------------------------------------------------


def test_constructs_from_the_conn_id_alone_without_io():
    h = FinnhubHook("no_such_connection")
    assert h.name == "no_such_connection" and h.conn_id == "no_such_connection"
    assert FinnhubHook().name == "finnhub_default"
    assert (FinnhubHook.conn_name_attr, FinnhubHook.conn_type, FinnhubHook.hook_name, FinnhubHook.vendor) == (
        "finnhub_conn_id", "finnhub", "Finnhub", "Finnhub")


def test_module_import_pulls_neither_pandas_nor_requests():
    code = (
        "import sys, airflow_provider_portfolio.hooks.finnhub as m; "
        "print('pandas' in sys.modules, 'requests' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- quote --------------------------------------------------------------------------------------


def test_quote(hook, requests_mock):
    requests_mock.get(QUOTE, json=load("quote_aapl"), headers=JSON)
    assert hook.get_quote("aapl") == load("quote_aapl")
    assert params(requests_mock.last_request) == {"symbol": "AAPL"}
    assert_key_in_header_only(requests_mock.last_request)


def test_quote_of_an_unknown_symbol(hook, requests_mock, caplog):
    requests_mock.get(QUOTE, json=load("quote_unknown"), headers=JSON)
    with pytest.raises(UnknownSymbolError, match="does not know 'ZZZZZ'") as info:
        hook.get_quote("ZZZZZ")
    assert requests_mock.call_count == 1
    assert_no_key(info.value, caplog)


def test_quote_of_a_crypto_pair_uses_the_exchange_symbol(hook, requests_mock, add_connection, no_sleep):
    requests_mock.get(QUOTE, json=load("quote_aapl"), headers=JSON)
    hook.get_quote("BTC/USD")
    assert params(requests_mock.last_request) == {"symbol": "BINANCE:BTCUSDT"}
    hook.get_quote("binance:ethusdt")
    assert params(requests_mock.last_request) == {"symbol": "BINANCE:ETHUSDT"}
    other = make_hook(add_connection, no_sleep, "fh_cb", password=FINNHUB_KEY, crypto_exchange="coinbase")
    other.get_quote("BTC/USD")
    assert params(requests_mock.last_request) == {"symbol": "COINBASE:BTCUSD"}


def test_quote_malformed_and_html_bodies(hook, requests_mock):
    requests_mock.get(QUOTE, json={"price": 1}, headers=JSON)
    with pytest.raises(VendorError, match="malformed quote"):
        hook.get_quote("AAPL")
    requests_mock.get(QUOTE, text="<!DOCTYPE html><html><body>Bad gateway</body></html>",
                      headers={"Content-Type": "text/html"})
    with pytest.raises(VendorError, match="text/html instead of JSON") as info:
        hook.get_quote("AAPL")
    assert requests_mock.call_count == 2
    assert_no_key(info.value)


def test_a_200_error_body_is_a_vendor_error(hook, requests_mock):
    requests_mock.get(QUOTE, json={"error": "Symbol not supported"}, headers=JSON)
    with pytest.raises(VendorError, match="Symbol not supported") as info:
        hook.get_quote("AAPL")
    assert type(info.value) is VendorError


def test_quote_bad_symbol_is_refused_before_any_call(hook, requests_mock):
    with pytest.raises(InvalidInputError, match="not a ticker"):
        hook.get_quote("apple inc")
    with pytest.raises(InvalidInputError, match="ticker string"):
        hook.get_quote(None)
    assert requests_mock.call_count == 0


# --- company news -------------------------------------------------------------------------------


def test_company_news(hook, requests_mock):
    requests_mock.get(NEWS, json=load("company_news_aapl"), headers=JSON)
    items = hook.get_company_news("AAPL", date(2024, 6, 1), date(2024, 6, 7))

    assert all(isinstance(i, NewsItem) and i.symbol == "AAPL" and i.source == "finnhub" for i in items)
    assert [i.published for i in items] == [
        datetime(2024, 6, 3, 16, 0, tzinfo=timezone.utc),
        datetime(2024, 6, 5, 16, 0, tzinfo=timezone.utc),
        datetime(2024, 6, 7, 20, 0, tzinfo=timezone.utc),
    ]
    assert items[0].score == 0.0  # neutral text
    assert items[1].score < 0 < items[2].score  # probe/warn/fines vs rally/upgrade/growth
    assert items[2].url.startswith("https://finnhub.io/api/news?id=")
    assert params(requests_mock.last_request) == {"symbol": "AAPL", "from": "2024-06-01", "to": "2024-06-07"}
    assert_key_in_header_only(requests_mock.last_request)


def test_company_news_empty(hook, requests_mock):
    requests_mock.get(NEWS, json=[], headers=JSON)
    assert hook.get_company_news("ZZZZZ", date(2024, 6, 1), date(2024, 6, 7)) == []


def test_company_news_malformed(hook, requests_mock):
    requests_mock.get(NEWS, json={"data": []}, headers=JSON)
    with pytest.raises(VendorError, match="not a list"):
        hook.get_company_news("AAPL", date(2024, 6, 1), date(2024, 6, 7))
    body = load("company_news_aapl")
    body[0]["datetime"] = "yesterday"
    requests_mock.get(NEWS, json=body, headers=JSON)
    with pytest.raises(VendorError, match="unreadable datetime"):
        hook.get_company_news("AAPL", date(2024, 6, 1), date(2024, 6, 7))


def test_company_news_bad_arguments(hook, requests_mock):
    with pytest.raises(InvalidInputError, match="equities only"):
        hook.get_company_news("BTC/USD", date(2024, 6, 1), date(2024, 6, 7))
    with pytest.raises(InvalidInputError, match="after end"):
        hook.get_company_news("AAPL", date(2024, 6, 7), date(2024, 6, 1))
    with pytest.raises(InvalidInputError, match="start must be a date"):
        hook.get_company_news("AAPL", "last week", date(2024, 6, 1))
    assert requests_mock.call_count == 0


def test_company_news_rate_limit_then_success(hook, requests_mock, no_sleep):
    requests_mock.get(NEWS, [{"status_code": 429, "json": load("error_429_limit"), "headers": {"Retry-After": "3"}},
                             {"json": load("company_news_aapl"), "headers": JSON}])
    assert len(hook.get_company_news("AAPL", date(2024, 6, 1), date(2024, 6, 7))) == 3
    assert no_sleep == [3.0]


def test_company_news_timeout_then_success(hook, requests_mock, no_sleep):
    requests_mock.get(NEWS, [{"exc": requests.exceptions.ReadTimeout}, {"json": [], "headers": JSON}])
    assert hook.get_company_news("AAPL", date(2024, 6, 1), date(2024, 6, 7)) == []
    assert no_sleep == [1.0]


# --- candles ------------------------------------------------------------------------------------


def test_daily_candles(hook, requests_mock):
    requests_mock.get(STOCK_CANDLE, json=load("stock_candle_aapl_daily"), headers=JSON)
    frame = hook.get_bars("AAPL", date(2024, 6, 4), date(2024, 6, 6))

    assert list(frame.columns) == list(BAR_COLUMNS)
    assert frame["ts"].tolist() == [pd.Timestamp(f"2024-06-0{d}", tz="UTC") for d in (4, 5, 6)]
    row = frame.iloc[0]
    assert (row.open, row.high, row.low, row.close, row.volume) == (194.635, 195.32, 193.03, 194.35, 47471445.0)
    assert set(frame["source"]) == {"fh"} and set(frame["timeframe"]) == {"1Day"} and set(frame["symbol"]) == {"AAPL"}
    sent = params(requests_mock.last_request)
    assert sent == {"symbol": "AAPL", "resolution": "D", "from": "1717459200", "to": "1717718399"}
    assert_key_in_header_only(requests_mock.last_request)


def test_daily_candles_stamped_at_the_open_keep_their_session_date(hook, requests_mock):
    body = load("stock_candle_aapl_daily")
    body["t"] = [t + 13 * 3600 + 1800 for t in body["t"]]  # 13:30 UTC, the older convention
    requests_mock.get(STOCK_CANDLE, json=body, headers=JSON)
    frame = hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))
    assert frame["ts"].dt.strftime("%Y-%m-%d %H:%M").tolist() == [f"2024-06-0{d} 00:00" for d in range(3, 8)]


def test_intraday_candles_are_labelled_by_their_start(hook, requests_mock):
    requests_mock.get(STOCK_CANDLE, json=load("stock_candle_aapl_5min"), headers=JSON)
    frame = hook.get_bars("AAPL", date(2024, 6, 7), date(2024, 6, 7), "5Min")
    assert frame["ts"].dt.strftime("%H:%M").tolist() == ["13:30", "13:35", "13:40"]
    assert set(frame["timeframe"]) == {"5Min"}
    assert params(requests_mock.last_request)["resolution"] == "5"


@pytest.mark.parametrize(("timeframe", "resolution"), [("1Min", "1"), ("15Min", "15"), ("30Min", "30"), ("1Hour", "60")])
def test_resolutions(hook, requests_mock, timeframe, resolution):
    requests_mock.get(STOCK_CANDLE, json=load("candle_no_data"), headers=JSON)
    hook.get_bars("AAPL", date(2024, 6, 7), date(2024, 6, 7), timeframe)
    assert params(requests_mock.last_request)["resolution"] == resolution


def test_crypto_candles(hook, requests_mock):
    requests_mock.get(CRYPTO_CANDLE, json=load("crypto_candle_btcusdt_daily"), headers=JSON)
    frame = hook.get_bars("BTC/USD", date(2024, 6, 5), date(2024, 6, 7))
    assert params(requests_mock.last_request)["symbol"] == "BINANCE:BTCUSDT"
    assert set(frame["symbol"]) == {"BTC/USD"}
    assert frame["close"].tolist() == [71082.84, 70791.98, 69355.6]
    assert frame.iloc[0].volume == 28703.18206


@pytest.mark.parametrize("body", [{"s": "no_data"}, {"c": [], "h": [], "l": [], "o": [], "s": "ok", "t": [], "v": []}])
def test_no_candles_is_an_empty_frame(hook, requests_mock, body):
    requests_mock.get(STOCK_CANDLE, json=body, headers=JSON)
    frame = hook.get_bars("AAPL", date(2024, 6, 8), date(2024, 6, 9))
    assert frame.empty and list(frame.columns) == list(BAR_COLUMNS)


def test_candles_outside_the_range_are_dropped(hook, requests_mock):
    requests_mock.get(STOCK_CANDLE, json=load("stock_candle_aapl_daily"), headers=JSON)
    assert hook.get_bars("AAPL", date(2024, 6, 8), date(2024, 6, 9)).empty


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"c": [1.0], "h": [1.0], "l": [1.0], "o": [1.0], "s": "ok", "t": [1717718400, 1717804800], "v": [1]},
         "malformed candle arrays"),
        ({"c": [1.0], "t": [1717718400]}, "status 's'"),
        ({"s": "error"}, "status 'error'"),
        ({"c": ["x"], "h": [1.0], "l": [1.0], "o": [1.0], "s": "ok", "t": [1717718400], "v": [1]}, "non-numeric close"),
        ([1, 2], "status 's'"),
    ],
)
def test_malformed_candles(hook, requests_mock, body, match):
    requests_mock.get(STOCK_CANDLE, json=body, headers=JSON)
    with pytest.raises(VendorError, match=match) as info:
        hook.get_bars("AAPL", date(2024, 6, 7), date(2024, 6, 7))
    assert requests_mock.call_count == 1
    assert_no_key(info.value)


def test_candles_html_body(hook, requests_mock):
    requests_mock.get(STOCK_CANDLE, text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
                      headers={"Content-Type": "text/html"})
    with pytest.raises(VendorError, match="instead of JSON"):
        hook.get_bars("AAPL", date(2024, 6, 7), date(2024, 6, 7))


def test_unsupported_timeframes(hook, requests_mock):
    with pytest.raises(InvalidInputError, match="1Min, 5Min, 15Min, 30Min, 1Hour, 1Day"):
        hook.get_bars("AAPL", date(2024, 6, 7), date(2024, 6, 7), "2Hour")
    with pytest.raises(InvalidInputError, match="unknown timeframe"):
        hook.get_bars("AAPL", date(2024, 6, 7), date(2024, 6, 7), "1Month")
    with pytest.raises(InvalidInputError, match="after end"):
        hook.get_bars("AAPL", date(2024, 6, 7), date(2024, 6, 1))
    assert requests_mock.call_count == 0


def test_candles_on_the_free_plan_are_plan_not_supported(hook, requests_mock, no_sleep, caplog):
    requests_mock.get(STOCK_CANDLE, status_code=403, json=load("error_403_no_access"), headers=JSON)
    with pytest.raises(PlanNotSupportedError, match="not available on this Finnhub plan") as info:
        hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))
    assert "You don't have access to this resource." in str(info.value)
    assert info.value.status_code == 403
    assert requests_mock.call_count == 1 and no_sleep == []
    assert_no_key(info.value, caplog)


def test_candles_rate_limit_with_retry_after_then_success(hook, requests_mock, no_sleep, caplog):
    requests_mock.get(STOCK_CANDLE, [
        {"status_code": 429, "json": load("error_429_limit"), "headers": {"Retry-After": "2"}},
        {"json": load("stock_candle_aapl_daily"), "headers": JSON},
    ])
    with caplog.at_level(logging.WARNING):
        assert len(hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))) == 5
    assert no_sleep == [2.0]
    assert "burst rate limit" in caplog.text and FINNHUB_KEY not in caplog.text


def test_candles_rate_limit_exhausted(hook, requests_mock, no_sleep):
    requests_mock.get(STOCK_CANDLE, status_code=429, json=load("error_429_limit"), headers=JSON)
    with pytest.raises(RateLimitError, match="API limit reached") as info:
        hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))
    assert info.value.kind == RateLimitError.BURST and info.value.status_code == 429
    assert requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]
    assert_no_key(info.value)


def test_candles_server_error_then_success(hook, requests_mock, no_sleep):
    requests_mock.get(STOCK_CANDLE, [{"status_code": 502, "text": "Bad Gateway"},
                                     {"json": load("stock_candle_aapl_daily"), "headers": JSON}])
    assert len(hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))) == 5
    assert no_sleep == [1.0]
    assert all(r.timeout == 10.0 for r in requests_mock.request_history)


def test_candles_server_errors_exhausted(hook, requests_mock, no_sleep):
    requests_mock.get(STOCK_CANDLE, status_code=500, text="Internal Server Error")
    with pytest.raises(VendorUnavailableError, match="HTTP 500") as info:
        hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]
    assert_no_key(info.value)


def test_candles_timeouts_exhausted(hook, requests_mock, no_sleep, caplog):
    requests_mock.get(STOCK_CANDLE, exc=requests.exceptions.ConnectTimeout)
    with caplog.at_level(logging.WARNING), pytest.raises(VendorUnavailableError, match="within 10 s") as info:
        hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]
    assert_no_key(info.value, caplog)


# --- keys, connection fields --------------------------------------------------------------------


def test_a_refused_key_is_an_authentication_error(hook, requests_mock, no_sleep, caplog):
    requests_mock.get(QUOTE, status_code=401, json=load("error_401_invalid_key"), headers=JSON)
    with pytest.raises(AuthenticationError, match="HTTP 401: .*Invalid API key") as info:
        hook.get_quote("AAPL")
    assert requests_mock.call_count == 1 and no_sleep == []
    assert_no_key(info.value, caplog)


@pytest.mark.parametrize("password", [None, "", "  "])
def test_a_missing_key_names_the_connection(add_connection, no_sleep, requests_mock, password):
    h = make_hook(add_connection, no_sleep, "fh_nokey", password=password)
    for call in (lambda: h.get_quote("AAPL"), lambda: h.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7)),
                 lambda: h.get_company_news("AAPL", date(2024, 6, 3), date(2024, 6, 7))):
        with pytest.raises(AuthenticationError, match="'fh_nokey'.*no Finnhub API key"):
            call()
    assert requests_mock.call_count == 0


def test_a_malformed_base_url_is_an_invalid_input(add_connection, no_sleep, requests_mock):
    h = make_hook(add_connection, no_sleep, password=FINNHUB_KEY, base_url="finnhub.io/api/v1")
    with pytest.raises(InvalidInputError, match="'fh2': base_url must look like") as info:
        h.get_quote("AAPL")
    assert requests_mock.call_count == 0
    assert_no_key(info.value)


def test_base_url_from_the_extra(add_connection, no_sleep, requests_mock):
    h = make_hook(add_connection, no_sleep, password=FINNHUB_KEY, base_url="http://mirror.internal/finnhub/v1/")
    requests_mock.get("http://mirror.internal/finnhub/v1/quote", json=load("quote_aapl"), headers=JSON)
    assert h.get_quote("AAPL")["c"] == 196.89


def test_a_connection_error_is_redacted(hook, requests_mock):
    leak = requests.exceptions.ConnectionError(f"proxy refused request with X-Finnhub-Token: {FINNHUB_KEY}")
    requests_mock.get(QUOTE, exc=leak)
    with pytest.raises(VendorUnavailableError, match="could not be reached") as info:
        hook.get_quote("AAPL")
    assert_no_key(info.value)


# --- Test button --------------------------------------------------------------------------------


def test_connection_succeeds_with_one_quote(hook, requests_mock):
    requests_mock.get(QUOTE, json=load("quote_aapl"), headers=JSON)
    ok, message = hook.test_connection()
    assert ok is True
    assert message == "Finnhub answered: AAPL 196.89 at 2024-06-07T20:00:01+00:00"
    assert requests_mock.call_count == 1
    assert params(requests_mock.last_request) == {"symbol": "AAPL"}
    assert_key_in_header_only(requests_mock.last_request)


@pytest.mark.parametrize(
    ("status", "fixture", "error"),
    [(401, "error_401_invalid_key", "AuthenticationError"), (403, "error_403_no_access", "PlanNotSupportedError")],
)
def test_connection_fails_without_showing_the_key(hook, requests_mock, status, fixture, error, caplog):
    requests_mock.get(QUOTE, status_code=status, json=load(fixture), headers=JSON)
    ok, message = hook.test_connection()
    assert ok is False and message.startswith(error)
    assert FINNHUB_KEY not in message and FINNHUB_KEY not in caplog.text


def test_connection_fails_for_a_missing_key_or_connection(add_connection, no_sleep, requests_mock):
    ok, message = make_hook(add_connection, no_sleep, "fh_empty", password="").test_connection()
    assert ok is False and "fh_empty" in message and "API key" in message
    ok, message = FinnhubHook("does_not_exist").test_connection()
    assert ok is False and "does_not_exist" in message
    assert requests_mock.call_count == 0
