"""Schema 5 on SQLite and PostgreSQL: a v4 store migrates with its data kept; studies and their points replaced as a
unit on a re-run, read back newest first and bounded; validation rows appended once per key, read, summarised and
found pending by anti-join; filled orders read with their reference prices."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import func, inspect, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.store.studies import StudyPoint
from airflow_provider_portfolio.trading.accounting import apply_fill
from tests.store.helpers import make_bars

T0 = datetime(2024, 6, 3, 6, 5, tzinfo=timezone.utc)
DAY = pd.Timestamp("2024-06-03", tz="UTC")


def _count(store: PortfolioStore, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def save(store: PortfolioStore, study_id: str = "costs/run1", *, ts: datetime = T0, kind: str = "transaction_costs",
         points=None, **kwargs) -> int:
    args = {"params": {"min_fills": 20}, "summary": {"fills": 3}, "recommended": {"equity": {"slippage_bps": 4.5}},
            "dag_id": "portfolio_transaction_costs", "run_id": "scheduled__1", **kwargs}
    return store.save_study(kind, study_id, ts=ts, points=points, **args)


# -- the migration --------------------------------------------------------------------------------------------
def test_a_v4_store_migrates_to_v5_with_its_data_kept(store, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m.version <= 4])
    assert store.migrate() == 4
    store.upsert_bars(make_bars(["AAPL"], 3))
    store.append_health_report({"kind": "monitoring", "ts": T0.isoformat(), "level": "GREEN",
                                "checks": [{"name": "store_integrity", "level": "GREEN"}]})
    # before migration 5: reads are empty, writes refused naming the version
    assert store.latest_study("transaction_costs") is None and store.studies("transaction_costs") == []
    assert store.validations().empty and store.validation_summary() == [] and store.validated_runs() == []
    with pytest.raises(StoreError, match=r"no studies table \(schema version 4\); call migrate\(\) first"):
        save(store)
    with pytest.raises(StoreError, match=r"no signal_validations table \(schema version 4\)"):
        store.append_validations([_validation()], run_id="r")
    monkeypatch.undo()
    assert store.migrate() == schema.latest_version() >= 5
    assert store.count_bars() == 3 and store.latest_health_report("monitoring").level == "GREEN"
    with store.engine.connect() as conn:
        insp = inspect(conn)
        keys = {t: insp.get_pk_constraint(t)["constrained_columns"]
                for t in ("signal_validations", "studies", "study_points")}
        versions = conn.execute(select(schema.schema_version.c.description)
                                .where(schema.schema_version.c.version == 5)).scalars().all()
    assert keys == {"signal_validations": ["kind", "source", "symbol", "timeframe", "asof", "origin", "step"],
                    "studies": ["kind", "study_id"], "study_points": ["kind", "study_id", "point"]}
    assert versions == ["create signal_validations, studies and study_points"]
    assert save(store, points=[StudyPoint("AAPL", {}, {"fills": 3})]) == 1


# -- studies --------------------------------------------------------------------------------------------------
def test_a_study_and_its_points_round_trip(migrated):
    points = [StudyPoint("symbol:AAPL", {"symbol": "AAPL"}, {"fills": 2, "slippage_bps": 4.25}),
              {"point": "asset_class:equity", "params": {"asset_class": "equity"}, "metrics": {"fills": 2}}]
    assert save(migrated, points=points) == 2
    found = migrated.study("transaction_costs", "costs/run1")
    assert (found.kind, found.study_id, found.ts, found.status) == ("transaction_costs", "costs/run1", T0, "ok")
    assert (found.dag_id, found.run_id, found.applied, found.applied_at) == (
        "portfolio_transaction_costs", "scheduled__1", False, None)
    assert (found.params, found.summary, found.recommended) == (
        {"min_fills": 20}, {"fills": 3}, {"equity": {"slippage_bps": 4.5}})
    assert found.to_dict()["ts"] == "2024-06-03T06:05:00+00:00"
    assert migrated.study_points("transaction_costs", "costs/run1") == [
        StudyPoint("asset_class:equity", {"asset_class": "equity"}, {"fills": 2}),
        StudyPoint("symbol:AAPL", {"symbol": "AAPL"}, {"fills": 2, "slippage_bps": 4.25})]  # by name
    assert migrated.study("transaction_costs", "other") is None
    assert migrated.study("signal_validation", "costs/run1") is None  # the kind is part of the key


def test_a_rerun_replaces_the_study_and_every_point(migrated):
    save(migrated, points=[StudyPoint(f"grid:{i}", {"i": i}, {"x": i}) for i in range(3)])
    migrated.mark_study_applied("transaction_costs", "costs/run1", at=T0 + timedelta(minutes=1))
    assert migrated.study("transaction_costs", "costs/run1").applied is True
    # the retry finds fewer points and another summary: one copy is left, the retry's, not applied
    assert save(migrated, summary={"fills": 5}, recommended=None, status="partial",
                points=[StudyPoint("grid:9", {"i": 9}, {"x": 9})]) == 1
    found = migrated.study("transaction_costs", "costs/run1")
    assert (found.summary, found.recommended, found.status, found.applied, found.applied_at) == (
        {"fills": 5}, None, "partial", False, None)
    assert [p.point for p in migrated.study_points("transaction_costs", "costs/run1")] == ["grid:9"]
    assert _count(migrated, schema.studies) == 1 and _count(migrated, schema.study_points) == 1
    # another study of the kind keeps its own points
    save(migrated, "costs/run2", points=[StudyPoint("grid:0", {}, {})])
    assert _count(migrated, schema.study_points) == 2


def test_marking_applied(migrated):
    save(migrated)
    at = T0 + timedelta(hours=1)
    marked = migrated.mark_study_applied("transaction_costs", "costs/run1", at=at)
    assert (marked.applied, marked.applied_at) == (True, at)
    with pytest.raises(StoreError, match="no transaction_costs study 'nope'"):
        migrated.mark_study_applied("transaction_costs", "nope")


def test_reads_are_newest_first_bounded_and_windowed(migrated):
    for day in range(5):
        save(migrated, f"costs/run{day}", ts=T0 + timedelta(days=day), status="ok" if day % 2 else "failed")
    save(migrated, "sweep/1", kind="threshold_sweep", ts=T0 + timedelta(days=9))
    latest = migrated.latest_study("transaction_costs")
    assert latest.study_id == "costs/run4"
    assert migrated.latest_study("transaction_costs", status="ok").study_id == "costs/run3"
    assert migrated.latest_study("transaction_costs", until=T0 + timedelta(days=2, hours=1)).study_id == "costs/run2"
    assert migrated.latest_study("transaction_costs", since=T0 + timedelta(days=6)) is None
    assert [s.study_id for s in migrated.studies("transaction_costs", 3)] == ["costs/run4", "costs/run3",
                                                                              "costs/run2"]
    assert [s.study_id for s in migrated.studies("transaction_costs", since=T0 + timedelta(days=3))] == [
        "costs/run4", "costs/run3"]
    assert [s.study_id for s in migrated.studies("threshold_sweep")] == ["sweep/1"]
    save(migrated, "costs/big", ts=T0, points=[StudyPoint(f"p{i:03d}", {}, {}) for i in range(450)])
    assert [p.point for p in migrated.study_points("transaction_costs", "costs/big", 2)] == ["p000", "p001"]
    assert len(migrated.study_points("transaction_costs", "costs/big")) == 450
    for bad in (0, 10_001, True, "5"):
        with pytest.raises(InvalidInputError, match="limit must be a whole number from 1 to 10000"):
            migrated.studies("transaction_costs", bad)
    with pytest.raises(InvalidInputError, match="limit must be a whole number from 1 to 100000"):
        migrated.study_points("transaction_costs", "costs/big", 0)


MALFORMED_STUDIES = [
    ({"kind": "Transaction Costs"}, "a study's kind must be a lowercase identifier"),
    ({"study_id": ""}, "study_id must be non-empty text"),
    ({"status": "done"}, "a study's status is one of"),
    ({"ts": datetime(2024, 6, 3)}, "the study's ts must be timezone-aware"),
    ({"summary": {"sharpe": math.nan}}, "summary must be plain JSON"),
    ({"params": [1, 2]}, "params must be a JSON object"),
    ({"points": [StudyPoint("a", {}, {}), StudyPoint("a", {}, {})]}, "the study point 'a' is given twice"),
    ({"points": [StudyPoint("a", {}, {"x": math.inf})]}, "point 'a': metrics must be plain JSON"),
    ({"dag_id": 7}, "dag_id must be text"),
]


def test_a_malformed_study_is_refused_and_nothing_written(migrated):
    save(migrated, "costs/kept", points=[StudyPoint("x", {}, {})])
    for change, match in MALFORMED_STUDIES:
        args = {"kind": "transaction_costs", "study_id": "costs/kept", "ts": T0, "points": [StudyPoint("y", {}, {})],
                **change}
        kind, study_id, ts = args.pop("kind"), args.pop("study_id"), args.pop("ts")
        with pytest.raises(InvalidInputError, match=match):
            save(migrated, study_id, kind=kind, ts=ts, **args)
        assert [p.point for p in migrated.study_points("transaction_costs", "costs/kept")] == ["x"], change
    assert _count(migrated, schema.studies) == 1


# -- validations ----------------------------------------------------------------------------------------------
def _validation(step: int = 1, *, kind: str = "forecast", source: str = "ssa", symbol: str = "AAPL",
                asof: pd.Timestamp = DAY, origin: str = "fc1", **values) -> dict:
    row = {"kind": kind, "source": source, "symbol": symbol, "timeframe": "1Day", "asof": asof, "origin": origin,
           "step": step, "target_ts": asof + pd.Timedelta(days=step), "target": "log_close", "actual": 5.0}
    return {**row, **values}


def test_validations_are_appended_once_per_key_read_and_summarised(migrated):
    rows = [_validation(1, point=5.01, lower=4.9, upper=5.1, level=0.9, error=0.01, hit=True, covered=True),
            _validation(2, point=5.04, lower=5.02, upper=5.1, level=0.9, error=0.04, hit=False, covered=False),
            _validation(3, point=4.98, lower=4.9, upper=5.1, level=0.8, error=-0.02, hit=None, covered=True),
            _validation(kind="signal", source="trader", origin="", action="buy", score=0.5, confidence=0.9,
                        target="log_return", actual=0.02, hit=True)]
    assert migrated.append_validations(rows, run_id="val1") == 4
    # a second append of the same keys (another run) leaves the first rows as they are
    migrated.append_validations([_validation(1, point=9.0, lower=8.0, upper=10.0, level=0.9, error=4.0)],
                                run_id="val2")
    assert _count(migrated, schema.signal_validations) == 4
    frame = migrated.validations("forecast")
    assert list(frame["step"]) == [1, 2, 3] and set(frame["run_id"]) == {"val1"}
    assert list(frame["hit"].astype("object")) == [True, False, pd.NA]
    assert frame["asof"].dt.tz is not None and frame.loc[0, "target_ts"] == DAY + pd.Timedelta(days=1)
    assert len(migrated.validations(limit=2)) == 2
    signal = migrated.validations("signal", sources="trader")
    assert (signal.loc[0, "action"], signal.loc[0, "confidence"], math.isnan(signal.loc[0, "point"])) == (
        "buy", 0.9, True)

    [forecast, sig] = migrated.validation_summary()
    # errors 0.01, 0.04, -0.02: MAE 0.07 / 3; RMSE sqrt((1 + 16 + 4) / 3) / 100; one hit of two directions;
    # two of three inside their band, nominal levels 0.9, 0.9, 0.8 (mean 0.8667)
    assert (forecast["kind"], forecast["source"], forecast["n"], forecast["hit_n"], forecast["hits"]) == (
        "forecast", "ssa", 3, 2, 1)
    assert forecast["hit_rate"] == 0.5 and forecast["coverage"] == pytest.approx(2 / 3)
    assert forecast["mae"] == pytest.approx(0.07 / 3) and forecast["rmse"] == pytest.approx(math.sqrt(21 / 3) / 100)
    assert forecast["level"] == pytest.approx((0.9 + 0.9 + 0.8) / 3)
    assert forecast["last_asof"] == DAY.to_pydatetime()
    assert (sig["kind"], sig["n"], sig["hit_rate"], sig["coverage"], sig["mae"]) == ("signal", 1, 1.0, None, None)
    by_step = migrated.validation_summary(kind="forecast", by=("step",))
    assert [(g["step"], g["n"]) for g in by_step] == [(1, 1), (2, 1), (3, 1)]
    runs = migrated.validated_runs("forecast")
    assert [(r["source"], r["origin"], r["steps"]) for r in runs] == [("ssa", "fc1", 3)]
    with pytest.raises(InvalidInputError, match="by must name columns among"):
        migrated.validation_summary(by=("level",))


def test_a_malformed_validation_row_is_refused_and_nothing_written(migrated):
    for change, match in [
        ({"kind": "guess"}, "validation row 0: kind must be one of"),
        ({"step": 0}, "validation row 0: step must be a whole number >= 1"),
        ({"actual": math.nan}, "validation row 0: actual is required"),
        ({"level": 1.5}, r"validation row 0: level must lie in \(0, 1\)"),
        ({"hit": "yes"}, "validation row 0: hit must be true, false or null"),
        ({"asof": datetime(2024, 6, 3)}, "validation row 0: asof must be timezone-aware"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            migrated.append_validations([_validation(**change), _validation(2)], run_id="val1")
    with pytest.raises(InvalidInputError, match="validation rows repeat a key"):
        migrated.append_validations([_validation(1), _validation(1)], run_id="val1")
    assert _count(migrated, schema.signal_validations) == 0


def test_pending_reads_leave_out_what_is_validated(migrated):
    forecasts = pd.DataFrame([{
        "run_id": "fc1", "model": "ssa", "symbol": "AAPL", "timeframe": "1Day", "step": step, "asof": DAY,
        "target_ts": DAY + pd.Timedelta(days=step), "target": "log_close", "point": 5.0, "lower": 4.9,
        "upper": 5.1, "level": 0.9, "variance": None, "backend": "numpy", "device": "cpu"} for step in (1, 2)])
    migrated.write_forecasts(forecasts)
    until = DAY + pd.Timedelta(days=5)
    pending = migrated.pending_forecasts(None, "1Day", since=DAY, until=until)
    assert list(pending["step"]) == [1, 2] and list(pending["model"]) == ["ssa", "ssa"]
    migrated.append_validations([_validation(1, origin="fc1")], run_id="val1")
    assert list(migrated.pending_forecasts(["AAPL"], "1Day", since=DAY, until=until)["step"]) == [2]
    assert migrated.pending_forecasts(["MSFT"], "1Day", since=DAY, until=until).empty
    assert migrated.pending_forecasts(None, "1Day", since=DAY + pd.Timedelta(hours=1), until=until).empty
    assert migrated.signals_exist("1Day", since=DAY, until=DAY)
    assert not migrated.signals_exist("1Day", since=DAY + pd.Timedelta(hours=1), until=until)

    ledger = TradingLedger(migrated)
    ledger.claim_decisions([{
        "dag_id": "trader", "symbol": "AAPL", "timeframe": "1Day", "bar_ts": DAY, "run_key": "", "run_id": "r1",
        "account": "simulated:default", "action": "buy", "score": 0.5, "confidence": 0.9, "price": 100.0,
        "current_qty": 0.0, "target_qty": 10.0, "order_qty": 10.0, "reason": "test", "error": None, "signals": {}}])
    decided = migrated.pending_decisions(None, "1Day", since=DAY, until=until)
    assert list(zip(decided["dag_id"], decided["run_key"], decided["score"], strict=True)) == [("trader", "", 0.5)]
    migrated.append_validations([_validation(kind="signal", source="trader", origin="")], run_id="val1")
    assert migrated.pending_decisions(None, "1Day", since=DAY, until=until).empty


def test_executions_join_orders_and_fills(migrated):
    ledger = TradingLedger(migrated)
    account = "simulated:desk"
    ledger.open_account(account, 100_000.0)
    ledger.record_intents([{"account": account, "client_order_id": cid, "dag_id": "trader", "run_id": "r1",
                            "symbol": symbol, "side": side, "qty": 10.0, "ref_price": 100.0, "bar_ts": DAY,
                            "created_at": DAY + pd.Timedelta(hours=hours)}
                           for cid, symbol, side, hours in (("a", "AAPL", "buy", 15), ("b", "MSFT", "buy", 16),
                                                            ("c", "SPY", "sell", 17))])
    for cid in ("a", "b"):
        ledger.accept(account, cid, f"sim-{cid}")
    ledger.fill(account, "a", price=100.5, commission=0.25, bar_ts=DAY + pd.Timedelta(days=1), rule=apply_fill)
    # a real broker's order: filled quantity and price on the order, no fills row
    ledger.update_order(account, "b", status="filled", filled_qty=10.0, filled_avg_price=99.0)
    found = migrated.executions(account=account)
    assert list(found["client_order_id"]) == ["b", "a"]  # newest first; "c" never filled
    b, a = found.iloc[0], found.iloc[1]
    assert (a["price"], a["qty"], a["commission"], a["ref_price"]) == (100.5, 10.0, 0.25, 100.0)
    assert a["filled_bar_ts"] == DAY + pd.Timedelta(days=1)
    assert (b["price"], math.isnan(b["commission"]), b["filled_bar_ts"] is pd.NaT) == (99.0, True, True)
    assert list(migrated.executions(since=DAY + pd.Timedelta(hours=15, minutes=30))["client_order_id"]) == ["b"]
    assert migrated.executions(account="simulated:other").empty
    with pytest.raises(InvalidInputError, match="limit must be a whole number"):
        migrated.executions(limit=0)
