"""A strict array backend: NumPy that behaves like device memory, so CuPy-only mistakes fail on a CPU.

``STRICT`` is a :class:`~airflow_provider_portfolio.forecast.backend.Backend` whose ``xp`` wraps NumPy and
returns :class:`StrictArray`, an ``ndarray`` subclass standing for an array on a GPU. Like a CuPy array,
and stricter where CuPy would silently synchronise, it refuses every implicit device-to-host transfer:

- ``float()``, ``int()``, ``bool()``, ``complex()``, ``operator.index()``, ``.item()``, ``.tolist()`` and
  ``__array__`` raise :class:`ImplicitTransferError`; so does iterating a 1-D array into host scalars
  (items are 0-d device arrays, as CuPy gives them) and any reduction or indexing that would give a NumPy
  scalar (it gives a 0-d :class:`StrictArray`);
- a NumPy function called directly on it (``numpy.mean(x)`` instead of ``xp.mean(x)``) raises;
- mixing it with a host array of one or more dimensions in an operation or an ``xp`` call raises (CuPy
  refuses NumPy operands); ``xp.asarray(host)`` is the explicit host-to-device move.

The one way back to the host is the backend's explicit transfer, ``to_numpy(x)`` (``x.get()``, CuPy's
method). ``xp.linalg`` and ``xp.special`` (``scipy.special``, as ``cupyx.scipy.special`` on a GPU) are
wrapped the same way.

NumPy does not call ``__array__`` on an ``ndarray`` subclass in ``numpy.asarray(x)``: that one leak is
not caught at the call, but the plain array it returns is refused as soon as it meets a device array.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import scipy.special

from airflow_provider_portfolio.forecast.backend import Backend


class ImplicitTransferError(TypeError):
    """A device array was converted to the host without the backend's explicit transfer."""


def _refuse(what: str) -> ImplicitTransferError:
    return ImplicitTransferError(f"implicit device-to-host transfer ({what}) on a device array: use to_numpy()")


def _is_host_array(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) and not isinstance(obj, StrictArray) and obj.ndim > 0


def _any_host(obj: Any) -> bool:
    if _is_host_array(obj):
        return True
    if isinstance(obj, list | tuple):
        return any(_any_host(o) for o in obj)
    return False


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, StrictArray):
        return obj.view(np.ndarray)
    if isinstance(obj, list):
        return [_unwrap(o) for o in obj]
    if isinstance(obj, tuple):
        items = [_unwrap(o) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    return obj


def _wrap(obj: Any) -> Any:
    if isinstance(obj, StrictArray):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.view(StrictArray)
    if isinstance(obj, np.generic):
        return np.asarray(obj).view(StrictArray)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    if isinstance(obj, tuple):
        items = [_wrap(o) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    return obj


class StrictArray(np.ndarray):
    """An array "on the device": computes like NumPy, never converts to the host implicitly."""

    def get(self) -> np.ndarray:
        """The explicit transfer to the host (CuPy's name): a NumPy copy."""
        return np.array(self.view(np.ndarray), copy=True)

    # -- implicit transfers ---------------------------------------------------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise _refuse("__array__")

    def __float__(self) -> float:
        raise _refuse("float()")

    def __int__(self) -> int:
        raise _refuse("int()")

    def __bool__(self) -> bool:
        raise _refuse("bool()")

    def __complex__(self) -> complex:
        raise _refuse("complex()")

    def __index__(self) -> int:
        raise _refuse("operator.index()")

    def item(self, *args: Any) -> Any:
        raise _refuse(".item()")

    def tolist(self) -> Any:
        raise _refuse(".tolist()")

    def __iter__(self) -> Any:
        for i in range(self.shape[0] if self.ndim else 0):
            yield self[i]

    def __repr__(self) -> str:
        return f"StrictArray({self.view(np.ndarray)!r})"

    __str__ = __repr__

    # -- computing on the device ----------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        return _wrap(super().__getitem__(_unwrap(key)))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.view(np.ndarray)[_unwrap(key)] = _unwrap(value)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, out: Any = None, **kwargs: Any) -> Any:
        if any(_is_host_array(i) for i in inputs):
            raise ImplicitTransferError(f"{ufunc.__name__}: a host array mixed with a device array")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return None if result is None else _wrap(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise ImplicitTransferError(f"numpy.{func.__name__} called on a device array: use the backend's xp")


#: ``xp`` functions that move host data to the device explicitly.
_TRANSFERS = frozenset({"asarray", "array", "asanyarray"})


class StrictNamespace(types.SimpleNamespace):
    """NumPy's namespace over :class:`StrictArray` (and ``linalg``/``special`` sub-namespaces)."""

    def __init__(self, module: Any, name: str) -> None:
        super().__init__()
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "__name__", name)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._module, name)
        if isinstance(attr, types.ModuleType):
            return StrictNamespace(attr, f"{self.__name__}.{name}")
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes, exception classes, constants

        def call(*args: Any, **kwargs: Any) -> Any:
            if name not in _TRANSFERS and (_any_host(args) or _any_host(list(kwargs.values()))):
                raise ImplicitTransferError(f"xp.{name}: a host array passed where device arrays are expected")
            result = attr(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
            return _wrap(result)

        call.__name__ = name
        return call


xp = StrictNamespace(np, "strict_numpy")
object.__setattr__(xp, "special", StrictNamespace(scipy.special, "strict_numpy.special"))

#: The strict backend (computes with NumPy on the CPU).
STRICT = Backend(name="strict", xp=xp, device="cpu (strict)")
