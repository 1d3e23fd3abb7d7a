"""One opener for every store folder: the folder says which backend wrote it.

    import storage
    storage.detect_backend("data/stores/cifar")          # "lmdb": the name in its store.json
    storage.detect_backend("/shared/stores/cifar")       # "sharded": it holds a sharded.json
    with storage.open_store("data/stores/cifar") as store:   # opened with the backend found
        image, label = store.read_one(0)

A plain store's ``store.json`` names its backend; a sharded store (:mod:`storage.sharded`)
has a ``sharded.json`` instead, and its name here is :data:`~storage.sharded.SHARDED_BACKEND`,
``"sharded"``, which :func:`open_store` (and :mod:`storage.torch`'s datasets) also take as a
backend name. So a caller that holds a folder never needs to know which kind it is.

Detection reads only the manifest: nothing is opened, nothing is imported, and a backend
that is not registered here is still named (opening it then says it is unknown).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import registry
from .base import MANIFEST_NAME, ImageStore, read_manifest
from .errors import ModeError, NotAStoreError, StoreNotFoundError
from .sharded import (
    CONVERSION_PLAN,
    SHARDED_BACKEND,
    SHARDED_MANIFEST,
    ShardedStore,
    open_sharded,
    read_sharded_manifest,
)


@dataclass(frozen=True)
class StoreSummary:
    """What a store folder's manifest says, without opening the store.

    ``backend`` is the name in its ``store.json``, or ``"sharded"`` for a sharded store;
    ``count`` is the number of images committed (over all shards of a sharded store).
    """

    path: Path
    backend: str
    count: int


def summarize_store(path: str | os.PathLike[str]) -> StoreSummary:
    """The backend and image count the manifest of the store at ``path`` records.

    Raises the same errors as :func:`detect_backend`.
    """
    folder = Path(path)
    if (folder / SHARDED_MANIFEST).is_file() or (folder / CONVERSION_PLAN).is_file():
        manifest = read_sharded_manifest(folder)  # an unfinished conversion: BadShardError, saying to rerun it
        return StoreSummary(folder, SHARDED_BACKEND, sum(int(shard["count"]) for shard in manifest["shards"]))
    if (folder / MANIFEST_NAME).is_file():
        manifest = read_manifest(folder)
        return StoreSummary(folder, str(manifest["backend"]), int(manifest["count"]))
    raise _no_store_at(folder)


def detect_backend(path: str | os.PathLike[str]) -> str:
    """The backend that wrote the store at ``path``: what :func:`open_store` would open it with.

    Returns the backend name its ``store.json`` records (also for a store whose last write
    was cut off: it is still that backend's), or ``"sharded"`` when the folder holds a
    sharded store's ``sharded.json``. Only the manifest is read; the name need not be
    registered in this process.

    Raises:
        StoreNotFoundError: nothing exists at ``path``.
        NotAStoreError: ``path`` is a file, or a folder with neither manifest (empty, or of
            other files); a :class:`StoreNotFoundError`, so one ``except`` catches both.
        BadShardError: a sharded conversion into ``path`` has not finished (rerun it).
        CorruptDataError: the manifest is damaged.
    """
    if _is_s3_url(path):  # the manifest in the bucket
        from .s3 import detect_s3_backend

        return detect_s3_backend(str(path))
    return summarize_store(path).backend


def open_store(
    name: str | os.PathLike[str], path: str | os.PathLike[str] | None = None, mode: str = "r", **options: Any
) -> ImageStore | ShardedStore:
    """Open a store; use it as a context manager.

    ``open_store(path)`` opens the store at ``path`` with the backend :func:`detect_backend`
    finds there (``mode`` and ``options`` by keyword, e.g. ``open_store(path, mode="a")``).
    ``open_store(name, path, mode="r", **options)`` opens it with backend ``name``:
    ``mode`` is ``"w"`` (create, replacing a store already there), ``"a"`` (append,
    creating if missing) or ``"r"`` (read-only); ``options`` are backend options.

    An ``s3://bucket/prefix`` URL opens a store in object storage (:mod:`storage.s3`): read
    where it lies with ``"r"``, or written in a local staging folder and uploaded, its
    manifest last, when it closes (``"w"``, ``"a"``); ``endpoint_url=`` (else
    ``AWS_ENDPOINT_URL``) names the server.

    A sharded store (backend ``"sharded"``, found or named) opens as a read-only
    :class:`~storage.sharded.ShardedStore` (``verify=True`` re-hashes every file), as
    :func:`~storage.sharded.open_sharded` opens it; write one with ``open_sharded(path, "w", ...)``.
    """
    if _is_s3_url(path if path is not None else name):  # a store in object storage (storage.s3)
        from .s3 import open_s3_store

        return open_s3_store(
            None if path is None else str(name), str(path if path is not None else name), mode, **options
        )
    if path is None:
        name, path = _backend_for_opening(name), name
    if name == SHARDED_BACKEND:
        if mode != "r":
            raise ModeError(
                f"a sharded store opens read-only here, not with mode {mode!r}: write one with "
                "open_sharded(path, 'w', backend=..., shard_images=...), or convert into it with --shards"
            )
        return open_sharded(path, "r", **options)
    return registry.open_store(str(name), path, mode, **options)


def _is_s3_url(path: object) -> bool:
    return isinstance(path, str) and path.startswith("s3://")


def _backend_for_opening(path: str | os.PathLike[str]) -> str:
    """The backend found at ``path``; a backend name given without a path is said to be one."""
    try:
        return detect_backend(path)
    except StoreNotFoundError:
        if isinstance(path, str) and path in registry.backends(available_only=False) and not Path(path).exists():
            raise StoreNotFoundError(
                f"{path!r} is a backend name, not a store folder: give the folder too, open_store({path!r}, path)"
            ) from None
        raise


def _no_store_at(folder: Path) -> StoreNotFoundError:
    """The error for a path that holds no store, saying what is there instead."""
    if not folder.exists():
        return StoreNotFoundError(
            f"no image store at {folder}: nothing is there; check the path, or create one with "
            "open_store(name, path, 'w')"
        )
    if not folder.is_dir():
        return NotAStoreError(f"{folder} is a file, not a store folder: point at the folder a store was written to")
    try:
        contents = "an empty folder" if not any(folder.iterdir()) else "a folder of other files"
    except OSError as error:
        contents = f"a folder that cannot be listed ({error.strerror or error})"
    return NotAStoreError(
        f"{folder} holds no image store (it is {contents}, with no {MANIFEST_NAME} or {SHARDED_MANIFEST}): "
        "point at a folder written by this library, or create one with open_store(name, path, 'w')"
    )
