"""The desk's jobs in the provider's image: what the container DAGs give each container.

The image (``Dockerfile`` at the repository root) runs the ``airflow-portfolio`` CLI
(:mod:`airflow_provider_portfolio.cli`), so a container task's command is a job's arguments. The example DAGs
``portfolio_docker`` (DockerOperator) and ``portfolio_kubernetes`` (KubernetesPodOperator) share them from here:

- :func:`job_arguments`: each job's CLI arguments, templated: the store from the run's param ``store``, the universe
  from Variable ``portfolio.default_tickers`` (rendered on the Airflow side), the run's ids so a retried container
  sends no order twice, ``--json`` so the container's last line is the job's summary;
- :func:`connection_env`: ``AIRFLOW_CONN_<ID>`` variables, templated with :func:`connection_json`, for the
  connections the jobs use by default (the data vendors' and the store's): a connection added in Airflow reaches
  the container, and one that does not exist renders empty, which Airflow reads as absent. Airflow masks the
  passwords and extras of connections read while rendering, so they do not show in rendered fields or logs.

Importing this module is cheap (no Airflow, no pandas): DAG files use it at parse time; :func:`connection_json` runs
when a task renders its templates, on the worker.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from airflow_provider_portfolio.variables import TICKERS_TEMPLATE

#: The image's default tag (``docker build -t airflow-portfolio .``).
IMAGE = "airflow-portfolio:latest"
#: Where the image's volume for a SQLite store and the reports is mounted.
DATA_DIR = "/data"
#: The default store of the container DAGs: a SQLite file on the volume mounted at :data:`DATA_DIR`.
VOLUME_STORE = f"sqlite:///{DATA_DIR}/portfolio.db"
#: Where the container DAGs' reports go by default: a folder on that volume.
VOLUME_REPORTS = f"{DATA_DIR}/reports"
#: The jobs of the container DAGs, in their order.
JOBS = ("etl", "forecast", "trade", "discover", "report")
#: The macro name :func:`connection_json` is registered under (``user_defined_macros``).
CONNECTION_MACRO = "portfolio_connection_json"


def installed(module: str) -> bool:
    """Whether ``module`` (an optional provider's package, e.g. ``airflow.providers.docker``) can be imported; it is
    not imported."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing (airflow.providers.cncf)
        return False


def job_arguments(job: str) -> list[str]:
    """The CLI arguments of ``job`` (one of :data:`JOBS`) in a container task, with Jinja templates.

    Every job reads the store of param ``store`` (``None`` or empty: the store connection the container gets, else
    the embedded SQLite file) and prints its summary as JSON; ``etl``, ``forecast`` and ``trade`` take the universe
    of Variable ``portfolio.default_tickers``; ``etl`` loads the sessions closed when the run was due; ``forecast``
    and ``trade`` write under the run's id (and ``trade`` the DAG's), so a retried container replaces its forecasts
    and never doubles an order; ``trade`` trades param ``broker_conn_id`` (``None``: the simulated broker); ``report``
    writes into param ``report_out``.

    :raises KeyError: for another job.
    """
    common = ["--store", "{{ params.store or '' }}", "--json"]
    universe = ["--symbols", TICKERS_TEMPLATE]
    return {
        "etl": ["etl", *common, *universe, "--as-of", "{{ dag_run.run_after | ts }}"],
        "forecast": ["forecast", *common, *universe, "--run-id", "{{ run_id }}"],
        "trade": ["trade", *common, *universe, "--broker-conn-id", "{{ params.broker_conn_id or '' }}",
                  "--dag-id", "{{ dag.dag_id }}", "--run-id", "{{ run_id }}"],
        "discover": ["discover", *common, "--dag-id", "{{ dag.dag_id }}", "--run-id", "{{ run_id }}"],
        "report": ["report", *common, "--out", "{{ params.report_out }}"],
    }[job]


def forwarded_connections() -> list[str]:
    """The connection ids a container gets: the default data connections (the ETL's and the trader's sources,
    Alpaca also the broker) and the store's (``[portfolio] store_conn_id``)."""
    from airflow_provider_portfolio.config import get_option
    from airflow_provider_portfolio.hooks.market_data import DEFAULT_DATA_CONNECTIONS

    return list(dict.fromkeys([*DEFAULT_DATA_CONNECTIONS, get_option("store_conn_id")]))


def connection_env(conn_ids: Sequence[str] | None = None) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` -> a template rendering that connection as Airflow's JSON (empty when it does not
    exist), for ``conn_ids`` (default :func:`forwarded_connections`). The DAG registers :func:`connection_json` as
    the macro :data:`CONNECTION_MACRO`."""
    ids = forwarded_connections() if conn_ids is None else list(conn_ids)
    return {f"AIRFLOW_CONN_{conn_id.upper()}": "{{ " + CONNECTION_MACRO + "(" + repr(conn_id) + ") }}"
            for conn_id in ids}


def connection_json(conn_id: str) -> str:
    """Connection ``conn_id`` as the JSON of an ``AIRFLOW_CONN_<ID>`` variable, or ``""`` when it does not exist
    (a Jinja macro: called when a task renders, where Airflow masks the connection's secrets)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return ""
    return conn.as_json()
