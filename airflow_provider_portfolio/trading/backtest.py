"""Backtest: the trading cycle's rules replayed over many cycle instants in arrays, without a store. Plain Python.

:func:`~airflow_provider_portfolio.trading.session.trade_universe` run once per cycle instant through a store and
the simulated broker is the reference; this module gives the same orders, fills and equity without the store round
trip, in two steps so that a threshold sweep pays for the signals once:

- :func:`prepare_backtest` (expensive, once): for every cycle instant and symbol, what the cycle knows there:
  the bars of its look-back window (``history_days(timeframe, LOOKBACK_BARS)`` calendar days back, as
  :func:`~airflow_provider_portfolio.trading.session.fetch_inputs` asks the sources), which have started and
  closed (:func:`~airflow_provider_portfolio.market.calendar.bar_times`), the quality gate
  (:func:`~airflow_provider_portfolio.trading.cycle.gate_bars`), the open of the bar in progress
  (:func:`~airflow_provider_portfolio.trading.cycle.forming_opens`'s rule), stale bars
  (:func:`~airflow_provider_portfolio.market.timing.expected_last_bar`), the price check, and the three signals
  with their per-signal score and confidence: technical (:func:`~airflow_provider_portfolio.trading.signals.technical_signal`
  on each cycle's own window of the last ``LOOKBACK_BARS`` closed bars, all windows stacked into a few calls: the
  indicators are computed row by row, so each row is exactly the cycle's; EMAs and Wilder averages are seeded at the
  window's start, so one pass over the whole history would not be), forecast (point in time: at each cycle the latest
  forecast whose ``asof`` bar had closed, and the latest evaluation alike, through
  :func:`~airflow_provider_portfolio.trading.panels._forecast_inputs`' rules for all cycles at once, then
  :func:`~airflow_provider_portfolio.trading.signals.forecast_signal`) and sentiment
  (:func:`~airflow_provider_portfolio.trading.signals.sentiment_signal` on each cycle's news, cycle by cycle).
- :func:`run_backtest` (cheap, many times): the cycles stepped in order with numpy over symbols: the simulated
  broker's fills (the open of the first bar after the decided one that started no earlier than the order, slippage
  against the side, commission; a buy costing more than the cash is canceled) and marks, the accounting
  (:func:`~airflow_provider_portfolio.trading.accounting.apply_fill`; equity is cash plus the positions at their
  marks), :func:`~airflow_provider_portfolio.trading.decision.combine` of the stored per-signal panels with the
  run's weights, the decisions (:func:`decide_arrays`, which gives what
  :func:`~airflow_provider_portfolio.trading.decision.decide` gives, vectorised), the bar-aware claim, and every rule
  of :func:`~airflow_provider_portfolio.trading.risk.check_orders` on each cycle's orders (:func:`check_batch`: the
  same verdicts without copying the account per order; the daily loss measured from
  :func:`~airflow_provider_portfolio.market.timing.loss_reference` with
  :func:`~airflow_provider_portfolio.trading.accounting.book_at`, the day's order counts, the calendar's market
  state, buying power, the kill switch), then the broker's own buying-power check at submission.

What changes between runs without preparing again: ``weights``, ``limits``, ``kill_switch``, ``bar_aware``,
``min_score``, ``sizing``, ``fraction``, ``target_volatility``, the costs and the starting cash. What needs
:func:`prepare_backtest` again (checked): ``timeframe``, ``exchange``, ``news_half_life_hours``,
``max_abs_return``, ``max_stale_bars``.

Conventions (the cycle's where it has one):

- The store returns a run's decisions by symbol, so each cycle's orders are risk-checked and sent in symbol order;
  open orders fill in (created, client order id) order. Client order ids are
  :func:`~airflow_provider_portfolio.trading.orders.client_order_id` of (``dag_id``, the cycle's run id, symbol,
  decided bar, side).
- A fill happens when a later cycle sees its bar started (as the simulated broker syncs): an order of the last
  cycle stays open. The kill switch is read once per cycle (the cycle reads it before judging and again before
  sending).
- Forecasts: the store holds a forecast once its ``asof`` bar has closed (a forecast job runs after the close);
  each cycle reads the latest by ``asof`` (ties: ``created_at``, then ``run_id``), as
  ``PortfolioStore.read_forecasts(latest=True)`` would.
- News: a list of items is read per cycle over :func:`~airflow_provider_portfolio.trading.settings.news_window`
  (published within it, both ends included); a news source (anything with ``get_news``) is asked per cycle
  through :func:`~airflow_provider_portfolio.market.sources.fetch_news`, exactly as the cycle asks it.
- Metrics: daily returns (:func:`~airflow_provider_portfolio.trading.performance.period_returns` of the equity
  curve on UTC days, as the desk's monitoring measures them), annualised with 252 periods a year
  (:data:`~airflow_provider_portfolio.trading.performance.TRADING_DAYS_PER_YEAR`; 365 when every symbol is a crypto
  pair); Sharpe and Sortino of :mod:`~airflow_provider_portfolio.trading.performance`, risk-free rate 0.

Not covered: quotes (a backtest sizes at the last close, as a simulated cycle does), partial fills, a broker other
than the simulated one, orders left ``pending_submit`` by a crash, and several DAGs trading one book.

A plain strategy fed in from outside: :func:`run_backtest`'s ``targets`` (a target position per cycle and
symbol, NaN where it keeps the position) replaces the decisions and goes through the same risk, fill and
accounting engine; :func:`crossover_targets` is a moving-average crossover expressed that way.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.calendar import MarketCalendar, bar_times, calendar_for_symbol
from airflow_provider_portfolio.market.news import sort_news
from airflow_provider_portfolio.market.params import is_crypto, validate_symbols
from airflow_provider_portfolio.market.sources import fetch_news
from airflow_provider_portfolio.market.timeutil import to_ns_array
from airflow_provider_portfolio.market.timing import day_start, expected_last_bar, history_days, loss_reference
from airflow_provider_portfolio.market.windows import window_states
from airflow_provider_portfolio.trading.accounting import apply_fill, book_at
from airflow_provider_portfolio.trading.brokers.simulated import DEFAULT_INITIAL_CASH
from airflow_provider_portfolio.trading.cycle import _price_check, gate_bars
from airflow_provider_portfolio.trading.decision import SIZINGS, _round_toward_zero, combine, decide
from airflow_provider_portfolio.trading.indicators import sma_series
from airflow_provider_portfolio.trading.orders import client_order_id
from airflow_provider_portfolio.trading.performance import (
    TRADING_DAYS_PER_YEAR,
    closed_trades,
    drawdown,
    period_returns,
    profit_factor,
    sharpe_ratio,
    sortino_ratio,
    win_rate,
)
from airflow_provider_portfolio.trading.risk import (
    AccountState,
    ProposedOrder,
    RiskLimits,
    RiskVerdict,
    _invalid_order,
    _is_number,
    _is_reducing,
    check_order,
    normalise_kill_switch,
)
from airflow_provider_portfolio.trading.settings import LOOKBACK_BARS, CycleSettings, check_instant, news_window
from airflow_provider_portfolio.trading.signals import atr, forecast_signal, sentiment_signal, technical_signal

__all__ = ["PREPARE_FIELDS", "BacktestInputs", "BacktestResult", "backtest", "backtest_metrics", "check_batch",
           "crossover_targets", "decide_arrays", "prepare_backtest", "run_backtest", "session_instants"]

#: Settings a run must share with the inputs it runs on (they shape what :func:`prepare_backtest` computed).
PREPARE_FIELDS = ("timeframe", "exchange", "news_half_life_hours", "max_abs_return", "max_stale_bars")
#: How long after the last bar ended a cycle may still be (a long weekend): later, the bars do not cover it.
CYCLE_MARGIN = pd.Timedelta(days=4)
_NAT = np.iinfo(np.int64).min
_NEVER = np.iinfo(np.int64).max
_CHUNK_ROWS = 16_384  # (cycle, symbol) windows per technical_signal call: bounds the memory of the stacked panels
_BAR_COLUMNS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")


# -- inputs ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _SignalPanel:
    """A signal's score and confidence per (cycle, symbol): what :func:`combine` needs of a signal."""

    score: np.ndarray
    confidence: np.ndarray


