"""The backtest against the cycle-by-cycle replay it reproduces, and a moving-average crossover against backtrader and
vectorbt; answers checked.

(a) ``--symbols`` (500) synthetic symbols (``S0000``...; the last five are crypto pairs) over ``--cycles`` (252)
sessions, one cycle a session at 15:00 New York, daily bars with 200 days of look-back before the first, news from
the synthetic market and one ensemble forecast run per bar and symbol (stored once its bar has closed). Timed side by
side in one run:

1. **backtest**: ``prepare_backtest`` (signals of every cycle; the feed's items fetched once and read per cycle over
   whole UTC days, ``news_days``, as the synthetic feed answers) + ``run_backtest`` over all cycles, and
   ``run_backtest`` alone (what each further setting of a sweep costs);
2. **replay** (the reference): ``trade_universe`` cycle by cycle through a fresh SQLite store and the simulated
   broker (news from the synthetic market as a source), the forecast runs written to the store as their bars close,
   over the first ``--replay-cycles`` (20) cycles, extrapolated to all cycles (a replay's cycle costs about the same
   all year: the same look-back, the same universe).

Checks (exit status 1 when one fails): the replayed cycles' orders (symbol, side, qty, bar, verdict, client order id)
equal the backtest's for those cycles, their fills (price to 1e-9, commission) and their equity snapshots too, with
orders and fills to compare; the backtest is at least 10x faster than the replay.

(b) A plain 10/30 SMA crossover on the closes, long-only, 100 shares, filled at the next bar's open, no costs, over
``--ma-symbols`` (100) equities x ``--cycles`` daily bars: in the backtest (``crossover_targets`` fed into
``run_backtest``'s fill and accounting engine, cycles at each session's open), in backtrader (event-driven, its own
SMA and CrossOver) and in vectorbt (vectorised, its own MA and crossed_above/below, signals shifted a bar and filled at
the open). Checks: the same trades (symbol, side, fill bar, price) in all three; prints the time ratios (aim: 10x
faster than backtrader). vectorbt is timed warm (its numba compilation on the first call reported apart).

Usage: python bench/bench_backtest.py [--symbols 500] [--cycles 252] [--replay-cycles 20] [--ma-symbols 100]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from checks import check, exit_status, timed

FIRST_SESSION = "2023-06-01"
CRYPTO = ["BTC/USD", "ETH/USD", "SOL/USD", "DOGE/USD", "LTC/USD"]
DAG_ID = "bench_backtest"
INITIAL_CASH = 10_000_000.0
COSTS = {"slippage_bps": 5.0, "commission_bps": 1.0}


def universe(n: int) -> list[str]:
    """``n`` symbols: tickers ``S0000``... and, from 10 symbols up, five crypto pairs last."""
    crypto = CRYPTO if n >= 10 else []
    return [f"S{i:04d}" for i in range(n - len(crypto))] + crypto


def sessions(n: int, at: str) -> list:
    """The first ``n`` New York sessions from :data:`FIRST_SESSION`, at ``at`` local time."""
    from airflow_provider_portfolio.trading.backtest import session_instants

    out = session_instants(FIRST_SESSION, "2026-12-31", at)[:n]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} sessions")
    return out


def forecast_runs(bars, seed: int):
    """One ensemble forecast run per bar and symbol, made on that bar, and its evaluation (about 30% unhealthy)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    b = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
    n = len(b)
    point = np.log(b["close"].to_numpy()) + rng.normal(0.001, 0.01, n)
    half = np.abs(rng.normal(0.02, 0.005, n))
    asof = pd.DatetimeIndex(b["ts"])
    key = {"run_id": [f"fc-{t:%Y%m%d}" for t in asof], "model": "ensemble", "symbol": b["symbol"].to_numpy(),
           "timeframe": "1Day", "asof": asof, "backend": "numpy", "device": "cpu"}
    forecasts = pd.DataFrame({**key, "step": 1, "target_ts": asof + pd.Timedelta(days=1), "target": "log_close",
                              "point": point, "lower": point - half, "upper": point + half, "level": 0.9,
                              "variance": np.nan})
    healthy = rng.uniform(size=n) > 0.3
    rmse = rng.uniform(0.005, 0.02, n)
    baseline = np.where(healthy, rmse * 1.2, rmse * 0.9)
    evaluations = pd.DataFrame({**key, "horizon": 5, "origins": 20, "rmse": rmse, "mae": rmse * 0.8,
                                "directional_accuracy": 0.5, "coverage": 0.9, "baseline": "last_value",
                                "baseline_rmse": baseline, "skill": 1 - rmse / baseline,
                                "label": np.where(healthy, "healthy", "unhealthy"), "healthy": healthy,
                                "weight": np.where(healthy, 1.0, np.nan)})
    return forecasts, evaluations


