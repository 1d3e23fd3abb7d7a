"""Streamlit blocks more than one page draws: errors, charts, the table, previews, run status."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from storage.bench import PreviewReady
from storage.bench.estimate import format_duration
from storage.errors import StorageError

from . import charts, previews
from .runner import JobSnapshot

CHARTS = (
    ("time", charts.time_chart),
    ("rate", charts.rate_chart),
    ("disk", charts.disk_chart),
    ("loader", charts.loader_chart),
)


PAGES = (
    ("app.py", "Home", ":material/home:"),
    ("pages/1_Run.py", "Run", ":material/play_circle:"),
    ("pages/2_Results.py", "Results", ":material/bar_chart:"),
    ("pages/3_Explore.py", "Explore", ":material/image_search:"),
)


def setup_page(title: str) -> None:
    """Every page's first call: the browser tab's title, a wide layout and the page links."""
    st.set_page_config(page_title=f"{title} · Image Storage Lab", page_icon="🧪", layout="wide")
    with st.sidebar:
        st.markdown("### :material/science: Image Storage Lab")
        for page, label, icon in PAGES:
            page_link(page, label, icon)


def show_error(error: BaseException | str, what: str | None = None) -> None:
    """A library error as a sentence on the page, never a traceback."""
    if isinstance(error, StorageError) or isinstance(error, str):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    st.error(f"{what}: {text}" if what else text, icon=":material/error:")


def init_state(values: Mapping[str, Any]) -> bool:
    """Give widgets whose key is not in the session yet their starting value; True if any was missing."""
    missing = False
    for key, value in values.items():
        if key not in st.session_state:
            st.session_state[key] = value
            missing = True
    return missing


def sync_query_params(params: Mapping[str, str]) -> None:
    """Make the URL say ``params`` (only written when it changes, so the history stays clean)."""
    wanted = {key: str(value) for key, value in params.items() if value not in (None, "")}
    if dict(st.query_params.to_dict()) != wanted:
        st.query_params.from_dict(wanted)


def chart_specs(
    frame: pd.DataFrame, memo_key: Hashable | None = None, slot: str = "charts", min_interval: float = 0.0
) -> dict[str, dict]:
    """Vega-Lite specs of the time, rate and disk charts, rebuilt only when ``memo_key`` changes.

    Building the Altair charts takes a few tenths of a second and the browser redraws
    every chart it is sent. A live run refreshes the page twice a second, so the specs are
    kept in the session until new measurements change ``memo_key``, and (with
    ``min_interval``) at most that often, which leaves the CPU to the run being measured.
    """
    memo_slot = f"_memo_{slot}"
    memo = st.session_state.get(memo_slot)
    now = time.monotonic()
    if memo_key is not None and memo is not None:
        same = memo[0] == memo_key
        recent = now - memo[2] < min_interval and memo[1]
        if same or recent:
            return memo[1]
    specs = {}
    for name, build in CHARTS:
        chart = build(frame)
        if chart is not None:
            specs[name] = charts.chart_spec(chart)
    if memo_key is not None:
        st.session_state[memo_slot] = (memo_key, specs, now)
    return specs


def render_charts(
    specs: Mapping[str, dict], key_prefix: str, names: Sequence[str] = ("time", "rate", "disk", "loader")
) -> None:
    """The charts named (by default all: elapsed time, images per second, disk use, training loader)."""
    for name, _ in CHARTS:
        if name in specs and name in names:
            st.vega_lite_chart(specs[name], key=f"{key_prefix}-{name}", width="content")


def page_link(page: object, label: str, icon: str | None = None, query_params: Mapping[str, str] | None = None) -> None:
    """A link to another page; plain text when the page is shown on its own (as in tests)."""
    try:
        st.page_link(page, label=label, icon=icon, query_params=dict(query_params or {}) or None)
    except Exception:  # the page is not part of a multipage app (a page run on its own, as in tests)
        st.markdown(f"{icon or ''} {label}")


def render_table(frame: pd.DataFrame, key: str) -> None:
    table = charts.table_frame(frame)
    if table.empty:
        return
    st.dataframe(table, hide_index=True, key=key, width="stretch")
    failed = frame[frame["error"].notna()]
    for _, row in failed.head(5).iterrows():
        st.error(f"{row['format']}, {row['count']:,} images, {row['operation_label']} ({row['cache']}): {row['error']}")


def render_previews(items: Sequence[PreviewReady], count: int | None = None) -> None:
    """The same ids read back from every store of one count, side by side, enlarged."""
    rows = previews.preview_rows(items, count)
    if not rows:
        return
    shown = [p for p in items if p.count == rows[0].count]
    ids = ", ".join(f"#{i}" for i in shown[0].ids) if len({tuple(p.ids) for p in shown}) == 1 else ""
    what = f"The same images ({ids})" if ids else "The same images"
    st.markdown(f"**{what} read back from every store of {rows[0].count:,} images**")
    for row in rows:
        name_column, images_column = st.columns([1, 5], vertical_alignment="center")
        mark = "✓ verified" if row.verified else "✗ mismatch"
        psnr = f" · PSNR {row.psnr:.1f} dB" if row.psnr is not None else ""
        name_column.markdown(f"**{row.label}**  \n{mark}{psnr}")
        # PNG, not Streamlit's default JPEG for RGB: the pixels shown are exactly the pixels read back.
        # At their own size (the browser would smooth a scaled image).
        width = max(image.width for image in row.images)
        images_column.image(row.images, caption=row.captions, output_format="PNG", width=width)


def render_status(snapshot: JobSnapshot, stop_hint: bool = True) -> None:
    """The status box: a progress bar and what is being measured, or how the run ended."""
    elapsed = format_duration(snapshot.elapsed)
    run = f"Run {snapshot.run_id}" if snapshot.run_id else "The run"
    if snapshot.running:
        with st.status(f"{run} is measuring… ({elapsed})", state="running", expanded=True):
            st.progress(min(1.0, max(0.0, snapshot.fraction)), text=snapshot.message or "starting…")
            step = min(snapshot.step + 1, snapshot.total_steps) if snapshot.total_steps else 0
            done = len(snapshot.measurements)
            st.caption(
                f"Measurement {step} of {snapshot.total_steps or '…'} · {done} recorded · {elapsed} elapsed"
                + (" · press Stop to end the run early; what was measured is kept" if stop_hint else "")
            )
        return
    count = len(snapshot.measurements)
    if snapshot.status == "finished":
        st.success(
            f"{run} finished in {elapsed}: {count} measurements, every store read back and verified.",
            icon=":material/check_circle:",
        )
    elif snapshot.status == "cancelled":
        st.warning(
            f"{run} was stopped after {elapsed}; the {count} measurements taken so far are kept.",
            icon=":material/stop_circle:",
        )
    elif snapshot.status == "failed":
        show_error(snapshot.error or "the run failed", what=f"{run} finished with problems")
    else:
        show_error(snapshot.error or "the run could not start", what="The run could not start")


def download_buttons(
    files: Sequence[tuple[str, Callable[[], bytes | str] | bytes | str, str, str]], key_prefix: str
) -> None:
    """A row of download buttons: (label, data or a function making it, file name, MIME type)."""
    columns = st.columns(max(1, len(files)))
    for column, (label, data, file_name, mime) in zip(columns, files):
        column.download_button(
            label, data=data, file_name=file_name, mime=mime, key=f"{key_prefix}-{file_name}", on_click="ignore"
        )
