"""Tests of the dashboard's plain-Python helpers: URL state, charts, previews and the run job.

Nothing here needs a browser or a Streamlit session; the job tests start the real engine
in its child process on a few images.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard import charts, previews, runner, state, views  # noqa: E402
from storage.bench import Experiment, Measurement, PreviewReady, ResultsDB  # noqa: E402

BACKENDS = ["png", "lmdb", "hdf5"]


# -- URL state ----------------------------------------------------------------------------------


def test_run_params_round_trip():
    controls = state.RunControls(
        formats=["png", "hdf5"],
        max_count=100,
        other_counts="500, 5000",
        operations=["write_batch", "read_all"],
        caches=["warm", "cold"],
        repeats=3,
        source="sample",
        keep=True,
        run_id="20260101-000000-abcdef",
    )
    params = state.run_params(controls)
    assert params["formats"] == "png,hdf5"
    assert params["counts"] == "500,5000"
    parsed, notes = state.parse_run_params(params, BACKENDS)
    assert notes == []
    assert parsed == state.RunControls(
        formats=["png", "hdf5"],
        max_count=100,
        other_counts="500, 5000",
        operations=["write_batch", "read_all"],
        caches=["warm", "cold"],
        repeats=3,
        source="sample",
        keep=True,
        run_id="20260101-000000-abcdef",
    )
    assert parsed.counts() == [1, 10, 100, 500, 5000]


def test_a_recorded_runs_counts_come_back_exactly_in_the_form_and_the_address():
    """A run of 10 and 20 images (no 1) is neither 1, 10, 20 nor 1, 20 once it is a form or a link."""
    recorded = {"backends": ["lmdb", "hdf5"], "counts": [10, 20], "operations": ["write_batch"], "repeats": 2}
    controls, notes = state.parse_run_params(state.params_of_run(recorded), BACKENDS)
    assert notes == [] and controls.max_count == state.NO_STEPS and controls.counts() == [10, 20]
    again, _ = state.parse_run_params(state.run_params(controls), BACKENDS)
    assert again.counts() == [10, 20]
    widgets = state.controls_from_widgets(state.run_widget_values(controls))
    assert widgets.max_count == state.NO_STEPS and widgets.counts() == [10, 20]
    # A run from 1 image keeps the slider; a count the slider covers is not repeated in the link.
    slider, _ = state.parse_run_params(state.params_of_run({**recorded, "counts": [1, 10, 100, 5000]}), BACKENDS)
    assert slider.max_count == 100 and slider.counts() == [1, 10, 100, 5000]
    typed = state.RunControls(max_count=1, other_counts="10, 20")
    assert state.parse_run_params(state.run_params(typed), BACKENDS)[0].counts() == [1, 10, 20]


def test_parse_run_params_defaults_and_bad_values_become_notes():
    controls, notes = state.parse_run_params({}, BACKENDS)
    assert controls.formats == ["png", "lmdb", "hdf5"]
    assert controls.max_count == 1_000 and controls.repeats == 3 and controls.caches == ["warm"]
    assert notes == []

    controls, notes = state.parse_run_params(
        {"formats": "png,nope", "max_count": "lots", "ops": "read_all,fly", "caches": "tepid", "repeats": "-2"},
        BACKENDS,
    )
    assert controls.formats == ["png"]
    assert controls.operations == ["read_all"]
    assert controls.caches == ["warm"]
    assert controls.max_count == 1_000 and controls.repeats == state.DEFAULT_REPEATS == 3
    text = " ".join(notes)
    for word in ("nope", "lots", "fly", "tepid", "-2"):
        assert word in text


def test_parse_run_params_accepts_repeated_values_cold_shorthand_and_odd_max_count():
    controls, notes = state.parse_run_params(
        {"formats": ["png", "lmdb"], "cold": "1", "max_count": "500", "source": "data/my-images"}, BACKENDS
    )
    assert notes == []
    assert controls.formats == ["png", "lmdb"]
    assert controls.caches == ["warm", "cold"]
    assert controls.max_count == 100 and controls.counts() == [1, 10, 100, 500]
    assert controls.source_kind == state.FOLDER and controls.folder == "data/my-images"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", []), ("5000", [5000]), ("500, 5_000; 1e4", [500, 5000, 10000]), (" 7  8 ", [7, 8])],
)
def test_parse_counts(text, expected):
    assert state.parse_counts(text) == expected


@pytest.mark.parametrize("text", ["abc", "0", "-5", "1.5", "2.55e1"])
def test_parse_counts_refuses_non_counts_with_a_sentence(text):
    with pytest.raises(ValueError, match="number of images"):
        state.parse_counts(text)


def test_widget_values_round_trip_and_experiment():
    controls = state.RunControls(formats=["lmdb"], max_count=10, source="/tmp/images", keep=True)
    values = state.run_widget_values(controls)
    assert values[state.RUN_WIDGETS["source_kind"]] == state.FOLDER
    assert state.controls_from_widgets(values) == controls
    experiment = state.to_experiment(controls, "/tmp/runs")
    assert experiment.backends == ["lmdb"] and experiment.counts == [1, 10]
    assert experiment.source == "/tmp/images" and experiment.keep and experiment.work_dir == "/tmp/runs"


def test_run_ids_explore_params_and_share_url():
    assert state.parse_run_ids({"runs": "a,b,a"}) == ["a", "b"]
    assert state.parse_run_ids({"runs": ["a", "c"]}) == ["a", "c"]
    assert state.parse_run_ids({}) == []
    controls, notes = state.parse_explore_params(
        {"backend": "lmdb", "path": "x/y", "id": "7", "page": "oops"}, BACKENDS
    )
    assert (controls.backend, controls.path, controls.image_id, controls.page) == ("lmdb", "x/y", 7, 1)
    assert len(notes) == 1 and "oops" in notes[0]
    assert state.explore_params(controls) == {"backend": "lmdb", "path": "x/y", "id": "7"}
    url = state.share_url("http://host:8501/Results?runs=old#top", {"runs": "a,b", "empty": ""})
    assert url == "http://host:8501/Results?runs=a,b"
    assert state.share_url(None, {"runs": "a"}) == "?runs=a"


# -- charts -------------------------------------------------------------------------------------


def _measurement(run_id, backend, count, operation, seconds, cache="warm", error=None):
    m = Measurement(run_id=run_id, backend=backend, count=count, operation=operation, cache=cache)
    m.samples = [seconds * 0.9, seconds, seconds * 1.2]
    m.repeats = 3
    m.seconds_median, m.seconds_min, m.seconds_max = seconds, seconds * 0.9, seconds * 1.2
    m.seconds_iqr = seconds * 0.15
    m.images = count
    m.images_per_second = count / seconds
    m.mb_per_second = count * 3072 / seconds / 1e6
    m.apparent_bytes, m.allocated_bytes, m.files = count * 3100, count * 4096, count + 1
    m.bytes_per_image = 4096.0
    m.verified = error is None
    m.error = error
    return m


def _measurements(run_id="run-a", backends=("png", "hdf5")):
    items = []
    for count in (1, 10, 100):
        for backend in backends:
            items.append(_measurement(run_id, backend, count, "write_batch", 0.001 * count))
            items.append(_measurement(run_id, backend, count, "read_all", 0.0005 * count))
    return items


def test_measurements_frame_and_table():
    frame = charts.measurements_frame(_measurements())
    assert len(frame) == 12
    assert set(frame["format"]) == {"PNG files + CSV", "HDF5"}
    assert list(frame["panel"].unique()) == ["write a batch", "read all"]
    table = charts.table_frame(frame)
    assert list(table["Format"].unique()) == ["PNG files + CSV", "HDF5"]  # registry order
    assert table["Verified"].eq("✓").all()
    assert charts.measurements_frame([]).empty and charts.table_frame(charts.measurements_frame([])).empty


def test_chart_specs_name_both_formats_and_use_log_scales():
    frame = charts.measurements_frame(_measurements())
    for build in (charts.time_chart, charts.rate_chart, charts.disk_chart):
        spec = json.dumps(charts.chart_spec(build(frame)))
        assert "PNG files + CSV" in spec and "HDF5" in spec
    time_spec = charts.chart_spec(charts.time_chart(frame))
    text = json.dumps(time_spec)
    assert '"type": "log"' in text
    assert "seconds_iqr" in text and "images_per_second" in text  # the tooltips


def test_charts_skip_failed_measurements_and_empty_frames():
    items = _measurements()
    failed = _measurement("run-a", "lmdb", 10, "write_batch", 0.01, error="ReadError: disk on fire")
    failed.seconds_median = None
    frame = charts.measurements_frame([*items, failed])
    assert "LMDB" not in json.dumps(charts.chart_spec(charts.time_chart(frame)))
    verified = list(charts.table_frame(frame)["Verified"])
    assert verified.count("✓") == 12 and "✗ ReadError: disk on fire" in verified
    empty = charts.measurements_frame([])
    assert charts.time_chart(empty) is None and charts.rate_chart(empty) is None and charts.disk_chart(empty) is None


def test_several_runs_are_overlaid_with_a_dash_per_run():
    frame = charts.measurements_frame(_measurements("run-a") + _measurements("run-b"))
    spec = json.dumps(charts.chart_spec(charts.time_chart(frame)))
    assert "strokeDash" in spec and "run_label" in spec
    disk = json.dumps(charts.chart_spec(charts.disk_chart(frame)))
    assert "facet" in disk and "run-a" in disk and "run-b" in disk
    assert "Run" in charts.table_frame(frame).columns


def _spec_rows(spec: dict) -> list[dict]:
    """The rows a chart's spec carries inline (every dataset of it)."""
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def _disk_run(run_id, counts, backends, stopped=None):
    """Write measurements of a run; ``stopped`` (backend, count): that format measured up to that count only."""
    items = []
    for count in counts:
        for backend in backends:
            if stopped and backend == stopped[0] and count > stopped[1]:
                continue
            items.append(_measurement(run_id, backend, count, "write_batch", 0.001 * count))
            items.append(_measurement(run_id, backend, count, "read_all", 0.0005 * count))
    return items


