"""Converting a source into a sharded store on a Dask cluster: one task writes one shard.

The client lists the source (:func:`~storage.datasets.list_source`: CIFAR-10 batch files
and their sizes, or an image folder's file names) and never holds its images: each task
gets its shard's range and reads those images itself, straight from the source files, so
every worker must see SOURCE and DEST at the same paths (a shared file system on a real
cluster). A task writes an ordinary store of the backend, hashes its files and stamps it
(:func:`storage.sharded.finish_shard`); the client writes ``sharded.json`` last, once
every shard is complete.

Failures are clean and resumable. ``conversion.json`` (the plan: source, backend, shard
ranges and a conversion id) is written first; a task that fails or whose worker is killed
leaves its shard incomplete (its ``store.json`` says so) and the conversion ends without a
manifest, raising :class:`~storage.errors.ConversionFailedError`. Running the same
conversion again reuses the plan, and each task skips its shard if that shard is complete
and stamped by this conversion, so only the missing or incomplete shards are written.

This module is the only one that imports Dask; ``import storage`` does not load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask
from dask.distributed import Client, LocalCluster, wait

from . import registry
from .base import write_file_atomically
from .datasets.slices import SourceListing, list_source, read_slice
from .errors import BadShardError, ConversionFailedError, StorageError
from .parallel import worker_count
from .sharded import (
    CONVERSION_PLAN,
    SHARDED_MANIFEST,
    ShardedStore,
    finish_shard,
    new_conversion_id,
    prepare_destination,
    read_stamp,
    shard_name,
    shard_problem,
    split_evenly,
    write_sharded_manifest,
)

log = logging.getLogger(__name__)

PLAN_KIND = "image-storage-lab/sharded-conversion"
SHARED_PATHS_HINT = (
    "Every worker must see SOURCE and DEST at the same paths as this client (a shared file system: "
    "NFS, Lustre, CephFS...); a worker that writes to its own disk leaves shards the client cannot see"
)
POLL_SECONDS = 0.5  # how often the client reports progress while tasks run


class ClusterError(StorageError, ConnectionError):
    """The Dask scheduler cannot be reached, or the cluster has no workers."""


@dataclass(frozen=True)
class ShardTask:
    """What one Dask task needs to write one shard: small, so it travels cheaply."""

    conversion_id: str
    dest: str
    index: int
    start: int
    stop: int
    backend: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return Path(self.dest) / shard_name(self.index)


@dataclass(frozen=True)
class ConversionProgress:
    """Where a conversion stands: shards done of all, images written of all, since it started."""

    shards_done: int
    shards_total: int
    images_written: int
    images_total: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images_written / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ConversionResult:
    """How a conversion went: the shards it wrote now, the ones it found complete, and its rate."""

    dest: Path
    backend: str
    count: int
    shard_count: int
    converted: list[int]
    reused: list[int]
    images_converted: int
    seconds: float
    conversion_id: str
    source: str
    shard_seconds: dict[int, float] = field(default_factory=dict)
    shard_workers: dict[int, str] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Images written by this run per wall-clock second (reused shards not counted)."""
        return self.images_converted / self.seconds if self.seconds > 0 else 0.0


# -- the cluster ---------------------------------------------------------------------


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A Client of the cluster at ``scheduler``, or of a new LocalCluster sized to this machine.

    The LocalCluster has one single-threaded worker process per usable core (``workers``
    to choose), as format libraries hold the GIL for much of their work; its dashboard
    takes a free port (``client.dashboard_link``).
    """
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {scheduler} ({error}); check the address "
                "(tcp://host:8786) and that `dask scheduler` is running, or leave out --scheduler "
                "to start a cluster on this machine"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=workers or worker_count(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def describe_cluster(client: Client) -> dict[str, Any]:
    """The cluster a run used, for the environment record: scheduler, workers, versions."""
    info = scheduler_info(client)
    workers = [
        {
            "address": address,
            "host": worker.get("host"),
            "name": str(worker.get("name")),
            "threads": worker.get("nthreads"),
            "memory_limit_bytes": worker.get("memory_limit"),
        }
        for address, worker in sorted(info.get("workers", {}).items())
    ]
    return {
        "scheduler": info.get("address"),
        "kind": type(client.cluster).__name__ if client.cluster is not None else "external",
        "dashboard": client.dashboard_link,
        "workers": workers,
        "worker_count": len(workers),
        "threads": sum(worker["threads"] or 0 for worker in workers),
        "hosts": sorted({worker["host"] for worker in workers if worker["host"]}),
        "dask": dask.__version__,
    }


def scheduler_info(client: Client) -> dict[str, Any]:
    """The scheduler's description with every worker (recent Dask lists only 5 unless asked)."""
    try:
        return client.scheduler_info(n_workers=-1)
    except TypeError:  # older Dask: no n_workers argument, every worker listed
        return client.scheduler_info()


