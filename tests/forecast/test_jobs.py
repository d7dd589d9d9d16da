"""Forecasting jobs against a real SQLite store filled from the synthetic market."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.backend import NUMPY
from airflow_provider_portfolio.forecast.base import Forecast
from airflow_provider_portfolio.forecast.jobs import (
    OnBackend,
    ensemble_universe,
    forecast_universe,
    future_bars,
    garch_spec,
    sarimax_spec,
    ssa_family_spec,
)
from airflow_provider_portfolio.forecast.registry import get_model, models, register, unregister
from airflow_provider_portfolio.market.calendar import MarketCalendar
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore

SYMBOLS = ["AAPL", "MSFT", "SPY", "BTC/USD"]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    market = SyntheticMarket(seed=3)
    return pd.concat([market.bars(s, "2023-01-02", "2024-06-03") for s in SYMBOLS], ignore_index=True)


@pytest.fixture
def store(tmp_path, bars) -> PortfolioStore:
    s = PortfolioStore.for_sqlite_file(tmp_path / "portfolio.db")
    s.migrate()
    s.upsert_bars(bars)
    yield s
    s.dispose()


def test_future_bars_follow_each_calendar():
    friday = pd.Timestamp("2024-05-24", tz="UTC")  # Monday 27 May is Memorial Day
    assert [str(t.date()) for t in future_bars("AAPL", friday, 3, "1Day", "XNYS")] == [
        "2024-05-28", "2024-05-29", "2024-05-30"]
    assert [str(t.date()) for t in future_bars("BTC/USD", friday, 3, "1Day", "XNYS")] == [
        "2024-05-25", "2024-05-26", "2024-05-27"]
    assert len(future_bars("AAPL", friday, 40, "1Day", "XNYS")) == 40


def test_forecast_universe_writes_forecasts_and_evaluations(store, bars):
    report = forecast_universe(store, SYMBOLS + ["NOPE"], "ssa", run_id="run-1", horizon=5, history=300, origins=4,
                               device="cpu")
    assert sorted(report.forecast) == sorted(SYMBOLS)
    assert report.failed == {"NOPE": "no bars of this timeframe in the store"}
    assert report.forecast_rows == 5 * len(SYMBOLS) and report.evaluation_rows == len(SYMBOLS)
    fc = store.read_forecasts(SYMBOLS, model="ssa", run_id="run-1")
    assert len(fc) == 20 and set(fc["target"]) == {"log_close"} and set(fc["device"]) == {"cpu"}
    aapl = fc[fc["symbol"] == "AAPL"].sort_values("step")
    last = bars[bars["symbol"] == "AAPL"].iloc[-1]
    assert (aapl["asof"] == last["ts"]).all()
    cal = MarketCalendar("XNYS").sessions("2024-06-04", "2024-06-12").index
    assert [t.date() for t in aapl["target_ts"]] == [d.date() for d in cal[:5]]
    assert np.all(aapl["lower"] <= aapl["point"]) and np.all(aapl["point"] <= aapl["upper"])
    # the forecast is of log closes, near the last close
    assert abs(aapl["point"].iloc[0] - np.log(last["close"])) < 0.2
    ev = store.read_evaluations(SYMBOLS, model="ssa", run_id="run-1")
    assert len(ev) == 4 and set(ev["origins"]) == {4} and set(ev["baseline"]) == {"last_value"}
    assert set(ev["label"]) <= {"healthy", "unhealthy"}
    assert (ev["healthy"] == (ev["label"] == "healthy")).all()
    # a rerun of the same run replaces, never duplicates
    again = forecast_universe(store, SYMBOLS, get_model("ssa"), run_id="run-1", horizon=5, history=300, origins=4,
                              device="cpu")
    assert again.forecast_rows == 20
    assert len(store.read_forecasts(SYMBOLS, model="ssa", run_id="run-1")) == 20


def test_bad_series_fail_alone(store, bars):
    flat = bars[bars["symbol"] == "MSFT"].copy()
    flat["symbol"] = "FLAT"
    flat[["open", "high", "low", "close"]] = 10.0
    short = bars[bars["symbol"] == "AAPL"].tail(20).copy()
    short["symbol"] = "SHORT"
    store.upsert_bars(pd.concat([flat, short]))
    report = forecast_universe(store, ["AAPL", "FLAT", "SHORT"], get_model("samossa"), run_id="r", history=200,
                               origins=3, device=NUMPY)
    assert report.forecast == ["AAPL"]
    assert "constant series" in report.failed["FLAT"]
    assert "only 20 bar(s)" in report.failed["SHORT"]


class FlakyModel:
    """SSA that fails on any panel of several symbols and on MSFT's series: a model outside the registry."""

    name, target, min_points, params, engine = "ssa", "log_close", 30, {}, None

    def __init__(self, msft_last, calls):
        self.inner, self.msft_last, self.calls = get_model("ssa"), msft_last, calls

    def fit(self, panel, backend):
        self.calls.append(panel.shape[0])
        if panel.shape[0] > 1 or abs(panel[0, -1] - self.msft_last) < 1e-12:
            raise np.linalg.LinAlgError("did not converge")
        return self.inner.fit(panel, backend)


