"""What a store writes and reads when it keeps encoded bytes instead of pixels.

A store opened with ``encoding="source"`` (or ``"png"``, ``"jpeg:90"``, ``"webp"``...)
hands its backend one byte string per image instead of pixels. Every backend that holds
images of mixed sizes already stores a variable-length run of uint8 per image with its
shape, so the bytes travel to it as a 2-D uint8 array of one row, ``(1, len)``, through
the backend's ordinary write and read hooks: LMDB keeps them in its records, HDF5 in
variable-length rows, the NumPy store end to end in its data file with their offsets.
A backend with a native place for encoded images (WebDataset's ``.jpg`` members) reads
and writes them itself (:meth:`~storage.base.ImageStore._write_encoded_chunk`).

:class:`BlobBatch` is the batch the backend sees: the caller's images, encoded one chunk
at a time (on the worker pool when there is work to do), so memory stays bounded as for
pixels. :func:`decode_blobs` turns what the backend gives back into pixels, in the shape
each image was written in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from . import encodings, parallel
from .batch import ImageBatch, Shape, image_channels, make_batch, stack_if_uniform
from .encodings import EncodedImage, Encoding
from .errors import EncodingError
from .reading import converts_to_storage_error, damaged_store_error

DECODE_ON_POOL_FROM = 16  # images in a read before decoding them is spread over the pool
CODEC_TASK_IMAGES = 8  # images per pool task


def _codec_on_pool(function, items: list, *arguments) -> list:
    """``function(part, *arguments)`` over parts of ``items`` on the worker pool, results in order."""
    if len(items) < DECODE_ON_POOL_FROM:
        return function(items, *arguments)
    ranges = parallel.split_ranges(len(items), parallel.worker_count(), CODEC_TASK_IMAGES)
    return [
        result
        for part in parallel.run_tasks(function, [(items[a:b], *arguments) for a, b in ranges])
        for result in part
    ]


def encode_pixel_list(images: Sequence[np.ndarray], encoding: Encoding) -> list[EncodedImage]:
    """A pool task: pixels encoded as ``encoding`` says."""
    from . import image_codec  # Pillow, imported when a store first encodes (import storage stays fast)

    return [image_codec.encoded_image(image, encoding) for image in images]


def decode_blob_list(blobs: Sequence[bytes | np.ndarray]) -> list[np.ndarray]:
    """A pool task: encoded images (bytes, or the ``(1, len)`` arrays backends give) decoded."""
    from . import image_codec

    return [image_codec.decode(memoryview(blob).cast("B") if isinstance(blob, np.ndarray) else blob) for blob in blobs]


def decode_blobs(blobs: Sequence[bytes | np.ndarray]) -> list[np.ndarray]:
    """Decode what a backend read back; big reads are decoded on the worker pool."""
    return _codec_on_pool(decode_blob_list, list(blobs))


def as_blob(item: EncodedImage) -> np.ndarray:
    """An encoded image as the ``(1, len)`` uint8 array a backend stores like a 2-D image."""
    return np.frombuffer(item.data, dtype=np.uint8)[np.newaxis]


def blob_bytes(blob: np.ndarray | bytes | memoryview) -> bytes:
    """The bytes of a blob a backend gave back."""
    return blob.tobytes() if isinstance(blob, np.ndarray) else bytes(blob)


def check_source_encodable(encoding: Encoding, images: object, what: str = "these images") -> None:
    """Refuse ``encoding="source"`` for images that have no source files (pixels, CIFAR-10 arrays)."""
    if encoding.name == encodings.SOURCE and not hasattr(images, "encoded_chunk"):
        raise EncodingError(
            f"{what} are pixels with no encoded files to keep (encoding 'source', --keep-encoded, keeps each "
            "source file's bytes, as for a folder of photos); choose a re-encoding instead: 'png', 'jpeg:90' or "
            "'webp', or 'raw' for the pixels themselves"
        )


class BlobBatch:
    """The caller's batch as the backend of an encoded store writes it: one byte string per image.

    It quacks like :class:`~storage.batch.ImageBatch` (``labels``, ``chunk``, ``shapes``,
    ``nbytes``, never uniform), so backends write it with their mixed-size code. Images
    that carry their encoded form (a folder listing, :class:`~storage.image_codec.EncodedImages`)
    give it per chunk; pixels are encoded per chunk, on the pool. ``encoded_chunk`` gives
    the :class:`~storage.encodings.EncodedImage` items themselves, for backends that store
    them natively.
    """

    uniform_shape: Shape | None = None
    is_uniform = False

    def __init__(self, batch: ImageBatch, encoding: Encoding) -> None:
        check_source_encodable(encoding, batch.images)
        self.batch = batch
        self.labels = batch.labels
        self.encoding = encoding
        self.decoded_nbytes = batch.nbytes
        self._estimates = self._size_estimates()

    def __len__(self) -> int:
        return len(self.batch)

    def _size_estimates(self) -> np.ndarray | None:
        """Each image's bytes where the source knows them (kept files), else None (decoded size)."""
        sizes = getattr(self.batch.images, "source_sizes", None)
        return sizes() if self.encoding.name == encodings.SOURCE and callable(sizes) else None

    @property
    def nbytes(self) -> int:
        """The bytes the backend will write: the files' when kept, at most the pixels' otherwise."""
        return int(self._estimates.sum()) if self._estimates is not None else self.decoded_nbytes

    def shapes(self, start: int, stop: int) -> list[Shape]:
        """The ``(1, len)`` shape of each blob, ``len`` estimated where it is not known before encoding."""
        if self._estimates is not None:
            return [(1, int(size)) for size in self._estimates[start:stop]]
        return [(1, int(np.prod(shape))) for shape in self.batch.shapes(start, stop)]

    def encoded_chunk(self, start: int, stop: int) -> list[EncodedImage]:
        images = self.batch.images
        if hasattr(images, "encoded_chunk"):
            return images.encoded_chunk(start, stop, self.encoding)
        return _codec_on_pool(encode_pixel_list, list(self.batch.chunk(start, stop)), self.encoding)

    def chunk(self, start: int, stop: int) -> list[np.ndarray]:
        return [as_blob(item) for item in self.encoded_chunk(start, stop)]

    def decoded_shapes(self, start: int, stop: int) -> list[Shape]:
        return self.batch.shapes(start, stop)


