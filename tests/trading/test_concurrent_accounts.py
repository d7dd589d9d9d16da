"""Safe with money: two DAGs in two processes trading one account at once, on SQLite and on PostgreSQL.

The issue: the auto trader (every 30 minutes) and the core trader (hourly) both trade one account and meet at
:30; nothing serialised them, both read the account, decided and recorded independently, and in 3 of 3 trials
both bought, ending at 38 % of equity in one symbol against a 20 % limit.

Each trial here: a fresh store, one simulated account (``simulated:shared``, opened by both processes), two
forked OS processes released by one barrier into :func:`run_cycle` at the same moment, one per DAG id, on the
same instant, bars and strongly bullish news. Each cycle alone buys about 18 % of equity in every symbol
(``fraction=0.2`` at a score near 0.9) against ``max_position_fraction=0.2``: two unserialised cycles end near
36 %. A small pause right before each cycle records its orders widens the window between the last risk check
and the record (what a slow broker or database gives in production).

After both processes exit cleanly:

- **limits hold**: for every symbol, ``|position + open orders| x reference price / equity <= 20 %``;
- **orders = approved decisions**: the account's orders are exactly the approved decisions' client order ids,
  each once, each accepted once (``new``: no later bar is synced, so nothing fills), each matching its decision;
- **serialised**: whichever cycle got the account second decided after the first had sent its orders, and
  sized from them (its ``current_qty`` is the first's order), so it did not buy again beyond the limit.

The same trials with the lock replaced by a no-op (and both cycles held at a barrier right before recording
their orders, so both have checked everything before either records) break the limit every time: the checks
have teeth.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
import traceback
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import text

from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.cycle import CycleSettings, run_cycle
from airflow_provider_portfolio.trading.risk import RiskLimits
from tests.pgserver import INSTALL_HINT, PostgresServer, find_bindir
from tests.trading.conftest import at, headlines, history

TRIALS = 20
NO_LOCK_TRIALS = 3
SYMBOLS = ["AAPL", "MSFT"]
NOW = at("2024-03-05")  # Tuesday 15:00 New York: the market is open, Monday's bar is the last closed
DAGS = ("portfolio_auto_trader", "portfolio_auto_trader_core")
LIMIT = 0.2
INITIAL_CASH = 100_000.0
SETTINGS = CycleSettings(
    weights={"technical": 0.4, "sentiment": 0.6}, min_score=0.05, fraction=0.2, lock_timeout_s=60.0,
    limits=RiskLimits(max_position_fraction=LIMIT, min_confidence=0.3, max_order_notional=50_000.0),
)
#: The pause before a cycle records its orders (after its last risk check), seconds.
WIDEN_S = 0.05
#: The longest a trial's process may take, seconds.
PROCESS_TIMEOUT_S = 90.0

#: What a trial starts from empty (the whole ledger).
TRADING_TABLES = (schema.accounts, schema.positions, schema.orders, schema.fills, schema.equity_curve,
                  schema.trading_decisions)

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def pg_server():
    """A private PostgreSQL server for this module (as ``tests/store/conftest.py``'s: fails, never skips,
    without the binaries)."""
    if find_bindir() is None:
        pytest.fail(f"{INSTALL_HINT}; the PostgreSQL concurrency tests need it (make system-deps)")
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def inputs() -> tuple[Any, list]:
    """The bars and the news every cycle of every trial sees (the same instant for both DAGs)."""
    bars = history(SyntheticMarket(seed=7), SYMBOLS, NOW, days=150)
    return bars, headlines(dict.fromkeys(SYMBOLS, 0.9), NOW)


@pytest.fixture
def fresh_url(request, tmp_path):
    """A function giving a fresh, migrated store's URL for each trial: a new SQLite file; on PostgreSQL one new
    database per test whose trading tables are emptied before each trial (cheaper than a database a trial)."""
    if request.param == "sqlite":
        def make(trial: int) -> str:
            url = f"sqlite:///{tmp_path / f'trial{trial}' / 'portfolio.db'}"
            store = PortfolioStore(url)
            store.migrate()
            store.dispose()  # nothing of the parent's engine crosses the fork
            return url

        yield make
        return
    server = request.getfixturevalue("pg_server")
    name = f"accounts_{os.getpid()}_{time.monotonic_ns()}"
    url = server.create_database(name)
    store = PortfolioStore(url)
    store.migrate()

    def make(trial: int) -> str:
        with store.engine.begin() as conn:
            conn.execute(text("TRUNCATE " + ", ".join(t.name for t in TRADING_TABLES)))
        store.dispose()  # nothing of the parent's engine crosses the fork
        return url

    try:
        yield make
    finally:
        store.dispose()
        server.drop_database(name)


# -- the two traders -------------------------------------------------------------------------------------

def _trader(url: str, dag_id: str, run_id: str, bars: Any, news: list, start: Any, gate: Any, no_lock: bool,
            results: Any) -> None:
    """One DAG's cycle in its own process: its own store and engine, the shared account, ``run_cycle`` as soon
    as both processes are ready. Reports ``("ok", dag_id, report)`` or ``("error", dag_id, traceback)``."""
    store = None
    try:
        record_intents = TradingLedger.record_intents

        def slow_record_intents(self: TradingLedger, rows: Any) -> None:
            if gate is not None:
                gate.wait(timeout=30)  # both cycles have checked everything; neither has recorded anything
            else:
                time.sleep(WIDEN_S)
            record_intents(self, rows)

        TradingLedger.record_intents = slow_record_intents  # this process only (forked)
        if no_lock:
            TradingLedger.account_lock = lambda self, account, **kwargs: contextlib.nullcontext()

        store = PortfolioStore(url)
        ledger = TradingLedger(store)
        broker = SimulatedBroker(ledger, name="shared", initial_cash=INITIAL_CASH)
        start.wait(timeout=60)
        started = datetime.now(timezone.utc)
        report = run_cycle(SYMBOLS, bars, NOW, broker=broker, ledger=ledger, dag_id=dag_id, run_id=run_id,
                           settings=SETTINGS, news=news)
        results.put(("ok", dag_id, {**report.to_dict(), "submitted": list(report.submitted), "started": started}))
    except BaseException:
        results.put(("error", dag_id, traceback.format_exc()))
        raise
    finally:
        if store is not None:
            store.dispose()


def run_trial(url: str, trial: int, bars: Any, news: list, *, no_lock: bool = False) -> dict[str, dict]:
    """Run both DAGs' cycles at once in two processes; return dag_id -> its cycle's report.

    Odd trials give both runs the same run id (the same logical date, as the two schedules meeting at :30
    do), even trials a run id each.
    """
    start = FORK.Barrier(len(DAGS))
    gate = FORK.Barrier(len(DAGS)) if no_lock else None
    results = FORK.Queue()
    run_id = "scheduled__2024-03-05T20:00:00+00:00"
    run_ids = {DAGS[0]: run_id, DAGS[1]: run_id if trial % 2 else "manual__2024-03-05T20:00:00+00:00"}
    procs = [FORK.Process(target=_trader, args=(url, dag, run_ids[dag], bars, news, start, gate, no_lock, results),
                          name=f"{dag}-trial{trial}") for dag in DAGS]
    for p in procs:
        p.start()
    reports: dict[str, dict] = {}
    errors: list[str] = []
    try:
        for _ in procs:
            status, dag, body = results.get(timeout=PROCESS_TIMEOUT_S)
            if status == "ok":
                reports[dag] = body
            else:
                errors.append(f"{dag}:\n{body}")
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    codes = {p.name: p.exitcode for p in procs}
    assert not errors, f"trial {trial}: a trader failed:\n" + "\n".join(errors)
    assert all(code == 0 for code in codes.values()), f"trial {trial}: exit codes {codes}"
    return reports


# -- what must hold ------------------------------------------------------------------------------------------

def inspect_book(url: str) -> dict[str, Any]:
    """The account after a trial: orders, decisions, exposure per symbol and what breaks the rules."""
    store = PortfolioStore(url)
    try:
        ledger = TradingLedger(store)
        broker = SimulatedBroker(ledger, name="shared", initial_cash=INITIAL_CASH)
        equity = broker.account_state().equity
        positions = {s: p.qty for s, p in ledger.positions(broker.account).items()}
        orders = ledger.orders(broker.account)
        decisions = ledger.decisions()
    finally:
        store.dispose()

    problems: list[str] = []
    exposure: dict[str, float] = {}
    for symbol in SYMBOLS:
        qty = positions.get(symbol, 0.0)
        prices = [float(d["price"]) for d in decisions if d["symbol"] == symbol and d["price"] is not None]
        for o in orders:
            if o["symbol"] == symbol and o["status"] not in schema.TERMINAL_ORDER_STATES:
                left = float(o["qty"]) - float(o["filled_qty"] or 0.0)
                qty += left if o["side"] == "buy" else -left
                prices.insert(0, float(o["ref_price"]))  # the orders' reference price first
        exposure[symbol] = abs(qty) * (prices[0] if prices else 0.0) / equity
        if exposure[symbol] > LIMIT + 1e-9:
            problems.append(f"{symbol}: position + open orders = {exposure[symbol]:.1%} of equity > {LIMIT:.0%}")

    approved = {d["client_order_id"]: d for d in decisions if d["approved"]}
    if any(d["approved"] and not d["client_order_id"] for d in decisions):
        problems.append("an approved decision has no client order id")
    by_id = Counter(o["client_order_id"] for o in orders)
    if set(by_id) != set(approved) or any(n != 1 for n in by_id.values()):
        problems.append(f"orders {sorted(by_id.items())} != approved decisions {sorted(approved)}")
    for o in orders:
        d = approved.get(o["client_order_id"])
        if o["status"] != "new":
            problems.append(f"order {o['client_order_id']} is {o['status']!r}, not accepted once ('new')")
        if d is not None and (o["dag_id"], o["run_id"], o["symbol"], o["side"], float(o["qty"])) != (
                d["dag_id"], d["run_id"], d["symbol"], d["action"], float(d["order_qty"])):
            problems.append(f"order {o['client_order_id']} does not match its decision: {o} vs {d}")
    per_symbol = Counter(o["symbol"] for o in orders)
    doubled = sorted(s for s, n in per_symbol.items() if n > 1)
    return {"equity": equity, "exposure": exposure, "orders": orders, "decisions": decisions,
            "problems": problems, "doubled": doubled}


def serialisation_problems(book: dict[str, Any]) -> tuple[str | None, list[str]]:
    """Which DAG got the account first, and how the second failed to see the first (empty: it saw it)."""
    decisions = book["decisions"]
    by_dag = {dag: {d["symbol"]: d for d in decisions if d["dag_id"] == dag} for dag in DAGS}
    problems = [f"{dag} decided {sorted(rows)}, not {SYMBOLS}" for dag, rows in by_dag.items()
                if sorted(rows) != sorted(SYMBOLS)]
    if problems:
        return None, problems
    first, second = sorted(DAGS, key=lambda dag: min(d["created_at"] for d in by_dag[dag].values()))
    sent_first = [o for o in book["orders"] if o["dag_id"] == first]
    decided_second = min(d["created_at"] for d in by_dag[second].values())
    if sent_first and decided_second <= max(o["updated_at"] for o in sent_first):
        problems.append(f"{second} decided at {decided_second} before {first} had sent its orders")
    for symbol in SYMBOLS:
        a, b = by_dag[first][symbol], by_dag[second][symbol]
        # not vacuous: the first cycle alone buys more than half the limit, so a second full buy would break it
        if a["action"] != "buy" or not a["approved"] or float(a["order_qty"]) * float(a["price"]) <= \
                LIMIT / 2 * book["equity"]:
            problems.append(f"{first} did not buy over half the limit of {symbol}: {a['action']} "
                            f"{a['order_qty']} (approved {a['approved']}): the trial proves nothing")
        if float(a["current_qty"]) != 0.0:
            problems.append(f"{first} ({symbol}) sized from {a['current_qty']}, not an empty book")
        if float(b["current_qty"]) != float(a["order_qty"]):
            problems.append(f"{second} ({symbol}) sized from {b['current_qty']}, not the {a['order_qty']} "
                            f"{first} had ordered")
    return first, problems


# -- the trials ---------------------------------------------------------------------------------------------

DIALECTS = pytest.mark.parametrize("fresh_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                                   indirect=True, ids=["sqlite", "postgresql"])


@DIALECTS
def test_two_dags_in_two_processes_trading_one_account_hold_the_limits(fresh_url, request, inputs):
    """20 of 20 trials: limits hold, orders = approved decisions, the second cycle sized from the first's orders."""
    dialect = request.node.callspec.id
    bars, news = inputs
    held, first_by = 0, Counter()
    for trial in range(1, TRIALS + 1):
        url = fresh_url(trial)
        reports = run_trial(url, trial, bars, news)
        book = inspect_book(url)
        first, order = serialisation_problems(book)
        problems = book["problems"] + order
        assert not problems, (
            f"{dialect} trial {trial} of {TRIALS} broke (after {held} held): " + "; ".join(problems)
            + f"\nexposure {book['exposure']}\nreports {reports}")
        submitted = sorted(c for r in reports.values() for c in r["submitted"])
        assert submitted == sorted(o["client_order_id"] for o in book["orders"]), f"{dialect} trial {trial}"
        # the race was real: the second cycle was running before the first had sent its orders (it waited)
        second = next(dag for dag in DAGS if dag != first)
        sent = max(o["updated_at"] for o in book["orders"] if o["dag_id"] == first)
        assert reports[second]["started"] < sent, (
            f"{dialect} trial {trial}: {second} started at {reports[second]['started']}, after {first} had sent "
            f"its orders at {sent}: the cycles did not overlap")
        held += 1
        first_by[first] += 1
    assert held == TRIALS, f"{dialect}: {held} of {TRIALS} trials held"
    print(f"\n{dialect}: {held} of {TRIALS} trials held; got the account first: {dict(first_by)}")


@DIALECTS
def test_without_the_lock_the_same_trials_break_the_limit(fresh_url, request, inputs):
    """The teeth: with ``account_lock`` a no-op in both processes, and both cycles held right before recording
    their orders until both have checked (the interleaving two unserialised cycles can always meet), every
    trial ends with two orders per symbol and over the limit, which the checks above catch."""
    dialect = request.node.callspec.id
    bars, news = inputs
    broken = 0
    for trial in range(1, NO_LOCK_TRIALS + 1):
        url = fresh_url(trial)
        run_trial(url, trial, bars, news, no_lock=True)
        book = inspect_book(url)
        _, order = serialisation_problems(book)
        over = [s for s, x in book["exposure"].items() if x > LIMIT]
        assert order, f"{dialect} trial {trial}: without the lock the second cycle still saw the first's orders"
        if over and book["doubled"]:
            broken += 1
            assert all(x > 0.3 for x in book["exposure"].values()), book["exposure"]  # both bought ~18 % each
    print(f"\n{dialect} without the lock: {broken} of {NO_LOCK_TRIALS} trials broke the {LIMIT:.0%} limit")
    assert broken == NO_LOCK_TRIALS, f"{dialect}: only {broken} of {NO_LOCK_TRIALS} trials broke without the lock"
