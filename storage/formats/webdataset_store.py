"""WebDataset: tar shards in the WebDataset layout, plus an index for random reads.

Each shard ``shard-000000.tar``, ``shard-000001.tar``, ... holds ``shard_images`` (10,000)
samples, in id order, as two members per sample (the layout the ``webdataset`` package
reads, with keys ``%09d`` of the image id):

* ``000000042.npy``: the pixels as a ``.npy`` file (``payload="npy"``, the default: no
  encoding cost, any shape and channel count, read with ``numpy.load``), or
  ``000000042.png`` (``payload="png"``: smaller and slower, Pillow's PNG);
* ``000000042.cls``: the label as decimal text.

So ``webdataset.WebDataset(store.shard_paths(), shardshuffle=False).decode()`` streams
the store as ``{"__key__", "npy" or "png", "cls"}`` samples. Headers are made by
:mod:`tarfile` (USTAR, mtime 0, owner 0, mode 0444, so the same images give the same
bytes).

``index.bin`` has one 48-byte record per image, appended as samples are written:
``shard``, ``height``, ``width``, ``channels`` (int32, channels 0 for a 2-D image),
``label``, ``offset`` and ``size`` of the pixels (or PNG bytes) inside the shard, and
``end``, where the sample's last member ends (int64); read it with
``numpy.fromfile("index.bin", storage.webdataset_store.RECORD)``. A random read is one
positional read at ``offset``; reading consecutive ids streams each shard's byte range in
large reads and picks the images out of it.

Appending continues the last shard: the two zero blocks that end a tar archive are
written at each commit and overwritten by the next append. A cut-off write is undone by
cutting the shard back to the last committed sample's ``end`` (and writing the end
blocks again), deleting later shards and truncating the index.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import PngImagePlugin

from .. import parallel
from ..base import ImageStore, stack_if_uniform
from ..batch import ImageBatch, Shape
from ..encodings import FORMAT_EXTENSIONS, EncodedImage
from ..errors import CorruptDataError, ModeError, StoreNotWritableError
from . import BUILTIN_INFO
from .npy_store import GrowingArray, read_into, write_all
from .png_files import IMAGES_PER_TASK, image_to_pil, pil_to_array

INDEX_FILE = "index.bin"
SHARD_PATTERN = "shard-{:06d}.tar"
BLOCK = tarfile.BLOCKSIZE
END_OF_ARCHIVE = bytes(2 * BLOCK)
RECORD = np.dtype(
    [
        ("shard", "<i4"),
        ("height", "<i4"),
        ("width", "<i4"),
        ("channels", "<i4"),
        ("label", "<i8"),
        ("offset", "<i8"),
        ("size", "<i8"),
        ("end", "<i8"),
    ]
)
PAYLOADS = ("npy", "png")
STREAM_BYTES = 16 * 2**20  # largest single read when streaming a run of samples
WRITE_BYTES = 256 * 1024  # members are gathered and written in pieces of about this size


def member_header(name: str, size: int) -> bytes:
    """A deterministic USTAR header for a member of ``size`` bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o444
    return info.tobuf(format=tarfile.USTAR_FORMAT)


_ZEROS = memoryview(bytes(BLOCK))


def padding(size: int) -> memoryview:
    """The zeros that round a member of ``size`` bytes up to whole 512-byte blocks."""
    return _ZEROS[: -size % BLOCK]


