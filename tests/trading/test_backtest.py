"""The backtest against the cycle it replays: a month of 20 symbols traded by ``trade_universe`` cycle by cycle through
a SQLite store and the simulated broker gives the same orders, fills and equity as the backtest over the same
instants; hand-checked metrics; the vectorised decisions against ``decide``; a crossover fed in as targets; bad input.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.calendar import bar_times
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.trading.backtest import (
    _forecast_panel,
    _latest_available,
    backtest,
    backtest_metrics,
    check_batch,
    crossover_targets,
    decide_arrays,
    prepare_backtest,
    run_backtest,
    session_instants,
)
from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
from airflow_provider_portfolio.trading.decision import decide
from airflow_provider_portfolio.trading.panels import _forecast_inputs
from airflow_provider_portfolio.trading.performance import closed_trades
from airflow_provider_portfolio.trading.risk import AccountState, ProposedOrder, RiskLimits, check_orders
from airflow_provider_portfolio.trading.session import trade_universe
from airflow_provider_portfolio.trading.settings import CycleSettings

EQUITIES = ["AAPL", "MSFT", "AMZN", "GOOG", "META", "NVDA", "TSLA", "JPM", "V", "MA", "HD", "PG", "KO", "PEP", "XOM",
            "CVX", "WMT", "DIS", "NFLX"]
SYMBOLS = [*EQUITIES, "BTC/USD"]
COSTS = {"slippage_bps": 5.0, "commission_bps": 1.0, "commission_per_order": 0.5}


def forecast_runs(bars: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One ensemble forecast run per bar and symbol (made on that bar), with its evaluation (a third unhealthy)."""
    rng = np.random.default_rng(seed)
    b = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
    n = len(b)
    point = np.log(b["close"].to_numpy()) + rng.normal(0.002, 0.01, n)
    half = np.abs(rng.normal(0.02, 0.005, n))
    asof = pd.DatetimeIndex(b["ts"])
    key = {"run_id": [f"fc-{t:%Y%m%d}" for t in asof], "model": "ensemble", "symbol": b["symbol"].to_numpy(),
           "timeframe": "1Day", "asof": asof, "backend": "numpy", "device": "cpu"}
    forecasts = pd.DataFrame({**key, "step": 1, "target_ts": asof + pd.Timedelta(days=1), "target": "log_close",
                              "point": point, "lower": point - half, "upper": point + half, "level": 0.9,
                              "variance": np.nan})
    healthy = rng.uniform(size=n) > 1 / 3
    rmse = rng.uniform(0.005, 0.02, n)
    baseline = np.where(healthy, rmse * 1.2, rmse * 0.9)
    evaluations = pd.DataFrame({**key, "horizon": 5, "origins": 20, "rmse": rmse, "mae": rmse * 0.8,
                                "directional_accuracy": 0.5, "coverage": 0.9, "baseline": "last_value",
                                "baseline_rmse": baseline, "skill": 1 - rmse / baseline,
                                "label": np.where(healthy, "healthy", "unhealthy"), "healthy": healthy,
                                "weight": np.where(healthy, 1.0, np.nan)})
    return forecasts, evaluations


def replay(store, market, cycles, settings, forecasts, evaluations, cash, symbols=SYMBOLS):
    """``trade_universe`` at each instant, each forecast run stored once its bar has closed (as a forecast job after
    the close would); returns the broker."""
    from airflow_provider_portfolio.store.ledger import TradingLedger

    broker = SimulatedBroker(TradingLedger(store), name="replay", initial_cash=cash, **COSTS)
    _, available = bar_times(forecasts.rename(columns={"asof": "ts"}))
    stored = np.zeros(len(forecasts), dtype=bool)
    for k, now in enumerate(cycles):
        due = ~stored & (available <= pd.Timestamp(now).value)
        if due.any():
            store.write_forecasts(forecasts[due], evaluations[due])
            stored |= due
        report = trade_universe(symbols, store=store, sources=[market], broker=broker, now=now, dag_id="desk",
                                run_id=f"run-{k:03d}", settings=settings)
        assert report.unknown == {} and report.broker_rejected == {}, report.to_dict()
    return broker


def utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


