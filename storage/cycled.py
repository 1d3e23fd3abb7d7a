"""A source of images repeated to any length without copying it: ``take`` for big counts.

``storage.datasets.take(images, labels, 1_000_000)`` builds a new 3 GB array from the
5,085-image sample. :class:`CycledImages` is the same sequence (image ``i`` is
``images[i % len(images)]``) held as the source array plus a short overlap, so it costs
the source's memory whatever its length. ``write_batch`` takes it like an array: it is
checked once, not image by image, and every streamed chunk that does not cross the end of
the source more than once is a view, not a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OVERLAP_IMAGES = 4096
"""Images of the source repeated after its end, so ranges up to this long are views."""


class CycledImages(Sequence):
    """The first ``length`` images of ``source`` (an (M,H,W[,C]) uint8 array), cycling through it.

    Indexing with an int gives one image (a view), with a slice of step 1 or an integer
    array an (n,H,W[,C]) array, as the materialised array would.
    """

    def __init__(self, source: np.ndarray, length: int) -> None:
        if not isinstance(source, np.ndarray) or source.ndim not in (3, 4) or len(source) == 0:
            raise TypeError("CycledImages needs a non-empty (M,H,W[,C]) array of images")
        self.source_length = len(source)
        overlap = np.arange(self.source_length + min(OVERLAP_IMAGES, length)) % self.source_length
        self._extended = np.ascontiguousarray(source[overlap])
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.length, *self._extended.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self._extended.dtype

    @property
    def image_nbytes(self) -> int:
        return int(np.prod(self._extended.shape[1:])) * self._extended.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the images it stands for (what the materialised array would take)."""
        return self.length * self.image_nbytes

    @property
    def first(self) -> np.ndarray:
        return self._extended[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self.length)
            if step == 1:
                return self._range(start, max(start, stop))
            index = np.arange(start, stop, step)
        if isinstance(index, (int, np.integer)):
            position = int(index) + self.length if index < 0 else int(index)
            if not 0 <= position < self.length:
                raise IndexError(f"image {index} is out of range for {self.length} images")
            return self._extended[position % self.source_length]
        ids = np.asarray(index)
        if ids.dtype.kind not in "iu":
            raise IndexError(f"cannot index images with {ids.dtype}")
        if ids.size and (ids.min() < -self.length or ids.max() >= self.length):
            raise IndexError(f"an id is out of range for {self.length} images")
        return self._extended[np.where(ids < 0, ids + self.length, ids) % self.source_length]

    def _range(self, start: int, stop: int) -> np.ndarray:
        """Images ``start``..``stop``: a view when the range fits in the extended source."""
        offset = start % self.source_length
        if offset + (stop - start) <= len(self._extended):
            return self._extended[offset : offset + (stop - start)]
        return self._extended[np.arange(start, stop) % self.source_length]