def test_the_disk_chart_keeps_every_runs_formats_each_at_its_largest_count():
    small = _disk_run("run-small", (1, 10, 100, 1000, 10_000), ("png", "hdf5"))
    large = _disk_run("run-large", (1, 10, 100, 1000, 10_000, 20_000), ("lmdb", "hdf5"))
    frame = charts.measurements_frame(small + large, run_labels={"run-small": "small", "run-large": "large"})
    spec = charts.chart_spec(charts.disk_chart(frame))
    drawn = {(row["run_label"], row["format"], row["count"]) for row in _spec_rows(spec)}
    assert drawn == {
        ("small", "PNG files + CSV", 10_000),
        ("small", "HDF5", 10_000),
        ("large", "LMDB", 20_000),
        ("large", "HDF5", 20_000),
    }
    # bytes per image: the same stores of 10,000 and 20,000 images draw the same bars
    assert {row["per_image"] for row in _spec_rows(spec) if row["measure"] == "allocated"} == {4096.0}
    text = json.dumps(spec, ensure_ascii=False)
    assert "Disk use per image, each run at its largest count" in text
    assert "small · 10,000 images" in text and "large · 20,000 images" in text  # each run's panel says its count
    assert '"field": "panel"' in text


def test_a_format_a_stopped_run_did_not_finish_stays_in_the_disk_chart_at_the_count_it_reached():
    frame = charts.measurements_frame(_disk_run("run-a", (1, 10, 100), ("png", "lmdb", "hdf5"), stopped=("lmdb", 10)))
    spec = charts.chart_spec(charts.disk_chart(frame))
    bars = {(row["format"], row["count"], row["bar"]) for row in _spec_rows(spec)}
    assert bars == {
        ("PNG files + CSV", 100, "PNG files + CSV"),
        ("LMDB", 10, "LMDB\n(only 10 images)"),
        ("HDF5", 100, "HDF5"),
    }
    text = json.dumps(spec)
    assert "Disk use per image, stores of 100 images" in text and "stopped short" in text
    svg = charts.chart_svg(spec)
    assert "(only 10 images)" in svg and "LMDB" in svg  # drawn: the label's second line
    complete = charts.chart_spec(charts.disk_chart(charts.measurements_frame(_measurements())))
    assert "stopped short" not in json.dumps(complete)  # said only when a format stopped short


