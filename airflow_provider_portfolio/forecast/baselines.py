"""Baseline forecasts over a (symbols, time) panel, vectorised: the bar any model must clear.

Every function takes a float panel ``values`` of shape (symbols, time) (finite, at least 2 points per
symbol), a ``horizon`` and an interval ``level``, and returns a :class:`Forecast` whose arrays have
shape (symbols, horizon). Intervals are ``point +/- z * sigma_h`` with ``z`` the normal quantile
``NormalDist().inv_cdf(0.5 + level / 2)`` and ``sigma_h`` the model's h-step error std built from the
in-sample one-step residual std ``sigma = sqrt(mean(residual ** 2))`` (no degrees-of-freedom
correction):

- ``zero_return`` (input: RETURNS): point 0; residuals ``r_t``; ``sigma_h = sigma``.
- ``last_value`` (input: levels): point ``y_T``; residuals ``y_t - y_{t-1}``; ``sigma_h = sigma * sqrt(h)``.
- ``drift`` (input: levels): point ``y_T + h * mean(diff(y))``; residuals ``diff - mean(diff)``;
  ``sigma_h = sigma * sqrt(h * (1 + h / (T - 1)))`` (the drift's estimation error included).
- ``historical_mean`` (input: levels): point ``mean(y)``; residuals ``y_t - mean(y)``;
  ``sigma_h = sigma * sqrt(1 + 1 / T)``.

"Levels" are prices or log prices. On prices a zero-return forecast *is* the last value, so
``zero_return`` is defined on returns (simple or log): it forecasts a zero return at every step, and
its interval is the spread of past returns around zero.

Functions are written against an array module ``xp`` (``numpy`` or ``cupy``); outputs live on it.
:class:`Forecast` and :func:`check_panel` live in :mod:`.base` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from types import ModuleType
from typing import Any

import numpy

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.base import Forecast, check_panel

__all__ = [
    "BASELINES",
    "Forecast",
    "check_horizon",
    "check_panel",
    "drift",
    "historical_mean",
    "interval",
    "last_value",
    "normal_quantile",
    "zero_return",
]


def check_horizon(horizon: Any) -> int:
    """``horizon`` as a positive int.

    :raises InvalidInputError: otherwise.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int | numpy.integer) or horizon < 1:
        raise InvalidInputError(f"horizon must be a positive integer, got {horizon!r}")
    return int(horizon)


def normal_quantile(level: Any) -> float:
    """``z`` such that ``[-z, z]`` holds ``level`` of a standard normal.

    :raises InvalidInputError: unless ``0 < level < 1``.
    """
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(0.5 + float(level) / 2.0)


def interval(point: Any, sigma_h: Any, level: float, model: str) -> Forecast:
    """A :class:`Forecast` with ``point +/- z(level) * sigma_h``."""
    z = normal_quantile(level)
    return Forecast(point=point, lower=point - z * sigma_h, upper=point + z * sigma_h, model=model, level=level)


def _rms(residuals: Any, xp: ModuleType) -> Any:
    return xp.sqrt(xp.mean(residuals * residuals, axis=1))


def _steps(horizon: int, xp: ModuleType) -> Any:
    return xp.arange(1, horizon + 1, dtype=xp.float64)


def zero_return(values: Any, horizon: int, *, level: float = 0.9, xp: ModuleType = numpy) -> Forecast:
    """Forecast a zero return at every step. ``values`` are RETURNS (simple or log), not prices.

    The interval is ``0 +/- z * sqrt(mean(r ** 2))`` at every step (returns of different steps are
    separate draws).
    """
    horizon = check_horizon(horizon)
    normal_quantile(level)
    r = check_panel(values, xp=xp)
    sigma = _rms(r, xp)
    point = xp.zeros((r.shape[0], horizon), dtype=xp.float64)
    return interval(point, sigma[:, None] * xp.ones(horizon), level, "zero_return")


def last_value(values: Any, horizon: int, *, level: float = 0.9, xp: ModuleType = numpy) -> Forecast:
    """Naive (random walk) forecast of levels: the last value at every step; interval grows as sqrt(h)."""
    horizon = check_horizon(horizon)
    normal_quantile(level)
    y = check_panel(values, xp=xp)
    sigma = _rms(xp.diff(y, axis=1), xp)
    point = xp.repeat(y[:, -1:], horizon, axis=1)
    return interval(point, sigma[:, None] * xp.sqrt(_steps(horizon, xp)), level, "last_value")


def drift(values: Any, horizon: int, *, level: float = 0.9, xp: ModuleType = numpy) -> Forecast:
    """Random walk with drift: ``y_T + h * mean(diff(y))``, the line through the first and last points.

    The interval accounts for the drift's estimation error: ``sigma * sqrt(h * (1 + h / (T - 1)))``.
    """
    horizon = check_horizon(horizon)
    normal_quantile(level)
    y = check_panel(values, xp=xp)
    d = xp.diff(y, axis=1)
    mean = xp.mean(d, axis=1)
    sigma = _rms(d - mean[:, None], xp)
    h = _steps(horizon, xp)
    point = y[:, -1:] + mean[:, None] * h
    n = float(d.shape[1])
    return interval(point, sigma[:, None] * xp.sqrt(h * (1.0 + h / n)), level, "drift")


def historical_mean(values: Any, horizon: int, *, level: float = 0.9, xp: ModuleType = numpy) -> Forecast:
    """The sample mean at every step; interval ``sigma * sqrt(1 + 1/T)`` (mean estimation error)."""
    horizon = check_horizon(horizon)
    normal_quantile(level)
    y = check_panel(values, xp=xp)
    mean = xp.mean(y, axis=1)
    sigma = _rms(y - mean[:, None], xp)
    point = xp.repeat(mean[:, None], horizon, axis=1)
    width = sigma * math.sqrt(1.0 + 1.0 / y.shape[1])
    return interval(point, width[:, None] * xp.ones(horizon), level, "historical_mean")


#: Baselines by name.
BASELINES: dict[str, Callable[..., Forecast]] = {
    "zero_return": zero_return,
    "last_value": last_value,
    "drift": drift,
    "historical_mean": historical_mean,
}
