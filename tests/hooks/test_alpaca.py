"""AlpacaHook offline: requests-mock in front of alpaca-py's sessions, fixtures shaped like Alpaca's answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

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
from airflow_provider_portfolio.hooks.alpaca import AlpacaHook
from airflow_provider_portfolio.market.bars import BAR_COLUMNS
from airflow_provider_portfolio.market.news import NewsItem
from airflow_provider_portfolio.market.sources import MarketDataSource
from tests.hooks.conftest import ALPACA_KEY_ID, ALPACA_SECRET

FIXTURES = Path(__file__).parent / "fixtures" / "alpaca"

PAPER = "https://paper-api.alpaca.markets/v2"
LIVE = "https://api.alpaca.markets/v2"
STOCK_BARS = "https://data.alpaca.markets/v2/stocks/bars"
CRYPTO_BARS = "https://data.alpaca.markets/v1beta3/crypto/us/bars"
NEWS = "https://data.alpaca.markets/v1beta1/news"
ORDERS = f"{PAPER}/orders"
BY_CID = f"{PAPER}/orders:by_client_order_id"
CID = "etl-20240603-AAPL-buy"

NOT_FOUND = {"status_code": 404, "json": {"code": 40410000, "message": "order not found for " + CID}}
HTML_504 = ("<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway "
            "Time-out</h1></center>\r\n</body>\r\n</html>\r\n")


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def assert_clean(err: BaseException) -> None:
    text = str(err)
    assert ALPACA_SECRET not in text and ALPACA_KEY_ID not in text, text


def raises(exc: type[BaseException], fn, match: str | None = None) -> BaseException:
    with pytest.raises(exc, match=match) as info:
        fn()
    assert_clean(info.value)
    return info.value


def posts(requests_mock) -> list:
    return [r for r in requests_mock.request_history if r.method == "POST" and r.path == "/v2/orders"]


@pytest.fixture
def make_hook(add_connection, no_sleep):
    def make(conn_id: str = "alpaca_test", *, login: str | None = ALPACA_KEY_ID, password: str | None = ALPACA_SECRET,
             allow_live: bool = False, **extra: object) -> AlpacaHook:
        add_connection(conn_id, "alpaca", login=login, password=password, **extra)
        hook = AlpacaHook(conn_id, allow_live=allow_live)
        hook.sleep = no_sleep.append
        return hook

    return make


@pytest.fixture
def hook(make_hook) -> AlpacaHook:
    return make_hook(timeout=7)


# --- construction, connection fields, clients ---------------------------------------------------------


def test_construction_stores_arguments_only():
    hook = AlpacaHook("nowhere", allow_live=True)
    assert (hook.alpaca_conn_id, hook.allow_live, hook.name, hook.conn_id) == ("nowhere", True, "nowhere", "nowhere")
    assert "connection" not in hook.__dict__
    assert AlpacaHook().alpaca_conn_id == AlpacaHook.default_conn_name == "alpaca_default"
    assert (AlpacaHook.conn_name_attr, AlpacaHook.conn_type, AlpacaHook.hook_name) == ("alpaca_conn_id", "alpaca",
                                                                                       "Alpaca")
    assert isinstance(hook, MarketDataSource)


def test_importing_the_hook_loads_neither_alpaca_nor_pandas():
    code = ("import sys, airflow_provider_portfolio.hooks.alpaca; "
            "print([m for m in ('alpaca', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_fixtures_parse_with_the_sdk_models():
    """The fixtures are what Alpaca sends: alpaca-py's strict models accept them."""
    from alpaca.data.models import BarSet
    from alpaca.data.models.news import NewsSet
    from alpaca.trading.models import Asset, Clock, Order, Position, TradeAccount

    TradeAccount(**load("account.json"))
    Clock(**load("clock.json"))
    Asset(**load("asset_aapl.json"))
    Asset(**load("asset_btcusd.json"))
    for position in load("positions.json"):
        Position(**position)
    for name in ("order_new.json", "order_filled.json", "order_limit_btc.json"):
        Order(**load(name))
    for name in ("stock_bars_daily_page1.json", "stock_bars_daily_page2.json", "stock_bars_daily_winter.json",
                 "stock_bars_5min.json", "crypto_bars_daily.json"):
        assert BarSet(load(name)["bars"]).data
    for name in ("news_page1.json", "news_page2.json"):
        assert NewsSet({"news": load(name)["news"]}).data["news"]


@pytest.mark.parametrize(("login", "password"), [(None, ALPACA_SECRET), (ALPACA_KEY_ID, None), ("  ", ALPACA_SECRET),
                                                 (ALPACA_KEY_ID, "")])
def test_missing_key_id_or_secret_is_an_authentication_error(make_hook, requests_mock, login, password):
    hook = make_hook(login=login, password=password)
    err = raises(AuthenticationError, hook.get_account, match="'alpaca_test'")
    assert "login" in str(err) or "password" in str(err)
    assert requests_mock.request_history == []


def test_bad_feed_names_the_connection(make_hook, requests_mock):
    hook = make_hook(feed="delayed")
    raises(InvalidInputError, lambda: hook.get_bars("AAPL", date(2024, 6, 3), date(2024, 6, 7)),
           match="'alpaca_test'.*feed must be one of iex, sip")
    assert requests_mock.request_history == []


