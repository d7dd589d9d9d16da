"""AlphaVantageHook against recorded-shape Alpha Vantage bodies (requests-mock only, never the network)."""

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
from airflow_provider_portfolio.hooks import alphavantage as av_module
from airflow_provider_portfolio.hooks.alphavantage import AlphaVantageHook
from airflow_provider_portfolio.market.bars import BAR_COLUMNS
from airflow_provider_portfolio.market.news import NewsItem

from .conftest import ALPHAVANTAGE_KEY

FIXTURES = Path(__file__).parent / "fixtures" / "alphavantage"
URL = "https://www.alphavantage.co/query"


def load(name: str) -> dict:
    text = (FIXTURES / f"{name}.json").read_text().replace("__APIKEY__", ALPHAVANTAGE_KEY)
    return json.loads(text)


def params(request) -> dict[str, str]:
    """The exact query parameters of a recorded request (requests-mock's ``qs`` lower-cases values)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


def assert_no_key(err: BaseException, caplog=None) -> None:
    """The key is in no error message and in no log record of the provider (at any level).

    (urllib3 and requests-mock log request URLs at DEBUG, key included: Alpha Vantage takes the key only
    as a query parameter; in tasks, Airflow's secrets masker hides it there, the hook registers it.)
    """
    assert ALPHAVANTAGE_KEY not in str(err)
    if caplog is not None:
        ours = [r.getMessage() for r in caplog.records if r.name.startswith("airflow_provider_portfolio")]
        assert not any(ALPHAVANTAGE_KEY in m for m in ours)
        assert ALPHAVANTAGE_KEY not in "\n".join(
            r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


@pytest.fixture
def today(monkeypatch):
    """Pin the hook's idea of today (it picks outputsize and intraday months from it)."""

    def set_today(day: date) -> None:
        monkeypatch.setattr(av_module, "_today", lambda: day)

    set_today(date(2024, 6, 8))
    return set_today


@pytest.fixture
def hook(add_connection, no_sleep, today) -> AlphaVantageHook:
    add_connection("av", "alphavantage", password=ALPHAVANTAGE_KEY)
    h = AlphaVantageHook(alphavantage_conn_id="av")
    h.sleep = no_sleep.append
    return h


def make_hook(add_connection, no_sleep, conn_id: str = "av2", **kwargs) -> AlphaVantageHook:
    add_connection(conn_id, "alphavantage", **kwargs)
    h = AlphaVantageHook(conn_id)
    h.sleep = no_sleep.append
    return h


# --- construction -------------------------------------------------------------------------------


def test_constructs_from_the_conn_id_alone_without_io():
    h = AlphaVantageHook("no_such_connection")
    assert h.name == "no_such_connection"
    assert h.conn_id == "no_such_connection"
    assert AlphaVantageHook().name == "alphavantage_default"
    assert (AlphaVantageHook.conn_name_attr, AlphaVantageHook.conn_type, AlphaVantageHook.hook_name) == (
        "alphavantage_conn_id", "alphavantage", "Alpha Vantage")


def test_module_import_pulls_neither_pandas_nor_requests():
    code = (
        "import sys, airflow_provider_portfolio.hooks.alphavantage as m; "
        "print('pandas' in sys.modules, 'requests' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_connection_is_an_invalid_input_naming_it(requests_mock):
    with pytest.raises(InvalidInputError, match="'nope'"):
        AlphaVantageHook("nope").get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 0


# --- daily bars ---------------------------------------------------------------------------------


def test_daily_bars_are_canonical_oldest_first_and_in_range(hook, requests_mock):
    requests_mock.get(URL, json=load("time_series_daily_ibm"))
    frame = hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 6))

    assert list(frame.columns) == list(BAR_COLUMNS)
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert frame["ts"].tolist() == [pd.Timestamp(f"2024-06-0{d}", tz="UTC") for d in (3, 4, 5, 6)]
    first = frame.iloc[0]
    assert (first.open, first.high, first.low, first.close, first.volume) == (166.54, 166.78, 163.53, 165.28, 2776058.0)
    assert set(frame["symbol"]) == {"IBM"} and set(frame["timeframe"]) == {"1Day"} and set(frame["source"]) == {"av"}

    request = requests_mock.last_request
    assert params(request) == {"function": "TIME_SERIES_DAILY", "symbol": "IBM", "outputsize": "compact",
                               "apikey": ALPHAVANTAGE_KEY}
    assert request.timeout == 10.0


