"""Rolling-origin backtests, per-symbol scores against a naive baseline, health labels, ensemble weights.

A forecaster is any ``f(train, horizon) -> Forecast`` over a (symbols, time) panel (bind its options
with :func:`functools.partial`). :func:`backtest` refits it at ``origins`` cut points at the end of the
history, each ``step`` bars apart (default: the horizon, so the scored windows do not overlap), most
recent first, and keeps each origin's forecasts next to what happened. :func:`score` turns a model's
backtest and its baseline's (same origins) into per-symbol metrics:

- ``rmse``, ``mae`` over all origins and steps;
- ``directional_accuracy``: share of (origin, step) pairs where the forecast and the outcome move the
  same way from the last value seen at the origin (pairs where the outcome did not move are left
  out; ``None`` target kinds without a direction, see below);
- ``coverage``: share of outcomes inside the model's own band (as the model produced it, before any
  calibration), to compare with the nominal ``level``;
- ``skill = 1 - rmse / baseline_rmse``.

The **health label**: ``insufficient_data`` when the history holds fewer than ``min_origins``
origins, else ``healthy`` when ``skill > MIN_SKILL`` (1e-9) (the model beat the naive baseline on the recent
origins), else ``unhealthy``. Downstream, a model that is not healthy for a symbol is not used.

Two target kinds:

- ``level`` (log prices): baseline ``last_value``; errors are ``point - outcome``.
- ``variance`` (returns with a variance forecast, GARCH): the baseline forecasts the sample variance
  of the training returns; errors are ``variance - (outcome - point) ** 2`` and direction is
  undefined; coverage is of the return band.

:func:`calibration_factors` give, per step, the ``level`` quantile over all symbols and origins of
``|outcome - point| / half-width``: multiplying a new forecast's half-width by it makes the band reach
its nominal coverage out of sample (a split-conformal calibration pooled over the panel), which
corrects bands that ignore estimation error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.backend import to_numpy
from airflow_provider_portfolio.forecast.baselines import Forecast, check_horizon

LABELS = ("healthy", "unhealthy", "insufficient_data")
TARGETS = ("level", "variance")
#: Default number of rolling origins.
DEFAULT_ORIGINS = 10
#: Fewer usable origins than this and the label is ``insufficient_data``.
DEFAULT_MIN_ORIGINS = 3
#: ``skill`` must exceed this to count as beating the baseline (a model equal to it differs by rounding only).
MIN_SKILL = 1e-9


@dataclass(frozen=True, eq=False)
class Backtest:
    """Forecasts at rolling origins next to the outcomes; NumPy arrays.

    :param origins: positions of the first forecast bar of each origin (training is ``values[:, :o]``),
        most recent first.
    :param point: shape (origins, symbols, horizon); likewise ``lower``, ``upper`` and ``actual``.
    :param last: the last training value at each origin, shape (origins, symbols).
    :param variance: variance forecasts, shape like ``point``, or ``None``.
    :param train_variance: sample variance of each origin's training values (origins, symbols).
    """

    origins: list[int]
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    actual: np.ndarray
    last: np.ndarray
    variance: np.ndarray | None
    train_variance: np.ndarray

    @property
    def horizon(self) -> int:
        """Steps per origin."""
        return int(self.point.shape[2])


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Per-symbol scores of one model; arrays of shape (symbols,), NaN where undefined.

    :param labels: one of :data:`LABELS` per symbol.
    """

    origins: int
    horizon: int
    rmse: np.ndarray
    mae: np.ndarray
    directional_accuracy: np.ndarray
    coverage: np.ndarray
    baseline: str
    baseline_rmse: np.ndarray
    skill: np.ndarray
    labels: list[str]

    @property
    def healthy(self) -> np.ndarray:
        """Boolean mask of healthy symbols."""
        return np.array([label == "healthy" for label in self.labels], dtype=bool)


def origin_positions(length: int, horizon: int, origins: int, step: int | None, min_train: int) -> list[int]:
    """Cut points ``o`` (most recent first) with ``o >= min_train`` and ``o + horizon <= length``."""
    step = horizon if step is None else step
    if isinstance(origins, bool) or not isinstance(origins, int) or origins < 1:
        raise InvalidInputError(f"origins must be a positive integer, got {origins!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise InvalidInputError(f"step must be a positive integer, got {step!r}")
    first = length - horizon
    return [o for o in range(first, first - origins * step, -step) if o >= min_train]


def backtest(
    values: Any,
    forecaster: Callable[[np.ndarray, int], Forecast | tuple[Forecast, Any]],
    *,
    horizon: int,
    origins: int = DEFAULT_ORIGINS,
    step: int | None = None,
    min_train: int = 30,
) -> Backtest:
    """Refit ``forecaster`` at rolling origins and collect its forecasts and the outcomes.

    :param values: finite (symbols, T) panel (levels, or returns for variance models).
    :param forecaster: ``f(train, horizon)`` returning a :class:`Forecast`, or ``(Forecast, variance)``
        for a variance model.
    :param horizon: steps per origin.
    :param origins: how many origins at most (fewer when the history is short).
    :param step: bars between origins (default ``horizon``).
    :param min_train: the shortest training window allowed.
    :raises InvalidInputError: when no origin fits in the history.
    """
    horizon = check_horizon(horizon)
    y = np.asarray(to_numpy(values), dtype=np.float64)
    if y.ndim != 2:
        raise InvalidInputError(f"values must be 2-D (symbols, time), got shape {y.shape}")
    cuts = origin_positions(y.shape[1], horizon, origins, step, min_train)
    if not cuts:
        raise InvalidInputError(
            f"no backtest origin: T = {y.shape[1]} bars, horizon {horizon}, at least {min_train} training bars"
        )
    points, lowers, uppers, variances = [], [], [], []
    for o in cuts:
        out = forecaster(y[:, :o], horizon)
        fc, var = out if isinstance(out, tuple) else (out, None)
        points.append(to_numpy(fc.point))
        lowers.append(to_numpy(fc.lower))
        uppers.append(to_numpy(fc.upper))
        if var is not None:
            variances.append(to_numpy(var))
    index = np.array(cuts)[:, None] + np.arange(horizon)[None, :]
    actual = np.transpose(y[:, index], (1, 0, 2))
    train_variance = np.stack([np.var(y[:, :o], axis=1) for o in cuts])
    return Backtest(
        origins=cuts,
        point=np.stack(points),
        lower=np.stack(lowers),
        upper=np.stack(uppers),
        actual=actual,
        last=y[:, np.array(cuts) - 1].T,
        variance=np.stack(variances) if variances else None,
        train_variance=train_variance,
    )


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(x * x, axis=(0, 2)))


