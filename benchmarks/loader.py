"""What a PyTorch training loop gets from each format, beside the loader's ceilings, as training runs it.

    python benchmarks/loader.py                                   # every backend, 100,000 CIFAR images, 0 and 2 workers
    python benchmarks/loader.py --backends npy,hdf5,lmdb,litdata,mds,lance --counts 100000 --workers 0,2
    python benchmarks/loader.py --source ../shared/data/imagenet-sample --keep-encoded --shorter-side 256 \
        --transform train --decoder simplejpeg --workers 2 --counts 100000 --backends lmdb,hdf5,npy,litdata,mds,lance

It runs the engine's ``loader`` operation (``python -m storage bench --ops loader``): for
each backend a store of the source (CIFAR-10, the bundled sample cycled to the count, or a
folder of photos cycled) is written, then one DataLoader per format with persistent workers
loads several shuffled epochs: the first (worker start-up included) is reported apart, the
later ones are the samples. Every format is read in the same full per-sample shuffle; a peer
whose library has its own dataset and sampler is also measured that way ("own order"). All
the loaders of a worker count take turns epoch by epoch with the ceilings: the same
DataLoader and transform over the pixels in memory, and for photos over the encoded files
themselves (the decode ceiling, the reference of stores that keep the photos' bytes). "x
ceiling" is a format's median rate over its ceiling's at the same worker count, same run.

``--compare-collate`` instead times the in-memory loader twice per worker count, with the
batch handed over as read (``storage.torch.collate``) and with torch's ``default_collate``
(which restacks the samples), alternating, and prints the ratio.

The targets are checked at the end, on the steady-state epochs of the largest count: for
photos, the best store that keeps the photos' bytes reaches 0.9x the decode ceiling and at
least the best peer; for pixels (CIFAR), the best lossless format at least matches the best
peer at every worker count. No format may come out above its ceiling by more than noise
(10% here): such a figure is named (FFCV's ``Loader`` is no DataLoader: its workers are
threads of the training process, so with workers it is not bounded by the DataLoader ceiling,
whose every batch crosses from a worker process; it is named with that note).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storage  # noqa: E402
from storage.bench import Experiment, MeasurementRecorded, Progress, ResultsDB, run_experiment  # noqa: E402
from storage.bench.environment import describe  # noqa: E402
from storage.bench.experiment import CEILINGS  # noqa: E402
from storage.bench.report import format_seconds, loader_name, text_table  # noqa: E402

PEERS = {"litdata", "mds", "lance", "hf-datasets", "ffcv"}
DECODE_TARGET = 0.90
ABOVE_CEILING_NOISE = 1.10
OWN_LOADER_NOTE = (
    "; its own loader, threads in the training process: no batch crosses between processes, so the "
    "DataLoader's ceiling with worker processes does not bound it"
)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(storage.backends()), help="comma list (default: all)")
    parser.add_argument("--counts", default="100000", help="comma list of image counts (default 100000)")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts (default 0,2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loader after the first (default 3)")
    parser.add_argument("--cold", action="store_true", help="also measure with the page cache evicted")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--transform", default="none", help="none, train or val")
    parser.add_argument("--decoder", default="pillow", help="pillow, simplejpeg or torchvision")
    parser.add_argument("--keep-encoded", action="store_true", help="stores keep the photos' bytes (encoding source)")
    parser.add_argument("--shorter-side", type=int, default=None, help="resize photos at write time")
    parser.add_argument(
        "--raw", default="", help="comma list of backends that store decoded pixels even with --keep-encoded"
    )
    parser.add_argument(
        "--resized-copy",
        type=int,
        default=None,
        metavar="SIDE",
        help="resize the source folder's photos once (shorter side SIDE, as --shorter-side stores them, byte for "
        "byte) into data/<folder>-<SIDE>/ and run on that copy: a cycled source then costs no resizing per image",
    )
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
        if m.ceiling == "decode":
            share += " (decode)"
        check = "ok" if m.verified and not m.error else f"FAILED: {m.error}"
        if m.verified and m.psnr is not None:
            check = f"ok ({m.psnr:.1f} dB)"
        parts = "/".join(
            format_seconds(v)
            for v in (m.read_seconds_per_batch, m.decode_seconds_per_batch, m.transform_seconds_per_batch)
        )
        rows.append(
            [
                loader_name(m),
                f"{m.count:,}",
                str(m.workers),
                m.cache,
                rate_spread(m),
                share,
                format_seconds(m.first_epoch_seconds),
                parts,
                "-" if not m.images_per_second_per_worker else f"{m.images_per_second_per_worker:,.0f}",
                "-" if m.bytes_per_image is None else f"{m.bytes_per_image:,.0f}",
                "-" if m.load_average is None else f"{m.load_average:.1f}",
                check,
            ]
        )
    headers = ["backend", "images", "workers", "cache", "images/s median [min-max]", "x ceiling", "first epoch"]
    headers += ["read/decode/aug per batch", "img/s per worker", "B/image", "load", "check"]
    return text_table(headers, rows)


def check_targets(measurements) -> list[str]:
    """The targets, on the warm figures of the largest count, per worker count."""
    if not measurements:
        return ["nothing was measured"]
    largest = max(m.count for m in measurements)
    lines = []
    chosen = [m for m in measurements if m.count == largest and m.cache == "warm" and m.images_per_second]
    by_workers = defaultdict(list)
    for m in chosen:
        by_workers[m.workers].append(m)
    for workers, group in sorted(by_workers.items()):
        lines.extend(_targets_at(workers, group))
    above = [
        f"{loader_name(m)} ({m.workers} workers, {m.fraction_of_ceiling:.0%} of its {m.ceiling} ceiling"
        + (OWN_LOADER_NOTE if _own_loader(m.backend) else "")
        + ")"
        for m in chosen
        if m.fraction_of_ceiling and m.fraction_of_ceiling > ABOVE_CEILING_NOISE
    ]
    lines.append(f"above its ceiling by more than {ABOVE_CEILING_NOISE - 1:.0%}: " + (", ".join(above) or "none"))
    return lines


def _own_loader(backend: str) -> bool:
    """Whether the format loads with a loader of its own, not a DataLoader (FFCV: threads, no worker processes)."""
    return backend not in CEILINGS and getattr(storage.store_class(backend), "torch_loader", None) is not None


def _targets_at(workers: int, group: list) -> list[str]:
    formats = [m for m in group if m.backend not in CEILINGS]
    peers = [m for m in formats if m.backend in PEERS]
    ours = [m for m in formats if m.backend not in PEERS]
    best_peer = max(peers, key=lambda m: m.images_per_second, default=None)
    kept = [m for m in ours if m.ceiling == "decode"]
    lines = []
    if kept:
        best = max(kept, key=lambda m: m.images_per_second)
        verdict = "met" if best.fraction_of_ceiling >= DECODE_TARGET else "NOT met"
        lines.append(
            f"{workers} workers: best kept-bytes store {best.backend}: {best.images_per_second:,.0f} images/s, "
            f"{best.fraction_of_ceiling:.0%} of the decode ceiling (target {DECODE_TARGET:.0%}): {verdict}"
        )
    else:
        lossless = [m for m in ours if storage.backend_info(m.backend).lossless]
        best = max(lossless, key=lambda m: m.images_per_second, default=None)
    if best is not None and best_peer is not None:
        ratio = best.images_per_second / best_peer.images_per_second
        verdict = "met" if ratio >= 1 else "NOT met"
        lines.append(
            f"{workers} workers: {best.backend} {best.images_per_second:,.0f} against the best peer, "
            f"{loader_name(best_peer)}, {best_peer.images_per_second:,.0f}: {ratio:.2f}x (target 1x): {verdict}"
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


def resized_copy(source: str, side: int) -> str:
    """The photos of ``source`` resized to a ``side``-px shorter side, as a kept-bytes store keeps them
    under ``--shorter-side`` (resized photos encoded again, JPEG at quality 90), written once."""
    from storage.datasets import load_source
    from storage.encodings import FORMAT_EXTENSIONS, Encoding

    root = Path(source).resolve()
    target = Path(__file__).resolve().parents[1] / "data" / f"{root.name}-{side}"
    if target.is_dir():
        return str(target)
    listing = load_source(str(root)).images
    encoded = listing.resized(None, side).encoded_chunk(0, len(listing), Encoding("source"))
    scratch = target.with_name(target.name + ".partial")
    for index, item in enumerate(encoded):
        original = Path(listing.file_of(index))
        path = scratch / original.parent.name / f"{original.stem}.{FORMAT_EXTENSIONS.get(item.format, 'bin')}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)
    scratch.rename(target)
    return str(target)


def main() -> int:
    args = parse_arguments()
    if args.compare_collate:
        return compare_collate(args)
    if args.resized_copy:
        args.source = resized_copy(args.source, args.resized_copy)
        print(f"source: {args.source} (resized once, shorter side {args.resized_copy} px)")
    experiment = Experiment(
        backends=[name.strip() for name in args.backends.split(",") if name.strip()],
        counts=[int(count) for count in args.counts.split(",")],
        operations=["loader"],
        caches=["warm", "cold"] if args.cold else ["warm"],
        repeats=args.repeats,
        source=args.source,
        workers=[int(workers) for workers in args.workers.split(",")],
        batch_size=args.batch_size,
        transform=args.transform,
        decoder=args.decoder,
        encoding="source" if args.keep_encoded else "raw",
        shorter_side=args.shorter_side,
        backend_options={name.strip(): {"encoding": "raw"} for name in args.raw.split(",") if name.strip()},
        preview_ids=0,
        work_dir=str(Path(__file__).resolve().parents[1] / "data" / "runs"),
    )

    def on_event(event) -> None:
        if isinstance(event, Progress) and event.message != on_event.last:
            on_event.last = event.message
            print(f"  ... {event.message}", flush=True)
        if isinstance(event, MeasurementRecorded):
            m = event.measurement
            print(f"  {loader_name(m):<24} {m.workers} workers {m.cache}: {rate_spread(m)} images/s", flush=True)

    on_event.last = ""
    db = ResultsDB(args.db) if args.db else None
    try:
        summary = run_experiment(experiment, db, on_event)
    finally:
        if db is not None:
            db.close()
    print(f"\n{describe(summary.environment)}; {summary.source_description}")
    print(
        f"batch {args.batch_size}, transform {args.transform}, decoder {args.decoder}; median of {args.repeats} "
        "epochs after the first, per figure; x ceiling = rate / its ceiling's rate at the same worker count, "
        "same run (decode: the encoded files themselves)\n"
    )
    print(table(summary.measurements))
    print()
    for line in check_targets(summary.measurements):
        print(line)
    print(f"\nrun {summary.run_id}: {summary.status} in {summary.wall_seconds:.0f} s")
    return 0 if summary.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
