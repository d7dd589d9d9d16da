"""Rebalancing: target weights, the drift from them, and the orders back to them through the trader's order path.

Plain Python, no Airflow. Three pieces:

- :func:`target_weights` (pure): symbol -> the fraction of equity to hold, by one of :data:`METHODS`:

  - ``equal``: ``(1 - cash) / n`` each;
  - ``inverse_volatility``: ``(1 - cash) * (1 / vol_i) / sum_j (1 / vol_j)``, with ``vol_i`` the realised
    volatility of the symbol's daily closes: the sample standard deviation (``ddof=1``) of its last ``lookback``
    log returns (at least :data:`MIN_RETURNS`), annualised with 252 sessions a year for equities and 365 days for
    crypto pairs (a daily bar of each is a different length of time);
  - ``discovery``: the top ``top_n`` of the latest discovery ranking (``rank`` 1 first), within ``symbols`` when
    given; ``weighting="equal"`` (default: the ranking's scores are an order, not a size) or ``"score"``
    (proportional to the positive scores; symbols scored <= 0 get nothing);
  - ``given``: a mapping symbol -> weight. Long-only: every weight finite and >= 0, summing to 1 within
    :data:`WEIGHT_TOLERANCE`; an explicit ``CASH`` entry is the part held in cash (``{"AAPL": 0.5, "CASH": 0.5}``).

  ``cash`` (computed methods only) is the part of equity the targets leave in cash.
- :func:`plan_rebalance` (pure): each symbol's current weight (``qty * price / equity``) against its target, the
  drift ``current - target``, and ``CASH``: the drift of everything outside the targets (cash, and positions the
  rebalance leaves alone), ``-sum(drifts)``. The threshold is **per symbol, absolute** (weight points: 0.05 is 5% of
  equity): when every ``|drift|`` (``CASH`` included) is within it nothing is planned; when any exceeds it, every
  symbol is brought back to its target. A target quantity is ``weight * equity / price`` rounded toward zero like
  the trader's (whole shares for equities, 1e-6 for crypto pairs), so each position ends within one share (one
  step) of its exact target; a target of 0 sells the whole position; orders under ``min_notional`` are left out.
  Buys are limited to the cash available (``buying_power``; sells pay nothing until they fill): when they would
  spend more, every buy is scaled down by the same factor (:attr:`RebalancePlan.buy_scale`) and the next run
  finishes the job. Sells come before buys.
- :func:`rebalance`: the job. Under the account's lock it reads the universe's daily bars from the store, runs the
  trader's :func:`~airflow_provider_portfolio.trading.cycle.market_step` (quality gate, broker sync: the simulated
  broker fills earlier orders at the open of a later bar; unsent orders settled; stale, refused or implausible bars
  leave a symbol untraded with the reason), prices each symbol at its last **closed** bar (no look-ahead: the
  decision's reference price), plans, records one decision per symbol in the ledger (``claim_decisions``: a retry of
  the same run carries out what its first try decided) and sends through the trader's own
  :func:`~airflow_provider_portfolio.trading.cycle.risk_step` and
  :func:`~airflow_provider_portfolio.trading.cycle.execute_step`: every order checked against the same
  :class:`~airflow_provider_portfolio.trading.risk.RiskLimits` and the kill switch (again right before sending),
  recorded ``pending_submit``, then sent at most once under
  :func:`~airflow_provider_portfolio.trading.orders.client_order_id` (DAG, run, symbol, bar, side). So an Airflow
  retry sends nothing twice, and a crash between sending and recording is reconciled by looking the id up.

A rebalance decision has confidence 1 and score 0 (a target, not a signal's view: ``min_confidence`` never rejects
it and signal validation gives it no verdict). Where a symbol's market is closed at the instant (an equity outside
NYSE hours), the risk layer rejects its order under ``market_open``, as it does the trader's; crypto pairs trade
around the clock. Symbols the market data leaves untraded (no, stale or refused bars) are reported under
``errors`` and keep what they hold; the computed methods weigh only the symbols that can trade, ``given`` weights
stand as given. Positions the account holds outside the universe are left alone (``untouched``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.params import is_crypto, validate_symbols
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE
from airflow_provider_portfolio.market.timing import history_days
from airflow_provider_portfolio.trading.cycle import (
    LOOKBACK_BARS,
    CycleReport,
    CycleSettings,
    _open_positions,
    _start_of_day_equity,
    _with_open_orders,
    check_instant,
    execute_step,
    market_step,
    risk_step,
)
from airflow_provider_portfolio.trading.decision import _round_toward_zero
from airflow_provider_portfolio.trading.performance import TRADING_DAYS_PER_YEAR
from airflow_provider_portfolio.trading.risk import RiskLimits
from airflow_provider_portfolio.trading.session import _ledger_of

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.trading.brokers import Broker

log = logging.getLogger(__name__)

METHODS = ("equal", "inverse_volatility", "discovery", "given")
WEIGHTINGS = ("equal", "score")
#: The key of the cash weight in ``given`` weights and of the rest of equity in drifts.
CASH = "CASH"
#: How far ``given`` weights may sum from 1.
WEIGHT_TOLERANCE = 1e-6
#: Daily log returns the realised volatility looks at by default, and the fewest it accepts.
DEFAULT_LOOKBACK = 60
MIN_RETURNS = 20
#: Days a year of a crypto pair's daily bars (equities: 252 sessions).
CRYPTO_DAYS_PER_YEAR = 365
DEFAULT_TOP_N = 10
DEFAULT_DRIFT_THRESHOLD = 0.05
#: The part of equity the computed methods leave in cash by default in :func:`rebalance`: room for the fills at the
#: next open to cost a little more than the last close (a cash account refuses a buy it cannot pay).
DEFAULT_CASH = 0.02
#: The bars rebalancing works on.
TIMEFRAME = "1Day"


# -- target weights --------------------------------------------------------------------------------------

def _fraction(value: Any, name: str, *, high: float = 1.0, high_open: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok or (value >= high if high_open else value > high):
        bound = f"[0, {high:g})" if high_open else f"[0, {high:g}]"
        raise InvalidInputError(f"{name} must be a number in {bound}, got {value!r}")
    return float(value)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_method(method: Any) -> str:
    """``method`` checked against :data:`METHODS`.

    :raises InvalidInputError: naming the method and the known ones.
    """
    if not isinstance(method, str) or method.strip() not in METHODS:
        raise InvalidInputError(f"unknown rebalancing method {method!r}: use one of {', '.join(METHODS)}")
    return method.strip()


def check_given_weights(weights: Any) -> tuple[dict[str, float], float]:
    """``given`` weights checked: (symbol -> weight, the ``CASH`` weight).

    :raises InvalidInputError: for a non-mapping or empty mapping, a bad symbol, a weight that is not a finite number
        >= 0 (rebalancing is long-only), or weights (``CASH`` included) not summing to 1 within
        :data:`WEIGHT_TOLERANCE`: the message names the sum.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidInputError(f"weights must be a non-empty mapping of symbol to weight, got {weights!r}")
    cash = 0.0
    out: dict[str, float] = {}
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInputError(f"weight of {key!r} must be a finite number, got {value!r}")
        if value < 0:
            raise InvalidInputError(f"weight of {key!r} is {value!r}: rebalancing is long-only, weights must be >= 0")
        if isinstance(key, str) and key.strip().upper() == CASH:
            cash += float(value)
            continue
        [symbol] = validate_symbols([key])
        if symbol in out:
            raise InvalidInputError(f"weights name {symbol} twice")
        out[symbol] = float(value)
    total = math.fsum([*out.values(), cash])
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInputError(
            f"weights must sum to 1 (within {WEIGHT_TOLERANCE:g}), CASH included, got a sum of {total:.10g} "
            f"({', '.join(f'{s} {w:g}' for s, w in list(out.items())[:10])}{', CASH ' + format(cash, 'g') if cash else ''})"
            ": give a CASH entry for the part held in cash")
    return out, cash


