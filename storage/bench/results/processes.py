"""The process that runs a run: recorded when the run starts, checked when a database is opened.

A run left ``running`` by a process that is gone (killed, crashed) is told from one still
going by its pid *and* its start time, since a pid is reused once its process has ended.
"""

from __future__ import annotations

import psutil


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if it cannot be seen."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def process_alive(pid: int, started: float | None) -> bool:
    """Whether the process that started a run still runs (and is that same process)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 1.0
    except (psutil.Error, OSError):
        return False
