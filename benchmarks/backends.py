"""Every registered backend beside the raw NumPy ceiling, measured side by side in one run.

    python benchmarks/backends.py                       # 10,000 and 100,000 CIFAR images, 3 repeats
    python benchmarks/backends.py --counts 1000 --repeats 5 --backends png,lmdb,hdf5

For each count and repeat, in a rotating order so that no backend always runs first: the
raw ceiling (``ndarray.tofile`` / ``readinto``), each backend's ``write_batch`` (open, write,
close: LMDB's commit syncs, the others leave data in the page cache, as ``tofile`` does) and
``read_all`` into a buffer allocated and touched before the timer (see BENCHMARKING.md:
first-touch page faults would otherwise be measured as storage time). For ``png`` it also
times the plain single-threaded Pillow loop (``Image.save`` / ``Image.open`` per file) over
the same images. The raw write is timed on its second write of the same file: on these VMs
a large write after a pause first pays about 1 s per 300 MB for fresh memory, which would make
the ceiling 10x too slow. Medians of the
repeats are printed with their min-max spread, and every ratio compares numbers measured in
the same run. Warm page cache throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storage  # noqa: E402
from storage.datasets import load_source, take  # noqa: E402

TARGETS = {
    ("hdf5", "write"): ("raw", 2.0),
    ("hdf5", "read"): ("raw", 2.0),
    ("lmdb", "read"): ("raw", 3.0),
}
PNG_LOOP_SPEEDUP_TARGET = 1.8


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def raw_write(images: np.ndarray, folder: Path) -> float:
    return timed(lambda: images.tofile(folder / "images.u8"))


def raw_read(folder: Path, out: np.ndarray) -> float:
    def read() -> None:
        with open(folder / "images.u8", "rb") as file:
            file.readinto(memoryview(out).cast("B"))

    return timed(read)


def backend_write(name: str, images: np.ndarray, labels: np.ndarray, folder: Path) -> float:
    def write() -> None:
        with storage.open_store(name, folder / name, "w") as store:
            store.write_batch(images, labels)

    return timed(write)


def backend_read(name: str, folder: Path, out: np.ndarray) -> float:
    with storage.open_store(name, folder / name) as store:
        return timed(lambda: store.read_all(out=out))


def pillow_loop_write(images: np.ndarray, folder: Path) -> float:
    """The article's way: one ``Image.save`` per image, in one thread."""
    target = folder / "loop"
    target.mkdir()

    def write() -> None:
        for index, image in enumerate(images):
            Image.fromarray(image).save(target / f"{index}.png")

    return timed(write)


def pillow_loop_read(folder: Path, out: np.ndarray) -> float:
    target = folder / "loop"

    def read() -> None:
        for index in range(len(out)):
            out[index] = np.asarray(Image.open(target / f"{index}.png"))

    return timed(read)


def run_count(count: int, names: list[str], repeats: int, work: Path, source) -> dict:
    images, labels = take(source.images, source.labels, count)
    images = np.ascontiguousarray(images)
    out = np.empty_like(images)
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    order = ["raw", *names] + (["png-loop"] if "png" in names else [])
    for repeat in range(repeats):
        rotated = order[repeat % len(order) :] + order[: repeat % len(order)]
        for entry in rotated:
            os.sync()  # no writeback left over from the previous entry runs under this one's timer
            folder = Path(tempfile.mkdtemp(dir=work))
            out.fill(1)  # touch the output buffer before every timed read
            if entry == "raw":
                raw_write(images, folder)  # untimed: a large write after a pause first pays for fresh memory
                samples[("raw", "write")].append(raw_write(images, folder))
                samples[("raw", "read")].append(raw_read(folder, out))
            elif entry == "png-loop":
                samples[("png-loop", "write")].append(pillow_loop_write(images, folder))
                samples[("png-loop", "read")].append(pillow_loop_read(folder, out))
            else:
                samples[(entry, "write")].append(backend_write(entry, images, labels, folder))
                samples[(entry, "read")].append(backend_read(entry, folder, out))
                lossless = storage.backend_info(entry).lossless  # lossy ones are verified by the engine (PSNR)
                if lossless and not np.array_equal(out, images):
                    raise SystemExit(f"{entry} read back different images at {count}: benchmark aborted")
            shutil.rmtree(folder)
            print(f"  {count:>7,} {entry:<12} repeat {repeat + 1}/{repeats} done", file=sys.stderr, flush=True)
    return {key: values for key, values in samples.items()}


def summarize(values: list[float]) -> str:
    return f"{statistics.median(values):8.3f} [{min(values):.3f}-{max(values):.3f}]"


def print_table(count: int, samples: dict) -> list[dict]:
    raw = {op: statistics.median(samples[("raw", op)]) for op in ("write", "read")}
    loop = {op: statistics.median(samples[("png-loop", op)]) for op in ("write", "read") if ("png-loop", op) in samples}
    print(f"\n{count:,} images (median [min-max] seconds; ratio = median / raw median, same run)")
    print(f"{'backend':<12} {'write s':>24} {'x raw':>7} {'read s':>24} {'x raw':>7}  notes")
    rows = []
    names = sorted({name for name, _ in samples}, key=lambda n: (n != "raw", n))
    for name in names:
        write, read = samples[(name, "write")], samples[(name, "read")]
        ratios = {op: statistics.median(samples[(name, op)]) / raw[op] for op in ("write", "read")}
        notes = []
        for op in ("write", "read"):
            if (name, op) in TARGETS:
                limit = TARGETS[(name, op)][1]
                notes.append(f"{op} {'OK' if ratios[op] <= limit else 'MISSED'} (target <= {limit}x raw)")
        if name == "png" and loop:
            for op in ("write", "read"):
                speedup = loop[op] / statistics.median(samples[("png", op)])
                verdict = "OK" if speedup >= PNG_LOOP_SPEEDUP_TARGET else "MISSED"
                notes.append(
                    f"{op} {speedup:.2f}x faster than Pillow loop {verdict} (target >= {PNG_LOOP_SPEEDUP_TARGET}x)"
                )
        print(
            f"{name:<12} {summarize(write)} {ratios['write']:7.1f} {summarize(read)} {ratios['read']:7.1f}  {'; '.join(notes)}"
        )
        rows.append(
            {
                "backend": name,
                "count": count,
                "write_seconds": write,
                "read_seconds": read,
                **{f"{op}_x_raw": r for op, r in ratios.items()},
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default=",".join(storage.backends()))
    parser.add_argument("--source", default="auto", help="auto, sample, cifar10 or a folder")
    parser.add_argument("--json", help="also write every sample to this file")
    arguments = parser.parse_args()
    names = [name.strip() for name in arguments.backends.split(",") if name.strip()]
    for name in names:
        storage.backend_info(name)
    source = load_source(arguments.source)
    work = Path("data") / "bench-backends"
    work.mkdir(parents=True, exist_ok=True)
    print(f"{source.description}; {platform.platform()}; {os.cpu_count()} cores; Python {platform.python_version()}")
    rows = []
    try:
        for count in (int(c) for c in arguments.counts.split(",")):
            rows += print_table(count, run_count(count, names, arguments.repeats, work, source))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
