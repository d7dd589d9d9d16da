"""The desk's end-of-run checks (tests/cluster/checks.py) on a desk built by the real entry points, then with each
defect planted: every check passes on the clean desk with the counts read back by plain SQL, and names what is wrong
on a broken one. SQLite and PostgreSQL alike."""

from __future__ import annotations

import itertools
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
import pytest
from sqlalchemy import create_engine, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from airflow_provider_portfolio.forecast.jobs import ensemble_universe, forecast_universe
from airflow_provider_portfolio.market.etl import load_bars
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.orders import client_order_id
from airflow_provider_portfolio.trading.risk import RiskLimits
from airflow_provider_portfolio.trading.session import trade_universe
from airflow_provider_portfolio.trading.settings import CycleSettings
from tests.cluster.checks import (
    bars_complete,
    book_reconciles,
    check_desk,
    forecast_runs_complete,
    ledger_account,
    no_double_sends,
    orders_match_decisions,
)
from tests.pgserver import INSTALL_HINT, PostgresServer, find_bindir

SYMBOLS = ["AAPL", "MSFT", "NVDA", "SPY", "BTC/USD", "ETH/USD"]
START, END = "2024-01-02", "2024-05-31"
#: By hand: XNYS sessions 2024-01-02..05-31 are 21 + 20 + 20 + 22 + 22 = 105 (New Year, MLK, Presidents' Day, Good
#: Friday, Memorial Day closed); crypto trades each of the 151 days.
BARS = 4 * 105 + 2 * 151
DAG = "checks_desk"
ACCOUNT = "simulated:checks"
#: Three daily cycles, Wednesday to Friday: buys, their fills, and sells left open.
CYCLES = ("2024-05-29", "2024-05-30", "2024-05-31")
SETTINGS = CycleSettings(weights={"technical": 1.0}, min_score=0.02, fraction=0.05,
                         limits=RiskLimits(min_confidence=0.05, max_order_notional=50_000.0))
UTC = timezone.utc
_copies = itertools.count()


@dataclass
class Desk:
    url: str

    def check(self, **kwargs):
        args = {"account": ACCOUNT, "symbols": SYMBOLS, "start": START, "end": END}
        return check_desk(self.url, **{**args, **kwargs})

    def engine(self):
        return create_engine(self.url)

    def execute(self, statement):
        """Plant a defect: one statement in its own transaction, around the code under test."""
        engine = self.engine()
        try:
            with engine.begin() as conn:
                return conn.execute(statement).rowcount
        finally:
            engine.dispose()

    def scalar(self, sql: str, **params):
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return conn.execute(text(sql), params).scalar()
        finally:
            engine.dispose()


def build_desk(url: str) -> None:
    """The desk of three days: bars loaded by the ETL, an SSA run and its ensemble, three trading cycles."""
    store = PortfolioStore(url)
    try:
        store.migrate()
        market = SyntheticMarket()
        report = load_bars(store, [market], SYMBOLS, START, END)
        assert report.failed == [] and report.rows_written == BARS
        assert forecast_universe(store, SYMBOLS, "ssa", run_id="fc-1", history=252, horizon=5).failed == {}
        ensemble_universe(store, SYMBOLS, ["ssa"], run_id="fc-1")
        broker = SimulatedBroker(TradingLedger(store), name="checks", commission_bps=1.0, commission_per_order=0.5)
        for i, day in enumerate(CYCLES, start=1):
            now = pd.Timestamp(f"{day} 15:00", tz="America/New_York").to_pydatetime()
            cycle = trade_universe(SYMBOLS, store=store, sources=[market], broker=broker, now=now, dag_id=DAG,
                                   run_id=f"run-{i}", settings=SETTINGS, forecast_model="ssa")
            assert cycle.unknown == {} and cycle.broker_rejected == {}
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def pg_server():
    if find_bindir() is None:
        pytest.fail(f"{INSTALL_HINT}; the PostgreSQL checks need it (make system-deps)")
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def template(request, tmp_path_factory):
    """One desk per dialect, built once; each test gets a copy (:func:`desk`)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("template") / "desk.db"
        build_desk(f"sqlite:///{path}")
        return ("sqlite", path)
    server = request.getfixturevalue("pg_server")
    build_desk(server.create_database("desk_template"))
    return ("postgresql", server)


@pytest.fixture
def desk(template, tmp_path) -> Desk:
    kind, source = template
    if kind == "sqlite":
        path = tmp_path / "desk.db"
        with sqlite3.connect(source) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        yield Desk(f"sqlite:///{path}")
        return
    import psycopg

    name = f"desk_{os.getpid()}_{next(_copies)}"
    with psycopg.connect(host="127.0.0.1", port=source.port, user=source.user, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE desk_template')
    yield Desk(source.url_for(name))
    source.drop_database(name)


def only(check, name: str):
    """The check's single violation, which must name it."""
    assert len(check.violations) == 1, check.violations
    assert check.violations[0].startswith(f"{name}: "), check.violations
    return check.violations[0]