def test_the_disk_table_has_one_row_per_store():
    frame = charts.measurements_frame(_disk_run("run-a", (1, 10), ("png", "hdf5"), stopped=("hdf5", 1)))
    table = charts.disk_table_frame(frame)
    assert list(table.columns) == [
        "Format",
        "Images",
        "MB apparent / allocated",
        "Files",
        "Bytes/image",
        "× source files",
    ]
    assert list(zip(table["Format"], table["Images"])) == [
        ("PNG files + CSV", "1"),
        ("HDF5", "1"),
        ("PNG files + CSV", "10"),
    ]


def test_colours_are_fixed_per_backend():
    assert charts.format_colors(["hdf5", "png"]) == {"png": charts.PALETTE[0], "hdf5": charts.PALETTE[2]}
    assert charts.format_colors(["hdf5"]) == {"hdf5": charts.PALETTE[2]}


def test_chart_export_to_png_and_svg():
    frame = charts.measurements_frame(_measurements())
    spec = charts.chart_spec(charts.disk_chart(frame))
    png = charts.chart_png(spec)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = charts.chart_svg(charts.disk_chart(frame))
    assert svg.lstrip().startswith("<svg") and "HDF5" in svg


# -- previews -----------------------------------------------------------------------------------


def test_enlarge_uses_whole_nearest_neighbour_blocks():
    image = np.arange(32 * 32 * 3, dtype=np.uint32).reshape(32, 32, 3).astype(np.uint8)
    big = np.asarray(previews.enlarge(image, 96))
    assert big.shape == (96, 96, 3)
    assert np.array_equal(big[::3, ::3], image)  # every pixel became a 3x3 block of itself
    assert np.array_equal(big[1::3, 2::3], image)


