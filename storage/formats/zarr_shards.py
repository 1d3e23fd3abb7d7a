"""A sharded Zarr v3 image array read and written here, shard file by shard file.

zarr-python handles one inner chunk at a time through its asyncio pipeline; with one
image per chunk that is most of the time a bulk read or write takes. This module does
the same work directly, in the format of :mod:`.zarr_shard_format`:

* Reading: each shard's index is read once (and its crc32c checked), a few shard files
  stay open, and an image is one ``pread`` of its chunk's bytes and one decode. A bulk
  read decodes runs of back-to-back chunks in one call straight into the caller's array,
  pieces of about a megabyte in parallel (the compressors release the GIL).
* Writing: chunks are encoded in parallel and appended to a temporary file per shard; a
  finished shard gets its index and is renamed over the shard file, so a shard file is
  always whole. A shard not yet full (the end of a batch, ``write_one`` images) lives in
  its temporary file until :meth:`ShardedImages.commit`, which writes it as it stands; the
  next append into that shard starts a new temporary file from the shard file's chunks.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import CorruptDataError
from .zarr_shard_format import EMPTY, ShardLayout, decode_index, encode_index, set_array_length

OPEN_FILES = 64
"""Shard files kept open for random reads (a million CIFAR images make 1,000 shards)."""
READ_PIECE_BYTES = 1 << 20
ENCODE_PIECE_BYTES = 1 << 18
PARALLEL_READ_CHUNKS = 64
"""Fewer chunks than this, read by id, are decoded on the calling thread (a thread hand-off costs more)."""
TEMPORARY_PREFIX = ".zarr-shard-"

Item = TypeVar("Item")
Result = TypeVar("Result")

_pool: ThreadPoolExecutor | None = None
_pool_pid = -1


def worker_pool() -> ThreadPoolExecutor | None:
    """A few threads for encoding and decoding (None on one core), made again in a forked child.

    A forked child's copy of the parent's pool has no threads, so the pool belongs to a process id.
    """
    global _pool, _pool_pid
    if _pool_pid != os.getpid():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        _pool = ThreadPoolExecutor(min(4, cores), thread_name_prefix="zarr-shards") if cores > 1 else None
        _pool_pid = os.getpid()
    return _pool


def in_parallel(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``[function(item) for item in items]``, on the worker threads when there is more than one item."""
    pool = worker_pool() if len(items) > 1 else None
    if pool is None:
        return [function(item) for item in items]
    return list(pool.map(function, items))


def write_all(descriptor: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, offset)
        view, offset = view[written:], offset + written


def decode_error(path: Path, error: Exception) -> CorruptDataError:
    return CorruptDataError(f"cannot decode an image chunk of {path} ({error}); write the store again")


# -- reading shard files --------------------------------------------------------------------


class ShardFiles:
    """The shard files of one array: their decoded indexes, and a few open descriptors.

    Descriptors are used under a lock, so a descriptor closed to make room is never one
    another thread is reading from.
    """

    def __init__(self, folder: Path, layout: ShardLayout) -> None:
        self.folder, self.layout = folder, layout
        self._indexes: dict[int, np.ndarray | None] = {}
        self._descriptors: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, shard: int) -> Path:
        return self.folder / self.layout.shard_key(shard)

    def index(self, shard: int) -> np.ndarray | None:
        """(offset, nbytes) per inner chunk, or None for a missing shard (it reads as the fill value)."""
        try:
            return self._indexes[shard]
        except KeyError:
            pass
        with self._lock:
            descriptor = self._descriptor(shard)
            index = None if descriptor is None else self._read_index(shard, descriptor)
        self._indexes[shard] = index
        return index

    def read_chunk(self, shard: int, chunk: int) -> bytes | None:
        """One inner chunk's encoded bytes, or None if it was never written."""
        index = self.index(shard)
        if index is None or index.item(chunk, 0) == EMPTY:
            return None
        return self.read_span(shard, index.item(chunk, 0), index.item(chunk, 0) + index.item(chunk, 1))

    def read_span(self, shard: int, start: int, stop: int) -> bytes:
        with self._lock:
            descriptor = self._descriptor(shard)
            data = os.pread(descriptor, stop - start, start) if descriptor is not None else b""
        if len(data) != stop - start:
            raise CorruptDataError(f"{self.path(shard)} is shorter than its index says; write the store again")
        return data

    def forget(self, shard: int) -> None:
        """Drop what is known of a shard file that was just replaced or deleted."""
        with self._lock:
            self._indexes.pop(shard, None)
            descriptor = self._descriptors.pop(shard, None)
            if descriptor is not None:
                os.close(descriptor)

    def close(self) -> None:
        with self._lock:
            while self._descriptors:
                os.close(self._descriptors.popitem()[1])

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held the parent's), own descriptors."""
        self._lock = threading.Lock()
        self.close()

    def _descriptor(self, shard: int) -> int | None:
        descriptor = self._descriptors.get(shard)
        if descriptor is not None:
            self._descriptors.move_to_end(shard)
            return descriptor
        try:
            descriptor = os.open(self.path(shard), os.O_RDONLY)
        except FileNotFoundError:
            return None
        self._descriptors[shard] = descriptor
        if len(self._descriptors) > OPEN_FILES:
            os.close(self._descriptors.popitem(last=False)[1])
        return descriptor

    def _read_index(self, shard: int, descriptor: int) -> np.ndarray:
        size = os.fstat(descriptor).st_size
        index_nbytes = self.layout.index_nbytes
        if size < index_nbytes:
            raise CorruptDataError(f"{self.path(shard)} is too short to hold a shard index; write the store again")
        data = os.pread(descriptor, index_nbytes, size - index_nbytes)
        return decode_index(data, self.layout.chunks_per_shard, size - index_nbytes, str(self.path(shard)))


