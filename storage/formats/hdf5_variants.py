"""Compressed HDF5: the ``hdf5`` layout with a compression filter on the images dataset.

Three backends, each :class:`~storage.hdf5_store.Hdf5Store` with other defaults, so the
file layout, chunking (chunks of about 64 KiB when compressed, with a 32 MiB chunk cache),
appends, mixed sizes and fork handling are exactly those of ``hdf5``:

* ``hdf5-gzip``: the deflate filter every HDF5 build has, ``compression_opts`` (level) 4.
* ``hdf5-lzf``: h5py's LZF filter (fast, light compression; readable wherever h5py is).
* ``hdf5-blosc``: Blosc through the ``hdf5plugin`` package (filter id 32001), ``cname``
  "zstd" at ``clevel`` 5 with byte ``shuffle`` by default. Other HDF5 readers need the
  Blosc filter plugin too (``import hdf5plugin`` in Python). One image size per store
  (``variable_shapes=False``): the Blosc filter cannot work on HDF5 variable-length data
  (with hdf5plugin 7.1 it kills the process with a floating-point exception when the
  file is flushed), so the variable layout that ``hdf5`` switches to for mixed sizes is
  not available, and mixed sizes are refused before anything is written.

Each file records its filter: the ``compression`` attribute of the file says which one, and
the images dataset's own filter pipeline (``h5py``'s ``dataset.compression`` for gzip and
lzf, the filter id 32001 for Blosc) is what HDF5 applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..batch import ImageBatch
from ..errors import ModeError
from . import BUILTIN_INFO
from .hdf5_store import Hdf5Store

BLOSC_COMPRESSORS = ("blosclz", "lz4", "lz4hc", "zlib", "zstd")
BLOSC_SHUFFLES = ("none", "byte", "bit")


def _check_fixed_compression(backend: str, options: dict[str, Any], expected: str) -> None:
    if "compression" in options and options["compression"] != expected:
        raise ModeError(
            f"the {backend} backend always uses {expected}; for {options['compression']!r} "
            "choose another hdf5 backend (hdf5, hdf5-gzip, hdf5-lzf, hdf5-blosc)"
        )


def _check_integer(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModeError(f"{name} {value!r} must be an integer from {low} to {high}")


class Hdf5GzipStore(Hdf5Store):
    """HDF5 with the deflate (gzip) filter."""

    info = BUILTIN_INFO["hdf5-gzip"]
    default_options = {**Hdf5Store.default_options, "compression": "gzip", "compression_opts": 4}

    def _check_options(self, options: dict[str, Any]) -> None:
        _check_fixed_compression(self.info.name, options, "gzip")
        super()._check_options(options)
        if options.get("compression_opts") is not None:
            _check_integer("compression_opts (the gzip level)", options["compression_opts"], 0, 9)


class Hdf5LzfStore(Hdf5Store):
    """HDF5 with h5py's LZF filter."""

    info = BUILTIN_INFO["hdf5-lzf"]
    default_options = {**Hdf5Store.default_options, "compression": "lzf"}

    def _check_options(self, options: dict[str, Any]) -> None:
        _check_fixed_compression(self.info.name, options, "lzf")
        super()._check_options(options)
        if options.get("compression_opts") is not None:
            raise ModeError("the LZF filter takes no compression_opts")


class Hdf5BloscStore(Hdf5Store):
    """HDF5 with the Blosc filter from ``hdf5plugin``."""

    info = BUILTIN_INFO["hdf5-blosc"]
    default_options = {
        **Hdf5Store.default_options,
        "compression": "blosc",
        "cname": "zstd",
        "clevel": 5,
        "shuffle": "byte",
    }

    def _check_options(self, options: dict[str, Any]) -> None:
        _check_fixed_compression(self.info.name, options, "blosc")
        if options.get("compression_opts") is not None:
            raise ModeError("set the Blosc filter with cname, clevel and shuffle, not compression_opts")
        # The parent checks compression against h5py's own filters; Blosc is checked here.
        super()._check_options({key: value for key, value in options.items() if key != "compression"})
        if options.get("cname", "zstd") not in BLOSC_COMPRESSORS:
            raise ModeError(f"cname {options['cname']!r} is not one of {', '.join(BLOSC_COMPRESSORS)}")
        _check_integer("clevel", options.get("clevel", 5), 0, 9)
        if options.get("shuffle", "byte") not in BLOSC_SHUFFLES:
            raise ModeError(f"shuffle {options['shuffle']!r} is not one of {', '.join(BLOSC_SHUFFLES)}")
        if options.get("layout", "auto") == "variable":
            raise ModeError(
                "the hdf5-blosc backend stores one image size per store (layout 'auto' or 'uniform'): "
                "the Blosc filter cannot compress HDF5 variable-length data; use hdf5-gzip or hdf5-lzf to mix sizes"
            )

    @staticmethod
    def _plugin():
        try:
            import hdf5plugin
        except ImportError:
            raise ModeError(
                "the hdf5-blosc backend needs the hdf5plugin package: pip install 'hdf5plugin>=4,<8'"
            ) from None
        return hdf5plugin

    def _open(self) -> None:
        self._plugin()  # importing hdf5plugin registers the Blosc filter with HDF5
        super()._open()

    def _create(self) -> None:
        super()._create()
        self._file.attrs["blosc"] = f"{self.options['cname']}:{self.options['clevel']}:{self.options['shuffle']}"

    @contextmanager
    def _h5py_filter(self) -> Iterator[None]:
        """For the parent's ``create_dataset`` calls: compression set to the Blosc filter."""
        hdf5plugin = self._plugin()
        shuffle = {
            "none": hdf5plugin.Blosc.NOSHUFFLE,
            "byte": hdf5plugin.Blosc.SHUFFLE,
            "bit": hdf5plugin.Blosc.BITSHUFFLE,
        }
        blosc = hdf5plugin.Blosc(
            cname=self.options["cname"], clevel=self.options["clevel"], shuffle=shuffle[self.options["shuffle"]]
        )
        saved = self.options
        self.options = {**saved, **dict(blosc)}
        try:
            yield
        finally:
            self.options = saved

    def _make_datasets(self, batch: ImageBatch) -> None:
        with self._h5py_filter():
            super()._make_datasets(batch)
