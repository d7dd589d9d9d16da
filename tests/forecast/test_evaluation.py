"""Rolling-origin backtests, scores, health labels, calibration and ensemble weights."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.baselines import Forecast, last_value
from airflow_provider_portfolio.forecast.evaluation import (
    backtest,
    calibrate,
    calibration_factors,
    ensemble_weights,
    origin_positions,
    score,
)
from airflow_provider_portfolio.forecast.samossa import samossa_fit_forecast
from airflow_provider_portfolio.forecast.ssa import ssa_fit_forecast
from tests.forecast.panels import seasonal_ar_panel


def test_origin_positions():
    assert origin_positions(100, 5, 3, None, 30) == [95, 90, 85]
    assert origin_positions(100, 5, 3, 1, 30) == [95, 94, 93]
    assert origin_positions(40, 5, 10, None, 30) == [35, 30]
    assert origin_positions(30, 5, 3, None, 30) == []
    with pytest.raises(InvalidInputError, match="origins"):
        origin_positions(100, 5, 0, None, 30)
    with pytest.raises(InvalidInputError, match="step"):
        origin_positions(100, 5, 2, 0, 30)


def test_backtest_aligns_forecasts_with_outcomes():
    values = np.arange(2 * 60, dtype=np.float64).reshape(2, 60)
    seen = []

    def forecaster(train, horizon):
        seen.append(train.shape)
        point = np.repeat(train[:, -1:], horizon, axis=1) + 1.0
        return Forecast(point=point, lower=point - 1, upper=point + 1, model="t")

    bt = backtest(values, forecaster, horizon=3, origins=2, min_train=10)
    assert bt.origins == [57, 54] and seen == [(2, 57), (2, 54)]
    assert bt.point.shape == bt.actual.shape == (2, 2, 3)
    np.testing.assert_array_equal(bt.actual[0, 0], [57, 58, 59])
    np.testing.assert_array_equal(bt.actual[1, 1], [114, 115, 116])
    np.testing.assert_array_equal(bt.last[:, 0], [56, 53])
    ev = score(bt, min_origins=2)
    # forecast last + 1, outcome last + 1, +2, +3: errors 0, -1, -2
    np.testing.assert_allclose(ev.rmse, np.sqrt(5 / 3))
    np.testing.assert_allclose(ev.mae, 1.0)
    np.testing.assert_allclose(ev.directional_accuracy, 1.0)
    np.testing.assert_allclose(ev.coverage, 2 / 3)  # |error| <= 1 for two of three steps
    np.testing.assert_allclose(ev.baseline_rmse, np.sqrt(14 / 3))
    np.testing.assert_allclose(ev.skill, 1 - np.sqrt(5 / 14))
    assert ev.labels == ["healthy", "healthy"] and ev.baseline == "last_value"


def test_directional_accuracy_counts_moves_only():
    values = np.array([[1.0] * 40 + [2.0, 1.0, 1.0, 3.0]])

    def up(train, horizon):
        point = np.repeat(train[:, -1:], horizon, axis=1) + 0.5
        return Forecast(point=point, lower=point, upper=point, model="up")

    ev = score(backtest(values, up, horizon=4, origins=1), min_origins=1)
    # outcomes vs last value 1.0: up, flat, flat, up -> both moves called right
    assert ev.directional_accuracy[0] == 1.0


def test_labels_naive_is_not_healthy_and_short_history_is_insufficient():
    panel = seasonal_ar_panel(symbols=40, length=300)
    naive = score(backtest(panel, last_value, horizon=5, origins=10))
    np.testing.assert_allclose(naive.skill, 0.0, atol=1e-12)
    assert set(naive.labels) == {"unhealthy"}
    ssa = score(backtest(panel, ssa_fit_forecast, horizon=5, origins=10))
    assert ssa.healthy.mean() > 0.9
    short = score(backtest(panel[:, :40], ssa_fit_forecast, horizon=5, origins=10), min_origins=3)
    assert short.origins == 2 and set(short.labels) == {"insufficient_data"}


def test_backtest_needs_an_origin():
    with pytest.raises(InvalidInputError, match="no backtest origin"):
        backtest(np.ones((2, 20)), last_value, horizon=5, min_train=30)


def test_variance_target():
    rng = np.random.default_rng(5)
    returns = rng.normal(0, 1, (3, 200)) * np.array([[0.5], [1.0], [2.0]])

    def oracle(train, horizon):
        true_var = np.array([0.25, 1.0, 4.0])[:, None] * np.ones(horizon)
        point = np.zeros((3, horizon))
        half = 1.645 * np.sqrt(true_var)
        return Forecast(point=point, lower=-half, upper=half, model="v"), true_var

    ev = score(backtest(returns, oracle, horizon=5, origins=20), target="variance")
    assert ev.baseline == "sample_variance"
    assert np.all(np.isnan(ev.directional_accuracy))
    assert np.all(ev.coverage > 0.75)
    with pytest.raises(InvalidInputError, match="variance forecasts"):
        score(backtest(returns, last_value, horizon=5), target="variance")
    with pytest.raises(InvalidInputError, match="target"):
        score(backtest(returns, last_value, horizon=5), target="price")


@pytest.mark.parametrize("forecaster", [ssa_fit_forecast, samossa_fit_forecast])
def test_calibrated_bands_reach_nominal_coverage(forecaster):
    panel = seasonal_ar_panel(symbols=300, length=410, seed=99)
    history, future = panel[:, :-10], panel[:, -10:-5]
    bt = backtest(history, forecaster, horizon=5, origins=10)
    factors = calibration_factors(bt, 0.9)
    assert factors.shape == (5,) and np.all(factors > 0)
    fc = calibrate(forecaster(history, 5), factors)
    coverage = np.mean((future >= fc.lower) & (future <= fc.upper))
    assert abs(coverage - 0.9) < 0.03, coverage


def test_ensemble_weights():
    rmse = np.array([[1.0, 1.0, 1.0], [2.0, 1.0, np.nan]])
    healthy = np.array([[True, True, False], [True, False, True]])
    w = ensemble_weights(rmse, healthy)
    np.testing.assert_allclose(w[:, 0], [0.8, 0.2])  # 1/1 : 1/4
    np.testing.assert_allclose(w[:, 1], [1.0, 0.0])
    np.testing.assert_allclose(w[:, 2], [0.0, 0.0])  # nobody healthy (NaN rmse is not usable)
