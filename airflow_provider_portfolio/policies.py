"""The provider's cluster policy: a copied DAG still runs where the provider's pools do not exist.

Airflow's scheduler never queues a task instance whose pool does not exist, and a DAG file cannot look the pools
up (parsing has no metadata database). So this module is registered through Airflow's ``airflow.policy`` entry
point (pluggy) and implements ``task_instance_mutation_hook``, which Airflow calls when it creates a run's task
instances (``DagRun.verify_integrity``, scheduler and API alike) and when it refreshes one from its task: a task
instance whose pool is one of :data:`~airflow_provider_portfolio.pools.POOLS` and missing from the metadata
database runs in ``default_pool``, with one log line that names the task, the pool and the command that creates
it. Any other pool, and every other attribute, is left as it is. The pool names are read at most once per
:data:`CACHE_SECONDS`; the hook never raises (on any error the task instance is left unchanged).

Airflow 3.1-3.3 marks the hook a no-op, and creates task instances without calling it, unless an
``airflow_local_settings`` module defines one; loading this module clears that mark (:func:`_enable_hook`) so the
hook registered here is called without an ``airflow_local_settings``. Airflow then creates task instances one by
one, as for any ``airflow_local_settings`` hook. ``[portfolio] pool_fallback = False`` leaves the mark alone (no
fallback: create the pools with ``python -m airflow_provider_portfolio setup``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import pluggy

from airflow_provider_portfolio.pools import DEFAULT_POOL, POOLS

if TYPE_CHECKING:
    from airflow.models.taskinstance import TaskInstance

log = logging.getLogger(__name__)

# ``airflow.policies.hookimpl``, made here: importing Airflow first would load this entry point while this module is
# half-executed, and Airflow would register it without its hook.
hookimpl = pluggy.HookimplMarker("airflow.policy")

#: How long the existing pool names are trusted, in seconds.
CACHE_SECONDS = 30.0
SETUP_COMMAND = "python -m airflow_provider_portfolio setup"

# (monotonic time read, pool names or None when they could not be read)
_cache: tuple[float, frozenset[str] | None] | None = None
_clock = time.monotonic


def _pool_names() -> frozenset[str] | None:
    """The pools of the metadata database (cached :data:`CACHE_SECONDS`); ``None`` when they cannot be read."""
    global _cache
    now = _clock()
    if _cache is not None and now - _cache[0] < CACHE_SECONDS:
        return _cache[1]
    names: frozenset[str] | None
    try:
        names = _read_pool_names()
    except Exception:
        log.debug("Could not read the pools; task instances keep their pools", exc_info=True)
        names = None
    _cache = (now, names)
    return names


def _read_pool_names() -> frozenset[str]:
    """The pools of the metadata database, read in a session of their own: the caller's transaction (creating a
    run) is neither flushed nor committed here."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session(scoped=False) as session:
        return frozenset(name for name in session.scalars(select(Pool.pool)) if name)


def clear_cache() -> None:
    """Forget the pool names read so far (the next task instance reads them again)."""
    global _cache
    _cache = None


@hookimpl
def task_instance_mutation_hook(task_instance: TaskInstance) -> None:
    """Run a task instance whose provider pool is missing in ``default_pool`` (see the module docstring).

    :param task_instance: the task instance Airflow is creating or refreshing.
    """
    try:
        pool = getattr(task_instance, "pool", None)
        if pool not in POOLS:
            return
        names = _pool_names()
        if names is None or pool in names:
            return
        task_instance.pool = DEFAULT_POOL
        log.warning(
            "Task %s.%s asks for pool %r, which does not exist: it runs in %r. Create the provider's pools with `%s`.",
            getattr(task_instance, "dag_id", "?"), getattr(task_instance, "task_id", "?"), pool, DEFAULT_POOL,
            SETUP_COMMAND,
        )
    except Exception:  # a policy must never fail the scheduler
        log.debug("Pool fallback skipped", exc_info=True)


def _enable_hook() -> None:
    """Clear ``airflow.settings.task_instance_mutation_hook.is_noop``.

    Airflow sets it to False only after importing an ``airflow_local_settings`` that defines a hook; while it is
    True, ``DagRun.verify_integrity`` inserts task instances without calling any hook, entry-point ones included.
    Importing ``airflow.settings`` here initializes Airflow when this module was imported first (Airflow then loads
    this entry point, complete by now).
    """
    try:
        import airflow.settings as settings

        from airflow_provider_portfolio.config import get_flag

        if not get_flag("pool_fallback"):
            return
    except Exception:  # not where Airflow runs: nothing to enable
        return
    hook = getattr(settings, "task_instance_mutation_hook", None)
    if getattr(hook, "is_noop", False) is True:
        try:
            hook.is_noop = False  # type: ignore[union-attr]
        except AttributeError:
            pass


_enable_hook()
