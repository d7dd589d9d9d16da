"""The Portfolio page in a real `airflow api-server` (simple auth manager with a password) and headless Chromium.

The embedded store under the server's ``$AIRFLOW_HOME`` holds the small desk of tests/ui/book.py (no store connection:
the page finds the store the provider's jobs use). Then:

- the plugin is listed by Airflow with its app and its nav entry;
- signed in through Airflow's own sign-in page, the Browse menu's "Portfolio" entry shows the page inside the UI with
  the book's symbols and the equity curve drawn (an SVG path through every snapshot); screenshots go to
  ``.artifacts/portfolio-page/``;
- an API client with a bearer token reads the JSON;
- signed out (plain HTTP without a token, a bad token, a fresh browser): refused, with no data in the body.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest

from airflow_provider_portfolio.store import PortfolioStore
from tests.airflow.realairflow import REPO, AirflowServer, airflow_env, run_airflow
from tests.airflow.test_connections_ui import click, wait_for
from tests.ui.book import EQUITY, write_book

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ARTIFACTS = REPO / ".artifacts" / "portfolio-page"
ROUTES = ["/portfolio/", "/portfolio/api/book", "/portfolio/api/equity", "/portfolio/api/orders",
          "/portfolio/api/decisions", "/portfolio/api/forecast-health", "/portfolio/api/freshness"]
SYMBOLS = ("AAPL", "MSFT", "TSLA")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("portfolio-page-home")
    store = PortfolioStore.for_sqlite_file(home / "portfolio" / "portfolio.db")  # the embedded store's path
    write_book(store)
    store.dispose()
    run_airflow(airflow_env(home), "db", "migrate")
    with AirflowServer(home, ("api-server",), ("metadatabase",), login=True) as server:
        yield server


def raw_get(server: AirflowServer, path: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"{server.base}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "Debian's chromium and chromium-driver are needed: make system-deps"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,1700", "--lang=en-US"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.implicitly_wait(0)
    return session


def admin_password(server: AirflowServer) -> str:
    return json.loads((server.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]


@pytest.fixture(scope="module")
def browser(server):
    """A browser signed in through Airflow's sign-in page (which sets the ``_token`` cookie)."""
    from selenium.webdriver.common.by import By

    session = chromium()
    try:
        session.get(f"{server.base}/")
        wait_for(lambda: session.find_elements(By.CSS_SELECTOR, "input[name=password]"), what="the sign-in page")
        session.find_element(By.CSS_SELECTOR, "input[name=username]").send_keys("admin")
        session.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(admin_password(server))
        wait_for(lambda: click(session, "button[type=submit]", "Sign in"), what="the Sign in button")
        wait_for(lambda: "Browse" in session.execute_script("return document.body.innerText"), timeout=60,
                 what="the signed-in UI")
        yield session
    finally:
        session.quit()


def test_airflow_lists_the_plugins_app_and_nav_entry(server):
    plugins = {p["name"]: p for p in server.request("GET", "/api/v2/plugins")["plugins"]}
    portfolio = plugins["portfolio"]
    assert [(a["name"], a["url_prefix"]) for a in portfolio["fastapi_apps"]] == [("Portfolio", "/portfolio")]
    (view,) = portfolio["external_views"]
    assert (view["name"], view["href"], view["url_route"], view["destination"], view["category"]) == (
        "Portfolio", "portfolio/", "portfolio", "nav", "browse")


@pytest.mark.parametrize("path", ROUTES)
def test_signed_out_requests_are_refused_with_no_data(server, path):
    for token in (None, "not-a-jwt"):
        status, body = raw_get(server, path, token)
        assert status in (401, 403), (path, token, status, body[:500])
        assert not any(symbol in body for symbol in SYMBOLS) and "100050" not in body, body[:500]
    status, body = raw_get(server, path)
    assert status == 401
    if path.endswith("/"):
        assert "Sign in to Airflow" in body and "equity-chart" not in body
    else:
        assert json.loads(body) == {"detail": "Not authenticated"}


def test_an_api_client_with_a_token_reads_the_book(server):
    book = server.request("GET", "/portfolio/api/book")
    assert book["account"] == "simulated:default" and book["equity"] == 100_050.0
    assert [p["symbol"] for p in book["positions"]] == ["AAPL", "MSFT"]
    equity = server.request("GET", "/portfolio/api/equity?points=10")
    assert len(equity["points"]) <= 10 and equity["points_total"] == len(EQUITY)


def test_signed_in_the_nav_entry_shows_the_book_and_the_equity_chart(server, browser):
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{server.base}/")
    wait_for(lambda: "Browse" in browser.execute_script("return document.body.innerText"), what="the UI")
    wait_for(lambda: click(browser, "button", "Browse"), what="the Browse menu")
    wait_for(lambda: click(browser, "[role=menuitem], a", "Portfolio"), what="the Portfolio entry")
    wait_for(lambda: browser.current_url.rstrip("/").endswith("/plugin/portfolio"), what="the plugin route")
    frame = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "iframe[title=Portfolio]"), what="the iframe")[0]
    browser.switch_to.frame(frame)
    try:
        wait_for(lambda: browser.execute_script("return document.body && document.body.dataset.loaded"), timeout=60,
                 what="the page's data")
        assert browser.execute_script("return document.body.dataset.loaded") == "true", \
            browser.execute_script("return document.getElementById('status').textContent")
        keys = browser.execute_script(
            "return [...document.querySelectorAll('#positions tr[data-key]')].map(r => r.dataset.key)")
        assert keys == ["AAPL", "MSFT"]
        text = browser.execute_script("return document.body.innerText")
        assert "TSLA" in text and "max_position" in text  # the rejected decision and its rule
        path = browser.execute_script("return document.getElementById('equity-line').getAttribute('d')")
        assert path.startswith("M") and path.count("L") == len(EQUITY) - 1  # one point per snapshot
        assert browser.execute_script("return document.getElementById('equity-chart').dataset.points") == str(
            len(EQUITY))
    finally:
        browser.switch_to.default_content()
        browser.save_screenshot(str(ARTIFACTS / "portfolio-in-airflow.png"))
    browser.get(f"{server.base}/portfolio/")
    wait_for(lambda: browser.execute_script("return document.body.dataset.loaded") == "true", what="the page alone")
    browser.save_screenshot(str(ARTIFACTS / "portfolio-page.png"))
    assert (ARTIFACTS / "portfolio-in-airflow.png").stat().st_size > 20_000


def test_a_fresh_browser_is_refused(server):
    session = chromium()
    try:
        session.get(f"{server.base}/portfolio/")
        text = session.execute_script("return document.body.innerText")
        assert "Sign in to Airflow" in text and not any(symbol in text for symbol in SYMBOLS)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        session.save_screenshot(str(ARTIFACTS / "signed-out.png"))
        session.get(f"{server.base}/portfolio/api/book")
        text = session.execute_script("return document.body.innerText")
        assert "Not authenticated" in text and "AAPL" not in text
    finally:
        session.quit()
