"""The hourly health report, hand-checked: stale symbols, failing vendor doubles, an equity curve with known drawdown,
Sharpe and Sortino, books with known win rate and profit factor, risk rejections; thresholds from the Variable; the
report appended once per run and read back equal; an unreachable store RED, never a crash."""

from __future__ import annotations

import itertools
import math
import socket
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import func, select

from airflow_provider_portfolio.desk import monitoring
from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.desk.monitoring import (
    HealthThresholds,
    kill_switch_after,
    latest_report,
    monitor_desk,
)
from airflow_provider_portfolio.exceptions import InvalidInputError, VendorUnavailableError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore, schema
from airflow_provider_portfolio.store import ledger as ledger_module
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.accounting import apply_fill
from tests.desk.helpers import ny

UTC = timezone.utc
MARKET = SyntheticMarket(seed=3)
ACCOUNT = "simulated:desk"


def load(store: PortfolioStore, symbols: list[str], first: str, last: str, timeframe: str = "1Day",
         before: datetime | None = None) -> None:
    """Synthetic bars of the sessions ``first``..``last`` (those stamped before ``before``)."""
    bars = MARKET.panel(symbols, first, last, timeframe)
    if before is not None:
        bars = bars[bars["ts"] < pd.Timestamp(before)]
    store.upsert_bars(bars)


def checks_of(report: HealthReport, name: str) -> dict[str | None, Check]:
    return {c.subject: c for c in report.checks if c.name == name}


def dry(store: PortfolioStore, symbols, now: datetime, **kwargs) -> HealthReport:
    return monitor_desk(store, symbols, now=now, write=False, **kwargs)


def _rows(store: PortfolioStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.health_reports)).scalar()


# -- freshness --------------------------------------------------------------------------------------------
def test_stale_symbols_by_bars_behind(store):
    load(store, ["AAPL", "BTC/USD"], "2026-11-02", "2026-11-17")  # through Tuesday
    load(store, ["MSFT"], "2026-11-02", "2026-11-16")  # through Monday
    load(store, ["TSLA"], "2026-11-02", "2026-11-13")  # through the Friday before
    store.upsert_bars(MARKET.panel(["ETH/USD"], "2026-11-02", "2026-11-15"))  # crypto, through Sunday
    symbols = ["AAPL", "MSFT", "TSLA", "NVDA", "BTC/USD", "ETH/USD"]

    # Wednesday 18 Nov, 10:00 New York: Tuesday's bar (closed 16:00) was due 60 min before today's 09:30 open
    fresh = checks_of(dry(store, symbols, ny("2026-11-18", 10)), "freshness")
    assert (fresh["AAPL"].level, fresh["AAPL"].value) == (Level.GREEN, 0)
    assert (fresh["MSFT"].level, fresh["MSFT"].value) == (Level.YELLOW, 1)  # Tuesday missing: 1 >= yellow 1
    assert fresh["MSFT"].threshold == {"yellow": 1, "red": 2}
    assert fresh["MSFT"].message.startswith("MSFT: last 1Day bar 2026-11-16, expected 2026-11-17; bars behind")
    assert (fresh["TSLA"].level, fresh["TSLA"].value) == (Level.RED, 2)  # Monday and Tuesday: 2 >= red 2
    assert (fresh["NVDA"].level, fresh["NVDA"].value) == (Level.RED, None)
    assert fresh["NVDA"].message == "NVDA: no 1Day bars stored: run the ETL for it"
    # crypto on the 24/7 calendar: the bar of the 17th closed at midnight UTC and was due at noon UTC (0.5 day)
    assert (fresh["BTC/USD"].level, fresh["BTC/USD"].value) == (Level.GREEN, 0)
    assert (fresh["ETH/USD"].level, fresh["ETH/USD"].value) == (Level.RED, 2)  # the 16th and 17th (a weekend has bars)

    # the same evening: Wednesday's bar has closed but is not due before Thursday 08:30, so nothing turns stale
    evening = checks_of(dry(store, symbols, ny("2026-11-18", 17)), "freshness")
    assert (evening["AAPL"].level, evening["AAPL"].value) == (Level.GREEN, 0)
    assert "1 more closed bar(s) not yet due (due 2026-11-19 13:30 UTC)" in evening["AAPL"].message
    assert (evening["MSFT"].level, evening["MSFT"].value) == (Level.YELLOW, 1)


