"""Forecasts and model evaluations: round trips, latest-run selection, replace semantics, atomicity, validation."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, inspect, select

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore, codecs, schema
from airflow_provider_portfolio.store.forecasts import ForecastTables
from tests.store.helpers import make_bars, make_evaluations, make_forecasts

SYMBOLS = ["AAPL", "BRK.B", "BTC/USD", "MSFT"]
MODELS = ["ssa", "garch", "last_value"]

#: The dtype name of the store's text columns (``dtype="str"``: ``str`` on pandas 3, ``object`` before).
_STR = str(pd.Series(["x"], dtype="str").dtype)
FORECAST_DTYPES = {
    "run_id": _STR, "model": _STR, "symbol": _STR, "timeframe": _STR, "step": "int64",
    "asof": "datetime64[ns, UTC]", "target_ts": "datetime64[ns, UTC]", "target": _STR, "point": "float64",
    "lower": "float64", "upper": "float64", "level": "float64", "variance": "float64", "backend": _STR,
    "device": _STR, "created_at": "datetime64[ns, UTC]",
}
EVALUATION_DTYPES = {
    "run_id": _STR, "model": _STR, "symbol": _STR, "timeframe": _STR, "asof": "datetime64[ns, UTC]",
    "horizon": "int64", "origins": "int64", "rmse": "float64", "mae": "float64",
    "directional_accuracy": "float64", "coverage": "float64", "baseline": _STR, "baseline_rmse": "float64",
    "skill": "float64", "label": _STR, "healthy": "bool", "weight": "float64", "backend": _STR, "device": _STR,
    "created_at": "datetime64[ns, UTC]",
}
FORECAST_ORDER = ["symbol", "model", "timeframe", "asof", "run_id", "step"]
EVALUATION_ORDER = ["symbol", "model", "timeframe", "asof", "run_id"]


def _as_read(frame: pd.DataFrame, dtypes: dict[str, str], order: list[str]) -> pd.DataFrame:
    """``frame`` as the store returns it: the table's columns (those ``frame`` has) and dtypes, sorted."""
    out = pd.DataFrame({
        name: (pd.to_datetime(frame[name], utc=True).dt.as_unit("ns") if dtype.startswith("datetime")
               else frame[name].astype(dtype))
        for name, dtype in dtypes.items() if name in frame
    })
    return out.sort_values(order, kind="stable").reset_index(drop=True)


def _forecasts(symbols=SYMBOLS, models=MODELS, horizon=3, **kwargs) -> pd.DataFrame:
    return make_forecasts(symbols, models, horizon, **kwargs)


def _evaluations(symbols=SYMBOLS, models=MODELS, **kwargs) -> pd.DataFrame:
    return make_evaluations(symbols, models, **kwargs)


def _stamp(frame: pd.DataFrame, created_at: str) -> pd.DataFrame:
    return frame.assign(created_at=pd.Timestamp(created_at, tz="UTC"))


def _counts(store: PortfolioStore) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar()
                     for t in (schema.forecasts, schema.model_evaluations))


def test_column_lists_follow_the_tables():
    assert schema.FORECAST_COLUMNS == tuple(FORECAST_DTYPES)
    assert schema.EVALUATION_COLUMNS == tuple(EVALUATION_DTYPES)