class ResizedImages(Sequence):
    """Pixels resized as a store's ``max_side``/``shorter_side`` say, lazily, chunk by chunk."""

    def __init__(self, batch: ImageBatch, max_side: int | None, shorter_side: int | None) -> None:
        self.batch = batch
        self.max_side, self.shorter_side = max_side, shorter_side

    def __len__(self) -> int:
        return len(self.batch)

    def image_shape(self, index: int) -> Shape:
        shape = self.batch.shapes(index, index + 1)[0]
        width, height = encodings.resized_size(shape[1], shape[0], self.max_side, self.shorter_side)
        return (height, width, *shape[2:])

    def distinct_shapes(self) -> set[Shape]:
        return (
            {self.image_shape(index) for index in range(len(self))}
            if not self.batch.is_uniform
            else {self.image_shape(0)}
        )

    @property
    def nbytes(self) -> int:
        if self.batch.is_uniform:
            return len(self) * int(np.prod(self.image_shape(0)))
        return sum(int(np.prod(self.image_shape(index))) for index in range(len(self)))

    def chunk(self, start: int, stop: int) -> list[np.ndarray]:
        from . import image_codec

        return [
            image_codec.resize_pixels(image, self.max_side, self.shorter_side)
            for image in self.batch.chunk(start, stop)
        ]

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self.chunk(*index.indices(len(self))[:2])
        return self.chunk(index, index + 1)[0]


# -- the store side --------------------------------------------------------------------

STORE_OPTIONS: dict[str, Any] = {"max_side": None, "shorter_side": None}
"""Options every store takes: resizing at write time (see :mod:`storage.encodings`)."""
ENCODING_OPTION = "encoding"


