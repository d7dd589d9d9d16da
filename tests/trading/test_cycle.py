"""The trading cycle against the simulated broker: exactly-once orders under faults, bad input, risk, closed
bars, and a month of simulated trading reconciled at every step."""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.trading.accounting import apply_fill
from airflow_provider_portfolio.trading.brokers import BrokerRejectedError, OrderStateUnknownError
from airflow_provider_portfolio.trading.cycle import (
    CycleSettings,
    closed_bars,
    expected_last_bar,
    run_cycle,
    with_max_trades_per_day,
)
from airflow_provider_portfolio.trading.risk import RiskLimits
from tests.trading.conftest import at, headlines, history

SYMBOLS = ["AAPL", "BTC/USD", "MSFT", "TSLA"]
SETTINGS = CycleSettings(weights={"technical": 0.4, "sentiment": 0.6}, min_score=0.05,
                         limits=RiskLimits(min_confidence=0.3))
DAY1, DAY2 = "2024-03-05", "2024-03-06"  # Tuesday, Wednesday
BAR1 = pd.Timestamp("2024-03-04", tz="UTC")  # the last bar closed at DAY1 15:00 New York


def cycle(broker, ledger, market, now, run_id, *, symbols=SYMBOLS, news=None, settings=SETTINGS, bars=None,
          dag_id="dag", **kwargs):
    """One cycle at ``now`` on the synthetic market; ``news`` maps symbol -> sentiment of fresh headlines."""
    bars = history(market, symbols, now) if bars is None else bars
    return run_cycle(symbols, bars, now, broker=broker, ledger=ledger, dag_id=dag_id, run_id=run_id,
                     settings=settings, news=headlines(news, now) if news else [], **kwargs)


def bullish(symbols=SYMBOLS) -> dict[str, float]:
    return {s: 0.9 for s in symbols}


def bearish(symbols=SYMBOLS) -> dict[str, float]:
    return {s: -0.9 for s in symbols}


def statuses(ledger, broker) -> dict[str, str]:
    """symbol -> status of its orders (one order per symbol in these tests)."""
    orders = ledger.orders(broker.account)
    assert len({o["symbol"] for o in orders}) == len(orders)
    return {o["symbol"]: o["status"] for o in orders}


def check_exactly_once(ledger, broker) -> None:
    """One order per approved decision and one decision per order, at most one fill per order, and the broker
    accepted each order at most once."""
    orders = ledger.orders(broker.account)
    cids = Counter(o["client_order_id"] for o in orders)
    decided = Counter(d["client_order_id"] for d in ledger.decisions() if d["client_order_id"])
    assert set(decided) == set(cids)
    assert max(cids.values(), default=1) == 1 and max(decided.values(), default=1) == 1
    fills = Counter(f["client_order_id"] for f in ledger.fills(broker.account))
    assert max(fills.values(), default=1) == 1
    assert {o["client_order_id"] for o in orders if o["status"] == "filled"} == set(fills)
    assert max(broker.accepted.values(), default=1) == 1
    for o in orders:
        if o["status"] not in ("pending_submit", "rejected"):
            assert broker.accepted[o["client_order_id"]] == 1, o


# -- exactly once under faults --------------------------------------------------------------------------------

def test_a_retry_after_the_broker_accepted_sends_nothing_new(broker, ledger, market):
    first = cycle(broker, ledger, market, at(DAY1), "run-1", news=bullish())
    assert len(first.submitted) == 4 and first.decided == 4 and first.skipped == []
    orders = ledger.orders(broker.account)
    assert statuses(ledger, broker) == dict.fromkeys(SYMBOLS, "new")

    # an Airflow retry of the same run, with other news by now: it carries out what the first try decided
    retry = cycle(broker, ledger, market, at(DAY1), "run-1", news=bearish())
    assert sorted(retry.submitted) == sorted(first.submitted)
    assert (retry.decided, retry.skipped, retry.rejected, retry.unknown) == (4, [], {}, {})
    assert ledger.orders(broker.account) == orders
    assert {d["symbol"]: d["action"] for d in ledger.decisions()} == dict.fromkeys(SYMBOLS, "buy")
    assert set(broker.calls.values()) == {1} and len(broker.calls) == 4

    # the next day's run fills each order once; its own retry fills nothing again
    nxt = cycle(broker, ledger, market, at(DAY2), "run-2")
    assert nxt.synced == 4
    again = cycle(broker, ledger, market, at(DAY2), "run-2")
    assert again.synced == 0
    assert statuses(ledger, broker) == dict.fromkeys(SYMBOLS, "filled")
    assert len(ledger.fills(broker.account)) == 4
    check_exactly_once(ledger, broker)


