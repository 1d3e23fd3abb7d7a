"""The keys and values of the ``lmdb`` backend's two layouts, and the index of its chunks.

The layouts are described in :mod:`storage.formats.lmdb_store`. Here: building and
parsing the bytes (no LMDB transactions, except :meth:`ChunkIndex.load`, which reads the
``#chunk:`` records), so the store module is about the environment, writing and reading.
"""

from __future__ import annotations

import bisect
import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from ..batch import Shape
from ..errors import CorruptDataError

HEADER = struct.Struct("<qIIB")  # label, height, width, channels (0 for a 2-D image)
HEADER_DTYPE = np.dtype([("label", "<i8"), ("height", "<u4"), ("width", "<u4"), ("channels", "u1")])
KEY_DIGITS = 10
PAGE_BYTES = 4096
PAGE_HEADER_BYTES = 16  # LMDB's header at the start of a value's overflow pages
LABELS_PREFIX = b"#labels:"
CHUNK_PREFIX = b"#chunk:"


def image_key(image_id: int) -> bytes:
    """Key of image ``image_id`` (records layout), or of the pixel record starting there (chunks layout).

    Zero-padded, so key order is id order and appends use LMDB's fast append path.
    """
    return b"%010d" % image_id


def chunk_key(first_id: int) -> bytes:
    """Key of the image headers of the chunk starting at ``first_id`` (chunks layout).

    '#' sorts before every digit, so pixel records stay the last keys and keep using
    LMDB's append path.
    """
    return CHUNK_PREFIX + b"%010d" % first_id


def labels_key(first_id: int) -> bytes:
    """Key of the labels of the chunk starting at ``first_id`` (records layout)."""
    return LABELS_PREFIX + b"%010d" % first_id


def row_shape(height: int, width: int, channels: int) -> Shape:
    return (height, width) if channels == 0 else (height, width, channels)


def image_headers(images, labels: np.ndarray) -> np.ndarray:
    """The 17-byte header of each image (label, height, width, channels): an array of ``HEADER_DTYPE``."""
    headers = np.empty(len(labels), dtype=HEADER_DTYPE)
    headers["label"] = labels
    if isinstance(images, np.ndarray):
        headers["height"], headers["width"] = images.shape[1], images.shape[2]
        headers["channels"] = images.shape[3] if images.ndim == 4 else 0
    else:
        headers["height"] = [image.shape[0] for image in images]
        headers["width"] = [image.shape[1] for image in images]
        headers["channels"] = [image.shape[2] if image.ndim == 3 else 0 for image in images]
    return headers


