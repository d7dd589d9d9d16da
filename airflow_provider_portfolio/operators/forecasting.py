"""Forecasting operators: SSA family and GARCH (GPU-capable), SARIMAX (CPU processes), and the ensemble.

Each operator reads bars from the portfolio store, forecasts, backtests and writes forecasts and model
evaluations back in one transaction (:func:`..forecast.jobs.forecast_universe`), and returns a small
summary. Data never travels through XCom.

GPU routing: :class:`SSAForecastOperator` and :class:`GarchForecastOperator` take ``pool``,
``pool_slots`` and ``queue`` with defaults from ``[portfolio] gpu_pool`` (``gpu_pool``, one slot per GPU:
``python -m airflow_provider_portfolio setup`` creates it; where it does not exist the provider's cluster
policy runs the task in ``default_pool``, so a copied DAG never waits on a missing pool) and
``[portfolio] gpu_queue`` (``default``; set ``AIRFLOW__PORTFOLIO__GPU_QUEUE`` for Celery/Kubernetes GPU
workers). These are declared in the
operators' signatures, so a DAG's ``default_args`` still win over the configuration. ``device``
(``auto``/``cuda``/``cpu``, default ``[portfolio] device``) is read and resolved on the worker that runs
the task (``auto`` uses CuPy where a GPU is visible there) and passed to the job: the forecasting code
itself reads no configuration.

Each operator takes its model from the forecast model registry
(:mod:`airflow_provider_portfolio.forecast.registry`) by name.
"""

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

    from airflow_provider_portfolio.forecast.base import Model
    from airflow_provider_portfolio.forecast.jobs import ForecastReport


