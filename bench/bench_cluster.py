"""The desk's day on the cluster (Airflow on CeleryExecutor, two workers) against the same jobs as plain Python in
one process; answers checked.

Side by side in one run, over ``--symbols`` (500) symbols of ``tests/cluster/dags/cluster_common.universe`` in
chunks of ``--chunk`` (50), daily bars of the sessions ``--start``..``--end`` (2024), the trader at ``--as-of``
(2024-12-31 15:00 New York):

1. **cluster**: the cluster of ``tests/cluster/cluster.py`` (PostgreSQL, Redis, api-server, scheduler,
   dag-processor, triggerer; ``worker-a`` serves queue ``default``, ``worker-b`` ``default`` and ``gpu``) runs DAG
   ``cluster_desk_day`` (``tests/cluster/dags``, copied to a temporary DAG folder) with that conf: the ETL mapped
   over the chunks (``mode="full"``), SSA and GARCH forecasts (GPU-routed: queue ``gpu``, pool ``gpu_pool``), the
   auto trader mapped over the chunks (one at a time, book ``simulated:cluster``), monitoring. Each stage's wall time
   is ``max(end_date) - min(start_date)`` over its task instances; the end-to-end time runs from the trigger to the
   run's success as this script sees it (polled every 0.5 s).
2. **plain** (:func:`plain_desk_day`): the same jobs in one process, in the DAG's order, through the domain entry
   points the operators call (``load_bars``, ``forecast_universe``, ``trade_universe``, ``monitor_desk``) with the
   arguments the DAG gives and the operators' defaults for the rest, the trader's chunks one after another in the
   order the cluster ran them; no Airflow module imported. It runs on a second database of the cluster's
   PostgreSQL server after Airflow's services are stopped (the synthetic market is a pure function of its seed,
   so both stores see the same bars).

Checks (exit status 1 when one fails): every task instance succeeded, the forecasts ran on queue ``gpu`` on
``worker-b`` and every other task on queue ``default``; the task instances' rendered arguments are those the plain
run used; the plain run imported no Airflow module and the defaults it copies are the operators' (their signatures,
``[portfolio]`` and the Variables' defaults); both stores pass the desk's end-of-run checks
(``tests/cluster/checks.check_desk``) with the same counts; the same bars per symbol (count and values), the same
forecasts and evaluations (keys equal, values to 1e-9), the same orders (symbol, side, qty; and their statuses;
client order ids differ by run id) and the same final equity; the same health level.

Prints a table (stage, tasks, cluster wall, the cluster's task-seconds, plain, cluster / plain) with the universe,
the chunks, the workers and the machine; ``--write`` puts it in ``bench/RESULTS.md`` (section "Cluster load").

Usage (the cluster's venv, with Airflow's celery and postgres extras):
    .venv-cluster/bin/python bench/bench_cluster.py [--symbols 500] [--chunk 50] [--write]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `checks`, however this file is loaded

from checks import REPO, check, exit_status  # noqa: E402  (REPO on sys.path: tests.cluster)

DAGS = REPO / "tests" / "cluster" / "dags"
RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## Cluster load (`bench/bench_cluster.py`)"

# -- what cluster_desk_day gives its operators (tests/cluster/dags/cluster_desk_day.py) --------------------------
DAG_ID = "cluster_desk_day"
TIMEFRAME = "1Day"
ETL_MODE = "full"
HISTORY = 252
HORIZON = 5
SSA_METHOD = "ssa"
FORECAST_MODEL = "ssa"
ACCOUNT_NAME = "cluster"
MONITOR_ACCOUNT = "simulated:cluster"
GPU_TASKS = ("ssa", "garch")
STAGES = {"etl": ("etl",), "forecast": GPU_TASKS, "trade": ("trade",), "monitoring": ("monitoring",)}
#: ``[portfolio] device`` on the cluster's workers (``tests/cluster/cluster.py``).
CLUSTER_DEVICE = "cpu"
#: The conf of the day: a year of bars up to the session before the trader's, the trader at 15:00 New York. (With
#: ``end`` the trader's own session, as the DAG's params default, the forecasts are made on a bar that closes after the
#: trader's instant, which the trader ignores (no look-ahead): it then holds everything and places no order.)
DEFAULTS = {"start": "2024-01-02", "end": "2024-12-30", "as_of": "2024-12-31T15:00:00-05:00"}

# -- the operators' defaults the DAG leaves alone (checked against their signatures by mirror_mismatches) ---------
ETL_DEFAULTS: dict[str, Any] = {"timeframe": "1Day", "sources": None, "exchange": None, "history_sessions": 252,
                                "max_failed_fraction": 0.0, "max_abs_return": 0.5}
FORECAST_DEFAULTS: dict[str, Any] = {"level": 0.9, "origins": 10, "min_origins": 3, "exchange": None,
                                     "max_failed_fraction": 0.5, "device": None}
SSA_DEFAULTS: dict[str, Any] = {"window": None, "rank": None, "ar_order": None, "chunk": None}
GARCH_DEFAULTS: dict[str, Any] = {"dist": "normal"}
TRADER_DEFAULTS: dict[str, Any] = {
    "top_opportunities": None, "sources": None, "broker_conn_id": None, "weights": None, "risk_limits": None,
    "max_trades_per_day": None, "bar_aware": True, "sizing": "fixed_fraction", "fraction": 0.05, "min_score": 0.1,
    "max_stale_bars": 2, "forecast_timeframe": "1Day", "allow_live": False, "initial_cash": 100_000.0,
    "slippage_bps": None, "commission_bps": None, "exchange": None, "lock_timeout_s": 120.0,
}
#: ``operators.trading``: the simulated broker's costs when neither the operator nor the Variable gives them.
TRADER_COSTS = {"DEFAULT_SLIPPAGE_BPS": 5.0, "DEFAULT_COMMISSION_BPS": 0.0}
MONITOR_DEFAULTS: dict[str, Any] = {"timeframe": "1Day", "exchange": None, "vendor_conn_ids": None,
                                    "probe_scarce": False, "thresholds": None, "reduce_only_on_red": False}


def _cluster_common() -> Any:
    """``tests/cluster/dags/cluster_common.py`` (the DAG folder's own module: the universe and the chunks)."""
    from tests.cluster.cluster import dag_module

    return dag_module("cluster_common")


def universe(n: int) -> list[str]:
    """The DAG's universe of ``n`` symbols."""
    return _cluster_common().universe(n)


def chunked(names: list[str], size: int) -> list[list[str]]:
    """The DAG's chunks of ``size`` symbols."""
    return _cluster_common().chunked(names, size)


# -- plain Python in one process ----------------------------------------------------------------------------------
@dataclass
class PlainDay:
    """What :func:`plain_desk_day` did: wall seconds per stage and the jobs' summaries."""

    run_id: str
    seconds: dict[str, float]
    total: float
    imports: float
    trade_order: list[int]
    etl: list[dict[str, Any]] = field(default_factory=list)
    forecast: dict[str, dict[str, Any]] = field(default_factory=dict)
    trade: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)


