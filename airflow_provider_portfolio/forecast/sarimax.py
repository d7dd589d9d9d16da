"""SARIMAX forecasts per symbol with statsmodels, on the CPU, in parallel worker processes for a batch.

:func:`sarimax_fit_forecast` fits one ``statsmodels.tsa.statespace.sarimax.SARIMAX`` per row of a
(symbols, time) panel and forecasts ``horizon`` steps: ``get_forecast(horizon).predicted_mean`` is the
point and ``conf_int(alpha=1 - level)`` the interval (statsmodels' Gaussian state-space intervals, which
grow with the horizon). A state-space fit is a sequential Python/Cython loop with no batched form, so
the batch is parallel across processes, not vectorised.

Choices:

- **Lazy statsmodels.** Importing statsmodels costs over a second, so it is imported inside functions
  only; importing this module imports NumPy and nothing heavier.
- **Per-row failures stay per row.** A row with a NaN or infinite value, a constant row, a row too
  short for the order, a statsmodels exception, or a non-finite result (parameters, log-likelihood,
  point or interval) gets a one-line reason in :attr:`SarimaxResult.errors` and NaN forecasts; the
  other rows still forecast. Only whole-call mistakes (not 2-D, no row, bad horizon, level, order,
  trend, ``start_params``, ``processes``...) raise :class:`InvalidInputError`.
- **Minimum length.** A row needs ``T >= max(10, 3 * (p + q + P*s + Q*s + d + D*s + 1))`` points
  (:func:`sarimax_min_points`): about three observations per state and differencing lag, so that the
  diffuse start-up of the Kalman filter does not eat the sample.
- **Convergence.** A fit whose optimizer did not converge (``mle_retvals['converged']`` False, or a
  statsmodels ``ConvergenceWarning``) is kept and flagged in :attr:`SarimaxResult.converged`; other
  warnings of the fit are silenced (``warnings.catch_warnings`` around each fit; note that this
  swaps the process-wide warning filters, a known Python limitation when other threads warn at the
  same time). Started exactly at an optimum (the same data refitted from its own parameters),
  L-BFGS may stop at iteration 0 on a failed line search, which statsmodels reports as not
  converged: the flag is kept as statsmodels says, :attr:`SarimaxResult.iterations` shows the 0.
- **Warm starts.** ``start_params[i]`` (for example :attr:`SarimaxResult.params` of yesterday's fit)
  is passed to ``fit``; when fitting from it raises or gives a non-finite result, the row is refitted
  once from statsmodels' default start, and a WARNING says which rows were.
- **Processes.** ``processes=None`` uses ``min(usable CPUs, 8, rows to fit // 50)``, at least 1
  (:data:`MIN_ROWS_PER_PROCESS`: a pool costs more than it saves on a small batch); ``processes=1`` fits
  in-process with no pool. Otherwise a :class:`~concurrent.futures.ProcessPoolExecutor` on the
  ``"forkserver"`` start method (``"spawn"`` where there is none): never ``fork`` (unsafe in a
  threaded Airflow worker), and cheaper than spawn since children fork from a small single-threaded
  server. The fork server is asked (once per process, before it starts) to preload statsmodels, so
  that later pools of the same process start in well under a second; each worker also imports it
  in its initializer (a no-op when preloaded). Each worker pins BLAS to ``blas_threads`` threads
  (:func:`~airflow_provider_portfolio.forecast.backend.limit_blas_threads`): one process per core
  beats BLAS threading on these tiny matrices (measured: 2 BLAS threads made one process 1.5 to 5
  times slower). Rows go in contiguous chunks (about
  :data:`CHUNKS_PER_PROCESS` per process: small pickles, some load balancing) and come back in row
  order, so the result is the same numbers whatever ``processes`` is. As with any spawn or
  forkserver pool, a script that calls this with ``processes > 1`` needs the
  ``if __name__ == "__main__":`` guard. In a daemonic process (which may not have children) the
  rows are fitted in-process, with a WARNING.
- **No silent partial results.** When a worker process dies (``BrokenProcessPool``) or a chunk fails
  outside the per-row handling, :class:`PortfolioError` says how many rows were lost; nothing is
  returned.

One INFO line per call logs the rows, processes, failures and time.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, overload

import numpy as np

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.forecast.backend import limit_blas_threads
from airflow_provider_portfolio.forecast.baselines import Forecast, check_horizon, check_panel, normal_quantile

log = logging.getLogger(__name__)

#: Most worker processes ``processes=None`` starts.
MAX_PROCESSES = 8
#: ``processes=None`` starts a worker only per this many rows to fit: a pool costs about 0.5 s to start
#: in a plain process and several seconds in an Airflow task process, a fit about 0.1 s, so a small batch
#: is fitted faster in-process.
MIN_ROWS_PER_PROCESS = 50
#: Row chunks per worker process.
CHUNKS_PER_PROCESS = 4
#: Accepted ``trend`` values (statsmodels' polynomial lists are not accepted).
TRENDS = (None, "n", "c", "t", "ct")
_TREND_TERMS = {None: 0, "n": 0, "c": 1, "t": 1, "ct": 2}
#: Modules the fork server imports before forking workers (see :func:`_preload_in_forkserver`).
FORKSERVER_PRELOAD = ("statsmodels.tsa.statespace.sarimax",)
_MAX_REASON = 300
_PRELOAD_LOCK = threading.Lock()
_PRELOAD_ASKED = False


@dataclass(frozen=True, eq=False)
class SarimaxResult:
    """Forecasts and fit diagnostics of :func:`sarimax_fit_forecast`, one row per symbol.

    :param forecast: model ``"sarimax"``, NumPy arrays of shape (symbols, horizon); NaN rows where the
        fit failed.
    :param params: fitted parameters per row (statsmodels' order: trend, AR, MA, seasonal AR, seasonal
        MA, sigma2), ``None`` where the fit failed; reusable as ``start_params``.
    :param errors: row index -> one-line reason, for the rows that failed.
    :param converged: shape (symbols,), bool; False for a failed row and for a kept, non-converged fit.
    :param processes: worker processes used (1: in-process).
    :param iterations: shape (symbols,), int; optimizer iterations of the kept fit (statsmodels'
        ``mle_retvals['iterations']``), -1 where the fit failed or statsmodels did not say.
    """

    forecast: Forecast
    params: list[np.ndarray | None]
    errors: dict[int, str]
    converged: np.ndarray
    processes: int
    iterations: np.ndarray | None = None


class _Config(NamedTuple):
    order: tuple[int, int, int]
    seasonal_order: tuple[int, int, int, int]
    trend: str | None
    horizon: int
    alpha: float
    maxiter: int


class _Outcome(NamedTuple):
    """One row's result, as a worker sends it back."""

    point: np.ndarray | None
    lower: np.ndarray | None
    upper: np.ndarray | None
    params: np.ndarray | None
    converged: bool
    iterations: int
    error: str | None
    note: str | None  # why the fit from the given start_params was dropped, when it was


