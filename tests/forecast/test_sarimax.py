"""SARIMAX per symbol: same numbers as statsmodels, same answer in any number of processes, per-row failures."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.forecast import sarimax as sx
from airflow_provider_portfolio.forecast.sarimax import SarimaxResult, sarimax_fit_forecast, sarimax_min_points

LOGGER = "airflow_provider_portfolio.forecast.sarimax"


def ar1_panel(symbols: int, length: int, *, seed: int, phi: float = 0.6, noise: float = 0.0) -> np.ndarray:
    """``y_t = c + phi * y_{t-1} + e_t`` (plus optional observation noise), started at the stationary mean."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(2.0, 5.0, symbols)
    sigma = rng.uniform(0.01, 0.03, symbols)
    y = np.empty((symbols, length))
    y[:, 0] = mean + rng.normal(0.0, 1.0, symbols) * sigma / np.sqrt(1 - phi**2)
    for t in range(1, length):
        y[:, t] = (1 - phi) * mean + phi * y[:, t - 1] + rng.normal(0.0, 1.0, symbols) * sigma
    return y + rng.normal(0.0, 1.0, y.shape) * noise * sigma[:, None]


def direct_fit(y: np.ndarray, horizon: int, level: float = 0.9, **kwargs):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = SARIMAX(y, order=(1, 0, 1), trend="c").fit(disp=False, maxiter=50, **kwargs)
        prediction = fit.get_forecast(horizon)
        return fit, prediction.predicted_mean, prediction.conf_int(alpha=1 - level)


def assert_same(a: SarimaxResult, b: SarimaxResult) -> None:
    for name in ("point", "lower", "upper"):
        np.testing.assert_array_equal(getattr(a.forecast, name), getattr(b.forecast, name), err_msg=name)
    assert a.errors == b.errors
    np.testing.assert_array_equal(a.converged, b.converged)
    np.testing.assert_array_equal(a.iterations, b.iterations)
    assert len(a.params) == len(b.params)
    for pa, pb in zip(a.params, b.params, strict=True):
        assert (pa is None) == (pb is None)
        if pa is not None:
            np.testing.assert_array_equal(pa, pb)