def settings():
    from airflow_provider_portfolio.trading.risk import RiskLimits
    from airflow_provider_portfolio.trading.settings import CycleSettings

    # A realistic share of the universe trades; the day's order count binds (risk rejections in symbol order).
    limits = RiskLimits(min_confidence=0.3, max_orders_per_day=120, max_open_positions=400, max_order_notional=1e7)
    return CycleSettings(min_score=0.05, fraction=0.001, limits=limits)


def replay(symbols, market, cycles, forecasts, evaluations, path: Path):
    """``trade_universe`` at each instant through a fresh store; returns (seconds, ledger, account)."""
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.market.calendar import bar_times
    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
    from airflow_provider_portfolio.trading.session import trade_universe

    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    broker = SimulatedBroker(TradingLedger(store), initial_cash=INITIAL_CASH, **COSTS)
    _, available = bar_times(forecasts.rename(columns={"asof": "ts"}))
    stored = np.zeros(len(forecasts), dtype=bool)
    started = time.perf_counter()
    for k, now in enumerate(cycles):
        due = ~stored & (available <= pd.Timestamp(now).value)
        if due.any():
            store.write_forecasts(forecasts[due], evaluations[due])
            stored |= due
        trade_universe(symbols, store=store, sources=[market], broker=broker, now=now, dag_id=DAG_ID,
                       run_id=f"run-{k:04d}", settings=settings())
    return time.perf_counter() - started, broker.ledger, broker.account, store


def part_a(args) -> None:
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.market.synthetic import SyntheticMarket
    from airflow_provider_portfolio.trading.backtest import prepare_backtest, run_backtest

    symbols = universe(args.symbols)
    market = SyntheticMarket(seed=11)
    cycles = sessions(args.cycles, "15:00")
    started = time.perf_counter()
    first = (pd.Timestamp(cycles[0]) - pd.Timedelta(days=200)).date()
    bars = market.panel(symbols, first, cycles[-1].date())
    forecasts, evaluations = forecast_runs(bars[bars["ts"] >= pd.Timestamp(cycles[0]) - pd.Timedelta(days=10)], 1)
    run_ids = [f"run-{k:04d}" for k in range(len(cycles))]
    print(f"(a) setup: {len(symbols)} symbols x {len(cycles)} cycles ({cycles[0]:%Y-%m-%d} .. {cycles[-1]:%Y-%m-%d}, "
          f"15:00 New York), {len(bars):,} daily bars, {len(forecasts):,} forecast runs; "
          f"{time.perf_counter() - started:.1f} s")

    news = market.get_news(symbols, (pd.Timestamp(cycles[0]) - pd.Timedelta(days=5)).date(), cycles[-1].date())
    prepare_s, inputs = timed(lambda: prepare_backtest(bars, symbols, cycles=cycles, settings=settings(), news=news,
                                                       news_days=True, forecasts=forecasts, evaluations=evaluations,
                                                       dag_id=DAG_ID, run_ids=run_ids))
    run_s, result = timed(lambda: run_backtest(inputs, initial_cash=INITIAL_CASH, **COSTS))
    backtest_s = prepare_s + run_s
    n = min(args.replay_cycles, len(cycles))
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        replay_s, ledger, account, store = replay(symbols, market, cycles[:n], forecasts, evaluations,
                                                  Path(tmp) / "replay.db")
        decided = [d for d in ledger.decisions(DAG_ID) if d["action"] in ("buy", "sell")]
        fills = ledger.fills(account)
        curve = ledger.equity_curve(account)
        store.dispose()
    replay_full_s = replay_s * len(cycles) / n
    ratio = replay_full_s / backtest_s

    m = result.metrics
    print(f"\n  backtest: {m['orders']:,} orders ({m['approved']:,} approved, {m['risk_rejected']:,} rejected by risk), "
          f"{m['fills']:,} fills, {m['trades']:,} closed trades; return {m['total_return']:+.2%}, Sharpe "
          f"{m['sharpe'] if m['sharpe'] is None else round(m['sharpe'], 2)}, max drawdown {m['max_drawdown']:.2%}")
    print(f"  {'':<44}{'s':>10}{'ms/cycle':>11}")
    print(f"  {'prepare_backtest (signals of every cycle)':<44}{prepare_s:10.2f}{prepare_s / len(cycles) * 1e3:11.1f}")
    print(f"  {'run_backtest (one setting of a sweep)':<44}{run_s:10.2f}{run_s / len(cycles) * 1e3:11.1f}")
    print(f"  {'backtest, total':<44}{backtest_s:10.2f}{backtest_s / len(cycles) * 1e3:11.1f}")
    sample = f"{n} of {len(cycles)} cycles, extrapolated" if n < len(cycles) else "all cycles"
    print(f"  {'replay, trade_universe per cycle (' + sample + ')':<44}{replay_full_s:10.1f}"
          f"{replay_s / n * 1e3:11.1f}   (measured {replay_s:.1f} s)")
    print(f"  -> the backtest is {ratio:,.0f}x faster than the replay; a further setting of a sweep "
          f"{replay_full_s / run_s:,.0f}x")
    print()

    # -- checks: the replayed cycles are the backtest's -----------------------------------------------------------
    def utc(value):
        ts = pd.Timestamp(value)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    sampled = set(run_ids[:n])
    expected = sorted((d["run_id"], d["symbol"], d["action"], d["order_qty"], utc(d["bar_ts"]), bool(d["approved"]),
                       d["risk_rule"], d["client_order_id"]) for d in decided)
    got = sorted((r.run_id, r.symbol, r.side, r.qty, r.bar_ts, bool(r.approved), r.risk_rule, r.client_order_id)
                 for r in result.orders.itertuples() if r.run_id in sampled)
    check(got == expected and len(got) > 0,
          f"the {n} replayed cycles' orders equal the backtest's ({len(expected)} orders, "
          f"{sum(1 for d in decided if d['approved'])} approved, {sum(1 for d in decided if not d['approved'])} "
          "rejected by risk: symbol, side, qty, bar, verdict, client order id)")
    seen = set(result.equity["ts"].iloc[:n])
    mine = result.fills[result.fills["filled_at"].isin(seen)].sort_values("client_order_id")
    theirs = sorted(fills, key=lambda f: f["client_order_id"])
    same = len(mine) == len(theirs) and all(
        (r.client_order_id, r.symbol, r.side, r.qty) == (f["client_order_id"], f["symbol"], f["side"], f["qty"])
        and abs(r.price - f["price"]) <= 1e-9 and abs(r.commission - f["commission"]) <= 1e-9
        for r, f in zip(mine.itertuples(), theirs, strict=False))
    check(same and len(theirs) > 0, f"their fills equal the backtest's ({len(theirs)} fills; price to 1e-9)")
    equity = np.array([c["equity"] for c in curve])
    close = len(equity) == n and np.allclose(result.equity["equity"].iloc[:n], equity, rtol=1e-12, atol=0)
    check(close, f"their equity snapshots equal the backtest's ({n} cycles, last {equity[-1]:,.2f})")
    check(ratio >= 10, f"the backtest is {ratio:,.1f}x faster than the replay (>= 10x)")
    return ratio


