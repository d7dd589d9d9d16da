"""Airflow-only twin of ``example_dags/portfolio_monitoring.py``: the same cron string, a ``@task`` for
``MonitoringOperator`` in the same pool with Airflow's ``Asset`` for ``HEALTH_REPORT``, a plain
``on_failure_callback`` for ``PortfolioNotifier()`` and Airflow's ``DeadlineAlert`` (10 minutes after the run is
queued) for ``monitoring_deadline()`` (no provider import)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from _desk import DATABASE_POOL, HEALTH_REPORT, deadline, on_failure
from airflow.sdk import dag, task


@dag(
    dag_id="portfolio_monitoring",
    schedule="5 * * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(minutes=10),
                  "on_failure_callback": on_failure},
    deadline=deadline(timedelta(minutes=10), reference="queued", what="monitoring within 10 minutes of its start"),
    tags=["portfolio", "monitoring"],
    doc_md=__doc__,
)
def portfolio_monitoring():
    @task(pool=DATABASE_POOL, outlets=[HEALTH_REPORT])
    def monitoring(reduce_only_on_red: bool) -> dict[str, Any]:
        return {"level": "GREEN"}

    monitoring(reduce_only_on_red=False)


portfolio_monitoring_dag = portfolio_monitoring()