def test_daily_accepts_aware_datetimes_by_their_utc_date(hook, requests_mock):
    requests_mock.get(URL, json=load("time_series_daily_ibm"))
    start = datetime(2024, 6, 6, 22, 0, tzinfo=timezone.utc)
    frame = hook.get_bars("ibm", start, datetime(2024, 6, 7, 1, 0, tzinfo=timezone.utc))
    assert frame["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2024-06-06", "2024-06-07"]
    assert set(frame["symbol"]) == {"IBM"}


def test_daily_asks_full_history_only_when_the_range_reaches_back_far(hook, requests_mock, today):
    requests_mock.get(URL, json=load("time_series_daily_ibm"))
    frame = hook.get_bars("IBM", date(2023, 1, 3), date(2024, 6, 7))
    assert params(requests_mock.last_request)["outputsize"] == "full"
    assert len(frame) == 7


def test_full_history_on_a_free_key_is_plan_not_supported_without_retry(hook, requests_mock, no_sleep):
    requests_mock.get(URL, json=load("information_outputsize_full_premium"))
    with pytest.raises(PlanNotSupportedError, match="not available on this Alpha Vantage plan") as info:
        hook.get_bars("IBM", date(2023, 1, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 1 and no_sleep == []
    assert_no_key(info.value)


def test_a_range_without_sessions_is_an_empty_frame(hook, requests_mock):
    requests_mock.get(URL, json=load("time_series_daily_ibm"))
    frame = hook.get_bars("IBM", date(2024, 6, 8), date(2024, 6, 9))  # a weekend
    assert frame.empty and list(frame.columns) == list(BAR_COLUMNS)
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"


def test_an_empty_series_is_an_empty_frame(hook, requests_mock):
    requests_mock.get(URL, json=load("time_series_daily_empty"))
    assert hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7)).empty


def test_non_numeric_prices_are_a_vendor_error(hook, requests_mock):
    body = load("time_series_daily_ibm")
    body["Time Series (Daily)"]["2024-06-05"]["4. close"] = "n/a"
    requests_mock.get(URL, json=body)
    with pytest.raises(VendorError, match="non-numeric close"):
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))


def test_a_bar_lacking_a_field_is_a_vendor_error(hook, requests_mock):
    body = load("time_series_daily_ibm")
    del body["Time Series (Daily)"]["2024-06-05"]["5. volume"]
    requests_mock.get(URL, json=body)
    with pytest.raises(VendorError, match="lacking 'volume'"):
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))


# --- intraday bars ------------------------------------------------------------------------------


def test_intraday_bars_are_labelled_by_their_start_in_utc(hook, requests_mock):
    requests_mock.get(URL, json=load("time_series_intraday_ibm_5min"))
    frame = hook.get_bars("IBM", date(2024, 6, 7), date(2024, 6, 7), "5Min")

    # US/Eastern is UTC-4 in June; the 2024-06-06 bars fall outside the range.
    assert frame["ts"].dt.strftime("%Y-%m-%d %H:%M").tolist() == [
        "2024-06-07 08:00", "2024-06-07 13:30", "2024-06-07 13:35", "2024-06-07 13:40", "2024-06-07 23:55"]
    assert set(frame["timeframe"]) == {"5Min"}
    assert frame.iloc[1].open == 168.18 and frame.iloc[1].volume == 98712.0
    assert params(requests_mock.last_request) == {
        "function": "TIME_SERIES_INTRADAY", "symbol": "IBM", "interval": "5min", "outputsize": "full",
        "apikey": ALPHAVANTAGE_KEY}
    assert requests_mock.last_request.timeout == 10.0


def test_intraday_end_labelling_can_be_switched_on(hook, requests_mock):
    requests_mock.get(URL, json=load("time_series_intraday_ibm_5min"))
    hook.intraday_label = "end"
    frame = hook.get_bars("IBM", date(2024, 6, 7), date(2024, 6, 7), "5Min")
    assert frame["ts"].dt.strftime("%H:%M").tolist()[:2] == ["07:55", "13:25"]


