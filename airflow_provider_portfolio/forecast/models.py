"""The built-in forecast models as :class:`~.base.Model` adapters, registered by name.

Thin adapters around the numeric functions (the numbers are theirs):

- ``ssa``, ``samossa``: :func:`.ssa.ssa_fit_forecast`, :func:`.samossa.samossa_fit_forecast`; rows are
  independent and run in row chunks that shrink on a GPU out-of-memory error
  (:func:`.backend.run_chunked`), so the fit runs with the forecast, chunk by chunk.
- ``mssa``: :func:`.mssa.mssa_fit` on the whole panel (one shared subspace), then its forecast.
- ``garch``, ``garch_t``: :func:`.garch.garch_fit` with normal or Student-t innovations; the forecast
  carries the variance forecast, and rows whose likelihood did not converge are reported as errors.
- ``sarimax``: :func:`.sarimax.sarimax_fit_forecast` per symbol on CPU processes (statsmodels; engine
  ``statsmodels``, the backend is not used). With ``warm_start`` the model remembers each panel's fitted
  parameters (keyed by the panel's first column) and starts the next fit of a prefix of the same rows
  from them: a job's backtest refits start from its forecast's fit.
- ``last_value``, ``drift``, ``historical_mean``: the level baselines of :mod:`.baselines`.
  (``zero_return`` forecasts returns without a variance forecast, which a job cannot score: it stays a
  function.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast import baselines, garch, mssa, samossa, sarimax, ssa
from airflow_provider_portfolio.forecast.backend import Backend, run_chunked, to_numpy
from airflow_provider_portfolio.forecast.base import MIN_TRAIN, Forecast, to_host_forecast
from airflow_provider_portfolio.forecast.registry import register

#: The SSA family's model names.
SSA_METHODS = ("ssa", "samossa", "mssa")
#: The level baselines registered as models.
BASELINE_MODELS = ("last_value", "drift", "historical_mean")


class SSAFamilyModel:
    """SSA, SAMoSSA or mSSA of log closes.

    :param method: ``ssa``, ``samossa`` or ``mssa``.
    :param window: embedding window (``None``: the method's default).
    :param rank: signal rank (``None``: chosen from the eigenvalues).
    :param ar_order: SAMoSSA's residual AR order (``None``: its default); other methods take none.
    :param chunk: rows per device batch for ``ssa`` and ``samossa`` (``None``: all at once).
    :raises InvalidInputError: for an unknown method, or ``ar_order`` with another method.
    """

    target = "log_close"
    min_points = MIN_TRAIN
    engine: str | None = None  # as the Model protocol declares it

    def __init__(self, method: str = "ssa", *, window: int | None = None, rank: int | None = None,
                 ar_order: int | None = None, chunk: int | None = None) -> None:
        if method not in SSA_METHODS:
            raise InvalidInputError(f"method must be 'ssa', 'samossa' or 'mssa', got {method!r}")
        if ar_order is not None and method != "samossa":
            raise InvalidInputError(f"ar_order applies to method='samossa' only, not {method!r}")
        self.name = method
        self.options: dict[str, Any] = {"window": window, "rank": rank}
        if method == "samossa":
            self.options["ar_order"] = samossa.DEFAULT_AR_ORDER if ar_order is None else ar_order
        self.chunk = chunk
        self.params: Mapping[str, Any] = {"method": method, **self.options, "chunk": chunk}

    def fit(self, panel: Any, backend: Backend) -> _SSAFitted | _MSSAFitted:
        """Fit to ``panel`` on ``backend`` (``ssa``/``samossa``: when forecasting, chunk by chunk)."""
        if self.name == "mssa":
            return _MSSAFitted(mssa.mssa_fit(panel, xp=backend.xp, **self.options))
        return _SSAFitted(self, panel, backend)


@dataclass(frozen=True, eq=False)
class _SSAFitted:
    model: SSAFamilyModel
    panel: Any
    backend: Backend

    def forecast(self, horizon: int, level: float = 0.9) -> Forecast:
        fn = ssa.ssa_fit_forecast if self.model.name == "ssa" else samossa.samossa_fit_forecast
        options = self.model.options

        def rows(xp: Any, part: Any) -> tuple[Any, Any, Any]:
            fc = fn(part, horizon, level=level, xp=xp, **options)
            return fc.point, fc.lower, fc.upper

        point, lower, upper = run_chunked(rows, self.panel, self.backend, chunk=self.model.chunk)
        return Forecast(point=point, lower=lower, upper=upper, model=self.model.name, level=level)


@dataclass(frozen=True, eq=False)
class _MSSAFitted:
    fit: mssa.MSSAFit

    def forecast(self, horizon: int, level: float = 0.9) -> Forecast:
        return to_host_forecast(self.fit.forecast(horizon, level=level))


class GarchModel:
    """GARCH(1,1) of log returns (:func:`.garch.garch_fit`); model ``garch`` (normal) or ``garch_t``.

    :param dist: ``normal`` or ``t``.
    :raises InvalidInputError: for another ``dist``.
    """

    target = "log_return"
    min_points = garch.MIN_POINTS + 1
    engine: str | None = None  # as the Model protocol declares it

    def __init__(self, dist: str = "normal") -> None:
        if dist not in ("normal", "t"):
            raise InvalidInputError(f"dist must be 'normal' or 't', got {dist!r}")
        self.dist = dist
        self.name = "garch" if dist == "normal" else "garch_t"
        self.params: Mapping[str, Any] = {"dist": dist}

    def fit(self, panel: Any, backend: Backend) -> _GarchFitted:
        """Fit every row of a returns panel at once on ``backend``."""
        return _GarchFitted(garch.garch_fit(panel, dist=self.dist, xp=backend.xp))


@dataclass(frozen=True, eq=False)
class _GarchFitted:
    fit: garch.GarchFit

    def forecast(self, horizon: int, level: float = 0.9) -> Forecast:
        fc = self.fit.forecast(horizon, level=level)
        stuck = np.flatnonzero(~to_numpy(self.fit.converged))
        why = f"GARCH likelihood did not converge in {self.fit.iterations} iterations"
        return to_host_forecast(fc, errors={int(i): why for i in stuck},
                                variance=self.fit.variance_forecast(horizon))


class SarimaxModel:
    """SARIMAX of log closes per symbol on CPU processes (statsmodels).

    :param order: ``(p, d, q)``.
    :param seasonal_order: ``(P, D, Q, s)``.
    :param trend: statsmodels trend.
    :param processes: worker processes (``None``: see :func:`.sarimax.sarimax_fit_forecast`).
    :param warm_start: start each fit from the parameters of this model's previous fit of the same rows.
    """

    name = "sarimax"
    target = "log_close"
    engine: str | None = "statsmodels"

    def __init__(self, order: Sequence[int] = (1, 0, 1), seasonal_order: Sequence[int] = (0, 0, 0, 0),
                 trend: str | None = "c", *, processes: int | None = None, warm_start: bool = True) -> None:
        self.order, self.seasonal_order = tuple(order), tuple(seasonal_order)
        self.trend = trend
        self.processes = processes
        self.warm_start = warm_start
        self.min_points = max(MIN_TRAIN, sarimax.sarimax_min_points(self.order, self.seasonal_order))
        self.params: Mapping[str, Any] = {"order": list(self.order), "seasonal_order": list(self.seasonal_order),
                                          "trend": trend}
        # Fitted params per panel of symbols, keyed by the panel's first column: a backtest trains on
        # prefixes of the same rows, so it finds the params of the forecast's fit; another group never does.
        self._last_params: dict[bytes, list[Any]] = {}

    def fit(self, panel: Any, backend: Backend | None = None) -> _SarimaxFitted:
        """Keep ``panel`` (a host array); statsmodels fits it when forecasting (the horizon is needed)."""
        return _SarimaxFitted(self, to_numpy(panel))


@dataclass(frozen=True, eq=False)
class _SarimaxFitted:
    model: SarimaxModel
    panel: np.ndarray

    def forecast(self, horizon: int, level: float = 0.9) -> Forecast:
        m = self.model
        key = np.ascontiguousarray(self.panel[:, 0]).tobytes()
        start = m._last_params.get(key) if m.warm_start else None
        result = sarimax.sarimax_fit_forecast(self.panel, horizon, order=m.order, seasonal_order=m.seasonal_order,
                                              trend=m.trend, level=level, start_params=start, processes=m.processes)
        if m.warm_start:
            m._last_params[key] = result.params
        return to_host_forecast(result.forecast, errors=result.errors)


class BaselineModel:
    """A level baseline of :mod:`.baselines` (``last_value``, ``drift``, ``historical_mean``).

    :raises InvalidInputError: for another name.
    """

    target = "log_close"
    min_points = 2
    engine: str | None = None  # as the Model protocol declares it

    def __init__(self, method: str = "last_value") -> None:
        if method not in BASELINE_MODELS:
            raise InvalidInputError(f"baseline must be one of {BASELINE_MODELS}, got {method!r}")
        self.name = method
        self.params: Mapping[str, Any] = {}

    def fit(self, panel: Any, backend: Backend) -> _BaselineFitted:
        """Keep ``panel`` on ``backend`` (a baseline has nothing to estimate beyond its forecast)."""
        return _BaselineFitted(self.name, baselines.check_panel(panel, xp=backend.xp), backend)


@dataclass(frozen=True, eq=False)
class _BaselineFitted:
    method: str
    values: Any
    backend: Backend

    def forecast(self, horizon: int, level: float = 0.9) -> Forecast:
        fn = baselines.BASELINES[self.method]
        return to_host_forecast(fn(self.values, horizon, level=level, xp=self.backend.xp))


def _variant(factory: Any, name: str, **fixed: Any) -> Any:
    """``factory`` with ``fixed`` options, registered as ``name``; those options cannot be overridden."""

    def make(**options: Any) -> Any:
        clash = sorted(set(options) & set(fixed))
        if clash:
            raise InvalidInputError(f"model {name!r} fixes {', '.join(clash)}")
        return factory(**fixed, **options)

    make.__name__ = make.__qualname__ = f"{name}_model"
    make.__doc__ = f"Model ``{name}``: :class:`{factory.__name__}` with {fixed}."
    return make


for _method in SSA_METHODS:
    register(_variant(SSAFamilyModel, _method, method=_method), name=_method)
register(GarchModel, name="garch")
register(_variant(GarchModel, "garch_t", dist="t"), name="garch_t")
register(SarimaxModel)
for _method in BASELINE_MODELS:
    register(_variant(BaselineModel, _method, method=_method), name=_method)
