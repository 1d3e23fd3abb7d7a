"""What a benchmark run measures: backends × image counts × operations × cache states × repeats."""

from __future__ import annotations

import importlib.util
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import registry
from ..errors import StorageError

STORAGE_OPERATIONS = ("write_batch", "write_one", "read_all", "read_random", "read_one")
LOADER = "loader"  # one shuffled epoch through a PyTorch DataLoader (imports torch when it runs)
OPERATIONS = (*STORAGE_OPERATIONS, LOADER)
DEFAULT_OPERATIONS = STORAGE_OPERATIONS  # the loader is asked for by name: it needs torch and takes longer
WRITE_OPERATIONS = ("write_batch", "write_one")
READ_OPERATIONS = ("read_all", "read_random", "read_one")
CACHES = ("warm", "cold")
DEFAULT_BACKENDS = ["png", "lmdb", "hdf5"]
DEFAULT_COUNTS = [1, 10, 100, 1_000, 10_000, 100_000]
DEFAULT_WORKERS = [0, 2]
DEFAULT_BATCH_SIZE = 256
CEILING_BACKEND = "in-memory"  # the loader's "no storage" ceiling: the same DataLoader over images in memory

RANDOM_READS = 1_000  # read_random reads min(N, 1,000) shuffled ids
LATENCY_READS = 100  # read_one times min(N, 100) single reads, each on its own
VERIFY_SAMPLE = 1_000  # ids read back to check a store when no full read follows
WARMUP_MAX_COUNT = 1_000  # counts up to this get one unrecorded warm-up repeat


class InvalidExperimentError(StorageError, ValueError):
    """An experiment that cannot run: an unknown operation, a count that is not positive, ..."""


@dataclass
class Experiment:
    """One benchmark run's parameters; with the same seed and source it repeats exactly.

    Attributes:
        backends: registered backend names.
        counts: image counts; each backend writes a fresh store of each count.
        operations: a subset of :data:`OPERATIONS`.
        caches: a subset of :data:`CACHES`; reads are measured in each cache state, writes
            once (the page cache state before a write does not matter to it).
        repeats: recorded repeats of every measurement.
        source: ``"auto"``, ``"sample"``, ``"cifar10"`` or a folder path.
        skip_bad: an image-folder source skips files it cannot read instead of failing.
        seed: seeds the random ids of ``read_random``, ``read_one`` and the previews.
        keep: keep the stores under ``work_dir/<run id>`` after the run.
        work_dir: where each run makes its own folder.
        preview_ids: how many ids are read back from each store for previews.
        backend_options: options per backend name, passed to ``open_store``.
        workers: DataLoader worker counts the ``loader`` operation is measured with.
        batch_size: images per DataLoader batch for the ``loader`` operation.
    """

    backends: list[str] = field(default_factory=lambda: list(DEFAULT_BACKENDS))
    counts: list[int] = field(default_factory=lambda: list(DEFAULT_COUNTS))
    operations: list[str] = field(default_factory=lambda: list(DEFAULT_OPERATIONS))
    caches: list[str] = field(default_factory=lambda: ["warm"])
    repeats: int = 3
    source: str = "auto"
    skip_bad: bool = False
    seed: int = 0
    keep: bool = False
    work_dir: str = "data/runs"
    preview_ids: int = 4
    backend_options: dict[str, dict] = field(default_factory=dict)
    workers: list[int] = field(default_factory=lambda: list(DEFAULT_WORKERS))
    batch_size: int = DEFAULT_BATCH_SIZE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InvalidExperimentError(f"{what} {value!r} is not a positive integer")
    return int(value)


def _worker_counts(workers: object) -> list[int]:
    values = list(workers) if isinstance(workers, (list, tuple)) else []
    if not values:
        raise InvalidExperimentError("choose at least one DataLoader worker count (0 reads in the main process)")
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidExperimentError(
                f"worker count {value!r} is not a whole number of 0 or more; "
                "give 0 (read in the main process) or the number of DataLoader worker processes"
            )
    return sorted({int(value) for value in values})