def test_one_hour_bars_ask_the_60min_interval(hook, requests_mock):
    body = load("time_series_intraday_ibm_5min")
    body["Time Series (60min)"] = body.pop("Time Series (5min)")
    body["Meta Data"]["4. Interval"] = "60min"
    requests_mock.get(URL, json=body)
    frame = hook.get_bars("IBM", date(2024, 6, 7), date(2024, 6, 7), "1Hour")
    assert params(requests_mock.last_request)["interval"] == "60min"
    assert set(frame["timeframe"]) == {"1Hour"} and len(frame) == 5


def test_older_intraday_ranges_are_asked_month_by_month(hook, requests_mock, today):
    today(date(2024, 9, 2))
    june = load("time_series_intraday_ibm_5min")
    may = json.loads(json.dumps(june).replace("2024-06-07", "2024-05-31").replace("2024-06-06", "2024-05-30"))
    requests_mock.get(URL, json=lambda request, context: may if params(request)["month"] == "2024-05" else june)
    frame = hook.get_bars("IBM", date(2024, 5, 30), date(2024, 6, 7), "5Min")
    months = [params(r)["month"] for r in requests_mock.request_history]
    assert months == ["2024-05", "2024-06"]
    assert len(frame) == 14 and frame["ts"].is_unique  # each month's 7 bars in range, merged


def test_intraday_ranges_over_too_many_months_are_refused_before_any_call(hook, requests_mock, today):
    today(date(2026, 1, 1))
    with pytest.raises(InvalidInputError, match="at most 12 months"):
        hook.get_bars("IBM", date(2024, 1, 1), date(2025, 6, 1), "1Min")
    assert requests_mock.call_count == 0


@pytest.mark.parametrize("timeframe", ["2Min", "10Min", "2Hour"])
def test_unsupported_intraday_timeframes_name_the_supported_ones(hook, requests_mock, timeframe):
    with pytest.raises(InvalidInputError, match="1Min, 5Min, 15Min, 30Min, 1Hour or 1Day"):
        hook.get_bars("IBM", date(2024, 6, 7), date(2024, 6, 7), timeframe)
    assert requests_mock.call_count == 0


def test_bad_arguments_are_refused_before_any_call(hook, requests_mock):
    with pytest.raises(InvalidInputError, match="after end"):
        hook.get_bars("IBM", date(2024, 6, 7), date(2024, 6, 3))
    with pytest.raises(InvalidInputError, match="not a ticker"):
        hook.get_bars("not a ticker", date(2024, 6, 3), date(2024, 6, 7))
    with pytest.raises(InvalidInputError, match="unknown timeframe"):
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7), "1Week")
    assert requests_mock.call_count == 0


# --- crypto -------------------------------------------------------------------------------------


def test_crypto_daily_bars(hook, requests_mock):
    requests_mock.get(URL, json=load("digital_currency_daily_btc_usd"))
    frame = hook.get_bars("BTC/USD", date(2024, 6, 6), date(2024, 6, 8))
    assert params(requests_mock.last_request) == {
        "function": "DIGITAL_CURRENCY_DAILY", "symbol": "BTC", "market": "USD", "apikey": ALPHAVANTAGE_KEY}
    assert frame["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2024-06-06", "2024-06-07", "2024-06-08"]
    assert set(frame["symbol"]) == {"BTC/USD"}
    assert frame.iloc[-1].close == 69310.46 and frame.iloc[-1].volume == 9773.82967


def test_crypto_daily_bars_in_the_older_per_market_layout(hook, requests_mock):
    body = load("digital_currency_daily_btc_usd")
    rows = body["Time Series (Digital Currency Daily)"]
    for day, row in rows.items():
        o, h, lo, c, v = (row[k] for k in ("1. open", "2. high", "3. low", "4. close", "5. volume"))
        rows[day] = {"1a. open (EUR)": "1.0", "1b. open (USD)": o, "2a. high (EUR)": "1.0", "2b. high (USD)": h,
                     "3a. low (EUR)": "1.0", "3b. low (USD)": lo, "4a. close (EUR)": "1.0", "4b. close (USD)": c,
                     "5. volume": v, "6. market cap (USD)": "1000.0"}
    requests_mock.get(URL, json=body)
    frame = hook.get_bars("BTC/USD", date(2024, 6, 8), date(2024, 6, 8))
    assert (frame.iloc[0].open, frame.iloc[0].close) == (69347.99, 69310.46)


