"""The book's performance as the desk's health report grades it: each figure a :class:`Measure`, a number or
``None`` with the reason, never an exception for thin data and never a NaN.

The formulas are the trading domain's (:mod:`airflow_provider_portfolio.trading.performance`, one place for
them: a backtest reports the same numbers); this module says what the desk measures them on and turns their
edge cases into reasons:

- :func:`max_drawdown`: the deepest fall of equity below its running peak, a fraction of that peak (an equity
  curve 100, 110, 99, 104.5 has a maximum drawdown of 10 %).
- :func:`daily_returns`: equity snapshots resampled to the last equity of each UTC day, then simple returns
  between consecutive days. Why: a trading cycle snapshots whenever it runs (every few minutes intraday, once a
  day, twice on a retry), and returns between snapshots would mix periods of every length; a Sharpe ratio
  annualised with 252 (or 365) periods needs one return per day. UTC days because one rule serves every book:
  a US session (13:30-21:00 UTC) lies inside one UTC day, and the 24/7 calendar of crypto has its sessions on
  UTC days. Days without a snapshot (weekends, holidays) are skipped, not filled.
- :func:`sharpe`: ``mean(r) / std(r) * sqrt(periods_per_year)``, sample standard deviation (``ddof=1``),
  risk-free rate 0. :func:`sortino`: ``mean(r) / dd * sqrt(periods_per_year)`` where the downside deviation
  ``dd = sqrt(mean(min(r, 0)^2))`` is taken over all periods (gains count as 0, not left out). Both ``None``
  with fewer than 2 returns or a zero denominator (no variation; no losing period).
- :func:`closed_trades`: fills replayed with average cost through
  :func:`~airflow_provider_portfolio.trading.accounting.apply_fill`; every fill that reduces or closes a
  position closes a trade whose realized P&L includes the commissions of that quantity (its share of the
  closing fill's and of the opening fills').
- :func:`win_rate`: share of closed trades with P&L > 0 (break-even is not a win). :func:`profit_factor`: gross
  profit / gross loss; with profits and no loss it is ``inf`` (kept as the value, with a reason: a check
  writes it as ``null`` in JSON).

Pure functions of plain numbers and rows; nothing here reads the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.trading import performance as formulas
from airflow_provider_portfolio.trading.performance import TRADING_DAYS_PER_YEAR, ClosedTrade, closed_trades

__all__ = ["TRADING_DAYS_PER_YEAR", "ClosedTrade", "Measure", "closed_trades", "daily_returns", "max_drawdown",
           "profit_factor", "sharpe", "sortino", "win_rate"]


class Measure(NamedTuple):
    """A figure of the book: ``value`` (``None`` when it cannot be measured) and the ``reason`` why not (or a
    note on an infinite value); ``reason`` is ``""`` for a plain number."""

    value: float | None
    reason: str = ""

    @property
    def finite(self) -> bool:
        """Whether ``value`` is a finite number."""
        return self.value is not None and math.isfinite(self.value)


def _periods(periods_per_year: float) -> float:
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, int | float) \
            or not math.isfinite(periods_per_year) or periods_per_year <= 0:
        raise InvalidInputError(f"periods_per_year must be a number > 0 (252 trading days, 365 for a 24/7 book), "
                                f"got {periods_per_year!r}")
    return float(periods_per_year)


def max_drawdown(equity: Iterable[float]) -> Measure:
    """The deepest fall of ``equity`` (oldest first) below its running peak, as a fraction of that peak.

    :return: ``Measure(0.1)`` for 100, 110, 99, 104.5; ``None`` with the reason for no points, a non-finite point
        or a peak that is not positive.
    """
    try:
        found = formulas.drawdown(equity)
    except (InvalidInputError, TypeError, ValueError) as err:
        return Measure(None, f"equity cannot be measured: {err}")
    if found is None:
        return Measure(None, "no equity snapshots")
    return Measure(found.maximum)


def daily_returns(rows: Iterable[Mapping[str, Any]]) -> list[float]:
    """Simple returns between the last equity of consecutive UTC days (see the module docstring).

    :param rows: equity snapshots with ``ts`` (aware) and ``equity`` (the ledger's ``equity_curve`` rows), any order.
    :raises InvalidInputError: for a naive instant, a non-finite equity, or a day's equity that is not positive
        where a return is measured from it.
    """
    return formulas.period_returns(((r["ts"], r["equity"]) for r in rows), "UTC")


def _returns(returns: Sequence[float], what: str) -> tuple[list[float], str]:
    values = [float(r) for r in returns]
    if len(values) < 2:
        return values, f"{what} needs at least 2 returns, got {len(values)}"
    if not all(math.isfinite(r) for r in values):
        return values, f"{what}: the returns hold a non-finite value"
    return values, ""


def sharpe(returns: Sequence[float], periods_per_year: float = TRADING_DAYS_PER_YEAR) -> Measure:
    """Annualised Sharpe ratio (risk-free rate 0, sample standard deviation).

    :return: ``None`` with the reason for fewer than 2 returns or returns that do not vary.
    """
    ppy = _periods(periods_per_year)
    values, why = _returns(returns, "a Sharpe ratio")
    if why:
        return Measure(None, why)
    value = formulas.sharpe_ratio(values, ppy)
    if value is None:
        return Measure(None, f"the {len(values)} returns do not vary (zero variance)")
    return Measure(value)


def sortino(returns: Sequence[float], periods_per_year: float = TRADING_DAYS_PER_YEAR) -> Measure:
    """Annualised Sortino ratio (target 0; downside deviation ``sqrt(mean(min(r, 0)^2))`` over all periods).

    :return: ``None`` with the reason for fewer than 2 returns, or no losing period (zero downside deviation).
    """
    ppy = _periods(periods_per_year)
    values, why = _returns(returns, "a Sortino ratio")
    if why:
        return Measure(None, why)
    value = formulas.sortino_ratio(values, ppy)
    if value is None or not math.isfinite(value):
        gain = "a positive mean" if value == math.inf else "no gain either"
        return Measure(None, f"no losing period in {len(values)} returns (downside deviation 0, {gain})")
    return Measure(value)


def win_rate(trades: Iterable[ClosedTrade]) -> Measure:
    """The share of closed trades with P&L > 0; ``None`` without trades."""
    value = formulas.win_rate(list(trades))
    return Measure(None, "no closed trades") if value is None else Measure(value)


def profit_factor(trades: Iterable[ClosedTrade]) -> Measure:
    """Gross profit / gross loss of closed trades: ``inf`` with profits and no loss (with the reason), ``None``
    with neither."""
    found = list(trades)
    value = formulas.profit_factor(found)
    if value is None:
        return Measure(None, "no closed trades" if not found else "no profit and no loss (break-even trades only)")
    if value == math.inf:
        return Measure(math.inf, f"no losing trade in {len(found)}: the profit factor is infinite")
    return Measure(value)
