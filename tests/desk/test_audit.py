"""The daily risk audit on constructed books, written through the ledger API the trader uses (orders recorded,
accepted and filled with the trading domain's accounting; equity snapshots), valued at hand-made daily bars: every
figure below is computed by hand in the comments.

The audit runs on Tuesday 5 March 2024 at 05:20 New York (10:20 UTC), after the morning ETL loaded Monday's session:
Monday's daily bar is the last closed one (it ended at 21:00 UTC, New York being UTC-5 until 10 March), and today's
loss is Monday's, from Friday's close (1 March, 21:00 UTC)."""

from __future__ import annotations

import itertools
import math
import sqlite3
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from airflow_provider_portfolio.desk import audit
from airflow_provider_portfolio.desk.audit import AUDIT, AuditThresholds, asset_class_limits_from, audit_risk
from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.bars import to_bar_frame
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store import ledger as ledger_module
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.accounting import apply_fill
from airflow_provider_portfolio.trading.brokers import AccountSnapshot
from airflow_provider_portfolio.trading.risk import RiskLimits

UTC = timezone.utc
ACCOUNT = "simulated:default"
NOW = datetime(2024, 3, 5, 10, 20, tzinfo=UTC)
THU, FRI, SAT, SUN, MON = ("2024-02-29", "2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04")
FRIDAY_CLOSE = datetime(2024, 3, 1, 21, 0, tzinfo=UTC)


def day(d: str) -> pd.Timestamp:
    return pd.Timestamp(d, tz="UTC")


def bars(symbol: str, closes: dict[str, float]) -> pd.DataFrame:
    """Daily bars of ``symbol``: date -> close (open at the close, high and low 1 away)."""
    ts = [day(d) for d in closes]
    close = list(closes.values())
    return to_bar_frame(pd.DataFrame({"symbol": symbol, "timeframe": "1Day", "ts": ts, "open": close,
                                      "high": [c + 1 for c in close], "low": [c - 1 for c in close], "close": close,
                                      "volume": 1000.0, "source": "test"}))


@pytest.fixture
def ledger(store, monkeypatch) -> TradingLedger:
    clock = (NOW - timedelta(days=10) + timedelta(minutes=m) for m in itertools.count())
    monkeypatch.setattr(ledger_module, "_now", lambda: next(clock))  # fills written a minute apart, in order
    ledger = TradingLedger(store)
    ledger.open_account(ACCOUNT, 100_000.0)
    return ledger


def fill(ledger: TradingLedger, symbol: str, side: str, qty: float, price: float, bar: str, *,
         account: str = ACCOUNT, commission: float = 0.0) -> None:
    """One order of the trader's path: recorded, accepted by the simulated broker, filled at ``price`` on ``bar``."""
    cid = f"{account}-{symbol}-{side}-{bar}-{qty}-{price}"
    ts = day(bar)
    ledger.record_intents([{"account": account, "client_order_id": cid, "dag_id": "portfolio_auto_trader",
                            "run_id": "r", "symbol": symbol, "side": side, "qty": qty, "ref_price": price,
                            "bar_ts": ts, "created_at": ts}])
    ledger.accept(account, cid, f"sim-{cid}")
    assert ledger.fill(account, cid, price=price, commission=commission, bar_ts=ts, rule=apply_fill) is not None


def run(store, **kwargs) -> HealthReport:
    return audit_risk(store, **{"now": NOW, "account": ACCOUNT, "write": False, **kwargs})


def by_label(report: HealthReport) -> dict[str, Check]:
    return {c.label: c for c in report.checks}


