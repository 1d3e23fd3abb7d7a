"""The interface every image-storage backend implements.

A store is a folder: the backend's own files plus ``store.json``, a small manifest that
says which backend wrote the folder, how many images are committed, the options used,
and whether a write is under way. The manifest is what makes writes all-or-nothing for
every backend: it is replaced atomically (write a temporary file, then ``os.replace``)
and marked ``"writing"`` while images go in, so a write that is cut off midway leaves a
store that reports itself incomplete rather than one that silently reads wrong images.

Backends subclass :class:`ImageStore` and implement a handful of hooks (``_create``,
``_open``, ``_close``, ``_begin_write``, ``_write_chunk``, ``_commit``, ``_rollback``,
``_read_one`` and, for speed, ``_read_many``). Everything callers see (validation,
chunked streaming, ids, errors, fork safety, disk usage) is written once, here.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .batch import ImageBatch, Shape, check_image, check_label, make_batch
from .errors import (
    CorruptDataError,
    ImageIndexError,
    ImageShapeError,
    IncompleteStoreError,
    LabelError,
    ModeError,
    ReadOnlyStoreError,
    StoreExistsError,
    StoreNotFoundError,
    StoreNotWritableError,
    WrongBackendError,
)
from .write_behind import WriteGroup

MANIFEST_NAME = "store.json"
FORMAT_VERSION = 1
MODES = ("r", "w", "a")

_process_id = os.getpid()


def current_pid() -> int:
    """This process's id, without a system call: every read checks it, and ``os.getpid()``
    cost 0.15 us of a 2.2 us LMDB ``read_one``. Kept right across ``fork`` by the hook below.
    """
    return _process_id


def _after_fork_in_child() -> None:
    global _process_id
    _process_id = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and what it can do; the dashboard shows ``label`` and ``description``."""

    name: str
    label: str
    description: str
    lossless: bool = True
    random_access: bool = True
    variable_shapes: bool = True
    appendable: bool = True
    compressed: bool = False
    one_file_per_image: bool = False
    channels: tuple[int, ...] = (1, 3, 4)
    """Channel counts the backend stores; 1 covers both (H,W) and (H,W,1) images."""
    unavailable_reason: str | None = None
    """Why the backend cannot be used here (its library is missing or fails to import), or None."""

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None


@dataclass(frozen=True)
class DiskUsage:
    """Bytes a store takes: ``apparent_bytes`` (file sizes) and ``allocated_bytes`` (blocks)."""

    apparent_bytes: int
    allocated_bytes: int
    files: int

    def bytes_per_image(self, count: int) -> float:
        return self.allocated_bytes / count if count else 0.0


