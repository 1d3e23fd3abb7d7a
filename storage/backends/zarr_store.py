"""Zarr v3: one sharded (N,H,W[,C]) uint8 array, one image per inner chunk, written by ``zarr``.

The store folder holds a Zarr v3 group ``images.zarr`` with two arrays, so any Zarr
reader (``zarr.open_group(path / "images.zarr")["images"]``) opens it:

* ``images``: uint8, inner chunks of ``chunk_images`` (one) image and shards of
  ``shard_images`` (1,000) images, each inner chunk compressed on its own (``compressor``
  "zstd" at ``level`` 3 by default; also "blosc", "gzip" or None). One file per shard
  keeps the file count low while a random read fetches only its own image's bytes
  (through the shard index). Zarr handles every inner chunk separately, at a cost of a few
  hundred microseconds each on the development machine, so one image per inner chunk
  makes bulk writes and reads slow; ``chunk_images=10`` (or more) makes them several
  times faster, at the price of decompressing that many images for one random read.
* ``labels``: int64, chunks of 10,000.

One image size per store (``variable_shapes=False``): a Zarr array is a regular grid, so
mixed sizes are refused with :class:`~storage.errors.ImageShapeError` before anything is
written. Gray (H,W) images make an (N,H,W) array.

Batches go into the arrays as they stream in, in pieces of at most 256 images cut at
shard boundaries (Zarr holds some bookkeeping per inner chunk while it writes, so this
keeps memory near the size of a chunk). Single images from ``write_one`` are kept in
memory until their shard is full (or ``flush``/``close``), so a shard is not read back and
rewritten for every image. The arrays grow with ``resize`` as images are written; a
cut-off write is undone by shrinking them back to the committed count and deleting the
shard files past it, which ``resize`` leaves behind. Zarr keeps no open files, and it
restarts its I/O thread in a forked child, so a child simply opens the group again.
"""

from __future__ import annotations

import math
import os
import shutil
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from ..base import ImageStore
from ..batch import ImageBatch
from ..errors import CorruptDataError, ModeError, StoreNotWritableError
from . import BUILTIN_INFO
from .npy_store import GrowingArray

GROUP = "images.zarr"
LABEL_CHUNK = 10_000
WRITE_PIECE = 256
COMPRESSORS = (None, "zstd", "blosc", "gzip")


def make_compressors(name: str | None, level: int) -> Any:
    if name is None:
        return None
    if name == "zstd":
        return ZstdCodec(level=level)
    if name == "blosc":
        return BloscCodec(cname="zstd", clevel=level, shuffle="shuffle")
    return GzipCodec(level=level)


