"""MosaicML Streaming: MDS shards written by ``streaming.MDSWriter``, read by its ``StreamingDataset``.

Each part (see :mod:`.write_once_parts`) is an ordinary local MDS data set: shard files
``shard.<n>.mds`` of up to the store's ``chunk_bytes`` (64 MiB, MDSWriter's default
``size_limit``; the writer holds one shard in memory) and an
``index.json``, with the columns ``image: ndarray:uint8`` (dtype and shape stored per
sample, so any size round-trips bit for bit), ``label: int64`` and ``id: int64``. No compression
(MDSWriter's default).

The training loader's own order reads each part with ``streaming.StreamingDataset(local=part)``
and no remote, as Streaming's users do. The store's own reads (``read_one``, ``read_batch``)
use the shard readers that ``StreamingDataset`` itself reads samples with
(``streaming.base.format.reader_from_json`` on each shard of ``index.json``): a
``StreamingDataset`` also sets up shared memory for coordinating workers, and keeps about
a dozen ``/dev/shm`` file descriptors per instance open until the process exits, which a
store opened and closed many times in one process cannot afford. A random read is the
reader's ``get_item`` (it opens the shard file, reads the sample's two offsets and its
bytes); a run of consecutive ids reads the shard's offsets and the run's bytes in one go
and decodes each sample with the reader's own ``decode_sample``, where opening the file
once per sample took most of the time (the sequential iteration of a ``StreamingDataset``,
with its shared-memory bookkeeping, was slower still here).
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

from . import BUILTIN_INFO
from .write_once_parts import WriteOncePartsStore

COLUMNS = {"image": "ndarray:uint8", "label": "int64", "id": "int64"}
STREAMING_SEED = 9176  # StreamingDataset's default shuffle_seed

logging.getLogger("streaming").setLevel(logging.ERROR)


class MdsStore(WriteOncePartsStore):
    info = BUILTIN_INFO["mds"]

    torch_shuffles = True  # its StreamingDataset shuffles and splits the samples among workers (storage.torch)
    torch_order = (
        "Streaming's default py1e shuffle: samples shuffled within windows of a few shards (shuffle_block_size)"
    )

    @classmethod
    def torch_dataset(
        cls,
        path: str | os.PathLike[str],
        transform: Callable | None = None,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> StreamingDataset:
        """Streaming's own ``StreamingDataset`` over the store's parts (one stream each), local
        only, with Streaming's default shuffle (and seed, when ``seed`` is None); samples are
        dicts (``image``, ``label``, ``id``)."""
        if transform is not None:
            raise TypeError("Streaming's StreamingDataset takes no transform: subclass it, or use storage.torch")
        streams = [Stream(local=str(part)) for part in cls.committed_parts(path)]
        shuffle_seed = STREAMING_SEED if seed is None else seed
        return StreamingDataset(streams=streams, shuffle=shuffle, shuffle_seed=shuffle_seed, batch_size=batch_size)

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

    def _read_samples(self, part: int, start: int, stop: int) -> tuple[list[np.ndarray], list[int]]:
        samples = self._reader(part).get_range(start, stop)
        return [sample["image"] for sample in samples], [int(sample["label"]) for sample in samples]


class MdsShards:
    """The shards of one local MDS data set, read sample by sample with Streaming's readers."""

    def __init__(self, folder: Path) -> None:
        index = json.loads((folder / "index.json").read_text())
        self.shards = [reader_from_json(str(folder), None, shard) for shard in index["shards"]]
        self.firsts = np.cumsum([0, *(shard.samples for shard in self.shards)])[:-1]

    def get_item(self, index: int) -> dict:
        shard = int(np.searchsorted(self.firsts, index, side="right")) - 1
        return self.shards[shard].get_item(index - int(self.firsts[shard]))

    def get_range(self, start: int, stop: int) -> list[dict]:
        """Samples ``start``..``stop``: each shard's offsets and bytes for the run read once, then decoded."""
        samples: list[dict] = []
        for shard, first in zip(self.shards, self.firsts.tolist()):
            low, high = max(start, first), min(stop, first + shard.samples)
            if low < high:
                samples.extend(_shard_samples(shard, low - first, high - first))
        return samples


def _shard_samples(shard, start: int, stop: int) -> list[dict]:
    """Samples ``start``..``stop`` of one MDS shard: its layout is the sample count, the offsets
    (``uint32``, one per sample and one past the last) and the samples' bytes."""
    path = os.path.join(shard.dirname, shard.split or "", shard.raw_data.basename)
    with open(path, "rb", 0) as file:
        file.seek((1 + start) * 4)
        offsets = np.frombuffer(file.read((stop - start + 1) * 4), np.uint32)
        file.seek(int(offsets[0]))
        data = file.read(int(offsets[-1] - offsets[0]))
    bounds = (offsets - offsets[0]).tolist()
    return [shard.decode_sample(data[bounds[i] : bounds[i + 1]]) for i in range(stop - start)]
