"""Batched SSA: exact on noiseless signals, beats the baselines on a seasonal panel, batch == per-symbol."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.forecast.backend import NUMPY, run_chunked
from airflow_provider_portfolio.forecast.baselines import drift, last_value
from airflow_provider_portfolio.forecast.simulate import seasonal_ar_panel
from airflow_provider_portfolio.forecast.ssa import (
    SSAError,
    choose_rank,
    default_window,
    ssa_fit,
    ssa_fit_forecast,
)

HORIZON = 10


def trend_and_sine(length: int) -> np.ndarray:
    """Three symbols: a linear trend plus a period-20 sinusoid of different amplitudes and phases."""
    t = np.arange(length, dtype=np.float64)
    level = np.array([50.0, 120.0, 8.0])[:, None]
    slope = np.array([0.3, -0.1, 0.02])[:, None]
    amplitude = np.array([1.0, 2.5, 4.0])[:, None]
    phase = np.array([0.0, 1.0, 2.5])[:, None]
    return level + slope * t + amplitude * np.sin(2 * np.pi * t / 20 + phase)


def seasonal_panel(symbols: int = 50, length: int = 300, seed: int = 20240607) -> np.ndarray:
    """Trend + period-20 seasonal + AR(1) noise (phi 0.5), ``length + HORIZON`` points per symbol."""
    return seasonal_ar_panel(symbols, length + HORIZON, seed=seed)


def test_noiseless_trend_and_sine_is_exact():
    full = trend_and_sine(400 + HORIZON)
    train, future = full[:, :400], full[:, 400:]
    fit = ssa_fit(train)
    assert fit.window == 60
    np.testing.assert_array_equal(fit.rank, [4, 4, 4])  # trend (2) + sinusoid (2), found from the data
    rel = np.abs(fit.reconstruction - train).max(axis=1) / np.abs(train).max(axis=1)
    assert np.all(rel < 1e-6), rel
    fc = fit.forecast(HORIZON)
    assert fc.model == "ssa" and fc.point.shape == (3, HORIZON)
    err = np.abs(fc.point - future).max(axis=1)
    assert np.all(err < 1e-6), err
    # no residual left: a zero-width interval
    assert np.all(fit.residual_std < 1e-9)
    np.testing.assert_allclose(fc.upper, fc.point, atol=1e-8)


def test_given_rank_and_window():
    full = trend_and_sine(400 + HORIZON)
    fc = ssa_fit_forecast(full[:, :400], HORIZON, window=40, rank=4)
    assert np.abs(fc.point - full[:, 400:]).max() < 1e-6
    # too small a rank loses the sinusoid
    fc2 = ssa_fit_forecast(full[:, :400], HORIZON, window=40, rank=2)
    assert np.abs(fc2.point - full[:, 400:]).max() > 0.5


def test_beats_baselines_on_seasonal_panel():
    panel = seasonal_panel()
    train, future = panel[:, :-HORIZON], panel[:, -HORIZON:]

    def rmse(point):
        return np.sqrt(np.mean((point - future) ** 2, axis=1))

    ssa = np.median(rmse(ssa_fit_forecast(train, HORIZON).point))
    naive = np.median(rmse(last_value(train, HORIZON).point))
    with_drift = np.median(rmse(drift(train, HORIZON).point))
    assert ssa < 0.6 * naive and ssa < 0.6 * with_drift, (ssa, naive, with_drift)

    fit = ssa_fit(train)
    assert np.all((fit.rank >= 3) & (fit.rank <= 6))  # level/trend + the seasonal pair, not the noise
    # the 90% band covers most of the future points
    fc = fit.forecast(HORIZON)
    coverage = np.mean((future >= fc.lower) & (future <= fc.upper))
    assert 0.7 < coverage <= 1.0, coverage


def test_batch_equals_per_symbol():
    panel = seasonal_panel(symbols=8, length=150)
    batch = ssa_fit(panel)
    fc = batch.forecast(HORIZON)
    for i in range(panel.shape[0]):
        alone = ssa_fit(panel[i : i + 1])
        assert alone.rank[0] == batch.rank[i]
        np.testing.assert_allclose(alone.reconstruction[0], batch.reconstruction[i], rtol=0, atol=1e-10)
        np.testing.assert_allclose(alone.eigenvalues[0], batch.eigenvalues[i], rtol=1e-12, atol=1e-10)
        one = alone.forecast(HORIZON)
        for name in ("point", "lower", "upper"):
            np.testing.assert_allclose(getattr(one, name)[0], getattr(fc, name)[i], rtol=0, atol=1e-10)


def test_chunked_run_equals_whole_panel():
    panel = seasonal_panel(symbols=11, length=120)

    def fn(xp, rows):
        fc = ssa_fit_forecast(rows, 5, xp=xp)
        return fc.point, fc.lower, fc.upper

    whole = fn(np, panel)
    chunked = run_chunked(fn, panel, NUMPY, chunk=4)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)


def test_shapes():
    panel = seasonal_panel(symbols=5, length=100)
    fit = ssa_fit(panel, window=30)
    assert fit.window == 30
    assert fit.rank.shape == (5,)
    assert fit.eigenvalues.shape == (5, 30)
    assert np.all(np.diff(fit.eigenvalues, axis=1) <= 0) and np.all(fit.eigenvalues >= 0)
    assert fit.reconstruction.shape == panel.shape
    assert fit.lrr.shape == (5, 29)
    assert fit.residual_std.shape == (5,)
    fc = fit.forecast(7, level=0.8)
    assert (fc.point.shape, fc.lower.shape, fc.upper.shape) == ((5, 7),) * 3
    assert fc.level == 0.8 and fc.horizon == 7
    assert np.all(fc.lower < fc.point) and np.all(fc.point < fc.upper)


def test_default_window():
    assert [default_window(n) for n in (3, 4, 10, 119, 120, 121, 10_000)] == [2, 2, 5, 59, 60, 60, 60]
    short = ssa_fit_forecast([[2.0, 2.0, 2.0]], 2)  # T = 3: L = 2, K = 2, rank 1, recurrence y_t = y_{t-1}
    np.testing.assert_allclose(short.point, [[2.0, 2.0]], rtol=0, atol=1e-12)


def test_choose_rank_rule():
    eig = np.array([[100.0, 50.0, 1.0, 1.0, 1.0, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [5.0, 1e-13, 0, 0, 0, 0]])
    # floors: max(10 * median, 1e-10 * largest) = 10, 10, 5e-10
    np.testing.assert_array_equal(choose_rank(eig), [2, 1, 1])
    # floors 0.5, 0.5, 5e-10: capped at L // 2 = 3, or at L - 1 = 5 whatever max_rank says
    np.testing.assert_array_equal(choose_rank(eig, noise_factor=0.5), [3, 3, 1])
    np.testing.assert_array_equal(choose_rank(eig, noise_factor=0.5, max_rank=99), [5, 5, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": np.arange(50.0)}, "2-D"),
        ({"values": np.ones((2, 3, 40))}, "2-D"),
        ({"values": np.where(np.eye(3, 40) == 1, np.nan, 1.0)}, "NaN"),
        ({"values": np.ones((2, 2))}, "at least 3 points"),
        ({"horizon": 0}, "horizon"),
        ({"horizon": -3}, "horizon"),
        ({"horizon": 2.0}, "horizon"),
        ({"window": 40}, r"window must be between 2 and T - 1 = 39"),
        ({"window": 1}, "window"),
        ({"window": 10.0}, "window"),
        ({"window": 10, "rank": 10}, r"rank must be between 1 and window - 1 = 9"),
        ({"rank": 0}, "rank"),
        ({"level": 1.0}, "level"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"values": seasonal_panel(symbols=2, length=30), "horizon": 5} | kwargs
    with pytest.raises(InvalidInputError, match=match):
        ssa_fit_forecast(args.pop("values"), args.pop("horizon"), **args)


def test_undefined_recurrence():
    # all energy in the last lag: the leading eigenvector is vertical, so no recurrence exists
    with pytest.raises(SSAError, match=r"row\(s\) \[0\]") as err:
        ssa_fit([[0.0, 0.0, 0.0, 0.0, 5.0]], window=2, rank=1)
    assert isinstance(err.value, PortfolioError)


def test_import_loads_no_airflow_nor_cupy():
    code = textwrap.dedent(
        """
        import sys
        import airflow_provider_portfolio.forecast.ssa
        import airflow_provider_portfolio.forecast.baselines
        import airflow_provider_portfolio.forecast.backend
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("airflow", "cupy", "pandas", "scipy"))
        print(loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(("length", "window"), [(400, 60), (300, 10), (50, 20), (41, 20)])
def test_fast_covariance_and_reconstruction_equal_the_explicit_hankel_route(length, window):
    from airflow_provider_portfolio.forecast.ssa import _lag_covariance, _reconstruct

    rng = np.random.default_rng(length)
    y = rng.normal(50.0, 5.0, (3, length))
    k = length - window + 1
    traj = y[:, np.arange(window)[:, None] + np.arange(k)[None, :]]
    np.testing.assert_allclose(_lag_covariance(y, window, k, np), traj @ traj.transpose(0, 2, 1) / k, rtol=1e-12)
    basis = np.linalg.qr(rng.normal(size=(3, window, 3)))[0]
    full = basis @ basis.transpose(0, 2, 1) @ traj
    expected = np.zeros_like(y)
    counts = np.zeros(length)
    for i in range(window):
        expected[:, i : i + k] += full[:, i, :]
        counts[i : i + k] += 1
    np.testing.assert_allclose(_reconstruct(y, basis, window, k, np), expected / counts, rtol=1e-11)
