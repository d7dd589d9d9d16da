"""OpenLineage facets of the desk's operators: vendor bars -> store tables -> forecasts -> orders.

Used by the operators' ``get_openlineage_facets_on_complete`` when the OpenLineage provider
(``apache-airflow-providers-openlineage``, the ``openlineage`` extra) is installed and configured; without it
the provider never calls them, and called anyway they return ``None``. Nothing of OpenLineage is imported before
a function here runs.

Datasets, following the OpenLineage naming conventions where there is one:

- a market-data vendor: namespace ``portfolio-vendor://<vendor>`` (``alpaca``, ``alphavantage``, ``finnhub``,
  ``synthetic``: the connection type, not the connection id), name ``bars/<timeframe>``;
- a PostgreSQL store table: namespace ``postgres://<host>:<port>``, name ``<database>.public.<table>`` (the
  convention Airflow's own PostgreSQL lineage uses, so both meet on one dataset);
- a SQLite store table: namespace ``sqlite://<file name>`` (the file's name, not its path), name ``<table>``.

Store tables: ``bars``, ``forecasts``, ``model_evaluations``, ``trading_decisions``, ``orders``, ``fills``,
``equity_curve``; each carries a schema facet. A namespace never holds a user name or a password.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

log = logging.getLogger(__name__)

VENDOR_SCHEME = "portfolio-vendor"
#: The PostgreSQL schema the store's tables live in.
POSTGRES_SCHEMA = "public"

#: What each job reads and writes in the store.
ETL_OUTPUTS = ("bars",)
FORECAST_INPUTS = ("bars",)
ENSEMBLE_INPUTS = ("forecasts", "model_evaluations")
FORECAST_OUTPUTS = ("forecasts", "model_evaluations")
TRADER_INPUTS = ("forecasts", "model_evaluations")
TRADER_OUTPUTS = ("trading_decisions", "orders", "fills", "equity_curve")

_UNSAFE = re.compile(r"[^a-z0-9_.-]+")


def _openlineage() -> tuple[Any, Any] | None:
    """``(OperatorLineage, Dataset)`` when the OpenLineage provider is installed, else ``None``."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
    except ImportError:
        log.debug("OpenLineage provider not installed: no lineage")
        return None
    return OperatorLineage, Dataset


def source_vendors(sources: Iterable[Any]) -> list[str]:
    """The vendor of each market-data source, in order, without repeats: a hook's connection type
    (``alpaca``...), ``synthetic`` for the synthetic market; a source given by name is looked up as a
    connection (its type), else kept as it is.

    :param sources: source objects (``BarSource``) or source names.
    """
    vendors: list[str] = []
    for source in sources:
        vendor = getattr(source, "conn_type", None) or getattr(source, "name", None)
        if vendor is None:
            vendor = _named_vendor(str(source))
        vendor = _UNSAFE.sub("_", str(vendor).strip().lower()) or "unknown"
        if vendor not in vendors:
            vendors.append(vendor)
    return vendors


def _named_vendor(name: str) -> str:
    if name.strip() == "synthetic":
        return "synthetic"
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(name.strip()).conn_type or name
    except Exception as err:  # lineage is best effort: the name stands for the vendor
        log.debug("source %r: connection type unknown (%s)", name, err)
        return name


