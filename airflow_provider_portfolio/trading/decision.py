"""Decisions: signals combined into a score, a target position, and the order that moves toward it.

**Combination** (:func:`combine`). Each signal ``i`` has a score ``s_i`` in [-1, 1] and a confidence
``c_i`` in [0, 1]; with weights ``w_i``::

    score      = sum(w_i c_i s_i) / sum(w_i c_i)      (0 where no weighted signal has confidence)
    confidence = sum(w_i c_i) / sum(w_i)

so a signal without confidence (too little history, an unhealthy model, no news) neither moves the
score nor counts as support. Presets: :data:`AGENT_WEIGHTS` (the per-asset agents: 60% sentiment, 40%
technical) and :data:`AUTO_TRADER_WEIGHTS` (the portfolio auto trader: forecast first).

**Target** (:func:`decide`). Below ``min_confidence`` or ``|score| < min_score`` the decision is
``hold``: the position is left as it is (no churn on weak evidence). Otherwise the target notional is

- ``fixed_fraction``: ``equity * fraction * score``;
- ``volatility``: ``equity * min(fraction, target_volatility / volatility) * score``, with
  ``volatility`` the symbol's per-bar return volatility (e.g. ATR / close), so a calmer asset gets a
  larger position, never more than ``fraction`` of equity;

and a negative target becomes 0 (exit) unless shorting is allowed. The order is the difference
between the target quantity (``target notional / price``) and the current position, rounded toward
zero to whole shares when the asset is not fractionable (else to 1e-6); an order under
``min_notional`` is a ``hold``. A symbol with a missing, zero or negative price, or a missing
volatility under volatility sizing, is a ``hold`` with the reason in ``error``: nothing is guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from airflow_provider_portfolio.exceptions import InvalidInputError

#: Per-asset agent DAGs: sentiment 60%, technical 40%.
AGENT_WEIGHTS: dict[str, float] = {"sentiment": 0.6, "technical": 0.4}
#: The portfolio auto trader: forecast first.
AUTO_TRADER_WEIGHTS: dict[str, float] = {"forecast": 0.6, "technical": 0.25, "sentiment": 0.15}
SIZINGS = ("fixed_fraction", "volatility")
ACTIONS = ("buy", "sell", "hold")
_FRACTIONAL_STEP = 1e-6


def check_weights(weights: Mapping[str, Any]) -> dict[str, float]:
    """``weights`` as a dict of non-negative finite floats with a positive sum.

    :raises InvalidInputError: otherwise.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidInputError(f"weights must be a non-empty mapping of signal name to weight, got {weights!r}")
    out: dict[str, float] = {}
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise InvalidInputError(f"weight of {name!r} must be a finite number >= 0, got {value!r}")
        out[str(name)] = float(value)
    if sum(out.values()) <= 0:
        raise InvalidInputError(f"weights must not all be zero, got {out}")
    return out


