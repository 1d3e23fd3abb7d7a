"""Run an experiment: write and read every backend's stores, timing only the storage calls.

For each image count (outer loop, so every backend works on the same images close
together in time) and each backend, the engine writes a store in a fresh folder under
``<work_dir>/<run id>/``, reads it back in each cache state, and records one
:class:`Measurement` per (backend, count, operation, cache). Data preparation, buffer
allocation, eviction, verification and progress reporting all happen outside the timers
(time spent in progress callbacks during a timed call is measured and subtracted).

This module is the run loop only. What each operation times is said in its module under
:mod:`storage.bench.operations` (``write``: ``write_batch``, ``write_one``; ``read``:
``read_all``, ``read_random``, ``read_one``; ``loader``: shuffled epochs through one
PyTorch DataLoader per format and worker count, with persistent workers, beside the same
DataLoader over the images in memory and, for photos, over their encoded files; imported,
with torch, only when a run measures it), in words in :data:`METHODS`, and the state they
share in :mod:`storage.bench.run_state`. Every operation is measured over the run's
repeats, after one unrecorded warm-up repeat for counts up to 1,000 (the loader reports
its first epoch apart instead).

At each count every backend writes first; then each read operation (per cache state) and
the loader (per cache state and worker count) is measured for all backends together, their
repeats interleaved (A B C A B C ...): a load that changes during a run then falls on every
backend alike instead of favouring the ones measured last. Each measurement records the
machine's load during its repeats (:mod:`storage.bench.machine_load`).

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

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import datasets, registry
from ..encoded import check_source_encodable
from ..encodings import SOURCE, parse_encoding
from ..errors import DiskSpaceError
from .environment import capture_environment, peak_rss_bytes
from .estimate import Estimate, estimate_experiment
from .events import Event, Measurement, RunFinished, RunStarted, RunSummary
from .experiment import (
    EPOCH_OPERATIONS,
    LOADER,
    OBJECT_STORAGE_OPERATIONS,
    READ_OPERATIONS,
    Experiment,
    InvalidExperimentError,
    steps,
    validate,
)
from .methods import METHODS
from .operations import MEASURES
from .operations.read import measure_reads_together, read_all_slice
from .operations.write import preview, write_store_for_reads
from .placement import RetiredStores, delete_files, new_run_id, remove_spent_run_folders, spread_folder
from .run_state import Cell, Run, RunCancelled
from .streaming import cycled_source, read_buffer_for, resized_source

log = logging.getLogger(__name__)


def _write_cell(run: Run, cell: Cell) -> None:
    """The writes of one backend at one count, and the store its reads use."""
    experiment = run.experiment
    if "write_batch" in experiment.operations:
        run.record(MEASURES["write_batch"](run, cell, "warm", None))
        if cell.store_path is not None:
            preview(run, cell, cell.store_path)
    if "write_one" in experiment.operations:
        run.record(MEASURES["write_one"](run, cell, "warm", None))
    reads = [op for op in experiment.operations if op in READ_OPERATIONS]
    remote = any(op in OBJECT_STORAGE_OPERATIONS for op in experiment.operations)
    if (reads or LOADER in experiment.operations or remote) and cell.store_path is None and cell.write_failed is None:
        _write_store_for_reads(run, cell)


def _write_store_for_reads(run: Run, cell: Cell) -> None:
    """The store the reads use when no write measured left one; a failure is the reads' to report."""
    try:
        write_store_for_reads(run, cell)
        preview(run, cell, cell.store_path)
    except RunCancelled:
        raise
    except Exception as error:
        cell.write_failed = f"{type(error).__name__}: {error}"


def _measure_count(run: Run, count: int) -> None:
    """Every backend at ``count`` images, on the same images: the writes backend by backend, then each
    read and the loader with every backend's repeats interleaved (beside the loader's ceilings)."""
    experiment = run.experiment
    run.check_cancel()
    # the loader fills one buffer of the whole count, so its runs are not streamed
    whole = LOADER in experiment.operations or any(op in EPOCH_OPERATIONS for op in experiment.operations)
    images, labels = cycled_source(run.source.images, run.source.labels, count, not whole)
    read_buffer = read_buffer_for(images)
    cells = [
        Cell(
            backend=backend,
            count=count,
            images=images,
            labels=labels,
            pixel_bytes=_pixel_bytes(images),
            folder=run.run_dir / backend / str(count),
            options=experiment.store_options(backend),
            lossless=_stores_exactly(backend, experiment.store_options(backend), images),
            read_buffer=read_buffer,
        )
        for backend in experiment.backends
    ]
    try:
        for cell in cells:
            _write_cell(run, cell)
        for cache in experiment.caches:
            for operation in (op for op in experiment.operations if op in READ_OPERATIONS):
                run.begin_group(len(cells))
                for measurement in measure_reads_together(run, cells, operation, cache):
                    run.record(measurement)
        if LOADER in experiment.operations:
            _measure_loaders(run, cells)
        for cell in cells:
            _measure_object_storage(run, cell)
    finally:
        if not experiment.keep:  # deleted when the run ends, so that no inode is freed mid-run
            for cell in cells:
                run.retired.retire(cell.store_path, cell.pixel_bytes)