# -- the clean desk -------------------------------------------------------------------------------------------

def test_the_clean_desk_passes_every_check_with_the_counts_plain_sql_reads(desk):
    counts = desk.check(dag_ids=[DAG], forecast_symbols=SYMBOLS)
    sql = desk.scalar
    orders = sql("SELECT COUNT(*) FROM orders WHERE account = :a", a=ACCOUNT)
    assert counts == {
        "orders": orders,
        "at_broker": sql("SELECT COUNT(*) FROM orders WHERE account = :a AND status NOT IN ('pending_submit', "
                         "'not_placed')", a=ACCOUNT),
        "fills": sql("SELECT COUNT(*) FROM fills WHERE account = :a", a=ACCOUNT),
        "positions": sql("SELECT COUNT(*) FROM positions WHERE account = :a AND qty <> 0", a=ACCOUNT),
        "decisions": sql("SELECT COUNT(*) FROM trading_decisions WHERE account = :a", a=ACCOUNT),
        "decisions_approved": sql("SELECT COUNT(*) FROM trading_decisions WHERE account = :a AND approved", a=ACCOUNT),
        "duplicates": 0, "pending": 0, "bars": BARS, "bars_expected": BARS,
        "forecast_runs": 2, "forecast_keys": 2 * len(SYMBOLS),
    }
    # the desk traded: buys filled on the next bar, sells still open at the end
    assert counts["decisions"] == len(SYMBOLS) * len(CYCLES)
    assert counts["orders"] == counts["decisions_approved"] >= 4 and 0 < counts["fills"] < counts["orders"]
    assert sql("SELECT COUNT(*) FROM orders WHERE status = 'new'") == orders - counts["fills"]
    assert sql("SELECT COUNT(*) FROM bars") == BARS


def test_each_check_alone_counts_the_same(desk):
    assert no_double_sends(desk.url, "checks").passed()["duplicates"] == 0
    assert orders_match_decisions(desk.url, ACCOUNT).passed()["pending"] == 0
    assert book_reconciles(desk.url, ACCOUNT).passed()["snapshots"] == len(CYCLES)
    assert bars_complete(desk.url, ["AAPL"], "2024-05-01", "2024-05-31").passed()["bars"] == 22  # May: 23 weekdays
    assert bars_complete(desk.url, ["BTC/USD"], "2024-05-01", "2024-05-31").passed()["bars"] == 31
    assert forecast_runs_complete(desk.url, models=["ssa"]).passed() == {
        "forecast_runs": 1, "forecast_keys": 6, "forecast_rows": 30, "evaluation_rows": 6}
    assert ledger_account("checks") == ACCOUNT and ledger_account("alpaca:paper") == "alpaca:paper"


# -- orders at the broker -------------------------------------------------------------------------------------

def _orders(desk, where: str = "") -> list[dict]:
    engine = desk.engine()
    try:
        with engine.connect() as conn:
            stmt = select(schema.orders).where(schema.orders.c.account == ACCOUNT)
            if where:
                stmt = stmt.where(schema.orders.c.status == where)
            return [dict(r._mapping) for r in conn.execute(stmt.order_by(schema.orders.c.client_order_id))]
    finally:
        engine.dispose()


def test_a_decision_sent_again_under_a_second_id_is_a_double_send(desk):
    """The one way the same decision reaches the simulated book twice: a second order row for it under another id
    (its own id is the schema's key, :func:`test_the_schema_forbids_an_id_twice_and_a_fill_twice`)."""
    first = _orders(desk, "filled")[0]
    again = {**first, "client_order_id": first["client_order_id"] + "x", "status": "new",
             "broker_order_id": "sim-" + first["client_order_id"] + "x", "filled_qty": 0.0, "filled_avg_price": None}
    desk.execute(insert(schema.orders).values(again))
    check = no_double_sends(desk.url, ACCOUNT)
    assert check.counts["duplicates"] == 1
    assert any("reached the broker twice" in v and first["client_order_id"] in v for v in check.violations)
    assert any("not derived from their decision" in v for v in check.violations)
    with pytest.raises(AssertionError, match="no double send: decision.*reached the broker twice"):
        desk.check()


