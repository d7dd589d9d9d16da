"""How a book has done: drawdown, Sharpe and Sortino ratios of its equity curve; win rate and profit factor of
its closed trades.

The one place these formulas live (monitoring grades them, a backtest reports them):

- :func:`drawdown`: the fall of equity from its running peak, as a fraction of that peak: ``current`` (the
  last point against the peak before it) and ``maximum`` (the deepest anywhere in the curve).
- :func:`period_returns`: simple returns between the last equity of consecutive days (dates in a time zone,
  the exchange's), so a curve snapshotted every few minutes gives daily returns.
- :func:`sharpe_ratio`: ``mean(r) / std(r) * sqrt(periods_per_year)`` (sample standard deviation, ``ddof=1``;
  risk-free rate 0). :func:`sortino_ratio`: ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year)``
  (downside deviation below 0 over every period). Both are ``None`` with fewer than two returns or when the
  ratio is undefined (no variation at all), and ``inf`` when nothing was lost and the mean is positive
  (Sortino).
- :func:`closed_trades`: fills replayed per symbol (the position rule is
  :func:`~airflow_provider_portfolio.trading.accounting.apply_fill`); every fill that reduces or closes a
  position closes a trade of that quantity. A trade's ``pnl`` is ``qty * (exit - entry)`` (long; reversed for a
  short) less the commissions of that quantity: its share of the closing fill's commission and of the
  commissions paid opening it (carried per unit like the average price).
- :func:`win_rate`: the share of closed trades with ``pnl > 0`` (break-even trades are not wins);
  :func:`profit_factor`: gross profit over gross loss (``inf`` with profits and no loss, ``None`` with neither).

Pure functions of plain numbers and rows; nothing here reads the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import ensure_utc
from airflow_provider_portfolio.trading.accounting import QTY_DECIMALS, apply_fill

__all__ = ["TRADING_DAYS_PER_YEAR", "ClosedTrade", "Drawdown", "closed_trades", "drawdown", "period_returns",
           "profit_factor", "sharpe_ratio", "sortino_ratio", "win_rate"]

#: Periods per year of daily returns on an equities calendar (use 365 for a 24/7 crypto book).
TRADING_DAYS_PER_YEAR = 252


class Drawdown(NamedTuple):
    """Falls of equity from its running peak, fractions of that peak (0.1 = 10 % below the peak).

    :param current: the last point's fall from the highest equity up to it.
    :param maximum: the deepest fall anywhere in the curve.
    :param peak: the highest equity of the curve.
    """

    current: float
    maximum: float
    peak: float


def _finite(values: Iterable[Any], name: str) -> list[float]:
    out = []
    for i, value in enumerate(values):
        v = float(value)
        if not math.isfinite(v):
            raise InvalidInputError(f"{name} must hold finite numbers, got {value!r} at position {i}")
        out.append(v)
    return out


def drawdown(equity: Iterable[float]) -> Drawdown | None:
    """Current and maximum drawdown of an equity curve (oldest first); ``None`` for an empty curve.

    :raises InvalidInputError: for a non-finite value, or a peak that is not positive (a drawdown is a
        fraction of a positive equity).
    """
    values = _finite(equity, "equity")
    if not values:
        return None
    peak = values[0]
    worst = current = 0.0
    for v in values:
        peak = max(peak, v)
        if peak <= 0:
            raise InvalidInputError(f"equity must be positive to measure a drawdown, got a peak of {peak!r}")
        current = (peak - v) / peak
        worst = max(worst, current)
    return Drawdown(current, worst, peak)


def downsample(values: Sequence[float], points: int) -> list[int]:
    """Indices of at most ``points`` (>= 4) of ``values`` that keep the curve's shape: the first and the last, and the
    lowest and the highest of each of ``(points - 2) // 2`` equal buckets between them, in order.

    :param values: the curve, oldest first.
    :param points: the most indices returned.
    """
    n = len(values)
    if n <= points:
        return list(range(n))
    buckets = (points - 2) // 2
    inner = n - 2
    keep = {0, n - 1}
    for b in range(buckets):
        lo, hi = 1 + b * inner // buckets, 1 + (b + 1) * inner // buckets
        if lo < hi:
            span = range(lo, hi)
            keep.add(min(span, key=values.__getitem__))
            keep.add(max(span, key=values.__getitem__))
    return sorted(keep)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(f"tz must be an IANA time zone such as 'America/New_York', got {tz!r}") from None


def period_returns(points: Iterable[tuple[datetime, float]], tz: str = "UTC") -> list[float]:
    """Simple returns between the last equity of consecutive days.

    :param points: (instant, equity) pairs, tz-aware instants, in any order.
    :param tz: the time zone whose dates split the days (the exchange's: a 20:00 New York snapshot belongs to
        that New York day, not the next UTC one).
    :return: ``equity[d] / equity[d-1] - 1`` for each day ``d`` after the first that has a point.
    :raises InvalidInputError: for a naive instant, a non-finite equity, or a day's equity that is not positive
        where a return is measured from it.
    """
    zone = _zone(tz)
    last: dict[date, tuple[datetime, float]] = {}
    for at, value in points:
        instant = ensure_utc(at, "equity instant")
        (v,) = _finite([value], "equity")
        day = instant.astimezone(zone).date()
        if day not in last or instant >= last[day][0]:
            last[day] = (instant, v)
    closes = [last[d][1] for d in sorted(last)]
    out = []
    for before, after in zip(closes, closes[1:], strict=False):
        if before <= 0:
            raise InvalidInputError(f"equity must be positive to measure a return from it, got {before!r}")
        out.append(after / before - 1.0)
    return out


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def sharpe_ratio(returns: Sequence[float], periods_per_year: float = TRADING_DAYS_PER_YEAR) -> float | None:
    """Annualised Sharpe ratio of per-period returns (risk-free rate 0, sample standard deviation).

    :return: ``None`` with fewer than two returns or when they do not vary.
    """
    r = _finite(returns, "returns")
    if len(r) < 2:
        return None
    mean = _mean(r)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in r) / (len(r) - 1))
    if std <= 1e-15 * max(1.0, abs(mean)):
        return None
    return mean / std * math.sqrt(periods_per_year)


def sortino_ratio(returns: Sequence[float], periods_per_year: float = TRADING_DAYS_PER_YEAR) -> float | None:
    """Annualised Sortino ratio of per-period returns (target 0; downside deviation over every period).

    :return: ``None`` with fewer than two returns, or with no losing period and a mean that is not positive;
        ``inf`` with no losing period and a positive mean.
    """
    r = _finite(returns, "returns")
    if len(r) < 2:
        return None
    mean = _mean(r)
    downside = math.sqrt(math.fsum(min(x, 0.0) ** 2 for x in r) / len(r))
    if downside == 0.0:
        return math.inf if mean > 0 else None
    return mean / downside * math.sqrt(periods_per_year)


@dataclass(frozen=True)
class ClosedTrade:
    """A quantity of a position closed by a fill.

    :param symbol: the symbol.
    :param direction: ``long`` or ``short`` (the position that was closed).
    :param qty: the quantity closed (> 0).
    :param entry_price: the position's average price.
    :param exit_price: the closing fill's price.
    :param pnl: ``qty * (exit - entry)`` (reversed for a short) less the commissions of this quantity.
    :param closed_at: the closing fill's ``filled_at`` (``None`` when the fill had none).
    """

    symbol: str
    direction: str
    qty: float
    entry_price: float
    exit_price: float
    pnl: float
    closed_at: datetime | None = None


def _field(fill: Any, name: str) -> Any:
    return fill[name] if isinstance(fill, Mapping) else getattr(fill, name)


def closed_trades(fills: Iterable[Any]) -> list[ClosedTrade]:
    """The trades closed by ``fills``, replayed in the order given (oldest first), from flat.

    :param fills: mappings or objects with ``symbol``, ``side`` (``buy``/``sell``), ``qty`` (> 0), ``price``,
        ``commission`` and optionally ``filled_at`` (the ledger's fill rows are ones).
    :raises InvalidInputError: for a fill that :func:`~airflow_provider_portfolio.trading.accounting.apply_fill`
        refuses (bad side, quantity, price or commission).
    """
    book: dict[str, tuple[float, float, float]] = {}  # symbol -> (signed qty, avg price, commission per unit)
    trades: list[ClosedTrade] = []
    for fill in fills:
        symbol, side = str(_field(fill, "symbol")), str(_field(fill, "side"))
        fill_qty, price = float(_field(fill, "qty")), float(_field(fill, "price"))
        commission = float(_field(fill, "commission") or 0.0)
        filled_at = fill.get("filled_at") if isinstance(fill, Mapping) else getattr(fill, "filled_at", None)
        qty, avg, per_unit = book.get(symbol, (0.0, 0.0, 0.0))
        effect = apply_fill(qty, avg, side=side, fill_qty=fill_qty, price=price, commission=commission)
        signed = fill_qty if side == "buy" else -fill_qty
        closing = qty != 0 and (qty > 0) != (signed > 0)
        closed = round(min(fill_qty, abs(qty)), QTY_DECIMALS) if closing else 0.0
        if closed:
            long = qty > 0
            gross = closed * (price - avg) * (1.0 if long else -1.0)
            costs = closed * per_unit + commission * closed / fill_qty
            trades.append(ClosedTrade(symbol, "long" if long else "short", closed, avg, price, gross - costs,
                                      None if filled_at is None else ensure_utc(filled_at, "filled_at")))
        opened = round(fill_qty - closed, QTY_DECIMALS)
        if effect.qty == 0:
            per_unit = 0.0
        elif opened and (not closing or closed < fill_qty):  # added to a position, or flipped through zero
            kept = 0.0 if closing else abs(qty) * per_unit
            per_unit = (kept + commission * opened / fill_qty) / abs(effect.qty)
        book[symbol] = (effect.qty, effect.avg_price, per_unit)
    return trades


def win_rate(trades: Iterable[ClosedTrade]) -> float | None:
    """The share of trades with a positive ``pnl``; ``None`` without trades."""
    pnls = [t.pnl for t in trades]
    return sum(1 for p in pnls if p > 0) / len(pnls) if pnls else None


def profit_factor(trades: Iterable[ClosedTrade]) -> float | None:
    """Gross profit over gross loss; ``inf`` with profits and no loss, ``None`` with neither."""
    pnls = [t.pnl for t in trades]
    won = math.fsum(p for p in pnls if p > 0)
    lost = -math.fsum(p for p in pnls if p < 0)
    if lost == 0.0:
        return math.inf if won > 0 else None
    return won / lost