def crossover_bars(n_symbols: int, n_cycles: int):
    from airflow_provider_portfolio.market.synthetic import SyntheticMarket

    symbols = [f"S{i:04d}" for i in range(n_symbols)]
    days = sessions(n_cycles + 1, "09:30")  # one more session: the last bar's order is seen filled
    bars = SyntheticMarket(seed=23).panel(symbols, days[0].date(), days[-2].date())
    return symbols, bars, days[1:]


def ours(symbols, bars, cycles, qty: float):
    from airflow_provider_portfolio.trading.backtest import crossover_targets, prepare_backtest, run_backtest
    from airflow_provider_portfolio.trading.risk import RiskLimits
    from airflow_provider_portfolio.trading.settings import CycleSettings

    loose = RiskLimits(max_order_notional=1e12, max_position_fraction=1.0, max_open_positions=10**6,
                       max_orders_per_symbol_per_day=10**6, max_orders_per_day=10**6, daily_loss_limit=1.0,
                       min_confidence=0.0)
    inputs = prepare_backtest(bars, symbols, cycles=cycles, settings=CycleSettings(limits=loose), signals=False)
    result = run_backtest(inputs, targets=crossover_targets(inputs, 10, 30, qty), initial_cash=1e12,
                          slippage_bps=0.0)
    return [(f.symbol, f.side, f.bar_ts.date(), round(f.price, 9)) for f in result.fills.itertuples()]