def score(
    bt: Backtest,
    *,
    target: str = "level",
    min_origins: int = DEFAULT_MIN_ORIGINS,
) -> Evaluation:
    """Per-symbol metrics of a backtest against the naive baseline of its ``target`` kind.

    :param bt: the model's backtest.
    :param target: ``"level"`` or ``"variance"`` (see the module docstring).
    :param min_origins: fewer origins than this gives ``insufficient_data``.
    :raises InvalidInputError: for an unknown target, or a variance target without variance forecasts.
    """
    if target not in TARGETS:
        raise InvalidInputError(f"target must be one of {TARGETS}, got {target!r}")
    inside = (bt.actual >= bt.lower) & (bt.actual <= bt.upper)
    coverage = inside.mean(axis=(0, 2))
    if target == "level":
        err = bt.point - bt.actual
        rmse, mae = _rms(err), np.abs(err).mean(axis=(0, 2))
        baseline, baseline_rmse = "last_value", _rms(bt.last[:, :, None] - bt.actual)
        moved = bt.actual != bt.last[:, :, None]
        same = np.sign(bt.point - bt.last[:, :, None]) == np.sign(bt.actual - bt.last[:, :, None])
        counted = moved.sum(axis=(0, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            direction = np.where(counted > 0, (same & moved).sum(axis=(0, 2)) / counted, np.nan)
    else:
        if bt.variance is None:
            raise InvalidInputError("a variance target needs variance forecasts in the backtest")
        realised = (bt.actual - bt.point) ** 2
        err = bt.variance - realised
        rmse, mae = _rms(err), np.abs(err).mean(axis=(0, 2))
        baseline = "sample_variance"
        baseline_rmse = _rms(bt.train_variance[:, :, None] - realised)
        direction = np.full(rmse.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        skill = np.where(baseline_rmse > 0, 1.0 - rmse / baseline_rmse, np.nan)
    enough = len(bt.origins) >= min_origins
    labels = [
        "insufficient_data" if not enough else ("healthy" if np.isfinite(s) and s > MIN_SKILL else "unhealthy")
        for s in skill
    ]
    return Evaluation(
        origins=len(bt.origins),
        horizon=bt.horizon,
        rmse=rmse,
        mae=mae,
        directional_accuracy=direction,
        coverage=coverage,
        baseline=baseline,
        baseline_rmse=baseline_rmse,
        skill=skill,
        labels=labels,
    )


def calibration_factors(bt: Backtest, level: float) -> np.ndarray:
    """Per step, the ``level`` quantile of ``|outcome - point| / half-width`` over symbols and origins.

    Rows with a zero half-width are left out; a step with none left gets 1.0 (no change).
    """
    half = (bt.upper - bt.lower) / 2.0
    factors = np.ones(bt.horizon)
    for h in range(bt.horizon):
        width = half[:, :, h]
        ok = width > 0
        if ok.any():
            ratio = np.abs(bt.actual[:, :, h] - bt.point[:, :, h])[ok] / width[ok]
            factors[h] = float(np.quantile(ratio, level))
    return factors


def calibrate(forecast: Forecast, factors: np.ndarray) -> Forecast:
    """``forecast`` with each step's half-width multiplied by ``factors`` (see :func:`calibration_factors`)."""
    point = to_numpy(forecast.point)
    half = (to_numpy(forecast.upper) - to_numpy(forecast.lower)) / 2.0 * np.asarray(factors)[None, :]
    return Forecast(point=point, lower=point - half, upper=point + half, model=forecast.model, level=forecast.level)


def ensemble_weights(rmse: np.ndarray, healthy: np.ndarray) -> np.ndarray:
    """Inverse-MSE weights per symbol over models, healthy models only.

    :param rmse: shape (models, symbols).
    :param healthy: boolean, shape (models, symbols).
    :return: shape (models, symbols); each column sums to 1, or is all zero where no model is healthy.
    """
    rmse = np.asarray(rmse, dtype=np.float64)
    ok = np.asarray(healthy, dtype=bool) & np.isfinite(rmse) & (rmse > 0)
    with np.errstate(divide="ignore"):
        raw = np.where(ok, 1.0 / np.where(ok, rmse, 1.0) ** 2, 0.0)
    total = raw.sum(axis=0)
    return np.where(total > 0, raw / np.where(total > 0, total, 1.0), 0.0)