def test_module_imports_without_statsmodels():
    code = "import sys, airflow_provider_portfolio.forecast.sarimax; assert 'statsmodels' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_matches_direct_statsmodels_fit_and_intervals_widen():
    y = ar1_panel(3, 250, seed=1, noise=0.5)
    result = sarimax_fit_forecast(y, 8, level=0.8, processes=1)
    fc = result.forecast
    assert (fc.model, fc.level, fc.horizon, fc.point.shape) == ("sarimax", 0.8, 8, (3, 8))
    assert result.errors == {} and result.processes == 1
    fit, point, bounds = direct_fit(y[1], 8, level=0.8)
    np.testing.assert_allclose(fc.point[1], point, rtol=1e-12, atol=0)
    np.testing.assert_allclose(fc.lower[1], bounds[:, 0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(fc.upper[1], bounds[:, 1], rtol=1e-12, atol=0)
    np.testing.assert_allclose(result.params[1], fit.params, rtol=1e-12, atol=0)
    assert result.converged[1] == fit.mle_retvals["converged"]
    assert result.iterations[1] == fit.mle_retvals["iterations"]
    width = fc.upper - fc.lower
    assert np.all(np.diff(width, axis=1) > 0), width
    assert np.all((fc.lower < fc.point) & (fc.point < fc.upper))


def test_processes_one_and_two_give_identical_results_in_row_order():
    y = ar1_panel(8, 220, seed=2, noise=0.3)
    y[5, 40] = np.nan  # a failed row keeps its place
    one = sarimax_fit_forecast(y, 4, processes=1)
    two = sarimax_fit_forecast(y, 4, processes=2)
    assert (one.processes, two.processes) == (1, 2)
    assert set(one.errors) == {5}
    assert_same(one, two)
    # Rows are not shuffled: each row's forecast sits near its own series' level.
    np.testing.assert_allclose(two.forecast.point[:, 0][[0, 1, 2, 3, 4, 6, 7]], y[[0, 1, 2, 3, 4, 6, 7], -1], atol=0.2)


def test_per_row_failures_leave_other_rows_forecast():
    y = ar1_panel(6, 200, seed=3)
    y[1, 7] = np.nan
    y[2, 50] = np.inf
    y[4] = 3.25
    result = sarimax_fit_forecast(y, 3, processes=1)
    assert sorted(result.errors) == [1, 2, 4]
    assert "NaN/inf" in result.errors[1] and "column 7" in result.errors[1]
    assert "column 50" in result.errors[2]
    assert "constant series" in result.errors[4] and "3.25" in result.errors[4]
    assert all("\n" not in reason for reason in result.errors.values())
    fc = result.forecast
    for row in (0, 3, 5):
        assert np.isfinite(fc.point[row]).all() and np.isfinite(fc.lower[row]).all() and result.params[row] is not None
    for row in (1, 2, 4):
        assert np.isnan(fc.point[row]).all() and np.isnan(fc.lower[row]).all() and np.isnan(fc.upper[row]).all()
        assert result.params[row] is None and not result.converged[row] and result.iterations[row] == -1


def test_panel_too_short_for_a_seasonal_order_fails_every_row_without_raising():
    order, seasonal = (1, 0, 1), (1, 0, 1, 12)
    assert sarimax_min_points(order, seasonal) == 81  # 3 * (1 + 1 + 12 + 12 + 1)
    assert sarimax_min_points((1, 0, 1)) == 10
    y = ar1_panel(4, 60, seed=4)
    result = sarimax_fit_forecast(y, 2, order=order, seasonal_order=seasonal, processes=None)
    assert sorted(result.errors) == [0, 1, 2, 3]
    assert all("too few points" in reason and "60 < 81" in reason for reason in result.errors.values())
    assert np.isnan(result.forecast.point).all()
    assert result.processes == 1  # nothing to fit: no pool
    assert not result.converged.any()


def test_start_params_reuse_and_fallback(caplog):
    y = 100 * ar1_panel(6, 250, seed=5, noise=0.5)  # log prices in percent: a well-scaled likelihood
    first = sarimax_fit_forecast(y, 5, processes=1)
    assert first.errors == {} and first.converged.all()
    again = sarimax_fit_forecast(y, 5, processes=1, start_params=first.params)
    assert again.errors == {}
    width = first.forecast.upper - first.forecast.lower
    assert np.all(np.abs(again.forecast.point - first.forecast.point) <= 1e-4 * width)
    assert np.all(np.abs(again.forecast.upper - first.forecast.upper) <= 1e-4 * width)
    # Started at the optimum, L-BFGS has (almost) nothing left to do. (statsmodels may then report
    # converged=False with 0 iterations: its line search finds no improvement; that flag is kept as is.)
    assert np.all(again.iterations <= 1) and np.all(again.iterations < first.iterations), again.iterations

    garbage = list(first.params)
    garbage[2] = np.array([0.0, 1.5, 0.3, 1.0])  # non-stationary AR start: statsmodels returns NaN from it
    garbage[3] = None
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        mixed = sarimax_fit_forecast(y, 5, processes=1, start_params=garbage)
    assert mixed.errors == {}
    # Row 2 was refitted from statsmodels' default start: the very same fit as the first call's.
    np.testing.assert_array_equal(mixed.forecast.point[2], first.forecast.point[2])
    np.testing.assert_array_equal(mixed.params[2], first.params[2])
    np.testing.assert_array_equal(mixed.forecast.point[3], first.forecast.point[3])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warned) == 1
        and "row 2 (non-finite fit" in warned[0]
        and "refitted from statsmodels' default start" in warned[0]
    ), warned
    assert "row 3" not in warned[0]
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and "6 row(s)" in info[0] and "1 process(es)" in info[0] and "0 failed" in info[0]

    with pytest.raises(InvalidInputError, match="start_params has 5 entries; values has 6 rows"):
        sarimax_fit_forecast(y, 5, processes=1, start_params=first.params[:5])
    with pytest.raises(InvalidInputError, match=r"start_params\[1\] has shape \(3,\); .* has 4 parameters"):
        sarimax_fit_forecast(y, 5, processes=1, start_params=[None, np.zeros(3), None, None, None, None])