def _measure_loaders(run: Run, cells: list[Cell]) -> None:
    """The loader per cache state and worker count: every format (in each order it has) and, in the
    first cache state, the ceilings, their epochs interleaved."""
    from .operations.loader import (
        ceiling_contenders,
        ceiling_sources,
        format_contenders,
        measure_loader_group,
        set_ceilings,
    )

    experiment = run.experiment
    sources = ceiling_sources(run, cells[0], _photo_source(run.source.images))
    for position, cache in enumerate(experiment.caches):
        for workers in experiment.workers:
            contenders = ceiling_contenders(run, cells[0], workers, sources) if position == 0 else []
            for cell in cells:
                contenders.extend(format_contenders(run, cell, cache, workers))
            run.begin_group(len(contenders))
            measurements = measure_loader_group(run, contenders)
            set_ceilings(run, measurements)
            for measurement in measurements:
                run.record(measurement)


def _measure_object_storage(run: Run, cell: Cell) -> None:
    """Upload, epochs (per worker count) and random reads of one backend's store at the run's location."""
    experiment = run.experiment
    for operation in (op for op in OBJECT_STORAGE_OPERATIONS if op in experiment.operations):
        for workers in experiment.workers if operation in EPOCH_OPERATIONS else [None]:
            run.record(MEASURES[operation](run, cell, "warm", workers))


def _photo_source(images: object) -> bool:
    """Whether the run's source is a folder of encoded photos (which gives the loader its decode ceiling)."""
    return hasattr(images, "encoded_chunk")


def _shapes(images: object) -> set[tuple[int, ...]]:
    if hasattr(images, "distinct_shapes"):
        return images.distinct_shapes()
    if isinstance(images, np.ndarray):
        return {tuple(images.shape[1:])}
    return {tuple(image.shape) for image in images}


def _pixel_bytes(images) -> int:
    return int(images.nbytes if hasattr(images, "nbytes") else sum(i.nbytes for i in images))


def _source_summary(experiment: Experiment, source: Any) -> dict[str, Any]:
    return {
        "spec": experiment.source,
        "kind": source.kind,
        "root": str(source.root),
        "description": source.description,
        "images": len(source.labels),
        "class_names": list(source.class_names),
    }


def _stores_exactly(backend: str, options: dict[str, Any], images: object) -> bool:
    """Whether ``backend`` with ``options`` gives back exactly ``images`` (else: held to PSNR floors).

    A store class may answer for its options with ``lossless_with(options)`` (FFCV's
    ``write_mode="jpg"`` is lossy, its default ``"raw"`` exact).

    A kept-bytes store of photos that had to be resized holds them encoded again (JPEG at
    quality 90 for JPEG photos), so it is lossy however the backend is.
    """
    encoding = parse_encoding(options.get("encoding", "raw"))
    resized_again = encoding.name == SOURCE and getattr(images, "any_resized", False)
    lossless_with = getattr(registry.store_class(backend), "lossless_with", None)  # a format whose options decide
    exact = registry.backend_info(backend).lossless if lossless_with is None else lossless_with(options)
    return exact and encoding.lossless and not resized_again


def _mean_image_bytes(images: np.ndarray | Sequence[np.ndarray]) -> float:
    if hasattr(images, "nbytes"):  # an array, or a listing that knows its pixels' size without decoding
        return images.nbytes / max(1, len(images))
    return sum(image.nbytes for image in images) / max(1, len(images))


def _make_run_dir(work_dir: str, db: Any, run_id: str | None = None) -> tuple[str, Path]:
    """The run's own folder (and its id), made after what earlier runs left is cleared away."""
    remove_leftover_folders(work_dir, db)
    remove_spent_run_folders(Path(work_dir))
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


