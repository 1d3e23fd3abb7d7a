"""Measurements of the candidates on a sample of the user's data, within a time budget.

The measurements are ordinary benchmark runs (:func:`storage.bench.run_experiment`), one
per image count, recorded in the results database like any other: the Results page shows
them, and a later question on the same data and machine reuses them instead of measuring
again. Three counts, a fifth of each other, up to 10,000 images (fixed costs, such as a
DataLoader starting its workers, make smaller counts cost nearly as much as these); after
each count, the time each format took predicts the next one's (five times the images, five
times the time, at most), and a format goes on only while its prediction fits in what is
left of the budget. The two smallest counts are always measured: a line needs two points.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .. import datasets, registry
from ..bench import Experiment, Measurement, run_experiment
from ..bench.environment import cpu_model, existing_parent, filesystem_of
from ..errors import StorageError
from ..parallel import worker_count
from .candidates import Candidate
from .question import Question

COUNT_STEP = 5
COUNTS_MEASURED = 3
SMALLEST_COUNT = 16
_SECONDS_PER_MEASUREMENT = 0.15  # opening, verifying and recording, on top of the timed samples


@dataclass
class Evidence:
    """What is known of one candidate on this data and machine: its measurements and the runs they came from."""

    candidate: Candidate
    measurements: list[Measurement] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    reused_runs: list[str] = field(default_factory=list)
    refused: str | None = None
    """Why it could not be measured on this data (it cannot hold these images), or None."""

    def counts(self, operation: str) -> list[int]:
        return sorted({m.count for m in self.measurements if m.operation == operation})


def one_size(images: Any) -> bool:
    """Whether every image has one shape: a DataLoader batch is one tensor, so the loader needs it."""
    if isinstance(images, np.ndarray):
        return True
    if hasattr(images, "distinct_shapes"):
        return len(images.distinct_shapes()) <= 1
    return len({image.shape for image in images}) <= 1


def operations_for(question: Question, loader: bool = True) -> list[str]:
    """What is measured: the conversion and its bytes, a scan, random reads, and what the access needs.

    ``loader``: False for images of several sizes, which a DataLoader cannot batch: a shuffled
    epoch is then projected from the random reads (see :mod:`storage.advice.projection`).
    """
    operations = ["write_batch", "read_all", "read_random"]
    if question.access == "shuffled" and loader:
        operations.append("loader")
    if question.access == "append":
        operations.append("write_one")
    return operations


def sample_counts(question: Question) -> list[int]:
    """The counts measured, smallest first: 10,000 (or the full count, if smaller), a fifth and a 25th of it."""
    top = min(question.max_sample_count, question.count)
    counts = [top]
    while len(counts) < COUNTS_MEASURED and counts[-1] // COUNT_STEP >= SMALLEST_COUNT:
        counts.append(counts[-1] // COUNT_STEP)
    return sorted(set(counts))


def encoding_for(question: Question, photos: bool) -> str:
    return "source" if photos and question.keep_encoded else "raw"


def experiment_for(
    question: Question,
    backends: list[str],
    count: int,
    photos: bool,
    work_dir: str,
    repeats: int | None = None,
    loader: bool = True,
) -> Experiment:
    return Experiment(
        backends=backends,
        counts=[count],
        operations=operations_for(question, loader),
        repeats=repeats or (3 if question.time_budget_s >= 60 else 2),
        source=question.source,
        workers=[question.workers],
        batch_size=question.batch_size,
        encoding=encoding_for(question, photos),
        max_side=question.max_side,
        shorter_side=question.shorter_side,
        work_dir=work_dir,
        preview_ids=0,
    )


def _source_key(source: dict[str, Any]) -> tuple:
    root = source.get("root")
    return source.get("kind"), str(Path(root).resolve()) if root else None, source.get("images")


def _machine_key(environment: dict[str, Any]) -> tuple:
    return environment.get("hostname"), environment.get("cpu_count"), environment.get("ram_bytes")


def _matches(run: Any, question: Question, photos: bool, source: dict[str, Any], machine: tuple) -> bool:
    """Whether a stored run measured this data on this machine with the stores set up as these would be."""
    parameters = run.parameters
    return (
        run.status == "finished"
        and not run.imported
        and _source_key(run.source) == _source_key(source)
        and _machine_key(run.environment) == machine
        and parameters.get("encoding", "raw") == encoding_for(question, photos)
        and parameters.get("max_side") == question.max_side
        and parameters.get("shorter_side") == question.shorter_side
        and not parameters.get("distributed")
    )


def _usable(measurement: Measurement, run: Any, question: Question) -> bool:
    if measurement.cache != "warm" or not measurement.samples:
        return False
    if measurement.operation == "loader":
        return measurement.workers == question.workers and run.parameters.get("batch_size") == question.batch_size
    return True


def stored_evidence(db: Any, question: Question, candidates: list[Candidate], photos: bool, source: dict[str, Any],
                    machine: tuple, run_ids: list[str] | None = None) -> dict[Candidate, Evidence]:  # fmt: skip
    """What earlier runs (all that match, or only ``run_ids``) measured of each candidate."""
    evidence = {candidate: Evidence(candidate) for candidate in candidates}
    by_backend = {candidate.backend: candidate for candidate in candidates}
    runs = [db.get_run(run_id) for run_id in run_ids] if run_ids is not None else db.list_runs()
    for run in runs:
        if run is None or not _matches(run, question, photos, source, machine):
            continue
        for measurement in db.measurements(run.id):
            candidate = by_backend.get(measurement.backend)
            if candidate is None or not _usable(measurement, run, question):
                continue
            found = evidence[candidate]
            found.measurements.append(measurement)
            if run.id not in found.runs:
                found.runs.append(run.id)
    return evidence


def covered(evidence: Evidence, question: Question, loader: bool = True) -> bool:
    """Whether stored runs already measured every operation at two counts or more, up to a fifth of the top."""
    top = sample_counts(question)[-1]
    for operation in operations_for(question, loader):
        counts = evidence.counts(operation)
        if len(counts) < 2 or counts[-1] < max(top // COUNT_STEP, 1):
            return False
    return True


def _cost(measurements: list[Measurement]) -> float:
    """Seconds a format's measurements at one count took, warm-up repeats and bookkeeping included."""
    seconds = 0.0
    for m in measurements:
        samples = sum(m.samples)
        seconds += samples * (1 + 1 / max(len(m.samples), 1)) + _SECONDS_PER_MEASUREMENT
    return seconds


