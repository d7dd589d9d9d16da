"""The book's figures as the health report grades them: hand-checked values, and thin data as a reason."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from airflow_provider_portfolio.desk.performance import (
    Measure,
    closed_trades,
    daily_returns,
    max_drawdown,
    profit_factor,
    sharpe,
    sortino,
    win_rate,
)
from airflow_provider_portfolio.exceptions import InvalidInputError

UTC = timezone.utc


# -- drawdown ---------------------------------------------------------------------------------------------
def test_max_drawdown_by_hand():
    # 100, 110, 99, 104.5: the peak 110 falls to 99, 11 / 110 = 10 %; 104.5 is still below the peak
    assert max_drawdown([100.0, 110.0, 99.0, 104.5]) == Measure(pytest.approx(0.10))
    # two falls: 100 -> 90 (10 %) and 120 -> 96 (24 / 120 = 20 %): the deeper one
    assert max_drawdown([100.0, 90.0, 120.0, 96.0, 130.0]).value == pytest.approx(0.20)
    assert max_drawdown([100.0, 101.0, 102.0]).value == 0.0  # never below its peak
    assert max_drawdown([100.0]).value == 0.0


@pytest.mark.parametrize("equity, reason", [
    ([], "no equity snapshots"),
    ([100.0, float("nan")], "finite"),
    ([0.0, -5.0], "positive"),
])
def test_max_drawdown_of_unusable_curves_is_none_with_a_reason(equity, reason):
    found = max_drawdown(equity)
    assert found.value is None and reason in found.reason


# -- daily returns ----------------------------------------------------------------------------------------
def test_daily_returns_take_the_last_equity_of_each_utc_day():
    def at(day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2026, 11, day, hour, minute, tzinfo=UTC)

    rows = [
        {"ts": at(16, 21), "equity": 102.0},  # Monday's last snapshot (16:00 New York)
        {"ts": at(16, 15), "equity": 100.0},  # earlier the same day: not the day's equity, whatever the order
        {"ts": at(17, 14, 30), "equity": 101.0},
        {"ts": at(17, 23, 59), "equity": 104.04},  # Tuesday ends at 104.04: +2 % on 102
        {"ts": at(19, 0, 1), "equity": 101.9592},  # Thursday (Wednesday has none, it is skipped): -2 % on 104.04
    ]
    assert daily_returns(rows) == pytest.approx([0.02, -0.02])
    assert daily_returns(rows[:1]) == []
    with pytest.raises(InvalidInputError, match="positive"):
        daily_returns([{"ts": at(16, 21), "equity": 0.0}, {"ts": at(17, 21), "equity": 10.0}])


# -- Sharpe and Sortino -----------------------------------------------------------------------------------
def test_sharpe_and_sortino_by_hand():
    # r = +1 %, -1 %, +2 %: mean 0.02 / 3; deviations 1/300, -5/300, 4/300 -> sample variance (1 + 25 + 16) / 90000 / 2
    # = 7 / 30000; Sharpe^2 = (4e-4 / 9) / (7 / 30000) * 252 = 12 / 63 * 252 = 48  ->  Sharpe = sqrt(48) = 6.9282
    # downside deviation^2 = mean(0, 1e-4, 0) = 1e-4 / 3; Sortino^2 = (4e-4 / 9) / (1e-4 / 3) * 252 = 336 -> 18.3303
    returns = [0.01, -0.01, 0.02]
    assert sharpe(returns).value == pytest.approx(math.sqrt(48))
    assert sortino(returns).value == pytest.approx(math.sqrt(336))
    # a 24/7 book: 365 periods a year, Sharpe^2 = 12 / 63 * 365
    assert sharpe(returns, 365).value == pytest.approx(math.sqrt(12 / 63 * 365))
    # every period counts in the downside deviation (gains as 0): +2 %, -1 % ten times -> mean 0.005,
    # dd^2 = 10 * 1e-4 / 20 = 5e-5, Sortino^2 = 2.5e-5 / 5e-5 * 252 = 126; sample variance 20 * 0.015^2 / 19 ->
    # Sharpe^2 = 2.5e-5 * 19 / 0.0045 * 252 = 26.6
    returns = [0.02, -0.01] * 10
    assert sortino(returns).value == pytest.approx(math.sqrt(126))
    assert sharpe(returns).value == pytest.approx(math.sqrt(26.6))
    assert sharpe([-r for r in returns]).value == pytest.approx(-math.sqrt(26.6))


@pytest.mark.parametrize("returns, reason", [
    ([], "at least 2 returns, got 0"),
    ([0.01], "at least 2 returns, got 1"),
    ([0.01, float("inf")], "non-finite"),
])
def test_thin_returns_give_none_with_the_reason(returns, reason):
    for ratio in (sharpe, sortino):
        found = ratio(returns)
        assert found.value is None and reason in found.reason


def test_zero_variance_and_no_loss_are_reasons_not_numbers():
    flat = sharpe([0.01, 0.01, 0.01])
    assert flat.value is None and "zero variance" in flat.reason
    gains = sortino([0.01, 0.02])
    assert gains.value is None and "no losing period" in gains.reason
    assert sortino([0.0, 0.0]).value is None
    assert sharpe([0.01, -0.01]).value == 0.0  # a mean of zero is a number, not a reason
    with pytest.raises(InvalidInputError, match="periods_per_year"):
        sharpe([0.01, -0.01], 0)


# -- closed trades ----------------------------------------------------------------------------------------
def fill(symbol: str, side: str, qty: float, price: float, commission: float = 0.0, day: int = 1) -> dict:
    return {"symbol": symbol, "side": side, "qty": qty, "price": price, "commission": commission,
            "filled_at": datetime(2026, 11, day, 21, tzinfo=UTC)}


BOOK = [
    fill("AAPL", "buy", 10, 100.0, 1.0), fill("AAPL", "sell", 10, 110.0, 1.0, day=2),  # 10 x 10 - 1 - 1 = +98
    fill("MSFT", "buy", 5, 200.0), fill("MSFT", "sell", 5, 190.0, day=2),  # 5 x -10 = -50
    fill("TSLA", "buy", 10, 50.0, 2.0),  # opening commission 0.2 a share
    fill("TSLA", "sell", 4, 60.0, 1.0, day=2),  # 4 x 10 - 1 - 4 x 0.2 = +38.2
    fill("TSLA", "sell", 6, 45.0, 1.0, day=3),  # 6 x -5 - 1 - 6 x 0.2 = -32.2
    fill("SPY", "sell", 2, 500.0), fill("SPY", "buy", 2, 490.0, day=3),  # a short: 2 x 10 = +20
]


def test_a_book_with_known_win_rate_and_profit_factor():
    trades = closed_trades(BOOK)
    assert [(t.symbol, t.qty) for t in trades] == [("AAPL", 10), ("MSFT", 5), ("TSLA", 4), ("TSLA", 6), ("SPY", 2)]
    assert [t.pnl for t in trades] == pytest.approx([98.0, -50.0, 38.2, -32.2, 20.0])
    assert trades[-1].direction == "short"
    # 3 winners of 5; gross profit 98 + 38.2 + 20 = 156.2, gross loss 50 + 32.2 = 82.2
    assert win_rate(trades) == Measure(pytest.approx(0.6))
    assert profit_factor(trades) == Measure(pytest.approx(156.2 / 82.2))


def test_a_flip_through_zero_closes_the_old_side_and_opens_the_new_one():
    trades = closed_trades([
        fill("NVDA", "buy", 10, 100.0, 1.0),
        fill("NVDA", "sell", 15, 110.0, 1.5, day=2),  # closes 10 long: 100 - 1 (open) - 1.5 x 10/15 = +98
        # the 5 short opened at 110 carry 1.5 x 5/15 = 0.5 of commission; closing them: 5 x 10 - 0.5 - 0.5 = +49
        fill("NVDA", "buy", 5, 100.0, 0.5, day=3),
    ])
    assert [(t.direction, t.qty) for t in trades] == [("long", 10), ("short", 5)]
    assert [t.pnl for t in trades] == pytest.approx([98.0, 49.0])


def test_no_trades_no_losses_and_break_even():
    assert win_rate([]) == Measure(None, "no closed trades")
    assert profit_factor([]) == Measure(None, "no closed trades")
    winners = closed_trades(BOOK[:2])
    found = profit_factor(winners)
    assert found.value == math.inf and "no losing trade in 1" in found.reason and not found.finite
    even = closed_trades([fill("AAPL", "buy", 1, 100.0), fill("AAPL", "sell", 1, 100.0)])
    assert win_rate(even).value == 0.0  # break-even is not a win
    assert profit_factor(even).value is None and "break-even" in profit_factor(even).reason
    assert json.dumps([m.value for m in (win_rate([]), profit_factor([]))]) == "[null, null]"


def test_a_fill_the_accounting_refuses_is_an_error():
    with pytest.raises(InvalidInputError, match="side"):
        closed_trades([fill("AAPL", "short", 1, 100.0)])


def test_a_trade_is_stamped_with_its_closing_fill():
    # monitoring windows trades by this instant (it passes the fill's bar as filled_at)
    assert [t.closed_at.day for t in closed_trades(BOOK)] == [2, 2, 2, 3, 3]
