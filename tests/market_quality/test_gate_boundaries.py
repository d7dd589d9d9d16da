"""Boundaries of the quality gate, each pinned directly (a mutation audit flipped them and the suite stayed
green), and the batch's boundary with the bar before it (``previous``).

Numbers are exact in binary floating point, so each test sits on the boundary, not next to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import DataQualityError, InvalidInputError
from airflow_provider_portfolio.market.bars import to_bar_frame
from airflow_provider_portfolio.market.quality import QualityRules, check_bars, validate_bars

HALF = QualityRules(max_abs_return=0.5)


def bars(rows: list[tuple], symbol: str = "AAPL", timeframe: str = "1Day") -> pd.DataFrame:
    """A bar frame from (ts, open, high, low, close, volume) rows; naive ts are UTC."""
    frame = pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])
    frame["ts"] = [pd.Timestamp(t) for t in frame["ts"]]
    return to_bar_frame(frame, symbol=symbol, timeframe=timeframe, source="test")


def flat(day: str, price: float) -> tuple:
    return (day, price, price, price, price, 1000.0)


def previous(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """The bar before each symbol's batch, as read from a store: (symbol, ts, close)."""
    frame = pd.DataFrame(rows, columns=["symbol", "ts", "close"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    for col in ("open", "high", "low"):
        frame[col] = frame["close"]
    frame["volume"], frame["timeframe"], frame["source"] = 1.0, "1Day", "store"
    return to_bar_frame(frame)


def raises(frame: pd.DataFrame, **kwargs: object) -> DataQualityError:
    with pytest.raises(DataQualityError) as info:
        check_bars(frame, **kwargs)
    return info.value


# --- implausible_jump: a move of exactly max_abs_return passes (``>``, not ``>=``) ---------------------------


@pytest.mark.parametrize("close", [150.0, 50.0], ids=["up 50%", "down 50%"])
def test_a_move_of_exactly_max_abs_return_passes(close):
    check_bars(bars([flat("2024-01-02", 100.0), flat("2024-01-03", close)]), rules=HALF)


@pytest.mark.parametrize("close", [150.5, 49.5], ids=["up 50.5%", "down 50.5%"])
def test_a_move_beyond_max_abs_return_fails(close):
    err = raises(bars([flat("2024-01-02", 100.0), flat("2024-01-03", close)]), rules=HALF)
    assert (err.rule, err.count) == ("implausible_jump", 1)


# --- implausible_jump across the batch's boundary: the bar before it -------------------------------------------


def test_the_first_bar_is_judged_against_the_previous_bar():
    batch = bars([flat("2024-01-03", 150.5), flat("2024-01-04", 150.5)])
    check_bars(batch, rules=HALF)  # within the batch nothing moves
    err = raises(batch, rules=HALF, previous=previous([("AAPL", "2024-01-02", 100.0)]))
    assert (err.rule, err.symbol, err.count) == ("implausible_jump", "AAPL", 1)
    assert err.rows == [
        "2024-01-03T00:00:00Z close=150.5 previous_close=100.0 (2024-01-02T00:00:00Z, before the batch) return=+50.5%"
    ]


def test_a_move_of_exactly_max_abs_return_from_the_previous_bar_passes():
    for close in (150.0, 50.0):
        check_bars(bars([flat("2024-01-03", close)]), rules=HALF, previous=previous([("AAPL", "2024-01-02", 100.0)]))


def test_a_previous_bar_of_another_symbol_or_none_is_no_comparison():
    batch = bars([flat("2024-01-03", 1e12)])
    check_bars(batch, rules=HALF, previous=previous([("MSFT", "2024-01-02", 100.0)]))
    check_bars(batch, rules=HALF, previous=previous([]))
    check_bars(batch, rules=HALF, previous=None)
    check_bars(batch, rules=QualityRules(max_abs_return=None), previous=previous([("AAPL", "2024-01-02", 100.0)]))


def test_validate_bars_judges_each_symbol_against_its_own_previous_bar():
    frame = pd.concat([bars([flat("2024-01-03", 150.0)], symbol="AAPL"),
                       bars([flat("2024-01-03", 151.0)], symbol="MSFT"),
                       bars([flat("2024-01-03", 1e12)], symbol="SPY")], ignore_index=True)
    before = previous([("SPY", "2024-01-02", 1e12), ("MSFT", "2024-01-02", 100.0), ("AAPL", "2024-01-02", 100.0)])
    kept, errors = validate_bars(frame, rules=HALF, previous=before)
    assert list(errors) == ["MSFT"] and errors["MSFT"].rule == "implausible_jump"
    assert sorted(kept["symbol"]) == ["AAPL", "SPY"]


def test_the_previous_bar_must_come_before_the_batch():
    batch = bars([flat("2024-01-03", 100.0)])
    with pytest.raises(InvalidInputError, match="AAPL.*before"):
        check_bars(batch, previous=previous([("AAPL", "2024-01-03", 100.0)]))
    with pytest.raises(InvalidInputError, match="one bar per symbol"):
        check_bars(batch, previous=previous([("AAPL", "2024-01-01", 100.0), ("AAPL", "2024-01-02", 100.0)]))
    with pytest.raises(InvalidInputError, match="close"):
        check_bars(batch, previous=previous([("AAPL", "2024-01-02", 100.0)]).drop(columns="close"))


# --- open and close may sit on the range's ends; volume may be zero --------------------------------------------


@pytest.mark.parametrize(
    "row",
    [
        ("2024-01-02", 99.0, 102.0, 99.0, 102.0, 1000.0),  # open == low, close == high
        ("2024-01-02", 102.0, 102.0, 99.0, 99.0, 1000.0),  # open == high, close == low
        ("2024-01-02", 100.0, 100.0, 100.0, 100.0, 1000.0),  # high == low: a flat bar
        ("2024-01-02", 100.0, 102.0, 99.0, 101.0, 0.0),  # no trades
    ],
    ids=["open=low close=high", "open=high close=low", "high=low", "volume=0"],
)
def test_a_bar_on_its_own_boundaries_passes(row):
    check_bars(bars([row]))


UP, DOWN = np.nextafter(102.0, np.inf), np.nextafter(99.0, -np.inf)


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (("2024-01-02", 100.0, 102.0, 99.0, UP, 1.0), "close_outside_range"),
        (("2024-01-02", 100.0, 102.0, 99.0, DOWN, 1.0), "close_outside_range"),
        (("2024-01-02", UP, 102.0, 99.0, 100.0, 1.0), "open_outside_range"),
        (("2024-01-02", DOWN, 102.0, 99.0, 100.0, 1.0), "open_outside_range"),
        (("2024-01-02", 99.0, 99.0, np.nextafter(99.0, np.inf), 99.0, 1.0), "high_below_low"),
    ],
    ids=["close above high", "close below low", "open above high", "open below low", "high below low"],
)
def test_one_ulp_past_a_boundary_fails(row, rule):
    assert raises(bars([row])).rule == rule
