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
chunked streaming, ids, errors, fork safety, disk usage) is written once: here, and for
the read side every store shares, in :mod:`storage.reading`.
"""

from __future__ import annotations

import copy
import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import manifest
from .batch import ImageBatch, Shape, check_image, check_label, make_batch, stack_if_uniform
from .encoded import EncodingMixin
from .encodings import EncodedImage
from .errors import (
    ImageShapeError,
    LabelError,
    ModeError,
    ReadOnlyStoreError,
    StorageError,
)
from .info import BackendInfo, DiskUsage, ShapeRefusal, measure_disk_usage  # noqa: F401 (re-exported)
from .integrity import IntegrityMixin
from .lifecycle import StoreLifecycleMixin
from .locking import WriterLock
from .manifest import FORMAT_VERSION, MANIFEST_NAME, read_manifest, write_file_atomically  # noqa: F401 (re-exported)
from .reading import ImageReaderBase
from .write_behind import WriteGroup

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


class ImageStore(StoreLifecycleMixin, EncodingMixin, IntegrityMixin, ImageReaderBase):
    """A folder of images with integer labels, read and written through one interface.

    Args:
        path: the store's folder.
        mode: ``"w"`` creates (replacing a store already there), ``"a"`` appends (creating
            the store if missing), ``"r"`` reads.
        **options: backend options (see the backend's ``default_options``), and the options
            every store takes: ``max_side`` / ``shorter_side`` (resize at write time, never
            enlarging) and, on backends that hold images of mixed sizes, ``encoding``
            (``"raw"`` pixels, the default; ``"source"`` bytes; ``"png"``, ``"jpeg:Q"``,
            ``"webp"``: see :mod:`storage.encodings`). Recorded in the manifest, so a store
            reopened later uses the options it was written with.
    """

    info: ClassVar[BackendInfo]
    default_options: ClassVar[dict[str, Any]] = {}
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
        self._writer_lock: WriterLock | None = None
        self._backend_open = False  # whether the backend's files are open (closed again if opening fails)
        self._replacing: tuple[Path, WriterLock] | None = None  # (the path of the store it replaces, that store's lock)
        self._check_options(options)
        try:
            if mode == "w" or (mode == "a" and not self.path.exists()):
                self._start_new_store(options)
            else:
                self._open_existing_store(options)
        except BaseException:
            self._let_go_after_failed_open()
            raise

    # -- opening and closing ---------------------------------------------------------

    def _check_options(self, options: dict[str, Any]) -> None:
        accepted = self.accepted_options()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            known = ", ".join(sorted(accepted)) or "none"
            raise ModeError(
                f"unknown option(s) {', '.join(unknown)} for the {self.info.name} backend; it takes: {known}"
            )
        self._check_storage_options(options)

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
        """Finish pending writes (marking the store complete), release file handles and the writer's lock.

        A store opened with ``"w"`` over an existing store takes that store's place here.
        """
        if self._closed:
            return
        try:
            if self._pid == os.getpid():
                self._write_group()
                if self._dirty:
                    self._commit_pending_writes()
        finally:
            self._closed = True
            try:
                self._close()
            finally:
                self._finish_writing()

    def _commit_pending_writes(self) -> None:
        """Commit ``write_one`` images written so far (the manifest said "writing" since the first)."""
        try:
            self._commit(self._count)
            self._commit_checksums()
        except OSError as error:
            raise self._write_error(error, None) from error
        self._write_manifest("complete")
        manifest.drop_previous(self.path)
        self._dirty = False

    def flush(self) -> None:
        """Make ``write_one`` calls so far durable and mark the store complete."""
        self._require_writable()
        self._write_group()
        if self._dirty:
            self._commit_pending_writes()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Only release handles and the lock: a store dropped without close() after write_one
        # keeps reporting itself incomplete, which is the honest state.
        if not getattr(self, "_closed", True):
            try:
                self._closed = True
                if self._pid == os.getpid():
                    self._close()
                    self._replacing = None  # an unfinished replacement is never swapped in
                    if self._writer_lock is not None:
                        self._writer_lock.release()
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
        """Write a validated batch all-or-nothing: ``write_batch`` and each write-behind group.

        The batch is resized and encoded as the store's options say, chunk by chunk, as the
        backend writes it (:mod:`storage.encoded`); every check runs before the first byte.
        """
        batch = self._resized_batch(batch)
        self._check_batch_shapes(batch)
        stored = self._stored_batch(batch)
        first_id = self._count
        total = len(batch)
        saved_state = copy.deepcopy(self.backend_state)
        self._mark_writing()
        try:
            self._note_decoded_shapes(batch)
            self._begin_write(first_id, stored)
            step = self._chunk_length(batch)
            for start in range(0, total, step):
                stop = min(start + step, total)
                self._write_stored_chunk(stored, start, stop, first_id + start)
                if progress is not None:
                    progress(stop, total)
            self._commit(first_id + total)
            self._commit_checksums()
            self._count = first_id + total
            self._write_manifest("complete")
        except BaseException as error:
            self._count = first_id
            self.backend_state = saved_state
            self._undo_write(first_id)
            if isinstance(error, Exception) and (isinstance(error, OSError) or manifest.is_disk_full(error)):
                raise self._write_error(error, stored.nbytes) from error
            raise
        manifest.drop_previous(self.path)
        self._dirty = False
        return np.arange(first_id, self._count)

    def _mark_writing(self) -> None:
        """Keep the manifest as it is (to put back without new space), then mark it "writing"."""
        manifest.keep_previous(self.path)
        try:
            self._write_manifest("writing")
        except BaseException:
            manifest.drop_previous(self.path)
            raise

    def _undo_write(self, first_id: int) -> None:
        """Roll a failed write back to ``first_id`` images and mark the store complete again.

        If the manifest cannot be written (a full disk), the one kept by :meth:`_mark_writing`
        is put back with a rename. If the backend cannot undo its part, the store stays
        marked "writing", and the next ``"a"`` undoes it.
        """
        try:
            self._rollback(first_id)
            self._rollback_checksums(first_id)
        except Exception:
            manifest.drop_previous(self.path)
            return
        try:
            self._write_manifest("complete")
        except StorageError:
            if not manifest.restore_previous(self.path):
                raise
        manifest.drop_previous(self.path)

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
        if isinstance(image, (EncodedImage, bytes, bytearray, memoryview)):
            return self._write_one_encoded(image, check_label(label))
        check_image(image)
        label = check_label(label)
        batch = ImageBatch(image[np.newaxis], np.array([label], dtype=np.int64), tuple(image.shape), image.nbytes)
        self._check_batch_shapes(batch)
        if self._encoding is not None:
            self._stored_batch(batch)  # refuse what the encoding cannot hold now, not when a group is written
        if self.write_behind_images > 0:
            return self._add_to_group(image, label)
        if self.transforms_images:  # resized or encoded: the batch path does it
            return int(self._write_checked_batch(batch)[0])
        if not self._dirty:
            self._mark_writing()
            self._dirty = True
        first_id = self._count
        saved_state = copy.deepcopy(self.backend_state)
        try:
            self._begin_write(first_id, batch)
            self._write_chunk(batch.images, batch.labels, first_id)
            self._checksum_chunk(batch.images, batch.labels, first_id)
            self._commit_one(first_id + 1)
        except BaseException as error:
            self.backend_state = saved_state
            self._rollback(first_id)
            self._rollback_checksums(first_id)
            if isinstance(error, OSError):
                raise self._write_error(error, batch.nbytes) from error
            raise
        self._count = first_id + 1
        return first_id

    def _write_one_encoded(self, item: EncodedImage | bytes, label: int) -> int:
        """``write_one`` of an image file's bytes: kept as they are by an encoded store, decoded by a raw one."""
        from .image_codec import EncodedImages

        images = EncodedImages([item])
        if self._encoding is None:
            return self.write_one(images[0], label)
        batch = make_batch(images, [label])
        self._check_batch_shapes(batch)
        self._stored_batch(batch)  # refuse what the encoding cannot hold now, not when a group is written
        if self.write_behind_images <= 0:
            return int(self._write_checked_batch(batch)[0])
        if len(self._write_behind) and not self._write_behind.encoded:
            self._write_group()  # a group holds pixels or encoded images, never both
        image_id = len(self)
        self._write_behind.add_encoded(images.items[0], label)
        if self._write_behind.is_due(self.write_behind_images, self.chunk_bytes, self.write_behind_seconds):
            self._write_group()
        return image_id

    def _add_to_group(self, image: np.ndarray, label: int) -> int:
        """Keep ``image`` in the write-behind group; write the group when it is due.

        A group holds one image size unless the store already mixes sizes: an image of a
        new size writes the group so far and then itself at once, so a store that cannot
        take that size (or must change its layout for it) answers at this call.
        """
        image_id = len(self)
        shape = tuple(image.shape)
        if self._write_behind.encoded:
            self._write_group()  # a group holds pixels or encoded images, never both
        reference = self._write_behind.shape or self._layout_shape
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
        refusal = self.info.shape_refusal(shapes, self.uniform_shape)
        if refusal is None:
            return
        if refusal.channels:
            channels, shape = next(iter(refusal.channels.items()))
            raise ImageShapeError(
                f"the {self.info.name} backend cannot store images with {channels} channel(s) (shape {shape}); "
                f"it stores {', '.join(map(str, self.info.channels))} channel(s): convert the images or choose another backend"
            )
        what = "images of different sizes" if not batch.is_uniform else f"images of shape {batch.uniform_shape}"
        raise ImageShapeError(
            f"the {self.info.name} backend stores one image size per store and got {what}"
            + (f" for a store of {self.uniform_shape} images" if self.uniform_shape else "")
            + "; resize the images first or choose a backend with variable sizes (png, lmdb, hdf5)"
        )

    # -- reading (the checks and batches are ImageReaderBase's) -----------------------

    def __len__(self) -> int:
        return self._count + len(self._write_behind)

    def _read_pending(self, image_id: int) -> tuple[np.ndarray, int]:
        """An image still in the write-behind group: ``read_one`` answers from memory, resized as it will be."""
        return self._write_behind.image(image_id - self._count, *self._resize)

    def _settle_pending(self) -> None:
        """A bulk read of ids still in the write-behind group writes the group, then reads as usual."""
        self._write_group()

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Read ``ids`` one by one; backends override this with a faster path."""
        pairs = [self._read_one(int(i)) for i in ids]
        labels = np.fromiter((label for _, label in pairs), dtype=np.int64, count=len(pairs))
        return stack_if_uniform([image for image, _ in pairs], out, self._layout_shape), labels

    @property
    def uniform_shape(self) -> Shape | None:
        """The one image shape of this store (as images are read back), or None if empty or of mixed sizes."""
        state = self.backend_state
        # Stores encoded before decoded shapes were tracked (parquet's PNG rows) hold real shapes in their layout.
        shape = (
            state.get("decoded_shape", state.get("uniform_shape"))
            if self._encoding is not None
            else state.get("uniform_shape")
        )
        return tuple(shape) if shape else None

    @property
    def _layout_shape(self) -> Shape | None:
        """The one shape of what the backend's files hold: the images', or None for encoded bytes.

        Backends lay out their files by this shape, not by :attr:`uniform_shape`, which an
        encoded store answers with the shape its images decode to.
        """
        shape = self.backend_state.get("uniform_shape")
        return tuple(shape) if shape else None

    def _note_shapes(self, batch: ImageBatch) -> None:
        """Track whether every image written so far shares one shape."""
        if self._count == 0 and batch.is_uniform:
            self.backend_state["uniform_shape"] = list(batch.uniform_shape)
            self.backend_state["mixed_shapes"] = False
        elif not batch.is_uniform or batch.uniform_shape != self._layout_shape:
            self.backend_state["uniform_shape"] = None
            self.backend_state["mixed_shapes"] = True

    def disk_usage(self) -> DiskUsage:
        """Apparent bytes, allocated bytes and file count of the whole store folder."""
        return measure_disk_usage(self.path)

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
