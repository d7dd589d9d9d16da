"""The three connection types as users meet them: a real `airflow api-server` and headless Chromium.

- the hook metadata endpoint returns each type with its display name, relabelled/hidden standard
  fields and its own extra fields;
- Admin -> Connections -> Add Connection, in Debian's chromium driven through chromedriver: select
  each type and find its fields on the page (a screenshot per type goes to ``.artifacts/``);
- the Test Connection flow (``[core] test_connection = Enabled``) runs each hook's
  ``test_connection()`` in the api-server against a vendor double on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.airflow.realairflow import REPO, AirflowServer, airflow_env, run_airflow
from tests.fakevendor import FakeVendor
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET, ALPHAVANTAGE_KEY, FINNHUB_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FIXTURES = REPO / "tests" / "hooks" / "fixtures"
ARTIFACTS = REPO / ".artifacts" / "connections-ui"

# type -> (display name, standard-field labels, extra-field labels, labels that must not be on the form)
FORMS = {
    "alpaca": (
        "Alpaca",
        ["API key ID", "API secret key"],
        ["Paper trading", "Market data feed", "Trading API base URL", "Market data API base URL",
         "Request timeout (seconds)"],
        ["Host", "Port", "Schema"],
    ),
    "alphavantage": ("Alpha Vantage", ["API key"], ["Request timeout (seconds)", "API base URL"],
                     ["Host", "Login", "Port"]),
    "finnhub": ("Finnhub", ["API key"], ["Request timeout (seconds)", "API base URL", "Crypto exchange"],
                ["Host", "Login", "Port"]),
}


def fixture(path: str) -> object:
    return json.loads((FIXTURES / path).read_text())


@pytest.fixture(scope="module")
def vendor():
    routes = {
        "/api/v1/quote": fixture("finnhub/quote_aapl.json"),
        "/query": fixture("alphavantage/global_quote_ibm.json"),
        "/v2/account": fixture("alpaca/account.json"),
    }
    denied = {
        # Alpha Vantage answers a bad key with HTTP 200 and a JSON note; Alpaca with a 401 code body.
        "/query": (200, {"Information": "Invalid API key. Please claim your free API key on "
                                        "(https://www.alphavantage.co/support/#api-key). It should take less than 20 "
                                        "seconds."}),
        "/v2/account": (401, {"code": 40110000, "message": "request is not authorized"}),
    }
    with FakeVendor(routes, keys={FINNHUB_KEY, ALPHAVANTAGE_KEY, ALPACA_KEY_ID}, denied=denied) as fake:
        yield fake


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-home")
    run_airflow(airflow_env(home), "db", "migrate")
    with AirflowServer(
        home, ("api-server",), ("metadatabase",), login=False, AIRFLOW__CORE__TEST_CONNECTION="Enabled"
    ) as server:
        yield server


def test_hook_metadata_lists_the_three_types_with_their_fields(api_server):
    meta = {h["connection_type"]: h for h in api_server.request("GET", "/ui/connections/hook_meta")}
    for conn_type, (display, standard_labels, extra_labels, _) in FORMS.items():
        labels = [*standard_labels, *extra_labels]
        entry = meta[conn_type]
        assert entry["hook_name"] == display
        assert entry["hook_class_name"].startswith("airflow_provider_portfolio.hooks.")
        titles = {f["schema"]["title"] for f in (entry["extra_fields"] or {}).values()}
        standard = entry["standard_fields"]
        titles |= {standard[f]["title"] for f in ("login", "password") if standard[f] and standard[f]["title"]}
        assert set(labels) <= titles, (conn_type, titles)
        assert standard["host"]["hidden"] and standard["port"]["hidden"]
        assert standard["password"]["title"] in ("API key", "API secret key")
    paper = meta["alpaca"]["extra_fields"]["paper"]
    assert paper["value"] is True and "boolean" in paper["schema"]["type"]
    assert meta["alpaca"]["extra_fields"]["feed"]["schema"]["enum"] == ["iex", "sip"]


@pytest.fixture(scope="module")
def browser(api_server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are needed: make system-deps"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.implicitly_wait(0)
    # Sign in once: the first visit is redirected through the login URL (all-admins mode sets the
    # token cookie there) and lands on the home page.
    session.get(f"{api_server.base}/")
    wait_for(lambda: "Admin" in session.execute_script("return document.body.innerText"), what="the signed-in UI")
    yield session
    session.quit()


def wait_for(fn, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last saw {value!r}")
        time.sleep(0.3)


def click(browser, selector: str, text: str) -> bool:
    """Click (a real pointer click) the first element matching ``selector`` whose text is ``text``.

    :return: False when there is none yet or it went stale (the page re-rendered), so callers retry.
    """
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        ElementNotInteractableException,
        StaleElementReferenceException,
    )

    element = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].find(e => e.innerText.trim() === arguments[1]) || null;",
        selector,
        text,
    )
    if element is None:
        return False
    try:
        element.click()
    except (StaleElementReferenceException, ElementClickInterceptedException, ElementNotInteractableException):
        return False
    return True


@pytest.mark.parametrize("conn_type", sorted(FORMS))
def test_add_connection_form_shows_the_types_own_fields(api_server, browser, conn_type):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    display, standard, extra, unwanted = FORMS[conn_type]
    browser.get(f"{api_server.base}/connections")
    # The page re-renders while it loads, which stales element handles: click and read through
    # single script calls, and type into the selector again if its handle went stale.
    wait_for(lambda: click(browser, "button", "Add Connection"), what="the Add Connection button")

    def choose_type() -> bool:
        try:
            browser.find_element(By.CSS_SELECTOR, "input[role=combobox]").send_keys(display)
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    wait_for(choose_type, what="the type selector")
    wait_for(lambda: click(browser, "[role=option]", display), what=f"option {display}")

    def labels() -> set[str]:
        # Read in one script call: the form re-renders while it loads, which stales element handles.
        texts = browser.execute_script(
            "return [...document.querySelectorAll('label')]"
            ".filter(l => l.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})"
            " && l.getBoundingClientRect().height > 0).map(l => l.innerText)"
        )
        return {" ".join(t.replace("*", "").split()) for t in texts}

    def shows(wanted_labels: set[str]):
        return lambda: labels() >= wanted_labels

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The form is an accordion: "Standard Fields" open first, then "Extra Fields" (one open at a time).
    standard, extra = set(standard), set(extra)
    try:
        wait_for(shows(standard), what=f"the {display} standard fields")
        assert not set(unwanted) & labels(), labels()
        time.sleep(1.0)
        browser.save_screenshot(str(ARTIFACTS / f"add-connection-{conn_type}-standard.png"))
        if not labels() >= extra:  # Airflow 3.3 opens one section at a time; 3.1 may show both
            wait_for(lambda: click(browser, "button", "Extra Fields"), what="the Extra Fields section")
        wait_for(shows(extra), what=f"the {display} extra fields")
        time.sleep(1.0)  # let the accordion's animation finish, for a clean screenshot
    finally:
        browser.save_screenshot(str(ARTIFACTS / f"add-connection-{conn_type}.png"))
    assert labels() >= extra, (extra, labels())
    assert (ARTIFACTS / f"add-connection-{conn_type}.png").stat().st_size > 10_000


TESTS = {
    "finnhub": lambda url: {"password": FINNHUB_KEY, "extra": {"base_url": f"{url}/api/v1"}},
    "alphavantage": lambda url: {"password": ALPHAVANTAGE_KEY, "extra": {"base_url": url}},
    "alpaca": lambda url: {
        "login": ALPACA_KEY_ID, "password": ALPACA_SECRET, "extra": {"trading_base_url": url, "paper": True},
    },
}


@pytest.mark.parametrize("conn_type", sorted(TESTS))
def test_test_connection_runs_the_hook_against_the_vendor(api_server, vendor, conn_type):
    fields = TESTS[conn_type](vendor.url)
    body = {"connection_id": f"{conn_type}_ui", "conn_type": conn_type, **fields, "extra": json.dumps(fields["extra"])}
    seen = len(vendor.requests)
    answer = api_server.request("POST", "/api/v2/connections/test", body)
    assert answer["status"] is True, answer
    assert len(vendor.requests) > seen  # the hook really called the vendor double

    wrong = {**body, "password": "test-key-wrong-0000", "login": "PKWRONGKEY00000" if conn_type == "alpaca" else None}
    answer = api_server.request("POST", "/api/v2/connections/test", wrong)
    assert answer["status"] is False
    assert "test-key-wrong-0000" not in answer["message"] and "PKWRONGKEY00000" not in answer["message"]
    assert answer["message"]
