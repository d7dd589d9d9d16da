"""The desk's hourly health report: data, store, vendors, models and the book, graded GREEN / YELLOW / RED.

:func:`monitor_desk` is the job (the ``MonitoringOperator`` calls it; so can a notebook or a container). It makes
every check below, each a :class:`~airflow_provider_portfolio.desk.health.Check` judged against
:class:`HealthThresholds`, and appends the report (kind ``monitoring``, level the worst check's) to the store's
``health_reports`` in one transaction (``write=False``: a dry run). A check that cannot be made is ``RED`` with
the reason, never green and never a crash: an unreachable store gives a ``RED`` ``store_integrity`` and one
``RED`` "not measured" check for each part that reads the store.

``store_integrity``, ``store_schema``
    The store answers and is sound: SQLite ``PRAGMA quick_check`` (``integrity_check`` with
    ``full_integrity_check``: it cross-checks every index and takes minutes on a large store; see
    :func:`~airflow_provider_portfolio.store.health.check_store`), PostgreSQL ``SELECT 1``; and its schema version
    is this code's latest. ``RED`` otherwise.
``freshness`` (per symbol)
    How many bars the symbol's stored bars are behind its calendar (crypto pairs: the 24/7 one): the closed bars
    after its last stored bar up to the last closed bar at ``now``
    (:func:`~airflow_provider_portfolio.market.timing.expected_last_bar`) that are past due. A bar followed by a
    market close (a daily equity bar, a session's last intraday bar) is due ``freshness_lead_minutes`` before the
    next session opens, so a bar fetched by the morning ETL is not stale all evening; a bar followed by more
    market (24/7, intraday within a session) is due ``freshness_grace_bars`` bar lengths after it closes. 0 is
    fresh; ``stale_bars_yellow``/``stale_bars_red`` grade it. No bar at all is ``RED``.
``vendor`` (per probe)
    Each probe is called (its exceptions caught: the message is the exception's class and text, any
    ``key=...`` hidden). A probe answering ``None`` was skipped (``GREEN``, value ``skipped``: Alpha Vantage's 25
    calls a day are not spent on monitoring). A vendor down while another answered is ``YELLOW`` (failover
    serves); every probed vendor down is ``RED``. No probes, no check.
``forecast_health`` (per symbol)
    The share of the symbol's models (the ``ensemble`` aside) whose latest evaluation is labelled ``healthy``,
    among those judged (``insufficient_data`` is not a verdict). No evaluation yet, or none judged: ``YELLOW``.
    Unhealthy models are left out of trading downstream, so the ``RED`` limit is off by default.
``rejections``, ``drawdown``, ``win_rate``, ``profit_factor``, ``sharpe``, ``sortino`` (with ``account``)
    Over ``window`` before ``now``, on the desk's clock (decision and fill bars, equity snapshot instants): the
    share of proposed orders (buy/sell decisions with a quantity) that risk rejected, counts by ``risk_rule``
    in the message (graded from ``min_orders`` judged orders; the ``kill_switch`` rule is the desk's own switch
    doing its job: reported, not graded); the maximum drawdown of the equity curve; win rate and profit factor
    of the trades closed (graded from ``min_trades``); Sharpe and Sortino of daily returns (graded from
    ``min_days`` returns). Fewer: ``GREEN`` "not graded". Formulas: :mod:`airflow_provider_portfolio.desk.performance`.
``validation_age``, ``validation_hit_rate``, ``validation_coverage`` (per source)
    What signal validation (:mod:`airflow_provider_portfolio.desk.validation`) found. ``validation_age``: days since
    the latest ``signal_validation`` study at or before ``now``, ``YELLOW`` from ``validation_age_yellow``;
    no study at all is ``YELLOW`` when the store holds forecasts or decisions older than that (there was something
    to validate), else no check (a desk with nothing to validate). Per source (``forecast:<model>``,
    ``signal:<dag_id>``), over the forecasts made and bars decided in the last ``validation_window_days``: the hit rate of the directions
    (graded from ``min_validations`` verdicts) and, for forecasts, the shortfall of band coverage below its nominal
    level (``level - coverage``, graded from ``min_validations`` banded rows).

Thresholds (:class:`HealthThresholds`; the JSON object of the Variable ``portfolio.health_thresholds`` overrides
any of them, :meth:`HealthThresholds.from_mapping`; ``null`` turns a yellow or red limit off). A limit reached
gives its level; where smaller is worse (a share of healthy models, a Sharpe ratio) it is reached from above.

=========================  =======  ====================================================================
key                        default  meaning
=========================  =======  ====================================================================
stale_bars_yellow          1        YELLOW from this many closed bars past due missing from the store
stale_bars_red             2        RED from this many
freshness_lead_minutes     60       a bar followed by a close is due this long before the next open
freshness_grace_bars       0.5      a bar followed by more market is due this many bar lengths after it
healthy_models_yellow      0.5      YELLOW at or below this share of a symbol's judged models healthy
healthy_models_red         null     RED at or below it (off)
rejections_yellow          0.25     YELLOW from this share of proposed orders rejected by risk
rejections_red             0.5      RED from this share
min_orders                 5        judged orders needed before the rejection share is graded
drawdown_yellow            0.10     YELLOW from this maximum drawdown (fraction of the peak)
drawdown_red               0.20     RED from this drawdown
win_rate_yellow            0.40     YELLOW at or below this share of winning closed trades
win_rate_red               0.25     RED at or below it
profit_factor_yellow       1.0      YELLOW at or below this gross profit / gross loss
profit_factor_red          0.75     RED at or below it
min_trades                 10       closed trades needed before win rate and profit factor are graded
sharpe_yellow              0.0      YELLOW at or below this annualised Sharpe ratio of daily returns
sharpe_red                 -1.0     RED at or below it
sortino_yellow             0.0      YELLOW at or below this annualised Sortino ratio
sortino_red                -1.0     RED at or below it
min_days                   20       daily returns needed before Sharpe and Sortino are graded
validation_age_yellow      3        YELLOW from this many days since the last signal validation
validation_age_red         null     RED from this many days (off)
signal_hit_rate_yellow     0.45     YELLOW at or below this share of a source's validated directions right
signal_hit_rate_red        null     RED at or below it (off)
coverage_gap_yellow        0.15     YELLOW from this shortfall of band coverage below its nominal level
coverage_gap_red           null     RED from this shortfall (off)
min_validations            50       validated directions (or banded forecasts) before a source is graded
validation_window_days     30       days of forecasts and decisions the validation figures cover
=========================  =======  ====================================================================

Plain Python: never imports Airflow; importing this module is cheap (the store, pandas and the calendars are imported
when a report is made). Bad input raises
:class:`~airflow_provider_portfolio.exceptions.InvalidInputError` before anything is measured or written.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.desk import performance
from airflow_provider_portfolio.desk.health import Check, HealthReport, Level, checked_thresholds, graded
from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.params import json_object
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, ensure_utc

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.store.repository import PortfolioStore

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_WINDOW", "MONITORING", "THRESHOLDS_VARIABLE", "HealthThresholds", "Probe",
           "kill_switch_after", "latest_report", "monitor_desk"]

#: The ``kind`` of the hourly health report.
MONITORING = "monitoring"
#: The Variable whose JSON object overrides the thresholds.
THRESHOLDS_VARIABLE = "portfolio.health_thresholds"
#: How far back the trading figures look by default.
DEFAULT_WINDOW = timedelta(days=30)
#: A vendor probe: ``(True, message)`` up, ``(False, message)`` down, ``None`` skipped; raising is down.
Probe = Callable[[], "tuple[bool, str] | None"]

_NO_PROBES: Mapping[str, Probe] = MappingProxyType({})
#: How far back freshness counts missing bars (a store years behind is "that many or more").
_FRESHNESS_HORIZON_DAYS = 400
_MAX_TEXT = 300
_SECRET = re.compile(r"(?i)((?:api[_-]?key|apikey|token|secret|password|key)=)[^&\s'\"]+")


# -- thresholds ---------------------------------------------------------------------------------------------
#: key -> (kind, YELLOW/RED limit that ``null`` may turn off). Kinds: ``bars``/``minutes`` (>= 0), ``fraction``
#: (0..1), ``ratio`` (any finite number), ``count`` (a whole number >= 1).
_KINDS: dict[str, tuple[str, bool]] = {
    "stale_bars_yellow": ("bars", True), "stale_bars_red": ("bars", True),
    "freshness_lead_minutes": ("minutes", False), "freshness_grace_bars": ("bars", False),
    "healthy_models_yellow": ("fraction", True), "healthy_models_red": ("fraction", True),
    "rejections_yellow": ("fraction", True), "rejections_red": ("fraction", True), "min_orders": ("count", False),
    "drawdown_yellow": ("fraction", True), "drawdown_red": ("fraction", True),
    "win_rate_yellow": ("fraction", True), "win_rate_red": ("fraction", True),
    "profit_factor_yellow": ("ratio", True), "profit_factor_red": ("ratio", True), "min_trades": ("count", False),
    "sharpe_yellow": ("ratio", True), "sharpe_red": ("ratio", True),
    "sortino_yellow": ("ratio", True), "sortino_red": ("ratio", True), "min_days": ("count", False),
    "validation_age_yellow": ("days", True), "validation_age_red": ("days", True),
    "signal_hit_rate_yellow": ("fraction", True), "signal_hit_rate_red": ("fraction", True),
    "coverage_gap_yellow": ("fraction", True), "coverage_gap_red": ("fraction", True),
    "min_validations": ("count", False), "validation_window_days": ("count", False),
}
#: (yellow, red, higher_is_worse): a YELLOW limit must come before its RED one.
_PAIRS: tuple[tuple[str, str, bool], ...] = (
    ("stale_bars_yellow", "stale_bars_red", True), ("healthy_models_yellow", "healthy_models_red", False),
    ("rejections_yellow", "rejections_red", True), ("drawdown_yellow", "drawdown_red", True),
    ("win_rate_yellow", "win_rate_red", False), ("profit_factor_yellow", "profit_factor_red", False),
    ("sharpe_yellow", "sharpe_red", False), ("sortino_yellow", "sortino_red", False),
    ("validation_age_yellow", "validation_age_red", True),
    ("signal_hit_rate_yellow", "signal_hit_rate_red", False),
    ("coverage_gap_yellow", "coverage_gap_red", True),
)


def _checked(values: Mapping[str, Any], setting: str) -> dict[str, Any]:
    """``values`` checked key by key and pair by pair; messages name ``setting``, the key and the value."""
    return checked_thresholds(values, setting, _KINDS, _PAIRS)


@dataclass(frozen=True)
class HealthThresholds:
    """The limits of the hourly health report, each with its documented default (see the module docstring).

    :raises InvalidInputError: naming the key and the value, for a value of the wrong kind or out of range, or a
        YELLOW limit beyond its RED one.
    """

    stale_bars_yellow: float | None = 1
    stale_bars_red: float | None = 2
    freshness_lead_minutes: float = 60
    freshness_grace_bars: float = 0.5
    healthy_models_yellow: float | None = 0.5
    healthy_models_red: float | None = None
    rejections_yellow: float | None = 0.25
    rejections_red: float | None = 0.5
    min_orders: int = 5
    drawdown_yellow: float | None = 0.10
    drawdown_red: float | None = 0.20
    win_rate_yellow: float | None = 0.40
    win_rate_red: float | None = 0.25
    profit_factor_yellow: float | None = 1.0
    profit_factor_red: float | None = 0.75
    min_trades: int = 10
    sharpe_yellow: float | None = 0.0
    sharpe_red: float | None = -1.0
    sortino_yellow: float | None = 0.0
    sortino_red: float | None = -1.0
    min_days: int = 20
    validation_age_yellow: float | None = 3
    validation_age_red: float | None = None
    signal_hit_rate_yellow: float | None = 0.45
    signal_hit_rate_red: float | None = None
    coverage_gap_yellow: float | None = 0.15
    coverage_gap_red: float | None = None
    min_validations: int = 50
    validation_window_days: int = 30

    def __post_init__(self) -> None:
        for key, value in _checked(self.to_dict(), "HealthThresholds").items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | str | None,
                     setting: str = THRESHOLDS_VARIABLE) -> HealthThresholds:
        """The defaults with the overrides of ``mapping``, the JSON object of ``portfolio.health_thresholds``.

        :param mapping: a mapping, or its JSON text (as a Variable holds it); ``None``, ``""`` and ``{}`` keep
            every default.
        :param setting: how messages name where it came from.
        :raises InvalidInputError: naming the setting, the key and the value: text that is not a JSON object, an
            unknown key, a value that is not a number (or ``null`` for a yellow/red limit) or out of range, a
            YELLOW limit beyond its RED one.
        """
        mapping = json_object(mapping, setting, example='{"drawdown_red": 0.25}', what="thresholds")
        if not mapping:
            return cls()
        unknown = sorted(str(k) for k in mapping if k not in _KINDS)
        if unknown:
            raise InvalidInputError(f"{setting}: unknown key(s) {unknown} (value {mapping[unknown[0]]!r}); the keys "
                                    f"are {', '.join(_KINDS)}")
        values = _checked({**cls().to_dict(), **mapping}, setting)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every threshold by key (what ``portfolio.health_thresholds`` may hold)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# -- grading helpers ----------------------------------------------------------------------------------------
def _text(value: object) -> str:
    text = _SECRET.sub(r"\1***", " ".join(str(value).split()))
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


def _grade(name: str, value: float, yellow: float | None, red: float | None, *, higher_is_worse: bool = True,
           subject: str | None = None, what: str | None = None, unit: str = "", note: str = "") -> Check:
    """:func:`~airflow_provider_portfolio.desk.health.graded` with limits that may be off (``None``)."""
    off = math.inf if higher_is_worse else -math.inf
    check = graded(name, value, yellow=off if yellow is None else yellow, red=off if red is None else red,
                   higher_is_worse=higher_is_worse, unit=unit, subject=subject, what=what)
    message = check.message
    if check.level is Level.GREEN:
        cmp = ">=" if higher_is_worse else "<="
        limits = [f"{lvl} {cmp} {lim:g}{unit}" for lvl, lim in (("yellow", yellow), ("red", red)) if lim is not None]
        message = f"{what or name} {float(value):g}{unit} " + (
            f"within limits ({', '.join(limits)})" if limits else "(not graded: both limits are off)")
    return replace(check, threshold={"yellow": yellow, "red": red}, message=message + note)


def _not_graded(name: str, value: Any, why: str, subject: str | None, threshold: Any) -> Check:
    return Check(name, Level.GREEN, value, threshold, f"not graded: {why}", subject)


def _limits(t: HealthThresholds, name: str) -> dict[str, Any]:
    return {"yellow": getattr(t, f"{name}_yellow"), "red": getattr(t, f"{name}_red")}


# -- store --------------------------------------------------------------------------------------------------
def _store_checks(store: PortfolioStore, full: bool) -> tuple[list[Check], bool]:
    found = store.check_store(full=full)
    if not found.reachable:
        return [Check("store_integrity", Level.RED, None, None, f"the store cannot be reached: {_text(found.error)}"),
                Check("store_schema", Level.RED, None, found.latest, "not measured: the store cannot be reached")], \
            False
    if found.problems:
        shown = "; ".join(found.problems[:5]) + (f" (+{len(found.problems) - 5} more)" if len(found.problems) > 5
                                                 else "")
        integrity = Check("store_integrity", Level.RED, len(found.problems), 0,
                          f"{found.check} found problems in {store.url}: {_text(shown)}: restore it from a backup or "
                          "rebuild it from the vendors")
    else:
        integrity = Check("store_integrity", Level.GREEN, 0, 0, f"{found.check} ok ({found.elapsed_s:.2f} s)")
    if found.version == found.latest:
        schema_check = Check("store_schema", Level.GREEN, found.version, found.latest,
                             f"schema version {found.version}, the latest")
    elif (found.version or 0) < found.latest:
        schema_check = Check("store_schema", Level.RED, found.version, found.latest,
                             f"schema version {found.version}, this code needs {found.latest}: migrate the store "
                             "(PortfolioStore.migrate(), or run any job of the desk once)")
    else:
        schema_check = Check("store_schema", Level.RED, found.version, found.latest,
                             f"schema version {found.version} is newer than this code knows ({found.latest}): "
                             "upgrade airflow-provider-portfolio")
    return [integrity, schema_check], True


# -- freshness ----------------------------------------------------------------------------------------------
def _stamp(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d") if ts.hour == ts.minute == 0 else ts.strftime("%Y-%m-%d %H:%M UTC")


def freshness_check(symbol: str, last: pd.Timestamp | None, now: datetime, timeframe: str, exchange: str,
                    t: HealthThresholds) -> Check:
    """``freshness[symbol]``: closed bars after ``last`` (the newest stored bar, ``None``: none) that are past due
    at ``now`` (see the module docstring), graded by ``t``'s ``stale_bars`` limits; no bar at all is ``RED``."""
    import pandas as pd

    from airflow_provider_portfolio.market.bars import parse_timeframe
    from airflow_provider_portfolio.market.calendar import calendar_for_symbol
    from airflow_provider_portfolio.market.timing import expected_last_bar

    limits = _limits(t, "stale_bars")
    if last is None:
        return Check("freshness", Level.RED, None, limits, f"{symbol}: no {timeframe} bars stored: run the ETL for it",
                     symbol)
    last = pd.Timestamp(last)
    head = f"{symbol}: last {timeframe} bar {_stamp(last)}"
    expected = expected_last_bar(symbol, now, timeframe, exchange)
    if expected is None or last >= expected:
        return _grade("freshness", 0, *limits.values(), subject=symbol, what=f"{head}, the latest closed; bars behind")
    calendar = calendar_for_symbol(symbol, exchange)
    now_ts = pd.Timestamp(now)
    start = max(last, now_ts - pd.Timedelta(days=_FRESHNESS_HORIZON_DAYS))
    index = calendar.bar_index(start - pd.Timedelta(days=1), now_ts, timeframe)
    ts_ns = index.as_unit("ns").asi8
    _, ends = calendar.bar_bounds(ts_ns, timeframe)
    now_ns = now_ts.as_unit("ns").value
    missing_ends = ends[(ts_ns > last.as_unit("ns").value) & (ends <= now_ns)]
    step = parse_timeframe(timeframe).delta

    def due(end_ns: int) -> pd.Timestamp:
        end = pd.Timestamp(int(end_ns), tz="UTC")
        if calendar.is_open(end.to_pydatetime()):  # more market right after it
            return end + step * t.freshness_grace_bars
        return max(end, calendar.next_open(end.to_pydatetime()) - pd.Timedelta(minutes=t.freshness_lead_minutes))

    # Due times grow with the bars: walk back from the newest missing bar while it is not yet due.
    waiting = 0
    while waiting < len(missing_ends) and due(missing_ends[-1 - waiting]) > now_ts:
        waiting += 1
    behind = len(missing_ends) - waiting
    more = "+" if start > last else ""
    note = (f"; {waiting} more closed bar(s) not yet due (due {_stamp(due(missing_ends[-waiting]))})"
            if waiting else "")
    return _grade("freshness", behind, *limits.values(), subject=symbol,
                  what=f"{head}, expected {_stamp(expected)}; bars behind{more} (past due)", note=note)


