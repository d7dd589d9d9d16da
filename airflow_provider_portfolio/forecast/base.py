"""The forecast model interface: :class:`Forecast`, :func:`check_panel` and the :class:`Model` protocol.

Every model the jobs run has one shape, after ``arch``'s fit/forecast split::

    model = get_model("ssa", window=40)          # forecast/registry.py: a configured model
    fitted = model.fit(panel, backend)           # panel: host (symbols, time) float64 array
    fc = fitted.forecast(horizon=5, level=0.9)   # a Forecast whose arrays are NumPy (on the host)

A model says what it forecasts (``target``: ``log_close`` for price-level models, ``log_return`` for
variance models), the fewest bars it accepts (``min_points``), and its options (``params``, for logs and
summaries). ``fit`` takes the array backend (:mod:`.backend`) to compute on; a model that does not run
on an array backend (SARIMAX: statsmodels on CPU processes) names its own engine in ``engine`` and
ignores the backend. ``fitted.forecast`` always hands back host arrays, so a job never touches device
memory; a variance model also fills :attr:`Forecast.variance`, and rows the model could not forecast
are named in :attr:`Forecast.errors` (their values are NaN or not to be trusted).

A new model is a class with these attributes and :func:`.registry.register` with a name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.backend import to_numpy

if TYPE_CHECKING:
    from airflow_provider_portfolio.forecast.backend import Backend

#: Targets a model may forecast: log closes (level models) or log returns (variance models).
TARGETS = ("log_close", "log_return")
#: Bars a backtest keeps for its shortest training window, and the fewest the SSA family accepts in a job.
MIN_TRAIN = 30


@dataclass(frozen=True, eq=False)
class Forecast:
    """Point forecasts and a central interval, one row per symbol.

    :param point: shape (symbols, horizon).
    :param lower: lower bound of the central ``level`` interval, shape (symbols, horizon).
    :param upper: upper bound, shape (symbols, horizon).
    :param model: the model's name (``"drift"``, ``"ssa"``...).
    :param level: the interval's nominal coverage.
    :param variance: variance forecasts (symbols, horizon) of a variance model, else ``None``.
    :param errors: row -> reason for rows the model could not forecast.
    """

    point: Any
    lower: Any
    upper: Any
    model: str
    level: float = 0.9
    variance: Any = None
    errors: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def horizon(self) -> int:
        """Steps ahead."""
        return int(self.point.shape[1])


def to_host_forecast(fc: Forecast, *, errors: Mapping[int, str] | None = None, variance: Any = None) -> Forecast:
    """``fc`` with its arrays copied to the host (NumPy), plus ``errors`` and ``variance`` when given."""
    var = fc.variance if variance is None else variance
    return Forecast(
        point=to_numpy(fc.point), lower=to_numpy(fc.lower), upper=to_numpy(fc.upper), model=fc.model,
        level=fc.level, variance=None if var is None else to_numpy(var),
        errors=MappingProxyType(dict(fc.errors if errors is None else errors)),
    )


def check_panel(values: Any, *, xp: ModuleType = numpy, min_points: int = 2, name: str = "values",
                finite: bool = True) -> Any:
    """``values`` as a float64 (symbols, time) array of ``xp``, validated.

    The finiteness check reads one flag back from the device, explicitly (:func:`.backend.to_numpy`).

    :param finite: reject NaN and infinite values (``False``: the caller handles them per row).
    :raises InvalidInputError: when it is not 2-D, has no symbol, fewer than ``min_points`` points, or
        (with ``finite``) a NaN or infinite value (named by row and column).
    """
    try:
        array = xp.asarray(values, dtype=xp.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be a numeric (symbols, time) array: {exc}") from exc
    if array.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (symbols, time), got shape {tuple(array.shape)}")
    if array.shape[0] < 1:
        raise InvalidInputError(f"{name} has no symbol (shape {tuple(array.shape)})")
    if array.shape[1] < min_points:
        raise InvalidInputError(f"{name} needs at least {min_points} points per symbol, got {array.shape[1]}")
    if not finite:
        return array
    ok = xp.isfinite(array)
    if not bool(to_numpy(ok.all())):
        bad = ~to_numpy(ok)
        rows, cols = (int(i) for i in numpy.argwhere(bad)[0])
        raise InvalidInputError(
            f"{name} must be finite: {int(bad.sum())} NaN/inf value(s), first at row {rows}, column {cols}"
        )
    return array


@runtime_checkable
class Fitted(Protocol):
    """A model fitted to a panel."""

    def forecast(self, horizon: int, level: float = 0.9) -> Forecast:
        """Forecast ``horizon`` steps with a central ``level`` band; arrays on the host."""
        ...


@runtime_checkable
class Model(Protocol):
    """A configured forecast model (see the module docstring).

    :ivar name: the stored model name (``ssa``, ``garch_t``...).
    :ivar target: ``log_close`` or ``log_return``.
    :ivar min_points: the fewest points of a series the model accepts.
    :ivar params: the model's options, JSON-able, for logs and summaries.
    :ivar engine: ``None`` when the model computes on the backend given to :meth:`fit`, else the name of
        what it runs on instead (``"statsmodels"``, on the CPU).
    """

    name: str
    target: str
    min_points: int
    params: Mapping[str, Any]
    engine: str | None

    def fit(self, panel: Any, backend: Backend) -> Fitted:
        """Fit to a host (symbols, time) float64 panel, computing on ``backend``."""
        ...


def kind(model: Model) -> str:
    """The evaluation target kind of ``model``: ``variance`` for ``log_return`` targets, else ``level``."""
    return "variance" if model.target == "log_return" else "level"


def check_target(target: Any) -> str:
    """``target`` when it is one of :data:`TARGETS`.

    :raises InvalidInputError: otherwise.
    """
    if target not in TARGETS:
        raise InvalidInputError(f"target must be one of {TARGETS}, got {target!r}")
    return target
