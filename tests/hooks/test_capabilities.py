"""The vendor hooks as the domain's source protocols: batched bars, partial failures, quotes and scored news.

requests-mock only, bodies shaped like the vendors' (fixtures in ``tests/hooks/fixtures``).
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import (
    AuthenticationError,
    PartialBarsError,
    RateLimitError,
    UnknownSymbolError,
)
from airflow_provider_portfolio.hooks import alphavantage as av_module
from airflow_provider_portfolio.hooks.alpaca import MAX_SYMBOLS_PER_REQUEST, AlpacaHook
from airflow_provider_portfolio.hooks.alphavantage import AlphaVantageHook
from airflow_provider_portfolio.hooks.finnhub import FinnhubHook
from airflow_provider_portfolio.market.sources import BarSource, FailoverChain, NewsSource, Quote, QuoteSource
from airflow_provider_portfolio.trading.brokers.api import BrokerAPI
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET, ALPHAVANTAGE_KEY, FINNHUB_KEY

FIXTURES = Path(__file__).parent / "fixtures"
STOCK_BARS = "https://data.alpaca.markets/v2/stocks/bars"
STOCK_QUOTES = "https://data.alpaca.markets/v2/stocks/quotes/latest"
CRYPTO_QUOTES = "https://data.alpaca.markets/v1beta3/crypto/us/latest/quotes"
AV = "https://www.alphavantage.co/query"
FH = "https://finnhub.io/api/v1"
JSON = {"Content-Type": "application/json; charset=utf-8"}


def load(path: str) -> object:
    return json.loads((FIXTURES / path).read_text().replace("__APIKEY__", ALPHAVANTAGE_KEY))


def query(request) -> dict[str, str]:
    """A request's exact query parameters (requests-mock's ``qs`` lower-cases values)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


@pytest.fixture
def alpaca(add_connection, no_sleep) -> AlpacaHook:
    add_connection("alpaca_data", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET)
    hook = AlpacaHook("alpaca_data")
    hook.sleep = no_sleep.append
    return hook


@pytest.fixture
def av(add_connection, no_sleep, monkeypatch) -> AlphaVantageHook:
    monkeypatch.setattr(av_module, "_today", lambda: date(2024, 6, 8))
    add_connection("av", "alphavantage", password=ALPHAVANTAGE_KEY)
    hook = AlphaVantageHook("av")
    hook.sleep = no_sleep.append
    return hook


@pytest.fixture
def fh(add_connection, no_sleep) -> FinnhubHook:
    add_connection("fh", "finnhub", password=FINNHUB_KEY)
    hook = FinnhubHook("fh")
    hook.sleep = no_sleep.append
    return hook


def test_each_hook_declares_what_it_serves():
    alpaca, av, fh = AlpacaHook("a"), AlphaVantageHook("b"), FinnhubHook("c")
    assert [isinstance(h, BarSource) for h in (alpaca, av, fh)] == [True, True, True]
    assert [isinstance(h, NewsSource) for h in (alpaca, av, fh)] == [True, True, True]
    assert [isinstance(h, QuoteSource) for h in (alpaca, av, fh)] == [True, False, True]
    assert not isinstance(av, BrokerAPI) and not isinstance(fh, BrokerAPI)


# --- Alpaca: many symbols per request -----------------------------------------------------------------


