"""The registry of forecast models: every model a job or an operator can run, by its stored name.

>>> from airflow_provider_portfolio.forecast.registry import get_model, models
>>> models()
('drift', 'garch', 'garch_t', 'historical_mean', 'last_value', 'mssa', 'samossa', 'sarimax', 'ssa')
>>> get_model("samossa", ar_order=3).params["ar_order"]
3

A name maps to a factory: ``get_model(name, **options)`` calls it with the options and returns a
:class:`~.base.Model`. The built-in models (:mod:`.models`) are registered the first time the registry
is used; :func:`register` adds another (a class with a ``name`` attribute, or any factory with an
explicit ``name``).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.forecast.base import Model, check_target

_FACTORIES: dict[str, Callable[..., Model]] = {}
_LOCK = threading.RLock()
_BUILTINS: list[bool] = []  # one entry once the built-in models are registered


def _ensure_builtins() -> None:
    with _LOCK:
        if not _BUILTINS:
            _BUILTINS.append(True)
            importlib.import_module("airflow_provider_portfolio.forecast.models")


def register(model: Callable[..., Model], *, name: str | None = None, replace: bool = False) -> Callable[..., Model]:
    """Register a model factory under ``name`` (default: its ``name`` attribute); returns it (a decorator).

    :param model: a class or factory: ``model(**options) -> Model``.
    :param name: the stored model name.
    :param replace: allow replacing a registered name.
    :raises InvalidInputError: for a missing or taken name, or a factory that is not callable.
    """
    key = getattr(model, "name", None) if name is None else name
    if not isinstance(key, str) or not key or key == "ensemble":
        raise InvalidInputError(f"a model needs a non-empty name other than 'ensemble', got {key!r}")
    if not callable(model):
        raise InvalidInputError(f"model {key!r} must be a class or a factory, got {model!r}")
    if hasattr(model, "target") and isinstance(model.target, str):
        check_target(model.target)
    with _LOCK:
        if key in _FACTORIES and not replace and _FACTORIES[key] is not model:
            raise InvalidInputError(f"model {key!r} is already registered")
        _FACTORIES[key] = model
    return model


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (a no-op when it is not there)."""
    with _LOCK:
        _FACTORIES.pop(name, None)


def get_model(name: str, **options: Any) -> Model:
    """The model registered as ``name``, configured with ``options``.

    :raises InvalidInputError: for an unknown name, or options the model refuses.
    """
    _ensure_builtins()
    with _LOCK:
        factory = _FACTORIES.get(name) if isinstance(name, str) else None
    if factory is None:
        raise InvalidInputError(f"unknown forecast model {name!r}; registered: {', '.join(models())}")
    try:
        model = factory(**options)
    except TypeError as exc:  # an option the model does not take
        raise InvalidInputError(f"model {name!r}: {exc}") from exc
    check_target(model.target)
    return model


def models() -> tuple[str, ...]:
    """The registered model names, sorted."""
    _ensure_builtins()
    with _LOCK:
        return tuple(sorted(_FACTORIES))


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    _ensure_builtins()
    with _LOCK:
        return name in _FACTORIES


def target_of(name: str) -> str | None:
    """The target of the registered model ``name`` with its default options, or ``None`` if unknown."""
    if not is_registered(name):
        return None
    return get_model(name).target