def _freshness_checks(store: PortfolioStore, symbols: Sequence[str], now: datetime, timeframe: str, exchange: str,
                      t: HealthThresholds) -> list[Check]:
    latest = store.latest_bar_ts(list(symbols), timeframe)
    return [freshness_check(s, latest.get(s), now, timeframe, exchange, t) for s in symbols]


# -- vendors ------------------------------------------------------------------------------------------------
def _vendor_checks(probes: Mapping[str, Probe]) -> list[Check]:
    found: list[tuple[str, str, str]] = []  # (name, up/down/skipped, message)
    for name, probe in probes.items():
        try:
            answer = probe()
        except Exception as err:  # a vendor's failure is the check's finding, never the monitoring's
            found.append((name, "down", _text(f"{type(err).__name__}: {err}")))
            continue
        if answer is None:
            found.append((name, "skipped", "skipped (its probe would spend a scarce quota)"))
        elif isinstance(answer, tuple) and len(answer) == 2:
            found.append((name, "up" if answer[0] is True else "down", _text(answer[1])))
        else:
            found.append((name, "down", f"the probe answered {_text(repr(answer))}, not (ok, message) or None"))
    up = [n for n, state, _ in found if state == "up"]
    down = [n for n, state, _ in found if state == "down"]
    checks = []
    for name, state, message in found:
        if state != "down":
            checks.append(Check("vendor", Level.GREEN, state, None, f"{name}: {message}", name))
        elif up:
            checks.append(Check("vendor", Level.YELLOW, state, None,
                                f"{name} is down: {message}; up: {', '.join(up)}", name))
        else:
            others = f"; every probed vendor is down ({', '.join(down)})" if len(down) > 1 else \
                "; no other vendor answered"
            checks.append(Check("vendor", Level.RED, state, None, f"{name} is down: {message}{others}", name))
    return checks


