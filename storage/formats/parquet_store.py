"""Apache Parquet through pyarrow: one row per image, in part files of row groups.

Each part file ``part-00000.parquet``, ``part-00001.parquet``, ... is an ordinary Parquet
file (``pyarrow.parquet.read_table(path)`` or any other reader opens it) with the schema

    image: binary   the pixels in C order (``encoding="raw"``, the default), or each image's
                    encoded bytes under any other ``encoding`` (``"source"``: the source
                    files' own JPEG/PNG/WebP bytes; ``"png"``, ``"jpeg:Q"``, ``"webp"``)
    height, width, channels: int32   (the decoded shape; channels 0 for a 2-D image)
    label: int64

and row groups of ``row_group_rows`` (100) rows, compressed with ``compression``
("snappy", pyarrow's default; also "zstd", "lz4", "gzip" or "none"). Rows are in id order;
``backend_state["parts"]`` in the manifest lists each part's first id and row count.

A random read finds the part and row group by arithmetic, reads that one row group's
``image`` column and slices its row out: Parquet's smallest unit of reading is a column
chunk of a row group, so the row-group size sets the cost of a random read (about
``row_group_rows`` images read and decompressed for one). With 32x32 RGB images, groups
of 100 rows (300 KB) took 0.3 ms per random read on the development machine and groups of
1,000 rows 2.3 ms, for 3.5% fewer bytes on disk; for larger images use fewer rows. The
last row group read is kept, so reading ids in order does not read a row group twice.
Labels and shapes are read once, at open.

Each ``write_batch`` writes a new part, streaming one row group at a time. ``write_one``
rows collect in memory and go out a row group at a time into a part that is finished at
``flush``/``close`` (or when a read needs them). A cut-off write is undone by deleting
the part it was writing: parts the manifest does not list are removed when an
interrupted store is reopened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..base import ImageStore, ProgressCallback, stack_if_uniform
from ..batch import Shape
from ..encodings import EncodedImage
from ..errors import CorruptDataError, ModeError, StoreNotWritableError
from . import BUILTIN_INFO
from .npy_store import GrowingArray

PART_PATTERN = "part-{:05d}.parquet"
# No dictionary for the image column. Images are almost never repeated, and pyarrow gives up
# on a dictionary of big values after its 1 MB dictionary page anyway, having hashed them.
# A folder that does repeat photos (benchmarks/photos.py cycles 578 of them to 100,000) was
# stored at 1.6 % of its bytes, one copy per row group, which says nothing about real data.
DICTIONARY_COLUMNS = ["height", "width", "channels", "label"]
SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("channels", pa.int32()),
        ("label", pa.int64()),
    ]
)
COMPRESSIONS = ("none", "snappy", "zstd", "lz4", "gzip")
READ_BYTES = 64 * 2**20  # largest run of row groups read in one call


def binary_column(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of a binary column, without copying: row i is bytes[offsets[i]:offsets[i+1]]."""
    chunk = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    _, offsets_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
    return offsets, data


def image_table(images, labels: np.ndarray, payload: pa.Array | None = None) -> tuple[pa.Table, np.ndarray]:
    """Rows of :data:`SCHEMA` for a chunk of images, and their (height, width, channels).

    ``payload`` replaces the raw pixels (encoded images, say); without it a uniform array
    becomes the binary column without a copy per image.
    """
    if isinstance(images, np.ndarray):
        shape = images.shape[1:]
        shapes = np.empty((len(images), 3), dtype=np.int32)
        shapes[:] = (shape[0], shape[1], shape[2] if len(shape) == 3 else 0)
    else:
        shapes = np.array([(*image.shape[:2], image.shape[2] if image.ndim == 3 else 0) for image in images], np.int32)
    if payload is None and isinstance(images, np.ndarray):
        image_bytes = int(np.prod(images.shape[1:]))
        offsets = pa.py_buffer(np.arange(len(images) + 1, dtype=np.int32) * image_bytes)
        data = pa.py_buffer(np.ascontiguousarray(images).reshape(-1))
        payload = pa.Array.from_buffers(pa.binary(), len(images), [None, offsets, data])
    elif payload is None:
        payload = pa.array([np.ascontiguousarray(image).tobytes() for image in images], type=pa.binary())
    columns = [payload, *(pa.array(shapes[:, axis]) for axis in range(3)), pa.array(labels, type=pa.int64())]
    return pa.Table.from_arrays(columns, schema=SCHEMA), shapes


