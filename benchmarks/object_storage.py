"""Each format in object storage: upload, first and later epoch, random reads, requests and bytes, on a real S3 server.

    python benchmarks/object_storage.py                  # CIFAR-10 at 100,000 and the photo sample at 20,000
    python benchmarks/object_storage.py --cifar-count 2000 --photo-count 500 --backends webdataset,lance,lmdb

It runs the engine's object-storage operations (``python -m storage bench --location
s3://...``) against SeaweedFS started here on localhost (or the endpoint in
``AWS_ENDPOINT_URL``, with the AWS credential chain): per backend, the store is written
locally, uploaded (``upload``, manifest last), then read back as its users read it, by the
format's own library or downloaded whole where it needs a local file: a first epoch with
nothing cached and a later epoch of the same loader, at 0 and 2 DataLoader workers, and
1,000 random single reads from a freshly opened store. Every epoch and read is checked
against the source outside the timer. Requests and bytes are the server's own counters.

Localhost has no network latency, so each figure is also projected to ``--rtt-ms`` and
``--mbit`` (default 20 ms, 1 Gbit/s): local seconds + requests x RTT / requests in flight +
bytes x 8 / bandwidth (docs/object-storage.md). ``--check-model`` measures how far that
holds here: the first epoch (0 workers) and the random reads once directly and once
through a proxy that delays every request by the RTT, and prints the time the delay added
beside the time the model says it adds.

CIFAR-10 is the full set where downloaded, else the bundled sample cycled to the count; the
photos are ../shared/data/imagenet-sample cycled, their files' own bytes kept
(``--encoding source``), in the formats that take images of any size (not zarr). Medians of ``--repeats``; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample"
DEFAULT_BACKENDS = "webdataset,litdata,mds,lance,parquet,zarr,lmdb,hdf5,npy"
PHOTO_BACKENDS = ("webdataset", "litdata", "mds", "lance", "parquet", "lmdb", "hdf5", "npy")  # any image size

from storage.bench import Experiment, ResultsDB, run_experiment  # noqa: E402
from storage.bench.report import format_seconds, text_table  # noqa: E402


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"comma list (default: {DEFAULT_BACKENDS})")
    parser.add_argument("--cifar-count", type=int, default=100_000, help="CIFAR-10 images (default 100000; 0: none)")
    parser.add_argument("--photo-count", type=int, default=20_000, help="photos (default 20000; 0: none)")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts (default 0,2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="samples per measurement (median; default 1)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round trip of the projected network (20)")
    parser.add_argument("--mbit", type=float, default=1000.0, help="its bandwidth in Mbit/s (1000)")
    parser.add_argument("--location", default="s3://image-lab/bench", help="where the stores go")
    parser.add_argument("--dir", default=None, help="the local server's folder (default: a temporary one)")
    parser.add_argument("--check-model", action="store_true", help="also time the reads through a delaying proxy")
    parser.add_argument("--db", default=None, help="also record the runs in this results database")
    return parser.parse_args()


def start_server(folder: str | None):
    """SeaweedFS on free local ports, its address and a fresh identity in this process's environment."""
    from storage.s3.server import SeaweedServer, new_credentials

    server = SeaweedServer(folder or tempfile.mkdtemp(prefix="s3-bench-"), new_credentials()).start()
    os.environ.update(server.environment())
    print(f"SeaweedFS at {server.endpoint_url} (data in {server.folder})")
    return server


def experiment(args: argparse.Namespace, source: str, count: int, **changes) -> Experiment:
    values = dict(
        backends=args.backends.split(","),
        counts=[count],
        operations=["upload", "first_epoch", "later_epoch", "remote_random"],
        workers=[int(w) for w in args.workers.split(",")],
        batch_size=args.batch_size,
        repeats=args.repeats,
        source=source,
        preview_ids=0,
        location=args.location,
        network_rtt_ms=args.rtt_ms,
        network_mbit=args.mbit,
    )
    values.update(changes)
    return Experiment(**values)


def run(plan: Experiment, db_path: str | None):
    with ResultsDB(db_path or Path(tempfile.mkdtemp(prefix="s3-bench-db-")) / "results.sqlite") as db:
        summary = run_experiment(plan, db)
    failed = [m for m in summary.measurements if m.error]
    for m in failed:
        print(f"  {m.backend} {m.operation} w{m.workers}: FAILED: {m.error}", file=sys.stderr)
    return summary.measurements