def store_namespace(store_url: str) -> tuple[str, str]:
    """The OpenLineage namespace of the store at ``store_url`` and the prefix of its tables' names.

    ``postgresql+psycopg://user:secret@db:5432/desk`` -> ``("postgres://db:5432", "desk.public.")``;
    ``sqlite:////srv/airflow/portfolio/portfolio.db`` -> ``("sqlite://portfolio.db", "")``. User and password
    are dropped.

    :raises ValueError: for a URL that is neither SQLite nor PostgreSQL.
    """
    from sqlalchemy.engine import make_url

    url = make_url(store_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if database.startswith("file:"):
            database = database[len("file:"):].split("?", 1)[0]
        name = PurePath(database).name if database not in ("", ":memory:") else "memory"
        return f"sqlite://{name or 'memory'}", ""
    if backend in ("postgresql", "postgres"):
        return f"postgres://{url.host or 'localhost'}:{url.port or 5432}", f"{url.database or 'postgres'}.{POSTGRES_SCHEMA}."
    raise ValueError(f"the store is SQLite or PostgreSQL, got a {backend!r} URL")


def vendor_dataset(vendor: str, timeframe: str) -> Any:
    """The bars of ``timeframe`` that ``vendor`` serves, as an OpenLineage ``Dataset`` (``None`` without it)."""
    classes = _openlineage()
    if classes is None:
        return None
    return classes[1](namespace=f"{VENDOR_SCHEME}://{vendor}", name=f"bars/{str(timeframe).strip()}")


def store_dataset(store_url: str, table: str) -> Any:
    """The store's ``table`` as an OpenLineage ``Dataset`` with its schema (``None`` without OpenLineage)."""
    classes = _openlineage()
    if classes is None:
        return None
    namespace, prefix = store_namespace(store_url)
    facets = {}
    schema = _schema_facet(table, "sqlite" if namespace.startswith("sqlite:") else "postgresql")
    if schema is not None:
        facets["schema"] = schema
    return classes[1](namespace=namespace, name=f"{prefix}{table}", facets=facets)


def _schema_facet(table: str, dialect_name: str) -> Any:
    """The schema facet of a store table: its columns and their types in the store's dialect."""
    try:
        from openlineage.client.facet_v2 import schema_dataset
        from sqlalchemy.dialects import postgresql, sqlite

        from airflow_provider_portfolio.store import schema

        dialect = sqlite.dialect() if dialect_name == "sqlite" else postgresql.dialect()
        columns = schema.metadata.tables[table].columns
        return schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name=c.name, type=c.type.compile(dialect=dialect))
            for c in columns])
    except Exception as err:  # a dataset without its schema is still lineage
        log.debug("no schema facet for %s: %s", table, err)
        return None


def operator_lineage(store_url: str, *, inputs: Sequence[str] = (), outputs: Sequence[str] = (),
                     vendors: Sequence[str] = (), timeframe: str = "1Day") -> OperatorLineage | None:
    """An ``OperatorLineage`` of store tables and vendor bars (``None`` without the OpenLineage provider).

    :param store_url: the store's SQLAlchemy URL (its credentials are dropped).
    :param inputs: store tables read.
    :param outputs: store tables written.
    :param vendors: vendors whose bars of ``timeframe`` were read (inputs, before the tables).
    :param timeframe: the timeframe of those bars.
    """
    classes = _openlineage()
    if classes is None:
        return None
    return classes[0](
        inputs=[*(vendor_dataset(v, timeframe) for v in vendors), *(store_dataset(store_url, t) for t in inputs)],
        outputs=[store_dataset(store_url, t) for t in outputs],
    )


def etl_lineage(store_url: str, vendors: Sequence[str], timeframe: str) -> OperatorLineage | None:
    """The ETL: the vendors' bars -> the store's ``bars``."""
    return operator_lineage(store_url, outputs=ETL_OUTPUTS, vendors=vendors, timeframe=timeframe)


def forecast_lineage(store_url: str, inputs: Sequence[str] = FORECAST_INPUTS) -> OperatorLineage | None:
    """A forecasting job: ``bars`` (an ensemble: the models' ``forecasts`` and ``model_evaluations``) ->
    ``forecasts`` and ``model_evaluations``."""
    return operator_lineage(store_url, inputs=inputs, outputs=FORECAST_OUTPUTS)


def trader_lineage(store_url: str, vendors: Sequence[str], timeframe: str, *,
                   forecasts: bool = True) -> OperatorLineage | None:
    """The auto trader: the vendors' bars and the stored forecasts (when it uses them) -> decisions, orders,
    fills and the equity curve."""
    return operator_lineage(store_url, inputs=TRADER_INPUTS if forecasts else (), outputs=TRADER_OUTPUTS,
                            vendors=vendors, timeframe=timeframe)
