"""Array backend: device choice, host/device moves, BLAS limits and chunked runs that survive GPU OOM."""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
import warnings

import numpy as np
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
from airflow_provider_portfolio.forecast import backend
from airflow_provider_portfolio.forecast.backend import (
    NUMPY,
    Backend,
    DeviceFallbackWarning,
    DeviceUnavailableError,
    asarray,
    get_backend,
    is_out_of_memory,
    limit_blas_threads,
    run_chunked,
    to_numpy,
)


class OutOfMemoryError(Exception):
    """Named like ``cupy.cuda.memory.OutOfMemoryError``: recognised by class name."""


def fake_gpu_module() -> types.ModuleType:
    """A module standing in for CuPy: every attribute is NumPy's, but it is not ``numpy`` itself."""
    fake = types.ModuleType("fakecupy")
    fake.__getattr__ = lambda name: getattr(np, name)  # PEP 562 module __getattr__
    return fake


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """Each test sees an empty log-once set and no cached CuPy probe."""
    monkeypatch.setattr(backend, "_LOGGED", set())
    monkeypatch.setattr(backend, "_PROBE", [])


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(backend, "_probe_cupy", lambda: (None, "", "CuPy is not installed"))


@pytest.fixture
def fake_gpu(monkeypatch):
    fake = fake_gpu_module()
    monkeypatch.setattr(backend, "_probe_cupy", lambda: (fake, "cuda:0 (Fake GPU)", ""))
    return fake


def test_cpu_is_numpy():
    chosen = get_backend("cpu")
    assert chosen == Backend(name="numpy", xp=np, device="cpu")
    assert chosen is NUMPY
    assert not chosen.is_gpu
    assert get_backend(" CPU ") is NUMPY


def test_auto_without_gpu_is_numpy(no_gpu):
    assert get_backend("auto") is NUMPY


def test_auto_with_gpu_is_cupy(fake_gpu):
    chosen = get_backend("auto")
    assert (chosen.name, chosen.xp, chosen.device, chosen.is_gpu) == ("cupy", fake_gpu, "cuda:0 (Fake GPU)", True)
    assert get_backend("cuda").xp is fake_gpu


def test_cuda_without_gpu_says_why(no_gpu):
    with pytest.raises(DeviceUnavailableError, match=r"device='cuda' but CuPy is not installed") as err:
        get_backend("cuda")
    assert isinstance(err.value, InvalidInputError)
    assert isinstance(err.value, PortfolioError)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_real_probe_without_cupy():
    assert backend._probe_cupy() == (None, "", "CuPy is not installed")
    assert get_backend("auto") is NUMPY
    with pytest.raises(DeviceUnavailableError, match="CuPy is not installed"):
        get_backend("cuda")
    assert "cupy" not in sys.modules


def test_probe_with_no_visible_gpu(monkeypatch):
    """CuPy importable, but the CUDA runtime fails: 'no GPU visible', never an exception from probing."""

    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(backend.importlib, "import_module", lambda name: fake)
    module, _, why = backend._probe_cupy_uncached()
    assert module is None
    assert why.startswith("no GPU visible") and "cudaErrorNoDevice" in why

    fake.cuda.runtime.getDeviceCount = lambda: 0
    assert backend._probe_cupy_uncached() == (None, "", "no GPU visible (CUDA reports 0 devices)")

    fake.cuda.runtime.getDeviceCount = lambda: 2
    fake.cuda.runtime.getDeviceProperties = lambda i: {"name": b"NVIDIA H100"}
    assert backend._probe_cupy_uncached() == (fake, "cuda:0 (NVIDIA H100)", "")


@pytest.mark.parametrize("device", ["gpu", "tpu", "", 0, "cuda:1"])
def test_unknown_device(device):
    with pytest.raises(InvalidInputError, match="device must be one of"):
        get_backend(device)


def test_none_is_auto_and_never_reads_provider_config(monkeypatch, no_gpu):
    """The operators read ``[portfolio] device`` and pass it in; the backend itself reads nothing."""
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEVICE", "quantum")  # would raise if it were read
    assert backend.DEFAULT_DEVICE == "auto"
    assert get_backend() is NUMPY and get_backend(None) is NUMPY


def test_backend_module_imports_neither_airflow_nor_the_config():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(backend))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and (m.startswith("airflow.") or m == "airflow" or m.endswith(".config"))}


def test_choice_logged_once(caplog, no_gpu):
    with caplog.at_level(logging.INFO, logger=backend.__name__):
        for _ in range(3):
            get_backend("cpu")
            get_backend("auto")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Forecast device 'cpu': using numpy on cpu",
        "Forecast device 'auto': using numpy on cpu (CuPy is not installed)",
    ]


def test_to_numpy_and_asarray():
    ints = [[1, 2], [3, 4]]
    arr = asarray(NUMPY, ints)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float64
    assert asarray(NUMPY, ints, dtype=np.float32).dtype == np.float32
    same = np.ones((2, 2))
    assert asarray(NUMPY, same) is same  # no copy where none is needed
    assert to_numpy(same) is same
    np.testing.assert_array_equal(to_numpy(ints), np.array(ints))


def test_to_numpy_copies_device_arrays_off_the_gpu():
    class ndarray:  # noqa: N801 - shaped like cupy.ndarray
        __module__ = "cupy._core.core"

        def get(self):
            return np.arange(3.0)

    np.testing.assert_array_equal(to_numpy(ndarray()), [0.0, 1.0, 2.0])


