"""The provider's Airflow pools: one registry, read by ``python -m airflow_provider_portfolio setup`` (which creates
the missing ones) and by the cluster policy (:mod:`airflow_provider_portfolio.policies`, which runs a task whose
pool is missing in ``default_pool`` instead of leaving it unscheduled).

Slot counts are starting points for one small desk; ``setup`` never changes a pool that exists, so resize with
``airflow pools set <name> <slots> <description>``:

- ``gpu_pool``, 1 slot: one forecasting task per GPU (a batched forecast fills a GPU's memory; two on one GPU run
  slower than one after the other). A box with more GPUs gets one slot per GPU.
- ``database_pool``, 4 slots: store writers. PostgreSQL takes far more, but the embedded SQLite store has one
  writer at a time and makes the others wait on ``[portfolio] store_lock_timeout`` (30 s); four short upserts
  queue well inside it, and a mapped ETL over hundreds of symbols never opens hundreds of connections.
- ``api_pool``, 3 slots: tasks calling market-data vendors. Free plans limit calls (Alpha Vantage 25 a day,
  Finnhub 60 a minute, Alpaca 200 a minute); more tasks in parallel only turn throughput into rate-limit
  retries. Raise it with a paid plan.
- ``trading_pool``, 1 slot: one trading cycle per account at a time, so two cycles never decide on the same
  book. It counts deferred tasks too (``include_deferred``): a cycle that waits deferred keeps its slot.

Importing this module imports nothing else: DAG files may use its constants.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The pool every Airflow has; the policy's fallback.
DEFAULT_POOL = "default_pool"

GPU_POOL = "gpu_pool"
DATABASE_POOL = "database_pool"
API_POOL = "api_pool"
TRADING_POOL = "trading_pool"


@dataclass(frozen=True)
class PoolSpec:
    """An Airflow pool the provider's DAGs use: its name, the slots ``setup`` gives it, what it is for, and whether
    deferred tasks hold a slot."""

    name: str
    slots: int
    description: str
    include_deferred: bool = False


#: Every pool the provider's DAGs use, by name.
POOLS: dict[str, PoolSpec] = {
    spec.name: spec
    for spec in (
        PoolSpec(GPU_POOL, 1, "Portfolio: GPU forecasting, one slot per GPU."),
        PoolSpec(DATABASE_POOL, 4, "Portfolio: tasks writing to the portfolio store."),
        PoolSpec(API_POOL, 3, "Portfolio: tasks calling market-data vendors under their rate limits."),
        PoolSpec(TRADING_POOL, 1, "Portfolio: one trading cycle per account at a time.", include_deferred=True),
    )
}
