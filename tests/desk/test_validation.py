"""Signal validation, hand-checked: a forecast series and trading decisions with known outcomes give known hit rates,
errors, band coverage and confidence calibration; the days a run missed are filled by the next; a second run
validates nothing new; targets that have not closed wait; closed targets without a bar are retried; an empty store
gives a clear result; monitoring grades what was validated. Decisions on 30-minute bars nobody stores (the trader's)
are validated on bars fetched from the sources: closed bars only, never stored, the store's own bars first, and a
failing source leaves them missing until a later run.

The bars (AAPL, daily, log closes): Mon 3 June 2024 5.00, Tue 4: 5.02, Wed 5: 4.99, Thu 6: 5.03, Fri 7: 5.03,
Mon 10: 5.06. A daily bar closes at 16:00 New York (20:00 UTC).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from airflow_provider_portfolio.desk.health import Level
from airflow_provider_portfolio.desk.monitoring import HealthThresholds, monitor_desk
from airflow_provider_portfolio.desk.validation import calibration, recent_validation, validate_signals
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store.ledger import TradingLedger

UTC = timezone.utc
LOG_CLOSES = {"2024-06-03": 5.00, "2024-06-04": 5.02, "2024-06-05": 4.99, "2024-06-06": 5.03, "2024-06-07": 5.03,
              "2024-06-10": 5.06}
#: Tuesday 11 June, 02:05 New York: every bar above has closed.
AFTER = datetime(2024, 6, 11, 6, 5, tzinfo=UTC)
#: Wednesday 5 June, 02:05 New York: only Monday's and Tuesday's bars have closed.
EARLY = datetime(2024, 6, 5, 6, 5, tzinfo=UTC)
DAG = "portfolio_signal_validation"


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def load_bars(store: PortfolioStore, days=tuple(LOG_CLOSES)) -> None:
    close = np.exp([LOG_CLOSES[d] for d in days])
    store.upsert_bars(pd.DataFrame({"symbol": "AAPL", "timeframe": "1Day", "ts": [day(d) for d in days],
                                    "open": close, "high": close, "low": close, "close": close, "volume": 1000.0,
                                    "source": "test"}))


def forecast_rows(run_id: str, model: str, asof: str, steps: list[tuple[str, float, float, float]],
                  target: str = "log_close") -> list[dict]:
    return [{"run_id": run_id, "model": model, "symbol": "AAPL", "timeframe": "1Day", "step": i + 1,
             "asof": day(asof), "target_ts": day(t), "target": target, "point": point, "lower": lower,
             "upper": upper, "level": 0.9, "variance": None, "backend": "numpy", "device": "cpu"}
            for i, (t, point, lower, upper) in enumerate(steps)]


def load_forecasts(store: PortfolioStore) -> None:
    rows = (
        # ssa at Monday: step 1 5.01 in [4.98, 5.04] vs 5.02: error -0.01, inside, up/up: hit;
        # step 2 5.03 in [5.00, 5.06] vs 4.99: error 0.04, outside, up/down: miss;
        # step 3 5.02 in [4.95, 5.09] vs 5.03: error -0.01, inside, up/up: hit
        forecast_rows("fc1", "ssa", "2024-06-03", [("2024-06-04", 5.01, 4.98, 5.04), ("2024-06-05", 5.03, 5.00, 5.06),
                                                   ("2024-06-06", 5.02, 4.95, 5.09)])
        # ssa at Thursday (5.03): step 1 5.05 in [5.00, 5.10] vs 5.03: error 0.02, inside, no move: no verdict;
        # step 2 5.04 in [5.00, 5.05] vs 5.06: error -0.02, outside, up/up: hit
        + forecast_rows("fc2", "ssa", "2024-06-06", [("2024-06-07", 5.05, 5.00, 5.10),
                                                   ("2024-06-10", 5.04, 5.00, 5.05)])
        # garch at Monday, log returns: Tuesday's +0.02 vs 0.001 in [-0.01, 0.01]: error -0.019, outside;
        # Wednesday's -0.03 vs 0.0 in [-0.05, 0.05]: error 0.03, inside; no direction
        + forecast_rows("g1", "garch", "2024-06-03", [("2024-06-04", 0.001, -0.01, 0.01),
                                                      ("2024-06-05", 0.0, -0.05, 0.05)], target="log_return"))
    store.write_forecasts(pd.DataFrame(rows))


#: (bar, action, score, confidence): the next bar's close-to-close log return is +0.02, -0.03, +0.04, 0, +0.03:
#: hit, hit, hit, no verdict (no move), miss.
DECISIONS = [("2024-06-03", "buy", 0.5, 0.9), ("2024-06-04", "sell", -0.3, 0.3), ("2024-06-05", "hold", 0.2, 0.1),
             ("2024-06-06", "sell", -0.4, 0.7), ("2024-06-07", "sell", -0.6, 0.95)]


def load_decisions(store: PortfolioStore) -> None:
    ledger = TradingLedger(store)
    for i, (bar, action, score, confidence) in enumerate(DECISIONS):
        ledger.claim_decisions([{
            "dag_id": "trader", "symbol": "AAPL", "timeframe": "1Day", "bar_ts": day(bar), "run_key": "",
            "run_id": f"scheduled__{i}", "account": "simulated:default", "action": action, "score": score,
            "confidence": confidence, "price": 150.0, "current_qty": 0.0, "target_qty": 0.0, "order_qty": 0.0,
            "reason": "test", "error": None, "signals": {}}])


@pytest.fixture
def desk(store) -> PortfolioStore:
    load_bars(store)
    load_forecasts(store)
    load_decisions(store)
    return store


def _validations(store: PortfolioStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.signal_validations)).scalar()


# -- known outcomes -------------------------------------------------------------------------------------------
def test_known_outcomes_give_known_hit_rate_errors_coverage_and_calibration(desk):
    report = validate_signals(desk, now=AFTER, dag_id=DAG, run_id="scheduled__1")
    assert (report.status, report.validated, report.pending, report.missing) == (
        "ok", {"forecast": 7, "signal": 5}, {"forecast": 0, "signal": 0}, {"forecast": 0, "signal": 0})
    assert report.since == AFTER - timedelta(days=30) and report.symbols == 1
    ssa = report.sources["forecast:ssa"]
    # errors -0.01, 0.04, -0.01, 0.02, -0.02: MAE 0.10 / 5 = 0.02, RMSE sqrt(0.0026 / 5) = 0.0228035;
    # 3 hits of 4 verdicts; 3 of 5 inside a 90 % band: a shortfall of 0.3
    assert (ssa["n"], ssa["hit_n"], ssa["hit_rate"], ssa["covered_n"]) == (5, 4, 0.75, 5)
    assert ssa["mae"] == pytest.approx(0.02) and ssa["rmse"] == pytest.approx(math.sqrt(0.0026 / 5))
    assert ssa["coverage"] == pytest.approx(0.6) and ssa["level"] == pytest.approx(0.9)
    assert ssa["coverage_gap"] == pytest.approx(0.3) and ssa["target"] == "log_close"
    assert ssa["last_asof"] == "2024-06-06T00:00:00+00:00"
    garch = report.sources["forecast:garch"]
    # errors -0.019 and 0.03: MAE 0.0245, RMSE sqrt((0.000361 + 0.0009) / 2); one of two inside; no direction
    assert (garch["n"], garch["hit_n"], garch["hit_rate"], garch["coverage"], garch["target"]) == (
        2, 0, None, 0.5, "log_return")
    assert garch["mae"] == pytest.approx(0.0245) and garch["rmse"] == pytest.approx(math.sqrt(0.001261 / 2))
    signal = report.sources["signal:trader"]
    assert (signal["n"], signal["hit_n"], signal["hit_rate"], signal["coverage"], signal["mae"]) == (
        5, 4, 0.75, None, None)
    # confidences 0.9 (hit), 0.3 (hit), 0.1 (hit), 0.7 (no verdict: left out), 0.95 (miss) in five bins
    assert signal["calibration"] == [
        {"lower": 0.0, "upper": 0.2, "n": 1, "confidence": pytest.approx(0.1), "hit_rate": 1.0},
        {"lower": 0.2, "upper": 0.4, "n": 1, "confidence": pytest.approx(0.3), "hit_rate": 1.0},
        {"lower": 0.4, "upper": 0.6, "n": 0, "confidence": None, "hit_rate": None},
        {"lower": 0.6, "upper": 0.8, "n": 0, "confidence": None, "hit_rate": None},
        {"lower": 0.8, "upper": 1.0, "n": 2, "confidence": pytest.approx(0.925), "hit_rate": 0.5}]

    rows = desk.validations("signal").sort_values("asof")
    assert list(rows["actual"].round(10)) == [0.02, -0.03, 0.04, 0.0, 0.03]
    assert list(rows["target_ts"]) == [day(d) for d in ("2024-06-04", "2024-06-05", "2024-06-06", "2024-06-07",
                                                        "2024-06-10")]
    assert list(rows["hit"].astype("object")) == [True, True, True, pd.NA, False]
    fc = desk.validations("forecast", sources="ssa").sort_values(["asof", "step"])
    assert list(fc["covered"].astype(bool)) == [True, False, True, True, False]
    assert set(fc["run_id"]) == {"scheduled__1"}

    study = desk.latest_study("signal_validation")
    assert (study.study_id, study.status, study.ts, study.dag_id) == (f"{DAG}/scheduled__1", "ok", AFTER, DAG)
    assert study.summary["sources"]["forecast:ssa"]["hit_rate"] == 0.75
    points = {p.point: p for p in desk.study_points("signal_validation", study.study_id)}
    assert set(points) == {"forecast:ssa", "forecast:garch", "signal:trader", "forecast:ssa:AAPL",
                           "forecast:garch:AAPL", "signal:trader:AAPL"}
    assert points["forecast:ssa:AAPL"].metrics["mae"] == pytest.approx(0.02)
    assert points["signal:trader:AAPL"].params == {"kind": "signal", "source": "trader", "target": "log_return",
                                                   "symbol": "AAPL"}
    assert [s.source for s in recent_validation(desk, now=AFTER, kind="forecast")] == ["garch", "ssa"]
    assert recent_validation(desk, now=AFTER, days=2) == []  # nothing made in the last two days


def test_missed_days_are_filled_and_a_second_run_validates_nothing_new(desk):
    early = validate_signals(desk, now=EARLY, dag_id=DAG, run_id="scheduled__wed")
    # Wednesday 02:05: Tuesday's bar has closed (ssa and garch step 1, Monday's decision); Wednesday's bar is stored
    # but still forming, and Thursday's is ahead: left for later. Thursday's forecast does not exist yet.
    assert early.validated == {"forecast": 2, "signal": 1}
    assert early.pending == {"forecast": 3, "signal": 2}
    assert "left for a later day: 3 forecast, 2 signal not closed yet" in early.message
    # no run on Thursday, Friday or Monday: Tuesday's run validates all that was missed
    later = validate_signals(desk, now=AFTER, dag_id=DAG, run_id="scheduled__tue")
    assert later.validated == {"forecast": 5, "signal": 4} and later.pending == {"forecast": 0, "signal": 0}
    assert later.sources["forecast:ssa"]["n"] == 5 and later.sources["signal:trader"]["hit_rate"] == 0.75
    assert _validations(desk) == 12
    runs = desk.validations().groupby("run_id").size().to_dict()
    assert runs == {"scheduled__wed": 3, "scheduled__tue": 9}
    # again, and a retry of the same run: nothing new, the same figures, one study per run
    again = validate_signals(desk, now=AFTER, dag_id=DAG, run_id="manual__again")
    retry = validate_signals(desk, now=AFTER, dag_id=DAG, run_id="scheduled__tue")
    assert again.validated == retry.validated == {"forecast": 0, "signal": 0}
    assert again.sources == retry.sources == later.sources
    assert _validations(desk) == 12
    assert sorted(s.study_id for s in desk.studies("signal_validation")) == [
        f"{DAG}/manual__again", f"{DAG}/scheduled__tue", f"{DAG}/scheduled__wed"]


def test_a_closed_target_without_a_stored_bar_is_retried(store):
    load_bars(store, [d for d in LOG_CLOSES if d != "2024-06-10"])  # the ETL missed Monday 10 June
    load_forecasts(store)
    load_decisions(store)
    first = validate_signals(store, now=AFTER)
    assert first.missing == {"forecast": 1, "signal": 1} and first.validated == {"forecast": 6, "signal": 4}
    assert "1 forecast, 1 signal without a stored bar" in first.message
    load_bars(store, ["2024-06-10"])
    second = validate_signals(store, now=AFTER + timedelta(hours=1))
    assert second.missing == {"forecast": 0, "signal": 0} and second.validated == {"forecast": 1, "signal": 1}
    assert second.sources["forecast:ssa"]["hit_rate"] == 0.75


def test_the_window_symbols_and_kinds_bound_what_is_validated(desk):
    # 5.5 days back from Tuesday 11 June 06:05 UTC (Wednesday 18:05): Thursday's forecast, Thursday's and Friday's
    # decisions
    report = validate_signals(desk, now=AFTER, lookback_days=5.5, kinds=["signal", "forecast"])
    assert report.validated == {"forecast": 2, "signal": 2}
    assert validate_signals(desk, now=AFTER, symbols="MSFT").validated == {"forecast": 0, "signal": 0}
    only = validate_signals(desk, now=AFTER, kinds=["forecast"])
    assert only.validated == {"forecast": 5} and set(only.sources) == {"forecast:ssa", "forecast:garch"}


def test_an_empty_store_gives_a_clear_result(store):
    report = validate_signals(store, now=AFTER)
    assert (report.status, report.validated, report.sources, report.symbols) == (
        "insufficient_data", {"forecast": 0, "signal": 0}, {}, 0)
    assert report.message.startswith("no 1Day forecasts and trading decisions validated in the last 30 days "
                                     "(since 2024-05-12T06:05:00+00:00): nothing to validate yet")
    assert store.latest_study("signal_validation").status == "insufficient_data"
    assert report.to_dict()["status"] == "insufficient_data"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"now": datetime(2024, 6, 11)}, "now must be timezone-aware"),
    ({"lookback_days": 0}, "lookback_days must be a number of days > 0"),
    ({"kinds": ["forecasts"]}, "kinds must be a non-empty list among"),
    ({"symbols": ["AAPL", "not a ticker"]}, "not a ticker"),
    ({"timeframe": "1Week"}, "timeframe"),
    ({"calibration_bins": 0}, "calibration_bins must be a whole number from 1 to 50"),
    ({"run_id": ""}, "run_id must be non-empty text"),
])
def test_bad_input_is_refused_before_anything_is_written(desk, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        validate_signals(desk, **{"now": AFTER, **kwargs})
    assert _validations(desk) == 0 and desk.latest_study("signal_validation") is None


def test_calibration_bins():
    table = calibration([0.0, 0.19, 0.2, 0.5, 1.0, np.nan, 0.6], [1, 0, True, False, True, True, None], bins=2)
    # [0, 0.5): 0.0 (hit), 0.19 (miss), 0.2 (hit); [0.5, 1]: 0.5 (miss), 1.0 (hit); NaN and None left out
    assert table == [{"lower": 0.0, "upper": 0.5, "n": 3, "confidence": pytest.approx(0.13), "hit_rate": 2 / 3},
                     {"lower": 0.5, "upper": 1.0, "n": 2, "confidence": pytest.approx(0.75), "hit_rate": 0.5}]
    with pytest.raises(InvalidInputError, match="the same length"):
        calibration([0.5], [True, False])


# -- monitoring -----------------------------------------------------------------------------------------------
def checks(report) -> dict[str, object]:
    return {c.label: c for c in report.checks if c.name.startswith("validation_")}


def test_monitoring_grades_what_was_validated(desk):
    # before any validation: forecasts and decisions older than 3 days are stored: YELLOW
    [age] = checks(monitor_desk(desk, [], now=AFTER, write=False)).values()
    assert age.level is Level.YELLOW and "is portfolio_signal_validation running?" in age.message
    validate_signals(desk, now=AFTER, dag_id=DAG, run_id="scheduled__1")
    found = checks(monitor_desk(desk, [], now=AFTER + timedelta(hours=1), write=False,
                                thresholds={"min_validations": 4}))
    assert set(found) == {"validation_age", "validation_hit_rate[forecast:ssa]", "validation_coverage[forecast:ssa]",
                          "validation_coverage[forecast:garch]", "validation_hit_rate[signal:trader]"}
    assert (found["validation_age"].level, found["validation_age"].value) == (Level.GREEN, pytest.approx(1 / 24,
                                                                                                         abs=1e-3))
    assert (found["validation_hit_rate[forecast:ssa]"].level,
            found["validation_hit_rate[forecast:ssa]"].value) == (Level.GREEN, 0.75)
    # 60 % of the ssa bands held the outcome against 90 % nominal: a shortfall of 0.3 >= 0.15
    ssa = found["validation_coverage[forecast:ssa]"]
    assert (ssa.level, ssa.value) == (Level.YELLOW, pytest.approx(0.3))
    assert "band coverage 60.0% of 5 against nominal 90.0%" in ssa.message
    garch = found["validation_coverage[forecast:garch]"]  # two banded rows, four needed
    assert garch.level is Level.GREEN and garch.message.startswith("not graded: 2 banded forecast(s)")
    # the defaults need 50 verdicts: nothing graded yet
    default = checks(monitor_desk(desk, [], now=AFTER + timedelta(hours=1), write=False))
    assert {c.level for c in default.values()} == {Level.GREEN}
    assert default["validation_hit_rate[signal:trader]"].message.startswith("not graded: 4 direction(s)")
    # a stricter hit rate, and a validation four days old
    strict = checks(monitor_desk(desk, [], now=AFTER + timedelta(days=4), write=False,
                                 thresholds={"min_validations": 4, "signal_hit_rate_yellow": 0.8}))
    assert strict["validation_age"].level is Level.YELLOW and strict["validation_age"].value == pytest.approx(4)
    assert strict["validation_hit_rate[signal:trader]"].level is Level.YELLOW


def test_a_desk_with_nothing_to_validate_has_no_validation_check(store):
    load_bars(store)
    assert checks(monitor_desk(store, ["AAPL"], now=AFTER, write=False)) == {}


def test_validation_thresholds_are_checked():
    t = HealthThresholds.from_mapping('{"coverage_gap_yellow": 0.3, "validation_age_red": 7}')
    assert (t.coverage_gap_yellow, t.validation_age_yellow, t.validation_age_red) == (0.3, 3, 7)
    with pytest.raises(InvalidInputError, match="coverage_gap_yellow=0.5 is above coverage_gap_red=0.2"):
        HealthThresholds.from_mapping({"coverage_gap_yellow": 0.5, "coverage_gap_red": 0.2})
    with pytest.raises(InvalidInputError, match="min_validations must be a whole number >= 1"):
        HealthThresholds.from_mapping({"min_validations": 0})
    with pytest.raises(InvalidInputError, match="validation_age_yellow must be >= 0"):
        HealthThresholds.from_mapping({"validation_age_yellow": -1})


# -- decisions on bars nobody stores: the trader's 30-minute bars, fetched from the sources --------------------
#: AAPL's 30-minute bars of Tuesday 4 June 2024 (a session of 13:30-20:00 UTC), as log closes.
LOG_CLOSES_30 = {"13:30": 5.00, "14:00": 5.01, "14:30": 4.98, "15:00": 5.00, "15:30": 5.03}
#: MSFT's: its decision at 13:30 is followed by a fall of 0.02.
MSFT_30 = {"13:30": 6.00, "14:00": 5.98}
#: 11:45 New York: the 15:00 UTC bar closed at 15:30; the 15:30 bar is still forming (it closes at 16:00).
MIDDAY = datetime(2024, 6, 4, 15, 45, tzinfo=UTC)
#: (symbol, bar, action, score, confidence) as the cycle claims them. The next bar's close-to-close log return:
#: AAPL 13:30 -> 14:00 +0.01 (buy, hit), 14:00 -> 14:30 -0.03 (sell, hit), 14:30 -> 15:00 +0.02 (sell, miss),
#: 15:00 -> 15:30 (forming at MIDDAY: pending; +0.03 once closed: buy, hit); MSFT 13:30 -> 14:00 -0.02 (sell, hit).
DECISIONS_30 = [("AAPL", "13:30", "buy", 0.5, 0.8), ("AAPL", "14:00", "sell", -0.2, 0.6),
                ("AAPL", "14:30", "sell", -0.4, 0.7), ("AAPL", "15:00", "buy", 0.3, 0.9),
                ("MSFT", "13:30", "sell", -0.1, 0.5)]
TRADER = "portfolio_auto_trader"


def bar30(hhmm: str) -> pd.Timestamp:
    return pd.Timestamp(f"2024-06-04 {hhmm}", tz="UTC")


def bars30(symbol: str, log_closes: dict[str, float], source: str = "test") -> pd.DataFrame:
    close = np.exp(list(log_closes.values()))
    return pd.DataFrame({"symbol": symbol, "timeframe": "30Min", "ts": [bar30(t) for t in log_closes],
                         "open": close, "high": close, "low": close, "close": close, "volume": 1000.0,
                         "source": source})


class KnownBars:
    """A bar source serving the bars above (every one it has, the forming 15:30 bar included) and recording each
    call; the symbols in ``fail`` it cannot serve."""

    def __init__(self, name: str = "known", fail: tuple[str, ...] = ()) -> None:
        self.name, self.fail, self.calls = name, fail, []

    def get_bars(self, symbols, start, end, timeframe="1Day"):
        from airflow_provider_portfolio.exceptions import PartialBarsError

        self.calls.append((list(symbols), start, end, timeframe))
        frame = pd.concat([bars30("AAPL", LOG_CLOSES_30, self.name), bars30("MSFT", MSFT_30, self.name)])
        frame = frame[frame["symbol"].isin([s for s in symbols if s not in self.fail])]
        if any(s in self.fail for s in symbols):
            raise PartialBarsError(frame, {s: "no data for it" for s in symbols if s in self.fail})
        return frame


class DownSource:
    name = "down"

    def get_bars(self, symbols, start, end, timeframe="1Day"):
        from airflow_provider_portfolio.exceptions import SourceError

        raise SourceError("HTTP 503")


def load_decisions_30(store: PortfolioStore, decisions=tuple(DECISIONS_30)) -> None:
    ledger = TradingLedger(store)
    for i, (symbol, bar, action, score, confidence) in enumerate(decisions):
        ledger.claim_decisions([{
            "dag_id": TRADER, "symbol": symbol, "timeframe": "30Min", "bar_ts": bar30(bar), "run_key": "",
            "run_id": f"scheduled__{i}", "account": "simulated:default", "action": action, "score": score,
            "confidence": confidence, "price": 150.0, "current_qty": 0.0, "target_qty": 0.0, "order_qty": 0.0,
            "reason": "test", "error": None, "signals": {}}])


def stored_30min_bars(store: PortfolioStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.bars)
                            .where(schema.bars.c.timeframe == "30Min")).scalar()


def test_decisions_on_bars_nobody_stores_are_validated_on_the_sources_bars(store):
    load_decisions_30(store)
    source = KnownBars()
    report = validate_signals(store, now=MIDDAY, timeframe="30Min", kinds=["signal"], sources=[source],
                              dag_id=DAG, run_id="scheduled__30")
    # one batched call for the decisions whose bars the store lacks, over their dates
    assert source.calls == [(["AAPL", "MSFT"], pd.Timestamp("2024-06-04").date(),
                             pd.Timestamp("2024-06-04").date(), "30Min")]
    assert (report.validated, report.pending, report.missing) == ({"signal": 4}, {"signal": 1}, {"signal": 0})
    assert report.fetched == {"AAPL": "known", "MSFT": "known"} and report.fetch_failures == {}
    assert "4 signal row(s) validated on 30Min bars the store lacks, from known (AAPL, MSFT)" in report.message
    rows = store.validations("signal", timeframe="30Min").sort_values(["symbol", "asof"])
    assert list(rows["symbol"]) == ["AAPL", "AAPL", "AAPL", "MSFT"]
    assert list(rows["actual"].round(10)) == [0.01, -0.03, 0.02, -0.02]
    assert list(rows["reference"].round(10)) == [5.00, 5.01, 4.98, 6.00]
    assert list(rows["target_ts"]) == [bar30("14:00"), bar30("14:30"), bar30("15:00"), bar30("14:00")]
    assert list(rows["hit"].astype(bool)) == [True, True, False, True]
    signal = report.sources[f"signal:{TRADER}"]
    assert (signal["n"], signal["hit_n"], signal["hit_rate"]) == (4, 4, 0.75)
    assert stored_30min_bars(store) == 0  # the fetched bars are not stored
    assert store.latest_study("signal_validation").summary["fetched"] == {"AAPL": "known", "MSFT": "known"}

    # 12:05 New York: the 15:30 bar has closed; only the pending decision is fetched for and validated
    later = validate_signals(store, now=datetime(2024, 6, 4, 16, 5, tzinfo=UTC), timeframe="30Min",
                             kinds=["signal"], sources=[source])
    assert (later.validated, later.pending, later.missing) == ({"signal": 1}, {"signal": 0}, {"signal": 0})
    assert source.calls[1][0] == ["AAPL"]
    last = store.validations("signal", timeframe="30Min").sort_values("asof").iloc[-1]
    assert (last["asof"], round(last["actual"], 10), bool(last["hit"])) == (bar30("15:00"), 0.03, True)
    assert later.sources[f"signal:{TRADER}"]["hit_rate"] == 0.8
    # nothing left: a third run asks the sources for nothing
    assert validate_signals(store, now=datetime(2024, 6, 4, 17, tzinfo=UTC), timeframe="30Min", kinds=["signal"],
                            sources=[source]).validated == {"signal": 0}
    assert len(source.calls) == 2


def test_a_source_failure_leaves_the_decisions_missing_until_a_later_run(store):
    load_decisions_30(store)
    # MSFT fails on the only source; AAPL is served
    first = validate_signals(store, now=MIDDAY, timeframe="30Min", kinds=["signal"],
                             sources=[KnownBars(fail=("MSFT",))])
    assert (first.validated, first.pending, first.missing) == ({"signal": 3}, {"signal": 1}, {"signal": 1})
    assert first.fetched == {"AAPL": "known"}
    assert first.fetch_failures == {"MSFT": "no source could serve MSFT: known: no data for it"}
    assert "1 signal without a stored bar (nor, for signals, a fetched one)" in first.message
    assert "no source served 1 symbol(s): no source could serve MSFT: known: no data for it" in first.message
    assert first.to_dict()["fetch_failures"] == ["MSFT"]
    # every source down: nothing fails, everything closed stays missing
    down = validate_signals(store, now=MIDDAY, timeframe="30Min", kinds=["signal"], sources=[DownSource()])
    assert (down.validated, down.missing, down.fetched) == ({"signal": 0}, {"signal": 1}, {})
    assert down.fetch_failures == {"MSFT": "no source could serve MSFT: down: SourceError: HTTP 503"}
    # the next run fails over to a working source and validates MSFT
    again = validate_signals(store, now=MIDDAY, timeframe="30Min", kinds=["signal"],
                             sources=[DownSource(), KnownBars()])
    assert (again.validated, again.missing, again.fetched) == ({"signal": 1}, {"signal": 0}, {"MSFT": "known"})
    msft = store.validations("signal", symbols=["MSFT"], timeframe="30Min")
    assert list(msft["actual"].round(10)) == [-0.02] and list(msft["hit"].astype(bool)) == [True]
    assert stored_30min_bars(store) == 0


def test_without_sources_the_stored_bars_alone_are_read(store):
    load_decisions_30(store)
    report = validate_signals(store, now=MIDDAY, timeframe="30Min", kinds=["signal"])
    assert (report.validated, report.missing, report.fetched) == ({"signal": 0}, {"signal": 4}, {})
    assert "4 signal without a stored bar" in report.message and "fetched" not in report.message


def test_the_stores_own_bars_win(store):
    # the store holds AAPL's 13:30 and 14:00 bars (other closes than the source's) and not the later ones
    store.upsert_bars(bars30("AAPL", {"13:30": 5.00, "14:00": 4.99}))
    load_decisions_30(store, DECISIONS_30[:3])
    source = KnownBars()
    report = validate_signals(store, now=MIDDAY, timeframe="30Min", kinds=["signal"], sources=[source])
    assert report.validated == {"signal": 3} and report.fetched == {"AAPL": "known"}
    rows = store.validations("signal", timeframe="30Min").sort_values("asof")
    # 13:30 -> 14:00 from the store: -0.01, a miss for the buy; the 14:00 decision lacks its next bar in the store,
    # so both of its bars come from the source (5.01 -> 4.98: -0.03), never the store's 14:00 against the source's
    # 14:30; 14:30 -> 15:00 from the source: +0.02
    assert list(rows["actual"].round(10)) == [-0.01, -0.03, 0.02]
    assert list(rows["reference"].round(10)) == [5.00, 5.01, 4.98]
    assert list(rows["hit"].astype(bool)) == [False, True, False]
    assert source.calls == [(["AAPL"], pd.Timestamp("2024-06-04").date(), pd.Timestamp("2024-06-04").date(),
                             "30Min")]
    assert stored_30min_bars(store) == 2


class DailyBars:
    """A bar source serving AAPL's daily bars above."""

    name = "daily"

    def get_bars(self, symbols, start, end, timeframe="1Day"):
        close = np.exp(list(LOG_CLOSES.values()))
        return pd.DataFrame({"symbol": "AAPL", "timeframe": "1Day", "ts": [day(d) for d in LOG_CLOSES],
                             "open": close, "high": close, "low": close, "close": close, "volume": 1000.0})


