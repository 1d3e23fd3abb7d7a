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

STREAM_ABOVE_BYTES = 512 * 2**20
READ_BUFFER_IMAGES = 65_536  # the largest read_all slice the engine reads at once


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


def read_buffer_for(images: np.ndarray | CycledImages | list[np.ndarray]) -> np.ndarray | None:
    """The buffer reads go into, allocated and touched now (outside any timer).

    The whole count for a materialised array; ``READ_BUFFER_IMAGES`` for a streamed one,
    reused slice after slice; None for images of mixed sizes.
    """
    if isinstance(images, CycledImages):
        buffer = np.empty((min(len(images), READ_BUFFER_IMAGES), *images.shape[1:]), dtype=np.uint8)
    elif isinstance(images, np.ndarray):
        buffer = np.empty_like(images)
    else:
        return None
    buffer.fill(0)  # touch every page now, not inside a timer
    return buffer


def memory_needed(count: int, image_bytes: float, base_bytes: int, allow_stream: bool = True) -> int:
    """Memory a run of ``count`` images needs: source copy and read buffer, or one slice of each."""
    if allow_stream and streams(count, image_bytes):
        return int(2 * READ_BUFFER_IMAGES * image_bytes + base_bytes)
    return int(2 * count * image_bytes + base_bytes)
