"""Batched GARCH(1,1) by maximum likelihood over a (symbols, time) panel of returns, on NumPy or CuPy.

**Model.** For each symbol's returns ``r_t`` (simple or log), ``t = 1..T``::

    r_t = mu + e_t,    e_t = sigma_t * z_t,
    sigma2_t = omega + alpha * e_{t-1}^2 + beta * sigma2_{t-1}

with ``mu`` fixed at the sample mean and ``z_t`` iid standard normal (``dist="normal"``) or standardised
Student-t with ``nu`` degrees of freedom, scaled to unit variance (``dist="t"``, log-density as in
``arch``'s ``StudentsT``)::

    log f(e | sigma2) = lgamma((nu + 1) / 2) - lgamma(nu / 2) - log(pi * (nu - 2)) / 2
                        - log(sigma2) / 2 - (nu + 1) / 2 * log(1 + e^2 / (sigma2 * (nu - 2)))

**Initialisation.** The recursion starts from ``arch``'s backcast: ``tau = min(75, T)``,
``w = 0.94 ** arange(tau)`` normalised to sum 1, ``backcast = sum(w * e[:tau] ** 2)``, used for both
``e_0^2`` and ``sigma2_0``. The log-likelihood is therefore the function ``arch`` maximises with
``arch_model(e, mean="Zero", vol="GARCH", p=1, q=1, dist=..., rescale=False)`` on the demeaned series
(except for ``arch``'s variance clipping, which only acts on pathological parameters).

**Estimator.** Each row is rescaled to unit variance (``omega`` and the log-likelihood are reported in the
units of the input; ``alpha``, ``beta``, ``nu`` are scale-free). Parameters are searched as
``(omega, a, p[, eta])`` with ``alpha = a * p``, ``beta = (1 - a) * p``, ``eta = 1 / nu``, which turns
every constraint into a bound:

- ``OMEGA_BOUNDS[0] <= omega <= OMEGA_BOUNDS[1]`` on the unit-variance scale (so ``omega > 0``);
- ``0 <= a <= 1`` (``alpha >= 0``, ``beta >= 0``) and ``0 <= p <= MAX_PERSISTENCE`` (``alpha + beta < 1``,
  strictly: covariance stationarity, a finite unconditional variance);
- ``NU_BOUNDS[0] <= nu <= NU_BOUNDS[1]`` (``nu > 2``: finite variance; the bounds of ``arch``).

Starting values: ``arch``'s grid (``alpha`` in ``0.01, 0.05, 0.1, 0.2`` times persistence in
``0.5, 0.7, 0.9, 0.98``, ``omega`` targeting the sample variance), every point evaluated for all symbols
at once and the best Gaussian likelihood kept per symbol; ``nu`` starts from the kurtosis of the
standardised residuals (``arch``'s rule). Then projected Newton iterations, all symbols at once: analytic
gradient and Hessian of the log-likelihood (forward recursions for ``d sigma2_t / d theta``, a backward
adjoint recursion for the second-order terms; backcast treated as a constant, as ``arch`` does), variables
at an active bound fixed, the Hessian of the free variables made positive definite by taking absolute
eigenvalues (plain Newton wherever it is already negative definite), and a backtracking line search along
the projected path that keeps every symbol feasible and never accepts a lower likelihood. A symbol stops
when the Newton step promises at most ``tol * T`` more log-likelihood; it is flagged not converged when
``max_iter`` is reached or its line search fails far from a stationary point. Converged symbols drop out
of later iterations. The only Python loop over data is the one over time in the recursions, each step
covering all symbols.

Arrays live on the array module ``xp`` (``numpy`` or ``cupy``); special functions come from
``scipy.special`` or ``cupyx.scipy.special``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.forecast.baselines import Forecast, check_horizon, check_panel, normal_quantile

#: Fewer points than this per symbol are refused: GARCH parameters are not identified on short series.
MIN_POINTS = 100
#: Distributions of the innovations.
DISTS = ("normal", "t")
#: Backcast window and decay (``arch``'s).
BACKCAST_WINDOW = 75
BACKCAST_DECAY = 0.94
#: Bounds of ``omega`` on the unit-variance scale (the returns divided by their standard deviation).
OMEGA_BOUNDS = (1e-8, 10.0)
#: Largest ``alpha + beta``.
MAX_PERSISTENCE = 1.0 - 1e-6
#: Bounds of the Student-t degrees of freedom (``arch``'s).
NU_BOUNDS = (2.05, 500.0)
#: A row whose standard deviation is at most this times its largest absolute return is constant.
FLAT_RTOL = 1e-10

_GRID_ALPHA = (0.01, 0.05, 0.1, 0.2)
_GRID_PERSISTENCE = (0.5, 0.7, 0.9, 0.98)
_ARMIJO = 1e-4
_PD_RTOL = 1e-8  # smallest eigenvalue of a negative definite (scaled) Hessian, relative
_LM_FLOOR = None  # smallest eigenvalue after the Levenberg-Marquardt shift
_TO_BOUND = 0.99  # a step goes at most this fraction of the way to a bound ...
_SNAP = 1e-3  # ... unless the coordinate is this close (relative to its range): then it may reach it
_MAX_MOVE = (math.inf, 0.5, 0.5, 0.25)  # largest move of (omega, a, p, eta) in one step
_START_BLOCK = 50  # bars per block of the starting-value grid
_BLOCK = 32  # bars per block of the likelihood and its derivatives (fixed: results never depend on the batch)
_STEPS_PER_BATCH = 8  # backtracking step sizes tried together
_STEP_BATCHES = 5  # smallest step 2 ** -40
_STRETCH = (2.0, 4.0, 8.0)  # longer steps also tried on a flat ridge
_SLOW = 0.3  # a decrement above this fraction of the last one marks a flat ridge
_LOG_2PI = math.log(2.0 * math.pi)


class GarchError(PortfolioError):
    """The GARCH fit cannot be used (reserved for callers that require convergence)."""


def _special(xp: ModuleType) -> ModuleType:
    """``scipy.special`` for NumPy, ``cupyx.scipy.special`` for CuPy (gammaln, digamma, polygamma)."""
    if xp is numpy:
        import scipy.special as special
    else:
        import cupyx.scipy.special as special
    return special


def _to_host(array: Any) -> numpy.ndarray:
    return array.get() if hasattr(array, "get") and not isinstance(array, numpy.ndarray) else numpy.asarray(array)


@dataclass(frozen=True, eq=False)
class GarchFit:
    """A fitted GARCH(1,1), one entry per symbol; arrays live on ``xp``.

    :param mu: the constant mean (the sample mean of the returns), shape (symbols,).
    :param omega: variance intercept in the units of the input returns (squared), shape (symbols,).
    :param alpha: ARCH coefficient, shape (symbols,).
    :param beta: GARCH coefficient, shape (symbols,).
    :param nu: Student-t degrees of freedom; NaN for ``dist="normal"``.
    :param loglik: log-likelihood at the optimum, in the units of the input, shape (symbols,).
    :param converged: whether each symbol's optimisation converged, shape (symbols,), bool.
    :param iterations: Newton iterations run (the largest over symbols).
    :param last_variance: conditional variance of the next bar, ``sigma2_{T+1}``, shape (symbols,).
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

        ``v_1 = sigma2_{T+1}`` and ``v_h = omega + (alpha + beta) * v_{h-1}``, that is
        ``v_h = s2 + (alpha + beta) ** (h - 1) * (v_1 - s2)`` with ``s2 = omega / (1 - alpha - beta)``.
        """
        horizon = check_horizon(horizon)
        xp = self.xp
        persistence = self.alpha + self.beta
        uncond = self.omega / (1.0 - persistence)
        powers = persistence[:, None] ** xp.arange(horizon, dtype=xp.float64)[None, :]
        return uncond[:, None] + powers * (self.last_variance - uncond)[:, None]

    def forecast(self, horizon: int, *, level: float = 0.9) -> Forecast:
        """Expected return ``mu`` at every step, with ``mu +/- q * sqrt(E[sigma2_{T+h}])`` intervals.

        ``q`` is the normal quantile, or for ``dist="t"`` the Student-t quantile with ``nu`` degrees of
        freedom scaled to unit variance (``q_t(nu) * sqrt((nu - 2) / nu)``), per symbol.
        """
        horizon = check_horizon(horizon)
        z = normal_quantile(level)
        xp = self.xp
        sd = xp.sqrt(self.variance_forecast(horizon))
        if self.dist == "t":
            import scipy.special

            nu = _to_host(self.nu)
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


class _Data:
    """Unit-variance squared residuals of some symbols, time-major.

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
    """Likelihood, gradient and Hessian of GARCH(1,1) in the search parameters, batched over columns."""

    def __init__(self, dist: str, xp: ModuleType):
        self.dist = dist
        self.xp = xp
        self.k = 4 if dist == "t" else 3
        lo = [OMEGA_BOUNDS[0], 0.0, 0.0]
        hi = [OMEGA_BOUNDS[1], 1.0, MAX_PERSISTENCE]
        if dist == "t":
            lo.append(1.0 / NU_BOUNDS[1])
            hi.append(1.0 / NU_BOUNDS[0])
        self.lo = xp.asarray(lo, dtype=xp.float64)
        self.hi = xp.asarray(hi, dtype=xp.float64)
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
        """``(omega, a, p[, eta])`` from the natural parameters."""
        xp = self.xp
        p = alpha + beta
        a = xp.where(p > 0, alpha / xp.where(p > 0, p, 1.0), 0.5)
        cols = [omega, a, p] + ([1.0 / nu] if self.k == 4 else [])
        return xp.clip(xp.stack(cols, axis=1), self.lo, self.hi)

    # -- recursions (the only loops over time), in blocks of _BLOCK bars ---------------------------
    def variance(self, omega: Any, alpha: Any, beta: Any, data: _Data) -> Any:
        """``sigma2`` (T, n): ``sigma2_t = omega + alpha * e_{t-1}^2 + beta * sigma2_{t-1}``."""
        xp = self.xp
        s2 = xp.multiply(data.prev, alpha)
        s2 += omega
        s2[0] += beta * data.backcast
        tmp = xp.empty_like(beta)
        for t in range(1, s2.shape[0]):
            xp.multiply(s2[t - 1], beta, out=tmp)
            s2[t] += tmp
        return s2

    def loglik(self, phi: Any, data: _Data) -> tuple[Any, Any]:
        """Log-likelihood (n,) on the unit-variance scale, and the last ``sigma2`` (n,)."""
        xp = self.xp
        omega, alpha, beta, nu = self.natural(phi)
        length, n = data.x2.shape
        k = None if nu is None else nu - 2.0
        carry = data.backcast  # sigma2_{-1}
        logs = xp.zeros(n, dtype=xp.float64)
        rest = xp.zeros(n, dtype=xp.float64)
        tmp = xp.empty_like(beta)
        for t0 in range(0, length, _BLOCK):
            t1 = min(t0 + _BLOCK, length)
            s2 = xp.multiply(data.prev[t0:t1], alpha)
            s2 += omega
            xp.multiply(carry, beta, out=tmp)
            s2[0] += tmp
            for t in range(1, t1 - t0):
                xp.multiply(s2[t - 1], beta, out=tmp)
                s2[t] += tmp
            carry = s2[-1].copy()
            z = xp.divide(data.x2[t0:t1], s2)
            if k is None:
                rest += xp.sum(z, axis=0)
            else:
                z /= k
                rest += xp.sum(xp.log1p(z, out=z), axis=0)
            logs += xp.sum(xp.log(s2, out=s2), axis=0)
        if nu is None:
            return -0.5 * (length * _LOG_2PI + logs + rest), carry
        sp = self.special
        const = sp.gammaln(0.5 * (nu + 1.0)) - sp.gammaln(0.5 * nu) - 0.5 * xp.log(math.pi * k)
        return length * const - 0.5 * logs - 0.5 * (nu + 1.0) * rest, carry

    def derivatives(self, phi: Any, data: _Data) -> tuple[Any, Any]:
        """Gradient (n, k) and Hessian (n, k, k) of the log-likelihood in ``(omega, alpha, beta[, nu])``.

        With ``c_t = d l_t / d sigma2_t`` and ``d_t = d2 l_t / d sigma2_t^2`` the gradient is
        ``sum_t c_t D_t`` and the Hessian ``sum_t d_t D_t D_t' + c_t H_t``, where ``D_t = d sigma2_t / d theta``
        and ``H_t = d2 sigma2_t / d theta d beta`` follow the forward recursions
        ``D_t = (1, e_{t-1}^2, sigma2_{t-1}) + beta D_{t-1}`` and ``H_t = D_{t-1} (+ D_{t-1} for beta) +
        beta H_{t-1}``; one loop carries ``sigma2``, ``D`` and ``H`` (7 channels) for all symbols.
        """
        xp = self.xp
        ein = xp.einsum
        omega, alpha, beta, nu = self.natural(phi)
        length, n = data.x2.shape
        # Channels: sigma2 | D_omega | D_alpha | D_beta | H_omega | H_alpha | H_beta / 2. Row t of ``work``
        # is [source_t (3n) | state_{t-1} (7n)]: the source of sigma2, D_omega, D_alpha is
        # (omega + alpha e_{t-1}^2, 1, e_{t-1}^2), and channels 3..6 take channels 0..3 of the previous
        # state, so state_t = beta * state_{t-1} + work[t, :7n] is two operations per bar.
        beta7 = xp.concatenate([beta] * 7)
        work = xp.empty((_BLOCK + 1, 10 * n), dtype=xp.float64)
        work[:, n : 2 * n] = 1.0
        work[0, 3 * n :] = 0.0
        work[0, 3 * n : 4 * n] = data.backcast  # sigma2_{-1}; D_{-1} = H_{-1} = 0
        grad = xp.zeros((6, n), dtype=xp.float64)  # sum_t 2 c_t (D_t, H_t)
        gn = xp.zeros((6, n), dtype=xp.float64)  # sum_t d_t D_i D_j, upper triangle
        if nu is not None:
            k = nu - 2.0
            mixed = xp.zeros((3, n), dtype=xp.float64)  # sum_t 2 (d2 l_t / d sigma2_t d nu) D_t
            nu_terms = xp.zeros((3, n), dtype=xp.float64)  # sum log q, sum z / (k kz), sum d2 l / d nu2
        pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
        for t0 in range(0, length, _BLOCK):
            t1 = min(t0 + _BLOCK, length)
            b = t1 - t0
            if t0:
                work[0, 3 * n :] = work[_BLOCK, 3 * n :]  # carry the last state
            src = work[:b]
            xp.multiply(data.prev[t0:t1], alpha, out=src[:, :n])
            src[:, :n] += omega
            src[:, 2 * n : 3 * n] = data.prev[t0:t1]
            for state, out, source in zip(work[:b, 3 * n :], work[1 : b + 1, 3 * n :], work[:b, : 7 * n]):
                xp.multiply(state, beta7, out=out)
                out += source
            blk = work[1 : b + 1, 3 * n :]
            s2 = blk[:, :n]
            ds = (blk[:, n : 2 * n], blk[:, 2 * n : 3 * n], blk[:, 3 * n : 4 * n])
            inv = 1.0 / s2
            z = data.x2[t0:t1] * inv
            if nu is None:
                c = z - 1.0
                c *= inv  # 2 c_t
                d = 0.5 - z
                d *= inv
                d *= inv
            else:
                kz = k + z
                wz = (nu + 1.0) * z / kz
                c = wz - 1.0
                c *= inv  # 2 c_t
                d = wz * k / kz + wz - 1.0
                d *= inv
                d *= inv  # -2 d_t
                kkz = k * kz
                zk = z / kkz
                cross = (z - 3.0) * z / (kz * kz)
                cross *= inv  # 2 d2 l_t / d sigma2_t d nu
                for i in range(3):
                    mixed[i] += ein("ts,ts->s", cross, ds[i])
                nu_terms[0] += xp.sum(xp.log1p(z / k), axis=0)
                nu_terms[1] += xp.sum(zk, axis=0)
                inner = (nu + 1.0) * (2.0 * k + z)
                inner /= kkz
                nu_terms[2] += ein("ts,ts->s", zk, inner)
            grad += ein("ts,tcs->cs", c, blk[:, n:].reshape(b, 6, n))
            for m, (i, j) in enumerate(pairs):
                gn[m] += ein("ts,ts,ts->s", d, ds[i], ds[j])
        kk = self.k
        if nu is not None:
            gn *= -1.0  # d held -2 d_t: restore 2 d_t below with the common factor
        g = 0.5 * grad[:3].T
        curv = grad[3:]
        hess = xp.empty((n, kk, kk), dtype=xp.float64)
        scale_gn = 1.0 if nu is None else 0.5
        for m, (i, j) in enumerate(pairs):
            hess[:, i, j] = scale_gn * gn[m]
            hess[:, j, i] = hess[:, i, j]
        hess[:, 0, 2] += 0.5 * curv[0]
        hess[:, 1, 2] += 0.5 * curv[1]
        hess[:, 2, 2] += curv[2]  # H_beta stored halved: 2 * 0.5
        hess[:, 2, 0] = hess[:, 0, 2]
        hess[:, 2, 1] = hess[:, 1, 2]
        if nu is not None:
            sp = self.special
            half_nu = 0.5 * (nu + 1.0)
            c1 = 0.5 * sp.digamma(half_nu) - 0.5 * sp.digamma(0.5 * nu) - 0.5 / k
            c2 = 0.25 * sp.polygamma(1, half_nu) - 0.25 * sp.polygamma(1, 0.5 * nu) + 0.5 / (k * k)
            g_nu = length * c1 - 0.5 * nu_terms[0] + half_nu * nu_terms[1]
            # d2 l_t / d nu2 = z / (k kz) - (nu + 1) z (2k + z) / (2 (k kz)^2)
            h_nu = length * c2 + nu_terms[1] - 0.5 * nu_terms[2]
            g = xp.concatenate([g, g_nu[:, None]], axis=1)
            hess[:, 3, 3] = h_nu
            for i in range(3):
                hess[:, i, 3] = 0.5 * mixed[i]
                hess[:, 3, i] = hess[:, i, 3]
        return g, hess

    def unstick(self, phi: Any, g: Any) -> Any:
        """At ``alpha = beta = 0`` (``p = 0``) any ``a`` is the same point: pick the one along which the
        likelihood rises fastest (``a = 1`` when ``d l / d alpha >= d l / d beta``), so that ``p`` can leave 0.
        """
        xp = self.xp
        stuck = phi[:, 2] <= self.lo[2] + self.eps[2]
        if not bool(xp.any(stuck)):
            return phi
        phi = phi.copy()
        phi[:, 1] = xp.where(stuck, xp.where(g[:, 1] >= g[:, 2], 1.0, 0.0), phi[:, 1])
        return phi

    def to_search(self, phi: Any, g: Any, hess: Any) -> tuple[Any, Any]:
        """Chain rule from ``(omega, alpha, beta[, nu])`` to ``(omega, a, p[, eta])``."""
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
        gs = xp.matmul(xp.swapaxes(jac, 1, 2), g[:, :, None])[:, :, 0]
        hs = xp.matmul(xp.swapaxes(jac, 1, 2), xp.matmul(hess, jac))
        mixed = g[:, 1] - g[:, 2]  # d2 alpha / da dp = 1, d2 beta / da dp = -1
        hs[:, 1, 2] += mixed
        hs[:, 2, 1] += mixed
        if kk == 4:
            hs[:, 3, 3] += 2.0 * nu * nu * nu * g[:, 3]  # d2 nu / d eta2 = 2 nu^3
        return gs, hs

    def advance(self, phi: Any, delta: Any) -> Any:
        """``phi + tau * delta`` projected on the bounds, with ``tau <= 1`` the largest factor such that no
        coordinate moves more than ``_MAX_MOVE`` nor, unless it is already within ``_SNAP`` of a bound,
        more than ``_TO_BOUND`` of the way to it: a long step cannot jump onto a bound (and stick there).
        """
        xp = self.xp
        room = xp.where(delta < 0, phi - self.lo, self.hi - phi)
        allowed = xp.where(room <= _SNAP * (self.hi - self.lo), xp.inf, _TO_BOUND * room)
        allowed = xp.minimum(allowed, self.max_move)
        ratio = allowed / xp.maximum(xp.abs(delta), 1e-300)
        tau = xp.minimum(1.0, xp.min(ratio, axis=1, keepdims=True))
        return xp.clip(phi + tau * delta, self.lo, self.hi)

    # -- one Newton direction per column ----------------------------------------------------------
    def direction(self, phi: Any, g: Any, hess: Any) -> tuple[Any, Any]:
        """Projected Newton direction (n, k) and its decrement ``g . d`` (n,)."""
        xp = self.xp
        kk = self.k
        at_lo = (phi - self.lo <= self.eps) & (g < 0)
        at_hi = (self.hi - phi <= self.eps) & (g > 0)
        fixed = at_lo | at_hi
        fixed[:, 1] |= phi[:, 2] <= self.lo[2] + self.eps[2]  # no persistence: a is not identified
        free = (~fixed).astype(xp.float64)
        eye = xp.eye(kk, dtype=xp.float64)
        m = -hess * free[:, :, None] * free[:, None, :] + eye * (1.0 - free)[:, :, None]
        scale = xp.sqrt(xp.maximum(xp.abs(xp.diagonal(m, axis1=1, axis2=2)), 1e-300))
        ms = m / (scale[:, :, None] * scale[:, None, :])
        ms = 0.5 * (ms + xp.swapaxes(ms, 1, 2))
        vals, vecs = xp.linalg.eigh(ms)
        # Negative definite Hessian: Newton. Otherwise Levenberg-Marquardt: shift the spectrum up to
        # _LM_FLOOR (the scaled matrix has a unit diagonal), a shorter step towards steepest ascent.
        lowest = vals[:, :1]
        top = xp.max(xp.abs(vals), axis=1, keepdims=True)
        if _LM_FLOOR is None:
            mag = xp.maximum(xp.abs(vals), 1e-10 * top + 1e-300)
        else:
            shift = xp.where(lowest > _PD_RTOL * top, 0.0, _LM_FLOOR - lowest)
            mag = xp.maximum(vals + shift, 1e-10 * top + 1e-300)
        gs = g * free / scale
        proj = xp.matmul(xp.swapaxes(vecs, 1, 2), gs[:, :, None])[:, :, 0] / mag
        step = xp.matmul(vecs, proj[:, :, None])[:, :, 0] / scale * free
        return step, xp.sum(g * step, axis=1)


