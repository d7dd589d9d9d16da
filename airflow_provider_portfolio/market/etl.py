"""The daily-bars ETL as plain Python: plan what the store lacks, fetch with failover, gate, upsert.

:class:`~airflow_provider_portfolio.operators.etl.PortfolioETLOperator` is a thin Airflow adapter over
:func:`load_bars`; a notebook or a container can call it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import AllSourcesFailedError, DataQualityError, InvalidInputError
from airflow_provider_portfolio.market.bars import empty_bars, parse_timeframe
from airflow_provider_portfolio.market.calendar import (
    MarketCalendar,
    calendar_for_symbol,
    parse_session_date,
    session_positions,
    utc_ns,
)
from airflow_provider_portfolio.market.params import validate_symbols
from airflow_provider_portfolio.market.quality import QualityRules, check_bars
from airflow_provider_portfolio.market.sources import FailoverChain, MarketDataSource
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE

log = logging.getLogger(__name__)


class BarStore(Protocol):
    """What the ETL needs of a bar store (``PortfolioStore`` is one); the market never imports the store."""

    #: The store's URL with any password hidden (named in the ETL's report).
    url: str

    def bar_timestamps(self, symbol: str, timeframe: str, start: Any = None, end: Any = None) -> pd.DatetimeIndex:
        """Timestamps (UTC, ascending) of the stored bars of one symbol and timeframe, bounds inclusive."""
        ...

    def latest_bar_ts(self, symbols: list[str] | None, timeframe: str) -> dict[str, pd.Timestamp | None]:
        """The latest stored bar timestamp per symbol (``None`` for a symbol without bars)."""
        ...

    def read_bars(self, symbols: list[str] | None = None, timeframe: str = "1Day", start: Any = None,
                  end: Any = None) -> pd.DataFrame:
        """Stored bars as a canonical bar frame sorted by (symbol, ts), bounds inclusive."""
        ...

    def upsert_bars(self, bars: pd.DataFrame) -> int:
        """Insert or update bars on (symbol, timeframe, ts) in one transaction; the rows changed."""
        ...

MODES = ("incremental", "full")
_PREVIOUS_WINDOW = pd.Timedelta(days=31)  # stored timestamps read first when looking for the bar before a hole


@dataclass
class SymbolResult:
    """What happened to one symbol: rows written, the source that served it, or the error."""

    symbol: str
    sessions_requested: int = 0
    sessions_missing: int = 0
    rows_fetched: int = 0
    rows_written: int = 0
    source: str | None = None
    failed_sources: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass
class EtlReport:
    """Summary of one load; :meth:`to_dict` is what goes to XCom."""

    start: str
    end: str
    timeframe: str
    mode: str
    store: str
    results: list[SymbolResult]

    @property
    def failed(self) -> list[str]:
        return [r.symbol for r in self.results if r.error]

    @property
    def failed_fraction(self) -> float:
        return len(self.failed) / len(self.results) if self.results else 0.0

    @property
    def rows_written(self) -> int:
        return sum(r.rows_written for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "timeframe": self.timeframe,
            "mode": self.mode,
            "store": self.store,
            "rows_written": self.rows_written,
            "failed": self.failed,
            "symbols": {
                r.symbol: {k: v for k, v in asdict(r).items() if k != "symbol" and v not in (None, {})}
                for r in self.results
            },
        }


def last_closed_session(calendar: MarketCalendar, at: datetime) -> pd.Timestamp:
    """The latest session of ``calendar`` whose close is at or before ``at`` (tz-aware)."""
    at_ts = pd.Timestamp(at)
    sessions = calendar.sessions(at_ts.tz_convert("UTC").normalize().tz_localize(None) - pd.Timedelta(days=30),
                                 at_ts.tz_convert("UTC").normalize().tz_localize(None))
    closed = sessions[sessions["market_close"] <= at_ts]
    if closed.empty:
        raise InvalidInputError(f"no {calendar.name} session closed in the 30 days before {at_ts.isoformat()}")
    return closed.index[-1]


def load_window(calendar: MarketCalendar, at: datetime | None, *, history_sessions: int, start: object = None,
                end: object = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The sessions a load covers, ``(start, end)`` (session dates, inclusive), as the ETL operator and the CLI pick
    them: ``end`` when given, else the last session of ``calendar`` closed at ``at``
    (:func:`last_closed_session`); ``start`` when given, else ``history_sessions`` sessions of ``calendar``
    ending at ``end``.

    :param calendar: the equities calendar (crypto pairs get every day within the window).
    :param at: the instant deciding the last closed session (tz-aware): a run's data interval end, or now; only
        read when ``end`` is not given.
    :param history_sessions: sessions loaded when ``start`` is not given (an integer >= 1).
    :param start: first session date, or ``None``.
    :param end: last session date, or ``None``.
    :raises InvalidInputError: for ``history_sessions`` < 1, a date that is not one, or neither ``end`` nor ``at``.
    """
    if isinstance(history_sessions, bool) or not isinstance(history_sessions, int) or history_sessions < 1:
        raise InvalidInputError(f"history_sessions must be an integer >= 1, got {history_sessions!r}")
    if end is not None:
        last = parse_session_date(end, "end")
    elif at is not None:
        last = last_closed_session(calendar, at)
    else:
        raise InvalidInputError("load_window needs the last session (end) or the instant deciding it (at)")
    if start is not None:
        return parse_session_date(start, "start"), last
    window = calendar.sessions(last - pd.Timedelta(days=2 * history_sessions + 30), last)
    return window.index[-min(history_sessions, len(window))], last


