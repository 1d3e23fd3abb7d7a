"""The write-behind group: ``write_one`` images held in memory until they are written together.

Committing one image at a time pays a backend's fixed cost per image: a synced LMDB
transaction (0.5-3 ms here), an HDF5 dataset resize and write (0.1-0.5 ms). A store whose
backend sets ``write_behind_images`` keeps ``write_one`` images in a :class:`WriteGroup`
and writes the group as one ordinary all-or-nothing batch (one synced LMDB transaction,
one HDF5 write and flush) when it holds that many images or ``chunk_bytes`` of pixels,
when a ``write_one`` comes more than ``write_behind_seconds`` after the group's first
image, and at ``flush()``, ``close()``, ``write_batch`` and any bulk read of its ids.
A crash therefore loses at most the group not yet written; every group written before
it is committed exactly as a batch is.
"""

from __future__ import annotations

import time

import numpy as np

from .batch import Shape


class WriteGroup:
    """Copies of the images (and their labels) that ``write_one`` accepted but has not written."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.labels: list[int] = []
        self.nbytes = 0
        self.started = 0.0
        self.encoded = False
        """Whether the group holds encoded images (``EncodedImage``) rather than pixels; never both."""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> Shape | None:
        """The shape of the group's first image, or None while empty."""
        return tuple(self.images[0].shape) if self.images else None

    def add_encoded(self, item, label: int) -> None:
        """Keep an encoded image (its bytes are immutable: no copy needed)."""
        if not self.images:
            self.started = time.monotonic()
            self.encoded = True
        self.images.append(item)
        self.labels.append(label)
        self.nbytes += int(np.prod(item.shape))

    def add(self, image: np.ndarray, label: int) -> None:
        """Keep a copy: callers often reuse one buffer for every image they pass."""
        if not self.images:
            self.started = time.monotonic()
        self.images.append(np.array(image, dtype=np.uint8, copy=True, order="C"))
        self.labels.append(label)
        self.nbytes += image.nbytes

    def is_due(self, max_images: int, max_bytes: int, max_seconds: float) -> bool:
        """Whether the group is full or old enough to be written now."""
        return (
            len(self.images) >= max_images or self.nbytes >= max_bytes or time.monotonic() - self.started >= max_seconds
        )

    def image(
        self, offset: int, max_side: int | None = None, shorter_side: int | None = None
    ) -> tuple[np.ndarray, int]:
        """A copy of the ``offset``-th image of the group and its label (decoded, if the group is encoded).

        ``max_side``/``shorter_side`` resize it as the store will when the group is written,
        so an image reads back in the same shape before and after.
        """
        from .image_codec import EncodedImages, resize_pixels

        if self.encoded:
            return EncodedImages([self.images[offset]], max_side, shorter_side)[0], self.labels[offset]
        if max_side is None and shorter_side is None:
            return self.images[offset].copy(), self.labels[offset]
        return resize_pixels(self.images[offset], max_side, shorter_side).copy(), self.labels[offset]

    def as_batch(self) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """The group as ``write_batch`` takes it: one stacked array (a list for mixed sizes), int64 labels."""
        if self.encoded:
            from .image_codec import EncodedImages

            return EncodedImages(list(self.images)), np.asarray(self.labels, dtype=np.int64)
        first = self.images[0].shape
        uniform = all(image.shape == first for image in self.images)
        return (np.stack(self.images) if uniform else list(self.images)), np.asarray(self.labels, dtype=np.int64)

    def clear(self) -> None:
        self.images, self.labels, self.nbytes, self.encoded = [], [], 0, False
