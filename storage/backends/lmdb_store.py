"""LMDB: a memory-mapped key-value store, one record per image.

Keys are zero-padded ids (so key order is id order and appends use LMDB's fast append
path). Each value is a 17-byte header (label, height, width, channels) followed by the raw
pixels: no pickle, which is slow and would run code from whoever made the store. The labels
of each written chunk are also kept together under a ``#labels:<first id>`` key, so a bulk
read gets them in a few lookups instead of one header per image.

LMDB's ``map_size`` is an address-space reservation, not disk use; the map starts small
and grows before a batch that would not fit (and again on ``MapFullError``), so a store
never fails for being full. Readers open read-only without locks. Environments do not
survive ``fork``: a child process reopens its own on first use.

Memory and speed: LMDB holds a transaction's dirty pages in memory (and keeps them for
reuse), so a batch is committed every ``COMMIT_EVERY_BYTES`` in normal synced
transactions; it stays all-or-nothing through the manifest, which says ``"writing"`` until
the last one, and rollback, which deletes records past the committed count, as for every
backend. ``write_one`` images arrive in write-behind groups (``storage.write_behind``).
A read-only store keeps one read transaction for single reads. Read-ahead is chosen per
operation: sequential for a scan of consecutive ids, off (the ``readahead`` option, False
by default) for random reads; after scanning a store bigger than ``MAPPED_BUDGET_BYTES``
the scanned pages are unmapped from the process (they stay in the page cache), so the
process's memory does not grow with the store.
"""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

import lmdb
import numpy as np

from .. import mapped_files
from ..base import ImageStore, stack_if_uniform
from ..batch import ImageBatch, Shape
from ..errors import CorruptDataError, StoreNotWritableError
from . import BUILTIN_INFO

HEADER = struct.Struct("<qIIB")  # label, height, width, channels (0 for a 2-D image)
HEADER_DTYPE = np.dtype([("label", "<i8"), ("height", "<u4"), ("width", "<u4"), ("channels", "u1")])
KEY_DIGITS = 10
INITIAL_MAP_BYTES = 16 * 2**20
PAGE_BYTES = 4096
COMMIT_EVERY_BYTES = 256 * 2**20  # a batch's records per LMDB transaction (its dirty pages stay in memory)
MAPPED_BUDGET_BYTES = mapped_files.BUDGET_BYTES  # stores bigger than this are unmapped after each scan
SCAN_ADVICE_IDS = 4096  # scans at least this long read ahead sequentially


_readers: dict[str, list] = {}
_readers_pid = os.getpid()


def acquire_reader(path: Path, readahead: bool) -> lmdb.Environment:
    """A read-only environment for ``path``, shared by every store of this process.

    LMDB allows one open environment per file per process (its locks belong to the
    process), so two read-only stores on one path share a handle. Handles inherited
    through ``fork`` are closed in the child (which only unmaps the child's copy) and
    reopened.
    """
    global _readers_pid
    if _readers_pid != os.getpid():
        for environment, _ in _readers.values():
            environment.close()
        _readers.clear()
        _readers_pid = os.getpid()
    key = os.path.realpath(path)
    if key not in _readers:
        environment = lmdb.open(str(path), readonly=True, lock=False, readahead=readahead, subdir=True, max_dbs=0)
        _readers[key] = [environment, 0]
    _readers[key][1] += 1
    return _readers[key][0]


def release_reader(path: Path) -> None:
    """Drop one user of a shared read-only environment; close it with the last one."""
    key = os.path.realpath(path)
    entry = _readers.get(key)
    if entry is None or _readers_pid != os.getpid():
        return
    entry[1] -= 1
    if entry[1] <= 0:
        entry[0].close()
        del _readers[key]


LABELS_PREFIX = b"#labels:"


def labels_key(first_id: int) -> bytes:
    """Key of the labels of the chunk starting at ``first_id``.

    '#' sorts before every digit, so image keys stay the last keys and keep using LMDB's
    append path.
    """
    return LABELS_PREFIX + b"%010d" % first_id


def image_key(image_id: int) -> bytes:
    return b"%010d" % image_id


