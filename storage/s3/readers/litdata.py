"""LitData parts in object storage, read by LitData's ``StreamingDataset("s3://...")`` and its cache.

Each part of the store is a LitData dataset of its own at ``s3://bucket/prefix/parts/NNNNN``;
a read of any sample downloads its whole chunk (64 MB by default) into LitData's cache, in
the location's cache folder, and later reads of that chunk are local.
"""

from __future__ import annotations

from pathlib import Path

from litdata import StreamingDataset

from ...formats.litdata_store import LitDataStore
from ..clients import litdata_storage_options
from ..remote import READERS, RemoteReading

LIBRARY_CACHE = "litdata"


class RemoteLitDataStore(RemoteReading, LitDataStore):
    """A LitData store whose chunks stay in the bucket until read."""

    read_method = READERS["litdata"][1]

    def part_url(self, folder: Path) -> str:
        return self.location.child(folder.relative_to(self.path).as_posix()).url

    def part_cache(self, folder: Path) -> Path:
        return self.cache / LIBRARY_CACHE / folder.relative_to(self.path)

    def _open_reader(self, folder: Path) -> StreamingDataset:
        return StreamingDataset(
            self.part_url(folder),
            cache_dir=str(self.part_cache(folder)),
            storage_options=litdata_storage_options(self.location),
            batch_decode=False,
        )
