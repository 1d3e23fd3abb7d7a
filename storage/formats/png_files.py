"""PNG files: one PNG per image plus one ``labels.csv``, the article's layout for many images.

Why it is slow, and what this module does about it: each image is a file, and creating a
file costs more kernel time here than encoding a 32x32 PNG. Batches therefore encode,
write, read and decode in worker processes on all cores (``storage.parallel``), and files
go into subfolders of 1,000 so no directory grows huge. The bytes are exactly what
Pillow's defaults produce, so any PNG reader opens them.

Labels and shapes live in ``labels.csv`` (``id,label,height,width,channels``), appended
as images are written; the manifest's committed count and CSV length make a cut-off
write roll back cleanly.

``write_one`` keeps images in a write-behind group (:mod:`storage.write_behind`) and
writes each group as a batch, so single images are encoded on all cores too: at 10,000
CIFAR images about 80 µs per image instead of 170 µs one at a time. A PNG file therefore
appears when its group is written (within a second, at 4,096 images, or at ``flush()``
and ``close()``); ``read_one`` answers from the group before that.
"""

from __future__ import annotations

import errno
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, PngImagePlugin

from .. import checksums, parallel
from ..base import ImageStore, stack_if_uniform
from ..batch import Shape
from ..errors import CorruptDataError
from . import BUILTIN_INFO

IMAGES_FOLDER = "images"
LABELS_FILE = "labels.csv"
LABELS_HEADER = "id,label,height,width,channels\n"
FILES_PER_FOLDER = 1000
IMAGES_PER_TASK = 64


def image_to_pil(image: np.ndarray) -> Image.Image:
    """A Pillow image for a (H,W), (H,W,1), (H,W,3) or (H,W,4) uint8 array."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Image.fromarray(image)


def pil_to_array(picture: Image.Image, shape: Shape) -> np.ndarray:
    """Decode ``picture`` to an array of the shape that was written."""
    array = np.asarray(picture)
    return array.reshape(shape) if array.shape != shape else array


def shape_row(shape: Shape) -> tuple[int, int, int]:
    """(height, width, channels) with channels 0 for a 2-D image."""
    return (shape[0], shape[1], shape[2] if len(shape) == 3 else 0)


def row_shape(height: int, width: int, channels: int) -> Shape:
    return (height, width) if channels == 0 else (height, width, channels)


@dataclass(frozen=True)
class PngCodec:
    """Where each image file lives and how its bytes are made; small enough to send to workers.

    Subclasses for other one-file-per-image formats override ``suffix``, ``encode`` and
    ``decode``.
    """

    root: str
    options: dict[str, Any]
    suffix: ClassVar[str] = ".png"

    def path(self, image_id: int) -> str:
        """Path of one image file; folders of 1,000 keep directories small."""
        return os.path.join(self.root, f"{image_id // FILES_PER_FOLDER:06d}", f"{image_id:09d}{self.suffix}")

    def encode(self, image: np.ndarray) -> bytes:
        """PNG bytes as Pillow writes them with its default settings."""
        buffer = io.BytesIO()
        image_to_pil(image).save(buffer, format="PNG", compress_level=self.options["compress_level"])
        return buffer.getvalue()

    def decode(self, data: bytes, shape: Shape) -> np.ndarray:
        with PngImagePlugin.PngImageFile(io.BytesIO(data)) as picture:
            return pil_to_array(picture, shape)

    def write(self, image_id: int, image: np.ndarray) -> bytes:
        """Encode one image and write it to its file; return the bytes written."""
        data = self.encode(image)
        descriptor = os.open(self.path(image_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            written = os.write(descriptor, data)
            if written != len(data):  # a full disk writes short before it fails
                raise OSError(errno.ENOSPC, "No space left on device", self.path(image_id))
        finally:
            os.close(descriptor)
        return data

    def read_bytes(self, image_id: int) -> bytes:
        path = self.path(image_id)
        try:
            with open(path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise CorruptDataError(f"{path} is missing; the store is damaged: write it again with mode 'w'") from None
        except OSError as error:
            raise CorruptDataError(f"{path} cannot be read ({error}); the store is damaged") from None

    def read(self, image_id: int, shape: Shape) -> np.ndarray:
        """Read and decode one image file."""
        return self.decoded(self.read_bytes(image_id), shape, image_id)

    def decoded(self, data: bytes, shape: Shape, image_id: int) -> np.ndarray:
        try:
            return self.decode(data, shape)
        except Exception as error:  # Pillow raises many kinds for bytes that are not a good image
            raise CorruptDataError(
                f"{self.path(image_id)} could not be decoded ({error}); the store is damaged"
            ) from None


def write_files(codec: PngCodec, first_id: int, images, labels: list[int], algorithm: str) -> list[int]:
    """Worker task: encode and write a run of images; the checksum of each file as written."""
    digests = []
    for offset, (image, label) in enumerate(zip(images, labels)):
        data = codec.write(first_id + offset, image)
        digests.append(checksums.file_digest(algorithm, data, image.shape, label))
    return digests


def read_files(codec: PngCodec, ids: np.ndarray, shapes: np.ndarray):
    """Worker task: read and decode a run of images; one stacked array when they share a shape."""
    images = [codec.read(int(image_id), row_shape(*row)) for image_id, row in zip(ids, shapes.tolist())]
    return stack_if_uniform(images)


def read_files_checked(codec: PngCodec, ids: np.ndarray, shapes: np.ndarray, labels: np.ndarray, algorithm: str):
    """Worker task: as :func:`read_files`, with the checksum of each file's bytes (to compare with the recorded one)."""
    images, digests = [], []
    for image_id, row, label in zip(ids.tolist(), shapes.tolist(), labels.tolist()):
        data, shape = codec.read_bytes(image_id), row_shape(*row)
        digests.append(checksums.file_digest(algorithm, data, shape, label))
        images.append(codec.decoded(data, shape, image_id))
    return images, digests


