"""The market-data capability protocols and the failover over them: bars for many symbols per call (failing
over symbol by symbol), news and quotes."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import AllSourcesFailedError, PartialBarsError, SourceError
from airflow_provider_portfolio.market.bars import empty_bars
from airflow_provider_portfolio.market.news import NewsItem
from airflow_provider_portfolio.market.sources import (
    BarSource,
    FailoverChain,
    NewsSource,
    Quote,
    QuoteSource,
    fetch_news,
    fetch_quotes,
)
from airflow_provider_portfolio.market.synthetic import SyntheticMarket

START, END = date(2024, 3, 1), date(2024, 3, 8)
T0 = datetime(2024, 3, 8, 15, tzinfo=timezone.utc)


class Vendor:
    """A bar source serving the synthetic market's bars for ``serves`` only; records every call."""

    def __init__(self, name: str, serves: set[str] | None = None, *, fail: Exception | None = None,
                 partial: bool = True) -> None:
        self.name, self.serves, self.fail, self.partial = name, serves, fail, partial
        self.calls: list[list[str]] = []
        self.market = SyntheticMarket(seed=3)

    def get_bars(self, symbols, start, end, timeframe="1Day"):
        symbols = [symbols] if isinstance(symbols, str) else list(symbols)
        self.calls.append(symbols)
        if self.fail is not None:
            raise self.fail
        ok = [s for s in symbols if self.serves is None or s in self.serves]
        frame = self.market.get_bars(ok, start, end, timeframe) if ok else empty_bars()
        failed = {s: f"{self.name} does not know {s}" for s in symbols if s not in ok}
        if failed and self.partial:
            raise PartialBarsError(frame, failed)
        return frame


def test_the_protocols_are_what_the_sources_declare():
    market = SyntheticMarket()
    assert isinstance(market, BarSource) and isinstance(market, NewsSource)
    assert not isinstance(market, QuoteSource)  # invented prices have no quote
    assert not isinstance(object(), BarSource)


def test_many_symbols_go_to_each_source_in_one_call_and_fail_over_symbol_by_symbol():
    first = Vendor("first", {"AAPL", "MSFT"})
    second = Vendor("second", {"TSLA"})
    third = Vendor("third")
    batch = FailoverChain([first, second, third]).fetch_many(["AAPL", "MSFT", "TSLA", "NVDA"], START, END)
    assert first.calls == [["AAPL", "MSFT", "TSLA", "NVDA"]]
    assert second.calls == [["TSLA", "NVDA"]]  # only what the first could not serve
    assert third.calls == [["NVDA"]]
    assert batch.sources == {"AAPL": "first", "MSFT": "first", "TSLA": "second", "NVDA": "third"}
    assert batch.failures == {}
    served = batch.frame.groupby("symbol")["source"].first().to_dict()
    assert served == batch.sources
    one = SyntheticMarket(seed=3).get_bars("NVDA", START, END)
    got = batch.frame[batch.frame["symbol"] == "NVDA"].reset_index(drop=True)
    pd.testing.assert_series_equal(got["close"], one["close"], check_names=False)


def test_a_symbol_no_source_serves_names_every_source_and_never_fails_the_others():
    down = Vendor("down", fail=SourceError("HTTP 503 from the vendor"))
    partial = Vendor("partial", {"AAPL"})
    batch = FailoverChain([down, partial]).fetch_many(["AAPL", "ZZZZ"], START, END)
    assert set(batch.frame["symbol"]) == {"AAPL"}
    assert batch.failures == {"ZZZZ": {"down": "SourceError: HTTP 503 from the vendor",
                                       "partial": "partial does not know ZZZZ"}}
    reason = batch.reasons()["ZZZZ"]
    assert "down: SourceError: HTTP 503" in reason and "partial: partial does not know ZZZZ" in reason
    with pytest.raises(PartialBarsError) as err:  # the chain is itself a bar source
        FailoverChain([down, partial]).get_bars(["AAPL", "ZZZZ"], START, END)
    assert set(err.value.frame["symbol"]) == {"AAPL"} and list(err.value.failures) == ["ZZZZ"]
    with pytest.raises(AllSourcesFailedError, match="no source could serve ZZZZ"):
        FailoverChain([down, partial]).get_bars("ZZZZ", START, END)