def plan_missing_sessions(
    store: BarStore, symbol: str, sessions: pd.DataFrame, timeframe: str
) -> pd.DatetimeIndex:
    """Sessions of ``sessions`` (as from :meth:`MarketCalendar.sessions`) that hold no bar in the store."""
    if sessions.empty:
        return pd.DatetimeIndex([])
    first_open = sessions["market_open"].iloc[0]
    last_close = sessions["market_close"].iloc[-1]
    tf = parse_timeframe(timeframe)
    if tf.is_daily:
        stored = store.bar_timestamps(symbol, tf.name, sessions.index[0].tz_localize("UTC"),
                                      sessions.index[-1].tz_localize("UTC"))
        days = pd.DatetimeIndex(sessions.index).as_unit("ns")
        have = pd.DatetimeIndex(stored).tz_convert("UTC").tz_localize(None).as_unit("ns")
        return days[~days.isin(have)]
    stored = store.bar_timestamps(symbol, tf.name, first_open, last_close)
    idx, inside = _session_positions(sessions, stored)
    missing = np.ones(len(sessions), dtype=bool)
    missing[idx[inside]] = False
    return pd.DatetimeIndex(sessions.index[missing])


def previous_bar(store: BarStore, symbol: str, timeframe: str, before: pd.Timestamp) -> pd.DataFrame:
    """The last stored bar of ``symbol`` and ``timeframe`` dated before ``before``: a bar frame of one row, or empty.

    An incremental load after the last stored bar costs an indexed ``max(ts)`` and a one-row read. A batch
    that fills a hole or re-runs stored sessions also reads the stored timestamps of the 31 days before
    it, and all earlier ones only when those days hold none.

    :param store: a migrated store.
    :param symbol: the symbol.
    :param timeframe: the timeframe.
    :param before: the batch's first timestamp (tz-aware).
    """
    end = pd.Timestamp(before) - pd.Timedelta(microseconds=1)  # the store keeps microseconds
    latest = store.latest_bar_ts([symbol], timeframe).get(symbol)
    if latest is None:
        return empty_bars()
    if latest > end:
        stamps = store.bar_timestamps(symbol, timeframe, end - _PREVIOUS_WINDOW, end)
        if not len(stamps):
            stamps = store.bar_timestamps(symbol, timeframe, None, end)
        if not len(stamps):
            return empty_bars()
        latest = stamps[-1]
    return store.read_bars([symbol], timeframe, latest, latest)