# -- forecasts ----------------------------------------------------------------------------------------------
def _forecast_checks(store: PortfolioStore, symbols: Sequence[str], timeframe: str,
                     t: HealthThresholds) -> list[Check]:
    evaluations = store.read_evaluations(list(symbols), timeframe=timeframe, latest=True)
    evaluations = evaluations[evaluations["model"] != "ensemble"]
    limits = _limits(t, "healthy_models")
    out = []
    for symbol in symbols:
        rows = evaluations[evaluations["symbol"] == symbol]
        labels: dict[str, list[str]] = {}
        for model, label in zip(rows["model"], rows["label"], strict=True):
            labels.setdefault(str(label), []).append(str(model))
        healthy, unhealthy = sorted(labels.get("healthy", [])), sorted(labels.get("unhealthy", []))
        thin = sorted(labels.get("insufficient_data", []))
        if rows.empty:
            out.append(Check("forecast_health", Level.YELLOW, None, limits,
                             f"{symbol}: no {timeframe} model evaluations yet: has the forecasting job run for it?",
                             symbol))
            continue
        if not healthy and not unhealthy:
            out.append(Check("forecast_health", Level.YELLOW, None, limits,
                             f"{symbol}: no model judged yet: insufficient data for {', '.join(thin)}", symbol))
            continue
        judged = len(healthy) + len(unhealthy)
        detail = f" (healthy: {', '.join(healthy) or 'none'}; unhealthy: {', '.join(unhealthy) or 'none'}" + (
            f"; insufficient data: {', '.join(thin)})" if thin else ")")
        out.append(_grade("forecast_health", len(healthy) / judged, *limits.values(), higher_is_worse=False,
                          subject=symbol, what=f"{symbol}: share of {judged} judged models healthy", note=detail))
    return out


