"""The ``loader`` operation: what a training loop gets from each format through PyTorch, each at its best.

One measurement is one DataLoader kept for all the epochs it times, as a training loop keeps
it: with workers, ``persistent_workers=True``, so they start once. Its first epoch (worker
start-up and first opening of the store included) is reported apart, as
``first_epoch_seconds``; the samples are the epochs after it. Every format is read in the
same order, a full per-sample shuffle drawn in the main process (torch's ``RandomSampler``,
seeded, a new order every epoch: ``order="shuffle"``), through
:class:`storage.training.PipelineDataset`: one read per batch of ids, then the run's
:class:`~storage.pipeline.Pipeline` (``transform``, ``decoder``) in the worker. A format whose
library has its own dataset and sampler (the store class's ``torch_shuffles`` hook: LitData,
Streaming, Lance) is also measured that way, ``order="own"``: its own order (weaker shuffles
than the common one, said in ``loader_path``) and its own reads.

The loaders of one worker count and cache state are measured together, their epochs
interleaved (A B C A B C ...), each keeping its workers between turns; idle persistent
workers wait on their queue and take no CPU. The ceilings take turns with them:

* ``in-memory`` (:data:`~storage.bench.experiment.CEILING_BACKEND`): the same DataLoader and
  pipeline over the pixels held in memory (for a folder of photos, its distinct photos
  decoded once, when they fit in memory): what the loader itself delivers when storage
  costs nothing; the reference of stores that keep pixels.
* ``source-files`` (:data:`~storage.bench.experiment.DECODE_CEILING_BACKEND`, folders of
  photos only): the same DataLoader and pipeline over the encoded files themselves, read
  from the page cache: the most a store that keeps those bytes can deliver; the reference
  of kept-bytes stores. When the run resizes, these are the resized photos encoded as a
  kept-bytes store holds them, written once per distinct photo into the run's folder.

Each batch is copied out (transform ``none``) and every epoch is checked outside the timer:
every id exactly once, labels against the source, and without a transform every image
against the source; with a transform (random crops) the images' shape and type.

This module imports torch; the operations table and the engine import it only when a run
measures the loader.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch  # noqa: F401  (imported here so that a missing torch fails before any timing)

from ...encodings import FORMAT_EXTENSIONS, RAW, SOURCE, Encoding, parse_encoding
from ...pipeline import CROP, Pipeline
from ...training import (
    OWN_ORDER,
    SHUFFLE_ORDER,
    FileSource,
    MemorySource,
    PipelineDataset,
    close_loader,
    finish_batch,
    has_own_order,
    own_order_loader,
    shuffle_loader,
    training_loader,
    written_files,
)
from ...verify import compare
from ..events import Measurement, fill_rates
from ..experiment import CEILING_BACKEND, DECODE_CEILING_BACKEND
from ..machine_load import LoadMeter
from ..run_state import Cell, Repeat, Run, RunCancelled, apply_verification, evict_store, fail, store_was_written
from ..streaming import MEMORY_CEILING_MAX_BYTES

LOADER_TIMEOUT = 120.0  # seconds a worker may take for one batch before the measurement fails
MIXED_SIZES = (
    "the loader with transform 'none' needs images of one size (a DataLoader batch is one tensor), and this "
    "source has images of several sizes: give --transform train or val, which bring every image to 224 x 224"
)
CEILING_KINDS = {CEILING_BACKEND: "in-memory", DECODE_CEILING_BACKEND: "decode"}


@dataclass(eq=False)
class Contender:
    """One DataLoader measured in a group: a format in one order, or a ceiling."""

    measurement: Measurement
    cell: Cell
    build: Callable[[], tuple[Any, str]]  # the loader and what reads it, made once, untimed
    encoded: bool  # whether its batches carry encoded bytes (for decoding on a CUDA device)
    before_epoch: Callable[[], None] = lambda: None
    loader: Any = None
    meter: LoadMeter = field(default_factory=LoadMeter)
    first_batches: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    stats: list[np.ndarray] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Still measured: its loader was made and has not raised (a mismatch with the source
        is reported once, and the timing goes on)."""
        return self.loader is not None

    def close(self) -> None:
        if self.loader is not None:
            close_loader(self.loader)
            self.loader = None


def run_pipeline(run: Run) -> Pipeline:
    experiment = run.experiment
    return Pipeline(experiment.transform, experiment.decoder, experiment.decode_device)


