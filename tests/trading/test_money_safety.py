"""Safe with money: one test per defect found by replaying real history and injecting faults into the cycle.

Each failed on the code before its fix: look-ahead fills on daily bars, a daily loss limit that never fired on
daily bars, unsent orders counted as positions, retries that skipped the kill switch, two cycles trading one
account at once, and decisions on unchecked vendor bars.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import AccountLockedError
from airflow_provider_portfolio.trading.accounting import apply_fill
from airflow_provider_portfolio.trading.brokers import BrokerRejectedError, OrderRequest
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.cycle import CycleSettings, run_cycle
from airflow_provider_portfolio.trading.risk import RiskLimits
from tests.trading.conftest import at, headlines, held_by_another_cycle, history

SYMBOLS = ["AAPL", "MSFT", "TSLA"]
SETTINGS = CycleSettings(weights={"technical": 0.4, "sentiment": 0.6}, min_score=0.05,
                         limits=RiskLimits(min_confidence=0.3))


def cycle(broker, ledger, market, now, run_id, *, symbols=SYMBOLS, news=None, settings=SETTINGS, bars=None,
          dag_id="dag", timeframe="1Day"):
    bars = history(market, symbols, now, timeframe=timeframe, days=200 if timeframe == "1Day" else 12) \
        if bars is None else bars
    return run_cycle(symbols, bars, now, broker=broker, ledger=ledger, dag_id=dag_id, run_id=run_id,
                     settings=settings, news=headlines(news, now) if news else [])


def bullish(symbols=SYMBOLS, score=0.9):
    return dict.fromkeys(symbols, score)


def open_of(market, symbol, day, timeframe="1Day", ts=None):
    bars = market.panel([symbol], day, day, timeframe)
    row = bars[bars.ts == (pd.Timestamp(day, tz="UTC") if ts is None else pd.Timestamp(ts))]
    return float(row["open"].iloc[0])


# -- 1. no look-ahead fill on daily bars ------------------------------------------------------------------

def test_a_daily_order_never_fills_before_the_next_session_opens(broker, ledger, market):
    """Bought at 15:00 New York on Tuesday; a cycle at 09:00 Wednesday (before the open) must not fill at
    Wednesday's 09:30 open, a price that does not exist yet; the cycle at 09:45 fills at it."""
    first = cycle(broker, ledger, market, at("2024-03-05"), "run-1", news=bullish())
    assert len(first.submitted) == 3
    early = cycle(broker, ledger, market, at("2024-03-06", 9, 0), "run-2")
    assert early.synced == 0 and ledger.fills(broker.account) == []
    assert {o["status"] for o in ledger.orders(broker.account) if o["run_id"] == "run-1"} == {"new"}

    later = cycle(broker, ledger, market, at("2024-03-06", 9, 45), "run-3")
    assert later.synced == 3
    for fill in ledger.fills(broker.account):
        assert fill["bar_ts"] == pd.Timestamp("2024-03-06", tz="UTC")
        assert fill["price"] == pytest.approx(open_of(market, fill["symbol"], "2024-03-06") * (1 + 5e-4))


def test_an_order_placed_before_the_open_fills_at_that_sessions_open(ledger, market):
    """Decided at 08:00 New York on the previous day's bar: the day's 09:30 open came after the order."""
    sim = SimulatedBroker(ledger, name="early", slippage_bps=0.0)
    placed = at("2024-03-06", 8, 0)
    ledger.record_intents([{"account": sim.account, "client_order_id": "c1", "dag_id": "d", "run_id": "r",
                            "symbol": "AAPL", "side": "buy", "qty": 1.0, "ref_price": 100.0,
                            "bar_ts": pd.Timestamp("2024-03-05", tz="UTC"), "created_at": placed}])
    sim.submit(OrderRequest("c1", "AAPL", "buy", 1.0, 100.0, pd.Timestamp("2024-03-05", tz="UTC")))
    bars = history(market, ["AAPL"], at("2024-03-06"))
    sim.sync(bars, exchange="XNYS")
    [fill] = ledger.fills(sim.account)
    assert fill["bar_ts"] == pd.Timestamp("2024-03-06", tz="UTC")
    assert fill["price"] == pytest.approx(open_of(market, "AAPL", "2024-03-06"))


