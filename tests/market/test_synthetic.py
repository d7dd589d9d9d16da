"""SyntheticMarket: determinism, calendar alignment, valid OHLCV, and dynamics a quant would accept."""

from __future__ import annotations

from collections import OrderedDict
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market import synthetic
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, to_bar_frame
from airflow_provider_portfolio.market.calendar import MarketCalendar
from airflow_provider_portfolio.market.synthetic import ORIGIN, SyntheticMarket

EQUITIES = [f"T{i:03d}" for i in range(120)]
CRYPTO = ["BTC/USD", "ETH/USD", "SOL/USD", "DOGE/USD"]
OHLC = {"open": ("open", "first"), "high": ("high", "max"), "low": ("low", "min"), "close": ("close", "last")}


@pytest.fixture
def cold_cache(monkeypatch):
    """Forget every cached path, so a request walks from the origin again."""
    monkeypatch.setattr(synthetic, "_SYMBOLS", {})
    monkeypatch.setattr(synthetic, "_BLOCKS", OrderedDict())


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=11)


@pytest.fixture(scope="module")
def long_panel(market) -> pd.DataFrame:
    return market.panel(EQUITIES + CRYPTO, "2000-01-03", "2024-12-31")


def assert_valid_ohlcv(frame: pd.DataFrame) -> None:
    values = frame[["open", "high", "low", "close", "volume"]].to_numpy()
    assert np.isfinite(values).all()
    o, h, lo, c, v = values.T
    assert (lo > 0).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (h >= np.maximum(o, c)).all()
    assert (v > 0).all()


def split_requests(market, symbol, days, timeframe, cuts):
    """Bars of ``days[0] .. days[-1]`` fetched as consecutive pieces cut before ``days[cut]``."""
    edges = [0, *sorted(cuts), len(days)]
    pieces = [market.bars(symbol, days[a], days[b - 1], timeframe) for a, b in zip(edges, edges[1:]) if b > a]
    return pd.concat(pieces[::-1], ignore_index=True).sort_values("ts").reset_index(drop=True)


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "start", "end", "timeframe"),
    [
        ("AAPL", "2003-01-01", "2008-12-31", "1Day"),
        ("BTC/USD", "2010-01-01", "2013-06-30", "1Day"),
        ("MSFT", "2024-11-20", "2024-12-10", "5Min"),
        ("ETH/USD", "2024-03-01", "2024-03-12", "1Min"),
        ("BRK.B", "2024-06-24", "2024-07-12", "1Hour"),
    ],
)
def test_any_split_gives_bitwise_identical_bars(cold_cache, symbol, start, end, timeframe):
    market = SyntheticMarket(seed=5)
    whole = market.bars(symbol, start, end, timeframe)
    days = [d.date() for d in MarketCalendar("24/7" if "/" in symbol else "XNYS").sessions(start, end).index]
    rng = np.random.default_rng(len(days))
    for _ in range(3):
        synthetic._SYMBOLS.clear()  # also from a cold cache, walking from the nearest block
        synthetic._BLOCKS.clear()
        cuts = rng.choice(np.arange(1, len(days)), size=min(4, len(days) - 1), replace=False)
        pieces = split_requests(market, symbol, days, timeframe, cuts)
        pd.testing.assert_frame_equal(pieces, whole, check_exact=True)


def test_same_seed_same_bars_across_instances_and_caches(cold_cache):
    first = SyntheticMarket(seed=3).bars("NVDA", "2020-01-01", "2020-12-31")
    synthetic._SYMBOLS.clear()
    synthetic._BLOCKS.clear()
    second = SyntheticMarket(seed=3).bars("NVDA", "2020-01-01", "2020-12-31")
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_different_seeds_and_symbols_differ():
    a = SyntheticMarket(seed=1).bars("AAPL", "2024-01-01", "2024-03-31")
    b = SyntheticMarket(seed=2).bars("AAPL", "2024-01-01", "2024-03-31")
    c = SyntheticMarket(seed=1).bars("MSFT", "2024-01-01", "2024-03-31")
    assert len(a) == len(b) == len(c) == 61
    assert not np.any(a["close"].to_numpy() == b["close"].to_numpy())
    assert not np.any(a["close"].to_numpy() == c["close"].to_numpy())


def test_panel_equals_bars_per_symbol(market):
    symbols = ["MSFT", "BTC/USD", "AAPL", "SPY"]
    for timeframe, start, end in [("1Day", "2023-01-01", "2024-12-31"), ("15Min", "2024-11-27", "2024-12-03")]:
        panel = market.panel(symbols, start, end, timeframe)
        one_by_one = pd.concat([market.bars(s, start, end, timeframe) for s in sorted(symbols)], ignore_index=True)
        pd.testing.assert_frame_equal(panel, one_by_one, check_exact=True)


def test_get_bars_is_bars(market):
    expected = market.bars("AAPL", "2024-07-01", "2024-07-31")
    pd.testing.assert_frame_equal(market.get_bars("AAPL", date(2024, 7, 1), date(2024, 7, 31)), expected)