@pytest.mark.parametrize(("field", "value", "call"), [
    ("trading_base_url", "ftp://proxy.test", "get_account"),
    ("trading_base_url", "paper-api.alpaca.markets", "get_account"),
    ("data_base_url", "https://proxy.test/data?token=abcdefgh", "get_bars"),
])
def test_malformed_base_url_is_refused_before_any_request(make_hook, requests_mock, field, value, call):
    hook = make_hook(**{field: value})
    fn = hook.get_account if call == "get_account" else lambda: hook.get_bars("AAPL", "2024-06-03", "2024-06-07")
    err = raises(InvalidInputError, fn, match=f"'alpaca_test'.*{field} must look like")
    assert "abcdefgh" not in str(err)
    assert requests_mock.request_history == []


def test_paper_connection_uses_the_paper_host(hook, requests_mock):
    requests_mock.get(f"{PAPER}/account", json=load("account.json"))
    assert hook.get_account()["account_number"] == "PA3S7ZK2BQ1P"
    sent = requests_mock.last_request
    assert sent.hostname == "paper-api.alpaca.markets"
    assert sent.headers["APCA-API-KEY-ID"] == ALPACA_KEY_ID and sent.headers["APCA-API-SECRET-KEY"] == ALPACA_SECRET
    assert hook.paper is True and hook.is_live is False


def test_live_connection_uses_the_live_host(make_hook, requests_mock):
    hook = make_hook(paper=False)
    requests_mock.get(f"{LIVE}/account", json=load("account.json"))
    hook.get_account()
    assert requests_mock.last_request.hostname == "api.alpaca.markets"
    assert hook.is_live is True


def test_base_url_overrides_point_the_clients_at_a_proxy(make_hook, requests_mock):
    hook = make_hook(trading_base_url="https://proxy.test/alpaca/v2/", data_base_url="http://127.0.0.1:9/md")
    requests_mock.get("https://proxy.test/alpaca/v2/clock", json=load("clock.json"))
    requests_mock.get("http://127.0.0.1:9/md/v2/stocks/bars", json=load("stock_bars_empty.json"))
    assert hook.get_clock()["is_open"] is True
    assert hook.get_bars("AAPL", "2024-06-03", "2024-06-07").empty
    assert [r.url.split("?")[0] for r in requests_mock.request_history] == [
        "https://proxy.test/alpaca/v2/clock", "http://127.0.0.1:9/md/v2/stocks/bars"]


def test_clients_have_the_timeout_and_no_sdk_retries(hook):
    for client in (hook.get_conn(), hook.stock_client, hook.crypto_client, hook.news_client):
        assert (client._retry, client._retry_wait, client._retry_codes) == (0, 0, [])
        assert client._session.default_timeout == 7
        assert client._use_raw_data is True
    assert type(hook.get_conn()).__name__ == "TradingClient"
    assert hook.get_conn() is hook.trading_client  # cached


def test_every_request_carries_the_connection_timeout(hook, requests_mock):
    requests_mock.get(f"{PAPER}/account", json=load("account.json"))
    requests_mock.get(STOCK_BARS, json=load("stock_bars_empty.json"))
    requests_mock.get(CRYPTO_BARS, json=load("stock_bars_empty.json"))
    requests_mock.get(NEWS, json={"news": [], "next_page_token": None})
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, json=load("order_new.json"))
    hook.get_account()
    assert requests_mock.last_request.timeout == 7
    hook.get_bars(["AAPL", "BTC/USD"], "2024-06-03", "2024-06-07")
    hook.get_news("AAPL", "2024-06-03", "2024-06-07")
    hook.submit_order(symbol="AAPL", side="buy", qty=10, client_order_id=CID)
    assert requests_mock.last_request.method == "POST"
    assert requests_mock.last_request.timeout == 7
    assert [r.timeout for r in requests_mock.request_history] == [7] * 6


def test_default_timeout_without_the_extra(make_hook, requests_mock):
    hook = make_hook()
    requests_mock.get(f"{PAPER}/clock", json=load("clock.json"))
    hook.get_clock()
    assert requests_mock.last_request.timeout == AlpacaHook.default_timeout


# --- account, clock, assets, positions, errors of reads ----------------------------------------------


def test_get_account_clock_positions(hook, requests_mock):
    requests_mock.get(f"{PAPER}/account", json=load("account.json"))
    requests_mock.get(f"{PAPER}/clock", json=load("clock.json"))
    requests_mock.get(f"{PAPER}/positions", json=load("positions.json"))
    account = hook.get_account()
    assert account["status"] == "ACTIVE" and account["buying_power"] == "199980.57"
    assert hook.get_clock()["next_close"] == "2024-06-03T16:00:00-04:00"
    positions = hook.get_positions()
    assert [p["symbol"] for p in positions] == ["AAPL", "BTCUSD"] and positions[0]["qty"] == "10"
    json.dumps([account, positions])  # plain, serialisable


def test_get_positions_when_flat(hook, requests_mock):
    requests_mock.get(f"{PAPER}/positions", json=[])
    assert hook.get_positions() == []


def test_get_asset_stock_and_crypto(hook, requests_mock):
    requests_mock.get(f"{PAPER}/assets/AAPL", json=load("asset_aapl.json"))
    requests_mock.get(f"{PAPER}/assets/BTCUSD", json=load("asset_btcusd.json"))
    assert hook.get_asset("aapl")["fractionable"] is True
    assert hook.get_asset("BTC/USD")["symbol"] == "BTC/USD"
    assert requests_mock.last_request.path == "/v2/assets/btcusd"  # no slash in the path (Alpaca 404s on it)