def test_round_trip_of_both_frames(migrated):
    fc = _forecasts()
    # awkward floats and text: full precision, a subnormal, the largest double, escapes and non-ASCII
    fc.loc[0, ["lower", "point", "upper", "level"]] = [-1.7976931348623157e308, 0.1 + 0.2, 1e300,
                                                        0.9999999999999999]
    fc.loc[1, "variance"] = 5e-324
    fc.loc[2, "device"] = "cuda:0 (NVIDIA H100) ✓\t\\N back\\slash\nnew line"
    fc["run_id"] = "scheduled__2024-03-01T21:00:00+00:00"
    ev = _evaluations(run_id="scheduled__2024-03-01T21:00:00+00:00")
    ev.loc[0, ["rmse", "skill"]] = [np.nextafter(0.02, 1.0), -12.5]
    before = pd.Timestamp.now(tz="UTC")
    assert migrated.write_forecasts(fc, ev) == (len(fc), len(ev)) == (36, 12)
    after = pd.Timestamp.now(tz="UTC")

    got_fc, got_ev = migrated.read_forecasts(), migrated.read_evaluations()
    assert dict(got_fc.dtypes.astype(str)) == FORECAST_DTYPES
    assert dict(got_ev.dtypes.astype(str)) == EVALUATION_DTYPES
    assert got_fc.created_at.nunique() == 1 and before.floor("us") <= got_fc.created_at[0] <= after
    assert (got_ev.created_at == got_fc.created_at[0]).all()  # one "now" per call
    pd.testing.assert_frame_equal(got_fc, _as_read(fc.assign(created_at=got_fc.created_at[0]), FORECAST_DTYPES,
                                                   FORECAST_ORDER))
    pd.testing.assert_frame_equal(got_ev, _as_read(ev.assign(created_at=got_ev.created_at[0]), EVALUATION_DTYPES,
                                                   EVALUATION_ORDER))
    assert list(got_fc[["symbol", "model", "step"]].itertuples(index=False))[:4] == [
        ("AAPL", "garch", 1), ("AAPL", "garch", 2), ("AAPL", "garch", 3), ("AAPL", "last_value", 1)]
    assert got_ev.label.isin(schema.EVALUATION_LABELS).all() and got_ev.rmse.isna().any()
    # NaN was stored as NULL, not as a float NaN
    with migrated.engine.connect() as conn:
        null_variance = conn.execute(select(func.count()).where(schema.forecasts.c.variance.is_(None))).scalar()
        null_rmse = conn.execute(select(func.count()).where(schema.model_evaluations.c.rmse.is_(None))).scalar()
    assert null_variance == fc.variance.isna().sum() > 0
    assert null_rmse == ev.rmse.isna().sum() > 0


def test_timestamps_in_other_forms_are_utc(migrated):
    fc = _forecasts(["AAPL"], ["ssa"])
    variants = [
        fc.assign(asof=fc["asof"].dt.tz_localize(None)),  # naive means UTC
        fc.assign(target_ts=fc.target_ts.dt.tz_convert("America/New_York")),
        fc.assign(asof=fc["asof"].astype(str), target_ts=fc.target_ts.dt.as_unit("s")),
        fc.assign(created_at="2024-03-01 22:00:00.000123+01:00"),
    ]
    for variant in variants:
        migrated.write_forecasts(variant)
        got = migrated.read_forecasts()
        pd.testing.assert_frame_equal(got.drop(columns="created_at"),
                                      _as_read(fc, FORECAST_DTYPES, FORECAST_ORDER))
    assert (got.created_at == pd.Timestamp("2024-03-01 21:00:00.000123", tz="UTC")).all()


def test_latest_picks_the_newest_asof_per_symbol_and_model(migrated):
    old = _stamp(_forecasts(run_id="r1", asof="2024-03-01"), "2024-03-01 22:00")
    new_ssa = _stamp(_forecasts(["AAPL", "MSFT"], ["ssa"], run_id="r2", asof="2024-03-04", seed=1),
                     "2024-03-04 22:00")
    late_but_older = _stamp(_forecasts(["AAPL"], ["ssa"], run_id="r3", asof="2024-02-28", seed=2),
                            "2024-03-10 22:00")
    for frame in (old, new_ssa, late_but_older):
        migrated.write_forecasts(frame, _stamp(_evaluations(frame.symbol.unique(), frame.model.unique(),
                                                            run_id=frame.run_id[0], asof=frame["asof"][0]),
                                               str(frame.created_at[0])))
    got = migrated.read_forecasts()
    runs = got.groupby(["symbol", "model"]).run_id.unique().map(list).to_dict()
    assert runs[("AAPL", "ssa")] == ["r2"] and runs[("MSFT", "ssa")] == ["r2"]
    assert runs[("AAPL", "garch")] == ["r1"] and runs[("BRK.B", "ssa")] == ["r1"]
    expected = pd.concat([old[~((old.model == "ssa") & old.symbol.isin(["AAPL", "MSFT"]))], new_ssa])
    pd.testing.assert_frame_equal(got, _as_read(expected, FORECAST_DTYPES, FORECAST_ORDER))
    assert got.groupby(["symbol", "model"]).size().eq(3).all()

    evals = migrated.read_evaluations()
    assert len(evals) == len(SYMBOLS) * len(MODELS)
    assert evals.set_index(["symbol", "model"]).run_id.to_dict()[("AAPL", "ssa")] == "r2"
    assert list(evals[["symbol", "model"]].itertuples(index=False)) == sorted(
        evals[["symbol", "model"]].itertuples(index=False))

    every = migrated.read_forecasts(latest=False)
    assert len(every) == len(old) + len(new_ssa) + len(late_but_older)
    pd.testing.assert_frame_equal(every, _as_read(pd.concat([old, new_ssa, late_but_older]), FORECAST_DTYPES,
                                                  FORECAST_ORDER))
    aapl_ssa = every[(every.symbol == "AAPL") & (every.model == "ssa")]
    assert list(dict.fromkeys(aapl_ssa.run_id)) == ["r3", "r1", "r2"]  # by asof within (symbol, model)
    assert len(migrated.read_evaluations(latest=False)) == len(SYMBOLS) * len(MODELS) + 3


