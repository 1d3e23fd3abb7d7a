"""A Zarr v3 group in object storage, read by zarr-python through obstore.

``zarr.storage.ObjectStore`` over ``obstore.store.S3Store``: a random image is a ranged GET
of its shard's index (cached by zarr after the first) and one of its chunk; a run of ids
reads the chunks it needs. obstore's runtime does not survive ``fork``, so DataLoader
workers over this store are spawned.
"""

from __future__ import annotations

import numpy as np
import zarr
from zarr.storage import ObjectStore

from ...errors import CorruptDataError
from ...formats.npy_store import GrowingArray
from ...formats.zarr_store import GROUP, ZarrStore
from ..clients import obstore_store
from ..remote import READERS, RemoteReading


class RemoteZarrImages:
    """The images array of a remote group: what the store's read methods ask of its images."""

    def __init__(self, array: zarr.Array, written: int) -> None:
        self.array, self.written = array, written

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def read_one(self, image_id: int) -> np.ndarray:
        return np.asarray(self.array[image_id])

    def read_range(self, start: int, stop: int, out: np.ndarray) -> None:
        out[...] = self.array[start:stop]

    def read_ids(self, ids: np.ndarray, out: np.ndarray) -> None:
        out[...] = self.array.get_orthogonal_selection((ids,))

    def close(self) -> None:
        """Nothing is held open."""


class RemoteZarrStore(RemoteReading, ZarrStore):
    """A Zarr store whose shard files stay in the bucket."""

    read_method = READERS["zarr"][1]
    fork_safe = False  # obstore's runtime threads do not survive fork

    def _open(self) -> None:
        store = ObjectStore(obstore_store(self.location.child(GROUP)), read_only=True)
        try:
            self._group = zarr.open_group(store, mode="r", zarr_format=3)
            self._labels = self._group["labels"] if "labels" in self._group else None
            images = self._group["images"] if "images" in self._group else None
        except (FileNotFoundError, KeyError, ValueError) as error:
            raise CorruptDataError(f"{self.url}/{GROUP} is not a readable Zarr group ({error})") from None
        self._images = RemoteZarrImages(images, self._count) if images is not None else None
        if self._count and (self._images is None or self._labels is None or self._labels.shape[0] < self._count):
            raise CorruptDataError(f"{self.url}/{GROUP} holds fewer images than the store committed")
        labels = self._labels[: self._count] if self._count else np.empty(0, np.int64)
        self._label_values = GrowingArray(np.asarray(labels, dtype=np.int64))

    def _stored_count(self) -> int:
        """The length of the remote images array (its ``zarr.json`` is in the bucket, not the shadow folder)."""
        if self._images is None:
            return 0
        images, labels = int(self._images.array.shape[0]), int(self._labels.shape[0]) if self._labels is not None else 0
        if labels != images:
            raise CorruptDataError(f"{self.url}/{GROUP} is damaged: {images:,} images and {labels:,} labels")
        return images
