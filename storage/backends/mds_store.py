"""MosaicML Streaming: MDS shards written by ``streaming.MDSWriter``, read by its ``StreamingDataset``.

Each part (see :mod:`.write_once_parts`) is an ordinary local MDS data set: shard files
``shard.<n>.mds`` of up to the store's ``chunk_bytes`` (64 MiB, MDSWriter's default
``size_limit``; the writer holds one shard in memory) and an
``index.json``, with the columns ``image: ndarray:uint8`` (dtype and shape stored per
sample, so any size round-trips bit for bit), ``label: int64`` and ``id: int64``. No compression
(MDSWriter's default).

The training loader reads each part with ``streaming.StreamingDataset(local=part)`` and
no remote, as Streaming's users do. The store's own reads (``read_one``, ``read_batch``)
use the shard readers that ``StreamingDataset`` itself reads samples with
(``streaming.base.format.reader_from_json`` on each shard of ``index.json``): a
``StreamingDataset`` also sets up shared memory for coordinating workers, and keeps about
a dozen ``/dev/shm`` file descriptors per instance open until the process exits, which a
store opened and closed many times in one process cannot afford.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from streaming import MDSWriter, Stream, StreamingDataset
from streaming.base.format import reader_from_json
from torch.utils.data import DataLoader

from ..torch import check_loader_settings, collate_samples
from . import BUILTIN_INFO
from .write_once_parts import WriteOncePartsStore

COLUMNS = {"image": "ndarray:uint8", "label": "int64", "id": "int64"}

logging.getLogger("streaming").setLevel(logging.ERROR)


class MdsStore(WriteOncePartsStore):
    info = BUILTIN_INFO["mds"]

    @classmethod
    def torch_dataset(
        cls,
        path: str | os.PathLike[str],
        transform: Callable | None = None,
        *,
        shuffle: bool = True,
        seed: int = 9176,
        batch_size: int | None = None,
    ) -> StreamingDataset:
        """Streaming's own ``StreamingDataset`` over the store's parts (one stream each), local
        only, with Streaming's default shuffle; samples are dicts (``image``, ``label``, ``id``)."""
        if transform is not None:
            raise TypeError("Streaming's StreamingDataset takes no transform: subclass it, or use storage.torch")
        streams = [Stream(local=str(part)) for part in cls.committed_parts(path)]
        return StreamingDataset(streams=streams, shuffle=shuffle, shuffle_seed=seed, batch_size=batch_size)

    @classmethod
    def torch_loader(
        cls, path: str | os.PathLike[str], batch_size: int, num_workers: int = 0, *, seed: int | None = None, **options
    ) -> DataLoader:
        """A DataLoader over :meth:`torch_dataset`, as Streaming's users write it: the dataset
        shuffles and splits the samples among workers itself; batches are ``(images, labels, ids)``."""
        batch_size, num_workers = check_loader_settings(batch_size, num_workers)
        if not num_workers:
            options.pop("timeout", None)
        dataset = cls.torch_dataset(path, seed=9176 if seed is None else seed, batch_size=batch_size)
        return DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_samples, **options
        )

    def _open_writer(self, folder: Path) -> MDSWriter:
        return MDSWriter(out=str(folder), columns=COLUMNS, size_limit=self.chunk_bytes)

    def _add_sample(self, writer: MDSWriter, index: int, image: np.ndarray, label: int, image_id: int) -> None:
        writer.write({"image": np.ascontiguousarray(image), "label": label, "id": image_id})

    def _finish_writer(self, writer: MDSWriter) -> None:
        writer.finish()

    def _open_reader(self, folder: Path) -> MdsShards:
        return MdsShards(folder)

    def _read_sample(self, reader: MdsShards, index: int) -> tuple[np.ndarray, int]:
        sample = reader.get_item(index)
        return sample["image"], int(sample["label"])


class MdsShards:
    """The shards of one local MDS data set, read sample by sample with Streaming's readers."""

    def __init__(self, folder: Path) -> None:
        index = json.loads((folder / "index.json").read_text())
        self.shards = [reader_from_json(str(folder), None, shard) for shard in index["shards"]]
        self.firsts = np.cumsum([0, *(shard.samples for shard in self.shards)])[:-1]

    def get_item(self, index: int) -> dict:
        shard = int(np.searchsorted(self.firsts, index, side="right")) - 1
        return self.shards[shard].get_item(index - int(self.firsts[shard]))
