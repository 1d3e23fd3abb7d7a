"""Image Storage Lab's storage library: many image-storage backends behind one interface.

    import storage
    with storage.open_store("lmdb", "data/stores/cifar", "w") as store:
        store.write_batch(images, labels)
    with storage.open_store("data/stores/cifar") as store:   # the backend its store.json names
        image, label = store.read_one(0)
    storage.detect_backend("data/stores/cifar")               # "lmdb" ("sharded" for a sharded store)

This module only re-exports. Each backend lives in its own module under
``storage/formats/`` and is listed explicitly in ``storage/formats/__init__.py``; its
module (and its format library: h5py, zarr, pyarrow...) is imported the first time the
backend is used, so ``import storage`` stays fast and one missing library disables one
backend, not all of them.
"""

from typing import Any

from .base import BackendInfo, DiskUsage, ImageStore, measure_disk_usage
from .errors import (
    BackendUnavailableError,
    BadImageFileError,
    BadShardError,
    ConversionFailedError,
    CorruptDataError,
    DataNotFoundError,
    DiskSpaceError,
    DownloadError,
    EmptyBatchError,
    EncodingError,
    ImageIndexError,
    ImageShapeError,
    ImageTypeError,
    IncompleteStoreError,
    LabelError,
    ModeError,
    NewerVersionError,
    NoChecksumError,
    NotAStoreError,
    ReadOnlyStoreError,
    StorageError,
    StoreExistsError,
    StoreFullError,
    StoreInUseError,
    StoreNotFoundError,
    StoreNotReadableError,
    StoreNotWritableError,
    UnknownBackendError,
    WrongBackendError,
)
from .integrity import IntegrityReport
from .reading import ImageReader
from .registry import backend_info, backends, register_backend, store_class, unregister_backend

_SHARDED_NAMES = ("open_sharded", "ShardedStore", "ShardedWriter", "ShardInfo")
_OPENER_NAMES = ("StoreSummary", "detect_backend", "open_store", "summarize_store")


def __getattr__(name: str) -> Any:
    """Give ``storage.LmdbStore`` and the other store classes, importing their module on first use.

    ``storage.open_store`` and ``storage.detect_backend`` come from :mod:`storage.opener`,
    ``storage.open_sharded`` and the sharded-store classes from :mod:`storage.sharded`, both
    imported on first use too (the opener knows sharded stores, so it imports that module);
    :mod:`storage.distributed` (which needs Dask) is imported only by whoever imports it.
    """
    if name in _OPENER_NAMES:
        from . import opener

        return getattr(opener, name)
    if name in _SHARDED_NAMES:
        from . import sharded

        return getattr(sharded, name)
    from .registry import class_named

    found = class_named(name) if name.endswith("Store") else None
    if found is None:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    return found


__all__ = [
    "BackendInfo",
    "BackendUnavailableError",
    "BadImageFileError",
    "BadShardError",
    "ConversionFailedError",
    "CorruptDataError",
    "DataNotFoundError",
    "DiskSpaceError",
    "DiskUsage",
    "DownloadError",
    "EmptyBatchError",
    "EncodingError",
    "FfcvStore",
    "Hdf5BloscStore",
    "Hdf5GzipStore",
    "Hdf5LzfStore",
    "Hdf5Store",
    "HfDatasetsStore",
    "ImageIndexError",
    "ImageReader",
    "ImageShapeError",
    "ImageStore",
    "ImageTypeError",
    "IncompleteStoreError",
    "IntegrityReport",
    "JpegFilesStore",
    "LabelError",
    "LanceStore",
    "LitDataStore",
    "LmdbPngStore",
    "LmdbStore",
    "LossyWebpFilesStore",
    "MdsStore",
    "ModeError",
    "NewerVersionError",
    "NoChecksumError",
    "NotAStoreError",
    "NpyStore",
    "ParquetStore",
    "PngFilesStore",
    "ReadOnlyStoreError",
    "ShardInfo",
    "ShardedStore",
    "ShardedWriter",
    "StorageError",
    "StoreExistsError",
    "StoreFullError",
    "StoreInUseError",
    "StoreNotFoundError",
    "StoreNotReadableError",
    "StoreNotWritableError",
    "StoreSummary",
    "UnknownBackendError",
    "WebDatasetStore",
    "WebpFilesStore",
    "WrongBackendError",
    "ZarrStore",
    "backend_info",
    "backends",
    "detect_backend",
    "measure_disk_usage",
    "open_sharded",
    "open_store",
    "register_backend",
    "store_class",
    "summarize_store",
    "unregister_backend",
]
