"""Accounting of a book: what a fill does to a position and the cash, and what the book is worth.

The one place these formulas live (the ledger in the store only keeps and reads rows):

- :func:`apply_fill`: a fill applied to a position: its new signed quantity and average price, and the cash
  it moves. Opening or adding to a position averages the prices of the open quantity; reducing it keeps
  the average of what is left; closing it leaves nothing; flipping through zero opens the rest at the fill's
  price. Quantities are decimal (whole shares, crypto in 1e-6 steps) and kept to :data:`QTY_DECIMALS`, so a
  position built by several fills closes exactly when sold whole.
- :func:`equity`: cash plus the sum of quantity times price. :func:`value_book` values a book's positions at
  their marks (else their average price) with it; :func:`book_at` values the book as it stood at an earlier
  instant (the fills of bars stamped at or after it undone), for the daily loss limit.

Pure functions of plain numbers and rows; :func:`equity_at` only reads the ledger for :func:`book_at`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

from airflow_provider_portfolio.exceptions import InvalidInputError

if TYPE_CHECKING:
    from airflow_provider_portfolio.store.ledger import TradingLedger

__all__ = ["QTY_DECIMALS", "FillEffect", "Valuation", "apply_fill", "book_at", "equity", "equity_at",
           "valuation_price", "value_book"]

#: Decimals positions are kept to (Alpaca trades fractional shares to 9 decimals; crypto steps are 1e-6).
QTY_DECIMALS = 9
_SIDES = ("buy", "sell")


class PositionLike(Protocol):
    """A stored position: signed ``qty``, ``avg_price`` of the open quantity, last ``mark_price`` (or ``None``)."""

    @property
    def qty(self) -> float: ...

    @property
    def avg_price(self) -> float: ...

    @property
    def mark_price(self) -> float | None: ...


class FillLike(Protocol):
    """A stored fill: ``symbol``, ``side`` (``buy``/``sell``), ``qty`` (> 0), ``price``, ``commission``."""

    @property
    def symbol(self) -> str: ...

    @property
    def side(self) -> str: ...

    @property
    def qty(self) -> float: ...

    @property
    def price(self) -> float: ...

    @property
    def commission(self) -> float: ...


class FillEffect(NamedTuple):
    """What a fill does: the position's new signed ``qty`` and ``avg_price``, and the ``cash_change``."""

    qty: float
    avg_price: float
    cash_change: float


@dataclass(frozen=True)
class Valuation:
    """A book's worth: ``cash + positions_value == equity`` (computed in that order)."""

    cash: float
    positions_value: float
    equity: float


def _signed(side: str, qty: float) -> float:
    if side not in _SIDES:
        raise InvalidInputError(f"side must be 'buy' or 'sell', got {side!r}")
    return qty if side == "buy" else -qty


def apply_fill(qty: float, avg_price: float, *, side: str, fill_qty: float, price: float,
               commission: float = 0.0) -> FillEffect:
    """Apply a fill to a position.

    :param qty: the position's signed quantity before the fill (negative: short).
    :param avg_price: the average price of its open quantity (anything when ``qty`` is 0).
    :param side: ``buy`` or ``sell``.
    :param fill_qty: the quantity filled (> 0).
    :param price: the fill price (> 0).
    :param commission: the fill's commission (>= 0).
    :return: the new quantity (rounded to :data:`QTY_DECIMALS`), its average price (0 when flat) and the cash the
        fill moves (``-signed quantity x price - commission``).
    :raises InvalidInputError: for a side other than buy/sell, or a quantity, price or commission that is not a
        finite number in range.
    """
    for name, value, low in (("fill_qty", fill_qty, 0.0), ("price", price, 0.0)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > low):
            raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
    if not (isinstance(commission, int | float) and math.isfinite(commission) and commission >= 0):
        raise InvalidInputError(f"commission must be a finite number >= 0, got {commission!r}")
    signed = _signed(side, float(fill_qty))
    cash_change = -signed * price - commission
    new_qty = round(qty + signed, QTY_DECIMALS)
    if abs(new_qty) < 10.0 ** -QTY_DECIMALS:
        return FillEffect(0.0, 0.0, cash_change)  # closed
    if qty == 0 or (qty > 0) != (new_qty > 0):
        return FillEffect(new_qty, float(price), cash_change)  # opened, or flipped: the open quantity is all at price
    if abs(new_qty) > abs(qty):
        return FillEffect(new_qty, (abs(qty) * avg_price + fill_qty * price) / abs(new_qty), cash_change)  # added
    return FillEffect(new_qty, avg_price, cash_change)  # reduced: what is left keeps its price


