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

``accounts`` (migration 3)
    One row per ledger ``account`` (``simulated:<name>`` for the simulated broker, ``alpaca:<conn_id>`` for
    Alpaca): ``cash`` and ``initial_cash`` (the simulated broker's book; NULL for a real broker, whose cash
    lives at the broker), ``created_at``, ``updated_at``.
``positions`` (migration 3)
    The simulated broker's positions keyed by (``account``, ``symbol``): signed ``qty``, ``avg_price`` (of the
    open quantity), and the last ``mark_price``/``mark_ts`` seen for the symbol (what equity is valued at).
``orders`` (migration 3)
    One row per (``account``, ``client_order_id``): the order a decision sent, with ``dag_id``, ``run_id``,
    ``symbol``, ``side``, ``qty``, ``ref_price`` (the decision's price), ``bar_ts`` (the bar decided on),
    ``status`` (``pending_submit`` before the broker answered, then the broker's state: ``new``,
    ``accepted``, ``partially_filled``, ``filled``, ``canceled``, ``expired``, ``rejected``...; ``not_placed``
    when the broker never got it), ``broker_order_id``, ``filled_qty``, ``filled_avg_price``, ``reason``,
    ``created_at``, ``updated_at``. The primary key is the broker's own uniqueness of client order ids.
``fills`` (migration 3)
    One row per filled order (``account``, ``client_order_id``): ``symbol``, ``side``, ``qty``, ``price``
    (after slippage), ``commission``, the ``bar_ts`` it filled at and ``filled_at``.
``equity_curve`` (migration 3)
    One row per (``account``, ``ts``): ``cash``, ``positions_value``, ``equity`` (= cash + positions value)
    at the cycle's instant ``ts``, written by ``run_id``.
``trading_decisions`` (migration 3)
    One row per (``dag_id``, ``symbol``, ``timeframe``, ``bar_ts``, ``run_key``): what a trading cycle
    decided about a symbol at a bar. ``run_key`` is ``''`` for bar-aware traders (so a bar is decided once,
    whatever runs overlap) and the run id otherwise. ``run_id``, ``account``, ``action``, ``score``,
    ``confidence``, ``price``, ``current_qty``, ``target_qty``, ``order_qty``, ``reason``, ``error``;
    ``signals`` (JSON: name -> score, confidence, reason); the risk verdict ``approved``, ``risk_rule``,
    ``risk_reason``; the ``client_order_id`` of the order it sent; ``created_at``, ``updated_at``.

``health_reports`` (migration 4)
    One row per (``kind``, ``ts``, ``dag_id``, ``run_id``): a health report of the desk made at the instant
    ``ts``; ``kind`` is ``monitoring`` (the hourly health report) or ``environment`` (env sanity). ``level`` is
    the report's ``GREEN``, ``YELLOW`` or ``RED``; ``checks`` the JSON text of the whole report
    (``HealthReport.to_dict()``: ``kind``, ``ts``, ``level``, ``failed`` and every check with its ``value``,
    ``threshold``, ``level`` and ``message``); ``summary`` its one line; ``dag_id`` and ``run_id`` the Airflow run
    that made it (``''`` for none); ``created_at`` when it was written. A re-run of the same run at the same
    instant replaces its row. The primary key, led by (``kind``, ``ts``), finds the latest reports of a kind.

``signal_validations`` (migration 5)
    One row per validated forecast step or trading signal, keyed by (``kind``, ``source``, ``symbol``,
    ``timeframe``, ``asof``, ``origin``, ``step``). ``kind`` is ``forecast`` (``source`` the model, ``origin`` the
    forecast's ``run_id``, ``asof`` its last bar seen, ``step`` 1..horizon) or ``signal`` (``source`` the trading
    DAG, ``origin`` the decision's ``run_key``, ``asof`` the decided bar ``bar_ts``, ``step`` 1). ``target_ts`` is the
    bar whose outcome is ``actual``; ``target`` names the quantity: ``log_close`` (the log close of that bar) or
    ``log_return`` (its log close minus the previous bar's: GARCH forecasts, and signals, whose outcome is the
    close-to-close log return of the bar after the decided one). Forecasts keep ``point``, ``lower``, ``upper``,
    ``level`` (NULL for signals); signals keep the decision's ``action``, ``score`` and ``confidence`` (NULL for
    forecasts). ``reference`` is the log close of the ``asof`` bar (what a level forecast's direction is measured
    from), ``error`` = ``point - actual`` (forecasts), ``hit`` whether the predicted direction was the realised one
    (a level forecast: sign of ``point - reference`` against ``actual - reference``; a signal: sign of ``score``
    against the return; NULL where either did not move, and for ``log_return`` forecasts), ``covered`` whether
    ``actual`` lay in [``lower``, ``upper``] (forecasts). ``run_id`` is the validation run that wrote the row,
    ``created_at`` when. Index (``kind``, ``asof``) serves the window reads and summaries.
``studies`` (migration 5)
    One row per (``kind``, ``study_id``): the result of a desk study run (``signal_validation``,
    ``transaction_costs``, ``threshold_sweep``, ``strategy_optimization``...) made at the instant ``ts`` by
    ``dag_id``/``run_id`` (``''`` for none), with its ``status`` (``ok``, ``partial``, ``insufficient_data``,
    ``failed``), ``params``, ``summary`` (its metrics) and ``recommended`` (settings it recommends, NULL for none) as
    JSON text; ``applied`` says whether the recommendation was applied, ``applied_at`` when; ``created_at`` when it was
    written. A re-run of the same study replaces its row and its points. Index (``kind``, ``ts``) finds the latest.
``study_points`` (migration 5)
    One row per (``kind``, ``study_id``, ``point``): one point of a study (a sweep's grid point, a symbol's costs, a
    model's validation summary), its ``params`` and ``metrics`` as JSON text, and the study's ``ts`` (so retention
    goes by one column).

``opportunities`` (migration 6)
    One row per (``run_id``, ``symbol``): a discovery run's ranking of the universe
    (:mod:`airflow_provider_portfolio.desk.discovery`) made at the instant ``ts`` (the desk's clock) by ``dag_id``
    (``''`` for none). ``rank`` (1 = best) orders the run's ``score`` (the weighted sum of standardized components);
    ``regime`` is the symbol's market-state label (``calm_up``, ``volatile``...) and ``regime_probability`` the
    probability of its latest state (NULL when unknown). ``components`` (each component's part of the score),
    ``features`` (the raw measurements: trend, momentum, volatility, factor exposures...) and ``reasons`` (short
    strings naming the biggest contributors with their numbers) are JSON text; ``created_at`` when it was written. A
    re-run of the same run replaces its rows. Index (``ts``) finds the latest run.

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
    Text,
)
from sqlalchemy.types import TypeDecorator

from airflow_provider_portfolio.market.timeutil import EPOCH

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect



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
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc)
        return EPOCH + timedelta(microseconds=int(value))


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


def _trading_tables(meta: MetaData) -> list[Table]:
    # Shapes of the trading tables as created by migration 3 (and still the latest shapes).
    def ts(name: str, nullable: bool = False) -> Column:
        return Column(name, UtcTimestamp(), nullable=nullable)

    def num(name: str, nullable: bool = False) -> Column:
        return Column(name, Float(53), nullable=nullable)

    accounts_t = Table(
        "accounts", meta,
        Column("account", _KeyText(128), nullable=False),
        num("cash", True), num("initial_cash", True), ts("created_at"), ts("updated_at"),
        PrimaryKeyConstraint("account", name="pk_accounts"),
        sqlite_with_rowid=False,
    )
    positions_t = Table(
        "positions", meta,
        Column("account", _KeyText(128), nullable=False),
        Column("symbol", _KeyText(32), nullable=False),
        num("qty"), num("avg_price"), num("mark_price", True), ts("mark_ts", True), ts("updated_at"),
        PrimaryKeyConstraint("account", "symbol", name="pk_positions"),
        sqlite_with_rowid=False,
    )
    orders_t = Table(
        "orders", meta,
        Column("account", _KeyText(128), nullable=False),
        Column("client_order_id", _KeyText(128), nullable=False),
        Column("dag_id", String(250), nullable=False),
        Column("run_id", String(250), nullable=False),
        Column("symbol", _KeyText(32), nullable=False),
        Column("side", String(8), nullable=False),
        num("qty"), num("ref_price"), ts("bar_ts"),
        Column("status", _KeyText(32), nullable=False),
        Column("broker_order_id", String(128), nullable=True),
        num("filled_qty", True), num("filled_avg_price", True),
        Column("reason", Text(), nullable=True),
        ts("created_at"), ts("updated_at"),
        PrimaryKeyConstraint("account", "client_order_id", name="pk_orders"),
        Index("ix_orders_account_created", "account", "created_at"),
        Index("ix_orders_account_status", "account", "status"),
        sqlite_with_rowid=False,
    )
    fills_t = Table(
        "fills", meta,
        Column("account", _KeyText(128), nullable=False),
        Column("client_order_id", _KeyText(128), nullable=False),
        Column("symbol", _KeyText(32), nullable=False),
        Column("side", String(8), nullable=False),
        num("qty"), num("price"), num("commission"), ts("bar_ts"), ts("filled_at"),
        PrimaryKeyConstraint("account", "client_order_id", name="pk_fills"),
        sqlite_with_rowid=False,
    )
    equity_t = Table(
        "equity_curve", meta,
        Column("account", _KeyText(128), nullable=False),
        ts("ts"), num("cash"), num("positions_value"), num("equity"),
        Column("run_id", String(250), nullable=False),
        ts("created_at"),
        PrimaryKeyConstraint("account", "ts", name="pk_equity_curve"),
        sqlite_with_rowid=False,
    )
    decisions_t = Table(
        "trading_decisions", meta,
        Column("dag_id", _KeyText(250), nullable=False),
        Column("symbol", _KeyText(32), nullable=False),
        Column("timeframe", _KeyText(16), nullable=False),
        ts("bar_ts"),
        Column("run_key", _KeyText(250), nullable=False),
        Column("run_id", String(250), nullable=False),
        Column("account", String(128), nullable=False),
        Column("action", String(8), nullable=False),
        num("score"), num("confidence"), num("price", True), num("current_qty"), num("target_qty"),
        num("order_qty"),
        Column("reason", Text(), nullable=False),
        Column("error", Text(), nullable=True),
        Column("signals", Text(), nullable=False),
        Column("approved", Boolean(create_constraint=False), nullable=True),
        Column("risk_rule", String(64), nullable=True),
        Column("risk_reason", Text(), nullable=True),
        Column("client_order_id", String(128), nullable=True),
        ts("created_at"), ts("updated_at"),
        PrimaryKeyConstraint("dag_id", "symbol", "timeframe", "bar_ts", "run_key", name="pk_trading_decisions"),
        Index("ix_trading_decisions_run", "dag_id", "run_id"),
        sqlite_with_rowid=False,
    )
    return [accounts_t, positions_t, orders_t, fills_t, equity_t, decisions_t]


#: The trading ledger (see the module docstring).
accounts, positions, orders, fills, equity_curve, trading_decisions = _trading_tables(metadata)
#: Order states after which nothing more happens to an order.
TERMINAL_ORDER_STATES: tuple[str, ...] = ("filled", "canceled", "expired", "rejected", "not_placed", "done_for_day",
                                          "replaced")


def _health_reports_table(meta: MetaData) -> Table:
    # Shape of ``health_reports`` as created by migration 4 (and still the latest shape).
    return Table(
        "health_reports",
        meta,
        Column("kind", _KeyText(32), nullable=False),
        Column("ts", UtcTimestamp(), nullable=False),
        Column("dag_id", _KeyText(250), nullable=False),
        Column("run_id", _KeyText(250), nullable=False),
        Column("level", String(8), nullable=False),
        Column("checks", Text(), nullable=False),
        Column("summary", Text(), nullable=False),
        Column("created_at", UtcTimestamp(), nullable=False),
        PrimaryKeyConstraint("kind", "ts", "dag_id", "run_id", name="pk_health_reports"),
        sqlite_with_rowid=False,
    )


#: Health reports keyed by (kind, ts, dag_id, run_id).
health_reports = _health_reports_table(metadata)
#: Allowed values of ``health_reports.kind``.
HEALTH_REPORT_KINDS: tuple[str, ...] = ("monitoring", "environment", "risk_audit")
#: Allowed values of ``health_reports.level``, best first.
HEALTH_LEVELS: tuple[str, ...] = ("GREEN", "YELLOW", "RED")


def _validation_tables(meta: MetaData) -> list[Table]:
    # Shapes of signal_validations, studies and study_points as created by migration 5 (and still the latest shapes).
    def num(name: str) -> Column:
        return Column(name, Float(53), nullable=True)

    validations_t = Table(
        "signal_validations", meta,
        Column("kind", _KeyText(16), nullable=False),
        Column("source", _KeyText(250), nullable=False),
        Column("symbol", _KeyText(32), nullable=False),
        Column("timeframe", _KeyText(16), nullable=False),
        Column("asof", UtcTimestamp(), nullable=False),
        Column("origin", _KeyText(250), nullable=False),
        Column("step", Integer, nullable=False, autoincrement=False),
        Column("target_ts", UtcTimestamp(), nullable=False),
        Column("target", String(16), nullable=False),
        num("point"), num("lower"), num("upper"), num("level"),
        Column("action", String(8), nullable=True),
        num("score"), num("confidence"), num("reference"),
        Column("actual", Float(53), nullable=False),
        num("error"),
        Column("hit", Boolean(create_constraint=False), nullable=True),
        Column("covered", Boolean(create_constraint=False), nullable=True),
        Column("run_id", String(250), nullable=False),
        Column("created_at", UtcTimestamp(), nullable=False),
        PrimaryKeyConstraint("kind", "source", "symbol", "timeframe", "asof", "origin", "step",
                             name="pk_signal_validations"),
        Index("ix_signal_validations_kind_asof", "kind", "asof"),
        sqlite_with_rowid=False,
    )
    studies_t = Table(
        "studies", meta,
        Column("kind", _KeyText(32), nullable=False),
        Column("study_id", _KeyText(250), nullable=False),
        Column("ts", UtcTimestamp(), nullable=False),
        Column("dag_id", String(250), nullable=False),
        Column("run_id", String(250), nullable=False),
        Column("status", String(32), nullable=False),
        Column("params", Text(), nullable=False),
        Column("summary", Text(), nullable=False),
        Column("recommended", Text(), nullable=True),
        Column("applied", Boolean(create_constraint=False), nullable=False),
        Column("applied_at", UtcTimestamp(), nullable=True),
        Column("created_at", UtcTimestamp(), nullable=False),
        PrimaryKeyConstraint("kind", "study_id", name="pk_studies"),
        Index("ix_studies_kind_ts", "kind", "ts"),
        sqlite_with_rowid=False,
    )
    points_t = Table(
        "study_points", meta,
        Column("kind", _KeyText(32), nullable=False),
        Column("study_id", _KeyText(250), nullable=False),
        Column("point", _KeyText(250), nullable=False),
        Column("ts", UtcTimestamp(), nullable=False),
        Column("params", Text(), nullable=False),
        Column("metrics", Text(), nullable=False),
        PrimaryKeyConstraint("kind", "study_id", "point", name="pk_study_points"),
        sqlite_with_rowid=False,
    )
    return [validations_t, studies_t, points_t]


#: Validated forecasts and signals, and the desk's studies with their points (see the module docstring).
signal_validations, studies, study_points = _validation_tables(metadata)
#: Allowed values of ``signal_validations.kind``.
VALIDATION_KINDS: tuple[str, ...] = ("forecast", "signal")
#: The key of a validated row (a second validation of it is ignored).
VALIDATION_KEY: tuple[str, ...] = ("kind", "source", "symbol", "timeframe", "asof", "origin", "step")
#: Allowed values of ``studies.status``.
STUDY_STATUSES: tuple[str, ...] = ("ok", "partial", "insufficient_data", "failed")


def _opportunities_table(meta: MetaData) -> Table:
    # Shape of ``opportunities`` as created by migration 6 (and still the latest shape).
    return Table(
        "opportunities", meta,
        Column("run_id", _KeyText(250), nullable=False),
        Column("symbol", _KeyText(32), nullable=False),
        Column("ts", UtcTimestamp(), nullable=False),
        Column("rank", Integer, nullable=False, autoincrement=False),
        Column("score", Float(53), nullable=False),
        Column("regime", String(32), nullable=False),
        Column("regime_probability", Float(53), nullable=True),
        Column("components", Text(), nullable=False),
        Column("features", Text(), nullable=False),
        Column("reasons", Text(), nullable=False),
        Column("dag_id", String(250), nullable=False),
        Column("created_at", UtcTimestamp(), nullable=False),
        PrimaryKeyConstraint("run_id", "symbol", name="pk_opportunities"),
        Index("ix_opportunities_ts", "ts"),
        sqlite_with_rowid=False,
    )


#: Discovery rankings keyed by (run_id, symbol) (see the module docstring).
opportunities = _opportunities_table(metadata)


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


def _v3_create_trading(conn: Connection) -> None:
    for table in _trading_tables(MetaData()):
        table.create(conn)


def _v4_create_health_reports(conn: Connection) -> None:
    _health_reports_table(MetaData()).create(conn)


def _v5_create_validations_and_studies(conn: Connection) -> None:
    for table in _validation_tables(MetaData()):
        table.create(conn)


def _v6_create_opportunities(conn: Connection) -> None:
    _opportunities_table(MetaData()).create(conn)


#: Forward migrations in order; append new ones at the end.
MIGRATIONS: list[Migration] = [
    Migration(1, "create bars", _v1_create_bars),
    Migration(2, "create forecasts and model_evaluations", _v2_create_forecasts),
    Migration(3, "create the trading ledger: accounts, positions, orders, fills, equity_curve, trading_decisions",
              _v3_create_trading),
    Migration(4, "create health_reports", _v4_create_health_reports),
    Migration(5, "create signal_validations, studies and study_points", _v5_create_validations_and_studies),
    Migration(6, "create opportunities", _v6_create_opportunities),
]


def latest_version() -> int:
    """The newest schema version this code knows."""
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def _check_migrations() -> None:
    versions = [m.version for m in MIGRATIONS]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"schema migrations must be numbered 1..n in order, got {versions}")


_check_migrations()
