"""Does watching a run on the dashboard change its numbers? The same run from the CLI and from a watched tab.

One script, one after the other, the same settings (png, lmdb and hdf5; 1 ... 10,000 images,
compared at 1,000 and 10,000; write a batch, read all, read random ids; warm cache; 3 repeats by default):

1. ``python -m storage bench`` in a child process, nothing watching;
2. the dashboard (``streamlit run app.py``) in headless Chromium: the Run page is opened
   with the same settings, "Run benchmark" pressed, and the tab kept open on the run, its
   charts redrawn live, until the run has finished.

Each run goes into its own results database. It prints, per format, count and operation,
the two medians and their ratio (dashboard / CLI), and each measurement's own record of
how busy the machine was (the load average and the CPU other processes took while it was
timed; ``!`` marks a measurement the run itself flagged as disturbed). The target: every
ratio within 0.85-1.15. ``--rounds 2`` runs CLI, dashboard, CLI, dashboard and takes the
median of each side's medians, which evens out a machine whose load drifts. With 2 rounds or
more it also prints the CLI against itself (its odd rounds against its even rounds): the
noise of this machine at these repeats, which no watched run can be held closer than.

    python benchmarks/watched_vs_cli.py                  # ~2-4 min on two cores
    python benchmarks/watched_vs_cli.py --counts 1000 --repeats 3 --rounds 2

Exit code 0 when every ratio is within the target, 1 when one is not, 2 when a run failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from dashboard.state import counts_for  # noqa: E402
from storage.bench import ResultsDB  # noqa: E402

BACKENDS = ["png", "lmdb", "hdf5"]
OPERATIONS = ["write_batch", "read_all", "read_random"]
TARGET = 0.15  # a watched run's medians within ±15 % of the CLI's
CHROMIUM = Path("/usr/bin/chromium")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,10000", help="comma list of image counts (default 1000,10000)")
    parser.add_argument("--repeats", type=int, default=3, help="recorded repeats of each measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="CLI and dashboard runs each, alternated (default 1)")
    parser.add_argument("--source", default="auto", help="sample, cifar10 or auto (default)")
    args = parser.parse_args(argv)
    args.counts = sorted(int(text) for text in args.counts.split(",") if text.strip())
    if args.repeats < 1 or args.rounds < 1 or not args.counts:
        parser.error("--repeats and --rounds must be positive, --counts not empty")
    # The Run page measures every power of ten up to its slider's count: the CLI gets the same list.
    args.all_counts = counts_for(args.counts[0], args.counts[1:])
    return args


def run_cli(args: argparse.Namespace, folder: Path) -> Path:
    """One CLI run with nothing watching; its results database."""
    db = folder / "results.sqlite"
    command = [
        sys.executable, "-m", "storage", "bench", "--db", str(db), "--work-dir", str(folder / "runs"),
        "--backends", ",".join(BACKENDS), "--counts", ",".join(map(str, args.all_counts)),
        "--ops", ",".join(OPERATIONS), "--repeats", str(args.repeats), "--source", args.source, "--no-progress",
    ]  # fmt: skip
    subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return db


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"streamlit did not answer within {timeout} s")


def run_dashboard(args: argparse.Namespace, folder: Path) -> Path:
    """One run started from the Run page and watched in a headless Chromium tab until it ends; its database."""
    from playwright.sync_api import sync_playwright

    db = folder / "results.sqlite"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    environment = dict(os.environ, IMAGE_STORAGE_LAB_DB=str(db), IMAGE_STORAGE_LAB_RUNS=str(folder / "runs"))
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.port", str(port), "--server.address", "127.0.0.1",
    ]  # fmt: skip
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_healthy(url, server)
        counts = sorted(args.counts)
        query = (
            f"formats={','.join(BACKENDS)}&max_count={counts[0]}&counts={','.join(map(str, counts[1:]))}"
            f"&ops={','.join(OPERATIONS)}&repeats={args.repeats}&source={args.source}"
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/Run?{query}", timeout=90_000)
                button = page.get_by_role("button", name="Run benchmark")
                button.wait_for(timeout=90_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('button')].some(b => b.innerText.includes('Run benchmark')"
                    " && !b.disabled)",
                    timeout=60_000,
                )
                button.click()
                page.wait_for_url("**run=*", timeout=30_000)
                page.get_by_text(" finished in ").wait_for(timeout=1_800_000)  # the tab watched it all along
            finally:
                browser.close()
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
    return db


def medians(db: Path, counts: list[int]) -> dict[tuple[str, int, str], tuple[float, dict]]:
    """(backend, count, operation) -> (median seconds, machine_load) of the one run in ``db``, at ``counts``."""
    with ResultsDB(db) as results:
        (run,) = results.list_runs()
        if run.status != "finished":
            raise RuntimeError(f"run {run.id} {run.status}: {run.error}")
        return {
            (m.backend, m.count, m.operation): (m.seconds_median, m.machine_load or {})
            for m in results.measurements(run.id)
            if m.seconds_median and m.count in counts
        }


def _load(machine_load: dict) -> str:
    flag = "!" if machine_load.get("disturbed") else " "
    load = machine_load.get("load_average")
    others = machine_load.get("other_cores")
    return f"{flag}{load if load is not None else '-':>5} {others if others is not None else '-':>5}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not CHROMIUM.exists():
        print(f"needs Debian's chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    cli_runs, dashboard_runs = [], []
    with tempfile.TemporaryDirectory(prefix="watched-vs-cli-") as scratch:
        try:
            for round_number in range(args.rounds):
                for name, runner, runs in (("cli", run_cli, cli_runs), ("dashboard", run_dashboard, dashboard_runs)):
                    folder = Path(scratch) / f"{name}-{round_number}"
                    folder.mkdir()
                    began = time.monotonic()
                    runs.append(medians(runner(args, folder), args.counts))
                    load = os.getloadavg()[0]
                    print(f"round {round_number + 1}: {name} run in {time.monotonic() - began:.0f} s (load {load:.1f})")
        except (RuntimeError, subprocess.CalledProcessError) as error:
            print(f"a run failed: {error}", file=sys.stderr)
            return 2
    keys = sorted(set(cli_runs[0]) & set(dashboard_runs[0]), key=lambda k: (k[1], BACKENDS.index(k[0]), k[2]))
    print(
        f"\nmedians of {args.repeats} repeats, {args.rounds} round(s); load: 1-min load average, other processes' cores"
    )
    print(
        f"{'backend':8} {'images':>7} {'operation':12} {'CLI':>10} {'watched':>10} {'ratio':>6} {'CLI/CLI':>7}"
        "   CLI load     watched load"
    )
    outside, cli_outside, ratios = [], [], []
    for key in keys:
        cli = _median_of(cli_runs, key)
        ratio = _median_of(dashboard_runs, key) / cli
        itself = _median_of(cli_runs[0::2], key) / _median_of(cli_runs[1::2], key) if len(cli_runs) > 1 else None
        mark = "" if abs(ratio - 1) <= TARGET else "  <- outside ±15 %"
        outside += [key] if mark else []
        cli_outside += [key] if itself is not None and abs(itself - 1) > TARGET else []
        ratios.append(ratio)
        backend, count, operation = key
        print(
            f"{backend:8} {count:>7,} {operation:12} {cli * 1e3:>8.2f}ms {ratio * cli * 1e3:>8.2f}ms {ratio:>6.2f} "
            f"{'-' if itself is None else f'{itself:.2f}':>7}   "
            f"{_load(cli_runs[-1][key][1])}  {_load(dashboard_runs[-1][key][1])}{mark}"
        )
    print(f"\nmedian ratio watched / CLI: {statistics.median(ratios):.2f}; {len(outside)} of {len(keys)} outside ±15 %")
    if len(cli_runs) > 1:
        print(f"the CLI against itself (odd rounds / even rounds): {len(cli_outside)} of {len(keys)} outside ±15 %")
    return 1 if outside else 0


def _median_of(runs: list[dict], key: tuple[str, int, str]) -> float:
    return statistics.median(run[key][0] for run in runs if key in run)


if __name__ == "__main__":
    sys.exit(main())