def test_a_crash_between_submit_and_record(broker, ledger, market, monkeypatch):
    real_update = ledger.update_order
    crashes = []

    def update_order(account, cid, **state):
        if not crashes:
            crashes.append(cid)
            raise RuntimeError("worker lost")  # the broker has the order; the task dies before recording it
        return real_update(account, cid, **state)

    monkeypatch.setattr(ledger, "update_order", update_order)
    with pytest.raises(RuntimeError, match="worker lost"):
        cycle(broker, ledger, market, at(DAY1), "run-1", news=bullish())
    after_crash = {o["client_order_id"]: o["status"] for o in ledger.orders(broker.account)}
    assert after_crash[crashes[0]] == "new"  # the simulated broker's book is the ledger: it shows the acceptance
    assert sorted(after_crash.values()) == ["new", "pending_submit", "pending_submit", "pending_submit"]
    assert ledger.equity_curve(broker.account) == []

    retry = cycle(broker, ledger, market, at(DAY1), "run-1", news=bearish())
    assert len(retry.submitted) == 4 and retry.unknown == {} and retry.broker_rejected == {}
    assert statuses(ledger, broker) == dict.fromkeys(SYMBOLS, "new")
    assert broker.calls[crashes[0]] == 1  # already past pending_submit: not sent again
    assert set(broker.accepted.values()) == {1} and len(broker.accepted) == 4
    assert len(ledger.equity_curve(broker.account)) == 1

    cycle(broker, ledger, market, at(DAY2), "run-2")
    assert statuses(ledger, broker) == dict.fromkeys(SYMBOLS, "filled")
    check_exactly_once(ledger, broker)


def test_an_unknown_outcome_before_the_broker_got_it_is_settled_by_the_retry(broker, ledger, market):
    broker.before["AAPL"] = OrderStateUnknownError("timed out after 10 s")
    first = cycle(broker, ledger, market, at(DAY1), "run-1", news=bullish())
    assert first.unknown == {"AAPL": "timed out after 10 s"}
    assert len(first.submitted) == 3
    [aapl] = ledger.orders(broker.account, symbols=["AAPL"])
    assert (aapl["status"], aapl["reason"]) == ("pending_submit", "timed out after 10 s")

    retry = cycle(broker, ledger, market, at(DAY1), "run-1")
    assert retry.unknown == {} and len(retry.submitted) == 4
    assert broker.calls[aapl["client_order_id"]] == 2 and broker.accepted[aapl["client_order_id"]] == 1
    assert len(ledger.orders(broker.account)) == 4
    assert statuses(ledger, broker) == dict.fromkeys(SYMBOLS, "new")
    cycle(broker, ledger, market, at(DAY2), "run-2")
    check_exactly_once(ledger, broker)
    assert len(ledger.fills(broker.account)) == 4


def test_an_unknown_outcome_after_the_broker_accepted_is_not_sent_again(broker, ledger, market):
    broker.after["AAPL"] = OrderStateUnknownError("504 Gateway Time-out")
    first = cycle(broker, ledger, market, at(DAY1), "run-1", news=bullish())
    assert first.unknown == {"AAPL": "504 Gateway Time-out"}
    [aapl] = ledger.orders(broker.account, symbols=["AAPL"])
    # the simulated broker keeps its book in this ledger, so the acceptance is already recorded
    assert aapl["status"] == "new" and aapl["reason"] == "504 Gateway Time-out"

    retry = cycle(broker, ledger, market, at(DAY1), "run-1")
    assert retry.unknown == {} and aapl["client_order_id"] in retry.submitted
    assert broker.calls[aapl["client_order_id"]] == 1
    cycle(broker, ledger, market, at(DAY2), "run-2")
    check_exactly_once(ledger, broker)
    assert len(ledger.fills(broker.account)) == 4


