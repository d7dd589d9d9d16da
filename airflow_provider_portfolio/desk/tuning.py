"""Tuning the trader on recent history with the backtest: a threshold sweep and a walk-forward optimisation.

Two desk jobs share :func:`load_history` (the bars, the trader model's forecasts and evaluations and, when given, a
news source: what :func:`~airflow_provider_portfolio.trading.backtest.prepare_backtest` needs, read from the store
once) and store their results as studies (``threshold_sweep``, ``strategy_optimization``) under the run's id, so a
re-run replaces its study.

**Threshold sweep** (:func:`threshold_sweep`): every point of a :func:`threshold_grid` (``min_confidence`` x
``min_score``) is backtested on the same prepared inputs (:func:`sweep_points`) over the last ``sessions`` cycles;
:func:`recommend` picks the point with the best ``objective`` among those with at least ``min_trades`` fills, ties
broken toward the current setting, then the more conservative (higher ``min_confidence``, then higher
``min_score``). It is recommended only when it beats the current setting's score (0 when the current setting
scores nothing: it trades too little).

**Walk-forward optimisation** (:func:`optimize_strategy`): candidates (:func:`strategy_candidates`: a grid or a
seeded sample over signal weights and risk parameters, the current setting always one of them) are backtested on
each :func:`walk_forward_splits` split's train window and on its test window (the next cycles, strictly after).
The rule (:func:`decide_walk_forward`):

1. each split picks its in-sample best (best train score among candidates with enough fills);
2. those picks and the current setting are ranked by their **mean out-of-sample score** over every split (a
   candidate short of ``min_trades`` fills in a test window, or without a score there, is not ranked); the best
   is recommended only when it beats the current setting's mean out-of-sample score (0 when the current one is
   not ranked). In-sample scores never decide;
3. overfitting: per split, the pick's in-sample and out-of-sample scores are reported side by side; the report is
   flagged ``overfit`` when the picks' mean in-sample score is positive and their mean out-of-sample score keeps
   less than half of it (``oos / is < 0.5``).

**Live settings**: :func:`apply_recommendation` turns a study's recommendation into the JSON of Variable
``portfolio.trading_settings`` (merged over what it held, with ``source`` naming the study); the adapter writes it
only when told to. :func:`parse_trading_settings` reads it back; :func:`settings_with` lays it over a cycle's
settings (``AutoTraderOperator`` does so). Plain Python: never imports Airflow.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.params import json_object, validate_symbols
from airflow_provider_portfolio.store.studies import finite_or_none
from airflow_provider_portfolio.trading.settings import LOOKBACK_BARS, CycleSettings, check_instant

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.trading.backtest import BacktestInputs

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONFIDENCE_GRID", "DEFAULT_SCORE_GRID", "OBJECTIVES", "OPTIMIZATION_STUDY", "SETTING_KEYS",
           "SIGNALS", "SWEEP_STUDY", "Candidate", "History", "OptimizationReport", "PointResult", "Recommendation",
           "Split", "SweepReport", "apply_recommendation", "decide_walk_forward", "load_history",
           "normalise_weights", "optimize_strategy", "parse_trading_settings", "recommend", "save_optimization",
           "save_sweep", "settings_with", "with_current", "strategy_candidates", "sweep_points", "threshold_grid", "threshold_sweep",
           "walk_forward_scores", "walk_forward_splits"]

SWEEP_STUDY = "threshold_sweep"
OPTIMIZATION_STUDY = "strategy_optimization"
SIGNALS = ("technical", "forecast", "sentiment")
#: What a sweep point, a candidate and Variable ``portfolio.trading_settings`` may set: the risk limits'
#: ``min_confidence``, ``max_position_fraction``, ``max_open_positions``, ``daily_loss_limit`` and the cycle's
#: ``min_score``, ``fraction`` and signal ``weights``.
LIMIT_KEYS = ("min_confidence", "max_position_fraction", "max_open_positions", "daily_loss_limit")
CYCLE_KEYS = ("min_score", "fraction", "weights")
SETTING_KEYS = LIMIT_KEYS + CYCLE_KEYS
#: Objectives a study may rank by (higher is better).
OBJECTIVES = ("sharpe", "sortino", "total_return", "annualised_return")
DEFAULT_CONFIDENCE_GRID = (0.1, 0.2, 0.3, 0.4, 0.55)
DEFAULT_SCORE_GRID = (0.05, 0.1, 0.15, 0.2, 0.3)
#: The most points a grid or a candidate list may hold (each is a backtest per window).
MAX_POINTS = 1_000
#: Out-of-sample / in-sample score below which a walk-forward is flagged overfit.
OVERFIT_RATIO = 0.5
#: The backtest figures a point keeps (JSON, non-finite as ``None``).
METRIC_KEYS = ("sharpe", "sortino", "total_return", "annualised_return", "volatility", "max_drawdown", "win_rate",
               "profit_factor", "turnover", "costs", "orders", "approved", "risk_rejected", "fills", "trades",
               "final_equity")
_DIGITS = 10


# -- settings ------------------------------------------------------------------------------------------------------

def _number(value: object, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value > high or value < low or (low_open and value == low):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InvalidInputError(f"{name} must be a number in {span}, got {value!r}")
    return float(value)


def normalise_weights(weights: object, name: str = "weights") -> dict[str, float]:
    """Signal weights (``technical``, ``forecast``, ``sentiment``) scaled to sum to 1 (rounded to 10 digits).

    :raises InvalidInputError: naming ``name`` and the value: not a mapping, an unknown signal, a weight that is not
        a finite number >= 0, or weights that sum to 0.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidInputError(f"{name} must be a non-empty mapping of signal name ({', '.join(SIGNALS)}) to "
                                f"weight, got {weights!r}")
    unknown = sorted(str(k) for k in weights if k not in SIGNALS)
    if unknown:
        raise InvalidInputError(f"{name}: unknown signal(s) {unknown}; the signals are {', '.join(SIGNALS)}")
    out = {str(k): _number(v, f"{name}.{k}", 0.0, math.inf) for k, v in weights.items()}
    total = math.fsum(out.values())
    if total <= 0:
        raise InvalidInputError(f"{name} sum to 0 ({weights!r}): give at least one signal a positive weight")
    return {k: round(v / total, _DIGITS) for k, v in sorted(out.items()) if v > 0}


