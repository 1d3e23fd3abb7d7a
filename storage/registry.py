"""The explicit registry of storage backends: a name maps to a store class, loaded on first use.

No discovery magic: the built-in backends are one list in :mod:`storage.formats`, and
anyone can add their own with :func:`register_backend`, either as a class or as a
``"module:ClassName"`` text plus its :class:`~storage.base.BackendInfo`, which the
registry imports only when the backend is first used (h5py's driver table is the model).
A backend whose module fails to import (a library not installed, a broken build) is
listed as unavailable with the reason, and every other backend keeps working.

The conformance suite (:mod:`storage.testing`) runs in ``tests/`` over every backend
:func:`backends` lists, so a registered, available backend is tested at once; a backend's
own test file can subclass it too.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, replace
from typing import Any

from .base import BackendInfo, ImageStore
from .errors import BackendUnavailableError, ImageShapeError, UnknownBackendError
from .formats import BUILTIN_BACKENDS


@dataclass
class _Registration:
    """One backend: its info, and either its class or where to import it from."""

    info: BackendInfo
    locator: str | None = None
    requires: tuple[str, ...] = ()
    install: str | None = None
    store_class: type[ImageStore] | None = None
    unavailable_reason: str | None = None


_BACKENDS: dict[str, _Registration] = {}


def register_backend(
    backend: type[ImageStore] | str,
    info: BackendInfo | None = None,
    requires: tuple[str, ...] = (),
    install: str | None = None,
) -> type[ImageStore] | str:
    """Register a backend; usable as a class decorator.

    ``backend`` is an :class:`ImageStore` subclass (registered under ``backend.info.name``)
    or a ``"package.module:ClassName"`` text, which then needs ``info`` and is imported on
    first use. ``requires`` names the PyPI packages the module needs, for the message
    shown when it cannot be imported; ``install`` says how to install them, for a backend
    that ``pip install`` of those packages alone does not make work.
    """
    if isinstance(backend, str):
        if info is None:
            raise TypeError(f"register_backend({backend!r}) needs info=BackendInfo(...) to list it unimported")
        if ":" not in backend:
            raise ValueError(f"{backend!r} is not a 'package.module:ClassName' locator")
        registration = _Registration(info, locator=backend, requires=tuple(requires), install=install)
    else:
        registration = _Registration(backend.info, store_class=backend, requires=tuple(requires), install=install)
    name = registration.info.name
    existing = _BACKENDS.get(name)
    if existing is not None and not _same_backend(existing, registration):
        raise ValueError(f"a backend named {name!r} is already registered; unregister it first")
    if existing is None:
        _BACKENDS[name] = registration
    return backend


def unregister_backend(name: str) -> None:
    """Remove a backend from the registry."""
    _registration(name)
    del _BACKENDS[name]


def backends(available_only: bool = True) -> list[str]:
    """The names of the registered backends, in registration order.

    With ``available_only`` (the default) each backend's module is imported to check that
    it loads, and the ones that do not are left out; ``available_only=False`` lists every
    registered name without importing anything.
    """
    if not available_only:
        return list(_BACKENDS)
    return [name for name, registration in list(_BACKENDS.items()) if _load(registration) is not None]


def registered_info(name: str) -> BackendInfo:
    """A backend's name, label, description and flags as registered, importing nothing.

    Whether it can be used here is not known yet (its ``unavailable_reason`` is None): that
    is :func:`backend_info`'s to find out, by importing its module. A page that only names
    the formats uses this, and does not wait seconds for the peers' libraries to import.
    """
    return _registration(name).info


def backend_info(name: str) -> BackendInfo:
    """Name, label, one-line description and capability flags of a backend.

    Its ``unavailable_reason`` says why the backend cannot be used here (its module was
    imported to find out), or is ``None`` when it can.
    """
    registration = _registration(name)
    _load(registration)
    if registration.unavailable_reason is None:
        return registration.info
    return replace(registration.info, unavailable_reason=registration.unavailable_reason)


def open_store(name: str, path: str | os.PathLike[str], mode: str = "r", **options: Any) -> ImageStore:
    """Open the store at ``path`` with backend ``name``; use it as a context manager.

    ``mode`` is ``"w"`` (create, replacing a store already there), ``"a"`` (append,
    creating if missing) or ``"r"`` (read-only). ``options`` are backend options.
    """
    return store_class(name)(path, mode, **options)


def store_class(name: str) -> type[ImageStore]:
    """The class registered under ``name``, imported now if it was not yet."""
    registration = _registration(name)
    loaded = _load(registration)
    if loaded is None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable here: {registration.unavailable_reason}")
    return loaded


def backend_requirements(name: str) -> tuple[str, ...]:
    """The PyPI packages backend ``name`` was registered as needing (nothing is imported)."""
    return _registration(name).requires


def backend_module(name: str) -> str:
    """The module that holds backend ``name``'s class (nothing is imported)."""
    registration = _registration(name)
    if registration.store_class is not None:
        return registration.store_class.__module__
    return registration.locator.partition(":")[0]


