"""Safe with money: the fault matrix of the trading cycle.

kill point x recovery x broker x timeframe, one scenario each:

- **kill points** (the worker dies with ``RuntimeError("worker killed")``, which the cycle does not catch):
  ``before-record`` (decisions and verdicts stored, ``ledger.record_intents`` dies), ``record-send`` (orders
  recorded ``pending_submit``, the first submit dies before its request reaches the broker), ``send-answer``
  (the broker accepted the first order, the worker dies before recording the answer; at Alpaca the POST's
  answer is also a 504 the hook reconciles first), ``inside-fill`` (simulated: the sync dies inside
  ``ledger.fill``'s transaction, after the order row was claimed and the fill row written; Alpaca: the sync
  dies recording a fill it read from Alpaca);
- **recovery**: ``retry-same-bar`` (same run, same instant), ``retry-later-bar`` (same run, the next bar's
  instant), ``next-run`` (the run is never retried; a new run comes at the next bar);
- **broker**: the simulated broker (its book in the ledger) and Alpaca (a stateful fake over requests-mock in
  front of alpaca-py's session, with positions and cash that move only by the fills the test makes);
- **timeframe**: daily equities at 15:00 New York, 30-minute equities inside the session, daily crypto on
  the 24/7 calendar across a weekend.

Decisions follow the news only (sentiment weight 1), so each cycle's intent is known: bullish headlines buy
about 8% of equity per symbol, bearish ones exit, none hold. Each scenario runs the killed cycle, its recovery,
then two more runs (a bearish one that sells what is held, one that fills those sells) and, after each of those
three cycles, checks the whole book (:func:`check_book`): no order reached the broker twice, one order per
approved decision and one decision per order, no bar decided twice, nothing left ``pending_submit``, no short
(``allow_short`` is off), positions equal to the filled orders, cash and the equity snapshot reconciled, and
every risk limit holding (a buy carried out twice breaks the 10% position limit). Alpaca fills only when the
test says so: what the dead worker placed is still open when the recovery decides.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd
import pytest

from airflow_provider_portfolio.hooks.alpaca import AlpacaHook
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import schema
from airflow_provider_portfolio.trading.brokers.alpaca import AlpacaBroker
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.cycle import CycleSettings, run_cycle
from airflow_provider_portfolio.trading.risk import RiskLimits
from tests.trading.conftest import NEW_YORK, BrokerWrapper, RecordingBroker, at, headlines
from tests.trading.test_alpaca_broker import PAPER, FakeAlpaca, load
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET

KILLS = ("before-record", "record-send", "send-answer", "inside-fill")
RECOVERIES = ("retry-same-bar", "retry-later-bar", "next-run")
BROKERS = ("simulated", "alpaca")
DAG = "fault_matrix"
INITIAL_CASH = 100_000.0
CONN_ID = "alpaca_matrix"

LIMITS = RiskLimits(min_confidence=0.3, max_position_fraction=0.10, max_orders_per_symbol_per_day=3,
                    max_orders_per_day=8, max_open_positions=5, allow_short=False)
#: Targets up to 9% of equity against a 10% limit: an order carried out twice breaks the position limit.
SETTINGS = CycleSettings(weights={"sentiment": 1.0}, min_score=0.05, fraction=0.09,
                         limits=LIMITS)
#: How far a position's value may drift above its limit between the decision's price and equity and the
#: final book (the open of the fill bar, equity moving with the market): far below a doubled position.
DRIFT = 1.10


@dataclass(frozen=True)
class Timeline:
    """Where a scenario trades: the bars' timeframe, five cycle instants one bar apart, the symbols per broker
    and how many calendar days of history the bars start before the last instant."""

    timeframe: str
    instants: tuple
    symbols: dict
    days: int


TIMELINES = {
    # 15:00 New York, Tuesday to the next Monday: each cycle decides the previous session's bar
    "daily": Timeline("1Day", tuple(at(d) for d in ("2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08",
                                                   "2024-03-11")),
                      {"simulated": ("AAPL", "MSFT"), "alpaca": ("AAPL", "MSFT")}, 45),
    # inside one session, 30 minutes apart: each cycle decides the bar that closed on the hour or half hour
    "30min": Timeline("30Min", tuple(at("2024-03-05", 10, 15) + timedelta(minutes=30 * k) for k in range(5)),
                      {"simulated": ("AAPL", "MSFT"), "alpaca": ("AAPL", "MSFT")}, 6),
    # crypto on the 24/7 calendar, Friday to Tuesday: Saturday and Sunday trade like any day
    "crypto-24/7": Timeline("1Day", tuple(at(d) for d in ("2024-03-08", "2024-03-09", "2024-03-10", "2024-03-11",
                                                         "2024-03-12")),
                            {"simulated": ("BTC/USD", "ETH/USD"), "alpaca": ("BTC/USD",)}, 40),
}

_BARS: dict[tuple, pd.DataFrame] = {}


def bars_for(timeline: Timeline, symbols: tuple) -> pd.DataFrame:
    """The synthetic market's bars up to the last instant's date (the cycle drops those not closed by its
    instant), built once per timeline and symbols."""
    key = (timeline.timeframe, timeline.instants[-1], symbols)
    if key not in _BARS:
        last = timeline.instants[-1]
        _BARS[key] = SyntheticMarket(seed=7).panel(list(symbols), (last - timedelta(days=timeline.days)).date(),
                                                   last.date(), timeline.timeframe)
    return _BARS[key].copy()


# -- faults -------------------------------------------------------------------------------------------------

def worker_killed() -> RuntimeError:
    return RuntimeError("worker killed")


class KillableBroker(BrokerWrapper):
    """A broker wrapper whose next submit dies once: ``before`` the request reaches the broker, or ``after`` the
    broker answered (accepted it) and before the cycle records the answer."""

    def __init__(self, inner, *, before: bool = False, after: bool = False) -> None:
        super().__init__(inner)
        self.before, self.after = before, after
        self.killed: list[str] = []

    def submit(self, request):
        if self.before:
            self.before = False
            self.killed.append(request.client_order_id)
            raise worker_killed()
        state = self.inner.submit(request)
        if self.after:
            self.after = False
            self.killed.append(request.client_order_id)
            raise worker_killed()
        return state


class DieOnce:
    """``target.name`` replaced (on the instance) by a version whose call for which ``when(*args, **kwargs)`` is
    true dies, once; :attr:`died` holds that call's arguments; :meth:`restore` puts the real one back."""

    def __init__(self, target, name: str, when) -> None:
        self.target, self.name = target, name
        self.died: list = []
        real = getattr(target, name)

        def patched(*args, **kwargs):
            if not self.died and when(*args, **kwargs):
                self.died.append((args, kwargs))
                raise worker_killed()
            return real(*args, **kwargs)

        setattr(target, name, patched)

    def restore(self) -> None:
        delattr(self.target, self.name)


