"""Resolve the ``sources=`` of data operators into :class:`~airflow_provider_portfolio.market.sources.BarSource` objects.

A source name is ``"synthetic"`` (the built-in synthetic market), ``"dataset"`` (the stored synthetic dataset
Variable ``portfolio.synthetic_dataset_id`` names, under :func:`synthetic_root`) or ``"dataset:<id>"`` (one dataset,
or ``dataset:latest``), or an Airflow connection id whose connection type picks its hook the way Airflow does
(``Connection.get_hook``, from the providers' ``connection-types``: ``alpaca``, ``alphavantage``, ``finnhub`` here);
the hook must be a ``BarSource`` (see :mod:`~airflow_provider_portfolio.hooks.connections`). Invented prices (the
synthetic market, datasets) are refused in ``[portfolio] execution_mode = live``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_portfolio.exceptions import InvalidInputError

if TYPE_CHECKING:
    from airflow_provider_portfolio.market.sources import BarSource

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
#: ``dataset`` (the one Variable ``portfolio.synthetic_dataset_id`` names) or ``dataset:<id>``.
DATASET = "dataset"

#: Connections used, in this order, when an operator is given no sources and they exist.
DEFAULT_DATA_CONNECTIONS = ("alpaca_default", "alphavantage_default", "finnhub_default")

_logged: set[tuple[str, ...]] = set()


def default_sources() -> list[str]:
    """Sources used when an operator is given none.

    The default data connections that exist (:data:`DEFAULT_DATA_CONNECTIONS`, in that order), so a
    copied DAG switches to real vendors when a connection is added; with none, the synthetic market.
    Vendors are never mixed with invented prices: when any default connection exists, the synthetic
    market is not in the chain. What was chosen is logged once per process.

    :raises InvalidInputError: in ``[portfolio] execution_mode = live`` when no default data
        connection exists, since an invented market is never a live default.
    """
    from airflow_provider_portfolio.config import execution_mode

    found = [conn_id for conn_id in DEFAULT_DATA_CONNECTIONS if connection_exists(conn_id)]
    if not found and execution_mode() == "live":
        raise InvalidInputError(
            "no sources given, no default data connection exists "
            f"({', '.join(DEFAULT_DATA_CONNECTIONS)}) and [portfolio] execution_mode is 'live': "
            "name the data connections in sources="
        )
    chosen = found or [SYNTHETIC]
    if tuple(chosen) not in _logged:
        _logged.add(tuple(chosen))
        if found:
            log.info("No data sources given: using the default data connection(s) %s", ", ".join(found))
        else:
            log.info("No data sources given and no default data connection: using the synthetic market")
    return chosen


def connection_exists(conn_id: str) -> bool:
    """Whether connection ``conn_id`` exists (anywhere Airflow looks: secrets backends, env, the database)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def validate_source_names(sources: object) -> list[str]:
    """Check the shape of ``sources`` (a list of non-empty strings) without any lookup.

    :raises InvalidInputError: when it is not a list of strings.
    """
    if isinstance(sources, str):
        sources = [part.strip() for part in sources.split(",") if part.strip()]
    if not isinstance(sources, (list, tuple)) or not sources or not all(
        isinstance(s, str) and s.strip() for s in sources
    ):
        raise InvalidInputError(f"sources must be a non-empty list of connection ids or 'synthetic', got {sources!r}")
    return [s.strip() for s in sources]


def synthetic_root(root: object = None) -> Path:
    """The synthetic datasets' folder: ``root`` when given, else ``[portfolio] synthetic_dir``, else
    ``$AIRFLOW_HOME/portfolio/synthetic`` (beside the embedded store). A relative path is taken from
    ``$AIRFLOW_HOME/portfolio``."""
    from airflow_provider_portfolio.config import get_option
    from airflow_provider_portfolio.hooks.store import embedded_store_path

    beside_store = embedded_store_path().parent
    value = get_option("synthetic_dir") if root is None or not str(root).strip() else str(root).strip()
    if not value or not value.strip():
        return beside_store / "synthetic"
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else beside_store / path


