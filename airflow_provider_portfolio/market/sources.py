"""What market-data sources can do, as protocols, and the failover over them.

A source declares its capabilities by the protocols it implements:

- :class:`BarSource` (every source): bars of one or many symbols per call. Alpaca asks for up to its
  per-request number of symbols at once; Alpha Vantage and Finnhub loop over the symbols inside the hook
  and report the ones they could not serve with :class:`~airflow_provider_portfolio.exceptions.PartialBarsError`.
- :class:`NewsSource`: news about symbols, each item scored (the vendor's own score where it has one,
  Alpha Vantage's per-ticker scores; a lexicon score otherwise).
- :class:`QuoteSource`: the latest quote of symbols (Alpaca, Finnhub).

The synthetic market, the vendor hooks and test doubles implement them. :class:`FailoverChain` tries bar
sources in order, symbol by symbol within one batched call per source, and :func:`fetch_news` and
:func:`fetch_quotes` do the same for news and quotes, so a failing vendor never fails a job while another
source can serve, and when none can the error names every source and why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import pandas as pd

from airflow_provider_portfolio.exceptions import AllSourcesFailedError, InvalidInputError, PartialBarsError
from airflow_provider_portfolio.market.bars import empty_bars, to_bar_frame

if TYPE_CHECKING:
    from airflow_provider_portfolio.market.news import NewsItem

log = logging.getLogger(__name__)

_MAX_REASON = 300  # characters of an exception message kept in a failure reason


@runtime_checkable
class BarSource(Protocol):
    """What every market-data source implements.

    ``name`` identifies the source in bar frames (the ``source`` column), logs and errors, e.g.
    ``"synthetic"`` or ``"alpaca"``.

    A source raises :class:`~airflow_provider_portfolio.exceptions.SourceError` (or a subclass) when
    it cannot serve a request: the vendor is down, rate-limited, refuses the key, or answers garbage.
    Asked for many symbols, it raises :class:`~airflow_provider_portfolio.exceptions.PartialBarsError`
    (the frame of the symbols it served, and why each other one failed) when only some failed.
    An empty frame is an answer, not a failure: there are no bars in the range (a holiday, a symbol
    not yet listed).
    """

    name: str

    def get_bars(
        self, symbols: str | Sequence[str], start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """Bars of ``symbols`` for the sessions (daily) or bars (intraday) dated in [start, end].

        :param symbols: one ticker (``AAPL``) or crypto pair (``BTC/USD``), or a list of them.
        :param start: first date, a ``datetime.date`` or a tz-aware ``datetime`` (its UTC date counts).
        :param end: last date, inclusive, same types as ``start``.
        :param timeframe: ``1Min`` ... ``23Hour`` or ``1Day``.
        :return: the canonical bar frame (see :mod:`airflow_provider_portfolio.market.bars`); empty
            when the range holds no bars.
        :raises SourceError: when the source cannot serve the request (``PartialBarsError``: some symbols).
        """
        ...


#: The protocol's earlier name.
MarketDataSource = BarSource


@runtime_checkable
class NewsSource(Protocol):
    """A source of news about symbols (Alpaca, Alpha Vantage, Finnhub, the synthetic market).

    Every :class:`~airflow_provider_portfolio.market.news.NewsItem` carries the ``score`` the sentiment
    signal uses; ``vendor_score`` is set when the vendor scored the item itself (Alpha Vantage).
    """

    name: str

    def get_news(self, symbols: Sequence[str], start: date | datetime, end: date | datetime) -> list[NewsItem]:
        """News about ``symbols`` published in [start, end], oldest first.

        :raises SourceError: when the source cannot serve the request.
        """
        ...


@dataclass(frozen=True)
class Quote:
    """The latest quote of a symbol.

    :param symbol: the desk's symbol (``AAPL``, ``BTC/USD``).
    :param price: the price to value and size at: the bid/ask midpoint when both sides are quoted, else the
        last trade price the vendor reports.
    :param ts: when the vendor stamped the quote (UTC).
    :param source: the source's name.
    :param bid: best bid, when quoted.
    :param ask: best ask, when quoted.
    """

    symbol: str
    price: float
    ts: datetime
    source: str
    bid: float | None = None
    ask: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.price, (int, float)) and math.isfinite(self.price) and self.price > 0):
            raise InvalidInputError(f"{self.symbol}: a quote's price must be a finite number > 0, got {self.price!r}")
        if not isinstance(self.ts, datetime) or self.ts.tzinfo is None:
            raise InvalidInputError(f"{self.symbol}: a quote's ts must be a tz-aware datetime, got {self.ts!r}")
        object.__setattr__(self, "ts", self.ts.astimezone(timezone.utc))
        object.__setattr__(self, "price", float(self.price))


@runtime_checkable
class QuoteSource(Protocol):
    """A source of latest quotes (Alpaca, Finnhub)."""

    name: str

    def get_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """The latest quote of each of ``symbols`` the source knows (a symbol it has none for is left out).

        :raises SourceError: when the source cannot serve the request.
        """
        ...


@dataclass(frozen=True)
class FetchResult:
    """What a :class:`FailoverChain` fetch returns.

    :param frame: the canonical bar frame, its ``source`` column set to the serving source's name.
    :param source: name of the source that served the bars.
    :param failures: source -> why it failed, for the sources tried before it, in order.
    """

    frame: pd.DataFrame
    source: str
    failures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResult:
    """What :meth:`FailoverChain.fetch_many` returns.

    :param frame: the canonical bar frame of every served symbol (``source`` set per symbol).
    :param sources: symbol -> name of the source that served it.
    :param failures: symbol -> (source -> why it failed), for the symbols no source served.
    """

    frame: pd.DataFrame
    sources: dict[str, str]
    failures: dict[str, dict[str, str]] = field(default_factory=dict)

    def reasons(self) -> dict[str, str]:
        """Symbol -> one line naming every source and why it failed."""
        return {symbol: str(AllSourcesFailedError(symbol, why)) for symbol, why in self.failures.items()}


class FailoverChain:
    """Try sources in order; the first that answers wins.

    A source that raises any ``Exception`` (a :class:`SourceError` as the protocol asks, or anything
    else, such as a bug or a frame lacking columns) is recorded as failed with ``"<ExceptionType>:
    message"``, logged at warning, and the next source is tried. ``KeyboardInterrupt`` and
    ``SystemExit`` are never caught. When every source fails,
    :class:`~airflow_provider_portfolio.exceptions.AllSourcesFailedError` names each one and why.

    The chain is itself a :class:`MarketDataSource`.

    :param sources: the sources, in the order they are tried.
    :param empty_is_failure: treat a source that returns no rows as failed (``"no bars"``) and try the
        next. Off by default: an empty answer is legitimate (holidays, a range before a listing), and
        asking every vendor again would spend their rate limits for nothing. Turn it on when the range
        is known to hold bars and a vendor is known to answer empty instead of failing. When every
        source answers empty, the chain then raises ``AllSourcesFailedError``.
    :raises InvalidInputError: when ``sources`` is empty or holds something without ``get_bars``.
    """

    def __init__(self, sources: Sequence[MarketDataSource], *, empty_is_failure: bool = False) -> None:
        if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence):
            raise InvalidInputError(f"sources must be a list of market-data sources, got {type(sources).__name__}")
        if not sources:
            raise InvalidInputError("a failover chain needs at least one market-data source")
        bad = [repr(s) for s in sources if not callable(getattr(s, "get_bars", None))]
        if bad:
            raise InvalidInputError(f"not a market-data source (no get_bars method): {', '.join(bad)}")
        self.sources: tuple[MarketDataSource, ...] = tuple(sources)
        self.empty_is_failure = bool(empty_is_failure)
        # Keys of the failures dict: a name used twice is told apart as "name#2".
        self._keys: list[str] = []
        for source in self.sources:
            name, key, n = _name_of(source), _name_of(source), 1
            while key in self._keys:
                n += 1
                key = f"{name}#{n}"
            self._keys.append(key)

    @property
    def name(self) -> str:
        """``failover(<name>,<name>...)``."""
        return f"failover({','.join(_name_of(s) for s in self.sources)})"

    def __repr__(self) -> str:
        return f"FailoverChain({list(self.sources)!r}, empty_is_failure={self.empty_is_failure})"

    def get_bars(
        self, symbols: str | Sequence[str], start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """The :class:`BarSource` method: :meth:`fetch`'s frame for one symbol, :meth:`fetch_many`'s for a list.

        :raises AllSourcesFailedError: one symbol that no source served.
        :raises PartialBarsError: symbols of a list that no source served (with the frame of the others).
        """
        if isinstance(symbols, str):
            return self.fetch(symbols, start, end, timeframe).frame
        batch = self.fetch_many(symbols, start, end, timeframe)
        if batch.failures:
            raise PartialBarsError(batch.frame, batch.reasons())
        return batch.frame

    def fetch_many(
        self, symbols: Sequence[str], start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> BatchResult:
        """Bars of many symbols: one call per source for the symbols not yet served, in order.

        The first source is asked for every symbol; the symbols it failed (a ``PartialBarsError``
        names them, any other exception fails them all) go to the next source, and so on. A symbol no
        source served is in the result's ``failures`` with each source's reason; it never fails the others.

        :param symbols: tickers or crypto pairs.
        :return: the served bars, which source served each symbol, and the failures.
        """
        wanted = list(dict.fromkeys(symbols))
        frames: list[pd.DataFrame] = []
        served: dict[str, str] = {}
        failures: dict[str, dict[str, str]] = {}
        pending = wanted
        for key, source in zip(self._keys, self.sources):
            if not pending:
                break
            name = _name_of(source)
            try:
                raw = source.get_bars(list(pending), start, end, timeframe)
                failed: dict[str, str] = {}
            except PartialBarsError as err:
                raw, failed = err.frame, {s: str(why) for s, why in err.failures.items()}
            except Exception as err:  # any failure of one source moves on to the next
                raw, failed = None, dict.fromkeys(pending, _reason(err))
                log.warning("Source %s failed for %d symbol(s) %s %s..%s: %s", key, len(pending), timeframe,
                            start, end, _reason(err))
                log.debug("Source %s failure detail", key, exc_info=True)
            frame = empty_bars()
            if raw is not None:
                try:
                    frame = _as_bar_frame(raw, name)
                except Exception as err:  # a malformed answer fails the whole call
                    failed = dict.fromkeys(pending, _reason(err))
            frame = frame[frame["symbol"].isin(pending)] if not frame.empty else frame
            got = set(frame["symbol"].unique()) if not frame.empty else set()
            for symbol in pending:
                if symbol in failed and symbol not in got:
                    failures.setdefault(symbol, {})[key] = failed[symbol]
                elif self.empty_is_failure and symbol not in got:
                    failures.setdefault(symbol, {})[key] = "no bars"
                else:
                    served[symbol] = name
            if not frame.empty:
                frames.append(frame[frame["symbol"].isin([s for s in pending if served.get(s) == name])])
            pending = [s for s in pending if s not in served]
        frames = [f for f in frames if not f.empty]
        frame = pd.concat(frames, ignore_index=True) if frames else empty_bars()
        return BatchResult(frame, served, {s: failures[s] for s in pending})

    def fetch(
        self, symbol: str, start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> FetchResult:
        """Bars of ``symbol`` from the first source that serves them.

        :param symbol: ticker or crypto pair.
        :param start: first date (``datetime.date`` or tz-aware ``datetime``).
        :param end: last date, inclusive.
        :param timeframe: ``1Min`` ... ``23Hour`` or ``1Day``.
        :return: the frame (``source`` column set to the winner's name), the winner and the failures
            before it.
        :raises AllSourcesFailedError: when every source failed; it names each source and why.
        """
        failures: dict[str, str] = {}
        for key, source in zip(self._keys, self.sources):
            name = _name_of(source)
            try:
                raw = source.get_bars(symbol, start, end, timeframe)
                frame = _as_bar_frame(raw, name)
            except Exception as err:  # any failure of one source moves on to the next
                failures[key] = _reason(err)
                log.warning("Source %s failed for %s %s %s..%s: %s", key, symbol, timeframe, start, end, failures[key])
                log.debug("Source %s failure detail", key, exc_info=True)
                continue
            if frame.empty and self.empty_is_failure:
                failures[key] = "no bars"
                log.warning("Source %s returned no bars for %s %s %s..%s", key, symbol, timeframe, start, end)
                continue
            if failures:
                log.info("%s %s served by %s after %d failed source(s)", symbol, timeframe, name, len(failures))
            return FetchResult(frame, name, failures)
        raise AllSourcesFailedError(symbol, failures)


def _name_of(source: object) -> str:
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else type(source).__name__


def _reason(err: BaseException) -> str:
    message = " ".join(str(err).split())
    if len(message) > _MAX_REASON:
        message = message[: _MAX_REASON - 3] + "..."
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _as_bar_frame(raw: object, name: str) -> pd.DataFrame:
    """A source's answer as the canonical bar frame with ``source`` set; a non-frame is a TypeError."""
    if not isinstance(raw, pd.DataFrame):
        raise TypeError(f"get_bars returned {type(raw).__name__}, not a DataFrame")
    if len(raw) == 0:
        return empty_bars()
    return to_bar_frame(raw, source=name)


def fetch_news(sources: Sequence[object], symbols: Sequence[str], start: date | datetime,
               end: date | datetime) -> tuple[list[NewsItem], str]:
    """News about ``symbols`` from the first :class:`NewsSource` among ``sources`` that answers.

    News is optional input: when no source has news, or every one fails, the answer is ``([], why)``
    naming each source and why, and the sentiment signal then carries no confidence.

    :return: (items oldest first, why there are none or ``""``).
    """
    reasons = []
    for source in sources:
        if not isinstance(source, NewsSource):
            continue
        try:
            return list(source.get_news(list(symbols), start, end)), ""
        except Exception as err:  # one feed failing moves on to the next
            reasons.append(f"{_name_of(source)}: {_reason(err)}")
            log.warning("News source %s failed: %s", _name_of(source), reasons[-1])
    return [], "; ".join(reasons) or "no source has a news feed"


def fetch_quotes(sources: Sequence[object], symbols: Sequence[str]) -> tuple[dict[str, Quote], dict[str, str]]:
    """The latest quote of each of ``symbols`` from the first :class:`QuoteSource` that has one.

    :return: (symbol -> quote, symbol -> why no source quoted it; empty when every symbol was quoted).
    """
    quotes: dict[str, Quote] = {}
    reasons: dict[str, list[str]] = {}
    pending = list(dict.fromkeys(symbols))
    for source in sources:
        if not pending:
            break
        if not isinstance(source, QuoteSource):
            continue
        try:
            answer = source.get_quotes(list(pending))
        except Exception as err:  # quotes are optional: the last closed bar stands in
            for symbol in pending:
                reasons.setdefault(symbol, []).append(f"{_name_of(source)}: {_reason(err)}")
            continue
        for symbol in pending:
            quote = answer.get(symbol)
            if isinstance(quote, Quote):
                quotes[symbol] = quote
            else:
                reasons.setdefault(symbol, []).append(f"{_name_of(source)}: no quote")
        pending = [s for s in pending if s not in quotes]
    return quotes, {s: "; ".join(reasons.get(s) or ["no source has quotes"]) for s in pending}
