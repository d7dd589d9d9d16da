"""The array backend of the forecasting code: CuPy on a GPU, NumPy otherwise.

Forecasting functions are written once against an array module ``xp`` (``numpy`` or ``cupy``); this
module decides which one a job gets, moves arrays between host and device, and runs a function over a
(symbols, time) panel in row chunks that shrink when the GPU runs out of memory.

Choosing the device (:func:`get_backend`):

- ``"cpu"``: NumPy.
- ``"cuda"``: CuPy, required. When CuPy is not installed or no GPU is visible,
  :class:`DeviceUnavailableError` says which.
- ``"auto"``: CuPy when it is importable and a GPU is visible, else NumPy.
- ``None``: the default, :data:`DEFAULT_DEVICE` (``"auto"``). This module never reads configuration:
  the operators read ``[portfolio] device`` and pass it in, so the forecasting code stays plain Python.

The choice is logged once per process (per distinct request and outcome). Importing this module never
imports CuPy: CuPy is probed with :func:`importlib.util.find_spec` and imported only when asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from airflow_provider_portfolio.exceptions import InvalidInputError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu")
#: What ``device=None`` means.
DEFAULT_DEVICE = "auto"


class DeviceUnavailableError(InvalidInputError):
    """``device='cuda'`` was asked for, but CuPy is not installed or no GPU is visible."""


class DeviceFallbackWarning(RuntimeWarning):
    """The GPU ran out of memory even on one row; the remaining rows were computed with NumPy."""


@dataclass(frozen=True)
class Backend:
    """An array backend.

    :param name: ``"numpy"`` or ``"cupy"``.
    :param xp: the array module itself.
    :param device: a human description of where arrays live (``"cpu"``, ``"cuda:0 (NVIDIA H100)"``).
    """

    name: str
    xp: ModuleType
    device: str

    @property
    def is_gpu(self) -> bool:
        """Whether arrays of this backend live on a GPU."""
        return self.name == "cupy"


NUMPY = Backend(name="numpy", xp=np, device="cpu")

_LOGGED: set[tuple[str, str, str]] = set()
_LOG_LOCK = threading.Lock()
_PROBE: list[tuple[ModuleType | None, str, str]] = []  # at most one entry: the cached probe result
_PROBE_LOCK = threading.Lock()


def _probe_cupy() -> tuple[ModuleType | None, str, str]:
    """``(cupy module or None, device description, why not)``, probed once per process."""
    with _PROBE_LOCK:
        if not _PROBE:
            _PROBE.append(_probe_cupy_uncached())
        return _PROBE[0]


def _probe_cupy_uncached() -> tuple[ModuleType | None, str, str]:
    if importlib.util.find_spec("cupy") is None:
        return None, "", "CuPy is not installed"
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:  # a broken CUDA install raises all sorts of things on import
        return None, "", f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return None, "", f"no GPU visible ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "", "no GPU visible (CUDA reports 0 devices)"
    device = "cuda:0"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props.get("name", b"")
        name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        if name:
            device = f"cuda:0 ({name})"
    except Exception:  # the description is cosmetic
        pass
    return cupy, device, ""


def _log_choice(requested: str, backend: Backend, why: str) -> None:
    key = (requested, backend.name, backend.device)
    with _LOG_LOCK:
        if key in _LOGGED:
            return
        _LOGGED.add(key)
    if why:
        log.info("Forecast device %r: using %s on %s (%s)", requested, backend.name, backend.device, why)
    else:
        log.info("Forecast device %r: using %s on %s", requested, backend.name, backend.device)


def get_backend(device: str | None = None) -> Backend:
    """The array backend for ``device``.

    :param device: ``"auto"``, ``"cuda"``, ``"cpu"`` (case-insensitive), or ``None`` for
        :data:`DEFAULT_DEVICE`.
    :raises DeviceUnavailableError: for ``"cuda"`` when CuPy is not installed or no GPU is visible.
    :raises InvalidInputError: for any other device name.
    """
    raw = DEFAULT_DEVICE if device is None else device
    if not isinstance(raw, str):
        raise InvalidInputError(f"device must be one of {DEVICES}, got {raw!r}")
    requested = raw.strip().lower()
    if requested not in DEVICES:
        raise InvalidInputError(f"device must be one of {DEVICES}, got {raw!r}")
    if requested == "cpu":
        _log_choice(requested, NUMPY, "")
        return NUMPY
    cupy, description, why_not = _probe_cupy()
    if cupy is None:
        if requested == "cuda":
            raise DeviceUnavailableError(f"device='cuda' but {why_not}; use device='auto' or 'cpu'")
        _log_choice(requested, NUMPY, why_not)
        return NUMPY
    backend = Backend(name="cupy", xp=cupy, device=description)
    _log_choice(requested, backend, "")
    return backend


def _is_device_array(array: Any) -> bool:
    """A CuPy array, or an ndarray subclass standing for device memory (it has CuPy's ``get()``)."""
    if isinstance(array, np.ndarray):
        return type(array) is not np.ndarray and callable(getattr(array, "get", None))
    return type(array).__module__.split(".")[0] == "cupy" and hasattr(array, "get")


def to_numpy(array: Any) -> np.ndarray:
    """``array`` as a NumPy array on the host (a CuPy array is copied off the device).

    This is the one explicit device-to-host transfer of the forecasting code: nothing in ``forecast/``
    calls ``float()``, ``bool()``, ``int()``, ``.item()`` or ``numpy.asarray`` on a device array.
    """
    if _is_device_array(array):
        return np.asarray(array.get())
    return np.asarray(array)


#: Alias of :func:`to_numpy`.
to_host = to_numpy


def asarray(backend: Backend, array: Any, dtype: Any = np.float64) -> Any:
    """``array`` as an array of ``backend`` with ``dtype`` (a copy only where needed)."""
    if backend.xp is np:
        return np.asarray(to_numpy(array), dtype=dtype)
    return backend.xp.asarray(array, dtype=dtype)


@contextlib.contextmanager
def limit_blas_threads(n: int = 1) -> Iterator[None]:
    """Limit BLAS/OpenMP threads to ``n`` inside the block (one process per core beats BLAS threading).

    Uses ``threadpoolctl`` when it is importable. Without it this is a documented no-op: it sets
    nothing (not even environment variables, which BLAS reads only at load time) and logs that once.

    :raises InvalidInputError: when ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        key = ("limit_blas_threads", "no-op", "")
        with _LOG_LOCK:
            first = key not in _LOGGED
            _LOGGED.add(key)
        if first:
            log.info("threadpoolctl is not installed: BLAS thread limits are not applied")
        yield
        return
    with threadpool_limits(limits=n):
        yield


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a GPU out-of-memory error, recognised by class name (never imports CuPy).

    Matches ``cupy.cuda.memory.OutOfMemoryError`` (and any class named ``OutOfMemoryError`` in its
    ancestry), and CUDA runtime errors reporting ``cudaErrorMemoryAllocation``.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "OutOfMemoryError" in names:
        return True
    return "CUDARuntimeError" in names and "cudaErrorMemoryAllocation" in str(exc)


def _free_device_memory(backend: Backend) -> None:
    try:
        backend.xp.get_default_memory_pool().free_all_blocks()
    except Exception:  # NumPy, fakes, or a pool that cannot be freed: nothing to do
        pass


def _concatenate(results: list[Any]) -> Any:
    first = results[0]
    if isinstance(first, tuple):
        return tuple(np.concatenate([to_numpy(r[i]) for r in results], axis=0) for i in range(len(first)))
    return np.concatenate([to_numpy(r) for r in results], axis=0)


def run_chunked(
    fn: Callable[[ModuleType, Any], Any],
    panel: Any,
    backend: Backend,
    chunk: int | None = None,
) -> Any:
    """Apply ``fn(xp, rows)`` over row chunks of a (symbols, time) panel and join the results.

    Each chunk is moved to ``backend`` as float64 and passed to ``fn`` with the backend's array module;
    ``fn`` returns an array (or a tuple of arrays) whose first axis is the chunk's rows. Results are
    copied to the host and concatenated along axis 0, so the answer is always NumPy.

    On a GPU out-of-memory error (:func:`is_out_of_memory`) the chunk size is halved and the same rows
    retried, down to one row; later chunks keep the smaller size. When even one row does not fit, the
    remaining rows are computed with NumPy (a :class:`DeviceFallbackWarning` says so) in chunks of the
    original size. Rows are never skipped: the result is complete or an exception propagates. Any other
    exception, and an out-of-memory error on the NumPy backend at one row, propagates unchanged.

    :param fn: ``fn(xp, rows) -> array | tuple[array, ...]``.
    :param panel: a 2-D array, one row per symbol.
    :param backend: where to compute (see :func:`get_backend`).
    :param chunk: rows per call; ``None`` for all rows at once.
    :raises InvalidInputError: when ``panel`` is not 2-D or ``chunk`` is not a positive integer.
    """
    host = to_numpy(panel)
    if host.ndim != 2:
        raise InvalidInputError(f"panel must be 2-D (symbols, time), got shape {host.shape}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise InvalidInputError(f"chunk must be a positive integer or None, got {chunk!r}")
    rows = host.shape[0]
    if rows == 0:
        return _concatenate([fn(backend.xp, asarray(backend, host))])
    initial = rows if chunk is None else min(chunk, rows)
    size = initial
    results: list[Any] = []
    start = 0
    while start < rows:
        part = host[start : start + size]
        try:
            out = fn(backend.xp, asarray(backend, part))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _free_device_memory(backend)
            if size > 1:
                new = max(1, size // 2)
                log.warning("Out of memory on %s with %d row(s); retrying with %d", backend.device, size, new)
                size = new
                continue
            if backend.xp is np:
                raise
            warnings.warn(
                f"out of memory on {backend.device} even with one row; computing rows {start}..{rows - 1} "
                "with NumPy",
                DeviceFallbackWarning,
                stacklevel=2,
            )
            for lo in range(start, rows, initial):
                results.append(fn(np, np.asarray(host[lo : lo + initial], dtype=np.float64)))
            break
        results.append(out)
        start += part.shape[0]
    return _concatenate(results)