def test_thanksgiving_is_not_a_missing_bar(store):
    load(store, ["AAPL"], "2026-11-02", "2026-11-25")  # through Wednesday; Thursday 26 Nov the market is closed
    # Friday 27 Nov, 11:00 New York (an early close at 13:00): Wednesday's bar is still the last closed one
    check = checks_of(dry(store, ["AAPL"], ny("2026-11-27", 11)), "freshness")["AAPL"]
    assert (check.level, check.value) == (Level.GREEN, 0)
    # Monday 30 Nov 10:00: Friday's short session closed at 13:00 and its bar was due before Monday's open
    late = checks_of(dry(store, ["AAPL"], ny("2026-11-30", 10)), "freshness")["AAPL"]
    assert (late.level, late.value) == (Level.YELLOW, 1)


def test_intraday_bars_are_due_half_a_bar_after_they_close(store):
    # 30-minute bars of Wednesday 18 Nov through the 10:30 bar (it closes at 11:00 New York)
    load(store, ["NVDA"], "2026-11-18", "2026-11-18", "30Min", before=ny("2026-11-18", 11))

    def at(hour: int, minute: int) -> Check:
        return checks_of(dry(store, ["NVDA"], ny("2026-11-18", hour, minute), timeframe="30Min"), "freshness")["NVDA"]

    assert (at(11, 40).level, at(11, 40).value) == (Level.GREEN, 0)  # the 11:00 bar closed 11:30, due 11:45
    assert (at(12, 10).level, at(12, 10).value) == (Level.YELLOW, 1)  # the 11:30 bar closed 12:00, due 12:15
    assert (at(12, 20).level, at(12, 20).value) == (Level.RED, 2)


# -- vendors ----------------------------------------------------------------------------------------------
def up() -> tuple[bool, str]:
    return True, "Alpaca paper account ACTIVE"


def down() -> tuple[bool, str]:
    raise VendorUnavailableError("HTTP 503 from https://finnhub.io/api/v1/quote?symbol=SPY&token=SECRET123",
                                 conn_id="finnhub_default", status_code=503)


def refused() -> tuple[bool, str]:
    return False, "connection 'finnhub_default': the key was refused"


def test_a_failing_vendor_is_yellow_with_another_up_and_red_alone(store):
    now = ny("2026-11-18", 10)
    both = checks_of(dry(store, [], now, probes={"alpaca_default": up, "finnhub_default": down}), "vendor")
    assert (both["alpaca_default"].level, both["alpaca_default"].value) == (Level.GREEN, "up")
    assert (both["finnhub_default"].level, both["finnhub_default"].value) == (Level.YELLOW, "down")
    message = both["finnhub_default"].message
    assert message.startswith("finnhub_default is down: VendorUnavailableError: connection 'finnhub_default': HTTP 503")
    assert "SECRET123" not in message and "token=***" in message and message.endswith("up: alpaca_default")

    alone = dry(store, [], now, probes={"finnhub_default": down})
    assert checks_of(alone, "vendor")["finnhub_default"].level is Level.RED and alone.level is Level.RED
    # a skipped probe (Alpha Vantage's scarce quota) is not "up": the only probed vendor is down, RED
    skipped = checks_of(dry(store, [], now, probes={"finnhub_default": refused, "alphavantage_default": lambda: None}),
                        "vendor")
    assert (skipped["alphavantage_default"].level, skipped["alphavantage_default"].value) == (Level.GREEN, "skipped")
    assert skipped["finnhub_default"].level is Level.RED
    assert skipped["finnhub_default"].message == ("finnhub_default is down: connection 'finnhub_default': the key was "
                                                  "refused; no other vendor answered")
    odd = checks_of(dry(store, [], now, probes={"a": lambda: "yes", "b": up}), "vendor")["a"]
    assert odd.level is Level.YELLOW and "not (ok, message) or None" in odd.message
    assert checks_of(dry(store, [], now), "vendor") == {}  # no probes, no check


