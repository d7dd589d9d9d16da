"""Decisions: the weighted combination, the thresholds, sizing and the order toward the target."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.trading.decision import AGENT_WEIGHTS, AUTO_TRADER_WEIGHTS, combine, decide


def sig(score, confidence):
    return SimpleNamespace(score=np.array(score, dtype=float), confidence=np.array(confidence, dtype=float))


def test_agent_weights_sixty_forty_by_hand():
    signals = {"sentiment": sig([1.0, -0.5, 0.8], [1.0, 1.0, 0.0]), "technical": sig([-0.5, 0.5, 0.4], [1.0, 0.5, 1.0])}
    score, conf = combine(signals, AGENT_WEIGHTS)
    # symbol 0: (0.6*1*1 + 0.4*1*-0.5) / (0.6 + 0.4) = 0.4; support 1.0
    # symbol 1: (0.6*1*-0.5 + 0.4*0.5*0.5) / (0.6 + 0.2) = -0.25; support 0.8
    # symbol 2: sentiment has no confidence: technical alone, 0.4; support 0.4
    np.testing.assert_allclose(score, [0.4, -0.25, 0.4])
    np.testing.assert_allclose(conf, [1.0, 0.8, 0.4])


def test_auto_trader_puts_forecast_first_and_zero_confidence_means_zero():
    assert max(AUTO_TRADER_WEIGHTS, key=AUTO_TRADER_WEIGHTS.get) == "forecast"
    signals = {"forecast": sig([0.9], [0.0]), "technical": sig([0.0], [0.0]), "sentiment": sig([0.0], [0.0])}
    score, conf = combine(signals, AUTO_TRADER_WEIGHTS)
    assert score[0] == 0.0 and conf[0] == 0.0


def test_combine_errors():
    with pytest.raises(InvalidInputError, match="no signal"):
        combine({"technical": sig([0.1], [1])}, AGENT_WEIGHTS)
    with pytest.raises(InvalidInputError, match="weight of 'x'"):
        combine({"x": sig([0.1], [1])}, {"x": -1})
    with pytest.raises(InvalidInputError, match="all be zero"):
        combine({"x": sig([0.1], [1])}, {"x": 0})
    with pytest.raises(InvalidInputError, match="shape"):
        combine({"a": sig([0.1], [1]), "b": sig([0.1, 0.2], [1, 1])}, {"a": 1, "b": 1})


def run(score, conf=1.0, price=100.0, position=0.0, **kwargs):
    return decide(["AAPL"], [score], [conf], {"AAPL": price}, {"AAPL": position}, 100_000.0, **kwargs)[0]


def test_fixed_fraction_sizing_whole_shares():
    d = run(0.5)  # 100k * 5% * 0.5 = 2,500 -> 25 shares
    assert (d.action, d.order_qty, d.target_qty, d.notional) == ("buy", 25.0, 25.0, 2500.0)
    d = run(0.5, price=333.0)  # 7.507... shares: whole shares only, toward zero
    assert d.order_qty == 7.0
    d = run(0.5, price=333.0, fractionable={"AAPL": True})
    assert d.order_qty == pytest.approx(7.507507, abs=1e-6)


def test_moves_the_current_position_toward_the_target():
    assert (run(0.5, position=40).action, run(0.5, position=40).order_qty) == ("sell", 15.0)
    assert run(0.5, position=25).action == "hold"
    exit_long = run(-0.8, position=30)  # no shorting: the target is flat
    assert (exit_long.action, exit_long.order_qty, exit_long.target_qty) == ("sell", 30.0, 0.0)
    short = run(-0.8, position=0, allow_short=True)  # -4,000 -> -40
    assert (short.action, short.order_qty, short.target_qty) == ("sell", 40.0, -40.0)
    assert run(-0.8, position=0).action == "hold"


def test_thresholds_hold_without_trading():
    low_conf = run(0.9, conf=0.5)
    assert low_conf.action == "hold" and "confidence 0.50 < 0.55" in low_conf.reason and low_conf.order_qty == 0
    weak = run(0.05)
    assert weak.action == "hold" and "|score| 0.05 < 0.10" in weak.reason


def test_volatility_sizing():
    calm = run(1.0, sizing="volatility", volatility={"AAPL": 0.5 / 100}, fraction=0.2)  # 1% / 0.5% = 2 -> capped 0.2
    wild = run(1.0, sizing="volatility", volatility={"AAPL": 0.04}, fraction=0.2)  # 1% / 4% = 0.25 -> 0.2
    wilder = run(1.0, sizing="volatility", volatility={"AAPL": 0.10}, fraction=0.2)  # 0.1 -> 10,000 -> 100 shares
    assert calm.order_qty == 200.0 and wild.order_qty == 200.0 and wilder.order_qty == 100.0
    missing = run(1.0, sizing="volatility")
    assert missing.action == "hold" and missing.error == "invalid volatility None"


@pytest.mark.parametrize("price", [0.0, -5.0, float("nan"), None])
def test_bad_prices_hold_with_an_error(price):
    d = run(0.9, price=price)
    assert d.action == "hold" and d.order_qty == 0 and d.error and "price" in d.error


def test_tiny_orders_are_holds():
    assert run(0.5, price=100.0, position=24.995, fractionable={"AAPL": True}, min_notional=1.0).action == "hold"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sizing": "kelly"}, "sizing"), ({"fraction": 0}, "fraction"), ({"min_confidence": 2}, "min_confidence")],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        run(0.5, **kwargs)
    with pytest.raises(InvalidInputError, match="equity"):
        decide(["AAPL"], [0.5], [1.0], {"AAPL": 1.0}, {}, 0.0)
    with pytest.raises(InvalidInputError, match="one value per symbol"):
        decide(["AAPL", "MSFT"], [0.5], [1.0], {}, {}, 1.0)
