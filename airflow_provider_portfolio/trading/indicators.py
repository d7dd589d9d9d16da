"""Technical indicators on (symbols, bars) panels of closes, NaN-padded on the left: SMA, EMA, RSI, MACD,
Bollinger bands, momentum and ATR. The formulas are documented in :mod:`airflow_provider_portfolio.trading.signals`,
whose signals score them. Plain NumPy; never imports Airflow.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.baselines import check_panel

# ---------------------------------------------------------------------------------------------- checks


def _check_n(value: Any, name: str = "n") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _panel(values: Any, name: str = "closes") -> np.ndarray:
    """``values`` as a float64 (symbols, T) array (NaN allowed: missing history)."""
    return check_panel(values, name=name, min_points=0, finite=False)


def _same_shape(**panels: np.ndarray) -> None:
    shapes = {name: p.shape for name, p in panels.items()}
    if len(set(shapes.values())) > 1:
        raise InvalidInputError(f"shapes differ: {shapes}")


def _vector(values: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be a 1-D array per symbol: {exc}") from exc
    if array.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D (symbols,), got shape {array.shape}")
    return array


# --------------------------------------------------------------------------------------------- helpers


def bars_available(values: Any) -> np.ndarray:
    """Length of each row's history: its trailing run of finite values, shape (symbols,), int.

    :param values: (symbols, T) panel; leading NaNs are padding.
    :raises InvalidInputError: when ``values`` is not a numeric 2-D array.
    """
    x = _panel(values, "values")
    return _bars(x)


def _bars(x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)[:, ::-1]
    return np.cumprod(finite, axis=1).sum(axis=1).astype(np.int64)


def _trim(x: np.ndarray, bars: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``x`` with everything before each row's history set to NaN, and the bars."""
    if bars is None:
        bars = _bars(x)
    start = x.shape[1] - bars
    keep = np.arange(x.shape[1])[None, :] >= start[:, None]
    return np.where(keep, x, np.nan), bars


def _seeded_smooth(x: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """``e_t = alpha * x_t + (1 - alpha) * e_{t-1}`` seeded by the mean of each history's first ``n`` values.

    NaN before the seed and for rows with fewer than ``n`` bars. Loops over time, vectorised over rows.
    """
    x, bars = _trim(x)
    rows, width = x.shape
    out = np.full((rows, width), np.nan)
    ok = bars >= n
    if not ok.any():
        return out
    start = width - bars
    seed_at = np.where(ok, start + n - 1, width)  # width: never reached
    cumsum = np.concatenate([np.zeros((rows, 1)), np.cumsum(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0),
                                                           axis=1)], axis=1)
    idx = np.arange(rows)
    seed_col = np.minimum(seed_at, width - 1)
    seed = (cumsum[idx, seed_col + 1] - cumsum[idx, np.minimum(start, width)]) / n
    first = int(seed_at[ok].min())
    prev = np.full(rows, np.nan)
    for t in range(first, width):
        step = alpha * x[:, t] + (1.0 - alpha) * prev
        prev = np.where(t == seed_at, seed, np.where(t > seed_at, step, np.nan))
        out[:, t] = prev
    return out


def sma_series(closes: Any, n: int) -> np.ndarray:
    """Rolling mean of the last ``n`` closes, shape (symbols, T), NaN until ``n`` bars of history."""
    n = _check_n(n)
    x, _ = _trim(_panel(closes))
    rows, width = x.shape
    out = np.full((rows, width), np.nan)
    if width >= n:
        windows = np.lib.stride_tricks.sliding_window_view(x, n, axis=1)
        out[:, n - 1 :] = windows.mean(axis=2)
    return out


def ema_series(closes: Any, n: int) -> np.ndarray:
    """EMA path (``alpha = 2 / (n + 1)``, SMA seed), shape (symbols, T), NaN before the seed."""
    n = _check_n(n)
    return _seeded_smooth(_panel(closes), n, 2.0 / (n + 1.0))


# ------------------------------------------------------------------------------------------ indicators


def sma(closes: Any, n: int) -> np.ndarray:
    """Simple moving average of the last ``n`` closes, shape (symbols,); NaN with fewer than ``n`` bars.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :param n: window.
    :raises InvalidInputError: when ``n < 1`` or ``closes`` is not 2-D.
    """
    n = _check_n(n)
    x, bars = _trim(_panel(closes))
    if x.shape[1] < n:
        return np.full(x.shape[0], np.nan)
    return np.where(bars >= n, x[:, -n:].mean(axis=1), np.nan)


def ema(closes: Any, n: int) -> np.ndarray:
    """EMA at the last bar (``alpha = 2 / (n + 1)``, seeded by the SMA of the first ``n`` values).

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :param n: span.
    :raises InvalidInputError: when ``n < 1`` or ``closes`` is not 2-D.
    """
    n = _check_n(n)
    x = _panel(closes)
    if x.shape[1] == 0:
        return np.full(x.shape[0], np.nan)
    return _seeded_smooth(x, n, 2.0 / (n + 1.0))[:, -1]


