"""Image Storage Lab's storage library: many image-storage backends behind one interface.

    import storage
    with storage.open_store("lmdb", "data/stores/cifar", "w") as store:
        store.write_batch(images, labels)
    with storage.open_store("lmdb", "data/stores/cifar") as store:
        image, label = store.read_one(0)

This module only re-exports; each backend lives in its own module and is registered
explicitly below.
"""

from .base import BackendInfo, DiskUsage, ImageStore, measure_disk_usage
from .errors import (
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
from .hdf5_store import Hdf5Store
from .hdf5_variants import Hdf5BloscStore, Hdf5GzipStore, Hdf5LzfStore
from .jpeg_files import JpegFilesStore, LossyWebpFilesStore, WebpFilesStore
from .lmdb_png import LmdbPngStore
from .lmdb_store import LmdbStore
from .npy_store import NpyStore
from .parquet_store import ParquetStore
from .png_files import PngFilesStore
from .registry import backend_info, backends, open_store, register_backend, store_class, unregister_backend
from .webdataset_store import WebDatasetStore
from .zarr_store import ZarrStore

for _store_class in (
    PngFilesStore,
    LmdbStore,
    Hdf5Store,
    NpyStore,
    JpegFilesStore,
    WebpFilesStore,
    LossyWebpFilesStore,
    LmdbPngStore,
    Hdf5GzipStore,
    Hdf5LzfStore,
    Hdf5BloscStore,
    ZarrStore,
    WebDatasetStore,
    ParquetStore,
):
    register_backend(_store_class)

__all__ = [
    "BackendInfo",
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
