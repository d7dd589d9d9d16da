"""Performance figures of a book, against numbers worked out by hand."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.trading.performance import (
    closed_trades,
    drawdown,
    period_returns,
    profit_factor,
    sharpe_ratio,
    sortino_ratio,
    win_rate,
)

UTC = timezone.utc
# Daily returns +10 %, -10 %, +10 %, -6 %: equity 100, 110, 99, 108.9, 102.366.
RETURNS = [0.10, -0.10, 0.10, -0.06]
EQUITY = [100.0, 110.0, 99.0, 108.9, 102.366]


def test_drawdown_current_and_maximum():
    dd = drawdown(EQUITY)
    assert dd.peak == pytest.approx(110.0)
    assert dd.current == pytest.approx((110 - 102.366) / 110)  # 0.0694
    assert dd.maximum == pytest.approx((110 - 99) / 110)  # 0.1, the fall to 99
    assert drawdown([100.0, 101.0, 102.0]) == (0.0, 0.0, 102.0)
    assert drawdown([]) is None


def test_drawdown_refuses_what_it_cannot_measure():
    with pytest.raises(InvalidInputError, match="finite"):
        drawdown([100.0, float("nan")])
    with pytest.raises(InvalidInputError, match="positive"):
        drawdown([0.0, -5.0])


def test_sharpe_and_sortino_by_hand():
    # mean 0.01; sample variance (0.09^2 + 0.11^2 + 0.09^2 + 0.07^2) / 3 = 0.0332 / 3; sqrt(252) = 15.8745
    assert sharpe_ratio(RETURNS) == pytest.approx(0.01 / math.sqrt(0.0332 / 3) * math.sqrt(252))
    assert sharpe_ratio(RETURNS) == pytest.approx(1.50901, abs=1e-5)
    # downside deviation sqrt((0.1^2 + 0.06^2) / 4) = sqrt(0.0034)
    assert sortino_ratio(RETURNS) == pytest.approx(0.01 / math.sqrt(0.0034) * math.sqrt(252))
    assert sortino_ratio(RETURNS) == pytest.approx(2.72246, abs=1e-5)
    assert sharpe_ratio(RETURNS, periods_per_year=365) == pytest.approx(0.01 / math.sqrt(0.0332 / 3) * math.sqrt(365))


def test_ratios_undefined_or_unbounded():
    assert sharpe_ratio([0.01]) is None and sortino_ratio([0.01]) is None  # one return: no spread
    assert sharpe_ratio([0.0, 0.0, 0.0]) is None  # flat equity
    assert sortino_ratio([0.0, 0.0]) is None
    assert sortino_ratio([0.01, 0.02]) == math.inf  # nothing lost
    assert sharpe_ratio([0.01, 0.01, 0.01]) is None  # no variation
    with pytest.raises(InvalidInputError, match="finite"):
        sharpe_ratio([0.01, float("inf")])


def test_period_returns_split_days_in_the_exchange_time_zone():
    ny_close = datetime(2026, 1, 5, 21, 0, tzinfo=UTC)  # 16:00 New York
    points = [(ny_close, 100.0),
              (ny_close + timedelta(hours=4), 101.0),  # 20:00 New York, already 6 January in UTC
              (ny_close + timedelta(days=1), 110.0),
              (ny_close + timedelta(days=1, hours=-5), 105.0)]  # earlier that day: not the day's last
    assert period_returns(points, "America/New_York") == pytest.approx([110 / 101 - 1])
    assert period_returns(points, "UTC") == pytest.approx([110 / 100 - 1])
    assert period_returns([(ny_close, 100.0)]) == []


def test_period_returns_bad_input():
    with pytest.raises(InvalidInputError, match="time zone"):
        period_returns([], "Mars/Olympus")
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        period_returns([(datetime(2026, 1, 5), 100.0)])


def fill(symbol, side, qty, price, commission=0.0, day=1):
    return {"symbol": symbol, "side": side, "qty": qty, "price": price, "commission": commission,
            "filled_at": datetime(2026, 1, day, 21, tzinfo=UTC)}


def test_round_trip_pays_both_commissions():
    (trade,) = closed_trades([fill("AAPL", "buy", 10, 100.0, 1.0), fill("AAPL", "sell", 10, 110.0, 1.0, day=2)])
    assert (trade.direction, trade.qty, trade.entry_price, trade.exit_price) == ("long", 10, 100.0, 110.0)
    assert trade.pnl == pytest.approx(10 * 10 - 1 - 1)  # 98
    assert trade.closed_at == datetime(2026, 1, 2, 21, tzinfo=UTC)


def test_scaling_in_and_out_and_flipping_through_zero():
    trades = closed_trades([
        fill("AAPL", "buy", 10, 100.0, 1.0),
        fill("AAPL", "buy", 10, 110.0, 1.0),  # 20 at an average of 105; 0.10 of commission per share
        fill("MSFT", "buy", 10, 100.0, 1.0),  # 0.10 per share
        fill("AAPL", "sell", 5, 120.0, 0.5),  # 5 x 15 - 5 x 0.10 - 0.5 = 74
        fill("MSFT", "sell", 15, 90.0, 1.5),  # closes 10: 10 x -10 - 10 x 0.10 - 1.5 x 10/15 = -102; 5 short at 90
        fill("AAPL", "sell", 15, 100.0, 1.5),  # 15 x -5 - 15 x 0.10 - 1.5 = -78
        fill("MSFT", "buy", 5, 80.0, 0.5),  # the short: 5 x 10 - 5 x (0.5 / 5) - 0.5 = 49
    ])
    assert [(t.symbol, t.direction, t.qty) for t in trades] == [
        ("AAPL", "long", 5), ("MSFT", "long", 10), ("AAPL", "long", 15), ("MSFT", "short", 5)]
    assert [t.pnl for t in trades] == pytest.approx([74.0, -102.0, -78.0, 49.0])
    assert win_rate(trades) == 0.5
    assert profit_factor(trades) == pytest.approx((74 + 49) / (102 + 78))  # 0.68333


def test_win_rate_and_profit_factor_edges():
    assert win_rate([]) is None and profit_factor([]) is None
    wins = closed_trades([fill("SPY", "buy", 1, 10.0), fill("SPY", "sell", 1, 11.0)])
    assert win_rate(wins) == 1.0 and profit_factor(wins) == math.inf
    even = closed_trades([fill("SPY", "buy", 1, 10.0), fill("SPY", "sell", 1, 10.0)])
    assert win_rate(even) == 0.0  # break-even is not a win
    assert profit_factor(even) is None


def test_a_bad_fill_is_refused():
    with pytest.raises(InvalidInputError, match="side"):
        closed_trades([fill("SPY", "hold", 1, 10.0)])
    with pytest.raises(InvalidInputError, match="price"):
        closed_trades([fill("SPY", "buy", 1, -10.0)])