def _affordable(costs: dict[str, float], ratio: float, left: float) -> list[str]:
    """The backends whose next count, predicted from their last, fits in ``left`` seconds together (cheapest first)."""
    chosen, total = [], 0.0
    for backend, seconds in sorted(costs.items(), key=lambda item: item[1]):
        if total + seconds * ratio <= left:
            chosen.append(backend)
            total += seconds * ratio
    return chosen


def refusal(backend: str, images: Any, description: str) -> str | None:
    """Why ``backend`` cannot hold the source's images (channels, mixed sizes), or None."""
    try:
        registry.check_backend_takes(backend, images, description)
    except StorageError as error:
        return str(error)
    return None


def measure(question: Question, db: Any, todo: list[Candidate], photos: bool, work_dir: str,
            on_progress: Callable[[str], None] = lambda line: None, loader: bool = True) -> list[str]:  # fmt: skip
    """Measure ``todo`` at growing counts within the time budget; return the ids of the runs made."""
    started = time.monotonic()
    backends = [candidate.backend for candidate in todo]
    counts = sample_counts(question)
    run_ids: list[str] = []
    for index, count in enumerate(counts):
        if not backends:
            break
        on_progress(f"measuring {', '.join(backends)} at {count:,} images")
        summary = run_experiment(experiment_for(question, backends, count, photos, work_dir, loader=loader), db)
        run_ids.append(summary.run_id)
        if summary.status not in ("finished", "failed"):
            break
        if index + 1 == len(counts):
            break
        costs = {b: _cost([m for m in summary.measurements if m.backend == b]) for b in backends}
        ratio = counts[index + 1] / count
        left = question.time_budget_s - (time.monotonic() - started)
        failed = {m.backend for m in summary.measurements if m.error or not m.verified}
        costs = {b: c for b, c in costs.items() if b not in failed}
        backends = list(costs) if index == 0 else _affordable(costs, ratio, left)
        skipped = sorted(set(costs) - set(backends))
        if skipped:
            on_progress(f"{', '.join(skipped)}: {counts[index + 1]:,} images would not fit in the time left")
    return run_ids


def describe_source(question: Question) -> tuple[Any, dict[str, Any], bool]:
    """The source listed (not decoded), what a run records of it, and whether it is photos."""
    source = datasets.load_source(question.source)
    summary = {
        "spec": question.source,
        "kind": source.kind,
        "root": str(source.root),
        "description": source.description,
        "images": len(source.labels),
    }
    return source, summary, source.kind == "image-folder"


def this_machine(work_dir: str) -> tuple[tuple, dict[str, Any]]:
    """This machine as runs record it (without the library versions, which take seconds to list)."""
    folder = existing_parent(work_dir)
    environment = {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "usable_cores": worker_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "filesystem": filesystem_of(folder),
        "python": platform.python_version(),
    }
    return _machine_key(environment), environment
