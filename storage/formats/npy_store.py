"""NumPy raw file: every image's pixels end to end in one file, plus a fixed-size index.

The ceiling the other formats are measured against: no encoding, no per-image file, no
container format, just bytes. Two files:

* ``images.u8``: the uint8 pixels of image 0, then image 1, and so on, each in C order.
  For a store of one image size it is exactly ``images.tofile(...)`` of an
  (N,H,W[,C]) array, so ``numpy.memmap("images.u8", numpy.uint8).reshape(N, H, W, C)``
  opens it anywhere.
* ``index.bin``: one 32-byte little-endian record per image, ``offset`` (int64, where its
  pixels start in ``images.u8``), ``label`` (int64), ``height``, ``width``, ``channels``
  (int32, 0 for a 2-D image) and 4 reserved bytes; read it with
  ``numpy.fromfile("index.bin", storage.npy_store.RECORD)``. Offsets make mixed sizes work.

Writes append to both files with ``os.pwrite`` (one call per chunk, two per
``write_one``); the manifest's count says how many records are committed, so a cut-off
write is undone by truncating both files to that count. Reads memory-map ``images.u8``
(read-only), copy single images out of the map, gather random ids with one ``numpy.take``,
and read a run of consecutive ids of one size with a single ``preadv`` straight into the
caller's buffer. The map is unmapped on close, so the page cache can be evicted between
cold reads. Nothing is fsynced at commit (as with png and hdf5).

The file descriptors and the map survive ``fork`` (reads are positional, no shared file
offset), but a child process still opens its own on first use, leaving the parent's alone.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from .. import mapped_files
from ..base import ImageStore, stack_if_uniform
from ..batch import ImageBatch, Shape
from ..errors import CorruptDataError, StoreNotWritableError
from . import BUILTIN_INFO

DATA_FILE = "images.u8"
INDEX_FILE = "index.bin"
RECORD = np.dtype(
    [
        ("offset", "<i8"),
        ("label", "<i8"),
        ("height", "<i4"),
        ("width", "<i4"),
        ("channels", "<i4"),
        ("reserved", "<i4"),
    ]
)
MAX_IO_BYTES = 1 << 30  # Linux moves at most ~2 GiB per read or write call


def record_shape(record: np.void | np.ndarray) -> Shape:
    height, width, channels = int(record["height"]), int(record["width"]), int(record["channels"])
    return (height, width) if channels == 0 else (height, width, channels)


def write_all(descriptor: int, data: memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte of ``data`` is at ``offset``.. of the file."""
    data = data.cast("B")
    written = 0
    while written < len(data):
        written += os.pwrite(descriptor, data[written : written + MAX_IO_BYTES], offset + written)


def read_into(descriptor: int, buffer: memoryview, offset: int) -> None:
    """``os.preadv`` until ``buffer`` is full; a short file is a damaged store."""
    buffer = buffer.cast("B")
    done = 0
    while done < len(buffer):
        got = os.preadv(descriptor, [buffer[done : done + MAX_IO_BYTES]], offset + done)
        if got == 0:
            raise CorruptDataError(f"{DATA_FILE} ends early; the store is damaged: write it again with mode 'w'")
        done += got


class GrowingArray:
    """An array that grows along its first axis by doubling, so appends stay cheap.

    Holds the index records (and, in other backends, labels and shapes) in memory.
    """

    def __init__(self, values: np.ndarray) -> None:
        self._buffer = np.array(values)
        self._length = len(values)

    def __len__(self) -> int:
        return self._length

    @property
    def values(self) -> np.ndarray:
        return self._buffer[: self._length]

    def append(self, values: np.ndarray) -> None:
        needed = self._length + len(values)
        if needed > len(self._buffer):
            bigger = np.zeros((max(needed, 2 * len(self._buffer), 1024), *self._buffer.shape[1:]), self._buffer.dtype)
            bigger[: self._length] = self.values
            self._buffer = bigger
        self._buffer[self._length : needed] = values
        self._length = needed

    def truncate(self, length: int) -> None:
        self._length = min(self._length, length)


def data_end(records: np.ndarray, count: int) -> int:
    """Bytes of ``images.u8`` that the first ``count`` images take."""
    if count == 0:
        return 0
    last = records[count - 1]
    return int(last["offset"]) + int(last["height"]) * int(last["width"]) * max(int(last["channels"]), 1)


