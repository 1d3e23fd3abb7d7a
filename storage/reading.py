"""The read side every store shares: the protocol readers rely on, and its code written once.

An :class:`~storage.base.ImageStore` reads one backend's folder; a
:class:`~storage.sharded.ShardedStore` reads many such stores as one. Code that only reads
(the torch datasets, the benchmark's reads, the dashboard's viewer) should not have to ask
which it holds: both satisfy :class:`ImageReader`. Both also take its code from
:class:`ImageReaderBase`, so the id checks, the ``out`` checks, batches, ``read_all`` and
iteration behave (and fail, with the same messages) in one way; a subclass only reads ids
that are already checked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

from .batch import Shape
from .errors import CorruptDataError, ImageIndexError, ImageShapeError, StorageError, StoreNotReadableError

if TYPE_CHECKING:
    from .info import BackendInfo, DiskUsage
    from .integrity import IntegrityReport


def damaged_store_error(path: Path, error: BaseException, doing: str) -> StorageError:
    """The library's error for a backend library's exception while ``doing`` something with the store at ``path``."""
    if isinstance(error, PermissionError):
        return StoreNotReadableError(f"cannot read the store at {path} ({error}); check its permissions")
    return CorruptDataError(
        f"the store at {path} is damaged: {doing} failed ({type(error).__name__}: {error}); run "
        f"`python -m storage verify {path}` to see what is damaged, then restore it from a copy or write it again"
    )


def converts_to_storage_error(error: BaseException) -> bool:
    """Whether a backend library's exception is damage to report as a StorageError (not a bug, nor Ctrl+C)."""
    return isinstance(error, Exception) and not isinstance(
        error, (StorageError, MemoryError, AttributeError, NameError, AssertionError, NotImplementedError)
    )


@runtime_checkable
class ImageReader(Protocol):
    """What an opened store offers whoever reads it, whichever kind of store it is.

    :class:`~storage.base.ImageStore` and :class:`~storage.sharded.ShardedStore` both
    satisfy it: a function that only reads images takes an ``ImageReader`` and works on
    either without asking which one it was given.
    """

    path: Path
    mode: str

    @property
    def info(self) -> BackendInfo:
        """The backend's name, label and capability flags."""
        ...

    @property
    def uniform_shape(self) -> Shape | None:
        """The one shape of every image, or None if the store is empty or mixes sizes."""
        ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]: ...

    def read_one(self, image_id: int, verify: bool = False) -> tuple[np.ndarray, int]: ...

    def read_batch(
        self, ids: Iterable[int] | np.ndarray, out: np.ndarray | None = None, verify: bool = False
    ) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]: ...

    def read_all(
        self, out: np.ndarray | None = None, verify: bool = False
    ) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]: ...

    def verify(self) -> IntegrityReport: ...

    def disk_usage(self) -> DiskUsage: ...

    def close(self) -> None: ...

    def __enter__(self) -> ImageReader: ...

    def __exit__(self, *exc_info: object) -> None: ...


