"""Named runs: a name given on the command line is kept in the database, in exports and through an import."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from dashboard import runner
from storage.bench import ResultsDB
from storage.bench.results.history import InvalidRunNameError
from storage.cli import main


@pytest.fixture(scope="module")
def named_run(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("named")
    db = folder / "results.sqlite"
    argv = ["bench", "--db", str(db), "--work-dir", str(folder / "runs"), "--backends", "lmdb", "--counts", "3"]
    argv += ["--ops", "write_batch", "--repeats", "1", "--source", "sample", "--no-progress"]
    assert main([*argv, "--name", "  lmdb   after the fix "]) == 0
    with ResultsDB(db) as results:
        (run,) = results.list_runs()
    return db, run.id


def test_bench_name_is_kept_with_the_run_and_shown_with_its_id(named_run) -> None:
    db, run_id = named_run
    with ResultsDB(db) as results:
        record = results.get_run(run_id)
    assert record.name == "lmdb after the fix"  # spaces folded, as typed otherwise
    assert runner.run_title(record) == f"{run_id} “lmdb after the fix”"


def test_the_name_travels_in_exports_and_through_an_import(named_run, tmp_path: Path) -> None:
    db, run_id = named_run
    with ResultsDB(db) as results:
        exported = results.export_json([run_id])
        rows = list(csv.DictReader(io.StringIO(results.export_csv([run_id]))))
    assert rows and all(row["run_name"] == "lmdb after the fix" for row in rows)
    with ResultsDB(tmp_path / "other.sqlite") as other:
        (imported,) = other.import_json(exported)
        assert other.get_run(imported).name == "lmdb after the fix"
        other.name_run(imported, "   ")  # blank: no name
        assert other.get_run(imported).name is None


def test_a_name_too_long_is_refused_naming_the_limit(named_run) -> None:
    db, run_id = named_run
    with ResultsDB(db) as results, pytest.raises(InvalidRunNameError, match="at most 100 characters"):
        results.name_run(run_id, "x" * 101)