# -- concentration --------------------------------------------------------------------------------------------
def test_a_position_beyond_max_position_fraction_is_red_naming_symbol_value_and_limit(store, ledger):
    store.upsert_bars(bars("AAPL", {THU: 99.0, FRI: 100.0, MON: 150.0}))
    fill(ledger, "AAPL", "buy", 100, 100.0, FRI)
    # cash 100,000 - 100 x 100 = 90,000; AAPL at Monday's close 150: 15,000; equity 105,000;
    # 15,000 / 105,000 = 14.29 % > max_position_fraction 10 %
    report = run(store)
    checks = by_label(report)
    aapl = checks["concentration[AAPL]"]
    assert (aapl.level, aapl.value) == (Level.RED, pytest.approx(15_000 / 105_000))
    assert aapl.threshold == {"yellow": pytest.approx(0.08), "red": 0.10}
    assert aapl.message == ("position 100 AAPL x 150 = 15,000.00 of equity 105,000.00: 14.29% > "
                            "max_position_fraction 10.00%: breached")
    assert report.level is Level.RED and report.to_dict()["failed"] == ["concentration[AAPL]"]
    assert (checks[f"book[{ACCOUNT}]"].level, checks[f"book[{ACCOUNT}]"].value) == (Level.GREEN, 105_000.0)
    # a looser limit: 14.29 % of 15 % is 95 %, YELLOW from 80 % of it
    looser = by_label(run(store, limits=RiskLimits(max_position_fraction=0.15)))["concentration[AAPL]"]
    assert looser.level is Level.YELLOW and "is 95% of max_position_fraction 15.00%" in looser.message
    # the limit comes as the trader takes it: a dict of RiskLimits fields
    assert by_label(run(store, limits={"max_position_fraction": 0.2}))["concentration[AAPL]"].level is Level.GREEN


def test_a_book_within_its_limits_is_green_and_stored(store, ledger):
    store.upsert_bars(bars("AAPL", {THU: 99.0, FRI: 100.0, MON: 110.0}))
    fill(ledger, "AAPL", "buy", 50, 100.0, FRI)
    # cash 95,000; AAPL 50 x 110 = 5,500; equity 100,500; 5.47 % of it (GREEN below 8 %); leverage 0.0547;
    # one open position of 20; Friday's book: 95,000 + 50 x 100 = 100,000, so Monday gained 0.5 %
    report = audit_risk(store, now=NOW, account=ACCOUNT, dag_id="portfolio_risk_audit", run_id="r1")
    checks = by_label(report)
    assert report.level is Level.GREEN, report.summary()
    assert {c.name for c in report.checks} == {"book", "prices", "concentration", "asset_class_concentration",
                                               "gross_exposure", "net_exposure", "leverage", "open_positions",
                                               "drawdown", "daily_loss", "rejections"}
    assert checks["concentration[AAPL]"].value == pytest.approx(5_500 / 100_500)
    assert checks[f"leverage[{ACCOUNT}]"].value == pytest.approx(5_500 / 100_500)
    assert checks[f"open_positions[{ACCOUNT}]"].value == 1
    assert checks[f"daily_loss[{ACCOUNT}]"].value == pytest.approx(1 - 100_500 / 100_000)
    assert checks[f"prices[{ACCOUNT}]"].value == 0
    with sqlite3.connect(store.url.removeprefix("sqlite:///")) as con:
        rows = con.execute("SELECT kind, level, dag_id, run_id FROM health_reports").fetchall()
    assert rows == [(AUDIT, "GREEN", "portfolio_risk_audit", "r1")]