def test_enlarge_handles_grey_alpha_odd_and_large_images():
    assert previews.enlarge(np.zeros((10, 20), np.uint8), 96).size == (80, 40)
    assert previews.enlarge(np.zeros((8, 8, 4), np.uint8), 96).mode == "RGBA"
    assert previews.enlarge(np.zeros((8, 8, 1), np.uint8), 96).size == (96, 96)
    assert previews.enlarge(np.zeros((500, 250, 3), np.uint8), 96).size == (48, 96)
    with pytest.raises(ValueError, match="shape"):
        previews.to_pil(np.zeros((4, 4, 2), np.uint8))


def test_captions_and_preview_rows():
    names = ["airplane", "frog"]
    assert previews.caption(7, 1, names, True) == "#7 frog ✓ verified"
    assert previews.caption(7, 1, names, False) == "#7 frog ✗ mismatch"
    assert previews.caption(7, 5, names, None) == "#7 label 5"
    image = np.zeros((32, 32, 3), np.uint8)
    items = [
        PreviewReady("r", backend, count, [1, 2], [image, image], [0, 1], names, True, None)
        for count in (10, 100)
        for backend in ("hdf5", "png")
    ]
    rows = previews.preview_rows(items)
    assert [row.backend for row in rows] == ["png", "hdf5"] and {row.count for row in rows} == {100}
    assert rows[0].captions == ["#1 airplane ✓ verified", "#2 frog ✓ verified"]
    assert rows[0].images[0].size == (previews.PREVIEW_SIZE, previews.PREVIEW_SIZE)
    assert previews.preview_counts(items) == [100, 10]
    assert previews.preview_rows([]) == []


