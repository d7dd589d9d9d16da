"""Test DAG: the environment gate in front of a trader, as ``portfolio_master`` puts it.

``trade`` runs only when ``env_sanity`` finds nothing RED; the disk limits are loose so that the test machine's
free space never decides the outcome.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_provider_portfolio.operators.environment import EnvSanityOperator


@dag(dag_id="portfolio_env_gate", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     tags=["test"])
def portfolio_env_gate():
    @task
    def trade() -> str:
        return "traded"

    EnvSanityOperator(task_id="env_sanity", min_free_bytes=1, min_free_fraction=0.0) >> trade()


portfolio_env_gate_dag = portfolio_env_gate()
