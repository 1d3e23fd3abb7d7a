"""Lance through ``pylance``: a columnar dataset with one row per image, versioned by Lance.

The store folder holds ``images.lance``, an ordinary Lance dataset (``lance.dataset(path)``
opens it anywhere). When every image has one shape (``backend_state["layout"] == "fixed"``)
it is what Lance's documentation recommends for tensors of one shape, one fixed-size column:

    image: fixed_size_binary(H*W*C)   the pixels in C order (the shape is in the manifest)
    label: int64
    id: int64       the image's id in the store (the row's position), so a reader that
                    shuffles batches can say which images it delivered

and for images of several sizes (and encoded bytes) the Parquet backend's schema, one
variable-length ``image: binary`` with ``height, width, channels: int32`` (channels 0 for a
2-D image) beside ``label`` and ``id``. Stores written before the fixed layout existed have
that schema too, and read as before. A fixed-layout store given an image of another shape is
rewritten in the variable layout (as a new Lance version, so a cut-off write still restores
the committed one). Written with Lance's defaults (no extra compression settings; rows
grouped by Lance's own defaults). Random reads use ``Dataset.take`` (Lance's row-level random
access, the reason people pick it), and bulk reads of consecutive ids use a scan
(``to_table(offset=, limit=)``).

Every write appends to the dataset, and Lance makes each append a new version; the
manifest records the version committed last and reads open exactly that version. A write
that is cut off is undone by restoring the committed version (``Dataset.restore``), so
batches stay all-or-nothing although Lance itself has already written the rows. Images
are buffered up to the store's ``chunk_bytes`` (64 MiB) before each append, so a batch
becomes few large fragments, and ``write_one`` images go in write-behind groups (see
:mod:`storage.write_behind`), a fragment per group, not one each.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from ..base import ImageStore, stack_if_uniform
from ..errors import CorruptDataError, StoreNotWritableError
from . import BUILTIN_INFO
from .parquet_store import SCHEMA, binary_column, image_table

DATASET_FOLDER = "images.lance"
COLUMNS = ["image", "height", "width", "channels", "label", "id"]
FIXED_COLUMNS = ["image", "label", "id"]
LANCE_SCHEMA = SCHEMA.append(pa.field("id", pa.int64()))
LANCE_SEED = 0  # ShardedBatchSampler's default seed
FIXED, VARIABLE = "fixed", "variable"
CONVERT_ROWS = 4096  # rows rewritten at a time when a fixed-layout store turns variable


def fixed_schema(shape: tuple[int, ...]) -> pa.Schema:
    """One fixed-size binary column of the pixels of ``shape``, the label and the id."""
    return pa.schema([("image", pa.binary(int(np.prod(shape)))), ("label", pa.int64()), ("id", pa.int64())])


class LanceStore(ImageStore):
    """A Lance dataset, one row (pixels, shape, label) per image."""

    info = BUILTIN_INFO["lance"]
    chunk_images = 16384  # bounded by ImageStore.chunk_bytes too
    write_behind_images = 4096  # write_one images become one append per group, not one each
    fork_safe = False  # Lance's runtime threads do not survive fork (the library warns so)

    # How storage.torch loads Lance's own dataset: it shuffles and yields whole batches itself.
    torch_shuffles = True
    torch_batches = True
    torch_order = (
        "Lance's ShardedBatchSampler(randomize=True): batches in a random order, the rows of a batch consecutive"
    )

    @classmethod
    def torch_dataset(
        cls,
        path: str | os.PathLike[str],
        transform: Callable | None = None,
        *,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int | None = None,
    ) -> Any:
        """Lance's own ``lance.torch.data.LanceDataset`` over the committed version.

        It yields whole batches, ``(images, labels, ids)`` tensors, read by range in a
        random order of batches (Lance's ``ShardedBatchSampler`` with ``randomize``: the
        rows of a batch stay consecutive; its seed when ``seed`` is None). A per-image
        ``transform`` does not fit a batch reader; use :class:`storage.torch.StoreDataset` for that.
        """
        from lance.sampler import ShardedBatchSampler
        from lance.torch.data import LanceDataset

        if transform is not None:
            raise TypeError("Lance's LanceDataset yields whole batches and takes no per-image transform")
        _quiet_sampler_warning()
        with cls(path, "r") as store:
            uri, version, shape = store.dataset_uri, store.backend_state["version"], store._fixed_shape
        return LanceDataset(
            uri,
            batch_size,
            dataset_options={"version": version},
            columns=FIXED_COLUMNS if shape else COLUMNS,
            sampler=ShardedBatchSampler(0, 1, randomize=shuffle, seed=LANCE_SEED if seed is None else seed),
            to_tensor_fn=functools.partial(_batch_tensors, shape),
        )

    @classmethod
    def torch_worker_init(cls, seed: int | None) -> Callable[[int], None]:
        """Each DataLoader worker reads every N-th batch, Lance's sharding by batch. (Workers are
        spawned, not forked: Lance is not fork-safe; a forked worker hangs in Lance's thread pool.)"""
        return functools.partial(_shard_by_worker, LANCE_SEED if seed is None else seed)

    @property
    def dataset_uri(self) -> str:
        return str(self.path / DATASET_FOLDER)

    @property
    def _fixed_shape(self) -> tuple[int, ...] | None:
        """The one shape of a fixed-layout dataset (None: the variable layout)."""
        state = self.backend_state
        return tuple(state["layout_shape"]) if state.get("layout") == FIXED else None

    # -- opening and closing -------------------------------------------------------------

    def _create(self) -> None:
        self.backend_state["version"] = None
        self._open()

    def _open(self) -> None:
        self._pending: list[tuple[np.ndarray | list[np.ndarray], np.ndarray, int]] = []
        self._pending_bytes = 0
        self._latest_version = None
        self._dataset = self._committed_dataset()

    def _committed_dataset(self) -> lance.LanceDataset | None:
        version = self.backend_state.get("version")
        if version is None:
            return None
        try:
            return lance.dataset(self.dataset_uri, version=version)
        except (OSError, ValueError) as error:
            raise CorruptDataError(f"the Lance dataset in {self.path} cannot be opened ({error})") from None

    def _close(self) -> None:
        self._dataset = None

    def _stored_count(self) -> int:
        """Rows of the committed version of the dataset."""
        return self._dataset.count_rows() if self._dataset is not None else 0

    # -- writing -------------------------------------------------------------------------

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        if len(labels) == 1 and isinstance(images, np.ndarray):
            images = images.copy()  # write_one: it waits in memory, and the caller may reuse its array
        self._pending.append((images, labels, first_id))
        self._pending_bytes += sum(image.nbytes for image in images) if isinstance(images, list) else images.nbytes
        if self._pending_bytes >= self.chunk_bytes:
            self._append_pending()

    def _append_pending(self) -> None:
        if not self._pending:
            return
        if len(self._pending) == 1:
            images, labels, first_id = self._pending[0]
        else:
            images = [image for chunk, _, _ in self._pending for image in chunk]
            labels, first_id = np.concatenate([labels for _, labels, _ in self._pending]), self._pending[0][2]
        ids = np.arange(first_id, first_id + len(labels))
        exists = self.backend_state.get("version") is not None or self._latest_version is not None
        shape = _one_shape(images)
        if not exists:
            self.backend_state.update(layout=FIXED if shape else VARIABLE, layout_shape=list(shape or ()) or None)
        elif self._fixed_shape is not None and shape != self._fixed_shape:
            self._rewrite_variable()
        if self._fixed_shape is not None:
            table, schema = _fixed_table(images, labels, ids, self._fixed_shape), fixed_schema(self._fixed_shape)
        else:
            table, schema = image_table(images, labels)[0].append_column("id", pa.array(ids)), LANCE_SCHEMA
        self._write(table, schema, "append" if exists else "create")
        self._pending, self._pending_bytes = [], 0

    def _write(self, data: pa.Table | pa.RecordBatchReader, schema: pa.Schema, mode: str) -> None:
        try:
            written = lance.write_dataset(data, self.dataset_uri, schema=schema, mode=mode)
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
        self._latest_version = written.version

    def _rewrite_variable(self) -> None:
        """Rewrite every row of the fixed layout in the variable one, as a new version (an image of
        another shape is coming); the manifest's version still opens the fixed rows until the commit."""
        shape = self._fixed_shape
        version = self._latest_version or self.backend_state["version"]
        source = lance.dataset(self.dataset_uri, version=version)

        def rows():
            for batch in source.to_batches(columns=FIXED_COLUMNS, batch_size=CONVERT_ROWS):
                table = pa.Table.from_batches([batch])
                images = _fixed_pixels(table.column("image"), shape)
                labels = table.column("label").to_numpy()
                converted = image_table(images, labels)[0].append_column("id", table.column("id"))
                yield from converted.to_batches()

        self._write(pa.RecordBatchReader.from_batches(LANCE_SCHEMA, rows()), LANCE_SCHEMA, "overwrite")
        self.backend_state.update(layout=VARIABLE, layout_shape=None)

    def _commit(self, count: int) -> None:
        """Append what is buffered and make the newest version the committed one."""
        self._append_pending()
        if self._latest_version is not None:
            self.backend_state["version"] = self._latest_version
            self._latest_version = None
            self._dataset = self._committed_dataset()

    def _rollback(self, count: int) -> None:
        """Forget buffered rows and make the committed version the newest again."""
        self._pending, self._pending_bytes = [], 0
        self._latest_version = None
        committed = self.backend_state.get("version")
        if committed is None:
            shutil.rmtree(self.dataset_uri, ignore_errors=True)
            self._dataset = None
            return
        if lance.dataset(self.dataset_uri).version != committed:
            lance.dataset(self.dataset_uri, version=committed).restore()
        self._dataset = self._committed_dataset()
        if self._dataset.count_rows() != count:
            raise CorruptDataError(f"{self.path} holds {self._dataset.count_rows()} rows, not the {count} committed")

    # -- reading -------------------------------------------------------------------------

    @property
    def _columns(self) -> list[str]:
        return ["image", "label"] if self._fixed_shape else COLUMNS[:-1]

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        images, labels = self._rows(self._dataset.take([image_id], columns=self._columns))
        return images[0], int(labels[0])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        if not len(ids):
            return stack_if_uniform([], out, self._layout_shape), np.empty(0, np.int64)
        dataset = self._dataset
        consecutive = ids[-1] - ids[0] == len(ids) - 1 and bool(np.all(np.diff(ids) == 1))
        if consecutive:
            table = dataset.to_table(columns=self._columns, offset=int(ids[0]), limit=len(ids))
        else:
            table = dataset.take(ids, columns=self._columns)
        return self._rows(table, out)

    def _rows(self, table: pa.Table, out: np.ndarray | None = None) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Images and labels of rows of either layout: one array when they share a shape."""
        labels = np.array(table.column("label").to_numpy(), dtype=np.int64)  # writable, for torch
        shape = self._fixed_shape
        if shape is not None:
            pixels = _fixed_pixels(table.column("image"), shape)
            if out is None:
                return pixels.copy(), labels
            out[...] = pixels
            return out, labels
        offsets, data = binary_column(table.column("image"))
        shapes = np.stack([table.column(axis).to_numpy() for axis in ("height", "width", "channels")], axis=1)
        if len(shapes) and np.all(shapes == shapes[0]):
            height, width, channels = shapes[0].tolist()
            shape = (height, width) if channels == 0 else (height, width, channels)
            pixels = data[offsets[0] : offsets[-1]]
            if pixels.size != len(shapes) * int(np.prod(shape)):
                raise CorruptDataError(f"rows in {self.path} do not hold {shape} images; the store is damaged")
            if out is None:
                return pixels.reshape(len(shapes), *shape).copy(), labels
            out[...] = pixels.reshape(out.shape)
            return out, labels
        images = []
        for row, (height, width, channels) in enumerate(shapes.tolist()):
            shape = (height, width) if channels == 0 else (height, width, channels)
            images.append(data[offsets[row] : offsets[row + 1]].reshape(shape).copy())
        return images, labels


def _one_shape(images) -> tuple[int, ...] | None:
    """The one shape of a chunk of images, or None when they differ."""
    if isinstance(images, np.ndarray):
        return tuple(images.shape[1:])
    shapes = {image.shape for image in images}
    return tuple(next(iter(shapes))) if len(shapes) == 1 else None


def _fixed_table(images, labels: np.ndarray, ids: np.ndarray, shape: tuple[int, ...]) -> pa.Table:
    """Rows of :func:`fixed_schema`: the chunk's pixels as one buffer, without a copy per image."""
    pixels = np.ascontiguousarray(images if isinstance(images, np.ndarray) else np.stack(images))
    column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(int(np.prod(shape))), len(labels), [None, pa.py_buffer(pixels.reshape(-1))]
    )
    return pa.Table.from_arrays(
        [column, pa.array(labels, type=pa.int64()), pa.array(ids, type=pa.int64())], schema=fixed_schema(shape)
    )