class NpyStore(ImageStore):
    """One raw uint8 file of pixels, memory-mapped for reading, and a fixed-size index."""

    info = BUILTIN_INFO["npy"]
    default_options: dict = {}

    # -- files -----------------------------------------------------------------------

    def _create(self) -> None:
        for name in (DATA_FILE, INDEX_FILE):
            (self.path / name).touch()
        self._open()

    def _open(self) -> None:
        # In a forked child the parent's descriptors and map are kept (never closed here).
        self._inherited = (
            getattr(self, "_data_fd", None),
            getattr(self, "_index_fd", None),
            getattr(self, "_map", None),
        )
        flags = os.O_RDONLY if self.mode == "r" else os.O_RDWR
        try:
            self._data_fd = os.open(self.path / DATA_FILE, flags)
            self._index_fd = os.open(self.path / INDEX_FILE, flags)
        except FileNotFoundError as error:
            raise CorruptDataError(
                f"{error.filename} is missing; the store is damaged: write it again with mode 'w'"
            ) from None
        self._map: mmap.mmap | None = None
        self._pixels = np.empty(0, dtype=np.uint8)
        if getattr(self, "_index", None) is None:
            self._index = GrowingArray(self._load_records())

    def _load_records(self) -> np.ndarray:
        records = np.fromfile(self.path / INDEX_FILE, dtype=RECORD, count=self._count)
        if len(records) < self._count:
            raise CorruptDataError(
                f"{self.path / INDEX_FILE} holds {len(records)} images but the store committed {self._count}; "
                "write it again with mode 'w'"
            )
        if self._count and os.fstat(self._data_fd).st_size < data_end(records, self._count):
            raise CorruptDataError(
                f"{self.path / DATA_FILE} is shorter than its index says; write it again with mode 'w'"
            )
        return records

    def _stored_count(self) -> int:
        """Records in ``index.bin`` (a partial one counts: it is not what a finished write leaves)."""
        return -(-os.fstat(self._index_fd).st_size // RECORD.itemsize)

    def _damage_location(self, start: int, stop: int) -> str:
        return f"in {DATA_FILE} or {INDEX_FILE}"

    def _unmap(self) -> None:
        self._pixels = np.empty(0, dtype=np.uint8)
        if self._map is not None:
            self._map.close()
            self._map = None

    def _close(self) -> None:
        self._unmap()
        os.close(self._data_fd)
        os.close(self._index_fd)

    def _pixel_bytes(self, needed: int) -> np.ndarray:
        """The data file as a uint8 array, mapped (again) if it is shorter than ``needed``."""
        if len(self._pixels) < needed:
            self._unmap()
            size = os.fstat(self._data_fd).st_size
            if size < needed:
                raise CorruptDataError(f"{self.path / DATA_FILE} is shorter than its index says; the store is damaged")
            self._map = mmap.mmap(self._data_fd, size, prot=mmap.PROT_READ)
            self._pixels = np.frombuffer(self._map, dtype=np.uint8)
        return self._pixels

    # -- writing ---------------------------------------------------------------------

    def _begin_write(self, first_id: int, batch: ImageBatch) -> None:
        super()._begin_write(first_id, batch)
        self._data_end = data_end(self._index.values, first_id)

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        records = np.zeros(len(labels), dtype=RECORD)
        records["label"] = labels
        if isinstance(images, np.ndarray):
            shape = images.shape[1:]
            image_bytes = int(np.prod(shape))
            records["offset"] = self._data_end + image_bytes * np.arange(len(labels), dtype=np.int64)
            records["height"], records["width"] = shape[0], shape[1]
            records["channels"] = shape[2] if len(shape) == 3 else 0
            data = memoryview(np.ascontiguousarray(images))
        else:
            sizes = np.array([image.size for image in images], dtype=np.int64)
            records["offset"] = self._data_end + np.concatenate([[0], np.cumsum(sizes)[:-1]])
            for record, image in zip(records, images):
                record["height"], record["width"] = image.shape[:2]
                record["channels"] = image.shape[2] if image.ndim == 3 else 0
            data = memoryview(b"".join(np.ascontiguousarray(image).data for image in images))
        try:
            write_all(self._data_fd, data, self._data_end)
            write_all(self._index_fd, memoryview(records.view(np.uint8)), first_id * RECORD.itemsize)
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
        self._index.truncate(first_id)
        self._index.append(records)
        self._data_end += data.nbytes

    def _commit(self, count: int) -> None:
        """Both files are written with plain system calls: nothing is buffered here."""

    def _rollback(self, count: int) -> None:
        self._unmap()  # never leave a map over bytes that are about to be cut off
        self._index.truncate(count)
        try:
            os.truncate(self.path / DATA_FILE, data_end(self._index.values, count))
            os.truncate(self.path / INDEX_FILE, count * RECORD.itemsize)
        except OSError as error:
            raise StoreNotWritableError(f"cannot undo an unfinished write in {self.path}: {error}") from None

    # -- reading ---------------------------------------------------------------------

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        record = self._index.values[image_id]
        shape = record_shape(record)
        start = int(record["offset"])
        stop = start + int(np.prod(shape))
        if stop > mapped_files.BUDGET_BYTES:
            # Past the budget, a pread: every page read through the map stays in this process's
            # RSS, and on this kernel a read maps whole page-cache folios around the page it
            # touches (a reader of 100,000 kept photos reached 10.5 GB, and 1,000 random reads 2 GB).
            image = np.empty(stop - start, dtype=np.uint8)
            read_into(self._data_fd, memoryview(image), start)
            return image.reshape(shape), int(record["label"])
        image = self._pixel_bytes(stop)[start:stop].reshape(shape).copy()
        return image, int(record["label"])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        records = self._index.values
        labels = records["label"][ids]
        uniform = self._layout_shape
        if uniform is None:
            images = [self._read_one(image_id)[0] for image_id in ids.tolist()]
            return stack_if_uniform(images, out), labels
        if out is None:
            out = np.empty((len(ids), *uniform), dtype=np.uint8)
        if len(ids) == 0:
            return out, labels
        image_bytes = int(np.prod(uniform))
        first = int(ids[0])
        if ids[-1] - first == len(ids) - 1 and np.all(np.diff(ids) == 1) and out.flags.c_contiguous:
            read_into(self._data_fd, memoryview(out), first * image_bytes)
            return out, labels
        if self._count * image_bytes > mapped_files.BUDGET_BYTES and out.flags.c_contiguous:
            # A big store: one pread per image, so the map does not grow the process (see mapped_files).
            flat = memoryview(out.reshape(-1))
            for index, image_id in enumerate(ids.tolist()):
                read_into(self._data_fd, flat[index * image_bytes : (index + 1) * image_bytes], image_id * image_bytes)
            return out, labels
        table = self._pixel_bytes(self._count * image_bytes)[: self._count * image_bytes].reshape(
            self._count, image_bytes
        )
        if out.flags.c_contiguous:
            np.take(table, ids, axis=0, out=out.reshape(len(ids), image_bytes))
        else:
            out[...] = table[ids].reshape(out.shape)
        return out, labels
