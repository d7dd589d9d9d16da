"""Bar timing, as calendar knowledge: when a bar has started and closed, which bar a calendar expects last,
the session close "today's loss" is measured from, and how far back a look-back of bars reaches.

A bar has *started* when its session opened (a daily bar stamped at midnight UTC starts at the session's
open, not at its stamp) and *closed* at its end (:func:`~airflow_provider_portfolio.market.calendar.bar_times`
is the one rule). A decision uses closed bars only; a fill uses the open of a bar that started after the
order. Plain Python: never imports Airflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.calendar import (
    ALWAYS_OPEN,
    DEFAULT_EXCHANGE,
    MarketCalendar,
    bar_times,
    calendar_for_symbol,
)
from airflow_provider_portfolio.market.params import is_crypto


def closed_bars(bars: pd.DataFrame, now: datetime, timeframe: str, exchange: str = DEFAULT_EXCHANGE) -> pd.DataFrame:
    """The rows of ``bars`` (one timeframe) whose bar has closed by ``now`` (their closes are known)."""
    if bars.empty:
        return bars
    _, ends = bar_times(bars.assign(timeframe=timeframe), exchange)
    return bars[ends <= pd.Timestamp(now).as_unit("ns").value].reset_index(drop=True)


def started_bars(bars: pd.DataFrame, now: datetime, exchange: str = DEFAULT_EXCHANGE) -> pd.DataFrame:
    """The rows of ``bars`` whose bar has started by ``now`` (their opens are known): a daily bar once its
    session has opened, not at its midnight-UTC timestamp."""
    if bars.empty:
        return bars
    starts, _ = bar_times(bars, exchange)
    return bars[starts <= pd.Timestamp(now).as_unit("ns").value].reset_index(drop=True)


def expected_last_bar(symbol: str, now: datetime, timeframe: str, exchange: str = DEFAULT_EXCHANGE,
                      back: int = 0) -> pd.Timestamp | None:
    """The latest bar of ``symbol``'s calendar closed by ``now`` (``back`` bars earlier), or ``None``."""
    calendar = calendar_for_symbol(symbol, exchange)
    now_ts = pd.Timestamp(now)
    index = calendar.bar_index(now_ts - pd.Timedelta(days=10 + back), now_ts, timeframe)
    _, ends = calendar.bar_bounds(index.as_unit("ns").asi8, timeframe)
    done = index[ends <= now_ts.as_unit("ns").value]
    return done[-1 - back] if len(done) > back else None


def loss_reference(latest_end: int | None, symbols: Sequence[str], now: datetime, exchange: str) -> pd.Timestamp:
    """The instant "today's loss" is measured from: the close of the session before the one the cycle's latest
    closed bar belongs to (on ``exchange``'s calendar; on the 24/7 calendar for an all-crypto universe).

    Intraday bars at 10:30 New York: yesterday's close. Daily bars at 15:00, when yesterday's bar is the last
    closed one: the close before it, so the loss of the last session the book could see is what is limited
    (a daily-bar book is valued at closes only). A cycle with no closed bar measures from the last close
    before ``now``.

    :param latest_end: when the cycle's latest closed bar ended, int64 ns UTC (``None``: no closed bar).
    """
    calendar = MarketCalendar(ALWAYS_OPEN if symbols and all(is_crypto(s) for s in symbols) else exchange)
    latest = pd.Timestamp(now).as_unit("ns").value if latest_end is None else int(latest_end)
    _, _, closes = calendar.session_bounds(pd.Timestamp(latest) - pd.Timedelta(days=15), pd.Timestamp(latest))
    before = closes[closes < latest]
    return pd.Timestamp(int(before[-1]) if before.size else latest, tz="UTC")


def closes_at(closed: pd.DataFrame, ends: np.ndarray, instant: pd.Timestamp) -> dict[str, float]:
    """symbol -> the close of its last bar that had closed by ``instant``.

    :param ends: when each row of ``closed`` ended, int64 ns UTC (:func:`bar_times`).
    """
    done = closed[ends <= instant.as_unit("ns").value]
    last = done.sort_values(["symbol", "ts"]).groupby("symbol", sort=False).tail(1)
    return {str(s): float(c) for s, c in zip(last["symbol"], last["close"], strict=True)}



def day_start(now: datetime, exchange: str) -> datetime:
    """Midnight of ``now``'s date in the exchange's time zone, as UTC: the trading day's start."""
    local = pd.Timestamp(now).tz_convert(MarketCalendar(exchange).timezone)
    return local.normalize().tz_convert("UTC").to_pydatetime()


def history_days(timeframe: str, bars: int) -> int:
    """Calendar days to fetch for ``bars`` bars of ``timeframe`` on an equities calendar (weekends, holidays)."""
    tf = parse_timeframe(timeframe)
    per_day = 1.0 if tf.is_daily else max(390.0 / (tf.delta.total_seconds() / 60.0), 1.0)
    return int(math.ceil(bars / per_day * 7 / 5 * 1.1)) + 5
