"""Submit an order at most once per client order id, over a :class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI`.

The one place that owns the rule (see the design's invariants): whatever fails (an Airflow task retry, a
timeout, a 5xx, a crash between sending and recording), an order id reaches the broker in at most one POST
per attempt, and on any doubt the broker is asked for the id before anything else:

1. ``lookup_first`` (default): the id is looked up; an order already there (an earlier try placed it) is
   returned and nothing is sent.
2. The order is posted once (:meth:`BrokerAPI.post_order`: one request, no SDK retry).
3. When the answer leaves the order's fate in doubt (a timeout, a connection error, HTTP 5xx, 408 or 429, an
   answer that could not be read, a refusal of the id as already used, or any unexpected exception), the id
   is looked up before anything else: found -> that order is returned (never a second POST); not found ->
   :class:`OrderNotPlacedError`; the look-up failing too -> :class:`OrderOutcomeUnknownError`. Both are
   :class:`~airflow_provider_portfolio.trading.brokers.OrderStateUnknownError`: the order stays
   ``pending_submit`` and is never re-sent in this attempt. "Not found right after" is what the broker says,
   not proof: a request still in flight may land after the look-up, so only a later look-up (the next cycle's
   :func:`~airflow_provider_portfolio.trading.cycle.settle_unsent`, or a retry with the same id, which looks it
   up first) settles it.
4. A definitive refusal (insufficient buying power, an untradable asset, a refused key) is raised at once.

:func:`place_order` works on the broker's order dicts and raises the vendor errors of refusals as they are
(the Alpaca hook's ``submit_order`` is a thin wrapper over it); :func:`submit_at_most_once` is the trading
cycle's form: an :class:`~airflow_provider_portfolio.trading.brokers.OrderRequest` in, an
:class:`~airflow_provider_portfolio.trading.brokers.OrderState` out, refusals as
:class:`~airflow_provider_portfolio.trading.brokers.BrokerRejectedError`. Plain Python: never imports Airflow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from airflow_provider_portfolio.exceptions import (
    InvalidInputError,
    RateLimitError,
    VendorError,
    VendorUnavailableError,
)
from airflow_provider_portfolio.trading.brokers import (
    BrokerRejectedError,
    OrderRequest,
    OrderState,
    OrderStateUnknownError,
)
from airflow_provider_portfolio.trading.brokers.api import BrokerAPI

log = logging.getLogger(__name__)


class OrderOutcomeUnknownError(OrderStateUnknownError):
    """The POST failed ambiguously and looking the id up failed too: the broker may or may not hold the order.

    :param cause: the POST's error.
    :param lookup: the look-up's error.
    """

    def __init__(self, message: str, *, cause: BaseException, lookup: BaseException) -> None:
        super().__init__(message)
        self.cause = cause
        self.lookup = lookup


class OrderNotPlacedError(OrderStateUnknownError):
    """The POST failed ambiguously and the broker, asked right after, has no order under the id.

    As far as the broker says, the order was NOT placed and a retry with the same id is safe; it still counts
    as unknown until a later look-up agrees (a request in flight may land after the look-up).

    :param cause: the POST's error.
    """

    def __init__(self, message: str, *, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


class DuplicateClientOrderIdError(BrokerRejectedError):
    """The broker refused the client order id as already used, yet has no order under it (ids stay taken after
    a cancel, at Alpaca). Nothing was placed; a new id is needed, chosen after checking the account.

    :param cause: the broker's refusal.
    """

    def __init__(self, message: str, *, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


def place_order(api: BrokerAPI, order: Mapping[str, Any], *, lookup_first: bool = True) -> dict[str, Any]:
    """Place ``order`` at most once per its ``client_order_id`` (see the module); return the broker's order.

    :param api: the broker's API.
    :param order: the fields to post (:data:`~airflow_provider_portfolio.trading.brokers.api.ORDER_FIELDS`).
    :param lookup_first: look the id up before sending (leave it on: only a caller that just looked it up
        itself may skip it).
    :raises InvalidInputError: bad fields (raised by ``post_order`` before any request), or an order already
        under the id that is not this one (another symbol or side).
    :raises VendorError: a refusal of the order, as the API raised it; or the first look-up's failure (nothing
        was sent).
    :raises OrderNotPlacedError: the POST failed ambiguously and the broker has no order under the id.
    :raises OrderOutcomeUnknownError: the POST failed ambiguously and the look-up failed too.
    :raises DuplicateClientOrderIdError: the broker refused the id as used and has no order under it.
    """
    cid = str(order.get("client_order_id") or "")
    if not cid:
        raise InvalidInputError("an order needs its client_order_id (derived from the decision) to be sent at most once")
    summary = describe(order)
    if lookup_first:
        existing = api.get_order_by_client_order_id(cid)
        if existing is not None:
            check_same_order(existing, order)
            log.info("%s: order %s (%s) already exists at the broker (id %s, status %s): not sending it again",
                     api.name, cid, summary, existing.get("id"), existing.get("status"))
            return existing
    log.info("%s: submitting %s order %s: %s", api.name, "LIVE" if api.is_live else "paper", cid, summary)
    try:
        return api.post_order(order)
    except InvalidInputError:
        raise  # checked before any request: nothing was sent
    except VendorError as err:
        if not is_ambiguous(err):
            raise
        first: BaseException = err
    except Exception as err:  # anything unexpected after the request may have left: ask, never re-send
        first = err
    return _reconcile(api, order, cid, summary, first)


def submit_at_most_once(api: BrokerAPI, request: OrderRequest, *, order_type: str = "market",
                        time_in_force: str = "day", lookup_first: bool = True) -> OrderState:
    """Send an approved order at most once per its client order id; return the broker's view of it.

    :param api: the broker's API.
    :param request: the order (its ``client_order_id`` derived from the decision).
    :param order_type: ``market`` (the cycle's orders).
    :param time_in_force: ``day`` for equities, ``gtc`` for crypto at Alpaca.
    :param lookup_first: look the id up before sending.
    :raises BrokerRejectedError: a definitive refusal (HTTP 4xx but 408 and 429, bad fields, an id naming
        another order or refused as already used): recorded and never re-sent.
    :raises OrderStateUnknownError: the order's fate is unknown (:class:`OrderNotPlacedError` and
        :class:`OrderOutcomeUnknownError` included); only a later look-up of the same id settles it.
    """
    order = {"symbol": request.symbol, "side": request.side, "qty": request.qty, "type": order_type,
             "time_in_force": time_in_force, "client_order_id": request.client_order_id}
    try:
        placed = place_order(api, order, lookup_first=lookup_first)
    except OrderStateUnknownError:
        raise
    except BrokerRejectedError:
        raise
    except InvalidInputError as err:
        raise BrokerRejectedError(str(err)) from None
    except VendorError as err:
        if err.status_code is not None and 400 <= err.status_code < 500 and err.status_code not in (408, 429):
            raise BrokerRejectedError(str(err)) from None
        raise OrderStateUnknownError(str(err)) from None
    return order_state(placed)


def order_state(order: Mapping[str, Any]) -> OrderState:
    """The :class:`OrderState` of a broker's order dict (``id``, ``client_order_id``, ``status``, fills)."""
    return OrderState(
        client_order_id=str(order["client_order_id"]),
        status=str(order.get("status") or "unknown").lower(),
        broker_order_id=str(order["id"]) if order.get("id") is not None else None,
        filled_qty=_number(order.get("filled_qty")),
        filled_avg_price=_number(order.get("filled_avg_price")),
    )


