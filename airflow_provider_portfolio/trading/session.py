"""The trading job as plain Python: fetch a cycle's inputs, read the stored forecasts, run the cycle.

:func:`trade_universe` is the one entry point the ``AutoTraderOperator``, the per-asset agents and any
script, notebook or container job call: it takes a store, market-data sources, a broker and an instant,
and returns the cycle's :class:`~airflow_provider_portfolio.trading.settings.CycleReport`. No Airflow::

    from datetime import datetime, timezone
    from airflow_provider_portfolio.market.synthetic import SyntheticMarket
    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
    from airflow_provider_portfolio.trading.session import trade_universe

    store = PortfolioStore.for_sqlite_file("desk.db")
    store.migrate()
    broker = SimulatedBroker(TradingLedger(store))
    report = trade_universe(["AAPL", "MSFT"], store=store, sources=[SyntheticMarket()], broker=broker,
                            now=datetime(2025, 3, 4, 15, tzinfo=timezone.utc), dag_id="desk", run_id="2025-03-04")

Sources are objects implementing the protocols of :mod:`airflow_provider_portfolio.market.sources`: bars
fail over symbol by symbol (one batched call per source), news fails over like bars (the first source with
news that answers), and quotes (where a source has them) are the "current price" a live cycle sizes at.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.params import validate_symbols
from airflow_provider_portfolio.market.sources import FailoverChain, fetch_news, fetch_quotes
from airflow_provider_portfolio.market.timing import history_days
from airflow_provider_portfolio.trading.cycle import run_cycle
from airflow_provider_portfolio.trading.settings import (
    LOOKBACK_BARS,
    CycleReport,
    CycleSettings,
    check_instant,
    news_window,
)

if TYPE_CHECKING:
    from airflow_provider_portfolio.market.news import NewsItem
    from airflow_provider_portfolio.market.sources import Quote
    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.trading.brokers import Broker

log = logging.getLogger(__name__)


@dataclass
class MarketInputs:
    """What a cycle knows of the market at its instant.

    :param bars: canonical bars of the look-back up to the instant's date (the cycle keeps those started or
        closed by the instant).
    :param missing: symbol -> why no source served its bars.
    :param news: news items of the sentiment window, oldest first.
    :param no_news: why there is no news (``""`` when there is).
    :param quotes: symbol -> its latest quote, where a source has quotes and they were asked for.
    """

    bars: pd.DataFrame
    missing: dict[str, str] = field(default_factory=dict)
    news: list[NewsItem] = field(default_factory=list)
    no_news: str = ""
    quotes: dict[str, Quote] = field(default_factory=dict)


def fetch_inputs(sources: Sequence[Any], symbols: Sequence[str], now: datetime, settings: CycleSettings, *,
                 news: bool = True, quotes: bool = False) -> MarketInputs:
    """A cycle's market data from ``sources`` (in failover order).

    :param sources: objects implementing :class:`~airflow_provider_portfolio.market.sources.BarSource` (and
        optionally ``NewsSource``/``QuoteSource``).
    :param symbols: the universe.
    :param now: the cycle's instant.
    :param news: fetch the news of the sentiment window.
    :param quotes: fetch the latest quotes (only for a cycle at the wall clock: a quote is of now).
    :raises InvalidInputError: for no sources or something that is not a bar source.
    """
    chain = FailoverChain(list(sources))
    start = (now - timedelta(days=history_days(settings.timeframe, LOOKBACK_BARS))).date()
    batch = chain.fetch_many(list(symbols), start, now.date(), settings.timeframe)
    inputs = MarketInputs(batch.frame, {s: f"no bars: {why}" for s, why in batch.reasons().items()})
    for symbol, reason in inputs.missing.items():
        log.warning("%s: %s", symbol, reason)
    if news:
        inputs.news, inputs.no_news = fetch_news(sources, symbols, *news_window(now, settings.news_half_life_hours))
        if inputs.no_news:
            log.info("No news (%s): the sentiment signal carries no confidence", inputs.no_news)
    if quotes:
        inputs.quotes, unquoted = fetch_quotes(sources, symbols)
        if unquoted and inputs.quotes:
            log.info("No quote for %d symbol(s) (%s): their last close stands in", len(unquoted),
                     "; ".join(f"{s}: {w}" for s, w in list(unquoted.items())[:5]))
    return inputs


def stored_forecasts(store: PortfolioStore, symbols: Sequence[str], model: str | None,
                     timeframe: str = "1Day") -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The latest stored forecasts of ``model`` and their evaluations (``(None, None)`` for no model)."""
    if not model:
        return None, None
    forecasts = store.read_forecasts(list(symbols), model=model, timeframe=timeframe, latest=True)
    evaluations = store.read_evaluations(list(symbols), model=model, timeframe=timeframe, latest=True)
    return forecasts, evaluations


def trade_universe(
    symbols: Sequence[str],
    *,
    store: PortfolioStore,
    sources: Sequence[Any],
    broker: Broker,
    now: datetime,
    dag_id: str,
    run_id: str,
    settings: CycleSettings | None = None,
    forecast_model: str | None = "ensemble",
    forecast_timeframe: str = "1Day",
    quotes: bool | None = None,
) -> CycleReport:
    """One trading cycle for ``symbols`` at ``now``: fetch the inputs, read the stored forecasts, run
    :func:`~airflow_provider_portfolio.trading.cycle.run_cycle` (under the account's lock), return its report.

    :param symbols: tickers and crypto pairs.
    :param store: the portfolio store (migrated); its ledger records decisions, orders and snapshots.
    :param sources: market-data sources in failover order (see :func:`fetch_inputs`).
    :param broker: where orders go (its ledger must be ``store``'s).
    :param now: the cycle's instant (tz-aware).
    :param dag_id: the deciding job's name (part of every client order id).
    :param run_id: this run of it (retries share it).
    :param settings: how the cycle decides (default ``CycleSettings()``).
    :param forecast_model: the stored model feeding the forecast signal (``None``: no forecast signal).
    :param forecast_timeframe: the timeframe of those forecasts.
    :param quotes: size at the latest quotes where a source has them; default: when the broker is not the
        simulated one (a simulated or back-filled cycle at a past instant never sees a quote from later).
    :raises InvalidInputError: for bad parameters.
    :raises AccountLockedError: when another cycle holds the account too long.
    """
    symbols = validate_symbols(list(symbols))
    now = check_instant(now)
    settings = settings or CycleSettings()
    if not isinstance(settings, CycleSettings):
        raise InvalidInputError(f"settings must be CycleSettings, got {type(settings).__name__}")
    use_quotes = broker.kind != "simulated" if quotes is None else bool(quotes)
    inputs = fetch_inputs(sources, symbols, now, settings, quotes=use_quotes)
    forecasts, evaluations = stored_forecasts(store, symbols, forecast_model, forecast_timeframe)
    return run_cycle(symbols, inputs.bars, now, broker=broker, ledger=_ledger_of(broker, store), dag_id=dag_id,
                     run_id=run_id, settings=settings, forecasts=forecasts, evaluations=evaluations,
                     news=inputs.news, missing=inputs.missing, quotes=inputs.quotes)


def _ledger_of(broker: Any, store: PortfolioStore) -> Any:
    """The broker's ledger, which must be ``store``'s (orders and decisions in one place)."""
    ledger = getattr(broker, "ledger", None)
    if ledger is None or getattr(ledger, "store", None) is not store:
        raise InvalidInputError("the broker's ledger must be the given store's: build the broker on "
                                "TradingLedger(store)")
    return ledger