# --- the frame ----------------------------------------------------------------------------------


def test_output_is_the_canonical_bar_frame(market):
    frame = market.panel(["btc/usd", "aapl"], "2024-07-01", "2024-07-03", "1Hour")
    assert list(frame.columns) == list(BAR_COLUMNS)
    pd.testing.assert_frame_equal(to_bar_frame(frame), frame, check_exact=True)
    assert set(frame["symbol"]) == {"AAPL", "BTC/USD"}
    assert set(frame["timeframe"]) == {"1Hour"} and set(frame["source"]) == {"synthetic"}
    assert market.name == "synthetic"


def test_range_without_sessions_is_an_empty_canonical_frame(market):
    frame = market.bars("AAPL", "2024-07-06", "2024-07-07")
    assert frame.empty
    pd.testing.assert_frame_equal(frame, to_bar_frame(frame))
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert len(market.bars("BTC/USD", "2024-07-06", "2024-07-07")) == 2


def test_bad_requests_are_refused(market):
    with pytest.raises(InvalidInputError, match="after"):
        market.bars("AAPL", "2024-07-05", "2024-07-01")
    with pytest.raises(InvalidInputError, match="2000-01-03"):
        market.bars("AAPL", "1999-12-01", "2000-02-01")
    with pytest.raises(InvalidInputError, match="not a ticker"):
        market.bars("not a ticker!", "2024-07-01", "2024-07-05")
    with pytest.raises(InvalidInputError, match="timeframe"):
        market.bars("AAPL", "2024-07-01", "2024-07-05", "1Week")
    with pytest.raises(InvalidInputError, match="seed"):
        SyntheticMarket(seed="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="calendar"):
        SyntheticMarket(exchange="NOPE")


def test_history_starts_at_origin(market):
    first = market.bars("AAPL", ORIGIN, "2000-01-07")
    assert first["ts"].iloc[0] == pd.Timestamp("2000-01-03", tz="UTC")
    assert len(first) == 5


# --- calendar alignment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "timeframe", "start", "end"),
    [
        ("AAPL", "1Day", "2024-01-01", "2024-12-31"),
        ("AAPL", "1Min", "2024-11-25", "2024-12-03"),
        ("AAPL", "30Min", "2024-07-01", "2024-07-08"),
        ("BTC/USD", "1Day", "2024-01-01", "2024-12-31"),
        ("BTC/USD", "4Hour", "2024-03-08", "2024-03-12"),
    ],
)
def test_bars_sit_exactly_on_the_calendars_bar_index(market, symbol, timeframe, start, end):
    calendar = MarketCalendar("24/7" if "/" in symbol else "XNYS")
    frame = market.bars(symbol, start, end, timeframe)
    assert pd.DatetimeIndex(frame["ts"]).equals(calendar.bar_index(start, end, timeframe))


def test_no_bars_on_nyse_holidays(market):
    days = set(market.bars("AAPL", "2024-07-01", "2025-01-10")["ts"].dt.strftime("%Y-%m-%d"))
    for closed in ("2024-07-04", "2024-11-28", "2024-12-25", "2025-01-01", "2025-01-09"):
        assert closed not in days
    assert {"2024-07-03", "2024-07-05", "2024-11-29", "2025-01-10"} <= days
    minutes = market.bars("AAPL", "2024-07-03", "2024-07-05", "1Min")
    assert not (minutes["ts"].dt.strftime("%Y-%m-%d") == "2024-07-04").any()


def test_intraday_bars_stop_at_the_early_close(market):
    minutes = market.bars("AAPL", "2024-11-29", "2024-11-29", "1Min")
    assert len(minutes) == 210
    assert minutes["ts"].iloc[0] == pd.Timestamp("2024-11-29 14:30", tz="UTC")
    assert minutes["ts"].max() < pd.Timestamp("2024-11-29 18:00", tz="UTC")
    hours = market.bars("AAPL", "2024-11-29", "2024-11-29", "1Hour")
    assert list(hours["ts"].dt.strftime("%H:%M")) == ["14:30", "15:30", "16:30", "17:30"]


def test_crypto_trades_around_the_clock(market):
    daily = market.bars("BTC/USD", "2024-07-01", "2024-07-14")
    assert len(daily) == 14
    assert "Saturday" in set(daily["ts"].dt.day_name()) and "Sunday" in set(daily["ts"].dt.day_name())
    minutes = market.bars("BTC/USD", "2024-07-06", "2024-07-07", "1Min")  # a weekend
    assert len(minutes) == 2 * 24 * 60
    assert minutes["ts"].iloc[0] == pd.Timestamp("2024-07-06 00:00", tz="UTC")
    assert minutes["ts"].iloc[-1] == pd.Timestamp("2024-07-07 23:59", tz="UTC")
    assert (minutes["ts"].diff().dropna() == pd.Timedelta(minutes=1)).all()