# -- forecasts --------------------------------------------------------------------------------------------
def evaluation(symbol: str, model: str, label: str) -> dict:
    asof = pd.Timestamp("2026-11-17", tz="UTC")
    return {"run_id": "r1", "model": model, "symbol": symbol, "timeframe": "1Day", "asof": asof, "horizon": 5,
            "origins": 10, "rmse": 1.0, "mae": 0.8, "directional_accuracy": 0.5, "coverage": 0.9,
            "baseline": "last_value", "baseline_rmse": 1.1, "skill": 0.09, "label": label,
            "healthy": label == "healthy", "weight": None, "backend": "numpy", "device": "cpu", "created_at": asof}


def test_forecast_health_is_the_share_of_judged_models_labelled_healthy(store):
    store.write_forecasts(None, pd.DataFrame([
        evaluation("AAPL", "ssa", "healthy"), evaluation("AAPL", "garch", "unhealthy"),
        evaluation("AAPL", "sarimax", "insufficient_data"),  # not a verdict: left out of the share
        evaluation("AAPL", "ensemble", "unhealthy"),  # derived from the others: left out
        evaluation("MSFT", "ssa", "healthy"), evaluation("MSFT", "garch", "healthy"),
        evaluation("TSLA", "ssa", "unhealthy"),
        evaluation("NVDA", "ssa", "insufficient_data"),
    ]))
    report = dry(store, ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN"], ny("2026-11-18", 10))
    health = checks_of(report, "forecast_health")
    assert (health["AAPL"].level, health["AAPL"].value) == (Level.YELLOW, 0.5)  # 1 of 2: 0.5 <= yellow 0.5
    assert health["AAPL"].message.endswith("(healthy: ssa; unhealthy: garch; insufficient data: sarimax)")
    assert (health["MSFT"].level, health["MSFT"].value) == (Level.GREEN, 1.0)
    assert (health["TSLA"].level, health["TSLA"].value) == (Level.YELLOW, 0.0)  # RED is off by default
    assert (health["NVDA"].level, health["NVDA"].value) == (Level.YELLOW, None)
    assert (health["AMZN"].level, health["AMZN"].value) == (Level.YELLOW, None)
    assert health["AMZN"].message == "AMZN: no 1Day model evaluations yet: has the forecasting job run for it?"
    strict = dry(store, ["TSLA"], ny("2026-11-18", 10), thresholds={"healthy_models_red": 0.0})
    assert checks_of(strict, "forecast_health")["TSLA"].level is Level.RED


# -- trading ----------------------------------------------------------------------------------------------
DAY0 = datetime(2026, 11, 2, 21, 0, tzinfo=UTC)


@pytest.fixture
def ledger(store, monkeypatch) -> TradingLedger:
    clock = (DAY0 + timedelta(minutes=m) for m in itertools.count())
    monkeypatch.setattr(ledger_module, "_now", lambda: next(clock))  # fills written a minute apart, in order
    ledger = TradingLedger(store)
    ledger.open_account(ACCOUNT, 100_000.0)
    return ledger


def snapshots(ledger: TradingLedger, returns: list[float], account: str = ACCOUNT) -> datetime:
    """Equity 100 at DAY0, then one snapshot a day moved by each return; the last snapshot's instant."""
    equity, ts = 100.0, DAY0
    ledger.snapshot(account, ts, "run-0", cash=equity, equity=equity)
    for day, r in enumerate(returns, start=1):
        equity *= 1 + r
        ts = DAY0 + timedelta(days=day)
        ledger.snapshot(account, ts, f"run-{day}", cash=equity, equity=equity)
    return ts


def trading(report: HealthReport, account: str = ACCOUNT) -> dict[str, Check]:
    return {c.name: c for c in report.checks if c.subject == account}


def test_an_equity_curve_with_known_drawdown_sharpe_and_sortino(store, ledger):
    # 40 days before: a snapshot far above, outside the 30-day window (it would make a 90 % drawdown)
    ledger.snapshot(ACCOUNT, DAY0 - timedelta(days=40), "old", cash=1000.0, equity=1000.0)
    # +2 %, -1 % ten times: 20 daily returns, mean 0.005, sample variance 20 x 0.015^2 / 19;
    # Sharpe^2 = 0.005^2 / (0.0045 / 19) x 252 = 26.6; downside deviation^2 = 10 x 0.01^2 / 20 = 5e-5,
    # Sortino^2 = 0.005^2 / 5e-5 x 252 = 126; the deepest fall is one -1 % day: drawdown 0.01
    last = snapshots(ledger, [0.02, -0.01] * 10)
    checks = trading(dry(store, [], last + timedelta(hours=1), account=ACCOUNT))
    assert (checks["drawdown"].level, checks["drawdown"].value) == (Level.GREEN, pytest.approx(0.01))
    assert (checks["sharpe"].level, checks["sharpe"].value) == (Level.GREEN, pytest.approx(math.sqrt(26.6)))
    assert (checks["sortino"].level, checks["sortino"].value) == (Level.GREEN, pytest.approx(math.sqrt(126)))
    assert checks["sharpe"].threshold == {"yellow": 0.0, "red": -1.0}
    assert checks["sharpe"].message.startswith("annualised Sharpe ratio of 20 daily returns 5.15752 within limits")

    # the mirror book: -2 %, +1 % ten times: Sharpe -sqrt(26.6) = -5.16; downside deviation^2 = 10 x 0.02^2 / 20
    # = 2e-4, Sortino = -sqrt(0.005^2 / 2e-4 x 252) = -sqrt(31.5) = -5.61; the equity only falls from 100:
    # drawdown 1 - 0.98^10 x 1.01^9 = 0.10638 (the last -2 % day), YELLOW from 0.10
    last = snapshots(ledger, [-0.02, 0.01] * 10, account="simulated:mirror")
    checks = trading(dry(store, [], last + timedelta(hours=1), account="simulated:mirror"), "simulated:mirror")
    assert (checks["sharpe"].level, checks["sharpe"].value) == (Level.RED, pytest.approx(-math.sqrt(26.6)))
    assert (checks["sortino"].level, checks["sortino"].value) == (Level.RED, pytest.approx(-math.sqrt(31.5)))
    assert (checks["drawdown"].level, checks["drawdown"].value) == (Level.YELLOW,
                                                                    pytest.approx(1 - 0.98 ** 10 * 1.01 ** 9))


def test_drawdown_levels_and_thin_curves_are_not_graded(store, ledger):
    # 100, 120, 90: 30 / 120 = 25 % below the peak, RED from 20 %; 3 snapshots, 2 returns: ratios not graded
    ledger.snapshot(ACCOUNT, DAY0, "a", cash=100.0, equity=100.0)
    ledger.snapshot(ACCOUNT, DAY0 + timedelta(days=1), "b", cash=120.0, equity=120.0)
    ledger.snapshot(ACCOUNT, DAY0 + timedelta(days=2), "c", cash=90.0, equity=90.0)
    checks = trading(dry(store, [], DAY0 + timedelta(days=3), account=ACCOUNT))
    assert (checks["drawdown"].level, checks["drawdown"].value) == (Level.RED, pytest.approx(0.25))
    assert (checks["sharpe"].level, checks["sharpe"].message) == (Level.GREEN, "not graded: 2 daily return(s), "
                                                                               "20 needed")
    # +20 %, -25 %: mean -0.025, deviations +-0.225, sample std sqrt(2 x 0.225^2 / 1) = 0.31820;
    # Sharpe -0.025 / 0.31820 x sqrt(252) = -1.2472 (reported, not graded)
    sharpe = -0.025 / math.sqrt(2 * 0.225 ** 2) * math.sqrt(252)
    assert checks["sharpe"].value == pytest.approx(sharpe) and sharpe == pytest.approx(-1.2472, abs=1e-4)
    # a looser Variable grades it from 2 returns: -1.2472 <= red -1
    graded = trading(dry(store, [], DAY0 + timedelta(days=3), account=ACCOUNT, thresholds={"min_days": 2}))
    assert (graded["sharpe"].level, graded["sharpe"].value) == (Level.RED, pytest.approx(sharpe))
    # an account that never traded: nothing to grade, nothing RED
    empty = trading(dry(store, [], DAY0, account="simulated:new"), "simulated:new")
    assert {c.level for c in empty.values()} == {Level.GREEN}
    assert empty["drawdown"].message == "not graded: no equity snapshots in the last 30 days"


def trade(ledger: TradingLedger, round_trips: list[tuple[float, float]], commission: float, day: int) -> None:
    """One share bought and sold at each (entry, exit), both fills paying ``commission``."""
    bar = DAY0 + timedelta(days=day)
    for i, (entry, exit_) in enumerate(round_trips):
        for side, price in (("buy", entry), ("sell", exit_)):
            cid = f"{day}-{i}-{side}"
            ledger.record_intents([{"account": ACCOUNT, "client_order_id": cid, "dag_id": "dag", "run_id": "r",
                                    "symbol": "AAPL", "side": side, "qty": 1.0, "ref_price": price, "bar_ts": bar,
                                    "created_at": bar}])
            ledger.accept(ACCOUNT, cid, f"b-{cid}")
            ledger.fill(ACCOUNT, cid, price=price, commission=commission, bar_ts=bar, rule=apply_fill)


@pytest.mark.parametrize("trips, commission, win_rate, profit_factor", [
    # 3 wins of 200 - 100 - 2 x 1 = +98, 7 losses of 90 - 100 - 2 = -12: win rate 0.3 (YELLOW: <= 0.40, > 0.25);
    # profit factor 3 x 98 / (7 x 12) = 294 / 84 = 3.5 (GREEN)
    ([(100.0, 200.0)] * 3 + [(100.0, 90.0)] * 7, 1.0, (Level.YELLOW, 0.3), (Level.GREEN, 3.5)),
    # 4 wins of +10, 6 losses of -20, no commission: win rate 0.4 (YELLOW at <= 0.40); profit factor 40 / 120 = 1/3
    # (RED at <= 0.75)
    ([(100.0, 110.0)] * 4 + [(100.0, 80.0)] * 6, 0.0, (Level.YELLOW, 0.4), (Level.RED, 1 / 3)),
    # 2 losses of -10 and 8 wins of +10: 0.8 and 80 / 20 = 4: GREEN both
    ([(100.0, 90.0)] * 2 + [(100.0, 110.0)] * 8, 0.0, (Level.GREEN, 0.8), (Level.GREEN, 4.0)),
])
def test_a_book_with_known_win_rate_and_profit_factor(store, ledger, trips, commission, win_rate, profit_factor):
    trade(ledger, trips, commission, day=1)
    checks = trading(dry(store, [], DAY0 + timedelta(days=2), account=ACCOUNT))
    assert (checks["win_rate"].level, checks["win_rate"].value) == (win_rate[0], pytest.approx(win_rate[1]))
    assert (checks["profit_factor"].level, checks["profit_factor"].value) == (
        profit_factor[0], pytest.approx(profit_factor[1]))


def test_too_few_trades_and_no_losing_trade(store, ledger):
    trade(ledger, [(100.0, 90.0)] * 9, 0.0, day=1)  # 9 losing trades: below min_trades 10
    checks = trading(dry(store, [], DAY0 + timedelta(days=2), account=ACCOUNT))
    assert (checks["win_rate"].level, checks["win_rate"].value) == (Level.GREEN, 0.0)
    assert checks["win_rate"].message == "not graded: 9 closed trade(s), 10 needed"
    # trades closed before the window do not count
    late = trading(dry(store, [], DAY0 + timedelta(days=40), account=ACCOUNT))
    assert late["win_rate"].message == "not graded: 0 closed trade(s), 10 needed"
    assert late["win_rate"].value is None

    trade(ledger, [(100.0, 110.0)] * 10, 0.0, day=35)
    winners = trading(dry(store, [], DAY0 + timedelta(days=36), account=ACCOUNT))
    assert (winners["profit_factor"].level, winners["profit_factor"].value) == (Level.GREEN, None)  # inf -> null
    assert winners["profit_factor"].message == "no losing trade in 10: the profit factor is infinite"
    assert winners["profit_factor"].to_dict()["value"] is None


def test_rejections_are_the_share_of_proposed_orders_risk_refused(store, ledger):
    bar = DAY0 + timedelta(days=1)

    def decision(symbol: str, approved: bool | None, rule: str | None = None) -> dict:
        return {"dag_id": "dag", "symbol": symbol, "timeframe": "1Day", "bar_ts": bar, "run_key": "",
                "run_id": "run-1", "account": ACCOUNT, "action": "buy", "score": 0.5, "confidence": 0.7,
                "price": 100.0, "current_qty": 0.0, "target_qty": 10.0, "order_qty": 10.0, "reason": "r",
                "error": None, "signals": {}, "approved": approved, "risk_rule": rule, "risk_reason": rule}

    rows = [decision(f"S{i}", True) for i in range(6)] + [
        decision("R1", False, "max_position"), decision("R2", False, "max_position"),
        decision("R3", False, "max_order_notional"), decision("K1", False, "kill_switch")]
    ledger.claim_decisions(rows)
    # 9 judged orders (the kill switch's refusal aside), 3 rejected: 1/3, YELLOW from 0.25, RED from 0.5
    (check,) = [c for c in dry(store, [], bar + timedelta(hours=1), account=ACCOUNT).checks if c.name == "rejections"]
    assert (check.level, check.value, check.subject) == (Level.YELLOW, pytest.approx(1 / 3), ACCOUNT)
    assert check.message == ("3 of 9 proposed orders rejected by risk: share 0.333333 >= YELLOW limit 0.25; rejected "
                             "by rule: max_order_notional 1, max_position 2; kill_switch refused 1 more (not graded)")
    few = trading(dry(store, [], bar + timedelta(hours=1), account=ACCOUNT, thresholds={"min_orders": 10}))
    assert (few["rejections"].level, few["rejections"].message.split(";")[0]) == (
        Level.GREEN, "not graded: 9 proposed order(s) judged by risk, 10 needed")


# -- thresholds -------------------------------------------------------------------------------------------
def test_every_threshold_is_documented_with_its_default():
    rows = {line.split()[0]: line.split()[1] for line in monitoring.__doc__.splitlines()
            if line and line.split()[0] in HealthThresholds().to_dict()}
    for key, value in HealthThresholds().to_dict().items():
        assert (None if rows[key] == "null" else float(rows[key])) == value, key


def test_overrides_from_the_variable():
    t = HealthThresholds.from_mapping('{"drawdown_red": 0.3, "min_trades": 20, "healthy_models_yellow": null}')
    assert (t.drawdown_red, t.min_trades, t.healthy_models_yellow, t.drawdown_yellow) == (0.3, 20, None, 0.10)
    assert HealthThresholds.from_mapping({}) == HealthThresholds.from_mapping(None) == HealthThresholds()
    assert HealthThresholds.from_mapping(" ") == HealthThresholds()


@pytest.mark.parametrize("bad, match", [
    ({"drawdown_redd": 0.3}, r"portfolio.health_thresholds: unknown key\(s\) \['drawdown_redd'\] \(value 0.3\)"),
    ({"drawdown_red": "high"}, "portfolio.health_thresholds: drawdown_red must be a finite number or null "
                               r"\(off\), got 'high'"),
    ({"drawdown_red": True}, "drawdown_red must be a finite number"),
    ({"min_trades": None}, "min_trades must be a finite number, got None"),
    ({"min_trades": 2.5}, "min_trades must be a whole number >= 1, got 2.5"),
    ({"win_rate_yellow": 1.5}, "win_rate_yellow must be a fraction from 0 to 1, got 1.5"),
    ({"stale_bars_red": -1}, "stale_bars_red must be >= 0, got -1"),
    ({"drawdown_yellow": 0.3}, r"drawdown_yellow=0.3 is above drawdown_red=0.2; a YELLOW limit comes before"),
    ({"sharpe_yellow": -2}, r"sharpe_yellow=-2 is below sharpe_red=-1.0"),
    ("[1, 2]", "must be a JSON object of thresholds"),
    ("{drawdown_red: 0.3}", "must be a JSON object such as"),
])
def test_malformed_thresholds_name_the_key(bad, match):
    with pytest.raises(InvalidInputError, match=match):
        HealthThresholds.from_mapping(bad)


def test_thresholds_built_directly_are_checked_too():
    with pytest.raises(InvalidInputError, match="HealthThresholds: stale_bars_yellow=3 is above stale_bars_red=2"):
        HealthThresholds(stale_bars_yellow=3)


# -- the report -------------------------------------------------------------------------------------------
def test_the_report_is_appended_once_per_run_and_read_back_equal(store):
    load(store, ["AAPL", "MSFT"], "2026-11-02", "2026-11-17")
    now = ny("2026-11-18", 10, 5)
    kwargs = {"dag_id": "portfolio_monitoring", "run_id": "scheduled__2026-11-18T15:05:00+00:00",
              "probes": {"alpaca_default": up}}
    report = monitor_desk(store, "AAPL,MSFT", now=now, **kwargs)
    assert (report.kind, report.ts, report.level) == ("monitoring", now, Level.YELLOW)  # no evaluations yet
    assert [c.label for c in report.checks] == [
        "store_integrity", "store_schema", "freshness[AAPL]", "freshness[MSFT]", "forecast_health[AAPL]",
        "forecast_health[MSFT]", "vendor[alpaca_default]"]
    again = monitor_desk(store, ["AAPL", "MSFT"], now=now, **kwargs)  # a retried task
    assert _rows(store) == 1
    assert latest_report(store, now=now) == again
    stored = store.latest_health_report("monitoring")
    assert (stored.dag_id, stored.run_id, stored.report) == (kwargs["dag_id"], kwargs["run_id"], again.to_dict())
    assert latest_report(store, now=now + timedelta(hours=3)) is None  # older than max_age: not trusted
    assert latest_report(store, now=now - timedelta(minutes=1)) is None  # a replay before it
    monitor_desk(store, ["AAPL"], now=now, run_id="manual__1")
    assert _rows(store) == 2
    monitor_desk(store, ["AAPL"], now=now + timedelta(hours=1), write=False)
    assert _rows(store) == 2


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_store_is_red_not_a_crash():
    store = PortfolioStore(f"postgresql://desk:hunter2@127.0.0.1:{_closed_port()}/portfolio", connect_timeout_s=2)
    report = monitor_desk(store, ["AAPL"], now=ny("2026-11-18", 10), account=ACCOUNT, probes={"alpaca_default": up},
                          write=False)
    assert report.level is Level.RED
    assert {c.label: c.level for c in report.checks} == {
        "store_integrity": Level.RED, "store_schema": Level.RED, "freshness": Level.RED, "forecast_health": Level.RED,
        f"trading[{ACCOUNT}]": Level.RED, "vendor[alpaca_default]": Level.GREEN}
    assert report.checks[0].message.startswith("the store cannot be reached: store postgresql+psycopg://desk:***@")
    assert "hunter2" not in str(report.to_dict())
    written = monitor_desk(store, ["AAPL"], now=ny("2026-11-18", 10))
    assert written.checks[-1].label == "report_write" and written.checks[-1].level is Level.RED


def test_a_part_that_fails_is_red_and_the_rest_is_reported(store, monkeypatch):
    load(store, ["AAPL"], "2026-11-02", "2026-11-17")

    def broken(*args, **kwargs):
        raise RuntimeError("evaluations unreadable")

    monkeypatch.setattr(store, "read_evaluations", broken)
    report = monitor_desk(store, ["AAPL"], now=ny("2026-11-18", 10))
    assert {c.label: c.level for c in report.checks} == {
        "store_integrity": Level.GREEN, "store_schema": Level.GREEN, "freshness[AAPL]": Level.GREEN,
        "forecast_health": Level.RED}
    assert report.failed[0].message == "could not be measured: RuntimeError: evaluations unreadable"
    assert store.latest_health_report("monitoring").level == "RED"


def test_a_store_of_the_previous_release_is_red_and_says_the_report_was_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m.version <= 3])
    old = PortfolioStore.for_sqlite_file(tmp_path / "old.db")
    old.migrate()
    monkeypatch.undo()
    report = monitor_desk(old, [], now=ny("2026-11-18", 10))
    assert [(c.name, c.level) for c in report.checks] == [
        ("store_integrity", Level.GREEN), ("store_schema", Level.RED), ("report_write", Level.RED)]
    assert f"schema version 3, this code needs {schema.latest_version()}: migrate the store" in report.checks[1].message
    assert "no health_reports table" in report.checks[2].message


