"""Validation of what callers hand to ``write_batch`` and ``write_one``.

All checks run before a single byte is written, so a bad image at position 900,000 of a
batch is reported without leaving 899,999 images half-stored. The checks only look at
dtypes and shapes: they copy no pixels, so a large batch costs no extra memory here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .cycled import CycledImages
from .errors import EmptyBatchError, ImageShapeError, ImageTypeError, LabelError

ALLOWED_CHANNELS = (1, 3, 4)
IMAGE_SHAPE_HINT = (
    "pass an array (N,H,W) or (N,H,W,C) of uint8 with C = 1, 3 or 4, or a sequence of (H,W) / (H,W,C) uint8 arrays"
)
Shape = tuple[int, ...]


def image_channels(shape: Shape) -> int:
    """The channel count of an image of ``shape``: (H,W) and (H,W,1) both count as 1."""
    return shape[2] if len(shape) == 3 else 1


def check_image(image: object, where: str = "image") -> np.ndarray:
    """Return ``image`` if it is one valid uint8 image of shape (H,W) or (H,W,C)."""
    if not isinstance(image, np.ndarray):
        raise ImageTypeError(
            f"{where} is a {type(image).__name__}, not a NumPy array; convert it with numpy.asarray(image)"
        )
    if image.dtype != np.uint8:
        raise ImageTypeError(
            f"{where} has dtype {image.dtype}; images must be uint8 (scale to 0..255 and use .astype(numpy.uint8))"
        )
    check_image_shape(image.shape, where)
    return image


def check_label(label: object, where: str = "label") -> int:
    """Return ``label`` as a Python int, refusing floats, bools and strings."""
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise LabelError(f"{where} is {label!r} ({type(label).__name__}); labels must be integers")
    value = int(label)
    if not -(2**63) <= value < 2**63:
        raise LabelError(f"{where} is {value}; labels must fit in a signed 64-bit integer")
    return value


def check_labels(labels: object, count: int) -> np.ndarray:
    """Return ``labels`` as an int64 array of length ``count``."""
    if isinstance(labels, (str, bytes)):
        raise LabelError("labels is a string; pass a sequence of integers, one per image")
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError) as error:
        raise LabelError(f"labels could not be read as integers ({error})") from None
    if array.ndim != 1:
        raise LabelError(f"labels have shape {array.shape}; pass a flat sequence of {count} integers")
    if len(array) != count:
        raise LabelError(f"got {len(array)} labels for {count} images; pass exactly one label per image")
    if array.dtype.kind == "b" or (array.dtype.kind not in "iu" and count > 0):
        raise LabelError(f"labels have dtype {array.dtype}; labels must be integers")
    if array.dtype == np.uint64 and count and array.max() >= 2**63:
        raise LabelError("a label does not fit in a signed 64-bit integer")
    return array.astype(np.int64, copy=False)


@runtime_checkable
class ChunkedImages(Protocol):
    """A sequence of images that knows every shape without decoding, and decodes a range at once.

    :class:`storage.datasets.FolderImages` is one: a folder of photos listed from the
    files' headers. ``write_batch`` checks it from the shapes alone and asks for one chunk
    at a time, so the photos are never all in memory.
    """

    nbytes: int

    def __len__(self) -> int: ...

    def image_shape(self, index: int) -> Shape: ...

    def distinct_shapes(self) -> set[Shape]: ...

    def chunk(self, start: int, stop: int) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class ImageBatch:
    """A validated batch: either one uniform array or a sequence of arrays, plus labels.

    ``chunk(start, stop)`` hands a backend a bounded slice to write; for a uniform
    sequence it stacks just that slice, so memory stays bounded whatever the batch size.
    """

    images: np.ndarray | Sequence[np.ndarray]
    labels: np.ndarray
    uniform_shape: Shape | None
    nbytes: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_uniform(self) -> bool:
        return self.uniform_shape is not None

    def chunk(self, start: int, stop: int) -> np.ndarray | list[np.ndarray]:
        """Images ``start``..``stop``: an (n,H,W[,C]) array if uniform, else a list."""
        if isinstance(self.images, (np.ndarray, CycledImages)):
            return self.images[start:stop]
        if isinstance(self.images, ChunkedImages):
            part = self.images.chunk(start, stop)
            return np.stack(part) if self.uniform_shape is not None else part
        part = [self.images[i] for i in range(start, stop)]
        if self.uniform_shape is not None:
            return np.stack(part)
        return part

    def shapes(self, start: int, stop: int) -> list[Shape]:
        """The shape of each image ``start``..``stop``."""
        if self.uniform_shape is not None:
            return [self.uniform_shape] * (stop - start)
        if isinstance(self.images, ChunkedImages):
            return [tuple(self.images.image_shape(i)) for i in range(start, stop)]
        return [tuple(self.images[i].shape) for i in range(start, stop)]


def bounded_runs(sizes: Iterable[int], most_items: int, most_bytes: int) -> list[tuple[int, int]]:
    """Consecutive positions of items of ``sizes`` bytes, cut into runs ``(start, stop)`` of at most
    ``most_items`` items and ``most_bytes`` bytes (an item bigger than that is a run alone).

    Photos of many sizes are read, decoded and checked in such runs: cut by the average size,
    a run that falls on large photos in a row holds many times what was meant.
    """
    runs, start, held, count = [], 0, 0, 0
    for count, size in enumerate(sizes, start=1):
        position = count - 1
        if position > start and (position - start >= most_items or held + size > most_bytes):
            runs.append((start, position))
            start, held = position, 0
        held += size
    if count > start:
        runs.append((start, count))
    return runs


def make_batch(images: object, labels: object) -> ImageBatch:
    """Validate ``images`` and ``labels`` as given to ``write_batch``."""
    if isinstance(images, np.ndarray):
        return _batch_from_array(images, labels)
    if isinstance(images, CycledImages):  # one source array repeated: checked once, like an array
        check_image(images.first, "each image")
        return ImageBatch(images, check_labels(labels, len(images)), tuple(images.shape[1:]), images.nbytes)
    if isinstance(images, ChunkedImages):
        return _batch_from_chunked(images, labels)
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise ImageTypeError(f"images is a {type(images).__name__}; {IMAGE_SHAPE_HINT}")
    if len(images) == 0:
        raise EmptyBatchError("the batch holds no images; pass at least one image")
    shapes = set()
    nbytes = 0
    for index, image in enumerate(images):
        check_image(image, f"image {index} of the batch")
        shapes.add(image.shape)
        nbytes += image.nbytes
    label_array = check_labels(labels, len(images))
    uniform = next(iter(shapes)) if len(shapes) == 1 else None
    return ImageBatch(images, label_array, uniform, nbytes)


def _batch_from_array(images: np.ndarray, labels: object) -> ImageBatch:
    if images.dtype != np.uint8:
        raise ImageTypeError(
            f"images have dtype {images.dtype}; images must be uint8 (scale to 0..255 and use .astype(numpy.uint8))"
        )
    if images.ndim not in (3, 4):
        raise ImageShapeError(f"images have shape {images.shape}; {IMAGE_SHAPE_HINT}")
    if len(images) == 0:
        raise EmptyBatchError("the batch holds no images; pass at least one image")
    check_image(images[0], "each image")
    label_array = check_labels(labels, len(images))
    return ImageBatch(images, label_array, tuple(images.shape[1:]), images.nbytes)


def _batch_from_chunked(images: ChunkedImages, labels: object) -> ImageBatch:
    """Check a :class:`ChunkedImages` from its shapes alone: nothing is decoded here."""
    if len(images) == 0:
        raise EmptyBatchError("the batch holds no images; pass at least one image")
    shapes = images.distinct_shapes()
    for shape in shapes:
        check_image_shape(shape, "each image")
    label_array = check_labels(labels, len(images))
    uniform = next(iter(shapes)) if len(shapes) == 1 else None
    return ImageBatch(images, label_array, uniform, images.nbytes)


def check_image_shape(shape: Shape, where: str = "image") -> None:
    """The shape checks of :func:`check_image`, for an image known by its shape only."""
    if len(shape) not in (2, 3):
        raise ImageShapeError(f"{where} has shape {shape}; {IMAGE_SHAPE_HINT}")
    if len(shape) == 3 and shape[2] not in ALLOWED_CHANNELS:
        raise ImageShapeError(f"{where} has {shape[2]} channels (shape {shape}); use 1 (gray), 3 (RGB) or 4 (RGBA)")
    if shape[0] == 0 or shape[1] == 0:
        raise ImageShapeError(f"{where} has shape {shape}; images must be at least 1x1")


def stack_if_uniform(
    images: list[np.ndarray], out: np.ndarray | None = None, uniform_shape: Shape | None = None
) -> np.ndarray | list[np.ndarray]:
    """Return one stacked array when all images share a shape, else the list itself."""
    if not images:
        return np.empty((0, *(uniform_shape or ())), dtype=np.uint8)
    first = images[0].shape
    if any(image.shape != first for image in images):
        return images
    if out is None:
        return np.stack(images)
    for index, image in enumerate(images):
        out[index] = image
    return out