def test_crypto_intraday_bars_are_utc(hook, requests_mock):
    requests_mock.get(URL, json=load("crypto_intraday_btc_usd_5min"))
    frame = hook.get_bars("BTC/USD", date(2024, 6, 7), date(2024, 6, 7), "5Min")
    assert params(requests_mock.last_request) == {
        "function": "CRYPTO_INTRADAY", "symbol": "BTC", "market": "USD", "interval": "5min", "outputsize": "full",
        "apikey": ALPHAVANTAGE_KEY}
    assert frame["ts"].dt.strftime("%H:%M").tolist() == ["00:00", "00:05", "00:10"]
    assert frame["volume"].tolist() == [131.0, 102.0, 58.0]


def test_crypto_intraday_on_a_free_key_is_plan_not_supported(hook, requests_mock, no_sleep):
    requests_mock.get(URL, json=load("information_premium_endpoint"))
    with pytest.raises(PlanNotSupportedError, match="premium endpoint") as info:
        hook.get_bars("BTC/USD", date(2024, 6, 7), date(2024, 6, 7), "5Min")
    assert requests_mock.call_count == 1 and no_sleep == []
    assert_no_key(info.value)


# --- vendor errors ------------------------------------------------------------------------------


def test_unknown_symbol(hook, requests_mock):
    requests_mock.get(URL, json=load("error_invalid_api_call"))
    with pytest.raises(UnknownSymbolError, match="does not know the symbol") as info:
        hook.get_bars("ZZZZZ", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 1
    assert_no_key(info.value)


@pytest.mark.parametrize("field", ["Error Message", "Information"])
def test_a_refused_key_is_an_authentication_error(hook, requests_mock, field, caplog):
    text = load("error_invalid_apikey")["Error Message"]
    requests_mock.get(URL, json={field: text})
    with pytest.raises(AuthenticationError, match="apikey is invalid") as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 1
    assert_no_key(info.value, caplog)


@pytest.mark.parametrize("password", [None, "", "   "])
def test_a_missing_key_names_the_connection(add_connection, no_sleep, requests_mock, password):
    h = make_hook(add_connection, no_sleep, "av_nokey", password=password)
    with pytest.raises(AuthenticationError, match="'av_nokey'.*no Alpha Vantage API key"):
        h.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 0


def test_a_malformed_base_url_is_an_invalid_input(add_connection, no_sleep, requests_mock):
    h = make_hook(add_connection, no_sleep, password=ALPHAVANTAGE_KEY, base_url="ftp://example.com/x?apikey=1")
    with pytest.raises(InvalidInputError, match="'av2': base_url must look like") as info:
        h.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 0
    assert_no_key(info.value)


def test_base_url_and_timeout_come_from_the_extra(add_connection, no_sleep, requests_mock, today):
    h = make_hook(add_connection, no_sleep, password=ALPHAVANTAGE_KEY, base_url="http://proxy.internal:8080/av/",
                  timeout="4.5")
    requests_mock.get("http://proxy.internal:8080/av/query", json=load("time_series_daily_ibm"))
    assert len(h.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))) == 5
    assert requests_mock.last_request.timeout == 4.5


def test_a_body_without_the_series_is_a_vendor_error_not_retried(hook, requests_mock, no_sleep):
    requests_mock.get(URL, json=load("malformed_no_series"))
    with pytest.raises(VendorError, match="without 'Time Series \\(Daily\\)'") as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert type(info.value) is VendorError
    assert requests_mock.call_count == 1 and no_sleep == []
    assert_no_key(info.value)


def test_an_html_body_is_a_vendor_error(hook, requests_mock):
    html = "<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"
    requests_mock.get(URL, text=html, headers={"Content-Type": "text/html"})
    with pytest.raises(VendorError, match="text/html instead of JSON") as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 1
    assert_no_key(info.value)


