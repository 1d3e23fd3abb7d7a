"""The engine's ``loader`` operation, its results in SQLite (and older files migrated), and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

import storage
from storage.bench import Experiment, InvalidExperimentError, PreviewReady, ResultsDB, run_experiment
from storage.bench.experiment import CEILING_BACKEND, steps
from storage.bench.results import SCHEMA_VERSION
from storage.formats.lmdb_store import LmdbStore

REPO_ROOT = Path(__file__).resolve().parents[1]


def loader_experiment(tmp_path: Path, **changes) -> Experiment:
    values = dict(
        backends=["lmdb", "hdf5", "webp-lossy"],
        counts=[300],
        operations=["loader"],
        workers=[0, 2],
        batch_size=64,
        repeats=2,
        source="sample",
        work_dir=str(tmp_path / "runs"),
        preview_ids=0,
    )
    values.update(changes)
    return Experiment(**values)


def test_the_loader_is_measured_per_worker_count_beside_the_ceiling_and_stored(tmp_path: Path) -> None:
    plan = loader_experiment(tmp_path, caches=["warm", "cold"])
    with ResultsDB(tmp_path / "results.sqlite") as db:
        summary = run_experiment(plan, db)
        stored = db.measurements(summary.run_id)
    assert summary.status == "finished", summary.error
    measurements = summary.measurements
    assert [(m.backend, m.count, m.operation, m.cache) for m in measurements] == steps(plan)
    assert [m.to_dict() for m in stored] == [m.to_dict() for m in measurements]
    ceilings = {m.workers: m.images_per_second for m in measurements if m.backend == CEILING_BACKEND}
    assert sorted(ceilings) == [0, 2] and all(rate > 0 for rate in ceilings.values())
    for m in measurements:
        assert m.verified and m.error is None, (m.backend, m.workers, m.cache, m.error)
        assert m.operation == "loader" and m.batch_size == 64 and m.workers in (0, 2)
        assert len(m.samples) == m.repeats == 2 and m.images == 300
        assert 0 < m.first_batch_seconds <= m.seconds_max
        assert 0 < m.batch_p50_seconds <= m.batch_p99_seconds
        if m.backend == CEILING_BACKEND:
            assert m.fraction_of_ceiling is None and m.allocated_bytes is None
            continue
        assert m.ceiling_images_per_second == ceilings[m.workers]
        assert m.fraction_of_ceiling == pytest.approx(m.images_per_second / ceilings[m.workers])
        assert m.allocated_bytes > 0
        assert (m.psnr is not None) == (m.backend == "webp-lossy")
        assert (m.evicted is not None) == (m.cache == "cold")


def test_a_store_corrupted_before_the_loader_runs_fails_verification(tmp_path: Path) -> None:
    plan = loader_experiment(tmp_path, backends=["hdf5"], workers=[2], repeats=1, preview_ids=2)

    def corrupt(event) -> None:
        if isinstance(event, PreviewReady):
            store = Path(plan.work_dir) / event.run_id / "hdf5" / "300" / "store"
            with h5py.File(store / "images.h5", "r+") as file:
                file["images"][17] = 255 - file["images"][17]

    summary = run_experiment(plan, on_event=corrupt)
    assert summary.status == "failed" and summary.error.startswith("VERIFICATION FAILED")
    ceiling, loader = summary.measurements
    assert ceiling.verified
    assert not loader.verified and "image 17 differs" in loader.error and loader.seconds_median is not None


def test_the_engine_asks_the_format_for_its_dataset(tmp_path: Path) -> None:
    class HookedLmdbStore(LmdbStore):
        info = dataclasses.replace(storage.backend_info("lmdb"), name="lmdb-hooked")

        @classmethod
        def torch_dataset(cls, path, transform=None):
            raise RuntimeError(f"lmdb-hooked was asked for its dataset at {path}")

    storage.register_backend(HookedLmdbStore)
    try:
        summary = run_experiment(loader_experiment(tmp_path, backends=["lmdb-hooked"], workers=[0], repeats=1))
    finally:
        storage.unregister_backend("lmdb-hooked")
    ceiling, hooked = summary.measurements
    assert ceiling.verified and "lmdb-hooked was asked for its dataset" in hooked.error


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"workers": [0, -1]}, "worker count -1 is not a whole number of 0 or more"),
        ({"workers": []}, "choose at least one DataLoader worker count"),
        ({"batch_size": 0}, "batch size 0 is not a positive integer"),
    ],
)
def test_bad_loader_settings_are_refused_before_anything_runs(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(InvalidExperimentError, match=message):
        run_experiment(loader_experiment(tmp_path, **changes))
    assert not (tmp_path / "runs").exists()


def test_the_estimate_counts_the_loader_steps(tmp_path: Path) -> None:
    from storage.bench import estimate_experiment

    with_loader = estimate_experiment(loader_experiment(tmp_path, operations=["read_all", "loader"]))
    without = estimate_experiment(loader_experiment(tmp_path, operations=["read_all"]))
    assert len(with_loader.step_seconds) == len(without.step_seconds) + 2 + 3 * 2  # ceilings + formats x workers
    assert with_loader.seconds > without.seconds


# -- the results database ---------------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
    parameters TEXT NOT NULL, environment TEXT NOT NULL, source TEXT NOT NULL, error TEXT, pid INTEGER,
    hostname TEXT, process_started REAL, imported INTEGER NOT NULL DEFAULT 0);
CREATE TABLE measurements (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(id)
    ON DELETE CASCADE, backend TEXT NOT NULL, count INTEGER NOT NULL, operation TEXT NOT NULL, cache TEXT NOT NULL,
    repeats INTEGER NOT NULL, seconds_median REAL, seconds_min REAL, seconds_max REAL, seconds_iqr REAL,
    seconds_per_image REAL, images_per_second REAL, mb_per_second REAL, apparent_bytes INTEGER,
    allocated_bytes INTEGER, files INTEGER, bytes_per_image REAL, verified INTEGER NOT NULL, psnr REAL,
    evicted INTEGER, error TEXT, details TEXT NOT NULL);
CREATE TABLE samples (measurement_id INTEGER NOT NULL REFERENCES measurements(id) ON DELETE CASCADE,
    repeat INTEGER NOT NULL, seconds REAL NOT NULL, PRIMARY KEY (measurement_id, repeat));
PRAGMA user_version = 1;
"""


