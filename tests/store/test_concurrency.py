"""Several processes writing the same store at once (parallel mapped tasks) all succeed."""

from __future__ import annotations

import multiprocessing
import time

import pandas as pd

from airflow_provider_portfolio.market.bars import to_bar_frame
from airflow_provider_portfolio.store import PortfolioStore
from tests.store.helpers import make_bars, upsert_worker

SYMBOLS = [f"S{i:02d}" for i in range(12)]
SEEDS = {s: i for i, s in enumerate(SYMBOLS)}
N = 300


def test_four_processes_upserting_overlapping_batches(store_url):
    # Worker k writes symbols [3k, 3k+6): every symbol but the first and last three is written twice.
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=upsert_worker, args=(store_url, SYMBOLS[3 * k : 3 * k + 6], N, SEEDS, 12, go, results))
             for k in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    go.set()  # all four migrate, then write, at once
    counts = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(isinstance(c, list) for c in counts), counts
    expected = to_bar_frame(pd.concat([make_bars([s], N, seed=SEEDS[s]) for s in SYMBOLS]))
    store = PortfolioStore(store_url)
    assert store.count_bars() == len(SYMBOLS) * N
    pd.testing.assert_frame_equal(store.read_bars(), expected)
    # Identical rows written twice are counted once: the total is exactly the number of distinct rows.
    assert sum(map(sum, counts)) == len(expected)
    assert store.upsert_bars(expected) == 0
    store.dispose()
