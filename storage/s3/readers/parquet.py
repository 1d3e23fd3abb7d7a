"""Parquet part files in object storage, read by pyarrow through its S3 file system.

The store's own reading code runs unchanged (the row group of a random read, runs of row
groups for consecutive ids); only its files open through ``pyarrow.fs.S3FileSystem``,
which reads the footer and each column chunk with ranged GETs.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import CorruptDataError
from ...formats.parquet_store import PART_PATTERN, ParquetStore
from ..clients import arrow_filesystem
from ..remote import READERS, RemoteReading


class RemoteParquetStore(RemoteReading, ParquetStore):
    """A Parquet store whose part files stay in the bucket."""

    read_method = READERS["parquet"][1]

    def _filesystem(self):
        if getattr(self, "_fs_pid", None) != os.getpid():
            self._fs, self._fs_pid = arrow_filesystem(self.location), os.getpid()
        return self._fs

    def _file(self, part: int) -> pq.ParquetFile:
        parquet_file = self._files.get(part)
        if parquet_file is None:
            key = self.location.key(PART_PATTERN.format(part))
            try:
                parquet_file = pq.ParquetFile(f"{self.location.bucket}/{key}", filesystem=self._filesystem())
            except FileNotFoundError:
                raise CorruptDataError(f"s3://{self.location.bucket}/{key} is missing; the store is damaged") from None
            except (OSError, pa.ArrowInvalid) as error:
                raise CorruptDataError(f"s3://{self.location.bucket}/{key} cannot be read ({error})") from None
            self._files[part] = parquet_file
        return parquet_file
