"""What a run produces: measurements, the events a UI follows live, and the final summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .experiment import Experiment


@dataclass
class Measurement:
    """One (backend, count, operation, cache) cell of a run, with every timed sample.

    Seconds mean: the whole call for ``write_batch``, ``write_one`` (N calls + close),
    ``read_all`` and ``read_random`` (the loop of min(N, 1,000) reads); for ``read_one``
    each sample is the median latency of min(N, 100) single reads. ``images`` is how many
    images one sample handled, so ``seconds_per_image = seconds_median / images``.
    ``mb_per_second`` counts raw pixel bytes (10^6 bytes per MB). Disk figures are those
    of the store the operation wrote or read.

    The ``loader`` operation (one shuffled epoch through a PyTorch DataLoader) also fills
    ``workers`` and ``batch_size``; ``first_batch_seconds`` (median over the repeats) is
    the wait for the first batch, worker start-up included; ``batch_p50_seconds`` and
    ``batch_p99_seconds`` are percentiles of the waits for every later batch, over all
    repeats; ``ceiling_images_per_second`` is the same DataLoader's rate over the images
    in memory in the same run and ``fraction_of_ceiling`` this figure's share of it.

    Since the loader keeps its workers alive, each loader measurement is one DataLoader
    over several epochs: ``first_epoch_seconds`` is the first (worker start-up included),
    the samples are the epochs after it. ``order`` says how the epoch was ordered
    (``"shuffle"``: torch's RandomSampler over every id, for every format; ``"own"``: the
    format's own dataset and sampler) and ``loader_path`` what read it. ``transform`` and
    ``decoder`` say what each image went through; ``read_/decode_/transform_seconds_per_batch``
    are medians over the timed epochs' batches, measured in the worker; ``per_worker`` holds
    each worker process's images and busy seconds, ``images_per_second_per_worker`` their
    median rate. ``ceiling`` names the ceiling ``fraction_of_ceiling`` is against:
    ``"in-memory"`` (pixels in memory) or ``"decode"`` (the encoded files in the page cache,
    for stores that keep encoded bytes).

    Every measurement records the machine's load during its timed repeats:
    ``load_average`` (median of the 1-minute load average) and ``other_cpu_seconds`` (CPU
    time taken by processes outside the run, see :mod:`storage.bench.machine_load`).
    """

    run_id: str
    backend: str
    count: int
    operation: str
    cache: str
    repeats: int = 0
    samples: list[float] = field(default_factory=list)
    seconds_median: float | None = None
    seconds_min: float | None = None
    seconds_max: float | None = None
    seconds_iqr: float | None = None
    seconds_per_image: float | None = None
    images_per_second: float | None = None
    mb_per_second: float | None = None
    apparent_bytes: int | None = None
    allocated_bytes: int | None = None
    files: int | None = None
    bytes_per_image: float | None = None
    verified: bool = False
    psnr: float | None = None
    evicted: bool | None = None
    error: str | None = None
    # Added beyond the dashboard's contract:
    images: int = 0
    pixel_bytes: int = 0
    includes_sync: bool = False
    sync_seconds: float | None = None
    flush_seconds: float | None = None
    """write_one: median time of the close() that writes the last write-behind group (part of the samples)."""
    resident_bytes: int | None = None
    warmup: bool = False
    peak_rss_bytes: int | None = None
    method: str = ""
    workers: int | None = None
    batch_size: int | None = None
    first_batch_seconds: float | None = None
    batch_p50_seconds: float | None = None
    batch_p99_seconds: float | None = None
    ceiling_images_per_second: float | None = None
    fraction_of_ceiling: float | None = None
    ceiling: str | None = None
    first_epoch_seconds: float | None = None
    order: str | None = None
    loader_path: str | None = None
    transform: str | None = None
    decoder: str | None = None
    read_seconds_per_batch: float | None = None
    decode_seconds_per_batch: float | None = None
    transform_seconds_per_batch: float | None = None
    images_per_second_per_worker: float | None = None
    load_average: float | None = None
    other_cpu_seconds: float | None = None
    # What the store kept: "raw" pixels, "source" (the photo files' own bytes) or a re-encoding; and
    # how the images were resized ("" when not). ``source_bytes``: the source files' bytes for the
    # ``count`` images (an image folder; None for CIFAR arrays), for the ratio of the store to them.
    encoding: str = "raw"
    resize: str = ""
    source_bytes: int | None = None
    # The object-storage operations only (a run with a ``location``): where the store was read, how (each
    # format by its own library, or downloaded whole), requests and bytes per sample as the server counted
    # them (medians; None when not counted), and the figure projected to the network named in ``projection``.
    location: str | None = None
    endpoint: str | None = None
    read_method: str | None = None
    requests: float | None = None
    transferred_bytes: float | None = None
    requests_by_type: dict[str, float] | None = None
    projected_seconds: float | None = None
    projected_images_per_second: float | None = None
    projection: dict[str, Any] | None = None
    # Distributed runs (``bench --distributed``) only: the Dask cluster's share of the work.
    cluster_workers: int | None = None
    shards: int | None = None
    per_worker: list[dict[str, Any]] | None = None
    # How busy the machine was during the recorded repeats' timed calls (see storage.bench.machine_load):
    # load average, CPU seconds other processes took, and whether that disturbed the timing.
    machine_load: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        measurement = cls(**values)
        measurement.samples = [float(s) for s in measurement.samples or []]
        return measurement

    @classmethod
    def column_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def summarize(samples: list[float]) -> dict[str, float | None]:
    """Median, min, max and interquartile range of timed samples (None if there are none)."""
    if not samples:
        return {"seconds_median": None, "seconds_min": None, "seconds_max": None, "seconds_iqr": None}
    values = np.asarray(samples, dtype=float)
    q1, q3 = np.percentile(values, [25, 75])
    return {
        "seconds_median": float(np.median(values)),
        "seconds_min": float(values.min()),
        "seconds_max": float(values.max()),
        "seconds_iqr": float(q3 - q1),
    }


def fill_rates(measurement: Measurement) -> Measurement:
    """Derive the median, spread and per-image rates from ``samples`` and ``images``."""
    measurement.repeats = len(measurement.samples)
    for name, value in summarize(measurement.samples).items():
        setattr(measurement, name, value)
    median = measurement.seconds_median
    if median is not None and measurement.images:
        measurement.seconds_per_image = median / measurement.images
        if median > 0:
            measurement.images_per_second = measurement.images / median
            measurement.mb_per_second = measurement.pixel_bytes / median / 1e6
    if measurement.allocated_bytes is not None and measurement.count:
        measurement.bytes_per_image = measurement.allocated_bytes / measurement.count
    return measurement


@dataclass
class RunStarted:
    """A run has begun; ``estimate`` is the engine's sentence on its time, disk and memory, made from the
    source itself (a folder's photos' sizes, not CIFAR's), and ``estimated_seconds`` its time."""

    run_id: str
    total_steps: int
    experiment: Experiment
    environment: dict[str, Any]
    estimate: str = ""
    estimated_seconds: float | None = None


@dataclass
class Progress:
    """``fraction`` (0..1) is of the whole run, weighted by each step's expected time."""

    run_id: str
    step: int
    total_steps: int
    message: str
    fraction: float


@dataclass
class MeasurementRecorded:
    run_id: str
    measurement: Measurement


@dataclass
class PreviewReady:
    """The same seeded ids read back from every store of one count, right after writing."""

    run_id: str
    backend: str
    count: int
    ids: list[int]
    images: list[np.ndarray]
    labels: list[int]
    class_names: list[str]
    verified: bool
    psnr: float | None


@dataclass
class TimedSection:
    """A timed call is about to start (``started``) or has just ended; sent outside the timer.

    A live view pauses its redraws while a timed call runs, so that following a run does
    not slow down what it measures (see :class:`storage.bench.live.LiveRecorder`).
    """

    run_id: str
    started: bool


@dataclass
class RunFinished:
    run_id: str
    status: str
    error: str | None


Event = RunStarted | Progress | MeasurementRecorded | PreviewReady | TimedSection | RunFinished


@dataclass
class RunSummary:
    """What :func:`run_experiment` returns: the run's id, how it ended and what it measured."""

    run_id: str
    status: str
    measurements: list[Measurement]
    error: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    wall_seconds: float = 0.0
    peak_rss_bytes: int = 0
    source_description: str = ""

    @property
    def verification_failed(self) -> bool:
        return any(not m.verified for m in self.measurements)