def _start(model: _Model, data: _Data) -> Any:
    """Starting ``(omega, a, p[, eta])`` per column: ``arch``'s grid, best Gaussian likelihood.

    Every grid point is evaluated for all symbols at once, in single precision (it only ranks starting
    points) and in blocks of ``_START_BLOCK`` bars so that the temporaries stay small.
    """
    xp = model.xp
    length, n = data.x2.shape
    grid = [(a, p) for a in _GRID_ALPHA for p in _GRID_PERSISTENCE]
    m = len(grid)
    f32 = xp.float32
    alphas = xp.asarray([a for a, _ in grid], dtype=f32)
    pers = xp.asarray([p for _, p in grid], dtype=f32)
    omegas = 1.0 - pers  # the returns have unit variance: omega targets it
    betas = pers - alphas
    beta_flat = xp.repeat(betas, n)  # column j * n + i: grid point j, symbol i
    lagged = data.lagged.astype(f32)
    carry = xp.tile(lagged[0], m)
    total = xp.zeros((m, n), dtype=xp.float64)
    tmp = xp.empty_like(beta_flat)
    for t0 in range(0, length, _START_BLOCK):
        t1 = min(t0 + _START_BLOCK, length)
        s2 = alphas[None, :, None] * lagged[t0:t1, None, :]  # (bars, m, n)
        s2 += omegas[None, :, None]
        flat = s2.reshape(t1 - t0, m * n)
        xp.multiply(carry, beta_flat, out=tmp)
        flat[0] += tmp
        for t in range(1, t1 - t0):
            xp.multiply(flat[t - 1], beta_flat, out=tmp)
            flat[t] += tmp
        carry = flat[-1].copy()
        z = lagged[t0 + 1 : t1 + 1, None, :] / s2
        z += xp.log(s2, out=s2)
        total += xp.sum(z, axis=0)
    best = xp.argmax(-total, axis=0)  # (n,)
    f64 = xp.float64
    omega, alpha, beta = omegas[best].astype(f64), alphas[best].astype(f64), betas[best].astype(f64)
    nu = None
    if model.k == 4:
        z2 = data.x2 / model.variance(omega, alpha, beta, data)
        kurt = xp.mean(z2 * z2, axis=0) / xp.mean(z2, axis=0) ** 2
        nu = xp.where(kurt > 3.75, (4.0 * kurt - 6.0) / xp.where(kurt > 3.75, kurt - 3.0, 1.0), 12.0)
        nu = xp.maximum(nu, 4.0)
    return model.search(omega, alpha, beta, nu)


