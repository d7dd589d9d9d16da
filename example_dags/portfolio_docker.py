"""The desk in containers on Docker: ETL, forecast, trade, discovery and the report, each in the provider's image.

Needs the Docker provider (``pip install 'airflow-provider-portfolio[docker]'``, i.e.
``apache-airflow-providers-docker``) and a Docker engine the workers reach; without the provider this file defines
no DAG. Build the image once at the repository root: ``docker build -t airflow-portfolio .``. Each task runs one
``airflow-portfolio`` command in a new container (``etl >> forecast >> trade >> discover >> report``): the same
plain-Python jobs as the operators of the other example DAGs, so a container needs no Airflow scheduler or
metadata database. Triggered by hand (``schedule=None``); give it a schedule when it replaces the operator DAGs.

The store reaches the container through the templated ``--store``: the run's param ``store``, by default the SQLite
file ``/data/portfolio.db`` on the Docker volume ``portfolio-data`` mounted at ``/data`` (created on first use; the
reports go to ``/data/reports``, param ``report_out``). For PostgreSQL, set ``store`` to ``null``: the container then
uses the connection ``[portfolio] store_conn_id`` (default ``portfolio_store_default``) that it gets from Airflow
below, as the operators do. Or give a URL without its password (``postgresql+psycopg://desk@db:5432/portfolio``) and
the password as ``PGPASSWORD`` in ``private_environment``.

Connections reach the container as ``AIRFLOW_CONN_<ID>`` variables, which the CLI reads as Airflow does: the task's
``environment`` renders the default data connections (``alpaca_default``, ``alphavantage_default``,
``finnhub_default``) and the store's from Airflow's own connections when the task runs (Airflow masks their secrets
in rendered fields and logs; one that does not exist renders empty and counts as absent), so adding a connection in
Airflow switches the containers to it, as it does the operators. Secrets kept outside Airflow go in
``private_environment`` (never rendered nor logged), e.g. ``{"AIRFLOW_CONN_ALPACA_DEFAULT": "<the connection's
JSON>"}``; Variables likewise as ``AIRFLOW_VAR_<NAME>`` (the universe is rendered here from
``portfolio.default_tickers``). ``trade`` trades the simulated broker unless param ``broker_conn_id`` names an Alpaca
connection (paper; live trading needs ``--allow-live``, never added here). Each container prints its summary as JSON:
its last line is the task's XCom.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import Param, dag

from airflow_provider_portfolio.containers import (
    CONNECTION_MACRO,
    DATA_DIR,
    IMAGE,
    JOBS,
    VOLUME_REPORTS,
    VOLUME_STORE,
    connection_env,
    connection_json,
    installed,
    job_arguments,
)

log = logging.getLogger(__name__)

#: The Docker volume holding the SQLite store and the reports.
VOLUME = "portfolio-data"

if not installed("airflow.providers.docker"):
    # The provider is optional: no DAG, and nothing louder than a debug line at parse time.
    log.debug("apache-airflow-providers-docker is not installed: portfolio_docker is not defined")
else:
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import Mount

    @dag(
        dag_id="portfolio_docker",
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 1},
        params={
            "image": Param(IMAGE, type="string", description="the provider's image (docker build -t ...)"),
            "store": Param(VOLUME_STORE, type=["null", "string"],
                           description="--store of every job; null: the store connection the container gets"),
            "broker_conn_id": Param(None, type=["null", "string"],
                                    description="an Alpaca connection id for trade; null: the simulated broker"),
            "report_out": Param(VOLUME_REPORTS, type="string", description="the report's folder or fsspec URL"),
        },
        user_defined_macros={CONNECTION_MACRO: connection_json},
        tags=["portfolio", "example", "containers"],
        doc_md=__doc__,
    )
    def portfolio_docker():
        tasks = [
            DockerOperator(
                task_id=job,
                image="{{ params.image }}",
                command=job_arguments(job),
                environment=connection_env(),
                mounts=[Mount(target=DATA_DIR, source=VOLUME, type="volume")],
                mount_tmp_dir=False,
                auto_remove="success",
            )
            for job in JOBS
        ]
        for upstream, downstream in zip(tasks, tasks[1:]):
            upstream >> downstream

    portfolio_docker_dag = portfolio_docker()
