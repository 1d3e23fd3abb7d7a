"""A page following a live run takes turns with it, so that watching never slows down what is timed.

The run (:class:`storage.bench.live.LiveRecorder`) says in the results database when a
timed call runs; a page then holds still. Between timed calls the page draws, saying so in
the database (``run_watchers``): when it starts, when it has finished, how many items
(measurements and previews) it shows, and how long its browser may still take to paint
them. Before its next timed call the run waits until every page has drawn what was
recorded and has settled.

A :class:`RunWatch` is one page (one browser tab) following one run. Its
:meth:`~RunWatch.wait_for_turn` blocks the page's live part until there is something to
draw and no call is being timed, looking at the database every few hundredths of a second
(one small query); ``yield_point`` is called in between so that a click (Stop) interrupts
the wait at once (``st.session_state`` access is such a point in Streamlit). Plain Python:
the pages pass in what Streamlit gives them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from storage.bench import ResultsDB
from storage.bench.results import LiveState

POLL_SECONDS = 0.03  # between looks at the database while waiting for a turn
SEEN_EVERY = 0.4  # a waiting page says it is there this often (the run forgets pages silent for 5 s)
REDRAW_EVERY = 1.0  # with nothing new, the status (elapsed time, what is measured) is redrawn this often
FOLLOW_WAIT = 60.0  # the longest a page's live part waits for a turn before drawing anyway
FIRST_DRAW_WAIT = 2.0  # on a page's full draw (a reload, a click) it waits at most this long
HEAVY_SETTLE = 0.5  # seconds a browser may take to paint new charts, after the page has sent them
LIGHT_SETTLE = 0.1  # ... and a redrawn status line
MAX_SETTLE = 1.0  # the longest a run waits for a browser to paint, however busy the machine


def new_watcher_id() -> str:
    """An id for one page (a browser tab's session)."""
    return uuid.uuid4().hex[:12]


@dataclass
class RunWatch:
    """One page following one run through the results database.

    Args:
        db: the results database.
        run_id: the run followed.
        watcher: this page's id (:func:`new_watcher_id`, kept in the page's session).
        yield_point: called while waiting, so that the page can be interrupted (a click).
        heavy_settle: how long its browser may take to paint new charts on a quiet machine.
    """

    db: ResultsDB
    run_id: str
    watcher: str
    yield_point: Callable[[], object] = lambda: None
    heavy_settle: float = HEAVY_SETTLE  # on a quiet machine, after new charts; longer as the load grows
    shown_items: int = -1
    drawn_at: float = 0.0
    _seen_at: float = field(default=0.0, repr=False)

    def wait_for_turn(self, max_wait: float = FOLLOW_WAIT, redraw_every: float = REDRAW_EVERY) -> LiveState | None:
        """Wait until no call is timed and there is news (or ``redraw_every`` has passed); then drawing begins.

        Returns the run's live state at that moment; None if the run is not in the database.
        A run that is not running any more returns at once (the page redraws whole). After
        ``max_wait`` seconds the page draws anyway (a run whose process died while timing).
        The database hears that this page is drawing before the last check, so a run that
        starts a timed call after it waits for this page to finish (see :meth:`drawn`).
        """
        began = time.monotonic()
        while True:
            state = self.db.live_state(self.run_id)
            if state is None or state.status != "running":
                return state
            waited_out = time.monotonic() - began >= max_wait
            if waited_out or (not state.timing and self._has_news(state, redraw_every)):
                self.db.note_watcher(self.run_id, self.watcher, drawing=True)
                state = self.db.live_state(self.run_id)  # checked again after saying so: no timed call begins unseen
                if state is None or not state.timing or waited_out:
                    return state
                self.db.note_watcher(self.run_id, self.watcher, drawing=False, settle_seconds=0.0)
            self._say_seen()
            self.yield_point()
            time.sleep(POLL_SECONDS)

    def _has_news(self, state: LiveState, redraw_every: float) -> bool:
        return items_of(state) != self.shown_items or time.monotonic() - self.drawn_at >= redraw_every

    def _say_seen(self) -> None:
        now = time.monotonic()
        if now - self._seen_at >= SEEN_EVERY:
            self.db.note_watcher(self.run_id, self.watcher)
            self._seen_at = now

    def drawn(self, state: LiveState | None, complete: bool = True) -> None:
        """The page has sent what it drew of ``state``; its browser paints it for a moment longer.

        ``complete`` False: only part of what is new was drawn (the time chart, not yet the
        rest); the page still counts as behind, so its next turn comes at once and the run
        waits for it before timing.
        """
        items = items_of(state) if state is not None else self.shown_items
        heavy = items != self.shown_items
        if complete:
            self.shown_items = items
        self.drawn_at = time.monotonic()
        self._seen_at = self.drawn_at
        self.db.note_watcher(
            self.run_id,
            self.watcher,
            drawing=False,
            shown_items=max(0, self.shown_items),
            settle_seconds=settle_seconds(self.heavy_settle if heavy else min(LIGHT_SETTLE, self.heavy_settle)),
        )

    def gone(self) -> None:
        """The page is closed or shows something else: the run stops waiting for it."""
        self.db.forget_watcher(self.run_id, self.watcher)


def settle_seconds(quiet: float) -> float:
    """How long a browser may take to paint: ``quiet`` on an idle machine, longer as the load exceeds the cores.

    A browser that still paints when the timer starts takes CPU from the timed call; on a
    machine busy with other work it paints slower, so the run waits longer (at most
    :data:`MAX_SETTLE`, outside its timers).
    """
    try:
        busy = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        busy = 1.0
    return min(MAX_SETTLE, quiet * max(1.0, busy))


def items_of(state: LiveState) -> int:
    """What a page has to have drawn to be up to date: the run's measurements and previews."""
    return state.measurements + state.previews


def wait_between_timed_calls(
    db: ResultsDB,
    run_ids: list[str],
    news: Callable[[], bool],
    yield_point: Callable[[], object] = lambda: None,
    max_wait: float = FOLLOW_WAIT,
) -> bool:
    """Wait until ``news()`` and none of ``run_ids`` is timing a call (at most ``max_wait`` s); whether there is news.

    For a page that redraws whole when something changes (the Results page) rather than
    following one run.
    """
    began = time.monotonic()
    while time.monotonic() - began < max_wait:
        if news():
            states = [db.live_state(run_id) for run_id in run_ids]
            if not any(state is not None and state.timing for state in states):
                return True
        yield_point()
        time.sleep(POLL_SECONDS)
    return news()
