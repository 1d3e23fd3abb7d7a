"""Zarr v3: one sharded (N,H,W[,C]) uint8 array, one image per inner chunk, 1,000 per shard file.

The store folder holds a Zarr v3 group ``images.zarr`` with two arrays, so any Zarr
reader (``zarr.open_group(path / "images.zarr")["images"]``) opens it:

* ``images``: uint8, inner chunks of ``chunk_images`` (one) image and shards of
  ``shard_images`` (1,000) images, each inner chunk compressed on its own (``compressor``
  "zstd" at ``level`` 3 by default; also "blosc", "gzip" or None). One file per shard
  keeps the file count low while a random read fetches only its own image's bytes
  (through the shard index).
* ``labels``: int64, chunks of 10,000, written through zarr-python.

zarr-python costs a few hundred microseconds per inner chunk (its asyncio codec
pipeline), which made this backend 20x slower than ``hdf5-blosc`` to write 10,000 CIFAR
images, 100x slower to read them and 150x per random image. So the images array is read
and written here, shard file by shard file (:mod:`.zarr_shards`, in the format of
:mod:`.zarr_shard_format`): the bytes zarr-python writes, encoded by the numcodecs
compressors it uses, each shard index checked against its crc32c, chunks encoded and
decoded on a few threads. ``python benchmarks/article_vs.py --rows zarr --repeats 3``
(10,000 CIFAR images, 2 shared cores) gave zarr / hdf5-blosc 1.2-2.7x to write,
1.1-3.0x to read all and 1.5-2.4x per random ``read_one`` (8-21 us) over eight runs,
depending on the load from other jobs (docs/formats.md has the output); what is left is
zstd itself, which spends about 20 us encoding and 3 us decoding each 3 KB image on its
own, where Blosc works on 64 KiB chunks. The default layout is kept. An array whose ``zarr.json`` asks for something else (an index
at the start, another codec, chunks that split an image) is read and written through
zarr-python, as before.

One image size per store (``variable_shapes=False``): a Zarr array is a regular grid, so
mixed sizes are refused with :class:`~storage.errors.ImageShapeError` before anything is
written. Gray (H,W) images make an (N,H,W) array.

Each shard is written to a temporary file in the store folder and renamed over its shard
file when full, so a shard file is always whole. Images that do not fill a shard (the end
of a batch, ``write_one`` images) wait in that temporary file, encoded, until the shard
fills or the batch, ``flush`` or ``close`` commits them; only then does ``zarr.json``
record the new shape. A cut-off write is undone by dropping the temporary file, deleting
the shard files past the committed count and setting the shape back. Shard files are
opened per process, so a forked child reads on its own descriptors.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from ..base import ImageStore
from ..batch import ImageBatch
from ..errors import CorruptDataError, ModeError, StoreNotWritableError
from . import BUILTIN_INFO
from .npy_store import GrowingArray
from .zarr_shard_format import UnsupportedLayout, read_layout
from .zarr_shards import ShardedImages

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


def delete_chunk_files_past(array_folder: Path, length: int, rows: int) -> None:
    """Delete the shard (or chunk) files wholly past ``length`` rows, which ``resize`` leaves."""
    folder = array_folder / "c"
    if not folder.is_dir():
        return
    first_unused = math.ceil(length / rows)
    for entry in os.scandir(folder):
        if entry.name.isdigit() and int(entry.name) >= first_unused:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


class ZarrPythonImages:
    """The images array through zarr-python: for a ``zarr.json`` that :class:`ShardedImages` does not handle.

    Same methods as :class:`ShardedImages`; images go in as they come, in pieces of
    about ``WRITE_PIECE`` cut at shard boundaries (zarr-python keeps some bookkeeping
    per inner chunk while it writes, so this keeps memory near the size of a chunk).
    """

    def __init__(self, group_path: str, mode: str, length: int) -> None:
        self._group_path, self._mode = group_path, mode
        self.array = zarr.open_group(group_path, mode=mode, zarr_format=3)["images"]
        self.written = length

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def append(self, first_id: int, images: np.ndarray) -> None:
        stop = first_id + len(images)
        if self.array.shape[0] < stop:
            self.array.resize((stop, *self.image_shape))
        inner = self.array.chunks[0]
        shard = (self.array.shards or self.array.chunks)[0]
        piece = max(inner, WRITE_PIECE // inner * inner)  # whole inner chunks where it can
        position = first_id
        while position < stop:
            piece_stop = min(stop, position - position % inner + piece, (position // shard + 1) * shard)
            self.array[position:piece_stop] = images[position - first_id : piece_stop - first_id]
            position = piece_stop
        self.written = stop

    def commit(self, count: int) -> None:
        """Written as they came."""

    def rollback(self, count: int) -> None:
        self.written = min(self.written, count)
        if self.array.shape[0] > count:
            self.array.resize((count, *self.image_shape))
        delete_chunk_files_past(Path(self._group_path) / "images", count, (self.array.shards or self.array.chunks)[0])

    def read_one(self, image_id: int) -> np.ndarray:
        return np.asarray(self.array[image_id])

    def read_range(self, start: int, stop: int, out: np.ndarray) -> None:
        out[...] = self.array[start:stop]

    def read_ids(self, ids: np.ndarray, out: np.ndarray) -> None:
        out[...] = self.array.get_orthogonal_selection((ids,))

    def after_fork(self) -> None:
        """zarr-python restarts its I/O thread in a forked child; open the array again there."""
        self.array = zarr.open_group(self._group_path, mode=self._mode, zarr_format=3)["images"]

    def close(self) -> None:
        """zarr-python holds no open files."""


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

    @property
    def _written(self) -> int:
        """Images in shard files; the rest of ``len(self)`` wait in the shard being written."""
        return self._images.written if self._images is not None else 0

    def _create(self) -> None:
        zarr.open_group(self._group_path, mode="w", zarr_format=3)
        self._open()

    def _open(self) -> None:
        if getattr(self, "_label_values", None) is not None:  # a forked child: what is in memory is still right
            if self._images is not None:
                self._images.after_fork()
            return
        try:
            self._group = zarr.open_group(self._group_path, mode="r" if self.mode == "r" else "r+", zarr_format=3)
            self._labels = self._group["labels"] if "labels" in self._group else None
            self._images = self._open_images(self._count) if "images" in self._group else None
        except (FileNotFoundError, KeyError, ValueError) as error:
            raise CorruptDataError(
                f"{self._group_path} is not a readable Zarr group ({error}); write the store again"
            ) from None
        if self._count and (self._images is None or self._labels is None or self._labels.shape[0] < self._count):
            held = self._labels.shape[0] if self._labels is not None and self._images is not None else 0
            raise CorruptDataError(
                f"{self._group_path} holds {held:,} images but the store committed {self._count:,}; write it again"
            )
        labels = self._labels[: self._count] if self._count else np.empty(0, np.int64)
        self._label_values = GrowingArray(np.asarray(labels, dtype=np.int64))

    def _stored_count(self) -> int:
        """The length of the images array in its ``zarr.json``; labels of another length are damage."""
        if self._images is None:
            return 0
        images = int(json.loads((self.path / GROUP / "images" / "zarr.json").read_text())["shape"][0])
        labels = self._labels.shape[0] if self._labels is not None else 0
        if labels != images:
            raise CorruptDataError(f"{self._group_path} is damaged: {images:,} images and {labels:,} labels")
        return images

    def _open_images(self, length: int) -> ShardedImages | ZarrPythonImages:
        """The images array, read and written directly unless its ``zarr.json`` asks for more."""
        folder = self.path / GROUP / "images"
        try:
            layout = read_layout(folder / "zarr.json")
        except UnsupportedLayout:
            return ZarrPythonImages(self._group_path, "r" if self.mode == "r" else "r+", length)
        return ShardedImages(folder, layout, length, self.path)

    def _close(self) -> None:
        if getattr(self, "_images", None) is not None:
            self._images.close()

    # -- writing ---------------------------------------------------------------------

    def _make_arrays(self, image_shape: tuple[int, ...]) -> None:
        if self._images is not None:
            self._images.close()
        shard = self.options["shard_images"]
        compressors = make_compressors(self.options["compressor"], self.options["level"])
        self._group.create_array(
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
        self._images = self._open_images(0)

    def _begin_write(self, first_id: int, batch: ImageBatch) -> None:
        super()._begin_write(first_id, batch)
        shape = batch.uniform_shape
        if self._images is None or (first_id == 0 and self._images.image_shape != shape):
            self._make_arrays(shape)

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        self._label_values.truncate(first_id)
        self._label_values.append(labels)
        try:
            self._images.append(first_id, np.asarray(images))
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self._group_path}: {error}") from None

    def _commit(self, count: int) -> None:
        try:
            self._images.commit(count)
            stored = self._labels.shape[0]
            if stored < count:
                self._labels.resize((count,))
                self._labels[stored:count] = self._label_values.values[stored:count]
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self._group_path}: {error}") from None

    def _commit_one(self, count: int) -> None:
        """One image at a time: it waits in the shard being written until that fills, or ``flush``/``close``."""

    def _rollback(self, count: int) -> None:
        self._label_values.truncate(count)
        if self._images is None:
            return
        try:
            self._images.rollback(count)
            if self._labels.shape[0] > count:
                self._labels.resize((count,))
            delete_chunk_files_past(self.path / GROUP / "labels", count, LABEL_CHUNK)
        except OSError as error:
            raise StoreNotWritableError(f"cannot undo an unfinished write in {self._group_path}: {error}") from None

    # -- reading ---------------------------------------------------------------------

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        return self._images.read_one(image_id), int(self._label_values.values[image_id])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        labels = self._label_values.values[ids]
        if out is None:
            shape = self._images.image_shape if self._images is not None else ()
            out = np.empty((len(ids), *shape), np.uint8)
        if len(ids) == 0:
            return out, labels
        first = int(ids[0])
        if ids[-1] - first == len(ids) - 1 and np.all(np.diff(ids) == 1):
            self._images.read_range(first, first + len(ids), out)
        else:
            self._images.read_ids(ids, out)
        return out, labels