def _rsi(x: np.ndarray, n: int) -> np.ndarray:
    x, _ = _trim(x)
    d = np.diff(x, axis=1)
    if d.shape[1] == 0:
        return np.full(x.shape[0], np.nan)
    gains = np.where(np.isnan(d), np.nan, np.maximum(d, 0.0))
    losses = np.where(np.isnan(d), np.nan, np.maximum(-d, 0.0))
    avg_gain = _seeded_smooth(gains, n, 1.0 / n)[:, -1]
    avg_loss = _seeded_smooth(losses, n, 1.0 / n)[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    value = np.where(avg_loss == 0, np.where(avg_gain == 0, 50.0, 100.0), value)
    return np.where(np.isnan(avg_gain) | np.isnan(avg_loss), np.nan, value)


def rsi(closes: Any, n: int = 14) -> np.ndarray:
    """Wilder's RSI at the last bar, in [0, 100]; NaN with fewer than ``n + 1`` bars.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :param n: period.
    :raises InvalidInputError: when ``n < 1`` or ``closes`` is not 2-D.
    """
    n = _check_n(n)
    return _rsi(_panel(closes), n)


def _check_macd(fast: Any, slow: Any, signal: Any) -> tuple[int, int, int]:
    fast, slow, signal = _check_n(fast, "fast"), _check_n(slow, "slow"), _check_n(signal, "signal")
    if fast >= slow:
        raise InvalidInputError(f"fast must be below slow, got fast={fast}, slow={slow}")
    return fast, slow, signal


def macd(closes: Any, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line, signal line and histogram at the last bar, each shape (symbols,).

    The MACD line is defined from ``slow`` bars, the signal and histogram from ``slow + signal - 1``.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :raises InvalidInputError: when a period is below 1, ``fast >= slow`` or ``closes`` is not 2-D.
    """
    fast, slow, signal = _check_macd(fast, slow, signal)
    x = _panel(closes)
    if x.shape[1] == 0:
        nan = np.full(x.shape[0], np.nan)
        return nan, nan.copy(), nan.copy()
    line = _seeded_smooth(x, fast, 2.0 / (fast + 1.0)) - _seeded_smooth(x, slow, 2.0 / (slow + 1.0))
    sig = _seeded_smooth(line, signal, 2.0 / (signal + 1.0))
    return line[:, -1], sig[:, -1], line[:, -1] - sig[:, -1]


def bollinger(closes: Any, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands at the last bar: ``(mid, upper, lower, position)``, each shape (symbols,).

    ``position = (close - mid) / (k * std)`` with the population std (0 when the std is 0).

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :param n: window.
    :param k: band width in stds.
    :raises InvalidInputError: when ``n < 1``, ``k <= 0`` or ``closes`` is not 2-D.
    """
    n = _check_n(n)
    k = _check_positive(k, "k")
    x, bars = _trim(_panel(closes))
    rows = x.shape[0]
    if x.shape[1] < n:
        nan = np.full(rows, np.nan)
        return nan, nan.copy(), nan.copy(), nan.copy()
    window = x[:, -n:]
    ok = bars >= n
    mid = np.where(ok, window.mean(axis=1), np.nan)
    std = np.where(ok, np.sqrt(((window - mid[:, None]) ** 2).mean(axis=1)), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.where(std > 0, (x[:, -1] - mid) / (k * std), 0.0)
    position = np.where(ok, position, np.nan)
    return mid, mid + k * std, mid - k * std, position


def momentum(closes: Any, n: int = 20) -> np.ndarray:
    """``close / close[-n-1] - 1`` at the last bar, shape (symbols,); NaN with fewer than ``n + 1`` bars.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :raises InvalidInputError: when ``n < 1`` or ``closes`` is not 2-D.
    """
    n = _check_n(n)
    x, bars = _trim(_panel(closes))
    if x.shape[1] < n + 1:
        return np.full(x.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = x[:, -1] / x[:, -n - 1] - 1.0
    return np.where(bars >= n + 1, value, np.nan)


def _hlc(high: Any, low: Any, close: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    h, lo, c = _panel(high, "high"), _panel(low, "low"), _panel(close, "close")
    _same_shape(high=h, low=lo, close=c)
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(h) & np.isfinite(lo) & (h < lo)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidInputError(f"high below low at row {row}, column {col}")
    joint = np.where(np.isfinite(h) & np.isfinite(lo) & np.isfinite(c), c, np.nan)
    bars = _bars(joint)
    return _trim(h, bars)[0], _trim(lo, bars)[0], _trim(c, bars)[0], bars


def atr(high: Any, low: Any, close: Any, n: int = 14) -> np.ndarray:
    """Wilder's average true range at the last bar, shape (symbols,); NaN with fewer than ``n + 1`` bars.

    :param high: (symbols, T) highs.
    :param low: (symbols, T) lows.
    :param close: (symbols, T) closes.
    :raises InvalidInputError: when ``n < 1``, the panels are not 2-D or differ in shape, or a high is
        below its low.
    """
    n = _check_n(n)
    h, lo, c, _ = _hlc(high, low, close)
    return _atr(h, lo, c, n)


def _atr(h: np.ndarray, lo: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
    if h.shape[1] < 2:
        return np.full(h.shape[0], np.nan)
    prev = c[:, :-1]
    tr = np.maximum(h[:, 1:] - lo[:, 1:], np.maximum(np.abs(h[:, 1:] - prev), np.abs(lo[:, 1:] - prev)))
    tr = np.where(np.isnan(prev) | np.isnan(h[:, 1:]) | np.isnan(lo[:, 1:]), np.nan, tr)
    return _seeded_smooth(tr, n, 1.0 / n)[:, -1]