def realised_volatility(closes: Sequence[float], symbol: str, lookback: int = DEFAULT_LOOKBACK) -> float | None:
    """The annualised realised volatility of ``closes`` (oldest first; NaN and non-positive closes dropped): the
    sample standard deviation of the last ``lookback`` log returns times ``sqrt(252)`` (equities) or ``sqrt(365)``
    (crypto pairs). ``None`` with fewer than :data:`MIN_RETURNS` returns."""
    import numpy as np

    values = np.asarray(closes, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    returns = np.diff(np.log(values))[-lookback:]
    if returns.size < MIN_RETURNS:
        return None
    per_year = CRYPTO_DAYS_PER_YEAR if is_crypto(symbol) else TRADING_DAYS_PER_YEAR
    return float(np.std(returns, ddof=1) * math.sqrt(per_year))


def _closes_of(bars: pd.DataFrame | None, closes: Mapping[str, Sequence[float]] | None) -> Mapping[str, Any]:
    if closes is not None:
        return closes
    if bars is None:
        raise InvalidInputError("inverse_volatility needs the symbols' daily bars (bars=) or closes (closes=)")
    if bars.empty:
        return {}
    ordered = bars.sort_values(["symbol", "ts"])
    return {s: g["close"].to_numpy(dtype="float64") for s, g in ordered.groupby("symbol", sort=False)}


def _normalised(raw: Mapping[str, float], invested: float) -> dict[str, float]:
    total = math.fsum(raw.values())
    return {s: invested * w / total for s, w in raw.items()}


def target_weights(method: str, *, symbols: Sequence[str] | None = None, bars: pd.DataFrame | None = None,
                   closes: Mapping[str, Sequence[float]] | None = None, ranking: pd.DataFrame | None = None,
                   weights: Mapping[str, float] | None = None, top_n: int | None = None, weighting: str = "equal",
                   lookback: int = DEFAULT_LOOKBACK, cash: float = 0.0) -> dict[str, float]:
    """Target weights, symbol -> fraction of equity (see the module docstring).

    :param method: one of :data:`METHODS`.
    :param symbols: the universe (``equal``, ``inverse_volatility``; for ``discovery`` a filter of the ranking).
    :param bars: ``inverse_volatility``: the symbols' closed daily bars (``symbol``, ``ts``, ``close``).
    :param closes: ``inverse_volatility``: symbol -> its daily closes, oldest first (instead of ``bars``).
    :param ranking: ``discovery``: the ranking (``PortfolioStore.latest_opportunities``: ``rank``, ``symbol``,
        ``score``).
    :param weights: ``given``: symbol -> weight, an optional ``CASH`` entry.
    :param top_n: ``discovery``: how many of the best ranked (default :data:`DEFAULT_TOP_N`).
    :param weighting: ``discovery``: ``equal`` or ``score``.
    :param lookback: ``inverse_volatility``: the log returns looked at (>= :data:`MIN_RETURNS`).
    :param cash: the part of equity left in cash, in [0, 1) (computed methods; ``given`` weights say it with
        ``CASH``).
    :return: the weights in the universe's (or ranking's) order; they sum to ``1 - cash``.
    :raises InvalidInputError: for an unknown method, missing or bad inputs, ``given`` weights not summing to 1, a
        symbol with too little history for ``inverse_volatility``, an empty ranking.
    """
    method = check_method(method)
    cash = _fraction(cash, "cash")
    if weights is not None and method != "given":
        raise InvalidInputError(f"weights are for method 'given', not {method!r}")
    if method == "given":
        if cash:
            raise InvalidInputError("the cash of 'given' weights is their CASH entry: do not pass cash as well")
        given, _ = check_given_weights(weights)
        if symbols is not None:
            outside = sorted(set(given) - set(validate_symbols(list(symbols))))
            if outside:
                raise InvalidInputError(f"weights name symbol(s) outside the universe: {', '.join(outside)}")
        return given
    if method == "discovery":
        return _discovery_weights(ranking, symbols, top_n, weighting, 1.0 - cash)
    if symbols is None:
        raise InvalidInputError(f"method {method!r} needs symbols")
    universe = validate_symbols(list(symbols))
    if method == "equal":
        return {s: (1.0 - cash) / len(universe) for s in universe}
    lookback = _positive_int(lookback, "lookback")
    if lookback < MIN_RETURNS:
        raise InvalidInputError(f"lookback must be >= {MIN_RETURNS} returns, got {lookback}")
    series = _closes_of(bars, closes)
    vols: dict[str, float] = {}
    short: list[str] = []
    for symbol in universe:
        vol = realised_volatility(series.get(symbol, ()), symbol, lookback)
        if vol is None or not vol > 0:
            n = len(series.get(symbol, ()))
            short.append(f"{symbol} ({n} closes)" if vol is None else f"{symbol} (no price movement)")
        else:
            vols[symbol] = vol
    if short:
        raise InvalidInputError(f"inverse_volatility needs at least {MIN_RETURNS + 1} daily closes that move per "
                                f"symbol: {', '.join(short)}")
    return _normalised({s: 1.0 / v for s, v in vols.items()}, 1.0 - cash)


def _discovery_weights(ranking: pd.DataFrame | None, symbols: Sequence[str] | None, top_n: int | None,
                       weighting: str, invested: float) -> dict[str, float]:
    if weighting not in WEIGHTINGS:
        raise InvalidInputError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    top_n = _positive_int(DEFAULT_TOP_N if top_n is None else top_n, "top_n")
    if ranking is None or ranking.empty:
        raise InvalidInputError("no discovery ranking in the store: run portfolio_discovery (or "
                                "desk.discovery.discover) before rebalancing by 'discovery'")
    missing = sorted({"rank", "symbol", "score"} - set(ranking.columns))
    if missing:
        raise InvalidInputError(f"the ranking has no column(s) {', '.join(missing)}")
    ranked = ranking.sort_values("rank", kind="stable")
    if symbols is not None:
        ranked = ranked[ranked["symbol"].isin(validate_symbols(list(symbols)))]
        if ranked.empty:
            raise InvalidInputError("no symbol of the universe is in the discovery ranking")
    top = ranked.drop_duplicates("symbol").head(top_n)
    if weighting == "equal":
        return {str(s): invested / len(top) for s in top["symbol"]}
    scores = {str(s): float(v) for s, v in zip(top["symbol"], top["score"], strict=True)
              if isinstance(v, int | float) and math.isfinite(v) and v > 0}
    if not scores:
        raise InvalidInputError(f"score weighting: none of the top {top_n} ranked symbols has a positive score")
    return _normalised(scores, invested)


# -- the plan ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedOrder:
    """An order of a rebalance: ``qty`` (> 0) to ``side`` at the reference ``price``, from ``current_qty`` to
    ``target_qty``."""

    symbol: str
    side: str
    qty: float
    price: float
    current_qty: float
    target_qty: float

    @property
    def notional(self) -> float:
        return self.qty * self.price


@dataclass(frozen=True)
class RebalancePlan:
    """What :func:`plan_rebalance` found: weights (current, target, drift; ``CASH`` in ``drifts``), the threshold, and
    the orders (sells first, then buys; empty when every drift is within the threshold)."""

    targets: dict[str, float]
    current: dict[str, float]
    drifts: dict[str, float]
    drift_threshold: float
    orders: list[PlannedOrder] = field(default_factory=list)
    buy_scale: float = 1.0

    @property
    def max_drift(self) -> float:
        """The largest ``|drift|``, ``CASH`` included."""
        return max((abs(d) for d in self.drifts.values()), default=0.0)

    @property
    def triggered(self) -> bool:
        """Whether a drift exceeds the threshold (so the book is brought back to its targets)."""
        return self.max_drift > self.drift_threshold


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def plan_rebalance(positions: Mapping[str, float], prices: Mapping[str, float], equity: float,
                   targets: Mapping[str, float], *, drift_threshold: float = DEFAULT_DRIFT_THRESHOLD,
                   buying_power: float | None = None, fractionable: Mapping[str, bool] | None = None,
                   min_notional: float = 1.0) -> RebalancePlan:
    """The orders that bring ``positions`` to ``targets`` (see the module docstring). Pure.

    :param positions: symbol -> signed quantity held (missing: flat); symbols without a target are ignored.
    :param prices: symbol -> reference price (the last close), for every target symbol.
    :param equity: the account's equity (> 0).
    :param targets: symbol -> target weight (finite, >= 0, summing to at most 1; 0 sells the position).
    :param drift_threshold: the largest ``|drift|`` left alone, in [0, 1).
    :param buying_power: the cash buys may spend (``None``: no limit).
    :param fractionable: symbol -> whether fractions trade (missing: whole shares); :func:`rebalance` passes the
        trader's rule (crypto pairs in 1e-6 steps, equities in whole shares).
    :param min_notional: orders worth less are left out.
    :raises InvalidInputError: for bad weights, a target symbol without a usable price, a bad equity, threshold or
        buying power.
    """
    if not _finite_number(equity) or equity <= 0:
        raise InvalidInputError(f"equity must be a finite number > 0, got {equity!r}")
    threshold = _fraction(drift_threshold, "drift_threshold")
    if buying_power is not None and (not _finite_number(buying_power) or buying_power < 0):
        raise InvalidInputError(f"buying_power must be a finite number >= 0, got {buying_power!r}")
    if not _finite_number(min_notional) or min_notional < 0:
        raise InvalidInputError(f"min_notional must be a finite number >= 0, got {min_notional!r}")
    if not isinstance(targets, Mapping) or not targets:
        raise InvalidInputError(f"targets must be a non-empty mapping of symbol to weight, got {targets!r}")
    for symbol, weight in targets.items():
        if not _finite_number(weight) or weight < 0:
            raise InvalidInputError(f"target weight of {symbol} must be a finite number >= 0, got {weight!r}")
    total = math.fsum(targets.values())
    if total > 1.0 + WEIGHT_TOLERANCE:
        raise InvalidInputError(f"target weights sum to {total:.10g} > 1: rebalancing does not borrow")
    bad = [f"{s} ({prices.get(s)!r})" for s in targets if not _finite_number(prices.get(s)) or prices[s] <= 0]
    if bad:
        raise InvalidInputError(f"no usable price for {', '.join(bad)}")
    fractionable = fractionable or {}
    current: dict[str, float] = {}
    drifts: dict[str, float] = {}
    for symbol, weight in targets.items():
        qty = positions.get(symbol, 0.0)
        if not _finite_number(qty):
            raise InvalidInputError(f"position of {symbol} must be a finite number, got {qty!r}")
        current[symbol] = float(qty) * float(prices[symbol]) / equity
        drifts[symbol] = current[symbol] - float(weight)
    drifts[CASH] = -math.fsum(d for s, d in drifts.items())
    plan = RebalancePlan(dict(targets), current, drifts, threshold)
    if not plan.triggered:
        return plan
    sells: list[PlannedOrder] = []
    buys: list[PlannedOrder] = []
    for symbol, weight in targets.items():
        price, held = float(prices[symbol]), float(positions.get(symbol, 0.0))
        can_fraction = bool(fractionable.get(symbol, False))
        target = 0.0 if weight == 0 else _round_toward_zero(weight * equity / price, can_fraction)
        delta = target - held if weight == 0 else _round_toward_zero(target - held, can_fraction)
        if delta == 0 or abs(delta) * price < min_notional:
            continue
        order = PlannedOrder(symbol, "buy" if delta > 0 else "sell", abs(delta), price, held, held + delta)
        (buys if delta > 0 else sells).append(order)
    scale = 1.0
    spend = math.fsum(o.notional for o in buys)
    if buying_power is not None and spend > buying_power:
        scale = buying_power / spend
        scaled = []
        for o in buys:
            qty = _round_toward_zero(o.qty * scale, bool(fractionable.get(o.symbol, False)))
            if qty > 0 and qty * o.price >= min_notional:
                scaled.append(PlannedOrder(o.symbol, "buy", qty, o.price, o.current_qty, o.current_qty + qty))
        log.info("buys of %.2f exceed the cash available (%.2f): each scaled by %.4f", spend, buying_power, scale)
        buys = scaled
    return RebalancePlan(plan.targets, current, drifts, threshold, [*sells, *buys], scale)


# -- the job -----------------------------------------------------------------------------------------------

@dataclass
class RebalanceReport:
    """What a rebalance did (:meth:`to_dict`: small JSON).

    :param targets: symbol -> target weight (0: sold); ``current`` and ``drifts`` likewise (``CASH`` in ``drifts``).
    :param triggered: whether a drift exceeded the threshold.
    :param buy_scale: the factor the buys were scaled by to fit the cash (1: not scaled).
    :param orders: one per buy or sell decided (a retry reports its first try's): ``symbol``, ``side``, ``qty``,
        ``price`` (the reference close), ``notional``, ``approved``, ``rule`` and ``reason`` of the risk verdict,
        ``client_order_id``, ``status`` in the ledger (``None`` when never recorded).
    :param rejected: symbol -> ``rule: reason`` of the orders the risk limits rejected.
    :param submitted: client order ids at the broker (sent by this run, or by an earlier try of it).
    :param errors: symbol -> why it is not traded (no, stale or refused bars...).
    :param untouched: positions held outside the universe, left alone.
    :param ranking: ``discovery``: the ranking's ``run_id`` and ``ts``.
    """

    as_of: str
    account: str
    method: str
    drift_threshold: float
    equity: float | None = None
    targets: dict[str, float] = field(default_factory=dict)
    current: dict[str, float] = field(default_factory=dict)
    drifts: dict[str, float] = field(default_factory=dict)
    triggered: bool = False
    buy_scale: float = 1.0
    orders: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    broker_rejected: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    untouched: list[str] = field(default_factory=list)
    synced: int = 0
    fills: int = 0
    snapshot: dict[str, float] = field(default_factory=dict)
    ranking: dict[str, Any] | None = None

    @property
    def max_drift(self) -> float:
        """The largest ``|drift|``, ``CASH`` included."""
        return max((abs(d) for d in self.drifts.values()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        def weights(values: Mapping[str, float]) -> dict[str, float]:
            return {s: round(float(w), 6) for s, w in values.items()}

        return {
            "as_of": self.as_of, "account": self.account, "method": self.method,
            "drift_threshold": self.drift_threshold, "equity": self.equity, "targets": weights(self.targets),
            "current": weights(self.current), "drifts": weights(self.drifts), "max_drift": round(self.max_drift, 6),
            "triggered": self.triggered, "buy_scale": round(self.buy_scale, 6),
            "proposed": len(self.orders), "approved": sum(bool(o["approved"]) for o in self.orders),
            "orders": self.orders, "risk_rejected": self.rejected, "submitted": len(self.submitted),
            "broker_rejected": self.broker_rejected, "unknown": self.unknown, "errors": self.errors,
            "untouched": self.untouched, "synced_orders": self.synced, "fills": self.fills, "snapshot": self.snapshot,
            "ranking": self.ranking,
        }


def rebalance(
    store: PortfolioStore,
    broker: Broker,
    *,
    now: datetime,
    dag_id: str,
    run_id: str,
    method: str = "equal",
    symbols: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    top_n: int | None = None,
    weighting: str = "equal",
    lookback: int = DEFAULT_LOOKBACK,
    cash: float | None = None,
    drift_threshold: float = DEFAULT_DRIFT_THRESHOLD,
    limits: RiskLimits | None = None,
    kill_switch: object = "active",
    exchange: str = DEFAULT_EXCHANGE,
    max_stale_bars: int = 2,
    min_notional: float = 1.0,
    lock_timeout_s: float = 120.0,
) -> RebalanceReport:
    """Rebalance ``broker``'s account to the target weights at ``now`` (see the module docstring).

    :param store: the portfolio store (migrated), holding the universe's daily bars (the ETL's) and, for
        ``discovery``, the ranking.
    :param broker: where orders go (its ledger must be ``store``'s).
    :param now: the instant (tz-aware): bars closed by then, the ranking stored by then.
    :param dag_id: the deciding job (part of every client order id).
    :param run_id: this run of it (retries share it).
    :param method: one of :data:`METHODS`.
    :param symbols: the universe: required for ``equal`` and ``inverse_volatility``; for ``discovery`` a filter of the
        ranking; for ``given`` optional (held symbols of it without a weight are sold). Held symbols of the universe
        (for ``discovery`` without one: of the ranking) that get no weight are sold; other positions are left alone.
    :param weights: ``given``: symbol -> weight with an optional ``CASH`` entry, summing to 1.
    :param top_n: ``discovery``: how many of the best ranked (default :data:`DEFAULT_TOP_N`).
    :param weighting: ``discovery``: ``equal`` or ``score``.
    :param lookback: ``inverse_volatility``: daily log returns looked at.
    :param cash: the part of equity the computed methods leave in cash (default :data:`DEFAULT_CASH`); not with
        ``given``.
    :param drift_threshold: the largest per-symbol ``|current - target|`` weight left alone.
    :param limits: the risk limits (default ``RiskLimits()``, the trader's).
    :param kill_switch: the raw kill switch, or a reader of it (read again right before sending).
    :param exchange: the calendar of equities.
    :param max_stale_bars: how many daily bars a symbol's data may lag its calendar before it is not traded.
    :param min_notional: orders worth less are not placed.
    :param lock_timeout_s: how long to wait for the account's lock (a trading cycle on the same account).
    :raises InvalidInputError: for bad parameters, weights not summing to 1, an unknown method, no bars in the store
        for the universe, no ranking, or no target symbol that can trade; nothing is sent then.
    :raises AccountLockedError: when another cycle holds the account too long.
    """
    method = check_method(method)
    now = check_instant(now)
    universe = None if symbols is None else validate_symbols(list(symbols))
    given: dict[str, float] = {}
    if weights is not None and method != "given":
        raise InvalidInputError(f"weights are for method 'given', not {method!r}")
    if method == "given":
        if cash is not None:
            raise InvalidInputError("the cash of 'given' weights is their CASH entry: do not pass cash as well")
        given = target_weights("given", weights=weights, symbols=universe)
    elif method in ("equal", "inverse_volatility") and universe is None:
        raise InvalidInputError(f"method {method!r} needs symbols")
    kept = 0.0 if method == "given" else _fraction(DEFAULT_CASH if cash is None else cash, "cash")
    lookback = _positive_int(lookback, "lookback")
    if method == "inverse_volatility" and not MIN_RETURNS <= lookback < LOOKBACK_BARS:
        raise InvalidInputError(f"lookback must be within [{MIN_RETURNS}, {LOOKBACK_BARS - 1}] returns, got {lookback}")
    threshold = _fraction(drift_threshold, "drift_threshold")
    settings = CycleSettings(timeframe=TIMEFRAME, limits=RiskLimits() if limits is None else limits,
                             kill_switch=kill_switch, bar_aware=False, exchange=exchange, max_stale_bars=max_stale_bars,
                             lock_timeout_s=lock_timeout_s)
    ledger = _ledger_of(broker, store)
    report = RebalanceReport(as_of=now.isoformat(), account=broker.account, method=method, drift_threshold=threshold)
    ranking = None
    if method == "discovery":
        ranking = store.latest_opportunities(until=now)
        wanted = list(_discovery_weights(ranking, universe, top_n, weighting, 1.0 - kept))
        report.ranking = {"run_id": str(ranking["run_id"].iloc[0]), "ts": _iso(ranking["ts"].iloc[0])}
    else:
        wanted = list(given) if method == "given" else list(universe or [])

    cycle = CycleReport()
    with ledger.account_lock(broker.account, owner=f"{dag_id}/{run_id}", timeout_s=lock_timeout_s):
        scope = universe if universe is not None else \
            (None if ranking is None else [str(s) for s in ranking["symbol"]])
        held_now = _with_open_orders(_open_positions(list(scope or []), broker.account_state().positions), ledger,
                                     broker.account)  # an accepted order not filled yet counts as held
        held_now = {s: q for s, q in held_now.items() if q}
        managed = list(dict.fromkeys([*wanted, *(s for s in scope or [] if s in held_now)]))
        report.untouched = sorted(s for s in held_now if s not in managed)
        if not managed:
            raise InvalidInputError("nothing to rebalance: no symbol has a weight and none of the universe is held")
        start = (now - timedelta(days=history_days(TIMEFRAME, LOOKBACK_BARS))).date()
        bars, unreadable = store.read_bars_checked(managed, TIMEFRAME, start, now.date())
        if bars.empty:
            shown = ", ".join(managed[:20]) + (" ..." if len(managed) > 20 else "")
            raise InvalidInputError(f"the store {store.url} has no {TIMEFRAME} bars of {shown} up to {now.date()}: run "
                                    "the daily ETL first; nothing was sent")
        market = market_step(managed, bars, now, broker=broker, ledger=ledger, dag_id=dag_id, run_id=run_id,
                             settings=settings, report=cycle, missing=unreadable)
        errors = dict(market.errors)
        state = broker.account_state()
        cycle.start_of_day_equity, reference = _start_of_day_equity(state, market.bars, market.ends, managed, now,
                                                                    broker=broker, ledger=ledger, settings=settings)
        cycle.loss_reference = reference.isoformat()
        held = _with_open_orders(_open_positions(managed, state.positions), ledger, broker.account)
        targets = _targets(method, wanted, managed, market.panels["close"], errors, given=given, ranking=ranking,
                           weighting=weighting, lookback=lookback, cash=kept)
        if wanted and not any(s in targets for s in wanted):  # never sell the rest for targets it cannot buy
            shown = "; ".join(f"{s}: {errors.get(s, 'not traded')}" for s in wanted[:10])
            raise InvalidInputError(f"no target symbol can be traded at {now.isoformat()} ({shown}): nothing was "
                                    "sent")
        report.equity = float(state.equity)
        plan = plan_rebalance({s: held.get(s, 0.0) for s in targets}, market.prices, float(state.equity), targets,
                              drift_threshold=threshold,
                              buying_power=max(min(float(state.cash), float(state.buying_power)), 0.0),
                              fractionable={s: is_crypto(s) for s in targets}, min_notional=min_notional)
        report.targets, report.current, report.drifts = plan.targets, plan.current, plan.drifts
        report.triggered, report.buy_scale = plan.triggered, plan.buy_scale
        rows = _decision_rows(plan, managed, market.bar_of, market.prices, held, errors, dag_id=dag_id,
                              run_id=run_id, account=broker.account, method=method, report=report)
        claimed = ledger.claim_decisions(rows)  # a retry of this run gets its first try's decisions back
        side_first = {"sell": 0, "buy": 1}
        mine = {s: claimed[s] for s in sorted(claimed, key=lambda s: (side_first.get(claimed[s]["action"], 2), s))}
        ids: dict[str, Any] = {"broker": broker, "ledger": ledger, "dag_id": dag_id, "run_id": run_id}
        assets: dict[str, Any] = {}
        risk_step(mine, now, **ids, settings=settings, report=cycle, assets=assets)
        execute_step(mine, now, **ids, report=cycle, settings=settings, assets=assets)
        report.snapshot = broker.snapshot(now, run_id)
    report.errors.update(cycle.errors)
    report.rejected, report.broker_rejected, report.unknown = cycle.rejected, cycle.broker_rejected, cycle.unknown
    report.submitted, report.synced, report.fills = cycle.submitted, cycle.synced, cycle.fills
    report.orders = [_order_view(d, ledger, broker.account) for d in mine.values() if d["action"] in ("buy", "sell")]
    log.info("rebalance (%s) of %s at %s: largest drift %.4f, threshold %.4f; %d order(s) proposed, %d risk-rejected, "
             "%d at the broker", method, broker.account, report.as_of, report.max_drift, threshold, len(report.orders),
             len(report.rejected), len(report.submitted))
    return report


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _targets(method: str, wanted: list[str], managed: list[str], closes: Any, errors: dict[str, str], *,
             given: Mapping[str, float], ranking: pd.DataFrame | None, weighting: str, lookback: int,
             cash: float) -> dict[str, float]:
    """Target weights of the managed symbols that can trade (0 for those the method gives nothing). The computed
    methods weigh only those; a symbol too short of history for ``inverse_volatility`` is not traded (its reason
    goes to ``errors``)."""
    candidates = [s for s in wanted if s not in errors]
    weights: dict[str, float] = {}
    if method == "given":
        weights = {s: given[s] for s in candidates}
    elif method == "inverse_volatility":
        row = {s: i for i, s in enumerate(managed)}
        series = {s: closes[row[s]] for s in candidates}
        for s in candidates:
            vol = realised_volatility(series[s], s, lookback)
            if vol is None:
                errors[s] = f"too little history for inverse_volatility: needs {MIN_RETURNS + 1} daily closes"
            elif not vol > 0:
                errors[s] = "no price movement: no volatility to weigh it by"
        candidates = [s for s in candidates if s not in errors]
        if candidates:
            weights = target_weights(method, symbols=candidates, closes=series, lookback=lookback, cash=cash)
    elif method == "discovery" and candidates:
        assert ranking is not None  # read by the caller
        tradable = ranking[ranking["symbol"].isin(candidates)]
        weights = _discovery_weights(tradable, None, len(candidates), weighting, 1.0 - cash)
    elif candidates:
        weights = target_weights("equal", symbols=candidates, cash=cash)
    return {**weights, **{s: 0.0 for s in managed if s not in weights and s not in errors}}


def _decision_rows(plan: RebalancePlan, managed: list[str], bar_of: Mapping[str, Any], prices: Mapping[str, float],
                   held: Mapping[str, float], errors: Mapping[str, str], *, dag_id: str, run_id: str, account: str,
                   method: str, report: RebalanceReport) -> list[dict[str, Any]]:
    """One decision row per managed symbol with a closed bar: its order, or a hold with the reason. The key's
    ``run_key`` is the run: a retry finds its own decisions; another run decides afresh, on positions that count
    the open orders (so it never repeats one)."""
    orders = {o.symbol: o for o in plan.orders}
    rows = []
    for symbol in managed:
        bar, error = bar_of.get(symbol), errors.get(symbol)
        if error or bar is None:
            report.errors[symbol] = error or "no bar of its calendar has closed yet"
        if bar is None:
            continue
        current = float(held.get(symbol, 0.0))
        order = orders.get(symbol)
        if symbol in plan.targets:
            view = (f"weight {plan.current[symbol]:.2%}, target {plan.targets[symbol]:.2%}, "
                    f"drift {plan.drifts[symbol]:+.2%}")
        else:
            view = "no target"
        if error:
            reason = error
        elif order is not None:
            reason = f"rebalance ({method}): {view}: to {order.target_qty:g} from {current:g}"
        elif plan.triggered:
            reason = f"rebalance ({method}): {view}: at its target within one share"
        else:
            reason = (f"rebalance ({method}): {view}: every drift within {plan.drift_threshold:.2%} "
                      f"(largest {plan.max_drift:.2%}), nothing to do")
        rows.append({
            "dag_id": dag_id, "symbol": symbol, "timeframe": TIMEFRAME, "bar_ts": bar, "run_key": run_id,
            "run_id": run_id, "account": account, "action": order.side if order else "hold", "score": 0.0,
            "confidence": 1.0, "price": prices.get(symbol), "current_qty": current,
            "target_qty": order.target_qty if order else current, "order_qty": order.qty if order else 0.0,
            "reason": reason, "error": error,
            "signals": {"rebalance": {"score": 0.0, "confidence": 1.0, "reason": f"{method}: {view}"}},
        })
    return rows


def _order_view(decision: Mapping[str, Any], ledger: Any, account: str) -> dict[str, Any]:
    """An order of the report: the decision, its risk verdict, and the ledger's status."""
    cid = decision.get("client_order_id")
    stored = ledger.order(account, cid) if cid else None
    qty, price = float(decision["order_qty"]), float(decision["price"])
    return {"symbol": decision["symbol"], "side": decision["action"], "qty": qty, "price": price,
            "notional": round(qty * price, 2), "approved": decision["approved"], "rule": decision["risk_rule"],
            "reason": decision["risk_reason"], "client_order_id": cid,
            "status": None if stored is None else stored["status"]}