def npy_header(shape: Shape) -> bytes:
    """The ``.npy`` header of a C-order uint8 array of ``shape`` (what ``numpy.save`` writes)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def encode_pngs(images, compress_level: int) -> list[bytes]:
    """Worker task: PNG bytes of each image."""
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image_to_pil(image).save(buffer, format="PNG", compress_level=compress_level)
        encoded.append(buffer.getvalue())
    return encoded


def decode_png(data: bytes, shape: Shape) -> np.ndarray:
    with PngImagePlugin.PngImageFile(io.BytesIO(data)) as picture:
        return pil_to_array(picture, shape)


def record_shape(record: np.void) -> Shape:
    height, width, channels = int(record["height"]), int(record["width"]), int(record["channels"])
    return (height, width) if channels == 0 else (height, width, channels)


class WebDatasetStore(ImageStore):
    """Tar shards of ``<key>.npy``/``<key>.png`` + ``<key>.cls`` members and an index of offsets."""

    info = BUILTIN_INFO["webdataset"]
    default_options = {"payload": "npy", "shard_images": 10_000, "compress_level": 6, "parallel": True}

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        if options.get("payload", "npy") not in PAYLOADS:
            raise ModeError(f"payload {options['payload']!r} is not one of {', '.join(PAYLOADS)}")
        for name, low, high in (("shard_images", 1, 10**9), ("compress_level", 0, 9)):
            value = options.get(name, low)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ModeError(f"{name} {value!r} must be an integer from {low} to {high}")

    # -- files -----------------------------------------------------------------------

    def shard_path(self, shard: int) -> Path:
        return self.path / SHARD_PATTERN.format(shard)

    def shard_paths(self) -> list[str]:
        """The shards holding this store's images, for ``webdataset.WebDataset(...)``."""
        if not self._count:
            return []
        return [str(self.shard_path(shard)) for shard in range(self._shard_of(self._count - 1) + 1)]

    def _shard_of(self, image_id: int) -> int:
        return image_id // self.options["shard_images"]

    def _create(self) -> None:
        (self.path / INDEX_FILE).touch()
        self._open()

    def _open(self) -> None:
        # In a forked child the parent's descriptors are left open for the parent.
        self._inherited = (getattr(self, "_read_fds", None), getattr(self, "_index_fd", None))
        self._read_fds: dict[int, int] = {}
        self._write_fd: int | None = None
        try:
            self._index_fd = os.open(self.path / INDEX_FILE, os.O_RDONLY if self.mode == "r" else os.O_RDWR)
        except FileNotFoundError:
            raise CorruptDataError(
                f"{self.path / INDEX_FILE} is missing; write the store again with mode 'w'"
            ) from None
        if getattr(self, "_records", None) is None:
            records = np.fromfile(self.path / INDEX_FILE, dtype=RECORD, count=self._count)
            if len(records) < self._count:
                raise CorruptDataError(
                    f"{self.path / INDEX_FILE} holds {len(records)} images but the store committed {self._count}; "
                    "write it again with mode 'w'"
                )
            self._records = GrowingArray(records)

    def _stored_count(self) -> int:
        return -(-os.fstat(self._index_fd).st_size // RECORD.itemsize)

    def _damage_location(self, start: int, stop: int) -> str:
        shards = sorted({int(shard) for shard in self._index["shard"][start:stop]})
        return "in " + ", ".join(SHARD_PATTERN.format(shard) for shard in shards)

    def _close(self) -> None:
        self._close_shards()
        os.close(self._index_fd)

    def _close_shards(self) -> None:
        for descriptor in self._read_fds.values():
            os.close(descriptor)
        self._read_fds = {}
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    def _shard_fd(self, shard: int) -> int:
        descriptor = self._read_fds.get(shard)
        if descriptor is None:
            try:
                descriptor = os.open(self.shard_path(shard), os.O_RDONLY)
            except FileNotFoundError:
                raise CorruptDataError(f"{self.shard_path(shard)} is missing; the store is damaged") from None
            self._read_fds[shard] = descriptor
        return descriptor

    @property
    def _index(self) -> np.ndarray:
        return self._records.values

    # -- writing ---------------------------------------------------------------------

    def _begin_write(self, first_id: int, batch: ImageBatch) -> None:
        super()._begin_write(first_id, batch)
        self._npy_headers: dict[Shape, bytes] = {}
        if self._write_fd is None:
            self._open_shard_for(first_id)

    def _open_shard_for(self, image_id: int) -> None:
        """Open the shard that ``image_id`` goes into, positioned after the samples before it."""
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        shard = self._shard_of(image_id)
        starts_shard = image_id % self.options["shard_images"] == 0
        self._write_end = 0 if starts_shard else int(self._index[image_id - 1]["end"])
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if starts_shard else 0)
        try:
            self._write_fd = os.open(self.shard_path(shard), flags, 0o644)
        except OSError as error:
            raise StoreNotWritableError(f"cannot write {self.shard_path(shard)}: {error}") from None
        self._write_shard = shard

    def _payloads(self, images) -> list[bytes] | None:
        """PNG bytes of each image (in worker processes for big chunks), or None for npy."""
        if self.options["payload"] != "png":
            return None
        level = self.options["compress_level"]
        if not self.options["parallel"] or len(images) < 2 * IMAGES_PER_TASK:
            return encode_pngs(images, level)
        ranges = parallel.split_ranges(len(images), 4 * parallel.worker_count(), IMAGES_PER_TASK)
        pieces = parallel.run_tasks(encode_pngs, [(images[start:stop], level) for start, stop in ranges])
        return [data for piece in pieces for data in piece]

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        encoded = self._payloads(images)
        suffix = "." + self.options["payload"]
        if encoded is None:
            samples = [(suffix, image.shape, None, image) for image in images]
        else:
            samples = [(suffix, image.shape, data, None) for image, data in zip(images, encoded)]
        self._append_samples(samples, labels, first_id)

    def _write_encoded_chunk(self, items: list[EncodedImage], labels: np.ndarray, first_id: int) -> None:
        """Encoded images as members named by their real extension (``.jpg``, ``.png``, ``.webp``...)."""
        samples = [("." + FORMAT_EXTENSIONS.get(item.format, "bin"), item.shape, item.data, None) for item in items]
        self._append_samples(samples, labels, first_id)

    def _append_samples(self, samples: list, labels: np.ndarray, first_id: int) -> None:
        """Write each ``(suffix, shape, encoded bytes or None, pixels or None)`` sample and its label member."""
        records = np.zeros(len(labels), dtype=RECORD)
        pieces: list[bytes | memoryview] = []
        position = self._write_end

        def flush() -> None:
            nonlocal pieces
            if pieces:
                data = b"".join(pieces)
                write_all(self._write_fd, memoryview(data), self._write_end)
                self._write_end += len(data)
                pieces = []

        try:
            for index, ((suffix, shape, data, image), label) in enumerate(zip(samples, labels.tolist())):
                image_id = first_id + index
                if self._shard_of(image_id) != self._write_shard:
                    flush()
                    os.pwrite(self._write_fd, END_OF_ARCHIVE, self._write_end)
                    self._open_shard_for(image_id)
                    position = self._write_end
                key = f"{image_id:09d}"
                if data is None:
                    header = self._npy_headers.get(shape)
                    if header is None:
                        header = self._npy_headers[shape] = npy_header(shape)
                    size = len(header) + image.size
                    pixels_at = position + BLOCK + len(header)
                    pieces += [
                        member_header(key + suffix, size),
                        header,
                        np.ascontiguousarray(image).data,
                        padding(size),
                    ]
                    payload_size = image.size
                else:
                    size = payload_size = len(data)
                    pixels_at = position + BLOCK
                    pieces += [member_header(key + suffix, size), data, padding(size)]
                position += BLOCK + size + len(padding(size))
                text = str(label).encode()
                pieces += [member_header(key + ".cls", len(text)), text, padding(len(text))]
                position += BLOCK + len(text) + len(padding(len(text)))
                if position - self._write_end >= WRITE_BYTES:
                    flush()
                record = records[index]
                record["shard"], record["label"] = self._write_shard, label
                record["height"], record["width"] = shape[:2]
                record["channels"] = shape[2] if len(shape) == 3 else 0
                record["offset"], record["size"], record["end"] = pixels_at, payload_size, position
            flush()
            write_all(self._index_fd, memoryview(records.view(np.uint8)), first_id * RECORD.itemsize)
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
        self._records.truncate(first_id)
        self._records.append(records)

    def _read_encoded_one(self, image_id: int) -> tuple[bytes, int]:
        record = self._index[image_id]
        return self._read_member(record), int(record["label"])

    def _read_encoded_many(self, ids: np.ndarray) -> tuple[list[bytes], np.ndarray]:
        index = self._index
        return [self._read_member(index[image_id]) for image_id in ids.tolist()], index["label"][ids]

    def _read_member(self, record: np.void) -> bytes:
        """The bytes of one sample's image member, as they are in the tar."""
        return os.pread(self._shard_fd(int(record["shard"])), int(record["size"]), int(record["offset"]))

    def _commit(self, count: int) -> None:
        """End the open shard as a tar archive; the next append overwrites the end blocks."""
        if self._write_fd is not None:
            try:
                os.pwrite(self._write_fd, END_OF_ARCHIVE, self._write_end)
            except OSError as error:
                raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None

    def _commit_one(self, count: int) -> None:
        """One image at a time: the end blocks are written at ``flush``/``close`` only."""

    def _rollback(self, count: int) -> None:
        self._close_shards()
        self._records.truncate(count)
        last_shard = self._shard_of(count - 1) if count else -1
        try:
            os.truncate(self.path / INDEX_FILE, count * RECORD.itemsize)
            if count:
                end = int(self._index[count - 1]["end"])
                with open(self.shard_path(last_shard), "r+b") as shard:
                    shard.truncate(end)
                    shard.seek(end)
                    shard.write(END_OF_ARCHIVE)
            for path in self.path.glob("shard-*.tar"):
                number = path.stem.split("-")[-1]
                if number.isdigit() and int(number) > last_shard:
                    path.unlink()
        except OSError as error:
            raise StoreNotWritableError(f"cannot undo an unfinished write in {self.path}: {error}") from None

    # -- reading ---------------------------------------------------------------------

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        record = self._index[image_id]
        return self._read_record(record), int(record["label"])

    def _read_record(self, record: np.void, into: np.ndarray | None = None) -> np.ndarray:
        shape = record_shape(record)
        descriptor = self._shard_fd(int(record["shard"]))
        if self.options["payload"] == "npy":
            image = into if into is not None else np.empty(shape, dtype=np.uint8)
            read_into(descriptor, memoryview(image), int(record["offset"]))
            return image
        data = os.pread(descriptor, int(record["size"]), int(record["offset"]))
        try:
            image = decode_png(data, shape)
        except (OSError, ValueError, SyntaxError) as error:
            raise CorruptDataError(
                f"a PNG in {self.shard_path(int(record['shard']))} cannot be decoded ({error})"
            ) from None
        if into is not None:
            into[...] = image
            return into
        return image

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        index = self._index
        labels = index["label"][ids]
        uniform = self._layout_shape
        if uniform is None:
            images = [self._read_record(index[image_id]) for image_id in ids.tolist()]
            return stack_if_uniform(images, out), labels
        if out is None:
            out = np.empty((len(ids), *uniform), dtype=np.uint8)
        consecutive = len(ids) > 1 and ids[-1] - ids[0] == len(ids) - 1 and np.all(np.diff(ids) == 1)
        if consecutive and self.options["payload"] == "npy" and out.flags.c_contiguous:
            self._stream(int(ids[0]), int(ids[-1]) + 1, out)
        else:
            for position, image_id in enumerate(ids.tolist()):
                self._read_record(index[image_id], out[position])
        return out, labels

    def _stream(self, start: int, stop: int, out: np.ndarray) -> None:
        """Read ids ``start``..``stop`` shard by shard in large reads, picking out the pixels."""
        index = self._index
        image_bytes = int(np.prod(out.shape[1:]))
        flat = out.reshape(len(out), image_bytes)
        first = start
        while first < stop:
            shard = self._shard_of(first)
            last = min(stop, (shard + 1) * self.options["shard_images"])
            per_sample = max(1, int(index[first]["end"] - index[first]["offset"]) + image_bytes)
            last = min(last, first + max(1, STREAM_BYTES // per_sample))
            offsets = index["offset"][first:last]
            base = int(offsets[0])
            span = np.empty(int(offsets[-1]) - base + image_bytes, dtype=np.uint8)
            read_into(self._shard_fd(shard), memoryview(span), base)
            relative = offsets - base
            strides = np.diff(relative)
            target = flat[first - start : last - start]
            if len(strides) and np.all(strides == strides[0]):
                view = np.lib.stride_tricks.as_strided(span, (last - first, image_bytes), (int(strides[0]), 1))
                target[...] = view
            else:
                for row, at in enumerate(relative.tolist()):
                    target[row] = span[at : at + image_bytes]
            first = last
