"""Batched GARCH(1,1): agrees with arch, recovers the truth, calibrated intervals, batch == per-symbol."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from arch import arch_model
from scipy import stats

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.baselines import Forecast
from airflow_provider_portfolio.forecast.garch import MIN_POINTS, GarchFit, garch_fit


def simulate(symbols: int, length: int, *, seed: int, nu: float | None = None, burn: int = 500):
    """GARCH(1,1) daily returns (~1-2 %) with a 3 bp mean, parameters drawn per symbol.

    ``alpha`` in [0.05, 0.12], ``beta`` in [0.80, 0.92] (persistence at most 0.975), normal innovations or
    Student-t with ``nu`` degrees of freedom scaled to unit variance. Returns ``(returns, true parameters)``.
    """
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.05, 0.12, symbols)
    beta = np.minimum(rng.uniform(0.80, 0.92, symbols), 0.975 - alpha)
    uncond = rng.uniform(1e-4, 4e-4, symbols)
    omega = uncond * (1.0 - alpha - beta)
    n = burn + length
    if nu is None:
        z = rng.standard_normal((symbols, n))
    else:
        z = rng.standard_t(nu, (symbols, n)) * np.sqrt((nu - 2.0) / nu)
    s2 = uncond.copy()
    e = np.empty((symbols, n))
    for t in range(n):
        e[:, t] = np.sqrt(s2) * z[:, t]
        s2 = omega + alpha * e[:, t] ** 2 + beta * s2
    return 3e-4 + e[:, burn:], {"omega": omega, "alpha": alpha, "beta": beta}


def arch_fits(returns: np.ndarray, dist: str) -> tuple[np.ndarray, np.ndarray]:
    """``arch`` on each demeaned row scaled to unit variance: parameters and log-likelihood in input units."""
    e = returns - returns.mean(axis=1, keepdims=True)
    sd = e.std(axis=1)
    params, loglik = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row, s in zip(e / sd[:, None], sd, strict=True):
            res = arch_model(row, mean="Zero", vol="GARCH", p=1, q=1, dist=dist, rescale=False).fit(disp="off")
            params.append(res.params.to_numpy())
            loglik.append(res.loglikelihood - row.shape[0] * np.log(s))
    return np.array(params), np.array(loglik)


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_agrees_with_arch(dist):
    returns, _ = simulate(40, 1500, seed=11, nu=7.0 if dist == "t" else None)
    fit = garch_fit(returns, dist=dist)
    assert fit.converged.all()
    params, loglik = arch_fits(returns, dist)
    assert np.median(np.abs(fit.alpha - params[:, 1])) <= 0.02
    assert np.median(np.abs(fit.beta - params[:, 2])) <= 0.02
    sd2 = (returns - returns.mean(axis=1, keepdims=True)).var(axis=1)
    np.testing.assert_allclose(np.median(fit.omega / (params[:, 0] * sd2)), 1.0, rtol=0.02)
    if dist == "t":
        assert np.median(np.abs(fit.nu - params[:, 3])) <= 0.5
    gap = fit.loglik - loglik
    assert np.mean(gap >= -1e-4) >= 0.95, np.sort(gap)[:5]  # our maximum is at least arch's
    assert gap.min() >= -0.05, gap.min()


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_loglik_is_archs_likelihood_in_input_units(dist):
    returns, _ = simulate(4, 600, seed=5, nu=6.0 if dist == "t" else None)
    fit = garch_fit(returns, dist=dist)
    e = returns - fit.mu[:, None]
    for i in range(4):
        params = [fit.omega[i], fit.alpha[i], fit.beta[i]] + ([fit.nu[i]] if dist == "t" else [])
        model = arch_model(e[i], mean="Zero", vol="GARCH", p=1, q=1, dist=dist, rescale=False)
        np.testing.assert_allclose(fit.loglik[i], model.fix(params).loglikelihood, rtol=1e-10)


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_recovers_true_parameters(dist):
    returns, true = simulate(30, 3000, seed=23, nu=7.0 if dist == "t" else None)
    fit = garch_fit(returns, dist=dist)
    assert fit.converged.all()
    assert np.median(np.abs(fit.alpha - true["alpha"])) <= 0.05
    assert np.median(np.abs(fit.beta - true["beta"])) <= 0.05
    np.testing.assert_allclose(np.median(fit.omega / true["omega"]), 1.0, rtol=0.5)
    if dist == "t":
        assert 5.0 <= np.median(fit.nu) <= 10.0  # true 7: loose, nu is hard to pin down
    else:
        assert np.isnan(fit.nu).all()


def test_rescaling_the_returns_rescales_omega_only():
    returns, _ = simulate(5, 500, seed=3)
    fit = garch_fit(returns, dist="t")
    big = garch_fit(100.0 * returns, dist="t")
    for name in ("alpha", "beta", "nu"):
        np.testing.assert_allclose(getattr(big, name), getattr(fit, name), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(big.omega, 1e4 * fit.omega, rtol=1e-6)
    np.testing.assert_allclose(big.last_variance, 1e4 * fit.last_variance, rtol=1e-6)
    np.testing.assert_allclose(big.loglik, fit.loglik - 500 * np.log(100.0), rtol=1e-10)


def test_forecast_is_the_expected_return_with_the_closed_form_variance():
    returns, _ = simulate(3, 400, seed=8)
    fit = garch_fit(returns)
    # last_variance: the recursion by hand, from arch's backcast
    for i in range(3):
        e = returns[i] - returns[i].mean()
        w = 0.94 ** np.arange(75)
        s2 = prev = float(np.sum(w / w.sum() * e[:75] ** 2))
        for t in range(400):
            s2 = fit.omega[i] + fit.alpha[i] * prev + fit.beta[i] * s2
            prev = e[t] ** 2
        np.testing.assert_allclose(fit.last_variance[i], fit.omega[i] + fit.alpha[i] * prev + fit.beta[i] * s2)
    fc = fit.forecast(6, level=0.8)
    assert isinstance(fc, Forecast) and fc.model == "garch" and fc.level == 0.8 and fc.horizon == 6
    np.testing.assert_array_equal(fc.point, np.repeat(fit.mu[:, None], 6, axis=1))
    np.testing.assert_allclose(fit.mu, returns.mean(axis=1))
    var = fit.variance_forecast(6)
    z = stats.norm.ppf(0.9)
    np.testing.assert_allclose(fc.upper - fc.point, z * np.sqrt(var), rtol=1e-12)
    np.testing.assert_allclose(fc.point - fc.lower, z * np.sqrt(var), rtol=1e-12)
    # deterministic
    again = garch_fit(returns)
    for name in ("omega", "alpha", "beta", "loglik", "last_variance"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fit, name))
    np.testing.assert_array_equal(fit.forecast(6, level=0.8).upper, fc.upper)


def test_variance_forecast_recursion_by_hand():
    fit = GarchFit(
        mu=np.array([0.001, -0.002]),
        omega=np.array([2e-6, 1e-5]),
        alpha=np.array([0.08, 0.2]),
        beta=np.array([0.9, 0.5]),
        nu=np.array([np.nan, np.nan]),
        loglik=np.zeros(2),
        converged=np.ones(2, dtype=bool),
        iterations=1,
        last_variance=np.array([3e-4, 1e-5]),
        dist="normal",
        xp=np,
    )
    expected = np.empty((2, 4))
    v = fit.last_variance.copy()
    for h in range(4):
        expected[:, h] = v
        v = fit.omega + (fit.alpha + fit.beta) * v
    np.testing.assert_allclose(fit.variance_forecast(4), expected, rtol=1e-13)
    # v_1 = 3e-4, v_2 = 2e-6 + 0.98 * 3e-4, and so on
    np.testing.assert_allclose(fit.variance_forecast(2)[0], [3e-4, 2e-6 + 0.98 * 3e-4], rtol=1e-13)


def test_t_interval_uses_the_scaled_student_quantile():
    returns, _ = simulate(4, 800, seed=9, nu=5.0)
    fit = garch_fit(returns, dist="t")
    fc = fit.forecast(3, level=0.95)
    assert fc.model == "garch_t"
    q = stats.t.ppf(0.975, fit.nu) * np.sqrt((fit.nu - 2.0) / fit.nu)
    np.testing.assert_allclose(fc.upper - fc.point, q[:, None] * np.sqrt(fit.variance_forecast(3)), rtol=1e-10)
    np.testing.assert_array_equal(fc.point, np.repeat(fit.mu[:, None], 3, axis=1))


@pytest.mark.parametrize(("dist", "nu"), [("normal", None), ("t", 6.0)])
def test_interval_coverage(dist, nu):
    horizon = 5
    returns, _ = simulate(400, 1000 + horizon, seed=31, nu=nu)
    fit = garch_fit(returns[:, :1000], dist=dist)
    fc = fit.forecast(horizon, level=0.9)
    future = returns[:, 1000:]
    inside = (fc.lower <= future) & (future <= fc.upper)
    assert abs(inside.mean() - 0.9) <= 0.03, inside.mean()
    assert abs(inside[:, 0].mean() - 0.9) <= 0.045, inside[:, 0].mean()  # one step ahead alone


def test_variance_forecast_tends_to_the_unconditional_variance():
    returns, _ = simulate(6, 800, seed=4)
    fit = garch_fit(returns)
    uncond = fit.omega / (1.0 - fit.alpha - fit.beta)
    var = fit.variance_forecast(3000)
    np.testing.assert_allclose(var[:, -1], uncond, rtol=1e-8)
    gap = np.abs(var - uncond[:, None])
    assert np.all(np.diff(gap, axis=1) <= 1e-18)  # monotone approach


def test_batch_equals_per_symbol():
    panel, _ = simulate(6, 800, seed=21)
    panel[5] = simulate(1, 800, seed=22)[0][0] * np.linspace(0.5, 1.5, 800)  # a less regular series
    for dist in ("normal", "t"):
        batch = garch_fit(panel, dist=dist)
        for i in range(panel.shape[0]):
            alone = garch_fit(panel[i : i + 1], dist=dist)
            np.testing.assert_allclose(alone.alpha[0], batch.alpha[i], rtol=0, atol=1e-7)
            np.testing.assert_allclose(alone.beta[0], batch.beta[i], rtol=0, atol=1e-7)
            np.testing.assert_allclose(alone.omega[0], batch.omega[i], rtol=1e-6)
            np.testing.assert_allclose(alone.loglik[0], batch.loglik[i], rtol=0, atol=1e-7)
            np.testing.assert_allclose(alone.last_variance[0], batch.last_variance[i], rtol=1e-6)
            if dist == "t":
                np.testing.assert_allclose(alone.nu[0], batch.nu[i], rtol=1e-5)
            assert alone.converged[0] == batch.converged[i]


def test_shapes_and_types():
    returns, _ = simulate(3, MIN_POINTS, seed=2)
    fit = garch_fit(returns.tolist())
    for name in ("mu", "omega", "alpha", "beta", "nu", "loglik", "converged", "last_variance"):
        assert getattr(fit, name).shape == (3,), name
    assert fit.converged.dtype == bool
    assert isinstance(fit.iterations, int) and fit.iterations >= 1
    assert fit.dist == "normal" and fit.xp is np
    assert np.all(fit.omega > 0) and np.all(fit.alpha >= 0) and np.all(fit.beta >= 0)
    assert np.all(fit.alpha + fit.beta < 1.0)
    assert np.all(fit.last_variance > 0)
    t_fit = garch_fit(returns, dist="t")
    assert np.all((t_fit.nu > 2.0) & (t_fit.nu <= 500.0))


def test_max_iter_flags_unconverged_rows():
    returns, _ = simulate(5, 500, seed=6)
    fit = garch_fit(returns, max_iter=1)
    assert fit.iterations == 1
    assert not fit.converged.all()
    assert garch_fit(returns).converged.all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"returns": np.zeros((2, MIN_POINTS - 1)) + np.arange(MIN_POINTS - 1)}, "at least 100 points"),
        ({"returns": np.where(np.eye(2, 200) == 1, np.nan, 0.01)}, "NaN"),
        ({"returns": np.full((1, 200), 0.01)}, r"zero variance in row\(s\) 0"),
        ({"returns": np.zeros((3, 200))}, r"zero variance in row\(s\) 0, 1, 2"),
        ({"returns": np.linspace(-0.01, 0.01, 200)}, "2-D"),
        ({"returns": "abc"}, "numeric"),
        ({"dist": "laplace"}, "dist must be one of"),
        ({"dist": None}, "dist must be one of"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": 0.0}, "tol"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"returns": simulate(2, 200, seed=1)[0]} | kwargs
    with pytest.raises(InvalidInputError, match=match):
        garch_fit(args.pop("returns"), **args)


def test_constant_row_among_good_rows_is_named():
    returns, _ = simulate(5, 300, seed=7)
    returns[3] = 0.002
    with pytest.raises(InvalidInputError, match=r"zero variance in row\(s\) 3:"):
        garch_fit(returns)


@pytest.mark.parametrize(("horizon", "level", "match"), [(0, 0.9, "horizon"), (2.5, 0.9, "horizon"), (3, 1.0, "level")])
def test_bad_forecast_arguments(horizon, level, match):
    fit = garch_fit(simulate(2, 200, seed=1)[0])
    with pytest.raises(InvalidInputError, match=match):
        fit.forecast(horizon, level=level)
    if match == "horizon":
        with pytest.raises(InvalidInputError, match=match):
            fit.variance_forecast(horizon)


def test_import_loads_no_airflow_scipy_nor_cupy():
    code = textwrap.dedent(
        """
        import sys
        import airflow_provider_portfolio.forecast.garch
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("airflow", "cupy", "cupyx", "scipy", "arch"))
        print(loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