def with_backtrader(symbols, bars, qty: float):
    import backtrader as bt
    import pandas as pd

    trades: list[tuple] = []

    class Crossover(bt.Strategy):
        def __init__(self):
            self.cross = {d._name: bt.indicators.CrossOver(bt.indicators.SMA(d.close, period=10),
                                                           bt.indicators.SMA(d.close, period=30)) for d in self.datas}

        def next(self):
            for d in self.datas:
                cross = self.cross[d._name][0]
                if cross > 0 and not self.getposition(d).size:
                    self.buy(data=d, size=qty)
                elif cross < 0 and self.getposition(d).size:
                    self.close(data=d)

        def notify_order(self, order):
            if order.status == order.Completed:
                trades.append((order.data._name, "buy" if order.isbuy() else "sell",
                               bt.num2date(order.executed.dt).date(), round(order.executed.price, 9)))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(1e12)
    for symbol, group in bars.groupby("symbol", sort=True):
        frame = group.set_index(pd.DatetimeIndex(group["ts"]).tz_localize(None))[["open", "high", "low", "close",
                                                                                   "volume"]]
        cerebro.adddata(bt.feeds.PandasData(dataname=frame), name=symbol)
    cerebro.addstrategy(Crossover)
    cerebro.run()
    return trades


def with_vectorbt(symbols, bars, qty: float):
    import pandas as pd
    import vectorbt as vbt

    close = bars.pivot(index="ts", columns="symbol", values="close")
    open_ = bars.pivot(index="ts", columns="symbol", values="open")
    fast, slow = vbt.MA.run(close, 10), vbt.MA.run(close, 30)
    entries = fast.ma_crossed_above(slow).shift(1, fill_value=False).astype(bool)
    exits = fast.ma_crossed_below(slow).shift(1, fill_value=False).astype(bool)
    entries.columns, exits.columns = close.columns, close.columns
    pf = vbt.Portfolio.from_signals(close, entries, exits, price=open_, size=qty, size_type="amount",
                                    init_cash=1e12, fees=0.0, freq="1D")
    records = pf.orders.records_arr
    index = pd.DatetimeIndex(close.index)
    return [(close.columns[int(r["col"])], "buy" if int(r["side"]) == 0 else "sell", index[int(r["idx"])].date(),
             round(float(r["price"]), 9)) for r in records]


def part_b(args) -> None:
    symbols, bars, cycles = crossover_bars(args.ma_symbols, args.cycles)
    print(f"(b) 10/30 SMA crossover, long-only, 100 shares, next-bar open, no costs: {len(symbols)} equities x "
          f"{bars['ts'].nunique()} daily bars")
    ours_s, mine = timed(lambda: ours(symbols, bars, cycles, 100.0))
    bt_s, theirs_bt = timed(lambda: with_backtrader(symbols, bars, 100.0))
    compile_s, _ = timed(lambda: with_vectorbt(symbols, bars, 100.0))
    vbt_s, theirs_vbt = timed(lambda: with_vectorbt(symbols, bars, 100.0))
    print(f"\n  {'engine':<40}{'s':>9}{'trades':>8}{'vs ours':>10}")
    print(f"  {'backtest (crossover_targets + run)':<40}{ours_s:9.3f}{len(mine):8d}{1:10.2f}")
    print(f"  {'backtrader (event-driven)':<40}{bt_s:9.3f}{len(theirs_bt):8d}{bt_s / ours_s:10.2f}")
    print(f"  {'vectorbt (vectorised, warm)':<40}{vbt_s:9.3f}{len(theirs_vbt):8d}{vbt_s / ours_s:10.2f}"
          f"   (first call, numba compiling: {compile_s:.2f} s)")
    print(f"  -> the backtest is {bt_s / ours_s:,.1f}x faster than backtrader; vectorbt is "
          f"{ours_s / vbt_s:,.1f}x faster than the backtest\n")
    key = sorted
    check(len(mine) > 0 and key(mine) == key(theirs_bt),
          f"the same trades as backtrader ({len(mine)} fills: symbol, side, fill bar, price)")
    check(key(mine) == key(theirs_vbt), f"the same trades as vectorbt ({len(theirs_vbt)} fills)")
    print(f"  [{'PASS' if bt_s / ours_s >= 10 else 'NOTE'}] aim: 10x faster than backtrader "
          f"({bt_s / ours_s:,.1f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=252, help="sessions (one cycle each) and daily bars")
    parser.add_argument("--replay-cycles", type=int, default=20, help="cycles replayed through the store")
    parser.add_argument("--ma-symbols", type=int, default=100)
    parser.add_argument("--skip", choices=["a", "b"], help="leave out part (a) or (b)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the simulated broker logs every order and fill
    started = time.perf_counter()
    if args.skip != "a":
        part_a(args)
    if args.skip != "b":
        part_b(args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
