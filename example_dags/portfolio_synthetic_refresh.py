"""Weekly refresh of the synthetic datasets: market stories to run the desk on, offline.

Copy this file into your dags folder; it needs no connection. Every Monday at 01:00 New York time
``SyntheticRefreshOperator`` regenerates one dataset per profile (``calm``, ``trending``, ``crash``, ``regime_switch``,
``correlated_shocks``, ``jumps``; see the README, "Synthetic datasets") for the universe (Variable
``portfolio.default_tickers``) over the two years before the run, each under the id ``<profile>-<YYYYMMDD>`` in
``[portfolio] synthetic_dir`` (default ``$AIRFLOW_HOME/portfolio/synthetic``). Each dataset is written atomically;
then the ``latest`` file names the first profile's, Variable ``portfolio.synthetic_dataset_id`` is set to it, and
datasets beyond the newest four of each profile are removed (never the latest). Prices start at levels a user
knows (AAPL 190, SPY 520, BTC/USD 60,000) and every bar passes the provider's quality gate. A re-run for the same
Monday rewrites nothing. The report is the task's XCom; a failure notifies.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.synthetic import SyntheticRefreshOperator


@dag(
    dag_id="portfolio_synthetic_refresh",
    schedule="0 1 * * 1",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "synthetic"],
    doc_md=__doc__,
)
def portfolio_synthetic_refresh():
    SyntheticRefreshOperator(task_id="refresh_datasets", keep=4)


portfolio_synthetic_refresh_dag = portfolio_synthetic_refresh()