def test_asset_classes_gross_and_net_exposure_and_leverage_by_hand(store, ledger):
    store.upsert_bars(pd.concat([
        bars("AAPL", {FRI: 100.0, MON: 120.0}), bars("MSFT", {FRI: 200.0, MON: 190.0}),
        bars("BTC/USD", {FRI: 40_000.0, SAT: 40_500.0, SUN: 41_000.0, MON: 42_000.0})]))
    fill(ledger, "AAPL", "buy", 100, 100.0, MON)
    fill(ledger, "MSFT", "sell", 50, 200.0, MON)  # a short
    fill(ledger, "BTC/USD", "buy", 0.5, 40_000.0, MON)
    # cash 100,000 - 10,000 + 10,000 - 20,000 = 80,000; at Monday's closes AAPL 100 x 120 = 12,000,
    # MSFT -50 x 190 = -9,500, BTC 0.5 x 42,000 = 21,000 (Monday's UTC bar, closed at midnight);
    # equity 80,000 + 23,500 = 103,500; gross 42,500, net 23,500
    equity, gross, net = 103_500.0, 42_500.0, 23_500.0
    checks = by_label(run(store, limits={"max_position_fraction": 0.5}))
    assert checks[f"book[{ACCOUNT}]"].value == pytest.approx(equity)
    assert checks[f"gross_exposure[{ACCOUNT}]"].value == pytest.approx(gross)
    assert checks[f"gross_exposure[{ACCOUNT}]"].message == (
        "gross exposure 42,500.00 = 41.06% of equity 103,500.00 (long 33,000.00, short 9,500.00); no "
        "max_gross_notional set: not graded")
    assert checks[f"net_exposure[{ACCOUNT}]"].value == pytest.approx(net / equity)  # 0.2271
    leverage = checks[f"leverage[{ACCOUNT}]"]
    assert (leverage.level, leverage.value) == (Level.GREEN, pytest.approx(gross / equity))  # 0.4106
    # equities: |12,000| + |-9,500| = 21,500 = 20.77 % of 1.0; crypto 21,000 = 20.29 % of 0.25: 81 %, YELLOW
    stocks, crypto = checks["asset_class_concentration[equity]"], checks["asset_class_concentration[crypto]"]
    assert (stocks.level, stocks.value) == (Level.GREEN, pytest.approx(21_500 / equity))
    assert (crypto.level, crypto.value) == (Level.YELLOW, pytest.approx(21_000 / equity))
    assert crypto.message == ("crypto positions (1) worth 21,000.00 of equity 103,500.00: 20.29% is 81% of "
                              "asset_class_limits[crypto] 25.00% (YELLOW from 80%)")
    assert checks["concentration[MSFT]"].value == pytest.approx(9_500 / equity)  # a short counts by its size

    tight = by_label(run(store, limits={"max_position_fraction": 0.5}, asset_class_limits={"crypto": 0.15},
                         thresholds={"max_leverage": 0.4, "max_net_exposure": 0.25, "max_gross_notional": 40_000}))
    assert tight["asset_class_concentration[crypto]"].level is Level.RED
    assert tight[f"leverage[{ACCOUNT}]"].level is Level.RED
    assert tight[f"leverage[{ACCOUNT}]"].message == ("gross exposure 42,500.00 / equity 103,500.00: leverage 0.4106x "
                                                     "> max_leverage 0.4x: breached")
    assert tight[f"net_exposure[{ACCOUNT}]"].level is Level.YELLOW  # 0.2271 >= 0.8 x 0.25 = 0.2
    assert tight[f"gross_exposure[{ACCOUNT}]"].level is Level.RED
    assert tight[f"gross_exposure[{ACCOUNT}]"].message.startswith(
        "gross exposure 42,500.00 > max_gross_notional 40,000.00: breached; 41.06% of equity 103,500.00")


def test_open_positions_beyond_the_limit_are_red(store, ledger):
    store.upsert_bars(pd.concat([bars(s, {FRI: 10.0, MON: 10.0}) for s in ("AAPL", "MSFT", "NVDA")]))
    for symbol in ("AAPL", "MSFT", "NVDA"):
        fill(ledger, symbol, "buy", 10, 10.0, MON)
    checks = by_label(run(store, limits={"max_open_positions": 2}))
    assert checks[f"open_positions[{ACCOUNT}]"].level is Level.RED
    assert checks[f"open_positions[{ACCOUNT}]"].message == "open positions 3 > max_open_positions 2: breached"
    # at the limit is not beyond it (the trader only refuses to open one more): YELLOW, approaching
    assert by_label(run(store, limits={"max_open_positions": 3}))[f"open_positions[{ACCOUNT}]"].level is Level.YELLOW
    assert by_label(run(store))[f"open_positions[{ACCOUNT}]"].level is Level.GREEN  # 3 of 20