# -- signal validation --------------------------------------------------------------------------------------
def _validation_checks(store: PortfolioStore, now: datetime, timeframe: str, t: HealthThresholds) -> list[Check]:
    from airflow_provider_portfolio.desk.validation import VALIDATION_STUDY, recent_validation

    checks: list[Check] = []
    limits = _limits(t, "validation_age")
    latest = store.latest_study(VALIDATION_STUDY, until=now)
    if latest is not None:
        age = (now - latest.ts).total_seconds() / 86_400
        checks.append(_grade("validation_age", round(age, 3), *limits.values(),
                             what=f"age in days of the last signal validation "
                                  f"({latest.ts.isoformat(timespec='minutes')})"))
    elif t.validation_age_yellow is not None and store.signals_exist(
            timeframe, since=now - timedelta(days=t.validation_window_days),
            until=now - timedelta(days=t.validation_age_yellow)):
        checks.append(Check("validation_age", Level.YELLOW, None, limits,
                            f"no signal validation yet, though {timeframe} forecasts or trading decisions older than "
                            f"{t.validation_age_yellow:g} days are stored: is portfolio_signal_validation "
                            "running?"))
    days = t.validation_window_days
    for stats in recent_validation(store, now=now, days=days, timeframe=timeframe):
        subject = f"{stats.kind}:{stats.source}"
        hit_limits = _limits(t, "signal_hit_rate")
        if stats.hit_n < t.min_validations:
            if stats.hit_n or stats.kind == "signal":
                checks.append(_not_graded("validation_hit_rate", stats.hit_rate,
                                          f"{stats.hit_n} direction(s) validated in {days} days, "
                                          f"{t.min_validations} needed", subject, hit_limits))
        else:
            assert stats.hit_rate is not None  # hit_n > 0
            checks.append(_grade("validation_hit_rate", stats.hit_rate, *hit_limits.values(), higher_is_worse=False,
                                 subject=subject, what=f"{subject}: share of {stats.hit_n} validated directions "
                                                       f"right in {days} days"))
        if stats.kind != "forecast":
            continue
        gap_limits = _limits(t, "coverage_gap")
        gap = stats.coverage_gap
        if stats.covered_n < t.min_validations or gap is None:
            checks.append(_not_graded("validation_coverage", gap, f"{stats.covered_n} banded forecast(s) validated in "
                                      f"{days} days, {t.min_validations} needed", subject, gap_limits))
        else:
            checks.append(_grade("validation_coverage", round(gap, 6), *gap_limits.values(), subject=subject,
                                 what=f"{subject}: band coverage {stats.coverage:.1%} of {stats.covered_n} against "
                                      f"nominal {stats.level:.1%}; shortfall"))
    return checks


