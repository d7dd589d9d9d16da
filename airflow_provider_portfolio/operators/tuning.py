"""Tuning operators: the weekly threshold sweep and the walk-forward strategy optimisation as thin adapters over
:mod:`airflow_provider_portfolio.desk.tuning`, and the step that applies a study's recommendation to Variable
``portfolio.trading_settings`` only when told to.

The sweep: :class:`ThresholdGridOperator` (the grid in chunks, the current setting included: ``.expand`` over its
XCom) -> :class:`ThresholdSweepOperator` (mapped: one chunk each; loads the history from the store and prepares the
backtest once) -> :class:`ThresholdPickOperator` (recommends and stores the study) -> :class:`ApplyTradingSettingsOperator`.
The optimisation: :class:`WalkForwardPlanOperator` (candidates and splits: ``.expand_kwargs`` over its XCom) ->
:class:`WalkForwardSplitOperator` (mapped: one split each, every candidate on its train and test windows) ->
:class:`WalkForwardPickOperator` -> :class:`ApplyTradingSettingsOperator`.

Every operator takes the trader's settings (``timeframe``, ``weights``, ``risk_limits``, ``min_score``,
``fraction``) and lays Variable ``portfolio.trading_settings`` over them, as ``AutoTraderOperator`` does: that is
the current setting a recommendation must beat. XComs are small JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_portfolio.trading.settings import CycleSettings

#: The default search space of the optimisation: signal weights and a few risk parameters.
DEFAULT_SPACE: dict[str, list[Any]] = {
    "weights": [{"technical": 1.0}, {"technical": 0.5, "sentiment": 0.5},
                {"forecast": 0.6, "technical": 0.25, "sentiment": 0.15}, {"forecast": 0.5, "technical": 0.5}],
    "min_confidence": [0.1, 0.2, 0.3, 0.45],
    "min_score": [0.05, 0.1, 0.2],
    "max_position_fraction": [0.05, 0.1],
}


def flag(value: object, name: str = "apply") -> bool:
    """A rendered boolean: ``True``/``False`` or their text (any case).

    :raises InvalidInputError: for anything else, naming ``name``.
    """
    from airflow_provider_portfolio.exceptions import InvalidInputError

    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInputError(f"{name} must be True or False, got {value!r}")


def json_value(value: object, name: str) -> Any:
    """A rendered list or object: as given, or parsed from its JSON text.

    :raises InvalidInputError: for text that is not JSON, naming ``name``.
    """
    from airflow_provider_portfolio.exceptions import InvalidInputError

    if isinstance(value, str):
        text = value.strip()
        try:
            return json.loads(text)
        except ValueError:
            try:  # a rendered Python literal (single quotes)
                import ast

                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise InvalidInputError(f"{name} must be JSON, got {value!r}") from None
    return value


class _TuningOperator(StoreHookMixin, BaseOperator):
    """The trader's settings and the store, shared by the tuning operators.

    :param symbols: the universe (templated): a list, JSON list or comma-separated; default Variable
        ``portfolio.default_tickers``.
    :param timeframe: the bars the trader decides on (default ``1Day``).
    :param weights: the trader's signal weights (default the auto trader's).
    :param risk_limits: the trader's ``RiskLimits`` or a dict of its fields.
    :param min_score: the trader's smallest |combined score| traded.
    :param fraction: the trader's position size at full score, fraction of equity.
    :param sessions: cycles of history backtested, one a session at ``cycle_time``.
    :param cycle_time: the cycle's time of day, exchange time (``"15:00"``).
    :param forecast_model: the stored model feeding the forecast signal (``None``: none).
    :param sources: market-data sources (templated) the news is read from, as the trader reads it; default the
        trader's (the synthetic market without connections).
    :param news: read news for the sentiment signal (default True).
    :param slippage_bps: the simulated fills' slippage; not given: Variable ``portfolio.simulated_costs``, else 5.
    :param commission_bps: the simulated commission; not given: the Variable, else 0.
    :param exchange: calendar of equities; default ``[portfolio] default_exchange``.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    """

    template_fields: Sequence[str] = ("symbols", "sources", "store_conn_id")
    ui_color = "#e2efda"

    def __init__(self, *, symbols: list[str] | str | None = None, timeframe: str = "1Day",
                 weights: Mapping[str, float] | None = None, risk_limits: Any = None, min_score: float = 0.1,
                 fraction: float = 0.05, sessions: int = 60, cycle_time: str = "15:00",
                 forecast_model: str | None = "ensemble", sources: list[str] | str | None = None, news: bool = True,
                 slippage_bps: float | None = None, commission_bps: float | None = None, exchange: str | None = None,
                 store_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.timeframe = timeframe
        self.weights = weights
        self.risk_limits = risk_limits
        self.min_score = min_score
        self.fraction = fraction
        self.sessions = sessions
        self.cycle_time = cycle_time
        self.forecast_model = forecast_model
        self.sources = sources
        self.news = news
        self.slippage_bps = slippage_bps
        self.commission_bps = commission_bps
        self.exchange = exchange
        self.store_conn_id = store_conn_id

    def universe(self) -> list[str]:
        from airflow_provider_portfolio.operators.monitoring import desk_symbols

        return desk_symbols(self.symbols)

    def base_settings(self) -> CycleSettings:
        """The trader's settings with the live Variable laid over them (the current setting), for a backtest: the
        kill switch as ``active`` (the backtest judges the strategy, not today's switch)."""
        from dataclasses import replace

        from airflow_provider_portfolio.operators.trading import cycle_settings, with_live_settings
        from airflow_provider_portfolio.trading.decision import AUTO_TRADER_WEIGHTS

        settings = with_live_settings(cycle_settings(
            timeframe=self.timeframe, weights=self.weights or AUTO_TRADER_WEIGHTS, risk_limits=self.risk_limits,
            max_trades_per_day=None, exchange=self.exchange, min_score=self.min_score, fraction=self.fraction),
            self.log)
        return replace(settings, kill_switch="active")

    def costs(self, symbols: Sequence[str]) -> dict[str, float]:
        from airflow_provider_portfolio.operators.trading import simulated_costs

        return simulated_costs(symbols, self.slippage_bps, self.commission_bps, self.log)

    def news_source(self, exchange: str) -> Any:
        """The first of the trader's sources that serves news (``None`` without ``news``)."""
        if not flag(self.news, "news"):
            return None
        from airflow_provider_portfolio.hooks.market_data import data_sources, validate_source_names

        names = validate_source_names(maybe_json_list(self.sources)) if not blank(self.sources) else None
        return next((s for s in data_sources(names, exchange=exchange) if hasattr(s, "get_news")), None)

    def history(self, store: Any, symbols: Sequence[str], settings: CycleSettings, *, end: Any,
                sessions: int | None = None) -> Any:
        from airflow_provider_portfolio.desk.tuning import load_history

        return load_history(store, symbols, end=end, sessions=_int(self.sessions if sessions is None else sessions,
                                                                  "sessions"),
                            settings=settings, cycle_time=self.cycle_time,
                            forecast_model=None if blank(self.forecast_model) else self.forecast_model,
                            news=self.news_source(settings.exchange))


def _study_id(context: Context) -> str:
    dag_run = context["dag_run"]
    return f"{dag_run.dag_id}/{dag_run.run_id}"


def _results(results: object, name: str) -> list[Any]:
    """The mapped tasks' XComs (a list of lists) flattened."""
    from airflow_provider_portfolio.exceptions import InvalidInputError

    value = json_value(results, name)
    if value is None or isinstance(value, str | bytes | Mapping):
        raise InvalidInputError(f"{name} must be the mapped tasks' results (a list), got {value!r}")
    out: list[Any] = []
    for part in value:
        if part is None:
            continue
        if isinstance(part, Mapping):
            out.append(part)
        else:
            out.extend(part)
    return out


# -- the threshold sweep -------------------------------------------------------------------------------------------

class _PickOperator(_TuningOperator):
    """A step that ranks the mapped tasks' ``results`` by ``objective`` among those with ``min_trades`` fills."""

    template_fields: Sequence[str] = (*_TuningOperator.template_fields, "results", "objective", "min_trades")

    def __init__(self, *, results: Any, objective: str = "sharpe", min_trades: Any = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results = results
        self.objective = objective
        self.min_trades = min_trades


class ThresholdGridOperator(_TuningOperator):
    """Build the sweep's grid (``min_confidence`` x ``min_score``, checked), add the current setting's point and
    return it in chunks of ``chunk`` points: the XCom a mapped :class:`ThresholdSweepOperator` expands over.

    :param confidence_grid: the ``min_confidence`` values (a list, or its JSON text); default
        :data:`~airflow_provider_portfolio.desk.tuning.DEFAULT_CONFIDENCE_GRID`.
    :param score_grid: the ``min_score`` values; default ``DEFAULT_SCORE_GRID``.
    :param chunk: points per mapped task (each prepares the backtest once).
    """

    template_fields: Sequence[str] = (*_TuningOperator.template_fields, "confidence_grid", "score_grid", "chunk")

    def __init__(self, *, confidence_grid: Any = None, score_grid: Any = None, chunk: Any = 5,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.confidence_grid = confidence_grid
        self.score_grid = score_grid
        self.chunk = chunk

    def execute(self, context: Context) -> list[list[dict[str, float]]]:
        from airflow_provider_portfolio.desk.tuning import (
            DEFAULT_CONFIDENCE_GRID,
            DEFAULT_SCORE_GRID,
            current_params,
            threshold_grid,
            with_current,
        )
        from airflow_provider_portfolio.exceptions import InvalidInputError

        conf = DEFAULT_CONFIDENCE_GRID if blank(self.confidence_grid) else json_value(self.confidence_grid,
                                                                                      "confidence_grid")
        score = DEFAULT_SCORE_GRID if blank(self.score_grid) else json_value(self.score_grid, "score_grid")
        chunk = _int(self.chunk, "chunk")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise InvalidInputError(f"chunk must be a whole number >= 1, got {self.chunk!r}")
        current = current_params(self.base_settings(), ("min_confidence", "min_score"))
        points = with_current(threshold_grid(min_confidence=conf, min_score=score), current)
        self.log.info("Threshold grid: %d point(s) (current %s) in chunks of %d", len(points), current, chunk)
        return [points[i:i + chunk] for i in range(0, len(points), chunk)]


class ThresholdSweepOperator(_TuningOperator):
    """Backtest a chunk of grid points on the last ``sessions`` cycles (the history loaded from the store, the
    backtest prepared once); XCom: each point's params and metrics (small JSON). Mapped over
    :class:`ThresholdGridOperator`'s chunks with ``.expand(points=...)``.

    :param points: the chunk: settings (``min_confidence``, ``min_score``...).
    """

    template_fields: Sequence[str] = (*_TuningOperator.template_fields, "points")

    def __init__(self, *, points: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.points = points

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_portfolio.desk.tuning import check_params, sweep_points
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.operators.gating import run_instant

        points = json_value(self.points, "points")
        if not isinstance(points, list) or not points:
            raise InvalidInputError(f"points must be a non-empty list of grid points, got {points!r}")
        points = [check_params(p, f"point {i}") for i, p in enumerate(points)]
        symbols = self.universe()
        settings = self.base_settings()
        costs = self.costs(symbols)
        store = self.store_hook.get_conn()
        try:
            history = self.history(store, symbols, settings, end=run_instant(context))
        finally:
            store.dispose()
        names = [_point_name(p) for p in points]
        results = sweep_points(history.prepare(), points, settings, costs=costs, names=names)
        for r in results:
            self.log.info("%s: sharpe %s, total return %s, fills %s", r.point, r.metrics["sharpe"],
                          r.metrics["total_return"], r.metrics["fills"])
        return [r.to_dict() for r in results]


def _point_name(params: Mapping[str, Any]) -> str:
    """A grid point's name from its values (the same in every mapped task): ``conf0.300:score0.100``."""
    return f"conf{float(params['min_confidence']):.3f}:score{float(params['min_score']):.3f}"


class ThresholdPickOperator(_PickOperator):
    """Recommend from the mapped sweep's points and store the ``threshold_sweep`` study (study id
    ``<dag_id>/<run_id>``: a re-run replaces it). XCom: the small report.

    :param results: the mapped :class:`ThresholdSweepOperator`'s XComs.
    :param objective: ``sharpe`` (default), ``sortino``, ``total_return`` or ``annualised_return``.
    :param min_trades: fills a point needs to qualify.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.tuning import current_params, save_sweep
        from airflow_provider_portfolio.operators.gating import run_instant

        points = _results(self.results, "results")
        current = current_params(self.base_settings(), ("min_confidence", "min_score"))
        dag_run = context["dag_run"]
        store = self.store_hook.get_conn()
        try:
            report = save_sweep(store, points, study_id=_study_id(context), now=run_instant(context),
                                current=current, objective=str(self.objective).strip(),
                                min_trades=_int(self.min_trades, "min_trades"),
                                params={"symbols": self.universe(), "sessions": self.sessions,
                                        "timeframe": self.timeframe},
                                dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        finally:
            store.dispose()
        self.log.info("Threshold sweep %s: %s", report.study_id, report.recommendation.reason)
        return report.to_dict()


def _int(value: Any, name: str) -> Any:
    return int(value) if isinstance(value, str) and value.strip().lstrip("-").isdigit() else value


# -- the walk-forward optimisation ---------------------------------------------------------------------------------

class WalkForwardPlanOperator(_TuningOperator):
    """Plan the optimisation: the candidates (a grid or a seeded sample of ``space``, the current setting first) and
    the walk-forward splits over the last ``sessions`` cycles in the store. XCom: one ``{"split": ..., "candidates":
    ...}`` per split, what a mapped :class:`WalkForwardSplitOperator` takes with ``.expand_kwargs``.

    :param space: key (``weights``, ``min_confidence``, ``min_score``, ``max_position_fraction``,
        ``max_open_positions``, ``daily_loss_limit``, ``fraction``) -> the values searched (JSON text accepted);
        default :data:`DEFAULT_SPACE`.
    :param train: cycles of each train window.
    :param test: cycles of each test window (the next ones).
    :param step: cycles between splits (default ``test``).
    :param sample: candidates drawn from the space (``None``: all of it).
    :param seed: the sample's seed.
    """

    template_fields: Sequence[str] = (*_TuningOperator.template_fields, "space", "train", "test", "step", "sample",
                                      "seed", "sessions")

    def __init__(self, *, space: Any = None, train: Any = 40, test: Any = 20, step: Any = None, sample: Any = 24,
                 seed: Any = 0, sessions: int = 120, **kwargs: Any) -> None:
        super().__init__(sessions=sessions, **kwargs)
        self.space = space
        self.train = train
        self.test = test
        self.step = step
        self.sample = sample
        self.seed = seed

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_portfolio.desk.tuning import current_params, strategy_candidates, walk_forward_splits
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.operators.gating import run_instant

        space = DEFAULT_SPACE if blank(self.space) else json_value(self.space, "space")
        if not isinstance(space, Mapping):
            raise InvalidInputError(f"space must be a JSON object of setting -> values, got {space!r}")
        settings = self.base_settings()
        candidates = strategy_candidates(space, current=current_params(settings, list(space)),
                                         sample=None if blank(self.sample) else _int(self.sample, "sample"),
                                         seed=_int(self.seed, "seed"))
        symbols = self.universe()
        store = self.store_hook.get_conn()
        try:
            history = self.history(store, symbols, settings, end=run_instant(context))
        finally:
            store.dispose()
        splits = walk_forward_splits(len(history.cycles), train=_int(self.train, "train"),
                                     test=_int(self.test, "test"),
                                     step=None if blank(self.step) else _int(self.step, "step"))
        cycles = history.cycles
        self.log.info("Walk-forward: %d candidate(s) x %d split(s) over %d cycles %s .. %s", len(candidates),
                      len(splits), len(cycles), cycles[0].isoformat(), cycles[-1].isoformat())
        return [{"split": {**s.to_dict(), "first_cycle": cycles[s.train_start].isoformat(),
                           "last_cycle": cycles[s.test_stop - 1].isoformat()},
                 "candidates": [c.to_dict() for c in candidates]} for s in splits]


class WalkForwardSplitOperator(_TuningOperator):
    """Backtest every candidate on one split's train window and on its test window (the split's cycles loaded from
    the store and prepared once). XCom: per candidate its in- and out-of-sample metrics (small JSON).

    :param split: a split of :class:`WalkForwardPlanOperator` (indices, ``first_cycle``, ``last_cycle``).
    :param candidates: the candidates (``name``, ``params``).
    """

    template_fields: Sequence[str] = (*_TuningOperator.template_fields, "split", "candidates")

    def __init__(self, *, split: Any, candidates: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.split = split
        self.candidates = candidates

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_portfolio.desk.tuning import Candidate, Split, check_params, walk_forward_scores
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.market.params import parse_instant

        raw = json_value(self.split, "split")
        split = Split.from_dict(raw)
        candidates = json_value(self.candidates, "candidates")
        if not isinstance(candidates, list) or not candidates:
            raise InvalidInputError(f"candidates must be a non-empty list, got {candidates!r}")
        try:
            chosen = [Candidate(str(c["name"]), check_params(c["params"], f"candidate {c['name']}"))
                      for c in candidates]
        except (KeyError, TypeError):
            raise InvalidInputError("each candidate is a dict with name and params") from None
        last = parse_instant(raw.get("last_cycle"), "split.last_cycle", naive_is_utc=False)
        symbols = self.universe()
        settings = self.base_settings()
        costs = self.costs(symbols)
        store = self.store_hook.get_conn()
        try:  # the split's own cycles: the sessions up to its last cycle
            history = self.history(store, symbols, settings, end=last, sessions=split.test_stop - split.train_start)
        finally:
            store.dispose()
        first = history.cycles[0].isoformat()
        if first != raw.get("first_cycle") or len(history.cycles) != split.test_stop - split.train_start:
            raise InvalidInputError(f"split {split.index}: the store's sessions changed since the plan (first cycle "
                                    f"{first}, planned {raw.get('first_cycle')}): run the DAG again")
        rows = walk_forward_scores(history.prepare(), chosen, [split], settings, costs=costs,
                                   offset=split.train_start)
        self.log.info("Split %d: %d candidate(s) on train %s and test windows", split.index, len(chosen), first)
        return rows


class WalkForwardPickOperator(_PickOperator):
    """Decide from the mapped splits (the out-of-sample score decides, see
    :func:`~airflow_provider_portfolio.desk.tuning.decide_walk_forward`) and store the ``strategy_optimization``
    study (study id ``<dag_id>/<run_id>``). XCom: per split the in- and out-of-sample scores side by side, the
    ranking, the overfitting flag and the recommendation.

    :param results: the mapped :class:`WalkForwardSplitOperator`'s XComs.
    :param objective: ``sharpe`` (default), ``sortino``, ``total_return`` or ``annualised_return``.
    :param min_trades: fills a window needs to score.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.tuning import save_optimization
        from airflow_provider_portfolio.operators.gating import run_instant

        rows = _results(self.results, "results")
        dag_run = context["dag_run"]
        store = self.store_hook.get_conn()
        try:
            report = save_optimization(store, rows, study_id=_study_id(context), now=run_instant(context),
                                       objective=str(self.objective).strip(),
                                       min_trades=_int(self.min_trades, "min_trades"),
                                       params={"symbols": self.universe(), "timeframe": self.timeframe},
                                       dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        finally:
            store.dispose()
        for s in report.splits:
            self.log.info("split %s: picked %s, in-sample %s, out-of-sample %s", s["split"], s["picked"],
                          s["in_sample"], s["out_of_sample"])
        if report.overfit:
            self.log.warning("Overfitting: the in-sample picks keep %s of their score out of sample",
                             "none" if report.overfit_ratio is None else f"{report.overfit_ratio:.0%}")
        self.log.info("Strategy optimisation %s: %s", report.study_id, report.recommendation.reason)
        return report.to_dict()


# -- apply ---------------------------------------------------------------------------------------------------------

class ApplyTradingSettingsOperator(StoreHookMixin, BaseOperator):
    """Apply a tuning study's recommendation to Variable ``portfolio.trading_settings``, only with ``apply=True``.

    Reads the study (``kind``, ``study_id``; default this run's ``<dag_id>/<run_id>``) from the store. With the flag
    and a recommendation, the recommended keys are laid over what the Variable held, ``source`` names the study
    (``<kind>:<study_id>``), the Variable is written and the study marked applied; ``AutoTraderOperator`` then uses
    it. Without the flag, or without a recommendation, nothing is written. A malformed Variable fails the task
    before anything is written.

    :param kind: ``threshold_sweep`` or ``strategy_optimization``.
    :param apply: write the Variable (templated; ``True``/``False`` or their text; default False).
    :param study_id: the study (templated); default this run's.
    :param store_conn_id: store connection (templated).
    """

    template_fields: Sequence[str] = ("apply", "study_id", "store_conn_id")
    ui_color = "#fff2cc"

    def __init__(self, *, kind: str, apply: Any = False, study_id: str | None = None,
                 store_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.apply = apply
        self.study_id = study_id
        self.store_conn_id = store_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.tuning import OPTIMIZATION_STUDY, SWEEP_STUDY, apply_recommendation
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.operators.trading import TRADING_SETTINGS_VARIABLE
        from airflow_provider_portfolio.variables import get_variable

        if self.kind not in (SWEEP_STUDY, OPTIMIZATION_STUDY):
            raise InvalidInputError(f"kind must be {SWEEP_STUDY!r} or {OPTIMIZATION_STUDY!r}, got {self.kind!r}")
        apply = flag(self.apply, "apply")
        study_id = _study_id(context) if blank(self.study_id) else str(self.study_id).strip()
        store = self.store_hook.get_conn()
        try:
            study = store.study(self.kind, study_id)
            if study is None:
                raise InvalidInputError(f"no {self.kind} study {study_id!r} in the store")
            result = {"kind": self.kind, "study_id": study_id, "recommended": study.recommended, "applied": False}
            if not apply:
                self.log.info("Not applied (apply is False): %s study %s recommends %s", self.kind, study_id,
                              study.recommended)
                return result
            if not study.recommended:
                self.log.info("Nothing applied: the %s study %s recommends nothing (%s)", self.kind, study_id,
                              study.summary.get("reason"))
                return result
            settings = apply_recommendation(study.recommended, get_variable(TRADING_SETTINGS_VARIABLE),
                                            source=f"{self.kind}:{study_id}")
            from airflow.sdk import Variable

            text = json.dumps(settings, sort_keys=True)
            Variable.set(TRADING_SETTINGS_VARIABLE, text)
            store.mark_study_applied(self.kind, study_id)
        finally:
            store.dispose()
        self.log.warning("Applied: Variable %s set to %s", TRADING_SETTINGS_VARIABLE, text)
        return {**result, "applied": True, "trading_settings": settings}
