"""Benchmark runs the dashboard starts and follows by their id, through the results database.

A run belongs to its id, not to a browser tab. "Run benchmark" calls :func:`launch`: it
picks the run's id, starts the engine in a child process (``python -m dashboard.worker``)
and reserves the id in the results database before the child does anything, so the page
can put ``?run=<id>`` in its address at once. From then on every page that shows the run
(a reload, a second tab, another window, the Results page) reads it with :func:`read_run`:
status, progress, measurements and previews all come from the database, which the child
writes (see :mod:`storage.bench.live`). :func:`request_stop` writes a stop request that the
child honours within a few tenths of a second, whichever tab asked.

The engine runs in a child process, not in a thread of the Streamlit server: a thread
would share the server's interpreter lock with the pages redrawing their charts, which
would slow the run down and add the pages' work to the very timings being measured.

Runs started from the command line (``python -m storage bench``) are in the same database
without live progress; :func:`read_run` derives theirs from the measurements recorded so
far and the run's plan.
"""

from __future__ import annotations

import calendar
import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from storage.bench import Experiment, Measurement, ResultsDB, RunRecord, estimate_experiment, new_run_id
from storage.bench.experiment import steps
from storage.bench.results import RunProgress

from .config import PROJECT_ROOT
from .state import OPERATION_LABELS

log = logging.getLogger(__name__)

STOP_SIGNAL = signal.SIGUSR1
STOP_GRACE_SECONDS = 15.0


@dataclass
class _Launch:
    """A worker process this server started, and the last lines it wrote to standard error."""

    process: subprocess.Popen
    stderr_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))


_launched: dict[str, _Launch] = {}
_launched_lock = threading.Lock()


def launch(
    experiment: Experiment, db: ResultsDB, estimated_seconds: float | None = None, name: str | None = None
) -> str:
    """Start ``experiment`` in a child process; its run id, already recorded as running in ``db`` (named ``name``).

    Raises:
        OSError: the process could not be started.
    """
    run_id = new_run_id()
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")]))
    environment.setdefault("PYTHONUNBUFFERED", "1")
    request = json.dumps(
        {"experiment": experiment.to_dict(), "db_path": str(Path(db.path).resolve()), "run_id": run_id}
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "dashboard.worker", request],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(PROJECT_ROOT),
        env=environment,
    )
    try:
        db.reserve_run(
            run_id,
            experiment.to_dict(),
            {"spec": experiment.source},
            process.pid,
            estimated_seconds=estimated_seconds,
            name=name,
        )
    except BaseException:
        process.kill()
        process.wait()
        raise
    started = _Launch(process)
    with _launched_lock:
        _launched[run_id] = started
    threading.Thread(target=_drain_stderr, args=(started,), name="benchmark-stderr", daemon=True).start()
    threading.Thread(target=_reap, args=(run_id, started, db.path), name="benchmark-reaper", daemon=True).start()
    assert process.stdin is not None
    try:
        process.stdin.write(b"go\n")  # the run is reserved: the child may start
        process.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once; the reaper records why
    return run_id


def _drain_stderr(started: _Launch) -> None:
    stream = started.process.stderr
    if stream is None:
        return
    for raw in stream:
        line = raw.decode("utf-8", errors="replace").rstrip()
        started.stderr_tail.append(line)
        log.debug("benchmark process: %s", line)


def _reap(run_id: str, started: _Launch, db_path: Path) -> None:
    """Wait for the child (so it leaves no zombie); if it died without ending its run, say why."""
    code = started.process.wait()
    with _launched_lock:
        _launched.pop(run_id, None)
    try:
        with ResultsDB(db_path, mark_stale=False) as db:
            _record_unexpected_end(db, run_id, started, code)
    except Exception:
        log.exception("could not record how run %s ended", run_id)


