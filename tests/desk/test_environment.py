"""check_environment: versions against declared ranges, the store's schema, today's session, the kill switch, disk."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import sqlite3
from datetime import datetime, timezone

import pytest

from airflow_provider_portfolio.desk.environment import (
    check_environment,
    dependency_checks,
    disk_check,
    kill_switch_check,
    session_check,
    store_check,
)
from airflow_provider_portfolio.desk.health import Check, Level
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.schema import latest_version

UTC = timezone.utc
# Mon 2026-12-28 15:00 UTC = 10:00 New York: an ordinary NYSE session.
SESSION_DAY = datetime(2026, 12, 28, 15, 0, tzinfo=UTC)
LATEST = latest_version()


def by_label(checks) -> dict[str, Check]:
    return {c.label: c for c in checks}


# -- versions -------------------------------------------------------------------------------------------
def fake_distribution(root, name: str, *lines: str) -> str:
    """An installed distribution ``name`` (a ``.dist-info`` on ``sys.path``) with these metadata lines."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("\n".join(["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *lines]) + "\n")
    return name


@pytest.fixture
def desk_fake(tmp_path, monkeypatch) -> str:
    monkeypatch.syspath_prepend(str(tmp_path))
    return fake_distribution(
        tmp_path, "desk-fake",
        "Requires-Python: >=3.8",
        "Requires-Dist: packaging>=999",  # installed, far below the range
        "Requires-Dist: no-such-package-portfolio-xyz>=1.0",  # not installed at all
        "Requires-Dist: pytest>=1",  # installed, within
        'Requires-Dist: numpy>=999; extra == "gpu"',  # an extra: never asked for, skipped
        'Requires-Dist: requests>=999; sys_platform == "no-such-platform"',  # another platform: skipped
        "Provides-Extra: gpu",
    )


def test_a_package_out_of_range_or_missing_is_red_naming_it_its_version_and_the_range(desk_fake):
    checks = by_label(dependency_checks(desk_fake))
    assert set(checks) == {"python", "dependency[packaging]", "dependency[no-such-package-portfolio-xyz]",
                           "dependency[pytest]"}  # the extra and the other platform's requirement are skipped
    packaging = checks["dependency[packaging]"]
    installed = importlib.metadata.version("packaging")
    assert packaging.level is Level.RED and packaging.value == installed and packaging.threshold == ">=999"
    assert f"packaging {installed} is outside the declared range >=999" in packaging.message
    missing = checks["dependency[no-such-package-portfolio-xyz]"]
    assert missing.level is Level.RED and missing.value is None
    assert "no-such-package-portfolio-xyz is not installed (required: >=1.0)" in missing.message
    assert checks["dependency[pytest]"].level is Level.GREEN
    assert checks["dependency[pytest]"].value == importlib.metadata.version("pytest")
    assert checks["python"].level is Level.GREEN and checks["python"].value == platform.python_version()


