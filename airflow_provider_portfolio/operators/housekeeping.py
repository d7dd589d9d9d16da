"""HousekeepingOperator: the store's nightly housekeeping (integrity, restore, retention, backup, VACUUM/ANALYZE)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The Variable holding the retention (table -> days).
RETENTION_VARIABLE = "portfolio.retention_days"


def parse_retention(value: object, setting: str) -> dict[str, Any]:
    """A retention setting (a mapping, or its JSON text) as a dict; ``None``/blank: ``{}``.

    :param value: the setting as given or rendered.
    :param setting: how the message names it.
    :raises InvalidInputError: naming ``setting``, for anything but a JSON object.
    """
    from airflow_provider_portfolio.market.params import json_object

    if blank(value):
        return {}
    return json_object(value, setting, example='{"forecasts": 90}', what="table -> days")


class HousekeepingOperator(StoreHookMixin, BaseOperator):
    """Housekeep the portfolio store: check its integrity (and restore a corrupt SQLite store from its last good
    backup), delete rows past their retention, back the SQLite store up, VACUUM/ANALYZE.

    What it does is :func:`airflow_provider_portfolio.store.maintenance.housekeep`; the report is the task's XCom.
    Retention per table: the documented defaults, overridden by Variable ``portfolio.retention_days`` (a JSON object
    table -> days, ``null`` to keep a table), overridden by ``retention_days``. The trading ledger's tables are pruned
    only when also named in ``allow_kept_tables``. A store that was corrupt and restored notifies through the
    provider's channels (:func:`~airflow_provider_portfolio.notifications.notify`); a corrupt store without a good
    backup fails the task, changing nothing. The store is opened without migrating it (a corrupt store could not
    be), so run it in ``database_pool``, at a quiet hour: VACUUM holds the SQLite write lock while it runs.

    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    :param retention_days: table -> days over the Variable (templated; a dict or its JSON).
    :param allow_kept_tables: trading-ledger tables (``orders``, ``fills``...) that retention may prune.
    :param backup_dir: folder of the SQLite backups (templated); default ``[portfolio] backup_dir``, else
        ``<store file>.backups`` beside the store.
    :param keep_backups: backups kept, newest first (default 7).
    :param vacuum: run VACUUM/ANALYZE last.
    :param full_check: SQLite ``integrity_check`` (thorough) rather than ``quick_check``.
    :param dry_run: change nothing: report the integrity, the backup a restore would use, the rows retention would
        delete.
    :param notify_on_restore: notify when the store was restored (default True).
    """

    template_fields: Sequence[str] = ("store_conn_id", "retention_days", "backup_dir")
    ui_color = "#ededed"

    def __init__(
        self,
        *,
        store_conn_id: str | None = None,
        retention_days: dict[str, Any] | str | None = None,
        allow_kept_tables: Collection[str] | str = (),
        backup_dir: str | None = None,
        keep_backups: int | None = None,
        vacuum: bool = True,
        full_check: bool = True,
        dry_run: bool = False,
        notify_on_restore: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store_conn_id = store_conn_id
        self.retention_days = retention_days
        self.allow_kept_tables = allow_kept_tables
        self.backup_dir = backup_dir
        self.keep_backups = keep_backups
        self.vacuum = vacuum
        self.full_check = full_check
        self.dry_run = dry_run
        self.notify_on_restore = notify_on_restore

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.config import get_option
        from airflow_provider_portfolio.operators.gating import run_instant
        from airflow_provider_portfolio.store import PortfolioStore
        from airflow_provider_portfolio.store.maintenance import DEFAULT_KEEP_BACKUPS, housekeep, resolve_retention
        from airflow_provider_portfolio.variables import get_variable

        # Bad settings fail here, naming the setting, before the store is opened.
        allowed = maybe_json_list(self.allow_kept_tables)
        from_variable = parse_retention(get_variable(RETENTION_VARIABLE), f"Variable {RETENTION_VARIABLE}")
        resolve_retention(from_variable, allow_kept_tables=allowed, setting=f"Variable {RETENTION_VARIABLE}")
        from_argument = parse_retention(self.retention_days, "retention_days")
        resolve_retention(from_argument, allow_kept_tables=allowed, setting="retention_days")
        backup_dir = get_option("backup_dir") if blank(self.backup_dir) else str(self.backup_dir).strip()

        hook = self.store_hook
        store = PortfolioStore(hook.url, **hook.store_options)  # not migrated: a corrupt store cannot be
        try:
            report = housekeep(store, retention={**from_variable, **from_argument}, allow_kept_tables=allowed,
                               backup_dir=backup_dir or None,
                               keep_backups=DEFAULT_KEEP_BACKUPS if self.keep_backups is None else self.keep_backups,
                               vacuum=self.vacuum, full_check=self.full_check, now=run_instant(context),
                               dry_run=self.dry_run,
                               retention_setting=f"retention (Variable {RETENTION_VARIABLE} and retention_days)")
        finally:
            store.dispose()
        result = report.to_dict()
        self.log.info("Housekeeping: %s", report.summary())
        if report.restored:
            self.log.error("The store was corrupt and was RESTORED from a backup: %s", result["restore"])
            if self.notify_on_restore:
                result["notified"] = self._notify_restore(result, context)
        return result

    def _notify_restore(self, result: dict[str, Any], context: Context) -> list[str]:
        from airflow_provider_portfolio.notifications import notify

        dag_run = context["dag_run"]
        restore = result["restore"] or {}
        body = "\n".join([f"Store: {result['store']}", f"Restored from: {restore.get('backup')}",
                          f"Corrupt file kept as: {restore.get('moved_aside')}",
                          "Rows written after that backup are not in the store any more."])
        return notify("portfolio store was corrupt and was restored from a backup", body, dag_id=dag_run.dag_id,
                      run_id=dag_run.run_id, task_id=self.task_id,
                      reason=f"store integrity check failed: {restore.get('reason')}", level="RED")
