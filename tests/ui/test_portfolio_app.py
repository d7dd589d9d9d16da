"""The Portfolio page's app through FastAPI's TestClient, on a constructed store (tests/ui/book.py): what each endpoint
answers (hand-checked), the bounds, a signed-out request refused, a store not created yet or unreachable.

Signed-in requests override the app's auth dependency (:data:`require_reader`, Airflow's ``requires_access_dag``);
signed-out ones override nothing. The real api-server and a browser: tests/airflow/test_portfolio_page.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.ui import queries
from airflow_provider_portfolio.ui.app import StoreSource, _airflow_store, create_app, require_reader
from tests.ui.book import ACCOUNT, BROKER_ACCOUNT, EQUITY, LAST, T0, write_book

ROUTES = ["/", "/api/book", "/api/equity", "/api/orders", "/api/decisions", "/api/forecast-health", "/api/freshness"]
SYMBOLS = ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN")


@pytest.fixture(scope="module")
def book_store(tmp_path_factory) -> PortfolioStore:
    store = PortfolioStore.for_sqlite_file(tmp_path_factory.mktemp("ui") / "portfolio.db")
    write_book(store)
    yield store
    store.dispose()


def client_for(factory, *, signed_in: bool = True) -> TestClient:
    app = create_app(StoreSource(factory))
    if signed_in:
        app.dependency_overrides[require_reader] = lambda: None
    return TestClient(app)


@pytest.fixture(scope="module")
def client(book_store) -> TestClient:
    return client_for(lambda: book_store)


def get(client: TestClient, path: str, **params) -> dict:
    resp = client.get(path, params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    return resp.json()


# -- auth -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ROUTES)
def test_signed_out_request_is_refused_with_no_data(book_store, path):
    calls = []
    client = client_for(lambda: calls.append(1) or book_store, signed_in=False)
    resp = client.get(path, params={"account": ACCOUNT})
    assert resp.status_code == 401
    assert not any(symbol in resp.text for symbol in SYMBOLS) and "98000" not in resp.text
    assert calls == []  # refused before the store is even opened
    if path == "/":  # a browser gets a note with a way to sign in, not the page
        assert resp.headers["content-type"].startswith("text/html")
        assert "Sign in to Airflow" in resp.text and "equity-chart" not in resp.text
    else:
        assert resp.json() == {"detail": "Not authenticated"}


def test_every_route_depends_on_airflows_access_check():
    from airflow.api_fastapi.core_api import security

    app = create_app(StoreSource(lambda: None))
    assert [d.dependency for d in app.router.dependencies] == [require_reader]
    assert require_reader.__qualname__.startswith(security.requires_access_dag.__name__)
    assert app.openapi_url is None and app.docs_url is None  # no unauthenticated schema or docs


# -- the book -------------------------------------------------------------------------------------------------------
def test_book_values_cash_and_positions_at_their_marks(client):
    book = get(client, "/api/book")
    assert book["account"] == ACCOUNT  # snapshotted last: the default
    assert book["accounts"] == [BROKER_ACCOUNT, ACCOUNT]
    assert (book["cash"], book["positions_value"], book["equity"]) == (98_000.0, 2_050.0, 100_050.0)
    assert book["total_return"] == pytest.approx(100_050 / 100_000 - 1)
    assert [p["symbol"] for p in book["positions"]] == ["AAPL", "MSFT"]  # largest market value first
    aapl, msft = book["positions"]
    assert (aapl["qty"], aapl["avg_price"], aapl["mark_price"], aapl["market_value"], aapl["unrealized_pnl"]) == (
        10.0, 100.0, 110.0, 1_100.0, 100.0)
    assert (msft["market_value"], msft["unrealized_pnl"]) == (950.0, -50.0)
    assert aapl["weight"] == pytest.approx(1_100 / 100_050)
    assert book["positions_total"] == 2 and book["message"] is None
    assert book["snapshot"]["equity"] == EQUITY[-1]
    assert book["health"]["monitoring"]["level"] == "RED" and book["health"]["risk_audit"] is None


def test_book_positions_honour_the_limit(client):
    book = get(client, "/api/book", limit=1)
    assert [p["symbol"] for p in book["positions"]] == ["AAPL"]
    assert book["positions_total"] == 2 and book["equity"] == 100_050.0  # valued on every position


def test_a_brokers_account_shows_its_last_snapshot(client):
    book = get(client, "/api/book", account=BROKER_ACCOUNT)
    assert (book["cash"], book["equity"], book["positions"]) == (5_000.0, 25_000.0, [])
    assert book["message"] == (f"{BROKER_ACCOUNT} is a broker's account: its positions are the broker's; the book "
                               "shows its last equity snapshot.")


def test_an_unknown_account_is_a_clear_422(client):
    resp = client.get("/api/book", params={"account": "simulated:nope"})
    assert resp.status_code == 422
    assert resp.json() == {"detail": f"account 'simulated:nope' is not in the store; accounts: "
                                     f"['{BROKER_ACCOUNT}', '{ACCOUNT}']"}


# -- the equity curve -------------------------------------------------------------------------------------------------
def test_equity_curve_with_its_drawdown(client):
    eq = get(client, "/api/equity")
    assert [p["equity"] for p in eq["points"]] == EQUITY
    assert eq["points"][0]["ts"] == T0.isoformat() and eq["until"] == LAST.isoformat()
    # peak 100,190 (day 19), trough 99,000 (day 20), last 99,950
    assert eq["drawdown"]["maximum"] == pytest.approx(1_190 / 100_190)
    assert eq["drawdown"]["current"] == pytest.approx(240 / 100_190)
    assert eq["change"] == pytest.approx(99_950 / 100_000 - 1)


def test_equity_window_and_points_are_bounded(client):
    window = get(client, "/api/equity", days=10)
    assert window["points_total"] == 11 and window["since"] == (LAST - timedelta(days=10)).isoformat()
    assert [p["equity"] for p in window["points"]] == EQUITY[-11:]
    few = get(client, "/api/equity", points=10)
    values = [p["equity"] for p in few["points"]]
    assert len(values) <= 10 and few["points_total"] == 40
    assert values[0] == EQUITY[0] and values[-1] == EQUITY[-1]
    assert max(EQUITY) in values and min(EQUITY) in values  # the peak and the trough stay on the chart
    assert few["drawdown"]["maximum"] == pytest.approx(1_190 / 100_190)  # measured on every snapshot
    for params in ({"points": 9}, {"points": queries.MAX_EQUITY_POINTS + 1}, {"days": 0},
                   {"days": queries.MAX_EQUITY_DAYS + 1}):
        assert client.get("/api/equity", params=params).status_code == 422, params


def test_downsample_keeps_the_ends_and_each_buckets_extremes():
    values = [0.0] * 100
    values[37], values[71] = -5.0, 9.0
    kept = queries.downsample(values, 10)
    assert len(kept) <= 10 and kept == sorted(kept)
    assert {0, 99, 37, 71} <= set(kept)
    assert queries.downsample(values[:8], 10) == list(range(8))


# -- orders and decisions --------------------------------------------------------------------------------------------
def test_orders_newest_first_and_bounded(client):
    orders = get(client, "/api/orders", account=ACCOUNT)["orders"]
    assert [(o["client_order_id"], o["status"]) for o in orders] == [("o-tsla", "new"), ("o-msft", "filled"),
                                                                     ("o-aapl", "filled")]
    assert orders[1]["filled_avg_price"] == 200.0 and orders[1]["qty"] == 5.0
    assert [o["symbol"] for o in get(client, "/api/orders", limit=2)["orders"]] == ["TSLA", "MSFT"]
    assert get(client, "/api/orders", account=BROKER_ACCOUNT) == {"account": BROKER_ACCOUNT, "orders": [],
                                                                  "message": "No orders yet."}
    for limit in (0, queries.MAX_LIMIT + 1):
        assert client.get("/api/orders", params={"limit": limit}).status_code == 422


def test_decisions_carry_their_risk_verdicts(client):
    data = get(client, "/api/decisions", account=ACCOUNT)
    by_symbol = {d["symbol"]: d for d in data["decisions"]}
    assert {s: d["verdict"] for s, d in by_symbol.items()} == {
        "AAPL": "approved", "MSFT": "approved", "TSLA": "rejected", "NVDA": "no order", "AMZN": "unchecked"}
    assert (by_symbol["TSLA"]["risk_rule"], by_symbol["TSLA"]["risk_reason"]) == ("max_position",
                                                                                  "max_position: over the limit")
    assert by_symbol["AAPL"]["client_order_id"] == "o-aapl" and by_symbol["AAPL"]["signals"] == {"trend": {"score": 0.4}}
    assert data["verdicts"] == {"approved": 2, "rejected": 1, "no order": 1, "unchecked": 1}
    assert len(get(client, "/api/decisions", limit=2)["decisions"]) == 2
    assert get(client, "/api/decisions", dag_id="another_dag")["decisions"] == []


# -- forecast health and freshness -----------------------------------------------------------------------------------
def test_forecast_health_per_model_and_worst_symbols_first(client):
    data = get(client, "/api/forecast-health")
    models = {m["model"]: m for m in data["models"]}
    assert (models["ssa"]["healthy"], models["ssa"]["insufficient_data"], models["garch"]["unhealthy"]) == (2, 1, 1)
    assert models["ssa"]["median_skill"] == pytest.approx(0.25)  # of 0.2 and 0.3 (TSLA's skill is missing)
    rows = [(s["symbol"], s["share_healthy"]) for s in data["symbols"]]
    assert rows == [("AAPL", 0.5), ("MSFT", 1.0), ("TSLA", None)]  # the ensemble is not a model of its own
    assert data["symbols"][0]["level"] == "YELLOW" and data["monitoring"]["level"] == "RED"
    limited = get(client, "/api/forecast-health", limit=1)
    assert [s["symbol"] for s in limited["symbols"]] == ["AAPL"] and limited["symbols_total"] == 3


def test_freshness_stalest_first_with_monitorings_verdicts(book_store):
    now = LAST + timedelta(days=1)
    data = queries.PortfolioReader(book_store, now=lambda: now).freshness(limit=2)
    assert [(s["symbol"], s["last_bar"]) for s in data["symbols"]] == [
        ("MSFT", "2026-09-30T00:00:00+00:00"), ("TSLA", "2026-10-05T00:00:00+00:00")]
    assert data["symbols"][0]["age_hours"] == pytest.approx(11 * 24 + 20)  # 2026-09-30 00:00 to 2026-10-11 20:00
    assert (data["symbols"][0]["level"], data["symbols"][1]["level"]) == ("RED", None)
    assert data["symbols_total"] == 3


def test_a_bad_timeframe_is_a_clear_422(client):
    resp = client.get("/api/freshness", params={"timeframe": "1Week"})
    assert resp.status_code == 422 and "1Week" in resp.json()["detail"]


# -- the store --------------------------------------------------------------------------------------------------------
def test_a_store_not_created_yet_answers_empty_with_a_message_and_stays_uncreated(tmp_path):
    path = tmp_path / "portfolio" / "portfolio.db"
    client = client_for(lambda: PortfolioStore.for_sqlite_file(path))
    for route in ROUTES[1:]:
        body = get(client, route)
        assert body["message"].startswith("No portfolio store yet (sqlite:///"), route
    book = get(client, "/api/book")
    assert (book["account"], book["positions"], book["equity"]) == (None, [], None)
    assert not path.exists() and not path.parent.exists()


def test_an_empty_store_says_what_is_missing(tmp_path):
    store = PortfolioStore.for_sqlite_file(tmp_path / "portfolio.db")
    store.schema_version()  # the file exists, no table yet
    client = client_for(lambda: store)
    assert get(client, "/api/book")["message"].startswith("The store has no trading ledger yet (schema version 0)")
    assert get(client, "/api/freshness")["message"] == "No 1Day bars in the store yet: the daily ETL loads them."
    store.migrate()
    assert get(client, "/api/book")["message"] == ("No trading account in the store yet: a trading DAG opens one on "
                                                   "its first cycle.")
    assert get(client, "/api/equity")["points"] == []


def test_an_unreadable_store_is_a_503_naming_it(tmp_path):
    (tmp_path / "not-a-db").write_text("this is not a database")
    client = client_for(lambda: PortfolioStore.for_sqlite_file(tmp_path / "not-a-db"))
    resp = client.get("/api/book")
    assert resp.status_code == 503
    assert "not-a-db" in resp.json()["detail"] and "not a database" in resp.json()["detail"]


def test_a_store_that_cannot_be_resolved_is_a_503_and_asked_again(book_store):
    from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError

    answers = [StoreError("store connection 'desk_store' does not exist"),
               InvalidInputError("[portfolio] store_lock_timeout must be seconds, got 'soon'"), book_store]

    def factory():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = client_for(factory)
    first, second = client.get("/api/book"), client.get("/api/book")
    assert (first.status_code, first.json()) == (503, {"detail": "store connection 'desk_store' does not exist"})
    assert (second.status_code, second.json()) == (503, {"detail": "the portfolio store is not configured right: "
                                                                   "[portfolio] store_lock_timeout must be seconds, "
                                                                   "got 'soon'"})
    assert get(client, "/api/book")["equity"] == 100_050.0


def test_the_store_is_made_once_and_read_off_the_event_loop(book_store, monkeypatch):
    made, on_loop = [], []
    original = queries.PortfolioReader.orders

    def orders(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(queries.PortfolioReader, "orders", orders)
    client = client_for(lambda: made.append(1) or book_store)
    for _ in range(3):
        get(client, "/api/orders")
    get(client, "/api/book")
    assert made == [1] and on_loop == [False, False, False]


def test_the_default_store_is_the_providers_not_created(tmp_path, monkeypatch, add_connection):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    store = _airflow_store()
    assert store.database.sqlite_file == (tmp_path / "portfolio" / "portfolio.db").resolve()
    assert queries.PortfolioReader(store).missing() is not None and not (tmp_path / "portfolio").exists()
    add_connection("portfolio_store_default", "sqlite", host=str(tmp_path / "desk.db"))
    assert _airflow_store().database.sqlite_file == (tmp_path / "desk.db").resolve()


# -- the page and the plugin -----------------------------------------------------------------------------------------
def test_the_page_is_self_contained(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    for needle in ('id="equity-chart"', "api/book", "api/equity", "api/orders", "api/decisions",
                   "api/forecast-health", "api/freshness"):
        assert needle in html, needle
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", html)  # no external asset, no CDN
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}  # the SVG namespace
    assert ".innerHTML" not in html  # values are written as text, never as markup


def test_plugin_mounts_the_app_and_lists_the_nav_entry():
    from airflow_provider_portfolio.plugins import PortfolioPlugin
    from airflow_provider_portfolio.ui.app import app

    plugin = PortfolioPlugin()
    assert plugin.fastapi_apps == [{"app": app, "url_prefix": "/portfolio", "name": "Portfolio"}]
    (view,) = plugin.external_views
    assert view == {"name": "Portfolio", "href": "portfolio/", "url_route": "portfolio", "destination": "nav",
                    "category": "browse"}


def test_plugins_that_are_not_the_api_server_never_import_the_app():
    code = textwrap.dedent("""
        import json, sys
        import airflow_provider_portfolio.plugins
        print(json.dumps([m for m in ("airflow_provider_portfolio.ui.app", "airflow.api_fastapi.core_api.security")
                          if m in sys.modules]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
