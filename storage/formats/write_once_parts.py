"""Stores over write-once dataset libraries (LitData, MosaicML Streaming): one dataset per part.

LitData's ``BinaryWriter`` and Streaming's ``MDSWriter`` write a dataset once: chunk or
shard files, then an ``index.json`` when the writer is finished. Neither can take more
samples afterwards, nor forget the last few. So each committed ``write_batch`` (or
write-behind group of up to 4,096 ``write_one`` images, see :mod:`storage.write_behind`)
becomes a complete dataset of its own in ``parts/00000/``, ``parts/00001/``, ..., each readable by the library's own
``StreamingDataset`` on its own. ``backend_state["parts"]`` in the manifest lists each
part's image count; a part folder the manifest does not list (a write that was cut off)
is deleted when the store is reopened, so appending and all-or-nothing batches work as
for every other backend.

Each sample is ``{"image": uint8 array, "label": int, "id": int}``: ``id`` is the image's
id in the store, so a loader that shuffles inside the library (as these do) still says
which image each sample is, and an epoch can be checked against the source.

A subclass says how to open a writer on a folder, add one sample, finish the writer,
open a reader on a finished part and read one sample from it, and may say how to read a
run of consecutive samples faster (its library's own sequential path: ``read_all`` and
``read_batch`` of consecutive ids go through it, not one ``read_one`` per image).
"""

from __future__ import annotations

import os
import shutil
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ..base import ImageStore
from ..batch import stack_if_uniform
from ..errors import CorruptDataError, StoreNotWritableError

PARTS_FOLDER = "parts"


