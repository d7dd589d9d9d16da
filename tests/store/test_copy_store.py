"""``copy_store`` and ``airflow-portfolio copy-store``: a SQLite store filled through the public APIs (bars, a forecast
run, a trading ledger, a health report, a study, a discovery ranking) copied into PostgreSQL and into another SQLite
file in one transaction, with equal row counts and equal reads through the facade; a target that holds rows refused
and left unchanged (replaced whole with ``force``); a failure midway leaves the target as it was; bad input refused
before anything is written."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import func, select

from airflow_provider_portfolio import cli
from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore, maintenance, schema
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.store.maintenance import CopyResult, copy_store, copy_tables
from airflow_provider_portfolio.trading.accounting import apply_fill, value_book
from tests.store.helpers import make_bars, make_evaluations, make_forecasts
from tests.store.test_opportunities import ranking

UTC = timezone.utc
T0 = datetime(2024, 3, 4, 20, 0, tzinfo=UTC)
BAR = datetime(2024, 3, 4, tzinfo=UTC)
ACCOUNT = "simulated:desk"
SYMBOLS = ["AAA", "BBB", "CCC"]


# -- the source: filled through the public APIs ---------------------------------------------------------------
def _fill_store(store: PortfolioStore) -> None:
    store.migrate()
    store.upsert_bars(make_bars(SYMBOLS, 40))
    store.upsert_bars(make_bars(["AAA"], 30, timeframe="5Min", start="2024-03-04 14:30"))
    store.write_forecasts(make_forecasts(SYMBOLS), make_evaluations(SYMBOLS))
    ledger = TradingLedger(store)
    ledger.open_account(ACCOUNT, 10_000.0)
    for i, (cid, symbol, side, price) in enumerate((("c1", "AAA", "buy", 100.0), ("c2", "BBB", "buy", 50.5),
                                                    ("c3", "AAA", "sell", 104.25))):
        ledger.record_intents([{"account": ACCOUNT, "client_order_id": cid, "dag_id": "dag", "run_id": f"run-{i}",
                                "symbol": symbol, "side": side, "qty": 10.0 if side == "buy" else 4.0,
                                "ref_price": price, "bar_ts": BAR, "created_at": T0 + timedelta(minutes=i)}])
        ledger.accept(ACCOUNT, cid, f"b-{cid}")
        ledger.fill(ACCOUNT, cid, price=price, commission=0.35, bar_ts=BAR + timedelta(days=1), rule=apply_fill)
        book = ledger.book(ACCOUNT)
        worth = value_book(book.cash, book.positions.values())
        ledger.snapshot(ACCOUNT, T0 + timedelta(hours=i), f"run-{i}", cash=worth.cash, equity=worth.equity,
                        positions_value=worth.positions_value)
    ledger.record_intents([{"account": ACCOUNT, "client_order_id": "c4", "dag_id": "dag", "run_id": "run-9",
                            "symbol": "CCC", "side": "buy", "qty": 1.0, "ref_price": 9.0, "bar_ts": BAR,
                            "created_at": T0}])  # an open order, never filled
    ledger.claim_decisions([{"dag_id": "dag", "symbol": s, "timeframe": "1Day", "bar_ts": BAR, "run_key": "",
                             "run_id": "run-1", "account": ACCOUNT, "action": "buy", "score": 0.5,
                             "confidence": 0.7, "price": 100.0, "current_qty": 0.0, "target_qty": 10.0,
                             "order_qty": 10.0, "reason": "r", "error": None,
                             "signals": {"technical": {"score": 0.25, "confidence": 0.5, "reason": "up"}}}
                            for s in SYMBOLS])
    store.append_health_report(HealthReport("monitoring", T0, (
        Check("store_integrity", Level.GREEN, 0, 0, "quick_check ok"),
        Check("freshness", Level.YELLOW, 1.0, {"yellow": 1, "red": 2}, "AAA: 1 bar behind", "AAA"),
    )).to_dict(), dag_id="portfolio_monitoring", run_id="scheduled__1")
    store.save_study("transaction_costs", "costs/run1", ts=T0, params={"min_fills": 20}, summary={"fills": 3},
                     recommended={"equity": {"slippage_bps": 4.5}},
                     points=[{"point": "AAA", "params": {"symbol": "AAA"}, "metrics": {"slippage_bps": 4.5}}],
                     dag_id="portfolio_transaction_costs", run_id="scheduled__1")
    store.save_opportunities(ranking(), run_id="discover-1", ts=T0, dag_id="portfolio_discovery")
    store.save_opportunities(ranking(("AAA", "BBB"), scores=[0.7, -0.2]), run_id="discover-2",
                             ts=T0 + timedelta(hours=1))


@pytest.fixture
def source(tmp_path) -> PortfolioStore:
    """A migrated SQLite store with rows in most tables."""
    store = PortfolioStore.for_sqlite_file(tmp_path / "desk.db")
    _fill_store(store)
    yield store
    store.dispose()


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def target_url(request, tmp_path) -> str:
    """An empty database to copy into: PostgreSQL (what the copy is for), and another SQLite file."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'copy' / 'target.db'}"
    return request.getfixturevalue("fresh_pg_url")


