"""A shuffled epoch of a Parquet store, read as Parquet's users stream it: whole row groups.

A row group is what a Parquet reader fetches and decompresses: one read per column chunk.
Reading a shuffled list of ids one by one fetches (in a bucket: downloads) a whole row
group for every image; 100,000 CIFAR images in a bucket brought 31 GB for a 307 MB store.
So each epoch takes the row groups in a seeded random order (a new one every epoch), deals
them out to the DataLoader's workers, reads each whole once and sends its samples through
a shuffle buffer of ``SHUFFLE_BUFFER`` samples, as Hugging Face ``datasets``' streaming
shuffle and WebDataset do. That is a lesser shuffle than a permutation of every id (a
sample's neighbours come from the few row groups in the buffer), which the store's
``torch_order`` and the remote store's ``read_method`` say. Every id still comes exactly
once an epoch.

Imported only when a loader is made (it imports torch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

SHUFFLE_BUFFER = 1_000  # samples held for shuffling, WebDataset's documented usual size


class ParquetRowGroups(torch.utils.data.IterableDataset):
    """The samples (``image``, ``label``, ``id`` dicts) of a Parquet store, row group by row group.

    Args:
        store: the open store, its row groups listed from it.
        opener: opens the store again in a worker process (picklable: a local path or a
            bucket's location, never an open file).
        seed: the epochs' orders; a new one each epoch.
        stored: samples as the store keeps them (the kept bytes of an encoded store as a uint8
            array, for a collate step that decodes them); else decoded pixels.
        keep_store: the calling process reads through ``store`` (which the caller closes); else
            it opens its own with ``opener`` too.
    """

    def __init__(
        self,
        store: Any,
        opener: Callable[[], Any],
        seed: int,
        stored: bool = False,
        keep_store: bool = True,
        buffer: int = SHUFFLE_BUFFER,
    ) -> None:
        self.opener, self.seed, self.buffer, self.epoch = opener, seed, buffer, 0
        self.encoded = stored and getattr(store, "_encoding", None) is not None
        rows = store.options["row_group_rows"]
        self.groups = [
            (first + group * rows, first + min(part_rows, (group + 1) * rows))
            for first, part_rows in store.backend_state["parts"]
            for group in range(-(-part_rows // rows))
        ]
        self._store, self._pid = (store, os.getpid()) if keep_store else (None, None)

    def __len__(self) -> int:
        return self.groups[-1][1] if self.groups else 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_pid": None}

    def _opened(self) -> Any:
        if self._store is None or self._pid != os.getpid():
            self._store, self._pid = self.opener(), os.getpid()
        return self._store

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.groups))[worker::workers]
        draw = np.random.default_rng([self.seed, epoch, worker])
        store, held = self._opened(), []
        for index in order.tolist():
            first, stop = self.groups[index]
            for offset, (image, label) in enumerate(zip(*self._read_group(store, first, stop))):
                held.append({"image": image, "label": int(label), "id": first + offset})
                if len(held) >= self.buffer:
                    yield take_at_random(held, draw)
        while held:
            yield take_at_random(held, draw)

    def _read_group(self, store: Any, first: int, stop: int) -> tuple[list | np.ndarray, np.ndarray]:
        """One row group's images (decoded, or as stored) and labels: one read of its column chunk."""
        ids = np.arange(first, stop)
        if self.encoded:
            blobs, _, labels = store.read_encoded(ids)
            return [np.frombuffer(blob, dtype=np.uint8) for blob in blobs], labels
        return store.read_batch(ids)


def take_at_random(held: list, draw: np.random.Generator) -> Any:
    """One item of ``held`` picked at random and removed (swapped with the last: no shifting)."""
    at = int(draw.integers(len(held)))
    held[at], held[-1] = held[-1], held[at]
    return held.pop()


__all__ = ["SHUFFLE_BUFFER", "ParquetRowGroups", "take_at_random"]
