"""Does the advice check out? Project the full count from a sample, then measure the full count.

For one source, the advice's own sampling measures the candidates at counts up to
``--max-sample`` (10,000 by default: 400, 2,000 and 10,000 images) and projects each
figure to ``--count`` (100,000); then one ordinary run measures every candidate at
``--count`` itself, in the same process, right after. Printed: each format's projected
figure with its range beside the measured one and the error (times should be within 25 %,
bytes within 5 %), then, for every scenario (access pattern, lossless, disk budget, other
tools), the format recommended from the projections beside the best measured at the full
count under the same rules.

    python benchmarks/advice_accuracy.py --source sample --count 100000
    python benchmarks/advice_accuracy.py --source data/imagenet-sample --count 5000 --max-sample 500 \\
        --backends lmdb,hdf5,npy,webdataset,parquet

Quote the load average printed at the start and the end: on a busy 2-core machine the
timings move by more than the tolerance between two runs of the same store.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.advice import Evidence, Machine, Question, advise, advise_from  # noqa: E402
from storage.advice.question import format_bytes  # noqa: E402
from storage.advice.recommend import duration  # noqa: E402
from storage.advice.sampling import describe_source, experiment_for, one_size  # noqa: E402
from storage.bench import ResultsDB, run_experiment  # noqa: E402

FIGURES = (  # (label, projection attribute, tolerance)
    ("bytes", "bytes", 0.05),
    ("convert", "convert_s", 0.25),
    ("epoch", "epoch_s", 0.25),
    ("scan", "scan_s", 0.25),
    ("random read", "random_read_s", 0.25),
)


def scenarios(count: int, photos: bool) -> list[tuple[str, dict]]:
    """The questions asked of the same measurements: each access pattern and each constraint."""
    pixels = (110_000 if photos else 3_072) * count  # roughly what a store takes: a budget some formats miss
    return [
        ("shuffled, 2 workers", {"access": "shuffled"}),
        ("shuffled, lossless", {"access": "shuffled", "lossless": True}),
        ("shuffled, disk budget", {"access": "shuffled", "disk_budget_bytes": int(pixels * 1.04)}),
        ("sequential scans", {"access": "sequential"}),
        ("sequential, other tools read it", {"access": "sequential", "readable_by_others": True}),
        ("random lookups", {"access": "random"}),
        ("random lookups, lossless", {"access": "random", "lossless": True}),
    ]


def _measured_at(found: Evidence, count: int) -> Evidence:
    return Evidence(found.candidate, [m for m in found.measurements if m.count == count], found.runs)


def _error(projected, measured) -> str:
    if projected is None or measured is None or measured.value == 0:
        return "–"
    error = projected.value / measured.value - 1
    return f"{error * 100:+.0f} %"


def _shown(value, label: str) -> str:
    if value is None:
        return "–"
    words = format_bytes if label == "bytes" else duration
    return f"{words(value.value)} [{words(value.low)}–{words(value.high)}]"


def compare(sampled: dict, measured: dict, question: Question, machine: Machine) -> list[str]:
    """One line per format and figure: projected (range), measured at the full count, error, within tolerance."""
    projected_rows = {row.label: row.projection for row in advise_from(question, sampled, machine).rows}
    measured_rows = {row.label: row.projection for row in advise_from(question, measured, machine).rows}
    lines = [f"{'format':<34}{'figure':<16}{'projected [range]':<34}{'measured':<12}{'error':>8}  in range  within"]
    for label, projection in projected_rows.items():
        truth = measured_rows.get(label)
        for name, attribute, tolerance in FIGURES:
            p, m = getattr(projection, attribute), getattr(truth, attribute) if truth else None
            if p is None or m is None:
                continue
            inside = "yes" if p.low <= m.value <= p.high else "no"
            within = "yes" if abs(p.value / m.value - 1) <= tolerance else "NO"
            value = format_bytes(m.value) if attribute == "bytes" else duration(m.value)
            lines.append(
                f"{label:<34}{name:<16}{_shown(p, attribute):<34}{value:<12}{_error(p, m):>8}  {inside:<8}  {within}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="sample")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--max-sample", type=int, default=10_000)
    parser.add_argument("--backends", default="", help="formats to weigh (default: the advice's usual ones)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the full-count run")
    parser.add_argument("--work-dir", default="data/runs")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="lance is not fork-safe")  # as the command line does
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    question = Question(
        source=args.source, count=args.count, access="shuffled", workers=args.workers, time_budget_s=10**6,
        max_sample_count=args.max_sample, backends=tuple(b for b in args.backends.split(",") if b),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, ResultsDB(Path(folder) / "accuracy.sqlite") as db:
        started = time.perf_counter()
        sample = advise(question, db, args.work_dir, on_progress=lambda line: print("  " + line, flush=True))
        sampled = {row.projection.evidence.candidate: row.projection.evidence for row in sample.rows}
        print(f"sampled in {time.perf_counter() - started:.0f} s; measuring {args.count:,} images", flush=True)
        backends = [c.backend for c, found in sampled.items() if found.refused is None]
        photos = "encoding" in str([c.options for c in sampled])
        started = time.perf_counter()
        loader = one_size(describe_source(question)[0].images)  # a DataLoader batches images of one size only
        experiment = experiment_for(question, backends, args.count, photos, args.work_dir, args.repeats, loader)
        full = run_experiment(experiment, db)
        print(f"measured {args.count:,} in {time.perf_counter() - started:.0f} s (run {full.run_id}, {full.status})")
        measured = {c: Evidence(c) for c in sampled}
        for candidate in measured:
            measured[candidate].measurements = [m for m in full.measurements if m.backend == candidate.backend]
            measured[candidate].runs = [full.run_id]
        machine = Machine.here(args.work_dir)
        print()
        print("\n".join(compare(sampled, measured, question, machine)))
        print()
        agree = exact = 0
        chosen = scenarios(args.count, photos)
        print(f"{'scenario':<36}{'recommended from projections':<36}{'measured best at full count':<36}same")
        for name, change in chosen:
            asked = replace(question, **change)
            advice = advise_from(asked, sampled, machine)
            projected, best = advice.recommended, advise_from(asked, measured, machine).recommended
            named = [row.label for row in advice.ranked[:1] + advice.tied]
            same = (best.label in named) if best else projected is None
            exact += bool(best and named[:1] == [best.label])
            agree += same
            shown = " = ".join(named) if named else "none"
            print(f"{name:<36}{shown:<36}{best.label if best else 'none':<36}{'yes' if same else 'NO'}")
        print(
            f"\nthe recommendation (with the formats it ties with) held the measured best in {agree} of "
            f"{len(chosen)} scenarios; the one named first was the measured best in {exact}"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
