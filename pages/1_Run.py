"""Run page: pick formats and counts, run the benchmark, watch charts and previews fill in.

The controls start from the URL (``?formats=png,lmdb&max_count=1000&...``, see
``dashboard.state``) and write themselves back to it. "Run benchmark" starts the engine in
a process of its own and puts ``?run=<id>`` in the URL at once: the run belongs to its id,
so a reload, a second tab or the link shows the same run, live (read from the results
database several times a second) or finished. "Stop" asks the run to stop, from any tab.

A folder given by the link or typed in is read only under the dashboard's data roots
(``dashboard.access``), and only once **Check folder** is pressed: a link fills in the
form, it never makes the server list or decode anything. Its files that cannot be read are
named under the data source, each with its problem; **Skip bad files** (``skip_bad``, the
command line's ``--skip-bad``) runs without them.
"""

import streamlit as st

from dashboard import access, charts, config, image_folders, live_view, resources, runner, state, views, watching
from dashboard.text import plain
from storage import backend_info, backends
from storage.bench import CACHES, OPERATIONS
from storage.bench.estimate import format_duration
from storage.bench.experiment import EPOCH_OPERATIONS, RunParameterError
from storage.datasets import DataSource, describe_available_sources
from storage.errors import BadImageFileError, StorageError

STARTED = "run_started"  # the id of the run this session has just started
SAVED = "run_controls"
CHECKED = "run_checked_folder"  # the folder (resolved) this session asked to list
W = state.RUN_WIDGETS

views.setup_page("Run")
live_view.hold_still()  # before anything else: a live run's page must not animate (see live_view.STILL_CSS)
st.title("Run a benchmark")
st.caption(
    "Each format writes the same images into a fresh store for every count, reads them back "
    "and checks every pixel; the timers cover only the storage calls."
)

available = backends()

# -- starting values: the link, else what this session had, else the defaults --------------
params = {key: st.query_params.get_all(key) for key in st.query_params}
url_controls, notes = state.parse_run_params(params, available)
link_given = any(key in params for key in state.RUN_LINK_PARAMS)
saved_run = st.session_state[SAVED].run_id if SAVED in st.session_state else None
follow_run = not link_given and url_controls.run_id is not None and url_controls.run_id != saved_run
if follow_run:
    # A bare ``?run=<id>`` link (a new tab, or a link from another page): the form shows how that
    # run was set up, over what this session had, so that Run benchmark runs it again.
    url_controls, notes = state.parse_run_params(
        {**resources.run_params_of(url_controls.run_id), "run": url_controls.run_id}, available
    )
    link_given = True
    st.session_state.update(state.run_widget_values(url_controls))
starting = url_controls if link_given or SAVED not in st.session_state else st.session_state[SAVED]
if views.init_state(state.run_widget_values(starting)) or follow_run:
    for note in notes:
        st.warning(f"The link could not be followed entirely: {plain(note)}.")
read_only = access.read_only()
if read_only:
    st.info(access.READ_ONLY_NOTE, icon=":material/lock:")

# -- controls ---------------------------------------------------------------------------------
sources = describe_available_sources()
auto_label = "full CIFAR-10" if sources["auto"] == "cifar10" else "bundled CIFAR-10 sample"
SOURCE_LABELS = {
    "auto": f"Automatic ({auto_label})",
    "sample": "Bundled CIFAR-10 sample (5,085 images)",
    "cifar10": "Full CIFAR-10 (60,000 images)" + ("" if sources["cifar10_present"] else " — not downloaded"),
    state.PHOTOS: "Photos: bundled ImageNet sample",
    state.FOLDER: "An image folder…",
}
SOURCE_WIDTH = 360  # pixels: the longest label whole, in a window of any width ("Full CIFAR-10 … not downloaded")

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
    options=list(state.MAX_COUNT_CHOICES),
    key=W["max_count"],
    format_func=lambda count: f"{count:,}" if count != state.NO_STEPS else "none",
    help="Every power of ten up to this count is run: 1, 10, 100, …; none: only the other counts.",
)
top[2].text_input(
    "Other counts",
    key=W["other_counts"],
    placeholder="e.g. 500, 5000",
    help="More image counts to run as well, separated by commas.",
)
row = st.columns([4.6, 2, 1])  # wide enough for every operation chip
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
source_row = st.container(horizontal=True)  # a row of its own: the longest source names show whole
source_row.selectbox(
    "Data source", list(SOURCE_LABELS), key=W["source_kind"], format_func=SOURCE_LABELS.get, width=SOURCE_WIDTH
)
if st.session_state[W["source_kind"]] == state.FOLDER:
    folder_column = source_row.container()
    folder_column.text_input("Image folder", key=W["folder"], placeholder="root folder with one subfolder per class")
    folder_column.checkbox(
        "Skip bad files",
        key=W["skip_bad"],
        help="Leave out the folder's files that cannot be read (empty, damaged, not an image) instead of "
        "refusing the folder, as --skip-bad does on the command line; the files left out are named here.",
    )
