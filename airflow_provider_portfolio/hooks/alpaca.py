"""Alpaca: account, clock, assets, positions, bars (stocks and crypto), latest quotes, news, and orders.

Connection (type ``alpaca``): the API key ID in the login field, the secret key in the password field;
extras ``paper`` (bool, default true), ``feed`` (``iex``, the default, or ``sip``), ``timeout``, and the
optional ``trading_base_url`` / ``data_base_url`` (a proxy or a test double; host and optional path
prefix, the SDK appends ``/v2``, ``/v1beta3`` or ``/v1beta1``; a trailing version segment given by
mistake is dropped).

The hook drives alpaca-py's REST clients (``TradingClient``, ``StockHistoricalDataClient``,
``CryptoHistoricalDataClient``, ``NewsClient``, all with ``raw_data=True`` so every answer is a plain,
JSON-serialisable dict or list), with two changes made to each client it builds:

- **timeouts**: alpaca-py sets none. ``RESTClient._one_request`` calls
  ``self._session.request(method, url, **opts)`` without a ``timeout``; each client's ``_session`` is
  replaced by a :class:`requests.Session` whose ``request()`` adds the connection's timeout, so every
  call of every client carries it, order submission included;
- **no SDK retries**: ``RESTClient`` re-sends *every* method, ``POST /v2/orders`` included, up to 3
  times 3 s apart on HTTP 429 and 504 (``_retry``, ``_retry_wait``, ``_retry_codes``, not settable to 0
  through the constructors). They are zeroed on every client, so each SDK call is exactly one HTTP
  request. Idempotent reads are then retried by :meth:`VendorHook.read` (bounded, backoff, burst-aware);
  orders never are: :meth:`AlpacaHook.post_order` is one request, and "submit at most once" is the domain's
  :func:`~airflow_provider_portfolio.trading.submission.place_order` (:meth:`AlpacaHook.submit_order` wraps it).

The hook is split over three modules: this one (connection, clients, errors, account reads),
:mod:`~airflow_provider_portfolio.hooks.alpaca_data` (bars, latest quotes, news) and
:mod:`~airflow_provider_portfolio.hooks.alpaca_orders` (orders); import the hook from here.

Errors (``alpaca.common.exceptions.APIError``, ``requests`` exceptions, non-JSON bodies) become the
provider's classes: 401 -> :class:`AuthenticationError`; 403 -> :class:`PlanNotSupportedError` when the
data plan refuses (``subscription does not permit querying recent SIP data``), the broker's refusal
(``insufficient buying power``...) -> :class:`VendorError`, any other 403 -> :class:`AuthenticationError`;
404 on an asset -> :class:`UnknownSymbolError`; 400/422 -> :class:`VendorError` quoting the broker's
message; 429 -> burst :class:`RateLimitError` (``Retry-After`` or ``X-RateLimit-Reset``); 5xx, timeouts and
connection errors -> :class:`VendorUnavailableError`; an HTML or otherwise non-JSON body ->
:class:`VendorError` saying so (or :class:`VendorUnavailableError` when the status is 5xx). Every message
passes :meth:`VendorHook.redact`.

Timestamps: daily bars are labelled by their session date at midnight UTC. Alpaca stamps stock daily
bars at midnight America/New_York (04:00Z in summer, 05:00Z in winter) and crypto daily bars at midnight
America/Chicago (05:00Z / 06:00Z); the session date is the stamp's date in that zone. Intraday bars keep
their start instant (UTC). Ranges are UTC dates, inclusive, as for every market-data source.

Importing this module imports neither alpaca-py nor pandas (they load on first use).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from airflow_provider_portfolio.exceptions import (
    AuthenticationError,
    InvalidInputError,
    PlanNotSupportedError,
    RateLimitError,
    UnknownSymbolError,
    VendorError,
    VendorUnavailableError,
)
from airflow_provider_portfolio.hooks.alpaca_data import (
    BAR_PAGE_SIZE,
    CRYPTO_SESSION_TZ,
    MAX_SYMBOLS_PER_REQUEST,
    NEWS_PAGE_SIZE,
    STOCK_SESSION_TZ,
    AlpacaMarketData,
    _dump,
)
from airflow_provider_portfolio.hooks.alpaca_orders import (
    CLIENT_ORDER_ID_RE,
    ORDER_TYPES,
    SIDES,
    TIMES_IN_FORCE,
    AlpacaOrders,
)
from airflow_provider_portfolio.hooks.vendor import VendorHook, shorten
from airflow_provider_portfolio.market.params import validate_symbol

if TYPE_CHECKING:
    import requests

__all__ = ["BAR_PAGE_SIZE", "CLIENT_ORDER_ID_RE", "CRYPTO_SESSION_TZ", "FEEDS", "MAX_SYMBOLS_PER_REQUEST",
           "NEWS_PAGE_SIZE", "ORDER_TYPES", "SIDES", "STOCK_SESSION_TZ", "TIMES_IN_FORCE", "AlpacaHook"]

T = TypeVar("T")

log = logging.getLogger(__name__)

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
LIVE_TRADING_HOST = "api.alpaca.markets"

FEEDS = ("iex", "sip")

_MAX_BODY_SHOWN = 160
_VERSION_SUFFIX = re.compile(r"/v\d+(?:beta\d+)?$")


class AlpacaHook(AlpacaMarketData, AlpacaOrders, VendorHook):
    """Alpaca trading and market data through alpaca-py.

    A :class:`~airflow_provider_portfolio.market.sources.BarSource`,
    :class:`~airflow_provider_portfolio.market.sources.NewsSource` and
    :class:`~airflow_provider_portfolio.market.sources.QuoteSource`, and the domain's
    :class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI`. Its market data members are in
    :mod:`~airflow_provider_portfolio.hooks.alpaca_data`, its order members in
    :mod:`~airflow_provider_portfolio.hooks.alpaca_orders`.

    :param alpaca_conn_id: the ``alpaca`` connection. Nothing is read until a method is called.
    :param allow_live: allow orders (:meth:`post_order`, :meth:`submit_order`) on a live (``paper`` false)
        connection. Off by default: a live connection then refuses orders before any order request is sent
        (:meth:`submit_order` checks it before any request at all; through the domain's ``place_order`` the
        look-up of the id, a read, comes first).
    """

    conn_name_attr = "alpaca_conn_id"
    default_conn_name = "alpaca_default"
    conn_type = "alpaca"
    hook_name = "Alpaca"
    vendor = "Alpaca"

    def __init__(self, alpaca_conn_id: str = default_conn_name, *, allow_live: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpaca_conn_id = alpaca_conn_id
        self.allow_live = bool(allow_live)

    # --- connection fields ----------------------------------------------------------------------

    def masked_values(self, conn: Any) -> list[object]:
        """The password and the login: the key ID is half of Alpaca's credentials."""
        return [conn.password, conn.login]

    @cached_property
    def paper(self) -> bool:
        """Extra ``paper`` (default true)."""
        return self.flag("paper", True)

    @cached_property
    def feed(self) -> str:
        """Extra ``feed``: ``iex`` (default, free plan) or ``sip``.

        :raises InvalidInputError: naming the connection for anything else.
        """
        raw = self.extra("feed", "iex")
        value = str(raw).strip().lower()
        if value not in FEEDS:
            raise InvalidInputError(
                f"connection {self.conn_id!r}: feed must be one of {', '.join(FEEDS)}, got {self.redact(raw)!r}"
            )
        return value

    @cached_property
    def trading_url(self) -> str:
        """The trading API root the SDK appends ``/v2`` to: extra ``trading_base_url`` or the paper/live host."""
        default = PAPER_TRADING_URL if self.paper else LIVE_TRADING_URL
        return _VERSION_SUFFIX.sub("", self.base_url(default, field="trading_base_url"))

    @cached_property
    def data_url(self) -> str:
        """The market data API root (stocks ``/v2``, crypto ``/v1beta3``, news ``/v1beta1`` are appended)."""
        return _VERSION_SUFFIX.sub("", self.base_url(DATA_URL, field="data_base_url"))

    @property
    def is_live(self) -> bool:
        """Whether orders reach real money: ``paper`` is false, or the trading URL is Alpaca's live host."""
        return not self.paper or urlsplit(self.trading_url).hostname == LIVE_TRADING_HOST

    def credentials(self) -> tuple[str, str]:
        """(key ID, secret key) from the connection's login and password.

        :raises AuthenticationError: naming the connection (never the secret) when either is missing.
        """
        conn = self.connection
        key_id = conn.login.strip() if isinstance(conn.login, str) else ""
        secret = conn.password.strip() if isinstance(conn.password, str) else ""
        missing = [what for what, value in (("API key ID (login)", key_id), ("secret key (password)", secret))
                   if not value]
        if missing:
            raise AuthenticationError(
                f"no Alpaca {' and no '.join(missing)}: put the key ID in the connection's login field and the "
                "secret key in its password field",
                conn_id=self.conn_id,
            )
        return key_id, secret

    # --- clients --------------------------------------------------------------------------------

    @cached_property
    def trading_client(self) -> Any:
        """alpaca-py ``TradingClient`` (raw data, the connection's timeout, no SDK retries)."""
        from alpaca.trading.client import TradingClient

        key_id, secret = self.credentials()
        return self._prepare(
            TradingClient(api_key=key_id, secret_key=secret, paper=self.paper, raw_data=True,
                          url_override=self.trading_url)
        )

    @cached_property
    def stock_client(self) -> Any:
        """alpaca-py ``StockHistoricalDataClient`` (raw data, timeout, no SDK retries)."""
        from alpaca.data.historical.stock import StockHistoricalDataClient

        key_id, secret = self.credentials()
        return self._prepare(
            StockHistoricalDataClient(api_key=key_id, secret_key=secret, raw_data=True, url_override=self.data_url)
        )

    @cached_property
    def crypto_client(self) -> Any:
        """alpaca-py ``CryptoHistoricalDataClient`` (raw data, timeout, no SDK retries)."""
        from alpaca.data.historical.crypto import CryptoHistoricalDataClient

        key_id, secret = self.credentials()
        return self._prepare(
            CryptoHistoricalDataClient(api_key=key_id, secret_key=secret, raw_data=True, url_override=self.data_url)
        )

    @cached_property
    def news_client(self) -> Any:
        """alpaca-py ``NewsClient`` (raw data, timeout, no SDK retries)."""
        from alpaca.data.historical.news import NewsClient

        key_id, secret = self.credentials()
        return self._prepare(NewsClient(api_key=key_id, secret_key=secret, raw_data=True, url_override=self.data_url))

    def get_conn(self) -> Any:
        """The ``TradingClient`` (raw data, timeouts, no SDK retries)."""
        return self.trading_client

    def _prepare(self, client: Any) -> Any:
        """Give ``client`` a session with the connection's timeout and switch the SDK's retries off."""
        missing = [a for a in ("_session", "_retry", "_retry_wait", "_retry_codes") if not hasattr(client, a)]
        if missing:  # a later alpaca-py moved them: refuse rather than trade with hidden retries
            raise VendorError(
                f"the installed alpaca-py has no {', '.join(missing)} on {type(client).__name__}: this hook cannot "
                "set its timeout or switch off its retries (which re-send orders); pin a supported alpaca-py",
                conn_id=self.conn_id,
            )
        client._session.close()
        client._session = _timeout_session(self.timeout)
        client._retry = 0
        client._retry_wait = 0
        client._retry_codes = []
        return client

    # --- calls and errors -----------------------------------------------------------------------

    def _call(self, fn: Callable[[], T], what: str, *, missing: type[VendorError] = VendorError) -> T:
        """Run one SDK call (one HTTP request); raise the provider's error for any failure.

        :param missing: the class raised for HTTP 404.
        """
        try:
            return fn()
        except VendorError:
            raise
        except Exception as err:
            mapped = self.map_error(err, what, missing=missing)
            if mapped is None:
                raise
            raise mapped from None

    def _read(self, fn: Callable[[], T], what: str, *, missing: type[VendorError] = VendorError) -> T:
        """An idempotent SDK call with the base class's bounded retries."""
        return self.read(lambda: self._call(fn, what, missing=missing), what)

    def map_error(self, err: Exception, what: str, *, missing: type[VendorError] = VendorError) -> VendorError | None:
        """The provider error for an exception of an alpaca-py call; ``None`` when it is not a vendor failure.

        :param what: what was asked, for the message (``"the account"``).
        :param missing: the class for HTTP 404 (:class:`UnknownSymbolError` for assets).
        """
        import requests
        from alpaca.common.exceptions import APIError

        if isinstance(err, APIError):
            return self._api_error(err, what, missing)
        if isinstance(err, ValueError) and (
            isinstance(err, requests.exceptions.JSONDecodeError) or not isinstance(err, requests.RequestException)
        ) and hasattr(err, "doc"):
            # A 2xx answer whose body is not JSON: the SDK's response.json() failed.
            return VendorError(
                f"{self.vendor} answered {what} with {_describe_body(err.doc)}", conn_id=self.conn_id
            )
        if isinstance(err, requests.Timeout):
            return VendorUnavailableError(
                f"{self.vendor} did not answer {what} within {self.timeout:g} s ({type(err).__name__})",
                conn_id=self.conn_id,
            )
        if isinstance(err, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                            requests.exceptions.InvalidSchema)):
            return VendorError(
                f"{self.vendor}: bad URL for {what}: {self.redact(err)}", conn_id=self.conn_id
            )
        if isinstance(err, requests.RequestException):
            return VendorUnavailableError(
                f"{self.vendor} could not be reached for {what}: {type(err).__name__}: {self.redact(err)}",
                conn_id=self.conn_id,
            )
        return None

    def _api_error(self, err: Any, what: str, missing: type[VendorError]) -> VendorError:
        try:
            status = err.status_code
        except Exception:  # an APIError built without a response
            status = None
        response = getattr(err, "_http_error", None)
        response = getattr(response, "response", None)
        text = str(err)
        message, code = _json_message(text)  # never err.message / err.code: they raise on non-JSON bodies
        content_type = response.headers.get("Content-Type", "") if response is not None else ""
        if message:
            detail = shorten(message) + (f" (code {code})" if code is not None else "")
        else:
            detail = _describe_body(text, content_type)
        msg = f"{self.vendor} answered {what} with HTTP {status}: {self.redact(detail)}"
        kwargs: dict[str, Any] = {"conn_id": self.conn_id, "status_code": status}
        lowered = (message or "").lower()
        if status == 401:
            return AuthenticationError(
                msg + "; check the key ID and secret, and that paper keys go to the paper host (paper=true)",
                **kwargs,
            )
        if status == 403:
            if "subscription" in lowered:
                return PlanNotSupportedError(
                    msg + f"; the connection's feed is {self.feed!r}: use feed 'iex' or ask for data older than "
                    "15 minutes",
                    **kwargs,
                )
            if not lowered or lowered.strip(" .") in ("forbidden", "access denied", "request is not authorized"):
                return AuthenticationError(msg, **kwargs)
            return VendorError(msg, **kwargs)  # a refusal of the request: insufficient buying power...
        if status == 404:
            return missing(msg, **kwargs)
        if status == 400 and "invalid symbol" in lowered:
            return UnknownSymbolError(msg, **kwargs)
        if status == 429:
            return RateLimitError(msg, kind=RateLimitError.BURST, retry_after=_retry_after(response), **kwargs)
        if status is not None and status >= 500:
            return VendorUnavailableError(msg, **kwargs)
        return VendorError(msg, **kwargs)

    def _dict(self, value: Any, what: str, *, keys: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict) or any(k not in value for k in keys):
            raise VendorError(
                f"{self.vendor} answered {what} with an unexpected body: {self.redact(shorten(_dump(value)))!r}",
                conn_id=self.conn_id,
            )
        return value

    # --- reads ----------------------------------------------------------------------------------

    def get_account(self) -> dict[str, Any]:
        """``GET /v2/account``: the trading account (money fields are strings, as Alpaca sends them)."""
        body = self._read(lambda: self.trading_client.get_account(), "the account")
        return self._dict(body, "the account", keys=("id", "status"))

    def get_clock(self) -> dict[str, Any]:
        """``GET /v2/clock``: ``timestamp``, ``is_open``, ``next_open``, ``next_close``."""
        body = self._read(lambda: self.trading_client.get_clock(), "the market clock")
        return self._dict(body, "the market clock", keys=("is_open",))

    def get_asset(self, symbol: str) -> dict[str, Any]:
        """``GET /v2/assets/{symbol}`` (``tradable``, ``fractionable``...).

        Crypto pairs are asked without their slash (``BTC/USD`` -> ``BTCUSD``): a slash in the path is a
        404 at Alpaca.

        :raises UnknownSymbolError: when Alpaca does not know the symbol.
        """
        clean = validate_symbol(symbol)
        asked = clean.replace("/", "")
        what = f"the asset {clean}"
        body = self._read(lambda: self.trading_client.get_asset(asked), what, missing=UnknownSymbolError)
        return self._dict(body, what, keys=("symbol",))

    def get_positions(self) -> list[dict[str, Any]]:
        """``GET /v2/positions``: the open positions (empty list when flat)."""
        body = self._read(lambda: self.trading_client.get_all_positions(), "the positions")
        if not isinstance(body, list) or not all(isinstance(p, dict) and "symbol" in p for p in body):
            raise VendorError(
                f"{self.vendor} answered the positions with an unexpected body: {self.redact(shorten(_dump(body)))!r}",
                conn_id=self.conn_id,
            )
        return body

    def probe(self) -> str:
        """The Test button: ``GET /v2/account``; e.g. ``"Alpaca paper account ACTIVE (USD)"``."""
        account = self.get_account()
        mode = "LIVE" if self.is_live else "paper"
        return f"Alpaca {mode} account {account.get('status')} ({account.get('currency') or 'USD'})"


# --- helpers ------------------------------------------------------------------------------------------


def _timeout_session(timeout: float) -> requests.Session:
    """A ``requests.Session`` whose every request carries ``timeout`` unless the caller gives one."""
    return _timeout_session_class()(timeout)


_SESSION_CLASS: type | None = None


def _timeout_session_class() -> type:
    global _SESSION_CLASS
    if _SESSION_CLASS is None:
        import requests

        class TimeoutSession(requests.Session):
            """``requests.Session`` with a default timeout (alpaca-py passes none)."""

            def __init__(self, timeout: float) -> None:
                super().__init__()
                self.default_timeout = timeout

            def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
                if kwargs.get("timeout") is None:
                    kwargs["timeout"] = self.default_timeout
                return super().request(method, url, *args, **kwargs)

        _SESSION_CLASS = TimeoutSession
    return _SESSION_CLASS


def _json_message(text: str) -> tuple[str | None, Any]:
    """(message, code) of an Alpaca error body, or (None, None) when it is not such JSON."""
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    message = body.get("message")
    return (str(message) if message not in (None, "") else None), body.get("code")


def _describe_body(text: object, content_type: str = "") -> str:
    body = "" if text is None else str(text)
    if not body.strip():
        return "an empty body instead of JSON"
    if "html" in content_type.lower() or body.lstrip()[:1] == "<":
        return f"an HTML page instead of JSON (a proxy or maintenance page?): {shorten(body)!r}"
    return f"a body that is not JSON: {shorten(body)!r}"




def _retry_after(response: Any) -> float | None:
    """Seconds to wait: ``Retry-After``, else Alpaca's ``X-RateLimit-Reset`` (a Unix time)."""
    if response is None:
        return None
    headers = response.headers
    for name in ("Retry-After", "X-RateLimit-Reset"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        return max(0.0, number - time.time()) if name == "X-RateLimit-Reset" else max(0.0, number)
    return None
