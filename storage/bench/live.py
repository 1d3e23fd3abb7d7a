"""A run's live state in the results database, so that any page or process can follow and stop it.

:class:`LiveRecorder` takes the engine's events (pass :meth:`LiveRecorder.on_event` to
:func:`~storage.bench.run_experiment`) and files them in the results database under the
run's id: where the run is (step, fraction of its estimated time, what it measures now) and
the images read back from every store. It also checks a few times a second whether someone
asked the run to stop (:meth:`ResultsDB.request_stop`) and then sets the engine's cancel
event. The writing happens on a thread of its own: the engine's thread only swaps a few
values.

Following a run must not change what it measures: a page redrawing its charts, and the
browser painting them, take CPU from the very calls being timed (on two cores a watched
run's reads took up to four times as long). So the run and the pages take turns. Before
each timed call (a :class:`~storage.bench.events.TimedSection` event, sent outside the
timer) the recorder, in the engine's thread:

1. waits until every page following the run has drawn everything recorded so far (at most
   :data:`CATCH_UP_LIMIT`), so that the charts stay within a second of the measurements;
2. says in the database that a timed call runs (``timing_since``); pages hold still;
3. waits until no page is still drawing and their browsers have had time to paint (at most
   :data:`SETTLE_LIMIT`); then the timer starts.

When the call ends it says so, and the pages catch up. With no page following, only the
two notes are written (about a millisecond, outside the timer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .events import Event, MeasurementRecorded, PreviewReady, Progress, RunFinished, RunStarted, TimedSection
from .results import ResultsDB

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2  # seconds between writes of the progress and checks for a stop request
WATCH_TTL = 5.0  # a page that has not looked at the run for this long has gone (a busy machine starves pages)
CATCH_UP_LIMIT = 2.0  # at most this long for the pages to draw what was recorded, before a timed call
SETTLE_LIMIT = 2.0  # at most this long for the pages to finish drawing, before a timed call
STALE_DRAWING = 10.0  # a page "drawing" for longer than this has died midway: not waited for
TURN_POLL = 0.01  # seconds between looks at the pages while waiting for them


class LiveRecorder:
    """Files one run's progress and previews in ``db``, honours stop requests, and takes turns with pages.

    Args:
        db: the results database the run records its measurements in.
        run_id: the run's id (chosen before the run starts).
        cancel: the engine's cancel event; set when a stop is requested.
        forward: another event handler to call as well (optional).
        launched_by: who started the run, "dashboard" or "command line" (the pages say so).
        estimated_seconds: the run's estimated length, if the starter has not recorded it.
        name: the run's name, recorded when the run starts (None: unnamed, or named already).

    Use it as a context manager, or call :meth:`close` when the run has ended.
    """

    def __init__(
        self,
        db: ResultsDB,
        run_id: str,
        cancel: threading.Event,
        forward: Callable[[Event], None] | None = None,
        interval: float = FLUSH_INTERVAL,
        launched_by: str = "dashboard",
        estimated_seconds: float | None = None,
        name: str | None = None,
    ) -> None:
        self.db, self.run_id, self.cancel, self.forward, self.interval = db, run_id, cancel, forward, interval
        self.launched_by, self.estimated_seconds, self.name = launched_by, estimated_seconds, name
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # the engine's thread flushes too, before a timed call
        self._progress: dict[str, Any] | None = None
        self._previews: list[PreviewReady] = []
        self._items = 0  # measurements and previews recorded: what a page has to have drawn
        self._timed_since: float | None = None  # the pages were told to hold still (a timed call comes)
        self._timer_started: float | None = None  # ... and had settled: the timer starts
        self.waited_seconds = 0.0  # time spent letting pages draw before timed calls (outside the timers)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-recorder", daemon=True)
        self._thread.start()

    def on_event(self, event: Event) -> None:
        """The engine's event handler: keeps what is new, for the recorder's thread to write."""
        if isinstance(event, TimedSection):
            self._take_turn(event.started)
        else:
            self._keep(event)
        if self.forward is not None:
            self.forward(event)

    def _keep(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                if event.estimated_seconds is not None:  # the engine's, from the source itself: the closest
                    self.estimated_seconds = event.estimated_seconds
                self._progress = {"step": 0, "total_steps": event.total_steps, "fraction": 0.0, "message": "starting"}
                self._wake.set()
            elif isinstance(event, Progress):
                self._progress = {
                    "step": event.step,
                    "total_steps": event.total_steps,
                    "fraction": event.fraction,
                    "message": event.message,
                }
            elif isinstance(event, PreviewReady):
                self._previews.append(event)
                self._items += 1
                self._wake.set()
            elif isinstance(event, MeasurementRecorded):
                self._items += 1
            elif isinstance(event, RunFinished):
                self._wake.set()
        if isinstance(event, RunStarted) and self.name:
            self._safely(self.db.name_run, self.run_id, self.name)
        if isinstance(event, RunFinished) and self._timed_since is not None:
            self._safely(self.db.end_timed_section, self.run_id, None)  # a timed call that raised
            self._timed_since = None

    # -- taking turns with the pages -------------------------------------------------

    def _take_turn(self, starting: bool) -> None:
        """Before a timed call: let the pages catch up, tell them to hold still, let them settle. After: say so."""
        if not starting:
            started, self._timed_since = self._timed_since, None
            self._safely(self.db.end_timed_section, self.run_id, started, self._timer_started)
            return
        began = time.monotonic()
        self._safely(self._flush)  # what the pages should draw first: the latest progress and previews
        watching = self._safely(self.db.watchers, self.run_id, WATCH_TTL) or []
        if watching:
            self._wait_for_pages(lambda pages: any(page.shown_items < self._items for page in pages), CATCH_UP_LIMIT)
        self._timed_since = self._safely(self.db.start_timed_section, self.run_id)
        if watching:
            self._wait_for_pages(_still_drawing, SETTLE_LIMIT)
        self._timer_started = time.time()
        self.waited_seconds += time.monotonic() - began

    def _wait_for_pages(self, busy: Callable[[list], bool], limit: float) -> None:
        """Wait while ``busy(pages)`` holds for the pages following the run, at most ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self.cancel.is_set():
            pages = self._safely(self.db.watchers, self.run_id, WATCH_TTL) or []
            if not pages or not busy(pages):
                return
            time.sleep(TURN_POLL)

    def _safely(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``; a database that cannot be written never stops the run (the failure is logged)."""
        try:
            return call(*args)
        except Exception:
            log.exception("could not record the live state of run %s", self.run_id)
            return None

    # -- the writing thread ----------------------------------------------------------

    def _flush(self) -> None:
        with self._write_lock:
            with self._lock:
                progress, self._progress = self._progress, None
                previews, self._previews = self._previews, []
            if progress is not None:
                self.db.update_progress(
                    self.run_id,
                    stoppable=True,
                    launched_by=self.launched_by,
                    estimated_seconds=self.estimated_seconds,
                    **progress,
                )
            for preview in previews:
                self.db.add_preview(preview)

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._flush()
                if not self.cancel.is_set() and self.db.stop_requested(self.run_id):
                    self.cancel.set()
            except Exception:  # the run goes on even if its live state cannot be written
                log.exception("could not record the live state of run %s", self.run_id)

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._closed.set()
        self._wake.set()
        self._thread.join(10)
        try:
            self._flush()
        except Exception:
            log.exception("could not record the live state of run %s", self.run_id)

    def __enter__(self) -> LiveRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _still_drawing(pages: list) -> bool:
    """Whether a page is drawing now, or its browser may still be painting what it was sent."""
    now = time.time()
    for page in pages:
        if page.drawing_since is not None and now - page.drawing_since < STALE_DRAWING:
            return True
        if page.settled_at is not None and page.settled_at > now:
            return True
    return False