def test_unknown_asset(hook, requests_mock, no_sleep):
    requests_mock.get(f"{PAPER}/assets/ZZZZ", status_code=404,
                      json={"code": 40410000, "message": "asset not found for ZZZZ"})
    err = raises(UnknownSymbolError, lambda: hook.get_asset("ZZZZ"), match="HTTP 404: asset not found for ZZZZ")
    assert err.status_code == 404 and err.conn_id == "alpaca_test"
    assert requests_mock.call_count == 1 and no_sleep == []


def test_invalid_symbol_is_refused_before_any_request(hook, requests_mock):
    raises(InvalidInputError, lambda: hook.get_asset("not a ticker"), match="not a ticker")
    raises(InvalidInputError, lambda: hook.get_bars(["AAPL", 42], "2024-06-03", "2024-06-07"))
    assert requests_mock.request_history == []


@pytest.mark.parametrize(("response", "exc", "match"), [
    ({"status_code": 401, "json": {"code": 40110000, "message": "request is not authorized"}},
     AuthenticationError, "HTTP 401: request is not authorized"),
    ({"status_code": 403, "json": {"message": "forbidden."}}, AuthenticationError, "HTTP 403: forbidden"),
    ({"status_code": 403, "text": ""}, AuthenticationError, "HTTP 403"),
    ({"status_code": 422, "json": {"code": 42210000, "message": "invalid request"}}, VendorError,
     "HTTP 422: invalid request .code 42210000"),
    ({"status_code": 200, "text": "<!DOCTYPE html><html><body>Captive portal</body></html>",
      "headers": {"Content-Type": "text/html"}}, VendorError, "HTML page instead of JSON"),
    ({"status_code": 200, "text": "not json at all"}, VendorError, "not JSON"),
    ({"status_code": 200, "text": ""}, VendorError, "unexpected body"),
    ({"status_code": 200, "json": ["a", "list"]}, VendorError, "unexpected body"),
])
def test_read_errors_map_to_provider_classes_without_retry(hook, requests_mock, no_sleep, response, exc, match):
    requests_mock.get(f"{PAPER}/account", **response)
    err = raises(exc, hook.get_account, match=match)
    assert type(err) is exc
    assert requests_mock.call_count == 1 and no_sleep == []


def test_error_messages_never_carry_the_keys(hook, requests_mock):
    echo = {"code": 40110000, "message": f"key {ALPACA_KEY_ID} with secret {ALPACA_SECRET} is not authorized"}
    requests_mock.get(f"{PAPER}/account", status_code=401, json=echo)
    err = raises(AuthenticationError, hook.get_account)
    assert "***" in str(err)


def test_html_gateway_error_is_unavailable_and_says_html(hook, requests_mock, no_sleep):
    requests_mock.get(f"{PAPER}/account", status_code=502, text=HTML_504, headers={"Content-Type": "text/html"})
    err = raises(VendorUnavailableError, hook.get_account, match="HTTP 502: an HTML page")
    assert requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]  # ours, not the SDK's: 3 requests, no 3 s waits
    assert err.status_code == 502


def test_rate_limit_then_success(hook, requests_mock, no_sleep):
    requests_mock.get(f"{PAPER}/account", [
        {"status_code": 429, "json": {"code": 42910000, "message": "rate limit exceeded"},
         "headers": {"Retry-After": "2"}},
        {"json": load("account.json")},
    ])
    assert hook.get_account()["status"] == "ACTIVE"
    assert requests_mock.call_count == 2 and no_sleep == [2.0]


def test_rate_limit_reset_header_sets_the_wait(hook, requests_mock, no_sleep):
    reset = str(int(time.time()) + 6)
    requests_mock.get(f"{PAPER}/clock", [
        {"status_code": 429, "text": "too many requests.", "headers": {"X-RateLimit-Reset": reset}},
        {"json": load("clock.json")},
    ])
    hook.get_clock()
    assert len(no_sleep) == 1 and 3 < no_sleep[0] <= 6


def test_rate_limit_exhausted(hook, requests_mock, no_sleep):
    requests_mock.get(f"{PAPER}/clock", status_code=429, json={"code": 42910000, "message": "rate limit exceeded"})
    err = raises(RateLimitError, hook.get_clock, match="HTTP 429")
    assert err.is_burst and requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]


def test_server_error_retried_then_success(hook, requests_mock, no_sleep):
    requests_mock.get(f"{PAPER}/positions", [{"status_code": 503, "text": "upstream connect error"},
                                             {"status_code": 504, "text": HTML_504}, {"json": load("positions.json")}])
    assert len(hook.get_positions()) == 2
    assert requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]


def test_server_error_retries_exhausted(hook, requests_mock, no_sleep):
    requests_mock.get(f"{PAPER}/account", status_code=500, json={"code": 50010000, "message": "internal server error"})
    err = raises(VendorUnavailableError, hook.get_account, match="HTTP 500: internal server error")
    assert err.status_code == 500 and requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]


@pytest.mark.parametrize(("exc", "match"), [
    (requests.exceptions.ConnectTimeout, "did not answer the account within 7 s"),
    (requests.exceptions.ReadTimeout, "did not answer the account within 7 s"),
    (requests.exceptions.ConnectionError, "could not be reached for the account: ConnectionError"),
])
def test_timeouts_and_connection_errors_are_retried_then_unavailable(hook, requests_mock, no_sleep, exc, match):
    requests_mock.get(f"{PAPER}/account", exc=exc)
    raises(VendorUnavailableError, hook.get_account, match=match)
    assert requests_mock.call_count == 3 and no_sleep == [1.0, 2.0]


