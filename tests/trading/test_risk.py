"""Hard risk limits: every rule rejects what it must and passes what it may, with its reason and name."""

from __future__ import annotations

import math
import sys

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.trading.risk import (
    KILL_SWITCH_STATES,
    AccountState,
    ProposedOrder,
    RiskLimits,
    RiskVerdict,
    check_order,
    check_orders,
    normalise_kill_switch,
)

LIMITS = RiskLimits()


def account(**overrides) -> AccountState:
    """A healthy 100k account, flat except 50 MSFT long, everything tradable and open."""
    base = dict(
        equity=100_000.0,
        cash=50_000.0,
        buying_power=50_000.0,
        start_of_day_equity=100_000.0,
        positions={"MSFT": 50.0},
        orders_today={},
        tradable={"AAPL": True, "MSFT": True, "TSLA": True},
        shortable={"AAPL": True, "MSFT": True},
        market_open={"AAPL": True, "MSFT": True, "TSLA": True},
    )
    base.update(overrides)
    return AccountState(**base)


def order(**overrides) -> ProposedOrder:
    """A buy of 10 AAPL at 100 (notional 1,000), confidence 0.8."""
    base = dict(symbol="AAPL", side="buy", qty=10.0, price=100.0, confidence=0.8)
    base.update(overrides)
    return ProposedOrder(**base)


def assert_rejected(verdict: RiskVerdict, rule: str, *fragments: str) -> None:
    assert not verdict.approved, verdict
    assert verdict.rule == rule, verdict
    for fragment in fragments:
        assert fragment in verdict.reason, verdict.reason


def assert_approved(verdict: RiskVerdict) -> None:
    assert verdict.approved, verdict
    assert verdict.rule is None
    assert verdict.reason == "approved"


def test_a_plain_order_is_approved():
    assert_approved(check_order(order(), account(), LIMITS))


# For each limit: (limits, order, account) it must reject, with the rule and reason fragments ...
REJECTS = {
    "max_order_notional": (
        {}, {"qty": 125.0}, {},
        ["notional 12,500.00 > max_order_notional 10,000.00"],
    ),
    "max_position_fraction": (
        {"max_order_notional": 50_000.0}, {"qty": 110.0}, {},
        ["11.00% of equity 100,000.00 > max_position_fraction 10.00%"],
    ),
    "max_open_positions": (
        {"max_open_positions": 1}, {}, {},
        ["opening AAPL with 1 open positions >= max_open_positions 1"],
    ),
    "max_orders_per_symbol_per_day": (
        {}, {}, {"orders_today": {"AAPL": 4}},
        ["4 orders in AAPL today >= max_orders_per_symbol_per_day 4"],
    ),
    "max_orders_per_day": (
        {"max_orders_per_day": 5}, {}, {"orders_today": {"MSFT": 3, "TSLA": 2}},
        ["5 orders today >= max_orders_per_day 5"],
    ),
    "daily_loss_limit": (
        {}, {}, {"equity": 97_000.0},
        ["equity 97,000.00 <= 97,000.00", "daily_loss_limit 3.00%", "only reducing orders pass"],
    ),
    "min_confidence": (
        {}, {"confidence": 0.5}, {},
        ["confidence 0.5000 < min_confidence 0.5500"],
    ),
    "buying_power": (
        {}, {"qty": 90.0}, {"buying_power": 8_000.0},
        ["buy notional 9,000.00 > buying_power 8,000.00"],
    ),
    "short_selling": (
        {}, {"side": "sell"}, {},
        ["sell 10 AAPL takes position 0 to -10", "allow_short False"],
    ),
}

# ... and a close case it may pass.
PASSES = {
    "max_order_notional": ({}, {"qty": 100.0}, {}),  # exactly 10,000.00
    "max_position_fraction": ({"max_order_notional": 50_000.0}, {"qty": 100.0}, {}),  # exactly 10%
    "max_open_positions": ({"max_open_positions": 2}, {}, {}),
    "max_orders_per_symbol_per_day": ({}, {}, {"orders_today": {"AAPL": 3, "MSFT": 4}}),
    "max_orders_per_day": ({"max_orders_per_day": 5}, {}, {"orders_today": {"MSFT": 2, "TSLA": 2}}),
    "daily_loss_limit": ({}, {}, {"equity": 97_000.01}),
    "min_confidence": ({}, {"confidence": 0.55}, {}),
    "buying_power": ({}, {"qty": 80.0}, {"buying_power": 8_000.0}),  # exactly the buying power
    "short_selling": ({"allow_short": True}, {"side": "sell"}, {}),  # AAPL is shortable
}


