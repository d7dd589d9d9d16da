"""Batched GARCH(1,1) by maximum likelihood over a (symbols, time) panel of returns, on NumPy or CuPy.

**Model.** For each symbol's returns ``r_t`` (simple or log), ``t = 1..T``::

    r_t = mu + e_t,    e_t = sigma_t * z_t,
    sigma2_t = omega + alpha * e_{t-1}^2 + beta * sigma2_{t-1}

with ``mu`` fixed at the sample mean and ``z_t`` iid standard normal (``dist="normal"``) or Student-t with
``nu`` degrees of freedom scaled to unit variance (``dist="t"``, the log-density of ``arch``'s
``StudentsT``)::

    log f(e | sigma2) = lgamma((nu + 1) / 2) - lgamma(nu / 2) - log(pi * (nu - 2)) / 2
                        - log(sigma2) / 2 - (nu + 1) / 2 * log(1 + e^2 / (sigma2 * (nu - 2)))

**Initialisation.** The recursion starts from ``arch``'s backcast, used for both ``e_0^2`` and
``sigma2_0``: ``tau = min(75, T)``, ``w = 0.94 ** arange(tau)`` normalised to sum 1,
``backcast = sum(w * e[:tau] ** 2)``. The log-likelihood is therefore the one ``arch`` maximises with
``arch_model(e, mean="Zero", vol="GARCH", p=1, q=1, dist=..., rescale=False)`` on the demeaned series
(``arch`` also clips the variance to loose bounds, which only bites on absurd parameters).

**Constraints.** Each row is divided by its standard deviation (``omega`` and the log-likelihood are
reported in the units of the input; ``alpha``, ``beta``, ``nu`` are scale-free). The search runs over
``(omega, a, p[, eta])`` with ``alpha = a * p``, ``beta = (1 - a) * p``, ``eta = 1 / nu``, where every
constraint is a bound:

- ``OMEGA_BOUNDS`` on ``omega`` on the unit-variance scale, so ``omega > 0``;
- ``0 <= a <= 1``, i.e. ``alpha >= 0`` and ``beta >= 0``;
- ``0 <= p <= MAX_PERSISTENCE``: ``alpha + beta < 1`` strictly (a finite unconditional variance);
- ``NU_BOUNDS`` on ``nu`` (``arch``'s: ``nu > 2`` for a finite variance).

**Estimator.** Starting values: ``arch``'s grid (``alpha`` in 0.01, 0.05, 0.1, 0.2 times persistence in
0.5, 0.7, 0.9, 0.98, ``omega`` targeting the sample variance), all points and symbols evaluated at once and
the best Gaussian likelihood kept per symbol; ``nu`` starts from the kurtosis of the standardised
residuals (``arch``'s rule). Then projected Newton iterations on all symbols at once:

- analytic gradient and Hessian: ``d sigma2_t / d theta`` and ``d2 sigma2_t / d theta d beta`` follow
  forward recursions carried by the same loop over time as ``sigma2`` (the backcast is a constant, as in
  ``arch``); the sums over time run in blocks of ``_BLOCK`` bars;
- variables at a bound whose gradient points outwards are fixed; the Hessian of the free ones is used as
  is where it is negative definite (Newton) and otherwise with the absolute values of its eigenvalues
  (batched ``k x k`` eigendecompositions, ``k`` = 3 or 4);
- a step moves ``a`` and ``p`` by at most 0.1 and ``eta`` by at most 0.05, and goes at most 99 % of the
  way to a bound unless already next to it, so a long step cannot stick a symbol on a bound far from its
  maximum; it is then projected on the bounds (every trial point is feasible);
- a backtracking search along that path takes the largest step with an Armijo increase and never a lower
  likelihood, several step sizes evaluated in one batch; where the Newton decrement shrinks slowly (a flat
  ridge, or a path longer than the largest move), steps of 2, 4 and 8 times, with as many times the
  largest move, are tried as well and the best kept;
- at ``alpha = beta = 0`` (``p = 0``, where ``a`` has no effect) ``a`` is set to 1 or 0, whichever of
  ``alpha`` and ``beta`` raises the likelihood faster, so that the search can leave that corner.

A symbol stops, and drops out of later iterations, when the Hessian of its free parameters is negative
definite and the Newton step promises at most ``tol * T`` more log-likelihood. It is flagged not converged
when ``max_iter`` is reached, or when the search finds no increase while the step still promises more than
``100 * tol * T`` (or the Hessian is not negative definite). Every operation acts on all symbols at once;
the only Python loops over data are over time, each step covering all symbols.

Arrays live on the array module ``xp`` (``numpy`` or ``cupy``); special functions come from
``scipy.special`` or ``cupyx.scipy.special``. Decisions that need a value on the host (whether any symbol
stopped, which rows are constant) read it back explicitly with :func:`.backend.to_numpy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.backend import to_numpy
from airflow_provider_portfolio.forecast.baselines import Forecast, check_horizon, check_panel, normal_quantile

#: Fewer points per symbol are refused: with less, GARCH parameters are barely identified and the
#: backcast (75 bars) would be most of the sample.
MIN_POINTS = 100
#: Innovation distributions.
DISTS = ("normal", "t")
#: Backcast window and decay (``arch``'s).
BACKCAST_WINDOW = 75
BACKCAST_DECAY = 0.94
#: Bounds of ``omega`` on the unit-variance scale (returns divided by their standard deviation).
OMEGA_BOUNDS = (1e-8, 10.0)
#: Largest ``alpha + beta``.
MAX_PERSISTENCE = 1.0 - 1e-6
#: Bounds of the Student-t degrees of freedom (``arch``'s).
NU_BOUNDS = (2.05, 500.0)
#: A row whose standard deviation is at most this fraction of its largest absolute return is constant.
FLAT_RTOL = 1e-10

_GRID_ALPHA = (0.01, 0.05, 0.1, 0.2)
_GRID_PERSISTENCE = (0.5, 0.7, 0.9, 0.98)
_START_BLOCK = 50  # bars per block of the starting-value grid
_BLOCK = 32  # bars per block of the likelihood sums (fixed, so results never depend on the batch)
_ARMIJO = 1e-4
_TO_BOUND = 0.99  # a step goes at most this fraction of the way to a bound...
_SNAP = 1e-3  # ...unless the coordinate is this close to it (relative to its range)
_MAX_MOVE = (math.inf, 0.1, 0.1, 0.05)  # largest move of (omega, a, p, eta) in one step
_BACKTRACK = 8  # step sizes tried per backtracking batch: 2^-1..2^-8, then 2^-9..2^-16...
_BACKTRACK_BATCHES = 5  # smallest step 2^-40
_STRETCH = (2.0, 4.0, 8.0)  # longer steps tried on a flat ridge
_SLOW = 0.3  # a Newton decrement above this fraction of the previous one marks a flat ridge
_FAIL = 100.0  # a failed search with a decrement above _FAIL * 2 * tol * T is a failure
_LOG_2PI = math.log(2.0 * math.pi)


def _special(xp: ModuleType) -> ModuleType:
    """``scipy.special`` for NumPy, ``cupyx.scipy.special`` for CuPy (``gammaln``, ``digamma``, ``polygamma``);
    an array namespace that brings its own ``special`` (a test backend) uses it."""
    if xp is numpy:
        import scipy.special as special
    elif getattr(xp, "special", None) is not None:
        special = xp.special
    else:
        import cupyx.scipy.special as special
    return special


@dataclass(frozen=True, eq=False)
class GarchFit:
    """A fitted GARCH(1,1), one entry per symbol; arrays live on ``xp``.

    :param mu: the constant mean, the sample mean of the returns, shape (symbols,).
    :param omega: variance intercept in the units of the input returns (squared), shape (symbols,).
    :param alpha: ARCH coefficient, shape (symbols,).
    :param beta: GARCH coefficient, shape (symbols,).
    :param nu: Student-t degrees of freedom, shape (symbols,); NaN for ``dist="normal"``.
    :param loglik: log-likelihood at the optimum in the units of the input, shape (symbols,).
    :param converged: whether each symbol's optimisation converged, shape (symbols,), bool.
    :param iterations: Newton iterations run (the most any symbol needed).
    :param last_variance: conditional variance of the next bar ``sigma2_{T+1}``, shape (symbols,).
    :param dist: ``"normal"`` or ``"t"``.
    :param xp: the array module.
    """

    mu: Any
    omega: Any
    alpha: Any
    beta: Any
    nu: Any
    loglik: Any
    converged: Any
    iterations: int
    last_variance: Any
    dist: str
    xp: ModuleType

    def variance_forecast(self, horizon: int) -> Any:
        """``E[sigma2_{T+h}]`` for ``h = 1..horizon``, shape (symbols, horizon).

        ``v_1 = sigma2_{T+1}`` and ``v_h = omega + (alpha + beta) v_{h-1}``, that is
        ``v_h = s2 + (alpha + beta) ** (h - 1) * (v_1 - s2)`` with ``s2 = omega / (1 - alpha - beta)`` the
        unconditional variance, the limit for large ``h``.
        """
        horizon = check_horizon(horizon)
        xp = self.xp
        persistence = self.alpha + self.beta
        uncond = self.omega / (1.0 - persistence)
        powers = persistence[:, None] ** xp.arange(horizon, dtype=xp.float64)[None, :]
        return uncond[:, None] + powers * (self.last_variance - uncond)[:, None]

    def forecast(self, horizon: int, *, level: float = 0.9) -> Forecast:
        """The expected return ``mu`` at every step, within ``mu +/- q * sqrt(E[sigma2_{T+h}])``.

        ``q`` is the normal quantile of the central ``level`` interval, or for ``dist="t"`` the quantile of
        the Student-t with ``nu`` degrees of freedom scaled to unit variance, ``q_t(nu) * sqrt((nu - 2) / nu)``,
        per symbol. Model ``"garch"`` or ``"garch_t"``.
        """
        horizon = check_horizon(horizon)
        z = normal_quantile(level)
        xp = self.xp
        sd = xp.sqrt(self.variance_forecast(horizon))
        if self.dist == "t":
            import scipy.special

            nu = to_numpy(self.nu)
            q = scipy.special.stdtrit(nu, 0.5 + float(level) / 2.0) * numpy.sqrt((nu - 2.0) / nu)
            width = xp.asarray(q, dtype=xp.float64)[:, None] * sd
            model = "garch_t"
        else:
            width = z * sd
            model = "garch"
        point = xp.repeat(self.mu[:, None], horizon, axis=1)
        return Forecast(point=point, lower=point - width, upper=point + width, model=model, level=level)


def _check_options(dist: Any, max_iter: Any, tol: Any) -> None:
    if not isinstance(dist, str) or dist not in DISTS:
        raise InvalidInputError(f"dist must be one of {DISTS}, got {dist!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | numpy.integer) or max_iter < 1:
        raise InvalidInputError(f"max_iter must be a positive integer, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0.0 < float(tol) < 1.0:
        raise InvalidInputError(f"tol must be in (0, 1), got {tol!r}")


def _recur(xp: ModuleType, s2: Any, beta: Any, first: Any) -> None:
    """The GARCH recursion in place over time (axis 0), all columns at once:
    ``s2[0] += beta * first``, then ``s2[t] += beta * s2[t - 1]``. The only loop over time."""
    tmp = xp.multiply(first, beta)
    s2[0] += tmp
    for t in range(1, s2.shape[0]):
        xp.multiply(s2[t - 1], beta, out=tmp)
        s2[t] += tmp


class _Data:
    """Squared unit-variance residuals of some symbols, time-major.

    ``lagged`` is (T + 1, n): the backcast, then ``e_1^2 .. e_T^2``; ``x2`` (``e_t^2``) and ``prev``
    (``e_{t-1}^2``, the backcast at ``t = 1``) are views of it.
    """

    def __init__(self, lagged: Any):
        self.lagged = lagged
        self.x2 = lagged[1:]
        self.prev = lagged[:-1]
        self.backcast = lagged[0]

    def take(self, index: Any) -> _Data:
        return _Data(self.lagged[:, index])


class _Model:
    """Log-likelihood, its derivatives and the search geometry, batched over columns (symbols)."""

    def __init__(self, dist: str, xp: ModuleType):
        self.xp = xp
        self.k = 4 if dist == "t" else 3
        lo = [OMEGA_BOUNDS[0], 0.0, 0.0, 1.0 / NU_BOUNDS[1]]
        hi = [OMEGA_BOUNDS[1], 1.0, MAX_PERSISTENCE, 1.0 / NU_BOUNDS[0]]
        self.lo = xp.asarray(lo[: self.k], dtype=xp.float64)
        self.hi = xp.asarray(hi[: self.k], dtype=xp.float64)
        self.eps = 1e-10 * (self.hi - self.lo)
        self.max_move = xp.asarray(_MAX_MOVE[: self.k], dtype=xp.float64)
        self.special = _special(xp) if dist == "t" else None

    # -- parameters -------------------------------------------------------------------------------
    @staticmethod
    def natural(phi: Any) -> tuple[Any, Any, Any, Any]:
        """``(omega, alpha, beta, nu)`` from ``(omega, a, p[, eta])``; ``nu`` is None for the normal."""
        omega, a, p = phi[:, 0], phi[:, 1], phi[:, 2]
        nu = 1.0 / phi[:, 3] if phi.shape[1] > 3 else None
        return omega, a * p, (1.0 - a) * p, nu

    def search(self, omega: Any, alpha: Any, beta: Any, nu: Any) -> Any:
        """``(omega, a, p[, eta])`` from the natural parameters, within the bounds."""
        xp = self.xp
        p = alpha + beta
        a = xp.where(p > 0, alpha / xp.where(p > 0, p, 1.0), 0.5)
        cols = [omega, a, p] + ([1.0 / nu] if self.k == 4 else [])
        return xp.clip(xp.stack(cols, axis=1), self.lo, self.hi)

    # -- recursions: the only loops over time -----------------------------------------------------
    def variance(self, omega: Any, alpha: Any, beta: Any, data: _Data) -> Any:
        """``sigma2`` (T, n)."""
        xp = self.xp
        s2 = xp.multiply(data.prev, alpha)
        s2 += omega
        _recur(xp, s2, beta, data.backcast)
        return s2

    def loglik(self, phi: Any, data: _Data, cols: Any = None) -> tuple[Any, Any]:
        """Log-likelihood (n,) on the unit-variance scale, and the last ``sigma2`` (n,).

        :param cols: for each row of ``phi``, its column of ``data`` (``None``: row ``i`` is column ``i``);
            gathered block by block, so that trying many points costs no copy of the whole series.
        """
        xp = self.xp
        omega, alpha, beta, nu = self.natural(phi)
        length = data.x2.shape[0]
        n = phi.shape[0]
        k = None if nu is None else nu - 2.0
        carry = data.backcast if cols is None else data.backcast[cols]  # sigma2_0
        logs = xp.zeros(n, dtype=xp.float64)
        rest = xp.zeros(n, dtype=xp.float64)
        for t0 in range(0, length, _BLOCK):
            t1 = min(t0 + _BLOCK, length)
            lagged = data.lagged[t0 : t1 + 1] if cols is None else data.lagged[t0 : t1 + 1][:, cols]
            s2 = xp.multiply(lagged[:-1], alpha)
            s2 += omega
            _recur(xp, s2, beta, carry)
            carry = s2[-1].copy()
            z = xp.divide(lagged[1:], s2)
            if k is None:
                rest += xp.sum(z, axis=0)
            else:
                z /= k
                rest += xp.sum(xp.log1p(z, out=z), axis=0)
            logs += xp.sum(xp.log(s2, out=s2), axis=0)
        if nu is None:
            return -0.5 * (length * _LOG_2PI + logs + rest), carry
        sp = self.special
        assert sp is not None and k is not None  # nu is set only for the Student t, which loads its specials
        const = sp.gammaln(0.5 * (nu + 1.0)) - sp.gammaln(0.5 * nu) - 0.5 * xp.log(math.pi * k)
        return length * const - 0.5 * logs - 0.5 * (nu + 1.0) * rest, carry

    def derivatives(self, phi: Any, data: _Data) -> tuple[Any, Any]:
        """Gradient (n, k) and Hessian (n, k, k) of the log-likelihood in ``(omega, alpha, beta[, nu])``.

        With ``c_t = d l_t / d sigma2_t`` and ``d_t = d2 l_t / d sigma2_t^2``, the gradient is
        ``sum_t c_t D_t`` and the Hessian ``sum_t (d_t D_t D_t' + c_t H_t)`` (plus the ``nu`` terms), where
        ``D_t = d sigma2_t / d theta = (1, e_{t-1}^2, sigma2_{t-1}) + beta D_{t-1}`` and the only non-zero
        second derivatives ``H_t = d2 sigma2_t / d theta d beta = D_{t-1} (twice for beta) + beta H_{t-1}``.
        """
        xp = self.xp
        ein = xp.einsum
        omega, alpha, beta, nu = self.natural(phi)
        length, n = data.x2.shape
        # Seven channels: sigma2, D_omega, D_alpha, D_beta, H_omega, H_alpha, H_beta / 2. Row t of ``work``
        # is [source_t (3n) | state_{t-1} (7n)]: sigma2, D_omega, D_alpha take the sources
        # (omega + alpha e_{t-1}^2, 1, e_{t-1}^2) and channels 3..6 take channels 0..3 of the previous
        # state, so state_t = beta * state_{t-1} + work[t, :7n]: two operations per bar for all symbols.
        beta7 = xp.concatenate([beta] * 7)
        work = xp.empty((_BLOCK + 1, 10 * n), dtype=xp.float64)
        work[:, n : 2 * n] = 1.0
        work[0, 3 * n :] = 0.0
        work[0, 3 * n : 4 * n] = data.backcast  # sigma2_0; D and H start at 0
        first = xp.zeros((6, n), dtype=xp.float64)  # sum_t c_t (D_t, H_t)
        second = xp.zeros((6, n), dtype=xp.float64)  # sum_t d_t D_i D_j, upper triangle
        pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
        if nu is not None:
            k = nu - 2.0
            mixed = xp.zeros((3, n), dtype=xp.float64)  # sum_t (d2 l_t / d sigma2_t d nu) D_t
            nu_sums = xp.zeros((3, n), dtype=xp.float64)
        for t0 in range(0, length, _BLOCK):
            t1 = min(t0 + _BLOCK, length)
            b = t1 - t0
            if t0:
                work[0, 3 * n :] = work[_BLOCK, 3 * n :]  # the last state of the previous block
            source = work[:b]
            xp.multiply(data.prev[t0:t1], alpha, out=source[:, :n])
            source[:, :n] += omega
            source[:, 2 * n : 3 * n] = data.prev[t0:t1]
            for state, out, add in zip(work[:b, 3 * n :], work[1 : b + 1, 3 * n :], work[:b, : 7 * n]):
                xp.multiply(state, beta7, out=out)
                out += add
            block = work[1 : b + 1, 3 * n :]
            s2 = block[:, :n]
            ds = (block[:, n : 2 * n], block[:, 2 * n : 3 * n], block[:, 3 * n : 4 * n])
            inv = 1.0 / s2
            z = data.x2[t0:t1] * inv
            if nu is None:
                c = z - 1.0
                c *= 0.5 * inv
                d = 0.5 - z
            else:
                kz = k + z
                wz = (nu + 1.0) * z / kz
                c = wz - 1.0
                c *= 0.5 * inv
                d = wz * k / kz + wz - 1.0
                d *= -0.5
                cross = (z - 3.0) * z / (kz * kz)
                cross *= 0.5 * inv
                for i in range(3):
                    mixed[i] += ein("ts,ts->s", cross, ds[i])
                zk = z / (k * kz)
                nu_sums[0] += xp.sum(xp.log1p(z / k), axis=0)
                nu_sums[1] += xp.sum(zk, axis=0)
                nu_sums[2] += ein("ts,ts->s", zk, (nu + 1.0) * (2.0 * k + z) / (k * kz))
            d *= inv
            d *= inv
            first += ein("ts,tcs->cs", c, block[:, n:].reshape(b, 6, n))
            for m, (i, j) in enumerate(pairs):
                second[m] += ein("ts,ts,ts->s", d, ds[i], ds[j])
        kk = self.k
        g = xp.zeros((n, kk), dtype=xp.float64)
        g[:, :3] = first[:3].T
        hess = xp.zeros((n, kk, kk), dtype=xp.float64)
        for m, (i, j) in enumerate(pairs):
            hess[:, i, j] = second[m]
        hess[:, 0, 2] += first[3]
        hess[:, 1, 2] += first[4]
        hess[:, 2, 2] += 2.0 * first[5]
        if nu is not None:
            sp = self.special
            assert sp is not None  # nu is set only for the Student t, which loads its specials
            half = 0.5 * (nu + 1.0)
            c1 = 0.5 * sp.digamma(half) - 0.5 * sp.digamma(0.5 * nu) - 0.5 / k
            c2 = 0.25 * sp.polygamma(1, half) - 0.25 * sp.polygamma(1, 0.5 * nu) + 0.5 / (k * k)
            # d l_t / d nu = c1 - log(q_t) / 2 + (nu + 1) z / (2 k kz), q_t = 1 + z / k, kz = k + z;
            # d2 l_t / d nu2 = c2 + z / (k kz) - (nu + 1) z (2 k + z) / (2 (k kz)^2).
            g[:, 3] = length * c1 - 0.5 * nu_sums[0] + half * nu_sums[1]
            hess[:, 3, 3] = length * c2 + nu_sums[1] - 0.5 * nu_sums[2]
            hess[:, :3, 3] = mixed.T
        strict = xp.triu(xp.ones((kk, kk), dtype=xp.float64), 1)  # mirror the upper triangle
        return g, hess + xp.swapaxes(hess * strict, 1, 2)

    # -- search geometry --------------------------------------------------------------------------
    def unstick(self, phi: Any, g: Any) -> Any:
        """At ``p = 0`` (``alpha = beta = 0``) every ``a`` is the same point: take ``a = 1`` when
        ``d l / d alpha >= d l / d beta``, else ``a = 0``, so that ``p`` leaves 0 if either would rise."""
        xp = self.xp
        stuck = phi[:, 2] <= self.lo[2] + self.eps[2]
        if not bool(to_numpy(xp.any(stuck))):
            return phi
        phi = phi.copy()
        phi[:, 1] = xp.where(stuck, xp.where(g[:, 1] >= g[:, 2], 1.0, 0.0), phi[:, 1])
        return phi

    def to_search(self, phi: Any, g: Any, hess: Any) -> tuple[Any, Any]:
        """Gradient and Hessian in ``(omega, a, p[, eta])`` from those in ``(omega, alpha, beta[, nu])``."""
        xp = self.xp
        n, kk = g.shape
        a, p = phi[:, 1], phi[:, 2]
        jac = xp.zeros((n, kk, kk), dtype=xp.float64)
        jac[:, 0, 0] = 1.0
        jac[:, 1, 1] = p
        jac[:, 1, 2] = a
        jac[:, 2, 1] = -p
        jac[:, 2, 2] = 1.0 - a
        if kk == 4:
            nu = 1.0 / phi[:, 3]
            jac[:, 3, 3] = -nu * nu
        jt = xp.swapaxes(jac, 1, 2)
        gs = xp.matmul(jt, g[:, :, None])[:, :, 0]
        hs = xp.matmul(jt, xp.matmul(hess, jac))
        mixed = g[:, 1] - g[:, 2]  # d2 alpha / da dp = 1, d2 beta / da dp = -1
        hs[:, 1, 2] += mixed
        hs[:, 2, 1] += mixed
        if kk == 4:
            hs[:, 3, 3] += 2.0 * nu * nu * nu * g[:, 3]  # d2 nu / d eta2 = 2 nu^3
        return gs, hs

    def direction(self, phi: Any, g: Any, hess: Any) -> tuple[Any, Any, Any]:
        """Projected Newton direction (n, k), its decrement ``g . step`` (n,) and whether the Hessian of the
        free parameters is negative definite (n,), in search parameters."""
        xp = self.xp
        at_lo = (phi - self.lo <= self.eps) & (g < 0)
        at_hi = (self.hi - phi <= self.eps) & (g > 0)
        fixed = at_lo | at_hi
        fixed[:, 1] |= phi[:, 2] <= self.lo[2] + self.eps[2]  # p = 0: a has no effect
        free = (~fixed).astype(xp.float64)
        eye = xp.eye(self.k, dtype=xp.float64)
        m = -hess * free[:, :, None] * free[:, None, :] + eye * (1.0 - free)[:, :, None]
        scale = xp.sqrt(xp.maximum(xp.abs(xp.diagonal(m, axis1=1, axis2=2)), 1e-300))
        m = m / (scale[:, :, None] * scale[:, None, :])
        vals, vecs = xp.linalg.eigh(0.5 * (m + xp.swapaxes(m, 1, 2)))
        mag = xp.abs(vals)  # Newton where negative definite; absolute eigenvalues elsewhere
        top = xp.max(mag, axis=1)
        mag = xp.maximum(mag, 1e-10 * top[:, None] + 1e-300)
        coef = xp.matmul(xp.swapaxes(vecs, 1, 2), (g * free / scale)[:, :, None])[:, :, 0] / mag
        step = xp.matmul(vecs, coef[:, :, None])[:, :, 0] / scale * free
        return step, xp.sum(g * step, axis=1), vals[:, 0] > 1e-12 * top

    def advance(self, phi: Any, delta: Any, reach: Any = 1.0) -> Any:
        """``phi + tau * delta`` projected on the bounds, ``tau <= 1`` the largest factor such that no
        coordinate moves more than ``reach * _MAX_MOVE`` nor, unless within ``_SNAP`` of a bound, more
        than ``_TO_BOUND`` of the way to it."""
        xp = self.xp
        room = xp.where(delta < 0, phi - self.lo, self.hi - phi)
        allowed = xp.where(room <= _SNAP * (self.hi - self.lo), xp.inf, _TO_BOUND * room)
        allowed = xp.minimum(allowed, self.max_move * reach)
        ratio = allowed / xp.maximum(xp.abs(delta), 1e-300)
        tau = xp.minimum(1.0, xp.min(ratio, axis=1, keepdims=True))
        return xp.clip(phi + tau * delta, self.lo, self.hi)


def _start(model: _Model, data: _Data) -> Any:
    """Starting ``(omega, a, p[, eta])`` per column: the best Gaussian likelihood on ``arch``'s grid.

    All grid points and symbols at once, in single precision (it only ranks points) and in blocks of
    ``_START_BLOCK`` bars (small temporaries).
    """
    xp = model.xp
    length, n = data.x2.shape
    grid = [(a, p) for a in _GRID_ALPHA for p in _GRID_PERSISTENCE]
    m = len(grid)
    f32 = xp.float32
    alphas = xp.asarray([a for a, _ in grid], dtype=f32)
    pers = xp.asarray([p for _, p in grid], dtype=f32)
    omegas = 1.0 - pers  # unit variance: omega / (1 - persistence) = 1
    betas = pers - alphas
    beta_flat = xp.repeat(betas, n)  # column j * n + i: grid point j, symbol i
    lagged = data.lagged.astype(f32)
    carry = xp.tile(lagged[0], m)
    total = xp.zeros((m, n), dtype=xp.float64)  # minus twice the log-likelihood, up to a constant
    for t0 in range(0, length, _START_BLOCK):
        t1 = min(t0 + _START_BLOCK, length)
        s2 = alphas[None, :, None] * lagged[t0:t1, None, :]  # (bars, m, n)
        s2 += omegas[None, :, None]
        flat = s2.reshape(t1 - t0, m * n)
        _recur(xp, flat, beta_flat, carry)
        carry = flat[-1].copy()
        z = lagged[t0 + 1 : t1 + 1, None, :] / s2
        z += xp.log(s2, out=s2)
        total += xp.sum(z, axis=0)
    best = xp.argmin(total, axis=0)
    f64 = xp.float64
    omega, alpha, beta = omegas[best].astype(f64), alphas[best].astype(f64), betas[best].astype(f64)
    nu = None
    if model.k == 4:
        z2 = data.x2 / model.variance(omega, alpha, beta, data)
        kurt = xp.mean(z2 * z2, axis=0) / xp.mean(z2, axis=0) ** 2
        heavy = kurt > 3.75
        nu = xp.maximum(xp.where(heavy, (4.0 * kurt - 6.0) / xp.where(heavy, kurt - 3.0, 1.0), 12.0), 4.0)
    return model.search(omega, alpha, beta, nu)


def _line_search(
    model: _Model, phi: Any, step: Any, g: Any, ll: Any, last: Any, data: _Data, stretch: Any
) -> tuple[Any, Any, Any, Any]:
    """Search along ``model.advance(phi, s * step)`` for every column at once.

    ``s = 1`` first; where it gives an Armijo increase and ``stretch`` holds, ``s = 2, 4, 8`` too and the
    best is kept; where it does not, ``s = 2^-1 .. 2^-8`` together, the largest with an increase kept,
    then ``2^-9 ..`` and so on. Returns ``(accepted, phi, ll, last sigma2)``; rejected columns keep theirs.
    """
    xp = model.xp
    n = phi.shape[0]

    def trial(index: Any, sizes: Any) -> tuple[Any, Any, Any, Any]:
        base, ref = (phi, ll) if index is None else (phi[index], ll[index])
        direction, grad = (step, g) if index is None else (step[index], g[index])
        cand = model.advance(base, sizes[:, None] * direction, xp.maximum(sizes, 1.0)[:, None])
        cll, clast = model.loglik(cand, data, index)
        gain = xp.maximum(xp.sum(grad * (cand - base), axis=1), 0.0)
        ok = xp.isfinite(cll) & (cll >= ref + _ARMIJO * gain) & (cll >= ref)
        return cand, cll, clast, ok

    cand, cll, clast, ok = trial(None, xp.ones(n, dtype=xp.float64))
    new_phi = xp.where(ok[:, None], cand, phi)
    new_ll = xp.where(ok, cll, ll)
    new_last = xp.where(ok, clast, last)
    accepted = ok.copy()
    longer = xp.nonzero(ok & stretch)[0]
    pending = xp.nonzero(~ok)[0]
    stretches = xp.asarray(_STRETCH, dtype=xp.float64)
    first = 1
    for batch in range(_BACKTRACK_BATCHES):
        if batch:
            longer = longer[:0]
        nl, npend = longer.shape[0], pending.shape[0]
        if nl + npend == 0:
            break
        shrink = 0.5 ** xp.arange(first, first + _BACKTRACK, dtype=xp.float64)
        first += _BACKTRACK
        rows = xp.concatenate([xp.repeat(longer, len(_STRETCH)), xp.repeat(pending, _BACKTRACK)])
        sizes = xp.concatenate([xp.tile(stretches, nl), xp.tile(shrink, npend)])
        cand, cll, clast, ok = trial(rows, sizes)
        split = nl * len(_STRETCH)
        if nl:
            score = xp.where(ok[:split], cll[:split], -xp.inf).reshape(nl, len(_STRETCH))
            which = xp.argmax(score, axis=1)
            col = xp.arange(nl) * len(_STRETCH) + which
            better = score[xp.arange(nl), which] > new_ll[longer]
            rows_up, col = longer[better], col[better]
            new_phi[rows_up] = cand[col]
            new_ll[rows_up] = cll[col]
            new_last[rows_up] = clast[col]
        if npend:
            hit_sizes = ok[split:].reshape(npend, _BACKTRACK)
            hit = xp.any(hit_sizes, axis=1)
            col = split + xp.arange(npend) * _BACKTRACK + xp.argmax(hit_sizes, axis=1)  # the largest size
            rows_up, col = pending[hit], col[hit]
            new_phi[rows_up] = cand[col]
            new_ll[rows_up] = cll[col]
            new_last[rows_up] = clast[col]
            accepted[rows_up] = True
            pending = pending[~hit]
    return accepted, new_phi, new_ll, new_last


def _optimise(model: _Model, data: _Data, max_iter: int, tol: float) -> tuple[Any, Any, Any, int, Any]:
    """Projected Newton on every column; returns ``(phi, ll, converged, iterations, sigma2_T)``."""
    xp = model.xp
    length, n = data.x2.shape
    phi = _start(model, data)
    ll, last = model.loglik(phi, data)
    out_phi, out_ll, out_last = phi.copy(), ll.copy(), last.copy()
    converged = xp.zeros(n, dtype=bool)
    active = xp.arange(n)
    sub = data
    iterations = 0
    threshold = 2.0 * tol * length  # the decrement g . step is twice the gain a Newton step promises
    last_dec = xp.full(n, xp.inf)
    while active.shape[0] > 0 and iterations < max_iter:
        iterations += 1
        g, hess = model.derivatives(phi, sub)
        phi = model.unstick(phi, g)
        g, hess = model.to_search(phi, g, hess)
        step, dec, concave = model.direction(phi, g, hess)
        done = (dec <= threshold) & concave
        broken = ~xp.isfinite(dec)
        stretch = dec > _SLOW * last_dec
        accepted, phi, ll, last = _line_search(model, phi, step, g, ll, last, sub, stretch)
        last_dec = dec
        failed = ~done & ~accepted
        converged[active[done | (failed & concave & (dec <= _FAIL * threshold))]] = True
        stop = done | failed | broken
        if bool(to_numpy(xp.any(stop))):
            gone, keep = xp.nonzero(stop)[0], xp.nonzero(~stop)[0]
            out_phi[active[gone]] = phi[gone]
            out_ll[active[gone]] = ll[gone]
            out_last[active[gone]] = last[gone]
            active = active[keep]
            phi, ll, last, last_dec = phi[keep], ll[keep], last[keep], last_dec[keep]
            sub = sub.take(keep)
    out_phi[active] = phi
    out_ll[active] = ll
    out_last[active] = last
    return out_phi, out_ll, converged, iterations, out_last


def garch_fit(
    returns: Any,
    *,
    dist: str = "normal",
    xp: ModuleType = numpy,
    max_iter: int = 200,
    tol: float = 1e-8,
) -> GarchFit:
    """Fit a constant-mean GARCH(1,1) to every row of a (symbols, time) panel of returns at once.

    :param returns: finite returns (simple or log), shape (symbols, T) with ``T >= MIN_POINTS``.
    :param dist: ``"normal"`` or ``"t"`` (Student-t innovations scaled to unit variance).
    :param xp: ``numpy`` or ``cupy``; the result's arrays live on it.
    :param max_iter: most Newton iterations; symbols still improving then are flagged not converged.
    :param tol: a symbol stops when a Newton step promises at most ``tol`` log-likelihood per observation.
    :raises InvalidInputError: on bad input: not 2-D, fewer than ``MIN_POINTS`` points, NaN or infinite
        values, a constant row (named), an unknown ``dist``, bad ``max_iter`` or ``tol``.
    """
    _check_options(dist, max_iter, tol)
    r = check_panel(returns, xp=xp, min_points=MIN_POINTS, name="returns")
    length = r.shape[1]
    mu = xp.mean(r, axis=1)
    e = r - mu[:, None]
    scale = xp.sqrt(xp.mean(e * e, axis=1))
    flat = scale <= FLAT_RTOL * xp.max(xp.abs(r), axis=1)
    flat = to_numpy(flat)
    if flat.any():
        rows = [int(i) for i in numpy.flatnonzero(flat)]
        shown = ", ".join(str(i) for i in rows[:10]) + (f" (+{len(rows) - 10} more)" if len(rows) > 10 else "")
        raise InvalidInputError(f"returns has zero variance in row(s) {shown}: GARCH needs returns that vary")
    x2 = xp.ascontiguousarray((e / scale[:, None]).T ** 2)  # time-major, unit variance
    tau = min(BACKCAST_WINDOW, length)
    weights = BACKCAST_DECAY ** xp.arange(tau, dtype=xp.float64)
    backcast = xp.sum((weights / xp.sum(weights))[:, None] * x2[:tau], axis=0)
    model = _Model(dist, xp)
    data = _Data(xp.concatenate([backcast[None, :], x2], axis=0))
    phi, ll, converged, iterations, last_s2 = _optimise(model, data, int(max_iter), float(tol))
    omega, alpha, beta, nu = model.natural(phi)
    var = scale * scale
    return GarchFit(
        mu=mu,
        omega=omega * var,
        alpha=alpha,
        beta=beta,
        nu=xp.full(r.shape[0], xp.nan) if nu is None else nu,
        loglik=ll - length * xp.log(scale),
        converged=converged,
        iterations=iterations,
        last_variance=(omega + alpha * x2[-1] + beta * last_s2) * var,
        dist=dist,
        xp=xp,
    )
