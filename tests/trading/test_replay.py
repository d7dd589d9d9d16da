"""Safe with money, replayed: six months of daily and 30-minute cycles on the synthetic market and the simulated
broker, run at instants chosen to hit the look-ahead traps (before the open, after the close, weekends, off the
bar grid and on it), every fill checked against the calendar.

Each cycle is handed the bars up to a day after its instant, as a vendor answering whole days would: the bar
still forming and even tomorrow's bars are in its input, and the cycle must drop them itself. For every fill:

(a) its bar started (a daily bar at its session's open, an intraday bar at its timestamp) at or after the order;
(b) its bar started at or after its session's open (the 24/7 calendar's for crypto);
(c) its bar is later than the bar the order was decided on (and that bar had closed when the order was placed);
(d) the cycle that recorded it ran at or after its bar started;
(e) its price is the bar's open moved by the slippage, against the side;
and it is the first bar that qualifies, recorded by the first cycle that could see it started. Bar starts are
computed here from the exchange's sessions (``MarketCalendar.sessions``), independently of ``bar_times``, and
the two are compared on every bar of the replay (DST changes, holidays, the early close of 2024-07-03).

The traps are counted, so the test cannot pass vacuously: fills whose order was placed while the first bar after
its decided bar had already started (a naive "next bar" fill would use a price from before the order), and fills
with a cycle between the order and the fill bar's start while that bar's row was already in its input (the
defect: a daily bar is stamped at midnight UTC, a 15:00 buy was filled at 09:00 next day at the 09:30 open).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.market.calendar import MarketCalendar, bar_times
from airflow_provider_portfolio.market.params import is_crypto
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.trading.cycle import CycleSettings, run_cycle
from airflow_provider_portfolio.trading.risk import RiskLimits
from tests.trading.conftest import NEW_YORK, headlines

SYMBOLS = ["AAPL", "MSFT", "BTC/USD"]
FIRST, LAST = "2024-01-02", "2024-07-05"  # six months and the early close of 2024-07-03
SLIPPAGE = 5e-4  # the broker fixture's 5 bps
WEIGHTS = {"technical": 0.4, "sentiment": 0.6}
LIMITS = RiskLimits(min_confidence=0.3)
XNYS = MarketCalendar("XNYS")


def local(day: pd.Timestamp, hour: int, minute: int = 0) -> pd.Timestamp:
    """``day`` at ``hour:minute`` New York wall-clock time (right across DST changes), in UTC."""
    return pd.Timestamp(f"{day.date()} {hour:02d}:{minute:02d}").tz_localize(NEW_YORK).tz_convert("UTC")


def _days() -> pd.DatetimeIndex:
    return pd.date_range(FIRST, LAST)


#: Daily-bar cycles: one a day but Sunday, at a time that rotates with the day (five times over six days a week:
#: each weekday meets each time). 08:00 and 09:00 run before the open, 17:30 after the close, Saturday's 11:00 on
#: a weekend (an equity order is refused then, crypto trades); a 12:00 or 15:00 order followed by a 08:00 or
#: 09:00 cycle next session day is the defect's sequence.
DAILY_ROTATION = [(15, 0), (9, 0), (12, 0), (8, 0), (17, 30)]
SATURDAY = (11, 0)


def daily_instants() -> list[pd.Timestamp]:
    out = []
    for k, day in enumerate(d for d in _days() if d.weekday() != 6):
        hour, minute = SATURDAY if day.weekday() == 5 else DAILY_ROTATION[k % len(DAILY_ROTATION)]
        out.append(local(day, hour, minute))
    return out


def intraday_instants() -> list[pd.Timestamp]:
    """Six cycles a weekday, from before the open to after the close: on a bar start (09:30, 13:30, 10:00...) on
    some days, off the 30-minute grid on others; the last one in the session while its last bar is forming (an
    order then fills at the next session's open); two a weekend day (crypto)."""
    out = []
    for k, day in enumerate(_days()):
        if day.weekday() >= 5:
            out += [local(day, 3, 10), local(day, 14, 40)]
            continue
        shift = (0, 10, 30, 45)[k % 4]  # about a third of the session's instants on the 30-minute grid
        minutes = [8 * 60 + 5 + shift // 2, 9 * 60 + 30 + shift, 11 * 60 + 15 + shift, 13 * 60 + 30 + shift,
                   15 * 60 + 45 + shift // 5, 18 * 60 + 20 + shift]
        out += [local(day, m // 60, m % 60) for m in minutes]
    return out


def sentiment(symbols, k: int) -> dict[str, float]:
    """Strong headlines whose sign flips every other step ``k``, staggered by symbol: positions open and close."""
    return {s: 0.9 if ((k + i) // 2) % 2 == 0 else -0.9 for i, s in enumerate(symbols)}


# -- the calendar, independently of bar_times ------------------------------------------------------------------

def independent_starts(bars: pd.DataFrame) -> np.ndarray:
    """When each bar's open exists, from the sessions alone: a daily bar at its session's open (equities 09:30
    New York, crypto 00:00 UTC), an intraday bar at its timestamp, which must lie inside a session."""
    out = np.empty(len(bars), dtype=np.int64)
    ts = pd.DatetimeIndex(bars["ts"])
    for name, rows in (("24/7", bars["symbol"].map(is_crypto).to_numpy()),
                       ("XNYS", ~bars["symbol"].map(is_crypto).to_numpy())):
        sessions = MarketCalendar(name).sessions(ts[rows].min().date() - pd.Timedelta(days=1),
                                                 ts[rows].max().date() + pd.Timedelta(days=1))
        opens = pd.DatetimeIndex(sessions["market_open"]).as_unit("ns").asi8
        closes = pd.DatetimeIndex(sessions["market_close"]).as_unit("ns").asi8
        stamps = ts[rows].as_unit("ns").asi8
        if (bars["timeframe"] == "1Day").all():
            day = pd.DatetimeIndex(ts[rows].tz_convert(None).normalize())
            assert (ts[rows].tz_convert(None) == day).all(), "daily bars are stamped at midnight UTC"
            pos = sessions.index.get_indexer(day)
            assert (pos >= 0).all(), "a daily bar on a day without a session"
            out[rows] = opens[pos]
        else:
            pos = np.searchsorted(opens, stamps, side="right") - 1
            assert (pos >= 0).all() and (stamps < closes[pos]).all(), "an intraday bar outside every session"
            out[rows] = stamps
    return out


# -- the replay -------------------------------------------------------------------------------------------------

@dataclass
class Replay:
    timeframe: str
    bars: pd.DataFrame
    instants: list[pd.Timestamp]
    window: pd.Timedelta
    fill_cycle: dict[str, int] = field(default_factory=dict)  # client order id -> index of the cycle that filled it
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def dag_of(now: pd.Timestamp) -> str:
    """Two DAGs trade the book: one runs in New York's session, the other outside it (an operator run by hand, a
    back-fill). Each decides a bar once (``bar_aware``); a bar first seen after the close by the off-hours DAG is
    still decided by the session DAG the next day, so equities trade, while the off-hours DAG's cycles sync the
    broker before the open: the defect's sequence."""
    return "replay-session" if XNYS.is_open(now) else "replay-off-hours"


def run_replay(broker, ledger, market: SyntheticMarket, timeframe: str, instants: list[pd.Timestamp],
               window: pd.Timedelta) -> Replay:
    """Run a cycle at each instant on the bars from ``window`` before it up to the end of the day after it."""
    settings = CycleSettings(timeframe=timeframe, weights=WEIGHTS, min_score=0.05, limits=LIMITS)
    first = (instants[0] - window).date()
    last = (instants[-1] + pd.Timedelta(days=1)).date()
    bars = market.panel(SYMBOLS, first, last, timeframe)
    stamps = pd.DatetimeIndex(bars["ts"])
    replay = Replay(timeframe, bars, instants, window)
    seen: set[str] = set()
    started, cpu = time.perf_counter(), time.process_time()
    for k, now in enumerate(instants):
        tomorrow_end = now.normalize() + pd.Timedelta(days=2)  # every bar of the instant's UTC day and the next
        given = bars[(stamps >= now - window) & (stamps < tomorrow_end)]
        report = run_cycle(SYMBOLS, given, now.to_pydatetime(), broker=broker, ledger=ledger, dag_id=dag_of(now),
                           run_id=f"c{k:05d}", settings=settings, news=headlines(sentiment(SYMBOLS, k), now))
        assert report.unknown == {} and report.broker_rejected == {}, (now, report.to_dict())
        if not report.synced:  # no order changed at the broker: no fill (a miss would fail the audit's "first")
            continue
        for fill in ledger.fills(broker.account):
            if fill["client_order_id"] not in seen:
                seen.add(fill["client_order_id"])
                replay.fill_cycle[fill["client_order_id"]] = k
    replay.seconds, replay.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return replay


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass
class Audit:
    fills: int = 0
    equity_fills: int = 0
    crypto_fills: int = 0
    forming_trap: int = 0  # the first bar after the decided one had started before the order
    stamp_trap: int = 0  # a cycle ran between the order and the fill bar's start with that bar in its input
    daily_defect: int = 0  # a cycle ran after the daily fill bar's stamp and before its session opened
    out_of_hours_order: int = 0  # the order was placed while New York was closed
    out_of_hours_fill: int = 0  # the fill was recorded by a cycle while New York was closed
    sides: set = field(default_factory=set)


def audit(replay: Replay, broker, ledger) -> Audit:
    """Check every fill of the replay (see the module docstring) and the book; count the traps met."""
    bars = replay.bars.reset_index(drop=True)
    starts = independent_starts(bars)
    rule_starts, rule_ends = bar_times(bars)
    np.testing.assert_array_equal(rule_starts, starts, err_msg="bar_times disagrees with the sessions")
    ends = dict(zip(zip(bars["symbol"], pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8, strict=True),
                    rule_ends, strict=True))
    by_symbol = {s: (pd.DatetimeIndex(g["ts"]).as_unit("ns").asi8, starts[g.index], g["open"].to_numpy())
                 for s, g in bars.groupby("symbol")}
    instants = np.array([t.value for t in replay.instants], dtype=np.int64)
    run_instant = {f"c{k:05d}": t for k, t in enumerate(replay.instants)}
    orders = {o["client_order_id"]: o for o in ledger.orders(broker.account)}
    result = Audit()
    fills = ledger.fills(broker.account)
    assert {f["client_order_id"] for f in fills} == set(replay.fill_cycle)
    for fill in fills:
        cid = fill["client_order_id"]
        order = orders[cid]
        symbol = fill["symbol"]
        placed = _utc(order["created_at"])
        assert placed == run_instant[order["run_id"]], order  # created_at is the instant of the cycle that sent it
        decided, bar = _utc(order["bar_ts"]).value, _utc(fill["bar_ts"]).value
        ts, start, open_ = by_symbol[symbol]
        [row] = np.flatnonzero(ts == bar)
        recorded = replay.instants[replay.fill_cycle[cid]]
        where = f"{symbol} {order['side']} placed {placed}, decided on {_utc(decided)}, filled on {_utc(bar)}"

        assert ends[(symbol, decided)] <= placed.value, f"decided on a bar not closed at the order: {where}"
        assert start[row] >= placed.value, f"(a) fill bar started before the order: {where}"
        session = MarketCalendar("24/7" if is_crypto(symbol) else "XNYS").sessions(
            _utc(start[row]).date() - pd.Timedelta(days=1), _utc(start[row]).date())
        opened = session["market_open"][session["market_open"] <= _utc(start[row])].iloc[-1]
        assert opened.value <= start[row] < session["market_close"][session["market_open"] == opened].iloc[0].value, \
            f"(b) fill bar did not start inside a session: {where}"
        if replay.timeframe == "1Day" and not is_crypto(symbol):
            assert start[row] == opened.value, f"(b) a daily bar starts at its session's open: {where}"
        assert bar > decided, f"(c) fill bar not after the decided bar: {where}"
        assert recorded.value >= start[row], f"(d) filled by the cycle at {recorded}, before its bar started: {where}"
        side = 1.0 if order["side"] == "buy" else -1.0
        assert fill["price"] == pytest.approx(open_[row] * (1 + side * SLIPPAGE), rel=1e-12), \
            f"(e) price {fill['price']} is not the open {open_[row]} with slippage: {where}"
        # the first bar that qualifies, recorded by the first cycle that could see it started
        eligible = np.flatnonzero((ts > decided) & (start >= placed.value))
        assert eligible[0] == row, f"filled on {_utc(bar)}, the first eligible bar is {_utc(ts[eligible[0]])}: {where}"
        later = np.flatnonzero((instants > placed.value) & (instants >= start[row]))
        assert replay.instants[later[0]] == recorded, f"filled at {recorded}, first able {replay.instants[later[0]]}"

        result.fills += 1
        result.sides.add(order["side"])
        if is_crypto(symbol):
            result.crypto_fills += 1
        else:
            result.equity_fills += 1
        if start[np.flatnonzero(ts > decided)[0]] < placed.value:
            result.forming_trap += 1
        between = [t for t in replay.instants if placed < t and t.value < start[row]
                   and bar < (t.normalize() + pd.Timedelta(days=2)).value and bar >= (t - replay.window).value]
        if between:
            result.stamp_trap += 1
            if replay.timeframe == "1Day" and not is_crypto(symbol) and any(t.value >= bar for t in between):
                result.daily_defect += 1  # a cycle after the bar's midnight-UTC stamp, before its session opened
        result.out_of_hours_order += not XNYS.is_open(placed)
        result.out_of_hours_fill += not XNYS.is_open(recorded)

    # an order still open at the end had no qualifying bar started by the last cycle
    for order in orders.values():
        if order["status"] in ("new", "accepted", "partially_filled"):
            ts, start, _ = by_symbol[order["symbol"]]
            eligible = np.flatnonzero((ts > _utc(order["bar_ts"]).value) & (start >= _utc(order["created_at"]).value))
            assert not eligible.size or start[eligible[0]] > instants[-1], order
    check_book(broker, ledger)
    return result


def check_book(broker, ledger) -> None:
    """Cash and positions are the sums of the fills; every snapshot's cash + positions value is its equity."""
    fills = ledger.fills(broker.account)
    cash, initial = ledger.cash(broker.account)
    spent = sum((f["qty"] if f["side"] == "buy" else -f["qty"]) * f["price"] + f["commission"] for f in fills)
    assert cash == pytest.approx(initial - spent, rel=0, abs=1e-6)
    signed: dict[str, float] = {}
    for f in fills:
        signed[f["symbol"]] = signed.get(f["symbol"], 0.0) + (f["qty"] if f["side"] == "buy" else -f["qty"])
    positions = ledger.positions(broker.account)
    assert {s for s, p in positions.items() if p.qty} == {s for s, q in signed.items() if abs(q) > 1e-9}
    for symbol, position in positions.items():
        assert position.qty == pytest.approx(signed.get(symbol, 0.0), abs=1e-9)
        assert position.qty >= 0  # no shorts allowed: a sell never goes below flat
    curve = ledger.equity_curve(broker.account)
    for row in curve:
        assert row["cash"] + row["positions_value"] == pytest.approx(row["equity"], abs=1e-6)
    assert curve[-1]["equity"] == pytest.approx(
        cash + sum(p.qty * p.mark_price for p in positions.values() if p.qty), abs=1e-6)


def _summary(name: str, replay: Replay, result: Audit) -> str:
    return (f"{name}: {len(replay.instants)} cycles in {replay.seconds:.1f} s ({replay.cpu_seconds:.1f} s CPU), "
            f"{result.fills} fills "
            f"({result.equity_fills} equity, {result.crypto_fills} crypto); forming-bar trap {result.forming_trap}, "
            f"stamp trap {result.stamp_trap} (daily defect's sequence {result.daily_defect}), orders placed / fills "
            f"recorded with New York closed {result.out_of_hours_order} / {result.out_of_hours_fill}")


# -- the tests ---------------------------------------------------------------------------------------------------

def test_six_months_of_daily_cycles_fill_only_on_prices_that_existed(broker, ledger, market, capsys):
    instants = daily_instants()
    replay = run_replay(broker, ledger, market, "1Day", instants, pd.Timedelta(days=200))
    result = audit(replay, broker, ledger)
    with capsys.disabled():
        print("\n" + _summary("daily", replay, result))
    # seed 7 gives 204 fills over 160 cycles (86 equity, 118 crypto); the bounds leave a margin of about a third
    assert result.fills >= 150 and result.sides == {"buy", "sell"}
    assert result.equity_fills >= 60 and result.crypto_fills >= 80
    # the traps were met, many times: a naive "next bar" fill would have used a price from before the order ...
    assert result.forming_trap >= result.fills * 3 // 4
    # ... and a cycle ran after the fill bar's midnight-UTC stamp, before its session opened (the defect)
    assert result.daily_defect >= 45 and result.stamp_trap >= result.fills // 4
    # most fills were recorded, and many orders placed, while New York was closed
    assert result.out_of_hours_fill >= result.fills // 2 and result.out_of_hours_order >= 50


@pytest.mark.month
def test_six_months_of_30_minute_cycles_fill_only_on_prices_that_existed(broker, ledger, market, capsys):
    instants = intraday_instants()
    replay = run_replay(broker, ledger, market, "30Min", instants, pd.Timedelta(days=14))
    result = audit(replay, broker, ledger)
    with capsys.disabled():
        print("\n" + _summary("30-minute", replay, result))
    # seed 7 gives 1368 fills over 908 cycles (755 equity, 613 crypto); the bounds leave a margin of about a third
    assert result.fills >= 900 and result.sides == {"buy", "sell"}
    assert result.equity_fills >= 500 and result.crypto_fills >= 400
    assert result.forming_trap >= result.fills // 2  # the bar forming at the order had started before it
    assert result.stamp_trap >= 120  # orders of the session's last cycle: a night and a morning before their fill
    assert result.out_of_hours_fill >= result.fills // 8 and result.out_of_hours_order >= 150


def test_the_instants_meet_every_kind_of_hour():
    """The schedules cover what the traps need: before the open, in the session, after the close, weekends, and
    intraday instants both on the 30-minute grid and off it."""
    for instants in (daily_instants(), intraday_instants()):
        assert instants == sorted(instants) and len(set(instants)) == len(instants)
        assert instants[0] < local(pd.Timestamp("2024-01-03"), 0) and instants[-1] > local(pd.Timestamp("2024-07-01"), 0)
        kinds = set()
        for t in instants:
            ny = t.tz_convert(NEW_YORK)
            session = XNYS.sessions(ny.date(), ny.date())
            if ny.weekday() >= 5:
                kinds.add("weekend")
            elif session.empty:
                kinds.add("holiday")
            elif t < session["market_open"].iloc[0]:
                kinds.add("before open")
            elif t >= session["market_close"].iloc[0]:
                kinds.add("after close")
            else:
                kinds.add("in session")
        assert kinds == {"weekend", "holiday", "before open", "after close", "in session"}
    grid = [t.minute % 30 == 0 for t in intraday_instants() if XNYS.is_open(t)]
    assert 0.2 < sum(grid) / len(grid) < 0.8


def test_the_audit_catches_the_defect_it_is_for(broker, ledger, market, monkeypatch):
    """The defect put back (a bar counted as started at its timestamp, so a daily bar at midnight UTC): the first
    weeks of the daily replay already fill a 15:00 order at a cycle before the next open, and the audit says so."""
    from airflow_provider_portfolio.trading import cycle

    monkeypatch.setattr(cycle, "started_bars", lambda bars, now, exchange="XNYS": bars[bars["ts"] <= now])
    replay = run_replay(broker, ledger, market, "1Day", daily_instants()[:15], pd.Timedelta(days=200))
    with pytest.raises(AssertionError, match=r"\(d\) filled by the cycle at .* before its bar started"):
        audit(replay, broker, ledger)