# -- the run job --------------------------------------------------------------------------------


def test_a_launched_run_is_in_the_database_at_once_and_records_progress_and_previews(tmp_path):
    experiment = Experiment(
        backends=["png", "hdf5"],
        counts=[1, 10],
        operations=["write_batch", "read_all"],
        repeats=1,
        source="sample",
        work_dir=str(tmp_path / "runs"),
    )
    with ResultsDB(tmp_path / "results.sqlite") as db:
        run_id = runner.launch(experiment, db, estimated_seconds=3.0)
        first = runner.read_run(db, run_id)  # before the child has loaded anything
        assert first is not None and first.running and first.stoppable and first.estimated_seconds == 3.0
        view = runner.wait_for_run(db, run_id, timeout=60)
        assert view.status == "finished", view.error
        assert len(view.measurements) == 8 and all(m.verified for m in view.measurements)
        assert view.fraction == 1.0 and view.total_steps == 8 and view.progress.message == "done"
        assert {(p.backend, p.count) for p in db.previews(run_id)} == {
            ("png", 1),
            ("png", 10),
            ("hdf5", 1),
            ("hdf5", 10),
        }
        assert "CIFAR-10 sample" in view.record.source["description"]
        assert view.record.environment.get("cpu_model") is not None  # the engine filled in the reserved run
        times = db.measurement_times(run_id)
        assert len(times) == 8 and times == sorted(times) and times[0] >= view.progress.launched_at
        assert runner.running_runs(db) == []