class EncodingMixin:
    """How an :class:`~storage.base.ImageStore` writes and reads under its ``encoding`` and resize options.

    A raw store (the default) is untouched: its reads are the backend's own. An encoded
    store puts a decoding step over the backend's reads when it opens (instance attributes
    over ``read_one`` and ``_read_many``, so a raw store's hot path pays nothing).
    """

    keeps_encoded: ClassVar[bool | None] = None
    """Whether the backend can hold encoded bytes (``encoding`` option); None: if it holds mixed sizes."""

    @classmethod
    def takes_encodings(cls) -> bool:
        if cls.keeps_encoded is not None:
            return cls.keeps_encoded
        return cls.info.variable_shapes and not cls.info.one_file_per_image

    @classmethod
    def accepted_options(cls) -> dict[str, Any]:
        """Every option this backend's stores take, with its default."""
        extra = {ENCODING_OPTION: encodings.RAW} if cls.takes_encodings() else {}
        return {**STORE_OPTIONS, **extra, **cls.default_options}

    def _check_storage_options(self, options: dict[str, Any]) -> None:
        for name in STORE_OPTIONS:
            encodings.check_side(options.get(name), name)
        if ENCODING_OPTION in options:
            encodings.parse_encoding(options[ENCODING_OPTION])

    def _install_encoding(self) -> None:
        """Read the store's options: its encoding (decoding reads when not raw) and its resizing."""
        encoding = encodings.parse_encoding(self.options.get(ENCODING_OPTION, encodings.RAW))
        self.encoding = encoding
        self._encoding = None if encoding.keeps_pixels else encoding
        self._resize = (self.options.get("max_side"), self.options.get("shorter_side"))
        if self._encoding is not None:
            self.read_one = self._read_one_decoded
            self._read_many = self._read_many_decoded
        if any(side is not None for side in self._resize):
            self.backend_state.setdefault("resize_filter", encodings.RESAMPLING_FILTER)

    @property
    def transforms_images(self) -> bool:
        """Whether what the backend writes differs from the caller's pixels (encoded or resized)."""
        return self._encoding is not None or any(side is not None for side in self._resize)

    @property
    def lossless(self) -> bool:
        """Whether the store gives back exactly the pixels written, as they are after resizing.

        Kept bytes are exact, but a photo that had to be resized is encoded again (JPEG at
        quality 90 for a JPEG), so a resizing ``"source"`` store counts as lossy.
        """
        resized_again = self.encoding.name == encodings.SOURCE and any(side is not None for side in self._resize)
        return self.info.lossless and self.encoding.lossless and not resized_again

    # -- writing -----------------------------------------------------------------------

    def _resized_batch(self, batch: ImageBatch) -> ImageBatch:
        """``batch`` resized as the store's options say (lazily); itself when they say nothing."""
        max_side, shorter_side = self._resize
        if max_side is None and shorter_side is None:
            return batch
        images = batch.images
        if hasattr(images, "resized"):  # a folder listing or encoded bytes resize from their files
            resized = images.resized(max_side, shorter_side)
        else:
            resized = ResizedImages(batch, max_side, shorter_side)
        return make_batch(resized, batch.labels)

    def _stored_batch(self, batch: ImageBatch) -> ImageBatch | BlobBatch:
        """What the backend writes for ``batch``: the batch itself, or its encoded bytes."""
        if self._encoding is None:
            return batch
        if self._encoding.name == "jpeg" and any(image_channels(shape) == 4 for shape in _distinct_shapes(batch)):
            raise EncodingError(
                f"JPEG has no alpha channel and these images are RGBA; store them with encoding 'png', 'webp' "
                f"or 'source', not {self._encoding}"
            )
        return BlobBatch(batch, self._encoding)

    def _write_stored_chunk(self, stored: ImageBatch | BlobBatch, start: int, stop: int, first_id: int) -> None:
        """Write images ``start``..``stop`` of what the backend stores, at ids ``first_id``.., and hash them
        as the backend was handed them (:mod:`storage.integrity`)."""
        labels = stored.labels[start:stop]
        if isinstance(stored, BlobBatch) and type(self)._write_encoded_chunk is not EncodingMixin._write_encoded_chunk:
            items = stored.encoded_chunk(start, stop)
            self._write_encoded_chunk(items, labels, first_id)
            self._checksum_chunk([item.data for item in items], labels, first_id)
        else:
            chunk = stored.chunk(start, stop)
            self._write_chunk(chunk, labels, first_id)
            self._checksum_chunk(chunk, labels, first_id)

    def _write_encoded_chunk(self, items: list[EncodedImage], labels: np.ndarray, first_id: int) -> None:
        """Write encoded images natively; by default they go to ``_write_chunk`` as ``(1, len)`` arrays."""
        self._write_chunk([as_blob(item) for item in items], labels, first_id)

    def _note_decoded_shapes(self, batch: ImageBatch) -> None:
        """Track the one shape the images of an encoded store decode to, if they share one."""
        if self._encoding is None:
            return
        state = self.backend_state
        if self._count == 0 and batch.is_uniform:
            state["decoded_shape"] = list(batch.uniform_shape)
        elif not batch.is_uniform or list(batch.uniform_shape) != state.get("decoded_shape"):
            state["decoded_shape"] = None

    # -- reading -----------------------------------------------------------------------

    def read_encoded(self, ids: Iterable[int] | np.ndarray) -> tuple[list[bytes], list[str], np.ndarray]:
        """The stored bytes of images ``ids``, the name of each one's format, and their labels.

        For a store written with ``encoding="source"`` these are the source files' bytes
        exactly (``"jpeg"``, ``"png"``...); with a re-encoding, the bytes this library wrote.
        """
        if self._encoding is None:
            raise EncodingError(
                f"the store at {self.path} keeps decoded pixels (encoding 'raw'); read_encoded needs a store "
                "written with encoding='source' or a re-encoding such as 'png'"
            )
        self._ensure_process()
        id_array = self._checked_ids(ids)
        if id_array.size and id_array.max() >= self._count:
            self._settle_pending()
        if not id_array.size:
            return [], [], np.empty(0, dtype=np.int64)
        try:
            blobs, labels = self._read_encoded_many(id_array)
        except Exception as error:
            if not converts_to_storage_error(error):
                raise
            raise damaged_store_error(self.path, error, f"reading the bytes of {len(id_array):,} images") from error
        data = [blob_bytes(blob) for blob in blobs]
        return data, [encodings.sniff_format(item) for item in data], labels

    def _read_encoded_one(self, image_id: int) -> tuple[np.ndarray | bytes, int]:
        """One stored blob (id checked); backends with a native layout override the pair."""
        return type(self)._read_one(self, image_id)

    def _read_encoded_many(self, ids: np.ndarray) -> tuple[list[np.ndarray | bytes], np.ndarray]:
        blobs, labels = type(self)._read_many(self, ids, None)
        return list(blobs), labels

    def _read_one_decoded(self, image_id: int, verify: bool = False) -> tuple[np.ndarray, int]:
        if verify:
            return self._read_one_verified(image_id)
        self._ensure_process()
        image_id = self._check_id(image_id)
        if image_id >= self._count:
            return self._read_pending(image_id)
        try:
            blob, label = self._read_encoded_one(image_id)
            return self._in_store_shape(decode_blob_list([blob])[0]), label
        except Exception as error:
            if not converts_to_storage_error(error):
                raise
            raise damaged_store_error(self.path, error, f"reading image {image_id}") from error

    def _read_many_decoded(self, ids: np.ndarray, out: np.ndarray | None):
        blobs, labels = self._read_encoded_many(ids)
        images = [self._in_store_shape(image) for image in decode_blobs(blobs)]
        return stack_if_uniform(images, out, self.uniform_shape), labels

    def _in_store_shape(self, pixels: np.ndarray) -> np.ndarray:
        shape = self.uniform_shape
        return encodings.shaped(pixels, shape) if shape is not None else pixels


def _distinct_shapes(batch: ImageBatch) -> set[Shape]:
    if batch.is_uniform:
        return {batch.uniform_shape}
    images = batch.images
    if hasattr(images, "distinct_shapes"):
        return images.distinct_shapes()
    return set(batch.shapes(0, len(batch)))
