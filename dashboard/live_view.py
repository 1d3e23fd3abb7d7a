"""The Run page's live part: a running run redrawn between its timed calls, the time chart first.

The page follows the run through :class:`~dashboard.watching.RunWatch`: it holds still while
a call is timed and draws as soon as something new was recorded outside one. A turn with a
new measurement draws it on the elapsed-time chart (what has to be on the screen within a
second) and leaves the heavier rest (the images read back, the other charts, the table) as
it was drawn last; the next turn, right after, brings the rest up to date. So a new point
never waits behind the table and four charts being built and painted, and the run, which
waits for the page to have drawn everything before its next timed call, loses only a
moment outside its timers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import streamlit as st

from storage.bench import ResultsDB

from . import runner, views, watching

LIVE_DRAW = "run_live_draw"  # which full draw of the page the live part last drew in
DETAILS_VIEW = "run_live_details"  # the RunView the heavier part was last drawn from
CHART_COUNT = "run_live_chart_count"  # how many measurements the time chart last showed

# An ended run's last points stay this long on the live chart before the whole page is redrawn
# (a redraw of the page builds its charts anew: the browser paints them again, later).
ENDED_PAUSE = 1.0

# The browser repaints for as long as anything on the page fades, slides or shimmers. While a
# run is live, Streamlit fades every element the fragment has not redrawn yet ("stale"), slides
# the progress bar and shimmers a placeholder where a chart is still loading: a timed call of a
# second or more saw headless Chromium take about a tenth of a core the whole time. Nothing on
# the Run page moves, so the browser is idle between draws. The style is the page's first
# element, so that a full redraw keeps it in place instead of dropping it for a moment.
STILL_CSS = """<style>
*, *::before, *::after { transition: none !important; animation: none !important; }
[data-stale="true"] { opacity: 1 !important; }
</style>"""

Show = Callable[[runner.RunView], None]


def hold_still() -> None:
    """Nothing on the page is animated (see :data:`STILL_CSS`): the Run page's first element."""
    st.html(STILL_CSS)


def follow(db: ResultsDB, run_id: str, page_draw: str, show_progress: Show, show_details: Show) -> None:
    """One turn of the live part (the body of a fragment rerun as soon as it has drawn).

    ``page_draw`` tells this page's full draws apart from the fragment's own reruns: a full
    draw (a reload, a click) waits a moment at most for its turn, a live rerun as long as a
    timed call runs. A run that has ended, or was deleted, redraws the whole page.
    """
    watch = views.run_watch(db, run_id)
    first = st.session_state.get(LIVE_DRAW) != page_draw
    st.session_state[LIVE_DRAW] = page_draw
    state, complete = None, True
    try:
        state = watch.wait_for_turn(max_wait=watching.FIRST_DRAW_WAIT if first else watching.FOLLOW_WAIT)
        current = runner.read_run(db, run_id)
        if current is None or (not current.running and _chart_shows(current, ENDED_PAUSE)):
            st.rerun()  # deleted, or ended: redraw the whole page (buttons, URL, the final state)
        show_progress(current)
        complete = _show_details(current, first, show_details)
    except BaseException as error:
        if views.session_ending(error):
            watch.gone()
            state = None
        raise
    finally:
        if state is not None:
            watch.drawn(state, complete=complete)


def _chart_shows(current: runner.RunView, for_seconds: float = 0.0) -> bool:
    """Whether the time chart has shown every measurement of ``current`` for ``for_seconds`` (since an earlier turn)."""
    shown = st.session_state.get(CHART_COUNT)
    if shown is None or shown[:2] != (current.run_id, len(current.measurements)):
        return False
    return time.monotonic() - shown[2] >= for_seconds


def _show_details(current: runner.RunView, first: bool, show_details: Show) -> bool:
    """The heavier part, from ``current`` or, on a turn that brought a new point, as last drawn; whether current.

    A run that has just ended gets its last points this way too: the whole page (with its
    Share picture) is redrawn on the next turn, once they are on the chart.
    """
    drawn: runner.RunView | None = st.session_state.get(DETAILS_VIEW)
    new_point = not _chart_shows(current)
    if new_point:
        st.session_state[CHART_COUNT] = (current.run_id, len(current.measurements), time.monotonic())
    mine = drawn is not None and drawn.run_id == current.run_id
    if mine and (not current.running or (new_point and not first and drawn.version != current.version)):
        show_details(drawn)
        return False
    if not current.running:
        return False  # nothing drawn yet to keep: the whole page draws it next
    show_details(current)
    st.session_state[DETAILS_VIEW] = current
    return True
