"""Benchmarks on a Dask cluster: sharded conversion, then reads from K workers at once.

For each image count and backend, the source (cycled to the count) is converted into a
sharded store by :func:`storage.distributed.convert`, one task per shard. Reads then run
on every worker at the same moment: shard ``i`` belongs to worker ``i % K``; each worker
opens its shards, allocates and touches its buffers, says it is ready and waits; when all
are ready the client releases them together. Each worker times its own reads; a sample of
the aggregate is the span from the first worker's start to the last one's end, so the
aggregate images/s is what the cluster delivered, and the slowest worker counts in full.

* ``write_batch``: a whole sharded conversion (fresh folder each repeat), from the call to
  the manifest written, listing the source included.
* ``read_all``: each worker reads every image of its shards, in id order, into a buffer
  touched beforehand, one ``read_batch`` per shard.

Each worker opens the store once and keeps it open across repeats (as the one-process
engine keeps its reader), so only the first repeat pays for mapping its files.
* ``read_random``: each worker reads min(its images, 1,000) seeded random ids of its
  shards, one ``read_one`` each.

Every image read is compared with the source (read by the worker itself, outside the
timer). Measurements go to the results database like any run's; the run's environment
record carries a ``cluster`` entry (scheduler, workers, hosts, Dask version).
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dask.distributed import Client, Event, Queue

from .. import registry
from ..datasets.slices import SourceListing, list_source, read_slice
from ..distributed import convert, describe_cluster, require_workers
from ..sharded import ShardedStore
from .engine import new_run_id
from .environment import capture_environment, peak_rss_bytes
from .events import Measurement, fill_rates
from .experiment import RANDOM_READS, seeded_rng
from .verify import compare

DISTRIBUTED_OPERATIONS = ("write_batch", "read_all", "read_random")
READY_TIMEOUT = 300  # seconds the client waits for every worker to get ready
METHODS = {
    "write_batch": "distributed convert: one Dask task per shard; from the call to the manifest written, "
    "listing the source included",
    "read_all": "K workers at once, each reads every image of its shards into a pre-touched buffer; "
    "a sample is the span from the first start to the last end",
    "read_random": "K workers at once, each reads min(its images, 1,000) seeded random ids of its shards with "
    "read_one; a sample is the span from the first start to the last end",
}


@dataclass
class DistributedBench:
    """What a distributed benchmark run measures."""

    backends: list[str]
    counts: list[int]
    operations: list[str]
    repeats: int = 3
    shards: int | None = None
    source: str = "auto"
    seed: int = 0
    work_dir: str = "data/runs"
    keep: bool = False


# -- on the workers --------------------------------------------------------------------


def read_share(
    path: str,
    shard_indices: list[int],
    operation: str,
    seed: int,
    listing: SourceListing,
    sync: tuple[str, str],
) -> dict[str, Any]:
    """Run one worker's share of a read round; return its timing and whether the images matched."""
    from dask.distributed import get_worker

    store = _worker_store(path)
    shards = [store.shards[index] for index in shard_indices]
    plans = [_read_plan(store, shard, operation, seed) for shard in shards]
    buffers = [_touched_buffer((len(ids), *store.uniform_shape)) if store.uniform_shape else None for ids in plans]
    for shard in shards:
        store.open_shard(shard.index)
    ready, go = sync
    Queue(ready).put(get_worker().address)
    Event(go).wait(READY_TIMEOUT)
    results = []
    started_at = time.time()
    started = time.perf_counter()
    for shard, ids, out in zip(shards, plans, buffers):
        local = ids - shard.start
        shard_store = store.open_shard(shard.index)
        if operation == "read_all":
            results.append(shard_store.read_batch(local, out))
        else:
            results.append([shard_store.read_one(int(i)) for i in local])
    seconds = time.perf_counter() - started
    ended_at = started_at + seconds
    error = _check(store, shards, plans, results, operation, listing)
    images = int(sum(len(ids) for ids in plans))
    return {
        "worker": get_worker().address,
        "shards": [shard.name for shard in shards],
        "images": images,
        "seconds": seconds,
        "started_at": started_at,
        "ended_at": ended_at,
        "error": error,
    }


_WORKER_STORES: dict[str, ShardedStore] = {}


def _worker_store(path: str) -> ShardedStore:
    """The store opened once per worker process and kept open across rounds, as the engine keeps its reader."""
    store = _WORKER_STORES.get(path)
    if store is None:
        store = _WORKER_STORES[path] = ShardedStore(path)
    return store


