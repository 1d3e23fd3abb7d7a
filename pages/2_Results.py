"""Results page: past runs from the results database, overlaid, exported, deleted and shared.

``?runs=<id>,<id>`` selects the runs, so a copied link shows the same comparison. Runs
in progress (started here or from the command line) are listed as running and the page
follows them: it redraws when a run starts, ends or records a measurement.

A run that cannot be drawn (it breaks the results schema: written by hand, or by an old
version) is named with its problem and left out of the charts; the others are drawn, and
the delete control, above the charts, removes it. Everything a run's file or the link
says is shown as text. In read-only mode (``IMAGE_STORAGE_LAB_READ_ONLY``) nothing can be
deleted or imported.
"""

import functools

import streamlit as st

from dashboard import access, charts, config, resources, runner, share, state, views
from dashboard.text import plain, printable
from storage.bench import RunRecord
from storage.errors import StorageError

RUNS = "results_runs"
CHART_NAMES = {"time": "elapsed-time", "rate": "images-per-second", "disk": "disk-use", "loader": "training-loader"}

views.setup_page("Results")
st.title("Results")
st.caption("Every run recorded in the results database; select several to overlay them (one dash pattern per run).")

try:
    db = resources.results_db()
    records = db.list_runs()
except StorageError as error:
    views.show_error(error, what="The results database cannot be read")
    st.stop()

by_id: dict[str, RunRecord] = {record.id: record for record in records}


def follow(seen: tuple) -> None:
    """Redraw the page when the database changes (a run starts, ends or records a measurement).

    Never while a running run times a call: redrawing would take CPU from what it measures.
    """
    results = resources.results_db()
    if results.changes() != seen and not runner.any_timing(results):
        st.rerun()


st.fragment(follow, run_every=1.0)(db.changes())
running = runner.running_runs(db)
for record in running:
    source = "the dashboard" if runner.launched_from_dashboard(db.progress(record.id)) else "the command line"
    st.info(
        f"Run **{plain(record.id)}** is running (started from {source}, {record.measurement_count} measurements "
        "so far); this page follows it.",
        icon=":material/hourglass_top:",
    )
    views.page_link("pages/1_Run.py", f"Watch run {record.id} live", ":material/play_circle:", {"run": record.id})


def describe(run_id: str) -> str:
    """One run in the picker, as plain text (option labels are not Markdown)."""
    record = by_id.get(run_id)
    if record is None:
        return printable(run_id)
    try:
        counts = [int(count) for count in record.counts]
        span = f"{min(counts):,}–{max(counts):,}" if len(counts) > 1 else (f"{counts[0]:,}" if counts else "?")
        when = record.started_at.replace("T", " ").rstrip("Z")[:16]
        text = f"{when} · {record.status} · {', '.join(map(str, record.backends))} · {span} images · {run_id}"
        text = f"“{record.name}” · {text}" if record.name else text
    except (TypeError, ValueError, AttributeError):
        text = f"{run_id} · cannot be shown"
    return printable(text)


def problem_of(run_id: str) -> str | None:
    try:
        return db.run_problem(run_id)
    except Exception as error:  # a run damaged beyond the schema's words: said, never a traceback
        return f"{type(error).__name__}: {error}"


def about(record: RunRecord) -> dict[str, str]:
    """What a run measured, on what, kept how: "About the selected runs", as text (shown with ``plain``)."""
    environment = record.environment or {}
    parameters = record.parameters or {}
    filesystem = (environment.get("filesystem") or {}).get("type", "")
    machine = environment.get("cpu_model") or environment.get("hostname") or "unknown machine"
    note = " · ".join(filter(None, ["imported" if record.imported else "", record.error or ""]))
    row = {
        "Run": runner.run_title(record),
        "Status": record.status,
        "Data": (record.source or {}).get("description", ""),
        "Operations": ", ".join(map(str, parameters.get("operations", []))),
        "Cache": ", ".join(map(str, parameters.get("caches", []))),
        "Repeats": str(parameters.get("repeats", "?")),
        "Stores keep": share.kept_words(parameters).removeprefix("stores keep "),
        "Machine": f"{machine}{' · ' + filesystem if filesystem else ''}",
        "Note": note,
    }
    return {name: printable(value) for name, value in row.items()}


def import_uploaded(data: bytes) -> None:
    if access.read_only():
        return
    try:
        imported = resources.results_db().import_json(data.decode("utf-8", errors="replace"))
    except StorageError as error:
        st.session_state["results_import_error"] = str(error)
    else:
        st.session_state.pop(RUNS, None)
        st.query_params["runs"] = ",".join(imported)
        st.session_state["results_flash"] = f"Imported {len(imported)} run(s)."


def import_section() -> None:
    """The upload of a results JSON; what it holds is checked by the results schema before anything is kept."""
    with st.expander("Import results from another machine", expanded=not records):
        upload = st.file_uploader("Results JSON (exported here or by python -m storage export)", type=["json"])
        st.button(
            "Import",
            disabled=upload is None,
            on_click=import_uploaded,
            args=(upload.getvalue() if upload is not None else b"",),
        )
        if "results_import_error" in st.session_state:
            views.show_error(st.session_state.pop("results_import_error"), what="The file cannot be imported")


flash = st.session_state.pop("results_flash", None)
if flash:
    st.success(flash)

if not records:
    st.info(
        "No runs yet: start one on the Run page, and it appears here as soon as it has begun.",
        icon=":material/touch_app:",
    )
    views.page_link("pages/1_Run.py", "Run a benchmark", ":material/play_circle:")
    if not access.read_only():
        import_section()
    st.stop()