def images_per_record(largest_image_bytes: int, record_pages: int) -> int:
    """Images per pixel record: as many as fill ``record_pages`` overflow pages, at least one."""
    return max(1, (record_pages * PAGE_BYTES - PAGE_HEADER_BYTES) // max(1, largest_image_bytes))


def pages_of(value_bytes: int) -> int:
    """Pages LMDB gives a value this long when it does not fit in a leaf page."""
    return -(-(value_bytes + PAGE_HEADER_BYTES) // PAGE_BYTES)


def chunks_layout_bytes(count: int, image_bytes: int, chunk_images: int, per_record: int) -> int:
    """Bytes of overflow pages the chunks layout gives ``count`` images of one size written in chunks of ``chunk_images``."""
    total = 0
    for chunk in [chunk_images] * (count // chunk_images) + ([count % chunk_images] if count % chunk_images else []):
        full, rest = divmod(chunk, per_record)
        total += full * pages_of(per_record * image_bytes) + (pages_of(rest * image_bytes) if rest else 0)
        total += pages_of(chunk * HEADER.size)
    return total * PAGE_BYTES


# -- records layout: one record per image -----------------------------------------------


def encode_record(image: np.ndarray, label: int) -> bytes:
    channels = image.shape[2] if image.ndim == 3 else 0
    return HEADER.pack(label, image.shape[0], image.shape[1], channels) + image.tobytes()


def encode_records(images: np.ndarray, labels: np.ndarray) -> tuple[memoryview, int]:
    """Records of images of one size, built in one NumPy buffer: (buffer, bytes per record).

    The same bytes as :func:`encode_record` per image, without a Python step per image.
    """
    count = len(images)
    image_bytes = int(np.prod(images.shape[1:]))
    record_bytes = HEADER.size + image_bytes
    records = np.empty((count, record_bytes), dtype=np.uint8)
    records[:, : HEADER.size] = image_headers(images, labels).view(np.uint8).reshape(count, HEADER.size)
    records[:, HEADER.size :] = images.reshape(count, image_bytes)
    return memoryview(records.reshape(-1)), record_bytes


def decode_record(value: bytes | memoryview) -> tuple[np.ndarray, int]:
    if len(value) < HEADER.size:
        raise CorruptDataError(
            f"an LMDB record of {len(value)} bytes is too short to hold an image; the store is damaged"
        )
    label, height, width, channels = HEADER.unpack_from(value)
    size = height * width * (channels or 1)  # not np.prod: a single read is a few microseconds
    if len(value) - HEADER.size != size:
        raise CorruptDataError(
            f"an LMDB record holds {len(value) - HEADER.size} pixel bytes for shape "
            f"{row_shape(height, width, channels)}; the store is damaged"
        )
    pixels = np.frombuffer(value, dtype=np.uint8, count=size, offset=HEADER.size)
    return pixels.reshape(row_shape(height, width, channels)).copy(), label


def record_bytes_on_disk(image_bytes: int) -> int:
    """Bytes LMDB uses for one record of ``image_bytes`` pixels (records layout; overflow pages, rounded up)."""
    payload = image_bytes + HEADER.size + KEY_DIGITS + 16
    return -(-payload // PAGE_BYTES) * PAGE_BYTES if payload > PAGE_BYTES // 2 else payload * 2


# -- chunks layout: pixel records of a few images, headers per chunk ----------------------


@dataclass
class Chunk:
    """Where the images ``first_id``.. of one written chunk are, from its ``#chunk:`` headers."""

    first_id: int
    labels: np.ndarray
    per_record: int  # images per pixel record (the chunk's last record may hold fewer)
    shape: Shape | None  # the images' one shape, or None when they differ
    image_bytes: int  # bytes of each image when ``shape`` is set
    offsets: np.ndarray | None  # where each image starts in the chunk, and the end (when shapes differ)
    shapes: list[Shape] | None

    @classmethod
    def from_headers(cls, first_id: int, headers: np.ndarray, per_record: int) -> Chunk:
        rows = np.stack([headers["height"], headers["width"], headers["channels"]], axis=1).astype(np.int64)
        sizes = rows[:, 0] * rows[:, 1] * np.maximum(rows[:, 2], 1)
        labels = headers["label"].astype(np.int64)  # a copy: the headers may be a view into the map
        if (rows == rows[0]).all():
            return cls(first_id, labels, per_record, row_shape(*rows[0].tolist()), int(sizes[0]), None, None)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        return cls(first_id, labels, per_record, None, 0, offsets, [row_shape(*row) for row in rows.tolist()])

    @property
    def stop(self) -> int:
        return self.first_id + len(self.labels)

    @functools.cached_property
    def label_list(self) -> list[int]:
        return self.labels.tolist()

    def record_of(self, image_id: int) -> int:
        """The first id of the pixel record holding ``image_id``: its key is ``image_key`` of that."""
        return image_id - (image_id - self.first_id) % self.per_record

    def image(self, value: memoryview | None, image_id: int) -> tuple[np.ndarray, int]:
        """Image ``image_id`` and its label, copied out of ``value``, the pixel record holding it."""
        index = image_id - self.first_id
        try:
            if self.shape is not None:  # np.ndarray over the buffer: the quickest view (a single read is ~2 us)
                pixels = np.ndarray(self.shape, np.uint8, value, index % self.per_record * self.image_bytes)
            else:
                record_start = self.offsets[index - index % self.per_record]
                start, stop = int(self.offsets[index] - record_start), int(self.offsets[index + 1] - record_start)
                pixels = np.frombuffer(value, dtype=np.uint8, count=stop - start, offset=start)
                pixels = pixels.reshape(self.shapes[index])
        except (TypeError, ValueError):
            if value is None:
                raise CorruptDataError(
                    f"the LMDB record of image {image_id} is missing; the store is damaged"
                ) from None
            raise CorruptDataError(
                f"the LMDB record of image {image_id} holds {len(value)} bytes, fewer than its headers "
                "say; the store is damaged"
            ) from None
        return pixels.copy(), self.label_list[index]

    def record_images(self, value: memoryview, record_id: int) -> np.ndarray:
        """The images of the pixel record starting at ``record_id`` as one (n, H, W[, C]) view of ``value``."""
        count = min(self.per_record, self.stop - record_id)
        if len(value) != count * self.image_bytes:
            raise CorruptDataError(
                f"the LMDB record of images {record_id}.. holds {len(value)} bytes, not the "
                f"{count * self.image_bytes} its headers say; the store is damaged"
            )
        return np.frombuffer(value, dtype=np.uint8).reshape(count, *self.shape)


class ChunkIndex:
    """The chunks of a store in id order, read from their ``#chunk:`` records as the store grows."""

    def __init__(self) -> None:
        self.first_ids: list[int] = []
        self.chunks: list[Chunk] = []
        self.stop = 0  # images the chunks cover: ids 0..stop-1
        self._labels: np.ndarray | None = None

    def load(self, txn: lmdb.Transaction, count: int, where: Path, most: int | None = None) -> None:
        """Add the chunks that start below ``count`` and are not here yet (at most ``most`` of them).

        A chunk's images per record is the distance from its first pixel record's key to the
        next one, found by positioning a cursor (which, unlike reading a value, touches no
        pixel pages).
        """
        cursor, probe = txn.cursor(), txn.cursor()
        found = cursor.set_range(chunk_key(self.stop))
        stop_at = len(self.chunks) + most if most is not None else None
        while found and self.stop < count and len(self.chunks) != stop_at:
            key = bytes(cursor.key())
            if not key.startswith(CHUNK_PREFIX) or int(key[len(CHUNK_PREFIX) :]) >= count:
                break
            first_id = int(key[len(CHUNK_PREFIX) :])
            if first_id != self.stop:
                raise CorruptDataError(
                    f"images {self.stop} to {first_id - 1} are missing from the LMDB store at {where}"
                )
            headers = np.frombuffer(cursor.value(), dtype=HEADER_DTYPE)
            per_record = len(headers)
            if probe.set_range(image_key(first_id + 1)):
                next_record = bytes(probe.key())
                if next_record.isdigit() and int(next_record) < first_id + len(headers):
                    per_record = int(next_record) - first_id
            self.first_ids.append(first_id)
            self.chunks.append(Chunk.from_headers(first_id, headers, per_record))
            self.stop = self.chunks[-1].stop
            self._labels = None
            found = cursor.next()
        if self.stop < count and len(self.chunks) != stop_at:
            raise CorruptDataError(f"image {self.stop} is missing from the LMDB store at {where}")

    def truncate(self, count: int) -> None:
        """Forget the chunks from ``count`` on (a rollback deleted them)."""
        keep = bisect.bisect_left(self.first_ids, count)
        del self.first_ids[keep:], self.chunks[keep:]
        self.stop = self.chunks[-1].stop if self.chunks else 0
        self._labels = None

    def find(self, image_id: int) -> Chunk:
        return self.chunks[bisect.bisect_right(self.first_ids, image_id) - 1]

    @property
    def labels(self) -> np.ndarray:
        """Every label, in id order."""
        if self._labels is None:
            self._labels = np.concatenate([chunk.labels for chunk in self.chunks] or [np.empty(0, np.int64)])
        return self._labels
