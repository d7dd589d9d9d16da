"""Bars: idempotent upserts, exact round trips, queries, validation and all-or-nothing writes."""

from __future__ import annotations

import threading
import time
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, empty_bars, to_bar_frame
from airflow_provider_portfolio.store import PortfolioStore, codecs
from airflow_provider_portfolio.store import bars as bar_table
from tests.store.helpers import make_bars

SYMBOLS = ["AAPL", "BRK.B", "BTC/USD", "A", "MSFT"]


def test_upsert_then_identical_reupsert_changes_nothing(migrated):
    bars = make_bars(SYMBOLS, 40)
    assert migrated.upsert_bars(bars) == len(bars) == 200
    assert migrated.upsert_bars(bars) == 0
    assert migrated.upsert_bars(bars.sample(frac=1.0, random_state=1)) == 0  # order does not matter
    pd.testing.assert_frame_equal(migrated.read_bars(), bars)


def test_changed_values_are_updated_and_counted(migrated):
    bars = make_bars(SYMBOLS, 10)
    migrated.upsert_bars(bars)
    changed = bars.copy()
    changed.loc[3, "close"] = np.nextafter(changed.loc[3, "close"], np.inf)  # one ulp is a change
    changed.loc[15, "volume"] += 1
    changed.loc[27, "source"] = "alpaca"
    assert migrated.upsert_bars(changed) == 3
    pd.testing.assert_frame_equal(migrated.read_bars(), changed)
    assert migrated.upsert_bars(changed) == 0


def test_mixed_new_and_existing_rows(migrated):
    old = make_bars(["AAPL", "MSFT"], 20)
    migrated.upsert_bars(old)
    mixed = old.copy()
    msft = mixed.index[mixed.symbol == "MSFT"][:5]
    mixed.loc[msft, "open"] *= 1.01  # 5 changed rows
    mixed = to_bar_frame(pd.concat([mixed, make_bars(["NVDA"], 10, seed=4)]))  # 10 new rows, 35 identical
    assert migrated.upsert_bars(mixed) == 15
    pd.testing.assert_frame_equal(migrated.read_bars(), mixed)
    assert migrated.count_bars() == 50


def test_read_bars_round_trips_exactly(migrated):
    daily = make_bars(SYMBOLS, 30, seed=7)
    intraday = make_bars(["AAPL", "ETH/USD"], 50, start="2024-03-08 14:30", timeframe="5Min", seed=8)
    tiny = daily.copy()
    tiny.loc[0, ["open", "high", "low", "close"]] = [1e-300, 5e-324 * 3, 1e-310, 0.1 + 0.2]
    tiny.loc[0, "high"] = 1.7976931348623157e308
    tiny.loc[1, "source"] = "vendör ✓"
    scrambled = pd.concat([tiny, intraday]).sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert migrated.upsert_bars(scrambled) == len(scrambled)
    got = migrated.read_bars()
    pd.testing.assert_frame_equal(got, tiny)  # sorted by symbol (byte order), ts; exact floats
    assert list(got.columns) == list(BAR_COLUMNS) and str(got["ts"].dtype) == "datetime64[ns, UTC]"
    assert list(got.symbol.unique()) == sorted(SYMBOLS)
    pd.testing.assert_frame_equal(migrated.read_bars(timeframe="5Min"), intraday)
    pd.testing.assert_frame_equal(migrated.read_bars(["ETH/USD"], "5Min"), intraday[intraday.symbol == "ETH/USD"]
                                  .reset_index(drop=True))


def test_read_bars_bounds_are_inclusive_and_accept_many_types(migrated):
    bars = make_bars(["AAPL", "MSFT"], 10, start="2024-01-01")
    migrated.upsert_bars(bars)
    expected = bars[(bars.symbol == "AAPL") & bars.ts.between("2024-01-03", "2024-01-05")].reset_index(drop=True)
    for start, end in [
        ("2024-01-03", "2024-01-05"),
        (date(2024, 1, 3), date(2024, 1, 5)),
        (datetime(2024, 1, 3), datetime(2024, 1, 5)),  # naive = UTC
        (pd.Timestamp("2024-01-02 19:00", tz="America/New_York"), pd.Timestamp("2024-01-05", tz="UTC")),
    ]:
        pd.testing.assert_frame_equal(migrated.read_bars(["AAPL"], "1Day", start, end), expected)
    assert len(migrated.read_bars(None, "1Day", start="2024-01-09")) == 4
    assert len(migrated.read_bars(end="2024-01-01")) == 2


