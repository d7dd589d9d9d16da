"""The broker's API as the trading domain uses it: a protocol that an adapter implements.

:class:`~airflow_provider_portfolio.trading.brokers.alpaca.AlpacaBroker` (the ledger side of Alpaca) and
:func:`~airflow_provider_portfolio.trading.submission.submit_at_most_once` (the exactly-once rule) work over
:class:`BrokerAPI` only; the Airflow hook that talks to Alpaca
(:class:`~airflow_provider_portfolio.hooks.alpaca.AlpacaHook`) implements it, and a test double can too. This
module imports neither Airflow nor any adapter.

Orders are plain dicts shaped like Alpaca's order object: at least ``id``, ``client_order_id``, ``status``,
``symbol`` and ``side``; ``filled_qty`` and ``filled_avg_price`` (numbers or decimal strings) once filled.

Errors are the provider's vendor errors (:mod:`airflow_provider_portfolio.exceptions`):
:class:`~airflow_provider_portfolio.exceptions.VendorUnavailableError` (a timeout, a connection error, HTTP 5xx:
a request may or may not have reached the broker), :class:`~airflow_provider_portfolio.exceptions.RateLimitError`,
:class:`~airflow_provider_portfolio.exceptions.AuthenticationError`,
:class:`~airflow_provider_portfolio.exceptions.UnknownSymbolError` (an asset the broker does not know) and
:class:`~airflow_provider_portfolio.exceptions.VendorError` with the HTTP status of a refusal (``status_code``
``None``: an answer that could not be read). Bad arguments are
:class:`~airflow_provider_portfolio.exceptions.InvalidInputError`, raised before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

#: The fields of an order to post (Alpaca's names); ``symbol``, ``side``, ``type``, ``time_in_force``,
#: ``client_order_id`` and exactly one of ``qty`` and ``notional`` are required.
ORDER_FIELDS = ("symbol", "side", "qty", "notional", "type", "time_in_force", "limit_price", "stop_price",
                "client_order_id")


@runtime_checkable
class BrokerAPI(Protocol):
    """What the trading domain needs of a broker's API (implemented by ``AlpacaHook``).

    Reads may be retried by the implementation (bounded); :meth:`post_order` never is. On Python 3.11
    ``isinstance(obj, BrokerAPI)`` reads ``name`` and ``is_live``: on a hook that reads its connection.
    """

    #: Names the account at the provider (a connection id): the ledger account is ``<broker>:<name>``.
    name: str
    #: Whether orders reach real money (a live account, not paper).
    is_live: bool

    def get_account(self) -> dict[str, Any]:
        """The account: ``equity``, ``cash``, ``buying_power``, ``last_equity`` (decimal strings), ``status``."""
        ...

    def get_positions(self) -> list[dict[str, Any]]:
        """The open positions: ``symbol``, ``qty``, ``side`` (``long``/``short``) each; empty when flat."""
        ...

    def get_asset(self, symbol: str) -> dict[str, Any]:
        """The asset's ``tradable``, ``shortable``, ``easy_to_borrow``, ``fractionable``, ``status``.

        :raises UnknownSymbolError: when the broker does not know ``symbol``.
        """
        ...

    def get_order_by_client_order_id(self, client_order_id: str) -> dict[str, Any] | None:
        """The broker's order under ``client_order_id``; ``None`` when it has none (a read, never a send)."""
        ...

    def post_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        """Send ``order`` (fields of :data:`ORDER_FIELDS`) in exactly one request, never retried by the
        implementation or its SDK, and return the broker's order.

        Everything is checked before the request (:class:`InvalidInputError`), a live account without the
        operator's opt-in included. Call it through
        :func:`~airflow_provider_portfolio.trading.submission.submit_at_most_once`, which looks the id up
        whenever the answer leaves the order's fate in doubt.
        """
        ...
