"""Explore page: open a store of any backend, page through its images, time the read of any id.

``?backend=lmdb&path=data/runs/<run id>/lmdb/1000/store&id=7&page=2`` opens the same store
at the same place; ``?path=...`` alone opens it with the backend its folder names. A sharded
store (a folder with ``sharded.json``) opens as one, through :func:`storage.open_store`.
Only stores under the dashboard's data roots are opened
(``dashboard.access``); any other path gets the same refusal, whether or not it exists.
Images are shown as thumbnails (at most 192 pixels a side), a page of 24 at a time.
"""

import math
import time

import streamlit as st

from dashboard import access, config, previews, resources, state, views
from dashboard.text import plain
from storage import backend_info, backends
from storage.bench.report import format_seconds
from storage.errors import StorageError

PAGE_SIZE = 24
GRID_COLUMNS = 8
READ_SIDE = 192  # the image read by id, at most this many pixels a side
GRID_SIDE = 96  # each image of a page
K_BACKEND, K_PATH, K_ID, K_PAGE, K_FOUND, OPENED = (
    "explore_backend",
    "explore_path",
    "explore_id",
    "explore_page",
    "explore_found",
    "explore_opened",
)

views.setup_page("Explore")
st.title("Explore a store")
st.caption("Open any image store, page through its images with their labels, and time the read of any image.")

available = backends()
params = {key: st.query_params.get_all(key) for key in st.query_params}
link, notes = state.parse_explore_params(params, available)
FOUND_IN_FOLDER = None  # the Backend choice that lets the folder say which backend wrote it
if views.init_state({K_BACKEND: link.backend, K_PATH: link.path, K_ID: link.image_id, K_PAGE: link.page}):
    for note in notes:
        st.warning(f"The link could not be followed entirely: {plain(note)}.")
    if link.path and OPENED not in st.session_state:
        st.session_state[OPENED] = (link.backend, link.path)

found = resources.find_stores(resources.store_roots())


def use_found() -> None:
    choice = st.session_state.get(K_FOUND)
    for store in found:
        if store.path == choice:
            st.session_state[K_BACKEND] = store.backend if store.backend in available else FOUND_IN_FOLDER
            st.session_state[K_PATH] = config.display_path(store.path)
            st.session_state[K_PAGE] = 1
            st.session_state[K_ID] = 0
            st.session_state[OPENED] = (st.session_state[K_BACKEND], st.session_state[K_PATH])


if found:
    st.selectbox(
        "Stores found",
        [None, *[store.path for store in found]],
        key=K_FOUND,
        format_func=lambda path: (
            "Pick a store found on disk…"
            if path is None
            else next(
                f"{resources.backend_label(s.backend)} · {s.count:,} images · {config.display_path(s.path)}"
                for s in found
                if s.path == path
            )
        ),
        on_change=use_found,
        help="Stores under the run folder (runs that kept their stores) and under data/.",
    )
else:
    st.caption(
        "No stores found under the run folder or data/. Tick “Keep the stores afterwards” on the Run page, "
        "or type the folder of any store below."
    )

columns = st.columns([1, 3, 1], vertical_alignment="bottom")
columns[0].selectbox(
    "Backend",
    [FOUND_IN_FOLDER, *available],
    key=K_BACKEND,
    format_func=lambda name: "Found in the folder" if name is FOUND_IN_FOLDER else backend_info(name).label,
    help="Found in the folder: the backend its store.json names, or a sharded store (sharded.json) as one.",
)
columns[1].text_input("Store folder", key=K_PATH, placeholder="e.g. data/runs/<run id>/lmdb/1000/store")


def open_clicked() -> None:
    path = st.session_state[K_PATH].strip()
    try:
        written = resources.backend_written_in(str(access.allowed_path(path)))  # a store says which backend wrote it
    except access.OutsideRootsError:
        written = None  # refused below, when it is opened
    if written is not None:  # a sharded store is opened as one, whatever its shards are
        st.session_state[K_BACKEND] = written if written in available else FOUND_IN_FOLDER
    st.session_state[OPENED] = (st.session_state[K_BACKEND], path)
    st.session_state[K_PAGE] = 1


columns[2].button("Open store", type="primary", on_click=open_clicked, disabled=not st.session_state[K_PATH].strip())

opened = st.session_state.get(OPENED)
if not opened:
    views.sync_query_params({"backend": st.session_state[K_BACKEND], "path": st.session_state[K_PATH].strip()})
    st.info(
        "Pick a store found on disk, or give a store's folder and press **Open store**.",
        icon=":material/touch_app:",
    )
    st.stop()