def test_a_stop_request_in_the_database_stops_the_run_and_keeps_what_it_measured(tmp_path):
    experiment = Experiment(
        backends=["hdf5", "png"],
        counts=[10, 30_000],
        operations=["write_batch"],
        repeats=3,
        source="sample",
        work_dir=str(tmp_path / "runs"),
    )
    with ResultsDB(tmp_path / "results.sqlite") as db:
        run_id = runner.launch(experiment, db)
        deadline = time.monotonic() + 30
        while not db.measurements(run_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.read_run(db, run_id).running
        started = time.monotonic()
        # Another server process (or another tab) asks through the database only: no signal.
        with ResultsDB(tmp_path / "results.sqlite") as elsewhere:
            assert elsewhere.request_stop(run_id)
        view = runner.wait_for_run(db, run_id, timeout=20)
        assert time.monotonic() - started < 10
        assert view.status == "cancelled" and view.stop_requested
        assert 1 <= len(view.measurements) < 6
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # the run's stores are removed


def test_a_run_that_cannot_start_says_why_in_a_sentence(tmp_path):
    experiment = Experiment(
        backends=["png"],
        counts=[1],
        operations=["write_batch"],
        repeats=1,
        source=str(tmp_path / "no-such-folder"),
        work_dir=str(tmp_path / "runs"),
    )
    with ResultsDB(tmp_path / "results.sqlite") as db:
        view = runner.wait_for_run(db, runner.launch(experiment, db), timeout=60)
    assert view.status == "failed"
    assert "does not exist" in view.error and "Traceback" not in view.error


def test_count_ticks_are_the_counts_measured():
    assert charts.count_ticks([1, 10, 100, 1000]) == [1, 10, 100, 1000]
    assert charts.count_ticks([500, 1, 100, 10, 100]) == [1, 10, 100, 500]
    assert charts.count_ticks([1, 10, 100, 1000, 10_000, 20_000]) == [1, 10, 100, 1000, 10_000, 20_000]
    assert charts.count_ticks([3]) == [3]


COUNTS = (1, 10, 100, 1000, 10_000, 20_000)


def _count_run(counts=COUNTS, operations=("write_batch", "read_all", "read_random")):
    items = []
    for count in counts:
        for backend in ("png", "lmdb"):
            for operation in operations:
                items.append(_measurement("run-a", backend, count, operation, 1e-6 * count))
    return items


def _x_label_places(svg: str, labels) -> dict[str, float]:
    """Where the chart's first panel draws each count label along its x axis (pixels)."""
    places = {}
    for label in labels:
        found = re.search(rf'<text[^>]*transform="translate\(([\d.]+),[\d.]+\)[^>]*>{re.escape(label)}</text>', svg)
        assert found, f"no label {label} drawn"
        places[label] = float(found.group(1))
    return places


def test_the_count_axis_labels_a_tick_at_every_count_measured_without_overlap():
    frame = charts.measurements_frame(_count_run())
    for build in (charts.time_chart, charts.rate_chart):
        spec = charts.chart_spec(build(frame))
        axis = spec["spec"]["layer"][-1]["encoding"]["x"]["axis"]
        assert axis["values"] == list(COUNTS) and axis["labelOverlap"] is False
        svg = charts.chart_svg(spec)
        places = _x_label_places(svg, [f"{count:,}" for count in COUNTS])
        assert places["20,000"] - places["10,000"] >= charts.UPRIGHT_LABEL_WIDTH  # 10,000 has its own label
        assert axis["labelAngle"] == -90  # turned upright: flat, 10,000 and 20,000 would print over each other
    spread_out = charts.chart_spec(charts.time_chart(charts.measurements_frame(_count_run((1, 10, 100, 1000)))))
    assert spread_out["spec"]["layer"][-1]["encoding"]["x"]["axis"]["labelAngle"] == 0  # flat where they fit
    angle, width = charts.count_axis_layout([1000, 1100, 1200])  # too close even upright: a wider panel
    assert angle == -90 and width > charts.PANEL_WIDTH


def _formats_of(spec, fields) -> dict[str, set]:
    """Each field's number formats anywhere in a spec: its axes' and its tooltips'."""
    found: dict[str, set] = {}

    def walk(node):
        if isinstance(node, dict):
            if node.get("field") in fields:
                fmt = node.get("format", (node.get("axis") or {}).get("format"))
                if "axis" in node or "title" in node:
                    found.setdefault(node["field"], set()).add(fmt)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return found


def _loader_measurements():
    items = []
    for backend in ("lmdb", charts.CEILING_BACKEND):
        for workers, rate in ((0, 300_000.0), (2, 1_000_000.0)):
            items.append(
                Measurement("run-a", backend, 20_000, "loader", "warm", workers=workers, batch_size=1024,
                            images_per_second=rate, seconds_median=20_000 / rate, images=20_000)
            )  # fmt: skip
    return items


def test_every_chart_writes_image_counts_and_rates_in_one_format():
    frame = charts.measurements_frame(_count_run() + _loader_measurements())
    counted = {"count", "run_count", "files", "batch_size", "images_per_second"}
    specs = {name: charts.chart_spec(build(frame)) for name, build in views.CHARTS}
    assert set(specs) == {"time", "rate", "disk", "loader"}
    for name, spec in specs.items():
        formats = _formats_of(spec, counted)
        formats.get("images_per_second", set()).discard(",.0f")  # a rate's tooltip: whole images per second
        formats = {field: found for field, found in formats.items() if found}
        assert "count" in formats, name
        assert all(found == {charts.COUNT_FORMAT} for found in formats.values()), (name, formats)
    rate_svg = charts.chart_svg(specs["rate"])
    loader_svg = charts.chart_svg(specs["loader"])
    assert ">1,000,000<" in loader_svg and ">20,000<" in rate_svg
    for svg in (rate_svg, loader_svg):
        assert not re.search(r">[\d.]+(k|M|e\+\d+)<", svg)  # no 300k, 1M or 1e+6 beside 1,000


def test_random_reads_say_they_read_1000_ids_of_a_store_of_n():
    frame = charts.measurements_frame(_count_run())
    for build in (charts.time_chart, charts.rate_chart):
        spec = charts.chart_spec(build(frame))
        assert "1,000 random reads from a store of N images" in json.dumps(spec["title"])
        assert any(tip["field"] == "timed" for tip in spec["spec"]["layer"][-1]["encoding"]["tooltip"])
        timed = {(row["operation"], row["count"]): row["timed"] for row in _spec_rows(spec)}
        assert timed[("read_random", 20_000)] == "1,000 random reads from a store of 20,000 images"
        assert timed[("read_random", 100)] == "100 images" and timed[("read_all", 20_000)] == "20,000 images"
    writes = charts.chart_spec(charts.time_chart(charts.measurements_frame(_count_run(operations=("write_batch",)))))
    assert "random reads" not in json.dumps(writes["title"])  # said only where there are random reads


def test_link_hint_only_for_addresses_of_this_computer():
    assert "this computer" in state.link_hint("http://localhost:8501/Results?runs=a")
    assert state.link_hint("http://127.0.0.1:8501/Results") is not None
    assert state.link_hint("https://lab.example.org/Results?runs=a") is None


# -- photos in the URL ------------------------------------------------------------------------------


def test_photo_controls_round_trip_through_the_url_and_reach_the_experiment(tmp_path):
    controls = state.RunControls(formats=["lmdb"], source="photos", encoding="source", resize="shorter", side=256)
    params = state.run_params(controls)
    assert params["source"] == "photos" and params["encoding"] == "source" and params["shorter_side"] == "256"
    parsed, notes = state.parse_run_params(params, BACKENDS)
    assert notes == [] and (parsed.encoding, parsed.resize, parsed.side) == ("source", "shorter", 256)
    experiment = state.to_experiment(parsed, str(tmp_path))
    assert Path(experiment.source) == ROOT / "data" / "imagenet-sample"
    assert (experiment.encoding, experiment.shorter_side, experiment.max_side) == ("source", 256, None)
    longest, _ = state.parse_run_params({"max_side": "512", "encoding": "JPEG:90"}, BACKENDS)
    assert (longest.resize, longest.side, longest.encoding) == ("longest", 512, "jpeg:90")
    bad, notes = state.parse_run_params({"encoding": "gif", "shorter_side": "huge"}, BACKENDS)
    assert bad.encoding == "raw" and bad.resize == "none" and len(notes) == 2
    assert "gif" in notes[0] and "huge" in notes[1]
    with pytest.raises(state.RunParameterError, match="no encoded files") as refused:
        state.to_experiment(state.RunControls(source="sample", encoding="source"), str(tmp_path))
    assert state.CONTROL_LABELS[refused.value.field] == "Stores keep"


def test_a_recorded_run_gives_back_the_link_that_sets_its_form():
    parameters = Experiment(
        backends=["lmdb", "png"], counts=[1, 10, 100, 5000], operations=["write_batch"], repeats=2,
        source=str(ROOT / "data" / "imagenet-sample"), encoding="jpeg:90", max_side=320,
    ).to_dict()  # fmt: skip
    controls, notes = state.parse_run_params(state.params_of_run(parameters), BACKENDS)
    assert notes == []
    assert controls.counts() == [1, 10, 100, 5000] and controls.formats == ["lmdb", "png"]
    assert (controls.source_kind, controls.encoding, controls.resize, controls.side) == (
        "photos",
        "jpeg:90",
        "longest",
        320,
    )


def test_the_table_and_the_sentence_give_each_store_against_the_source_files():
    measurements = [
        Measurement("r", "lmdb", 100, "write_batch", "warm", allocated_bytes=11_800_000, source_bytes=11_600_000,
                    encoding="source", resize="shorter side 256 px", verified=True, images=100),
        Measurement("r", "png", 100, "write_batch", "warm", allocated_bytes=58_000_000, source_bytes=11_600_000,
                    encoding="raw", resize="shorter side 256 px", verified=True, images=100),
    ]  # fmt: skip
    frame = charts.measurements_frame(measurements)
    table = charts.table_frame(frame)
    assert list(table["× source files"]) == ["5.00×", "1.02×"]  # in the registry's order of formats
    assert list(table["Keeps"]) == ["pixels", "source bytes"] and set(table["Resize"]) == {"shorter side 256 px"}
    (line,) = charts.source_ratio_lines(frame)
    assert line == (
        "Stores of 100 photos against their 11.6 MB of source files: "
        "PNG files + CSV 5.00× (pixels, shorter side 256 px), LMDB 1.02× (source bytes, shorter side 256 px)"
    )
    cifar = charts.measurements_frame([Measurement("r", "lmdb", 10, "write_batch", "warm", allocated_bytes=5)])
    assert charts.source_ratio_lines(cifar) == [] and list(charts.table_frame(cifar)["× source files"]) == ["-"]
    assert charts.keeps_label("jpeg:90") == "JPEG 90" and charts.keeps_label("webp:80") == "WebP 80"


# -- what the dashboard may read ------------------------------------------------------------------


def test_the_data_roots_follow_the_address_and_the_setting(tmp_path, monkeypatch):
    from dashboard import access, config

    monkeypatch.delenv(access.ROOTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "photos").mkdir(parents=True)
    data = (ROOT / "data").resolve()
    local, network = access.data_roots("127.0.0.1"), access.data_roots("0.0.0.0")
    assert data in local and data in network and config.runs_dir().resolve() in network
    assert (tmp_path / "home").resolve() in local and (tmp_path / "home").resolve() not in network
    assert access.allowed_path(tmp_path / "home" / "photos", "127.0.0.1") == (tmp_path / "home" / "photos").resolve()
    with pytest.raises(access.OutsideRootsError):
        access.allowed_path(tmp_path / "home" / "photos", "")  # "" is every interface
    assert access.allowed_path("data/imagenet-sample", "") == data / "imagenet-sample"  # relative to the project
    monkeypatch.setenv(access.ROOTS_ENV, f"{tmp_path / 'shared'}:{tmp_path / 'more'}")
    assert (tmp_path / "shared").resolve() in access.data_roots("0.0.0.0")
    assert (tmp_path / "home").resolve() not in access.data_roots("127.0.0.1")  # the setting replaces the home folder
    assert access.listens_locally("localhost") and not access.listens_locally("192.168.1.5")


def test_paths_are_resolved_before_the_check_and_refused_in_the_same_words(tmp_path, monkeypatch):
    from dashboard import access

    inside, outside = tmp_path / "inside", tmp_path / "outside"
    (outside / "photos").mkdir(parents=True)
    inside.mkdir()
    (inside / "link").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv(access.ROOTS_ENV, str(inside))
    messages = []
    for path in (inside / "link" / "photos", inside / ".." / "outside", outside / "no-such-thing", "/etc/shadow"):
        with pytest.raises(access.OutsideRootsError) as refused:
            access.allowed_path(path, "0.0.0.0")
        messages.append(str(refused.value).replace(str(path), "PATH"))
    assert len(set(messages)) == 1 and "IMAGE_STORAGE_LAB_ROOTS" in messages[0]


def test_plain_text_shows_markdown_and_control_characters_as_they_are():
    from dashboard.text import WORD_JOINER, plain

    hostile = "[x](http://evil.example) ![i](https://evil.example/p.png) www.evil.example a@b.c :red[r] $x$ <b>\x1b[31m"
    escaped = plain(hostile)
    assert "](" not in escaped and "![" not in escaped and "\x1b" not in escaped and ":red[" not in escaped
    assert "http:" not in escaped and "www." not in escaped and "a@" not in escaped
    # Every character kept: escaped with a backslash, or beside an invisible word joiner.
    unescaped = re.sub(r"\\(.)", r"\1", escaped.replace(WORD_JOINER, ""))
    assert unescaped == hostile.replace("\x1b", "\\x1b")
    assert plain("run 20260101-000000-abcdef") == "run 20260101\\-000000\\-abcdef"