class _NonFiniteFit(Exception):
    """A fit that ran but produced NaN or infinite numbers."""


def sarimax_min_points(order: Sequence[int], seasonal_order: Sequence[int] = (0, 0, 0, 0)) -> int:
    """Fewest points a row needs: ``max(10, 3 * (p + q + P*s + Q*s + d + D*s + 1))``.

    :param order: ``(p, d, q)``.
    :param seasonal_order: ``(P, D, Q, s)``.
    """
    p, d, q = (int(x) for x in order)
    big_p, big_d, big_q, s = (int(x) for x in seasonal_order)
    return max(10, 3 * (p + q + big_p * s + big_q * s + d + big_d * s + 1))


def _param_count(order: tuple[int, ...], seasonal_order: tuple[int, ...], trend: str | None) -> int:
    """statsmodels' parameter count: trend terms + p + q + P + Q + sigma2 (no exog, no measurement error)."""
    p, _, q = order
    big_p, _, big_q, _ = seasonal_order
    return _TREND_TERMS[trend] + p + q + big_p + big_q + 1


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


@overload
def _check_order(value: Any, size: Literal[3], name: str) -> tuple[int, int, int]: ...
@overload
def _check_order(value: Any, size: Literal[4], name: str) -> tuple[int, int, int, int]: ...
def _check_order(value: Any, size: int, name: str) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != size:
        raise InvalidInputError(f"{name} must be a tuple of {size} non-negative integers, got {value!r}")
    if not all(_is_int(x) and x >= 0 for x in value):
        raise InvalidInputError(f"{name} must be a tuple of {size} non-negative integers, got {value!r}")
    return tuple(int(x) for x in value)


