"""The threshold sweep and the walk-forward optimisation: grids, splits and candidates checked; the recommendation
rules (the out-of-sample score decides, nothing beats the current setting -> nothing recommended); studies stored
once per study id; the live-settings JSON."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from airflow_provider_portfolio.desk import tuning
from airflow_provider_portfolio.desk.tuning import (
    PointResult,
    apply_recommendation,
    decide_walk_forward,
    load_history,
    normalise_weights,
    optimize_strategy,
    parse_trading_settings,
    recommend,
    settings_with,
    strategy_candidates,
    sweep_points,
    threshold_grid,
    threshold_sweep,
    walk_forward_splits,
)
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.trading.backtest import run_backtest
from airflow_provider_portfolio.trading.risk import RiskLimits
from airflow_provider_portfolio.trading.settings import CycleSettings

UTC = timezone.utc
SYMBOLS = ["AAPL", "MSFT", "BTC/USD"]
#: Monday 1 July 2024, 04:00 New York: every bar of the fixture has closed.
NOW = datetime(2024, 7, 1, 8, 0, tzinfo=UTC)
LOOSE = CycleSettings(weights={"technical": 0.5, "sentiment": 0.5}, limits=RiskLimits(min_confidence=0.1),
                      min_score=0.05)


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=11)


@pytest.fixture(scope="module")
def filled(tmp_path_factory, market) -> PortfolioStore:
    """A store holding half a year of daily bars of :data:`SYMBOLS` (no forecasts)."""
    store = PortfolioStore.for_sqlite_file(tmp_path_factory.mktemp("tuning") / "desk.db")
    store.migrate()
    store.upsert_bars(market.panel(SYMBOLS, "2023-10-02", "2024-06-28"))
    yield store
    store.dispose()


# -- bad input ------------------------------------------------------------------------------------------------------

def test_the_grid_is_every_pair_sorted_and_deduplicated():
    grid = threshold_grid(min_confidence=[0.4, 0.2, 0.4], min_score=[0.1, 0.05])
    assert grid == [{"min_confidence": 0.2, "min_score": 0.05}, {"min_confidence": 0.2, "min_score": 0.1},
                    {"min_confidence": 0.4, "min_score": 0.05}, {"min_confidence": 0.4, "min_score": 0.1}]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_confidence": []}, "min_confidence is empty: the grid has no points"),
    ({"min_score": []}, "min_score is empty"),
    ({"min_score": [0.1, 1.5]}, r"min_score must be a number in \[0, 1\], got 1.5"),
    ({"min_confidence": [-0.1]}, r"min_confidence must be a number in \[0, 1\], got -0.1"),
    ({"min_confidence": "0.3"}, "min_confidence must be a list of numbers"),
    ({"min_confidence": [True]}, "min_confidence must be a number"),
])
def test_a_bad_grid_is_refused_naming_the_field(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        threshold_grid(**kwargs)


def test_a_grid_with_no_points_sweeps_nothing():
    with pytest.raises(InvalidInputError, match="the grid has no points"):
        sweep_points(None, [], LOOSE)  # type: ignore[arg-type]  # refused before the inputs are looked at
    with pytest.raises(InvalidInputError, match="the grid has no points"):
        recommend([], current={"min_confidence": 0.5})


def test_weights_summing_to_zero_are_refused():
    assert normalise_weights({"technical": 3, "sentiment": 1, "forecast": 0}) == {"sentiment": 0.25,
                                                                                 "technical": 0.75}
    with pytest.raises(InvalidInputError, match="weights sum to 0"):
        normalise_weights({"technical": 0, "forecast": 0.0})
    with pytest.raises(InvalidInputError, match=r"unknown signal\(s\) \['momentum'\]"):
        normalise_weights({"momentum": 1})
    with pytest.raises(InvalidInputError, match=r"weights.technical must be a number in \[0, inf\], got -1"):
        normalise_weights({"technical": -1, "forecast": 2})
    with pytest.raises(InvalidInputError, match=r"search space.weights sum to 0"):
        strategy_candidates({"weights": [{"technical": 1}, {"technical": 0}]},
                            current={"weights": {"technical": 1}})


def test_a_bad_search_space_is_refused():
    with pytest.raises(InvalidInputError, match="search space min_score is empty"):
        strategy_candidates({"min_score": []}, current={"min_score": 0.1})
    with pytest.raises(InvalidInputError, match=r"unknown key\(s\) \['stop_loss'\]"):
        strategy_candidates({"stop_loss": [0.1]}, current={})
    with pytest.raises(InvalidInputError, match="must be a non-empty mapping"):
        strategy_candidates({}, current={})


def test_candidates_put_the_current_setting_first_and_sample_with_a_seed():
    space = {"min_confidence": [0.1, 0.2, 0.3], "min_score": [0.05, 0.1, 0.2]}
    every = strategy_candidates(space, current={"min_confidence": 0.2, "min_score": 0.1})
    assert every[0].name == "current" and len(every) == 9  # the current one is not repeated
    assert sum(c.params == every[0].params for c in every) == 1
    a = strategy_candidates(space, current={"min_confidence": 0.9, "min_score": 0.1}, sample=4, seed=3)
    b = strategy_candidates(space, current={"min_confidence": 0.9, "min_score": 0.1}, sample=4, seed=3)
    assert [c.params for c in a] == [c.params for c in b] and len(a) == 5 and a[0].name == "current"


def test_an_empty_history_is_refused(tmp_path, filled):
    empty = PortfolioStore.for_sqlite_file(tmp_path / "empty.db")
    empty.migrate()
    try:
        with pytest.raises(InvalidInputError, match="empty history: the store holds no 1Day bars"):
            load_history(empty, SYMBOLS, end=NOW)
        with pytest.raises(InvalidInputError, match="empty history"):
            threshold_sweep(empty, SYMBOLS, now=NOW, study_id="s")
        assert empty.latest_study("threshold_sweep") is None
    finally:
        empty.dispose()
    with pytest.raises(InvalidInputError, match=r"empty history of \['TSLA'\]"):
        load_history(filled, ["AAPL", "TSLA"], end=NOW)
    with pytest.raises(InvalidInputError, match="empty history: 0 cycle"):
        load_history(filled, SYMBOLS, end=datetime(2023, 10, 2, 12, tzinfo=UTC))


# -- walk-forward splits --------------------------------------------------------------------------------------------

def test_splits_never_overlap_and_test_after_train():
    splits = walk_forward_splits(100, train=40, test=20)
    assert [(s.train_start, s.train_stop, s.test_start, s.test_stop) for s in splits] == \
        [(0, 40, 40, 60), (20, 60, 60, 80), (40, 80, 80, 100)]
    for s in splits:
        assert s.train_stop <= s.test_start  # test strictly after train: no look-ahead
    tests = [range(s.test_start, s.test_stop) for s in splits]
    assert all(not set(a) & set(b) for a, b in zip(tests, tests[1:], strict=False))
    stepped = walk_forward_splits(list(range(50)), train=10, test=5, step=10)
    assert [(s.train_start, s.test_stop) for s in stepped] == [(0, 15), (10, 25), (20, 35), (30, 45)]
    with pytest.raises(InvalidInputError, match="too few cycles for a walk-forward split: 30 cycle"):
        walk_forward_splits(30, train=20, test=20)
    with pytest.raises(InvalidInputError, match="train must be a whole number from 2"):
        walk_forward_splits(30, train=1, test=5)
    with pytest.raises(InvalidInputError, match="the test window must follow the train window"):
        tuning.Split.from_dict({"index": 0, "train_start": 0, "train_stop": 10, "test_start": 5, "test_stop": 12})


def test_a_window_of_prepared_inputs_backtests_as_preparing_it_alone(filled, market):
    """The walk-forward runs a window cut from inputs prepared once: it must equal preparing that window alone."""
    history = load_history(filled, SYMBOLS, end=NOW, sessions=30, settings=LOOSE, forecast_model=None, news=market)
    whole = history.prepare()
    cut = run_backtest(whole.window(10, 25), LOOSE)
    alone = run_backtest(history.prepare(history.cycles[10:25]), LOOSE)
    assert len(alone.orders) > 0
    pd.testing.assert_frame_equal(cut.orders, alone.orders)
    pd.testing.assert_frame_equal(cut.fills, alone.fills)
    pd.testing.assert_frame_equal(cut.equity, alone.equity)
    for lo, hi in ((5, 5), (-1, 10), (20, 31)):
        with pytest.raises(InvalidInputError, match="must lie within the 30 prepared cycles and not be empty"):
            whole.window(lo, hi)


# -- recommendation rules -------------------------------------------------------------------------------------------

def point(name: str, conf: float, score: float, sharpe: float | None, fills: int = 10) -> PointResult:
    return PointResult(name, {"min_confidence": conf, "min_score": score}, {"sharpe": sharpe, "fills": fills})


def test_the_sweep_recommends_the_best_point_with_enough_trades():
    current = {"min_confidence": 0.55, "min_score": 0.1}
    points = [point("a", 0.1, 0.05, 3.0, fills=2), point("b", 0.2, 0.1, 1.5), point("c", 0.55, 0.1, 0.5)]
    pick = recommend(points, current=current, min_trades=5)
    assert pick.params == {"min_confidence": 0.2, "min_score": 0.1} and pick.point == "b"  # "a" traded too little
    assert pick.current_score == 0.5


def test_sweep_ties_go_to_the_current_setting_then_the_more_conservative():
    current = {"min_confidence": 0.3, "min_score": 0.1}
    tie = [point("a", 0.1, 0.1, 1.0), point("b", 0.3, 0.1, 1.0), point("c", 0.5, 0.2, 1.0)]
    pick = recommend(tie, current=current)
    assert pick.params is None and pick.point == "b" and "nothing beats the current setting" in pick.reason
    other = recommend(tie, current={"min_confidence": 0.9, "min_score": 0.1})
    assert other.params == {"min_confidence": 0.5, "min_score": 0.2}  # the most conservative of the tie


def test_nothing_beats_the_current_setting_nothing_is_recommended():
    current = {"min_confidence": 0.3, "min_score": 0.1}
    pick = recommend([point("a", 0.1, 0.1, 0.8), point("cur", 0.3, 0.1, 1.2)], current=current)
    assert pick.params is None and pick.current_score == 1.2
    none = recommend([point("a", 0.1, 0.1, 0.8, fills=1)], current=current, min_trades=5)
    assert none.params is None and none.point is None and "no point had 5 fill(s)" in none.reason
    # the current setting trades too little: a point must beat 0 (not trading)
    losing = recommend([point("a", 0.1, 0.1, -0.4), point("cur", 0.3, 0.1, None, fills=0)], current=current)
    assert losing.params is None and "vs 0" in losing.reason


def wf_row(split: int, name: str, params: dict, ins: float | None, oos: float | None, fills: int = 10) -> dict:
    return {"split": split, "candidate": name, "params": params,
            "in_sample": {"sharpe": ins, "fills": fills}, "out_of_sample": {"sharpe": oos, "fills": fills}}


CUR, A, B = {"min_score": 0.1}, {"min_score": 0.05}, {"min_score": 0.2}


def test_the_out_of_sample_score_decides_not_the_in_sample_one():
    """A is the in-sample best of split 0 and has the best in-sample score overall, B the in-sample best of split
    1; out of sample B is far better: B is recommended, and the picks' in-sample scores not holding out of sample
    flag overfitting."""
    rows = [wf_row(0, "current", CUR, 1.0, 0.2), wf_row(0, "A", A, 3.0, -1.0), wf_row(0, "B", B, 2.0, 1.0),
            wf_row(1, "current", CUR, 0.5, 0.1), wf_row(1, "A", A, 1.0, -0.5), wf_row(1, "B", B, 2.5, 0.8)]
    per_split, ranking, overfit, ratio, pick = decide_walk_forward(rows)
    assert [(s["picked"], s["in_sample"], s["out_of_sample"]) for s in per_split] == [("A", 3.0, -1.0),
                                                                                      ("B", 2.5, 0.8)]
    assert [r["candidate"] for r in ranking] == ["B", "current", "A"]
    assert pick.params == B and pick.score == pytest.approx(0.9) and pick.current_score == pytest.approx(0.15)
    assert overfit and ratio == pytest.approx(-0.1 / 2.75)


def test_walk_forward_recommends_nothing_that_does_not_beat_the_current_setting_out_of_sample():
    rows = [wf_row(0, "current", CUR, 0.1, 2.0), wf_row(0, "A", A, 3.0, 1.0),
            wf_row(1, "current", CUR, 0.1, 2.0), wf_row(1, "A", A, 3.0, 1.5)]
    *_, pick = decide_walk_forward(rows)
    assert pick.params is None and pick.point == "current" and "nothing beats the current setting" in pick.reason
    # the current setting scores nothing (too few fills out of sample): a candidate must beat 0
    quiet = [wf_row(0, "current", CUR, None, None, fills=0), wf_row(0, "A", A, 1.0, -0.2)]
    *_, none = decide_walk_forward(quiet)
    assert none.params is None and "vs 0" in none.reason
    # a candidate short of fills in a test window is not ranked
    short = [wf_row(0, "current", CUR, 0.5, 0.1), {**wf_row(0, "A", A, 2.0, 5.0), "out_of_sample": {"sharpe": 5.0,
                                                                                                    "fills": 1}}]
    _, ranking, _, _, sparse = decide_walk_forward(short, min_trades=5)
    assert sparse.params is None and [r["mean_out_of_sample"] for r in ranking if r["candidate"] == "A"] == [None]
    with pytest.raises(InvalidInputError, match="the current setting is not among the candidates"):
        decide_walk_forward([wf_row(0, "A", A, 1.0, 1.0)])


# -- the jobs, stored once per study id -----------------------------------------------------------------------------

def test_the_sweep_stores_one_study_with_every_point_and_a_rerun_replaces_it(filled, market):
    grid = threshold_grid(min_confidence=[0.1, 0.3], min_score=[0.05, 0.2])
    live = CycleSettings(weights=LOOSE.weights, limits=RiskLimits(min_confidence=0.2), min_score=0.05)
    first = threshold_sweep(filled, SYMBOLS, now=NOW, study_id="sweep/run1", grid=grid, sessions=25, settings=live,
                            forecast_model=None, news=market, min_trades=1, dag_id="d", run_id="run1")
    again = threshold_sweep(filled, SYMBOLS, now=NOW, study_id="sweep/run1", grid=grid, sessions=25, settings=live,
                            forecast_model=None, news=market, min_trades=1, dag_id="d", run_id="run1")
    assert len(first.points) == 5  # four grid points and the current setting (0.2, 0.05), not in the grid
    assert [p.metrics for p in first.points] == [p.metrics for p in again.points]
    studies = filled.studies("threshold_sweep")
    assert [s.study_id for s in studies] == ["sweep/run1"]
    stored = filled.study_points("threshold_sweep", "sweep/run1")
    assert len(stored) == 5 and all("sharpe" in p.metrics and "fills" in p.metrics for p in stored)
    assert any(p.metrics["fills"] > 0 for p in stored)
    assert studies[0].recommended == first.recommended
    assert studies[0].summary["current"] == {"min_confidence": 0.2, "min_score": 0.05}
    assert first.points[-1].params == {"min_confidence": 0.2, "min_score": 0.05}
    json.dumps(first.to_dict(), allow_nan=False)


def test_the_optimisation_reports_in_and_out_of_sample_side_by_side(filled, market):
    space = {"weights": [{"technical": 1.0}, {"sentiment": 1.0}], "min_confidence": [0.1, 0.3]}
    report = optimize_strategy(filled, SYMBOLS, now=NOW, study_id="opt/1", space=space, sessions=30, train=10,
                               test=10, settings=LOOSE, forecast_model=None, news=market, min_trades=1)
    assert len(report.splits) == 2
    for s in report.splits:
        assert {"split", "picked", "in_sample", "out_of_sample"} <= set(s)
    points = filled.study_points("strategy_optimization", "opt/1")
    candidates = {p.params["candidate"] for p in points}
    assert "current" in candidates and len(points) == len(candidates) * 2
    assert all({"in_sample", "out_of_sample"} == set(p.metrics) for p in points)
    current = next(r for r in report.ranking if r["candidate"] == "current")
    if report.recommended is not None:  # only what beats the current setting out of sample
        assert report.recommendation.score > (current["mean_out_of_sample"] or 0.0)
    again = optimize_strategy(filled, SYMBOLS, now=NOW, study_id="opt/1", space=space, sessions=30, train=10,
                              test=10, settings=LOOSE, forecast_model=None, news=market, min_trades=1)
    assert again.to_dict() == report.to_dict()
    assert [s.study_id for s in filled.studies("strategy_optimization")] == ["opt/1"]


# -- live settings --------------------------------------------------------------------------------------------------

def test_the_live_settings_json_is_checked_and_merged():
    assert parse_trading_settings("") == {} and parse_trading_settings("{}") == {}
    held = '{"weights": {"technical": 2, "sentiment": 2}, "min_score": 0.2, "source": "old"}'
    merged = apply_recommendation({"min_confidence": 0.3, "min_score": 0.1}, held, source="threshold_sweep:x")
    assert merged == {"weights": {"sentiment": 0.5, "technical": 0.5}, "min_score": 0.1, "min_confidence": 0.3,
                      "source": "threshold_sweep:x"}
    with pytest.raises(InvalidInputError, match=r"portfolio.trading_settings.min_confidence must be a number"):
        apply_recommendation({"min_score": 0.1}, '{"min_confidence": 2}', source="s")
    with pytest.raises(InvalidInputError, match="must be a JSON object"):
        parse_trading_settings("[1, 2]", "portfolio.trading_settings")
    with pytest.raises(InvalidInputError, match="nothing to apply"):
        apply_recommendation({}, None, source="s")
    live = parse_trading_settings(json.dumps(merged))
    assert live.pop("source") == "threshold_sweep:x"
    settings = settings_with(CycleSettings(), live)
    assert settings.limits.min_confidence == 0.3 and settings.min_score == 0.1
    assert dict(settings.weights) == {"sentiment": 0.5, "technical": 0.5}