@dataclass(frozen=True, eq=False)
class BacktestInputs:
    """What :func:`prepare_backtest` computed once: per cycle (rows) and symbol (columns), what the cycle knows.

    Arrays are (cycles, symbols) unless said otherwise; symbols in :attr:`symbols`' order (sorted: the order the
    store returns a run's decisions in). Treat it as read-only: many runs share it.

    :param symbols: the universe, sorted.
    :param cycles: the cycle instants, UTC, increasing.
    :param run_ids: the run id of each cycle (part of every client order id).
    :param dag_id: the deciding DAG's name (part of every client order id).
    :param settings: the settings it was prepared with (a run must share :data:`PREPARE_FIELDS`).
    :param signals: ``technical``, ``forecast``, ``sentiment`` -> score and confidence panels (empty when prepared
        with ``signals=False``: such inputs only run ``targets``).
    :param price: the last close a decision sizes at; NaN where the symbol may not trade (see ``blocked``).
    :param blocked: the symbol has no tradable bars at the cycle (the reason in ``reasons``): it holds.
    :param reasons: (cycle, symbol) -> why it is blocked.
    :param volatility: ATR / last close (volatility sizing), NaN where undefined.
    :param bar_of: the bar decided on, int64 ns UTC (the last closed bar; the calendar's expected one without bars;
        ``int64`` min where none).
    :param market_open: the symbol's market is open at the cycle (``window_states``).
    """

    symbols: tuple[str, ...]
    cycles: pd.DatetimeIndex
    run_ids: tuple[str, ...]
    dag_id: str
    settings: CycleSettings
    signals: dict[str, _SignalPanel]
    price: np.ndarray
    blocked: np.ndarray
    reasons: dict[tuple[int, int], str]
    volatility: np.ndarray
    bar_of: np.ndarray
    market_open: np.ndarray
    # -- for the fills, marks and the daily loss limit
    day_start: np.ndarray  # (cycles,) int64 ns: the trading day's start (orders per day)
    reference: np.ndarray  # (cycles,) int64 ns: the instant "today's loss" is measured from
    reference_close: np.ndarray  # closes at ``reference`` (NaN: none)
    last_row: np.ndarray  # int64 row of the last gated closed bar in the bar arrays (-1: none)
    last_close: np.ndarray  # its close (NaN: none): what a forming bar's open is checked against
    first_row: np.ndarray  # int64 first row of the cycle's window
    refused: np.ndarray  # the quality gate refused the symbol's closed bars (no fill, no mark)
    bar_ts: np.ndarray  # (symbols, bars) int64 ns, padded with int64 max
    bar_start: np.ndarray
    bar_end: np.ndarray
    bar_open: np.ndarray  # (symbols, bars) float, NaN padded
    bar_close: np.ndarray
    n_bars: np.ndarray  # (symbols,)
    crypto: np.ndarray  # (symbols,) bool

    @property
    def shape(self) -> tuple[int, int]:
        """(cycles, symbols)."""
        return int(self.price.shape[0]), int(self.price.shape[1])

    def window(self, lo: int, hi: int) -> BacktestInputs:
        """These inputs cut to cycles ``[lo, hi)``: a backtest over them starts from a fresh book, as preparing those
        cycles alone would (walk-forward splits prepare once and cut each window).

        :raises InvalidInputError: for an empty or out-of-range window.
        """
        K = self.shape[0]
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo < hi <= K):
            raise InvalidInputError(f"window [{lo!r}, {hi!r}) must lie within the {K} prepared cycles and not be empty")
        cut: dict[str, Any] = {name: getattr(self, name)[lo:hi] for name in _PER_CYCLE}
        cut["cycles"] = self.cycles[lo:hi]
        cut["run_ids"] = self.run_ids[lo:hi]
        cut["signals"] = {k: _SignalPanel(p.score[lo:hi], p.confidence[lo:hi]) for k, p in self.signals.items()}
        cut["reasons"] = {(k - lo, s): why for (k, s), why in self.reasons.items() if lo <= k < hi}
        return replace(self, **cut)


#: The fields of :class:`BacktestInputs` with one row per cycle (what :meth:`BacktestInputs.window` cuts); the others
#: are per symbol or whole (bars, settings), and ``cycles``, ``run_ids``, ``signals``, ``reasons`` are cut apart.
_PER_CYCLE = ("price", "blocked", "volatility", "bar_of", "market_open", "day_start", "reference", "reference_close",
              "last_row", "last_close", "first_row", "refused")


def session_instants(start: object, end: object, at: str | time = "15:00", exchange: str = "XNYS") -> list[datetime]:
    """One instant per session of ``exchange`` in [start, end]: the session's date at ``at``, local time (UTC
    instants; daylight saving time followed).

    :param start: first session date.
    :param end: last session date.
    :param at: ``"HH:MM"`` or a :class:`datetime.time`, in the exchange's time zone.
    :param exchange: the calendar.
    :raises InvalidInputError: for a bad time, date or calendar.
    """
    if isinstance(at, str):
        try:
            at = time.fromisoformat(at.strip())
        except ValueError:
            raise InvalidInputError(f"cycle time must be 'HH:MM', got {at!r}") from None
    if not isinstance(at, time) or at.tzinfo is not None:
        raise InvalidInputError(f"cycle time must be a naive time of day (local to the exchange), got {at!r}")
    calendar = MarketCalendar(exchange)
    days = pd.DatetimeIndex(calendar.sessions(start, end).index)
    local = (days + pd.Timedelta(hours=at.hour, minutes=at.minute, seconds=at.second)).tz_localize(calendar.timezone)
    return [t.to_pydatetime() for t in local.tz_convert("UTC")]


def _check_bars(bars: Any, symbols: list[str], timeframe: str) -> pd.DataFrame:
    if not isinstance(bars, pd.DataFrame):
        raise InvalidInputError(f"bars must be a pandas DataFrame of canonical bars, got {type(bars).__name__}")
    missing = [c for c in _BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise InvalidInputError(f"bar frame lacks column(s) {missing}; expected {list(_BAR_COLUMNS)}")
    if bars.empty:
        raise InvalidInputError("empty history: no bars to backtest on")
    frame = bars.loc[bars["symbol"].isin(symbols) & (bars["timeframe"] == timeframe), list(_BAR_COLUMNS)]
    if frame.empty:
        raise InvalidInputError(f"empty history: no {timeframe} bars of {symbols[:5]}{'...' if len(symbols) > 5 else ''} "
                                f"(the bars hold {sorted(map(str, bars['timeframe'].unique()))} of "
                                f"{bars['symbol'].nunique()} symbol(s))")
    unknown = sorted(set(symbols) - set(frame["symbol"].unique()))
    if unknown:
        raise InvalidInputError(f"unknown symbol(s) {unknown}: no {timeframe} bars of them in the history")
    frame = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True))
    dup = frame.duplicated(["symbol", "ts"])
    if dup.any():
        row = frame[dup].iloc[0]
        raise InvalidInputError(f"duplicate bars: {int(dup.sum())} repeated (symbol, ts), e.g. {row['symbol']} at "
                                f"{row['ts'].isoformat()}: give canonical bars, one row per (symbol, ts)")
    return frame


def _check_cycles(cycles: Any, cycle_time: Any, start: Any, end: Any, frame: pd.DataFrame,
                  settings: CycleSettings) -> list[datetime]:
    if (cycles is None) == (cycle_time is None):
        raise InvalidInputError("give either cycles (instants) or cycle_time (a time of day on every session)")
    if cycle_time is not None:
        first = frame["ts"].min().date() if start is None else start
        last = frame["ts"].max().date() if end is None else end
        instants = session_instants(first, last, cycle_time, settings.exchange)
    else:
        if isinstance(cycles, str | bytes) or not isinstance(cycles, Iterable):
            raise InvalidInputError(f"cycles must be a list of tz-aware instants, got {type(cycles).__name__}")
        instants = [check_instant(pd.Timestamp(c).to_pydatetime() if isinstance(c, pd.Timestamp) else c)
                    for c in cycles]
    if not instants:
        raise InvalidInputError("no cycle instants: give at least one")
    for before, after in zip(instants, instants[1:], strict=False):
        if not after > before:
            raise InvalidInputError(f"cycle instants must be strictly increasing: {after.isoformat()} follows "
                                    f"{before.isoformat()}")
    return instants