def _record_unexpected_end(db: ResultsDB, run_id: str, started: _Launch, code: int) -> None:
    record = db.get_run(run_id)
    if record is None or record.status != "running":
        return  # the run ended itself, as it should
    time.sleep(0.2)  # let the stderr reader catch the last lines
    tail = " | ".join(line for line in started.stderr_tail if line.strip())[-600:]
    how = f"was killed (signal {-code})" if code < 0 else f"ended unexpectedly (exit code {code})"
    stopped = db.stop_requested(run_id)
    db.finish_run(
        run_id,
        "cancelled" if stopped else "failed",
        f"the benchmark process {how}" + (f": {tail}" if tail and not stopped else ""),
    )


def request_stop(db: ResultsDB, run_id: str) -> bool:
    """Ask the run to stop; it ends within about a second and keeps what it measured. True if it was running."""
    asked = db.request_stop(run_id)
    with _launched_lock:
        started = _launched.get(run_id)
    if started is not None and started.process.poll() is None:
        try:
            started.process.send_signal(STOP_SIGNAL)  # quicker than the child's next look at the database
        except OSError:
            pass
        threading.Thread(target=_terminate_if_stuck, args=(started,), name="benchmark-stop", daemon=True).start()
    return asked


def _terminate_if_stuck(started: _Launch) -> None:
    try:
        started.process.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("the benchmark process did not stop within %s s; terminating it", STOP_GRACE_SECONDS)
        started.process.terminate()


def any_timing(db: ResultsDB) -> bool:
    """Whether a running run is timing a call now (a page that would redraw waits: see :mod:`dashboard.watching`)."""
    for record in db.list_runs(limit=50):
        if record.status == "running":
            state = db.live_state(record.id)
            if state is not None and state.timing:
                return True
    return False


def running_runs(db: ResultsDB) -> list[RunRecord]:
    """Runs recorded as running (after marking those whose process is gone as interrupted)."""
    runs = [record for record in db.list_runs(limit=50) if record.status == "running"]
    if runs:
        db.mark_stale_runs()
        runs = [record for record in db.list_runs(limit=50) if record.status == "running"]
    return runs


@dataclass
class RunView:
    """Everything a page shows about one run, read from the results database at one moment.

    ``fraction`` is the share of the run's estimated time that is done; ``message`` says
    what is measured now; ``remaining_seconds`` corrects the estimate by the speed so far.
    """

    run_id: str
    status: str
    record: RunRecord
    measurements: list[Measurement]
    elapsed: float
    fraction: float
    message: str
    step: int
    total_steps: int
    estimated_seconds: float | None
    remaining_seconds: float | None
    stoppable: bool
    stop_requested: bool
    from_dashboard: bool
    preview_count: int
    progress: RunProgress | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def label(self) -> str:
        """The run's id, and its name in quotes when it has one."""
        return run_title(self.record)

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever there is something new to draw."""
        return (len(self.measurements), self.preview_count)


def run_title(record: RunRecord) -> str:
    """``20261201-101010-ab12cd “lmdb after the fix”``: the id, and the name when the run has one."""
    return f"{record.id} “{record.name}”" if record.name else record.id


def _iso_seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


_plans: dict[str, tuple[list[tuple[str, int, str, str]], list[float], float] | None] = {}


def _plan(db: ResultsDB, record: RunRecord) -> tuple[list[tuple[str, int, str, str]], list[float], float] | None:
    """A command-line run's steps and their estimated seconds (kept per run: the plan does not change)."""
    if record.id not in _plans:
        try:
            experiment = Experiment.from_dict(record.parameters)
            estimate = estimate_experiment(experiment, db)
            _plans[record.id] = (steps(experiment), estimate.step_seconds, estimate.seconds)
        except Exception:  # parameters of another version: no plan, no estimate
            _plans[record.id] = None
    return _plans[record.id]


