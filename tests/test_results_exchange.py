"""Results files carried between machines: one schema for exports and imports, hostile files refused or shown as text.

A real run (LMDB, 10 bundled CIFAR-10 images) is exported once; each test changes a copy
of that export the way a broken or hostile file would, and imports it into a real SQLite
file, through the library and through ``python -m storage import`` in a subprocess.
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage.bench import Experiment, Measurement, ResultsDB, run_experiment
from storage.bench.results import InvalidResultsError, printable
from storage.bench.results.schema import MEASUREMENT_FIELDS, PARAMETER_FIELDS, check_rows

ROOT = Path(__file__).resolve().parents[1]
ANSI_RED = "\x1b[31m"
HOSTILE_TEXT = "[click](http://evil.example/x) ![p](http://evil.example/pixel.png) \x1b[2J\x1b[31mred\x07"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> list[dict]:
    """The JSON export of one real run, as a list of rows."""
    folder = tmp_path_factory.mktemp("exported")
    experiment = Experiment(
        backends=["lmdb"], counts=[10], operations=["write_batch", "read_all"], repeats=1,
        source="sample", work_dir=str(folder / "runs"),
    )  # fmt: skip
    with ResultsDB(folder / "results.sqlite") as db:
        run_id = run_experiment(experiment, db).run_id
        return json.loads(db.export_json([run_id]))


@pytest.fixture
def rows(exported) -> list[dict]:
    return copy.deepcopy(exported)


def storage_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storage", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_the_schema_names_every_measurement_field_and_a_real_export_follows_it(exported, tmp_path):
    assert set(MEASUREMENT_FIELDS) == set(Measurement.column_names())
    assert set(PARAMETER_FIELDS) <= set(Experiment.__dataclass_fields__)
    assert check_rows(copy.deepcopy(exported)) == exported
    with ResultsDB(tmp_path / "other.sqlite") as db:
        (run_id,) = db.import_json(json.dumps(exported))
        assert db.run_problem(run_id) is None
        assert json.loads(db.export_json([run_id]))[0]["count"] == 10  # and it exports again


def _set(path: str, value):
    """A change to one field of the first row (``run.status``: a field of its run)."""

    def change(rows: list[dict]) -> None:
        target = rows[0]
        *parents, name = path.split(".")
        for parent in parents:
            target = target[parent]
        target[name] = value

    return change


HOSTILE = {
    "a count that is text": (_set("count", "many"), "field 'count' is 'many', not a whole number of 1 or more"),
    "a negative count": (_set("count", -3), "field 'count' is -3"),
    "true as a count": (_set("count", True), "field 'count' is True"),
    "a fractional byte count": (_set("allocated_bytes", 10.5), "field 'allocated_bytes' is 10.5"),
    "negative seconds": (_set("seconds_median", -1.0), "field 'seconds_median' is -1.0"),
    "an infinite rate": (_set("images_per_second", float("inf")), "field 'images_per_second' is inf"),
    "samples that are text": (_set("samples", ["0.1"]), "field 'samples' item 0 is '0.1'"),
    "verified as text": (_set("verified", "yes"), "field 'verified' is 'yes', not true or false"),
    "an unknown backend": (_set("backend", "floppy"), "field 'backend' is 'floppy', not a known backend"),
    "an unknown operation": (_set("operation", "rm -rf"), "field 'operation' is 'rm -rf', not a known operation"),
    "an unknown cache": (_set("cache", "lukewarm"), "field 'cache' is 'lukewarm'"),
    "a bad encoding": (_set("encoding", "gif:3"), "field 'encoding' is 'gif:3'"),
    "ANSI in a run id": (_set("run_id", ANSI_RED + "run"), r"field 'run_id' is '\x1b[31mrun', not a run id"),
    "a Markdown link as a run id": (_set("run_id", "[x](http://evil.example)"), "not a run id"),
    "a run of another id": (_set("run.id", "20990101-000000-aaaaaa"), "but its field 'run' is about run"),
    "an unknown status": (_set("run.status", "hacked"), "field 'run' field 'status' is 'hacked'"),
    "a bad start time": (_set("run.started_at", "yesterday"), "field 'started_at' is 'yesterday'"),
    "parameters that are a list": (_set("run.parameters", [1, 2]), "field 'parameters' is [1, 2], not an object"),
    "counts that are text": (_set("run.parameters.counts", "10,20"), "field 'counts' is '10,20', not a list"),
    "class names that are numbers": (_set("run.source.class_names", [1]), "field 'class_names' item 0 is 1"),
    "a deeply nested environment": (_set("environment.extra", [[[[[[[[[["deep"]]]]]]]]]]), "nested more than 8"),
    "a huge text": (_set("error", "x" * 30_000), "field 'error' is 30,000 characters long"),
    "a row that is not an object": (lambda rows: rows.insert(0, "row"), "measurement 0 of the JSON: it is 'row'"),
    "a missing backend": (lambda rows: rows[0].pop("backend"), "has no field 'backend'"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_malformed_or_hostile_file_is_refused_with_its_first_problem_and_nothing_imported(rows, tmp_path, case):
    change, expected = HOSTILE[case]
    change(rows)
    with ResultsDB(tmp_path / "results.sqlite") as db:
        with pytest.raises(InvalidResultsError) as refused:
            db.import_json(json.dumps(rows))
        assert db.list_runs() == []
    message = str(refused.value)
    assert message.startswith("measurement 0 of the JSON") and "nothing was imported" in message, message
    assert expected in message, message
    assert message == printable(message)  # the message itself carries no control character


def test_the_first_problem_is_named_even_in_a_later_measurement(rows, tmp_path):
    rows[1]["count"] = "many"
    rows[0]["samples"] = [0.5]  # fine
    with ResultsDB(tmp_path / "results.sqlite") as db, pytest.raises(InvalidResultsError, match="measurement 1 "):
        db.import_json(json.dumps(rows))


def test_json_that_is_not_an_export_is_refused(tmp_path):
    with ResultsDB(tmp_path / "results.sqlite") as db:
        for text, expected in (
            ("NaN", "not a list"),
            ('{"hello": 1}', "not a list of measurements"),
            ("{", "not JSON"),
        ):
            with pytest.raises(InvalidResultsError, match=expected):
                db.import_json(text)


def test_names_with_markdown_and_control_characters_import_as_text_and_the_terminal_sees_escapes(rows, tmp_path):
    for row in rows:
        row["run"]["source"]["description"] = HOSTILE_TEXT
        row["run"]["source"]["kind"] = ANSI_RED + "sample"
        row["run"]["error"] = HOSTILE_TEXT
    file = tmp_path / "hostile.json"
    file.write_text(json.dumps(rows))
    database = tmp_path / "results.sqlite"
    imported = storage_cli("import", str(file), "--db", str(database))
    assert imported.returncode == 0, imported.stderr
    with ResultsDB(database) as db:
        (record,) = db.list_runs()
        assert record.source["description"] == HOSTILE_TEXT  # kept as it was written: it is shown as text
    listing = storage_cli("runs", "--db", str(database))
    assert listing.returncode == 0, listing.stderr
    assert "\x1b" not in listing.stdout and "\\x1b[31msample" in listing.stdout
    assert record.id in listing.stdout


def test_the_command_line_import_refuses_a_hostile_file_in_one_line_and_leaves_no_database(rows, tmp_path):
    rows[0]["count"] = "many"
    rows[0]["run_id"] = rows[0]["run"]["id"] = ANSI_RED + "20990101-000000-aaaaaa"
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(rows))
    database = tmp_path / "results.sqlite"
    line = one_line_error(storage_cli("import", str(file), "--db", str(database)))
    assert "\x1b" not in line and "measurement 0 of the JSON: field 'run_id'" in line, line
    assert not database.exists()


def test_runs_delete_removes_the_runs_named_and_nothing_when_one_is_unknown(exported, tmp_path):
    database = tmp_path / "results.sqlite"
    first, second = copy.deepcopy(exported), copy.deepcopy(exported)
    for row in second:
        row["run_id"] = row["run"]["id"] = "20990101-000000-bbbbbb"
    with ResultsDB(database) as db:
        db.import_json(json.dumps(first + second))
        ids = [run.id for run in db.list_runs()]
    assert len(ids) == 2
    line = one_line_error(storage_cli("runs", "delete", ids[0], "no-such-run", "--db", str(database)))
    assert "no run 'no-such-run'" in line
    with ResultsDB(database) as db:
        assert sorted(run.id for run in db.list_runs()) == sorted(ids)  # nothing deleted
    deleted = storage_cli("runs", "--db", str(database), "delete", ids[0])
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.split() == [ids[0]] and "deleted 1 run(s)" in deleted.stderr
    with ResultsDB(database) as db:
        assert [run.id for run in db.list_runs()] == [ids[1]]
        assert db.measurements(ids[0]) == [] and db.count_previews(ids[0]) == 0


def test_runs_delete_refuses_a_run_that_is_still_running(tmp_path):
    database = tmp_path / "results.sqlite"
    with ResultsDB(database) as db:  # recorded by this (living) process, so it stays "running"
        db.create_run("20990101-000000-cccccc", {"backends": ["lmdb"], "counts": [10]}, {}, {})
    line = one_line_error(storage_cli("runs", "delete", "20990101-000000-cccccc", "--db", str(database)))
    assert "still running" in line and "stop it first" in line
    with ResultsDB(database) as db:
        assert db.get_run("20990101-000000-cccccc").status == "running"


def test_a_run_damaged_in_the_file_is_named_by_the_same_schema(exported, tmp_path):
    database = tmp_path / "results.sqlite"
    with ResultsDB(database) as db:
        (run_id,) = db.import_json(json.dumps(exported))
    with sqlite3.connect(database) as connection:  # written by hand, or by another program
        connection.execute("UPDATE measurements SET count = 'many' WHERE id = (SELECT MIN(id) FROM measurements)")
    with ResultsDB(database) as db:
        problem = db.run_problem(run_id)
        assert problem == "its measurement 0: field 'count' is 'many', not a whole number of 1 or more"
        with pytest.raises(InvalidResultsError, match="'many'"):  # and it is not exported as if it were fine
            db.export_json([run_id])