def test_a_cycle_at_an_intraday_bars_start_fills_an_earlier_order_at_that_bars_open(broker, ledger, market):
    first = cycle(broker, ledger, market, at("2024-03-05", 10, 15), "run-1", news=bullish(), timeframe="30Min",
                  settings=CycleSettings(timeframe="30Min", weights=SETTINGS.weights, min_score=0.05,
                                         limits=SETTINGS.limits))
    assert first.submitted
    at_start = cycle(broker, ledger, market, at("2024-03-05", 10, 30), "run-2", timeframe="30Min",
                     settings=CycleSettings(timeframe="30Min", weights=SETTINGS.weights, min_score=0.05,
                                            limits=SETTINGS.limits))
    assert at_start.synced == len(first.submitted)
    start = pd.Timestamp(at("2024-03-05", 10, 30))
    for fill in ledger.fills(broker.account):
        assert fill["bar_ts"] == start
        expected = open_of(market, fill["symbol"], "2024-03-05", "30Min", ts=start)
        assert fill["price"] == pytest.approx(expected * (1 + 5e-4))


# -- 2. the daily loss limit fires on daily, intraday and 24/7 bars --------------------------------------

def _hold(ledger, broker, symbol, fraction, price, bar_ts):
    """Seed the book with a long of ``fraction`` of its cash in ``symbol`` bought at ``price`` on ``bar_ts``."""
    qty = float(int(fraction * 100_000.0 / price)) if "/" not in symbol else round(fraction * 100_000.0 / price, 6)
    ledger.record_intents([{"account": broker.account, "client_order_id": f"seed-{symbol}", "dag_id": "seed",
                            "run_id": "seed", "symbol": symbol, "side": "buy", "qty": qty, "ref_price": price,
                            "bar_ts": bar_ts, "created_at": bar_ts}])
    ledger.accept(broker.account, f"seed-{symbol}", "sim-seed")
    ledger.fill(broker.account, f"seed-{symbol}", price=price, commission=0.0, bar_ts=bar_ts, rule=apply_fill)
    return qty


@pytest.mark.parametrize(("timeframe", "now", "held", "others", "crash_from"), [
    # daily bars at 15:00 Tuesday: Monday's bar is the last closed; Monday's loss is the day's loss
    ("1Day", ("2024-03-05", 15, 0), "AAPL", ["MSFT", "TSLA"], ("2024-03-04", 0, 0, "UTC")),
    # 30-minute bars at 11:00: today's bars since the open lose 8 %
    ("30Min", ("2024-03-05", 11, 0), "AAPL", ["MSFT", "TSLA"], ("2024-03-05", 9, 30)),
    # 24/7 crypto, daily bars on a Saturday: Friday's UTC bar lost 8 %
    ("1Day", ("2024-03-09", 15, 0), "BTC/USD", ["ETH/USD"], ("2024-03-08", 0, 0, "UTC")),
], ids=["daily", "30min", "crypto-24/7"])
def test_the_daily_loss_limit_fires_on_the_bars_it_is_used_with(broker, ledger, market, timeframe, now, held,
                                                                others, crash_from):
    now = at(now[0], now[1], now[2])
    symbols = [held, *others]
    bars = history(market, symbols, now, timeframe=timeframe, days=200 if timeframe == "1Day" else 12)
    crash = pd.Timestamp(at(*crash_from[:3], **({"tz": crash_from[3]} if len(crash_from) > 3 else {})))
    hit = (bars.symbol == held) & (bars.ts >= crash)
    bars.loc[hit, ["open", "high", "low", "close"]] *= 0.92  # an 8 % fall: inside the quality gate's jump rule
    before = bars[(bars.symbol == held) & (bars.ts < crash)]
    price = float(before["close"].iloc[-1])
    _hold(ledger, broker, held, 0.9, price, before["ts"].iloc[-1] - pd.Timedelta(days=3))
    settings = CycleSettings(timeframe=timeframe, weights=SETTINGS.weights, min_score=0.05,
                             limits=RiskLimits(min_confidence=0.3, max_position_fraction=0.95))
    report = run_cycle(symbols, bars, now, broker=broker, ledger=ledger, dag_id="dag", run_id="run-1",
                       settings=settings, news=headlines(bullish(others), now))
    buys = [d for d in ledger.decisions() if d["action"] == "buy"]
    assert buys, "the bullish symbols should want to buy"
    for d in buys:
        assert d["approved"] is False and d["risk_rule"] == "daily_loss_limit", d
    assert report.start_of_day_equity is not None and report.equity["equity"] < 0.97 * report.start_of_day_equity
    assert broker.calls == {}