def test_overlapping_bar_aware_runs_decide_a_bar_once(broker, ledger, market):
    first = cycle(broker, ledger, market, at(DAY1), "scheduled__1", news=bullish())
    second = cycle(broker, ledger, market, at(DAY1, 15, 5), "manual__1", news=bullish())
    assert len(first.submitted) == 4
    assert second.skipped == sorted(SYMBOLS)
    assert (second.decided, second.submitted, second.rejected) == (0, [], {})
    assert len(ledger.orders(broker.account)) == 4 and sum(broker.calls.values()) == 4
    assert {d["run_id"] for d in ledger.decisions()} == {"scheduled__1"}
    check_exactly_once(ledger, broker)


def test_overlapping_runs_without_bar_awareness_count_the_first_runs_open_orders(broker, ledger, market):
    # With bar_aware=False the decision key includes the run, so two overlapping runs of one DAG each decide
    # the same bar. The second sizes its target on the positions AND the first run's open (accepted, not yet
    # filled) orders: it is already at target and sends nothing, so the position is not doubled.
    settings = CycleSettings(weights=SETTINGS.weights, min_score=0.05, limits=SETTINGS.limits, bar_aware=False)
    first = cycle(broker, ledger, market, at(DAY1), "run-a", news=bullish(), settings=settings)
    second = cycle(broker, ledger, market, at(DAY1, 15, 5), "run-b", news=bullish(), settings=settings)
    assert second.skipped == [] and len(first.submitted) == 4 and second.submitted == []
    decisions = ledger.decisions()
    assert Counter(d["symbol"] for d in decisions) == dict.fromkeys(SYMBOLS, 2)
    assert {d["run_key"] for d in decisions} == {"run-a", "run-b"}
    later = [d for d in decisions if d["run_id"] == "run-b"]
    assert all(d["action"] == "hold" and d["reason"].startswith("already at target") for d in later), later
    targets = {d["symbol"]: d["target_qty"] for d in decisions if d["run_id"] == "run-a"}
    cycle(broker, ledger, market, at(DAY2), "run-c", settings=settings)
    positions = ledger.positions(broker.account)
    for symbol in SYMBOLS:
        assert positions[symbol].qty == pytest.approx(targets[symbol], abs=1e-9)
    check_exactly_once(ledger, broker)


# -- bad input -----------------------------------------------------------------------------------------------

def test_an_unknown_symbol_holds_and_the_others_trade(broker, ledger, market):
    now = at(DAY1)
    bars = history(market, ["AAPL", "MSFT"], now)
    report = cycle(broker, ledger, market, now, "run-1", symbols=["AAPL", "MSFT", "ZZZZ"], bars=bars,
                   news=bullish(["AAPL", "MSFT", "ZZZZ"]))
    assert report.errors["ZZZZ"].startswith("no bars")
    assert set(report.errors) == {"ZZZZ"} and report.holds == 1
    zzzz = {d["symbol"]: d for d in ledger.decisions()}["ZZZZ"]
    assert (zzzz["action"], zzzz["order_qty"], zzzz["bar_ts"]) == ("hold", 0.0, BAR1)
    assert zzzz["error"].startswith("no bars")
    assert sorted(statuses(ledger, broker)) == ["AAPL", "MSFT"]

    report = cycle(broker, ledger, market, now, "run-2", symbols=["ZZZZ"], bars=bars.iloc[:0],
                   missing={"ZZZZ": "no bars: alphavantage: Invalid API call"}, dag_id="other")
    assert report.errors == {"ZZZZ": "no bars: alphavantage: Invalid API call"}


def test_stale_bars_hold(broker, ledger, market):
    now = at(DAY1)
    bars = closed_bars(history(market, SYMBOLS, now), now, "1Day")
    msft = bars.index[bars.symbol == "MSFT"]
    tsla = bars.index[bars.symbol == "TSLA"]
    bars = bars.drop(msft[-3:]).drop(tsla[-2:])  # MSFT 3 bars behind; TSLA 2 behind, which is allowed
    report = cycle(broker, ledger, market, now, "run-1", bars=bars, news=bullish())
    assert report.errors["MSFT"].startswith("stale bars: the last 1Day bar is 2024-02-28")
    assert "expected 2024-03-04" in report.errors["MSFT"]
    assert set(report.errors) == {"MSFT"}
    decisions = {d["symbol"]: d for d in ledger.decisions()}
    assert decisions["MSFT"]["action"] == "hold"
    assert decisions["TSLA"]["action"] == "buy" and decisions["TSLA"]["bar_ts"] == pd.Timestamp("2024-02-29", tz="UTC")
    assert sorted(statuses(ledger, broker)) == ["AAPL", "BTC/USD", "TSLA"]