def test_a_json_array_body_is_a_vendor_error(hook, requests_mock):
    requests_mock.get(URL, json=[1, 2, 3])
    with pytest.raises(VendorError, match="not an object") as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert_no_key(info.value)


def test_an_unrecognised_information_is_a_vendor_error(hook, requests_mock):
    requests_mock.get(URL, json={"Information": "The demo API key is for demo purposes only."})
    with pytest.raises(VendorError, match="demo purposes") as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert type(info.value) is VendorError


# --- rate limits, retries, timeouts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "wait"), [("note_burst_per_minute", 30.0), ("information_burst_per_second", 1.0)]
)
def test_a_burst_limit_is_retried_then_succeeds(hook, requests_mock, no_sleep, fixture, wait, caplog):
    requests_mock.get(URL, [{"json": load(fixture)}, {"json": load("time_series_daily_ibm")}])
    with caplog.at_level(logging.WARNING):
        frame = hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert len(frame) == 5
    assert requests_mock.call_count == 2
    assert no_sleep == [wait]  # the per-minute wait is capped at max_wait_s
    assert "burst rate limit" in caplog.text
    assert ALPHAVANTAGE_KEY not in caplog.text


def test_burst_retries_are_bounded(hook, requests_mock, no_sleep):
    requests_mock.get(URL, json=load("information_burst_per_second"))
    with pytest.raises(RateLimitError) as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert info.value.kind == RateLimitError.BURST
    assert requests_mock.call_count == hook.read_attempts == 3
    assert no_sleep == [1.0, 1.0]
    assert_no_key(info.value)


def test_a_spent_daily_quota_is_raised_at_once_and_the_echoed_key_is_hidden(hook, requests_mock, no_sleep, caplog):
    requests_mock.get(URL, json=load("information_daily_quota"))
    with caplog.at_level(logging.DEBUG), pytest.raises(RateLimitError) as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert info.value.kind == RateLimitError.QUOTA and not info.value.is_burst
    assert "25 requests per day" in str(info.value)
    assert "'av'" in str(info.value)
    assert requests_mock.call_count == 1 and no_sleep == []
    assert_no_key(info.value, caplog)


def test_a_server_error_is_retried_then_succeeds(hook, requests_mock, no_sleep):
    requests_mock.get(URL, [{"status_code": 503, "text": "Service Unavailable"},
                            {"json": load("time_series_daily_ibm")}])
    assert len(hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))) == 5
    assert no_sleep == [1.0]
    assert all(r.timeout == 10.0 for r in requests_mock.request_history)


def test_server_errors_exhaust_the_retries(hook, requests_mock, no_sleep):
    requests_mock.get(URL, status_code=502, text="<html>Bad Gateway</html>")
    with pytest.raises(VendorUnavailableError, match="HTTP 502") as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert info.value.status_code == 502
    assert requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]
    assert_no_key(info.value)


def test_a_timeout_is_retried_then_succeeds(hook, requests_mock, no_sleep):
    requests_mock.get(URL, [{"exc": requests.exceptions.ConnectTimeout},
                            {"json": load("time_series_daily_ibm")}])
    assert len(hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))) == 5
    assert no_sleep == [1.0]


def test_timeouts_exhaust_the_retries(hook, requests_mock, no_sleep, caplog):
    requests_mock.get(URL, exc=requests.exceptions.ConnectTimeout)
    with caplog.at_level(logging.WARNING), pytest.raises(VendorUnavailableError, match="within 10 s") as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]
    assert_no_key(info.value, caplog)


def test_a_connection_error_quoting_the_url_is_redacted(hook, requests_mock):
    leak = requests.exceptions.ConnectionError(
        f"HTTPSConnectionPool(host='www.alphavantage.co', port=443): Max retries exceeded with url: "
        f"/query?function=TIME_SERIES_DAILY&symbol=IBM&apikey={ALPHAVANTAGE_KEY}"
    )
    requests_mock.get(URL, exc=leak)
    with pytest.raises(VendorUnavailableError, match="could not be reached") as info:
        hook.get_bars("IBM", date(2024, 6, 3), date(2024, 6, 7))
    assert_no_key(info.value)


