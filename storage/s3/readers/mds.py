"""MDS parts in object storage, read by MosaicML Streaming's ``StreamingDataset(remote=..., local=...)``.

Each part is a Streaming dataset at ``s3://bucket/prefix/parts/NNNNN``; a read downloads
its whole shard into ``local`` (the location's cache folder), Streaming's own way. The
endpoint reaches Streaming through ``S3_ENDPOINT_URL``, as its documentation says.
"""

from __future__ import annotations

from pathlib import Path

from streaming import StreamingDataset

from ...formats.mds_store import MdsStore
from ..clients import point_streaming_at
from ..remote import READERS, RemoteReading

LIBRARY_CACHE = "mds"


class RemoteMds:
    """One part read through a ``StreamingDataset``: ``get_item`` downloads the shard it needs."""

    def __init__(self, remote: str, local: Path) -> None:
        local.mkdir(parents=True, exist_ok=True)
        self.dataset = StreamingDataset(remote=remote, local=str(local), shuffle=False, batch_size=1)

    def get_item(self, index: int) -> dict:
        return self.dataset.get_item(index)


class RemoteMdsStore(RemoteReading, MdsStore):
    """An MDS store whose shards stay in the bucket until read."""

    read_method = READERS["mds"][1]

    def part_url(self, folder: Path) -> str:
        return self.location.child(folder.relative_to(self.path).as_posix()).url

    def part_cache(self, folder: Path) -> Path:
        return self.cache / LIBRARY_CACHE / folder.relative_to(self.path)

    def _open_reader(self, folder: Path) -> RemoteMds:
        point_streaming_at(self.location)
        return RemoteMds(self.part_url(folder), self.part_cache(folder))