def encode_record(image: np.ndarray, label: int) -> bytes:
    channels = image.shape[2] if image.ndim == 3 else 0
    return HEADER.pack(label, image.shape[0], image.shape[1], channels) + image.tobytes()


def encode_chunk(images: np.ndarray, labels: np.ndarray) -> tuple[memoryview, int]:
    """Records of a chunk of one image size, built in one NumPy buffer: (buffer, bytes per record).

    The same bytes as :func:`encode_record` per image, without a Python step per image.
    """
    count = len(images)
    image_bytes = int(np.prod(images.shape[1:]))
    record_bytes = HEADER.size + image_bytes
    records = np.empty((count, record_bytes), dtype=np.uint8)
    header = np.empty(count, dtype=HEADER_DTYPE)
    header["label"] = labels
    header["height"], header["width"] = images.shape[1], images.shape[2]
    header["channels"] = images.shape[3] if images.ndim == 4 else 0
    records[:, : HEADER.size] = header.view(np.uint8).reshape(count, HEADER.size)
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
        shape = (height, width) if channels == 0 else (height, width, channels)
        raise CorruptDataError(
            f"an LMDB record holds {len(value) - HEADER.size} pixel bytes for shape {shape}; the store is damaged"
        )
    pixels = np.frombuffer(value, dtype=np.uint8, count=size, offset=HEADER.size)
    return pixels.reshape((height, width) if channels == 0 else (height, width, channels)).copy(), label


