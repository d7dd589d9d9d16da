"""Synthetic datasets: each profile's story, price levels, calendar bars that pass the quality gate, determinism,
atomic writes and the ``latest`` pointer, pruning, the dataset as a bar source, and bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError, PartialBarsError, SourceError, StoreError
from airflow_provider_portfolio.market import datasets
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, empty_bars
from airflow_provider_portfolio.market.calendar import MarketCalendar, calendar_for_symbol
from airflow_provider_portfolio.market.datasets import (
    LATEST,
    PROFILES,
    DatasetSource,
    generate_dataset,
    latest_dataset_id,
    list_datasets,
    price_level,
    prune_datasets,
    read_dataset,
    refresh_datasets,
    write_dataset,
)
from airflow_provider_portfolio.market.quality import validate_bars
from airflow_provider_portfolio.market.sources import BarSource, FailoverChain, NewsSource

UTC = timezone.utc
EQUITIES = ["AAPL", "MSFT", "SPY", "JPM"]
CRYPTO = ["BTC/USD", "ETH/USD"]
SYMBOLS = EQUITIES + CRYPTO
START, END = "2023-01-01", "2024-12-31"
N_DAYS = (pd.Timestamp(END) - pd.Timestamp(START)).days + 1
NOW = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)  # a Monday, 01:00 New York


def make(profile: str, seed: int = 7, symbols=SYMBOLS, **kwargs) -> datasets.Dataset:
    return generate_dataset(f"{profile}-test", profile=profile, symbols=symbols, start=kwargs.pop("start", START),
                            end=kwargs.pop("end", END), seed=seed, created_at=NOW, **kwargs)


@pytest.fixture(scope="module")
def generated() -> dict[str, datasets.Dataset]:
    return {name: make(name) for name in PROFILES}


def closes(ds: datasets.Dataset, symbol: str) -> pd.Series:
    rows = ds.bars[ds.bars["symbol"] == symbol]
    return pd.Series(rows["close"].to_numpy(), index=rows["ts"].dt.tz_localize(None))


def log_returns(ds: datasets.Dataset, symbol: str) -> pd.Series:
    return np.log(closes(ds, symbol)).diff().dropna()


def annual_vol(returns: pd.Series, symbol: str) -> float:
    return float(returns.std() * math.sqrt(365 if "/" in symbol else 252))


def dates_of(events, kind: str, key: str = "date") -> list[pd.Timestamp]:
    return [pd.Timestamp(e[key]) for e in events if e["event"] == kind]


# -- every profile ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", list(PROFILES))
def test_bars_are_canonical_on_calendar_sessions_and_pass_the_quality_gate(generated, profile):
    ds = generated[profile]
    bars = ds.bars
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert bars.dtypes.to_dict() == empty_bars().dtypes.to_dict()
    assert set(bars["timeframe"]) == {"1Day"} and set(bars["source"]) == {"synthetic"}
    for symbol in SYMBOLS:
        expected = calendar_for_symbol(symbol).bar_index(START, END, "1Day")
        got = pd.DatetimeIndex(bars.loc[bars["symbol"] == symbol, "ts"])
        assert list(got) == list(expected), symbol
        assert ds.manifest.rows[symbol] == len(expected)
    passed, errors = validate_bars(bars, calendar_for=calendar_for_symbol)
    assert errors == {} and len(passed) == len(bars)
    assert bars[["open", "high", "low", "close", "volume"]].gt(0).all().all()


def test_price_levels_are_the_ones_a_user_knows():
    ds = make("calm", symbols=["AAPL", "MSFT", "SPY", "BTC/USD", "DOGE/USD", "ZQXW", "ABC/USD"])
    first = ds.bars.groupby("symbol")["open"].first()
    assert first["AAPL"] == 190.0 and first["MSFT"] == 420.0 and first["SPY"] == 520.0
    assert first["BTC/USD"] == 60_000.0 and first["DOGE/USD"] == 0.15
    assert 20 <= first["ZQXW"] <= 400 and 0.5 <= first["ABC/USD"] <= 2000
    assert price_level("ZQXW") == float(f"{price_level('ZQXW'):.3g}") == first["ZQXW"]
    # Cents, and four significant digits below $1.
    aapl = ds.bars.loc[ds.bars["symbol"] == "AAPL", ["open", "high", "low", "close"]].to_numpy()
    assert np.array_equal(aapl, np.round(aapl, 2))
    doge = ds.bars.loc[ds.bars["symbol"] == "DOGE/USD", "close"].to_numpy()
    assert np.array_equal(doge, np.round(doge, 4)) and not np.array_equal(doge, np.round(doge, 2))


def test_a_seed_gives_the_same_bars_and_checksum_and_another_seed_other_bars(tmp_path):
    one, two = make("jumps", seed=3), make("jumps", seed=3)
    pd.testing.assert_frame_equal(one.bars, two.bars)
    assert one.manifest.events == two.manifest.events
    a = write_dataset(tmp_path / "a", one).manifest.checksum
    b = write_dataset(tmp_path / "b", two).manifest.checksum
    assert a == b and len(a) == 64
    other = make("jumps", seed=4)
    assert not np.array_equal(one.bars["close"].to_numpy(), other.bars["close"].to_numpy())
    assert one.manifest.events != other.manifest.events


def test_intraday_bars_agree_with_the_daily_bars_and_pass_the_gate():
    kwargs = {"symbols": ["AAPL", "BTC/USD"], "start": "2024-05-01", "end": "2024-06-07"}
    intraday, daily = make("crash", timeframe="15Min", **kwargs), make("crash", **kwargs)
    bars = intraday.bars
    assert set(bars["timeframe"]) == {"15Min"}
    for symbol in ("AAPL", "BTC/USD"):
        expected = calendar_for_symbol(symbol).bar_index("2024-05-01", "2024-06-07", "15Min")
        assert list(bars.loc[bars["symbol"] == symbol, "ts"]) == list(expected)
    assert validate_bars(bars, calendar_for=calendar_for_symbol)[1] == {}
    # New York sessions and UTC days both lie within one UTC date.
    per_day = bars.assign(day=bars["ts"].dt.floor("D")).groupby(["symbol", "day"]).agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last")).reset_index()
    merged = daily.bars.merge(per_day, left_on=["symbol", "ts"], right_on=["symbol", "day"], suffixes=("", "_i"))
    assert len(merged) == len(daily.bars)
    for column in ("open", "high", "low", "close"):
        assert (merged[column] == merged[f"{column}_i"]).all(), column


# -- each profile's story -----------------------------------------------------------------------------------
def test_calm_is_quiet(generated):
    ds = generated["calm"]
    for symbol in SYMBOLS:
        r = log_returns(ds, symbol)
        limit = 0.12 if symbol in EQUITIES else 0.30  # documented 10% (crypto 25%)
        assert annual_vol(r, symbol) < limit, symbol
        assert r.abs().max() < 4.2 * limit / math.sqrt(365 if "/" in symbol else 252), symbol
    assert ds.manifest.events == ()


def test_trending_drifts_up(generated):
    ds = generated["trending"]
    for symbol in SYMBOLS:
        log_close = np.log(closes(ds, symbol).to_numpy())
        assert log_close[-1] - log_close[0] > 0.2, symbol
        assert np.polyfit(np.arange(len(log_close)), log_close, 1)[0] > 0, symbol


def test_crash_drops_the_documented_size_on_the_documented_day(generated):
    ds = generated["crash"]
    (event,) = ds.manifest.events
    assert event["event"] == "crash" and event["sessions"] == 5
    assert (event["drop"], event["crypto_drop"]) == (0.30, 0.45)
    target = pd.Timestamp(START) + pd.Timedelta(days=int(0.6 * (N_DAYS - 1)))
    common = MarketCalendar("XNYS").sessions(target, END).index
    assert pd.Timestamp(event["date"]) == common[0]  # the first session of every symbol on or after 60%
    for symbol in SYMBOLS:
        c = closes(ds, symbol)
        at = c.index.get_loc(pd.Timestamp(event["date"]))
        drop = event["crypto_drop"] if "/" in symbol else event["drop"]
        assert c.iloc[at + 4] / c.iloc[at - 1] == pytest.approx(1 - drop, rel=1e-3), symbol
        assert c.iloc[at] / c.iloc[at - 1] == pytest.approx((1 - drop) ** 0.35, rel=1e-3), symbol  # the worst day
        peak = c.iloc[: at + 5].cummax()
        assert (1 - c.iloc[: at + 5] / peak).max() >= drop - 1e-3, symbol
        r = log_returns(ds, symbol)
        before, after = r.iloc[: at - 1], r.iloc[at + 4 :]
        assert annual_vol(after, symbol) > 1.5 * annual_vol(before, symbol), symbol


def test_regime_switch_alternates_calm_and_stressed_volatility(generated):
    ds = generated["regime_switch"]
    regimes = [e for e in ds.manifest.events if e["event"] == "regime"]
    assert [r["state"] for r in regimes] == (["calm", "stressed"] * len(regimes))[: len(regimes)]
    assert len(regimes) >= 4 and regimes[0]["start"] == START and regimes[-1]["end"] == END
    for a, b in zip(regimes, regimes[1:]):
        assert pd.Timestamp(b["start"]) - pd.Timestamp(a["end"]) == pd.Timedelta(days=1)
    for symbol in SYMBOLS:
        r = log_returns(ds, symbol)
        stressed = np.zeros(len(r), dtype=bool)
        for regime in regimes:
            if regime["state"] == "stressed":
                stressed |= (r.index >= pd.Timestamp(regime["start"])) & (r.index <= pd.Timestamp(regime["end"]))
        assert annual_vol(r[stressed], symbol) > 2 * annual_vol(r[~stressed], symbol), symbol


def test_correlated_shocks_hit_every_symbol_on_the_same_days(generated):
    ds = generated["correlated_shocks"]
    shocks = [e for e in ds.manifest.events if e["event"] == "shock"]
    assert len(shocks) == N_DAYS // 30
    assert sum(s["move"] < 0 for s in shocks) > len(shocks) / 2
    returns = pd.DataFrame({symbol: log_returns(ds, symbol) for symbol in SYMBOLS}).dropna()  # common sessions
    for shock in shocks:
        day = returns.loc[pd.Timestamp(shock["date"])]
        assert (np.sign(day) == np.sign(shock["move"])).all(), shock
        assert (day.abs() > 0.02).all(), shock
    corr = returns.corr().to_numpy()
    assert corr[np.triu_indices(len(SYMBOLS), 1)].min() > 0.6


def test_jumps_come_in_the_documented_number(generated):
    ds = generated["jumps"]
    jumps = [e for e in ds.manifest.events if e["event"] == "jump"]
    for symbol in SYMBOLS:
        r = log_returns(ds, symbol)
        mine = [e for e in jumps if e["symbol"] == symbol]
        per_year = 365 if "/" in symbol else 252
        assert len(mine) == max(1, round((len(r) + 1) * 4 / per_year)), symbol
        half_smallest = 0.05 if symbol in EQUITIES else 0.10
        assert sorted(r.index[r.abs() > half_smallest]) == sorted(pd.Timestamp(e["date"]) for e in mine), symbol
        for e in mine:
            assert 0.10 <= abs(e["move"]) / (2 if "/" in symbol else 1) <= 0.15


# -- files --------------------------------------------------------------------------------------------------
def test_a_written_dataset_reads_back_with_its_manifest(tmp_path, generated):
    ds = generated["crash"]
    result = write_dataset(tmp_path, ds)
    assert result.status == "written"
    folder = tmp_path / "crash-test"
    assert sorted(p.name for p in folder.iterdir()) == ["bars.csv.gz", "manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    with gzip.open(folder / "bars.csv.gz", "rb") as gz:
        assert manifest["checksum"] == hashlib.sha256(gz.read()).hexdigest()
    assert manifest["profile"] == "crash" and manifest["seed"] == 7 and manifest["symbols"] == SYMBOLS
    assert (manifest["start"], manifest["end"], manifest["timeframe"]) == (START, END, "1Day")
    assert manifest["rows"] == dict(ds.manifest.rows) and manifest["total_rows"] == len(ds.bars)
    assert manifest["created_at"] == "2025-01-06T06:00:00+00:00" and manifest["events"][0]["event"] == "crash"
    back = read_dataset(tmp_path, "crash-test")
    pd.testing.assert_frame_equal(back.bars, ds.bars)
    assert back.manifest == result.manifest
    assert [m.dataset_id for m in list_datasets(tmp_path)] == ["crash-test"]
    assert write_dataset(tmp_path, ds).status == "unchanged"


def test_refresh_writes_every_profile_points_latest_at_the_first_and_reruns_change_nothing(tmp_path):
    kwargs = {"profiles": ["crash", "calm"], "symbols": ["AAPL", "BTC/USD"], "start": "2024-01-01",
              "end": "2024-06-30", "seed": 1, "now": NOW}
    report = refresh_datasets(tmp_path, **kwargs)
    assert report.latest == "crash-20250106" and report.previous is None
    assert [(d["dataset_id"], d["status"]) for d in report.datasets] == [("crash-20250106", "written"),
                                                                         ("calm-20250106", "written")]
    assert (tmp_path / LATEST).read_text().strip() == "crash-20250106" == latest_dataset_id(tmp_path)
    assert read_dataset(tmp_path).manifest.profile == "crash"
    assert len(json.dumps(report.to_dict())) < 2000
    again = refresh_datasets(tmp_path, **kwargs)
    assert [d["status"] for d in again.datasets] == ["unchanged", "unchanged"] and again.previous == "crash-20250106"
    assert sorted(os.listdir(tmp_path)) == ["calm-20250106", "crash-20250106", "latest"]


def test_a_failure_mid_write_leaves_no_dataset_and_latest_unchanged(tmp_path, monkeypatch):
    kwargs = {"symbols": ["AAPL"], "start": "2024-01-01", "end": "2024-03-31", "seed": 1}
    refresh_datasets(tmp_path, profiles=["calm"], now=NOW - timedelta(days=7), **kwargs)
    before = sorted(os.listdir(tmp_path))
    assert latest_dataset_id(tmp_path) == "calm-20241230"

    def broken(path, data):
        Path(path).write_text('{"half": ')  # a manifest half written when the disk filled
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets, "_write_json", broken)
    with pytest.raises(StoreError, match="No space left on device"):
        refresh_datasets(tmp_path, profiles=["calm"], now=NOW, **kwargs)
    assert sorted(os.listdir(tmp_path)) == before  # no dataset, no temporary folder
    assert latest_dataset_id(tmp_path) == "calm-20241230"
    monkeypatch.undo()

    # The second profile's bars fail: the first is complete under its id, latest still the old one.
    calls = []
    real = datasets._write_bars

    def second_fails(path, bars):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real(path, bars)

    monkeypatch.setattr(datasets, "_write_bars", second_fails)
    with pytest.raises(StoreError, match="jumps-20250106"):
        refresh_datasets(tmp_path, profiles=["calm", "jumps"], now=NOW, **kwargs)
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "calm-20250106"])
    assert read_dataset(tmp_path, "calm-20250106").manifest.total_rows > 0
    assert latest_dataset_id(tmp_path) == "calm-20241230"


def test_pruning_keeps_the_newest_of_each_profile_and_always_latest(tmp_path):
    kwargs = {"symbols": ["AAPL"], "start": "2024-01-01", "end": "2024-03-31", "seed": 1, "keep": 10}
    for week in range(4):
        refresh_datasets(tmp_path, profiles=["calm", "trending"], now=NOW + timedelta(days=7 * week), **kwargs)
    ids = [m.dataset_id for m in list_datasets(tmp_path)]
    assert len(ids) == 8 and latest_dataset_id(tmp_path) == "calm-20250127"
    (tmp_path / LATEST).write_text("calm-20250106\n")  # a user pinned an old one
    removed = prune_datasets(tmp_path, keep=2)
    assert sorted(removed) == ["calm-20250113", "trending-20250106", "trending-20250113"]
    assert sorted(os.listdir(tmp_path)) == ["calm-20250106", "calm-20250120", "calm-20250127", "latest",
                                            "trending-20250120", "trending-20250127"]
    report = refresh_datasets(tmp_path, profiles=["trending"], now=NOW + timedelta(days=28), **{**kwargs, "keep": 1})
    assert report.latest == "trending-20250203" and report.previous == "calm-20250106"
    assert sorted(report.pruned) == ["calm-20250106", "calm-20250120", "trending-20250120", "trending-20250127"]
    with pytest.raises(InvalidInputError, match="keep"):
        prune_datasets(tmp_path, keep=0)


def test_a_corrupt_or_missing_dataset_is_a_store_error(tmp_path, generated):
    with pytest.raises(StoreError, match="no 'latest' dataset"):
        read_dataset(tmp_path)
    write_dataset(tmp_path, generated["calm"])
    with pytest.raises(StoreError, match="no dataset 'nope'.*calm-test"):
        read_dataset(tmp_path, "nope")
    path = tmp_path / "calm-test" / "bars.csv.gz"
    with gzip.open(path, "rb") as gz:
        data = gz.read()
    with gzip.open(path, "wb") as gz:
        gz.write(data.replace(b"190.0", b"191.0", 1))
    with pytest.raises(StoreError, match="corrupt"):
        read_dataset(tmp_path, "calm-test")
    with pytest.raises(StoreError, match="other bars"):
        write_dataset(tmp_path, make("calm", seed=99))
    assert write_dataset(tmp_path, make("calm", seed=99), overwrite=True).status == "replaced"
    assert read_dataset(tmp_path, "calm-test").manifest.seed == 99


# -- the dataset as a source --------------------------------------------------------------------------------
def test_the_dataset_source_serves_the_same_bars_back(tmp_path, generated):
    ds = generated["regime_switch"]
    write_dataset(tmp_path, ds)
    (tmp_path / LATEST).write_text("regime_switch-test\n")
    source = DatasetSource(tmp_path)
    assert isinstance(source, BarSource) and isinstance(source, NewsSource)
    assert source.name == "dataset:regime_switch-test"
    served = source.get_bars(SYMBOLS, START, END)
    assert set(served["source"]) == {"dataset:regime_switch-test"}
    pd.testing.assert_frame_equal(served.drop(columns="source"), ds.bars.drop(columns="source"))
    part = source.get_bars("AAPL", "2024-03-01", "2024-03-31")
    expected = ds.bars[(ds.bars["symbol"] == "AAPL") & ds.bars["ts"].between("2024-03-01", "2024-03-31")]
    assert list(part["close"]) == list(expected["close"])
    assert len(part) == len(MarketCalendar("XNYS").sessions("2024-03-01", "2024-03-31")) == 20  # Good Friday
    chain = FailoverChain([source])
    assert chain.fetch("BTC/USD", "2024-12-01", "2024-12-31").source == source.name
    with pytest.raises(PartialBarsError) as err:
        source.get_bars(["AAPL", "TSLA"], "2024-03-01", "2024-03-31")
    assert set(err.value.failures) == {"TSLA"} and set(err.value.frame["symbol"]) == {"AAPL"}
    with pytest.raises(SourceError, match="TSLA"):
        source.get_bars("TSLA", "2024-03-01", "2024-03-31")
    with pytest.raises(SourceError, match="holds 1Day bars"):
        source.get_bars("AAPL", "2024-03-01", "2024-03-31", "1Hour")
    with pytest.raises(SourceError, match="covers 2023-01-01..2024-12-31"):
        source.get_bars("AAPL", "2025-01-02", "2025-01-31")
    news = source.get_news(["AAPL"], "2024-03-01", "2024-03-31")
    assert news and news == source.get_news(["AAPL"], "2024-03-01", "2024-03-31")


def test_the_etl_loads_a_dataset_into_the_store(tmp_path, generated):
    from airflow_provider_portfolio.market.etl import load_bars
    from airflow_provider_portfolio.store import PortfolioStore

    ds = generated["jumps"]
    store = PortfolioStore.for_sqlite_file(tmp_path / "desk.db")
    store.migrate()
    try:
        report = load_bars(store, [DatasetSource.of(ds)], ["AAPL", "BTC/USD"], "2024-06-01", "2024-06-30",
                           now=datetime(2024, 7, 1, tzinfo=UTC))
        assert report.failed == [] and report.rows_written > 0
        stored = store.read_bars(["AAPL"], "1Day", "2024-06-01", "2024-06-30")
        expected = ds.bars[(ds.bars["symbol"] == "AAPL") & ds.bars["ts"].between("2024-06-01", "2024-06-30")]
        assert list(stored["close"]) == list(expected["close"])
    finally:
        store.dispose()


def test_an_intraday_dataset_source_serves_the_sessions_asked_for():
    ds = make("calm", symbols=["AAPL", "BTC/USD"], start="2024-05-01", end="2024-06-07", timeframe="1Hour")
    bars = DatasetSource.of(ds).get_bars(["AAPL", "BTC/USD"], "2024-06-03", "2024-06-04", "1Hour")
    for symbol in ("AAPL", "BTC/USD"):
        expected = calendar_for_symbol(symbol).bar_index("2024-06-03", "2024-06-04", "1Hour")
        assert list(bars.loc[bars["symbol"] == symbol, "ts"]) == list(expected)


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "boom"}, "unknown profile 'boom'.*calm, trending, crash"),
        ({"symbols": []}, "symbols rendered empty"),
        ({"symbols": ["NOT A TICKER"]}, "not a ticker"),
        ({"start": "2024-06-30", "end": "2024-01-01"}, "before start"),
        ({"start": "2024-06-01", "end": "2024-06-10"}, "at least 28 days"),
        ({"seed": -1}, "seed"),
        ({"timeframe": "2Week"}, "unknown timeframe"),
        ({"exchange": "NOPE"}, "unknown market calendar"),
    ],
)
def test_bad_input_is_refused(kwargs, message):
    args = {"profile": "calm", "symbols": ["AAPL"], "start": "2024-01-01", "end": "2024-06-30", "seed": 1, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        generate_dataset("x", **args)


@pytest.mark.parametrize("dataset_id", ["", "latest", "../up", "a/b", ".hidden", "x" * 101, None])
def test_unsafe_dataset_ids_are_refused(dataset_id):
    with pytest.raises(InvalidInputError, match="dataset id"):
        generate_dataset(dataset_id, profile="calm", symbols=["AAPL"], start="2024-01-01", end="2024-06-30")


def test_a_refresh_with_bad_input_writes_nothing_and_leaves_latest(tmp_path):
    kwargs = {"symbols": ["AAPL"], "start": "2024-01-01", "end": "2024-03-31", "seed": 1, "now": NOW}
    refresh_datasets(tmp_path, profiles=["calm"], **kwargs)
    before = sorted(os.listdir(tmp_path))
    for bad in ({"profiles": ["calm", "boom"]}, {"profiles": []}, {"symbols": []}, {"end": "2023-01-01"},
                {"keep": 0}, {"now": datetime(2025, 1, 13)}):
        with pytest.raises(InvalidInputError):
            refresh_datasets(tmp_path, **{"profiles": ["trending"], **kwargs, **bad})
        assert sorted(os.listdir(tmp_path)) == before, bad
    unwritable = tmp_path / "a-file"
    unwritable.write_text("not a folder")
    with pytest.raises(StoreError, match="a-file"):
        refresh_datasets(unwritable / "datasets", profiles=["calm"], **kwargs)
    with pytest.raises(StoreError, match="not a writable folder|cannot create"):
        refresh_datasets(unwritable, profiles=["calm"], **kwargs)
    assert latest_dataset_id(tmp_path) == "calm-20250106"