def is_ambiguous(err: VendorError) -> bool:
    """Whether a failed POST may have placed the order (so the id must be looked up, never re-sent)."""
    if isinstance(err, (VendorUnavailableError, RateLimitError)):
        return True
    if err.status_code is None:  # a 2xx that could not be read, a body without an order
        return True
    return err.status_code == 408 or is_duplicate_id(err)


def is_duplicate_id(err: VendorError) -> bool:
    """Whether the broker refused the client order id as already used (Alpaca: HTTP 422 "... must be unique")."""
    text = str(err).lower()
    return err.status_code in (409, 422) and "client_order_id" in text and ("unique" in text or "already" in text)


def check_same_order(existing: Mapping[str, Any], order: Mapping[str, Any]) -> None:
    """An order already under our id must be the order we meant (same symbol and side).

    :raises InvalidInputError: naming both orders.
    """
    theirs = (str(existing.get("symbol") or "").replace("/", "").upper(), str(existing.get("side") or "").lower())
    ours = (str(order.get("symbol") or "").replace("/", "").upper(), str(order.get("side") or "").lower())
    if theirs != ours:
        raise InvalidInputError(
            f"client_order_id {order.get('client_order_id')!r} already names another order at the broker "
            f"({theirs[1]} {theirs[0]}, id {existing.get('id')}), not {ours[1]} {ours[0]}: use a new id"
        )


def describe(order: Mapping[str, Any]) -> str:
    """``buy 10 AAPL`` (or the notional for a dollar order)."""
    amount = order.get("qty") if order.get("qty") is not None else order.get("notional")
    return f"{order.get('side')} {amount} {order.get('symbol')}"


def _reconcile(api: BrokerAPI, order: Mapping[str, Any], cid: str, summary: str,
               first: BaseException) -> dict[str, Any]:
    """After an ambiguous POST: the order if the broker has it, else a clear error. Never re-sends."""
    log.warning("%s: submission of order %s (%s) failed ambiguously (%s); looking it up by client_order_id",
                api.name, cid, summary, first)
    try:
        existing = api.get_order_by_client_order_id(cid)
    except Exception as lookup:  # any failure to ask leaves the state unknown
        raise OrderOutcomeUnknownError(
            f"order {cid} ({summary}): the submission failed ({_plain(first)}) and looking it up failed too "
            f"({_plain(lookup)}): its state is UNKNOWN. Retry with the SAME client_order_id, never a new one: the "
            "retry looks the order up before sending anything",
            cause=first, lookup=lookup,
        ) from None
    if existing is not None:
        check_same_order(existing, order)
        log.warning("%s: order %s already existed at the broker (id %s, status %s): returning it, not sending again",
                    api.name, cid, existing.get("id"), existing.get("status"))
        return existing
    if isinstance(first, VendorError) and is_duplicate_id(first):
        raise DuplicateClientOrderIdError(
            f"order {cid} ({summary}): the broker refused the client_order_id as already used, yet has no order "
            "with it; client_order_ids stay taken after cancel: pick a new id only after checking the account",
            cause=first,
        )
    raise OrderNotPlacedError(
        f"order {cid} ({summary}) was NOT placed: {_plain(first)}; the broker has no order with that "
        "client_order_id. It is safe to retry with the same client_order_id",
        cause=first,
    )


def _plain(err: BaseException) -> str:
    """An error's text without the ``connection '<id>': `` prefix of vendor errors (the caller adds its own)."""
    text = str(err) or type(err).__name__
    conn_id = getattr(err, "conn_id", None)
    prefix = f"connection {conn_id!r}: " if conn_id else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