@pytest.mark.parametrize("rule", sorted(REJECTS))
def test_each_limit_rejects(rule):
    limit_kw, order_kw, account_kw, fragments = REJECTS[rule]
    verdict = check_order(order(**order_kw), account(**account_kw), RiskLimits(**limit_kw))
    assert_rejected(verdict, rule, *fragments)


@pytest.mark.parametrize("rule", sorted(PASSES))
def test_each_limit_passes_at_its_edge(rule):
    limit_kw, order_kw, account_kw = PASSES[rule]
    assert_approved(check_order(order(**order_kw), account(**account_kw), RiskLimits(**limit_kw)))


def test_every_limit_has_a_reject_and_a_pass_case():
    assert set(REJECTS) == set(PASSES)


# --- kill switch -----------------------------------------------------------------------------------------

REDUCING_SELL = dict(symbol="MSFT", side="sell", qty=20.0, price=400.0)


def test_kill_switch_active_passes():
    assert_approved(check_order(order(), account(), LIMITS, "active"))
    assert_approved(check_order(order(), account(), LIMITS))  # the default


def test_kill_switch_reduce_only_passes_a_reducing_sell_and_rejects_a_buy():
    assert_approved(check_order(order(**REDUCING_SELL), account(), LIMITS, "reduce_only"))
    assert_rejected(check_order(order(), account(), LIMITS, "reduce_only"), "kill_switch", "reduce_only")
    # adding to the long is an increase too
    buy_more = order(symbol="MSFT", side="buy", qty=1.0, price=400.0)
    assert_rejected(check_order(buy_more, account(), LIMITS, "reduce_only"), "kill_switch", "reduce_only")


def test_kill_switch_reduce_only_rejects_a_sell_that_flips_the_position():
    flip = order(symbol="MSFT", side="sell", qty=60.0, price=400.0)
    assert_rejected(check_order(flip, account(), LIMITS, "reduce_only"), "kill_switch", "reduce_only")


def test_kill_switch_reduce_only_passes_a_buy_to_cover():
    cover = order(symbol="AAPL", side="buy", qty=5.0)
    short = account(positions={"AAPL": -10.0})
    assert_approved(check_order(cover, short, LIMITS, "reduce_only"))


def test_kill_switch_halted_rejects_a_reducing_sell_too():
    verdict = check_order(order(**REDUCING_SELL), account(), LIMITS, "halted")
    assert_rejected(verdict, "kill_switch", "halted")


def test_kill_switch_unknown_value_halts():
    verdict = check_order(order(), account(), LIMITS, "paused")
    assert_rejected(verdict, "kill_switch", "halted")


def test_kill_switch_is_checked_before_anything_else():
    bad = order(qty=-1.0, symbol="ZZZ")
    assert_rejected(check_order(bad, account(), LIMITS, "halted"), "kill_switch")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "active"),
        ("", "active"),
        ("   ", "active"),
        ("active", "active"),
        (" ACTIVE\n", "active"),
        ("reduce_only", "reduce_only"),
        ("Reduce_Only", "reduce_only"),
        (" reduce-only ", "reduce_only"),
        ("reduce only", "reduce_only"),
        ("halted", "halted"),
        ("HALTED ", "halted"),
        ("halt", "halted"),
        ("on", "halted"),
        ("off", "halted"),
        ("activ", "halted"),
        (True, "halted"),
        (0, "halted"),
        (b"active", "halted"),
        (["active"], "halted"),
    ],
)
def test_normalise_kill_switch(raw, expected):
    assert normalise_kill_switch(raw) == expected
    assert normalise_kill_switch(raw) in KILL_SWITCH_STATES


# --- reducing orders -------------------------------------------------------------------------------------


