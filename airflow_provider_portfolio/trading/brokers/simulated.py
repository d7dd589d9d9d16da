"""SimulatedBroker: a paper book kept in the portfolio store.

Orders are accepted at once and fill whole at the open of the first bar that comes after the bar they were
decided on and starts no earlier than the order was placed. A bar starts when its session opens, not at its
timestamp (a daily bar is stamped at midnight UTC, its open exists at 09:30 New York): a daily decision at
15:00 on yesterday's bar fills at tomorrow's open, never at this morning's; an order placed before the open
fills at that day's open; an intraday order fills at the open of the bar that starts as it is placed or after, at ``open * (1 + slippage)`` for buys and ``open * (1 - slippage)`` for sells,
with a commission of ``commission_per_order + commission_bps * notional / 10,000``. Fills happen when a
later cycle sees that bar (:meth:`SimulatedBroker.sync`), so nothing fills on a price the trader could not
have known. Cash, positions and the equity curve live in the ledger; the accounting is
:mod:`~airflow_provider_portfolio.trading.accounting`'s: fills move positions and cash by
:func:`~airflow_provider_portfolio.trading.accounting.apply_fill`, and equity is cash plus the positions valued at
their last marks (:func:`~airflow_provider_portfolio.trading.accounting.value_book`). A client order id names one order forever, as at a real broker. The book is a
cash account: a buy beyond buying power is refused when submitted, and canceled at its fill when its cost
there exceeds the cash.

Assets: every symbol is tradable unless listed in ``untradable``; equities are shortable and trade in
whole shares, crypto pairs trade in fractions and are not shortable. Buying
power is cash less the notional of open buy orders (no margin).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.params import is_crypto
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE
from airflow_provider_portfolio.trading.accounting import apply_fill, value_book
from airflow_provider_portfolio.trading.brokers import (
    AccountSnapshot,
    AssetInfo,
    BrokerRejectedError,
    OrderRequest,
    OrderState,
)

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.store.ledger import TradingLedger

log = logging.getLogger(__name__)

DEFAULT_INITIAL_CASH = 100_000.0


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class SimulatedBroker:
    """The simulated broker (see the module docstring).

    :param ledger: the store's trading ledger.
    :param name: the book's name; its ledger account is ``simulated:<name>``.
    :param initial_cash: cash of a new book (ignored once the book exists).
    :param slippage_bps: adverse slippage of fills, basis points of the open.
    :param commission_bps: commission, basis points of the fill's notional.
    :param commission_per_order: fixed commission per fill.
    :param untradable: symbols the broker refuses.
    """

    kind = "simulated"

    def __init__(self, ledger: TradingLedger, *, name: str = "default", initial_cash: float = DEFAULT_INITIAL_CASH,
                 slippage_bps: float = 5.0, commission_bps: float = 0.0, commission_per_order: float = 0.0,
                 untradable: Iterable[str] = ()) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"name must be a non-empty string, got {name!r}")
        self.ledger = ledger
        self.account = f"simulated:{name.strip()}"
        self.initial_cash = initial_cash
        self.slippage_bps = _non_negative(slippage_bps, "slippage_bps")
        self.commission_bps = _non_negative(commission_bps, "commission_bps")
        self.commission_per_order = _non_negative(commission_per_order, "commission_per_order")
        self.untradable = {s.upper() for s in untradable}
        ledger.open_account(self.account, initial_cash)

    def __repr__(self) -> str:
        return f"SimulatedBroker({self.account!r}, {self.ledger.store.url!r})"

    def commission(self, notional: float) -> float:
        """The commission of a fill of ``notional``."""
        return self.commission_per_order + self.commission_bps * abs(notional) / 10_000.0

    def sync(self, bars: pd.DataFrame, *, closed: pd.DataFrame | None = None,
             skip_run: tuple[str, str] | None = None, exchange: str = DEFAULT_EXCHANGE) -> list[OrderState]:
        """Fill open orders at the open of their fill bar in ``bars`` (see the module docstring); mark positions
        at the last closes of ``closed`` (default ``bars``).

        A buy whose cost (at the fill price, with commission) exceeds the book's cash is canceled with the reason,
        as a cash account refuses it: no margin.
        """
        import numpy as np

        from airflow_provider_portfolio.market.calendar import bar_times

        changed: list[OrderState] = []
        if bars.empty:
            return changed
        # pending_submit orders never reached the book: the cycle settles them
        orders = [o for o in self.ledger.orders(self.account, open_only=True) if o["status"] != "pending_submit"]
        wanted = bars[bars["symbol"].isin({o["symbol"] for o in orders})]
        starts, _ = bar_times(wanted, exchange)
        wanted = wanted.assign(_start=starts)
        by_symbol = {s: g for s, g in wanted.groupby("symbol", sort=False)}
        for order in orders:
            group = by_symbol.get(order["symbol"])
            if group is None:
                continue
            ts = group["ts"].to_numpy(dtype="datetime64[ns]")
            bar = np.datetime64(order["bar_ts"].replace(tzinfo=None), "ns")
            placed = np.datetime64(order["created_at"].replace(tzinfo=None), "ns").astype(np.int64)
            # a bar after the decision's that started (its session open, not its timestamp) no earlier than the
            # order: never a price from before the order
            later = np.flatnonzero((ts > bar) & (group["_start"].to_numpy() >= placed))
            if not later.size:
                continue
            row = group.iloc[int(later[0])]
            open_ = float(row["open"])
            slip = self.slippage_bps / 10_000.0
            price = open_ * (1 + slip) if order["side"] == "buy" else open_ * (1 - slip)
            commission = self.commission(price * float(order["qty"]))
            if order["side"] == "buy":
                cash, _ = self.ledger.cash(self.account)
                cost = price * float(order["qty"]) + commission
                if cost > cash:
                    why = (f"insufficient buying power at the fill: {order['qty']:g} x {price:.4f} + commission "
                           f"{commission:.2f} = {cost:,.2f} > cash {cash:,.2f}")
                    self.ledger.update_order(self.account, order["client_order_id"], status="canceled", reason=why)
                    log.warning("simulated broker: order %s canceled: %s", order["client_order_id"], why)
                    changed.append(OrderState(order["client_order_id"], "canceled", order["broker_order_id"], 0.0,
                                              None, why))
                    continue
            result = self.ledger.fill(self.account, order["client_order_id"], price=price, commission=commission,
                                      bar_ts=row["ts"], rule=apply_fill)
            if result is not None:
                log.info("simulated fill: %s %s %g at %.4f (commission %.2f), cash %.2f", result.side, result.symbol,
                         result.qty, result.price, result.commission, result.cash_after)
                changed.append(OrderState(result.client_order_id, "filled", order["broker_order_id"], result.qty,
                                          result.price))
        marks = bars if closed is None else closed
        if marks.empty:
            return changed
        last = marks.sort_values(["symbol", "ts"]).groupby("symbol", sort=False).tail(1)
        self.ledger.mark(self.account, {r.symbol: (float(r.close), r.ts) for r in last.itertuples(index=False)})
        return changed

    def account_state(self) -> AccountSnapshot:
        book = self.ledger.book(self.account)
        worth = value_book(book.cash, book.positions.values())
        reserved = self.ledger.reserved_cash(self.account)
        return AccountSnapshot(equity=worth.equity, cash=worth.cash, buying_power=max(worth.cash - reserved, 0.0),
                               start_of_day_equity=None,
                               positions={s: p.qty for s, p in book.positions.items() if p.qty})

    def assets(self, symbols: Sequence[str]) -> dict[str, AssetInfo]:
        out = {}
        for symbol in symbols:
            crypto = is_crypto(symbol)
            if symbol.upper() in self.untradable:
                out[symbol] = AssetInfo(False, False, False, f"{symbol} is not tradable at the simulated broker")
            else:
                out[symbol] = AssetInfo(True, not crypto, crypto)
        return out

    def submit(self, request: OrderRequest) -> OrderState:
        """Accept the order recorded under ``request.client_order_id`` (at most once); it fills on the next bar."""
        stored = self.ledger.order(self.account, request.client_order_id)
        if stored is None:
            raise InvalidInputError(f"order {request.client_order_id} was not recorded before submission")
        if (stored["symbol"], stored["side"]) != (request.symbol, request.side):
            raise BrokerRejectedError(f"client_order_id {request.client_order_id} already names another order "
                                      f"({stored['side']} {stored['symbol']})")
        if request.symbol.upper() in self.untradable:
            raise BrokerRejectedError(f"{request.symbol} is not tradable at the simulated broker")
        if stored["status"] == "pending_submit" and request.side == "buy":
            cash, _ = self.ledger.cash(self.account)
            power = cash - self.ledger.reserved_cash(self.account, exclude=request.client_order_id)
            notional = request.qty * request.ref_price
            if notional > power:
                raise BrokerRejectedError(f"insufficient buying power: {request.qty:g} {request.symbol} x "
                                          f"{request.ref_price:.4f} = {notional:,.2f} > buying power {power:,.2f}")
        order = self.ledger.accept(self.account, request.client_order_id, f"sim-{request.client_order_id}")
        return OrderState(order["client_order_id"], order["status"], order["broker_order_id"], order["filled_qty"],
                          order["filled_avg_price"], order["reason"])

    def lookup(self, client_order_id: str) -> OrderState | None:
        """The book's order (``None`` while it is only recorded, ``pending_submit``: the book never got it)."""
        order = self.ledger.order(self.account, client_order_id)
        if order is None or order["status"] == "pending_submit":
            return None
        return OrderState(order["client_order_id"], order["status"], order["broker_order_id"], order["filled_qty"],
                          order["filled_avg_price"], order["reason"])

    def snapshot(self, ts: datetime, run_id: str) -> dict[str, Any]:
        """Write the book's equity at ``ts``: cash and the positions at their marks, as read in one transaction."""
        book = self.ledger.book(self.account)
        worth = value_book(book.cash, book.positions.values())
        return self.ledger.snapshot(self.account, ts, run_id, cash=worth.cash, equity=worth.equity,
                                    positions_value=worth.positions_value)