def keeps_bytes(cell: Cell) -> bool:
    return str(cell.options.get("encoding", RAW)) != RAW


# -- the contenders --------------------------------------------------------------------


def _new_measurement(run: Run, cell: Cell, cache: str, workers: int, order: str) -> Measurement:
    measurement = cell.new_measurement(run.run_id, "loader", cache)
    measurement.workers, measurement.batch_size, measurement.order = workers, run.experiment.batch_size, order
    measurement.transform, measurement.decoder = run.experiment.transform, run.experiment.decoder
    return measurement


def _seed(run: Run, workers: int) -> int:
    """The shuffle's seed: the same for every format of a group, so they read the same orders."""
    return run.experiment.seed * 1_000 + workers


def format_contenders(run: Run, cell: Cell, cache: str, workers: int) -> list[Contender]:
    """``cell``'s store in the common per-sample shuffle, and in its library's own order where it has one."""
    contenders = [_shuffle_contender(run, cell, cache, workers)]
    if has_own_order(cell.backend):
        contenders.append(_own_contender(run, cell, cache, workers))
    return contenders


def _evicting(measurement: Measurement, cell: Cell, cache: str) -> Callable[[], None]:
    def evict() -> None:
        if cache == "cold":
            evict_store(measurement, cell.store_path)

    return evict


def _shuffle_contender(run: Run, cell: Cell, cache: str, workers: int) -> Contender:
    return _store_contender(run, cell, cache, workers, SHUFFLE_ORDER, shuffle_loader)


def _own_contender(run: Run, cell: Cell, cache: str, workers: int) -> Contender:
    return _store_contender(run, cell, cache, workers, OWN_ORDER, own_order_loader)


def _store_contender(run: Run, cell: Cell, cache: str, workers: int, order: str, make_loader: Callable) -> Contender:
    """A format's loader in one order (``make_loader``: the common shuffle or the format's own)."""
    measurement = _new_measurement(run, cell, cache, workers, order)
    pipeline, batch_size = run_pipeline(run), run.experiment.batch_size

    def build() -> tuple[Any, str]:
        return make_loader(
            cell.backend,
            cell.store_path,
            batch_size,
            workers,
            pipeline,
            seed=_seed(run, workers),
            timeout=LOADER_TIMEOUT,
        )

    if store_was_written(measurement, cell):
        return Contender(measurement, cell, build, keeps_bytes(cell), _evicting(measurement, cell, cache))
    return Contender(measurement, cell, build, False)


def ceiling_sources(run: Run, cell: Cell, photos: bool) -> dict[str, Callable[[], Any]]:
    """What each ceiling reads over ``cell``'s images, made on first use and then shared by every
    worker count: the pixels in memory (unless a folder's photos do not fit decoded), and for
    photos their encoded files."""
    made: dict[str, Any] = {}

    def once(name: str, make: Callable[[], Any]) -> Callable[[], Any]:
        def source() -> Any:
            if name not in made:
                made[name] = make()
            return made[name]

        return source

    sources = {}
    if _memory_fits(cell):
        sources[CEILING_BACKEND] = once(CEILING_BACKEND, lambda: _memory_source(cell))
    if photos:
        sources[DECODE_CEILING_BACKEND] = once(DECODE_CEILING_BACKEND, lambda: _file_source(run, cell))
    return sources


def ceiling_contenders(run: Run, cell: Cell, workers: int, sources: dict[str, Callable[[], Any]]) -> list[Contender]:
    """The ceilings over ``cell``'s images at ``workers``, one per source of :func:`ceiling_sources`."""
    return [_ceiling(run, cell, name, workers, source) for name, source in sources.items()]


def _ceiling(run: Run, cell: Cell, name: str, workers: int, source: Callable[[], Any]) -> Contender:
    ceiling_cell = Cell(**{**cell.__dict__, "backend": name, "options": {}, "lossless": True})
    measurement = _new_measurement(run, ceiling_cell, "warm", workers, SHUFFLE_ORDER)
    measurement.encoding = "source files" if name == DECODE_CEILING_BACKEND else RAW
    pipeline, batch_size = run_pipeline(run), run.experiment.batch_size

    def build() -> tuple[Any, str]:
        made = source()
        dataset = PipelineDataset(made, pipeline, labels=cell.labels)
        loader = training_loader(dataset, batch_size, workers, seed=_seed(run, workers), timeout=LOADER_TIMEOUT)
        return loader, f"{made.describe()}; torch RandomSampler (a full per-sample shuffle)"

    return Contender(measurement, ceiling_cell, build, name == DECODE_CEILING_BACKEND)


