"""Test DAG: the ETL operator mapped over symbol chunks, as the README's "Large universes" shows."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_provider_portfolio.operators.etl import PortfolioETLOperator


@dag(dag_id="portfolio_etl_mapped", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["test"])
def portfolio_etl_mapped():
    @task
    def chunks() -> list[list[str]]:
        universe = ["AAPL", "MSFT", "NVDA", "AMZN", "SPY", "BTC/USD", "ETH/USD"]
        return [universe[i : i + 3] for i in range(0, len(universe), 3)]

    PortfolioETLOperator.partial(task_id="load", start="2024-05-01", end="2024-05-31").expand(symbols=chunks())


portfolio_etl_mapped_dag = portfolio_etl_mapped()
