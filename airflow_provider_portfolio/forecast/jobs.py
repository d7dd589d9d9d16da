"""Forecasting jobs over the store: read bars, fit a model per symbol panel, backtest, write forecasts.

The operators of ``operators/forecasting.py`` are thin wrappers of :func:`forecast_universe` and
:func:`ensemble_universe`; the same calls work from a notebook or a container.

:func:`forecast_universe`, for one model of the registry (:mod:`.registry`: a name, or a configured
:class:`~.base.Model` from ``get_model(name, **options)``) on the array backend of ``device``:

1. Reads the symbols' stored bars of ``timeframe`` and keeps each symbol's last ``history`` closes. A
   symbol with a stored row that cannot be decoded (a close or a timestamp stored as text) is an error
   for that symbol, named with the table and the row; the others go on.
2. Checks each symbol: missing from the store, fewer bars than the model needs, a non-positive or
   non-finite close, or a constant series are errors **for that symbol**; the others go on.
3. Groups symbols by series length (a panel needs equal lengths) and runs each group as one
   (symbols, time) panel: log closes for level models, log returns for variance models (GARCH).
4. For each group: the forecast from all bars, a rolling-origin backtest (:mod:`.evaluation`), scores
   and health labels against the naive baseline, and the forecast's band calibrated by the backtest.
   When a group fails as a whole (a model error), each symbol is run alone so one bad series cannot
   take the others down; a symbol that still fails is reported with the reason.
5. Writes every forecast row and evaluation row of the run in one store transaction
   (:meth:`PortfolioStore.write_forecasts`): all or nothing, and a rerun of the same run replaces its
   own rows.

Forecast rows carry ``target_ts``, the bar being forecast: the next ``horizon`` bars of the symbol's
calendar after its last stored bar.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.forecast.backend import NUMPY, Backend, get_backend
from airflow_provider_portfolio.forecast.base import MIN_TRAIN, Fitted, Forecast, Model, kind
from airflow_provider_portfolio.forecast.baselines import check_horizon, normal_quantile
from airflow_provider_portfolio.forecast.evaluation import (
    backtest,
    calibrate,
    calibration_factors,
    ensemble_weights,
    score,
)
from airflow_provider_portfolio.forecast.registry import get_model, target_of
from airflow_provider_portfolio.market.params import is_crypto
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.store import PortfolioStore

log = logging.getLogger(__name__)

__all__ = ["MIN_TRAIN", "ForecastReport", "OnBackend", "ensemble_universe", "forecast_universe", "future_bars",
           "garch_spec", "resolve", "sarimax_spec", "ssa_family_spec"]


# -- models -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OnBackend:
    """A model pinned to one backend: :meth:`fit` ignores the backend it is given (what the deprecated
    ``*_spec`` functions return; :func:`forecast_universe` uses its backend unless given a ``device``).

    :param model: the model.
    :param backend: where it computes.
    """

    model: Model
    backend: Backend

    name = property(lambda self: self.model.name)
    target = property(lambda self: self.model.target)
    min_points = property(lambda self: self.model.min_points)
    params = property(lambda self: self.model.params)
    engine = property(lambda self: self.model.engine)

    def fit(self, panel: Any, backend: Backend | None = None) -> Fitted:
        """Fit on the pinned backend."""
        return self.model.fit(panel, self.backend)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


def ssa_family_spec(method: str = "ssa", *, backend: Backend, window: int | None = None, rank: int | None = None,
                    ar_order: int | None = None, chunk: int | None = None) -> OnBackend:
    """Deprecated: ``get_model(method, window=..., ...)`` and ``forecast_universe(..., device=backend)``."""
    _deprecated("ssa_family_spec()", "forecast.registry.get_model(method, ...)")
    from airflow_provider_portfolio.forecast.models import SSAFamilyModel

    return OnBackend(SSAFamilyModel(method, window=window, rank=rank, ar_order=ar_order, chunk=chunk), backend)


def garch_spec(dist: str = "normal", *, backend: Backend) -> OnBackend:
    """Deprecated: ``get_model("garch", dist=dist)`` and ``forecast_universe(..., device=backend)``."""
    _deprecated("garch_spec()", "forecast.registry.get_model('garch', dist=...)")
    return OnBackend(get_model("garch", dist=dist), backend)


def sarimax_spec(order: Sequence[int] = (1, 0, 1), seasonal_order: Sequence[int] = (0, 0, 0, 0),
                 trend: str | None = "c", *, processes: int | None = None, warm_start: bool = True) -> Model:
    """Deprecated: ``get_model("sarimax", order=..., ...)``."""
    _deprecated("sarimax_spec()", "forecast.registry.get_model('sarimax', ...)")
    return get_model("sarimax", order=order, seasonal_order=seasonal_order, trend=trend, processes=processes,
                     warm_start=warm_start)


def resolve(spec: Model | str, device: str | Backend | None = None) -> tuple[Model, Backend]:
    """The model (a registered name is looked up with its default options) and the backend it runs on.

    :param device: a :class:`Backend`, or a device for :func:`.backend.get_backend` (``None``: the
        model's pinned backend if any, else the default); models with their own ``engine`` run on NumPy.
    :raises InvalidInputError: for an unknown model name or device.
    :raises DeviceUnavailableError: for ``device="cuda"`` without CuPy or a GPU.
    """
    model = get_model(spec) if isinstance(spec, str) else spec
    if isinstance(device, Backend):
        return model, device
    pinned = getattr(model, "backend", None)
    if device is None and isinstance(pinned, Backend):
        return model, pinned
    if getattr(model, "engine", None) is not None:
        return model, NUMPY
    return model, get_backend(device)


def _placement(model: Model, backend: Backend) -> tuple[str, str]:
    """``(backend name, device)`` for rows and reports."""
    engine = getattr(model, "engine", None)
    return (engine, "cpu") if engine is not None else (backend.name, backend.device)


# -- the job ----------------------------------------------------------------------------------------------


@dataclass
class ForecastReport:
    """Outcome of a forecasting job; :meth:`to_dict` is the operator's XCom summary."""

    model: str
    run_id: str
    backend: str
    device: str
    forecast: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    forecast_rows: int = 0
    evaluation_rows: int = 0
    seconds: float = 0.0

    @property
    def failed_fraction(self) -> float:
        """Failed symbols over all symbols asked for."""
        total = len(self.forecast) + len(self.failed)
        return len(self.failed) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-able summary."""
        counts: dict[str, int] = {}
        for label in self.labels.values():
            counts[label] = counts.get(label, 0) + 1
        return {
            "model": self.model,
            "run_id": self.run_id,
            "backend": self.backend,
            "device": self.device,
            "symbols": len(self.forecast),
            "failed": dict(self.failed),
            "labels": counts,
            "forecast_rows": self.forecast_rows,
            "evaluation_rows": self.evaluation_rows,
            "seconds": round(self.seconds, 3),
        }


def _check_common(horizon: Any, level: Any, history: Any, origins: Any) -> tuple[int, float, int, int]:
    horizon = check_horizon(horizon)
    normal_quantile(level)
    for name, value, low in (("history", history, 2 * MIN_TRAIN), ("origins", origins, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    return horizon, float(level), history, origins


def _series(bars: pd.DataFrame, symbols: list[str], history: int, min_points: int,
            failed: dict[str, str]) -> dict[str, tuple[np.ndarray, Any]]:
    """symbol -> (closes, last bar ts) of the usable symbols; problems go to ``failed``."""
    out: dict[str, tuple[np.ndarray, Any]] = {}
    groups = dict(tuple(bars.groupby("symbol", sort=False))) if len(bars) else {}
    for symbol in symbols:
        frame = groups.get(symbol)
        if frame is None or frame.empty:
            failed[symbol] = "no bars of this timeframe in the store"
            continue
        closes = frame["close"].to_numpy(dtype=np.float64)[-history:]
        if len(closes) < min_points:
            failed[symbol] = f"only {len(closes)} bar(s) in the store; the model needs at least {min_points}"
        elif not np.all(np.isfinite(closes)) or np.any(closes <= 0):
            bad = int(np.argmax(~np.isfinite(closes) | (closes <= 0)))
            at = frame["ts"].iloc[-len(closes) + bad]
            failed[symbol] = f"non-positive or non-finite close {closes[bad]!r} at {at}"
        elif np.ptp(closes) == 0:
            failed[symbol] = f"constant series (every close {closes[0]!r}): nothing to forecast"
        else:
            out[symbol] = (closes, frame["ts"].iloc[-1])
    return out


@dataclass
class _GroupResult:
    forecast: Forecast
    variance: np.ndarray | None
    evaluation: Any
    errors: dict[int, str]


def _run_group(model: Model, backend: Backend, panel: np.ndarray, horizon: int, level: float, origins: int,
               min_origins: int) -> _GroupResult:
    out = model.fit(panel, backend).forecast(horizon, level)

    def forecaster(train: np.ndarray, h: int) -> tuple[Forecast, Any]:
        res = model.fit(train, backend).forecast(h, level)
        return res, res.variance

    bt = backtest(panel, forecaster, horizon=horizon, origins=origins, min_train=MIN_TRAIN)
    evaluation = score(bt, target=kind(model), min_origins=min_origins)
    fc = calibrate(out, calibration_factors(bt, level))
    return _GroupResult(fc, out.variance, evaluation, dict(out.errors))


def _run_isolated(model: Model, backend: Backend, panel: np.ndarray, horizon: int, level: float, origins: int,
                  min_origins: int) -> list[tuple[int, _GroupResult | str, int]]:
    """Per row ``i``: ``(i, result, j)`` with ``j`` the row's index in ``result`` (the whole panel's, or
    its own when the panel failed and was retried row by row), or ``(i, error, 0)``."""
    try:
        res = _run_group(model, backend, panel, horizon, level, origins, min_origins)
        return [(i, res, i) for i in range(panel.shape[0])]
    except (PortfolioError, np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
        if panel.shape[0] == 1:
            return [(0, f"{type(exc).__name__}: {exc}", 0)]
        log.warning("%s failed on a panel of %d symbols (%s); running each symbol alone", model.name,
                    panel.shape[0], exc)
    out: list[tuple[int, _GroupResult | str, int]] = []
    for i in range(panel.shape[0]):
        _, single, _ = _run_isolated(model, backend, panel[i : i + 1], horizon, level, origins, min_origins)[0]
        out.append((i, single, 0))
    return out


def future_bars(symbol: str, asof: Any, steps: int, timeframe: str, exchange: str) -> list[Any]:
    """The next ``steps`` bar timestamps of ``symbol``'s calendar after ``asof`` (UTC)."""
    import pandas as pd

    from airflow_provider_portfolio.market.calendar import calendar_for_symbol

    calendar = calendar_for_symbol(symbol, exchange)
    start = pd.Timestamp(asof).tz_convert("UTC")
    span = 2 * steps + 10
    while True:
        first, last = start.normalize().tz_localize(None), (start + pd.Timedelta(days=span)).tz_localize(None)
        index = calendar.bar_index(first, last, timeframe)
        later = index[index > start]
        if len(later) >= steps:
            return list(later[:steps])
        span *= 2