# -- trading ------------------------------------------------------------------------------------------------
def _rejections(store: PortfolioStore, account: str, since: datetime, now: datetime, t: HealthThresholds) -> Check:
    from airflow_provider_portfolio.store.health import HealthTables

    tally = HealthTables(store.database).risk_verdicts(account, since=since, until=now)
    switch = tally.rejected.get("kill_switch", 0)
    rejected = sum(tally.rejected.values()) - switch
    judged = tally.proposed - tally.unchecked - switch
    by_rule = ", ".join(f"{rule} {n}" for rule, n in tally.rejected.items() if rule != "kill_switch") or "none"
    note = (f"; rejected by rule: {by_rule}" if rejected else "") + (
        f"; kill_switch refused {switch} more (not graded)" if switch else "")
    limits = _limits(t, "rejections")
    if judged < t.min_orders:
        share = rejected / judged if judged else None
        return _not_graded("rejections", share, f"{judged} proposed order(s) judged by risk, {t.min_orders} needed"
                           + note, account, limits)
    return _grade("rejections", rejected / judged, *limits.values(), subject=account,
                  what=f"{rejected} of {judged} proposed orders rejected by risk: share", note=note)


def _ratio_check(name: str, measure: performance.Measure, count: int, needed: int, unit: str, t: HealthThresholds,
                 account: str, what: str) -> Check:
    limits = _limits(t, name)
    if count < needed:
        return _not_graded(name, measure.value, f"{count} {unit}, {needed} needed", account, limits)
    if not measure.finite:
        return _not_graded(name, None, measure.reason, account, limits)
    assert measure.value is not None
    return _grade(name, measure.value, *limits.values(), higher_is_worse=False, subject=account, what=what)