class ParquetStore(ImageStore):
    """Parquet part files, one row (image bytes, shape, label) per image."""

    info = BUILTIN_INFO["parquet"]
    # "parallel" is kept for stores written before encodings were shared: encoding runs on the pool anyway
    default_options = {"compression": "snappy", "row_group_rows": 100, "parallel": True}

    torch_shuffles = True  # its own epochs: whole row groups through a shuffle buffer (parquet_torch)
    torch_order = (
        "Parquet streamed by row groups: whole row groups in a seeded random order, dealt out to the workers, "
        "through a 1,000-sample shuffle buffer"
    )

    @classmethod
    def torch_dataset(
        cls,
        path: str | os.PathLike[str],
        transform: Any = None,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Epochs as Parquet's users stream them (:class:`~storage.formats.parquet_torch.ParquetRowGroups`):
        each row group read whole once, in a seeded random order, samples through a shuffle buffer.

        Samples are dicts (``image``: pixels, or an encoded store's kept bytes as a uint8 array;
        ``label``; ``id``). ``batch_size`` is the DataLoader's; a per-image ``transform`` is not
        taken (use :class:`storage.torch.StoreDataset` for that).
        """
        import functools

        from .parquet_torch import ParquetRowGroups

        if transform is not None or not shuffle:
            raise TypeError("Parquet's row-group epochs are shuffled and take no per-image transform")
        with cls(path, "r") as store:
            opener = functools.partial(cls, path, "r")
            return ParquetRowGroups(store, opener, 0 if seed is None else seed, stored=True, keep_store=False)

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        if options.get("compression", "snappy") not in COMPRESSIONS:
            raise ModeError(f"compression {options['compression']!r} is not one of {', '.join(COMPRESSIONS)}")
        rows = options.get("row_group_rows", 1)
        if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= 10**7:
            raise ModeError(f"row_group_rows {rows!r} must be an integer from 1 to 10,000,000")

    # -- files -----------------------------------------------------------------------

    def part_path(self, part: int) -> Path:
        return self.path / PART_PATTERN.format(part)

    def part_paths(self) -> list[str]:
        """The part files holding this store's committed images, in id order."""
        return [str(self.part_path(part)) for part in range(len(self._parts))]

    @property
    def _parts(self) -> list[list[int]]:
        return self.backend_state.setdefault("parts", [])

    def _create(self) -> None:
        self._open()

    def _open(self) -> None:
        # In a forked child the parent's open files are left alone (pyarrow reads by offset).
        self._inherited = getattr(self, "_files", None)
        self._files: dict[int, pq.ParquetFile] = {}
        self._cached_group: tuple[int, int, np.ndarray, np.ndarray] | None = None
        if getattr(self, "_label_values", None) is None:
            self._writer: pq.ParquetWriter | None = None
            self._buffer: list[pa.Table] = []
            self._buffered_rows = 0
            self._load_columns()

    def _load_columns(self) -> None:
        """Labels and shapes of every committed image, from the small columns of each part."""
        labels, shapes = [np.empty(0, np.int64)], [np.empty((0, 3), np.int32)]
        for part, (_first, rows) in enumerate(self._parts):
            table = self._file(part).read(columns=["height", "width", "channels", "label"])
            if table.num_rows != rows:
                raise CorruptDataError(f"{self.part_path(part)} holds {table.num_rows} rows, the manifest {rows}")
            labels.append(table.column("label").to_numpy())
            shapes.append(np.stack([table.column(name).to_numpy() for name in ("height", "width", "channels")], axis=1))
        self._label_values = GrowingArray(np.concatenate(labels).astype(np.int64, copy=False))
        self._shape_values = GrowingArray(np.concatenate(shapes).astype(np.int32, copy=False))
        if len(self._label_values) < self._count:
            raise CorruptDataError(
                f"the parts in {self.path} hold {len(self._label_values)} images, the manifest {self._count}"
            )
        self._part_firsts = np.array([first for first, _ in self._parts], dtype=np.int64)

    def _stored_count(self) -> int:
        """Rows of the parts the manifest lists (each checked against the manifest when loaded)."""
        return len(self._label_values)

    def _damage_location(self, start: int, stop: int) -> str:
        parts = np.searchsorted(self._part_firsts, [start, stop - 1], side="right") - 1
        return "in " + ", ".join(PART_PATTERN.format(int(part)) for part in sorted(set(parts.tolist())))

    def _file(self, part: int) -> pq.ParquetFile:
        parquet_file = self._files.get(part)
        if parquet_file is None:
            try:
                parquet_file = pq.ParquetFile(self.part_path(part))
            except FileNotFoundError:
                raise CorruptDataError(f"{self.part_path(part)} is missing; the store is damaged") from None
            except pa.ArrowInvalid as error:
                raise CorruptDataError(f"{self.part_path(part)} is not a readable Parquet file ({error})") from None
            self._files[part] = parquet_file
        return parquet_file

    def _close(self) -> None:
        if self._writer is not None and self._writer_pid == os.getpid():
            self._writer.close()  # an unfinished part: removed when the store is reopened
        self._writer = None
        for parquet_file in self._files.values():
            parquet_file.close()
        self._files = {}

    # -- writing ---------------------------------------------------------------------

    def write_batch(self, images: object, labels: object, progress: ProgressCallback | None = None) -> np.ndarray:
        """As :meth:`ImageStore.write_batch`; images from ``write_one`` are committed first, so
        every batch is a part of its own and a cancelled batch removes only its own rows."""
        if self._dirty and self.mode != "r" and not self._closed and self._pid == os.getpid():
            self.flush()
        return super().write_batch(images, labels, progress)

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        if len(labels) == 1 and isinstance(images, np.ndarray):
            # write_one: the row waits in memory for its row group, and the caller may reuse its array
            images = images.copy()
        self._append_rows(*image_table(images, labels), labels, first_id)

    def _write_encoded_chunk(self, items: list[EncodedImage], labels: np.ndarray, first_id: int) -> None:
        """Encoded images: their bytes in the ``image`` column, their decoded shapes beside them."""
        shapes = np.array([(*item.shape[:2], item.shape[2] if len(item.shape) == 3 else 0) for item in items], np.int32)
        payload = pa.array([item.data for item in items], type=pa.binary())
        columns = [payload, *(pa.array(shapes[:, axis]) for axis in range(3)), pa.array(labels, type=pa.int64())]
        self._append_rows(pa.Table.from_arrays(columns, schema=SCHEMA), shapes, labels, first_id)

    def _append_rows(self, table: pa.Table, shapes: np.ndarray, labels: np.ndarray, first_id: int) -> None:
        self._buffer.append(table)
        self._buffered_rows += table.num_rows
        for values, new in ((self._label_values, labels), (self._shape_values, shapes)):
            values.truncate(first_id)
            values.append(new)
        rows = self.options["row_group_rows"]
        if self._buffered_rows >= rows:
            self._write_row_groups(whole_groups_only=True)

    def _write_row_groups(self, whole_groups_only: bool) -> None:
        """Write buffered rows to the open part, one row group of ``row_group_rows`` at a time."""
        rows = self.options["row_group_rows"]
        buffered = pa.concat_tables(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        writable = buffered.num_rows // rows * rows if whole_groups_only else buffered.num_rows
        if writable == 0:
            self._buffer = [buffered]
            return
        try:
            if self._writer is None:
                self._writer_first = len(self._label_values) - self._buffered_rows
                self._writer_pid = os.getpid()
                self._writer_rows = 0
                self._writer = pq.ParquetWriter(
                    self.part_path(len(self._parts)),
                    SCHEMA,
                    compression=self.options["compression"],
                    use_dictionary=DICTIONARY_COLUMNS,
                )
            self._writer.write_table(buffered.slice(0, writable), row_group_size=rows)
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
        self._writer_rows += writable
        rest = buffered.slice(writable)
        self._buffer = [rest] if rest.num_rows else []
        self._buffered_rows = rest.num_rows

    def _commit(self, count: int) -> None:
        """Finish the part being written and list it in the manifest."""
        if self._buffered_rows:
            self._write_row_groups(whole_groups_only=False)
        if self._writer is None:
            return
        try:
            self._writer.close()
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
        self._writer = None
        self._parts.append([self._writer_first, self._writer_rows])
        self._part_firsts = np.array([first for first, _ in self._parts], dtype=np.int64)

    def _commit_one(self, count: int) -> None:
        """One image at a time: rows go out a row group at a time; the part is finished at
        ``flush``/``close``."""

    def _rollback(self, count: int) -> None:
        if self._writer is not None:
            kept_in_writer = count - self._writer_first
            if kept_in_writer < self._writer_rows:  # the open part holds rows to forget
                self._writer.close()
                self._writer = None
                self.part_path(len(self._parts)).unlink(missing_ok=True)
                self._buffer, self._buffered_rows = [], 0
        if self._buffer:
            already = (self._writer_first + self._writer_rows) if self._writer is not None else self._committed_rows()
            keep = max(0, count - already)
            buffered = pa.concat_tables(self._buffer).slice(0, keep)
            self._buffer = [buffered] if buffered.num_rows else []
            self._buffered_rows = buffered.num_rows
        self._cached_group = None
        self._drop_parts_from(count)
        self._label_values.truncate(count)
        self._shape_values.truncate(count)

    def _committed_rows(self) -> int:
        return sum(rows for _, rows in self._parts)

    def _drop_parts_from(self, count: int) -> None:
        """Forget committed parts past ``count`` and delete part files the manifest does not list."""
        while self._parts and self._parts[-1][0] >= count:
            self._parts.pop()
        if self._parts and sum(self._parts[-1]) > count:
            raise CorruptDataError(f"the last part in {self.path} holds images past the committed count")
        for part in list(self._files):
            if part >= len(self._parts):
                self._files.pop(part).close()
        keep = len(self._parts) + (1 if self._writer is not None else 0)
        for path in self.path.glob("part-*.parquet"):
            number = path.stem.split("-")[-1]
            if number.isdigit() and int(number) >= keep:
                path.unlink()
        self._part_firsts = np.array([first for first, _ in self._parts], dtype=np.int64)

    # -- reading ---------------------------------------------------------------------

    def _make_readable(self, image_id: int) -> None:
        """Rows still in memory or in an open part (from ``write_one``) are committed first."""
        if image_id >= self._committed_rows():
            self._commit(self._count)

    def _row_group(self, part: int, group: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, bytes) of one row group's image column; the last one read is kept."""
        cached = self._cached_group
        if cached is not None and cached[0] == part and cached[1] == group:
            return cached[2], cached[3]
        column = self._file(part).read_row_group(group, columns=["image"]).column(0)
        offsets, data = binary_column(column)
        self._cached_group = (part, group, offsets, data)
        return offsets, data

    def _decode(self, data: np.ndarray, shape: Shape) -> np.ndarray:
        if data.size != int(np.prod(shape)):
            raise CorruptDataError(
                f"a row in {self.path} holds {data.size} bytes for shape {shape}; the store is damaged"
            )
        return data.reshape(shape).copy()

    def _shape(self, image_id: int) -> Shape:
        height, width, channels = self._shape_values.values[image_id].tolist()
        return (height, width) if channels == 0 else (height, width, channels)

    def _row_bytes(self, image_id: int) -> np.ndarray:
        """The ``image`` column's bytes of one row (a view of its row group)."""
        self._make_readable(image_id)
        part = int(np.searchsorted(self._part_firsts, image_id, side="right")) - 1
        row = image_id - self._parts[part][0]
        rows = self.options["row_group_rows"]
        offsets, data = self._row_group(part, row // rows)
        at = row % rows
        return data[offsets[at] : offsets[at + 1]]

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        pixels = self._decode(self._row_bytes(image_id), self._shape(image_id))
        return pixels, int(self._label_values.values[image_id])

    def _read_encoded_one(self, image_id: int) -> tuple[bytes, int]:
        return self._row_bytes(image_id).tobytes(), int(self._label_values.values[image_id])

    def _read_encoded_many(self, ids: np.ndarray) -> tuple[list[bytes], np.ndarray]:
        if len(ids):
            self._make_readable(int(ids.max()))
        return [self._row_bytes(image_id).tobytes() for image_id in ids.tolist()], self._label_values.values[ids]

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        if len(ids):
            self._make_readable(int(ids.max()))
        labels = self._label_values.values[ids]
        uniform = self._layout_shape
        consecutive = len(ids) > 1 and ids[-1] - ids[0] == len(ids) - 1 and np.all(np.diff(ids) == 1)
        if uniform is None or not consecutive:
            images = [self._read_one(image_id)[0] for image_id in ids.tolist()]
            if uniform is not None and out is None:
                out = np.empty((len(ids), *uniform), dtype=np.uint8)
            return stack_if_uniform(images, out, uniform), labels
        if out is None:
            out = np.empty((len(ids), *uniform), dtype=np.uint8)
        self._read_run(int(ids[0]), int(ids[-1]) + 1, out)
        return out, labels

    def _read_run(self, start: int, stop: int, out: np.ndarray) -> None:
        """Ids ``start``..``stop`` of a uniform raw store: whole row groups, many per read."""
        rows = self.options["row_group_rows"]
        image_bytes = int(np.prod(self._layout_shape))
        groups_per_read = max(1, READ_BYTES // (rows * image_bytes))
        position = start
        while position < stop:
            part = int(np.searchsorted(self._part_firsts, position, side="right")) - 1
            first, part_rows = self._parts[part]
            first_group = (position - first) // rows
            last_row = min(stop, first + part_rows) - first  # exclusive, within the part
            last_group = min((last_row - 1) // rows + 1, first_group + groups_per_read)
            table = self._file(part).read_row_groups(range(first_group, last_group), columns=["image"])
            table_first = first + first_group * rows
            take_start = position - table_first
            take_stop = min(stop - table_first, table.num_rows)
            seen = 0
            for chunk in table.column(0).chunks:  # row i of the table: chunk by chunk, no concatenation
                low, high = max(take_start, seen), min(take_stop, seen + len(chunk))
                if low < high:
                    offsets, data = binary_column(chunk)
                    pixels = data[offsets[low - seen] : offsets[high - seen]]
                    if pixels.size != (high - low) * image_bytes:
                        raise CorruptDataError(
                            f"rows in {self.part_path(part)} do not hold {self._layout_shape} images"
                        )
                    target = out[table_first + low - start : table_first + high - start]
                    target[...] = pixels.reshape(target.shape)
                seen += len(chunk)
            position = table_first + take_stop
