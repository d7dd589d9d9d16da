"""One trading cycle: bars -> signals -> decisions -> risk -> orders -> ledger. Plain Python, no Airflow.

:func:`run_cycle` is what the ``AutoTraderOperator`` and the agent DAGs' tasks run:

1. Keep only bars that have **closed** by ``now`` for the signals and the marks (a bar still forming would
   leak the future) and let the broker catch up (:meth:`Broker.sync`: the simulated broker fills open orders
   at the open of a bar that started after them, the forming bar included, whose open is known; Alpaca's
   open orders are reconciled).
2. **Signals** per symbol: technical (on the cycle's bars), forecast (the stored ensemble forecast, ignored
   when its model is not healthy or the forecast is stale), sentiment (news, decayed by age).
3. **Decisions** (:func:`~airflow_provider_portfolio.trading.decision.decide`) on the last closed bar, from
   the position each symbol will have once the account's open orders fill (so an accepted, unfilled order is
   never repeated). A symbol with no bars, stale bars (its last bar more than ``max_stale_bars`` bars behind
   its calendar) or a bad price is a ``hold`` with the reason in ``error``.
4. Decisions are **claimed** in the ledger under (dag, symbol, timeframe, bar[, run]): with ``bar_aware`` a
   bar another run already decided is skipped, and a retry of the same run carries out its stored decision.
5. **Risk**: every order passes :func:`~airflow_provider_portfolio.trading.risk.check_orders` against the
   broker's account, the day's order counts from the ledger, the broker's asset flags and the calendar
   (market open); the verdict is stored with the decision. Nothing rejected reaches the broker.
6. **Orders**: each approved order is recorded (``pending_submit``) before it is sent, then sent at most
   once under its client order id; the broker's answer is recorded. A refusal is recorded as ``rejected``;
   an unknown outcome leaves it ``pending_submit`` and :class:`CycleReport.unknown` names it, so the caller
   can fail the task: a retry looks the id up before sending anything. A retry that runs at a later bar
   first looks up the orders its earlier try left pending and records them (never re-sending one).
7. A **performance snapshot** (cash, positions value, equity) is written.

Equities trade in whole shares, crypto pairs in fractions (the sizing never asks a broker for fractions it
may refuse).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.calendar import MarketCalendar, calendar_for_symbol
from airflow_provider_portfolio.market.params import is_crypto, validate_symbols
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
    :param bar_aware: decide each bar once per DAG, whatever runs overlap.
    :param min_score: the smallest |combined score| traded.
    :param sizing: ``fixed_fraction`` or ``volatility``.
    :param fraction: the target position as a fraction of equity at full score.
    :param target_volatility: per-bar volatility aimed at under volatility sizing.
    :param max_stale_bars: how many bars a symbol's last bar may lag its calendar.
    :param exchange: the calendar of equities.
    :param news_half_life_hours: the age at which a news item weighs half.
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

    def __post_init__(self) -> None:
        parse_timeframe(self.timeframe)
        object.__setattr__(self, "weights", check_weights(self.weights))
        unknown = sorted(set(self.weights) - {"technical", "forecast", "sentiment"})
        if unknown:
            raise InvalidInputError(f"unknown signal name(s) {unknown} in weights: use technical, forecast, sentiment")
        if not isinstance(self.limits, RiskLimits):
            raise InvalidInputError(f"limits must be RiskLimits, got {type(self.limits).__name__}")
        if isinstance(self.max_stale_bars, bool) or not isinstance(self.max_stale_bars, int) or self.max_stale_bars < 0:
            raise InvalidInputError(f"max_stale_bars must be an integer >= 0, got {self.max_stale_bars!r}")


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "decided": self.decided, "skipped": len(self.skipped), "holds": self.holds, "errors": self.errors,
            "risk_rejected": self.rejected, "submitted": len(self.submitted), "broker_rejected": self.broker_rejected,
            "unknown": self.unknown, "synced_orders": self.synced, "equity": self.equity,
        }


# -- bars ------------------------------------------------------------------------------------------------

def _bar_ends(calendar: MarketCalendar, ts_ns: np.ndarray, timeframe: str) -> np.ndarray:
    """When each bar (start ``ts_ns``, int64 ns UTC) closes: its session's close for daily bars, else the
    bar start plus the timeframe, cut at the session's close (a short last bar of an early close)."""
    tf = parse_timeframe(timeframe)
    if not len(ts_ns):
        return ts_ns.copy()
    lo = pd.Timestamp(int(ts_ns.min())) - pd.Timedelta(days=1)
    hi = pd.Timestamp(int(ts_ns.max())) + pd.Timedelta(days=1)
    days, opens, closes = calendar.session_bounds(lo, hi)
    if tf.is_daily:
        pos = np.searchsorted(days, ts_ns)
        ok = (pos < len(days)) & (days[np.minimum(pos, len(days) - 1)] == ts_ns)
        return np.where(ok, closes[np.minimum(pos, len(days) - 1)], np.iinfo(np.int64).max)
    pos = np.searchsorted(opens, ts_ns, side="right") - 1
    session_close = np.where(pos >= 0, closes[np.maximum(pos, 0)], np.iinfo(np.int64).max)
    return np.minimum(ts_ns + int(tf.delta.value), session_close)