def test_one_broker_order_under_two_client_order_ids_is_a_double_send(desk):
    one, other = _orders(desk, "new")[:2]
    desk.execute(update(schema.orders).where(schema.orders.c.client_order_id == other["client_order_id"])
                 .values(broker_order_id=one["broker_order_id"]))
    violation = only(no_double_sends(desk.url, ACCOUNT), "no double send")
    assert "several client order ids" in violation and one["broker_order_id"] in violation


def test_the_schema_forbids_an_id_twice_and_a_fill_twice(desk):
    order = _orders(desk, "filled")[0]
    with pytest.raises(IntegrityError):
        desk.execute(insert(schema.orders).values({**order, "status": "new"}))
    engine = desk.engine()
    with engine.connect() as conn:
        fill = dict(conn.execute(select(schema.fills).where(
            schema.fills.c.client_order_id == order["client_order_id"])).one()._mapping)
    engine.dispose()
    with pytest.raises(IntegrityError):
        desk.execute(insert(schema.fills).values(fill))
    # the ledger's own write of an id it holds finds the first order
    store = PortfolioStore(desk.url)
    TradingLedger(store).record_intents([{
        k: order[k] for k in ("account", "client_order_id", "dag_id", "run_id", "symbol", "side", "qty",
                              "ref_price", "bar_ts", "created_at")}])
    store.dispose()
    assert desk.scalar("SELECT COUNT(*) FROM orders WHERE client_order_id = :c", c=order["client_order_id"]) == 1
    assert desk.check()["duplicates"] == 0


# -- orders and decisions -------------------------------------------------------------------------------------

def _decisions(desk, **where) -> list[dict]:
    engine = desk.engine()
    t = schema.trading_decisions.c
    try:
        with engine.connect() as conn:
            stmt = select(schema.trading_decisions).where(*(t[k] == v for k, v in where.items()))
            return [dict(r._mapping) for r in conn.execute(stmt.order_by(t.bar_ts, t.symbol))]
    finally:
        engine.dispose()


def _where_decision(d):
    t = schema.trading_decisions.c
    return [t[k] == d[k] for k in ("dag_id", "symbol", "timeframe", "bar_ts", "run_key")]


def test_an_approved_decision_without_an_order_fails(desk):
    hold = _decisions(desk, action="hold")[0]
    cid = client_order_id(DAG, hold["run_id"], hold["symbol"], hold["bar_ts"], "buy")
    desk.execute(update(schema.trading_decisions).where(*_where_decision(hold)).values(
        action="buy", order_qty=1.0, approved=True, client_order_id=cid))
    violation = only(orders_match_decisions(desk.url, ACCOUNT), "orders = approved decisions")
    assert "approved decision(s) with no order at the broker" in violation and cid in violation
    with pytest.raises(AssertionError, match="orders = approved decisions: approved decision"):
        desk.check()


def test_an_approved_decision_whose_order_was_never_placed_fails(desk):
    order = _orders(desk, "new")[0]
    desk.execute(update(schema.orders).where(schema.orders.c.client_order_id == order["client_order_id"])
                 .values(status="not_placed", reason="recorded but never placed"))
    violation = only(orders_match_decisions(desk.url, ACCOUNT), "orders = approved decisions")
    assert "never placed" in violation and order["client_order_id"] in violation


def test_an_order_on_two_decisions_fails(desk):
    order = _orders(desk, "filled")[0]
    hold = next(d for d in _decisions(desk, action="hold") if d["symbol"] != order["symbol"])
    desk.execute(update(schema.trading_decisions).where(*_where_decision(hold))
                 .values(client_order_id=order["client_order_id"]))
    check = orders_match_decisions(desk.url, ACCOUNT)
    assert any(v.startswith("orders = approved decisions: client order id(s) on more than one decision")
               and order["client_order_id"] in v for v in check.violations), check.violations


def test_an_order_that_differs_from_its_decision_fails(desk):
    order = _orders(desk, "new")[0]
    desk.execute(update(schema.orders).where(schema.orders.c.client_order_id == order["client_order_id"])
                 .values(qty=order["qty"] * 2))
    assert "differ from their decision" in only(orders_match_decisions(desk.url, ACCOUNT),
                                                "orders = approved decisions")


def test_an_order_left_pending_submit_fails(desk):
    order = _orders(desk, "new")[0]
    desk.execute(update(schema.orders).where(schema.orders.c.client_order_id == order["client_order_id"])
                 .values(status="pending_submit"))
    check = orders_match_decisions(desk.url, ACCOUNT)
    assert check.counts["pending"] == 1
    assert any("left pending_submit or unknown" in v and order["client_order_id"] in v for v in check.violations)
    with pytest.raises(AssertionError, match="left pending_submit or unknown"):
        desk.check()


