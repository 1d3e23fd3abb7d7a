"""Every built-in format at a glance: what it is and can do, and where its code lives.

One module per format family sits in this package. This file is the explicit list the
registry (:mod:`storage.registry`) is built from, in the order the dashboard and the CLI
show them. It names each backend's module and class as text, so ``import storage`` knows
every backend's name, label, description and capability flags without importing h5py,
zarr, pyarrow or any other format library: a module is imported the first time its
backend is used, and a backend whose library is missing is reported, not fatal.

Each store class takes its :class:`~storage.base.BackendInfo` from :data:`BUILTIN_INFO`,
so the flags are stated once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..base import BackendInfo

FFCV_INSTALL = (
    "FFCV is an optional extra that builds against system libraries: apt-get install -y libturbojpeg0-dev "
    "libopencv-dev pkg-config, then python3 -m pip install -r requirements-ffcv.txt and python3 -m pip install "
    "--no-deps --no-build-isolation ffcv==1.0.2 (README, 'FFCV, an optional extra')"
)


@dataclass(frozen=True)
class BuiltinBackend:
    """A backend the registry can import on demand: ``module`` holds ``class_name``."""

    info: BackendInfo
    module: str
    class_name: str
    requires: tuple[str, ...]
    """The PyPI packages its module imports, named in the error when one is missing."""
    install: str | None = None
    """How to install them where ``pip install`` of ``requires`` is not enough (FFCV builds against
    system libraries first); the error names this instead."""

    @property
    def locator(self) -> str:
        return f"{__name__}.{self.module}:{self.class_name}"


_PNG = BackendInfo(
    name="png",
    label="PNG files + CSV",
    description="One PNG per image and a labels CSV: readable by any tool, but file creation makes it the slowest.",
    compressed=True,
    one_file_per_image=True,
)
_WEBP = replace(
    _PNG,
    name="webp",
    label="WebP files (lossless) + CSV",
    description="One lossless WebP per image and a labels CSV: smaller than PNG, exact pixels, alpha kept.",
)
_HDF5 = BackendInfo(
    name="hdf5",
    label="HDF5",
    description="One HDF5 file with an (N,H,W,C) uint8 dataset: fastest bulk reads and writes, one file to copy.",
)

BUILTIN_BACKENDS: tuple[BuiltinBackend, ...] = (
    BuiltinBackend(_PNG, "png_files", "PngFilesStore", ("Pillow",)),
    BuiltinBackend(
        BackendInfo(
            name="lmdb",
            label="LMDB",
            description="Memory-mapped key-value store, raw pixels in records of a few images: fast random reads, synced commits.",
        ),
        "lmdb_store",
        "LmdbStore",
        ("lmdb",),
    ),
    BuiltinBackend(_HDF5, "hdf5_store", "Hdf5Store", ("h5py",)),
    BuiltinBackend(
        BackendInfo(
            name="npy",
            label="NumPy raw file + index",
            description="All pixels end to end in one raw uint8 file, memory-mapped for reading, and an index: the ceiling.",
        ),
        "npy_store",
        "NpyStore",
        ("numpy",),
    ),
    BuiltinBackend(
        replace(
            _PNG,
            name="jpeg",
            label="JPEG files + CSV",
            description="One JPEG per image (quality 95) and a labels CSV: small files, lossy, no alpha channel.",
            lossless=False,
            channels=(1, 3),
        ),
        "image_files",
        "JpegFilesStore",
        ("Pillow",),
    ),
    BuiltinBackend(_WEBP, "image_files", "WebpFilesStore", ("Pillow",)),
    BuiltinBackend(
        replace(
            _WEBP,
            name="webp-lossy",
            label="WebP files (lossy) + CSV",
            description="One lossy WebP per image (quality 90) and a labels CSV: the smallest files, chroma halved.",
            lossless=False,
        ),
        "image_files",
        "LossyWebpFilesStore",
        ("Pillow",),
    ),
    BuiltinBackend(
        BackendInfo(
            name="lmdb-png",
            label="LMDB (PNG values)",
            description="LMDB with each image stored as PNG: smaller than plain LMDB, slower to write and read.",
            compressed=True,
        ),
        "lmdb_png",
        "LmdbPngStore",
        ("lmdb", "Pillow"),
    ),
    BuiltinBackend(
        replace(
            _HDF5,
            name="hdf5-gzip",
            label="HDF5 + gzip",
            description="One HDF5 file, images compressed with HDF5's built-in deflate (gzip) filter, level 4.",
            compressed=True,
        ),
        "hdf5_variants",
        "Hdf5GzipStore",
        ("h5py",),
    ),
    BuiltinBackend(
        replace(
            _HDF5,
            name="hdf5-lzf",
            label="HDF5 + LZF",
            description="One HDF5 file, images compressed with h5py's LZF filter: fast, light compression.",
            compressed=True,
        ),
        "hdf5_variants",
        "Hdf5LzfStore",
        ("h5py",),
    ),
    BuiltinBackend(
        replace(
            _HDF5,
            name="hdf5-blosc",
            label="HDF5 + Blosc",
            description="One HDF5 file, images compressed with Blosc (zstd, byte shuffle) through hdf5plugin; one size.",
            variable_shapes=False,
            compressed=True,
        ),
        "hdf5_variants",
        "Hdf5BloscStore",
        ("h5py", "hdf5plugin"),
    ),
    BuiltinBackend(
        BackendInfo(
            name="zarr",
            label="Zarr v3 (sharded)",
            description="Zarr v3 array, one image per inner chunk, 1,000 per shard file, zstd: chunked, cloud-ready, one size.",
            variable_shapes=False,
            compressed=True,
        ),
        "zarr_store",
        "ZarrStore",
        ("zarr", "numcodecs", "google-crc32c"),
    ),
    BuiltinBackend(
        BackendInfo(
            name="webdataset",
            label="WebDataset tar shards",
            description="Tar shards of .npy + .cls samples, the WebDataset layout, with an offset index for random reads.",
        ),
        "webdataset_store",
        "WebDatasetStore",
        ("Pillow",),
    ),
    BuiltinBackend(
        BackendInfo(
            name="parquet",
            label="Parquet (pyarrow)",
            description="Apache Parquet part files, one row per image (pixels, shape, label), row groups of 100 for random reads.",
            compressed=True,
        ),
        "parquet_store",
        "ParquetStore",
        ("pyarrow",),
    ),
    BuiltinBackend(
        BackendInfo(
            name="litdata",
            label="LitData (optimize)",
            description="LitData's chunked binary files (64 MB chunks), read with its StreamingDataset: a peer format.",
        ),
        "litdata_store",
        "LitDataStore",
        ("litdata",),
    ),
    BuiltinBackend(
        BackendInfo(
            name="mds",
            label="MosaicML Streaming (MDS)",
            description="MosaicML Streaming's MDS shards (64 MiB), read with its StreamingDataset: a peer format.",
        ),
        "mds_store",
        "MdsStore",
        ("mosaicml-streaming",),
    ),
    BuiltinBackend(
        BackendInfo(
            name="lance",
            label="Lance (pylance)",
            description="A Lance columnar dataset, one row per image: random reads with take, scans for bulk reads.",
        ),
        "lance_store",
        "LanceStore",
        ("pylance",),
    ),
    BuiltinBackend(
        BackendInfo(
            name="hf-datasets",
            label="Hugging Face datasets",
            description="A Hugging Face dataset saved with save_to_disk: Arrow files whose Image feature holds PNGs or kept file bytes: a peer format.",
            compressed=True,
        ),
        "hf_datasets_store",
        "HfDatasetsStore",
        ("datasets", "huggingface-hub"),
        install=(
            "install it with: python3 -m pip install -r requirements.txt, which pins datasets beside "
            "mosaicml-streaming (a plain pip install datasets brings a huggingface-hub that breaks import streaming)"
        ),
    ),
    BuiltinBackend(
        BackendInfo(
            name="ffcv",
            label="FFCV (.beton)",
            description="An FFCV .beton file, raw RGB pixels by default (write_mode 'jpg': re-encoded as JPEG), loaded by FFCV's Loader: a peer format.",
            channels=(3,),
        ),
        "ffcv_store",
        "FfcvStore",
        ("ffcv", "numba", "opencv-python-headless"),
        install=FFCV_INSTALL,
    ),
)

BUILTIN_INFO: dict[str, BackendInfo] = {backend.info.name: backend.info for backend in BUILTIN_BACKENDS}
"""Each built-in backend's info by name; the store classes read theirs from here."""