def test_a_failing_panel_is_retried_symbol_by_symbol(store):
    calls = []
    model = FlakyModel(np.log(store.read_bars(["MSFT"])["close"].iloc[-1]), calls)
    report = forecast_universe(store, ["AAPL", "MSFT", "SPY"], model, run_id="r", history=200, origins=3,
                               device="cpu")
    assert sorted(report.forecast) == ["AAPL", "SPY"]
    assert report.failed == {"MSFT": "LinAlgError: did not converge"}
    assert calls[0] == 3
    assert len(store.read_forecasts(["MSFT"], run_id="r")) == 0


def test_ensemble_uses_healthy_models_only(store):
    for method in ("ssa", "samossa", "mssa"):
        forecast_universe(store, SYMBOLS, method, run_id="r", history=300, origins=4, device="cpu")
    ev = store.read_evaluations(SYMBOLS, run_id="r")
    report = ensemble_universe(store, SYMBOLS, ["ssa", "samossa", "mssa"], run_id="r")
    ens = store.read_evaluations(SYMBOLS, model="ensemble", run_id="r").set_index("symbol")
    fc = store.read_forecasts(SYMBOLS, model=["ensemble", "ssa", "samossa", "mssa"], run_id="r")
    for symbol in SYMBOLS:
        rows = ev[ev["symbol"] == symbol].set_index("model")
        healthy = rows[rows["healthy"]]
        assert ens.loc[symbol, "label"] == ("healthy" if len(healthy) else "unhealthy")
        mine = fc[(fc["symbol"] == symbol) & (fc["model"] == "ensemble")].sort_values("step")
        if not len(healthy):
            assert mine.empty
            continue
        w = (1 / healthy["rmse"] ** 2) / (1 / healthy["rmse"] ** 2).sum()
        expected = sum(
            w[m] * fc[(fc["symbol"] == symbol) & (fc["model"] == m)].sort_values("step")["point"].to_numpy()
            for m in healthy.index)
        np.testing.assert_allclose(mine["point"].to_numpy(), expected, rtol=1e-12)
    assert report.labels and set(report.labels) == set(SYMBOLS)
    with pytest.raises(InvalidInputError, match="at least one component"):
        ensemble_universe(store, SYMBOLS, [], run_id="r")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"horizon": 0}, "horizon"), ({"level": 1.5}, "level"), ({"history": 10}, "history"),
     ({"origins": 0}, "origins"), ({"run_id": ""}, "run_id")],
)
def test_bad_parameters_write_nothing(store, kwargs, match):
    args = {"run_id": "r"} | kwargs
    with pytest.raises(InvalidInputError, match=match):
        forecast_universe(store, SYMBOLS, "ssa", device="cpu", **args)
    assert store.read_forecasts(SYMBOLS).empty


def test_model_bad_input(store):
    with pytest.raises(InvalidInputError, match="unknown forecast model 'fourier'"):
        get_model("fourier")
    with pytest.raises(InvalidInputError, match="unknown forecast model"):
        forecast_universe(store, SYMBOLS, "fourier", run_id="r")
    with pytest.raises(InvalidInputError, match="ar_order"):
        get_model("ssa", ar_order=2)
    with pytest.raises(InvalidInputError, match="dist"):
        get_model("garch", dist="cauchy")
    with pytest.raises(InvalidInputError, match="fixes dist"):
        get_model("garch_t", dist="normal")
    with pytest.raises(InvalidInputError, match="no_such_option"):
        get_model("ssa", no_such_option=1)
    with pytest.raises(InvalidInputError, match="device must be one of"):
        forecast_universe(store, SYMBOLS, "ssa", run_id="r", device="tpu")
    assert store.read_forecasts(SYMBOLS).empty


def test_the_registry_holds_every_model():
    assert set(models()) >= {"ssa", "samossa", "mssa", "garch", "garch_t", "sarimax", "last_value", "drift",
                             "historical_mean"}
    for name in models():
        model = get_model(name)
        assert model.name == name and model.target in ("log_close", "log_return") and model.min_points >= 2
        assert dict(model.params) == dict(get_model(name).params)
    assert get_model("garch", dist="t").name == "garch_t"
    assert get_model("samossa", ar_order=3).params["ar_order"] == 3
    assert get_model("sarimax").engine == "statsmodels" and get_model("ssa").engine is None


