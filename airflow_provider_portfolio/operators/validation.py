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

    :param symbols: only these symbols (templated: a list, JSON list or comma-separated); default every symbol with
        forecasts or decisions in the window.
    :param timeframe: the bars, forecasts and decisions validated (templated), default ``1Day``.
    :param lookback_days: the window, days before the run's instant (default 30).
    :param exchange: calendar of equities (templated); default ``[portfolio] default_exchange``.
    :param kinds: ``forecast``, ``signal`` or both (default both).
    :param calibration_bins: bins of the confidence calibration table (default 5).
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    """

    template_fields: Sequence[str] = ("symbols", "timeframe", "exchange", "store_conn_id")
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

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.validation import validate_signals
        from airflow_provider_portfolio.market.params import validate_symbols
        from airflow_provider_portfolio.operators.gating import run_instant
        from airflow_provider_portfolio.operators.monitoring import checked_exchange

        # Bad input fails here, naming the setting, before the store is opened.
        symbols = None if blank(self.symbols) else validate_symbols(maybe_json_list(self.symbols))
        exchange = checked_exchange(self.exchange)
        dag_run = context["dag_run"]
        store = self.store_hook.get_conn()
        try:
            report = validate_signals(store, now=run_instant(context), symbols=symbols,
                                      lookback_days=self.lookback_days, timeframe=str(self.timeframe).strip(),
                                      exchange=exchange, kinds=self.kinds, calibration_bins=self.calibration_bins,
                                      dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        finally:
            store.dispose()
        self.log.info("Signal validation %s: %s", report.status, report.message)
        return report.to_dict()
