"""The tuning operators in-process on a real SQLite store: the mapped sweep's XCom is small JSON, pick stores the
study with every point and its recommendation, apply writes Variable ``portfolio.trading_settings`` only with the
flag, AutoTraderOperator then uses it, a malformed Variable fails clearly; the walk-forward plan, split and pick."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_portfolio.desk.tuning import recommend
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.operators.trading import TRADING_SETTINGS_VARIABLE, AutoTraderOperator
from airflow_provider_portfolio.operators.tuning import (
    ApplyTradingSettingsOperator,
    ThresholdGridOperator,
    ThresholdPickOperator,
    ThresholdSweepOperator,
    WalkForwardPickOperator,
    WalkForwardPlanOperator,
    WalkForwardSplitOperator,
)
from airflow_provider_portfolio.store import PortfolioStore

UTC = timezone.utc
SETTINGS_ENV = f"AIRFLOW_VAR_{TRADING_SETTINGS_VARIABLE.upper()}"
#: Monday 1 July 2024, 04:00 New York.
AT = datetime(2024, 7, 1, 8, 0, tzinfo=UTC)
SYMBOLS = ["AAPL", "MSFT"]
#: The trader's arguments the tasks share: a loose setting that trades on the synthetic market.
TRADER = {"symbols": SYMBOLS, "sources": "synthetic", "store_conn_id": "desk_store", "forecast_model": None,
          "weights": {"technical": 0.5, "sentiment": 0.5}, "risk_limits": {"min_confidence": 0.1}, "min_score": 0.05}


def context(dag_id: str, run_id: str = "scheduled__1") -> dict:
    return {"dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=AT), "data_interval_end": AT,
            "run_id": run_id}


@pytest.fixture(scope="module")
def bars():
    return SyntheticMarket(seed=5).panel(SYMBOLS, "2023-10-02", "2024-06-28")


@pytest.fixture
def db(tmp_path, monkeypatch, add_connection, bars) -> Path:
    """A migrated SQLite store with daily bars behind ``desk_store``; no trading-settings Variable."""
    monkeypatch.delenv("AIRFLOW__PORTFOLIO__STORE_CONN_ID", raising=False)
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_PORTFOLIO.SIMULATED_COSTS", raising=False)
    path = tmp_path / "desk.db"
    add_connection("desk_store", "sqlite", host=str(path))
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    store.upsert_bars(bars)
    store.dispose()
    return path


@pytest.fixture
def variable_writes(monkeypatch) -> list[tuple[str, object]]:
    """``Variable.set`` has no API server outside a task runner: record each write and make it visible to
    ``Variable.get`` through the environment."""
    from airflow.sdk import Variable

    writes: list[tuple[str, object]] = []

    def fake_set(cls, key, value, description=None, serialize_json=False):
        writes.append((key, value))
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", str(value))

    monkeypatch.setattr(Variable, "set", classmethod(fake_set))
    return writes


def rows(db: Path, sql: str, *params) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(db) as con:
        return con.execute(sql, params).fetchall()


def test_the_sweep_maps_small_json_and_pick_stores_the_study(db):
    chunks = ThresholdGridOperator(task_id="grid", confidence_grid="[0.1, 0.3]", score_grid=[0.05, 0.2], chunk=2,
                                   **TRADER).execute(context("sweep"))
    assert chunks == [[{"min_confidence": 0.1, "min_score": 0.05}, {"min_confidence": 0.1, "min_score": 0.2}],
                      [{"min_confidence": 0.3, "min_score": 0.05}, {"min_confidence": 0.3, "min_score": 0.2}]]
    results = [ThresholdSweepOperator(task_id="sweep", points=chunk, sessions=25, **TRADER).execute(context("sweep"))
               for chunk in chunks]
    first = results[0][0]
    assert set(first) == {"point", "params", "metrics"} and first["point"] == "conf0.100:score0.050"
    assert first["metrics"]["fills"] > 0 and len(json.dumps(results)) < 4_000
    report = ThresholdPickOperator(task_id="pick", results=results, sessions=25, min_trades=1,
                                   **TRADER).execute(context("sweep"))
    assert report["study_id"] == "sweep/scheduled__1" and report["points"] == 4
    stored = rows(db, "SELECT study_id, status, recommended, applied FROM studies WHERE kind='threshold_sweep'")
    assert len(stored) == 1 and stored[0][3] == 0
    assert rows(db, "SELECT COUNT(*) FROM study_points WHERE kind='threshold_sweep'") == [(4,)]
    from airflow_provider_portfolio.desk.tuning import PointResult

    expected = recommend([PointResult.from_dict(r) for chunk in results for r in chunk],
                         current={"min_confidence": 0.1, "min_score": 0.05}, min_trades=1)
    assert (None if stored[0][2] is None else json.loads(stored[0][2])) == expected.params == report["recommended"]
    ThresholdPickOperator(task_id="pick", results=results, sessions=25, min_trades=1, **TRADER).execute(
        context("sweep"))  # a retry: still one study
    assert rows(db, "SELECT COUNT(*) FROM studies") == [(1,)]


def test_the_sweep_refuses_bad_input_clearly(db):
    with pytest.raises(InvalidInputError, match="min_confidence is empty: the grid has no points"):
        ThresholdGridOperator(task_id="grid", confidence_grid="[]", **TRADER).execute(context("sweep"))
    with pytest.raises(InvalidInputError, match="points must be a non-empty list"):
        ThresholdSweepOperator(task_id="sweep", points=[], **TRADER).execute(context("sweep"))
    with pytest.raises(InvalidInputError, match=r"empty history: the store holds no 1Day bars of \['TSLA'\]"):
        ThresholdSweepOperator(task_id="sweep", points=[{"min_confidence": 0.1, "min_score": 0.1}],
                               **{**TRADER, "symbols": ["TSLA"]}).execute(context("sweep"))
    with pytest.raises(InvalidInputError, match="weights must not all be zero"):
        ThresholdGridOperator(task_id="grid", **{**TRADER, "weights": {"technical": 0}}).execute(context("sweep"))


def saved_study(db: Path, kind: str = "threshold_sweep", study_id: str = "sweep/scheduled__1",
                recommended: dict | None = None) -> None:
    store = PortfolioStore.for_sqlite_file(db)
    store.save_study(kind, study_id, ts=AT, params={}, summary={"reason": "test"}, recommended=recommended)
    store.dispose()


def test_apply_writes_the_variable_only_with_the_flag_and_the_trader_uses_it(db, variable_writes):
    saved_study(db, recommended={"min_confidence": 0.35, "min_score": 0.15})
    off = ApplyTradingSettingsOperator(task_id="apply", kind="threshold_sweep", apply="False",
                                       store_conn_id="desk_store").execute(context("sweep"))
    assert off["applied"] is False and variable_writes == []
    assert rows(db, "SELECT applied FROM studies") == [(0,)]
    trader = AutoTraderOperator(task_id="t", symbols=SYMBOLS, risk_limits={"min_confidence": 0.6}, min_score=0.3)
    assert trader.settings().limits.min_confidence == 0.6  # unset Variable: the operator's own

    on = ApplyTradingSettingsOperator(task_id="apply", kind="threshold_sweep", apply=True,
                                      store_conn_id="desk_store").execute(context("sweep"))
    assert on["applied"] is True and [k for k, _ in variable_writes] == [TRADING_SETTINGS_VARIABLE]
    written = json.loads(str(variable_writes[0][1]))
    assert written == {"min_confidence": 0.35, "min_score": 0.15, "source": "threshold_sweep:sweep/scheduled__1"}
    assert rows(db, "SELECT applied FROM studies") == [(1,)]
    settings = trader.settings()
    assert settings.limits.min_confidence == 0.35 and settings.min_score == 0.15
    assert settings.limits.max_position_fraction == 0.10  # what the Variable does not set stays the operator's


def test_apply_without_a_recommendation_writes_nothing(db, variable_writes):
    saved_study(db, recommended=None)
    result = ApplyTradingSettingsOperator(task_id="apply", kind="threshold_sweep", apply=True,
                                          store_conn_id="desk_store").execute(context("sweep"))
    assert result["applied"] is False and variable_writes == []
    with pytest.raises(InvalidInputError, match="apply must be True or False, got 'yes'"):
        ApplyTradingSettingsOperator(task_id="apply", kind="threshold_sweep", apply="yes",
                                     store_conn_id="desk_store").execute(context("sweep"))


def test_a_malformed_variable_fails_clearly_and_nothing_is_written(db, variable_writes, monkeypatch):
    monkeypatch.setenv(SETTINGS_ENV, '{"min_confidence": 1.5}')
    trader = AutoTraderOperator(task_id="t", symbols=SYMBOLS)
    with pytest.raises(InvalidInputError, match=r"portfolio.trading_settings.min_confidence must be a number in "
                                                r"\[0, 1\], got 1.5"):
        trader.settings()
    saved_study(db, recommended={"min_score": 0.15})
    with pytest.raises(InvalidInputError, match="portfolio.trading_settings.min_confidence"):
        ApplyTradingSettingsOperator(task_id="apply", kind="threshold_sweep", apply=True,
                                     store_conn_id="desk_store").execute(context("sweep"))
    assert variable_writes == [] and rows(db, "SELECT applied FROM studies") == [(0,)]
    monkeypatch.setenv(SETTINGS_ENV, "not json")
    with pytest.raises(InvalidInputError, match="portfolio.trading_settings must be a JSON object"):
        trader.settings()


def test_the_walk_forward_plans_maps_splits_and_picks(db):
    space = {"weights": [{"technical": 1.0}, {"sentiment": 1.0}], "min_confidence": [0.1, 0.3]}
    plan = WalkForwardPlanOperator(task_id="plan", space=json.dumps(space), sample="None", sessions=24, train=8,
                                   test=8, **{k: v for k, v in TRADER.items()}).execute(context("opt"))
    assert len(plan) == 2 and {"split", "candidates"} == set(plan[0])
    assert plan[0]["candidates"][0]["name"] == "current"
    assert plan[0]["split"]["test_start"] >= plan[0]["split"]["train_stop"]
    results = [WalkForwardSplitOperator(task_id="split", **kwargs, **TRADER).execute(context("opt"))
               for kwargs in plan]
    n = len(plan[0]["candidates"])
    assert [len(r) for r in results] == [n, n]
    assert {"in_sample", "out_of_sample"} <= set(results[0][0])
    report = WalkForwardPickOperator(task_id="pick", results=results, min_trades=1, **TRADER).execute(context("opt"))
    assert [s["split"] for s in report["splits"]] == [0, 1]
    assert all({"in_sample", "out_of_sample"} <= set(s) for s in report["splits"])
    assert rows(db, "SELECT COUNT(*) FROM study_points WHERE kind='strategy_optimization'") == [(2 * n,)]
    json.dumps(report, allow_nan=False)
    with pytest.raises(InvalidInputError, match="too few cycles for a walk-forward split"):
        WalkForwardPlanOperator(task_id="plan", space=space, sessions=10, train=8, test=8, **TRADER).execute(
            context("opt"))
