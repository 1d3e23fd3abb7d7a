"""The SQLite results history: runs, measurements, crash detection, export and import."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from storage.bench import Measurement, ResultsDB, RunNotFoundError, RunRecord
from storage.bench.events import fill_rates
from storage.bench.results import SCHEMA_VERSION
from storage.errors import CorruptDataError, StorageError

ENVIRONMENT = {"hostname": "elsewhere", "cpu_model": "Test CPU", "filesystem": {"type": "ext4"}, "python": "3.11"}
PARAMETERS = {"backends": ["png", "hdf5"], "counts": [10, 100], "source": "sample", "keep": False}
SOURCE = {"kind": "sample", "description": "the bundled sample"}


def make_measurement(run_id: str, backend: str = "png", count: int = 10, **changes) -> Measurement:
    measurement = Measurement(
        run_id=run_id,
        backend=backend,
        count=count,
        operation="read_all",
        cache="cold",
        samples=[0.5, 0.25, 0.75],
        images=count,
        pixel_bytes=count * 3072,
        apparent_bytes=4000 * count,
        allocated_bytes=4096 * count,
        files=count + 2,
        verified=True,
        evicted=True,
        resident_bytes=0,
        method="read_all(out=)",
    )
    for name, value in changes.items():
        setattr(measurement, name, value)
    return fill_rates(measurement)


def add_run(db: ResultsDB, run_id: str, measurements: int = 2) -> list[Measurement]:
    db.create_run(run_id, PARAMETERS, ENVIRONMENT, SOURCE)
    added = [make_measurement(run_id, count=10 * (i + 1)) for i in range(measurements)]
    for measurement in added:
        db.add_measurement(measurement)
    return added


def test_a_run_and_its_measurements_round_trip(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "results.sqlite") as db:
        added = add_run(db, "20260101-000000-aaaaaa")
        lossy = make_measurement("20260101-000000-aaaaaa", backend="jpeg", psnr=38.5, evicted=None, error=None)
        db.add_measurement(lossy)
        db.finish_run("20260101-000000-aaaaaa", "finished")
        stored = db.measurements("20260101-000000-aaaaaa")
        run = db.get_run("20260101-000000-aaaaaa")
    assert [m.to_dict() for m in stored] == [m.to_dict() for m in [*added, lossy]]
    assert stored[0].seconds_median == 0.5 and stored[0].seconds_iqr == 0.25
    assert stored[0].verified is True and stored[2].evicted is None and stored[2].psnr == 38.5
    assert isinstance(run, RunRecord)
    assert run.status == "finished" and run.finished_at and run.measurement_count == 3
    assert run.backends == ["png", "hdf5"] and run.counts == [10, 100]
    assert run["status"] == "finished" and run.get("source") == SOURCE


def test_the_file_is_in_wal_mode_with_one_row_per_sample(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "results.sqlite"
    with ResultsDB(path) as db:
        add_run(db, "r1", measurements=1)
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = connection.execute("SELECT repeat, seconds FROM samples ORDER BY repeat").fetchall()
        assert rows == [(0, 0.5), (1, 0.25), (2, 0.75)]
        columns = {row[1] for row in connection.execute("PRAGMA table_info(measurements)")}
        assert {"run_id", "backend", "count", "operation", "cache", "seconds_median", "verified"} <= columns
    finally:
        connection.close()


def test_runs_are_listed_newest_first_and_can_be_deleted(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.create_run("20260101-000000-aaaaaa", PARAMETERS, ENVIRONMENT, SOURCE, started_at="2026-01-01T00:00:00Z")
        add_run(db, "20260102-000000-bbbbbb")
        assert [run.id for run in db.list_runs()] == ["20260102-000000-bbbbbb", "20260101-000000-aaaaaa"]
        db.delete_run("20260102-000000-bbbbbb")
        assert [run.id for run in db.list_runs()] == ["20260101-000000-aaaaaa"]
        assert db.measurements("20260102-000000-bbbbbb") == []
        with pytest.raises(RunNotFoundError, match="no run 'nope'"):
            db.delete_run("nope")
        assert db.get_run("nope") is None


def test_a_file_that_is_not_sqlite_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 50)
    with pytest.raises(CorruptDataError, match="is not a results database"):
        ResultsDB(path)
    assert path.read_text().startswith("these are my notes")


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE runs (distance REAL)")
    connection.commit()
    connection.close()
    with pytest.raises(CorruptDataError):
        ResultsDB(path)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a folder"):
        ResultsDB(tmp_path)


def test_a_run_whose_process_is_gone_is_marked_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    with ResultsDB(path) as db:
        add_run(db, "dead-run")
        add_run(db, "live-run")
        connection = sqlite3.connect(path)
        connection.execute("UPDATE runs SET pid = ? WHERE id = 'dead-run'", (int(child.stdout),))
        connection.commit()
        connection.close()
    with ResultsDB(path) as db:
        dead, live = db.get_run("dead-run"), db.get_run("live-run")
        assert dead.status == "interrupted" and "stopped before the run finished" in dead.error
        assert db.get_run("dead-run").measurement_count == 2
        assert live.status == "running"  # this very process still runs it


def test_export_then_import_gives_the_same_measurements(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "a.sqlite") as source:
        first = add_run(source, "20260101-000000-aaaaaa", measurements=3)
        second = add_run(source, "20260102-000000-bbbbbb", measurements=1)
        source.finish_run("20260101-000000-aaaaaa", "finished")
        source.finish_run("20260102-000000-bbbbbb", "failed", "VERIFICATION FAILED: something")
        text = source.export_json(["20260101-000000-aaaaaa", "20260102-000000-bbbbbb"])
    items = json.loads(text)
    assert isinstance(items, list) and len(items) == 4
    assert items[0]["environment"]["cpu_model"] == "Test CPU" and items[0]["run"]["status"] == "finished"
    with ResultsDB(tmp_path / "b.sqlite") as target:
        assert target.import_json(text) == ["20260101-000000-aaaaaa", "20260102-000000-bbbbbb"]
        assert target.import_json(text) == ["20260101-000000-aaaaaa", "20260102-000000-bbbbbb"]  # idempotent
        imported = target.measurements(["20260101-000000-aaaaaa", "20260102-000000-bbbbbb"])
        runs = {run.id: run for run in target.list_runs()}
    assert [m.to_dict() for m in imported] == [m.to_dict() for m in first + second]
    assert runs["20260102-000000-bbbbbb"].status == "failed" and runs["20260102-000000-bbbbbb"].imported
    assert runs["20260101-000000-aaaaaa"].environment == ENVIRONMENT
    assert runs["20260101-000000-aaaaaa"].parameters == PARAMETERS


def test_csv_export_has_one_row_per_measurement(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        add_run(db, "r1", measurements=2)
        text = db.export_csv("r1")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    assert rows[0]["backend"] == "png" and rows[0]["operation"] == "read_all" and rows[0]["cache"] == "cold"
    assert float(rows[0]["seconds_median"]) == 0.5 and json.loads(rows[0]["samples"]) == [0.5, 0.25, 0.75]
    assert rows[0]["cpu_model"] == "Test CPU" and rows[0]["verified"] == "True"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        "[1, 2]",
        '[{"backend": "png"}]',
        '[{"run_id": "x", "backend": "png", "count": "many", '
        '"operation": "read_all", "cache": "warm", "samples": "abc"}]',
    ],
)
def test_importing_something_else_is_refused(tmp_path: Path, text: str) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db, pytest.raises(CorruptDataError):
        db.import_json(text)


def test_exporting_an_unknown_run_names_it(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db, pytest.raises(RunNotFoundError, match="no run 'missing'"):
        db.export_json(["missing"])


def test_one_database_object_is_shared_between_threads(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.create_run("r1", PARAMETERS, ENVIRONMENT, SOURCE)
        errors = []

        def writer() -> None:
            try:
                for index in range(50):
                    db.add_measurement(make_measurement("r1", count=index + 1))
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        thread = threading.Thread(target=writer)
        thread.start()
        while thread.is_alive():
            db.list_runs()
            db.measurements("r1")
        thread.join()
        assert not errors and len(db.measurements("r1")) == 50


def test_a_version_3_file_gains_launched_by_and_reads_its_runs_as_the_dashboards(tmp_path: Path) -> None:
    # Version 3 had run_progress without launched_by: only the dashboard recorded live state then.
    path = tmp_path / "v3.sqlite"
    with ResultsDB(path) as db:
        db.reserve_run("from-dashboard", {}, {}, os.getpid(), estimated_seconds=5.0)
    connection = sqlite3.connect(path)
    connection.execute("ALTER TABLE run_progress DROP COLUMN launched_by")
    connection.execute("PRAGMA user_version = 3")
    connection.commit()
    connection.close()

    with ResultsDB(path) as db:
        progress = db.progress("from-dashboard")
        assert progress is not None and progress.launched_by == "dashboard" and progress.estimated_seconds == 5.0
        db.create_run("from-cli", {}, {}, {})
        db.update_progress("from-cli", step=0, total_steps=1, fraction=0.0, message="a", launched_by="command line")
        db.update_progress("from-cli", step=1, total_steps=1, fraction=1.0, message="b")
        assert db.progress("from-cli").launched_by == "command line"  # kept from the run's first record
        assert db.progress("from-cli").message == "b"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_transaction_commits_its_writes_together_or_rolls_them_all_back(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        add_run(db, "kept", measurements=1)
        with pytest.raises(RuntimeError, match="midway"):
            with db.transaction() as connection:
                connection.execute("DELETE FROM samples")
                connection.execute("DELETE FROM measurements")
                raise RuntimeError("stopped midway")
        assert len(db.measurements("kept")) == 1
        with db.transaction() as connection:
            connection.execute("UPDATE runs SET error = 'noted' WHERE id = 'kept'")
        assert db.get_run("kept").error == "noted"
        db.delete_run("kept")  # the connection is usable again after both
        assert db.list_runs() == []
