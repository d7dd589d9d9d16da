"""OpenLineage facets of the ETL, forecasting and trading operators (with the OpenLineage provider installed)."""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

pytest.importorskip("airflow.providers.openlineage")

from openlineage.client.serde import Serde  # noqa: E402

from airflow_provider_portfolio import lineage  # noqa: E402
from airflow_provider_portfolio.hooks.market_data import data_sources  # noqa: E402
from airflow_provider_portfolio.lineage import source_vendors, store_namespace  # noqa: E402
from airflow_provider_portfolio.operators.etl import PortfolioETLOperator  # noqa: E402
from airflow_provider_portfolio.operators.forecasting import (  # noqa: E402
    EnsembleForecastOperator,
    GarchForecastOperator,
    SarimaxForecastOperator,
    SSAForecastOperator,
)
from airflow_provider_portfolio.operators.trading import AutoTraderOperator  # noqa: E402

PASSWORD = "s3cr3t-Pa55"
AT = pd.Timestamp("2024-06-04 15:00", tz="America/New_York").to_pydatetime()


def datasets(items) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in items]


@pytest.fixture
def sqlite_store(tmp_path, add_connection):
    add_connection("desk_store", "sqlite", host=str(tmp_path / "desk.db"))
    return "desk_store"


@pytest.fixture
def pg_store(monkeypatch):
    """A PostgreSQL store connection (never connected to: lineage only reads its URL)."""
    monkeypatch.setenv("AIRFLOW_CONN_PG_STORE", json.dumps({
        "conn_type": "postgres", "login": "desk", "password": PASSWORD, "host": "db.internal", "port": 6543,
        "schema": "desk"}))
    return "pg_store"


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:////var/lib/airflow/portfolio/portfolio.db", ("sqlite://portfolio.db", "")),
    ("sqlite:///relative/desk.db", ("sqlite://desk.db", "")),
    ("sqlite://", ("sqlite://memory", "")),
    ("sqlite:///file:mem1?mode=memory&cache=shared&uri=true", ("sqlite://mem1", "")),
    (f"postgresql+psycopg://desk:{PASSWORD}@db.internal:6543/desk", ("postgres://db.internal:6543", "desk.public.")),
    (f"postgres://desk:{PASSWORD}@db.internal/prod", ("postgres://db.internal:5432", "prod.public.")),
])
def test_store_namespaces_follow_the_openlineage_conventions_without_credentials(url, expected):
    assert store_namespace(url) == expected


def test_a_store_that_is_neither_sqlite_nor_postgres_is_refused():
    with pytest.raises(ValueError, match="mysql"):
        store_namespace("mysql://u:p@h/db")


def test_the_etl_reads_the_vendors_bars_and_writes_the_store_bars(sqlite_store):
    op = PortfolioETLOperator(task_id="etl", symbols=["AAPL", "BTC/USD"], store_conn_id=sqlite_store,
                              history_sessions=3)
    ts = pd.Timestamp("2024-06-08 12:00", tz="UTC").to_pydatetime()
    op.execute({"dag_run": SimpleNamespace(run_after=ts), "data_interval_end": ts})
    facets = op.get_openlineage_facets_on_complete(None)
    assert datasets(facets.inputs) == [("portfolio-vendor://synthetic", "bars/1Day")]
    assert datasets(facets.outputs) == [("sqlite://desk.db", "bars")]
    columns = [(f.name, f.type) for f in facets.outputs[0].facets["schema"].fields]
    assert columns[:3] == [("symbol", "VARCHAR(32)"), ("timeframe", "VARCHAR(16)"), ("ts", "BIGINT")]
    assert {"open", "high", "low", "close", "volume", "source"} <= {name for name, _ in columns}


def test_vendors_are_the_sources_connection_types_in_failover_order(add_connection):
    add_connection("fh_backup", "finnhub", password="k")
    add_connection("av_main", "alphavantage", password="k")
    sources = data_sources(["av_main", "fh_backup", "synthetic"], exchange="XNYS")
    assert source_vendors(sources) == ["alphavantage", "finnhub", "synthetic"]
    assert source_vendors(["fh_backup", "synthetic", "no_such_connection"]) == [
        "finnhub", "synthetic", "no_such_connection"]
    assert lineage.vendor_dataset("finnhub", "1Hour").namespace == "portfolio-vendor://finnhub"


@pytest.mark.parametrize("operator", [SSAForecastOperator, GarchForecastOperator, SarimaxForecastOperator])
def test_a_forecasting_job_reads_bars_and_writes_forecasts_and_evaluations(operator, pg_store):
    facets = operator(task_id="f", store_conn_id=pg_store).get_openlineage_facets_on_complete(None)
    ns = "postgres://db.internal:6543"
    assert datasets(facets.inputs) == [(ns, "desk.public.bars")]
    assert datasets(facets.outputs) == [(ns, "desk.public.forecasts"), (ns, "desk.public.model_evaluations")]
    text = " ".join(Serde.to_json(d) for d in facets.inputs + facets.outputs)
    assert PASSWORD not in text and "desk@" not in text
    # the schema in PostgreSQL's own types
    assert ("ts", "TIMESTAMP WITH TIME ZONE") in [(f.name, f.type) for f in facets.inputs[0].facets["schema"].fields]


def test_the_ensemble_reads_the_models_forecasts(sqlite_store):
    facets = EnsembleForecastOperator(task_id="e", store_conn_id=sqlite_store).get_openlineage_facets_on_complete(None)
    assert datasets(facets.inputs) == [("sqlite://desk.db", "forecasts"), ("sqlite://desk.db", "model_evaluations")]
    assert datasets(facets.outputs) == [("sqlite://desk.db", "forecasts"), ("sqlite://desk.db", "model_evaluations")]


def test_the_trader_reads_bars_and_forecasts_and_writes_decisions_orders_fills_equity(sqlite_store):
    op = AutoTraderOperator(task_id="t", symbols=["AAPL", "SPY"], sources="synthetic", broker_conn_id="simulated",
                            store_conn_id=sqlite_store)
    op.execute({"dag_run": SimpleNamespace(dag_id="d", run_id="r", run_after=AT), "data_interval_end": AT,
                "run_id": "r"})
    facets = op.get_openlineage_facets_on_complete(None)
    store = "sqlite://desk.db"
    assert datasets(facets.inputs) == [("portfolio-vendor://synthetic", "bars/1Day"), (store, "forecasts"),
                                       (store, "model_evaluations")]
    assert datasets(facets.outputs) == [(store, "trading_decisions"), (store, "orders"), (store, "fills"),
                                        (store, "equity_curve")]
    without = AutoTraderOperator(task_id="t", symbols=["AAPL"], store_conn_id=sqlite_store, forecast_model=None,
                                 timeframe="1Hour")
    facets = without.get_openlineage_facets_on_complete(None)
    assert datasets(facets.inputs) == []  # never ran here: no vendor known, no forecasts used
    assert [d.name for d in facets.outputs] == ["trading_decisions", "orders", "fills", "equity_curve"]


def test_without_the_openlineage_provider_there_is_no_lineage_and_no_noise(sqlite_store, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)  # import fails
    with caplog.at_level(logging.DEBUG):
        assert EnsembleForecastOperator(task_id="e", store_conn_id=sqlite_store) \
            .get_openlineage_facets_on_complete(None) is None
        assert lineage.store_dataset("sqlite:///x.db", "bars") is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
