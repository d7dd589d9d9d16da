"""Monthly transaction costs: commission and slippage measured from the ledger's orders and fills.

Copy this file into your dags folder; it needs no connection. ``TransactionCostsOperator`` reads the filled orders
of the last 90 days and measures, per symbol and per asset class (equity, crypto): fills, notional, commission (sum
and basis points of notional) and slippage of each fill against its order's reference price (basis points, a buy
above the reference is a cost; mean, median, 90th percentile), flagging estimates from fewer than 20 fills. The
result is a ``transaction_costs`` study in the store (``studies``, ``study_points``) and the task's XCom, with a
recommended ``commission_bps``/``slippage_bps`` per asset class for the simulated broker.

Nothing is applied unless you ask: set ``apply=True`` below and the recommendation is written to Variable
``portfolio.simulated_costs``, which ``AutoTraderOperator`` reads wherever its own ``commission_bps`` and
``slippage_bps`` are not given. Runs on the 1st of each month at 04:15 New York time.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.costs import TransactionCostsOperator
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_transaction_costs",
    schedule="15 4 1 * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "studies"],
    doc_md=__doc__,
)
def portfolio_transaction_costs():
    TransactionCostsOperator(task_id="transaction_costs", lookback_days=90, min_fills=20, apply=False,
                             pool=DATABASE_POOL)


portfolio_transaction_costs_dag = portfolio_transaction_costs()
