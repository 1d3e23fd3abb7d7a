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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from dask.distributed import Client, Event, Queue

from .. import registry
from ..datasets.slices import SourceListing, list_source, read_slice
from ..distributed import convert, describe_cluster, require_workers
from ..sharded import ShardedStore
from ..verify import compare
from .environment import capture_environment, peak_rss_bytes
from .events import Measurement, RunSummary
from .experiment import RANDOM_READS, seeded_rng
from .methods import DISTRIBUTED_METHODS
from .placement import new_run_id
from .run_state import fail, finish_measurement, new_measurement, set_disk

DISTRIBUTED_OPERATIONS = tuple(DISTRIBUTED_METHODS)  # write_batch, read_all, read_random
READY_TIMEOUT = 300  # seconds the client waits for every worker to get ready


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


@dataclass(kw_only=True)
class _ClusterRun:
    """What a distributed run carries from cell to cell."""

    client: Client
    bench: DistributedBench
    run_id: str
    run_dir: Path
    shards: int
    workers: int
    listing: SourceListing
    db: Any
    on_measurement: Callable[[Measurement], None] | None
    measurements: list[Measurement] = field(default_factory=list)

    @property
    def pixel_bytes_per_image(self) -> int:
        return 32 * 32 * 3 if self.listing.is_cifar else 0

    def new_measurement(self, backend: str, count: int, operation: str, images: int) -> Measurement:
        return new_measurement(
            self.run_id,
            backend,
            count,
            operation,
            per_image_bytes=self.pixel_bytes_per_image,
            images=images,
            distributed=True,
        )

    def record(self, measurement: Measurement, path: Path) -> None:
        """Finish ``measurement`` (the cluster's share, the store's disk use, the rates) and record it."""
        measurement.cluster_workers = self.workers
        measurement.shards = self.shards
        if path.exists():
            with ShardedStore(path) as store:
                set_disk(measurement, store.disk_usage())
        finish_measurement(measurement)
        if self.db is not None:
            self.db.add_measurement(measurement)
        if self.on_measurement is not None:
            self.on_measurement(measurement)
        self.measurements.append(measurement)


def _measure_conversion(run: _ClusterRun, backend: str, count: int, path: Path) -> Measurement:
    measurement = run.new_measurement(backend, count, "write_batch", count)
    per_worker: dict[str, list[float]] = {}
    for _ in range(run.bench.repeats):
        shutil.rmtree(path, ignore_errors=True)
        result = convert(run.bench.source, backend, path, run.shards, run.client, count=count)
        measurement.samples.append(result.seconds)
        for index, worker in result.shard_workers.items():
            per_worker.setdefault(worker, []).append(result.shard_seconds.get(index, 0.0))
    measurement.per_worker = [
        {"worker": worker, "shard_writes": len(times), "shard_seconds_median": float(np.median(times))}
        for worker, times in sorted(per_worker.items())
    ]
    measurement.verified = True
    return measurement


def _measure_reads(run: _ClusterRun, backend: str, count: int, path: Path, operation: str) -> Measurement:
    rounds = [read_round(run.client, path, operation, run.bench.seed, run.listing) for _ in range(run.bench.repeats)]
    images = sum(report["images"] for report in rounds[0])
    measurement = run.new_measurement(backend, count, operation, images)
    measurement.samples = [
        max(r["ended_at"] for r in reports) - min(r["started_at"] for r in reports) for reports in rounds
    ]
    measurement.per_worker = _per_worker(rounds)
    errors = [report["error"] for reports in rounds for report in reports if report["error"]]
    measurement.verified = not errors
    measurement.error = errors[0] if errors else None
    return measurement


def _parameters(bench: DistributedBench, shards: int, workers: int) -> dict[str, Any]:
    """The run's parameters as the results database keeps them (an experiment's, plus the cluster's)."""
    return {
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
        "workers": workers,
    }


def _source_summary(bench: DistributedBench, listing: SourceListing) -> dict[str, Any]:
    return {"spec": bench.source, "kind": listing.kind, "root": str(listing.root), "description": listing.description,
            "images": listing.count, "class_names": listing.class_names}  # fmt: skip


def run_distributed_bench(
    client: Client, bench: DistributedBench, db: Any = None, on_measurement: Callable[[Measurement], None] | None = None
) -> RunSummary:
    """Run ``bench`` on the cluster behind ``client``; return how it went, as :func:`run_experiment` does.

    ``on_measurement`` is called with each measurement as it is recorded. A
    KeyboardInterrupt ends the run as ``interrupted`` in ``db`` and is raised again.
    """
    started = time.perf_counter()
    workers = require_workers(client)
    listing = list_source(bench.source)
    run_id = new_run_id()
    run_dir = Path(bench.work_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    environment = {**capture_environment(bench.work_dir), "cluster": describe_cluster(client)}
    shards = bench.shards or len(workers)
    run = _ClusterRun(
        client=client,
        bench=bench,
        run_id=run_id,
        run_dir=run_dir,
        shards=shards,
        workers=len(workers),
        listing=listing,
        db=db,
        on_measurement=on_measurement,
    )
    if db is not None:
        db.create_run(run_id, _parameters(bench, shards, len(workers)), environment, _source_summary(bench, listing))
    status, error = _measure_all(run, environment)
    return RunSummary(
        run_id=run_id,
        status=status,
        measurements=run.measurements,
        error=error,
        environment=environment,
        run_dir=str(run_dir),
        wall_seconds=time.perf_counter() - started,
        peak_rss_bytes=environment["peak_rss_bytes"],
        source_description=listing.description,
    )


def _measure_all(run: _ClusterRun, environment: dict[str, Any]) -> tuple[str, str | None]:
    """Every cell of the run, however it ends: (status, error); the run's folder goes unless kept."""
    status, error = "failed", None
    try:
        for count in run.bench.counts:
            for backend in run.bench.backends:
                _measure_cell(run, backend, count)
        failed = [m for m in run.measurements if m.error or not m.verified]
        status = "failed" if failed else "finished"
        error = f"{failed[0].backend} {failed[0].operation}: {failed[0].error}" if failed else None
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted (KeyboardInterrupt)"
        raise
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
    finally:
        if not run.bench.keep:
            shutil.rmtree(run.run_dir, ignore_errors=True)
        environment["peak_rss_bytes"] = peak_rss_bytes()
        if run.db is not None:
            run.db.finish_run(run.run_id, status, error, environment)
    return status, error


def _measure_cell(run: _ClusterRun, backend: str, count: int) -> None:
    """One backend at one count: the sharded conversion (measured or not), then each read."""
    path = run.run_dir / backend / str(count)
    try:
        if "write_batch" in run.bench.operations:
            run.record(_measure_conversion(run, backend, count, path), path)
        else:
            convert(run.bench.source, backend, path, run.shards, run.client, count=count)
    except Exception as failure:
        failed = run.new_measurement(backend, count, "write_batch", count)
        fail(failed, failure)
        run.record(failed, path)
        return
    for operation in ("read_all", "read_random"):
        if operation in run.bench.operations:
            try:
                run.record(_measure_reads(run, backend, count, path, operation), path)
            except Exception as failure:
                failed = run.new_measurement(backend, count, operation, 0)
                fail(failed, failure)
                run.record(failed, path)
    run.client.run(close_worker_stores)
    if not run.bench.keep:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["DISTRIBUTED_OPERATIONS", "DistributedBench", "read_round", "run_distributed_bench"]
