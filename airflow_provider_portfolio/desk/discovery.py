"""Discovery: scan a universe of stored bars, score every symbol, and store a ranked table of opportunities.

:func:`discover` is the job (``DiscoveryOperator`` calls it; so can a notebook, the CLI or a container). It reads
the universe's closed bars from the store, measures every symbol at once as arrays, ranks the universe and writes
the ranking with its reasons to the store's ``opportunities`` in one transaction
(:meth:`~airflow_provider_portfolio.store.PortfolioStore.save_opportunities`; a re-run of a run id replaces its
rows). :func:`score_universe` is the same without the store: a bar frame in, a :class:`DiscoveryResult` out.

The universe on one calendar
----------------------------
Bars closed by ``now`` (:func:`~airflow_provider_portfolio.market.timing.closed_bars`) are laid on the union of
their timestamps. The common calendar is the set of timestamps at which most of the symbols trading at the time
(between their first and last bar) have a bar: equity sessions for a universe of equities with a few crypto pairs
(a pair's weekend bars are folded into Monday's return), every day for a crypto universe, and it follows a universe
whose members start at different dates. Each symbol's close at a calendar point is its last close at or before it
(its own bar, or the last one before a gap); before its first bar it has none (NaN, leading). The window is the
last ``lookback`` calendar points, a (symbols x bars) close matrix with its highs and lows. A symbol is left out,
with the reason in :attr:`DiscoveryResult.skipped`, never a crash, when it has no closed bars (or corrupt ones) in
the store, fewer than ``min_bars`` bars of its own in the window, a last bar more than ``max_stale_bars`` calendar
points behind the calendar's end, a close that is not a positive number, or a constant price. Periods per year
(for annualising) are measured on the calendar itself: its bars over the years it spans (about 252 for sessions,
365 for a 24/7 universe).

Components (all symbols at once; ``x`` the log closes, ``r`` the log returns of the window)
-------------------------------------------------------------------------------------------
``technical``
    :func:`~airflow_provider_portfolio.trading.signals.technical_signal` on the closes, highs and lows (the
    trader's own signal: MA crossover, RSI, MACD, Bollinger, momentum, damped by ATR): ``score * confidence``.
``trend``
    The t-statistic of the OLS slope of ``x`` on time (slope over its standard error; the residuals' autocorrelation
    is ignored, so it is a measure of how straight the path is, comparable across symbols, not a test). The slope
    (annualised log return) and R^2 are reported too.
``momentum_12_1``
    ``x[t - skip_bars] - x[t0]`` with ``t0`` the later of the window's first bar the symbol has and
    ``t - long_bars``: the 12-1 month momentum at the defaults (252 and 21 bars of daily bars); undefined when fewer
    than ``short_bars`` bars lie between.
``momentum_3m``
    ``x[t] - x[t - short_bars]``: the 3-month momentum at the default 63 daily bars.
``volatility``
    Annualised realised volatility, ``std(r) * sqrt(periods per year)``. Its default weight is negative: calmer is
    better.
``diversification``
    ``1 - sum_k L_ik^2``: the share of the symbol's return variance the top ``n_factors`` common factors leave
    unexplained (PCA below); a diversifier scores high.
``regime``
    The annualised Sharpe ratio of the next bar under the fitted regime model: the latest state probabilities moved
    one step by the transition matrix, mixing the states' means and variances.

Factor exposures (PCA)
    Returns are centred per symbol, missing returns (before a symbol's first bar) set to 0, and each row scaled to
    unit norm, so ``C = Z Z^T`` is the correlation matrix (pairwise over the window; PSD). Its top ``n_factors``
    eigenpairs come from ``scipy.linalg.eigh`` of ``C`` (symbols x symbols) or, when there are more symbols than
    returns, of the smaller ``Z^T Z`` with the same non-zero eigenvalues (``v = Z u / sqrt(lambda)``): thousands of
    symbols cost a (bars x bars) eigenproblem. Loadings ``L = v sqrt(lambda)`` are the symbols' correlations with the
    factors (each factor's sign makes its loadings sum >= 0: the market factor is long); the explained variance is
    ``lambda / trace(C)``. The loadings are reported as ``factor_1``... in each symbol's features.

Market state (regime model)
    A Gaussian hidden Markov model with ``n_states`` (2 or 3) states on each symbol's log returns, fitted by
    Baum-Welch (scaled forward-backward, EM) vectorised over symbols: one set of array operations per bar and EM
    iteration for the whole universe. An HMM rather than a Gaussian mixture on (return, rolling volatility): a
    mixture ignores the order of the bars, so one wild day in a calm month is "volatile" and a regime's persistence
    never enters, while the HMM's transition matrix learns that regimes last and labels a day by its neighbours too
    (no rolling window to choose, no lag). Returns are standardized per symbol; the fit starts deterministically
    (equal means, variances 0.5x and 2x the symbol's for 2 states, 0.3x, 1x, 3x for 3; 0.95 on the transition
    matrix's diagonal); a variance floor of 1e-3 (standardized) stops a state collapsing on one bar; missing bars
    carry no evidence (emission 1). States are then ordered by volatility. A state is ``volatile`` when its
    volatility is at least ``vol_ratio`` (1.5) times the symbol's calmest state's and the data shows regimes at all
    (the HMM beats a single Gaussian by BIC; else a 2-state fit of plain noise would split it into a "calm" and a
    "volatile" half about one time in twelve), else ``calm``; its direction is
    ``up`` / ``down`` when its annualised Sharpe ratio (mean / volatility) is above ``+0.5`` / below ``-0.5``, else
    flat. Labels: ``calm_up``, ``calm_flat``, ``calm_down``, ``volatile_up``, ``volatile``, ``volatile_down``. The
    symbol's label is its latest state's (the most probable given all bars), with that probability.

Score and reasons
    Each component is standardized across the symbols ranked (z-score, clipped to +-3; undefined values and a
    component without spread score 0). ``score = sum_c w_c z_c`` with the weights scaled so that ``sum |w_c| = 1``;
    rank 1 is the highest score (ties by symbol). ``components`` holds each ``w_c z_c`` (they sum to the score);
    ``reasons`` names the (up to) three biggest contributors with their measurements and parts of the score, e.g.
    ``"trend t-stat +21.4 (log slope +48.2%/yr, R^2 0.93): +0.41"``. ``weights`` name -> finite number (negative
    allowed; missing names weigh 0); not all zero.

Deterministic: no randomness anywhere (the fits start from fixed values). Plain Python on NumPy and SciPy; never
imports Airflow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.params import validate_symbols
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, ensure_utc
from airflow_provider_portfolio.market.timing import closed_bars, history_days
from airflow_provider_portfolio.trading.signals import technical_signal

if TYPE_CHECKING:
    from airflow_provider_portfolio.store import PortfolioStore

log = logging.getLogger(__name__)

__all__ = ["COMPONENTS", "DEFAULT_WEIGHTS", "DiscoveryResult", "RegimeFit", "check_weights", "discover",
           "factor_exposures", "fit_regimes", "score_universe", "trend_statistics"]

#: The score's components and their default weights (see the module docstring).
DEFAULT_WEIGHTS: dict[str, float] = {"technical": 1.0, "trend": 1.0, "momentum_12_1": 1.0, "momentum_3m": 0.5,
                                     "volatility": -0.5, "diversification": 0.25, "regime": 0.5}
COMPONENTS: tuple[str, ...] = tuple(DEFAULT_WEIGHTS)
#: Calendar bars in the window, and the fewest a symbol must have of its own.
DEFAULT_LOOKBACK = 252
DEFAULT_MIN_BARS = 63
#: z-scores are clipped to this many standard deviations.
Z_CLIP = 3.0
#: Annualised Sharpe ratio beyond which a regime state is ``up`` / ``down``.
SHARPE_FLAT = 0.5
#: Variance floor of a regime state, in units of the symbol's return variance.
VAR_FLOOR = 1e-3
#: Reasons per symbol: the biggest contributors.
MAX_REASONS = 3
#: Rows of the ranking :meth:`DiscoveryResult.to_dict` shows at most.
MAX_SHOWN = 25
_INIT_VARS = {2: (0.5, 2.0), 3: (0.3, 1.0, 3.0)}
_STAY = 0.95
_YEAR_NS = 365.25 * 86_400e9


# ---------------------------------------------------------------------------------------------- pieces
def trend_statistics(log_closes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS of each row's log closes on the bar number, over its finite values: (slope per bar, t-statistic of the
    slope, R^2), each shape (symbols,), NaN where fewer than 3 values or no variation.

    :param log_closes: (symbols, bars) log closes, NaN where missing.
    """
    y = np.asarray(log_closes, dtype=np.float64)
    m = np.isfinite(y)
    n = m.sum(axis=1).astype(np.float64)
    t = np.broadcast_to(np.arange(y.shape[1], dtype=np.float64), y.shape)
    yz = np.where(m, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_mean = np.where(m, t, 0.0).sum(axis=1) / n
        y_mean = yz.sum(axis=1) / n
        dt = np.where(m, t - t_mean[:, None], 0.0)
        dy = np.where(m, yz - y_mean[:, None], 0.0)
        sxx = (dt * dt).sum(axis=1)
        syy = (dy * dy).sum(axis=1)
        slope = (dt * dy).sum(axis=1) / sxx
        ssr = np.maximum(((dy - slope[:, None] * dt) ** 2).sum(axis=1), 0.0)
        se = np.sqrt(ssr / (n - 2) / sxx)
        tstat = np.where(se > 0, slope / se, np.sign(slope) * np.inf)
        r2 = np.where(syy > 0, 1.0 - ssr / syy, np.nan)
    bad = (n < 3) | ~(sxx > 0) | ~(syy > 0)
    return (np.where(bad, np.nan, slope), np.where(bad, np.nan, tstat), np.where(bad, np.nan, r2))


def factor_exposures(returns: Any, n_factors: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the symbols' returns: loadings on the top factors and each factor's share of the variance.

    :param returns: (symbols, bars) returns, NaN where missing.
    :param n_factors: factors kept (at most the symbols and the bars).
    :return: (loadings (symbols, k): correlations with the factors, each factor signed so its loadings sum >= 0;
        explained variance (k,): each factor's eigenvalue over the trace of the correlation matrix), largest first.
    :raises InvalidInputError: for ``n_factors`` < 1 or returns that are not a 2-D array.
    """
    from scipy.linalg import eigh

    if isinstance(n_factors, bool) or not isinstance(n_factors, int | np.integer) or n_factors < 1:
        raise InvalidInputError(f"n_factors must be a whole number >= 1, got {n_factors!r}")
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or not r.size:
        raise InvalidInputError(f"returns must be a non-empty (symbols, bars) array, got shape {r.shape}")
    m = np.isfinite(r)
    count = np.maximum(m.sum(axis=1), 1)
    centred = np.where(m, r - (np.where(m, r, 0.0).sum(axis=1) / count)[:, None], 0.0)
    norm = np.sqrt((centred * centred).sum(axis=1))
    z = np.divide(centred, norm[:, None], out=np.zeros_like(centred), where=norm[:, None] > 0)
    symbols, bars = z.shape
    k = int(min(n_factors, symbols, bars))
    if symbols <= bars:
        values, vectors = eigh(z @ z.T, subset_by_index=[symbols - k, symbols - 1])
        loadings = vectors * np.sqrt(np.maximum(values, 0.0))
    else:  # the dual: same non-zero eigenvalues, v = Z u / sqrt(lambda), so the loading v sqrt(lambda) = Z u
        values, vectors = eigh(z.T @ z, subset_by_index=[bars - k, bars - 1])
        loadings = z @ vectors
    values, loadings = values[::-1], loadings[:, ::-1]
    signs = np.where(loadings.sum(axis=0) < 0, -1.0, 1.0)
    trace = float((norm > 0).sum())
    explained = np.maximum(values, 0.0) / trace if trace > 0 else np.zeros(k)
    return loadings * signs, explained


@dataclass(frozen=True, eq=False)
class RegimeFit:
    """A Gaussian HMM fitted to each symbol's returns (see the module docstring), states ordered calmest first.

    :param means: (symbols, states) mean return per bar of each state.
    :param vols: (symbols, states) volatility per bar of each state.
    :param transition: (symbols, states, states) transition matrices (rows: from).
    :param probabilities: (symbols, bars, states) each bar's state probabilities given all bars.
    :param path: (symbols, bars) the most probable state of each bar (-1 before a symbol's first return).
    :param labels: (symbols, states) each state's label (``calm_up``, ``volatile``...).
    :param latest: (symbols,) the latest bar's most probable state.
    :param latest_probability: (symbols,) its probability.
    :param next_sharpe: (symbols,) annualised Sharpe ratio of the next bar's return under the model.
    :param loglik: (symbols,) log-likelihood of the standardized returns.
    :param evident: (symbols,) whether the model beats a single Gaussian by BIC (else no state is volatile).
    :param iterations: EM iterations run.
    :param converged: whether every symbol's log-likelihood settled within ``tol`` per bar.
    """

    means: np.ndarray
    vols: np.ndarray
    transition: np.ndarray
    probabilities: np.ndarray
    path: np.ndarray
    labels: np.ndarray
    latest: np.ndarray
    latest_probability: np.ndarray
    next_sharpe: np.ndarray
    loglik: np.ndarray
    evident: np.ndarray
    iterations: int
    converged: bool

    @property
    def latest_label(self) -> list[str]:
        """The label of each symbol's latest state."""
        return [str(x) for x in self.labels[np.arange(len(self.latest)), self.latest]]


def _e_step(x: np.ndarray, observed: np.ndarray, mu: np.ndarray, var: np.ndarray, pi: np.ndarray,
            a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaled forward-backward for every symbol at once.

    Arrays put the symbols last, so each bar's step is a few operations on contiguous (states, symbols) rows:
    ``x``/``observed`` (T, S); ``mu``/``var``/``pi`` (K, S); ``a`` (K, K, S), rows "from". A missing bar's emission
    is 1. Returns (gamma (T, K, S), expected transitions (K, K, S), log-likelihood (S,)).
    """
    steps, symbols = x.shape
    states = range(1, mu.shape[0])
    log_b = -0.5 * (np.log(2.0 * np.pi * var)[None] + (x[:, None, :] - mu[None]) ** 2 / var[None])
    log_b = np.where(observed[:, None, :], log_b, 0.0)
    top = log_b.max(axis=1)
    b = np.exp(log_b - top[:, None, :])
    alpha = np.empty_like(b)
    scale = np.empty((steps, symbols))
    # Sums over the few states are written as adds of rows: numpy's reductions over a short axis cost far more
    # per call, and this loop makes a call per bar.
    step = pi * b[0]
    scale[0] = sum((step[i] for i in states), step[0])
    alpha[0] = step / scale[0]
    for t in range(1, steps):
        prior = alpha[t - 1]
        step = prior[0] * a[0]
        for i in states:
            step += prior[i] * a[i]
        step *= b[t]
        total = sum((step[i] for i in states), step[0])
        scale[t] = total
        alpha[t] = step / total
    beta = np.empty_like(b)
    beta[-1] = 1.0
    xi = np.zeros_like(a)
    for t in range(steps - 1, 0, -1):
        ahead = b[t] * beta[t] / scale[t]
        term = a * ahead
        xi += alpha[t - 1][:, None, :] * term
        beta[t - 1] = sum((term[:, j] for j in states), term[:, 0])
    gamma = alpha * beta
    gamma /= gamma.sum(axis=1, keepdims=True)
    return gamma, xi, np.log(scale).sum(axis=0) + top.sum(axis=0)


def fit_regimes(returns: Any, n_states: int = 2, *, periods_per_year: float = 252.0, vol_ratio: float = 1.5,
                max_iter: int = 100, tol: float = 1e-4) -> RegimeFit:
    """Fit a ``n_states`` Gaussian hidden Markov model to each row of ``returns`` by Baum-Welch, all rows at once.

    Each EM iteration runs on the symbols whose fit has not settled yet (a symbol stops when its log-likelihood per
    bar rose less than ``tol``), so a universe costs about its slowest symbols' iterations on a shrinking set.

    :param returns: (symbols, bars) returns, NaN where missing (leading padding); each row needs at least
        ``4 * n_states`` returns and some variation.
    :param n_states: 2 or 3.
    :param periods_per_year: bars per year, for the labels' and the next bar's annualised Sharpe ratios.
    :param vol_ratio: a state at least this many times as volatile as the symbol's calmest is ``volatile``.
    :param max_iter: the most EM iterations.
    :param tol: a symbol's fit has settled when its log-likelihood per bar rose less than this in an iteration.
    :raises InvalidInputError: for a bad argument, a row with too few returns or no variation.
    """
    if n_states not in _INIT_VARS:
        raise InvalidInputError(f"n_states must be 2 or 3, got {n_states!r}")
    for name, value in (("periods_per_year", periods_per_year), ("vol_ratio", vol_ratio), ("tol", tol)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise InvalidInputError(f"max_iter must be a whole number >= 1, got {max_iter!r}")
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or not r.size:
        raise InvalidInputError(f"returns must be a non-empty (symbols, bars) array, got shape {r.shape}")
    observed = np.isfinite(r)
    n = observed.sum(axis=1)
    short = np.flatnonzero(n < 4 * n_states)
    if short.size:
        raise InvalidInputError(f"a regime fit needs at least {4 * n_states} returns per row; row {int(short[0])} "
                                f"has {int(n[short[0]])}")
    mean0 = np.where(observed, r, 0.0).sum(axis=1) / n
    sd0 = np.sqrt(np.where(observed, (r - mean0[:, None]) ** 2, 0.0).sum(axis=1) / n)
    flat = np.flatnonzero(~(sd0 > 0))
    if flat.size:
        raise InvalidInputError(f"a regime fit needs returns that vary; row {int(flat[0])} is constant")
    x = np.where(observed, (r - mean0[:, None]) / sd0[:, None], 0.0).T.copy()  # (T, S), standardized
    obs = observed.T.copy()
    symbols, k = r.shape[0], n_states
    mu = np.zeros((k, symbols))
    var = np.repeat(np.asarray(_INIT_VARS[k], dtype=np.float64)[:, None], symbols, axis=1)
    pi = np.full((k, symbols), 1.0 / k)
    a = np.repeat(np.where(np.eye(k, dtype=bool), _STAY, (1.0 - _STAY) / (k - 1))[:, :, None], symbols, axis=2)
    previous = np.full(symbols, -np.inf)
    active = np.arange(symbols)
    iterations = 0
    while active.size and iterations < max_iter:
        iterations += 1
        xa, oa = x[:, active], obs[:, active]
        gamma, xi, loglik = _e_step(xa, oa, mu[:, active], var[:, active], pi[:, active], a[:, :, active])
        w = gamma * oa[:, None, :]
        nk = w.sum(axis=0)
        enough = nk > 1e-6
        safe = np.where(enough, nk, 1.0)
        new_mu = (w * xa[:, None, :]).sum(axis=0) / safe
        new_var = (w * (xa[:, None, :] - new_mu[None]) ** 2).sum(axis=0) / safe
        mu[:, active] = np.where(enough, new_mu, mu[:, active])
        var[:, active] = np.where(enough, np.maximum(new_var, VAR_FLOOR), var[:, active])
        start = gamma[0] + 1e-9
        pi[:, active] = start / start.sum(axis=0)
        moves = xi + 1e-9
        a[:, :, active] = moves / moves.sum(axis=1, keepdims=True)
        gain = (loglik - previous[active]) / n[active]
        previous[active] = loglik
        active = active[~(gain < tol)]
    gamma, _, loglik = _e_step(x, obs, mu, var, pi, a)
    order = np.argsort(var, axis=0, kind="stable")  # (K, S): calmest first
    cols = np.arange(symbols)
    mu, var = mu[order, cols].T, var[order, cols].T  # (S, K)
    a = a[order[:, None, :], order[None, :, :], cols].transpose(2, 0, 1)  # (S, K, K)
    gamma = gamma[:, order, cols].transpose(2, 0, 1)  # (S, T, K)
    means = mean0[:, None] + sd0[:, None] * mu
    vols = sd0[:, None] * np.sqrt(var)
    sharpe = means / vols * math.sqrt(periods_per_year)
    # Regimes only where the data shows them: the HMM must beat one Gaussian (log-likelihood -n/2 (log 2 pi + 1) on
    # the standardized returns) by BIC, else every state is calm.
    extra = 2 * k + k * (k - 1) + (k - 1) - 2
    evidence = 2.0 * (loglik + 0.5 * n * (math.log(2.0 * math.pi) + 1.0)) > extra * np.log(n)
    volatile = (vols >= vol_ratio * vols[:, :1]) & evidence[:, None]
    direction = np.where(sharpe > SHARPE_FLAT, "up", np.where(sharpe < -SHARPE_FLAT, "down", "flat"))
    labels = np.where(volatile, np.where(direction == "flat", "volatile", np.char.add("volatile_", direction)),
                      np.char.add("calm_", direction)).astype(object)
    path = gamma.argmax(axis=2)
    started = np.maximum.accumulate(observed, axis=1)
    path = np.where(started, path, -1)
    last = gamma[:, -1]
    latest = last.argmax(axis=1)
    ahead = np.einsum("sk,skj->sj", last, a)
    expected = (ahead * means).sum(axis=1)
    variance = np.maximum((ahead * (vols ** 2 + means ** 2)).sum(axis=1) - expected ** 2, 1e-300)
    return RegimeFit(means=means, vols=vols, transition=a, probabilities=gamma, path=path, labels=labels,
                     latest=latest, latest_probability=last[cols, latest],
                     next_sharpe=expected / np.sqrt(variance) * math.sqrt(periods_per_year), loglik=loglik,
                     evident=evidence, iterations=iterations, converged=not active.size)


def check_weights(weights: Mapping[str, Any] | None) -> dict[str, float]:
    """The component weights: ``weights`` checked (names of :data:`COMPONENTS`, finite numbers, negative allowed,
    missing names 0, not all zero), or :data:`DEFAULT_WEIGHTS`.

    :raises InvalidInputError: naming the offending name or value.
    """
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    if not isinstance(weights, Mapping):
        raise InvalidInputError(f"weights must be a mapping of component name to weight, got {weights!r}")
    unknown = sorted(str(k) for k in weights if k not in DEFAULT_WEIGHTS)
    if unknown:
        raise InvalidInputError(f"weights: unknown component(s) {unknown}; known: {list(COMPONENTS)}")
    out = {}
    for name in COMPONENTS:
        value = weights.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
                or not math.isfinite(value):
            raise InvalidInputError(f"weights: {name} must be a finite number, got {value!r}")
        out[name] = float(value)
    if not any(out.values()):
        raise InvalidInputError(f"weights must not all be zero, got {dict(weights)!r}: give at least one component "
                                f"a weight (known: {list(COMPONENTS)})")
    return out


def _whole(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InvalidInputError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class DiscoveryResult:
    """A discovery run: the ranking, what was left out and why, and how it was made.

    :param ranking: one row per ranked symbol, best first: ``rank`` (1 = best), ``symbol``, ``score``, ``regime``,
        ``regime_probability``, ``components`` (dict: each component's part of the score), ``reasons`` (list of
        short strings), ``features`` (dict: the measurements, NaN where undefined).
    :param skipped: symbol -> why it was left out.
    :param explained_variance: each factor's share of the universe's return variance, largest first.
    :param params: what it ran with (timeframe, window, weights...) and the calendar it used.
    :param ts: the instant it ranked at.
    :param scored: symbols scored (the ranking holds the best ``top_n`` of them).
    :param run_id: the run id it was stored under (``None``: not stored).
    :param stored: rows written to the store.
    :param regimes: the regime fit of the scored symbols (in the order of :attr:`symbols`), ``None`` when none.
    :param symbols: the scored symbols, in the order of the arrays of :attr:`regimes` and :attr:`calendar`'s columns.
    :param calendar: the window's calendar (bar timestamps).
    """

    ranking: pd.DataFrame
    skipped: dict[str, str]
    explained_variance: tuple[float, ...]
    params: dict[str, Any]
    ts: datetime
    scored: int
    run_id: str | None = None
    stored: int = 0
    regimes: RegimeFit | None = None
    symbols: tuple[str, ...] = ()
    calendar: pd.DatetimeIndex = field(default_factory=lambda: pd.DatetimeIndex([], tz="UTC"))

    def top(self, n: int) -> list[str]:
        """The ``n`` best symbols, best first."""
        return [str(s) for s in self.ranking["symbol"].head(n)]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """A small JSON summary for XCom: counts, the calendar, the factors' explained variance, the first ``top``
        rows of the ranking (default ``params["top_n"]`` or 10, at most :data:`MAX_SHOWN`) with their reasons, and
        the first 20 symbols left out with why."""
        shown = top if top is not None else (self.params.get("top_n") or 10)
        head = self.ranking.head(max(0, min(int(shown), MAX_SHOWN)))
        rows = [{"rank": int(r["rank"]), "symbol": str(r["symbol"]), "score": round(float(r["score"]), 4),
                 "regime": str(r["regime"]),
                 "regime_probability": (None if not math.isfinite(r["regime_probability"])
                                        else round(float(r["regime_probability"]), 4)),
                 "reasons": list(r["reasons"])} for r in head.to_dict("records")]
        return {"run_id": self.run_id, "ts": self.ts.isoformat(), "timeframe": self.params.get("timeframe"),
                "scored": self.scored, "ranked": len(self.ranking), "stored": self.stored,
                "skipped": len(self.skipped), "skipped_symbols": dict(list(self.skipped.items())[:20]),
                "calendar": {"start": self.params.get("calendar_start"), "end": self.params.get("calendar_end"),
                             "bars": self.params.get("calendar_bars")},
                "explained_variance": [round(float(v), 4) for v in self.explained_variance], "top": rows}


# ---------------------------------------------------------------------------------------------- the universe
@dataclass(frozen=True, eq=False)
class _Panel:
    symbols: list[str]
    calendar: pd.DatetimeIndex
    close: np.ndarray
    high: np.ndarray
    low: np.ndarray
    own_bars: np.ndarray


def _align(bars: pd.DataFrame, lookback: int, min_bars: int, max_stale_bars: int,
           skipped: dict[str, str]) -> _Panel:
    """The universe's bars on its common calendar (see the module docstring); symbols left out go to ``skipped``."""
    symbol_codes, names = pd.factorize(bars["symbol"], sort=True)
    ts_ns = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8
    times, time_codes = np.unique(ts_ns, return_inverse=True)
    n_times, n_symbols = len(times), len(names)
    have = np.zeros((n_times, n_symbols), dtype=bool)
    have[time_codes, symbol_codes] = True
    first = have.argmax(axis=0)
    last = n_times - 1 - have[::-1].argmax(axis=0)
    delta = np.zeros(n_times + 1, dtype=np.int64)
    np.add.at(delta, first, 1)
    np.add.at(delta, last + 1, -1)
    active = np.cumsum(delta)[:n_times]
    on_calendar = np.flatnonzero(have.sum(axis=1) * 2 > active)[-lookback:]
    calendar = pd.DatetimeIndex(times[on_calendar]).tz_localize("UTC")
    latest = np.where(have, np.arange(n_times)[:, None], -1)
    np.maximum.accumulate(latest, axis=0, out=latest)
    idx = latest[on_calendar]  # (W, S): the row of each symbol's last bar at or before each calendar point
    cols = np.broadcast_to(np.arange(n_symbols), idx.shape)
    panels = {}
    for name in ("close", "high", "low"):
        values = np.full((n_times, n_symbols), np.nan)
        values[time_codes, symbol_codes] = bars[name].to_numpy(dtype=np.float64)
        panels[name] = np.where(idx >= 0, values[np.maximum(idx, 0), cols], np.nan).T
    own = have[on_calendar].sum(axis=0)
    behind = len(on_calendar) - np.searchsorted(times[on_calendar], times[last], side="right")
    end = calendar[-1].date().isoformat() if len(calendar) else "?"
    close = panels["close"]
    with np.errstate(invalid="ignore"):
        bad_price: np.ndarray = np.asarray((np.isfinite(close) & ~(close > 0)).any(axis=1))
        returns = np.diff(np.log(np.where(close > 0, close, np.nan)), axis=1)
    moves: np.ndarray = np.asarray((np.nan_to_num(np.abs(returns)) > 0).any(axis=1))
    keep = np.ones(n_symbols, dtype=bool)
    for i, symbol in enumerate(names):
        why = None
        if own[i] < min_bars:
            why = f"only {int(own[i])} bar(s) of its own in the {len(on_calendar)}-bar window; needs {min_bars}"
        elif behind[i] > max_stale_bars:
            why = (f"stale: its last bar {pd.Timestamp(times[last[i]], tz='UTC').date().isoformat()} is "
                   f"{int(behind[i])} calendar bars behind the universe's last ({end}); allowed {max_stale_bars}")
        elif bad_price[i]:
            why = "a close that is not a positive number in the window"
        elif not moves[i]:
            why = "a constant price in the window: nothing to measure"
        if why is not None:
            skipped[str(symbol)] = why
            keep[i] = False
    return _Panel([str(s) for s in names[keep]], calendar, close[keep], panels["high"][keep], panels["low"][keep],
                  own[keep])


def _zscore(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    if finite.sum() < 2:
        return np.zeros_like(values)
    centre = values[finite].mean()
    spread = values[finite].std()
    if not spread > 0:
        return np.zeros_like(values)
    return np.where(finite, np.clip((values - centre) / spread, -Z_CLIP, Z_CLIP), 0.0)


def _pct(log_return: float) -> str:
    return f"{100.0 * math.expm1(log_return):+.1f}%"


def _describe(name: str, f: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The measurement behind a component, in words and numbers."""
    def num(key: str) -> float:
        value = f.get(key)
        return float(value) if value is not None else float("nan")

    if name == "technical":
        return f"technical signal {num('technical_score'):+.2f} at confidence {num('technical_confidence'):.2f}"
    if name == "trend":
        return (f"trend t-stat {num('trend_tstat'):+.1f} (log slope {100 * num('trend_slope'):+.1f}%/yr, "
                f"R^2 {num('trend_r2'):.2f})")
    if name == "momentum_12_1":
        label = "12-1 momentum" if params["daily"] else f"{params['long_bars']}-{params['skip_bars']} bar momentum"
        return f"{label} {_pct(num('momentum_12_1'))}"
    if name == "momentum_3m":
        label = "3-month momentum" if params["daily"] else f"{params['short_bars']}-bar momentum"
        return f"{label} {_pct(num('momentum_3m'))}"
    if name == "volatility":
        return f"volatility {100 * num('volatility'):.1f}% annualised"
    if name == "diversification":
        return (f"diversification {num('diversification'):.2f} (top {params['n_factors_used']} factor(s) explain "
                f"{100 * (1 - num('diversification')):.0f}% of its variance)")
    return (f"regime {f.get('regime_label')} (p {num('regime_probability'):.2f}), next-bar Sharpe "
            f"{num('regime'):+.2f} annualised")


def _reasons(contributions: Mapping[str, float], features: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    ordered = sorted((item for item in contributions.items() if abs(item[1]) >= 0.005),
                     key=lambda item: (-abs(item[1]), item[0]))[:MAX_REASONS]
    if not ordered:
        return ["no component stands out: every part of the score within +-0.005"]
    return [f"{_describe(name, features, params)}: {value:+.2f}" for name, value in ordered]


def score_universe(bars: pd.DataFrame, *, timeframe: str = "1Day", ts: datetime | None = None,
                   lookback: int = DEFAULT_LOOKBACK, min_bars: int = DEFAULT_MIN_BARS, top_n: int | None = None,
                   weights: Mapping[str, float] | None = None, n_factors: int = 3, n_states: int = 2,
                   max_stale_bars: int = 5, long_bars: int = 252, skip_bars: int = 21, short_bars: int = 63,
                   vol_ratio: float = 1.5, skipped: Mapping[str, str] | None = None) -> DiscoveryResult:
    """Rank the symbols of a bar frame (one timeframe, closed bars only): :func:`discover` without the store.

    :param bars: canonical bars (``symbol``, ``ts``, ``high``, ``low``, ``close``...), any number of symbols.
    :param timeframe: their timeframe (labels the reasons: 12-1 momentum for daily bars).
    :param ts: the instant it ranks at (default the last bar's timestamp).
    :param skipped: symbols already left out (absent from the store...) with why, reported with the others.
    :raises InvalidInputError: for a bad argument, no bars, or no symbol left to rank (naming why each was left out).
    See :func:`discover` for the other parameters.
    """
    tf = parse_timeframe(timeframe)
    weights = check_weights(weights)
    if n_states not in _INIT_VARS:
        raise InvalidInputError(f"n_states must be 2 or 3, got {n_states!r}")
    lookback = _whole(lookback, "lookback", 3)
    min_bars = _whole(min_bars, "min_bars", 4 * n_states + 1)  # the regime fit needs 4 returns per state
    if min_bars > lookback:
        raise InvalidInputError(f"min_bars ({min_bars}) must not exceed lookback ({lookback})")
    top_n = None if top_n is None else _whole(top_n, "top_n", 1)
    n_factors = _whole(n_factors, "n_factors", 1)
    max_stale_bars = _whole(max_stale_bars, "max_stale_bars", 0)
    long_bars, skip_bars = _whole(long_bars, "long_bars", 2), _whole(skip_bars, "skip_bars", 0)
    short_bars = _whole(short_bars, "short_bars", 1)
    if skip_bars + short_bars > long_bars:
        raise InvalidInputError(f"long_bars ({long_bars}) must cover skip_bars + short_bars ({skip_bars + short_bars})")
    left_out: dict[str, str] = dict(skipped or {})
    if bars is None or bars.empty:
        raise InvalidInputError(f"no {tf.name} bars to rank" + (f"; {_skips(left_out)}" if left_out else ""))
    panel = _align(bars, lookback, min_bars, max_stale_bars, left_out)
    if not panel.symbols:
        raise InvalidInputError(f"no symbol left to rank: {_skips(left_out)}")
    calendar = panel.calendar
    span = (calendar[-1].value - calendar[0].value) / _YEAR_NS if len(calendar) > 1 else 0.0
    per_year = (len(calendar) - 1) / span if span > 0 else 252.0
    x = np.log(panel.close)
    r = np.diff(x, axis=1)
    count = panel.close.shape[0]
    features: dict[str, np.ndarray] = {}
    technical = technical_signal(panel.close, high=panel.high, low=panel.low)
    features["technical_score"], features["technical_confidence"] = technical.score, technical.confidence
    slope, tstat, r2 = trend_statistics(x)
    features["trend_tstat"], features["trend_slope"], features["trend_r2"] = tstat, slope * per_year, r2
    last = x[:, -1]
    width = x.shape[1]
    features["momentum_3m"] = last - x[:, -1 - short_bars] if width > short_bars else np.full(count, np.nan)
    first = np.isfinite(x).argmax(axis=1)
    start = np.maximum(first, width - 1 - long_bars)
    end = width - 1 - skip_bars
    long_ok = (end - start >= short_bars) & (end >= 0)
    features["momentum_12_1"] = np.where(long_ok, x[np.arange(count), np.clip(end, 0, None)] - x[np.arange(count),
                                                                                                 start], np.nan)
    with np.errstate(invalid="ignore"):
        features["volatility"] = np.nanstd(r, axis=1, ddof=1) * math.sqrt(per_year)
    loadings, explained = factor_exposures(r, n_factors)
    features["diversification"] = np.clip(1.0 - (loadings ** 2).sum(axis=1), 0.0, 1.0)
    regimes = fit_regimes(r, n_states, periods_per_year=per_year, vol_ratio=vol_ratio)
    features["regime"] = regimes.next_sharpe
    features["regime_probability"] = regimes.latest_probability
    labels = regimes.latest_label
    values = {"technical": technical.score * technical.confidence, "trend": tstat,
              "momentum_12_1": features["momentum_12_1"], "momentum_3m": features["momentum_3m"],
              "volatility": features["volatility"], "diversification": features["diversification"],
              "regime": regimes.next_sharpe}
    total = sum(abs(w) for w in weights.values())
    parts = {name: (weights[name] / total) * _zscore(np.asarray(values[name], dtype=np.float64)) + 0.0
             for name in COMPONENTS}
    score = np.sum([parts[name] for name in COMPONENTS], axis=0)
    order = sorted(range(count), key=lambda i: (-score[i], panel.symbols[i]))
    params = {"timeframe": tf.name, "daily": tf.is_daily, "lookback": lookback, "min_bars": min_bars, "top_n": top_n,
              "weights": weights, "n_factors": n_factors, "n_factors_used": int(loadings.shape[1]),
              "n_states": n_states, "max_stale_bars": max_stale_bars, "long_bars": long_bars, "skip_bars": skip_bars,
              "short_bars": short_bars, "vol_ratio": vol_ratio, "periods_per_year": round(per_year, 2),
              "calendar_start": calendar[0].isoformat(), "calendar_end": calendar[-1].isoformat(),
              "calendar_bars": len(calendar), "regime_iterations": regimes.iterations,
              "regime_converged": regimes.converged}
    records = []
    for rank, i in enumerate(order[: top_n or count], start=1):
        feats: dict[str, Any] = {name: float(values_[i]) for name, values_ in features.items()}
        feats.update({f"factor_{j + 1}": float(loadings[i, j]) for j in range(loadings.shape[1])})
        feats.update({"bars": int(panel.own_bars[i]), "regime_label": labels[i]})
        contributions = {name: round(float(parts[name][i]), 6) for name in COMPONENTS}
        records.append({"rank": rank, "symbol": panel.symbols[i], "score": round(float(score[i]), 6),
                        "regime": labels[i], "regime_probability": float(regimes.latest_probability[i]),
                        "components": contributions, "reasons": _reasons(contributions, feats, params),
                        "features": feats})
    ranking = pd.DataFrame(records, columns=["rank", "symbol", "score", "regime", "regime_probability", "components",
                                             "reasons", "features"])
    at = ensure_utc(ts, "ts") if ts is not None else calendar[-1].to_pydatetime()
    return DiscoveryResult(ranking=ranking, skipped=left_out, explained_variance=tuple(float(v) for v in explained),
                           params=params, ts=at, scored=count, regimes=regimes, symbols=tuple(panel.symbols),
                           calendar=calendar)


def _skips(skipped: Mapping[str, str], shown: int = 10) -> str:
    items = list(skipped.items())
    more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
    return "; ".join(f"{s}: {why}" for s, why in items[:shown]) + more


# ---------------------------------------------------------------------------------------------- the job
def discover(store: PortfolioStore, symbols: Sequence[str] | None = None, *, now: datetime, timeframe: str = "1Day",
             lookback: int = DEFAULT_LOOKBACK, min_bars: int = DEFAULT_MIN_BARS, top_n: int | None = None,
             weights: Mapping[str, float] | None = None, n_factors: int = 3, n_states: int = 2,
             exchange: str = DEFAULT_EXCHANGE, max_stale_bars: int = 5, run_id: str | None = None,
             dag_id: str | None = None, write: bool = True, **options: Any) -> DiscoveryResult:
    """Rank a universe from the store's closed bars and store the ranking (see the module docstring).

    :param store: the portfolio store (migrated).
    :param symbols: the universe; ``None``: every symbol with ``timeframe`` bars in the store.
    :param now: the instant it ranks at (aware): only bars closed by then are used.
    :param timeframe: the bars ranked on (``1Day``; an intraday one works alike, its windows counted in bars).
    :param lookback: calendar bars in the window (default 252: a year of sessions).
    :param min_bars: the fewest bars of its own a symbol needs in the window (default 63).
    :param top_n: store (and return) only the best ``top_n``; ``None``: the whole ranking.
    :param weights: component -> weight (see :func:`check_weights`); default :data:`DEFAULT_WEIGHTS`.
    :param n_factors: PCA factors (default 3).
    :param n_states: regime model states, 2 (calm / volatile) or 3.
    :param exchange: calendar of equities (when a bar has closed).
    :param max_stale_bars: how many calendar bars a symbol's last bar may lag the universe's last.
    :param run_id: the id the ranking is stored under (a re-run replaces it); default ``discovery__<now ISO>``.
    :param dag_id: the DAG of the run.
    :param write: store the ranking (``False``: a dry run).
    :param options: ``long_bars``, ``skip_bars``, ``short_bars`` (momentum windows, default 252, 21, 63) and
        ``vol_ratio`` (1.5), passed to :func:`score_universe`.
    :raises InvalidInputError: for a bad argument, an empty store or a universe with no closed bars, or no symbol
        left to rank (the message names each symbol and why); nothing is stored.
    :raises StoreError: when the store cannot be read or written (nothing stored).
    """
    now = ensure_utc(now, "now")
    tf = parse_timeframe(timeframe)
    check_weights(weights)  # before any read
    unknown = sorted(set(options) - {"long_bars", "skip_bars", "short_bars", "vol_ratio"})
    if unknown:
        raise InvalidInputError(f"unknown option(s) {unknown}; known: long_bars, skip_bars, short_bars, vol_ratio")
    wanted = None if symbols is None else validate_symbols(list(symbols))
    lookback = _whole(lookback, "lookback", 3)
    start = now - pd.Timedelta(days=history_days(tf.name, lookback))
    bars, corrupt = store.read_bars_checked(wanted, tf.name, start, now)
    bars = closed_bars(bars, now, tf.name, exchange)
    skipped = {s: f"unreadable bars: {why}" for s, why in corrupt.items()}
    present = set(bars["symbol"].unique()) if not bars.empty else set()
    for symbol in wanted or []:
        if symbol not in present and symbol not in skipped:
            skipped[symbol] = f"no {tf.name} bars closed by {now.isoformat()} in the store (since {start.date()})"
    if bars.empty:
        where = "the universe" if wanted is not None else "the store"
        raise InvalidInputError(f"{where} has no {tf.name} bars closed by {now.isoformat()} (looked back to "
                                f"{start.date()}): nothing to rank; load bars first (the daily ETL)"
                                + (f". {_skips(skipped)}" if skipped else ""))
    result = score_universe(bars, timeframe=tf.name, ts=now, lookback=lookback, min_bars=min_bars, top_n=top_n,
                            weights=weights, n_factors=n_factors, n_states=n_states, max_stale_bars=max_stale_bars,
                            skipped=skipped, **options)
    result.params["exchange"] = exchange
    result.params["universe"] = "store" if wanted is None else len(wanted)
    for symbol, why in result.skipped.items():
        log.info("discovery left out %s: %s", symbol, why)
    if not write:
        return result
    run = run_id if run_id is not None else f"discovery__{now.isoformat()}"
    stored = store.save_opportunities(result.ranking, run_id=run, ts=now, dag_id=dag_id)
    return replace(result, run_id=run, stored=stored)
