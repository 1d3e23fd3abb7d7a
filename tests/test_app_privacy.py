"""The dashboard reads only what it is allowed to, shows files' names as text, and survives bad runs (AppTest).

The pages run under Streamlit's AppTest with the project's ``.streamlit/config.toml`` (the
server on 127.0.0.1), the results database and run folders in the test's folder, and the
data roots set to that folder (``IMAGE_STORAGE_LAB_ROOTS``). Runs, stores, photos and
results files are real. The browser test (``test_e2e_private.py``) drives the same pages
in Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from test_app_pages import (
    EXPLORE,
    HOME,
    RESULTS,
    ROOT,
    RUN,
    assert_clean,
    button,
    chart_specs,
    db_file,
    errors,
    isolated,  # noqa: F401 (the autouse fixture: a results database and roots of the test's own)
    page,
    record_run,
    shown,
    texts,
)

from storage.bench import ResultsDB

PHOTOS = sorted((ROOT / "data" / "imagenet-sample").rglob("*.JPEG"))
HOSTILE = "[click](http://evil.example/x) ![pixel](http://evil.example/pixel.png) :red[red] $x$ \x1b[31mred"
OLD = 1_000_000_000  # an access time long before the files were written: any read of them moves it


def photo_folder(root: Path, count: int = 3) -> list[Path]:
    """A small image folder of real photos (two classes); every file and folder marked as not read since 2001."""
    files = []
    for index, photo in enumerate(PHOTOS[:count]):
        target = root / ("cats" if index % 2 else "dogs") / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
        files.append(target)
    for path in [*files, *{file.parent for file in files}, root]:
        os.utime(path, (OLD, path.stat().st_mtime))
    return files


def untouched(paths: list[Path]) -> list[Path]:
    return [path for path in paths if path.stat().st_atime == OLD]


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """A real folder of photos outside the data roots."""
    folder = tmp_path_factory.mktemp("outside-the-roots")
    photo_folder(folder)
    return folder


def refusals(at) -> list[str]:
    return [error for error in errors(at) if "outside the allowed folders" in error]


def test_paths_outside_the_roots_get_one_message_whether_or_not_they_exist(isolated, outside):  # noqa: F811
    link = isolated / "data-link"
    link.symlink_to(outside, target_is_directory=True)  # inside the roots, pointing out of them
    paths = ["/etc", "/etc/no-such-folder", str(outside), str(link), f"{isolated}/../{outside.name}", "/root"]
    seen = set()
    for path in paths:
        for at, what in (
            (page(RUN, source=path), "Image folder"),
            (page(EXPLORE, backend="lmdb", path=path), "Store folder"),
        ):
            assert_clean(at)
            (message,) = refusals(at)
            assert message.startswith(
                f"{what}: {path} is outside the allowed folders; add it to IMAGE_STORAGE_LAB_ROOTS"
            )
            seen.add(message.replace(path, "PATH").replace(what, "WHAT"))
            assert "exist" not in message and not at.image
        assert button(page(RUN, source=path), "Run benchmark").disabled
    assert len(seen) == 1, seen  # the same words, existing or not: nothing is told about the disk


def test_a_source_link_lists_nothing_until_check_folder_is_pressed(isolated):  # noqa: F811
    folder = isolated / "photos"
    files = photo_folder(folder)
    at = page(RUN, source=str(folder), formats="lmdb", max_count="1", ops="write_batch", encoding="source")
    assert_clean(at)
    assert button(at, "Run benchmark").disabled and button(at, "Check folder")
    assert "Press **Check folder**" in texts(at)
    watched = [*files, *{file.parent for file in files}, folder]
    assert untouched(watched) == watched  # no file read, no folder listed
    button(at, "Check folder").click().run()
    assert_clean(at)
    assert "3 images, 2 classes" in texts(at) and not button(at, "Run benchmark").disabled
    assert untouched(files) == []  # pressed: the files' headers were read (so the test above could have failed)


def test_a_read_only_dashboard_starts_stops_deletes_and_imports_nothing(isolated, monkeypatch):  # noqa: F811
    run_id = record_run(isolated / "results.sqlite", isolated / "runs", ["hdf5"], [5])
    monkeypatch.setenv("IMAGE_STORAGE_LAB_READ_ONLY", "1")
    run = page(RUN, formats="hdf5", max_count="10", ops="write_batch", source="sample")
    assert_clean(run)
    assert button(run, "Run benchmark").disabled and "read-only" in texts(run)
    results = page(RESULTS, runs=run_id)
    assert_clean(results)
    assert chart_specs(results)  # looking is allowed
    assert not [b for b in results.button if b.label in ("Delete selected runs", "Import")]
    assert not results.get("file_uploader") and "read-only" in texts(results)
    home = page(HOME)
    assert button(home, "Download CIFAR-10").disabled


def damage(run_id: str) -> None:
    """Write a count that is text into one of the run's measurements, as a hand edit of the file would."""
    with sqlite3.connect(db_file()) as connection:
        connection.execute(
            "UPDATE measurements SET count = 'many' WHERE id = (SELECT MIN(id) FROM measurements WHERE run_id = ?)",
            (run_id,),
        )


