"""EnvSanityOperator: the desk's pre-open environment check; a RED check skips everything downstream."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import PortfolioStoreHook, StoreHookMixin
from airflow_provider_portfolio.operators.gating import SkipMixin, run_instant, skip_downstream
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_portfolio.desk.health import Check
    from airflow_provider_portfolio.store import PortfolioStore

#: What Airflow accepts as a connection id (its ``RE_SANITIZE_CONN_ID`` and 250 characters at most).
_CONN_ID = re.compile(r"^[\w#!()\-.:/\\]{1,250}$")


class EnvSanityOperator(StoreHookMixin, BaseOperator, SkipMixin):
    """Check that the desk can trade today; when it cannot, skip every task downstream (trading never runs in doubt).

    The checks and their levels are those of :func:`airflow_provider_portfolio.desk.environment.check_environment`
    (Python and package versions against the declared ranges, the store reachable and migrated, a session today,
    the kill switch, free disk for the store and Airflow's logs), plus the ones made here:

    - ``provider_config``: every ``[portfolio]`` option reads, the timeouts are seconds, ``execution_mode``,
      ``device`` and ``synthetic_seed`` are valid; else ``RED`` per bad option.
    - ``connection[<id>]``: each connection is present. One named in ``connection_ids`` or ``store_conn_id`` (or a
      ``[portfolio] store_conn_id`` other than the default) that does not exist is ``RED``; a provider default
      that does not exist is ``GREEN`` ("not configured, using the embedded default").
    - ``connection_test[<id>]`` (opt-in, ``test_connections``): each present connection's hook
      ``test_connection()``; a failure is ``RED`` with the hook's message, secrets redacted.

    The report (``HealthReport.to_dict()``) is the task's return value (XCom). When it is ``RED``, each failed
    check is logged and every downstream task (teardowns excepted) is skipped, as ``ShortCircuitOperator`` does;
    with ``fail_on_red`` the task fails instead, naming every failed check. ``YELLOW`` (a holiday, a store one
    migration behind, ``reduce_only``) lets the run go on.

    :param exchange: calendar whose session today is checked (templated); default ``[portfolio] default_exchange``.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded
        SQLite store.
    :param connection_ids: connections that must exist (templated: a list, a JSON list or comma-separated ids).
        ``None``: the provider's default connections (``alpaca_default``, ``alphavantage_default``,
        ``finnhub_default``), which may be absent. The store's connection is always looked at.
    :param test_connections: also call each present connection's ``test_connection()`` (network calls; off by
        default: Alpha Vantage's free plan has 25 calls a day).
    :param min_free_bytes: free bytes below which a disk is ``RED`` (default 1 GiB).
    :param min_free_fraction: free share below which a disk is ``YELLOW`` (default 0.05).
    :param fail_on_red: fail the task on ``RED`` instead of skipping downstream.
    :raises InvalidInputError: from ``execute``, for a connection id Airflow would refuse, a negative
        ``min_free_bytes`` or a ``min_free_fraction`` outside [0, 1], before anything is checked.
    """

    template_fields: Sequence[str] = ("exchange", "store_conn_id", "connection_ids")
    ui_color = "#e6f2ff"
    #: Tells Airflow (serialization, ``NotPreviouslySkippedDep``) that this task may skip its downstream tasks.
    inherits_from_skipmixin = True

    def __init__(
        self,
        *,
        exchange: str | None = None,
        store_conn_id: str | None = None,
        connection_ids: Sequence[str] | str | None = None,
        test_connections: bool = False,
        min_free_bytes: int | None = None,
        min_free_fraction: float | None = None,
        fail_on_red: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.exchange = exchange
        self.store_conn_id = store_conn_id
        self.connection_ids = connection_ids
        self.test_connections = test_connections
        self.min_free_bytes = min_free_bytes
        self.min_free_fraction = min_free_fraction
        self.fail_on_red = fail_on_red

    def execute(self, context: Context) -> dict[str, Any]:

        from airflow_provider_portfolio.config import get_option
        from airflow_provider_portfolio.desk.environment import (
            DEFAULT_MIN_FREE_BYTES,
            DEFAULT_MIN_FREE_FRACTION,
            check_disk_limits,
            check_environment,
        )
        from airflow_provider_portfolio.exceptions import PortfolioError

        # Bad input fails here, before anything is checked.
        min_free_bytes, min_free_fraction = check_disk_limits(
            DEFAULT_MIN_FREE_BYTES if self.min_free_bytes is None else self.min_free_bytes,
            DEFAULT_MIN_FREE_FRACTION if self.min_free_fraction is None else self.min_free_fraction)
        required = self._required_connections()

        config_checks = self._config_checks()
        store, store_error = self._open_store()
        try:
            report = check_environment(
                now=run_instant(context), store=store, store_error=store_error,
                exchange=str(self.exchange).strip() if not blank(self.exchange) else get_option("default_exchange"),
                kill_switch=self._kill_switch(), disk_paths=self._disk_paths(store),
                min_free_bytes=min_free_bytes, min_free_fraction=min_free_fraction,
                extra_checks=[*config_checks, *self._connection_checks(required)],
            )
            result = report.to_dict()
            self._record(store, result, context)
        finally:
            if store is not None:
                store.dispose()
        self.log.info("%s", report.summary())
        if report.ok:
            return result
        for check in report.failed:
            self.log.error("RED %s: %s", check.label, check.message)
        if self.fail_on_red:
            raise PortfolioError(f"environment check RED, {len(report.failed)} failed check(s): "
                                 + "; ".join(f"{c.label}: {c.message}" for c in report.failed))
        skip_downstream(self, context, result, f"Environment RED ({', '.join(result['failed'])})")
        return result

    def _record(self, store: PortfolioStore | None, result: dict[str, Any], context: Context) -> None:
        """Append the report to the store's ``health_reports`` (the trading gate reads today's); a store that cannot
        take it is already a ``RED`` check of the report, so this only logs."""
        from airflow_provider_portfolio.exceptions import StoreError

        if store is None:
            self.log.warning("Environment report not stored: the store cannot be opened")
            return
        dag_run = context.get("dag_run")
        try:
            store.migrate()  # a fresh store: the check opened it without migrating, to report its real version
            store.append_health_report(result, dag_id=getattr(dag_run, "dag_id", None),
                                       run_id=getattr(dag_run, "run_id", None))
        except StoreError as err:
            self.log.warning("Environment report not stored: %s", err)

    # -- input --------------------------------------------------------------------------------------------
    def _required_connections(self) -> list[str] | None:
        """The connection ids that must exist (``None``: the provider's defaults, which may be absent).

        :raises InvalidInputError: for a list that is not of connection ids Airflow accepts.
        """
        from airflow_provider_portfolio.exceptions import InvalidInputError

        ids = maybe_json_list(self.connection_ids)
        if blank(ids) and not isinstance(ids, list | tuple):
            return None
        if isinstance(ids, str):
            ids = [part.strip() for part in ids.split(",") if part.strip()]
        if not isinstance(ids, list | tuple) or not all(isinstance(i, str) for i in ids):
            raise InvalidInputError(f"connection_ids must be a list of connection ids, got {self.connection_ids!r}")
        bad = [i for i in ids if not _CONN_ID.match(i.strip())]
        if bad:
            raise InvalidInputError(f"connection_ids: {', '.join(repr(i) for i in bad)} is no connection id (letters, "
                                    "digits and _ - . : / \\ # ! ( ), at most 250 characters)")
        return list(dict.fromkeys(i.strip() for i in ids))

    # -- adapter checks -----------------------------------------------------------------------------------
    def _config_checks(self) -> list[Check]:
        """``provider_config``: one ``RED`` check per ``[portfolio]`` option that cannot be used, else one ``GREEN``."""
        from airflow_provider_portfolio.config import (
            OPTION_TYPES,
            OPTIONS,
            SECTION,
            execution_mode,
            get_flag,
            get_option,
            get_seconds,
        )
        from airflow_provider_portfolio.desk.health import Check, Level
        from airflow_provider_portfolio.forecast.backend import DEVICES

        def problem(name: str) -> str | None:
            value = get_option(name)
            if OPTION_TYPES.get(name) == "float":
                get_seconds(name, positive=name == "store_connect_timeout")
            elif OPTION_TYPES.get(name) == "boolean":
                get_flag(name)
            elif name == "execution_mode":
                execution_mode()
            elif name == "device" and value.lower() not in DEVICES:
                return f"must be one of {DEVICES}, got {value!r}"
            elif name == "synthetic_seed" and not re.fullmatch(r"[+-]?\d+", value):
                return f"must be an integer, got {value!r}"
            return None

        checks = []
        for name in OPTIONS:
            try:
                message = problem(name)
            except Exception as err:  # an unreadable config, a bad value: the message names the option
                message = f"{type(err).__name__}: {err}"
            if message is not None:
                checks.append(Check("provider_config", Level.RED, None, None, f"[{SECTION}] {name}: {message}",
                                    f"{SECTION}.{name}"))
        if checks:
            return checks
        mode = execution_mode()
        return [Check("provider_config", Level.GREEN, mode, None,
                      f"[{SECTION}] {len(OPTIONS)} option(s) readable; execution_mode {mode}")]

    def _connection_checks(self, required: list[str] | None) -> list[Check]:
        """``connection`` (present?) and, with ``test_connections``, ``connection_test`` per connection."""
        from airflow.exceptions import AirflowNotFoundException
        from airflow.sdk import BaseHook

        from airflow_provider_portfolio.desk.health import Check, Level
        from airflow_provider_portfolio.hooks.market_data import DEFAULT_DATA_CONNECTIONS
        from airflow_provider_portfolio.hooks.store import embedded_store_path
        from airflow_provider_portfolio.hooks.vendor import redact_text
        from airflow_provider_portfolio.operators.trading import DEFAULT_BROKER_CONNECTION

        store_id, store_required = self._store_connection()
        defaults = {DEFAULT_BROKER_CONNECTION: "the simulated broker",
                    **{c: "the other data connections or the synthetic market" for c in DEFAULT_DATA_CONNECTIONS},
                    store_id: f"the embedded SQLite store at {embedded_store_path()}"}
        must = set(required or ()) | ({store_id} if store_required else set())
        ids = list(dict.fromkeys([*(defaults if required is None else required), store_id]))
        checks = []
        for conn_id in ids:
            try:
                conn = BaseHook.get_connection(conn_id)
            except AirflowNotFoundException:
                if conn_id in must:
                    checks.append(Check("connection", Level.RED, False, None,
                                        f"connection {conn_id!r} does not exist: add it (Admin -> Connections or "
                                        "`airflow connections add`) or stop naming it", conn_id))
                else:
                    checks.append(Check("connection", Level.GREEN, False, None,
                                        f"connection {conn_id!r} not configured, using the embedded default "
                                        f"({defaults.get(conn_id, 'none')})", conn_id))
                continue
            except Exception as err:  # a secrets backend that does not answer
                checks.append(Check("connection", Level.RED, None, None,
                                    f"connection {conn_id!r} cannot be read: {type(err).__name__}: "
                                    f"{redact_text(err)}", conn_id))
                continue
            checks.append(Check("connection", Level.GREEN, True, None,
                                f"connection {conn_id!r} present (type {conn.conn_type})", conn_id))
            if self.test_connections:
                ok, message = self._test_connection(conn, is_store=conn_id == store_id)
                message = redact_text(message, [s for s in (conn.password, conn.login) if s])
                checks.append(Check("connection_test", Level.GREEN if ok else Level.RED, ok, None,
                                    f"connection {conn_id!r} test {'passed' if ok else 'failed'}: {message}", conn_id))
        return checks

    def _test_connection(self, conn: Any, *, is_store: bool) -> tuple[bool, str]:
        """The hook's ``test_connection()``: the store's own hook for the store, else the type's hook."""
        try:
            hook = PortfolioStoreHook(store_conn_id=conn.conn_id) if is_store else conn.get_hook()
            ok, message = hook.test_connection()
        except Exception as err:  # no hook for the type, a hook that raises: a failed test
            return False, f"{type(err).__name__}: {err}"
        return bool(ok), str(message)

    def _store_connection(self) -> tuple[str, bool]:
        """The store's connection id, and whether it must exist (named here, or configured other than the default)."""
        hook = self.store_hook
        named = bool(hook.store_conn_id) or hook.resolved_conn_id != hook.default_conn_name
        return hook.resolved_conn_id, named

    def _open_store(self) -> tuple[PortfolioStore | None, str | None]:
        """The store, opened without migrating it (the check reports its version), or why it cannot be opened."""
        from airflow_provider_portfolio.hooks.vendor import redact_text
        from airflow_provider_portfolio.store import PortfolioStore

        hook = self.store_hook
        store_id, required = self._store_connection()
        try:
            if required and hook.store_connection is None:  # a configured connection that is gone
                return None, f"store connection {store_id!r} does not exist"
            return PortfolioStore(hook.url, **hook.store_options), None
        except Exception as err:  # a connection of another type, bad timeouts, an unreadable URL
            return None, redact_text(f"{type(err).__name__}: {err}")

    def _kill_switch(self) -> str:
        """Variable ``portfolio.kill_switch`` as stored (unset: ``active``; unreadable: ``halted``)."""
        from airflow_provider_portfolio.operators.trading import KILL_SWITCH_VARIABLE, read_kill_switch
        from airflow_provider_portfolio.variables import get_variable

        try:
            return get_variable(KILL_SWITCH_VARIABLE)
        except Exception:  # read_kill_switch logs why and fails safe
            return read_kill_switch(self.log)

    def _disk_paths(self, store: PortfolioStore | None) -> dict[str, str]:
        """The store's SQLite folder (for a SQLite store) and Airflow's ``[logging] base_log_folder``."""
        from airflow.configuration import conf

        paths = {}
        sqlite_file = store.database.sqlite_file if store is not None else None
        if sqlite_file is not None:
            paths["store"] = str(sqlite_file.parent)
        logs = conf.get("logging", "base_log_folder", fallback=None)
        if logs:
            paths["logs"] = str(logs)
        return paths