def _trading_checks(store: PortfolioStore, account: str, now: datetime, window: timedelta, periods_per_year: float,
                    t: HealthThresholds) -> list[Check]:
    from airflow_provider_portfolio.store.ledger import TradingLedger

    ledger = TradingLedger(store)
    since = now - window
    days = f"{window.total_seconds() / 86400:g} days"
    checks = [_rejections(store, account, since, now, t)]

    curve = [r for r in ledger.equity_curve(account) if since <= r["ts"] <= now]
    limits = _limits(t, "drawdown")
    dd = performance.max_drawdown(float(r["equity"]) for r in curve)
    if not curve:
        checks.append(_not_graded("drawdown", None, f"no equity snapshots in the last {days}", account, limits))
    elif dd.value is None:
        checks.append(Check("drawdown", Level.RED, None, limits, f"could not be measured: {dd.reason}", account))
    else:
        checks.append(_grade("drawdown", dd.value, *limits.values(), subject=account,
                             what=f"maximum drawdown of {len(curve)} equity snapshots in {days}"))

    fills = [{**f, "filled_at": f["bar_ts"]} for f in ledger.fills(account) if f["bar_ts"] <= now]
    trades = [tr for tr in performance.closed_trades(fills) if tr.closed_at is not None and tr.closed_at >= since]
    n = len(trades)
    checks.append(_ratio_check("win_rate", performance.win_rate(trades), n, t.min_trades, "closed trade(s)", t,
                               account, f"win rate of {n} closed trades"))
    pf = performance.profit_factor(trades)
    if n >= t.min_trades and pf.value == math.inf:  # JSON has no infinity: null, with the reason
        checks.append(Check("profit_factor", Level.GREEN, None, _limits(t, "profit_factor"), pf.reason, account))
    else:
        checks.append(_ratio_check("profit_factor", pf, n, t.min_trades, "closed trade(s)", t, account,
                                   f"profit factor of {n} closed trades"))

    returns = performance.daily_returns(curve)
    r = len(returns)
    checks.append(_ratio_check("sharpe", performance.sharpe(returns, periods_per_year), r, t.min_days,
                               "daily return(s)", t, account, f"annualised Sharpe ratio of {r} daily returns"))
    checks.append(_ratio_check("sortino", performance.sortino(returns, periods_per_year), r, t.min_days,
                               "daily return(s)", t, account, f"annualised Sortino ratio of {r} daily returns"))
    return checks