@pytest.fixture
def target(target_url) -> PortfolioStore:
    store = PortfolioStore(target_url)
    yield store
    store.dispose()


def counts(store: PortfolioStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar() for t in copy_tables()}


def versions(store: PortfolioStore) -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(schema.schema_version.c.version).order_by(schema.schema_version.c.version))
                    .scalars())


def assert_same_reads(a: PortfolioStore, b: PortfolioStore) -> None:
    """What the desk reads through the facade is the same in both stores."""
    for timeframe in ("1Day", "5Min"):
        pd.testing.assert_frame_equal(a.read_bars(None, timeframe), b.read_bars(None, timeframe))
    pd.testing.assert_frame_equal(a.read_forecasts(latest=False), b.read_forecasts(latest=False))
    pd.testing.assert_frame_equal(a.read_evaluations(latest=False), b.read_evaluations(latest=False))
    pd.testing.assert_frame_equal(a.latest_opportunities(), b.latest_opportunities())
    pd.testing.assert_frame_equal(a.latest_opportunities(run_id="discover-1"),
                                  b.latest_opportunities(run_id="discover-1"))
    la, lb = TradingLedger(a), TradingLedger(b)
    assert la.equity_curve(ACCOUNT) == lb.equity_curve(ACCOUNT)
    assert la.cash(ACCOUNT) == lb.cash(ACCOUNT)
    assert la.positions(ACCOUNT) == lb.positions(ACCOUNT)
    assert la.orders(ACCOUNT) == lb.orders(ACCOUNT)
    assert la.fills(ACCOUNT) == lb.fills(ACCOUNT)
    assert la.decisions() == lb.decisions()
    assert a.latest_health_report("monitoring") == b.latest_health_report("monitoring")
    assert a.study("transaction_costs", "costs/run1") == b.study("transaction_costs", "costs/run1")
    assert a.study_points("transaction_costs", "costs/run1") == b.study_points("transaction_costs", "costs/run1")


# -- the copy ---------------------------------------------------------------------------------------------------
def test_the_copy_tables_are_every_table_but_schema_version():
    names = [t.name for t in copy_tables()]
    assert sorted(names) == sorted(set(schema.metadata.tables) - {"schema_version"})
    for i, table in enumerate(copy_tables()):  # a table referred to comes before the tables referring to it
        assert {fk.column.table.name for fk in table.foreign_keys} <= set(names[:i])


def test_a_sqlite_store_is_copied_whole_with_equal_reads(source, target):
    expected = counts(source)
    assert expected["bars"] == 3 * 40 + 30 and expected["fills"] == 3 and expected["orders"] == 4
    assert expected["equity_curve"] == 3 and expected["opportunities"] == 5 and expected["study_points"] == 1
    assert expected["signal_validations"] == 0  # empty tables are copied too (as empty)

    result = copy_store(source, target, batch_rows=7)  # batches that do not divide the tables

    assert isinstance(result, CopyResult)
    assert result.rows == expected == counts(target)
    assert list(result.rows) == [t.name for t in copy_tables()]
    assert result.total == sum(expected.values()) and result.replaced == {}
    assert (result.source, result.target) == (source.url, target.url)
    assert versions(target) == list(range(1, schema.latest_version() + 1))  # its own migrations, once each
    assert_same_reads(source, target)
    # the instants are real instants on the target: the desk's queries by time work there
    assert target.latest_bar_ts(["AAA"], "5Min")["AAA"] == pd.Timestamp("2024-03-04 16:55", tz="UTC")  # 14:30 + 29 x 5 min
    assert TradingLedger(target).last_equity_at(ACCOUNT, T0 + timedelta(minutes=90)) == \
        TradingLedger(source).last_equity_at(ACCOUNT, T0 + timedelta(minutes=90))
    # the copy is a working store: the desk writes on
    assert target.upsert_bars(make_bars(["DDD"], 5)) == 5


