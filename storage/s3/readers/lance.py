"""A Lance dataset in object storage, read by Lance itself with ``storage_options``.

``take`` and range scans go to S3 as Lance's ranged GETs; nothing is cached on disk. The
committed version recorded in the store's manifest is the one opened, as for a local store.
"""

from __future__ import annotations

import lance

from ...errors import CorruptDataError
from ...formats.lance_store import DATASET_FOLDER, LanceStore
from ..clients import lance_storage_options
from ..remote import READERS, RemoteReading


class RemoteLanceStore(RemoteReading, LanceStore):
    """A Lance store whose dataset stays in the bucket."""

    read_method = READERS["lance"][1]

    @property
    def dataset_uri(self) -> str:
        return f"s3://{self.location.bucket}/{self.location.key(DATASET_FOLDER)}"

    def _committed_dataset(self) -> lance.LanceDataset | None:
        version = self.backend_state.get("version")
        if version is None:
            return None
        try:
            return lance.dataset(
                self.dataset_uri, version=version, storage_options=lance_storage_options(self.location)
            )
        except (OSError, ValueError) as error:
            raise CorruptDataError(f"the Lance dataset at {self.dataset_uri} cannot be opened ({error})") from None