def test_the_loss_reference_is_the_previous_sessions_closing_book(broker, ledger, market):
    """With no fills since, the reference equity is the book valued at the previous session's closes."""
    now = at("2024-03-05", 11, 0)
    bars = history(market, ["AAPL", "MSFT"], now, timeframe="30Min", days=12)
    before = bars[(bars.symbol == "AAPL") & (bars.ts < pd.Timestamp(at("2024-03-05", 9, 30)))]
    qty = _hold(ledger, broker, "AAPL", 0.5, 150.0, before["ts"].iloc[0])
    report = run_cycle(["AAPL", "MSFT"], bars, now, broker=broker, ledger=ledger, dag_id="dag", run_id="run-1",
                       settings=CycleSettings(timeframe="30Min", weights=SETTINGS.weights, min_score=0.05,
                                              limits=SETTINGS.limits))
    cash = 100_000.0 - qty * 150.0
    assert report.loss_reference == pd.Timestamp(at("2024-03-04", 16, 0)).isoformat()
    assert report.start_of_day_equity == pytest.approx(cash + qty * float(before["close"].iloc[-1]), rel=1e-12)


# -- 3. an order never sent is never a position -------------------------------------------------------------

@pytest.mark.parametrize("recovery", ["retry-later-bar", "next-run"])
def test_an_order_recorded_but_never_sent_is_settled_before_sizing(broker, ledger, market, recovery):
    broker.before = {s: RuntimeError("worker killed between record and send") for s in SYMBOLS}
    with pytest.raises(RuntimeError, match="killed"):
        cycle(broker, ledger, market, at("2024-03-05"), "run-1", news=bullish())
    assert {o["status"] for o in ledger.orders(broker.account)} == {"pending_submit"}
    broker.before = {}
    run_id = "run-1" if recovery == "retry-later-bar" else "run-2"
    report = cycle(broker, ledger, market, at("2024-03-06"), run_id, news=bullish(score=-0.9))
    first = [o for o in ledger.orders(broker.account) if o["bar_ts"] == pd.Timestamp("2024-03-04", tz="UTC")]
    assert {o["status"] for o in first} == {"not_placed"}
    assert not [o for o in ledger.orders(broker.account) if o["side"] == "sell"], "sold what was never bought"
    assert all(p.qty >= 0 for p in ledger.positions(broker.account).values())
    assert report.unknown == {}


# -- 4. the kill switch is read right before any order is sent, on every path -------------------------------

def test_a_retry_after_the_kill_switch_went_to_halted_sends_nothing(broker, ledger, market):
    broker.before = {"AAPL": RuntimeError("worker killed between record and send")}
    with pytest.raises(RuntimeError):
        cycle(broker, ledger, market, at("2024-03-05"), "run-1", news=bullish())
    approved = [d for d in ledger.decisions() if d["approved"]]
    assert len(approved) == 3
    state = {"value": "active"}
    settings = CycleSettings(weights=SETTINGS.weights, min_score=0.05, limits=SETTINGS.limits,
                             kill_switch=lambda: state["value"])
    state["value"] = "halted"
    report = cycle(broker, ledger, market, at("2024-03-05"), "run-1", news=bullish(), settings=settings)
    assert report.submitted == [] and sum(broker.accepted.values()) == 0
    assert {o["status"] for o in ledger.orders(broker.account)} == {"not_placed"}
    assert all("kill switch is 'halted'" in o["reason"] for o in ledger.orders(broker.account))
    assert {d["risk_rule"] for d in ledger.decisions()} == {"kill_switch"}