def combine(signals: Mapping[str, Any], weights: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Confidence-weighted score and support per symbol (see the module docstring).

    :param signals: name -> an object with ``score`` and ``confidence`` arrays of equal shape
        (``trading.signals.Signal``).
    :param weights: name -> weight; every weighted name must be present in ``signals``.
    :raises InvalidInputError: for bad weights, a missing signal, or mismatched shapes.
    """
    weights = check_weights(weights)
    missing = sorted(n for n, w in weights.items() if w > 0 and n not in signals)
    if missing:
        raise InvalidInputError(f"no signal for weighted name(s) {missing}; have {sorted(signals)}")
    total_weight = sum(weights.values())
    support: np.ndarray | None = None
    weighted: np.ndarray | None = None
    for name, w in weights.items():
        if w == 0:
            continue
        score = np.clip(np.nan_to_num(np.asarray(signals[name].score, dtype=np.float64)), -1.0, 1.0)
        conf = np.clip(np.nan_to_num(np.asarray(signals[name].confidence, dtype=np.float64)), 0.0, 1.0)
        if score.shape != conf.shape or (support is not None and score.shape != support.shape):
            others: tuple[int, ...] | None = None if support is None else support.shape
            raise InvalidInputError(f"signal {name!r} has shape {score.shape}, the others {others}")
        support = w * conf if support is None else support + w * conf
        weighted = w * conf * score if weighted is None else weighted + w * conf * score
    if support is None or weighted is None:  # check_weights refuses weights that are all zero
        raise InvalidInputError("every weight is 0: no signal to combine")
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(support > 0, weighted / np.where(support > 0, support, 1.0), 0.0)
    return np.clip(score, -1.0, 1.0), np.clip(support / total_weight, 0.0, 1.0)


@dataclass(frozen=True)
class Decision:
    """What to do with one symbol at one bar.

    :param action: ``buy``, ``sell`` or ``hold``.
    :param order_qty: shares to trade (>= 0; 0 for hold).
    :param target_qty: the position aimed at (the current one for hold).
    :param error: why nothing could be decided (bad price...), else ``None``.
    """

    symbol: str
    action: str
    score: float
    confidence: float
    price: float
    current_qty: float
    target_qty: float
    order_qty: float
    reason: str
    error: str | None = None

    @property
    def notional(self) -> float:
        """``order_qty * price`` (0 for hold)."""
        return self.order_qty * self.price if self.action != "hold" else 0.0


def _round_toward_zero(qty: float, fractionable: bool) -> float:
    if not fractionable:
        return float(math.trunc(qty))
    # round() first: 0.3 / 1e-6 is 299999.99999999994 in binary floating point, not 300000
    return round(math.trunc(round(qty / _FRACTIONAL_STEP, 6)) * _FRACTIONAL_STEP, 6)


def decide(
    symbols: Sequence[str],
    score: Sequence[float] | np.ndarray,
    confidence: Sequence[float] | np.ndarray,
    prices: Mapping[str, float],
    positions: Mapping[str, float],
    equity: float,
    *,
    min_confidence: float = 0.55,
    min_score: float = 0.1,
    sizing: str = "fixed_fraction",
    fraction: float = 0.05,
    target_volatility: float = 0.01,
    volatility: Mapping[str, float] | None = None,
    fractionable: Mapping[str, bool] | None = None,
    allow_short: bool = False,
    min_notional: float = 1.0,
) -> list[Decision]:
    """One :class:`Decision` per symbol (see the module docstring).

    :param symbols: the symbols, aligned with ``score`` and ``confidence``.
    :param prices: symbol -> reference price (the last close).
    :param positions: symbol -> current signed quantity (missing: 0).
    :param equity: account equity (> 0).
    :param fractionable: symbol -> whether fractional quantities are allowed (missing: whole shares).
    :raises InvalidInputError: for bad parameters (not for a bad price of one symbol).
    """
    if sizing not in SIZINGS:
        raise InvalidInputError(f"sizing must be one of {SIZINGS}, got {sizing!r}")
    bounds = (("min_confidence", min_confidence, 0.0, 1.0), ("min_score", min_score, 0.0, 1.0),
              ("fraction", fraction, 1e-12, 1.0), ("target_volatility", target_volatility, 1e-12, 10.0))
    for name, value, low, high in bounds:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise InvalidInputError(f"{name} must be within [{low}, {high}], got {value!r}")
    if isinstance(equity, bool) or not isinstance(equity, int | float) or not math.isfinite(equity) or equity <= 0:
        raise InvalidInputError(f"equity must be a positive number, got {equity!r}")
    score_a, conf_a = np.asarray(score, dtype=np.float64), np.asarray(confidence, dtype=np.float64)
    if score_a.shape != (len(symbols),) or conf_a.shape != (len(symbols),):
        raise InvalidInputError(f"score and confidence must have one value per symbol ({len(symbols)})")
    fractionable = fractionable or {}
    volatility = volatility or {}
    out: list[Decision] = []
    for symbol, s, c in zip(symbols, score_a, conf_a, strict=True):
        s = float(np.clip(np.nan_to_num(s), -1, 1))
        c = float(np.clip(np.nan_to_num(c), 0, 1))
        current = float(positions.get(symbol, 0.0))
        price = prices.get(symbol)

        def hold(reason: str, error: str | None = None, *, s: float = s, c: float = c, current: float = current,
                 price: Any = price, symbol: str = symbol) -> Decision:
            p = float(price) if isinstance(price, int | float) and math.isfinite(price) else float("nan")
            return Decision(symbol, "hold", s, c, p, current, current, 0.0, reason, error)

        if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price <= 0:
            out.append(hold(f"no usable price ({price!r})", error=f"invalid price {price!r}"))
            continue
        if c < min_confidence:
            out.append(hold(f"confidence {c:.2f} < {min_confidence:.2f}"))
            continue
        if abs(s) < min_score:
            out.append(hold(f"|score| {abs(s):.2f} < {min_score:.2f}"))
            continue
        if sizing == "volatility":
            vol = volatility.get(symbol)
            if isinstance(vol, bool) or not isinstance(vol, int | float) or not math.isfinite(vol) or vol <= 0:
                out.append(hold(f"no usable volatility ({vol!r})", error=f"invalid volatility {vol!r}"))
                continue
            size = min(fraction, target_volatility / vol)
        else:
            size = fraction
        target_notional = equity * size * s
        if target_notional < 0 and not allow_short:
            target_notional = 0.0
        can_fraction = bool(fractionable.get(symbol, False))
        target = _round_toward_zero(target_notional / price, can_fraction)
        delta = _round_toward_zero(target - current, can_fraction)
        if abs(delta) * price < min_notional or delta == 0:
            out.append(hold(f"already at target ({current:g} vs {target:g})"))
            continue
        action = "buy" if delta > 0 else "sell"
        reason = f"score {s:+.2f} (confidence {c:.2f}): target {target:g} from {current:g}"
        out.append(Decision(symbol, action, s, c, float(price), current, current + delta, abs(delta), reason))
    return out