def _fixed_pixels(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """The (N, *shape) pixels of a fixed-size binary column, a view of Arrow's buffer."""
    chunk = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    size = int(np.prod(shape))
    data = chunk.buffers()[1]
    pixels = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    return pixels[chunk.offset * size : (chunk.offset + len(chunk)) * size].reshape(len(chunk), *shape)


def _batch_tensors(shape: tuple[int, ...] | None, batch: pa.RecordBatch, **_: Any) -> tuple:
    """``(images, labels, ids)`` of a batch of rows: an images tensor when they share a shape (as in
    the fixed layout), else a list of each row's array (its pixels, or the bytes an encoded store keeps)."""
    import torch

    table = pa.Table.from_batches([batch])
    labels = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    ids = torch.from_numpy(table.column("id").to_numpy().astype(np.int64))
    if shape is not None:
        return torch.from_numpy(_fixed_pixels(table.column("image"), shape).copy()), labels, ids
    offsets, data = binary_column(table.column("image"))
    shapes = np.stack([table.column(axis).to_numpy() for axis in ("height", "width", "channels")], axis=1)
    rows = [
        data[offsets[row] : offsets[row + 1]].reshape((h, w) if c == 0 else (h, w, c))
        for row, (h, w, c) in enumerate(shapes.tolist())
    ]
    if len({row.shape for row in rows}) == 1:
        return torch.from_numpy(np.stack(rows)), labels, ids
    return rows, labels, ids


def _shard_by_worker(seed: int, worker_id: int) -> None:
    """In DataLoader worker ``worker_id``: read every N-th batch, starting at its own."""
    from lance.sampler import ShardedBatchSampler
    from torch.utils.data import get_worker_info

    _quiet_sampler_warning()
    info = get_worker_info()
    info.dataset.sampler = ShardedBatchSampler(worker_id, info.num_workers, randomize=True, seed=seed)


def _quiet_sampler_warning() -> None:
    """Hide the warning Lance gives about itself: its own ``LanceDataset`` passes ``with_row_id``
    to its own ``ShardedBatchSampler``, which ignores it, once per epoch and worker."""
    warnings.filterwarnings("ignore", message="with_row_id is not supported for ShardedBatchSampler")
