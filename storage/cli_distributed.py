"""The command line's sharded and distributed commands: ``convert --shards`` and ``bench --distributed``.

Kept apart from :mod:`storage.cli` so that Dask is imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from .distributed import ConversionProgress, convert, dask_client, require_workers, verify_against_source
from .sharded import ShardedStore


def quiet_dask_logs() -> None:
    """Keep Dask's start-up and shutdown chatter (logged at INFO) out of the command's output."""
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _print_cluster(client) -> None:
    workers = require_workers(client)
    where = "a LocalCluster on this machine" if client.cluster is not None else f"the cluster at {client.scheduler.address}"
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

            result = convert(args.source, args.backend, args.dest, args.shards, client, limit=args.limit, progress=progress)
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
