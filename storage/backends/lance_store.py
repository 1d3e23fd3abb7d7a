"""Lance through ``pylance``: a columnar dataset with one row per image, versioned by Lance.

The store folder holds ``images.lance``, an ordinary Lance dataset (``lance.dataset(path)``
opens it anywhere) with the Parquet backend's schema

    image: binary   the pixels in C order
    height, width, channels: int32   (channels 0 for a 2-D image)
    label: int64
    id: int64       the image's id in the store (the row's position), so a reader that
                    shuffles batches can say which images it delivered

written with Lance's defaults (no extra compression settings; rows grouped by Lance's
own defaults). Random reads use ``Dataset.take`` (Lance's row-level random access, the
reason people pick it), and bulk reads of consecutive ids use a scan
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
LANCE_SCHEMA = SCHEMA.append(pa.field("id", pa.int64()))


class LanceStore(ImageStore):
    """A Lance dataset, one row (pixels, shape, label) per image."""

    info = BUILTIN_INFO["lance"]
    chunk_images = 16384  # bounded by ImageStore.chunk_bytes too
    write_behind_images = 4096  # write_one images become one append per group, not one each
    fork_safe = False  # Lance's runtime threads do not survive fork (the library warns so)

    @classmethod
    def torch_dataset(
        cls,
        path: str | os.PathLike[str],
        transform: Callable | None = None,
        *,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
    ) -> Any:
        """Lance's own ``lance.torch.data.LanceDataset`` over the committed version.

        It yields whole batches, ``(images, labels, ids)`` tensors, read by range in a
        random order of batches (Lance's ``ShardedBatchSampler`` with ``randomize``: the
        rows of a batch stay consecutive). A per-image ``transform`` does not fit a batch
        reader; use :class:`storage.torch.StoreDataset` for that.
        """
        from lance.sampler import ShardedBatchSampler
        from lance.torch.data import LanceDataset

        if transform is not None:
            raise TypeError("Lance's LanceDataset yields whole batches and takes no per-image transform")
        _quiet_sampler_warning()
        with cls(path, "r") as store:
            uri, version = store.dataset_uri, store.backend_state["version"]
        return LanceDataset(
            uri,
            batch_size,
            dataset_options={"version": version},
            columns=COLUMNS,
            sampler=ShardedBatchSampler(0, 1, randomize=shuffle, seed=seed),
            to_tensor_fn=_batch_tensors,
        )

    @classmethod
    def torch_loader(
        cls, path: str | os.PathLike[str], batch_size: int, num_workers: int = 0, *, seed: int | None = None, **options
    ) -> Any:
        """A DataLoader over :meth:`torch_dataset` (batches made by Lance, ``batch_size=None``);
        each worker reads every N-th batch, Lance's sharding by batch. Workers are spawned,
        not forked: Lance is not fork-safe (a forked worker hangs in Lance's thread pool)."""
        from torch.utils.data import DataLoader

        from ..torch import check_loader_settings

        batch_size, num_workers = check_loader_settings(batch_size, num_workers)
        if not num_workers:
            options.pop("timeout", None)
        seed = 0 if seed is None else seed
        dataset = cls.torch_dataset(path, batch_size=batch_size, seed=seed)
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            worker_init_fn=functools.partial(_shard_by_worker, seed) if num_workers else None,
            multiprocessing_context="spawn" if num_workers else None,
            **options,
        )

    @property
    def dataset_uri(self) -> str:
        return str(self.path / DATASET_FOLDER)

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
        table = image_table(images, labels)[0].append_column(
            "id", pa.array(np.arange(first_id, first_id + len(labels)))
        )
        exists = self.backend_state.get("version") is not None or self._latest_version is not None
        try:
            written = lance.write_dataset(
                table, self.dataset_uri, schema=LANCE_SCHEMA, mode="append" if exists else "create"
            )
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
        self._latest_version = written.version
        self._pending, self._pending_bytes = [], 0

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

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        images, labels = self._rows(self._dataset.take([image_id], columns=COLUMNS))
        return images[0], int(labels[0])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        if not len(ids):
            return stack_if_uniform([], out, self.uniform_shape), np.empty(0, np.int64)
        dataset = self._dataset
        consecutive = ids[-1] - ids[0] == len(ids) - 1 and bool(np.all(np.diff(ids) == 1))
        if consecutive:
            table = dataset.to_table(columns=COLUMNS, offset=int(ids[0]), limit=len(ids))
        else:
            table = dataset.take(ids, columns=COLUMNS)
        return self._rows(table, out)

    def _rows(self, table: pa.Table, out: np.ndarray | None = None) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Images and labels of rows of :data:`SCHEMA`: one array when they share a shape."""
        offsets, data = binary_column(table.column("image"))
        shapes = np.stack([table.column(axis).to_numpy() for axis in ("height", "width", "channels")], axis=1)
        labels = np.array(table.column("label").to_numpy(), dtype=np.int64)  # writable, for torch
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


def _batch_tensors(batch: pa.RecordBatch, **_: Any) -> tuple:
    """``(images, labels, ids)`` tensors of a batch of rows of one image size."""
    import torch

    table = pa.Table.from_batches([batch])
    offsets, data = binary_column(table.column("image"))
    height, width, channels = (int(table.column(axis)[0].as_py()) for axis in ("height", "width", "channels"))
    shape = (height, width) if channels == 0 else (height, width, channels)
    images = torch.from_numpy(data[offsets[0] : offsets[-1]].reshape(table.num_rows, *shape).copy())
    labels = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    return images, labels, torch.from_numpy(table.column("id").to_numpy().astype(np.int64))


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
