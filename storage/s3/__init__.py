"""Stores in object storage: ``open_store(backend, "s3://bucket/prefix", mode)`` and what it stands on.

    import storage
    with storage.open_store("webdataset", "s3://image-lab/cifar", "w") as store:   # staged, uploaded on close
        store.write_batch(images, labels)
    with storage.open_store("s3://image-lab/cifar") as store:      # the backend from the remote store.json
        image, label = store.read_one(7)                            # a ranged GET, for WebDataset

* :mod:`.location`: ``s3://bucket/prefix``, the endpoint (``endpoint_url=``, else
  ``AWS_ENDPOINT_URL``), retries and timeouts; credentials from the standard AWS chain only.
* :mod:`.transfer`: upload (manifest last), download, list, delete, each request retried
  with backoff and named in the error.
* :mod:`.staging`: writes, staged locally and uploaded on close.
* :mod:`.remote` and :mod:`.readers`: reads, each format by its own library's S3 client,
  or downloaded whole where the format needs a local file.
* :mod:`.clients`: each library's client configured for the endpoint.
* :mod:`.traffic`: requests and bytes counted by the server; :mod:`.server`: SeaweedFS on localhost.

Nothing here imports boto3 or a format library until it is used.
"""

from __future__ import annotations

import os
from typing import Any

from .location import InvalidLocationError, NoCredentialsError, ObjectStorageError, S3Location, is_s3_url, redact

LOCATION_OPTIONS = ("endpoint_url", "cache_dir", "staging_dir", "upload_progress")


def open_s3_store(backend: str | None, url: str, mode: str = "r", **options: Any) -> Any:
    """Open the store at ``url``: read where it is (``"r"``), or staged and uploaded on close (``"w"``, ``"a"``).

    ``options`` are the backend's, plus ``endpoint_url`` (else ``AWS_ENDPOINT_URL``),
    ``cache_dir`` (this location's cache folder, for reads), ``staging_dir`` (where writes
    are staged) and ``upload_progress(bytes done, bytes total)``.
    """
    from ..errors import ModeError

    where = {name: options.pop(name) for name in LOCATION_OPTIONS if name in options}
    location = S3Location.parse(url, where.get("endpoint_url"))
    if mode == "r":
        from .remote import open_remote

        return open_remote(location, backend, where.get("cache_dir"), **options)
    if mode not in ("w", "a"):
        raise ModeError(f"mode {mode!r} is not one of 'r' (read), 'w' (create) or 'a' (append)")
    if backend is None:
        from .remote import read_remote_manifest

        backend = str(read_remote_manifest(location)["backend"])
    from .staging import StagedStore

    return StagedStore(backend, location, mode, options, where.get("staging_dir"), where.get("upload_progress"))


def detect_s3_backend(url: str, endpoint_url: str | None = None) -> str:
    """The backend the manifest at ``url`` names (only the manifest is read)."""
    from .remote import read_remote_manifest

    return str(read_remote_manifest(S3Location.parse(url, endpoint_url))["backend"])


def location_from(url: str | os.PathLike[str], endpoint_url: str | None = None) -> S3Location:
    return S3Location.parse(str(url), endpoint_url)


__all__ = [
    "InvalidLocationError",
    "NoCredentialsError",
    "ObjectStorageError",
    "S3Location",
    "detect_s3_backend",
    "is_s3_url",
    "location_from",
    "open_s3_store",
    "redact",
]
