"""Trading signals vectorised over symbols: technical indicators, the forecast and news sentiment.

Every signal is a :class:`Signal`: for each symbol a ``score`` in [-1, 1] (positive: buy, negative:
sell), a ``confidence`` in [0, 1] and one short human ``reason``. Scores and confidences are never NaN:
where a signal is undefined (too little history, a flat price, a NaN input) the score and the
confidence are 0 and the reason says why (``"only 12 bars; needs 34"``).

Input panels
------------
Prices come as float (symbols, T) panels. A symbol with fewer bars than the panel is padded with
leading NaNs. A symbol's *history* is the trailing run of finite values of its row (anything before
its last NaN or inf is ignored, so leading padding is simply missing history and an interior gap
restarts the history). ``bars`` below means the length of that run; :func:`bars_available` gives it.
Indicator functions return, per symbol, the value at the last bar (NaN where the history is too short);
``*_series`` helpers return the whole (symbols, T) path.

Indicators (``x`` the closes, ``t`` the last bar)
-------------------------------------------------
- ``sma(n)``: mean of the last ``n`` closes. Needs ``n`` bars.
- ``ema(n)``: ``e_t = alpha * x_t + (1 - alpha) * e_{t-1}`` with ``alpha = 2 / (n + 1)``, seeded at the
  ``n``-th bar of the history by the SMA of the first ``n`` values (the usual TA-Lib convention, so the
  result does not depend on anything before the history). Needs ``n`` bars.
- ``rsi(n=14)``: Wilder's RSI. Changes ``d_t = x_t - x_{t-1}``, gains ``max(d, 0)``, losses
  ``max(-d, 0)``; average gain and loss seeded by the mean of the first ``n`` changes, then Wilder's
  smoothing ``a_t = (a_{t-1} * (n - 1) + g_t) / n`` (an EMA with ``alpha = 1 / n``).
  ``RSI = 100 - 100 / (1 + avg_gain / avg_loss)``; 100 when the average loss is 0 and the gain is not,
  50 when both are 0 (a flat price). Needs ``n + 1`` bars.
- ``macd(fast=12, slow=26, signal=9)``: ``macd = ema(fast) - ema(slow)`` (from the ``slow``-th bar),
  ``signal = ema(signal)`` of the MACD line (seeded the same way, by the SMA of its first ``signal``
  values), ``hist = macd - signal``. Needs ``slow + signal - 1`` bars. On a linear series of slope ``b``
  the MACD is exactly ``b * (slow - fast) / 2`` and the histogram 0.
- ``bollinger(n=20, k=2)``: ``mid = sma(n)``, ``std`` the POPULATION std of the last ``n`` closes
  (divide by ``n``), ``upper/lower = mid +/- k * std``, ``position = (x_t - mid) / (k * std)``
  (+1 on the upper band, -1 on the lower; 0 when ``std`` is 0). Needs ``n`` bars.
- ``momentum(n=20)``: ``x_t / x_{t-n} - 1`` (the close ``n`` bars back, ``close[-n-1]``). Needs
  ``n + 1`` bars.
- ``atr(high, low, close, n=14)``: true range ``TR_t = max(h_t - l_t, |h_t - c_{t-1}|, |l_t - c_{t-1}|)``
  from the second bar on (the first bar has no previous close and no TR); ATR seeded by the mean of the
  first ``n`` TRs, then Wilder's smoothing as in the RSI. The history is the trailing run where high,
  low and close are all finite. Needs ``n + 1`` bars.

Scores
------
Technical signals have confidence ``min(1, bars / (2 * needed))`` where defined: 0.5 on the bare
minimum of history (EMA and Wilder seeds still dominate), 1 from twice the minimum on.

- ``ma_crossover(fast=20, slow=50)``: ``tanh(K_MA * (sma_fast / sma_slow - 1))`` with
  ``K_MA = 20`` (a 5% gap scores tanh(1) = 0.76). Trend following.
- ``rsi``: ``clip((50 - rsi) / 50, -1, 1)``: oversold (low RSI) is positive. Mean reversion.
- ``macd``: ``tanh(K_MACD * hist / close)`` with ``K_MACD = 100`` (a histogram of 1% of the price
  scores 0.76).
- ``bollinger``: ``clip(-position, -1, 1)``: near the lower band is positive. Mean reversion.
- ``momentum``: ``tanh(K_MOM * momentum)`` with ``K_MOM = 10`` (+10% over ``n`` bars scores 0.76).
- ``volatility``: a risk dampener, never a direction: score 0, confidence
  ``1 / (1 + (atr / close) / VOL_REF)`` with ``VOL_REF = 0.02`` (1 for a still price, 0.5 at an ATR of
  2% of the price, falling towards 0 as volatility rises).
- ``technical``: the confidence-weighted mean of the five directional signals above,
  ``score = sum(w_i c_i s_i) / sum(w_i c_i)`` (0 when no signal is defined), with ``w_i`` the
  ``weights`` (default equal). ``confidence = (sum(w_i c_i) / sum(w_i)) * agreement`` with
  ``agreement = |sum(w_i c_i s_i)| / sum(w_i c_i |s_i|)`` (1 when every defined signal points the same
  way, 0 when they cancel out; 1 when all are exactly neutral), times the volatility confidence when
  ``high`` and ``low`` are given.
- ``forecast(expected_return, lower, upper, healthy)``: ``tanh(C_FORECAST * expected_return / half_band)``
  with ``half_band = (upper - lower) / 2`` and ``C_FORECAST = 1`` (a forecast whose interval just
  touches 0 scores tanh(1) = 0.76); confidence 1. Ignored (score 0, confidence 0) where the model is not
  healthy, an input is NaN, or the band is empty or inverted.
- ``sentiment(symbols, news, now, half_life_hours=24)``: for each symbol, the items about it weigh
  ``w = exp(-ln 2 * age_hours / half_life_hours)`` (a 24 h old item weighs half a fresh one at the
  default); ``score = sum(w * s) / sum(w)`` with ``s`` the item's score (or :func:`score_text` of its
  headline and summary when it has none), ``confidence = 1 - exp(-sum(w))``. Items published after
  ``now`` or malformed are ignored and counted in the reason; no news: score 0, confidence 0.

Plain numpy; never imports Airflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.news import score_text
from airflow_provider_portfolio.trading.indicators import (  # noqa: F401 (the indicators: re-exported)
    _atr,
    _bars,
    _check_macd,
    _check_n,
    _check_positive,
    _hlc,
    _panel,
    _rsi,
    _same_shape,
    _vector,
    atr,
    bars_available,
    bollinger,
    ema,
    ema_series,
    macd,
    momentum,
    rsi,
    sma,
    sma_series,
)

#: Gain of the MA-crossover score: ``tanh(K_MA * (sma_fast / sma_slow - 1))``.
K_MA = 20.0
#: Gain of the MACD score: ``tanh(K_MACD * hist / close)``.
K_MACD = 100.0
#: Gain of the momentum score: ``tanh(K_MOM * momentum)``.
K_MOM = 10.0
#: ATR / close at which the volatility confidence is 0.5.
VOL_REF = 0.02
#: Gain of the forecast score: ``tanh(C_FORECAST * expected_return / half_band)``.
C_FORECAST = 1.0
#: Names of the directional signals :func:`technical_signal` averages.
TECHNICAL = ("ma_crossover", "rsi", "macd", "bollinger", "momentum")


@dataclass(frozen=True, eq=False)
class Signal:
    """One signal for every symbol.

    :param name: ``"ma_crossover"``, ``"rsi"``, ``"macd"``, ``"bollinger"``, ``"momentum"``,
        ``"volatility"``, ``"technical"``, ``"forecast"`` or ``"sentiment"``.
    :param score: shape (symbols,), in [-1, 1], never NaN (0 where undefined).
    :param confidence: shape (symbols,), in [0, 1] (0 where the input is insufficient).
    :param reason: one short human reason per symbol.
    """

    name: str
    score: np.ndarray
    confidence: np.ndarray
    reason: list[str]


# ------------------------------------------------------------------------------------------ signals


def _build(name: str, score: np.ndarray, confidence: np.ndarray, defined: np.ndarray,
           reasons: Sequence[str]) -> Signal:
    """A :class:`Signal` with undefined or non-finite entries zeroed and everything clipped to bounds."""
    defined = defined & np.isfinite(score) & np.isfinite(confidence)
    score = np.where(defined, np.clip(np.nan_to_num(score), -1.0, 1.0), 0.0) + 0.0  # no -0.0
    confidence = np.where(defined, np.clip(np.nan_to_num(confidence), 0.0, 1.0), 0.0)
    return Signal(name=name, score=score, confidence=confidence, reason=list(reasons))


def _history_confidence(bars: np.ndarray, needed: int) -> np.ndarray:
    return np.minimum(1.0, bars / (2.0 * needed))


def _short(bars: int, needed: int) -> str:
    return f"only {bars} bars; needs {needed}"


def ma_crossover_signal(closes: Any, fast: int = 20, slow: int = 50) -> Signal:
    """Trend: ``tanh(K_MA * (sma_fast / sma_slow - 1))``; positive when the fast average is above.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :raises InvalidInputError: when a window is below 1, ``fast >= slow`` or ``closes`` is not 2-D.
    """
    fast, slow = _check_n(fast, "fast"), _check_n(slow, "slow")
    if fast >= slow:
        raise InvalidInputError(f"fast must be below slow, got fast={fast}, slow={slow}")
    x = _panel(closes)
    bars = _bars(x)
    f, s = sma(x, fast), sma(x, slow)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = f / s - 1.0
    defined = (bars >= slow) & np.isfinite(gap)
    reasons = [
        _short(b, slow) if b < slow else
        f"SMA{fast} {fv:.4g} vs SMA{slow} {sv:.4g}: gap {100 * g:+.2f}%" if ok else "moving averages undefined"
        for b, fv, sv, g, ok in zip(bars.tolist(), f.tolist(), s.tolist(), gap.tolist(), defined.tolist())
    ]
    return _build("ma_crossover", np.tanh(K_MA * gap), _history_confidence(bars, slow), defined, reasons)


def rsi_signal(closes: Any, n: int = 14) -> Signal:
    """Mean reversion: ``clip((50 - rsi) / 50, -1, 1)``; oversold (RSI < 30) scores above 0.4.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :raises InvalidInputError: when ``n < 1`` or ``closes`` is not 2-D.
    """
    n = _check_n(n)
    x = _panel(closes)
    bars = _bars(x)
    value = _rsi(x, n)
    defined = np.isfinite(value)

    def why(b: int, r: float, ok: bool) -> str:
        if b < n + 1:
            return _short(b, n + 1)
        if not ok:
            return "RSI undefined"
        if r < 30:
            return f"RSI {r:.1f} < 30: oversold"
        if r > 70:
            return f"RSI {r:.1f} > 70: overbought"
        return f"RSI {r:.1f}: neutral"

    reasons = [why(b, r, ok) for b, r, ok in zip(bars.tolist(), value.tolist(), defined.tolist())]
    return _build("rsi", (50.0 - value) / 50.0, _history_confidence(bars, n + 1), defined, reasons)


def macd_signal(closes: Any, fast: int = 12, slow: int = 26, signal: int = 9) -> Signal:
    """``tanh(K_MACD * hist / close)``: positive when the MACD is above its signal line.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :raises InvalidInputError: when a period is below 1, ``fast >= slow`` or ``closes`` is not 2-D.
    """
    fast, slow, signal = _check_macd(fast, slow, signal)
    x = _panel(closes)
    bars = _bars(x)
    needed = slow + signal - 1
    _, _, hist = macd(x, fast, slow, signal)
    last = x[:, -1] if x.shape[1] else np.full(x.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = hist / last
    defined = (bars >= needed) & np.isfinite(scaled)
    reasons = [
        _short(b, needed) if b < needed else
        f"MACD histogram {h:+.4g} ({100 * r:+.3f}% of price)" if ok else "MACD undefined"
        for b, h, r, ok in zip(bars.tolist(), hist.tolist(), scaled.tolist(), defined.tolist())
    ]
    return _build("macd", np.tanh(K_MACD * scaled), _history_confidence(bars, needed), defined, reasons)


def bollinger_signal(closes: Any, n: int = 20, k: float = 2.0) -> Signal:
    """Mean reversion: ``clip(-position, -1, 1)``; near the lower band is positive.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :raises InvalidInputError: when ``n < 1``, ``k <= 0`` or ``closes`` is not 2-D.
    """
    x = _panel(closes)
    _, _, _, position = bollinger(x, n, k)
    bars = _bars(x)
    defined = np.isfinite(position)

    def why(b: int, p: float, ok: bool) -> str:
        if b < n:
            return _short(b, n)
        if not ok:
            return "Bollinger position undefined"
        where = "above the upper band" if p > 1 else "below the lower band" if p < -1 else "inside the bands"
        return f"Bollinger position {p:+.2f}: {where}"

    reasons = [why(b, p, ok) for b, p, ok in zip(bars.tolist(), position.tolist(), defined.tolist())]
    return _build("bollinger", -position, _history_confidence(bars, n), defined, reasons)


def momentum_signal(closes: Any, n: int = 20) -> Signal:
    """Trend: ``tanh(K_MOM * momentum)`` with ``momentum = close / close[-n-1] - 1``.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :raises InvalidInputError: when ``n < 1`` or ``closes`` is not 2-D.
    """
    n = _check_n(n)
    x = _panel(closes)
    value = momentum(x, n)
    bars = _bars(x)
    defined = np.isfinite(value)
    reasons = [
        _short(b, n + 1) if b < n + 1 else f"{n}-bar momentum {100 * m:+.2f}%" if ok else "momentum undefined"
        for b, m, ok in zip(bars.tolist(), value.tolist(), defined.tolist())
    ]
    return _build("momentum", np.tanh(K_MOM * value), _history_confidence(bars, n + 1), defined, reasons)


def volatility_signal(high: Any, low: Any, close: Any, n: int = 14) -> Signal:
    """Risk dampener: score 0, confidence ``1 / (1 + (atr / close) / VOL_REF)`` (0.5 at a 2% ATR).

    :param high: (symbols, T) highs.
    :param low: (symbols, T) lows.
    :param close: (symbols, T) closes.
    :raises InvalidInputError: when ``n < 1``, the panels are not 2-D or differ in shape, or a high is
        below its low.
    """
    n = _check_n(n)
    h, lo, c, bars = _hlc(high, low, close)
    value = _atr(h, lo, c, n)
    last = c[:, -1] if c.shape[1] else np.full(c.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = value / last
    defined = np.isfinite(ratio) & (ratio >= 0) & (last > 0)
    confidence = 1.0 / (1.0 + np.where(defined, ratio, 0.0) / VOL_REF)
    reasons = [
        _short(b, n + 1) if b < n + 1 else f"ATR {100 * r:.2f}% of price" if ok else "ATR undefined"
        for b, r, ok in zip(bars.tolist(), ratio.tolist(), defined.tolist())
    ]
    return _build("volatility", np.zeros(c.shape[0]), confidence, defined, reasons)


def technical_signal(closes: Any, *, high: Any = None, low: Any = None,
                     weights: Mapping[str, float] | None = None) -> Signal:
    """Confidence-weighted mean of the five directional technical signals (default parameters).

    ``score = sum(w c s) / sum(w c)``; ``confidence = sum(w c) / sum(w) * agreement`` with
    ``agreement = |sum(w c s)| / sum(w c |s|)`` (1 when all are neutral), times the volatility
    confidence when ``high`` and ``low`` are given.

    :param closes: (symbols, T) panel, leading NaN padding allowed.
    :param high: (symbols, T) highs, optional (with ``low``): dampens the confidence by volatility.
    :param low: (symbols, T) lows, optional (with ``high``).
    :param weights: name (of :data:`TECHNICAL`) -> weight >= 0; missing names weigh 0; default all 1.
    :raises InvalidInputError: on an unknown name, a negative or non-finite weight, all weights 0, only
        one of ``high`` and ``low``, or a bad panel.
    """
    if weights is None:
        weights = {name: 1.0 for name in TECHNICAL}
    if not isinstance(weights, Mapping):
        raise InvalidInputError(f"weights must be a mapping of signal name to weight, got {weights!r}")
    unknown = sorted(set(weights) - set(TECHNICAL))
    if unknown:
        raise InvalidInputError(f"unknown technical signal(s) {unknown}; known: {list(TECHNICAL)}")
    w = {}
    for name in TECHNICAL:
        value = weights.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise InvalidInputError(f"weight of {name} must be a finite number >= 0, got {value!r}")
        w[name] = float(value)
    total = sum(w.values())
    if total <= 0:
        raise InvalidInputError("at least one weight must be positive")
    if (high is None) != (low is None):
        raise InvalidInputError("give both high and low, or neither")
    x = _panel(closes)
    builders: dict[str, Callable[[np.ndarray], Signal]] = {
        "ma_crossover": ma_crossover_signal,
        "rsi": rsi_signal,
        "macd": macd_signal,
        "bollinger": bollinger_signal,
        "momentum": momentum_signal,
    }
    parts: dict[str, Signal] = {name: builders[name](x) for name in TECHNICAL if w[name] > 0}
    rows = x.shape[0]
    wc = np.zeros(rows)
    wcs = np.zeros(rows)
    wcabs = np.zeros(rows)
    for name, sig in parts.items():
        wc += w[name] * sig.confidence
        wcs += w[name] * sig.confidence * sig.score
        wcabs += w[name] * sig.confidence * np.abs(sig.score)
    defined = wc > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(defined, wcs / wc, 0.0)
        agreement = np.where(wcabs > 0, np.abs(wcs) / wcabs, 1.0)
    confidence = wc / total * agreement
    damp = None
    if high is not None:
        damp = volatility_signal(high, low, x)
        if damp.score.shape != score.shape:
            raise InvalidInputError("high/low and closes differ in number of symbols")
        confidence = confidence * damp.confidence
    reasons = []
    for i in range(rows):
        used = [name for name, sig in parts.items() if sig.confidence[i] > 0]
        if not used:
            reasons.append("no technical signal defined: " + "; ".join(f"{n}: {s.reason[i]}" for n, s in parts.items()))
            continue
        text = f"{len(used)}/{len(parts)} signals, agreement {agreement[i]:.2f}"
        top = max(used, key=lambda name: w[name] * parts[name].confidence[i] * abs(parts[name].score[i]))
        text += f"; strongest {top}: {parts[top].reason[i]}"
        if damp is not None:
            text += f"; {damp.reason[i]}"
        reasons.append(text)
    return _build("technical", score, confidence, defined, reasons)


def forecast_signal(expected_return: Any, lower: Any, upper: Any, healthy: Any) -> Signal:
    """``tanh(C_FORECAST * expected_return / half_band)`` with ``half_band = (upper - lower) / 2``.

    :param expected_return: expected log-return over the horizon per symbol (ensemble point minus the
        log of the last close), shape (symbols,).
    :param lower: lower bound of the forecast log-return interval, shape (symbols,).
    :param upper: upper bound, shape (symbols,).
    :param healthy: whether each symbol's model passed its health checks, shape (symbols,), bool.
    :raises InvalidInputError: when the inputs are not 1-D of one length.
    """
    er = _vector(expected_return, "expected_return")
    lo = _vector(lower, "lower")
    hi = _vector(upper, "upper")
    ok_model = _vector(healthy, "healthy", dtype=bool)
    _same_shape(expected_return=er, lower=lo, upper=hi, healthy=ok_model)
    half = (hi - lo) / 2.0
    finite = np.isfinite(er) & np.isfinite(lo) & np.isfinite(hi)
    band_ok = finite & (half > 0)
    defined = ok_model & band_ok
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(defined, er / half, 0.0)

    def why(i: int) -> str:
        if not ok_model[i]:
            return "model not healthy: ignored"
        if not finite[i]:
            return "model not healthy: ignored (NaN forecast)"
        if not band_ok[i]:
            return f"empty or inverted band [{lo[i]:.4g}, {hi[i]:.4g}]: ignored"
        return f"expected log-return {100 * er[i]:+.2f}% (band +/- {100 * half[i]:.2f}%)"

    return _build("forecast", np.tanh(C_FORECAST * ratio), np.ones(er.shape[0]), defined,
                  [why(i) for i in range(er.shape[0])])


def sentiment_signal(symbols: Sequence[str], news: Sequence[Any], now: datetime,
                     half_life_hours: float = 24.0) -> Signal:
    """Age-decayed mean news sentiment per symbol.

    Each item about a symbol weighs ``exp(-ln 2 * age_hours / half_life_hours)``;
    ``score = sum(w * s) / sum(w)``, ``confidence = 1 - exp(-sum(w))``. ``s`` is the item's ``score``,
    or :func:`score_text` of its headline (and summary, if it carries one) when the score is missing.
    Items published after ``now`` or malformed (no symbol, no tz-aware ``published``, a score outside
    [-1, 1]) are ignored and counted in the reason; items about other symbols are skipped silently.

    :param symbols: the symbols, in the order of the output arrays (matched case-insensitively).
    :param news: :class:`~airflow_provider_portfolio.market.news.NewsItem` records.
    :param now: tz-aware time the ages are measured from.
    :param half_life_hours: age at which an item weighs half a fresh one.
    :raises InvalidInputError: on duplicate or non-string symbols, a naive ``now``, a non-positive half
        life, or ``news`` that is not a list.
    """
    if isinstance(symbols, str) or not isinstance(symbols, Sequence):
        raise InvalidInputError(f"symbols must be a list of strings, got {symbols!r}")
    keys = []
    for s in symbols:
        if not isinstance(s, str) or not s.strip():
            raise InvalidInputError(f"symbols must be non-empty strings, got {s!r}")
        keys.append(s.strip().upper())
    if len(set(keys)) != len(keys):
        raise InvalidInputError(f"duplicate symbols in {list(symbols)}")
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInputError(f"now must be a tz-aware datetime, got {now!r}")
    half_life = _check_positive(half_life_hours, "half_life_hours")
    if isinstance(news, str) or not isinstance(news, Sequence):
        raise InvalidInputError(f"news must be a list of NewsItem, got {type(news).__name__}")
    index = {key: i for i, key in enumerate(keys)}
    rows = len(keys)
    weight = np.zeros(rows)
    weighted = np.zeros(rows)
    count = [0] * rows
    future = [0] * rows
    malformed = [0] * rows
    orphans = 0
    for item in news:
        symbol = getattr(item, "symbol", None)
        i = index.get(symbol.strip().upper()) if isinstance(symbol, str) else None
        if not isinstance(symbol, str):
            orphans += 1
            continue
        if i is None:
            continue
        published = getattr(item, "published", None)
        if not isinstance(published, datetime) or published.tzinfo is None:
            malformed[i] += 1
            continue
        value = getattr(item, "score", None)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            texts = [getattr(item, "headline", None), getattr(item, "summary", None)]
            if not all(t is None or isinstance(t, str) for t in texts) or not any(texts):
                malformed[i] += 1
                continue
            value = score_text(*texts)
        if not -1.0 <= value <= 1.0:
            malformed[i] += 1
            continue
        age_hours = (now - published).total_seconds() / 3600.0
        if age_hours < 0:
            future[i] += 1
            continue
        w = math.exp(-math.log(2.0) * age_hours / half_life)
        weight[i] += w
        weighted[i] += w * float(value)
        count[i] += 1
    defined = weight > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(defined, weighted / weight, 0.0)
    confidence = 1.0 - np.exp(-weight)
    reasons = []
    for i in range(rows):
        text = (f"{count[i]} item(s), weight {weight[i]:.2f}: mean sentiment {score[i]:+.2f}" if defined[i]
                else "no news")
        ignored = []
        if future[i]:
            ignored.append(f"{future[i]} in the future")
        if malformed[i]:
            ignored.append(f"{malformed[i]} malformed")
        if orphans:
            ignored.append(f"{orphans} malformed without a symbol")
        if ignored:
            text += " (ignored: " + ", ".join(ignored) + ")"
        reasons.append(text)
    return _build("sentiment", score, confidence, defined, reasons)
