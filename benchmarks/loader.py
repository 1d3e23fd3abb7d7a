"""What a PyTorch training loop gets from each format, beside the loader's own in-memory ceiling.

    python benchmarks/loader.py                                   # every backend, 100,000 images, 0 and 2 workers
    python benchmarks/loader.py --backends lmdb,hdf5 --counts 10000 --repeats 1 --workers 0,2,4

It runs the engine's ``loader`` operation (``python -m storage bench --ops loader``): for
each backend, a store of the CIFAR-10 images (the bundled sample cycled to the count, or
the full set where downloaded) is written, then each repeat is one shuffled epoch through
``DataLoader(dataset, batch_size, shuffle=True, num_workers=w)`` (the batched
``__getitems__`` path of ``storage.torch``), timed from creating the iterator (worker
start-up included) to the last batch; every image delivered is checked against the source
outside the timer. The ceiling is the same DataLoader over the images already in memory,
measured in the same run at each worker count: "x ceiling" is a format's median rate over
the ceiling's median rate at the same worker count. Warm page cache unless ``--cold``.

``--compare-collate`` instead times the in-memory loader twice per worker count, with the
batch handed over as read (``storage.torch.collate``) and with torch's ``default_collate``
(which restacks the samples), alternating, and prints the ratio.

The targets of issue 9 (2 workers, batch 256, warm, 100,000 images) are checked at the end:
the best format reaches 80% of the ceiling, lmdb and hdf5 60%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storage  # noqa: E402
from storage.bench import Experiment, MeasurementRecorded, ResultsDB, run_experiment  # noqa: E402
from storage.bench.environment import describe  # noqa: E402
from storage.bench.experiment import CEILING_BACKEND  # noqa: E402
from storage.bench.report import format_seconds, text_table  # noqa: E402

TARGET_WORKERS = 2
BEST_TARGET = 0.80
NAMED_TARGETS = {"lmdb": 0.60, "hdf5": 0.60}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(storage.backends()), help="comma list (default: all)")
    parser.add_argument("--counts", default="100000", help="comma list of image counts (default 100000)")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts (default 0,2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per measurement (median; default 3)")
    parser.add_argument("--cold", action="store_true", help="also measure with the page cache evicted")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--db", default=None, help="also record the run in this results database")
    parser.add_argument(
        "--compare-collate", action="store_true", help="time storage.torch.collate against default_collate"
    )
    return parser.parse_args()


def rate_spread(measurement) -> str:
    if not measurement.samples:
        return "-"
    rates = [measurement.images / seconds for seconds in measurement.samples]
    return f"{statistics.median(rates):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]"


def table(measurements) -> str:
    rows = []
    for m in measurements:
        share = "-" if m.fraction_of_ceiling is None else f"{m.fraction_of_ceiling:.0%}"
        check = "ok" if m.verified and not m.error else f"FAILED: {m.error}"
        if m.verified and m.psnr is not None:
            check = f"ok ({m.psnr:.1f} dB)"
        rows.append(
            [
                m.backend,
                f"{m.count:,}",
                str(m.workers),
                m.cache,
                rate_spread(m),
                share,
                format_seconds(m.first_batch_seconds),
                format_seconds(m.batch_p50_seconds),
                format_seconds(m.batch_p99_seconds),
                check,
            ]
        )
    headers = ["backend", "images", "workers", "cache", "images/s median [min-max]", "x ceiling"]
    return text_table(headers + ["first batch", "batch p50", "batch p99", "check"], rows)


def check_targets(measurements) -> list[str]:
    """The issue's targets, on the warm 2-worker figures of the largest count."""
    largest = max(m.count for m in measurements)
    at_target = {
        m.backend: m.fraction_of_ceiling
        for m in measurements
        if m.count == largest and m.cache == "warm" and m.workers == TARGET_WORKERS and m.fraction_of_ceiling
    }
    lines = []
    if at_target:
        best = max(at_target, key=at_target.get)
        verdict = "met" if at_target[best] >= BEST_TARGET else "NOT met"
        lines.append(f"best format {best}: {at_target[best]:.0%} of the ceiling (target {BEST_TARGET:.0%}): {verdict}")
    for name, target in NAMED_TARGETS.items():
        if name in at_target:
            verdict = "met" if at_target[name] >= target else "NOT met"
            lines.append(f"{name}: {at_target[name]:.0%} of the ceiling (target {target:.0%}): {verdict}")
    by_backend = defaultdict(dict)
    for m in measurements:
        if m.count == largest and m.cache == "warm" and m.images_per_second:
            by_backend[m.backend][m.workers] = m.images_per_second
    slower = [
        name
        for name, rates in by_backend.items()
        if 0 in rates and TARGET_WORKERS in rates and rates[TARGET_WORKERS] < rates[0]
    ]
    lines.append(
        f"slower with {TARGET_WORKERS} workers than with 0: {', '.join(slower) if slower else 'none'}"
        + (" (see docs/formats.md, 'Training loader')" if slower else "")
    )
    return lines


