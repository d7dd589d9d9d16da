"""What must hold in the portfolio store after any fault: the desk's end-of-run checks over a store URL.

Plain functions over a store (a SQLAlchemy URL such as ``postgresql+psycopg://portfolio@127.0.0.1:PORT/portfolio``
or a :class:`~airflow_provider_portfolio.store.PortfolioStore`), reading it through the provider's own store
classes only. Each check returns a :class:`Check`: its counts and its violations (each a sentence naming the
check, the rows and what is wrong); :meth:`Check.passed` returns the counts or raises :class:`AssertionError`.
:func:`check_desk` runs them all and raises one :class:`AssertionError` listing every violation of every
check, so a fault test that ends badly shows all that went wrong at once.

- :func:`no_double_sends`: no client order id reached the simulated broker twice, and no decision reached it
  under two ids (the simulated broker's book is the ledger: an order "at the broker" is one it accepted,
  filled, canceled or refused, i.e. past ``pending_submit`` and not ``not_placed``);
- :func:`orders_match_decisions`: one order per approved decision and one decision per order, nothing left
  ``pending_submit`` or ``unknown``;
- :func:`book_reconciles`: positions are the filled orders, cash is the initial cash moved by the fills, and
  the last equity snapshot is the book valued at its marks (cash + positions value = equity, within a cent);
- :func:`bars_complete`: one bar per session of each symbol's calendar (XNYS sessions for equities, every
  UTC day for crypto pairs) in a date range, nothing off the calendar, no (symbol, timeframe, ts) twice;
- :func:`forecast_runs_complete`: no half-written forecast run: each (run_id, model, symbol, timeframe) key
  holds steps 1..horizon of one ``asof`` and its evaluation row.

Keys the store's schema makes unique (``orders`` and ``fills`` on (account, client_order_id), ``bars`` on
(symbol, timeframe, ts)) are counted all the same: a duplicate there would mean the constraint is gone.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from airflow_provider_portfolio.exceptions import StoreError
from airflow_provider_portfolio.market.calendar import calendar_for_symbol
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, to_ns_array
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.accounting import QTY_DECIMALS, value_book
from airflow_provider_portfolio.trading.orders import client_order_id

__all__ = ["Check", "bars_complete", "book_reconciles", "check_desk", "forecast_runs_complete",
           "ledger_account", "no_double_sends", "orders_match_decisions"]

#: Statuses of an order the simulated broker never got: recorded only, or settled as never placed.
NOT_AT_BROKER = ("pending_submit", "not_placed")
#: Statuses that leave an order's fate open: recorded and never settled, or answered without a state.
UNSETTLED = ("pending_submit", "unknown")
#: How many offending rows a violation names (the count says how many there are).
SHOWN = 5
_QTY_EPS = 10.0 ** -QTY_DECIMALS


@dataclass
class Check:
    """One check's outcome: what it counted and what it found wrong.

    :param name: the check (named in every violation).
    :param counts: name -> count (orders, bars, duplicates...).
    :param violations: sentences naming the check, the rows and what is wrong; empty when it holds.
    """

    name: str
    counts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def fail(self, what: str, items: Sequence[Any] = ()) -> None:
        """Record a violation: ``what``, then up to :data:`SHOWN` of ``items`` and how many more there are."""
        shown = "; ".join(str(i) for i in list(items)[:SHOWN])
        more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
        self.violations.append(f"{self.name}: {what}" + (f": {shown}{more}" if shown else ""))

    def passed(self) -> dict[str, int]:
        """The counts when the check holds.

        :raises AssertionError: listing every violation.
        """
        if self.violations:
            raise AssertionError("\n".join(self.violations))
        return dict(self.counts)


def ledger_account(account: str) -> str:
    """The ledger account: ``account`` as given when it names one (``simulated:cluster``), else the simulated
    book of that name (``cluster`` -> ``simulated:cluster``)."""
    account = account.strip()
    return account if ":" in account else f"simulated:{account}"


@contextlib.contextmanager
def _opened(store: str | PortfolioStore) -> Iterator[PortfolioStore]:
    """The store itself, or one opened on the URL and closed after the check."""
    if isinstance(store, PortfolioStore):
        yield store
        return
    opened = PortfolioStore(store)
    try:
        yield opened
    finally:
        opened.dispose()


def _duplicate_keys(db: PortfolioStore, table: Any, key: Sequence[str], where: Sequence[Any] = ()) -> list[tuple]:
    """Key values of ``table`` held by more than one row (with the row count last)."""
    columns = [table.c[k] for k in key]
    with db.database.read(f"count duplicate keys of {table.name}") as conn:
        return [tuple(r) for r in conn.execute(select(*columns, func.count()).where(*where).group_by(*columns)
                                               .having(func.count() > 1)).all()]


def _when(value: Any) -> str:
    return pd.Timestamp(value).isoformat() if value is not None else "None"


def _signed(side: str, qty: float) -> float:
    return float(qty) if side == "buy" else -float(qty)


# -- orders at the broker ----------------------------------------------------------------------------------

def no_double_sends(store: str | PortfolioStore, account: str) -> Check:
    """No client order id reached the broker twice, and no decision reached it twice under two ids.

    Counts ``orders`` (recorded), ``at_broker`` (past ``pending_submit`` and not ``not_placed``: the simulated
    book accepted, filled, canceled or refused them) and ``duplicates``, the sum of: client order ids held by
    more than one order or fill row (the schema's keys forbid it), broker order ids recorded for more than one
    client order id, and orders at the broker beyond the first for one (DAG, run, symbol, bar, side), whose
    client order id is a function of exactly those (:func:`~airflow_provider_portfolio.trading.orders.client_order_id`).
    An order whose id is not the one derived from its own fields is a violation as well.

    :param store: the store's URL, or the store.
    :param account: the ledger account (``simulated:<name>``; a bare name means the simulated book).
    """
    account = ledger_account(account)
    check = Check("no double send")
    with _opened(store) as db:
        orders = TradingLedger(db).orders(account)
        o, f = schema.orders.c, schema.fills.c
        twice = _duplicate_keys(db, schema.orders, ("account", "client_order_id"), [o.account == account])
        filled_twice = _duplicate_keys(db, schema.fills, ("account", "client_order_id"), [f.account == account])
    at_broker = [r for r in orders if r["status"] not in NOT_AT_BROKER]
    by_broker_id: dict[str, list[str]] = defaultdict(list)
    by_decision: dict[tuple, list[str]] = defaultdict(list)
    foreign = []
    for r in at_broker:
        if r["broker_order_id"]:
            by_broker_id[r["broker_order_id"]].append(r["client_order_id"])
        by_decision[(r["dag_id"], r["run_id"], r["symbol"], _when(r["bar_ts"]), r["side"])].append(
            r["client_order_id"])
    for r in orders:
        derived = client_order_id(r["dag_id"], r["run_id"], r["symbol"], r["bar_ts"], r["side"])
        if derived != r["client_order_id"]:
            foreign.append(f"{r['client_order_id']} ({r['side']} {r['symbol']}, run {r['run_id']}, bar "
                           f"{_when(r['bar_ts'])}: its decision's id is {derived})")
    shared_broker_ids = {b: cids for b, cids in by_broker_id.items() if len(cids) > 1}
    resent = {k: cids for k, cids in by_decision.items() if len(cids) > 1}
    if twice:
        check.fail("client order id(s) recorded more than once", [f"{cid} x{n}" for _, cid, n in twice])
    if filled_twice:
        check.fail("order(s) filled more than once", [f"{cid} x{n}" for _, cid, n in filled_twice])
    if shared_broker_ids:
        check.fail("broker order(s) recorded under several client order ids",
                   [f"{b}: {sorted(c)}" for b, c in shared_broker_ids.items()])
    if resent:
        check.fail("decision(s) that reached the broker twice, under several client order ids",
                   [f"{side} {symbol} of {dag}/{run} at bar {bar}: {sorted(c)}"
                    for (dag, run, symbol, bar, side), c in resent.items()])
    if foreign:
        check.fail("order(s) whose client order id is not derived from their decision", foreign)
    check.counts = {
        "orders": len(orders), "at_broker": len(at_broker),
        "duplicates": sum(n - 1 for *_, n in twice) + sum(n - 1 for *_, n in filled_twice)
        + sum(len(c) - 1 for c in shared_broker_ids.values()) + sum(len(c) - 1 for c in resent.values()),
    }
    return check


# -- orders and decisions -------------------------------------------------------------------------------------

def orders_match_decisions(store: str | PortfolioStore, account: str, *,
                           dag_ids: Collection[str] | None = None) -> Check:
    """One order per approved decision and one decision per order; nothing left ``pending_submit`` or ``unknown``.

    Each order of ``account`` has exactly one decision of the account carrying its client order id, deciding
    the same DAG, run, symbol, side (``action``), quantity and bar; an order that reached the broker has an
    approved decision. Each approved decision has a client order id and an order that reached the broker (not
    ``pending_submit``, not ``not_placed``). Counts ``decisions``, ``decisions_approved``, ``orders`` and
    ``pending`` (orders ``pending_submit`` or ``unknown``).

    :param store: the store's URL, or the store.
    :param account: the ledger account (a bare name means the simulated book).
    :param dag_ids: only the decisions and orders of these DAGs (default: all of the account's).
    """
    account = ledger_account(account)
    check = Check("orders = approved decisions")
    with _opened(store) as db:
        ledger = TradingLedger(db)
        orders = ledger.orders(account)
        decisions = [d for d in ledger.decisions() if d["account"] == account]
    if dag_ids is not None:
        wanted = set(dag_ids)
        orders = [o for o in orders if o["dag_id"] in wanted]
        decisions = [d for d in decisions if d["dag_id"] in wanted]
    by_cid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in decisions:
        if d["client_order_id"]:
            by_cid[d["client_order_id"]].append(d)
    orders_by_cid = {o["client_order_id"]: o for o in orders}

    shared = [f"{cid} on {len(ds)} decisions" for cid, ds in by_cid.items() if len(ds) > 1]
    orphans, mismatched, unapproved = [], [], []
    for o in orders:
        cid = o["client_order_id"]
        found = by_cid.get(cid)
        if not found:
            orphans.append(f"{cid} ({o['side']} {o['qty']:g} {o['symbol']}, {o['status']})")
            continue
        d = found[0]
        ours = (o["dag_id"], o["run_id"], o["symbol"], o["side"], float(o["qty"]), _when(o["bar_ts"]))
        theirs = (d["dag_id"], d["run_id"], d["symbol"], d["action"], float(d["order_qty"]), _when(d["bar_ts"]))
        if ours != theirs:
            mismatched.append(f"{cid}: order {ours} != decision {theirs}")
        if o["status"] not in NOT_AT_BROKER and d["approved"] is not True:
            unapproved.append(f"{cid} ({o['status']}) carries out a decision approved={d['approved']}")
    approved = [d for d in decisions if d["approved"] is True]
    no_id, not_carried_out = [], []
    for d in approved:
        what = (f"{d['action']} {d['order_qty']:g} {d['symbol']} of {d['dag_id']}/{d['run_id']} at bar "
                f"{_when(d['bar_ts'])}")
        cid = d["client_order_id"]
        if not cid:
            no_id.append(what)
        elif cid not in orders_by_cid:
            not_carried_out.append(f"{what}: no order {cid}")
        elif orders_by_cid[cid]["status"] == "not_placed":
            not_carried_out.append(f"{what}: order {cid} never placed ({orders_by_cid[cid]['reason']})")
    pending = [o for o in orders if o["status"] in UNSETTLED]

    if shared:
        check.fail("client order id(s) on more than one decision", shared)
    if orphans:
        check.fail("order(s) without a decision", orphans)
    if mismatched:
        check.fail("order(s) that differ from their decision", mismatched)
    if unapproved:
        check.fail("order(s) at the broker whose decision is not approved", unapproved)
    if no_id:
        check.fail("approved decision(s) without a client order id", no_id)
    if not_carried_out:
        check.fail("approved decision(s) with no order at the broker", not_carried_out)
    if pending:
        check.fail("order(s) left pending_submit or unknown",
                   [f"{o['client_order_id']} ({o['side']} {o['qty']:g} {o['symbol']}, {o['status']}, run "
                    f"{o['run_id']}: {o['reason'] or 'no reason'})" for o in pending])
    check.counts = {"decisions": len(decisions), "decisions_approved": len(approved), "orders": len(orders),
                    "pending": len(pending)}
    return check


# -- the book ----------------------------------------------------------------------------------------------

def book_reconciles(store: str | PortfolioStore, account: str, *, tolerance: float = 0.01) -> Check:
    """The simulated book reconciles: positions are the filled orders, cash the fills' money, equity the book's worth.

    - every filled order has exactly one fill and every fill a filled order, alike in symbol, side, quantity
      and price;
    - each symbol's position is the signed sum of its fills (to
      :data:`~airflow_provider_portfolio.trading.accounting.QTY_DECIMALS` decimals);
    - cash = initial cash - sum(signed quantity x price + commission) of the fills, within ``tolerance``;
    - the last equity snapshot holds that cash, the positions valued at their marks
      (:func:`~airflow_provider_portfolio.trading.accounting.value_book`) and cash + positions value = equity,
      each within ``tolerance``.

    Counts ``fills``, ``positions`` (open ones) and ``snapshots``.

    :param store: the store's URL, or the store.
    :param account: a simulated ledger account (a bare name means ``simulated:<name>``).
    :param tolerance: money, in the account's currency (default a cent).
    """
    account = ledger_account(account)
    check = Check("book reconciles")
    with _opened(store) as db:
        ledger = TradingLedger(db)
        try:
            book = ledger.book(account)
            cash, initial = ledger.cash(account)
        except StoreError as err:
            check.fail(f"no simulated book: {err}")
            return check
        orders = ledger.orders(account)
        fills = ledger.fills(account)
        curve = ledger.equity_curve(account)
    filled = {o["client_order_id"]: o for o in orders if o["status"] == "filled"}
    fill_ids = Counter(f["client_order_id"] for f in fills)
    unfilled = sorted(set(filled) - set(fill_ids))
    stray = sorted(set(fill_ids) - set(filled))
    if unfilled:
        check.fail("filled order(s) without a fill", unfilled)
    if stray:
        check.fail("fill(s) of an order that is not filled", stray)
    unlike = []
    for f in fills:
        o = filled.get(f["client_order_id"])
        if o is None:
            continue
        ours = (f["symbol"], f["side"], float(f["qty"]), float(f["price"]))
        theirs = (o["symbol"], o["side"], float(o["filled_qty"] or 0.0), float(o["filled_avg_price"] or 0.0))
        if ours[:2] != theirs[:2] or not math.isclose(ours[2], float(o["qty"]), abs_tol=_QTY_EPS) \
                or not math.isclose(ours[2], theirs[2], abs_tol=_QTY_EPS) or not math.isclose(ours[3], theirs[3],
                                                                                              rel_tol=1e-12):
            unlike.append(f"{f['client_order_id']}: fill {ours} != order {theirs}")
    if unlike:
        check.fail("fill(s) that differ from their order", unlike)

    expected: dict[str, float] = defaultdict(float)
    for f in fills:
        expected[f["symbol"]] += _signed(f["side"], f["qty"])
    held = {s: p.qty for s, p in book.positions.items()}
    wrong = [f"{s}: position {held.get(s, 0.0):g}, fills {round(expected.get(s, 0.0), QTY_DECIMALS):g}"
             for s in sorted(set(held) | set(expected))
             if abs(held.get(s, 0.0) - round(expected.get(s, 0.0), QTY_DECIMALS)) > _QTY_EPS]
    if wrong:
        check.fail("position(s) that are not the filled orders", wrong)

    moved = sum(_signed(f["side"], f["qty"]) * float(f["price"]) + float(f["commission"]) for f in fills)
    if abs(cash - (initial - moved)) > tolerance:
        check.fail(f"cash {cash:,.6f} is not the initial {initial:,.2f} less the fills' {moved:,.6f} "
                   f"(= {initial - moved:,.6f}; off by {cash - (initial - moved):+,.6f})")
    worth = value_book(book.cash, book.positions.values())
    if not curve:
        if orders:
            check.fail("no equity snapshot, yet the book has orders")
    else:
        last = curve[-1]
        at = f"the last equity snapshot ({_when(last['ts'])}, run {last['run_id']})"
        for name, theirs, ours in (("cash", last["cash"], worth.cash),
                                   ("positions value", last["positions_value"], worth.positions_value),
                                   ("equity", last["equity"], worth.equity)):
            if abs(float(theirs) - ours) > tolerance:
                check.fail(f"{at} holds {name} {float(theirs):,.6f}; the book's is {ours:,.6f}")
        total = float(last["cash"]) + float(last["positions_value"])
        if abs(total - float(last["equity"])) > tolerance:
            check.fail(f"{at}: cash + positions value = {total:,.6f} != equity {float(last['equity']):,.6f}")
    check.counts = {"fills": len(fills), "positions": sum(1 for q in held.values() if abs(q) > _QTY_EPS),
                    "snapshots": len(curve)}
    return check


# -- bars --------------------------------------------------------------------------------------------------

def bars_complete(store: str | PortfolioStore, symbols: Sequence[str], start: Any, end: Any, *,
                  timeframe: str = "1Day", exchange: str = DEFAULT_EXCHANGE, now: datetime | None = None) -> Check:
    """One bar per session of each symbol's calendar in [start, end], nothing off the calendar, nothing twice.

    The expected bars are the ``bar_index`` of each symbol's calendar
    (:func:`~airflow_provider_portfolio.market.calendar.calendar_for_symbol`: ``exchange`` for equities, every
    UTC day for crypto pairs), less those not closed at ``now`` (the ETL never stores a bar in progress). Stored
    bars are read from the start of ``start`` to the end of ``end`` (UTC dates). Counts ``bars`` (stored, in
    range), ``bars_expected``, ``bars_missing``, ``bars_extra`` and ``bar_duplicates`` (the key forbids them).

    :param store: the store's URL, or the store.
    :param symbols: the symbols loaded.
    :param start: first session date (inclusive).
    :param end: last session date (inclusive).
    :param timeframe: the bars' timeframe.
    :param exchange: the calendar of equities.
    :param now: the instant deciding which bars have closed (default: the clock).
    """
    check = Check("bars complete")
    now_ns = pd.Timestamp(now if now is not None else pd.Timestamp.now(tz="UTC")).value
    lo = pd.Timestamp(pd.Timestamp(start).date(), tz="UTC")
    hi = pd.Timestamp(pd.Timestamp(end).date(), tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    counts = Counter({"bars": 0, "bars_expected": 0, "bars_missing": 0, "bars_extra": 0, "bar_duplicates": 0})
    missing, extra, twice = [], [], []
    with _opened(store) as db:
        for symbol in symbols:
            calendar = calendar_for_symbol(symbol, exchange)
            expected = calendar.bar_index(lo.date(), hi.date(), timeframe)
            _, ends = calendar.bar_bounds(to_ns_array(expected), timeframe)
            expected = expected[ends <= now_ns]
            stored = db.bar_timestamps(symbol, timeframe, min(lo, expected[0]) if len(expected) else lo,
                                       max(hi, expected[-1]) if len(expected) else hi)
            gone = expected.difference(stored)
            off = stored.difference(expected)
            dup = stored[stored.duplicated()]
            counts.update({"bars": len(stored), "bars_expected": len(expected), "bars_missing": len(gone),
                           "bars_extra": len(off), "bar_duplicates": len(dup)})
            if len(gone):
                missing.append(f"{symbol} ({calendar.name}) lacks {len(gone)}: "
                               + ", ".join(t.isoformat() for t in gone[:SHOWN]))
            if len(off):
                extra.append(f"{symbol} ({calendar.name}) has {len(off)}: "
                             + ", ".join(t.isoformat() for t in off[:SHOWN]))
            if len(dup):
                twice.append(f"{symbol}: " + ", ".join(t.isoformat() for t in dup[:SHOWN]))
    if missing:
        check.fail(f"{timeframe} bar(s) missing for sessions of the calendar", missing)
    if extra:
        check.fail(f"{timeframe} bar(s) the calendar does not hold by now (no such session, or not closed yet)", extra)
    if twice:
        check.fail(f"{timeframe} bar(s) stored twice (symbol, timeframe, ts)", twice)
    check.counts = dict(counts)
    return check


# -- forecast runs -----------------------------------------------------------------------------------------

def forecast_runs_complete(store: str | PortfolioStore, *, models: Collection[str] | None = None,
                           symbols: Sequence[str] | None = None) -> Check:
    """No half-written forecast run: every stored key is whole.

    A run writes each (run_id, model, symbol, timeframe) key whole, in one transaction
    (:meth:`PortfolioStore.write_forecasts`): forecast steps 1..horizon of one ``asof``, their ``target_ts``
    increasing, and one evaluation row of that ``asof`` and horizon. The one key with an evaluation and no
    forecast is the ensemble's for a symbol no model was healthy for (label ``unhealthy``).

    Counts ``forecast_runs`` (distinct (run_id, model)), ``forecast_keys``, ``forecast_rows`` and
    ``evaluation_rows``.

    :param store: the store's URL, or the store.
    :param models: check only these models' runs (default: every model's).
    :param symbols: when given, every run of the models checked must hold a key for each of these symbols (a run
        that forecast fewer symbols than it was asked for is incomplete too).
    """
    check = Check("forecast runs complete")
    with _opened(store) as db:
        model_list = None if models is None else list(models)
        forecasts = db.read_forecasts(None, model_list, None, latest=False)
        evaluations = db.read_evaluations(None, model_list, None, latest=False)
    key = list(schema.FORECAST_RUN_KEY)
    evaluated = {tuple(r[k] for k in key): r for r in evaluations.to_dict("records")}
    steps_of = {k: g for k, g in forecasts.groupby(key, sort=True)} if len(forecasts) else {}
    broken, unevaluated, bare = [], [], []
    for k, rows in steps_of.items():
        name = "/".join(str(v) for v in k)
        ev = evaluated.get(k)
        if ev is None:
            unevaluated.append(f"{name} ({len(rows)} step(s))")
            continue
        horizon = int(ev["horizon"])
        steps = sorted(int(s) for s in rows["step"])
        problems = []
        if steps != list(range(1, horizon + 1)):
            problems.append(f"steps {steps} of horizon {horizon}")
        asofs = set(rows["asof"])
        if asofs != {ev["asof"]}:
            problems.append(f"asof {sorted(_when(a) for a in asofs)} vs the evaluation's {_when(ev['asof'])}")
        targets = rows.sort_values("step")["target_ts"]
        if not targets.is_monotonic_increasing or targets.duplicated().any():
            problems.append("target_ts not increasing with the step")
        if problems:
            broken.append(f"{name}: " + ", ".join(problems))
    for k, ev in evaluated.items():
        if k not in steps_of and not (k[1] == "ensemble" and ev["label"] == "unhealthy"):
            bare.append(f"{'/'.join(str(v) for v in k)} (label {ev['label']})")
    if broken:
        check.fail("forecast key(s) without all their steps", broken)
    if unevaluated:
        check.fail("forecast key(s) without their evaluation row", unevaluated)
    if bare:
        check.fail("evaluation row(s) without their forecasts", bare)
    runs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for run_id, model, symbol, _ in set(steps_of) | set(evaluated):
        runs[(run_id, model)].add(symbol)
    if symbols is not None:
        short = [f"{run_id}/{model} lacks {sorted(set(symbols) - have)[:SHOWN]}"
                 for (run_id, model), have in sorted(runs.items()) if set(symbols) - have]
        if short:
            check.fail("forecast run(s) without every symbol", short)
    check.counts = {"forecast_runs": len(runs), "forecast_keys": len(set(steps_of) | set(evaluated)),
                    "forecast_rows": len(forecasts), "evaluation_rows": len(evaluations)}
    return check


# -- the desk ----------------------------------------------------------------------------------------------

def check_desk(store: str | PortfolioStore, *, account: str, symbols: Sequence[str], start: Any, end: Any,
               timeframe: str = "1Day", exchange: str = DEFAULT_EXCHANGE, dag_ids: Collection[str] | None = None,
               forecast_models: Collection[str] | None = None, forecast_symbols: Sequence[str] | None = None,
               now: datetime | None = None, tolerance: float = 0.01) -> dict[str, int]:
    """Every check of this module on one store; the counts, or one :class:`AssertionError` listing every violation.

    :param store: the store's URL, or the store.
    :param account: the simulated book's ledger account (``simulated:cluster``, or the name ``cluster``).
    :param symbols: the symbols whose bars were loaded.
    :param start: first session date of the bars (inclusive).
    :param end: last session date of the bars (inclusive).
    :param timeframe: the bars' timeframe.
    :param exchange: the calendar of equities.
    :param dag_ids: the trading DAGs whose decisions and orders are matched (default: every one on the account).
    :param forecast_models: the models whose runs are checked (default: every model's).
    :param forecast_symbols: when given, each run of those models must hold every one of these symbols.
    :param now: the instant deciding which bars have closed (default: the clock).
    :param tolerance: money, in the account's currency (default a cent).
    :return: ``orders``, ``at_broker``, ``fills``, ``positions``, ``decisions``, ``decisions_approved``,
        ``duplicates`` (0), ``pending`` (0), ``bars``, ``bars_expected``, ``forecast_runs``, ``forecast_keys``.
    :raises AssertionError: naming each check that failed and what it found.
    """
    with _opened(store) as db:
        checks = [
            no_double_sends(db, account),
            orders_match_decisions(db, account, dag_ids=dag_ids),
            book_reconciles(db, account, tolerance=tolerance),
            bars_complete(db, symbols, start, end, timeframe=timeframe, exchange=exchange, now=now),
            forecast_runs_complete(db, models=forecast_models, symbols=forecast_symbols),
        ]
    violations = [v for c in checks for v in c.violations]
    if violations:
        raise AssertionError(f"the desk's store {db.url}: {len(violations)} violation(s):\n" + "\n".join(violations))
    counts = {k: v for c in checks for k, v in c.counts.items()}
    wanted = ("orders", "at_broker", "fills", "positions", "decisions", "decisions_approved", "duplicates", "pending",
              "bars", "bars_expected", "forecast_runs", "forecast_keys")
    return {k: counts[k] for k in wanted}
