"""RiskAuditOperator in-process, on a real SQLite store: a breach stored in ``health_reports`` and notified (the
channel captured, nothing sent over a network), a sound book only logged, the trader's limits taken as the trader
takes them (its argument, then Variable ``portfolio.trading_settings``), an Alpaca account's positions read with GET
requests only, and bad input refused before anything is written."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from airflow.models.connection import Connection

from airflow_provider_portfolio import notifications
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import to_bar_frame
from airflow_provider_portfolio.operators.audit import RiskAuditOperator
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.accounting import apply_fill
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET

Connection(conn_id="portfolio_warm_up", conn_type="sqlite")  # Airflow's ORM mappers configured once, at import

UTC = timezone.utc
# Tuesday 5 March 2024, 05:20 New York: after the ETL that loaded Monday's session
NOW = datetime(2024, 3, 5, 10, 20, tzinfo=UTC)
RUN_ID = "asset_triggered__2024-03-05T10:20:00+00:00"
ACCOUNT = "simulated:default"
PAPER = "https://paper-api.alpaca.markets/v2"
ALPACA_FIXTURES = Path(__file__).parent.parent / "hooks" / "fixtures" / "alpaca"
SETTINGS_ENV = "AIRFLOW_VAR_PORTFOLIO.TRADING_SETTINGS"


class RecordingTI:
    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


def context(run_id: str = RUN_ID, at: datetime = NOW) -> dict:
    """An asset-triggered run's context: no data interval, ``run_after`` the instant."""
    return {"ti": RecordingTI(), "dag_run": SimpleNamespace(dag_id="portfolio_risk_audit", run_id=run_id, run_after=at),
            "data_interval_end": None, "run_id": run_id}


def daily(symbol: str, closes: dict[str, float]) -> pd.DataFrame:
    close = list(closes.values())
    return to_bar_frame(pd.DataFrame({
        "symbol": symbol, "timeframe": "1Day", "ts": [pd.Timestamp(d, tz="UTC") for d in closes], "open": close,
        "high": [c + 1 for c in close], "low": [c - 1 for c in close], "close": close, "volume": 1000.0,
        "source": "test"}))


@pytest.fixture
def db(tmp_path, monkeypatch, add_connection) -> Path:
    """A migrated store behind ``desk_store``: AAPL's daily bars (Friday 100, Monday 150) and the simulated book of
    ``simulated:default`` holding 100 AAPL bought at 100 on Friday. No channels, Variables or broker connection."""
    for name in ("NOTIFY_SMTP_CONN_ID", "NOTIFY_EMAIL_TO", "NOTIFY_SLACK_CONN_ID", "STORE_CONN_ID"):
        monkeypatch.delenv(f"AIRFLOW__PORTFOLIO__{name}", raising=False)
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ALPACA_DEFAULT", raising=False)
    monkeypatch.setattr(notifications, "_said", set())
    path = tmp_path / "desk.db"
    add_connection("desk_store", "sqlite", host=str(path))
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    store.upsert_bars(daily("AAPL", {"2024-02-29": 99.0, "2024-03-01": 100.0, "2024-03-04": 150.0}))
    ledger = TradingLedger(store)
    ledger.open_account(ACCOUNT, 100_000.0)
    bar = pd.Timestamp("2024-03-01", tz="UTC")
    ledger.record_intents([{"account": ACCOUNT, "client_order_id": "c1", "dag_id": "portfolio_auto_trader",
                            "run_id": "r", "symbol": "AAPL", "side": "buy", "qty": 100.0, "ref_price": 100.0,
                            "bar_ts": bar, "created_at": bar}])
    ledger.accept(ACCOUNT, "c1", "sim-c1")
    ledger.fill(ACCOUNT, "c1", price=100.0, commission=0.0, bar_ts=bar, rule=apply_fill)
    store.dispose()
    return path


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, str]]:
    """The provider's notification channels replaced by one that records (subject, text)."""
    got: list[tuple[str, str]] = []
    monkeypatch.setattr(notifications, "_channels",
                        lambda: {"capture": ("a recording channel", lambda subject, text: got.append((subject, text)))})
    return got


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def auditor(**kwargs) -> RiskAuditOperator:
    return RiskAuditOperator(**{"task_id": "risk_audit", "store_conn_id": "desk_store", **kwargs})


def test_a_breach_is_stored_and_notified(db, sent):
    # 100 AAPL at Monday's close 150 = 15,000 of equity 90,000 + 15,000 = 105,000: 14.29 % > 10 %
    summary = auditor().execute(context())
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["level"], summary["failed"], summary["account"]) == ("RED", ["concentration[AAPL]"], ACCOUNT)
    assert (summary["equity"], summary["open_positions"], summary["notified"]) == (105_000.0, 1, ["capture"])
    assert summary["leverage"] == pytest.approx(15_000 / 105_000)
    assert summary["ts"] == NOW.isoformat() and summary["kind"] == "risk_audit"
    [(subject, text)] = sent
    assert subject == "[portfolio RED] risk_audit health RED: 1 failed check(s)"
    assert ("- concentration[AAPL]: value 0.142857, threshold yellow 0.08, red 0.1 (position 100 AAPL x 150 = "
            "15,000.00 of equity 105,000.00: 14.29% > max_position_fraction 10.00%: breached)") in text
    assert f"DAG: portfolio_risk_audit\nRun: {RUN_ID}\nTask: risk_audit\n" in text

    [(kind, level, dag_id, run_id, stored)] = rows(db, "SELECT kind, level, dag_id, run_id, checks "
                                                       "FROM health_reports")
    assert (kind, level, dag_id, run_id) == ("risk_audit", "RED", "portfolio_risk_audit", RUN_ID)
    assert json.loads(stored)["failed"] == ["concentration[AAPL]"]
    # a retry of the run replaces its row
    auditor(notify_on_red=False).execute(context())
    assert rows(db, "SELECT COUNT(*) FROM health_reports") == [(1,)] and len(sent) == 1