def require_workers(client: Client, timeout: float = 60) -> list[str]:
    """The workers' addresses, waiting up to ``timeout`` s for at least one."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError):
        raise ClusterError(
            f"the Dask cluster at {client.scheduler.address} has no workers after {timeout:.0f} s; "
            "start some with `dask worker SCHEDULER_ADDRESS`"
        ) from None
    return sorted(scheduler_info(client).get("workers", {}))


# -- the plan ------------------------------------------------------------------------


def _source_fingerprint(listing: SourceListing) -> str:
    entries = listing.batch_files if listing.is_cifar else listing.files
    return hashlib.sha256(json.dumps([listing.kind, list(entries)]).encode()).hexdigest()


def make_plan(listing: SourceListing, backend: str, shards: int, count: int, options: dict[str, Any]) -> dict[str, Any]:
    """The conversion's plan: what is converted into which shard, under a new conversion id."""
    return {
        "kind": PLAN_KIND,
        "conversion_id": new_conversion_id(),
        "backend": backend,
        "options": options,
        "count": count,
        "ranges": [list(pair) for pair in split_evenly(count, shards)],
        "source": {
            "kind": listing.kind,
            "root": str(listing.root.resolve()),
            "images": listing.count,
            "fingerprint": _source_fingerprint(listing),
            "description": listing.description,
        },
    }