def test_a_results_file_from_before_the_loader_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    connection.executescript(OLD_SCHEMA)
    connection.execute(
        "INSERT INTO runs VALUES ('old-run', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z', 'finished',"
        " '{}', '{}', '{}', NULL, NULL, 'elsewhere', NULL, 1)"
    )
    connection.execute(
        "INSERT INTO measurements (run_id, backend, count, operation, cache, repeats, seconds_median, verified,"
        " details) VALUES ('old-run', 'lmdb', 10, 'read_all', 'warm', 1, 0.5, 1, ?)",
        (json.dumps({"samples": [0.5], "images": 10}),),
    )
    connection.commit()
    connection.close()

    with ResultsDB(path) as db:
        (old,) = db.measurements("old-run")
        assert old.backend == "lmdb" and old.seconds_median == 0.5 and old.samples == [0.5]
        assert old.workers is None and old.fraction_of_ceiling is None
        summary = run_experiment(loader_experiment(tmp_path, backends=["lmdb"], workers=[0], repeats=1), db)
        new = db.measurements(summary.run_id)[-1]
    assert new.workers == 0 and new.batch_size == 64 and new.fraction_of_ceiling > 0
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(measurements)")}
    assert {"workers", "batch_size", "first_batch_seconds", "fraction_of_ceiling"} <= columns
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# -- the command line ---------------------------------------------------------------------------


def storage_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storage", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_bench_ops_loader_prints_rates_beside_the_ceiling_and_exports_them(tmp_path: Path) -> None:
    result = storage_cli(
        "bench", "--ops", "loader", "--workers", "0,2", "--batch-size", "100", "--backends", "lmdb,npy",
        "--counts", "400", "--repeats", "1", "--source", "sample", "--no-progress",
        "--db", str(tmp_path / "r.sqlite"), "--work-dir", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "x ceiling" in lines[0] and "first batch" in lines[0] and "batch p99" in lines[0]
    rows = [line.split() for line in lines[2:] if line.startswith(("in-memory", "lmdb", "npy"))]
    assert [(row[0], row[2], row[3]) for row in rows] == [  # each worker count's loaders measured together
        (backend, workers, "100") for workers in ("0", "2") for backend in ("in-memory", "lmdb", "npy")
    ]
    formats = [row for row in rows if row[0] != "in-memory"]
    assert all(row[-1] == "ok" for row in rows) and all(row[6].endswith("%") for row in formats)
    exported = json.loads((tmp_path / "r.json").read_text())
    assert {item["workers"] for item in exported} == {0, 2} and all(item["batch_size"] == 100 for item in exported)
    assert all(item["fraction_of_ceiling"] > 0 for item in exported if item["backend"] != "in-memory")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "batch size '0' is not a positive whole number"),
        (["--workers", "0,-2"], "worker count '-2' is not a whole number of 0 or more"),
        (["--ops", "loader,train"], "unknown operation 'train'"),
    ],
)
def test_bad_loader_arguments_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = storage_cli("bench", "--ops", "loader", "--db", str(tmp_path / "r.sqlite"), *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_missing_store_is_named(tmp_path: Path) -> None:
    from storage.torch import StoreDataset, store_dataset

    with pytest.raises(storage.StoreNotFoundError, match=str(tmp_path / "gone")):
        store_dataset("hdf5", tmp_path / "gone")
    with pytest.raises(storage.StoreNotFoundError):
        StoreDataset("png", tmp_path / "gone")