def compare_collate(args: argparse.Namespace) -> int:
    """The in-memory loader with the batch handed over against torch's default_collate."""
    import time

    import torch

    from storage.datasets import load_source, take
    from storage.torch import MemoryDataset, make_loader

    source = load_source(args.source)
    count = int(args.counts.split(",")[-1])
    images, labels = take(source.images, source.labels, count)
    dataset = MemoryDataset(images, labels)
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        times: dict[str, list[float]] = {"collate": [], "default_collate": []}
        for repeat in range(args.repeats):
            for name in times:
                extra = {} if name == "collate" else {"collate_fn": torch.utils.data.default_collate}
                loader = make_loader(dataset, args.batch_size, workers, seed=repeat, **extra)
                started = time.perf_counter()
                delivered = sum(len(batch_labels) for _, batch_labels in loader)
                times[name].append(time.perf_counter() - started)
                assert delivered == count
        fast, slow = (count / statistics.median(times[name]) for name in ("collate", "default_collate"))
        rows.append([str(workers), f"{fast:,.0f}", f"{slow:,.0f}", f"{fast / slow:.1f}"])
    print(f"{source.description}; {count:,} images, batch {args.batch_size}, median of {args.repeats} epochs\n")
    print(text_table(["workers", "collate images/s", "default_collate images/s", "ratio"], rows))
    return 0


def main() -> int:
    args = parse_arguments()
    if args.compare_collate:
        return compare_collate(args)
    experiment = Experiment(
        backends=[name.strip() for name in args.backends.split(",") if name.strip()],
        counts=[int(count) for count in args.counts.split(",")],
        operations=["loader"],
        caches=["warm", "cold"] if args.cold else ["warm"],
        repeats=args.repeats,
        source=args.source,
        workers=[int(workers) for workers in args.workers.split(",")],
        batch_size=args.batch_size,
        preview_ids=0,
        work_dir=str(Path(__file__).resolve().parents[1] / "data" / "runs"),
    )

    def on_event(event) -> None:
        if isinstance(event, MeasurementRecorded):
            m = event.measurement
            print(f"  {m.backend:<12} {m.workers} workers {m.cache}: {rate_spread(m)} images/s", flush=True)

    db = ResultsDB(args.db) if args.db else None
    try:
        summary = run_experiment(experiment, db, on_event)
    finally:
        if db is not None:
            db.close()
    print(f"\n{describe(summary.environment)}; {summary.source_description}")
    print(
        f"batch {args.batch_size}, median of {args.repeats} shuffled epochs per figure; "
        f"x ceiling = rate / the {CEILING_BACKEND} DataLoader's rate at the same worker count, same run\n"
    )
    print(table(summary.measurements))
    print()
    for line in check_targets(summary.measurements):
        print(line)
    print(f"\nrun {summary.run_id}: {summary.status} in {summary.wall_seconds:.0f} s")
    return 0 if summary.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
