"""Streamlit blocks more than one page draws: errors, charts, the table, previews, run status."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from storage.bench import Measurement, PreviewReady, ResultsDB, RunRecord
from storage.bench.estimate import format_duration
from storage.bench.results.history import MAX_NAME as MAX_RUN_NAME
from storage.errors import StorageError

from . import charts, previews, summary, watching
from .runner import RunView
from .text import plain

LIVE_INTERVAL = 0.15  # a running run's live part asks for its next turn this often (it waits for news)
WATCH_KEY = "_run_watch"  # this session's RunWatch
SHARE_HELP = (
    "One PNG of this result (title, settings, the machine, the charts and the images read back), "
    "ready to paste in a chat or an issue"
)

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
    ("pages/4_Advise.py", "Advise", ":material/recommend:"),
)


def setup_page(title: str) -> None:
    """Every page's first call: the browser tab's title, a wide layout and the page links."""
    st.set_page_config(page_title=f"{title} · Image Storage Lab", page_icon="🧪", layout="wide")
    with st.sidebar:
        st.markdown("### :material/science: Image Storage Lab")
        for page, label, icon in PAGES:
            page_link(page, label, icon)


def show_error(error: BaseException | str, what: str | None = None) -> None:
    """A library error as a sentence on the page, never a traceback; its text shown as it is (no Markdown)."""
    if isinstance(error, StorageError) or isinstance(error, str):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    st.error(plain(f"{what}: {text}" if what else text), icon=":material/error:")


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
    """A link to another page (its label shown as text); plain text when the page is shown on its own (as in tests)."""
    try:
        st.page_link(page, label=plain(label), icon=icon, query_params=dict(query_params or {}) or None)
    except Exception:  # the page is not part of a multipage app (a page run on its own, as in tests)
        st.markdown(f"{icon or ''} {plain(label)}")


# Column widths (pixels) that keep each table inside the page of a 1,400-pixel-wide window: its
# content column is 940 pixels beside the sidebar. A cell's whole text shows on hover.
TABLE_WIDTH = 940
ONE_RUN_TABLE_WIDTH = 820  # a single run's tables fit the content column of a 1,280-pixel window
COLUMN_WIDTHS = {
    "Run": 170,
    "Format": 165,  # "In memory (no storage)" whole
    "Operation": 120,
    "MB apparent / allocated": 165,
    "Verified": 65,
    "Others' CPU": 90,
    "Share of ceiling": 110,
    "Bytes/image": 85,
}
NUMBER_WIDTH = 70


def column_widths(columns: Sequence[str]) -> dict[str, int]:
    """Each column's width in pixels: the wide ones from :data:`COLUMN_WIDTHS`, the others narrow."""
    return {name: COLUMN_WIDTHS.get(name, NUMBER_WIDTH) for name in columns}


def measurement_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """The timings table as shown, and the columns that say the same on every row (said once, above it).

    The disk columns go to their own table (:func:`charts.disk_table_frame`): they belong to a
    store, not to each operation timed on it, and with them the table ran off the page's right edge.
    """
    table = charts.table_frame(frame)
    if table.empty:
        return table, {}
    empty = [  # one repeat has no spread; a run without the loader has no workers nor ceiling
        name
        for name in ("Spread", "Workers", "Share of ceiling", "Resize")
        if name in table and (table[name] == "-").all()
    ]
    same = {
        name: table[name].iloc[0]
        for name in ("Cache", "Repeats", "Keeps", "Resize")
        if name in table and name not in empty and table[name].nunique() == 1
    }
    # MB/s, IQR and min – max are in the charts' tooltips and the exports; the spread says how far apart the repeats are
    table = table.drop(columns=[*same, *empty, *charts.DISK_TABLE_COLUMNS, "MB/s", "IQR", "Min – max"])
    table.insert(3 + ("Run" in table), "Verified", table.pop("Verified"))  # seen without scrolling
    return table, same