def test_empty_results_are_canonical(migrated):
    migrated.upsert_bars(make_bars(["AAPL"], 3))
    for frame in (migrated.read_bars(["ZZZ"]), migrated.read_bars(timeframe="1Hour"), migrated.read_bars([])):
        pd.testing.assert_frame_equal(frame, empty_bars())
    assert migrated.bar_timestamps("ZZZ", "1Day").empty
    assert str(migrated.bar_timestamps("ZZZ", "1Day").dtype) == "datetime64[ns, UTC]"


def test_bar_timestamps_latest_and_counts(migrated):
    migrated.upsert_bars(make_bars(["AAPL", "MSFT"], 10, start="2024-01-01"))
    migrated.upsert_bars(make_bars(["AAPL"], 4, start="2024-01-01 14:30", timeframe="5Min"))
    idx = migrated.bar_timestamps("AAPL", "1Day", "2024-01-02", pd.Timestamp("2024-01-04", tz="UTC"))
    assert list(idx) == list(pd.date_range("2024-01-02", periods=3, freq="D", tz="UTC"))
    assert str(idx.dtype) == "datetime64[ns, UTC]"
    assert len(migrated.bar_timestamps("AAPL", "5Min")) == 4
    assert migrated.latest_bar_ts(["AAPL", "MSFT", "NVDA"], "1Day") == {
        "AAPL": pd.Timestamp("2024-01-10", tz="UTC"), "MSFT": pd.Timestamp("2024-01-10", tz="UTC"), "NVDA": None,
    }
    assert migrated.latest_bar_ts(["AAPL"], "5Min") == {"AAPL": pd.Timestamp("2024-01-01 14:45", tz="UTC")}
    assert migrated.latest_bar_ts(None, "5Min") == {"AAPL": pd.Timestamp("2024-01-01 14:45", tz="UTC")}
    assert migrated.count_bars() == 24
    assert migrated.count_bars(["AAPL"]) == 14
    assert migrated.count_bars(["AAPL"], "1Day") == 10
    assert migrated.count_bars(timeframe="5Min") == 4
    assert migrated.count_bars(["NVDA"]) == 0


def test_many_symbols_and_batches(migrated, monkeypatch):
    monkeypatch.setattr(codecs, "BATCH_ROWS", 7)
    monkeypatch.setattr(codecs, "SYMBOLS_PER_QUERY", 3)
    symbols = ["A", "AB", "ABC", "ABCD", "ABCDE", "BTC/USD", "BRK.B", "X"]
    bars = make_bars(symbols, 9)
    bars.loc[bars.symbol == "X", "source"] = "alphavantage"  # text fields of several lengths
    assert migrated.upsert_bars(bars) == len(bars)
    assert migrated.upsert_bars(bars) == 0
    pd.testing.assert_frame_equal(migrated.read_bars(symbols), bars)
    assert migrated.count_bars(symbols) == len(bars)
    assert set(migrated.latest_bar_ts(symbols, "1Day")) == set(symbols)


def test_reads_before_migrate_are_empty_and_writes_refused(store):
    assert store.count_bars() == 0
    pd.testing.assert_frame_equal(store.read_bars(), empty_bars())
    assert store.latest_bar_ts(["AAPL"], "1Day") == {"AAPL": None}
    with pytest.raises(StoreError, match="migrate"):
        store.upsert_bars(make_bars(["AAPL"], 2))


