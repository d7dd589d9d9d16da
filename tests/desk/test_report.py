"""The desk's report, hand-checked on a constructed store: an equity curve with known drawdowns and period returns,
fills with known realised and unrealised P&L per symbol, decisions with their risk verdicts, a stale symbol, the
models' labels; the page self-contained (every section, no URL, no script, text escaped) and its PNG valid; an
empty store reported as such, a database without the schema refused; files written atomically to a folder or an
fsspec URL, and an unwritable destination refused with nothing left behind."""

from __future__ import annotations

import itertools
import re
import shutil
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.desk.report import (
    MAX_DECISIONS_LIMIT,
    PortfolioReport,
    Window,
    build_report,
    report_file_names,
    write_report,
)
from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store import ledger as ledger_module
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.accounting import apply_fill

UTC = timezone.utc
MARKET = SyntheticMarket(seed=5)
ACCOUNT = "simulated:desk"
# Wednesday 18 Nov 2026, 18:00 New York (EST, UTC-5): the nightly report. Sessions close at 16:00 = 21:00 UTC.
NOW = datetime(2026, 11, 18, 23, 0, tzinfo=UTC)
#: Equity at each session's close (21:00 UTC): peak 110 000 on the 10th, 99 000 the day after (-10 %).
EQUITY = {"2026-11-09": 100_000.0, "2026-11-10": 110_000.0, "2026-11-11": 99_000.0, "2026-11-12": 104_500.0,
          "2026-11-13": 103_000.0, "2026-11-16": 105_000.0, "2026-11-17": 100_000.0, "2026-11-18": 101_000.0}