def test_a_zero_negative_or_missing_price_holds(broker, ledger, market):
    now = at(DAY1)
    bars = history(market, SYMBOLS, now)
    last = bars.ts == BAR1
    bars.loc[last & (bars.symbol == "AAPL"), "close"] = 0.0
    bars.loc[last & (bars.symbol == "MSFT"), "close"] = -3.0
    bars.loc[last & (bars.symbol == "TSLA"), "close"] = np.nan
    report = cycle(broker, ledger, market, now, "run-1", bars=bars, news=bullish())
    # the quality gate refuses each symbol's bars whole, naming the rule and the row
    rules = {"AAPL": "'non_positive_price'", "MSFT": "'non_positive_price'", "TSLA": "'missing_values'"}
    assert sorted(report.errors) == sorted(rules)
    for symbol, rule in rules.items():
        assert report.errors[symbol].startswith(f"bars refused by the quality gate: {symbol}: rule {rule}")
        assert "2024-03-04T00:00:00Z" in report.errors[symbol]
    decisions = {d["symbol"]: d for d in ledger.decisions()}
    for symbol in ("AAPL", "MSFT", "TSLA"):
        assert (decisions[symbol]["action"], decisions[symbol]["order_qty"]) == ("hold", 0.0)
        assert decisions[symbol]["price"] is None
    assert statuses(ledger, broker) == {"BTC/USD": "new"}


def _forecast_frame(bars: pd.DataFrame, rows: dict[str, tuple[pd.Timestamp, float]]) -> pd.DataFrame:
    """Step-1 ensemble forecasts: symbol -> (asof, expected log-return), band +/- 3%."""
    out = []
    for symbol, (asof, er) in rows.items():
        close = float(bars[(bars.symbol == symbol) & (bars.ts == asof)].close.iloc[0])
        point = math.log(close) + er
        out.append({"run_id": "f", "model": "ensemble", "symbol": symbol, "timeframe": "1Day", "step": 1,
                    "asof": asof, "target_ts": asof + pd.Timedelta(days=1), "target": "log_close", "point": point,
                    "lower": point - 0.03, "upper": point + 0.03})
    return pd.DataFrame(out)


def test_forecasts_missing_unhealthy_stale_or_from_the_future_are_ignored(broker, ledger, market):
    now = at(DAY1)
    bars = history(market, SYMBOLS, now)
    settings = CycleSettings(limits=RiskLimits(min_confidence=0.3))  # the auto trader's weights: forecast first
    forecasts = _forecast_frame(bars, {"AAPL": (BAR1, 0.02), "MSFT": (BAR1, 0.02),
                                       "TSLA": (pd.Timestamp("2024-02-01", tz="UTC"), 0.02),
                                       "BTC/USD": (pd.Timestamp("2024-03-05", tz="UTC"), 0.02)})
    evaluations = pd.DataFrame({"symbol": ["AAPL", "MSFT", "TSLA", "BTC/USD"], "healthy": [True, False, True, True]})
    cycle(broker, ledger, market, now, "run-1", settings=settings, forecasts=forecasts, evaluations=evaluations)
    signal = {d["symbol"]: d["signals"]["forecast"] for d in ledger.decisions()}
    assert signal["AAPL"]["confidence"] == 1.0
    assert signal["AAPL"]["score"] == pytest.approx(math.tanh(0.02 / 0.03), abs=1e-9)
    assert (signal["MSFT"]["score"], signal["MSFT"]["confidence"]) == (0.0, 0.0)
    assert signal["MSFT"]["reason"] == "model not healthy: ignored"
    assert signal["TSLA"]["confidence"] == 0.0 and signal["TSLA"]["reason"].startswith("stale forecast")
    assert signal["BTC/USD"]["confidence"] == 0.0
    assert signal["BTC/USD"]["reason"].startswith("forecast made after this cycle's instant")

    cycle(broker, ledger, market, now, "run-1", settings=settings, dag_id="no-forecasts")
    for d in ledger.decisions(dag_id="no-forecasts"):
        forecast = d["signals"]["forecast"]
        assert (forecast["score"], forecast["confidence"]) == (0.0, 0.0)
        assert forecast["reason"].startswith("no stored forecast")


