"""Instants in UTC: the one set of helpers for nanoseconds, aware datetimes, UTC dates and the clock.

Every module of the provider speaks two forms of an instant: a tz-aware :class:`~datetime.datetime`
(at the edges: parameters, XCom, Airflow) and int64 nanoseconds since the epoch, UTC (inside: calendar
arrays, bar timestamps, schedules). These helpers convert between them, one way everywhere:

- :func:`to_ns` / :func:`from_ns`: one instant (``datetime`` <-> ``int``); :func:`timedelta_ns` for a
  duration. ``from_ns`` floors to the microsecond (a ``datetime`` holds no nanoseconds).
- :func:`to_ns_array` / :func:`from_ns_array`: many instants (a Series, DatetimeIndex or array <->
  ``int64`` array), naive values taken as UTC; with ``coerce=True`` unreadable values become
  :data:`NAT_NS`.
- :func:`ensure_utc` and :func:`is_aware`: the check that an instant carries a time zone, with one
  message that says how to write one.
- :func:`utc_date_of`: the UTC calendar date of an instant; :func:`utc_now`: the clock.

Importing this module is cheap (standard library only): numpy and pandas are imported by the array
functions when called, so sensors, triggers and timetables can use it at DAG parse time.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from airflow_provider_portfolio.exceptions import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "DEFAULT_EXCHANGE", "EPOCH", "NAT_NS", "UTC", "ensure_utc", "from_ns", "from_ns_array", "is_aware",
    "timedelta_ns", "to_ns", "to_ns_array", "utc_date_of", "utc_now",
]

UTC = timezone.utc
#: 1970-01-01 00:00 UTC.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: What a missing instant (``NaT``) is in int64 nanoseconds.
NAT_NS = -(2**63)
#: The exchange calendar of equities when none is given. Public spelling:
#: :data:`airflow_provider_portfolio.market.calendar.DEFAULT_EXCHANGE`; it is defined here, in a module
#: that imports nothing heavy, so that modules read at DAG parse time (trading windows, the timetable,
#: the provider config) can use it without loading pandas.
DEFAULT_EXCHANGE = "XNYS"

_NS_PER_S = 1_000_000_000
_DAY_S = 86_400


def is_aware(value: object) -> bool:
    """Whether ``value`` is a ``datetime`` with a time zone (``pandas.Timestamp`` and pendulum included)."""
    return isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None


def ensure_utc(value: object, param: str = "at", *, naive_is_utc: bool = False) -> datetime:
    """``value`` as an aware ``datetime`` in UTC.

    :param value: a ``datetime`` (``pandas.Timestamp`` and pendulum's ``DateTime`` are ones).
    :param param: the parameter's name, for the error message.
    :param naive_is_utc: take a naive ``datetime`` as UTC instead of refusing it.
    :return: a ``pandas.Timestamp`` stays one (its nanoseconds kept); any other ``datetime`` subclass becomes a
        plain ``datetime``: pendulum's ``DateTime`` (what Airflow hands tasks) in a standard-library zone drops the
        zone in arithmetic (``instant - timedelta(days=30)`` would be naive).
    :raises InvalidInputError: when ``value`` is not a ``datetime``, or is naive (unless ``naive_is_utc``).
    """
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{param} must be a timezone-aware datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        if not naive_is_utc:
            raise InvalidInputError(
                f"{param} must be timezone-aware, got naive {value!r}: "
                "pass e.g. datetime(2024, 7, 3, 15, 0, tzinfo=timezone.utc)"
            )
        out = value.replace(tzinfo=UTC)
    else:
        out = value.astimezone(UTC)
    if type(out) is not datetime and not hasattr(out, "nanosecond"):  # a subclass, not a pandas.Timestamp
        out = datetime(out.year, out.month, out.day, out.hour, out.minute, out.second, out.microsecond, tzinfo=UTC)
    return out


def timedelta_ns(delta: timedelta) -> int:
    """A duration as int nanoseconds (exact)."""
    return (delta.days * _DAY_S + delta.seconds) * _NS_PER_S + delta.microseconds * 1000


def to_ns(value: object, param: str = "at", *, naive_is_utc: bool = False) -> int:
    """An instant as int nanoseconds since the epoch, UTC (exact, a ``pandas.Timestamp``'s nanoseconds kept).

    :param value: an aware ``datetime`` (a naive one only with ``naive_is_utc``).
    :param param: the parameter's name, for the error message.
    :param naive_is_utc: take a naive ``datetime`` as UTC instead of refusing it.
    :raises InvalidInputError: as :func:`ensure_utc`.
    """
    if isinstance(value, datetime) and value.tzinfo is None and naive_is_utc:
        value = value.replace(tzinfo=UTC)
    elif not is_aware(value):
        ensure_utc(value, param)  # raises the one message
    assert isinstance(value, datetime)  # ensure_utc raised for anything else
    # utctimetuple() converts to UTC alike for datetime, pandas.Timestamp and pendulum's DateTime.
    seconds = calendar.timegm(value.utctimetuple())
    return seconds * _NS_PER_S + value.microsecond * 1000 + int(getattr(value, "nanosecond", 0) or 0)


def from_ns(ns: int) -> datetime:
    """Int nanoseconds since the epoch as an aware UTC ``datetime``, floored to the microsecond."""
    return EPOCH + timedelta(microseconds=int(ns) // 1000)


def utc_date_of(value: datetime | int, *, naive_is_utc: bool = False) -> date:
    """The UTC calendar date of an instant.

    :param value: an aware ``datetime`` (a naive one only with ``naive_is_utc``), or int nanoseconds UTC.
    :raises InvalidInputError: for a naive ``datetime`` unless ``naive_is_utc``, or another type.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return from_ns(value).date()
    return ensure_utc(value, "instant", naive_is_utc=naive_is_utc).date()


def utc_now() -> datetime:
    """The current instant, an aware UTC ``datetime``: the one clock of the provider's domain code."""
    return datetime.now(UTC)


def to_ns_array(values: object, *, coerce: bool = False) -> np.ndarray:
    """Instants (a Series, DatetimeIndex, datetime array or list) as a new int64 nanosecond array, UTC.

    Naive values are taken as UTC; aware ones are converted. Missing values are :data:`NAT_NS`.

    :param values: the instants.
    :param coerce: read text and other non-datetime values leniently: what cannot be read becomes
        :data:`NAT_NS` instead of raising.
    """
    import numpy as np
    import pandas as pd

    dtype = getattr(values, "dtype", None)
    if coerce and not isinstance(dtype, pd.DatetimeTZDtype) and getattr(dtype, "kind", None) != "M":
        values = pd.to_datetime(values, errors="coerce", utc=True)
    index = pd.DatetimeIndex(values)
    index = index.tz_localize(UTC) if index.tz is None else index.tz_convert(UTC)
    return np.array(index.as_unit("ns").asi8, dtype=np.int64, copy=True)


def from_ns_array(ns: object, name: str | None = None) -> pd.DatetimeIndex:
    """Int64 nanoseconds UTC as a ``DatetimeIndex`` in UTC (``datetime64[ns, UTC]``).

    :param ns: int64 nanoseconds since the epoch (:data:`NAT_NS` for missing).
    :param name: the index's name.
    """
    import numpy as np
    import pandas as pd

    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("M8[ns]"), name=name).tz_localize(UTC)
