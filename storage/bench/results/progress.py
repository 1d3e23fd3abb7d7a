"""The live state of runs in progress, kept in the file so that any page or process can follow them.

A run in progress keeps here, keyed by its id, where it is (``run_progress``: step, fraction
of the estimated time, what it measures now) and whether someone asked it to stop. A run
records the process that runs it (pid, host, process start time); when a database is
opened, runs still marked ``running`` whose process is gone are marked ``interrupted``.

Following a run must not slow down what it measures, so the run and the pages that follow
it take turns through this file. While a timed call runs, ``run_progress.timing_since``
says since when (and every timed call is kept in ``timed_sections``); a page holds still
then. Each page that follows the run (a *watcher*: one browser tab) notes in
``run_watchers`` when it last looked, how many measurements it has drawn, and when it is
drawing; before each timed call the run waits until every watcher has drawn what was
measured and has settled (:class:`storage.bench.live.LiveRecorder`).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from .connection import json_safe, now_iso
from .history import RunHistory, clean_name
from .processes import process_alive, process_start_time

# The error of a run whose process was found gone (it had no chance to say why).
_PROCESS_GONE_ERROR = "the process running it stopped before the run finished (killed or crashed)"


@dataclass
class RunProgress:
    """A run's live state (see :meth:`ResultsDB.update_progress`); times are seconds since the epoch."""

    run_id: str
    launched_at: float
    updated_at: float
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    message: str = ""
    estimated_seconds: float | None = None
    stoppable: bool = False
    stop_requested_at: float | None = None
    first_chart_at: float | None = None
    launched_by: str = "dashboard"  # or "command line"
    timing_since: float | None = None  # a timed call is running, since then

    def __post_init__(self) -> None:
        self.stoppable = bool(self.stoppable)


@dataclass(frozen=True)
class LiveState:
    """What a page checks several times a second, in one cheap query: is a call timed now, is there news.

    ``previews`` counts the stores whose images were read back (one :class:`PreviewReady` each), as
    the run counts them.
    """

    status: str
    timing_since: float | None
    measurements: int
    previews: int
    step: int
    message: str
    updated_at: float | None

    @property
    def timing(self) -> bool:
        return self.status == "running" and self.timing_since is not None


@dataclass(frozen=True)
class Watcher:
    """One page following a run: when it last looked, how many items (measurements and previews) it has
    drawn, whether it is drawing now, and until when its browser may still be painting."""

    watcher: str
    seen_at: float
    shown_items: int
    drawing_since: float | None
    settled_at: float | None