@pytest.mark.parametrize("day", ["2024-03-09", "2024-03-29"], ids=["saturday", "good-friday"])
def test_a_closed_market_rejects_equity_orders(broker, ledger, market, day):
    report = cycle(broker, ledger, market, at(day), "run-1", symbols=["AAPL", "BTC/USD"],
                   news=bullish(["AAPL", "BTC/USD"]))
    assert report.rejected["AAPL"].startswith("market_open: market for AAPL is closed")
    assert set(report.rejected) == {"AAPL"}
    aapl = {d["symbol"]: d for d in ledger.decisions()}["AAPL"]
    assert (aapl["action"], aapl["approved"], aapl["risk_rule"], aapl["client_order_id"]) == (
        "buy", False, "market_open", None)
    assert statuses(ledger, broker) == {"BTC/USD": "new"}  # crypto trades around the clock


def test_a_broker_rejection_is_recorded_and_never_resent(broker, ledger, market):
    broker.always["AAPL"] = BrokerRejectedError("insufficient buying power")
    broker.always["TSLA"] = BrokerRejectedError("pattern day trading protection: 4 day trades in 5 days")
    report = cycle(broker, ledger, market, at(DAY1), "run-1", news=bullish())
    assert report.broker_rejected == {"AAPL": "insufficient buying power",
                                      "TSLA": "pattern day trading protection: 4 day trades in 5 days"}
    assert len(report.submitted) == 2
    orders = {o["symbol"]: o for o in ledger.orders(broker.account)}
    assert (orders["AAPL"]["status"], orders["AAPL"]["reason"]) == ("rejected", "insufficient buying power")
    assert orders["TSLA"]["status"] == "rejected"
    assert (orders["MSFT"]["status"], orders["BTC/USD"]["status"]) == ("new", "new")

    retry = cycle(broker, ledger, market, at(DAY1), "run-1")
    assert retry.broker_rejected == report.broker_rejected  # the retry reports what happened, sends nothing
    assert sorted(retry.submitted) == sorted(report.submitted)
    assert broker.calls[orders["AAPL"]["client_order_id"]] == 1 and broker.calls[orders["TSLA"]["client_order_id"]] == 1

    cycle(broker, ledger, market, at(DAY2), "run-2")  # the next run fills what was accepted, never the rejected
    assert statuses(ledger, broker) == {"AAPL": "rejected", "BTC/USD": "filled", "MSFT": "filled",
                                        "TSLA": "rejected"}
    assert sorted(ledger.positions(broker.account)) == ["BTC/USD", "MSFT"]
    check_exactly_once(ledger, broker)


@pytest.mark.parametrize("state", ["halted", "HALT", "nonsense"])
def test_kill_switch_halted_stops_everything(broker, ledger, market, state):
    settings = CycleSettings(weights=SETTINGS.weights, min_score=0.05, limits=SETTINGS.limits, kill_switch=state)
    report = cycle(broker, ledger, market, at(DAY1), "run-1", news=bullish(), settings=settings)
    assert report.submitted == [] and ledger.orders(broker.account) == []
    assert {s: r.split(":")[0] for s, r in report.rejected.items()} == dict.fromkeys(SYMBOLS, "kill_switch")
    assert broker.calls == {}
    assert len(ledger.equity_curve(broker.account)) == 1  # the snapshot is still written


