"""Test DAG: the ETL, then an auto-trader cycle that sends one order and has two refused by a risk rule (on the
synthetic market at 2024-06-04 15:00 New York), for the metrics and lineage test."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.operators.trading import AutoTraderOperator

SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "SPY", "BTC/USD"]


@dag(dag_id="portfolio_metrics_desk", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     catchup=False, tags=["test"])
def portfolio_metrics_desk():
    etl = PortfolioETLOperator(task_id="etl", symbols=["AAPL", "BTC/USD"], history_sessions=20)
    trader = AutoTraderOperator(
        task_id="auto_trader", symbols=SYMBOLS, sources="synthetic", broker_conn_id="simulated",
        simulated_account="metrics", weights={"technical": 0.5, "sentiment": 0.5}, min_score=0.02, fraction=0.05,
        risk_limits={"min_confidence": 0.2, "max_order_notional": 2_000},
    )
    etl >> trader


portfolio_metrics_desk_dag = portfolio_metrics_desk()
