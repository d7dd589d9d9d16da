"""Brokers: one protocol, a simulated broker with its book in the store, and Alpaca.

A trading cycle talks to a :class:`Broker` only. Each broker keeps the rule that makes orders
exactly-once: a client order id names at most one order, forever (Alpaca refuses a second one with HTTP
422; the simulated broker's ``orders`` key does the same), and :meth:`Broker.submit` asks for the id
before it sends anything.

A broker reached over the network does so through a :class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI`
(the broker's REST API, implemented by an adapter such as the Alpaca hook) and
:func:`~airflow_provider_portfolio.trading.submission.submit_at_most_once`, the one function that owns "submit
at most once".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from airflow_provider_portfolio.exceptions import PortfolioError
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE
from airflow_provider_portfolio.trading.brokers.api import BrokerAPI

__all__ = [
    "AccountSnapshot",
    "AssetInfo",
    "Broker",
    "BrokerAPI",
    "BrokerRejectedError",
    "OrderRequest",
    "OrderState",
    "OrderStateUnknownError",
]

if TYPE_CHECKING:
    import pandas as pd


class BrokerRejectedError(PortfolioError):
    """The broker refused the order for good (insufficient buying power, pattern-day-trading protection, an
    untradable asset...). The order is recorded as ``rejected`` with this reason and never re-sent."""


class OrderStateUnknownError(PortfolioError):
    """The broker may or may not have the order (a timeout, a 5xx, a failed look-up). The order stays
    ``pending_submit``; only a retry with the same client order id, which looks it up first, settles it."""


@dataclass(frozen=True)
class OrderRequest:
    """An approved order to send.

    :param client_order_id: the decision's id (``trading.orders.client_order_id``).
    :param symbol: ticker or crypto pair.
    :param side: ``buy`` or ``sell``.
    :param qty: quantity (> 0).
    :param ref_price: the decision's price (last close).
    :param bar_ts: the bar decided on.
    """

    client_order_id: str
    symbol: str
    side: str
    qty: float
    ref_price: float
    bar_ts: datetime


@dataclass(frozen=True)
class OrderState:
    """The broker's view of an order."""

    client_order_id: str
    status: str
    broker_order_id: str | None = None
    filled_qty: float | None = None
    filled_avg_price: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AssetInfo:
    """Whether a symbol can be traded, shorted and bought in fractions; ``reason`` says why not."""

    tradable: bool
    shortable: bool
    fractionable: bool
    reason: str | None = None


@dataclass(frozen=True)
class AccountSnapshot:
    """The account at the start of a cycle.

    :param start_of_day_equity: the broker's equity at the previous session's close, when it knows (Alpaca's
        ``last_equity``); ``None`` lets the cycle value the book at that close.
    :param positions: symbol -> signed quantity (open positions only).
    """

    equity: float
    cash: float
    buying_power: float
    start_of_day_equity: float | None
    positions: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Broker(Protocol):
    """What a trading cycle needs of a broker.

    ``account`` names the ledger account of the broker's orders (``simulated:<name>``, ``alpaca:<conn_id>``).
    """

    account: str
    kind: str

    def sync(self, bars: pd.DataFrame, *, closed: pd.DataFrame | None = None,
             skip_run: tuple[str, str] | None = None, exchange: str = DEFAULT_EXCHANGE) -> list[OrderState]:
        """Bring the ledger's orders that reached the broker up to date (fills, cancels) and mark positions;
        return what changed. Orders still ``pending_submit`` are left to the cycle, which settles them under the
        account's lock.

        :param bars: the cycle's bars that have started by its instant (their opens are known).
        :param closed: those of them that have closed (their closes are known); default ``bars``.
        :param skip_run: the current run, (dag_id, run_id) (run ids alone repeat across DAGs).
        :param exchange: the calendar of equities (when a bar starts: its session's open).
        """

    def account_state(self) -> AccountSnapshot:
        """Equity, cash, buying power and positions now."""

    def assets(self, symbols: Sequence[str]) -> dict[str, AssetInfo]:
        """Tradability of each symbol."""

    def submit(self, request: OrderRequest) -> OrderState:
        """Send ``request`` at most once per client order id; return the broker's order.

        :raises BrokerRejectedError: a definitive refusal.
        :raises OrderStateUnknownError: the order's fate is unknown; retry with the same id.
        """

    def lookup(self, client_order_id: str) -> OrderState | None:
        """The broker's order under ``client_order_id``, or ``None`` when it has none (a read, never a send).

        :raises OrderStateUnknownError: when the broker cannot be asked.
        """

    def snapshot(self, ts: datetime, run_id: str) -> dict[str, Any]:
        """Write the performance snapshot (cash, positions value, equity) at ``ts``; return it."""