@pytest.mark.postgres
def test_a_postgresql_store_copies_back_into_sqlite_equal(source, fresh_pg_url, tmp_path):
    middle = PortfolioStore(fresh_pg_url)
    back = PortfolioStore.for_sqlite_file(tmp_path / "back.db")
    try:
        copy_store(source, middle)
        result = copy_store(middle, back, batch_rows=3)  # streamed from the server, 3 rows per batch
        assert result.rows == counts(source) == counts(back)
        assert_same_reads(source, back)
    finally:
        middle.dispose()
        back.dispose()


def test_counts_that_differ_fail_the_copy_and_write_nothing(source, target, monkeypatch):
    real = maintenance._insert_batch

    def insert_batch(conn, table, rows):  # a batch of bars that loses a row on the way
        real(conn, table, rows[1:] if table.name == "bars" else rows)

    monkeypatch.setattr(maintenance, "_insert_batch", insert_batch)
    with pytest.raises(StoreError, match=r"row counts differ \(bars: source 150, read 150, target 149\); nothing "
                                         r"was written"):
        copy_store(source, target, batch_rows=1000)
    assert set(counts(target).values()) == {0}


def test_the_target_url_is_reported_without_its_password(source, fresh_pg_url):
    secret = fresh_pg_url.replace("portfolio@", "portfolio:test-secret@", 1)  # trust auth: any password is taken
    target = PortfolioStore(secret)
    try:
        result = copy_store(source, target)
    finally:
        target.dispose()
    assert "test-secret" not in result.target and "***" in result.target
    assert "test-secret" not in str(result.to_dict())


def test_a_target_with_rows_is_refused_and_left_unchanged_then_replaced_with_force(source, target):
    copy_store(source, target)
    target.upsert_bars(make_bars(["ZZZ"], 3))
    TradingLedger(target).open_account("simulated:other", 5.0)
    before = counts(target)
    with pytest.raises(InvalidInputError, match=r"already holds rows \(accounts: 2, bars: 153, equity_curve: 3, .*"
                                                r"pass force \(--force\)"):
        copy_store(source, target)
    assert counts(target) == before

    result = copy_store(source, target, force=True)
    assert result.replaced == {name: n for name, n in before.items() if n}
    assert counts(target) == counts(source) == result.rows  # the target's own rows are gone: a copy of the source
    assert target.count_bars(["ZZZ"]) == 0 and TradingLedger(target).accounts() == [ACCOUNT]
    assert_same_reads(source, target)


def _fail_on(monkeypatch, table_name: str) -> list[str]:
    inserted: list[str] = []
    real = maintenance._insert_batch

    def insert_batch(conn, table, rows):
        if table.name == table_name:
            raise StoreError(f"copy failed on {table_name}")
        inserted.append(table.name)
        real(conn, table, rows)

    monkeypatch.setattr(maintenance, "_insert_batch", insert_batch)
    return inserted


def test_a_failure_midway_leaves_the_target_empty(source, target, monkeypatch):
    inserted = _fail_on(monkeypatch, "opportunities")
    with pytest.raises(StoreError, match="copy failed on opportunities"):
        copy_store(source, target, batch_rows=10)
    assert "bars" in inserted and "forecasts" in inserted  # tables were written before the failure...
    assert set(counts(target).values()) == {0}  # ...and rolled back with it: all or nothing
    assert versions(target) == list(range(1, schema.latest_version() + 1))  # migrated, as documented
    monkeypatch.undo()
    assert copy_store(source, target).rows == counts(source)  # and the copy can simply run again


def test_a_failure_midway_of_a_forced_copy_keeps_the_targets_rows(source, target, monkeypatch):
    target.migrate()
    target.upsert_bars(make_bars(["ZZZ"], 4))
    before = counts(target)
    _fail_on(monkeypatch, "opportunities")
    with pytest.raises(StoreError, match="copy failed on opportunities"):
        copy_store(source, target, force=True)
    assert counts(target) == before and target.count_bars(["ZZZ"]) == 4


