"""One trading cycle for 500 symbols, batched against one symbol at a time, answers checked.

Setup (not timed): ``--symbols`` (500) synthetic tickers (``S0000``...; the last five are crypto pairs),
``--days`` (180) calendar days of daily bars ending on the session ``2024-06-26``, news from the synthetic
market, and two ensemble forecast runs in a fresh SQLite store: one made on the previous bar (for a warm-up
cycle) and one on the last bar (for the cycle measured): step-1 point/lower/upper in log-close space around
the log of the last close, about 10% of the models labelled unhealthy. A warm-up cycle on the previous
session opens positions, and a ``broker.sync`` fills them at the next session's open, so the cycle measured
starts from a book that holds positions. The store is then copied, so both sides start from the same book,
and its engine disposed, so both start cold (SQLAlchemy's statement cache empty), as a fresh task process does.

Timed, side by side in one run, the cycle at 15:00 New York on the next session (market open, forecasts
one bar old):

1. **batched**: ``read_forecasts`` + ``read_evaluations`` + ``run_cycle`` over all symbols (signals,
   decisions, risk, simulated orders, store writes), with the time of each step;
2. **per symbol** (the naive baseline): the same for one symbol at a time, on the copy of the store, over
   the first ``--baseline-symbols`` (all by default) symbols, extrapolated to all when a sample.

Checks (exit status 1 when one fails): one decision row per symbol for the run; as many order rows as
approved decisions, under unique client order ids; the equity snapshot equals cash plus the positions valued
at their marks, recomputed from the book, and every position is marked at its last close; the batched and the per-symbol runs decided the same actions,
quantities and risk verdicts for the same symbols; a second run of the same run id sends no order to the
broker and adds no row. Target: the batched cycle under 30 s for 500 symbols (the seed's budget was
5 minutes per cycle).

Also timed: the same batched cycle with and without the account lock, the quality gate on its bars and the
last-price check (three runs each on fresh copies of the warmed-up store, alternating; the minimum of each),
checked to cost no more than 15 %.

Usage: python bench/bench_trading.py [--symbols 500] [--days 180] [--baseline-symbols N] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from checks import check, exit_status, timed

TARGET_S = 30.0
SEED_BUDGET_S = 300.0
LAST_SESSION = "2024-06-26"  # a Wednesday: the warm-up runs on it, the cycle measured on Thursday the 27th
MEASURED_SESSION = "2024-06-27"
CRYPTO = ["BTC/USD", "ETH/USD", "SOL/USD", "DOGE/USD", "LTC/USD"]
DAG_ID = "bench_trading"
INITIAL_CASH = 10_000_000.0


def universe(n: int) -> list[str]:
    """``n`` valid symbols: tickers ``S0000``... and, from 10 symbols up, five crypto pairs last."""
    crypto = CRYPTO if n >= 10 else []
    return [f"S{i:04d}" for i in range(n - len(crypto))] + crypto


def at_1500_new_york(day: str):
    import pandas as pd

    return (pd.Timestamp(day).tz_localize("America/New_York") + pd.Timedelta(hours=15)).tz_convert("UTC").to_pydatetime()


def forecast_frames(bars, run_id: str, asof_back: int, seed: int):
    """An ensemble forecast run and its evaluations for every symbol, made on its ``asof_back``-th last bar."""
    import numpy as np
    import pandas as pd

    ordered = bars.sort_values(["symbol", "ts"])
    base = ordered.groupby("symbol", sort=True).nth(-1 - asof_back).set_index("symbol")
    rng = np.random.default_rng(seed)
    n = len(base)
    point = np.log(base["close"].to_numpy()) + rng.normal(0.0, 0.01, n)
    half = np.abs(rng.normal(0.02, 0.005, n))
    asof = pd.DatetimeIndex(base["ts"])
    key = {"run_id": run_id, "model": "ensemble", "symbol": base.index.to_numpy(), "timeframe": "1Day", "asof": asof,
           "backend": "numpy", "device": "cpu"}
    forecasts = pd.DataFrame({**key, "step": 1, "target_ts": asof + pd.Timedelta(days=1), "target": "log_close",
                              "point": point, "lower": point - half, "upper": point + half, "level": 0.9,
                              "variance": np.nan})
    healthy = rng.uniform(size=n) > 0.1
    rmse = rng.uniform(0.005, 0.02, n)
    baseline_rmse = np.where(healthy, rmse * 1.2, rmse * 0.9)
    evaluations = pd.DataFrame({**key, "horizon": 5, "origins": 20, "rmse": rmse, "mae": rmse * 0.8,
                                "directional_accuracy": rng.uniform(0.45, 0.6, n), "coverage": rng.uniform(0.8, 0.95, n),
                                "baseline": "last_value", "baseline_rmse": baseline_rmse,
                                "skill": 1 - rmse / baseline_rmse, "label": np.where(healthy, "healthy", "unhealthy"),
                                "healthy": healthy, "weight": np.where(healthy, 1.0, np.nan)})
    return forecasts, evaluations


def settings():
    from airflow_provider_portfolio.trading.cycle import CycleSettings
    from airflow_provider_portfolio.trading.risk import RiskLimits

    # Loose enough that a realistic share of the universe trades and that no limit shared across symbols
    # (buying power, open positions, orders per day) binds: then the batch and the per-symbol loop must
    # reach the same verdicts (see the checks in main()).
    limits = RiskLimits(min_confidence=0.3, max_orders_per_day=1000, max_open_positions=600,
                        max_order_notional=1e7)
    return CycleSettings(min_score=0.05, fraction=0.001, limits=limits)


def open_book(path: Path):
    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker

    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    ledger = TradingLedger(store)
    return store, ledger, SimulatedBroker(ledger, initial_cash=INITIAL_CASH, commission_bps=1.0)


def copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite store (the backup API, WAL included)."""
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


