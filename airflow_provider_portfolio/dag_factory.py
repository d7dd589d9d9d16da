"""DAGs from YAML: each desk of a YAML file becomes its ETL, forecasting and trading DAGs.

A DAG file in the dags folder registers them::

    from pathlib import Path

    from airflow_provider_portfolio.dag_factory import register_dags

    register_dags(Path(__file__).with_name("desks.yaml"), globals())

A desk gives up to three DAGs with the task structure of the example DAGs:

- ``<id>_etl`` (``portfolio_daily_etl``): ``load_bars``, a :class:`PortfolioETLOperator` in ``api_pool`` whose
  success updates the desk's Asset ``<id>_bars``;
- ``<id>_forecast`` (``portfolio_forecast``): one task per model (the SSA family and GARCH in ``[portfolio]
  gpu_pool``), then ``ensemble`` over the price-level models (``trigger_rule="all_done"``), which updates the
  Asset ``<id>_forecasts``; scheduled after each run of the desk's ETL by default;
- ``<id>_trading``: ``desk_gate`` (:class:`DeskGateOperator`) then ``auto_trader`` (:class:`AutoTraderOperator`
  in ``trading_pool``), on a ``MarketSessionTimetable`` (``portfolio_auto_trader_core``) or on a cron behind a
  ``MarketHoursSensor`` that skips runs outside the session (``portfolio_auto_trader``).

Every DAG has ``catchup=False``, ``max_active_runs=1``, the examples' retries and execution timeouts,
``PortfolioNotifier()`` on failure, deadline alerts behind ``[portfolio] deadline_alerts``, tags ``portfolio``, the
section, the desk id and the YAML file's name, and a ``doc_md`` naming the file.

The file is checked whole before any DAG is built. Its problems raise one :class:`DagConfigError` naming, for each,
the file, the line and column, and the field (``desks[1].trading.weights.technical``): a wrong type, an unknown key
(with a "did you mean"), a duplicate key, a missing universe, a symbol that is no ticker, weights that are all zero,
an unknown model, a cron that is not one, two desks with one id, YAML that does not parse. In a dags folder they show
as the DAG file's import error.

The schema (README, "DAGs from YAML"); each field is the operator argument of the same name unless said otherwise::

    desks:                        # a list of desks (or a mapping: id -> desk)
      - id: tech                  # required: the DAG ids' prefix (letters, digits, _ . -; at most 64)
        universe: [AAPL, MSFT]    # required: tickers and crypto pairs -> symbols
        exchange: XNYS            # calendar; default [portfolio] default_exchange
        timezone: America/New_York  # of the crons and start dates (default)
        store_conn_id: ...        # default [portfolio] store_conn_id, else the embedded SQLite store
        connections:
          market_data: [...]      # -> sources, in failover order; default the provider's default data
                                  #    connections that exist, else the synthetic market
          broker: ...             # -> broker_conn_id; default alpaca_default when it exists, else the simulated broker
        etl:                      # PortfolioETLOperator
          schedule: "15 5 * * 1-5"  # cron or preset (default)
          timeframe, history_sessions, mode, max_failed_fraction, max_abs_return, deadline_minutes
        forecast:                 # forecasting operators
          schedule: after_etl     # after the desk's ETL (default with an etl section), a cron, or null (by hand)
          models: [ssa, samossa, mssa, garch, sarimax]  # of ssa samossa mssa garch garch_t sarimax (default)
          ensemble: true          # an ensemble task over the price-level models
          timeframe, history, horizon, level, origins, min_origins, max_failed_fraction, device, deadline_minutes
        trading:                  # AutoTraderOperator (paper or simulated: live trading needs a Python DAG)
          session: {every: 30}    # MarketSessionTimetable(exchange, every= | at=, open_offset=, close_offset=)
          schedule: ...           # or a cron, gated by a MarketHoursSensor (when_closed="skip")
          timeframe: 30Min
          weights: {technical: .., forecast: .., sentiment: ..}
          limits: {...}           # RiskLimits fields -> risk_limits
          max_trades_per_day, min_score, sizing, fraction, max_stale_bars, bar_aware, forecast_model,
          forecast_timeframe (default the desk's forecast timeframe), simulated_account (default the desk id),
          initial_cash, slippage_bps, commission_bps, lock_timeout_s,
          require, max_health_age_minutes   # DeskGateOperator (require default [])
          deadline_minutes: 5

A section with nothing under it (``etl:``) builds with every default. YAML anchors and merge keys (``<<: *base``)
share settings between desks.

Importing this module costs ``airflow.sdk``, PyYAML and the provider's operator modules: nothing heavy.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pendulum
import yaml
from airflow.sdk import DAG, Asset
from airflow.timetables.trigger import CronTriggerTimetable
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from airflow_provider_portfolio.exceptions import DagConfigError, InvalidInputError
from airflow_provider_portfolio.market.params import validate_symbols
from airflow_provider_portfolio.notifications import (
    PortfolioNotifier,
    configured_deadline,
    deadline_alert,
)
from airflow_provider_portfolio.operators.etl import MAX_HISTORY_SESSIONS, PortfolioETLOperator
from airflow_provider_portfolio.operators.forecasting import (
    EnsembleForecastOperator,
    GarchForecastOperator,
    SarimaxForecastOperator,
    SSAForecastOperator,
)
from airflow_provider_portfolio.operators.monitoring import DeskGateOperator
from airflow_provider_portfolio.operators.trading import AutoTraderOperator
from airflow_provider_portfolio.pools import API_POOL, TRADING_POOL
from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor
from airflow_provider_portfolio.timetables.market_session import MarketSessionTimetable
from airflow_provider_portfolio.trading.risk import RiskLimits

__all__ = ["DagConfigError", "DeskSpec", "EtlSpec", "ForecastSpec", "TradingSpec", "build_dags", "load_desks",
           "register_dags"]

#: The models ``forecast.models`` may name: those with an operator (all in the forecast model registry).
FORECAST_MODELS = ("ssa", "samossa", "mssa", "garch", "garch_t", "sarimax")
#: The price-level models, which the ensemble combines (GARCH forecasts volatility).
LEVEL_MODELS = ("ssa", "samossa", "mssa", "sarimax")
#: ``forecast.schedule``: after each run of the desk's ETL (its Asset ``<id>_bars``).
AFTER_ETL = "after_etl"
#: The time zone of a desk's crons and start dates when it names none.
DEFAULT_TIMEZONE = "America/New_York"
#: The three DAGs of a desk, by section.
SECTIONS = ("etl", "forecast", "trading")

# Mirrors of domain constants whose modules import numpy or pandas, or cost a parse more than these lines (tests/
# test_dag_factory.py checks they agree): trading.decision.SIZINGS, forecast.backend.DEVICES, market.etl.MODES,
# desk.gate.REQUIREMENTS, market.bars.parse_timeframe.
_SIZINGS = ("fixed_fraction", "volatility")
_DEVICES = ("auto", "cuda", "cpu")
_ETL_MODES = ("incremental", "full")
_REQUIREMENTS = ("environment", "health", "bars")
_TIMEFRAME_RE = re.compile(r"^(\d+)(Min|Hour|Day)$")
_TIMEFRAME_LIMITS = {"Min": 59, "Hour": 23, "Day": 1}

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_WEIGHTS = ("technical", "forecast", "sentiment")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"


# -- the specs (named tuples: defined at every DAG parse, where a dataclass costs four times more) ---------------------

class EtlSpec(NamedTuple):
    """The desk's ``<id>_etl`` DAG: its cron and :class:`PortfolioETLOperator`'s arguments."""

    schedule: str = "15 5 * * 1-5"
    timeframe: str = "1Day"
    history_sessions: int = 252
    mode: str = "incremental"
    max_failed_fraction: float = 0.0
    max_abs_return: float | None = 0.5
    deadline_minutes: float | None = None


class ForecastSpec(NamedTuple):
    """The desk's ``<id>_forecast`` DAG: its schedule (:data:`AFTER_ETL`, a cron or ``None``), its models and the
    forecasting operators' arguments (``origins`` ``None``: each operator's default)."""

    schedule: str | None = AFTER_ETL
    models: tuple[str, ...] = ("ssa", "samossa", "mssa", "garch", "sarimax")
    ensemble: bool = True
    timeframe: str = "1Day"
    history: int = 1000
    horizon: int = 5
    level: float = 0.9
    origins: int | None = None
    min_origins: int = 3
    max_failed_fraction: float = 0.5
    device: str | None = None
    deadline_minutes: float | None = None


class TradingSpec(NamedTuple):
    """The desk's ``<id>_trading`` DAG: a ``MarketSessionTimetable`` (``session``: its keyword arguments) or a cron
    behind the market-hours sensor (``schedule``), and the arguments of :class:`DeskGateOperator` (``require``,
    ``max_health_age_minutes``) and :class:`AutoTraderOperator` (the rest; ``limits`` is ``risk_limits``)."""

    schedule: str | None = None
    session: Mapping[str, Any] | None = None
    timeframe: str = "30Min"
    weights: Mapping[str, float] | None = None
    limits: Mapping[str, Any] | None = None
    max_trades_per_day: int | None = None
    min_score: float = 0.1
    sizing: str = "fixed_fraction"
    fraction: float = 0.05
    max_stale_bars: int = 2
    bar_aware: bool = True
    forecast_model: str | None = "ensemble"
    forecast_timeframe: str | None = None
    simulated_account: str | None = None
    initial_cash: float = 100_000.0
    slippage_bps: float | None = None
    commission_bps: float | None = None
    lock_timeout_s: float = 120.0
    require: tuple[str, ...] = ()
    max_health_age_minutes: float = 120
    deadline_minutes: float | None = 5


class DeskSpec(NamedTuple):
    """One desk of a YAML file, checked, with its defaults resolved.

    :param id: the DAG ids' prefix.
    :param universe: the symbols, upper-cased.
    :param exchange: the calendar (``None``: ``[portfolio] default_exchange``).
    :param timezone: the time zone of the crons and start dates.
    :param store_conn_id: the store connection (``None``: the provider's default).
    :param sources: market-data sources in failover order (``None``: the provider's default).
    :param broker_conn_id: the broker connection (``None``: the provider's default).
    :param etl: the ETL DAG, or ``None`` for none.
    :param forecast: the forecasting DAG, or ``None``.
    :param trading: the trading DAG, or ``None``.
    :param file: the YAML file.
    :param line: the desk's line in it.
    """

    id: str
    universe: tuple[str, ...]
    exchange: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    store_conn_id: str | None = None
    sources: tuple[str, ...] | None = None
    broker_conn_id: str | None = None
    etl: EtlSpec | None = None
    forecast: ForecastSpec | None = None
    trading: TradingSpec | None = None
    file: str = ""
    line: int = 0

    @property
    def dag_ids(self) -> list[str]:
        """The ids of the desk's DAGs, ETL first."""
        return [f"{self.id}_{name}" for name in SECTIONS if getattr(self, name) is not None]


# -- reading YAML nodes --------------------------------------------------------------------------------------------

class _Invalid(Exception):
    """A field's value is wrong: ``node`` (default the field's) and ``suffix`` (an item ``[2]``) locate it."""

    def __init__(self, message: str, node: Node | None = None, suffix: str = ""):
        super().__init__(message)
        self.node = node
        self.suffix = suffix


class _Reported(Exception):
    """A field's problems are recorded already."""


Check = Callable[["_Reader", Node, str], Any]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "nothing" if _is_null(node) else repr(node.value)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _suggest(word: str, choices: Any) -> str:
    import difflib  # only for a wrong file

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    """Walks the composed document, checking each field against its :data:`Check`; collects every problem."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[tuple[str, int, int, str]] = []
        self.nodes: dict[str, Node] = {}  # field path -> its value node, for checks across fields
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.problems.append((path, mark.line + 1, mark.column + 1, message))

    def scalar(self, node: Node, what: str) -> Any:
        """The Python value of a scalar node (YAML's own types)."""
        if not isinstance(node, ScalarNode):
            raise _Invalid(f"must be {what}, got {_kind(node)}")
        try:
            return self._constructor.construct_object(node)
        except yaml.YAMLError:  # a tag the safe loader does not know (!!python/...)
            raise _Invalid(f"must be {what}, got {node.tag} {node.value!r}") from None

    def pairs(self, node: MappingNode, path: str, _seen: frozenset[int] = frozenset()) -> dict[str, tuple[Node, Node]]:
        """The mapping's keys -> (key node, value node), merge keys (``<<``) applied; duplicate keys are problems."""
        own: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                for source in value.value if isinstance(value, SequenceNode) else [value]:
                    if not isinstance(source, MappingNode) or id(source) in _seen:
                        self.problem(source, path, "a merge key (<<) takes a mapping or a list of mappings")
                        continue
                    for name, pair in self.pairs(source, path, _seen | {id(node)}).items():
                        merged.setdefault(name, pair)
                continue
            if not isinstance(key, ScalarNode) or _is_null(key):
                self.problem(key, path, f"keys must be names, got {_kind(key)}")
                continue
            if key.value in own:
                first = own[key.value][0].start_mark.line + 1
                self.problem(key, _join(path, key.value), f"duplicate key (first on line {first})")
                continue
            own[key.value] = (key, value)
        return {**merged, **own}

    def mapping(self, node: Node, path: str, table: Mapping[str, Check], what: str) -> dict[str, Any]:
        """The checked values of the mapping's keys (keys with a problem are left out).

        :raises _Reported: when ``node`` is not a mapping (recorded).
        """
        if not isinstance(node, MappingNode):
            self.problem(node, path, f"must be a mapping ({what}), got {_kind(node)}")
            raise _Reported
        values: dict[str, Any] = {}
        for name, (key, value) in self.pairs(node, path).items():
            where = _join(path, name)
            check = table.get(name)
            if check is None:
                self.problem(key, where, f"unknown key {name!r}{_suggest(name, table)}; known keys: {', '.join(table)}")
                continue
            self.nodes[where] = value
            try:
                values[name] = check(self, value, where)
            except _Invalid as err:
                self.problem(err.node or value, where + err.suffix, str(err))
            except _Reported:
                pass
        return values

    def items(self, node: Node, path: str, check: Check, what: str) -> list[Any]:
        """The checked items of a list (every bad item is a problem).

        :raises _Reported: when any item, or the list itself, is wrong (recorded).
        """
        if not isinstance(node, SequenceNode):
            self.problem(node, path, f"must be a list ({what}), got {_kind(node)}")
            raise _Reported
        before = len(self.problems)
        out = []
        for i, item in enumerate(node.value):
            try:
                out.append(check(self, item, f"{path}[{i}]"))
            except _Invalid as err:
                self.problem(err.node or item, f"{path}[{i}]{err.suffix}", str(err))
            except _Reported:
                pass
        if len(self.problems) > before:
            raise _Reported
        return out


# -- checks of one field: (reader, node, path) -> value, or _Invalid ----------------------------------------------

def _text(r: _Reader, node: Node, path: str) -> str:
    """A non-empty text; a plain scalar is read as written (``ON`` stays the ticker, not YAML 1.1's true)."""
    if not isinstance(node, ScalarNode) or _is_null(node) or not str(node.value).strip():
        raise _Invalid(f"must be a text, got {_kind(node)}")
    return str(node.value).strip()


def _optional(check: Check) -> Check:
    def optional(r: _Reader, node: Node, path: str) -> Any:
        return None if _is_null(node) else check(r, node, path)
    return optional


def _integer(low: int, high: int | None = None) -> Check:
    def integer(r: _Reader, node: Node, path: str) -> int:
        value = r.scalar(node, "an integer")
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            raise _Invalid(f"must be an integer {span}, got {_kind(node)}")
        return value
    return integer


def _number(low: float = -math.inf, high: float = math.inf, *, above: bool = False) -> Check:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``above``)."""
    def number(r: _Reader, node: Node, path: str) -> float:
        value = r.scalar(node, "a number")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or value < low or (above and value == low) or value > high:
            bounds = [f"> {low:g}" if above else f">= {low:g}"] if math.isfinite(low) else []
            bounds += [f"<= {high:g}"] if math.isfinite(high) else []
            raise _Invalid(f"must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}, got {_kind(node)}")
        return value
    return number


def _boolean(r: _Reader, node: Node, path: str) -> bool:
    value = r.scalar(node, "true or false")
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {_kind(node)}")
    return value


def _choice(choices: tuple[str, ...], what: str) -> Check:
    def choice(r: _Reader, node: Node, path: str) -> str:
        value = _text(r, node, path)
        if value not in choices:
            raise _Invalid(f"unknown {what} {value!r}{_suggest(value, choices)}; choose from {', '.join(choices)}")
        return value
    return choice


def _unique(check: Check, what: str, *, empty: bool = False) -> Check:
    """A list of ``check``'s values, each once (and at least one unless ``empty``), as a tuple."""
    def unique(r: _Reader, node: Node, path: str) -> tuple[Any, ...]:
        values = r.items(node, path, check, what)
        if not values and not empty:
            raise _Invalid(f"must list at least one ({what})")
        seen: dict[Any, int] = {}
        for i, value in enumerate(values):
            if value in seen:
                first = node.value[seen[value]].start_mark.line + 1
                r.problem(node.value[i], f"{path}[{i}]", f"{value!r} is listed twice (first on line {first})")
            seen.setdefault(value, i)
        if len(seen) < len(values):
            raise _Reported
        return tuple(values)
    return unique


def _symbol(r: _Reader, node: Node, path: str) -> str:
    try:
        return validate_symbols([_text(r, node, path)])[0]
    except InvalidInputError as err:
        raise _Invalid(str(err)) from None


def _conn_id(r: _Reader, node: Node, path: str) -> str:
    value = _text(r, node, path)
    if any(c.isspace() for c in value):
        raise _Invalid(f"a connection id has no spaces, got {value!r}")
    return value


def _conn_ids(r: _Reader, node: Node, path: str) -> tuple[str, ...]:
    """One connection id or a list of them, in failover order."""
    if isinstance(node, ScalarNode):
        return (_conn_id(r, node, path),)
    return _unique(_conn_id, "connection ids in failover order, e.g. [alpaca_default, synthetic]")(r, node, path)


def _timeframe(r: _Reader, node: Node, path: str) -> str:
    """A bar timeframe as :func:`airflow_provider_portfolio.market.bars.parse_timeframe` accepts it, spelled as its
    ``name`` (``05Min`` -> ``5Min``)."""
    value = _text(r, node, path)
    match = _TIMEFRAME_RE.match(value)
    if not match or not 1 <= int(match.group(1)) <= _TIMEFRAME_LIMITS[match.group(2)]:
        raise _Invalid(f"unknown timeframe {value!r}: use NMin (1-59), NHour (1-23) or 1Day, e.g. '30Min', '1Day'")
    return f"{int(match.group(1))}{match.group(2)}"


def _cron(r: _Reader, node: Node, path: str) -> str:
    value = _text(r, node, path)
    hint = "give minute hour day month weekday, e.g. '15 5 * * 1-5', or a preset like '@daily'"
    if not value.startswith("@") and len(value.split()) != 5:
        raise _Invalid(f"not a cron expression: {value!r} ({hint})")
    try:
        CronTriggerTimetable(value, timezone="UTC").validate()
    except Exception as err:  # Airflow's AirflowTimetableInvalid moved between versions
        raise _Invalid(f"not a cron expression: {value!r} ({err}; {hint})") from None
    return value


def _timezone(r: _Reader, node: Node, path: str) -> str:
    value = _text(r, node, path)
    try:
        pendulum.timezone(value)
    except Exception:  # pendulum's InvalidTimezone, or a zone the tz database lacks
        raise _Invalid(f"unknown time zone {value!r} (e.g. 'America/New_York', 'UTC')") from None
    return value


def _name(r: _Reader, node: Node, path: str) -> str:
    """A desk id (the DAG ids' prefix) or a simulated book's name."""
    value = _text(r, node, path)
    if not _NAME_RE.match(value):
        raise _Invalid(f"not a name: {value!r} (at most 64 letters, digits, '_', '.' or '-')")
    return value


def _weights(r: _Reader, node: Node, path: str) -> dict[str, float]:
    before = len(r.problems)
    values = r.mapping(node, path, dict.fromkeys(_WEIGHTS, _number(0.0)), "signal name -> weight")
    if len(r.problems) > before:
        raise _Reported
    if not any(values.values()):
        shown = ", ".join(f"{k} {v:g}" for k, v in values.items()) or "none given"
        raise _Invalid(f"the weights must not all be zero ({shown}): give technical, forecast or sentiment a "
                       "weight > 0")
    return {k: float(v) for k, v in values.items()}


#: ``trading.limits``: RiskLimits' fields, by their declared type.
_LIMIT_TYPES: dict[str, Check] = {"float": _number(), "int": _integer(0), "bool": _boolean}


def _limits(r: _Reader, node: Node, path: str) -> dict[str, Any]:
    table = {f.name: _LIMIT_TYPES.get(str(f.type), _text) for f in fields(RiskLimits)}
    values = r.mapping(node, path, table, "RiskLimits fields")
    bad = False
    for name, value in values.items():
        try:
            RiskLimits(**{name: value})  # its own range checks, one field at a time, so each is located
        except InvalidInputError as err:
            r.problem(r.nodes[_join(path, name)], _join(path, name), str(err).removeprefix("invalid risk limits: "))
            bad = True
    if bad:
        raise _Reported
    return values


def _session(r: _Reader, node: Node, path: str) -> dict[str, Any]:
    table: dict[str, Check] = {"every": _integer(1, 1440), "at": _choice(("open", "close"), "session edge"),
                               "open_offset": _integer(0), "close_offset": _integer(0)}
    before = len(r.problems)
    values = r.mapping(node, path, table, "MarketSessionTimetable's every or at, open_offset, close_offset")
    if sum(_join(path, k) in r.nodes for k in ("every", "at")) != 1:
        raise _Invalid("give exactly one of every (minutes between runs in a session) and at (open or close)")
    if len(r.problems) > before:
        raise _Reported
    return values


def _section(cls: type, table: Mapping[str, Check], what: str) -> Check:
    """A section: a mapping of ``table``'s keys (nothing under it: every default) as a ``cls``."""
    def section(r: _Reader, node: Node, path: str) -> Any:
        values = {} if _is_null(node) else r.mapping(node, path, table, what)
        return cls(**values)
    return section


_ETL: dict[str, Check] = {
    "schedule": _cron, "timeframe": _timeframe, "history_sessions": _integer(1, MAX_HISTORY_SESSIONS),
    "mode": _choice(_ETL_MODES, "mode"), "max_failed_fraction": _number(0.0, 1.0),
    "max_abs_return": _optional(_number(0.0, above=True)), "deadline_minutes": _optional(_number(0.0, above=True)),
}


def _forecast_schedule(r: _Reader, node: Node, path: str) -> str | None:
    if _is_null(node):
        return None
    return AFTER_ETL if _text(r, node, path) == AFTER_ETL else _cron(r, node, path)


_FORECAST: dict[str, Check] = {
    "schedule": _forecast_schedule,
    "models": _unique(_choice(FORECAST_MODELS, "model"), "forecast models"),
    "ensemble": _boolean, "timeframe": _timeframe, "history": _integer(1), "horizon": _integer(1),
    "level": _number(0.0, 1.0, above=True), "origins": _integer(1), "min_origins": _integer(1),
    "max_failed_fraction": _number(0.0, 1.0), "device": _optional(_choice(_DEVICES, "device")),
    "deadline_minutes": _optional(_number(0.0, above=True)),
}

_TRADING: dict[str, Check] = {
    "schedule": _cron, "session": _session, "timeframe": _timeframe, "weights": _weights, "limits": _limits,
    "max_trades_per_day": _optional(_integer(0)), "min_score": _number(0.0, 1.0),
    "sizing": _choice(_SIZINGS, "sizing"), "fraction": _number(0.0, 1.0, above=True),
    "max_stale_bars": _integer(0), "bar_aware": _boolean,
    "forecast_model": _optional(_choice(("ensemble", *LEVEL_MODELS), "forecast model")),
    "forecast_timeframe": _timeframe, "simulated_account": _name, "initial_cash": _number(0.0, above=True),
    "slippage_bps": _optional(_number(0.0)), "commission_bps": _optional(_number(0.0)), "lock_timeout_s": _number(0.0),
    "require": _unique(_choice(_REQUIREMENTS, "requirement"), "of " + ", ".join(_REQUIREMENTS), empty=True),
    "max_health_age_minutes": _number(0.0, 7 * 24 * 60, above=True),
    "deadline_minutes": _optional(_number(0.0, above=True)),
}


def _connections(r: _Reader, node: Node, path: str) -> dict[str, Any]:
    return r.mapping(node, path, {"market_data": _conn_ids, "broker": _conn_id}, "market_data, broker")


_DESK: dict[str, Check] = {
    "id": _name,
    "universe": _unique(_symbol, "tickers and crypto pairs, e.g. [AAPL, MSFT, BTC/USD]"),
    "exchange": _optional(_text), "timezone": _timezone, "store_conn_id": _optional(_conn_id),
    "connections": _connections,
    "etl": _section(EtlSpec, _ETL, "PortfolioETLOperator's arguments and schedule"),
    "forecast": _section(ForecastSpec, _FORECAST, "the forecasting operators' arguments, models and schedule"),
    "trading": _section(TradingSpec, _TRADING, "AutoTraderOperator's arguments and schedule or session"),
}


# -- desks and the file --------------------------------------------------------------------------------------------

def _desk(r: _Reader, node: Node, path: str, key: Node | None) -> DeskSpec | None:
    """One desk, checked across its fields and with its defaults resolved (``key``: its id in a mapping of desks)."""
    table = _DESK if key is None else {k: v for k, v in _DESK.items() if k != "id"}
    try:
        values = r.mapping(node, path, table, "a desk: id, universe, and etl, forecast or trading")
        if key is not None:
            values["id"] = _name(r, key, path)
    except _Invalid as err:
        r.problem(key or node, path, str(err))
        return None
    except _Reported:
        return None
    given = {name for name in _DESK if _join(path, name) in r.nodes}
    for name, what in (("id", "the desk's id, the prefix of its DAG ids"),
                       ("universe", "the desk's symbols, e.g. [AAPL, MSFT, BTC/USD]")):
        if name not in given and not (name == "id" and key is not None):
            r.problem(node, _join(path, name), f"required: {what}")
    if not given & set(SECTIONS):
        r.problem(node, path, "a desk needs at least one of etl, forecast, trading")
    if "id" not in values or "universe" not in values:
        return None

    forecast: ForecastSpec | None = values.get("forecast")
    if forecast is not None:
        where = _join(path, "forecast")
        if forecast.schedule == AFTER_ETL and "etl" not in given:
            if _join(where, "schedule") in r.nodes:
                r.problem(r.nodes[_join(where, "schedule")], _join(where, "schedule"),
                          "after_etl needs an etl section in this desk: give a cron, or null to run it by hand")
            forecast = forecast._replace(schedule=None)  # no ETL to follow: by hand
        if forecast.ensemble and not set(forecast.models) & set(LEVEL_MODELS):
            at = _join(where, "models") if _join(where, "models") in r.nodes else _join(where, "ensemble")
            r.problem(r.nodes[at], at, f"the ensemble combines price-level models: list one of "
                                       f"{', '.join(LEVEL_MODELS)}, or set ensemble: false")

    trading: TradingSpec | None = values.get("trading")
    if trading is not None:
        where = _join(path, "trading")
        if trading.schedule is not None and trading.session is not None:
            r.problem(r.nodes[_join(where, "session")], _join(where, "session"),
                      "give schedule (a cron, gated by the market-hours sensor) or session, not both")
        elif trading.schedule is None and _join(where, "schedule") not in r.nodes:
            session = trading.session or {"every": 30}
            at = _join(where, "session")
            try:
                _session_timetable(values.get("exchange"), session)
            except InvalidInputError as err:
                r.problem(r.nodes.get(at) or r.nodes[where], at, str(err))
            trading = trading._replace(session=session)
        trading = trading._replace(
            forecast_timeframe=trading.forecast_timeframe or (forecast.timeframe if forecast else "1Day"),
            simulated_account=trading.simulated_account or values["id"],
        )

    connections = values.get("connections", {})
    return DeskSpec(
        id=values["id"], universe=values["universe"], exchange=values.get("exchange"),
        timezone=values.get("timezone", DEFAULT_TIMEZONE), store_conn_id=values.get("store_conn_id"),
        sources=connections.get("market_data"), broker_conn_id=connections.get("broker"),
        etl=values.get("etl"), forecast=forecast, trading=trading, file=r.file, line=node.start_mark.line + 1,
    )


def _desks(r: _Reader, node: Node, path: str) -> list[DeskSpec]:
    """``desks``: a list of desks, or a mapping of desk id -> desk; ids unique."""
    if isinstance(node, SequenceNode):
        entries = [(f"{path}[{i}]", item, None) for i, item in enumerate(node.value)]
    elif isinstance(node, MappingNode):
        entries = [(_join(path, name), value, key) for name, (key, value) in r.pairs(node, path).items()]
    else:
        raise _Invalid(f"must be a list of desks (or a mapping of desk id -> desk), got {_kind(node)}")
    if not entries:
        raise _Invalid("must hold at least one desk")
    desks: list[DeskSpec] = []
    first: dict[str, tuple[str, int]] = {}
    for where, item, key in entries:
        desk = _desk(r, item, where, key)
        id_node = key or r.nodes.get(_join(where, "id"))
        desk_id = str(id_node.value).strip() if isinstance(id_node, ScalarNode) else None
        if key is None and desk_id is not None and desk_id in first:  # a mapping of desks has unique keys
            other, line = first[desk_id]
            r.problem(id_node, _join(where, "id"), f"desk id {desk_id!r} is also the id of {other} (line {line}): "
                                                   f"the DAG ids {desk_id}_etl, ... would clash")
            continue
        if desk_id is not None and id_node is not None:
            first.setdefault(desk_id, (where, id_node.start_mark.line + 1))
        if desk is not None:
            desks.append(desk)
    return desks


def _session_timetable(exchange: str | None, session: Mapping[str, Any]) -> MarketSessionTimetable:
    """The trading DAG's timetable for ``session`` on ``exchange`` (``None``: ``[portfolio] default_exchange``)."""
    from airflow_provider_portfolio.config import get_option

    return MarketSessionTimetable(exchange or get_option("default_exchange"), **session)


def _syntax_error(file: str, text: str, err: yaml.YAMLError) -> DagConfigError:
    """A YAML error as a :class:`DagConfigError` at yaml's own mark."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    else:  # a reader error (a character YAML does not allow) has a position
        position = getattr(err, "position", 0) or 0
        line = text.count("\n", 0, position) + 1
        column = position - text.rfind("\n", 0, position)
    problem = getattr(err, "problem", None) or str(err)
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        problem += f" ({context} on line {context_mark.line + 1})"
    return DagConfigError(file, [("", line, column, f"YAML syntax error: {problem}")])


def load_desks(path: str | os.PathLike[str]) -> tuple[DeskSpec, ...]:
    """Read and check the desks of a YAML file (see the module docstring for its schema).

    :param path: the YAML file.
    :raises DagConfigError: naming the file, the line, the column and the field of every problem found.
    :raises OSError: when the file cannot be read.
    """
    file = os.fspath(path)
    text = Path(file).read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as err:
        raise _syntax_error(file, text, err) from None
    r = _Reader(file)
    desks: list[DeskSpec] = []
    if root is None:
        r.problems.append(("desks", 1, 1, "the file is empty: give a top-level 'desks:' list"))
    else:
        try:
            top = r.mapping(root, "", {"desks": _desks}, "a top-level 'desks:' list")
            desks = top.get("desks", [])
            if "desks" not in r.nodes:
                r.problem(root, "desks", "required: a top-level 'desks:' list, each desk with an id, a universe and "
                                         "at least one of etl, forecast, trading")
        except _Reported:
            pass
    if r.problems:
        raise DagConfigError(file, sorted(r.problems, key=lambda p: (p[1], p[2])))
    return tuple(desks)


# -- the DAGs ------------------------------------------------------------------------------------------------------

def _dag(desk: DeskSpec, section: str, file_name: str, *, schedule: Any, default_args: Mapping[str, Any],
         deadline_minutes: float | None, what: str, details: list[str]) -> DAG:
    """A desk's DAG with the settings every DAG of the factory shares."""
    dag_id = f"{desk.id}_{section}"
    deadline = None
    if deadline_minutes:
        deadline = configured_deadline(deadline_alert, interval=timedelta(minutes=deadline_minutes),
                                       reference="queued",
                                       what=f"{dag_id} done within {deadline_minutes:g} minutes of its start")
    lines = [f"### {dag_id}", "", what, "",
             f"Built by the provider's DAG factory from `{file_name}`, desk `{desk.id}` (line {desk.line}): "
             "change it there.", "", f"- universe: {', '.join(desk.universe)}",
             f"- exchange: {desk.exchange or '[portfolio] default_exchange'}", *(f"- {d}" for d in details)]
    return DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=pendulum.datetime(2024, 1, 1, tz=desk.timezone),
        catchup=False,
        max_active_runs=1,
        default_args={**default_args, "on_failure_callback": PortfolioNotifier()},
        deadline=deadline,
        tags=["portfolio", section, desk.id, file_name[:100]],
        doc_md="\n".join(lines),
    )


def _sources(desk: DeskSpec) -> list[str] | None:
    return list(desk.sources) if desk.sources else None


def _given(**values: Any) -> dict[str, Any]:
    """The arguments given (not ``None``): the others keep the operator's own default."""
    return {name: value for name, value in values.items() if value is not None}


def _sources_doc(desk: DeskSpec) -> str:
    if desk.sources:
        return ", ".join(desk.sources)
    return "the default data connections that exist, else the synthetic market"


def _etl_dag(desk: DeskSpec, etl: EtlSpec, file_name: str, bars: Asset) -> DAG:
    with _dag(desk, "etl", file_name, schedule=CronTriggerTimetable(etl.schedule, timezone=desk.timezone),
              default_args={"retries": 3, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True,
                            "max_retry_delay": timedelta(minutes=30), "execution_timeout": timedelta(hours=2)},
              deadline_minutes=etl.deadline_minutes,
              what=f"Loads the desk's {etl.timeframe} bars into the portfolio store; each success updates the Asset "
                   f"`{bars.name}`.",
              details=[f"schedule: `{etl.schedule}` ({desk.timezone})",
                       f"sources: {_sources_doc(desk)}"]) as dag:
        PortfolioETLOperator(
            task_id="load_bars", symbols=list(desk.universe), timeframe=etl.timeframe, sources=_sources(desk),
            store_conn_id=desk.store_conn_id, exchange=desk.exchange, mode=etl.mode,
            history_sessions=etl.history_sessions, max_failed_fraction=etl.max_failed_fraction,
            max_abs_return=etl.max_abs_return, pool=API_POOL, outlets=[bars],
        )
    return dag


def _forecast_dag(desk: DeskSpec, fc: ForecastSpec, file_name: str, bars: Asset | None, forecasts: Asset) -> DAG:
    if fc.schedule == AFTER_ETL and bars is not None:
        schedule: Any = [bars]
        when = f"after each run of `{desk.id}_etl` (Asset `{bars.name}`)"
    elif fc.schedule:
        schedule, when = CronTriggerTimetable(fc.schedule, timezone=desk.timezone), f"`{fc.schedule}`"
    else:
        schedule, when = None, "by hand"
    level = [m for m in fc.models if m in LEVEL_MODELS]
    with _dag(desk, "forecast", file_name, schedule=schedule,
              default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(hours=1)},
              deadline_minutes=fc.deadline_minutes,
              what=f"Forecasts the desk's {fc.timeframe} bars {fc.horizon} bar(s) ahead with "
                   f"{', '.join(fc.models)}" + (f", then the ensemble of {', '.join(level)}, which updates the Asset "
                                                f"`{forecasts.name}`." if fc.ensemble and level else "."),
              details=[f"schedule: {when}"]) as dag:
        common: dict[str, Any] = {
            "symbols": list(desk.universe), "timeframe": fc.timeframe, "store_conn_id": desk.store_conn_id,
            "history": fc.history, "horizon": fc.horizon, "level": fc.level, "min_origins": fc.min_origins,
            "exchange": desk.exchange, "max_failed_fraction": fc.max_failed_fraction, **_given(origins=fc.origins),
        }
        gpu = _given(device=fc.device)
        tasks: dict[str, Any] = {}
        for model in fc.models:
            if model in ("garch", "garch_t"):
                tasks[model] = GarchForecastOperator(task_id=model, dist="t" if model == "garch_t" else "normal",
                                                     **common, **gpu)
            elif model == "sarimax":
                tasks[model] = SarimaxForecastOperator(task_id=model, **common)
            else:
                tasks[model] = SSAForecastOperator(task_id=model, method=model, **common, **gpu)
        if fc.ensemble and level:
            [tasks[m] for m in level] >> EnsembleForecastOperator(
                task_id="ensemble", models=level, symbols=list(desk.universe), timeframe=fc.timeframe,
                store_conn_id=desk.store_conn_id, trigger_rule="all_done", outlets=[forecasts],
            )
    return dag


def _trading_dag(desk: DeskSpec, tr: TradingSpec, file_name: str) -> DAG:
    if tr.session is not None:
        schedule: Any = _session_timetable(desk.exchange, tr.session)
        when = f"{schedule.summary} (MarketSessionTimetable)"
    else:
        schedule = CronTriggerTimetable(str(tr.schedule), timezone=desk.timezone)
        when = f"`{tr.schedule}` ({desk.timezone}); `market_hours` skips runs outside the session"
    with _dag(desk, "trading", file_name, schedule=schedule,
              default_args={"retries": 2, "retry_delay": timedelta(minutes=1),
                            "execution_timeout": timedelta(minutes=15)},
              deadline_minutes=tr.deadline_minutes,
              what=f"One trading cycle per run on {tr.timeframe} bars, behind the desk gate; paper or simulated "
                   "(live trading needs a DAG written in Python with allow_live=True).",
              details=[f"schedule: {when}", f"sources: {_sources_doc(desk)}",
                       f"broker: {desk.broker_conn_id or '`alpaca_default` when it exists, else the simulated broker'}"
                       f" (simulated book `{tr.simulated_account}`)",
                       f"weights: {dict(tr.weights) if tr.weights else 'the auto trader default'}",
                       f"risk limits: {dict(tr.limits) if tr.limits else 'the defaults'}"]) as dag:
        gate = DeskGateOperator(task_id="desk_gate", symbols=list(desk.universe), exchange=desk.exchange,
                                store_conn_id=desk.store_conn_id, require=list(tr.require),
                                max_health_age_minutes=tr.max_health_age_minutes)
        trader = AutoTraderOperator(
            task_id="auto_trader", symbols=list(desk.universe), timeframe=tr.timeframe, sources=_sources(desk),
            broker_conn_id=desk.broker_conn_id, store_conn_id=desk.store_conn_id,
            weights=dict(tr.weights) if tr.weights else None, risk_limits=dict(tr.limits) if tr.limits else None,
            max_trades_per_day=tr.max_trades_per_day, bar_aware=tr.bar_aware, sizing=tr.sizing,
            fraction=tr.fraction, min_score=tr.min_score, max_stale_bars=tr.max_stale_bars,
            forecast_model=tr.forecast_model, forecast_timeframe=tr.forecast_timeframe or "1Day",
            simulated_account=tr.simulated_account or desk.id, initial_cash=tr.initial_cash, exchange=desk.exchange,
            lock_timeout_s=tr.lock_timeout_s, pool=TRADING_POOL,
            **_given(slippage_bps=tr.slippage_bps, commission_bps=tr.commission_bps),
        )
        if tr.session is None:
            MarketHoursSensor(task_id="market_hours", exchange=desk.exchange, when_closed="skip") >> gate
        gate >> trader
    return dag


def build_dags(path: str | os.PathLike[str]) -> dict[str, DAG]:
    """The DAGs of every desk of a YAML file, by DAG id, in file order (each desk: ETL, forecast, trading).

    :param path: the YAML file (see the module docstring for its schema).
    :raises DagConfigError: naming the file, the line, the column and the field of every problem found.
    """
    file_name = Path(os.fspath(path)).name
    dags: dict[str, DAG] = {}
    for desk in load_desks(path):
        bars = forecasts = None
        if desk.etl is not None:
            bars = Asset(name=f"{desk.id}_bars", uri=f"portfolio://store/bars/{desk.etl.timeframe}/{desk.id}",
                         group="portfolio")
            dags[f"{desk.id}_etl"] = _etl_dag(desk, desk.etl, file_name, bars)
        if desk.forecast is not None:
            forecasts = Asset(name=f"{desk.id}_forecasts",
                              uri=f"portfolio://store/forecasts/{desk.forecast.timeframe}/{desk.id}", group="portfolio")
            dags[f"{desk.id}_forecast"] = _forecast_dag(desk, desk.forecast, file_name, bars, forecasts)
        if desk.trading is not None:
            dags[f"{desk.id}_trading"] = _trading_dag(desk, desk.trading, file_name)
    return dags


def register_dags(path: str | os.PathLike[str], namespace: MutableMapping[str, Any]) -> dict[str, DAG]:
    """Build the DAGs of a YAML file into a DAG file's module namespace, where Airflow finds them.

    :param path: the YAML file, e.g. ``Path(__file__).with_name("desks.yaml")``.
    :param namespace: the DAG file's ``globals()``.
    :raises DagConfigError: as :func:`build_dags` (in a dags folder: the DAG file's import error).
    """
    dags = build_dags(path)
    namespace.update(dags)
    return dags
