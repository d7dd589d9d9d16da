"""DiscoveryOperator: rank a universe from the store's bars and store the ranked opportunities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from airflow.sdk import Context


class DiscoveryOperator(StoreHookMixin, BaseOperator):
    """Scan a universe's closed bars in the store, score every symbol, and store the ranking with its reasons.

    What it measures is :func:`airflow_provider_portfolio.desk.discovery.discover`: the trader's technical signals,
    trend, 12-1 and 3-month momentum, realised volatility, PCA factor exposures and a market-state label from a
    hidden Markov model, standardized across the universe and summed with ``weights``. The ranking goes to the store's
    ``opportunities`` under the run's id (a retry replaces it; :meth:`PortfolioStore.latest_opportunities` reads it,
    and ``AutoTraderOperator(top_opportunities=N)`` trades its top N). Symbols that cannot be measured (too few bars,
    stale, a constant price) are left out and named in the log and the XCom; none left to rank fails the task, naming
    why, with nothing stored.

    The run ranks at its ``data_interval_end`` (or ``run_after``), on the bars closed by then: a back-fill ranks what
    was known at its date. Returns a small JSON summary (counts, the calendar, the factors' explained variance, the
    best rows with their reasons).

    :param symbols: the universe (templated): a list, a JSON list or comma-separated tickers. Not given: every symbol
        with ``timeframe`` bars in the store (what the ETL loaded: Variable ``portfolio.default_tickers`` for the
        example DAGs, or a larger universe loaded by a mapped ETL).
    :param timeframe: the bars ranked on (templated), default ``1Day``.
    :param exchange: calendar of equities (templated); default ``[portfolio] default_exchange``.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    :param lookback: calendar bars in the window (default 252).
    :param min_bars: the fewest bars of its own a symbol needs in the window (default 63).
    :param top_n: store only the best ``top_n`` rows; ``None`` (default) stores the whole ranking.
    :param weights: component -> weight (a dict or its JSON): ``technical``, ``trend``, ``momentum_12_1``,
        ``momentum_3m``, ``volatility``, ``diversification``, ``regime``; missing names weigh 0. Default the
        documented weights (:data:`~airflow_provider_portfolio.desk.discovery.DEFAULT_WEIGHTS`).
    :param n_factors: PCA factors (default 3).
    :param n_states: states of the regime model, 2 or 3 (default 2).
    :param max_stale_bars: how many calendar bars a symbol's last bar may lag the universe's (default 5).
    """

    template_fields: Sequence[str] = ("symbols", "timeframe", "exchange", "store_conn_id")
    ui_color = "#d9ead3"

    def __init__(
        self,
        *,
        symbols: list[str] | str | None = None,
        timeframe: str = "1Day",
        exchange: str | None = None,
        store_conn_id: str | None = None,
        lookback: int = 252,
        min_bars: int = 63,
        top_n: int | None = None,
        weights: Mapping[str, float] | str | None = None,
        n_factors: int = 3,
        n_states: int = 2,
        max_stale_bars: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.timeframe = timeframe
        self.exchange = exchange
        self.store_conn_id = store_conn_id
        self.lookback = lookback
        self.min_bars = min_bars
        self.top_n = top_n
        self.weights = weights
        self.n_factors = n_factors
        self.n_states = n_states
        self.max_stale_bars = max_stale_bars

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.discovery import check_weights, discover
        from airflow_provider_portfolio.market.bars import parse_timeframe
        from airflow_provider_portfolio.market.params import json_object, validate_symbols
        from airflow_provider_portfolio.operators.gating import run_instant
        from airflow_provider_portfolio.operators.monitoring import checked_exchange

        # Bad input fails here, naming the argument, before the store is opened.
        symbols = None if blank(self.symbols) else validate_symbols(maybe_json_list(self.symbols))
        weights = None if blank(self.weights) else check_weights(json_object(
            self.weights, "weights", example='{"trend": 1, "volatility": -0.5}', what="component -> weight"))
        timeframe = parse_timeframe(self.timeframe).name
        exchange = checked_exchange(self.exchange)
        now = run_instant(context)
        dag_run = context["dag_run"]
        self.log.info("Discovery at %s: %s, %s bars, window %d", now.isoformat(),
                      "every symbol in the store" if symbols is None else f"{len(symbols)} symbol(s)", timeframe,
                      self.lookback)
        store = self.store_hook.get_conn()
        try:
            result = discover(store, symbols, now=now, timeframe=timeframe, lookback=self.lookback,
                              min_bars=self.min_bars, top_n=self.top_n, weights=weights, n_factors=self.n_factors,
                              n_states=self.n_states, exchange=exchange, max_stale_bars=self.max_stale_bars,
                              run_id=dag_run.run_id, dag_id=dag_run.dag_id)
        finally:
            store.dispose()
        for row in result.ranking.head(10).itertuples():
            self.log.info("#%d %s score %+.3f, %s: %s", row.rank, row.symbol, row.score, row.regime,
                          "; ".join(row.reasons))
        for symbol, why in result.skipped.items():
            self.log.warning("left out %s: %s", symbol, why)
        self.log.info("Ranked %d symbol(s), stored %d row(s) under run %s; left out %d", result.scored, result.stored,
                      result.run_id, len(result.skipped))
        return result.to_dict()
