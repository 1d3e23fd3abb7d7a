"""The write operations, ``write_batch`` and ``write_one``, and the store the reads use.

* ``write_batch``: open a new store + one ``write_batch`` of N images + ``close``. No
  extra fsync is added (a backend's own commit may sync: LMDB's does); when the cold
  cache is measured, the ``os.sync()`` that follows is timed separately (``sync_seconds``).
* ``write_one``: open + N ``write_one`` calls + ``close``. The ``close``, which writes
  the last write-behind group where the backend keeps one, is also timed on its own
  (``flush_seconds``, median of the repeats; included in the samples).

Before each timed write, about the store's size of memory is put through the page cache
and freed, untimed (:func:`back_memory_for_write`). Each repeat writes into a new folder
(:func:`storage.bench.placement.fresh_store_path`); the stores already measured are
retired, deleted when the run ends, and the last repeat's store is renamed to ``store``
(or ``write_one``), the name the reads and ``--keep`` use. The store written is then read
back and compared with the source, and a few of its images go to the UI as a preview.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from ... import registry
from ...base import measure_disk_usage
from ...encodings import SOURCE, Encoding
from ...verify import Verification, compare, verify_store
from ..events import Measurement, PreviewReady
from ..experiment import verified_after_write
from ..machine_load import LoadMeter
from ..placement import fresh_store_path
from ..run_state import (
    Cell,
    Repeat,
    Run,
    RunCancelled,
    apply_verification,
    fail,
    gc_paused,
    repeats,
    sample_ids,
    set_disk,
)

log = logging.getLogger(__name__)

WARM_MEMORY_MIN_BYTES, WARM_MEMORY_MAX_BYTES = 16 * 2**20, 2**30  # see back_memory_for_write
WARM_MEMORY_BLOCK_BYTES = 4 * 2**20
WRITE_ONE_INPUT_CHUNK = 256  # photos prepared for write_one at a time, outside the timer


def back_memory_for_write(store_bytes: int, folder: Path) -> None:
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


# -- write_batch -----------------------------------------------------------------------


def measure_write_batch(run: Run, cell: Cell, cache: str = "warm", workers: int | None = None) -> Measurement:
    """Each repeat writes a new store with one ``write_batch``; the last is kept as the store to read.

    Writes are measured once, as "warm" (``cache`` and ``workers`` are the operations'
    common arguments and unused here).
    """
    measurement = cell.new_measurement(run.run_id, "write_batch")
    path, meter = None, LoadMeter()
    try:
        load_library(cell.backend)
        for repeat in repeats(run, cell, "write_batch"):
            run.retired.retire(path, cell.pixel_bytes)
            path = fresh_store_path(_made(cell.folder), "store")
            back_memory_for_write(cell.pixel_bytes, cell.folder)
            with meter.timing():
                seconds = _time_write_batch(run, cell, path, repeat)
            if repeat.recorded:
                measurement.samples.append(seconds)
        meter.fill(measurement)
        if "cold" in run.experiment.caches:
            started = time.perf_counter()
            os.sync()
            measurement.sync_seconds = time.perf_counter() - started
        path = _settle(path, cell.batch_store)
        set_disk(measurement, measure_disk_usage(path))
        cell.store_path = path
        checked = verified_after_write(run.experiment, "write_batch", cell.count)
        ids = None if checked == cell.count else sample_ids(run, cell.count, checked, "verify")
        measurement.verified = _verify_written(measurement, cell, path, ids, checked)
    except RunCancelled:
        raise
    except Exception as error:
        fail(measurement, error)
        cell.write_failed = measurement.error
    finally:
        if run.experiment.keep:
            _settle_stopped_write(path, cell.batch_store)
    return measurement


def load_library(backend: str) -> None:
    """Import what the backend's writes and reads use before any timer: a store class whose library
    is imported at first use (``load_library``: FFCV's, whose import compiles numba code for tens of
    seconds on a loaded machine) would otherwise time the import in its first write, which a user's
    script pays once, at its own import."""
    load = getattr(registry.store_class(backend), "load_library", None)
    if load is not None:
        load()


def _time_write_batch(run: Run, cell: Cell, path: Path, repeat: Repeat) -> float:
    """Seconds for open + write_batch + close; time in the progress callback is left out."""

    def on_chunk(done: int, total: int) -> None:
        paused = time.perf_counter()
        run.check_cancel()
        run.progress(repeat.at(done / total))
        run.paused_seconds += time.perf_counter() - paused

    started = run.start_timer()
    with gc_paused():
        store = registry.open_store(cell.backend, path, "w", **cell.options)
        try:
            store.write_batch(cell.images, cell.labels, progress=on_chunk)
        finally:
            store.close()
    return run.stop_timer(started)


# -- write_one -------------------------------------------------------------------------


def measure_write_one(run: Run, cell: Cell, cache: str = "warm", workers: int | None = None) -> Measurement:
    """Each repeat writes a new store one image at a time; a seeded sample is read back.

    Measured once, as "warm" (``cache`` and ``workers`` are unused, as for write_batch).
    """
    measurement = cell.new_measurement(run.run_id, "write_one")
    path, meter = None, LoadMeter()
    flushes: list[float] = []
    try:
        load_library(cell.backend)
        for repeat in repeats(run, cell, "write_one"):
            run.retired.retire(path, cell.pixel_bytes)
            path = fresh_store_path(_made(cell.folder), "write_one")
            back_memory_for_write(cell.pixel_bytes, cell.folder)
            with meter.timing():
                seconds, flush = _time_write_one(run, cell, path, repeat)
            if repeat.recorded:
                measurement.samples.append(seconds)
                flushes.append(flush)
        measurement.flush_seconds = float(np.median(flushes)) if flushes else None
        meter.fill(measurement)
        path = _settle(path, cell.one_store)
        set_disk(measurement, measure_disk_usage(path))
        checked = verified_after_write(run.experiment, "write_one", cell.count)
        ids = sample_ids(run, cell.count, checked, "verify")
        measurement.verified = _verify_written(measurement, cell, path, ids, checked)
        if cell.store_path is None and measurement.verified:
            preview(run, cell, path)
    except RunCancelled:
        raise
    except Exception as error:
        fail(measurement, error)
    finally:
        if run.experiment.keep:
            _settle_stopped_write(path, cell.one_store)
        else:
            run.retired.retire(path, cell.pixel_bytes)
    return measurement


def _time_write_one(run: Run, cell: Cell, path: Path, repeat: Repeat) -> tuple[float, float]:
    """Seconds for open + N write_one + close, and for the close alone."""
    images, labels, count = cell.images, cell.labels, cell.count
    chunked = hasattr(images, "chunk")  # photos: each chunk decoded (or read) with the timer paused
    started = run.start_timer()
    with gc_paused():
        store = registry.open_store(cell.backend, path, "w", **cell.options)
        closing = None
        try:
            for start in range(0, count, WRITE_ONE_INPUT_CHUNK if chunked else count):
                stop = min(count, start + (WRITE_ONE_INPUT_CHUNK if chunked else count))
                inputs = _write_one_inputs(run, cell, start, stop) if chunked else images
                for position in range(start, stop):
                    store.write_one(inputs[position - start if chunked else position], labels[position])
                    run.tick(repeat.at(position / count))
            closing = time.perf_counter()
        finally:
            store.close()
        flush = time.perf_counter() - closing
    return run.stop_timer(started), flush


def _write_one_inputs(run: Run, cell: Cell, start: int, stop: int) -> list:
    """Images ``start``..``stop`` as ``write_one`` is given them, prepared with the timer paused:
    a kept-bytes store is given each photo's file bytes, any other its decoded pixels."""
    paused = time.perf_counter()
    if cell.options.get("encoding") == SOURCE and hasattr(cell.images, "encoded_chunk"):
        inputs = cell.images.encoded_chunk(start, stop, Encoding(SOURCE))
    else:
        inputs = cell.images.chunk(start, stop)
    run.paused_seconds += time.perf_counter() - paused
    return inputs


