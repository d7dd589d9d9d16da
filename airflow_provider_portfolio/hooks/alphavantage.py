"""Alpha Vantage: daily and intraday bars (equities and crypto), news with per-ticker sentiment.

Connection (type ``alphavantage``): the API key in the password field; optional extras ``base_url``
(default ``https://www.alphavantage.co``; every call goes to ``<base_url>/query``) and ``timeout``.

Why plain HTTP and not the ``alpha_vantage`` package: its sync classes call the module-level
``requests.get(url)`` with no timeout and no status check, so a hung vendor hangs the task, a
``requests_mock`` session cannot see the call, and the key travels inside a URL the package may put in
its exceptions. This hook calls ``GET /query`` itself through :meth:`VendorHook.get_json` (one session,
the connection's timeout, redacted errors) and every read goes through :meth:`VendorHook.read`
(bounded retries of timeouts, 5xx and burst limits; a spent daily quota is raised at once).

How Alpha Vantage answers trouble: almost always HTTP 200 with a one-key JSON body, mapped by
:meth:`AlphaVantageHook.check_body`:

=========================================================== ===========================================
body                                                        error
=========================================================== ===========================================
``Note``/``Information`` "...spreading out your free API    :class:`RateLimitError` ``burst`` (retried)
requests more sparingly (1 request per second)..." or the
older "...API call frequency is 5 calls per minute..."
``Information`` "We have detected your API key as ... and   :class:`RateLimitError` ``quota`` (not
our standard API rate limit is 25 requests per day..."      retried; the key it echoes is redacted)
``Information`` "...This is a premium endpoint..." or       :class:`PlanNotSupportedError`
"The outputsize=full parameter value is a premium feature"
``Error Message``/``Information`` "the parameter apikey is  :class:`AuthenticationError`
invalid or missing..."
``Error Message`` "Invalid API call. Please retry or visit   :class:`UnknownSymbolError`
the documentation..." (an unknown symbol)
a body without the expected series                          :class:`VendorError`
=========================================================== ===========================================

Timestamps:

- daily bars (``TIME_SERIES_DAILY``, ``DIGITAL_CURRENCY_DAILY``) are keyed by session date; they are
  labelled midnight UTC of that date, like every source (see :mod:`~airflow_provider_portfolio.market.bars`);
- intraday equity bars (``TIME_SERIES_INTRADAY``) are keyed by a local wall-clock time in the zone
  that ``Meta Data`` -> ``6. Time Zone`` names (``US/Eastern``); crypto intraday (``CRYPTO_INTRADAY``)
  in ``UTC`` (``9. Time Zone``). The key is the bar's START: the extended-hours day runs from the
  ``04:00:00`` bar to the ``19:55:00`` (5min) / ``19:59:00`` (1min) bar, so a bar labelled by its end
  would show a ``20:00:00`` bar, which the API does not return. The bars are converted to UTC as they
  are; :attr:`AlphaVantageHook.intraday_label` switches to end-labelling should the vendor change;
- news ``time_published`` (``20240603T123000``) carries no zone and Alpha Vantage documents none; it
  is read as UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import (
    AuthenticationError,
    InvalidInputError,
    PlanNotSupportedError,
    RateLimitError,
    UnknownSymbolError,
    VendorError,
)
from airflow_provider_portfolio.hooks.vendor import VendorHook, shorten
from airflow_provider_portfolio.market.params import utc_date, utc_date_range, validate_symbol

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.market.news import NewsItem

DEFAULT_BASE_URL = "https://www.alphavantage.co"

#: Canonical timeframe -> Alpha Vantage ``interval``.
INTRADAY_INTERVALS: dict[str, str] = {
    "1Min": "1min",
    "5Min": "5min",
    "15Min": "15min",
    "30Min": "30min",
    "1Hour": "60min",
}

_NO_ARTICLES = "no articles found"
_QUOTA = re.compile(r"(?i)rate limit is \d+ (?:requests|calls) per day|daily rate limit")
_BURST = re.compile(r"(?i)spreading out|call frequency|burst|per second|per minute")
_PREMIUM = re.compile(r"(?i)premium (?:endpoint|feature)|premium plans? .*(?:unlock|access)")


class AlphaVantageHook(VendorHook):
    """Alpha Vantage through its HTTP API; a :class:`~airflow_provider_portfolio.market.sources.BarSource` and
    :class:`~airflow_provider_portfolio.market.sources.NewsSource` (news scored by the vendor).

    :param alphavantage_conn_id: the ``alphavantage`` connection (API key in the password). Nothing is
        read until a method is called.
    """

    conn_name_attr = "alphavantage_conn_id"
    default_conn_name = "alphavantage_default"
    conn_type = "alphavantage"
    hook_name = "Alpha Vantage"
    vendor = "Alpha Vantage"

    #: Daily ranges starting more than this many weekdays back ask ``outputsize=full`` (a premium
    #: feature on free keys); ``compact`` returns the latest 100 sessions.
    compact_sessions: int = 95
    #: Intraday ranges wholly inside this many days back are served by one call without ``month``;
    #: older ranges by one ``month=YYYY-MM`` call per calendar month.
    recent_intraday_days: int = 28
    #: Most calendar months one intraday request may span.
    max_intraday_months: int = 12
    #: What an intraday key labels: ``"start"`` (observed) or ``"end"`` of the bar.
    intraday_label: str = "start"
    #: Articles :meth:`get_news` asks for (one call whatever the number; the vendor allows 1 to 1000).
    news_limit: int = 200

    def __init__(self, alphavantage_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alphavantage_conn_id = alphavantage_conn_id

    # --- transport ------------------------------------------------------------------------------

    def query(self, params: dict[str, str], what: str, *, expect: str | None = None) -> dict[str, Any]:
        """``GET <base_url>/query`` with ``params`` and the key, retried as a read; the checked JSON body.

        :param expect: a key the body must hold (the series); its absence is a :class:`VendorError`.
        """
        url = self.base_url(DEFAULT_BASE_URL) + "/query"
        key = self.api_key()

        def call() -> dict[str, Any]:
            body = self.get_json(url, params={**params, "apikey": key}, what=what)
            self.check_body(body, what, expect=expect)
            return body

        return self.read(call, what)

    def check_body(self, body: Any, what: str, *, expect: str | None = None) -> None:
        """Raise the error an HTTP-200 Alpha Vantage body means (see the module's table).

        An ``Information`` saying "No articles found" (NEWS_SENTIMENT) is an answer, not an error.
        """
        if not isinstance(body, dict):
            raise VendorError(
                f"{self.vendor} answered {what} with a JSON {type(body).__name__}, not an object: "
                f"{self.redact(shorten(body))!r}",
                conn_id=self.conn_id,
            )
        for field in ("Error Message", "Information", "Note"):
            text = body.get(field)
            if isinstance(text, str) and text.strip() and not (expect and expect in body):
                self._raise_for_text(field, text, what)
        if expect is not None and expect not in body:
            keys = ", ".join(sorted(map(str, body))[:6]) or "none"
            raise VendorError(
                f"{self.vendor} answered {what} without {expect!r} (keys: {self.redact(keys)})",
                conn_id=self.conn_id,
            )

    def _raise_for_text(self, field: str, text: str, what: str) -> None:
        lowered = text.lower()
        message = f"{self.vendor} refused {what}: {self.redact(shorten(text, 200))}"
        if field == "Information" and _NO_ARTICLES in lowered:
            return
        if "apikey" in lowered and ("invalid" in lowered or "missing" in lowered):
            raise AuthenticationError(message + " (check the connection's API key)", conn_id=self.conn_id)
        if field == "Error Message":
            if "invalid api call" in lowered:
                raise UnknownSymbolError(
                    f"{self.vendor} does not know the symbol of {what} (Invalid API call)", conn_id=self.conn_id
                )
            raise VendorError(message, conn_id=self.conn_id)
        if _BURST.search(text):
            raise RateLimitError(message, kind=RateLimitError.BURST, retry_after=_burst_wait(lowered),
                                 conn_id=self.conn_id)
        if _QUOTA.search(text):
            raise RateLimitError(
                message + " (daily quota spent: no retry until it resets)", kind=RateLimitError.QUOTA,
                conn_id=self.conn_id,
            )
        if _PREMIUM.search(text):
            raise PlanNotSupportedError(
                f"{what} is not available on this Alpha Vantage plan: {self.redact(shorten(text, 200))}",
                conn_id=self.conn_id,
            )
        if "invalid inputs" in lowered:
            raise UnknownSymbolError(message, conn_id=self.conn_id)
        if field == "Note":  # historically the per-minute limit
            raise RateLimitError(message, kind=RateLimitError.BURST, conn_id=self.conn_id)
        raise VendorError(message, conn_id=self.conn_id)

    # --- bars -----------------------------------------------------------------------------------

    def get_bars(
        self, symbols: str | Sequence[str], start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """Bars of one symbol or of a list (the ``BarSource`` call): Alpha Vantage serves one symbol a call, so a list
        is asked symbol by symbol (:meth:`VendorHook.bars_symbol_by_symbol` over :meth:`bars_of`)."""
        return self.bars_symbol_by_symbol(symbols, start, end, timeframe)

    def bars_of(
        self, symbol: str, start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """Bars of ``symbol`` dated in [start, end] (UTC dates), oldest first, as the canonical bar frame.

        Equities: ``TIME_SERIES_DAILY`` (``outputsize=full`` only when ``start`` lies more than about
        100 sessions back) or ``TIME_SERIES_INTRADAY`` (``1Min``, ``5Min``, ``15Min``, ``30Min``,
        ``1Hour``; extended hours included, as the API returns them). Crypto pairs ``BASE/QUOTE``:
        ``DIGITAL_CURRENCY_DAILY`` or ``CRYPTO_INTRADAY`` (premium) with ``symbol=BASE&market=QUOTE``.

        :return: the canonical bar frame (``source`` = :attr:`name`); empty when no bar falls in range.
        :raises InvalidInputError: an unsupported timeframe, a bad symbol, start after end.
        :raises VendorError: (and subclasses) what the vendor's answer means.
        """
        import pandas as pd

        from airflow_provider_portfolio.market.bars import empty_bars, parse_timeframe, to_bar_frame
        from airflow_provider_portfolio.market.params import is_crypto

        tf = parse_timeframe(timeframe)
        symbol = validate_symbol(symbol)
        first, last = utc_date_range(start, end)
        crypto = is_crypto(symbol)
        base, _, market = symbol.partition("/")
        if tf.is_daily:
            if crypto:
                params = {"function": "DIGITAL_CURRENCY_DAILY", "symbol": base, "market": market}
                series = "Time Series (Digital Currency Daily)"
            else:
                full = _weekdays_between(first, _today()) > self.compact_sessions
                params = {"function": "TIME_SERIES_DAILY", "symbol": symbol,
                          "outputsize": "full" if full else "compact"}
                series = "Time Series (Daily)"
            calls = [params]
        else:
            interval = INTRADAY_INTERVALS.get(tf.name)
            if interval is None:
                raise InvalidInputError(
                    f"Alpha Vantage has no {tf.name} bars: use one of {', '.join(INTRADAY_INTERVALS)} or 1Day"
                )
            if crypto:
                base_params = {"function": "CRYPTO_INTRADAY", "symbol": base, "market": market,
                               "interval": interval, "outputsize": "full"}
                series = f"Time Series Crypto ({interval})"
                calls = [base_params]
            else:
                base_params = {"function": "TIME_SERIES_INTRADAY", "symbol": symbol, "interval": interval,
                               "outputsize": "full"}
                series = f"Time Series ({interval})"
                calls = [{**base_params, "month": m} for m in self._months(first, last)] or [base_params]

        lo = pd.Timestamp(first, tz="UTC")
        hi = pd.Timestamp(last, tz="UTC") + pd.Timedelta(days=1)
        frames = []
        for params in calls:
            what = f"{tf.name} bars of {symbol}" + (f" for {params['month']}" if "month" in params else "")
            body = self.query(params, what, expect=series)
            rows = body[series]
            if not isinstance(rows, dict):
                raise VendorError(f"{self.vendor} answered {what} with a malformed {series!r}", conn_id=self.conn_id)
            if not rows:
                continue
            frame = self._rows_to_frame(rows, market if crypto else None, what)
            if tf.is_daily:
                frame["ts"] = pd.to_datetime(frame["ts"].str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
                frame["ts"] = frame["ts"].dt.tz_localize("UTC")
            else:
                zone = _meta_time_zone(body, "UTC" if crypto else "US/Eastern")
                local = pd.to_datetime(frame["ts"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
                try:
                    frame["ts"] = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
                except Exception as err:  # an unknown zone name
                    raise VendorError(
                        f"{self.vendor} answered {what} in an unknown time zone {zone!r}: {type(err).__name__}",
                        conn_id=self.conn_id,
                    ) from None
                if self.intraday_label == "end":
                    frame["ts"] = frame["ts"] - tf.delta
            if frame["ts"].isna().any():
                bad = frame.loc[frame["ts"].isna(), "raw"].head(3).tolist()
                raise VendorError(f"{self.vendor} answered {what} with unreadable timestamps {bad}",
                                  conn_id=self.conn_id)
            frames.append(frame[(frame["ts"] >= lo) & (frame["ts"] < hi)])
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_bars()
        # Duplicate timestamps (months answering the same bar) stay: the quality gate rejects the batch.
        out = pd.concat(frames, ignore_index=True)
        return to_bar_frame(out.drop(columns=["raw"]), symbol=symbol, timeframe=tf.name, source=self.name)

    def _months(self, first: date, last: date) -> list[str]:
        """``YYYY-MM`` months to ask for, or [] when the latest month of data covers the range."""
        if (_today() - first).days <= self.recent_intraday_days:
            return []
        months = []
        year, month = first.year, first.month
        while (year, month) <= (last.year, last.month):
            months.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        if len(months) > self.max_intraday_months:
            raise InvalidInputError(
                f"an Alpha Vantage intraday request spans {len(months)} months (one call each); "
                f"ask for at most {self.max_intraday_months} months at a time"
            )
        return months

    def _rows_to_frame(self, rows: dict[str, Any], market: str | None, what: str) -> pd.DataFrame:
        import pandas as pd

        records = []
        for stamp, values in rows.items():
            if not isinstance(values, dict):
                raise VendorError(f"{self.vendor} answered {what} with a malformed bar at {stamp!r}",
                                  conn_id=self.conn_id)
            record: dict[str, Any] = {"ts": str(stamp), "raw": str(stamp)}
            for number, field in ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (5, "volume")):
                value = _pick(values, number, field, market)
                if value is None:
                    raise VendorError(
                        f"{self.vendor} answered {what} with a bar at {stamp!r} lacking {field!r}",
                        conn_id=self.conn_id,
                    )
                record[field] = value
            records.append(record)
        frame = pd.DataFrame.from_records(records)
        for field in ("open", "high", "low", "close", "volume"):
            numbers = pd.to_numeric(frame[field], errors="coerce")
            if numbers.isna().any():
                bad = frame.loc[numbers.isna(), field].head(3).tolist()
                raise VendorError(f"{self.vendor} answered {what} with non-numeric {field} values {bad}",
                                  conn_id=self.conn_id)
            frame[field] = numbers.astype("float64")
        return frame

    # --- news -----------------------------------------------------------------------------------

    def get_news_sentiment(
        self,
        symbols: str | list[str] | tuple[str, ...],
        start: date | datetime | None = None,
        end: date | datetime | None = None,
        limit: int = 50,
    ) -> list[NewsItem]:
        """News of ``symbols`` from ``NEWS_SENTIMENT``: one item per (article, requested ticker it scores).

        ``score`` and ``vendor_score`` are the article's ``ticker_sentiment_score`` for that ticker, clipped to
        [-1, 1] (an article lacking a readable score for it is scored with
        :func:`~airflow_provider_portfolio.market.news.score_text` on its title and summary, ``vendor_score``
        ``None``).
        ``published`` is ``time_published`` read as UTC. Crypto pairs ``BTC/USD`` are asked as
        ``CRYPTO:BTC`` and reported under the pair.

        :param start: earliest publication (a date means its 00:00 UTC; a datetime its minute).
        :param end: latest publication (a date means its 23:59 UTC).
        :param limit: articles asked for, 1 to 1000 (the vendor's bounds).
        :return: items ordered by publication time; empty when no article matches.
        """
        from airflow_provider_portfolio.market.news import NewsItem, score_text, sort_news
        from airflow_provider_portfolio.market.params import is_crypto, validate_symbols

        wanted = validate_symbols(symbols)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInputError(f"limit must be an integer in [1, 1000], got {limit!r}")
        tickers = {(f"CRYPTO:{s.partition('/')[0]}" if is_crypto(s) else s): s for s in wanted}
        params = {"function": "NEWS_SENTIMENT", "tickers": ",".join(tickers), "sort": "LATEST", "limit": str(limit)}
        time_from = _news_stamp(start, "start", end_of_day=False)
        time_to = _news_stamp(end, "end", end_of_day=True)
        if time_from and time_to and time_from > time_to:
            raise InvalidInputError(f"start {start} is after end {end}")
        if time_from:
            params["time_from"] = time_from
        if time_to:
            params["time_to"] = time_to
        what = f"news of {', '.join(wanted)}"
        body = self.query(params, what)
        feed = body.get("feed")
        if feed is None:
            if _NO_ARTICLES in str(body.get("Information", "")).lower():
                return []
            raise VendorError(f"{self.vendor} answered {what} without 'feed'", conn_id=self.conn_id)
        if not isinstance(feed, list):
            raise VendorError(f"{self.vendor} answered {what} with a malformed 'feed'", conn_id=self.conn_id)
        items = []
        for article in feed:
            if not isinstance(article, dict):
                raise VendorError(f"{self.vendor} answered {what} with a malformed article", conn_id=self.conn_id)
            published = _parse_published(article.get("time_published"))
            if published is None:
                raise VendorError(
                    f"{self.vendor} answered {what} with an unreadable time_published "
                    f"{self.redact(article.get('time_published'))!r}",
                    conn_id=self.conn_id,
                )
            headline = str(article.get("title") or "").strip()
            for entry in article.get("ticker_sentiment") or []:
                if not isinstance(entry, dict):
                    continue
                symbol = tickers.get(str(entry.get("ticker", "")).upper())
                if symbol is None:
                    continue
                try:
                    score = float(entry["ticker_sentiment_score"])
                except (KeyError, TypeError, ValueError):
                    score = float("nan")
                vendor_score: float | None = min(1.0, max(-1.0, score)) if math.isfinite(score) else None
                if vendor_score is None:  # missing, NaN or infinite: the lexicon scores the article
                    score = score_text(headline, article.get("summary"))
                items.append(NewsItem(
                    symbol=symbol,
                    published=published,
                    headline=headline,
                    score=vendor_score if vendor_score is not None else min(1.0, max(-1.0, score)),
                    source="alphavantage",
                    url=article.get("url") or None,
                    vendor_score=vendor_score,
                ))
        return sort_news(items)

    def get_news(self, symbols: Sequence[str], start: date | datetime, end: date | datetime) -> list[NewsItem]:
        """The :class:`~airflow_provider_portfolio.market.sources.NewsSource` call: :meth:`get_news_sentiment`
        of [start, end] asking :attr:`news_limit` articles, each item carrying Alpha Vantage's per-ticker score
        (``vendor_score``, and ``score`` the same)."""
        return self.get_news_sentiment(symbols, start, end, limit=self.news_limit)

    # --- Test button ----------------------------------------------------------------------------

    def probe(self) -> str:
        """One ``GLOBAL_QUOTE`` of IBM: proves the key works (and spends one call of the daily quota)."""
        body = self.query({"function": "GLOBAL_QUOTE", "symbol": "IBM"}, "a quote of IBM", expect="Global Quote")
        quote = body.get("Global Quote") or {}
        price = quote.get("05. price") if isinstance(quote, dict) else None
        day = quote.get("07. latest trading day") if isinstance(quote, dict) else None
        if price:
            return f"Alpha Vantage answered: IBM {price} ({day})"
        return "Alpha Vantage answered (key accepted)"


# --- helpers ------------------------------------------------------------------------------------


def _today() -> date:
    return datetime.now(timezone.utc).date()






def _weekdays_between(first: date, last: date) -> int:
    if first >= last:
        return 0
    days = (last - first).days
    weeks, rest = divmod(days, 7)
    extra = sum(1 for i in range(rest) if (first + timedelta(days=i)).weekday() < 5)
    return weeks * 5 + extra


def _pick(values: dict[str, Any], number: int, field: str, market: str | None) -> Any:
    """``"<n>. <field>"``; older crypto bodies: ``"<n>a. <field> (<MARKET>)"``."""
    exact = values.get(f"{number}. {field}")
    if exact is not None:
        return exact
    candidates = [k for k in values if re.match(rf"^{number}[ab]?\. {field}\b", str(k))]
    if market:
        for key in candidates:
            if f"({market.upper()})" in str(key).upper():
                return values[key]
    return values[candidates[0]] if candidates else None


def _meta_time_zone(body: dict[str, Any], default: str) -> str:
    meta = body.get("Meta Data")
    if isinstance(meta, dict):
        for key, value in meta.items():
            if str(key).endswith("Time Zone") and isinstance(value, str) and value.strip():
                return value.strip()
    return default


def _news_stamp(value: date | datetime | None, name: str, *, end_of_day: bool) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value.astimezone(timezone.utc) if value.tzinfo else value
    else:
        day = utc_date(value, name)
        moment = datetime.combine(day, time(23, 59) if end_of_day else time(0, 0))
    return moment.strftime("%Y%m%dT%H%M")


def _parse_published(text: object) -> datetime | None:
    for fmt in ("%Y%m%dT%H%M%S", "%Y%m%dT%H%M"):
        try:
            return datetime.strptime(str(text), fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def _burst_wait(lowered: str) -> float | None:
    if "per second" in lowered:
        return 1.0
    if "per minute" in lowered:
        return 60.0  # capped by VendorHook.max_wait_s
    return None