@pytest.mark.parametrize("kwargs, match", [
    ({"symbols": ["AAPL", "not a ticker"]}, "not a ticker"),
    ({"thresholds": '{"drawdown_red": "10%"}'}, "portfolio.health_thresholds: drawdown_red must be a finite number"),
    ({"timeframe": "1Week"}, "timeframe"),
    ({"exchange": "NOPE"}, "unknown market calendar"),
    ({"account": " "}, "account must be a ledger account name"),
    ({"window": timedelta(0)}, "window must be a positive timedelta"),
    ({"periods_per_year": 0}, "periods_per_year"),
    ({"probes": {"alpaca": "up"}}, "probes must map vendor names to callables"),
    ({"now": datetime(2026, 11, 18, 15)}, "now must be timezone-aware"),
])
def test_bad_input_is_refused_before_anything_is_written(store, kwargs, match):
    args = {"symbols": ["AAPL"], "now": ny("2026-11-18", 10), **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        monitor_desk(store, args.pop("symbols"), **args)
    assert _rows(store) == 0


def test_the_kill_switch_only_tightens():
    now = ny("2026-11-18", 10)
    red = HealthReport("monitoring", now, (Check("freshness", Level.RED),))
    green = HealthReport("monitoring", now, (Check("freshness", Level.GREEN),))
    assert kill_switch_after(red, "active", reduce_on_red=True) == "reduce_only"
    assert kill_switch_after(red, None, reduce_on_red=True) == "reduce_only"  # unset means active
    assert kill_switch_after(red, "active", reduce_on_red=False) == "active"
    assert kill_switch_after(red, "halted", reduce_on_red=True) == "halted"
    assert kill_switch_after(green, " Reduce-Only ", reduce_on_red=True) == "reduce_only"
    assert kill_switch_after(green, "panic", reduce_on_red=True) == "halted"  # unreadable fails safe