class ImageReaderBase(ABC):
    """The read methods of :class:`ImageReader`, built on two reads of checked ids.

    A subclass gives ``uniform_shape``, ``_read_one`` and ``_read_many``, and keeps in
    ``_count`` how many images those two reach. A store may hold more than that in memory
    (images ``_count``..``len(self)``, a write-behind group not yet written): it then
    overrides ``__len__``, ``_read_pending`` (one such image) and ``_settle_pending`` (write
    them, before a bulk read reaches them).
    """

    chunk_images: ClassVar[int] = 1024
    """Images handled per step: iteration reads this many at a time, and a store writes as many."""
    _kind_in_messages: ClassVar[str] = "store"
    """How error messages name this kind of store ("this store holds 12 images")."""
    _count: int

    def __len__(self) -> int:
        return self._count

    @property
    @abstractmethod
    def uniform_shape(self) -> Shape | None:
        """The one shape of every image, or None if the store is empty or mixes sizes."""

    def read_one(self, image_id: int, verify: bool = False) -> tuple[np.ndarray, int]:
        """Read one image and its label; ``verify=True`` checks it against its checksum first."""
        if verify:
            return self._read_one_verified(image_id)
        self._ensure_process()
        image_id = self._check_id(image_id)
        if image_id >= self._count:
            return self._read_pending(image_id)
        try:
            return self._read_one(image_id)
        except Exception as error:
            if not converts_to_storage_error(error):
                raise
            raise damaged_store_error(self.path, error, f"reading image {image_id}") from error

    def _read_one_verified(self, image_id: int) -> tuple[np.ndarray, int]:
        images, labels = self.read_batch([image_id], verify=True)
        return images[0], int(labels[0])

    def read_batch(
        self, ids: Iterable[int] | np.ndarray, out: np.ndarray | None = None, verify: bool = False
    ) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Read images by id, in the order given.

        Returns one (N,H,W[,C]) array when the images share a shape, else a list of
        arrays, and an int64 array of labels. ``out`` (uniform stores only) receives the
        pixels, so callers can reuse a buffer they allocated and touched beforehand.
        ``verify=True`` reads whole runs of images and checks each against the checksum
        recorded when it was written: damage raises :class:`~storage.errors.CorruptDataError`
        instead of giving wrong pixels (docs/formats.md has the cost).
        """
        self._ensure_process()
        id_array = self._checked_ids(ids)
        if id_array.size and id_array.max() >= self._count:
            self._settle_pending()
        self._check_out(out, len(id_array))
        if not id_array.size:  # the same empty answer from every store, shaped like the store's images
            empty = np.empty((0, *(self.uniform_shape or ())), dtype=np.uint8) if out is None else out
            return empty, np.empty(0, dtype=np.int64)
        try:
            if verify:
                return self._read_verified(id_array, out)
            return self._read_many(id_array, out)
        except Exception as error:
            if not converts_to_storage_error(error):
                raise
            raise damaged_store_error(self.path, error, f"reading {len(id_array):,} images") from error

    def read_all(
        self, out: np.ndarray | None = None, verify: bool = False
    ) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Read every image in id order (``verify=True``: each checked against its checksum)."""
        return self.read_batch(np.arange(len(self)), out, verify)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        """Yield (image, label) in id order, reading ``chunk_images`` at a time."""
        for start in range(0, len(self), self.chunk_images):
            images, labels = self.read_batch(np.arange(start, min(start + self.chunk_images, len(self))))
            for image, label in zip(images, labels):
                yield image, int(label)

    # -- the checks ------------------------------------------------------------------

    def _check_id(self, image_id: object) -> int:
        if type(image_id) is int and 0 <= image_id < self._count:  # the common case, checked quickly
            return image_id
        if isinstance(image_id, (bool, np.bool_)) or not isinstance(image_id, (int, np.integer)):
            raise ImageIndexError(f"image id {image_id!r} is not an integer")
        count = len(self)
        if not 0 <= image_id < count:
            raise ImageIndexError(
                f"image id {image_id} is out of range: this {self._kind_in_messages} holds {count} images "
                f"(ids 0..{count - 1})"
            )
        return int(image_id)

    def _checked_ids(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """``ids`` as a flat int64 array, or the error for the first id that is not an image's."""
        id_array = np.asarray(ids if not isinstance(ids, range) else np.arange(ids.start, ids.stop, ids.step))
        if id_array.ndim != 1 or (id_array.size and id_array.dtype.kind not in "iu"):
            raise ImageIndexError(
                f"ids must be a flat sequence of integers, got {id_array.dtype} of shape {id_array.shape}"
            )
        id_array = id_array.astype(np.int64, copy=False)
        count = len(self)
        if id_array.size and (id_array.min() < 0 or id_array.max() >= count):
            self._check_id(int(id_array[(id_array < 0) | (id_array >= count)][0]))
        return id_array

    def _check_out(self, out: np.ndarray | None, count: int) -> None:
        """Refuse an ``out`` buffer that cannot take ``count`` images of the store's one shape."""
        shape = self.uniform_shape if out is not None else None
        if shape is None:
            return
        expected = (count, *shape)
        if out.shape != expected or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ImageShapeError(
                f"out has shape {out.shape} and dtype {out.dtype}; it must be a C-contiguous {expected} uint8 array"
            )

    # -- what a subclass gives -------------------------------------------------------

    def _ensure_process(self) -> None:
        """Refuse reads of a closed store and reopen handles after ``fork``; nothing to do by default."""
        return

    def _read_pending(self, image_id: int) -> tuple[np.ndarray, int]:
        """Read image ``image_id`` of those held in memory beyond ``_count``; a plain reader has none."""
        raise ImageIndexError(f"image id {image_id} is not in this {self._kind_in_messages}")

    def _settle_pending(self) -> None:
        """Write the images held in memory beyond ``_count``, so ``_read_many`` reaches them."""
        return

    @abstractmethod
    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        """Read one image (id already checked, below ``_count``)."""

    @abstractmethod
    def _read_many(self, ids: np.ndarray, out: np.ndarray | None) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Read a non-empty int64 array of checked ids into ``out`` (checked) or new arrays."""

    @abstractmethod
    def _read_verified(self, ids: np.ndarray, out: np.ndarray | None):
        """As ``_read_many``, each image checked against its checksum (CorruptDataError if one does not match)."""
