"""A cycle's inputs as arrays: per-symbol panels of closed bars and the three signals computed on them.
Plain Python."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.trading.signals import Signal, forecast_signal, sentiment_signal, technical_signal


def panels_of(bars: pd.DataFrame, symbols: Sequence[str], lookback: int) -> dict[str, np.ndarray]:
    """(symbols, lookback) close/high/low panels, right-aligned, NaN-padded on the left; and last ts."""
    n = len(symbols)
    out: dict[str, np.ndarray] = {k: np.full((n, lookback), np.nan) for k in ("close", "high", "low")}
    last_ts = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    ordered = bars[bars["symbol"].isin(symbols)] if not bars.empty else bars
    if not ordered.empty:
        ordered = ordered.sort_values(["symbol", "ts"]).groupby("symbol", sort=False).tail(lookback)
        groups = ordered.groupby("symbol", sort=False)
        row = pd.Index(symbols).get_indexer(ordered["symbol"])
        col = lookback - groups["ts"].transform("size").to_numpy() + groups.cumcount().to_numpy()
        for k in out:
            out[k][row, col] = ordered[k].to_numpy(dtype=np.float64)
        ts_ns = pd.DatetimeIndex(ordered["ts"]).as_unit("ns").asi8
        last = np.r_[ordered["symbol"].to_numpy()[1:] != ordered["symbol"].to_numpy()[:-1], True]
        last_ts[row[last]] = ts_ns[last]
    out["last_ts"] = last_ts
    return out


ForecastInputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, str]]


def _forecast_inputs(symbols: Sequence[str], last_close: np.ndarray, forecasts: pd.DataFrame | None,
                     evaluations: pd.DataFrame | None, now: datetime) -> ForecastInputs:
    """Expected log-return, band and health per symbol from the stored step-1 forecasts; reasons for the
    symbols whose forecast is missing or stale."""
    n = len(symbols)
    er, lo, hi = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    healthy = np.zeros(n, dtype=bool)
    notes: dict[int, str] = {}
    if forecasts is None or forecasts.empty:
        return er, lo, hi, healthy, dict.fromkeys(range(n), "no stored forecast: ignored")
    first = forecasts[forecasts["step"] == 1].drop_duplicates("symbol", keep="last").set_index("symbol")
    first = first.reindex(list(symbols))
    have = first["point"].notna().to_numpy()
    asof = pd.to_datetime(first["asof"], utc=True)
    delta = first["timeframe"].map(lambda t: parse_timeframe(t).delta if isinstance(t, str) else pd.NaT)
    grace = first["timeframe"].map(lambda t: pd.Timedelta(days=3) if t == "1Day" else pd.Timedelta(0))
    now_ts = pd.Timestamp(now)
    future = have & (asof + delta > now_ts).to_numpy()  # made on a bar not closed at ``now``: the future
    stale = have & ~future & (pd.to_datetime(first["target_ts"], utc=True) + delta + grace <= now_ts).to_numpy()
    for i in np.flatnonzero(~have):
        notes[int(i)] = "no stored forecast: ignored"
    for i in np.flatnonzero(future):
        notes[int(i)] = f"forecast made after this cycle's instant (on the bar {asof.iloc[i].isoformat()}): ignored"
    for i in np.flatnonzero(stale):
        notes[int(i)] = f"stale forecast (made at {asof.iloc[i].isoformat()}): ignored"
    use = have & ~future & ~stale & np.isfinite(last_close) & (last_close > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        base = np.log(np.where(use, last_close, 1.0))
    for name, arr in (("point", er), ("lower", lo), ("upper", hi)):
        arr[use] = first[name].to_numpy(dtype=np.float64)[use] - base[use]
    if evaluations is not None and not evaluations.empty:
        health = dict(zip(evaluations["symbol"], evaluations["healthy"].astype(bool), strict=True))
        healthy[use] = [bool(health.get(s, False)) for s in np.asarray(symbols, dtype=object)[use]]
    return er, lo, hi, healthy, notes


def compute_signals(symbols: Sequence[str], panels: Mapping[str, np.ndarray], *, forecasts: pd.DataFrame | None,
                    evaluations: pd.DataFrame | None, news: Sequence[Any] | None, now: datetime,
                    half_life_hours: float = 24.0) -> dict[str, Signal]:
    """The ``technical``, ``forecast`` and ``sentiment`` signals of ``symbols`` (aligned with the panels)."""
    closes = panels["close"]
    last = closes[:, -1]
    technical = technical_signal(closes, high=panels["high"], low=panels["low"])
    er, lo, hi, healthy, notes = _forecast_inputs(symbols, last, forecasts, evaluations, now)
    forecast = forecast_signal(er, lo, hi, healthy)
    for i, note in notes.items():
        forecast.reason[i] = note
    sentiment = sentiment_signal(list(symbols), list(news or []), now, half_life_hours)
    return {"technical": technical, "forecast": forecast, "sentiment": sentiment}
