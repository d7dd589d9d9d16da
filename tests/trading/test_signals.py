"""Trading signals: hand-computed indicators, batch == per symbol, padding, bounds, forecast, sentiment."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.news import NewsItem, score_text
from airflow_provider_portfolio.trading.signals import (
    K_MA,
    K_MACD,
    K_MOM,
    VOL_REF,
    atr,
    bars_available,
    bollinger,
    bollinger_signal,
    ema,
    ema_series,
    forecast_signal,
    ma_crossover_signal,
    macd,
    macd_signal,
    momentum,
    momentum_signal,
    rsi,
    rsi_signal,
    sentiment_signal,
    sma,
    technical_signal,
    volatility_signal,
)

ONE_TO_TEN = np.arange(1.0, 11.0)[None, :]
NOW = datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc)


def random_panel(rows: int = 6, width: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (rows, width)), axis=1))
    spread = np.abs(rng.normal(0, 0.01, (rows, width))) * close
    high, low = close + spread, close - spread
    for i in range(rows):  # varied histories: 0, 10, 30, 60, ... bars
        pad = max(0, width - [0, 10, 30, 60, 100, width][i % 6])
        close[i, :pad] = high[i, :pad] = low[i, :pad] = np.nan
    return close, high, low


# ------------------------------------------------------------------------------------ indicators


def test_sma_and_ema_on_one_to_ten():
    assert sma(ONE_TO_TEN, 3)[0] == pytest.approx(9.0)  # (8 + 9 + 10) / 3
    assert sma(ONE_TO_TEN, 10)[0] == pytest.approx(5.5)
    # alpha = 0.5, seed SMA(1, 2, 3) = 2 at bar 3; then 0.5 * 4 + 0.5 * 2 = 3, ...: lags by (n - 1) / 2 = 1.
    np.testing.assert_allclose(ema_series(ONE_TO_TEN, 3)[0, 2:], [2, 3, 4, 5, 6, 7, 8, 9])
    assert ema(ONE_TO_TEN, 3)[0] == pytest.approx(9.0)
    # A jump: seed 2, then 0.5 * 10 + 0.5 * 2 = 6; alpha = 2 / 5 for n = 4: seed 4, 0.4 * 10 + 0.6 * 4 = 6.4.
    assert ema([[1.0, 2.0, 3.0, 10.0]], 3)[0] == pytest.approx(6.0)
    assert ema([[1.0, 3.0, 5.0, 7.0, 10.0]], 4)[0] == pytest.approx(6.4)
    assert math.isnan(sma(ONE_TO_TEN, 11)[0]) and math.isnan(ema(ONE_TO_TEN, 11)[0])


def test_rsi_step_by_step():
    # changes +1, -0.5, +1 | +0.5 | -1 ; n = 3
    # seed: gain 2/3, loss 0.5/3 = 1/6; then gain (2/3 * 2 + 0.5) / 3 = 11/18, loss (1/6 * 2 + 0) / 3 = 1/9
    # RS = 5.5 -> RSI = 100 - 100 / 6.5 = 84.615...; next: gain 11/27, loss (1/9 * 2 + 1) / 3 = 11/27 -> 50
    series = [10.0, 11.0, 10.5, 11.5, 12.0, 11.0]
    assert rsi([series[:5]], 3)[0] == pytest.approx(100 - 100 / 6.5)
    assert rsi([series], 3)[0] == pytest.approx(50.0)
    assert rsi([series[:4]], 3)[0] == pytest.approx(100 - 100 / (1 + (2 / 3) / (1 / 6)))  # 80
    assert rsi([[1.0, 2.0, 3.0, 4.0]], 3)[0] == 100.0  # no losses
    assert rsi([[5.0] * 6], 3)[0] == 50.0  # flat
    assert math.isnan(rsi([series[:3]], 3)[0])  # needs n + 1 = 4 bars


def test_macd_on_a_linear_series():
    # On y = 3 + 0.5 t every SMA-seeded EMA lags by 0.5 * (n - 1) / 2, so MACD = 0.5 * (26 - 12) / 2 = 3.5.
    line, sig, hist = macd(3 + 0.5 * np.arange(40.0)[None, :])
    assert line[0] == pytest.approx(3.5) and sig[0] == pytest.approx(3.5) and hist[0] == pytest.approx(0, abs=1e-12)
    # Small periods by hand on [1, 2, 3, 4, 10], fast 2, slow 3, signal 2:
    # ema2: seed 1.5 (bar 2), 2.5, 3.5, 10 * 2/3 + 3.5 / 3 = 7.8333; ema3: seed 2 (bar 3), 3, 6.5
    # line: 0.5, 0.5, 1.3333; signal seed 0.5 (bar 4), then 1.3333 * 2/3 + 0.5 / 3 = 1.05556
    line, sig, hist = macd([[1.0, 2.0, 3.0, 4.0, 10.0]], 2, 3, 2)
    assert line[0] == pytest.approx(47 / 6 - 6.5)
    assert sig[0] == pytest.approx((4 / 3) * 2 / 3 + 0.5 / 3)
    assert hist[0] == pytest.approx(line[0] - sig[0])
    line, sig, hist = macd([[1.0, 2.0, 3.0]], 2, 3, 2)  # the line needs 3 bars, the signal 3 + 2 - 1 = 4
    assert line[0] == pytest.approx(0.5) and math.isnan(sig[0]) and math.isnan(hist[0])


def test_bollinger_position_and_bands():
    mid, upper, lower, position = bollinger([[1.0, 2.0, 3.0, 4.0, 5.0]], 5, 2)
    # mid 3, population std sqrt(2), position (5 - 3) / (2 sqrt 2) = 0.7071
    assert mid[0] == pytest.approx(3.0)
    assert upper[0] == pytest.approx(3 + 2 * math.sqrt(2)) and lower[0] == pytest.approx(3 - 2 * math.sqrt(2))
    assert position[0] == pytest.approx(1 / math.sqrt(2))
    assert bollinger([[7.0, 7.0, 7.0]], 3)[3][0] == 0.0  # flat: std 0 -> position 0
    sig = bollinger_signal([[1.0, 2.0, 3.0, 4.0, 5.0]], 5, 2)
    assert sig.score[0] == pytest.approx(-1 / math.sqrt(2))


def test_momentum_and_atr_by_hand():
    assert momentum([[100.0, 90.0, 110.0, 120.0]], 3)[0] == pytest.approx(0.2)  # 120 / 100 - 1
    assert momentum([[100.0, 90.0, 110.0, 120.0]], 1)[0] == pytest.approx(120 / 110 - 1)
    assert math.isnan(momentum([[100.0, 90.0, 110.0]], 3)[0])
    high = [[10.0, 11.0, 12.0, 11.0]]
    low = [[9.0, 10.0, 10.5, 9.0]]
    close = [[9.5, 10.5, 11.0, 10.0]]
    # TR: max(1, 1.5, 0.5) = 1.5; max(1.5, 1.5, 0) = 1.5; max(2, 0, 2) = 2
    assert atr(high, low, close, 3)[0] == pytest.approx(5 / 3)
    assert atr(high, low, close, 2)[0] == pytest.approx((1.5 * 1 + 2) / 2)  # seed 1.5, Wilder step
    assert math.isnan(atr(high, low, close, 4)[0])
    vol = volatility_signal(high, low, close, 3)
    assert vol.score[0] == 0.0
    assert vol.confidence[0] == pytest.approx(1 / (1 + (5 / 3) / 10.0 / VOL_REF))


# ------------------------------------------------------------------------------------ batching, padding


def test_batch_equals_per_symbol_and_padding():
    close, high, low = random_panel()
    builders = [
        lambda c, h, lo: ma_crossover_signal(c),
        lambda c, h, lo: rsi_signal(c),
        lambda c, h, lo: macd_signal(c),
        lambda c, h, lo: bollinger_signal(c),
        lambda c, h, lo: momentum_signal(c),
        lambda c, h, lo: volatility_signal(h, lo, c),
        lambda c, h, lo: technical_signal(c, high=h, low=lo),
    ]
    for build in builders:
        batch = build(close, high, low)
        for i in range(close.shape[0]):
            row = close[i : i + 1]
            keep = ~np.isnan(row[0])  # the unpadded row gives the same signal
            one = build(row[:, keep], high[i : i + 1, keep], low[i : i + 1, keep])
            assert batch.score[i] == pytest.approx(one.score[0], abs=1e-12)
            assert batch.confidence[i] == pytest.approx(one.confidence[0], abs=1e-12)
            assert batch.reason[i] == one.reason[0]
    np.testing.assert_array_equal(bars_available(close), [0, 10, 30, 60, 100, 150])


def test_padded_values_match_unpadded_and_interior_gap_restarts_history():
    padded = np.array([[np.nan, np.nan, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [0.0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    assert ema(padded, 3)[0] == pytest.approx(9.0)
    assert rsi(padded, 3)[0] == 100.0
    assert bars_available([[1.0, np.nan, 2.0, 3.0]])[0] == 2
    assert math.isnan(sma([[1.0, np.nan, 2.0, 3.0]], 3)[0])


def test_insufficient_history_reasons():
    close = np.full((2, 60), np.nan)
    close[0, -12:] = np.linspace(10, 11, 12)
    close[1] = np.linspace(10, 20, 60)
    cases = [
        (macd_signal(close), "only 12 bars; needs 34"),
        (ma_crossover_signal(close), "only 12 bars; needs 50"),
        (rsi_signal(close), "only 12 bars; needs 15"),
        (bollinger_signal(close), "only 12 bars; needs 20"),
        (momentum_signal(close), "only 12 bars; needs 21"),
    ]
    for sig, reason in cases:
        assert sig.reason[0] == reason and sig.score[0] == 0.0 and sig.confidence[0] == 0.0
        assert sig.confidence[1] > 0
    # confidence ramps from 0.5 on the bare minimum to 1 from twice the minimum
    assert ma_crossover_signal(close).confidence[1] == pytest.approx(60 / 100)
    assert rsi_signal(close).confidence[1] == 1.0


def test_signal_scores_by_formula():
    close = np.linspace(100, 110, 60)[None, :]
    ma = ma_crossover_signal(close, 5, 10)
    assert ma.score[0] == pytest.approx(math.tanh(K_MA * (sma(close, 5)[0] / sma(close, 10)[0] - 1)))
    assert ma.score[0] > 0
    mom = momentum_signal(close, 20)
    assert mom.score[0] == pytest.approx(math.tanh(K_MOM * (110 / close[0, -21] - 1)))
    mac = macd_signal(close)
    assert mac.score[0] == pytest.approx(math.tanh(K_MACD * macd(close)[2][0] / 110), abs=1e-12)
    assert rsi_signal(close).score[0] == pytest.approx(-1.0)  # RSI 100 -> (50 - 100) / 50
    assert "overbought" in rsi_signal(close).reason[0]
    falling = rsi_signal([[10.0, 9.0, 8.0, 7.5, 8.0]], 3)  # gains 0,0,0 | 0.5; losses 1,1,0.5 | 0
    # avg gain 0.5 / 3 = 1/6, avg loss (2.5/3 * 2) / 3 = 5/9 -> RS 0.3 -> RSI 23.08
    assert falling.reason[0] == "RSI 23.1 < 30: oversold"
    assert falling.score[0] == pytest.approx((50 - (100 - 100 / 1.3)) / 50)


def test_bounds_on_random_data():
    for seed in range(3):
        close, high, low = random_panel(seed=seed)
        close[2, -1] *= 50  # an outlier
        high[2, -1] = close[2, -1] * 1.01
        signals = [
            ma_crossover_signal(close),
            rsi_signal(close),
            macd_signal(close),
            bollinger_signal(close),
            momentum_signal(close),
            volatility_signal(high, low, close),
            technical_signal(close, high=high, low=low),
            technical_signal(close, weights={"rsi": 2.0, "momentum": 1.0}),
        ]
        for sig in signals:
            assert sig.score.shape == sig.confidence.shape == (close.shape[0],)
            assert len(sig.reason) == close.shape[0]
            assert np.isfinite(sig.score).all() and np.isfinite(sig.confidence).all()
            assert (np.abs(sig.score) <= 1).all()
            assert ((sig.confidence >= 0) & (sig.confidence <= 1)).all()
            assert sig.confidence[0] == 0.0 and sig.score[0] == 0.0  # the row with no bars


def test_technical_average_and_agreement():
    close = np.linspace(100, 130, 120)[None, :]
    parts = [ma_crossover_signal(close), rsi_signal(close), macd_signal(close), bollinger_signal(close),
             momentum_signal(close)]
    tech = technical_signal(close)
    wc = sum(p.confidence[0] for p in parts)
    wcs = sum(p.confidence[0] * p.score[0] for p in parts)
    wcabs = sum(p.confidence[0] * abs(p.score[0]) for p in parts)
    assert tech.score[0] == pytest.approx(wcs / wc)
    assert tech.confidence[0] == pytest.approx(wc / 5 * abs(wcs) / wcabs)
    only_ma = technical_signal(close, weights={"ma_crossover": 1.0})
    assert only_ma.score[0] == pytest.approx(parts[0].score[0])
    assert only_ma.confidence[0] == pytest.approx(parts[0].confidence[0])


# ------------------------------------------------------------------------------------ forecast


def test_forecast_signal():
    sig = forecast_signal([0.02, 0.02, np.nan, 0.01, -0.05], [-0.02, -0.02, -0.1, 0.01, -0.15],
                          [0.06, 0.06, 0.1, 0.01, 0.05], [True, False, True, True, True])
    assert sig.score[0] == pytest.approx(math.tanh(0.02 / 0.04)) and sig.confidence[0] == 1.0
    assert sig.score[1] == 0.0 and sig.confidence[1] == 0.0 and sig.reason[1] == "model not healthy: ignored"
    assert sig.confidence[2] == 0.0 and sig.reason[2].startswith("model not healthy: ignored")
    assert sig.confidence[3] == 0.0  # zero-width band
    assert sig.score[4] == pytest.approx(math.tanh(-0.5))
    with pytest.raises(InvalidInputError):
        forecast_signal([0.1, 0.2], [0.0], [0.3], [True])
    with pytest.raises(InvalidInputError):
        forecast_signal([[0.1]], [[0.0]], [[0.3]], [[True]])


# ------------------------------------------------------------------------------------ sentiment


def item(symbol: str, hours_ago: float, score: float, headline: str = "x") -> NewsItem:
    return NewsItem(symbol=symbol, published=NOW - timedelta(hours=hours_ago), headline=headline, score=score,
                    source="synthetic")


@dataclass
class Unscored:
    symbol: str
    published: datetime
    headline: str
    summary: str | None = None
    score: float | None = None


def test_sentiment_decay_and_confidence():
    news = [item("AAA", 0, 1.0), item("AAA", 24, -1.0), item("BBB", 48, 0.5)]
    sig = sentiment_signal(["AAA", "BBB", "CCC"], news, NOW)
    # weights 1 and 0.5: (1 - 0.5) / 1.5 = 1/3
    assert sig.score[0] == pytest.approx(1 / 3)
    assert sig.confidence[0] == pytest.approx(1 - math.exp(-1.5))
    assert sig.score[1] == pytest.approx(0.5) and sig.confidence[1] == pytest.approx(1 - math.exp(-0.25))
    assert sig.score[2] == 0.0 and sig.confidence[2] == 0.0 and sig.reason[2] == "no news"
    shorter = sentiment_signal(["AAA"], news, NOW, half_life_hours=12.0)
    assert shorter.score[0] == pytest.approx((1 - 0.25) / 1.25)


def test_sentiment_ignores_future_and_malformed_and_scores_text():
    headline = "AAA beats estimates and shares rally"
    news = [
        item("AAA", -2, 1.0),  # in the future
        Unscored("AAA", NOW - timedelta(hours=1), headline),  # no score: lexicon
        Unscored("AAA", datetime(2024, 6, 3, 11), "naive time"),  # malformed
        {"symbol": "AAA"},  # malformed, no attributes
    ]
    sig = sentiment_signal(["aaa"], news, NOW)
    assert sig.score[0] == pytest.approx(score_text(headline)) and score_text(headline) > 0
    assert sig.confidence[0] == pytest.approx(1 - math.exp(-(0.5 ** (1 / 24))))
    assert "1 in the future" in sig.reason[0] and "1 malformed" in sig.reason[0]
    only_future = sentiment_signal(["AAA"], [item("AAA", -1, 1.0)], NOW)
    assert only_future.confidence[0] == 0.0 and only_future.reason[0].startswith("no news")


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "call",
    [
        lambda: sma(ONE_TO_TEN, 0),
        lambda: ema(ONE_TO_TEN, -1),
        lambda: rsi(ONE_TO_TEN, 1.5),
        lambda: sma(np.arange(5.0), 2),  # 1-D
        lambda: rsi(np.ones((2, 3, 4)), 2),  # 3-D
        lambda: macd(ONE_TO_TEN, 26, 12),
        lambda: macd(ONE_TO_TEN, 12, 12),
        lambda: ma_crossover_signal(ONE_TO_TEN, 50, 20),
        lambda: bollinger(ONE_TO_TEN, 5, 0),
        lambda: momentum(ONE_TO_TEN, 0),
        lambda: atr(np.ones((2, 5)), np.ones((2, 4)), np.ones((2, 5))),
        lambda: atr([[1.0, 2.0]], [[2.0, 1.0]], [[1.5, 1.5]]),  # high below low
        lambda: volatility_signal(np.ones((1, 5)), np.ones((1, 5)), np.ones((1, 5)), n=0),
        lambda: technical_signal(ONE_TO_TEN, weights={"foo": 1.0}),
        lambda: technical_signal(ONE_TO_TEN, weights={"rsi": -1.0}),
        lambda: technical_signal(ONE_TO_TEN, weights={"rsi": 0.0}),
        lambda: technical_signal(ONE_TO_TEN, high=ONE_TO_TEN),
        lambda: sentiment_signal(["A"], [], datetime(2024, 1, 1)),
        lambda: sentiment_signal(["A", "a"], [], NOW),
        lambda: sentiment_signal(["A"], [], NOW, half_life_hours=0),
        lambda: sma([["a", "b"]], 1),
    ],
)
def test_bad_parameters(call):
    with pytest.raises(InvalidInputError):
        call()