def forecast_universe(
    store: PortfolioStore,
    symbols: Sequence[str],
    spec: Model | str,
    *,
    run_id: str,
    timeframe: str = "1Day",
    history: int = 1000,
    horizon: int = 5,
    level: float = 0.9,
    origins: int = 10,
    min_origins: int = 3,
    exchange: str = DEFAULT_EXCHANGE,
    device: str | Backend | None = None,
) -> ForecastReport:
    """Forecast ``symbols`` with a model from the store's bars and write forecasts and evaluations.

    :param store: a migrated store.
    :param symbols: validated tickers.
    :param spec: the model: a registered name (default options) or a :class:`~.base.Model`
        (``registry.get_model(name, **options)``).
    :param run_id: the run the rows belong to (a rerun with the same id replaces them).
    :param timeframe: bar timeframe.
    :param history: bars per symbol used at most (the latest).
    :param horizon: bars ahead.
    :param level: nominal interval coverage.
    :param origins: rolling origins of the backtest.
    :param min_origins: fewer origins than this labels a symbol ``insufficient_data``.
    :param exchange: calendar of equities, for ``target_ts``.
    :param device: ``auto``, ``cuda``, ``cpu`` or a :class:`~.backend.Backend`; ``None``: the model's
        pinned backend, else :data:`.backend.DEFAULT_DEVICE` (this function reads no configuration).
    :raises InvalidInputError: for bad parameters or an unknown model (nothing is read or written).
    :raises DeviceUnavailableError: for ``device="cuda"`` without a GPU (nothing is read or written).
    :raises StoreError: when the store cannot be read or written (nothing is written). A corrupt stored
        row fails its symbol only: it is reported in :attr:`ForecastReport.failed`.
    """
    import pandas as pd

    began = time.perf_counter()
    horizon, level, history, origins = _check_common(horizon, level, history, origins)
    if not run_id:
        raise InvalidInputError("run_id must be a non-empty string")
    model, backend = resolve(spec, device)
    backend_name, device_name = _placement(model, backend)
    target = model.target
    symbols = list(dict.fromkeys(symbols))
    report = ForecastReport(model=model.name, run_id=run_id, backend=backend_name, device=device_name)
    # a symbol with a corrupt stored row (a close or a timestamp stored as text) fails alone
    bars, corrupt = store.read_bars_checked(symbols, timeframe)
    for symbol, why in corrupt.items():
        report.failed[symbol] = f"unreadable bars in the store: {why}"
        log.warning("%s: %s not forecast: %s", model.name, symbol, why)
    if corrupt:
        symbols = [s for s in symbols if s not in corrupt]
    # a return series is one bar shorter than its closes
    need = model.min_points + (1 if kind(model) == "variance" else 0)
    usable = _series(bars, symbols, history, need, report.failed)

    by_length: dict[int, list[str]] = {}
    for symbol, (closes, _) in usable.items():
        by_length.setdefault(len(closes), []).append(symbol)

    forecast_rows: list[dict[str, Any]] = []
    evaluation_rows: list[dict[str, Any]] = []
    targets: dict[tuple[str, Any], list[Any]] = {}
    for length, names in sorted(by_length.items()):
        logs = np.log(np.stack([usable[s][0] for s in names]))
        panel = np.diff(logs, axis=1) if kind(model) == "variance" else logs
        log.info("%s: %d symbol(s) x %d bars on %s", model.name, len(names), panel.shape[1], device_name)
        for k, result, i in _run_isolated(model, backend, panel, horizon, level, origins, min_origins):
            symbol = names[k]
            if isinstance(result, str):
                report.failed[symbol] = result
                continue
            if i in result.errors:
                report.failed[symbol] = result.errors[i]
                continue
            fc, ev = result.forecast, result.evaluation
            if not (np.all(np.isfinite(fc.point[i])) and np.all(np.isfinite(fc.lower[i]))
                    and np.all(np.isfinite(fc.upper[i]))):
                report.failed[symbol] = "the model produced a non-finite forecast"
                continue
            asof = usable[symbol][1]
            calendar_key = (symbol if is_crypto(symbol) else "", asof)  # equities share one calendar
            if calendar_key not in targets:
                targets[calendar_key] = future_bars(symbol, asof, horizon, timeframe, exchange)
            for step in range(horizon):
                forecast_rows.append({
                    "run_id": run_id, "model": model.name, "symbol": symbol, "timeframe": timeframe,
                    "step": step + 1, "asof": asof, "target_ts": targets[calendar_key][step],
                    "target": target, "point": float(fc.point[i, step]), "lower": float(fc.lower[i, step]),
                    "upper": float(fc.upper[i, step]), "level": level,
                    "variance": None if result.variance is None else float(result.variance[i, step]),
                    "backend": backend_name, "device": device_name,
                })
            evaluation_rows.append({
                "run_id": run_id, "model": model.name, "symbol": symbol, "timeframe": timeframe, "asof": asof,
                "horizon": horizon, "origins": ev.origins, "rmse": _num(ev.rmse[i]), "mae": _num(ev.mae[i]),
                "directional_accuracy": _num(ev.directional_accuracy[i]), "coverage": _num(ev.coverage[i]),
                "baseline": ev.baseline, "baseline_rmse": _num(ev.baseline_rmse[i]), "skill": _num(ev.skill[i]),
                "label": ev.labels[i], "healthy": ev.labels[i] == "healthy", "weight": None,
                "backend": backend_name, "device": device_name,
            })
            report.forecast.append(symbol)
            report.labels[symbol] = ev.labels[i]

    if forecast_rows:
        report.forecast_rows, report.evaluation_rows = store.write_forecasts(
            pd.DataFrame(forecast_rows), pd.DataFrame(evaluation_rows))
    report.seconds = time.perf_counter() - began
    return report


