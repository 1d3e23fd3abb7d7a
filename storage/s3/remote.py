"""Reading a store at an ``s3://`` URL, each format the way its own users read it from object storage.

A format whose library reads object storage itself gets a reader class of its own (in
:mod:`storage.s3.readers`): the format's store class with its file access swapped for
that library's S3 client, so every other part of reading (ids, batches, encodings,
errors) is the store's own code. The reader opens on a *shadow* folder in the local cache
that holds the store's manifest (and, for WebDataset, its small offset index), fetched
when it opens; the data stays in the bucket.

Every other format needs a local file (an LMDB map, an HDF5 file, a memory-mapped NumPy
file: h5py here has no ranged-read driver), so it is read as its users read it: the whole
store is downloaded into the cache, then opened there as any local store. Those readers
say so (:func:`read_method`), and the benchmark labels their figures with it.

The cache lives in ``$IMAGE_STORAGE_LAB_S3_CACHE`` (default ``data/s3-cache``), one
folder per location; :func:`clear_cache` empties it, for "nothing cached" measurements.
A download is reused only while the remote manifest is the one it was made from (its
ETag and modification time).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

from ..errors import StoreNotFoundError
from .location import ObjectStorageError, S3Location
from .transfer import MANIFEST, client_for, download_prefix, is_missing, list_objects, read_object, retried

CACHE_VARIABLE = "IMAGE_STORAGE_LAB_S3_CACHE"
SHADOW = "shadow"
COPY = "copy"
COPY_STAMP = ".downloaded-from.json"

DOWNLOADED = "downloaded whole, then read from a local copy (the format needs a local file)"
READERS: dict[str, tuple[str, str]] = {
    "webdataset": (
        "readers.webdataset:RemoteWebDatasetStore",
        "streamed: WebDataset over pipe:aws s3 cp per tar shard; single reads are ranged GETs at the store's index",
    ),
    "litdata": (
        "readers.litdata:RemoteLitDataStore",
        "LitData StreamingDataset('s3://...'): whole chunks downloaded to its local cache",
    ),
    "mds": (
        "readers.mds:RemoteMdsStore",
        "Streaming StreamingDataset(remote='s3://...', local=cache): whole shards downloaded to its cache",
    ),
    "lance": ("readers.lance:RemoteLanceStore", "Lance over S3 (storage_options): ranged GETs, nothing cached"),
    "parquet": (
        "readers.parquet:RemoteParquetStore",
        "pyarrow S3FileSystem: epochs read whole row groups in a random order through a 1,000-sample shuffle "
        "buffer; single reads a ranged GET of their row group; nothing cached",
    ),
    "zarr": (
        "readers.zarr:RemoteZarrStore",
        "zarr-python over obstore: ranged GETs of chunks through each shard's index, nothing cached",
    ),
}


def read_method(backend: str) -> str:
    """How a store of ``backend`` at an ``s3://`` URL is read, in words for results."""
    return READERS[backend][1] if backend in READERS else DOWNLOADED


def reads_natively(backend: str) -> bool:
    """Whether the format's library reads object storage itself (else the store is downloaded first)."""
    return backend in READERS


def cache_root() -> Path:
    """Where downloads and the libraries' caches go: ``$IMAGE_STORAGE_LAB_S3_CACHE``, else ``data/s3-cache``."""
    from ..datasets.locations import data_dir

    override = os.environ.get(CACHE_VARIABLE)
    return Path(override).expanduser() if override else data_dir() / "s3-cache"


def cache_folder(location: S3Location, root: str | os.PathLike[str] | None = None) -> Path:
    """This location's folder in the cache."""
    return Path(root) if root is not None else cache_root() / location.bucket / (location.prefix or "_root")


def clear_cache(location: S3Location, root: str | os.PathLike[str] | None = None) -> None:
    """Forget everything cached for ``location``: the next read fetches it all again."""
    shutil.rmtree(cache_folder(location, root), ignore_errors=True)


def read_remote_manifest(location: S3Location) -> dict[str, Any]:
    """The manifest of the store at ``location``, or :class:`StoreNotFoundError` saying why there is none."""
    try:
        data = read_object(location, MANIFEST)
    except ObjectStorageError as error:
        if not is_missing(error):
            raise
        raise _no_store_at(location) from None
    try:
        manifest = json.loads(data)
        int(manifest["count"]), str(manifest["backend"])
    except (ValueError, KeyError, TypeError) as error:
        from ..errors import CorruptDataError

        raise CorruptDataError(f"{location.url}/{MANIFEST} is damaged ({error}); upload the store again") from None
    return manifest


def _no_store_at(location: S3Location) -> StoreNotFoundError:
    try:
        listed = len(list_objects(location))
    except ObjectStorageError as error:
        if not is_missing(error):
            raise
        listed = 0
    if listed:
        return StoreNotFoundError(
            f"no image store at {location.url}: its {listed:,} objects have no {MANIFEST}, so an upload into it "
            "did not finish (or they are not a store); upload the store again"
        )
    return StoreNotFoundError(
        f"no image store at {location.url} (at {location.endpoint}): nothing is there; check the URL, or "
        "upload one with convert SOURCE --to BACKEND s3://bucket/prefix"
    )