def store_options(url: str) -> dict[str, float]:
    """The store's timeouts as ``PortfolioStoreHook.store_options`` gives them for a connection without extras:
    ``[portfolio] store_*`` at their declared defaults."""
    from airflow_provider_portfolio.config import OPTIONS, parse_seconds

    configured = {key: parse_seconds(OPTIONS[f"store_{key}"][0], f"[portfolio] store_{key}",
                                     positive=key == "connect_timeout")
                  for key in ("lock_timeout", "statement_timeout", "connect_timeout", "keepalives_idle")}
    if not url.startswith(("postgresql", "postgres")):
        return {"busy_timeout_s": configured["lock_timeout"]}
    return {f"{key}_s": value for key, value in configured.items()}


def plain_desk_day(store_url: str, symbols: Sequence[str], chunk: int, start: str, end: str, as_of: str, *,
                   device: str = CLUSTER_DEVICE, run_id: str | None = None,
                   trade_order: Sequence[int] | None = None) -> PlainDay:
    """The desk's day of ``cluster_desk_day`` as plain Python in this process: each task's domain entry point with the
    arguments its operator passes (the DAG's, the operators' defaults, ``[portfolio]`` and the Variables at their
    declared defaults, no data or broker connection: the synthetic market and the simulated broker), in the DAG's
    order. Imports no Airflow module.

    :param store_url: the store (SQLAlchemy URL); migrated here.
    :param symbols: the universe.
    :param chunk: symbols per ETL and trade chunk.
    :param start: first session date of the ETL.
    :param end: last session date of the ETL.
    :param as_of: the trader's instant (ISO 8601 with a zone).
    :param device: ``[portfolio] device`` of the worker (the cluster's: ``cpu``).
    :param run_id: the run the forecasts, decisions and orders belong to (default ``plain__<now>``).
    :param trade_order: the order of the trader's chunks (indexes into the chunks; default in order).
    :raises RuntimeError: where the operator's task would fail (too many symbols failed, orders in doubt).
    """
    began = time.perf_counter()
    import pandas as pd  # noqa: F401  (the one-time imports, timed apart)

    from airflow_provider_portfolio.config import OPTIONS
    from airflow_provider_portfolio.desk.monitoring import HealthThresholds, monitor_desk
    from airflow_provider_portfolio.desk.tuning import parse_trading_settings, settings_with
    from airflow_provider_portfolio.forecast.jobs import forecast_universe, resolve
    from airflow_provider_portfolio.forecast.registry import get_model
    from airflow_provider_portfolio.market.bars import parse_timeframe
    from airflow_provider_portfolio.market.calendar import MarketCalendar, parse_session_date
    from airflow_provider_portfolio.market.etl import load_bars, load_window
    from airflow_provider_portfolio.market.params import parse_instant, validate_symbols
    from airflow_provider_portfolio.market.quality import QualityRules
    from airflow_provider_portfolio.market.synthetic import SyntheticMarket
    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker
    from airflow_provider_portfolio.trading.costs import costs_for_universe, parse_simulated_costs
    from airflow_provider_portfolio.trading.decision import AUTO_TRADER_WEIGHTS
    from airflow_provider_portfolio.trading.risk import RiskLimits
    from airflow_provider_portfolio.trading.session import trade_universe
    from airflow_provider_portfolio.trading.settings import CycleSettings, with_max_trades_per_day
    from airflow_provider_portfolio.variables import VARIABLES

    imports = time.perf_counter() - began
    exchange = OPTIONS["default_exchange"][0]  # [portfolio] default_exchange
    seed = int(OPTIONS["synthetic_seed"][0])  # no data connection: the synthetic market (hooks.market_data)
    run_id = run_id or f"plain__{datetime.now(timezone.utc).isoformat()}"
    universe_ = validate_symbols(list(symbols))
    parts = [universe_[i:i + chunk] for i in range(0, len(universe_), chunk)]
    order = list(range(len(parts))) if trade_order is None else [int(i) for i in trade_order]
    if sorted(order) != list(range(len(parts))):
        raise ValueError(f"trade_order must order the {len(parts)} chunks, got {order}")
    seconds: dict[str, float] = {}
    day = PlainDay(run_id, seconds, 0.0, imports, order)

    store = PortfolioStore(store_url, **store_options(store_url))  # PortfolioStoreHook.get_conn: migrated
    store.migrate()

    # etl: PortfolioETLOperator(start, end, mode="full") mapped over the chunks
    started = time.perf_counter()
    first, last = (parse_session_date(parse_instant(value, name), name) for name, value in (("start", start),
                                                                                             ("end", end)))
    window = load_window(MarketCalendar(exchange), None, history_sessions=ETL_DEFAULTS["history_sessions"],
                         start=first, end=last)
    for part in parts:
        report = load_bars(store, [SyntheticMarket(seed=seed, exchange=exchange)], validate_symbols(part), *window,
                           timeframe=TIMEFRAME, mode=ETL_MODE, exchange=exchange,
                           rules=QualityRules(max_abs_return=ETL_DEFAULTS["max_abs_return"]))
        if report.failed_fraction > ETL_DEFAULTS["max_failed_fraction"]:
            raise RuntimeError(f"etl: {len(report.failed)} of {len(part)} symbol(s) failed: {report.failed}")
        day.etl.append(report.to_dict())
    seconds["etl"] = time.perf_counter() - started

    # forecast: SSAForecastOperator(method="ssa") and GarchForecastOperator, history 252, horizon 5
    started = time.perf_counter()
    models = {"ssa": get_model(SSA_METHOD, **SSA_DEFAULTS), "garch": get_model("garch", **GARCH_DEFAULTS)}
    for name, spec in models.items():
        model, backend = resolve(spec, device)
        forecast = forecast_universe(
            store, universe_, model, run_id=run_id, timeframe=TIMEFRAME, history=HISTORY, horizon=HORIZON,
            level=FORECAST_DEFAULTS["level"], origins=FORECAST_DEFAULTS["origins"],
            min_origins=FORECAST_DEFAULTS["min_origins"], exchange=exchange, device=backend)
        if not forecast.forecast or forecast.failed_fraction > FORECAST_DEFAULTS["max_failed_fraction"]:
            raise RuntimeError(f"{name}: {len(forecast.failed)} of {len(universe_)} symbol(s) could not be forecast: "
                               f"{forecast.failed}")
        day.forecast[name] = forecast.to_dict()
    seconds["forecast"] = time.perf_counter() - started

    # trade: AutoTraderOperator(timeframe="1Day", as_of, forecast_model="ssa", simulated_account="cluster") mapped
    # over the chunks, one at a time
    started = time.perf_counter()
    trader = {**TRADER_DEFAULTS, **_cluster_common().DESK_TRADER_ARGS}  # the DAG's arguments over the defaults
    settings = CycleSettings(
        timeframe=TIMEFRAME, weights=dict(AUTO_TRADER_WEIGHTS),
        limits=with_max_trades_per_day(RiskLimits.from_dict(trader["risk_limits"]),
                                       trader["max_trades_per_day"]),
        kill_switch=VARIABLES["portfolio.kill_switch"].default, exchange=exchange,
        bar_aware=TRADER_DEFAULTS["bar_aware"], min_score=trader["min_score"],
        sizing=TRADER_DEFAULTS["sizing"], fraction=TRADER_DEFAULTS["fraction"],
        max_stale_bars=TRADER_DEFAULTS["max_stale_bars"], lock_timeout_s=TRADER_DEFAULTS["lock_timeout_s"])
    live = parse_trading_settings(VARIABLES["portfolio.trading_settings"].default,
                                  setting="portfolio.trading_settings")
    live.pop("source", None)
    if live:
        settings = settings_with(settings, live)
    now = parse_instant(as_of, "as_of", naive_is_utc=False)
    costs_table = parse_simulated_costs(VARIABLES["portfolio.simulated_costs"].default,
                                        setting="portfolio.simulated_costs")
    for index in order:
        part = validate_symbols(parts[index])
        costs = costs_for_universe(part, costs_table, commission_bps=TRADER_COSTS["DEFAULT_COMMISSION_BPS"],
                                   slippage_bps=TRADER_COSTS["DEFAULT_SLIPPAGE_BPS"])
        broker = SimulatedBroker(TradingLedger(store), name=ACCOUNT_NAME,
                                 initial_cash=TRADER_DEFAULTS["initial_cash"], **costs)
        cycle = trade_universe(part, store=store, sources=[SyntheticMarket(seed=seed, exchange=settings.exchange)],
                               broker=broker, now=now, dag_id=DAG_ID, run_id=run_id, settings=settings,
                               forecast_model=FORECAST_MODEL, forecast_timeframe=TRADER_DEFAULTS["forecast_timeframe"])
        if cycle.unknown:
            raise RuntimeError(f"trade chunk {index}: {len(cycle.unknown)} order(s) in an unknown state: {cycle.unknown}")
        day.trade.append({**cycle.to_dict(), "account": broker.account, "as_of": now.isoformat(),
                          "symbols": len(part)})
    seconds["trade"] = time.perf_counter() - started

    # monitoring: MonitoringOperator(symbols, account="simulated:cluster", notify_on_red=False); no vendor connection
    started = time.perf_counter()
    thresholds = HealthThresholds.from_mapping(VARIABLES["portfolio.health_thresholds"].default,
                                               setting="portfolio.health_thresholds")
    try:
        health = monitor_desk(store, universe_, now=datetime.now(timezone.utc),
                              timeframe=parse_timeframe(MONITOR_DEFAULTS["timeframe"]).name,
                              exchange=MarketCalendar(exchange).name, account=MONITOR_ACCOUNT, thresholds=thresholds,
                              probes={}, dag_id=DAG_ID, run_id=run_id)
    finally:
        store.dispose()
    day.health = health.to_dict()
    seconds["monitoring"] = time.perf_counter() - started
    day.total = time.perf_counter() - began
    return day


