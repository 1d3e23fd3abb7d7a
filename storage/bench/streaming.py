"""Bounded memory for big counts: the cycled source, the read-back buffer and verification in pieces.

A run of 1,000,000 CIFAR images used to hold the source cycled to a new 3 GB array, a
3 GB read-back buffer and the store's pages at once. Above ``STREAM_ABOVE_BYTES`` of
pixels the engine instead keeps the source as a :class:`~storage.cycled.CycledImages`
(the source array itself, no copy), reads ``read_all`` back slice by slice into one
reused, pre-touched buffer, and checks each slice against the source outside the timer.
Below it nothing changes, so runs of up to about 170,000 CIFAR images are measured exactly
as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import datasets
from ..batch import check_labels
from ..cycled import CycledImages
from ..encodings import resized_size

STREAM_ABOVE_BYTES = 512 * 2**20
READ_BUFFER_IMAGES = 65_536  # the largest read_all slice the engine reads at once
READ_BUFFER_BYTES = 256 * 2**20  # and its most pixels: 65,536 photos would be 40 GB
# A slice of photos of many sizes holds less: its pixels come back from the decoding pool
# pickled (twice their size for a moment), and their check decodes the source beside them. At
# 256 MB a 100,000-photo bench peaked at 1.6 GB; the target is under 1.5 GB.
PHOTO_SLICE_BYTES = 128 * 2**20


def read_slice_images(image_bytes: float) -> int:
    """Images per streamed ``read_all`` slice: ``READ_BUFFER_IMAGES``, fewer for big images."""
    return max(1, min(READ_BUFFER_IMAGES, int(READ_BUFFER_BYTES // max(1.0, image_bytes))))


def streams(count: int, image_bytes: float) -> bool:
    """Whether a run of ``count`` images of ``image_bytes`` each is streamed."""
    return count * image_bytes > STREAM_ABOVE_BYTES


def cycled_source(
    images: np.ndarray | Sequence[np.ndarray], labels: object, count: int, allow_stream: bool = True
) -> tuple[np.ndarray | CycledImages | list[np.ndarray], np.ndarray]:
    """The first ``count`` images of the source, cycling: materialised, or a view for big counts."""
    big = streams(count, images[0].nbytes) if isinstance(images, np.ndarray) else False
    if allow_stream and big and count > len(images):
        label_array = check_labels(labels, len(images))
        return CycledImages(images, count), label_array[np.arange(count) % len(images)]
    return datasets.take(images, labels, count)


def resized_source(images: object, max_side: int | None, shorter_side: int | None):
    """The source as a run resizing to ``max_side``/``shorter_side`` stores it: what reads are checked against.

    A folder listing resizes lazily, as it decodes; an array is resized here, once, and
    only if resizing changes it (CIFAR-10's 32 px images under a 256 px limit do not).
    """
    if max_side is None and shorter_side is None:
        return images
    if hasattr(images, "resized"):
        return images.resized(max_side, shorter_side)
    height, width = images[0].shape[:2]
    if all(resized_size(image.shape[1], image.shape[0], max_side, shorter_side) == (image.shape[1], image.shape[0])
           for image in (images if not isinstance(images, np.ndarray) else images[:1])):  # fmt: skip
        return images
    from ..image_codec import resize_pixels

    resized = [resize_pixels(image, max_side, shorter_side) for image in images]
    return np.stack(resized) if len({image.shape for image in resized}) == 1 else resized


def read_buffer_for(images: np.ndarray | CycledImages | list[np.ndarray]) -> np.ndarray | None:
    """The buffer reads go into, allocated and touched now (outside any timer).

    The whole count for a materialised array; ``READ_BUFFER_IMAGES`` for a streamed one,
    reused slice after slice; None for images of mixed sizes.
    """
    if isinstance(images, CycledImages):
        buffer = np.empty((min(len(images), read_slice_images(images.image_nbytes)), *images.shape[1:]), np.uint8)
    elif isinstance(images, np.ndarray):
        buffer = np.empty_like(images)
    else:
        return None
    buffer.fill(0)  # touch every page now, not inside a timer
    return buffer


MEMORY_CEILING_MAX_BYTES = 2 * 2**30
"""The most decoded photos the loader's in-memory ceiling holds (a folder's distinct photos, decoded once)."""


def memory_needed(
    count: int, image_bytes: float, base_bytes: int, allow_stream: bool = True, source_in_memory: bool = True
) -> int:
    """Memory a run of ``count`` images needs: source copy and read buffer, or one slice of each.

    A folder of photos (``source_in_memory=False``) is never held: only the chunk being
    written or checked is decoded, so a streamed run needs its slices alone.
    """
    if allow_stream and streams(count, image_bytes):
        return int(2 * read_slice_images(image_bytes) * image_bytes + base_bytes)
    return int((2 if source_in_memory else 1) * count * image_bytes + base_bytes)