def test_a_python_outside_requires_python_is_red(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = fake_distribution(tmp_path, "desk-old", "Requires-Python: <3.0")
    (python,) = dependency_checks(name)
    assert python.level is Level.RED and python.threshold == "<3.0"
    assert f"Python {platform.python_version()} is outside the declared range <3.0" in python.message


def test_a_distribution_that_is_not_installed_is_red():
    (check,) = dependency_checks("no-such-distribution-portfolio")
    assert check.level is Level.RED and "'no-such-distribution-portfolio' is not installed" in check.message


def test_the_installed_provider_meets_its_own_declared_ranges():
    checks = by_label(dependency_checks())
    assert checks["dependency[apache-airflow]"].threshold == "<4,>=3.1.8"
    assert checks["dependency[apache-airflow]"].value == importlib.metadata.version("apache-airflow")
    assert [c.message for c in checks.values() if c.level is not Level.GREEN] == []
    assert not any(label.startswith("dependency[cupy") for label in checks)  # the gpu extra is not checked


# -- store ----------------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    s = PortfolioStore.for_sqlite_file(tmp_path / "desk.db")
    yield s
    s.dispose()


def set_versions(path, *versions: int) -> None:
    """Leave exactly ``versions`` in the schema_version table (plain sqlite3, not the code under test)."""
    with sqlite3.connect(path) as con:
        con.execute("DELETE FROM schema_version")
        for v in versions:
            con.execute("INSERT INTO schema_version (version, applied_at, description) VALUES (?, '2026-01-01', 'x')",
                        (v,))


def test_a_migrated_store_is_green(store):
    store.migrate()
    check = store_check(store)
    assert (check.level, check.value, check.threshold) == (Level.GREEN, LATEST, LATEST)


def test_a_store_at_an_older_schema_version_is_yellow_because_it_migrates_on_first_use(store, tmp_path):
    store.migrate()
    set_versions(tmp_path / "desk.db", 1)
    check = store_check(store)
    assert (check.level, check.value, check.threshold) == (Level.YELLOW, 1, LATEST)
    assert f"schema version 1, behind {LATEST}" in check.message and "migrates it" in check.message


def test_an_empty_store_is_yellow(store):
    check = store_check(store)
    assert (check.level, check.value) == (Level.YELLOW, 0)


def test_a_store_newer_than_the_code_is_red(store, tmp_path):
    store.migrate()
    set_versions(tmp_path / "desk.db", *range(1, LATEST + 2))
    check = store_check(store)
    assert (check.level, check.value) == (Level.RED, LATEST + 1) and "upgrade airflow-provider-portfolio" in check.message


def test_an_unreachable_store_is_red(tmp_path):
    (tmp_path / "a_file").write_text("")
    unreachable = PortfolioStore.for_sqlite_file(tmp_path / "a_file" / "desk.db")  # its folder cannot exist
    check = store_check(unreachable)
    assert check.level is Level.RED and check.value is None and "unreachable" in check.message


def test_a_store_that_could_not_be_opened_is_red_with_the_reason_and_no_store_is_no_check():
    check = store_check(None, "store connection 'desk' does not exist")
    assert check.level is Level.RED and check.message == "store cannot be opened: store connection 'desk' does not exist"
    assert store_check(None) is None


# -- session --------------------------------------------------------------------------------------------
def test_christmas_has_no_nyse_session_which_is_yellow_not_red():
    check = session_check("XNYS", datetime(2026, 12, 25, 14, 0, tzinfo=UTC))
    assert (check.level, check.value, check.subject) == (Level.YELLOW, None, "XNYS")
    assert check.message == ("XNYS has no session on Fri 2026-12-25 (America/New_York): a weekend or holiday, nothing "
                             "trades; next open Mon 2026-12-28 09:30")


def test_today_is_the_new_york_date_not_the_utc_one():
    # 03:00 UTC on the 25th is 22:00 on Thursday the 24th in New York: Christmas Eve, a session closing at 13:00.
    check = session_check("XNYS", datetime(2026, 12, 25, 3, 0, tzinfo=UTC))
    assert (check.level, check.value) == (Level.GREEN, "2026-12-24")
    assert check.message == "XNYS has a session on Thu 2026-12-24: 09:30-13:00 America/New_York"


def test_a_weekend_is_yellow_and_an_ordinary_day_green():
    assert session_check("XNYS", datetime(2026, 12, 26, 15, 0, tzinfo=UTC)).level is Level.YELLOW
    check = session_check("XNYS", SESSION_DAY)
    assert (check.level, check.value) == (Level.GREEN, "2026-12-28") and "09:30-16:00" in check.message
    assert session_check("24/7", datetime(2026, 12, 25, 14, 0, tzinfo=UTC)).level is Level.GREEN


def test_an_unknown_calendar_is_red_naming_it():
    check = session_check("XNYZ", SESSION_DAY)
    assert check.level is Level.RED and "calendar 'XNYZ' cannot be read" in check.message
    assert "Did you mean" in check.message and "Valid names" not in check.message


# -- kill switch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "level", "value"), [
    ("active", Level.GREEN, "active"), (None, Level.GREEN, "active"), ("", Level.GREEN, "active"),
    ("Reduce-Only", Level.YELLOW, "reduce_only"), ("halted", Level.RED, "halted"), (" HALTED ", Level.RED, "halted"),
    ("stop", Level.RED, "stop"), (1, Level.RED, "1"),
])
def test_kill_switch_states(raw, level, value):
    check = kill_switch_check(raw)
    assert (check.name, check.level, check.value) == ("kill_switch", level, value)


