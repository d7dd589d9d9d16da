"""Checks of user parameters shared by the domain and the hooks: tickers, dates and instants.

Pure Python and cheap to import (no pandas), so hook modules can use it at import time.

Templated operator arguments arrive as text, and a template that rendered nothing arrives as ``"None"``
(Jinja's rendering of ``None``), ``"null"`` (JSON's) or ``""``. Where a value is required, those are
refused as "rendered empty" rather than read as a ticker ``NONE`` or an unreadable date.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import ensure_utc, is_aware, utc_date_of, utc_now

_SYMBOL_RE = re.compile(r"^(?:[A-Z][A-Z0-9]{0,5}(?:[.\-][A-Z0-9]{1,3})?|[A-Z0-9]{2,10}/[A-Z]{2,5})$")

#: What a template or Variable that gave nothing renders to (compared stripped and lower-cased).
RENDERED_EMPTY = frozenset({"", "none", "null"})
#: The earliest instant a user-given date may name.
EARLIEST_INSTANT = datetime(1900, 1, 1, tzinfo=timezone.utc)
#: How far after the clock a user-given date may lie by default: clock skew and "the end of this week",
#: not a typo's year 2999.
MAX_AHEAD = timedelta(days=7)
_INSTANT_EXAMPLE = "such as '2024-06-03' or '2024-06-03T15:30:00+00:00'"


def rendered_empty(value: object) -> bool:
    """Whether ``value`` is what a template that rendered nothing gives: ``None``, ``""``, ``"None"``, ``"null"``."""
    return value is None or (isinstance(value, str) and value.strip().lower() in RENDERED_EMPTY)


def is_crypto(symbol: str) -> bool:
    """Crypto pairs are written ``BASE/QUOTE`` (``BTC/USD``) and trade around the clock."""
    return "/" in symbol


def validate_symbols(symbols: object) -> list[str]:
    """Check a symbol list before anything is fetched or written.

    Accepts a list or tuple of strings (a single comma-separated string is also accepted, since
    templated fields and Variables often render that way). Symbols are upper-cased and de-duplicated
    in order.

    :raises InvalidInputError: when ``symbols`` is not a list of strings, is empty or rendered empty
        (``""``, ``"None"``, ``"null"``, or such an item: a template, Variable or XCom that gave nothing), or
        holds a string that is not a ticker (``AAPL``, ``BRK.B``, ``BTC/USD``); the message names it.
    """
    if isinstance(symbols, str):
        items: list[object] = [part for part in symbols.split(",") if part.strip()]
    elif isinstance(symbols, (list, tuple)):
        items = list(symbols)
    else:
        raise InvalidInputError(f"symbols must be a list of tickers, got {type(symbols).__name__}: {symbols!r}")
    if not items or any(rendered_empty(item) for item in items):
        raise InvalidInputError(
            f"symbols rendered empty ({symbols!r}): a template, Variable or XCom gave no ticker; "
            "give at least one ticker such as 'AAPL'"
        )
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
    if rendered_empty(symbol):
        raise InvalidInputError(f"symbol rendered empty ({symbol!r}): a template, Variable or XCom gave no ticker")
    return validate_symbols([symbol])[0]


def utc_date(value: object, name: str) -> date:
    """The UTC date of a ``date``, a ``datetime`` (a naive one is taken as UTC) or an ISO string.

    :param name: the parameter's name, for the error message.
    :raises InvalidInputError: when ``value`` is none of those.
    """
    if isinstance(value, datetime):
        return utc_date_of(value, naive_is_utc=True)
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


def parse_instant(
    value: object,
    name: str,
    *,
    now: datetime | None = None,
    max_ahead: timedelta = MAX_AHEAD,
    naive_is_utc: bool = True,
) -> datetime:
    """A user-given date or instant as an aware UTC ``datetime``, refused clearly when it is not a sane one.

    Reads a ``datetime`` (``pandas.Timestamp`` and pendulum too), a ``date`` (midnight UTC) or ISO 8601
    text: ``2024-06-03``, ``2024-06-03T15:30:00Z``, ``2024-06-03 11:30-04:00``. Nothing else: no
    ``"yesterday"``, no epoch numbers.

    :param value: the value as given (a rendered template is text).
    :param name: the parameter's name, for the messages.
    :param now: the clock (default: the current time, UTC).
    :param max_ahead: how far after ``now`` the value may lie (default :data:`MAX_AHEAD`, 7 days).
    :param naive_is_utc: a date-time without an offset means UTC; ``False`` refuses it (a date alone
        still means midnight UTC).
    :raises InvalidInputError: naming ``name``, when ``value`` rendered empty (``None``, ``""``,
        ``"None"``, ``"null"``), is not ISO 8601, lacks a zone where one is needed, is before
        :data:`EARLIEST_INSTANT` (1900-01-01) or more than ``max_ahead`` after ``now``.
    """
    if rendered_empty(value):
        raise InvalidInputError(f"{name} rendered empty ({value!r}): a template, Variable or XCom gave no value; "
                                f"give an ISO 8601 date or instant {_INSTANT_EXAMPLE}")
    instant: datetime | None = None
    if isinstance(value, datetime):
        instant = value
    elif isinstance(value, date):
        instant = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    elif isinstance(value, str):
        text = value.strip()
        try:
            day = date.fromisoformat(text)
            instant = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        except ValueError:
            try:
                instant = datetime.fromisoformat(text)
            except ValueError:
                instant = None
    if instant is None:
        raise InvalidInputError(f"{name} must be an ISO 8601 date or instant {_INSTANT_EXAMPLE}, got {value!r}")
    if not is_aware(instant) and not naive_is_utc:
        raise InvalidInputError(f"{name} must carry a time zone, got {value!r}: write e.g. "
                                "'2024-06-03T15:30:00+00:00' or '2024-06-03T11:30:00-04:00'")
    instant = ensure_utc(instant, name, naive_is_utc=True)
    if instant < EARLIEST_INSTANT:
        raise InvalidInputError(f"{name} {instant.isoformat()} is before {EARLIEST_INSTANT.date()}: "
                                "give a date within the market's history")
    clock = ensure_utc(now or utc_now(), "now")
    if instant > clock + max_ahead:
        raise InvalidInputError(f"{name} {instant.isoformat()} is more than {_span(max_ahead)} after now "
                                f"({clock.replace(microsecond=0).isoformat()}): a date that far ahead is a typo or a "
                                "template gone wrong")
    return instant


def _span(delta: timedelta) -> str:
    """``7 days``, ``1 day``, or the ``timedelta`` text for other spans."""
    if delta.days > 0 and not delta.seconds and not delta.microseconds:
        return f"{delta.days} day{'s' if delta.days != 1 else ''}"
    return str(delta)


def json_object(value: object, setting: str, *, example: str, what: str) -> dict:
    """A setting that holds a JSON object (a Variable, a templated argument): parsed when it is text, ``{}`` when it is
    missing or blank. The one parser of the desk's JSON settings; each caller checks the keys and values.

    :param value: the setting as given or rendered (text, a mapping, or ``None``).
    :param setting: how messages name it (e.g. the Variable's name).
    :param example: a small JSON object shown when the text is not JSON.
    :param what: what its keys are (``"thresholds"``, ``"table -> days"``), shown when it is not an object.
    :raises InvalidInputError: naming ``setting`` and the value, for text that is not JSON or anything but an object.
    """
    import json
    from collections.abc import Mapping

    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise InvalidInputError(f"{setting} must be a JSON object such as {example}; got {value!r} ({err})") \
                from None
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{setting} must be a JSON object of {what}, got {value!r}")
    return dict(value)
