"""DiscoveryOperator in-process on a real SQLite store: the example DAG's task green on the embedded defaults after a
daily ETL (12 symbols, BTC/USD included), the ranking stored under the run id and replaced by a retry, bad input
refused before the store is opened, an empty store failing with nothing stored; and AutoTraderOperator taking its
universe from the ranking's top N (intersected with its symbols, falling back to them when there is no ranking, a
clear error without them)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.assets import OPPORTUNITIES
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.operators.discovery import DiscoveryOperator
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.operators.trading import KILL_SWITCH_VARIABLE, AutoTraderOperator
from airflow_provider_portfolio.pools import DATABASE_POOL
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.variables import DEFAULT_TICKERS

REPO = Path(__file__).resolve().parents[2]
# Tuesday 2024-06-04: the daily ETL at 05:15 New York, discovery right after it (its Asset), the trader at 15:00.
ETL_AT = pd.Timestamp("2024-06-04 05:15", tz="America/New_York")
AT = pd.Timestamp("2024-06-04 05:20", tz="America/New_York")
TRADE_AT = pd.Timestamp("2024-06-04 15:00", tz="America/New_York")
RUN_ID = "asset_triggered__2024-06-04T09:20:00+00:00"


def context(run_id: str = RUN_ID, at: pd.Timestamp = AT, dag_id: str = "portfolio_discovery") -> dict:
    run = SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=at.to_pydatetime())
    return {"dag_run": run, "data_interval_end": at.to_pydatetime(), "run_id": run_id}


def rows(db: Path, sql: str, *params) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(db) as con:
        return con.execute(sql, params).fetchall()


@pytest.fixture(autouse=True)
def no_variables(monkeypatch):
    for name in (f"AIRFLOW_VAR_{KILL_SWITCH_VARIABLE.upper()}", "AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS",
                 "AIRFLOW_VAR_PORTFOLIO.SIMULATED_COSTS", "AIRFLOW_VAR_PORTFOLIO.TRADING_SETTINGS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    """The store behind connection ``desk_store`` (not created yet)."""
    path = tmp_path / "desk.db"
    monkeypatch.setenv("AIRFLOW_CONN_DESK_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def daily_etl(store_conn_id: str | None = None) -> None:
    etl = PortfolioETLOperator(task_id="load_daily_bars", symbols=DEFAULT_TICKERS, timeframe="1Day",
                               history_sessions=252, sources="synthetic", store_conn_id=store_conn_id)
    etl.execute({"dag_run": SimpleNamespace(run_after=ETL_AT.to_pydatetime()),
                 "data_interval_end": ETL_AT.to_pydatetime()})


def example_task() -> DiscoveryOperator:
    """The ``discover`` task of example_dags/portfolio_discovery.py, as a copied DAG has it."""
    path = REPO / "example_dags" / "portfolio_discovery.py"
    spec = importlib.util.spec_from_file_location("portfolio_discovery_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.portfolio_discovery_dag
    assert (dag.dag_id, dag.catchup, dag.max_active_runs) == ("portfolio_discovery", False, 1)
    return dag.get_task("discover")


# -- DiscoveryOperator ----------------------------------------------------------------------------------------
def test_the_example_dag_after_a_daily_etl_ranks_the_default_universe_on_the_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))  # no connections: embedded store, synthetic market
    daily_etl()
    task = example_task()
    assert task.pool == DATABASE_POOL and [o.name for o in task.outlets] == [OPPORTUNITIES.name]
    summary = task.execute(context())
    assert json.loads(json.dumps(summary)) == summary and len(json.dumps(summary)) < 8000
    assert summary["scored"] == summary["stored"] == 12 and summary["skipped"] == 0
    assert summary["run_id"] == RUN_ID and summary["calendar"]["end"] == "2024-06-03T00:00:00+00:00"
    assert len(summary["top"]) == 10 and [r["rank"] for r in summary["top"]] == list(range(1, 11))
    assert all(r["reasons"] and r["regime"].split("_")[0] in ("calm", "volatile") for r in summary["top"])
    db = tmp_path / "home" / "portfolio" / "portfolio.db"
    stored = rows(db, "SELECT symbol, rank, dag_id, run_id, reasons FROM opportunities ORDER BY rank")
    assert {r[0] for r in stored} == set(DEFAULT_TICKERS) and [r[1] for r in stored] == list(range(1, 13))
    assert {(r[2], r[3]) for r in stored} == {("portfolio_discovery", RUN_ID)}
    assert [r[0] for r in stored[:10]] == [r["symbol"] for r in summary["top"]]
    assert json.loads(stored[0][4]) == summary["top"][0]["reasons"]
    # a retry of the run replaces its rows: still 12
    assert task.execute(context())["stored"] == 12 and rows(db, "SELECT COUNT(*) FROM opportunities") == [(12,)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weights": '{"trend": 0, "volatility": 0}'}, "weights must not all be zero"),
    ({"weights": "{not json"}, "weights must be a JSON object"),
    ({"weights": {"alpha": 1}}, r"weights: unknown component\(s\) \['alpha'\]"),
    ({"symbols": "AAPL, not a ticker!"}, "not a ticker"),
    ({"timeframe": "1Week"}, "timeframe"),
    ({"exchange": "NOWHERE"}, "NOWHERE"),
])
def test_bad_input_is_refused_before_the_store_is_opened(db, kwargs, message):
    task = DiscoveryOperator(task_id="discover", store_conn_id="desk_store", **kwargs)
    with pytest.raises(InvalidInputError, match=message):
        task.execute(context())
    assert not db.exists()


def test_an_empty_store_fails_naming_it_and_stores_nothing(db):
    with pytest.raises(InvalidInputError, match="the store has no 1Day bars closed by 2024-06-04T09:20:00"):
        DiscoveryOperator(task_id="discover", store_conn_id="desk_store").execute(context())
    assert rows(db, "SELECT COUNT(*) FROM opportunities") == [(0,)]


def test_a_templated_universe_and_weights_as_json(db):
    daily_etl("desk_store")
    task = DiscoveryOperator(task_id="discover", store_conn_id="desk_store", symbols='["AAPL", "MSFT", "SPY", "QQQ"]',
                             weights='{"trend": 1}', top_n=2, n_states=3)
    summary = task.execute(context())
    assert summary["scored"] == 4 and summary["stored"] == 2 and [r["rank"] for r in summary["top"]] == [1, 2]
    ranked = rows(db, "SELECT symbol, components FROM opportunities ORDER BY rank")
    assert len(ranked) == 2 and {s for s, _ in ranked} <= {"AAPL", "MSFT", "SPY", "QQQ"}
    # trend alone decides: every other component's part is 0
    assert all(v == 0 for s, c in ranked for k, v in json.loads(c).items() if k != "trend")


# -- AutoTraderOperator(top_opportunities=N) ------------------------------------------------------------------
RANKED = ["NVDA", "MSFT", "BTC/USD", "AAPL", "SPY"]


def save_ranking(db: Path, symbols=RANKED, *, at: pd.Timestamp = AT, run_id: str = "discovery_1") -> None:
    store = PortfolioStore.for_sqlite_file(db)
    store.migrate()
    n = len(symbols)
    store.save_opportunities(pd.DataFrame({
        "rank": range(1, n + 1), "symbol": symbols, "score": np.linspace(1, -1, n), "regime": "calm_up",
        "components": [{"trend": float(s)} for s in np.linspace(1, -1, n)], "reasons": [["planted"]] * n,
    }), run_id=run_id, ts=at.to_pydatetime(), dag_id="portfolio_discovery")
    store.dispose()


def trader(**kwargs) -> AutoTraderOperator:
    args = {"task_id": "auto_trader", "sources": "synthetic", "broker_conn_id": "simulated",
            "store_conn_id": "desk_store", "risk_limits": {"min_confidence": 0.2, "max_order_notional": 50_000},
            "min_score": 0.02, "weights": {"technical": 0.5, "sentiment": 0.5}}
    args.update(kwargs)
    return AutoTraderOperator(**args)


def traded(db: Path) -> list[str]:
    return sorted(r[0] for r in rows(db, "SELECT DISTINCT symbol FROM trading_decisions"))


def trade_context() -> dict:
    return context(run_id="scheduled__trade", at=TRADE_AT, dag_id="trader")


def test_the_trader_takes_the_rankings_top_n(db):
    save_ranking(db)
    summary = trader(top_opportunities=3).execute(trade_context())
    assert summary["symbols"] == 3 and traded(db) == sorted(RANKED[:3])


def test_the_trader_intersects_the_ranking_with_its_symbols(db):
    save_ranking(db)
    summary = trader(top_opportunities=2, symbols=["AAPL", "SPY", "BTC/USD", "TSLA"]).execute(trade_context())
    assert summary["symbols"] == 2 and traded(db) == ["AAPL", "BTC/USD"]  # ranked 3rd and 4th: the best allowed


def test_the_trader_falls_back_to_its_symbols_without_a_ranking(db, capsys, caplog):
    save_ranking(db, at=TRADE_AT + pd.Timedelta(hours=1))  # made after the cycle's instant: not seen
    with caplog.at_level(logging.WARNING):
        summary = trader(top_opportunities=2, symbols=["AAPL", "MSFT", "SPY"]).execute(trade_context())
    assert summary["symbols"] == 3 and traded(db) == ["AAPL", "MSFT", "SPY"]
    logged = capsys.readouterr().out + caplog.text  # the task logger writes to stdout outside a task runner
    assert "top_opportunities=2: no discovery ranking made at or before 2024-06-04T19:00:00+00:00 in the store; " \
           "trading symbols instead (3)" in logged


def test_without_a_ranking_or_symbols_the_trader_fails_clearly_and_decides_nothing(db):
    with pytest.raises(InvalidInputError, match=r"top_opportunities=3: no discovery ranking made at or before "
                                                r"2024-06-04T19:00:00\+00:00 in the store; run portfolio_discovery "
                                                r"first, or give symbols to fall back to"):
        trader(top_opportunities=3).execute(trade_context())
    assert rows(db, "SELECT COUNT(*) FROM trading_decisions") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM orders") == [(0,)]
    with pytest.raises(InvalidInputError, match="top_opportunities must be a whole number >= 1 or None, got 0"):
        trader(top_opportunities=0, symbols=["AAPL"]).execute(trade_context())
    with pytest.raises(InvalidInputError, match="symbols rendered empty"):
        trader(symbols="None").execute(trade_context())  # without top_opportunities, symbols stay required


def test_discovery_then_the_trader_on_its_top_n(db):
    daily_etl("desk_store")
    summary = DiscoveryOperator(task_id="discover", store_conn_id="desk_store").execute(context())
    best = [r["symbol"] for r in summary["top"][:4]]
    trader(top_opportunities=4).execute(trade_context())
    assert traded(db) == sorted(best)