def test_timeout_then_success(hook, requests_mock, no_sleep):
    requests_mock.get(f"{PAPER}/account", [{"exc": requests.exceptions.ReadTimeout}, {"json": load("account.json")}])
    assert hook.get_account()["id"] == "e6fe16f3-64a4-4921-8928-cadf02f92f98"
    assert no_sleep == [1.0]


def test_test_connection_true(hook, requests_mock):
    requests_mock.get(f"{PAPER}/account", json=load("account.json"))
    assert hook.test_connection() == (True, "Alpaca paper account ACTIVE (USD)")


def test_test_connection_live_says_live(make_hook, requests_mock):
    requests_mock.get(f"{LIVE}/account", json=load("account.json"))
    ok, message = make_hook(paper="false").test_connection()
    assert ok and "LIVE" in message


def test_test_connection_false_on_refused_key(hook, requests_mock):
    requests_mock.get(f"{PAPER}/account", status_code=401, json={"code": 40110000, "message": "request is not authorized"})
    ok, message = hook.test_connection()
    assert ok is False and "AuthenticationError" in message and "HTTP 401" in message
    assert ALPACA_SECRET not in message and ALPACA_KEY_ID not in message


def test_test_connection_false_without_keys(make_hook, requests_mock):
    ok, message = make_hook(password=None).test_connection()
    assert ok is False and "secret key" in message and ALPACA_KEY_ID not in message
    assert requests_mock.request_history == []


# --- bars ---------------------------------------------------------------------------------------------


def test_daily_stock_bars_follow_every_page(hook, requests_mock):
    page1, page2 = load("stock_bars_daily_page1.json"), load("stock_bars_daily_page2.json")
    requests_mock.get(STOCK_BARS, [{"json": page1}, {"json": page2}])
    frame = hook.get_bars(["AAPL", "MSFT"], date(2024, 6, 3), date(2024, 6, 7))

    first, second = requests_mock.request_history
    assert first.qs["symbols"] == ["aapl,msft"] and first.qs["timeframe"] == ["1day"] and first.qs["feed"] == ["iex"]
    assert first.qs["start"] == ["2024-06-03t00:00:00+00:00"] and first.qs["end"] == ["2024-06-08t00:00:00+00:00"]
    assert first.qs["limit"] == ["10000"] and "page_token" not in first.qs
    assert second.qs["page_token"] == [page1["next_page_token"].lower()]

    assert list(frame.columns) == list(BAR_COLUMNS) and len(frame) == 10
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    days = list(pd.date_range("2024-06-03", "2024-06-07", freq="D", tz="UTC"))
    assert list(frame.loc[frame.symbol == "AAPL", "ts"]) == days  # 04:00Z (midnight New York) -> session date
    assert list(frame.loc[frame.symbol == "MSFT", "ts"]) == days  # MSFT spans both pages
    assert set(frame["timeframe"]) == {"1Day"} and set(frame["source"]) == {"alpaca_test"}
    msft = frame[frame.symbol == "MSFT"].iloc[-1]
    assert (msft.open, msft.high, msft.low, msft.close, msft.volume) == (426.2, 426.28, 423.0, 423.85, 282050.0)


def test_single_symbol_protocol_call(hook, requests_mock):
    page1 = load("stock_bars_daily_page1.json")
    page1["bars"].pop("MSFT")
    page1["next_page_token"] = None
    requests_mock.get(STOCK_BARS, json=page1)
    frame = hook.get_bars("AAPL", datetime(2024, 6, 3, 15, tzinfo=timezone.utc), datetime(2024, 6, 5, tzinfo=timezone.utc))
    assert list(frame["ts"].dt.day) == [3, 4, 5]  # only bars in [start, end]: June 6 and 7 dropped
    assert set(frame["symbol"]) == {"AAPL"}