def _num(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def ensemble_universe(
    store: PortfolioStore,
    symbols: Sequence[str],
    models: Sequence[str],
    *,
    run_id: str,
    timeframe: str = "1Day",
) -> ForecastReport:
    """Combine this run's stored level forecasts of ``models`` into model ``ensemble``.

    Per symbol, the weights are inverse backtest MSE over the models labelled ``healthy`` for it
    (:func:`.evaluation.ensemble_weights`); point and band are the weighted averages. A symbol with no
    healthy model gets an ``unhealthy`` evaluation row and no ensemble forecast, so nothing downstream
    trades on it. The ensemble is not backtested itself: its evaluation row carries the label and the
    fewest origins of its members; its metrics are NULL. Computed for all symbols at once.

    :param models: model names already written for ``run_id`` (``log_close`` targets only): registered
        names (:func:`.registry.models`), or names of models stored by another registration.
    :raises InvalidInputError: when ``models`` is empty or holds a variance model.
    """
    import pandas as pd

    began = time.perf_counter()
    models = list(dict.fromkeys(models))
    if not models or "ensemble" in models:
        raise InvalidInputError(f"models must name at least one component model (not 'ensemble'), got {models!r}")
    returns = [m for m in models if target_of(m) == "log_return"]  # known to the registry: refused before reading
    if returns:
        raise InvalidInputError(f"the ensemble combines price-level models only; {returns} forecast returns")
    report = ForecastReport(model="ensemble", run_id=run_id, backend="numpy", device="cpu")
    fcs = store.read_forecasts(list(symbols), model=models, timeframe=timeframe, run_id=run_id)
    evs = store.read_evaluations(list(symbols), model=models, timeframe=timeframe, run_id=run_id)
    if len(fcs) and (fcs["target"] != "log_close").any():
        bad = sorted(set(fcs.loc[fcs["target"] != "log_close", "model"]))
        raise InvalidInputError(f"the ensemble combines price-level models only; {bad} forecast returns")
    wanted = list(dict.fromkeys(symbols))
    # (models, symbols) grids of the components' evaluations; a model counts for a symbol only when
    # both its evaluation and its forecast are stored.
    grid = pd.MultiIndex.from_product([models, wanted], names=["model", "symbol"])
    per_pair = evs.set_index(["model", "symbol"]).reindex(grid)
    forecast_pairs = pd.Index(pd.MultiIndex.from_frame(fcs[["model", "symbol"]].drop_duplicates()))
    present = (per_pair["label"].notna().to_numpy() & grid.isin(forecast_pairs)).reshape(len(models), len(wanted))
    rmse = per_pair["rmse"].to_numpy(dtype=np.float64).reshape(present.shape)
    healthy = per_pair["healthy"].fillna(False).to_numpy(dtype=bool).reshape(present.shape) & present
    weights = ensemble_weights(rmse, healthy)
    origins = np.where(present, per_pair["origins"].to_numpy(dtype=np.float64).reshape(present.shape), np.inf)

    used = pd.DataFrame({"model": np.repeat(models, len(wanted)), "symbol": np.tile(wanted, len(models)),
                         "weight": weights.ravel()})
    used = used[used["weight"] > 0]
    parts = fcs.merge(used, on=["model", "symbol"])
    for column in ("point", "lower", "upper"):
        parts[column] = parts[column] * parts["weight"]
    combined = parts.groupby(["symbol", "step"], sort=True).agg(
        point=("point", "sum"), lower=("lower", "sum"), upper=("upper", "sum"), asof=("asof", "first"),
        target_ts=("target_ts", "first"), level=("level", "first")).reset_index()
    forecasts = combined.assign(run_id=run_id, model="ensemble", timeframe=timeframe, target="log_close",
                                variance=None, backend="numpy", device="cpu")

    stats = fcs.groupby("symbol").agg(asof=("asof", "max"), horizon=("step", "max"))
    evaluation_rows: list[dict[str, Any]] = []
    for j, symbol in enumerate(wanted):
        if not present[:, j].any():
            report.failed[symbol] = f"no forecast of {models} in run {run_id!r}"
            continue
        label = "healthy" if weights[:, j].any() else "unhealthy"
        evaluation_rows.append({
            "run_id": run_id, "model": "ensemble", "symbol": symbol, "timeframe": timeframe,
            "asof": stats.loc[symbol, "asof"], "horizon": int(stats.loc[symbol, "horizon"]),
            "origins": int(origins[:, j].min()), "rmse": None, "mae": None, "directional_accuracy": None,
            "coverage": None, "baseline": "last_value", "baseline_rmse": None, "skill": None, "label": label,
            "healthy": label == "healthy", "weight": None, "backend": "numpy", "device": "cpu",
        })
        report.forecast.append(symbol)
        report.labels[symbol] = label
    if evaluation_rows:
        report.forecast_rows, report.evaluation_rows = store.write_forecasts(
            forecasts if len(forecasts) else None, pd.DataFrame(evaluation_rows))
    report.seconds = time.perf_counter() - began
    return report