# -- writing one shard ----------------------------------------------------------------------


class ShardBuilder:
    """One shard being written: chunks go to a temporary file; :meth:`finish` adds the index and renames it.

    Images arrive in id order. With several images per inner chunk, the images of a chunk
    not yet full wait in ``partial``; a shard finished early pads that chunk with the fill
    value, as zarr-python pads a chunk at the array's edge.
    """

    def __init__(self, layout: ShardLayout, shard: int, final_path: Path, temporary_path: Path) -> None:
        self.layout, self.shard = layout, shard
        self.final_path, self.temporary_path = final_path, temporary_path
        self.first_id = shard * layout.shard_images
        self.entries: list[tuple[int, int]] = []  # (offset, nbytes) of each finished chunk
        self.nbytes = 0
        self.partial = np.full(layout.chunk_shape, layout.fill_value, np.uint8)
        self.partial_count = 0
        self._descriptor = os.open(temporary_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    @classmethod
    def resume(cls, files: ShardFiles, shard: int, temporary_path: Path, keep: int) -> ShardBuilder:
        """A builder holding the first ``keep`` images of the shard file as it is on disk."""
        builder = cls(files.layout, shard, files.path(shard), temporary_path)
        try:
            builder._copy_from(files, keep)
        except BaseException:
            builder.discard()
            raise
        return builder

    def _copy_from(self, files: ShardFiles, keep: int) -> None:
        """Copy the encoded chunks of the first ``keep`` images; decode a chunk they fill only in part."""
        kept_chunks, kept_rows = divmod(keep, self.layout.chunk_images)
        index = files.index(self.shard)
        entries = index[:kept_chunks] if index is not None else np.full((kept_chunks, 2), EMPTY, np.uint64)
        written = entries[:, 0] != EMPTY
        if written.any():
            start = int(entries[written, 0].min())
            stop = int((entries[written, 0] + entries[written, 1]).max())
            data = memoryview(files.read_span(self.shard, start, stop))
            self._append([data[o - start : o - start + n] if o != EMPTY else None for o, n in entries.tolist()])
        else:
            self._append([None] * kept_chunks)
        if kept_rows:
            chunk = files.read_chunk(self.shard, kept_chunks)
            if chunk is not None:
                try:
                    self.partial[:] = self.layout.decode_chunk(chunk)
                except Exception as error:
                    raise decode_error(self.final_path, error) from error
            self.partial_count = kept_rows

    @property
    def end_id(self) -> int:
        return self.first_id + len(self.entries) * self.layout.chunk_images + self.partial_count

    @property
    def is_full(self) -> bool:
        return self.end_id == self.first_id + self.layout.shard_images

    def add(self, images: np.ndarray) -> None:
        """Append images (no more than the shard has room for) after ``end_id``."""
        per_chunk = self.layout.chunk_images
        position = 0
        if self.partial_count:
            position = min(per_chunk - self.partial_count, len(images))
            self.partial[self.partial_count : self.partial_count + position] = images[:position]
            self.partial_count += position
            if self.partial_count == per_chunk:
                self._append([self.layout.codec.encode(self.partial)])
                self.partial_count = 0
        whole = (len(images) - position) // per_chunk
        if whole:
            chunks = images[position : position + whole * per_chunk].reshape(whole, *self.layout.chunk_shape)
            self._append(self._encode(chunks))
            position += whole * per_chunk
        if position < len(images):
            self.partial_count = len(images) - position
            self.partial[: self.partial_count] = images[position:]

    def chunk(self, chunk: int) -> np.ndarray:
        """Inner chunk ``chunk`` as written so far, decoded."""
        if chunk >= len(self.entries):
            return self.partial.copy()
        offset, nbytes = self.entries[chunk]
        if offset == EMPTY:
            return np.full(self.layout.chunk_shape, self.layout.fill_value, np.uint8)
        try:
            return self.layout.decode_chunk(os.pread(self._descriptor, nbytes, offset))
        except Exception as error:
            raise decode_error(self.temporary_path, error) from error

    def truncate(self, count: int) -> None:
        """Forget the images from id ``count`` on (``count`` within this shard)."""
        kept_chunks, kept_rows = divmod(count - self.first_id, self.layout.chunk_images)
        if kept_chunks < len(self.entries):
            if kept_rows:
                self.partial[:] = self.chunk(kept_chunks)
            del self.entries[kept_chunks:]
            self.nbytes = max((o + n for o, n in self.entries if o != EMPTY), default=0)
            os.ftruncate(self._descriptor, self.nbytes)
        self.partial_count = kept_rows

    def finish(self) -> None:
        """Write the index after the chunks and rename the temporary file over the shard file."""
        if self.partial_count:
            self.partial[self.partial_count :] = self.layout.fill_value
            self._append([self.layout.codec.encode(self.partial)])
            self.partial_count = 0
        index = np.full((self.layout.chunks_per_shard, 2), EMPTY, "<u8")
        index[: len(self.entries)] = self.entries
        write_all(self._descriptor, encode_index(index), self.nbytes)
        os.close(self._descriptor)
        self._descriptor = -1
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temporary_path, self.final_path)

    def discard(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1
        self.temporary_path.unlink(missing_ok=True)

    def _encode(self, chunks: np.ndarray) -> list[bytes]:
        """Encode chunks in pieces of about ``ENCODE_PIECE_BYTES`` on the worker threads."""
        step = max(1, ENCODE_PIECE_BYTES // self.layout.chunk_nbytes)
        encode = self.layout.codec.encode
        pieces = in_parallel(
            lambda start: [encode(c) for c in chunks[start : start + step]], range(0, len(chunks), step)
        )
        return [blob for piece in pieces for blob in piece]

    def _append(self, blobs: list[bytes | memoryview | None]) -> None:
        """Write encoded chunks after the last one; None stands for a chunk never written."""
        offset, entries = self.nbytes, []
        for blob in blobs:
            entries.append((EMPTY, EMPTY) if blob is None else (offset, len(blob)))
            offset += 0 if blob is None else len(blob)
        write_all(self._descriptor, b"".join(blob for blob in blobs if blob is not None), self.nbytes)
        self.entries.extend(entries)
        self.nbytes = offset


# -- the array ------------------------------------------------------------------------------


class ShardedImages:
    """The images of a sharded Zarr v3 uint8 array, read and written without zarr-python.

    ``written`` images are in shard files; an open :class:`ShardBuilder` holds the ones
    appended after them until the shard fills or :meth:`commit` is called.
    """

    def __init__(self, folder: Path, layout: ShardLayout, length: int, temporary_folder: Path) -> None:
        self.folder, self.layout = folder, layout
        self.written = length
        self.files = ShardFiles(folder, layout)
        self._temporary_folder = temporary_folder
        self._builder: ShardBuilder | None = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.layout.image_shape

    # -- writing ---------------------------------------------------------------------------

    def append(self, first_id: int, images: np.ndarray) -> None:
        """Write ``images`` at ids ``first_id``..: right after the images appended so far."""
        position = 0
        while position < len(images):
            builder = self._builder_at(first_id + position)
            room = builder.first_id + self.layout.shard_images - builder.end_id
            builder.add(images[position : position + room])
            position += min(room, len(images) - position)
            if builder.is_full:
                self._finish_builder()

    def commit(self, count: int) -> None:
        """Put the shard being written in its file and record ``count`` images in ``zarr.json``."""
        if self._builder is not None:
            self._finish_builder()
        set_array_length(self.folder / "zarr.json", count)

    def rollback(self, count: int) -> None:
        """Forget images from id ``count`` on: in the open shard, in shard files, in ``zarr.json``."""
        builder = self._builder
        if builder is not None and count <= builder.first_id:
            builder.discard()
            self._builder = None
        elif builder is not None and count < builder.end_id:
            builder.truncate(count)
        self.written = min(self.written, count)
        self._delete_shards_from(math.ceil(count / self.layout.shard_images))
        self._delete_stale_temporary_files()
        self._cut_shard_at(count)
        set_array_length(self.folder / "zarr.json", count)

    def _cut_shard_at(self, count: int) -> None:
        """Rewrite the shard holding image ``count`` without the chunks after it (a rolled-back batch filled them).

        Reads never reach those chunks (``zarr.json`` says ``count``), but they take disk
        space, which a rollback after a full disk must give back.
        """
        shard, keep = divmod(count, self.layout.shard_images)
        if not keep or self._builder is not None:
            return
        index = self.files.index(shard)
        kept_chunks = -(-keep // self.layout.chunk_images)
        if index is None or not (index[kept_chunks:, 0] != EMPTY).any():
            return
        temporary = self._temporary_folder / f"{TEMPORARY_PREFIX}{shard}.tmp-{os.getpid()}"
        builder = ShardBuilder.resume(self.files, shard, temporary, keep)
        try:
            builder.finish()
        except BaseException:
            builder.discard()
            raise
        finally:
            self.files.forget(shard)

    def _builder_at(self, image_id: int) -> ShardBuilder:
        if self._builder is not None:
            if self._builder.end_id != image_id:
                raise RuntimeError(f"image {image_id} appended after image {self._builder.end_id - 1}")
            return self._builder
        if image_id != self.written:
            raise RuntimeError(f"image {image_id} appended after image {self.written - 1}")
        shard, position = divmod(image_id, self.layout.shard_images)
        temporary = self._temporary_folder / f"{TEMPORARY_PREFIX}{shard}.tmp-{os.getpid()}"
        if position:
            self._builder = ShardBuilder.resume(self.files, shard, temporary, position)
        else:
            self._builder = ShardBuilder(self.layout, shard, self.files.path(shard), temporary)
        return self._builder

    def _finish_builder(self) -> None:
        builder, self._builder = self._builder, None
        end = builder.end_id
        try:
            builder.finish()
        except BaseException:
            builder.discard()
            raise
        finally:
            self.files.forget(builder.shard)
        self.written = end

    def _delete_shards_from(self, first_shard: int) -> None:
        """Delete the shard files of shards ``first_shard``.. (with "/" keys, their folders)."""
        for shard, path in self._shard_paths():
            if shard >= first_shard:
                self.files.forget(shard)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()

    def _shard_paths(self) -> Iterator[tuple[int, Path]]:
        separator = self.layout.separator
        folder = self.folder / "c" if separator == "/" else self.folder
        if not folder.is_dir():
            return
        for entry in os.scandir(folder):
            parts = entry.name.split(separator) if separator != "/" else ["c", entry.name]
            if len(parts) > 1 and parts[0] == "c" and parts[1].isdigit():
                yield int(parts[1]), Path(entry.path)

    def _delete_stale_temporary_files(self) -> None:
        live = self._builder.temporary_path if self._builder is not None else None
        for path in self._temporary_folder.glob(f"{TEMPORARY_PREFIX}*"):
            if path != live:
                path.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------

    def read_one(self, image_id: int) -> np.ndarray:
        shard, position = divmod(image_id, self.layout.shard_images)
        chunk, row = divmod(position, self.layout.chunk_images)
        pixels = self._chunk(shard, chunk)
        return pixels[0] if self.layout.chunk_images == 1 else pixels[row].copy()

    def read_range(self, start: int, stop: int, out: np.ndarray) -> None:
        """Images ``start``..``stop`` into ``out``: whole pieces of shard files, decoded in parallel."""
        written_stop = min(stop, self.written)
        if start < written_stop:
            self._read_written_range(start, written_stop, out[: written_stop - start])
        for image_id in range(max(start, written_stop), stop):  # still in the open shard
            out[image_id - start] = self.read_one(image_id)

    def read_ids(self, ids: np.ndarray, out: np.ndarray) -> None:
        """Images ``ids`` (any order) into ``out``, decoding each inner chunk once."""
        per_chunk, per_shard = self.layout.chunk_images, self.layout.chunks_per_shard
        chunks = ids // per_chunk
        order = np.argsort(chunks, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(chunks[order])) + 1)

        def read_group(positions: np.ndarray) -> None:
            pixels = self._chunk(*divmod(int(chunks[positions[0]]), per_shard))
            out[positions] = pixels[ids[positions] % per_chunk]

        if len(groups) < PARALLEL_READ_CHUNKS:
            for group in groups:
                read_group(group)
            return
        step = math.ceil(len(groups) / 8)
        in_parallel(
            lambda first: [read_group(group) for group in groups[first : first + step]], range(0, len(groups), step)
        )

    def _chunk(self, shard: int, chunk: int) -> np.ndarray:
        builder = self._builder
        if builder is not None and shard == builder.shard:
            return builder.chunk(chunk)
        data = self.files.read_chunk(shard, chunk)
        if data is None:
            return np.full(self.layout.chunk_shape, self.layout.fill_value, np.uint8)
        try:
            return self.layout.decode_chunk(data)
        except Exception as error:
            raise decode_error(self.files.path(shard), error) from error

    def _read_written_range(self, start: int, stop: int, out: np.ndarray) -> None:
        """Images ``start``..``stop``, all in shard files, in pieces of about ``READ_PIECE_BYTES`` at once."""
        pieces = list(self._pieces(start, stop))
        for shard in sorted({shard for shard, _, _ in pieces}):
            self.files.index(shard)  # read (and check) each index once, before the threads start
        per_chunk, per_shard = self.layout.chunk_images, self.layout.chunks_per_shard

        def read_piece(piece: tuple[int, int, int]) -> None:
            shard, first, end = piece
            first_id, end_id = (shard * per_shard + first) * per_chunk, (shard * per_shard + end) * per_chunk
            if start <= first_id and end_id <= stop:  # whole chunks: decoded in place
                self._decode_chunks(shard, first, end, out[first_id - start : end_id - start])
                return
            scratch = np.empty((end_id - first_id, *self.layout.image_shape), np.uint8)
            self._decode_chunks(shard, first, end, scratch)
            low, high = max(first_id, start), min(end_id, stop)
            out[low - start : high - start] = scratch[low - first_id : high - first_id]

        in_parallel(read_piece, pieces)

    def _pieces(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(shard, first chunk, end chunk) covering images ``start``..``stop``, none across a shard."""
        per_chunk, per_shard = self.layout.chunk_images, self.layout.chunks_per_shard
        step = max(1, READ_PIECE_BYTES // self.layout.chunk_nbytes)
        chunk, end = start // per_chunk, (stop - 1) // per_chunk + 1
        while chunk < end:
            shard = chunk // per_shard
            piece_end = min(end, (shard + 1) * per_shard, chunk + step)
            yield shard, chunk - shard * per_shard, piece_end - shard * per_shard
            chunk = piece_end

    def _decode_chunks(self, shard: int, first: int, end: int, out: np.ndarray) -> None:
        """Decode inner chunks ``first``..``end`` of a shard file into ``out``, a run of frames per call."""
        index = self.files.index(shard)
        entries = index[first:end] if index is not None else np.full((end - first, 2), EMPTY, np.uint64)
        offsets, sizes = entries[:, 0], entries[:, 1]
        written = offsets != EMPTY
        if not written.any():
            out.fill(self.layout.fill_value)
            return
        low = int(offsets[written].min())
        data = memoryview(self.files.read_span(shard, low, int((offsets[written] + sizes[written]).max())))
        joined = np.zeros(len(entries), bool)  # chunk k's bytes follow chunk k-1's: one run
        if self.layout.codec.runs_decode_at_once:
            joined[1:] = written[1:] & written[:-1] & (offsets[1:] == offsets[:-1] + sizes[:-1])
        bounds = [*np.flatnonzero(~joined).tolist(), len(entries)]
        per_chunk = self.layout.chunk_images
        for run_start, run_end in zip(bounds[:-1], bounds[1:]):
            target = out[run_start * per_chunk : run_end * per_chunk]
            if not written[run_start]:
                target.fill(self.layout.fill_value)
                continue
            begin, finish = int(offsets[run_start]) - low, int(offsets[run_end - 1] + sizes[run_end - 1]) - low
            try:
                self.layout.codec.decode_into(data[begin:finish], target)
            except Exception as error:
                raise decode_error(self.files.path(shard), error) from error

    # -- processes -------------------------------------------------------------------------

    def after_fork(self) -> None:
        self.files.after_fork()

    def close(self) -> None:
        """Close the shard files; a shard still being written (never committed) is dropped."""
        self.files.close()
        if self._builder is not None:
            self._builder.discard()
            self._builder = None