def test_winter_daily_bars_stamped_0500z_keep_their_session_date(hook, requests_mock):
    requests_mock.get(STOCK_BARS, json=load("stock_bars_daily_winter.json"))
    frame = hook.get_bars("SPY", "2024-01-02", "2024-01-03")
    assert list(frame["ts"]) == [pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC")]


def test_crypto_daily_bars(hook, requests_mock):
    requests_mock.get(CRYPTO_BARS, json=load("crypto_bars_daily.json"))
    frame = hook.get_bars("BTC/USD", date(2024, 6, 3), date(2024, 6, 4))
    sent = requests_mock.last_request
    assert sent.path == "/v1beta3/crypto/us/bars" and sent.qs["symbols"] == ["btc/usd"] and "feed" not in sent.qs
    assert list(frame["ts"]) == [pd.Timestamp("2024-06-03", tz="UTC"), pd.Timestamp("2024-06-04", tz="UTC")]
    assert frame["volume"].iloc[0] == pytest.approx(1.047839214)  # fractional volume kept
    assert set(frame["symbol"]) == {"BTC/USD"}


def test_crypto_daily_bars_stamped_at_chicago_midnight_in_winter():
    """Alpaca stamps crypto days at midnight Chicago (05:00Z summer, 06:00Z winter); the date there is the day."""
    from airflow_provider_portfolio.market.bars import parse_timeframe

    hook = AlpacaHook("x")
    lo, hi = datetime(2022, 1, 1, tzinfo=timezone.utc), datetime(2022, 1, 3, tzinfo=timezone.utc)
    rows = [{"t": "2022-01-01T06:00:00Z", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 3},
            {"t": "2022-01-02T06:00:00Z", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 3}]
    frame = hook._bar_frame("BTC/USD", rows, parse_timeframe("1Day"), lo, hi, crypto=True)
    assert list(frame["ts"]) == [pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2022-01-02", tz="UTC")]


def test_stocks_and_crypto_in_one_call(hook, requests_mock):
    requests_mock.get(STOCK_BARS, json=load("stock_bars_daily_winter.json"))
    requests_mock.get(CRYPTO_BARS, json={"bars": {"BTC/USD": [
        {"c": 44179.1, "h": 45899.9, "l": 44176.9, "n": 3121, "o": 45000.0, "t": "2024-01-02T06:00:00Z",
         "v": 2.5121, "vw": 45187.3}]}, "next_page_token": None})
    frame = hook.get_bars(["SPY", "BTC/USD"], "2024-01-02", "2024-01-03")
    assert sorted(set(frame["symbol"])) == ["BTC/USD", "SPY"] and len(frame) == 3
    assert requests_mock.call_count == 2


def test_intraday_bars_keep_their_start_instant(hook, requests_mock):
    requests_mock.get(STOCK_BARS, json=load("stock_bars_5min.json"))
    frame = hook.get_bars("AAPL", "2024-06-03", "2024-06-03", timeframe="5Min")
    assert requests_mock.last_request.qs["timeframe"] == ["5min"]
    assert list(frame["ts"]) == [pd.Timestamp("2024-06-03 13:30", tz="UTC"), pd.Timestamp("2024-06-03 13:35", tz="UTC"),
                                 pd.Timestamp("2024-06-03 13:40", tz="UTC")]
    assert set(frame["timeframe"]) == {"5Min"}


def test_hour_timeframe_is_mapped(hook, requests_mock):
    requests_mock.get(STOCK_BARS, json=load("stock_bars_empty.json"))
    hook.get_bars("AAPL", "2024-06-03", "2024-06-03", timeframe="4Hour")
    assert requests_mock.last_request.qs["timeframe"] == ["4hour"]


@pytest.mark.parametrize("body", [{"bars": {}, "next_page_token": None}, {"bars": None, "next_page_token": None},
                                  {"bars": {"AAPL": []}, "next_page_token": None}])
def test_no_bars_is_an_empty_frame(hook, requests_mock, body):
    requests_mock.get(STOCK_BARS, json=body)
    frame = hook.get_bars(["AAPL"], "2024-06-08", "2024-06-09")
    assert frame.empty and list(frame.columns) == list(BAR_COLUMNS)


def test_sip_feed_and_plan_refusal(make_hook, requests_mock, no_sleep):
    hook = make_hook(feed="SIP")
    requests_mock.get(STOCK_BARS, status_code=403,
                      json={"message": "subscription does not permit querying recent SIP data"})
    err = raises(PlanNotSupportedError, lambda: hook.get_bars("AAPL", "2024-06-03", "2024-06-07"),
                 match="subscription does not permit.*feed 'iex'")
    assert requests_mock.last_request.qs["feed"] == ["sip"] and err.status_code == 403
    assert requests_mock.call_count == 1 and no_sleep == []


def test_invalid_symbol_answer_is_unknown_symbol(hook, requests_mock):
    requests_mock.get(CRYPTO_BARS, status_code=400, json={"message": "invalid symbol: FOO/BAR is not supported"})
    raises(UnknownSymbolError, lambda: hook.get_bars("FOO/BAR", "2024-06-03", "2024-06-07"), match="invalid symbol")


def test_a_failing_page_is_retried_alone(hook, requests_mock, no_sleep):
    page1, page2 = load("stock_bars_daily_page1.json"), load("stock_bars_daily_page2.json")
    requests_mock.get(STOCK_BARS, [{"json": page1}, {"status_code": 503, "text": "busy"}, {"json": page2}])
    frame = hook.get_bars(["AAPL", "MSFT"], "2024-06-03", "2024-06-07")
    assert len(frame) == 10 and requests_mock.call_count == 3 and no_sleep == [1.0]
    assert ["page_token" in r.qs for r in requests_mock.request_history] == [False, True, True]


def test_a_repeated_page_token_stops_the_loop(hook, requests_mock):
    requests_mock.get(STOCK_BARS, json=load("stock_bars_daily_page1.json"))
    raises(VendorError, lambda: hook.get_bars(["AAPL", "MSFT"], "2024-06-03", "2024-06-07"), match="page token")
    assert requests_mock.call_count == 2


@pytest.mark.parametrize(("body", "match"), [
    ({"next_page_token": None}, "without 'bars'"),
    ({"bars": ["AAPL"], "next_page_token": None}, "malformed bars"),
    ({"bars": {"AAPL": [{"t": "2024-06-03T04:00:00Z", "o": 1, "h": 2, "l": 0.5, "v": 10}]}}, "lacking"),
    ({"bars": {"AAPL": [{"t": "2024-06-03T04:00:00Z", "o": "x", "h": 2, "l": 0.5, "c": 1, "v": 10}]}}, "non-numeric"),
    ({"bars": {"AAPL": [{"t": "yesterday", "o": 1, "h": 2, "l": 0.5, "c": 1, "v": 10}]}}, "unreadable timestamps"),
])
def test_malformed_bars_are_vendor_errors(hook, requests_mock, body, match):
    requests_mock.get(STOCK_BARS, json=body)
    raises(VendorError, lambda: hook.get_bars("AAPL", "2024-06-03", "2024-06-07"), match=match)


def test_bad_timeframe_and_range_are_refused_before_any_request(hook, requests_mock):
    raises(InvalidInputError, lambda: hook.get_bars("AAPL", "2024-06-03", "2024-06-07", timeframe="1Week"),
           match="unknown timeframe")
    raises(InvalidInputError, lambda: hook.get_bars("AAPL", "2024-06-07", "2024-06-03"), match="after end")
    raises(InvalidInputError, lambda: hook.get_bars("AAPL", "June", "2024-06-03"), match="start must be a date")
    assert requests_mock.request_history == []


def test_bars_errors_after_retries(hook, requests_mock, no_sleep):
    requests_mock.get(STOCK_BARS, exc=requests.exceptions.ReadTimeout)
    raises(VendorUnavailableError, lambda: hook.get_bars("AAPL", "2024-06-03", "2024-06-07"), match="within 7 s")
    assert requests_mock.call_count == 3


# --- news ---------------------------------------------------------------------------------------------


def test_news_follows_pages_and_scores(hook, requests_mock):
    page1, page2 = load("news_page1.json"), load("news_page2.json")
    requests_mock.get(NEWS, [{"json": page1}, {"json": page2}])
    items = hook.get_news(["AAPL", "MSFT"], date(2024, 6, 3), date(2024, 6, 4))
    first, second = requests_mock.request_history
    assert first.qs["symbols"] == ["aapl,msft"] and first.qs["limit"] == ["50"] and "page_token" not in first.qs
    assert second.qs["page_token"] == [page1["next_page_token"].lower()]
    assert all(isinstance(i, NewsItem) and i.source == "alpaca" for i in items)
    assert [(i.symbol, i.published.isoformat()) for i in items] == [
        ("AAPL", "2024-06-03T11:02:45+00:00"),
        ("AAPL", "2024-06-03T19:45:02+00:00"),
        ("MSFT", "2024-06-03T19:45:02+00:00"),  # NVDA, also named, was not asked for
        ("AAPL", "2024-06-04T14:12:31+00:00"),
    ]
    assert items[0].score < 0 < items[-1].score  # probe, fall ... rally, upgrade
    assert items[-1].url.startswith("https://www.benzinga.com/")
    json.dumps([i.to_dict() for i in items])


def test_news_limit_stops_paging(hook, requests_mock):
    requests_mock.get(NEWS, json=load("news_page1.json"))
    items = hook.get_news("AAPL", "2024-06-03", "2024-06-04", limit=2)
    assert requests_mock.call_count == 1 and requests_mock.last_request.qs["limit"] == ["2"]
    assert len(items) == 2


def test_no_news(hook, requests_mock):
    requests_mock.get(NEWS, json={"news": [], "next_page_token": None})
    assert hook.get_news("AAPL", "2024-06-03", "2024-06-04") == []


def test_news_errors(hook, requests_mock, no_sleep):
    requests_mock.get(NEWS, [{"status_code": 429, "json": {"message": "too many requests."}},
                             {"json": {"news": [{"id": 1, "headline": "Apple"}], "next_page_token": None}}])
    raises(VendorError, lambda: hook.get_news("AAPL", "2024-06-03", "2024-06-04"), match="created_at")
    assert no_sleep == [1.0]
    raises(InvalidInputError, lambda: hook.get_news("AAPL", "2024-06-03", "2024-06-04", limit=0), match="limit")


# --- orders -------------------------------------------------------------------------------------------


def submit(hook: AlpacaHook, **kwargs):
    args = {"symbol": "AAPL", "side": "buy", "qty": 10, "client_order_id": CID, **kwargs}
    return hook.submit_order(**args)


def test_submit_order_looks_up_then_posts_once(hook, requests_mock, no_sleep):
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, json=load("order_new.json"))
    order = submit(hook)
    assert order == load("order_new.json")
    assert len(posts(requests_mock)) == 1
    lookup, post = requests_mock.request_history
    assert lookup.qs["client_order_id"] == [CID.lower()] and lookup.path == "/v2/orders:by_client_order_id"
    assert post.json() == {"symbol": "AAPL", "qty": 10.0, "side": "buy", "type": "market", "time_in_force": "day",
                           "client_order_id": CID}
    assert post.timeout == 7 and no_sleep == []


def test_submit_order_without_lookup_first(hook, requests_mock):
    requests_mock.post(ORDERS, json=load("order_new.json"))
    assert submit(hook, lookup_first=False)["status"] == "accepted"
    assert [r.method for r in requests_mock.request_history] == ["POST"]


def test_limit_order_for_a_crypto_pair(hook, requests_mock):
    cid = "rebal-20240603-BTCUSD-sell"
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, json=load("order_limit_btc.json"))
    order = hook.submit_order(symbol="BTC/USD", side="SELL", qty="0.005", type="limit", time_in_force="gtc",
                              limit_price=70000, client_order_id=cid)
    assert order["limit_price"] == "70000"
    assert posts(requests_mock)[0].json() == {"symbol": "BTC/USD", "qty": 0.005, "side": "sell", "type": "limit",
                                              "time_in_force": "gtc", "client_order_id": cid, "limit_price": 70000.0}


