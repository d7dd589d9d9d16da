"""Orders and their ids: the one function that derives a client order id from a decision.

A client order id is a pure function of the decision it carries out: the DAG, the run, the symbol,
the bar the decision was made on and the side. Every retry of the same task (an Airflow retry, an SDK
re-send after a timeout or a 504, a crash between submit and record) computes the same id, so the
broker (Alpaca, or the simulated broker, which enforces the same uniqueness) sees one order per
decision, and on any doubt the broker is asked for that id before anything is re-sent.

Format: ``pf-<SYMBOL>-<b|s>-<hash>``, at most 48 characters of ``[A-Za-z0-9_.-]`` (Alpaca's limit is
128; 48 leaves room and reads well in a broker's UI): ``SYMBOL`` is the ticker with anything but
letters and digits removed, cut to 8 characters (for people; uniqueness comes from the hash), and
``hash`` the first 32 hex digits (128 bits) of the SHA-256 of the decision's fields joined by the
unit separator ``\\x1f``. The bar is written as ISO 8601 UTC with microseconds, so equal instants in
different time zones give the same id.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from airflow_provider_portfolio.exceptions import InvalidInputError

#: Longest id this function makes.
MAX_CLIENT_ORDER_ID = 48
SIDES = ("buy", "sell")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def _bar_text(bar: object) -> str:
    if isinstance(bar, str):
        try:
            bar = datetime.fromisoformat(bar.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"bar must be an ISO 8601 instant with a time zone, got {bar!r}") from None
    if not isinstance(bar, datetime):  # pandas.Timestamp is a datetime
        raise InvalidInputError(f"bar must be a datetime or ISO 8601 string, got {type(bar).__name__}")
    if bar.tzinfo is None or bar.utcoffset() is None:
        raise InvalidInputError(f"bar must be time-zone aware, got {bar!r}")
    return bar.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def client_order_id(dag_id: str, run_id: str, symbol: str, bar: object, side: str) -> str:
    """The client order id of the decision (``dag_id``, ``run_id``, ``symbol``, ``bar``, ``side``).

    :param dag_id: the DAG deciding.
    :param run_id: its run (retries of a task share it).
    :param symbol: ticker or crypto pair.
    :param bar: the bar decided on: an aware datetime or an ISO 8601 string with a zone.
    :param side: ``buy`` or ``sell``.
    :raises InvalidInputError: for an empty field, a naive bar or an unknown side.
    """
    fields = {"dag_id": dag_id, "run_id": run_id, "symbol": symbol, "side": side}
    for name, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise InvalidInputError(f"{name} must be a non-empty string, got {value!r}")
    side = side.strip().lower()
    if side not in SIDES:
        raise InvalidInputError(f"side must be one of {SIDES}, got {fields['side']!r}")
    symbol = symbol.strip().upper()
    key = "\x1f".join([dag_id.strip(), run_id.strip(), symbol, _bar_text(bar), side])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    readable = _NOT_ALNUM.sub("", symbol)[:8] or "X"
    return f"pf-{readable}-{side[0]}-{digest}"