def test_the_kill_switch_is_read_again_between_risk_and_send(broker, ledger, market, monkeypatch):
    """Switched to halted after the verdicts were stored and before the orders went out."""
    import airflow_provider_portfolio.trading.cycle as cycle_module

    reads = []
    real_unsent = cycle_module._unsent

    def halt_then_unsent(*args, **kwargs):
        reads.append("switched")
        return real_unsent(*args, **kwargs)

    state = {"value": "active"}
    settings = CycleSettings(weights=SETTINGS.weights, min_score=0.05, limits=SETTINGS.limits,
                             kill_switch=lambda: state["value"])
    monkeypatch.setattr(cycle_module, "_unsent", lambda *a, **k: (state.update(value="halted"),
                                                                 halt_then_unsent(*a, **k))[1])
    report = cycle(broker, ledger, market, at("2024-03-05"), "run-1", news=bullish(), settings=settings)
    assert reads and report.submitted == [] and broker.calls == {}


# -- 5. one cycle per account at a time -----------------------------------------------------------------

def test_a_cycle_waits_for_the_accounts_lock_and_gives_up_clearly(broker, ledger, market):
    with held_by_another_cycle(ledger, broker.account, "other_dag/scheduled__2024-03-05"):
        settings = CycleSettings(weights=SETTINGS.weights, min_score=0.05, limits=SETTINGS.limits,
                                 lock_timeout_s=0.3)
        with pytest.raises(AccountLockedError, match="other_dag/scheduled__2024-03-05") as caught:
            cycle(broker, ledger, market, at("2024-03-05"), "run-1", news=bullish(), settings=settings)
        assert caught.value.account == broker.account and caught.value.waited_s >= 0.3
        assert ledger.decisions() == [] and ledger.orders(broker.account) == []
    report = cycle(broker, ledger, market, at("2024-03-05"), "run-1", news=bullish())
    assert len(report.submitted) == 3


# -- 6. no trading on unchecked prices ----------------------------------------------------------------------

def test_a_bad_vendor_tick_is_not_traded_on(broker, ledger, market):
    """The last bar at 1/100 of the price: before the gate it bought ~2,000 shares of a $180 stock."""
    now = at("2024-03-05")
    bars = history(market, SYMBOLS, now)
    last = (bars.symbol == "AAPL") & (bars.ts == pd.Timestamp("2024-03-04", tz="UTC"))
    bars.loc[last, ["open", "high", "low", "close"]] /= 100.0
    report = cycle(broker, ledger, market, now, "run-1", bars=bars, news=bullish())
    assert "implausible_jump" in report.errors["AAPL"]
    assert not [o for o in ledger.orders(broker.account) if o["symbol"] == "AAPL"]
    assert len(report.submitted) == 2


def test_a_last_close_far_from_recent_history_is_not_traded_on(broker, ledger, market):
    """A slow walk of bad ticks, each within the jump rule, ends 70 % below the history before it."""
    now = at("2024-03-05")
    bars = history(market, SYMBOLS, now)
    aapl = bars.index[bars.symbol == "AAPL"][-6:]  # the five last closed bars and today's, still forming
    for k, i in enumerate(aapl):
        bars.loc[i, ["open", "high", "low", "close"]] *= 0.7 ** (min(k + 1, 5) / 2)
    report = cycle(broker, ledger, market, now, "run-1", bars=bars, news=bullish())
    assert report.errors["AAPL"].startswith("price check: last close")
    assert not [o for o in ledger.orders(broker.account) if o["symbol"] == "AAPL"]