def test_notional_order(hook, requests_mock):
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, json={**load("order_new.json"), "qty": None, "notional": "500"})
    submit(hook, qty=None, notional=500)
    assert posts(requests_mock)[0].json()["notional"] == 500.0 and "qty" not in posts(requests_mock)[0].json()


def test_idempotent_after_504_once_accepted(hook, requests_mock, no_sleep):
    """(a) the gateway answers 504 though Alpaca accepted the order: the look-up finds it; no second POST."""
    requests_mock.get(BY_CID, [NOT_FOUND, {"json": load("order_new.json")}])
    requests_mock.post(ORDERS, status_code=504, text=HTML_504, headers={"Content-Type": "text/html"})
    assert submit(hook) == load("order_new.json")
    assert len(posts(requests_mock)) == 1
    assert [r.method for r in requests_mock.request_history] == ["GET", "POST", "GET"]
    assert no_sleep == []  # neither the SDK (3 s) nor our read retried anything


def test_idempotent_after_422_duplicate_client_order_id(hook, requests_mock):
    """(b) Alpaca refuses the id as taken: the order under it is returned."""
    requests_mock.get(BY_CID, [NOT_FOUND, {"json": load("order_filled.json")}])
    requests_mock.post(ORDERS, status_code=422, json={"code": 40010001, "message": "client_order_id must be unique"})
    assert submit(hook)["status"] == "filled"
    assert len(posts(requests_mock)) == 1