# -- drawdown and today's loss --------------------------------------------------------------------------------
def test_drawdown_from_the_equity_curves_peak(store, ledger):
    # a book of cash only: equity 100,000 now; snapshots 100,000, 125,000 (the peak), 110,000, and one after the
    # audit's instant (never seen): 1 - 100,000 / 125,000 = 20 %, RED at max_drawdown 20 % (a loss limit is
    # breached at it)
    for d, equity in ((datetime(2024, 2, 27, 21, 0), 100_000.0), (datetime(2024, 2, 28, 21, 0), 125_000.0),
                      (datetime(2024, 2, 29, 21, 0), 110_000.0), (datetime(2024, 3, 6, 21, 0), 500_000.0)):
        ledger.snapshot(ACCOUNT, d.replace(tzinfo=UTC), "r", cash=equity, equity=equity)
    drawdown = by_label(run(store))[f"drawdown[{ACCOUNT}]"]
    assert (drawdown.level, drawdown.value) == (Level.RED, pytest.approx(0.2))
    assert drawdown.message == ("equity 100,000.00 below its peak 125,000.00 (2024-02-28 21:00 UTC; 3 snapshot(s)): "
                                "drawdown 20.00% >= max_drawdown 20.00%: breached")
    # 1 - 100 / 120 = 16.67 %: YELLOW from 80 % of 20 % = 16 %
    ledger.open_account("simulated:other", 100_000.0)
    for d, equity in ((datetime(2024, 2, 27, 21, 0), 120_000.0), (datetime(2024, 2, 28, 21, 0), 101_000.0)):
        ledger.snapshot("simulated:other", d.replace(tzinfo=UTC), "r", cash=equity, equity=equity)
    other = by_label(run(store, account="simulated:other"))["drawdown[simulated:other]"]
    assert (other.level, other.value) == (Level.YELLOW, pytest.approx(1 / 6))
    assert by_label(run(store, account="simulated:other", thresholds={"max_drawdown": 0.25})
                    )["drawdown[simulated:other]"].level is Level.GREEN


@pytest.mark.parametrize("monday_close, level", [
    # 600 AAPL at 94: 40,400 + 56,400 = 96,800 against Friday's 100,000: loss 3.2 % >= daily_loss_limit 3 %
    (94.0, Level.RED),
    # at 95: 97,400, loss 2.6 % >= 80 % of 3 % = 2.4 %
    (95.0, Level.YELLOW),
    # at 96: 98,000, loss 2 %
    (96.0, Level.GREEN),
])
def test_todays_loss_is_measured_from_the_previous_sessions_close(store, ledger, monday_close, level):
    store.upsert_bars(bars("AAPL", {THU: 101.0, FRI: 100.0, MON: monday_close}))
    fill(ledger, "AAPL", "buy", 500, 100.0, FRI)  # cash 50,000; Friday's book 50,000 + 500 x 100 = 100,000
    fill(ledger, "AAPL", "buy", 100, 96.0, MON)  # Monday's fill, undone for Friday's book: cash 40,400, 600 held
    equity = 40_400 + 600 * monday_close
    loss = by_label(run(store, limits={"max_position_fraction": 1.0}))[f"daily_loss[{ACCOUNT}]"]
    assert (loss.level, loss.value) == (level, pytest.approx(1 - equity / 100_000))
    assert loss.threshold == {"yellow": pytest.approx(0.024), "red": 0.03}
    assert loss.message.startswith(f"equity {equity:,.2f} against 100,000.00 at the previous session's close "
                                   "(2024-03-01 21:00 UTC; the book as it stood then, at the closes of then): loss ")


