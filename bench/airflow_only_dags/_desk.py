"""What the Airflow-only twins share in place of the provider's ``assets``, ``pools``, ``notifications`` and
``variables`` modules, built from Airflow's own pieces only (see ``bench/bench_import.py``). A helper module, not a
DAG file.

- Airflow's ``Asset`` for each of the provider's assets (same names, URIs and group);
- the pools' names as plain strings;
- a plain function as ``on_failure_callback`` where an example uses ``PortfolioNotifier()``;
- Airflow's own ``DeadlineAlert`` with an ``AsyncCallback`` on a plain coroutine function where an example uses the
  provider's ``daily_etl_deadline()``, ``trader_cycle_deadline()`` or ``monitoring_deadline()`` (same references
  and intervals), so the twins pay what Airflow's deadline classes cost and the difference is the provider's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset

DAILY_BARS = Asset(name="portfolio_daily_bars", uri="portfolio://store/bars/1Day", group="portfolio")
FORECASTS = Asset(name="portfolio_forecasts", uri="portfolio://store/forecasts/1Day", group="portfolio")
ENVIRONMENT_REPORT = Asset(name="portfolio_environment_report", uri="portfolio://store/health_reports/environment",
                           group="portfolio")
HEALTH_REPORT = Asset(name="portfolio_health_report", uri="portfolio://store/health_reports/monitoring",
                      group="portfolio")

GPU_POOL = "gpu_pool"  # and GPU_QUEUE: the defaults of [portfolio] gpu_pool and gpu_queue
GPU_QUEUE = "default"
DATABASE_POOL = "database_pool"
API_POOL = "api_pool"
TRADING_POOL = "trading_pool"

DEFAULT_TICKERS = "AAPL,MSFT,NVDA,AMZN,GOOGL,META,TSLA,JPM,SPY,QQQ,IWM,BTC/USD"
SYMBOLS = "{{ var.value.get('portfolio.default_tickers', '" + DEFAULT_TICKERS + "') }}"


def on_failure(context: Any) -> None:
    """A plain failure callback (where the examples use ``PortfolioNotifier()``)."""
    print(f"failed: {context.get('dag_run')}")


async def deadline_missed(*, what: str, context: Any = None, **kwargs: Any) -> None:
    """A plain deadline callback (where the examples use the provider's ``deadline_missed``)."""
    print(f"deadline missed: {what}")


def deadline(interval: timedelta, *, reference: str, what: str) -> Any:
    """Airflow's ``DeadlineAlert``: ``interval`` after the run's ``queued`` time or its ``logical_date``."""
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    ref = DeadlineReference.DAGRUN_QUEUED_AT if reference == "queued" else DeadlineReference.DAGRUN_LOGICAL_DATE
    return DeadlineAlert(reference=ref, interval=interval,
                         callback=AsyncCallback(deadline_missed, kwargs={"what": what}))