def disk_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The disk table as shown: one row per store; "× source files" only for photos."""
    table = charts.disk_table_frame(frame)
    if not table.empty and (table["× source files"] == "-").all():
        table = table.drop(columns=["× source files"])
    return table


def _show_table(table: pd.DataFrame, key: str) -> None:
    config = {name: st.column_config.Column(width=width) for name, width in column_widths(table.columns).items()}
    st.dataframe(table, hide_index=True, key=key, width="content", column_config=config)


def render_table(frame: pd.DataFrame, key: str) -> None:
    """The measurements (one row each), then disk use (one row per store), each fitting the page.

    The training loader's rows have a table of their own: only they have workers and a
    ceiling, and with those two columns beside the others a table ran past a 1,280-pixel window.
    """
    if frame.empty:
        return
    loader, said = frame["operation"] == "loader", ""
    for rows, part in ((frame[~loader], key), (frame[loader], f"{key}-loader")):
        table, same = measurement_table(rows)
        if table.empty:
            continue
        if part != key:
            st.caption("Training loader: one row per format, count and number of DataLoader workers")
            table = table.drop(columns=["Operation"])
        common = " · ".join(f"{name}: {value}" for name, value in same.items())
        if common and common != said:  # said once when both tables share it
            st.caption(plain(common + " (every row)"))
        said = common
        _show_table(table, part)
    disk = disk_table(frame)
    if not disk.empty:
        st.caption("Disk use: one row per store")
        _show_table(disk, f"{key}-disk")
    failed = frame[frame["error"].notna()]
    for _, row in failed.head(5).iterrows():
        st.error(
            plain(
                f"{row['format']}, {row['count']:,} images, {row['operation_label']} ({row['cache']}): {row['error']}"
            )
        )
    for line in charts.source_ratio_lines(frame):
        st.caption(f":material/photo_library: {plain(line)}")


def render_summary(measurements: Sequence[Measurement]) -> None:
    """What the run found at its largest count (fastest to write, to read, smallest), and what to read with care."""
    count, found = summary.findings(measurements)
    if found:
        with st.container(border=True, key="run-summary"):
            st.markdown(f"**At {count:,} image{'s' if count != 1 else ''}**")
            st.markdown("\n".join(f"- {plain(finding.sentence())}" for finding in found))
    for line in summary.cautions(measurements):
        st.caption(f":material/warning: {plain(line)}")


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
        name_column.markdown(f"**{plain(row.label)}**  \n{mark}{psnr}")
        # PNG, not Streamlit's default JPEG for RGB: the pixels shown are exactly the pixels read back.
        # At their own size (the browser would smooth a scaled image).
        width = max(image.width for image in row.images)
        pngs = [_png_bytes(image.tobytes(), image.mode, image.size) for image in row.images]
        images_column.image(pngs, caption=[plain(text) for text in row.captions], output_format="PNG", width=width)


@st.cache_data(show_spinner=False, max_entries=256)
def _png_bytes(pixels: bytes, mode: str, size: tuple[int, int]) -> bytes:
    """One preview as PNG, encoded once: a running run redraws its previews every second in every tab."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes(mode, size, pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def render_status(view: RunView) -> None:
    """The run's status box: progress by estimated time and what is measured now, or how it ended.

    A plain bordered box with a fixed layout (not ``st.status``), so that redrawing it
    twice a second neither flips its icon nor folds it away.
    """
    elapsed = format_duration(view.elapsed)
    run = f"Run {plain(view.label)}"
    count = len(view.measurements)
    if view.running:
        with st.container(border=True, key="run-status"):
            finishing = view.total_steps and count >= view.total_steps
            if finishing:
                left = " · finishing: deleting the stores it wrote"
            elif view.remaining_seconds is not None:
                left = f" · about {format_duration(view.remaining_seconds)} left"
            else:
                left = ""
            doing = "is stopping…" if view.stop_requested else "is measuring"
            origin = "" if view.from_dashboard else " (started from the command line)"
            st.markdown(f":material/hourglass_top: **{run} {doing}**{origin} · {elapsed} elapsed{left}")
            st.progress(view.fraction, text=f"Now: {plain(view.message)}" if view.message else "Now: starting…")
            total = f"{view.total_steps:,}" if view.total_steps else "…"
            estimate = (
                f" · estimated {format_duration(view.estimated_seconds)} in all"
                if view.estimated_seconds is not None
                else ""
            )
            st.caption(
                f"{view.fraction:.0%} of the estimated time · {count:,} of {total} measurements recorded{estimate} · "
                "this page holds still while a call is timed and catches up right after, so that watching "
                "does not slow the run down"
            )
        return
    if view.status == "finished":
        st.success(
            f"{run} finished in {elapsed}: {count} measurements, every store read back and verified.",
            icon=":material/check_circle:",
        )
    elif view.status == "cancelled":
        st.warning(
            f"{run} was stopped after {elapsed}; the {count} measurements taken so far are kept.",
            icon=":material/stop_circle:",
        )
    elif view.status == "interrupted":
        st.warning(
            f"{run} was interrupted after {elapsed} ({plain(view.error or 'its process ended')}); "
            f"the {count} measurements taken before are kept.",
            icon=":material/warning:",
        )
    elif view.status == "failed" and count:
        show_error(view.error or "the run failed", what=f"Run {view.run_id} finished with problems")
    else:
        show_error(view.error or "the run could not start", what="The run could not start")