def _line_search(
    model: _Model, phi: Any, step: Any, g: Any, ll: Any, data: _Data, stretch: Any
) -> tuple[Any, Any, Any, Any]:
    """Search along the projected path ``clip(phi + s * step)`` per column, all columns at once.

    First ``s = 1`` (and ``s = 2, 4, 8`` too where ``stretch``: rows converging slowly along a flat ridge,
    the best of them kept), then halving ``s`` in batches of ``_STEPS_PER_BATCH`` sizes, the largest
    size with an Armijo increase kept. Returns ``(accepted, phi, ll, sigma2)``; columns where no size
    increased the likelihood keep their point and likelihood.
    """
    xp = model.xp
    n = phi.shape[0]
    new_phi = phi.copy()
    new_ll = ll.copy()
    accepted = xp.zeros(n, dtype=bool)
    longer = xp.nonzero(stretch)[0]

    def trial(index: Any, sizes: Any) -> tuple[Any, Any, Any, Any]:
        cand = model.advance(phi[index], sizes[:, None] * step[index])
        cll, clast = model.loglik(cand, data if index.shape[0] == n and not longer.shape[0] else data.take(index))
        gain = xp.sum(g[index] * (cand - phi[index]), axis=1)
        ok = xp.isfinite(cll) & (cll >= ll[index] + _ARMIJO * xp.maximum(gain, 0.0)) & (cll >= ll[index])
        return cand, cll, clast, ok

    # Full steps for all rows, plus longer ones for the stretched rows, in one evaluation.
    extra = len(_STRETCH)
    rows = xp.concatenate([xp.arange(n), xp.repeat(longer, extra)])
    sizes = xp.concatenate([xp.ones(n), xp.tile(xp.asarray(_STRETCH, dtype=xp.float64), longer.shape[0])])
    cand, cll, clast, ok = trial(rows, sizes)
    score = xp.full((n, 1 + extra), -xp.inf)
    score[:, 0] = xp.where(ok[:n], cll[:n], -xp.inf)
    score[longer, 1:] = xp.where(ok[n:], cll[n:], -xp.inf).reshape(-1, extra)
    which = xp.argmax(score, axis=1)  # the best candidate, the shortest step on ties
    hit = xp.isfinite(xp.max(score, axis=1))
    col = xp.where(which == 0, xp.arange(n), 0)
    if longer.shape[0]:
        slot = xp.zeros(n, dtype=xp.int64)
        slot[longer] = n + xp.arange(longer.shape[0]) * extra
        col = xp.where(which == 0, col, slot + which - 1)
    good = xp.nonzero(hit)[0]
    new_phi[good] = cand[col[good]]
    new_ll[good] = cll[col[good]]
    new_last = clast[col]
    accepted |= hit
    pending = xp.nonzero(~hit)[0]
    first = 1
    for _ in range(_STEP_BATCHES):
        if pending.shape[0] == 0:
            break
        sizes = 0.5 ** xp.arange(first, first + _STEPS_PER_BATCH, dtype=xp.float64)
        npend = pending.shape[0]
        rows = xp.repeat(pending, _STEPS_PER_BATCH)
        cand, cll, clast, ok = trial(rows, xp.tile(sizes, npend))
        ok = ok.reshape(npend, _STEPS_PER_BATCH)
        hit = xp.any(ok, axis=1)
        which = xp.argmax(ok, axis=1)  # the largest accepted step
        col = xp.arange(npend) * _STEPS_PER_BATCH + which
        good = pending[hit]
        new_phi[good] = cand[col[hit]]
        new_ll[good] = cll[col[hit]]
        new_last[good] = clast[col[hit]]
        accepted[good] = True
        pending = pending[~hit]
        first += _STEPS_PER_BATCH
    return accepted, new_phi, new_ll, new_last