# -- bad input --------------------------------------------------------------------------------------------------
def test_a_missing_source_file_is_refused_and_not_created(tmp_path, target):
    missing = tmp_path / "nowhere" / "desk.db"
    with pytest.raises(InvalidInputError, match=r"source store .*there is no file at .*desk\.db"):
        copy_store(PortfolioStore.for_sqlite_file(missing), target)
    assert not missing.exists()


def test_a_source_behind_the_latest_schema_is_refused_and_not_migrated(tmp_path, target, monkeypatch):
    old = PortfolioStore.for_sqlite_file(tmp_path / "old.db")
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m.version <= 5])
    old.migrate()
    monkeypatch.undo()
    with pytest.raises(InvalidInputError, match=r"is at schema version 5, behind the latest \(6\): migrate it first"):
        copy_store(old, target)
    assert old.schema_version() == 5
    blank = PortfolioStore.for_sqlite_file(tmp_path / "blank.db")
    (tmp_path / "blank.db").write_bytes(b"")  # an empty file: SQLite's empty database
    with pytest.raises(InvalidInputError, match="is not a migrated portfolio store"):
        copy_store(blank, target)
    old.dispose()
    blank.dispose()


@pytest.mark.parametrize("batch_rows", [0, -5, True, 2.5, "100"])
def test_bad_batch_rows_are_refused_before_anything_is_written(source, tmp_path, batch_rows):
    target = PortfolioStore.for_sqlite_file(tmp_path / "target.db")
    with pytest.raises(InvalidInputError, match=r"batch_rows must be a whole number >= 1, got"):
        copy_store(source, target, batch_rows=batch_rows)
    assert not (tmp_path / "target.db").exists()


def test_a_store_is_never_copied_into_itself(source, tmp_path):
    same = PortfolioStore(f"sqlite:///{tmp_path / '.' / 'desk.db'}")
    before = counts(source)
    with pytest.raises(InvalidInputError, match="source and target are the same store"):
        copy_store(source, same, force=True)
    assert counts(source) == before


# -- the command line -------------------------------------------------------------------------------------------
def test_the_parser_dispatches_copy_store():
    args = cli.build_parser().parse_args(["copy-store", "--from", "desk.db", "--to", "postgresql://u@h/db",
                                          "--force", "--batch-rows", "100"])
    assert (args.func, args.source, args.target, args.force, args.batch_rows) == (
        cli._copy_store, "desk.db", "postgresql://u@h/db", True, 100)
    for argv in (["copy-store", "--to", "postgresql://u@h/db"], ["copy-store", "--from", "desk.db"],
                 ["copy-store", "--from", "desk.db", "--to", "x", "--batch-rows", "many"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2


def test_the_command_copies_into_postgresql_and_refuses_a_second_copy(source, fresh_pg_url, capsys):
    path = source.database.sqlite_file
    assert cli.main(["copy-store", "--from", str(path), "--to", fresh_pg_url, "--batch-rows", "50"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = counts(source)
    assert out[:-1] == [f"{name}: {n} row(s)" for name, n in expected.items()]
    assert out[-1].startswith(f"Copied {sum(expected.values())} row(s) in {len(expected)} table(s) from sqlite:///")
    copied = PortfolioStore(fresh_pg_url)
    try:
        assert counts(copied) == expected
    finally:
        copied.dispose()

    assert cli.main(["copy-store", "--from", f"sqlite:///{path}", "--to", fresh_pg_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("copy-store: target store postgresql+psycopg://")
    assert "already holds rows (accounts: 1, bars: 150," in line

    assert cli.main(["copy-store", "--from", str(path), "--to", fresh_pg_url, "--force"]) == 0
    assert "Copied" in capsys.readouterr().out


def test_the_command_fails_with_one_line_for_bad_input(tmp_path, capsys):
    assert cli.main(["copy-store", "--from", str(tmp_path / "missing.db"), "--to", str(tmp_path / "t.db")]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("copy-store: source store sqlite:///") and "there is no file at" in line
    assert cli.main(["copy-store", "--from", "a.db", "--to", "b.db", "--batch-rows", "0"]) == 1
    assert capsys.readouterr().err == "copy-store: batch_rows must be a whole number >= 1, got 0\n"
    assert not (tmp_path / "t.db").exists()