def _check_positive(value: Any, name: str) -> int:
    if not _is_int(value) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_start_params(start_params: Any, rows: int, count: int, model: str) -> list[np.ndarray | None]:
    if start_params is None:
        return [None] * rows
    if isinstance(start_params, str | bytes | Mapping) or not hasattr(start_params, "__len__"):
        raise InvalidInputError(f"start_params must be a sequence with one entry per row, got {start_params!r}")
    starts = list(start_params)
    if len(starts) != rows:
        raise InvalidInputError(f"start_params has {len(starts)} entries; values has {rows} rows")
    checked: list[np.ndarray | None] = []
    for i, start in enumerate(starts):
        if start is None:
            checked.append(None)
            continue
        try:
            vector = np.array(start, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"start_params[{i}] must be a numeric vector: {exc}") from exc
        if vector.shape != (count,):
            raise InvalidInputError(f"start_params[{i}] has shape {vector.shape}; {model} has {count} parameters")
        checked.append(vector)
    return checked


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _NonFiniteFit):
        return _one_line(str(exc))
    return _one_line(f"{type(exc).__name__}: {exc}")


def _precheck(row: np.ndarray, minimum: int, model: str) -> str | None:
    """Why ``row`` cannot be fitted, or None."""
    finite = np.isfinite(row)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(np.argmin(finite))
        return f"{bad} NaN/inf value(s) of {row.size} (first at column {first}); SARIMAX needs a finite series"
    if row.size < minimum:
        return (
            f"too few points for {model}: {row.size} < {minimum} "
            "(needs T >= max(10, 3 * (p + q + P*s + Q*s + d + D*s + 1)))"
        )
    if row.min() == row.max():
        return f"constant series (every value is {float(row[0])!r}): nothing to fit"
    return None


def _fit_attempt(
    y: np.ndarray, start: np.ndarray | None, cfg: _Config
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool, int]:
    """One statsmodels fit and forecast: ``(point, lower, upper, params, converged, iterations)``.

    :raises _NonFiniteFit: when the fit or forecast holds NaN or inf; statsmodels' exceptions propagate.
    """
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = SARIMAX(y, order=cfg.order, seasonal_order=cfg.seasonal_order, trend=cfg.trend)
        fit = model.fit(disp=False, maxiter=cfg.maxiter, start_params=start)
        params = np.array(fit.params, dtype=np.float64)
        llf = float(fit.llf)
        if not (np.isfinite(params).all() and math.isfinite(llf)):
            raise _NonFiniteFit(f"non-finite fit (log-likelihood {llf}, parameters {params.tolist()})")
        prediction = fit.get_forecast(cfg.horizon)
        point = np.array(prediction.predicted_mean, dtype=np.float64).reshape(cfg.horizon)
        bounds = np.array(prediction.conf_int(alpha=cfg.alpha), dtype=np.float64).reshape(cfg.horizon, 2)
    if not (np.isfinite(point).all() and np.isfinite(bounds).all()):
        raise _NonFiniteFit("forecast is not finite (NaN or inf in the point or the interval)")
    retvals = getattr(fit, "mle_retvals", None) or {}
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    converged = bool(retvals.get("converged", True)) and not warned
    iterations = int(retvals.get("iterations", -1))
    return point, bounds[:, 0].copy(), bounds[:, 1].copy(), params, converged, iterations


def _fit_row(y: np.ndarray, start: np.ndarray | None, cfg: _Config) -> _Outcome:
    """Fit one row; never raises for the row's own problems (they come back as ``error``)."""
    note = None
    if start is not None:
        try:
            return _Outcome(*_fit_attempt(y, start, cfg), error=None, note=None)
        except Exception as exc:  # statsmodels raises many types; any of them means "try the default start"
            note = _reason(exc)
    try:
        return _Outcome(*_fit_attempt(y, None, cfg), error=None, note=note)
    except _NonFiniteFit as exc:
        error = _reason(exc)
    except Exception as exc:
        error = _one_line(f"statsmodels fit failed: {_reason(exc)}")
    if note is not None:
        error = _one_line(f"{error} (the given start_params failed too)")
    return _Outcome(None, None, None, None, False, -1, error, note)


def _fit_chunk(task: tuple[np.ndarray, list[np.ndarray | None], _Config, int]) -> list[_Outcome]:
    """Worker entry point: fit contiguous rows ``(rows, starts, config, blas_threads)``, in order."""
    rows, starts, cfg, blas_threads = task
    with limit_blas_threads(blas_threads):
        return [_fit_row(rows[k], starts[k], cfg) for k in range(rows.shape[0])]


def _init_worker() -> None:
    """Worker initializer: import statsmodels once per process, before the first chunk."""
    import statsmodels.tools.sm_exceptions  # noqa: F401
    import statsmodels.tsa.statespace.sarimax  # noqa: F401


