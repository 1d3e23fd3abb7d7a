"""LitData: chunked binary files written by ``litdata``'s writer, read by its ``StreamingDataset``.

Each part (see :mod:`.write_once_parts`) is what ``litdata.optimize`` produces: binary
chunk files ``chunk-0-<n>.bin`` of up to the store's ``chunk_bytes`` (64 MiB; LitData's
documentation uses ``chunk_bytes="64MB"`` for image data sets, and the writer holds one
chunk in memory, so this is also the store's bound on memory while writing) and an ``index.json``, written here by
``litdata.streaming.writer.BinaryWriter``, the writer ``optimize`` runs in each of its
workers. A sample is ``{"image": uint8 array, "label": int}``: LitData's numpy
serializer keeps dtype and shape per sample, so any size and channel count round-trip bit
for bit. No compression (LitData's default). ``litdata.StreamingDataset(part_folder)``
opens a part directly from the local folder; nothing is copied to a cache.

The training loader uses ``StreamingDataset`` with LitData's defaults. The store's own
reads open it with ``batch_decode=False``: by default LitData decodes a window of a few
hundred samples around every sample it is asked for, which suits streaming in order but
made one random read cost 1.2-1.8 ms instead of 10 µs on the development machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset
from litdata.streaming.writer import BinaryWriter

from ..torch import check_loader_settings, collate_samples
from . import BUILTIN_INFO
from .write_once_parts import WriteOncePartsStore

logging.getLogger("litdata").setLevel(logging.WARNING)


class LitDataStore(WriteOncePartsStore):
    info = BUILTIN_INFO["litdata"]

    @classmethod
    def torch_dataset(
        cls, path: str | os.PathLike[str], transform: Callable | None = None, *, shuffle: bool = True, seed: int = 42
    ) -> StreamingDataset | CombinedStreamingDataset:
        """LitData's own ``StreamingDataset`` over the store, with LitData's defaults.

        Samples are dicts (``image`` array, ``label``, ``id``); several parts (from appends)
        are read as one ``CombinedStreamingDataset`` that goes over all of them.
        """
        datasets = [
            StreamingDataset(str(part), shuffle=shuffle, seed=seed, transform=transform)
            for part in cls.committed_parts(path)
        ]
        if len(datasets) == 1:
            return datasets[0]
        return CombinedStreamingDataset(datasets, seed=seed, iterate_over_all=True)

    @classmethod
    def torch_loader(
        cls, path: str | os.PathLike[str], batch_size: int, num_workers: int = 0, *, seed: int | None = None, **options
    ) -> StreamingDataLoader:
        """LitData's ``StreamingDataLoader`` over :meth:`torch_dataset`: it shuffles chunks and
        samples itself; batches are ``(images, labels, ids)``."""
        batch_size, num_workers = check_loader_settings(batch_size, num_workers)
        if not num_workers:
            options.pop("timeout", None)
        dataset = cls.torch_dataset(path, seed=42 if seed is None else seed)
        return StreamingDataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_samples, **options
        )

    def _open_writer(self, folder: Path) -> BinaryWriter:
        return BinaryWriter(str(folder), chunk_bytes=self.chunk_bytes)

    def _add_sample(self, writer: BinaryWriter, index: int, image: np.ndarray, label: int, image_id: int) -> None:
        writer.add_item(index, {"image": np.ascontiguousarray(image), "label": label, "id": image_id})

    def _finish_writer(self, writer: BinaryWriter) -> None:
        writer.done()
        writer.merge(num_workers=1)

    def _open_reader(self, folder: Path) -> StreamingDataset:
        return StreamingDataset(str(folder), batch_decode=False)

    def _read_sample(self, reader: Any, index: int) -> tuple[np.ndarray, int]:
        sample = reader[index]
        return np.asarray(sample["image"]), int(sample["label"])
