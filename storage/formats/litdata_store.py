"""LitData: chunked binary files written by ``litdata``'s writer, read by its ``StreamingDataset``.

Each part (see :mod:`.write_once_parts`) is what ``litdata.optimize`` produces: binary
chunk files ``chunk-<worker>-<n>.bin`` of up to the store's ``chunk_bytes`` (64 MiB;
LitData's documentation uses ``chunk_bytes="64MB"`` for image data sets) and an
``index.json``. A sample is ``{"image": uint8 array, "label": int, "id": int}``: LitData's
numpy serializer keeps dtype and shape per sample, so any size and channel count
round-trip bit for bit. No compression (LitData's default). ``litdata.StreamingDataset(part_folder)``
opens a part directly from the local folder; nothing is copied to a cache.

How a batch is written is the ``writer`` option:

* ``"optimize"``: ``litdata.optimize(fn, inputs, output_dir, chunk_bytes, keep_data_ordered=True)``,
  as LitData's users convert a data set: worker processes (LitData's defaults: one per core,
  started with ``spawn``), each turning its contiguous share of the batch into chunks. The
  inputs are ranges of ids and ``fn`` reads its range from the batch, so the batch travels to
  each worker once (pickled with ``fn``) and the main process holds no extra copy.
  ``optimize`` sets the interpreter's multiprocessing start method for the whole process;
  the store puts the previous one back afterwards.
* ``"binary-writer"``: ``litdata.streaming.writer.BinaryWriter``, the writer ``optimize``
  runs in each of its workers, in this process, chunk by chunk (it holds one chunk in memory).
* ``"auto"`` (the default): ``optimize`` for batches of at least
  :data:`OPTIMIZE_FROM_IMAGES`, the in-process writer for smaller ones (a write-behind group,
  a test), where starting worker processes would cost more than the writing.

Reads: random ids open the part's ``StreamingDataset`` with ``batch_decode=False``: by
default LitData decodes a window of samples around every sample it is asked for, which
suits streaming in order but made one random read cost 1.2-1.8 ms instead of 10 µs on the
development machine. Consecutive ids (``read_all``, ``read_batch`` of a range) go through a
``StreamingDataset`` with LitData's defaults, sliced (``dataset[start:stop]``), which decodes
them in windows: about 1.5x faster than a random read per image. The training loader's own
order is ``StreamingDataset(shuffle=True, batch_decode=False)`` in LitData's
``StreamingDataLoader``: batch decoding off, as for shuffled loading (with it on, the
windows made two-worker loading swing 7x with the seed here).
"""

from __future__ import annotations

import errno
import functools
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset, optimize
from litdata.streaming.writer import BinaryWriter

from ..errors import ModeError, StoreNotWritableError
from . import BUILTIN_INFO
from .write_once_parts import WriteOncePartsStore

logging.getLogger("litdata").setLevel(logging.WARNING)
LITDATA_SEED = 42  # StreamingDataset's default seed
WRITERS = ("auto", "optimize", "binary-writer")
OPTIMIZE_FROM_IMAGES = 4096  # "auto" optimizes batches of at least this many images
OPTIMIZE_INPUT_IMAGES = 1024  # ids per optimize input (a range its fn reads)
OPTIMIZED = "optimize"  # the writer of a part that optimize writes (finished when it returns)