backend, path = opened
try:
    folder = access.allowed_path(path)
except access.OutsideRootsError as error:
    views.sync_query_params({"backend": backend, "path": path})
    views.show_error(error, what="Store folder")
    st.stop()
try:
    store = resources.open_store_cached(backend, folder)
    size = len(store)
    usage = store.disk_usage()
except StorageError as error:
    views.show_error(error, what=f"Cannot open {path} as a {backend} store" if backend else f"Cannot open {path}")
    st.stop()
except OSError as error:
    views.show_error(f"{path}: {error.strerror or error}", what="Cannot open the store")
    st.stop()

# Class names: kept in the store (convert writes them), or, for a store kept by a run, its source's.
class_names, labels_note = resources.class_names_of(store), "labels named by the store"
run_id = resources.FoundStore(str(store.path), store.info.name, size).run_id
if run_id and not class_names:
    try:
        record = resources.results_db().get_run(run_id)
        names = (record.source or {}).get("class_names") if record else None
        class_names = [str(name) for name in names] if isinstance(names, list) else None
    except Exception:  # no database, or a run that cannot be read: labels as numbers, never a traceback
        class_names = None
    labels_note = f"labels are classes of run {run_id}"
if not class_names:
    labels_note = "labels shown as numbers"

metrics = st.columns(4)
metrics[0].metric("Format", resources.format_label(store))
metrics[1].metric("Images", f"{size:,}")
metrics[2].metric("Disk (allocated)", f"{usage.allocated_bytes / 1e6:,.2f} MB")
metrics[3].metric("Files", f"{usage.files:,}")
st.caption(plain(f"{config.display_path(store.path)} · image shape {store.uniform_shape or 'varies'} · {labels_note}"))

if size == 0:
    st.info("This store holds no images.")
    st.stop()

# -- one image by id, timed -------------------------------------------------------------------
st.subheader("Read one image")
st.session_state[K_ID] = min(max(0, int(st.session_state[K_ID])), size - 1)
read_columns = st.columns([1, 1, 4], vertical_alignment="bottom")
image_id = read_columns[0].number_input("Image id", min_value=0, max_value=size - 1, step=1, key=K_ID)
read_columns[1].button("Read", help="Read the image again (the first read may come from disk, later ones from memory)")
try:
    started = time.perf_counter()
    image, label = store.read_one(int(image_id))
    seconds = time.perf_counter() - started
except StorageError as error:
    views.show_error(error, what=f"Reading image {image_id} failed")
else:
    shown, details = st.columns([1, 3])
    big = previews.enlarge(image, READ_SIDE)
    shown.image(
        big,
        width=big.width,
        caption=plain(previews.caption(int(image_id), label, class_names, None)),
        output_format="PNG",  # lossless: the pixels shown are the pixels read
    )
    details.markdown(
        f"**Read in {format_seconds(seconds)}** (one `read_one` call, timed on this page)  \n"
        f"Label: **{plain(previews.class_name(label, class_names))}** ({int(label)})  \n"
        f"Pixels: {' × '.join(str(side) for side in image.shape)}, {image.dtype}"
    )

# -- the images, page by page -----------------------------------------------------------------
st.subheader("All images")
pages = max(1, math.ceil(size / PAGE_SIZE))
st.session_state[K_PAGE] = min(max(1, int(st.session_state[K_PAGE])), pages)
page = st.columns([1, 4])[0].number_input(
    f"Page (of {pages:,}, {PAGE_SIZE} images each)", min_value=1, max_value=pages, step=1, key=K_PAGE
)
first = (int(page) - 1) * PAGE_SIZE
ids = list(range(first, min(size, first + PAGE_SIZE)))
try:
    images, labels = store.read_batch(ids)
except StorageError as error:
    views.show_error(error, what="Reading this page failed")
else:
    grid = st.columns(GRID_COLUMNS)
    for position, (image_id_on_page, picture, picture_label) in enumerate(zip(ids, images, labels)):
        small = previews.enlarge(picture, GRID_SIDE)
        grid[position % GRID_COLUMNS].image(
            small,
            width=small.width,
            caption=plain(previews.caption(image_id_on_page, picture_label, class_names, None)),
            output_format="PNG",
        )

views.sync_query_params(
    state.explore_params(state.ExploreControls(backend=backend, path=path, image_id=int(image_id), page=int(page)))
)
