"""Discovery on constructed data, hand-checked: a planted trending symbol ranks first with reasons naming its numbers;
a planted regime shift (calm, then volatile) is labelled volatile and the state path switches at the break; PCA of a
planted one-factor market recovers the loadings; equities and crypto share a calendar; symbols that cannot be
measured are left out with the reason; bad input stores nothing; a re-run of a run id changes nothing."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from airflow_provider_portfolio.desk.discovery import (
    DEFAULT_WEIGHTS,
    check_weights,
    discover,
    factor_exposures,
    fit_regimes,
    score_universe,
    trend_statistics,
)
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import to_bar_frame
from airflow_provider_portfolio.market.calendar import MarketCalendar
from airflow_provider_portfolio.store import schema

# Tuesday 4 June 2024, 09:30 UTC (05:30 New York): Monday's session and crypto's Monday (UTC) bar have closed.
NOW = datetime(2024, 6, 4, 9, 30, tzinfo=timezone.utc)
N = 253  # NYSE sessions 2023-05-31 .. 2024-06-03


def bars_of(closes: dict[str, np.ndarray], *, end: str = "2024-06-03", daily: tuple[str, ...] = ()) -> pd.DataFrame:
    """Daily bars ending ``end`` with the given closes: on NYSE sessions, or every day for the symbols in ``daily``
    (crypto). High and low are the close +-0.5%, the open the close."""
    sessions = MarketCalendar("XNYS").bar_index("2020-01-02", end)
    parts = []
    for symbol, close in closes.items():
        ts = (pd.date_range(end=pd.Timestamp(end, tz="UTC"), periods=len(close), freq="D") if symbol in daily
              else sessions[-len(close):])
        parts.append(pd.DataFrame({"symbol": symbol, "timeframe": "1Day", "ts": ts, "open": close,
                                   "high": close * 1.005, "low": close * 0.995, "close": close, "volume": 1e6,
                                   "source": "test"}))
    return to_bar_frame(pd.concat(parts, ignore_index=True))


def random_walks(rng: np.random.Generator, count: int, n: int = N, vol: float = 0.015) -> dict[str, np.ndarray]:
    return {f"R{i:02d}": 100 * np.exp(np.cumsum(rng.normal(0.0, vol, n))) for i in range(count)}


def stored_rows(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.opportunities)).scalar()


# -- the planted trend ----------------------------------------------------------------------------------------
def test_a_planted_trending_symbol_ranks_first_with_its_numbers_in_the_reasons(store):
    rng = np.random.default_rng(7)
    closes = random_walks(rng, 30)
    # +0.4% a day with 1% daily noise (an annual Sharpe ratio near 6) among 30 driftless walks at 1.5%
    closes["TRND"] = 100 * np.exp(np.cumsum(rng.normal(0.004, 0.01, N)))
    store.upsert_bars(bars_of(closes))
    result = discover(store, now=NOW, run_id="planted")
    top = result.ranking.iloc[0]
    assert top["symbol"] == "TRND" and top["rank"] == 1 and result.scored == 31 and result.skipped == {}
    assert result.ranking["rank"].tolist() == list(range(1, 32))
    assert (np.diff(result.ranking["score"].to_numpy()) <= 0).all()
    # the score is the sum of its components, each a weighted z-score
    assert math.isclose(sum(top["components"].values()), top["score"], abs_tol=1e-5)
    assert top["components"]["trend"] > 0.2 and top["components"]["momentum_12_1"] > 0.2
    # hand-checked measurements: 12-1 momentum from the window's first bar to 21 bars before the last
    c = closes["TRND"][-252:]
    momentum = math.log(c[-22] / c[0])
    calendar = result.calendar  # periods per year: its 251 returns over the years it spans
    per_year = 251 / ((calendar[-1] - calendar[0]).total_seconds() / (365.25 * 86400))
    assert len(calendar) == 252 and math.isclose(per_year, 252, rel_tol=0.01)
    volatility = np.std(np.diff(np.log(c)), ddof=1) * math.sqrt(per_year)
    features = top["features"]
    assert math.isclose(features["momentum_12_1"], momentum, rel_tol=1e-9)
    assert math.isclose(features["momentum_3m"], math.log(c[-1] / c[-64]), rel_tol=1e-9)
    assert math.isclose(features["volatility"], volatility, rel_tol=1e-9)
    assert features["bars"] == 252
    # reasons name the biggest contributors with their numbers
    reasons = " | ".join(top["reasons"])
    assert len(top["reasons"]) == 3 and f"12-1 momentum {100 * math.expm1(momentum):+.1f}%" in reasons
    assert "trend t-stat +" in reasons
    stored = store.latest_opportunities()
    assert stored["symbol"].tolist() == result.ranking["symbol"].tolist() and stored["reasons"][0] == top["reasons"]


def test_trend_statistics_by_hand():
    # y = 1 + 0.5 t on 4 bars with residuals (+0.1, -0.1, -0.1, +0.1): the slope stays 0.5 (the residuals are
    # orthogonal to t), SSR = 0.04, Sxx = 5, se = sqrt(0.04 / 2 / 5) = 0.063246, t = 7.90569; SST = 1.29
    y = np.array([[1.1, 1.4, 1.9, 2.6], [np.nan, 1.0, 2.0, 3.0]])
    slope, tstat, r2 = trend_statistics(y)
    assert np.allclose(slope, [0.5, 1.0]) and math.isclose(tstat[0], 0.5 / math.sqrt(0.04 / 2 / 5), rel_tol=1e-12)
    assert math.isclose(r2[0], 1 - 0.04 / 1.29, rel_tol=1e-12)
    assert tstat[1] == math.inf and r2[1] == 1.0  # a straight line (on its 3 bars)


# -- the planted regime shift ---------------------------------------------------------------------------------
def test_a_planted_regime_shift_is_labelled_volatile_and_the_path_switches_at_the_break():
    rng = np.random.default_rng(3)
    # 180 calm returns (0.5% a day), then 72 volatile ones (2.5% a day): the break is between returns 179 and 180
    returns = np.r_[rng.normal(0.0005, 0.005, 180), rng.normal(0.0, 0.025, 72)]
    fit = fit_regimes(returns[None, :], 2)
    assert fit.latest_label[0].startswith("volatile") and fit.latest_probability[0] > 0.99
    switches = np.flatnonzero(np.diff(fit.path[0]))
    assert switches.size == 1 and abs(int(switches[0]) - 179) <= 2  # one switch, at the break
    assert (fit.path[0, :177] == 0).all() and (fit.path[0, 182:] == 1).all()
    # states ordered calmest first, their volatilities those planted (within sampling error)
    assert math.isclose(fit.vols[0, 0], 0.005, rel_tol=0.15) and math.isclose(fit.vols[0, 1], 0.025, rel_tol=0.2)
    assert fit.labels[0, 0].startswith("calm") and fit.transition[0, 0, 0] > 0.97 and fit.converged
    assert np.allclose(fit.probabilities.sum(axis=2), 1.0)


def test_plain_noise_shows_no_regime():
    rng = np.random.default_rng(0)
    fit = fit_regimes(rng.normal(0.001, 0.004, (200, 251)))
    # a 2-state fit of Gaussian noise splits it (its state volatilities differ by chance), but never beats one
    # Gaussian by BIC: no symbol gets a volatile state
    assert (fit.vols[:, 1] / fit.vols[:, 0]).max() > 1.5 and not fit.evident.any()
    assert all(label.startswith("calm") for label in fit.labels.ravel())
    planted = np.r_[rng.normal(0, 0.005, 150), rng.normal(0, 0.02, 100)][None, :]
    assert fit_regimes(planted).evident.tolist() == [True]


def test_a_regime_shift_in_the_store_is_the_symbols_label_and_calm_symbols_are_calm(store):
    rng = np.random.default_rng(5)
    closes = {"CALM": 100 * np.exp(np.cumsum(rng.normal(0.001, 0.004, N))),
              "SHOCK": 100 * np.exp(np.cumsum(np.r_[rng.normal(0.0005, 0.005, 190), rng.normal(0.0, 0.03, N - 190)])),
              "WALK": 100 * np.exp(np.cumsum(rng.normal(0.0, 0.01, N)))}
    store.upsert_bars(bars_of(closes))
    result = discover(store, now=NOW, write=False)
    regime = dict(zip(result.ranking["symbol"], result.ranking["regime"], strict=True))
    assert regime["SHOCK"].startswith("volatile") and regime["CALM"].startswith("calm")
    i = result.symbols.index("SHOCK")
    switches = np.flatnonzero(np.diff(result.regimes.path[i]))
    # the window holds closes 1..252: its return j is the planted r[j + 2], the first volatile one j = 188
    assert switches.size == 1 and abs(int(switches[0]) - 187) <= 2
    assert store.latest_opportunities().empty  # a dry run stores nothing


def test_three_states_and_bad_regime_inputs():
    rng = np.random.default_rng(11)
    returns = np.r_[rng.normal(0, 0.003, 120), rng.normal(0, 0.01, 120), rng.normal(0, 0.04, 60)]
    fit = fit_regimes(returns[None, :], 3)
    assert fit.vols.shape == (1, 3) and (np.diff(fit.vols[0]) > 0).all() and fit.latest[0] == 2
    assert fit.latest_label[0].startswith("volatile")
    with pytest.raises(InvalidInputError, match="n_states must be 2 or 3, got 4"):
        fit_regimes(returns[None, :], 4)
    with pytest.raises(InvalidInputError, match="row 1 is constant"):
        fit_regimes(np.vstack([returns, np.zeros_like(returns)]))
    with pytest.raises(InvalidInputError, match="at least 8 returns per row; row 0 has 5"):
        fit_regimes(np.r_[np.full(295, np.nan), returns[:5]][None, :])


# -- factors --------------------------------------------------------------------------------------------------
def test_pca_of_a_planted_one_factor_market_recovers_the_loadings_up_to_sign():
    rng = np.random.default_rng(2)
    symbols, bars = 30, 2000
    beta = np.linspace(0.3, 1.5, symbols)
    returns = beta[:, None] * rng.normal(0, 0.01, bars) + rng.normal(0, 0.01, (symbols, bars))
    # the planted correlation of each symbol with the market: beta / sqrt(beta^2 + 1) (equal factor and noise vols)
    truth = beta / np.sqrt(beta ** 2 + 1)
    for sign in (1.0, -1.0):
        loadings, explained = factor_exposures(sign * returns, 3)
        first = loadings[:, 0]
        assert np.abs(first - truth).max() < 0.08 and np.abs(first - truth).mean() < 0.03
        assert np.corrcoef(first, truth)[0, 1] > 0.99 and first.sum() > 0  # signed: the market factor is long
        # the factor's share of the variance is the largest eigenvalue of the planted correlation matrix over 30
        planted = np.outer(truth, truth) + np.diag(1 - truth ** 2)
        assert math.isclose(explained[0], np.linalg.eigvalsh(planted)[-1] / symbols, abs_tol=0.03)
        assert explained[1] < 0.1 and (np.diff(explained) <= 0).all()
    # more symbols than bars: the dual eigenproblem gives the same loadings
    wide = returns[:, :20]
    direct = np.linalg.eigh(np.corrcoef(wide))
    loadings, _ = factor_exposures(wide, 2)
    expected = direct[1][:, -1] * math.sqrt(direct[0][-1])
    assert np.allclose(loadings[:, 0], expected * np.sign(expected.sum()), atol=1e-9)


# -- the calendar ---------------------------------------------------------------------------------------------
def test_equities_and_crypto_share_the_session_calendar_and_a_crypto_universe_keeps_every_day():
    rng = np.random.default_rng(1)
    closes = random_walks(rng, 4)
    crypto = 30000 * np.exp(np.cumsum(rng.normal(0, 0.03, 365)))
    mixed = score_universe(bars_of({**closes, "BTC/USD": crypto}, daily=("BTC/USD",)), lookback=200)
    assert mixed.calendar.dayofweek.max() == 4 and len(mixed.calendar) == 200 and mixed.scored == 5
    assert math.isclose(mixed.params["periods_per_year"], 252, rel_tol=0.03)
    btc = mixed.ranking.set_index("symbol").loc["BTC/USD", "features"]
    days = pd.date_range(end=pd.Timestamp("2024-06-03", tz="UTC"), periods=365, freq="D")
    on_sessions = crypto[days.isin(mixed.calendar)]
    # its 3-month momentum is measured on session closes: the weekend moves fold into Monday's return
    assert math.isclose(btc["momentum_3m"], math.log(on_sessions[-1] / on_sessions[-64]), rel_tol=1e-9)
    alone = score_universe(bars_of({"BTC/USD": crypto, "ETH/USD": crypto[::-1].copy()},
                                   daily=("BTC/USD", "ETH/USD")))
    assert alone.calendar.dayofweek.max() == 6 and len(alone.calendar) == 252
    assert math.isclose(alone.params["periods_per_year"], 365.25, rel_tol=0.01)


def test_symbols_that_cannot_be_measured_are_left_out_with_the_reason(store):
    rng = np.random.default_rng(4)
    closes = random_walks(rng, 3)
    closes["NEW"] = closes["R00"][-40:]  # listed 40 sessions ago
    closes["FLAT"] = np.full(N, 50.0)
    store.upsert_bars(bars_of(closes))
    store.upsert_bars(bars_of({"OLD": closes["R01"][:100].copy()}, end="2024-01-05"))  # delisted in January
    result = discover(store, ["R00", "R01", "R02", "NEW", "FLAT", "OLD", "GONE"], now=NOW, run_id="r1")
    assert set(result.ranking["symbol"]) == {"R00", "R01", "R02"} and result.scored == 3
    assert result.skipped["NEW"] == "only 40 bar(s) of its own in the 252-bar window; needs 63"
    assert result.skipped["FLAT"] == "a constant price in the window: nothing to measure"
    assert result.skipped["OLD"].startswith("stale: its last bar 2024-01-05 is ")
    assert "calendar bars behind the universe's last (2024-06-03); allowed 5" in result.skipped["OLD"]
    assert result.skipped["GONE"].startswith("no 1Day bars closed by 2024-06-04T09:30:00+00:00 in the store")
    summary = result.to_dict()
    assert summary["skipped"] == 4 and set(summary["skipped_symbols"]) == {"NEW", "FLAT", "OLD", "GONE"}
    assert stored_rows(store) == 3


def test_only_closed_bars_are_ranked(store):
    rng = np.random.default_rng(6)
    closes = random_walks(rng, 3, N + 1)
    store.upsert_bars(bars_of(closes, end="2024-06-04"))  # Tuesday's bar is stamped: its session has not closed
    result = discover(store, now=NOW, write=False)
    assert result.calendar[-1] == pd.Timestamp("2024-06-03", tz="UTC")
    later = discover(store, now=datetime(2024, 6, 4, 21, 0, tzinfo=timezone.utc), write=False)
    assert later.calendar[-1] == pd.Timestamp("2024-06-04", tz="UTC")


# -- bad input and re-runs ------------------------------------------------------------------------------------
def test_an_empty_store_a_universe_without_bars_and_zero_weights_store_nothing(store):
    with pytest.raises(InvalidInputError, match=r"the store has no 1Day bars closed by 2024-06-04T09:30:00\+00:00 "
                                                r"\(looked back to 2023-05-07\): nothing to rank"):
        discover(store, now=NOW)
    rng = np.random.default_rng(8)
    store.upsert_bars(bars_of(random_walks(rng, 2)))
    with pytest.raises(InvalidInputError, match=r"the universe has no 1Day bars .*TSLA: no 1Day bars closed by .* "
                                                r"in the store"):
        discover(store, ["TSLA", "GME"], now=NOW)
    zero = dict.fromkeys(DEFAULT_WEIGHTS, 0.0)
    with pytest.raises(InvalidInputError, match="weights must not all be zero"):
        discover(store, now=NOW, weights=zero)
    with pytest.raises(InvalidInputError, match=r"weights: unknown component\(s\) \['alpha'\]"):
        discover(store, now=NOW, weights={"alpha": 1.0})
    with pytest.raises(InvalidInputError, match="weights: trend must be a finite number, got nan"):
        discover(store, now=NOW, weights={"trend": float("nan")})
    with pytest.raises(InvalidInputError, match=r"no symbol left to rank: R00: only 2 bar\(s\) of its own"):
        score_universe(bars_of(random_walks(rng, 1, 2)), min_bars=10)
    assert stored_rows(store) == 0


def test_weights_are_checked_and_scale_free():
    assert check_weights(None) == DEFAULT_WEIGHTS
    assert check_weights({"trend": 2}) == {**dict.fromkeys(DEFAULT_WEIGHTS, 0.0), "trend": 2.0}
    with pytest.raises(InvalidInputError, match="weights: trend must be a finite number, got True"):
        check_weights({"trend": True})
    rng = np.random.default_rng(9)
    bars = bars_of(random_walks(rng, 6))
    once = score_universe(bars, weights={"trend": 1.0, "volatility": -1.0})
    tenfold = score_universe(bars, weights={"trend": 10.0, "volatility": -10.0})
    assert once.ranking["score"].tolist() == tenfold.ranking["score"].tolist()
    # one component alone: the ranking is that component's order
    trend_only = score_universe(bars, weights={"trend": 1.0})
    tstats = [f["trend_tstat"] for f in trend_only.ranking["features"]]
    assert tstats == sorted(tstats, reverse=True)


def test_a_rerun_of_a_run_id_changes_nothing_and_top_n_keeps_the_best(store):
    rng = np.random.default_rng(10)
    store.upsert_bars(bars_of(random_walks(rng, 8)))
    first = discover(store, now=NOW, run_id="scheduled__1", dag_id="portfolio_discovery")
    before = store.latest_opportunities()
    again = discover(store, now=NOW, run_id="scheduled__1", dag_id="portfolio_discovery")
    after = store.latest_opportunities()
    assert first.stored == again.stored == 8 and stored_rows(store) == 8
    pd.testing.assert_frame_equal(before.drop(columns="created_at"), after.drop(columns="created_at"))
    best = discover(store, now=NOW, run_id="scheduled__1", top_n=3)
    assert best.stored == 3 and stored_rows(store) == 3 and best.scored == 8
    assert store.latest_opportunities()["symbol"].tolist() == first.top(3)
    summary = best.to_dict()
    assert json.loads(json.dumps(summary)) == summary and len(json.dumps(summary)) < 4000
    assert [row["symbol"] for row in summary["top"]] == first.top(3) and summary["run_id"] == "scheduled__1"
    assert discover(store, now=NOW, write=False).run_id is None
    assert discover(store, now=NOW).run_id == "discovery__2024-06-04T09:30:00+00:00"