source_box = st.container()  # what the data source says (a folder to check, its bad files, its size), beside it
photo_row = st.columns([3, 2, 1.3, 2])
photo_row[0].selectbox(
    "Stores keep",
    list(state.ENCODING_LABELS),
    key=W["encoding"],
    format_func=state.ENCODING_LABELS.get,
    help="Pixels: each image decoded. The photos' own bytes: each file's bytes exactly as they are (JPEG, PNG…), "
    "decoded when read, as WebDataset, LitData and FFCV keep photos. Re-encoded: pixels encoded again by this "
    "program. Formats that hold only pixels store pixels whatever is chosen.",
)
photo_row[1].selectbox(
    "Resize",
    list(state.RESIZE_LABELS),
    key=W["resize"],
    format_func=state.RESIZE_LABELS.get,
    help="Resize every image at write time to this side (never enlarging one that is smaller), "
    "with Pillow's antialiased bilinear filter, as the 256-pixel ImageNet copies are made.",
)
photo_row[2].number_input(
    "Side (pixels)",
    min_value=1,
    max_value=state.MAX_SIDE,
    step=32,
    key=W["side"],
    disabled=st.session_state[W["resize"]] == "none",
)
loader_chosen = bool({state.LOADER, *EPOCH_OPERATIONS} & set(st.session_state[W["operations"]]))
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
st.text_input(
    "Where the data lives",
    key=W["location"],
    placeholder="a local folder; or s3://bucket/prefix",
    help="An s3:// location also uploads each store there and reads it back as its format's users do (the "
    "upload, first_epoch, later_epoch and remote_random operations), at the server in AWS_ENDPOINT_URL with the "
    "AWS credential chain (python -m storage s3-server starts one here).",
)
st.checkbox("Keep the stores afterwards (to open them on the Explore page)", key=W["keep"])

# -- the run shown: the one just started, else the link's, else this session's last --------
try:
    db = resources.results_db()
except StorageError as error:
    views.show_error(error, what="The results database cannot be opened")
    st.stop()
shown_run = st.session_state.pop(STARTED, None) or (url_controls.run_id if "run" in params else starting.run_id)
view, unshowable = runner.read_shown_run(db, shown_run) if shown_run else (None, None)
running = view is not None and view.running
controls = state.controls_from_widgets(st.session_state, run_id=shown_run)
st.session_state[SAVED] = controls
views.sync_query_params(state.run_params(controls))

for name in controls.formats:
    info = backend_info(name)
    st.caption(f"**{info.label}** — {info.description}")
pixels_only = resources.pixel_only_formats(controls.formats) if controls.encoding != "raw" else []
if pixels_only:
    st.caption(
        f":material/info: {', '.join(backend_info(name).label for name in pixels_only)} hold only pixels: "
        f"they store pixels, not “{state.ENCODING_LABELS[controls.encoding]}”."
    )


def check_folder(folder: str) -> None:
    st.session_state[CHECKED] = folder


def check_folder_button(folder: str) -> None:
    st.button("Check folder", on_click=check_folder, args=(folder,))


