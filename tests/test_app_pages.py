"""The dashboard's pages under Streamlit's AppTest: no exceptions, the promised controls, real runs.

Every test points the results database and the run folders into its own temporary folder
(``IMAGE_STORAGE_LAB_DB``, ``IMAGE_STORAGE_LAB_RUNS``). Runs are real: the engine runs in
its child process on the bundled CIFAR-10 sample, and the test reruns the page until the
run has ended, as the browser's timer would.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import storage  # noqa: E402
from dashboard import charts, previews, runner, share, state, summary, views  # noqa: E402
from dashboard.charts import PRELOAD_DESCRIPTION  # noqa: E402
from storage.bench import Experiment, ResultsDB, run_experiment  # noqa: E402
from storage.bench.results import PREVIEW_MAX_SIDE  # noqa: E402
from storage.errors import DownloadError  # noqa: E402

HOME, RUN, RESULTS, EXPLORE = "app.py", "pages/1_Run.py", "pages/2_Results.py", "pages/3_Explore.py"
TIMEOUT = 120


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_STORAGE_LAB_DB", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("IMAGE_STORAGE_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IMAGE_STORAGE_LAB_ROOTS", str(tmp_path))  # the test's own folders may be read
    monkeypatch.delenv("IMAGE_STORAGE_LAB_READ_ONLY", raising=False)
    return tmp_path


def page(script: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / script), default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def shown(markdown: str) -> str:
    """Markdown as a reader sees its text: backslash escapes and invisible word joiners removed."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(markdown)).replace("\u2060", "")


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader", "code"):
        parts.extend(shown(element.value) for element in getattr(at, kind))
    return "\n".join(parts)


def errors(at: AppTest) -> list[str]:
    return [shown(element.value) for element in at.error]


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def run_view(at: AppTest, run_id: str | None = None) -> runner.RunView:
    """The shown run as the results database says now."""
    with ResultsDB(db_file()) as db:
        return runner.read_run(db, run_id or at.query_params["run"])


def wait_for_run(at: AppTest, timeout: float = 90) -> None:
    """Rerun the page until its run has ended, as the browser's timer would."""
    deadline = time.monotonic() + timeout
    while run_view(at).running:
        assert time.monotonic() < deadline, "the run did not end in time"
        time.sleep(0.25)
        at.run()
    at.run()
    assert_clean(at)


def db_file() -> Path:
    return Path(os.environ["IMAGE_STORAGE_LAB_DB"])


def chart_specs(at: AppTest) -> list[str]:
    """The specs of the charts shown, without the Run page's invisible chart-library preload."""
    specs = [element.proto.spec for element in at.get("vega_lite_chart")]
    return [spec for spec in specs if PRELOAD_DESCRIPTION not in spec]


def record_run(db_path: Path, work_dir: Path, backends: list[str], counts: list[int], keep: bool = False) -> str:
    experiment = Experiment(
        backends=backends,
        counts=counts,
        operations=["write_batch", "read_all"],
        repeats=1,
        source="sample",
        keep=keep,
        work_dir=str(work_dir),
    )
    with ResultsDB(db_path) as db:
        return run_experiment(experiment, db).run_id


# -- home ---------------------------------------------------------------------------------------


def test_home_page_says_what_it_answers_and_which_data_is_used():
    at = page(HOME)
    assert_clean(at)
    assert at.title[0].value == "Image Storage Lab"
    text = texts(at)
    assert "fastest to write" in text and "CIFAR-10" in text
    for name in storage.backends():
        assert storage.backend_info(name).label in text
    assert button(at, "Download CIFAR-10")
    links = [link.proto.label for link in at.get("page_link")]
    for label in ("Home", "Run", "Results", "Explore"):
        assert label in links or label in text


def test_the_sidebar_links_every_page():
    """The sidebar is drawn by views.PAGES (Streamlit's own list is off): a page missing there is hard to find."""
    at = page(HOME)
    assert_clean(at)
    linked = sorted(link.proto.page.removeprefix("/") for link in at.sidebar.get("page_link"))
    # Streamlit's address of pages/4_Advise.py is /Advise; the home page's is /.
    pages = sorted(["", *(re.sub(r"^\d+_", "", path.stem) for path in (ROOT / "pages").glob("*.py"))])
    assert linked == pages


def test_download_button_shows_progress_then_a_clear_error(monkeypatch):
    calls = []

    def no_network(progress=True, on_progress=None, **kwargs):
        on_progress(0, 1000)
        on_progress(500, 1000)
        calls.append(progress)
        raise DownloadError("could not reach https://example.invalid: no route to host; check your connection")

    monkeypatch.setattr(storage.datasets, "download_cifar10", no_network)
    at = page(HOME)
    button(at, "Download CIFAR-10").click().run()
    assert_clean(at)
    assert calls == [False]
    assert any("could not reach" in e and "CIFAR-10 could not be downloaded" in e for e in errors(at))


