"""The trading gate, hand-checked on a real SQLite store: today's environment check (the New York day), the newest
health report within its age, the daily bars past due, what is required to exist, a back-fill judged at its own
instant, and bad input refused before the store is read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.desk.gate import trading_gate
from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.store import PortfolioStore
from tests.desk.helpers import ny

UTC = timezone.utc
MARKET = SyntheticMarket(seed=5)
# The calendars' sessions are built on first use (up to a second on a busy box): once, at import, not in a test.
MARKET.panel(["AAPL", "BTC/USD"], "2026-11-02", "2026-11-20", "1Day")
# Wednesday 18 Nov 2026, 10:00 New York (15:00 UTC): an NYSE session; Tuesday's daily bar was due at 08:30.
NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
GREEN_ENV = (Check("store", Level.GREEN, 5, 5, "schema version 5"),)
RED_ENV = (Check("kill_switch", Level.RED, "stop", None, "kill switch 'stop' is no known state"),
           Check("connection", Level.RED, None, None, "connection 'alpaca_paper' does not exist", "alpaca_paper"),
           Check("store", Level.GREEN, 5, 5, "schema version 5"))
GREEN_HEALTH = (Check("store_integrity", Level.GREEN, 0, 0, "quick_check ok"),)
RED_HEALTH = (Check("drawdown", Level.RED, 0.3, {"yellow": 0.1, "red": 0.2}, "maximum drawdown 0.3", "simulated:desk"),
              Check("store_integrity", Level.GREEN, 0, 0, "quick_check ok"))


def put(store: PortfolioStore, kind: str, ts: datetime, checks: tuple[Check, ...], run_id: str = "r") -> None:
    store.append_health_report(HealthReport(kind, ts, checks).to_dict(), dag_id=f"portfolio_{kind}", run_id=run_id)


def bars(store: PortfolioStore, symbols: list[str], first: str, last: str) -> None:
    store.upsert_bars(MARKET.panel(symbols, first, last, "1Day"))


def sound(store: PortfolioStore, symbols=("AAPL",)) -> None:
    """A desk that vouches for trading at NOW: today's environment check and a fresh health report, both green, and
    daily bars through Tuesday 17 Nov."""
    put(store, "environment", ny("2026-11-18", 5), GREEN_ENV)
    put(store, "monitoring", NOW - timedelta(minutes=55), GREEN_HEALTH)
    bars(store, list(symbols), "2026-11-02", "2026-11-17")


def by_label(report: HealthReport) -> dict[str, Check]:
    return {c.label: c for c in report.checks}


def test_a_sound_desk_opens_the_gate(store):
    sound(store, ["AAPL", "MSFT"])
    gate = trading_gate(store, ["AAPL", "MSFT"], now=NOW)
    assert gate.kind == "gate" and gate.ts == NOW and gate.ok and gate.level is Level.GREEN
    assert list(by_label(gate)) == ["environment", "health", "freshness[AAPL]", "freshness[MSFT]"]
    assert by_label(gate)["environment"].message == "today's environment check at 2026-11-18T10:00+00:00 is GREEN"
    assert by_label(gate)["health"].message == "the latest health report at 2026-11-18T14:05+00:00 is GREEN"
    assert by_label(gate)["freshness[AAPL]"].value == 0
    assert gate.to_dict()["failed"] == []


# -- the environment check of today ---------------------------------------------------------------------------
def test_a_failed_environment_check_of_today_closes_the_gate_naming_its_failed_checks(store):
    sound(store)
    put(store, "environment", ny("2026-11-18", 5, 30), RED_ENV, run_id="r2")  # the newer one of today counts
    gate = trading_gate(store, ["AAPL"], now=NOW)
    assert not gate.ok and gate.to_dict()["failed"] == ["environment"]
    env = by_label(gate)["environment"]
    assert (env.level, env.value, env.threshold) == (Level.RED, "RED", "not RED")
    assert env.message == ("today's environment check at 2026-11-18T10:30+00:00 is RED: "
                           "kill_switch, connection[alpaca_paper]")


def test_an_environment_check_of_yesterday_new_york_does_not_count(store):
    sound(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM health_reports WHERE kind = 'environment'")
    # Tuesday 23:30 New York is Wednesday 04:30 UTC: the same UTC day as NOW, but yesterday on the exchange's clock
    put(store, "environment", ny("2026-11-17", 23, 30), RED_ENV)
    assert ny("2026-11-17", 23, 30).date() == NOW.date()
    gate = trading_gate(store, ["AAPL"], now=NOW)
    env = by_label(gate)["environment"]
    assert (env.level, env.value) == (Level.RED, None)  # missing and required: doubt, not yesterday's failure
    assert env.message == ("no environment check today (XNYS day since 2026-11-18T05:00+00:00) "
                           "(required: never trade in doubt)")
    relaxed = trading_gate(store, ["AAPL"], now=NOW, require=["health", "bars"])
    assert relaxed.ok and relaxed.level is Level.YELLOW
    assert by_label(relaxed)["environment"].level is Level.YELLOW
    assert by_label(relaxed)["environment"].message.endswith("; not required, trading goes on")
    # 00:30 New York is already today: a failure then closes the gate
    put(store, "environment", ny("2026-11-18", 0, 30), RED_ENV)
    assert trading_gate(store, ["AAPL"], now=NOW, require=["bars"]).to_dict()["failed"] == ["environment"]


# -- the latest health report -------------------------------------------------------------------------------
def test_a_red_health_report_30_minutes_old_closes_the_gate(store):
    sound(store)
    put(store, "monitoring", NOW - timedelta(minutes=30), RED_HEALTH, run_id="r2")
    gate = trading_gate(store, ["AAPL"], now=NOW)
    assert gate.to_dict()["failed"] == ["health"]
    assert by_label(gate)["health"].message == \
        "the latest health report at 2026-11-18T14:30+00:00 is RED: drawdown[simulated:desk]"
    # a GREEN one after it is the latest: the desk recovered
    put(store, "monitoring", NOW - timedelta(minutes=5), GREEN_HEALTH, run_id="r3")
    assert trading_gate(store, ["AAPL"], now=NOW).ok


def test_a_red_health_report_3_hours_old_does_not_count(store):
    put(store, "environment", ny("2026-11-18", 5), GREEN_ENV)
    bars(store, ["AAPL"], "2026-11-02", "2026-11-17")
    put(store, "monitoring", NOW - timedelta(hours=3), RED_HEALTH)
    required = trading_gate(store, ["AAPL"], now=NOW)
    health = by_label(required)["health"]
    assert required.to_dict()["failed"] == ["health"] and health.value is None
    assert health.message == "no health report in the last 2:00:00 (required: never trade in doubt)"
    relaxed = trading_gate(store, ["AAPL"], now=NOW, require=("environment", "bars"))
    assert relaxed.ok and by_label(relaxed)["health"].level is Level.YELLOW
    # a longer max_health_age reaches it
    assert trading_gate(store, ["AAPL"], now=NOW, max_health_age=timedelta(hours=3)).to_dict()["failed"] == ["health"]
    assert by_label(trading_gate(store, ["AAPL"], now=NOW, max_health_age=timedelta(hours=3)))["health"].value == "RED"


# -- daily bars -----------------------------------------------------------------------------------------------
def test_a_symbol_two_sessions_behind_closes_the_gate(store):
    sound(store)
    bars(store, ["MSFT"], "2026-11-02", "2026-11-16")  # through Monday: Tuesday's bar is past due (08:30)
    bars(store, ["TSLA"], "2026-11-02", "2026-11-13")  # through Friday: Monday's and Tuesday's
    gate = trading_gate(store, ["AAPL", "MSFT", "TSLA"], now=NOW)
    assert gate.to_dict()["failed"] == ["freshness[MSFT]", "freshness[TSLA]"]
    found = by_label(gate)
    assert (found["freshness[AAPL]"].level, found["freshness[AAPL]"].value) == (Level.GREEN, 0)
    # the gate is stricter than monitoring (YELLOW from 1, RED from 2): one bar past due is enough
    assert (found["freshness[MSFT]"].value, found["freshness[MSFT]"].threshold) == (1, {"yellow": None, "red": 1})
    assert found["freshness[TSLA]"].value == 2
    assert found["freshness[TSLA]"].message.startswith("TSLA: last 1Day bar 2026-11-13, expected 2026-11-17")


def test_a_closed_bar_not_yet_due_does_not_close_the_gate(store):
    # Tuesday 17 Nov: Monday's bar closed at 16:00 on Monday and is due an hour before Tuesday's 09:30 open
    put(store, "environment", ny("2026-11-17", 5), GREEN_ENV)
    bars(store, ["AAPL"], "2026-11-02", "2026-11-13")  # through Friday; Monday's missing
    early = ny("2026-11-17", 7)
    put(store, "monitoring", early - timedelta(minutes=10), GREEN_HEALTH)
    gate = trading_gate(store, ["AAPL"], now=early)
    fresh = by_label(gate)["freshness[AAPL]"]
    assert gate.ok and (fresh.level, fresh.value) == (Level.GREEN, 0)
    assert "1 more closed bar(s) not yet due (due 2026-11-17 13:30 UTC)" in fresh.message
    late = ny("2026-11-17", 8, 45)
    put(store, "monitoring", late - timedelta(minutes=10), GREEN_HEALTH, run_id="r2")
    stale = by_label(trading_gate(store, ["AAPL"], now=late))["freshness[AAPL]"]
    assert (stale.level, stale.value) == (Level.RED, 1)


def test_a_crypto_pair_is_judged_on_the_24_7_calendar(store):
    # BTC/USD's daily bar of the 17th closes at midnight UTC and is due half a bar later, noon UTC of the 18th.
    put(store, "environment", ny("2026-11-18", 5), GREEN_ENV)
    bars(store, ["BTC/USD"], "2026-11-02", "2026-11-16")
    before = datetime(2026, 11, 18, 11, 0, tzinfo=UTC)
    put(store, "monitoring", before - timedelta(minutes=10), GREEN_HEALTH)
    assert by_label(trading_gate(store, ["BTC/USD"], now=before))["freshness[BTC/USD]"].value == 0
    after = datetime(2026, 11, 18, 13, 0, tzinfo=UTC)
    put(store, "monitoring", after - timedelta(minutes=10), GREEN_HEALTH, run_id="r2")
    gate = trading_gate(store, ["BTC/USD"], now=after)
    assert gate.to_dict()["failed"] == ["freshness[BTC/USD]"] and by_label(gate)["freshness[BTC/USD]"].value == 1
    # Sunday: equities have no new bar since Friday, but the 24/7 pair has Saturday's
    sunday = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
    bars(store, ["AAPL"], "2026-11-02", "2026-11-20")
    bars(store, ["BTC/USD"], "2026-11-02", "2026-11-20")  # through Friday's bar
    weekend = trading_gate(store, ["AAPL", "BTC/USD"], now=sunday, require=["bars"])
    assert by_label(weekend)["freshness[AAPL]"].value == 0
    assert by_label(weekend)["freshness[BTC/USD]"].value == 1  # Saturday's, due Sunday 12:00 UTC


def test_a_symbol_without_bars_is_red_when_required_and_yellow_otherwise(store):
    sound(store)
    gate = trading_gate(store, ["AAPL", "NVDA"], now=NOW)
    nvda = by_label(gate)["freshness[NVDA]"]
    assert gate.to_dict()["failed"] == ["freshness[NVDA]"] and nvda.subject == "NVDA"
    assert nvda.message == "NVDA: no daily bars in the store (required: never trade in doubt)"
    relaxed = trading_gate(store, ["AAPL", "NVDA"], now=NOW, require=["environment", "health"])
    assert relaxed.ok and by_label(relaxed)["freshness[NVDA]"].level is Level.YELLOW
    # not requiring bars never excuses bars that exist and are stale
    bars(store, ["NVDA"], "2026-11-02", "2026-11-13")
    assert trading_gate(store, ["NVDA"], now=NOW, require=[]).to_dict()["failed"] == ["freshness[NVDA]"]


def test_an_empty_store_with_nothing_required_is_yellow_and_open(store):
    gate = trading_gate(store, ["AAPL"], now=NOW, require=[])
    assert gate.ok and [c.level for c in gate.checks] == [Level.YELLOW] * 3
    assert not trading_gate(store, ["AAPL"], now=NOW).ok


# -- a back-fill --------------------------------------------------------------------------------------------
def test_a_back_fill_is_judged_at_its_instant_and_ignores_later_reports(store):
    sound(store)
    # later that day the environment check and monitoring failed: a back-fill of 10:00 did not know it
    put(store, "environment", ny("2026-11-18", 12), RED_ENV, run_id="r2")
    put(store, "monitoring", ny("2026-11-18", 11), RED_HEALTH, run_id="r2")
    assert trading_gate(store, ["AAPL"], now=NOW).ok
    assert trading_gate(store, ["AAPL"], now=ny("2026-11-18", 12, 30)).to_dict()["failed"] == ["environment", "health"]
    # judged before the morning's check: nothing of today yet
    dawn = trading_gate(store, ["AAPL"], now=ny("2026-11-18", 4))
    assert set(dawn.to_dict()["failed"]) == {"environment", "health"}


# -- bad input ----------------------------------------------------------------------------------------------
class Untouchable:
    """A store that fails the test if anything is read from it."""

    def __getattr__(self, name):
        raise AssertionError(f"the store was used ({name}) before the input was checked")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"require": ["environment", "weather"]}, "require must be a list of ['environment', 'health', 'bars'], got"),
    ({"require": "bars"}, "require must be a list of ['environment', 'health', 'bars'], got 'bars'"),
    ({"require": None}, "require must be a list of ['environment', 'health', 'bars'], got None"),
    ({"require": [["bars"]]}, "require must be a list of ['environment', 'health', 'bars'], got [['bars']]"),
    ({"max_health_age": timedelta(0)}, "max_health_age must be a positive timedelta, got datetime.timedelta(0)"),
    ({"max_health_age": timedelta(minutes=-5)}, "max_health_age must be a positive timedelta"),
    ({"max_health_age": 120}, "max_health_age must be a positive timedelta, got 120"),
    ({"now": datetime(2026, 11, 18, 15, 0)}, "now must be timezone-aware"),
    ({"symbols": ["AAPL", "not a ticker"]}, "not a ticker"),
    ({"exchange": "NOPE"}, "unknown market calendar 'NOPE'"),
])
def test_bad_input_is_refused_before_the_store_is_read(kwargs, message):
    args = {"symbols": ["AAPL"], "now": NOW, **kwargs}
    with pytest.raises(InvalidInputError) as err:
        trading_gate(Untouchable(), args.pop("symbols"), **args)
    assert message in str(err.value)
