"""Run page: pick formats and counts, run the benchmark, watch charts and previews fill in.

The controls start from the URL (``?formats=png,lmdb&max_count=1000&...``, see
``dashboard.state``) and write themselves back to it. "Run benchmark" starts the engine in
a background thread of this browser session; the results area redraws every half second
while it runs, and "Stop" asks the engine to stop.
"""

import streamlit as st

from dashboard import charts, config, resources, runner, state, views
from storage import backend_info, backends
from storage.bench import CACHES, OPERATIONS, estimate_experiment, validate
from storage.bench.estimate import format_duration
from storage.datasets import describe_available_sources
from storage.errors import StorageError

JOB = "run_job"
SAVED = "run_controls"
W = state.RUN_WIDGETS

views.setup_page("Run")
st.title("Run a benchmark")
st.caption(
    "Each format writes the same images into a fresh store for every count, reads them back "
    "and checks every pixel; the timers cover only the storage calls."
)

available = backends()
job: runner.BenchmarkJob | None = st.session_state.get(JOB)
running = job is not None and job.running

# -- starting values: the link, else what this session had, else the defaults --------------
params = {key: st.query_params.get_all(key) for key in st.query_params}
url_controls, notes = state.parse_run_params(params, available)
link_given = any(
    key in params for key in ("formats", "max_count", "counts", "ops", "caches", "cold", "repeats", "source")
)
starting = url_controls if link_given or SAVED not in st.session_state else st.session_state[SAVED]
if views.init_state(state.run_widget_values(starting)):
    for note in notes:
        st.warning(f"The link could not be followed entirely: {note}.")

# -- controls ---------------------------------------------------------------------------------
sources = describe_available_sources()
auto_label = "full CIFAR-10" if sources["auto"] == "cifar10" else "bundled CIFAR-10 sample"
SOURCE_LABELS = {
    "auto": f"Automatic ({auto_label})",
    "sample": "Bundled CIFAR-10 sample (5,085 images)",
    "cifar10": "Full CIFAR-10 (60,000 images)" + ("" if sources["cifar10_present"] else " — not downloaded"),
    state.FOLDER: "An image folder…",
}

top = st.columns([3, 2, 1.3])
top[0].multiselect(
    "Formats",
    available,
    key=W["formats"],
    format_func=lambda name: backend_info(name).label,
    placeholder="Pick the formats to compare",
    help="\n".join(f"- **{backend_info(name).label}**: {backend_info(name).description}" for name in available),
)
for name in backends(available_only=False):
    if name not in available:
        top[0].caption(f":gray[~~{backend_info(name).label}~~ unavailable: {backend_info(name).unavailable_reason}]")
top[1].select_slider(
    "Number of images",
    options=list(state.COUNT_STEPS),
    key=W["max_count"],
    format_func=lambda count: f"{count:,}",
    help="Every power of ten up to this count is run: 1, 10, 100, …",
)
top[2].text_input(
    "Other counts",
    key=W["other_counts"],
    placeholder="e.g. 500, 5000",
    help="More image counts to run as well, separated by commas.",
)
row = st.columns([3, 2, 1, 2.3])
row[0].multiselect(
    "Operations",
    list(OPERATIONS),
    key=W["operations"],
    format_func=lambda operation: state.OPERATION_LABELS.get(operation, operation),
    placeholder="Pick what to measure",
)
row[1].multiselect(
    "Page cache",
    list(CACHES),
    key=W["caches"],
    help="warm: reads right after writing, from memory. cold: the store is evicted from the "
    "operating system's page cache before every read, as after a reboot.",
)
row[2].number_input("Repeats", min_value=1, max_value=state.MAX_REPEATS, step=1, key=W["repeats"])
row[3].selectbox("Data source", list(SOURCE_LABELS), key=W["source_kind"], format_func=SOURCE_LABELS.get)
if st.session_state[W["source_kind"]] == state.FOLDER:
    row[3].text_input("Image folder", key=W["folder"], placeholder="root folder with one subfolder per class")
loader_chosen = state.LOADER in st.session_state[W["operations"]]
loader_row = st.columns([3, 2, 3.3])
loader_row[0].multiselect(
    "DataLoader workers",
    list(state.WORKER_CHOICES),
    key=W["workers"],
    disabled=not loader_chosen,
    help="For the training loader: one shuffled epoch through a PyTorch DataLoader with each of these "
    "worker-process counts (0 reads in the page's own process), beside the same loader over the images in memory.",
)
loader_row[1].number_input(
    "Batch size", min_value=1, max_value=state.MAX_BATCH_SIZE, step=32, key=W["batch_size"], disabled=not loader_chosen
)
st.checkbox("Keep the stores afterwards (to open them on the Explore page)", key=W["keep"])

