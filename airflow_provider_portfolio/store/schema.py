"""Tables of the portfolio store and the ordered list of forward migrations (SQLAlchemy Core).

One schema serves SQLite and PostgreSQL. Timestamps (:class:`UtcTimestamp`) are
``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and, on SQLite, an ``INTEGER`` holding microseconds since
the Unix epoch in UTC: it sorts and compares correctly, is compact, and converts to and from
``datetime64[ns, UTC]`` with vectorised arithmetic (microseconds is also PostgreSQL's resolution, so
both dialects store the same instants). On SQLite every table but ``schema_version`` is a
``WITHOUT ROWID`` table clustered on its primary key.

Tables (latest version):

``schema_version`` (migration 1)
    One row per applied migration: ``version``, ``applied_at``, ``description``.
``bars`` (migration 1)
    OHLCV bars keyed by (``symbol``, ``timeframe``, ``ts``): the canonical bar frame of ``market/bars.py``.
``forecasts`` (migration 2)
    One row per (``run_id``, ``model``, ``symbol``, ``timeframe``, ``step``): the forecast of the bar
    ``target_ts``, ``step`` bars (1..horizon) after ``asof`` (the last bar the model saw), by ``model``
    (``ssa``, ``garch``, ``ensemble``, a baseline such as ``last_value``...) in the run ``run_id`` (the
    Airflow run id, or any caller id). ``target`` names the forecast quantity (``log_close`` for price-level
    models, ``log_return`` for GARCH); ``point`` is the point forecast and [``lower``, ``upper``] the interval
    of nominal coverage ``level`` (0 < level < 1); ``variance`` is GARCH's conditional variance forecast
    (NULL for other models). ``backend`` (``numpy``/``cupy``/``statsmodels``) and ``device`` (``cpu``,
    ``cuda:0 (NVIDIA H100)``) say where it was computed, ``created_at`` when it was written. Index
    (``symbol``, ``model``, ``timeframe``, ``asof``) finds the latest forecasts of a symbol and model.
``model_evaluations`` (migration 2)
    One row per (``run_id``, ``model``, ``symbol``, ``timeframe``): the rolling-origin backtest of a model
    at ``asof`` over ``horizon`` steps and ``origins`` origins. ``rmse``, ``mae``, ``directional_accuracy``
    and ``coverage`` (of the intervals) are NULL where undefined; ``baseline`` names the naive model
    compared against, ``baseline_rmse`` its RMSE and ``skill`` = 1 - rmse / baseline_rmse (NULL if
    undefined). ``label`` is ``healthy``, ``unhealthy`` or ``insufficient_data``, ``healthy`` the gate's
    verdict and ``weight`` the model's ensemble weight (NULL when not in the ensemble); ``backend``,
    ``device`` and ``created_at`` as in ``forecasts``. Same index as ``forecasts``.

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

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)
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


def _forecasts_table(meta: MetaData) -> Table:
    # Shape of ``forecasts`` as created by migration 2 (and still the latest shape).
    return Table(
        "forecasts",
        meta,
        Column("run_id", _KeyText(250), nullable=False),
        Column("model", _KeyText(32), nullable=False),
        Column("symbol", _KeyText(32), nullable=False),
        Column("timeframe", _KeyText(16), nullable=False),
        Column("step", Integer, nullable=False, autoincrement=False),
        Column("asof", UtcTimestamp(), nullable=False),
        Column("target_ts", UtcTimestamp(), nullable=False),
        Column("target", String(16), nullable=False),
        Column("point", Float(53), nullable=False),
        Column("lower", Float(53), nullable=False),
        Column("upper", Float(53), nullable=False),
        Column("level", Float(53), nullable=False),
        Column("variance", Float(53), nullable=True),
        Column("backend", String(16), nullable=False),
        Column("device", String(64), nullable=False),
        Column("created_at", UtcTimestamp(), nullable=False),
        PrimaryKeyConstraint("run_id", "model", "symbol", "timeframe", "step", name="pk_forecasts"),
        Index("ix_forecasts_symbol_model", "symbol", "model", "timeframe", "asof"),
        sqlite_with_rowid=False,
    )


def _model_evaluations_table(meta: MetaData) -> Table:
    # Shape of ``model_evaluations`` as created by migration 2 (and still the latest shape).
    return Table(
        "model_evaluations",
        meta,
        Column("run_id", _KeyText(250), nullable=False),
        Column("model", _KeyText(32), nullable=False),
        Column("symbol", _KeyText(32), nullable=False),
        Column("timeframe", _KeyText(16), nullable=False),
        Column("asof", UtcTimestamp(), nullable=False),
        Column("horizon", Integer, nullable=False),
        Column("origins", Integer, nullable=False),
        Column("rmse", Float(53), nullable=True),
        Column("mae", Float(53), nullable=True),
        Column("directional_accuracy", Float(53), nullable=True),
        Column("coverage", Float(53), nullable=True),
        Column("baseline", String(32), nullable=False),
        Column("baseline_rmse", Float(53), nullable=True),
        Column("skill", Float(53), nullable=True),
        Column("label", String(32), nullable=False),
        Column("healthy", Boolean(create_constraint=False), nullable=False),
        Column("weight", Float(53), nullable=True),
        Column("backend", String(16), nullable=False),
        Column("device", String(64), nullable=False),
        Column("created_at", UtcTimestamp(), nullable=False),
        PrimaryKeyConstraint("run_id", "model", "symbol", "timeframe", name="pk_model_evaluations"),
        Index("ix_model_evaluations_symbol_model", "symbol", "model", "timeframe", "asof"),
        sqlite_with_rowid=False,
    )


#: Forecasts keyed by (run_id, model, symbol, timeframe, step).
forecasts = _forecasts_table(metadata)
#: Model evaluations keyed by (run_id, model, symbol, timeframe).
model_evaluations = _model_evaluations_table(metadata)

#: Columns of ``forecasts`` in table order: what a forecast frame holds (``created_at`` is optional).
FORECAST_COLUMNS: tuple[str, ...] = tuple(c.name for c in forecasts.columns)
#: Columns of ``model_evaluations`` in table order: what an evaluation frame holds (``created_at`` is optional).
EVALUATION_COLUMNS: tuple[str, ...] = tuple(c.name for c in model_evaluations.columns)
#: The key a write replaces as a unit, in both tables.
FORECAST_RUN_KEY: tuple[str, ...] = ("run_id", "model", "symbol", "timeframe")
#: Allowed values of ``model_evaluations.label``.
EVALUATION_LABELS: tuple[str, ...] = ("healthy", "unhealthy", "insufficient_data")


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


def _v2_create_forecasts(conn: Connection) -> None:
    meta = MetaData()
    _forecasts_table(meta).create(conn)
    _model_evaluations_table(meta).create(conn)


#: Forward migrations in order; append new ones at the end.
MIGRATIONS: list[Migration] = [
    Migration(1, "create bars", _v1_create_bars),
    Migration(2, "create forecasts and model_evaluations", _v2_create_forecasts),
]


def latest_version() -> int:
    """The newest schema version this code knows."""
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def _check_migrations() -> None:
    versions = [m.version for m in MIGRATIONS]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"schema migrations must be numbered 1..n in order, got {versions}")


_check_migrations()
