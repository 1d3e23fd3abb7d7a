"""Checksums of stored images: what one covers, how it is computed, and the file that keeps them.

A flipped bit in a data file used to come back as wrong pixels with no error on almost every
backend. Now every write records, beside the images, a checksum of each run of images: of
the bytes the backend was handed to store (the pixels, or the encoded bytes of an encoded
store), their shapes and their labels. Reading the run back and hashing what came out checks
the whole path end to end: a damaged byte that changes an image, a shape or a label is found,
wherever the backend keeps it. A run is ``BLOCK_BYTES`` (256 KiB) of images at most, so a
verified read of one image reads its run (85 CIFAR images) and no more; a big photo is a run
of its own.

The hash is XXH3 (64 bits, ``xxhash``), the fastest of those tried on 300 MB in memory here
(CRC-32C from ``crc32c`` and ``google-crc32c``, ``zlib.crc32`` at about a third of its speed);
it releases the GIL on large buffers. It is still about as slow as copying the same bytes
out of the page cache, which is what verified reads cost (docs/formats.md, "Integrity"). Where ``xxhash`` is missing, ``zlib.crc32``
is used, and the store records which one it used.

``checksums.bin`` holds one 24-byte little-endian record per run: ``first_id``, ``count``
(int64) and ``digest`` (uint64); read it with ``numpy.fromfile(path, storage.checksums.RECORD)``.
The manifest says how many records are committed (``checksums.records``), so records of a
write that was cut off are ignored and cut away with it.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    import xxhash
except ImportError:  # pragma: no cover - requirements.txt installs it
    xxhash = None

LOG_NAME = "checksums.bin"
BLOCK_BYTES = 256 * 1024
RECORD = np.dtype([("first_id", "<i8"), ("count", "<i8"), ("digest", "<u8")])
XXH3 = "xxh3-64"
CRC32 = "crc32"
DEFAULT_ALGORITHM = XXH3 if xxhash is not None else CRC32


class _Crc32:
    """``zlib.crc32`` with the interface of an ``xxhash`` hasher (the fallback)."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)

    def intdigest(self) -> int:
        return self.value


def hasher(algorithm: str):
    """A new incremental hasher of ``algorithm`` (``update``, ``intdigest``)."""
    if algorithm == XXH3 and xxhash is not None:
        return xxhash.xxh3_64()
    if algorithm == CRC32:
        return _Crc32()
    raise LookupError(f"checksum algorithm {algorithm!r} is not available here (pip install xxhash)")


def is_available(algorithm: str) -> bool:
    return algorithm == CRC32 or (algorithm == XXH3 and xxhash is not None)


def shape_rows(shapes: Sequence[tuple[int, ...]]) -> np.ndarray:
    """(height, width, channels) per image as int32, channels 0 for a 2-D image: what a digest covers."""
    rows = np.zeros((len(shapes), 3), dtype="<i4")
    for row, shape in zip(rows, shapes):
        row[: len(shape)] = shape
    return rows


def image_bytes(image: np.ndarray | bytes | memoryview) -> memoryview:
    """The bytes of one stored image (pixels in C order, or an encoded blob)."""
    if isinstance(image, np.ndarray):
        return memoryview(np.ascontiguousarray(image)).cast("B")
    return memoryview(image).cast("B")


