"""Alpaca: account, clock, assets, positions, bars (stocks and crypto), news, and idempotent orders.

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
  orders never are (see :meth:`AlpacaHook.submit_order`).

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
import math
import re
import time
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import Decimal
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
from airflow_provider_portfolio.hooks.vendor import VendorHook, shorten
from airflow_provider_portfolio.market.params import utc_day_window, validate_symbol

if TYPE_CHECKING:
    import pandas as pd
    import requests

    from airflow_provider_portfolio.market.bars import Timeframe
    from airflow_provider_portfolio.market.news import NewsItem

T = TypeVar("T")

log = logging.getLogger(__name__)

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
LIVE_TRADING_HOST = "api.alpaca.markets"

FEEDS = ("iex", "sip")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
TIMES_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")
SIDES = ("buy", "sell")
#: Alpaca refuses longer ids; the character set keeps ids safe in URLs, logs and XCom.
CLIENT_ORDER_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,48}$")

#: Bars asked per page (Alpaca's maximum); pages follow ``next_page_token``.
BAR_PAGE_SIZE = 10_000
#: News articles asked per page (Alpaca's maximum).
NEWS_PAGE_SIZE = 50
#: Zone whose midnight stamps Alpaca's daily bars.
STOCK_SESSION_TZ = "America/New_York"
CRYPTO_SESSION_TZ = "America/Chicago"

_MAX_BODY_SHOWN = 160
_VERSION_SUFFIX = re.compile(r"/v\d+(?:beta\d+)?$")


class _NotFound(VendorError):
    """HTTP 404 where absence is an answer (an order looked up by client order id)."""


class AlpacaHook(VendorHook):
    """Alpaca trading and market data through alpaca-py; a
    :class:`~airflow_provider_portfolio.market.sources.MarketDataSource`.

    :param alpaca_conn_id: the ``alpaca`` connection. Nothing is read until a method is called.
    :param allow_live: allow :meth:`submit_order` on a live (``paper`` false) connection. Off by default:
        a live connection then refuses orders before any request is sent.
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

    # --- bars -----------------------------------------------------------------------------------

    def get_bars(
        self, symbols: str | list[str], start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """Bars of ``symbols`` dated in [start, end] (UTC dates, inclusive) as one canonical bar frame.

        Stocks come from ``/v2/stocks/bars`` on the connection's feed, crypto pairs (``BTC/USD``) from
        ``/v1beta3/crypto/us/bars``; every page is fetched (``next_page_token``), each page a bounded
        read. Daily bars are labelled by session date at midnight UTC, intraday bars by their start
        (UTC). Symbols without bars in the range simply have no rows; no bars at all is an empty frame.

        :param symbols: one ticker or pair (the :class:`MarketDataSource` call), a list, or a
            comma-separated string.
        :param timeframe: ``1Min`` ... ``59Min``, ``1Hour`` ... ``23Hour``, ``1Day``.
        """
        import pandas as pd

        from airflow_provider_portfolio.market.bars import empty_bars, parse_timeframe, to_bar_frame
        from airflow_provider_portfolio.market.params import is_crypto, validate_symbols

        tf = parse_timeframe(timeframe)
        names = validate_symbols(symbols)
        lo, hi = utc_day_window(start, end)
        stocks = [s for s in names if not is_crypto(s)]
        crypto = [s for s in names if is_crypto(s)]
        frames = []
        for group, is_pair in ((stocks, False), (crypto, True)):
            if not group:
                continue
            raw = self._bar_pages(group, tf, lo, hi, crypto=is_pair)
            for symbol in group:
                rows = raw.get(symbol) or []
                if rows:
                    frames.append(self._bar_frame(symbol, rows, tf, lo, hi, crypto=is_pair))
        frames = [f for f in frames if not f.empty]
        if not frames:
            return empty_bars()
        frame = pd.concat(frames, ignore_index=True)
        return to_bar_frame(frame, timeframe=tf.name, source=self.name)

    def _bar_pages(self, symbols: list[str], tf: Timeframe, lo: datetime, hi: datetime, *,
                   crypto: bool) -> dict[str, list[Any]]:
        """Every page of bars of ``symbols``: symbol -> raw bars, in the order Alpaca sent them."""
        from alpaca.data.enums import DataFeed
        from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest

        tf_alpaca = _alpaca_timeframe(tf)
        if crypto:
            client, path = self.crypto_client, "/crypto/us/bars"
            request = CryptoBarsRequest(symbol_or_symbols=symbols, timeframe=tf_alpaca, start=lo, end=hi,
                                        limit=BAR_PAGE_SIZE)
        else:
            client, path = self.stock_client, "/stocks/bars"
            request = StockBarsRequest(symbol_or_symbols=symbols, timeframe=tf_alpaca, start=lo, end=hi,
                                       limit=BAR_PAGE_SIZE, feed=DataFeed(self.feed))
        params = _plain_params(request.to_request_fields())
        what = f"{tf.name} bars of {','.join(symbols)}"
        return self._pages(client, path, params, what, key="bars")

    def _pages(self, client: Any, path: str, params: dict[str, Any], what: str, *, key: str,
               max_items: int | None = None) -> Any:
        """Follow ``next_page_token`` from the first page to the last; each page is one bounded read.

        ``key`` is the body's data member: ``bars`` (symbol -> list, merged) or ``news`` (a list).
        """
        merged: dict[str, list[Any]] | list[Any] = {} if key == "bars" else []
        token: str | None = None
        seen: set[str] = set()
        page = 0
        while True:
            page += 1
            page_params = dict(params)
            if token:
                page_params["page_token"] = token
            if max_items is not None:
                page_params["limit"] = min(int(params["limit"]), max_items - len(merged))
            page_what = f"{what} (page {page})" if page > 1 else what
            body = self._read(lambda p=page_params: client.get(path, p), page_what)
            if not isinstance(body, dict) or key not in body:
                raise VendorError(
                    f"{self.vendor} answered {page_what} without {key!r}: {self.redact(shorten(_dump(body)))!r}",
                    conn_id=self.conn_id,
                )
            data = body.get(key) or ({} if key == "bars" else [])
            if key == "bars":
                if not isinstance(data, dict) or not all(isinstance(v, list) or v is None for v in data.values()):
                    raise VendorError(f"{self.vendor} answered {page_what} with malformed bars", conn_id=self.conn_id)
                for symbol, rows in data.items():
                    merged.setdefault(symbol, []).extend(rows or [])  # type: ignore[union-attr]
            else:
                if not isinstance(data, list):
                    raise VendorError(f"{self.vendor} answered {page_what} with malformed {key}", conn_id=self.conn_id)
                merged.extend(data)  # type: ignore[union-attr]
            token = body.get("next_page_token")
            if not token or (max_items is not None and len(merged) >= max_items):
                return merged
            if token in seen:
                raise VendorError(
                    f"{self.vendor} answered {page_what} with a page token it had already sent: stopping",
                    conn_id=self.conn_id,
                )
            seen.add(token)

    def _bar_frame(self, symbol: str, rows: list[Any], tf: Timeframe, lo: datetime, hi: datetime, *,
                   crypto: bool) -> pd.DataFrame:
        import pandas as pd

        what = f"{tf.name} bars of {symbol}"
        columns = {"t": "ts", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
        if not all(isinstance(r, dict) and all(k in r for k in columns) for r in rows):
            raise VendorError(f"{self.vendor} answered {what} with bars lacking t/o/h/l/c/v", conn_id=self.conn_id)
        frame = pd.DataFrame([{name: r[key] for key, name in columns.items()} for r in rows])
        for col in ("open", "high", "low", "close", "volume"):
            numbers = pd.to_numeric(frame[col], errors="coerce")
            if numbers.isna().any():
                raise VendorError(f"{self.vendor} answered {what} with non-numeric {col} values", conn_id=self.conn_id)
            frame[col] = numbers
        try:
            ts = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        except (ValueError, TypeError):
            raise VendorError(f"{self.vendor} answered {what} with unreadable timestamps", conn_id=self.conn_id) from None
        if tf.is_daily:
            # Alpaca stamps a session at midnight of the exchange's zone: its date there is the session.
            local = ts.dt.tz_convert(CRYPTO_SESSION_TZ if crypto else STOCK_SESSION_TZ)
            ts = local.dt.tz_localize(None).dt.normalize().dt.tz_localize("UTC")
        frame["ts"] = ts
        frame = frame[(frame["ts"] >= pd.Timestamp(lo)) & (frame["ts"] < pd.Timestamp(hi))]
        # Duplicate timestamps stay: the quality gate's duplicate_timestamp rule rejects the batch.
        return frame.assign(symbol=symbol)

    # --- news -----------------------------------------------------------------------------------

    def get_news(self, symbols: str | list[str], start: date | datetime, end: date | datetime,
                 limit: int = 50) -> list[NewsItem]:
        """Alpaca news (``/v1beta1/news``) about ``symbols`` published in [start, end] (UTC dates).

        At most ``limit`` articles (newest first at Alpaca, across pages); each article gives one
        :class:`NewsItem` per requested symbol it names, scored with :func:`score_text` (headline and
        summary), ``source="alpaca"``. Sorted by publication time.
        """
        from airflow_provider_portfolio.market.news import NewsItem, score_text, sort_news
        from airflow_provider_portfolio.market.params import validate_symbols

        names = validate_symbols(symbols)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidInputError(f"limit must be an integer in [1, 10000], got {limit!r}")
        lo, hi = utc_day_window(start, end)
        from alpaca.data.requests import NewsRequest

        request = NewsRequest(symbols=",".join(names), start=lo, end=hi, limit=min(limit, NEWS_PAGE_SIZE),
                              sort="desc")
        params = _plain_params(request.to_request_fields())
        what = f"news of {','.join(names)}"
        articles = self._pages(self.news_client, "/news", params, what, key="news", max_items=limit)
        wanted = set(names)
        items = []
        for article in articles[:limit]:
            if not isinstance(article, dict) or not isinstance(article.get("headline"), str):
                raise VendorError(f"{self.vendor} answered {what} with a malformed article", conn_id=self.conn_id)
            try:
                published = datetime.fromisoformat(str(article["created_at"]).replace("Z", "+00:00"))
            except (KeyError, ValueError):
                raise VendorError(
                    f"{self.vendor} answered {what} with an article without a readable created_at",
                    conn_id=self.conn_id,
                ) from None
            if published.tzinfo is None:
                published = published.replace(tzinfo=timezone.utc)
            if not lo <= published < hi:
                continue
            headline, summary = article["headline"], article.get("summary") or ""
            score = score_text(headline, summary)
            for symbol in article.get("symbols") or []:
                if symbol in wanted:
                    items.append(NewsItem(symbol=symbol, published=published, headline=headline, score=score,
                                          source="alpaca", url=article.get("url") or None))
        return sort_news(items)

    # --- orders ---------------------------------------------------------------------------------

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
        cid = _check_client_order_id(client_order_id)
        order = self._order_request(symbol=symbol, side=side, qty=qty, notional=notional, type=type,
                                    time_in_force=time_in_force, limit_price=limit_price, stop_price=stop_price,
                                    client_order_id=cid)
        if self.is_live and not self.allow_live:
            raise InvalidInputError(
                f"connection {self.conn_id!r} is a live trading account: live trading needs allow_live=True "
                "(or set the connection's paper extra to true)"
            )
        fields = _plain_params(order.to_request_fields())
        client = self.trading_client  # credentials and client first: their errors are no submission failure
        summary = f"{fields['side']} {fields.get('qty', fields.get('notional'))} {fields['symbol']}"
        if lookup_first:
            existing = self.get_order_by_client_order_id(cid)
            if existing is not None:
                self._check_same_order(existing, fields)
                log.info("%s: order %s (%s) already exists at Alpaca (id %s, status %s): not sending it again",
                         self.conn_id, cid, summary, existing.get("id"), existing.get("status"))
                return existing

        what = f"the order {cid} ({summary})"
        log.info("%s: submitting %s order %s: %s", self.conn_id, "LIVE" if self.is_live else "paper", cid, summary)
        try:
            placed = self._call(lambda: client.submit_order(order), what)
            return self._dict(placed, what, keys=("id", "client_order_id", "status"))
        except VendorError as err:
            if not _ambiguous(err):
                raise
            first = err
        return self._reconcile(cid, fields, summary, first)

    def _reconcile(self, cid: str, fields: dict[str, Any], summary: str, first: VendorError) -> dict[str, Any]:
        """After an ambiguous submission: the order if Alpaca has it, else a clear error. Never re-sends."""
        duplicate = _is_duplicate_id(first)
        log.warning("%s: submission of order %s (%s) failed ambiguously (%s); looking it up by client_order_id",
                    self.conn_id, cid, summary, first)
        try:
            existing = self.get_order_by_client_order_id(cid)
        except VendorError as lookup:
            raise VendorUnavailableError(
                f"order {cid} ({summary}): the submission failed ({_strip_prefix(first)}) and looking it up failed "
                f"too ({_strip_prefix(lookup)}): its state is UNKNOWN. Retry with the SAME client_order_id, never a "
                "new one: the retry looks the order up before sending anything",
                conn_id=self.conn_id,
                status_code=first.status_code,
            ) from None
        if existing is not None:
            self._check_same_order(existing, fields)
            log.warning("%s: order %s already existed at Alpaca (id %s, status %s): returning it, not sending again",
                        self.conn_id, cid, existing.get("id"), existing.get("status"))
            return existing
        if duplicate:
            raise VendorError(
                f"order {cid} ({summary}): Alpaca refused the client_order_id as already used, yet has no order "
                "with it; client_order_ids stay taken after cancel: pick a new id only after checking the account",
                conn_id=self.conn_id,
                status_code=first.status_code,
            )
        raise VendorUnavailableError(
            f"order {cid} ({summary}) was NOT placed: {_strip_prefix(first)}; Alpaca has no order with that "
            "client_order_id. It is safe to retry with the same client_order_id",
            conn_id=self.conn_id,
            status_code=first.status_code,
        )

    def _check_same_order(self, existing: dict[str, Any], fields: dict[str, Any]) -> None:
        """An existing order under our id must be the order we meant (same symbol and side)."""
        theirs = (str(existing.get("symbol") or "").replace("/", "").upper(), str(existing.get("side") or "").lower())
        ours = (str(fields["symbol"]).replace("/", "").upper(), str(fields["side"]))
        if theirs != ours:
            raise InvalidInputError(
                f"client_order_id {fields['client_order_id']!r} already names another order at Alpaca "
                f"({theirs[1]} {theirs[0]}, id {existing.get('id')}), not {ours[1]} {ours[0]}: use a new id"
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


def _alpaca_timeframe(tf: Timeframe) -> Any:
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

    unit = {"Min": TimeFrameUnit.Minute, "Hour": TimeFrameUnit.Hour, "Day": TimeFrameUnit.Day}[tf.unit]
    return TimeFrame(tf.amount, unit)


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
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    return number


def _ambiguous(err: VendorError) -> bool:
    """Whether a failed submission may have placed the order (so it must be looked up, not re-sent)."""
    if isinstance(err, (VendorUnavailableError, RateLimitError)):
        return True
    if err.status_code is None:  # a 2xx that was not JSON, a body without an order
        return True
    return err.status_code == 408 or _is_duplicate_id(err)


def _is_duplicate_id(err: VendorError) -> bool:
    text = str(err).lower()
    return err.status_code == 422 and "client_order_id" in text and "unique" in text


def _strip_prefix(err: VendorError) -> str:
    text = str(err)
    prefix = f"connection {err.conn_id!r}: " if err.conn_id else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


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




def _dump(value: object) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


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
