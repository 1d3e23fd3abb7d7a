"""FFCV's own classes at work for the ``ffcv`` backend (:mod:`.ffcv_store`): writing, reading, loading.

Kept apart from the store class because ``import ffcv`` takes seconds (it compiles numba
code): the store module is imported whenever the backends are listed, this one when an
FFCV store is first written or read.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ffcv.writer
import numpy as np
from ffcv.fields import IntField, RGBImageField
from ffcv.libffcv import imdecode
from ffcv.reader import Reader

from ..errors import CorruptDataError, StoreNotWritableError

RAW = 1  # FFCV's per-sample image modes (ffcv.fields.rgb_image.IMAGE_MODES): 0 is jpg
MIN_PAGE_BYTES = 2 * 2**20
"""FFCV's smallest page. Its writer starts the data at a page boundary and gives each worker
pages of its own, so a file holds at least (1 + workers) pages: with its default 8 MiB a
200-image CIFAR store took 25 MB. The page size changes nothing else for ``os_cache`` reads."""


class Spool:
    """A part's images on disk, end to end, with their shapes, labels and ids, until FFCV converts them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115  (closed by close(), at the part's end)
        self.shapes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []

    def add(self, images, shapes: list[tuple[int, ...]], labels: np.ndarray, ids: np.ndarray) -> None:
        if isinstance(images, np.ndarray):
            self.file.write(memoryview(np.ascontiguousarray(images)).cast("B"))
        else:
            for image in images:
                self.file.write(memoryview(np.ascontiguousarray(image)).cast("B"))
        self.shapes.append(np.array([shape[:2] for shape in shapes], dtype=np.int64).reshape(-1, 2))
        self.labels.append(np.asarray(labels, dtype=np.int64))
        self.ids.append(ids)

    def close(self) -> None:
        self.file.close()

    def samples(self) -> SpooledSamples:
        return SpooledSamples(self)


class SpooledSamples:
    """The spool as the indexable data set ``DatasetWriter`` reads: ``(image, label, id)`` per index."""

    def __init__(self, spool: Spool) -> None:
        self.shapes = np.concatenate(spool.shapes)
        self.labels = np.concatenate(spool.labels)
        self.ids = np.concatenate(spool.ids)
        sizes = self.shapes[:, 0] * self.shapes[:, 1] * 3
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.largest = int(sizes.max())
        self.pixels = np.memmap(spool.path, dtype=np.uint8, mode="r") if self.offsets[-1] else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, int]:
        height, width = self.shapes[index].tolist()
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.pixels[start:stop].reshape(height, width, 3), int(self.labels[index]), int(self.ids[index])


def write_beton(spool: Spool, path: Path, **image_field: Any) -> None:
    """``DatasetWriter`` over the spooled samples, with pages large enough for the largest image.

    ``image_field`` are :class:`ffcv.fields.RGBImageField`'s arguments (``write_mode``, ...).
    """
    samples = spool.samples()
    page_size = max(MIN_PAGE_BYTES, 1 << int(2 * samples.largest + 4096).bit_length())
    fields = {"image": RGBImageField(**image_field), "label": IntField(), "id": IntField()}
    writer = ffcv.writer.DatasetWriter(str(path), fields, page_size=page_size)
    workers: list[multiprocessing.Process] = []
    try:
        with _watched_workers(workers):
            writer.from_indexed_dataset(samples)
    except BaseException as error:
        _stop(workers, writer)
        if isinstance(error, OSError):
            raise StoreNotWritableError(f"cannot write {path}: {error}") from None
        raise
    for worker in workers:
        worker.join()  # DatasetWriter leaves its finished workers to be reaped


@contextlib.contextmanager
def _watched_workers(started: list[multiprocessing.Process]) -> Iterator[None]:
    """FFCV's writer without its progress bar, and failing, not waiting forever, if a worker dies.

    ``DatasetWriter`` polls a counter of written samples every 0.1 s until it reaches the
    total; a worker that raises (a full disk) never adds its samples, and the writer would
    poll for ever. Its module's ``Process`` and ``sleep`` are swapped for the duration of the
    write for ones that remember the workers (in ``started``) and check them at each poll.
    """

    class WatchedProcess(multiprocessing.Process):
        def start(self) -> None:
            super().start()
            started.append(self)

    def sleep_and_check(seconds: float) -> None:
        time.sleep(seconds)
        failed = [worker.exitcode for worker in started if worker.exitcode not in (None, 0)]
        if failed:
            raise OSError(f"one of FFCV's writer processes failed (exit code {failed[0]}); its error is printed above")

    swapped = {
        "Process": WatchedProcess,
        "sleep": sleep_and_check,
        "tqdm": functools.partial(ffcv.writer.tqdm, disable=True),
    }
    saved = {name: getattr(ffcv.writer, name) for name in swapped}
    for name, value in swapped.items():
        setattr(ffcv.writer, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ffcv.writer, name, value)


def _stop(workers: list[multiprocessing.Process], writer: ffcv.writer.DatasetWriter) -> None:
    """After a failed write: end the workers still running and free the writer's shared memory."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
        worker.join()
    memory = getattr(writer, "metadata_sm", None)
    if memory is not None and not isinstance(memory, int):
        with contextlib.suppress(FileNotFoundError):
            memory.close()
            memory.unlink()


class BetonFile:
    """One ``.beton`` read as FFCV's Loader reads it: its ``Reader``'s tables and a memory map of the file."""

    def __init__(self, path: Path) -> None:
        try:
            reader = Reader(str(path))
        except (OSError, ValueError, AssertionError) as error:
            raise CorruptDataError(f"the FFCV file {path} cannot be read ({error}); the store is damaged") from None
        fields = {name: reader.metadata.dtype.names[index] for index, name in enumerate(reader.field_names)}
        self.metadata = reader.metadata[fields["image"]]
        self.labels = np.asarray(reader.metadata[fields["label"]], dtype=np.int64)
        order = np.argsort(reader.alloc_table["ptr"])
        self.pointers = reader.alloc_table["ptr"][order]
        self.sizes = reader.alloc_table["size"][order]
        self.data = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)  # plain slices: 3x faster than memmap's

    def image(self, index: int, copy: bool = True) -> np.ndarray:
        """Sample ``index``'s pixels: a copy, or (``copy=False``) a read-only view of the map for raw ones."""
        mode, width, height, pointer = self.metadata[index].tolist()
        if mode == RAW:
            pixels = self.data[pointer : pointer + height * width * 3].reshape(height, width, 3)
            return pixels.copy() if copy else pixels
        size = int(self.sizes[np.searchsorted(self.pointers, pointer)])
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        imdecode(self.data[pointer : pointer + size], pixels, height, width, height, width, 0, 0, 1, 1, False, False)
        return pixels


def ffcv_loader(path: Path, batch_size: int, threads: int, seed: int | None, order: str) -> Any:
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor

    return Loader(
        str(path),
        batch_size=batch_size,
        num_workers=threads,
        order=OrderOption.RANDOM if order == "random" else OrderOption.QUASI_RANDOM,
        os_cache=order == "random",
        seed=seed,
        drop_last=False,
        pipelines={
            "image": [SimpleRGBImageDecoder(), ToTensor()],
            "label": [IntDecoder(), ToTensor(), Squeeze(1)],
            "id": [IntDecoder(), ToTensor(), Squeeze(1)],
        },
    )


class PartsLoader:
    """FFCV Loaders over a store's parts, one after another: every image once per epoch."""

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator[tuple]:
        for loader in self.loaders:
            yield from loader


__all__ = ["BetonFile", "PartsLoader", "Spool", "ffcv_loader", "write_beton"]
