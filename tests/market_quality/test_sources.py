"""Market-data sources: the protocol and the failover chain."""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import AllSourcesFailedError, InvalidInputError, SourceError
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, empty_bars, to_bar_frame
from airflow_provider_portfolio.market.sources import FailoverChain, FetchResult, MarketDataSource

START, END = date(2024, 1, 2), date(2024, 1, 3)


def some_bars(symbol: str = "AAPL", source: str = "vendor") -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2024-01-02", "2024-01-03"], utc=True),
            "open": [100.0, 101.0],
            "high": [102.0, 103.0],
            "low": [99.0, 100.0],
            "close": [101.0, 102.0],
            "volume": [1000.0, 1100.0],
        }
    )
    return to_bar_frame(frame, symbol=symbol, timeframe="1Day", source=source)


class Good:
    def __init__(self, name: str, frame: pd.DataFrame | None = None) -> None:
        self.name = name
        self.frame = some_bars() if frame is None else frame
        self.calls: list[tuple] = []

    def get_bars(self, symbol, start, end, timeframe="1Day"):
        self.calls.append((symbol, start, end, timeframe))
        return self.frame


class Failing:
    def __init__(self, name: str, error: BaseException) -> None:
        self.name = name
        self.error = error
        self.calls = 0

    def get_bars(self, symbol, start, end, timeframe="1Day"):
        self.calls += 1
        raise self.error


def test_a_failing_source_hands_over_to_the_next(caplog):
    bad, good = Failing("alpaca", SourceError("HTTP 503 Service Unavailable")), Good("synthetic")
    chain = FailoverChain([bad, good])
    with caplog.at_level(logging.WARNING, logger="airflow_provider_portfolio.market.sources"):
        result = chain.fetch("AAPL", START, END, "1Day")
    assert isinstance(result, FetchResult)
    assert result.source == "synthetic"
    assert result.failures == {"alpaca": "SourceError: HTTP 503 Service Unavailable"}
    assert list(result.frame.columns) == list(BAR_COLUMNS)
    assert set(result.frame["source"]) == {"synthetic"}  # the vendor's own label is replaced
    pd.testing.assert_frame_equal(result.frame.drop(columns="source"), some_bars().drop(columns="source"))
    assert good.calls == [("AAPL", START, END, "1Day")]
    assert "alpaca" in caplog.text and "HTTP 503" in caplog.text


def test_the_first_good_source_wins_and_the_rest_are_not_asked():
    first, second = Good("alpaca"), Good("synthetic")
    result = FailoverChain([first, second]).fetch("AAPL", START, END)
    assert (result.source, result.failures) == ("alpaca", {})
    assert set(result.frame["source"]) == {"alpaca"}
    assert second.calls == []


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RuntimeError("boom"), "RuntimeError: boom"),
        (KeyError("c"), "KeyError: 'c'"),
        (ZeroDivisionError(), "ZeroDivisionError"),
        (InvalidInputError("unknown timeframe"), "InvalidInputError: unknown timeframe"),
    ],
)
def test_any_exception_of_a_source_is_a_failure(caplog, error, reason):
    chain = FailoverChain([Failing("flaky", error), Good("synthetic")])
    with caplog.at_level(logging.WARNING, logger="airflow_provider_portfolio.market.sources"):
        result = chain.fetch("AAPL", START, END)
    assert result.failures == {"flaky": reason}
    assert any(r.levelno == logging.WARNING and "flaky" in r.getMessage() for r in caplog.records)


def test_a_frame_that_is_not_a_bar_frame_is_a_failure():
    broken = Good("broken", some_bars().drop(columns="close"))
    not_a_frame = Good("listy", [1, 2])  # type: ignore[arg-type]
    result = FailoverChain([broken, not_a_frame, Good("synthetic")]).fetch("AAPL", START, END)
    assert result.source == "synthetic"
    assert result.failures["broken"].startswith("InvalidInputError: bar frame lacks column(s) ['close']")
    assert result.failures["listy"] == "TypeError: get_bars returned list, not a DataFrame"


