"""The object-storage operations: what a format costs where large data sets live, in an S3 bucket.

Each store the cell wrote locally goes to ``<location>/<run id>/<backend>/<count>``, and is
then read there the way the format's users read it (:mod:`storage.s3.remote`: by the
format's own library, or downloaded whole where it needs a local file; ``read_method``
says which).

* ``upload``: the store uploaded, its manifest last (a fresh prefix each repeat); the
  conversion's own write is ``write_batch``'s.
* ``first_epoch``: nothing cached (the location's cache folder emptied), from opening the
  store (its manifest, an index, or the whole download) through the format's loader
  (:func:`storage.s3_loaders.make_s3_loader`, workers started) to the last batch.
* ``later_epoch``: the second epoch of that loader, its workers and the library's cache
  kept from the first, as a training job's next epoch.
* ``remote_random``: nothing cached, min(N, 1,000) seeded ids read one by one from a
  freshly opened store (opening included).

Every epoch and read is checked against the source, outside the timer. Requests and bytes
come from the server's counters (:mod:`storage.s3.traffic`), snapshotted around each timed
sample; each figure is projected to the run's network (:func:`project`).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from ...s3 import S3Location, redact
from ...s3.remote import clear_cache, read_method
from ...s3.traffic import Traffic, TrafficMeter, metrics_url
from ...s3.transfer import MANIFEST, delete_prefix, exists, list_objects, upload_store
from ...verify import compare
from ..events import Measurement, fill_rates
from ..experiment import RANDOM_READS
from ..run_state import (
    Cell,
    Repeat,
    Run,
    RunCancelled,
    apply_verification,
    fail,
    repeats,
    sample_ids,
    store_was_written,
)


def cell_location(run: Run, cell: Cell) -> S3Location:
    """Where ``cell``'s store goes: ``<location>/<run id>/<backend>/<count>``."""
    base = S3Location.parse(run.experiment.location, run.experiment.endpoint_url)
    return base.child(f"{run.run_id}/{cell.backend}/{cell.count}")


def _new_measurement(run: Run, cell: Cell, operation: str, workers: int | None = None) -> Measurement:
    measurement = cell.new_measurement(run.run_id, operation)
    location = cell_location(run, cell)
    measurement.location, measurement.endpoint = location.url, location.endpoint
    measurement.read_method = "upload" if operation == "upload" else read_method(cell.backend)
    if workers is not None:
        measurement.workers, measurement.batch_size = workers, run.experiment.batch_size
    return measurement


def _meter(run: Run, location: S3Location) -> TrafficMeter:
    return TrafficMeter(metrics_url(run.experiment.metrics_url), location.bucket)


class _Samples:
    """Each recorded sample's traffic, summarised into the measurement at the end."""

    def __init__(self) -> None:
        self.traffic: list[Traffic] = []

    def add(self, traffic: Traffic | None, repeat: Repeat) -> None:
        if traffic is not None and repeat.recorded:
            self.traffic.append(traffic)

    def finish(self, run: Run, measurement: Measurement, concurrency: int, upload: bool = False) -> None:
        fill_rates(measurement)
        if self.traffic:
            measurement.requests = float(np.median([t.requests for t in self.traffic]))
            moved = [t.received_bytes if upload else t.sent_bytes for t in self.traffic]
            measurement.transferred_bytes = float(np.median(moved))
            types = sorted({kind for t in self.traffic for kind in t.requests_by_type})
            measurement.requests_by_type = {
                kind: float(np.median([t.requests_by_type.get(kind, 0) for t in self.traffic])) for kind in types
            }
        project(run, measurement, concurrency)


def project(run: Run, measurement: Measurement, concurrency: int) -> None:
    """The measured figure moved to the run's network: local seconds + requests × RTT / concurrency + bytes / bandwidth.

    The local run already paid loopback's costs, so the model adds only what the network
    adds: a round trip for every request (``concurrency`` of them in flight at once) and
    the bytes at the named bandwidth. ``network_concurrency`` overrides the readers'
    own count (DataLoader workers, or upload threads).
    """
    experiment = run.experiment
    if measurement.seconds_median is None or measurement.requests is None or measurement.transferred_bytes is None:
        return
    in_flight = experiment.network_concurrency or max(1, concurrency)
    latency = measurement.requests * experiment.network_rtt_ms / 1000 / in_flight
    transfer = measurement.transferred_bytes * 8 / (experiment.network_mbit * 1e6)
    measurement.projected_seconds = measurement.seconds_median + latency + transfer
    measurement.projected_images_per_second = measurement.images / measurement.projected_seconds
    measurement.projection = {
        "rtt_ms": experiment.network_rtt_ms,
        "bandwidth_mbit": experiment.network_mbit,
        "concurrency": in_flight,
        "model": "local seconds + requests x RTT / concurrency + bytes x 8 / bandwidth",
        "latency_seconds": latency,
        "transfer_seconds": transfer,
    }