def test_latest_ties_go_to_the_newest_created_at_then_the_greatest_run_id(migrated):
    def run(run_id, created_at, seed):
        return _stamp(_forecasts(["TSLA"], ["ssa"], run_id=run_id, asof="2024-03-01", seed=seed), created_at)

    migrated.write_forecasts(run("t-b", "2024-03-01 22:00", 1))
    migrated.write_forecasts(run("t-c", "2024-03-01 21:00", 2))  # written later, created earlier
    migrated.write_forecasts(run("t-a", "2024-03-01 22:00", 3))
    assert set(migrated.read_forecasts().run_id) == {"t-b"}
    migrated.write_forecasts(run("t-c", "2024-03-01 23:00", 2))  # a rerun of t-c: now the newest
    assert set(migrated.read_forecasts().run_id) == {"t-c"}


def test_filters_run_id_model_symbols_timeframe(migrated):
    r1 = _stamp(_forecasts(run_id="r1", asof="2024-03-01"), "2024-03-01 22:00")
    r2 = _stamp(_forecasts(run_id="r2", asof="2024-03-04", seed=1), "2024-03-04 22:00")
    intraday = _forecasts(["AAPL"], ["ssa"], run_id="r1", timeframe="5Min", asof="2024-03-01 15:55")
    migrated.write_forecasts(pd.concat([r1, intraday.assign(created_at=r1.created_at[0])]),
                             _evaluations(run_id="r1", asof="2024-03-01"))
    migrated.write_forecasts(r2, _evaluations(run_id="r2", asof="2024-03-04", seed=1))

    one_run = migrated.read_forecasts(run_id="r1")  # latest is ignored with a run id
    pd.testing.assert_frame_equal(one_run, _as_read(r1, FORECAST_DTYPES, FORECAST_ORDER))
    assert set(migrated.read_forecasts(run_id="r1", latest=False).run_id) == {"r1"}
    assert set(migrated.read_evaluations(run_id="r1").run_id) == {"r1"}
    assert migrated.read_forecasts().run_id.unique().tolist() == ["r2"]

    assert set(migrated.read_forecasts(model="garch").model) == {"garch"}
    assert set(migrated.read_forecasts(model=["garch", "ssa"]).model) == {"garch", "ssa"}
    assert set(migrated.read_evaluations(model=("last_value",)).model) == {"last_value"}
    assert migrated.read_forecasts(model="sarimax").empty and migrated.read_forecasts(model=[]).empty

    some = migrated.read_forecasts(["MSFT", "AAPL", "NOPE"], model="ssa")
    assert some.symbol.unique().tolist() == ["AAPL", "MSFT"] and len(some) == 6
    assert migrated.read_evaluations("BRK.B").symbol.unique().tolist() == ["BRK.B"]
    empty = migrated.read_forecasts(["NOPE"])
    assert empty.empty and dict(empty.dtypes.astype(str)) == FORECAST_DTYPES
    assert migrated.read_evaluations([]).columns.tolist() == list(schema.EVALUATION_COLUMNS)

    five = migrated.read_forecasts(timeframe="5Min")
    pd.testing.assert_frame_equal(five.drop(columns="created_at"),
                                  _as_read(intraday, FORECAST_DTYPES, FORECAST_ORDER))
    assert set(migrated.read_forecasts(timeframe=None).timeframe) == {"1Day", "5Min"}
    assert migrated.read_evaluations(timeframe="5Min").empty

    for bad in ({"model": 3}, {"run_id": 7}, {"timeframe": "1D"}, {"latest": "yes"}, {"symbols": 5}):
        with pytest.raises(InvalidInputError):
            migrated.read_forecasts(**bad)


