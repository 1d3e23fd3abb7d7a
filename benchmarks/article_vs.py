"""The figures of issue 13, each as a ratio of two numbers measured in the same run.

    python benchmarks/article_vs.py                  # every row but the two command rows (~3 min)
    python benchmarks/article_vs.py --rows lmdb_read_one,zarr --repeats 5
    python benchmarks/article_vs.py --commands       # also the 1,000,000-image RSS and default-run rows

Each row times the library beside a reference re-typed here: the article's LMDB method
(one pickled object per image, ``txn.put`` in one transaction, a map of 10x the data,
read back with ``pickle.loads``), a raw NumPy file (``ndarray.tofile``, ``np.memmap``,
``readinto``) or another backend. Within a repeat the entries run in a rotating order;
rows print the median of the repeats (min-max in brackets) and the ratio of medians.
Warm page cache unless the row says evicted (``fsync`` + ``posix_fadvise(DONTNEED)`` per
file, every handle closed first). The machine may be shared: rerun before trusting a
last digit. Every store written here is read back and compared with the source.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import storage  # noqa: E402
from storage.bench import pagecache  # noqa: E402
from storage.datasets import load_source, take  # noqa: E402

ROWS = ("write_one", "lmdb_write_batch", "lmdb_read_one", "lmdb_read_all_evicted", "hdf5_write_batch", "zarr", "webp")
COMMAND_ROWS = ("rss_million", "default_run")


class CifarImage:
    """The article's value: the image's bytes, its size and channels, and the label, pickled."""

    def __init__(self, image: np.ndarray, label: int) -> None:
        self.channels = image.shape[2]
        self.size = image.shape[:2]
        self.image = image.tobytes()
        self.label = label

    def get_image(self) -> np.ndarray:
        return np.frombuffer(self.image, dtype=np.uint8).reshape(*self.size, self.channels)


def article_lmdb_write(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    env = lmdb.open(str(path), map_size=images.nbytes * 10)
    with env.begin(write=True) as txn:
        for index in range(len(images)):
            txn.put(f"{index:08}".encode("ascii"), pickle.dumps(CifarImage(images[index], int(labels[index]))))
    env.close()


def article_lmdb_read(path: Path, ids) -> tuple[list, list]:
    env = lmdb.open(str(path), readonly=True)
    images, labels = [], []
    with env.begin() as txn:
        for image_id in ids:
            value = pickle.loads(txn.get(f"{image_id:08}".encode("ascii")))
            images.append(value.get_image())
            labels.append(value.label)
    env.close()
    return images, labels


def timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def check(name: str, got, expected: np.ndarray) -> None:
    if not np.array_equal(np.asarray(got), expected):
        raise SystemExit(f"{name} read back different images: benchmark aborted")


def timed_store_write(name: str, path: Path, images: np.ndarray, labels: np.ndarray, **options) -> float:
    """Seconds to create the store at ``path`` and write ``images`` in one batch, open and close included."""

    def write() -> None:
        with storage.open_store(name, path, "w", **options) as store:
            store.write_batch(images, labels)

    return timed(write)[0]


def rotate(entries: list, repeat: int) -> list:
    shift = repeat % len(entries)
    return entries[shift:] + entries[:shift]


def summary(values: list[float], unit: float = 1.0, digits: int = 3) -> str:
    scaled = [v * unit for v in values]
    return f"{statistics.median(scaled):.{digits}f} [{min(scaled):.{digits}f}-{max(scaled):.{digits}f}]"


def verdict(ratio: float, limit: float) -> str:
    return f"{ratio:.2f}x (target <= {limit:g}x: {'OK' if ratio <= limit else 'MISSED'})"


def fresh(work: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=work))


# -- rows ----------------------------------------------------------------------------------


def row_write_one(source, work: Path, repeats: int) -> None:
    count = 10_000
    images, labels = take(source.images, source.labels, count)
    print(f"\nwrite_one, store kept open, {count:,} images: per image (calls only), flush at close, per image in all")
    for name in ("lmdb", "hdf5"):
        calls, closes = [], []
        for _ in range(repeats):
            folder = fresh(work)
            store = storage.open_store(name, folder / "s", "w")
            started = time.perf_counter()
            for index in range(count):
                store.write_one(images[index], labels[index])
            calls.append(time.perf_counter() - started)
            closes.append(timed(store.close)[0])
            with storage.open_store(name, folder / "s") as reader:
                check(name, reader.read_all()[0], images)
            shutil.rmtree(folder)
        total = statistics.median(c + f for c, f in zip(calls, closes)) / count
        print(
            f"  {name:<6} {summary(calls, 1e6 / count, 1)} us/image  flush {summary(closes, 1e3, 1)} ms  "
            f"in all {total * 1e6:.1f} us/image  (target <= 50 us: {'OK' if total <= 50e-6 else 'MISSED'})"
        )


def row_lmdb_write_batch(source, work: Path, repeats: int) -> None:
    count = 100_000
    images, labels = take(source.images, source.labels, count)
    samples = defaultdict(list)
    for repeat in range(repeats):
        for entry in rotate(["lmdb", "article", "raw", "raw+sync"], repeat):
            os.sync()
            folder = fresh(work)
            if entry == "lmdb":
                samples[entry].append(timed_store_write("lmdb", folder / "s", images, labels))
                with storage.open_store("lmdb", folder / "s") as store:
                    check("lmdb", store.read_all()[0], images)
            elif entry == "article":
                samples[entry].append(timed(lambda folder=folder: article_lmdb_write(images, labels, folder / "a"))[0])
                check("article LMDB", np.stack(article_lmdb_read(folder / "a", range(count))[0]), images)
            else:
                images.tofile(folder / "raw.u8")  # untimed: the first large write pays for fresh memory

                def raw(folder: Path = folder, entry: str = entry) -> None:
                    images.tofile(folder / "raw.u8")
                    if entry == "raw+sync":
                        with open(folder / "raw.u8", "rb+") as file:
                            os.fsync(file.fileno())

                samples[entry].append(timed(raw)[0])
            shutil.rmtree(folder)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(f"\nlmdb write_batch, {count:,} images (seconds; LMDB's commit syncs)")
    for key in ("lmdb", "article", "raw", "raw+sync"):
        print(f"  {key:<9} {summary(samples[key])}")
    print(f"  lmdb / article's pickled LMDB: {verdict(medians['lmdb'] / medians['article'], 0.3)}")
    print(
        f"  lmdb / raw: {medians['lmdb'] / medians['raw']:.1f}x without the final sync, "
        f"{medians['lmdb'] / medians['raw+sync']:.1f}x with it"
    )


def row_lmdb_read_one(source, work: Path, repeats: int) -> None:
    count = 100_000
    images, labels = take(source.images, source.labels, count)
    folder = fresh(work)
    with storage.open_store("lmdb", folder / "s", "w") as store:
        store.write_batch(images, labels)
    article_lmdb_write(images, labels, folder / "a")
    images.tofile(folder / "raw.u8")
    ids = np.random.default_rng(0).permutation(count)[:1000].tolist()
    samples = defaultdict(list)
    store = storage.open_store("lmdb", folder / "s")
    memmap = np.memmap(folder / "raw.u8", dtype=np.uint8, mode="r", shape=images.shape)
    env = lmdb.open(str(folder / "a"), readonly=True)

    def ours():
        return [store.read_one(i)[0] for i in ids]

    def raw():
        return [np.array(memmap[i]) for i in ids]

    def article():
        with env.begin() as txn:
            return [pickle.loads(txn.get(f"{i:08}".encode("ascii"))).get_image() for i in ids]

    for action in (ours, raw, article):  # warm the page cache and the maps
        action()
    for repeat in range(repeats * 3):
        for name, action in rotate([("lmdb", ours), ("raw memmap", raw), ("article", article)], repeat):
            seconds, got = timed(action)
            samples[name].append(seconds)
            check(name, np.stack(got), images[ids])
    store.close()
    env.close()
    shutil.rmtree(folder)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(f"\n1,000 shuffled read_one, warm, {count:,}-image stores (ms for the 1,000; {repeats * 3} repeats)")
    for key in ("lmdb", "raw memmap", "article"):
        print(f"  {key:<11} {summary(samples[key], 1e3)}")
    print(f"  lmdb / raw memmap: {verdict(medians['lmdb'] / medians['raw memmap'], 2.0)}")
    print(f"  article's LMDB / raw memmap: {medians['article'] / medians['raw memmap']:.2f}x")


def row_lmdb_read_all_evicted(source, work: Path, repeats: int) -> None:
    count = 100_000
    images, labels = take(source.images, source.labels, count)
    folder = fresh(work)
    with storage.open_store("lmdb", folder / "s", "w") as store:
        store.write_batch(images, labels)
    article_lmdb_write(images, labels, folder / "a")
    out = np.empty_like(images)
    samples = defaultdict(list)
    for repeat in range(repeats):
        for name in rotate(["lmdb", "article"], repeat):
            target = folder / ("s" if name == "lmdb" else "a")
            residency = pagecache.evict(target)
            if residency.resident_bytes:
                print(f"  warning: {residency.resident_bytes:,} bytes of {name} stayed in the page cache")
            out.fill(1)
            if name == "lmdb":
                store = storage.open_store("lmdb", target)
                samples[name].append(timed(lambda store=store: store.read_all(out=out))[0])
                store.close()
                check(name, out, images)
            else:
                seconds, (got, _) = timed(lambda target=target: article_lmdb_read(target, range(count)))
                samples[name].append(seconds)
                check(name, np.stack(got), images)
    shutil.rmtree(folder)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(f"\nlmdb read_all, {count:,} images, page cache evicted before each (seconds)")
    for key in ("lmdb", "article"):
        print(f"  {key:<8} {summary(samples[key])}")
    print(f"  lmdb / article's LMDB: {verdict(medians['lmdb'] / medians['article'], 1.0)}")


def row_hdf5_write_batch(source, work: Path, repeats: int) -> None:
    count = 100_000
    images, labels = take(source.images, source.labels, count)
    samples = defaultdict(list)
    for repeat in range(repeats):
        for entry in rotate(["hdf5", "raw"], repeat):
            os.sync()
            folder = fresh(work)
            if entry == "hdf5":
                samples[entry].append(timed_store_write("hdf5", folder / "s", images, labels))
                with storage.open_store("hdf5", folder / "s") as store:
                    check("hdf5", store.read_all()[0], images)
            else:
                images.tofile(folder / "raw.u8")  # untimed: the first large write pays for fresh memory
                samples[entry].append(timed(lambda folder=folder: images.tofile(folder / "raw.u8"))[0])
            shutil.rmtree(folder)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(f"\nhdf5 write_batch, {count:,} images, no sync in either (seconds)")
    for key in ("hdf5", "raw"):
        print(f"  {key:<5} {summary(samples[key])}")
    print(f"  hdf5 / raw: {verdict(medians['hdf5'] / medians['raw'], 1.5)}")


def row_zarr(source, work: Path, repeats: int) -> None:
    count = 10_000
    images, labels = take(source.images, source.labels, count)
    ids = np.random.default_rng(1).permutation(count)[:1000].tolist()
    out = np.empty_like(images)
    samples = defaultdict(list)
    for repeat in range(repeats):
        for name in rotate(["zarr", "hdf5-blosc", "raw"], repeat):
            folder = fresh(work)
            if name == "raw":
                images.tofile(folder / "raw.u8")
                samples[(name, "write")].append(timed(lambda folder=folder: images.tofile(folder / "raw.u8"))[0])
                out.fill(1)

                def read_raw(folder: Path = folder) -> None:
                    with open(folder / "raw.u8", "rb") as file:
                        file.readinto(memoryview(out).cast("B"))

                samples[(name, "read")].append(timed(read_raw)[0])
                check(name, out, images)
                shutil.rmtree(folder)
                continue

            samples[(name, "write")].append(timed_store_write(name, folder / "s", images, labels))
            with storage.open_store(name, folder / "s") as store:
                out.fill(1)
                samples[(name, "read")].append(timed(lambda store=store: store.read_all(out=out))[0])
                check(name, out, images)
                seconds, got = timed(lambda: [store.read_one(i)[0] for i in ids])
                samples[(name, "random")].append(seconds / len(ids))
                check(name, np.stack(got), images[ids])
            shutil.rmtree(folder)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(f"\nzarr beside hdf5-blosc, {count:,} images (write and read-all seconds, random read us each)")
    for name in ("zarr", "hdf5-blosc", "raw"):
        parts = [f"write {summary(samples[(name, 'write')])}", f"read {summary(samples[(name, 'read')])}"]
        if (name, "random") in samples:
            parts.append(f"random {summary(samples[(name, 'random')], 1e6, 0)} us")
        print(f"  {name:<10} " + "  ".join(parts))
    for operation in ("write", "read", "random"):
        ratio = medians[("zarr", operation)] / medians[("hdf5-blosc", operation)]
        print(f"  zarr / hdf5-blosc {operation}: {verdict(ratio, 3.0)}")
    for operation in ("write", "read"):
        print(f"  zarr / raw {operation}: {medians[('zarr', operation)] / medians[('raw', operation)]:.0f}x")


def row_webp(source, work: Path, repeats: int) -> None:
    count = 2_000
    images, labels = take(source.images, source.labels, count)
    defaults = storage.store_class("webp").default_options
    settings = [
        (f"webp default (quality {defaults['quality']}, method {defaults['method']})", {}),
        ("webp quality 80, method 4 (libwebp's usual)", {"quality": 80, "method": 4}),
        ("webp quality 0, method 0", {"quality": 0, "method": 0}),
    ]
    print(f"\nwebp lossless write_batch, {count:,} images (ms per image; both cores), and one-core Pillow encode alone")
    # The stores are deleted after the row, not between writes: on ext4 without a journal a new
    # file skips every inode freed in the last minute, one by one (benchmarks/file_creation.py),
    # which made each write after a deleted store pay for the deletion.
    written = []
    for label, options in settings:
        seconds = []
        for _ in range(repeats):
            folder = fresh(work)
            written.append(folder)
            seconds.append(timed_store_write("webp", folder / "s", images, labels, **options) / count)
            with storage.open_store("webp", folder / "s") as store:
                check("webp", store.read_all()[0], images)
        encode = []
        for _ in range(repeats):

            def encode_all(options: dict = options) -> None:
                for image in images[:500]:
                    Image.fromarray(image).save(
                        io.BytesIO(),
                        format="WEBP",
                        lossless=True,
                        quality=options.get("quality", defaults["quality"]),
                        method=options.get("method", defaults["method"]),
                        exact=True,
                    )

            encode.append(timed(encode_all)[0] / 500)
        per_image = statistics.median(seconds)
        print(
            f"  {label:<44} store {summary(seconds, 1e3)} ms/image ({'OK' if per_image <= 0.5e-3 else 'over'} 0.5 ms)"
            f"  encode alone {summary(encode, 1e3)} ms/image"
        )
    for folder in written:
        shutil.rmtree(folder)


def row_rss_million(source, work: Path, repeats: int) -> None:
    command = [
        sys.executable, "-m", "storage", "bench", "--backends", "lmdb,hdf5,npy", "--counts", "1000000",
        "--repeats", "1", "--ops", "write_batch,read_all", "--no-progress",
        "--db", str(work / "rss.sqlite"), "--work-dir", str(work / "runs"),
    ]  # fmt: skip
    started = time.perf_counter()
    # /usr/bin/time reports the command's own peak RSS. Measuring it from here (wait4) would not:
    # a child forked from this process keeps this process's high-water mark through exec.
    timer = [shutil.which("time") or "/usr/bin/time", "-f", "%M", "-o", str(work / "rss.kib")]
    result = subprocess.run(timer + command, cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak = int((work / "rss.kib").read_text().split()[-1]) * 1024
    print(f"\n{' '.join(command[1:9])} ...: exit {result.returncode}, {wall:.0f} s wall")
    print(f"  peak RSS of the run {peak / 1e9:.2f} GB (target < 1.5 GB: {'OK' if peak < 1.5e9 else 'MISSED'})")
    if result.returncode:
        print(result.stderr[-2000:])


def row_default_run(source, work: Path, repeats: int) -> None:
    command = [
        sys.executable, "-m", "storage", "bench", "--backends", "png,lmdb,hdf5", "--counts", "1,10,100,1000,10000",
        "--no-progress", "--db", str(work / "default.sqlite"), "--work-dir", str(work / "runs"),
    ]  # fmt: skip
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if result.returncode:
            print(result.stderr[-2000:])
    print(f"\n{' '.join(command[1:8])} (default operations): {summary(walls, 1, 1)} s wall")
    print(f"  target <= 20 s: {'OK' if statistics.median(walls) <= 20 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma list of: " + ",".join(ROWS + COMMAND_ROWS))
    parser.add_argument("--commands", action="store_true", help="also run " + " and ".join(COMMAND_ROWS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", default="auto")
    arguments = parser.parse_args()
    rows = [row.strip() for row in arguments.rows.split(",") if row.strip()]
    if arguments.commands:
        rows += [row for row in COMMAND_ROWS if row not in rows]
    unknown = sorted(set(rows) - set(ROWS + COMMAND_ROWS))
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}")
    source = load_source(arguments.source)
    work = REPO_ROOT / "data" / "bench-article-vs"
    work.mkdir(parents=True, exist_ok=True)
    print(f"{source.description}; {os.cpu_count()} cores; medians of {arguments.repeats} with [min-max]")
    try:
        for row in rows:
            globals()[f"row_{row}"](source, work, arguments.repeats)
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
