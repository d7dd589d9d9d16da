"""submit_at_most_once over a fake BrokerAPI: one POST per attempt, a look-up on every doubt, never a re-send.

The fake keeps a broker's own rule: an id names at most one order (a second POST with it is refused with
HTTP 422 ``client_order_id must be unique``), so "at most one order per id" is asserted on what the broker
holds, not only on how many POSTs were sent.
"""

from __future__ import annotations

import ast
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_portfolio.exceptions import (
    AuthenticationError,
    InvalidInputError,
    RateLimitError,
    VendorError,
    VendorUnavailableError,
)
from airflow_provider_portfolio.trading.brokers import (
    BrokerAPI,
    BrokerRejectedError,
    OrderRequest,
    OrderState,
    OrderStateUnknownError,
)
from airflow_provider_portfolio.trading.submission import (
    DuplicateClientOrderIdError,
    OrderNotPlacedError,
    OrderOutcomeUnknownError,
    is_ambiguous,
    order_state,
    place_order,
    submit_at_most_once,
)

BAR = datetime(2024, 6, 3, tzinfo=timezone.utc)
CID = "cycle-20240603-AAPL-buy"
REQUEST = OrderRequest(CID, "AAPL", "buy", 10.0, 190.0, BAR)
TIMEOUT = VendorUnavailableError("the broker did not answer the order within 7 s", conn_id="fake")
GATEWAY = VendorUnavailableError("the broker answered the order with HTTP 503: service unavailable",
                                 conn_id="fake", status_code=503)


class FakeBrokerAPI:
    """A broker's API over a dict of orders.

    :ivar post_script: what the next POSTs do, one each (``accept`` when empty): ``accept``;
        ``accept_then_timeout`` (the broker keeps the order, the answer is lost); or an exception raised
        before the broker sees anything (``GATEWAY``: a 5xx in front of it).
    :ivar lookup_script: what the next look-ups do, one each (answer truthfully when empty): ``hide`` (answer
        none though the broker holds it: a lagging read) or an exception.
    """

    name = "fake"
    is_live = False

    def __init__(self) -> None:
        self.orders: dict[str, dict] = {}
        self.posts: list[dict] = []
        self.lookups: list[str] = []
        self.post_script: list = []
        self.lookup_script: list = []

    def get_account(self) -> dict:
        return {"equity": "100000", "cash": "100000", "buying_power": "200000", "last_equity": "100000"}

    def get_positions(self) -> list[dict]:
        return []

    def get_asset(self, symbol: str) -> dict:
        return {"symbol": symbol, "tradable": True, "status": "active"}

    def get_order_by_client_order_id(self, client_order_id: str) -> dict | None:
        self.lookups.append(client_order_id)
        action = self.lookup_script.pop(0) if self.lookup_script else None
        if isinstance(action, BaseException):
            raise action
        if action == "hide":
            return None
        return self.orders.get(client_order_id)

    def post_order(self, order) -> dict:
        if order["type"] not in ("market", "limit"):
            raise InvalidInputError(f"type must be market or limit, got {order['type']!r}")
        self.posts.append(dict(order))
        action = self.post_script.pop(0) if self.post_script else "accept"
        if isinstance(action, BaseException):
            raise action
        if order["client_order_id"] in self.orders:
            raise VendorError("the broker answered the order with HTTP 422: client_order_id must be unique",
                              conn_id="fake", status_code=422)
        placed = {"id": f"id-{len(self.orders) + 1}", "status": "accepted", "filled_qty": "0",
                  "filled_avg_price": None, **order}
        self.orders[order["client_order_id"]] = placed
        if action == "accept_then_timeout":
            raise TIMEOUT
        return placed


@pytest.fixture
def api() -> FakeBrokerAPI:
    return FakeBrokerAPI()


def test_the_fake_is_a_broker_api(api):
    assert isinstance(api, BrokerAPI)