# -- shared by both writes -------------------------------------------------------------


def _verify_written(measurement: Measurement, cell: Cell, path: Path, ids: np.ndarray | None, checked: int) -> bool:
    """Read ``ids`` (None: all) back from the store just written and compare them with the source."""
    return apply_verification(
        measurement,
        verify_store(cell.backend, path, cell.images, cell.labels, ids, lossless=cell.lossless),
        f"{checked:,} images read back after writing",
    )


def write_store_for_reads(run: Run, cell: Cell) -> None:
    """Write the store that reads use when write_batch itself is not measured."""
    run.progress(0.0, f"{cell.backend} · {cell.count:,} images · writing the store to read")
    written = fresh_store_path(_made(cell.folder), "store")
    with registry.open_store(cell.backend, written, "w", **cell.options) as store:
        store.write_batch(cell.images, cell.labels, progress=lambda done, total: run.tick(0.0))
    path = _settle(written, cell.batch_store)
    result = verify_store(cell.backend, path, cell.images, cell.labels, lossless=cell.lossless)
    if not result.verified:
        raise RuntimeError(f"VERIFICATION FAILED (the store written for reading): {result.error}")
    cell.store_path = path


def preview(run: Run, cell: Cell, path: Path) -> None:
    """Read the same seeded ids back from this store and hand them to the UI."""
    if run.experiment.preview_ids <= 0 or cell.previewed:
        return
    cell.previewed = True
    ids = sample_ids(run, cell.count, run.experiment.preview_ids, "preview")
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


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _settle(written: Path, final: Path) -> Path:
    """Give the last repeat's store its fixed name (``store``, ``write_one``): a rename, no copy."""
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    written.rename(final)
    return final


def _settle_stopped_write(path: Path | None, final: Path) -> None:
    """In a kept run, give a write that stopped midway its usual name too."""
    if path is not None and path != final and path.exists():
        _settle(path, final)


__all__ = ["back_memory_for_write", "measure_write_batch", "measure_write_one", "preview", "write_store_for_reads"]
