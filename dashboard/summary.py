"""What a run found, said in a few lines above its charts, and which of its figures to trust less.

:func:`findings` answers the questions a reader comes with, at the run's largest count:
which format writes fastest, reads everything fastest, answers a random read soonest (the
latency of one image) and takes the least disk, each with its figure and the runner-up's.
:func:`cautions` says which measurements to read with care: those whose repeats disagree
(a wide spread between the fastest and the slowest) and those that other processes
disturbed (see :mod:`storage.bench.machine_load`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from storage.bench import Measurement
from storage.bench.machine_load import was_disturbed
from storage.bench.report import format_megabytes, format_rate, format_seconds

from .charts import format_label, spread
from .state import OPERATION_LABELS

WIDE_SPREAD = 0.25  # (slowest - fastest) / median over the repeats: above this the median is shaky
SPREAD_MIN_SECONDS = 0.01  # calls shorter than this vary by nature: their spread is not warned about


@dataclass(frozen=True)
class Finding:
    """One question answered: ``Fastest to write: HDF5, 26,184 images/s (LMDB 13,295 images/s)``."""

    question: str
    winner: str
    figure: str
    runner_up: str | None = None
    runner_up_figure: str | None = None

    def sentence(self) -> str:
        second = f" (runner-up {self.runner_up}, {self.runner_up_figure})" if self.runner_up else ""
        return f"{self.question}: {self.winner}, {self.figure}{second}"


def wide_spread(measurement: Measurement) -> bool:
    """Whether the repeats disagree enough that the median should be read with care."""
    value = spread(measurement)
    long_enough = (measurement.seconds_median or 0.0) >= SPREAD_MIN_SECONDS
    return value is not None and value > WIDE_SPREAD and long_enough


def _usable(measurements: Sequence[Measurement]) -> list[Measurement]:
    return [m for m in measurements if not m.error and m.seconds_median and m.cache == "warm"]


def _best(
    question: str,
    rows: Sequence[Measurement],
    key: Callable[[Measurement], float | None],
    figure: Callable[[Measurement], str],
    lowest: bool,
) -> Finding | None:
    """The best and second-best formats of ``rows`` by ``key`` (one row per format)."""
    ranked = sorted((m for m in rows if key(m) is not None), key=lambda m: key(m) * (1 if lowest else -1))
    ranked = list({m.backend: m for m in reversed(ranked)}.values())[::-1]  # each format once, its best row
    if not ranked:
        return None
    first = ranked[0]
    second = ranked[1] if len(ranked) > 1 else None
    return Finding(
        question,
        format_label(first.backend),
        figure(first),
        format_label(second.backend) if second else None,
        figure(second) if second else None,
    )


def findings(measurements: Sequence[Measurement]) -> tuple[int | None, list[Finding]]:
    """The run's largest count and what it found there (see the module's docstring)."""
    usable = _usable(measurements)
    if not usable:
        return None, []
    count = max(m.count for m in usable)
    at = [m for m in usable if m.count == count]

    def of(operation: str) -> list[Measurement]:
        return [m for m in at if m.operation == operation]

    writes = of("write_batch") or of("write_one")
    rate = lambda m: m.images_per_second  # noqa: E731
    answers = [
        _best("Fastest to write", writes, rate, lambda m: f"{format_rate(m.images_per_second)} images/s", False),
        _best(
            "Fastest to read all", of("read_all"), rate, lambda m: f"{format_rate(m.images_per_second)} images/s", False
        ),
        _best(
            "Fastest random read",
            of("read_random") or of("read_one"),
            lambda m: m.seconds_per_image,
            lambda m: f"{format_seconds(m.seconds_per_image)} per image",
            True,
        ),
        _best(
            "Smallest on disk",
            [m for m in at if m.allocated_bytes],
            lambda m: m.allocated_bytes,
            lambda m: f"{format_megabytes(m.allocated_bytes)} MB",
            True,
        ),
    ]
    return count, [answer for answer in answers if answer is not None]


def summary_line(measurements: Sequence[Measurement]) -> str | None:
    """The findings as one line of text (for the Share picture); None when there is nothing to say."""
    count, found = findings(measurements)
    if not found:
        return None
    return f"At {count:,} image{'s' if count != 1 else ''}: " + "; ".join(f.sentence() for f in found)


def _name(measurement: Measurement) -> str:
    operation = OPERATION_LABELS.get(measurement.operation, measurement.operation)
    return f"{format_label(measurement.backend)} {operation} at {measurement.count:,}"


def cautions(measurements: Sequence[Measurement]) -> list[str]:
    """Lines that say which figures to read with care: disturbed by other processes, or repeats that disagree."""
    lines = []
    disturbed = [m for m in measurements if was_disturbed(m.machine_load)]
    if disturbed:
        loads = [
            m.machine_load.get("load_average") for m in disturbed if m.machine_load.get("load_average") is not None
        ]
        load = f" (load average up to {max(loads):.1f})" if loads else ""
        lines.append(
            f"{len(disturbed)} of {len(measurements)} measurements were disturbed: other processes took a "
            f"share of the CPU while they were timed{load}, so they read slower than the formats are: "
            + ", ".join(_name(m) for m in disturbed[:6])
            + (", …" if len(disturbed) > 6 else "")
        )
    shaky = [m for m in measurements if wide_spread(m)]
    if shaky:
        lines.append(
            f"{len(shaky)} measurements have repeats more than {WIDE_SPREAD:.0%} apart (slowest against fastest): "
            + ", ".join(f"{_name(m)} ±{spread(m) / 2:.0%}" for m in shaky[:6])
            + (", …" if len(shaky) > 6 else "")
            + ". More repeats, or a quieter machine, give steadier medians."
        )
    above = [m for m in measurements if m.operation == "loader" and (m.fraction_of_ceiling or 0) > 1]
    if above:
        lines.append(
            f"{len(above)} training-loader measurement{'s' if len(above) != 1 else ''} came out above the "
            "in-memory ceiling: "
            + "; ".join(f"{_name(m)}{_workers(m)}, {m.fraction_of_ceiling:.2f}x the ceiling" for m in above[:6])
            + ("; …" if len(above) > 6 else "")
            + ". No store is read faster than images already in memory, so this is noise between repeats: with "
            "workers, the store and the ceiling are both held back by the DataLoader handing batches between "
            "processes, and whichever comes out ahead differs from run to run. More repeats give steadier medians."
        )
    return lines


def _workers(measurement: Measurement) -> str:
    workers = measurement.workers
    return "" if workers is None else f" with {workers} worker{'s' if workers != 1 else ''}"


FIGURE_COLUMNS = ("Format", "Write (images/s)", "Read all (images/s)", "Random read (per image)", "Disk (MB)")


def figures_table(measurements: Sequence[Measurement]) -> tuple[int | None, list[tuple[str, ...]]]:
    """The run's largest count and one row per format there (:data:`FIGURE_COLUMNS`; "–" where not measured).

    The numbers behind :func:`findings`, for the Share picture, where a reader cannot hover a chart.
    """
    usable = _usable(measurements)
    if not usable:
        return None, []
    count = max(m.count for m in usable)
    rows = []
    for backend in dict.fromkeys(m.backend for m in usable if m.count == count):
        at = {m.operation: m for m in usable if m.count == count and m.backend == backend}
        write = at.get("write_batch") or at.get("write_one")
        random = at.get("read_random") or at.get("read_one")
        sized = next((m for m in at.values() if m.allocated_bytes), None)
        if not (write or random or sized or "read_all" in at):
            continue  # the loader's in-memory reference: a chart of its own, no store to time
        rows.append(
            (
                format_label(backend),
                f"{format_rate(write.images_per_second)}" if write else "–",
                f"{format_rate(at['read_all'].images_per_second)}" if "read_all" in at else "–",
                format_seconds(random.seconds_per_image) if random else "–",
                format_megabytes(sized.allocated_bytes) if sized else "–",
            )
        )
    return count, rows