def test_looks_up_then_posts_once(api):
    state = submit_at_most_once(api, REQUEST)
    assert state == OrderState(CID, "accepted", "id-1", 0.0, None)
    assert api.lookups == [CID] and len(api.posts) == 1
    assert api.posts[0] == {"symbol": "AAPL", "side": "buy", "qty": 10.0, "type": "market", "time_in_force": "day",
                            "client_order_id": CID}


def test_an_order_already_at_the_broker_is_returned_and_not_sent(api):
    submit_at_most_once(api, REQUEST)
    again = submit_at_most_once(api, REQUEST)  # an Airflow task retry after the first try placed it
    assert again.broker_order_id == "id-1" and len(api.posts) == 1 and len(api.orders) == 1


def test_timeout_after_the_broker_accepted_is_looked_up_not_resent(api, caplog):
    api.post_script = ["accept_then_timeout"]
    with caplog.at_level("WARNING"):
        state = submit_at_most_once(api, REQUEST)
    assert state.status == "accepted" and state.broker_order_id == "id-1"
    assert len(api.posts) == 1 and api.lookups == [CID, CID]
    assert "failed ambiguously" in caplog.text and "already existed" in caplog.text


def test_5xx_before_the_broker_saw_it_is_not_placed_and_a_retry_with_the_same_id_sends_it(api):
    """Decided: the broker, asked right after, has no order -> OrderNotPlacedError (an OrderStateUnknownError: the
    cycle leaves the order pending_submit and never re-sends it in this attempt, since a request in flight may
    land after the look-up). The next attempt looks the id up first, finds nothing, and sends it: one order."""
    api.post_script = [GATEWAY]
    with pytest.raises(OrderNotPlacedError, match="NOT placed.*HTTP 503.*safe to retry with the same") as info:
        submit_at_most_once(api, REQUEST)
    assert isinstance(info.value, OrderStateUnknownError) and info.value.cause is GATEWAY
    assert len(api.posts) == 1 and api.lookups == [CID, CID] and api.orders == {}

    state = submit_at_most_once(api, REQUEST)  # the retry with the SAME id
    assert state.status == "accepted" and len(api.posts) == 2 and list(api.orders) == [CID]


def test_state_unknown_when_the_lookup_fails_too(api):
    api.post_script = ["accept_then_timeout"]
    api.lookup_script = [None, VendorUnavailableError("the broker answered the look-up with HTTP 500", conn_id="fake",
                                                      status_code=500)]
    with pytest.raises(OrderOutcomeUnknownError, match="UNKNOWN.*SAME client_order_id") as info:
        submit_at_most_once(api, REQUEST)
    assert isinstance(info.value, OrderStateUnknownError)
    assert "connection 'fake'" not in str(info.value)  # the vendor errors' prefix is not repeated inside
    assert len(api.posts) == 1  # never re-sent
    assert submit_at_most_once(api, REQUEST).broker_order_id == "id-1"  # the retry settles it: still one POST
    assert len(api.posts) == 1


def test_an_unexpected_exception_after_sending_is_looked_up(api):
    api.post_script = [RuntimeError("connection pool closed")]
    with pytest.raises(OrderNotPlacedError, match="RuntimeError|connection pool closed"):
        submit_at_most_once(api, REQUEST)
    assert len(api.posts) == 1 and api.lookups == [CID, CID]


@pytest.mark.parametrize("error", [
    RateLimitError("HTTP 429: too many requests", kind=RateLimitError.BURST, status_code=429),
    VendorError("the broker answered the order with a body that is not JSON", conn_id="fake"),
    VendorError("HTTP 408: request timeout", status_code=408),
], ids=["429", "unreadable_2xx", "408"])
def test_every_ambiguous_answer_is_looked_up(api, error):
    assert is_ambiguous(error)
    api.post_script = [error]
    with pytest.raises(OrderNotPlacedError):
        submit_at_most_once(api, REQUEST)
    assert len(api.posts) == 1 and api.lookups == [CID, CID]