EVIL = "<script>alert('x')</script> & https://example.invalid/x"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def close(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T21:00:00+00:00")


def fill(ledger: TradingLedger, account: str, cid: str, symbol: str, side: str, qty: float, price: float,
         commission: float, at: datetime) -> None:
    """An order placed by the cycle at ``at`` and filled whole at ``price`` on the bar of ``at``."""
    ledger.record_intents([{"account": account, "client_order_id": cid, "dag_id": "portfolio_auto_trader",
                            "run_id": f"run-{cid}", "symbol": symbol, "side": side, "qty": qty, "ref_price": price,
                            "bar_ts": at, "created_at": at}])
    ledger.accept(account, cid, f"broker-{cid}")
    ledger.fill(account, cid, price=price, commission=commission, bar_ts=at, rule=apply_fill)


def decision(symbol: str, action: str, order_qty: float, approved: bool | None, rule: str | None = None,
             reason: str = "signals agree") -> dict:
    return {"dag_id": "portfolio_auto_trader", "symbol": symbol, "timeframe": "1Day",
            "bar_ts": datetime(2026, 11, 17, tzinfo=UTC), "run_key": "", "run_id": "scheduled__2026-11-18",
            "account": ACCOUNT, "action": action, "score": 0.4 if action == "buy" else -0.4, "confidence": 0.7,
            "price": 100.0, "current_qty": 0.0, "target_qty": order_qty, "order_qty": order_qty, "reason": reason,
            "error": None, "signals": {"technical": {"score": 0.4}}, "approved": approved, "risk_rule": rule,
            "risk_reason": None if rule is None else f"{rule}: over the limit"}


def evaluation(symbol: str, model: str, label: str, skill: float | None, asof: str = "2026-11-17") -> dict:
    judged = label != "insufficient_data"
    return {"run_id": "scheduled__2026-11-18", "model": model, "symbol": symbol, "timeframe": "1Day",
            "asof": pd.Timestamp(asof, tz="UTC"), "horizon": 5, "origins": 20 if judged else 0,
            "rmse": 0.01 if judged else float("nan"), "mae": 0.008 if judged else float("nan"),
            "directional_accuracy": 0.55 if judged else float("nan"), "coverage": 0.9 if judged else float("nan"),
            "baseline": "last_value", "baseline_rmse": 0.012 if judged else float("nan"),
            "skill": float("nan") if skill is None else skill, "label": label, "healthy": label == "healthy",
            "weight": 0.5 if label == "healthy" else float("nan"), "backend": "numpy", "device": "cpu"}


def make_desk(store: PortfolioStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The constructed desk every hand-checked number below comes from.

    Bars: AAPL and MSFT daily through Wednesday 18 Nov, TSLA through Friday 13 (Monday and Tuesday past due: RED).
    Book ``simulated:desk`` (100 000 cash):
    - AAPL: buy 10 @ 100 (commission 1) on the 10th; sell 4 @ 110 (commission 1) on the 18th, in the daily period:
      realised 4 x 10 - (4/10 x 1 + 1) = 38.60; 6 left at 100, marked 120 on the 18th: unrealised +120.
    - MSFT: buy 5 @ 200 on the 12th, marked 190 on the 18th: unrealised -50.
    - BTC/USD: buy 0.5 @ 40 000 and sell 0.5 @ 38 000 on the 13th: realised -1 000, flat.
    Equity snapshots: :data:`EQUITY`. Decisions made on the 18th: AAPL sell approved, MSFT buy rejected by
    max_position, TSLA buy without a verdict, NVDA hold. Models: AAPL ssa healthy (skill 0.20), garch unhealthy
    (-0.10); MSFT ssa healthy (0.05), garch insufficient data. A RED monitoring report at 17:00 New York.
    """
    bars = MARKET.panel(["AAPL", "MSFT"], "2026-10-01", "2026-11-18", "1Day")
    store.upsert_bars(pd.concat([bars, MARKET.panel(["TSLA"], "2026-10-01", "2026-11-13", "1Day")]))
    clock = iter([])
    monkeypatch.setattr(ledger_module, "_now", lambda: next(clock))
    ledger = TradingLedger(store)

    def at(*instants: datetime) -> None:
        nonlocal clock
        clock = iter(instants)

    at(close("2026-11-09"))
    ledger.open_account(ACCOUNT, 100_000.0)
    ticks = (close("2026-11-09") + timedelta(minutes=m) for m in itertools.count())
    monkeypatch.setattr(ledger_module, "_now", lambda: next(ticks))
    fill(ledger, ACCOUNT, "aapl-buy", "AAPL", "buy", 10, 100.0, 1.0, datetime(2026, 11, 10, 15, tzinfo=UTC))
    fill(ledger, ACCOUNT, "msft-buy", "MSFT", "buy", 5, 200.0, 0.0, datetime(2026, 11, 12, 15, tzinfo=UTC))
    fill(ledger, ACCOUNT, "btc-buy", "BTC/USD", "buy", 0.5, 40_000.0, 0.0, datetime(2026, 11, 13, 1, tzinfo=UTC))
    fill(ledger, ACCOUNT, "btc-sell", "BTC/USD", "sell", 0.5, 38_000.0, 0.0, datetime(2026, 11, 13, 2, tzinfo=UTC))
    fill(ledger, ACCOUNT, "aapl-sell", "AAPL", "sell", 4, 110.0, 1.0, datetime(2026, 11, 18, 15, tzinfo=UTC))
    ledger.mark(ACCOUNT, {"AAPL": (120.0, close("2026-11-18")), "MSFT": (190.0, close("2026-11-18"))})
    for day, equity in EQUITY.items():
        ledger.snapshot(ACCOUNT, close(day), f"run-{day}", cash=equity, equity=equity)
    decided = datetime(2026, 11, 18, 15, tzinfo=UTC)
    monkeypatch.setattr(ledger_module, "_now", lambda: decided)
    ledger.claim_decisions([decision("AAPL", "sell", 4, True, reason=EVIL),
                            decision("MSFT", "buy", 5, False, "max_position"),
                            decision("TSLA", "buy", 3, None), decision("NVDA", "hold", 0, None)])
    store.write_forecasts(None, pd.DataFrame([evaluation("AAPL", "ssa", "healthy", 0.2),
                                              evaluation("AAPL", "garch", "unhealthy", -0.1),
                                              evaluation("MSFT", "ssa", "healthy", 0.05),
                                              evaluation("MSFT", "garch", "insufficient_data", None)]))
    store.append_health_report(HealthReport("monitoring", datetime(2026, 11, 18, 22, tzinfo=UTC), (
        Check("freshness", Level.RED, None, {"yellow": 1, "red": 2}, "TSLA: 2 bars behind", "TSLA"),
        Check("store_integrity", Level.GREEN, 0, 0, "quick_check ok"))).to_dict(),
        dag_id="portfolio_monitoring", run_id="scheduled__2026-11-18T22")


def daily(store: PortfolioStore, **kwargs) -> PortfolioReport:
    return build_report(store, now=NOW, account=ACCOUNT, symbols=["AAPL", "MSFT", "TSLA"], **kwargs)


@pytest.fixture(scope="module")
def desk_file(tmp_path_factory) -> Path:
    """The constructed desk, built once per module (:func:`make_desk`)."""
    path = tmp_path_factory.mktemp("desk") / "portfolio.db"
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    with pytest.MonkeyPatch.context() as patch:
        make_desk(store, patch)
    store.dispose()
    return path


@pytest.fixture
def desk(desk_file, tmp_path) -> PortfolioStore:
    """A copy of the constructed desk that a test may change."""
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{desk_file}{suffix}").exists():
            shutil.copy(f"{desk_file}{suffix}", tmp_path / f"desk.db{suffix}")
    store = PortfolioStore.for_sqlite_file(tmp_path / "desk.db")
    yield store
    store.dispose()


def _report(desk_file: Path, **kwargs) -> PortfolioReport:
    store = PortfolioStore.for_sqlite_file(desk_file)
    try:
        return daily(store, **kwargs)
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def daily_report(desk_file) -> PortfolioReport:
    return _report(desk_file)


@pytest.fixture(scope="module")
def weekly_report(desk_file) -> PortfolioReport:
    return _report(desk_file, period="weekly")


def section(page: str, key: str) -> str:
    found = re.search(rf'<section id="{key}">(.*?)</section>', page, re.DOTALL)
    assert found, f"no section {key}"
    return found.group(1)


def table_rows(html_text: str) -> dict[str, list[str]]:
    """The rows of the tables in ``html_text``: first cell -> the text of the others."""
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html_text, re.DOTALL):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
        if cells:
            out[cells[0]] = cells[1:]
    return out


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# -- the numbers --------------------------------------------------------------------------------------------
def test_daily_figures_hand_checked(daily_report):
    report = daily_report
    s = report.summary
    # the session of the 18th: from Tuesday's close (21:00 UTC), whose snapshot is the start: 100 000 -> 101 000
    assert report.window == Window(close("2026-11-17"), NOW)
    assert s["window"] == {"start": "2026-11-17T21:00:00+00:00", "end": "2026-11-18T23:00:00+00:00"}
    assert (s["equity"], s["period_pnl"]) == (101_000.0, 1_000.0)
    assert s["period_return"] == pytest.approx(0.01)
    # 110 000 -> 99 000 is the deepest fall: 10 %; now 101 000 below the 110 000 peak: 1 - 101/110
    assert s["max_drawdown"] == pytest.approx(0.10)
    assert s["current_drawdown"] == pytest.approx(1 - 101 / 110)
    # AAPL 6 x 120 + MSFT 5 x 190 = 1 670 long: gross = net = 1 670 / 101 000
    assert s["positions"] == 2
    assert s["gross_exposure"] == pytest.approx(1670 / 101_000) and s["net_exposure"] == pytest.approx(1670 / 101_000)
    # realised in the period: the AAPL sell of the 18th, 38.60; unrealised +120 - 50
    assert s["realised_pnl"] == pytest.approx(38.6) and s["unrealised_pnl"] == pytest.approx(70.0)
    assert (s["orders"], s["fills"], s["decisions"], s["rejected"]) == (1, 1, 4, 1)
    assert (s["symbols"], s["stale_symbols"], s["unhealthy_models"]) == (3, 1, 1)
    assert s["health"] == {"monitoring": "RED", "risk_audit": None}
    assert (s["period"], s["as_of"], s["account"], s["empty"]) == ("daily", NOW.isoformat(), ACCOUNT, False)


def test_the_page_shows_the_hand_checked_numbers(daily_report):
    page = daily_report.html
    equity = section(page, "equity")
    assert "<svg" in equity and "10.00%" in equity  # maximum drawdown
    assert f"{1 - 101 / 110:.2%}" in equity  # current drawdown, 8.18%
    assert "+1.00%" in section(page, "summary") and "+1,000.00" in section(page, "summary")

    positions = section(page, "positions")
    rows = dict(re.findall(r"<tr><td>(AAPL|MSFT)</td>(.*?)</tr>", positions))
    assert re.findall(r"<td class=num>([^<]*)</td>", rows["AAPL"]) == ["6", "100.00", "120.00", "720.00",
                                                                      f"{720 / 101_000:.2%}"]
    assert re.findall(r"<td class=num>([^<]*)</td>", rows["MSFT"]) == ["5", "200.00", "190.00", "950.00",
                                                                      f"{950 / 101_000:.2%}"]
    assert "BTC/USD" not in positions  # flat

    pnl = section(page, "pnl")
    cells = {sym: re.findall(r"<span[^>]*>([^<]*)</span>", row)
             for sym, row in re.findall(r"<tr><td>([A-Z/]+)</td>(.*?)</tr>", pnl)}
    assert cells["AAPL"] == ["+38.60", "+120.00", "+158.60"]
    assert cells["MSFT"] == ["+0.00", "-50.00", "-50.00"]
    assert cells["BTC/USD"] == ["-1,000.00", "n/a", "-1,000.00"]
    assert "-961.40" in pnl and "+70.00" in pnl and "-891.40" in pnl  # all symbols: realised, unrealised, total


def test_forecast_health_freshness_and_decisions_sections(daily_report):
    page = daily_report.html
    health = section(page, "forecast-health")
    assert "Latest monitoring report" in health and "lvl-RED" in health and "TSLA: 2 bars behind" in health
    assert "No risk audit report yet." in health
    models = table_rows(health)
    # last bar seen, healthy, unhealthy, insufficient data, best skill; the symbol with fewer healthy models first
    assert models["AAPL"] == ["2026-11-17", "ssa", "garch", "none", "ssa +0.200"]
    assert models["MSFT"] == ["2026-11-17", "ssa", "none", "garch", "ssa +0.050"]
    assert health.index("<td>AAPL</td>") < health.index("<td>MSFT</td>")

    fresh = section(page, "freshness")
    assert "1 of 3 symbols behind their calendar" in fresh
    # TSLA first (the worst): Monday 16 and Tuesday 17 past due; Wednesday's bar closed at 16:00 is not due yet
    first = re.search(r"<tbody><tr>(.*?)</tr>", fresh).group(1)
    assert first.startswith("<td>TSLA</td><td><span class=\"lvl lvl-RED\">RED</span></td>")
    assert "<td class=num>2</td>" in first and "2026-11-18 00:00 EST" not in first

    decisions = section(page, "decisions")
    assert ("4 decisions in the period (buy 2, hold 1, sell 1); 3 proposed an order: 1 approved, 1 rejected by risk "
            "(by rule: max_position 1), 1 without a verdict.") in decisions
    assert "rejected: max_position" in decisions and "max_position: over the limit" in decisions
    assert "unchecked" in decisions and "no order" in decisions
    # the reason is shown as text, never as markup
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; https://example.invalid/x" in decisions


def test_the_page_is_self_contained(daily_report):
    page = daily_report.html
    for key in ("summary", "equity", "positions", "pnl", "forecast-health", "freshness", "decisions", "comparison"):
        assert f'<section id="{key}">' in page
    assert page.count("<svg") == 4  # equity and drawdown, exposure, P&L, forecast health
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    # the one URL in the page is the text of a decision's reason (escaped above); no attribute points anywhere
    assert re.findall(r"https?://", page) == ["https://"]
    assert re.findall(r"""(?:src|href)\s*=""", page)  # links within the page and the charts' own references
    assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?#)""", page)
    assert not re.search(r"url\((?!#)", page)
    assert "default-src 'none'" in page
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # four charts, no id shared


def test_the_headline_png(daily_report, desk):
    report = daily_report
    assert png_size(report.headline_png) == (800, 420)
    assert len(report.headline_png) > 10_000
    # the same store at the same instant gives the same bytes (a re-run rewrites the same report)
    again = daily(desk)
    assert again.headline_png == report.headline_png and again.html == report.html


def test_weekly_is_week_over_week(weekly_report):
    report = weekly_report
    s = report.summary
    # the 7 days to now start on the 11th at 23:00 UTC: its 21:00 snapshot (99 000) is the start
    assert report.window == Window(NOW - timedelta(days=7), NOW)
    assert s["period_return"] == pytest.approx(101 / 99 - 1) and s["period_pnl"] == 2_000.0
    # fills of the week: MSFT buy (12th), BTC buy and sell (13th), AAPL sell (18th); closed: BTC -1 000, AAPL 38.60
    assert (s["orders"], s["fills"], s["realised_pnl"]) == (4, 4, pytest.approx(-961.4))
    table = section(report.html, "comparison")
    row = dict((name, re.findall(r"<td class=num>([^<]*)</td>", cells))
               for name, cells in re.findall(r"<tr><td>([^<]+)</td>(.*?)</tr>", table))
    # the week before (the 4th to the 11th): first snapshot 100 000 on the 9th to 99 000: -1 %, 10 % drawdown
    assert row["Return"] == [f"{101 / 99 - 1:+.2%}", "-1.00%", f"{(101 / 99 - 1 + 0.01) * 100:+.2f} pt"]
    assert row["P&amp;L (equity change)"] == ["+2,000.00", "-1,000.00", "+3,000.00"]
    assert row["Maximum drawdown"][1] == "10.00%"
    assert row["Fills"] == ["4", "1", "+3"]
    assert row["Realised P&amp;L"] == ["-961.40", "+0.00", "-961.40"]
    assert "Week over week" in report.html and report.stamp == "2026-11-18"


def test_the_daily_comparison_is_against_the_session_before(daily_report):
    table = section(daily_report.html, "comparison")
    row = dict((name, re.findall(r"<td class=num>([^<]*)</td>", cells))
               for name, cells in re.findall(r"<tr><td>([^<]+)</td>(.*?)</tr>", table))
    # Tuesday: from Monday's close 105 000 to Tuesday's 100 000
    assert row["Return"][:2] == ["+1.00%", f"{100 / 105 - 1:+.2%}"]
    assert row["Decisions"] == ["4", "0", "+4"]


def test_an_alpaca_account_is_priced_at_the_last_closed_bar(desk):
    store = desk
    ledger = TradingLedger(store)
    account = "alpaca:alpaca_paper"
    at = datetime(2026, 11, 16, 15, tzinfo=UTC)
    ledger.record_intents([{"account": account, "client_order_id": "a1", "dag_id": "d", "run_id": "r",
                            "symbol": "MSFT", "side": "buy", "qty": 3.0, "ref_price": 150.0, "bar_ts": at,
                            "created_at": at}])
    ledger.update_order(account, "a1", status="filled", filled_qty=3.0, filled_avg_price=150.0)
    report = build_report(store, now=NOW, account=account, symbols=["MSFT"])
    last = MARKET.panel(["MSFT"], "2026-11-18", "2026-11-18", "1Day")["close"].iloc[-1]
    row = re.search(r"<tr><td>MSFT</td>(.*?)</tr>", section(report.html, "positions")).group(1)
    assert f"<td class=num>{last:,.2f}</td><td>last close</td>" in row
    assert report.summary["unrealised_pnl"] == pytest.approx(3 * (last - 150.0))


# -- empty and bad input ------------------------------------------------------------------------------------
def test_an_empty_store_gives_a_report_that_says_so(store):
    report = build_report(store, now=NOW)
    s = report.summary
    assert s["empty"] is True and s["equity"] is None and s["positions"] == 0 and s["symbols"] == 0
    assert "No book yet: account simulated:default has no equity snapshots, fills or decisions" in report.html
    assert "No market data either: run portfolio_daily_etl" in report.html
    assert "No open positions in simulated:default" in report.html
    assert "No simulated:default equity snapshots" not in report.html
    assert "No 1Day model evaluations yet" in report.html and "<svg" not in report.html
    assert png_size(report.headline_png) == (800, 420)

    # after a daily ETL, still no book: the bars are checked
    store.upsert_bars(MARKET.panel(["AAPL"], "2026-11-02", "2026-11-17", "1Day"))
    after = build_report(store, now=NOW, symbols=["AAPL"])
    assert after.summary["empty"] is True and after.summary["stale_symbols"] == 0
    assert "1 of 1 symbols have 1Day bars" in after.html


def test_a_database_without_the_schema_is_refused(tmp_path):
    bare = PortfolioStore.for_sqlite_file(tmp_path / "typo.db")
    with pytest.raises(InvalidInputError, match="holds no portfolio schema"):
        build_report(bare, now=NOW)
    bare.dispose()


def test_a_store_migrated_part_way_is_refused(tmp_path):
    from airflow_provider_portfolio.store import schema

    part = PortfolioStore.for_sqlite_file(tmp_path / "old.db")
    with part.database.write("old schema") as conn:
        schema.schema_version.create(conn)
        for migration in schema.MIGRATIONS[:3]:
            migration.apply(conn)
            conn.execute(schema.schema_version.insert().values(version=migration.version, applied_at=NOW,
                                                               description=migration.description))
    with pytest.raises(StoreError, match="schema version 3, the report needs 4 or later; call migrate"):
        build_report(part, now=NOW)
    part.dispose()


@pytest.mark.parametrize("kwargs, message", [
    ({"period": "monthly"}, "period must be one of ['daily', 'weekly'], got 'monthly'"),
    ({"account": " "}, "account must be a ledger account name"),
    ({"decisions_limit": 0}, f"decisions_limit must be a whole number from 1 to {MAX_DECISIONS_LIMIT}, got 0"),
    ({"history_days": True}, "history_days must be a whole number"),
    ({"symbols": []}, "symbols rendered empty"),
    ({"timeframe": "7Parsecs"}, "timeframe"),
    ({"exchange": "NOPE"}, "NOPE"),
    ({"thresholds": {"stale_bars_red": -1}}, "stale_bars_red must be >= 0"),
    ({"periods_per_year": 0}, "periods_per_year must be a number > 0"),
])
def test_bad_input_is_refused_before_the_store_is_read(tmp_path, kwargs, message):
    never = PortfolioStore.for_sqlite_file(tmp_path / "never" / "read.db")
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        build_report(never, now=NOW, **kwargs)
    assert not (tmp_path / "never").exists()
    with pytest.raises(InvalidInputError, match="now"):
        build_report(never, now=datetime(2026, 11, 18))


# -- writing ------------------------------------------------------------------------------------------------
def test_written_to_a_local_folder(daily_report, tmp_path):
    report = daily_report
    out = tmp_path / "reports" / "desk"
    paths = write_report(report, str(out))
    html_path, png_path = out / "portfolio-report-daily-2026-11-18.html", out / "portfolio-report-daily-2026-11-18-headline.png"
    assert paths == {"html": str(html_path), "headline_png": str(png_path)}
    assert html_path.read_text(encoding="utf-8") == report.html and png_path.read_bytes() == report.headline_png
    assert {p.name for p in out.iterdir()} == {html_path.name, png_path.name}  # no temporary file left
    # a re-run of the day replaces the files; another stamp writes beside them
    write_report(report, out)
    write_report(report, f"file://{out}", stamp="2026-11-18T2300Z")
    assert len(list(out.iterdir())) == 4


def test_an_unwritable_destination_is_refused_and_leaves_nothing(daily_report, tmp_path, monkeypatch):
    report = daily_report
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InvalidInputError, match=r"out='.*a-file/reports': the report cannot be written there "
                                                r"\((NotADirectoryError|FileExistsError)"):
        write_report(report, blocker / "reports")
    assert blocker.read_text() == "not a folder"

    # the second file fails to land: the first is taken back, no temporary file stays
    out = tmp_path / "half"
    real = __import__("os").replace
    calls = []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", dst)
        real(src, dst)

    monkeypatch.setattr("airflow_provider_portfolio.desk.report.os.replace", failing)
    with pytest.raises(InvalidInputError, match="PermissionError.*nothing was written"):
        write_report(report, out)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("stamp", ["../etc", "", "a b", "x" * 65, ".hidden"])