# -- rejected orders ------------------------------------------------------------------------------------------
def test_rejected_orders_are_counted_by_rule_over_the_last_session(store, ledger):
    def decision(symbol: str, bar: str, approved: bool | None, rule: str | None = None) -> dict:
        return {"dag_id": "portfolio_auto_trader", "symbol": symbol, "timeframe": "1Day", "bar_ts": day(bar),
                "run_key": "", "run_id": f"run-{bar}", "account": ACCOUNT, "action": "buy", "score": 0.5,
                "confidence": 0.7, "price": 100.0, "current_qty": 0.0, "target_qty": 10.0, "order_qty": 10.0,
                "reason": "r", "error": None, "signals": {}, "approved": approved, "risk_rule": rule,
                "risk_reason": rule}

    ledger.claim_decisions([decision(f"S{i}", MON, True) for i in range(6)] + [
        decision("R1", MON, False, "max_position_fraction"), decision("R2", MON, False, "max_position_fraction"),
        decision("R3", MON, False, "max_order_notional"), decision("K1", MON, False, "kill_switch"),
        decision("U1", MON, None)])
    # Thursday's session was audited on Friday: not counted again
    ledger.claim_decisions([decision(f"T{i}", THU, False, "buying_power") for i in range(4)])
    checks = by_label(run(store))
    # Monday: 11 proposed, 1 without a verdict, 1 refused by the kill switch (not graded): 9 judged, 3 rejected
    rejections = checks[f"rejections[{ACCOUNT}]"]
    assert (rejections.level, rejections.value) == (Level.YELLOW, pytest.approx(1 / 3))
    assert rejections.message == (
        "3 of 9 proposed order(s) rejected by risk (bars after 2024-03-01 21:00 UTC): share 33.33% >= "
        "rejections_yellow 25.00%: the strategy keeps pushing against the limits; by rule: max_order_notional 1, "
        "max_position_fraction 2; kill_switch refused 1 more (not graded)")
    counts = {c.subject: c.value for c in by_label(run(store)).values() if c.name == "rejected_orders"}
    assert counts == {"kill_switch": 1, "max_order_notional": 1, "max_position_fraction": 2}
    assert "buying_power" not in counts
    # a window of 6 days reaches Thursday (its bar is stamped at midnight UTC): 7 of 13 judged
    wide = by_label(run(store, window=timedelta(days=6)))
    assert wide[f"rejections[{ACCOUNT}]"].value == pytest.approx(7 / 13)
    assert wide["rejected_orders[buying_power]"].value == 4
    # never RED, and not graded below min_orders
    few = by_label(run(store, thresholds={"min_orders": 10}))[f"rejections[{ACCOUNT}]"]
    assert few.level is Level.GREEN and "not graded: 9 judged, 10 needed" in few.message


# -- prices ---------------------------------------------------------------------------------------------------
def test_stale_prices_and_positions_without_a_bar_are_yellow(store, ledger):
    store.upsert_bars(bars("AAPL", {"2024-02-28": 100.0, THU: 110.0}))  # Friday and Monday missing: 2 behind
    fill(ledger, "AAPL", "buy", 10, 100.0, "2024-02-28")
    fill(ledger, "MSFT", "buy", 10, 200.0, MON)  # no MSFT bar at all: valued at its mark, the fill's price
    prices = by_label(run(store))[f"prices[{ACCOUNT}]"]
    assert (prices.level, prices.value) == (Level.YELLOW, 2)
    assert prices.message == (
        "2 open position(s) valued at the close of their last 1Day bar closed by the audit's instant: AAPL: last "
        "1Day bar 2024-02-29 is 2 closed bar(s) behind: stale; MSFT: no closed 1Day bar stored in the last 40 days: "
        "valued at its mark of 2024-03-04 200")
    # cash 100,000 - 1,000 - 2,000 = 97,000; AAPL 10 x 110 = 1,100, MSFT 10 x 200 = 2,000: equity 100,100
    assert by_label(run(store))["concentration[AAPL]"].value == pytest.approx(1_100 / 100_100)


