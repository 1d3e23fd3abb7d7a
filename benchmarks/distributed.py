"""Sharded conversion on Dask with 1 and 2 workers, beside a plain one-process conversion, in one run.

    python benchmarks/distributed.py                        # 100,000 images, lmdb and hdf5, 3 repeats
    python benchmarks/distributed.py --count 20000 --backends lmdb --repeats 5 --shards 8

The source is a CIFAR-10 folder of ``--count`` real images: the bundled sample cycled and
written as the six CIFAR-10 batch files (python pickles, as the original), so each Dask
task reads its slice from batch files as it would from the real data set. Each repeat
times, in a rotating order so that no configuration always runs first:

* ``plain``: what ``convert`` without ``--shards`` does in one process: load the whole
  source, then one ``write_batch`` into one store (open + write + close);
* ``dask-1`` and ``dask-2``: :func:`storage.distributed.convert` into ``--shards`` shards on
  a LocalCluster of 1 or 2 single-threaded worker processes (both clusters are started
  before timing), from the call to the manifest written: listing the source on the client,
  every task, the stamps' checksums and the manifest.

Every store is read back and compared with the source outside the timers. Medians of the
repeats, with min-max, and ratios computed within the same run. Warm page cache; the
machine is shared with other work, so spreads can be wide.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# This script is called distributed.py: drop its own folder from the path, or ``import
# distributed`` (inside Dask) would import this file instead of the Dask package.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storage  # noqa: E402
from storage.datasets import CIFAR10_BATCH_FILES, load_cifar10, load_source, take  # noqa: E402
from storage.datasets.cifar10 import SAMPLE_CIFAR10_DIR  # noqa: E402


def write_cifar_folder(folder: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Write ``count`` sample images, cycled, as six CIFAR-10 batch files; return them."""
    images, labels, names = load_cifar10(SAMPLE_CIFAR10_DIR)
    images, labels = take(images, labels, count)
    folder.mkdir(parents=True)
    flat = images.transpose(0, 3, 1, 2).reshape(count, -1)  # CIFAR rows: 1,024 red, green, blue values
    bounds = np.linspace(0, count, len(CIFAR10_BATCH_FILES) + 1).astype(int)
    for name, start, stop in zip(CIFAR10_BATCH_FILES, bounds[:-1], bounds[1:]):
        batch = {b"data": np.ascontiguousarray(flat[start:stop]), b"labels": labels[start:stop].tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}, protocol=4))
    return images, labels


def plain_conversion(source: Path, backend: str, dest: Path) -> float:
    started = time.perf_counter()
    data = load_source(source)
    with storage.open_store(backend, dest, "w") as store:
        store.write_batch(data.images, data.labels)
    return time.perf_counter() - started


def dask_conversion(client, source: Path, backend: str, dest: Path, shards: int) -> float:
    from storage.distributed import convert

    result = convert(str(source), backend, dest, shards, client)
    assert result.converted == list(range(shards)), result
    return result.seconds


def check(dest: Path, images: np.ndarray, labels: np.ndarray, sharded: bool) -> None:
    opened = storage.open_sharded(dest) if sharded else storage.open_store(backend_of(dest), dest)
    with opened as store:
        got, got_labels = store.read_all()
        if not (np.array_equal(got, images) and np.array_equal(got_labels, labels)):
            raise SystemExit(f"VERIFICATION FAILED: {dest} does not hold the source images")


def backend_of(dest: Path) -> str:
    import json

    return json.loads((dest / "store.json").read_text())["backend"]


def summary(samples: list[float]) -> str:
    return f"{statistics.median(samples):7.2f} [{min(samples):.2f}-{max(samples):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--backends", default="lmdb,hdf5")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    from dask.distributed import Client, LocalCluster

    work = Path(tempfile.mkdtemp(prefix="distributed-bench-", dir=Path(__file__).resolve().parents[1] / "data"))
    clusters = {}
    try:
        source = work / "cifar-10-batches-py"
        images, labels = write_cifar_folder(source, args.count)
        for workers in (1, 2):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
            clusters[workers] = (cluster, Client(cluster))
        configs = ["plain", "dask-1", "dask-2"]
        times: dict[tuple[str, str], list[float]] = {}
        print(
            f"{args.count:,} CIFAR-10 images (the bundled sample cycled, in six batch files), {args.shards} shards, "
            f"{args.repeats} repeats; {platform.processor() or platform.machine()}, "
            f"{len(__import__('os').sched_getaffinity(0))} cores, shared machine",
            flush=True,
        )
        for backend in args.backends.split(","):
            dask_conversion(
                clusters[2][1], source, backend, work / "warm-up", args.shards
            )  # workers import the backend
            shutil.rmtree(work / "warm-up")
            for repeat in range(args.repeats):
                for config in configs[repeat % 3 :] + configs[: repeat % 3]:
                    dest = work / f"{backend}-{config}"
                    shutil.rmtree(dest, ignore_errors=True)
                    if config == "plain":
                        seconds = plain_conversion(source, backend, dest)
                    else:
                        seconds = dask_conversion(clusters[int(config[-1])][1], source, backend, dest, args.shards)
                    check(dest, images, labels, sharded=config != "plain")
                    times.setdefault((backend, config), []).append(seconds)
                    shutil.rmtree(dest)
            print(f"\n{backend}: median [min-max] seconds; images/s from the median; ratio = images/s / dask-1's")
            base = args.count / statistics.median(times[(backend, "dask-1")])
            for config in configs:
                samples = times[(backend, config)]
                rate = args.count / statistics.median(samples)
                print(f"  {config:<8} {summary(samples)} s  {rate:>9,.0f} images/s  x{rate / base:.2f}")
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
