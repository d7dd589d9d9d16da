"""AlpacaBroker: the Broker protocol over Alpaca's API, a :class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI`.

The API object is whatever implements the protocol: in a DAG, the Alpaca hook the operator resolves from its
connection; in a test or a notebook, anything with the same members. This module imports no adapter.

Submission is :func:`~airflow_provider_portfolio.trading.submission.submit_at_most_once` (look the id up, POST
once without SDK retries, look it up again on any ambiguous answer): one order per client order id whatever
fails. A refusal (insufficient buying power, pattern-day-trading protection, an untradable asset: HTTP 403/422)
is a :class:`BrokerRejectedError`, recorded and never re-sent; an answer that leaves the order's fate unknown is
an :class:`OrderStateUnknownError`, and only a retry with the same id (which looks it up first) settles it.
Open orders in the ledger are reconciled from Alpaca at the start of the next cycle.

Paper is the default. A live account needs the operator's ``allow_live`` (the hook's ``allow_live``); the API
refuses to post otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import UnknownSymbolError, VendorError
from airflow_provider_portfolio.market.params import is_crypto
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE
from airflow_provider_portfolio.trading.brokers import (
    AccountSnapshot,
    AssetInfo,
    OrderRequest,
    OrderState,
    OrderStateUnknownError,
)
from airflow_provider_portfolio.trading.submission import order_state, submit_at_most_once

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers.api import BrokerAPI

log = logging.getLogger(__name__)

#: How long after an order was settled as never placed the sync still asks Alpaca for it.
LATE_ARRIVAL_WINDOW = timedelta(days=1)


def _number(value: Any, default: float | None = None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _money(account: dict[str, Any], field: str, conn_id: str) -> float:
    """The account's ``field`` (``equity``, ``cash``, ``buying_power``) as a finite float.

    :raises VendorError: when Alpaca left it out or sent no number: a cycle must not size orders on a guess.
    """
    number = _number(account.get(field))
    if number is None:
        raise VendorError(f"Alpaca answered the account without a usable {field} ({account.get(field)!r}): "
                          "nothing can be sized or risk-checked without it", conn_id=conn_id)
    return number


#: Quote currencies of Alpaca's crypto pairs, longest first (``BTCUSDT`` is BTC/USDT, not BTCUSD/T).
CRYPTO_QUOTES: tuple[str, ...] = ("USDT", "USDC", "USD", "BTC")


def position_symbol(position: Mapping[str, Any]) -> str:
    """The desk's symbol of an Alpaca position: Alpaca writes crypto positions without the slash (``BTCUSD``) while
    its orders, bars and this provider write pairs (``BTC/USD``); a crypto position is put back into pair form so the
    trader, the rebalancer and the audit find it under the symbol they trade."""
    symbol = str(position["symbol"])
    if str(position.get("asset_class") or "").lower() != "crypto" or "/" in symbol:
        return symbol
    for quote in CRYPTO_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[:-len(quote)]}/{quote}"
    return symbol


class AlpacaBroker:
    """Alpaca through its API (see the module docstring).

    :param api: Alpaca's API, a :class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI` (the Alpaca
        hook, whose ``allow_live`` decides whether a live account may trade); its ``name`` names the account.
    :param ledger: the store's trading ledger, which records the orders sent.
    """

    kind = "alpaca"

    def __init__(self, api: BrokerAPI, ledger: TradingLedger) -> None:
        self.api = api
        self.ledger = ledger
        self.account = f"alpaca:{api.name}"
        ledger.open_account(self.account, None)

    @property
    def hook(self) -> BrokerAPI:
        """The earlier name of :attr:`api`."""
        return self.api

    def __repr__(self) -> str:
        return f"AlpacaBroker({self.account!r}, {'LIVE' if self.api.is_live else 'paper'})"

    def sync(self, bars: pd.DataFrame, *, closed: pd.DataFrame | None = None,
             skip_run: tuple[str, str] | None = None, exchange: str = DEFAULT_EXCHANGE) -> list[OrderState]:
        """Reconcile the ledger's open orders that reached Alpaca (by client order id).

        Orders still ``pending_submit`` (recorded, maybe never sent) are the cycle's to settle, under the
        account's lock (:func:`~airflow_provider_portfolio.trading.cycle.settle_unsent`). Orders settled as
        ``not_placed`` in the last :data:`LATE_ARRIVAL_WINDOW` are asked for again: the request of a worker
        killed while sending may reach Alpaca after the look-up that found nothing, and an order Alpaca holds
        must count. A failed look-up leaves the order as it is, for the next cycle.
        """
        changed = []
        recent = datetime.now(timezone.utc) - LATE_ARRIVAL_WINDOW
        orders = self.ledger.orders(self.account, open_only=True) + self.ledger.settled_unplaced(self.account, recent)
        for order in orders:
            if order["status"] == "pending_submit":
                continue
            cid = order["client_order_id"]
            try:
                found = self.api.get_order_by_client_order_id(cid)
            except VendorError as err:
                log.warning("%s: could not reconcile order %s (%s); trying again next cycle", self.account, cid, err)
                continue
            if found is None:
                if order["status"] != "not_placed":
                    log.warning("%s: Alpaca no longer answers order %s (%s); left as it is", self.account, cid,
                                order["status"])
                continue
            state = order_state(found)
            if order["status"] == "not_placed":
                log.error("%s: order %s, settled as never placed, is at Alpaca after all (%s): recorded; it counts "
                          "from now on", self.account, cid, state.status)
            if (state.status, state.filled_qty, state.filled_avg_price) != (
                    order["status"], order["filled_qty"], order["filled_avg_price"]):
                self.ledger.update_order(self.account, cid, status=state.status, broker_order_id=state.broker_order_id,
                                         filled_qty=state.filled_qty, filled_avg_price=state.filled_avg_price)
                changed.append(state)
        return changed

    def account_state(self) -> AccountSnapshot:
        account = self.api.get_account()
        positions: dict[str, float] = {}
        for p in self.api.get_positions():
            qty = _number(p.get("qty"), 0.0) or 0.0
            if str(p.get("side") or "").lower() == "short" and qty > 0:
                qty = -qty
            positions[position_symbol(p)] = qty
        return AccountSnapshot(
            equity=_money(account, "equity", self.api.name),
            cash=_money(account, "cash", self.api.name),
            buying_power=_money(account, "buying_power", self.api.name),
            start_of_day_equity=_number(account.get("last_equity")),
            positions=positions,
        )

    def assets(self, symbols: Sequence[str]) -> dict[str, AssetInfo]:
        out = {}
        for symbol in symbols:
            try:
                asset = self.api.get_asset(symbol)
            except UnknownSymbolError:
                out[symbol] = AssetInfo(False, False, False, f"Alpaca does not know {symbol}")
                continue
            except VendorError as err:
                out[symbol] = AssetInfo(False, False, False, f"could not read the asset {symbol}: {err}")
                continue
            tradable = asset.get("tradable") is True and str(asset.get("status") or "active").lower() == "active"
            out[symbol] = AssetInfo(
                tradable=tradable,
                shortable=asset.get("shortable") is True and asset.get("easy_to_borrow") is not False,
                fractionable=asset.get("fractionable") is True,
                reason=None if tradable else f"{symbol} is not tradable at Alpaca (status {asset.get('status')!r})",
            )
        return out

    def submit(self, request: OrderRequest) -> OrderState:
        """Send ``request`` at most once per its id (:func:`~airflow_provider_portfolio.trading.submission.submit_at_most_once`):
        a market order, ``gtc`` for crypto pairs and ``day`` for equities."""
        return submit_at_most_once(self.api, request, order_type="market",
                                   time_in_force="gtc" if is_crypto(request.symbol) else "day")

    def lookup(self, client_order_id: str) -> OrderState | None:
        try:
            found = self.api.get_order_by_client_order_id(client_order_id)
        except VendorError as err:
            raise OrderStateUnknownError(f"could not look order {client_order_id} up: {err}") from None
        return None if found is None else order_state(found)

    def snapshot(self, ts: datetime, run_id: str) -> dict[str, Any]:
        account = self.api.get_account()
        cash, equity = _number(account.get("cash")), _number(account.get("equity"))
        if cash is None or equity is None:
            raise VendorError(f"Alpaca answered the account without cash or equity: {sorted(account)}",
                              conn_id=self.api.name)
        return self.ledger.snapshot(self.account, ts, run_id, cash=cash, equity=equity)
