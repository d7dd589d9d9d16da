"""Forecasting operators' execute() with a real SQLite store filled from the synthetic market."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.backend import DeviceUnavailableError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.operators.forecasting import (
    EnsembleForecastOperator,
    GarchForecastOperator,
    SarimaxForecastOperator,
    SSAForecastOperator,
)
from airflow_provider_portfolio.store import PortfolioStore

SYMBOLS = ["AAPL", "SPY", "BTC/USD"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "desk.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    s = PortfolioStore.for_sqlite_file(path)
    s.migrate()
    market = SyntheticMarket(seed=1)
    s.upsert_bars(pd.concat([market.bars(sym, "2023-06-01", "2024-06-03") for sym in SYMBOLS], ignore_index=True))
    yield s
    s.dispose()


def run(op, run_id="manual__1"):
    summary = op.execute({"run_id": run_id})
    assert json.loads(json.dumps(summary)) == summary  # small and JSON-able
    return summary


def test_each_model_writes_rows_and_the_ensemble_combines_them(store):
    common = {"store_conn_id": "desk_store", "symbols": SYMBOLS, "history": 250, "origins": 3}
    for method in ("ssa", "samossa", "mssa"):
        summary = run(SSAForecastOperator(task_id=method, method=method, device="cpu", **common))
        assert summary["symbols"] == 3 and summary["forecast_rows"] == 15 and summary["device"] == "cpu"
    garch = run(GarchForecastOperator(task_id="garch", device="cpu", **common))
    assert garch["model"] == "garch" and garch["evaluation_rows"] == 3
    sarimax = run(SarimaxForecastOperator(task_id="sarimax", processes=1, **common))
    assert sarimax["backend"] == "statsmodels" and sarimax["forecast_rows"] == 15
    ensemble = run(EnsembleForecastOperator(task_id="ensemble", models="ssa,samossa,mssa,sarimax",
                                            store_conn_id="desk_store", symbols=SYMBOLS))
    assert ensemble["evaluation_rows"] == 3
    fc = store.read_forecasts(SYMBOLS, run_id="manual__1")
    assert set(fc["model"]) >= {"ssa", "samossa", "mssa", "garch", "sarimax"}
    assert (fc[fc["model"] == "garch"]["variance"] > 0).all()


def test_symbols_default_to_the_whole_store(store):
    summary = run(SSAForecastOperator(task_id="ssa", store_conn_id="desk_store", device="cpu", history=200, origins=3))
    assert summary["symbols"] == 3


def test_forced_cuda_without_a_gpu_fails_before_anything_is_written(store):
    op = SSAForecastOperator(task_id="ssa", store_conn_id="desk_store", symbols=SYMBOLS, device="cuda")
    with pytest.raises(DeviceUnavailableError, match="device='cuda'"):
        op.execute({"run_id": "r"})
    assert store.read_forecasts(SYMBOLS).empty


def test_missing_symbols_are_reported_and_too_many_fail_the_task(store):
    ok = run(SSAForecastOperator(task_id="ssa", store_conn_id="desk_store", symbols=[*SYMBOLS, "ZZZZ"], device="cpu",
                                 history=200, origins=3))
    assert ok["failed"] == {"ZZZZ": "no bars of this timeframe in the store"} and ok["symbols"] == 3
    op = SSAForecastOperator(task_id="ssa", store_conn_id="desk_store", symbols=["AAPL", "ZZZZ", "YYYY"],
                             device="cpu", history=200, origins=3)
    with pytest.raises(RuntimeError, match=r"2 of 3 symbol\(s\) could not be forecast.*ZZZZ: no bars"):
        op.execute({"run_id": "r2"})
    # the symbol that could be forecast was written (nothing half-written: its rows are complete)
    assert len(store.read_forecasts(["AAPL"], run_id="r2")) == 5


@pytest.mark.parametrize(
    ("op", "match"),
    [
        (SSAForecastOperator(task_id="a", method="fourier"), "method"),
        (GarchForecastOperator(task_id="b", dist="cauchy"), "dist"),
        (SSAForecastOperator(task_id="c", max_failed_fraction=2.0), "max_failed_fraction"),
        (SSAForecastOperator(task_id="d", horizon=0), "horizon"),
        (SSAForecastOperator(task_id="e", symbols="not a ticker!"), "not a ticker"),
    ],
)
def test_bad_parameters(store, op, match):
    op.store_conn_id = "desk_store"
    op.device = "cpu"
    with pytest.raises(InvalidInputError, match=match):
        op.execute({"run_id": "r"})
    assert store.read_forecasts(SYMBOLS).empty


@pytest.mark.parametrize(
    "make",
    [
        lambda: SSAForecastOperator(task_id="ssa", store_conn_id="desk_store", symbols=["AAPL"], device="cpu",
                                    history=200, origins=3),
        lambda: EnsembleForecastOperator(task_id="ensemble", store_conn_id="desk_store", symbols=["AAPL"],
                                         models="ssa", max_failed_fraction=1.0),
    ],
    ids=["model", "ensemble"],
)
def test_one_run_migrates_the_store_once(store, monkeypatch, make):
    """The store hook hands out a migrated store: the operator must not migrate it again."""
    calls = []
    real = PortfolioStore.migrate

    def counting(self, *args, **kwargs):
        calls.append(self.url)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PortfolioStore, "migrate", counting)
    op = make()
    if isinstance(op, EnsembleForecastOperator):
        run(SSAForecastOperator(task_id="ssa", store_conn_id="desk_store", symbols=["AAPL"], device="cpu",
                                history=200, origins=3))
        calls.clear()
    run(op)
    assert len(calls) == 1


def test_the_device_comes_from_the_provider_config(store, monkeypatch):
    """``device=None`` reads ``[portfolio] device`` in the operator and passes it to the job."""
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEVICE", "cuda")
    op = SSAForecastOperator(task_id="ssa", store_conn_id="desk_store", symbols=SYMBOLS, history=200, origins=3)
    with pytest.raises(DeviceUnavailableError, match="device='cuda'"):
        op.execute({"run_id": "r"})
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEVICE", "cpu")
    assert run(op)["device"] == "cpu"