def test_daily_loss_limit_allows_reducing_only():
    losing = account(equity=90_000.0)
    assert_approved(check_order(order(**REDUCING_SELL), losing, LIMITS))
    assert_rejected(check_order(order(), losing, LIMITS), "daily_loss_limit", "equity 90,000.00 <= 97,000.00")
    cover = order(side="buy", qty=5.0)
    assert_approved(check_order(cover, account(equity=90_000.0, positions={"AAPL": -10.0}), LIMITS))


def test_reducing_order_skips_position_and_notional_rules():
    # a big long (way over 10% of equity) sold down by an order above max_order_notional
    big = account(positions={"MSFT": 200.0}, equity=50_000.0, start_of_day_equity=60_000.0, buying_power=0.0)
    sell = order(symbol="MSFT", side="sell", qty=100.0, price=400.0)
    verdict = check_order(sell, big, RiskLimits(max_open_positions=0))
    assert_approved(verdict)


def test_reducing_order_still_needs_tradable_market_open_and_validity():
    sell = order(**REDUCING_SELL)
    assert_rejected(check_order(sell, account(tradable={"MSFT": False}), LIMITS), "tradable")
    assert_rejected(check_order(sell, account(market_open={"MSFT": False}), LIMITS), "market_open")
    assert_rejected(check_order(order(**{**REDUCING_SELL, "price": math.nan}), account(), LIMITS), "invalid_order")


# --- missing information ---------------------------------------------------------------------------------


def test_missing_tradable_rejects():
    verdict = check_order(order(), account(tradable={"MSFT": True}), LIMITS)
    assert_rejected(verdict, "tradable", "AAPL", "unknown")


def test_not_tradable_rejects():
    assert_rejected(check_order(order(), account(tradable={"AAPL": False}), LIMITS), "tradable", "not tradable")


def test_tradable_must_be_exactly_true():
    assert_rejected(check_order(order(), account(tradable={"AAPL": "yes"}), LIMITS), "tradable")


def test_missing_market_state_rejects():
    verdict = check_order(order(), account(market_open={"MSFT": True}), LIMITS)
    assert_rejected(verdict, "market_open", "AAPL", "unknown")


def test_closed_market_rejects():
    assert_rejected(check_order(order(), account(market_open={"AAPL": False}), LIMITS), "market_open", "closed")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"qty": 0.0}, "qty"),
        ({"qty": -5.0}, "qty"),
        ({"qty": math.inf}, "qty"),
        ({"qty": math.nan}, "qty"),
        ({"price": 0.0}, "price"),
        ({"price": -1.0}, "price"),
        ({"price": math.nan}, "price"),
        ({"price": math.inf}, "price"),
        ({"price": None}, "price"),
        ({"side": "BUY"}, "side"),
        ({"side": "short"}, "side"),
        ({"symbol": ""}, "symbol"),
        ({"confidence": math.nan}, "confidence"),
        ({"confidence": 1.5}, "confidence"),
        ({"qty": 1.5, "fractionable": False}, "not fractionable"),
    ],
)
def test_invalid_order_rejects(overrides, fragment):
    assert_rejected(check_order(order(**overrides), account(), LIMITS), "invalid_order", fragment)


def test_whole_qty_passes_when_not_fractionable_and_fraction_passes_when_fractionable():
    assert_approved(check_order(order(qty=2.0, fractionable=False), account(), LIMITS))
    assert_approved(check_order(order(qty=2.5), account(), LIMITS))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"equity": math.nan}, "equity"),
        ({"buying_power": math.inf}, "buying_power"),
        ({"start_of_day_equity": None}, "start_of_day_equity"),
        ({"positions": {"AAPL": math.nan}}, "position of AAPL"),
        ({"orders_today": {"MSFT": -1}}, "orders_today"),
        ({"equity": 0.0}, "equity 0.00 <= 0"),
        ({"start_of_day_equity": 0.0}, "start_of_day_equity 0.00 <= 0"),
    ],
)
def test_invalid_account_state_rejects(overrides, fragment):
    assert_rejected(check_order(order(), account(**overrides), LIMITS), "account_state", fragment)


