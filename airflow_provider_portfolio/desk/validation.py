"""Signal validation: the desk's stored forecasts and trading signals against the bars that followed them.

:func:`validate_signals` is the job (the ``SignalValidationOperator`` calls it; so can a notebook or a container).
Each day it looks back ``lookback_days`` and validates everything in that window not validated yet, so the days a
run missed are filled by the next one, and a second run validates nothing new:

- every **forecast step** (``forecasts``: a model's run, symbol and step) whose target bar has closed by ``now`` and
  is stored. A ``log_close`` forecast is compared with the log close of its target bar: ``error = point - actual``,
  ``covered`` when the close lay in [``lower``, ``upper``], and a direction ``hit`` when the forecast and the
  outcome moved the same way from the log close of the ``asof`` bar (the last bar the model saw; no move on either
  side: no verdict). A ``log_return`` forecast (GARCH) is compared with the target bar's log return (its log close
  minus the previous calendar bar's): error and coverage, no direction (as in the forecast's own evaluation);
- every **trading decision** (``trading_decisions``) whose next bar has closed: the outcome is the *close-to-close*
  log return of the bar after the decided one (log close of the next calendar bar minus the decided bar's), and a
  ``hit`` when the sign of the decision's combined ``score`` (the signal's view, which a ``sell`` that only trims a
  long does not reverse) is the sign of that return (a zero score or return: no verdict). The decision's
  ``confidence`` is kept for calibration.

A target bar that has not closed yet is left for a later day (``pending``); a closed target bar that is not in the
store (an ETL gap) is ``missing`` and retried while it is in the window.

Bars nobody stores: given market-data ``sources``, the trading decisions whose decided and next bars are not both
stored (the intraday bars a trading cycle fetches and never stores, or an ETL gap) are validated on bars fetched from
them: one batched :meth:`~airflow_provider_portfolio.market.sources.FailoverChain.fetch_many` over those decisions'
symbols and dates, keeping only bars closed by ``now``. Both bars of a decision come from one place: the store when it
holds both, else the sources; fetched bars are never written to the store. A symbol no source serves leaves its
decisions ``missing`` (retried by a later run) and never fails the run; the report says which source served which
symbols and why the others were not. Forecasts are validated on stored bars only. Rows go to ``signal_validations`` in one
transaction (:meth:`~airflow_provider_portfolio.store.repository.PortfolioStore.append_validations`).

The figures cover the whole window, whatever run validated its rows, so a retry reports the same: per source
(``forecast:<model>``, ``signal:<dag_id>``) and per source and symbol, the hit rate, MAE and RMSE of the errors (of
log close for ``log_close`` models), the band coverage next to its nominal level (and their gap), and, for signals,
the calibration of confidence: ``calibration_bins`` equal bins of confidence over [0, 1], each with its count, mean
confidence and hit rate (a calibrated signal's hit rate grows with its confidence). They are stored as a study of
kind ``signal_validation`` (points ``<kind>:<source>`` and ``<kind>:<source>:<symbol>``) and returned as a
:class:`ValidationReport`. :func:`recent_validation` reads the figures of a recent window back (monitoring's
``validation_*`` checks use it).

Plain Python: never imports Airflow; NumPy and pandas are imported when a job runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, ensure_utc

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.market.sources import BarSource, FailoverChain
    from airflow_provider_portfolio.store.repository import PortfolioStore

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CALIBRATION_BINS", "DEFAULT_LOOKBACK_DAYS", "SIGNAL_OUTCOME", "VALIDATION_STUDY",
           "ValidationReport", "ValidationStats", "calibration", "recent_validation", "validate_signals"]

#: The kind of the study a validation run stores.
VALIDATION_STUDY = "signal_validation"
#: How far back a run validates by default (days).
DEFAULT_LOOKBACK_DAYS = 30
#: Bins of confidence of the calibration table by default.
DEFAULT_CALIBRATION_BINS = 5
#: What a trading signal is validated against.
SIGNAL_OUTCOME = "close_to_close_next_bar"
_KINDS = ("forecast", "signal")
_NEVER = 2**63 - 1


@dataclass(frozen=True)
class ValidationStats:
    """The validation figures of one source over a window (``None`` where undefined).

    :param kind: ``forecast`` or ``signal``.
    :param source: the model, or the trading DAG.
    :param target: ``log_close`` or ``log_return``.
    :param n: validated rows.
    :param hit_n: rows with a direction verdict; ``hit_rate`` is the share of hits among them.
    :param covered_n: rows with a band; ``coverage`` the share inside it, ``level`` their mean nominal coverage.
    :param mae: mean absolute error (forecasts); ``rmse`` its root mean square.
    :param last_asof: the newest forecast or decided bar validated.
    """

    kind: str
    source: str
    target: str
    n: int
    hit_n: int
    hit_rate: float | None
    covered_n: int
    coverage: float | None
    level: float | None
    mae: float | None
    rmse: float | None
    last_asof: datetime | None

    @property
    def coverage_gap(self) -> float | None:
        """How far coverage falls below the nominal level (``level - coverage``; negative: over-covered)."""
        return None if self.coverage is None or self.level is None else self.level - self.coverage

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON."""
        return {"kind": self.kind, "source": self.source, "target": self.target, "n": self.n, "hit_n": self.hit_n,
                "hit_rate": self.hit_rate, "covered_n": self.covered_n, "coverage": self.coverage,
                "level": self.level, "coverage_gap": self.coverage_gap, "mae": self.mae, "rmse": self.rmse,
                "last_asof": None if self.last_asof is None else self.last_asof.isoformat()}