def _check_before_running(experiment: Experiment, db: Any) -> tuple[Any, Estimate]:
    """The source loaded and the run's needs checked, before anything is written."""
    source = datasets.load_source(experiment.source, skip_bad=experiment.skip_bad)
    images = resized_source(source.images, experiment.max_side, experiment.shorter_side)
    source = replace(source, images=images)
    if LOADER in experiment.operations and experiment.transform == "none" and len(_shapes(images)) > 1:
        raise InvalidExperimentError(
            f"the loader with transform 'none' needs images of one size (a DataLoader batch is one tensor), and "
            f"{source.description} has images of several sizes: give --transform train or val, which bring every "
            "image to 224 x 224"
        )
    for backend in experiment.backends:  # before anything runs, not after the other backends
        registry.check_backend_takes(backend, images, source.description)
        if "encoding" in experiment.store_options(backend):
            check_source_encodable(parse_encoding(experiment.encoding), images, f"the images of {source.description}")
    kept = experiment.encoding == "source" and hasattr(source.images, "source_bytes")
    estimate = estimate_experiment(
        experiment,
        db,
        raw_image_bytes=_mean_image_bytes(source.images),
        source_in_memory=isinstance(source.images, np.ndarray),
        # kept bytes take the files' size on disk, not the pixels' (photos: about a fifth)
        stored_image_bytes=source.images.source_bytes / max(1, len(source.images)) if kept else None,
    )
    if not estimate.disk_fits:
        raise DiskSpaceError(estimate.message)
    if not estimate.memory_fits:
        raise InvalidExperimentError(estimate.message)
    return source, estimate


def _measure_all(
    run: Run, environment: dict[str, Any], estimate: Estimate
) -> tuple[str, str | None, BaseException | None]:
    """Every count of the run, however it ends: (status, error, the KeyboardInterrupt to raise again)."""
    status, error = "failed", None
    interrupted: BaseException | None = None
    try:
        run.emit(RunStarted(run.run_id, len(run.plan), run.experiment, environment, estimate.message, estimate.seconds))
        for count in run.experiment.counts:
            _measure_count(run, count)
        error = _failure_summary(run.measurements)
        status = "failed" if error else "finished"
        run.progress(1.0, "done")
    except RunCancelled:
        status, error = "cancelled", "cancelled by the user"
    except KeyboardInterrupt as stop:
        status, error, interrupted = "interrupted", "interrupted (KeyboardInterrupt)", stop
    except Exception as failure:
        log.exception("run %s failed", run.run_id)
        status, error = "failed", f"{type(failure).__name__}: {failure}"
    finally:
        _end_run(run, status, error, environment)
    return status, error, interrupted


def _end_run(run: Run, status: str, error: str | None, environment: dict[str, Any]) -> None:
    """Delete what the run does not keep, and record and announce how it ended."""
    experiment = run.experiment
    run.retired.delete_all(keep_folders=not experiment.keep)  # a kept run shows only its last stores
    if experiment.location is not None:
        from .operations.object_storage import remove_run_objects

        remove_run_objects(run)
    if not experiment.keep:
        delete_files(run.run_dir)  # its empty folders go in a run ten minutes later (see placement)
    environment["peak_rss_bytes"] = peak_rss_bytes()
    if run.db is not None:
        run.db.finish_run(run.run_id, status, error, environment)
    run.emit(RunFinished(run.run_id, status, error))


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
    source, estimate = _check_before_running(experiment, db)
    run_id, run_dir = _make_run_dir(experiment.work_dir, db, run_id)
    environment = capture_environment(experiment.work_dir)
    run = Run(
        run_id=run_id,
        experiment=experiment,
        run_dir=run_dir,
        source=source,
        db=db,
        on_event=on_event,
        cancel=cancel,
        interrupt=interrupt,
        weights=estimate.step_seconds,
        plan=steps(experiment, photos=_photo_source(source.images)),
        retired=RetiredStores.for_folder(run_dir),
    )
    if db is not None:
        db.create_run(run_id, experiment.to_dict(), environment, _source_summary(experiment, source))
    status, error, interrupted = _measure_all(run, environment, estimate)
    if interrupted is not None:
        raise interrupted
    return _summary(run, status, error, environment, time.perf_counter() - started)


def _summary(run: Run, status: str, error: str | None, environment: dict[str, Any], seconds: float) -> RunSummary:
    return RunSummary(
        run_id=run.run_id,
        status=status,
        measurements=run.measurements,
        error=error,
        environment=environment,
        run_dir=str(run.run_dir),
        wall_seconds=seconds,
        peak_rss_bytes=environment["peak_rss_bytes"],
        source_description=run.source.description,
    )


__all__ = ["METHODS", "RunCancelled", "new_run_id", "read_all_slice", "remove_leftover_folders", "run_experiment"]