def run_digest(algorithm: str, images, labels: np.ndarray) -> int:
    """The digest of a run of stored images: their bytes, then their shapes, then their labels.

    ``images`` is an (N,H,W[,C]) uint8 array (one shape) or a sequence of uint8 arrays or
    byte strings; a byte string counts as a ``(1, len)`` image, as encoded stores keep them.
    """
    digest = hasher(algorithm)
    if isinstance(images, np.ndarray):
        digest.update(image_bytes(images))
        shape = images.shape[1:]
        rows = np.empty((len(images), 3), dtype="<i4")
        rows[:] = (shape[0], shape[1], shape[2] if len(shape) == 3 else 0)
    else:
        for image in images:
            digest.update(image_bytes(image))
        rows = shape_rows([image.shape if isinstance(image, np.ndarray) else (1, len(image)) for image in images])
    digest.update(rows.tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return digest.intdigest()


def uniform_run_digests(algorithm: str, images: np.ndarray, labels: np.ndarray, counts: Sequence[int]) -> list[int]:
    """The digests of consecutive runs of ``counts`` images of one shape, from ``images[0]`` on.

    The same digests as :func:`run_digest` of each run, computed with a handful of calls
    per run instead of several NumPy steps: a verified read hashes on a second thread,
    and every Python step there waits for the reading thread to let go of the GIL.
    """
    shape = images.shape[1:]
    size = int(np.prod(shape))
    pixels = image_bytes(images)
    label_bytes = memoryview(np.ascontiguousarray(labels, dtype="<i8")).cast("B")
    largest = max(counts, default=0)
    rows = np.empty((largest, 3), dtype="<i4")
    rows[:] = (shape[0], shape[1], shape[2] if len(shape) == 3 else 0)
    row_bytes = memoryview(rows).cast("B")
    digests, first = [], 0
    for count in counts:
        digest = hasher(algorithm)
        digest.update(pixels[first * size : (first + count) * size])
        digest.update(row_bytes[: count * 12])
        digest.update(label_bytes[first * 8 : (first + count) * 8])
        digests.append(digest.intdigest())
        first += count
    return digests


def file_digest(algorithm: str, data: bytes, shape: tuple[int, ...], label: int) -> int:
    """The digest of one image kept as a file of its own (the ``png`` family): its bytes, shape and label."""
    digest = hasher(algorithm)
    digest.update(data)
    digest.update(shape_rows([shape]).tobytes())
    digest.update(np.array([label], dtype="<i8").tobytes())
    return digest.intdigest()


def one_per_image(first_id: int, digests: Sequence[int]) -> np.ndarray:
    """Records of one image each, for images ``first_id``.. with these digests."""
    records = np.empty(len(digests), dtype=RECORD)
    records["first_id"] = np.arange(first_id, first_id + len(digests))
    records["count"] = 1
    records["digest"] = np.asarray(digests, dtype=np.uint64)
    return records


def run_bounds(sizes: Sequence[int] | np.ndarray, uniform_size: int | None = None) -> list[tuple[int, int]]:
    """Cut images of ``sizes`` bytes (or all of ``uniform_size``) into runs of at most ``BLOCK_BYTES``."""
    count = len(sizes)
    if uniform_size is not None:
        step = max(1, BLOCK_BYTES // max(1, uniform_size))
        return [(start, min(start + step, count)) for start in range(0, count, step)]
    bounds, start, total = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and total + size > BLOCK_BYTES:
            bounds.append((start, index))
            start, total = index, 0
        total += size
    if start < count:
        bounds.append((start, count))
    return bounds


def chunk_records(algorithm: str, images, labels: np.ndarray, first_id: int) -> np.ndarray:
    """The records of a chunk of stored images written at ids ``first_id``..: one per run."""
    if isinstance(images, np.ndarray):
        bounds = run_bounds(range(len(images)), int(np.prod(images.shape[1:])))
    else:
        bounds = run_bounds([len(image_bytes(image)) for image in images])
    records = np.empty(len(bounds), dtype=RECORD)
    records["first_id"] = [first_id + start for start, _ in bounds]
    records["count"] = [stop - start for start, stop in bounds]
    if isinstance(images, np.ndarray):
        records["digest"] = uniform_run_digests(algorithm, images, labels, records["count"].tolist())
        return records
    for record, (start, stop) in zip(records, bounds):
        record["digest"] = run_digest(algorithm, images[start:stop], labels[start:stop])
    return records


def read_records(folder: Path, count: int) -> np.ndarray:
    """The first ``count`` records of ``checksums.bin``; fewer there is a damaged log (ValueError)."""
    path = folder / LOG_NAME
    try:
        records = np.fromfile(path, dtype=RECORD, count=count) if count else np.empty(0, RECORD)
    except FileNotFoundError:
        records = np.empty(0, RECORD)
    if len(records) < count:
        raise ValueError(f"{path} holds {len(records)} checksum records where the manifest says {count}")
    return records


def check_records(records: np.ndarray, first_id: int, image_count: int, path: Path) -> None:
    """Records must cover consecutive runs of the store's images from ``first_id``; else ValueError naming the file."""
    if not len(records):
        return
    starts, counts = records["first_id"], records["count"]
    stops = starts + counts
    if (
        int(starts[0]) != first_id
        or (counts < 1).any()
        or (starts[1:] != stops[:-1]).any()
        or int(stops[-1]) > image_count
    ):
        raise ValueError(f"{path} does not hold consecutive runs of the store's {image_count:,} images")


def write_records(folder: Path, records: np.ndarray, at_record: int) -> None:
    """Write ``records`` as records ``at_record``.. of ``checksums.bin`` and cut the file after them."""
    descriptor = os.open(folder / LOG_NAME, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        offset = at_record * RECORD.itemsize
        data = memoryview(np.ascontiguousarray(records, dtype=RECORD).view(np.uint8))
        while data:
            written = os.pwrite(descriptor, data, offset)
            data, offset = data[written:], offset + written
        os.ftruncate(descriptor, offset)
    finally:
        os.close(descriptor)


def cut_records(folder: Path, keep: int) -> None:
    """Cut ``checksums.bin`` after its first ``keep`` records (what a rollback keeps)."""
    path = folder / LOG_NAME
    try:
        if path.stat().st_size > keep * RECORD.itemsize:
            os.truncate(path, keep * RECORD.itemsize)
    except FileNotFoundError:
        pass


def covered_stop(records: np.ndarray, first_id: int) -> int:
    """The id after the last image the records cover (``first_id`` when there are none)."""
    if not len(records):
        return first_id
    return int(records["first_id"][-1]) + int(records["count"][-1])
