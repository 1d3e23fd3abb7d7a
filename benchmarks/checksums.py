"""What checksums cost: read_all with and without verify=True, verify(), and the hashing a write adds.

    python benchmarks/checksums.py                          # npy, hdf5, lmdb at 100,000 CIFAR images
    python benchmarks/checksums.py --backends lmdb --count 10000 --repeats 9 --evicted

For each backend one store is written, then, repeated in a rotating order within each
repeat: ``read_all(out=...)``, ``read_all(out=..., verify=True)`` and ``verify()``, into a
buffer allocated and touched before the timers. The cost of verifying is the median of the
verified reads over the median of the plain ones, in the same run (target: at most 1.10).
``--evicted`` also times both reads after every file of the store is evicted from the page
cache (``fsync`` + ``posix_fadvise(DONTNEED)``, the store closed first and reopened), where
reading waits for the disk and hashing overlaps less with nothing. The write row times
``write_batch`` beside hashing the same images alone (what checksums add to a write). The
load average is printed before and after: on a shared machine rerun before trusting a digit.
Every read is checked against the source.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import storage  # noqa: E402
from storage import checksums  # noqa: E402
from storage.bench import pagecache  # noqa: E402
from storage.datasets import load_source, take  # noqa: E402


def summary(values: list[float], unit: float = 1e3) -> str:
    return f"{statistics.median(values) * unit:8.1f} [{min(values) * unit:.1f}-{max(values) * unit:.1f}]"


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def hash_alone(images: np.ndarray, labels: np.ndarray, chunk: int = 1024) -> float:
    """Seconds to compute the records a write records, over the same chunks, without writing."""
    algorithm = checksums.DEFAULT_ALGORITHM
    return timed(
        lambda: [
            checksums.chunk_records(algorithm, images[start : start + chunk], labels[start : start + chunk], start)
            for start in range(0, len(images), chunk)
        ]
    )


def ceilings(images: np.ndarray, repeats: int) -> None:
    """What any verified read of these bytes is up against: a copy of them in memory, and hashing them.

    A plain ``read_all`` of a raw store is at best a copy from the page cache into ``out``; a
    verified one also hashes every byte. Where hashing runs nearly as fast as copying, one
    core cannot verify for less than about (copy + hash) / copy, and a second core helps
    only as far as the memory bus lets two streams through at once.
    """
    source = np.ascontiguousarray(images).reshape(-1)
    out = np.empty_like(source)
    out.fill(1)
    piece = 2**20
    view = memoryview(out)

    def copy() -> None:
        np.copyto(out, source)

    def hash_all() -> None:
        for start in range(0, len(view), piece):
            checksums.hasher(checksums.DEFAULT_ALGORITHM).update(view[start : start + piece])

    def copy_then_hash() -> None:
        for start in range(0, len(source), piece):
            np.copyto(out[start : start + piece], source[start : start + piece])
            checksums.hasher(checksums.DEFAULT_ALGORITHM).update(view[start : start + piece])

    cases = {"copy in memory": copy, "hash alone": hash_all, "copy, then hash (1 MiB pieces)": copy_then_hash}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(max(repeats, 5)):
        for name in list(cases)[repeat % 3 :] + list(cases)[: repeat % 3]:
            times[name].append(timed(cases[name]))
    base = statistics.median(times["copy in memory"])
    print(f"\nceilings over the same {len(source) / 2**20:,.0f} MiB (ms, median [min-max]; x the copy)")
    for name, values in times.items():
        gigabytes = len(source) / statistics.median(values) / 1e9
        print(f"  {name:<30} {summary(values)}  {statistics.median(values) / base:.2f}x  {gigabytes:.1f} GB/s")


def measure(backend: str, images: np.ndarray, labels: np.ndarray, repeats: int, evicted: bool, work: Path) -> None:
    path = work / backend
    writes, hashes = [], []
    for _ in range(max(1, repeats // 2)):
        shutil.rmtree(path, ignore_errors=True)

        def write() -> None:
            with storage.open_store(backend, path, "w") as store:
                store.write_batch(images, labels)

        writes.append(timed(write))
        hashes.append(hash_alone(images, labels))
    out = np.empty_like(images)
    out.fill(1)  # touched before any timer
    times: dict[str, list[float]] = {"read_all": [], "read_all verify=True": [], "verify()": []}
    if evicted:
        times |= {"evicted read_all": [], "evicted read_all verify=True": []}
    with storage.open_store(backend, path) as store:
        reads = {
            "read_all": lambda: store.read_all(out=out),
            "read_all verify=True": lambda: store.read_all(out=out, verify=True),
            "verify()": lambda: store.verify().raise_if_damaged(),
        }
        names = list(reads)
        for name in names:  # one warm-up each
            reads[name]()
        for repeat in range(repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                out.fill(0)
                times[name].append(timed(reads[name]))
                if name != "verify()" and not np.array_equal(out, images):
                    raise SystemExit(f"{backend} {name} read back different images: benchmark aborted")
    if evicted:
        for repeat in range(repeats):
            for verify in (False, True) if repeat % 2 == 0 else (True, False):
                pagecache.evict(path)
                with storage.open_store(backend, path) as store:
                    name = "evicted read_all" + (" verify=True" if verify else "")
                    times[name].append(timed(lambda store=store, verify=verify: store.read_all(out=out, verify=verify)))
    plain = statistics.median(times["read_all"])
    print(f"\n{backend}, {len(images):,} images (ms, median [min-max] of {repeats})")
    print(f"  write_batch            {summary(writes)}   of which hashing alone {summary(hashes)}")
    for name, values in times.items():
        print(f"  {name:<28} {summary(values)}")
    ratio = statistics.median(times["read_all verify=True"]) / plain
    print(f"  read_all verify=True / read_all: {ratio:.2f}x (target <= 1.10x: {'OK' if ratio <= 1.10 else 'MISSED'})")
    if evicted:
        cold = statistics.median(times["evicted read_all verify=True"]) / statistics.median(times["evicted read_all"])
        print(f"  evicted, verify=True / plain:    {cold:.2f}x (target <= 1.10x: {'OK' if cold <= 1.10 else 'MISSED'})")
    shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="npy,hdf5,lmdb")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--evicted", action="store_true", help="also read with the page cache evicted")
    parser.add_argument("--source", default="auto")
    arguments = parser.parse_args()
    source = load_source(arguments.source)
    images, labels = take(source.images, source.labels, arguments.count)
    images, labels = np.ascontiguousarray(images), np.asarray(labels)
    print(f"{source.description}, cycled to {arguments.count:,}; {os.cpu_count()} cores; {load()}")
    print(f"checksum {checksums.DEFAULT_ALGORITHM}, runs of {checksums.BLOCK_BYTES // 1024} KiB")
    work = Path(tempfile.mkdtemp(dir=REPO_ROOT / "data", prefix="bench-checksums-"))
    try:
        ceilings(images, arguments.repeats)
        for backend in arguments.backends.split(","):
            measure(backend.strip(), images, labels, arguments.repeats, arguments.evicted, work)
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