def test_an_empty_answer_is_an_answer_unless_asked_otherwise():
    quiet = Vendor("quiet", set(), partial=False)  # answers nothing, raises nothing
    backup = Vendor("backup")
    assert FailoverChain([quiet, backup]).fetch_many(["AAPL"], START, END).sources == {"AAPL": "quiet"}
    strict = FailoverChain([quiet, backup], empty_is_failure=True).fetch_many(["AAPL"], START, END)
    assert strict.sources == {"AAPL": "backup"}


def test_a_malformed_answer_fails_the_call_and_the_next_source_serves():
    class Garbage:
        name = "garbage"

        def get_bars(self, symbols, start, end, timeframe="1Day"):
            return {"not": "a frame"}

    batch = FailoverChain([Garbage(), Vendor("good")]).fetch_many(["AAPL", "MSFT"], START, END)
    assert batch.sources == {"AAPL": "good", "MSFT": "good"}


def item(symbol: str, source: str, score: float = 0.5, vendor_score: float | None = None) -> NewsItem:
    return NewsItem(symbol=symbol, published=T0, headline=f"{symbol} news", score=score, source=source,
                    vendor_score=vendor_score)


class Feed:
    def __init__(self, name: str, items=None, fail: Exception | None = None) -> None:
        self.name, self.items, self.fail, self.calls = name, items or [], fail, 0

    def get_news(self, symbols, start, end):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return [n for n in self.items if n.symbol in symbols]


def test_news_fails_over_like_bars_and_names_every_failure():
    down = Feed("alphavantage", fail=SourceError("rate limited"))
    finnhub = Feed("finnhub", [item("AAPL", "finnhub")])
    bars_only = Vendor("bars-only")
    news, why = fetch_news([bars_only, down, finnhub], ["AAPL"], T0, T0)
    assert [n.source for n in news] == ["finnhub"] and why == ""
    assert down.calls == 1
    news, why = fetch_news([bars_only, Feed("a", fail=SourceError("down")), Feed("b", fail=ValueError("junk"))],
                           ["AAPL"], T0, T0)
    assert news == [] and "a: SourceError: down" in why and "b: ValueError: junk" in why
    assert fetch_news([bars_only], ["AAPL"], T0, T0) == ([], "no source has a news feed")


def test_a_vendor_score_travels_with_the_item():
    scored = item("AAPL", "alphavantage", score=0.7, vendor_score=0.7)
    assert scored.to_dict()["vendor_score"] == 0.7
    assert item("AAPL", "alpaca").vendor_score is None


class Quotes:
    def __init__(self, name: str, prices: dict[str, float], fail: Exception | None = None) -> None:
        self.name, self.prices, self.fail = name, prices, fail

    def get_quotes(self, symbols):
        if self.fail is not None:
            raise self.fail
        return {s: Quote(s, p, T0, self.name) for s, p in self.prices.items() if s in symbols}


def test_quotes_come_from_the_first_source_that_has_one_per_symbol():
    quotes, missing = fetch_quotes([Vendor("bars"), Quotes("down", {}, SourceError("503")),
                                    Quotes("alpaca", {"AAPL": 190.0}), Quotes("finnhub", {"MSFT": 410.0})],
                                   ["AAPL", "MSFT", "ZZZZ"])
    assert {s: (q.price, q.source) for s, q in quotes.items()} == {"AAPL": (190.0, "alpaca"),
                                                                    "MSFT": (410.0, "finnhub")}
    assert "down: SourceError: 503" in missing["ZZZZ"] and "finnhub: no quote" in missing["ZZZZ"]
    assert fetch_quotes([Vendor("bars")], ["AAPL"]) == ({}, {"AAPL": "no source has quotes"})


@pytest.mark.parametrize("price", [0.0, -1.0, float("nan"), float("inf")])
def test_a_quote_must_have_a_price(price):
    with pytest.raises(ValueError, match="finite number > 0"):
        Quote("AAPL", price, T0, "alpaca")


def test_a_quote_needs_an_aware_time():
    with pytest.raises(ValueError, match="tz-aware"):
        Quote("AAPL", 1.0, datetime(2024, 3, 8, 15), "alpaca")