def test_the_dag_filter_keeps_other_dags_out(desk):
    """Orders of another DAG on the account are not this DAG's to match."""
    assert orders_match_decisions(desk.url, ACCOUNT, dag_ids=["another_dag"]).passed()["orders"] == 0


# -- the book ------------------------------------------------------------------------------------------------

def test_cash_off_by_one_fails_the_book(desk):
    desk.execute(update(schema.accounts).where(schema.accounts.c.account == ACCOUNT)
                 .values(cash=schema.accounts.c.cash + 1.0))
    check = book_reconciles(desk.url, ACCOUNT)
    assert all(v.startswith("book reconciles: ") for v in check.violations) and len(check.violations) == 3
    assert "off by +1.000000" in check.violations[0]
    assert "holds cash" in check.violations[1] and "holds equity" in check.violations[2]
    with pytest.raises(AssertionError, match="book reconciles: cash"):
        desk.check()
    # everything else holds
    assert no_double_sends(desk.url, ACCOUNT).passed() and orders_match_decisions(desk.url, ACCOUNT).passed()


def test_cash_within_a_cent_passes(desk):
    desk.execute(update(schema.accounts).where(schema.accounts.c.account == ACCOUNT)
                 .values(cash=schema.accounts.c.cash + 0.004))
    assert book_reconciles(desk.url, ACCOUNT).passed()["fills"] > 0


def test_a_position_that_is_not_the_fills_fails(desk):
    p = schema.positions.c
    desk.execute(update(schema.positions).where(p.account == ACCOUNT, p.symbol == "NVDA").values(qty=p.qty + 1))
    check = book_reconciles(desk.url, ACCOUNT)
    assert any("position(s) that are not the filled orders: NVDA" in v for v in check.violations), check.violations


def test_an_equity_snapshot_that_is_not_the_book_fails(desk):
    e = schema.equity_curve.c
    desk.execute(update(schema.equity_curve).where(e.account == ACCOUNT).values(equity=e.equity + 1))
    check = book_reconciles(desk.url, ACCOUNT)
    assert any("holds equity" in v for v in check.violations)
    assert any("cash + positions value" in v for v in check.violations)


def test_a_fill_without_its_order_filled_fails(desk):
    order = _orders(desk, "filled")[0]
    desk.execute(update(schema.orders).where(schema.orders.c.client_order_id == order["client_order_id"])
                 .values(status="new"))
    assert any("fill(s) of an order that is not filled" in v for v in book_reconciles(desk.url, ACCOUNT).violations)


def test_an_account_without_a_book_fails(desk):
    assert "no simulated book" in only(book_reconciles(desk.url, "simulated:nobody"), "book reconciles")


# -- bars ----------------------------------------------------------------------------------------------------

def _bar(symbol: str, day: str):
    b = schema.bars.c
    return [b.symbol == symbol, b.timeframe == "1Day", b.ts == datetime.fromisoformat(day).replace(tzinfo=UTC)]


def test_a_missing_session_fails(desk):
    assert desk.execute(delete(schema.bars).where(*_bar("AAPL", "2024-03-15"))) == 1  # a Friday
    assert desk.execute(delete(schema.bars).where(*_bar("BTC/USD", "2024-03-17"))) == 1  # a Sunday: crypto trades
    check = bars_complete(desk.url, SYMBOLS, START, END)
    violation = only(check, "bars complete")
    assert "AAPL (XNYS) lacks 1: 2024-03-15T00:00:00+00:00" in violation
    assert "BTC/USD (24/7) lacks 1: 2024-03-17T00:00:00+00:00" in violation
    assert check.counts["bars_missing"] == 2 and check.counts["bars"] == BARS - 2
    with pytest.raises(AssertionError, match="bars complete: 1Day bar.s. missing"):
        desk.check()


def test_a_bar_on_no_session_fails(desk):
    store = PortfolioStore(desk.url)
    saturday = store.read_bars(["AAPL"], "1Day", "2024-03-15", "2024-03-15").assign(
        ts=pd.Timestamp("2024-03-16", tz="UTC"))
    assert store.upsert_bars(saturday) == 1  # the store keeps what it is given; the ETL's gate would refuse it
    store.dispose()
    check = bars_complete(desk.url, SYMBOLS, START, END)
    assert "the calendar does not hold" in only(check, "bars complete") and check.counts["bars_extra"] == 1