def _start_method() -> str:
    """``"forkserver"`` where the platform has it, else ``"spawn"``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _preload_in_forkserver() -> None:
    """Ask this process's fork server, once, to import statsmodels before it forks workers.

    Adds :data:`FORKSERVER_PRELOAD` to the fork server's preload list (keeping what is there, by
    default ``__main__``). It only counts when the server has not started yet in this process; then
    the import is paid once per process instead of once per worker per call. Failing to import a
    preload module is ignored by the server (workers then import it in :func:`_init_worker`).
    """
    global _PRELOAD_ASKED
    with _PRELOAD_LOCK:
        if _PRELOAD_ASKED:
            return
        _PRELOAD_ASKED = True
    try:
        from multiprocessing import forkserver

        current = list(getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", None) or ["__main__"])
        extra = [name for name in FORKSERVER_PRELOAD if name not in current]
        if extra:
            forkserver.set_forkserver_preload(current + extra)
    except Exception as exc:  # an optimisation only: never fail a forecast over it
        log.debug("SARIMAX: could not set the fork server preload list (%s)", exc)


def _make_executor(processes: int) -> Executor:
    """A process pool of ``processes`` workers on :func:`_start_method` (a seam for tests)."""
    method = _start_method()
    if method == "forkserver":
        _preload_in_forkserver()
    context = multiprocessing.get_context(method)
    return ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_init_worker)


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if counter is not None:
        return counter() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _run_pool(
    y: np.ndarray,
    indices: np.ndarray,
    starts: list[np.ndarray | None],
    cfg: _Config,
    blas_threads: int,
    processes: int,
) -> list[_Outcome]:
    """Fit ``y[indices]`` in a process pool; outcomes in the order of ``indices``.

    :raises PortfolioError: when a worker died or a chunk failed: no partial result.
    """
    parts = np.array_split(np.arange(indices.size), min(indices.size, CHUNKS_PER_PROCESS * processes))
    outcomes: list[_Outcome | None] = [None] * indices.size
    lost = 0
    first: BaseException | None = None
    executor = _make_executor(processes)
    try:
        futures = {}
        for part in parts:
            rows = indices[part]
            task = (y[rows], [starts[int(i)] for i in rows], cfg, blas_threads)
            futures[executor.submit(_fit_chunk, task)] = part
        for future in as_completed(futures):
            part = futures[future]
            try:
                chunk = future.result()
                if len(chunk) != part.size:
                    raise PortfolioError(f"a worker returned {len(chunk)} result(s) for {part.size} row(s)")
            except Exception as exc:  # a dead worker, or a chunk failing outside the per-row handling
                lost += int(part.size)
                first = first or exc
                continue
            for k, outcome in zip(part, chunk, strict=True):
                outcomes[int(k)] = outcome
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    if lost:
        assert first is not None  # every lost chunk recorded its exception
        what = "a worker process died" if isinstance(first, BrokenProcessPool) else "a worker chunk failed"
        raise PortfolioError(
            f"SARIMAX: {what} ({_reason(first)}); {lost} of {indices.size} row(s) lost, no partial result returned"
        ) from first
    return outcomes  # type: ignore[return-value]  # every slot was filled, or PortfolioError was raised


def sarimax_fit_forecast(
    values: Any,
    horizon: int,
    *,
    order: Sequence[int] = (1, 0, 1),
    seasonal_order: Sequence[int] = (0, 0, 0, 0),
    trend: str | None = "c",
    level: float = 0.9,
    start_params: Sequence[np.ndarray | None] | None = None,
    processes: int | None = None,
    blas_threads: int = 1,
    maxiter: int = 50,
) -> SarimaxResult:
    """Fit ``SARIMAX(order, seasonal_order, trend)`` to each row of ``values`` and forecast ``horizon`` steps.

    :param values: (symbols, T) floats (a 2-D array, or a list of rows of equal length), levels such as
        log prices. Rows with NaN/inf, constant rows and rows shorter than :func:`sarimax_min_points`
        fail alone (see :attr:`SarimaxResult.errors`).
    :param horizon: steps ahead, a positive integer.
    :param order: ``(p, d, q)``, non-negative integers.
    :param seasonal_order: ``(P, D, Q, s)``; ``s`` is 0 without a seasonal part, else at least 2.
    :param trend: ``None``/``"n"`` (none), ``"c"`` (constant), ``"t"`` (linear), ``"ct"`` (both).
    :param level: nominal coverage of the central interval, in (0, 1).
    :param start_params: one entry per row: ``None`` (statsmodels' default start) or a parameter
        vector in statsmodels' order (e.g. a previous :attr:`SarimaxResult.params` entry). A vector
        that fails is dropped for the default start (logged).
    :param processes: worker processes; ``None`` for ``min(usable CPUs, 8, rows to fit // 50)`` (at
        least 1), 1 for in-process. Never more than the rows to fit.
    :param blas_threads: BLAS threads per fitting process.
    :param maxiter: optimizer iterations per fit.
    :raises InvalidInputError: for a whole-call mistake (see the module docstring).
    :raises PortfolioError: when a worker process died: rows were lost.
    """
    started = time.perf_counter()
    horizon = check_horizon(horizon)
    normal_quantile(level)
    y = check_panel(values, min_points=1, finite=False)  # NaN/inf rows fail alone, below
    order_t = _check_order(order, 3, "order")
    seasonal_t = _check_order(seasonal_order, 4, "seasonal_order")
    big_p, big_d, big_q, s = seasonal_t
    if s == 1 or (s == 0 and (big_p or big_d or big_q)):
        raise InvalidInputError(
            f"seasonal_order period s must be 0 (no seasonal part) or at least 2 with a seasonal part, got {seasonal_t}"
        )
    if not (trend is None or (isinstance(trend, str) and trend in _TREND_TERMS)):
        raise InvalidInputError(f"trend must be one of {TRENDS}, got {trend!r}")
    if processes is not None:
        processes = _check_positive(processes, "processes")
    blas_threads = _check_positive(blas_threads, "blas_threads")
    maxiter = _check_positive(maxiter, "maxiter")
    model = f"SARIMAX{order_t}x{seasonal_t} trend={trend!r}"
    rows = y.shape[0]
    starts = _check_start_params(start_params, rows, _param_count(order_t, seasonal_t, trend), model)
    cfg = _Config(order_t, seasonal_t, trend, horizon, 1.0 - float(level), maxiter)

    errors: dict[int, str] = {}
    minimum = sarimax_min_points(order_t, seasonal_t)
    for i in range(rows):
        reason = _precheck(y[i], minimum, model)
        if reason is not None:
            errors[i] = reason
    indices = np.array([i for i in range(rows) if i not in errors], dtype=np.intp)

    if processes is None:
        wanted = min(_usable_cpus(), MAX_PROCESSES, max(1, indices.size // MIN_ROWS_PER_PROCESS))
    else:
        wanted = processes
    used = max(1, min(wanted, indices.size))
    if used > 1 and multiprocessing.current_process().daemon:
        log.warning("SARIMAX: a daemonic process cannot start workers; fitting %d row(s) in-process", indices.size)
        used = 1
    if indices.size == 0:
        outcomes: list[_Outcome] = []
    elif used == 1:
        outcomes = _fit_chunk((y[indices], [starts[int(i)] for i in indices], cfg, blas_threads))
    else:
        outcomes = _run_pool(y, indices, starts, cfg, blas_threads, used)

    point = np.full((rows, horizon), np.nan)
    lower = np.full((rows, horizon), np.nan)
    upper = np.full((rows, horizon), np.nan)
    params: list[np.ndarray | None] = [None] * rows
    converged = np.zeros(rows, dtype=bool)
    iterations = np.full(rows, -1, dtype=np.int64)
    retried: list[str] = []
    for i, outcome in zip(indices.tolist(), outcomes, strict=True):
        if outcome.note is not None:
            retried.append(f"row {i} ({outcome.note})")
        if outcome.error is not None:
            errors[i] = outcome.error
            continue
        point[i], lower[i], upper[i] = outcome.point, outcome.lower, outcome.upper
        params[i] = outcome.params
        converged[i] = outcome.converged
        iterations[i] = outcome.iterations
    errors = dict(sorted(errors.items()))

    if retried:
        shown = "; ".join(retried[:5]) + (f"; +{len(retried) - 5} more" if len(retried) > 5 else "")
        log.warning(
            "SARIMAX: the given start_params failed for %d row(s), refitted from statsmodels' default start: %s",
            len(retried),
            shown,
        )
    log.info(
        "%s: %d row(s), %d fitted in %d process(es), %d failed, %d not converged, %.1fs",
        model,
        rows,
        indices.size,
        used,
        len(errors),
        int(rows - len(errors) - converged.sum()),
        time.perf_counter() - started,
    )
    forecast = Forecast(point=point, lower=lower, upper=upper, model="sarimax", level=float(level))
    return SarimaxResult(
        forecast=forecast, params=params, errors=errors, converged=converged, processes=used, iterations=iterations
    )
