"""Multivariate SSA (mSSA) over a panel of symbols: one shared subspace from stacked Page matrices.

After Agarwal, Alomar, Shah, "On Multivariate Singular Spectrum Analysis and its Variants" (2022):
symbols that share structure (a common seasonal, trends) share one low-rank subspace, which the
panel estimates better than each short series alone. For a (symbols, T) panel:

1. **Standardise** each row (``z = (y - mean) / std``; a constant row keeps std 1) so no symbol
   dominates the subspace by its price level or volatility.
2. **Page matrices.** Window ``L`` (default :func:`default_panel_window`). Each row's last
   ``n = T // L`` blocks of ``L`` consecutive values become the columns of an ``L x n`` Page matrix
   (non-overlapping, unlike SSA's Hankel matrix); the symbols' matrices are stacked side by side into
   ``P`` of shape ``L x (symbols * n)``.
3. **Subspace.** Eigendecomposition of the ``L x L`` matrix ``P P^T / M`` (never an SVD of ``P``);
   rank ``r`` by the rule of :func:`.ssa.choose_rank` unless given; ``U_r`` the leading eigenvectors.
4. **Linear model.** De-noise ``D = U_r U_r^T P``, then ``beta`` minimises
   ``|| D[:-1]^T beta - P[-1] ||`` (least squares: the last row of each block from the de-noised
   rows above it).
5. **Forecast** each symbol recursively: the next standardised value is ``beta . (last L - 1
   observed values)``, then back to the symbol's scale.

Intervals are empirical: the model's own ``h``-step forecasts from the most recent in-sample origins
(up to :data:`MAX_ERROR_ORIGINS`) give the RMS error per symbol and step, and the band is
``point +/- z * that RMS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.backend import to_numpy
from airflow_provider_portfolio.forecast.baselines import (
    Forecast,
    check_horizon,
    check_panel,
    interval,
    normal_quantile,
)
from airflow_provider_portfolio.forecast.ssa import MAX_DEFAULT_WINDOW, choose_rank

#: In-sample origins used for the empirical interval (the most recent ones).
MAX_ERROR_ORIGINS = 200
_ERROR_ROWS = 256


def default_panel_window(symbols: int, length: int) -> int:
    """``min(60, T // 4, isqrt(symbols * T) // 2)``, at least 2: enough Page columns (``symbols * T / L``)
    for the ``L x L`` covariance, at least four blocks per series, capped for cost."""
    return max(2, min(MAX_DEFAULT_WINDOW, length // 4, math.isqrt(symbols * length) // 2))


@dataclass(frozen=True, eq=False)
class MSSAFit:
    """A fitted mSSA model; arrays live on ``xp``.

    :param values: the input panel (symbols, T).
    :param window: ``L``.
    :param rank: the shared rank ``r``.
    :param eigenvalues: of the stacked Page covariance, decreasing, shape (L,).
    :param beta: linear model over the last ``L - 1`` standardised values, oldest first, shape (L - 1,).
    :param mean: per-symbol mean used to standardise, shape (symbols,).
    :param scale: per-symbol std used to standardise, shape (symbols,).
    """

    values: Any
    window: int
    rank: int
    eigenvalues: Any
    beta: Any
    mean: Any
    scale: Any
    xp: ModuleType

    def _recurse(self, windows: Any, horizon: int) -> Any:
        """Recursive forecasts from standardised windows (..., L - 1): shape (..., horizon)."""
        xp = self.xp
        steps = []
        for _ in range(horizon):
            nxt = windows @ self.beta
            steps.append(nxt)
            windows = xp.concatenate([windows[..., 1:], nxt[..., None]], axis=-1)
        return xp.stack(steps, axis=-1)

    def error_std(self, horizon: int) -> Any:
        """RMS in-sample error of the ``h``-step forecasts, shape (symbols, horizon), in input units."""
        xp = self.xp
        z = (self.values - self.mean[:, None]) / self.scale[:, None]
        lags = self.window - 1
        length = z.shape[1]
        last_origin = length - horizon  # forecasts from origin o cover o .. o + horizon - 1
        first_origin = max(lags, last_origin - MAX_ERROR_ORIGINS + 1)
        if last_origin < first_origin:
            raise InvalidInputError(
                f"horizon {horizon} leaves no in-sample origin for the interval (T = {length}, L = {self.window})"
            )
        origins = xp.arange(first_origin, last_origin + 1)
        lag_index = origins[:, None] + xp.arange(-lags, 0)[None, :]
        ahead_index = origins[:, None] + xp.arange(horizon)[None, :]
        out = []
        for lo in range(0, z.shape[0], _ERROR_ROWS):  # bounded memory: (rows, origins, L - 1) at a time
            rows = z[lo : lo + _ERROR_ROWS]
            err = self._recurse(rows[:, lag_index], horizon) - rows[:, ahead_index]
            out.append(xp.sqrt(xp.mean(err * err, axis=1)))
        return xp.concatenate(out, axis=0) * self.scale[:, None]

    def forecast(self, horizon: int, *, level: float = 0.9) -> Forecast:
        """Recursive forecast ``horizon`` steps ahead with an empirical band."""
        horizon = check_horizon(horizon)
        normal_quantile(level)
        z = (self.values[:, -(self.window - 1) :] - self.mean[:, None]) / self.scale[:, None]
        point = self._recurse(z, horizon) * self.scale[:, None] + self.mean[:, None]
        return interval(point, self.error_std(horizon), level, "mssa")


def mssa_fit(
    values: Any,
    *,
    window: int | None = None,
    rank: int | None = None,
    max_rank: int | None = None,
    xp: ModuleType = numpy,
) -> MSSAFit:
    """Fit mSSA to a (symbols, time) panel: one subspace and one linear model shared by all rows.

    :param values: finite floats, shape (symbols, T), ``T >= 8``.
    :param window: ``L`` in ``[2, T // 2]``; ``None`` for :func:`default_panel_window`.
    :param rank: shared rank in ``[1, L - 1]``; ``None`` to choose from the eigenvalues.
    :param max_rank: cap of the chosen rank (``None``: ``L // 2``).
    :param xp: ``numpy`` or ``cupy``.
    :raises InvalidInputError: on bad input.
    """
    y = check_panel(values, xp=xp, min_points=8)
    symbols, length = y.shape
    if window is None:
        L = default_panel_window(symbols, length)
    elif isinstance(window, bool) or not isinstance(window, int | numpy.integer) or not 2 <= window <= length // 2:
        raise InvalidInputError(f"window must be an integer between 2 and T // 2 = {length // 2}, got {window!r}")
    else:
        L = int(window)
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int | numpy.integer)
                             or not 1 <= rank <= L - 1):
        raise InvalidInputError(f"rank must be an integer between 1 and window - 1 = {L - 1}, got {rank!r}")

    mean = xp.mean(y, axis=1)
    scale = xp.std(y, axis=1)
    scale = xp.where(scale > 1e-12 * xp.maximum(xp.abs(mean), 1.0), scale, 1.0)
    z = (y - mean[:, None]) / scale[:, None]

    blocks = length // L
    tail = z[:, length - blocks * L :]
    page = xp.swapaxes(tail.reshape(symbols, blocks, L), 1, 2)  # (symbols, L, blocks)
    stacked = xp.swapaxes(page, 0, 1).reshape(L, symbols * blocks)
    cov = stacked @ stacked.T / stacked.shape[1]
    cov = 0.5 * (cov + cov.T)
    w, vecs = xp.linalg.eigh(cov)
    w = xp.maximum(w[::-1], 0.0)
    vecs = vecs[:, ::-1]
    r = int(to_numpy(choose_rank(w[None, :], max_rank=max_rank, xp=xp))[0]) if rank is None else int(rank)
    basis = vecs[:, :r]
    denoised = basis @ (basis.T @ stacked)
    features = denoised[:-1].T  # (columns, L - 1)
    beta = xp.linalg.lstsq(features, stacked[-1], rcond=None)[0]
    return MSSAFit(values=y, window=L, rank=r, eigenvalues=w, beta=beta, mean=mean, scale=scale, xp=xp)


def mssa_fit_forecast(
    values: Any,
    horizon: int,
    *,
    window: int | None = None,
    rank: int | None = None,
    level: float = 0.9,
    xp: ModuleType = numpy,
) -> Forecast:
    """Fit mSSA to the panel and forecast every row ``horizon`` steps; see :func:`mssa_fit`."""
    horizon = check_horizon(horizon)
    normal_quantile(level)
    return mssa_fit(values, window=window, rank=rank, xp=xp).forecast(horizon, level=level)