def _remaining(fraction: float, elapsed: float, estimated: float | None) -> float | None:
    """Seconds left: the estimate at first, the speed measured so far more and more as the run goes.

    The two are weighted by the share done: early on the time taken so far is mostly
    starting up (loading images, describing the machine) and says little about the rest.
    """
    if estimated is None:
        return None
    fraction = min(1.0, max(0.0, fraction))
    by_estimate = (1.0 - fraction) * estimated
    if fraction <= 0 or elapsed <= 0:
        return by_estimate
    by_speed = elapsed * (1.0 - fraction) / fraction
    return max(0.0, (1.0 - fraction) * by_estimate + fraction * by_speed)


def launched_from_dashboard(progress: RunProgress | None) -> bool:
    """Whether a run's live state says the dashboard started it (else the command line, or no live state)."""
    return progress is not None and progress.launched_by == "dashboard"


def read_run(db: ResultsDB, run_id: str) -> RunView | None:
    """The run as the database says now (None if it holds no such run)."""
    record = db.get_run(run_id)
    if record is None:
        return None
    if record.status == "running":
        db.mark_stale_runs()
        record = db.get_run(run_id) or record
    measurements = db.measurements(run_id)
    progress = db.progress(run_id)
    running = record.status == "running"
    now = time.time()
    finished = _iso_seconds(record.finished_at)
    if progress is not None:
        start = progress.launched_at
        end = now if running else max(finished or progress.updated_at, progress.updated_at)
        fraction, message, step, total = progress.fraction, progress.message, progress.step, progress.total_steps
        estimated = progress.estimated_seconds
    else:  # a run started elsewhere (the command line): derive its progress from its plan
        start = _iso_seconds(record.started_at) or now
        end = now if running else (finished or now)
        step = len(measurements)
        plan = _plan(db, record) if running else None
        if plan is not None:
            planned, weights, estimated = plan
            total = len(planned)
            fraction = sum(weights[:step]) / (sum(weights) or 1.0)
            if step < total:
                backend, count, operation, cache = planned[step]
                message = f"{backend} · {count:,} images · {OPERATION_LABELS.get(operation, operation)} ({cache})"
            else:
                message = "finishing"
        else:
            total, fraction, message, estimated = step, 1.0 if not running else 0.0, "", None
    if not running and record.status == "finished":
        fraction = 1.0
    elapsed = max(0.0, end - start)
    return RunView(
        run_id=run_id,
        status=record.status,
        record=record,
        measurements=measurements,
        elapsed=elapsed,
        fraction=min(1.0, max(0.0, fraction)),
        message=message,
        step=step,
        total_steps=total,
        estimated_seconds=estimated,
        remaining_seconds=_remaining(fraction, elapsed, estimated) if running else None,
        stoppable=running and progress is not None and progress.stoppable,
        stop_requested=progress is not None and progress.stop_requested_at is not None,
        from_dashboard=launched_from_dashboard(progress),
        preview_count=db.count_previews(run_id),
        progress=progress,
    )


def read_shown_run(db: ResultsDB, run_id: str) -> tuple[RunView | None, str | None]:
    """The run to draw, or why it cannot be drawn: ``(view, None)``, ``(None, problem)``, ``(None, None)`` if absent.

    A run that breaks the results schema (written by hand into the file, or by an older
    version) is named with its first problem, so a page says so and goes on.
    """
    try:
        problem = db.run_problem(run_id)
        return (None, problem) if problem else (read_run(db, run_id), None)
    except Exception as error:  # anything else a damaged run holds: said, never a traceback
        return None, f"{type(error).__name__}: {error}"


def wait_for_run(db: ResultsDB, run_id: str, timeout: float = 120.0, interval: float = 0.1) -> RunView:
    """Wait until the run has ended (for tests and scripts); its final view.

    Raises:
        TimeoutError: it is still running after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        view = read_run(db, run_id)
        if view is not None and not view.running:
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is still running after {timeout:.0f} s")
        time.sleep(interval)
