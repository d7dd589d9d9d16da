"""SAMoSSA and mSSA: exact where they must be, better than SSA/baselines where the truth says so."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.baselines import drift, last_value
from airflow_provider_portfolio.forecast.mssa import default_panel_window, mssa_fit, mssa_fit_forecast
from airflow_provider_portfolio.forecast.samossa import ar_fit, samossa_fit, samossa_fit_forecast
from airflow_provider_portfolio.forecast.ssa import ssa_fit, ssa_fit_forecast
from tests.forecast.panels import seasonal_ar_panel

H = 5


def _rmse(point, future):
    return np.sqrt(np.mean((point - future) ** 2, axis=1))


def test_ar_fit_recovers_coefficients_and_forecasts_by_hand():
    rng = np.random.default_rng(7)
    n, symbols = 4000, 20
    x = np.zeros((symbols, n))
    e = rng.normal(0, 1.0, (symbols, n))
    for t in range(2, n):
        x[:, t] = 0.6 * x[:, t - 1] - 0.2 * x[:, t - 2] + e[:, t]
    fit = ar_fit(x, 2)
    assert np.all(np.abs(fit.phi[:, 0] - 0.6) < 0.05) and np.all(np.abs(fit.phi[:, 1] + 0.2) < 0.05)
    assert np.all(np.abs(fit.sigma - 1.0) < 0.05)
    # forecast recursion by hand for row 0
    p1, p2 = fit.phi[0]
    a, b = x[0, -2], x[0, -1]
    f1 = p1 * b + p2 * a
    f2 = p1 * f1 + p2 * b
    np.testing.assert_allclose(fit.forecast(2)[0], [f1, f2], rtol=1e-12)
    # psi weights: 1, phi1, phi1^2 + phi2
    scale = fit.error_scale(3)[0]
    np.testing.assert_allclose(scale ** 2, np.cumsum([1, p1**2, (p1**2 + p2) ** 2]), rtol=1e-12)


def test_ar_fit_constant_residual_gives_zero_coefficients():
    fit = ar_fit(np.zeros((2, 50)), 3)
    np.testing.assert_array_equal(fit.phi, 0.0)
    np.testing.assert_array_equal(fit.forecast(4), 0.0)


def test_samossa_with_ar_order_zero_is_ssa():
    panel = seasonal_ar_panel(symbols=6, length=200)
    a = samossa_fit_forecast(panel, H, ar_order=0).point
    b = ssa_fit_forecast(panel, H).point
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_samossa_beats_ssa_one_step_on_strong_ar_noise_and_both_beat_baselines():
    panel = seasonal_ar_panel(symbols=200, length=400 + H, phi=0.8, seed=3)
    train, future = panel[:, :-H], panel[:, -H:]
    ssa = ssa_fit_forecast(train, H).point
    sam = samossa_fit_forecast(train, H).point
    # one step ahead, the AR part of the residual is predictable
    assert np.median(np.abs(sam[:, 0] - future[:, 0])) < 0.9 * np.median(np.abs(ssa[:, 0] - future[:, 0]))
    for model in (ssa, sam):
        err = np.median(_rmse(model, future))
        assert err < 0.7 * np.median(_rmse(last_value(train, H).point, future))
        assert err < 0.7 * np.median(_rmse(drift(train, H).point, future))


def test_samossa_parts_and_band():
    panel = seasonal_ar_panel(symbols=10, length=300)
    fit = samossa_fit(panel, ar_order=3)
    assert fit.ar.order == 3 and fit.ar.phi.shape == (10, 3)
    np.testing.assert_allclose(fit.ssa.reconstruction, ssa_fit(panel).reconstruction, atol=1e-12)
    fc = fit.forecast(H, level=0.8)
    assert fc.model == "samossa" and fc.level == 0.8 and fc.point.shape == (10, H)
    width = fc.upper - fc.lower
    assert np.all(np.diff(width, axis=1) >= -1e-12)  # the AR's error grows with the horizon


def test_samossa_batch_equals_per_symbol():
    panel = seasonal_ar_panel(symbols=5, length=160)
    batch = samossa_fit_forecast(panel, H)
    for i in range(5):
        one = samossa_fit_forecast(panel[i : i + 1], H)
        np.testing.assert_allclose(one.point[0], batch.point[i], rtol=0, atol=1e-9)
        np.testing.assert_allclose(one.upper[0], batch.upper[i], rtol=0, atol=1e-9)


def test_mssa_shared_subspace_is_exact_on_noiseless_panel():
    t = np.arange(400 + H, dtype=np.float64)
    rng = np.random.default_rng(1)
    level = rng.uniform(10, 100, (30, 1))
    slope = rng.uniform(-0.1, 0.1, (30, 1))
    amp = rng.uniform(1, 5, (30, 1))
    phase = rng.uniform(0, 6, (30, 1))
    full = level + slope * t + amp * np.sin(2 * np.pi * t / 20 + phase)
    fit = mssa_fit(full[:, :400])
    assert fit.rank == 4  # constant/trend (2) + sinusoid (2), shared by all symbols
    fc = fit.forecast(H)
    assert np.abs(fc.point - full[:, 400:]).max() < 1e-6


def test_mssa_beats_baselines_and_its_band_is_honest():
    panel = seasonal_ar_panel(symbols=200, length=400 + H, seed=11)
    train, future = panel[:, :-H], panel[:, -H:]
    fc = mssa_fit_forecast(train, H)
    err = np.median(_rmse(fc.point, future))
    assert err < 0.6 * np.median(_rmse(last_value(train, H).point, future))
    coverage = np.mean((future >= fc.lower) & (future <= fc.upper))
    assert abs(coverage - 0.9) < 0.04, coverage


def test_mssa_windows_and_shapes():
    assert default_panel_window(1, 252) == 7
    assert default_panel_window(12, 252) == 27
    assert default_panel_window(500, 1000) == 60
    fit = mssa_fit(seasonal_ar_panel(symbols=4, length=120), window=10, rank=3)
    assert (fit.window, fit.rank, fit.beta.shape, fit.eigenvalues.shape) == (10, 3, (9,), (10,))
    assert fit.error_std(H).shape == (4, H)


def test_mssa_constant_row_forecasts_its_constant():
    panel = seasonal_ar_panel(symbols=5, length=200)
    panel[2] = 42.0
    fc = mssa_fit_forecast(panel, H)
    np.testing.assert_allclose(fc.point[2], 42.0, atol=1e-9)


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (samossa_fit_forecast, {"ar_order": -1}, "ar_order"),
        (samossa_fit_forecast, {"ar_order": 1.5}, "ar_order"),
        (samossa_fit_forecast, {"ar_order": 20}, r"at most T // 4 = 15"),
        (samossa_fit_forecast, {"values": np.full((2, 60), np.nan)}, "NaN"),
        (mssa_fit_forecast, {"window": 31}, r"between 2 and T // 2 = 30"),
        (mssa_fit_forecast, {"window": 10, "rank": 10}, r"rank must be an integer between 1 and window - 1 = 9"),
        (mssa_fit_forecast, {"values": np.ones((2, 5))}, "at least 8 points"),
        (mssa_fit_forecast, {"values": np.arange(60.0)}, "2-D"),
        (mssa_fit_forecast, {"horizon": 0}, "horizon"),
    ],
)
def test_bad_input(fn, kwargs, match):
    args = {"values": seasonal_ar_panel(symbols=2, length=60), "horizon": H} | kwargs
    with pytest.raises(InvalidInputError, match=match):
        fn(args.pop("values"), args.pop("horizon"), **args)


def test_mssa_band_in_row_blocks_equals_all_rows_at_once(monkeypatch):
    from airflow_provider_portfolio.forecast import mssa

    fit = mssa_fit(seasonal_ar_panel(symbols=20, length=200))
    whole = fit.error_std(H)
    monkeypatch.setattr(mssa, "_ERROR_ROWS", 7)
    np.testing.assert_allclose(fit.error_std(H), whole, rtol=1e-13)


def test_ssa_and_samossa_beat_sarimax_on_trend_seasonal_ar():
    from airflow_provider_portfolio.forecast.sarimax import sarimax_fit_forecast

    panel = seasonal_ar_panel(symbols=16, length=300 + H, seed=21)
    train, future = panel[:, :-H], panel[:, -H:]
    sarimax = sarimax_fit_forecast(train, H, order=(1, 0, 1), trend="c", processes=1)
    assert not sarimax.errors
    reference = np.median(_rmse(sarimax.forecast.point, future))
    for fn in (ssa_fit_forecast, samossa_fit_forecast):
        assert np.median(_rmse(fn(train, H).point, future)) < 0.8 * reference, fn.__name__
