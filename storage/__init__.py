"""Image Storage Lab's storage library: many image-storage backends behind one interface.

    import storage
    with storage.open_store("lmdb", "data/stores/cifar", "w") as store:
        store.write_batch(images, labels)
    with storage.open_store("lmdb", "data/stores/cifar") as store:
        image, label = store.read_one(0)

This module only re-exports. Each backend lives in its own module under
``storage/backends/`` and is listed explicitly in ``storage/backends/__init__.py``; its
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
    ImageIndexError,
    ImageShapeError,
    ImageTypeError,
    IncompleteStoreError,
    LabelError,
    ModeError,
    ReadOnlyStoreError,
    StorageError,
    StoreExistsError,
    StoreInUseError,
    StoreNotFoundError,
    StoreNotWritableError,
    UnknownBackendError,
    WrongBackendError,
)
from .registry import backend_info, backends, open_store, register_backend, store_class, unregister_backend

# ``backends`` above is the registry's function. It shares its name with the
# ``storage.backends`` package (one module per format), which ``storage.registry`` has
# already imported, so the function is what ``storage.backends`` means from here on; the
# package's modules stay importable as ``storage.backends.<module>``.


_SHARDED_NAMES = ("open_sharded", "ShardedStore", "ShardedWriter", "ShardInfo")


def __getattr__(name: str) -> Any:
    """Give ``storage.LmdbStore`` and the other store classes, importing their module on first use.

    ``storage.open_sharded`` and the sharded-store classes come from :mod:`storage.sharded`,
    imported on first use too; :mod:`storage.distributed` (which needs Dask) is imported
    only by whoever imports it.
    """
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
    "Hdf5BloscStore",
    "Hdf5GzipStore",
    "Hdf5LzfStore",
    "Hdf5Store",
    "JpegFilesStore",
    "LossyWebpFilesStore",
    "WebpFilesStore",
    "LmdbPngStore",
    "LmdbStore",
    "NpyStore",
    "ParquetStore",
    "ShardInfo",
    "ShardedStore",
    "ShardedWriter",
    "PngFilesStore",
    "DownloadError",
    "EmptyBatchError",
    "ImageIndexError",
    "ImageShapeError",
    "ImageStore",
    "ImageTypeError",
    "IncompleteStoreError",
    "LabelError",
    "ModeError",
    "ReadOnlyStoreError",
    "StorageError",
    "StoreExistsError",
    "StoreInUseError",
    "StoreNotFoundError",
    "StoreNotWritableError",
    "UnknownBackendError",
    "WebDatasetStore",
    "WrongBackendError",
    "ZarrStore",
    "backend_info",
    "backends",
    "measure_disk_usage",
    "open_sharded",
    "open_store",
    "register_backend",
    "store_class",
    "unregister_backend",
]
