"""A benchmark run in its own process, followed from the page; one per browser session.

The Run page starts a :class:`BenchmarkJob` when "Run benchmark" is pressed and keeps it in
``st.session_state``: two browser tabs are two sessions, so two jobs with their own run
ids and folders.

The engine runs in a child process (``python -m dashboard.worker``), not in a thread of
the Streamlit server: a thread would share the server's interpreter lock with the page
redrawing its charts twice a second, which would slow the run down and add the page's work
to the very timings being measured. The child sends the engine's events back as pickles
on a pipe; a reader thread here files them under a lock, and the page draws a consistent
:meth:`BenchmarkJob.snapshot` every half second. "Stop" sends the child ``SIGUSR1``,
which sets the ``threading.Event`` the engine checks between and inside measurements, so
a run ends within about a second and keeps what it had measured (if it does not, the child
is terminated after :data:`STOP_GRACE_SECONDS`).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from storage.bench import (
    Experiment,
    Measurement,
    MeasurementRecorded,
    PreviewReady,
    Progress,
    RunFinished,
    RunStarted,
)

from .config import PROJECT_ROOT

log = logging.getLogger(__name__)

RUNNING_STATES = ("starting", "running")
STOP_SIGNAL = signal.SIGUSR1
STOP_GRACE_SECONDS = 15.0

_active_jobs: weakref.WeakSet[BenchmarkJob] = weakref.WeakSet()
_active_lock = threading.Lock()


@dataclass
class JobSnapshot:
    """What a job has produced so far, copied under the job's lock."""

    status: str
    run_id: str | None
    fraction: float
    message: str
    step: int
    total_steps: int
    measurements: list[Measurement]
    previews: list[PreviewReady]
    error: str | None
    elapsed: float
    version: int
    experiment: Experiment
    source_description: str = ""

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATES


@dataclass(eq=False)
class BenchmarkJob:
    """One run of the engine in a child process.

    Args:
        experiment: what to run (validated by the engine in the child).
        db_path: the results database; the child opens its own connection to it.
    """

    experiment: Experiment
    db_path: Path
    status: str = "starting"
    run_id: str | None = None
    fraction: float = 0.0
    message: str = "starting the benchmark process…"
    step: int = 0
    total_steps: int = 0
    error: str | None = None
    source_description: str = ""
    version: int = 0
    stop_requested: bool = False
    _measurements: list[Measurement] = field(default_factory=list)
    _previews: dict[tuple[int, str], PreviewReady] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _process: subprocess.Popen | None = None
    _reader: threading.Thread | None = None
    _stderr_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))
    _started: float = 0.0
    _finished: float | None = None

    # -- control ---------------------------------------------------------------------

    def start(self) -> BenchmarkJob:
        """Start the child process and the thread that follows it."""
        self._started = time.monotonic()
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")]))
        environment.setdefault("PYTHONUNBUFFERED", "1")
        request = json.dumps({"experiment": self.experiment.to_dict(), "db_path": str(self.db_path)})
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "dashboard.worker", request],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=str(PROJECT_ROOT),
                env=environment,
            )
        except OSError as error:
            self._end("error", f"could not start the benchmark process: {error}")
            self._finished = time.monotonic()
            return self
        with _active_lock:
            _active_jobs.add(self)
        self._reader = threading.Thread(target=self._follow, name="benchmark-events", daemon=True)
        self._reader.start()
        threading.Thread(target=self._drain_stderr, name="benchmark-stderr", daemon=True).start()
        return self

    def stop(self) -> None:
        """Ask the run to stop; it ends within about a second, keeping its measurements."""
        with self._lock:
            if self.status not in RUNNING_STATES or self.stop_requested:
                return
            self.stop_requested = True
            self.message = "stopping…"
        process = self._process
        if process is not None and process.poll() is None:
            try:
                process.send_signal(STOP_SIGNAL)
            except OSError:
                pass
            threading.Thread(target=self._terminate_if_stuck, name="benchmark-stop", daemon=True).start()

    def _terminate_if_stuck(self) -> None:
        process = self._process
        if process is None:
            return
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("the benchmark process did not stop within %s s; terminating it", STOP_GRACE_SECONDS)
            process.terminate()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the run has ended and its events are read; True if it has."""
        if self._reader is not None:
            self._reader.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATES

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- following the child ---------------------------------------------------------

    def _follow(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        done = None
        try:
            while True:
                try:
                    message = pickle.load(process.stdout)
                except EOFError:
                    break
                if isinstance(message, dict) and message.get("kind") == "done":
                    done = message
                else:
                    self._on_event(message)
        except Exception as error:  # a garbled stream: say so rather than hang
            log.exception("reading the benchmark process's events failed")
            done = {"status": "error", "error": f"lost contact with the benchmark process ({error})"}
        code = process.wait()
        with self._lock:
            if done is not None:
                self.status = done.get("status") or "finished"
                self.error = done.get("error")
                self.source_description = done.get("source_description", "")
            else:
                tail = " | ".join(line for line in self._stderr_tail if line.strip())[-600:]
                how = "was stopped" if code < 0 else f"ended unexpectedly (exit code {code})"
                self.status = "cancelled" if self.stop_requested else "error"
                self.error = f"the benchmark process {how}" + (f": {tail}" if tail and not self.stop_requested else "")
            if self.status in RUNNING_STATES:
                self.status = "finished"
            if self.error and self.status != "finished":
                self.message = self.error
            self._finished = time.monotonic()
            self.version += 1
        with _active_lock:
            _active_jobs.discard(self)

    def _drain_stderr(self) -> None:
        process = self._process
        if process is None or process.stderr is None:
            return
        for raw in process.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self._stderr_tail.append(line)
            log.debug("benchmark process: %s", line)

    def _end(self, status: str, error: str) -> None:
        with self._lock:
            self.status = status
            self.error = error
            self.message = error

    def _on_event(self, event: object) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self.status = "running"
                self.run_id = event.run_id
                self.total_steps = event.total_steps
                self.message = "starting"
            elif isinstance(event, Progress):
                self.fraction = event.fraction
                self.step = event.step
                self.total_steps = event.total_steps
                if not self.stop_requested:
                    self.message = event.message
            elif isinstance(event, MeasurementRecorded):
                self._measurements.append(event.measurement)
                self.version += 1
            elif isinstance(event, PreviewReady):
                self._previews[(event.count, event.backend)] = event
                self.version += 1
            elif isinstance(event, RunFinished):
                self.message = event.status if not event.error else f"{event.status}: {event.error}"
                if event.status == "finished":
                    self.fraction = 1.0

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            end = self._finished if self._finished is not None else time.monotonic()
            return JobSnapshot(
                status=self.status,
                run_id=self.run_id,
                fraction=self.fraction,
                message=self.message,
                step=self.step,
                total_steps=self.total_steps,
                measurements=list(self._measurements),
                previews=list(self._previews.values()),
                error=self.error,
                elapsed=end - self._started if self._started else 0.0,
                version=self.version,
                experiment=self.experiment,
                source_description=self.source_description,
            )


def start_job(experiment: Experiment, db_path: Path) -> BenchmarkJob:
    """Start ``experiment`` in a child process and return its job."""
    return BenchmarkJob(experiment, Path(db_path)).start()


def other_active_jobs(job: BenchmarkJob | None) -> int:
    """How many runs other than ``job`` this server is following (other tabs or windows)."""
    with _active_lock:
        return sum(1 for other in _active_jobs if other is not job and other.running)
