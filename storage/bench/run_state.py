"""What a run carries from measurement to measurement, and the steps every operation shares.

:class:`Run` is one run's state (its experiment, where it reports, its progress and
timer), :class:`Cell` one backend at one image count. The operations
(:mod:`storage.bench.operations`) and both engines (:mod:`storage.bench.engine`,
:mod:`storage.bench.distributed`) build their measurements with :func:`new_measurement`
and finish them with :func:`finish_measurement`; every repeated operation goes through
:func:`repeats`, so the warm-up, the progress line and the cancel check are the same
everywhere.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..base import DiskUsage, measure_disk_usage
from ..verify import Verification
from . import pagecache
from .environment import peak_rss_bytes
from .events import Event, Measurement, MeasurementRecorded, Progress, TimedSection, fill_rates
from .experiment import WARMUP_MAX_COUNT, Experiment, images_per_sample, seeded_rng
from .machine_load import LoadMeter
from .methods import DISTRIBUTED_METHODS, METHODS
from .placement import RetiredStores

PROGRESS_INTERVAL = 0.25  # seconds between Progress events inside long operations


class RunCancelled(Exception):
    """Raised inside a run (also from write_batch's progress callback) to stop it."""


@contextmanager
def gc_paused():
    """No garbage collection inside a timed call: a collection would land in a random sample."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(kw_only=True)
class Run:
    """The state one run carries from measurement to measurement."""

    run_id: str
    experiment: Experiment
    run_dir: Path
    source: Any
    db: Any
    on_event: Callable[[Event], None] | None = None
    cancel: threading.Event | None = None
    interrupt: threading.Event | None = None
    weights: list[float]  # each step's share of the run's expected time, for the progress fraction
    plan: list[tuple[str, int, str, str]]
    retired: RetiredStores  # stores measured, deleted when the run ends (see storage.bench.placement)
    measurements: list[Measurement] = field(default_factory=list)
    ceilings: dict[tuple[int, int, str], float] = field(default_factory=dict)  # (count, workers, kind) -> images/s
    step: int = 0
    group_steps: int = 1  # measurements taken together (interleaved) from ``step`` on
    done_weight: float = 0.0
    last_progress: float = 0.0
    paused_seconds: float = 0.0
    message: str = ""
    load: LoadMeter = field(default_factory=LoadMeter)  # what other processes took during the timed calls
    counting: bool = True  # whether the timed calls now belong to a recorded repeat (not a warm-up)
    timing: bool = False  # inside a timed call now

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

    def begin_group(self, steps: int) -> None:
        """The next ``steps`` measurements are taken together, their repeats interleaved: progress
        inside the group counts over all of them, until they are recorded."""
        self.group_steps = max(1, steps)

    def fraction(self, inner: float) -> float:
        total = sum(self.weights) or 1.0
        weight = sum(self.weights[self.step : self.step + self.group_steps])
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
        if self.timing:  # a timed call that raised: it is over
            self.counting = False
            self._leave_timed_section()
            self.counting = True
        machine_load = self.load.take()
        if measurement.machine_load is None:
            measurement.machine_load = machine_load
        finish_measurement(measurement)
        self.measurements.append(measurement)
        if self.db is not None:
            self.db.add_measurement(measurement)
        self.emit(MeasurementRecorded(self.run_id, measurement))
        self.done_weight += self.weights[self.step] if self.step < len(self.weights) else 0.0
        self.step += 1
        self.group_steps = max(1, self.group_steps - 1)
        return measurement

    # -- timing ----------------------------------------------------------------------

    def start_timer(self) -> float:
        """Start a timed call: a live view is told first (it pauses), the machine's load is read, then the clock."""
        self._enter_timed_section()
        self.paused_seconds = 0.0
        return time.perf_counter()

    def stop_timer(self, started: float) -> float:
        """The seconds since ``started``, less the pauses; the load is read and a live view told after the clock."""
        seconds = time.perf_counter() - started - self.paused_seconds
        self._leave_timed_section()
        return seconds

    @contextmanager
    def timed_section(self) -> Iterator[None]:
        """A timed call that keeps its own clock (``read_one`` times each read): announced and load-read like one."""
        self._enter_timed_section()
        try:
            yield
        finally:
            self._leave_timed_section()

    def _enter_timed_section(self) -> None:
        self.emit(TimedSection(self.run_id, True))
        self.timing = True
        self.load.start()

    def _leave_timed_section(self) -> None:
        self.load.stop(counted=self.counting)
        self.timing = False
        self.emit(TimedSection(self.run_id, False))


@dataclass(kw_only=True)
class Cell:
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

    @property
    def per_image_bytes(self) -> float:
        return self.pixel_bytes / self.count

    def new_measurement(self, run_id: str, operation: str, cache: str = "warm") -> Measurement:
        """An empty measurement of ``operation`` on this cell's stores, saying what they keep."""
        measurement = new_measurement(
            run_id, self.backend, self.count, operation, cache, per_image_bytes=self.per_image_bytes
        )
        measurement.encoding = str(self.options.get("encoding", "raw"))
        measurement.resize = describe_resize(self.options.get("max_side"), self.options.get("shorter_side"))
        source_bytes = getattr(self.images, "source_bytes", None)
        measurement.source_bytes = int(source_bytes) if source_bytes is not None else None
        return measurement


# -- repeats ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Repeat:
    """One pass of a repeated operation: ``index`` of ``runs``; warm-up passes are not ``recorded``."""

    index: int
    runs: int
    recorded: bool

    def at(self, inner: float) -> float:
        """The operation's progress when this pass is ``inner`` (0 to 1) done."""
        return (self.index + inner) / self.runs


def runs_of(count: int, repeats: int) -> tuple[int, int]:
    """(warm-up runs, total runs): one unrecorded warm-up for small counts."""
    warmup = 1 if count <= WARMUP_MAX_COUNT else 0
    return warmup, warmup + repeats


def repeats(run: Run, cell: Cell, what: str) -> Iterator[Repeat]:
    """Every pass of one measurement: an unrecorded warm-up for small counts, then the repeats.

    Before each pass the run checks for cancel and shows which pass it is; ``what`` names
    the operation in that line (``read_all (cold)``).
    """
    warmup, runs = runs_of(cell.count, run.experiment.repeats)
    run.load.take()  # what was timed before (a store written for the reads) is not this measurement's
    for index in range(runs):
        run.check_cancel()
        label = "warm-up" if index < warmup else f"repeat {index - warmup + 1}/{runs - warmup}"
        run.progress(index / runs, f"{cell.backend} · {images_phrase(cell.count)} · {what} · {label}")
        run.counting = index >= warmup
        yield Repeat(index, runs, index >= warmup)
    run.counting = True


def images_phrase(count: int) -> str:
    """``1 image``, ``1,000 images``."""
    return f"{count:,} image" + ("" if count == 1 else "s")


def rounds(run: Run, count: int, members: list[str], what: str, warmup: bool = True) -> Iterator[tuple[int, Repeat]]:
    """Every pass of several measurements taken together, interleaved: A B C, A B C, ...

    ``members`` name them (their backends) for the progress line. Yields ``(member, repeat)``;
    ``repeat.at`` gives the group's progress. With ``warmup`` the first round is an unrecorded
    warm-up for small counts, as in :func:`repeats`; without it, the caller decides (the loader
    keeps every round and reports the first apart).
    """
    warm, runs = runs_of(count, run.experiment.repeats) if warmup else (0, run.experiment.repeats)
    total = runs * len(members)
    for index in range(runs):
        label = "warm-up" if index < warm else f"repeat {index - warm + 1}/{runs - warm}"
        for member, name in enumerate(members):
            run.check_cancel()
            step = index * len(members) + member
            run.progress(step / max(1, total), f"{name} · {count:,} images · {what} · {label}")
            yield member, Repeat(step, total, index >= warm)


# -- measurements ----------------------------------------------------------------------


def new_measurement(
    run_id: str,
    backend: str,
    count: int,
    operation: str,
    cache: str = "warm",
    *,
    per_image_bytes: float,
    images: int | None = None,
    distributed: bool = False,
) -> Measurement:
    """An empty measurement of ``operation``, with its method's text and the pixels one sample handles.

    ``images`` (one sample's images) defaults to what the operation reads on a store of
    ``count``. A distributed run (on a Dask cluster) has its own methods and no warm-up.
    """
    images = images_per_sample(operation, count) if images is None else images
    return Measurement(
        run_id=run_id,
        backend=backend,
        count=count,
        operation=operation,
        cache=cache,
        images=images,
        pixel_bytes=int(round(per_image_bytes * images)),
        warmup=not distributed and count <= WARMUP_MAX_COUNT,
        method=_methods(distributed)[operation],
    )


def _methods(distributed: bool) -> Mapping[str, str]:
    return DISTRIBUTED_METHODS if distributed else METHODS


def describe_resize(max_side: int | None, shorter_side: int | None) -> str:
    """How a run resized its images, in words ("" when it did not)."""
    parts = [
        f"shorter side {shorter_side} px" if shorter_side else "",
        f"longest side {max_side} px" if max_side else "",
    ]
    return ", ".join(part for part in parts if part)


def finish_measurement(measurement: Measurement) -> Measurement:
    """The rates from the samples and the peak memory so far: the last step before recording."""
    fill_rates(measurement)
    measurement.peak_rss_bytes = peak_rss_bytes()
    return measurement


def set_disk(measurement: Measurement, usage: DiskUsage) -> None:
    measurement.apparent_bytes = usage.apparent_bytes
    measurement.allocated_bytes = usage.allocated_bytes
    measurement.files = usage.files


def fail(measurement: Measurement, error: BaseException | str) -> None:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    measurement.error = text
    measurement.verified = False


def apply_verification(measurement: Measurement, result: Verification, what: str) -> bool:
    """Keep the lowest PSNR seen; a mismatch fails the measurement, saying ``what`` was checked."""
    if result.psnr is not None:
        measurement.psnr = result.psnr if measurement.psnr is None else min(measurement.psnr, result.psnr)
    if not result.verified:
        fail(measurement, f"VERIFICATION FAILED ({what}): {result.error}")
        return False
    return True


def evict_store(measurement: Measurement, path: Path) -> None:
    """Evict every file of the store from the page cache; record whether it worked."""
    residency = pagecache.evict(path)
    measurement.resident_bytes = max(measurement.resident_bytes or 0, residency.resident_bytes)
    evicted = residency.resident_bytes == 0
    measurement.evicted = evicted if measurement.evicted in (None, True) else False


def store_was_written(measurement: Measurement, cell: Cell) -> bool:
    """Whether ``cell``'s store exists to read; if not, ``measurement`` says why it was not measured."""
    if cell.store_path is None:
        fail(measurement, f"not measured: the store could not be written ({cell.write_failed or 'unknown error'})")
        return False
    set_disk(measurement, measure_disk_usage(cell.store_path))
    return True


def sample_ids(run: Run, count: int, size: int, purpose: str) -> np.ndarray:
    """``size`` distinct ids of ``count``, sorted, the same for every backend (seeded by ``purpose``)."""
    return np.sort(seeded_rng(run.experiment.seed, count, purpose).choice(count, size=min(size, count), replace=False))


__all__ = [
    "PROGRESS_INTERVAL",
    "Cell",
    "Repeat",
    "Run",
    "RunCancelled",
    "apply_verification",
    "evict_store",
    "fail",
    "finish_measurement",
    "gc_paused",
    "images_phrase",
    "new_measurement",
    "repeats",
    "rounds",
    "runs_of",
    "sample_ids",
    "set_disk",
    "store_was_written",
]