def run_source(current: state.RunControls) -> str | None:
    """What the engine reads: a CIFAR-10 keyword, the bundled photos, or an allowed folder once checked.

    Says on the page why there is none yet (outside the data roots, missing, not listed yet).
    """
    if current.source_kind != state.FOLDER:
        return state.experiment_source(current)
    try:
        folder = access.allowed_path(current.folder)
    except access.OutsideRootsError as error:
        views.show_error(error, what="Image folder")
        return None
    if not folder.is_dir():
        views.show_error(f"{current.folder} does not exist or is not a folder", what="Image folder")
        return None
    if st.session_state.get(CHECKED) != str(folder):
        st.info(
            "Press **Check folder** to list the folder (its files are read only then) and see the estimate.",
            icon=":material/folder_open:",
        )
        check_folder_button(str(folder))
        return None
    return str(folder)


def list_photos(source: str, current: state.RunControls) -> DataSource | None:
    """The photos the run would write, listed (headers only) and described.

    None when the folder cannot be used, with the reason: its bad files are named, every
    one, and the folder is to be checked again once they are fixed or skipped (a folder
    that failed is not listed again at every click).
    """
    try:
        photos = resources.load_source(source, current.skips_bad_files)
    except BadImageFileError as error:
        bad = image_folders.bad_files(source)
        if bad:
            st.error(image_folders.bad_files_message(config.display_path(source), bad), icon=":material/error:")
        else:
            views.show_error(error, what="Image folder")
        st.session_state.pop(CHECKED, None)
        check_folder_button(source)
        return None
    except StorageError as error:  # a folder that is no image folder, or holds no readable image
        views.show_error(error, what="Image folder")
        st.session_state.pop(CHECKED, None)
        return None
    st.caption(f":material/photo_library: {plain(photos.description)}")
    skipped = resources.skipped_files(source, current.skips_bad_files)
    if skipped:
        st.caption(f":material/block: {plain(image_folders.skipped_message(source, skipped))}")
    return photos


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
with source_box:
    source = run_source(controls) if not hints else None
    photos = list_photos(source, controls) if source is not None and controls.photos else None
if controls.photos and photos is None:
    source = None
if source is not None:
    try:
        counts = controls.counts()
        experiment = state.to_experiment(controls, str(config.runs_dir()), source=source)
        image_bytes = resources.store_image_bytes(
            source, controls.encoding, skip_bad=controls.skips_bad_files, **controls.sides
        )
        estimate = resources.estimate_run(experiment, image_bytes, source_in_memory=not controls.photos)
    except RunParameterError as error:
        views.show_error(error, what=state.CONTROL_LABELS.get(error.field))
        experiment = None
    except StorageError as error:  # before ValueError: the library's errors are ValueErrors too
        views.show_error(error)
        experiment = None
        st.session_state.pop(CHECKED, None)  # not listed again at every click: press Check folder again
    except ValueError as error:  # "Other counts" that are not counts
        views.show_error(str(error), what="Other counts")
        experiment = None
    else:
        repeated = image_folders.repeat_note(len(photos), counts) if photos is not None else None
        if repeated:
            source_box.caption(f":material/repeat: {plain(repeated)}")
        st.markdown(
            f"**Counts:** {state.format_counts(counts)} · **Estimated time:** about "
            f"{format_duration(estimate.seconds)} · **Disk:** about {estimate.disk_bytes / 1e6:,.0f} MB "
            f"of {estimate.free_bytes / 1e6:,.0f} MB free"
        )
        if not estimate.fits:
            where = "on the disk" if not estimate.disk_fits else "in memory"
            st.warning(f"This run would not fit {where}: {plain(estimate.message)}", icon=":material/hard_drive:")
            experiment = None
        elif estimate.seconds > 300:
            st.info(
                f"This run will take about {format_duration(estimate.seconds)}. The charts fill in as it goes, "
                "and **Stop** ends it early, keeping what was measured.",
                icon=":material/hourglass_top:",
            )


def start_run(chosen, seconds: float | None) -> None:
    if access.read_only():  # the button is disabled; a stale page's click is refused here too
        return
    name = " ".join(str(st.session_state.get(views.RUN_NAME_KEY) or "").split()) or None
    try:
        st.session_state[STARTED] = runner.launch(chosen, resources.results_db(), estimated_seconds=seconds, name=name)
    except OSError as error:
        st.session_state["run_flash"] = f"The benchmark process could not be started: {error}"


def stop_run(run_id: str) -> None:
    if not access.read_only():
        runner.request_stop(resources.results_db(), run_id)