class WriteOncePartsStore(ImageStore):
    """An :class:`ImageStore` made of finished datasets of a write-once library."""

    write_behind_images = 4096  # write_one images become a part per group, not one each

    def part_path(self, part: int) -> Path:
        return self.path / PARTS_FOLDER / f"{part:05d}"

    def part_paths(self) -> list[Path]:
        """The folders of the committed parts, each a dataset the library opens on its own."""
        return [self.part_path(part) for part in range(len(self._parts))]

    @property
    def _parts(self) -> list[int]:
        return self.backend_state.setdefault("parts", [])

    # -- the library's side --------------------------------------------------------------

    @abstractmethod
    def _open_writer(self, folder: Path) -> Any:
        """A writer that writes a new dataset into the empty ``folder``."""

    def _add_sample(self, writer: Any, index: int, image: np.ndarray, label: int, image_id: int) -> None:
        """Add sample ``index`` (counted from 0 within the part), the store's image ``image_id``.

        A subclass implements this, or :meth:`_add_chunk` for a library that takes many samples at once.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither _add_sample nor _add_chunk")

    def _add_chunk(self, writer: Any, index: int, images, labels: np.ndarray, first_id: int) -> None:
        """Add a streamed chunk as samples ``index``.. of the part (the store's images ``first_id``..)."""
        for offset, (image, label) in enumerate(zip(images, labels.tolist())):
            self._add_sample(writer, index + offset, image, label, first_id + offset)

    def _abandon_writer(self, writer: Any) -> None:
        """Let go of a writer whose part is dropped (its folder is removed next), so that its files' space is freed.

        A file the writer still holds open keeps its blocks after it is removed, as long as
        anything (an exception's traceback) holds the writer.
        """

    @abstractmethod
    def _finish_writer(self, writer: Any) -> None:
        """Write the remaining chunks and the index: the part is complete afterwards."""

    @abstractmethod
    def _open_reader(self, folder: Path) -> Any:
        """A reader of the finished dataset in ``folder``."""

    @abstractmethod
    def _read_sample(self, reader: Any, index: int) -> tuple[np.ndarray, int]:
        """Sample ``index`` of a part as (image, label)."""

    def _read_samples(self, part: int, start: int, stop: int) -> tuple[list[np.ndarray], list[int]]:
        """Samples ``start``..``stop`` of a part, in order; by default one ``_read_sample`` each."""
        reader = self._reader(part)
        pairs = [self._read_sample(reader, index) for index in range(start, stop)]
        return [image for image, _ in pairs], [label for _, label in pairs]

    # -- opening and closing -------------------------------------------------------------

    def _create(self) -> None:
        (self.path / PARTS_FOLDER).mkdir()
        self._reset_handles()

    def _open(self) -> None:
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._writer: Any = None
        self._writer_samples = 0
        self._readers: dict[int, Any] = {}
        self._part_firsts = np.cumsum([0, *self._parts])[:-1]

    def _close(self) -> None:
        self._readers = {}

    def _stored_count(self) -> int:
        """Images of the listed parts, and one more if a part folder lies beyond them (a write not finished)."""
        parts = self._parts
        if not all(isinstance(count, int) and not isinstance(count, bool) and count >= 0 for count in parts):
            raise CorruptDataError(f"the manifest of {self.path} lists parts that are not image counts: {parts!r}")
        listed = {f"{part:05d}" for part in range(len(parts))}
        folder = self.path / PARTS_FOLDER
        unlisted = folder.is_dir() and any(entry.name not in listed for entry in folder.iterdir())
        return sum(parts) + (1 if unlisted else 0)

    # -- writing -------------------------------------------------------------------------

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        if self._writer is None:
            folder = self.part_path(len(self._parts))
            shutil.rmtree(folder, ignore_errors=True)
            try:
                folder.mkdir(parents=True)
                self._writer = self._open_writer(folder)
            except OSError as error:
                raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
            self._writer_samples = 0
        self._add_chunk(self._writer, self._writer_samples, images, labels, first_id)
        self._writer_samples += len(labels)

    def _commit(self, count: int) -> None:
        """Finish the part being written and list it in the manifest."""
        if self._writer is None:
            return
        try:
            self._finish_writer(self._writer)
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
        self._writer = None
        self._parts.append(self._writer_samples)
        self._part_firsts = np.cumsum([0, *self._parts])[:-1]

    def _rollback(self, count: int) -> None:
        """Drop the part being written and any part folder the manifest does not list."""
        if self._writer is not None:
            self._abandon_writer(self._writer)
        self._writer = None
        self._readers = {}
        while self._parts and sum(self._parts) > count:
            self._parts.pop()
        if sum(self._parts) != count:
            raise CorruptDataError(f"the parts in {self.path} do not add up to the {count} committed images")
        for folder in (self.path / PARTS_FOLDER).glob("*"):
            if not folder.name.isdigit() or int(folder.name) >= len(self._parts):
                shutil.rmtree(folder, ignore_errors=True)
        self._part_firsts = np.cumsum([0, *self._parts])[:-1]

    @classmethod
    def committed_parts(cls, path: str | os.PathLike[str]) -> list[Path]:
        """The part folders of the complete store at ``path``, for the library's own datasets."""
        with cls(path, "r") as store:
            return store.part_paths()

    # -- reading -------------------------------------------------------------------------

    def _reader(self, part: int) -> Any:
        reader = self._readers.get(part)
        if reader is None:
            reader = self._readers[part] = self._open_reader(self.part_path(part))
        return reader

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        part = int(np.searchsorted(self._part_firsts, image_id, side="right")) - 1
        return self._read_sample(self._reader(part), image_id - int(self._part_firsts[part]))

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        """Consecutive ids through each part's sequential path (:meth:`_read_samples`); others one by one."""
        consecutive = len(ids) > 1 and ids[-1] - ids[0] == len(ids) - 1 and bool(np.all(np.diff(ids) == 1))
        if not consecutive:
            return super()._read_many(ids, out)
        images: list[np.ndarray] = []
        labels: list[int] = []
        first, stop = int(ids[0]), int(ids[-1]) + 1
        ends = np.cumsum(self._parts)
        for part, (part_first, part_end) in enumerate(zip(self._part_firsts.tolist(), ends.tolist())):
            low, high = max(first, part_first), min(stop, part_end)
            if low < high:
                part_images, part_labels = self._read_samples(part, low - part_first, high - part_first)
                images.extend(part_images)
                labels.extend(part_labels)
        return stack_if_uniform(images, out, self._layout_shape), np.asarray(labels, dtype=np.int64)