# -- the job ------------------------------------------------------------------------------------------------
def monitor_desk(store: PortfolioStore, symbols: Sequence[str] | str, *, now: datetime, timeframe: str = "1Day",
                 exchange: str = DEFAULT_EXCHANGE, account: str | None = None,
                 thresholds: HealthThresholds | Mapping[str, Any] | str | None = None,
                 probes: Mapping[str, Probe] = _NO_PROBES, window: timedelta = DEFAULT_WINDOW,
                 periods_per_year: float = performance.TRADING_DAYS_PER_YEAR, dag_id: str | None = None,
                 run_id: str | None = None, write: bool = True, full_integrity_check: bool = False) -> HealthReport:
    """Make the hourly health report (see the module docstring), append it to ``health_reports`` and return it.

    :param store: the portfolio store.
    :param symbols: the desk's universe (a list, or comma-separated tickers); empty: no per-symbol checks.
    :param now: the report's instant (aware); freshness and the trading window are measured to it.
    :param timeframe: the bars and model evaluations to check.
    :param exchange: the calendar of equities (crypto pairs use the 24/7 one).
    :param account: the ledger account whose book is graded (``simulated:<name>``, ``alpaca:<conn_id>``);
        ``None``: no trading checks.
    :param thresholds: the limits: :class:`HealthThresholds`, or the overrides ``portfolio.health_thresholds``
        holds (a mapping or its JSON text); ``None``: the documented defaults.
    :param probes: vendor name -> probe (``(ok, message)``, ``None`` for skipped; raising is down).
    :param window: how far back the trading figures look.
    :param periods_per_year: daily returns per year for Sharpe and Sortino (252; 365 for a 24/7 book).
    :param dag_id: the DAG of the run, stored with the report.
    :param run_id: the run, stored with the report (a re-run of it at the same ``now`` replaces its row).
    :param write: append the report to the store; ``False``: a dry run.
    :param full_integrity_check: SQLite ``integrity_check`` instead of ``quick_check``.
    :return: the report. When it could not be written (the store unreachable, a write that failed), it ends with
        a ``RED`` ``report_write`` check saying why, so the caller still notifies.
    :raises InvalidInputError: for bad input, before anything is measured or written.
    """
    from airflow_provider_portfolio.market.bars import parse_timeframe
    from airflow_provider_portfolio.market.calendar import MarketCalendar
    from airflow_provider_portfolio.market.params import validate_symbols

    instant = ensure_utc(now, "now")
    universe = validate_symbols(symbols) if symbols else []
    timeframe = parse_timeframe(timeframe).name
    exchange = MarketCalendar(exchange).name
    limits = thresholds if isinstance(thresholds, HealthThresholds) else HealthThresholds.from_mapping(thresholds)
    if account is not None and (not isinstance(account, str) or not account.strip()):
        raise InvalidInputError(f"account must be a ledger account name such as 'simulated:desk', got {account!r}")
    if not isinstance(window, timedelta) or window <= timedelta(0):
        raise InvalidInputError(f"window must be a positive timedelta, got {window!r}")
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, int | float) \
            or not math.isfinite(periods_per_year) or periods_per_year <= 0:
        raise InvalidInputError(f"periods_per_year must be a number > 0 (252 trading days, 365 for a 24/7 book), "
                                f"got {periods_per_year!r}")
    if not isinstance(probes, Mapping) or not all(isinstance(k, str) and callable(p) for k, p in probes.items()):
        raise InvalidInputError(f"probes must map vendor names to callables, got {probes!r}")

    checks, reachable = _store_checks(store, full_integrity_check)
    parts: list[tuple[str, Callable[[], list[Check]]]] = []
    if universe:
        parts.append(("freshness", lambda: _freshness_checks(store, universe, instant, timeframe, exchange, limits)))
        parts.append(("forecast_health", lambda: _forecast_checks(store, universe, timeframe, limits)))
    if account is not None:
        parts.append(("trading", lambda: _trading_checks(store, account, instant, window, periods_per_year, limits)))
    parts.append(("signal_validation", lambda: _validation_checks(store, instant, timeframe, limits)))
    for name, measure in parts:
        if not reachable:
            if name != "signal_validation":  # optional, as a desk with nothing to validate has none: not listed
                checks.append(Check(name, Level.RED, None, None, "not measured: the store cannot be reached",
                                    account if name == "trading" else None))
            continue
        try:
            checks += measure()
        except Exception as err:  # a part that fails is a RED finding, never a crashed report
            log.warning("health check %s could not be made", name, exc_info=True)
            why = _text(f"{type(err).__name__}: {err}")
            checks.append(Check(name, Level.RED, None, None, f"could not be measured: {why}",
                                account if name == "trading" else None))
    checks += _vendor_checks(probes)
    report = HealthReport(MONITORING, instant, tuple(checks))
    if write:
        unwritten: str | None = None
        if not reachable:
            unwritten = "the store cannot be reached"
        else:
            try:
                store.append_health_report(report.to_dict(), dag_id=dag_id, run_id=run_id)
            except StoreError as err:
                unwritten = _text(err)
        if unwritten is not None:
            report = HealthReport(MONITORING, instant, (*checks, Check(
                "report_write", Level.RED, None, None, f"the report was not written to health_reports: {unwritten}")))
    log.info("%s", report.summary())
    return report


