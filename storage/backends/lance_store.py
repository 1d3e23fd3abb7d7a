"""Lance through ``pylance``: a columnar dataset with one row per image, versioned by Lance.

The store folder holds ``images.lance``, an ordinary Lance dataset (``lance.dataset(path)``
opens it anywhere) with the Parquet backend's schema

    image: binary   the pixels in C order
    height, width, channels: int32   (channels 0 for a 2-D image)
    label: int64

written with Lance's defaults (no extra compression settings; rows grouped by Lance's
own defaults). Random reads use ``Dataset.take`` (Lance's row-level random access, the
reason people pick it), and bulk reads of consecutive ids use a scan
(``to_table(offset=, limit=)``).

Every write appends to the dataset, and Lance makes each append a new version; the
manifest records the version committed last and reads open exactly that version. A write
that is cut off is undone by restoring the committed version (``Dataset.restore``), so
batches stay all-or-nothing although Lance itself has already written the rows. Images
are buffered up to the store's ``chunk_bytes`` (64 MiB) before each append, so a batch becomes few large
fragments and ``write_one`` images a fragment at ``flush``/``close``, not one each.
"""

from __future__ import annotations

import os
import shutil

import lance
import numpy as np
import pyarrow as pa

from ..base import ImageStore, ProgressCallback, stack_if_uniform
from ..errors import CorruptDataError, StoreNotWritableError
from . import BUILTIN_INFO
from .parquet_store import SCHEMA, binary_column, image_table

DATASET_FOLDER = "images.lance"
COLUMNS = ["image", "height", "width", "channels", "label"]


class LanceStore(ImageStore):
    """A Lance dataset, one row (pixels, shape, label) per image."""

    info = BUILTIN_INFO["lance"]
    chunk_images = 16384  # bounded by ImageStore.chunk_bytes too

    @property
    def dataset_uri(self) -> str:
        return str(self.path / DATASET_FOLDER)

    # -- opening and closing -------------------------------------------------------------

    def _create(self) -> None:
        self.backend_state["version"] = None
        self._open()

    def _open(self) -> None:
        self._pending: list[tuple[np.ndarray | list[np.ndarray], np.ndarray]] = []
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

    def write_batch(self, images: object, labels: object, progress: ProgressCallback | None = None) -> np.ndarray:
        """As :meth:`ImageStore.write_batch`; images from ``write_one`` are committed first, so
        a cancelled batch restores exactly the version before it."""
        if self._dirty and self.mode != "r" and not self._closed and self._pid == os.getpid():
            self.flush()
        return super().write_batch(images, labels, progress)

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        # Kept as arrays: an Arrow table per write_one image would cost more than the image.
        self._pending.append((images, labels))
        self._pending_bytes += sum(image.nbytes for image in images) if isinstance(images, list) else images.nbytes
        if self._pending_bytes >= self.chunk_bytes:
            self._append_pending()

    def _append_pending(self) -> None:
        if not self._pending:
            return
        if len(self._pending) == 1:
            table = image_table(*self._pending[0])[0]
        else:
            images = [image for chunk, _ in self._pending for image in chunk]
            table = image_table(images, np.concatenate([labels for _, labels in self._pending]))[0]
        exists = self.backend_state.get("version") is not None or self._latest_version is not None
        try:
            written = lance.write_dataset(table, self.dataset_uri, schema=SCHEMA, mode="append" if exists else "create")
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

    def _commit_one(self, count: int) -> None:
        """One image at a time: rows wait in the buffer until ``flush``/``close`` (or a read)."""

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

    def _readable(self, last_id: int) -> lance.LanceDataset:
        """The committed dataset; rows still buffered by ``write_one`` are committed first."""
        if self._dataset is None or last_id >= self._dataset.count_rows():
            self._commit(self._count)
        return self._dataset

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        images, labels = self._rows(self._readable(image_id).take([image_id], columns=COLUMNS))
        return images[0], int(labels[0])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        if not len(ids):
            return stack_if_uniform([], out, self.uniform_shape), np.empty(0, np.int64)
        dataset = self._readable(int(ids.max()))
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
        labels = table.column("label").to_numpy().astype(np.int64, copy=False)
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
