"""Connection ids to the objects that serve them, through Airflow's own connection-to-hook mechanism.

A connection's type picks its hook the way Airflow does it everywhere (``Connection.get_hook``: the
providers manager reads each provider's ``connection-types`` -> ``hook-class-name``), so the provider info's
:data:`~airflow_provider_portfolio.get_provider_info.CONNECTION_TYPES` is the one list to edit when a vendor is
added. What a hook can do is then checked against the domain's protocols: bars
(:class:`~airflow_provider_portfolio.market.sources.BarSource`, :func:`market_data.resolve_sources
<airflow_provider_portfolio.hooks.market_data.resolve_sources>`) or a broker's API
(:class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI`, :func:`resolve_broker_api`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError

if TYPE_CHECKING:
    from airflow_provider_portfolio.trading.brokers.api import BrokerAPI

#: What a broker connection's hook must have (the members of ``BrokerAPI``).
BROKER_MEMBERS = ("name", "is_live", "get_account", "get_positions", "get_asset", "get_order_by_client_order_id",
                  "post_order")
#: What a market-data connection's hook must have (the members of ``BarSource``).
BAR_MEMBERS = ("name", "get_bars")


def connection_hook(conn: Any, *, serves: str, members: Sequence[str], hook_params: Mapping[str, Any] | None = None,
                    hint: str = "") -> Any:
    """``conn.get_hook(hook_params=...)``: the hook Airflow's providers declare for the connection's type.

    :param conn: the Airflow connection.
    :param serves: what the caller wants of it, for messages (``"market data"``, ``"a broker"``).
    :param members: what a hook serving it has: the connection types whose hooks have them are named in the
        message (looked up only when there is one to write).
    :param hook_params: keyword arguments of the hook besides its conn id.
    :param hint: a last alternative the message offers (``"or use 'synthetic'"``).
    :raises InvalidInputError: naming the connection and its type when no installed provider declares a hook
        for the type, or the hook cannot be built with ``hook_params``.
    """
    try:
        return conn.get_hook(hook_params=dict(hook_params or {}))
    except Exception as err:  # Airflow's "Unknown hook type", an import error, a hook without those params
        types = [*provider_types(members), *([hint] if hint else [])]
        raise InvalidInputError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}, which serves no {serves} "
            f"({type(err).__name__}: {err}); connection types serving {serves}: {', '.join(types) or 'none'}"
        ) from None


def missing_members(obj: object, members: Sequence[str]) -> list[str]:
    """The names of ``members`` that ``obj`` lacks (looked up statically: no property is evaluated)."""
    absent = object()
    return [m for m in members if inspect.getattr_static(obj, m, absent) is absent]


def provider_types(members: Sequence[str]) -> list[str]:
    """This provider's connection types whose hook class has every one of ``members`` (for messages)."""
    from importlib import import_module

    from airflow_provider_portfolio.get_provider_info import CONNECTION_TYPES

    out = []
    for entry in CONNECTION_TYPES:
        module, _, name = entry["hook-class-name"].rpartition(".")
        try:
            cls = getattr(import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if not missing_members(cls, [m for m in members if m not in ("name", "is_live")]):
            out.append(entry["connection-type"])
    return out


def resolve_broker_api(conn_id: str, *, allow_live: bool = False) -> BrokerAPI:
    """The broker API of ``conn_id``: its hook (``get_hook(hook_params={"allow_live": allow_live})``), checked
    against :class:`~airflow_provider_portfolio.trading.brokers.api.BrokerAPI`.

    Nothing is sent; the hook reads its connection when first used (``is_live`` is read by the check). Refusing
    a live account without ``allow_live`` before anything is sent is the caller's part, as is the warning; the
    hook itself also refuses to post then.

    :param conn_id: a broker connection (type ``alpaca``).
    :param allow_live: let a live account trade (the operator's explicit opt-in).
    :raises InvalidInputError: when the connection does not exist, or its type's hook is not a broker API (the
        message names the connection, its type and what the hook lacks).
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    from airflow_provider_portfolio.trading.brokers.api import BrokerAPI

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise InvalidInputError(f"broker connection {conn_id!r} does not exist") from None
    try:
        hook = conn.get_hook(hook_params={"allow_live": bool(allow_live)})
        lacks = missing_members(hook, BROKER_MEMBERS)
    except TypeError:  # a hook that takes no allow_live: build it plainly, to say what it lacks
        hook = connection_hook(conn, serves="broker API", members=BROKER_MEMBERS)
        lacks = missing_members(hook, BROKER_MEMBERS) or ["allow_live"]
    except Exception:  # no hook for the type: the message names the connection and type
        hook = connection_hook(conn, serves="broker API", members=BROKER_MEMBERS)
        lacks = missing_members(hook, BROKER_MEMBERS)
    if lacks or not isinstance(hook, BrokerAPI):
        raise InvalidInputError(
            f"broker connection {conn_id!r} has type {conn.conn_type!r}, whose hook {type(hook).__name__} is no "
            f"broker API (it lacks {', '.join(lacks) or 'a member of BrokerAPI'}); broker connection types: "
            f"{', '.join(provider_types(BROKER_MEMBERS)) or 'none'}"
        )
    return hook