@st.cache_data(show_spinner=False, max_entries=128)
def _cached_spec(name: str, key: Hashable, _measurements: Sequence[Measurement], arrow: bool = False) -> dict | None:
    build = dict(CHARTS)[name]
    chart = build(charts.measurements_frame(_measurements))
    if chart is None:
        return None
    spec = charts.chart_spec(chart, validate=False)
    return with_arrow_datasets(spec) if arrow else spec


def with_arrow_datasets(spec: dict) -> dict:
    """``spec`` with its named datasets as Arrow IPC bytes, which Streamlit sends on as they are.

    Given rows, Streamlit converts each dataset to Arrow (through pandas) every time a chart
    is drawn. A running run's page redraws its chart several times a second in every tab
    that follows it, and that conversion was the largest cost of a redraw, enough to delay
    the charts of two tabs by over a second on two cores. Converted once per new
    measurement and cached, a redraw only copies bytes. (The export and Share pictures
    need the rows: they use the specs as built.)
    """
    datasets = spec.get("datasets")
    if not datasets:
        return spec
    converted = {name: _arrow_bytes(rows) for name, rows in datasets.items()}
    return {**spec, "datasets": converted}


def _arrow_bytes(rows: list[dict]) -> bytes:
    """Rows as the Arrow IPC stream Streamlit itself makes from a DataFrame."""
    import pyarrow as pa

    table = pa.Table.from_pandas(pd.DataFrame(rows))
    sink = pa.BufferOutputStream()
    with pa.RecordBatchStreamWriter(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@st.cache_data(show_spinner=False)
def _preload_spec() -> dict:
    return charts.chart_spec(charts.preload_chart())


def preload_charts(key: str) -> None:
    """An invisible 1-pixel chart, so the browser has its chart library ready before the first real chart."""
    st.vega_lite_chart(_preload_spec(), key=key, width="content")


def run_chart_specs(
    run_id: str,
    measurements: Sequence[Measurement],
    names: Sequence[str] = tuple(name for name, _ in CHARTS),
    for_display: bool = False,
) -> dict[str, dict]:
    """The charts ``names`` of one run, each built once per new measurement and shared by every tab showing it.

    ``for_display``: specs only for :func:`render_charts`, their data already in Arrow
    (:func:`with_arrow_datasets`); exports and Share need the specs as built.
    """
    key = (run_id, len(measurements))
    specs = {}
    for name in names:
        spec = _cached_spec(name, key, list(measurements), arrow=for_display)
        if spec is not None:
            specs[name] = spec
    return specs


@st.cache_data(show_spinner=False, max_entries=16)
def _stored_previews(db_path: str, run_id: str, count: int) -> list[PreviewReady]:
    from . import resources

    return resources.results_db(db_path).previews(run_id)


def stored_previews(db: ResultsDB, run_id: str, count: int) -> list[PreviewReady]:
    """The previews the run kept in the database (``count`` of them, which keys the cache)."""
    if not count:
        return []
    return _stored_previews(str(db.path), run_id, count)


BUTTONS_PER_ROW = 4


def download_buttons(
    files: Sequence[tuple[str, Callable[[], bytes | str] | bytes | str, str, str]], key_prefix: str
) -> None:
    """Rows of download buttons: (label, data or a function making it, file name, MIME type).

    At most :data:`BUTTONS_PER_ROW` to a row: eight charts' buttons in one row cut every label short.
    """
    for first in range(0, len(files), BUTTONS_PER_ROW):
        columns = st.columns(min(BUTTONS_PER_ROW, max(1, len(files))))  # every row as wide as the first
        for column, (label, data, file_name, mime) in zip(columns, files[first : first + BUTTONS_PER_ROW]):
            column.download_button(
                label, data=data, file_name=file_name, mime=mime, key=f"{key_prefix}-{file_name}", on_click="ignore"
            )


def share_button(
    records: Sequence[RunRecord],
    specs: Mapping[str, dict],
    preview_items: Sequence[PreviewReady],
    file_name: str,
    key: str,
    measurements: Sequence[Measurement] = (),
) -> None:
    """The "Share" button: downloads the whole result as one PNG (made when pressed).

    ``measurements``: for photos, each store's bytes against the source files are said in the picture.
    """
    from . import share

    notes = charts.source_ratio_lines(charts.measurements_frame(measurements)) if measurements else []
    if measurements:  # what the run found, and which figures to read with care, as the page says them
        notes = [*filter(None, [summary.summary_line(measurements)]), *summary.cautions(measurements), *notes]
    st.download_button(
        "Share",
        data=functools.partial(
            share.share_png,
            list(records),
            dict(specs),
            list(preview_items),
            notes=notes,
            measurements=list(measurements) if len(records) == 1 else [],  # the table is one run's
        ),
        file_name=file_name,
        mime="image/png",
        icon=":material/share:",
        help=SHARE_HELP,
        key=key,
        on_click="ignore",
    )


RUN_NAME_KEY = "run_name"


def run_name_input() -> str | None:
    """The optional name of the next run (shown in legends, Results and Share; kept in the database and exports)."""
    text = st.text_input(
        "Name (optional)",
        key=RUN_NAME_KEY,
        max_chars=MAX_RUN_NAME,
        placeholder="e.g. lmdb after the fix",
        help="A label for this run in the charts' legends, on the Results page, in Share pictures and exports",
    )
    return " ".join(text.split()) or None


def yield_to_clicks() -> None:
    """A point where Streamlit may interrupt the page: reading the session state is one (a click reruns the page)."""
    _ = WATCH_KEY in st.session_state


def run_watch(db: ResultsDB, run_id: str) -> watching.RunWatch:
    """This page's :class:`~dashboard.watching.RunWatch` of ``run_id`` (kept in the session between redraws)."""
    watch = st.session_state.get(WATCH_KEY)
    if watch is None or watch.run_id != run_id or watch.db is not db:
        if watch is not None:
            watch.gone()
        watch = watching.RunWatch(db, run_id, watching.new_watcher_id(), yield_point=yield_to_clicks)
        st.session_state[WATCH_KEY] = watch
    return watch


def session_ending(error: BaseException) -> bool:
    """Whether ``error`` is Streamlit ending this page's session (a tab closed or reloaded), not a rerun."""
    return type(error).__name__ == "StopException"
