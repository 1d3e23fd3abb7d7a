"""A run's live state in the results database, so that any page or process can follow and stop it.

:class:`LiveRecorder` takes the engine's events (pass :meth:`LiveRecorder.on_event` to
:func:`~storage.bench.run_experiment`) and files them in the results database under the
run's id: where the run is (step, fraction of its estimated time, what it measures now) and
the images read back from every store. It also checks a few times a second whether someone
asked the run to stop (:meth:`ResultsDB.request_stop`) and then sets the engine's cancel
event. The writing happens on a thread of its own: the engine's thread only swaps a few
values, so following a run adds next to nothing to what it measures.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .events import Event, PreviewReady, Progress, RunFinished, RunStarted
from .results import ResultsDB

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2  # seconds between writes of the progress and checks for a stop request


class LiveRecorder:
    """Files one run's progress and previews in ``db`` and honours stop requests for it.

    Args:
        db: the results database the run records its measurements in.
        run_id: the run's id (chosen before the run starts).
        cancel: the engine's cancel event; set when a stop is requested.
        forward: another event handler to call as well (optional).
        launched_by: who started the run, "dashboard" or "command line" (the pages say so).
        estimated_seconds: the run's estimated length, if the starter has not recorded it.

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
    ) -> None:
        self.db, self.run_id, self.cancel, self.forward, self.interval = db, run_id, cancel, forward, interval
        self.launched_by, self.estimated_seconds = launched_by, estimated_seconds
        self._lock = threading.Lock()
        self._progress: dict[str, Any] | None = None
        self._previews: list[PreviewReady] = []
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-recorder", daemon=True)
        self._thread.start()

    def on_event(self, event: Event) -> None:
        """The engine's event handler: keeps what is new, for the recorder's thread to write."""
        with self._lock:
            if isinstance(event, RunStarted):
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
                self._wake.set()
            elif isinstance(event, RunFinished):
                self._wake.set()
        if self.forward is not None:
            self.forward(event)

    def _flush(self) -> None:
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
