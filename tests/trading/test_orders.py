"""Client order ids: deterministic, unique per decision, within Alpaca's accepted form."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.hooks.alpaca import CLIENT_ORDER_ID_RE
from airflow_provider_portfolio.trading.orders import MAX_CLIENT_ORDER_ID, client_order_id

BAR = datetime(2024, 6, 4, 13, 30, tzinfo=timezone.utc)
ARGS = ("portfolio_auto_trader", "scheduled__2024-06-04T13:30:00+00:00", "AAPL", BAR, "buy")


def test_same_decision_same_id_and_shape():
    a = client_order_id(*ARGS)
    assert a == client_order_id(*ARGS)
    assert a.startswith("pf-AAPL-b-") and len(a) == len("pf-AAPL-b-") + 32 <= MAX_CLIENT_ORDER_ID
    assert CLIENT_ORDER_ID_RE.match(a)  # accepted by the Alpaca hook


def test_equal_instants_in_other_zones_and_iso_strings_give_the_same_id():
    new_york = BAR.astimezone(timezone(timedelta(hours=-4)))
    assert client_order_id(*ARGS[:3], new_york, "buy") == client_order_id(*ARGS)
    assert client_order_id(*ARGS[:3], "2024-06-04T13:30:00Z", " BUY ") == client_order_id(*ARGS)
    assert client_order_id(ARGS[0], ARGS[1], "aapl", BAR, "buy") == client_order_id(*ARGS)


@pytest.mark.parametrize("index", range(5))
def test_every_field_changes_the_id(index):
    changed = list(ARGS)
    changed[index] = {0: "other_dag", 1: "manual__x", 2: "MSFT", 3: BAR + timedelta(minutes=30), 4: "sell"}[index]
    assert client_order_id(*changed) != client_order_id(*ARGS)


def test_crypto_pairs_and_long_tickers_stay_within_the_limit():
    cid = client_order_id("d", "r", "BTC/USD", BAR, "sell")
    assert cid.startswith("pf-BTCUSD-s-") and CLIENT_ORDER_ID_RE.match(cid)
    long = client_order_id("d" * 300, "r" * 300, "ABCDEFGHIJKLMNOP", BAR, "buy")
    assert len(long) <= MAX_CLIENT_ORDER_ID and CLIENT_ORDER_ID_RE.match(long)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", "r", "AAPL", BAR, "buy"), "dag_id"),
        (("d", " ", "AAPL", BAR, "buy"), "run_id"),
        (("d", "r", None, BAR, "buy"), "symbol"),
        (("d", "r", "AAPL", datetime(2024, 6, 4, 13, 30), "buy"), "aware"),
        (("d", "r", "AAPL", "yesterday", "buy"), "ISO 8601"),
        (("d", "r", "AAPL", 1717507800, "buy"), "datetime"),
        (("d", "r", "AAPL", BAR, "short"), "side"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(InvalidInputError, match=match):
        client_order_id(*args)
