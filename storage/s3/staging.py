"""Writing a store to an ``s3://`` URL: written in a local staging folder, uploaded whole on close.

No format here can write into object storage in place and stay all-or-nothing (S3 has no
rename, no append and no partial overwrite), and the formats' own writers want local
files. So ``open_store(backend, "s3://bucket/prefix", "w")`` returns a :class:`StagedStore`:
the backend's ordinary store in a staging folder under the cache, which on ``close()``
(the end of a ``with`` block) is uploaded with its manifest last
(:func:`storage.s3.transfer.upload_store`) and then deleted. A ``with`` block that ends in
an exception uploads nothing; an upload that is cut off leaves no manifest, so the prefix
never opens as a store until an upload finishes. Mode ``"a"`` downloads the store first,
appends locally, and uploads it again the same way.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import StoreExistsError
from .location import S3Location
from .remote import cache_root
from .transfer import MANIFESTS, TransferSummary, download_prefix, list_objects, upload_store

UploadProgress = Callable[[int, int], None]


class StagedStore:
    """A store being written locally for ``location``; everything else is the backend store's own.

    Attributes:
        location: where it goes.
        store: the backend's store in the staging folder (``store.path``).
        uploaded: what the upload moved, once ``close()`` has uploaded it.
    """

    def __init__(
        self,
        backend: str,
        location: S3Location,
        mode: str,
        options: dict[str, Any],
        staging: str | Path | None = None,
        upload_progress: UploadProgress | None = None,
    ) -> None:
        from .. import registry

        self.location = location
        self.upload_progress = upload_progress
        self.uploaded: TransferSummary | None = None
        existing = list_objects(location)
        has_store = any(name in existing for name in MANIFESTS)
        if existing and not has_store:
            raise StoreExistsError(
                f"{location.url} holds {len(existing):,} objects that are not an image store; choose another "
                "prefix so nothing of yours is replaced"
            )
        root = Path(staging) if staging is not None else cache_root() / "staging"
        root.mkdir(parents=True, exist_ok=True)
        self._folder = Path(tempfile.mkdtemp(prefix="store-", dir=root))
        folder = self._folder / "store"
        try:
            if mode == "a" and has_store:
                download_prefix(location, folder)
            self.store = registry.open_store(backend, folder, mode, **options)
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        if name in ("store", "_folder"):  # not set yet: __init__ failed before it
            raise AttributeError(name)
        return getattr(self.store, name)

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator:
        return iter(self.store)

    def close(self) -> None:
        """Finish the local store, upload it (manifest last), and delete the staging folder."""
        if self._closed:
            return
        self._closed = True
        try:
            self.store.close()
            self.uploaded = upload_store(self.location, self.store.path, self.upload_progress)
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    def abort(self) -> None:
        """Drop what was written: nothing is uploaded, and the staging folder is deleted."""
        if self._closed:
            return
        self._closed = True
        try:
            self.store.close()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> StagedStore:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"<StagedStore {self.location.url!r} staged at {str(self.store.path)!r} images={len(self.store)}>"


__all__ = ["StagedStore"]
