"""Alpaca orders: the order half of :class:`~airflow_provider_portfolio.hooks.alpaca.AlpacaHook`.

:class:`AlpacaOrders` is mixed into the hook. It gives the two order members of the domain's
:class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI`: :meth:`~AlpacaOrders.get_order_by_client_order_id`
(a bounded read) and :meth:`~AlpacaOrders.post_order` (exactly one ``POST /v2/orders``: the hook's clients have
alpaca-py's retries switched off, which would re-send it on 429 and 504). "Submit at most once" itself is the
domain's :func:`~airflow_provider_portfolio.trading.submission.place_order`; :meth:`~AlpacaOrders.submit_order` is
the hook's long-standing entry point, a thin wrapper over it that raises vendor errors as it always has.

Importing this module imports neither alpaca-py nor pandas.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from airflow_provider_portfolio.exceptions import InvalidInputError, VendorError, VendorUnavailableError
from airflow_provider_portfolio.market.params import validate_symbol
from airflow_provider_portfolio.trading.brokers.api import ORDER_FIELDS

log = logging.getLogger(__name__)

ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
TIMES_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")
SIDES = ("buy", "sell")
#: Alpaca refuses longer ids; the character set keeps ids safe in URLs, logs and XCom.
CLIENT_ORDER_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,48}$")


class _NotFound(VendorError):
    """HTTP 404 where absence is an answer (an order looked up by client order id)."""


class AlpacaOrders:
    """Order methods of the Alpaca hook (it provides ``trading_client``, ``_call``, ``_read``, ``_dict``,
    ``is_live``, ``allow_live``, ``conn_id``, ``vendor`` and ``redact``)."""

    trading_client: Any
    allow_live: bool
    is_live: bool
    conn_id: str
    vendor: str
    _call: Callable[..., Any]
    _read: Callable[..., Any]
    _dict: Callable[..., dict[str, Any]]
    redact: Callable[[object], str]

    def get_order_by_client_order_id(self, client_order_id: str) -> dict[str, Any] | None:
        """``GET /v2/orders:by_client_order_id`` (a bounded read); ``None`` when no such order exists (404)."""
        cid = _check_client_order_id(client_order_id)
        what = f"the order with client_order_id {cid!r}"
        try:
            body = self._read(lambda: self.trading_client.get_order_by_client_id(cid), what, missing=_NotFound)
        except _NotFound:
            return None
        order = self._dict(body, what, keys=("id", "client_order_id", "status"))
        if order["client_order_id"] != cid:
            raise VendorError(
                f"{self.vendor} answered {what} with the order of client_order_id {order['client_order_id']!r}",
                conn_id=self.conn_id,
            )
        return order

    def post_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/orders`` exactly once (no SDK retry, no :meth:`read`); return Alpaca's order.

        The :class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI` member: call it through
        :func:`~airflow_provider_portfolio.trading.submission.place_order` (or :meth:`submit_order`), which looks
        the id up whenever the answer leaves the order's fate in doubt.

        :param order: fields of :data:`~airflow_provider_portfolio.trading.brokers.api.ORDER_FIELDS`.
        :raises InvalidInputError: bad fields or a live connection without ``allow_live``, before any request.
        :raises VendorError: (and subclasses) what Alpaca's answer means.
        """
        unknown = sorted(set(order) - set(ORDER_FIELDS))
        if unknown:
            raise InvalidInputError(f"unknown order field(s) {unknown}; an order has {', '.join(ORDER_FIELDS)}")
        fields = {name: order.get(name) for name in ORDER_FIELDS}
        fields["type"] = fields["type"] or "market"
        fields["time_in_force"] = fields["time_in_force"] or "day"
        cid = _check_client_order_id(fields.pop("client_order_id"))
        request = self._order_request(client_order_id=cid, **fields)
        self._refuse_live_without_opt_in()
        client = self.trading_client
        sent = _plain_params(request.to_request_fields())
        what = f"the order {cid} ({sent['side']} {sent.get('qty', sent.get('notional'))} {sent['symbol']})"
        placed = self._call(lambda: client.submit_order(request), what)
        return self._dict(placed, what, keys=("id", "client_order_id", "status"))

    def submit_order(
        self,
        *,
        symbol: str,
        side: str,
        qty: float | int | str | Decimal | None = None,
        notional: float | int | str | Decimal | None = None,
        type: str = "market",
        time_in_force: str = "day",
        limit_price: float | int | str | Decimal | None = None,
        stop_price: float | int | str | Decimal | None = None,
        client_order_id: str,
        lookup_first: bool = True,
    ) -> dict[str, Any]:
        """Place an order at most once per ``client_order_id``; return Alpaca's order (a plain dict).

        A thin wrapper over :func:`~airflow_provider_portfolio.trading.submission.place_order`:

        1. Everything is checked before any request (:class:`InvalidInputError`): the id (1-48 characters
           of ``A-Z a-z 0-9 _ - .``), symbol, side, exactly one positive ``qty`` or ``notional``, type,
           time in force, the prices the type needs; and a live connection needs ``allow_live=True``.
        2. ``lookup_first`` (default): the id is looked up (a read). When the order exists (an Airflow
           task retry after the first try placed it) it is returned and nothing is sent.
        3. ``POST /v2/orders`` is sent exactly once: no SDK retry, no :meth:`read`.
        4. When the answer is ambiguous (timeout, connection error, 5xx, 429, a non-JSON 2xx) or HTTP 422
           "client_order_id must be unique", the id is looked up: found -> that order is returned (never
           a second POST); not found -> :class:`VendorUnavailableError` saying the order was NOT placed
           and that retrying with the same id is safe. When the look-up fails too, the state is unknown
           and the error says to retry with the same id (step 2 settles it).
        5. Other refusals (403 insufficient buying power, 422, 401...) are raised at once.

        :raises InvalidInputError: bad arguments, a live connection without ``allow_live``, or an id that
            already names an order for another symbol or side.
        """
        from airflow_provider_portfolio.trading.submission import (
            DuplicateClientOrderIdError,
            OrderNotPlacedError,
            OrderOutcomeUnknownError,
            place_order,
        )

        cid = _check_client_order_id(client_order_id)
        request = self._order_request(symbol=symbol, side=side, qty=qty, notional=notional, type=type,
                                      time_in_force=time_in_force, limit_price=limit_price, stop_price=stop_price,
                                      client_order_id=cid)
        self._refuse_live_without_opt_in()
        _ = self.trading_client  # credentials and client first: their errors are no submission failure
        fields = _plain_params(request.to_request_fields())
        try:
            return place_order(self, fields, lookup_first=lookup_first)
        except (OrderNotPlacedError, OrderOutcomeUnknownError) as err:
            raise VendorUnavailableError(str(err), conn_id=self.conn_id, status_code=_status(err.cause)) from None
        except DuplicateClientOrderIdError as err:
            raise VendorError(str(err), conn_id=self.conn_id, status_code=_status(err.cause)) from None

    def _refuse_live_without_opt_in(self) -> None:
        if self.is_live and not self.allow_live:
            raise InvalidInputError(
                f"connection {self.conn_id!r} is a live trading account: live trading needs allow_live=True "
                "(or set the connection's paper extra to true)"
            )

    def _order_request(self, *, symbol: Any, side: Any, qty: Any, notional: Any, type: Any,
                       time_in_force: Any, limit_price: Any, stop_price: Any, client_order_id: str) -> Any:
        """Validate the arguments and build alpaca-py's order request; no I/O."""
        clean = validate_symbol(symbol)
        side_v = str(side).strip().lower() if isinstance(side, str) else None
        if side_v not in SIDES:
            raise InvalidInputError(f"side must be 'buy' or 'sell', got {side!r}")
        type_v = str(type).strip().lower() if isinstance(type, str) else None
        if type_v not in ORDER_TYPES:
            raise InvalidInputError(f"type must be one of {', '.join(ORDER_TYPES)}, got {type!r}")
        tif = str(time_in_force).strip().lower() if isinstance(time_in_force, str) else None
        if tif not in TIMES_IN_FORCE:
            raise InvalidInputError(f"time_in_force must be one of {', '.join(TIMES_IN_FORCE)}, got {time_in_force!r}")
        if (qty is None) == (notional is None):
            raise InvalidInputError("give exactly one of qty (shares or coins) and notional (dollars)")
        amount = {"qty": _positive(qty, "qty")} if qty is not None else {"notional": _positive(notional, "notional")}
        prices: dict[str, float] = {}
        needs = {"market": (), "limit": ("limit_price",), "stop": ("stop_price",),
                 "stop_limit": ("limit_price", "stop_price")}[type_v]
        for name, value in (("limit_price", limit_price), ("stop_price", stop_price)):
            if name in needs:
                if value is None:
                    raise InvalidInputError(f"a {type_v} order needs {name}")
                prices[name] = _positive(value, name)
            elif value is not None:
                raise InvalidInputError(f"{name} does not apply to a {type_v} order")

        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import (
            LimitOrderRequest,
            MarketOrderRequest,
            StopLimitOrderRequest,
            StopOrderRequest,
        )

        cls = {"market": MarketOrderRequest, "limit": LimitOrderRequest, "stop": StopOrderRequest,
               "stop_limit": StopLimitOrderRequest}[type_v]
        try:
            return cls(symbol=clean, side=OrderSide(side_v), time_in_force=TimeInForce(tif),
                       client_order_id=client_order_id, **amount, **prices)
        except ValueError as err:  # pydantic's ValidationError
            raise InvalidInputError(f"order {client_order_id}: {self.redact(err)}") from None


def _plain_params(fields: dict[str, Any]) -> dict[str, Any]:
    """Request fields as plain query values (enum values and ``str(TimeFrame)``, not their reprs)."""
    from enum import Enum

    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, Enum):
            value = value.value
        elif not isinstance(value, (str, int, float, bool)):
            value = str(value)
        out[key] = value
    return out


def _check_client_order_id(value: object) -> str:
    if not isinstance(value, str) or not CLIENT_ORDER_ID_RE.match(value):
        raise InvalidInputError(
            "client_order_id is required: 1 to 48 characters of letters, digits, '_', '-' and '.', derived from "
            f"the task (e.g. '{{{{ ds_nodash }}}}-AAPL-buy'), so that a retry reuses it; got {value!r}"
        )
    return value


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    return number


def _status(err: BaseException | None) -> int | None:
    return getattr(err, "status_code", None)
