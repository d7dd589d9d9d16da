"""Discovery: rank the universe after each daily ETL and store the opportunities with their reasons.

Copy this file (with ``portfolio_daily_etl.py`` or ``portfolio_master.py``) into your dags folder; it needs no
connection. It is scheduled on the Asset ``portfolio_daily_bars``: each successful daily ETL (weekdays, 05:15 New York
for ``portfolio_daily_etl``, 05:00 for ``portfolio_master``) starts one discovery run, so the ranking always follows
fresh bars without a polling sensor or a guess at when the ETL is done. Trigger it by hand to rank what the store holds
now.

``DiscoveryOperator`` scans every symbol with daily bars in the store (the ETL's universe: Variable
``portfolio.default_tickers``, or a larger one loaded by a mapped ETL), on its common calendar (equity sessions; a
crypto pair's weekend moves fold into Monday), over the last 252 bars closed at the run's instant. Each symbol is
scored on the trader's technical signals, trend, 12-1 and 3-month momentum, volatility, PCA factor exposures and a
market-state label from a hidden Markov model (``calm_up``, ``volatile``...), ranked, and stored in the store's
``opportunities`` with the reasons (a retry replaces the run's rows). Symbols with too little history or stale bars
are left out and named in the log and XCom. A successful run updates the Asset ``portfolio_opportunities``: the trader
can take its universe from the ranking's top N (``AutoTraderOperator(top_opportunities=5, symbols=...)``).

A failed task notifies (``[portfolio] notify_*``: SMTP, Slack, else the log). The task runs in ``database_pool``
(``python -m airflow_provider_portfolio setup`` creates it; where it does not exist the task runs in ``default_pool``).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.assets import DAILY_BARS, OPPORTUNITIES
from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.discovery import DiscoveryOperator
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_discovery",
    schedule=[DAILY_BARS],
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "discovery"],
    doc_md=__doc__,
)
def portfolio_discovery():
    DiscoveryOperator(
        task_id="discover",
        timeframe="1Day",
        lookback=252,
        pool=DATABASE_POOL,
        # Success updates the asset other DAGs (the trader, the rebalancer) can follow.
        outlets=[OPPORTUNITIES],
    )


portfolio_discovery_dag = portfolio_discovery()
