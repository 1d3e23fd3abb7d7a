"""Real photos at scale: every kept-bytes backend against a bare parallel copy of the same files.

Builds a folder of ``--count`` photos (default 100,000) in the ImageFolder layout from the
578 real ImageNet photos of ``../shared/data/imagenet-sample``, cycled: each copy is a
file of its own with a JPEG comment naming it, so its bytes are unique and its pixels the
photo's (11 GB on disk; ``--hard-links`` makes hard links to one file per photo instead,
whose repeated bytes Parquet and Lance store once). Then, for
each backend and for each resizing (as the photos are, and ``--shorter-side 256``), in a
fresh process each:

* ``python -m storage convert FOLDER --to BACKEND DEST --keep-encoded [--shorter-side 256]``,
  the command a user runs: its wall time (images/s) and peak RSS (``wait4``);
* the store's allocated bytes per image and their ratio to the source files;
* read-all (every image decoded, in ``read_batch`` slices of ``READ_SLICE``) in images/s and
  1,000 seeded random ``read_one`` (decoded) in images/s, in a reader process of its own;
  its peak RSS too.

The ceiling for conversion speed is a bare parallel copy of the same files (one process
per core, ``shutil.copyfile`` into folders of 1,000), timed the same way. Each store is
deleted before the next is written. Prints one table, the targets of the issue beside
the figures, and the load average before and after.

    python benchmarks/photos.py [--count 100000] [--backends lmdb,hdf5,...] [--dir data/photos-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample"
KEPT_BYTES_BACKENDS = "lmdb,hdf5,npy,webdataset,parquet,lance,litdata,mds"
SIZE_TARGET = 1.03  # kept-bytes stores of lmdb, hdf5, npy, webdataset, against the files
SIZE_TARGET_BACKENDS = ("lmdb", "hdf5", "npy", "webdataset")
COPY_TARGET = 0.5  # conversion with kept bytes, against the bare parallel copy
RSS_TARGET_BYTES = 1.5 * 2**30
RANDOM_READS = 1_000
READ_SLICE = 32  # the folder cycles each photo ~170 times in a row: 256 copies of a 2400x1600 one decode to 2.9 GB
FILES_PER_FOLDER = 1_000


def unique_copy(data: bytes, index: int) -> bytes:
    """The JPEG ``data`` with a comment segment naming copy ``index`` after its start marker: other bytes, same pixels."""
    if data[:2] != b"\xff\xd8":
        raise SystemExit("the photos must be JPEG files to be made unique (a comment segment is added to each copy)")
    comment = f"copy {index:07d}".encode()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def build_folder(source: Path, destination: Path, count: int, unique: bool) -> int:
    """``count`` photos in ``destination/<synset>/`` cycling through ``source``'s; their bytes.

    With ``unique``, each copy is a file of its own whose bytes differ (a JPEG comment with
    its index), so no format can store the repeats once: Parquet and Lance stored the
    hard-linked folder at 1.6 % and 0.8 % of its bytes. Without it, the copies are hard links
    to one file per photo, which costs inodes, not 11 GB.
    """
    originals = sorted(path for path in source.glob("*/*") if path.is_file())
    if not originals:
        raise SystemExit(f"no photos in {source}")
    marker = destination / f".complete-{count}{'-unique' if unique else ''}"
    copies = destination.parent / (destination.name + "-originals")
    if not marker.exists():
        shutil.rmtree(destination, ignore_errors=True)
        shutil.rmtree(copies, ignore_errors=True)
        copies.mkdir(parents=True)
        local = []
        for path in originals:  # hard links need the same file system as the folder
            target = copies / path.parent.name / path.name
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, target)
            local.append(target)
        contents = [path.read_bytes() for path in local] if unique else []
        for index in range(count):
            original = local[index % len(local)]
            folder = destination / original.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{index:07d}_{original.name}"
            if unique:
                target.write_bytes(unique_copy(contents[index % len(local)], index))
            else:
                os.link(original, target)
        marker.touch()
    return sum(path.stat().st_size for path in destination.glob("*/*"))


def _copy_part(pairs: list[tuple[str, str]]) -> None:
    for source, target in pairs:
        shutil.copyfile(source, target)


def bare_copy(folder: Path, destination: Path) -> float:
    """Seconds for a parallel copy of every file of ``folder`` into ``destination`` (the ceiling)."""
    shutil.rmtree(destination, ignore_errors=True)
    files = sorted(str(path) for path in folder.glob("*/*"))
    targets = []
    for index in range(0, len(files), FILES_PER_FOLDER):
        subfolder = destination / f"{index // FILES_PER_FOLDER:05d}"
        subfolder.mkdir(parents=True)
        targets.extend(str(subfolder / f"{i:07d}.jpg") for i in range(index, min(index + FILES_PER_FOLDER, len(files))))
    workers = max(1, len(os.sched_getaffinity(0)))
    parts = [list(zip(files[i::workers], targets[i::workers])) for i in range(workers)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_copy_part, parts))
    os.sync()
    seconds = time.perf_counter() - started
    shutil.rmtree(destination)
    return seconds


def tree_memory(process) -> tuple[int, int]:
    """Bytes of ``process`` and every process under it (the command and its workers), now: RSS and PSS summed.

    An RSS counts every page a process maps, so pages that forked workers share with their
    parent (the interpreter, imported libraries) count once in each; PSS splits each shared
    page between the processes that map it, so the tree's PSS counts every page once.
    """
    import psutil

    rss = pss = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            rss += member.memory_info().rss
            pss += proportional_set_size(member.pid)
        except (psutil.Error, OSError):  # a worker that just ended
            pass
    return rss, pss


def proportional_set_size(pid: int) -> int:
    """The PSS of process ``pid`` in bytes, from ``/proc/PID/smaps_rollup``; 0 where the kernel does not say."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def run_measured(command: list[str]) -> tuple[float, int, int, int, str]:
    """Wall seconds, peak RSS of the command alone (``wait4``), the peak RSS and PSS of its process tree, its stdout.

    The tree's peaks are sampled every 50 ms (sums over the command and its worker
    processes, which ``wait4``'s figure, a maximum over them, does not add up).
    """
    import tempfile
    import threading

    import psutil

    with tempfile.TemporaryFile("w+") as errors, tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=errors, text=True, cwd=REPO)
        peak, done = [0, 0], threading.Event()

        def sample() -> None:
            watched = psutil.Process(process.pid)
            while not done.wait(0.05):
                try:
                    rss, pss = tree_memory(watched)
                except psutil.Error:
                    return
                peak[:] = max(peak[0], rss), max(peak[1], pss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{errors.read()[-3000:]}")
        output.seek(0)
        out = output.read()
    alone = usage.ru_maxrss * 1024
    return seconds, alone, max(peak[0], alone), peak[1], out


def read_figures(backend: str, store: str) -> dict:
    """In this (child) process: read-all and random-read rates of the store, decoded."""
    import numpy as np

    import storage

    with storage.open_store(backend, store) as opened:
        count = len(opened)
        step = READ_SLICE  # decoded photos per read_batch: 32 of the sample's largest are 368 MB
        started = time.perf_counter()
        for start in range(0, count, step):
            opened.read_batch(np.arange(start, min(start + step, count)))
        read_all = time.perf_counter() - started
        ids = np.random.default_rng(0).permutation(count)[:RANDOM_READS].tolist()
        started = time.perf_counter()
        for image_id in ids:
            opened.read_one(image_id)
        random_reads = time.perf_counter() - started
        allocated = opened.disk_usage().allocated_bytes
    return {"count": count, "read_all_s": read_all, "random_s": random_reads, "reads": len(ids), "allocated": allocated}


def measure_backend(backend: str, folder: Path, store: Path, shorter_side: int | None) -> dict:
    """Convert (the CLI, a fresh process) and read back (another); the store is deleted after."""
    shutil.rmtree(store, ignore_errors=True)
    command = [sys.executable, "-m", "storage", "convert", str(folder), "--to", backend, str(store), "--keep-encoded"]
    command += ["--no-progress"] + (["--shorter-side", str(shorter_side)] if shorter_side else [])
    convert_seconds, convert_rss, convert_tree_rss, convert_tree_pss, printed = run_measured(command)
    written = re.search(r" in ([0-9.]+) s \(", printed)  # convert's own time for the write, verification apart
    reader = [sys.executable, __file__, "--read", backend, str(store)]
    _, read_rss, read_tree_rss, read_tree_pss, out = run_measured(reader)
    shutil.rmtree(store, ignore_errors=True)
    write_seconds = float(written.group(1)) if written else convert_seconds
    return {
        "convert_s": convert_seconds,
        "write_s": write_seconds,
        "convert_rss": convert_rss,
        "read_rss": read_rss,
        "convert_tree_rss": convert_tree_rss,
        "read_tree_rss": read_tree_rss,
        "convert_tree_pss": convert_tree_pss,
        "read_tree_pss": read_tree_pss,
        **json.loads(out),
    }


def _row(label: str, figures: dict, source_bytes: int, copy_seconds: float) -> str:
    count = figures["count"]
    ratio = figures["allocated"] / source_bytes
    copy_ratio = copy_seconds / figures["write_s"]
    return (
        f"{label:<22} {count / figures['write_s']:>9,.0f} {copy_ratio:>7.2f}x {figures['convert_s']:>8.1f} {figures['allocated'] / count:>10,.0f}"
        f" {ratio:>6.3f}x {count / figures['read_all_s']:>9,.0f} {figures['reads'] / figures['random_s']:>9,.0f}"
        f" {figures['convert_rss'] / 2**20:>8,.0f} {figures['read_rss'] / 2**20:>8,.0f}"
        f" {figures['convert_tree_rss'] / 2**20:>8,.0f} {figures['read_tree_rss'] / 2**20:>8,.0f}"
        f" {figures['convert_tree_pss'] / 2**20:>8,.0f} {figures['read_tree_pss'] / 2**20:>8,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--backends", default=KEPT_BYTES_BACKENDS)
    parser.add_argument("--source", type=Path, default=SHARED_PHOTOS)
    parser.add_argument("--dir", type=Path, default=REPO / "data" / "photos-bench")
    parser.add_argument("--sides", default="none,256", help="resizings: none and/or shorter-side values")
    parser.add_argument(
        "--hard-links",
        dest="unique",
        action="store_false",
        help="copies as hard links to one file per photo (repeated bytes, which Parquet and Lance store once)",
    )
    parser.add_argument("--read", nargs=2, metavar=("BACKEND", "STORE"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.read:
        print(json.dumps(read_figures(*arguments.read)))
        return
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    folder = arguments.dir / f"photos-{arguments.count}{'-unique' if arguments.unique else ''}"
    source_bytes = build_folder(arguments.source, folder, arguments.count, arguments.unique)
    kind = "each copy's bytes unique" if arguments.unique else "copies hard-linked"
    print(
        f"{arguments.count:,} photos cycled from {arguments.source} ({kind}): {source_bytes / 1e9:.2f} GB of JPEG files"
    )
    copy_seconds = bare_copy(folder, arguments.dir / "bare-copy")
    print(f"bare parallel copy: {copy_seconds:.1f} s ({arguments.count / copy_seconds:,.0f} files/s), the ceiling")
    header = f"{'backend':<22} {'write/s':>9} {'vs copy':>8} {'whole s':>8} {'B/image':>10} {'xfiles':>7} {'readall/s':>9} {'random/s':>9} {'conv MB':>8} {'read MB':>8} {'conv+w':>8} {'read+w':>8} {'conv PSS':>8} {'read PSS':>8}"
    print(header + "\n" + "-" * len(header))
    missed = []
    for side in arguments.sides.split(","):
        shorter = None if side == "none" else int(side)
        for backend in arguments.backends.split(","):
            figures = measure_backend(backend, folder, arguments.dir / "store", shorter)
            label = backend + ("" if shorter is None else f" (shorter {shorter})")
            print(_row(label, figures, source_bytes, copy_seconds), flush=True)
            ratio = figures["allocated"] / source_bytes
            if shorter is None and backend in SIZE_TARGET_BACKENDS and ratio > SIZE_TARGET:
                missed.append(f"{label}: {ratio:.3f}x the files (target <= {SIZE_TARGET}x)")
            if shorter is None and copy_seconds / figures["write_s"] < COPY_TARGET:
                missed.append(
                    f"{label}: conversion {copy_seconds / figures['write_s']:.2f}x the copy (target >= {COPY_TARGET}x)"
                )
            for step in ("convert", "read"):  # the memory the command takes, its workers' shared pages counted once
                if figures[f"{step}_tree_pss"] > RSS_TARGET_BYTES:
                    missed.append(f"{label}: {step}'s peak memory (PSS, with its workers) above 1.5 GB")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    print("write/s: images/s of the write `convert --keep-encoded` reports; vs copy: the copy's time / the write's;"
          " whole s: the whole command (start-up, listing the folder, the write, reading 1,000 images back to check them);"
          " xfiles: allocated bytes / the files' bytes; readall/s, random/s: decoded images/s; conv MB, read MB:"
          " peak RSS of the converter and of the reader, each process alone (wait4); conv+w, read+w: the same with their"
          " worker processes added up (sampled every 50 ms), which counts the pages a worker shares with its parent"
          " once in each; conv PSS, read PSS: the same sum of each process's PSS, every page counted once (the"
          " memory target's figure); an RSS counts the pages of a memory-mapped store the process has touched and"
          " not yet unmapped)")  # fmt: skip


if __name__ == "__main__":
    main()
