"""WebDataset tar shards in object storage: streamed by URL, single images by ranged GETs.

A training loop streams each shard as WebDataset's users do, through a ``pipe:`` URL
running ``aws s3 cp s3://.../shard-000000.tar -`` (:func:`storage.s3.clients.pipe_url`;
:mod:`storage.s3_loaders` builds the ``webdataset.WebDataset`` over them). WebDataset
itself only streams; the store's own reads of single images and runs of ids are ranged
GETs at the offsets of the store's ``index.bin`` (fetched into the shadow folder when the
store opens), so a random read costs one request, as ``wids`` and other tar indexes do.
"""

from __future__ import annotations

import numpy as np

from ...errors import CorruptDataError
from ...formats.webdataset_store import (
    INDEX_FILE,
    SHARD_PATTERN,
    STREAM_BYTES,
    WebDatasetStore,
    decode_png,
    record_shape,
)
from ..clients import pipe_url
from ..remote import READERS, RemoteReading
from ..transfer import read_range


class RemoteWebDatasetStore(RemoteReading, WebDatasetStore):
    """A WebDataset store whose shards stay in the bucket."""

    read_method = READERS["webdataset"][1]
    shadow_files = (INDEX_FILE,)

    def shard_urls(self) -> list[str]:
        """``pipe:aws s3 cp ... -`` URLs of the shards, for ``webdataset.WebDataset(...)``."""
        if not self._count:
            return []
        return [
            pipe_url(self.location, SHARD_PATTERN.format(shard)) for shard in range(self._shard_of(self._count - 1) + 1)
        ]

    def _shard_fd(self, shard: int) -> int:
        raise CorruptDataError(f"shard {shard} of {self.url} is in object storage, not in a local file")

    def _read_member(self, record: np.void) -> bytes:
        shard = SHARD_PATTERN.format(int(record["shard"]))
        return read_range(self.location, shard, int(record["offset"]), int(record["size"]))

    def _read_record(self, record: np.void, into: np.ndarray | None = None) -> np.ndarray:
        shape = record_shape(record)
        data = self._read_member(record)
        if self.options["payload"] == "npy":
            image = np.frombuffer(data, dtype=np.uint8).reshape(shape)
        else:
            try:
                image = decode_png(data, shape)
            except (OSError, ValueError, SyntaxError) as error:
                raise CorruptDataError(
                    f"a PNG in shard {int(record['shard'])} of {self.url} cannot be decoded ({error})"
                ) from None
        if into is not None:
            into[...] = image
            return into
        return image.copy() if not image.flags.writeable else image

    def _stream(self, start: int, stop: int, out: np.ndarray) -> None:
        """Ids ``start``..``stop`` shard by shard, one ranged GET of up to 16 MiB per run of samples."""
        index = self._index
        image_bytes = int(np.prod(out.shape[1:]))
        flat = out.reshape(len(out), image_bytes)
        first = start
        while first < stop:
            shard = self._shard_of(first)
            per_sample = max(1, int(index[first]["end"] - index[first]["offset"]) + image_bytes)
            last = min(stop, (shard + 1) * self.options["shard_images"], first + max(1, STREAM_BYTES // per_sample))
            offsets = index["offset"][first:last]
            base = int(offsets[0])
            data = read_range(self.location, SHARD_PATTERN.format(shard), base, int(offsets[-1]) - base + image_bytes)
            span = np.frombuffer(data, dtype=np.uint8)
            for row, at in enumerate((offsets - base).tolist()):
                flat[first - start + row] = span[at : at + image_bytes]
            first = last
