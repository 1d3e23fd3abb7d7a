"""``python -m storage`` end to end, in real subprocesses."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage import open_store, registry
from storage.bench import ResultsDB
from storage.bench.engine import remove_leftover_folders

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "data" / "cifar-10-sample" / "cifar-10-batches-py"
REQUIRED_JSON_FIELDS = {
    "backend",
    "count",
    "operation",
    "cache",
    "seconds_median",
    "seconds_min",
    "seconds_max",
    "repeats",
    "apparent_bytes",
    "allocated_bytes",
    "files",
    "verified",
    "environment",
}


def storage_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storage", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, str]:
    return {"db": str(tmp_path / "results.sqlite"), "work": str(tmp_path / "runs"), "tmp": str(tmp_path)}


def bench(paths: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return storage_cli("bench", "--db", paths["db"], "--work-dir", paths["work"], "--source", "sample", *args)


def test_bench_prints_a_table_records_the_run_and_writes_json_and_csv(paths: dict[str, str]) -> None:
    json_path, csv_path = Path(paths["tmp"], "out.json"), Path(paths["tmp"], "out", "out.csv")
    result = bench(
        paths,
        *("--backends", "png,lmdb,hdf5", "--counts", "5,20", "--repeats", "2", "--cold"),
        *("--json", str(json_path), "--csv", str(csv_path)),
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "median" in result.stdout and "images/s" in result.stdout and "MB/s" in result.stdout
    run_id = result.stdout.split("\nrun ", 1)[1].split(":", 1)[0]
    assert run_id in result.stdout and ": finished" in result.stdout

    measurements = json.loads(json_path.read_text())
    assert len(measurements) == 3 * 2 * (2 + 3 * 2)  # backends x counts x (writes + reads x caches)
    for item in measurements:
        assert REQUIRED_JSON_FIELDS <= set(item), REQUIRED_JSON_FIELDS - set(item)
        assert item["run_id"] == run_id and item["verified"] is True and item["repeats"] == 2
        assert item["environment"]["cpu_model"] and item["environment"]["filesystem"]["type"]
    assert {item["cache"] for item in measurements} == {"warm", "cold"}

    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert len(rows) == len(measurements) and rows[0]["backend"] == "png"

    with ResultsDB(paths["db"]) as db:
        assert db.get_run(run_id).status == "finished"
    assert not [p for p in Path(paths["work"]).rglob("*") if p.is_file()]  # the stores were removed


def test_runs_export_and_import_round_trip(paths: dict[str, str]) -> None:
    assert bench(paths, "--backends", "hdf5", "--counts", "5", "--repeats", "1").returncode == 0
    assert bench(paths, "--backends", "lmdb", "--counts", "5", "--repeats", "1", "--ops", "read_all").returncode == 0
    listing = storage_cli("runs", "--db", paths["db"])
    assert listing.returncode == 0
    run_ids = [line.split()[0] for line in listing.stdout.splitlines()[2:]]
    assert len(run_ids) == 2 and "finished" in listing.stdout and "hdf5" in listing.stdout

    exported = storage_cli("export", *run_ids, "--format", "json", "--db", paths["db"])
    assert exported.returncode == 0
    as_csv = storage_cli("export", run_ids[0], "--format", "csv", "--db", paths["db"])
    assert as_csv.returncode == 0 and as_csv.stdout.startswith("run_id,backend,count,operation,cache")
    export_file = Path(paths["tmp"], "export.json")
    written = storage_cli("export", *run_ids, "--db", paths["db"], "--output", str(export_file))
    assert written.returncode == 0 and json.loads(export_file.read_text()) == json.loads(exported.stdout)

    other_db = str(Path(paths["tmp"], "other.sqlite"))
    imported = storage_cli("import", str(export_file), "--db", other_db)
    assert imported.returncode == 0, imported.stderr
    assert sorted(imported.stdout.split()) == sorted(run_ids)
    with ResultsDB(paths["db"]) as original, ResultsDB(other_db) as copy:
        assert [m.to_dict() for m in copy.measurements(run_ids)] == [
            m.to_dict() for m in original.measurements(run_ids)
        ]
    assert storage_cli("runs", "--db", other_db).stdout.count("(imported)") == 2
    again = storage_cli("import", str(export_file), "--db", other_db)
    assert again.returncode == 0 and "imported 0 run(s)" in again.stderr and "2 already there" in again.stderr


def test_convert_writes_a_store_with_the_library(tmp_path: Path) -> None:
    dest = tmp_path / "converted"
    result = storage_cli("convert", "sample", "--to", "hdf5", str(dest), "--limit", "300")
    assert result.returncode == 0, result.stderr
    assert (
        "wrote 300 images" in result.stdout and "MB allocated" in result.stdout and "match the source" in result.stdout
    )
    with open_store("hdf5", dest) as store:
        assert len(store) == 300
        assert store.class_names[:3] == ["airplane", "automobile", "bird"] and len(store.class_names) == 10

    full = storage_cli(
        "convert", str(SAMPLE), "--to", "lmdb", str(tmp_path / "all"), "--limit", "100000", "--no-progress"
    )
    assert full.returncode == 0, full.stderr
    assert "%|" in result.stderr and "%|" not in full.stderr  # the progress bar, and --no-progress without it
    assert "--limit 100,000: the source has 5,085 images; converting all of them" in full.stderr
    with open_store("lmdb", tmp_path / "all") as store:
        assert len(store) == 5085


def save_image(path: Path, shape: tuple[int, ...], value: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def test_convert_refuses_images_the_backend_cannot_store_before_writing_anything(tmp_path: Path) -> None:
    rgba, mixed = tmp_path / "rgba", tmp_path / "mixed"
    save_image(rgba / "a" / "x.png", (4, 4, 4))
    save_image(mixed / "a" / "x.png", (4, 4, 3))
    save_image(mixed / "a" / "y.png", (5, 6, 3))
    dest = tmp_path / "out"
    _assert_one_line_error(storage_cli("convert", str(rgba), "--to", "jpeg", str(dest)), "4 channel(s)", "jpeg")
    assert not dest.exists()
    _assert_one_line_error(storage_cli("convert", str(mixed), "--to", "zarr", str(dest)), "2 shapes", "zarr")
    assert not dest.exists()

    assert storage_cli("convert", "sample", "--to", "jpeg", str(dest), "--limit", "5").returncode == 0
    _assert_one_line_error(storage_cli("convert", str(rgba), "--to", "jpeg", str(dest)), "4 channel(s)")
    with open_store("jpeg", dest) as store:
        assert len(store) == 5  # the store already there is left alone


def test_a_failed_convert_removes_the_store_it_created_and_only_that(tmp_path: Path) -> None:
    if not registry.backend_info("webp").available:
        pytest.skip("the webp backend is unavailable here")
    too_wide = tmp_path / "wide"
    save_image(too_wide / "a" / "x.png", (1, 16_384, 3))  # WebP's limit is 16,383 pixels a side
    dest = tmp_path / "new" / "store"
    result = storage_cli("convert", str(too_wide), "--to", "webp", str(dest))
    assert result.returncode != 0
    assert not dest.exists() and (tmp_path / "new").is_dir()

    existing = tmp_path / "existing"
    assert storage_cli("convert", "sample", "--to", "webp", str(existing), "--limit", "3").returncode == 0
    assert storage_cli("convert", str(too_wide), "--to", "webp", str(existing)).returncode != 0
    assert (existing / "store.json").is_file()  # a folder that was there before is not removed


def test_skip_bad_lets_bench_and_convert_pass_a_bad_file(paths: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    save_image(folder / "a" / "good.png", (8, 8, 3))
    empty = folder / "a" / "empty.png"
    empty.write_bytes(b"")
    dest = tmp_path / "out"

    stopped = storage_cli("convert", str(folder), "--to", "png", str(dest))
    _assert_one_line_error(stopped, f"{empty} is empty (0 bytes)", "or pass --skip-bad to skip such files")
    assert not dest.exists()
    benched = storage_cli("bench", "--source", str(folder), "--db", paths["db"], "--work-dir", paths["work"])
    errors = [line for line in benched.stderr.splitlines() if line.startswith("error: ")]
    assert benched.returncode == 1 and len(errors) == 1 and "--skip-bad" in errors[0]

    converted = storage_cli("convert", str(folder), "--to", "png", str(dest), "--skip-bad")
    assert converted.returncode == 0, converted.stderr
    assert f"warning: skipping {empty}: it is empty (0 bytes)\n" in converted.stderr
    with open_store("png", dest) as store:
        assert len(store) == 1
    skipped = bench(
        paths, "--source", str(folder), "--skip-bad", "--counts", "2", "--repeats", "1", "--backends", "lmdb"
    )
    assert skipped.returncode == 0, skipped.stderr
    assert "1 images" in skipped.stdout and f"skipping {empty}: it is empty" in skipped.stderr


def test_skip_bad_is_ignored_for_cifar10_and_refused_where_tasks_read_the_files(tmp_path: Path) -> None:
    cifar = storage_cli("convert", "sample", "--to", "lmdb", str(tmp_path / "s"), "--limit", "5", "--skip-bad")
    assert cifar.returncode == 0, cifar.stderr
    sharded = storage_cli("convert", "sample", "--to", "lmdb", str(tmp_path / "d"), "--shards", "2", "--skip-bad")
    _assert_one_line_error(sharded, "--skip-bad", "--shards")
    assert sharded.returncode == 2 and not (tmp_path / "d").exists()
    distributed = storage_cli("bench", "--distributed", "--skip-bad", "--db", str(tmp_path / "r.sqlite"))
    _assert_one_line_error(distributed, "--skip-bad", "--distributed")
    assert distributed.returncode == 2


def test_bench_keep_says_where_the_stores_are(paths: dict[str, str]) -> None:
    kept = bench(paths, "--backends", "lmdb", "--counts", "5", "--repeats", "1", "--keep")
    assert kept.returncode == 0, kept.stderr
    run_id = kept.stdout.split("\nrun ", 1)[1].split(":", 1)[0]
    run_dir = Path(paths["work"]) / run_id
    assert f"kept the stores under {run_dir}/ (each at <backend>/<count>/store" in kept.stdout
    with open_store("lmdb", run_dir / "lmdb" / "5" / "store") as store:
        assert len(store) == 5
    assert (run_dir / "lmdb" / "5" / "write_one").is_dir()
    not_kept = bench(paths, "--backends", "lmdb", "--counts", "5", "--repeats", "1")
    assert not_kept.returncode == 0 and "kept the stores" not in not_kept.stdout
    assert "<work-dir>/<run-id>/" in storage_cli("bench", "--help").stdout


def test_download_cifar10_refuses_and_keeps_an_archive_with_the_wrong_md5(tmp_path: Path) -> None:
    placed = tmp_path / "cifar-10-python.tar.gz"
    placed.write_bytes(b"not the real archive")
    result = storage_cli("download-cifar10", "--root", str(tmp_path))
    _assert_one_line_error(result, f"the archive at {placed} has md5 ", "replace it with the real")
    assert placed.read_bytes() == b"not the real archive"


def test_download_cifar10_finds_a_complete_copy_without_the_network(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "batches.meta"):
        shutil.copy(SAMPLE / name, folder / name)
    shutil.copy(SAMPLE / "data_batch_1", folder / "test_batch")
    result = storage_cli("download-cifar10", "--root", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert str(folder) in result.stdout


def _assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0]


def test_an_unknown_backend_lists_the_valid_ones(paths: dict[str, str]) -> None:
    result = bench(paths, "--backends", "png,floppy", "--counts", "5")
    _assert_one_line_error(result, "floppy", "png, lmdb, hdf5")
    assert result.returncode == 2
    _assert_one_line_error(storage_cli("convert", "sample", "--to", "floppy", paths["tmp"] + "/x"), "png, lmdb")


@pytest.mark.parametrize("counts", ["0", "-5", "ten", "10,1.5"])
def test_counts_must_be_positive_integers(paths: dict[str, str], counts: str) -> None:
    result = bench(paths, "--counts", counts)
    _assert_one_line_error(result, "--counts")
    assert result.returncode == 2


def test_an_unknown_operation_is_refused(paths: dict[str, str]) -> None:
    _assert_one_line_error(bench(paths, "--ops", "write_batch,read_everything"), "read_everything", "read_random")


def test_a_missing_source_folder_is_refused(paths: dict[str, str]) -> None:
    missing = str(Path(paths["tmp"], "no-such-folder"))
    _assert_one_line_error(storage_cli("bench", "--source", missing, "--db", paths["db"]), "no-such-folder")
    _assert_one_line_error(storage_cli("convert", missing, "--to", "png", paths["tmp"] + "/x"), "no-such-folder")


def test_a_folder_that_is_not_a_data_set_is_refused(paths: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = storage_cli(
        "bench", "--source", str(tmp_path / "empty"), "--db", paths["db"], "--counts", "5", "--work-dir", paths["work"]
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr


def test_a_database_that_is_not_sqlite_is_refused(paths: dict[str, str]) -> None:
    not_sqlite = Path(paths["tmp"], "notes.txt")
    not_sqlite.write_text("shopping list\n" * 100)
    for command in (["runs"], ["bench", "--counts", "5", "--source", "sample"], ["export", "x"]):
        result = storage_cli(*command, "--db", str(not_sqlite))
        _assert_one_line_error(result, "not a results database")
        assert result.returncode == 1
    assert not_sqlite.read_text().startswith("shopping list")


def test_exporting_an_unknown_run_and_importing_a_missing_file(paths: dict[str, str]) -> None:
    _assert_one_line_error(storage_cli("export", "20990101-000000-000000", "--db", paths["db"]), "no results database")
    listing = storage_cli("runs", "--db", paths["db"])
    assert listing.returncode == 0 and "no results database" in listing.stdout
    _assert_one_line_error(storage_cli("import", paths["tmp"] + "/nothing.json", "--db", paths["db"]), "no file")
    bad = Path(paths["tmp"], "bad.json")
    bad.write_text('{"hello": 1}')
    _assert_one_line_error(storage_cli("import", str(bad), "--db", paths["db"]), "not a list of measurements")
    assert list(Path(paths["tmp"]).iterdir()) == [bad]  # no database made by any of them
    ResultsDB(paths["db"]).close()
    _assert_one_line_error(storage_cli("export", "20990101-000000-000000", "--db", paths["db"]), "no run")


def test_a_run_killed_midway_is_marked_interrupted_and_keeps_its_measurements(paths: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "storage", "bench", "--db", paths["db"], "--work-dir", paths["work"]]
        + ["--source", "sample", "--backends", "hdf5,png", "--counts", "3000", "--repeats", "3"]
        + ["--ops", "write_batch,write_one", "--no-progress"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        recorded = 0
        while time.monotonic() < deadline and process.poll() is None:
            if Path(paths["db"]).exists():
                try:
                    connection = sqlite3.connect(f"file:{paths['db']}?mode=ro", uri=True, timeout=5)
                    recorded = connection.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
                    connection.close()
                except sqlite3.Error:
                    recorded = 0
            if recorded:
                break
            time.sleep(0.05)
        assert recorded >= 1 and process.poll() is None, "the run did not record a measurement while running"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    with ResultsDB(paths["db"]) as db:
        (run,) = db.list_runs()
        assert run.status == "interrupted"
        assert run.measurement_count >= 1
        (first, *_) = db.measurements(run.id)
        assert first.backend == "hdf5" and first.operation == "write_batch" and first.verified
        assert (Path(paths["work"]) / run.id).exists()  # SIGKILL left its folder behind...
        assert remove_leftover_folders(paths["work"], db) == [run.id]  # ...which the next run removes
    assert not (Path(paths["work"]) / run.id).exists()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_cleans_up_and_marks_the_run_interrupted(paths: dict[str, str], signal_number: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "storage", "bench", "--db", paths["db"], "--work-dir", paths["work"]]
        + ["--source", "sample", "--backends", "png", "--counts", "30000", "--repeats", "3", "--ops", "write_one"]
        + ["--no-progress"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(Path(paths["work"]).glob("*/png")):
        time.sleep(0.05)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "Traceback" not in stderr
    with ResultsDB(paths["db"]) as db:
        (run,) = db.list_runs()
    assert run.status == "interrupted"
    assert f"run {run.id} interrupted: 0 measurement(s) kept" in stderr and "its stores deleted" in stderr
    assert not [p for p in Path(paths["work"]).rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "blocked, message",
    [("--work-dir", "--work-dir {path}: Not a directory; give a folder"), ("--db", "--db {path}: ")],
)
def test_a_folder_that_cannot_be_made_is_a_usage_error_naming_the_option(
    tmp_path: Path, blocked: str, message: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    places = {"--db": str(tmp_path / "r.sqlite"), "--work-dir": str(tmp_path / "runs")}
    places[blocked] = str(blocker / "inside")
    result = storage_cli(
        "bench", "--db", places["--db"], "--work-dir", places["--work-dir"], "--backends", "lmdb",
        "--counts", "10", "--source", "sample",
    )  # fmt: skip
    assert result.returncode == 2
    assert message.format(path=places[blocked]) in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [blocker]  # nothing created


def test_the_default_database_and_run_folder_are_the_projects_wherever_the_command_runs(tmp_path, monkeypatch):
    """Run from another folder, the CLI writes where the dashboard reads (README: they share one database),
    and follows IMAGE_STORAGE_LAB_DB / IMAGE_STORAGE_LAB_RUNS like the dashboard; it makes no ./data."""
    from storage.bench import places
    from storage.cli import build_parser

    monkeypatch.delenv(places.DB_ENV, raising=False)
    monkeypatch.delenv(places.RUNS_ENV, raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    parser = build_parser()
    assert parser.parse_args(["runs"]).db == str(REPO_ROOT / "data" / "results.sqlite")
    assert parser.parse_args(["bench"]).work_dir == str(REPO_ROOT / "data" / "runs")
    monkeypatch.setenv(places.DB_ENV, str(tmp_path / "shared.sqlite"))
    monkeypatch.setenv(places.RUNS_ENV, str(tmp_path / "runs"))
    ran = subprocess.run(
        [sys.executable, "-m", "storage", "bench", "--backends", "npy", "--counts", "5", "--ops", "write_batch",
         "--repeats", "1", "--source", "sample", "--no-progress"],
        capture_output=True, text=True, timeout=120, cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    with ResultsDB(tmp_path / "shared.sqlite") as db:
        assert len(db.list_runs()) == 1
    assert not (elsewhere / "data").exists()