def test_an_unknown_kill_switch_value_says_it_trades_as_halted():
    assert kill_switch_check("stop").message == ("kill switch 'stop' is no known state (active, reduce_only, halted): "
                                                 "the trader treats it as halted")
    assert "no orders at all" in kill_switch_check("halted").message


# -- disk -----------------------------------------------------------------------------------------------
def test_a_full_disk_is_red_and_a_nearly_full_one_yellow(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    full = disk_check("store", tmp_path, min_free_bytes=free + 10**15, min_free_fraction=0.0)
    assert (full.level, full.subject) == (Level.RED, "store") and 0 < full.value <= free + 10**9
    assert "free space before trading" in full.message
    assert full.threshold == {"min_free_bytes": free + 10**15, "min_free_fraction": 0.0}
    nearly = disk_check("store", tmp_path, min_free_bytes=0, min_free_fraction=1.0)  # never all of a disk free
    assert nearly.level is Level.YELLOW
    assert disk_check("store", tmp_path, min_free_bytes=0, min_free_fraction=0.0).level is Level.GREEN


def test_a_path_that_does_not_exist_yet_is_measured_at_its_nearest_parent(tmp_path):
    check = disk_check("logs", tmp_path / "not" / "yet" / "logs", min_free_bytes=1, min_free_fraction=0.0)
    assert check.level is Level.GREEN and check.value > 0 and str(tmp_path / "not" / "yet" / "logs") in check.message


# -- the whole report -----------------------------------------------------------------------------------
def test_the_report_holds_every_check_then_the_extra_ones_and_is_red_when_one_is(store, tmp_path):
    store.migrate()
    extra = Check("connection", Level.RED, False, None, "connection 'alpaca_paper' does not exist", "alpaca_paper")
    report = check_environment(now=SESSION_DAY, store=store, kill_switch="reduce_only",
                               disk_paths={"store": str(tmp_path), "logs": str(tmp_path / "logs")},
                               min_free_bytes=0, min_free_fraction=0.0, extra_checks=[extra])
    labels = [c.label for c in report.checks]
    assert labels[0] == "python" and labels[-1] == "connection[alpaca_paper]"
    assert {"store", "session[XNYS]", "kill_switch", "disk[store]", "disk[logs]"} <= set(labels)
    assert report.kind == "environment" and report.ts == SESSION_DAY
    assert report.level is Level.RED and [c.label for c in report.failed] == ["connection[alpaca_paper]"]
    assert [c.label for c in report.at(Level.YELLOW)] == ["kill_switch"]
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data and data["failed"] == ["connection[alpaca_paper]"]


def test_a_sound_environment_is_green(store, tmp_path):
    store.migrate()
    report = check_environment(now=SESSION_DAY, store=store, disk_paths={"store": str(tmp_path)}, min_free_bytes=1,
                               min_free_fraction=0.0)
    assert report.level is Level.GREEN, report.summary()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"now": datetime(2026, 12, 28, 10)}, "now must be timezone-aware"),
    ({"min_free_bytes": -1}, "min_free_bytes must be a number of bytes >= 0, got -1"),
    ({"min_free_bytes": True}, "min_free_bytes must be"),
    ({"min_free_fraction": 1.5}, "min_free_fraction must be a fraction in [0, 1], got 1.5"),
    ({"min_free_fraction": float("nan")}, "min_free_fraction must be"),
    ({"disk_paths": ["/tmp"]}, "disk_paths must map labels to paths"),
    ({"disk_paths": {"logs": ""}}, "disk_paths must map labels to paths"),
    ({"exchange": ""}, "exchange must be a calendar name"),
    ({"extra_checks": ["connection ok"]}, "extra_checks must be Check objects"),
])
def test_bad_input_is_refused_naming_it(kwargs, message):
    args = {"now": SESSION_DAY, **kwargs}
    with pytest.raises(InvalidInputError) as err:
        check_environment(**args)
    assert message in str(err.value)
