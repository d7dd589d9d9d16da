"""Bar frames and process workers for the store tests (a module, so spawned processes can import it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from airflow_provider_portfolio.market.bars import to_bar_frame


def make_bars(symbols, n: int, *, start="2024-01-01", timeframe: str = "1Day", source: str = "synthetic",
              seed: int = 0) -> pd.DataFrame:
    """A canonical frame of ``n`` valid bars per symbol with awkward floats (full 17-digit precision)."""
    rng = np.random.default_rng(seed)
    step = {"1Day": "D", "5Min": "5min", "1Hour": "h"}[timeframe]
    parts = []
    for symbol in symbols:
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
        open_ = close * np.exp(rng.normal(0.0, 0.005, n))
        high = np.maximum(open_, close) * (1 + rng.random(n) / 50)
        low = np.minimum(open_, close) * (1 - rng.random(n) / 50)
        parts.append(pd.DataFrame({
            "symbol": symbol, "timeframe": timeframe,
            "ts": pd.date_range(pd.Timestamp(start, tz="UTC"), periods=n, freq=step),
            "open": open_, "high": high, "low": low, "close": close,
            "volume": rng.integers(1, 10_000_000, n) + rng.random(n), "source": source,
        }))
    return to_bar_frame(pd.concat(parts, ignore_index=True))


def upsert_worker(url: str, symbols: list[str], n: int, seed_of: dict[str, int], chunks: int, go, results) -> None:
    """Wait for ``go``, migrate, then upsert ``symbols`` in ``chunks`` slices; put the counts on ``results``.

    The bars of a symbol are the same in every worker (its seed), so overlapping writes agree.
    """
    from airflow_provider_portfolio.store import PortfolioStore

    frame = pd.concat([make_bars([s], n, seed=seed_of[s]) for s in symbols], ignore_index=True)
    go.wait(60)
    try:
        store = PortfolioStore(url, busy_timeout_s=60)
        store.migrate()
        counts = [store.upsert_bars(frame.iloc[part].reset_index(drop=True))
                  for part in np.array_split(np.arange(len(frame)), chunks)]
        store.dispose()
        results.put(counts)
    except Exception as err:  # reported to the parent, which fails the test
        results.put(f"{type(err).__name__}: {err}")


def migrate_worker(url: str, go, results) -> None:
    """Wait for ``go``, then migrate; put the version (or the error text) on ``results``."""
    from airflow_provider_portfolio.store import PortfolioStore

    go.wait(60)
    try:
        results.put(PortfolioStore(url).migrate())
    except Exception as err:  # reported to the parent, which fails the test
        results.put(f"{type(err).__name__}: {err}")