def test_download_success_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(storage.datasets, "download_cifar10", lambda **kwargs: tmp_path / "cifar-10-batches-py")
    at = page(HOME)
    button(at, "Download CIFAR-10").click().run()
    assert_clean(at)
    assert any("CIFAR-10 is ready" in s.value for s in at.success)


# -- run ----------------------------------------------------------------------------------------


def test_run_page_has_the_promised_controls_and_an_estimate():
    at = page(RUN)
    assert_clean(at)
    formats = at.multiselect(key="run_formats")
    assert formats.label == "Formats"
    assert formats.options == [storage.backend_info(name).label for name in storage.backends()]
    assert formats.value == ["png", "lmdb", "hdf5"]
    counts = at.select_slider(key="run_max_count")
    assert counts.label == "Number of images" and counts.value == 1000
    assert counts.options[0] == "none"  # only the other counts
    assert [int(option.replace(",", "")) for option in counts.options[1:]] == [1, 10, 100, 1000, 10000, 100000]
    assert at.text_input(key="run_other_counts").label == "Other counts"
    assert at.multiselect(key="run_operations").label == "Operations"
    assert at.multiselect(key="run_caches").label == "Page cache"
    assert at.number_input(key="run_repeats").value == 3
    assert at.selectbox(key="run_source_kind").label == "Data source"
    assert not button(at, "Run benchmark").disabled
    assert button(at, "Stop").disabled
    text = texts(at)
    assert "Estimated time" in text and "Counts:** 1, 10, 100, 1,000" in text
    for name in ("png", "lmdb", "hdf5"):
        assert storage.backend_info(name).description in text
    assert at.query_params["formats"] == "png,lmdb,hdf5"


def test_an_unavailable_format_is_greyed_out_with_its_reason_and_the_others_stay(broken_backend):
    at = page(RUN)
    assert_clean(at)
    assert "Broken format" not in at.multiselect(key="run_formats").options
    assert "LMDB" in at.multiselect(key="run_formats").options
    note = next(caption.value for caption in at.caption if "Broken format" in caption.value)
    assert note.startswith(":gray[") and "unavailable" in note and "nosuchlib_for_image_storage_lab" in note


def test_tiny_run_draws_charts_with_both_formats_previews_and_a_table():
    at = page(RUN)
    at.multiselect(key="run_formats").set_value(["png", "hdf5"])
    at.select_slider(key="run_max_count").set_value(10)
    at.multiselect(key="run_operations").set_value(["write_batch", "read_all"])
    at.selectbox(key="run_source_kind").set_value("sample")
    at.run()
    assert_clean(at)
    assert "Counts:** 1, 10" in texts(at)
    button(at, "Run benchmark").click().run()
    assert_clean(at)
    wait_for_run(at)

    specs = chart_specs(at)
    assert len(specs) == 3  # time, images per second, disk use
    for spec in specs:
        assert "PNG files + CSV" in spec and "HDF5" in spec
        assert "LMDB" not in spec
    assert '"type": "log"' in specs[0] or '"type":"log"' in specs[0]
    assert any("finished" in s.value and "verified" in s.value for s in at.success)
    assert len(at.image) >= 2  # one row of previews per format
    captions = " ".join(shown(img.caption) for image in at.image for img in image.proto.imgs)
    assert "✓ verified" in captions
    assert all(img.url.endswith(".png") for image in at.image for img in image.proto.imgs)  # lossless, not JPEG
    table = at.dataframe[0].value
    assert set(table["Format"]) == {"PNG files + CSV", "HDF5"} and len(table) == 8
    run_id = at.query_params["run"]
    assert at.query_params["formats"] == "png,hdf5" and at.query_params["max_count"] == "10"
    with ResultsDB(db_file()) as db:
        assert db.get_run(run_id).status == "finished"
        assert {p.backend for p in db.previews(run_id)} == {"png", "hdf5"}  # kept with the run
    assert any(b.proto.label == "Share" for b in at.get("download_button"))