def tickers(n: int) -> list[str]:
    """``n`` distinct valid tickers (AAA, AAB, ...)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return ["".join(t) for t in itertools.islice(itertools.product(letters, repeat=3), n)]


def test_alpaca_bars_of_500_symbols_come_in_few_requests(alpaca, requests_mock):
    """500 symbols are ceil(500 / MAX_SYMBOLS_PER_REQUEST) requests (plus pages), never 500."""
    symbols = tickers(500)
    paged = symbols[150]  # this symbol's bars span two pages of its request

    def answer(request, context):
        asked = query(request)["symbols"].split(",")
        bar = {"c": 10.5, "h": 11.0, "l": 9.5, "n": 12, "o": 10.0, "t": "2024-06-03T04:00:00Z", "v": 1000, "vw": 10.4}
        if paged in asked and "page_token" not in query(request):
            first = [s for s in asked if s <= paged]
            return {"bars": {s: [bar] for s in first}, "next_page_token": "cGFnZTI="}
        if paged in asked:
            rest = [s for s in asked if s > paged]
            second = {**bar, "t": "2024-06-04T04:00:00Z"}
            return {"bars": {paged: [second], **{s: [bar] for s in rest}}, "next_page_token": None}
        return {"bars": {s: [bar] for s in asked}, "next_page_token": None}

    requests_mock.get(STOCK_BARS, json=answer)
    frame = alpaca.get_bars(symbols, date(2024, 6, 3), date(2024, 6, 4))

    batches = math.ceil(500 / MAX_SYMBOLS_PER_REQUEST)
    history = requests_mock.request_history
    assert len(history) == batches + 1  # one more: the second page of the batch holding `paged`
    first_pages = [query(r)["symbols"].split(",") for r in history if "page_token" not in query(r)]
    assert len(first_pages) == batches and all(len(b) <= MAX_SYMBOLS_PER_REQUEST for b in first_pages)
    assert sorted(itertools.chain.from_iterable(first_pages)) == sorted(symbols)  # each asked once
    assert all(len(r.url) < 8000 for r in history)
    assert sorted(frame["symbol"].unique()) == sorted(symbols)  # every symbol's bars arrived
    assert len(frame) == 501 and set(frame["source"]) == {"alpaca_data"}
    assert list(frame.loc[frame.symbol == paged, "ts"]) == [pd.Timestamp("2024-06-03", tz="UTC"),
                                                            pd.Timestamp("2024-06-04", tz="UTC")]


def test_alpaca_a_failing_batch_fails_its_symbols_only(alpaca, requests_mock, no_sleep):
    symbols = tickers(MAX_SYMBOLS_PER_REQUEST + 3)
    bar = {"c": 10.5, "h": 11.0, "l": 9.5, "n": 12, "o": 10.0, "t": "2024-06-03T04:00:00Z", "v": 1000, "vw": 10.4}

    def answer(request, context):
        asked = query(request)["symbols"].split(",")
        if len(asked) < MAX_SYMBOLS_PER_REQUEST:  # the second batch: a malformed answer
            return {"bars": {s: [{"t": "2024-06-03T04:00:00Z"}] for s in asked}, "next_page_token": None}
        return {"bars": {s: [bar] for s in asked}, "next_page_token": None}

    requests_mock.get(STOCK_BARS, json=answer)
    with pytest.raises(PartialBarsError) as info:
        alpaca.get_bars(symbols, date(2024, 6, 3), date(2024, 6, 3))
    assert sorted(info.value.failures) == symbols[MAX_SYMBOLS_PER_REQUEST:]
    assert all(why.startswith("VendorError:") and "lacking" in why for why in info.value.failures.values())
    assert sorted(info.value.frame["symbol"]) == symbols[:MAX_SYMBOLS_PER_REQUEST]
    assert requests_mock.call_count == 2


def test_alpaca_latest_quotes_stocks_and_crypto(alpaca, requests_mock):
    requests_mock.get(STOCK_QUOTES, json=load("alpaca/stock_quotes_latest.json"))
    requests_mock.get(CRYPTO_QUOTES, json=load("alpaca/crypto_quotes_latest.json"))
    quotes = alpaca.get_quotes(["AAPL", "MSFT", "BTC/USD", "TSLA"])

    stock, crypto = requests_mock.request_history
    assert query(stock) == {"symbols": "AAPL,MSFT,TSLA", "feed": "iex"}
    assert query(crypto) == {"symbols": "BTC/USD"}
    # MSFT's quote has no ask (0): left out, like TSLA, which Alpaca did not quote
    assert sorted(quotes) == ["AAPL", "BTC/USD"]
    aapl = quotes["AAPL"]
    assert isinstance(aapl, Quote) and aapl.price == pytest.approx(194.50) and (aapl.bid, aapl.ask) == (194.48, 194.52)
    assert aapl.ts == datetime(2024, 6, 4, 15, 0, 0, 123456, tzinfo=timezone.utc) and aapl.source == "alpaca_data"
    assert quotes["BTC/USD"].price == pytest.approx((70790.2 + 70812.4) / 2)


def test_alpaca_quotes_ask_many_symbols_per_request(alpaca, requests_mock):
    symbols = tickers(MAX_SYMBOLS_PER_REQUEST + 1)
    quote = {"ap": 10.2, "as": 1, "ax": "V", "bp": 10.0, "bs": 1, "bx": "V", "c": ["R"], "t": "2024-06-04T15:00:00Z",
             "z": "C"}
    requests_mock.get(STOCK_QUOTES, json=lambda r, c: {"quotes": {s: quote for s in query(r)["symbols"].split(",")}})
    assert sorted(alpaca.get_quotes(symbols)) == symbols
    assert requests_mock.call_count == 2


def test_alpaca_quotes_fail_only_when_nothing_was_quoted(alpaca, requests_mock, no_sleep):
    requests_mock.get(STOCK_QUOTES, status_code=401, json={"message": "unauthorized."})
    requests_mock.get(CRYPTO_QUOTES, json=load("alpaca/crypto_quotes_latest.json"))
    assert sorted(alpaca.get_quotes(["BTC/USD"])) == ["BTC/USD"]
    with pytest.raises(AuthenticationError):
        alpaca.get_quotes(["AAPL"])
    # a refused key stops the loop: the crypto batch is not asked either, and the stocks' error is raised
    before = requests_mock.call_count
    with pytest.raises(AuthenticationError):
        alpaca.get_quotes(["AAPL", "BTC/USD"])
    assert requests_mock.call_count == before + 1


# --- Alpha Vantage ------------------------------------------------------------------------------------


def test_alphavantage_news_carries_the_vendor_scores(av, requests_mock):
    requests_mock.get(AV, json=load("alphavantage/news_sentiment_aapl_msft.json"))
    items = av.get_news(["AAPL", "MSFT"], date(2024, 6, 1), date(2024, 6, 10))
    assert query(requests_mock.last_request)["function"] == "NEWS_SENTIMENT"
    assert query(requests_mock.last_request)["limit"] == str(av.news_limit)
    assert [(i.symbol, i.vendor_score, i.score) for i in items] == [
        ("AAPL", 1.0, 1.0),  # 1.25 from the vendor, clipped to [-1, 1]
        ("MSFT", -0.338811, -0.338811),
        ("AAPL", 0.412301, 0.412301),
        ("MSFT", -0.05122, -0.05122),
    ]


def test_alphavantage_news_without_a_vendor_score_is_lexicon_scored(av, requests_mock):
    body = load("alphavantage/news_sentiment_aapl_msft.json")
    del body["feed"][1]["ticker_sentiment"][0]["ticker_sentiment_score"]
    requests_mock.get(AV, json=body)
    [msft] = [i for i in av.get_news(["MSFT"], date(2024, 6, 7), date(2024, 6, 7)) if i.headline.startswith("Micro")]
    assert msft.vendor_score is None and msft.score < 0  # "probe": the lexicon's score


def av_daily(bodies: dict[str, object]):
    """A callback answering TIME_SERIES_DAILY by symbol."""
    return lambda request, context: bodies[query(request)["symbol"]]


def test_alphavantage_list_bars_with_one_symbol_failing(av, requests_mock):
    daily = load("alphavantage/time_series_daily_ibm.json")
    requests_mock.get(AV, json=av_daily({"IBM": daily, "NOPE": load("alphavantage/error_invalid_api_call.json"),
                                         "MSFT": daily}))
    with pytest.raises(PartialBarsError) as info:
        av.get_bars(["IBM", "NOPE", "MSFT"], date(2024, 6, 3), date(2024, 6, 6))
    assert list(info.value.failures) == ["NOPE"] and info.value.failures["NOPE"].startswith("UnknownSymbolError:")
    frame = info.value.frame
    assert sorted(frame["symbol"].unique()) == ["IBM", "MSFT"] and len(frame) == 8
    assert [query(r)["symbol"] for r in requests_mock.request_history] == ["IBM", "NOPE", "MSFT"]
    assert ALPHAVANTAGE_KEY not in str(info.value)


def test_alphavantage_rate_limit_stops_the_loop(av, requests_mock, no_sleep):
    daily = load("alphavantage/time_series_daily_ibm.json")
    quota = load("alphavantage/information_daily_quota.json")
    requests_mock.get(AV, json=av_daily({"IBM": daily, "AAPL": quota, "MSFT": daily, "TSLA": daily}))
    with pytest.raises(PartialBarsError) as info:
        av.get_bars(["IBM", "AAPL", "MSFT", "TSLA"], date(2024, 6, 3), date(2024, 6, 6))
    # no call after the quota answer: MSFT and TSLA fail with its reason
    assert [query(r)["symbol"] for r in requests_mock.request_history] == ["IBM", "AAPL"]
    failures = info.value.failures
    assert sorted(failures) == ["AAPL", "MSFT", "TSLA"] and len(set(failures.values())) == 1
    assert failures["MSFT"].startswith("RateLimitError:") and "quota" in failures["MSFT"]
    assert ALPHAVANTAGE_KEY not in str(failures)
    assert set(info.value.frame["symbol"]) == {"IBM"} and no_sleep == []


def test_alphavantage_burst_limit_is_retried_then_stops_the_loop(av, requests_mock, no_sleep):
    daily = load("alphavantage/time_series_daily_ibm.json")
    burst = load("alphavantage/note_burst_per_minute.json")
    requests_mock.get(AV, json=av_daily({"IBM": burst, "AAPL": daily}))
    with pytest.raises(RateLimitError):  # every symbol failed for that one error: the error itself
        av.get_bars(["IBM", "AAPL"], date(2024, 6, 3), date(2024, 6, 6))
    assert [query(r)["symbol"] for r in requests_mock.request_history] == ["IBM"] * av.read_attempts


def test_alphavantage_one_symbol_raises_the_error_itself(av, requests_mock):
    requests_mock.get(AV, json=load("alphavantage/error_invalid_api_call.json"))
    with pytest.raises(UnknownSymbolError):
        av.get_bars("NOPE", date(2024, 6, 3), date(2024, 6, 6))
    with pytest.raises(UnknownSymbolError):
        av.get_bars(["NOPE"], date(2024, 6, 3), date(2024, 6, 6))


def test_failover_serves_what_alphavantage_could_not_from_finnhub(av, fh, requests_mock):
    daily = load("alphavantage/time_series_daily_ibm.json")
    requests_mock.get(AV, json=av_daily({"IBM": daily, "AAPL": load("alphavantage/information_daily_quota.json")}))
    requests_mock.get(f"{FH}/stock/candle", json=load("finnhub/stock_candle_aapl_daily.json"), headers=JSON)
    batch = FailoverChain([av, fh]).fetch_many(["IBM", "AAPL", "MSFT"], date(2024, 6, 3), date(2024, 6, 7))
    assert batch.sources == {"IBM": "av", "AAPL": "fh", "MSFT": "fh"} and batch.failures == {}
    assert len([r for r in requests_mock.request_history if r.hostname == "www.alphavantage.co"]) == 2


# --- Finnhub ------------------------------------------------------------------------------------------


def test_finnhub_quotes(fh, requests_mock):
    bodies = {"AAPL": load("finnhub/quote_aapl.json"), "ZZZZ": load("finnhub/quote_unknown.json"),
              "BINANCE:BTCUSDT": {**load("finnhub/quote_aapl.json"), "c": 70801.5, "t": 1717513201}}
    requests_mock.get(f"{FH}/quote", json=lambda r, c: bodies[query(r)["symbol"]], headers=JSON)
    quotes = fh.get_quotes(["AAPL", "ZZZZ", "BTC/USD"])
    assert sorted(quotes) == ["AAPL", "BTC/USD"]  # ZZZZ: Finnhub's all-zero answer, left out
    aapl = quotes["AAPL"]
    assert (aapl.price, aapl.ts, aapl.source, aapl.bid, aapl.ask) == (
        196.89, datetime.fromtimestamp(1717790401, tz=timezone.utc), "fh", None, None)
    assert quotes["BTC/USD"].price == 70801.5
    assert all(r.headers["X-Finnhub-Token"] == FINNHUB_KEY and FINNHUB_KEY not in r.url
               for r in requests_mock.request_history)


def test_finnhub_quotes_stop_at_a_rate_limit(fh, requests_mock, no_sleep):
    requests_mock.get(f"{FH}/quote", [{"json": load("finnhub/quote_aapl.json"), "headers": JSON},
                                      {"status_code": 429, "json": load("finnhub/error_429_limit.json"),
                                       "headers": JSON}])
    quotes = fh.get_quotes(["AAPL", "MSFT", "TSLA"])
    assert sorted(quotes) == ["AAPL"]
    assert requests_mock.call_count == 1 + fh.read_attempts  # MSFT retried, TSLA never asked


def test_finnhub_news_through_get_news(fh, requests_mock):
    bodies = {"AAPL": load("finnhub/company_news_aapl.json"), "MSFT": []}
    requests_mock.get(f"{FH}/company-news", json=lambda r, c: bodies[query(r)["symbol"]], headers=JSON)
    items = fh.get_news(["AAPL", "BTC/USD", "MSFT"], date(2024, 6, 1), date(2024, 6, 8))
    # crypto pairs have no company news: not asked, not an error
    assert [query(r)["symbol"] for r in requests_mock.request_history] == ["AAPL", "MSFT"]
    assert query(requests_mock.request_history[0]) == {"symbol": "AAPL", "from": "2024-06-01", "to": "2024-06-08"}
    assert [i.symbol for i in items] == ["AAPL"] * 3 and items == sorted(items, key=lambda i: i.published)
    assert all(i.source == "finnhub" and i.vendor_score is None for i in items)
    assert items[-1].score > 0  # "rally", "upgrade": the lexicon's score
    assert fh.get_news(["BTC/USD"], date(2024, 6, 1), date(2024, 6, 8)) == []


def test_finnhub_news_fails_only_when_nothing_was_read(fh, requests_mock, no_sleep):
    requests_mock.get(f"{FH}/company-news", [{"json": load("finnhub/company_news_aapl.json"), "headers": JSON},
                                             {"status_code": 401, "json": load("finnhub/error_401_invalid_key.json"),
                                              "headers": JSON}])
    assert len(fh.get_news(["AAPL", "MSFT", "TSLA"], date(2024, 6, 1), date(2024, 6, 8))) == 3
    assert requests_mock.call_count == 2  # the refused key stopped the loop before TSLA
    with pytest.raises(AuthenticationError):
        fh.get_news(["MSFT"], date(2024, 6, 1), date(2024, 6, 8))


def test_finnhub_list_bars_with_one_symbol_failing_and_a_rate_limit(fh, requests_mock, no_sleep):
    candles = load("finnhub/stock_candle_aapl_daily.json")
    bodies = {"AAPL": {"json": candles}, "BAD": {"json": {"error": "Invalid symbol."}}, "MSFT": {"json": candles},
              "SPY": {"status_code": 429, "json": load("finnhub/error_429_limit.json")}, "QQQ": {"json": candles}}

    def answer(request, context):
        response = bodies[query(request)["symbol"]]
        context.status_code = response.get("status_code", 200)
        context.headers.update(JSON)
        return response["json"]

    requests_mock.get(f"{FH}/stock/candle", json=answer)
    with pytest.raises(PartialBarsError) as info:
        fh.get_bars(["AAPL", "BAD", "MSFT", "SPY", "QQQ"], date(2024, 6, 3), date(2024, 6, 7))
    failures = info.value.failures
    assert sorted(failures) == ["BAD", "QQQ", "SPY"]
    assert failures["BAD"].startswith("VendorError:") and "Invalid symbol" in failures["BAD"]
    assert failures["SPY"] == failures["QQQ"] and failures["SPY"].startswith("RateLimitError:")
    assert sorted(info.value.frame["symbol"].unique()) == ["AAPL", "MSFT"]
    asked = [query(r)["symbol"] for r in requests_mock.request_history]
    assert asked == ["AAPL", "BAD", "MSFT"] + ["SPY"] * fh.read_attempts  # QQQ never asked
