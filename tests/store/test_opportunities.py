"""Schema 6 on SQLite and PostgreSQL: a v5 store migrates with its data kept; a discovery run's ranking saved in one
transaction, replaced whole by a re-run of its run id, read back as the newest run at or before an instant, by rank
and bounded; bad rankings refused before anything is written."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, inspect, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store.opportunities import OPPORTUNITY_COLUMNS
from tests.store.helpers import make_bars

T0 = datetime(2024, 6, 4, 10, 30, tzinfo=timezone.utc)
CONTRACT = ["run_id", "ts", "rank", "symbol", "score", "regime", "components", "reasons"]


def ranking(symbols=("MSFT", "AAPL", "BTC/USD"), *, scores=None, **columns) -> pd.DataFrame:
    scores = scores or [1.5 - i for i in range(len(symbols))]
    frame = pd.DataFrame({
        "rank": list(range(1, len(symbols) + 1)), "symbol": list(symbols), "score": scores,
        "regime": ["calm_up"] * len(symbols), "regime_probability": [0.9] * len(symbols),
        "components": [{"trend": s / 2, "momentum_12_1": s / 2} for s in scores],
        "reasons": [[f"trend t-stat +{i + 1}.0: {s / 2:+.2f}"] for i, s in enumerate(scores)],
        "features": [{"trend_tstat": float(i + 1), "momentum_3m": np.nan, "bars": 252} for i in range(len(symbols))],
    })
    for name, values in columns.items():
        frame[name] = values
    return frame


def _count(store: PortfolioStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.opportunities)).scalar()


# -- the migration --------------------------------------------------------------------------------------------
def test_a_v5_store_migrates_to_v6_with_its_data_kept(store, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m.version <= 5])
    assert store.migrate() == 5
    store.upsert_bars(make_bars(["AAPL"], 3))
    # before migration 6: reads are empty (with the contract's columns), writes refused naming the version
    empty = store.latest_opportunities()
    assert empty.empty and list(empty.columns[:8]) == CONTRACT
    with pytest.raises(StoreError, match=r"no opportunities table \(schema version 5\); call migrate\(\) first"):
        store.save_opportunities(ranking(), run_id="r1", ts=T0)
    monkeypatch.undo()
    assert store.migrate() == 6 == schema.latest_version()
    assert store.count_bars() == 3
    with store.engine.connect() as conn:
        insp = inspect(conn)
        key = insp.get_pk_constraint("opportunities")["constrained_columns"]
        indexes = {i["name"]: i["column_names"] for i in insp.get_indexes("opportunities")}
        described = conn.execute(select(schema.schema_version.c.description)
                                 .where(schema.schema_version.c.version == 6)).scalars().all()
    assert key == ["run_id", "symbol"] and indexes["ix_opportunities_ts"] == ["ts"]
    assert described == ["create opportunities"]
    assert store.save_opportunities(ranking(), run_id="r1", ts=T0) == 3


# -- writes and reads -----------------------------------------------------------------------------------------
def test_a_ranking_round_trips_by_rank_with_its_json(migrated):
    frame = ranking().iloc[[2, 0, 1]]  # any row order: read back by rank
    assert migrated.save_opportunities(frame, run_id="scheduled__1", ts=T0, dag_id="portfolio_discovery") == 3
    got = migrated.latest_opportunities()
    assert list(got.columns) == list(OPPORTUNITY_COLUMNS) and list(got.columns[:8]) == CONTRACT
    assert got["symbol"].tolist() == ["MSFT", "AAPL", "BTC/USD"] and got["rank"].tolist() == [1, 2, 3]
    assert got["score"].tolist() == [1.5, 0.5, -0.5]
    assert got["components"][0] == {"momentum_12_1": 0.75, "trend": 0.75}
    assert got["reasons"][2] == ["trend t-stat +3.0: -0.25"]
    assert got["features"][1] == {"bars": 252, "momentum_3m": None, "trend_tstat": 2.0}  # NaN stored as null
    assert got["regime"].tolist() == ["calm_up"] * 3 and got["regime_probability"].tolist() == [0.9] * 3
    assert (got["ts"] == pd.Timestamp(T0)).all() and str(got["ts"].dtype) == "datetime64[ns, UTC]"
    assert got["dag_id"].tolist() == ["portfolio_discovery"] * 3 and set(got["run_id"]) == {"scheduled__1"}
    with migrated.engine.connect() as conn:
        raw = conn.execute(select(schema.opportunities.c.components, schema.opportunities.c.reasons)
                           .where(schema.opportunities.c.symbol == "AAPL")).one()
    assert json.loads(raw.components) == {"momentum_12_1": 0.25, "trend": 0.25}  # plain JSON text in the table
    assert migrated.latest_opportunities(limit=2)["symbol"].tolist() == ["MSFT", "AAPL"]


def test_a_rerun_of_a_run_id_replaces_its_rows_whole(migrated):
    migrated.save_opportunities(ranking(), run_id="r1", ts=T0)
    again = ranking(("NVDA", "AAPL"), scores=[2.0, 1.0])
    assert migrated.save_opportunities(again, run_id="r1", ts=T0) == 2
    got = migrated.latest_opportunities()
    assert got["symbol"].tolist() == ["NVDA", "AAPL"] and _count(migrated) == 2  # MSFT and BTC/USD gone
    assert migrated.save_opportunities(again, run_id="r1", ts=T0) == 2 and _count(migrated) == 2


def test_latest_is_the_newest_run_at_or_before_an_instant(migrated):
    migrated.save_opportunities(ranking(("AAPL",)), run_id="monday", ts=T0)
    migrated.save_opportunities(ranking(("MSFT", "NVDA")), run_id="tuesday", ts=T0 + timedelta(days=1))
    assert migrated.latest_opportunities()["run_id"].unique().tolist() == ["tuesday"]
    assert migrated.latest_opportunities(until=T0 + timedelta(hours=23))["symbol"].tolist() == ["AAPL"]
    assert migrated.latest_opportunities(until=T0)["run_id"].unique().tolist() == ["monday"]
    assert migrated.latest_opportunities(until=T0 - timedelta(seconds=1)).empty
    assert migrated.latest_opportunities(run_id="monday")["symbol"].tolist() == ["AAPL"]
    assert migrated.latest_opportunities(run_id="friday").empty
    # two runs at one instant: the one written last is the latest
    migrated.save_opportunities(ranking(("SPY",)), run_id="tuesday_again", ts=T0 + timedelta(days=1))
    assert migrated.latest_opportunities()["run_id"].unique().tolist() == ["tuesday_again"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns=["reasons"]), r"lacks column\(s\) \['reasons'\]"),
    (lambda f: f.iloc[0:0], "the ranking has no rows"),
    (lambda f: f.assign(rank=[1, 1, 2]), r"ranks must be 1\.\.3, each once"),
    (lambda f: f.assign(rank=[0, 1, 2]), r"ranking row 0 \(MSFT\): rank must be a whole number >= 1, got 0"),
    (lambda f: f.assign(score=[1.0, float("nan"), 0.0]), r"ranking row 1 \(AAPL\): score must be a finite number"),
    (lambda f: f.assign(symbol=["MSFT", "msft", "AAPL"]), "symbols must be distinct tickers written canonically"),
    (lambda f: f.assign(symbol=["MSFT", "MSFT", "AAPL"]), "symbols must be distinct tickers"),
    (lambda f: f.assign(regime=["calm_up", "", "calm_up"]), r"ranking row 1 \(AAPL\): regime must be non-empty"),
    (lambda f: f.assign(regime_probability=[0.5, 1.5, 0.5]), r"regime_probability must be a number in \[0, 1\]"),
    (lambda f: f.assign(components=[{"trend": 1.0}, {"trend": math.inf}, {}]),
     r"ranking row 1 \(AAPL\): components must be a dict of name -> finite number"),
    (lambda f: f.assign(reasons=[["ok"], "not a list", ["ok"]]), r"reasons must be a list of strings"),
    (lambda f: f.assign(features=[{}, {"when": datetime.now()}, {}]), r"features must be plain JSON"),
    ("not a frame", "a ranking is a pandas DataFrame, got str"),
])
def test_a_bad_ranking_is_refused_and_nothing_changes(migrated, change, message):
    migrated.save_opportunities(ranking(("SPY",)), run_id="r1", ts=T0)
    frame = change if isinstance(change, str) else change(ranking())
    with pytest.raises(InvalidInputError, match=message):
        migrated.save_opportunities(frame, run_id="r1", ts=T0)
    assert migrated.latest_opportunities()["symbol"].tolist() == ["SPY"]  # the run's earlier rows untouched


def test_bad_keys_instants_and_limits_are_refused(migrated):
    with pytest.raises(InvalidInputError, match="run_id must be non-empty text"):
        migrated.save_opportunities(ranking(), run_id="", ts=T0)
    with pytest.raises(InvalidInputError, match="ts"):
        migrated.save_opportunities(ranking(), run_id="r1", ts=datetime(2024, 6, 4))  # naive
    with pytest.raises(InvalidInputError, match="limit must be a whole number from 1"):
        migrated.latest_opportunities(limit=0)
    assert _count(migrated) == 0