def check_params(params: object, name: str = "setting") -> dict[str, Any]:
    """A setting (some of :data:`SETTING_KEYS`) checked: values in range, weights normalised.

    :raises InvalidInputError: naming ``name``, the key and the value.
    """
    if not isinstance(params, Mapping):
        raise InvalidInputError(f"{name} must be a mapping of {', '.join(SETTING_KEYS)}, got {params!r}")
    unknown = sorted(str(k) for k in params if k not in SETTING_KEYS)
    if unknown:
        raise InvalidInputError(f"{name}: unknown key(s) {unknown}; the keys are {', '.join(SETTING_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in params.items():
        where = f"{name}.{key}"
        if key == "weights":
            out[key] = normalise_weights(value, where)
        elif key in ("min_confidence", "min_score"):
            out[key] = _number(value, where, 0.0, 1.0)
        elif key in ("max_position_fraction", "daily_loss_limit", "fraction"):
            out[key] = _number(value, where, 0.0, 1.0, low_open=True)
        else:  # max_open_positions
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
                raise InvalidInputError(f"{where} must be a whole number >= 0, got {value!r}")
            out[key] = int(value)
    return out


def settings_with(base: CycleSettings, params: Mapping[str, Any]) -> CycleSettings:
    """``base`` with ``params`` (some of :data:`SETTING_KEYS`) laid over it.

    :raises InvalidInputError: for an unknown key or a bad value.
    """
    checked = check_params(params)
    limits = {k: v for k, v in checked.items() if k in LIMIT_KEYS}
    cycle = {k: v for k, v in checked.items() if k in CYCLE_KEYS}
    return replace(base, limits=replace(base.limits, **limits), **cycle) if limits else replace(base, **cycle)


def current_params(settings: CycleSettings, keys: Iterable[str] = SETTING_KEYS) -> dict[str, Any]:
    """The values of ``keys`` in ``settings`` (weights normalised): the current setting as a candidate."""
    out: dict[str, Any] = {}
    for key in keys:
        if key not in SETTING_KEYS:
            raise InvalidInputError(f"unknown setting {key!r}; the keys are {', '.join(SETTING_KEYS)}")
        if key == "weights":
            out[key] = normalise_weights(settings.weights)
        elif key in LIMIT_KEYS:
            out[key] = getattr(settings.limits, key)
        else:
            out[key] = getattr(settings, key)
    return check_params(out)


def parse_trading_settings(value: Mapping[str, Any] | str | None,
                           setting: str = "trading settings") -> dict[str, Any]:
    """Variable ``portfolio.trading_settings``: a JSON object of :data:`SETTING_KEYS` and ``source`` (text naming the
    study it came from); ``None``, ``""`` and ``{}`` are none.

    :raises InvalidInputError: naming ``setting``, the key and the value.
    """
    value = json_object(value, setting, example='{"min_confidence": 0.3, "min_score": 0.1}',
                        what=", ".join(SETTING_KEYS))
    if not value:
        return {}
    source = value.get("source")
    if source is not None and not isinstance(source, str):
        raise InvalidInputError(f"{setting}.source must be text naming a study, got {source!r}")
    out = check_params({k: v for k, v in value.items() if k != "source"}, setting)
    return {**out, "source": source} if source is not None else out


def apply_recommendation(recommended: Mapping[str, Any], current: Mapping[str, Any] | str | None, *,
                         source: str) -> dict[str, Any]:
    """The new Variable ``portfolio.trading_settings``: ``recommended`` laid over what it held (``current``), with
    ``source`` naming the study (``threshold_sweep:<study_id>``).

    :raises InvalidInputError: for a malformed ``current`` or ``recommended``, or no recommendation: nothing is
        written then.
    """
    if not recommended:
        raise InvalidInputError("nothing to apply: the study recommends nothing")
    if not isinstance(source, str) or not source.strip():
        raise InvalidInputError(f"source must name the study, got {source!r}")
    held = parse_trading_settings(current, "portfolio.trading_settings")
    held.pop("source", None)
    return {**held, **check_params(recommended, "recommended"), "source": source}


# -- history -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class History:
    """What a backtest of the trader over recent cycles needs, read once from the store.

    :param symbols: the universe.
    :param cycles: the cycle instants (UTC, increasing): one a session at ``cycle_time``.
    :param bars: the canonical bars, look-back of the first cycle included.
    :param forecasts: every stored run of the trader's forecast model (``None``: none).
    :param evaluations: their evaluations (``None``: none).
    :param news: a news source (anything with ``get_news``), or ``None``.
    :param settings: the settings the inputs are prepared with (their :data:`PREPARE_FIELDS` count).
    """

    symbols: tuple[str, ...]
    cycles: tuple[datetime, ...]
    bars: pd.DataFrame
    forecasts: pd.DataFrame | None
    evaluations: pd.DataFrame | None
    news: Any
    settings: CycleSettings

    def prepare(self, cycles: Sequence[datetime] | None = None, dag_id: str = "backtest") -> BacktestInputs:
        """:func:`~airflow_provider_portfolio.trading.backtest.prepare_backtest` over ``cycles`` (default all)."""
        from airflow_provider_portfolio.trading.backtest import prepare_backtest

        return prepare_backtest(self.bars, list(self.symbols), cycles=list(cycles or self.cycles),
                                settings=self.settings, news=self.news, forecasts=self.forecasts,
                                evaluations=self.evaluations, dag_id=dag_id)


def _count(value: object, name: str, least: int = 1, most: int = 10_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise InvalidInputError(f"{name} must be a whole number from {least} to {most}, got {value!r}")
    return value


def load_history(store: PortfolioStore, symbols: Sequence[str], *, end: datetime, sessions: int = 60,
                 settings: CycleSettings | None = None, cycle_time: str = "15:00",
                 forecast_model: str | None = "ensemble", news: Any = None) -> History:
    """The last ``sessions`` cycles before ``end`` (one a session of ``settings.exchange`` at ``cycle_time``, on
    sessions the store has bars for) and what they need from the store: the bars of their look-back, every stored
    run of ``forecast_model`` and its evaluations.

    :param end: the latest instant a cycle may be at (the run's instant): nothing later is read.
    :param sessions: cycles wanted, 2 to 2,000; fewer are given when the store holds less (at least 2).
    :param settings: the trader's settings (timeframe, exchange...); default ``CycleSettings()``.
    :param forecast_model: the stored model feeding the forecast signal (``None``: none).
    :param news: a news source (the synthetic market, a vendor's hook) asked as each cycle asks it, or ``None``.
    :raises InvalidInputError: for an empty history (no bars, or none of some symbols: named), too few sessions, or
        bad parameters.
    """
    import pandas as pd

    from airflow_provider_portfolio.market.timing import history_days
    from airflow_provider_portfolio.trading.backtest import session_instants

    universe = tuple(validate_symbols(list(symbols)))
    end = check_instant(end)
    sessions = _count(sessions, "sessions", 2, 2_000)
    settings = CycleSettings() if settings is None else settings
    if not isinstance(settings, CycleSettings):
        raise InvalidInputError(f"settings must be CycleSettings, got {type(settings).__name__}")
    tf = settings.timeframe
    span = timedelta(days=math.ceil(sessions * 7 / 5) + 14)  # sessions to calendar days, holidays included
    lookback = timedelta(days=history_days(tf, LOOKBACK_BARS))
    bars = store.read_bars(list(universe), tf, (end - span - lookback).date(), end)
    if bars.empty:
        raise InvalidInputError(f"empty history: the store holds no {tf} bars of {list(universe)[:5]}"
                                f"{'...' if len(universe) > 5 else ''} before {end.isoformat()}: load bars first "
                                "(the daily ETL)")
    missing = sorted(set(universe) - set(bars["symbol"].unique()))
    if missing:
        raise InvalidInputError(f"empty history of {missing}: the store holds no {tf} bars of them before "
                                f"{end.isoformat()}")
    ts = pd.to_datetime(bars["ts"], utc=True)
    first, last = ts.min(), ts.max()
    instants = [t for t in session_instants((end - span).date(), min(end.date(), last.date()), cycle_time,
                                            settings.exchange) if first < t <= end]
    instants = instants[-sessions:]
    if len(instants) < 2:
        raise InvalidInputError(f"empty history: {len(instants)} cycle(s) at {cycle_time} between the first bar "
                                f"{first.isoformat()} and {end.isoformat()}: a backtest needs at least 2")
    forecasts = evaluations = None
    if forecast_model:
        forecasts = store.read_forecasts(list(universe), model=forecast_model, timeframe=tf, latest=False)
        evaluations = store.read_evaluations(list(universe), model=forecast_model, timeframe=tf, latest=False)
        forecasts = None if forecasts.empty else forecasts
        evaluations = None if evaluations is None or evaluations.empty else evaluations
    log.info("history: %d symbol(s), %d cycle(s) %s .. %s, %d bars, %s forecast row(s)", len(universe), len(instants),
             instants[0].isoformat(), instants[-1].isoformat(), len(bars), 0 if forecasts is None else len(forecasts))
    return History(universe, tuple(instants), bars, forecasts, evaluations, news, settings)


# -- backtest runs -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PointResult:
    """A setting's backtest: its ``point`` name (``grid:0007``), ``params`` and ``metrics`` (:data:`METRIC_KEYS`,
    undefined ones ``None``)."""

    point: str
    params: dict[str, Any]
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"point": self.point, "params": self.params, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PointResult:
        """From :meth:`to_dict` (an XCom).

        :raises InvalidInputError: for something else.
        """
        if not isinstance(data, Mapping) or not {"point", "params", "metrics"} <= set(data):
            raise InvalidInputError(f"a point result is a dict with point, params and metrics, got {data!r}")
        return cls(str(data["point"]), dict(data["params"]), dict(data["metrics"]))


def _metrics(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in METRIC_KEYS:
        value = raw.get(key)
        out[key] = value if isinstance(value, int) and not isinstance(value, bool) else finite_or_none(value)
    return out


def _costs(costs: Mapping[str, Any] | None) -> dict[str, float]:
    out = {"initial_cash": 100_000.0, "commission_bps": 0.0, "slippage_bps": 5.0}
    unknown = sorted(set(costs or {}) - set(out))
    if unknown:
        raise InvalidInputError(f"costs: unknown key(s) {unknown}; the keys are {', '.join(out)}")
    out.update({k: float(v) for k, v in (costs or {}).items()})
    return out


def _run(inputs: BacktestInputs, base: CycleSettings, params: Mapping[str, Any], costs: dict[str, float]
         ) -> dict[str, Any]:
    from airflow_provider_portfolio.trading.backtest import run_backtest

    return _metrics(run_backtest(inputs, settings_with(base, params), initial_cash=costs["initial_cash"],
                                 commission_bps=costs["commission_bps"], slippage_bps=costs["slippage_bps"]).metrics)


def sweep_points(inputs: BacktestInputs, points: Sequence[Mapping[str, Any]], base_settings: CycleSettings, *,
                 costs: Mapping[str, Any] | None = None, names: Sequence[str] | None = None) -> list[PointResult]:
    """Backtest every point (a setting laid over ``base_settings``) on the same prepared ``inputs``.

    :param points: settings (some of :data:`SETTING_KEYS`), e.g. :func:`threshold_grid`'s.
    :param costs: ``initial_cash``, ``commission_bps``, ``slippage_bps`` of the simulated broker.
    :param names: each point's name (default ``grid:0000``...).
    :raises InvalidInputError: for no points or a bad one (nothing is run).
    """
    if not points:
        raise InvalidInputError("the grid has no points: nothing to sweep")
    checked = [check_params(p, f"point {i}") for i, p in enumerate(points)]
    names = [f"grid:{i:04d}" for i in range(len(points))] if names is None else list(names)
    if len(names) != len(checked):
        raise InvalidInputError(f"names: {len(names)} given for {len(checked)} points")
    charge = _costs(costs)
    return [PointResult(name, p, _run(inputs, base_settings, p, charge)) for name, p in zip(names, checked, strict=True)]


# -- the sweep -----------------------------------------------------------------------------------------------------

def _axis(values: object, name: str) -> list[float]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{name} must be a list of numbers in [0, 1], got {values!r}")
    out = sorted({_number(v, name, 0.0, 1.0) for v in values})
    if not out:
        raise InvalidInputError(f"{name} is empty: the grid has no points")
    return out


def threshold_grid(min_confidence: Iterable[float] = DEFAULT_CONFIDENCE_GRID,
                   min_score: Iterable[float] = DEFAULT_SCORE_GRID) -> list[dict[str, float]]:
    """The sweep's grid: every (``min_confidence``, ``min_score``) pair, each axis deduplicated and sorted.

    :raises InvalidInputError: naming the field: an empty axis (no points), a value outside [0, 1] or not a number,
        or more than :data:`MAX_POINTS` points.
    """
    conf, score = _axis(min_confidence, "min_confidence"), _axis(min_score, "min_score")
    if len(conf) * len(score) > MAX_POINTS:
        raise InvalidInputError(f"the grid has {len(conf) * len(score)} points; at most {MAX_POINTS}")
    return [{"min_confidence": c, "min_score": s} for c, s in itertools.product(conf, score)]


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return {k: a[k] for k in b if k in a} == dict(b) and set(b) <= set(a)


def with_current(points: Sequence[Mapping[str, Any]], current: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``points`` (checked) with the ``current`` setting appended when none equals it: the current setting is always
    a candidate.

    :raises InvalidInputError: for no points or a bad one.
    """
    if not points:
        raise InvalidInputError("the grid has no points: nothing to sweep")
    out = [check_params(p, f"grid point {i}") for i, p in enumerate(points)]
    return out if any(_same(p, current) for p in out) else [*out, check_params(current, "current")]


@dataclass(frozen=True)
class Recommendation:
    """What a study recommends: ``params`` (``None``: nothing), the ``point`` they came from, its ``score`` next to
    the current setting's (``current_score``), and why (``reason``)."""

    params: dict[str, Any] | None
    point: str | None
    score: float | None
    current_score: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "point": self.point, "score": self.score, "current_score": self.current_score,
                "reason": self.reason}


def _score(metrics: Mapping[str, Any], objective: str, min_trades: int) -> float | None:
    """The objective's value when the run had at least ``min_trades`` fills, else ``None``."""
    if (metrics.get("fills") or 0) < min_trades:
        return None
    return finite_or_none(metrics.get(objective))


def _objective(objective: object, min_trades: object) -> tuple[str, int]:
    if objective not in OBJECTIVES:
        raise InvalidInputError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    return str(objective), _count(min_trades, "min_trades", 0, 1_000_000)


def _conservative(params: Mapping[str, Any]) -> tuple[float, float]:
    return (float(params.get("min_confidence", 0.0)), float(params.get("min_score", 0.0)))


def recommend(points: Sequence[PointResult], *, current: Mapping[str, Any], objective: str = "sharpe",
              min_trades: int = 5) -> Recommendation:
    """The sweep's pick (see the module docstring): the best ``objective`` among points with ``min_trades`` fills,
    ties broken toward ``current``, then the more conservative; recommended only when it beats the current setting's
    score (that of the point equal to ``current``; 0 when none qualifies).

    :param current: the current setting (the keys the points set).
    :raises InvalidInputError: for no points, an unknown objective or a bad ``min_trades``.
    """
    objective, min_trades = _objective(objective, min_trades)
    if not points:
        raise InvalidInputError("the grid has no points: nothing to recommend from")
    scored = [(p, _score(p.metrics, objective, min_trades)) for p in points]
    now = [s for p, s in scored if _same(p.params, current)]
    current_score = now[0] if now else None
    ok = [(p, s) for p, s in scored if s is not None]
    if not ok:
        return Recommendation(None, None, None, current_score,
                              f"no point had {min_trades} fill(s) and a {objective}: nothing recommended")
    best, score = max(ok, key=lambda ps: (round(ps[1], _DIGITS), _same(ps[0].params, current),
                                          _conservative(ps[0].params), [-ord(c) for c in ps[0].point]))
    bar = 0.0 if current_score is None else current_score
    if _same(best.params, current) or not score > bar:
        return Recommendation(None, best.point, score, current_score,
                              f"nothing beats the current setting: best {objective} {score:.4g} at {best.point} "
                              f"vs {bar:.4g}")
    return Recommendation(dict(best.params), best.point, score, current_score,
                          f"{best.point} {objective} {score:.4g} beats the current setting's {bar:.4g}")


@dataclass(frozen=True)
class SweepReport:
    """A stored threshold sweep: ``study_id``, its instant, ``status``, the points and the recommendation."""

    study_id: str
    ts: datetime
    status: str
    points: list[PointResult]
    recommendation: Recommendation
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def recommended(self) -> dict[str, Any] | None:
        return self.recommendation.params

    def to_dict(self) -> dict[str, Any]:
        """Small JSON (the XCom): no points."""
        return {"kind": SWEEP_STUDY, "study_id": self.study_id, "ts": self.ts.isoformat(), "status": self.status,
                "points": len(self.points), "recommended": self.recommended, **self.recommendation.to_dict(),
                "summary": self.summary}


def save_sweep(store: PortfolioStore, points: Sequence[PointResult | Mapping[str, Any]], *, study_id: str,
               now: datetime, current: Mapping[str, Any], params: Mapping[str, Any] | None = None,
               objective: str = "sharpe", min_trades: int = 5, dag_id: str | None = None,
               run_id: str | None = None) -> SweepReport:
    """Recommend from the swept ``points`` and store the ``threshold_sweep`` study (replacing a previous save of
    ``study_id``).

    :raises InvalidInputError: for no points, a malformed one, or bad parameters (nothing stored).
    """
    results = [p if isinstance(p, PointResult) else PointResult.from_dict(p) for p in points]
    pick = recommend(results, current=check_params(current, "current"), objective=objective, min_trades=min_trades)
    now = check_instant(now)
    status = "ok" if pick.score is not None else "insufficient_data"
    summary = {"objective": objective, "min_trades": min_trades, "points": len(results), **pick.to_dict(),
               "current": dict(current)}
    store.save_study(SWEEP_STUDY, study_id, ts=now, params={**dict(params or {}), "objective": objective,
                                                             "min_trades": min_trades, "current": dict(current)},
                     summary=summary, status=status, recommended=pick.params,
                     points=[p.to_dict() for p in results], dag_id=dag_id, run_id=run_id)
    log.info("threshold sweep %s: %s", study_id, pick.reason)
    return SweepReport(study_id, now, status, results, pick, summary)


def threshold_sweep(store: PortfolioStore, symbols: Sequence[str], *, now: datetime, study_id: str,
                    grid: Sequence[Mapping[str, Any]] | None = None, sessions: int = 60,
                    settings: CycleSettings | None = None, cycle_time: str = "15:00",
                    forecast_model: str | None = "ensemble", news: Any = None, objective: str = "sharpe",
                    min_trades: int = 5, costs: Mapping[str, Any] | None = None, dag_id: str | None = None,
                    run_id: str | None = None) -> SweepReport:
    """The sweep in one call (notebooks, the CLI): :func:`load_history`, prepare once, :func:`sweep_points` over
    ``grid`` (default :func:`threshold_grid`'s) plus the current setting, :func:`save_sweep`.

    :param settings: the current (live) settings: the base every point is laid over, and the setting to beat.
    :raises InvalidInputError: for an empty history, a grid with no points, bad values (nothing stored).
    """
    settings = CycleSettings() if settings is None else settings
    current = current_params(settings, ("min_confidence", "min_score"))
    points = with_current(threshold_grid() if grid is None else grid, current)
    history = load_history(store, symbols, end=now, sessions=sessions, settings=settings, cycle_time=cycle_time,
                           forecast_model=forecast_model, news=news)
    results = sweep_points(history.prepare(), points, settings, costs=costs)
    return save_sweep(store, results, study_id=study_id, now=now, current=current,
                      params={"symbols": list(history.symbols), "sessions": len(history.cycles)},
                      objective=objective, min_trades=min_trades, dag_id=dag_id, run_id=run_id)


# -- walk-forward ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """A walk-forward split: train on cycles ``[train_start, train_stop)``, test on ``[test_start, test_stop)``
    (indices into the cycles; the test window starts at or after the train window's end)."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Split:
        """From :meth:`to_dict` (an XCom), checked.

        :raises InvalidInputError: for a malformed split or one whose test window is not after its train window.
        """
        try:
            split = cls(**{f.name: int(data[f.name]) for f in fields(cls)})
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(f"a split is a dict of {[f.name for f in fields(cls)]}, got {data!r}") from None
        if not (0 <= split.train_start < split.train_stop <= split.test_start < split.test_stop):
            raise InvalidInputError(f"split {split.index}: the test window must follow the train window, got {data!r}")
        return split


def walk_forward_splits(cycles: int | Sequence[Any], *, train: int, test: int, step: int | None = None
                        ) -> list[Split]:
    """Rolling walk-forward splits over ``cycles`` (a count or the cycles): train on ``train`` cycles, test on the
    next ``test``, move on by ``step`` (default ``test``: the test windows tile without overlap).

    :raises InvalidInputError: for a bad size (``train`` at least 2, ``test`` at least 2: a score needs two daily
        returns) or too few cycles for one split.
    """
    n = cycles if isinstance(cycles, int) and not isinstance(cycles, bool) else len(cycles)  # type: ignore[arg-type]
    train = _count(train, "train", 2)
    test = _count(test, "test", 2)
    step = test if step is None else _count(step, "step", 1)
    out = [Split(i, lo, lo + train, lo + train, lo + train + test)
           for i, lo in enumerate(range(0, max(n - train - test, -1) + 1, step))]
    if not out:
        raise InvalidInputError(f"too few cycles for a walk-forward split: {n} cycle(s), train {train} + test {test}")
    return out


@dataclass(frozen=True)
class Candidate:
    """A setting searched: its ``name`` (``current``, ``c0007``) and ``params``."""

    name: str
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params}


def strategy_candidates(space: Mapping[str, Sequence[Any]], *, current: Mapping[str, Any],
                        sample: int | None = None, seed: int = 0) -> list[Candidate]:
    """Candidates from a search space: every combination of the values of each key (:data:`SETTING_KEYS`;
    ``weights``: a list of weight mappings, normalised), or a seeded random ``sample`` of them; ``current`` (the
    live setting, its values of the same keys) is always the first, named ``current``.

    :raises InvalidInputError: naming the field: an empty space or axis, weights summing to 0, a value out of range,
        more than :data:`MAX_POINTS` candidates.
    """
    if not isinstance(space, Mapping) or not space:
        raise InvalidInputError(f"the search space must be a non-empty mapping of {', '.join(SETTING_KEYS)} to lists, "
                                f"got {space!r}")
    keys = sorted(space)
    axes: list[list[Any]] = []
    for key in keys:
        values = space[key]
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise InvalidInputError(f"search space {key} must be a list of values, got {values!r}")
        checked = [check_params({key: v}, "search space")[key] for v in values]
        unique = [v for i, v in enumerate(checked) if v not in checked[:i]]
        if not unique:
            raise InvalidInputError(f"search space {key} is empty: no candidates")
        axes.append(unique)
    total = math.prod(len(a) for a in axes)
    if sample is not None:
        sample = _count(sample, "sample", 1, MAX_POINTS)
    if total > MAX_POINTS and (sample is None):
        raise InvalidInputError(f"the search space has {total} combinations; give sample <= {MAX_POINTS} or fewer values")
    combos = [dict(zip(keys, c, strict=True)) for c in itertools.product(*axes)] if total <= 100_000 else None
    if sample is not None and sample < total:
        rng = random.Random(seed)
        if combos is None:
            picked: list[dict[str, Any]] = []
            while len(picked) < sample:
                c = {k: rng.choice(a) for k, a in zip(keys, axes, strict=True)}
                if c not in picked:
                    picked.append(c)
            combos = picked
        else:
            combos = [combos[i] for i in sorted(rng.sample(range(total), sample))]
    base = {k: v for k, v in check_params(current, "current").items() if k in keys}
    if set(base) != set(keys):
        raise InvalidInputError(f"current must give every key searched {keys}, got {sorted(current)}")
    out = [Candidate("current", base)]
    out += [Candidate(f"c{i:04d}", c) for i, c in enumerate(combos or []) if c != base]
    return out


def walk_forward_scores(inputs: BacktestInputs, candidates: Sequence[Candidate], splits: Sequence[Split],
                        base_settings: CycleSettings, *, costs: Mapping[str, Any] | None = None,
                        offset: int = 0) -> list[dict[str, Any]]:
    """Every candidate backtested on every split's train window and on its test window (each from a fresh book).

    :param inputs: prepared over the cycles the splits index (``offset``: the index of its first cycle).
    :return: one row per (split, candidate): ``split``, ``candidate``, ``params``, ``in_sample`` and
        ``out_of_sample`` metrics.
    :raises InvalidInputError: for no candidates, no splits, a split outside ``inputs``.
    """
    if not candidates:
        raise InvalidInputError("no candidates: nothing to search")
    if not splits:
        raise InvalidInputError("no walk-forward splits")
    charge = _costs(costs)
    K = inputs.shape[0]
    rows: list[dict[str, Any]] = []
    for split in splits:
        train = (split.train_start - offset, split.train_stop - offset)
        test = (split.test_start - offset, split.test_stop - offset)
        if train[0] < 0 or test[1] > K:
            raise InvalidInputError(f"split {split.index} lies outside the prepared cycles ({offset}..{offset + K})")
        ins, outs = inputs.window(*train), inputs.window(*test)
        for c in candidates:
            rows.append({"split": split.index, "candidate": c.name, "params": c.params,
                         "in_sample": _run(ins, base_settings, c.params, charge),
                         "out_of_sample": _run(outs, base_settings, c.params, charge)})
    return rows


@dataclass(frozen=True)
class OptimizationReport:
    """A walk-forward optimisation: per split the in-sample pick with its in- and out-of-sample scores side by side,
    the candidates ranked by mean out-of-sample score, the overfitting flag and the recommendation."""

    study_id: str
    ts: datetime
    status: str
    splits: list[dict[str, Any]]
    ranking: list[dict[str, Any]]
    overfit: bool
    overfit_ratio: float | None
    recommendation: Recommendation
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recommended(self) -> dict[str, Any] | None:
        return self.recommendation.params

    def to_dict(self) -> dict[str, Any]:
        """Small JSON (the XCom): no per-candidate rows."""
        return {"kind": OPTIMIZATION_STUDY, "study_id": self.study_id, "ts": self.ts.isoformat(),
                "status": self.status, "splits": self.splits, "ranking": self.ranking[:10], "overfit": self.overfit,
                "overfit_ratio": self.overfit_ratio, "recommended": self.recommended,
                **self.recommendation.to_dict()}


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def decide_walk_forward(rows: Sequence[Mapping[str, Any]], *, objective: str = "sharpe", min_trades: int = 5
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool, float | None, Recommendation]:
    """The walk-forward rule (module docstring) on :func:`walk_forward_scores`' rows.

    :return: per split (the in-sample pick, its in- and out-of-sample scores), the ranking (candidates picked at
        least once and ``current``, by mean out-of-sample score), the overfitting flag, the picks' mean out-of-sample
        / mean in-sample score, and the recommendation.
    :raises InvalidInputError: for no rows, rows without the current setting, a bad objective.
    """
    objective, min_trades = _objective(objective, min_trades)
    if not rows:
        raise InvalidInputError("no walk-forward results: nothing to decide")
    splits = sorted({int(r["split"]) for r in rows})
    params = {str(r["candidate"]): r["params"] for r in rows}
    if "current" not in params:
        raise InvalidInputError("the current setting is not among the candidates")
    ins = {(int(r["split"]), str(r["candidate"])): _score(r["in_sample"], objective, min_trades) for r in rows}
    oos = {(int(r["split"]), str(r["candidate"])): _score(r["out_of_sample"], objective, min_trades) for r in rows}
    per_split: list[dict[str, Any]] = []
    picked: list[str] = []
    for s in splits:
        ok: list[tuple[str, float]] = [(c, x) for c in params if (x := ins.get((s, c))) is not None]
        if not ok:
            per_split.append({"split": s, "picked": None, "in_sample": None, "out_of_sample": None})
            continue
        best, score = max(ok, key=lambda cs: (round(cs[1], _DIGITS), cs[0] == "current",
                                              _conservative(params[cs[0]]), [-ord(ch) for ch in cs[0]]))
        picked.append(best)
        per_split.append({"split": s, "picked": best, "params": params[best], "in_sample": score,
                          "out_of_sample": oos.get((s, best))})
    pairs = [(p["in_sample"], p["out_of_sample"]) for p in per_split if p["picked"] is not None]
    mean_is = _mean([a for a, _ in pairs]) if pairs else None
    mean_oos = _mean([b if b is not None else 0.0 for _, b in pairs]) if pairs else None
    ratio = mean_oos / mean_is if mean_is is not None and mean_oos is not None and mean_is > 0 else None
    overfit = mean_is is not None and mean_is > 0 and (ratio is None or ratio < OVERFIT_RATIO)
    ranking: list[dict[str, Any]] = []
    for c in dict.fromkeys(["current", *picked]):
        scores = [oos.get((s, c)) for s in splits]
        mean = _mean([x for x in scores if x is not None]) if all(x is not None for x in scores) else None
        ranking.append({"candidate": c, "params": params[c], "picked": picked.count(c),
                        "mean_out_of_sample": mean,
                        "mean_in_sample": _mean([x for s in splits if (x := ins.get((s, c))) is not None])
                        if any(ins.get((s, c)) is not None for s in splits) else None})
    ranking.sort(key=lambda r: (r["mean_out_of_sample"] is None, -(r["mean_out_of_sample"] or 0.0),
                                r["candidate"] != "current"))
    current = next(r for r in ranking if r["candidate"] == "current")
    bar = current["mean_out_of_sample"]
    ranked = [r for r in ranking if r["mean_out_of_sample"] is not None]
    if not ranked:
        pick = Recommendation(None, None, None, bar, f"no candidate had {min_trades} fill(s) and a {objective} in "
                              "every test window: nothing recommended")
    else:
        top = ranked[0]
        score = float(top["mean_out_of_sample"])
        floor = 0.0 if bar is None else bar
        if top["candidate"] == "current" or not round(score, _DIGITS) > round(floor, _DIGITS):
            pick = Recommendation(None, top["candidate"], score, bar,
                                  f"nothing beats the current setting out of sample: best mean out-of-sample "
                                  f"{objective} {score:.4g} ({top['candidate']}) vs {floor:.4g}")
        else:
            pick = Recommendation(dict(top["params"]), top["candidate"], score, bar,
                                  f"{top['candidate']} mean out-of-sample {objective} {score:.4g} beats the current "
                                  f"setting's {floor:.4g}")
    return per_split, ranking, overfit, ratio, pick


def save_optimization(store: PortfolioStore, rows: Sequence[Mapping[str, Any]], *, study_id: str, now: datetime,
                      params: Mapping[str, Any] | None = None, objective: str = "sharpe", min_trades: int = 5,
                      dag_id: str | None = None, run_id: str | None = None) -> OptimizationReport:
    """Decide (:func:`decide_walk_forward`) and store the ``strategy_optimization`` study: one point per (candidate,
    split) with its in- and out-of-sample metrics side by side (replacing a previous save of ``study_id``).

    :raises InvalidInputError: for no rows or bad parameters (nothing stored).
    """
    now = check_instant(now)
    per_split, ranking, overfit, ratio, pick = decide_walk_forward(rows, objective=objective, min_trades=min_trades)
    if overfit:
        log.warning("strategy optimisation %s: in-sample scores do not hold out of sample (ratio %s): overfit",
                    study_id, "n/a" if ratio is None else f"{ratio:.2f}")
    status = "ok" if pick.score is not None else "insufficient_data"
    summary = {"objective": objective, "min_trades": min_trades, "splits": per_split, "ranking": ranking,
               "overfit": overfit, "overfit_ratio": ratio, "candidates": len({r["candidate"] for r in rows}),
               **pick.to_dict()}
    points = [{"point": f"{r['candidate']}:split{int(r['split']):02d}",
               "params": {**r["params"], "candidate": r["candidate"], "split": int(r["split"])},
               "metrics": {"in_sample": r["in_sample"], "out_of_sample": r["out_of_sample"]}} for r in rows]
    store.save_study(OPTIMIZATION_STUDY, study_id, ts=now,
                     params={**dict(params or {}), "objective": objective, "min_trades": min_trades},
                     summary=summary, status=status, recommended=pick.params, points=points, dag_id=dag_id,
                     run_id=run_id)
    log.info("strategy optimisation %s: %s", study_id, pick.reason)
    return OptimizationReport(study_id, now, status, per_split, ranking, overfit, ratio, pick, [dict(r) for r in rows])


def optimize_strategy(store: PortfolioStore, symbols: Sequence[str], *, now: datetime, study_id: str,
                      space: Mapping[str, Sequence[Any]], sessions: int = 120, train: int = 40, test: int = 20,
                      step: int | None = None, sample: int | None = None, seed: int = 0,
                      settings: CycleSettings | None = None, cycle_time: str = "15:00",
                      forecast_model: str | None = "ensemble", news: Any = None, objective: str = "sharpe",
                      min_trades: int = 5, costs: Mapping[str, Any] | None = None, dag_id: str | None = None,
                      run_id: str | None = None) -> OptimizationReport:
    """The walk-forward optimisation in one call: :func:`load_history`, :func:`strategy_candidates` (the current
    setting first), :func:`walk_forward_splits`, prepare once, :func:`walk_forward_scores`,
    :func:`save_optimization`.

    :param settings: the current (live) settings: the base of every candidate and the setting to beat.
    :raises InvalidInputError: for an empty history, an empty space, weights summing to 0, too few cycles (nothing
        stored).
    """
    settings = CycleSettings() if settings is None else settings
    candidates = strategy_candidates(space, current=current_params(settings, list(space) if isinstance(
        space, Mapping) else []), sample=sample, seed=seed)
    history = load_history(store, symbols, end=now, sessions=sessions, settings=settings, cycle_time=cycle_time,
                           forecast_model=forecast_model, news=news)
    splits = walk_forward_splits(len(history.cycles), train=train, test=test, step=step)
    rows = walk_forward_scores(history.prepare(), candidates, splits, settings, costs=costs)
    return save_optimization(store, rows, study_id=study_id, now=now, objective=objective, min_trades=min_trades,
                             params={"symbols": list(history.symbols), "cycles": len(history.cycles),
                                     "train": train, "test": test, "step": step or test,
                                     "space": {k: list(v) for k, v in space.items()}, "sample": sample,
                                     "seed": seed},
                             dag_id=dag_id, run_id=run_id)
