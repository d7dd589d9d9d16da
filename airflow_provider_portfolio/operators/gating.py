"""Skipping what follows a gate: the one way the desk's gates (environment check, trading gate) stop a run.

A gate task succeeds with its report as XCom and skips every task downstream of it (teardowns excepted), as
``ShortCircuitOperator`` does, so a run on a desk in doubt ends *skipped*, not failed, with the reason in the
gate's log and XCom.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.market.timeutil import ensure_utc

try:  # Airflow >= 3.2
    from airflow.sdk import SkipMixin
except ImportError:  # Airflow 3.1: the standard provider's, which raises the same DownstreamTasksSkipped
    from airflow.providers.standard.utils.skipmixin import SkipMixin  # type: ignore[assignment,no-redef]

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

__all__ = ["SkipMixin", "run_instant", "skip_downstream"]


def run_instant(context: Context) -> datetime:
    """The instant a run judges the desk at: its ``data_interval_end`` (or ``run_after``), so a scheduled run judges
    now and a back-fill judges what was known then (the environment check, monitoring and the desk gate alike);
    the wall clock outside a run."""
    dag_run = context.get("dag_run")
    reference = context.get("data_interval_end") or getattr(dag_run, "run_after", None)
    if reference is None:
        return datetime.now(timezone.utc)
    if not isinstance(reference, datetime):  # pendulum and pandas instants are datetimes; anything else: ISO text
        reference = datetime.fromisoformat(str(reference))
    # A plain datetime: pendulum's in a standard-library UTC zone drops the zone in arithmetic (instant - 90 days).
    return ensure_utc(reference, "the run's instant")


def skip_downstream(task: BaseOperator, context: Context, result: dict[str, Any], why: str) -> None:
    """Push ``result`` as the task's XCom, log ``why``, then skip every downstream task but teardowns.

    ``task`` must be a :class:`SkipMixin` with ``inherits_from_skipmixin = True``. ``SkipMixin.skip`` ends
    ``execute()`` by raising, so its return value would never be pushed: the report is pushed first.

    :param result: the gate's report (small JSON).
    :param why: one line naming the failed checks.
    """
    downstream = [t for t in task.get_flat_relatives(upstream=False) if not t.is_teardown]
    if not downstream:
        task.log.warning("%s; no downstream task to skip", why)
        return
    if task.do_xcom_push:
        context["ti"].xcom_push(key="return_value", value=result)
    task.log.warning("%s: skipping %d downstream task(s): %s", why, len(downstream),
                     ", ".join(sorted(t.task_id for t in downstream)))
    task.skip(ti=context["ti"], tasks=downstream)  # type: ignore[attr-defined]