def test_the_simulated_broker_refuses_buys_beyond_buying_power(ledger, market):
    sim = SimulatedBroker(ledger, name="cash", initial_cash=10_000.0, slippage_bps=0.0)
    bar = pd.Timestamp("2024-03-04", tz="UTC")

    def record(cid, qty, ref_price):
        ledger.record_intents([{"account": sim.account, "client_order_id": cid, "dag_id": "d", "run_id": "r",
                                "symbol": "AAPL", "side": "buy", "qty": qty, "ref_price": ref_price, "bar_ts": bar,
                                "created_at": at("2024-03-05")}])
        return OrderRequest(cid, "AAPL", "buy", qty, ref_price, bar)

    with pytest.raises(BrokerRejectedError, match="insufficient buying power"):
        sim.submit(record("big", 200.0, 100.0))  # 20,000 > 10,000
    # priced on a bad tick (1/100): accepted at submission, but its cost at the real open exceeds the cash
    sim.submit(record("tick", 500.0, 1.8))
    bars = history(market, ["AAPL"], at("2024-03-06"))
    [state] = sim.sync(bars, exchange="XNYS")
    assert state.status == "canceled" and "insufficient buying power at the fill" in state.reason
    assert ledger.fills(sim.account) == [] and ledger.cash(sim.account)[0] == 10_000.0
    assert np.isclose(sim.account_state().buying_power, 10_000.0)


def test_decisions_use_an_instant_some_time_after_the_bars(broker, ledger, market):
    """Bars fetched up to the day after ``now`` (a vendor that answers whole days) never leak the future."""
    now = at("2024-03-05")
    bars = history(market, SYMBOLS, now + timedelta(days=1))
    report = cycle(broker, ledger, market, now, "run-1", bars=bars, news=bullish())
    assert {d["bar_ts"] for d in ledger.decisions()} == {pd.Timestamp("2024-03-04", tz="UTC")}
    assert report.synced == 0 and ledger.fills(broker.account) == []


# -- boundaries a mutation audit left unpinned ------------------------------------------------------------

def test_a_decision_whose_confidence_equals_min_confidence_trades():
    from airflow_provider_portfolio.trading.decision import decide
    from airflow_provider_portfolio.trading.risk import AccountState, ProposedOrder, check_order

    [d] = decide(["AAPL"], [0.8], [0.5], {"AAPL": 100.0}, {}, 100_000.0, min_confidence=0.5, min_score=0.1)
    assert d.action == "buy" and d.order_qty > 0
    account = AccountState(equity=100_000.0, cash=100_000.0, buying_power=100_000.0,
                           start_of_day_equity=100_000.0, positions={}, orders_today={}, tradable={"AAPL": True},
                           market_open={"AAPL": True})
    verdict = check_order(ProposedOrder("AAPL", "buy", 10.0, 100.0, 0.5), account, RiskLimits(min_confidence=0.5))
    assert verdict.approved, verdict.reason
    below = check_order(ProposedOrder("AAPL", "buy", 10.0, 100.0, 0.5 - 1e-12), account, RiskLimits(min_confidence=0.5))
    assert below.rule == "min_confidence"


def test_an_open_sell_order_counts_as_a_sell_in_the_open_orders_position(broker, ledger):
    from airflow_provider_portfolio.trading.cycle import _with_open_orders

    bar = pd.Timestamp("2024-03-04", tz="UTC")
    for cid, side, qty in (("s1", "sell", 4.0), ("b1", "buy", 1.5)):
        ledger.record_intents([{"account": broker.account, "client_order_id": cid, "dag_id": "d", "run_id": "r",
                                "symbol": "AAPL", "side": side, "qty": qty, "ref_price": 100.0, "bar_ts": bar,
                                "created_at": at("2024-03-05")}])
        ledger.accept(broker.account, cid, f"sim-{cid}")
    assert _with_open_orders({"AAPL": 10.0}, ledger, broker.account) == {"AAPL": 10.0 - 4.0 + 1.5}
    assert _with_open_orders({"AAPL": 10.0}, ledger, broker.account, exclude=["s1"]) == {"AAPL": 11.5}