class ZarrStore(ImageStore):
    """A Zarr v3 group: a sharded images array and a labels array."""

    info = BUILTIN_INFO["zarr"]
    default_options = {"compressor": "zstd", "level": 3, "shard_images": 1000, "chunk_images": 1}

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        if options.get("compressor", "zstd") not in COMPRESSORS:
            raise ModeError(f"compressor {options['compressor']!r} is not one of None, 'zstd', 'blosc', 'gzip'")
        for name, low, high in (("level", 0, 22), ("shard_images", 1, 2**31 - 1), ("chunk_images", 1, 2**31 - 1)):
            value = options.get(name, low)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ModeError(f"{name} {value!r} must be an integer from {low} to {high}")
        shard = options.get("shard_images", self.default_options["shard_images"])
        inner = options.get("chunk_images", self.default_options["chunk_images"])
        if shard % inner:
            raise ModeError(f"shard_images ({shard}) must be a multiple of chunk_images ({inner})")

    # -- opening ---------------------------------------------------------------------

    @property
    def _group_path(self) -> str:
        return str(self.path / GROUP)

    def _create(self) -> None:
        zarr.open_group(self._group_path, mode="w", zarr_format=3)
        self._open()

    def _open(self) -> None:
        try:
            self._group = zarr.open_group(self._group_path, mode="r" if self.mode == "r" else "r+", zarr_format=3)
            self._images = self._group["images"] if "images" in self._group else None
            self._labels = self._group["labels"] if "labels" in self._group else None
        except (FileNotFoundError, KeyError, ValueError) as error:
            raise CorruptDataError(
                f"{self._group_path} is not a readable Zarr group ({error}); write the store again"
            ) from None
        if getattr(self, "_label_values", None) is not None:
            return  # a forked child: what is in memory is still right
        if self._count and (self._images is None or self._labels is None or self._labels.shape[0] < self._count):
            raise CorruptDataError(f"{self._group_path} holds fewer images than the store committed; write it again")
        labels = self._labels[: self._count] if self._count else np.empty(0, np.int64)
        self._label_values = GrowingArray(np.asarray(labels, dtype=np.int64))
        self._pending: list[np.ndarray] = []  # images not yet in the arrays, from id self._written on
        self._written = self._count

    def _close(self) -> None:
        """Zarr holds no open files."""

    # -- writing ---------------------------------------------------------------------

    def _make_arrays(self, image_shape: tuple[int, ...]) -> None:
        shard = self.options["shard_images"]
        compressors = make_compressors(self.options["compressor"], self.options["level"])
        self._images = self._group.create_array(
            "images",
            shape=(0, *image_shape),
            chunks=(self.options["chunk_images"], *image_shape),
            shards=(shard, *image_shape),
            dtype="uint8",
            compressors=compressors,
            fill_value=0,
            overwrite=True,
        )
        self._labels = self._group.create_array(
            "labels", shape=(0,), chunks=(LABEL_CHUNK,), dtype="int64", compressors=ZstdCodec(level=3), overwrite=True
        )

    def _begin_write(self, first_id: int, batch: ImageBatch) -> None:
        super()._begin_write(first_id, batch)
        shape = batch.uniform_shape
        if self._images is None or (first_id == 0 and tuple(self._images.shape[1:]) != shape):
            self._make_arrays(shape)

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        self._label_values.truncate(first_id)
        self._label_values.append(labels)
        if len(labels) == 1:  # write_one: keep it in memory until its shard is full
            self._pending.append(np.array(images, dtype=np.uint8, copy=True))
            if (first_id + 1) % self.options["shard_images"] == 0:
                self._write_pending()
            return
        self._write_pending()
        self._store(first_id, images)

    def _write_pending(self) -> None:
        """Write the single images kept in memory into the arrays."""
        if self._pending:
            pending = np.concatenate(self._pending)
            self._pending = []
            self._store(self._written, pending)

    def _store(self, start: int, images: np.ndarray) -> None:
        """Write ``images`` and their labels at ids ``start``.., growing the arrays first.

        Zarr keeps some Python objects per inner chunk while it writes (about 1.5 KB each,
        whatever the image size), so images go in pieces of about ``WRITE_PIECE``,
        cut at shard boundaries: memory stays near the size of the chunk being written.
        """
        stop = start + len(images)
        shard = self.options["shard_images"]
        inner = self.options["chunk_images"]
        piece = max(inner, WRITE_PIECE // inner * inner)  # whole inner chunks where it can
        try:
            if self._images.shape[0] < stop:
                self._images.resize((stop, *self._images.shape[1:]))
                self._labels.resize((stop,))
            position = start
            while position < stop:
                piece_stop = min(stop, position - position % inner + piece, (position // shard + 1) * shard)
                self._images[position:piece_stop] = images[position - start : piece_stop - start]
                position = piece_stop
            self._labels[start:stop] = self._label_values.values[start:stop]
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self._group_path}: {error}") from None
        self._written = stop

    def _commit(self, count: int) -> None:
        self._write_pending()

    def _commit_one(self, count: int) -> None:
        """One image at a time: kept in memory until its shard fills, or ``flush``/``close``."""

    def _rollback(self, count: int) -> None:
        keep = max(0, count - self._written)
        self._pending = [np.concatenate(self._pending)[:keep]] if self._pending and keep else []
        self._write_pending()  # single images before ``count`` that were still in memory
        self._label_values.truncate(count)
        self._written = min(self._written, count)
        if self._images is None:
            return
        try:
            if self._images.shape[0] > count:
                self._images.resize((count, *self._images.shape[1:]))
                self._labels.resize((count,))
            self._delete_chunks_past(self._images, count, self.options["shard_images"])
            self._delete_chunks_past(self._labels, count, LABEL_CHUNK)
        except OSError as error:
            raise StoreNotWritableError(f"cannot undo an unfinished write in {self._group_path}: {error}") from None

    def _delete_chunks_past(self, array: zarr.Array, length: int, rows: int) -> None:
        """Delete the shard (or chunk) files wholly past ``length`` rows, which ``resize`` leaves."""
        folder = self.path / GROUP / array.name.strip("/") / "c"
        if not folder.is_dir():
            return
        first_unused = math.ceil(length / rows)
        for entry in os.scandir(folder):
            if entry.name.isdigit() and int(entry.name) >= first_unused:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)

    # -- reading ---------------------------------------------------------------------

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        if image_id >= self._written:
            self._write_pending()
        return np.asarray(self._images[image_id]), int(self._label_values.values[image_id])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        labels = self._label_values.values[ids]
        if len(ids) == 0:
            shape = tuple(self._images.shape[1:]) if self._images is not None else ()
            return (out if out is not None else np.empty((0, *shape), np.uint8)), labels
        if int(ids.max()) >= self._written:
            self._write_pending()
        first = int(ids[0])
        if ids[-1] - first == len(ids) - 1 and np.all(np.diff(ids) == 1):
            images = self._images[first : int(ids[-1]) + 1]
        else:
            images = self._images.get_orthogonal_selection((ids,))
        if out is None:
            return np.asarray(images), labels
        out[...] = images
        return out, labels