@pytest.mark.parametrize(
    ("values", "kwargs", "fragment"),
    [
        (np.ones(50), {}, "must be 2-D"),
        (np.ones((0, 50)), {}, "has no symbol"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0]], {}, "numeric (symbols, time)"),
        (np.ones((2, 50)), {"horizon": 0}, "horizon must be a positive integer"),
        (np.ones((2, 50)), {"level": 1.5}, "level must be in (0, 1)"),
        (np.ones((2, 50)), {"order": (1, 0)}, "order must be a tuple of 3 non-negative integers"),
        (np.ones((2, 50)), {"order": (1, -1, 0)}, "order must be a tuple of 3"),
        (np.ones((2, 50)), {"order": (1.0, 0, 1)}, "order must be a tuple of 3"),
        (np.ones((2, 50)), {"seasonal_order": (1, 0, 0)}, "seasonal_order must be a tuple of 4"),
        (np.ones((2, 50)), {"seasonal_order": (1, 0, 0, 0)}, "period s must be 0"),
        (np.ones((2, 50)), {"seasonal_order": (0, 0, 0, 1)}, "period s must be 0"),
        (np.ones((2, 50)), {"trend": "quadratic"}, "trend must be one of"),
        (np.ones((2, 50)), {"processes": 0}, "processes must be a positive integer"),
        (np.ones((2, 50)), {"processes": True}, "processes must be a positive integer"),
        (np.ones((2, 50)), {"blas_threads": 0}, "blas_threads must be a positive integer"),
        (np.ones((2, 50)), {"maxiter": 0}, "maxiter must be a positive integer"),
        (np.ones((2, 50)), {"start_params": "abc"}, "start_params must be a sequence"),
        (np.ones((2, 50)), {"start_params": [None, ["a", "b"]]}, "start_params[1] must be a numeric vector"),
    ],
)
def test_bad_whole_call_input_raises(values, kwargs, fragment):
    args = {"horizon": 3, **kwargs}
    with pytest.raises(InvalidInputError) as info:
        sarimax_fit_forecast(values, **args)
    assert fragment in str(info.value)


def test_dead_worker_raises_naming_lost_rows(monkeypatch):
    """A worker that dies fails this chunk and every pending one: PortfolioError, never a partial result."""

    class DyingExecutor:
        def __init__(self) -> None:
            self.calls = 0
            self.shut_down = False

        def submit(self, fn, task):
            future: Future = Future()
            self.calls += 1
            if self.calls <= 2:
                future.set_result(fn(task))
            else:
                future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
            return future

        def shutdown(self, wait=True, cancel_futures=False):
            self.shut_down = True

    executor = DyingExecutor()
    monkeypatch.setattr(sx, "_make_executor", lambda processes: executor)
    y = ar1_panel(8, 120, seed=6)
    with pytest.raises(PortfolioError, match=r"a worker process died .*6 of 8 row\(s\) lost"):
        sarimax_fit_forecast(y, 2, processes=2)  # 8 rows in 8 chunks: 2 done, 6 lost
    assert executor.shut_down


def test_one_step_intervals_cover_about_ninety_percent():
    length, symbols, horizon = 200, 100, 3
    full = ar1_panel(symbols, length + horizon, seed=8)
    result = sarimax_fit_forecast(full[:, :length], horizon, processes=2, level=0.9)
    assert result.errors == {} and result.processes == 2
    actual = full[:, length:]
    inside = (result.forecast.lower <= actual) & (actual <= result.forecast.upper)
    one_step = inside[:, 0].mean()
    assert 0.85 <= one_step <= 0.95, one_step
    assert 0.85 <= inside.mean() <= 0.95, inside.mean(axis=0)


def test_default_processes_start_a_pool_only_for_a_large_enough_batch(monkeypatch):
    from airflow_provider_portfolio.forecast import sarimax

    y = ar1_panel(8, 120, seed=6)
    assert sarimax_fit_forecast(y, 2, processes=None).processes == 1  # 8 rows < 50 per process
    monkeypatch.setattr(sarimax, "MIN_ROWS_PER_PROCESS", 4)
    monkeypatch.setattr(sarimax, "_usable_cpus", lambda: 2)
    assert sarimax_fit_forecast(y, 2, processes=None).processes == 2