# -- every limit can fire on the bars it is used with -----------------------------------------------------

TIMEFRAMES = {  # timeframe, instant, symbols
    "daily": ("1Day", ("2024-03-05", 15, 0), ["AAPL", "MSFT", "TSLA"]),
    "30min": ("30Min", ("2024-03-05", 11, 0), ["AAPL", "MSFT", "TSLA"]),
    "crypto-24/7": ("1Day", ("2024-03-09", 15, 0), ["BTC/USD", "ETH/USD", "SOL/USD"]),
}
LIMITS = {  # the rule -> limits (and sizing) under which it must bind
    "max_order_notional": ({"max_order_notional": 1.0}, 0.05),
    "max_position_fraction": ({"max_position_fraction": 0.01}, 0.05),
    "max_open_positions": ({"max_open_positions": 0}, 0.05),
    "max_orders_per_symbol_per_day": ({"max_orders_per_symbol_per_day": 0}, 0.05),
    "max_orders_per_day": ({"max_orders_per_day": 1}, 0.05),
    "buying_power": ({"max_position_fraction": 1.0, "max_order_notional": 1e9}, 0.6),
}


@pytest.mark.parametrize("rule", list(LIMITS))
@pytest.mark.parametrize("frame", list(TIMEFRAMES))
def test_every_limit_fires_on_daily_intraday_and_crypto_bars(broker, ledger, market, frame, rule):
    timeframe, now, symbols = TIMEFRAMES[frame]
    now = at(*now)
    limits, fraction = LIMITS[rule]
    settings = CycleSettings(timeframe=timeframe, weights=SETTINGS.weights, min_score=0.05, fraction=fraction,
                             limits=RiskLimits(min_confidence=0.3, **limits))
    bars = history(market, symbols, now, timeframe=timeframe, days=200 if timeframe == "1Day" else 12)
    run_cycle(symbols, bars, now, broker=broker, ledger=ledger, dag_id="dag", run_id="run-1", settings=settings,
              news=headlines(bullish(symbols), now))
    verdicts = {d["symbol"]: (d["action"], d["approved"], d["risk_rule"]) for d in ledger.decisions()}
    assert all(action == "buy" for action, _, _ in verdicts.values()), verdicts
    assert rule in {r for _, _, r in verdicts.values()}, verdicts
    for cid in (o["client_order_id"] for o in ledger.orders(broker.account)):
        assert any(d["client_order_id"] == cid and d["approved"] for d in ledger.decisions())


@pytest.mark.parametrize("frame", ["daily", "30min"])
def test_equity_orders_outside_the_session_are_refused_and_crypto_trades_around_the_clock(broker, ledger, market,
                                                                                          frame):
    timeframe = TIMEFRAMES[frame][0]
    now = at("2024-03-09", 15, 0)  # a Saturday
    symbols = ["AAPL", "BTC/USD"]
    settings = CycleSettings(timeframe=timeframe, weights=SETTINGS.weights, min_score=0.05, limits=SETTINGS.limits,
                             max_stale_bars=30)
    bars = history(market, symbols, now, timeframe=timeframe, days=200 if timeframe == "1Day" else 12)
    run_cycle(symbols, bars, now, broker=broker, ledger=ledger, dag_id="dag", run_id="run-1", settings=settings,
              news=headlines(bullish(symbols), now))
    verdicts = {d["symbol"]: (d["approved"], d["risk_rule"]) for d in ledger.decisions()}
    assert verdicts["AAPL"] == (False, "market_open") and verdicts["BTC/USD"] == (True, None)