# --- news ---------------------------------------------------------------------------------------


def test_news_sentiment_one_item_per_requested_ticker(hook, requests_mock):
    requests_mock.get(URL, json=load("news_sentiment_aapl_msft"))
    items = hook.get_news_sentiment(["AAPL", "msft"], date(2024, 6, 1), date(2024, 6, 10))

    assert all(isinstance(i, NewsItem) and i.source == "alphavantage" for i in items)
    assert [(i.symbol, i.score) for i in items] == [
        ("AAPL", 1.0),  # 1.25 from the vendor, clipped
        ("MSFT", -0.338811),
        ("AAPL", 0.412301),
        ("MSFT", -0.05122),
    ]
    assert items[0].published == datetime(2024, 6, 5, 20, 1, 2, tzinfo=timezone.utc)
    assert items[-1].headline == "Apple Unveils On-Device AI Features At WWDC"
    assert items[-1].url == "https://www.benzinga.com/news/24/06/39201234/apple-wwdc-ai"
    assert params(requests_mock.last_request) == {
        "function": "NEWS_SENTIMENT", "tickers": "AAPL,MSFT", "sort": "LATEST", "limit": "50",
        "time_from": "20240601T0000", "time_to": "20240610T2359", "apikey": ALPHAVANTAGE_KEY}
    assert requests_mock.last_request.timeout == 10.0


def test_news_without_a_range_sends_no_time_bounds(hook, requests_mock):
    requests_mock.get(URL, json=load("news_sentiment_aapl_msft"))
    items = hook.get_news_sentiment("NVDA", limit=5)
    sent = params(requests_mock.last_request)
    assert "time_from" not in sent and "time_to" not in sent and sent["limit"] == "5"
    assert [(i.symbol, i.score) for i in items] == [("NVDA", 0.5011)]


def test_news_of_a_crypto_pair_uses_the_crypto_ticker(hook, requests_mock):
    body = load("news_sentiment_aapl_msft")
    body["feed"][0]["ticker_sentiment"][0]["ticker"] = "CRYPTO:BTC"
    requests_mock.get(URL, json=body)
    items = hook.get_news_sentiment(["BTC/USD"], datetime(2024, 6, 10, 12, 0, tzinfo=timezone.utc))
    assert params(requests_mock.last_request)["tickers"] == "CRYPTO:BTC"
    assert params(requests_mock.last_request)["time_from"] == "20240610T1200"
    assert [(i.symbol, i.score) for i in items] == [("BTC/USD", 0.412301)]


def test_news_without_a_ticker_score_falls_back_to_the_lexicon(hook, requests_mock):
    body = load("news_sentiment_aapl_msft")
    del body["feed"][1]["ticker_sentiment"][0]["ticker_sentiment_score"]
    requests_mock.get(URL, json=body)
    [item] = hook.get_news_sentiment(["MSFT"], date(2024, 6, 7), date(2024, 6, 7))[:1]
    assert item.headline.startswith("Microsoft Faces Antitrust Probe")
    assert item.score < 0  # "probe" is a negative lexicon word


@pytest.mark.parametrize("fixture", ["news_sentiment_empty_feed", "news_no_articles"])
def test_news_with_no_articles_is_an_empty_list(hook, requests_mock, fixture):
    requests_mock.get(URL, json=load(fixture))
    assert hook.get_news_sentiment(["AAPL"], date(2024, 6, 1), date(2024, 6, 2)) == []


def test_news_of_an_unknown_ticker(hook, requests_mock):
    requests_mock.get(URL, json=load("news_invalid_inputs"))
    with pytest.raises(UnknownSymbolError, match="Invalid inputs") as info:
        hook.get_news_sentiment(["ZZZZZ"])
    assert_no_key(info.value)


def test_news_quota_is_not_retried(hook, requests_mock, no_sleep):
    requests_mock.get(URL, json=load("information_daily_quota"))
    with pytest.raises(RateLimitError) as info:
        hook.get_news_sentiment(["AAPL"])
    assert info.value.kind == "quota" and no_sleep == [] and requests_mock.call_count == 1
    assert_no_key(info.value)


