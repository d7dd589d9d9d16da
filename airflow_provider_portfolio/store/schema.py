"""Tables of the portfolio store and the ordered list of forward migrations (SQLAlchemy Core).

One schema serves SQLite and PostgreSQL. Timestamps (:class:`UtcTimestamp`) are
``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and, on SQLite, an ``INTEGER`` holding microseconds since
the Unix epoch in UTC: it sorts and compares correctly, is compact, and converts to and from
``datetime64[ns, UTC]`` with vectorised arithmetic (microseconds is also PostgreSQL's resolution, so
both dialects store the same instants). On SQLite ``bars`` is a ``WITHOUT ROWID`` table clustered on
its primary key.

Adding a migration: append a :class:`Migration` with the next version to :data:`MIGRATIONS`; its
``apply`` receives a connection inside the migration transaction (lock held) and emits DDL. Once a
version is released its DDL is frozen: a later change to a table is a new migration, and the table
objects below describe the latest version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, MetaData, PrimaryKeyConstraint, String, Table
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class UtcTimestamp(TypeDecorator):
    """An instant in UTC: ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL, epoch microseconds on SQLite.

    Binds ``datetime``/``pandas.Timestamp`` (naive means UTC) and returns aware UTC ``datetime``.
    Bulk paths of the repository convert whole columns themselves and bypass this per-value code.
    """

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(BigInteger())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if hasattr(value, "to_pydatetime"):
            value = value.to_pydatetime()
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        if dialect.name == "postgresql":
            return value
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc)
        return _EPOCH + timedelta(microseconds=int(value))


def _KeyText(length: int) -> Any:  # noqa: N802 - reads like a type
    """Key text: ``COLLATE "C"`` on PostgreSQL (byte order: fast index compares, sorts like Python)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


metadata = MetaData()


def _bars_table(meta: MetaData) -> Table:
    # Shape of ``bars`` as created by migration 1 (and still the latest shape).
    return Table(
        "bars",
        meta,
        Column("symbol", _KeyText(32), nullable=False),
        Column("timeframe", _KeyText(16), nullable=False),
        Column("ts", UtcTimestamp(), nullable=False),
        Column("open", Float(53), nullable=False),
        Column("high", Float(53), nullable=False),
        Column("low", Float(53), nullable=False),
        Column("close", Float(53), nullable=False),
        Column("volume", Float(53), nullable=False),
        Column("source", String(), nullable=False),
        PrimaryKeyConstraint("symbol", "timeframe", "ts", name="pk_bars"),
        sqlite_with_rowid=False,
    )


#: Applied schema versions, one row per migration.
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("description", String(200), nullable=False),
)

#: Bars keyed by (symbol, timeframe, ts): the canonical bar frame of ``market/bars.py``.
bars = _bars_table(metadata)

BAR_VALUE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "source")


@dataclass(frozen=True)
class Migration:
    """One forward step of the schema.

    :param version: the version this migration brings the database to (1, 2, ... in order).
    :param description: one line, stored in ``schema_version``.
    :param apply: emits the DDL on the given connection (inside the migration transaction).
    """

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_create_bars(conn: Connection) -> None:
    _bars_table(MetaData()).create(conn)


#: Forward migrations in order; append new ones at the end.
MIGRATIONS: list[Migration] = [
    Migration(1, "create bars", _v1_create_bars),
]


def latest_version() -> int:
    """The newest schema version this code knows."""
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def _check_migrations() -> None:
    versions = [m.version for m in MIGRATIONS]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"schema migrations must be numbered 1..n in order, got {versions}")


_check_migrations()
