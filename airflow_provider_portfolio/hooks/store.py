"""PortfolioStoreHook: an Airflow connection in, a migrated :class:`PortfolioStore` out."""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_portfolio.exceptions import StoreError

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_portfolio.store import PortfolioStore

log = logging.getLogger(__name__)

_fallback_logged: set[str] = set()
#: Timeouts of a PostgreSQL store, seconds: ``[portfolio] store_<key>``, or the connection's extra ``<key>``.
_PG_TIMEOUTS = ("lock_timeout", "statement_timeout", "connect_timeout", "keepalives_idle")


def embedded_store_path() -> Path:
    """Where the embedded SQLite store lives: ``$AIRFLOW_HOME/portfolio/portfolio.db``."""
    home = os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
    return Path(home) / "portfolio" / "portfolio.db"


def store_url_from_connection(conn: Connection) -> str:
    """Build a SQLAlchemy URL from a ``sqlite`` or ``postgres`` Airflow connection.

    ``sqlite``: the host field holds the database file path. ``postgres``: host, port, login,
    password and schema (the database name), driven by psycopg 3.

    :raises StoreError: for any other connection type.
    """
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        if not conn.host:
            raise StoreError(f"connection {conn.conn_id!r} (sqlite) has no database file path in its host field")
        return f"sqlite:///{conn.host}"
    if conn_type in ("postgres", "postgresql"):
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
        ).render_as_string(hide_password=False)
    raise StoreError(
        f"connection {conn.conn_id!r} has type {conn.conn_type!r}; the portfolio store needs a "
        "'sqlite' or 'postgres' connection"
    )


class PortfolioStoreHook(BaseHook):
    """Open the portfolio store named by an Airflow connection, migrated to the current schema.

    With no connection id given, ``[portfolio] store_conn_id`` is used. When that connection does
    not exist, the store is the embedded SQLite file :func:`embedded_store_path` (logged once per
    process). Connection types: ``sqlite`` (host = file path) and ``postgres``. The store's timeouts
    come from ``[portfolio] store_lock_timeout``, ``store_statement_timeout``, ``store_connect_timeout``
    and ``store_keepalives_idle``, or the ``postgres`` connection's extra (:attr:`store_options`).

    :param store_conn_id: connection id of the store; ``None`` means the configured default.
    """

    conn_name_attr = "store_conn_id"
    default_conn_name = "portfolio_store_default"
    hook_name = "Portfolio store"

    def __init__(self, store_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store_conn_id = store_conn_id

    @cached_property
    def resolved_conn_id(self) -> str:
        """The connection id actually looked up (the argument, else the configured default)."""
        from airflow_provider_portfolio.config import get_option

        return self.store_conn_id or get_option("store_conn_id")

    @cached_property
    def store_connection(self) -> Connection | None:
        """The store's connection; ``None`` when the default one does not exist (the embedded store)."""
        from airflow.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.resolved_conn_id)
        except AirflowNotFoundException:
            if self.store_conn_id and self.store_conn_id != self.default_conn_name:
                # A connection the user named explicitly must exist; only the default may fall back.
                raise StoreError(f"store connection {self.store_conn_id!r} does not exist") from None
            return None

    @cached_property
    def url(self) -> str:
        """SQLAlchemy URL of the store (holds the password for PostgreSQL: never log it)."""
        conn = self.store_connection
        if conn is None:
            path = embedded_store_path()
            if str(path) not in _fallback_logged:
                _fallback_logged.add(str(path))
                log.info(
                    "No connection %r: using the embedded SQLite store at %s", self.resolved_conn_id, path
                )
            return f"sqlite:///{path}"
        return store_url_from_connection(conn)

    @cached_property
    def store_options(self) -> dict[str, float]:
        """Timeouts passed to :class:`PortfolioStore`, from ``[portfolio] store_*`` and the connection's extra.

        SQLite: ``busy_timeout_s`` = ``store_lock_timeout``. PostgreSQL: lock, statement and connect
        timeouts and the keepalive idle time; a ``postgres`` connection's extra ``lock_timeout``,
        ``statement_timeout``, ``connect_timeout`` or ``keepalives_idle`` (seconds) wins over the option.

        :raises InvalidInputError: naming the option or the connection, for a value that is not seconds.
        """
        from airflow_provider_portfolio.config import get_seconds, parse_seconds

        configured = {key: get_seconds(f"store_{key}", positive=key == "connect_timeout") for key in _PG_TIMEOUTS}
        if not self.url.startswith(("postgresql", "postgres")):
            return {"busy_timeout_s": configured["lock_timeout"]}
        extra = self.store_connection.extra_dejson if self.store_connection is not None else {}
        options = {}
        for key in _PG_TIMEOUTS:
            if extra.get(key) not in (None, ""):
                configured[key] = parse_seconds(extra[key], f"store connection {self.resolved_conn_id!r}: extra "
                                                f"{key!r}", positive=key == "connect_timeout")
            options[f"{key}_s"] = configured[key]
        return options

    @cached_property
    def store(self) -> PortfolioStore:
        """The store, migrated to the current schema version."""
        from airflow_provider_portfolio.store import PortfolioStore

        store = PortfolioStore(self.url, **self.store_options)
        store.migrate()
        return store

    def get_conn(self) -> PortfolioStore:
        """Return the migrated :class:`PortfolioStore`."""
        return self.store

    def test_connection(self) -> tuple[bool, str]:
        """Connect and read the schema version."""
        try:
            from airflow_provider_portfolio.store import PortfolioStore

            version = PortfolioStore(self.url, **self.store_options).schema_version()
        except Exception as err:  # report, never raise, as the Connections UI expects
            return False, str(err)
        return True, f"connected; schema version {version}"


class StoreHookMixin:
    """For operators with a ``store_conn_id`` argument: :attr:`store_hook`, the store it names (``None``, blank or
    ``"None"`` as rendered: ``[portfolio] store_conn_id``, else the embedded store)."""

    store_conn_id: str | None

    @cached_property
    def store_hook(self) -> PortfolioStoreHook:
        conn_id = self.store_conn_id
        given = conn_id is not None and not (isinstance(conn_id, str) and conn_id.strip() in ("", "None"))
        return PortfolioStoreHook(store_conn_id=conn_id if given else None)