def test_idempotent_after_a_timeout_on_the_post(hook, requests_mock, caplog):
    """(c) the POST times out: the look-up finds the order; no second POST."""
    requests_mock.get(BY_CID, [NOT_FOUND, {"json": load("order_new.json")}])
    requests_mock.post(ORDERS, exc=requests.exceptions.ReadTimeout)
    with caplog.at_level("WARNING"):
        assert submit(hook)["id"] == "61e69015-8549-4bfd-b9c3-01e75843f47d"
    assert len(posts(requests_mock)) == 1
    assert "already existed" in caplog.text
    assert ALPACA_SECRET not in caplog.text


def test_idempotent_across_an_airflow_task_retry(make_hook, requests_mock):
    """(d) the task is retried after its first try placed the order: the new hook finds it and sends nothing."""
    requests_mock.get(BY_CID, [NOT_FOUND, {"json": load("order_new.json")}])
    requests_mock.post(ORDERS, json=load("order_new.json"))
    first = submit(make_hook())
    retry = submit(make_hook())  # a new hook instance, as in a new task try
    assert first == retry == load("order_new.json")
    assert len(posts(requests_mock)) == 1
    assert [r.method for r in requests_mock.request_history] == ["GET", "POST", "GET"]


def test_not_placed_after_a_server_error_is_safe_to_retry(hook, requests_mock):
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, status_code=503, json={"code": 50310000, "message": "service unavailable"})
    err = raises(VendorUnavailableError, lambda: submit(hook), match="NOT placed.*safe to retry with the same")
    assert err.status_code == 503
    assert len(posts(requests_mock)) == 1


def test_not_placed_after_rate_limit(hook, requests_mock, no_sleep):
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, status_code=429, json={"code": 42910000, "message": "rate limit exceeded"},
                       headers={"Retry-After": "1"})
    raises(VendorUnavailableError, lambda: submit(hook), match="NOT placed.*HTTP 429")
    assert len(posts(requests_mock)) == 1 and no_sleep == []


def test_not_placed_after_a_connection_error(hook, requests_mock):
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, exc=requests.exceptions.ConnectionError("Connection reset by peer"))
    raises(VendorUnavailableError, lambda: submit(hook), match="NOT placed")
    assert len(posts(requests_mock)) == 1


def test_unknown_state_when_the_lookup_fails_too(hook, requests_mock, no_sleep):
    requests_mock.get(BY_CID, [NOT_FOUND, {"status_code": 503, "text": "busy"}])
    requests_mock.post(ORDERS, exc=requests.exceptions.ReadTimeout)
    raises(VendorUnavailableError, lambda: submit(hook), match="UNKNOWN.*SAME client_order_id")
    assert len(posts(requests_mock)) == 1
    assert no_sleep == [1.0, 2.0]  # the look-up is a bounded read; the POST was never repeated


def test_non_json_success_is_looked_up(hook, requests_mock):
    requests_mock.get(BY_CID, [NOT_FOUND, {"json": load("order_new.json")}])
    requests_mock.post(ORDERS, text="<html>OK</html>", headers={"Content-Type": "text/html"})
    assert submit(hook)["status"] == "accepted"
    assert len(posts(requests_mock)) == 1


def test_duplicate_id_without_an_order_is_an_error(hook, requests_mock):
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, status_code=422, json={"code": 40010001, "message": "client_order_id must be unique"})
    err = raises(VendorError, lambda: submit(hook), match="already used, yet has no order")
    assert not isinstance(err, VendorUnavailableError)


def test_insufficient_buying_power_raises_at_once(hook, requests_mock, no_sleep):
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, status_code=403, json={"buying_power": "0", "code": 40310000, "cost_basis": "1940.3",
                                                      "message": "insufficient buying power"})
    err = raises(VendorError, lambda: submit(hook), match="HTTP 403: insufficient buying power")
    assert type(err) is VendorError and err.status_code == 403
    assert len(posts(requests_mock)) == 1 and requests_mock.call_count == 2 and no_sleep == []


def test_other_422_raises_at_once(hook, requests_mock):
    requests_mock.get(BY_CID, **NOT_FOUND)
    requests_mock.post(ORDERS, status_code=422, json={"code": 40010001, "message": "fractional orders must be DAY orders"})
    err = raises(VendorError, lambda: submit(hook, qty=0.5, time_in_force="gtc"), match="fractional orders")
    assert type(err) is VendorError and err.status_code == 422
    assert requests_mock.call_count == 2


def test_refused_key_on_submit(hook, requests_mock):
    requests_mock.post(ORDERS, status_code=401, json={"code": 40110000, "message": "request is not authorized"})
    raises(AuthenticationError, lambda: submit(hook, lookup_first=False))
    assert requests_mock.call_count == 1


