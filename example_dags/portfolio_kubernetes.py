"""The desk in pods on Kubernetes: ETL, forecast, trade, discovery and the report, each in the provider's image.

Needs the Kubernetes provider (``pip install 'airflow-provider-portfolio[kubernetes]'``, i.e.
``apache-airflow-providers-cncf-kubernetes``) and a cluster the workers reach (in-cluster, or the
``kubernetes_default`` connection); without the provider this file defines no DAG. Build the image
(``docker build -t airflow-portfolio .`` at the repository root), push it where the cluster pulls from and set param
``image``. Each task runs one ``airflow-portfolio`` command in a new pod (``etl >> forecast >> trade >> discover >>
report``): the same plain-Python jobs as the operators of the other example DAGs, so a pod needs no Airflow scheduler
or metadata database. Triggered by hand (``schedule=None``).

The store reaches the pod through the templated ``--store``: the run's param ``store``, by default the SQLite file
``/data/portfolio.db`` on the PersistentVolumeClaim ``portfolio-data`` mounted at ``/data`` (the reports go to
``/data/reports``, param ``report_out``). Create the claim once, e.g. ``kubectl create -f`` of a
PersistentVolumeClaim named ``portfolio-data`` (``ReadWriteOnce``, 1Gi); the pods run one after another, and
``fsGroup: 0`` lets the image's user (uid 50000, group 0) write to it. A cluster is better served by PostgreSQL:
set ``store`` to ``null`` and the pod uses the connection ``[portfolio] store_conn_id`` (default
``portfolio_store_default``) that it gets from Airflow below, as the operators do; the volume can then go.

Connections reach the pod as ``AIRFLOW_CONN_<ID>`` variables, which the CLI reads as Airflow does: ``env_vars`` renders
the default data connections (``alpaca_default``, ``alphavantage_default``, ``finnhub_default``) and the store's from
Airflow's own connections when the task runs (Airflow masks their secrets in rendered fields and logs; one that does
not exist renders empty and counts as absent). To keep them in a Kubernetes Secret instead, whose keys are
``AIRFLOW_CONN_<ID>`` names, replace ``env_vars`` with ``env_from=[k8s.V1EnvFromSource(secret_ref=
k8s.V1SecretEnvSource(name="portfolio-connections"))]`` (``from kubernetes.client import models as k8s``).
Variables go likewise as ``AIRFLOW_VAR_<NAME>`` (the universe is rendered here from ``portfolio.default_tickers``).
``trade`` trades the simulated broker unless param ``broker_conn_id`` names an Alpaca connection (paper; live trading
needs ``--allow-live``, never added here). A pod's output is the task's log (``get_logs``); its last line is the
job's summary as JSON.
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

#: The PersistentVolumeClaim holding the SQLite store and the reports.
CLAIM = "portfolio-data"

if not installed("airflow.providers.cncf.kubernetes"):
    # The provider is optional: no DAG, and nothing louder than a debug line at parse time.
    log.debug("apache-airflow-providers-cncf-kubernetes is not installed: portfolio_kubernetes is not defined")
else:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    @dag(
        dag_id="portfolio_kubernetes",
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 1},
        params={
            "image": Param(IMAGE, type="string", description="the provider's image, where the cluster pulls it"),
            "store": Param(VOLUME_STORE, type=["null", "string"],
                           description="--store of every job; null: the store connection the pod gets"),
            "broker_conn_id": Param(None, type=["null", "string"],
                                    description="an Alpaca connection id for trade; null: the simulated broker"),
            "report_out": Param(VOLUME_REPORTS, type="string", description="the report's folder or fsspec URL"),
        },
        user_defined_macros={CONNECTION_MACRO: connection_json},
        tags=["portfolio", "example", "containers"],
        doc_md=__doc__,
    )
    def portfolio_kubernetes():
        tasks = [
            KubernetesPodOperator(
                task_id=job,
                name=f"portfolio-{job}",
                image="{{ params.image }}",
                arguments=job_arguments(job),
                env_vars=connection_env(),
                volumes=[k8s.V1Volume(name=CLAIM, persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=CLAIM))],
                volume_mounts=[k8s.V1VolumeMount(name=CLAIM, mount_path=DATA_DIR)],
                security_context={"runAsNonRoot": True, "fsGroup": 0},
                get_logs=True,
                on_finish_action="delete_succeeded_pod",
            )
            for job in JOBS
        ]
        for upstream, downstream in zip(tasks, tasks[1:]):
            upstream >> downstream

    portfolio_kubernetes_dag = portfolio_kubernetes()
