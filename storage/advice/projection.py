"""Each candidate's measurements projected to the full count: bytes, files, convert, epoch, random reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..bench import Measurement
from .model import Points, Range, project_bytes, project_latency, project_linear
from .question import Question
from .sampling import Evidence

# The operation that times one pass over the data, by access pattern: a shuffled epoch goes
# through the DataLoader, everything else is timed as a sequential scan.
EPOCH_OPERATION = {"shuffled": "loader", "sequential": "read_all", "random": "read_all", "append": "read_all"}


@dataclass
class Projection:
    """One candidate at the full count, and the measurements it stands on."""

    evidence: Evidence
    count: int
    bytes: Range | None = None
    files: Range | None = None
    convert_s: Range | None = None
    epoch_s: Range | None = None
    scan_s: Range | None = None
    random_read_s: Range | None = None
    append_s: Range | None = None
    measured: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lossy: bool = False
    epoch_method: str = ""
    """How ``epoch_s`` was projected: from the ``loader``'s epochs, a ``read_all`` scan, or ``read_random``
    (one random read per image, for a shuffled epoch of images a DataLoader cannot batch)."""


# A format whose library has a loader of its own is also measured in that order (``order`` "own",
# see storage.bench.operations.loader): a weaker shuffle than the full per-sample one every
# format is measured in. The advice compares like with like, so it fits the common order only.
OWN_ORDER = "own"


def _points(measurements: list[Measurement], operation: str, per_read: bool = False) -> Points:
    pairs = []
    for m in measurements:
        if m.operation != operation or m.order == OWN_ORDER:
            continue
        scale = 1 / m.images if per_read and m.images else 1.0
        pairs.append((m.count, [s * scale for s in m.samples]))
    return Points.gather(pairs)


def _disk_points(measurements: list[Measurement], field_name: str) -> Points:
    stores = {}
    for m in measurements:  # one store per count and run: the write's own figure
        value = getattr(m, field_name)
        if m.operation == "write_batch" and value is not None:
            stores[(m.run_id, m.count)] = value
    return Points.gather([(count, [value]) for (_, count), value in stores.items()])


def _measured_table(measurements: list[Measurement], operations: list[str]) -> dict[str, Any]:
    """What was measured, per operation: counts and median seconds (bytes for the write's store)."""
    table: dict[str, Any] = {}
    for operation in operations:
        points = _points(measurements, operation)
        if points.counts:
            table[operation] = {
                "counts": list(points.counts),
                "median_s": points.medians(),
                "min_s": points.lowest(),
                "max_s": points.highest(),
            }
    disk = _disk_points(measurements, "allocated_bytes")
    if disk.counts:
        table["bytes"] = {"counts": list(disk.counts), "allocated_bytes": [int(v) for v in disk.medians()]}
    return table


def project(evidence: Evidence, question: Question, operations: list[str]) -> Projection:
    """``evidence`` fitted and projected to ``question.count``."""
    ms = evidence.measurements
    count = question.count
    projection = Projection(evidence, count, measured=_measured_table(ms, operations))
    projection.failures = sorted(
        {f"{m.operation}: {m.error or 'read back wrong'}" for m in ms if m.error or not m.verified}
    )
    projection.lossy = any(m.psnr is not None for m in ms)
    projection.bytes = project_bytes(_disk_points(ms, "allocated_bytes"), count)
    projection.files = project_bytes(_disk_points(ms, "files"), count)
    projection.convert_s = project_linear(_points(ms, "write_batch"), count)
    projection.scan_s = project_linear(_points(ms, "read_all"), count)
    projection.random_read_s = project_latency(_points(ms, "read_random", per_read=True), count)
    projection.epoch_method = EPOCH_OPERATION[question.access]
    projection.epoch_s = project_linear(_points(ms, projection.epoch_method), count)
    if projection.epoch_s is None and question.access == "shuffled" and projection.random_read_s is not None:
        projection.epoch_method = "read_random"
        projection.epoch_s = projection.random_read_s.scaled(count)
    if "write_one" in operations:
        projection.append_s = project_linear(_points(ms, "write_one"), count)
    return projection