def test_the_bar_in_progress_is_judged_by_its_open_only(broker, ledger, market):
    """Today's bar (a replay's whole future bar) crashing after the open must not change today's decision (that
    would be look-ahead); an implausible open refuses the fill at it."""
    now = at("2024-03-05")
    clean = history(market, SYMBOLS, now)
    cycle(broker, ledger, market, now, "run-a", bars=clean, news=bullish(), dag_id="a")
    later_crash = clean.copy()
    today = (later_crash.symbol == "AAPL") & (later_crash.ts == pd.Timestamp("2024-03-05", tz="UTC"))
    later_crash.loc[today, ["low", "close"]] /= 100.0  # the crash comes after 15:00: unknown at the cycle
    twin = SimulatedBroker(ledger, name="twin", initial_cash=100_000.0, slippage_bps=5.0, commission_bps=1.0,
                           commission_per_order=0.5)  # the same book as ``broker`` had before run-a
    report = cycle(twin, ledger, market, now, "run-b", bars=later_crash, news=bullish(), dag_id="b")
    assert "AAPL" not in report.errors
    decided = {(d["dag_id"], d["symbol"]): (d["action"], d["order_qty"]) for d in ledger.decisions()}
    assert decided[("a", "AAPL")] == decided[("b", "AAPL")]

    # the next day at 10:00: an order is open, the bar in progress opens at 1/100 of the last close
    bad = history(market, SYMBOLS, at("2024-03-06", 10, 0))
    opening = (bad.symbol == "AAPL") & (bad.ts == pd.Timestamp("2024-03-06", tz="UTC"))
    bad.loc[opening, ["open", "low"]] /= 100.0
    nxt = cycle(broker, ledger, market, at("2024-03-06", 10, 0), "run-c", bars=bad, dag_id="c")
    assert "the open" in nxt.errors["AAPL"] and "nothing fills at it" in nxt.errors["AAPL"]
    assert {f["symbol"] for f in ledger.fills(broker.account)} == {"MSFT", "TSLA"}


def test_a_run_while_the_market_is_closed_leaves_the_bar_to_the_next_run(broker, ledger, market):
    """A run at 08:00 (a back-fill, a run before the open) cannot trade its equities: its decisions must not use
    up the bar, or the 10:00 run would skip it and the bar would never be traded."""
    early = cycle(broker, ledger, market, at("2024-03-05", 8, 0), "run-early", news=bullish())
    assert set(early.rejected) == set(SYMBOLS) and early.submitted == []
    assert all(r.startswith("market_open") for r in early.rejected.values())
    later = cycle(broker, ledger, market, at("2024-03-05", 10, 0), "run-open", news=bullish())
    assert later.skipped == [] and len(later.submitted) == 3
    bar = pd.Timestamp("2024-03-04", tz="UTC")
    assert {d["bar_ts"] for d in ledger.decisions()} == {bar}
    overlapping = cycle(broker, ledger, market, at("2024-03-05", 11, 0), "run-overlap", news=bullish())
    assert overlapping.skipped == SYMBOLS and overlapping.submitted == []  # open: decided once per bar



@pytest.mark.parametrize("frame", list(TIMEFRAMES))
def test_a_bad_tick_on_the_last_closed_bar_is_refused_on_every_timeframe(broker, ledger, market, frame):
    timeframe, now, symbols = TIMEFRAMES[frame]
    now = at(*now)
    settings = CycleSettings(timeframe=timeframe, weights=SETTINGS.weights, min_score=0.05, limits=SETTINGS.limits)
    bars = history(market, symbols, now, timeframe=timeframe, days=200 if timeframe == "1Day" else 12)
    # the last bar closed at ``now``: daily bars are a day behind, 30-minute bars one bar
    last_closed = pd.Timestamp(now) - (pd.Timedelta(days=1) if timeframe == "1Day" else pd.Timedelta(minutes=60))
    closed = bars[(bars.symbol == symbols[0]) & (bars.ts <= last_closed)]
    bars.loc[closed.index[-1], ["open", "high", "low", "close"]] /= 100.0
    report = run_cycle(symbols, bars, now, broker=broker, ledger=ledger, dag_id="dag", run_id="run-1",
                       settings=settings, news=headlines(bullish(symbols), now))
    assert "implausible_jump" in report.errors[symbols[0]], report.errors
    assert not [o for o in ledger.orders(broker.account) if o["symbol"] == symbols[0]]
    assert {o["symbol"] for o in ledger.orders(broker.account)} == set(symbols[1:])