def test_kill_switch_reduce_only_passes_only_reducing_orders(broker, ledger, market):
    cycle(broker, ledger, market, at(DAY1), "run-1", symbols=["AAPL", "MSFT"], news=bullish(["AAPL", "MSFT"]))
    settings = CycleSettings(weights=SETTINGS.weights, min_score=0.05, limits=SETTINGS.limits,
                             kill_switch="reduce_only")
    report = cycle(broker, ledger, market, at(DAY2), "run-2", news={"AAPL": -0.9, "TSLA": 0.9, "BTC/USD": 0.9},
                   settings=settings)
    assert report.synced == 2
    assert set(report.rejected) == {"TSLA", "BTC/USD"}
    assert all(r.startswith("kill_switch: kill switch is 'reduce_only'") for r in report.rejected.values())
    [sell] = [o for o in ledger.orders(broker.account) if o["run_id"] == "run-2"]
    assert (sell["symbol"], sell["side"], sell["status"]) == ("AAPL", "sell", "new")
    assert sell["qty"] == ledger.positions(broker.account)["AAPL"].qty  # an exit: reducing, not through zero


def test_a_fractional_position_built_by_several_fills_can_be_closed(broker, ledger, market):
    # 1.2345 + 1.4268 BTC is 2.6612999999999998 in binary floating point; the exit decides "sell 2.6613"
    for cid, qty in (("seed-1", 1.2345), ("seed-2", 1.4268)):
        ledger.record_intents([{"account": broker.account, "client_order_id": cid, "dag_id": "seed", "run_id": "seed",
                                "symbol": "BTC/USD", "side": "buy", "qty": qty, "ref_price": 300.0,
                                "bar_ts": BAR1 - pd.Timedelta(days=2), "created_at": at("2024-03-01")}])
        ledger.accept(broker.account, cid, cid)
        ledger.fill(broker.account, cid, price=300.0, commission=0.0, bar_ts=BAR1 - pd.Timedelta(days=1), rule=apply_fill)
    report = cycle(broker, ledger, market, at(DAY1), "run-1", symbols=["BTC/USD"], news=bearish(["BTC/USD"]))
    assert report.rejected == {}
    [exit_order] = ledger.orders(broker.account, open_only=True)
    assert (exit_order["side"], exit_order["qty"]) == ("sell", 2.6613)
    cycle(broker, ledger, market, at(DAY2), "run-2", symbols=["BTC/USD"])
    assert ledger.positions(broker.account) == {}


def test_max_open_positions_counts_the_whole_account(broker, ledger, market):
    # one agent DAG per symbol shares the account: the limit is on the account's open positions, not the cycle's
    cycle(broker, ledger, market, at(DAY1), "run-1", symbols=["AAPL", "MSFT"], news=bullish(["AAPL", "MSFT"]),
          dag_id="agent-a")
    cycle(broker, ledger, market, at(DAY2), "run-2", symbols=["AAPL", "MSFT"], dag_id="agent-a")  # fills them
    settings = CycleSettings(weights=SETTINGS.weights, min_score=0.05,
                             limits=RiskLimits(min_confidence=0.3, max_open_positions=2))
    report = cycle(broker, ledger, market, at(DAY2), "run-1", symbols=["TSLA"], news=bullish(["TSLA"]),
                   settings=settings, dag_id="agent-t")
    assert sorted(ledger.positions(broker.account)) == ["AAPL", "MSFT"]
    assert report.rejected["TSLA"].startswith("max_open_positions: opening TSLA with 2 open positions")
    assert report.submitted == []


def test_max_trades_per_day(broker, ledger, market):
    limits = with_max_trades_per_day(RiskLimits(min_confidence=0.3), 2)
    assert limits.max_orders_per_day == 2 and limits.min_confidence == 0.3
    settings = CycleSettings(weights=SETTINGS.weights, min_score=0.05, limits=limits)
    report = cycle(broker, ledger, market, at(DAY1), "run-1", news=bullish(), settings=settings)
    assert len(report.submitted) == 2
    assert [r.split(":")[0] for r in report.rejected.values()] == ["max_orders_per_day"] * 2
    # another DAG on the same account the same day finds the day's count used up (the two symbols the first
    # one ordered are already at target, counting its open orders: they hold)
    other = cycle(broker, ledger, market, at(DAY1, 15, 30), "run-1", news=bullish(), settings=settings,
                  dag_id="other-dag")
    assert other.submitted == [] and set(other.rejected) == set(SYMBOLS) - _symbols(report.submitted, ledger, broker)
    assert {r.split(":")[0] for r in other.rejected.values()} == {"max_orders_per_day"}
    assert len(ledger.orders(broker.account)) == 2
    assert with_max_trades_per_day(limits, None) is limits
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InvalidInputError, match="max_trades_per_day"):
            with_max_trades_per_day(limits, bad)