def test_many_symbols_in_small_batches_and_query_chunks(migrated, monkeypatch):
    monkeypatch.setattr(codecs, "BATCH_ROWS", 7)
    monkeypatch.setattr(codecs, "SYMBOLS_PER_QUERY", 3)
    symbols = ["A", "AB", "ABC", "ABCD", "ABCDE", "BTC/USD", "BRK.B", "X"]
    r1 = _stamp(_forecasts(symbols, run_id="r1", asof="2024-03-01"), "2024-03-01 22:00")
    r2 = _stamp(_forecasts(symbols[:5], run_id="r2", asof="2024-03-04", seed=1), "2024-03-04 22:00")
    for frame in (r1, r2):
        assert migrated.write_forecasts(frame, _evaluations(symbols, run_id=frame.run_id[0], asof=frame["asof"][0])) \
            == (len(frame), len(symbols) * len(MODELS))
    pd.testing.assert_frame_equal(migrated.read_forecasts(symbols),
                                  _as_read(pd.concat([r2, r1[~r1.symbol.isin(symbols[:5])]]), FORECAST_DTYPES,
                                           FORECAST_ORDER))
    pd.testing.assert_frame_equal(migrated.read_forecasts(symbols, latest=False),
                                  _as_read(pd.concat([r1, r2]), FORECAST_DTYPES, FORECAST_ORDER))
    assert len(migrated.read_evaluations(symbols)) == len(symbols) * len(MODELS)


def test_a_rerun_replaces_only_its_keys(migrated):
    first = _stamp(_forecasts(horizon=5), "2024-03-01 22:00")
    migrated.write_forecasts(first, _evaluations())
    # the same run again, for one symbol, with a shorter horizon and other values
    rerun = _stamp(_forecasts(["MSFT"], horizon=3, seed=9), "2024-03-01 23:00")
    rerun_ev = _evaluations(["MSFT"], seed=9)
    assert migrated.write_forecasts(rerun, rerun_ev) == (9, 3)
    expected = pd.concat([first[first.symbol != "MSFT"], rerun])
    pd.testing.assert_frame_equal(migrated.read_forecasts(latest=False),
                                  _as_read(expected, FORECAST_DTYPES, FORECAST_ORDER))
    evals = migrated.read_evaluations(latest=False)
    assert len(evals) == len(SYMBOLS) * len(MODELS)
    msft = evals[evals.symbol == "MSFT"].reset_index(drop=True)
    pd.testing.assert_frame_equal(msft.drop(columns="created_at"),
                                  _as_read(rerun_ev, EVALUATION_DTYPES, EVALUATION_ORDER))
    # another model or run is another key: untouched
    assert migrated.write_forecasts(_forecasts(["MSFT"], ["ssa"], run_id="other")) == (3, 0)
    assert _counts(migrated) == (len(expected) + 3, len(SYMBOLS) * len(MODELS))


