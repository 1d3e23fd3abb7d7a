"""Take ``n`` images from a source, cycling it when it is shorter, as the article did."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..batch import check_labels
from ..errors import (
    EmptyBatchError,
    ImageTypeError,
)
from .folder_images import FolderImages


def take(
    images: np.ndarray | Sequence[np.ndarray], labels: object, n: int
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """The first ``n`` images and labels, cycling through the source when it is shorter.

    Benchmarks often need more images than a data set holds (100,000 from CIFAR-10's
    60,000, or from the 5,085-image sample); cycling reuses them in order, so image ``i``
    is source image ``i % len(source)``.

    Args:
        images: An (N,H,W[,C]) array or a sequence of arrays.
        labels: N integer labels.
        n: How many images to return; a positive int.

    Returns:
        ``(images, labels)``: a new C-contiguous array for an array source, or a list (of the
        same array objects, not copies) for a sequence source; labels as an int64 array.

    Raises:
        ImageTypeError: ``n`` is not an int, or ``images`` is neither an array nor a sequence.
        EmptyBatchError: ``n`` is zero or negative, or the source is empty.
        LabelError: ``labels`` do not match ``images``.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise ImageTypeError(f"n is {n!r} ({type(n).__name__}); pass the number of images as a positive int")
    if n <= 0:
        raise EmptyBatchError(f"n is {n}; ask for at least one image")
    if isinstance(images, (str, bytes)) or not isinstance(images, (np.ndarray, Sequence)):
        raise ImageTypeError(f"images is a {type(images).__name__}; pass an array of images or a list of arrays")
    if len(images) == 0:
        raise EmptyBatchError("the source holds no images; load a data set with at least one image")
    label_array = check_labels(labels, len(images))
    index = np.arange(int(n)) % len(images)
    if isinstance(images, np.ndarray):
        return np.ascontiguousarray(images[index]), label_array[index]
    if isinstance(images, FolderImages):  # a listing cycles as a listing: nothing is decoded
        return images.select(index), label_array[index]
    return [images[i] for i in index.tolist()], label_array[index]