def test_a_registered_model_runs_in_the_job_by_name(store):
    class Doubled:
        """The last value, with twice its band: a model a user adds."""

        name, target, min_points, params, engine = "wide_last", "log_close", 2, {}, None

        def fit(self, panel, backend):
            fitted = get_model("last_value").fit(panel, backend)

            class Wide:
                def forecast(self, horizon, level=0.9):
                    fc = fitted.forecast(horizon, level)
                    half = fc.upper - fc.point
                    return Forecast(fc.point, fc.point - 2 * half, fc.point + 2 * half, "wide_last", level)

            return Wide()

    register(Doubled)
    try:
        with pytest.raises(InvalidInputError, match="already registered"):
            register(lambda: Doubled(), name="wide_last")
        report = forecast_universe(store, ["AAPL"], "wide_last", run_id="w", history=200, origins=3, device="cpu")
        assert report.forecast == ["AAPL"] and report.model == "wide_last"
        assert len(store.read_forecasts(["AAPL"], model="wide_last", run_id="w")) == 5
    finally:
        unregister("wide_last")
    assert "wide_last" not in models()


def test_the_ensemble_refuses_a_registered_variance_model_before_reading(store):
    with pytest.raises(InvalidInputError, match=r"\['garch'\] forecast returns"):
        ensemble_universe(store, SYMBOLS, ["ssa", "garch"], run_id="r")


def test_deprecated_spec_functions_still_work(store):
    with pytest.deprecated_call():
        spec = ssa_family_spec("samossa", backend=NUMPY, ar_order=3)
    assert isinstance(spec, OnBackend) and spec.backend is NUMPY and spec.params["ar_order"] == 3
    report = forecast_universe(store, ["AAPL"], spec, run_id="d", history=200, origins=3)
    assert report.forecast == ["AAPL"] and report.device == "cpu"
    with pytest.deprecated_call():
        assert garch_spec("t", backend=NUMPY).name == "garch_t"
    with pytest.deprecated_call():
        assert sarimax_spec(processes=1).engine == "statsmodels"
    with pytest.deprecated_call(), pytest.raises(InvalidInputError, match="method"):
        ssa_family_spec("fourier", backend=NUMPY)


def test_a_horizon_beyond_the_history_fails_each_symbol_clearly(store):
    report = forecast_universe(store, ["AAPL", "SPY"], "ssa", run_id="r", history=100, horizon=90, origins=3,
                               device="cpu")
    assert report.forecast == []
    for symbol in ("AAPL", "SPY"):
        assert "no backtest origin: T = 100 bars, horizon 90" in report.failed[symbol]
    assert store.read_forecasts(["AAPL", "SPY"]).empty


def test_garch_rows_that_do_not_converge_are_failed_not_stored(store, monkeypatch):
    import functools

    from airflow_provider_portfolio.forecast import garch

    good = forecast_universe(store, SYMBOLS, "garch", run_id="ok", history=300, origins=3, device="cpu")
    assert sorted(good.forecast) == sorted(SYMBOLS) and not good.failed
    stored = store.read_forecasts(SYMBOLS, model="garch", run_id="ok")
    assert set(stored["target"]) == {"log_return"} and (stored["variance"] > 0).all()
    monkeypatch.setattr(garch, "garch_fit", functools.partial(garch.garch_fit, max_iter=1))
    stuck = forecast_universe(store, SYMBOLS, "garch", run_id="r", history=300, origins=3, device="cpu")
    assert stuck.failed and all("did not converge in 1 iterations" in why for why in stuck.failed.values())
    assert store.read_forecasts(list(stuck.failed), run_id="r").empty


def test_sarimax_warm_start_reuses_params_of_the_same_symbols_only(monkeypatch):
    from airflow_provider_portfolio.forecast import sarimax
    from airflow_provider_portfolio.forecast.simulate import seasonal_ar_panel

    seen = []
    real = sarimax.sarimax_fit_forecast

    def spy(values, horizon, **kwargs):
        seen.append(kwargs["start_params"])
        return real(values, horizon, **kwargs)

    monkeypatch.setattr(sarimax, "sarimax_fit_forecast", spy)
    model = get_model("sarimax", processes=1)
    first, other = seasonal_ar_panel(2, 120, seed=1), seasonal_ar_panel(2, 120, seed=2)
    model.fit(first, NUMPY).forecast(3, 0.9)
    model.fit(other, NUMPY).forecast(3, 0.9)  # another group with as many rows: must start from scratch
    model.fit(first[:, :100], NUMPY).forecast(3, 0.9)  # a backtest prefix of the first group: warm
    assert seen[0] is None and seen[1] is None
    assert seen[2] is not None and len(seen[2]) == 2