def test_existing_order_for_another_symbol_is_refused(hook, requests_mock):
    requests_mock.get(BY_CID, json={**load("order_new.json"), "symbol": "MSFT"})
    requests_mock.post(ORDERS, json=load("order_new.json"))
    raises(InvalidInputError, lambda: submit(hook), match="already names another order")
    assert posts(requests_mock) == []


def test_live_connection_without_allow_live_sends_nothing(make_hook, requests_mock):
    hook = make_hook(paper=False)
    raises(InvalidInputError, lambda: submit(hook), match="'alpaca_test'.*live trading needs allow_live=True")
    assert requests_mock.request_history == []


def test_live_host_behind_a_paper_flag_is_still_live(make_hook, requests_mock):
    hook = make_hook(trading_base_url="https://api.alpaca.markets")
    raises(InvalidInputError, lambda: submit(hook), match="allow_live=True")
    assert requests_mock.request_history == []


def test_live_connection_with_allow_live_posts_to_the_live_host(make_hook, requests_mock):
    hook = make_hook(paper=False, allow_live=True)
    requests_mock.get(f"{LIVE}/orders:by_client_order_id", **NOT_FOUND)
    requests_mock.post(f"{LIVE}/orders", json=load("order_new.json"))
    submit(hook)
    assert requests_mock.last_request.hostname == "api.alpaca.markets"
    assert len([r for r in requests_mock.request_history if r.method == "POST"]) == 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"client_order_id": None}, "client_order_id is required"),
    ({"client_order_id": ""}, "client_order_id is required"),
    ({"client_order_id": "x" * 49}, "client_order_id is required"),
    ({"client_order_id": "bad id!"}, "client_order_id is required"),
    ({"qty": 10, "notional": 500}, "exactly one of qty"),
    ({"qty": None}, "exactly one of qty"),
    ({"qty": 0}, "qty must be a positive number"),
    ({"qty": -1}, "qty must be a positive number"),
    ({"qty": "ten"}, "qty must be a positive number"),
    ({"qty": float("nan")}, "qty must be a positive number"),
    ({"qty": True}, "qty must be a positive number"),
    ({"qty": None, "notional": -5}, "notional must be a positive number"),
    ({"side": "hold"}, "side must be 'buy' or 'sell'"),
    ({"type": "limit"}, "needs limit_price"),
    ({"type": "stop_limit", "limit_price": 190}, "needs stop_price"),
    ({"limit_price": 190}, "limit_price does not apply to a market order"),
    ({"type": "trailing_stop"}, "type must be one of"),
    ({"time_in_force": "week"}, "time_in_force must be one of"),
    ({"symbol": "not a ticker"}, "not a ticker"),
    ({"symbol": None}, "symbol must be one ticker"),
])
def test_order_arguments_are_checked_before_any_request(hook, requests_mock, kwargs, match):
    raises(InvalidInputError, lambda: submit(hook, **kwargs), match=match)
    assert requests_mock.request_history == []


def test_client_order_id_is_required_keyword():
    with pytest.raises(TypeError):
        AlpacaHook("x").submit_order(symbol="AAPL", side="buy", qty=1)  # type: ignore[call-arg]


def test_get_order_by_client_order_id(hook, requests_mock, no_sleep):
    requests_mock.get(BY_CID, [{"json": load("order_filled.json")}, NOT_FOUND,
                               {"status_code": 500, "text": "internal error"}])
    assert hook.get_order_by_client_order_id(CID)["filled_avg_price"] == "192.95"
    assert hook.get_order_by_client_order_id(CID) is None
    raises(VendorUnavailableError, lambda: hook.get_order_by_client_order_id(CID), match="HTTP 500")
    assert no_sleep == [1.0, 2.0]
    raises(InvalidInputError, lambda: hook.get_order_by_client_order_id("no spaces allowed"))


def test_get_order_by_client_order_id_refuses_another_order(hook, requests_mock):
    requests_mock.get(BY_CID, json={**load("order_new.json"), "client_order_id": "someone-else"})
    raises(VendorError, lambda: hook.get_order_by_client_order_id(CID), match="someone-else")


# --- the domain's BrokerAPI ---------------------------------------------------------------------------


def test_the_hook_is_the_domains_broker_api(hook):
    from airflow_provider_portfolio.trading.brokers.api import BrokerAPI

    assert isinstance(hook, BrokerAPI)


def test_post_order_is_one_post_and_nothing_else(hook, requests_mock, no_sleep):
    requests_mock.post(ORDERS, status_code=504, text=HTML_504, headers={"Content-Type": "text/html"})
    with pytest.raises(VendorUnavailableError, match="HTTP 504"):
        hook.post_order({"symbol": "AAPL", "side": "buy", "qty": 10, "type": "market", "time_in_force": "day",
                         "client_order_id": CID})
    assert [r.method for r in requests_mock.request_history] == ["POST"] and no_sleep == []  # no look-up, no retry


def test_post_order_checks_everything_before_sending(hook, make_hook, requests_mock):
    order = {"symbol": "AAPL", "side": "buy", "qty": 10, "type": "market", "time_in_force": "day",
             "client_order_id": CID}
    raises(InvalidInputError, lambda: hook.post_order({**order, "extended_hours": True}), match="unknown order field")
    raises(InvalidInputError, lambda: hook.post_order({**order, "qty": -1}), match="qty must be a positive")
    raises(InvalidInputError, lambda: make_hook("alpaca_live", paper=False).post_order(order), match="allow_live")
    assert requests_mock.request_history == []