# -- Alpaca with a book ---------------------------------------------------------------------------------------

class BookedAlpaca(FakeAlpaca):
    """:class:`FakeAlpaca` with an account that moves: positions and cash change only by :meth:`fill` (starting
    from the account and positions fixtures: 10 AAPL, 0.009975 BTCUSD), equity is cash plus positions at their
    last fill price (else the fixture's price), ``last_equity`` is the starting equity. Alpaca, like the
    ledger's invariants, has no idea of a short the account never meant: a position below zero is kept
    as it is (and the test fails on it)."""

    def __init__(self, mock) -> None:
        super().__init__(mock)
        self.template = {p["symbol"]: p for p in load("positions.json")}
        self.initial_qty = {s: float(p["qty"]) for s, p in self.template.items()}
        self.qty = dict(self.initial_qty)
        self.mark = {s: float(p["current_price"]) for s, p in self.template.items()}
        self.account = load("account.json")
        self.cash = float(self.account["cash"])
        self.last_equity = self.equity()
        self.fills: list[tuple[str, str, float, float]] = []  # (cid, key, signed qty, price)
        mock.get(f"{PAPER}/account", text=self._account)
        mock.get(f"{PAPER}/positions", text=self._positions)

    def equity(self) -> float:
        return self.cash + sum(q * self.mark[s] for s, q in self.qty.items())

    def fill(self, cid: str, price) -> None:
        order = self.orders[cid]
        assert order["status"] != "filled", f"Alpaca filled order {cid} twice"
        price = round(float(price), 6)
        super().fill(cid, repr(price))
        key = order["symbol"].replace("/", "")
        signed = float(order["qty"]) * (1 if order["side"] == "buy" else -1)
        self.qty[key] = round(self.qty.get(key, 0.0) + signed, 9)
        self.cash -= signed * price
        self.mark[key] = price
        self.fills.append((cid, key, signed, price))

    def _account(self, request, context) -> str:
        equity = self.equity()
        body = {**self.account, "cash": repr(round(self.cash, 6)), "equity": repr(round(equity, 6)),
                "portfolio_value": repr(round(equity, 6)), "buying_power": repr(round(max(self.cash, 0.0), 6)),
                "last_equity": repr(round(self.last_equity, 6))}
        return self._json(context, 200, body)

    def _positions(self, request, context) -> str:
        out = []
        for key, qty in self.qty.items():
            if not qty:
                continue
            base = self.template.get(key) or {**self.template["AAPL"], "symbol": key,
                                              "asset_id": self.assets[key]["id"]}
            out.append({**base, "qty": repr(qty), "qty_available": repr(qty), "side": "long" if qty > 0 else "short",
                        "current_price": repr(self.mark[key]), "market_value": repr(round(qty * self.mark[key], 6))})
        return self._json(context, 200, out)