def test_datetime_bounds_count_by_utc_date(market):
    by_date = market.bars("AAPL", "2024-07-01", "2024-07-05")
    by_datetime = market.bars(
        "AAPL", datetime(2024, 7, 1, 9, 0, tzinfo=timezone.utc), datetime(2024, 7, 5, 23, 0, tzinfo=timezone.utc)
    )
    pd.testing.assert_frame_equal(by_date, by_datetime)


# --- valid OHLCV ----------------------------------------------------------------------------------


def test_daily_ohlcv_valid_over_a_big_panel(long_panel):
    assert long_panel["symbol"].nunique() == len(EQUITIES) + len(CRYPTO)
    assert_valid_ohlcv(long_panel)


@pytest.mark.parametrize("timeframe", ["1Min", "7Min", "1Hour"])
def test_intraday_ohlcv_valid(market, timeframe):
    frame = market.panel(["AAPL", "TSLA", "BTC/USD", "DOGE/USD"], "2024-11-25", "2024-12-06", timeframe)
    assert_valid_ohlcv(frame)


def test_equity_volumes_are_whole_shares(market):
    daily = market.bars("AAPL", "2024-01-01", "2024-03-31")
    minutes = market.bars("AAPL", "2024-03-28", "2024-03-28", "1Min")
    assert (daily["volume"] % 1 == 0).all() and (minutes["volume"] % 1 == 0).all()


def test_intraday_agrees_with_daily_bars(market):
    for symbol, start, end in [("AAPL", "2024-11-25", "2024-12-03"), ("BTC/USD", "2024-03-09", "2024-03-11")]:
        daily = market.bars(symbol, start, end).set_index("ts")
        minutes = market.bars(symbol, start, end, "1Min")
        day = minutes["ts"].dt.tz_convert("America/New_York" if "/" not in symbol else "UTC").dt.date
        agg = minutes.groupby(day).agg(**OHLC, volume=("volume", "sum"))
        assert np.array_equal(agg[list(OHLC)].to_numpy(), daily[list(OHLC)].to_numpy())
        np.testing.assert_allclose(agg["volume"].to_numpy(), daily["volume"].to_numpy(), rtol=1e-3)
        # Coarser timeframes are aggregates of the minutes.
        hours = market.bars(symbol, start, end, "1Hour")
        bar = np.searchsorted(hours["ts"].to_numpy(), minutes["ts"].to_numpy(), side="right") - 1
        by_hour = minutes.groupby(bar).agg(**OHLC)
        assert np.array_equal(by_hour.to_numpy(), hours[list(OHLC)].to_numpy())


def test_minute_bars_are_continuous(market):
    minutes = market.bars("AAPL", "2024-07-02", "2024-07-02", "1Min")
    assert np.array_equal(minutes["open"].to_numpy()[1:], minutes["close"].to_numpy()[:-1])


# --- dynamics -------------------------------------------------------------------------------------


def returns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {s: np.diff(np.log(g["close"].to_numpy())) for s, g in frame.groupby("symbol")}


def test_fat_tails(long_panel):
    kurtosis = {s: ((r - r.mean()) ** 4).mean() / r.var() ** 2 for s, r in returns(long_panel).items()}
    assert all(k > 3.0 for k in kurtosis.values())
    assert np.median(list(kurtosis.values())) > 5.0


def test_volatility_clustering(long_panel):
    def acf1(x: np.ndarray) -> float:
        x = x - x.mean()
        return float((x[1:] * x[:-1]).mean() / x.var())

    squared = {s: acf1(r**2) for s, r in returns(long_panel).items()}
    plain = {s: acf1(r) for s, r in returns(long_panel).items()}
    assert np.mean([v > 0.02 for v in squared.values()]) > 0.95
    assert np.median(list(squared.values())) > 0.08
    assert np.median(np.abs(list(plain.values()))) < 0.05  # returns themselves are close to uncorrelated


def test_crypto_is_more_volatile(long_panel):
    vol = {s: r.std() for s, r in returns(long_panel).items()}
    assert min(vol[s] for s in CRYPTO) > np.median([vol[s] for s in EQUITIES])


def test_plausible_prices_and_small_gaps(long_panel):
    first = long_panel.groupby("symbol")["open"].first()
    assert first.between(15, 650).all()
    for symbol, g in long_panel.groupby("symbol"):
        gap = np.log(g["open"].to_numpy()[1:] / g["close"].to_numpy()[:-1])
        move = np.abs(np.diff(np.log(g["close"].to_numpy())))
        if "/" in symbol:
            assert np.all(gap == 0.0)  # crypto opens where it closed
        else:
            assert np.median(np.abs(gap)) < 0.5 * np.median(move)
    daily_vol = {s: r.std() * np.sqrt(252) for s, r in returns(long_panel).items() if "/" not in s}
    assert 0.1 < np.median(list(daily_vol.values())) < 0.6


def test_closes_never_move_more_than_forty_percent(long_panel):
    # The ETL's quality gate flags moves beyond 50% by default: synthetic bars must never trip it.
    for _, g in long_panel.groupby("symbol"):
        change = g["close"].to_numpy()[1:] / g["close"].to_numpy()[:-1] - 1.0
        assert np.abs(change).max() <= 0.4 + 1e-9
