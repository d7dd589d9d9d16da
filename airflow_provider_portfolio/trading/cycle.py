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
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.calendar import bar_times, calendar_for_symbol
from airflow_provider_portfolio.market.params import is_crypto, validate_symbols
from airflow_provider_portfolio.market.quality import QualityRules, validate_bars
from airflow_provider_portfolio.market.timing import (  # noqa: F401 (closed_bars: re-exported, its earlier home)
    closed_bars,
    closes_at,
    day_start,
    expected_last_bar,
    loss_reference,
    started_bars,
)
from airflow_provider_portfolio.market.windows import window_states
from airflow_provider_portfolio.trading.brokers import (
    BrokerRejectedError,
    OrderRequest,
    OrderStateUnknownError,
)
from airflow_provider_portfolio.trading.decision import combine, decide
from airflow_provider_portfolio.trading.orders import client_order_id
from airflow_provider_portfolio.trading.panels import compute_signals, panels_of
from airflow_provider_portfolio.trading.risk import AccountState, ProposedOrder, check_orders
from airflow_provider_portfolio.trading.settings import (  # noqa: F401 (re-exported: their earlier home)
    LOOKBACK_BARS,
    CycleReport,
    CycleSettings,
    check_instant,
    news_window,
    with_max_trades_per_day,
)
from airflow_provider_portfolio.trading.signals import Signal, atr

if TYPE_CHECKING:
    from airflow_provider_portfolio.market.sources import Quote
    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers import Broker

log = logging.getLogger(__name__)

# -- the cycle -----------------------------------------------------------------------------------------

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
        out[symbols[int(i)]] = (f"price check: last close {closes[i, -1]:.6g} is {move[i]:.1%} from the median "
                           f"{median[i]:.6g} of the closes before it (limit {limit:.0%}): not traded on it")
    return out


#: How long after a cycle's instant a quote may be stamped: the time its inputs take to fetch.
QUOTE_GRACE = pd.Timedelta(minutes=2)


def quote_prices(quotes: Mapping[str, Quote], last_close: Mapping[str, float], last_end: Mapping[str, int],
                 now: datetime, max_abs_return: float | None) -> tuple[dict[str, float], dict[str, str]]:
    """Of the latest ``quotes``, the prices a decision may size at: a quote stamped after the symbol's last
    closed bar ended and at most :data:`QUOTE_GRACE` after ``now`` (the quotes are fetched a moment after the
    instant is taken; a quote from later than that would be look-ahead, as in a back-fill), within
    ``max_abs_return`` of the last close (a bad tick never sizes an order).

    :param last_end: symbol -> when its last closed bar ended, int64 ns UTC.
    :return: (symbol -> price, symbol -> why its quote was not used).
    """
    prices: dict[str, float] = {}
    refused: dict[str, str] = {}
    now_ns = (pd.Timestamp(now) + QUOTE_GRACE).as_unit("ns").value
    for symbol, quote in quotes.items():
        ts = pd.Timestamp(quote.ts).as_unit("ns").value
        close = last_close.get(symbol)
        if ts > now_ns:
            refused[symbol] = f"quote stamped {quote.ts.isoformat()}, after the cycle's instant: not used"
        elif symbol in last_end and ts < last_end[symbol]:
            refused[symbol] = f"quote stamped {quote.ts.isoformat()}, before the last closed bar ended: not used"
        elif close is None or not close > 0:
            refused[symbol] = "no last close to check the quote against: not used"
        elif max_abs_return is not None and abs(quote.price / close - 1.0) > max_abs_return:
            refused[symbol] = (f"quote {quote.price:.6g} is {abs(quote.price / close - 1.0):.1%} from the last close "
                               f"{close:.6g} (max_abs_return {max_abs_return}): not used")
        else:
            prices[symbol] = quote.price
    return prices, refused


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
        from airflow_provider_portfolio.trading.accounting import equity_at
        return equity_at(ledger, broker.account, reference, closes_at(closed, ends, reference)), reference
    stored = ledger.last_equity_at(broker.account, reference)
    if stored is None:
        log.warning("%s: no equity known at %s: the daily loss limit measures from equity now", broker.account,
                    reference.isoformat())
        return float(state.equity), reference
    return stored, reference


@dataclass
class CycleMarket:
    """What a cycle knows of the market at its instant, the broker caught up (:func:`market_step`).

    :param bars: the closed bars that passed the quality gate.
    :param ends: when each of them ended (int64 ns UTC), aligned with ``bars``.
    :param panels: the close/high/low panels of each symbol's last :data:`LOOKBACK_BARS` closed bars, and
        ``last_ts`` (:func:`~airflow_provider_portfolio.trading.panels.panels_of`).
    :param bar_of: symbol -> the bar decided on: its last closed bar (the calendar's last one when it has none).
    :param errors: symbol -> why it is not traded (no, stale or refused bars, a last close far from its recent
        history, an earlier order in an unknown state).
    :param prices: symbol -> its last close, for the symbols without an error.
    """

    bars: pd.DataFrame
    ends: np.ndarray
    panels: dict[str, np.ndarray]
    bar_of: dict[str, pd.Timestamp | None]
    errors: dict[str, str]
    prices: dict[str, float]


