"""Discovery over a large universe: the whole job through a SQLite store, its parts, and the batched regime model
against fitting it symbol by symbol; answers checked.

For each size in ``--sizes`` (500 and 2000 symbols) a universe of daily bars on NYSE sessions (253 closes to Monday
2024-06-03) is planted: driftless random walks (1.5% a day), five trending symbols ``TRENDn`` (+0.4% a day at 1%
noise) and five regime shifts ``SHIFTn`` (calm at 0.5% a day, volatile at 3% over the last 60 bars); the last five of
the walks are crypto pairs with bars on every day. Timed side by side in one run:

1. **discover**: ``discover()`` end to end (read the store, closed bars, calendar, every component, write the
   ranking in one transaction);
2. its parts on the aligned window: the technical signals, PCA, and the regime model;
3. **regime model, batched vs looped**: ``fit_regimes`` on all symbols at once against one call per symbol over the
   first ``--loop`` (100) symbols, extrapolated.

Checks (exit status 1 when one fails): the five trending symbols rank in the top 10 (among thousands of walks a few
trend as well by chance); every planted shift is labelled volatile; nothing is left out; the batched fit gives each
looped symbol the same labels, latest state and state volatilities (to 1e-6 relative); the stored ranking is the
returned one; the batched regime model is at least 5x faster than the loop.

Usage: python bench/bench_discovery.py [--sizes 500 2000] [--loop 100]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from checks import check, exit_status, timed

NOW = datetime(2024, 6, 4, 9, 30, tzinfo=timezone.utc)
CLOSES = 253


def planted(n: int, seed: int = 0):
    """A bar frame of ``n`` symbols (see the module docstring)."""
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.market.bars import to_bar_frame
    from airflow_provider_portfolio.market.calendar import MarketCalendar

    rng = np.random.default_rng(seed)
    sessions = MarketCalendar("XNYS").bar_index("2022-01-03", "2024-06-03")[-CLOSES:]
    days = pd.date_range(end=pd.Timestamp("2024-06-03", tz="UTC"), periods=366, freq="D")
    walks = n - 10
    returns = {f"S{i:04d}": rng.normal(0.0, 0.015, CLOSES) for i in range(walks - 5)}
    returns.update({f"C{i}/USD": rng.normal(0.0, 0.03, len(days)) for i in range(5)})
    returns.update({f"TREND{i}": rng.normal(0.004, 0.01, CLOSES) for i in range(5)})
    returns.update({f"SHIFT{i}": np.r_[rng.normal(0.0005, 0.005, CLOSES - 60), rng.normal(0.0, 0.03, 60)]
                    for i in range(5)})
    symbols = list(returns)
    ts = [days if "/" in s else sessions for s in symbols]
    close = np.concatenate([100 * np.exp(np.cumsum(returns[s])) for s in symbols])
    frame = pd.DataFrame({"symbol": np.repeat(symbols, [len(t) for t in ts]), "timeframe": "1Day",
                          "ts": pd.DatetimeIndex(np.concatenate([t.values for t in ts])).tz_localize("UTC"),
                          "open": close, "high": close * 1.005, "low": close * 0.995, "close": close,
                          "volume": 1e6, "source": "bench"})
    return to_bar_frame(frame)


def run(n: int, loop: int) -> None:
    import numpy as np

    from airflow_provider_portfolio.desk.discovery import discover, factor_exposures, fit_regimes
    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.trading.signals import technical_signal

    print(f"\n== {n} symbols x {CLOSES} daily bars ==")
    with tempfile.TemporaryDirectory() as tmp:
        store = PortfolioStore.for_sqlite_file(Path(tmp) / "bench.db")
        store.migrate()
        store.upsert_bars(planted(n))
        seconds, result = timed(lambda: discover(store, now=NOW, run_id="bench"))
        print(f"discover end to end: {seconds:.2f} s ({1000 * seconds / n:.2f} ms a symbol; regime EM "
              f"{result.params['regime_iterations']} iterations)")
        stored = store.latest_opportunities()
        store.dispose()
    ranking = result.ranking
    ranks = {s: int(r) for s, r in zip(ranking["symbol"], ranking["rank"], strict=True)}
    trend_ranks = sorted(ranks[f"TREND{i}"] for i in range(5))
    check(trend_ranks[-1] <= 10, f"the five trending symbols rank in the top 10 (ranks {trend_ranks})")
    labels = dict(zip(ranking["symbol"], ranking["regime"], strict=True))
    check(all(labels[f"SHIFT{i}"].startswith("volatile") for i in range(5)),
          f"every planted shift is labelled volatile ({[labels[f'SHIFT{i}'] for i in range(5)]})")
    check(result.scored == n and not result.skipped, f"all {n} symbols ranked, none left out ({len(result.skipped)})")
    check(stored["symbol"].tolist() == ranking["symbol"].tolist() and len(stored) == n, "the stored ranking is the "
          "returned one")

    # the parts, on the aligned window the job used
    regimes = result.regimes
    assert regimes is not None
    symbols = list(result.symbols)
    frame = planted(n)
    wide = frame.pivot(index="ts", columns="symbol", values="close").ffill().loc[result.calendar, symbols]
    close = wide.to_numpy().T
    returns = np.diff(np.log(close), axis=1)
    t_tech, _ = timed(lambda: technical_signal(close))
    t_pca, _ = timed(lambda: factor_exposures(returns, 3))
    per_year = result.params["periods_per_year"]
    t_batch, batch = timed(lambda: fit_regimes(returns, 2, periods_per_year=per_year))
    print(f"technical signals {t_tech:.2f} s, PCA {t_pca:.3f} s, regime model {t_batch:.2f} s (batched)")
    check(batch.latest_label == regimes.latest_label, "the parts on the window reproduce the job's labels")

    count = min(loop, n)

    def looped() -> list:
        return [fit_regimes(returns[i:i + 1], 2, periods_per_year=per_year) for i in range(count)]

    t_loop, fits = timed(looped)
    t_loop_all = t_loop * n / count
    print(f"regime model symbol by symbol: {t_loop:.2f} s for {count}, {t_loop_all:.2f} s extrapolated to {n}: "
          f"batched is {t_loop_all / t_batch:.1f}x faster")
    same = all(fit.latest_label[0] == batch.latest_label[i] and fit.latest[0] == batch.latest[i]
               and np.allclose(fit.vols[0], batch.vols[i], rtol=1e-6) for i, fit in enumerate(fits))
    check(same, f"the batched fit gives each of the first {count} symbols the looped fit's labels, latest state and "
                "state volatilities")
    check(t_loop_all / t_batch >= 5, f"the batched regime model is at least 5x faster than the loop "
                                     f"({t_loop_all / t_batch:.1f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--loop", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for n in args.sizes:
        run(n, args.loop)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