def _rate(m) -> str:
    return "-" if m is None or not m.images_per_second or m.error else f"{m.images_per_second:,.0f}"


def _projected(m) -> str:
    return "-" if m is None or not m.projected_images_per_second else f"{m.projected_images_per_second:,.0f}"


def results_table(measurements, workers: list[int]) -> str:
    """One row per backend: upload s, epochs img/s per worker count, random reads, requests/MB and the projection."""
    found = {(m.backend, m.operation, m.workers): m for m in measurements}
    rows = []
    for backend in dict.fromkeys(m.backend for m in measurements):
        upload = found.get((backend, "upload", None))
        first = [found.get((backend, "first_epoch", w)) for w in workers]
        later = [found.get((backend, "later_epoch", w)) for w in workers]
        random_reads = found.get((backend, "remote_random", None))
        epoch = first[0]
        row = [backend, format_seconds(upload.seconds_median) if upload else "-"]
        row += [f"{_rate(a)} / {_rate(b)}" for a, b in zip(first, later, strict=True)]
        row += [_rate(random_reads)]
        row += ["-" if epoch is None or epoch.requests is None else f"{epoch.requests:,.0f}"]
        row += ["-" if epoch is None or epoch.transferred_bytes is None else f"{epoch.transferred_bytes / 1e6:,.1f}"]
        row += ["-" if later[0] is None or later[0].requests is None else f"{later[0].requests:,.0f}"]
        row += [" / ".join(_projected(m) for m in first), _projected(random_reads)]
        row += ["downloaded" if epoch and (epoch.read_method or "").startswith("downloaded") else "streamed"]
        rows.append(row)
    headers = ["backend", "upload", *[f"1st / 2nd epoch img/s, {w}w" for w in workers], "random img/s"]
    headers += ["req 1st epoch", "MB 1st epoch", "req 2nd epoch", "projected 1st epoch img/s", "projected random"]
    return text_table([*headers, "read as"], rows)


def check_model(args: argparse.Namespace, source: str, count: int, **changes) -> str:
    """The added seconds a per-request delay of one RTT causes here, beside the model's requests x RTT / in flight."""
    from storage.testing.s3_proxy import FaultyProxy

    operations = ["first_epoch", "remote_random"]
    direct = run(experiment(args, source, count, operations=operations, workers=[0], **changes), args.db)
    with FaultyProxy(os.environ["AWS_ENDPOINT_URL"], delay=args.rtt_ms / 1000) as proxy:
        delayed = run(
            experiment(args, source, count, operations=operations, workers=[0], endpoint_url=proxy.endpoint_url,
                       **changes),
            args.db,
        )  # fmt: skip
    rows = []
    for near, far in zip(direct, delayed, strict=True):
        if near.seconds_median is None or far.seconds_median is None or near.requests is None:
            continue
        added = far.seconds_median - near.seconds_median
        modelled = near.projection["latency_seconds"] if near.projection else float("nan")
        rows.append(
            [near.backend, near.operation, f"{near.requests:,.0f}", format_seconds(near.seconds_median),
             format_seconds(far.seconds_median), f"{added:+.2f} s", f"{modelled:.2f} s",
             f"{added / modelled:.2f}" if modelled else "-"]
        )  # fmt: skip
    headers = ["backend", "operation", "requests", "direct", f"+{args.rtt_ms:g} ms/request", "added", "model adds"]
    return text_table([*headers, "added / model"], rows)


def main() -> int:
    args = parse_arguments()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    server = None if os.environ.get("AWS_ENDPOINT_URL") else start_server(args.dir)
    workers = [int(w) for w in args.workers.split(",")]
    datasets = []
    if args.cifar_count:
        datasets.append(("CIFAR-10", "auto", args.cifar_count, {}))
    if args.photo_count:
        backends = [name for name in args.backends.split(",") if name in PHOTO_BACKENDS]
        datasets.append(("photos", str(SHARED_PHOTOS), args.photo_count, {"encoding": "source", "backends": backends}))
    try:
        for name, source, count, changes in datasets:
            print(f"\n{name}, {count:,} images (projected to {args.rtt_ms:g} ms RTT, {args.mbit:g} Mbit/s):")
            print(results_table(run(experiment(args, source, count, **changes), args.db), workers))
            if args.check_model:
                print(f"\nthe model against a {args.rtt_ms:g} ms delay per request ({name}, 0 workers):")
                print(check_model(args, source, count, **changes))
    finally:
        if server is not None:
            server.stop()
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
