"""The ``loader`` operation: what a training loop gets from each format through PyTorch.

One timed sample is one shuffled epoch over the whole store through
``DataLoader(dataset, batch_size, shuffle=True, num_workers=w)`` (built by
:func:`storage.torch.make_loader`: the batched ``__getitems__`` path, a timeout so a stuck
worker fails the measurement). The dataset is the one the format asks for
(:meth:`ImageStore.torch_dataset`, by default :class:`storage.torch.StoreDataset`) and is
made, like the loader, before the timer starts; the timer covers creating the iterator
(worker start-up), every batch, and the end of the epoch. Each batch is copied into a
buffer allocated and touched beforehand while the timer is paused, and the whole epoch
is checked against the source afterwards, in the order the sampler gave.

The ceiling is the same DataLoader over the images already in memory
(:class:`storage.torch.MemoryDataset`), measured per worker count at the start of each
image count; every format's measurement records it and its own share of it.

This module imports torch; the engine imports it only when a run measures the loader.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch  # noqa: F401  (imported here so that a missing torch fails before any timing)

from .. import registry
from ..torch import MemoryDataset, make_loader
from .engine import (
    RunCancelled,
    _apply_verification,
    _Cell,
    _evict_store,
    _fail,
    _measurement,
    _Run,
    _runs_of,
    _store_was_written,
)
from .events import Measurement, fill_rates
from .experiment import CEILING_BACKEND
from .verify import compare

LOADER_TIMEOUT = 120.0  # seconds a worker may take for one batch before the measurement fails
MIXED_SIZES = (
    "not measured: the loader operation needs images of one size (a DataLoader batch is one tensor); "
    "this source has images of several sizes"
)


def measure_ceiling(run: _Run, cell: _Cell, workers: int) -> Measurement:
    """The same DataLoader over ``cell``'s images in memory: what the loader itself delivers."""
    measurement = _new_measurement(run, cell, "warm", workers)
    if cell.read_buffer is None or not isinstance(cell.images, np.ndarray):
        _fail(measurement, MIXED_SIZES)
        return measurement
    dataset = MemoryDataset(cell.images, cell.labels)
    _measure(run, cell, measurement, lambda index: _loader(run, dataset, workers, index), lambda: None)
    fill_rates(measurement)
    if measurement.error is None and measurement.images_per_second:
        run.ceilings[(cell.count, workers)] = measurement.images_per_second
    return measurement


def measure_loader(run: _Run, cell: _Cell, cache: str, workers: int) -> Measurement:
    """One shuffled epoch per repeat over the store ``cell`` wrote, through the format's dataset."""
    measurement = _new_measurement(run, cell, cache, workers)
    if not _store_was_written(measurement, cell):
        return measurement
    if cell.read_buffer is None:
        _fail(measurement, MIXED_SIZES)
        return measurement
    store_class = registry.store_class(cell.backend)

    def evict() -> None:
        if cache == "cold":
            _evict_store(measurement, cell.store_path)

    def store_loader(index: int) -> Any:
        return store_class.torch_loader(
            cell.store_path, run.experiment.batch_size, workers, seed=_seed(run, index), timeout=LOADER_TIMEOUT
        )

    _measure(run, cell, measurement, store_loader, evict)
    fill_rates(measurement)
    ceiling = run.ceilings.get((cell.count, workers))
    if ceiling and measurement.images_per_second:
        measurement.ceiling_images_per_second = ceiling
        measurement.fraction_of_ceiling = measurement.images_per_second / ceiling
    return measurement


def _new_measurement(run: _Run, cell: _Cell, cache: str, workers: int) -> Measurement:
    measurement = _measurement(run, cell, "loader", cache)
    measurement.workers = workers
    measurement.batch_size = run.experiment.batch_size
    return measurement