def test_news_burst_is_retried(hook, requests_mock, no_sleep):
    requests_mock.get(URL, [{"json": load("note_burst_per_minute")}, {"json": load("news_sentiment_aapl_msft")}])
    assert len(hook.get_news_sentiment(["AAPL"])) == 2
    assert no_sleep == [30.0]


def test_news_server_errors_and_timeouts(hook, requests_mock, no_sleep):
    requests_mock.get(URL, [{"status_code": 500, "text": "oops"}, {"exc": requests.exceptions.ConnectTimeout},
                            {"json": load("news_sentiment_aapl_msft")}])
    assert len(hook.get_news_sentiment(["MSFT"])) == 2
    assert no_sleep == [1.0, 2.0]


def test_news_malformed_bodies(hook, requests_mock):
    requests_mock.get(URL, json={"items": "0"})
    with pytest.raises(VendorError, match="without 'feed'"):
        hook.get_news_sentiment(["AAPL"])
    body = load("news_sentiment_aapl_msft")
    body["feed"][0]["time_published"] = "June 10th"
    requests_mock.get(URL, json=body)
    with pytest.raises(VendorError, match="unreadable time_published"):
        hook.get_news_sentiment(["AAPL"])
    requests_mock.get(URL, text="<html>maintenance</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(VendorError, match="instead of JSON"):
        hook.get_news_sentiment(["AAPL"])


def test_news_refused_key_and_missing_key(hook, requests_mock, add_connection, no_sleep):
    requests_mock.get(URL, json=load("error_invalid_apikey"))
    with pytest.raises(AuthenticationError) as info:
        hook.get_news_sentiment(["AAPL"])
    assert_no_key(info.value)
    nokey = make_hook(add_connection, no_sleep, "av_news_nokey")
    with pytest.raises(AuthenticationError, match="'av_news_nokey'"):
        nokey.get_news_sentiment(["AAPL"])


@pytest.mark.parametrize("limit", [0, 1001, "50", 2.5, True])
def test_news_limit_is_checked(hook, requests_mock, limit):
    with pytest.raises(InvalidInputError, match="limit"):
        hook.get_news_sentiment(["AAPL"], limit=limit)
    assert requests_mock.call_count == 0


def test_news_bad_symbols_and_range(hook, requests_mock):
    with pytest.raises(InvalidInputError, match="not a ticker"):
        hook.get_news_sentiment(["AAPL", "??"])
    with pytest.raises(InvalidInputError, match="after end"):
        hook.get_news_sentiment(["AAPL"], date(2024, 6, 10), date(2024, 6, 1))
    assert requests_mock.call_count == 0


# --- Test button --------------------------------------------------------------------------------


def test_connection_succeeds_with_one_quote(hook, requests_mock):
    requests_mock.get(URL, json=load("global_quote_ibm"))
    ok, message = hook.test_connection()
    assert ok is True
    assert message == "Alpha Vantage answered: IBM 170.0100 (2024-06-07)"
    assert requests_mock.call_count == 1
    assert params(requests_mock.last_request) == {"function": "GLOBAL_QUOTE", "symbol": "IBM",
                                                  "apikey": ALPHAVANTAGE_KEY}
    assert requests_mock.last_request.timeout == 10.0


@pytest.mark.parametrize(
    ("fixture", "error"),
    [("error_invalid_apikey", "AuthenticationError"), ("information_daily_quota", "RateLimitError")],
)
def test_connection_fails_without_showing_the_key(hook, requests_mock, fixture, error, caplog):
    requests_mock.get(URL, json=load(fixture))
    ok, message = hook.test_connection()
    assert ok is False and message.startswith(error)
    assert ALPHAVANTAGE_KEY not in message and ALPHAVANTAGE_KEY not in caplog.text


def test_connection_fails_for_a_missing_key_or_connection(add_connection, no_sleep, requests_mock):
    ok, message = make_hook(add_connection, no_sleep, "av_empty", password="").test_connection()
    assert ok is False and "av_empty" in message and "API key" in message
    ok, message = AlphaVantageHook("does_not_exist").test_connection()
    assert ok is False and "does_not_exist" in message
    assert requests_mock.call_count == 0
