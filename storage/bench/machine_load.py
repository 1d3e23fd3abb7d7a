"""How busy the machine was while a call was timed: its load average and the CPU other processes took.

A timing is only as good as the machine was quiet. Every timed section of a run (see
:meth:`storage.bench.run_state.Run.start_timer`) is bracketed by two readings, taken
outside the timer: the machine's CPU time in all (``/proc/stat`` through psutil) and this
process tree's own (the run's process and its children: the PNG encoder pool, DataLoader
workers). What the machine spent beyond its own tree went to *other processes* (a
browser drawing charts, a dashboard redrawing, someone else's job). A measurement
records, over its recorded repeats, how many cores those other processes kept busy on
average, and the 1-minute load average, as its ``machine_load``:

    {"load_average": 3.1, "other_cpu_seconds": 0.42, "timed_seconds": 1.9,
     "other_cores": 0.22, "cores": 2, "disturbed": false}

``disturbed`` is true when other processes took at least :data:`DISTURBED_SHARE` of the
machine (0.4 of a core on two cores) during the timed calls, None when the calls were too
short to tell (under :data:`MIN_TIMED_SECONDS`: the kernel counts CPU time in 10 ms ticks).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil

DISTURBED_SHARE = 0.2  # of the machine's cores, taken by other processes on average: the timing is suspect
MIN_TIMED_SECONDS = 0.05  # below this, the CPU-time counters (10 ms ticks) cannot tell


@dataclass(frozen=True)
class Reading:
    """One look at the machine: wall clock, CPU seconds of the whole machine and of this process tree."""

    wall: float
    machine_cpu: float
    own_cpu: float
    load_average: float


def _machine_busy_seconds() -> float:
    """CPU seconds every core spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times)
    # guest time is counted inside user time already
    return total - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _own_cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds of this process, its children alive now and the children it has waited for."""
    try:
        own = process.cpu_times()
        seconds = own.user + own.system + own.children_user + own.children_system
        for child in process.children(recursive=True):
            try:
                times = child.cpu_times()
                seconds += times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return seconds
    except (psutil.Error, OSError):
        return 0.0


def read_machine(process: psutil.Process | None = None) -> Reading:
    """The machine now (a few hundred microseconds: take it outside any timer)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return Reading(
        wall=time.perf_counter(),
        machine_cpu=_machine_busy_seconds(),
        own_cpu=_own_cpu_seconds(process or psutil.Process()),
        load_average=load,
    )


class LoadMeter:
    """Adds up what other processes took during the timed sections of one measurement.

    :meth:`start` and :meth:`stop` bracket each timed section; sections of warm-up passes
    are left out (``counted=False``). :meth:`take` gives the measurement's ``machine_load``
    and starts afresh for the next one.
    """

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._started: Reading | None = None
        self._reset()

    def _reset(self) -> None:
        self.timed_seconds = 0.0
        self.other_cpu_seconds = 0.0
        self.load_average: float | None = None
        self.load_averages: list[float] = []
        self.sections = 0

    def start(self) -> None:
        self._started = read_machine(self._process)

    def stop(self, counted: bool = True) -> None:
        started, self._started = self._started, None
        if started is None or not counted:
            return
        ended = read_machine(self._process)
        wall = max(0.0, ended.wall - started.wall)
        others = (ended.machine_cpu - started.machine_cpu) - (ended.own_cpu - started.own_cpu)
        self.timed_seconds += wall
        self.other_cpu_seconds += min(max(0.0, others), wall * self._cores)
        if ended.load_average == ended.load_average:  # not NaN
            self.load_average = max(self.load_average or 0.0, ended.load_average)
            self.load_averages.append(ended.load_average)
        self.sections += 1

    @contextmanager
    def timing(self) -> Iterator[None]:
        """:meth:`start` and :meth:`stop` around one timed repeat, for an operation that keeps its own meter."""
        self.start()
        try:
            yield
        finally:
            self.stop()

    def fill(self, measurement: Any) -> None:
        """Record the repeats' ``load_average`` (median), ``other_cpu_seconds`` and ``machine_load`` on ``measurement``.

        Operations that interleave several measurements' repeats (reads across backends, the
        loader's contenders) keep one meter per measurement: the run's own meter, which adds
        up every timed section since the last measurement was recorded, cannot tell them apart.
        """
        if self.load_averages:
            measurement.load_average = float(statistics.median(self.load_averages))
            measurement.other_cpu_seconds = float(self.other_cpu_seconds)
        if self.sections:
            measurement.machine_load = describe_load(
                self.timed_seconds, self.other_cpu_seconds, self._cores, self.load_average
            )

    def take(self) -> dict[str, Any] | None:
        """What the sections since the last call say, as a measurement's ``machine_load`` (None: none timed)."""
        if not self.sections:
            self._reset()
            return None
        load = describe_load(self.timed_seconds, self.other_cpu_seconds, self._cores, self.load_average)
        self._reset()
        return load


def describe_load(
    timed_seconds: float, other_cpu_seconds: float, cores: int, load_average: float | None
) -> dict[str, Any]:
    """The ``machine_load`` of a measurement from its totals (see the module's docstring)."""
    other_cores = other_cpu_seconds / timed_seconds if timed_seconds > 0 else None
    disturbed = None
    if timed_seconds >= MIN_TIMED_SECONDS and other_cores is not None:
        disturbed = other_cores >= DISTURBED_SHARE * cores
    return {
        "load_average": None if load_average is None else round(load_average, 2),
        "other_cpu_seconds": round(other_cpu_seconds, 4),
        "timed_seconds": round(timed_seconds, 4),
        "other_cores": None if other_cores is None else round(other_cores, 3),
        "cores": int(cores),
        "disturbed": disturbed,
    }


def was_disturbed(machine_load: dict[str, Any] | None) -> bool:
    """Whether a measurement's ``machine_load`` says other processes took a share of the machine that matters."""
    return bool(machine_load and machine_load.get("disturbed"))


__all__ = ["DISTURBED_SHARE", "MIN_TIMED_SECONDS", "LoadMeter", "Reading", "describe_load", "read_machine"]