def closed_bars(bars: pd.DataFrame, now: datetime, timeframe: str, exchange: str = "XNYS") -> pd.DataFrame:
    """The rows of ``bars`` (one timeframe) whose bar has closed by ``now``."""
    if bars.empty:
        return bars
    now_ns = pd.Timestamp(now).as_unit("ns").value
    keep = np.zeros(len(bars), dtype=bool)
    ts_ns = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8
    unique, inverse = np.unique(bars["symbol"].to_numpy(dtype=str), return_inverse=True)
    calendars = np.array([calendar_for_symbol(s, exchange).name for s in unique])[inverse]
    for cal_name in set(calendars):
        members = calendars == cal_name
        keep[members] = _bar_ends(MarketCalendar(cal_name), ts_ns[members], timeframe) <= now_ns
    return bars[keep].reset_index(drop=True)


def expected_last_bar(symbol: str, now: datetime, timeframe: str, exchange: str = "XNYS",
                      back: int = 0) -> pd.Timestamp | None:
    """The latest bar of ``symbol``'s calendar closed by ``now`` (``back`` bars earlier), or ``None``."""
    calendar = calendar_for_symbol(symbol, exchange)
    now_ts = pd.Timestamp(now)
    index = calendar.bar_index(now_ts - pd.Timedelta(days=10 + back), now_ts, timeframe)
    ends = _bar_ends(calendar, index.as_unit("ns").asi8, timeframe)
    done = index[ends <= now_ts.as_unit("ns").value]
    return done[-1 - back] if len(done) > back else None


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
    """Steps 1-4: closed bars, broker sync, signals (or the ``signals`` given), decisions, claim.

    :param missing: symbol -> why the sources had no bars for it (kept as the decision's error).
    :return: symbol -> the stored decision of this run (see :meth:`TradingLedger.claim_decisions`).
    """
    tf = parse_timeframe(settings.timeframe).name
    if not bars.empty:
        bars = bars[bars["symbol"].isin(symbols) & (bars["timeframe"] == tf)]
        started = bars[bars["ts"] <= pd.Timestamp(now)]  # their opens are known: orders fill at them
    else:
        started = bars
    bars = closed_bars(started, now, tf, settings.exchange)  # their closes are known: signals and marks
    report.synced = len(broker.sync(started, closed=bars, skip_run=(dag_id, run_id)))

    panels = _panels(bars, symbols, LOOKBACK_BARS)
    last_close = panels["close"][:, -1]
    if signals is None:
        signals = compute_signals(symbols, panels, forecasts=forecasts, evaluations=evaluations, news=news, now=now,
                                  half_life_hours=settings.news_half_life_hours)
    score, confidence = combine(signals, settings.weights)
    state = broker.account_state()
    held = _with_open_orders(_open_positions(symbols, state.positions), ledger, broker.account)
    with np.errstate(invalid="ignore", divide="ignore"):
        vol = atr(panels["high"], panels["low"], panels["close"]) / last_close
    prices: dict[str, Any] = {}
    errors: dict[str, str] = {}
    bar_of: dict[str, pd.Timestamp | None] = {}
    expected: dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None]] = {}
    for i, symbol in enumerate(symbols):
        calendar = calendar_for_symbol(symbol, settings.exchange).name
        if calendar not in expected:
            expected[calendar] = (expected_last_bar(symbol, now, tf, settings.exchange),
                                  expected_last_bar(symbol, now, tf, settings.exchange, back=settings.max_stale_bars))
        last_expected, oldest_ok = expected[calendar]
        if panels["last_ts"][i] == np.iinfo(np.int64).min:
            errors[symbol] = (missing or {}).get(symbol) or "no bars: unknown symbol or no data from the sources"
            bar_of[symbol] = last_expected
            continue
        bar_of[symbol] = pd.Timestamp(int(panels["last_ts"][i]), tz="UTC")
        if oldest_ok is not None and bar_of[symbol] < oldest_ok:
            errors[symbol] = (f"stale bars: the last {tf} bar is {bar_of[symbol].isoformat()}, expected "
                              f"{last_expected.isoformat() if last_expected is not None else '?'}")
            continue
        prices[symbol] = float(last_close[i])
    decisions = decide(symbols, score, confidence, prices, held, state.equity if state.equity > 0 else 1.0,
                       min_confidence=settings.limits.min_confidence, min_score=settings.min_score,
                       sizing=settings.sizing, fraction=settings.fraction,
                       target_volatility=settings.target_volatility,
                       volatility={s: _finite(vol[i]) for i, s in enumerate(symbols)},
                       fractionable={s: is_crypto(s) for s in symbols}, allow_short=settings.limits.allow_short)

    rows = []
    for i, d in enumerate(decisions):
        bar = bar_of.get(d.symbol)
        if bar is None:
            report.errors[d.symbol] = errors.get(d.symbol, "no bar of its calendar has closed yet")
            continue
        error = errors.get(d.symbol) or d.error
        rows.append({
            "dag_id": dag_id, "symbol": d.symbol, "timeframe": tf, "bar_ts": bar,
            "run_key": "" if settings.bar_aware else run_id, "run_id": run_id, "account": broker.account,
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


def _with_open_orders(positions: Mapping[str, float], ledger: TradingLedger, account: str) -> dict[str, float]:
    """Positions as they will be once the account's open orders fill (the unfilled quantity of each order
    recorded and not settled: new, accepted, partially filled, or still pending).

    A decision sized on the broker's positions alone would repeat an order that is accepted and not yet
    filled (a retry deciding a later bar, another DAG trading the same symbol).
    """
    out = dict(positions)
    for order in ledger.orders(account, open_only=True):
        left = float(order["qty"]) - float(order["filled_qty"] or 0.0)
        if left > 0:
            out[order["symbol"]] = out.get(order["symbol"], 0.0) + (left if order["side"] == "buy" else -left)
    return {s: q for s, q in out.items() if q or s in positions}


def _open_positions(symbols: Sequence[str], positions: Mapping[str, float]) -> dict[str, float]:
    """Every open position of the account, those of ``symbols`` under our names: the risk layer counts open
    positions (``max_open_positions``) over the whole account, not only over this cycle's symbols."""
    ours = {s.replace("/", ""): s for s in symbols}
    return {ours.get(k.replace("/", ""), k): float(v) for k, v in positions.items() if float(v)}


def risk_step(mine: Mapping[str, dict[str, Any]], now: datetime, *, broker: Broker, ledger: TradingLedger,
              dag_id: str, run_id: str, settings: CycleSettings, report: CycleReport) -> None:
    """Step 5: check the decisions not yet checked; store each verdict (and the approved order's id).

    A retry keeps the verdicts its first try stored, so it never re-judges (and never re-sizes) an order.
    """
    actionable = [d for d in mine.values() if d["action"] in ("buy", "sell")]
    to_check = [d for d in actionable if d["approved"] is None]
    if to_check:
        day_start = _day_start(now, settings.exchange)
        state = broker.account_state()
        held = _with_open_orders(_open_positions(list(mine), state.positions), ledger, broker.account)
        assets = broker.assets([d["symbol"] for d in to_check])
        start_equity = state.start_of_day_equity or ledger.first_equity_since(broker.account, day_start) or state.equity
        account = AccountState(
            equity=state.equity, cash=state.cash, buying_power=state.buying_power,
            start_of_day_equity=start_equity, positions=held,
            orders_today=ledger.orders_per_symbol(broker.account, day_start),
            tradable={s: a.tradable for s, a in assets.items()},
            shortable={s: a.shortable for s, a in assets.items()},
            market_open={d["symbol"]: calendar_for_symbol(d["symbol"], settings.exchange).is_open(now)
                         for d in to_check},
        )
        proposed = [ProposedOrder(d["symbol"], d["action"], float(d["order_qty"]), float(d["price"]),
                                  float(d["confidence"]), assets[d["symbol"]].fractionable or is_crypto(d["symbol"]))
                    for d in to_check]
        kill = normalise_kill_switch(settings.kill_switch)
        for d, verdict in zip(to_check, check_orders(proposed, account, settings.limits, kill), strict=True):
            reason = verdict.reason
            if verdict.rule == "tradable" and assets[d["symbol"]].reason:
                reason = f"{reason}: {assets[d['symbol']].reason}"
            cid = client_order_id(dag_id, run_id, d["symbol"], d["bar_ts"], d["action"]) if verdict.approved else None
            d.update(approved=verdict.approved, risk_rule=verdict.rule, risk_reason=reason, client_order_id=cid)
        ledger.record_verdicts(dag_id, to_check)
    for d in actionable:
        if d["approved"] is False:
            report.rejected[d["symbol"]] = f"{d['risk_rule']}: {d['risk_reason']}"


def execute_step(mine: Mapping[str, dict[str, Any]], now: datetime, *, broker: Broker, ledger: TradingLedger,
                 dag_id: str, run_id: str, report: CycleReport) -> None:
    """Step 6: record each approved order (``pending_submit``), then send it at most once; record the answer."""
    approved = [d for d in mine.values() if d["action"] in ("buy", "sell") and d["approved"]]
    _settle_earlier_tries(broker, ledger, dag_id, run_id, {d["client_order_id"] for d in approved}, report)
    ledger.record_intents([{
        "account": broker.account, "client_order_id": d["client_order_id"], "dag_id": dag_id, "run_id": run_id,
        "symbol": d["symbol"], "side": d["action"], "qty": float(d["order_qty"]), "ref_price": float(d["price"]),
        "bar_ts": d["bar_ts"], "created_at": now} for d in approved])
    for d in approved:
        cid = d["client_order_id"]
        stored = ledger.order(broker.account, cid)
        if stored is not None and stored["status"] == "rejected":  # refused for good on an earlier try
            report.broker_rejected[d["symbol"]] = stored["reason"] or "rejected by the broker"
            continue
        if stored is not None and stored["status"] == "not_placed":
            report.errors[d["symbol"]] = f"order {cid} was not placed: {stored['reason'] or 'the broker has none'}"
            continue
        if stored is not None and stored["status"] != "pending_submit":
            report.submitted.append(cid)  # settled by an earlier try of this run
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


def _settle_earlier_tries(broker: Broker, ledger: TradingLedger, dag_id: str, run_id: str, current: set[str],
                          report: CycleReport) -> None:
    """Look up this run's orders left ``pending_submit`` by an earlier try for ANOTHER bar (a retry at a later
    instant decides a new bar): record what the broker has; one it does not have is ``not_placed`` and never
    sent (its bar has passed). One that cannot be looked up stays pending and is reported unknown."""
    for order in ledger.orders(broker.account, open_only=True):
        cid = order["client_order_id"]
        if (order["dag_id"], order["run_id"]) != (dag_id, run_id) or order["status"] != "pending_submit" \
                or cid in current:
            continue
        try:
            state = broker.lookup(cid)
        except OrderStateUnknownError as err:
            report.unknown[order["symbol"]] = str(err)
            log.error("order %s of an earlier try: state unknown: %s", cid, err)
            continue
        if state is None:
            ledger.update_order(broker.account, cid, status="not_placed",
                                reason="an earlier try of this run did not place it; its bar has passed: not sent")
            log.warning("order %s of an earlier try was never placed; its bar has passed: not sending it", cid)
        else:
            ledger.update_order(broker.account, cid, status=state.status, broker_order_id=state.broker_order_id,
                                filled_qty=state.filled_qty, filled_avg_price=state.filled_avg_price)
            log.warning("order %s of an earlier try is at the broker (%s): recorded", cid, state.status)


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
    """Run one trading cycle for ``symbols`` (see the module docstring): the steps in order, then the snapshot.

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
    """
    settings = settings or CycleSettings()
    symbols = validate_symbols(list(symbols))
    now = check_instant(now)
    report = CycleReport()
    ids = {"broker": broker, "ledger": ledger, "dag_id": dag_id, "run_id": run_id}
    mine = decide_step(symbols, bars, now, **ids, settings=settings, report=report, forecasts=forecasts,
                       evaluations=evaluations, news=news, missing=missing)
    risk_step(mine, now, **ids, settings=settings, report=report)
    execute_step(mine, now, **ids, report=report)
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