class PngFilesStore(ImageStore):
    """One PNG file per image and one CSV of labels."""

    info = BUILTIN_INFO["png"]
    default_options = {"compress_level": 6, "parallel": True}
    codec_class: ClassVar[type[PngCodec]] = PngCodec
    chunk_images = 2 * FILES_PER_FOLDER
    # write_one images are encoded and written in groups by the worker pool, as a batch is
    # (see storage.write_behind): one at a time a PNG costs its encoding on one core
    write_behind_images = 4096

    # -- hooks -----------------------------------------------------------------------

    def _create(self) -> None:
        (self.path / IMAGES_FOLDER).mkdir()
        (self.path / LABELS_FILE).write_text(LABELS_HEADER)
        self.backend_state["csv_bytes"] = len(LABELS_HEADER)
        self._open()

    def _open(self) -> None:
        self.codec = self.codec_class(str(self.path / IMAGES_FOLDER), self.options)
        self._csv = None
        self._labels, self._shapes = self._load_rows()
        self._known_folders: set[str] = set()

    def _close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None

    def _task_ranges(self, total: int) -> list[tuple[int, int]]:
        """Pieces of a batch for the worker pool; one piece when parallelism is off or pointless."""
        if not self.options["parallel"] or total < 2 * IMAGES_PER_TASK:
            return [(0, total)]
        return parallel.split_ranges(total, 4 * parallel.worker_count(), IMAGES_PER_TASK)

    def _folder_ranges(self, first_id: int, total: int) -> list[tuple[int, int]]:
        """Pieces of a write that each fill one folder.

        Creating files in one directory is serialized by the kernel's directory lock, so
        workers scale only when each writes into a folder of its own.
        """
        if not self.options["parallel"] or total < 2 * IMAGES_PER_TASK:
            return [(0, total)]
        cuts = range(FILES_PER_FOLDER - first_id % FILES_PER_FOLDER, total, FILES_PER_FOLDER)
        edges = [0, *cuts, total]
        return [(start, stop) for start, stop in zip(edges, edges[1:]) if stop > start]

    def _load_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Labels and shapes of the committed images, from the CSV."""
        csv_path = self.path / LABELS_FILE
        try:
            with open(csv_path, "rb") as file:
                text = file.read(self.backend_state.get("csv_bytes", len(LABELS_HEADER)))
        except FileNotFoundError:
            raise CorruptDataError(
                f"{csv_path} is missing; the store is damaged: write it again with mode 'w'"
            ) from None
        try:
            lines = text.decode("ascii").splitlines()[1:]
        except UnicodeDecodeError:
            raise CorruptDataError(f"{csv_path} is damaged: it holds bytes that are not text") from None
        if len(lines) != self._count:
            raise CorruptDataError(
                f"{csv_path} lists {len(lines)} images but the store committed {self._count}; write it again with mode 'w'"
            )
        try:
            rows = np.array([line.split(",") for line in lines], dtype=np.int64).reshape(-1, 5)
        except ValueError:
            raise CorruptDataError(f"{csv_path} is damaged: a row is not five whole numbers") from None
        if len(rows) and not np.array_equal(rows[:, 0], np.arange(len(rows))):
            raise CorruptDataError(f"{csv_path} has ids out of order; write the store again with mode 'w'")
        return rows[:, 1].copy(), rows[:, 2:5].astype(np.int32)

    def _stored_count(self) -> int:
        """Rows of ``labels.csv``: the committed ones (checked when loaded) and any written after them."""
        committed = self.backend_state.get("csv_bytes", len(LABELS_HEADER))
        with open(self.path / LABELS_FILE, "rb") as file:
            file.seek(committed)
            return len(self._labels) + file.read().count(b"\n")

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        ids = range(first_id, first_id + len(labels))
        for folder_number in range(ids[0] // FILES_PER_FOLDER, ids[-1] // FILES_PER_FOLDER + 1):
            folder = os.path.dirname(self.codec.path(folder_number * FILES_PER_FOLDER))
            if folder not in self._known_folders:
                os.makedirs(folder, exist_ok=True)
                self._known_folders.add(folder)
        algorithm, label_list = self._checksums["algorithm"], labels.tolist()
        tasks = [
            (self.codec, first_id + start, images[start:stop], label_list[start:stop], algorithm)
            for start, stop in self._folder_ranges(first_id, len(labels))
        ]
        digests = [digest for part in parallel.run_tasks(write_files, tasks) for digest in part]
        self._add_checksum_records(checksums.one_per_image(first_id, digests))
        shapes = [shape_row(image.shape) for image in images]
        self._append_rows(ids, labels, shapes)

    def _checksum_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        """Each file's checksum is taken as it is written (:meth:`_write_chunk`): lossy files differ from the pixels."""

    def _read_run_checked(self, records: np.ndarray, into: np.ndarray | None):
        """Images of ``records`` (one image each) read in worker processes, with their files' checksums."""
        ids = records["first_id"].astype(np.int64)
        if (records["count"] != 1).any():
            raise CorruptDataError(f"{self.path}'s checksum records are not one per image; the store is damaged")
        algorithm = self._checksums["algorithm"]
        tasks = [
            (self.codec, ids[start:stop], self._shapes[ids[start:stop]], self._labels[ids[start:stop]], algorithm)
            for start, stop in self._task_ranges(len(ids))
        ]
        images, digests = [], []
        for part_images, part_digests in parallel.run_tasks(read_files_checked, tasks):
            images += part_images
            digests += part_digests
        uniform = self._layout_shape
        stacked = stack_if_uniform(images, into, uniform) if uniform is not None else images
        return stacked, self._labels[ids], digests

    def _damage_location(self, start: int, stop: int) -> str:
        return self.codec.path(start) if stop - start == 1 else f"files {self.codec.path(start)}.."

    def _append_rows(self, ids: range, labels: np.ndarray, shapes: list[tuple[int, int, int]]) -> None:
        if self._csv is None:
            self._csv = open(self.path / LABELS_FILE, "ab")  # noqa: SIM115 - kept open across writes
        lines = "".join(f"{i},{label},{h},{w},{c}\n" for i, label, (h, w, c) in zip(ids, labels.tolist(), shapes))
        self._csv.write(lines.encode())
        self._pending_labels.append(labels)
        self._pending_shapes.append(np.array(shapes, dtype=np.int32))

    def _begin_write(self, first_id: int, batch) -> None:
        super()._begin_write(first_id, batch)
        self._pending_labels: list[np.ndarray] = []
        self._pending_shapes: list[np.ndarray] = []

    def _commit(self, count: int) -> None:
        if self._csv is not None:
            self._csv.flush()
            self.backend_state["csv_bytes"] = self._csv.tell()
        if getattr(self, "_pending_labels", None):
            self._labels = np.concatenate([self._labels, *self._pending_labels])
            self._shapes = np.concatenate([self._shapes, *self._pending_shapes])
            self._pending_labels, self._pending_shapes = [], []

    def _rollback(self, count: int) -> None:
        self._pending_labels, self._pending_shapes = [], []
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        csv_path = self.path / LABELS_FILE
        os.truncate(csv_path, self.backend_state.get("csv_bytes", len(LABELS_HEADER)))
        self._labels, self._shapes = self._labels[:count], self._shapes[:count]
        self._remove_files_from(count)

    def _remove_files_from(self, count: int) -> None:
        """Delete image files of ids ``count``.. left by a write that did not finish."""
        root = Path(self.codec.root)
        if not root.exists():
            return
        first_folder = count // FILES_PER_FOLDER
        for folder in root.iterdir():
            if not folder.name.isdigit() or int(folder.name) < first_folder:
                continue
            for file in folder.iterdir():
                stem = file.name.split(".")[0]
                if stem.isdigit() and int(stem) >= count:
                    file.unlink()

    # -- reading ---------------------------------------------------------------------

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        return self.codec.read(image_id, row_shape(*self._shapes[image_id].tolist())), int(self._labels[image_id])

    def _read_many(self, ids: np.ndarray, out: np.ndarray | None):
        tasks = [
            (self.codec, ids[start:stop], self._shapes[ids[start:stop]]) for start, stop in self._task_ranges(len(ids))
        ]
        pieces = parallel.run_tasks(read_files, tasks)
        uniform = self._layout_shape
        if uniform is None or len(ids) == 0:
            images = [image for piece in pieces for image in piece]
            return stack_if_uniform(images, out), self._labels[ids]
        if out is None:
            out = np.empty((len(ids), *uniform), dtype=np.uint8)
        position = 0
        for piece in pieces:
            out[position : position + len(piece)] = piece
            position += len(piece)
        return out, self._labels[ids]