def _dense(frame: pd.DataFrame, symbols: tuple[str, ...], starts: np.ndarray, ends: np.ndarray
           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-symbol bar arrays (symbols, bars), rows in ``ts`` order, left-aligned and padded."""
    code = pd.Index(symbols).get_indexer(frame["symbol"])
    ts = frame["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    order = np.lexsort((ts, code))
    code, ts, starts, ends = code[order], ts[order], starts[order], ends[order]
    n = np.bincount(code, minlength=len(symbols))
    width = int(n.max())
    row = np.arange(len(code)) - np.repeat(np.cumsum(n) - n, n)
    out: dict[str, np.ndarray] = {}
    for name, values, fill in (("ts", ts, _NEVER), ("start", starts, _NEVER), ("end", ends, _NEVER)):
        arr = np.full((len(symbols), width), fill, dtype=np.int64)
        arr[code, row] = values
        out[name] = arr
    for name in ("open", "high", "low", "close"):
        arr = np.full((len(symbols), width), np.nan)
        arr[code, row] = frame[name].to_numpy(dtype=np.float64)[order]
        out[name] = arr
    for s in range(len(symbols)):  # bar_times is monotonic in ts for the bars of one calendar and timeframe
        k = int(n[s])
        if k > 1 and (np.any(np.diff(out["start"][s, :k]) < 0) or np.any(np.diff(out["end"][s, :k]) < 0)):
            raise InvalidInputError(f"{symbols[s]}: bar starts and ends are not in timestamp order")
    return out, n


def _utc_midnight_ns(day: Any) -> int:
    return int(pd.Timestamp(day).tz_localize("UTC").value)


def _open_ok(open_: float, base: float, limit: float | None) -> bool:
    """:func:`~airflow_provider_portfolio.trading.cycle.forming_opens`'s rule for one open: finite, positive and
    within ``limit`` of the last gated close ``base`` (not judged against a missing close)."""
    if not (math.isfinite(open_) and open_ > 0):
        return False
    if limit is None:
        return True
    with np.errstate(invalid="ignore", divide="ignore"):
        move = abs(np.float64(open_) / np.float64(base) - 1.0)
    return not (math.isfinite(move) and move > limit)


def _latest_available(frame: pd.DataFrame | None, symbols: tuple[str, ...], cycles_ns: np.ndarray,
                      exchange: str, what: str) -> tuple[pd.DataFrame | None, np.ndarray]:
    """Of a forecasts (step 1) or evaluations frame, per (cycle, symbol) the position of the row the store's latest
    read returns when every row is stored once its ``asof`` bar has closed (-1: none by then)."""
    out = np.full((len(cycles_ns), len(symbols)), -1, dtype=np.int64)
    if frame is None or frame.empty:
        return None, out
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(f"{what} must be a DataFrame, got {type(frame).__name__}")
    need = ["symbol", "timeframe", "asof"] + (["step", "point", "lower", "upper", "target_ts"]
                                             if what == "forecasts" else ["healthy"])
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{what} lack column(s) {missing}")
    rows = frame[frame["symbol"].isin(symbols)]
    if what == "forecasts":
        rows = rows[rows["step"] == 1]
    models = rows["model"].unique() if "model" in rows.columns else []
    if len(models) > 1:
        raise InvalidInputError(f"{what} hold several models {sorted(map(str, models))}: give one model's")
    rows = rows.assign(asof=pd.to_datetime(rows["asof"], utc=True))
    _, ends = bar_times(rows.rename(columns={"asof": "ts"}), exchange)
    rows = rows.assign(_available=ends)
    rows = rows[rows["_available"] != _NEVER]  # an asof that is no bar of the symbol's calendar is never stored
    keys = ["symbol", "asof"] + [c for c in ("created_at", "run_id") if c in rows.columns]
    rows = rows.sort_values(keys, kind="stable").reset_index(drop=True)
    code = pd.Index(symbols).get_indexer(rows["symbol"])
    available = rows["_available"].to_numpy(dtype=np.int64)
    for s in np.unique(code):
        at = np.flatnonzero(code == s)
        pos = np.searchsorted(available[at], cycles_ns, side="right") - 1
        out[:, s] = np.where(pos >= 0, at[np.maximum(pos, 0)], -1)
    return rows.drop(columns="_available"), out


def _forecast_panel(forecasts: pd.DataFrame | None, pick: np.ndarray, evaluations: pd.DataFrame | None,
                    epick: np.ndarray, last_close: np.ndarray, cycles_ns: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~airflow_provider_portfolio.trading.panels._forecast_inputs` for every (cycle, symbol) at once, the
    forecast and evaluation read at each cycle given by ``pick`` and ``epick`` (rows, -1: none): the same rules
    (a forecast made on a bar later than the instant, or stale, is ignored) and the same operations (tested
    against it). Returns expected log-return, band and health, each (cycles, symbols)."""
    shape = pick.shape
    er, lo, hi = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    healthy = np.zeros(shape, dtype=bool)
    if forecasts is None or forecasts.empty:
        return er, lo, hi, healthy
    rows = np.maximum(pick, 0)
    point = forecasts["point"].to_numpy(dtype=np.float64)[rows]
    have = (pick >= 0) & ~np.isnan(point)
    frames = {t: parse_timeframe(t).delta.value for t in forecasts["timeframe"].unique()}
    delta = forecasts["timeframe"].map(frames).to_numpy(dtype=np.int64)[rows]
    grace = np.where(forecasts["timeframe"].to_numpy() == "1Day", pd.Timedelta(days=3).value, 0)[rows]
    asof = to_ns_array(forecasts["asof"])[rows]
    target = to_ns_array(pd.to_datetime(forecasts["target_ts"], utc=True))[rows]
    now = cycles_ns[:, None]
    future = have & (asof + delta > now)
    stale = have & ~future & (target != _NAT) & (target + delta + grace <= now)
    use = have & ~future & ~stale & np.isfinite(last_close) & (last_close > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        base = np.log(np.where(use, last_close, 1.0))
    for name, arr in (("point", er), ("lower", lo), ("upper", hi)):
        arr[use] = forecasts[name].to_numpy(dtype=np.float64)[rows][use] - base[use]
    if evaluations is not None and not evaluations.empty:
        health = evaluations["healthy"].astype(bool).to_numpy()[np.maximum(epick, 0)] & (epick >= 0)
        healthy[use] = health[use]
    return er, lo, hi, healthy


def _news_reader(news: Any, symbols: list[str], half_life_hours: float, by_day: bool = False) -> Any:
    """A function instant -> the news items a cycle at that instant sees."""
    if news is None:
        return lambda now: []
    if hasattr(news, "get_news"):
        return lambda now: fetch_news([news], symbols, *news_window(now, half_life_hours))[0]
    if isinstance(news, str | bytes) or not isinstance(news, Sequence):
        raise InvalidInputError(f"news must be a list of NewsItem or a news source, got {type(news).__name__}")
    try:
        items = sort_news(news)
    except (AttributeError, TypeError) as err:
        raise InvalidInputError(f"news must be NewsItem records with a tz-aware 'published': {err}") from None
    published = [n.published for n in items]

    def read(now: datetime) -> list[Any]:
        start, end = news_window(now, half_life_hours)
        if by_day:  # whole UTC days, as a source asked for dates answers
            first = datetime.combine(start.date(), time(0), tzinfo=start.tzinfo)
            return items[bisect.bisect_left(published, first):
                         bisect.bisect_left(published, datetime.combine(end.date(), time(0), tzinfo=end.tzinfo)
                                            + timedelta(days=1))]
        return items[bisect.bisect_left(published, start):bisect.bisect_right(published, end)]

    return read


def prepare_backtest(
    bars: pd.DataFrame,
    symbols: Sequence[str],
    *,
    cycles: Sequence[datetime] | None = None,
    cycle_time: str | time | None = None,
    start: object = None,
    end: object = None,
    settings: CycleSettings | None = None,
    news: Any = None,
    forecasts: pd.DataFrame | None = None,
    evaluations: pd.DataFrame | None = None,
    dag_id: str = "backtest",
    run_ids: Sequence[str] | None = None,
    signals: bool = True,
    news_days: bool = False,
) -> BacktestInputs:
    """What every cycle of a backtest knows (see the module docstring), computed once.

    :param bars: canonical bars (``symbol``, ``timeframe``, ``ts``, ``open``, ``high``, ``low``, ``close``,
        ``volume``) of ``settings.timeframe``: the history the cycles' sources would serve, look-back included.
    :param symbols: the universe.
    :param cycles: the cycle instants (tz-aware, increasing); or
    :param cycle_time: a time of day (``"15:00"``, exchange time): one cycle per session from ``start`` to ``end``
        (session dates; default the first and last bar dates).
    :param settings: the cycle's settings (default ``CycleSettings()``).
    :param news: :class:`~airflow_provider_portfolio.market.news.NewsItem` records, or a news source.
    :param forecasts: stored forecasts of one model, every run (``read_forecasts(model=..., latest=False)``).
    :param evaluations: their evaluations, every run.
    :param dag_id: the deciding DAG's name.
    :param run_ids: one run id per cycle (default ``backtest__<instant>``).
    :param signals: compute the signals (``False``: only a run with ``targets``).
    :param news_days: a list of ``news`` is read over whole UTC days of each cycle's news window (as a source asked
        for dates answers: the synthetic market's feed), not over its instants.
    :raises InvalidInputError: for an empty history, unknown symbols, duplicate bars, cycles outside the bars, bad
        settings or run ids.
    """
    settings = CycleSettings() if settings is None else settings
    if not isinstance(settings, CycleSettings):
        raise InvalidInputError(f"settings must be CycleSettings, got {type(settings).__name__}")
    if not isinstance(dag_id, str) or not dag_id.strip():
        raise InvalidInputError(f"dag_id must be a non-empty string, got {dag_id!r}")
    asked = validate_symbols(list(symbols) if isinstance(symbols, tuple) else symbols)
    tf = parse_timeframe(settings.timeframe).name
    frame = _check_bars(bars, asked, tf)
    starts, ends = bar_times(frame, settings.exchange)
    frame, starts, ends = frame[starts != _NEVER], starts[starts != _NEVER], ends[starts != _NEVER]  # never started
    instants = _check_cycles(cycles, cycle_time, start, end, frame, settings)
    cyc = np.array([pd.Timestamp(t).value for t in instants], dtype=np.int64)
    if cyc[0] < int(ends.min()):
        raise InvalidInputError(f"cycle {instants[0].isoformat()} is before the bars: no bar has closed by then "
                                f"(the first closes at {pd.Timestamp(int(ends.min()), tz='UTC').isoformat()})")
    if cyc[-1] > int(ends.max()) + CYCLE_MARGIN.value:
        raise InvalidInputError(f"cycle {instants[-1].isoformat()} is after the bars: the last bar ended at "
                                f"{pd.Timestamp(int(ends.max()), tz='UTC').isoformat()}")
    if run_ids is None:
        run_ids = [f"backtest__{t.isoformat()}" for t in instants]
    run_ids = list(run_ids)
    if len(run_ids) != len(instants) or len(set(run_ids)) != len(run_ids) \
            or not all(isinstance(r, str) and r.strip() for r in run_ids):
        raise InvalidInputError(f"run_ids must be {len(instants)} distinct non-empty strings, one per cycle")

    universe = tuple(sorted(asked))
    K, S = len(cyc), len(universe)
    bar, n_bars = _dense(frame, universe, starts, ends)
    crypto = np.array([is_crypto(s) for s in universe])

    # -- each cycle's window: the rows fetched, started and closed ---------------------------------------------
    days = history_days(tf, LOOKBACK_BARS)
    lo_ns = np.array([_utc_midnight_ns((t - timedelta(days=days)).date()) for t in instants], dtype=np.int64)
    first_row = np.empty((K, S), dtype=np.int64)
    n_started = np.empty((K, S), dtype=np.int64)
    n_closed = np.empty((K, S), dtype=np.int64)
    for s in range(S):
        k = int(n_bars[s])
        first_row[:, s] = np.searchsorted(bar["ts"][s, :k], lo_ns, side="left")
        n_started[:, s] = np.searchsorted(bar["start"][s, :k], cyc, side="right")
        n_closed[:, s] = np.searchsorted(bar["end"][s, :k], cyc, side="right")

    # -- the quality gate: a symbol whose whole history passes passes every window of it (each rule is a row's or
    # a pair of consecutive rows'); the others are gated window by window, as the cycle gates them
    refused = np.zeros((K, S), dtype=bool)
    reasons: dict[tuple[int, int], str] = {}
    ordered = frame.assign(_code=pd.Index(universe).get_indexer(frame["symbol"])).sort_values(["_code", "ts"])
    _, failed = gate_bars(ordered.drop(columns="_code").reset_index(drop=True), settings)
    offsets = np.cumsum(n_bars) - n_bars
    for symbol in failed:
        s = universe.index(symbol)
        rows = ordered.iloc[int(offsets[s]):int(offsets[s] + n_bars[s])].drop(columns="_code")
        for k in range(K):
            window = rows.iloc[int(first_row[k, s]):int(n_closed[k, s])].reset_index(drop=True)
            _, why = gate_bars(window, settings)
            if why:
                refused[k, s] = True
                reasons[(k, s)] = why[symbol]

    has_closed = (n_closed > first_row) & ~refused
    last_row = np.where(has_closed, n_closed - 1, -1)
    srow = np.arange(S)[None, :]
    last_close = np.where(has_closed, bar["close"][srow, np.maximum(last_row, 0)], np.nan)
    last_ts = np.where(has_closed, bar["ts"][srow, np.maximum(last_row, 0)], _NAT)

    # -- the bar in progress: only its open is judged
    forming_from = np.maximum(first_row, n_closed)
    forming = np.where((n_started > forming_from) & ~refused, n_started - forming_from, 0)
    opens = np.where(forming > 0, bar["open"][srow, np.minimum(forming_from, bar["open"].shape[1] - 1)], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):  # forming_opens' rule, one bar in progress at a time
        move = np.abs(opens / last_close - 1.0)
    bad_open = (forming > 0) & ~(np.isfinite(opens) & (opens > 0))
    if settings.max_abs_return is not None:
        bad_open |= (forming > 0) & np.isfinite(move) & (move > settings.max_abs_return)
    for k, s in zip(*np.nonzero(forming > 1), strict=True):  # several bars in progress: each judged
        bad_open[k, s] = not all(_open_ok(float(bar["open"][s, j]), float(last_close[k, s]), settings.max_abs_return)
                                 for j in range(int(forming_from[k, s]), int(n_started[k, s])))
    for k, s in zip(*np.nonzero(bad_open), strict=True):
        reasons.setdefault((int(k), int(s)), f"bars refused by the quality gate: the open of the bar in progress is "
                           f"not plausible after the last close {last_close[k, s]:.6g}: nothing fills at it")

    # -- stale bars, no bars, the decided bar, the market state, the day and the loss reference per cycle
    calendars = sorted({calendar_for_symbol(s, settings.exchange).name for s in universe})
    cal_of = np.array([calendars.index(calendar_for_symbol(s, settings.exchange).name) for s in universe])
    probe = {calendar_for_symbol(s, settings.exchange).name: s for s in universe}
    expected = np.full((K, len(calendars)), _NAT, dtype=np.int64)
    oldest = np.full((K, len(calendars)), _NAT, dtype=np.int64)
    market_open = np.zeros((K, S), dtype=bool)
    day = np.empty(K, dtype=np.int64)
    reference = np.empty(K, dtype=np.int64)
    last_end = np.where(has_closed, bar["end"][srow, np.maximum(last_row, 0)], _NAT)
    for k, now in enumerate(instants):
        for c, name in enumerate(calendars):
            if not has_closed[k, cal_of == c].all():  # the bar a symbol without bars is decided on
                got = expected_last_bar(probe[name], now, tf, settings.exchange)
                expected[k, c] = _NAT if got is None else got.value
            back = expected_last_bar(probe[name], now, tf, settings.exchange, back=settings.max_stale_bars)
            oldest[k, c] = _NAT if back is None else back.value
        states = window_states([probe[name] for name in calendars], now, exchange=settings.exchange)
        market_open[k] = np.array([states[probe[name]].is_open for name in calendars])[cal_of]
        day[k] = pd.Timestamp(day_start(now, settings.exchange)).value
        latest = int(last_end[k].max()) if has_closed[k].any() else None
        reference[k] = loss_reference(latest, list(universe), now, settings.exchange).value
    stale = has_closed & (oldest[:, cal_of] != _NAT) & (last_ts < oldest[:, cal_of])
    bar_of = np.where(has_closed, last_ts, expected[:, cal_of])
    ref_row = np.empty((K, S), dtype=np.int64)
    for s in range(S):
        ref_row[:, s] = np.searchsorted(bar["end"][s, :int(n_bars[s])], reference, side="right") - 1
    ref_ok = has_closed & (ref_row >= first_row) & (ref_row <= last_row)
    reference_close = np.where(ref_ok, bar["close"][srow, np.maximum(ref_row, 0)], np.nan)
    for k, s in zip(*np.nonzero(~has_closed & ~refused), strict=True):
        reasons.setdefault((int(k), int(s)), "no bars: unknown symbol or no data from the sources")
    for k, s in zip(*np.nonzero(stale), strict=True):
        reasons.setdefault((int(k), int(s)), f"stale bars: the last {tf} bar is "
                           f"{pd.Timestamp(int(last_ts[k, s]), tz='UTC')}")

    # -- the cycles' panels, stacked: the last LOOKBACK_BARS gated closed bars of each (cycle, symbol) ------------
    score = {name: np.zeros((K, S)) for name in ("technical", "forecast", "sentiment")}
    confidence = {name: np.zeros((K, S)) for name in score}
    volatility = np.full((K, S), np.nan)
    flagged = np.zeros((K, S), dtype=bool)
    flat_last, flat_first = last_row.ravel(), first_row.ravel()
    flat_s = np.repeat(srow, K, axis=0).ravel()
    width = LOOKBACK_BARS if signals else 21  # without signals, only the price check's 21 closes are needed
    cols = np.arange(width)[None, :] - (width - 1)
    for lo in range(0, K * S, _CHUNK_ROWS):
        part = slice(lo, min(lo + _CHUNK_ROWS, K * S))
        idx = flat_last[part, None] + cols  # right-aligned: the last column is the last closed bar
        ok = (flat_last[part, None] >= 0) & (idx >= flat_first[part, None])
        where = np.maximum(idx, 0)
        panel = {name: np.ascontiguousarray(np.where(ok, bar[name][flat_s[part, None], where], np.nan))
                 for name in (("close", "high", "low") if signals else ("close",))}
        names = [str(i) for i in range(part.start, part.stop)]
        for i in _price_check(names, panel["close"], settings.max_abs_return):
            flagged.flat[int(i)] = True
        if signals:
            with np.errstate(invalid="ignore", divide="ignore"):
                volatility.flat[part] = atr(panel["high"], panel["low"], panel["close"]) / panel["close"][:, -1]
            technical = technical_signal(panel["close"], high=panel["high"], low=panel["low"])
            score["technical"].flat[part] = technical.score
            confidence["technical"].flat[part] = technical.confidence
    for k, s in zip(*np.nonzero(flagged), strict=True):
        reasons.setdefault((int(k), int(s)), "price check: the last close is too far from the median of the closes "
                                             "before it: not traded on it")
    blocked = ~has_closed | refused | bad_open | stale | flagged
    price = np.where(blocked, np.nan, last_close)

    # -- forecast (point in time) and sentiment, per cycle ---------------------------------------------------------
    if signals:
        fc_rows, fc_pick = _latest_available(forecasts, universe, cyc, settings.exchange, "forecasts")
        ev_rows, ev_pick = _latest_available(evaluations, universe, cyc, settings.exchange, "evaluations")
        er, lo_band, hi_band, healthy = _forecast_panel(fc_rows, fc_pick, ev_rows, ev_pick, last_close, cyc)
        forecast = forecast_signal(er.ravel(), lo_band.ravel(), hi_band.ravel(), healthy.ravel())
        score["forecast"][:], confidence["forecast"][:] = (x.reshape(K, S) for x in (forecast.score,
                                                                                    forecast.confidence))
        read_news = _news_reader(news, asked, settings.news_half_life_hours, news_days)
        for k, now in enumerate(instants):
            sentiment = sentiment_signal(list(universe), list(read_news(now)), now, settings.news_half_life_hours)
            score["sentiment"][k], confidence["sentiment"][k] = sentiment.score, sentiment.confidence
    panels = {name: _SignalPanel(score[name], confidence[name]) for name in score} if signals else {}

    return BacktestInputs(
        symbols=universe, cycles=pd.DatetimeIndex(pd.to_datetime(cyc, utc=True)), run_ids=tuple(run_ids),
        dag_id=dag_id.strip(), settings=settings, signals=panels, price=price, blocked=blocked, reasons=reasons,
        volatility=volatility, bar_of=bar_of, market_open=market_open, day_start=day, reference=reference,
        reference_close=reference_close, last_row=last_row, last_close=last_close, first_row=first_row,
        refused=refused, bar_ts=bar["ts"], bar_start=bar["start"], bar_end=bar["end"], bar_open=bar["open"],
        bar_close=bar["close"], n_bars=n_bars, crypto=crypto,
    )


# -- decisions ---------------------------------------------------------------------------------------------------

def decide_arrays(score: np.ndarray, confidence: np.ndarray, price: np.ndarray, held: np.ndarray, equity: float,
                  *, min_confidence: float = 0.55, min_score: float = 0.1, sizing: str = "fixed_fraction",
                  fraction: float = 0.05, target_volatility: float = 0.01, volatility: np.ndarray | None = None,
                  fractionable: np.ndarray | None = None, allow_short: bool = False,
                  min_notional: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~airflow_provider_portfolio.trading.decision.decide` over arrays: the same rules and the same floating
    point operations in the same order, so the same quantities (tested against it).

    :param price: the price per symbol; NaN (or <= 0) holds, as a missing price does.
    :param held: the current signed quantity per symbol.
    :param volatility: per-bar volatility per symbol (volatility sizing); NaN holds.
    :param fractionable: whether each symbol trades in fractions (else whole shares).
    :return: (side: +1 buy, -1 sell, 0 hold; order quantity, >= 0; target quantity) per symbol.
    """
    s = np.clip(np.nan_to_num(np.asarray(score, dtype=np.float64)), -1, 1)
    c = np.clip(np.nan_to_num(np.asarray(confidence, dtype=np.float64)), 0, 1)
    price = np.asarray(price, dtype=np.float64)
    current = np.asarray(held, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(price) & (price > 0) & ~(c < min_confidence) & ~(np.abs(s) < min_score)
        if sizing == "volatility":
            vol = np.full(s.shape, np.nan) if volatility is None else np.asarray(volatility, dtype=np.float64)
            ok &= np.isfinite(vol) & (vol > 0)
            size: Any = np.minimum(fraction, target_volatility / np.where(ok, vol, 1.0))
        else:
            size = fraction
        notional = equity * size * s
        if not allow_short:
            notional = np.where(notional < 0, 0.0, notional)
        raw = notional / np.where(ok, price, 1.0)
        target = np.trunc(raw)
        delta = np.trunc(target - current)
    frac = np.zeros(s.shape, dtype=bool) if fractionable is None else np.asarray(fractionable, dtype=bool)
    for i in np.flatnonzero(frac & ok):  # the 1e-6 steps: decide's own rounding, element by element
        target[i] = _round_toward_zero(float(raw[i]), True)
        delta[i] = _round_toward_zero(float(target[i]) - float(current[i]), True)
    ok &= ~((np.abs(delta) * price < min_notional) | (delta == 0))
    side = np.where(ok, np.where(delta > 0, 1, -1), 0).astype(np.int8)
    return side, np.where(ok, np.abs(delta), 0.0), np.where(ok, current + delta, current)


def _check_decide_settings(settings: CycleSettings) -> None:
    """The bounds :func:`decide` checks, refused up front (one empty call)."""
    decide([], [], [], {}, {}, 1.0, min_confidence=settings.limits.min_confidence, min_score=settings.min_score,
           sizing=settings.sizing, fraction=settings.fraction, target_volatility=settings.target_volatility)
    if settings.sizing not in SIZINGS:  # pragma: no cover - decide raised
        raise InvalidInputError(f"sizing must be one of {SIZINGS}")


def crossover_targets(inputs: BacktestInputs, fast: int = 10, slow: int = 30, qty: float = 1.0) -> np.ndarray:
    """A long-only moving-average crossover as a target panel for :func:`run_backtest`: at each cycle, on the last
    closed bar, ``qty`` when the ``fast``-bar SMA of the closes crossed above the ``slow`` one on that bar
    (below the bar before, above on it), 0 when it crossed below, NaN (keep the position) otherwise.

    :return: (cycles, symbols) target quantities.
    :raises InvalidInputError: for windows that are not integers with ``1 <= fast < slow``, or ``qty <= 0``.
    """
    for name, value in (("fast", fast), ("slow", slow)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    if fast >= slow:
        raise InvalidInputError(f"fast must be below slow, got fast={fast}, slow={slow}")
    if isinstance(qty, bool) or not isinstance(qty, int | float) or not math.isfinite(qty) or qty <= 0:
        raise InvalidInputError(f"qty must be a positive number, got {qty!r}")
    K, S = inputs.shape
    out = np.full((K, S), np.nan)
    for s in range(S):
        closes = inputs.bar_close[s:s + 1, :int(inputs.n_bars[s])]
        gap = sma_series(closes, fast)[0] - sma_series(closes, slow)[0]
        up = np.r_[False, (gap[:-1] < 0) & (gap[1:] > 0)]
        down = np.r_[False, (gap[:-1] > 0) & (gap[1:] < 0)]
        e = inputs.last_row[:, s]
        at = np.maximum(e, 0)
        out[:, s] = np.where((e >= 0) & up[at], float(qty), np.where((e >= 0) & down[at], 0.0, np.nan))
    return out


# -- risk ----------------------------------------------------------------------------------------------------------

def check_batch(orders: Sequence[ProposedOrder], *, equity: float, cash: float, buying_power: float,
                start_of_day_equity: float, positions: dict[str, float], orders_today: dict[str, int],
                tradable: dict[str, bool], shortable: dict[str, bool], market_open: dict[str, bool],
                limits: RiskLimits, kill_switch: object = "active") -> list[RiskVerdict]:
    """:func:`~airflow_provider_portfolio.trading.risk.check_orders` of a batch against the account these fields make,
    without copying the account after every approved order: each rule of
    :func:`~airflow_provider_portfolio.trading.risk.check_order`, in its order, on the same numbers, and the working
    state updated as ``check_orders`` updates it (position, open-position count, the day's order counts, cash and
    buying power of buys). An order it rejects is judged again by ``check_order`` itself on the account as it stands
    then, whose verdict (and reason) is the one returned. Tested to agree with ``check_orders``.

    ``orders_today`` is updated in place with the approved orders.
    """
    state = normalise_kill_switch(kill_switch)
    positions = dict(positions)
    open_count = sum(1 for q in positions.values() if q != 0)
    total = sum(orders_today.values())
    out: list[RiskVerdict] = []
    for order in orders:
        symbol = order.symbol
        raw = positions.get(symbol, 0)
        reducing = _is_reducing(order, raw)
        position = float(raw) if _is_number(raw) else math.nan
        after = position + order.signed_qty
        notional = order.notional
        ok = not (state == "halted" or (state == "reduce_only" and not reducing)) and _invalid_order(order) is None
        ok = ok and all(_is_number(v) for v in (equity, cash, buying_power, start_of_day_equity, raw)) \
            and (reducing or (equity > 0 and start_of_day_equity > 0))
        ok = ok and tradable.get(symbol) is True and market_open.get(symbol) is True \
            and not order.confidence < limits.min_confidence
        if ok and not reducing:
            ok = not equity <= start_of_day_equity * (1 - limits.daily_loss_limit) \
                and not (order.side == "sell" and after < 0
                         and (not limits.allow_short or shortable.get(symbol) is not True)) \
                and not notional > limits.max_order_notional \
                and not abs(after) * order.price / equity > limits.max_position_fraction \
                and not (position == 0 and after != 0 and open_count >= limits.max_open_positions)
        ok = ok and not orders_today.get(symbol, 0) >= limits.max_orders_per_symbol_per_day \
            and not total >= limits.max_orders_per_day \
            and not (not reducing and order.side == "buy" and notional > buying_power)
        if ok:
            verdict = RiskVerdict(order=order, approved=True, reason="approved", rule=None)
        else:  # the reason, and the last word, from the rule itself
            def entry(flags: dict[str, bool], symbol: str = symbol) -> dict[str, bool]:
                return {symbol: flags[symbol]} if symbol in flags else {}

            verdict = check_order(order, AccountState(
                equity=equity, cash=cash, buying_power=buying_power, start_of_day_equity=start_of_day_equity,
                positions=positions, orders_today=orders_today, tradable=entry(tradable),
                shortable=entry(shortable), market_open=entry(market_open)), limits, state)
        out.append(verdict)
        if verdict.approved:  # risk._apply, on the working state
            if after == 0:
                positions.pop(symbol, None)
            else:
                positions[symbol] = after
            open_count += (after != 0) - (position != 0)
            orders_today[symbol] = orders_today.get(symbol, 0) + 1
            total += 1
            if order.side == "buy":
                cash -= notional
                buying_power -= notional
    return out


# -- the run -----------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Order:
    s: int
    side: str
    qty: float
    ref_price: float
    created: int
    cid: str
    fill_row: int
    row: int  # its row in the orders table of the result
    status: str = "open"


class _Position(NamedTuple):
    qty: float
    avg_price: float
    mark_price: float | None


class _BookFill(NamedTuple):
    symbol: str
    side: str
    qty: float
    price: float
    commission: float


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _run_settings(inputs: BacktestInputs, settings: CycleSettings | None) -> CycleSettings:
    if settings is None:
        return inputs.settings
    if not isinstance(settings, CycleSettings):
        raise InvalidInputError(f"settings must be CycleSettings, got {type(settings).__name__}")
    differ = [f for f in PREPARE_FIELDS if getattr(settings, f) != getattr(inputs.settings, f)]
    if differ:
        raise InvalidInputError(f"settings differ from the prepared ones in {differ}: these shape the inputs; "
                                "call prepare_backtest again with them")
    return settings


def _target_panel(inputs: BacktestInputs, targets: Any) -> np.ndarray:
    if isinstance(targets, pd.DataFrame):
        targets = targets.reindex(columns=list(inputs.symbols)).to_numpy(dtype=np.float64)
    try:
        out = np.asarray(targets, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"targets must be numbers, (cycles, symbols): {err}") from None
    if out.shape != inputs.shape:
        raise InvalidInputError(f"targets must have shape (cycles, symbols) {inputs.shape}, got {out.shape}")
    if np.isinf(out).any():
        raise InvalidInputError("targets must be finite numbers or NaN (keep the position)")
    return out  # a negative target is a short: the risk layer judges it as the cycle would


def run_backtest(inputs: BacktestInputs, settings: CycleSettings | None = None, *,
                 initial_cash: float = DEFAULT_INITIAL_CASH, commission_bps: float = 0.0, slippage_bps: float = 5.0,
                 commission_per_order: float = 0.0, untradable: Iterable[str] = (),
                 targets: Any = None) -> BacktestResult:
    """Step the cycles of ``inputs`` in order (see the module docstring) from a book holding ``initial_cash``.

    :param inputs: from :func:`prepare_backtest`.
    :param settings: the run's settings (default the prepared ones); :data:`PREPARE_FIELDS` must be the prepared.
    :param initial_cash: the book's starting cash (> 0).
    :param commission_bps: commission, basis points of a fill's notional (the simulated broker's).
    :param slippage_bps: adverse slippage of fills, basis points of the open.
    :param commission_per_order: fixed commission per fill.
    :param untradable: symbols the broker refuses (the risk layer's ``tradable`` rule rejects their orders).
    :param targets: a (cycles, symbols) target position per cycle (a DataFrame with the symbols as columns, or an
        array in :attr:`BacktestInputs.symbols` order), NaN where it keeps the position: replaces the signals and
        decisions; orders go through the same risk checks (confidence 1), fills and accounting.
    :raises InvalidInputError: for bad settings, costs, cash or targets.
    """
    if not isinstance(inputs, BacktestInputs):
        raise InvalidInputError(f"inputs must come from prepare_backtest, got {type(inputs).__name__}")
    settings = _run_settings(inputs, settings)
    if isinstance(initial_cash, bool) or not isinstance(initial_cash, int | float) or not math.isfinite(initial_cash) \
            or initial_cash <= 0:
        raise InvalidInputError(f"initial_cash must be a positive number, got {initial_cash!r}")
    commission_bps = _non_negative(commission_bps, "commission_bps")
    slippage = _non_negative(slippage_bps, "slippage_bps") / 10_000.0
    per_order = _non_negative(commission_per_order, "commission_per_order")
    if isinstance(untradable, str):
        untradable = [untradable]
    refused_assets = {str(s).upper() for s in untradable}
    _check_decide_settings(settings)
    K, S = inputs.shape
    if targets is not None:
        goal = _target_panel(inputs, targets)
        score = confidence = np.ones((K, S))
    else:
        if not inputs.signals:
            raise InvalidInputError("inputs were prepared with signals=False: give targets, or prepare with signals")
        goal = None
        score, confidence = combine(inputs.signals, settings.weights)
    return _simulate(inputs, settings, float(initial_cash), slippage, commission_bps, per_order, refused_assets,
                     score, confidence, goal)


def _simulate(inputs: BacktestInputs, settings: CycleSettings, initial_cash: float, slippage: float,
              commission_bps: float, per_order: float, untradable: set[str], score: np.ndarray,
              confidence: np.ndarray, goal: np.ndarray | None) -> BacktestResult:
    K, S = inputs.shape
    syms = inputs.symbols
    limits = settings.limits
    limit = settings.max_abs_return
    crypto = inputs.crypto
    tradable = np.array([s.upper() not in untradable for s in syms])
    cycles = inputs.cycles.asi8
    qty, avg = np.zeros(S), np.zeros(S)
    mark, mark_ts = np.full(S, np.nan), np.full(S, _NAT, dtype=np.int64)
    has_row = np.zeros(S, dtype=bool)
    cash = initial_cash
    open_orders: list[_Order] = []
    order_rows: list[dict[str, Any]] = []
    fill_rows: list[dict[str, Any]] = []
    book_fills: list[tuple[int, _BookFill]] = []  # (fill bar ts, fill): undone for the start-of-day equity
    equity_rows: list[tuple[Any, float, float, float]] = []
    claimed: list[set[int]] = [set() for _ in range(S)]
    day_key, day_counts = _NAT, {}  # type: ignore[var-annotated]
    srange = np.arange(S)
    floor = np.minimum.accumulate(inputs.reference[::-1])[::-1]  # the earliest reference of this cycle or later
    first_recent = 0

    def value() -> float:
        held_idx = np.flatnonzero(qty)
        prices = np.where(np.isnan(mark[held_idx]), avg[held_idx], mark[held_idx])
        return float(sum((qty[held_idx] * prices).tolist()))

    for k in range(K):
        now = int(cycles[k])
        now_ts = inputs.cycles[k]
        # 1. the broker catches up: open orders fill at the open of their bar once it has started
        if open_orders:
            still: list[_Order] = []
            for o in open_orders:
                s, j = o.s, o.fill_row
                if j >= inputs.n_bars[s] or inputs.bar_start[s, j] > now or inputs.refused[k, s] \
                        or j < inputs.first_row[k, s]:
                    still.append(o)
                    continue
                open_ = float(inputs.bar_open[s, j])
                if inputs.bar_end[s, j] > now and not _open_ok(open_, float(inputs.last_close[k, s]), limit):
                    still.append(o)  # the bar in progress, its open refused: nothing fills at it
                    continue
                price = open_ * (1 + slippage) if o.side == "buy" else open_ * (1 - slippage)
                commission = per_order + commission_bps * abs(price * o.qty) / 10_000.0
                row = order_rows[o.row]
                if o.side == "buy" and price * o.qty + commission > cash:
                    o.status = row["status"] = "canceled"
                    row["reason"] = (f"insufficient buying power at the fill: {o.qty:g} x {price:.4f} + commission "
                                     f"{commission:.2f} > cash {cash:,.2f}")
                    continue
                effect = apply_fill(float(qty[s]), float(avg[s]), side=o.side, fill_qty=o.qty, price=price,
                                    commission=commission)
                qty[s], avg[s] = effect.qty, effect.avg_price
                cash = cash + float(effect.cash_change)
                bar_ns = int(inputs.bar_ts[s, j])
                if not has_row[s] or mark_ts[s] == _NAT or mark_ts[s] < bar_ns:
                    mark[s], mark_ts[s] = price, bar_ns
                has_row[s] = True
                o.status = row["status"] = "filled"
                fill_rows.append({"client_order_id": o.cid, "symbol": syms[s], "side": o.side, "qty": o.qty,
                                  "price": price, "open": open_, "commission": commission,
                                  "bar_ts": pd.Timestamp(bar_ns, tz="UTC"), "filled_at": now_ts})
                book_fills.append((bar_ns, _BookFill(syms[s], o.side, o.qty, price, commission)))
            open_orders = still
        # marks: the last gated close, where it is not older than the mark
        e = inputs.last_row[k]
        idx = np.flatnonzero((e >= 0) & (qty != 0))
        if idx.size:
            close = inputs.bar_close[idx, e[idx]]
            stamp = inputs.bar_ts[idx, e[idx]]
            later = np.isfinite(close) & (close > 0) & ((mark_ts[idx] == _NAT) | (mark_ts[idx] <= stamp))
            mark[idx[later]], mark_ts[idx[later]] = close[later], stamp[later]
        positions_value = value()
        equity = cash + positions_value

        # 2. decisions on the position each symbol will have once the open orders fill
        held = qty.copy()
        for o in open_orders:
            held[o.s] = held[o.s] + (o.qty if o.side == "buy" else -o.qty)
        price = inputs.price[k]
        if goal is None:
            side, order_qty, _ = decide_arrays(
                score[k], confidence[k], price, held, equity if equity > 0 else 1.0,
                min_confidence=limits.min_confidence, min_score=settings.min_score, sizing=settings.sizing,
                fraction=settings.fraction, target_volatility=settings.target_volatility,
                volatility=inputs.volatility[k], fractionable=crypto, allow_short=limits.allow_short)
        else:
            side, order_qty = _target_orders(goal[k], price, held, crypto)
        # decided once per bar (bar-aware) where the market is open now: a later cycle on that bar is skipped
        decided = np.flatnonzero(inputs.bar_of[k] != _NAT)
        if settings.bar_aware:
            skip = np.zeros(S, dtype=bool)
            for s in decided[inputs.market_open[k, decided]]:
                bar = int(inputs.bar_of[k, s])
                if bar in claimed[s]:
                    skip[s] = True
                else:
                    claimed[s].add(bar)
            side = np.where(skip, 0, side)
        act = srange[(side != 0) & (inputs.bar_of[k] != _NAT)]

        # 3. risk, then 4. orders
        if act.size:
            reference = int(inputs.reference[k])
            while first_recent < len(book_fills) and book_fills[first_recent][0] < floor[k]:
                first_recent += 1  # older than every later cycle's reference: never undone again
            if inputs.day_start[k] != day_key:
                day_key, day_counts = int(inputs.day_start[k]), {}
            reserved = sum(o.qty * o.ref_price for o in open_orders if o.side == "buy")
            sod = _start_of_day(inputs, k, cash, syms, qty, avg, mark, has_row,
                                [f for bar_ns, f in book_fills[first_recent:] if bar_ns >= reference])
            sides = ["buy" if side[s] > 0 else "sell" for s in act]
            proposed = [ProposedOrder(syms[s], sd, float(order_qty[s]), float(price[s]), float(confidence[k, s]),
                                      bool(crypto[s])) for s, sd in zip(act, sides, strict=True)]
            verdicts = check_batch(
                proposed, equity=equity, cash=cash, buying_power=max(cash - reserved, 0.0), start_of_day_equity=sod,
                positions={syms[s]: float(held[s]) for s in np.flatnonzero(held)}, orders_today=day_counts,
                tradable={syms[s]: bool(tradable[s]) for s in act},
                shortable={syms[s]: bool(tradable[s] and not crypto[s]) for s in act},
                market_open={syms[s]: bool(inputs.market_open[k, s]) for s in act},
                limits=limits, kill_switch=settings.kill_switch_now())
            accepted: list[_Order] = []
            for s, sd, order, verdict in zip(act, sides, proposed, verdicts, strict=True):
                s = int(s)
                bar_ts = pd.Timestamp(int(inputs.bar_of[k, s]), tz="UTC")
                reason = verdict.reason
                if verdict.rule == "tradable" and not tradable[s]:
                    reason = f"{reason}: {syms[s]} is not tradable at the simulated broker"
                row = {"decided_at": now_ts, "run_id": inputs.run_ids[k], "client_order_id": None,
                       "symbol": syms[s], "side": sd, "qty": order.qty, "ref_price": order.price, "bar_ts": bar_ts,
                       "score": float(score[k, s]), "confidence": order.confidence, "approved": verdict.approved,
                       "risk_rule": verdict.rule, "reason": reason, "status": "risk_rejected"}
                order_rows.append(row)
                if not verdict.approved:
                    continue
                cid = client_order_id(inputs.dag_id, inputs.run_ids[k], syms[s], bar_ts, sd)
                row["client_order_id"] = cid  # (check_batch counted it in the day's orders)
                if sd == "buy" and order.qty * order.price > cash - reserved:
                    row["status"] = "broker_rejected"
                    row["reason"] = (f"insufficient buying power: {order.qty:g} {syms[s]} x {order.price:.4f} = "
                                     f"{order.qty * order.price:,.2f} > buying power {cash - reserved:,.2f}")
                    continue
                if sd == "buy":
                    reserved += order.qty * order.price
                row["status"] = "open"
                n = int(inputs.n_bars[s])
                fill_row = max(int(inputs.last_row[k, s]) + 1,
                               int(np.searchsorted(inputs.bar_start[s, :n], now, side="left")))
                accepted.append(_Order(s, sd, order.qty, order.price, now, cid, fill_row, len(order_rows) - 1))
            open_orders.extend(sorted(accepted, key=lambda o: o.cid))
        # 5. the snapshot
        equity_rows.append((now_ts, cash, positions_value, equity))
    return _result(inputs, settings, initial_cash, slippage, equity_rows, order_rows, fill_rows)


def _target_orders(goal: np.ndarray, price: np.ndarray, held: np.ndarray, crypto: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Orders moving each position to its target (NaN: none), in whole shares or 1e-6 steps as decided orders."""
    side = np.zeros(len(goal), dtype=np.int8)
    qty = np.zeros(len(goal))
    for s in np.flatnonzero(np.isfinite(goal) & np.isfinite(price) & (price > 0)):
        frac = bool(crypto[s])
        target = _round_toward_zero(float(goal[s]), frac)
        delta = _round_toward_zero(target - float(held[s]), frac)
        if delta == 0 or abs(delta) * float(price[s]) < 1.0:
            continue
        side[s], qty[s] = (1 if delta > 0 else -1), abs(delta)
    return side, qty


def _start_of_day(inputs: BacktestInputs, k: int, cash: float, syms: tuple[str, ...], qty: np.ndarray,
                  avg: np.ndarray, mark: np.ndarray, has_row: np.ndarray, later: list[_BookFill]) -> float:
    """The book's equity at the loss reference: :func:`book_at` as the simulated cycle calls it, on the positions
    (in the store's order) that are open or that ``later`` (the fills of bars stamped at or after the reference)
    touch: the flat ones left out would count nothing."""
    touched = {f.symbol for f in later}
    rows = np.flatnonzero(has_row & ((qty != 0) | np.isin(np.asarray(syms), list(touched))))
    positions = {syms[s]: _Position(float(qty[s]), float(avg[s]), None if np.isnan(mark[s]) else float(mark[s]))
                 for s in rows}
    closes = inputs.reference_close[k]
    prices = {syms[s]: float(closes[s]) for s in rows if np.isfinite(closes[s])}
    return book_at(cash, positions, later, prices)


# -- the result --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BacktestResult:
    """What a backtest did.

    :param equity: one row per cycle (its snapshot): ``ts``, ``cash``, ``positions_value``, ``equity``.
    :param orders: one row per buy or sell decided (risk-rejected ones included): ``decided_at``, ``run_id``,
        ``client_order_id`` (approved ones), ``symbol``, ``side``, ``qty``, ``ref_price``, ``bar_ts`` (the bar
        decided on), ``score``, ``confidence``, ``approved``, ``risk_rule``, ``reason``, ``status``
        (``risk_rejected``, ``broker_rejected``, ``canceled``, ``filled``, ``open``).
    :param fills: ``client_order_id``, ``symbol``, ``side``, ``qty``, ``price``, ``open`` (the bar's open),
        ``commission``, ``bar_ts`` (the bar filled at), ``filled_at`` (the cycle that saw it).
    :param trades: closed trades (:func:`~airflow_provider_portfolio.trading.performance.closed_trades`):
        ``symbol``, ``direction``, ``qty``, ``entry_price``, ``exit_price``, ``pnl``, ``closed_at``.
    :param metrics: see :func:`backtest_metrics`.
    """

    equity: pd.DataFrame
    orders: pd.DataFrame
    fills: pd.DataFrame
    trades: pd.DataFrame
    metrics: dict[str, Any]
    settings: CycleSettings
    initial_cash: float
    symbols: tuple[str, ...] = field(default_factory=tuple)

    @property
    def final_equity(self) -> float:
        """The last snapshot's equity."""
        return float(self.equity["equity"].iloc[-1])

    def to_dict(self) -> dict[str, Any]:
        """A small JSON summary (XCom): the metrics, non-finite numbers as ``None``."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        first, last = self.equity["ts"].iloc[0], self.equity["ts"].iloc[-1]
        return {"symbols": len(self.symbols), "cycles": len(self.equity), "first_cycle": first.isoformat(),
                "last_cycle": last.isoformat(), "initial_cash": self.initial_cash,
                **{k: clean(v) for k, v in self.metrics.items()}}


_ORDER_COLUMNS = ["decided_at", "run_id", "client_order_id", "symbol", "side", "qty", "ref_price", "bar_ts", "score",
                  "confidence", "approved", "risk_rule", "reason", "status"]
_FILL_COLUMNS = ["client_order_id", "symbol", "side", "qty", "price", "open", "commission", "bar_ts", "filled_at"]
_TRADE_COLUMNS = ["symbol", "direction", "qty", "entry_price", "exit_price", "pnl", "closed_at"]


def backtest_metrics(equity: pd.DataFrame, fills: pd.DataFrame, orders: pd.DataFrame, trades: Sequence[Any],
                     *, initial_cash: float, slippage: float, periods_per_year: float) -> dict[str, Any]:
    """The figures of a backtest.

    - ``total_return``: last equity / ``initial_cash`` - 1; ``annualised_return``: ``(1 + total) ** (periods_per_year
      / n) - 1`` over the ``n`` daily returns;
    - ``volatility``: the sample standard deviation of the daily returns times ``sqrt(periods_per_year)``;
      ``sharpe``, ``sortino``: :func:`~airflow_provider_portfolio.trading.performance.sharpe_ratio` and
      ``sortino_ratio`` of the daily returns; ``max_drawdown``: of the equity curve;
    - ``win_rate``, ``profit_factor``: of the closed trades;
    - ``turnover``: the notional filled over the mean equity; ``commission``, ``slippage_cost`` (``qty * |price -
      open|`` of every fill) and ``costs``, their sum, in the account's currency;
    - counts of orders (decided buys and sells), approved, rejected by risk, rejected by the broker, canceled,
      fills, orders open at the end, closed trades.
    """
    points = list(zip(equity["ts"], equity["equity"], strict=True))
    returns = period_returns(points, tz="UTC")
    final = float(equity["equity"].iloc[-1])
    total = final / initial_cash - 1.0
    n = len(returns)
    annual = (1.0 + total) ** (periods_per_year / n) - 1.0 if n and total > -1 else None
    if n >= 2:
        mean = math.fsum(returns) / n
        vol: float | None = math.sqrt(math.fsum((r - mean) ** 2 for r in returns) / (n - 1)) \
            * math.sqrt(periods_per_year)
    else:
        vol = None
    dd = drawdown(equity["equity"].tolist())
    notional = float((fills["qty"] * fills["price"]).abs().sum()) if len(fills) else 0.0
    commission = float(fills["commission"].sum()) if len(fills) else 0.0
    slip = float((fills["qty"] * (fills["price"] - fills["open"]).abs()).sum()) if len(fills) else 0.0
    status = orders["status"].value_counts().to_dict() if len(orders) else {}
    return {
        "final_equity": final, "total_return": total, "annualised_return": annual, "volatility": vol,
        "sharpe": sharpe_ratio(returns, periods_per_year), "sortino": sortino_ratio(returns, periods_per_year),
        "max_drawdown": None if dd is None else dd.maximum, "win_rate": win_rate(trades),
        "profit_factor": profit_factor(trades), "turnover": notional / float(equity["equity"].mean()),
        "commission": commission, "slippage_cost": slip, "costs": commission + slip,
        "periods_per_year": periods_per_year, "daily_returns": n,
        "orders": len(orders), "approved": int(orders["approved"].sum()) if len(orders) else 0,
        "risk_rejected": int(status.get("risk_rejected", 0)), "broker_rejected": int(status.get("broker_rejected", 0)),
        "canceled": int(status.get("canceled", 0)), "fills": len(fills), "open_orders": int(status.get("open", 0)),
        "trades": len(trades), "slippage_bps": slippage * 10_000.0,
    }


def _result(inputs: BacktestInputs, settings: CycleSettings, initial_cash: float, slippage: float,
            equity_rows: list[tuple[Any, float, float, float]], order_rows: list[dict[str, Any]],
            fill_rows: list[dict[str, Any]]) -> BacktestResult:
    equity = pd.DataFrame(equity_rows, columns=["ts", "cash", "positions_value", "equity"])
    orders = pd.DataFrame(order_rows, columns=_ORDER_COLUMNS)
    for name in ("client_order_id", "risk_rule"):  # None where there is none, whatever pandas infers for text
        orders[name] = pd.Series([row[name] for row in order_rows], index=orders.index, dtype=object)
    fills = pd.DataFrame(fill_rows, columns=_FILL_COLUMNS)
    trades = closed_trades(fill_rows)
    trade_frame = pd.DataFrame([(t.symbol, t.direction, t.qty, t.entry_price, t.exit_price, t.pnl, t.closed_at)
                                for t in trades], columns=_TRADE_COLUMNS)
    per_year = 365 if bool(inputs.crypto.all()) else TRADING_DAYS_PER_YEAR
    metrics = backtest_metrics(equity, fills, orders, trades, initial_cash=initial_cash, slippage=slippage,
                               periods_per_year=per_year)
    return BacktestResult(equity, orders, fills, trade_frame, metrics, settings, initial_cash, inputs.symbols)


def backtest(bars: pd.DataFrame, symbols: Sequence[str], *, cycles: Sequence[datetime] | None = None,
             cycle_time: str | time | None = None, start: object = None, end: object = None,
             settings: CycleSettings | None = None, news: Any = None, forecasts: pd.DataFrame | None = None,
             evaluations: pd.DataFrame | None = None, dag_id: str = "backtest", run_ids: Sequence[str] | None = None,
             initial_cash: float = DEFAULT_INITIAL_CASH, commission_bps: float = 0.0, slippage_bps: float = 5.0,
             commission_per_order: float = 0.0, untradable: Iterable[str] = (), news_days: bool = False
             ) -> BacktestResult:
    """:func:`prepare_backtest` then :func:`run_backtest`, in one call (same parameters)."""
    inputs = prepare_backtest(bars, symbols, cycles=cycles, cycle_time=cycle_time, start=start, end=end,
                              settings=settings, news=news, forecasts=forecasts, evaluations=evaluations,
                              dag_id=dag_id, run_ids=run_ids, news_days=news_days)
    return run_backtest(inputs, initial_cash=initial_cash, commission_bps=commission_bps, slippage_bps=slippage_bps,
                        commission_per_order=commission_per_order, untradable=untradable)