def _failed(measurement: Measurement, error: BaseException) -> None:
    fail(measurement, redact(f"{type(error).__name__}: {error}"))


# -- upload ------------------------------------------------------------------------------


def measure_upload(run: Run, cell: Cell, cache: str = "warm", workers: int | None = None) -> Measurement:
    """The cell's store uploaded, manifest last, per repeat; the last upload stays for the reads."""
    measurement = _new_measurement(run, cell, "upload")
    if not store_was_written(measurement, cell):
        return measurement
    location = cell_location(run, cell)
    samples, meter = _Samples(), _meter(run, location)
    try:
        for repeat in repeats(run, cell, "upload"):
            delete_prefix(location)
            meter.start()
            started = run.start_timer()
            summary = upload_store(location, cell.store_path)
            seconds = run.stop_timer(started)
            samples.add(meter.stop(), repeat)
            if repeat.recorded:
                measurement.samples.append(seconds)
        measurement.verified = _upload_matches(location, cell, summary.objects, measurement)
    except RunCancelled:
        raise
    except Exception as error:
        _failed(measurement, error)
    samples.finish(run, measurement, location.settings.concurrency, upload=True)
    return measurement


def _upload_matches(location: S3Location, cell: Cell, objects: int, measurement: Measurement) -> bool:
    listing = list_objects(location)
    local = {
        p.relative_to(cell.store_path).as_posix(): p.stat().st_size for p in cell.store_path.rglob("*") if p.is_file()
    }
    if listing != local:
        fail(
            measurement,
            f"VERIFICATION FAILED (upload): {location.url} holds {len(listing)} objects, the store {len(local)} files",
        )
        return False
    return True


def _ensure_uploaded(run: Run, cell: Cell, measurement: Measurement) -> S3Location | None:
    """The cell's location, uploaded now (untimed) when no upload was measured; None if that cannot be."""
    if not store_was_written(measurement, cell):
        return None
    location = cell_location(run, cell)
    try:
        if not exists(location, MANIFEST):
            upload_store(location, cell.store_path)
    except Exception as error:
        fail(measurement, f"not measured: the store could not be uploaded ({redact(str(error))})")
        return None
    return location


# -- epochs --------------------------------------------------------------------------------


def measure_first_epoch(run: Run, cell: Cell, cache: str = "warm", workers: int | None = 0) -> Measurement:
    """Nothing cached: opening the store and its loader, and one shuffled epoch, per repeat."""
    return _measure_epochs(run, cell, "first_epoch", int(workers or 0))


def measure_later_epoch(run: Run, cell: Cell, cache: str = "warm", workers: int | None = 0) -> Measurement:
    """The second epoch of a loader that read one already, per repeat."""
    return _measure_epochs(run, cell, "later_epoch", int(workers or 0))


def _measure_epochs(run: Run, cell: Cell, operation: str, workers: int) -> Measurement:
    from ...opener import open_store
    from ...s3_loaders import make_s3_loader

    measurement = _new_measurement(run, cell, operation, workers)
    location = _ensure_uploaded(run, cell, measurement)
    if location is None:
        return measurement
    samples, meter = _Samples(), _meter(run, location)
    measurement.verified = True
    first_batches: list[float] = []
    try:
        for repeat in repeats(run, cell, f"{operation}, {workers} workers"):
            clear_cache(location)
            store = None
            try:
                meter.start()
                started = run.start_timer()
                store = open_store(location.url, endpoint_url=location.endpoint_url)
                loader = make_s3_loader(
                    store, run.experiment.batch_size, workers, seed=run.experiment.seed + repeat.index
                )
                if operation == "later_epoch":
                    _check_epoch(
                        run, cell, measurement, loader, _epoch(run, cell, loader, repeat, timed=False), operation
                    )
                    meter.start()
                    started = run.start_timer()
                epoch = _epoch(run, cell, loader, repeat, started=started)
                samples.add(meter.stop(), repeat)
                if repeat.recorded:
                    measurement.samples.append(epoch["seconds"])
                    first_batches.append(epoch["first"])
                _check_epoch(run, cell, measurement, loader, epoch, operation)
            finally:
                if store is not None:
                    store.close()
    except RunCancelled:
        raise
    except Exception as error:
        _failed(measurement, error)
    if first_batches:
        measurement.first_batch_seconds = float(np.median(first_batches))
    samples.finish(run, measurement, max(1, workers))
    return measurement