def test_a_key_in_either_frame_is_replaced_in_both_tables(migrated):
    migrated.write_forecasts(_forecasts(), _evaluations())
    # AAPL/ssa only in the new evaluations: its forecasts go; MSFT/ssa only in the new forecasts: its evaluation goes
    ev = _evaluations(["AAPL"], ["ssa"], seed=3)
    fc = _forecasts(["MSFT"], ["ssa"], seed=3)
    assert migrated.write_forecasts(fc, ev) == (3, 1)
    forecasts, evals = migrated.read_forecasts(latest=False), migrated.read_evaluations(latest=False)
    assert forecasts[(forecasts.symbol == "AAPL") & (forecasts.model == "ssa")].empty
    assert evals[(evals.symbol == "MSFT") & (evals.model == "ssa")].empty
    assert _counts(migrated) == (36 - 3, 12 - 1)
    # None is an empty frame: an unhealthy rerun with no forecast clears the key's stored forecasts
    assert migrated.write_forecasts(None, _evaluations(["BRK.B"], ["garch"], seed=4)) == (0, 1)
    assert _counts(migrated) == (33 - 3, 11)
    assert migrated.write_forecasts(_forecasts(["BTC/USD"], ["garch"], seed=4)) == (3, 0)
    assert _counts(migrated) == (30, 11 - 1)
    assert migrated.write_forecasts(_forecasts(["BTC/USD"], ["garch"], seed=4), _evaluations([], [])) == (3, 0)
    assert _counts(migrated) == (30, 10)


def test_writing_the_same_frames_twice_changes_nothing(migrated):
    fc, ev = _stamp(_forecasts(), "2024-03-01 22:00"), _stamp(_evaluations(), "2024-03-01 22:00")
    assert migrated.write_forecasts(fc, ev) == (36, 12)
    first = migrated.read_forecasts(latest=False), migrated.read_evaluations(latest=False)
    assert migrated.write_forecasts(fc.sample(frac=1.0, random_state=1), ev) == (36, 12)
    assert _counts(migrated) == (36, 12)
    pd.testing.assert_frame_equal(migrated.read_forecasts(latest=False), first[0])
    pd.testing.assert_frame_equal(migrated.read_evaluations(latest=False), first[1])
    # without created_at only the write time changes
    migrated.write_forecasts(fc.drop(columns="created_at"), ev.drop(columns="created_at"))
    assert _counts(migrated) == (36, 12)
    pd.testing.assert_frame_equal(migrated.read_forecasts(latest=False).drop(columns="created_at"),
                                  first[0].drop(columns="created_at"))


def test_empty_frames_write_nothing(migrated, store):
    empty = _forecasts().iloc[:0]
    assert migrated.write_forecasts(empty) == (0, 0)
    assert migrated.write_forecasts(pd.DataFrame(), pd.DataFrame()) == (0, 0)
    assert migrated.write_forecasts(None, None) == (0, 0)
    assert _counts(migrated) == (0, 0)


def _store_unchanged(store, forecasts, evaluations):
    pd.testing.assert_frame_equal(store.read_forecasts(latest=False),
                                  _as_read(forecasts, FORECAST_DTYPES, FORECAST_ORDER))
    pd.testing.assert_frame_equal(store.read_evaluations(latest=False),
                                  _as_read(evaluations, EVALUATION_DTYPES, EVALUATION_ORDER))


def test_a_failing_second_insert_leaves_nothing(migrated, monkeypatch):
    base_fc, base_ev = _stamp(_forecasts(), "2024-03-01 22:00"), _stamp(_evaluations(), "2024-03-01 22:00")
    migrated.write_forecasts(base_fc, base_ev)
    fc = _forecasts(seed=5)
    ev = _evaluations(seed=5)
    insert_rows = ForecastTables._insert_rows

    def insert_evaluations_twice(self, conn, rows):
        written = insert_rows(self, conn, rows)
        if rows.table is schema.model_evaluations:
            insert_rows(self, conn, rows)  # the primary key refuses the same rows again
        return written

    monkeypatch.setattr(ForecastTables, "_insert_rows", insert_evaluations_twice)
    with pytest.raises(StoreError, match="could not write forecasts") as info:
        migrated.write_forecasts(fc, ev)
    assert "unique" in str(info.value).lower() or "duplicate" in str(info.value).lower()
    _store_unchanged(migrated, base_fc, base_ev)  # the deletes and the forecast insert were rolled back