def _same_conversion(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("kind", "backend", "options", "count", "ranges", "source")
    return all(old.get(key) == new.get(key) for key in keys)


def start_or_resume(dest: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """The plan to follow: the one already in ``dest`` if it is the same conversion, else ``plan``.

    Resuming removes ``sharded.json`` first (it is written again last), so a rerun that
    fails midway never leaves a manifest beside shards it has not checked. Starting anew
    replaces an old sharded store or conversion in ``dest``, never a folder of other files.
    """
    try:
        old = json.loads((dest / CONVERSION_PLAN).read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and _same_conversion(old, plan):
        (dest / SHARDED_MANIFEST).unlink(missing_ok=True)
        return old
    prepare_destination(dest)
    write_file_atomically(dest / CONVERSION_PLAN, json.dumps(plan, indent=1).encode())
    return plan


def _listing_for(listing: SourceListing, start: int, stop: int) -> tuple[SourceListing, int, int]:
    """What one task needs of the listing: for image folders only its own files (cycled)."""
    if listing.is_cifar:
        return listing, start, stop
    files = tuple(listing.files[i % listing.count] for i in range(start, stop))
    return replace(listing, files=files, count=len(files)), 0, stop - start


# -- the task ------------------------------------------------------------------------


def _report(topic: str, index: int, written: int) -> None:
    """Tell the client how far a shard is (a worker event; nothing outside a worker)."""
    try:
        from dask.distributed import get_worker

        get_worker().log_event(topic, {"shard": index, "written": written})
    except ValueError:  # not running on a worker (the task function called directly)
        pass


def write_shard(
    task: ShardTask,
    listing: SourceListing,
    start: int,
    stop: int,
    topic: str = "",
    on_chunk: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write one shard from its own slice of the source; skip it if already complete.

    Runs on a worker. Idempotent: a shard that is complete and stamped by this conversion
    is left alone; anything else in its folder (an incomplete store from a killed task) is
    removed and written again. ``on_chunk(shard index, images written)`` is called in the
    worker after each chunk. Returns the shard's stamp and how long the write took.
    """
    folder = task.folder
    problem = shard_problem(folder, task.backend, task.conversion_id, task.start, task.stop)
    if problem is None:
        return {"stamp": read_stamp(folder), "reused": True, "seconds": 0.0, "worker": _worker_address()}
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    written = 0
    with registry.open_store(task.backend, folder, "w", **task.options) as store:
        for images, labels in read_slice(listing, start, stop):

            def progress(done: int, total: int, before: int = written) -> None:
                if topic:
                    _report(topic, task.index, before + done)
                if on_chunk is not None:
                    on_chunk(task.index, before + done)

            store.write_batch(images, labels, progress=progress)
            written += len(labels)
    if written != task.stop - task.start:
        raise StorageError(f"{shard_name(task.index)} got {written:,} images, expected {task.stop - task.start:,}")
    stamp = finish_shard(folder, task.conversion_id, task.index, task.start, task.stop, task.backend)
    return {"stamp": stamp, "reused": False, "seconds": time.perf_counter() - started, "worker": _worker_address()}


def _worker_address() -> str:
    try:
        from dask.distributed import get_worker

        return get_worker().address
    except ValueError:
        return "local"


# -- the conversion ------------------------------------------------------------------


class _Tracker:
    """Images written per shard, updated from worker events and finished tasks."""

    def __init__(self, ranges: list[list[int]], started: float) -> None:
        self.sizes = [stop - start for start, stop in ranges]
        self.written = [0] * len(ranges)
        self.done: set[int] = set()
        self.lock = threading.Lock()
        self.started = started

    def on_event(self, event: Any) -> None:
        _, message = event if isinstance(event, tuple) else (None, event)
        with self.lock:
            index = int(message["shard"])
            self.written[index] = max(self.written[index], int(message["written"]))

    def finish(self, index: int, reused: bool) -> None:
        with self.lock:
            self.done.add(index)
            self.written[index] = 0 if reused else self.sizes[index]

    def snapshot(self) -> ConversionProgress:
        with self.lock:
            return ConversionProgress(
                len(self.done), len(self.sizes), sum(self.written), sum(self.sizes), time.perf_counter() - self.started
            )


def _cluster_mapper(client: Client):
    """Run a listing's per-file work (counting a CIFAR-10 batch's images) as tasks, not here."""

    def mapper(function, items):
        return client.gather(client.map(function, items, pure=False)) if items else []

    return mapper


def image_count(listing: SourceListing, limit: int | None = None, count: int | None = None) -> int:
    """Images to convert: the whole source, its first ``limit``, or ``count`` (cycling the source)."""
    if count is not None:
        return int(count)
    return min(listing.count, limit) if limit is not None else listing.count


def convert(
    source: str | os.PathLike[str],
    backend: str,
    dest: str | os.PathLike[str],
    shards: int,
    client: Client,
    *,
    limit: int | None = None,
    count: int | None = None,
    options: dict[str, Any] | None = None,
    progress: Callable[[ConversionProgress], None] | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> ConversionResult:
    """Convert ``source`` into a sharded store of ``backend`` at ``dest``, one Dask task per shard.

    Args:
        source: ``"auto"``, ``"sample"``, ``"cifar10"``, a CIFAR-10 folder or an image folder;
            every worker must be able to read it at this path.
        backend: a registered backend name; every shard is a store of it.
        dest: the sharded store's folder; every worker must be able to write it at this path.
        shards: how many shards (and tasks).
        client: a ``dask.distributed.Client``.
        limit: convert only the first ``limit`` images (as ``convert --limit``).
        count: convert exactly ``count`` images, cycling the source when it is shorter.
        options: backend options for every shard.
        progress: called in this thread about twice a second with a :class:`ConversionProgress`.
        on_chunk: called on the worker as ``on_chunk(shard index, images written)``.

    Returns:
        A :class:`ConversionResult`; its seconds run from this call to the manifest written
        (listing the source included).

    Raises:
        ConversionFailedError: some shards failed (each is named with its error); the others
            are kept and no manifest is written: run the same conversion again to finish it.
        BadShardError: the finished store does not open cleanly (never expected).
    """
    started = time.perf_counter()
    registry.store_class(backend)  # an unknown or unavailable backend fails before anything is written
    dest = Path(dest).expanduser().resolve()
    listing = list_source(source, mapper=_cluster_mapper(client))
    total = image_count(listing, limit, count)
    options = dict(options or {})
    plan = start_or_resume(dest, make_plan(listing, backend, shards, total, options))
    tracker = _Tracker(plan["ranges"], started)
    topic = f"storage-convert-{plan['conversion_id']}-{secrets.token_hex(3)}"
    client.subscribe_topic(topic, tracker.on_event)
    futures = {}
    try:
        for index, (start, stop) in enumerate(plan["ranges"]):
            task = ShardTask(plan["conversion_id"], str(dest), index, start, stop, backend, options)
            part, low, high = _listing_for(listing, start, stop)
            key = f"write-{shard_name(index)}-{secrets.token_hex(4)}"
            futures[client.submit(write_shard, task, part, low, high, topic, on_chunk, key=key)] = index
        outcomes = _collect(futures, tracker, progress)
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        client.unsubscribe_topic(topic)
    return _finish(dest, plan, listing, outcomes, tracker)


def _collect(futures: dict, tracker: _Tracker, progress: Callable | None) -> dict[int, Any]:
    """Wait for every task; return each shard's result or the exception it ended with."""
    pending = set(futures)
    outcomes: dict[int, Any] = {}
    while pending:
        try:
            finished, pending = wait(list(pending), timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
            pending = set(pending)
        except TimeoutError:
            finished = set()
        for future in finished:
            index = futures[future]
            if future.status == "finished":
                outcomes[index] = future.result()
                tracker.finish(index, outcomes[index]["reused"])
            else:
                outcomes[index] = future.exception() or RuntimeError(f"task {future.key} was {future.status}")
                with tracker.lock:
                    tracker.done.add(index)
        if progress is not None:
            progress(tracker.snapshot())
    return outcomes


def _finish(
    dest: Path, plan: dict[str, Any], listing: SourceListing, outcomes: dict[int, Any], tracker: _Tracker
) -> ConversionResult:
    seconds = time.perf_counter() - tracker.started
    failed = {
        shard_name(i): f"{type(o).__name__}: {o}" for i, o in sorted(outcomes.items()) if isinstance(o, BaseException)
    }
    if failed:
        kept = len(outcomes) - len(failed)
        details = "; ".join(f"{name}: {error}" for name, error in failed.items())
        unseen = any(isinstance(o, FileNotFoundError) for o in outcomes.values())
        raise ConversionFailedError(
            f"{len(failed)} of {len(outcomes)} shard(s) of {dest} failed ({details}). No manifest was written, "
            f"so the store does not open; the {kept} finished shard(s) are kept: run the same conversion again "
            f"to convert only the {len(failed)} missing or incomplete shard(s)"
            + (f". {SHARED_PATHS_HINT}" if unseen else ""),
            failed,
        )
    stamps = [outcomes[index]["stamp"] for index in sorted(outcomes)]
    write_sharded_manifest(dest, plan["conversion_id"], plan["backend"], plan["options"], stamps, listing.description)
    try:
        with ShardedStore(dest):  # the finished store must open cleanly: every shard checked against the manifest
            pass
    except BadShardError as error:
        (dest / SHARDED_MANIFEST).unlink(missing_ok=True)
        raise BadShardError(f"{error}. {SHARED_PATHS_HINT}", error.problems) from None
    converted = [i for i, o in sorted(outcomes.items()) if not o["reused"]]
    return ConversionResult(
        dest=dest,
        backend=plan["backend"],
        count=plan["count"],
        shard_count=len(stamps),
        converted=converted,
        reused=[i for i, o in sorted(outcomes.items()) if o["reused"]],
        images_converted=sum(tracker.sizes[i] for i in converted),
        seconds=seconds,
        conversion_id=plan["conversion_id"],
        source=listing.description,
        shard_seconds={i: o["seconds"] for i, o in outcomes.items() if not o["reused"]},
        shard_workers={i: o["worker"] for i, o in outcomes.items()},
    )


def verify_against_source(store: ShardedStore, source: str | os.PathLike[str] | SourceListing, images: int = 1_000):
    """Read back up to ``images`` images and compare them with the source; return a Verification.

    The ids checked are a window at the start of up to 8 shards spread over the store, so
    only a few source files are read, whatever the store's size.
    """
    import numpy as np

    from .verify import Verification, compare

    listing = source if isinstance(source, SourceListing) else list_source(source)
    lossless = registry.backend_info(store.backend).lossless
    chosen = store.shards[:: max(1, -(-len(store.shards) // 8))]
    per_shard = max(1, images // len(chosen))
    checked, psnr_values = 0, []
    for shard in chosen:
        start, stop = shard.start, min(shard.stop, shard.start + per_shard)
        parts = list(read_slice(listing, start, stop))
        expected = [image for chunk, _ in parts for image in chunk]
        expected_labels = np.concatenate([labels for _, labels in parts])
        got, got_labels = store.read_batch(np.arange(start, stop))
        result = compare(got, got_labels, expected, expected_labels, np.arange(stop - start), lossless)
        if not result.verified:
            return Verification(False, checked, result.psnr, f"{shard.name}, ids from {start}: {result.error}")
        checked += result.checked
        if result.psnr is not None:
            psnr_values.append(result.psnr)
    return Verification(True, checked, psnr=min(psnr_values) if psnr_values else None)
