"""LMDB: a memory-mapped key-value store; each written chunk of images is a few records.

Layout (``"layout": "chunks"`` in the manifest's ``backend_state``), all in LMDB's main
database; a chunk is up to ``chunk_images`` (1,024) consecutive images starting at id
``first``, as ``write_batch`` streams them:

* ``b"#chunk:%010d" % first``: one 17-byte header per image of the chunk (label int64,
  height uint32, width uint32, channels uint8, 0 for a 2-D image; little-endian, no
  padding), readable with ``numpy.frombuffer(value, HEADER_DTYPE)``.
* ``b"%010d" % r`` for ``r = first, first + n, first + 2n, ...``: pixel records, each the
  pixels of images ``r .. r+n-1`` of the chunk (fewer in its last record) end to end,
  each image C-ordered uint8 (H, W) or (H, W, C), nothing else. ``n`` is the distance
  between a chunk's first two pixel keys: as many images as fill ``record_pages`` (option,
  4) overflow pages of 4 KiB (5 CIFAR images, 15,360 bytes), at least one. Image
  ``r + k`` starts at the sum of the sizes of the images before it in its record
  (``k * H * W * C`` when they share a shape).

No pickle, which is slow and would run code from whoever made the store. Why records
of a few images: LMDB gives every value over half a page overflow pages of its own, so
one record per 3 KB CIFAR image took a whole 4 KiB page (4,137 bytes per image) and
writing 100,000 of them cost about as much as the pickled per-image LMDB of the article;
five images per four pages take 3,306 bytes each, and the records are slices of the
caller's array, handed to LMDB without a copy. Records stay small because py-lmdb
touches every page of a value it returns (its ``preload``): a random read of a record of
1,024 images cost 7.5 us warm and faulted in 3 MB cold. A random read finds its chunk in
an in-memory list read from the ``#chunk:`` records on first use (one pass over them,
about 17 KB per 1,024 images) and copies one image out of the record's mapped value.
With the page cache evicted, a random read faults in the record's four pages one by one
(about 240 us here, against 80 us for one image per record); ``record_pages=1`` stores
one CIFAR image per record for that access pattern (4,145 bytes per image, writes about
0.45 of the article's time instead of 0.3).

Stores written before this layout (no ``layout`` in the manifest, or ``"records"``; also
every ``lmdb-png`` store) hold one record per image under ``b"%010d" % id`` (the 17-byte
header, then the pixels) and each chunk's labels under ``b"#labels:%010d" % first``.
They are read, and appended to, in that layout.

Writing: the environment is opened with LMDB's write map (``writemap=True``): LMDB builds
its pages in the memory-mapped file instead of in malloc'd memory that it then copies
with ``pwrite``, so no fresh process memory is touched (which this virtual machine hands
out slowly). Commits stay LMDB's normal synced ones: ``msync(MS_SYNC)`` of the map, then
the meta page written and synced (data before meta). Before each transaction the store
reserves its disk space with ``posix_fallocate`` (through a write map a full disk would
be a SIGBUS that kills the process; this fails cleanly) and writes zeros with ``pwrite``
over the pages the transaction will fill, so LMDB finds them in the page cache instead
of faulting each one in (see ``_prepare_transaction`` for why and the figures). A write
map also sets the file's size to the map's; closing a store that wrote shrinks the file
back to the pages in use. A writer keeps the kernel's normal read-ahead on its map: with
it off every page written through the map is faulted in alone, which cost 2.4 times the
CPU time of a batch. 100,000 CIFAR images: 0.155-0.165 s on a quiet machine (0.57 s
before), 0.24 of the time of the article's pickled LMDB; of it about 0.03 s filling
pages, 0.03-0.045 s LMDB copying the records, 0.085 s the commits' syncs, and the rest
Python building the records' keys and slices (a fixed stride for a one-size batch:
computing each image's bounds cost 0.015 s more) (``python benchmarks/article_vs.py
--rows lmdb_write_batch``).

LMDB's ``map_size`` is an address-space reservation; the map grows before a batch that
would not fit (and again on ``MapFullError``), so a store never fails for being full.
Readers open read-only without locks. Environments do not survive ``fork``: a child
process reopens its own on first use.

Memory and speed: a batch is committed every ``COMMIT_EVERY_BYTES`` in normal synced
transactions; it stays all-or-nothing through the manifest, which says ``"writing"``
until the last one, and rollback, which deletes records past the committed count, as for
every backend. ``write_one`` images arrive in write-behind groups
(``storage.write_behind``). A read-only store keeps one read transaction for single
reads. Read-ahead is chosen per operation: sequential for a scan of consecutive ids, off
(the ``readahead`` option, False by default) for random reads of a read-only store. Pages
leave the process's map (they stay in the page cache) after each commit in the middle of
a batch, and, once a store is bigger than ``MAPPED_BUDGET_BYTES``, after every commit,
scan and pass over the ``#chunk:`` records, so the process's memory does not grow with
the store.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Iterator
from typing import Any

import lmdb
import numpy as np

from .. import mapped_files
from ..base import ImageStore, stack_if_uniform
from ..batch import ImageBatch, Shape
from ..errors import CorruptDataError, ModeError, StoreNotWritableError
from . import BUILTIN_INFO
from .lmdb_env import acquire_reader, begin_read, open_error, release_reader
from .lmdb_layout import (  # noqa: F401  (HEADER, HEADER_DTYPE, encode_record: the layout, for lmdb-png and readers)
    CHUNK_PREFIX,
    HEADER,
    HEADER_DTYPE,
    LABELS_PREFIX,
    PAGE_BYTES,
    Chunk,
    ChunkIndex,
    chunk_key,
    chunks_layout_bytes,
    decode_record,
    encode_record,
    encode_records,
    image_headers,
    image_key,
    images_per_record,
    labels_key,
    pages_of,
    record_bytes_on_disk,
)

INITIAL_MAP_BYTES = 16 * 2**20
COMMIT_EVERY_BYTES = 256 * 2**20  # a batch's images per LMDB transaction
MAPPED_BUDGET_BYTES = mapped_files.BUDGET_BYTES  # stores bigger than this are unmapped after each scan or commit
SCAN_ADVICE_IDS = 4096  # scans at least this long read ahead sequentially
INDEX_CHUNKS_PER_UNMAP = 128  # chunk headers read between unmappings of a big store (see _chunk_index)
FILL_BYTES, FILL_BYTES_SMALL = 4 * 2**20, 256 * 2**10  # zeros per write before LMDB's (see _prepare_transaction)
ZEROS = memoryview(bytes(FILL_BYTES))
CHUNKS, RECORDS = "chunks", "records"  # the two layouts (see above)


class LmdbStore(ImageStore):
    """LMDB records of chunks of images: raw pixels plus one binary header per image."""

    info = BUILTIN_INFO["lmdb"]
    default_options = {"readahead": False, "record_pages": 4}
    reads_release_the_gil = False  # records are copied out of the map in a Python loop
    new_store_layout = CHUNKS
    # write_one images are committed in groups (one synced transaction each), see storage.write_behind
    write_behind_images = 4096

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        pages = options.get("record_pages", 1)
        if isinstance(pages, bool) or not isinstance(pages, int) or pages < 1:
            raise ModeError(f"record_pages {pages!r} must be a whole number of pages, 1 or more")

    # -- environment -----------------------------------------------------------------

    def _create(self) -> None:
        self.backend_state["layout"] = self.new_store_layout
        self._open()

    def _open(self) -> None:
        inherited = getattr(self, "_env", None)
        if inherited is not None and self.mode != "r":
            inherited.close()  # in a forked child: unmaps only the child's copy
            os.close(self._data_fd)
        self._txn = None
        self._read_txn = None
        self._chunked = self.backend_state.get("layout", RECORDS) == CHUNKS
        self._index = ChunkIndex()
        self._wrote = False  # whether this process wrote through the map (then close shrinks the file)
        self._reads = mapped_files.ReadBudget(self.path / "data.mdb")  # unmaps what reads of a big store mapped
        self._env_pid = os.getpid()
        try:
            if self.mode == "r":
                self._env = acquire_reader(self.path, bool(self.options["readahead"]))
            else:
                data_file = self.path / "data.mdb"
                # A write map sets the file's size to the map's: never ask for less than the file holds.
                existing = data_file.stat().st_size if data_file.exists() else 0
                # Read-ahead stays on for a writer: with it off, every page LMDB writes through the
                # map is faulted in alone, which more than doubled the time of a batch here.
                self._env = lmdb.open(
                    str(self.path), map_size=max(INITIAL_MAP_BYTES, existing), writemap=True, max_dbs=0
                )
                self._data_fd = os.open(data_file, os.O_RDWR)
                self._reserved_until = self._filled_until = 0  # bytes of the data file allocated, filled
                self._batch_end = 0  # where the map's room for the batch being written ends
        except (lmdb.Error, OSError) as error:
            raise open_error(self.path, error) from None

    def _close(self) -> None:
        if self._read_txn is not None:
            self._read_txn.abort()
            self._read_txn = None
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        if self.mode == "r":
            release_reader(self.path, self._env)
            return
        try:
            if self._wrote and self._env_pid == os.getpid():
                # The write map grew the file to the map's size: give back the unused tail.
                # Pages past the last committed one belong to no transaction of any reader.
                self._env.set_mapsize(1)  # LMDB rounds it up to the pages in use
        except lmdb.Error:
            pass  # the file keeps its unused (sparse) tail, which LMDB ignores
        finally:
            self._env.close()
            os.close(self._data_fd)

    def _used_bytes(self) -> int:
        return (self._env.info()["last_pgno"] + 1) * PAGE_BYTES

    def _grow_map_for(self, extra_bytes: int) -> None:
        """Grow the map so ``extra_bytes`` more fit, doubling to keep growth rare."""
        map_size, used = self._env.info()["map_size"], self._used_bytes()
        needed = used + int(extra_bytes * 1.25) + 4 * 2**20
        if needed > map_size:
            self._env.set_mapsize(max(needed, 2 * map_size))
        self._batch_end = needed

    def _prepare_transaction(self, first_id: int) -> None:
        """Reserve the disk space the transaction starting at ``first_id`` may write, and fill the pages it will write.

        Reserve: through a write map a block is allocated when LMDB first writes to its page,
        and a full disk there is a SIGBUS that kills the process; ``posix_fallocate`` fails
        cleanly instead. One transaction ahead, not a whole batch at once.

        Fill: a page of the map that the page cache does not hold yet is read in around the
        fault first (zero-filled, in large folios), and on this virtual machine that ran at
        about 0.5 GB/s whenever the memory was cold: a batch of 100,000 images took 0.17 s or
        0.6 s from one run to the next, and 1,000,000 images 2-8.7 s. Zeros written with
        ``pwrite`` over the pages the transaction will fill put them in the page cache the way
        ordinary writes do, and LMDB overwrites them in place; the pages lie past the last
        committed one, so no transaction uses them. The page cache keeps folios of the size
        written, and a later read through the map maps a whole folio into the process: the
        first ``MAPPED_BUDGET_BYTES`` of the file (which may stay mapped whole anyway) get
        ``FILL_BYTES`` writes, the quickest, and the rest ``FILL_BYTES_SMALL`` writes, so that
        random reads of a big store map little (4,096 random ids of a 1,000,000-image store
        mapped 2.5 GB after 4 MiB writes, 0.5 GB after 256 KiB ones, 0.7 GB before this layout).
        """
        map_size, used = self._env.info()["map_size"], self._used_bytes()
        reserve_end = min(self._batch_end, used + 2 * (COMMIT_EVERY_BYTES + self.chunk_bytes), map_size)
        fill_end = min(used + self._transaction_bytes(first_id), reserve_end)
        try:
            if max(used, self._reserved_until) < reserve_end:
                start = max(used, self._reserved_until)
                os.posix_fallocate(self._data_fd, start, reserve_end - start)
                self._reserved_until = reserve_end
            offset = max(used, self._filled_until)
            while offset < fill_end:
                block = FILL_BYTES_SMALL if offset >= MAPPED_BUDGET_BYTES else FILL_BYTES
                offset += os.pwrite(self._data_fd, ZEROS[: min(block, fill_end - offset)], offset)
            self._filled_until = max(self._filled_until, fill_end)
        except OSError as error:
            raise StoreNotWritableError(f"cannot reserve disk space for LMDB at {self.path}: {error}") from None

    def _transaction_bytes(self, first_id: int) -> int:
        """Bytes of pages the transaction starting at ``first_id`` will add (chunks layout; else 0).

        Exact for a one-size batch; for images of many sizes (photos, encoded bytes) from the
        batch's average, which may fill a little past what the transaction uses: the next
        transaction starts where the filling stopped, and close gives the tail back."""
        batch = self._batch
        if not self._chunked:
            return 0
        if not batch.is_uniform:  # photos, encoded bytes: a transaction ends after COMMIT_EVERY_BYTES and a chunk
            average = batch.nbytes / max(1, len(batch))
            left = self._batch_first_id + len(batch) - first_id
            count = min(left, math.ceil((COMMIT_EVERY_BYTES + self.chunk_bytes) / max(1.0, average)))
            return int(count * (average + PAGE_BYTES + 32))  # a page of rounding per record, and the B-tree's pages
        image_bytes, step = int(np.prod(batch.uniform_shape)), self._chunk_length(batch)
        chunks = -(-COMMIT_EVERY_BYTES // (step * image_bytes))  # a transaction is committed after this many
        count = min(chunks * step, self._batch_first_id + len(batch) - first_id)
        per_record = images_per_record(image_bytes, self.options["record_pages"])
        return chunks_layout_bytes(count, image_bytes, step, per_record) + count * 32  # and the B-tree's pages

    # -- writing ---------------------------------------------------------------------

    def _begin_write(self, first_id: int, batch: ImageBatch) -> None:
        super()._begin_write(first_id, batch)
        shapes = [batch.uniform_shape] if batch.is_uniform else batch.shapes(0, len(batch))
        if self._chunked:  # the pixels, up to a page of rounding per record, and each chunk's headers
            largest = max(int(np.prod(shape)) for shape in shapes)
            records = -(-len(batch) // images_per_record(largest, self.options["record_pages"]))
            chunks = -(-len(batch) // self._chunk_length(batch))
            headers = pages_of(self.chunk_images * HEADER.size) * PAGE_BYTES
            estimate = batch.nbytes + records * PAGE_BYTES + chunks * headers
        else:
            estimate = sum(record_bytes_on_disk(int(np.prod(shape))) for shape in shapes) * (len(batch) // len(shapes))
        self._grow_map_for(estimate)
        self._batch, self._batch_first_id = batch, first_id
        self._wrote = True
        self._prepare_transaction(first_id)
        self._txn = self._env.begin(write=True)
        self._txn_first_id, self._txn_bytes = first_id, 0

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        try:
            self._put(images, labels, first_id)
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
        mapped_files.advise(self.path / "data.mdb", mapped_files.DONTNEED)  # a long batch maps one transaction
        self._prepare_transaction(next_id)
        self._txn = self._env.begin(write=True)
        self._txn_first_id, self._txn_bytes = next_id, 0

    def _unmap_written_pages(self) -> None:
        """Past ``MAPPED_BUDGET_BYTES``, drop the committed (clean) pages from this process's map."""
        if self._used_bytes() > MAPPED_BUDGET_BYTES:
            mapped_files.advise(self.path / "data.mdb", mapped_files.DONTNEED)

    def _put(self, images, labels: np.ndarray, first_id: int) -> None:
        if self._chunked:
            self._put_chunk(images, labels, first_id)
        else:
            self._put_records(images, labels, first_id)

    def _put_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        """The chunk's pixel records (slices of the caller's array itself when it is contiguous) and its headers."""
        if isinstance(images, np.ndarray):  # one size: a record is a fixed stride of the flat pixels
            flat = memoryview(np.ascontiguousarray(images).reshape(-1))
            size = len(flat) // len(labels)
            stride = images_per_record(size, self.options["record_pages"]) * size
            records = [
                (image_key(first_id + start // size), flat[start : start + stride])
                for start in range(0, len(flat), stride)
            ]
        else:
            pixels = np.concatenate([np.ascontiguousarray(image).reshape(-1) for image in images])
            bounds = [0, *itertools.accumulate(image.size for image in images)]
            largest = max(stop - start for start, stop in itertools.pairwise(bounds))
            per_record = images_per_record(largest, self.options["record_pages"])
            flat = memoryview(pixels)
            records = [
                (image_key(first_id + index), flat[bounds[index] : bounds[min(index + per_record, len(labels))]])
                for index in range(0, len(labels), per_record)
            ]
        cursor = self._txn.cursor()
        consumed, added = cursor.putmulti(records, append=True)
        if added != len(records):
            raise CorruptDataError(f"the LMDB store at {self.path} already holds images from id {first_id} on")
        cursor.put(chunk_key(first_id), image_headers(images, labels).tobytes())

    def _put_records(self, images, labels: np.ndarray, first_id: int) -> None:
        if isinstance(images, np.ndarray):
            buffer, size = encode_records(images, labels)
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
        map_size = self._env.info()["map_size"]
        self._env.set_mapsize(map_size * 2)
        self._batch_end = max(self._batch_end, map_size * 2)
        self._prepare_transaction(self._txn_first_id)
        self._txn = self._env.begin(write=True)
        start = self._txn_first_id
        try:
            for chunk_start in range(start, stop_id, self.chunk_images):
                chunk_stop = min(chunk_start + self.chunk_images, stop_id)
                begin, end = chunk_start - self._batch_first_id, chunk_stop - self._batch_first_id
                self._put(self._batch.chunk(begin, end), self._batch.labels[begin:end], chunk_start)
        except lmdb.MapFullError:
            self._redo_batch_in_bigger_map(stop_id)

    def _commit(self, count: int) -> None:
        if self._txn is not None:
            self._txn.commit()
            self._txn = None
            self._batch = None
            self._unmap_written_pages()

    def _rollback(self, count: int) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self._batch = None
        self._labels_cache = None
        self._index.truncate(count)
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor()
            found = cursor.set_range(image_key(count))
            while found and cursor.key()[:1].isdigit():
                found = cursor.delete()
            for prefix, key in ((LABELS_PREFIX, labels_key(count)), (CHUNK_PREFIX, chunk_key(count))):
                found = cursor.set_range(key)
                while found and cursor.key().startswith(prefix):
                    found = cursor.delete()
        if self._wrote:  # give back the space reserved for the batch (a full disk wants it back)
            self._env.set_mapsize(1)
            self._reserved_until = self._filled_until = 0

    def _stored_count(self) -> int:
        """Images the environment holds: after the last chunk's headers (chunks) or the last record (records).

        A ``data.mdb`` shorter than LMDB's last page says is refused first: reading a page past
        the end of a mapped file kills the process with SIGBUS.
        """
        size, used = os.stat(self.path / "data.mdb").st_size, self._used_bytes()
        if size < used:
            raise CorruptDataError(
                f"{self.path / 'data.mdb'} holds {size:,} bytes but its pages run to {used:,}: the file was cut "
                "short. Restore the store from a copy, or write it again from its source"
            )
        with begin_read(self._env) as txn:
            cursor = txn.cursor()
            if not self._chunked:
                last = bytes(cursor.key()) if cursor.last() else b""
                return int(last) + 1 if last.isdigit() else 0
            found = cursor.set_range(CHUNK_PREFIX[:-1] + b";")  # the first key after every chunk header
            found = cursor.prev() if found else cursor.last()
            key = bytes(cursor.key()) if found else b""
            if not key.startswith(CHUNK_PREFIX):
                return 0
            return int(key[len(CHUNK_PREFIX) :]) + len(cursor.value()) // HEADER.size

    def _damage_location(self, start: int, stop: int) -> str:
        return "in data.mdb"

    @contextlib.contextmanager
    def _scanning(self, start: int, stop: int) -> Iterator[None]:
        """A verified scan reads piece by piece: the map is advised as for one scan, for the whole range at once.

        Each piece alone is shorter than ``SCAN_ADVICE_IDS``; read from an evicted store with the
        map's random-read advice, each page faulted in by itself (a verified read of 100,000
        images took ten times as long as a plain one).
        """
        if stop - start < SCAN_ADVICE_IDS:
            yield
            return
        with self._scan_advice(start, stop - 1):
            yield

    # -- reading ---------------------------------------------------------------------

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        self._reads.count(1, True, self._used_bytes, self._count)
        if self._chunked:
            index = self._index
            chunk = (index if image_id < index.stop else self._chunk_index()).find(image_id)
            key, decode = b"%010d" % chunk.record_of(image_id), chunk.image
        else:
            key, decode = b"%010d" % image_id, self._decoded
        txn = self._read_txn
        if txn is None:
            if self.mode != "r":  # the store changes: a transaction per read sees the latest commit
                with begin_read(self._env) as txn:
                    return decode(txn.get(key), image_id)
            txn = self._read_txn = begin_read(self._env)  # read-only: one for every single read
        return decode(txn.get(key), image_id)

    def _decoded(self, value: memoryview | None, image_id: int) -> tuple[np.ndarray, int]:
        if value is None:
            raise CorruptDataError(f"image {image_id} is missing from the LMDB store at {self.path}")
        return decode_record(value)

    def _chunk_index(self) -> ChunkIndex:
        """The chunk index, brought up to the committed count.

        Each chunk's headers lie between its pixel records, so loading the index touches a
        page every few megabytes of the file, and on this kernel each touch maps a whole
        page-cache folio: a store bigger than ``MAPPED_BUDGET_BYTES`` is unmapped every
        ``INDEX_CHUNKS_PER_UNMAP`` chunks (1,000,000 images mapped 2.3 GB otherwise).
        """
        index = self._index
        if index.stop >= self._count:
            return index
        big = self._env.info()["last_pgno"] * PAGE_BYTES > MAPPED_BUDGET_BYTES
        with begin_read(self._env) as txn:
            while index.stop < self._count:
                index.load(txn, self._count, self.path, INDEX_CHUNKS_PER_UNMAP if big else None)
                if big:
                    mapped_files.advise(self.path / "data.mdb", mapped_files.DONTNEED)
        return index

    def _all_labels(self) -> np.ndarray:
        """Every label, from the per-chunk label records (a few reads instead of one per image)."""
        if getattr(self, "_labels_cache", None) is None:
            labels = np.zeros(self._count, dtype=np.int64)
            with begin_read(self._env) as txn:
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
        read = self._read_chunks if self._chunked else self._read_records
        scan = len(ids) >= SCAN_ADVICE_IDS and ids[-1] - ids[0] == len(ids) - 1
        self._reads.count(len(ids), len(ids) > 1 and ids[-1] - ids[0] != len(ids) - 1, self._used_bytes, self._count)
        if not scan:
            return read(ids, out)
        with self._scan_advice(int(ids[0]), int(ids[-1])):
            return read(ids, out)

    @contextlib.contextmanager
    def _scan_advice(self, first_id: int, last_id: int) -> Iterator[None]:
        """Sequential advice and read-ahead over the records of a scan; the map's usual advice afterwards.

        A scan within a scan (a verified scan's pieces) leaves the advice to the outer one.
        """
        if getattr(self, "_in_scan", False):
            yield
            return
        self._in_scan = True
        data_file = self.path / "data.mdb"
        random_reads = self.mode == "r" and not self.options["readahead"]
        if random_reads:
            mapped_files.advise(data_file, mapped_files.SEQUENTIAL)
        self._read_ahead(first_id, last_id)
        try:
            yield
        finally:
            self._in_scan = False
            if self._env.info()["last_pgno"] * PAGE_BYTES > MAPPED_BUDGET_BYTES:
                mapped_files.advise(data_file, mapped_files.DONTNEED)
            if random_reads:
                mapped_files.advise(data_file, mapped_files.RANDOM)

    def _read_ahead(self, first_id: int, last_id: int) -> None:
        """Ask the kernel to read the pages of a scan now, in the background, in big requests.

        Records are appended in id order, so the scan's records lie between the first and
        the last one's pages; evicted from the page cache, the scan then waits for large
        sequential reads instead of one 4 KiB page fault at a time.
        """
        if self._chunked:
            index = self._chunk_index()
            first_key, last_key = (image_key(index.find(i).record_of(i)) for i in (first_id, last_id))
        else:
            first_key, last_key = image_key(first_id), image_key(last_id)
        with begin_read(self._env) as txn:
            first, last = txn.get(first_key), txn.get(last_key)
            if first is None or last is None:
                return
            start, stop = mapped_files.address_of(first), mapped_files.address_of(last) + len(last)
        if start < stop:
            mapped_files.advise_range(start, stop, mapped_files.WILLNEED)

    def _read_chunks(self, ids: np.ndarray, out: np.ndarray | None):
        """Images of ``ids`` from the chunks layout: one lookup per pixel record, not per image.

        Ids are grouped by record (in the order given when that already groups them, as a
        scan does); each group is copied out of the record's mapped value in one NumPy
        step: a slice for a run of ids, a gather otherwise.
        """
        index = self._chunk_index()
        uniform: Shape | None = self._layout_shape
        if uniform is not None and out is None:
            out = np.empty((len(ids), *uniform), dtype=np.uint8)
        if uniform is not None and len(ids) > 1 and ids[-1] - ids[0] == len(ids) - 1 and (np.diff(ids) == 1).all():
            self._scan_uniform(index, int(ids[0]), len(ids), out)
            return out, index.labels[ids]
        images: list[np.ndarray] = []
        positions = np.searchsorted(np.asarray(index.first_ids), ids, side="right") - 1
        chunk_firsts = np.asarray(index.first_ids)[positions]
        per_record = np.asarray([chunk.per_record for chunk in index.chunks])[positions]
        records = ids - (ids - chunk_firsts) % per_record
        order = None if len(ids) < 2 or (np.diff(records) >= 0).all() else np.argsort(records, kind="stable")
        grouped = records if order is None else records[order]
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(grouped)) + 1, [len(ids)]]).tolist()
        grouped, positions = grouped.tolist(), positions.tolist()
        id_list, order_list = ids.tolist(), None if order is None else order.tolist()
        out_bytes = memoryview(out.reshape(-1)) if uniform is not None else None
        image_bytes = math.prod(uniform) if uniform is not None else 0
        with begin_read(self._env) as txn:
            for begin, end in itertools.pairwise(bounds):
                if begin == end:
                    continue
                record_id = grouped[begin]
                value = txn.get(b"%010d" % record_id)
                if value is None:
                    raise CorruptDataError(f"images {record_id}.. are missing from the LMDB store at {self.path}")
                chunk = index.chunks[positions[begin if order_list is None else order_list[begin]]]
                if uniform is None:
                    targets = slice(begin, end) if order is None else order[begin:end]
                    images += [chunk.image(value, image_id)[0] for image_id in ids[targets].tolist()]
                    continue
                if chunk.shape != uniform:
                    raise CorruptDataError(f"the LMDB chunk of images {chunk.first_id}.. is not of shape {uniform}")
                if end - begin > 1 and order is None and id_list[end - 1] - id_list[begin] == end - begin - 1:
                    pixels = chunk.record_images(value, record_id)  # a run of ids: one slice
                    first = id_list[begin] - record_id
                    out[begin:end] = pixels[first : first + end - begin]
                    continue
                for group_index in range(begin, end):  # scattered ids: a byte copy each, no NumPy call
                    target = group_index if order_list is None else order_list[group_index]
                    start = (id_list[target] - record_id) * image_bytes
                    if start + image_bytes > len(value):
                        chunk.record_images(value, record_id)  # raises, naming the record's true size
                        raise CorruptDataError(f"image {id_list[target]} is missing from the LMDB store at {self.path}")
                    out_bytes[target * image_bytes : (target + 1) * image_bytes] = value[start : start + image_bytes]
        labels = index.labels[ids]
        if uniform is not None:
            return out, labels
        if order is not None:  # images were read record by record: put them back in the order asked
            images = [images[position] for position in np.argsort(order).tolist()]
        return stack_if_uniform(images, out, uniform), labels

    def _scan_uniform(self, index: ChunkIndex, first_id: int, count: int, out: np.ndarray) -> None:
        """Images ``first_id``.. of a one-size store: its pixel records in key order, copied end to end into ``out``.

        Records follow each other in id order, so a cursor walks them without a lookup
        each; every record's key is checked against the id the copy has reached.
        """
        image_bytes = out.nbytes // count
        expected = index.find(first_id).record_of(first_id)
        skip = (first_id - expected) * image_bytes
        destination, position = memoryview(out.reshape(-1)), 0
        with begin_read(self._env) as txn:
            cursor = txn.cursor()
            found = cursor.set_key(b"%010d" % expected)
            for key, value in cursor.iternext() if found else ():
                if int(key) != expected or len(value) % image_bytes:
                    raise CorruptDataError(
                        f"the LMDB record of images {expected}.. is missing or holds {len(value)} bytes; the store is damaged"
                    )
                piece = value[skip : skip + out.nbytes - position]
                destination[position : position + len(piece)] = piece
                position += len(piece)
                if position == out.nbytes:
                    return
                expected += len(value) // image_bytes
                skip = 0
        raise CorruptDataError(
            f"image {first_id + position // image_bytes} is missing from the LMDB store at {self.path}"
        )

    def _read_records(self, ids: np.ndarray, out: np.ndarray | None):
        uniform: Shape | None = self._layout_shape
        if uniform is not None and out is None:
            out = np.empty((len(ids), *uniform), dtype=np.uint8)
        with begin_read(self._env) as txn:
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
        """Record buffers for ``ids`` (records layout): a cursor scan for a run of ids, lookups otherwise.

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