def _measure(
    run: _Run,
    cell: _Cell,
    measurement: Measurement,
    make_loader: Callable[[int], Any],
    before_epoch: Callable[[], None],
) -> None:
    """Time every repeat (after an unrecorded warm-up for small counts) and verify each epoch.

    ``make_loader(repeat)`` gives the epoch's loader, made before the timer starts."""
    warmup, runs = _runs_of(cell.count, run.experiment.repeats)
    labels = np.empty(cell.count, dtype=np.int64)
    first_batches: list[float] = []
    waits: list[float] = []
    what = f"loader, {measurement.workers} workers, {measurement.cache} cache"
    measurement.verified = True
    try:
        for index in range(runs):
            run.check_cancel()
            label = "warm-up" if index < warmup else f"repeat {index - warmup + 1}/{runs - warmup}"
            run.progress(
                index / runs,
                f"{cell.backend} · {cell.count:,} images · loader, {measurement.workers} workers "
                f"({measurement.cache}) · {label}",
            )
            loader = make_loader(index)
            before_epoch()
            try:
                seconds, first, batch_waits, ids = _time_epoch(run, loader, cell.read_buffer, labels, (index, runs))
            finally:
                close = getattr(getattr(loader, "dataset", None), "close", None)
                if close is not None:
                    close()
            if index >= warmup:
                measurement.samples.append(seconds)
                first_batches.append(first)
                waits.extend(batch_waits)
            if measurement.error is None:
                if ids is None:  # the sampler decided the order in the main process
                    ids = np.asarray(loader.sampler.last_order, dtype=np.int64)
                result = compare(cell.read_buffer, labels, cell.images, cell.labels, ids, cell.lossless)
                _apply_verification(measurement, result, what)
    except RunCancelled:
        raise
    except Exception as error:
        _fail(measurement, error)
    if first_batches:
        measurement.first_batch_seconds = float(np.median(first_batches))
    if waits:
        measurement.batch_p50_seconds, measurement.batch_p99_seconds = (
            float(v) for v in np.percentile(waits, [50, 99])
        )


def _seed(run: _Run, index: int) -> int:
    """The shuffle's seed for repeat ``index``: epochs differ, runs repeat exactly."""
    return run.experiment.seed * 1_000 + index


def _loader(run: _Run, dataset: Any, workers: int, index: int):
    with warnings.catch_warnings():
        # More workers than cores is a setting people try on purpose here: measured, not warned about.
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        return make_loader(
            dataset,
            run.experiment.batch_size,
            workers,
            seed=_seed(run, index),
            timeout=LOADER_TIMEOUT,
        )


def _time_epoch(
    run: _Run, loader, received: np.ndarray, labels: np.ndarray, position: tuple[int, int]
) -> tuple[float, float, list[float], np.ndarray | None]:
    """Seconds for the epoch, seconds to the first batch, the wait for each later batch, and
    the ids in the order they came when the batches carry them (else None).

    Copying a batch out and reporting progress happen with the timer paused, so the
    waits are what a training step that takes no time would wait for each batch.
    """
    index, runs = position
    total = len(labels)
    filled = 0
    first: float | None = None
    waits: list[float] = []
    arrived_ids: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        started = run.start_timer()
        last = started
        for batch in loader:
            arrived = time.perf_counter()
            images, batch_labels = batch[0], batch[1]
            if len(batch) == 3:
                arrived_ids.append(np.asarray(batch[2], dtype=np.int64))
            if first is None:
                first = arrived - started
            else:
                waits.append(arrived - last)
            count = len(batch_labels)
            if filled + count > total:
                raise RuntimeError(f"the loader delivered more than the {total:,} images of the store")
            received[filled : filled + count] = images.numpy()
            labels[filled : filled + count] = batch_labels.numpy()
            filled += count
            before = run.paused_seconds
            run.tick((index + filled / total) / runs)
            last = time.perf_counter()
            run.paused_seconds = before + (last - arrived)
        seconds = run.stop_timer(started)
    if filled != total:
        raise RuntimeError(f"the loader delivered {filled:,} of the {total:,} images in one epoch")
    if not arrived_ids:
        return seconds, first or seconds, waits, None
    ids = np.concatenate(arrived_ids)
    seen = np.bincount(ids, minlength=total) if ids.min() >= 0 else np.zeros(0)
    if len(seen) != total or np.any(seen != 1):
        raise RuntimeError("the loader's epoch did not hold every image exactly once (ids repeated or missing)")
    return seconds, first or seconds, waits, ids


__all__ = ["CEILING_BACKEND", "LOADER_TIMEOUT", "measure_ceiling", "measure_loader"]