def test_a_stamp_that_is_not_a_file_name_part_is_refused(daily_report, tmp_path, stamp):
    with pytest.raises(InvalidInputError, match="stamp must be"):
        write_report(daily_report, tmp_path, stamp=stamp)
    assert not any(p.name.startswith(("portfolio-report", ".portfolio-report")) for p in tmp_path.iterdir())
    with pytest.raises(InvalidInputError, match="period must be"):
        report_file_names("hourly", "2026-11-18")


def test_written_to_an_fsspec_url(weekly_report):
    report = weekly_report
    fs = fsspec.filesystem("memory")
    try:
        paths = write_report(report, "memory://desk-reports/nightly")
        assert paths == {"html": "memory:///desk-reports/nightly/portfolio-report-weekly-2026-11-18.html",
                         "headline_png": "memory:///desk-reports/nightly/portfolio-report-weekly-2026-11-18-headline.png"}
        assert fs.cat_file(paths["html"]).decode("utf-8") == report.html
        assert fs.cat_file(paths["headline_png"]) == report.headline_png
    finally:
        fs.rm("/desk-reports", recursive=True)


def test_a_failing_remote_write_leaves_nothing(daily_report, monkeypatch):
    from fsspec.implementations.memory import MemoryFileSystem

    report = daily_report
    real = MemoryFileSystem.pipe_file

    def flaky(self, path, value, **kwargs):
        real(self, path, value[: len(value) // 2] if path.endswith(".png") else value, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "pipe_file", flaky)
    fs = fsspec.filesystem("memory")
    with pytest.raises(InvalidInputError, match=r"out='memory://flaky': .*headline\.png holds \d+ bytes after the "
                                                r"write, not \d+\); nothing was written"):
        write_report(report, "memory://flaky")
    assert not fs.exists("/flaky") or fs.ls("/flaky") == []
    with pytest.raises(InvalidInputError, match="not a folder path or a known fsspec URL"):
        write_report(report, "nosuchfs://bucket/x")


def test_summary_is_small_json(daily_report):
    import json

    summary = daily_report.summary
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert len(json.dumps(summary)) < 2000


def test_a_book_that_lost_everything_is_reported_not_crashed(store):
    ledger = TradingLedger(store)
    ledger.open_account("simulated:blown", 100.0)
    for day, equity in (("2026-11-13", 100.0), ("2026-11-16", 40.0), ("2026-11-17", 0.0), ("2026-11-18", 0.0)):
        ledger.snapshot("simulated:blown", close(day), f"run-{day}", cash=equity, equity=equity)
    report = build_report(store, now=NOW, account="simulated:blown", symbols=["AAPL"])
    # 100 -> 0: the whole peak lost; no return is measured from 0 (the session's, the daily ones)
    assert report.summary["max_drawdown"] == 1.0 and report.summary["current_drawdown"] == 1.0
    assert (report.summary["period_return"], report.summary["period_pnl"]) == (None, 0.0)
    assert "daily returns cannot be measured: equity must be positive" in section(report.html, "equity")