def airflow_modules() -> list[str]:
    """The Airflow modules imported in this process."""
    return sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))


# -- the cluster ----------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """One stage of the cluster's run: its task instances' wall (first start to last end) and summed durations."""

    tasks: int
    wall: float
    task_seconds: float


@dataclass
class ClusterDay:
    """What the cluster's run did and how long it took."""

    run_id: str
    state: str
    end_to_end: float
    stages: dict[str, Stage]
    idle: float
    trade_order: list[int]
    task_instances: list[dict[str, Any]]
    run: dict[str, Any]
    env: dict[str, str]


@contextmanager
def started_cluster(root: Path | None = None, *, worker_concurrency: int = 2) -> Iterator[Any]:
    """A started :class:`tests.cluster.cluster.Cluster` under ``root`` (default a temporary folder, removed after a
    clean exit, kept with the services' logs after an error), its DAG folder a copy of ``tests/cluster/dags``."""
    from tests.cluster.cluster import Cluster

    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-")) if root is None else root
    dags = folder / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    for source in DAGS.glob("*.py"):
        shutil.copy(source, dags / source.name)
    try:
        with Cluster(folder / "services", dags, worker_concurrency=worker_concurrency) as cluster:
            yield cluster
    except BaseException:
        print(f"the cluster's folder (services' logs) is kept: {folder}", file=sys.stderr)
        raise
    if root is None:
        shutil.rmtree(folder, ignore_errors=True)


