"""Market-data sources and the failover chain over them.

A source is anything with a ``name`` and a :meth:`~MarketDataSource.get_bars` method: the synthetic
market, vendor hooks (Alpaca, Alpha Vantage, Finnhub), test doubles. :class:`FailoverChain` tries
sources in order and returns the first answer, so a failing vendor never fails a job while another
source can serve.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol, runtime_checkable

import pandas as pd

from airflow_provider_portfolio.exceptions import AllSourcesFailedError, InvalidInputError
from airflow_provider_portfolio.market.bars import empty_bars, to_bar_frame

log = logging.getLogger(__name__)

_MAX_REASON = 300  # characters of an exception message kept in a failure reason


@runtime_checkable
class MarketDataSource(Protocol):
    """What every market-data source implements.

    ``name`` identifies the source in bar frames (the ``source`` column), logs and errors, e.g.
    ``"synthetic"`` or ``"alpaca"``.

    A source raises :class:`~airflow_provider_portfolio.exceptions.SourceError` (or a subclass) when
    it cannot serve a request: the vendor is down, rate-limited, refuses the key, or answers garbage.
    An empty frame is an answer, not a failure: there are no bars in the range (a holiday, a symbol
    not yet listed).
    """

    name: str

    def get_bars(
        self, symbol: str, start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """Bars of ``symbol`` for the sessions (daily) or bars (intraday) dated in [start, end].

        :param symbol: ticker (``AAPL``) or crypto pair (``BTC/USD``).
        :param start: first date, a ``datetime.date`` or a tz-aware ``datetime`` (its UTC date counts).
        :param end: last date, inclusive, same types as ``start``.
        :param timeframe: ``1Min`` ... ``23Hour`` or ``1Day``.
        :return: the canonical bar frame (see :mod:`airflow_provider_portfolio.market.bars`); empty
            when the range holds no bars.
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
        self, symbol: str, start: date | datetime, end: date | datetime, timeframe: str = "1Day"
    ) -> pd.DataFrame:
        """The :class:`MarketDataSource` method: :meth:`fetch`'s frame."""
        return self.fetch(symbol, start, end, timeframe).frame

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