class LitDataStore(WriteOncePartsStore):
    info = BUILTIN_INFO["litdata"]
    default_options = {"writer": "auto"}

    torch_shuffles = True  # its StreamingDataset shuffles chunks and samples itself (storage.torch)
    torch_loader_class = StreamingDataLoader  # the loader LitData's users read it with
    torch_order = (
        "LitData's shuffle: chunks in a random order, the samples of a chunk shuffled within windows of 256 "
        "consecutive ids (item_shuffle_window)"
    )

    @classmethod
    def torch_dataset(
        cls,
        path: str | os.PathLike[str],
        transform: Callable | None = None,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> StreamingDataset | CombinedStreamingDataset:
        """LitData's own ``StreamingDataset`` over the store, with LitData's defaults (its seed
        when ``seed`` is None; ``batch_size`` is left to its ``StreamingDataLoader``, which tells
        the dataset).

        Samples are dicts (``image`` array, ``label``, ``id``); several parts (from appends)
        are read as one ``CombinedStreamingDataset`` that goes over all of them.
        """
        seed = LITDATA_SEED if seed is None else seed
        datasets = [
            StreamingDataset(str(part), shuffle=shuffle, seed=seed, transform=transform, batch_decode=False)
            for part in cls.committed_parts(path)
        ]
        if len(datasets) == 1:
            return datasets[0]
        return CombinedStreamingDataset(datasets, seed=seed, iterate_over_all=True)

    # -- writing ---------------------------------------------------------------------

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        if options.get("writer", "auto") not in WRITERS:
            raise ModeError(f"LitData writer {options['writer']!r} is not one of: {', '.join(WRITERS)}")

    def _begin_write(self, first_id: int, batch) -> None:
        super()._begin_write(first_id, batch)
        writer = self.options.get("writer", "auto")
        self._optimizing = writer == "optimize" or (writer == "auto" and len(batch) >= OPTIMIZE_FROM_IMAGES)

    def _chunk_length(self, batch) -> int:
        """One optimize call takes the whole batch (its workers read their own ranges of it)."""
        return len(batch) if getattr(self, "_optimizing", False) else super()._chunk_length(batch)

    def _write_stored_chunk(self, stored, start: int, stop: int, first_id: int) -> None:
        if not getattr(self, "_optimizing", False):
            super()._write_stored_chunk(stored, start, stop, first_id)
            return
        folder = self.part_path(len(self._parts))
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.mkdir(parents=True)
        except OSError as error:
            raise StoreNotWritableError(f"cannot write to {self.path}: {error}") from None
        self._check_space_for_optimize(stored, start, stop, folder)
        inputs = [
            (a, min(a + OPTIMIZE_INPUT_IMAGES, stop), first_id - start)
            for a in range(start, stop, OPTIMIZE_INPUT_IMAGES)
        ]
        _optimize(functools.partial(_samples_of, stored), inputs, folder, self.chunk_bytes)
        self._writer, self._writer_samples = OPTIMIZED, stop - start

    def _check_space_for_optimize(self, stored, start: int, stop: int, folder: Path) -> None:
        """A full disk refused before ``optimize`` starts: its worker processes hang when a write fails.

        LitData's worker that hits ENOSPC exits while its helper process waits on a queue, and
        ``optimize`` waits for both forever. The samples' own bytes are what its chunks will
        hold (LitData does not compress), so that much free space is asked for first.
        """
        nbytes = getattr(stored, "nbytes", None)
        if not nbytes or not len(stored):
            return
        needed = int(nbytes * (stop - start) / len(stored))
        if shutil.disk_usage(folder).free < needed:
            error = OSError(errno.ENOSPC, f"No space left on device: {needed:,} bytes needed", str(folder))
            raise self._write_error(error, needed)

    def _open_writer(self, folder: Path) -> BinaryWriter:
        return BinaryWriter(str(folder), chunk_bytes=self.chunk_bytes)

    def _add_sample(self, writer: BinaryWriter, index: int, image: np.ndarray, label: int, image_id: int) -> None:
        writer.add_item(index, {"image": np.ascontiguousarray(image), "label": label, "id": image_id})

    def _finish_writer(self, writer: BinaryWriter | str) -> None:
        if writer == OPTIMIZED:
            return  # optimize wrote the chunks and merged the index before it returned
        writer.done()
        writer.merge(num_workers=1)

    # -- reading ---------------------------------------------------------------------

    def _open_reader(self, folder: Path) -> StreamingDataset:
        return StreamingDataset(str(folder), batch_decode=False)

    def _read_sample(self, reader: Any, index: int) -> tuple[np.ndarray, int]:
        sample = reader[index]
        return np.asarray(sample["image"]), int(sample["label"])

    def _read_samples(self, part: int, start: int, stop: int) -> tuple[list[np.ndarray], list[int]]:
        """A run of consecutive samples through a slice of LitData's default dataset (windowed decoding)."""
        key = ("sequential", part)
        reader = self._readers.get(key)
        if reader is None:
            reader = self._readers[key] = StreamingDataset(str(self.part_path(part)))
        samples = reader[start:stop]
        return [np.asarray(sample["image"]) for sample in samples], [int(sample["label"]) for sample in samples]


def _samples_of(batch, task: tuple[int, int, int]):
    """``optimize``'s fn: the samples of one range of the batch being written (in a worker process)."""
    start, stop, id_offset = task
    for offset, image in enumerate(batch.chunk(start, stop)):
        yield {
            "image": np.ascontiguousarray(image),
            "label": int(batch.labels[start + offset]),
            "id": start + offset + id_offset,
        }


def _optimize(fn: Callable, inputs: list, folder: Path, chunk_bytes: int) -> None:
    """``litdata.optimize`` into ``folder``, in input order; the process's start method is put back after."""
    method = multiprocessing.get_start_method(allow_none=True)
    try:
        optimize(
            fn=fn,
            inputs=inputs,
            output_dir=str(folder),
            chunk_bytes=chunk_bytes,
            keep_data_ordered=True,
            reorder_files=False,
            verbose=False,
        )
    except OSError as error:
        raise StoreNotWritableError(f"cannot write to {folder}: {error}") from None
    finally:
        multiprocessing.set_start_method(method, force=True)