def test_a_sound_book_is_logged_not_notified(db, sent, caplog):
    caplog.set_level(logging.INFO)
    summary = auditor(risk_limits='{"max_position_fraction": 0.2}').execute(context())
    # 14.29 % of a 20 % limit: 71 %, below the 80 % that makes it YELLOW
    assert (summary["level"], summary["failed"], summary["warnings"]) == ("GREEN", [], [])
    assert "notified" not in summary and sent == []
    assert "risk_audit GREEN: all 11 check(s) green" in caplog.text
    assert rows(db, "SELECT level FROM health_reports") == [("GREEN",)]


def test_the_limits_are_the_traders_argument_then_its_live_settings(db, sent, monkeypatch):
    loose = {"max_position_fraction": 0.2}
    assert auditor(risk_limits=loose).execute(context())["level"] == "GREEN"
    # a tuning study applied a tighter limit: the trader trades under it, so the audit judges by it
    monkeypatch.setenv(SETTINGS_ENV, json.dumps({"max_position_fraction": 0.12, "source": "threshold_sweep:s1"}))
    summary = auditor(risk_limits=loose).execute(context(run_id="r2"))
    assert summary["failed"] == ["concentration[AAPL]"]
    assert auditor(risk_limits=loose, use_trading_settings=False).execute(context(run_id="r3"))["level"] == "GREEN"


def test_an_alpaca_account_is_read_from_the_broker_with_gets_only(db, sent, add_connection, requests_mock):
    add_connection("alpaca_default", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET)
    requests_mock.get(f"{PAPER}/account", json=json.loads((ALPACA_FIXTURES / "account.json").read_text()))
    requests_mock.get(f"{PAPER}/positions", json=[{"symbol": "AAPL", "qty": "10", "side": "long",
                                                   "asset_class": "us_equity"}])
    summary = auditor().execute(context())  # the trader's account: alpaca_default exists
    # cash 98,059.97 + 10 AAPL x 150 (Monday's stored close, not Alpaca's price) = 99,559.97; the broker's previous
    # close (last_equity) 99,991.02: a loss of 0.43 %
    assert summary["account"] == "alpaca:alpaca_default" and summary["level"] == "GREEN"
    assert summary["equity"] == pytest.approx(99_559.97)
    assert summary["daily_loss"] == pytest.approx(1 - 99_559.97 / 99_991.02)
    assert {r.method for r in requests_mock.request_history} == {"GET"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"risk_limits": '{"max_position_fraction": '}, "risk_limits must be a JSON object"),
    ({"risk_limits": {"max_position": 0.1}}, "unknown risk limit key(s): max_position"),
    ({"asset_class_limits": {"bonds": 0.5}}, "unknown asset class 'bonds'"),
    ({"thresholds": {"max_leverage": -1}}, "thresholds: max_leverage must be a number > 0, got -1"),
    ({"window_hours": 0}, "window_hours must be a number of hours > 0"),
    ({"exchange": "NOPE"}, "unknown market calendar 'NOPE'"),
    ({"timeframe": "7Fortnights"}, "unknown timeframe '7Fortnights'"),
])
def test_bad_input_fails_before_the_store_is_opened(db, sent, kwargs, message):
    op = auditor(**kwargs)
    with pytest.raises(InvalidInputError) as err:
        op.execute(context())
    assert message in str(err.value)
    assert "store_hook" not in vars(op) and sent == []


def test_a_bad_trading_settings_variable_is_named(db, sent, monkeypatch):
    monkeypatch.setenv(SETTINGS_ENV, '{"max_position_fraction": "high"}')
    with pytest.raises(InvalidInputError, match="portfolio.trading_settings"):
        auditor().execute(context())


def test_a_named_account_the_ledger_does_not_know_is_an_error_and_nothing_is_written(db, sent):
    with pytest.raises(InvalidInputError, match=r"account 'simulated:defualt' is not in the ledger .* its accounts: "
                                                r"simulated:default"):
        auditor(account="simulated:defualt").execute(context())
    with pytest.raises(InvalidInputError, match="account must be a ledger account"):
        auditor(account="default").execute(context())
    assert rows(db, "SELECT COUNT(*) FROM health_reports") == [(0,)] and sent == []


def test_the_default_account_without_a_book_yet_is_yellow_not_a_failure(tmp_path, add_connection, sent, monkeypatch):
    """Another book exists (the rebalancer's), the auto trader's has not been opened yet: the DAG stays green."""
    monkeypatch.delenv("AIRFLOW_CONN_ALPACA_DEFAULT", raising=False)
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    path = tmp_path / "fresh.db"
    add_connection("fresh_store", "sqlite", host=str(path))
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    TradingLedger(store).open_account("simulated:rebalance", 100_000.0)
    store.dispose()
    summary = auditor(store_conn_id="fresh_store").execute(context())
    assert (summary["level"], summary["warnings"], summary["account"]) == ("YELLOW", [f"book[{ACCOUNT}]"], ACCOUNT)
    assert sent == [] and rows(path, "SELECT kind, level FROM health_reports") == [("risk_audit", "YELLOW")]