def test_no_look_ahead_a_past_instant_audits_the_book_as_it_stood(store, ledger):
    store.upsert_bars(bars("AAPL", {THU: 100.0, FRI: 104.0, MON: 150.0}))
    fill(ledger, "AAPL", "buy", 100, 100.0, FRI)
    fill(ledger, "AAPL", "buy", 900, 150.0, MON)
    # at Saturday noon: Monday's fill and Monday's bar are the future; the book is 100 AAPL at Friday's close 104,
    # cash 90,000: equity 100,400; 10,400 / 100,400 = 10.36 % (RED: beyond 10 %)
    saturday = datetime(2024, 3, 2, 12, 0, tzinfo=UTC)
    checks = by_label(run(store, now=saturday))
    assert checks[f"book[{ACCOUNT}]"].value == pytest.approx(100_400.0)
    assert checks["concentration[AAPL]"].value == pytest.approx(10_400 / 100_400)
    # Tuesday: 1,000 AAPL at 150 = 150,000 and cash 90,000 - 135,000 = -45,000: equity 105,000, leverage 1.43
    tuesday = by_label(run(store))
    assert tuesday[f"book[{ACCOUNT}]"].value == pytest.approx(105_000.0)
    assert tuesday[f"leverage[{ACCOUNT}]"].level is Level.RED


# -- books of other kinds, and empty ones --------------------------------------------------------------------
def test_no_book_yet_is_yellow_and_an_account_the_ledger_does_not_know_is_an_error(store):
    report = audit_risk(store, now=NOW, account=ACCOUNT, run_id="r0")
    assert report.level is Level.YELLOW and [c.name for c in report.checks] == ["book"]
    assert report.checks[0].message.startswith("no book yet: the ledger of this store has no account at all")
    assert store.latest_health_report(AUDIT) is not None  # stored: the audit ran
    TradingLedger(store).open_account(ACCOUNT, 100_000.0)
    # a book of cash only (the trader ran, nothing traded yet): GREEN throughout
    assert run(store).level is Level.GREEN
    with pytest.raises(InvalidInputError, match=r"account 'simulated:defualt' is not in the ledger of .*; its "
                                                r"accounts: simulated:default"):
        run(store, account="simulated:defualt")
    # an account taken by default (the auto trader's) whose trader has not run yet, while another book exists
    lenient = run(store, account="simulated:core", strict_account=False)
    assert lenient.level is Level.YELLOW and [c.name for c in lenient.checks] == ["book"]
    assert lenient.checks[0].message == (
        "no book yet: the ledger of this store has no account simulated:core (its accounts: simulated:default); "
        "nothing traded yet (the trader opens its account on its first cycle): nothing to audit")


def test_a_brokers_book_is_passed_in_and_valued_at_the_stored_closes(store, ledger):
    store.upsert_bars(bars("AAPL", {FRI: 100.0, MON: 110.0}))
    TradingLedger(store).open_account("alpaca:alpaca_default", None)
    with pytest.raises(InvalidInputError, match="no simulated book .* pass book=broker.account_state()"):
        run(store, account="alpaca:alpaca_default")
    book = AccountSnapshot(equity=0.0, cash=50_000.0, buying_power=0.0, start_of_day_equity=60_000.0,
                           positions={"AAPL": 100.0})
    # 50,000 + 100 x 110 = 61,000; against the broker's previous close 60,000: a gain
    checks = by_label(run(store, account="alpaca:alpaca_default", book=book))
    assert checks["book[alpaca:alpaca_default]"].value == pytest.approx(61_000.0)
    assert checks["concentration[AAPL]"].value == pytest.approx(11_000 / 61_000)
    assert checks["daily_loss[alpaca:alpaca_default]"].value == pytest.approx(1 - 61_000 / 60_000)
    assert "the broker's previous close" in checks["daily_loss[alpaca:alpaca_default]"].message
    # a broker position the store has no bar for cannot be valued: RED, never green in doubt
    unknown = by_label(run(store, account="alpaca:alpaca_default",
                           book=AccountSnapshot(equity=0.0, cash=1.0, buying_power=0.0, start_of_day_equity=None,
                                                positions={"AAPL": 1.0, "ZZZ": 5.0})))
    assert unknown["prices[alpaca:alpaca_default]"].level is Level.RED
    assert "ZZZ: no closed 1Day bar stored" in unknown["prices[alpaca:alpaca_default]"].message
    assert unknown["concentration[ZZZ]"].level is Level.RED and unknown["concentration[ZZZ]"].value is None