class _ForecastOperatorBase(BaseOperator):
    """Shared parameters and the job outline; subclasses say which registered model they run.

    :param symbols: tickers (templated): a list, a JSON list string or a comma-separated string;
        ``None`` forecasts every symbol with bars of ``timeframe`` in the store.
    :param timeframe: bar timeframe (templated), default ``1Day``.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id``, else the
        embedded SQLite store.
    :param history: the latest bars used per symbol (default 1000).
    :param horizon: bars ahead (default 5).
    :param level: nominal coverage of the forecast band (default 0.9).
    :param origins: rolling origins of the backtest behind the evaluation (default 10).
    :param min_origins: fewer origins than this labels a symbol ``insufficient_data`` (default 3).
    :param exchange: calendar of equities for the forecast bars' timestamps; default
        ``[portfolio] default_exchange``.
    :param max_failed_fraction: the task fails when more than this fraction of the symbols could not
        be forecast (default 0.5), after writing the others; it always fails when none could.
    """

    template_fields: Sequence[str] = ("symbols", "timeframe", "store_conn_id")
    ui_color = "#cfe2f3"
    #: The store tables the job reads, for OpenLineage.
    lineage_inputs: Sequence[str] = ("bars",)

    def __init__(
        self,
        *,
        symbols: list[str] | str | None = None,
        timeframe: str = "1Day",
        store_conn_id: str | None = None,
        history: int = 1000,
        horizon: int = 5,
        level: float = 0.9,
        origins: int = 10,
        min_origins: int = 3,
        exchange: str | None = None,
        max_failed_fraction: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.timeframe = timeframe
        self.store_conn_id = store_conn_id
        self.history = history
        self.horizon = horizon
        self.level = level
        self.origins = origins
        self.min_origins = min_origins
        self.exchange = exchange
        self.max_failed_fraction = max_failed_fraction

    @cached_property
    def store_hook(self) -> PortfolioStoreHook:
        return PortfolioStoreHook(store_conn_id=self.store_conn_id or None)

    def build_model(self) -> Model:
        """The model this operator runs, from the registry."""
        raise NotImplementedError

    def resolved_device(self) -> str | None:
        """The device passed to the job (``None``: the model runs on its own engine)."""
        return None

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.config import get_option
        from airflow_provider_portfolio.forecast.jobs import forecast_universe, resolve

        self._check_failed_fraction()
        model, backend = resolve(self.build_model(), self.resolved_device())
        store = self.store_hook.get_conn()  # the hook has migrated it
        symbols = self._resolve_symbols(store)
        engine = model.engine or f"{backend.name} ({backend.device})"
        self.log.info("Forecasting %d symbol(s) with %s %s on %s, store %s", len(symbols), model.name,
                      dict(model.params), engine, store.url)
        report = forecast_universe(
            store, symbols, model, run_id=context["run_id"], timeframe=self.timeframe, history=self.history,
            horizon=self.horizon, level=self.level, origins=self.origins, min_origins=self.min_origins,
            exchange=self.exchange or get_option("default_exchange"), device=backend,
        )
        return self._finish(report, len(symbols))

    # -- helpers --------------------------------------------------------------------------------------
    def _check_failed_fraction(self) -> None:
        from airflow_provider_portfolio.exceptions import InvalidInputError

        value = self.max_failed_fraction
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise InvalidInputError(f"max_failed_fraction must be within [0, 1], got {value!r}")

    def _resolve_symbols(self, store: Any) -> list[str]:
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.market.params import validate_symbols

        if blank(self.symbols):
            symbols = sorted(s for s, ts in store.latest_bar_ts(None, self.timeframe).items() if ts is not None)
            if not symbols:
                raise InvalidInputError(f"no symbols given and the store holds no {self.timeframe} bars")
            return symbols
        return validate_symbols(maybe_json_list(self.symbols))

    def _finish(self, report: ForecastReport, asked: int) -> dict[str, Any]:
        from airflow_provider_portfolio.metrics import emit_forecast

        summary = report.to_dict()
        emit_forecast(summary)
        self.log.info("%s: %d symbol(s) forecast (%s), %d forecast and %d evaluation row(s) written in %.2f s",
                      report.model, len(report.forecast), summary["labels"] or "no labels", report.forecast_rows,
                      report.evaluation_rows, report.seconds)
        if report.failed:
            self.log.warning("%s: %d symbol(s) not forecast: %s", report.model, len(report.failed),
                             "; ".join(f"{s}: {why}" for s, why in report.failed.items()))
        if asked and (not report.forecast or report.failed_fraction > self.max_failed_fraction):
            details = "; ".join(f"{s}: {why}" for s, why in list(report.failed.items())[:20])
            raise RuntimeError(f"{len(report.failed)} of {asked} symbol(s) could not be forecast "
                               f"(max_failed_fraction={self.max_failed_fraction}): {details}")
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """OpenLineage: ``lineage_inputs`` -> ``forecasts`` and ``model_evaluations`` of the store."""
        from airflow_provider_portfolio.lineage import forecast_lineage

        return forecast_lineage(self.store_hook.url, self.lineage_inputs)


class _GpuForecastOperator(_ForecastOperatorBase):
    """Adds ``device`` and GPU routing defaults (see the module docstring).

    :param device: ``auto``, ``cuda`` or ``cpu``; default ``[portfolio] device``, read on the worker.
    :param pool: default ``[portfolio] gpu_pool``.
    :param pool_slots: slots taken in the pool (default 1: one GPU).
    :param queue: default ``[portfolio] gpu_queue``.
    """

    def __init__(
        self,
        *,
        device: str | None = None,
        pool: str | None = None,
        pool_slots: int = 1,
        queue: str | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_portfolio.config import get_option

        super().__init__(pool=pool or get_option("gpu_pool"), pool_slots=pool_slots,
                         queue=queue or get_option("gpu_queue"), **kwargs)
        self.device = device

    def resolved_device(self) -> str | None:
        """``device``, else ``[portfolio] device`` (read here, on the worker)."""
        from airflow_provider_portfolio.config import get_option

        return self.device or get_option("device")


class SSAForecastOperator(_GpuForecastOperator):
    """Forecast log closes with SSA, SAMoSSA or mSSA, batched over symbols (CuPy on a GPU, else NumPy).

    :param method: ``ssa`` (default), ``samossa`` (SSA plus an AR of the residual) or ``mssa`` (one
        subspace for the whole panel).
    :param window: embedding window; default from the series length (see ``forecast/ssa.py``).
    :param rank: signal rank; default chosen per symbol from the eigenvalues.
    :param ar_order: SAMoSSA's residual AR order (default 2).
    :param chunk: symbols per batch on the device (``None``: all at once; halves on out-of-memory).
    """

    template_fields: Sequence[str] = (*_ForecastOperatorBase.template_fields, "method")

    def __init__(self, *, method: str = "ssa", window: int | None = None, rank: int | None = None,
                 ar_order: int | None = None, chunk: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.method = method
        self.window = window
        self.rank = rank
        self.ar_order = ar_order
        self.chunk = chunk

    def build_model(self) -> Model:
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.forecast.models import SSA_METHODS
        from airflow_provider_portfolio.forecast.registry import get_model

        if self.method not in SSA_METHODS:
            raise InvalidInputError(f"method must be 'ssa', 'samossa' or 'mssa', got {self.method!r}")
        return get_model(self.method, window=self.window, rank=self.rank, ar_order=self.ar_order, chunk=self.chunk)


class GarchForecastOperator(_GpuForecastOperator):
    """Forecast log-return volatility with GARCH(1,1), fitted for all symbols at once (CuPy or NumPy).

    Forecast rows have target ``log_return``: point = the expected return (the sample mean), band from
    the conditional variance, ``variance`` = the variance forecast.

    :param dist: innovations, ``normal`` (default, model ``garch``) or ``t`` (model ``garch_t``).
    """

    def __init__(self, *, dist: str = "normal", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dist = dist

    def build_model(self) -> Model:
        from airflow_provider_portfolio.forecast.registry import get_model

        return get_model("garch", dist=self.dist)


class SarimaxForecastOperator(_ForecastOperatorBase):
    """Forecast log closes with statsmodels SARIMAX per symbol, in parallel CPU processes.

    CPU only: it takes no ``device`` and keeps Airflow's usual pool and queue.

    :param order: ``(p, d, q)``, default ``(1, 0, 1)``.
    :param seasonal_order: ``(P, D, Q, s)``, default none.
    :param trend: statsmodels trend (default ``"c"``).
    :param processes: worker processes (default: one per CPU, at most 8).
    :param warm_start: seed each backtest fit with the parameters of the forecast's fit (default True).
    :param origins: rolling origins of the backtest (default 3 here: each origin refits every symbol).
    """

    def __init__(self, *, order: Sequence[int] = (1, 0, 1), seasonal_order: Sequence[int] = (0, 0, 0, 0),
                 trend: str | None = "c", processes: int | None = None, warm_start: bool = True,
                 origins: int = 3, **kwargs: Any) -> None:
        super().__init__(origins=origins, **kwargs)
        self.order = order
        self.seasonal_order = seasonal_order
        self.trend = trend
        self.processes = processes
        self.warm_start = warm_start

    def build_model(self) -> Model:
        from airflow_provider_portfolio.forecast.registry import get_model

        return get_model("sarimax", order=self.order, seasonal_order=self.seasonal_order, trend=self.trend,
                         processes=self.processes, warm_start=self.warm_start)


class EnsembleForecastOperator(_ForecastOperatorBase):
    """Combine this run's forecasts of ``models`` into model ``ensemble``, weighted by recent evaluation.

    Per symbol, only models labelled ``healthy`` (they beat the naive baseline in the backtest) take
    part, weighted by inverse backtest MSE; a symbol with none gets an ``unhealthy`` evaluation and no
    ensemble forecast. Run it downstream of the model tasks of the same DAG run.

    :param models: component model names (default ``ssa``, ``samossa``, ``mssa``, ``sarimax``).
    """

    template_fields: Sequence[str] = (*_ForecastOperatorBase.template_fields, "models")
    lineage_inputs: Sequence[str] = ("forecasts", "model_evaluations")

    def __init__(self, *, models: Sequence[str] = ("ssa", "samossa", "mssa", "sarimax"), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = models

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.forecast.jobs import ensemble_universe

        self._check_failed_fraction()
        store = self.store_hook.get_conn()  # the hook has migrated it
        symbols = self._resolve_symbols(store)
        models = maybe_json_list(self.models)
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        report = ensemble_universe(store, symbols, list(models), run_id=context["run_id"], timeframe=self.timeframe)
        return self._finish(report, len(symbols))
