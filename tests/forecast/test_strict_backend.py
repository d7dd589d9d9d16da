"""Every registered model and the forecast job under a strict array backend that acts like a GPU.

:mod:`tests.forecast.strict` stands in for CuPy without a GPU: its arrays refuse implicit transfers to
the host (``float()``, ``bool()``, ``.item()``, NumPy functions called on them...). Code that works on
NumPy but would break, or silently synchronise, on a GPU fails here, on every CI run. The answers must
equal NumPy's to 1e-8 relative, like the CuPy parity tests (``test_cupy_parity.py``) on a GPU.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.forecast.backend import NUMPY, run_chunked, to_numpy
from airflow_provider_portfolio.forecast.base import kind
from airflow_provider_portfolio.forecast.jobs import forecast_universe
from airflow_provider_portfolio.forecast.registry import get_model, models
from airflow_provider_portfolio.forecast.simulate import garch_panel, seasonal_ar_panel
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore
from tests.forecast.strict import STRICT, ImplicitTransferError, StrictArray

RTOL = 1e-8
LEVELS = np.log(seasonal_ar_panel(6, 160, seed=3))
RETURNS = garch_panel(6, 400, omega=2e-6, alpha=0.08, beta=0.88, seed=4)
OPTIONS = {"sarimax": {"processes": 1}}


def assert_close(strict, ref, what):
    assert type(strict) is np.ndarray, f"{what}: a {type(strict).__name__} came back, not a host array"
    np.testing.assert_allclose(strict, ref, rtol=RTOL, atol=1e-300, err_msg=what)


# -- the shim itself refuses what a GPU would ---------------------------------------------------------


def test_strict_arrays_refuse_implicit_host_transfers():
    x = STRICT.xp.asarray([1.0, 2.0, 3.0])
    assert isinstance(x, StrictArray) and isinstance(STRICT.xp.sum(x), StrictArray)
    for convert in (float, int, bool, lambda a: a.item(), lambda a: a.tolist(), lambda a: range(a)):
        with pytest.raises(ImplicitTransferError):
            convert(STRICT.xp.sum(x))
    with pytest.raises(ImplicitTransferError):
        bool(STRICT.xp.any(x > 2))
    with pytest.raises(ImplicitTransferError):
        [int(i) for i in STRICT.xp.nonzero(x > 1)[0]]
    with pytest.raises(ImplicitTransferError):
        np.mean(x)  # NumPy on a device array
    with pytest.raises(ImplicitTransferError):
        x + np.ones(3)  # a host operand
    with pytest.raises(ImplicitTransferError):
        STRICT.xp.concatenate([x, np.ones(3)])
    assert isinstance(x * 2.0 + STRICT.xp.ones(3), StrictArray)
    host = to_numpy(STRICT.xp.sum(x))
    assert type(host) is np.ndarray and float(host) == 6.0


# -- every registered model ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", models())
def test_every_registered_model_matches_numpy(name):
    model = get_model(name, **OPTIONS.get(name, {}))
    panel = RETURNS if kind(model) == "variance" else LEVELS
    ref = get_model(name, **OPTIONS.get(name, {})).fit(panel, NUMPY).forecast(5, 0.9)
    fc = model.fit(panel, STRICT).forecast(5, 0.9)
    assert fc.model == ref.model and fc.level == ref.level and dict(fc.errors) == dict(ref.errors)
    for part in ("point", "lower", "upper"):
        assert_close(getattr(fc, part), getattr(ref, part), f"{name}.{part}")
    if ref.variance is None:
        assert fc.variance is None
    else:
        assert_close(fc.variance, ref.variance, f"{name}.variance")


def test_chunked_rows_match_numpy():
    model = get_model("samossa", chunk=2)
    ref = model.fit(LEVELS, NUMPY).forecast(3, 0.8)
    fc = model.fit(LEVELS, STRICT).forecast(3, 0.8)
    assert_close(fc.point, ref.point, "chunked samossa")

    def rows(xp, part):
        assert isinstance(part, StrictArray)
        return xp.cumsum(part, axis=1)

    assert_close(run_chunked(rows, LEVELS, STRICT, chunk=4), np.cumsum(LEVELS, axis=1), "run_chunked")


# -- the job ------------------------------------------------------------------------------------------

SYMBOLS = ["AAPL", "MSFT", "BTC/USD"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = PortfolioStore.for_sqlite_file(tmp_path_factory.mktemp("strict") / "portfolio.db")
    s.migrate()
    market = SyntheticMarket(seed=5)
    s.upsert_bars(pd.concat([market.bars(sym, "2023-06-01", "2024-06-03") for sym in SYMBOLS], ignore_index=True))
    yield s
    s.dispose()


@pytest.mark.parametrize("name", models())
def test_forecast_universe_matches_numpy(store, name):
    if get_model(name).engine is not None:  # runs on its own engine: the backend is not used
        report = forecast_universe(store, SYMBOLS, get_model(name, **OPTIONS.get(name, {})), run_id=f"{name}-strict",
                                   history=200, origins=3, device=STRICT)
        assert sorted(report.forecast) == sorted(SYMBOLS)
        assert (report.backend, report.device) == (get_model(name).engine, "cpu")
        stored = store.read_forecasts(SYMBOLS, model=name, run_id=f"{name}-strict")
        assert len(stored) == 15 and np.isfinite(stored[["point", "lower", "upper"]].to_numpy(dtype=float)).all()
        return
    reports = {}
    for run_id, device in (("numpy", NUMPY), ("strict", STRICT)):
        model = get_model(name, **OPTIONS.get(name, {}))
        reports[run_id] = forecast_universe(store, SYMBOLS, model, run_id=f"{name}-{run_id}", history=200,
                                            origins=3, device=device)
    ref, got = reports["numpy"], reports["strict"]
    assert got.forecast == ref.forecast and got.failed == ref.failed and got.labels == ref.labels
    assert got.forecast, f"{name}: nothing forecast ({got.failed})"
    assert (got.backend, got.device) == ("strict", "cpu (strict)")
    rows = {r: store.read_forecasts(SYMBOLS, model=name, run_id=f"{name}-{r}").sort_values(["symbol", "step"])
            for r in reports}
    assert len(rows["strict"]) == len(rows["numpy"]) == 5 * len(got.forecast)
    for column in ("point", "lower", "upper", "variance"):
        a = rows["strict"][column].to_numpy(dtype=np.float64)
        b = rows["numpy"][column].to_numpy(dtype=np.float64)
        np.testing.assert_allclose(a, b, rtol=RTOL, err_msg=f"{name}.{column}")
    evs = {r: store.read_evaluations(SYMBOLS, model=name, run_id=f"{name}-{r}").sort_values("symbol") for r in reports}
    np.testing.assert_allclose(evs["strict"]["rmse"].to_numpy(dtype=np.float64),
                               evs["numpy"]["rmse"].to_numpy(dtype=np.float64), rtol=RTOL)
