"""The explicit registry of storage backends: a name maps to a store class, nothing more.

No discovery magic: ``storage/__init__.py`` registers the built-in backends in one list,
and anyone can add their own with :func:`register_backend`. The conformance suite in
``tests/`` is parametrized over :func:`backends`, so a registered backend is tested at once.
"""

from __future__ import annotations

import os
from typing import Any

from .base import BackendInfo, ImageStore
from .errors import UnknownBackendError

_BACKENDS: dict[str, type[ImageStore]] = {}


def register_backend(store_class: type[ImageStore]) -> type[ImageStore]:
    """Register ``store_class`` under ``store_class.info.name`` (usable as a decorator)."""
    name = store_class.info.name
    if name in _BACKENDS and _BACKENDS[name] is not store_class:
        raise ValueError(f"a backend named {name!r} is already registered; unregister it first")
    _BACKENDS[name] = store_class
    return store_class


def unregister_backend(name: str) -> None:
    """Remove a backend from the registry."""
    _store_class(name)
    del _BACKENDS[name]


def backends() -> list[str]:
    """The names of the registered backends, in registration order."""
    return list(_BACKENDS)


def backend_info(name: str) -> BackendInfo:
    """Name, label, one-line description and capability flags of a backend."""
    return _store_class(name).info


def open_store(name: str, path: str | os.PathLike[str], mode: str = "r", **options: Any) -> ImageStore:
    """Open the store at ``path`` with backend ``name``; use it as a context manager.

    ``mode`` is ``"w"`` (create, replacing a store already there), ``"a"`` (append,
    creating if missing) or ``"r"`` (read-only). ``options`` are backend options.
    """
    return _store_class(name)(path, mode, **options)


def store_class(name: str) -> type[ImageStore]:
    """The class registered under ``name``."""
    return _store_class(name)


def _store_class(name: str) -> type[ImageStore]:
    try:
        return _BACKENDS[name]
    except (KeyError, TypeError):
        valid = ", ".join(_BACKENDS) or "none"
        raise UnknownBackendError(f"unknown backend {name!r}; registered backends are: {valid}") from None