def test_the_url_sets_the_controls_and_bad_values_are_explained():
    at = page(RUN, formats="lmdb,nosuch", max_count="100", counts="500", ops="read_all", cold="1", repeats="2")
    assert_clean(at)
    assert at.multiselect(key="run_formats").value == ["lmdb"]
    assert at.select_slider(key="run_max_count").value == 100
    assert at.text_input(key="run_other_counts").value == "500"
    assert at.multiselect(key="run_operations").value == ["read_all"]
    assert at.multiselect(key="run_caches").value == ["warm", "cold"]
    assert at.number_input(key="run_repeats").value == 2
    assert any("nosuch" in w.value for w in at.warning)
    assert "Counts:** 1, 10, 100, 500" in texts(at)


def test_empty_selections_and_bad_counts_give_hints_not_crashes():
    at = page(RUN)
    at.multiselect(key="run_formats").set_value([])
    at.multiselect(key="run_operations").set_value([])
    at.run()
    assert_clean(at)
    hints = " ".join(i.value for i in at.info)
    assert "Pick at least one format" in hints and "Pick at least one operation" in hints
    assert button(at, "Run benchmark").disabled

    at.multiselect(key="run_formats").set_value(["png"])
    at.multiselect(key="run_operations").set_value(["read_all"])
    at.text_input(key="run_other_counts").set_value("500, lots")
    at.run()
    assert_clean(at)
    assert any("lots" in e for e in errors(at))
    assert button(at, "Run benchmark").disabled


def test_a_missing_image_folder_is_a_message(tmp_path):
    at = page(RUN, source=str(tmp_path / "no-such-folder"))
    assert_clean(at)
    assert at.selectbox(key="run_source_kind").value == "folder"
    assert any("does not exist" in e for e in errors(at))
    assert button(at, "Run benchmark").disabled


def test_stop_ends_a_run_and_keeps_its_measurements():
    at = page(RUN, formats="hdf5,png", max_count="10", counts="40000", ops="write_batch", repeats="3", source="sample")
    button(at, "Run benchmark").click().run()
    run_id = at.query_params["run"]  # in the address from the moment the run starts
    deadline = time.monotonic() + 60
    while not run_view(at).measurements:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    at.run()
    assert not button(at, "Stop").disabled and button(at, "Run benchmark").disabled
    button(at, "Stop").click().run()
    wait_for_run(at, timeout=30)
    assert run_view(at, run_id).status == "cancelled"
    assert any("was stopped" in w.value for w in at.warning)
    assert not button(at, "Run benchmark").disabled


def test_a_run_belongs_to_its_id_reload_and_second_tab_follow_it_and_either_stops_it():
    first = page(RUN, formats="png", max_count="100", counts="40000", ops="write_batch", repeats="3", source="sample")
    button(first, "Run benchmark").click().run()
    run_id = first.query_params["run"]
    assert run_view(first).running
    # A reload is a new session with the same address; a second tab is another session.
    reloaded = page(RUN, **{key: first.query_params[key] for key in first.query_params})
    second = page(RUN, run=run_id)
    for tab in (reloaded, second):
        assert_clean(tab)
        assert tab.query_params["run"] == run_id
        assert f"Run {run_id}" in texts(tab) and "is measuring" in texts(tab)
        assert not button(tab, "Stop").disabled and button(tab, "Run benchmark").disabled
    text = texts(reloaded)
    assert "Press **Run benchmark**" not in text and "other run(s)" not in text
    assert "of the estimated time" in text and "Now: " in " ".join(p.proto.text for p in reloaded.get("progress"))
    button(second, "Stop").click().run()  # stopped from the second tab ...
    wait_for_run(first, timeout=30)  # ... ends the run the first tab follows
    assert run_view(first).status == "cancelled"
    assert any("was stopped" in w.value for w in first.warning)
    assert not button(first, "Run benchmark").disabled


def test_a_finished_run_link_shows_its_previews_and_share_makes_a_picture():
    at = page(RUN, formats="png,lmdb", max_count="10", ops="write_batch,read_all", source="sample")
    button(at, "Run benchmark").click().run()
    wait_for_run(at)
    run_id = at.query_params["run"]
    later = page(RUN, run=run_id)  # another day, another browser
    assert_clean(later)
    captions = " ".join(shown(img.caption) for image in later.image for img in image.proto.imgs)
    assert "✓ verified" in captions and len(later.image) == 2  # a row of previews per format
    assert any("finished in" in s.value for s in later.success)
    assert any(b.proto.label == "Share" for b in later.get("download_button"))
    with ResultsDB(db_file()) as db:
        record = db.get_run(run_id)
        specs = runner_specs(db, run_id)
        png = share.share_png([record], specs, db.previews(run_id))
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.width > 800 and picture.height > 600