def record_pages(image_bytes: int) -> int:
    """Bytes LMDB uses for one record of ``image_bytes`` pixels (overflow pages, rounded up)."""
    payload = image_bytes + HEADER.size + KEY_DIGITS + 16
    return -(-payload // PAGE_BYTES) * PAGE_BYTES if payload > PAGE_BYTES // 2 else payload * 2


class LmdbStore(ImageStore):
    """One LMDB record per image: a binary header plus raw pixels."""

    info = BUILTIN_INFO["lmdb"]
    default_options = {"readahead": False}
    # write_one images are committed in groups (one synced transaction each), see storage.write_behind
    write_behind_images = 4096

    # -- environment -----------------------------------------------------------------

    def _create(self) -> None:
        self._open()

    def _open(self) -> None:
        inherited = getattr(self, "_env", None)
        if inherited is not None and self.mode != "r":
            inherited.close()  # in a forked child: unmaps only the child's copy
        self._txn = None
        self._read_txn = None
        try:
            if self.mode == "r":
                self._env = acquire_reader(self.path, bool(self.options["readahead"]))
            else:
                self._env = lmdb.open(
                    str(self.path), map_size=INITIAL_MAP_BYTES, readahead=bool(self.options["readahead"]), max_dbs=0
                )
        except lmdb.Error as error:
            raise CorruptDataError(
                f"cannot open the LMDB environment at {self.path}: {error} "
                "(if another store in this process has it open for writing, close that one first)"
            ) from None

    def _close(self) -> None:
        if self._read_txn is not None:
            self._read_txn.abort()
            self._read_txn = None
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        if self.mode == "r":
            release_reader(self.path)
        else:
            self._env.close()

    def _grow_map_for(self, extra_bytes: int) -> None:
        """Grow the map so ``extra_bytes`` more fit, doubling to keep growth rare."""
        info, stat = self._env.info(), self._env.stat()
        used = (info["last_pgno"] + 1) * stat["psize"]
        needed = used + int(extra_bytes * 1.25) + 4 * 2**20
        if needed > info["map_size"]:
            self._env.set_mapsize(max(needed, 2 * info["map_size"]))

    # -- writing ---------------------------------------------------------------------

    def _begin_write(self, first_id: int, batch: ImageBatch) -> None:
        super()._begin_write(first_id, batch)
        if batch.is_uniform:
            estimate = len(batch) * record_pages(int(np.prod(batch.uniform_shape)))
        else:
            estimate = sum(record_pages(int(np.prod(shape))) for shape in batch.shapes(0, len(batch)))
        self._grow_map_for(estimate)
        self._batch, self._batch_first_id = batch, first_id
        self._txn = self._env.begin(write=True)
        self._txn_first_id, self._txn_bytes = first_id, 0

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        try:
            self._put_records(images, labels, first_id)
            self._txn_bytes += images.nbytes if isinstance(images, np.ndarray) else sum(i.nbytes for i in images)
            if self._txn_bytes >= COMMIT_EVERY_BYTES:
                self._commit_so_far(first_id + len(labels))
        except lmdb.MapFullError:
            self._redo_batch_in_bigger_map(first_id + len(labels))
        except lmdb.Error as error:
            raise StoreNotWritableError(f"LMDB write to {self.path} failed: {error}") from None

    def _commit_so_far(self, next_id: int) -> None:
        """Commit the batch's records so far (synced) and go on in a new transaction.

        The manifest still says "writing", so a crash before the batch's last commit is
        rolled back to the committed count when the store is reopened.
        """
        self._txn.commit()
        self._txn = self._env.begin(write=True)
        self._txn_first_id, self._txn_bytes = next_id, 0

    def _put_records(self, images, labels: np.ndarray, first_id: int) -> None:
        if isinstance(images, np.ndarray):
            buffer, size = encode_chunk(images, labels)
            records = (
                (b"%010d" % (first_id + offset), buffer[offset * size : (offset + 1) * size])
                for offset in range(len(labels))
            )
        else:
            records = (
                (image_key(first_id + offset), encode_record(image, label))
                for offset, (image, label) in enumerate(zip(images, labels.tolist()))
            )
        cursor = self._txn.cursor()
        cursor.putmulti(records, append=True)
        cursor.put(labels_key(first_id), labels.astype("<i8").tobytes())
        self._labels_cache = None

    def _redo_batch_in_bigger_map(self, stop_id: int) -> None:
        """The estimate was short: abort, double the map, and write this transaction's part again."""
        self._txn.abort()
        info = self._env.info()
        self._env.set_mapsize(info["map_size"] * 2)
        self._txn = self._env.begin(write=True)
        start = self._txn_first_id
        try:
            for chunk_start in range(start, stop_id, self.chunk_images):
                chunk_stop = min(chunk_start + self.chunk_images, stop_id)
                begin, end = chunk_start - self._batch_first_id, chunk_stop - self._batch_first_id
                self._put_records(self._batch.chunk(begin, end), self._batch.labels[begin:end], chunk_start)
        except lmdb.MapFullError:
            self._redo_batch_in_bigger_map(stop_id)

    def _commit(self, count: int) -> None:
        if self._txn is not None:
            self._txn.commit()
            self._txn = None
            self._batch = None

    def _rollback(self, count: int) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self._batch = None
        self._labels_cache = None
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor()
            found = cursor.set_range(image_key(count))
            while found and cursor.key()[:1].isdigit():
                found = cursor.delete()
            found = cursor.set_range(labels_key(count))
            while found and cursor.key().startswith(LABELS_PREFIX):
                found = cursor.delete()

    # -- reading ---------------------------------------------------------------------

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        txn = self._read_txn
        if txn is None:
            if self.mode != "r":  # the store changes: a transaction per read sees the latest commit
                with self._env.begin(buffers=True) as txn:
                    return self._decoded(txn.get(b"%010d" % image_id), image_id)
            txn = self._read_txn = self._env.begin(buffers=True)  # read-only: one for every single read
        return self._decoded(txn.get(b"%010d" % image_id), image_id)

    def _decoded(self, value: memoryview | None, image_id: int) -> tuple[np.ndarray, int]:
        if value is None:
            raise CorruptDataError(f"image {image_id} is missing from the LMDB store at {self.path}")
        return decode_record(value)

    def _all_labels(self) -> np.ndarray:
        """Every label, from the per-chunk label records (a few reads instead of one per image)."""
        if getattr(self, "_labels_cache", None) is None:
            labels = np.zeros(self._count, dtype=np.int64)
            with self._env.begin(buffers=True) as txn:
                cursor = txn.cursor()
                found = cursor.set_range(LABELS_PREFIX)
                while found and cursor.key()[: len(LABELS_PREFIX)] == LABELS_PREFIX:
                    first_id = int(cursor.key()[len(LABELS_PREFIX) :])
                    chunk = np.frombuffer(cursor.value(), dtype="<i8")[: max(0, self._count - first_id)]
                    labels[first_id : first_id + len(chunk)] = chunk
                    found = cursor.next()
            self._labels_cache = labels
        return self._labels_cache

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        scan = len(ids) >= SCAN_ADVICE_IDS and ids[-1] - ids[0] == len(ids) - 1
        if not scan:
            return self._read_records(ids, out)
        data_file = self.path / "data.mdb"
        if not self.options["readahead"]:
            mapped_files.advise(data_file, mapped_files.SEQUENTIAL)
        self._read_ahead(int(ids[0]), int(ids[-1]))
        try:
            return self._read_records(ids, out)
        finally:
            if self._env.info()["last_pgno"] * PAGE_BYTES > MAPPED_BUDGET_BYTES:
                mapped_files.advise(data_file, mapped_files.DONTNEED)
            if not self.options["readahead"]:
                mapped_files.advise(data_file, mapped_files.RANDOM)

    def _read_ahead(self, first_id: int, last_id: int) -> None:
        """Ask the kernel to read the pages of a scan now, in the background, in big requests.

        Records are appended in id order, so the scan's records lie between the first and
        the last one's pages; evicted from the page cache, the scan then waits for large
        sequential reads instead of one 4 KiB page fault at a time.
        """
        with self._env.begin(buffers=True) as txn:
            first, last = txn.get(image_key(first_id)), txn.get(image_key(last_id))
            if first is None or last is None:
                return
            start, stop = mapped_files.address_of(first), mapped_files.address_of(last) + len(last)
        if start < stop:
            mapped_files.advise_range(start, stop, mapped_files.WILLNEED)

    def _read_records(self, ids: np.ndarray, out: np.ndarray | None):
        uniform: Shape | None = self.uniform_shape
        if uniform is not None and out is None:
            out = np.empty((len(ids), *uniform), dtype=np.uint8)
        with self._env.begin(buffers=True) as txn:
            values = self._values_in_order(txn, ids)
            if uniform is not None:
                self._fill_uniform(values, out, uniform)
                return out, self._all_labels()[ids]
            labels = np.empty(len(ids), dtype=np.int64)
            images = []
            for index, value in enumerate(values):
                image, labels[index] = decode_record(value)
                images.append(image)
        return stack_if_uniform(images, out, uniform), labels

    def _values_in_order(self, txn: lmdb.Transaction, ids: np.ndarray):
        """Record buffers for ``ids``: a cursor scan for a run of ids, lookups otherwise.

        The scan hands back LMDB's own iterator (no generator in between): at 100,000
        records, every per-record Python step shows in the time.
        """
        if len(ids) > 1 and ids[-1] - ids[0] == len(ids) - 1 and np.all(np.diff(ids) == 1):
            cursor = txn.cursor()
            if not cursor.set_key(image_key(int(ids[0]))):
                raise CorruptDataError(f"image {int(ids[0])} is missing from the LMDB store at {self.path}")
            return itertools.islice(cursor.iternext(keys=False, values=True), len(ids))
        return self._lookups(txn, ids)

    def _lookups(self, txn: lmdb.Transaction, ids: np.ndarray):
        get = txn.get
        for image_id in ids.tolist():
            value = get(image_key(image_id))
            if value is None:
                raise CorruptDataError(f"image {image_id} is missing from the LMDB store at {self.path}")
            yield value

    @staticmethod
    def _fill_uniform(values, out: np.ndarray, shape: Shape) -> None:
        """Copy each record's pixels straight into ``out``: one copy, no temporary arrays."""
        image_bytes = int(np.prod(shape))
        destination = memoryview(out.reshape(-1))
        position = 0
        try:
            for value in values:
                destination[position : position + image_bytes] = value[HEADER.size :]
                position += image_bytes
        except ValueError:  # a record whose pixel bytes do not match the store's image shape
            raise CorruptDataError(
                f"an LMDB record does not hold {image_bytes} pixel bytes of shape {shape}; the store is damaged"
            ) from None
        if position != out.nbytes:
            raise CorruptDataError("the LMDB store holds fewer records than its manifest says; write it again")
