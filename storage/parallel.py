"""A pool of worker processes for CPU-bound per-image work (PNG/JPEG encoding and decoding).

Threads do not help here: Pillow holds the GIL for most of a small image's encode or
decode, so threads ran slower than a plain loop on the development machine. Worker
processes do scale. They are started with ``fork`` (not ``spawn``/``forkserver``, which
would re-import the caller's ``__main__`` and break scripts and Streamlit pages), once per
process, and reused; a child process that inherits the pool makes its own. A daemonic
process (a PyTorch DataLoader worker) may not start children: it works in a loop, and the
parallelism comes from its sibling workers.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any

_pool: ProcessPoolExecutor | None = None
_pool_pid: int | None = None


def worker_count() -> int:
    """Cores this process may run on (its CPU affinity, which containers often limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def process_pool() -> ProcessPoolExecutor | None:
    """The shared pool, or None on a single core (where a loop in-process is fastest) or in a daemon."""
    global _pool, _pool_pid
    if worker_count() < 2 or multiprocessing.current_process().daemon:
        return None
    if _pool is None or _pool_pid != os.getpid() or getattr(_pool, "_broken", False):
        _pool = ProcessPoolExecutor(
            worker_count(),
            mp_context=multiprocessing.get_context("fork"),
            initializer=start_worker,
            initargs=(os.getpid(),),
        )
        _pool_pid = os.getpid()
    return _pool


def start_worker(parent_pid: int) -> None:
    """Set up a pool worker: let go of the parent's open files, and exit when the parent does."""
    close_inherited_files()
    exit_with_parent(parent_pid)


def close_inherited_files() -> None:
    """Close the regular files a forked worker inherited: a worker must not keep a store's locks.

    The pool is often forked while a store is open (its first chunk is decoded while the
    store is being written). A forked child shares the parent's open file descriptions, and
    with them any ``flock`` lock on them (HDF5 locks its file that way): after the parent
    closed the store, the idle worker would still hold the lock, and reopening the store
    failed with "unable to lock file". Pipes and sockets (how the pool talks to its
    workers) stay open; memory maps stay valid without their descriptors.
    """
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover - not Linux
        return
    for descriptor in descriptors:
        if descriptor <= 2:
            continue
        try:
            if stat.S_ISREG(os.fstat(descriptor).st_mode):
                os.close(descriptor)
        except OSError:
            pass


def exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """In a worker: exit within ``interval`` seconds once the process that started it is gone.

    A parent killed outright (SIGKILL, the out-of-memory killer) cannot tell its workers to
    stop, and idle workers would wait for work forever. A thread that watches the parent's
    id does it instead; ``prctl(PR_SET_PDEATHSIG)`` would not do, because it fires when the
    *thread* that started the pool ends, and a dashboard run starts it from a thread that
    ends while the pool is still in use.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def split_ranges(total: int, parts: int, minimum: int) -> list[tuple[int, int]]:
    """Split ``range(total)`` into about ``parts`` contiguous pieces of at least ``minimum``."""
    size = max(minimum, -(-total // max(1, parts)))
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def run_tasks(function: Callable[..., Any], argument_tuples: Sequence[tuple]) -> list[Any]:
    """Run ``function(*arguments)`` for each tuple on the pool, results in order.

    If anything fails or the caller is interrupted, queued tasks are cancelled and running
    ones are waited for, so no worker is still writing files when the caller cleans up.
    """
    pool = process_pool()
    if pool is None or len(argument_tuples) < 2:
        return [function(*arguments) for arguments in argument_tuples]
    futures: list[Future] = []
    try:
        futures.extend(pool.submit(function, *arguments) for arguments in argument_tuples)
        return [future.result() for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        if _is_running(pool):
            wait(futures)
        else:
            _discard(pool)
        raise


def _is_running(pool: ProcessPoolExecutor) -> bool:
    """Whether the pool's manager thread runs: without it, a submitted task never ends.

    The first ``submit`` starts the workers and then that thread; an exception between the
    two (Ctrl+C) leaves a pool that accepts tasks and never runs them.
    """
    manager = getattr(pool, "_executor_manager_thread", None)
    return manager is not None and manager.is_alive()


def _discard(pool: ProcessPoolExecutor) -> None:
    """Stop a pool that cannot run tasks, so the next call starts a new one."""
    global _pool
    if _pool is pool:
        _pool = None
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()  # idle workers waiting for tasks: nothing is lost
    for process in processes:
        # A worker forked while the parent had its own SIGTERM handler (a command line run
        # turns SIGTERM into Ctrl+C) may outlive the signal: it is killed.
        process.join(timeout=1)
        if process.is_alive():
            process.kill()
            process.join(timeout=1)
    pool.shutdown(wait=False, cancel_futures=True)
