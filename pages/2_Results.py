"""Results page: past runs from the results database, overlaid, exported, deleted and shared.

``?runs=<id>,<id>`` selects the runs, so a copied link shows the same comparison. Runs
in progress (started here or from the command line) are listed as running and the page
follows them: it redraws when a run starts, ends or records a measurement.
"""

import functools

import streamlit as st

from dashboard import charts, config, resources, runner, state, views
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
    """Redraw the page when the database changes (a run starts, ends or records a measurement)."""
    if resources.results_db().changes() != seen:
        st.rerun()


st.fragment(follow, run_every=1.0)(db.changes())
running = runner.running_runs(db)
for record in running:
    source = "the dashboard" if runner.launched_from_dashboard(db.progress(record.id)) else "the command line"
    st.info(
        f"Run **{record.id}** is running (started from {source}, {len(db.measurements(record.id))} measurements "
        "so far); this page follows it.",
        icon=":material/hourglass_top:",
    )
    views.page_link("pages/1_Run.py", f"Watch run {record.id} live", ":material/play_circle:", {"run": record.id})


def describe(run_id: str) -> str:
    record = by_id.get(run_id)
    if record is None:
        return run_id
    counts = record.counts
    span = f"{min(counts):,}–{max(counts):,}" if len(counts) > 1 else (f"{counts[0]:,}" if counts else "?")
    when = record.started_at.replace("T", " ").rstrip("Z")[:16]
    return f"{when} · {record.status} · {', '.join(record.backends)} · {span} images · {run_id}"


flash = st.session_state.pop("results_flash", None)
if flash:
    st.success(flash)

if not records:
    st.info(
        "No runs yet: start one on the Run page, and it appears here as soon as it has begun.",
        icon=":material/touch_app:",
    )
    views.page_link("pages/1_Run.py", "Run a benchmark", ":material/play_circle:")
    st.stop()

# -- selection: the link, else the newest run -------------------------------------------------
wanted = state.parse_run_ids({key: st.query_params.get_all(key) for key in st.query_params})
missing = [run_id for run_id in wanted if run_id not in by_id]
if RUNS not in st.session_state:
    st.session_state[RUNS] = [run_id for run_id in wanted if run_id in by_id] if wanted else [records[0].id]
    if missing:
        st.warning(f"Not in the results database (deleted, or recorded on another machine): {', '.join(missing)}.")
else:  # runs deleted elsewhere disappear from the selection instead of breaking the widget
    st.session_state[RUNS] = [run_id for run_id in st.session_state[RUNS] if run_id in by_id]

selected = st.multiselect("Runs", list(by_id), key=RUNS, format_func=describe, placeholder="Pick runs to compare")
views.sync_query_params({"runs": ",".join(selected)} if selected else {})

if not selected:
    st.info("Pick one or more runs in **Runs** to see their charts.", icon=":material/touch_app:")
    st.stop()

with st.expander("About the selected runs", expanded=len(selected) > 1):
    for run_id in selected:
        record = by_id[run_id]
        environment = record.environment or {}
        machine = environment.get("cpu_model") or environment.get("hostname") or "unknown machine"
        filesystem = (environment.get("filesystem") or {}).get("type", "")
        source = (record.source or {}).get("description", "")
        parameters = record.parameters or {}
        st.markdown(
            f"**{run_id}** — {record.status}; {source}; operations {', '.join(parameters.get('operations', []))}; "
            f"cache {', '.join(parameters.get('caches', []))}; {parameters.get('repeats', '?')} repeat(s); "
            f"{machine}{' · ' + filesystem if filesystem else ''}" + (" · imported" if record.imported else "")
        )
        if record.error:
            st.caption(f":material/warning: {record.error}")

measurements = db.measurements(selected)
if not measurements:
    st.info("The selected runs have no measurements yet (a run that was stopped at once, or is just starting).")
    st.stop()
frame = charts.measurements_frame(measurements)
specs = views.chart_specs(frame, memo_key=(tuple(selected), len(measurements)), slot="results")
views.render_charts(specs, "results")
views.render_table(frame, key="results-table")

# -- share and download -----------------------------------------------------------------------
st.subheader("Share and download")
st.markdown("**Link to this comparison** (it selects the same runs):")
link = state.share_url(st.context.url, {"runs": ",".join(selected)})
st.code(link, language=None)
hint = state.link_hint(link)
if hint:
    st.caption(f":material/info: {hint}")
name = selected[0] if len(selected) == 1 else f"{len(selected)}-runs"
files = [
    ("Download CSV", functools.partial(db.export_csv, list(selected)), f"results-{name}.csv", "text/csv"),
    ("Download JSON", functools.partial(db.export_json, list(selected)), f"results-{name}.json", "application/json"),
]
views.download_buttons(files, key_prefix="results-data")
views.share_button(
    [by_id[run_id] for run_id in selected],
    specs,
    views.stored_previews(db, selected[0], db.count_previews(selected[0])) if len(selected) == 1 else [],
    file_name=f"image-storage-lab-{name}.png",
    key="results-share",
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


# -- delete and import ------------------------------------------------------------------------
def delete_selected(run_ids: list[str]) -> None:
    deleted = []
    for run_id in run_ids:
        try:
            resources.results_db().delete_run(run_id)
            deleted.append(run_id)
        except StorageError as error:
            st.session_state["results_flash"] = f"Could not delete {run_id}: {error}"
    st.session_state[RUNS] = []
    st.session_state["results_confirm_delete"] = False
    if deleted:
        st.session_state["results_flash"] = f"Deleted {len(deleted)} run(s): {', '.join(deleted)}."


with st.expander("Delete runs"):
    confirm = st.checkbox(
        f"Yes, delete the {len(selected)} selected run(s) and their measurements for good", key="results_confirm_delete"
    )
    st.button("Delete selected runs", disabled=not confirm, on_click=delete_selected, args=(list(selected),))

with st.expander("Import results from another machine"):
    upload = st.file_uploader("Results JSON (exported here or by `python -m storage export`)", type=["json"])
    if upload is not None and st.button("Import"):
        try:
            imported = db.import_json(upload.getvalue().decode("utf-8", errors="replace"))
        except StorageError as error:
            views.show_error(error, what="The file cannot be imported")
        else:
            st.session_state.pop(RUNS, None)
            st.query_params["runs"] = ",".join(imported)
            st.session_state["results_flash"] = f"Imported {len(imported)} run(s)."
            st.rerun()

st.caption(f"Results database: `{config.display_path(db.path)}`")
