"""What a benchmark's own deletions cost the next write of a many-file store, side by side.

Each repeat writes ``--files`` small files (2,300 bytes, PNG-sized, 1,000 per folder, as
the png backend does) in two ways:

* ``same place``: in the folder the previous repeat's files were just deleted from, as
  the engine did before ``storage.bench.placement`` (delete ``store``, write ``store``);
* ``new folder``: in a new folder of its own, the previous repeats' files kept until the
  end, in a run folder made in a top-of-hierarchy folder, as the engine does now.

It prints the file system, each repeat's seconds, the medians and their ratio. On ext4
without a journal the first is many times slower than the second: the allocator checks
every inode freed in the last minute, one by one, before each new file. On a journaled
ext4, XFS or tmpfs the two should be about equal.

    python benchmarks/file_creation.py --files 10000 --repeats 5 [--dir data/runs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.bench.placement import (  # noqa: E402
    RetiredStores,
    delete_files,
    fresh_store_path,
    new_run_id,
    remove_spent_run_folders,
    spread_folder,
)

FILE_BYTES = 2_300
FILES_PER_FOLDER = 1_000


def write_files(folder: Path, count: int, payload: bytes) -> float:
    """Seconds to create ``count`` files of ``payload`` in subfolders of ``folder``."""
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for index in range(count):
        subfolder = folder / f"{index // FILES_PER_FOLDER:04d}"
        if index % FILES_PER_FOLDER == 0:
            subfolder.mkdir()
        with open(subfolder / f"{index:07d}.png", "wb") as file:
            file.write(payload)
    return time.perf_counter() - started


def file_system_of(path: Path) -> str:
    """The mount's type and, for ext4, whether it has a journal (from /proc; "unknown" elsewhere)."""
    try:
        device = os.stat(path).st_dev
        with open("/proc/self/mountinfo") as mounts:
            for line in mounts:
                fields = line.split()
                major, minor = (int(part) for part in fields[2].split(":"))
                if os.makedev(major, minor) == device:
                    kind, source = fields[fields.index("-") + 1], fields[fields.index("-") + 2]
                    if kind == "ext4":
                        name = os.path.basename(source)
                        journal = any(entry.startswith(name) for entry in os.listdir("/proc/fs/jbd2"))
                        return f"ext4 on {source}, {'with' if journal else 'without'} a journal"
                    return f"{kind} on {source}"
    except (OSError, ValueError, StopIteration):
        pass
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default="data/runs", help="where to write (a folder on the disk to measure)")
    args = parser.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    payload = os.urandom(FILE_BYTES)
    work = spread_folder(Path(args.dir))
    remove_spent_run_folders(work)
    root = work / new_run_id()  # a run's folder, its folders left at the end as the engine leaves them
    root.mkdir()
    try:
        same, new_run = root / "same", root / "run"
        new_run.mkdir()
        kept = RetiredStores(budget_bytes=2**62)
        same_place, new_folder = [], []
        for _ in range(args.repeats):
            shutil.rmtree(same / "store", ignore_errors=True)
            same_place.append(write_files(same / "store", args.files, payload))
            path = fresh_store_path(new_run, "store")
            new_folder.append(write_files(path, args.files, payload))
            kept.retire(path, 0)
        kept.delete_all()
    finally:
        delete_files(root)
    print(f"{args.files:,} files of {FILE_BYTES:,} bytes per repeat in {Path(args.dir).resolve()}")
    print(f"file system: {file_system_of(Path(args.dir))}")
    for label, seconds in (("same place, after deleting", same_place), ("new folder, nothing deleted", new_folder)):
        runs = " ".join(f"{value:.2f}" for value in seconds)
        median = statistics.median(seconds)
        print(f"{label:<28} median {median:6.2f} s  {median / args.files * 1e6:7.0f} µs/file   [{runs}]")
    print(f"same place / new folder: {statistics.median(same_place) / statistics.median(new_folder):.1f}x")


if __name__ == "__main__":
    main()