def _optimise(model: _Model, data: _Data, max_iter: int, tol: float) -> tuple[Any, Any, Any, int, Any]:
    """Projected Newton on every column; returns ``(phi, ll, converged, iterations, sigma2_T)``."""
    xp = model.xp
    length, n = data.x2.shape
    phi = _start(model, data)
    ll, last = model.loglik(phi, data)
    out_phi = phi.copy()
    out_ll = ll.copy()
    out_last = last.copy()
    converged = xp.zeros(n, dtype=bool)
    active = xp.arange(n)
    sub = data
    iterations = 0
    threshold = 2.0 * tol * length  # decrement g . d = twice the promised gain
    last_dec = xp.full(n, xp.inf)
    while active.shape[0] > 0 and iterations < max_iter:
        iterations += 1
        g, hess = model.derivatives(phi, sub)
        phi = model.unstick(phi, g)
        g, hess = model.to_search(phi, g, hess)
        step, dec = model.direction(phi, g, hess)
        done = ~(dec > threshold)  # also NaN
        stretch = dec > _SLOW * last_dec  # linear convergence: a flat ridge
        accepted, phi, ll, last = _line_search(model, phi, step, g, ll, sub, stretch)
        last_dec = dec
        # A failed line search close to a stationary point is convergence; far from one, a failure.
        failed = ~done & ~accepted
        stop = done | failed
        converged[active[done | (failed & (dec <= 1e4 * threshold))]] = True
        if bool(xp.any(stop)):
            keep = xp.nonzero(~stop)[0]
            gone = xp.nonzero(stop)[0]
            out_phi[active[gone]] = phi[gone]
            out_ll[active[gone]] = ll[gone]
            out_last[active[gone]] = last[gone]
            active = active[keep]
            phi, ll, last, last_dec = phi[keep], ll[keep], last[keep], last_dec[keep]
            sub = sub.take(keep)
    if active.shape[0] > 0:
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
    """Fit GARCH(1,1) with a constant mean to every row of a (symbols, time) panel of returns at once.

    :param returns: finite returns (simple or log), shape (symbols, T) with ``T >= MIN_POINTS``.
    :param dist: ``"normal"`` or ``"t"`` (standardised Student-t innovations).
    :param xp: ``numpy`` or ``cupy``.
    :param max_iter: most Newton iterations; symbols still moving then are flagged not converged.
    :param tol: a symbol stops when a Newton step promises at most ``tol`` log-likelihood per observation.
    :raises InvalidInputError: on bad input, including a constant row (named).
    """
    _check_options(dist, max_iter, tol)
    r = check_panel(returns, xp=xp, min_points=MIN_POINTS, name="returns")
    length = r.shape[1]
    mu = xp.mean(r, axis=1)
    e = r - mu[:, None]
    scale = xp.sqrt(xp.mean(e * e, axis=1))
    flat = scale <= FLAT_RTOL * xp.max(xp.abs(r), axis=1)
    if bool(xp.any(flat)):
        rows = [int(i) for i in xp.nonzero(flat)[0]]
        shown = ", ".join(str(i) for i in rows[:10]) + (f" (+{len(rows) - 10} more)" if len(rows) > 10 else "")
        raise InvalidInputError(f"returns has zero variance in row(s) {shown}: GARCH needs varying returns")
    x = (e / scale[:, None]).T  # time-major, unit variance
    x2 = xp.ascontiguousarray(x * x)
    tau = min(BACKCAST_WINDOW, length)
    weights = BACKCAST_DECAY ** xp.arange(tau, dtype=xp.float64)
    weights = weights / xp.sum(weights)
    backcast = xp.sum(weights[:, None] * x2[:tau], axis=0)
    lagged = xp.concatenate([backcast[None, :], x2], axis=0)

    model = _Model(dist, xp)
    phi, ll, converged, iterations, last_s2 = _optimise(model, _Data(lagged), max_iter, float(tol))
    omega, alpha, beta, nu = model.natural(phi)
    var = scale * scale
    last = omega + alpha * x2[-1] + beta * last_s2
    return GarchFit(
        mu=mu,
        omega=omega * var,
        alpha=alpha,
        beta=beta,
        nu=xp.full(r.shape[0], xp.nan) if nu is None else nu,
        loglik=ll - length * xp.log(scale),
        converged=converged,
        iterations=iterations,
        last_variance=last * var,
        dist=dist,
        xp=xp,
    )