def market_step(symbols: Sequence[str], bars: pd.DataFrame, now: datetime, *, broker: Broker, ledger: TradingLedger,
                dag_id: str, run_id: str, settings: CycleSettings, report: CycleReport,
                missing: Mapping[str, str] | None = None) -> CycleMarket:
    """Steps 1-2 (and the data checks of step 4): gate the bars, broker sync, settle unsent orders; each symbol's
    bar, last close, or why it is not traded. Call it holding the account's lock (a rebalance shares it with
    :func:`decide_step`).

    :param missing: symbol -> why the sources had no bars for it (kept as its error).
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
    changed = broker.sync(started, closed=bars, skip_run=(dag_id, run_id), exchange=settings.exchange)
    report.synced += len(changed)
    report.fills += sum(state.status == "filled" for state in changed)

    panels = panels_of(bars, symbols, LOOKBACK_BARS)
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
            errors[symbol] = (f"stale bars: the last {tf} bar is {bar_of[symbol]}, expected "
                              f"{last_expected.isoformat() if last_expected is not None else '?'}")
    for symbol, why in _price_check(symbols, panels["close"], settings.max_abs_return).items():
        errors.setdefault(symbol, why)
    for symbol in settle_unsent(broker, ledger, dag_id=dag_id, run_id=run_id, current=bar_of, report=report):
        errors.setdefault(symbol, "an earlier order's state is unknown (its look-up failed): not traded until "
                                  "a later cycle settles it")
    prices = {s: float(last_close[i]) for i, s in enumerate(symbols) if s not in errors}
    return CycleMarket(bars, ends, panels, bar_of, errors, prices)


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
    quotes: Mapping[str, Quote] | None = None,
) -> dict[str, dict[str, Any]]:
    """Steps 1-4: gate the bars, broker sync, settle unsent orders, signals (or the ``signals`` given),
    decisions, claim. Call it holding the account's lock (:meth:`TradingLedger.account_lock`).

    :param missing: symbol -> why the sources had no bars for it (kept as the decision's error).
    :param quotes: symbol -> its latest quote: the price a decision sizes at where :func:`quote_prices` accepts
        it (else the last close).
    :return: symbol -> the stored decision of this run (see :meth:`TradingLedger.claim_decisions`).
    """
    tf = parse_timeframe(settings.timeframe).name
    market = market_step(symbols, bars, now, broker=broker, ledger=ledger, dag_id=dag_id, run_id=run_id,
                         settings=settings, report=report, missing=missing)
    bars, ends, panels, bar_of = market.bars, market.ends, market.panels, market.bar_of
    errors, prices = dict(market.errors), dict(market.prices)
    last_close = panels["close"][:, -1]
    if quotes:
        last_end = pd.Series(ends).groupby(bars["symbol"].to_numpy()).max().to_dict() if len(ends) else {}
        quoted, unused = quote_prices({s: q for s, q in quotes.items() if s in prices}, prices, last_end, now,
                                      settings.max_abs_return)
        prices.update(quoted)
        for symbol, why in unused.items():
            log.warning("%s: %s; sizing at the last close", symbol, why)

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
                       volatility={s: v for i, s in enumerate(symbols) if (v := _finite(vol[i])) is not None},
                       fractionable={s: is_crypto(s) for s in symbols}, allow_short=settings.limits.allow_short)

    # A bar is decided once per DAG (bar_aware) only where the symbol's market is open now: a decision made
    # while it is closed (a run before the open, a back-fill at night) cannot trade, so it is kept under its
    # run and leaves the bar to the next run that can.
    open_now = {s: w.is_open for s, w in window_states(symbols, now, exchange=settings.exchange).items()}
    rows = []
    for i, d in enumerate(decisions):
        bar = bar_of.get(d.symbol)
        if bar is None:
            report.errors[d.symbol] = errors.get(d.symbol, "no bar of its calendar has closed yet")
            continue
        error = errors.get(d.symbol) or d.error
        rows.append({
            "dag_id": dag_id, "symbol": d.symbol, "timeframe": tf, "bar_ts": bar,
            "run_key": "" if settings.bar_aware and open_now[d.symbol] else run_id, "run_id": run_id, "account": broker.account,
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
    for symbol, stored in mine.items():
        if stored["error"]:
            report.errors[symbol] = stored["error"]
        if stored["action"] == "hold":
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
        positions=held, orders_today=ledger.orders_per_symbol(broker.account, day_start(now, settings.exchange),
                                                              exclude=exclude),
        tradable={s: a.tradable for s, a in assets.items()},
        shortable={s: a.shortable for s, a in assets.items()},
        market_open={s: w.is_open for s, w in window_states([d["symbol"] for d in decisions], now,
                                                             exchange=settings.exchange).items()},
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
        report.fills += answer.status == "filled"
        log.info("order %s: %s %g %s at ~%.4f -> %s", cid, d["action"], d["order_qty"], d["symbol"], d["price"],
                 answer.status)
    if refused:
        ledger.record_verdicts(dag_id, refused)


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
    quotes: Mapping[str, Quote] | None = None,
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
    :param quotes: symbol -> its latest quote (a live cycle's "current price"; see :func:`quote_prices`).
    :raises InvalidInputError: for bad parameters (never for one symbol's bad data).
    :raises AccountLockedError: when another cycle holds the account longer than ``settings.lock_timeout_s``.
    """
    settings = settings or CycleSettings()
    symbols = validate_symbols(list(symbols))
    now = check_instant(now)
    report = CycleReport()
    ids: dict[str, Any] = {"broker": broker, "ledger": ledger, "dag_id": dag_id, "run_id": run_id}
    assets: dict[str, Any] = {}
    with ledger.account_lock(broker.account, owner=f"{dag_id}/{run_id}", timeout_s=settings.lock_timeout_s):
        mine = decide_step(symbols, bars, now, **ids, settings=settings, report=report, forecasts=forecasts,
                           evaluations=evaluations, news=news, missing=missing, quotes=quotes)
        risk_step(mine, now, **ids, settings=settings, report=report, assets=assets)
        execute_step(mine, now, **ids, report=report, settings=settings, assets=assets)
        report.equity = broker.snapshot(now, run_id)
    return report


