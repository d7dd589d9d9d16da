"""Baselines: hand-computed points and intervals, shapes, validation."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.baselines import (
    BASELINES,
    Forecast,
    drift,
    historical_mean,
    last_value,
    zero_return,
)

# Two symbols, four points each.
PRICES = np.array([[10.0, 11.0, 13.0, 16.0], [5.0, 4.0, 6.0, 5.0]])
Z90 = NormalDist().inv_cdf(0.95)  # 1.6448536269514722


def assert_interval(fc: Forecast, sigma_h: np.ndarray, z: float = Z90) -> None:
    np.testing.assert_allclose(fc.lower, fc.point - z * sigma_h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fc.upper, fc.point + z * sigma_h, rtol=0, atol=1e-12)


def test_last_value():
    fc = last_value(PRICES, 3)
    assert (fc.model, fc.level, fc.horizon) == ("last_value", 0.9, 3)
    np.testing.assert_array_equal(fc.point, [[16.0, 16.0, 16.0], [5.0, 5.0, 5.0]])
    # diffs [1, 2, 3] and [-1, 2, -1]: RMS sqrt(14/3) and sqrt(6/3) = sqrt(2); width grows as sqrt(h)
    sigma = np.array([math.sqrt(14 / 3), math.sqrt(2.0)])
    assert_interval(fc, sigma[:, None] * np.sqrt([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(fc.upper[1, 0], 5.0 + 1.6448536269514722 * 1.4142135623730951, atol=1e-12)


def test_drift():
    fc = drift(PRICES, 2)
    # mean diff 2 and 0: the line through the first and last points
    np.testing.assert_allclose(fc.point, [[18.0, 20.0], [5.0, 5.0]], atol=1e-12)
    # centred diffs [-1, 0, 1] and [-1, 2, -1]: RMS sqrt(2/3) and sqrt(2); n = 3 differences
    sigma = np.array([math.sqrt(2 / 3), math.sqrt(2.0)])
    h = np.array([1.0, 2.0])
    assert_interval(fc, sigma[:, None] * np.sqrt(h * (1 + h / 3)))
    np.testing.assert_allclose(fc.lower[0, 1], 20.0 - Z90 * math.sqrt(2 / 3) * math.sqrt(10 / 3), atol=1e-12)


def test_historical_mean():
    fc = historical_mean(PRICES, 2, level=0.5)
    np.testing.assert_allclose(fc.point, [[12.5, 12.5], [5.0, 5.0]], atol=1e-12)
    # deviations [-2.5, -1.5, 0.5, 3.5] -> RMS sqrt(21/4); [0, -1, 1, 0] -> sqrt(1/2); times sqrt(1 + 1/4)
    z50 = NormalDist().inv_cdf(0.75)
    width = np.array([math.sqrt(21 / 4), math.sqrt(0.5)]) * math.sqrt(1.25)
    assert_interval(fc, np.repeat(width[:, None], 2, axis=1), z50)
    assert fc.level == 0.5


def test_zero_return_is_defined_on_returns():
    returns = np.array([[0.01, -0.02, 0.02, -0.01], [0.0, 0.0, 0.0, 0.0]])
    fc = zero_return(returns, 2)
    np.testing.assert_array_equal(fc.point, np.zeros((2, 2)))
    sigma = math.sqrt((1e-4 + 4e-4 + 4e-4 + 1e-4) / 4)  # RMS around zero, not around the mean
    np.testing.assert_allclose(fc.upper, [[Z90 * sigma] * 2, [0.0, 0.0]], atol=1e-15)
    np.testing.assert_allclose(fc.lower, -fc.upper, atol=0)


def test_on_prices_zero_return_and_last_value_agree_as_price_paths():
    """A zero-return path of prices is the last price: last_value on prices == last price * (1 + 0)."""
    returns = np.diff(PRICES, axis=1) / PRICES[:, :-1]
    path = PRICES[:, -1:] * np.cumprod(1 + zero_return(returns, 3).point, axis=1)
    np.testing.assert_array_equal(path, last_value(PRICES, 3).point)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_shapes_and_ordering(name):
    rng = np.random.default_rng(0)
    values = 100 + np.cumsum(rng.normal(size=(7, 50)), axis=1)
    fc = BASELINES[name](values, 5, level=0.8)
    assert fc.model == name
    for arr in (fc.point, fc.lower, fc.upper):
        assert arr.shape == (7, 5) and arr.dtype == np.float64
    assert np.all(fc.lower < fc.point) and np.all(fc.point < fc.upper)
    wider = BASELINES[name](values, 5, level=0.95)
    assert np.all(wider.upper - wider.lower > fc.upper - fc.lower)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_rows_are_independent(name):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(4, 30))
    batch = BASELINES[name](values, 3)
    for i in range(4):
        alone = BASELINES[name](values[i : i + 1], 3)
        np.testing.assert_allclose(alone.point, batch.point[i : i + 1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(alone.upper, batch.upper[i : i + 1], rtol=0, atol=1e-12)


def test_two_points_is_enough():
    fc = drift([[1.0, 3.0]], 2)
    np.testing.assert_allclose(fc.point, [[5.0, 7.0]])
    np.testing.assert_allclose(fc.upper, fc.point)  # one difference: no spread around its mean


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.arange(5.0), "2-D"),
        (np.ones((2, 3, 4)), "2-D"),
        (np.ones((0, 5)), "no symbol"),
        (np.ones((2, 1)), "at least 2 points"),
        (np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]]), r"1 NaN/inf value\(s\), first at row 0, column 1"),
        (np.array([[1.0, 2.0], [np.inf, 2.0]]), "row 1, column 0"),
        ([["a", "b"]], "numeric"),
    ],
)
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_bad_values(name, values, match):
    with pytest.raises(InvalidInputError, match=match):
        BASELINES[name](values, 2)


@pytest.mark.parametrize("horizon", [0, -1, 1.0, True, "3", None])
def test_bad_horizon(horizon):
    with pytest.raises(InvalidInputError, match="horizon"):
        last_value(PRICES, horizon)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, "0.9", None])
def test_bad_level(level):
    with pytest.raises(InvalidInputError, match="level"):
        drift(PRICES, 2, level=level)


def test_numpy_integer_horizon():
    assert last_value(PRICES, np.int64(2)).horizon == 2
