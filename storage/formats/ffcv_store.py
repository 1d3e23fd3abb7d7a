"""FFCV: each part a ``.beton`` file written by ``ffcv.writer.DatasetWriter``, loaded by its ``Loader``.

Each part (see :mod:`.write_once_parts`: a ``.beton`` is written once, from a whole
indexable data set) is ``parts/0000k/images.beton`` with three fields, in this order:

    image: RGBImageField(write_mode, max_resolution, jpeg_quality, smart_threshold)
    label: IntField   (int64)
    id: IntField      the image's id in the store, so that a shuffled epoch says which
                      images it delivered and can be checked against the source

FFCV stores RGB images only: its field refuses anything but (H,W,3) uint8, so this store
takes three channels (``BackendInfo.channels``) and refuses grayscale and RGBA with the
library's usual message. Any size up to 65,535 pixels a side (its header keeps uint16).

What is stored follows the ``write_mode`` option, FFCV's own: ``"raw"`` (the default)
keeps the pixels; ``"jpg"`` encodes every image with OpenCV at ``jpeg_quality`` (90), lossy;
``"smart"`` stores as JPEG the images whose raw pixels exceed ``smart_threshold`` bytes
(FFCV 1.0.2 stores every image raw under ``"smart"`` without a threshold, so one is asked
for). FFCV always encodes from pixels: it cannot keep a photo file's own bytes, so the
store takes no ``encoding`` option, and JPEG photos are decoded and, under ``"jpg"``,
encoded again. FFCV's ``max_resolution`` is the store's ``max_side``: the image is resized
by this library's resizer before FFCV sees it, as for every store, so FFCV's own resizer
(OpenCV's INTER_AREA) has nothing left to do.

Writing: ``DatasetWriter.from_indexed_dataset`` needs the whole part as one indexable data
set up front and reads it from worker processes (one per core, its default). A batch
streams in chunks, so the chunks go to a spool file in the part's folder (raw pixels, end
to end; memory stays bounded by one chunk) and FFCV's writer converts the spool at the
commit, then the spool is deleted: every image is written twice, once by this store.

Reading: the training loader is FFCV's ``Loader`` (``ORDER_RANDOM``, a full shuffle per
epoch; ``ORDER_QUASI_RANDOM`` for data sets larger than memory), with
``SimpleRGBImageDecoder`` and ``os_cache=True``, as FFCV's guide sets it for a data set
that fits in memory. Its ``num_workers`` are threads of one process: the loader's worker
count ``w`` is given as ``max(1, w)`` (FFCV has no "read in the caller" mode). Random reads
use FFCV's own ``Reader`` (the file's header, per-sample metadata and allocation table)
and a memory map of the file, exactly as the Loader's OS-cache memory manager reads a
sample; JPEG samples are decoded with FFCV's own libjpeg-turbo decoder (``libffcv.imdecode``),
so a store read and a Loader batch give the same pixels.

The code that drives FFCV is in :mod:`.ffcv_beton`, imported at the first write or read:
``import ffcv`` takes seconds, and this module is imported whenever the backends are listed.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import stack_if_uniform
from ..errors import ImageShapeError, ModeError
from . import BUILTIN_INFO
from .write_once_parts import WriteOncePartsStore

if TYPE_CHECKING:
    from .ffcv_beton import BetonFile, Spool

BETON_NAME = "images.beton"
SPOOL_NAME = "spool.bin"
WRITE_MODES = ("raw", "jpg", "smart")
LOADER_ORDERS = ("random", "quasi_random")
MAX_SIDE = 2**16 - 1  # FFCV keeps width and height as uint16


def check_ffcv_installed() -> None:
    """Fail as importing FFCV would where it is missing, without importing it.

    ``import ffcv`` compiles numba code (its typed dict of image modes): 3-10 s on the
    development machine, for every process that lists the available backends. This looks
    for the packages and loads FFCV's compiled extension (so missing system libraries,
    libturbojpeg or OpenCV, show here); the rest is imported on first use (:mod:`.ffcv_beton`).
    """
    for module in ("ffcv", "numba", "cv2", "terminaltables", "fastargs", "assertpy", "pytorch_pfn_extras"):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    folders = importlib.util.find_spec("ffcv").submodule_search_locations or []
    extensions = sorted(path for folder in folders for path in Path(folder).glob("_libffcv*.so"))
    if not extensions:
        raise ImportError("FFCV's compiled extension (ffcv/_libffcv*.so) is missing: its build failed")
    ctypes.CDLL(str(extensions[0]))


check_ffcv_installed()


class FfcvStore(WriteOncePartsStore):
    """``.beton`` parts of FFCV, one sample (RGB image, label, id) per image."""

    info = BUILTIN_INFO["ffcv"]
    keeps_encoded = False  # FFCV encodes from pixels itself (write_mode): it cannot keep a file's bytes
    default_options = {"write_mode": "raw", "jpeg_quality": 90, "smart_threshold": None}
    chunk_images = 16384  # bounded by chunk_bytes (64 MiB) too
    writer_bytes_per_image = 500
    """What FFCV's DatasetWriter keeps per image while it writes, whatever the image (its work
    list and the allocation tables its workers send back; measured 0.4-0.5 KB), besides one page
    (2 MiB): a million images need about 500 MB, the pixels themselves stream."""

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        write_mode = options.get("write_mode", "raw")
        if write_mode not in WRITE_MODES:
            raise ModeError(f"write_mode {write_mode!r} is not one of FFCV's {', '.join(map(repr, WRITE_MODES))}")
        quality = options.get("jpeg_quality", 90)
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ModeError(f"jpeg_quality {quality!r} is not a whole number from 1 to 100")
        threshold = options.get("smart_threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1):
            raise ModeError(f"smart_threshold {threshold!r} is not a whole number of bytes >= 1 (or None)")
        if write_mode == "smart" and threshold is None:
            raise ModeError(
                "write_mode 'smart' needs smart_threshold (bytes): FFCV stores an image as JPEG when its raw pixels "
                "take more, else raw; without one FFCV 1.0.2 stores every image raw"
            )

    @staticmethod
    def load_library() -> None:
        """Import FFCV now (its numba code compiles: seconds), not in the first write or read."""
        from . import ffcv_beton  # noqa: F401

    @classmethod
    def lossless_with(cls, options: dict[str, Any]) -> bool:
        """Whether a store written with ``options`` gives back the pixels exactly (``write_mode`` raw)."""
        return cls.info.lossless and {**cls.default_options, **options}["write_mode"] == "raw"

    @property
    def lossless(self) -> bool:
        return super().lossless and self.options["write_mode"] == "raw"

    @classmethod
    def torch_loader(
        cls,
        path: str | os.PathLike[str],
        batch_size: int,
        num_workers: int = 0,
        *,
        seed: int | None = None,
        order: str = "random",
        **_: Any,
    ) -> Any:
        """FFCV's own ``Loader`` over the store: batches of ``(images, labels, ids)`` tensors.

        ``order`` is ``"random"`` (``ORDER_RANDOM``, with ``os_cache=True``) or
        ``"quasi_random"`` (``ORDER_QUASI_RANDOM``, which FFCV runs with its process cache,
        ``os_cache=False``). ``seed`` None lets FFCV pick one. A store appended to holds a
        ``.beton`` per append, and FFCV's Loader reads one file: its parts are loaded one
        after the other, each shuffled in itself. FFCV fills a few batch buffers in turn
        (``batches_ahead`` + 2, five by default): a batch's tensors are overwritten five
        batches later, so copy what is kept.
        """
        from .ffcv_beton import PartsLoader, ffcv_loader

        if order not in LOADER_ORDERS:
            raise ValueError(f"order {order!r} is not one of {', '.join(map(repr, LOADER_ORDERS))}")
        loaders = [
            ffcv_loader(part / BETON_NAME, batch_size, max(1, int(num_workers)), seed, order)
            for part in cls.committed_parts(path)
        ]
        return loaders[0] if len(loaders) == 1 else PartsLoader(loaders)

    # -- writing -------------------------------------------------------------------------

    def _open_writer(self, folder: Path) -> Spool:
        from .ffcv_beton import Spool

        return Spool(folder / SPOOL_NAME)

    def _add_chunk(self, writer: Spool, index: int, images, labels: np.ndarray, first_id: int) -> None:
        shapes = [image.shape for image in images]
        too_big = next((shape for shape in shapes if max(shape[:2]) > MAX_SIDE), None)
        if too_big is not None:
            raise ImageShapeError(
                f"FFCV keeps an image's width and height as 16-bit numbers and cannot store a {too_big} image; "
                "resize the images first (the max_side option)"
            )
        writer.add(images, shapes, labels, np.arange(first_id, first_id + len(labels)))

    def _finish_writer(self, writer: Spool) -> None:
        from .ffcv_beton import write_beton

        writer.close()
        try:
            write_beton(
                writer,
                writer.path.with_name(BETON_NAME),
                write_mode=self.options["write_mode"],
                max_resolution=self.options.get("max_side"),
                jpeg_quality=self.options["jpeg_quality"],
                smart_threshold=self.options["smart_threshold"],
            )
        finally:
            writer.path.unlink(missing_ok=True)

    def _abandon_writer(self, writer: Spool) -> None:
        with contextlib.suppress(OSError):  # its buffer cannot be written on a full disk; the file closes anyway
            writer.close()

    # -- reading -------------------------------------------------------------------------

    def _open_reader(self, folder: Path) -> BetonFile:
        from .ffcv_beton import BetonFile

        return BetonFile(folder / BETON_NAME)

    def _read_sample(self, reader: BetonFile, index: int) -> tuple[np.ndarray, int]:
        return reader.image(index), int(reader.labels[index])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        """Each part's samples straight from its memory map, in the order asked for (into ``out`` if given)."""
        parts = np.searchsorted(self._part_firsts, ids, side="right") - 1
        images: list[np.ndarray] = [None] * len(ids)  # type: ignore[list-item]
        labels = np.empty(len(ids), dtype=np.int64)
        for part in np.unique(parts).tolist():
            positions = np.flatnonzero(parts == part)
            beton = self._reader(part)
            indices = ids[positions] - int(self._part_firsts[part])
            labels[positions] = beton.labels[indices]
            for position, index in zip(positions.tolist(), indices.tolist()):
                images[position] = beton.image(index, copy=False)
        read = stack_if_uniform(images, out, self._layout_shape)
        return (read if isinstance(read, np.ndarray) else [image.copy() for image in read]), labels