SCENARIOS = {
    # a position, open-position and order-count limits binding, forecasts weighted in, once a day at 15:00
    "limits": dict(seed=5, cash=100_000.0, times=["15:00"], last="2024-03-01", settings=CycleSettings(
        weights={"technical": 0.4, "sentiment": 0.4, "forecast": 0.2}, min_score=0.05, fraction=0.08,
        limits=RiskLimits(min_confidence=0.25, max_open_positions=8, max_orders_per_day=6, max_position_fraction=0.12,
                          max_order_notional=9000.0))),
    # a small book: buying power and the daily loss limit binding, volatility sizing, plus a 17:30 cycle (market
    # closed: equities refused, crypto trades) and a 10:00 cycle (bar-aware: the 15:00 cycle skips its bars); two weeks
    "cash": dict(seed=2, cash=30_000.0, times=["10:00", "15:00", "17:30"], last="2024-02-14", settings=CycleSettings(
        weights={"technical": 0.5, "sentiment": 0.5}, min_score=0.05, fraction=0.5, sizing="volatility",
        target_volatility=0.01, limits=RiskLimits(min_confidence=0.2, max_open_positions=30, max_orders_per_day=50,
                                                  max_position_fraction=0.6, max_order_notional=1e6,
                                                  daily_loss_limit=0.002))),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_month_of_cycles_gives_the_orders_fills_and_equity_of_the_cycle_by_cycle_replay(name, store):
    """21 sessions of 19 equities and BTC/USD (10 sessions, three cycles a day, for the small book): the orders (symbol, side, qty, bar, verdict, id), fills
    (price to 1e-9, commission, bar) and equity at every cycle are the store-backed replay's."""
    logging.disable(logging.WARNING)  # the simulated broker logs every order
    try:
        scenario = SCENARIOS[name]
        market = SyntheticMarket(seed=scenario["seed"])
        cycles = sorted(t for at in scenario["times"] for t in session_instants("2024-02-01", scenario["last"], at))
        bars = market.panel(SYMBOLS, "2023-06-01", "2024-03-01")
        forecasts, evaluations = forecast_runs(bars[bars["ts"] >= pd.Timestamp("2024-01-15", tz="UTC")], seed=1)
        settings = scenario["settings"]
        inputs = prepare_backtest(bars, SYMBOLS, cycles=cycles, settings=settings, news=market, forecasts=forecasts,
                                  evaluations=evaluations, dag_id="desk",
                                  run_ids=[f"run-{k:03d}" for k in range(len(cycles))])
        result = run_backtest(inputs, initial_cash=scenario["cash"], **COSTS)
        broker = replay(store, market, cycles, settings, forecasts, evaluations, scenario["cash"])
    finally:
        logging.disable(logging.NOTSET)
    ledger = broker.ledger

    decided = [d for d in ledger.decisions("desk") if d["action"] in ("buy", "sell")]
    expected = sorted((d["run_id"], d["symbol"], d["action"], d["order_qty"], utc(d["bar_ts"]), bool(d["approved"]),
                       d["risk_rule"], d["client_order_id"]) for d in decided)
    got = sorted((r.run_id, r.symbol, r.side, r.qty, r.bar_ts, bool(r.approved), r.risk_rule, r.client_order_id)
                 for r in result.orders.itertuples())
    assert got == expected

    fills = sorted(ledger.fills(broker.account), key=lambda f: f["client_order_id"])
    mine = result.fills.sort_values("client_order_id")
    assert len(mine) == len(fills)
    for f, r in zip(fills, mine.itertuples(), strict=True):
        assert (r.client_order_id, r.symbol, r.side, r.qty, r.bar_ts) == \
            (f["client_order_id"], f["symbol"], f["side"], f["qty"], utc(f["bar_ts"]))
        assert r.price == pytest.approx(f["price"], abs=1e-9)
        assert r.commission == pytest.approx(f["commission"], abs=1e-9)
    statuses = {o["client_order_id"]: o["status"] for o in ledger.orders(broker.account)}
    assert {r.client_order_id: r.status for r in result.orders.itertuples() if r.approved} == \
        {cid: "open" if status == "new" else status for cid, status in statuses.items()}

    curve = ledger.equity_curve(broker.account)
    assert [utc(c["ts"]) for c in curve] == list(result.equity["ts"])
    np.testing.assert_allclose(result.equity["equity"], [c["equity"] for c in curve], rtol=1e-12)
    np.testing.assert_allclose(result.equity["cash"], [c["cash"] for c in curve], rtol=1e-12)
    assert result.final_equity == pytest.approx(curve[-1]["equity"], rel=1e-12)

    # not vacuous: orders both ways, fills, and risk rejections of the rules the scenario is for
    orders = result.orders
    rules = set(orders["risk_rule"].dropna())
    assert (orders["side"] == "buy").sum() >= 20 and (orders["side"] == "sell").sum() >= 10
    assert len(result.fills) >= 40 and (result.fills["side"] == "sell").sum() >= 10
    assert (result.fills["symbol"] == "BTC/USD").any()
    assert len(result.trades) >= 10 and result.metrics["fills"] == len(result.fills)
    if name == "limits":
        assert {"max_open_positions", "max_orders_per_day"} <= rules
        assert (forecasts["run_id"].nunique() > 20) and (inputs.signals["forecast"].confidence > 0).mean() > 0.3
    else:
        assert {"buying_power", "daily_loss_limit", "market_open"} <= rules
        # bar-aware: the 15:00 cycle decides no equity bar the 10:00 cycle decided (the market is open at both)
        at_1500 = orders["decided_at"].dt.tz_convert("America/New_York").dt.hour == 15
        assert (at_1500 & (orders["symbol"] != "BTC/USD")).sum() == 0 and (~at_1500).sum() >= 20
    assert result.metrics["periods_per_year"] == 252
    assert result.metrics["daily_returns"] == len({t.date() for t in result.equity["ts"]}) - 1
    json.dumps(result.to_dict(), allow_nan=False)


def test_intraday_and_weekend_cycles_give_the_orders_fills_and_equity_of_the_replay(store):
    """30-minute bars, replayed at past instants as a back-fill: cycles from before the open to after the close, on the
    bar grid and off it (a 15:50 order fills at the next session's first bar), and a Saturday (24/7 crypto trades,
    equities are refused): the same orders, fills and equity as ``trade_universe`` cycle by cycle."""
    from airflow_provider_portfolio.store.ledger import TradingLedger

    symbols = ["AAPL", "MSFT", "NVDA", "TSLA", "BTC/USD"]
    times = ["09:10", *[f"{h}:{m}" for h in range(10, 16) for m in ("00", "20")], "15:50", "17:40"]
    local = [f"{day} {t}" for day in ("2024-02-13", "2024-02-14", "2024-02-15") for t in times]
    local += ["2024-02-17 11:00", "2024-02-17 14:40"]
    cycles = [pd.Timestamp(t, tz="America/New_York").tz_convert("UTC").to_pydatetime() for t in local]
    run_ids = [f"run-{k:03d}" for k in range(len(cycles))]
    settings = CycleSettings(timeframe="30Min", weights={"technical": 0.5, "sentiment": 0.5}, min_score=0.02,
                             fraction=0.1, limits=RiskLimits(min_confidence=0.15, max_orders_per_day=40, max_orders_per_symbol_per_day=10,
                                                             max_position_fraction=0.3, max_order_notional=1e6))
    market = SyntheticMarket(seed=3)
    logging.disable(logging.WARNING)  # the simulated broker logs every order
    try:
        bars = market.panel(symbols, "2024-01-10", "2024-02-18", "30Min")
        inputs = prepare_backtest(bars, symbols, cycles=cycles, settings=settings, news=market, dag_id="desk",
                                  run_ids=run_ids)
        result = run_backtest(inputs, initial_cash=50_000.0, **COSTS)
        broker = SimulatedBroker(TradingLedger(store), name="replay", initial_cash=50_000.0, **COSTS)
        for now, run_id in zip(cycles, run_ids, strict=True):
            trade_universe(symbols, store=store, sources=[market], broker=broker, now=now, dag_id="desk",
                           run_id=run_id, settings=settings, forecast_model=None)
    finally:
        logging.disable(logging.NOTSET)
    ledger = broker.ledger

    decided = [d for d in ledger.decisions("desk") if d["action"] in ("buy", "sell")]
    assert sorted((d["run_id"], d["symbol"], d["action"], d["order_qty"], utc(d["bar_ts"]), bool(d["approved"]),
                   d["risk_rule"], d["client_order_id"]) for d in decided) == \
        sorted((r.run_id, r.symbol, r.side, r.qty, r.bar_ts, bool(r.approved), r.risk_rule, r.client_order_id)
               for r in result.orders.itertuples())
    fills = sorted(ledger.fills(broker.account), key=lambda f: f["client_order_id"])
    mine = result.fills.sort_values("client_order_id")
    assert [(f["client_order_id"], f["qty"], utc(f["bar_ts"])) for f in fills] == \
        [(r.client_order_id, r.qty, r.bar_ts) for r in mine.itertuples()]
    np.testing.assert_allclose(mine["price"], [f["price"] for f in fills], rtol=0, atol=1e-9)
    curve = ledger.equity_curve(broker.account)
    np.testing.assert_allclose(result.equity["equity"], [c["equity"] for c in curve], rtol=1e-12)

    # not vacuous: equity orders refused outside the session, crypto filled on the Saturday; every equity fill at a
    # session bar that started at or after its order's cycle
    rules = set(result.orders["risk_rule"].dropna())
    assert "market_open" in rules and len(result.fills) >= 5, (rules, len(result.fills))
    saturday = result.fills["bar_ts"].dt.tz_convert("America/New_York").dt.dayofweek == 5
    assert set(result.fills.loc[saturday, "symbol"]) == {"BTC/USD"}
    decided = result.orders.set_index("client_order_id")["decided_at"]
    equity_fills = result.fills[result.fills["symbol"] != "BTC/USD"]
    assert len(equity_fills) > 0
    assert (equity_fills["bar_ts"].to_numpy() >= decided.loc[equity_fills["client_order_id"]].to_numpy()).all()
    clock = equity_fills["bar_ts"].dt.tz_convert("America/New_York").dt.strftime("%H:%M")
    assert clock.between("09:30", "15:30").all(), clock.tolist()


def test_a_sweep_reruns_settings_on_the_same_inputs():
    """Runs with other thresholds on one prepared input do not disturb it: each equals a fresh one-call backtest."""
    market = SyntheticMarket(seed=4)
    cycles = session_instants("2024-02-01", "2024-02-29", "15:00")
    bars = market.panel(SYMBOLS, "2023-06-01", "2024-02-29")
    base = CycleSettings(weights={"technical": 0.5, "sentiment": 0.5}, min_score=0.05,
                         limits=RiskLimits(min_confidence=0.2))
    strict = CycleSettings(weights={"technical": 0.8, "sentiment": 0.2}, min_score=0.15,
                           limits=RiskLimits(min_confidence=0.2, max_open_positions=3))
    inputs = prepare_backtest(bars, SYMBOLS, cycles=cycles, settings=base, news=market)
    first = run_backtest(inputs)
    other = run_backtest(inputs, strict)
    again = run_backtest(inputs)
    assert len(first.orders) > 0 and len(other.orders) > 0 and not first.orders.equals(other.orders)
    pd.testing.assert_frame_equal(first.orders, again.orders)
    pd.testing.assert_frame_equal(first.equity, again.equity)
    one_call = backtest(bars, SYMBOLS, cycles=cycles, settings=strict, news=market)
    pd.testing.assert_frame_equal(other.orders, one_call.orders)
    pd.testing.assert_frame_equal(other.fills, one_call.fills)
    with pytest.raises(InvalidInputError, match=r"differ from the prepared ones in \['max_abs_return'\]"):
        run_backtest(inputs, CycleSettings(max_abs_return=0.2))


# -- the vectorised decisions are decide's -----------------------------------------------------------------------

@pytest.mark.parametrize("sizing", ["fixed_fraction", "volatility"])
@pytest.mark.parametrize("allow_short", [False, True])
def test_decide_arrays_gives_what_decide_gives(sizing, allow_short):
    rng = np.random.default_rng(7)
    n = 4000
    symbols = [f"S{i:04d}" if i % 4 else f"C{i:04d}/USD" for i in range(n)]
    score = rng.uniform(-1.2, 1.2, n)
    confidence = rng.uniform(0, 1, n)
    price = rng.choice([np.nan, -1.0, 0.0, 0.37, 3.0, 57.13, 412.9, 61_234.5], n)
    held = rng.choice([0.0, 0.0, 3.0, -2.0, 17.0, 0.125, 0.000123], n)
    vol = rng.choice([np.nan, 0.0, 0.004, 0.013, 0.05], n)
    crypto = np.array(["/" in s for s in symbols])
    equity = 123_456.78
    kwargs = dict(min_confidence=0.3, min_score=0.08, sizing=sizing, fraction=0.07, target_volatility=0.002,
                  allow_short=allow_short)
    decisions = decide(symbols, score, confidence, {s: float(p) for s, p in zip(symbols, price, strict=True)
                                                    if not np.isnan(p)},
                       {s: float(h) for s, h in zip(symbols, held, strict=True)}, equity,
                       volatility={s: float(v) for s, v in zip(symbols, vol, strict=True) if not np.isnan(v)},
                       fractionable={s: bool(c) for s, c in zip(symbols, crypto, strict=True)}, **kwargs)
    side, qty, target = decide_arrays(score, confidence, price, held, equity, volatility=vol, fractionable=crypto,
                                      **kwargs)
    action = np.array([{"buy": 1, "sell": -1, "hold": 0}[d.action] for d in decisions])
    np.testing.assert_array_equal(side, action)
    np.testing.assert_array_equal(qty, [d.order_qty for d in decisions])
    np.testing.assert_array_equal(target, [d.target_qty for d in decisions])
    assert (side == 1).sum() > 100 and (side == -1).sum() > 100 and (crypto & (side != 0)).sum() > 50


@pytest.mark.parametrize("kill_switch", ["active", "reduce_only", "halted"])
def test_check_batch_gives_what_check_orders_gives(kill_switch):
    """Random batches against random books and limits: the same verdict, rule and reason for every order, and the
    same day's order counts after."""
    rng = np.random.default_rng(11)
    rules = set()
    for trial in range(300):
        n = int(rng.integers(1, 25))
        symbols = [f"S{i:02d}" for i in range(n)] + ["X/USD"]
        held = {s: float(q) for s in symbols if (q := rng.choice([0, 0, 5, -3, 40, 0.5])) != 0}
        counts = {s: int(c) for s in symbols if (c := rng.choice([0, 0, 0, 1, 3]))}
        limits = RiskLimits(max_order_notional=float(rng.choice([500, 5000, 1e6])),
                            max_position_fraction=float(rng.choice([0.02, 0.1, 1.0])),
                            max_open_positions=int(rng.integers(0, 12)), max_orders_per_symbol_per_day=3,
                            max_orders_per_day=int(rng.integers(3, 30)),
                            daily_loss_limit=float(rng.choice([0.01, 0.5])),
                            min_confidence=0.3, allow_short=bool(rng.integers(0, 2)))
        orders = [ProposedOrder(s, str(rng.choice(["buy", "sell"])), float(rng.choice([1, 2, 5, 40, 0.25])),
                                float(rng.choice([10.0, 99.5, 1200.0])), float(rng.uniform(0, 1)), "/" in s)
                  for s in rng.permutation(symbols)]
        fields = dict(equity=float(rng.choice([20_000.0, 100_000.0])), cash=float(rng.choice([0.0, 5_000.0, 1e5])),
                      buying_power=float(rng.choice([0.0, 3_000.0, 1e5])),
                      start_of_day_equity=float(rng.choice([20_000.0, 101_000.0, 0.0])))
        flags = {name: {s: bool(rng.uniform() > 0.1) for s in symbols} for name in ("tradable", "shortable",
                                                                                   "market_open")}
        account = AccountState(**fields, positions=held, orders_today=counts, **flags)
        expected = check_orders(orders, account, limits, kill_switch)
        working = dict(counts)
        got = check_batch(orders, **fields, positions=held, orders_today=working, **flags, limits=limits,
                          kill_switch=kill_switch)
        assert [(v.approved, v.rule, v.reason) for v in got] == \
            [(v.approved, v.rule, v.reason) for v in expected], trial
        approved = [o.symbol for o, v in zip(orders, expected, strict=True) if v.approved]
        assert working == {s: counts.get(s, 0) + approved.count(s) for s in set(counts) | set(approved)}
        rules |= {v.rule for v in expected}
    if kill_switch == "active":
        assert {None, "tradable", "market_open", "min_confidence", "daily_loss_limit", "short_selling",
                "max_order_notional", "max_position_fraction", "max_open_positions", "max_orders_per_symbol_per_day",
                "max_orders_per_day", "buying_power", "account_state"} <= rules, rules
    else:
        assert "kill_switch" in rules and (kill_switch == "halted") == (None not in rules)


def test_the_forecast_panel_is_forecast_inputs_at_every_cycle():
    """Forecasts read point in time (some made after a cycle's instant but on a closed bar, some stale, some NaN,
    healthy or not): the panel equals ``_forecast_inputs`` of each cycle's reading, element for element."""
    market = SyntheticMarket(seed=9)
    symbols = ("AAPL", "BTC/USD", "KO", "MSFT")
    bars = market.panel(list(symbols), "2024-01-02", "2024-02-29")
    forecasts, evaluations = forecast_runs(bars[bars["symbol"] != "KO"], seed=3)
    forecasts.loc[forecasts.index[::7], "point"] = np.nan
    forecasts = forecasts[~((forecasts["symbol"] == "MSFT") & (forecasts["asof"] > "2024-02-05"))]  # goes stale
    cycles = sorted(session_instants("2024-02-01", "2024-02-29", "15:00")
                    + session_instants("2024-02-01", "2024-02-29", "17:00"))  # 17:00: the bar closed, not a day old
    ns = np.array([pd.Timestamp(t).value for t in cycles])
    fc, pick = _latest_available(forecasts, symbols, ns, "XNYS", "forecasts")
    ev, epick = _latest_available(evaluations, symbols, ns, "XNYS", "evaluations")
    last = np.random.default_rng(1).uniform(50, 150, (len(cycles), len(symbols)))
    last[::5, 0] = np.nan
    panel = _forecast_panel(fc, pick, ev, epick, last, ns)
    kinds = set()
    for k, now in enumerate(cycles):
        reading = fc.iloc[pick[k][pick[k] >= 0]], ev.iloc[epick[k][epick[k] >= 0]]
        er, lo, hi, healthy, notes = _forecast_inputs(symbols, last[k], *reading, now)
        for mine, theirs in zip(panel, (er, lo, hi, healthy), strict=True):
            np.testing.assert_array_equal(mine[k], theirs)
        kinds |= {note.split(" ")[0] for note in notes.values()} | ({"used"} if healthy.any() else set())
    assert {"forecast", "stale", "no", "used"} <= kinds


# -- metrics, by hand ------------------------------------------------------------------------------------------------

def test_metrics_of_a_known_curve_computed_by_hand():
    """Equity 100, 110, 99, 108.9 on four days: returns +10 %, -10 %, +10 %; mean 1/30, sample std 0.11547005,
    downside deviation sqrt(0.01 / 3) = 0.05773503. With 6 periods a year: Sharpe 1/30 / 0.11547005 * sqrt 6 =
    0.70710678, Sortino 1/30 / 0.05773503 * sqrt 6 = 1.41421356, volatility 0.11547005 * sqrt 6 = 0.28284271,
    total return 0.089, annualised 1.089 ** (6 / 3) - 1 = 0.185921, max drawdown (110 - 99) / 110 = 0.1.
    Fills: buy 10 at 10.005 (open 10, commission 1), sell 10 at 10.989 (open 11, commission 1.5): one trade of
    10 * 0.984 - 2.5 = 7.34; turnover (100.05 + 109.89) / 104.475 = 2.00947595; slippage 0.05 + 0.11 = 0.16."""
    days = pd.date_range("2024-03-04 20:00", periods=4, freq="D", tz="UTC")
    equity = pd.DataFrame({"ts": days, "cash": 0.0, "positions_value": 0.0, "equity": [100.0, 110.0, 99.0, 108.9]})
    fills = pd.DataFrame({"client_order_id": ["a", "b"], "symbol": ["AAPL", "AAPL"], "side": ["buy", "sell"],
                          "qty": [10.0, 10.0], "price": [10.005, 10.989], "open": [10.0, 11.0],
                          "commission": [1.0, 1.5], "bar_ts": days[1:3], "filled_at": days[1:3]})
    orders = pd.DataFrame({"approved": [True, True, False], "status": ["filled", "filled", "risk_rejected"]})
    trades = closed_trades(fills.to_dict("records"))
    m = backtest_metrics(equity, fills, orders, trades, initial_cash=100.0, slippage=0.0005, periods_per_year=6)
    assert m["sharpe"] == pytest.approx(0.70710678, abs=1e-8)
    assert m["sortino"] == pytest.approx(1.41421356, abs=1e-8)
    assert m["volatility"] == pytest.approx(0.28284271, abs=1e-8)
    assert m["total_return"] == pytest.approx(0.089, abs=1e-12)
    assert m["annualised_return"] == pytest.approx(0.185921, abs=1e-12)
    assert m["max_drawdown"] == pytest.approx(0.1, abs=1e-12)
    assert [round(t.pnl, 10) for t in trades] == [7.34]
    assert m["win_rate"] == 1.0 and m["profit_factor"] == math.inf
    assert m["turnover"] == pytest.approx(2.00947595, abs=1e-8)
    assert m["commission"] == pytest.approx(2.5) and m["slippage_cost"] == pytest.approx(0.16, abs=1e-12)
    assert m["costs"] == pytest.approx(2.66, abs=1e-12)
    assert (m["orders"], m["approved"], m["risk_rejected"], m["fills"], m["trades"]) == (3, 2, 1, 2, 1)


# -- a strategy fed in from outside --------------------------------------------------------------------------------

def crafted_bars(closes: list[float], first: str = "2024-01-02") -> pd.DataFrame:
    """Daily AAPL bars on the New York sessions from ``first``, each opening 0.5 above the previous close."""
    from airflow_provider_portfolio.market.calendar import MarketCalendar

    days = MarketCalendar("XNYS").sessions(first, "2024-12-31").index[:len(closes)]
    close = np.array(closes)
    open_ = np.r_[close[0], close[:-1] + 0.5]
    return pd.DataFrame({"symbol": "AAPL", "timeframe": "1Day", "ts": pd.DatetimeIndex(days).tz_localize("UTC"),
                         "open": open_, "high": np.maximum(open_, close) + 1, "low": np.minimum(open_, close) - 1,
                         "close": close, "volume": 1000.0})


def test_a_crossover_fed_in_as_targets_fills_at_the_next_open():
    """Closes falling then rising then falling: the 3/6-bar SMAs cross up once and down once; with cycles at each
    session's open, each order fills at the open of the bar after the crossover bar, 100 shares, no costs."""
    closes = [100 - i for i in range(10)] + [91 + 2 * i for i in range(10)] + [109 - 3 * i for i in range(10)]
    bars = crafted_bars(closes)
    days = pd.DatetimeIndex(bars["ts"])
    cycles = session_instants(days[1].date(), "2024-02-20", "09:30")[:len(days)]  # one past the last bar
    loose = RiskLimits(max_order_notional=1e9, max_position_fraction=1.0, min_confidence=0.0)
    inputs = prepare_backtest(bars, ["AAPL"], cycles=cycles, settings=CycleSettings(limits=loose), signals=False)
    targets = crossover_targets(inputs, fast=3, slow=6, qty=100)
    result = run_backtest(inputs, targets=targets, slippage_bps=0.0)
    fast = pd.Series(closes).rolling(3).mean()
    slow = pd.Series(closes).rolling(6).mean()
    gap = (fast - slow).to_numpy()
    up = [i for i in range(1, 30) if gap[i - 1] < 0 < gap[i]]
    down = [i for i in range(1, 30) if gap[i - 1] > 0 > gap[i]]
    assert len(up) == 1 and len(down) == 1 and up[0] < down[0]
    assert list(result.fills["side"]) == ["buy", "sell"] and list(result.fills["qty"]) == [100.0, 100.0]
    assert list(result.fills["bar_ts"]) == [days[up[0] + 1], days[down[0] + 1]]
    assert list(result.fills["price"]) == [bars["open"].iloc[up[0] + 1], bars["open"].iloc[down[0] + 1]]
    assert result.final_equity == pytest.approx(100_000 + 100 * (bars["open"].iloc[down[0] + 1]
                                                                 - bars["open"].iloc[up[0] + 1]), abs=1e-9)
    with pytest.raises(InvalidInputError, match="prepared with signals=False"):
        run_backtest(inputs)
    with pytest.raises(InvalidInputError, match=r"targets must have shape"):
        run_backtest(inputs, targets=np.zeros((2, 2)))


# -- bad input -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_bars() -> pd.DataFrame:
    return SyntheticMarket(seed=1).panel(["AAPL", "BTC/USD"], "2023-09-01", "2024-02-29")


def at(day: str, hour: int = 15) -> datetime:
    return (pd.Timestamp(day).tz_localize("America/New_York") + pd.Timedelta(hours=hour)).tz_convert("UTC") \
        .to_pydatetime()


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b.iloc[:0], "empty history"),
    (lambda b: b[b["symbol"] == "BTC/USD"], r"unknown symbol\(s\) \['AAPL'\]"),
    (lambda b: b.assign(timeframe="30Min"), "empty history: no 1Day bars"),
    (lambda b: pd.concat([b, b.iloc[:1]]), r"duplicate bars: 1 repeated \(symbol, ts\), e.g. AAPL"),
    (lambda b: b.drop(columns="open"), r"lacks column\(s\) \['open'\]"),
    (lambda b: b.to_dict("records"), "must be a pandas DataFrame"),
])
def test_bad_bars_are_refused(small_bars, change, message):
    with pytest.raises(InvalidInputError, match=message):
        prepare_backtest(change(small_bars), ["AAPL", "BTC/USD"], cycles=[at("2024-02-01")])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cycles": [at("2023-08-01")]}, "is before the bars: no bar has closed by then"),
    ({"cycles": [at("2024-02-01"), at("2024-04-01")]}, "is after the bars: the last bar ended at"),
    ({"cycles": [at("2024-02-02"), at("2024-02-01")]}, "strictly increasing"),
    ({"cycles": [datetime(2024, 2, 1, 15)]}, "tz-aware"),
    ({"cycles": []}, "no cycle instants"),
    ({"cycles": [at("2024-02-01")], "cycle_time": "15:00"}, "either cycles"),
    ({}, "either cycles"),
    ({"cycle_time": "3pm"}, "cycle time must be 'HH:MM'"),
    ({"cycles": [at("2024-02-01")], "settings": {"min_score": 0.1}}, "settings must be CycleSettings"),
    ({"cycles": [at("2024-02-01")], "run_ids": ["a", "b"]}, "run_ids must be 1 distinct"),
    ({"cycles": [at("2024-02-01")], "dag_id": " "}, "dag_id must be"),
    ({"cycles": [at("2024-02-01")], "news": "headlines"}, "news must be a list of NewsItem"),
    ({"cycles": [at("2024-02-01")], "forecasts": pd.DataFrame({"symbol": ["AAPL"]})}, r"forecasts lack column"),
])
def test_bad_cycles_and_settings_are_refused(small_bars, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        prepare_backtest(small_bars, ["AAPL", "BTC/USD"], **kwargs)


def test_bad_run_parameters_are_refused(small_bars):
    inputs = prepare_backtest(small_bars, ["AAPL"], cycles=[at("2024-02-01"), at("2024-02-02")])
    assert inputs.run_ids == (f"backtest__{at('2024-02-01').isoformat()}", f"backtest__{at('2024-02-02').isoformat()}")
    for kwargs, message in [({"initial_cash": 0}, "initial_cash must be a positive number"),
                            ({"slippage_bps": -1}, "slippage_bps must be a finite number >= 0"),
                            ({"commission_bps": math.nan}, "commission_bps must be"),
                            ({"settings": CycleSettings(timeframe="30Min")}, r"differ .* \['timeframe'\]"),
                            ({"settings": CycleSettings(sizing="kelly")}, "sizing must be one of")]:
        with pytest.raises(InvalidInputError, match=message):
            run_backtest(inputs, **kwargs)
    with pytest.raises(InvalidInputError, match="must come from prepare_backtest"):
        run_backtest({"price": []})
    assert datetime(2024, 2, 1, tzinfo=timezone.utc) < inputs.cycles[0]