def class_named(class_name: str) -> type[ImageStore] | None:
    """The registered class called ``class_name`` (``"LmdbStore"``), imported on demand."""
    for name, registration in list(_BACKENDS.items()):
        declared = registration.locator.rpartition(":")[2] if registration.locator else None
        if class_name in (declared, getattr(registration.store_class, "__name__", None)):
            return store_class(name)
    return None


def _load(registration: _Registration) -> type[ImageStore] | None:
    """Import a lazily registered class once; remember why it failed if it does."""
    if registration.store_class is not None or registration.unavailable_reason is not None:
        return registration.store_class
    module_name, _, class_name = registration.locator.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), class_name)
    except Exception as error:  # any failure to import makes this one backend unavailable, not the library
        registration.unavailable_reason = _reason(error, registration.requires, registration.install)
        return None
    if loaded.info.name != registration.info.name:
        registration.unavailable_reason = (
            f"{registration.locator} is the {loaded.info.name!r} backend, not {registration.info.name!r}"
        )
        return None
    registration.store_class = loaded
    return loaded


def _reason(error: Exception, requires: tuple[str, ...], install: str | None = None) -> str:
    problem = f"{type(error).__name__}: {error}"
    if install:
        return f"{problem} ({install})"
    if not requires:
        return problem
    packages = " ".join(requires)
    return f"{problem} (install it with: python3 -m pip install {packages}, or pip install -r requirements.txt)"


def _same_backend(existing: _Registration, new: _Registration) -> bool:
    if new.store_class is not None:
        cls = new.store_class
        return existing.store_class is cls or existing.locator == f"{cls.__module__}:{cls.__qualname__}"
    return existing.locator == new.locator and existing.info == new.info


def _registration(name: str) -> _Registration:
    try:
        return _BACKENDS[name]
    except (KeyError, TypeError):
        valid = ", ".join(_BACKENDS) or "none"
        raise UnknownBackendError(
            f"unknown backend {name!r}{_did_you_mean(name)}; registered backends are: {valid}"
        ) from None


def _did_you_mean(name: object) -> str:
    """``; did you mean 'lmdb'?`` for a name that differs from a registered one in case, spaces or a near spelling."""
    if not isinstance(name, str):
        return ""
    import difflib

    folded = {backend.lower(): backend for backend in _BACKENDS}
    close = difflib.get_close_matches(name.strip().lower(), list(folded), n=1, cutoff=0.75)
    return f"; did you mean {folded[close[0]]!r}?" if close else ""


for _builtin in BUILTIN_BACKENDS:
    register_backend(_builtin.locator, _builtin.info, _builtin.requires, _builtin.install)


def _image_shapes(images: object) -> set[tuple[int, ...]]:
    if hasattr(images, "shape"):  # one (N,H,W[,C]) array
        return {tuple(images.shape[1:])}
    if hasattr(images, "distinct_shapes"):  # a folder listing: its shapes, without decoding a photo
        return set(images.distinct_shapes())
    return {tuple(image.shape) for image in images}


def check_backend_takes(backend: str, images: object, source: str) -> None:
    """Refuse, before anything is written, images the backend would refuse at its first write.

    The store applies the same rule (:meth:`BackendInfo.shape_refusal`), but only once it
    exists: ``convert`` would leave an empty store behind, and a benchmark run would fail
    after measuring other backends. ``source`` names the images in the message.
    """
    info = backend_info(backend)
    refusal = info.shape_refusal(_image_shapes(images))
    if refusal is None:
        return
    if refusal.channels:
        found, stored = " and ".join(map(str, sorted(refusal.channels))), ", ".join(map(str, info.channels))
        raise ImageShapeError(
            f"the source {source} has images with {found} channel(s), which the {backend} backend cannot store "
            f"(it stores {stored} channel(s)); convert those images first, or choose a backend that stores "
            "1, 3 and 4 channels (png, lmdb, hdf5)"
        )
    shapes = refusal.shapes
    examples = ", ".join(map(str, sorted(shapes)[:3])) + (", ..." if len(shapes) > 3 else "")
    raise ImageShapeError(
        f"the source {source} has images of {len(shapes)} shapes ({examples}), but the {backend} backend "
        "stores one image shape per store; resize the images to one size first, or choose a backend "
        "with variable sizes (png, lmdb, hdf5)"
    )