def close_worker_stores() -> int:
    """Close the stores this worker keeps open (run on every worker once a store is done with)."""
    count = len(_WORKER_STORES)
    for store in _WORKER_STORES.values():
        store.close()
    _WORKER_STORES.clear()
    return count


def _touched_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """An output buffer whose pages are all touched now, so no first-touch fault lands in the timer."""
    buffer = np.empty(shape, np.uint8)
    buffer.fill(0)
    return buffer


def _read_plan(store: ShardedStore, shard, operation: str, seed: int) -> np.ndarray:
    if operation == "read_all":
        return np.arange(shard.start, shard.stop)
    rng = seeded_rng(seed, len(store), f"read_random {shard.name}")
    return shard.start + rng.permutation(shard.count)[: min(shard.count, RANDOM_READS)]


def _check(store, shards, plans, results, operation: str, listing: SourceListing) -> str | None:
    """Compare what was read with the source images, read here from the source files."""
    lossless = registry.backend_info(store.backend).lossless
    for shard, ids, result in zip(shards, plans, results):
        parts = list(read_slice(listing, shard.start, shard.stop))
        expected = [image for chunk, _ in parts for image in chunk]
        expected_labels = np.concatenate([labels for _, labels in parts])
        if operation == "read_all":
            images, labels = result
        else:
            images, labels = [image for image, _ in result], [label for _, label in result]
        verdict = compare(images, labels, expected, expected_labels, ids - shard.start, lossless)
        if not verdict.verified:
            return f"VERIFICATION FAILED ({shard.name}): {verdict.error}"
    return None


# -- on the client ---------------------------------------------------------------------


def read_round(client: Client, path: Path, operation: str, seed: int, listing: SourceListing) -> list[dict[str, Any]]:
    """One read round: every worker reads its shards at the same moment; their reports."""
    workers = require_workers(client)
    with ShardedStore(path) as store:
        shard_count = len(store.shards)
    shares = {worker: [i for i in range(shard_count) if i % len(workers) == n] for n, worker in enumerate(workers)}
    shares = {worker: indices for worker, indices in shares.items() if indices}
    token = secrets.token_hex(4)
    ready, go = f"bench-ready-{token}", f"bench-go-{token}"
    futures = [
        client.submit(
            read_share, str(path), indices, operation, seed, listing, (ready, go),
            workers=[worker], allow_other_workers=False, pure=False, key=f"read-{operation}-{n}-{token}",
        )
        for n, (worker, indices) in enumerate(shares.items())
    ]  # fmt: skip
    queue = Queue(ready)
    for _ in futures:
        queue.get(timeout=READY_TIMEOUT)
    Event(go).set()
    return client.gather(futures)