def test_a_run_that_cannot_be_drawn_is_named_the_others_are_drawn_and_it_can_be_deleted(isolated):  # noqa: F811
    bad = record_run(isolated / "results.sqlite", isolated / "runs", ["png"], [5])
    good = record_run(isolated / "results.sqlite", isolated / "runs", ["hdf5"], [5])
    damage(bad)
    at = page(RESULTS, runs=f"{bad},{good}")
    assert_clean(at)
    (warning,) = [shown(w.value) for w in at.warning if "cannot be shown" in w.value]
    assert (
        warning
        == f"Run {bad} cannot be shown: its measurement 0: field 'count' is 'many', not a whole number of 1 or more"
    )
    specs = chart_specs(at)
    assert specs and all("HDF5" in spec and "PNG files" not in spec for spec in specs)  # the other run, drawn
    run_page = page(RUN, run=bad)
    assert_clean(run_page)
    assert any("cannot be shown: its measurement 0" in shown(w.value) for w in run_page.warning)
    at.multiselect(key="results_runs").set_value([bad]).run()
    at.checkbox(key="results_confirm_delete").check().run()
    button(at, "Delete selected runs").click().run()
    assert_clean(at)
    with ResultsDB(db_file()) as db:
        assert [run.id for run in db.list_runs()] == [good]


def test_the_page_refuses_a_file_of_wrong_types_and_shows_hostile_names_as_text(isolated):  # noqa: F811
    run_id = record_run(isolated / "results.sqlite", isolated / "runs", ["hdf5"], [5])
    with ResultsDB(db_file()) as db:
        rows = json.loads(db.export_json([run_id]))
        db.delete_run(run_id)
    at = page(RESULTS)
    wrong = json.loads(json.dumps(rows))
    wrong[0]["count"] = "many"
    at.file_uploader[0].set_value(("results.json", json.dumps(wrong).encode(), "application/json")).run()
    button(at, "Import").click().run()
    assert_clean(at)
    assert any(
        "The file cannot be imported: measurement 0 of the JSON: field 'count' is 'many'" in e for e in errors(at)
    )
    with ResultsDB(db_file()) as db:
        assert db.list_runs() == []

    for row in rows:
        row["run"]["source"]["description"] = HOSTILE
        row["run"]["source"]["class_names"] = [HOSTILE] * 10
        row["run"]["error"] = HOSTILE
        row["environment"]["cpu_model"] = HOSTILE
    at.file_uploader[0].set_value(("results.json", json.dumps(rows).encode(), "application/json")).run()
    button(at, "Import").click().run()
    assert_clean(at)
    assert any("Imported 1 run" in s.value for s in at.success)
    assert at.multiselect(key="results_runs").value == [run_id]
    written = [str(element.value) for kind in ("markdown", "caption", "info", "warning", "error", "success")
               for element in getattr(at, kind)]  # fmt: skip
    assert not [text for text in written if "](http" in text or "\x1b" in text or ":red[" in text], written
    assert "[click](http://evil.example/x) ![pixel](http://evil.example/pixel.png)" in texts(at)  # shown, as text
    assert "\\x1b[31mred" in texts(at)