def test_naive_and_other_zone_timestamps_are_utc(migrated):
    bars = make_bars(["AAPL"], 3)
    naive = bars.assign(ts=bars.ts.dt.tz_localize(None))
    assert migrated.upsert_bars(naive) == 3
    ny = bars.assign(ts=bars.ts.dt.tz_convert("America/New_York"))
    assert migrated.upsert_bars(ny) == 0
    assert migrated.upsert_bars(bars.assign(ts=bars.ts.dt.as_unit("us"))) == 0
    assert migrated.upsert_bars(bars.assign(ts=bars.ts.dt.as_unit("s"))) == 0
    assert migrated.upsert_bars(bars.assign(ts=bars.ts.astype(str))) == 0  # ISO strings with offsets
    pd.testing.assert_frame_equal(migrated.read_bars(), bars)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["volume"]), "lacks column"),
        (lambda f: f.assign(close=f.close.where(f.index != 5, np.nan)), "NaN"),
        (lambda f: f.assign(high=f.high.where(f.index != 5, np.inf)), "infinite"),
        (lambda f: f.assign(open="abc"), "not numeric"),
        (lambda f: pd.concat([f, f.iloc[[4]]], ignore_index=True), "duplicate"),
        (lambda f: f.assign(symbol=f.symbol.str.lower()), "upper case"),
        (lambda f: f.assign(symbol=f.symbol.where(f.index != 2, None)), "missing"),
        (lambda f: f.assign(symbol="NOT A TICKER"), "not a ticker"),
        (lambda f: f.assign(timeframe="1D"), "unknown timeframe"),
        (lambda f: f.assign(source=""), "empty"),
        (lambda f: f.assign(ts=f.ts.where(f.index != 1, pd.NaT)), "NaT"),
        (lambda f: f.assign(ts=f.ts + pd.Timedelta(nanoseconds=1)), "microsecond"),
        (lambda f: f.to_dict(), "DataFrame"),
    ],
)
def test_bad_input_raises_before_anything_is_written(migrated, mutate, message):
    base = make_bars(["AAPL", "MSFT"], 5)
    migrated.upsert_bars(base)
    changed = base.assign(close=base.close * 2, symbol=base.symbol)
    with pytest.raises(InvalidInputError, match=message):
        migrated.upsert_bars(mutate(changed))
    pd.testing.assert_frame_equal(migrated.read_bars(), base)


def test_empty_frame_writes_nothing(migrated):
    assert migrated.upsert_bars(empty_bars()) == 0
    assert migrated.count_bars() == 0


def test_a_failure_at_commit_leaves_nothing(migrated):
    base = make_bars(["AAPL", "MSFT"], 5)
    migrated.upsert_bars(base)
    mixed = to_bar_frame(pd.concat([base.assign(close=base.close + 1), make_bars(["NVDA"], 5)]))

    def refuse(conn):
        raise RuntimeError("commit refused")

    event.listen(migrated.engine, "commit", refuse)
    try:
        with pytest.raises(RuntimeError, match="commit refused"):
            migrated.upsert_bars(mixed)
    finally:
        event.remove(migrated.engine, "commit", refuse)
    pd.testing.assert_frame_equal(migrated.read_bars(), base)
    assert migrated.upsert_bars(mixed) == 15


def test_a_failure_midway_leaves_nothing(migrated, monkeypatch):
    base = make_bars(["AAPL", "MSFT"], 5)
    migrated.upsert_bars(base)
    mixed = to_bar_frame(pd.concat([base.assign(close=base.close + 1), make_bars(["NVDA"], 5)]))
    if migrated.dialect == "sqlite":
        monkeypatch.setattr(codecs, "BATCH_ROWS", 4)
        batches = codecs._PreparedBars.sqlite_batches

        def failing(self, size):
            for i, batch in enumerate(batches(self, size)):
                if i == 2:  # two batches are already written in this transaction
                    batch[-1] = (*batch[-1][:3], None, *batch[-1][4:])  # NOT NULL violated in the database
                yield batch

        monkeypatch.setattr(codecs._PreparedBars, "sqlite_batches", failing)
    else:  # the UPDATE has run when the INSERT of the new keys fails
        monkeypatch.setattr(bar_table, "_PG_INSERT_NEW", "SELECT 1/0")
    with pytest.raises(StoreError, match="upsert bars"):
        migrated.upsert_bars(mixed)
    pd.testing.assert_frame_equal(migrated.read_bars(), base)