def test_forecasts_read_stored_bars_only_while_decisions_fill_an_etl_gap_from_the_sources(store):
    load_bars(store, [d for d in LOG_CLOSES if d != "2024-06-10"])  # the ETL missed Monday 10 June
    load_forecasts(store)
    load_decisions(store)
    report = validate_signals(store, now=AFTER, sources=[DailyBars()])
    # ssa's step 2 at Thursday waits for the stored bar; Friday's decision is validated on the source's Friday and
    # Monday bars (5.03 -> 5.06: +0.03, a miss for the sell)
    assert report.missing == {"forecast": 1, "signal": 0} and report.validated == {"forecast": 6, "signal": 5}
    assert report.fetched == {"AAPL": "daily"}
    rows = store.validations("signal").sort_values("asof")
    assert list(rows["actual"].round(10)) == [0.02, -0.03, 0.04, 0.0, 0.03]
    assert report.sources["signal:trader"]["hit_rate"] == 0.75


def test_sources_must_be_bar_sources(store):
    load_decisions_30(store)
    with pytest.raises(InvalidInputError, match="not a market-data source"):
        validate_signals(store, now=MIDDAY, timeframe="30Min", sources=[object()])
    with pytest.raises(InvalidInputError, match="sources must be a list of market-data sources"):
        validate_signals(store, now=MIDDAY, timeframe="30Min", sources="synthetic")
    assert _validations(store) == 0 and store.latest_study("signal_validation") is None
