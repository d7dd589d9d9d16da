"""The one canonical bar frame, and timeframes.

A bar frame is a ``pandas.DataFrame`` with exactly the columns of :data:`BAR_COLUMNS`:

========= ======================== ==========================================================
column    dtype                    meaning
========= ======================== ==========================================================
symbol    str                      ticker as the desk writes it (``AAPL``, ``BTC/USD``)
timeframe str                      canonical timeframe (``1Min`` ... ``1Day``), see below
ts        datetime64[ns, UTC]      bar start; daily bars: midnight UTC of the session date
open      float64
high      float64
low       float64
close     float64
volume    float64                  float because crypto volumes are fractional
source    str                      the source that served the bar (``synthetic``, ``alpaca`` ...)
========= ======================== ==========================================================

Rows are sorted by (symbol, ts). Daily bars are labelled by their session date (midnight UTC of that
date) whatever the exchange's time zone, so a session is one key on every source; intraday bars are
labelled by their start instant in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError

BAR_COLUMNS: tuple[str, ...] = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "source")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
KEY_COLUMNS: tuple[str, ...] = ("symbol", "timeframe", "ts")

_TIMEFRAME_RE = re.compile(r"^(\d+)(Min|Hour|Day)$")
_UNIT_LIMITS = {"Min": 59, "Hour": 23, "Day": 1}
# A symbol: an equity ticker (BRK.B, RDS-A) or a crypto pair BASE/QUOTE.


@dataclass(frozen=True)
class Timeframe:
    """A bar length: ``amount`` of ``unit`` (``Min``, ``Hour`` or ``Day``)."""

    amount: int
    unit: str

    @property
    def name(self) -> str:
        """Canonical spelling, e.g. ``15Min``."""
        return f"{self.amount}{self.unit}"

    @property
    def is_daily(self) -> bool:
        return self.unit == "Day"

    @property
    def delta(self) -> pd.Timedelta:
        """Length of one bar (one day for daily bars)."""
        return pd.Timedelta(**{{"Min": "minutes", "Hour": "hours", "Day": "days"}[self.unit]: self.amount})


def parse_timeframe(value: str | Timeframe) -> Timeframe:
    """Parse ``"1Min"`` ... ``"59Min"``, ``"1Hour"`` ... ``"23Hour"``, ``"1Day"`` (Alpaca's spelling).

    :raises InvalidInputError: for anything else, listing what is accepted.
    """
    if isinstance(value, Timeframe):
        return value
    match = _TIMEFRAME_RE.match(str(value).strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        if 1 <= amount <= _UNIT_LIMITS[unit]:
            return Timeframe(amount, unit)
    raise InvalidInputError(
        f"unknown timeframe {value!r}: use NMin (1-59), NHour (1-23) or 1Day, e.g. '5Min', '1Hour', '1Day'"
    )


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows and the canonical dtypes."""
    return to_bar_frame(pd.DataFrame({c: [] for c in BAR_COLUMNS}))


def to_bar_frame(
    frame: pd.DataFrame,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    source: str | None = None,
) -> pd.DataFrame:
    """Coerce ``frame`` to the canonical bar frame: columns, dtypes, UTC timestamps, sort order.

    ``symbol``, ``timeframe`` and ``source`` fill (or overwrite) those columns when given. Naive
    timestamps are taken as UTC. Extra columns are dropped.

    :raises InvalidInputError: when a required column is missing.
    """
    out = frame.copy()
    for name, value in (("symbol", symbol), ("timeframe", timeframe), ("source", source)):
        if value is not None:
            out[name] = value
    missing = [c for c in BAR_COLUMNS if c not in out.columns]
    if missing:
        raise InvalidInputError(f"bar frame lacks column(s) {missing}; expected {list(BAR_COLUMNS)}")
    out = out.loc[:, list(BAR_COLUMNS)]
    ts = pd.to_datetime(out["ts"])
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    out["ts"] = ts.astype("datetime64[ns, UTC]")
    for col in VALUE_COLUMNS:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    for col in ("symbol", "timeframe", "source"):
        out[col] = out[col].astype(str)
    return out.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