def test_limit_blas_threads_without_threadpoolctl(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    with caplog.at_level(logging.INFO, logger=backend.__name__):
        with limit_blas_threads(1):
            x = np.ones((4, 4)) @ np.ones((4, 4))
        with limit_blas_threads(2):
            pass
    assert x[0, 0] == 4.0
    assert [r.getMessage() for r in caplog.records] == ["threadpoolctl is not installed: BLAS thread limits are not applied"]


def test_limit_blas_threads_with_threadpoolctl(monkeypatch):
    calls = []

    class threadpool_limits:  # noqa: N801 - threadpoolctl's name
        def __init__(self, limits):
            calls.append(("enter", limits))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            calls.append(("exit", None))

    monkeypatch.setitem(sys.modules, "threadpoolctl", types.SimpleNamespace(threadpool_limits=threadpool_limits))
    with limit_blas_threads(3):
        calls.append(("body", None))
    assert calls == [("enter", 3), ("body", None), ("exit", None)]


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "1"])
def test_limit_blas_threads_rejects(n):
    with pytest.raises(InvalidInputError):
        with limit_blas_threads(n):
            pass


def test_is_out_of_memory():
    assert is_out_of_memory(OutOfMemoryError("out of memory allocating 1 GiB"))

    class Sub(OutOfMemoryError):
        pass

    class CUDARuntimeError(RuntimeError):
        pass

    assert is_out_of_memory(Sub())
    assert is_out_of_memory(CUDARuntimeError("cudaErrorMemoryAllocation: out of memory"))
    assert not is_out_of_memory(CUDARuntimeError("cudaErrorIllegalAddress"))
    assert not is_out_of_memory(MemoryError())
    assert not is_out_of_memory(ValueError("OutOfMemoryError"))


PANEL = np.arange(40.0).reshape(10, 4) ** 1.5


def row_stats(xp, rows):
    return xp.stack([rows.sum(axis=1), rows.max(axis=1)], axis=1)


def test_run_chunked_equals_unchunked():
    expected = row_stats(np, PANEL)
    for chunk in (None, 1, 3, 4, 10, 99):
        np.testing.assert_array_equal(run_chunked(row_stats, PANEL, NUMPY, chunk=chunk), expected)


def test_run_chunked_tuples():
    point, spread = run_chunked(lambda xp, a: (a[:, -1:], a.max(axis=1) - a.min(axis=1)), PANEL, NUMPY, chunk=3)
    np.testing.assert_array_equal(point, PANEL[:, -1:])
    np.testing.assert_array_equal(spread, PANEL.max(axis=1) - PANEL.min(axis=1))


def test_run_chunked_halves_on_out_of_memory():
    """Chunks over 3 rows 'do not fit': 10 -> 5 -> 2, then the rest in chunks of 2, nothing lost."""
    tried = []

    def fn(xp, rows):
        tried.append(rows.shape[0])
        if rows.shape[0] > 3:
            raise OutOfMemoryError(f"Out of memory allocating {rows.nbytes} bytes")
        return row_stats(xp, rows)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # halving alone never warns
        out = run_chunked(fn, PANEL, NUMPY)
    np.testing.assert_array_equal(out, row_stats(np, PANEL))
    assert tried == [10, 5, 2, 2, 2, 2, 2]

    tried.clear()
    np.testing.assert_array_equal(run_chunked(fn, PANEL, NUMPY, chunk=7), row_stats(np, PANEL))
    assert tried == [7, 3, 3, 3, 1]


def test_run_chunked_falls_back_to_numpy_when_one_row_does_not_fit(fake_gpu):
    gpu = get_backend("cuda")
    calls = []

    def fn(xp, rows):
        calls.append(("gpu" if xp is fake_gpu else "numpy", rows.shape[0]))
        if xp is fake_gpu and (rows.shape[0] > 2 or rows[0, 0] >= PANEL[6, 0]):
            raise OutOfMemoryError("Out of memory")  # rows from 6 on never fit on the 'GPU'
        return row_stats(xp, rows)

    with pytest.warns(DeviceFallbackWarning, match=r"even with one row; computing rows 6\.\.9 with NumPy"):
        out = run_chunked(fn, PANEL, gpu, chunk=4)
    np.testing.assert_array_equal(out, row_stats(np, PANEL))
    assert calls == [
        ("gpu", 4),  # rows 0-3 do not fit
        ("gpu", 2), ("gpu", 2), ("gpu", 2),  # rows 0-5 on the GPU in twos
        ("gpu", 2), ("gpu", 1),  # rows 6-7 do not fit, nor row 6 alone
        ("numpy", 4),  # rows 6-9 with NumPy, in chunks of the original size
    ]


def test_run_chunked_out_of_memory_at_one_row_on_numpy_propagates():
    def fn(xp, rows):
        raise OutOfMemoryError("never fits")

    with pytest.raises(OutOfMemoryError):
        run_chunked(fn, PANEL, NUMPY)


def test_run_chunked_other_errors_propagate_without_retry():
    tried = []

    def fn(xp, rows):
        tried.append(rows.shape[0])
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        run_chunked(fn, PANEL, NUMPY, chunk=4)
    assert tried == [4]


def test_run_chunked_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="2-D"):
        run_chunked(row_stats, np.arange(5.0), NUMPY)
    for chunk in (0, -2, 2.5, True):
        with pytest.raises(InvalidInputError, match="chunk"):
            run_chunked(row_stats, PANEL, NUMPY, chunk=chunk)


def test_run_chunked_empty_panel():
    assert run_chunked(row_stats, np.zeros((0, 4)), NUMPY).shape == (0, 2)


def test_limit_blas_threads_really_limits_numpys_blas():
    from threadpoolctl import threadpool_info

    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas, "NumPy's BLAS is not visible to threadpoolctl"
    with limit_blas_threads(1):
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {1}