def dataset_source(name: str) -> BarSource:
    """The stored synthetic dataset a ``dataset`` or ``dataset:<id>`` source name means (see the module docstring).

    :raises InvalidInputError: in live mode, for a bad id, or when the dataset is not there (naming the folder and
        the Variable).
    """
    from airflow_provider_portfolio.config import execution_mode
    from airflow_provider_portfolio.exceptions import PortfolioError
    from airflow_provider_portfolio.market.datasets import DatasetSource
    from airflow_provider_portfolio.variables import get_variable

    if execution_mode() == "live":
        raise InvalidInputError(f"source {name!r} (a synthetic dataset) is refused in [portfolio] execution_mode = live")
    dataset_id = name.partition(":")[2].strip() if ":" in name else get_variable("portfolio.synthetic_dataset_id")
    root = synthetic_root()
    try:
        source = DatasetSource(root, dataset_id or "latest")
        if not (root / source.dataset_id / "manifest.json").is_file():
            raise InvalidInputError("it has no manifest")
    except PortfolioError as err:
        raise InvalidInputError(f"source {name!r}: no synthetic dataset {dataset_id!r} in {root} ({err}); run "
                                "portfolio_synthetic_refresh or name an existing dataset") from None
    return source


def resolve_sources(names: Sequence[str], *, exchange: str, seed: int) -> list[BarSource]:
    """Turn source names into source objects, in order.

    A connection id becomes its hook (``BaseHook.get_connection(name).get_hook()``), checked to be a
    :class:`~airflow_provider_portfolio.market.sources.BarSource`; what else it implements (news, quotes) the
    jobs find through the other protocols.

    :param names: ``"synthetic"``, ``"dataset"``, ``"dataset:<id>"`` or connection ids.
    :param exchange: the equities calendar for the synthetic market.
    :param seed: the synthetic market's seed.
    :raises InvalidInputError: for a connection that does not exist, whose type has no hook, or whose hook
        serves no bars (the message names the connection, its type and what is missing), and for
        ``"synthetic"`` in live mode.
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    from airflow_provider_portfolio.config import execution_mode
    from airflow_provider_portfolio.hooks.connections import (
        BAR_MEMBERS,
        connection_hook,
        missing_members,
        provider_types,
    )
    from airflow_provider_portfolio.market.sources import BarSource

    resolved: list[BarSource] = []
    for name in names:
        if name == SYNTHETIC:
            if execution_mode() == "live":
                raise InvalidInputError("source 'synthetic' is refused in [portfolio] execution_mode = live")
            from airflow_provider_portfolio.market.synthetic import SyntheticMarket

            resolved.append(SyntheticMarket(seed=seed, exchange=exchange))
            continue
        if name == DATASET or name.startswith(DATASET + ":"):
            resolved.append(dataset_source(name))
            continue
        try:
            conn = BaseHook.get_connection(name)
        except AirflowNotFoundException:
            raise InvalidInputError(f"source {name!r} is neither 'synthetic' nor an existing connection id") from None
        hook = connection_hook(conn, serves="market data", members=BAR_MEMBERS, hint="or use 'synthetic'")
        if not isinstance(hook, BarSource):
            lacks = missing_members(hook, BAR_MEMBERS)
            raise InvalidInputError(
                f"connection {name!r} has type {conn.conn_type!r}, which serves no market data: its hook "
                f"{type(hook).__name__} has no bars (it lacks {', '.join(lacks) or 'a member of BarSource'}); "
                f"connection types serving market data: {', '.join(provider_types(BAR_MEMBERS))}; or use 'synthetic'"
            )
        resolved.append(hook)
    return resolved


def data_sources(names: Sequence[str] | None, *, exchange: str) -> list[BarSource]:
    """The sources an operator or agent reads: ``names`` (``"synthetic"`` or connection ids, in failover order;
    ``None``: :func:`default_sources`) resolved by :func:`resolve_sources`, the synthetic market seeded with
    ``[portfolio] synthetic_seed``.

    :raises InvalidInputError: for a bad list, a missing connection or one whose type serves no bars.
    """
    from airflow_provider_portfolio.config import get_option

    chosen = validate_source_names(list(names)) if names else default_sources()
    return resolve_sources(chosen, exchange=exchange, seed=int(get_option("synthetic_seed")))


def __getattr__(name: str) -> object:
    """``SOURCE_HOOKS``, the earlier registry, now derived from the provider info's ``connection-types``."""
    if name == "SOURCE_HOOKS":
        from airflow_provider_portfolio.get_provider_info import CONNECTION_TYPES

        return {entry["connection-type"]: entry["hook-class-name"] for entry in CONNECTION_TYPES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