def test_a_database_error_midway_through_an_insert_leaves_nothing(migrated, monkeypatch):
    base_fc, base_ev = _stamp(_forecasts(), "2024-03-01 22:00"), _stamp(_evaluations(), "2024-03-01 22:00")
    migrated.write_forecasts(base_fc, base_ev)
    monkeypatch.setattr(codecs, "BATCH_ROWS", 7)
    insert_rows = ForecastTables._insert_rows

    def null_in_a_late_batch(self, conn, rows):
        if rows.table is schema.forecasts:
            rows.values["point"][-1] = None  # NOT NULL: the database refuses the last batch
        return insert_rows(self, conn, rows)

    monkeypatch.setattr(ForecastTables, "_insert_rows", null_in_a_late_batch)
    with pytest.raises(StoreError, match="could not write forecasts"):
        migrated.write_forecasts(_forecasts(seed=6), _evaluations(seed=6))
    _store_unchanged(migrated, base_fc, base_ev)


def _set(frame, row, **values):
    frame = frame.copy()
    for name, value in values.items():
        if name in frame and not isinstance(value, str) and frame[name].dtype.kind not in "Of":
            frame[name] = frame[name].astype(object)
        if name in frame and isinstance(value, str) and frame[name].dtype.kind in "fiMb":
            frame[name] = frame[name].astype(object)
        frame.loc[row, name] = value
    return frame


FORECAST_CASES = [
    (lambda f: f.drop(columns=["level", "backend"]), r"forecast frame lacks column\(s\) \['level', 'backend'\]"),
    (lambda f: _set(f, 3, run_id=""), r"column 'run_id' is empty at row 3"),
    (lambda f: _set(f, 3, run_id="r" * 251), r"column 'run_id' is longer than 250 characters at row 3"),
    (lambda f: _set(f, 4, model=None), r"column 'model' is missing at row 4"),
    (lambda f: _set(f, 5, symbol="aapl"), r"column 'symbol' is not written canonically \(write 'AAPL'\) at row 5"),
    (lambda f: _set(f, 5, symbol="NOT A TICKER"), r"column 'symbol' is not a ticker .* at row 5"),
    (lambda f: _set(f, 2, timeframe="1D"), r"column 'timeframe' is not a timeframe .* at row 2"),
    (lambda f: _set(f, 6, step=0), r"column 'step' must be >= 1 at row 6"),
    (lambda f: _set(f, 6, step=1.5), r"column 'step' is not an integer .* at row 6"),
    (lambda f: _set(f, 7, point=np.nan), r"column 'point' is missing \(NaN\) at row 7"),
    (lambda f: _set(f, 7, upper=np.inf), r"column 'upper' is infinite at row 7"),
    (lambda f: _set(f, 8, lower="low"), r"column 'lower' is not a number at row 8"),
    (lambda f: _set(f, 9, lower=f.point[9] + 1e-6), r"column 'lower' is above point at row 9"),
    (lambda f: _set(f, 9, upper=f.point[9] - 1e-6), r"column 'upper' is below point at row 9"),
    (lambda f: _set(f, 10, level=1.0), r"column 'level' must be > 0 and < 1 at row 10"),
    (lambda f: _set(f, 10, level=0.0), r"column 'level' must be > 0 and < 1 at row 10"),
    (lambda f: _set(f, 11, variance=-1.0), r"column 'variance' must be >= 0 at row 11"),
    (lambda f: _set(f, 11, variance=np.inf), r"column 'variance' is infinite \(use NaN"),
    (lambda f: _set(f, 12, asof="not a date"), r"column 'asof' is not a timestamp at row 12"),
    (lambda f: _set(f, 12, target_ts=pd.NaT), r"column 'target_ts' is missing \(NaT\) at row 12"),
    (lambda f: f.assign(asof=1_700_000_000), r"column 'asof' holds numbers, not timestamps"),
    (lambda f: f.assign(asof=f["asof"] + pd.Timedelta(nanoseconds=1)), r"column 'asof' is finer than a microsecond"),
    (lambda f: _set(f, 13, device=""), r"column 'device' is empty at row 13"),
    (lambda f: pd.concat([f, f.iloc[[4]]], ignore_index=True),
     r"duplicate key \(run_id, model, symbol, timeframe, step\) at row 36"),
    (lambda f: f.to_dict(), r"forecast frame must be a pandas DataFrame"),
]
EVALUATION_CASES = [
    (lambda e: e.drop(columns=["baseline"]), r"evaluation frame lacks column\(s\) \['baseline'\]"),
    (lambda e: _set(e, 3, horizon=0), r"column 'horizon' must be >= 1 at row 3"),
    (lambda e: _set(e, 3, origins=-1), r"column 'origins' must be >= 0 at row 3"),
    (lambda e: _set(e, 4, label="ok"), r"column 'label' is not one of .* at row 4"),
    (lambda e: _set(e, 5, healthy=None), r"column 'healthy' is missing at row 5"),
    (lambda e: _set(e, 5, healthy="yes"), r"column 'healthy' is not a boolean at row 5"),
    (lambda e: _set(e, 6, coverage=1.5), r"column 'coverage' must be >= 0 and <= 1 at row 6"),
    (lambda e: _set(e, 6, rmse=-0.1), r"column 'rmse' must be >= 0 at row 6"),
    (lambda e: _set(e, 7, skill=-np.inf), r"column 'skill' is infinite \(use NaN for an undefined value\) at row 7"),
    (lambda e: _set(e, 8, asof=None), r"column 'asof' is missing \(NaT\) at row 8"),
    (lambda e: pd.concat([e, e.iloc[[2]]], ignore_index=True),
     r"duplicate key \(run_id, model, symbol, timeframe\) at row 12"),
]