def _instant(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _union_seconds(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by the union of ``spans``."""
    total, reach = 0.0, None
    for begin, finish in sorted(spans):
        if reach is None or begin > reach:
            total += (finish - begin).total_seconds()
            reach = finish
        elif finish > reach:
            total += (finish - reach).total_seconds()
            reach = finish
    return total


def cluster_desk_day(cluster: Any, symbols: int, chunk: int, start: str, end: str, as_of: str, *,
                     timeout: float = 3600) -> ClusterDay:
    """Trigger ``cluster_desk_day`` on a started cluster (see :func:`started_cluster`) with ``symbols``, ``chunk``,
    ``start``, ``end`` and ``as_of`` as its conf and wait for its end; the stages' times from its task instances.

    :param cluster: a started :class:`tests.cluster.cluster.Cluster` whose DAG folder holds ``tests/cluster/dags``.
    :param timeout: seconds the run may take.
    """
    from tests.cluster.cluster import wait_for

    conf = {"symbols": symbols, "chunk": chunk, "start": start, "end": end, "as_of": as_of}
    cluster.wait_dag(DAG_ID, timeout=300)  # parsed before the clock starts
    triggered = datetime.now(timezone.utc)
    began = time.perf_counter()
    run_id = cluster.trigger(DAG_ID, conf)

    def ended() -> str | None:
        for service in cluster.services.values():
            service.check_alive()
        state = cluster.run_state(DAG_ID, run_id)
        return state if state in ("success", "failed") else None

    state = str(wait_for(f"run {DAG_ID}/{run_id} ended", ended, timeout, every=0.5, tail=cluster.tails))
    end_to_end = time.perf_counter() - began
    tis = cluster.task_instances(DAG_ID, run_id)
    run = cluster.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    stages: dict[str, Stage] = {}
    spans = []
    for ti in tis:
        begin, finish = _instant(ti.get("start_date")), _instant(ti.get("end_date"))
        if begin is not None and finish is not None:
            spans.append((begin, finish))
    groups = {"chunks, symbols": ("chunks", "symbols"), **STAGES}
    for stage, task_ids in groups.items():
        mine = [t for t in tis if t["task_id"] in task_ids and t.get("start_date") and t.get("end_date")]
        if not mine:
            continue
        wall = (max(_instant(t["end_date"]) for t in mine) - min(_instant(t["start_date"]) for t in mine))
        stages[stage] = Stage(len(mine), wall.total_seconds(), sum(float(t.get("duration") or 0.0) for t in mine))
    finished = _instant(run.get("end_date")) or datetime.now(timezone.utc)
    idle = max(0.0, (finished - triggered).total_seconds() - _union_seconds(spans))
    trades = sorted((t for t in tis if t["task_id"] == "trade" and t.get("start_date")),
                    key=lambda t: _instant(t["start_date"]))
    return ClusterDay(run_id, state, end_to_end, stages, idle, [int(t["map_index"]) for t in trades], tis, run,
                      dict(getattr(cluster, "env", {})))


def stop_airflow(cluster: Any) -> None:
    """Stop the cluster's Airflow services and Redis (PostgreSQL stays up): the plain run gets a quiet machine."""
    for service in reversed(list(cluster.services.values())):
        service.stop()
    if cluster.redis is not None:
        cluster.redis.stop()


# -- answers --------------------------------------------------------------------------------------------------------
def store_answers(url: str, symbols: Sequence[str]) -> dict[str, Any]:
    """What the two runs must agree on, read from a store: bars, forecasts, evaluations, orders, final equity."""
    from airflow_provider_portfolio.desk.monitoring import MONITORING
    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.store.ledger import TradingLedger

    store = PortfolioStore(url)
    try:
        bars = store.read_bars(list(symbols), TIMEFRAME).sort_values(["symbol", "ts"]).reset_index(drop=True)
        models = list(STAGES["forecast"])
        forecasts = store.read_forecasts(list(symbols), model=models, timeframe=TIMEFRAME, latest=True)
        evaluations = store.read_evaluations(list(symbols), model=models, timeframe=TIMEFRAME, latest=True)
        ledger = TradingLedger(store)
        orders = ledger.orders(MONITOR_ACCOUNT)
        curve = ledger.equity_curve(MONITOR_ACCOUNT)
        health = store.latest_health_report(MONITORING)
    finally:
        store.dispose()
    checks = [] if health is None else sorted((c["name"], c.get("subject") or "", c["level"])
                                              for c in health.report.get("checks", ()))
    return {"bars": bars, "forecasts": forecasts, "evaluations": evaluations, "orders": orders,
            "equity": float(curve[-1]["equity"]) if curve else None,
            "health": (None if health is None else health.level, checks)}


def frame_differences(a: Any, b: Any, keys: Sequence[str], *, tol: float = 1e-9,
                      ignore: Sequence[str] = ("run_id", "created_at")) -> list[str]:
    """How two frames differ: rows (by ``keys``), then each column (numbers to ``tol``, NaN equal to NaN)."""
    import numpy as np

    if len(a) != len(b):
        return [f"{len(a)} rows against {len(b)}"]
    a = a.sort_values(list(keys)).reset_index(drop=True)
    b = b.sort_values(list(keys)).reset_index(drop=True)
    out = []
    for column in a.columns:
        if column in ignore:
            continue
        x, y = a[column], b[column]
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            bad = ~((np.isnan(xv) & np.isnan(yv)) | (np.abs(xv - yv) <= tol))
        else:
            bad = (x != y).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            out.append(f"{column}: {int(bad.sum())} row(s) differ, e.g. {dict(a.loc[i, list(keys)])}: "
                       f"{x.iloc[i]!r} against {y.iloc[i]!r}")
    return out


def compare_answers(cluster: dict[str, Any], plain: dict[str, Any]) -> None:
    """The answer checks between the cluster's store and the plain run's."""
    bars_c = cluster["bars"].groupby("symbol").size().to_dict()
    bars_p = plain["bars"].groupby("symbol").size().to_dict()
    check(bars_c == bars_p and len(bars_c) > 0,
          f"the same bars per symbol ({sum(bars_c.values())} bars of {len(bars_c)} symbols in the cluster's store, "
          f"{sum(bars_p.values())} of {len(bars_p)} in the plain run's)"
          + ("" if bars_c == bars_p else f": differ at {sorted(set(bars_c.items()) ^ set(bars_p.items()))[:6]}"))
    if bars_c == bars_p:
        diff = frame_differences(cluster["bars"], plain["bars"], ["symbol", "timeframe", "ts"], tol=0.0,
                                 ignore=("created_at",))
        check(not diff, "the same bar values (timestamps, OHLCV)" + (f": {'; '.join(diff)}" if diff else ""))
    keys = ["model", "symbol", "timeframe", "asof", "step"]
    fc, fp = cluster["forecasts"], plain["forecasts"]
    shape_c = sorted(set(zip(fc["model"], fc["symbol"], fc["step"], strict=True)))
    shape_p = sorted(set(zip(fp["model"], fp["symbol"], fp["step"], strict=True)))
    check(shape_c == shape_p and len(shape_c) > 0,
          f"the same forecasts (symbols, models, horizons): {len(fc)} rows, models {sorted(set(fc['model']))}, "
          f"{fc['symbol'].nunique()} symbols, steps 1..{fc['step'].max() if len(fc) else 0}")
    if shape_c == shape_p:
        diff = frame_differences(fc, fp, keys)
        check(not diff, "the same forecast values (to 1e-9)" + (f": {'; '.join(diff)}" if diff else ""))
    diff = frame_differences(cluster["evaluations"], plain["evaluations"], ["model", "symbol", "timeframe", "asof"])
    check(not diff, f"the same model evaluations ({len(cluster['evaluations'])} rows; to 1e-9)"
          + (f": {'; '.join(diff)}" if diff else ""))

    def orders(rows: list[dict[str, Any]], *fields: str) -> list[tuple]:
        return sorted(tuple(round(float(r[f]), 9) if f == "qty" else r[f] for f in fields) for r in rows)

    oc, op = orders(cluster["orders"], "symbol", "side", "qty"), orders(plain["orders"], "symbol", "side", "qty")
    if not oc and not op:
        print("  note: neither run placed an order (every decision a hold): the order checks compare nothing")
    check(oc == op, f"the same orders (symbol, side, qty): {len(oc)} in the cluster's store, {len(op)} in the plain "
          f"run's" + ("" if oc == op else f"; differ: {sorted(set(oc) ^ set(op))[:6]}"))
    sc = orders(cluster["orders"], "symbol", "side", "qty", "status")
    sp = orders(plain["orders"], "symbol", "side", "qty", "status")
    check(sc == sp, "the same order statuses" + ("" if sc == sp else f"; differ: {sorted(set(sc) ^ set(sp))[:6]}"))
    ec, ep = cluster["equity"], plain["equity"]
    check(ec is not None and ep is not None and math.isclose(ec, ep, rel_tol=1e-9, abs_tol=1e-6),
          f"the same final equity: {ec} and {ep}")
    (lc, cc), (lp, cp) = cluster["health"], plain["health"]
    differ = sorted(set(cc) ^ set(cp))
    check(lc is not None and lc == lp, f"the same health level: {lc} and {lp} ({len(cc)} checks"
          + (f"; checks graded differently: {differ[:6]})" if differ else ", all graded alike)"))


def mirror_mismatches() -> list[str]:
    """Where the defaults :func:`plain_desk_day` copies are not the operators' (imports the operators: Airflow)."""
    import inspect

    from airflow_provider_portfolio.operators import trading
    from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
    from airflow_provider_portfolio.operators.forecasting import GarchForecastOperator, SSAForecastOperator
    from airflow_provider_portfolio.operators.monitoring import MonitoringOperator

    def defaults(cls: type) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for klass in cls.__mro__:
            init = vars(klass).get("__init__")
            if init is None:
                continue
            for name, param in inspect.signature(init).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    found.setdefault(name, param.default)
        return found

    wanted = [(PortfolioETLOperator, ETL_DEFAULTS), (SSAForecastOperator, {**FORECAST_DEFAULTS, **SSA_DEFAULTS}),
              (GarchForecastOperator, {**FORECAST_DEFAULTS, **GARCH_DEFAULTS}),
              (trading.AutoTraderOperator, TRADER_DEFAULTS), (MonitoringOperator, MONITOR_DEFAULTS)]
    out = []
    for cls, mine in wanted:
        theirs = defaults(cls)
        out += [f"{cls.__name__}.{k}: {theirs.get(k, '<none>')!r}, the bench copies {v!r}" for k, v in mine.items()
                if k not in theirs or theirs[k] != v]
    out += [f"operators.trading.{k} = {getattr(trading, k)!r}, the bench copies {v!r}" for k, v in TRADER_COSTS.items()
            if getattr(trading, k) != v]
    return out


def rendered_mismatches(tis: list[dict[str, Any]], parts: list[list[str]], symbols: list[str], start: str, end: str,
                        as_of: str) -> list[str]:
    """Where the arguments the cluster's tasks rendered are not those the plain run used (``None``-safe: a task
    instance without ``rendered_fields`` is skipped)."""
    import ast
    import json

    def values(value: Any) -> Any:
        if isinstance(value, str) and value.strip().startswith("["):
            for parse in (json.loads, ast.literal_eval):
                try:
                    return parse(value)
                except (ValueError, SyntaxError):
                    continue
        return value

    expected: dict[tuple[str, int], dict[str, Any]] = {}
    for i, part in enumerate(parts):
        expected[("etl", i)] = {"symbols": part, "start": start, "end": end, "mode": ETL_MODE, "timeframe": TIMEFRAME}
        expected[("trade", i)] = {"symbols": part, "timeframe": TIMEFRAME, "as_of": as_of}
    for task in GPU_TASKS:
        expected[(task, -1)] = {"symbols": symbols, "timeframe": TIMEFRAME}
    expected[("ssa", -1)]["method"] = SSA_METHOD
    expected[("monitoring", -1)] = {"symbols": symbols, "timeframe": TIMEFRAME, "account": MONITOR_ACCOUNT}
    def same(shown: Any, value: Any) -> bool:
        # Airflow keeps a rendered field longer than [core] max_templated_field_length as a truncated string: what it
        # kept must be the start of the value's own rendering.
        if isinstance(shown, str) and shown.startswith(TRUNCATED):
            kept = shown[len(TRUNCATED):].strip()
            kept = kept[:-3] if kept.endswith("...") else kept
            return bool(kept) and repr(value).startswith(kept)
        return values(shown) == value

    out = []
    for ti in tis:
        key = (ti["task_id"], int(ti.get("map_index", -1) if ti.get("map_index") is not None else -1))
        rendered = ti.get("rendered_fields") or {}
        for name, value in expected.get(key, {}).items():
            if name in rendered and not same(rendered[name], value):
                out.append(f"{key[0]}[{key[1]}].{name}: rendered {str(rendered[name])[:300]!r}, the plain run used "
                           f"{str(value)[:300]!r}")
    return out


#: How Airflow starts a rendered field it truncated (longer than ``[core] max_templated_field_length``).
TRUNCATED = "Truncated. You can change this behaviour in [core]max_templated_field_length."


def rendered_count(tis: list[dict[str, Any]]) -> int:
    return sum(1 for ti in tis if ti.get("rendered_fields"))


# -- the machine, the table, RESULTS.md ------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """CPU count and model, memory, Python and Airflow versions of this machine."""
    from importlib.metadata import PackageNotFoundError, version

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 ** 2:.0f} GiB"
                break
    except OSError:
        pass
    try:
        airflow = version("apache-airflow")
    except PackageNotFoundError:
        airflow = "not installed"
    return {"cpus": str(os.cpu_count()), "cpu": model, "memory": memory, "python": platform.python_version(),
            "airflow": airflow}


def installed(distribution: str) -> bool:
    """Whether ``distribution`` is installed (read from its metadata: nothing of it is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(cluster: ClusterDay, plain: PlainDay) -> list[str]:
    """The markdown table: one row per stage, the time no task ran, end to end."""
    rows = ["| stage | tasks | cluster s | cluster task-s | plain s | cluster / plain |",
            "|---|---:|---:|---:|---:|---:|"]
    names = {"chunks, symbols": "chunks, symbols (`@task`, Airflow only)", "etl": "etl (mapped)",
             "forecast": "forecast (ssa + garch, queue gpu)", "trade": "trade (mapped, one at a time)",
             "monitoring": "monitoring"}
    for stage, label in names.items():
        got = cluster.stages.get(stage)
        mine = plain.seconds.get(stage)
        rows.append(f"| {label} | {got.tasks if got else 0} | {_s(got.wall if got else None)} | "
                    f"{_s(got.task_seconds if got else None)} | {_s(mine)} | "
                    f"{_ratio(got.wall if got else None, mine)} |")
    rows.append(f"| no task running (scheduling, queueing, hand-offs) | | {_s(cluster.idle)} | | - | |")
    rows.append(f"| plain: imports (once, in the process) | | | | {_s(plain.imports)} | |")
    tasks = sum(s.tasks for s in cluster.stages.values())
    task_seconds = sum(s.task_seconds for s in cluster.stages.values())
    rows.append(f"| **end to end** | {tasks} | **{_s(cluster.end_to_end)}** | {_s(task_seconds)} | "
                f"**{_s(plain.total)}** | **{_ratio(cluster.end_to_end, plain.total)}** |")
    return rows


def write_results(text: str, path: Path = RESULTS) -> None:
    """Replace the section :data:`SECTION` of ``path`` with ``text`` (or append it), the other sections intact."""
    lines = path.read_text().splitlines() if path.exists() else ["# Benchmark results"]
    title = SECTION.split("(")[0].strip()
    at = next((i for i, line in enumerate(lines) if line.startswith(title)), None)
    new = text.rstrip("\n").splitlines()
    if at is None:
        lines = [*lines, "", *new] if lines and lines[-1].strip() else [*lines, *new]
    else:
        stop = next((i for i in range(at + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = [*lines[:at], *new, *([""] if stop < len(lines) else []), *lines[stop:]]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def section(args: argparse.Namespace, cluster: ClusterDay, plain: PlainDay, rows: list[str], info: dict[str, str],
            load: tuple[float, float], chunks: int, orders: int) -> str:
    share = (cluster.end_to_end - plain.total) / cluster.end_to_end if cluster.end_to_end else float("nan")
    return "\n".join([
        SECTION, "",
        f"{datetime.now(timezone.utc):%Y-%m-%d}, {info['cpus']} CPUs ({info['cpu']}), {info['memory']}, Python "
        f"{info['python']}, Airflow {info['airflow']}; load average {load[0]:.1f} before, {load[1]:.1f} after. The "
        f"desk's day (`tests/cluster/dags/cluster_desk_day.py`) over {args.symbols} symbols in {chunks} chunks of "
        f"{args.chunk}, daily bars {args.start}..{args.end}, the trader at {args.as_of}, on the cluster of "
        "`tests/cluster/cluster.py` (PostgreSQL, Redis, CeleryExecutor; worker-a: queue default, worker-b: default "
        f"and gpu; {args.concurrency} slots each; `[portfolio] device = cpu`), against the same jobs as plain Python "
        "in one process (`plain_desk_day`: the domain entry points the operators call, with the DAG's arguments) on "
        "a second database of the same PostgreSQL server, Airflow's services stopped. Stage = first task start to "
        "last task end; task-s = the sum of its task instances' durations.", "",
        *rows, "",
        f"Airflow's overhead: {cluster.end_to_end - plain.total:.1f} s of the cluster's {cluster.end_to_end:.1f} s "
        f"({share:.0%}). Answers checked: every task succeeded, ssa and garch ran on queue gpu on worker-b and the "
        "rest on default; both stores pass the desk's end-of-run checks with the same counts; the same bars, "
        f"forecasts and evaluations (to 1e-9), orders ({orders}: symbol, side, qty, status) and final equity.", "",
        "Run: `.venv-cluster/bin/python bench/bench_cluster.py` (`--symbols N`, `--chunk N`, `--write`).",
    ])


# -- main ----------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=500, help="universe size (default 500)")
    parser.add_argument("--chunk", type=int, default=50, help="symbols per ETL and trade chunk (default 50)")
    parser.add_argument("--start", default=DEFAULTS["start"], help="first session of the ETL (default %(default)s)")
    parser.add_argument("--end", default=DEFAULTS["end"], help="last session of the ETL (default %(default)s)")
    parser.add_argument("--as-of", default=DEFAULTS["as_of"], help="the trader's instant (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2, help="task slots of each worker (default 2)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the cluster's run may take")
    parser.add_argument("--write", action="store_true", help="put the results in bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.symbols < 1 or args.chunk < 1:
        parser.error("--symbols and --chunk must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not installed("apache-airflow-providers-celery") or not (Path(sys.executable).parent / "airflow").exists():
        print("bench_cluster: needs Airflow with the celery and postgres extras in this interpreter's venv: run "
              "it as .venv-cluster/bin/python bench/bench_cluster.py", file=sys.stderr)
        return 2
    info = machine()
    symbols = universe(args.symbols)
    parts = chunked(symbols, args.chunk)
    print(f"The desk's day: {len(symbols)} symbols in {len(parts)} chunks of {args.chunk}, bars {args.start}.."
          f"{args.end}, trader at {args.as_of}; workers worker-a (default) and worker-b (default, gpu), "
          f"{args.concurrency} slots each")
    print(f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']}, Python {info['python']}, "
          f"Airflow {info['airflow']}")
    load_before = os.getloadavg()[0]
    # Nothing Airflow imports in this process may touch a home of the user's (the cluster has its own).
    home = Path(tempfile.mkdtemp(prefix="bench-cluster-home-"))
    os.environ["AIRFLOW_HOME"] = str(home)
    try:
        with started_cluster(worker_concurrency=args.concurrency) as cluster:
            print("cluster up; running the desk's day ...", flush=True)
            day = cluster_desk_day(cluster, args.symbols, args.chunk, args.start, args.end, args.as_of,
                                   timeout=args.timeout)
            print(f"cluster: run {day.run_id} {day.state} in {day.end_to_end:.1f} s", flush=True)
            tis = day.task_instances
            check(day.state == "success" and {t["state"] for t in tis} == {"success"},
                  f"the cluster's run succeeded, every task instance too ({len(tis)}: "
                  f"{sorted({(t['task_id'], t['state']) for t in tis if t['state'] != 'success'}) or 'all success'})")
            gpu = [t for t in tis if t["task_id"] in GPU_TASKS]
            other = [t for t in tis if t["task_id"] not in GPU_TASKS]
            check({t["task_id"] for t in gpu} == set(GPU_TASKS)
                  and {(t["queue"], t["hostname"]) for t in gpu} == {("gpu", "worker-b")},
                  f"ssa and garch ran on queue gpu on worker-b: {sorted((t['task_id'], t['queue'], t['hostname']) for t in gpu)}")
            check({t["queue"] for t in other} == {"default"},
                  f"every other task on queue default ({len(other)} task instances; hosts "
                  f"{sorted({str(t['hostname']) for t in other})})")
            retried = [f"{t['task_id']}[{t.get('map_index', -1)}] try {t.get('try_number')}" for t in tis
                       if (t.get("try_number") or 1) > 1]
            if retried:
                print(f"  note: retried task instances (stage times from their last try): {retried}")
            device = day.env.get("AIRFLOW__PORTFOLIO__DEVICE", CLUSTER_DEVICE)
            stop_airflow(cluster)
            plain_url = cluster.postgres.create_database("plain")
            before = airflow_modules()  # none: nothing in this process has imported Airflow so far
            plain = plain_desk_day(plain_url, symbols, args.chunk, args.start, args.end, args.as_of, device=device,
                                   trade_order=day.trade_order)
            print(f"plain: {plain.total:.1f} s (trade chunks in the cluster's order {plain.trade_order})", flush=True)
            added = sorted(set(airflow_modules()) - set(before))
            check(not added and not before, "the plain run imported no Airflow module"
                  + (f": {', '.join(added[:5])}" if added else "")
                  + (f" (but {', '.join(before[:3])} were imported before it)" if before else ""))

            from tests.cluster.checks import check_desk

            counts = {}
            for name, url in (("cluster", cluster.store_url), ("plain", plain_url)):
                try:
                    counts[name] = check_desk(url, account=MONITOR_ACCOUNT, symbols=symbols, start=args.start,
                                              end=args.end, dag_ids={DAG_ID}, forecast_models=set(GPU_TASKS),
                                              forecast_symbols=symbols)
                    check(True, f"the {name} store passes the desk's end-of-run checks: {counts[name]}")
                except AssertionError as err:
                    check(False, f"the {name} store passes the desk's end-of-run checks: {err}")
            if len(counts) == 2:
                check(counts["cluster"] == counts["plain"], "the same desk counts in both stores")
            answers = store_answers(cluster.store_url, symbols)
            compare_answers(answers, store_answers(plain_url, symbols))
            placed = len(answers["orders"])
        mismatched = mirror_mismatches()
        check(not mismatched, "the defaults the plain run copies are the operators'"
              + (f": {'; '.join(mismatched)}" if mismatched else ""))
        wrong = rendered_mismatches(tis, parts, symbols, args.start, args.end, args.as_of)
        check(not wrong, f"the arguments the cluster's tasks rendered ({rendered_count(tis)} task instances with "
              f"rendered fields) are the plain run's" + (f": {'; '.join(wrong[:5])}" if wrong else ""))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    load_after = os.getloadavg()[0]
    rows = table(day, plain)
    print()
    print("\n".join(rows))
    share = (day.end_to_end - plain.total) / day.end_to_end
    print(f"\nAirflow's overhead: {day.end_to_end - plain.total:.1f} s of {day.end_to_end:.1f} s end to end "
          f"({share:.0%}); load average {load_before:.1f} before, {load_after:.1f} after")
    status = exit_status()
    if args.write:
        if status:
            print("not written to bench/RESULTS.md: checks failed")
        else:
            write_results(section(args, day, plain, rows, info, (load_before, load_after), len(parts), placed))
            print(f"written to {RESULTS.relative_to(REPO)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