def _per_worker(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for reports in rounds:
        for report in reports:
            by_worker.setdefault(report["worker"], []).append(report)
    summary = []
    for worker, reports in sorted(by_worker.items()):
        seconds = float(np.median([r["seconds"] for r in reports]))
        images = reports[0]["images"]
        summary.append(
            {
                "worker": worker,
                "shards": reports[0]["shards"],
                "images": images,
                "seconds_median": seconds,
                "images_per_second": images / seconds if seconds > 0 else None,
            }
        )
    return summary


def _measurement(run_id: str, backend: str, count: int, operation: str, images: int, pixel_bytes: int) -> Measurement:
    return Measurement(
        run_id=run_id,
        backend=backend,
        count=count,
        operation=operation,
        cache="warm",
        images=images,
        pixel_bytes=pixel_bytes,
        method=METHODS[operation],
    )


def _finish(measurement: Measurement, path: Path, workers: int, shards: int) -> Measurement:
    measurement.cluster_workers = workers
    measurement.shards = shards
    if path.exists():
        with ShardedStore(path) as store:
            usage = store.disk_usage()
        measurement.apparent_bytes, measurement.allocated_bytes, measurement.files = (
            usage.apparent_bytes,
            usage.allocated_bytes,
            usage.files,
        )
    fill_rates(measurement)
    measurement.peak_rss_bytes = peak_rss_bytes()
    return measurement


def _measure_conversion(client, bench, run_id, backend, count, path, shards, pixel_bytes) -> Measurement:
    measurement = _measurement(run_id, backend, count, "write_batch", count, pixel_bytes)
    per_worker: dict[str, list[float]] = {}
    for _ in range(bench.repeats):
        shutil.rmtree(path, ignore_errors=True)
        result = convert(bench.source, backend, path, shards, client, count=count)
        measurement.samples.append(result.seconds)
        for index, worker in result.shard_workers.items():
            per_worker.setdefault(worker, []).append(result.shard_seconds.get(index, 0.0))
    measurement.per_worker = [
        {"worker": worker, "shard_writes": len(times), "shard_seconds_median": float(np.median(times))}
        for worker, times in sorted(per_worker.items())
    ]
    measurement.verified = True
    return measurement


def _measure_reads(client, bench, run_id, backend, count, path, operation, listing, pixel_per_image) -> Measurement:
    rounds = [read_round(client, path, operation, bench.seed, listing) for _ in range(bench.repeats)]
    images = sum(report["images"] for report in rounds[0])
    measurement = _measurement(run_id, backend, count, operation, images, int(pixel_per_image * images))
    measurement.samples = [
        max(r["ended_at"] for r in reports) - min(r["started_at"] for r in reports) for reports in rounds
    ]
    measurement.per_worker = _per_worker(rounds)
    errors = [report["error"] for reports in rounds for report in reports if report["error"]]
    measurement.verified = not errors
    measurement.error = errors[0] if errors else None
    return measurement


def run_distributed_bench(
    client: Client, bench: DistributedBench, db: Any = None, on_measurement: Callable[[Measurement], None] | None = None
) -> tuple[str, str, list[Measurement], str | None]:
    """Run ``bench`` on the cluster behind ``client``; return (run id, status, measurements, error)."""
    workers = require_workers(client)
    listing = list_source(bench.source)
    run_id = new_run_id()
    run_dir = Path(bench.work_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    environment = {**capture_environment(bench.work_dir), "cluster": describe_cluster(client)}
    shards = bench.shards or len(workers)
    parameters = {
        "backends": bench.backends,
        "counts": bench.counts,
        "operations": bench.operations,
        "caches": ["warm"],
        "repeats": bench.repeats,
        "source": bench.source,
        "seed": bench.seed,
        "keep": bench.keep,
        "work_dir": bench.work_dir,
        "distributed": True,
        "shards": shards,
        "workers": len(workers),
    }
    source = {"spec": bench.source, "kind": listing.kind, "root": str(listing.root), "description": listing.description,
              "images": listing.count, "class_names": listing.class_names}  # fmt: skip
    if db is not None:
        db.create_run(run_id, parameters, environment, source)
    measurements: list[Measurement] = []
    status, error = "failed", None
    try:
        for count in bench.counts:
            for backend in bench.backends:
                measurements.extend(
                    _measure_cell(
                        client,
                        bench,
                        run_id,
                        backend,
                        count,
                        run_dir,
                        shards,
                        listing,
                        len(workers),
                        db,
                        on_measurement,
                    )
                )
        failed = [m for m in measurements if m.error or not m.verified]
        status = "failed" if failed else "finished"
        error = f"{failed[0].backend} {failed[0].operation}: {failed[0].error}" if failed else None
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted (KeyboardInterrupt)"
        raise
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
    finally:
        if not bench.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        environment["peak_rss_bytes"] = peak_rss_bytes()
        if db is not None:
            db.finish_run(run_id, status, error, environment)
    return run_id, status, measurements, error


def _measure_cell(client, bench, run_id, backend, count, run_dir, shards, listing, workers, db, on_measurement):
    path = run_dir / backend / str(count)
    pixel_per_image = 32 * 32 * 3 if listing.is_cifar else 0
    done = []

    def record(measurement: Measurement) -> None:
        _finish(measurement, path, workers, shards)
        if db is not None:
            db.add_measurement(measurement)
        if on_measurement is not None:
            on_measurement(measurement)
        done.append(measurement)

    try:
        if "write_batch" in bench.operations:
            record(_measure_conversion(client, bench, run_id, backend, count, path, shards, pixel_per_image * count))
        else:
            convert(bench.source, backend, path, shards, client, count=count)
    except Exception as failure:
        failed = _measurement(run_id, backend, count, "write_batch", count, pixel_per_image * count)
        failed.error = f"{type(failure).__name__}: {failure}"
        record(failed)
        return done
    for operation in ("read_all", "read_random"):
        if operation in bench.operations:
            try:
                record(_measure_reads(client, bench, run_id, backend, count, path, operation, listing, pixel_per_image))
            except Exception as failure:
                failed = _measurement(run_id, backend, count, operation, 0, 0)
                failed.error = f"{type(failure).__name__}: {failure}"
                record(failed)
    client.run(close_worker_stores)
    if not bench.keep:
        shutil.rmtree(path, ignore_errors=True)
    return done


__all__ = ["DISTRIBUTED_OPERATIONS", "DistributedBench", "read_round", "run_distributed_bench"]
