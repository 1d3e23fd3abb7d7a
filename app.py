"""Image Storage Lab's dashboard: ``streamlit run app.py``; this file is the home page.

The other pages live in ``pages/`` and their helpers in ``dashboard/``. Set
``IMAGE_STORAGE_LAB_DB`` and ``IMAGE_STORAGE_LAB_RUNS`` to keep the results database and
the run folders somewhere other than ``data/``, ``IMAGE_STORAGE_LAB_ROOTS`` to name the
folders the pages may read, and ``IMAGE_STORAGE_LAB_READ_ONLY=1`` on a server shared on a
network (see ``dashboard.access``).
"""

import streamlit as st

from dashboard import access, config, resources, views
from dashboard.text import plain
from storage.datasets import describe_available_sources, download_cifar10
from storage.registry import backends, registered_info

views.setup_page("Home")
st.title("Image Storage Lab")
st.markdown(
    "**Which way of storing many small images is fastest to write, fastest to read back, "
    "and smallest on disk?** Pick formats and image counts, run the benchmark, and compare: "
    "every number on these pages is measured on this machine, with real images, and every "
    "store is read back and checked pixel for pixel."
)
# The formats as registered, nothing imported; their libraries import beside, for the Run page.
resources.backends_imported_beside()
formats = [registered_info(name) for name in backends(available_only=False)]
st.markdown("\n".join(f"- **{info.label}**: {info.description}" for info in formats))

st.subheader("Data")
if "home_flash" in st.session_state:
    st.success(st.session_state.pop("home_flash"), icon=":material/check_circle:")
sources = describe_available_sources()
if sources["cifar10_present"]:
    st.success(
        f"Using the **full CIFAR-10** (60,000 images, 32×32 pixels, 10 classes) at "
        f"{plain(config.display_path(sources['cifar10_dir']))}.",
        icon=":material/dataset:",
    )
else:
    partial = " (only some of its files are there)" if sources["cifar10_partial"] else ""
    st.info(
        f"Using the **bundled sample of 5,085 real CIFAR-10 images** (32×32 pixels, 10 classes); "
        f"the full CIFAR-10 is not downloaded{partial}. Counts above 5,085 reuse the sample's images in turn.",
        icon=":material/dataset:",
    )
st.caption(
    "Photos: 100 real ImageNet validation photos (JPEG, a few hundred pixels wide) are bundled too "
    "(“Photos: bundled ImageNet sample” on the Run page), and a folder of your own images (one subfolder "
    f"per class, any format Pillow reads) can be the data source, under the allowed folders: {plain(access.describe_roots())}."
)
read_only = access.read_only()
if read_only:
    st.caption(f":material/lock: {access.READ_ONLY_NOTE}")
if st.button(
    "Download CIFAR-10",
    help=f"Fetch the 170 MB archive into {config.display_path(sources['data_dir'])}",
    disabled=read_only,
):
    bar = st.progress(0.0, text="Connecting…")

    def on_progress(done: int, total: int | None) -> None:
        if total:
            bar.progress(
                min(1.0, done / total), text=f"Downloading CIFAR-10: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB"
            )
        else:
            bar.progress(0.0, text=f"Downloading CIFAR-10: {done / 1e6:,.1f} MB")

    try:
        folder = download_cifar10(progress=False, on_progress=on_progress)
    except Exception as error:  # no network, a broken transfer, no space: said as a sentence
        bar.empty()
        views.show_error(error, what="CIFAR-10 could not be downloaded")
    else:
        resources.clear_source_cache()
        st.session_state["home_flash"] = (
            f"CIFAR-10 is ready at {plain(config.display_path(folder))}; runs on “Automatic” now use it."
        )
        st.rerun()

st.subheader("Pages")
views.page_link("pages/1_Run.py", "Run", ":material/play_circle:")
st.caption(
    "Choose formats, numbers of images, operations and the page-cache state; see an estimate, "
    "press **Run benchmark**, and watch the charts and the images read back from each store fill in."
)
views.page_link("pages/2_Results.py", "Results", ":material/bar_chart:")
st.caption(
    "Every past run from the results database: overlay several, download CSV, JSON and the charts "
    "as PNG or SVG, delete runs, and copy a link that reproduces the selection."
)
views.page_link("pages/3_Explore.py", "Explore", ":material/image_search:")
st.caption("Open any store, page through its images with their labels, and time the read of any image.")
views.page_link("pages/4_Advise.py", "Advise", ":material/recommend:")
st.caption(
    "Which format for your whole dataset: measured on a sample of it, projected to its full size with ranges, "
    "one recommendation and why."
)
st.caption(
    f"Results database: {plain(config.display_path(config.db_path()))} · "
    f"run folders: {plain(config.display_path(config.runs_dir()))}"
)
