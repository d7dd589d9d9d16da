"""Cost of the quality gate on a desk-sized frame, with its answers checked.

Measures, in one process, on a frame of ``--symbols`` symbols x ``--years`` years of daily bars on
the NYSE calendar with one broken row planted in one symbol:

- ``validate_bars`` over the whole frame (one vectorised pass);
- side by side, the same frame gated one symbol at a time through ``check_bars`` (what a caller
  without ``validate_bars`` would write).

Checks (exit status 1 when one fails): both paths reject exactly the planted symbol with the same
rule; ``validate_bars`` keeps every other row; the vectorised pass is faster than the loop.

Usage: python bench/bench_quality.py [--symbols 500] [--years 10]
"""

from __future__ import annotations

import argparse
import sys
import time

from checks import check, exit_status


def desk_frame(n_symbols: int, years: int):
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.market.calendar import MarketCalendar

    days = MarketCalendar("XNYS").sessions("2014-01-01", f"{2014 + years - 1}-12-31").index
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_symbols, len(days))), axis=1)).ravel()
    frame = pd.DataFrame(
        {
            "symbol": np.repeat(symbols, len(days)),
            "timeframe": "1Day",
            "ts": np.tile(days.tz_localize("UTC"), n_symbols),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": 1e6,
            "source": "bench",
        }
    )
    broken = len(days) + 7  # a row of the second symbol
    frame.loc[broken, "low"] = frame.loc[broken, "high"] * 2
    return frame, symbols[1], len(days)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    args = parser.parse_args()

    from airflow_provider_portfolio.exceptions import DataQualityError
    from airflow_provider_portfolio.market.calendar import calendar_for_symbol
    from airflow_provider_portfolio.market.quality import check_bars, validate_bars

    frame, bad_symbol, n_days = desk_frame(args.symbols, args.years)
    print(f"quality gate: {args.symbols} symbols x {n_days} sessions = {len(frame):,} rows")
    validate_bars(frame.head(10), calendar_for=calendar_for_symbol)  # warm the calendar's schedule

    start = time.perf_counter()
    kept, errors = validate_bars(frame, calendar_for=calendar_for_symbol)
    vectorised = time.perf_counter() - start

    start = time.perf_counter()
    loop_errors: dict[str, DataQualityError] = {}
    for symbol, batch in frame.groupby("symbol", sort=False):
        try:
            check_bars(batch, calendar=calendar_for_symbol(symbol))
        except DataQualityError as err:
            loop_errors[symbol] = err
    looped = time.perf_counter() - start

    print(f"  validate_bars (one pass)     {vectorised:8.3f} s  ({len(frame) / vectorised:,.0f} rows/s)")
    print(f"  check_bars per symbol (loop) {looped:8.3f} s")
    print(f"  ratio loop / validate_bars   {looped / vectorised:8.1f}x")

    check(list(errors) == [bad_symbol], f"validate_bars rejects only {bad_symbol}")
    check(list(loop_errors) == [bad_symbol], f"the loop rejects only {bad_symbol}")
    check(
        errors.get(bad_symbol) is not None
        and loop_errors.get(bad_symbol) is not None
        and errors[bad_symbol].rule == loop_errors[bad_symbol].rule == "high_below_low",
        "both name the rule high_below_low",
    )
    check(len(kept) == (args.symbols - 1) * n_days, "validate_bars keeps every row of the other symbols")
    check(vectorised < looped, "one pass is faster than the per-symbol loop")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