def legend_titles(spec: dict) -> list[str]:
    """The legends' titles of a chart as Vega draws it (every facet and layer)."""
    import vl_convert as vlc

    found = []

    def walk(node) -> None:
        if isinstance(node, dict):
            found.extend(legend.get("title") for legend in node.get("legends", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(vlc.vegalite_to_vega(spec))
    return found


def test_the_share_picture_of_a_loader_run_has_its_chart_a_table_of_figures_and_captions_that_fit(isolated):
    loader_run = Experiment(
        backends=["lmdb", "hdf5"], counts=[10, 20], operations=["write_batch", "read_all", "read_random", "loader"],
        repeats=1, source="sample", workers=[0], batch_size=8, work_dir=str(isolated / "runs"),
    )  # fmt: skip
    with ResultsDB(db_file()) as db:
        run_id = run_experiment(loader_run, db).run_id
        other_id = record_run(db_file(), isolated / "runs", ["lmdb"], [10, 20])
        record, measurements, stored = db.get_run(run_id), db.measurements(run_id), db.previews(run_id)
        specs = runner_specs(db, run_id)
        both = charts.measurements_frame([*measurements, *db.measurements(other_id)])
    # The training loader's chart is drawn with the others.
    assert [name for name, _ in share.drawn_specs(specs)] == ["time", "rate", "disk", "loader"]
    # Two runs compared: one "Run" legend per chart (the dashes and the points' shapes say the same).
    for build in (charts.time_chart, charts.rate_chart):
        assert legend_titles(charts.chart_spec(build(both))).count("Run") == 1
    # A table of the main figures per format at the largest count, as the page's summary has them.
    count, rows = summary.figures_table(measurements)
    assert count == 20 and [row[0] for row in rows] == [charts.format_label("lmdb"), charts.format_label("hdf5")]
    assert all(len(row) == len(summary.FIGURE_COLUMNS) and "–" not in row for row in rows), rows
    plain_png = share.share_png([record], specs, stored)
    with_table = share.share_png([record], specs, stored, measurements=measurements)
    pictures = [Image.open(io.BytesIO(png)) for png in (plain_png, with_table)]
    assert all(picture.format == "PNG" for picture in pictures)
    assert pictures[1].height > pictures[0].height
    # Each image's caption fits under it: "#2830 automobile" no longer runs into the next one's.
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    captions = [caption for row in previews.preview_rows(stored) for caption in row.captions]
    caption_font = share.font(14)
    for caption in captions:
        lines = share.caption_lines(caption, caption_font, draw)
        assert 1 <= len(lines) <= 2 and all(
            draw.textlength(line, font=caption_font) <= share.CAPTION_SLOT for line in lines
        )
    assert draw.textlength(share.caption_lines("#2830 automobile ✓", caption_font, draw)[0], font=caption_font) <= 130


def runner_specs(db: ResultsDB, run_id: str) -> dict:
    frame = charts.measurements_frame(db.measurements(run_id))
    return {name: charts.chart_spec(build(frame)) for name, build in views.CHARTS if build(frame) is not None}


def test_two_sessions_run_side_by_side_without_mixing():
    first = page(RUN, formats="png", max_count="10", ops="write_batch", source="sample")
    second = page(RUN, formats="hdf5", max_count="10", ops="write_batch", source="sample")
    button(first, "Run benchmark").click().run()
    button(second, "Run benchmark").click().run()
    wait_for_run(first)
    wait_for_run(second)
    one, two = run_view(first), run_view(second)
    assert one.status == two.status == "finished"
    assert one.run_id != two.run_id
    assert {m.backend for m in one.measurements} == {"png"}
    assert {m.backend for m in two.measurements} == {"hdf5"}
    assert "HDF5" not in chart_specs(first)[0] and "PNG files + CSV" not in chart_specs(second)[0]


def test_a_run_link_shows_that_run_from_the_database(isolated):
    run_id = record_run(isolated / "results.sqlite", isolated / "runs", ["png", "lmdb"], [1, 10])
    at = page(RUN, run=run_id, formats="png,lmdb", max_count="10")
    assert_clean(at)
    assert run_id in texts(at)
    specs = chart_specs(at)
    assert specs and all("PNG files + CSV" in spec and "LMDB" in spec for spec in specs)
    missing = page(RUN, run="20000101-000000-000000")
    assert_clean(missing)
    assert any("not in the results database" in w.value for w in missing.warning)


def test_a_run_link_fills_the_form_as_the_run_was_set_up_and_run_benchmark_repeats_it(isolated, monkeypatch):
    recorded = Experiment(
        backends=["lmdb", "hdf5"], counts=[10, 20], operations=["write_batch", "read_all", "loader"],
        caches=["warm"], repeats=2, source="sample", workers=[0], batch_size=8, work_dir=str(isolated / "runs"),
    )  # fmt: skip
    with ResultsDB(db_file()) as db:
        run_id = run_experiment(recorded, db).run_id
        recorded = Experiment(**db.get_run(run_id).parameters)
    started = []
    monkeypatch.setattr(runner, "launch", lambda experiment, db, **options: started.append(experiment) or run_id)

    def assert_form_is_the_runs(at: AppTest) -> None:
        assert_clean(at)
        assert at.multiselect(key="run_formats").value == ["lmdb", "hdf5"]
        assert at.select_slider(key="run_max_count").value == 0  # "none": no powers of ten, so no run of 1 image
        assert at.text_input(key="run_other_counts").value == "10, 20"
        assert at.multiselect(key="run_operations").value == ["write_batch", "read_all", "loader"]
        assert at.number_input(key="run_repeats").value == 2
        assert at.multiselect(key="run_workers").value == [0] and at.number_input(key="run_batch_size").value == 8
        assert at.query_params["run"] == run_id and at.query_params["counts"] == "10,20"
        assert state.to_experiment(state.controls_from_widgets(at.session_state), str(isolated / "runs")) == recorded

    later = page(RUN, run=run_id)
    assert_form_is_the_runs(later)
    button(later, "Run benchmark").click().run()
    assert started == [recorded]
    # A session whose form shows other settings follows a link that names only the run, too.
    other = page(RUN, formats="png", max_count="10", ops="write_batch", source="sample")
    other.query_params.clear()
    other.query_params["run"] = run_id
    assert_form_is_the_runs(other.run())


# -- results ------------------------------------------------------------------------------------


def test_results_page_without_runs_gives_a_hint():
    at = page(RESULTS)
    assert_clean(at)
    assert any("No runs yet" in i.value for i in at.info)


def test_results_page_overlays_exports_shares_and_deletes(isolated):
    db_path = isolated / "results.sqlite"
    first = record_run(db_path, isolated / "runs", ["png", "hdf5"], [1, 10])
    second = record_run(db_path, isolated / "runs", ["lmdb", "hdf5"], [1, 10])
    at = page(RESULTS, runs=f"{first},{second}")
    assert_clean(at)
    runs = at.multiselect(key="results_runs")
    assert runs.label == "Runs" and runs.value == [first, second]
    specs = chart_specs(at)
    assert len(specs) == 3
    assert all(label in specs[0] for label in ("PNG files + CSV", "LMDB", "HDF5"))
    assert "strokeDash" in specs[0]
    labels = [b.proto.label for b in at.get("download_button")]
    for label in ("Download CSV", "Download JSON", "elapsed-time.png", "elapsed-time.svg", "disk-use.png"):
        assert label in labels
    assert any(f"runs={first},{second}" in code.value for code in at.code)
    assert at.query_params["runs"] == f"{first},{second}"

    runs.set_value([second]).run()
    assert_clean(at)
    assert at.query_params["runs"] == second
    at.checkbox(key="results_confirm_delete").check().run()
    button(at, "Delete selected runs").click().run()
    assert_clean(at)
    assert any("Deleted 1 run" in s.value for s in at.success)
    with ResultsDB(db_path) as db:
        assert [run.id for run in db.list_runs()] == [first]
    assert at.multiselect(key="results_runs").value == []
    assert any("Pick one or more runs" in i.value for i in at.info)


def column_widths(table) -> dict[str, int]:
    """The pixel width the page gives each column of a shown table."""
    columns = json.loads(table.proto.columns)
    return {name: config.get("width") for name, config in columns.items() if not config.get("hidden")}


def test_results_compares_runs_of_different_counts_in_the_disk_chart_and_tables_that_fit(isolated):
    db_path = isolated / "results.sqlite"
    smaller = record_run(db_path, isolated / "runs", ["png", "hdf5"], [1, 10])
    larger = record_run(db_path, isolated / "runs", ["lmdb", "hdf5"], [1, 20])
    at = page(RESULTS, runs=f"{smaller},{larger}")
    assert_clean(at)
    (disk,) = [chart.proto for chart in at.get("vega_lite_chart") if "Disk use per image" in chart.proto.spec]
    data = pd.concat([convert_arrow_bytes_to_pandas_df(dataset.data.data) for dataset in disk.datasets])
    drawn = set(zip(data["run"], data["format"], data["count"]))
    assert drawn == {
        (smaller, "PNG files + CSV", 10),
        (smaller, "HDF5", 10),
        (larger, "LMDB", 20),
        (larger, "HDF5", 20),
    }
    assert "each run at its largest count" in disk.spec
    timings, stores = at.dataframe[0], at.dataframe[1]
    assert not set(charts.DISK_TABLE_COLUMNS) & set(timings.value.columns)
    assert {"MB apparent / allocated", "Files", "Bytes/image"} <= set(stores.value.columns)
    assert len(stores.value) == 8  # one row per store: 2 runs × 2 formats × 2 counts
    for table in (timings, stores):  # every column has its width, and together they fit a 1,400-px window
        widths = column_widths(table)
        assert set(widths) == set(table.value.columns) and sum(widths.values()) <= views.TABLE_WIDTH, widths


def test_a_command_line_run_shows_as_running_and_stops_from_the_run_page(isolated):
    at = page(RESULTS)
    assert any("No runs yet" in i.value for i in at.info)
    command = [
        sys.executable, "-m", "storage", "bench", "--backends", "png", "--counts", "10,30000",
        "--ops", "write_batch", "--repeats", "3", "--source", "sample", "--no-progress",
        "--db", str(db_file()), "--work-dir", str(isolated / "runs"),
    ]  # fmt: skip
    cli = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # the page's timer reruns it; here the test does
            at.run()
            assert_clean(at)
            if any("is running" in i.value for i in at.info):
                break
            assert time.monotonic() < deadline and cli.poll() is None, "the command-line run never showed as running"
            time.sleep(0.25)
        with ResultsDB(db_file()) as db:
            (record,) = db.list_runs()
        assert record.status == "running"
        assert any(record.id in shown(i.value) and "command line" in i.value for i in at.info)
        assert "running" in at.multiselect(key="results_runs").format_func(record.id)
        live = page(RUN, run=record.id)  # its live view on the Run page
        assert_clean(live)
        assert "is measuring" in texts(live) and "started from the command line" in texts(live)
        with ResultsDB(db_file()) as db:
            progress = db.progress(record.id)
        assert progress is not None and progress.launched_by == "command line" and progress.estimated_seconds > 0
        button(live, "Stop").click().run()  # Stop on the page ends the command-line run too
        _, stderr = cli.communicate(timeout=60)
        assert cli.returncode == 1 and b"was stopped" in stderr, stderr[-2000:]
        with ResultsDB(db_file()) as db:
            assert db.get_run(record.id).status == "cancelled"
            assert db.count_previews(record.id) > 0  # its images read back are kept, as for a dashboard run
    finally:
        if cli.poll() is None:
            cli.terminate()
            cli.wait(30)


def test_results_offer_share(isolated):
    run_id = record_run(isolated / "results.sqlite", isolated / "runs", ["png", "hdf5"], [1, 10])
    at = page(RESULTS, runs=run_id)
    assert_clean(at)
    share_buttons = [b for b in at.get("download_button") if b.proto.label == "Share"]
    assert share_buttons and share_buttons[0].proto.help.startswith("One PNG")
    # (AppTest has no address; the hint for localhost links is tested with dashboard.state.link_hint.)


def test_explore_lists_each_store_once(isolated, monkeypatch):
    # The run folder inside the data folder, as by default: both are searched, each store is listed once.
    data = isolated / "data"
    monkeypatch.setenv("IMAGE_STORAGE_LAB_RUNS", str(data / "runs"))
    record_run(isolated / "results.sqlite", data / "runs", ["hdf5", "png"], [5], keep=True)
    monkeypatch.setenv("IMAGE_STORAGE_LAB_DATA", str(data))
    at = page(EXPLORE)
    assert_clean(at)
    stores = [option for option in at.selectbox(key="explore_found").options if "images" in option]
    assert len(stores) == 2, stores
    assert len(set(stores)) == 2


def test_results_link_to_unknown_runs_is_explained(isolated):
    known = record_run(isolated / "results.sqlite", isolated / "runs", ["hdf5"], [1])
    at = page(RESULTS, runs=f"nosuch-run,{known}")
    assert_clean(at)
    assert at.multiselect(key="results_runs").value == [known]
    assert any("nosuch-run" in shown(w.value) for w in at.warning)


def test_results_exports_match_the_database(isolated):
    run_id = record_run(isolated / "results.sqlite", isolated / "runs", ["png"], [1])
    at = page(RESULTS)
    assert_clean(at)
    assert at.multiselect(key="results_runs").value == [run_id]  # the newest run by default
    with ResultsDB(isolated / "results.sqlite") as db:
        exported = json.loads(db.export_json([run_id]))
    assert {item["run_id"] for item in exported} == {run_id}


# -- explore ------------------------------------------------------------------------------------


def test_explore_page_without_a_store_gives_a_hint():
    at = page(EXPLORE)
    assert_clean(at)
    assert at.selectbox(key="explore_backend").label == "Backend"
    assert at.text_input(key="explore_path").label == "Store folder"
    assert button(at, "Open store").disabled
    assert any("Open store" in i.value for i in at.info)


def test_explore_pages_through_a_kept_store_and_times_a_read(isolated):
    run_id = record_run(isolated / "results.sqlite", isolated / "runs", ["lmdb"], [30], keep=True)
    store = isolated / "runs" / run_id / "lmdb" / "30" / "store"
    assert (store / "store.json").is_file()
    at = page(EXPLORE, backend="lmdb", path=str(store), id="3", page="2")
    assert_clean(at)
    values = {m.label: m.value for m in at.metric}
    assert values["Images"] == "30" and values["Format"] == "LMDB"
    assert at.number_input(key="explore_id").value == 3
    assert at.number_input(key="explore_page").value == 2
    text = texts(at)
    assert "Read in" in text
    assert "labels are classes of run" in text
    captions = [shown(image.proto.imgs[0].caption) for image in at.image]
    assert captions[0].startswith("#3 ")
    assert captions[1].startswith("#24 ") and len(captions) == 1 + 6  # ids 24..29 on page 2
    assert not any(c.split(" ", 1)[1].startswith("label ") for c in captions)  # class names, not numbers
    assert all(img.url.endswith(".png") for image in at.image for img in image.proto.imgs)

    at.number_input(key="explore_id").set_value(29).run()
    assert_clean(at)
    assert shown(at.image[0].proto.imgs[0].caption).startswith("#29 ")
    assert at.query_params["id"] == "29" and at.query_params["backend"] == "lmdb"
    button(at, "Read").click().run()
    assert_clean(at)


def test_explore_reports_wrong_paths_and_backends_as_messages(isolated):
    folder = isolated / "plain"
    with storage.open_store("hdf5", folder, "w") as store:
        store.write_batch(np.zeros((3, 8, 8, 3), np.uint8), [0, 1, 2])
    at = page(EXPLORE, backend="lmdb", path=str(folder))
    assert_clean(at)
    assert any("hdf5" in e for e in errors(at))
    at = page(EXPLORE, backend="png", path=str(isolated / "nothing-here"))
    assert_clean(at)
    assert any("no image store" in e for e in errors(at))
    at = page(EXPLORE, backend="hdf5", path=str(folder), id="99")
    assert_clean(at)
    assert at.number_input(key="explore_id").value == 2  # clamped to the last id
    assert "label 2" in shown(at.image[0].proto.imgs[0].caption)


def test_explore_opens_a_typed_folder_with_the_backend_that_wrote_it(isolated):
    folder = isolated / "plain"
    with storage.open_store("hdf5", folder, "w") as store:
        store.write_batch(np.zeros((3, 8, 8, 3), np.uint8), [0, 1, 2])
    at = page(EXPLORE)
    assert at.selectbox(key="explore_backend").value != "hdf5"
    at.text_input(key="explore_path").set_value(str(folder)).run()
    button(at, "Open store").click().run()
    assert_clean(at)
    assert not at.error
    assert at.selectbox(key="explore_backend").value == "hdf5"
    assert {m.label: m.value for m in at.metric}["Images"] == "3"
    assert "labels shown as numbers" in texts(at)


def test_explore_names_labels_with_the_class_names_a_store_keeps(isolated):
    folder = isolated / "named"
    with storage.open_store("lmdb", folder, "w") as store:
        store.set_class_names(["cat", "dog", "bird"])
        store.write_batch(np.zeros((3, 8, 8, 3), np.uint8), [0, 1, 2])
    at = page(EXPLORE, backend="lmdb", path=str(folder), id="1")
    assert_clean(at)
    assert "labels named by the store" in texts(at)
    assert shown(at.image[0].proto.imgs[0].caption).startswith("#1 dog")


def test_run_that_would_not_fit_is_refused_with_a_warning():
    at = page(RUN, formats="png", counts="2000000000", max_count="1")
    assert_clean(at)
    warnings = " ".join(str(w.value) for w in at.warning)
    assert "would not fit on the disk" in warnings and "use smaller counts" in warnings
    assert button(at, "Run benchmark").disabled


# -- photos -------------------------------------------------------------------------------------


def test_the_photo_controls_reach_the_experiment_and_the_link_and_cifar_cannot_keep_bytes():
    at = page(RUN)
    assert "photos" in at.selectbox(key="run_source_kind").options or any(
        "Photos: bundled ImageNet sample" in option for option in at.selectbox(key="run_source_kind").options
    )
    assert at.selectbox(key="run_encoding").label == "Stores keep"
    assert at.selectbox(key="run_resize").label == "Resize" and at.number_input(key="run_side").disabled
    at.selectbox(key="run_source_kind").set_value("photos")
    at.selectbox(key="run_encoding").set_value("jpeg:90")
    at.selectbox(key="run_resize").set_value("longest")
    at.run()
    at.number_input(key="run_side").set_value(160).run()
    assert_clean(at)
    params = {key: at.query_params[key] for key in at.query_params}
    assert params["source"] == "photos" and params["encoding"] == "jpeg:90" and params["max_side"] == "160"
    assert "shorter_side" not in params
    assert "image folder data/imagenet-sample: 100 images" in texts(at)  # the bundled photos, listed
    assert not button(at, "Run benchmark").disabled
    again = page(RUN, **params)  # the same link in another browser
    assert again.selectbox(key="run_source_kind").value == "photos"
    assert again.selectbox(key="run_encoding").value == "jpeg:90"
    assert again.selectbox(key="run_resize").value == "longest" and again.number_input(key="run_side").value == 160

    cifar = page(RUN, source="sample", encoding="source")
    assert_clean(cifar)
    assert any("Stores keep: CIFAR-10 is pixels with no encoded files" in e and "JPEG 90" in e for e in errors(cifar))
    assert button(cifar, "Run benchmark").disabled


def test_a_real_photo_run_keeps_the_photos_bytes_shows_the_ratio_and_thumbnails(isolated):
    at = page(
        RUN, formats="lmdb,hdf5,png", max_count="10", ops="write_batch,read_all", source="photos",
        encoding="source", shorter_side="128",
    )  # fmt: skip
    assert_clean(at)
    assert "PNG files + CSV hold only pixels" in texts(at)
    button(at, "Run benchmark").click().run()
    wait_for_run(at, timeout=120)
    run_id = at.query_params["run"]
    assert run_view(at).status == "finished", run_view(at).error
    with ResultsDB(db_file()) as db:
        record = db.get_run(run_id)
        measurements = db.measurements(run_id)
        stored = db.previews(run_id)
    # The controls reached the engine: recorded with the run and with every measurement.
    assert record.parameters["encoding"] == "source" and record.parameters["shorter_side"] == 128
    assert Path(record.parameters["source"]) == ROOT / "data" / "imagenet-sample"
    kept = {m.backend: m.encoding for m in measurements}
    assert kept == {"lmdb": "source", "hdf5": "source", "png": "raw"}
    assert all("128" in m.resize for m in measurements) and all(m.source_bytes for m in measurements)
    # The table says what each store kept, the resize and its bytes against the source files.
    table = at.dataframe[0].value
    assert set(table["Keeps"]) == {"source bytes", "pixels"}, table.columns
    ratios = {row["Format"]: row["× source files"] for _, row in at.dataframe[1].value.iterrows()}  # per store
    assert all(text.endswith("×") for text in ratios.values()), ratios
    text = texts(at)
    assert "Resize: shorter side 128 px" in text  # the same on every row, so said once above the table
    assert "Stores of 10 photos against their" in text and "LMDB " in text
    # Previews stay thumbnails: stored at most 128 pixels a side, shown at that size.
    assert stored and all(max(image.shape[:2]) <= PREVIEW_MAX_SIDE for p in stored for image in p.images)
    drawn = [picture.size for row in previews.preview_rows(stored) for picture in row.images]  # what the page shows
    assert len(drawn) == 12 and all(max(size) <= PREVIEW_MAX_SIDE for size in drawn), drawn
    assert len(at.image) == 3  # a row of four thumbnails per store
    # The Results page and the Share picture say the same.
    results = page(RESULTS, runs=run_id)
    assert_clean(results)
    assert "Stores of 10 photos against their" in texts(results)
    assert "stores keep source bytes; resized to a shorter side of 128 px" in texts(results)
    (line,) = share.settings_lines([record])
    assert "stores keep source bytes; resized to a shorter side of 128 px" in line
    notes = charts.source_ratio_lines(charts.measurements_frame(measurements))
    with ResultsDB(db_file()) as db:
        picture = Image.open(io.BytesIO(share.share_png([record], runner_specs(db, run_id), stored, notes=notes)))
    assert picture.format == "PNG" and picture.height > 600
    assert "× source files" in results.dataframe[1].value.columns
    # A bare link to the run sets the form as the run was set up.
    later = page(RUN, run=run_id)
    assert_clean(later)
    assert later.selectbox(key="run_source_kind").value == "photos"
    assert later.selectbox(key="run_encoding").value == "source"
    assert later.selectbox(key="run_resize").value == "shorter" and later.number_input(key="run_side").value == 128
