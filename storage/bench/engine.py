"""Run an experiment: write and read every backend's stores, timing only the storage calls.

For each image count (outer loop, so every backend works on the same images close
together in time) and each backend, the engine writes a store in a fresh folder under
``<work_dir>/<run id>/``, reads it back in each cache state, and records one
:class:`Measurement` per (backend, count, operation, cache). Data preparation, buffer
allocation, eviction, verification and progress reporting all happen outside the timers
(time spent in progress callbacks during a timed call is measured and subtracted).

Methods, per operation (one sample per repeat; one unrecorded warm-up repeat for counts
up to 1,000):

* ``write_batch``: open a new store + one ``write_batch`` of N images + ``close``. No
  extra fsync is added (a backend's own commit may sync: LMDB's does); when the cold
  cache is measured, the ``os.sync()`` that follows is timed separately (``sync_seconds``).
  Before each timed write (``write_one`` too), about the store's size of memory is put
  through the page cache and freed, untimed, so the write does not pay for memory the
  virtual machine has to fetch from its host (see ``_back_memory_for_write``).
* ``write_one``: open + N ``write_one`` calls + ``close``. The ``close``, which writes
  the last write-behind group where the backend keeps one, is also timed on its own
  (``flush_seconds``, median of the repeats; included in the samples).
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
* ``loader``: one shuffled epoch through a PyTorch DataLoader per worker count, beside the
  same DataLoader over the images in memory (see :mod:`storage.bench.loader`, which is
  imported, with torch, only when a run measures it).

Each repeat of a write goes into a new folder, and the stores already measured are kept
until the run ends (within a quarter of the free disk space), in a run folder the file
system places apart from other runs (:mod:`storage.bench.placement`): on ext4 without a
journal, writing where the previous repeat's files had just been deleted cost a PNG store
about 800 µs per file instead of 30, which measured the benchmark's own clean-up. The
last repeat's store is renamed to ``store`` (or ``write_one``), the name the reads and
``--keep`` use. Without ``keep`` the run's files are deleted at the end and its empty
folders by a run at least ten minutes later.

Cold cache: before every repeat the store is closed, synced and evicted file by file
(``posix_fadvise(DONTNEED)``), residency is checked with ``mincore`` (``evicted`` records
the answer), and the store is reopened outside the timer.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .. import datasets, registry
from ..base import ImageStore, measure_disk_usage
from ..errors import DiskSpaceError
from . import pagecache
from .environment import capture_environment, peak_rss_bytes
from .estimate import estimate_experiment, per_image_cost
from .events import (
    Event,
    Measurement,
    MeasurementRecorded,
    PreviewReady,
    Progress,
    RunFinished,
    RunStarted,
    RunSummary,
    fill_rates,
)
from .experiment import (
    CEILING_BACKEND,
    LATENCY_READS,
    LOADER,
    READ_OPERATIONS,
    WARMUP_MAX_COUNT,
    Experiment,
    InvalidExperimentError,
    images_per_sample,
    seeded_rng,
    steps,
    validate,
    verified_after_write,
)
from .placement import (
    RetiredStores,
    delete_files,
    fresh_store_path,
    new_run_id,
    remove_spent_run_folders,
    spread_folder,
)
from .streaming import cycled_source, read_buffer_for
from .verify import Verification, compare, verify_store

log = logging.getLogger(__name__)

WARM_MEMORY_MIN_BYTES, WARM_MEMORY_MAX_BYTES = 16 * 2**20, 2**30  # see _back_memory_for_write
WARM_MEMORY_BLOCK_BYTES = 4 * 2**20
READ_ALL_SLICE_SECONDS = 0.5  # above this expected time, read_all is split so cancel and progress work
READ_ALL_MIN_SLICE, READ_ALL_MAX_SLICE = 4_096, 65_536
PROGRESS_INTERVAL = 0.25  # seconds between Progress events inside long operations

METHODS = {
    "write_batch": "open + write_batch(N) + close; no extra fsync",
    "write_one": "open + N x write_one + close (close also timed alone: flush_seconds); no extra fsync",
    "read_all": "read_all(out=) into a pre-touched buffer; for long reads, read_batch over consecutive slices "
    "of it expected to take ~0.5 s each (4,096 to 65,536 ids); above 512 MB one reused slice buffer, "
    "each slice verified with the timer paused",
    "read_random": "min(N, 1,000) shuffled seeded ids, one read_one each",
    "read_one": "median latency of min(N, 100) single read_one calls",
    "loader": "one shuffled epoch of DataLoader(dataset, batch_size, shuffle=True, num_workers=w) per sample, "
    "worker start-up included; batches copied out and verified outside the timer",
}


class RunCancelled(Exception):
    """Raised inside a run (also from write_batch's progress callback) to stop it."""


@contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class _Run:
    """The state one run carries from measurement to measurement."""

    run_id: str
    experiment: Experiment
    run_dir: Path
    source: Any
    db: Any
    on_event: Callable[[Event], None] | None
    cancel: threading.Event | None
    interrupt: threading.Event | None
    weights: list[float]
    plan: list[tuple[str, int, str, str]]
    retired: RetiredStores  # stores measured, deleted when the run ends (see storage.bench.placement)
    measurements: list[Measurement] = field(default_factory=list)
    ceilings: dict[tuple[int, int], float] = field(default_factory=dict)  # (count, workers) -> images/s in memory
    step: int = 0
    done_weight: float = 0.0
    last_progress: float = 0.0
    paused_seconds: float = 0.0
    message: str = ""

    # -- events ----------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def check_cancel(self) -> None:
        """Stop here if asked to: the checks sit where a run can stop cleanly.

        An interrupt (a signal, see ``run_experiment``) is raised as KeyboardInterrupt here
        rather than from the signal handler, which could land anywhere: inside a worker
        pool's start-up, or in a ``__del__`` that swallows it.
        """
        if self.interrupt is not None and self.interrupt.is_set():
            raise KeyboardInterrupt
        if self.cancel is not None and self.cancel.is_set():
            raise RunCancelled("the run was cancelled")

    def fraction(self, inner: float) -> float:
        total = sum(self.weights) or 1.0
        weight = self.weights[self.step] if self.step < len(self.weights) else 0.0
        return min(1.0, (self.done_weight + max(0.0, min(1.0, inner)) * weight) / total)

    def progress(self, inner: float, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        self.last_progress = time.perf_counter()
        self.emit(Progress(self.run_id, self.step, len(self.plan), self.message, self.fraction(inner)))

    def tick(self, inner: float) -> None:
        """Check for cancel and report progress every ~0.25 s; time spent here is paused."""
        self.check_cancel()
        now = time.perf_counter()
        if now - self.last_progress >= PROGRESS_INTERVAL:
            self.progress(inner)
            self.paused_seconds += time.perf_counter() - now

    def record(self, measurement: Measurement) -> Measurement:
        fill_rates(measurement)
        measurement.peak_rss_bytes = peak_rss_bytes()
        self.measurements.append(measurement)
        if self.db is not None:
            self.db.add_measurement(measurement)
        self.emit(MeasurementRecorded(self.run_id, measurement))
        self.done_weight += self.weights[self.step] if self.step < len(self.weights) else 0.0
        self.step += 1
        return measurement

    # -- timing ----------------------------------------------------------------------

    def start_timer(self) -> float:
        self.paused_seconds = 0.0
        return time.perf_counter()

    def stop_timer(self, started: float) -> float:
        return time.perf_counter() - started - self.paused_seconds


@dataclass
class _Cell:
    """One backend at one image count: its images and the stores it writes."""

    backend: str
    count: int
    images: np.ndarray | list[np.ndarray]
    labels: np.ndarray
    pixel_bytes: int
    folder: Path
    options: dict[str, Any]
    lossless: bool
    read_buffer: np.ndarray | None
    store_path: Path | None = None
    write_failed: str | None = None
    previewed: bool = False

    @property
    def batch_store(self) -> Path:
        return self.folder / "store"

    @property
    def one_store(self) -> Path:
        return self.folder / "write_one"


def _remove(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _settle(written: Path, final: Path) -> Path:
    """Give the last repeat's store its fixed name (``store``, ``write_one``): a rename, no copy."""
    _remove(final)
    written.rename(final)
    return final


def _settle_stopped_write(path: Path | None, final: Path) -> None:
    """In a kept run, give a write that stopped midway its usual name too."""
    if path is not None and path != final and path.exists():
        _settle(path, final)


def _runs_of(count: int, repeats: int) -> tuple[int, int]:
    """(warm-up runs, total runs): one unrecorded warm-up for small counts."""
    warmup = 1 if count <= WARMUP_MAX_COUNT else 0
    return warmup, warmup + repeats


def _measurement(run: _Run, cell: _Cell, operation: str, cache: str) -> Measurement:
    images = images_per_sample(operation, cell.count)
    per_image = cell.pixel_bytes / cell.count
    return Measurement(
        run_id=run.run_id,
        backend=cell.backend,
        count=cell.count,
        operation=operation,
        cache=cache,
        images=images,
        pixel_bytes=int(round(per_image * images)),
        warmup=cell.count <= WARMUP_MAX_COUNT,
        method=METHODS[operation],
    )


def _set_disk(measurement: Measurement, path: Path) -> None:
    usage = measure_disk_usage(path)
    measurement.apparent_bytes = usage.apparent_bytes
    measurement.allocated_bytes = usage.allocated_bytes
    measurement.files = usage.files


def _fail(measurement: Measurement, error: BaseException | str) -> None:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    measurement.error = text
    measurement.verified = False


def _apply_verification(measurement: Measurement, result: Verification, what: str) -> bool:
    if result.psnr is not None:
        measurement.psnr = result.psnr if measurement.psnr is None else min(measurement.psnr, result.psnr)
    if not result.verified:
        _fail(measurement, f"VERIFICATION FAILED ({what}): {result.error}")
        return False
    return True


# -- writes --------------------------------------------------------------------------


def _back_memory_for_write(store_bytes: int, folder: Path) -> None:
    """Put about ``store_bytes`` through the page cache and free it, untimed, just before a timed write.

    A write fills the page cache with the new store. On a virtual machine that gives freed
    memory back to its host (as the development machine does), the first touch of such
    memory costs 1.2-2.5 s per GB, against 0.13 s right after a free: a new 100,000-image
    LMDB store took 0.5-0.9 s to write instead of 0.17 s when the page cache had to grow
    into it, and how much of that a write paid depended on what ran before it. Zeros
    written to an unlinked file and dropped with it touch that memory without adding to
    this process's peak RSS (an array would), and are never written to disk. Capped at a
    quarter of the available memory and 1 GiB; small writes skip it.
    """
    size = min(int(store_bytes * 1.1), WARM_MEMORY_MAX_BYTES, psutil.virtual_memory().available // 4)
    if size < WARM_MEMORY_MIN_BYTES:
        return
    zeros = memoryview(bytes(WARM_MEMORY_BLOCK_BYTES))
    try:
        with tempfile.TemporaryFile(dir=folder) as scratch:
            for offset in range(0, size, len(zeros)):
                os.pwrite(scratch.fileno(), zeros[: min(len(zeros), size - offset)], offset)
    except OSError:  # a full disk: the write that follows reports it properly
        pass


def _measure_write_batch(run: _Run, cell: _Cell) -> Measurement:
    measurement = _measurement(run, cell, "write_batch", "warm")
    warmup, runs = _runs_of(cell.count, run.experiment.repeats)
    path = None
    try:
        for index in range(runs):
            run.check_cancel()
            label = "warm-up" if index < warmup else f"repeat {index - warmup + 1}/{runs - warmup}"
            run.progress(index / runs, f"{cell.backend} · {cell.count:,} images · write_batch · {label}")
            run.retired.retire(path, cell.pixel_bytes)
            path = fresh_store_path(_made(cell.folder), "store")
            _back_memory_for_write(cell.pixel_bytes, cell.folder)

            def on_chunk(done: int, total: int, index: int = index) -> None:
                paused = time.perf_counter()
                run.check_cancel()
                run.progress((index + done / total) / runs)
                run.paused_seconds += time.perf_counter() - paused

            started = run.start_timer()
            with _gc_paused():
                store = registry.open_store(cell.backend, path, "w", **cell.options)
                try:
                    store.write_batch(cell.images, cell.labels, progress=on_chunk)
                finally:
                    store.close()
            seconds = run.stop_timer(started)
            if index >= warmup:
                measurement.samples.append(seconds)
        if "cold" in run.experiment.caches:
            started = time.perf_counter()
            os.sync()
            measurement.sync_seconds = time.perf_counter() - started
        path = _settle(path, cell.batch_store)
        _set_disk(measurement, path)
        cell.store_path = path
        checked = verified_after_write(run.experiment, "write_batch", cell.count)
        ids = None if checked == cell.count else _sample_ids(run, cell.count, checked, "verify")
        measurement.verified = _apply_verification(
            measurement,
            verify_store(cell.backend, path, cell.images, cell.labels, ids),
            f"{checked:,} images read back after writing",
        )
    except RunCancelled:
        raise
    except Exception as error:
        _fail(measurement, error)
        cell.write_failed = measurement.error
    finally:
        if run.experiment.keep:
            _settle_stopped_write(path, cell.batch_store)
    return measurement


def _measure_write_one(run: _Run, cell: _Cell) -> Measurement:
    measurement = _measurement(run, cell, "write_one", "warm")
    warmup, runs = _runs_of(cell.count, run.experiment.repeats)
    path = None
    images, labels, count = cell.images, cell.labels, cell.count
    flushes: list[float] = []
    try:
        for index in range(runs):
            run.check_cancel()
            label = "warm-up" if index < warmup else f"repeat {index - warmup + 1}/{runs - warmup}"
            run.progress(index / runs, f"{cell.backend} · {count:,} images · write_one · {label}")
            run.retired.retire(path, cell.pixel_bytes)
            path = fresh_store_path(_made(cell.folder), "write_one")
            _back_memory_for_write(cell.pixel_bytes, cell.folder)
            started = run.start_timer()
            with _gc_paused():
                store = registry.open_store(cell.backend, path, "w", **cell.options)
                closing = None
                try:
                    for position in range(count):
                        store.write_one(images[position], labels[position])
                        run.tick((index + position / count) / runs)
                    closing = time.perf_counter()
                finally:
                    store.close()
                flush = time.perf_counter() - closing
            seconds = run.stop_timer(started)
            if index >= warmup:
                measurement.samples.append(seconds)
                flushes.append(flush)
        measurement.flush_seconds = float(np.median(flushes)) if flushes else None
        path = _settle(path, cell.one_store)
        _set_disk(measurement, path)
        checked = verified_after_write(run.experiment, "write_one", count)
        measurement.verified = _apply_verification(
            measurement,
            verify_store(cell.backend, path, images, labels, _sample_ids(run, count, checked, "verify")),
            f"{checked:,} images read back after writing",
        )
        if cell.store_path is None and measurement.verified:
            _preview(run, cell, path)
    except RunCancelled:
        raise
    except Exception as error:
        _fail(measurement, error)
    finally:
        if run.experiment.keep:
            _settle_stopped_write(path, cell.one_store)
        else:
            run.retired.retire(path, cell.pixel_bytes)
    return measurement


def _write_store_for_reads(run: _Run, cell: _Cell) -> None:
    """Write the store that reads use when write_batch itself is not measured."""
    run.progress(0.0, f"{cell.backend} · {cell.count:,} images · writing the store to read")
    written = fresh_store_path(_made(cell.folder), "store")
    with registry.open_store(cell.backend, written, "w", **cell.options) as store:
        store.write_batch(cell.images, cell.labels, progress=lambda done, total: run.tick(0.0))
    path = _settle(written, cell.batch_store)
    result = verify_store(cell.backend, path, cell.images, cell.labels)
    if not result.verified:
        raise RuntimeError(f"VERIFICATION FAILED (the store written for reading): {result.error}")
    cell.store_path = path


def _sample_ids(run: _Run, count: int, size: int, purpose: str) -> np.ndarray:
    return np.sort(seeded_rng(run.experiment.seed, count, purpose).choice(count, size=min(size, count), replace=False))


def _preview(run: _Run, cell: _Cell, path: Path) -> None:
    """Read the same seeded ids back from this store and hand them to the UI."""
    if run.experiment.preview_ids <= 0 or cell.previewed:
        return
    cell.previewed = True
    ids = _sample_ids(run, cell.count, run.experiment.preview_ids, "preview")
    images, labels = [], []
    error = None
    try:
        with registry.open_store(cell.backend, path, "r") as store:
            for image_id in ids:
                image, label = store.read_one(int(image_id))
                images.append(image)
                labels.append(int(label))
        result = compare(images, labels, cell.images, cell.labels, ids, cell.lossless)
    except Exception as failure:  # the measurements report the failure; a preview only shows it
        result = Verification(False, 0, error=str(failure))
        error = failure
    if error is not None:
        log.warning("preview of %s failed: %s", path, error)
    run.emit(
        PreviewReady(
            run.run_id,
            cell.backend,
            cell.count,
            [int(i) for i in ids],
            images,
            labels,
            list(run.source.class_names),
            result.verified,
            result.psnr,
        )
    )


# -- reads ---------------------------------------------------------------------------


def _evict_store(measurement: Measurement, path: Path) -> None:
    """Evict every file of the store from the page cache; record whether it worked."""
    residency = pagecache.evict(path)
    measurement.resident_bytes = max(measurement.resident_bytes or 0, residency.resident_bytes)
    evicted = residency.resident_bytes == 0
    measurement.evicted = evicted if measurement.evicted in (None, True) else False


class _Reader:
    """Opens the store to read; for the cold cache, evicts it before every repeat."""

    def __init__(self, run: _Run, cell: _Cell, cache: str, measurement: Measurement) -> None:
        self.run, self.cell, self.cache, self.measurement = run, cell, cache, measurement
        self.store: ImageStore | None = None

    def prepare(self) -> ImageStore:
        """An open store, with the page cache evicted first when measuring cold reads."""
        if self.cache == "cold" or self.store is None:
            self.close()
            if self.cache == "cold":
                _evict_store(self.measurement, self.cell.store_path)
            self.store = registry.open_store(self.cell.backend, self.cell.store_path, "r")
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def _store_was_written(measurement: Measurement, cell: _Cell) -> bool:
    """Whether ``cell``'s store exists to read; if not, ``measurement`` says why it was not measured."""
    if cell.store_path is None:
        _fail(measurement, f"not measured: the store could not be written ({cell.write_failed or 'unknown error'})")
        return False
    _set_disk(measurement, cell.store_path)
    return True


def _measure_read(run: _Run, cell: _Cell, operation: str, cache: str) -> Measurement:
    measurement = _measurement(run, cell, operation, cache)
    if not _store_was_written(measurement, cell):
        return measurement
    warmup, runs = _runs_of(cell.count, run.experiment.repeats)
    reader = _Reader(run, cell, cache, measurement)
    timed = {"read_all": _time_read_all, "read_random": _time_read_random, "read_one": _time_read_one}[operation]
    measurement.verified = True
    try:
        for index in range(runs):
            run.check_cancel()
            label = "warm-up" if index < warmup else f"repeat {index - warmup + 1}/{runs - warmup}"
            run.progress(index / runs, f"{cell.backend} · {cell.count:,} images · {operation} ({cache}) · {label}")
            store = reader.prepare()
            seconds, result = timed(run, cell, store, (index, runs))
            if index >= warmup:
                measurement.samples.append(seconds)
            if measurement.error is None:  # a mismatch is reported once, the timing goes on
                _apply_verification(measurement, result, f"{operation}, {cache} cache")
    except RunCancelled:
        raise
    except Exception as error:
        _fail(measurement, error)
    finally:
        reader.close()
    if measurement.error is None and measurement.resident_bytes and cache == "cold":
        log.warning("%s: %d bytes stayed in the page cache after eviction", cell.store_path, measurement.resident_bytes)
    return measurement


def read_all_slice(backend: str, count: int) -> int:
    """Ids per read_batch call when read_all is split: about 0.5 s of reading each."""
    per_image = per_image_cost(backend, "read_all")
    ids = int(READ_ALL_SLICE_SECONDS / per_image) if per_image > 0 else READ_ALL_MAX_SLICE
    return max(READ_ALL_MIN_SLICE, min(READ_ALL_MAX_SLICE, ids))


def _time_read_all(run: _Run, cell: _Cell, store: ImageStore, position: tuple[int, int]) -> tuple[float, Verification]:
    index, runs = position
    count, out = cell.count, cell.read_buffer
    if out is not None and store.uniform_shape != tuple(out.shape[1:]):
        out = None
    if out is not None and len(out) < count:
        return _time_read_all_in_slices(run, cell, store, position, out)
    ids = np.arange(count)
    slice_ids = read_all_slice(cell.backend, cell.count)
    started = run.start_timer()
    with _gc_paused():
        if count <= slice_ids:
            images, labels = store.read_all(out=out)
        else:
            parts, label_parts = [], []
            for start in range(0, count, slice_ids):
                stop = min(start + slice_ids, count)
                part, part_labels = store.read_batch(ids[start:stop], None if out is None else out[start:stop])
                parts.append(part)
                label_parts.append(part_labels)
                run.tick((index + stop / count) / runs)
            labels = np.concatenate(label_parts)
            if out is not None and all(isinstance(p, np.ndarray) and np.shares_memory(p, out) for p in parts):
                images = out
            else:
                images = [image for part in parts for image in part]
    seconds = run.stop_timer(started)
    return seconds, compare(images, labels, cell.images, cell.labels, ids, cell.lossless)


def _time_read_all_in_slices(
    run: _Run, cell: _Cell, store: ImageStore, position: tuple[int, int], buffer: np.ndarray
) -> tuple[float, Verification]:
    """``read_all`` of a streamed count: slices into one reused buffer, each checked untimed."""
    index, runs = position
    count = cell.count
    step = min(len(buffer), read_all_slice(cell.backend, count))
    checked = 0
    failure: Verification | None = None
    started = run.start_timer()
    with _gc_paused():
        for start in range(0, count, step):
            stop = min(start + step, count)
            part, part_labels = store.read_batch(np.arange(start, stop), buffer[: stop - start])
            paused = time.perf_counter()
            if failure is None:
                result = compare(part, part_labels, cell.images, cell.labels, np.arange(start, stop), cell.lossless)
                checked += result.checked
                failure = None if result.verified else result
            run.paused_seconds += time.perf_counter() - paused
            run.tick((index + stop / count) / runs)
    seconds = run.stop_timer(started)
    return seconds, failure or Verification(True, checked)


def _time_read_random(
    run: _Run, cell: _Cell, store: ImageStore, position: tuple[int, int]
) -> tuple[float, Verification]:
    index, runs = position
    ids = seeded_rng(run.experiment.seed, cell.count, "read_random").permutation(cell.count)[
        : images_per_sample("read_random", cell.count)
    ]
    id_list = ids.tolist()
    total = len(id_list)
    results: list[Any] = [None] * total
    read_one = store.read_one
    started = run.start_timer()
    with _gc_paused():
        for position_in_loop, image_id in enumerate(id_list):
            results[position_in_loop] = read_one(image_id)
            if not position_in_loop & 15:
                run.tick((index + position_in_loop / total) / runs)
    seconds = run.stop_timer(started)
    images = [image for image, _ in results]
    labels = [label for _, label in results]
    return seconds, compare(images, labels, cell.images, cell.labels, ids, cell.lossless)


def _time_read_one(run: _Run, cell: _Cell, store: ImageStore, position: tuple[int, int]) -> tuple[float, Verification]:
    index, runs = position
    ids = _sample_ids(run, cell.count, LATENCY_READS, "read_one")
    rng = seeded_rng(run.experiment.seed, cell.count, "read_one order")
    ids = ids[rng.permutation(len(ids))]
    latencies, images, labels = [], [], []
    read_one = store.read_one
    with _gc_paused():
        for position_in_loop, image_id in enumerate(ids.tolist()):
            started = time.perf_counter()
            image, label = read_one(image_id)
            latencies.append(time.perf_counter() - started)
            images.append(image)
            labels.append(label)
            run.tick((index + position_in_loop / len(ids)) / runs)
    return float(np.median(latencies)), compare(images, labels, cell.images, cell.labels, ids, cell.lossless)


# -- the run -------------------------------------------------------------------------


def _run_cell(run: _Run, cell: _Cell) -> None:
    experiment = run.experiment
    try:
        if "write_batch" in experiment.operations:
            run.record(_measure_write_batch(run, cell))
            if cell.store_path is not None:
                _preview(run, cell, cell.store_path)
        if "write_one" in experiment.operations:
            run.record(_measure_write_one(run, cell))
        reads = [op for op in experiment.operations if op in READ_OPERATIONS]
        loader = LOADER in experiment.operations
        if (reads or loader) and cell.store_path is None and cell.write_failed is None:
            try:
                _write_store_for_reads(run, cell)
                _preview(run, cell, cell.store_path)
            except RunCancelled:
                raise
            except Exception as error:
                cell.write_failed = f"{type(error).__name__}: {error}"
        for cache in experiment.caches:
            for operation in reads:
                run.record(_measure_read(run, cell, operation, cache))
            if loader:
                from .loader import measure_loader

                for workers in experiment.workers:
                    run.record(measure_loader(run, cell, cache, workers))
    finally:
        if not experiment.keep:  # deleted when the run ends, so that no inode is freed mid-run
            run.retired.retire(cell.store_path, cell.pixel_bytes)


def _measure_ceilings(run: _Run, images, labels: np.ndarray, read_buffer: np.ndarray | None) -> None:
    """The loader over the images in memory, at every worker count: the reference for this count."""
    from .loader import measure_ceiling

    count = len(labels)
    cell = _Cell(
        backend=CEILING_BACKEND,
        count=count,
        images=images,
        labels=labels,
        pixel_bytes=int(images.nbytes if isinstance(images, np.ndarray) else sum(i.nbytes for i in images)),
        folder=run.run_dir / CEILING_BACKEND / str(count),
        options={},
        lossless=True,
        read_buffer=read_buffer,
    )
    for workers in run.experiment.workers:
        run.record(measure_ceiling(run, cell, workers))


def _source_summary(experiment: Experiment, source: Any) -> dict[str, Any]:
    return {
        "spec": experiment.source,
        "kind": source.kind,
        "root": str(source.root),
        "description": source.description,
        "images": len(source.labels),
        "class_names": list(source.class_names),
    }


def _mean_image_bytes(images: np.ndarray | Sequence[np.ndarray]) -> float:
    if isinstance(images, np.ndarray):
        return images.nbytes / max(1, len(images))
    return sum(image.nbytes for image in images) / max(1, len(images))


def _make_run_dir(work_dir: str, run_id: str | None = None) -> tuple[str, Path]:
    spread_folder(Path(work_dir))  # each run's folder in a block group of its own (storage.bench.placement)
    if run_id is not None:  # chosen by the caller (the dashboard shows it before the run starts)
        run_dir = Path(work_dir) / run_id
        run_dir.mkdir()
        return run_id, run_dir
    while True:
        run_id = new_run_id()
        run_dir = Path(work_dir) / run_id
        try:
            run_dir.mkdir()
            return run_id, run_dir
        except FileExistsError:
            continue


def remove_leftover_folders(work_dir: str, db: Any) -> list[str]:
    """Remove folders that runs killed midway left in ``work_dir`` (they are marked interrupted)."""
    removed = []
    folder = Path(work_dir)
    if db is None or not folder.is_dir():
        return removed
    for child in folder.iterdir():
        if not child.is_dir():
            continue
        record = db.get_run(child.name)
        if record is not None and record.status == "interrupted" and not record.parameters.get("keep"):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


def _failure_summary(measurements: list[Measurement]) -> str | None:
    failed = [m for m in measurements if m.error or not m.verified]
    if not failed:
        return None
    first = failed[0]
    verification = [m for m in failed if (m.error or "").startswith("VERIFICATION FAILED")]
    lead = "VERIFICATION FAILED: " if verification else ""
    first = verification[0] if verification else first
    return (
        f"{lead}{len(failed)} of {len(measurements)} measurements failed; first: {first.backend}, "
        f"{first.count:,} images, {first.operation} ({first.cache}): {first.error}"
    )


def run_experiment(
    experiment: Experiment,
    db: Any = None,
    on_event: Callable[[Event], None] | None = None,
    cancel: threading.Event | None = None,
    run_id: str | None = None,
    interrupt: threading.Event | None = None,
) -> RunSummary:
    """Run ``experiment`` and return how it went; measurements go to ``db`` as they finish.

    Args:
        experiment: what to measure.
        db: a :class:`ResultsDB` to record the run in (None: record nothing).
        on_event: called with every :class:`RunStarted`, :class:`Progress`,
            :class:`MeasurementRecorded`, :class:`PreviewReady` and :class:`RunFinished`,
            in the thread running the experiment.
        cancel: set it (from any thread) to stop the run within about a second.
        run_id: the run's id, when the caller has chosen one already (default: a new one).
        interrupt: set it (from a signal handler, say) to end the run as ``interrupted``
            within about a second, as KeyboardInterrupt does, but at a point where the run
            can stop cleanly.

    Returns:
        A :class:`RunSummary`; its status is ``finished``, ``cancelled``, ``failed`` (a
        measurement failed or a read did not match the source: see ``error``) or
        ``interrupted`` (only seen in the database: KeyboardInterrupt is re-raised).

    Raises:
        UnknownBackendError, InvalidExperimentError: bad parameters, before anything runs.
        DataNotFoundError, CorruptDataError, BadImageFileError: the source cannot be loaded.
        ImageShapeError: a backend cannot store the source's images (channels, mixed sizes).
        DiskSpaceError: the run needs more disk space than is free.
        InvalidExperimentError: (also) the run needs more memory than is available.
    """
    started = time.perf_counter()
    experiment = validate(experiment)
    source = datasets.load_source(experiment.source, skip_bad=experiment.skip_bad)
    for backend in experiment.backends:  # before anything runs, not after the other backends
        registry.check_backend_takes(backend, source.images, source.description)
    estimate = estimate_experiment(experiment, db, raw_image_bytes=_mean_image_bytes(source.images))
    if not estimate.disk_fits:
        raise DiskSpaceError(estimate.message)
    if not estimate.memory_fits:
        raise InvalidExperimentError(estimate.message)
    remove_leftover_folders(experiment.work_dir, db)
    remove_spent_run_folders(Path(experiment.work_dir))
    run_id, run_dir = _make_run_dir(experiment.work_dir, run_id)
    environment = capture_environment(experiment.work_dir)
    plan = steps(experiment)
    retired = RetiredStores.for_folder(run_dir)
    run = _Run(
        run_id, experiment, run_dir, source, db, on_event, cancel, interrupt, estimate.step_seconds, plan, retired
    )
    if db is not None:
        db.create_run(run_id, experiment.to_dict(), environment, _source_summary(experiment, source))
    status, error = "failed", None
    interrupted: BaseException | None = None
    try:
        run.emit(RunStarted(run_id, len(plan), experiment, environment))
        for count in experiment.counts:
            run.check_cancel()
            # the loader fills one buffer of the whole count, so its runs are not streamed
            images, labels = cycled_source(source.images, source.labels, count, LOADER not in experiment.operations)
            read_buffer = read_buffer_for(images)
            if LOADER in experiment.operations:
                _measure_ceilings(run, images, labels, read_buffer)
            for backend in experiment.backends:
                cell = _Cell(
                    backend=backend,
                    count=count,
                    images=images,
                    labels=labels,
                    pixel_bytes=int(images.nbytes if hasattr(images, "nbytes") else sum(i.nbytes for i in images)),
                    folder=run_dir / backend / str(count),
                    options=experiment.backend_options.get(backend, {}),
                    lossless=registry.backend_info(backend).lossless,
                    read_buffer=read_buffer,
                )
                _run_cell(run, cell)
            del images, labels, read_buffer
        error = _failure_summary(run.measurements)
        status = "failed" if error else "finished"
        run.progress(1.0, "done")
    except RunCancelled:
        status, error = "cancelled", "cancelled by the user"
    except KeyboardInterrupt as stop:
        status, error, interrupted = "interrupted", "interrupted (KeyboardInterrupt)", stop
    except Exception as failure:
        log.exception("run %s failed", run_id)
        status, error = "failed", f"{type(failure).__name__}: {failure}"
    finally:
        run.retired.delete_all(keep_folders=not experiment.keep)  # a kept run shows only its last stores
        if not experiment.keep:
            delete_files(run_dir)  # its empty folders go in a run ten minutes later (see placement)
        environment["peak_rss_bytes"] = peak_rss_bytes()
        if db is not None:
            db.finish_run(run_id, status, error, environment)
        run.emit(RunFinished(run_id, status, error))
    if interrupted is not None:
        raise interrupted
    return RunSummary(
        run_id=run_id,
        status=status,
        measurements=run.measurements,
        error=error,
        environment=environment,
        run_dir=str(run_dir),
        wall_seconds=time.perf_counter() - started,
        peak_rss_bytes=environment["peak_rss_bytes"],
        source_description=source.description,
    )