def _memory_fits(cell: Cell) -> bool:
    """Whether ``cell``'s images can be held in memory as pixels (a folder: its distinct photos decoded)."""
    images = cell.images
    if isinstance(images, np.ndarray) or not hasattr(images, "select"):
        return True
    _, first = np.unique(images.order, return_index=True)
    needed = sum(int(np.prod(images.image_shape(int(position)))) for position in first)
    return needed <= min(MEMORY_CEILING_MAX_BYTES, psutil.virtual_memory().available // 4)


def _memory_source(cell: Cell) -> MemorySource:
    """The pixels of ``cell``'s images in memory: the array itself, or a folder's distinct photos decoded once."""
    images = cell.images
    if isinstance(images, np.ndarray):
        return MemorySource(images)
    if not hasattr(images, "select"):
        return MemorySource(list(images), np.arange(len(images)))
    _, first, order = np.unique(images.order, return_index=True, return_inverse=True)
    distinct = images.select(first)
    return MemorySource(distinct.chunk(0, len(distinct)), order)


def _file_source(run: Run, cell: Cell) -> FileSource:
    """The encoded files a kept-bytes store of ``cell``'s photos holds: the source files themselves, or
    (when resized or re-encoded) those bytes written once per distinct photo into the run's folder."""
    images = cell.images
    encoding = parse_encoding(run.experiment.encoding)
    encoding = Encoding(SOURCE) if encoding.name == RAW else encoding
    if encoding.name == SOURCE and not images.any_resized:
        return FileSource(images.paths, images.order)
    files, first, order = np.unique(images.order, return_index=True, return_inverse=True)
    encoded = images.select(first).encoded_chunk(0, len(first), encoding)
    folder = Path(run.run_dir) / DECODE_CEILING_BACKEND / str(cell.count)
    names = [f"{file:06d}.{FORMAT_EXTENSIONS.get(item.format, 'bin')}" for file, item in zip(files, encoded)]
    return FileSource(written_files(folder, [(name, item.data) for name, item in zip(names, encoded)]), order)


# -- measuring a group -----------------------------------------------------------------


def measure_loader_group(run: Run, contenders: list[Contender]) -> list[Measurement]:
    """Every contender's DataLoader, made once; their epochs interleaved; one measurement each.

    Round 0 is each one's first epoch (``first_epoch_seconds``), rounds 1.. the samples. A
    contender that fails is left out of the later rounds, and its loader shut down.
    """
    repeats = run.experiment.repeats
    total = (1 + repeats) * len(contenders)
    labels = np.empty(contenders[0].cell.count if contenders else 0, dtype=np.int64)
    try:
        for contender in contenders:
            _start(contender)
        for index in range(1 + repeats):
            for position, contender in enumerate(contenders):
                run.check_cancel()
                if not contender.active:
                    continue
                repeat = Repeat(index * len(contenders) + position, total, index > 0)
                run.progress(repeat.at(0.0), _progress_line(contender, index, repeats))
                try:
                    _epoch(run, contender, repeat, labels)
                except RunCancelled:
                    raise
                except Exception as error:
                    fail(contender.measurement, error)
                    contender.close()
    finally:
        for contender in contenders:
            contender.close()
    return [_finished(contender) for contender in contenders]


def _start(contender: Contender) -> None:
    measurement = contender.measurement
    if measurement.error is not None:
        return
    measurement.verified = True
    try:  # (no catch_warnings here: a format's loader may quiet its library's warnings for its epochs)
        contender.loader, measurement.loader_path = contender.build()
    except RunCancelled:
        raise
    except Exception as error:
        fail(measurement, error)


def _progress_line(contender: Contender, index: int, repeats: int) -> str:
    m = contender.measurement
    own = " (own order)" if m.order == OWN_ORDER else ""
    epoch = "first epoch" if index == 0 else f"epoch {index + 1} (repeat {index}/{repeats})"
    return f"{m.backend}{own} · {m.count:,} images · loader, {m.workers} workers ({m.cache}) · {epoch}"


def _epoch(run: Run, contender: Contender, repeat: Repeat, labels: np.ndarray) -> None:
    """One timed epoch of ``contender``'s loader, then its checks."""
    measurement, cell = contender.measurement, contender.cell
    pipeline = run_pipeline(run)
    received = cell.read_buffer if not pipeline.augments else None
    if not pipeline.augments and received is None:
        raise RuntimeError(MIXED_SIZES)
    contender.before_epoch()
    timing = contender.meter.timing() if repeat.recorded else contextlib.nullcontext()
    with timing:
        epoch = _time_epoch(run, contender, pipeline, received, labels, repeat)
    if repeat.recorded:
        measurement.samples.append(epoch.seconds)
        contender.first_batches.append(epoch.first)
        contender.waits.extend(epoch.waits)
        contender.stats.extend(epoch.stats)
        contender.batch_sizes.extend(epoch.sizes)
    else:
        measurement.first_epoch_seconds = epoch.seconds
    if measurement.error is None:
        _check_epoch(measurement, cell, received, labels, epoch.ids, pipeline)


@dataclass
class _Epoch:
    seconds: float
    first: float
    waits: list[float]
    ids: np.ndarray
    stats: list[np.ndarray]
    sizes: list[int]


def _time_epoch(
    run: Run, contender: Contender, pipeline: Pipeline, received: np.ndarray | None, labels: np.ndarray, repeat: Repeat
) -> _Epoch:
    """One epoch: the seconds, the wait for the first batch and for each later one, the ids as they came,
    and each batch's worker figures.

    Copying a batch out, checking its shape and reporting progress happen with the timer
    paused, so the waits are what a training step that takes no time would wait for each batch.
    """
    total = len(labels)
    filled, first = 0, None
    waits: list[float] = []
    ids: list[np.ndarray] = []
    stats: list[np.ndarray] = []
    sizes: list[int] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        started = run.start_timer()
        last = started
        for batch in contender.loader:
            batch = finish_batch(batch, pipeline, contender.encoded)
            arrived = time.perf_counter()
            if first is None:
                first = arrived - started
            else:
                waits.append(arrived - last)
            images, batch_labels, batch_ids, batch_stats = batch
            count = len(batch_ids)
            if filled + count > total:
                raise RuntimeError(f"the loader delivered more than the {total:,} images of the store")
            _check_batch_shape(images, count, pipeline)
            if received is not None:
                received[filled : filled + count] = images.cpu().numpy()
            labels[filled : filled + count] = batch_labels.numpy()
            ids.append(_copied_ids(batch_ids))  # a copy: a loader may reuse its batch buffers (FFCV's does)
            stats.append(np.asarray(batch_stats, dtype=np.float64))
            sizes.append(count)
            filled += count
            before = run.paused_seconds
            run.tick(repeat.at(filled / total))
            last = time.perf_counter()
            run.paused_seconds = before + (last - arrived)
        seconds = run.stop_timer(started)
    if filled != total:
        raise RuntimeError(f"the loader delivered {filled:,} of the {total:,} images in one epoch")
    return _Epoch(seconds, first or seconds, waits, np.concatenate(ids), stats, sizes)


def _copied_ids(batch_ids: Any) -> np.ndarray:
    """The batch's ids as a new int64 array (``astype`` copies; ``np.array`` on a tensor warns under NumPy 2)."""
    if isinstance(batch_ids, torch.Tensor):
        return batch_ids.detach().cpu().numpy().astype(np.int64)
    return np.array(batch_ids, dtype=np.int64)


def _check_batch_shape(images: Any, count: int, pipeline: Pipeline) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or len(images) != count:
        raise RuntimeError(f"the loader gave a batch that is not a uint8 tensor of {count} images")
    if pipeline.augments and tuple(images.shape[1:]) != (3, CROP, CROP):
        raise RuntimeError(
            f"the {pipeline.transform} transform gave images of {tuple(images.shape[1:])}, not (3, {CROP}, {CROP})"
        )


def _check_epoch(
    measurement: Measurement,
    cell: Cell,
    received: np.ndarray | None,
    labels: np.ndarray,
    ids: np.ndarray,
    pipeline: Pipeline,
) -> None:
    """Every id once, the labels right, and without a transform every image as the source has it."""
    total = len(labels)
    seen = np.bincount(ids, minlength=total) if len(ids) and ids.min() >= 0 else np.zeros(0)
    if len(seen) != total or np.any(seen != 1):
        fail(measurement, "VERIFICATION FAILED (loader): the epoch did not hold every image exactly once")
        return
    what = f"loader, {measurement.workers} workers, {measurement.cache} cache"
    if received is not None:
        result = compare(received, labels, cell.images, cell.labels, ids, cell.lossless)
        apply_verification(measurement, result, what)
    elif not np.array_equal(labels, np.asarray(cell.labels)[ids]):
        wrong = int(np.flatnonzero(labels != np.asarray(cell.labels)[ids])[0])
        fail(measurement, f"VERIFICATION FAILED ({what}): image {int(ids[wrong])} came with a wrong label")


# -- the figures -----------------------------------------------------------------------


def _finished(contender: Contender) -> Measurement:
    measurement = contender.measurement
    fill_rates(measurement)
    contender.meter.fill(measurement)
    if contender.first_batches:
        measurement.first_batch_seconds = float(np.median(contender.first_batches))
    if contender.waits:
        measurement.batch_p50_seconds, measurement.batch_p99_seconds = (
            float(v) for v in np.percentile(contender.waits, [50, 99])
        )
    if contender.stats:
        _fill_worker_figures(measurement, np.stack(contender.stats), np.asarray(contender.batch_sizes))
    return measurement


def _fill_worker_figures(measurement: Measurement, stats: np.ndarray, sizes: np.ndarray) -> None:
    """Per-batch medians of read, decode and transform time, and each worker process's rate."""
    for column, name in enumerate(("read", "decode", "transform")):
        values = stats[:, column]
        if not np.all(np.isnan(values)):
            setattr(measurement, f"{name}_seconds_per_batch", float(np.nanmedian(values)))
    if np.all(np.isnan(stats[:, 0])):
        return  # the format's own dataset reads inside its iterator: a worker's busy time is not known
    busy = np.nansum(stats[:, :3], axis=1)
    per_worker = []
    for pid in np.unique(stats[:, 3]):
        mine = stats[:, 3] == pid
        images, seconds = int(sizes[mine].sum()), float(busy[mine].sum())
        rate = images / seconds if seconds > 0 else None
        per_worker.append({"pid": int(pid), "images": images, "busy_seconds": seconds, "images_per_second": rate})
    measurement.per_worker = per_worker
    rates = [share["images_per_second"] for share in per_worker if share["images_per_second"]]
    if rates:
        measurement.images_per_second_per_worker = float(np.median(rates))


def set_ceilings(run: Run, measurements: list[Measurement]) -> None:
    """Remember this group's ceilings, and give every format its own: the decode ceiling for a store
    that keeps encoded bytes (where measured), the in-memory one otherwise."""
    for m in measurements:
        if m.backend in CEILING_KINDS and m.error is None and m.images_per_second:
            run.ceilings[(m.count, m.workers, CEILING_KINDS[m.backend])] = m.images_per_second
    for m in measurements:
        if m.backend in CEILING_KINDS or not m.images_per_second:
            continue
        kind = "decode" if m.encoding != RAW and (m.count, m.workers, "decode") in run.ceilings else "in-memory"
        ceiling = run.ceilings.get((m.count, m.workers, kind))
        if ceiling:
            m.ceiling, m.ceiling_images_per_second = kind, ceiling
            m.fraction_of_ceiling = m.images_per_second / ceiling


# -- one measurement alone (the operations table) --------------------------------------


def measure_loader(run: Run, cell: Cell, cache: str, workers: int) -> Measurement:
    """``cell``'s store in the common shuffle alone (the engine measures formats together, see the engine)."""
    (measurement,) = measure_loader_group(run, [_shuffle_contender(run, cell, cache, workers)])
    set_ceilings(run, [measurement])
    return measurement


def measure_ceiling(run: Run, cell: Cell, workers: int) -> Measurement:
    """The in-memory ceiling over ``cell``'s images alone."""
    contenders = ceiling_contenders(run, cell, workers, ceiling_sources(run, cell, photos=False))
    if not contenders:
        measurement = _new_measurement(run, cell, "warm", workers, SHUFFLE_ORDER)
        fail(measurement, "not measured: these photos do not fit in memory decoded")
        return measurement
    (measurement,) = measure_loader_group(run, contenders)
    set_ceilings(run, [measurement])
    return measurement


__all__ = [
    "CEILING_BACKEND",
    "DECODE_CEILING_BACKEND",
    "LOADER_TIMEOUT",
    "MIXED_SIZES",
    "Contender",
    "ceiling_contenders",
    "ceiling_sources",
    "format_contenders",
    "measure_ceiling",
    "measure_loader",
    "measure_loader_group",
    "set_ceilings",
]
