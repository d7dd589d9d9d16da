"""Weekly rebalance: Mondays at 10:00 New York, the book back to inverse-volatility weights over the desk's universe.

Copy this file into your dags folder; it needs no connection. ``RebalanceOperator`` reads the universe's daily bars
from the portfolio store (``portfolio_daily_etl`` loads them at 05:15 on weekdays; ``portfolio_discovery`` ranks
after it), weighs each symbol by the inverse of its realised volatility over the last 60 sessions (2% left in cash),
and when any weight has drifted more than 5 points from its target (or the cash has), brings every position back to
its target within one share, sells first. Nothing is sent while every drift is within the threshold. The first run
on an empty book buys the whole universe.

The orders go through the trader's own path: each decision is recorded in the store, checked against the risk
limits below and the kill switch (Variable ``portfolio.kill_switch`` = ``halted`` or ``reduce_only``), recorded and
sent at most once under a client order id derived from the run: a retry never sends an order twice. At 10:00 the
NYSE session is open (the ``market_open`` limit rejects equities on a holiday; crypto pairs trade around the clock).

Without a broker connection it trades the simulated broker, on a book of its own (``simulated:rebalance``, in the
store), whose orders fill at the next session's open. Add an ``alpaca_default`` connection (paper) to rebalance the
Alpaca paper account: the one account the auto trader trades too. Live trading needs a live connection AND
``allow_live=True`` below. To rebalance to the discovery ranking instead, set ``method="discovery"`` (``top_n``);
to given weights, ``method="given"`` and ``weights={"SPY": 0.6, "QQQ": 0.3, "CASH": 0.1}``. The universe comes from
Variable ``portfolio.default_tickers`` (read when the task runs). A failed task notifies (``[portfolio] notify_*``).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.rebalance import RebalanceOperator
from airflow_provider_portfolio.pools import TRADING_POOL


@dag(
    dag_id="portfolio_rebalance",
    # A cron string runs in the start date's time zone: Mondays 10:00 New York, DST included.
    schedule="0 10 * * 1",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=15),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "example", "trading", "rebalance"],
    doc_md=__doc__,
)
def portfolio_rebalance():
    RebalanceOperator(
        task_id="rebalance",
        method="inverse_volatility",
        lookback=60,
        drift_threshold=0.05,
        # A rebalanced book holds fewer, larger positions than the auto trader's: a calm ETF may weigh 20%.
        risk_limits={"max_order_notional": 30_000, "max_position_fraction": 0.30, "max_open_positions": 20,
                     "daily_loss_limit": 0.05},
        pool=TRADING_POOL,
    )


portfolio_rebalance_dag = portfolio_rebalance()
