"""Simulated panels with a known truth, for accuracy tests, benchmarks and experiments (NumPy only)."""

from __future__ import annotations

import numpy as np


def seasonal_ar_panel(symbols: int = 100, length: int = 300, *, phi: float = 0.5, seed: int = 20240607) -> np.ndarray:
    """Trend + period-20 seasonal + AR(1) noise, shape (symbols, length).

    Levels uniform in [20, 200], slopes in [-0.2, 0.2] per bar, seasonal amplitudes in [1, 3], random
    phases, AR coefficient ``phi`` with N(0, 0.5^2) shocks.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    level = rng.uniform(20, 200, symbols)[:, None]
    slope = rng.uniform(-0.2, 0.2, symbols)[:, None]
    amplitude = rng.uniform(1, 3, symbols)[:, None]
    phase = rng.uniform(0, 2 * np.pi, symbols)[:, None]
    shocks = rng.normal(0.0, 0.5, (symbols, length))
    noise = np.zeros((symbols, length))
    for k in range(1, length):
        noise[:, k] = phi * noise[:, k - 1] + shocks[:, k]
    return level + slope * t + amplitude * np.sin(2 * np.pi * t / 20 + phase) + noise


def garch_panel(
    symbols: int,
    length: int,
    *,
    omega: np.ndarray | float,
    alpha: np.ndarray | float,
    beta: np.ndarray | float,
    nu: float | None = None,
    mu: float = 0.0,
    burn: int = 500,
    seed: int = 0,
) -> np.ndarray:
    """Returns from GARCH(1,1), shape (symbols, length), one time loop for all symbols.

    :param omega: scalar or per-symbol array; likewise ``alpha`` and ``beta`` (``alpha + beta < 1``).
    :param nu: Student-t degrees of freedom (standardised to unit variance); ``None`` for normal.
    :param mu: constant mean.
    :param burn: bars simulated and dropped first, so the start is stationary.
    """
    rng = np.random.default_rng(seed)
    omega, alpha, beta = (np.broadcast_to(np.asarray(v, dtype=np.float64), (symbols,)) for v in (omega, alpha, beta))
    n = length + burn
    if nu is None:
        z = rng.standard_normal((symbols, n))
    else:
        z = rng.standard_t(nu, (symbols, n)) * np.sqrt((nu - 2.0) / nu)
    out = np.empty((symbols, n))
    var = omega / (1.0 - alpha - beta)
    for t in range(n):
        e = np.sqrt(var) * z[:, t]
        out[:, t] = e
        var = omega + alpha * e * e + beta * var
    return mu + out[:, burn:]