def equity(cash: float, holdings: Iterable[tuple[float, float]]) -> float:
    """Cash plus the sum of quantity times price.

    :param cash: the book's cash.
    :param holdings: (signed quantity, price) per position.
    """
    return float(cash) + _value(holdings)


def _value(holdings: Iterable[tuple[float, float]]) -> float:
    return float(sum(q * p for q, p in holdings))


def valuation_price(position: PositionLike) -> float:
    """The price a position is valued at: its last mark, else its average price."""
    return float(position.mark_price if position.mark_price is not None else position.avg_price)


def value_book(cash: float, positions: Iterable[PositionLike]) -> Valuation:
    """A book valued now: each open position at :func:`valuation_price`, equity by :func:`equity`.

    :param cash: the book's cash.
    :param positions: its positions (flat ones count nothing).
    """
    holdings = [(float(p.qty), valuation_price(p)) for p in positions if p.qty]
    return Valuation(float(cash), _value(holdings), equity(cash, holdings))


def book_at(cash: float, positions: Mapping[str, PositionLike], later_fills: Iterable[FillLike],
            prices: Mapping[str, float]) -> float:
    """A book's equity as it stood at an earlier instant: today's cash and positions with ``later_fills`` (the
    fills of bars stamped at or after that instant) undone, each position valued at ``prices[symbol]`` (its price
    at the instant), else at its mark, else at its average price.

    :param cash: the book's cash now.
    :param positions: symbol -> stored position now (flat ones included: they may have been held then).
    :param later_fills: the fills to undo.
    :param prices: symbol -> price at the instant; missing, non-finite or non-positive prices are ignored.
    """
    cash = float(cash)
    qty = {s: float(p.qty) for s, p in positions.items()}
    for fill in later_fills:
        signed = _signed(fill.side, float(fill.qty))
        cash += signed * float(fill.price) + float(fill.commission)
        qty[fill.symbol] = qty.get(fill.symbol, 0.0) - signed
    holdings = []
    for symbol, q in qty.items():
        q = round(q, QTY_DECIMALS)
        if not q:
            continue
        price: float | None = prices.get(symbol)
        if price is None or not math.isfinite(price) or price <= 0:
            held = positions.get(symbol)
            price = None if held is None else valuation_price(held)
        holdings.append((q, float(price if price is not None else 0.0)))
    return equity(cash, holdings)


def equity_at(ledger: TradingLedger, account: str, instant: datetime, prices: Mapping[str, float]) -> float:
    """A simulated book's equity as it stood at ``instant`` (the previous session's close, for the daily loss
    limit): :func:`book_at` on the ledger's book and the fills of bars stamped at or after ``instant``, read in
    one transaction.

    :param ledger: the trading ledger.
    :param account: the simulated account.
    :param instant: the instant (tz-aware).
    :param prices: symbol -> price at ``instant`` (the close of its last bar ended by then).
    :raises StoreError: when the account has no simulated book.
    """
    book = ledger.book(account, fills_from=instant)
    return book_at(book.cash, book.positions, book.fills, prices)


# The store never imports the trading domain: the ledger's ``fill`` applies the rule it is given, and this one
# when given none.