shown_run = job.run_id if job is not None and job.run_id else (None if job is not None else url_controls.run_id)
controls = state.controls_from_widgets(st.session_state, run_id=shown_run)
st.session_state[SAVED] = controls
views.sync_query_params(state.run_params(controls))

for name in controls.formats:
    info = backend_info(name)
    st.caption(f"**{info.label}** — {info.description}")

# -- what the run would be, and whether it can start -----------------------------------------
experiment = None
hints = []
if not controls.formats:
    hints.append("Pick at least one format in **Formats** to run a benchmark.")
if not controls.operations:
    hints.append("Pick at least one operation in **Operations**.")
if controls.source_kind == state.FOLDER and not controls.folder:
    hints.append("Enter the path of the **Image folder** (one subfolder per class, images inside).")
for hint in hints:
    st.info(hint, icon=":material/touch_app:")
if not hints:
    try:
        counts = controls.counts()
        experiment = validate(state.to_experiment(controls, str(config.runs_dir())))
        estimate = estimate_experiment(
            experiment, resources.results_db(), raw_image_bytes=resources.mean_image_bytes(controls.source)
        )
    except ValueError as error:  # "Other counts" that are not counts
        views.show_error(str(error), what="Other counts")
        experiment = None
    except StorageError as error:
        views.show_error(error)
        experiment = None
    else:
        st.markdown(
            f"**Counts:** {state.format_counts(counts)} · **Estimated time:** about "
            f"{format_duration(estimate.seconds)} · **Disk:** about {estimate.disk_bytes / 1e6:,.0f} MB "
            f"of {estimate.free_bytes / 1e6:,.0f} MB free"
        )
        if not estimate.fits:
            where = "on the disk" if not estimate.disk_fits else "in memory"
            st.warning(f"This run would not fit {where}: {estimate.message}", icon=":material/hard_drive:")
            experiment = None
        elif estimate.seconds > 300:
            st.info(
                f"This run will take about {format_duration(estimate.seconds)}. The charts fill in as it goes, "
                "and **Stop** ends it early, keeping what was measured.",
                icon=":material/hourglass_top:",
            )


def start_run(chosen) -> None:
    st.session_state[JOB] = runner.start_job(chosen, config.db_path())


def stop_run() -> None:
    current = st.session_state.get(JOB)
    if current is not None:
        current.stop()


buttons = st.columns([1.2, 1, 5])
buttons[0].button(
    "Run benchmark",
    type="primary",
    disabled=experiment is None or running,
    on_click=start_run,
    args=(experiment,),
    help="Already running: wait for it or press Stop" if running else None,
)
buttons[1].button("Stop", disabled=not running, on_click=stop_run)
others = runner.other_active_jobs(job)
if others:
    st.caption(
        f":material/warning: {others} other run(s) are going on in other tabs or windows; runs at the same time "
        "share the CPU and the disk, which slows both."
    )

# -- results ----------------------------------------------------------------------------------
st.divider()


def show(snapshot: runner.JobSnapshot) -> None:
    views.render_status(snapshot)
    frame = charts.measurements_frame(snapshot.measurements)
    specs = views.chart_specs(
        frame, memo_key=(snapshot.run_id, snapshot.version), slot="run", min_interval=1.5 if snapshot.running else 0.0
    )
    if not specs and snapshot.running:
        st.caption("The charts appear as soon as the first measurement is taken.")
    views.render_charts(specs, "run", names=("time",))
    views.render_previews(snapshot.previews)
    views.render_charts(specs, "run", names=("rate", "loader", "disk"))
    views.render_table(frame, key="run-table")
    if snapshot.run_id and not snapshot.running and snapshot.measurements:
        views.page_link(
            "pages/2_Results.py",
            "Compare this run with earlier ones",
            ":material/bar_chart:",
            {"runs": snapshot.run_id},
        )


def live(current: runner.BenchmarkJob) -> None:
    snapshot = current.snapshot()
    show(snapshot)
    if not snapshot.running:
        st.rerun()  # redraw the whole page: buttons, URL and the final state


if job is not None:
    if job.running:
        st.fragment(live, run_every=0.5)(job)
    else:
        show(job.snapshot())
elif controls.run_id:
    try:
        db = resources.results_db()
        record = db.get_run(controls.run_id)
        if record is None:
            st.warning(f"Run {controls.run_id} is not in the results database {config.display_path(db.path)}.")
        else:
            st.markdown(f"**Run {record.id}** ({record.status}, started {record.started_at})")
            frame = charts.measurements_frame(db.measurements(record.id))
            views.render_charts(views.chart_specs(frame), "stored")
            views.render_table(frame, key="stored-table")
            st.caption("Previews are shown while a run is live; keep the stores to look at them on the Explore page.")
    except StorageError as error:
        views.show_error(error)
else:
    st.info("Press **Run benchmark**: the charts and the images read back appear as the measurements land.")
