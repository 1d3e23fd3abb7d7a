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
    run_id: str
    total_steps: int
    experiment: Experiment
    environment: dict[str, Any]


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
class RunFinished:
    run_id: str
    status: str
    error: str | None


Event = RunStarted | Progress | MeasurementRecorded | PreviewReady | RunFinished


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