def test_duplicate_id_refusal_returns_the_order_the_lookup_first_missed(api):
    api.orders[CID] = {"id": "id-0", "client_order_id": CID, "symbol": "AAPL", "side": "buy", "status": "filled",
                       "filled_qty": "10", "filled_avg_price": "190.5"}
    api.lookup_script = ["hide"]  # a lagging read: the first look-up misses the order
    state = submit_at_most_once(api, REQUEST)
    assert (state.status, state.filled_qty, state.filled_avg_price) == ("filled", 10.0, 190.5)
    assert len(api.posts) == 1 and len(api.orders) == 1


def test_duplicate_id_without_an_order_is_a_rejection(api):
    api.post_script = [VendorError("HTTP 422: client_order_id must be unique", status_code=422)]
    with pytest.raises(DuplicateClientOrderIdError, match="already used, yet has no order") as info:
        submit_at_most_once(api, REQUEST)
    assert isinstance(info.value, BrokerRejectedError) and len(api.posts) == 1


@pytest.mark.parametrize("error", [
    VendorError("HTTP 403: insufficient buying power", status_code=403),
    VendorError("HTTP 422: qty must be whole for this asset", status_code=422),
    AuthenticationError("HTTP 401: request is not authorized", status_code=401),
], ids=["buying_power", "other_422", "refused_key"])
def test_definitive_refusals_are_rejections_sent_once_never_looked_up_again(api, error):
    api.post_script = [error]
    with pytest.raises(BrokerRejectedError, match=str(error).split(": ", 1)[1]):
        submit_at_most_once(api, REQUEST)
    assert len(api.posts) == 1 and api.lookups == [CID]


def test_place_order_raises_refusals_as_the_api_did(api):
    refusal = VendorError("HTTP 403: insufficient buying power", status_code=403)
    api.post_script = [refusal]
    with pytest.raises(VendorError) as info:
        place_order(api, {"symbol": "AAPL", "side": "buy", "qty": 1, "type": "market", "time_in_force": "day",
                          "client_order_id": CID})
    assert info.value is refusal


def test_an_id_naming_another_order_is_refused_and_nothing_sent(api):
    api.orders[CID] = {"id": "id-0", "client_order_id": CID, "symbol": "MSFT", "side": "buy", "status": "new"}
    with pytest.raises(BrokerRejectedError, match="already names another order"):
        submit_at_most_once(api, REQUEST)
    assert api.posts == []


def test_a_failing_first_lookup_sends_nothing(api):
    api.lookup_script = [VendorUnavailableError("HTTP 503", status_code=503)]
    with pytest.raises(OrderStateUnknownError):
        submit_at_most_once(api, REQUEST)
    assert api.posts == []


def test_bad_fields_are_rejected_before_anything_is_sent(api):
    with pytest.raises(BrokerRejectedError, match="type must be market or limit"):
        submit_at_most_once(api, REQUEST, order_type="trailing_stop")
    assert api.posts == [] and api.lookups == [CID]
    with pytest.raises(InvalidInputError, match="client_order_id"):
        place_order(api, {"symbol": "AAPL", "side": "buy", "qty": 1, "type": "market", "time_in_force": "day"})


def test_crypto_time_in_force_is_passed_through(api):
    submit_at_most_once(api, OrderRequest("c-btc", "BTC/USD", "sell", 0.01, 70000.0, BAR), time_in_force="gtc")
    assert api.posts[0]["time_in_force"] == "gtc" and api.posts[0]["symbol"] == "BTC/USD"


def test_order_state_reads_decimal_strings():
    state = order_state({"id": 7, "client_order_id": CID, "status": "FILLED", "filled_qty": "3",
                         "filled_avg_price": "nan"})
    assert state == OrderState(CID, "filled", "7", 3.0, None)


def test_the_trading_package_imports_no_adapter_and_no_airflow():
    """Domain rule: not even under TYPE_CHECKING."""
    root = Path(__file__).parents[2] / "airflow_provider_portfolio" / "trading"
    adapters = ("hooks", "operators", "sensors", "triggers", "timetables", "plugins", "get_provider_info", "config",
                "agents")
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "airflow" or (parts[0] == "airflow_provider_portfolio" and len(parts) > 1
                                             and parts[1] in adapters):
                    offenders.append(f"{path.relative_to(root)}: {name}")
    assert offenders == []
