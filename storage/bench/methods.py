"""What one timed sample of each operation covers, in words recorded with every measurement.

The text goes into each :class:`~storage.bench.Measurement` (``method``) and from there into
the results database and its exports, so a change here is a change in the results: reword
only when the method itself changes. One table for a run on this machine
(:mod:`storage.bench.engine`), one for a run on a Dask cluster
(:mod:`storage.bench.distributed`), where the same operation names are measured otherwise.
"""

from __future__ import annotations

METHODS = {
    "write_batch": "open + write_batch(N) + close; no extra fsync",
    "write_one": "open + N x write_one + close (close also timed alone: flush_seconds); no extra fsync",
    "read_all": "read_all(out=) into a pre-touched buffer; for long reads, read_batch over consecutive slices "
    "of it expected to take ~0.5 s each (4,096 to 65,536 ids); above 512 MB one reused slice buffer, "
    "each slice verified with the timer paused",
    "read_random": "min(N, 1,000) shuffled seeded ids, one read_one each",
    "read_one": "median latency of min(N, 100) single read_one calls",
    "loader": "one DataLoader per measurement, persistent workers; the first epoch (worker start-up included) "
    "reported apart, each sample one later epoch; order 'shuffle': torch RandomSampler over all ids, one read per "
    "batch, then the run's decoder and transform in the worker; order 'own': the format's own dataset and sampler; "
    "every format's epochs interleaved with the ceilings'; batches copied out and verified (ids, labels, and "
    "without a transform the pixels) outside the timer",
    "upload": "the written store uploaded to the location, its manifest last, into a prefix emptied beforehand",
    "first_epoch": "nothing cached: open the store at the location + the format's own loader (workers started) "
    "+ one shuffled epoch to the last batch; batches copied out and verified outside the timer",
    "later_epoch": "the second shuffled epoch of the same loader, its workers and the library's cache kept "
    "from the first; batches copied out and verified outside the timer",
    "remote_random": "nothing cached: open the store at the location + min(N, 1,000) shuffled seeded ids, "
    "one read_one each",
}

DISTRIBUTED_METHODS = {
    "write_batch": "distributed convert: one Dask task per shard; from the call to the manifest written, "
    "listing the source included",
    "read_all": "K workers at once, each reads every image of its shards into a pre-touched buffer; "
    "a sample is the span from the first start to the last end",
    "read_random": "K workers at once, each reads min(its images, 1,000) seeded random ids of its shards with "
    "read_one; a sample is the span from the first start to the last end",
}

__all__ = ["DISTRIBUTED_METHODS", "METHODS"]