# --- shorting --------------------------------------------------------------------------------------------


def test_short_rejected_when_symbol_not_shortable():
    verdict = check_order(order(side="sell", symbol="TSLA"), account(), RiskLimits(allow_short=True))
    assert_rejected(verdict, "short_selling", "TSLA is not marked shortable")


def test_short_rejected_when_shortable_is_false():
    verdict = check_order(order(side="sell"), account(shortable={"AAPL": False}), RiskLimits(allow_short=True))
    assert_rejected(verdict, "short_selling", "not marked shortable")


def test_sell_through_zero_is_a_short():
    flip = order(symbol="MSFT", side="sell", qty=60.0, price=100.0)
    assert_rejected(check_order(flip, account(), LIMITS), "short_selling", "position 50 to -10")
    assert_approved(check_order(flip, account(), RiskLimits(allow_short=True)))


def test_selling_the_whole_long_is_not_a_short():
    assert_approved(check_order(order(symbol="MSFT", side="sell", qty=50.0, price=400.0), account(), LIMITS))


def test_short_position_fraction_counts_the_absolute_value():
    limits = RiskLimits(allow_short=True, max_order_notional=50_000.0)
    add_short = order(side="sell", qty=60.0)
    verdict = check_order(add_short, account(positions={"AAPL": -50.0}), limits)
    assert_rejected(verdict, "max_position_fraction", "-110", "11.00%")


# --- batches ---------------------------------------------------------------------------------------------


def test_batch_position_fraction_accumulates():
    limits = RiskLimits(max_order_notional=50_000.0)
    first, second = order(qty=60.0), order(qty=60.0)
    assert_approved(check_order(second, account(), limits))  # each alone is 6%
    verdicts = check_orders([first, second], account(), limits)
    assert_approved(verdicts[0])
    assert_rejected(verdicts[1], "max_position_fraction", "position after order 120 AAPL", "12.00%")


def test_batch_orders_per_day_counts_across_symbols():
    limits = RiskLimits(max_orders_per_day=2)
    orders = [order(symbol="AAPL", qty=1.0), order(symbol="TSLA", qty=1.0), order(symbol="AAPL", qty=1.0)]
    verdicts = check_orders(orders, account(), limits)
    assert [v.approved for v in verdicts] == [True, True, False]
    assert_rejected(verdicts[2], "max_orders_per_day", "2 orders today >= max_orders_per_day 2")


def test_batch_orders_per_symbol_accumulate():
    verdicts = check_orders([order(qty=1.0)] * 3, account(orders_today={"AAPL": 2}), LIMITS)
    assert [v.rule for v in verdicts] == [None, None, "max_orders_per_symbol_per_day"]


def test_batch_buying_power_is_consumed():
    orders = [order(qty=50.0), order(symbol="TSLA", qty=41.0), order(symbol="TSLA", qty=10.0)]
    verdicts = check_orders(orders, account(buying_power=9_000.0), LIMITS)
    assert_approved(verdicts[0])
    assert_rejected(verdicts[1], "buying_power", "buy notional 4,100.00 > buying_power 4,000.00")
    assert_approved(verdicts[2])  # 1,000 fits in the 4,000 left


def test_batch_open_positions_accumulate_and_rejected_orders_use_nothing():
    limits = RiskLimits(max_open_positions=2)
    orders = [order(qty=200.0), order(symbol="AAPL", qty=1.0), order(symbol="TSLA", qty=1.0)]
    verdicts = check_orders(orders, account(), limits)
    # the first is rejected (notional 20,000) and opens nothing; the second opens AAPL (2 open); TSLA would be 3rd
    assert [v.rule for v in verdicts] == ["max_order_notional", None, "max_open_positions"]
    assert_rejected(verdicts[2], "max_open_positions", "2 open positions >= max_open_positions 2")


def test_batch_closing_a_position_frees_a_slot():
    limits = RiskLimits(max_open_positions=1)
    orders = [order(symbol="MSFT", side="sell", qty=50.0, price=400.0), order(qty=1.0)]
    assert [v.approved for v in check_orders(orders, account(), limits)] == [True, True]


