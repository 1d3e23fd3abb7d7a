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

from .base import BackendInfo, DiskUsage, ImageStore, measure_disk_usage
from .errors import (
    BackendUnavailableError,
    BadImageFileError,
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


def __getattr__(name: str) -> type[ImageStore]:
    """Give ``storage.LmdbStore`` and the other store classes, importing their module on first use."""
    from .registry import class_named

    found = class_named(name) if name.endswith("Store") else None
    if found is None:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    return found


__all__ = [
    "BackendInfo",
    "BackendUnavailableError",
    "BadImageFileError",
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
    "StoreNotFoundError",
    "StoreNotWritableError",
    "UnknownBackendError",
    "WebDatasetStore",
    "WrongBackendError",
    "ZarrStore",
    "backend_info",
    "backends",
    "measure_disk_usage",
    "open_store",
    "register_backend",
    "store_class",
    "unregister_backend",
]
