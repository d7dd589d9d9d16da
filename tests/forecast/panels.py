"""Simulated panels with a known truth, shared by the forecasting tests."""

from __future__ import annotations

import numpy as np


def seasonal_ar_panel(symbols: int = 100, length: int = 300, *, phi: float = 0.5, seed: int = 20240607) -> np.ndarray:
    """Trend + period-20 seasonal + AR(1) noise (shock std 0.5), ``length`` points per symbol."""
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
