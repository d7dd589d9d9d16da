"""Backend parity: every batched model gives the same numbers on CuPy as on NumPy (float64, 1e-8 relative).

These tests need CuPy and a visible NVIDIA GPU. Without one they are skipped, and pytest's summary
(``-ra``) reports each skip with this reason; the NumPy path of the same code is what the rest of
the suite tests. On a GPU machine: ``pip install cupy-cuda12x`` and ``pytest tests/forecast/test_cupy_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from airflow_provider_portfolio.forecast.backend import get_backend, run_chunked, to_numpy
from airflow_provider_portfolio.forecast.baselines import BASELINES
from airflow_provider_portfolio.forecast.garch import garch_fit
from airflow_provider_portfolio.forecast.mssa import mssa_fit_forecast
from airflow_provider_portfolio.forecast.samossa import samossa_fit_forecast
from airflow_provider_portfolio.forecast.simulate import garch_panel, seasonal_ar_panel
from airflow_provider_portfolio.forecast.ssa import ssa_fit_forecast

RTOL = 1e-8


@pytest.fixture(scope="module")
def cp():
    backend = get_backend("auto")
    if not backend.is_gpu:
        pytest.skip("no NVIDIA GPU visible to CuPy here: CuPy parity not tested on this machine")
    return backend.xp


def assert_same(gpu, cpu, what):
    gpu, cpu = to_numpy(gpu), np.asarray(cpu)
    scale = np.maximum(np.abs(cpu), 1e-12)
    rel = np.max(np.abs(gpu - cpu) / scale)
    assert rel <= RTOL, f"{what}: max relative difference {rel:.2e}"


LEVELS = seasonal_ar_panel(64, 400, seed=3)
RETURNS = garch_panel(64, 800, omega=2e-6, alpha=0.08, beta=0.88, seed=4)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines(cp, name):
    values = np.diff(np.log(LEVELS), axis=1) if name == "zero_return" else LEVELS
    cpu = BASELINES[name](values, 5)
    gpu = BASELINES[name](cp.asarray(values), 5, xp=cp)
    for part in ("point", "lower", "upper"):
        assert_same(getattr(gpu, part), getattr(cpu, part), f"{name}.{part}")


@pytest.mark.parametrize("fn", [ssa_fit_forecast, samossa_fit_forecast, mssa_fit_forecast])
def test_ssa_family(cp, fn):
    cpu = fn(LEVELS, 5)
    gpu = fn(cp.asarray(LEVELS), 5, xp=cp)
    for part in ("point", "lower", "upper"):
        assert_same(getattr(gpu, part), getattr(cpu, part), f"{fn.__name__}.{part}")


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_garch(cp, dist):
    cpu = garch_fit(RETURNS, dist=dist)
    gpu = garch_fit(cp.asarray(RETURNS), dist=dist, xp=cp)
    for name in ("omega", "alpha", "beta", "loglik"):
        assert_same(getattr(gpu, name), getattr(cpu, name), f"garch {dist} {name}")
    assert_same(gpu.variance_forecast(5), cpu.variance_forecast(5), f"garch {dist} variance")
    fc_gpu, fc_cpu = gpu.forecast(5), cpu.forecast(5)
    assert_same(fc_gpu.upper, fc_cpu.upper, f"garch {dist} upper")


def test_chunked_run_on_the_gpu(cp):
    backend = get_backend("cuda")

    def fn(xp, rows):
        fc = ssa_fit_forecast(rows, 5, xp=xp)
        return fc.point

    assert_same(run_chunked(fn, LEVELS, backend, chunk=16), ssa_fit_forecast(LEVELS, 5).point, "chunked ssa")


@pytest.mark.parametrize("name", ["drift", "garch", "garch_t", "historical_mean", "last_value", "mssa", "samossa", "ssa"])
def test_registered_models(cp, name):
    from airflow_provider_portfolio.forecast.backend import NUMPY
    from airflow_provider_portfolio.forecast.base import kind
    from airflow_provider_portfolio.forecast.registry import get_model

    model = get_model(name)
    panel = RETURNS if kind(model) == "variance" else LEVELS
    cpu = model.fit(panel, NUMPY).forecast(5, 0.9)
    gpu = get_model(name).fit(panel, get_backend("cuda")).forecast(5, 0.9)
    for part in ("point", "lower", "upper", "variance"):
        if getattr(cpu, part) is not None:
            assert type(getattr(gpu, part)) is np.ndarray  # models hand back host arrays
            assert_same(getattr(gpu, part), getattr(cpu, part), f"{name}.{part}")


def test_every_array_model_is_covered():
    from airflow_provider_portfolio.forecast.registry import get_model, models

    array_models = {m for m in models() if get_model(m).engine is None}
    covered = set(test_registered_models.pytestmark[0].args[1])
    assert array_models == covered