@pytest.mark.parametrize(
    ("which", "mutate", "message"),
    [("forecasts", m, msg) for m, msg in FORECAST_CASES] + [("evaluations", m, msg) for m, msg in EVALUATION_CASES],
    ids=[f"forecasts-{i}" for i in range(len(FORECAST_CASES))]
    + [f"evaluations-{i}" for i in range(len(EVALUATION_CASES))],
)
def test_bad_input_raises_before_anything_is_written(migrated, which, mutate, message):
    base_fc, base_ev = _stamp(_forecasts(), "2024-03-01 22:00"), _stamp(_evaluations(), "2024-03-01 22:00")
    migrated.write_forecasts(base_fc, base_ev)
    fc, ev = _forecasts(seed=7), _evaluations(seed=7)
    if which == "forecasts":
        fc = mutate(fc)
    else:
        ev = mutate(ev)
    with pytest.raises(InvalidInputError, match=message):
        migrated.write_forecasts(fc, ev)
    _store_unchanged(migrated, base_fc, base_ev)


def test_tiny_float_slack_on_the_interval_is_allowed(migrated):
    fc = _forecasts(["AAPL"], ["ssa"])
    fc.loc[0, "lower"] = fc.point[0] * (1 + 1e-13)
    fc.loc[1, "upper"] = fc.point[1] - 1e-12
    assert migrated.write_forecasts(fc) == (3, 0)


def test_unmigrated_and_version_1_stores(store, monkeypatch):
    assert store.read_forecasts().empty and store.read_evaluations(latest=False).empty
    assert list(store.read_forecasts().columns) == list(schema.FORECAST_COLUMNS)
    assert store.write_forecasts(_forecasts().iloc[:0]) == (0, 0)  # nothing to write: no I/O needed
    with pytest.raises(StoreError, match=r"no forecasts table \(schema version 0\); call migrate\(\) first"):
        store.write_forecasts(_forecasts())
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    assert store.migrate() == 1
    with pytest.raises(StoreError, match=r"schema version 1\); call migrate\(\)"):
        store.write_forecasts(None, _evaluations())
    assert store.schema_version() == 1


