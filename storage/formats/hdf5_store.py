"""HDF5: one file, images as one chunked (N,H,W[,C]) uint8 dataset plus a labels dataset.

Uniform images are one native uint8 dataset, which reads back in large contiguous copies
(the reason HDF5 is the fastest of the article's three). Datasets are chunked and
resizable so ``"a"`` appends; chunks of about 64 KiB keep random reads cheap while bulk
reads stay near memory speed. Mixed sizes use the ``"variable"`` layout: each image
flattened into a variable-length uint8 row, with its shape in a ``shapes`` dataset.
Compression (``gzip``, ``lzf``) is an option, recorded as attributes in the file.

HDF5 handles do not survive ``fork``: a child process reopens the file on first use.

Readers and writers in other processes: the file is opened without HDF5's own file lock
(the store's writer lock, :mod:`storage.locking`, keeps writers apart), so a reader never
makes a writer fail. A read-only store reads its labels, shapes and, for an uncompressed
store of one size, where each chunk of images lies in the file when it opens, and reads
pixels with ``pread`` from there: what it reads are the chunks committed when it opened,
which an appending writer never moves. A writer sets aside the disk space a batch needs
before writing it (:mod:`storage.disk_space`), so a full disk fails before HDF5 writes
anything, and gives back what it did not use.

Random reads of a read-only, uncompressed uniform store skip h5py's per-selection cost
(about 30 µs an image): HDF5's chunk index gives each chunk's byte offset in the file,
and an uncompressed chunk holds the pixels as they are, so an image is one ``pread``.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from .. import disk_space
from ..base import ImageStore
from ..batch import ImageBatch, Shape
from ..errors import CorruptDataError, ImageShapeError, ModeError
from ..manifest import is_disk_full, is_read_only
from . import BUILTIN_INFO

FILE_NAME = "images.h5"
CHUNK_TARGET_BYTES = 2**20
COMPRESSED_CHUNK_TARGET_BYTES = 64 * 1024
COMPRESSED_CACHE_BYTES = 32 * 2**20
LAYOUTS = ("auto", "uniform", "variable")
COMPRESSIONS = (None, "gzip", "lzf")


def chunk_rows(image_shape: Shape, requested: int, compressed: bool) -> int:
    """Images per chunk: ``requested``, or enough for about 1 MiB (64 KiB when compressed).

    Uncompressed chunks are read and written by HDF5 straight to and from the caller's
    array when the chunk cache is off, including partial reads of a single image, so large
    chunks cost random reads nothing. Compressed chunks must be inflated whole, so they
    are kept small and cached.
    """
    if requested:
        return requested
    target = COMPRESSED_CHUNK_TARGET_BYTES if compressed else CHUNK_TARGET_BYTES
    return max(1, target // int(np.prod(image_shape)))


class Hdf5Store(ImageStore):
    """One HDF5 file holding an images dataset, a labels dataset and, for mixed sizes, shapes."""

    info = BUILTIN_INFO["hdf5"]
    default_options = {"compression": None, "compression_opts": None, "chunk_images": 0, "layout": "auto"}
    # write_one images go into the datasets in groups (one resize, write and flush each), see storage.write_behind
    write_behind_images = 4096

    def _check_options(self, options: dict) -> None:
        super()._check_options(options)
        if options.get("compression") not in COMPRESSIONS:
            raise ModeError(f"compression {options['compression']!r} is not one of None, 'gzip', 'lzf'")
        if options.get("layout", "auto") not in LAYOUTS:
            raise ModeError(f"layout {options['layout']!r} is not one of {', '.join(LAYOUTS)}")

    # -- file handle -----------------------------------------------------------------

    def _create(self) -> None:
        self._open()
        self._file.attrs["compression"] = str(self.options["compression"])
        self._set_layout("pending")

    def _open(self) -> None:
        self._inherited = getattr(self, "_file", None)  # a forked child must not close the parent's handle
        if self.mode == "r":
            file_mode = "r"
        else:
            file_mode = "r+" if (self.path / FILE_NAME).exists() else "w-"
        cache_bytes = COMPRESSED_CACHE_BYTES if self.options["compression"] else 0
        try:
            self._file = h5py.File(
                self.path / FILE_NAME, file_mode, rdcc_nbytes=cache_bytes, rdcc_nslots=10007, locking=False
            )
        except FileNotFoundError:
            raise CorruptDataError(f"{self.path / FILE_NAME} is missing; write the store again with mode 'w'") from None
        except OSError as error:
            if file_mode != "r" and (is_read_only(error) or is_disk_full(error)):
                raise
            raise CorruptDataError(
                f"{self.path / FILE_NAME} is not a readable HDF5 file ({error}); restore it from a copy, "
                "or write the store again"
            ) from None

        self._read_cache: dict[str, np.ndarray | h5py.Dataset] = {}
        self._layout = str(self._file.attrs.get("layout", "pending"))
        self._reserved_until = 0
        if self.mode == "r" and self._layout != "pending":
            for name in self._datasets()[1:]:  # labels (and shapes): what was committed when it opened
                self._cached(name)
            if self._layout == "uniform" and self._chunk_offsets() is not None:
                self._raw_descriptor()  # the file opened now stays the one read, whatever is put at its path later

    def _stored_count(self) -> int:
        """Rows of the datasets; images and labels of different lengths are a damaged file."""
        if self.layout == "pending":
            return 0
        rows = {name: self._file[name].shape[0] for name in self._datasets()}
        if len(set(rows.values())) > 1:
            raise CorruptDataError(f"{self.path / FILE_NAME} is damaged: its datasets have {rows} rows")
        return rows["images"]

    def _damage_location(self, start: int, stop: int) -> str:
        return f"in {FILE_NAME}"

    def _close(self) -> None:
        raw = self._read_cache.pop("raw_fd", None)
        if raw is not None:
            os.close(raw)
        try:
            self._file.close()
        finally:
            self._give_back_reserved()

    def _reserve_space(self, nbytes: int) -> None:
        """Set aside the blocks a batch of ``nbytes`` will take after the file's end (see :mod:`storage.disk_space`).

        HDF5 that runs out of space midway is left unable to flush or even close its file, so
        a compressed batch reserves its uncompressed size too: it needs that much free space
        while it is written, and gives back what the compressed images did not use.
        """
        descriptor = os.open(self.path / FILE_NAME, os.O_RDWR)
        try:
            self._reserved_until = max(
                self._reserved_until, disk_space.reserve_after_end(descriptor, nbytes + nbytes // 16 + 2**20)
            )
        finally:
            os.close(descriptor)

    def _give_back_reserved(self) -> None:
        if self._reserved_until and self.mode != "r":
            descriptor = os.open(self.path / FILE_NAME, os.O_RDWR)
            try:
                disk_space.release_after_end(descriptor, self._reserved_until)
            finally:
                os.close(descriptor)
            self._reserved_until = 0

    def _cached(self, name: str):
        """Dataset handles (and, read-only, the labels and shapes arrays).

        h5py lookups by name cost tens of microseconds each: more than reading one image.
        """
        if name not in self._read_cache:
            dataset = self._file[name]
            self._read_cache[name] = dataset[()] if name != "images" and self.mode == "r" else dataset
        return self._read_cache[name]

    @property
    def layout(self) -> str:
        """ "uniform", "variable", or "pending" until the first write decides."""
        return self._layout

    def _set_layout(self, layout: str) -> None:
        self._file.attrs["layout"] = layout
        self._layout = layout
        self._read_cache.clear()

    # -- writing ---------------------------------------------------------------------

    def _begin_write(self, first_id: int, batch: ImageBatch) -> None:
        self._reserve_space(batch.nbytes)
        if self.layout == "pending":
            self._make_datasets(batch)
        elif self.layout == "uniform" and batch.uniform_shape != tuple(self._cached("images").shape[1:]):
            if self.options["layout"] != "auto":
                raise ImageShapeError(
                    f"this HDF5 store holds {tuple(self._cached('images').shape[1:])} images and got "
                    f"{'mixed sizes' if not batch.is_uniform else batch.uniform_shape}; "
                    "create the store with layout='variable' (or 'auto') to mix sizes"
                )
            self._convert_to_variable_layout()
        super()._begin_write(first_id, batch)
        new_size = first_id + len(batch)
        for name in self._datasets():
            self._cached(name).resize(new_size, axis=0)

    def _convert_to_variable_layout(self) -> None:
        """Rewrite a uniform store in the variable layout, when images of another size arrive."""
        uniform = self._cached("images")
        count = uniform.shape[0]
        flat, shapes = self._create_variable_datasets("images_variable", count)
        for start in range(0, count, 1024):
            self._write_variable_rows(flat, shapes, uniform[start : start + 1024], start)
        self._read_cache.clear()
        del self._file["images"]
        self._file.move("images_variable", "images")
        self._set_layout("variable")

    def _filter_options(self) -> dict:
        return {"compression": self.options["compression"], "compression_opts": self.options["compression_opts"]}

    def _create_variable_datasets(self, images_name: str, count: int) -> tuple[h5py.Dataset, h5py.Dataset]:
        """A variable-length uint8 row per image, and its (height, width, channels) in ``shapes``."""
        rows = self.options["chunk_images"] or 64
        flat = self._file.create_dataset(
            images_name, (count,), h5py.vlen_dtype(np.uint8), maxshape=(None,), chunks=(rows,), **self._filter_options()
        )
        shapes = self._file.create_dataset("shapes", (count, 3), np.int32, maxshape=(None, 3), chunks=(4096, 3))
        return flat, shapes

    @staticmethod
    def _write_variable_rows(flat: h5py.Dataset, shapes: h5py.Dataset, images, first_id: int) -> None:
        stop = first_id + len(images)
        rows = np.empty(len(images), dtype=object)
        image_shapes = np.zeros((len(images), 3), dtype=np.int32)
        for index, image in enumerate(images):
            rows[index] = image.reshape(-1)
            image_shapes[index, : image.ndim] = image.shape
        # write_direct: h5py's setitem tries to broadcast rows of equal length as a 2-D array
        flat.write_direct(rows, dest_sel=np.s_[first_id:stop])
        shapes[first_id:stop] = image_shapes

    def _make_datasets(self, batch: ImageBatch) -> None:
        layout = self.options["layout"]
        if layout == "auto":
            layout = "uniform" if batch.is_uniform else "variable"
        if layout == "uniform":
            if not batch.is_uniform:
                raise ImageShapeError("layout='uniform' needs images of one size; use layout='variable' to mix sizes")
            shape = batch.uniform_shape
            rows = chunk_rows(shape, self.options["chunk_images"], bool(self.options["compression"]))
            if not self.options["chunk_images"]:  # a small first write: small chunks, not 1 MiB for 10 images
                rows = min(rows, max(16, 1 << (len(batch) - 1).bit_length()))
            # Every row is written before the dataset grows past it, so no fill pass is needed.
            self._file.create_dataset(
                "images",
                (0, *shape),
                np.uint8,
                maxshape=(None, *shape),
                chunks=(rows, *shape),
                fill_time="never",
                **self._filter_options(),
            )
        else:
            self._create_variable_datasets("images", 0)
        self._file.create_dataset("labels", (0,), np.int64, maxshape=(None,), chunks=(4096,))
        self._set_layout(layout)

    def _chunk_length(self, batch: ImageBatch) -> int:
        """Stream whole dataset chunks, so HDF5 writes them without reading them back first."""
        step = super()._chunk_length(batch)
        if self.layout != "uniform":
            return step
        rows = self._cached("images").chunks[0]
        return max(rows, step // rows * rows)

    def _datasets(self) -> list[str]:
        return ["images", "labels"] + (["shapes"] if self.layout == "variable" else [])

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        stop = first_id + len(labels)
        self._cached("labels")[first_id:stop] = labels
        if self.layout == "uniform":
            self._cached("images")[first_id:stop] = images
            return
        self._write_variable_rows(self._cached("images"), self._cached("shapes"), images, first_id)

    def _commit(self, count: int) -> None:
        self._file.flush()
        self._give_back_reserved()

    def _commit_one(self, count: int) -> None:
        """One image at a time: no flush per image; close() or flush() makes them durable."""

    def _rollback(self, count: int) -> None:
        if self.layout == "pending":
            return
        for name in self._datasets():
            if self._cached(name).shape[0] > count:
                self._cached(name).resize(count, axis=0)
        if count == 0 and self.options["layout"] == "auto":
            self._read_cache.clear()
            for name in self._datasets():
                del self._file[name]
            self._set_layout("pending")
        self._file.flush()
        self._give_back_reserved()

    # -- reading ---------------------------------------------------------------------

    def _image_shape(self, image_id: int) -> Shape:
        height, width, channels = self._cached("shapes")[image_id].tolist()
        return (height, width) if channels == 0 else (height, width, channels)

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        label = int(self._cached("labels")[image_id])
        image = self._cached("images")[image_id]
        if self.layout == "uniform":
            return image, label
        return image.reshape(self._image_shape(image_id)), label

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        if self.layout == "variable":
            return super()._read_many(ids, out)
        images = self._cached("images")
        labels_dataset = self._cached("labels")
        if out is None:
            out = np.empty((len(ids), *images.shape[1:]), dtype=np.uint8)
        offsets = self._chunk_offsets()
        if len(ids) and ids[-1] - ids[0] == len(ids) - 1 and np.all(np.diff(ids) == 1):
            start, stop = int(ids[0]), int(ids[-1]) + 1
            if offsets is not None and out.flags.c_contiguous:
                self._pread_range(start, stop, offsets, out)
            else:
                images.read_direct(out, np.s_[start:stop])
            return out, labels_dataset[start:stop]
        if offsets is not None and len(ids) and out.flags.c_contiguous:
            self._pread_images(ids, offsets, out)
            return out, self._labels_for(ids)
        for index, image_id in enumerate(ids.tolist()):
            images.read_direct(out, np.s_[image_id], np.s_[index])
        return out, self._labels_for(ids)

    def _chunk_offsets(self) -> np.ndarray | None:
        """Byte offset in the file of each chunk of images, when images can be read directly.

        Only for read-only stores whose images dataset is chunked, unfiltered (no
        compression) and fully allocated; None otherwise (h5py reads them then).
        """
        if "chunk_offsets" not in self._read_cache:
            self._read_cache["chunk_offsets"] = None
            images = self._cached("images")
            if self.mode == "r" and images.chunks and images.id.get_create_plist().get_nfilters() == 0:
                self._read_cache["chunk_offsets"] = self._chunk_table(images)
        return self._read_cache["chunk_offsets"]

    @staticmethod
    def _chunk_table(images: h5py.Dataset) -> np.ndarray | None:
        rows = images.chunks[0]
        chunk_bytes = rows * int(np.prod(images.shape[1:]))
        expected = -(-images.shape[0] // rows)
        dataset = images.id
        if dataset.get_num_chunks() != expected:
            return None
        chunks: list = []
        if hasattr(dataset, "chunk_iter"):  # one pass over HDF5's chunk index
            dataset.chunk_iter(chunks.append)
        else:  # pragma: no cover - older h5py
            chunks = [dataset.get_chunk_info(index) for index in range(expected)]
        offsets = np.full(expected, -1, dtype=np.int64)
        for info in chunks:
            if info.size != chunk_bytes or info.filter_mask != 0 or info.chunk_offset[0] // rows >= expected:
                return None
            offsets[info.chunk_offset[0] // rows] = info.byte_offset
        return offsets if (offsets >= 0).all() else None

    def _pread_range(self, start: int, stop: int, offsets: np.ndarray, out: np.ndarray) -> None:
        """Images ``start``..``stop``, chunk by chunk, one ``preadv`` each, straight into ``out``."""
        raw = self._raw_descriptor()
        rows = self._cached("images").chunks[0]
        image_bytes = out[0].nbytes
        flat = memoryview(out.reshape(-1))
        for chunk in range(start // rows, (stop - 1) // rows + 1):
            low, high = max(start, chunk * rows), min(stop, (chunk + 1) * rows)
            target = flat[(low - start) * image_bytes : (high - start) * image_bytes]
            position = int(offsets[chunk]) + (low - chunk * rows) * image_bytes
            if os.preadv(raw, [target], position) != len(target):
                raise CorruptDataError(
                    f"{self.path / FILE_NAME} is shorter than its chunk index says; write the store again with mode 'w'"
                )

    def _raw_descriptor(self) -> int:
        if "raw_fd" not in self._read_cache:
            self._read_cache["raw_fd"] = os.open(self.path / FILE_NAME, os.O_RDONLY)
        return self._read_cache["raw_fd"]

    def _pread_images(self, ids: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
        """One positional read per image, straight into ``out``."""
        raw = self._raw_descriptor()
        rows = self._cached("images").chunks[0]
        image_bytes = out[0].nbytes
        positions = (offsets[ids // rows] + (ids % rows) * image_bytes).tolist()
        flat = out.reshape(len(ids), image_bytes)
        for index, position in enumerate(positions):
            if os.preadv(raw, [flat[index]], position) != image_bytes:
                raise CorruptDataError(
                    f"{self.path / FILE_NAME} is shorter than its chunk index says; write the store again with mode 'w'"
                )

    def _labels_for(self, ids: np.ndarray) -> np.ndarray:
        """Labels of arbitrary ids (h5py point selections must be increasing and unique)."""
        labels = self._cached("labels")
        if isinstance(labels, np.ndarray) or len(ids) > 256:
            return labels[()][ids]
        unique_ids, positions = np.unique(ids, return_inverse=True)
        return labels[unique_ids][positions]
