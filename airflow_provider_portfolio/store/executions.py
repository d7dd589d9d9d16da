"""Executions in the portfolio store: each filled order with its reference price, for transaction-cost studies.

:func:`read_executions` joins the ledger's ``orders`` (the decision's reference price ``ref_price``, the side, the
broker's filled quantity and average price) with ``fills`` (the simulated broker's fill price and commission) in one
bounded read. Every order with a filled quantity counts: the simulated broker's (a ``fills`` row: its price, quantity
and commission) and a real broker's (no ``fills`` row: the order's ``filled_avg_price`` and ``filled_qty``, commission
unknown). The window goes by the order's ``created_at``, the cycle's instant (the desk's clock, a replay's included).
Plain Python: never imports Airflow.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import and_, func, select

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import ensure_utc
from airflow_provider_portfolio.store import schema
from airflow_provider_portfolio.store.codecs import _ts_us

if TYPE_CHECKING:
    from airflow_provider_portfolio.store.database import Database

__all__ = ["DEFAULT_EXECUTIONS_LIMIT", "EXECUTION_COLUMNS", "MAX_EXECUTIONS_LIMIT", "read_executions"]

#: Executions :func:`read_executions` returns when not told, and the most it returns.
DEFAULT_EXECUTIONS_LIMIT = 100_000
MAX_EXECUTIONS_LIMIT = 1_000_000
#: Columns of the frame :func:`read_executions` returns.
EXECUTION_COLUMNS: tuple[str, ...] = ("account", "client_order_id", "dag_id", "symbol", "side", "ref_price", "qty",
                                      "price", "commission", "created_at", "filled_bar_ts", "status")


def read_executions(database: Database, *, account: str | None = None, since: datetime | None = None,
                    until: datetime | None = None, limit: int = DEFAULT_EXECUTIONS_LIMIT) -> pd.DataFrame:
    """Filled orders (filled quantity > 0), newest first (by ``created_at``), at most ``limit``.

    :param database: the store's database (``PortfolioStore.database``).
    :param account: one ledger account (``simulated:default``, ``alpaca:alpaca_default``); ``None``: all.
    :param since: only orders created at or after this instant.
    :param until: only orders created at or before this instant.
    :param limit: the most returned, 1 to :data:`MAX_EXECUTIONS_LIMIT`.
    :return: :data:`EXECUTION_COLUMNS`: ``qty`` and ``price`` of the fill (the broker's filled quantity and average
        price when no ``fills`` row exists), ``commission`` NaN when unknown, ``created_at`` (the cycle's instant) and
        ``filled_bar_ts`` (the bar filled at; NaT when unknown) as ``datetime64[ns, UTC]``.
    :raises InvalidInputError: for a bad account, instant or limit.
    :raises StoreError: when the store cannot be read. A store without the ledger gives an empty frame.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_EXECUTIONS_LIMIT:
        raise InvalidInputError(f"limit must be a whole number from 1 to {MAX_EXECUTIONS_LIMIT}, got {limit!r}")
    o, f = schema.orders.c, schema.fills.c
    where: list[Any] = [o.filled_qty > 0, o.filled_avg_price.is_not(None)]
    if account is not None:
        if not isinstance(account, str) or not account.strip():
            raise InvalidInputError(f"account must be a ledger account name such as 'simulated:default', got "
                                    f"{account!r}")
        where.append(o.account == account)
    if since is not None:
        where.append(o.created_at >= ensure_utc(since, "since"))
    if until is not None:
        where.append(o.created_at <= ensure_utc(until, "until"))
    cols = [o.account, o.client_order_id, o.dag_id, o.symbol, o.side, o.ref_price,
            func.coalesce(f.qty, o.filled_qty), func.coalesce(f.price, o.filled_avg_price), f.commission,
            _ts_us(database.dialect, o.created_at), _ts_us(database.dialect, f.bar_ts), o.status]
    stmt = (select(*cols).select_from(schema.orders.outerjoin(
        schema.fills, and_(f.account == o.account, f.client_order_id == o.client_order_id)))
        .where(*where).order_by(o.created_at.desc(), o.account, o.client_order_id).limit(limit))
    with database.read("read the executions") as conn:
        ready = database.has_table(conn, schema.orders.name) and database.has_table(conn, schema.fills.name)
        rows = conn.execute(stmt).all() if ready else []
    data = list(zip(*rows, strict=True)) if rows else [()] * len(EXECUTION_COLUMNS)
    out: dict[str, Any] = {}
    for name, values in zip(EXECUTION_COLUMNS, data, strict=True):
        if name in ("created_at", "filled_bar_ts"):
            ns = np.array([-(2**63) if v is None else int(v) * 1000 for v in values], dtype=np.int64)
            out[name] = pd.Series(ns.view("datetime64[ns]")).dt.tz_localize("UTC")
        elif name in ("ref_price", "qty", "price", "commission"):
            out[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        else:
            out[name] = pd.Series(values, dtype="object")
    return pd.DataFrame(out, columns=list(EXECUTION_COLUMNS))