# -- selection: the link, else the newest run -------------------------------------------------
wanted = state.parse_run_ids({key: st.query_params.get_all(key) for key in st.query_params})
missing = [run_id for run_id in wanted if run_id not in by_id]
if RUNS not in st.session_state:
    st.session_state[RUNS] = [run_id for run_id in wanted if run_id in by_id] if wanted else [records[0].id]
    if missing:
        st.warning(
            f"Not in the results database (deleted, or recorded on another machine): {plain(', '.join(missing))}."
        )
else:  # runs deleted elsewhere disappear from the selection instead of breaking the widget
    st.session_state[RUNS] = [run_id for run_id in st.session_state[RUNS] if run_id in by_id]

selected = st.multiselect("Runs", list(by_id), key=RUNS, format_func=describe, placeholder="Pick runs to compare")
views.sync_query_params({"runs": ",".join(selected)} if selected else {})


# -- delete and import (before any drawing: a run that cannot be drawn can still be removed) ----
def delete_selected(run_ids: list[str]) -> None:
    if access.read_only():
        return
    deleted, refused = [], []
    for run_id in run_ids:
        record = resources.results_db().get_run(run_id)
        if record is not None and record.status == "running":
            refused.append(f"{run_id} is still running (stop it first)")
            continue
        try:
            resources.results_db().delete_run(run_id)
            deleted.append(run_id)
        except StorageError as error:
            refused.append(f"{run_id}: {error}")
    st.session_state[RUNS] = [run_id for run_id in run_ids if run_id not in deleted]
    st.session_state["results_confirm_delete"] = False
    words = [f"Deleted {len(deleted)} run(s): {', '.join(deleted)}." if deleted else ""]
    words += [f"Not deleted: {'; '.join(refused)}." if refused else ""]
    st.session_state["results_flash"] = plain(" ".join(filter(None, words)))


if access.read_only():
    st.caption(f":material/lock: {access.READ_ONLY_NOTE}")
else:
    with st.expander("Delete runs"):
        confirm = st.checkbox(
            f"Yes, delete the {len(selected)} selected run(s) and their measurements for good",
            key="results_confirm_delete",
        )
        st.button(
            "Delete selected runs",
            disabled=not confirm or not selected,
            on_click=delete_selected,
            args=(list(selected),),
        )
    import_section()

if not selected:
    st.info("Pick one or more runs in **Runs** to see their charts.", icon=":material/touch_app:")
    st.stop()

problems = {run_id: problem_of(run_id) for run_id in selected}
for run_id, problem in problems.items():
    if problem:
        st.warning(f"Run {plain(run_id)} cannot be shown: {plain(problem)}", icon=":material/warning:")
shown = [run_id for run_id in selected if not problems[run_id]]
if not shown:
    st.stop()

with st.expander("About the selected runs", expanded=len(shown) > 1):
    for run_id in shown:
        row = about(by_id[run_id])
        details = "; ".join(f"{name.lower()} {value}" for name, value in row.items() if name not in ("Run", "Note"))
        st.markdown(f"**{plain(row['Run'])}**: {plain(details)}")
        if row["Note"]:
            st.caption(f":material/info: {plain(row['Note'])}")

measurements = db.measurements(shown)
if not measurements:
    st.info("The selected runs have no measurements yet (a run that was stopped at once, or is just starting).")
    st.stop()
try:
    labels = {run_id: runner.run_title(by_id[run_id]) for run_id in shown}  # legends name runs by their names too
    frame = charts.measurements_frame(measurements, run_labels=labels)
    specs = views.chart_specs(frame, memo_key=(tuple(shown), len(measurements), *labels.values()), slot="results")
    views.render_charts(specs, "results")
    views.render_table(frame, key="results-table")
except Exception as error:  # past the schema's checks and still not drawable: said, and the page goes on
    st.warning(f"The selected runs cannot be drawn: {plain(f'{type(error).__name__}: {error}')}")
    specs = {}

# -- share and download -----------------------------------------------------------------------
st.subheader("Share and download")
st.markdown("**Link to this comparison** (it selects the same runs):")
link = state.share_url(st.context.url, {"runs": ",".join(selected)})
st.code(link, language=None)
hint = state.link_hint(link)
if hint:
    st.caption(f":material/info: {hint}")
name = shown[0] if len(shown) == 1 else f"{len(shown)}-runs"
files = [
    ("Download CSV", functools.partial(db.export_csv, list(shown)), f"results-{name}.csv", "text/csv"),
    ("Download JSON", functools.partial(db.export_json, list(shown)), f"results-{name}.json", "application/json"),
]
views.download_buttons(files, key_prefix="results-data")
views.share_button(
    [by_id[run_id] for run_id in shown],
    specs,
    views.stored_previews(db, shown[0], db.count_previews(shown[0])) if len(shown) == 1 else [],
    file_name=f"image-storage-lab-{name}.png",
    key="results-share",
    measurements=measurements,
)
chart_files = []
for key, spec in specs.items():
    chart_files.append(
        (
            f"{CHART_NAMES[key]}.png",
            functools.partial(charts.chart_png, spec),
            f"{CHART_NAMES[key]}-{name}.png",
            "image/png",
        )
    )
    chart_files.append(
        (
            f"{CHART_NAMES[key]}.svg",
            functools.partial(charts.chart_svg, spec),
            f"{CHART_NAMES[key]}-{name}.svg",
            "image/svg+xml",
        )
    )
if chart_files:
    st.markdown("**Charts as images:**")
    views.download_buttons(chart_files, key_prefix="results-charts")

st.caption(f"Results database: {plain(config.display_path(db.path))}")
