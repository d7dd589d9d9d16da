"""The report opened in Debian's headless chromium (driven through its chromedriver), as a reader opens the file: every
section is there, every chart is drawn (its SVG laid out with a non-zero size and holding drawn paths), nothing
was fetched or blocked (no resource loaded, no Content-Security-Policy complaint), and a screenshot of the whole
page goes to ``.artifacts/report/report.png``. Needs no Airflow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airflow_provider_portfolio.desk.report import build_report, write_report
from tests.desk.test_report import ACCOUNT, NOW, make_desk

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".artifacts" / "report"
SECTIONS = ("summary", "equity", "positions", "pnl", "forecast-health", "freshness", "decisions", "comparison")


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are needed: make system-deps"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


def charts_drawn(browser) -> list[dict]:
    """Each ``svg.chart`` of the open page: its label, laid-out size, drawn paths and texts."""
    return browser.execute_script("""
        return Array.from(document.querySelectorAll('svg.chart')).map(svg => {
            const box = svg.getBoundingClientRect();
            const drawn = Array.from(svg.querySelectorAll('path')).filter(p => {
                const b = p.getBBox(); return b.width > 0 && b.height > 0; }).length;
            return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height, drawn: drawn,
                    texts: svg.querySelectorAll('text').length};
        });""")


def nothing_fetched(browser) -> None:
    """Nothing fetched (the page is one file) and nothing refused by its Content-Security-Policy."""
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    logs = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in logs if "Content Security Policy" in m or "Failed to load" in m], logs


def screenshot(browser, name: str) -> Path:
    """The whole page as ``.artifacts/report/<name>``."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 40, 12_000))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    return shot


def test_the_report_opens_with_every_chart_drawn(store, monkeypatch, tmp_path, browser):
    make_desk(store, monkeypatch)
    report = build_report(store, now=NOW, account=ACCOUNT, symbols=["AAPL", "MSFT", "TSLA"])
    paths = write_report(report, tmp_path / "reports")
    browser.get(Path(paths["html"]).as_uri())

    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.title == "Portfolio report: daily, 2026-11-18 18:00 EST"
    found = browser.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
    assert found == list(SECTIONS)

    charts = charts_drawn(browser)
    assert [c["label"] for c in charts] == ["equity and drawdown of simulated:desk",
                                            "market value by symbol and asset class",
                                            "realised and unrealised P&L by symbol", "symbols per model by health label"]
    for chart in charts:
        # laid out across the page at the chart's aspect ratio, with shapes and labels drawn
        assert chart["width"] > 600 and chart["height"] > 150, chart
        assert chart["drawn"] >= 5 and chart["texts"] >= 3, chart

    # the equity line spans most of the chart's width: the curve was drawn, not an empty axis
    line = browser.execute_script("""
        const svg = document.querySelector('svg.chart');
        const widths = Array.from(svg.querySelectorAll('path')).map(p => p.getBBox().width);
        return Math.max(...widths) / svg.viewBox.baseVal.width;""")
    assert line > 0.7

    nothing_fetched(browser)
    screenshot(browser, "report.png")
    shutil.copy(paths["html"], ARTIFACTS / "report.html")
    shutil.copy(paths["headline_png"], ARTIFACTS / "headline.png")


def test_the_report_the_cli_writes_opens_with_its_charts_drawn(tmp_path, monkeypatch, browser):
    """The desk from a shell on a plain SQLite URL, no Airflow running: ``etl``, ``rebalance`` inside Tuesday's
    session (the simulated book sends its buys), again on Wednesday (the buys filled at Wednesday's open; within the
    drift threshold now), then ``report --out`` after the close; the page it wrote opens with the book's charts
    drawn."""
    from airflow_provider_portfolio import cli

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    store = ["--store", f"sqlite:///{tmp_path / 'desk.db'}"]
    symbols = ["--symbols", "AAPL,MSFT,SPY,BTC/USD"]
    assert cli.main(["etl", *store, *symbols, "--history-sessions", "150", "--as-of", "2025-03-05T22:00:00+00:00"]) == 0
    for as_of in ("2025-03-04T15:00:00+00:00", "2025-03-05T15:00:00+00:00"):
        assert cli.main(["rebalance", *store, *symbols, "--as-of", as_of]) == 0
    out = tmp_path / "reports" / "desk.html"
    assert cli.main(["report", *store, "--account", "simulated:rebalance", "--out", str(out),
                     "--as-of", "2025-03-05T23:00:00+00:00"]) == 0

    browser.get(out.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    charts = {c["label"]: c for c in charts_drawn(browser)}
    assert {"equity and drawdown of simulated:rebalance", "market value by symbol and asset class",
            "realised and unrealised P&L by symbol"} <= set(charts), charts
    for chart in charts.values():
        assert chart["width"] > 600 and chart["drawn"] >= 3 and chart["texts"] >= 3, chart
    nothing_fetched(browser)
    screenshot(browser, "cli-report.png")
