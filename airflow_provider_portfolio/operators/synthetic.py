"""SyntheticRefreshOperator: regenerate the synthetic datasets and point ``latest`` at the desk's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.market_data import synthetic_root
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The Variable naming the dataset the desk runs on.
DATASET_VARIABLE = "portfolio.synthetic_dataset_id"
#: Calendar days a refresh covers when no ``start`` is given.
DEFAULT_SPAN_DAYS = 730


class SyntheticRefreshOperator(BaseOperator):
    """Regenerate the synthetic datasets (one per profile, ``<profile>-<YYYYMMDD>`` of the run's date), point
    ``latest`` at the first profile's, prune old ones, and set Variable ``portfolio.synthetic_dataset_id``.

    What it does is :func:`airflow_provider_portfolio.market.datasets.refresh_datasets`; the report (ids, rows,
    statuses, what was pruned) is the task's XCom. A re-run for the same date with the same settings rewrites
    nothing.

    :param profiles: profiles to make (templated; a list, JSON list or comma-separated), the first is the desk's;
        default all, ``calm`` first.
    :param symbols: the universe (templated); default Variable ``portfolio.default_tickers``.
    :param start: first session date (templated); default ``end`` minus two years.
    :param end: last session date (templated); default the day before the run's date (UTC).
    :param timeframe: the bars' timeframe (templated), default ``1Day``.
    :param seed: the datasets' seed; default ``[portfolio] synthetic_seed``.
    :param exchange: calendar of equities (templated); default ``[portfolio] default_exchange``.
    :param root: the datasets' folder (templated); default ``[portfolio] synthetic_dir`` (see :func:`synthetic_root`).
    :param keep: datasets kept per profile (default 4); the one ``latest`` names is always kept.
    :param set_variable: set Variable ``portfolio.synthetic_dataset_id`` to the new latest id (default True).
    """

    template_fields: Sequence[str] = ("profiles", "symbols", "start", "end", "timeframe", "exchange", "root")
    ui_color = "#ede7f6"

    def __init__(
        self,
        *,
        profiles: list[str] | str | None = None,
        symbols: list[str] | str | None = None,
        start: str | date | None = None,
        end: str | date | None = None,
        timeframe: str = "1Day",
        seed: int | None = None,
        exchange: str | None = None,
        root: str | None = None,
        keep: int = 4,
        set_variable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.profiles = profiles
        self.symbols = symbols
        self.start = start
        self.end = end
        self.timeframe = timeframe
        self.seed = seed
        self.exchange = exchange
        self.root = root
        self.keep = keep
        self.set_variable = set_variable

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.config import get_option
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.market.datasets import PROFILES, refresh_datasets
        from airflow_provider_portfolio.market.params import utc_date
        from airflow_provider_portfolio.operators.gating import run_instant
        from airflow_provider_portfolio.operators.monitoring import checked_exchange, desk_symbols

        # Bad input fails here, naming the setting, before anything is generated or written.
        symbols = desk_symbols(self.symbols)
        profiles: Any = list(PROFILES) if blank(self.profiles) else maybe_json_list(self.profiles)
        exchange = checked_exchange(self.exchange)
        now = run_instant(context)
        end = now.date() - timedelta(days=1) if blank(self.end) else utc_date(self.end, "end")
        start = end - timedelta(days=DEFAULT_SPAN_DAYS) if blank(self.start) else utc_date(self.start, "start")
        seed_text = get_option("synthetic_seed") if self.seed is None else self.seed
        try:
            seed = int(str(seed_text).strip()) if not isinstance(seed_text, bool) else None
        except ValueError:
            seed = None
        if seed is None:
            raise InvalidInputError(f"seed must be an integer (or [portfolio] synthetic_seed), got {seed_text!r}")
        root = synthetic_root(self.root)

        report = refresh_datasets(root, profiles=profiles, symbols=symbols, start=start, end=end, seed=seed,
                                  now=now, keep=self.keep, timeframe=self.timeframe, exchange=exchange)
        result = report.to_dict()
        self.log.info("Synthetic datasets under %s: latest %s (was %s); %s; pruned %s", root, report.latest,
                      report.previous, ", ".join(f"{d['dataset_id']} {d['status']}" for d in report.datasets),
                      ", ".join(report.pruned) or "none")
        if self.set_variable:
            from airflow.sdk import Variable

            Variable.set(DATASET_VARIABLE, report.latest)
            result["variable"] = {DATASET_VARIABLE: report.latest}
        return result