def test_the_report_is_stored_once_per_run(store, ledger):
    store.upsert_bars(bars("AAPL", {FRI: 100.0, MON: 150.0}))
    fill(ledger, "AAPL", "buy", 100, 100.0, FRI)
    first = audit_risk(store, now=NOW, account=ACCOUNT, dag_id="portfolio_risk_audit", run_id="r1")
    again = audit_risk(store, now=NOW, account=ACCOUNT, dag_id="portfolio_risk_audit", run_id="r1")
    history = store.health_history(AUDIT)
    assert len(history) == 1 and history[0].level == "RED"
    assert HealthReport.from_dict(history[0].report) == first == again


# -- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"limits": {"max_position": 0.1}}, r"unknown risk limit key\(s\): max_position"),
    ({"limits": {"max_position_fraction": 2}}, r"max_position_fraction must be a number in \(0, 1\]"),
    ({"thresholds": '{"max_leverage": '}, "risk audit thresholds must be a JSON object"),
    ({"thresholds": {"max_leverage": 0}}, "max_leverage must be a number > 0, got 0"),
    ({"thresholds": {"approach": 1.5}}, r"approach must be a number in \(0, 1\], got 1.5"),
    ({"thresholds": {"leverage": 2}}, r"unknown key\(s\) \['leverage'\]"),
    ({"asset_class_limits": {"bonds": 0.5}}, "unknown asset class 'bonds'"),
    ({"asset_class_limits": {"crypto": -1}}, "crypto must be a fraction of equity > 0"),
    ({"asset_class_limits": "[1]"}, "asset_class_limits must be a JSON object"),
    ({"window": timedelta(0)}, "window must be a positive timedelta"),
    ({"account": "default"}, "account must be a ledger account such as 'simulated:default'"),
    ({"account": ""}, "account must be a ledger account"),
    ({"timeframe": "1Week"}, "1Week"),
    ({"book": {"AAPL": 1}}, "book must be a broker's AccountSnapshot"),
    ({"now": datetime(2024, 3, 5, 10, 20)}, "now"),
])
def test_bad_input_is_refused_before_anything_is_written(store, ledger, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        audit_risk(store, **{"now": NOW, "account": ACCOUNT, **kwargs})
    assert store.health_history(AUDIT) == []


def test_a_store_that_is_not_migrated_is_an_error(tmp_path):
    store = PortfolioStore.for_sqlite_file(tmp_path / "missing.db")
    try:
        with pytest.raises(StoreError, match="schema version 0, the audit needs"):
            audit_risk(store, now=NOW, account=ACCOUNT)
    finally:
        store.dispose()


def test_every_threshold_is_documented_with_its_default():
    rows = {line.split()[0]: line.split()[1] for line in audit.__doc__.splitlines()
            if line and line.split()[0] in AuditThresholds().to_dict()}
    for key, value in AuditThresholds().to_dict().items():
        assert rows[key] == "null" if value is None else float(rows[key]) == value, key
    assert asset_class_limits_from(None) == {"equity": 1.0, "crypto": 0.25}
    assert AuditThresholds.from_mapping('{"max_drawdown": 0.3, "max_gross_notional": null}').max_drawdown == 0.3
    assert math.isclose(AuditThresholds.from_mapping(None).approach, 0.8)
