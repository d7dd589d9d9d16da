"""TransactionCostsOperator: commission and slippage measured from the ledger, applied to the simulated broker only
when asked."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.templated import blank

if TYPE_CHECKING:
    from airflow.sdk import Context


class TransactionCostsOperator(StoreHookMixin, BaseOperator):
    """Measure commission and slippage per symbol and asset class from the filled orders of the last
    ``lookback_days``, store them as a ``transaction_costs`` study and, only with ``apply=True``, write the
    recommendation to Variable ``portfolio.simulated_costs``.

    What it measures is :func:`airflow_provider_portfolio.trading.costs.estimate_costs`: fills, notional, commission
    (sum and basis points of notional), slippage of each fill against its order's reference price in basis points
    (signed against the side: a buy above the reference is a cost), mean, median and 90th percentile, flagged below
    ``min_fills`` fills. The recommendation holds, per asset class with enough fills, ``commission_bps`` and
    ``slippage_bps`` (the notional-weighted mean, floored at 0).

    With ``apply=True`` the recommended classes are merged into ``portfolio.simulated_costs`` (a class or key not
    recommended keeps what the Variable held) and the study is marked applied; ``AutoTraderOperator`` then uses them
    for the simulated broker wherever its own ``commission_bps``/``slippage_bps`` are not given. Without the flag, or
    without a recommendation, nothing is written. The XCom is the small report (per asset class, the
    recommendation, and whether it was applied).

    :param account: the ledger account (templated), e.g. ``simulated:default``; default every account.
    :param lookback_days: the window of orders, days before the run's instant (default 90).
    :param min_fills: fills an estimate needs before it recommends anything (default 20).
    :param apply: write the recommendation to Variable ``portfolio.simulated_costs`` (default False).
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    """

    template_fields: Sequence[str] = ("account", "store_conn_id")
    ui_color = "#ddebf7"

    def __init__(
        self,
        *,
        account: str | None = None,
        lookback_days: float = 90,
        min_fills: int = 20,
        apply: bool = False,
        store_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.account = account
        self.lookback_days = lookback_days
        self.min_fills = min_fills
        self.apply = apply
        self.store_conn_id = store_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.operators.gating import run_instant
        from airflow_provider_portfolio.operators.trading import SIMULATED_COSTS_VARIABLE
        from airflow_provider_portfolio.trading.costs import COSTS_STUDY, estimate_costs, parse_simulated_costs
        from airflow_provider_portfolio.variables import get_variable

        # Bad input fails here, naming the setting, before the store is opened.
        days = self.lookback_days
        if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days) \
                or not 0 < days <= 3660:
            raise InvalidInputError(f"lookback_days must be a number of days > 0 and <= 3660, got {days!r}")
        if not isinstance(self.apply, bool):
            raise InvalidInputError(f"apply must be True or False, got {self.apply!r}")
        current = parse_simulated_costs(get_variable(SIMULATED_COSTS_VARIABLE), setting=SIMULATED_COSTS_VARIABLE) \
            if self.apply else {}
        account = None if blank(self.account) else str(self.account).strip()
        until = run_instant(context)
        dag_run = context["dag_run"]
        store = self.store_hook.get_conn()
        try:
            report = estimate_costs(store, account=account, since=until - timedelta(days=days), until=until,
                                    min_fills=self.min_fills, dag_id=dag_run.dag_id, run_id=dag_run.run_id)
            result = {**report.to_dict(), "applied": False}
            if self.apply and report.recommended:
                from airflow.sdk import Variable

                merged = {cls: {**current.get(cls, {}), **costs} for cls, costs in report.recommended.items()}
                merged = {**current, **merged}
                Variable.set(SIMULATED_COSTS_VARIABLE, json.dumps(merged, sort_keys=True))
                store.mark_study_applied(COSTS_STUDY, report.study_id)
                self.log.warning("Applied the measured costs: Variable %s set to %s", SIMULATED_COSTS_VARIABLE,
                                 json.dumps(merged, sort_keys=True))
                result.update(applied=True, simulated_costs=merged)
            elif self.apply:
                self.log.info("Nothing applied: no asset class had %d fills (%s)", report.min_fills, report.message)
        finally:
            store.dispose()
        self.log.info("Transaction costs %s: %s", report.status, report.message)
        return result
