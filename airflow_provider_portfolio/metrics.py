"""The desk's metrics, sent through Airflow's own metrics (StatsD or OpenTelemetry, as the deployment set it).

Nothing here opens a socket or reads a setting of its own: every value goes to Airflow's ``Stats``, which sends
it where ``[metrics]`` says (``statsd_on``, ``otel_on``, Datadog) under Airflow's own prefix
(``[metrics] statsd_prefix``/``otel_prefix``, default ``airflow``), and drops it when metrics are off. So a
Grafana that charts Airflow already sees ``airflow.portfolio.*``.

Every name starts with :data:`PREFIX`. StatsD has no tags, so the account, symbol, model or risk rule is a
segment of the name, made safe by :func:`metric_segment` (``BTC/USD`` -> ``BTC_USD``,
``simulated:core`` -> ``simulated_core``). The names:

- ``portfolio.trader.<account>.equity``, ``.cash``, ``.positions_value`` (gauges): the account after the cycle.
- ``portfolio.trader.<account>.decisions`` (counter): symbols decided in the cycle.
- ``portfolio.trader.<account>.orders_sent`` (counter): orders sent to the broker.
- ``portfolio.trader.<account>.orders_rejected.<rule>`` (counter): orders refused; ``<rule>`` is the risk rule
  that refused them (``max_order_notional``, ``kill_switch``...) or ``broker`` for the broker's refusals.
- ``portfolio.trader.<account>.orders_unknown`` (counter): orders whose outcome is unknown (the task fails).
- ``portfolio.trader.<account>.fills`` (counter): fills settled in the cycle, when the cycle report counts them.
- ``portfolio.etl.<timeframe>.rows_written`` and ``.symbols_failed`` (counters), ``.failed.<symbol>`` (counter: 1
  per failed load of that symbol).
- ``portfolio.forecast.<model>.symbols`` and ``.symbols_failed`` (counters), ``.labels.<label>`` (gauge: symbols
  per evaluation label, ``healthy``...), ``.duration`` (timer).
- ``portfolio.health.<kind>.level`` (gauge): 0 GREEN, 1 YELLOW, 2 RED; ``<kind>`` is the report's (``monitoring``,
  ``environment``). ``portfolio.health.<kind>.checks_failed`` (gauge): its RED checks.
- ``portfolio.data.bars_behind.<symbol>`` (gauge): data freshness, the closed bars of the symbol's calendar that
  the store lacks (0: its last closed bar is there).

An emit never raises: a value that cannot be sent is logged at debug level and the rest goes on.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

#: The first segment of every metric of the provider (under Airflow's own ``[metrics] statsd_prefix``).
PREFIX = "portfolio"

#: Health levels as gauge values.
LEVELS = {"GREEN": 0, "YELLOW": 1, "RED": 2}

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_SEGMENT = 64


def metric_segment(value: object) -> str:
    """``value`` as one segment of a metric name: ASCII letters, digits, ``_`` and ``-`` only (a dot would
    split the name), at most 64 characters; ``unknown`` when nothing is left.

    >>> metric_segment("BTC/USD"), metric_segment("simulated:core")
    ('BTC_USD', 'simulated_core')
    """
    text = _UNSAFE.sub("_", str(value)).strip("_")
    return text[:_MAX_SEGMENT] or "unknown"


def metric_name(*segments: object) -> str:
    """``portfolio.<segment>...``, each segment made safe by :func:`metric_segment`."""
    return ".".join([PREFIX, *(metric_segment(s) for s in segments)])


def _stats() -> Any:
    """Airflow's ``Stats`` in a task process: the SDK's on Airflow 3.2+, ``airflow.stats`` on 3.1."""
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:
        from airflow.stats import Stats
    return Stats


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _send(kind: str, name: str, value: object) -> None:
    """One value to ``Stats``; never raises."""
    try:
        stats = _stats()
        if kind == "timing":
            stats.timing(name, timedelta(seconds=float(value)))  # type: ignore[arg-type]
        elif kind == "incr":
            stats.incr(name, int(value))  # type: ignore[call-overload]
        else:
            stats.gauge(name, float(value))  # type: ignore[arg-type]
    except Exception as err:  # metrics never fail a task
        log.debug("metric %s not sent: %s", name, err)


def _gauge(value: object, *segments: object) -> None:
    number = _number(value)
    if number is not None:
        _send("gauge", metric_name(*segments), number)


def _count(value: object, *segments: object) -> None:
    number = _number(value)
    if number is not None and number >= 0:
        _send("incr", metric_name(*segments), int(number))


def _size(value: object) -> int | None:
    """A count given as a number or as a collection of the things counted."""
    if isinstance(value, (list, tuple, set, dict)):
        return len(value)
    number = _number(value)
    return None if number is None else int(number)


def _guarded(what: str, emit: Any, *args: Any, **kwargs: Any) -> None:
    try:
        emit(*args, **kwargs)
    except Exception as err:
        log.debug("%s metrics not sent: %s", what, err)


def emit_cycle(report: Mapping[str, Any]) -> None:
    """The auto trader's cycle: the account's equity, orders sent and rejected (by rule), fills.

    :param report: the operator's return value: ``CycleReport.to_dict()`` with ``account``.
    """
    _guarded("cycle", _emit_cycle, report)


def _emit_cycle(report: Mapping[str, Any]) -> None:
    account = report.get("account") or "unknown"
    equity = report.get("equity") or {}
    if isinstance(equity, Mapping):
        for key in ("equity", "cash", "positions_value"):
            _gauge(equity.get(key), "trader", account, key)
    else:
        _gauge(equity, "trader", account, "equity")
    _count(_size(report.get("decided")), "trader", account, "decisions")
    _count(_size(report.get("submitted")), "trader", account, "orders_sent")
    rules: dict[str, int] = {}
    for why in (report.get("risk_rejected") or {}).values():
        rule = str(why).split(":", 1)[0].strip() if ":" in str(why) else "risk"
        rules[rule] = rules.get(rule, 0) + 1
    broker = _size(report.get("broker_rejected")) or 0
    if broker:
        rules["broker"] = rules.get("broker", 0) + broker
    for rule, count in sorted(rules.items()):
        _count(count, "trader", account, "orders_rejected", rule)
    unknown = _size(report.get("unknown"))
    if unknown:
        _count(unknown, "trader", account, "orders_unknown")
    if "fills" in report:
        _count(_size(report.get("fills")), "trader", account, "fills")


def emit_etl(summary: Mapping[str, Any]) -> None:
    """The ETL's load: rows written, symbols failed (and which).

    :param summary: ``EtlReport.to_dict()`` (the ETL operator's return value).
    """
    _guarded("etl", _emit_etl, summary)


def _emit_etl(summary: Mapping[str, Any]) -> None:
    timeframe = summary.get("timeframe") or "unknown"
    failed = list(summary.get("failed") or ())
    _count(summary.get("rows_written"), "etl", timeframe, "rows_written")
    _count(len(failed), "etl", timeframe, "symbols_failed")
    for symbol in failed:
        _count(1, "etl", timeframe, "failed", symbol)


def emit_forecast(summary: Mapping[str, Any]) -> None:
    """A forecasting job: symbols forecast and failed, evaluation labels, duration.

    :param summary: ``ForecastReport.to_dict()`` (the forecasting operators' return value).
    """
    _guarded("forecast", _emit_forecast, summary)


def _emit_forecast(summary: Mapping[str, Any]) -> None:
    model = summary.get("model") or "unknown"
    _count(_size(summary.get("symbols")), "forecast", model, "symbols")
    _count(_size(summary.get("failed")), "forecast", model, "symbols_failed")
    for label, count in sorted((summary.get("labels") or {}).items()):
        _gauge(count, "forecast", model, "labels", label)
    seconds = _number(summary.get("seconds"))
    if seconds is not None and seconds >= 0:
        _send("timing", metric_name("forecast", model, "duration"), seconds)


def emit_health(report: Mapping[str, Any], *, freshness: Mapping[str, float] | None = None) -> None:
    """A health report's level (0 GREEN, 1 YELLOW, 2 RED) and failed checks; each symbol's data freshness.

    :param report: ``HealthReport.to_dict()``.
    :param freshness: symbol -> closed bars of its calendar missing from the store (0: the last closed bar is
        there), sent as ``portfolio.data.bars_behind.<symbol>``.
    """
    _guarded("health", _emit_health, report, freshness)


def _emit_health(report: Mapping[str, Any], freshness: Mapping[str, float] | None) -> None:
    kind = report.get("kind") or "health"
    level = LEVELS.get(str(report.get("level", "")).strip().upper())
    if level is not None:
        _gauge(level, "health", kind, "level")
    failed = _size(report.get("failed"))
    if failed is not None:
        _gauge(failed, "health", kind, "checks_failed")
    for symbol, behind in sorted((freshness or {}).items()):
        _gauge(behind, "data", "bars_behind", symbol)
