"""The trading gate: whether the desk may trade now, judged from what the store says about today.

The trader runs on its own schedule (every 30 minutes in market hours); the jobs that vouch for the desk run on
theirs (the environment check before the open, the daily ETL, hourly monitoring). The gate ties them together
through the store, so trading never runs on a failed check or stale data, whichever DAG runs it:

``environment``
    The newest environment report (``EnvSanityOperator``) of the exchange's current day. ``RED`` when it failed.
``health``
    The newest monitoring report no older than ``max_health_age`` (2 hours: two hourly reports may be missed).
    ``RED`` when that report is ``RED``.
``freshness[<symbol>]``
    The symbol's daily bars in the store: ``RED`` when a closed bar is past due and missing (the morning ETL did
    not bring it; a daily equity bar is due an hour before the next open, see :mod:`desk.monitoring`).

A report or bars that do not exist at all are a doubt, not a failure: ``RED`` when the check is in ``require``
(the default: all three, never trade in doubt), ``YELLOW`` otherwise (a trader deployed without the environment
check or monitoring). The verdict is a :class:`HealthReport` of kind ``gate``: its ``ok`` says trade, and its
``RED`` checks say why not.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, ensure_utc

if TYPE_CHECKING:
    from airflow_provider_portfolio.store.repository import PortfolioStore

GATE = "gate"
#: What the gate can require to exist: today's environment report, a recent health report, the daily bars.
REQUIREMENTS = ("environment", "health", "bars")
DEFAULT_MAX_HEALTH_AGE = timedelta(hours=2)


def _missing(name: str, required: bool, message: str, subject: str | None = None) -> Check:
    if required:
        return Check(name, Level.RED, None, "required", f"{message} (required: never trade in doubt)", subject)
    return Check(name, Level.YELLOW, None, "not required", f"{message}; not required, trading goes on", subject)


def _from_report(name: str, report: HealthReport, what: str) -> Check:
    when = report.ts.isoformat(timespec="minutes")
    if report.level is Level.RED:
        failed = ", ".join(c.label for c in report.failed)
        return Check(name, Level.RED, report.level.name, "not RED", f"{what} at {when} is RED: {failed}")
    return Check(name, Level.GREEN, report.level.name, "not RED", f"{what} at {when} is {report.level.name}")


def _environment_check(store: PortfolioStore, now: datetime, exchange: str, required: bool) -> Check:
    import pandas as pd

    from airflow_provider_portfolio.desk.monitoring import latest_report
    from airflow_provider_portfolio.market.calendar import MarketCalendar

    tz = MarketCalendar(exchange).timezone
    day_start = pd.Timestamp(now).tz_convert(tz).normalize().tz_convert("UTC").to_pydatetime()
    report = latest_report(store, now=now, max_age=now - day_start, kind="environment")
    if report is None:
        return _missing("environment", required, f"no environment check today ({exchange} day since "
                        f"{day_start.isoformat(timespec='minutes')})")
    return _from_report("environment", report, "today's environment check")


def _health_check(store: PortfolioStore, now: datetime, max_age: timedelta, required: bool) -> Check:
    from airflow_provider_portfolio.desk.monitoring import latest_report

    report = latest_report(store, now=now, max_age=max_age)
    if report is None:
        return _missing("health", required, f"no health report in the last {max_age}")
    return _from_report("health", report, "the latest health report")


def _bar_checks(store: PortfolioStore, symbols: Sequence[str], now: datetime, exchange: str,
                required: bool) -> list[Check]:
    from airflow_provider_portfolio.desk.monitoring import HealthThresholds, freshness_check

    # Any closed daily bar past due and missing is stale for trading (monitoring grades it more gently).
    strict = HealthThresholds.from_mapping({"stale_bars_yellow": None, "stale_bars_red": 1})
    latest = store.latest_bar_ts(list(symbols), "1Day")
    checks = []
    for symbol in symbols:
        last = latest.get(symbol)
        if last is None:
            checks.append(_missing("freshness", required, f"{symbol}: no daily bars in the store", symbol))
        else:
            checks.append(freshness_check(symbol, last, now, "1Day", exchange, strict))
    return checks


def check_require(require: object) -> list[str]:
    """``require`` as a list of :data:`REQUIREMENTS` (a list, tuple or set of them; ``[]``: none required).

    :raises InvalidInputError: for anything else, naming the value.
    """
    if not isinstance(require, list | tuple | set | frozenset) or not all(isinstance(r, str) for r in require) \
            or set(require) - set(REQUIREMENTS):
        raise InvalidInputError(f"require must be a list of {list(REQUIREMENTS)}, got {require!r}")
    return [r for r in REQUIREMENTS if r in require]


def trading_gate(store: PortfolioStore, symbols: Sequence[str], *, now: datetime, exchange: str = DEFAULT_EXCHANGE,
                 max_health_age: timedelta = DEFAULT_MAX_HEALTH_AGE,
                 require: Collection[str] = REQUIREMENTS) -> HealthReport:
    """Judge whether the desk may trade ``symbols`` at ``now`` (see the module docstring).

    :param store: the portfolio store the environment check, monitoring and the ETL write to.
    :param symbols: the universe about to be traded (checked tickers).
    :param now: the trading instant (aware): the cycle's, so a back-fill is judged on what was known then.
    :param exchange: calendar of equities, and whose day "today" is.
    :param max_health_age: how old the newest health report may be.
    :param require: which of :data:`REQUIREMENTS` must exist; a missing one is ``RED`` (else ``YELLOW``).
    :return: the verdict, kind ``gate``: ``ok`` means trade.
    :raises InvalidInputError: for an unknown requirement or a bad ``max_health_age``, before anything is read.
    :raises StoreError: when the store cannot be read (the caller treats that as a closed gate).
    """
    from airflow_provider_portfolio.market.params import validate_symbols

    instant = ensure_utc(now, "now")
    require = check_require(require)
    if not isinstance(max_health_age, timedelta) or max_health_age <= timedelta(0):
        raise InvalidInputError(f"max_health_age must be a positive timedelta, got {max_health_age!r}")
    universe = validate_symbols(list(symbols))
    checks = [_environment_check(store, instant, exchange, "environment" in require),
              _health_check(store, instant, max_health_age, "health" in require),
              *_bar_checks(store, universe, instant, exchange, "bars" in require)]
    return HealthReport(GATE, instant, tuple(checks))