def test_batch_reduce_then_the_position_is_no_longer_reducible():
    orders = [order(**REDUCING_SELL), order(**REDUCING_SELL), order(**REDUCING_SELL)]
    verdicts = check_orders(orders, account(), LIMITS, "reduce_only")
    # 50 -> 30 -> 10; a third sell of 20 would flip to -10
    assert [v.rule for v in verdicts] == [None, None, "kill_switch"]


def test_batch_does_not_change_the_account_and_keeps_order():
    acct = account()
    orders = [order(qty=1.0), order(symbol="TSLA", qty=1.0)]
    verdicts = check_orders(orders, acct, LIMITS)
    assert [v.order for v in verdicts] == orders
    assert acct.positions == {"MSFT": 50.0}
    assert acct.orders_today == {}
    assert acct.buying_power == 50_000.0
    assert check_orders([], acct, LIMITS) == []


def test_account_mappings_are_copied():
    positions = {"MSFT": 50.0}
    acct = account(positions=positions)
    positions["MSFT"] = 0.0
    assert acct.positions["MSFT"] == 50.0
    with pytest.raises(TypeError):
        acct.positions["MSFT"] = 1.0  # type: ignore[index]


def test_account_rejects_non_mapping():
    with pytest.raises(InvalidInputError, match="positions"):
        account(positions=[("MSFT", 50.0)])


# --- limits validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_order_notional": 0}, "max_order_notional"),
        ({"max_order_notional": -1.0}, "max_order_notional"),
        ({"max_order_notional": math.inf}, "max_order_notional"),
        ({"max_order_notional": "10000"}, "max_order_notional"),
        ({"max_position_fraction": 0.0}, "max_position_fraction"),
        ({"max_position_fraction": 1.5}, "max_position_fraction"),
        ({"max_position_fraction": math.nan}, "max_position_fraction"),
        ({"daily_loss_limit": 0.0}, "daily_loss_limit"),
        ({"daily_loss_limit": 2.0}, "daily_loss_limit"),
        ({"min_confidence": -0.1}, "min_confidence"),
        ({"min_confidence": 1.1}, "min_confidence"),
        ({"max_open_positions": -1}, "max_open_positions"),
        ({"max_open_positions": 2.5}, "max_open_positions"),
        ({"max_orders_per_symbol_per_day": True}, "max_orders_per_symbol_per_day"),
        ({"max_orders_per_day": None}, "max_orders_per_day"),
        ({"allow_short": "yes"}, "allow_short"),
    ],
)
def test_limits_validation(kwargs, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        RiskLimits(**kwargs)


def test_limits_edges_are_valid():
    RiskLimits(max_position_fraction=1.0, daily_loss_limit=1.0, min_confidence=0.0, max_open_positions=0,
               max_orders_per_symbol_per_day=0, max_orders_per_day=0, max_order_notional=1)


def test_limits_from_dict():
    assert RiskLimits.from_dict(None) == RiskLimits()
    assert RiskLimits.from_dict({}) == RiskLimits()
    limits = RiskLimits.from_dict({"max_order_notional": 5_000, "allow_short": True})
    assert limits.max_order_notional == 5_000
    assert limits.allow_short is True
    assert limits.max_open_positions == 20


def test_limits_from_dict_unknown_keys_are_named():
    with pytest.raises(InvalidInputError, match="max_notional, min_conf"):
        RiskLimits.from_dict({"min_conf": 0.5, "max_notional": 1.0, "allow_short": True})


def test_limits_from_dict_bad_value_and_non_mapping():
    with pytest.raises(InvalidInputError, match="max_position_fraction"):
        RiskLimits.from_dict({"max_position_fraction": 5})
    with pytest.raises(InvalidInputError, match="mapping"):
        RiskLimits.from_dict([("allow_short", True)])  # type: ignore[arg-type]


def test_zero_limits_block_new_orders():
    assert_rejected(check_order(order(), account(), RiskLimits(max_orders_per_day=0)), "max_orders_per_day")
    assert_rejected(check_order(order(), account(), RiskLimits(max_open_positions=0)), "max_open_positions")


def test_module_never_imports_airflow():
    import subprocess

    code = "import sys, airflow_provider_portfolio.trading.risk; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
