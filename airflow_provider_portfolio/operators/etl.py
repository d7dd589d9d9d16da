"""PortfolioETLOperator: load clean bars for a universe into the portfolio store."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import PortfolioStoreHook
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context


#: The most sessions ``history_sessions`` may ask for (about a century of daily bars).
MAX_HISTORY_SESSIONS = 25_000


class PortfolioETLOperator(BaseOperator):
    """Fetch bars for ``symbols`` through a failover chain of sources, gate them, upsert them.

    Incremental by default: for each symbol only the calendar sessions the store lacks are fetched,
    so re-running a task for the same interval writes nothing. Each symbol's batch passes the quality
    gate whole or is rejected whole, and is written in its own transaction. Symbols that fail are
    reported in the summary; when more than ``max_failed_fraction`` of them fail, the task fails
    after writing the others (a retry then fetches only what is still missing).

    The range parameters are ``start`` and ``end`` (session dates, inclusive) rather than
    ``start_date``/``end_date``, which are BaseOperator's own scheduling arguments and are commonly
    set through DAG ``default_args``.

    Works under dynamic task mapping: ``PortfolioETLOperator.partial(...).expand(symbols=chunks)``
    with ``chunks`` a list of symbol lists (e.g. 50 symbols each) spreads a large universe over
    workers; each mapped task writes its own symbols.

    :param symbols: tickers (templated). A list, a JSON list string or a comma-separated string; one that
        rendered empty (``""``, ``"None"``, ``"null"``) is refused.
    :param start: first session date (templated), ISO 8601. Default: ``history_sessions`` sessions before
        ``end``.
    :param end: last session date (templated), ISO 8601, at most 7 days after now (sessions not closed yet
        are never loaded). Default: the last session closed at the run's data interval end (or its
        ``run_after`` when the run has no data interval).
    :param timeframe: bar timeframe (templated): ``1Day`` (default), ``1Hour``, ``15Min``, ``1Min``...
    :param sources: source names tried in order (templated): ``"synthetic"`` or connection ids of
        market-data connections. Default: the synthetic market (refused in ``execution_mode = live``).
    :param store_conn_id: store connection (templated). Default ``[portfolio] store_conn_id``; when
        that connection does not exist, the embedded SQLite store.
    :param exchange: calendar of equities; default ``[portfolio] default_exchange``.
    :param mode: ``incremental`` (default) or ``full`` (refetch and upsert the whole range).
    :param history_sessions: sessions of ``exchange`` loaded when ``start`` is not given: an integer from 1
        to 25000 (default 252, one year). All symbols share that date window, so crypto pairs get every
        day within it.
    :param max_failed_fraction: the fraction of symbols allowed to fail before the task fails
        (default 0.0: any failed symbol fails the task, after the others are written).
    :param max_abs_return: the quality gate's implausible-jump threshold (``None`` disables it).
    :raises InvalidInputError: from ``execute`` for bad input (symbols that rendered empty, a date that is
        not ISO 8601, before 1900 or more than 7 days after now, ``history_sessions`` < 1...), before the
        store is opened or anything fetched.
    """

    template_fields: Sequence[str] = ("symbols", "start", "end", "timeframe", "sources", "store_conn_id", "mode")
    ui_color = "#d9ead3"

    def __init__(
        self,
        *,
        symbols: list[str] | str,
        start: str | None = None,
        end: str | None = None,
        timeframe: str = "1Day",
        sources: list[str] | str | None = None,
        store_conn_id: str | None = None,
        exchange: str | None = None,
        mode: str = "incremental",
        history_sessions: int = 252,
        max_failed_fraction: float = 0.0,
        max_abs_return: float | None = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.start = start
        self.end = end
        self.timeframe = timeframe
        self.sources = sources
        self.store_conn_id = store_conn_id
        self.exchange = exchange
        self.mode = mode
        self.history_sessions = history_sessions
        self.max_failed_fraction = max_failed_fraction
        self.max_abs_return = max_abs_return

    @cached_property
    def store_hook(self) -> PortfolioStoreHook:
        return PortfolioStoreHook(store_conn_id=self.store_conn_id or None)

    def execute(self, context: Context) -> dict[str, Any]:
        import pandas as pd

        from airflow_provider_portfolio.config import get_option
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.hooks.market_data import data_sources, default_sources, validate_source_names
        from airflow_provider_portfolio.lineage import source_vendors
        from airflow_provider_portfolio.market.calendar import MarketCalendar, parse_session_date
        from airflow_provider_portfolio.market.etl import load_bars, load_window
        from airflow_provider_portfolio.market.params import parse_instant, validate_symbols
        from airflow_provider_portfolio.market.quality import QualityRules
        from airflow_provider_portfolio.metrics import emit_etl

        # Bad input fails here, before the store is opened or anything fetched.
        symbols = validate_symbols(maybe_json_list(self.symbols))
        fraction = self.max_failed_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise InvalidInputError(f"max_failed_fraction must be within [0, 1], got {fraction!r}")
        history = self.history_sessions
        if isinstance(history, bool) or not isinstance(history, int) or not 1 <= history <= MAX_HISTORY_SESSIONS:
            raise InvalidInputError(f"history_sessions must be an integer >= 1 (at most {MAX_HISTORY_SESSIONS}), "
                                    f"got {history!r}")
        # a date centuries away or that is no date fails here, clearly (not as a pandas overflow)
        bounds = {name: None if blank(value) else parse_session_date(parse_instant(value, name), name)
                  for name, value in (("start", self.start), ("end", self.end))}
        source_names = validate_source_names(maybe_json_list(self.sources)) if self.sources else default_sources()
        exchange = self.exchange or get_option("default_exchange")
        calendar = MarketCalendar(exchange)
        reference = None if bounds["end"] is not None else (
            context.get("data_interval_end") or context["dag_run"].run_after)
        start, end = load_window(calendar, None if reference is None else pd.Timestamp(reference),
                                 history_sessions=history, start=bounds["start"], end=bounds["end"])

        sources = data_sources(source_names, exchange=exchange)
        self._lineage_vendors = source_vendors(sources)
        store = self.store_hook.get_conn()
        self.log.info(
            "Loading %s bars of %d symbol(s) for %s..%s (%s) from %s into %s",
            self.timeframe, len(symbols), start.date(), end.date(), self.mode, source_names, store.url,
        )
        report = load_bars(
            store,
            sources,
            symbols,
            start,
            end,
            timeframe=self.timeframe,
            mode=self.mode,
            exchange=exchange,
            rules=QualityRules(max_abs_return=self.max_abs_return),
        )
        summary = report.to_dict()
        emit_etl(summary)
        self.log.info("Wrote %d row(s); failed: %s", report.rows_written, report.failed or "none")
        if report.failed_fraction > self.max_failed_fraction:
            details = "; ".join(f"{s}: {summary['symbols'][s]['error']}" for s in report.failed)
            raise RuntimeError(
                f"{len(report.failed)} of {len(symbols)} symbol(s) failed "
                f"(max_failed_fraction={self.max_failed_fraction}): {details}"
            )
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """OpenLineage: the vendors read -> the store's ``bars`` (see :mod:`airflow_provider_portfolio.lineage`)."""
        from airflow_provider_portfolio.lineage import etl_lineage

        return etl_lineage(self.store_hook.url, getattr(self, "_lineage_vendors", ()), str(self.timeframe))
