"""The command line's sharded and distributed commands: ``convert --shards`` and ``bench --distributed``.

Kept apart from :mod:`storage.cli.convert` and :mod:`storage.cli.bench` so that Dask is imported only
when one of them runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from ..distributed import ConversionProgress, convert, dask_client, require_workers, verify_against_source
from ..sharded import ShardedStore
from .common import UsageError, write_output


def quiet_dask_logs() -> None:
    """Keep Dask's start-up and shutdown chatter (logged at INFO) out of the command's output."""
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _print_cluster(client) -> None:
    workers = require_workers(client)
    where = (
        "a LocalCluster on this machine" if client.cluster is not None else f"the cluster at {client.scheduler.address}"
    )
    print(f"Dask: {where}, {len(workers)} worker(s); dashboard: {client.dashboard_link}", file=sys.stderr)


def convert_sharded(args: argparse.Namespace) -> int:
    """``convert SOURCE --to BACKEND DEST --shards N [--scheduler ADDRESS]``."""
    quiet_dask_logs()
    with dask_client(args.scheduler, args.workers) as client:
        _print_cluster(client)
        with tqdm(total=0, file=sys.stderr, unit="img", unit_scale=True, dynamic_ncols=True) as bar:

            def progress(state: ConversionProgress) -> None:
                bar.total = state.images_total
                bar.update(state.images_written - bar.n)
                bar.set_postfix_str(
                    f"shards {state.shards_done}/{state.shards_total}, {state.images_per_second:,.0f} img/s",
                    refresh=True,
                )

            result = convert(
                args.source, args.backend, args.dest, args.shards, client, limit=args.limit, progress=progress
            )
    with ShardedStore(result.dest) as store:
        usage = store.disk_usage()
        check = verify_against_source(store, args.source)
    reused = f"; {len(result.reused)} shard(s) were already complete and kept" if result.reused else ""
    print(
        f"wrote {result.images_converted:,} images in {len(result.converted)} shard(s) to {result.dest} in "
        f"{result.seconds:.1f} s ({result.images_per_second:,.0f} images/s){reused}: the store holds "
        f"{result.count:,} images in {result.shard_count} shards of {result.backend}, "
        f"{usage.allocated_bytes / 1e6:,.1f} MB allocated ({usage.apparent_bytes / 1e6:,.1f} MB apparent), "
        f"{usage.files:,} files"
    )
    if not check.verified:
        sys.stderr.write(f"VERIFICATION FAILED: {check.error}\n")
        return 1
    print(
        f"read back {check.checked:,} images: they match the source"
        + (f" (PSNR {check.psnr:.1f} dB)" if check.psnr else "")
    )
    return 0


def bench_distributed(args: argparse.Namespace) -> int:
    """``bench --distributed [--scheduler ADDRESS] ...``: sharded conversion and reads on K workers at once."""
    from ..bench import ResultsDB
    from ..bench.distributed import DISTRIBUTED_OPERATIONS, DistributedBench, run_distributed_bench
    from ..bench.report import format_rate, format_seconds, measurements_table

    if args.scheduler and args.dask_workers:
        raise UsageError("--dask-workers sizes a LocalCluster; with --scheduler the cluster has its own workers")
    if args.cold:
        raise UsageError("--cold is not measured with --distributed: each worker's page cache is its own")
    operations = args.ops or list(DISTRIBUTED_OPERATIONS)
    unsupported = [op for op in operations if op not in DISTRIBUTED_OPERATIONS]
    if unsupported:
        raise UsageError(f"--distributed measures {', '.join(DISTRIBUTED_OPERATIONS)}, not {', '.join(unsupported)}")
    quiet_dask_logs()
    bench = DistributedBench(
        backends=args.backends,
        counts=args.counts,
        operations=operations,
        repeats=args.repeats,
        shards=args.shards,
        source=args.source,
        seed=args.seed,
        work_dir=args.work_dir,
        keep=args.keep,
    )

    def show(measurement) -> None:
        rate = format_rate(measurement.images_per_second)
        print(
            f"{measurement.backend} {measurement.count:,} {measurement.operation}: {rate} images/s aggregate, "
            f"median {format_seconds(measurement.seconds_median)}"
            + (f"  {measurement.error}" if measurement.error else ""),
            file=sys.stderr,
        )

    with dask_client(args.scheduler, args.dask_workers) as client, ResultsDB(args.db) as db:
        _print_cluster(client)
        summary = run_distributed_bench(client, bench, db, show)
    run_id, status, measurements, error = summary.run_id, summary.status, summary.measurements, summary.error
    if measurements:
        print(measurements_table(measurements))
        print("\nper worker (median seconds of its share):")
        for measurement in measurements:
            for share in measurement.per_worker or []:
                if "images" in share:
                    print(
                        f"  {measurement.backend} {measurement.count:,} {measurement.operation} {share['worker']}: "
                        f"{share['images']:,} images of {len(share['shards'])} shard(s) in "
                        f"{format_seconds(share['seconds_median'])}, {format_rate(share['images_per_second'])} images/s"
                    )
                else:
                    print(
                        f"  {measurement.backend} {measurement.count:,} {measurement.operation} {share['worker']}: "
                        f"{share['shard_writes']} shard write(s), median {format_seconds(share['shard_seconds_median'])} each"
                    )
    print(f"\nrun {run_id}: {status}" + (f": {error}" if error else "") + f"; recorded in {args.db}")
    if args.json:
        with ResultsDB(args.db) as db:
            write_output(args.json, db.export_json([run_id]))
    return 0 if status == "finished" else 1