def test_migration_from_version_1_keeps_the_bars(store, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])  # a store made by the released version 1
    assert store.migrate() == 1
    bars = make_bars(["AAPL", "MSFT"], 10)
    store.upsert_bars(bars)
    with store.engine.connect() as conn:
        assert not inspect(conn).has_table("forecasts")
    monkeypatch.undo()

    latest = schema.latest_version()
    assert latest >= 3  # 3: the trading ledger
    assert store.migrate() == latest and store.schema_version() == latest
    assert store.migrate() == latest
    pd.testing.assert_frame_equal(store.read_bars(), bars)
    with store.engine.connect() as conn:
        insp = inspect(conn)
        described = conn.execute(select(schema.schema_version.c.version, schema.schema_version.c.description)
                                 .order_by(schema.schema_version.c.version)).all()
        shapes = {
            name: ([c["name"] for c in insp.get_columns(name)], insp.get_pk_constraint(name)["constrained_columns"],
                   {ix["name"]: ix["column_names"] for ix in insp.get_indexes(name)})
            for name in ("forecasts", "model_evaluations")
        }
    assert [tuple(r) for r in described][:3] == [
        (1, "create bars"), (2, "create forecasts and model_evaluations"),
        (3, "create the trading ledger: accounts, positions, orders, fills, equity_curve, trading_decisions")]
    assert [r[0] for r in described] == [m.version for m in schema.MIGRATIONS]  # every migration, each once
    assert shapes["forecasts"] == (list(schema.FORECAST_COLUMNS),
                                   ["run_id", "model", "symbol", "timeframe", "step"],
                                   {"ix_forecasts_symbol_model": ["symbol", "model", "timeframe", "asof"]})
    assert shapes["model_evaluations"] == (list(schema.EVALUATION_COLUMNS),
                                           ["run_id", "model", "symbol", "timeframe"],
                                           {"ix_model_evaluations_symbol_model": ["symbol", "model", "timeframe",
                                                                                  "asof"]})
    assert store.write_forecasts(_forecasts(), _evaluations()) == (36, 12)  # the same store object sees the tables


def test_five_hundred_symbols_write_rerun_and_read_back(migrated):
    # Desk scale: 500 symbols x 6 models x 5 steps, correct on a first write and a full rerun.
    symbols = [f"S{i:03d}" for i in range(500)]
    models = ["ssa", "samossa", "mssa", "garch", "sarimax", "ensemble"]
    fc, ev = make_forecasts(symbols, models, 5), make_evaluations(symbols, models)
    for _ in range(2):  # a first write, then a rerun that replaces every row
        assert migrated.write_forecasts(fc, ev) == (15_000, 3_000)
        got, evals = migrated.read_forecasts(), migrated.read_evaluations()
        assert len(got) == 15_000 and len(evals) == 3_000
    assert set(got["symbol"]) == set(symbols) and set(got["model"]) == set(models)


def _writer(url, frames, rounds, errors):
    store = PortfolioStore(url, busy_timeout_s=60)
    try:
        for _ in range(rounds):
            store.write_forecasts(*frames)
    except Exception as err:  # reported to the test
        errors.append(f"{type(err).__name__}: {err}")
    finally:
        store.dispose()


def test_concurrent_reruns_of_the_same_keys_never_mix(migrated, store_url):
    # Two writers replace the same keys with different horizons: each key ends up wholly one writer's.
    frames = [(_forecasts(horizon=h, seed=h), _evaluations(seed=h)) for h in (3, 5)]
    errors: list[str] = []
    threads = [threading.Thread(target=_writer, args=(store_url, f, 8, errors)) for f in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    got = migrated.read_forecasts()
    candidates = [_as_read(fc, FORECAST_DTYPES, FORECAST_ORDER) for fc, _ in frames]
    for (symbol, model), rows in got.drop(columns="created_at").groupby(["symbol", "model"]):
        mine = [c[(c.symbol == symbol) & (c.model == model)].reset_index(drop=True) for c in candidates]
        assert any(rows.reset_index(drop=True).equals(m) for m in mine), (symbol, model)
    assert len(migrated.read_evaluations()) == len(SYMBOLS) * len(MODELS)


@pytest.mark.postgres
def test_psycopg2_driver_round_trip(fresh_pg_url):
    import psycopg2  # noqa: F401 (the test extra installs psycopg2-binary)
    store = PortfolioStore(fresh_pg_url.replace("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert store.engine.dialect.driver == "psycopg2"
    store.migrate()
    fc, ev = _stamp(_forecasts(), "2024-03-01 22:00"), _stamp(_evaluations(), "2024-03-01 22:00")
    fc.loc[2, "device"] = "tab\there\\N"
    assert store.write_forecasts(fc, ev) == (36, 12)
    assert store.write_forecasts(fc, ev) == (36, 12)
    _store_unchanged(store, fc, ev)
    store.dispose()