def latest_report(store: PortfolioStore, *, now: datetime, max_age: timedelta | None = timedelta(hours=2),
                  kind: str = MONITORING) -> HealthReport | None:
    """The newest stored report of ``kind`` made at or before ``now`` and not older than ``max_age``: what a gate
    trusts (last week's GREEN is no answer), or ``None``.

    :raises StoreError: when the store cannot be read.
    """
    instant = ensure_utc(now, "now")
    since = None if max_age is None else instant - max_age
    found = store.latest_health_report(kind, since=since, until=instant)
    return None if found is None else HealthReport.from_dict(found.report)


def kill_switch_after(report: HealthReport, current: object, *, reduce_on_red: bool) -> str:
    """The kill switch's state after ``report``: ``reduce_only`` when the report is ``RED``, ``reduce_on_red`` is
    set and the switch was ``active``; else the switch as it is (a report never loosens it).

    :param current: the switch's raw value now (the Variable ``portfolio.kill_switch``), read as the risk rules
        read it (:func:`~airflow_provider_portfolio.trading.risk.normalise_kill_switch`: unreadable is ``halted``).
    """
    from airflow_provider_portfolio.trading.risk import normalise_kill_switch

    state = normalise_kill_switch(current)
    return "reduce_only" if reduce_on_red and report.level is Level.RED and state == "active" else state
