"""Alpaca market data: the bars, latest quotes and news half of :class:`~airflow_provider_portfolio.hooks.alpaca.AlpacaHook`.

:class:`AlpacaMarketData` is mixed into the hook; it reads through the hook's clients and bounded reads. Bars and
quotes ask :data:`MAX_SYMBOLS_PER_REQUEST` symbols a request (stocks and crypto pairs apart). See
:mod:`~airflow_provider_portfolio.hooks.alpaca` for timestamps and errors.

Importing this module imports neither alpaca-py nor pandas.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError, VendorError
from airflow_provider_portfolio.hooks.alpaca_orders import _plain_params
from airflow_provider_portfolio.hooks.vendor import shorten
from airflow_provider_portfolio.market.params import is_crypto, utc_day_window, validate_symbols

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.market.bars import Timeframe
    from airflow_provider_portfolio.market.news import NewsItem
    from airflow_provider_portfolio.market.sources import Quote

log = logging.getLogger(__name__)

#: Bars asked per page (Alpaca's maximum); pages follow ``next_page_token``.
BAR_PAGE_SIZE = 10_000
#: Symbols asked in one bars or latest-quotes request. Alpaca's v2 multi-symbol endpoints take a comma-separated
#: ``symbols`` list and document no maximum (the retired v1 bars API documented 200); the page ``limit`` counts
#: bars across all the symbols of a request (sorted by symbol, then time) and pages follow ``next_page_token``,
#: so a larger batch only saves requests. What bounds it is the URL: 100 symbols of up to 12 characters
#: (``BRK.B``, ``BTC/USD`` once URL-encoded, ``%2C`` between them) keep the query near 1.5 KB, far below the
#: 8 KB request line common proxies and servers accept. 500 symbols are 5 requests (plus further pages), not 500.
MAX_SYMBOLS_PER_REQUEST = 100
#: News articles asked per page (Alpaca's maximum).
NEWS_PAGE_SIZE = 50
#: Zone whose midnight stamps Alpaca's daily bars.
STOCK_SESSION_TZ = "America/New_York"
CRYPTO_SESSION_TZ = "America/Chicago"


class AlpacaMarketData:
    """Bars, latest quotes and news of the Alpaca hook (it provides the clients, ``feed``, ``_read``,
    ``bars_in_batches``, ``conn_id``, ``name``, ``vendor`` and ``redact``)."""

    stock_client: Any
    crypto_client: Any
    news_client: Any
    feed: str
    conn_id: str
    name: str
    vendor: str
    STOPS_BATCHES: tuple[type[Exception], ...]
    _read: Callable[..., Any]
    bars_in_batches: Callable[..., pd.DataFrame]
    redact: Callable[[object], str]

    # --- bars -----------------------------------------------------------------------------------

    def get_bars(
        self, symbols: str | Sequence[str], start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """Bars of ``symbols`` dated in [start, end] (UTC dates, inclusive) as one canonical bar frame.

        Stocks come from ``/v2/stocks/bars`` on the connection's feed, crypto pairs (``BTC/USD``) from
        ``/v1beta3/crypto/us/bars``, :data:`MAX_SYMBOLS_PER_REQUEST` symbols a request; every page is fetched
        (``next_page_token``), each page a bounded read. Daily bars are labelled by session date at midnight
        UTC, intraday bars by their start (UTC). Symbols without bars in the range simply have no rows; no bars
        at all is an empty frame.

        A request that fails fails its symbols only (:meth:`VendorHook.bars_in_batches`: a rate limit, a
        refused key or an unavailable vendor stops the remaining requests).

        :param symbols: one ticker or pair, a list, or a comma-separated string.
        :param timeframe: ``1Min`` ... ``59Min``, ``1Hour`` ... ``23Hour``, ``1Day``.
        :raises PartialBarsError: when some symbols were served and others failed.
        :raises VendorError: (and subclasses) when every symbol failed for one reason.
        """
        from airflow_provider_portfolio.market.bars import parse_timeframe

        tf = parse_timeframe(timeframe)
        names = validate_symbols(symbols)
        lo, hi = utc_day_window(start, end)
        batches = _batches(names)
        return self.bars_in_batches([batch for batch, _ in batches],
                                    lambda batch: self._batch_bars(batch, tf, lo, hi, crypto=is_crypto(batch[0])))

    def _batch_bars(self, symbols: list[str], tf: Timeframe, lo: datetime, hi: datetime, *,
                    crypto: bool) -> pd.DataFrame:
        """The canonical bar frame of one request's symbols (all stocks or all crypto pairs)."""
        from airflow_provider_portfolio.market.bars import empty_bars, to_bar_frame

        raw = self._bar_pages(symbols, tf, lo, hi, crypto=crypto)
        frame = self._bars_frame({s: rows for s in symbols if (rows := raw.get(s))}, tf, lo, hi, crypto=crypto)
        if frame.empty:
            return empty_bars()
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
        """The bars of one symbol (see :meth:`_bars_frame`)."""
        return self._bars_frame({symbol: rows}, tf, lo, hi, crypto=crypto)

    def _bars_frame(self, raw: dict[str, list[Any]], tf: Timeframe, lo: datetime, hi: datetime, *,
                    crypto: bool) -> pd.DataFrame:
        """Alpaca's raw bars (symbol -> ``{t, o, h, l, c, v}`` rows) as one frame, in one pass for every symbol."""
        import pandas as pd

        what = f"{tf.name} bars of {_listed(list(raw))}"
        columns = {"t": "ts", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
        rows = [r for symbol_rows in raw.values() for r in symbol_rows]
        if not all(isinstance(r, dict) and all(k in r for k in columns) for r in rows):
            raise VendorError(f"{self.vendor} answered {what} with bars lacking t/o/h/l/c/v", conn_id=self.conn_id)
        frame = pd.DataFrame({name: [r[key] for r in rows] for key, name in columns.items()})
        frame["symbol"] = [symbol for symbol, symbol_rows in raw.items() for _ in symbol_rows]
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
        # Duplicate timestamps stay: the quality gate's duplicate_timestamp rule rejects the batch.
        return frame[(frame["ts"] >= pd.Timestamp(lo)) & (frame["ts"] < pd.Timestamp(hi))]

    # --- quotes -------------------------------------------------------------------------------

    def get_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """The latest quote of each symbol: the :class:`~airflow_provider_portfolio.market.sources.QuoteSource` call.

        Stocks from ``/v2/stocks/quotes/latest`` on the connection's feed, crypto pairs from
        ``/v1beta3/crypto/us/latest/quotes``, :data:`MAX_SYMBOLS_PER_REQUEST` symbols a request (each a
        bounded read). ``price`` is the bid/ask midpoint; a quote without both sides above 0 (a halted or
        one-sided book, an empty IEX quote) is left out rather than priced from a trade: that would cost a
        second request per batch, and a symbol left out goes to the next quote source or the last closed bar.
        ``ts`` is the quote's ``t``. A request that fails leaves its symbols out (logged).

        :raises VendorError: (and subclasses) when no symbol was quoted and a request failed.
        """
        quotes: dict[str, Quote] = {}
        errors: list[VendorError] = []
        for batch, _ in _batches(validate_symbols(list(symbols))):
            if is_crypto(batch[0]):
                client, path, params = self.crypto_client, "/crypto/us/latest/quotes", {"symbols": ",".join(batch)}
            else:
                client, path = self.stock_client, "/stocks/quotes/latest"
                params = {"symbols": ",".join(batch), "feed": self.feed}
            what = f"the latest quotes of {_listed(batch)}"
            try:
                body = self._read(lambda c=client, p=path, q=params: c.get(p, q), what)
                data = body.get("quotes") if isinstance(body, dict) else None
                if not isinstance(data, dict):
                    raise VendorError(f"{self.vendor} answered {what} without 'quotes': "
                                      f"{self.redact(shorten(_dump(body)))!r}", conn_id=self.conn_id)
            except VendorError as err:
                errors.append(err)
                log.warning("%s: %s: %s", self.conn_id, what, err)
                if isinstance(err, self.STOPS_BATCHES):
                    break
                continue
            for symbol in batch:
                quote = self._quote(symbol, data.get(symbol))
                if quote is not None:
                    quotes[symbol] = quote
        if not quotes and errors:
            raise errors[0]
        return quotes

    def _quote(self, symbol: str, raw: Any) -> Quote | None:
        """A :class:`Quote` from Alpaca's ``{bp, ap, t, ...}``; ``None`` without two sides above 0 or a time."""
        from airflow_provider_portfolio.market.sources import Quote

        if not isinstance(raw, dict):
            return None
        try:
            bid, ask = float(raw.get("bp") or 0), float(raw.get("ap") or 0)
            ts = datetime.fromisoformat(str(raw["t"]).replace("Z", "+00:00"))
        except (KeyError, TypeError, ValueError):
            log.warning("%s: unreadable quote of %s left out: %s", self.conn_id, symbol, shorten(_dump(raw)))
            return None
        if not (bid > 0 and ask > 0) or bid != bid or ask != ask or ts.tzinfo is None:
            return None
        return Quote(symbol=symbol, price=(bid + ask) / 2, ts=ts, source=self.name, bid=bid, ask=ask)

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


# --- helpers ------------------------------------------------------------------------------------------


def _batches(symbols: list[str]) -> list[tuple[list[str], bool]]:
    """``symbols`` in requests: stocks and crypto pairs apart, :data:`MAX_SYMBOLS_PER_REQUEST` each at most."""
    out = []
    for crypto in (False, True):
        group = [s for s in symbols if is_crypto(s) == crypto]
        out += [(group[i:i + MAX_SYMBOLS_PER_REQUEST], crypto) for i in range(0, len(group), MAX_SYMBOLS_PER_REQUEST)]
    return out


def _listed(symbols: list[str], shown: int = 5) -> str:
    """``AAPL,MSFT`` or ``AAPL,MSFT,... (100 symbols)``, for messages."""
    text = ",".join(symbols[:shown])
    return text if len(symbols) <= shown else f"{text},... ({len(symbols)} symbols)"


def _alpaca_timeframe(tf: Timeframe) -> Any:
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

    unit = {"Min": TimeFrameUnit.Minute, "Hour": TimeFrameUnit.Hour, "Day": TimeFrameUnit.Day}[tf.unit]
    return TimeFrame(tf.amount, unit)


def _dump(value: object) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)
