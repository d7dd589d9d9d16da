"""Cost of the synthetic market and the market calendar, with their answers checked.

Measures, in one process:

- calendar: the first ``sessions()`` call (imports pandas-market-calendars and builds the schedule),
  a cached ``is_open`` and ``next_open`` (averaged over many calls), a year of ``sessions()``;
- synthetic market: ``panel`` of 500 symbols x 10 years of daily bars, cold (walks every path from
  2000-01-03) and warm; side by side, the same symbols through a loop of ``bars()`` against one
  ``panel`` call (both cold); one symbol through ``bars()``; a month of 1-minute bars of one symbol.

Checks (exit status 1 when one fails): valid OHLCV, bars exactly on the calendar's bar index, bitwise
equal bars when a range is fetched in pieces (daily and intraday, from cold caches), panel rows equal
``bars()`` rows, and calendar answers from the NYSE's published 2024 calendar.

Usage: python bench/bench_synthetic.py [--symbols 500] [--years 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

from checks import check, exit_status, timed


def valid_ohlcv(frame) -> bool:
    import numpy as np

    o, h, lo, c, v = frame[["open", "high", "low", "close", "volume"]].to_numpy().T
    return bool(
        np.isfinite(frame[["open", "high", "low", "close", "volume"]].to_numpy()).all()
        and (lo > 0).all()
        and (lo <= np.minimum(o, c)).all()
        and (h >= np.maximum(o, c)).all()
        and (v > 0).all()
    )


def clear_synthetic_cache() -> None:
    from airflow_provider_portfolio.market import synthetic

    synthetic._SYMBOLS.clear()
    synthetic._BLOCKS.clear()


def bench_calendar() -> None:
    from airflow_provider_portfolio.market.calendar import MarketCalendar

    print("calendar (XNYS)")
    xnys = MarketCalendar("XNYS")
    first, july = timed(lambda: xnys.sessions("2024-07-01", "2024-07-05"))
    at = datetime(2024, 11, 29, 17, 59, tzinfo=timezone.utc)
    is_open, _ = timed(lambda: xnys.is_open(at), repeat=20_000)
    next_open, _ = timed(lambda: xnys.next_open(at), repeat=20_000)
    year, sessions = timed(lambda: xnys.sessions("2024-01-01", "2024-12-31"), repeat=500)
    print(f"  first sessions() in the process  {first * 1e3:9.1f} ms  (imports pandas-market-calendars)")
    print(f"  is_open, cached                  {is_open * 1e6:9.2f} us")
    print(f"  next_open, cached                {next_open * 1e6:9.2f} us")
    print(f"  sessions() of a year, cached     {year * 1e6:9.1f} us")
    check([str(d.date()) for d in july.index] == ["2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05"],
          "no session on 2024-07-04")
    check(len(sessions) == 252, "252 NYSE sessions in 2024")
    early = str(sessions.loc["2024-11-29", "market_close"])
    check(early == "2024-11-29 18:00:00+00:00", "early close 2024-11-29 18:00 UTC")
    check(xnys.is_open(at) and not xnys.is_open(datetime(2024, 11, 29, 18, 0, tzinfo=timezone.utc)),
          "open at 17:59 UTC, closed at 18:00 UTC on 2024-11-29")
    check(str(xnys.next_open(datetime(2025, 1, 8, 21, tzinfo=timezone.utc))) == "2025-01-10 14:30:00+00:00",
          "next open after 2025-01-08 skips the 2025-01-09 closure")


def bench_synthetic(n_symbols: int, years: int) -> None:
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.market.calendar import MarketCalendar
    from airflow_provider_portfolio.market.synthetic import SyntheticMarket

    end = pd.Timestamp("2024-12-31")
    start = pd.Timestamp(f"{end.year - years + 1}-01-01")
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    market = SyntheticMarket(seed=0)
    print(f"synthetic market ({start.date()}..{end.date()}, 1Day unless said)")

    cold, panel = timed(lambda: market.panel(symbols, start, end))
    warm, again = timed(lambda: market.panel(symbols, start, end))
    print(f"  panel({n_symbols} symbols), cold          {cold:9.3f} s   ({len(panel):,} bars; walks from 2000)")
    print(f"  panel({n_symbols} symbols), warm          {warm:9.3f} s")

    few = symbols[:50]
    clear_synthetic_cache()
    loop, looped = timed(lambda: pd.concat([market.bars(s, start, end) for s in few], ignore_index=True))
    clear_synthetic_cache()
    vector, vectored = timed(lambda: market.panel(few, start, end))
    print(f"  50 symbols: bars() loop / panel, cold {loop:7.3f} s / {vector:.3f} s = {loop / vector:.1f}x")

    clear_synthetic_cache()
    one_cold, one = timed(lambda: market.bars("AAPL", start, end))
    one_warm, _ = timed(lambda: market.bars("AAPL", start, end), repeat=20)
    print(f"  bars(1 symbol), cold / warm       {one_cold * 1e3:7.1f} ms / {one_warm * 1e3:.2f} ms")
    minute_month, minutes = timed(lambda: market.bars("AAPL", "2024-11-01", "2024-11-30", "1Min"), repeat=5)
    crypto_month, crypto = timed(lambda: market.bars("BTC/USD", "2024-11-01", "2024-11-30", "1Min"))
    print(f"  bars(AAPL, 1Min, a month)         {minute_month * 1e3:7.1f} ms   ({len(minutes):,} bars)")
    print(f"  bars(BTC/USD, 1Min, a month), cold{crypto_month * 1e3:7.1f} ms   ({len(crypto):,} bars)")

    sessions = MarketCalendar("XNYS").sessions(start, end)
    check(len(panel) == n_symbols * len(sessions), "one bar per symbol and session")
    check(valid_ohlcv(panel) and valid_ohlcv(minutes) and valid_ohlcv(crypto), "valid OHLCV (daily panel, 1Min)")
    check(panel.equals(again), "warm panel equals cold panel")
    check(looped.equals(vectored), "panel rows equal bars() rows")
    expected_index = MarketCalendar("XNYS").bar_index("2024-11-01", "2024-11-30", "1Min")
    check(pd.DatetimeIndex(minutes["ts"]).equals(expected_index),
          "1Min bars exactly on the calendar's bar index (early close 2024-11-29 included)")
    check(len(crypto) == 30 * 24 * 60, "BTC/USD: 24*60 1Min bars a day")

    rng = np.random.default_rng(7)
    days = MarketCalendar("XNYS").sessions(start, end).index
    cuts = sorted(rng.choice(np.arange(1, len(days)), size=5, replace=False))
    edges = [0, *cuts, len(days)]
    clear_synthetic_cache()
    pieces = pd.concat([market.panel(symbols[:20], days[a], days[b - 1]) for a, b in zip(edges, edges[1:])][::-1])
    pieces = pieces.sort_values(["symbol", "ts"]).reset_index(drop=True)
    check(pieces.equals(panel[panel["symbol"].isin(symbols[:20])].reset_index(drop=True)),
          "daily bars bitwise equal when fetched in 6 pieces from a cold cache")
    clear_synthetic_cache()
    first_half = market.bars("AAPL", "2024-11-01", "2024-11-14", "1Min")
    second_half = market.bars("AAPL", "2024-11-15", "2024-11-30", "1Min")
    check(pd.concat([first_half, second_half], ignore_index=True).equals(minutes),
          "1Min bars bitwise equal when fetched in 2 pieces from a cold cache")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    args = parser.parse_args()
    total = time.perf_counter()
    bench_calendar()
    bench_synthetic(args.symbols, args.years)
    print(f"total {time.perf_counter() - total:.1f} s")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