def test_parameters_are_checked(broker, ledger, market):
    now = at(DAY1)
    with pytest.raises(InvalidInputError, match="tz-aware"):
        cycle(broker, ledger, market, now.replace(tzinfo=None), "run-1", bars=history(market, SYMBOLS, now))
    with pytest.raises(InvalidInputError, match="unknown signal name"):
        CycleSettings(weights={"astrology": 1.0})
    with pytest.raises(InvalidInputError, match="max_stale_bars"):
        CycleSettings(max_stale_bars=-1)
    assert ledger.orders(broker.account) == [] and ledger.decisions() == []


# -- closed bars -----------------------------------------------------------------------------------------------

def test_closed_bars_drop_the_daily_bar_still_forming(market):
    bars = market.panel(["AAPL", "BTC/USD"], "2024-03-01", "2024-03-05")
    last = lambda frame, s: frame[frame.symbol == s].ts.max()  # noqa: E731
    before_close = closed_bars(bars, at(DAY1, 15, 59), "1Day")
    assert last(before_close, "AAPL") == BAR1 and last(before_close, "BTC/USD") == BAR1
    at_close = closed_bars(bars, at(DAY1, 16, 0), "1Day")  # the session's close ends the daily bar
    assert last(at_close, "AAPL") == pd.Timestamp(DAY1, tz="UTC")
    assert last(at_close, "BTC/USD") == BAR1  # crypto's daily bar ends at midnight UTC
    assert last(closed_bars(bars, at("2024-03-06", 0, 0, tz="UTC"), "1Day"), "BTC/USD") == pd.Timestamp(DAY1, tz="UTC")
    assert len(closed_bars(bars.iloc[:0], at(DAY1), "1Day")) == 0


def test_closed_bars_drop_an_intraday_bar_whose_end_is_after_now(market):
    bars = market.panel(["AAPL"], DAY1, DAY1, "30Min")
    kept = closed_bars(bars, at(DAY1, 15, 10), "30Min")
    assert kept.ts.max() == pd.Timestamp(at(DAY1, 14, 30))  # 14:30-15:00 closed; 15:00-15:30 is still forming
    assert len(kept) == 11  # 09:30 ... 14:30
    assert len(closed_bars(bars, at(DAY1, 15, 30), "30Min")) == 12
    assert len(closed_bars(bars, at(DAY1, 16, 0), "30Min")) == len(bars) == 13
    early = market.panel(["AAPL"], "2024-11-29", "2024-11-29", "30Min")  # the day after Thanksgiving closes at 13:00
    assert closed_bars(early, at("2024-11-29", 13, 0), "30Min").ts.max() == pd.Timestamp(at("2024-11-29", 12, 30))


def test_expected_last_bar_on_holidays_and_weekends():
    utc = lambda day: pd.Timestamp(day, tz="UTC")  # noqa: E731
    assert expected_last_bar("AAPL", at("2024-03-29"), "1Day") == utc("2024-03-28")  # Good Friday
    assert expected_last_bar("AAPL", at("2024-03-09"), "1Day") == utc("2024-03-08")  # Saturday
    assert expected_last_bar("AAPL", at("2024-03-11", 10), "1Day") == utc("2024-03-08")  # Monday morning
    assert expected_last_bar("AAPL", at("2024-03-11", 10), "1Day", back=1) == utc("2024-03-07")
    assert expected_last_bar("BTC/USD", at("2024-03-09"), "1Day") == utc("2024-03-08")  # crypto: the UTC day
    assert expected_last_bar("AAPL", at("2024-11-29", 13, 30), "1Day") == utc("2024-11-29")  # early close
    assert expected_last_bar("AAPL", at("2024-11-29", 12, 59), "1Day") == utc("2024-11-27")  # Thanksgiving before
    assert expected_last_bar("AAPL", at(DAY1, 15, 10), "30Min") == pd.Timestamp(at(DAY1, 14, 30))
    assert expected_last_bar("AAPL", at("2024-03-09"), "30Min") == pd.Timestamp(at("2024-03-08", 15, 30))


# -- a month of simulated trading, reconciled at every step -----------------------------------------------

