"""Rough time and disk needs of an experiment, known before anything is written.

Per-image costs come from the measurements in ``BENCHMARKING.md`` (2-core VM, ext4) and
are refined by past results when a results database is given: the measurement of the
same backend, operation and cache state whose image count is closest wins. The disk
estimate is deliberately generous: running out of space midway is worse than refusing.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field

import psutil

from .. import registry
from ..parallel import worker_count
from .environment import existing_parent
from .experiment import (
    CEILING_BACKEND,
    DECODE_CEILING_BACKEND,
    LATENCY_READS,
    LOADER,
    OBJECT_STORAGE_OPERATIONS,
    WARMUP_MAX_COUNT,
    WRITE_OPERATIONS,
    Experiment,
    images_per_sample,
    steps,
    validate,
    verified_after_write,
)
from .streaming import MEMORY_CEILING_MAX_BYTES, memory_needed

RAW_IMAGE_BYTES = 32 * 32 * 3
BLOCK = 4096
MEGABYTE = 1_000_000

# Seconds per image (per read for read_random and read_one) on the development machine (2
# cores, ext4, CIFAR-10), from `python -m storage bench --counts 10000 --repeats 1` over these
# backends on 1 December 2026 (png and webp writes from quieter runs); backends not listed get
# _DEFAULT_COSTS until a past run in the results database says better.
_COSTS = {
    "png": {"write_batch": 1e-4, "write_one": 1.2e-4, "read_all": 7e-5, "read_random": 6e-5, "read_one": 6e-5},
    "lmdb": {"write_batch": 7e-6, "write_one": 1.4e-5, "read_all": 1e-6, "read_random": 4e-6, "read_one": 3e-6},
    "hdf5": {"write_batch": 2e-6, "write_one": 7e-6, "read_all": 7e-7, "read_random": 6e-6, "read_one": 5e-6},
    "jpeg": {"write_batch": 6.2e-5, "write_one": 6.7e-5, "read_all": 6.3e-5, "read_random": 6.5e-5, "read_one": 6.4e-5},
    "webp": {"write_batch": 2e-4, "write_one": 1.8e-4, "read_all": 3e-5, "read_random": 5.5e-5, "read_one": 5.6e-5},
    "webp-lossy": {
        "write_batch": 1.5e-4,
        "write_one": 1.9e-4,
        "read_all": 2.9e-5,
        "read_random": 5.4e-5,
        "read_one": 5.3e-5,
    },
    "npy": {"write_batch": 5e-6, "write_one": 1.9e-5, "read_all": 7e-7, "read_random": 7.6e-6, "read_one": 6e-6},
    "zarr": {"write_batch": 2.4e-5, "write_one": 3.4e-5, "read_all": 3.4e-6, "read_random": 8.5e-6, "read_one": 8e-6},
    "lmdb-png": {
        "write_batch": 6.8e-5,
        "write_one": 7.6e-5,
        "read_all": 3e-5,
        "read_random": 5.3e-5,
        "read_one": 5.4e-5,
    },
    "hdf5-gzip": {
        "write_batch": 5.4e-5,
        "write_one": 6e-5,
        "read_all": 1.2e-5,
        "read_random": 1.1e-4,
        "read_one": 2.3e-4,
    },
    "hdf5-lzf": {
        "write_batch": 1.8e-5,
        "write_one": 2.4e-5,
        "read_all": 4.1e-6,
        "read_random": 4.5e-5,
        "read_one": 8.9e-5,
    },
    "hdf5-blosc": {
        "write_batch": 1.4e-5,
        "write_one": 1.9e-5,
        "read_all": 1.5e-6,
        "read_random": 1.6e-5,
        "read_one": 2.8e-5,
    },
    "webdataset": {
        "write_batch": 3.2e-5,
        "write_one": 5.1e-5,
        "read_all": 1e-6,
        "read_random": 5.5e-6,
        "read_one": 5e-6,
    },
    "parquet": {
        "write_batch": 1.4e-5,
        "write_one": 3.1e-5,
        "read_all": 2.7e-5,
        "read_random": 1.7e-4,
        "read_one": 1.6e-4,
    },
    # The peers, measured at 100,000 images; their loaders use the libraries' own datasets.
    "litdata": {
        "write_batch": 4.8e-5,
        "write_one": 3.4e-5,
        "read_all": 1.7e-5,
        "read_random": 1.2e-4,
        "read_one": 1.2e-4,
        "loader": 5e-5,
    },
    "mds": {
        "write_batch": 2.4e-5,
        "write_one": 3.6e-5,
        "read_all": 4.7e-5,
        "read_random": 4.2e-5,
        "read_one": 4e-5,
        "loader": 1e-4,
    },
    "lance": {
        "write_batch": 1.9e-5,
        "write_one": 2.5e-5,
        "read_all": 9e-6,
        "read_random": 7.4e-4,
        "read_one": 3e-4,
        "loader": 1e-5,
    },
    # Measured at 10,000 images (load average 5-8): HF encodes and decodes PNG per image; FFCV's
    # writer starts its processes per file and its Loader compiles its pipeline per epoch.
    "hf-datasets": {
        "write_batch": 2.1e-4,
        "write_one": 2.3e-4,
        "read_all": 1.2e-4,
        "read_random": 3.9e-4,
        "read_one": 3.3e-4,
        "loader": 1.9e-4,
    },
    "ffcv": {
        "write_batch": 7e-4,
        "write_one": 4e-4,
        "read_all": 5.4e-6,
        "read_random": 8e-6,
        "read_one": 6e-6,
        "loader": 8.4e-5,
    },
}
_DEFAULT_COSTS = {
    "write_batch": 3e-4,
    "write_one": 1e-3,
    "read_all": 2e-4,
    "read_random": 2e-4,
    "read_one": 2e-4,
    "loader": 2e-4,
}
_LOADER_OVERHEAD = 1e-5  # seconds per image a DataLoader adds (batches between processes), CIFAR-sized
_LOADER_START = 0.5  # seconds per loader: worker start-up, the dataset opening its store
_AUGMENT_COST = 1.5e-3  # seconds per image and core to decode a 256-px photo and crop it (transform train/val)
_OBJECT_STORAGE_COST = 5e-5  # seconds per image moved through a local S3 server (upload, an epoch), CIFAR-sized
_COLD_FACTOR = 3.0
_STEP_OVERHEAD = 0.02  # opening stores, verification, bookkeeping per measurement
# Per write step on top: creating, closing (LMDB's commit syncs) and reading back a store, and its
# previews: 0.03-0.07 s measured here for 1 to 100 images.
_WRITE_STEP_OVERHEAD = 0.04
# Once per run: starting its process, loading the images and describing the machine (1.0 s
# measured in the engine here, plus about half a second to start the dashboard's process).
_RUN_OVERHEAD = 1.5
# Photos (a folder source) are decoded on every core, and every decode costs about this per byte
# of pixels: PIL's libjpeg-turbo on the bundled ImageNet photos here, 3-7 ms a photo of 560-680 KB.
_DECODE_PER_PIXEL_BYTE = 6e-9
_EVICT_PER_FILE = 3e-5
_BASE_MEMORY = 300 * MEGABYTE


@dataclass
class Estimate:
    """What an experiment will roughly take.

    Attributes:
        seconds: expected wall time.
        disk_bytes: the most disk the run holds at once (with a safety margin).
        free_bytes: free space where the run writes.
        fits: whether the run fits: ``disk_bytes`` in ``free_bytes`` and ``memory_bytes``
            in ``available_memory_bytes``.
        message: one sentence saying all of it (and what to do if it does not fit).
        step_seconds: expected seconds of each step, in the engine's order.
        memory_bytes: memory the run needs at its largest count (its images, and the
            buffer reads fill, outside what the backends themselves use).
        available_memory_bytes: memory available on this machine now.
        disk_fits, memory_fits: the two halves of ``fits``.
    """

    seconds: float
    disk_bytes: int
    free_bytes: int
    fits: bool
    message: str
    step_seconds: list[float] = field(default_factory=list)
    memory_bytes: int = 0
    available_memory_bytes: int = 0
    disk_fits: bool = True
    memory_fits: bool = True


def per_image_cost(backend: str, operation: str, cache: str = "warm") -> float:
    """Built-in seconds per image of an operation."""
    if operation in OBJECT_STORAGE_OPERATIONS:  # over loopback to a local S3 server: a few times a bulk read
        return _OBJECT_STORAGE_COST + per_image_cost(backend, "read_all", cache)
    if operation == LOADER:  # batched reads: about a bulk read, plus the loader's own cost
        if backend == CEILING_BACKEND:
            return _LOADER_OVERHEAD
        own = _COSTS.get(backend, {}).get(LOADER)
        if own is not None:  # a format whose loader is its library's own dataset class
            return own * (_COLD_FACTOR if cache == "cold" else 1.0) + _LOADER_OVERHEAD
        return per_image_cost(backend, "read_all", cache) * 2 + _LOADER_OVERHEAD
    cost = _COSTS.get(backend, _DEFAULT_COSTS).get(operation, _DEFAULT_COSTS[operation])
    return cost * (_COLD_FACTOR if cache == "cold" else 1.0)


def _stores_encoded(experiment: Experiment, backend: str) -> bool:
    """Whether ``backend`` keeps encoded images in this run (the files' bytes, a re-encoding, a codec's files)."""
    if backend in (CEILING_BACKEND, DECODE_CEILING_BACKEND):  # the loader's references: pixels, or the files
        return backend == DECODE_CEILING_BACKEND
    info = registry.registered_info(backend)
    return experiment.encoding != "raw" or info.compressed or info.one_file_per_image or not info.lossless


def decodes_per_image(experiment: Experiment, backend: str, operation: str, timed: bool = True) -> int:
    """Photo decodes an operation costs per image it handles: in its timed calls (unless ``timed`` is
    False, when a past measurement's cost already holds them), and in its untimed check against the source.

    A write decodes the source unless the store keeps its files' bytes; a read decodes what
    the store keeps when it is encoded, and the source's photo to check it against.
    """
    if operation == "upload":
        return 0
    if operation in WRITE_OPERATIONS:
        return int(timed and experiment.encoding != "source")
    return int(timed and _stores_encoded(experiment, backend)) + 1


def _history_costs(db, experiment: Experiment) -> dict[tuple[str, str, str], list[tuple[int, float]]]:
    """(backend, operation, cache) -> [(count, seconds per image)] from finished past runs."""
    history: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    try:
        runs = [run.id for run in db.list_runs(limit=50) if run.status in ("finished", "cancelled")]
        for measurement in db.measurements(runs):
            if measurement.backend in experiment.backends and measurement.seconds_per_image:
                key = (measurement.backend, measurement.operation, measurement.cache)
                history.setdefault(key, []).append((measurement.count, measurement.seconds_per_image))
    except Exception:  # an estimate must never fail because of the history
        return {}
    return history


def _closest(points: list[tuple[int, float]], count: int) -> float | None:
    if not points:
        return None
    return min(points, key=lambda point: abs(math.log(point[0]) - math.log(count)))[1]


def bytes_per_image(backend: str, raw_bytes: float) -> float:
    """Generous allocated bytes per image: raw pixels plus format overhead, block-rounded."""
    info = registry.backend_info(backend)
    per_image = raw_bytes * 1.15 + 64
    if info.one_file_per_image:
        per_image = max(per_image, math.ceil(per_image / BLOCK) * BLOCK)
    return per_image


def estimate_experiment(
    experiment: Experiment,
    db=None,
    raw_image_bytes: float = RAW_IMAGE_BYTES,
    source_in_memory: bool = True,
    stored_image_bytes: float | None = None,
) -> Estimate:
    """Expected wall time and disk space of ``experiment``.

    Args:
        experiment: what to run (validated here).
        db: an optional :class:`ResultsDB` whose past measurements refine the time.
        raw_image_bytes: pixel bytes of an average source image (CIFAR-10: 3,072).
        source_in_memory: False for a folder of photos, decoded a chunk at a time.
        stored_image_bytes: bytes a store keeps per image when that is not the pixels (the
            files' own bytes, kept with ``encoding="source"``); the disk estimate uses it.
    """
    experiment = validate(experiment)
    history = _history_costs(db, experiment) if db is not None else {}
    step_seconds = []
    for backend, count, operation, cache in steps(experiment):
        past = _closest(history.get((backend, operation, cache), []), count)
        cost = past or per_image_cost(backend, operation, cache)
        images = images_per_sample(operation, count)
        if operation == "read_one":
            images = min(count, LATENCY_READS)
        runs = experiment.repeats + (1 if count <= WARMUP_MAX_COUNT or operation == LOADER else 0)
        seconds = cost * images * runs + _STEP_OVERHEAD
        if operation == LOADER:  # one loader, its first epoch apart (its start-up), then the repeats
            seconds += _LOADER_START
            if experiment.transform != "none":
                seconds += _AUGMENT_COST * images * runs / max(1, min(experiment.workers))
        if operation in OBJECT_STORAGE_OPERATIONS:  # each epoch starts its loader and opens the remote store
            seconds += _LOADER_START * runs
        if operation in WRITE_OPERATIONS:  # reading the store back to verify it
            seconds += _WRITE_STEP_OVERHEAD
            seconds += per_image_cost(backend, "read_all") * verified_after_write(experiment, operation, count)
        if cache == "cold":
            seconds += experiment.repeats * count * _EVICT_PER_FILE
        if not source_in_memory:  # photos: decoded for the store, for reads and for every check
            decoded = decodes_per_image(experiment, backend, operation, timed=past is None) * images * runs
            if operation in WRITE_OPERATIONS:
                decoded += (1 + _stores_encoded(experiment, backend)) * verified_after_write(
                    experiment, operation, count
                )
            seconds += decoded * raw_image_bytes * _DECODE_PER_PIXEL_BYTE / worker_count()
        step_seconds.append(seconds)

    # Stores of one count exist at once (one per write operation); earlier counts are
    # removed as the run goes, unless kept.
    per_count = []
    for count in experiment.counts:
        stores = sum(
            bytes_per_image(backend, stored_image_bytes or raw_image_bytes)
            * count
            * (1 + ("write_one" in experiment.operations))
            for backend in experiment.backends
        )
        per_count.append(stores + BLOCK * 16 * len(experiment.backends))
    needed = sum(per_count) if experiment.keep else max(per_count)
    disk_bytes = int(needed * 1.1 + 50 * MEGABYTE)
    free = shutil.disk_usage(existing_parent(experiment.work_dir)).free
    disk_fits = disk_bytes <= free
    # The images of the largest count and the buffer reads fill, plus the interpreter and libraries.
    # A loader over arrays fills one buffer of the whole count; over a folder of photos it keeps
    # none of an epoch's images (each batch is checked as it arrives), as a run without it.
    memory = memory_needed(
        max(experiment.counts),
        raw_image_bytes,
        _BASE_MEMORY,
        allow_stream=LOADER not in experiment.operations or not source_in_memory,
        source_in_memory=source_in_memory,
    )
    if LOADER in experiment.operations:  # torch, and the batches in flight between processes
        memory += _BASE_MEMORY
        if not source_in_memory:  # the in-memory ceiling: the folder's distinct photos, decoded once
            memory += min(int(max(experiment.counts) * raw_image_bytes), MEMORY_CEILING_MAX_BYTES)
    available = psutil.virtual_memory().available
    memory_fits = memory <= available
    seconds = _RUN_OVERHEAD + sum(step_seconds)
    if not disk_fits:
        message = (
            f"this run needs about {disk_bytes / MEGABYTE:,.0f} MB of disk under {experiment.work_dir} "
            f"but only {free / MEGABYTE:,.0f} MB are free; use smaller counts, fewer backends, "
            "no --keep, or another --work-dir"
        )
    elif not memory_fits:
        message = (
            f"this run needs about {memory / MEGABYTE:,.0f} MB of memory for {max(experiment.counts):,} images "
            f"but only {available / MEGABYTE:,.0f} MB are available; use smaller counts"
        )
    else:
        message = (
            f"about {format_duration(seconds)}, {disk_bytes / MEGABYTE:,.0f} MB of disk "
            f"({free / MEGABYTE:,.0f} MB free) and {memory / MEGABYTE:,.0f} MB of memory"
        )
    return Estimate(
        seconds,
        disk_bytes,
        free,
        disk_fits and memory_fits,
        message,
        step_seconds,
        memory,
        available,
        disk_fits,
        memory_fits,
    )


def format_duration(seconds: float) -> str:
    """3 s, 2 min 5 s, 1 h 4 min."""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