@pytest.mark.postgres
def test_postgres_insert_racing_a_concurrent_writer_falls_back_to_upsert(fresh_pg_url):
    store = PortfolioStore(fresh_pg_url)
    store.migrate()
    bars = make_bars(["AAPL", "MSFT"], 5)
    other = bars.assign(close=bars.close + 1)
    rival = store.engine.connect()
    rival_tx = rival.begin()
    rival.exec_driver_sql(
        "INSERT INTO bars VALUES ('AAPL', '1Day', '2024-01-01 00:00+00', 1, 1, 1, 1, 1, 'rival')")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(n=store.upsert_bars(other)))
    worker.start()
    time.sleep(1.0)  # the worker's plain INSERT now waits on the rival's uncommitted key
    rival_tx.commit()
    rival.close()
    worker.join(30)
    assert outcome["n"] == 10  # 9 inserted + the rival's row updated
    pd.testing.assert_frame_equal(store.read_bars(), other)
    store.dispose()


def test_store_attributes(tmp_path):
    store = PortfolioStore.for_sqlite_file(tmp_path / "x.db")
    assert store.dialect == "sqlite" and store.url == f"sqlite:///{tmp_path / 'x.db'}"
    assert store.engine is store.engine
    pg = PortfolioStore("postgres://desk:hunter2@db.example:5433/portfolio")
    assert pg.dialect == "postgresql" and pg.url == "postgresql+psycopg://desk:***@db.example:5433/portfolio"
    assert "hunter2" not in repr(pg)
    assert PortfolioStore("postgresql://desk@db/p").url == "postgresql+psycopg://desk@db/p"


@pytest.mark.postgres
def test_psycopg2_driver_round_trip(fresh_pg_url):
    import psycopg2  # noqa: F401 (the test extra installs psycopg2-binary)
    store = PortfolioStore(fresh_pg_url.replace("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert store.engine.dialect.driver == "psycopg2"
    store.migrate()
    bars = make_bars(SYMBOLS, 20)
    assert store.upsert_bars(bars) == 100
    assert store.upsert_bars(bars) == 0
    changed = bars.assign(close=bars.close.where(bars.index != 4, 1.5))
    assert store.upsert_bars(changed) == 1
    pd.testing.assert_frame_equal(store.read_bars(), changed)
    assert store.latest_bar_ts(["AAPL", "NVDA"], "1Day") == {"AAPL": bars.ts.max(), "NVDA": None}
    store.dispose()


def _count_in_child(store, queue):
    queue.put(store.count_bars())


def test_a_forked_child_gets_its_own_engine(tmp_path):
    import multiprocessing

    store = PortfolioStore.for_sqlite_file(tmp_path / "p.db")
    store.migrate()
    store.upsert_bars(make_bars(["AAPL"], 3))  # the parent's engine holds a pooled connection now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_count_in_child, args=(store, queue))
    child.start()
    assert queue.get(timeout=60) == 3
    child.join(30)
    assert store.upsert_bars(make_bars(["MSFT"], 2)) == 2  # the parent's connections still work
    assert store.count_bars() == 5


@pytest.mark.postgres
def test_postgres_first_loads_and_appends_copy_straight_into_the_table(fresh_pg_url, monkeypatch):
    store = PortfolioStore(fresh_pg_url)
    store.migrate()
    monkeypatch.setattr(bar_table, "_PG_CREATE_STAGE", "SELECT 1/0")  # the staged upsert would fail
    bars = make_bars(["AAPL", "MSFT"], 10)
    first, later = bars[bars.ts < bars.ts.unique()[6]], bars[bars.ts >= bars.ts.unique()[6]]
    assert store.upsert_bars(first) == 12  # an empty table
    assert store.upsert_bars(later) == 8  # after the stored range
    assert store.upsert_bars(make_bars(["NVDA"], 10)) == 10  # a pair with nothing stored
    pd.testing.assert_frame_equal(store.read_bars(), to_bar_frame(pd.concat([bars, make_bars(["NVDA"], 10)])))
    # one stored key among new ones: the probe sees it and the (broken) staged upsert runs, writing nothing
    overlap = to_bar_frame(pd.concat([make_bars(["TSLA"], 5), bars.iloc[[9]].assign(close=1.0)]))
    with pytest.raises(StoreError, match="upsert bars"):
        store.upsert_bars(overlap)
    assert store.count_bars() == 30
    monkeypatch.undo()
    assert store.upsert_bars(overlap) == 6
    store.dispose()