def test_a_month_of_simulated_trading_reconciles_at_every_step(broker, ledger, market):
    symbols = ["AAPL", "MSFT", "TSLA", "IWM", "BTC/USD", "NVDA"]
    initial_cash = ledger.cash(broker.account)[1]
    days = pd.bdate_range("2024-03-01", "2024-03-29")
    bars_all = market.panel(symbols, "2023-08-01", "2024-03-29")
    exits = 0
    for day in days:
        now = at(str(day.date()))
        bars = bars_all[bars_all.ts <= pd.Timestamp(now)]
        news = market.news(symbols, (now - timedelta(days=4)).date(), now.date())
        report = run_cycle(symbols, bars, now, broker=broker, ledger=ledger, dag_id="month",
                           run_id=f"scheduled__{day.date()}", settings=SETTINGS, news=news)
        assert report.unknown == {} and report.broker_rejected == {}

        fills = ledger.fills(broker.account)
        cash, _ = ledger.cash(broker.account)
        expected = initial_cash - sum((f["qty"] if f["side"] == "buy" else -f["qty"]) * f["price"] + f["commission"]
                                      for f in fills)
        assert cash == pytest.approx(expected, rel=0, abs=1e-6)
        signed = {}
        for f in fills:
            signed[f["symbol"]] = signed.get(f["symbol"], 0.0) + (f["qty"] if f["side"] == "buy" else -f["qty"])
        positions = ledger.positions(broker.account)
        assert set(positions) == {s for s, q in signed.items() if abs(q) > 1e-9}
        for symbol, position in positions.items():
            assert position.qty == pytest.approx(signed[symbol], abs=1e-9)
            last = bars[(bars.symbol == symbol) & (bars.ts <= pd.Timestamp(now))]
            closed = closed_bars(last, now, "1Day")
            # valued at the latest price known: the last close, or a fill at the open of the forming bar
            fills_after = [f for f in fills if f["symbol"] == symbol and f["bar_ts"] > closed.ts.iloc[-1]]
            latest = fills_after[-1]["price"] if fills_after else closed.close.iloc[-1]
            assert position.mark_price == latest
        for row in ledger.equity_curve(broker.account):
            assert row["cash"] + row["positions_value"] == pytest.approx(row["equity"], abs=1e-6)
        assert report.equity["equity"] == pytest.approx(cash + sum(p.qty * p.mark_price for p in positions.values()),
                                                        abs=1e-6)
        for d in ledger.decisions(run_id=f"scheduled__{day.date()}"):
            if d["action"] == "sell" and d["target_qty"] == 0 and d["current_qty"] > 0:
                exits += 1
                assert d["risk_rule"] != "short_selling", d  # closing a long is never a short sale
        check_exactly_once(ledger, broker)

    fills = ledger.fills(broker.account)
    assert len(fills) >= 10 and {"buy", "sell"} <= {f["side"] for f in fills}
    assert "BTC/USD" in {f["symbol"] for f in fills}
    assert exits >= 1
    curve = ledger.equity_curve(broker.account)
    assert len(curve) == len(days)
    final = curve[-1]
    positions = ledger.positions(broker.account)
    assert final["equity"] == pytest.approx(ledger.cash(broker.account)[0]
                                            + sum(p.qty * p.mark_price for p in positions.values()), abs=1e-6)


def _symbols(client_order_ids, ledger, broker):
    return {o["symbol"] for o in ledger.orders(broker.account) if o["client_order_id"] in client_order_ids}


def test_the_cycle_report_counts_the_fills_the_ledger_recorded(broker, ledger, market):
    first = cycle(broker, ledger, market, at(DAY1), "run-1", news=bullish())
    assert len(first.submitted) == 4 and first.fills == 0  # the simulated broker fills on a later bar, never at once
    assert ledger.fills(broker.account) == []
    second = cycle(broker, ledger, market, at(DAY2), "run-2")  # its sync fills day 1's orders at DAY2's open
    assert second.fills == 4 == len(ledger.fills(broker.account)) and second.to_dict()["fills"] == 4
    retry = cycle(broker, ledger, market, at(DAY2), "run-2")  # nothing fills twice
    assert retry.fills == 0 and first.fills + second.fills + retry.fills == len(ledger.fills(broker.account))
