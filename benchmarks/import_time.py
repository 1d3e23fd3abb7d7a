"""How long ``import storage`` and ``python -m storage --help`` take, in fresh interpreters.

``import storage`` is timed inside the interpreter (perf_counter around the import), so
the interpreter's own start-up is not counted; ``--help`` is timed as a whole command
(what a user waits for), beside a bare ``python -c pass`` in the same run. Both print the
median and range of ``--repeats`` runs.

    python benchmarks/import_time.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TIME_IMPORT = "import time; t = time.perf_counter(); import storage; print(time.perf_counter() - t)"


def inside(code: str) -> float:
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return float(output.stdout.strip())


def whole(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, check=True)
    return time.perf_counter() - start


def summary(label: str, seconds: list[float]) -> str:
    return f"{label:<34} {statistics.median(seconds):7.3f} s  [{min(seconds):.3f}-{max(seconds):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    rows = {
        "import storage (in-process)": [inside(TIME_IMPORT) for _ in range(repeats)],
        "python -c pass (whole command)": [whole("-c", "pass") for _ in range(repeats)],
        "python -m storage --help (whole)": [whole("-m", "storage", "--help") for _ in range(repeats)],
    }
    print(f"median [min-max] of {repeats} fresh interpreters")
    for label, seconds in rows.items():
        print(summary(label, seconds))


if __name__ == "__main__":
    main()