class StepTimes:
    """Seconds spent in named callables while installed: patches module or instance attributes, restores them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

        self._undo.append((owner, attr, vars(owner).get(attr, _MISSING)))
        setattr(owner, attr, timed_call)

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            if original is _MISSING:
                delattr(owner, attr)  # an instance attribute shadowing the class's method
            else:
                setattr(owner, attr, original)
        self._undo.clear()


_MISSING = object()


def timed_steps(cycle, store, ledger, broker):
    """(owner, attribute, label) of the callables timed in the batched cycle, in the order printed."""
    return [
        (store, "read_forecasts", "read forecasts+evaluations"),
        (store, "read_evaluations", "read forecasts+evaluations"),
        (cycle, "decide_step", "decide_step"),
        (cycle, "started_bars", "  started_bars"),
        (cycle, "gate_bars", "  gate_bars (quality gate)"),
        (cycle, "forming_opens", "  forming_opens"),
        (cycle, "settle_unsent", "  settle_unsent"),
        (broker, "sync", "  broker.sync"),
        (cycle, "compute_signals", "  compute_signals"),
        (cycle, "decide", "  decide"),
        (ledger, "claim_decisions", "  ledger.claim_decisions"),
        (cycle, "risk_step", "risk_step"),
        (cycle, "execute_step", "execute_step"),
        (broker, "submit", "  broker.submit"),
        (broker, "snapshot", "snapshot"),
    ]


@contextlib.contextmanager
def safety_off(cycle, ledger, *, enabled: bool):
    """With ``enabled``: the cycle without the account lock, the quality gate on its bars and the last-price
    check (what the cycle cost before they were added), restored on exit."""
    if not enabled:
        yield
        return
    saved = cycle.gate_bars, cycle._price_check
    cycle.gate_bars = lambda bars, settings: (bars, {})
    cycle._price_check = lambda symbols, closes, limit: {}
    ledger.account_lock = lambda *args, **kwargs: contextlib.nullcontext()
    try:
        yield
    finally:
        cycle.gate_bars, cycle._price_check = saved
        del ledger.account_lock


def batched_cycle(symbols, bars, now, news, store, ledger, broker, run_id: str):
    from airflow_provider_portfolio.trading.cycle import run_cycle

    forecasts = store.read_forecasts(model="ensemble")
    evaluations = store.read_evaluations(model="ensemble")
    return run_cycle(symbols, bars, now, broker=broker, ledger=ledger, dag_id=DAG_ID, run_id=run_id,
                     settings=settings(), forecasts=forecasts, evaluations=evaluations, news=news)


def per_symbol_cycles(symbols, bars, now, news, store, ledger, broker, run_id: str):
    """The naive loop: the same cycle, one symbol at a time, each reading its own forecast from the store."""
    from airflow_provider_portfolio.trading.cycle import run_cycle

    reports = []
    for symbol in symbols:
        forecasts = store.read_forecasts([symbol], model="ensemble")
        evaluations = store.read_evaluations([symbol], model="ensemble")
        reports.append(run_cycle([symbol], bars, now, broker=broker, ledger=ledger, dag_id=DAG_ID, run_id=run_id,
                                 settings=settings(), forecasts=forecasts, evaluations=evaluations, news=news))
    return reports


def decided(ledger, run_id: str) -> dict[str, tuple]:
    """symbol -> (action, order qty, approved, risk rule, client order id) of the run's stored decisions."""
    return {d["symbol"]: (d["action"], d["order_qty"], d["approved"], d["risk_rule"], d["client_order_id"])
            for d in ledger.decisions(DAG_ID, run_id)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--days", type=int, default=180, help="calendar days of daily bars")
    parser.add_argument("--baseline-symbols", type=int, default=None,
                        help="symbols of the per-symbol loop (default: all), extrapolated to all")
    parser.add_argument("--profile", action="store_true", help="print a cProfile top 15 of the batched cycle")
    args = parser.parse_args()

    import logging

    import pandas as pd

    from airflow_provider_portfolio.market.params import validate_symbols
    from airflow_provider_portfolio.market.synthetic import SyntheticMarket
    from airflow_provider_portfolio.trading import cycle
    from airflow_provider_portfolio.trading.cycle import closed_bars, news_window, run_cycle

    logging.disable(logging.WARNING)  # the simulated broker logs every fill and order at INFO/WARNING
    started = time.perf_counter()
    symbols = universe(args.symbols)
    check(validate_symbols(symbols) == symbols and len(set(symbols)) == args.symbols,
          f"{args.symbols} distinct valid symbols ({len(symbols) - len(CRYPTO)} tickers + {len(CRYPTO)} crypto pairs)")
    n = len(symbols)
    market = SyntheticMarket(seed=11)
    last = pd.Timestamp(LAST_SESSION)
    # up to the session of the measured cycle: its bar is forming then (its open known, its close not)
    bars = market.panel(symbols, (last - pd.Timedelta(days=args.days)).date(), MEASURED_SESSION, "1Day")
    now_warm, now = at_1500_new_york(LAST_SESSION), at_1500_new_york(MEASURED_SESSION)
    news_warm, news = market.news(symbols, *news_window(now_warm)), market.news(symbols, *news_window(now))
    history = bars[bars["ts"] <= pd.Timestamp(LAST_SESSION, tz="UTC")]  # what the forecasts were made on
    prev_fc, prev_ev = forecast_frames(history, "forecast-prev", asof_back=1, seed=1)
    fc, ev = forecast_frames(history, "forecast-last", asof_back=0, seed=2)

    with tempfile.TemporaryDirectory(prefix="bench-trading-") as tmp:
        path_a, path_b = Path(tmp) / "batched.db", Path(tmp) / "per_symbol.db"
        store, ledger, broker = open_book(path_a)
        store.write_forecasts(prev_fc, prev_ev)
        store.write_forecasts(fc, ev)
        # Warm-up on the previous session with the forecasts made on the bar before (the latest ones would
        # be in its future), then fill its orders at the next session's open (the first bar after them).
        warm = run_cycle(symbols, bars, now_warm, broker=broker, ledger=ledger, dag_id=DAG_ID, run_id="warm-up",
                         settings=settings(), forecasts=store.read_forecasts(model="ensemble", run_id="forecast-prev"),
                         evaluations=store.read_evaluations(model="ensemble", run_id="forecast-prev"), news=news_warm)
        fills = broker.sync(bars, closed=closed_bars(bars, now, "1Day"))  # as the measured cycle sees them
        store.dispose()
        copy_store(path_a, path_b)
        path_t = Path(tmp) / "template.db"
        copy_store(path_a, path_t)
        positions = ledger.positions(broker.account)
        print(f"setup: {n} symbols x {bars['ts'].nunique()} daily bars ({len(bars):,} rows), {len(news):,} news "
              f"items, {len(fc)} forecasts + {len(ev)} evaluations ({int((~ev['healthy']).sum())} unhealthy) "
              f"stored; warm-up cycle: {len(warm.submitted)} orders, {len(fills)} filled -> {len(positions)} "
              f"positions; {time.perf_counter() - started:.1f} s")

        # -- 1. batched, each step timed ---------------------------------------------------------------
        steps = StepTimes()
        for owner, attr, label in timed_steps(cycle, store, ledger, broker):
            steps.wrap(owner, attr, label)
        try:
            if args.profile:
                import cProfile
                import pstats

                profiler = cProfile.Profile()
                profiler.enable()
            batch_s, report = timed(lambda: batched_cycle(symbols, bars, now, news, store, ledger, broker, "cycle"))
            if args.profile:
                profiler.disable()
        finally:
            steps.restore()

        # -- 1b. the cost of the account lock and the quality gate: with and without, fresh copies --------
        safety_s = {"with lock + gate": [], "without": []}
        for rep in range(3):
            for variant in safety_s:
                path = Path(tmp) / f"safety-{rep}-{variant[:4]}.db"
                copy_store(path_t, path)
                store_s, ledger_s, broker_s = open_book(path)
                with safety_off(cycle, ledger_s, enabled=variant == "without"):
                    seconds, _ = timed(lambda s=store_s, l=ledger_s, b=broker_s: batched_cycle(
                        symbols, bars, now, news, s, l, b, "cycle"))
                safety_s[variant].append(seconds)
                store_s.dispose()
        safety_ratio = min(safety_s["with lock + gate"]) / min(safety_s["without"])

        # -- 2. per symbol, on the copy ---------------------------------------------------------------
        k = min(args.baseline_symbols or n, n)
        store_b, ledger_b, broker_b = open_book(path_b)
        loop_s, loop_reports = timed(lambda: per_symbol_cycles(symbols[:k], bars, now, news, store_b, ledger_b,
                                                               broker_b, "cycle"))
        loop_full_s = loop_s * n / k

        # -- 3. the retry: the same run id again --------------------------------------------------------
        orders_before = ledger.orders(broker.account)
        decisions_before = ledger.decisions(DAG_ID, "cycle")
        sent = []  # requests that reach the broker during the retry
        original_submit = broker.submit
        broker.submit = lambda request: sent.append(request) or original_submit(request)
        try:
            retry_s, retry_report = timed(lambda: batched_cycle(symbols, bars, now, news, store, ledger, broker,
                                                                "cycle"))
        finally:
            del broker.submit
        orders_after = ledger.orders(broker.account)

        # -- the table ----------------------------------------------------------------------------------
        approved = sum(1 for d in decisions_before if d["approved"])
        print(f"\n  cycle at {now:%Y-%m-%d %H:%M} UTC: {report.decided} decided, {report.holds} holds, "
              f"{len(report.submitted)} orders submitted ({approved} approved, {len(report.rejected)} rejected by "
              f"risk), {len(report.errors)} errors, {report.synced} fills synced")
        print(f"  {'step':<32}{'s':>9}{'ms/symbol':>11}{'share':>8}")
        for label in dict.fromkeys(label for _, _, label in timed_steps(cycle, store, ledger, broker)):
            s = steps.seconds.get(label, 0.0)
            print(f"  {label:<32}{s:9.3f}{s / n * 1e3:11.3f}{s / batch_s:8.0%}")
        print(f"  {'batched cycle, total':<32}{batch_s:9.3f}{batch_s / n * 1e3:11.3f}{1:8.0%}")
        sample = "" if k == n else f" ({k} symbols, extrapolated)"
        print(f"  {'per-symbol loop' + sample:<32}{loop_full_s:9.3f}{loop_full_s / n * 1e3:11.3f}"
              f"   -> batched is {loop_full_s / batch_s:,.1f}x faster")
        print(f"  {'retry of the same run id':<32}{retry_s:9.3f}{retry_s / n * 1e3:11.3f}")
        for variant, runs in safety_s.items():
            print(f"  {'cycle ' + variant + ' (min of 3)':<32}{min(runs):9.3f}{min(runs) / n * 1e3:11.3f}")
        print(f"  account lock + quality gate + price check cost {safety_ratio - 1:+.1%} (target <= +15%)")
        print(f"  seed budget {SEED_BUDGET_S:g} s per cycle / batched {batch_s:.2f} s = {SEED_BUDGET_S / batch_s:,.0f}x "
              f"inside it; target < {TARGET_S:g} s: {'PASS' if batch_s < TARGET_S else 'FAIL'}")
        if args.profile:
            print()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"airflow_provider_portfolio|sqlalchemy", 15)

        # -- checks --------------------------------------------------------------------------------------
        print()
        rows = decided(ledger, "cycle")
        check(len(decisions_before) == n and sorted(rows) == sorted(symbols) and report.decided == n,
              f"one decision row per symbol for the run ({len(decisions_before)} rows, {len(rows)} symbols, "
              f"{n} expected)")
        run_orders = [o for o in orders_before if o["run_id"] == "cycle"]
        ids = [d["client_order_id"] for d in decisions_before if d["approved"]]
        check(len(run_orders) == approved and len(report.submitted) == approved,
              f"order rows of the run == approved decisions == submitted ({len(run_orders)}, {approved}, "
              f"{len(report.submitted)})")
        check(len(set(ids)) == len(ids) and None not in ids and set(ids) == {o["client_order_id"] for o in run_orders},
              f"every approved order has its own client_order_id, the one its order row carries ({len(set(ids))})")
        check(approved >= n // 10, f"a realistic share of the universe trades: {approved} orders for {n} symbols")
        snap = ledger.equity_curve(broker.account)[-1]
        cash, _ = ledger.cash(broker.account)
        book = ledger.positions(broker.account)
        value = sum(p.qty * (p.mark_price if p.mark_price is not None else p.avg_price) for p in book.values())
        check(len(book) > 0 and math.isclose(snap["cash"] + snap["positions_value"], snap["equity"], rel_tol=1e-12)
              and math.isclose(snap["cash"], cash, rel_tol=1e-12)
              and math.isclose(snap["positions_value"], value, rel_tol=1e-9),
              f"equity snapshot: cash {snap['cash']:,.2f} + positions {snap['positions_value']:,.2f} "
              f"({len(book)} held, recomputed {value:,.2f}) == equity {snap['equity']:,.2f}")
        # The latest price known at the cycle: the close of the last CLOSED bar, or a later fill's price.
        known = bars[bars["ts"] < pd.Timestamp(MEASURED_SESSION, tz="UTC")]
        closes = known.sort_values(["symbol", "ts"]).groupby("symbol").tail(1).set_index("symbol")
        fill_at = {f["symbol"]: (f["bar_ts"], f["price"]) for f in ledger.fills(broker.account)}

        def latest(symbol: str) -> tuple:
            close = (closes.at[symbol, "ts"].to_pydatetime(), closes.at[symbol, "close"])
            return max(close, fill_at.get(symbol, close), key=lambda x: x[0])

        off = sorted(s for s, p in book.items() if not (p.mark_ts == latest(s)[0]
                                                          and math.isclose(p.mark_price, latest(s)[1])))
        check(not off, f"every position is marked at the latest price known ({len(book) - len(off)} of {len(book)})"
              + (f"; e.g. {off[0]}: mark {book[off[0]].mark_price:.4f} at {book[off[0]].mark_ts:%Y-%m-%d}, close "
                 f"{closes.at[off[0], 'close']:.4f}, open {closes.at[off[0], 'open']:.4f}" if off else ""))
        # Same data, same settings, same starting book: the per-symbol loop must decide what the batch decided.
        # The risk verdicts must agree too: the batch checks its orders against a working copy of the account
        # that each approved order uses up, the loop against the broker's account that the orders already sent
        # use up; with no shared limit binding (settings()) both approve the same orders.
        loop_rows = decided(ledger_b, "cycle")
        differ = sorted(s for s in symbols[:k] if loop_rows.get(s) != rows[s])
        check(not differ and len(loop_rows) == k,
              f"per-symbol loop decided the same action, qty, verdict and order id for all {k} symbols"
              + (f"; differ: {', '.join(differ[:5])} e.g. {differ[0]}: {rows[differ[0]]} vs "
                 f"{loop_rows.get(differ[0])}" if differ else ""))
        loop_submitted = sum(len(r.submitted) for r in loop_reports)
        check(loop_submitted == sum(1 for s in symbols[:k] if rows[s][2]),
              f"per-symbol loop submitted as many orders ({loop_submitted})")
        if k == n:
            snap_b = ledger_b.equity_curve(broker_b.account)[-1]
            check(math.isclose(snap_b["equity"], snap["equity"], rel_tol=1e-12),
                  f"both books end at the same equity ({snap_b['equity']:,.2f})")
        check(not sent and len(orders_after) == len(orders_before)
              and [(o["client_order_id"], o["status"]) for o in orders_after]
              == [(o["client_order_id"], o["status"]) for o in orders_before]
              and len(ledger.decisions(DAG_ID, "cycle")) == len(decisions_before)
              and sorted(retry_report.submitted) == sorted(report.submitted),
              f"a retry of the same run id sends nothing (broker.submit called {len(sent)} times) and adds no "
              f"order or decision ({len(orders_after)} order rows)")
        check(batch_s < TARGET_S, f"batched cycle {batch_s:.2f} s < {TARGET_S:g} s for {n} symbols")
        check(safety_ratio <= 1.15, f"the account lock and the quality gate on trading bars cost "
              f"{safety_ratio - 1:+.1%} <= +15% (min of 3 fresh-copy runs each)")
        store.dispose()
        store_b.dispose()

    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
