"""Worker processes: the shared pool (results in order, replaced when its start-up was interrupted) and the cached process id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import process as process_module
from pathlib import Path

import pytest

from storage import parallel

REPO_ROOT = Path(__file__).resolve().parents[1]

needs_two_cores = pytest.mark.skipif(parallel.worker_count() < 2, reason="the pool is used with two cores or more")


def _pid_and_square(number: int) -> tuple[int, int]:
    return os.getpid(), number * number


@needs_two_cores
def test_tasks_run_in_worker_processes_and_come_back_in_order() -> None:
    results = parallel.run_tasks(_pid_and_square, [(number,) for number in range(8)])
    assert [square for _, square in results] == [number * number for number in range(8)]
    assert os.getpid() not in {pid for pid, _ in results}


@needs_two_cores
def test_an_interrupt_during_the_pools_start_up_does_not_leave_a_pool_that_never_runs(monkeypatch) -> None:
    # Ctrl+C between starting the workers and starting the pool's manager thread left a
    # pool that accepted tasks and never ran them: the next call waited forever.
    parallel._pool = None
    start_manager = ProcessPoolExecutor._start_executor_manager_thread
    broken_workers = []

    def interrupted_before_the_manager_thread_starts(pool: ProcessPoolExecutor) -> None:
        pool._launch_processes()
        broken_workers.extend(pool._processes.values())
        pool._executor_manager_thread = process_module._ExecutorManagerThread(pool)
        raise KeyboardInterrupt  # where the signal landed in a command line run that then hung

    monkeypatch.setattr(
        ProcessPoolExecutor, "_start_executor_manager_thread", interrupted_before_the_manager_thread_starts
    )
    with pytest.raises(KeyboardInterrupt):
        parallel.run_tasks(_pid_and_square, [(2,), (3,)])
    assert parallel._pool is None  # dropped, so the next call starts a new pool
    for worker in broken_workers:
        worker.join(timeout=10)
    assert broken_workers and not any(worker.is_alive() for worker in broken_workers)
    monkeypatch.setattr(ProcessPoolExecutor, "_start_executor_manager_thread", start_manager)
    signal.signal(signal.SIGALRM, _took_too_long)
    signal.alarm(30)
    try:
        assert [square for _, square in parallel.run_tasks(_pid_and_square, [(2,), (3,)])] == [4, 9]
    finally:
        signal.alarm(0)


def _took_too_long(signum, frame) -> None:
    raise TimeoutError("run_tasks hung on a pool whose start-up was interrupted")


def test_the_cached_process_id_is_the_childs_after_fork() -> None:
    from storage.base import current_pid

    assert current_pid() == os.getpid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: answer through the pipe, never return into pytest
        try:
            os.write(write_end, b"1" if current_pid() == os.getpid() != os.getppid() else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.waitpid(pid, 0)
    os.close(read_end)
    assert answer == b"1"


KILLED_PARENT = """
import os, signal
from storage import parallel

def worker_pid(_):
    return os.getpid()

print(*set(parallel.run_tasks(worker_pid, [(n,) for n in range(8)])), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process that nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@needs_two_cores
def test_workers_exit_when_their_parent_is_killed_outright() -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILLED_PARENT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    worker_pids = [int(pid) for pid in child.stdout.split()]
    assert len(worker_pids) >= 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in worker_pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in worker_pids), "workers outlived their killed parent"


def _open_regular_files() -> int:
    return sum(1 for name in os.listdir("/proc/self/fd") if int(name) > 2 and _is_regular_file(int(name)))


def _is_regular_file(descriptor: int) -> bool:
    try:
        return (os.fstat(descriptor).st_mode & 0o170000) == 0o100000
    except OSError:
        return False


@needs_two_cores
def test_a_pool_forked_while_an_hdf5_store_is_open_does_not_keep_its_lock(tmp_path) -> None:
    # HDF5 locks its file with flock, which a forked child shares: a pool started while a
    # store was being written kept the lock after the store was closed, and reopening the
    # store failed with "unable to lock file".
    import numpy as np

    import storage

    parallel._discard(parallel.process_pool())  # the next task forks a new pool, below, with the file open
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with storage.open_store("hdf5", tmp_path / "store", "w") as store:
        store.write_batch(images, [0, 1, 2, 3])
        assert parallel.run_tasks(_open_regular_files, [(), ()]) == [0, 0]
    with storage.open_store("hdf5", tmp_path / "store", "a") as store:
        store.write_batch(images, [4, 5, 6, 7])
        assert len(store) == 8
