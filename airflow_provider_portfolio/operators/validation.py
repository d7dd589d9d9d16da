"""SignalValidationOperator: the desk's stored forecasts and trading signals against the bars that followed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from airflow.sdk import Context


class SignalValidationOperator(StoreHookMixin, BaseOperator):
    """Validate the forecasts and trading decisions of the last ``lookback_days`` not validated yet, and store the
    window's hit rates, errors, band coverage and confidence calibration as a ``signal_validation`` study.

    What it does is :func:`airflow_provider_portfolio.desk.validation.validate_signals`: each forecast step whose
    target bar has closed is compared with that bar's log close (``log_return`` models: its log return); each decision
    with the close-to-close log return of the bar after the decided one. Steps whose bar has not closed are left for
    a later run, and the days a run missed are filled by the next one; a retry validates nothing twice. Rows go to the
    store's ``signal_validations``; monitoring grades them (``validation_*`` checks). The XCom is the small report
    (counts, and the figures per model and trading DAG).

    Decisions on bars nobody stores (a trading cycle's intraday bars, which it fetches and never stores) are validated
    on bars fetched from ``sources`` (closed bars only, never written to the store); the store is read first, and a
    symbol no source serves waits for a later run.

    :param symbols: only these symbols (templated: a list, JSON list or comma-separated); default every symbol with
        forecasts or decisions in the window.
    :param timeframe: the bars, forecasts and decisions validated (templated), default ``1Day``.
    :param lookback_days: the window, days before the run's instant (default 30).
    :param exchange: calendar of equities (templated); default ``[portfolio] default_exchange``.
    :param kinds: ``forecast``, ``signal`` or both (default both).
    :param calibration_bins: bins of the confidence calibration table (default 5).
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    :param sources: market-data sources for the bars of decisions the store lacks (templated): ``"synthetic"`` or
        market-data connection ids, in failover order. Default: the default data connections that exist, else the
        synthetic market (none in ``execution_mode = live`` without a data connection: stored bars only).
    """

    template_fields: Sequence[str] = ("symbols", "timeframe", "exchange", "store_conn_id", "sources")
    ui_color = "#ddebf7"

    def __init__(
        self,
        *,
        symbols: list[str] | str | None = None,
        timeframe: str = "1Day",
        lookback_days: float = 30,
        exchange: str | None = None,
        kinds: Sequence[str] = ("forecast", "signal"),
        calibration_bins: int = 5,
        store_conn_id: str | None = None,
        sources: list[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.timeframe = timeframe
        self.lookback_days = lookback_days
        self.exchange = exchange
        self.kinds = kinds
        self.calibration_bins = calibration_bins
        self.store_conn_id = store_conn_id
        self.sources = sources

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.validation import validate_signals
        from airflow_provider_portfolio.hooks.market_data import validate_source_names
        from airflow_provider_portfolio.market.params import validate_symbols
        from airflow_provider_portfolio.operators.gating import run_instant
        from airflow_provider_portfolio.operators.monitoring import checked_exchange

        # Bad input fails here, naming the setting, before the store is opened.
        symbols = None if blank(self.symbols) else validate_symbols(maybe_json_list(self.symbols))
        exchange = checked_exchange(self.exchange)
        names = None if blank(self.sources) else validate_source_names(maybe_json_list(self.sources))
        sources = self._data_sources(names, exchange)
        dag_run = context["dag_run"]
        store = self.store_hook.get_conn()
        try:
            report = validate_signals(store, now=run_instant(context), symbols=symbols,
                                      lookback_days=self.lookback_days, timeframe=str(self.timeframe).strip(),
                                      exchange=exchange, kinds=self.kinds, calibration_bins=self.calibration_bins,
                                      dag_id=dag_run.dag_id, run_id=dag_run.run_id, sources=sources)
        finally:
            store.dispose()
        self.log.info("Signal validation %s: %s", report.status, report.message)
        return report.to_dict()

    def _data_sources(self, names: list[str] | None, exchange: str) -> list[Any] | None:
        """The sources named (a bad or missing one fails the task), or the defaults; ``None`` where there are no
        defaults (``execution_mode = live`` without a data connection): stored bars only."""
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.hooks.market_data import data_sources

        if names is not None:
            return data_sources(names, exchange=exchange)
        try:
            return data_sources(None, exchange=exchange)
        except InvalidInputError as err:
            self.log.warning("No market-data sources for bars the store lacks (%s): stored bars only", err)
            return None
