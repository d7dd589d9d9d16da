"""Finnhub: quotes, company news (lexicon-scored) and candles (equities and crypto).

Connection (type ``finnhub``): the API key in the password field; optional extras ``base_url``
(default ``https://finnhub.io/api/v1``), ``timeout`` and ``crypto_exchange`` (default ``BINANCE``).

Why plain HTTP and not the ``finnhub`` package: the SDK sends the key as the ``token`` query
parameter, so it lands in every URL that exceptions, proxies and access logs print; it has no
retries, rejects 2xx bodies without a JSON content type and joins paths with a double slash. This hook
calls the REST API through :meth:`VendorHook.get_json` (the connection's timeout, redacted errors) and
sends the key in the ``X-Finnhub-Token`` header, which Finnhub accepts in place of ``token=`` and
which never appears in a URL. Reads go through :meth:`VendorHook.read` (bounded retries of timeouts,
5xx and HTTP 429, honouring ``Retry-After``).

Errors: HTTP 401 -> :class:`AuthenticationError`; 403 (``{"error": "You don't have access to this
resource."}``, e.g. ``/stock/candle`` on the free plan) -> :class:`PlanNotSupportedError` "not
available on this Finnhub plan"; 429 -> burst :class:`RateLimitError` (60 calls/min, 30/s on the free
plan); 5xx -> :class:`VendorUnavailableError`; a 200 body holding ``error`` -> :class:`VendorError`.

Symbols: equities as the desk writes them (``AAPL``, ``BRK.B``). Crypto pairs ``BASE/QUOTE`` map to
Finnhub's ``EXCHANGE:BASEQUOTE`` (``BTC/USD`` -> ``BINANCE:BTCUSDT``): the exchange is the
connection's ``crypto_exchange`` (default ``BINANCE``) and, on Binance, which lists no USD books, a
``USD`` quote becomes ``USDT``. A symbol already holding ``:`` is sent as it is.

Timestamps: candle ``t`` is unix seconds. Daily candles are labelled midnight UTC of the UTC date of
``t`` (Finnhub stamps US daily candles 00:00 UTC of the session date; older answers used the market
open, which has the same UTC date); intraday candles are labelled by ``t``, the bar's start. News
``datetime`` is unix seconds (UTC).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import (
    InvalidInputError,
    PlanNotSupportedError,
    UnknownSymbolError,
    VendorError,
)
from airflow_provider_portfolio.hooks.vendor import VendorHook, shorten
from airflow_provider_portfolio.market.params import utc_date_range, utc_day_window, validate_symbol

if TYPE_CHECKING:
    import pandas as pd
    import requests

    from airflow_provider_portfolio.market.news import NewsItem
    from airflow_provider_portfolio.market.sources import Quote

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://finnhub.io/api/v1"

#: Canonical timeframe -> Finnhub candle ``resolution``.
RESOLUTIONS: dict[str, str] = {"1Min": "1", "5Min": "5", "15Min": "15", "30Min": "30", "1Hour": "60", "1Day": "D"}

QUOTE_FIELDS = ("c", "d", "dp", "h", "l", "o", "pc", "t")


class FinnhubHook(VendorHook):
    """Finnhub through its REST API; a :class:`~airflow_provider_portfolio.market.sources.BarSource`,
    :class:`~airflow_provider_portfolio.market.sources.NewsSource` (company news, lexicon-scored) and
    :class:`~airflow_provider_portfolio.market.sources.QuoteSource`.

    :param finnhub_conn_id: the ``finnhub`` connection (API key in the password). Nothing is read until
        a method is called.
    """

    conn_name_attr = "finnhub_conn_id"
    default_conn_name = "finnhub_default"
    conn_type = "finnhub"
    hook_name = "Finnhub"
    vendor = "Finnhub"

    #: Crypto exchange prefix when the connection names none.
    default_crypto_exchange: str = "BINANCE"

    def __init__(self, finnhub_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finnhub_conn_id = finnhub_conn_id

    # --- transport ------------------------------------------------------------------------------

    def request(self, path: str, params: dict[str, Any], what: str) -> Any:
        """``GET <base_url><path>`` with the key in ``X-Finnhub-Token``, retried as a read; the JSON body."""
        url = self.base_url(DEFAULT_BASE_URL) + path
        headers = {"X-Finnhub-Token": self.api_key()}

        def call() -> Any:
            body = self.get_json(url, params=params, headers=headers, what=what)
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                raise VendorError(f"{self.vendor} refused {what}: {self.redact(shorten(body['error']))}",
                                  conn_id=self.conn_id)
            return body

        return self.read(call, what)

    def check_response(self, response: requests.Response, what: str) -> None:
        """The base mapping, with 403 read as "not on this plan" (Finnhub's answer for premium endpoints)."""
        if response.status_code == 403:
            raise PlanNotSupportedError(
                f"{what} is not available on this Finnhub plan (HTTP 403: "
                f"{self.redact(shorten(_error_text(response)))})",
                conn_id=self.conn_id,
                status_code=403,
            )
        super().check_response(response, what)

    # --- quote ----------------------------------------------------------------------------------

    def get_quote(self, symbol: str) -> dict[str, Any]:
        """``/quote``: ``{c, d, dp, h, l, o, pc, t}`` as Finnhub returns them (``t`` unix seconds).

        :raises UnknownSymbolError: for Finnhub's all-zero answer (``c`` 0 and ``t`` 0).
        """
        vendor_symbol = self.vendor_symbol(symbol)
        what = f"a quote of {vendor_symbol}"
        body = self.request("/quote", {"symbol": vendor_symbol}, what)
        if not isinstance(body, dict) or any(k not in body for k in ("c", "t")):
            raise VendorError(f"{self.vendor} answered {what} with a malformed quote: {self.redact(shorten(body))!r}",
                              conn_id=self.conn_id)
        if not body.get("t") and not body.get("c"):
            raise UnknownSymbolError(f"{self.vendor} does not know {vendor_symbol!r} (an all-zero quote)",
                                     conn_id=self.conn_id)
        return {k: body.get(k) for k in QUOTE_FIELDS}

    def get_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """The :class:`~airflow_provider_portfolio.market.sources.QuoteSource` call: one ``/quote`` per symbol.

        ``price`` is ``c`` (the last price), ``ts`` is ``t``; ``/quote`` has no bid or ask. A symbol Finnhub
        does not know (its all-zero answer) or without a price is left out; so is one whose call fails, except
        that a rate limit, a refused key or the vendor unavailable stops the loop (the rest are left out).

        :raises VendorError: (and subclasses) when no symbol was quoted and a call failed.
        """
        from airflow_provider_portfolio.market.params import validate_symbols
        from airflow_provider_portfolio.market.sources import Quote

        quotes: dict[str, Quote] = {}
        errors: list[VendorError] = []
        for symbol in validate_symbols(list(symbols)):
            try:
                body = self.get_quote(symbol)
            except UnknownSymbolError:
                continue
            except VendorError as err:
                errors.append(err)
                log.warning("%s: no quote of %s: %s", self.conn_id, symbol, err)
                if isinstance(err, self.STOPS_BATCHES):
                    break
                continue
            try:
                price, stamp = float(body["c"]), int(body["t"])
            except (TypeError, ValueError):
                continue
            if stamp > 0 and math.isfinite(price) and price > 0:
                ts = datetime.fromtimestamp(stamp, tz=timezone.utc)
                quotes[symbol] = Quote(symbol=symbol, price=price, ts=ts, source=self.name)
        if not quotes and errors:
            raise errors[0]
        return quotes

    # --- news -----------------------------------------------------------------------------------

    def get_news(self, symbols: Sequence[str], start: date | datetime, end: date | datetime) -> list[NewsItem]:
        """The :class:`~airflow_provider_portfolio.market.sources.NewsSource` call: :meth:`get_company_news` of
        each equity (crypto pairs have no company news: left out, not an error), lexicon-scored.

        A symbol whose call fails is left out (logged), and a rate limit, a refused key or the vendor
        unavailable stops the loop.

        :raises VendorError: (and subclasses) when a call failed and no equity's news was read.
        """
        from airflow_provider_portfolio.market.news import sort_news
        from airflow_provider_portfolio.market.params import is_crypto, validate_symbols

        equities = [s for s in validate_symbols(list(symbols)) if not is_crypto(s)]
        utc_date_range(start, end)  # a bad range is refused before any call
        items: list[NewsItem] = []
        errors: list[VendorError] = []
        read = 0
        for symbol in equities:
            try:
                items += self.get_company_news(symbol, start, end)
                read += 1
            except VendorError as err:
                errors.append(err)
                log.warning("%s: no company news of %s: %s", self.conn_id, symbol, err)
                if isinstance(err, self.STOPS_BATCHES):
                    break
        if errors and not read:
            raise errors[0]
        return sort_news(items)

    def get_company_news(self, symbol: str, start: date | datetime, end: date | datetime) -> list[NewsItem]:
        """``/company-news`` of an equity for [start, end] (UTC dates), scored with ``score_text``.

        :return: items ordered by publication time; empty when there is no news (or Finnhub does not
            know the symbol: it answers ``[]`` either way).
        """
        from airflow_provider_portfolio.market.news import NewsItem, score_text, sort_news
        from airflow_provider_portfolio.market.params import is_crypto

        symbol = validate_symbol(symbol)
        if is_crypto(symbol):
            raise InvalidInputError(f"Finnhub company news covers equities only, not {symbol!r}")
        first, last = utc_date_range(start, end)
        what = f"company news of {symbol}"
        body = self.request("/company-news", {"symbol": symbol, "from": first.isoformat(), "to": last.isoformat()},
                            what)
        if not isinstance(body, list):
            raise VendorError(f"{self.vendor} answered {what} with a {type(body).__name__}, not a list",
                              conn_id=self.conn_id)
        items = []
        for article in body:
            if not isinstance(article, dict):
                raise VendorError(f"{self.vendor} answered {what} with a malformed article", conn_id=self.conn_id)
            try:
                published = datetime.fromtimestamp(int(article["datetime"]), tz=timezone.utc)
            except (KeyError, TypeError, ValueError, OverflowError, OSError):
                raise VendorError(
                    f"{self.vendor} answered {what} with an unreadable datetime "
                    f"{self.redact(article.get('datetime'))!r}",
                    conn_id=self.conn_id,
                ) from None
            headline = str(article.get("headline") or "").strip()
            items.append(NewsItem(
                symbol=symbol,
                published=published,
                headline=headline,
                score=score_text(headline, article.get("summary")),
                source="finnhub",
                url=article.get("url") or None,
            ))
        return sort_news(items)

    # --- bars -----------------------------------------------------------------------------------

    def get_bars(
        self, symbols: str | Sequence[str], start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """Bars of one symbol or of a list (the ``BarSource`` call): Finnhub serves one symbol a call, so a list
        is asked symbol by symbol (:meth:`VendorHook.bars_symbol_by_symbol` over :meth:`bars_of`)."""
        return self.bars_symbol_by_symbol(symbols, start, end, timeframe)

    def bars_of(
        self, symbol: str, start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """Candles of ``symbol`` dated in [start, end] (UTC dates), oldest first, as the canonical bar frame.

        ``/stock/candle`` for equities, ``/crypto/candle`` for pairs (see the module for the symbol
        mapping); resolutions ``1``, ``5``, ``15``, ``30``, ``60`` and ``D`` (``1Min`` ... ``1Hour``,
        ``1Day``). ``{"s": "no_data"}`` is an empty frame. The free plan answers 403 here:
        :class:`PlanNotSupportedError`.
        """
        import pandas as pd

        from airflow_provider_portfolio.market.bars import empty_bars, parse_timeframe, to_bar_frame
        from airflow_provider_portfolio.market.params import is_crypto

        tf = parse_timeframe(timeframe)
        resolution = RESOLUTIONS.get(tf.name)
        if resolution is None:
            raise InvalidInputError(f"Finnhub has no {tf.name} candles: use one of {', '.join(RESOLUTIONS)}")
        symbol = validate_symbol(symbol)
        lo, hi = utc_day_window(start, end)
        path = "/crypto/candle" if is_crypto(symbol) else "/stock/candle"
        vendor_symbol = self.vendor_symbol(symbol)
        what = f"{tf.name} candles of {vendor_symbol}"
        body = self.request(
            path,
            {"symbol": vendor_symbol, "resolution": resolution, "from": int(lo.timestamp()),
             "to": int(hi.timestamp()) - 1},
            what,
        )
        if not isinstance(body, dict) or "s" not in body:
            raise VendorError(f"{self.vendor} answered {what} without a status 's': {self.redact(shorten(body))!r}",
                              conn_id=self.conn_id)
        if body["s"] == "no_data":
            return empty_bars()
        if body["s"] != "ok":
            raise VendorError(f"{self.vendor} answered {what} with status {self.redact(body['s'])!r}",
                              conn_id=self.conn_id)
        columns = {"t": "ts", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
        arrays = {key: body.get(key) for key in columns}
        lengths = {len(v) if isinstance(v, list) else -1 for v in arrays.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise VendorError(f"{self.vendor} answered {what} with malformed candle arrays", conn_id=self.conn_id)
        if lengths == {0}:
            return empty_bars()
        frame = pd.DataFrame({name: arrays[key] for key, name in columns.items()})
        for col in ("ts", "open", "high", "low", "close", "volume"):
            numbers = pd.to_numeric(frame[col], errors="coerce")
            if numbers.isna().any():
                raise VendorError(f"{self.vendor} answered {what} with non-numeric {col} values", conn_id=self.conn_id)
            frame[col] = numbers
        ts = pd.to_datetime(frame["ts"].astype("int64"), unit="s", utc=True)
        frame["ts"] = ts.dt.floor("D") if tf.is_daily else ts
        frame = frame[(frame["ts"] >= pd.Timestamp(lo)) & (frame["ts"] < pd.Timestamp(hi))]
        if frame.empty:
            return empty_bars()
        # Duplicate timestamps stay: the quality gate's duplicate_timestamp rule rejects the batch.
        return to_bar_frame(frame, symbol=symbol, timeframe=tf.name, source=self.name)

    def vendor_symbol(self, symbol: str) -> str:
        """Finnhub's spelling: equities unchanged, ``BTC/USD`` -> ``BINANCE:BTCUSDT`` (see the module)."""
        from airflow_provider_portfolio.market.params import is_crypto

        if isinstance(symbol, str) and ":" in symbol and symbol.strip():
            return symbol.strip().upper()
        symbol = validate_symbol(symbol)
        if not is_crypto(symbol):
            return symbol
        base, _, quote = symbol.partition("/")
        exchange = str(self.extra("crypto_exchange", self.default_crypto_exchange)).strip().upper()
        if exchange == "BINANCE" and quote == "USD":
            quote = "USDT"
        return f"{exchange}:{base}{quote}"

    # --- Test button ----------------------------------------------------------------------------

    def probe(self) -> str:
        """One quote of AAPL."""
        quote = self.get_quote("AAPL")
        stamp = datetime.fromtimestamp(int(quote["t"]), tz=timezone.utc).isoformat() if quote.get("t") else "?"
        return f"Finnhub answered: AAPL {quote['c']} at {stamp}"


# --- helpers ------------------------------------------------------------------------------------






def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text or ""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return response.text or ""