class RemoteReading:
    """What a format's store class becomes when its data stays in object storage.

    Mixed in before the store class; the store opens read-only on the shadow folder (the
    manifest, fetched), and the subclass reads its data through the format's S3 client.
    It pickles as its location and cache folder, for DataLoader workers.
    """

    read_method: ClassVar[str] = ""
    shadow_files: ClassVar[tuple[str, ...]] = ()
    """Small files fetched beside the manifest, that the store's own code opens at start (an index)."""

    def __init__(self, location: S3Location, cache: str | os.PathLike[str]) -> None:
        self.location = location
        self.cache = Path(cache)
        super().__init__(self.cache / SHADOW, "r")  # type: ignore[call-arg]

    @property
    def url(self) -> str:
        return self.location.url

    def __getstate__(self) -> dict[str, Any]:
        return {"location": self.location, "cache": str(self.cache)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["location"], state["cache"])  # the shadow is on this machine already

    def disk_usage(self):
        """The objects' sizes in the bucket (apparent and allocated alike: S3 has no blocks)."""
        from ..base import DiskUsage

        listing = list_objects(self.location)
        total = sum(listing.values())
        return DiskUsage(total, total, len(listing))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url!r} images={len(self)}>"  # type: ignore[arg-type]


def fetch_shadow(location: S3Location, cache: Path, manifest: dict[str, Any], names: tuple[str, ...]) -> Path:
    """The shadow folder: the manifest and ``names`` (small files), fetched now."""
    shadow = cache / SHADOW
    shutil.rmtree(shadow, ignore_errors=True)
    shadow.mkdir(parents=True)
    for name in names:
        (shadow / name).parent.mkdir(parents=True, exist_ok=True)
        (shadow / name).write_bytes(read_object(location, name))
    (shadow / MANIFEST).write_text(json.dumps(manifest))
    return shadow


def _manifest_stamp(location: S3Location) -> dict[str, str]:
    client = client_for(location)
    key = location.key(MANIFEST)
    head = retried(location, "HEAD", key, lambda: client.head_object(Bucket=location.bucket, Key=key))
    return {"etag": str(head.get("ETag")), "modified": str(head.get("LastModified"))}


def downloaded_copy(location: S3Location, cache: Path) -> Path:
    """A local copy of the whole store, downloaded now unless the cache holds one of this very upload."""
    copy = cache / COPY
    stamp = _manifest_stamp(location)
    stamp_path = cache / COPY_STAMP
    if (copy / MANIFEST).is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        return copy
    shutil.rmtree(copy, ignore_errors=True)
    stamp_path.unlink(missing_ok=True)
    download_prefix(location, copy, skip=(MANIFEST,))
    (copy / MANIFEST).write_bytes(read_object(location, MANIFEST))  # last, as on upload
    stamp_path.write_text(json.dumps(stamp))
    return copy


def reader_class(backend: str) -> type | None:
    """The reader class of a format its library reads from object storage, or None (downloaded)."""
    if backend not in READERS:
        return None
    module, _, name = READERS[backend][0].partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def open_remote(
    location: S3Location, backend: str | None = None, cache: str | os.PathLike[str] | None = None, **options: Any
) -> Any:
    """Open the store at ``location`` read-only, with ``backend`` (None: the one its manifest names).

    Raises:
        StoreNotFoundError: no manifest there (nothing, or an upload that did not finish).
        WrongBackendError: the manifest names another backend.
        IncompleteStoreError: the manifest says a write was under way.
        ObjectStorageError: the server did not answer, after the retries.
    """
    from .. import registry
    from ..errors import IncompleteStoreError, ModeError, WrongBackendError

    if options:
        raise ModeError(f"a store at an s3:// URL opens with the options it was written with, not {sorted(options)}")
    manifest = read_remote_manifest(location)
    found = str(manifest["backend"])
    if backend is not None and backend != found:
        raise WrongBackendError(
            f"{location.url} holds a {found!r} store, not {backend!r}; open it with open_store({found!r}, ...)"
        )
    if manifest.get("state") != "complete":
        raise IncompleteStoreError(
            f"the store at {location.url} is incomplete: a write was under way when it was uploaded"
        )
    folder = cache_folder(location, cache)
    cls = reader_class(found)
    if cls is None:
        store = registry.open_store(found, downloaded_copy(location, folder), "r")
        store.location, store.read_method = location, DOWNLOADED
        return store
    registry.store_class(found)  # the format's library is importable here, or BackendUnavailableError
    fetch_shadow(location, folder, manifest, cls.shadow_files)
    return cls(location, folder)


def reopen_remote(location: S3Location, backend: str, cache: str | os.PathLike[str] | None = None) -> Any:
    """Open a store that :func:`open_remote` opened before on this machine, fetching nothing (a worker process)."""
    from .. import registry

    folder = cache_folder(location, cache)
    cls = reader_class(backend)
    if cls is None:
        store = registry.open_store(backend, folder / COPY, "r")
        store.location, store.read_method = location, DOWNLOADED
        return store
    return cls(location, folder)


__all__ = [
    "CACHE_VARIABLE",
    "DOWNLOADED",
    "READERS",
    "RemoteReading",
    "cache_folder",
    "cache_root",
    "clear_cache",
    "downloaded_copy",
    "fetch_shadow",
    "open_remote",
    "read_method",
    "read_remote_manifest",
    "reader_class",
    "reads_natively",
    "reopen_remote",
]
