"""The book's accounting: fills applied to positions and cash, equity now and at an earlier instant."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.store.ledger import BookFill, Position, TradingLedger
from airflow_provider_portfolio.trading.accounting import (
    FillEffect,
    apply_fill,
    book_at,
    equity,
    equity_at,
    valuation_price,
    value_book,
)


def _position(symbol: str, qty: float, avg_price: float, mark_price: float | None = None) -> Position:
    return Position(symbol, qty, avg_price, mark_price, None)


# -- apply_fill -----------------------------------------------------------------------------------------

def test_a_buy_opens_a_long_at_the_fill_price_and_pays_price_and_commission():
    assert apply_fill(0.0, 0.0, side="buy", fill_qty=10.0, price=100.0, commission=1.5) == \
        FillEffect(10.0, 100.0, -1001.5)


def test_a_sell_opens_a_short_and_receives_the_price_less_commission():
    assert apply_fill(0.0, 0.0, side="sell", fill_qty=4.0, price=50.0, commission=0.5) == FillEffect(-4.0, 50.0, 199.5)


def test_adding_to_a_long_averages_the_prices_by_quantity():
    effect = apply_fill(10.0, 100.0, side="buy", fill_qty=30.0, price=120.0)
    assert effect.qty == 40.0
    assert effect.avg_price == pytest.approx((10 * 100.0 + 30 * 120.0) / 40, abs=1e-12)  # 115, not (100+120)/2
    assert effect.cash_change == -3600.0


def test_adding_to_a_short_averages_the_prices_by_quantity():
    effect = apply_fill(-2.0, 60.0, side="sell", fill_qty=6.0, price=40.0)
    assert (effect.qty, effect.cash_change) == (-8.0, 240.0)
    assert effect.avg_price == pytest.approx((2 * 60.0 + 6 * 40.0) / 8, abs=1e-12)  # 45


def test_reducing_keeps_the_average_price_of_what_is_left():
    assert apply_fill(10.0, 100.0, side="sell", fill_qty=4.0, price=130.0) == FillEffect(6.0, 100.0, 520.0)
    assert apply_fill(-10.0, 50.0, side="buy", fill_qty=3.0, price=40.0) == FillEffect(-7.0, 50.0, -120.0)


def test_closing_leaves_nothing():
    assert apply_fill(10.0, 100.0, side="sell", fill_qty=10.0, price=90.0, commission=1.0) == \
        FillEffect(0.0, 0.0, 899.0)
    assert apply_fill(-5.0, 20.0, side="buy", fill_qty=5.0, price=25.0) == FillEffect(0.0, 0.0, -125.0)


def test_flipping_through_zero_opens_the_rest_at_the_fill_price():
    assert apply_fill(10.0, 100.0, side="sell", fill_qty=15.0, price=110.0) == FillEffect(-5.0, 110.0, 1650.0)
    assert apply_fill(-4.0, 30.0, side="buy", fill_qty=10.0, price=25.0) == FillEffect(6.0, 25.0, -250.0)


def test_decimal_fills_sum_to_the_decimal_position_and_close_exactly():
    effect = apply_fill(1.2345, 300.0, side="buy", fill_qty=1.4268, price=300.0)
    assert effect.qty == 2.6613  # 1.2345 + 1.4268 is 2.6612999999999998 in binary
    assert apply_fill(effect.qty, effect.avg_price, side="sell", fill_qty=2.6613, price=310.0).qty == 0.0


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"side": "hold"}, "side must be"),
    ({"fill_qty": 0.0}, "fill_qty"),
    ({"fill_qty": math.nan}, "fill_qty"),
    ({"price": -1.0}, "price"),
    ({"price": math.inf}, "price"),
    ({"commission": -0.01}, "commission"),
])
def test_apply_fill_refuses_nonsense(kwargs, fragment):
    args = {"side": "buy", "fill_qty": 1.0, "price": 10.0, "commission": 0.0, **kwargs}
    with pytest.raises(InvalidInputError, match=fragment):
        apply_fill(0.0, 0.0, **args)


# -- equity ---------------------------------------------------------------------------------------------

def test_equity_is_cash_plus_quantity_times_price():
    assert equity(1_000.0, []) == 1_000.0
    assert equity(1_000.0, [(10.0, 12.0), (-3.0, 50.0)]) == 1_000.0 + 120.0 - 150.0  # a short is worth less than 0


def test_a_position_is_valued_at_its_mark_else_its_average_price():
    assert valuation_price(_position("AAPL", 10.0, 100.0, 104.0)) == 104.0
    assert valuation_price(_position("AAPL", 10.0, 100.0, None)) == 100.0


def test_value_book_adds_up_and_ignores_flat_positions():
    worth = value_book(500.0, [_position("AAPL", 10.0, 100.0, 103.0), _position("MSFT", -4.0, 50.0, 52.0),
                               _position("TSLA", 0.0, 0.0, 900.0)])
    assert worth.positions_value == pytest.approx(10 * 103.0 - 4 * 52.0, abs=1e-12)
    assert worth.cash == 500.0 and worth.cash + worth.positions_value == worth.equity


def test_book_at_undoes_the_later_fills_and_values_at_the_prices_then():
    # now: 10 AAPL bought after the instant for 1,000 + 1 commission, 5 MSFT held since before it
    cash_now = 10_000.0 - 1001.0
    positions = {"AAPL": _position("AAPL", 10.0, 100.0, 105.0), "MSFT": _position("MSFT", 5.0, 40.0, 45.0)}
    later = [BookFill("AAPL", "buy", 10.0, 100.0, 1.0)]
    assert book_at(cash_now, positions, later, {"MSFT": 42.0}) == 10_000.0 + 5 * 42.0  # at the price then
    assert book_at(cash_now, positions, later, {}) == 10_000.0 + 5 * 45.0  # no price then: the mark


def test_book_at_restores_a_position_closed_after_the_instant():
    # 8 TSLA sold after the instant at 200 (commission 2): it was held then; flat now, still marked at 210
    positions = {"TSLA": _position("TSLA", 0.0, 0.0, 210.0)}
    later = [BookFill("TSLA", "sell", 8.0, 200.0, 2.0)]
    cash_now = 1_000.0 + 1600.0 - 2.0
    assert book_at(cash_now, positions, later, {"TSLA": 190.0}) == 1_000.0 + 8 * 190.0
    assert book_at(cash_now, positions, later, {"TSLA": math.nan}) == 1_000.0 + 8 * 210.0


def test_book_at_without_later_fills_is_the_book_valued_at_the_prices():
    positions = {"AAPL": _position("AAPL", -3.0, 100.0, 95.0)}
    assert book_at(2_000.0, positions, [], {"AAPL": 90.0}) == 2_000.0 - 270.0


def test_equity_at_reads_the_ledgers_book_once(tmp_path):
    from airflow_provider_portfolio.store import PortfolioStore

    store = PortfolioStore.for_sqlite_file(tmp_path / "book.db")
    store.migrate()
    ledger = TradingLedger(store)
    account = "simulated:acc"
    ledger.open_account(account, 10_000.0)
    bar = datetime(2024, 3, 4, tzinfo=timezone.utc)
    for cid, side, qty, price, day in (("c1", "buy", 10.0, 100.0, 1), ("c2", "sell", 4.0, 120.0, 3)):
        ledger.record_intents([{"account": account, "client_order_id": cid, "dag_id": "d", "run_id": "r",
                                "symbol": "AAPL", "side": side, "qty": qty, "ref_price": price,
                                "bar_ts": bar, "created_at": bar}])
        ledger.accept(account, cid, cid)
        ledger.fill(account, cid, price=price, commission=0.0, bar_ts=bar + timedelta(days=day), rule=apply_fill)
    # at day 2 the sale had not happened: 10 AAPL and 9,000 cash, AAPL at 110 then
    assert equity_at(ledger, account, bar + timedelta(days=2), {"AAPL": 110.0}) == 9_000.0 + 10 * 110.0
    # before day 1 nothing was bought: the initial cash
    assert equity_at(ledger, account, bar, {"AAPL": 110.0}) == 10_000.0
    store.dispose()
