"""The training loader in the dashboard: its controls and link, its chart, Results and exports."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from test_app_pages import column_widths  # noqa: E402

from dashboard import charts, runner, state, views  # noqa: E402
from storage.bench import Experiment, ResultsDB, run_experiment  # noqa: E402

RUN, RESULTS = "pages/1_Run.py", "pages/2_Results.py"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_STORAGE_LAB_DB", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("IMAGE_STORAGE_LAB_RUNS", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture(scope="module")
def loader_run(tmp_path_factory) -> tuple[Path, str, list]:
    """A real run of the loader (lmdb, hdf5, 0 and 2 workers) and of read_all, in its own database."""
    folder = tmp_path_factory.mktemp("loader-run")
    experiment = Experiment(
        backends=["lmdb", "hdf5"],
        counts=[200],
        operations=["read_all", "loader"],
        workers=[0, 2],
        batch_size=50,
        repeats=1,
        source="sample",
        work_dir=str(folder / "runs"),
    )
    with ResultsDB(folder / "results.sqlite") as db:
        summary = run_experiment(experiment, db)
    assert summary.status == "finished", summary.error
    return folder / "results.sqlite", summary.run_id, summary.measurements


def page(script: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / script), default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def test_the_link_carries_workers_and_batch_size_and_bad_ones_are_noted():
    controls, notes = state.parse_run_params(
        {"formats": "lmdb", "ops": "read_all,loader", "workers": "4,0,3,x", "batch_size": "128"}, ["lmdb"]
    )
    assert controls.operations == ["read_all", "loader"]
    assert controls.workers == [0, 4] and controls.batch_size == 128
    assert any("3, x were ignored" in note for note in notes)
    params = state.run_params(controls)
    assert params["workers"] == "0,4" and params["batch_size"] == "128"
    assert state.parse_run_params(params, ["lmdb"])[0] == controls
    experiment = state.to_experiment(controls, "runs")
    assert experiment.workers == [0, 4] and experiment.batch_size == 128
    without_loader, _ = state.parse_run_params({"ops": "read_all"}, ["lmdb"])
    assert "workers" not in state.run_params(without_loader)
    _, bad = state.parse_run_params({"batch_size": "0"}, ["lmdb"])
    assert any("batch_size" in note for note in bad)


def test_the_loader_chart_shows_each_format_against_workers_with_the_ceiling(loader_run):
    _, _, measurements = loader_run
    frame = charts.measurements_frame(measurements)
    spec = json.dumps(charts.chart_spec(charts.loader_chart(frame)))
    assert "Training loader" in spec and "DataLoader workers" in spec and "strokeDash" in spec
    assert "LMDB" in spec and "HDF5" in spec and charts.CEILING_LABEL in spec
    for name in ("fraction_of_ceiling", "batch_p99_seconds", "first_batch_seconds"):
        assert name in spec
    time_spec = json.dumps(charts.chart_spec(charts.time_chart(frame)))
    assert "training loader" not in time_spec and "read all" in time_spec  # per-count charts leave it out
    table = charts.table_frame(frame)
    loader_rows = table[table["Operation"] == "training loader"]
    assert sorted(loader_rows["Workers"]) == ["0", "0", "0", "2", "2", "2"]
    shares = loader_rows[loader_rows["Format"] != charts.CEILING_LABEL]["Share of ceiling"]
    assert all(share.endswith("%") for share in shares)
    assert charts.loader_chart(charts.measurements_frame([m for m in measurements if m.operation != "loader"])) is None


def test_run_page_offers_the_training_loader_with_workers_and_batch_size():
    at = page(RUN, formats="lmdb", max_count="100", ops="loader", workers="0,2", batch_size="32", source="sample")
    assert not at.exception, [e.value for e in at.exception]
    operations = at.multiselect(key="run_operations")
    assert "training loader" in operations.options and operations.value == ["loader"]
    workers = at.multiselect(key="run_workers")
    assert workers.label == "DataLoader workers" and workers.value == [0, 2] and not workers.disabled
    batch = at.number_input(key="run_batch_size")
    assert batch.label == "Batch size" and batch.value == 32 and not batch.disabled
    at.multiselect(key="run_operations").set_value(["read_all"]).run()
    assert at.multiselect(key="run_workers").disabled and at.number_input(key="run_batch_size").disabled
    assert "workers" not in at.query_params


def test_a_loader_run_from_the_run_page_draws_its_chart():
    at = page(RUN, formats="lmdb", max_count="100", ops="loader", workers="0,2", batch_size="25", source="sample")
    next(b for b in at.button if b.label == "Run benchmark").click().run()
    run_id = at.query_params["run"]
    with ResultsDB(Path(os.environ["IMAGE_STORAGE_LAB_DB"])) as db:
        snapshot = runner.wait_for_run(db, run_id, timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert snapshot.status == "finished", snapshot.error
    assert {(m.backend, m.workers, m.batch_size) for m in snapshot.measurements if m.count == 100} == {
        (backend, workers, 25) for backend in ("in-memory", "lmdb") for workers in (0, 2)
    }
    specs = [element.proto.spec for element in at.get("vega_lite_chart")]
    assert any("Training loader" in spec and "LMDB" in spec for spec in specs)


def test_results_shows_and_exports_the_loader(loader_run, isolated, monkeypatch):
    db_path, run_id, measurements = loader_run
    monkeypatch.setenv("IMAGE_STORAGE_LAB_DB", str(db_path))
    at = page(RESULTS, runs=run_id)
    assert not at.exception, [e.value for e in at.exception]
    specs = [element.proto.spec for element in at.get("vega_lite_chart")]
    assert any("Training loader" in spec for spec in specs)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "training-loader.png" in labels and "training-loader.svg" in labels
    timings, loader = at.dataframe[0], at.dataframe[1]  # the loader's rows in a table of their own
    assert set(timings.value["Operation"]) == {"read all"}
    assert not {"Workers", "Share of ceiling"} & set(timings.value.columns)
    assert {"Workers", "Share of ceiling"} <= set(loader.value.columns) and "Operation" not in loader.value.columns
    assert len(loader.value) == len([m for m in measurements if m.operation == "loader"])
    for table in (timings, loader):  # each fits a 1,280-pixel window
        widths = column_widths(table)
        assert sum(widths.values()) <= views.ONE_RUN_TABLE_WIDTH, widths
    with ResultsDB(db_path) as db:
        exported = db.export_csv([run_id])
    header = exported.splitlines()[0].split(",")
    assert {"workers", "batch_size", "fraction_of_ceiling", "batch_p50_seconds"} <= set(header)