class LiveProgress(RunHistory):
    """Runs in progress: reserving one, recording where it is, asking it to stop, spotting dead ones."""

    def mark_stale_runs(self) -> list[str]:
        """Mark ``interrupted`` the runs of this host left ``running`` by a process that is gone."""
        host = socket.gethostname()
        stale = []
        rows = self._execute(
            "SELECT id, pid, hostname, process_started, imported FROM runs WHERE status = 'running'"
        ).fetchall()
        for run_id, pid, hostname, started, imported in rows:
            if not imported and hostname != host:
                continue  # another machine's run in a shared file: its process cannot be checked from here
            if imported or not pid or not process_alive(pid, started):
                stale.append(run_id)
        for run_id in stale:
            self._execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, error = COALESCE(error, ?)"
                " WHERE id = ? AND status = 'running'",
                (now_iso(), _PROCESS_GONE_ERROR, run_id),
            )
        return stale

    def reserve_run(
        self,
        run_id: str,
        parameters: dict[str, Any],
        source: dict[str, Any],
        pid: int,
        *,
        estimated_seconds: float | None = None,
        stoppable: bool = True,
        name: str | None = None,
        launched_by: str = "dashboard",
    ) -> None:
        """Record a run about to start in process ``pid``, before that process has loaded anything.

        The run is ``running`` from now on, so its id can be shown, followed and stopped at
        once; the process fills in its environment and source when it gets there (see
        :meth:`create_run`). ``stoppable`` says that the process honours
        :meth:`request_stop`; ``name`` is the run's name, if it has one.
        """
        now = time.time()
        with self.transaction() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO runs (id, started_at, status, parameters, environment, source,"
                " pid, hostname, process_started, imported, name) VALUES (?, ?, 'running', ?, '{}', ?, ?, ?, ?, 0, ?)",
                (
                    run_id,
                    now_iso(),
                    json.dumps(json_safe(parameters)),
                    json.dumps(json_safe(source)),
                    pid,
                    socket.gethostname(),
                    process_start_time(pid),
                    clean_name(name),
                ),
            )
            connection.execute(
                "INSERT OR IGNORE INTO run_progress (run_id, launched_at, updated_at, message,"
                " estimated_seconds, stoppable, launched_by) VALUES (?, ?, ?, 'starting the benchmark process…', ?, ?, ?)",
                (run_id, now, now, estimated_seconds, int(stoppable), launched_by),
            )

    def update_progress(
        self,
        run_id: str,
        *,
        step: int,
        total_steps: int,
        fraction: float,
        message: str,
        estimated_seconds: float | None = None,
        stoppable: bool | None = None,
        launched_by: str = "dashboard",
    ) -> None:
        """Where a run is now: its step, the fraction of its estimated time done, what it measures.

        ``launched_by`` ("dashboard" or "command line") is kept from the first record of the run.
        """
        now = time.time()
        self._execute(
            "INSERT INTO run_progress (run_id, launched_at, updated_at, step, total_steps, fraction, message,"
            " estimated_seconds, stoppable, launched_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(run_id) DO UPDATE SET updated_at = excluded.updated_at, step = excluded.step,"
            " total_steps = excluded.total_steps, fraction = excluded.fraction, message = excluded.message,"
            " estimated_seconds = COALESCE(excluded.estimated_seconds, run_progress.estimated_seconds),"
            " stoppable = MAX(run_progress.stoppable, excluded.stoppable)",
            (
                run_id,
                now,
                now,
                int(step),
                int(total_steps),
                float(min(1.0, max(0.0, fraction))),
                message,
                estimated_seconds,
                int(bool(stoppable)),
                launched_by,
            ),
        )

    def progress(self, run_id: str) -> RunProgress | None:
        """The live state recorded for a run (None for runs recorded without one, such as imports)."""
        rows = self._rows("SELECT * FROM run_progress WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        row = rows[0]
        return RunProgress(**{name: row[name] for name in row.keys()})

    def request_stop(self, run_id: str) -> bool:
        """Ask a running run to stop (its process checks a few times a second); True if it was running."""
        self._require_run(run_id)
        cursor = self._execute(
            "UPDATE run_progress SET stop_requested_at = COALESCE(stop_requested_at, ?)"
            " WHERE run_id = ? AND run_id IN (SELECT id FROM runs WHERE status = 'running')",
            (time.time(), run_id),
        )
        return cursor.rowcount > 0

    def stop_requested(self, run_id: str) -> bool:
        rows = self._execute("SELECT stop_requested_at FROM run_progress WHERE run_id = ?", (run_id,)).fetchall()
        return bool(rows) and rows[0][0] is not None

    def note_first_chart(self, run_id: str, at: float | None = None) -> None:
        """Record when a page first drew a chart of this run (kept once: the first page wins)."""
        self._execute(
            "UPDATE run_progress SET first_chart_at = ? WHERE run_id = ? AND first_chart_at IS NULL",
            (time.time() if at is None else at, run_id),
        )

    def measurement_times(self, run_id: str) -> list[float]:
        """When each measurement of the run was stored (seconds since the epoch), in order."""
        rows = self._execute(
            "SELECT recorded_at FROM measurements WHERE run_id = ? AND recorded_at IS NOT NULL ORDER BY id", (run_id,)
        ).fetchall()
        return [row[0] for row in rows]

    # -- taking turns: the run's timed calls and the pages that follow it --------------------

    def start_timed_section(self, run_id: str) -> float:
        """Say that a timed call of the run starts now (pages hold still); the time it starts."""
        now = time.time()
        self._execute("UPDATE run_progress SET timing_since = ? WHERE run_id = ?", (now, run_id))
        return now

    def end_timed_section(self, run_id: str, started: float | None, timer_started: float | None = None) -> None:
        """Say that the timed call announced at ``started`` has ended, and keep it in ``timed_sections``.

        ``timer_started`` is when its timer started, once the pages had settled (default: ``started``).
        """
        now = time.time()
        with self.transaction() as connection:
            if started is not None:
                connection.execute(
                    "INSERT INTO timed_sections (run_id, started_at, timer_started_at, ended_at) VALUES (?, ?, ?, ?)",
                    (run_id, started, started if timer_started is None else timer_started, now),
                )
            connection.execute("UPDATE run_progress SET timing_since = NULL WHERE run_id = ?", (run_id,))

    def timed_sections(self, run_id: str, held: bool = True) -> list[tuple[float, float]]:
        """The run's timed calls that have ended: (start, end), seconds since the epoch, in order.

        ``held``: from when the pages were told to hold still (what a page sees); else from when
        the timer started (what the measurement covers).
        """
        start = "started_at" if held else "COALESCE(timer_started_at, started_at)"
        rows = self._execute(
            f"SELECT {start}, ended_at FROM timed_sections WHERE run_id = ? ORDER BY started_at", (run_id,)
        ).fetchall()
        return [(float(begin), float(end)) for begin, end in rows]

    def live_state(self, run_id: str) -> LiveState | None:
        """The run's status, whether a call is timed now and how much it has recorded (None: no such run)."""
        row = self._execute(
            "SELECT runs.status, run_progress.timing_since,"
            " (SELECT COUNT(*) FROM measurements WHERE run_id = runs.id),"
            " (SELECT COUNT(*) FROM (SELECT DISTINCT backend, count FROM previews WHERE run_id = runs.id)),"
            " run_progress.step, run_progress.message, run_progress.updated_at"
            " FROM runs LEFT JOIN run_progress ON run_progress.run_id = runs.id WHERE runs.id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        status, timing_since, measurements, previews, step, message, updated_at = row
        return LiveState(status, timing_since, measurements, previews, step or 0, message or "", updated_at)

    def note_watcher(
        self,
        run_id: str,
        watcher: str,
        *,
        drawing: bool | None = None,
        shown_items: int | None = None,
        settle_seconds: float = 0.0,
    ) -> None:
        """A page following the run says it is there (``drawing`` None), starts drawing (True) or has drawn (False).

        Having drawn, it says how many items (measurements and previews) it shows and how long
        its browser may still take to paint them (``settle_seconds``): the run waits that long
        before timing.
        """
        now = time.time()
        drawing_since = now if drawing else None
        settled_at = now + settle_seconds if drawing is False else None
        self._execute(
            "INSERT INTO run_watchers (run_id, watcher, seen_at, shown_items, drawing_since, settled_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, watcher) DO UPDATE SET seen_at = excluded.seen_at,"
            " shown_items = COALESCE(?, run_watchers.shown_items),"
            " drawing_since = CASE WHEN ? IS NULL THEN run_watchers.drawing_since ELSE excluded.drawing_since END,"
            " settled_at = COALESCE(excluded.settled_at, run_watchers.settled_at)",
            (
                run_id,
                watcher,
                now,
                shown_items or 0,
                drawing_since,
                settled_at,
                shown_items,
                None if drawing is None else 1,
            ),
        )

    def forget_watcher(self, run_id: str, watcher: str) -> None:
        """The page has gone (its tab was closed or reloaded): the run no longer waits for it."""
        self._execute("DELETE FROM run_watchers WHERE run_id = ? AND watcher = ?", (run_id, watcher))

    def watchers(self, run_id: str, seen_within: float) -> list[Watcher]:
        """The pages that followed the run in the last ``seen_within`` seconds."""
        rows = self._execute(
            "SELECT watcher, seen_at, shown_items, drawing_since, settled_at FROM run_watchers"
            " WHERE run_id = ? AND seen_at >= ?",
            (run_id, time.time() - seen_within),
        ).fetchall()
        return [Watcher(*row) for row in rows]
