"""LMDB with PNG values: the ``lmdb`` backend, each image's pixels PNG-compressed.

Everything but the value format comes from :mod:`storage.lmdb_store` (zero-padded id
keys, one write transaction per batch, the growing map, shared read-only handles,
reopening after ``fork``), in that module's one-record-per-image layout (``"records"``;
PNG values differ in size): each value is the same 17-byte header (label, height, width,
channels) followed by the image as a PNG file (Pillow, ``compress_level`` 6 by default)
instead of raw pixels: smaller on disk, slower to write and read, as the side-by-side
numbers with plain ``lmdb`` show. Large chunks are encoded and decoded in worker
processes (:mod:`storage.parallel`), as the ``png`` backend does.
"""

from __future__ import annotations

from typing import Any

import lmdb
import numpy as np

from .. import parallel
from ..base import stack_if_uniform
from ..errors import CorruptDataError, ModeError
from . import BUILTIN_INFO
from .lmdb_env import begin_read
from .lmdb_store import HEADER, RECORDS, LmdbStore, image_key
from .png_files import IMAGES_PER_TASK, PngCodec, row_shape


def encode_png_records(codec: PngCodec, images, labels: list[int]) -> list[bytes]:
    """Worker task: header + PNG bytes of each image."""
    records = []
    for image, label in zip(images, labels):
        channels = image.shape[2] if image.ndim == 3 else 0
        records.append(HEADER.pack(label, image.shape[0], image.shape[1], channels) + codec.encode(image))
    return records


def decode_png_records(codec: PngCodec, values: list[bytes]) -> tuple[list[np.ndarray], list[int]]:
    """Worker task: images and labels of header + PNG records."""
    images, labels = [], []
    for value in values:
        image, label = decode_png_record(codec, value)
        images.append(image)
        labels.append(label)
    return images, labels


def decode_png_record(codec: PngCodec, value: bytes | memoryview) -> tuple[np.ndarray, int]:
    if len(value) <= HEADER.size:
        raise CorruptDataError(f"an LMDB record of {len(value)} bytes is too short to hold a PNG; the store is damaged")
    label, height, width, channels = HEADER.unpack_from(value)
    try:
        image = codec.decode(bytes(value[HEADER.size :]), row_shape(height, width, channels))
    except (OSError, ValueError, SyntaxError) as error:
        raise CorruptDataError(f"a PNG in the LMDB store cannot be decoded ({error}); the store is damaged") from None
    return image, label


class LmdbPngStore(LmdbStore):
    """One LMDB record per image: a binary header plus the image as PNG."""

    info = BUILTIN_INFO["lmdb-png"]
    default_options = {"readahead": False, "compress_level": 6, "parallel": True}
    keeps_encoded = False  # its records are PNG already: encoding="png" on lmdb is the general form
    new_store_layout = RECORDS

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        level = options.get("compress_level", 6)
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
            raise ModeError(f"compress_level {level!r} must be an integer from 0 to 9")

    @property
    def _codec(self) -> PngCodec:
        return PngCodec("", {"compress_level": self.options["compress_level"]})

    def _task_ranges(self, total: int) -> list[tuple[int, int]]:
        if not self.options["parallel"] or total < 2 * IMAGES_PER_TASK:
            return [(0, total)]
        return parallel.split_ranges(total, 4 * parallel.worker_count(), IMAGES_PER_TASK)

    # -- writing ---------------------------------------------------------------------

    def _put_records(self, images, labels: np.ndarray, first_id: int) -> None:
        codec, label_list = self._codec, labels.tolist()
        tasks = [(codec, images[start:stop], label_list[start:stop]) for start, stop in self._task_ranges(len(labels))]
        pieces = parallel.run_tasks(encode_png_records, tasks)
        records = (
            (image_key(first_id + offset), record)
            for offset, record in enumerate(record for piece in pieces for record in piece)
        )
        self._txn.cursor().putmulti(records, append=True)

    # -- reading ---------------------------------------------------------------------

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        with begin_read(self._env) as txn:
            value = txn.get(image_key(image_id))
            if value is None:
                raise CorruptDataError(f"image {image_id} is missing from the LMDB store at {self.path}")
            return decode_png_record(self._codec, value)

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        try:
            with begin_read(self._env) as txn:
                values = [bytes(value) for value in self._values_in_order(txn, ids)]
        except lmdb.Error as error:
            raise CorruptDataError(f"cannot read the LMDB store at {self.path}: {error}") from None
        if len(values) != len(ids):
            raise CorruptDataError("the LMDB store holds fewer records than its manifest says; write it again")
        codec = self._codec
        tasks = [(codec, values[start:stop]) for start, stop in self._task_ranges(len(values))]
        images: list[np.ndarray] = []
        labels: list[int] = []
        for piece_images, piece_labels in parallel.run_tasks(decode_png_records, tasks):
            images += piece_images
            labels += piece_labels
        return stack_if_uniform(images, out, self._layout_shape), np.array(labels, dtype=np.int64)