@dataclass
class ValidationReport:
    """What :func:`validate_signals` did and found.

    :param study_id: the stored study (kind ``signal_validation``).
    :param ts: the run's instant.
    :param since: the window's start (``ts - lookback_days``).
    :param status: ``ok``, or ``insufficient_data`` when the window holds nothing validated.
    :param validated: rows validated by this run, by kind.
    :param pending: steps and decisions whose target bar had not closed, by kind (validated on a later day).
    :param missing: closed target bars not in the store, by kind (retried while in the window).
    :param sources: ``<kind>:<source>`` -> the window's figures (:meth:`ValidationStats.to_dict`, and for signals
        ``calibration``).
    :param symbols: symbols with validations in the window.
    :param message: one line for the log.
    :param fetched: symbol -> the source that served its bars (decisions whose bars the store lacks).
    :param fetch_failures: symbol -> why no source served its bars (its decisions stay ``missing``).
    """

    study_id: str
    ts: datetime
    since: datetime
    status: str
    validated: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    symbols: int = 0
    message: str = ""
    fetched: dict[str, str] = field(default_factory=dict)
    fetch_failures: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A small JSON summary (the operator's XCom): counts and the figures per source, not per symbol."""
        return {"study_id": self.study_id, "ts": self.ts.isoformat(), "since": self.since.isoformat(),
                "status": self.status, "validated": dict(self.validated), "pending": dict(self.pending),
                "missing": dict(self.missing), "sources": {k: dict(v) for k, v in self.sources.items()},
                "symbols": self.symbols, "message": self.message, "fetched": dict(self.fetched),
                "fetch_failures": sorted(self.fetch_failures)}


# -- inputs -------------------------------------------------------------------------------------------------
def _positive(value: object, name: str, most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 < value <= most:
        raise InvalidInputError(f"{name} must be a number of days > 0 and <= {most:g}, got {value!r}")
    return float(value)


def _kinds(kinds: object) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = [kinds]
    if not isinstance(kinds, Sequence) or not kinds or not all(k in _KINDS for k in kinds):
        raise InvalidInputError(f"kinds must be a non-empty list among {list(_KINDS)}, got {kinds!r}")
    return tuple(dict.fromkeys(kinds))


def _chain(sources: object) -> FailoverChain | None:
    """The failover chain over ``sources`` (``None`` or empty: none)."""
    from airflow_provider_portfolio.market.sources import FailoverChain

    if sources is None:
        return None
    if isinstance(sources, str | bytes) or not isinstance(sources, Sequence):
        raise InvalidInputError(f"sources must be a list of market-data sources, got {type(sources).__name__}")
    return FailoverChain(list(sources)) if sources else None


def _bins(bins: object) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 50:
        raise InvalidInputError(f"calibration_bins must be a whole number from 1 to 50, got {bins!r}")
    return bins


# -- bars and calendars -------------------------------------------------------------------------------------
class _Closes:
    """The stored closed bars: symbol -> (timestamps ns sorted, log closes)."""

    def __init__(self, bars: pd.DataFrame) -> None:
        import numpy as np

        from airflow_provider_portfolio.market.timeutil import to_ns_array

        self._by: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for symbol, group in bars.groupby("symbol", sort=False):
            ts = to_ns_array(group["ts"])
            order = np.argsort(ts, kind="stable")
            self._by[str(symbol)] = (ts[order], np.log(group["close"].to_numpy(dtype=np.float64)[order]))

    def at(self, symbol: str, ns: np.ndarray) -> np.ndarray:
        """The log close of each bar ``ns`` of ``symbol`` (NaN where not stored)."""
        import numpy as np

        ns = np.asarray(ns, dtype=np.int64)
        ts, lc = self._by.get(symbol, (np.empty(0, np.int64), np.empty(0)))
        if not len(ts):
            return np.full(len(ns), np.nan)
        pos = np.minimum(np.searchsorted(ts, ns), len(ts) - 1)
        return np.where(ts[pos] == ns, lc[pos], np.nan)


class _Calendars:
    """The calendar bars of one timeframe around a window, per calendar (equities share one)."""

    def __init__(self, start: pd.Timestamp, end: pd.Timestamp, timeframe: str, exchange: str) -> None:
        self.start, self.end, self.timeframe, self.exchange = start, end, timeframe, exchange
        self._bars: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _of(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np
        import pandas as pd

        from airflow_provider_portfolio.market.calendar import calendar_for_symbol

        calendar = calendar_for_symbol(symbol, self.exchange)
        if calendar.name not in self._bars:
            first = (self.start - pd.Timedelta(days=10)).tz_convert("UTC").tz_localize(None).normalize()
            last = (self.end + pd.Timedelta(days=10)).tz_convert("UTC").tz_localize(None).normalize()
            ns = np.sort(calendar.bar_index(first, last, self.timeframe).as_unit("ns").asi8)
            _, ends = calendar.bar_bounds(ns, self.timeframe)
            self._bars[calendar.name] = (ns, ends)
        return self._bars[calendar.name]

    def end_of(self, symbol: str, ns: np.ndarray) -> np.ndarray:
        """When each bar ``ns`` closes (int64 ns; never for a stamp that is not a bar of the calendar)."""
        import numpy as np

        bars, ends = self._of(symbol)
        ns = np.asarray(ns, dtype=np.int64)
        pos = np.minimum(np.searchsorted(bars, ns), len(bars) - 1)
        return np.where(bars[pos] == ns, ends[pos], _NEVER)

    def after(self, symbol: str, ns: np.ndarray) -> np.ndarray:
        """The calendar bar after each ``ns`` (``_NEVER`` past the window)."""
        import numpy as np

        bars, _ = self._of(symbol)
        pos = np.searchsorted(bars, np.asarray(ns, dtype=np.int64), side="right")
        return np.where(pos < len(bars), bars[np.minimum(pos, len(bars) - 1)], _NEVER)

    def before(self, symbol: str, ns: np.ndarray) -> np.ndarray:
        """The calendar bar before each ``ns`` (``_NEVER`` before the window)."""
        import numpy as np

        bars, _ = self._of(symbol)
        pos = np.searchsorted(bars, np.asarray(ns, dtype=np.int64), side="left") - 1
        return np.where(pos >= 0, bars[np.maximum(pos, 0)], _NEVER)


def _sign_hit(predicted: float, realised: float) -> bool | None:
    """Whether two moves have the same sign; ``None`` when either is zero or undefined."""
    if not (math.isfinite(predicted) and math.isfinite(realised)) or predicted == 0 or realised == 0:
        return None
    return (predicted > 0) == (realised > 0)


def _source_name(source: object) -> str:
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else type(source).__name__


def _opt(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


# -- validating ---------------------------------------------------------------------------------------------
def _validate_forecasts(frame: pd.DataFrame, closes: _Closes, calendars: _Calendars, now_ns: int,
                        counts: dict[str, int]) -> list[dict[str, Any]]:
    import pandas as pd

    from airflow_provider_portfolio.market.timeutil import to_ns_array

    rows: list[dict[str, Any]] = []
    for symbol, group in frame.groupby("symbol", sort=False):
        symbol = str(symbol)
        target_ns = to_ns_array(group["target_ts"])
        asof_ns = to_ns_array(group["asof"])
        closed = calendars.end_of(symbol, target_ns) <= now_ns
        actual_close = closes.at(symbol, target_ns)
        reference = closes.at(symbol, asof_ns)
        previous = closes.at(symbol, calendars.before(symbol, target_ns))
        for i, r in enumerate(group.itertuples(index=False)):
            if not closed[i]:
                counts["pending"] += 1
                continue
            if r.target == "log_return":
                actual = actual_close[i] - previous[i]
            else:
                actual = actual_close[i]
            if not math.isfinite(actual):
                counts["missing"] += 1
                continue
            point, lower, upper = float(r.point), float(r.lower), float(r.upper)
            ref = float(reference[i])
            hit = None if r.target == "log_return" or not math.isfinite(ref) else _sign_hit(point - ref, actual - ref)
            rows.append({
                "kind": "forecast", "source": r.model, "symbol": symbol, "timeframe": r.timeframe,
                "asof": pd.Timestamp(int(asof_ns[i]), tz="UTC"), "origin": r.run_id, "step": int(r.step),
                "target_ts": pd.Timestamp(int(target_ns[i]), tz="UTC"), "target": r.target, "point": point,
                "lower": lower, "upper": upper, "level": float(r.level), "reference": _opt(ref),
                "actual": float(actual), "error": point - float(actual), "hit": hit,
                "covered": bool(lower <= actual <= upper)})
    return rows


def _decided_bars(frame: pd.DataFrame, calendars: _Calendars,
                  now_ns: int) -> dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]]:
    """symbol -> (its decisions, their decided bars, the next bars, whether each next bar has closed by now)."""
    from airflow_provider_portfolio.market.timeutil import to_ns_array

    out = {}
    for symbol, group in frame.groupby("symbol", sort=False):
        bar_ns = to_ns_array(group["bar_ts"])
        next_ns = calendars.after(str(symbol), bar_ns)
        closed = (next_ns != _NEVER) & (calendars.end_of(str(symbol), next_ns) <= now_ns)
        out[str(symbol)] = (group, bar_ns, next_ns, closed)
    return out


@dataclass
class _Fetched:
    """Closed bars fetched from the sources, which source served each symbol, and why none served the others."""

    closes: _Closes
    served: dict[str, str]
    failed: dict[str, str]


def _fetch_unstored(chain: FailoverChain, frame: pd.DataFrame, closes: _Closes, calendars: _Calendars, now_ns: int,
                    timeframe: str, exchange: str) -> _Fetched | None:
    """The bars of the closed decisions whose two bars the store lacks: one batched call over their symbols and
    the dates from the first decided bar to the last next bar (``None`` when the store lacks none)."""
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.market.timing import closed_bars

    lacking: dict[str, tuple[int, int]] = {}
    for symbol, (_, bar_ns, next_ns, closed) in _decided_bars(frame, calendars, now_ns).items():
        stored = np.isfinite(closes.at(symbol, bar_ns)) & np.isfinite(closes.at(symbol, next_ns))
        need = closed & ~stored
        if need.any():
            lacking[symbol] = (int(bar_ns[need].min()), int(next_ns[need].max()))
    if not lacking:
        return None
    start = pd.Timestamp(min(a for a, _ in lacking.values()), tz="UTC").date()
    end = pd.Timestamp(max(b for _, b in lacking.values()), tz="UTC").date()
    batch = chain.fetch_many(sorted(lacking), start, end, timeframe)
    bars = batch.frame
    if len(bars):
        bars = bars[bars["timeframe"] == timeframe]
    log.info("signal validation: %d symbol(s) lack stored %s bars (%s..%s); served: %s; not served: %s",
             len(lacking), timeframe, start, end, batch.sources or "none", sorted(batch.failures) or "none")
    return _Fetched(_Closes(closed_bars(bars, pd.Timestamp(now_ns, tz="UTC"), timeframe, exchange)),
                    dict(batch.sources), batch.reasons())


def _validate_decisions(frame: pd.DataFrame, closes: _Closes, calendars: _Calendars, now_ns: int,
                        counts: dict[str, int], fetched: _Fetched | None = None) -> list[dict[str, Any]]:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for symbol, (group, bar_ns, next_ns, closed) in _decided_bars(frame, calendars, now_ns).items():
        base = closes.at(symbol, bar_ns)
        after = closes.at(symbol, next_ns)
        if fetched is not None:  # both bars from one place: the store when it holds both, else the sources
            base_f, after_f = fetched.closes.at(symbol, bar_ns), fetched.closes.at(symbol, next_ns)
        for i, r in enumerate(group.itertuples(index=False)):
            if not closed[i]:
                counts["pending"] += 1
                continue
            reference, actual = float(base[i]), float(after[i] - base[i])
            if not math.isfinite(actual) and fetched is not None:
                reference, actual = float(base_f[i]), float(after_f[i] - base_f[i])
                counts["fetched"] += math.isfinite(actual)
            if not math.isfinite(actual):
                counts["missing"] += 1
                continue
            score = _opt(r.score)
            confidence = _opt(r.confidence)
            rows.append({
                "kind": "signal", "source": r.dag_id, "symbol": symbol, "timeframe": r.timeframe,
                "asof": pd.Timestamp(int(bar_ns[i]), tz="UTC"), "origin": r.run_key, "step": 1,
                "target_ts": pd.Timestamp(int(next_ns[i]), tz="UTC"), "target": "log_return",
                "action": r.action, "score": score,
                "confidence": None if confidence is None else min(max(confidence, 0.0), 1.0),
                "reference": reference, "actual": actual,
                "hit": None if score is None else _sign_hit(score, actual)})
    return rows


# -- figures ------------------------------------------------------------------------------------------------
def calibration(confidence: Any, hit: Any, bins: int = DEFAULT_CALIBRATION_BINS) -> list[dict[str, Any]]:
    """The calibration table of confidence: ``bins`` equal bins over [0, 1] (the last one closed), each with
    ``lower``, ``upper``, ``n`` (rows with a confidence and a direction verdict in it), ``confidence`` (their mean)
    and ``hit_rate`` (``None`` for an empty bin).

    :param confidence: confidences in [0, 1] (NaN: left out).
    :param hit: direction verdicts aligned with them (1/0, ``True``/``False``; NaN or ``None``: left out).
    """
    import numpy as np
    import pandas as pd

    bins = _bins(bins)
    c = np.asarray(confidence, dtype=np.float64)
    h = np.array([np.nan if v is None or v is pd.NA else float(v) for v in hit], dtype=np.float64)
    if c.shape != h.shape:
        raise InvalidInputError(f"confidence and hit must have the same length, got {c.shape} and {h.shape}")
    ok = np.isfinite(c) & np.isfinite(h)
    c, h = c[ok], h[ok]
    index = np.minimum((np.clip(c, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        out.append({"lower": b / bins, "upper": (b + 1) / bins, "n": n,
                    "confidence": float(c[inside].mean()) if n else None,
                    "hit_rate": float(h[inside].mean()) if n else None})
    return out


def _stats(group: dict[str, Any]) -> ValidationStats:
    return ValidationStats(str(group["kind"]), str(group["source"]), str(group["target"]), int(group["n"]),
                           int(group["hit_n"]), group["hit_rate"], int(group["covered_n"]), group["coverage"],
                           group["level"], group["mae"], group["rmse"], group["last_asof"])


def recent_validation(store: PortfolioStore, *, now: datetime, days: float = DEFAULT_LOOKBACK_DAYS,
                      timeframe: str = "1Day", kind: str | None = None, source: str | None = None,
                      symbols: Sequence[str] | None = None) -> list[ValidationStats]:
    """The validation figures of each source (model or trading DAG) over the forecasts made and bars decided in the
    ``days`` before ``now``: one grouped read, whatever the window holds.

    :param now: the window's end (aware).
    :param days: its length.
    :param timeframe: the bars validated.
    :param kind: ``forecast`` or ``signal``; ``None``: both.
    :param source: one model or DAG id; ``None``: all.
    :param symbols: only these symbols; ``None``: all.
    :return: sorted by (kind, source, target).
    :raises InvalidInputError: for bad arguments.
    :raises StoreError: when the store cannot be read.
    """
    instant = ensure_utc(now, "now")
    since = instant - timedelta(days=_positive(days, "days", 3660))
    groups = store.validation_summary(since=since, until=instant, timeframe=timeframe, kind=kind, sources=source,
                                      symbols=symbols, by=("kind", "source", "target"))
    return [_stats(g) for g in groups]


def _figures(store: PortfolioStore, since: datetime, until: datetime, timeframe: str, symbols: list[str] | None,
             kinds: tuple[str, ...], bins: int) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], int]:
    """(figures per source, study points, symbols with validations) of the window."""
    from airflow_provider_portfolio.store.validations import MAX_VALIDATIONS_LIMIT

    per_source: dict[str, dict[str, Any]] = {}
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    for kind in kinds:
        groups = store.validation_summary(since=since, until=until, timeframe=timeframe, kind=kind, symbols=symbols,
                                          by=("kind", "source", "target"))
        cal: dict[str, list[dict[str, Any]]] = {}
        if kind == "signal" and groups:
            rows = store.validations("signal", symbols=symbols, timeframe=timeframe, since=since, until=until,
                                     limit=MAX_VALIDATIONS_LIMIT)
            for source, part in rows.groupby("source", sort=True):
                cal[str(source)] = calibration(part["confidence"].to_numpy(), list(part["hit"]), bins)
        for g in groups:
            name = f"{kind}:{g['source']}"
            figures = _stats(g).to_dict()
            if kind == "signal":
                figures["calibration"] = cal.get(str(g["source"]), calibration([], [], bins))
            per_source[name] = figures
            points.append({"point": name, "params": {"kind": kind, "source": g["source"], "target": g["target"]},
                           "metrics": figures})
        for g in store.validation_summary(since=since, until=until, timeframe=timeframe, kind=kind, symbols=symbols,
                                          by=("kind", "source", "target", "symbol")):
            seen.add(str(g["symbol"]))
            points.append({"point": f"{kind}:{g['source']}:{g['symbol']}",
                           "params": {"kind": kind, "source": g["source"], "target": g["target"],
                                      "symbol": g["symbol"]},
                           "metrics": _stats(g).to_dict()})
    return per_source, points, len(seen)


def validate_signals(store: PortfolioStore, *, now: datetime, symbols: Sequence[str] | str | None = None,
                     lookback_days: float = DEFAULT_LOOKBACK_DAYS, timeframe: str = "1Day",
                     exchange: str = DEFAULT_EXCHANGE, kinds: Sequence[str] = _KINDS,
                     calibration_bins: int = DEFAULT_CALIBRATION_BINS, dag_id: str | None = None,
                     run_id: str | None = None, sources: Sequence[BarSource] | None = None) -> ValidationReport:
    """Validate the forecasts and trading decisions of the window not validated yet, and store the window's figures
    as a ``signal_validation`` study (see the module docstring).

    :param store: a migrated portfolio store.
    :param now: the run's instant (aware): bars closed by it are outcomes; the window ends at it.
    :param symbols: only these symbols (a list or comma-separated tickers); ``None``: every symbol in the store.
    :param lookback_days: the window: forecasts made and bars decided in the ``lookback_days`` before ``now``.
    :param timeframe: the bars, forecasts and decisions validated.
    :param exchange: the calendar of equities (crypto pairs use the 24/7 one).
    :param kinds: ``forecast``, ``signal`` or both.
    :param calibration_bins: bins of the confidence calibration table.
    :param dag_id: the DAG of the run, stored with the study.
    :param run_id: the run: the validation rows' ``run_id``, and the study's id (``<dag_id>/<run_id>``; a retry of
        the run replaces its study). Default ``manual__<now>``.
    :param sources: market-data sources in failover order, read for the bars of trading decisions that the store
        lacks (never written to it); ``None``: stored bars only.
    :return: what was validated and the window's figures; ``status`` ``insufficient_data`` (with a message) when the
        window holds nothing validated.
    :raises InvalidInputError: for bad input, before anything is read or written.
    :raises StoreError: when the store cannot be read or written.
    """
    import pandas as pd

    from airflow_provider_portfolio.market.bars import parse_timeframe
    from airflow_provider_portfolio.market.calendar import MarketCalendar
    from airflow_provider_portfolio.market.params import validate_symbols
    from airflow_provider_portfolio.market.timing import closed_bars

    instant = ensure_utc(now, "now")
    universe = validate_symbols(symbols) if symbols else None
    days = _positive(lookback_days, "lookback_days", 3660)
    timeframe = parse_timeframe(timeframe).name
    exchange = MarketCalendar(exchange).name
    wanted = _kinds(kinds)
    bins = _bins(calibration_bins)
    chain = _chain(sources) if "signal" in wanted else None
    for value, name in ((dag_id, "dag_id"), (run_id, "run_id")):
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 200):
            raise InvalidInputError(f"{name} must be non-empty text of at most 200 characters, got {value!r}")
    run = run_id or f"manual__{instant.isoformat()}"
    study_id = f"{dag_id}/{run}" if dag_id else run
    since = instant - timedelta(days=days)

    forecasts = store.pending_forecasts(universe, timeframe, since=since, until=instant) \
        if "forecast" in wanted else None
    decisions = store.pending_decisions(universe, timeframe, since=since, until=instant) \
        if "signal" in wanted else None
    frames = [f for f in (forecasts, decisions) if f is not None and len(f)]
    counts = {k: {"pending": 0, "missing": 0, "fetched": 0} for k in wanted}
    fetched: _Fetched | None = None
    rows: list[dict[str, Any]] = []
    if frames:
        needed = sorted(set().union(*(set(f["symbol"]) for f in frames)))
        first = min(f["asof" if "asof" in f else "bar_ts"].min() for f in frames)
        start = pd.Timestamp(first) - pd.Timedelta(days=10)  # the bar before a target may precede the window
        bars = store.read_bars(needed, timeframe, start=start, end=instant)
        closes = _Closes(closed_bars(bars, instant, timeframe, exchange))
        calendars = _Calendars(start, pd.Timestamp(instant), timeframe, exchange)
        now_ns = pd.Timestamp(instant).as_unit("ns").value
        if forecasts is not None and len(forecasts):
            rows += _validate_forecasts(forecasts, closes, calendars, now_ns, counts["forecast"])
        if decisions is not None and len(decisions):
            if chain is not None:
                fetched = _fetch_unstored(chain, decisions, closes, calendars, now_ns, timeframe, exchange)
            rows += _validate_decisions(decisions, closes, calendars, now_ns, counts["signal"], fetched)
    store.append_validations(rows, run_id=run)
    validated = {k: sum(1 for r in rows if r["kind"] == k) for k in wanted}

    per_source, points, n_symbols = _figures(store, since, instant, timeframe, universe, wanted, bins)
    status = "ok" if per_source else "insufficient_data"
    what = " and ".join({"forecast": "forecasts", "signal": "trading decisions"}[k] for k in wanted)
    if per_source:
        message = (f"validated {', '.join(f'{validated[k]} {k} row(s)' for k in wanted)} new; the last {days:g} "
                   f"days hold {sum(f['n'] for f in per_source.values())} validation(s) of {len(per_source)} "
                   f"source(s) over {n_symbols} symbol(s)")
    else:
        message = (f"no {timeframe} {what} validated in the last {days:g} days (since {since.isoformat()}): "
                   "nothing to validate yet (have the forecast and trading DAGs run, and have their target bars "
                   "closed?)")
    pending = {k: counts[k]["pending"] for k in wanted}
    missing = {k: counts[k]["missing"] for k in wanted}
    if any(pending.values()) or any(missing.values()):
        message += (f"; left for a later day: {', '.join(f'{pending[k]} {k}' for k in wanted)} not closed yet, "
                    f"{', '.join(f'{missing[k]} {k}' for k in wanted)} without a stored bar"
                    + (" (nor, for signals, a fetched one)" if chain is not None else ""))
    served, failed = (fetched.served, fetched.failed) if fetched is not None else ({}, {})
    if served:
        by_source: dict[str, list[str]] = {}
        for symbol, name in served.items():
            by_source.setdefault(name, []).append(symbol)
        message += (f"; {counts['signal']['fetched']} signal row(s) validated on {timeframe} bars the store lacks, "
                    "from " + "; ".join(f"{name} ({', '.join(sorted(s))})" for name, s in by_source.items()))
    if failed:
        message += f"; no source served {len(failed)} symbol(s): " + "; ".join(list(failed.values())[:3]) \
            + ("; ..." if len(failed) > 3 else "")
    summary = {"validated": validated, "pending": pending, "missing": missing, "since": since.isoformat(),
               "until": instant.isoformat(), "symbols": n_symbols, "sources": per_source,
               "fetched": served, "fetch_failures": failed}
    params = {"symbols": universe, "lookback_days": days, "timeframe": timeframe, "exchange": exchange,
              "kinds": list(wanted), "calibration_bins": bins, "signal_outcome": SIGNAL_OUTCOME,
              "bar_sources": None if chain is None else [_source_name(s) for s in chain.sources]}
    store.save_study(VALIDATION_STUDY, study_id, ts=instant, params=params, summary=summary, status=status,
                     points=points, dag_id=dag_id, run_id=run_id)
    report = ValidationReport(study_id, instant, since, status, validated, pending, missing, per_source, n_symbols,
                              message, dict(served), dict(failed))
    log.info("signal validation %s: %s", status, message)
    return report
