"""One trading cycle: bars -> signals -> decisions -> risk -> orders -> ledger. Plain Python, no Airflow.

:func:`run_cycle` is what the ``AutoTraderOperator`` and the agent DAGs' tasks run, holding the account's
lock throughout (:meth:`TradingLedger.account_lock`: one cycle per account at a time, whichever DAG, run or
mapped chunk runs it):

1. **Bars**: a bar has *started* when its session opened (a daily bar stamped at midnight UTC starts at the
   session's open; :func:`~airflow_provider_portfolio.market.calendar.bar_times`) and *closed* at its end.
   The closed bars pass the ETL's quality gate (:func:`gate_bars`, a symbol's bars whole); the bar still in
   progress is judged by its open alone (:func:`forming_opens`). The broker catches up
   (:meth:`Broker.sync`: the simulated broker fills open orders at the open of a bar that started after
   them; Alpaca's orders are reconciled).
2. **Settle** every order left ``pending_submit`` by an earlier run or try (:func:`settle_unsent`): looked up;
   one the broker does not have is ``not_placed`` and never counts as a position.
3. **Signals** per symbol: technical (on the closed bars), forecast (the stored ensemble forecast, ignored
   when its model is not healthy or the forecast is stale), sentiment (news, decayed by age).
4. **Decisions** (:func:`~airflow_provider_portfolio.trading.decision.decide`) on the last closed bar, from
   the position each symbol will have once the account's open orders fill (so an accepted, unfilled order is
   never repeated). A symbol with no bars, stale or refused bars, a last close far from its recent history
   (:func:`_price_check`) or an earlier order in an unknown state is a ``hold`` with the reason in ``error``.
   Decisions are **claimed** in the ledger under (dag, symbol, timeframe, bar[, run]): with ``bar_aware`` a
   bar another run already decided is skipped (where the market is open now), and a retry of the same run
   carries out its stored decision.
5. **Risk**: every order passes :func:`~airflow_provider_portfolio.trading.risk.check_orders` against the
   broker's account, the day's loss from the previous session's close (:func:`loss_reference`), the day's
   order counts from the ledger, the broker's asset flags and the calendar (market open); the verdict is
   stored with the decision. Nothing rejected reaches the broker.
6. **Orders**: right before sending, the approved orders not yet at the broker are checked again with the
   kill switch read at that moment; each is recorded (``pending_submit``) before it is sent, then sent at
   most once under its client order id; the broker's answer is recorded. A refusal is recorded as
   ``rejected``; an unknown outcome leaves it ``pending_submit`` and :class:`CycleReport.unknown` names it, so
   the caller can fail the task: a retry looks the id up before sending anything.
7. A **performance snapshot** (cash, positions value, equity) is written.

Equities trade in whole shares, crypto pairs in fractions (the sizing never asks a broker for fractions it
may refuse).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.calendar import ALWAYS_OPEN, MarketCalendar, bar_times, calendar_for_symbol
from airflow_provider_portfolio.market.params import is_crypto, validate_symbols
from airflow_provider_portfolio.market.quality import QualityRules, validate_bars
from airflow_provider_portfolio.trading.brokers import (
    BrokerRejectedError,
    OrderRequest,
    OrderStateUnknownError,
)
from airflow_provider_portfolio.trading.decision import AUTO_TRADER_WEIGHTS, check_weights, combine, decide
from airflow_provider_portfolio.trading.orders import client_order_id
from airflow_provider_portfolio.trading.risk import (
    AccountState,
    ProposedOrder,
    RiskLimits,
    check_orders,
    normalise_kill_switch,
)
from airflow_provider_portfolio.trading.signals import (
    Signal,
    atr,
    forecast_signal,
    sentiment_signal,
    technical_signal,
)

if TYPE_CHECKING:
    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers import Broker

log = logging.getLogger(__name__)

#: Bars of history the signals look at (the slowest moving average needs 50).
LOOKBACK_BARS = 120


@dataclass(frozen=True)
class CycleSettings:
    """How a cycle decides. Defaults are the portfolio auto trader's.

    :param timeframe: the bars decided on (``1Day``, ``30Min``...).
    :param weights: signal name (``technical``, ``forecast``, ``sentiment``) -> weight.
    :param limits: the hard risk limits.
    :param kill_switch: the raw kill switch value (Variable ``portfolio.kill_switch``).
    :param bar_aware: decide each bar once per DAG, whatever runs overlap (where the symbol's market is open at
        the cycle's instant: a decision made while it is closed cannot trade and leaves the bar to a later run).
    :param min_score: the smallest |combined score| traded.
    :param sizing: ``fixed_fraction`` or ``volatility``.
    :param fraction: the target position as a fraction of equity at full score.
    :param target_volatility: per-bar volatility aimed at under volatility sizing.
    :param max_stale_bars: how many bars a symbol's last bar may lag its calendar.
    :param exchange: the calendar of equities.
    :param news_half_life_hours: the age at which a news item weighs half.
    :param max_abs_return: the quality gate's implausible move, bar to bar, of the bars decided on; also the
        largest distance of the last close from the median of the 20 closes before it (``None``: neither).
    :param lock_timeout_s: how long a cycle waits for its account's lock (another cycle trading it), seconds.

    ``kill_switch`` may be a callable returning the raw value: it is then read again right before orders are
    sent (the operator passes the Variable's reader).
    """

    timeframe: str = "1Day"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(AUTO_TRADER_WEIGHTS))
    limits: RiskLimits = field(default_factory=RiskLimits)
    kill_switch: object = "active"
    bar_aware: bool = True
    min_score: float = 0.1
    sizing: str = "fixed_fraction"
    fraction: float = 0.05
    target_volatility: float = 0.01
    max_stale_bars: int = 2
    exchange: str = "XNYS"
    news_half_life_hours: float = 24.0
    max_abs_return: float | None = 0.5
    lock_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        parse_timeframe(self.timeframe)
        QualityRules(max_abs_return=self.max_abs_return)  # checks it
        if isinstance(self.lock_timeout_s, bool) or not isinstance(self.lock_timeout_s, int | float) \
                or not math.isfinite(self.lock_timeout_s) or self.lock_timeout_s < 0:
            raise InvalidInputError(f"lock_timeout_s must be a finite number >= 0, got {self.lock_timeout_s!r}")
        object.__setattr__(self, "weights", check_weights(self.weights))
        unknown = sorted(set(self.weights) - {"technical", "forecast", "sentiment"})
        if unknown:
            raise InvalidInputError(f"unknown signal name(s) {unknown} in weights: use technical, forecast, sentiment")
        if not isinstance(self.limits, RiskLimits):
            raise InvalidInputError(f"limits must be RiskLimits, got {type(self.limits).__name__}")
        if isinstance(self.max_stale_bars, bool) or not isinstance(self.max_stale_bars, int) or self.max_stale_bars < 0:
            raise InvalidInputError(f"max_stale_bars must be an integer >= 0, got {self.max_stale_bars!r}")

    def kill_switch_now(self) -> str:
        """The kill switch state now (``kill_switch`` called when it is a reader), normalised."""
        raw = self.kill_switch
        if callable(raw):
            try:
                raw = raw()
            except Exception as err:  # an unreadable kill switch stops trading
                log.error("could not read the kill switch (%s): trading as 'halted'", err)
                return "halted"
        return normalise_kill_switch(raw)


@dataclass
class CycleReport:
    """What a cycle did (JSON-friendly through :meth:`to_dict`)."""

    decided: int = 0
    skipped: list[str] = field(default_factory=list)
    holds: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    broker_rejected: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    synced: int = 0
    equity: dict[str, float] = field(default_factory=dict)
    start_of_day_equity: float | None = None
    loss_reference: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "decided": self.decided, "skipped": len(self.skipped), "holds": self.holds, "errors": self.errors,
            "risk_rejected": self.rejected, "submitted": len(self.submitted), "broker_rejected": self.broker_rejected,
            "unknown": self.unknown, "synced_orders": self.synced, "equity": self.equity,
            "start_of_day_equity": self.start_of_day_equity, "loss_reference": self.loss_reference,
        }


# -- bars ------------------------------------------------------------------------------------------------

def closed_bars(bars: pd.DataFrame, now: datetime, timeframe: str, exchange: str = "XNYS") -> pd.DataFrame:
    """The rows of ``bars`` (one timeframe) whose bar has closed by ``now`` (their closes are known)."""
    if bars.empty:
        return bars
    _, ends = bar_times(bars.assign(timeframe=timeframe), exchange)
    return bars[ends <= pd.Timestamp(now).as_unit("ns").value].reset_index(drop=True)


def started_bars(bars: pd.DataFrame, now: datetime, exchange: str = "XNYS") -> pd.DataFrame:
    """The rows of ``bars`` whose bar has started by ``now`` (their opens are known): a daily bar once its
    session has opened, not at its midnight-UTC timestamp."""
    if bars.empty:
        return bars
    starts, _ = bar_times(bars, exchange)
    return bars[starts <= pd.Timestamp(now).as_unit("ns").value].reset_index(drop=True)


def expected_last_bar(symbol: str, now: datetime, timeframe: str, exchange: str = "XNYS",
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


def _panels(bars: pd.DataFrame, symbols: Sequence[str], lookback: int) -> dict[str, np.ndarray]:
    """(symbols, lookback) close/high/low panels, right-aligned, NaN-padded on the left; and last ts."""
    n = len(symbols)
    out = {k: np.full((n, lookback), np.nan) for k in ("close", "high", "low")}
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


# -- signals -------------------------------------------------------------------------------------------

def _forecast_inputs(symbols: Sequence[str], last_close: np.ndarray, forecasts: pd.DataFrame | None,
                     evaluations: pd.DataFrame | None, now: datetime) -> tuple[np.ndarray, ...]:
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


# -- the cycle -----------------------------------------------------------------------------------------

def _day_start(now: datetime, exchange: str) -> datetime:
    """Midnight of ``now``'s date in the exchange's time zone, as UTC: the trading day's start."""
    local = pd.Timestamp(now).tz_convert(MarketCalendar(exchange).timezone)
    return local.normalize().tz_convert("UTC").to_pydatetime()


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float | np.floating) and math.isfinite(value) else None


def gate_bars(bars: pd.DataFrame, settings: CycleSettings) -> tuple[pd.DataFrame, dict[str, str]]:
    """The bars a cycle may decide and fill on: the ETL's quality gate, a symbol's batch passing or failing
    whole (``implausible_jump`` at ``settings.max_abs_return``); and symbol -> why its bars were refused."""
    if bars.empty:
        return bars, {}
    clean, failed = validate_bars(bars, calendar_for=lambda s: calendar_for_symbol(s, settings.exchange),
                                  rules=QualityRules(max_abs_return=settings.max_abs_return))
    return clean, {symbol: f"bars refused by the quality gate: {err}" for symbol, err in failed.items()}


def forming_opens(forming: pd.DataFrame, closed: pd.DataFrame, refused: Mapping[str, str],
                  settings: CycleSettings) -> tuple[pd.DataFrame, dict[str, str]]:
    """Of the bars in progress (``forming``), those whose open may fill an order: only their open is known (a
    vendor's forming bar, or a replay's whole future bar, says nothing trustworthy of its high, low or close, so
    only the open is checked): finite, positive, and within ``max_abs_return`` of the symbol's last gated close.
    Symbols whose closed bars were refused get none. Returns them and symbol -> why an open was refused."""
    forming = forming[~forming["symbol"].isin(list(refused))]
    if forming.empty:
        return forming, {}
    last = closed.sort_values(["symbol", "ts"]).groupby("symbol", sort=False)["close"].last() if not closed.empty \
        else pd.Series(dtype=float)
    opens = forming["open"].to_numpy(dtype=np.float64)
    base = forming["symbol"].map(last).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        move = np.abs(opens / base - 1.0)
    bad = ~(np.isfinite(opens) & (opens > 0))
    if settings.max_abs_return is not None:
        bad |= np.isfinite(move) & (move > settings.max_abs_return)
    errors = {}
    for row in forming[bad].itertuples(index=False):
        errors[row.symbol] = (f"bars refused by the quality gate: {row.symbol}: the open {row.open!r} of the bar "
                              f"in progress ({pd.Timestamp(row.ts).isoformat()}) is not plausible after the last "
                              f"close {last.get(row.symbol, float('nan')):.6g} (max_abs_return "
                              f"{settings.max_abs_return}): nothing fills at it")
    return forming[~bad], errors


def _price_check(symbols: Sequence[str], closes: np.ndarray, limit: float | None) -> dict[str, str]:
    """symbol -> why its last close is not trusted: farther than ``limit`` from the median of the 20 closes
    before it (a bad tick at the end of an otherwise clean history)."""
    if limit is None or closes.shape[1] < 2:
        return {}
    history = closes[:, -21:-1]
    out: dict[str, str] = {}
    enough = np.sum(np.isfinite(history), axis=1) >= 5
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        median = np.nanmedian(history, axis=1)
        move = np.abs(closes[:, -1] / median - 1.0)
    for i in np.flatnonzero(enough & np.isfinite(move) & (move > limit)):
        out[symbols[i]] = (f"price check: last close {closes[i, -1]:.6g} is {move[i]:.1%} from the median "
                           f"{median[i]:.6g} of the closes before it (limit {limit:.0%}): not traded on it")
    return out


def settle_unsent(broker: Broker, ledger: TradingLedger, *, dag_id: str, run_id: str,
                  current: Mapping[str, pd.Timestamp | None], report: CycleReport) -> set[str]:
    """Settle every order left ``pending_submit`` (recorded, maybe never sent) by any earlier run or try, before
    anything is sized: look it up by client order id; the broker's order is recorded, no order at the broker
    means ``not_placed`` (never sent; it no longer counts as a position). This run's own order for the bar it
    decides now is left to :func:`execute_step` (which looks it up before sending).

    Runs under the account's lock, so no other cycle is between recording and sending an order.

    :param current: symbol -> the bar this cycle decides for it.
    :return: the symbols with an order whose state is still unknown (the look-up failed): not traded now.
    """
    unknown: set[str] = set()
    for order in ledger.orders(broker.account, open_only=True):
        if order["status"] != "pending_submit":
            continue
        cid, symbol = order["client_order_id"], order["symbol"]
        bar = current.get(symbol)
        if (order["dag_id"], order["run_id"]) == (dag_id, run_id) and bar is not None \
                and pd.Timestamp(order["bar_ts"]) == pd.Timestamp(bar):
            continue
        try:
            state = broker.lookup(cid)
        except OrderStateUnknownError as err:
            unknown.add(symbol)
            report.unknown[symbol] = f"order {cid} of run {order['run_id']}: state unknown: {err}"
            log.error("order %s (%s) of an earlier run: state unknown: %s; %s is not traded until it is settled",
                      cid, order["run_id"], err, symbol)
            continue
        report.synced += 1
        if state is None:
            ledger.update_order(broker.account, cid, status="not_placed",
                                reason="recorded but never placed (the broker has no order with this id): not sent")
            log.warning("order %s (%s %g %s, run %s) was never placed: settled as not_placed", cid, order["side"],
                        order["qty"], symbol, order["run_id"])
        else:
            ledger.update_order(broker.account, cid, status=state.status, broker_order_id=state.broker_order_id,
                                filled_qty=state.filled_qty, filled_avg_price=state.filled_avg_price)
            log.warning("order %s (run %s) is at the broker (%s): recorded", cid, order["run_id"], state.status)
    return unknown


def _start_of_day_equity(state: Any, closed: pd.DataFrame, ends: np.ndarray, symbols: Sequence[str],
                         now: datetime, *, broker: Broker, ledger: TradingLedger,
                         settings: CycleSettings) -> tuple[float, pd.Timestamp]:
    """The equity "today's loss" is measured from, and the instant it stands for (:func:`loss_reference`):
    the broker's own (Alpaca's ``last_equity``); for the simulated book, the book at that instant valued at the
    closes of that instant; else the last snapshot by then; else equity now (logged: the limit cannot fire).

    :param closed: the cycle's closed, gated bars; ``ends``: when each ended (int64 ns UTC).
    """
    reference = loss_reference(int(ends.max()) if ends.size else None, symbols, now, settings.exchange)
    if state.start_of_day_equity is not None:
        return float(state.start_of_day_equity), reference
    if broker.kind == "simulated":
        return ledger.equity_at(broker.account, reference, closes_at(closed, ends, reference)), reference
    stored = ledger.last_equity_at(broker.account, reference)
    if stored is None:
        log.warning("%s: no equity known at %s: the daily loss limit measures from equity now", broker.account,
                    reference.isoformat())
        return float(state.equity), reference
    return stored, reference


def decide_step(
    symbols: Sequence[str],
    bars: pd.DataFrame,
    now: datetime,
    *,
    broker: Broker,
    ledger: TradingLedger,
    dag_id: str,
    run_id: str,
    settings: CycleSettings,
    report: CycleReport,
    signals: Mapping[str, Signal] | None = None,
    forecasts: pd.DataFrame | None = None,
    evaluations: pd.DataFrame | None = None,
    news: Sequence[Any] | None = None,
    missing: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Steps 1-4: gate the bars, broker sync, settle unsent orders, signals (or the ``signals`` given),
    decisions, claim. Call it holding the account's lock (:meth:`TradingLedger.account_lock`).

    :param missing: symbol -> why the sources had no bars for it (kept as the decision's error).
    :return: symbol -> the stored decision of this run (see :meth:`TradingLedger.claim_decisions`).
    """
    tf = parse_timeframe(settings.timeframe).name
    if not bars.empty:
        bars = bars[bars["symbol"].isin(symbols) & (bars["timeframe"] == tf)]
    started = started_bars(bars, now, settings.exchange)  # their opens are known: orders fill at them
    _, ends = bar_times(started, settings.exchange)
    done = ends <= pd.Timestamp(now).as_unit("ns").value  # their closes are known: signals and marks
    bars, refused = gate_bars(started[done].reset_index(drop=True), settings)
    gated = ~started["symbol"].isin(list(refused)).to_numpy() & done
    ends = ends[gated]  # aligned with the gated closed bars (the gate refuses a symbol's bars whole, in order)
    forming, bad_open = forming_opens(started[~done], bars, refused, settings)
    refused.update(bad_open)
    started = pd.concat([bars, forming], ignore_index=True) if not forming.empty else bars
    report.synced += len(broker.sync(started, closed=bars, skip_run=(dag_id, run_id), exchange=settings.exchange))

    panels = _panels(bars, symbols, LOOKBACK_BARS)
    last_close = panels["close"][:, -1]
    errors: dict[str, str] = dict(refused)
    bar_of: dict[str, pd.Timestamp | None] = {}
    expected: dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None]] = {}
    for i, symbol in enumerate(symbols):
        calendar = calendar_for_symbol(symbol, settings.exchange).name
        if calendar not in expected:
            expected[calendar] = (expected_last_bar(symbol, now, tf, settings.exchange),
                                  expected_last_bar(symbol, now, tf, settings.exchange, back=settings.max_stale_bars))
        last_expected, oldest_ok = expected[calendar]
        if panels["last_ts"][i] == np.iinfo(np.int64).min:
            errors.setdefault(symbol, (missing or {}).get(symbol) or "no bars: unknown symbol or no data from the sources")
            bar_of[symbol] = last_expected
            continue
        bar_of[symbol] = pd.Timestamp(int(panels["last_ts"][i]), tz="UTC")
        if oldest_ok is not None and bar_of[symbol] < oldest_ok:
            errors[symbol] = (f"stale bars: the last {tf} bar is {bar_of[symbol].isoformat()}, expected "
                              f"{last_expected.isoformat() if last_expected is not None else '?'}")
    for symbol, why in _price_check(symbols, panels["close"], settings.max_abs_return).items():
        errors.setdefault(symbol, why)
    for symbol in settle_unsent(broker, ledger, dag_id=dag_id, run_id=run_id, current=bar_of, report=report):
        errors.setdefault(symbol, "an earlier order's state is unknown (its look-up failed): not traded until "
                                  "a later cycle settles it")
    prices = {s: float(last_close[i]) for i, s in enumerate(symbols) if s not in errors}

    if signals is None:
        signals = compute_signals(symbols, panels, forecasts=forecasts, evaluations=evaluations, news=news, now=now,
                                  half_life_hours=settings.news_half_life_hours)
    score, confidence = combine(signals, settings.weights)
    state = broker.account_state()
    report.start_of_day_equity, reference = _start_of_day_equity(state, bars, ends, symbols, now, broker=broker,
                                                                 ledger=ledger, settings=settings)
    report.loss_reference = reference.isoformat()
    held = _with_open_orders(_open_positions(symbols, state.positions), ledger, broker.account)
    with np.errstate(invalid="ignore", divide="ignore"):
        vol = atr(panels["high"], panels["low"], panels["close"]) / last_close
    decisions = decide(symbols, score, confidence, prices, held, state.equity if state.equity > 0 else 1.0,
                       min_confidence=settings.limits.min_confidence, min_score=settings.min_score,
                       sizing=settings.sizing, fraction=settings.fraction,
                       target_volatility=settings.target_volatility,
                       volatility={s: _finite(vol[i]) for i, s in enumerate(symbols)},
                       fractionable={s: is_crypto(s) for s in symbols}, allow_short=settings.limits.allow_short)

    # A bar is decided once per DAG (bar_aware) only where the symbol's market is open now: a decision made
    # while it is closed (a run before the open, a back-fill at night) cannot trade, so it is kept under its
    # run and leaves the bar to the next run that can.
    open_now = {c: MarketCalendar(c).is_open(now) for c in {calendar_for_symbol(s, settings.exchange).name
                                                             for s in symbols}}
    rows = []
    for i, d in enumerate(decisions):
        bar = bar_of.get(d.symbol)
        if bar is None:
            report.errors[d.symbol] = errors.get(d.symbol, "no bar of its calendar has closed yet")
            continue
        error = errors.get(d.symbol) or d.error
        rows.append({
            "dag_id": dag_id, "symbol": d.symbol, "timeframe": tf, "bar_ts": bar,
            "run_key": "" if settings.bar_aware and open_now[calendar_for_symbol(d.symbol, settings.exchange).name]
            else run_id, "run_id": run_id, "account": broker.account,
            "action": "hold" if error else d.action, "score": d.score, "confidence": d.confidence,
            "price": _finite(d.price), "current_qty": d.current_qty,
            "target_qty": d.current_qty if error else d.target_qty, "order_qty": 0.0 if error else d.order_qty,
            "reason": error or d.reason, "error": error,
            "signals": {name: {"score": float(sig.score[i]), "confidence": float(sig.confidence[i]),
                               "reason": sig.reason[i]} for name, sig in signals.items()},
        })
    mine = ledger.claim_decisions(rows)
    report.skipped = sorted(r["symbol"] for r in rows if r["symbol"] not in mine)
    if report.skipped:
        log.info("%d symbol(s) already decided for their bar by another run: %s", len(report.skipped),
                 ", ".join(report.skipped[:20]))
    report.decided = len(mine)
    for symbol, d in mine.items():
        if d["error"]:
            report.errors[symbol] = d["error"]
        if d["action"] == "hold":
            report.holds += 1
    return mine


def _with_open_orders(positions: Mapping[str, float], ledger: TradingLedger, account: str,
                      exclude: Iterable[str] = ()) -> dict[str, float]:
    """Positions as they will be once the account's open orders fill (the unfilled quantity of each order
    recorded and not settled: new, accepted, partially filled; ``pending_submit`` only for this run's orders of
    the current bar, since :func:`settle_unsent` has settled every other one by then).

    A decision sized on the broker's positions alone would repeat an order that is accepted and not yet
    filled (a retry deciding a later bar, another DAG trading the same symbol).

    :param exclude: client order ids left out (the orders being checked themselves).
    """
    out = dict(positions)
    skip = set(exclude)
    for order in ledger.orders(account, open_only=True):
        if order["client_order_id"] in skip:
            continue
        left = float(order["qty"]) - float(order["filled_qty"] or 0.0)
        if left > 0:
            out[order["symbol"]] = out.get(order["symbol"], 0.0) + (left if order["side"] == "buy" else -left)
    return {s: q for s, q in out.items() if q or s in positions}


def _open_positions(symbols: Sequence[str], positions: Mapping[str, float]) -> dict[str, float]:
    """Every open position of the account, those of ``symbols`` under our names: the risk layer counts open
    positions (``max_open_positions``) over the whole account, not only over this cycle's symbols."""
    ours = {s.replace("/", ""): s for s in symbols}
    return {ours.get(k.replace("/", ""), k): float(v) for k, v in positions.items() if float(v)}


def _check(decisions: Sequence[dict[str, Any]], symbols: Sequence[str], now: datetime, *, broker: Broker,
           ledger: TradingLedger, settings: CycleSettings, start_of_day_equity: float | None,
           assets: dict[str, Any], exclude: Iterable[str] = ()) -> list[Any]:
    """Risk verdicts of ``decisions`` (buys and sells) against the account now, the day's orders (less
    ``exclude``), the calendar and the kill switch read now. ``assets`` caches the broker's asset flags."""
    state = broker.account_state()
    held = _with_open_orders(_open_positions(list(symbols), state.positions), ledger, broker.account, exclude)
    wanted = [d["symbol"] for d in decisions if d["symbol"] not in assets]
    if wanted:
        assets.update(broker.assets(wanted))
    account = AccountState(
        equity=state.equity, cash=state.cash, buying_power=state.buying_power,
        start_of_day_equity=start_of_day_equity if start_of_day_equity is not None else state.equity,
        positions=held, orders_today=ledger.orders_per_symbol(broker.account, _day_start(now, settings.exchange),
                                                              exclude=exclude),
        tradable={s: a.tradable for s, a in assets.items()},
        shortable={s: a.shortable for s, a in assets.items()},
        market_open={d["symbol"]: calendar_for_symbol(d["symbol"], settings.exchange).is_open(now)
                     for d in decisions},
    )
    proposed = [ProposedOrder(d["symbol"], d["action"], float(d["order_qty"]), float(d["price"]),
                              float(d["confidence"]), assets[d["symbol"]].fractionable or is_crypto(d["symbol"]))
                for d in decisions]
    verdicts = check_orders(proposed, account, settings.limits, settings.kill_switch_now())
    out = []
    for d, verdict in zip(decisions, verdicts, strict=True):
        reason = verdict.reason
        if verdict.rule == "tradable" and assets[d["symbol"]].reason:
            reason = f"{reason}: {assets[d['symbol']].reason}"
        out.append((verdict.approved, verdict.rule, reason))
    return out


def risk_step(mine: Mapping[str, dict[str, Any]], now: datetime, *, broker: Broker, ledger: TradingLedger,
              dag_id: str, run_id: str, settings: CycleSettings, report: CycleReport,
              assets: dict[str, Any] | None = None) -> None:
    """Step 5: check the decisions not yet checked; store each verdict (and the approved order's id).

    Daily loss is measured from ``report.start_of_day_equity`` (set by :func:`decide_step`). A retry keeps the
    verdicts its first try stored, so it never re-sizes an order; :func:`execute_step` checks them again
    right before sending.

    :param assets: a cache of the broker's asset flags, shared with :func:`execute_step`.
    """
    actionable = [d for d in mine.values() if d["action"] in ("buy", "sell")]
    to_check = [d for d in actionable if d["approved"] is None]
    if to_check:
        verdicts = _check(to_check, list(mine), now, broker=broker, ledger=ledger, settings=settings,
                          start_of_day_equity=report.start_of_day_equity, assets={} if assets is None else assets)
        for d, (approved, rule, reason) in zip(to_check, verdicts, strict=True):
            cid = client_order_id(dag_id, run_id, d["symbol"], d["bar_ts"], d["action"]) if approved else None
            d.update(approved=approved, risk_rule=rule, risk_reason=reason, client_order_id=cid)
        ledger.record_verdicts(dag_id, to_check)
    for d in actionable:
        if d["approved"] is False:
            report.rejected[d["symbol"]] = f"{d['risk_rule']}: {d['risk_reason']}"


def _unsent(approved: Sequence[dict[str, Any]], *, broker: Broker, ledger: TradingLedger,
            report: CycleReport) -> list[dict[str, Any]]:
    """The approved decisions whose order has not reached the broker: never recorded, or recorded
    (``pending_submit``) by an earlier try and not at the broker when looked up. Orders already settled are
    reported; an order whose look-up fails is reported unknown and left alone."""
    out = []
    for d in approved:
        cid = d["client_order_id"]
        stored = ledger.order(broker.account, cid)
        if stored is None:
            out.append(d)
            continue
        if stored["status"] == "rejected":  # refused for good on an earlier try
            report.broker_rejected[d["symbol"]] = stored["reason"] or "rejected by the broker"
        elif stored["status"] == "not_placed":
            report.errors[d["symbol"]] = f"order {cid} was not placed: {stored['reason'] or 'the broker has none'}"
        elif stored["status"] != "pending_submit":
            report.submitted.append(cid)  # settled by an earlier try of this run
        else:
            try:
                state = broker.lookup(cid)
            except OrderStateUnknownError as err:
                report.unknown[d["symbol"]] = str(err)
                log.error("order %s (%s %g %s): state unknown: %s", cid, d["action"], d["order_qty"], d["symbol"],
                          err)
                continue
            if state is None:
                out.append(d)
            else:  # sent by an earlier try: record the broker's answer, send nothing
                ledger.update_order(broker.account, cid, status=state.status, broker_order_id=state.broker_order_id,
                                    filled_qty=state.filled_qty, filled_avg_price=state.filled_avg_price)
                report.submitted.append(cid)
    return out


def execute_step(mine: Mapping[str, dict[str, Any]], now: datetime, *, broker: Broker, ledger: TradingLedger,
                 dag_id: str, run_id: str, report: CycleReport, settings: CycleSettings,
                 assets: dict[str, Any] | None = None) -> None:
    """Step 6: right before sending, check the approved orders not yet at the broker again, the kill switch read
    now included (a retry, or another task than the one that judged them, never sends what the limits no
    longer allow); record each (``pending_submit``), then send it at most once; record the answer.

    An order refused at this check is ``not_placed`` with the reason, and its decision's verdict is updated.
    Call it holding the account's lock.
    """
    approved = [d for d in mine.values() if d["action"] in ("buy", "sell") and d["approved"]]
    unsent = _unsent(approved, broker=broker, ledger=ledger, report=report)
    if not unsent:
        return
    cids = [d["client_order_id"] for d in unsent]
    verdicts = _check(unsent, list(mine), now, broker=broker, ledger=ledger, settings=settings,
                      start_of_day_equity=report.start_of_day_equity, assets={} if assets is None else assets,
                      exclude=cids)
    ledger.record_intents([{
        "account": broker.account, "client_order_id": d["client_order_id"], "dag_id": dag_id, "run_id": run_id,
        "symbol": d["symbol"], "side": d["action"], "qty": float(d["order_qty"]), "ref_price": float(d["price"]),
        "bar_ts": d["bar_ts"], "created_at": now} for d in unsent])
    refused = []
    for d, (ok, rule, reason) in zip(unsent, verdicts, strict=True):
        cid = d["client_order_id"]
        if not ok:
            why = f"refused right before sending ({rule}): {reason}"
            ledger.update_order(broker.account, cid, status="not_placed", reason=why)
            d.update(approved=False, risk_rule=rule, risk_reason=why)
            refused.append(d)
            report.rejected[d["symbol"]] = f"{rule}: {why}"
            log.warning("order %s (%s %g %s) not sent: %s", cid, d["action"], d["order_qty"], d["symbol"], why)
            continue
        request = OrderRequest(cid, d["symbol"], d["action"], float(d["order_qty"]), float(d["price"]), d["bar_ts"])
        try:
            answer = broker.submit(request)
        except BrokerRejectedError as err:
            ledger.update_order(broker.account, cid, status="rejected", reason=str(err))
            report.broker_rejected[d["symbol"]] = str(err)
            log.warning("order %s (%s %g %s) rejected by the broker: %s", cid, d["action"], d["order_qty"],
                        d["symbol"], err)
            continue
        except OrderStateUnknownError as err:
            ledger.update_order(broker.account, cid, reason=str(err))
            report.unknown[d["symbol"]] = str(err)
            log.error("order %s (%s %g %s): state unknown: %s", cid, d["action"], d["order_qty"], d["symbol"], err)
            continue
        ledger.update_order(broker.account, cid, status=answer.status, broker_order_id=answer.broker_order_id,
                            filled_qty=answer.filled_qty, filled_avg_price=answer.filled_avg_price)
        report.submitted.append(cid)
        log.info("order %s: %s %g %s at ~%.4f -> %s", cid, d["action"], d["order_qty"], d["symbol"], d["price"],
                 answer.status)
    if refused:
        ledger.record_verdicts(dag_id, refused)


def check_instant(now: Any) -> datetime:
    """``now`` as an aware UTC datetime.

    :raises InvalidInputError: for a naive or non-datetime value.
    """
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInputError(f"now must be a tz-aware datetime, got {now!r}")
    return now.astimezone(timezone.utc)


def run_cycle(
    symbols: Sequence[str],
    bars: pd.DataFrame,
    now: datetime,
    *,
    broker: Broker,
    ledger: TradingLedger,
    dag_id: str,
    run_id: str,
    settings: CycleSettings | None = None,
    forecasts: pd.DataFrame | None = None,
    evaluations: pd.DataFrame | None = None,
    news: Sequence[Any] | None = None,
    missing: Mapping[str, str] | None = None,
) -> CycleReport:
    """Run one trading cycle for ``symbols`` (see the module docstring): the steps in order, then the snapshot,
    all under the account's lock (one cycle per account at a time, whichever DAG or process runs it).

    :param symbols: the universe of this cycle (or of this mapped chunk).
    :param bars: canonical bars of ``settings.timeframe`` up to ``now`` (bars not closed by ``now`` are dropped).
    :param now: the cycle's instant (tz-aware).
    :param broker: where orders go.
    :param ledger: the store's trading ledger.
    :param dag_id: the deciding DAG (part of every client order id).
    :param run_id: its run (retries share it).
    :param forecasts: stored forecasts (``PortfolioStore.read_forecasts(model="ensemble", latest=True)``).
    :param evaluations: their evaluations (``read_evaluations(model="ensemble")``).
    :param news: :class:`~airflow_provider_portfolio.market.news.NewsItem` records.
    :param missing: symbol -> why the sources served no bars for it.
    :raises InvalidInputError: for bad parameters (never for one symbol's bad data).
    :raises AccountLockedError: when another cycle holds the account longer than ``settings.lock_timeout_s``.
    """
    settings = settings or CycleSettings()
    symbols = validate_symbols(list(symbols))
    now = check_instant(now)
    report = CycleReport()
    ids = {"broker": broker, "ledger": ledger, "dag_id": dag_id, "run_id": run_id}
    assets: dict[str, Any] = {}
    with ledger.account_lock(broker.account, owner=f"{dag_id}/{run_id}", timeout_s=settings.lock_timeout_s):
        mine = decide_step(symbols, bars, now, **ids, settings=settings, report=report, forecasts=forecasts,
                           evaluations=evaluations, news=news, missing=missing)
        risk_step(mine, now, **ids, settings=settings, report=report, assets=assets)
        execute_step(mine, now, **ids, report=report, settings=settings, assets=assets)
        report.equity = broker.snapshot(now, run_id)
    return report


def with_max_trades_per_day(limits: RiskLimits, max_trades_per_day: int | None) -> RiskLimits:
    """``limits`` with ``max_orders_per_day`` set to ``max_trades_per_day`` (unchanged for ``None``)."""
    if max_trades_per_day is None:
        return limits
    if isinstance(max_trades_per_day, bool) or not isinstance(max_trades_per_day, int) or max_trades_per_day < 0:
        raise InvalidInputError(f"max_trades_per_day must be an integer >= 0, got {max_trades_per_day!r}")
    return replace(limits, max_orders_per_day=max_trades_per_day)


def news_window(now: datetime, half_life_hours: float = 24.0) -> tuple[datetime, datetime]:
    """The news worth fetching for a cycle at ``now``: four half-lives back (weights below 1/16 are noise)."""
    return now - timedelta(hours=4 * half_life_hours), now


def history_days(timeframe: str, bars: int = LOOKBACK_BARS) -> int:
    """Calendar days to fetch for ``bars`` bars of ``timeframe`` on an equities calendar (weekends, holidays)."""
    tf = parse_timeframe(timeframe)
    per_day = 1.0 if tf.is_daily else max(390.0 / (tf.delta.total_seconds() / 60.0), 1.0)
    return int(math.ceil(bars / per_day * 7 / 5 * 1.1)) + 5


def fetch_bars(sources: Sequence[Any], symbols: Sequence[str], start: Any, end: Any,
               timeframe: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Bars of ``symbols`` from the first source that serves each symbol; and the symbols no source served.

    A source with a vectorised ``panel`` method (the synthetic market) in first place serves every symbol in
    one call; otherwise each symbol goes through a :class:`~airflow_provider_portfolio.market.sources.FailoverChain`.

    :return: (canonical bar frame, symbol -> why it has no bars).
    """
    from airflow_provider_portfolio.market.bars import empty_bars
    from airflow_provider_portfolio.market.sources import FailoverChain

    if sources and callable(getattr(sources[0], "panel", None)):
        return sources[0].panel(list(symbols), start, end, timeframe), {}
    chain = FailoverChain(list(sources))
    frames, failed = [], {}
    for symbol in symbols:
        try:
            frames.append(chain.fetch(symbol, start, end, timeframe).frame)
        except Exception as err:  # one symbol's failure never stops the others
            failed[symbol] = f"no bars: {err}"
    frames = [f for f in frames if not f.empty]
    return (pd.concat(frames, ignore_index=True) if frames else empty_bars()), failed


def fetch_news(sources: Sequence[Any], symbols: Sequence[str], start: datetime, end: datetime) -> tuple[list, str]:
    """News about ``symbols`` from the first source that has a news feed (the synthetic market's ``news``,
    Alpaca's ``get_news``); ``([], why)`` when none has or all fail: sentiment then carries no confidence."""
    reasons = []
    for source in sources:
        feed = getattr(source, "news", None) or getattr(source, "get_news", None)
        if not callable(feed):
            continue
        try:
            return list(feed(list(symbols), start, end)), ""
        except Exception as err:  # news is optional: trade on the other signals
            reasons.append(f"{getattr(source, 'name', source)}: {err}")
    return [], "; ".join(reasons) or "no source has a news feed"
