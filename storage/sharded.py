"""Sharded stores: N ordinary stores of one backend read as one, through a manifest written last.

One LMDB or HDF5 file written by one process does not scale to a cluster; N shards written
by N tasks at once do. A sharded store is a folder::

    DEST/sharded.json        the manifest: backend, shard count, images per shard, each
                             shard's first global id, checksums; written last, atomically
    DEST/shard-00000/        an ordinary store of the backend (its own store.json) ...
    DEST/shard-00000/shard.json   ... and the shard's stamp: which conversion wrote it,
                             its global id range, and the size and sha256 of every file
    DEST/conversion.json     the plan of the conversion that wrote it (kept for reruns)

The manifest exists only once every shard is complete, so a conversion that fails or is
killed midway leaves no manifest and the folder never opens as a store. Opening checks
every shard cheaply (its folder, its store.json, its stamp against the manifest, every
file's size) and names each one that is missing, incomplete, truncated or from another
conversion; ``verify=True`` also re-hashes every file. Global id ``g`` lives in the shard
whose range holds it, at local id ``g - first_id``.

:func:`open_sharded` opens one for reading (``"r"``) or writes one from this process
(``"w"``); :mod:`storage.distributed` writes one on a Dask cluster, a task per shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .base import MANIFEST_NAME, DiskUsage, ImageStore, measure_disk_usage, read_manifest, write_file_atomically
from .errors import (
    BadShardError,
    CorruptDataError,
    ImageShapeError,
    ModeError,
    StorageError,
    StoreExistsError,
    StoreNotFoundError,
)
from .integrity import IntegrityReport
from .reading import ImageReaderBase

SHARDED_BACKEND = "sharded"  # a sharded store's backend name: open_store, detect_backend, storage.torch's datasets
SHARDED_MANIFEST = "sharded.json"
SHARD_STAMP = "shard.json"
CONVERSION_PLAN = "conversion.json"
SHARDED_KIND = "image-storage-lab/sharded-store"
SHARDED_FORMAT_VERSION = 1
_HASH_BLOCK = 8 * 2**20
_UNKNOWN = object()
MAX_OPEN_SHARDS = 64


def shard_name(index: int) -> str:
    """The folder name of shard ``index``: ``shard-00000``."""
    return f"shard-{index:05d}"


def new_conversion_id() -> str:
    """A unique id naming one conversion; every shard it writes carries it."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def split_evenly(count: int, shards: int) -> list[tuple[int, int]]:
    """``range(count)`` as ``shards`` contiguous (start, stop) ranges whose sizes differ by at most one."""
    if shards <= 0:
        raise ValueError(f"the shard count must be positive, got {shards}")
    if count < shards:
        raise ValueError(f"{count:,} images cannot fill {shards} shards; use at most {count} shards")
    size, extra = divmod(count, shards)
    ranges, start = [], 0
    for index in range(shards):
        stop = start + size + (1 if index < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


@dataclass(frozen=True)
class ShardInfo:
    """One shard: an ordinary store of ``backend`` at ``path`` holding global ids ``start..stop-1``."""

    index: int
    name: str
    backend: str
    path: Path
    start: int
    stop: int

    @property
    def count(self) -> int:
        return self.stop - self.start

    @property
    def ids(self) -> range:
        return range(self.start, self.stop)


# -- stamps and checks -------------------------------------------------------------------


UNSTAMPED_FILES = frozenset({"lock.mdb", ".writer.lock"})
"""Files that change while a shard is only read (LMDB's reader table) or exist only while it is written."""


def file_checksums(folder: Path) -> dict[str, list]:
    """``{relative path: [size, sha256 hex]}`` of every file in a shard folder except its stamp and lock files."""
    files: dict[str, list] = {}
    for root, _dirs, names in os.walk(folder):
        for name in sorted(names):
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            if relative == SHARD_STAMP or name.startswith(f".{SHARD_STAMP}.tmp") or name in UNSTAMPED_FILES:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as file:
                while block := file.read(_HASH_BLOCK):
                    digest.update(block)
            files[relative] = [path.stat().st_size, digest.hexdigest()]
    return dict(sorted(files.items()))


def combined_checksum(files: dict[str, list]) -> str:
    """One sha256 over a shard's file list (names, sizes, hashes): the shard's identity."""
    text = json.dumps(sorted(files.items()), separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def finish_shard(folder: Path, conversion_id: str, index: int, start: int, stop: int, backend: str) -> dict[str, Any]:
    """Hash a complete shard's files and write its stamp (atomically); return the stamp."""
    files = file_checksums(folder)
    stamp = {
        "conversion_id": conversion_id,
        "index": index,
        "backend": backend,
        "first_id": start,
        "count": stop - start,
        "files": files,
        "checksum": combined_checksum(files),
    }
    write_file_atomically(folder / SHARD_STAMP, json.dumps(stamp, indent=1).encode())
    return stamp


def read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((folder / SHARD_STAMP).read_text())
        return stamp if isinstance(stamp, dict) else None
    except (OSError, ValueError):
        return None


def shard_problem(
    folder: Path,
    backend: str,
    conversion_id: str,
    start: int,
    stop: int,
    checksum: str | None = None,
    rehash: bool = False,
) -> str | None:
    """What is wrong with the shard at ``folder``, or None if it is complete and this conversion's.

    Cheap by default (a few small JSON files and a ``stat`` per file); ``rehash`` also
    recomputes every file's sha256.
    """
    if not folder.is_dir():
        return "is missing"
    try:
        store_manifest = read_manifest(folder)
    except StorageError as error:
        return f"is not a readable store ({error})"
    if store_manifest["backend"] != backend:
        return f"holds a {store_manifest['backend']!r} store, not {backend!r}"
    expected = stop - start
    if store_manifest.get("state") != "complete" or int(store_manifest["count"]) != expected:
        return f"is incomplete: {int(store_manifest['count']):,} of {expected:,} images committed" + (
            " and a write was interrupted" if store_manifest.get("state") != "complete" else ""
        )
    stamp = read_stamp(folder)
    if stamp is None:
        return f"has no readable {SHARD_STAMP}: its conversion did not finish it"
    if stamp.get("conversion_id") != conversion_id or (checksum is not None and stamp.get("checksum") != checksum):
        return f"is from another conversion ({stamp.get('conversion_id')}, this store is {conversion_id})"
    if (stamp.get("first_id"), stamp.get("count")) != (start, expected):
        return f"holds ids {stamp.get('first_id')}.. ({stamp.get('count')} images), expected {start}..{stop - 1}"
    return _files_problem(folder, stamp.get("files") or {}, rehash)


def _files_problem(folder: Path, files: dict[str, list], rehash: bool) -> str | None:
    files = {relative: entry for relative, entry in files.items() if Path(relative).name not in UNSTAMPED_FILES}
    for relative, (size, _digest) in files.items():
        path = folder / relative
        try:
            actual = path.stat().st_size
        except OSError:
            return f"lacks its file {relative}"
        if actual != size:
            return f"is truncated or changed: {relative} is {actual:,} bytes, expected {size:,}"
    if rehash:
        current = file_checksums(folder)
        for relative, (_size, digest) in files.items():
            if current.get(relative, [None, None])[1] != digest:
                return f"is damaged: the sha256 of {relative} differs from the one recorded when it was written"
    return None


# -- the destination folder -------------------------------------------------------------


def is_sharded_folder(path: Path) -> bool:
    """Whether ``path`` holds a sharded store or a conversion's work (finished or not)."""
    return (path / SHARDED_MANIFEST).is_file() or (path / CONVERSION_PLAN).is_file()


def prepare_destination(path: Path) -> None:
    """Make ``path`` an empty folder, removing an old sharded store but never other files."""
    if path.exists() and not path.is_dir():
        raise StoreExistsError(f"{path} is a file; a sharded store is a folder: choose another path")
    if path.is_dir() and any(path.iterdir()):
        if not is_sharded_folder(path):
            raise StoreExistsError(
                f"{path} holds files that are not a sharded store; "
                "choose a new or empty folder so nothing of yours is deleted"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def write_sharded_manifest(
    path: Path, conversion_id: str, backend: str, options: dict[str, Any], stamps: list[dict[str, Any]], source: str
) -> dict[str, Any]:
    """Write ``sharded.json`` (atomically) from every shard's stamp; the store then opens."""
    stamps = sorted(stamps, key=lambda stamp: stamp["index"])
    manifest = {
        "kind": SHARDED_KIND,
        "format_version": SHARDED_FORMAT_VERSION,
        "conversion_id": conversion_id,
        "backend": backend,
        "options": options,
        "count": sum(stamp["count"] for stamp in stamps),
        "shard_count": len(stamps),
        "images_per_shard": [stamp["count"] for stamp in stamps],
        "shards": [
            {
                "name": shard_name(stamp["index"]),
                "first_id": stamp["first_id"],
                "count": stamp["count"],
                "checksum": stamp["checksum"],
            }
            for stamp in stamps
        ],
        "source": source,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_file_atomically(path / SHARDED_MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def read_sharded_manifest(path: Path) -> dict[str, Any]:
    """Read ``sharded.json``, or explain why ``path`` is not a (finished) sharded store."""
    manifest_path = path / SHARDED_MANIFEST
    if not path.exists():
        raise StoreNotFoundError(f"no sharded store at {path}: check the path, or convert one with --shards")
    if not manifest_path.is_file():
        if (path / CONVERSION_PLAN).is_file():
            raise BadShardError(
                f"{path} is a sharded conversion that did not finish (it has no {SHARDED_MANIFEST}); "
                "run the same convert command again: it converts only the missing or incomplete shards"
            )
        hint = "; it is a plain store: open it with open_store()" if (path / MANIFEST_NAME).is_file() else ""
        raise StoreNotFoundError(f"{path} is not a sharded store (it has no {SHARDED_MANIFEST}){hint}")
    try:
        manifest = json.loads(manifest_path.read_bytes())
        if manifest.get("kind") != SHARDED_KIND:
            raise ValueError(f"kind {manifest.get('kind')!r}")
        for shard in manifest["shards"]:
            _whole(shard["first_id"], "first_id"), _whole(shard["count"], "count")
            check_shard_name(path, shard["name"])
        if len({shard["name"] for shard in manifest["shards"]}) != len(manifest["shards"]):
            raise ValueError("two shards have the same name")
        str(manifest["backend"]), str(manifest["conversion_id"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise CorruptDataError(f"{manifest_path} is damaged ({error}); convert the store again") from None
    except OSError as error:
        raise CorruptDataError(f"cannot read {manifest_path} ({error.strerror or error})") from None
    return manifest


def _whole(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} {value!r} is not a whole number")
    return value


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def check_shard_name(folder: Path, name: object) -> None:
    """A shard's name must be a plain name of a subfolder of the store: never a path that leads elsewhere."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"shard name {name!r} is not the plain name of a folder inside the store")
    if (folder / name).is_symlink():
        raise ValueError(f"shard {name!r} is a link, not a folder inside the store")


# -- reading -----------------------------------------------------------------------------


class ShardedStore(ImageReaderBase):
    """A sharded store opened for reading: an :class:`~storage.reading.ImageReader` over global ids.

    :class:`~storage.reading.ImageReaderBase` checks ids and ``out`` buffers as for any
    store; this class maps the checked ids to shards. Shards are opened on first use and kept open; like any store it reopens its handles
    after ``fork`` and pickles (as its path) for ``spawn``-based worker processes.
    ``shards`` lists every shard with its backend, path and global id range, so a data
    loader can hand whole shards to its workers and ranks.
    """

    mode = "r"
    _kind_in_messages = "sharded store"

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = False) -> None:
        self.path = Path(path)
        manifest = read_sharded_manifest(self.path)
        self.manifest = manifest
        self.backend: str = manifest["backend"]
        self.conversion_id: str = manifest["conversion_id"]
        self.shards: tuple[ShardInfo, ...] = tuple(
            ShardInfo(
                index,
                entry["name"],
                self.backend,
                self.path / entry["name"],
                int(entry["first_id"]),
                int(entry["first_id"]) + int(entry["count"]),
            )
            for index, entry in enumerate(manifest["shards"])
        )
        self._count = self.shards[-1].stop if self.shards else 0
        self._starts = np.array([shard.start for shard in self.shards], dtype=np.int64)
        self._check_shards(verify)
        self._stores: dict[int, ImageStore] = {}
        self._uniform_shape: Any = _UNKNOWN
        self._closed = False

    def _check_shards(self, rehash: bool) -> None:
        expected_start = 0
        problems: dict[str, str] = {}
        for shard, entry in zip(self.shards, self.manifest["shards"], strict=True):
            if shard.start != expected_start:
                raise CorruptDataError(
                    f"{self.path / SHARDED_MANIFEST} is damaged: {shard.name} does not start at id {expected_start}"
                )
            expected_start = shard.stop
            problem = shard_problem(
                shard.path, self.backend, self.conversion_id, shard.start, shard.stop, entry.get("checksum"), rehash
            )
            if problem:
                problems[shard.name] = problem
        if problems:
            lines = "; ".join(f"{name} ({self.path / name}) {problem}" for name, problem in problems.items())
            raise BadShardError(
                f"the sharded store at {self.path} cannot be read: {len(problems)} of {len(self.shards)} shard(s) "
                f"are bad: {lines}. Convert it again with the same command: only these shards are rewritten",
                problems,
            )

    # -- shards ------------------------------------------------------------------------

    def open_shard(self, index: int) -> ImageStore:
        """The shard ``index`` as an ordinary read-only store.

        Opened on first use and kept open; at most :data:`MAX_OPEN_SHARDS` stay open at
        once (the least recently used is closed), so a store of thousands of shards does
        not hold thousands of file handles and maps.
        """
        if self._closed:
            raise ValueError(f"the sharded store at {self.path} is closed; open it again with open_sharded()")
        store = self._stores.pop(index, None)
        if store is None:
            store = registry.open_store(self.backend, self.shards[index].path, "r")
            if len(self._stores) >= MAX_OPEN_SHARDS:
                oldest = next(iter(self._stores))
                self._stores.pop(oldest).close()
        self._stores[index] = store  # most recently used last
        return store

    def shards_for(self, part: int, parts: int) -> tuple[ShardInfo, ...]:
        """The whole shards of part ``part`` of ``parts``: shard ``i`` goes to part ``i % parts``.

        A data loader with ``world_size`` ranks of ``num_workers`` workers each uses
        ``part = rank + world_size * worker_id`` and ``parts = world_size * num_workers``:
        every shard is read by exactly one worker of one rank, and a rank's shards
        (``shards_for(rank, world_size)``) do not depend on its worker count. A part gets no
        shard when ``parts`` exceeds the shard count; callers should refuse that (or
        convert into more shards).
        """
        if not 0 <= part < parts:
            raise ValueError(f"part {part} is not in 0..{parts - 1}")
        return self.shards[part::parts]

    def shard_of(self, image_id: int) -> ShardInfo:
        """The shard holding global id ``image_id``."""
        return self.shards[self._shard_index(self._check_id(image_id))]

    def _shard_index(self, image_id: int) -> int:
        return int(np.searchsorted(self._starts, image_id, side="right")) - 1

    # -- reading: ImageReaderBase checks the ids, these map them to shards -------------

    @property
    def info(self):
        """The backend's :class:`~storage.base.BackendInfo` (every shard has the same backend)."""
        return registry.backend_info(self.backend)

    @property
    def uniform_shape(self) -> tuple[int, ...] | None:
        """The one image shape of every shard, or None if shards differ or hold mixed sizes."""
        if self._uniform_shape is _UNKNOWN:  # from each shard's store.json, without opening thousands of stores
            shapes = {
                tuple(read_manifest(shard.path).get("backend_state", {}).get("uniform_shape") or ())
                for shard in self.shards
            }
            shape = shapes.pop() if len(shapes) == 1 else ()
            self._uniform_shape = shape or None
        return self._uniform_shape

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        """Read one image and its label by global id, from the shard that holds it."""
        shard = self.shards[self._shard_index(image_id)]
        return self.open_shard(shard.index).read_one(image_id - shard.start)

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Read images by global id, in the order given; one read_batch per shard touched."""
        return self._read_from_shards(ids, out, verify=False)

    def _read_verified(self, ids: np.ndarray, out: np.ndarray | None):
        """As ``_read_many``, each shard checking its images against their checksums."""
        return self._read_from_shards(ids, out, verify=True)

    def _read_from_shards(self, ids: np.ndarray, out: np.ndarray | None, verify: bool):
        shape = self.uniform_shape
        labels = np.empty(len(ids), dtype=np.int64)
        if shape is not None:
            images: np.ndarray | list = out if out is not None else np.empty((len(ids), *shape), dtype=np.uint8)
        else:
            images = [None] * len(ids)
        shard_of = np.searchsorted(self._starts, ids, side="right") - 1
        for index in np.unique(shard_of).tolist():
            positions = np.flatnonzero(shard_of == index)
            local = ids[positions] - self.shards[index].start
            self._read_into(index, positions, local, images, labels, verify)
        return images, labels

    def _read_into(
        self, index: int, positions: np.ndarray, local: np.ndarray, images, labels: np.ndarray, verify: bool
    ) -> None:
        store = self.open_shard(index)
        contiguous = positions[-1] - positions[0] == len(positions) - 1
        if isinstance(images, np.ndarray) and contiguous:
            low, high = int(positions[0]), int(positions[-1]) + 1
            part, labels[low:high] = store.read_batch(local, out=images[low:high], verify=verify)
            if not (isinstance(part, np.ndarray) and np.shares_memory(part, images[low:high])):
                images[low:high] = part
            return
        part, part_labels = store.read_batch(local, verify=verify)
        labels[positions] = part_labels
        if isinstance(images, np.ndarray):
            images[positions] = part
        else:
            for position, image in zip(positions.tolist(), part):
                images[position] = image

    def disk_usage(self) -> DiskUsage:
        """Every shard's disk use summed, plus the manifest and plan files."""
        usages = [measure_disk_usage(shard.path) for shard in self.shards]
        top = [self.path / name for name in (SHARDED_MANIFEST, CONVERSION_PLAN) if (self.path / name).is_file()]
        stats = [path.stat() for path in top]
        return DiskUsage(
            sum(u.apparent_bytes for u in usages) + sum(s.st_size for s in stats),
            sum(u.allocated_bytes for u in usages) + sum(s.st_blocks * 512 for s in stats),
            sum(u.files for u in usages) + len(stats),
        )

    def verify(self) -> IntegrityReport:
        """Check every shard: its files re-hashed against the sha256 of its stamp, its images against their checksums.

        Returns an :class:`~storage.integrity.IntegrityReport` naming each damaged shard (and,
        inside it, each damaged image or file); nothing is changed.
        """
        report = IntegrityReport(self.path, f"{SHARDED_BACKEND} {self.backend}", self._count)
        for shard, entry in zip(self.shards, self.manifest["shards"], strict=True):
            problem = shard_problem(
                shard.path, self.backend, self.conversion_id, shard.start, shard.stop, entry.get("checksum"), True
            )
            if problem:
                report.damaged[shard.name] = problem
            try:
                with registry.open_store(self.backend, shard.path, "r") as store:
                    report.merge(store.verify(), shard.name)
            except StorageError as error:
                report.damaged.setdefault(shard.name, str(error))
        return report

    # -- life cycle --------------------------------------------------------------------

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        self._closed = True

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"<ShardedStore {str(self.path)!r} backend={self.backend!r} shards={len(self.shards)} images={self._count}>"
        )


# -- writing from this process ---------------------------------------------------------


class ShardedWriter:
    """Writes a sharded store from this process: images fill shard after shard of ``shard_images``.

    The manifest is written by :meth:`close` once every shard is complete; an exception
    inside a ``with`` block leaves the shards without a manifest, so the folder never opens
    as a finished store. For conversions on a cluster use :func:`storage.distributed.convert`.
    """

    mode = "w"

    def __init__(self, path: str | os.PathLike[str], backend: str, shard_images: int, **options: Any) -> None:
        if isinstance(shard_images, bool) or not isinstance(shard_images, int) or shard_images <= 0:
            raise ModeError(f"shard_images must be a positive int, got {shard_images!r}")
        registry.store_class(backend)  # unknown or unavailable backends fail before anything is deleted
        self.path = Path(path)
        self.backend = backend
        self.shard_images = shard_images
        self.options = options
        self.conversion_id = new_conversion_id()
        prepare_destination(self.path)
        self._stamps: list[dict[str, Any]] = []
        self._store: ImageStore | None = None
        self._count = 0
        self._closed = False

    def __len__(self) -> int:
        return self._count

    def write_batch(self, images: object, labels: object) -> np.ndarray:
        """Append images (an array or a list of arrays) and labels; return their global ids."""
        labels = np.asarray(labels)
        total = len(labels)
        if len(images) != total:  # type: ignore[arg-type]
            raise ImageShapeError(f"{len(images)} images and {total} labels; give one label per image")  # type: ignore[arg-type]
        first = self._count
        done = 0
        while done < total:
            store = self._current_store()
            take = min(total - done, self.shard_images - len(store))
            store.write_batch(images[done : done + take], labels[done : done + take])  # type: ignore[index]
            done += take
            self._count += take
            if len(store) == self.shard_images:
                self._finish_current()
        return np.arange(first, self._count)

    def _current_store(self) -> ImageStore:
        if self._store is None:
            index = len(self._stamps)
            self._store = registry.open_store(self.backend, self.path / shard_name(index), "w", **self.options)
        return self._store

    def _finish_current(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        store.close()
        index = len(self._stamps)
        start = sum(stamp["count"] for stamp in self._stamps)
        self._stamps.append(
            finish_shard(store.path, self.conversion_id, index, start, start + len(store), self.backend)
        )

    def close(self) -> None:
        """Finish the last shard and write the manifest."""
        if self._closed:
            return
        self._closed = True
        if self._store is not None and len(self._store) == 0:
            self._store.close()
            shutil.rmtree(self._store.path)
            self._store = None
        self._finish_current()
        write_sharded_manifest(
            self.path, self.conversion_id, self.backend, self.options, self._stamps, "written by ShardedWriter"
        )

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True
            if self._store is not None:
                self._store.close()


def open_sharded(
    path: str | os.PathLike[str],
    mode: str = "r",
    *,
    backend: str | None = None,
    shard_images: int | None = None,
    verify: bool = False,
    **options: Any,
) -> ShardedStore | ShardedWriter:
    """Open the sharded store at ``path``; use it as a context manager.

    ``"r"`` reads (``verify=True`` also re-hashes every file). ``"w"`` creates one from
    this process, replacing a sharded store already there (never a folder of other files):
    give ``backend`` and ``shard_images``, plus backend ``options``. Sharded stores are
    written once: there is no ``"a"``.

    Raises:
        BadShardError: a shard is missing, incomplete, truncated or from another conversion
            (every bad shard is named), or the conversion has not finished.
        StoreNotFoundError: there is no sharded store at ``path``.
    """
    if mode == "r":
        if backend is not None or shard_images is not None or options:
            raise ModeError("reading a sharded store takes no backend, shard_images or options: the manifest has them")
        return ShardedStore(path, verify=verify)
    if mode == "w":
        if backend is None or shard_images is None:
            raise ModeError("writing a sharded store needs backend= and shard_images=")
        return ShardedWriter(path, backend, shard_images, **options)
    raise ModeError(
        f"mode {mode!r} is not one of 'r' (read) or 'w' (create); sharded stores are written once, not appended to"
    )
