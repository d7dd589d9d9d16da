"""Checks of user parameters shared by the domain and the hooks: tickers and dates.

Pure Python and cheap to import (no pandas), so hook modules can use it at import time.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from airflow_provider_portfolio.exceptions import InvalidInputError

_SYMBOL_RE = re.compile(r"^(?:[A-Z][A-Z0-9]{0,5}(?:[.\-][A-Z0-9]{1,3})?|[A-Z0-9]{2,10}/[A-Z]{2,5})$")


def is_crypto(symbol: str) -> bool:
    """Crypto pairs are written ``BASE/QUOTE`` (``BTC/USD``) and trade around the clock."""
    return "/" in symbol


def validate_symbols(symbols: object) -> list[str]:
    """Check a symbol list before anything is fetched or written.

    Accepts a list or tuple of strings (a single comma-separated string is also accepted, since
    templated fields and Variables often render that way). Symbols are upper-cased and de-duplicated
    in order.

    :raises InvalidInputError: when ``symbols`` is not a list of strings, is empty, or holds a
        string that is not a ticker (``AAPL``, ``BRK.B``, ``BTC/USD``); the message names it.
    """
    if isinstance(symbols, str):
        items: list[object] = [part for part in symbols.split(",") if part.strip()]
    elif isinstance(symbols, (list, tuple)):
        items = list(symbols)
    else:
        raise InvalidInputError(f"symbols must be a list of tickers, got {type(symbols).__name__}: {symbols!r}")
    if not items:
        raise InvalidInputError("symbols is empty: give at least one ticker")
    seen: dict[str, None] = {}
    bad = []
    for item in items:
        if not isinstance(item, str):
            bad.append(repr(item))
            continue
        symbol = item.strip().upper()
        if not _SYMBOL_RE.match(symbol):
            bad.append(repr(item))
            continue
        seen.setdefault(symbol, None)
    if bad:
        raise InvalidInputError(
            f"not a ticker: {', '.join(bad)} (expected e.g. 'AAPL', 'BRK.B' or a crypto pair 'BTC/USD')"
        )
    return list(seen)


def validate_symbol(symbol: object) -> str:
    """Check one ticker (``AAPL``, ``BRK.B``, ``BTC/USD``); return it upper-cased.

    :raises InvalidInputError: when ``symbol`` is not a string holding one ticker.
    """
    if not isinstance(symbol, str) or "," in symbol:
        raise InvalidInputError(f"symbol must be one ticker string, got {type(symbol).__name__}: {symbol!r}")
    return validate_symbols([symbol])[0]


def utc_date(value: object, name: str) -> date:
    """The UTC date of a ``date``, a ``datetime`` (a naive one is taken as UTC) or an ISO string.

    :param name: the parameter's name, for the error message.
    :raises InvalidInputError: when ``value`` is none of those.
    """
    if isinstance(value, datetime):
        return (value.astimezone(timezone.utc) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise InvalidInputError(f"{name} must be a date like '2024-06-03', got {value!r}")


def utc_date_range(start: object, end: object) -> tuple[date, date]:
    """``start`` and ``end`` as UTC dates (see :func:`utc_date`).

    :raises InvalidInputError: when either is not a date or ``start`` is after ``end``.
    """
    first, last = utc_date(start, "start"), utc_date(end, "end")
    if first > last:
        raise InvalidInputError(f"start {first} is after end {last}")
    return first, last


def utc_day_window(start: object, end: object) -> tuple[datetime, datetime]:
    """[midnight UTC of start's date, midnight UTC after end's date), checked like :func:`utc_date_range`."""
    first, last = utc_date_range(start, end)
    lo = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    return lo, datetime(last.year, last.month, last.day, tzinfo=timezone.utc) + timedelta(days=1)