# -- one scenario's desk ------------------------------------------------------------------------------------

class Desk:
    """The broker, ledger and bars of one scenario; :meth:`cycle` runs one task try as Airflow would."""

    def __init__(self, kind: str, timeline: Timeline, ledger, *, mock=None, add_connection=None,
                 no_sleep=None) -> None:
        self.kind, self.timeline, self.ledger = kind, timeline, ledger
        self.symbols = timeline.symbols[kind]
        self.bars = bars_for(timeline, self.symbols)
        self.settings = CycleSettings(timeframe=timeline.timeframe, weights=SETTINGS.weights,
                                      min_score=SETTINGS.min_score, fraction=SETTINGS.fraction, limits=LIMITS)
        if kind == "simulated":
            self.recording = RecordingBroker(SimulatedBroker(ledger, name="matrix", initial_cash=INITIAL_CASH,
                                                             slippage_bps=5.0, commission_bps=1.0,
                                                             commission_per_order=0.5))
            self.account = self.recording.account
        else:
            self.alpaca = BookedAlpaca(mock)
            add_connection(CONN_ID, "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET, timeout=7)
            self.no_sleep = no_sleep
            self.account = f"alpaca:{CONN_ID}"
        self.reports: list = []

    def broker(self):
        """The broker of one task try: the simulated book's recorder, or a new hook and AlpacaBroker."""
        if self.kind == "simulated":
            return self.recording
        hook = AlpacaHook(CONN_ID)
        hook.sleep = self.no_sleep.append
        return AlpacaBroker(hook, self.ledger)

    def cycle(self, run_id: str, step: int, *, news: float | None = None, broker=None):
        now = self.timeline.instants[step]
        items = headlines(dict.fromkeys(self.symbols, news), now) if news is not None else []
        report = run_cycle(list(self.symbols), self.bars, now, broker=broker or self.broker(), ledger=self.ledger,
                           dag_id=DAG, run_id=run_id, settings=self.settings, news=items)
        self.reports.append((run_id, step, report))
        return report

    def between_cycles(self) -> None:
        """Alpaca does not fill by itself: fill every order it holds open, at the decision's price."""
        if self.kind != "alpaca":
            return
        for cid, order in self.alpaca.orders.items():
            if order["status"] in ("accepted", "new"):
                self.alpaca.fill(cid, self.ledger.order(self.account, cid)["ref_price"])

    def sent(self) -> Counter:
        """client_order_id -> how many times it reached the broker (accepted by the simulated book; POSTed
        towards Alpaca)."""
        return Counter(self.recording.accepted) if self.kind == "simulated" else self.alpaca.posts()

    def at_broker(self) -> set[str]:
        """The client order ids the broker holds an order for."""
        if self.kind == "alpaca":
            return set(self.alpaca.orders)
        return {o["client_order_id"] for o in self.ledger.orders(self.account)
                if o["status"] not in ("pending_submit", "not_placed", "rejected")}


# -- the invariants ---------------------------------------------------------------------------------------

def _signed(side: str, qty: float) -> float:
    return float(qty) if side == "buy" else -float(qty)


def check_book(ledger, desk: Desk, limits: RiskLimits = LIMITS) -> None:
    """Everything that must hold after any fault and its recovery (see the module docstring)."""
    account = desk.account
    orders = ledger.orders(account)
    decisions = ledger.decisions(DAG)
    by_cid = {o["client_order_id"]: o for o in orders}
    assert len(by_cid) == len(orders)

    # 1. every client order id reached the broker at most once; the broker holds exactly the orders sent
    sent = desk.sent()
    assert all(n == 1 for n in sent.values()), f"an order reached the broker twice: {sent}"
    held = desk.at_broker()
    assert held <= set(by_cid), f"orders at the broker the ledger does not know: {held - set(by_cid)}"
    for cid, o in by_cid.items():
        if o["status"] in ("not_placed", "pending_submit"):
            assert cid not in held and sent[cid] == 0, o
        elif o["status"] != "rejected":
            assert cid in held and sent[cid] == 1, o
    if desk.kind == "alpaca":
        assert desk.alpaca.duplicates == 0
        for cid, theirs in desk.alpaca.orders.items():  # reconciled: the ledger says what Alpaca says
            ours = by_cid[cid]
            assert (ours["status"], ours["broker_order_id"]) == (theirs["status"], theirs["id"]), (ours, theirs)
            assert ours["symbol"].replace("/", "") == theirs["symbol"].replace("/", "")
            assert (ours["side"], ours["qty"]) == (theirs["side"], float(theirs["qty"]))

    # 2. one order per approved decision, one decision per order; each bar decided once (bar-aware)
    cids = Counter(d["client_order_id"] for d in decisions if d["client_order_id"])
    assert all(n == 1 for n in cids.values()), cids
    assert set(by_cid) <= set(cids), f"orders without a decision: {set(by_cid) - set(cids)}"
    decided = {d["client_order_id"]: d for d in decisions if d["client_order_id"]}
    for cid, o in by_cid.items():
        d = decided[cid]
        assert (d["symbol"], d["action"], d["order_qty"], d["run_id"]) == (o["symbol"], o["side"], o["qty"],
                                                                           o["run_id"]), (d, o)
        assert pd.Timestamp(d["bar_ts"]) == pd.Timestamp(o["bar_ts"])
        if o["status"] != "not_placed":
            assert d["approved"] is True, (d, o)
    for d in decisions:
        assert d["approved"] is not True or d["client_order_id"], d
    bars = Counter((d["symbol"], pd.Timestamp(d["bar_ts"])) for d in decisions)
    assert all(n == 1 for n in bars.values()), f"a bar decided twice: {bars}"

    # 3. every order settled: nothing left pending_submit
    assert not [o for o in orders if o["status"] == "pending_submit"]

    # 4. positions are the filled orders only (and the starting positions at Alpaca); no short, even once the
    #    open orders fill
    filled = [o for o in orders if o["status"] == "filled"]
    if desk.kind == "simulated":
        fills = ledger.fills(account)
        assert Counter(f["client_order_id"] for f in fills) == Counter(o["client_order_id"] for o in filled)
        expected: dict[str, float] = defaultdict(float)
        for f in fills:
            expected[f["symbol"]] += _signed(f["side"], f["qty"])
        positions = {s: p.qty for s, p in ledger.positions(account).items()}
        last_price = {f["symbol"]: float(f["price"]) for f in fills}
        cash, initial = ledger.cash(account)
        assert initial == INITIAL_CASH
        spent = sum(_signed(f["side"], f["qty"]) * float(f["price"]) + float(f["commission"]) for f in fills)
        assert cash == pytest.approx(initial - spent, rel=0, abs=1e-6)
        curve = ledger.equity_curve(account)
        assert curve, "no equity snapshot"
        last = curve[-1]
        assert last["cash"] == pytest.approx(cash, rel=0, abs=1e-6)
        assert last["cash"] + last["positions_value"] == pytest.approx(last["equity"], rel=0, abs=1e-6)
        marks = ledger.positions(account)
        assert last["positions_value"] == pytest.approx(
            sum(p.qty * (p.mark_price if p.mark_price is not None else p.avg_price) for p in marks.values()),
            rel=0, abs=1e-6)
        equity = last["equity"]
    else:
        alpaca = desk.alpaca
        expected = defaultdict(float)
        for symbol, qty in alpaca.initial_qty.items():
            expected[symbol] += qty
        for o in filled:
            expected[o["symbol"].replace("/", "")] += _signed(o["side"], o["filled_qty"])
        assert sorted((cid, _signed(by_cid[cid]["side"], by_cid[cid]["filled_qty"])) for cid, *_ in alpaca.fills) \
            == sorted((o["client_order_id"], _signed(o["side"], o["qty"])) for o in filled)
        positions = {s: q for s, q in alpaca.qty.items()}
        last_price = dict(alpaca.mark)
        equity = alpaca.equity()
        last = ledger.equity_curve(account)[-1]
        assert last["cash"] + last["positions_value"] == pytest.approx(last["equity"], rel=0, abs=1e-6)
    assert {s for s, q in positions.items() if abs(q) > 1e-9} == {s for s, q in expected.items() if abs(q) > 1e-9}
    for symbol, qty in positions.items():
        assert qty == pytest.approx(expected[symbol], abs=1e-9), symbol
        assert qty >= -1e-9, f"a short in {symbol} ({qty}) without allow_short"
    projected = dict(positions)
    for o in orders:
        if o["status"] not in schema.TERMINAL_ORDER_STATES:
            key = o["symbol"].replace("/", "") if desk.kind == "alpaca" else o["symbol"]
            projected[key] = projected.get(key, 0.0) + _signed(o["side"], o["qty"]) - _signed(
                o["side"], o["filled_qty"] or 0.0)
    assert all(q >= -1e-9 for q in projected.values()), f"open orders would leave a short: {projected}"

    # 5. every limit holds on the final book
    placed = [o for o in orders if o["status"] != "not_placed"]
    per_day: Counter = Counter()
    per_symbol_day: Counter = Counter()
    for o in placed:
        day = pd.Timestamp(o["created_at"]).tz_convert(NEW_YORK).date()
        per_day[day] += 1
        per_symbol_day[(day, o["symbol"])] += 1
        if o["side"] == "buy":  # with no short, every buy opens or adds (a sell reduces: exempt from notional)
            assert float(o["qty"]) * float(o["ref_price"]) <= limits.max_order_notional + 1e-6, o
    assert max(per_day.values(), default=0) <= limits.max_orders_per_day, per_day
    assert max(per_symbol_day.values(), default=0) <= limits.max_orders_per_symbol_per_day, per_symbol_day
    assert sum(1 for q in positions.values() if abs(q) > 1e-9) <= limits.max_open_positions
    assert equity > 0
    for symbol, qty in positions.items():
        if abs(qty) > 1e-9:
            fraction = abs(qty) * last_price[symbol] / equity
            assert fraction <= limits.max_position_fraction * DRIFT, (symbol, qty, last_price[symbol], equity)


# -- the matrix ---------------------------------------------------------------------------------------------

def _cases():
    out = []
    for timeframe in TIMELINES:
        for broker in BROKERS:
            for kill in KILLS:
                for recovery in RECOVERIES:
                    # No combination is skipped: Alpaca fills on its own side, so "inside-fill" there is the
                    # worker dying while the sync records a fill it read from Alpaca (the ledger's side of a fill).
                    out.append(pytest.param(kill, recovery, broker, timeframe,
                                            id=f"{kill}-x-{recovery}-x-{broker}-x-{timeframe}"))
    return out


def _check_the_kill(desk: Desk, kill: str, killed_run: str, fault: DieOnce | None,
                    killer: KillableBroker | None, fills_before: int) -> dict:
    """What the ledger and the broker hold at the moment of death; returns the orders the recovery settles."""
    ledger, account = desk.ledger, desk.account
    mine = [o for o in ledger.orders(account) if o["run_id"] == killed_run]
    approved = {d["client_order_id"] for d in ledger.decisions(DAG, killed_run) if d["approved"]}
    if kill == "before-record":
        assert fault.died and approved and mine == [], "decisions and verdicts stored, no order recorded"
        assert desk.at_broker() == set() and sum(desk.sent().values()) == 0
        return {"approved": approved}
    if kill == "record-send":
        assert killer.killed and {o["status"] for o in mine} == {"pending_submit"}
        assert {o["client_order_id"] for o in mine} == approved
        assert desk.at_broker() == set() and sum(desk.sent().values()) == 0
        return {"unsent": approved}
    if kill == "send-answer":
        [cid] = killer.killed
        assert desk.at_broker() == {cid} and desk.sent() == Counter([cid])
        statuses = {o["client_order_id"]: o["status"] for o in mine}
        assert set(statuses) == approved
        # the simulated book lives in the ledger: its acceptance shows; Alpaca's answer was never recorded
        assert statuses.pop(cid) == ("new" if desk.kind == "simulated" else "pending_submit")
        assert set(statuses.values()) <= {"pending_submit"}
        return {"sent": {cid}, "unsent": set(statuses)}
    # inside-fill: the killed run's sync died filling run-0's orders
    [(args, kwargs)] = fault.died
    to_fill = {o["client_order_id"] for o in ledger.orders(account) if o["run_id"] == "run-0"}
    assert to_fill and mine == []
    if desk.kind == "simulated":
        # died mid-transaction (order claimed, fill row written, position next): all of that fill rolled back
        fills = ledger.fills(account)
        assert len(fills) == fills_before
        statuses = Counter(o["status"] for o in ledger.orders(account) if o["run_id"] == "run-0")
        assert statuses == Counter({"filled": fills_before, "new": len(to_fill) - fills_before}), statuses
    else:
        cid = args[1]
        assert kwargs.get("status") == "filled" and desk.alpaca.orders[cid]["status"] == "filled"
        assert ledger.order(account, cid)["status"] == "accepted"  # Alpaca filled it; the ledger does not know
    return {"to_fill": to_fill}


@pytest.mark.parametrize(("kill", "recovery", "broker_kind", "timeframe"), _cases())
def test_fault_matrix(kill, recovery, broker_kind, timeframe, ledger, requests_mock, add_connection, no_sleep):
    desk = Desk(broker_kind, TIMELINES[timeframe], ledger, mock=requests_mock, add_connection=add_connection,
                no_sleep=no_sleep)

    # -- the cycle that dies: the first one, or (inside the fill) the one after it, whose sync fills the first's
    step, fault, killer, broker, fills_before = 0, None, None, None, 0
    if kill == "inside-fill":
        first = desk.cycle("run-0", 0, news=0.9)
        assert len(first.submitted) >= 1 and first.unknown == {}, first.to_dict()
        desk.between_cycles()
        step = 1
        nth = min(2, len(first.submitted))  # mid-sync: the second fill dies, the first one is committed
        fills_before = nth - 1
        seen: list = []
        if broker_kind == "simulated":
            def filling(conn, table, rows):  # inside ledger.fill: the position row comes after the fill row
                if table is schema.positions:
                    seen.append(rows)
                    return len(seen) == nth
                return False

            fault = DieOnce(ledger, "_insert_ignore", filling)
        else:
            def recording_a_fill(account, cid, **state):
                if state.get("status") == "filled":
                    seen.append(cid)
                    return len(seen) == nth
                return False

            fault = DieOnce(ledger, "update_order", recording_a_fill)
    else:
        if kill == "before-record":
            fault = DieOnce(ledger, "record_intents", lambda rows: True)
        if kill == "send-answer" and broker_kind == "alpaca":
            desk.alpaca.script = ["accept_then_504"]  # the POST's answer is lost as well: the hook looks it up
        broker = killer = KillableBroker(desk.broker(), before=kill == "record-send", after=kill == "send-answer")
    killed_run = f"run-{step}"
    with pytest.raises(RuntimeError, match="worker killed"):
        desk.cycle(killed_run, step, news=0.9, broker=broker)
    if fault is not None:
        fault.restore()  # the worker is gone; the next try runs the real code
    pending = _check_the_kill(desk, kill, killed_run, fault, killer, fills_before)
    # no fill at Alpaca before the recovery: what the dead worker placed is still open when the recovery
    # decides, so it must be counted as the position it will become (or the recovery buys it again)

    # -- the recovery
    if recovery == "retry-same-bar":
        report = desk.cycle(killed_run, step, news=0.9)
    else:
        step += 1
        report = desk.cycle(killed_run if recovery == "retry-later-bar" else f"run-{step}", step, news=0.9)
    assert report.unknown == {} and report.broker_rejected == {}, report.to_dict()
    orders = {o["client_order_id"]: o for o in ledger.orders(desk.account)}
    # What the death left behind is settled. A same-bar retry carries the stored decisions out, sending once
    # what never reached the broker; a later bar records what reached the broker and never sends the rest.
    for cid in pending.get("sent", ()):
        assert orders[cid]["status"] not in ("pending_submit", "not_placed"), orders[cid]
    for cid in pending.get("unsent", ()):
        if recovery == "retry-same-bar":
            assert orders[cid]["status"] not in ("pending_submit", "not_placed"), orders[cid]
        else:
            assert orders[cid]["status"] == "not_placed" and "never placed" in orders[cid]["reason"], orders[cid]
    if kill == "before-record":
        assert set(orders) & pending["approved"] == (pending["approved"] if recovery == "retry-same-bar" else set())
    if kill == "inside-fill":
        assert {orders[cid]["status"] for cid in pending["to_fill"]} == {"filled"}
    check_book(ledger, desk)  # after each cycle from here on, not only at the end: an exit hides a doubled buy
    desk.between_cycles()

    # -- the runs that come next: a bearish one sells what is held, the last one fills those sells
    sells = desk.cycle(f"run-{step + 1}", step + 1, news=-0.9)
    check_book(ledger, desk)
    desk.between_cycles()
    desk.cycle(f"run-{step + 2}", step + 2)
    for run_id, _, r in desk.reports[-2:]:
        assert r.unknown == {} and r.broker_rejected == {}, (run_id, r.to_dict())
    sold = [o for o in ledger.orders(desk.account) if o["run_id"] == f"run-{step + 1}" and o["side"] == "sell"]
    assert sold and len(sold) == len(sells.submitted), "the bearish run should sell what the book holds"
    assert {ledger.order(desk.account, o["client_order_id"])["status"] for o in sold} == {"filled"}
    check_book(ledger, desk)
