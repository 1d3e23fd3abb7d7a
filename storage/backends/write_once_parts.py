"""Stores over write-once dataset libraries (LitData, MosaicML Streaming): one dataset per part.

LitData's ``BinaryWriter`` and Streaming's ``MDSWriter`` write a dataset once: chunk or
shard files, then an ``index.json`` when the writer is finished. Neither can take more
samples afterwards, nor forget the last few. So each committed ``write_batch`` (or group
of ``write_one`` calls, finished at ``flush``/``close``) becomes a complete dataset of
its own in ``parts/00000/``, ``parts/00001/``, ..., each readable by the library's own
``StreamingDataset`` on its own. ``backend_state["parts"]`` in the manifest lists each
part's image count; a part folder the manifest does not list (a write that was cut off)
is deleted when the store is reopened, so appending and all-or-nothing batches work as
for every other backend.

Each sample is ``{"image": uint8 array, "label": int, "id": int}``: ``id`` is the image's
id in the store, so a loader that shuffles inside the library (as these do) still says
which image each sample is, and an epoch can be checked against the source.

A subclass says how to open a writer on a folder, add one sample, finish the writer,
open a reader on a finished part and read one sample from it.
"""

from __future__ import annotations

import os
import shutil
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ..base import ImageStore, ProgressCallback
from ..errors import CorruptDataError, StoreNotWritableError

PARTS_FOLDER = "parts"


class WriteOncePartsStore(ImageStore):
    """An :class:`ImageStore` made of finished datasets of a write-once library."""

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

    @abstractmethod
    def _add_sample(self, writer: Any, index: int, image: np.ndarray, label: int, image_id: int) -> None:
        """Add sample ``index`` (counted from 0 within the part), the store's image ``image_id``."""

    @abstractmethod
    def _finish_writer(self, writer: Any) -> None:
        """Write the remaining chunks and the index: the part is complete afterwards."""

    @abstractmethod
    def _open_reader(self, folder: Path) -> Any:
        """A reader of the finished dataset in ``folder``."""

    @abstractmethod
    def _read_sample(self, reader: Any, index: int) -> tuple[np.ndarray, int]:
        """Sample ``index`` of a part as (image, label)."""

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

    # -- writing -------------------------------------------------------------------------

    def write_batch(self, images: object, labels: object, progress: ProgressCallback | None = None) -> np.ndarray:
        """As :meth:`ImageStore.write_batch`; images from ``write_one`` are committed first, so
        every batch is a part of its own and a cancelled batch removes only its own part."""
        if self._dirty and self.mode != "r" and not self._closed and self._pid == os.getpid():
            self.flush()
        return super().write_batch(images, labels, progress)

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
        for offset, (image, label) in enumerate(zip(images, labels.tolist())):
            self._add_sample(self._writer, self._writer_samples, image, label, first_id + offset)
            self._writer_samples += 1

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

    def _commit_one(self, count: int) -> None:
        """One image at a time: samples go to the open writer; the part is finished at
        ``flush``/``close`` (or when a read needs it)."""

    def _rollback(self, count: int) -> None:
        """Drop the part being written and any part folder the manifest does not list."""
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
        if image_id >= sum(self._parts):  # still in the open writer (write_one)
            self._commit(self._count)
        part = int(np.searchsorted(self._part_firsts, image_id, side="right")) - 1
        return self._read_sample(self._reader(part), image_id - int(self._part_firsts[part]))