def test_when_every_source_fails_the_error_names_each_and_why():
    chain = FailoverChain(
        [Failing("alpaca", SourceError("HTTP 429 rate limited")), Failing("finnhub", TimeoutError("read timed out"))]
    )
    with pytest.raises(AllSourcesFailedError) as info:
        chain.fetch("AAPL", START, END)
    err = info.value
    assert err.symbol == "AAPL"
    assert err.failures == {"alpaca": "SourceError: HTTP 429 rate limited", "finnhub": "TimeoutError: read timed out"}
    assert isinstance(err, SourceError)
    text = str(err)
    for piece in ("AAPL", "alpaca", "HTTP 429 rate limited", "finnhub", "TimeoutError: read timed out"):
        assert piece in text


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(1)])
def test_interrupts_are_never_swallowed(interrupt):
    second = Good("synthetic")
    with pytest.raises(type(interrupt)):
        FailoverChain([Failing("alpaca", interrupt), second]).fetch("AAPL", START, END)
    assert second.calls == []


def test_an_empty_answer_is_an_answer_by_default():
    second = Good("synthetic")
    result = FailoverChain([Good("alpaca", empty_bars()), second]).fetch("AAPL", START, END)
    assert result.source == "alpaca" and result.failures == {}
    assert result.frame.empty and list(result.frame.columns) == list(BAR_COLUMNS)
    assert second.calls == []


def test_an_empty_frame_without_columns_counts_as_no_bars():
    result = FailoverChain([Good("alpaca", pd.DataFrame())]).fetch("AAPL", START, END)
    assert result.frame.empty and list(result.frame.columns) == list(BAR_COLUMNS)


def test_empty_is_failure_moves_on_and_fails_when_every_source_is_empty():
    chain = FailoverChain([Good("alpaca", empty_bars()), Good("synthetic")], empty_is_failure=True)
    result = chain.fetch("AAPL", START, END)
    assert (result.source, result.failures) == ("synthetic", {"alpaca": "no bars"})
    assert len(result.frame) == 2
    all_empty = FailoverChain([Good("alpaca", empty_bars()), Good("finnhub", empty_bars())], empty_is_failure=True)
    with pytest.raises(AllSourcesFailedError, match="alpaca: no bars; finnhub: no bars"):
        all_empty.fetch("AAPL", START, END)


def test_the_chain_is_a_source_itself():
    chain = FailoverChain([Failing("alpaca", SourceError("down")), Good("synthetic")])
    assert chain.name == "failover(alpaca,synthetic)"
    assert isinstance(chain, MarketDataSource)
    frame = chain.get_bars("AAPL", START, END, "1Day")
    assert isinstance(frame, pd.DataFrame) and set(frame["source"]) == {"synthetic"}
    nested = FailoverChain([chain]).fetch("AAPL", START, END)
    assert nested.source == "failover(alpaca,synthetic)"


def test_a_name_used_twice_is_told_apart_in_failures():
    chain = FailoverChain([Failing("alpaca", SourceError("a")), Failing("alpaca", SourceError("b"))])
    with pytest.raises(AllSourcesFailedError) as info:
        chain.fetch("AAPL", START, END)
    assert info.value.failures == {"alpaca": "SourceError: a", "alpaca#2": "SourceError: b"}


def test_a_long_reason_is_shortened():
    chain = FailoverChain([Failing("alpaca", SourceError("x" * 5000)), Good("synthetic")])
    reason = chain.fetch("AAPL", START, END).failures["alpaca"]
    assert len(reason) <= 320 and reason.endswith("...")


@pytest.mark.parametrize("sources", [[], ()])
def test_an_empty_chain_is_invalid_input(sources):
    with pytest.raises(InvalidInputError, match="at least one"):
        FailoverChain(sources)


def test_a_chain_of_non_sources_is_invalid_input():
    with pytest.raises(InvalidInputError, match="get_bars"):
        FailoverChain([Good("synthetic"), object()])
    with pytest.raises(InvalidInputError, match="list"):
        FailoverChain(Good("synthetic"))  # type: ignore[arg-type]


def test_the_protocol_recognises_a_conforming_object():
    assert isinstance(Good("x"), MarketDataSource)
    assert not isinstance(object(), MarketDataSource)

    class NoName:
        def get_bars(self, symbol, start, end, timeframe="1Day"):
            return empty_bars()

    assert not isinstance(NoName(), MarketDataSource)


def test_the_synthetic_market_is_a_source_in_a_chain():
    from airflow_provider_portfolio.market.synthetic import SyntheticMarket

    market = SyntheticMarket(seed=3)
    assert isinstance(market, MarketDataSource)
    result = FailoverChain([Failing("alpaca", SourceError("down")), market]).fetch("AAPL", START, END)
    assert result.source == "synthetic" and len(result.frame) == 2
