"""The read operations, ``read_all``, ``read_random`` and ``read_one``, on the store a cell wrote.

* ``read_all``: every image in id order into a buffer allocated and touched beforehand;
  one ``read_all(out=...)`` call for short reads, above that ``read_batch`` calls of
  4,096 to 65,536 consecutive ids (about 0.5 s each) into slices of the same buffer, so
  progress and cancellation work during long reads. Above 512 MB of pixels the buffer
  holds one slice and is reused, each slice checked against the source with the timer
  paused (see :mod:`storage.bench.streaming`), so memory stays bounded.
* ``read_random``: min(N, 1,000) distinct seeded ids in shuffled order, one ``read_one``
  each, as a training loop would.
* ``read_one``: min(N, 100) seeded single reads, each timed on its own; a sample is their
  median latency.

The engine measures every backend's reads of one operation and cache state together
(:func:`measure_reads_together`): their repeats take turns, A B C A B C ..., so that a change
in the machine's load falls on all of them alike; each measurement records that load
(:class:`~storage.bench.machine_load.LoadMeter`). Every read is measured in each cache state the run asks for. Cold cache: before every
repeat the store is closed, evicted file by file (``posix_fadvise(DONTNEED)``), residency
is checked with ``mincore`` (``evicted`` records the answer), and the store is reopened
outside the timer. Whatever is read is compared with the source, untimed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ... import registry
from ...base import ImageStore
from ...batch import bounded_runs
from ...verify import Verification, combine, compare
from ..estimate import per_image_cost
from ..events import Measurement
from ..experiment import LATENCY_READS, images_per_sample, seeded_rng
from ..machine_load import LoadMeter
from ..run_state import (
    Cell,
    Repeat,
    Run,
    RunCancelled,
    apply_verification,
    evict_store,
    fail,
    gc_paused,
    repeats,
    rounds,
    sample_ids,
    store_was_written,
)
from ..streaming import PHOTO_SLICE_BYTES, read_slice_images, streams

log = logging.getLogger(__name__)

READ_ALL_SLICE_SECONDS = 0.5  # above this expected time, read_all is split so cancel and progress work
READ_ALL_MIN_SLICE, READ_ALL_MAX_SLICE = 4_096, 65_536

TimedRead = Callable[[Run, Cell, ImageStore, Repeat], tuple[float, Verification]]


def measure_read_all(run: Run, cell: Cell, cache: str = "warm", workers: int | None = None) -> Measurement:
    """Every image in id order, per repeat (``workers`` is the loader's and unused here)."""
    return _measure_read(run, cell, "read_all", cache, _time_read_all)


def measure_read_random(run: Run, cell: Cell, cache: str = "warm", workers: int | None = None) -> Measurement:
    """min(N, 1,000) shuffled seeded ids, one ``read_one`` each, per repeat."""
    return _measure_read(run, cell, "read_random", cache, _time_read_random)


def measure_read_one(run: Run, cell: Cell, cache: str = "warm", workers: int | None = None) -> Measurement:
    """The median latency of min(N, 100) single reads, per repeat."""
    return _measure_read(run, cell, "read_one", cache, _time_read_one)


class _Reader:
    """Opens the store to read; for the cold cache, evicts it before every repeat."""

    def __init__(self, cell: Cell, cache: str, measurement: Measurement) -> None:
        self.cell, self.cache, self.measurement = cell, cache, measurement
        self.store: ImageStore | None = None

    def prepare(self) -> ImageStore:
        """An open store, with the page cache evicted first when measuring cold reads."""
        if self.cache == "cold" or self.store is None:
            self.close()
            if self.cache == "cold":
                evict_store(self.measurement, self.cell.store_path)
            self.store = registry.open_store(self.cell.backend, self.cell.store_path, "r")
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def _measure_read(run: Run, cell: Cell, operation: str, cache: str, timed: TimedRead) -> Measurement:
    """Time ``timed`` over every repeat; a mismatch with the source is reported once, the timing goes on."""
    measurement = cell.new_measurement(run.run_id, operation, cache)
    if not store_was_written(measurement, cell):
        return measurement
    reader, meter = _Reader(cell, cache, measurement), LoadMeter()
    measurement.verified = True
    try:
        for repeat in repeats(run, cell, f"{operation} ({cache})"):
            _one_repeat(run, cell, reader, meter, timed, repeat)
    except RunCancelled:
        raise
    except Exception as error:
        fail(measurement, error)
    finally:
        reader.close()
    _finish(cell, measurement, meter)
    return measurement


TIMED_READS: dict[str, TimedRead] = {}  # filled below: operation -> its timed read


def measure_reads_together(run: Run, cells: list[Cell], operation: str, cache: str) -> list[Measurement]:
    """``operation`` on every cell's store, their repeats interleaved (A B C A B C ...); one measurement each.

    A backend whose read raises is failed and left out of the later rounds; the others go on.
    """
    timed = TIMED_READS[operation]
    measurements = [cell.new_measurement(run.run_id, operation, cache) for cell in cells]
    readers: list[_Reader | None] = []
    for cell, measurement in zip(cells, measurements):
        written = store_was_written(measurement, cell)
        measurement.verified = written
        readers.append(_Reader(cell, cache, measurement) if written else None)
    meters = [LoadMeter() for _ in cells]
    count = cells[0].count if cells else 0
    try:
        for member, repeat in rounds(run, count, [cell.backend for cell in cells], f"{operation} ({cache})"):
            reader = readers[member]
            if reader is None:
                continue
            try:
                _one_repeat(run, cells[member], reader, meters[member], timed, repeat)
            except RunCancelled:
                raise
            except Exception as error:
                fail(measurements[member], error)
                reader.close()
                readers[member] = None
    finally:
        for reader in readers:
            if reader is not None:
                reader.close()
    for cell, measurement, meter in zip(cells, measurements, meters):
        _finish(cell, measurement, meter)
    return measurements


def _one_repeat(run: Run, cell: Cell, reader: _Reader, meter: LoadMeter, timed: TimedRead, repeat: Repeat) -> None:
    """One timed read of ``cell``'s store, checked against the source (the first mismatch is kept)."""
    measurement = reader.measurement
    store = reader.prepare()
    with meter.timing():
        seconds, result = timed(run, cell, store, repeat)
    if repeat.recorded:
        measurement.samples.append(seconds)
    if measurement.error is None:
        apply_verification(measurement, result, f"{measurement.operation}, {reader.cache} cache")


def _finish(cell: Cell, measurement: Measurement, meter: LoadMeter) -> None:
    meter.fill(measurement)
    if measurement.error is None and measurement.resident_bytes and measurement.cache == "cold":
        log.warning("%s: %d bytes stayed in the page cache after eviction", cell.store_path, measurement.resident_bytes)


# -- read_all --------------------------------------------------------------------------


def read_all_slice(backend: str, count: int) -> int:
    """Ids per read_batch call when read_all is split: about 0.5 s of reading each."""
    per_image = per_image_cost(backend, "read_all")
    ids = int(READ_ALL_SLICE_SECONDS / per_image) if per_image > 0 else READ_ALL_MAX_SLICE
    return max(READ_ALL_MIN_SLICE, min(READ_ALL_MAX_SLICE, ids))


def _time_read_all(run: Run, cell: Cell, store: ImageStore, repeat: Repeat) -> tuple[float, Verification]:
    count, out = cell.count, cell.read_buffer
    if out is not None and store.uniform_shape != tuple(out.shape[1:]):
        out = None
    if out is not None and len(out) < count:
        return _time_read_all_in_slices(run, cell, store, repeat, out)
    if out is None and streams(count, cell.per_image_bytes):  # photos: never all decoded at once
        return _time_read_all_in_slices(run, cell, store, repeat, None)
    ids = np.arange(count)
    slice_ids = read_all_slice(cell.backend, cell.count)
    started = run.start_timer()
    with gc_paused():
        if count <= slice_ids:
            images, labels = store.read_all(out=out)
        else:
            images, labels = _read_slices(run, store, ids, slice_ids, out, repeat)
    seconds = run.stop_timer(started)
    return seconds, compare(images, labels, cell.images, cell.labels, ids, cell.lossless)


def _read_slices(
    run: Run, store: ImageStore, ids: np.ndarray, slice_ids: int, out: np.ndarray | None, repeat: Repeat
) -> tuple[Any, np.ndarray]:
    """Every id as read_batch calls of ``slice_ids`` into slices of ``out``, ticking between them."""
    count = len(ids)
    parts, label_parts = [], []
    for start in range(0, count, slice_ids):
        stop = min(start + slice_ids, count)
        part, part_labels = store.read_batch(ids[start:stop], None if out is None else out[start:stop])
        parts.append(part)
        label_parts.append(part_labels)
        run.tick(repeat.at(stop / count))
    labels = np.concatenate(label_parts)
    if out is not None and all(isinstance(p, np.ndarray) and np.shares_memory(p, out) for p in parts):
        return out, labels
    return [image for part in parts for image in part], labels


def _time_read_all_in_slices(
    run: Run, cell: Cell, store: ImageStore, repeat: Repeat, buffer: np.ndarray | None
) -> tuple[float, Verification]:
    """``read_all`` of a streamed count: slices into one reused buffer (or new arrays of mixed
    sizes, dropped after each slice), each checked untimed."""
    count = cell.count
    room = len(buffer) if buffer is not None else read_slice_images(cell.per_image_bytes)
    step = min(room, read_all_slice(cell.backend, count))
    bounds = _slice_bounds(cell.images, count, step) if buffer is None else None
    checked = 0
    failure: Verification | None = None
    started = run.start_timer()
    with gc_paused():
        for start, stop in bounds or [(start, min(start + step, count)) for start in range(0, count, step)]:
            part, part_labels = store.read_batch(
                np.arange(start, stop), None if buffer is None else buffer[: stop - start]
            )
            paused = time.perf_counter()
            if failure is None:
                result = compare(part, part_labels, cell.images, cell.labels, np.arange(start, stop), cell.lossless)
                checked += result.checked
                failure = None if result.verified else result
            run.paused_seconds += time.perf_counter() - paused
            run.tick(repeat.at(stop / count))
    seconds = run.stop_timer(started)
    return seconds, failure or Verification(True, checked)


def _slice_bounds(images, count: int, step: int) -> list[tuple[int, int]]:
    """Slices of at most ``step`` images and about ``PHOTO_SLICE_BYTES`` of decoded pixels each.

    Images of many sizes: a slice sized by the average image would hold, where large photos
    come in a row, many times the average (a folder that repeats each photo in a row took a
    100,000-photo bench to 2.7 GB). The source's listing knows each image's decoded shape
    (computed before the timer).
    """
    shape_of = getattr(images, "image_shape", None)
    if shape_of is None or not len(images):
        return [(start, min(start + step, count)) for start in range(0, count, step)]
    sizes = (math.prod(shape_of(index % len(images))) for index in range(count))
    return bounded_runs(sizes, step, PHOTO_SLICE_BYTES)


# -- read_random and read_one ----------------------------------------------------------


def _time_read_random(run: Run, cell: Cell, store: ImageStore, repeat: Repeat) -> tuple[float, Verification]:
    ids = seeded_rng(run.experiment.seed, cell.count, "read_random").permutation(cell.count)[
        : images_per_sample("read_random", cell.count)
    ]
    id_list = ids.tolist()
    total = len(id_list)
    # Checked (untimed) every ``batch`` reads: 1,000 decoded photos would hold 600 MB.
    batch = read_slice_images(cell.per_image_bytes) if streams(total, cell.per_image_bytes) else total
    results: list[Any] = []
    read_one = store.read_one
    verdicts: list[Verification] = []
    started = run.start_timer()
    with gc_paused():
        for position, image_id in enumerate(id_list):
            results.append(read_one(image_id))
            if not position & 15:
                run.tick(repeat.at(position / total))
            if len(results) == batch and position + 1 < total:
                paused = time.perf_counter()
                verdicts.append(_check_reads(cell, results, ids[position + 1 - len(results) : position + 1]))
                results = []
                run.paused_seconds += time.perf_counter() - paused
    seconds = run.stop_timer(started)
    verdicts.append(_check_reads(cell, results, ids[total - len(results) : total]))
    return seconds, combine(verdicts)


def _check_reads(cell: Cell, results: list, ids: np.ndarray) -> Verification:
    """Compare ``read_one`` results for ``ids`` with the source."""
    images, labels = [image for image, _ in results], [label for _, label in results]
    return compare(images, labels, cell.images, cell.labels, ids, cell.lossless)


def _time_read_one(run: Run, cell: Cell, store: ImageStore, repeat: Repeat) -> tuple[float, Verification]:
    ids = sample_ids(run, cell.count, LATENCY_READS, "read_one")
    rng = seeded_rng(run.experiment.seed, cell.count, "read_one order")
    ids = ids[rng.permutation(len(ids))]
    latencies, images, labels = [], [], []
    read_one = store.read_one
    with run.timed_section(), gc_paused():
        for position, image_id in enumerate(ids.tolist()):
            started = time.perf_counter()
            image, label = read_one(image_id)
            latencies.append(time.perf_counter() - started)
            images.append(image)
            labels.append(label)
            run.tick(repeat.at(position / len(ids)))
    return float(np.median(latencies)), compare(images, labels, cell.images, cell.labels, ids, cell.lossless)


TIMED_READS.update(read_all=_time_read_all, read_random=_time_read_random, read_one=_time_read_one)

__all__ = [
    "TIMED_READS",
    "measure_read_all",
    "measure_read_one",
    "measure_read_random",
    "measure_reads_together",
    "read_all_slice",
]
