"""SignalValidationOperator and TransactionCostsOperator in-process, on a real SQLite store: small JSON XComs, the
studies stored under the run, bad input refused before the store is opened; the example trader's 30-minute
decisions validated on the synthetic market's bars; the measured costs written to Variable
``portfolio.simulated_costs`` only with ``apply=True``; AutoTraderOperator using that Variable only where its own
costs are not given."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.operators import trading as trading_module
from airflow_provider_portfolio.operators.costs import TransactionCostsOperator
from airflow_provider_portfolio.operators.trading import SIMULATED_COSTS_VARIABLE, AutoTraderOperator, simulated_costs
from airflow_provider_portfolio.operators.validation import SignalValidationOperator
from airflow_provider_portfolio.store import PortfolioStore
from tests.desk.test_validation import load_bars, load_decisions, load_forecasts
from tests.trading.test_costs import HISTORY, record

UTC = timezone.utc
REPO = Path(__file__).resolve().parents[2]
COSTS_ENV = f"AIRFLOW_VAR_{SIMULATED_COSTS_VARIABLE.upper()}"
#: Tuesday 11 June 2024, 02:05 New York: the bars of the validation fixtures have all closed.
VALIDATION_AT = datetime(2024, 6, 11, 6, 5, tzinfo=UTC)
#: The 1st of July, 04:15 New York: the 90 days before it hold the whole fill history.
COSTS_AT = datetime(2024, 7, 1, 8, 15, tzinfo=UTC)


def context(dag_id: str, at: datetime, run_id: str = "scheduled__1") -> dict:
    return {"dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=at), "data_interval_end": at,
            "run_id": run_id}


@pytest.fixture
def db(tmp_path, monkeypatch, add_connection) -> Path:
    """A migrated SQLite store behind ``desk_store``; no simulated-costs Variable."""
    monkeypatch.delenv("AIRFLOW__PORTFOLIO__STORE_CONN_ID", raising=False)
    monkeypatch.delenv(COSTS_ENV, raising=False)
    path = tmp_path / "desk.db"
    add_connection("desk_store", "sqlite", host=str(path))
    PortfolioStore.for_sqlite_file(path).migrate()
    return path


@pytest.fixture
def variable_writes(monkeypatch) -> list[tuple[str, object]]:
    """``Variable.set`` outside a task runner has no API server to write to: record each write and make it visible
    to ``Variable.get`` (through the environment, as a deployment's Variable would be)."""
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


# -- SignalValidationOperator ---------------------------------------------------------------------------------
def test_signal_validation_stores_rows_and_a_study_and_returns_a_small_report(db):
    store = PortfolioStore.for_sqlite_file(db)
    load_bars(store)
    load_forecasts(store)
    load_decisions(store)
    store.dispose()
    op = SignalValidationOperator(task_id="signal_validation", store_conn_id="desk_store")
    report = op.execute(context("portfolio_signal_validation", VALIDATION_AT))
    assert json.loads(json.dumps(report)) == report and len(json.dumps(report)) < 4000
    assert (report["status"], report["validated"], report["ts"]) == (
        "ok", {"forecast": 7, "signal": 5}, "2024-06-11T06:05:00+00:00")
    assert report["sources"]["forecast:ssa"]["hit_rate"] == 0.75
    assert report["study_id"] == "portfolio_signal_validation/scheduled__1"
    assert rows(db, "SELECT COUNT(*), MIN(run_id), MAX(run_id) FROM signal_validations") == [
        (12, "scheduled__1", "scheduled__1")]
    assert rows(db, "SELECT kind, study_id, dag_id, run_id, status FROM studies") == [
        ("signal_validation", "portfolio_signal_validation/scheduled__1", "portfolio_signal_validation",
         "scheduled__1", "ok")]
    # the next day's run validates nothing twice
    again = op.execute(context("portfolio_signal_validation", VALIDATION_AT + timedelta(days=1), "scheduled__2"))
    assert again["validated"] == {"forecast": 0, "signal": 0}
    assert rows(db, "SELECT COUNT(*) FROM signal_validations") == [(12,)]


def test_the_trader_s_30_minute_decisions_are_validated_on_the_synthetic_market(db, monkeypatch):
    """The example trader's cycle on 30-minute bars (fetched, never stored), then the 30-minute validation task with
    its default sources (no data connection: the synthetic market); expected returns from the market's own bars."""
    import math

    import pandas as pd

    from airflow_provider_portfolio.market.synthetic import SyntheticMarket

    monkeypatch.delenv("AIRFLOW_VAR_PORTFOLIO.KILL_SWITCH", raising=False)
    symbols = ["AAPL", "BTC/USD"]
    # 15:00 New York (19:00 UTC): the cycle decides each symbol's 18:30 UTC bar, the last one closed
    AutoTraderOperator(task_id="auto_trader", symbols=symbols, timeframe="30Min", sources="synthetic",
                       broker_conn_id="simulated", store_conn_id="desk_store").execute(
        context("portfolio_auto_trader", datetime(2024, 6, 4, 19, 0, tzinfo=UTC)))
    assert rows(db, "SELECT symbol, bar_ts FROM trading_decisions ORDER BY symbol") == [
        (s, pd.Timestamp("2024-06-04 18:30", tz="UTC").value // 1000) for s in ["AAPL", "BTC/USD"]]
    assert rows(db, "SELECT COUNT(*) FROM bars WHERE timeframe = '30Min'") == [(0,)]
    op = SignalValidationOperator(task_id="trader_signal_validation", timeframe="30Min", kinds=["signal"],
                                  store_conn_id="desk_store")
    # 19:10 UTC: the 19:00 bar that follows is still forming: nothing validated, nothing missing
    early = op.execute(context("portfolio_signal_validation", datetime(2024, 6, 4, 19, 10, tzinfo=UTC)))
    assert (early["validated"], early["pending"], early["missing"]) == ({"signal": 0}, {"signal": 2}, {"signal": 0})
    report = op.execute(context("portfolio_signal_validation", datetime(2024, 6, 4, 19, 45, tzinfo=UTC),
                                "scheduled__2"))
    assert (report["status"], report["validated"], report["pending"], report["missing"]) == (
        "ok", {"signal": 2}, {"signal": 0}, {"signal": 0})
    assert report["fetched"] == {"AAPL": "synthetic", "BTC/USD": "synthetic"} and report["fetch_failures"] == []
    assert report["sources"]["signal:portfolio_auto_trader"]["n"] == 2
    # the outcome: the synthetic market's 19:00 close against its 18:30 close, read here from the market itself
    bars = SyntheticMarket(seed=0).get_bars(symbols, datetime(2024, 6, 4).date(), datetime(2024, 6, 4).date(),
                                            "30Min").set_index(["symbol", "ts"])["close"]
    at, after = pd.Timestamp("2024-06-04 18:30", tz="UTC"), pd.Timestamp("2024-06-04 19:00", tz="UTC")
    stored = rows(db, "SELECT symbol, target_ts, actual, score, hit FROM signal_validations ORDER BY symbol")
    assert [(s, t) for s, t, *_ in stored] == [(s, after.value // 1000) for s in symbols]
    for symbol, _, actual, score, hit in stored:
        expected = math.log(bars[(symbol, after)]) - math.log(bars[(symbol, at)])
        assert actual == pytest.approx(expected, abs=1e-12)
        assert hit == (None if score == 0 or expected == 0 else int((score > 0) == (expected > 0)))
    assert rows(db, "SELECT COUNT(*) FROM bars WHERE timeframe = '30Min'") == [(0,)]


def test_named_sources_that_do_not_exist_fail_before_the_store_is_opened(tmp_path, add_connection):
    path = tmp_path / "never.db"
    add_connection("new_store", "sqlite", host=str(path))
    op = SignalValidationOperator(task_id="v", timeframe="30Min", sources='["no_such_vendor"]',
                                  store_conn_id="new_store")
    with pytest.raises(InvalidInputError, match="'no_such_vendor' is neither 'synthetic' nor an existing connection"):
        op.execute(context("portfolio_signal_validation", VALIDATION_AT))
    assert not path.exists()


def test_signal_validation_refuses_bad_input_before_the_store_is_opened(tmp_path, add_connection):
    path = tmp_path / "never.db"
    add_connection("new_store", "sqlite", host=str(path))
    op = SignalValidationOperator(task_id="v", symbols='["AAPL", "not a ticker"]', store_conn_id="new_store")
    with pytest.raises(InvalidInputError, match="not a ticker"):
        op.execute(context("portfolio_signal_validation", VALIDATION_AT))
    with pytest.raises(InvalidInputError, match="unknown market calendar"):
        SignalValidationOperator(task_id="v", exchange="NOPE", store_conn_id="new_store").execute(
            context("portfolio_signal_validation", VALIDATION_AT))
    assert not path.exists()


def test_template_fields():
    assert set(SignalValidationOperator.template_fields) == {"symbols", "timeframe", "exchange", "store_conn_id",
                                                             "sources"}
    assert set(TransactionCostsOperator.template_fields) == {"account", "store_conn_id"}


# -- TransactionCostsOperator ---------------------------------------------------------------------------------
def costs_op(**kwargs) -> TransactionCostsOperator:
    return TransactionCostsOperator(**{"task_id": "transaction_costs", "store_conn_id": "desk_store",
                                       "min_fills": 3, **kwargs})


@pytest.fixture
def fills(db) -> Path:
    store = PortfolioStore.for_sqlite_file(db)
    record(store, start=COSTS_AT - timedelta(days=30))
    store.dispose()
    return db


def test_costs_are_reported_and_nothing_is_applied_without_the_flag(fills, variable_writes):
    report = costs_op().execute(context("portfolio_transaction_costs", COSTS_AT))
    assert json.loads(json.dumps(report)) == report and len(json.dumps(report)) < 4000
    assert (report["status"], report["fills"], report["applied"], report["symbols"]) == ("ok", len(HISTORY), False, 3)
    assert report["since"] == "2024-04-02T08:15:00+00:00"  # 90 days before the run
    assert set(report["recommended"]) == {"equity"} and report["recommended"]["equity"]["commission_bps"] == 5.0
    assert variable_writes == []
    assert rows(fills, "SELECT applied, applied_at FROM studies") == [(0, None)]


def test_apply_writes_the_recommendation_to_the_variable_and_marks_the_study(fills, variable_writes, monkeypatch):
    monkeypatch.setenv(COSTS_ENV, '{"crypto": {"slippage_bps": 12}, '
                                  '"equity": {"slippage_bps": 1, "commission_bps": 9}}')
    report = costs_op(apply=True).execute(context("portfolio_transaction_costs", COSTS_AT))
    equity = report["recommended"]["equity"]
    # the measured equity costs replace the Variable's; crypto (too few fills) keeps what it held
    written = {"crypto": {"slippage_bps": 12.0}, "equity": equity}
    assert report["applied"] is True and report["simulated_costs"] == written
    assert variable_writes == [(SIMULATED_COSTS_VARIABLE, json.dumps(written, sort_keys=True))]
    [(applied, applied_at)] = rows(fills, "SELECT applied, applied_at FROM studies")
    assert applied == 1 and applied_at is not None
    # the trader now uses them where its own costs are not given
    assert simulated_costs(["AAPL"], None, None) == {"slippage_bps": equity["slippage_bps"],
                                                      "commission_bps": equity["commission_bps"]}


def test_apply_without_a_recommendation_writes_nothing(fills, variable_writes):
    report = costs_op(apply=True, min_fills=50).execute(context("portfolio_transaction_costs", COSTS_AT))
    assert (report["status"], report["recommended"], report["applied"]) == ("insufficient_data", None, False)
    assert variable_writes == []


def test_a_malformed_variable_fails_apply_before_anything_is_measured(fills, variable_writes, monkeypatch):
    monkeypatch.setenv(COSTS_ENV, '{"equity": {"slippage_bps": "high"}}')
    with pytest.raises(InvalidInputError, match="portfolio.simulated_costs: equity.slippage_bps must be a number"):
        costs_op(apply=True).execute(context("portfolio_transaction_costs", COSTS_AT))
    assert variable_writes == [] and rows(fills, "SELECT COUNT(*) FROM studies") == [(0,)]
    with pytest.raises(InvalidInputError, match="lookback_days must be a number of days > 0"):
        costs_op(lookback_days=0).execute(context("portfolio_transaction_costs", COSTS_AT))


# -- AutoTraderOperator and the Variable ----------------------------------------------------------------------
def test_simulated_costs_come_from_the_variable_only_where_not_given(monkeypatch):
    monkeypatch.delenv(COSTS_ENV, raising=False)
    assert simulated_costs(["AAPL"], None, None) == {"slippage_bps": 5.0, "commission_bps": 0.0}
    monkeypatch.setenv(COSTS_ENV, '{"equity": {"slippage_bps": 3, "commission_bps": 1}, '
                                  '"crypto": {"slippage_bps": 12}}')
    assert simulated_costs(["AAPL"], None, None) == {"slippage_bps": 3.0, "commission_bps": 1.0}
    assert simulated_costs(["AAPL", "BTC/USD"], None, None) == {"slippage_bps": 12.0, "commission_bps": 1.0}
    assert simulated_costs(["AAPL"], 2.0, None) == {"slippage_bps": 2.0, "commission_bps": 1.0}
    assert simulated_costs(["AAPL"], 2.0, 0.0) == {"slippage_bps": 2.0, "commission_bps": 0.0}
    monkeypatch.setenv(COSTS_ENV, "not json")
    assert simulated_costs(["AAPL"], 2.0, 0.0) == {"slippage_bps": 2.0, "commission_bps": 0.0}  # not read
    with pytest.raises(InvalidInputError, match="portfolio.simulated_costs must be a JSON object"):
        simulated_costs(["AAPL"], None, 0.0)


@pytest.mark.parametrize(("given", "expected"), [
    ({}, {"slippage_bps": 12.0, "commission_bps": 1.0}),
    ({"slippage_bps": 5.0, "commission_bps": 0.0}, {"slippage_bps": 5.0, "commission_bps": 0.0}),
])
def test_the_auto_trader_uses_the_variable_only_when_its_costs_are_not_given(db, monkeypatch, given, expected):
    monkeypatch.setenv(COSTS_ENV, '{"equity": {"slippage_bps": 3, "commission_bps": 1}, '
                                  '"crypto": {"slippage_bps": 12}}')
    monkeypatch.delenv("AIRFLOW_VAR_PORTFOLIO.KILL_SWITCH", raising=False)
    seen: list[dict] = []
    real = trading_module.resolve_broker

    def spy(*args, **kwargs):
        seen.append(dict(kwargs["simulated"]))
        broker = real(*args, **kwargs)
        seen.append({"slippage_bps": broker.slippage_bps, "commission_bps": broker.commission_bps})
        return broker

    monkeypatch.setattr(trading_module, "resolve_broker", spy)
    op = AutoTraderOperator(task_id="auto_trader", symbols=["AAPL", "BTC/USD"], sources="synthetic",
                            broker_conn_id="simulated", store_conn_id="desk_store", **given)
    op.execute(context("trader", datetime(2024, 6, 4, 19, 0, tzinfo=UTC)))
    assert seen[1] == expected
    assert {k: seen[0][k] for k in expected} == expected


# -- the example DAGs and their Airflow-only twins ------------------------------------------------------------
def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"dag_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, f"{name}_dag")


@pytest.mark.parametrize(("name", "cron", "task_ids", "operator"), [
    ("portfolio_signal_validation", "5 2 * * *", ["signal_validation", "trader_signal_validation"],
     SignalValidationOperator),
    ("portfolio_transaction_costs", "15 4 1 * *", ["transaction_costs"], TransactionCostsOperator),
])
def test_the_example_dags_and_their_airflow_only_twins(monkeypatch, name, cron, task_ids, operator):
    from airflow_provider_portfolio.notifications import PortfolioNotifier

    monkeypatch.syspath_prepend(str(REPO / "bench" / "airflow_only_dags"))  # the twins import their _desk helper
    example = _load(REPO / "example_dags" / f"{name}.py", name)
    twin = _load(REPO / "bench" / "airflow_only_dags" / f"{name}.py", name)
    sys.modules.pop("_desk", None)
    for dag in (example, twin):
        assert (dag.dag_id, dag.catchup, dag.max_active_runs) == (name, False, 1)
        timetable = dag.timetable  # an SDK timetable (``expression``) or, on older Airflow, a core one (``summary``)
        assert (getattr(timetable, "expression", None) or timetable.summary) == cron
        assert str(getattr(timetable, "timezone", None) or timetable._timezone) == "America/New_York"
        assert sorted((t.task_id, t.pool) for t in dag.tasks) == [(t, "database_pool") for t in task_ids]
    assert example.tags == twin.tags
    for task_id in task_ids:
        task = example.get_task(task_id)
        assert isinstance(task, operator)
        callback = task.on_failure_callback
        assert isinstance(callback[0] if isinstance(callback, list) else callback, PortfolioNotifier)
    if operator is TransactionCostsOperator:
        assert task.apply is False  # nothing is applied unless the user says so
    else:  # the daily desk's bars, and the example trader's 30-minute decisions on bars from the sources
        daily, trader = example.get_task("signal_validation"), example.get_task("trader_signal_validation")
        assert (daily.timeframe, tuple(daily.kinds), daily.sources) == ("1Day", ("forecast", "signal"), None)
        assert (trader.timeframe, list(trader.kinds), trader.sources) == ("30Min", ["signal"], None)
