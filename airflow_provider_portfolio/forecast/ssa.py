"""Batched Singular Spectrum Analysis (SSA) and its recurrent forecast over a (symbols, time) panel.

Written once against an array module ``xp`` (``numpy`` or ``cupy``): the same code runs on the CPU and
on a GPU, every step batched over symbols. For each symbol's series ``y`` of length ``T``:

1. **Embedding.** Window ``L`` (default :func:`default_window`: ``min(T // 2, 60)``, at least 2) and
   ``K = T - L + 1``; the trajectory (Hankel) matrix ``X[i, j] = y[i + j]`` is ``L x K``.
2. **Lag-covariance.** ``C = X X^T / K``, shape (symbols, L, L), one batched matmul.
3. **Eigendecomposition** of the stack with ``xp.linalg.eigh`` (on a GPU a batched Jacobi solver),
   never a stacked SVD: ``eigh`` of the small ``L x L`` matrix beats an SVD of ``X`` and CuPy's
   stacked SVD loops one matrix at a time.
4. **Rank** ``r`` per symbol, unless given (:func:`choose_rank`): the number of eigenvalues above a
   noise floor ``max(noise_factor * median(eigenvalues), rtol * largest)``, clipped to
   ``[1, min(max_rank, L - 1)]``. The median eigenvalue estimates the noise level when the signal
   occupies few of the ``L`` directions; ``rtol`` (1e-10) drops numerically-zero directions of a
   noiseless signal. Unlike an explained-variance threshold, the rule does not depend on the series'
   level (a large mean loads the first eigenvalue and would leave nothing for a seasonal).
5. **Reconstruction** ``X_hat = U_r U_r^T X`` and diagonal averaging back to a series (a loop over the
   ``L`` window offsets, vectorised over symbols and time).
6. **Recurrent (R-) forecast.** With ``pi`` the last components of the leading eigenvectors and
   ``nu^2 = sum(pi^2) < 1`` (the verticality coefficient), the linear recurrence coefficients are
   ``R = sum_i pi_i U_i[:-1] / (1 - nu^2)``; each step appends ``R . (last L - 1 values)`` to the
   reconstructed series.

Intervals are ``point +/- z * s`` with ``s`` the in-sample residual RMS ``sqrt(mean((y - y_hat)^2))``,
constant over the horizon: a simple band that ignores signal estimation error.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.forecast.backend import to_numpy
from airflow_provider_portfolio.forecast.baselines import (
    Forecast,
    check_horizon,
    check_panel,
    interval,
    normal_quantile,
)

#: Largest default window.
MAX_DEFAULT_WINDOW = 60
#: Default rank rule: components above ``NOISE_FACTOR * median eigenvalue`` are signal.
NOISE_FACTOR = 10.0
#: Eigenvalues below ``RTOL * largest`` are numerically zero and never signal.
RTOL = 1e-10
#: Verticality coefficients at least ``1 - VERTICALITY_TOL`` make the recurrence undefined.
VERTICALITY_TOL = 1e-9


class SSAError(PortfolioError):
    """The recurrent forecast is undefined (verticality coefficient ~1): choose a smaller rank or a larger window."""


def default_window(length: int) -> int:
    """``min(T // 2, 60)``, at least 2: half the series (best separability) capped for cost (``O(L^3)``)."""
    return max(2, min(length // 2, MAX_DEFAULT_WINDOW))


def choose_rank(
    eigenvalues: Any,
    *,
    max_rank: int | None = None,
    noise_factor: float = NOISE_FACTOR,
    rtol: float = RTOL,
    xp: ModuleType = numpy,
) -> Any:
    """Rank per symbol from eigenvalues sorted in decreasing order, shape (symbols, L).

    ``r`` is the number of eigenvalues above ``max(noise_factor * median, rtol * largest)``, clipped to
    ``[1, min(max_rank, L - 1)]`` (``max_rank`` defaults to ``L // 2``).
    """
    window = eigenvalues.shape[1]
    cap = window // 2 if max_rank is None else max_rank
    cap = max(1, min(cap, window - 1))
    floor = xp.maximum(noise_factor * xp.median(eigenvalues, axis=1), rtol * eigenvalues[:, 0])
    count = xp.sum(eigenvalues > floor[:, None], axis=1)
    return xp.clip(count, 1, cap)


@dataclass(frozen=True, eq=False)
class SSAFit:
    """A fitted SSA, one row per symbol; arrays live on ``xp``.

    :param values: the input panel (symbols, T).
    :param window: the embedding window ``L``.
    :param rank: signal rank per symbol, shape (symbols,).
    :param eigenvalues: lag-covariance eigenvalues in decreasing order, shape (symbols, L).
    :param reconstruction: the signal by diagonal averaging, shape (symbols, T).
    :param lrr: linear recurrence coefficients, shape (symbols, L - 1), oldest lag first.
    :param residual_std: in-sample RMS of ``values - reconstruction``, shape (symbols,).
    """

    values: Any
    window: int
    rank: Any
    eigenvalues: Any
    reconstruction: Any
    lrr: Any
    residual_std: Any
    xp: ModuleType

    def forecast(self, horizon: int, *, level: float = 0.9) -> Forecast:
        """Recurrent forecast ``horizon`` steps ahead of each symbol's reconstructed series."""
        horizon = check_horizon(horizon)
        normal_quantile(level)
        xp = self.xp
        lags = self.window - 1
        series = self.reconstruction[:, -lags:]
        steps = []
        for _ in range(horizon):
            nxt = xp.sum(self.lrr * series, axis=1)
            steps.append(nxt)
            series = xp.concatenate([series[:, 1:], nxt[:, None]], axis=1)
        point = xp.stack(steps, axis=1)
        width = self.residual_std[:, None] * xp.ones(horizon)
        return interval(point, width, level, "ssa")


def _check_window(window: Any, length: int) -> int:
    if window is None:
        return default_window(length)
    if isinstance(window, bool) or not isinstance(window, int | numpy.integer):
        raise InvalidInputError(f"window must be an integer, got {window!r}")
    if not 2 <= window <= length - 1:
        raise InvalidInputError(f"window must be between 2 and T - 1 = {length - 1}, got {window}")
    return int(window)


def _check_rank(rank: Any, window: int) -> int | None:
    if rank is None:
        return None
    if isinstance(rank, bool) or not isinstance(rank, int | numpy.integer):
        raise InvalidInputError(f"rank must be an integer, got {rank!r}")
    if not 1 <= rank <= window - 1:
        raise InvalidInputError(f"rank must be between 1 and window - 1 = {window - 1}, got {rank}")
    return int(rank)


def ssa_fit(
    values: Any,
    *,
    window: int | None = None,
    rank: int | None = None,
    max_rank: int | None = None,
    xp: ModuleType = numpy,
) -> SSAFit:
    """Fit SSA to every row of a (symbols, time) panel at once.

    :param values: finite floats, shape (symbols, T) with ``T >= 3``.
    :param window: embedding window ``L`` in ``[2, T - 1]``; ``None`` for :func:`default_window`.
    :param rank: signal rank for every symbol in ``[1, L - 1]``; ``None`` to choose per symbol
        (:func:`choose_rank`).
    :param max_rank: cap of the chosen rank (``None``: ``L // 2``); ignored when ``rank`` is given.
    :param xp: ``numpy`` or ``cupy``.
    :raises InvalidInputError: on bad input.
    :raises SSAError: when a symbol's recurrence is undefined.
    """
    y = check_panel(values, xp=xp, min_points=3)
    symbols, length = y.shape
    L = _check_window(window, length)
    given = _check_rank(rank, L)
    K = length - L + 1

    cov = _lag_covariance(y, L, K, xp)
    w, vecs = xp.linalg.eigh(cov)
    w = xp.maximum(w[:, ::-1], 0.0)
    vecs = vecs[:, :, ::-1]

    if given is None:
        ranks = choose_rank(w, max_rank=max_rank, xp=xp)
    else:
        ranks = xp.full((symbols,), given, dtype=xp.int64)
    mask = (xp.arange(L)[None, :] < ranks[:, None]).astype(xp.float64)
    basis = vecs * mask[:, None, :]  # leading eigenvectors, the others zeroed

    recon = _reconstruct(y, basis, L, K, xp)

    # Linear recurrence from the leading eigenvectors.
    pi = basis[:, L - 1, :]
    nu2 = xp.sum(pi * pi, axis=1)
    vertical = to_numpy(nu2 >= 1.0 - VERTICALITY_TOL)  # one explicit read-back of a flag per row
    if vertical.any():
        bad = [int(i) for i in numpy.flatnonzero(vertical)[:5]]
        raise SSAError(f"recurrent forecast undefined for row(s) {bad}: use a smaller rank or a larger window")
    lrr = xp.matmul(basis[:, : L - 1, :], pi[:, :, None])[:, :, 0] / (1.0 - nu2)[:, None]

    resid = y - recon
    residual_std = xp.sqrt(xp.mean(resid * resid, axis=1))
    return SSAFit(
        values=y,
        window=L,
        rank=ranks,
        eigenvalues=w,
        reconstruction=recon,
        lrr=lrr,
        residual_std=residual_std,
        xp=xp,
    )


def ssa_fit_forecast(
    values: Any,
    horizon: int,
    *,
    window: int | None = None,
    rank: int | None = None,
    level: float = 0.9,
    xp: ModuleType = numpy,
) -> Forecast:
    """Fit SSA to every row and forecast ``horizon`` steps with the recurrent method.

    See :func:`ssa_fit` for the parameters; ``level`` is the interval's coverage.
    """
    horizon = check_horizon(horizon)
    normal_quantile(level)
    return ssa_fit(values, window=window, rank=rank, xp=xp).forecast(horizon, level=level)


def _lag_covariance(y: Any, L: int, K: int, xp: ModuleType) -> Any:
    """``X X^T / K`` of the trajectory matrices without forming them: O(L T) per symbol, not O(L^2 K).

    ``C[i, i + d] = sum_{k<K} y[i + k] y[i + d + k]`` is a difference of prefix sums of the lag-``d``
    products ``y[t] y[t + d]``.
    """
    symbols = y.shape[0]
    cov = xp.zeros((symbols, L, L), dtype=xp.float64)
    rows = xp.arange(L)
    zero = xp.zeros((symbols, 1), dtype=xp.float64)
    for d in range(L):
        prefix = xp.concatenate([zero, xp.cumsum(y[:, : y.shape[1] - d] * y[:, d:], axis=1)], axis=1)
        values = (prefix[:, K : K + L - d] - prefix[:, : L - d]) / K
        i = rows[: L - d]
        cov[:, i, i + d] = values
        cov[:, i + d, i] = values
    return cov


def _reconstruct(y: Any, basis: Any, L: int, K: int, xp: ModuleType) -> Any:
    """Diagonal averaging of ``P X`` with ``P = basis basis^T``, without forming ``P X`` in full.

    An interior point ``t`` (``L - 1 <= t <= K - 1``) averages all ``L`` anti-diagonal entries, which
    is a filter of ``y``: ``(1 / L) sum_m a_m y[t + m]`` with ``a_m`` the ``m``-th diagonal sum of ``P``.
    The ``L - 1`` points at each end come from the first and last ``L - 1`` columns of ``P X``.
    Short series (``K < 2 L``) take the direct route.
    """
    symbols, length = y.shape
    proj = xp.matmul(basis, xp.swapaxes(basis, 1, 2))  # (symbols, L, L)
    if K < 2 * L:
        index = xp.arange(L)[:, None] + xp.arange(K)[None, :]
        recon_traj = xp.matmul(proj, y[:, index])
        total = xp.zeros((symbols, length), dtype=xp.float64)
        counts = xp.zeros(length, dtype=xp.float64)
        for i in range(L):
            total[:, i : i + K] += recon_traj[:, i, :]
            counts[i : i + K] += 1.0
        return total / counts
    recon = xp.zeros((symbols, length), dtype=xp.float64)
    # interior: lo = L - 1 .. hi = K - 1; offset m runs over -(L - 1) .. L - 1
    lo, hi = L - 1, K - 1
    interior = xp.zeros((symbols, hi - lo + 1), dtype=xp.float64)
    for m in range(-(L - 1), L):
        a = xp.trace(proj, offset=m, axis1=1, axis2=2)  # sum_i P[i, i + m]
        interior += a[:, None] * y[:, lo + m : hi + 1 + m]
    recon[:, lo : hi + 1] = interior / L
    # ends: columns 0 .. L - 2 and K - L + 1 .. K - 1 of P X
    cols = xp.arange(L - 1)
    head = xp.matmul(proj, y[:, xp.arange(L)[:, None] + cols[None, :]])  # (symbols, L, L - 1)
    tail_cols = K - L + 1 + cols
    tail = xp.matmul(proj, y[:, xp.arange(L)[:, None] + tail_cols[None, :]])
    for t in range(L - 1):
        i = xp.arange(t + 1)  # entries (i, t - i), all in the head columns
        recon[:, t] = xp.mean(head[:, i, t - i], axis=1)
        u = length - 1 - t  # mirrored end point: entries (i, u - i) for i = u - K + 1 .. L - 1
        j = xp.arange(u - K + 1, L)
        recon[:, u] = xp.mean(tail[:, j, u - j - (K - L + 1)], axis=1)
    return recon