views.run_name_input()
can_start = experiment is not None and not running and not read_only
buttons = st.container(horizontal=True, vertical_alignment="center")  # each button as wide as its label
buttons.button(
    "Run benchmark",
    type="primary",
    disabled=not can_start,
    on_click=start_run,
    args=(experiment, estimate.seconds if experiment is not None else None),
)
stoppable = running and view.stoppable and not view.stop_requested
buttons.button("Stop", disabled=not stoppable or read_only, on_click=stop_run, args=(shown_run,))
if "run_flash" in st.session_state:
    views.show_error(st.session_state.pop("run_flash"))
if running:
    if view.from_dashboard:
        note = "Already running: wait for it to end or press **Stop** (from this tab or any other showing it)."
    elif view.stoppable:
        note = "This run was started from the command line: **Stop** here ends it, as Ctrl+C does there."
    else:
        note = "This run was started from the command line: stop it there (Ctrl+C)."
    buttons.caption(note)
others = [record for record in runner.running_runs(db) if record.id != shown_run]
if others:
    st.caption(
        f":material/warning: {len(others)} other run(s) are going on ({plain(', '.join(r.id for r in others))}); runs at "
        "the same time share the CPU and the disk, which slows both."
    )

# -- results ----------------------------------------------------------------------------------
st.divider()


def show_progress(current: runner.RunView) -> None:
    """The status box and the elapsed-time chart: what a running run redraws most often."""
    views.render_status(current)
    views.render_summary(current.measurements)
    specs = views.run_chart_specs(current.run_id, current.measurements, names=("time",), for_display=True)
    if not specs and current.running:
        st.caption("The charts appear here as soon as the first measurement is recorded.")
    views.render_charts(specs, "run", names=("time",))
    if specs and current.progress is not None and current.progress.first_chart_at is None:
        db.note_first_chart(current.run_id)  # when the first chart was handed to Streamlit, for the tests


def show_details(current: runner.RunView) -> None:
    """The images read back, the other charts and the table."""
    names = ("rate", "loader", "disk")  # the time chart is show_progress's
    shown = views.run_chart_specs(current.run_id, current.measurements, names=names, for_display=True)
    views.render_previews(views.stored_previews(db, current.run_id, current.preview_count))
    views.render_charts(shown, "run", names=names)
    views.render_table(charts.measurements_frame(current.measurements), key="run-table")
    if not current.running and current.measurements:
        views.share_button(
            [current.record],
            views.run_chart_specs(current.run_id, current.measurements),
            views.stored_previews(db, current.run_id, current.preview_count),
            file_name=f"image-storage-lab-{current.run_id}.png",
            key="run-share",
            measurements=current.measurements,
        )
        views.page_link(
            "pages/2_Results.py",
            "Compare this run with earlier ones",
            ":material/bar_chart:",
            {"runs": current.run_id},
        )


def follow_live(run_id: str, page_draw: str) -> None:
    """A running run, redrawn between its timed calls (see :mod:`dashboard.live_view`)."""
    live_view.follow(db, run_id, page_draw, show_progress, show_details)


# The browser loads its chart library with the first chart it is sent (about a second on two
# cores): an invisible chart on every draw of this page has it ready before a run's first chart.
views.preload_charts("run-preload")

if unshowable:
    st.warning(f"Run {plain(shown_run)} cannot be shown: {plain(unshowable)}", icon=":material/warning:")
elif view is not None:
    if view.running:
        # One fragment, rerun as soon as it has drawn: it waits for news between the run's timed calls.
        st.fragment(follow_live, run_every=views.LIVE_INTERVAL)(view.run_id, watching.new_watcher_id())
    else:
        try:
            show_progress(view)
            show_details(view)
        except Exception as error:  # a run the schema let through that still cannot be drawn
            st.warning(f"Run {plain(view.run_id)} cannot be shown: {plain(f'{type(error).__name__}: {error}')}")
elif shown_run:
    st.warning(f"Run {plain(shown_run)} is not in the results database {plain(config.display_path(db.path))}.")
elif can_start:  # said only when the button can be pressed; the hints above say what is missing otherwise
    st.info("Press **Run benchmark**: the charts and the images read back appear as the measurements land.")