def load_bars(
    store: BarStore,
    sources: Sequence[MarketDataSource],
    symbols: object,
    start: object,
    end: object,
    *,
    timeframe: str = "1Day",
    mode: str = "incremental",
    exchange: str = DEFAULT_EXCHANGE,
    rules: QualityRules | None = None,
    now: datetime | None = None,
    calendar_for: Callable[[str], MarketCalendar] | None = None,
) -> EtlReport:
    """Load bars for ``symbols`` over the sessions in [start, end] into ``store``.

    Per symbol: the sessions the store lacks (``incremental``) or all sessions (``full``) are fetched
    through a failover chain over ``sources``; bars of sessions not yet closed at ``now`` are dropped
    (a partial bar is never stored; a session closing exactly at ``now`` has closed); the batch passes
    the quality gate whole or is rejected whole, its first bar judged for ``implausible_jump`` against
    the last stored bar before it (see :func:`previous_bar`), however long ago that was; the rest is
    upserted in one transaction per symbol. A failing symbol never stops the others.

    :param store: a migrated store.
    :param sources: market-data sources, tried in order.
    :param symbols: list of tickers (checked by :func:`validate_symbols`).
    :param start: first session date (inclusive).
    :param end: last session date (inclusive).
    :param timeframe: bar timeframe (``1Day``, ``1Hour``, ``5Min``...).
    :param mode: ``incremental`` (fetch only missing sessions) or ``full`` (refetch the range).
    :param exchange: calendar of equities; crypto pairs trade 24/7.
    :param rules: quality rules; defaults apply when ``None``.
    :param now: the instant that decides which sessions are closed (default: the clock).
    :param calendar_for: symbol -> calendar (default :func:`calendar_for_symbol` with ``exchange``).
    :raises InvalidInputError: for bad parameters, before anything is fetched or written.
    """
    symbol_list = validate_symbols(symbols)
    tf = parse_timeframe(timeframe)
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
    start_day = parse_session_date(start, "start")
    end_day = parse_session_date(end, "end")
    if start_day > end_day:
        raise InvalidInputError(f"start {start_day.date()} is after end {end_day.date()}")
    if not sources:
        raise InvalidInputError("no market-data sources given")
    calendar_for = calendar_for or (lambda symbol: calendar_for_symbol(symbol, exchange))
    now_ts = pd.Timestamp(now) if now is not None else pd.Timestamp.now(tz="UTC")
    if now_ts.tzinfo is None:
        raise InvalidInputError("now must be timezone-aware")
    rules = rules or QualityRules()

    plans: dict[str, pd.DataFrame] = {}
    for symbol in symbol_list:
        sessions = calendar_for(symbol).sessions(start_day, end_day)
        if sessions.empty:
            raise InvalidInputError(
                f"no {calendar_for(symbol).name} sessions between {start_day.date()} and {end_day.date()} "
                f"for {symbol}: the range holds only weekends or holidays"
            )
        plans[symbol] = sessions[sessions["market_close"] <= now_ts]

    # Sessions asked for have closed: a source with no bars for them lacks data, so the next one is tried.
    chain = FailoverChain(list(sources), empty_is_failure=True)
    results: list[SymbolResult] = []
    for symbol in symbol_list:
        sessions = plans[symbol]
        result = SymbolResult(symbol, sessions_requested=len(sessions))
        results.append(result)
        try:
            wanted = sessions.index if mode == "full" else plan_missing_sessions(store, symbol, sessions, tf.name)
            result.sessions_missing = len(wanted)
            if not len(wanted):
                continue
            fetched = chain.fetch(symbol, wanted[0].date(), wanted[-1].date(), tf.name)
            result.source = fetched.source
            result.failed_sources = dict(fetched.failures)
            bars = _within_sessions(fetched.frame, sessions.loc[wanted[0]:wanted[-1]], tf.is_daily)
            result.rows_fetched = len(bars)
            if len(bars):
                first = bars["ts"].min()
                previous = (previous_bar(store, symbol, tf.name, first)
                            if rules.max_abs_return is not None and pd.notna(first) else None)
                check_bars(bars, calendar=calendar_for(symbol), rules=rules, previous=previous)
                result.rows_written = store.upsert_bars(bars)
        except AllSourcesFailedError as err:
            result.failed_sources = dict(err.failures)
            result.error = f"{type(err).__name__}: {err}"
            log.error("%s failed: %s", symbol, result.error)
        except (DataQualityError, InvalidInputError) as err:
            result.error = str(err)
            log.error("%s rejected: %s", symbol, err)
        except Exception as err:  # a vendor or store failure on one symbol never stops the others
            result.error = f"{type(err).__name__}: {err}"
            log.error("%s failed: %s", symbol, result.error)
        else:
            if result.sessions_missing:
                log.info("%s: %d row(s) written from %s", symbol, result.rows_written, result.source)
    return EtlReport(
        start=str(start_day.date()),
        end=str(end_day.date()),
        timeframe=tf.name,
        mode=mode,
        store=store.url,
        results=results,
    )


def _within_sessions(bars: pd.DataFrame, sessions: pd.DataFrame, daily: bool) -> pd.DataFrame:
    """Keep the bars a load asked for (sources may return more).

    Daily bars: those dated within the sessions' date span; a bar dated on a non-session day inside
    the span stays, so the quality gate rejects the batch. Intraday bars: those inside a session's
    regular hours; pre- and post-market bars are not stored.
    """
    if bars.empty:
        return bars
    if daily:
        days = bars["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
        return bars[(days >= sessions.index[0]) & (days <= sessions.index[-1])].reset_index(drop=True)
    _, inside = _session_positions(sessions, pd.DatetimeIndex(bars["ts"]))
    return bars[inside].reset_index(drop=True)


def _session_positions(sessions: pd.DataFrame, stamps: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """For each instant: the position of the session whose open precedes it, and whether it is inside it."""
    return session_positions(utc_ns(sessions["market_open"]), utc_ns(sessions["market_close"]), utc_ns(stamps))
