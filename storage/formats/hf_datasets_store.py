"""Hugging Face ``datasets``: each part a dataset written with ``save_to_disk``, read with ``load_from_disk``.

Each part (see :mod:`.write_once_parts`: a saved dataset cannot take more rows, so every
committed batch is a dataset of its own) is what ``Dataset.save_to_disk`` writes: Arrow
files ``data-0000k-of-0000n.arrow`` (shards of at most 500 MB, its default) beside its
``state.json`` and ``dataset_info.json``, so ``datasets.load_from_disk(part)`` opens it
anywhere. The columns are those of the image data sets on the Hub (``uoft-cs/cifar10``...):

    image: Image()        {"bytes", "path": None}; pixels are encoded by the Image feature
                          itself (PNG, its choice for uint8 L, RGB and RGBA), and under
                          ``encoding="source"`` (or a re-encoding) the file's bytes go in as
                          they are, as ``{"bytes": ..., "path": None}``
    label: int64          any integer label (ClassLabel holds 0..n-1 only)
    id: int64             the image's id in the store
    channels: int8        0 for a 2-D image, else its channel count: an (H,W,1) image is a
                          grayscale PNG, which decodes as (H,W)

A batch streams in chunks: each chunk becomes a ``Dataset.from_dict`` (the Image feature
encodes it), kept in memory if it is the part's only one, else saved to a staging folder;
the part is then ``concatenate_datasets`` of the staged chunks (memory-mapped) saved once
more with ``save_to_disk``, so memory stays bounded by one chunk and a batch of many
chunks is written twice.

Reads go through the library: the parts are opened with ``load_from_disk`` (memory-mapped)
and joined with ``concatenate_datasets``; ``with_format("numpy")`` then answers ``ds[i]``
(random reads), ``ds[a:b]`` (bulk reads of consecutive ids) and ``ds[ids]`` with decoded
arrays, stacked when they share a shape. Stores of kept bytes read the bytes themselves
(``Image(decode=False)``) and decode them as every store here does: the Image feature
applies a photo's EXIF orientation and keeps CMYK as four channels, this library does not.
The training loader uses the dataset as the library's PyTorch guide says,
``with_format("torch")`` in a ``DataLoader`` (images come as (C,H,W) tensors there, in the
Image feature's own decoding).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Dataset, Features, Image, Value, concatenate_datasets, load_from_disk

from ..batch import stack_if_uniform
from ..encodings import EncodedImage
from . import BUILTIN_INFO
from .write_once_parts import WriteOncePartsStore

FEATURES = Features({"image": Image(), "label": Value("int64"), "id": Value("int64"), "channels": Value("int8")})
NUMPY_COLUMNS = ["image", "label", "channels"]  # what the store's reads decode
STAGED_FOLDER = ".staged"  # inside a part being written: its chunks, until the part is saved


class HfDatasetsStore(WriteOncePartsStore):
    """Parts saved with ``Dataset.save_to_disk``, one row (Image, label, id, channels) per image."""

    info = BUILTIN_INFO["hf-datasets"]
    chunk_images = 16384  # bounded by chunk_bytes (64 MiB) too: few staged chunks per part

    @classmethod
    def torch_dataset(cls, path: str | os.PathLike[str], transform: Callable | None = None) -> Dataset:
        """The store's parts as one ``datasets.Dataset`` in ``with_format("torch")``, for a DataLoader.

        Rows are dicts of tensors (``image`` (C,H,W) uint8, ``label``, ``id``, ``channels``);
        :func:`collate_rows` (the store's ``torch_collate``) makes them ``(images, labels, ids)``
        batches of (N,H,W,C) images. The DataLoader's sampler shuffles it, as for a map-style
        dataset of PyTorch.
        """
        if transform is not None:
            raise TypeError(
                "the Hugging Face dataset takes its transform from set_transform; use storage.torch.StoreDataset "
                "for a per-image transform"
            )
        return _joined(cls.committed_parts(path)).with_format("torch")

    @staticmethod
    def torch_collate(rows: list[dict]) -> tuple:
        """``(images, labels, ids)`` of the rows a DataLoader gets from the torch-formatted dataset."""
        return collate_rows(rows)

    # -- writing -------------------------------------------------------------------------

    def _open_writer(self, folder: Path) -> PartWriter:
        return PartWriter(folder)

    def _add_chunk(self, writer: PartWriter, index: int, images, labels: np.ndarray, first_id: int) -> None:
        """One chunk of pixels (or of ``{"bytes", "path"}`` dicts, from ``_write_encoded_chunk``)."""
        channels = [_channels(image) for image in images]
        pixels = [_image_value(image) for image in images]
        writer.add(
            {
                "image": pixels,
                "label": labels.tolist(),
                "id": list(range(first_id, first_id + len(labels))),
                "channels": channels,
            }
        )

    def _write_encoded_chunk(self, items: list[EncodedImage], labels: np.ndarray, first_id: int) -> None:
        """Kept or re-encoded bytes go into the Image feature as they are."""
        self._write_chunk([EncodedRow(item) for item in items], labels, first_id)

    def _finish_writer(self, writer: PartWriter) -> None:
        writer.finish()

    def _commit(self, count: int) -> None:
        super()._commit(count)
        self._views = {}

    def _rollback(self, count: int) -> None:
        super()._rollback(count)
        self._views = {}

    # -- reading -------------------------------------------------------------------------

    def _reset_handles(self) -> None:
        super()._reset_handles()
        self._views: dict[str, Dataset] = {}

    def _close(self) -> None:
        super()._close()
        self._views = {}

    def _view(self, kind: str) -> Dataset:
        """The committed parts joined, as ``"numpy"`` (decoded images) or ``"bytes"`` (the stored files)."""
        view = self._views.get(kind)
        if view is None:
            joined = _joined(self.part_paths())
            if kind == "bytes":
                view = joined.cast_column("image", Image(decode=False)).with_format("arrow", columns=["image", "label"])
            else:
                view = joined.with_format("numpy", columns=NUMPY_COLUMNS)
            self._views[kind] = view
        return view

    def _open_reader(self, folder: Path) -> Dataset:
        return load_from_disk(str(folder)).with_format("numpy", columns=NUMPY_COLUMNS)

    def _read_sample(self, reader: Dataset, index: int) -> tuple[np.ndarray, int]:
        row = reader[index]
        return _shaped(row["image"], int(row["channels"])), int(row["label"])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        if not len(ids):
            return stack_if_uniform([], out, self._layout_shape), np.empty(0, np.int64)
        rows = self._view("numpy")[_index(ids)]
        labels = np.array(rows["label"], dtype=np.int64)
        images = rows["image"]
        if isinstance(images, np.ndarray) and images.dtype != object and self._layout_shape is not None:
            images = images.reshape(len(ids), *self._layout_shape)  # (N,H,W) of (H,W,1) images
            if out is None:
                return images, labels
            out[...] = images
            return out, labels
        shaped = [_shaped(image, channels) for image, channels in zip(images, rows["channels"].tolist())]
        return stack_if_uniform(shaped, out, self._layout_shape), labels

    def _read_encoded_one(self, image_id: int) -> tuple[bytes, int]:
        blobs, labels = self._read_encoded_many(np.array([image_id]))
        return blobs[0], int(labels[0])

    def _read_encoded_many(self, ids: np.ndarray) -> tuple[list[bytes], np.ndarray]:
        table = self._view("bytes")[_index(ids)]
        blobs = table.column("image").combine_chunks().field("bytes").to_pylist()
        return blobs, np.array(table.column("label").to_numpy(), dtype=np.int64)


class EncodedRow(dict):
    """An encoded image as the Image feature takes file bytes: ``{"bytes": ..., "path": None}``."""

    def __init__(self, item: EncodedImage) -> None:
        super().__init__(bytes=item.data, path=None)
        self.shape = item.shape


class PartWriter:
    """One part being written: its chunks, then ``save_to_disk`` into the part's folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.first: Dataset | None = None  # the part's first chunk, in memory until a second comes
        self.staged: list[Path] = []

    def add(self, columns: dict[str, list]) -> None:
        chunk = Dataset.from_dict(columns, features=FEATURES)
        if self.first is None and not self.staged:
            self.first = chunk
            return
        if self.first is not None:
            self._stage(self.first)
            self.first = None
        self._stage(chunk)

    def _stage(self, chunk: Dataset) -> None:
        folder = self.folder / STAGED_FOLDER / f"{len(self.staged):05d}"
        with quiet_progress():
            chunk.save_to_disk(str(folder))
        self.staged.append(folder)

    def finish(self) -> None:
        """Save the part: its one chunk, or its staged chunks joined (the staging folder is removed)."""
        dataset = self.first if self.first is not None else _joined(self.staged)
        with quiet_progress():
            dataset.save_to_disk(str(self.folder))
        self.first = None
        shutil.rmtree(self.folder / STAGED_FOLDER, ignore_errors=True)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """``datasets``' progress bars off while this store writes, as they were afterwards."""
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _joined(folders: list[Path]) -> Dataset:
    parts = [load_from_disk(str(folder)) for folder in folders]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _index(ids: np.ndarray) -> slice | list[int]:
    """A slice for consecutive ids (one contiguous read of the table), else the ids."""
    if ids[-1] - ids[0] == len(ids) - 1 and bool(np.all(np.diff(ids) == 1)):
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids.tolist()


def _channels(image: Any) -> int:
    shape = image.shape
    return 0 if len(shape) == 2 else int(shape[2])


def _image_value(image: Any) -> Any:
    """What the Image feature is given: a 2-D array for a one-channel image, else the array or the bytes."""
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return image


def _shaped(image: np.ndarray, channels: int) -> np.ndarray:
    """A decoded image in its written shape: an (H,W,1) image decodes as (H,W)."""
    if channels == 1 and image.ndim == 2:
        return image[:, :, np.newaxis]
    return image


def collate_rows(rows: list[dict]) -> tuple:
    """``(images, labels, ids)`` tensors: images (N,H,W,C), a view of the rows' stacked (C,H,W) tensors."""
    import torch

    images = torch.stack([row["image"] for row in rows]).permute(0, 2, 3, 1)
    if int(rows[0]["channels"]) == 0:
        images = images[..., 0]
    labels = torch.tensor([int(row["label"]) for row in rows], dtype=torch.int64)
    ids = torch.tensor([int(row["id"]) for row in rows], dtype=torch.int64)
    return images, labels, ids