def measure_disk_usage(path: str | os.PathLike[str]) -> DiskUsage:
    """Sum ``st_size`` and ``st_blocks * 512`` of every file under ``path``.

    Hard links are counted once. A sparse file (an LMDB map) shows a large apparent
    size and a small allocated one: both numbers are honest, for different questions.
    """
    seen: set[tuple[int, int]] = set()
    apparent = allocated = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            stat = os.lstat(os.path.join(root, name))
            key = (stat.st_dev, stat.st_ino)
            if key in seen:
                continue
            seen.add(key)
            apparent += stat.st_size
            allocated += stat.st_blocks * 512
            files += 1
    return DiskUsage(apparent, allocated, files)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def read_manifest(path: Path) -> dict[str, Any]:
    """Read a store's manifest, or explain why ``path`` is not a store."""
    manifest_path = path / MANIFEST_NAME
    if not path.exists():
        raise StoreNotFoundError(
            f"no image store at {path}: check the path, or create one with open_store(name, path, 'w')"
        )
    if not manifest_path.is_file():
        raise StoreNotFoundError(
            f"{path} is not an image store (it has no {MANIFEST_NAME}); "
            "point at a folder written by this library, or create one with mode 'w'"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        int(manifest["count"]), str(manifest["backend"])
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptDataError(
            f"{manifest_path} is damaged ({error}); the store cannot be trusted: write it again with mode 'w'"
        ) from None
    return manifest


def _prepare_empty_folder(path: Path) -> None:
    """Make ``path`` an empty folder, removing an old store but never other files."""
    try:
        _clear_old_store(path)
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        if isinstance(error, FileExistsError):
            raise
        raise StoreNotWritableError(
            f"cannot write to {path} ({error.strerror or error}); "
            "choose a folder you can write to, or fix its permissions"
        ) from None


def _clear_old_store(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise StoreExistsError(f"{path} is a file; a store is a folder: choose another path")
    if path.is_dir() and any(path.iterdir()):
        if not (path / MANIFEST_NAME).exists():
            raise StoreExistsError(
                f"{path} holds files that are not an image store; "
                "choose a new or empty folder so nothing of yours is deleted"
            )
        shutil.rmtree(path)


class ImageStore(ABC):
    """A folder of images with integer labels, read and written through one interface.

    Args:
        path: the store's folder.
        mode: ``"w"`` creates (replacing a store already there), ``"a"`` appends (creating
            the store if missing), ``"r"`` reads.
        **options: backend options (see the backend's ``default_options``); recorded in the
            manifest, so a store reopened later uses the options it was written with.
    """

    info: ClassVar[BackendInfo]
    default_options: ClassVar[dict[str, Any]] = {}
    chunk_images: ClassVar[int] = 1024
    chunk_bytes: ClassVar[int] = 64 * 2**20
    fork_safe: ClassVar[bool] = True
    """False when the format's library must not be used in a forked child (it starts threads
    a fork cannot copy): DataLoaders over it then start their workers with ``spawn``."""
    write_behind_images: int = 0
    """``write_one`` images kept in memory and written as one group (0: each is written at once).

    Backends with a high fixed cost per commit set it (see :mod:`storage.write_behind`); set
    it on a store (``store.write_behind_images = 0``) to write each image as it comes.
    """
    write_behind_seconds: float = 1.0
    """A ``write_one`` this long after the group's first image writes the group."""

    def __init__(self, path: str | os.PathLike[str], mode: str = "r", **options: Any) -> None:
        if mode not in MODES:
            raise ModeError(f"mode {mode!r} is not one of 'r' (read), 'w' (create) or 'a' (append)")
        if mode == "a" and not self.info.appendable:
            raise ModeError(f"the {self.info.name} backend cannot append; write a new store with mode 'w'")
        self.path = Path(path)
        self.mode = mode
        self._pid = os.getpid()
        self._closed = False
        self._dirty = False
        self._write_behind = WriteGroup()
        self._check_options(options)
        if mode == "w" or (mode == "a" and not self.path.exists()):
            self._start_new_store(options)
        else:
            self._open_existing_store(options)

    # -- opening and closing ---------------------------------------------------------

    def _check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            known = ", ".join(sorted(self.default_options)) or "none"
            raise ModeError(
                f"unknown option(s) {', '.join(unknown)} for the {self.info.name} backend; it takes: {known}"
            )

    def _start_new_store(self, options: dict[str, Any]) -> None:
        _prepare_empty_folder(self.path)
        self.options = {**self.default_options, **options}
        self._count = 0
        self.backend_state: dict[str, Any] = {}
        self.class_names: list[str] | None = None
        self._create()
        self._write_manifest("complete")

    def _open_existing_store(self, options: dict[str, Any]) -> None:
        manifest = read_manifest(self.path)
        if manifest["backend"] != self.info.name:
            raise WrongBackendError(
                f"{self.path} holds a {manifest['backend']!r} store, not {self.info.name!r}; "
                f"open it with open_store({manifest['backend']!r}, ...)"
            )
        if manifest.get("state") != "complete" and self.mode == "r":
            raise IncompleteStoreError(
                f"the store at {self.path} is incomplete: a write was interrupted after "
                f"{manifest['count']} images were committed. Reopen it with mode 'a' to keep "
                "those images and go on, or rewrite it with mode 'w'"
            )
        self.options = {**self.default_options, **manifest.get("options", {})}
        self._count = int(manifest["count"])
        self.backend_state = dict(manifest.get("backend_state", {}))
        names = manifest.get("class_names")
        self.class_names = [str(name) for name in names] if isinstance(names, list) else None
        self._open()
        if manifest.get("state") != "complete":
            self._rollback(self._count)
            self._write_manifest("complete")

    def _write_manifest(self, state: str) -> None:
        manifest = {
            "backend": self.info.name,
            "format_version": FORMAT_VERSION,
            "count": self._count,
            "state": state,
            "options": self.options,
            "backend_state": self.backend_state,
        }
        if self.class_names is not None:
            manifest["class_names"] = self.class_names
        try:
            write_file_atomically(self.path / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
        except OSError as error:
            raise StoreNotWritableError(f"cannot update {self.path / MANIFEST_NAME}: {error}") from None

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Name the labels: label ``i`` is ``class_names[i]``. Kept in the manifest, read back as ``class_names``.

        The pixels and labels of every backend hold numbers only; without the names a store
        converted from a folder of class subfolders would lose what its labels mean.
        """
        self._require_writable()
        if isinstance(class_names, str) or not all(isinstance(name, str) for name in class_names):
            raise LabelError(f"class names must be a list of strings, got {class_names!r}")
        self.class_names = list(class_names)
        self._write_manifest("writing" if self._dirty else "complete")

    def close(self) -> None:
        """Finish pending writes (marking the store complete) and release file handles."""
        if self._closed:
            return
        try:
            if self._pid == os.getpid():
                self._write_group()
                if self._dirty:
                    self._commit(self._count)
                    self._write_manifest("complete")
                    self._dirty = False
        finally:
            self._closed = True
            self._close()

    def flush(self) -> None:
        """Make ``write_one`` calls so far durable and mark the store complete."""
        self._require_writable()
        self._write_group()
        if self._dirty:
            self._commit(self._count)
            self._write_manifest("complete")
            self._dirty = False

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Only release handles: a store dropped without close() after write_one keeps
        # reporting itself incomplete, which is the honest state.
        if not getattr(self, "_closed", True):
            try:
                self._closed = True
                if self._pid == os.getpid():
                    self._close()
            except Exception:
                pass

    def __getstate__(self) -> dict[str, Any]:
        """Pickle as (path, options) so read-only stores travel to worker processes."""
        if self.mode != "r":
            raise TypeError("only stores opened with mode 'r' can be sent to other processes")
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], "r")  # type: ignore[misc]

    def _ensure_process(self) -> None:
        """Reopen file handles in a child process: handles do not survive ``fork``."""
        if self._closed:
            raise ValueError(f"the store at {self.path} is closed; open it again with open_store()")
        if self._pid != current_pid():
            self._pid = current_pid()
            self._open()

    # -- writing ---------------------------------------------------------------------

    def _require_writable(self) -> None:
        self._ensure_process()
        if self.mode == "r":
            raise ReadOnlyStoreError(
                f"the store at {self.path} was opened read-only; open it with mode 'a' to add images"
            )

    def write_batch(self, images: object, labels: object, progress: ProgressCallback | None = None) -> np.ndarray:
        """Write many images in one all-or-nothing step and return their ids.

        The batch streams to the backend in chunks of ``chunk_images``, so memory beyond the
        caller's own input stays bounded. ``progress(done, total)`` is called after each
        chunk; if it raises (to cancel), the batch is rolled back and the error propagates.
        """
        self._require_writable()
        batch = make_batch(images, labels)
        self._write_group()
        return self._write_checked_batch(batch, progress)

    def _write_checked_batch(self, batch: ImageBatch, progress: ProgressCallback | None = None) -> np.ndarray:
        """Write a validated batch all-or-nothing: ``write_batch`` and each write-behind group."""
        self._check_batch_shapes(batch)
        first_id = self._count
        total = len(batch)
        saved_state = copy.deepcopy(self.backend_state)
        self._write_manifest("writing")
        try:
            self._begin_write(first_id, batch)
            step = self._chunk_length(batch)
            for start in range(0, total, step):
                stop = min(start + step, total)
                self._write_chunk(batch.chunk(start, stop), batch.labels[start:stop], first_id + start)
                if progress is not None:
                    progress(stop, total)
            self._commit(first_id + total)
        except BaseException:
            self.backend_state = saved_state
            self._rollback(first_id)
            self._write_manifest("complete")
            raise
        self._count = first_id + total
        self._dirty = False
        self._write_manifest("complete")
        return np.arange(first_id, self._count)

    def _chunk_length(self, batch: ImageBatch) -> int:
        """Images per streamed chunk: ``chunk_images``, fewer for big images (``chunk_bytes``)."""
        bytes_per_image = max(1, batch.nbytes // len(batch))
        return max(1, min(self.chunk_images, self.chunk_bytes // bytes_per_image))

    def write_one(self, image: object, label: object) -> int:
        """Write one image and return its id.

        Backends with ``write_behind_images`` keep the image in a write-behind group,
        written as one all-or-nothing batch when the group is full or old, at
        ``flush()``/``close()``, at the next ``write_batch`` and before a bulk read of its
        ids (``read_one`` answers from the group): a crash loses at most that group. Other
        backends write the image at once and mark the store complete at the next
        ``write_batch``, ``flush()`` or ``close()``.
        """
        self._require_writable()
        check_image(image)
        label = check_label(label)
        batch = ImageBatch(image[np.newaxis], np.array([label], dtype=np.int64), tuple(image.shape), image.nbytes)
        self._check_batch_shapes(batch)
        if self.write_behind_images > 0:
            return self._add_to_group(image, label)
        if not self._dirty:
            self._write_manifest("writing")
            self._dirty = True
        first_id = self._count
        saved_state = copy.deepcopy(self.backend_state)
        try:
            self._begin_write(first_id, batch)
            self._write_chunk(batch.images, batch.labels, first_id)
            self._commit_one(first_id + 1)
        except BaseException:
            self.backend_state = saved_state
            self._rollback(first_id)
            raise
        self._count = first_id + 1
        return first_id

    def _add_to_group(self, image: np.ndarray, label: int) -> int:
        """Keep ``image`` in the write-behind group; write the group when it is due.

        A group holds one image size unless the store already mixes sizes: an image of a
        new size writes the group so far and then itself at once, so a store that cannot
        take that size (or must change its layout for it) answers at this call.
        """
        image_id = len(self)
        shape = tuple(image.shape)
        reference = self._write_behind.shape or self.uniform_shape
        if self.backend_state.get("mixed_shapes") or reference in (None, shape):
            self._write_behind.add(image, label)
            if self._write_behind.is_due(self.write_behind_images, self.chunk_bytes, self.write_behind_seconds):
                self._write_group()
            return image_id
        self._write_group()
        self._write_checked_batch(make_batch(image[np.newaxis], [label]))
        return image_id

    def _write_group(self) -> None:
        """Write the write-behind group as one batch; it stays in memory if that fails."""
        if not len(self._write_behind):
            return
        images, labels = self._write_behind.as_batch()
        self._write_checked_batch(make_batch(images, labels))
        self._write_behind.clear()

    def _check_batch_shapes(self, batch: ImageBatch) -> None:
        """Refuse channel counts the format cannot hold, and mixed sizes where it needs one size."""
        shapes = [batch.uniform_shape] if batch.is_uniform else batch.shapes(0, len(batch))
        for shape in shapes:
            channels = shape[2] if len(shape) == 3 else 1
            if channels not in self.info.channels:
                raise ImageShapeError(
                    f"the {self.info.name} backend cannot store images with {channels} channel(s) (shape {shape}); "
                    f"it stores {', '.join(map(str, self.info.channels))} channel(s): convert the images or choose another backend"
                )
        if batch.is_uniform and self.uniform_shape in (None, batch.uniform_shape):
            return
        if not self.info.variable_shapes:
            what = "images of different sizes" if not batch.is_uniform else f"images of shape {batch.uniform_shape}"
            raise ImageShapeError(
                f"the {self.info.name} backend stores one image size per store and got {what}"
                + (f" for a store of {self.uniform_shape} images" if self.uniform_shape else "")
                + "; resize the images first or choose a backend with variable sizes (png, lmdb, hdf5)"
            )

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count + len(self._write_behind)

    def _check_id(self, image_id: object) -> int:
        if type(image_id) is int and 0 <= image_id < self._count:  # the common case, checked quickly
            return image_id
        if isinstance(image_id, (bool, np.bool_)) or not isinstance(image_id, (int, np.integer)):
            raise ImageIndexError(f"image id {image_id!r} is not an integer")
        count = len(self)
        if not 0 <= image_id < count:
            raise ImageIndexError(
                f"image id {image_id} is out of range: this store holds {count} images (ids 0..{count - 1})"
            )
        return int(image_id)

    def read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        """Read one image and its label (from the write-behind group if it is still there)."""
        self._ensure_process()
        image_id = self._check_id(image_id)
        if image_id >= self._count:
            return self._write_behind.image(image_id - self._count)
        return self._read_one(image_id)

    def read_batch(
        self, ids: Iterable[int] | np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Read images by id, in the order given.

        Returns one (N,H,W[,C]) array when the images share a shape, else a list of
        arrays, and an int64 array of labels. ``out`` (uniform stores only) receives the
        pixels, so callers can reuse a buffer they allocated and touched beforehand.
        """
        self._ensure_process()
        id_array = np.asarray(ids if not isinstance(ids, range) else np.arange(ids.start, ids.stop, ids.step))
        if id_array.ndim != 1 or (id_array.size and id_array.dtype.kind not in "iu"):
            raise ImageIndexError(
                f"ids must be a flat sequence of integers, got {id_array.dtype} of shape {id_array.shape}"
            )
        id_array = id_array.astype(np.int64, copy=False)
        if id_array.size and (id_array.min() < 0 or id_array.max() >= len(self)):
            bad = id_array[(id_array < 0) | (id_array >= len(self))][0]
            self._check_id(int(bad))
        if id_array.size and id_array.max() >= self._count:
            self._write_group()  # a bulk read of ids still in the group: write it, then read as usual
        if out is not None and self.uniform_shape is not None:
            expected = (len(id_array), *self.uniform_shape)
            if out.shape != expected or out.dtype != np.uint8 or not out.flags.c_contiguous:
                raise ImageShapeError(
                    f"out has shape {out.shape} and dtype {out.dtype}; it must be a C-contiguous {expected} uint8 array"
                )
        if not id_array.size:  # the same empty answer from every backend, shaped like the store's images
            empty = np.empty((0, *(self.uniform_shape or ())), dtype=np.uint8) if out is None else out
            return empty, np.empty(0, dtype=np.int64)
        return self._read_many(id_array, out)

    def read_all(self, out: np.ndarray | None = None) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Read every image in id order."""
        return self.read_batch(np.arange(len(self)), out)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        """Yield (image, label) in id order, reading ``chunk_images`` at a time."""
        for start in range(0, len(self), self.chunk_images):
            images, labels = self.read_batch(np.arange(start, min(start + self.chunk_images, len(self))))
            for image, label in zip(images, labels):
                yield image, int(label)

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Read ``ids`` one by one; backends override this with a faster path."""
        pairs = [self._read_one(int(i)) for i in ids]
        labels = np.fromiter((label for _, label in pairs), dtype=np.int64, count=len(pairs))
        return stack_if_uniform([image for image, _ in pairs], out, self.uniform_shape), labels

    @property
    def uniform_shape(self) -> Shape | None:
        """The one image shape of this store, or None if empty or of mixed sizes."""
        shape = self.backend_state.get("uniform_shape")
        return tuple(shape) if shape else None

    def _note_shapes(self, batch: ImageBatch) -> None:
        """Track whether every image written so far shares one shape."""
        if self._count == 0 and batch.is_uniform:
            self.backend_state["uniform_shape"] = list(batch.uniform_shape)
            self.backend_state["mixed_shapes"] = False
        elif not batch.is_uniform or batch.uniform_shape != self.uniform_shape:
            self.backend_state["uniform_shape"] = None
            self.backend_state["mixed_shapes"] = True

    def disk_usage(self) -> DiskUsage:
        """Apparent bytes, allocated bytes and file count of the whole store folder."""
        return measure_disk_usage(self.path)

    @classmethod
    def torch_dataset(cls, path: str | os.PathLike[str], transform: Callable | None = None) -> Any:
        """The PyTorch dataset a training loop should read this format's store at ``path`` with.

        The engine's ``loader`` operation asks for it here, so a format whose library ships
        its own dataset class can return that instead. Default:
        :class:`storage.torch.StoreDataset` (importing torch only now).
        """
        from .torch import StoreDataset

        return StoreDataset(cls.info.name, path, transform=transform)

    @classmethod
    def torch_loader(
        cls,
        path: str | os.PathLike[str],
        batch_size: int,
        num_workers: int = 0,
        *,
        seed: int | None = None,
        **options: Any,
    ) -> Any:
        """One shuffled epoch of the store at ``path``, read the way this format's users read it.

        Yields ``(images, labels)`` batches (or ``(images, labels, ids)`` when the loader,
        not a sampler in the main process, decides the order); ``options`` go to the
        DataLoader (``timeout``, ...). Default: :func:`storage.torch.make_loader` over
        :meth:`torch_dataset`, a shuffled DataLoader whose sampler records the order.
        """
        from .torch import make_loader

        return make_loader(cls.torch_dataset(path), batch_size, num_workers, seed=seed, **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.path)!r} mode={self.mode!r} images={len(self)}>"

    # -- backend hooks ---------------------------------------------------------------

    @abstractmethod
    def _create(self) -> None:
        """Create the backend's files in the new, empty store folder."""

    @abstractmethod
    def _open(self) -> None:
        """Open the backend's existing files (also called again in a forked child)."""

    @abstractmethod
    def _close(self) -> None:
        """Release file handles."""

    def _begin_write(self, first_id: int, batch: ImageBatch) -> None:
        """Prepare to write ``batch`` at ids ``first_id``..; default records its shapes."""
        self._note_shapes(batch)

    @abstractmethod
    def _write_chunk(self, images: np.ndarray | list[np.ndarray], labels: np.ndarray, first_id: int) -> None:
        """Write a bounded chunk of images at ids ``first_id``..."""

    @abstractmethod
    def _commit(self, count: int) -> None:
        """Make everything written so far durable; the store will hold ``count`` images."""

    def _commit_one(self, count: int) -> None:
        """Finish a ``write_one``; by default the same as a batch commit."""
        self._commit(count)

    @abstractmethod
    def _rollback(self, count: int) -> None:
        """Forget whatever was written beyond the first ``count`` images."""

    @abstractmethod
    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        """Read one image (id already checked)."""


def stack_if_uniform(
    images: list[np.ndarray], out: np.ndarray | None = None, uniform_shape: Shape | None = None
) -> np.ndarray | list[np.ndarray]:
    """Return one stacked array when all images share a shape, else the list itself."""
    if not images:
        return np.empty((0, *(uniform_shape or ())), dtype=np.uint8)
    first = images[0].shape
    if any(image.shape != first for image in images):
        return images
    if out is None:
        return np.stack(images)
    for index, image in enumerate(images):
        out[index] = image
    return out