def validate(experiment: Experiment) -> Experiment:
    """Check every parameter before anything is written; return a normalised copy.

    Raises:
        UnknownBackendError: a backend that is not registered (the message lists the valid ones).
        InvalidExperimentError: anything else that is wrong, said in one sentence.
    """
    if not experiment.backends:
        raise InvalidExperimentError("choose at least one backend")
    for name in experiment.backends:
        registry.backend_info(name)  # raises UnknownBackendError listing the valid names
    if not experiment.counts:
        raise InvalidExperimentError("choose at least one image count")
    counts = sorted({_positive_int(count, "image count") for count in experiment.counts})
    if not experiment.operations:
        raise InvalidExperimentError(f"choose at least one operation of: {', '.join(OPERATIONS)}")
    for operation in experiment.operations:
        if operation not in OPERATIONS:
            raise InvalidExperimentError(f"unknown operation {operation!r}; operations are: {', '.join(OPERATIONS)}")
    caches = list(experiment.caches) or ["warm"]
    for cache in caches:
        if cache not in CACHES:
            raise InvalidExperimentError(f"unknown cache state {cache!r}; cache states are: {', '.join(CACHES)}")
    if LOADER in experiment.operations and importlib.util.find_spec("torch") is None:
        raise InvalidExperimentError(
            "the loader operation needs PyTorch, which is not installed: python3 -m pip install -r requirements.txt"
        )
    repeats = _positive_int(experiment.repeats, "repeats")
    if isinstance(experiment.seed, bool) or not isinstance(experiment.seed, (int, np.integer)) or experiment.seed < 0:
        raise InvalidExperimentError(f"seed {experiment.seed!r} is not a non-negative integer")
    if (
        isinstance(experiment.preview_ids, bool)
        or not isinstance(experiment.preview_ids, int)
        or experiment.preview_ids < 0
    ):
        raise InvalidExperimentError(f"preview_ids {experiment.preview_ids!r} is not a non-negative integer")
    unknown = sorted(set(experiment.backend_options) - set(experiment.backends))
    if unknown:
        raise InvalidExperimentError(f"backend_options name backends that are not in the run: {', '.join(unknown)}")
    workers, batch_size = list(experiment.workers), experiment.batch_size
    if LOADER in experiment.operations:  # unused otherwise, so not held against the run
        workers = _worker_counts(experiment.workers)
        batch_size = _positive_int(experiment.batch_size, "batch size")
    return Experiment(
        backends=list(dict.fromkeys(experiment.backends)),
        counts=counts,
        operations=[op for op in OPERATIONS if op in experiment.operations],
        caches=[cache for cache in CACHES if cache in caches],
        repeats=repeats,
        source=str(experiment.source),
        skip_bad=bool(experiment.skip_bad),
        seed=int(experiment.seed),
        keep=bool(experiment.keep),
        work_dir=str(experiment.work_dir),
        preview_ids=experiment.preview_ids,
        backend_options={name: dict(options) for name, options in experiment.backend_options.items()},
        workers=workers,
        batch_size=batch_size,
    )


def steps(experiment: Experiment) -> list[tuple[str, int, str, str]]:
    """Every measurement of the run, in the order the engine takes them.

    Each is (backend, count, operation, cache). Counts are the outer loop, so that all
    backends are measured on the same images close together in time; writes are
    measured once, as "warm". The ``loader`` operation is one step per worker count,
    and each count starts with the in-memory ceiling (:data:`CEILING_BACKEND`) at every
    worker count, so that each format's figure can be set beside it.
    """
    plan = []
    loader = LOADER in experiment.operations
    for count in experiment.counts:
        if loader:
            plan.extend((CEILING_BACKEND, count, LOADER, "warm") for _ in experiment.workers)
        for backend in experiment.backends:
            for operation in experiment.operations:
                if operation in WRITE_OPERATIONS:
                    plan.append((backend, count, operation, "warm"))
            for cache in experiment.caches:
                for operation in experiment.operations:
                    if operation in READ_OPERATIONS:
                        plan.append((backend, count, operation, cache))
                if loader:
                    plan.extend((backend, count, LOADER, cache) for _ in experiment.workers)
    return plan


def images_per_sample(operation: str, count: int) -> int:
    """How many images one timed sample of ``operation`` handles on a store of ``count``."""
    if operation == "read_random":
        return min(count, RANDOM_READS)
    if operation == "read_one":
        return 1
    return count


def seeded_rng(seed: int, count: int, purpose: str) -> np.random.Generator:
    """A generator fixed by (seed, count, purpose): the same ids for every backend."""
    return np.random.default_rng([seed, count, zlib.crc32(purpose.encode())])


def verified_after_write(experiment: Experiment, operation: str, count: int) -> int:
    """How many images are read back after a write to check it.

    All of them after ``write_batch``, unless ``read_all`` (which checks every image
    anyway) follows; a seeded sample after ``write_one``.
    """
    if operation == "write_batch" and "read_all" not in experiment.operations:
        return count
    return min(count, VERIFY_SAMPLE)