def test_a_range_before_the_sessions_closed_expects_only_closed_bars(desk):
    """At 10:00 New York on 2024-05-31 that day's bar has not closed: the store holds it, so it is extra then."""
    at = pd.Timestamp("2024-05-31 10:00", tz="America/New_York").to_pydatetime()
    check = bars_complete(desk.url, ["AAPL"], "2024-05-01", "2024-05-31", now=at)
    assert check.counts["bars_expected"] == 21 and "2024-05-31" in only(check, "bars complete")


def test_the_schema_forbids_a_bar_twice(desk):
    """A duplicated (symbol, timeframe, ts) cannot be planted: the key refuses it, and an upsert updates in place."""
    engine = desk.engine()
    with engine.connect() as conn:
        row = dict(conn.execute(select(schema.bars).where(*_bar("MSFT", "2024-04-01"))).one()._mapping)
    engine.dispose()
    with pytest.raises(IntegrityError):
        desk.execute(insert(schema.bars).values(row))
    store = PortfolioStore(desk.url)
    store.upsert_bars(store.read_bars(["MSFT"], "1Day", START, END))
    assert store.count_bars(["MSFT"], "1Day") == 105
    store.dispose()
    assert bars_complete(desk.url, SYMBOLS, START, END).passed()["bar_duplicates"] == 0


# -- forecast runs -------------------------------------------------------------------------------------------

def _forecast_key(symbol: str, model: str = "ssa", table=schema.forecasts):
    t = table.c
    return [t.run_id == "fc-1", t.model == model, t.symbol == symbol, t.timeframe == "1Day"]


def test_a_forecast_run_with_a_row_deleted_fails(desk):
    assert desk.execute(delete(schema.forecasts).where(*_forecast_key("MSFT"), schema.forecasts.c.step == 3)) == 1
    violation = only(forecast_runs_complete(desk.url), "forecast runs complete")
    assert "fc-1/ssa/MSFT/1Day: steps [1, 2, 4, 5] of horizon 5" in violation
    with pytest.raises(AssertionError, match="forecast runs complete: forecast key"):
        desk.check()


def test_a_forecast_without_its_evaluation_fails(desk):
    evaluation = _forecast_key("NVDA", table=schema.model_evaluations)
    assert desk.execute(delete(schema.model_evaluations).where(*evaluation)) == 1
    violation = only(forecast_runs_complete(desk.url), "forecast runs complete")
    assert "without their evaluation row: fc-1/ssa/NVDA/1Day (5 step(s))" in violation


def test_an_evaluation_without_its_forecasts_fails_but_an_unhealthy_ensemble_passes(desk):
    # the desk's ensemble has evaluation rows only (no model was healthy): whole as written
    assert desk.scalar("SELECT COUNT(*) FROM forecasts WHERE model = 'ensemble'") == 0
    assert desk.execute(delete(schema.forecasts).where(*_forecast_key("SPY"))) == 5
    violation = only(forecast_runs_complete(desk.url), "forecast runs complete")
    assert "evaluation row(s) without their forecasts: fc-1/ssa/SPY/1Day (label unhealthy)" in violation


def test_a_forecast_with_two_asofs_fails(desk):
    f = schema.forecasts.c
    desk.execute(update(schema.forecasts).where(*_forecast_key("AAPL"), f.step == 5)
                 .values(asof=datetime(2024, 5, 30, tzinfo=UTC)))
    assert "asof" in only(forecast_runs_complete(desk.url), "forecast runs complete")


def test_a_run_that_lacks_a_symbol_asked_for_fails(desk):
    check = forecast_runs_complete(desk.url, models=["ssa"], symbols=[*SYMBOLS, "QQQ"])
    assert "fc-1/ssa lacks ['QQQ']" in only(check, "forecast runs complete")


def test_every_violation_is_listed_at_once(desk):
    desk.execute(update(schema.accounts).where(schema.accounts.c.account == ACCOUNT)
                 .values(cash=schema.accounts.c.cash - 5))
    desk.execute(delete(schema.bars).where(*_bar("SPY", "2024-02-01")))
    with pytest.raises(AssertionError) as err:
        desk.check()
    message = str(err.value)
    assert "4 violation(s)" in message and "book reconciles" in message and "bars complete" in message
    assert desk.scalar("SELECT COUNT(*) FROM bars") == BARS - 1


def test_the_store_itself_can_be_passed(desk):
    store = PortfolioStore(desk.url)
    try:
        assert check_desk(store, account="checks", symbols=["ETH/USD"], start=START, end=END)["bars"] == 151
    finally:
        store.dispose()
    assert desk.scalar("SELECT COUNT(*) FROM trading_decisions WHERE approved") == desk.scalar(
        "SELECT COUNT(*) FROM orders")