def _epoch(run: Run, cell: Cell, loader: Any, repeat: Repeat, started: float | None = None, timed: bool = True) -> dict:
    """One epoch: every batch copied out (timer paused), with the ids in the order they came."""
    images: list = []
    labels: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    first = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        if started is None:
            started = run.start_timer()
        for batch in loader:
            arrived = time.perf_counter()
            if first is None:
                first = arrived - started
            images.extend(_arrays(batch[0]))
            labels.append(np.asarray(batch[1], dtype=np.int64))
            if len(batch) == 3:
                ids.append(np.asarray(batch[2], dtype=np.int64))
            before = run.paused_seconds
            run.tick(repeat.at(min(1.0, sum(map(len, labels)) / cell.count)))
            run.paused_seconds = before + (time.perf_counter() - arrived)
        seconds = run.stop_timer(started)
    order = np.concatenate(ids) if ids else np.asarray(loader.sampler.last_order, dtype=np.int64)
    return {"seconds": seconds, "first": first or seconds, "images": images, "labels": labels, "ids": order}


def _arrays(images: Any) -> list[np.ndarray]:
    if isinstance(images, list):
        return [np.asarray(image) for image in images]
    return list(images.numpy())


def _check_epoch(run: Run, cell: Cell, measurement: Measurement, loader: Any, epoch: dict, operation: str) -> None:
    labels = np.concatenate(epoch["labels"]) if epoch["labels"] else np.empty(0, np.int64)
    ids = epoch["ids"]
    if len(labels) != cell.count or len(np.unique(ids)) != cell.count:
        fail(measurement, f"VERIFICATION FAILED ({operation}): the epoch gave {len(labels):,} images, "
             f"{len(np.unique(ids)):,} of them distinct, of the store's {cell.count:,}")  # fmt: skip
        return
    result = compare(epoch["images"], labels, cell.images, cell.labels, ids, cell.lossless)
    apply_verification(measurement, result, f"{operation}, {measurement.workers} workers")


# -- random reads --------------------------------------------------------------------------


def measure_remote_random(run: Run, cell: Cell, cache: str = "warm", workers: int | None = None) -> Measurement:
    """Nothing cached: open the store and read min(N, 1,000) seeded ids one by one, per repeat."""
    from ...opener import open_store

    measurement = _new_measurement(run, cell, "remote_random")
    location = _ensure_uploaded(run, cell, measurement)
    if location is None:
        return measurement
    ids = sample_ids(run, cell.count, RANDOM_READS, "read_random")
    ids = ids[np.random.default_rng(run.experiment.seed).permutation(len(ids))]
    samples, meter = _Samples(), _meter(run, location)
    measurement.verified = True
    try:
        for repeat in repeats(run, cell, "remote_random"):
            clear_cache(location)
            meter.start()
            started = run.start_timer()
            with open_store(location.url, endpoint_url=location.endpoint_url) as store:
                read = [store.read_one(int(image_id)) for image_id in ids]
            seconds = run.stop_timer(started)
            samples.add(meter.stop(), repeat)
            if repeat.recorded:
                measurement.samples.append(seconds)
            result = compare(
                [image for image, _ in read], [label for _, label in read], cell.images, cell.labels, ids, cell.lossless
            )
            apply_verification(measurement, result, "remote_random")
    except RunCancelled:
        raise
    except Exception as error:
        _failed(measurement, error)
    samples.finish(run, measurement, 1)
    return measurement


def remove_run_objects(run: Run) -> None:
    """Delete what the run uploaded (unless it keeps its stores)."""
    if run.experiment.location is None or run.experiment.keep:
        return
    base = S3Location.parse(run.experiment.location, run.experiment.endpoint_url).child(run.run_id)
    try:
        delete_prefix(base)
    except Exception:  # the server is gone: nothing more can be deleted now; the objects stay under the run's id
        pass
    clear_cache(base)


__all__ = [
    "cell_location",
    "measure_first_epoch",
    "measure_later_epoch",
    "measure_remote_random",
    "measure_upload",
    "project",
    "remove_run_objects",
]
