"""SAMoSSA-style forecasts: SSA for the deterministic part plus an AR model of the residual, batched.

After Alomar, Dahleh, Mann, Shah, "SAMoSSA: Multivariate Singular Spectrum Analysis with Stochastic
Autoregressive Noise" (NeurIPS 2023): stage one estimates the deterministic (trend and seasonal) part,
stage two fits an AR(p) model to what is left, and the forecast is the sum of both. Here stage one is
the batched per-symbol SSA of :mod:`.ssa` (its reconstruction and recurrent forecast); the panel
variant with a shared subspace is :mod:`.mssa`. For each symbol:

1. ``f = SSA reconstruction of y``, residual ``x = y - f``.
2. AR(p) of ``x`` by least squares without intercept (SSA's residual has mean ~0): the normal
   equations ``(X^T X + ridge) phi = X^T x`` for all symbols in one batched ``p x p`` solve, with a
   tiny ridge (``1e-10`` of the trace) so a constant residual gives ``phi = 0`` instead of a singular
   matrix.
3. Forecast ``y_{T+h} = f_{T+h} + x_{T+h}`` where ``f`` is SSA's recurrent forecast and ``x`` is the AR
   recursion started from the last ``p`` residuals.
4. Interval ``point +/- z * sigma_a * sqrt(sum_{j<h} psi_j^2)`` with ``sigma_a`` the RMS of the AR
   innovations and ``psi`` the AR's moving-average weights (``psi_0 = 1``,
   ``psi_j = sum_i phi_i psi_{j-i}``): the AR's own forecast error, signal estimation error ignored.

The AR order defaults to :data:`DEFAULT_AR_ORDER`. The AR is not forced to be stationary: a
least-squares fit on SSA residuals is in practice, and over a horizon of a few bars an estimate just
past the unit circle does not run away.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.baselines import Forecast, check_horizon, interval, normal_quantile
from airflow_provider_portfolio.forecast.ssa import SSAFit, ssa_fit

#: AR order of the residual model unless given.
DEFAULT_AR_ORDER = 2
_RIDGE = 1e-10


@dataclass(frozen=True, eq=False)
class ARFit:
    """AR(p) coefficients per symbol, fitted without intercept; arrays live on ``xp``.

    :param phi: shape (symbols, p), ``phi[:, 0]`` multiplies the most recent value.
    :param sigma: RMS of the one-step innovations, shape (symbols,).
    :param last: the last ``p`` values of each series, oldest first, shape (symbols, p).
    """

    phi: Any
    sigma: Any
    last: Any
    xp: ModuleType

    @property
    def order(self) -> int:
        """``p``."""
        return int(self.phi.shape[1])

    def forecast(self, horizon: int) -> Any:
        """Point forecasts ``horizon`` steps ahead, shape (symbols, horizon)."""
        xp = self.xp
        p = self.order
        if p == 0:
            return xp.zeros((self.phi.shape[0], horizon), dtype=xp.float64)
        history = self.last[:, ::-1]  # most recent first, aligned with phi
        steps = []
        for _ in range(horizon):
            nxt = xp.sum(self.phi * history, axis=1)
            steps.append(nxt)
            history = xp.concatenate([nxt[:, None], history[:, : p - 1]], axis=1)
        return xp.stack(steps, axis=1)

    def error_scale(self, horizon: int) -> Any:
        """``sqrt(sum_{j<h} psi_j^2)`` for ``h = 1..horizon``, shape (symbols, horizon)."""
        xp = self.xp
        p = self.order
        psi = [xp.ones(self.phi.shape[0], dtype=xp.float64)]
        for j in range(1, horizon):
            term = xp.zeros(self.phi.shape[0], dtype=xp.float64)
            for i in range(1, min(j, p) + 1):
                term = term + self.phi[:, i - 1] * psi[j - i]
            psi.append(term)
        weights = xp.stack(psi, axis=1)
        return xp.sqrt(xp.cumsum(weights * weights, axis=1))


def check_ar_order(order: Any, length: int) -> int:
    """``order`` as an int in ``[0, length // 4]``.

    :raises InvalidInputError: otherwise.
    """
    if isinstance(order, bool) or not isinstance(order, int | numpy.integer) or order < 0:
        raise InvalidInputError(f"ar_order must be a non-negative integer, got {order!r}")
    if order > length // 4:
        raise InvalidInputError(f"ar_order must be at most T // 4 = {length // 4} for T = {length}, got {order}")
    return int(order)


def ar_fit(values: Any, order: int, *, xp: ModuleType = numpy) -> ARFit:
    """Least-squares AR(``order``) without intercept for every row of a finite (symbols, T) array."""
    x = xp.asarray(values, dtype=xp.float64)
    symbols, length = x.shape
    p = check_ar_order(order, length)
    if p == 0:
        sigma = xp.sqrt(xp.mean(x * x, axis=1))
        return ARFit(phi=xp.zeros((symbols, 0)), sigma=sigma, last=xp.zeros((symbols, 0)), xp=xp)
    # Design: lags 1..p of x_t for t = p..T-1, shape (symbols, T - p, p), column 0 = lag 1.
    lags = xp.stack([x[:, p - i : length - i] for i in range(1, p + 1)], axis=2)
    target = x[:, p:]
    gram = xp.matmul(xp.swapaxes(lags, 1, 2), lags)
    rhs = xp.matmul(xp.swapaxes(lags, 1, 2), target[:, :, None])
    trace = xp.trace(gram, axis1=1, axis2=2)
    ridge = _RIDGE * xp.maximum(trace, 1e-300)
    gram = gram + ridge[:, None, None] * xp.eye(p)[None, :, :]
    phi = xp.linalg.solve(gram, rhs)[:, :, 0]
    innovations = target - xp.matmul(lags, phi[:, :, None])[:, :, 0]
    sigma = xp.sqrt(xp.mean(innovations * innovations, axis=1))
    return ARFit(phi=phi, sigma=sigma, last=x[:, -p:], xp=xp)


@dataclass(frozen=True, eq=False)
class SAMoSSAFit:
    """A fitted SAMoSSA model: the SSA of the deterministic part and the AR of its residual.

    :param ssa: the stage-one :class:`SSAFit`.
    :param ar: the stage-two :class:`ARFit` of ``values - ssa.reconstruction``.
    """

    ssa: SSAFit
    ar: ARFit

    def forecast(self, horizon: int, *, level: float = 0.9) -> Forecast:
        """SSA's recurrent forecast plus the AR forecast of the residual, with the AR's error band."""
        horizon = check_horizon(horizon)
        normal_quantile(level)
        point = self.ssa.forecast(horizon, level=level).point + self.ar.forecast(horizon)
        width = self.ar.sigma[:, None] * self.ar.error_scale(horizon)
        return interval(point, width, level, "samossa")


def samossa_fit(
    values: Any,
    *,
    window: int | None = None,
    rank: int | None = None,
    ar_order: int = DEFAULT_AR_ORDER,
    xp: ModuleType = numpy,
) -> SAMoSSAFit:
    """Fit SAMoSSA to every row of a (symbols, time) panel.

    :param values: finite floats, shape (symbols, T).
    :param window: SSA embedding window (see :func:`.ssa.ssa_fit`).
    :param rank: SSA rank, or ``None`` to choose per symbol.
    :param ar_order: order ``p`` of the residual AR, in ``[0, T // 4]`` (0: pure SSA with SSA's band).
    :param xp: ``numpy`` or ``cupy``.
    :raises InvalidInputError: on bad input.
    :raises SSAError: when a symbol's recurrence is undefined.
    """
    fit = ssa_fit(values, window=window, rank=rank, xp=xp)
    return SAMoSSAFit(ssa=fit, ar=ar_fit(fit.values - fit.reconstruction, ar_order, xp=xp))


def samossa_fit_forecast(
    values: Any,
    horizon: int,
    *,
    window: int | None = None,
    rank: int | None = None,
    ar_order: int = DEFAULT_AR_ORDER,
    level: float = 0.9,
    xp: ModuleType = numpy,
) -> Forecast:
    """Fit SAMoSSA to every row and forecast ``horizon`` steps; see :func:`samossa_fit`."""
    horizon = check_horizon(horizon)
    normal_quantile(level)
    return samossa_fit(values, window=window, rank=rank, ar_order=ar_order, xp=xp).forecast(horizon, level=level)
