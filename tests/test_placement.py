"""Where the engine puts each repeat's store (storage.bench.placement), on the real file system."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import struct
import tempfile
import time
from pathlib import Path

import pytest

import storage
from storage.bench import Experiment, run_experiment
from storage.bench.placement import (
    FS_TOPDIR_FL,
    RUN_FOLDER_NAME,
    RetiredStores,
    delete_files,
    fresh_store_path,
    mark_top_of_hierarchy,
    new_run_id,
    remove_spent_run_folders,
    spread_folder,
)
from storage.formats.png_files import PngFilesStore


def flags_of(folder: Path) -> int:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return struct.unpack("i", fcntl.ioctl(descriptor, 0x80086601, struct.pack("i", 0)))[0]
    finally:
        os.close(descriptor)


def test_the_flag_is_set_where_the_file_system_has_it_and_not_inherited(tmp_path: Path) -> None:
    folder = spread_folder(tmp_path / "runs" / "png" / "10")
    if not mark_top_of_hierarchy(folder):
        pytest.skip("this file system has no top-of-hierarchy flag (not ext2/3/4)")
    assert flags_of(folder) & FS_TOPDIR_FL
    inside = folder / "store-1"
    inside.mkdir()
    assert not flags_of(inside) & FS_TOPDIR_FL  # PNG's folders of 1,000 stay beside their store
    assert mark_top_of_hierarchy(folder)  # setting it again is harmless


def test_a_file_system_without_the_flag_is_left_alone(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no tmpfs at /dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm))
    try:
        assert mark_top_of_hierarchy(folder) is False
        assert folder.is_dir()
    finally:
        folder.rmdir()
    assert mark_top_of_hierarchy(tmp_path / "missing") is False


def test_fresh_paths_are_new(tmp_path: Path) -> None:
    paths = {fresh_store_path(tmp_path, "store") for _ in range(50)}
    assert len(paths) == 50 and all(p.parent == tmp_path and p.name.startswith("store-") for p in paths)
    assert not any(p.exists() for p in paths)


def make_store(path: Path, files: int = 3) -> Path:
    (path / "0000").mkdir(parents=True)
    for index in range(files):
        (path / "0000" / f"{index}.png").write_bytes(b"x" * 100)
    return path


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_retired_stores_are_kept_until_the_end_within_the_budget(tmp_path: Path) -> None:
    retired = RetiredStores(budget_bytes=250)
    first, second, third = (make_store(tmp_path / name) for name in ("a", "b", "c"))
    retired.retire(first, 100)
    retired.retire(second, 100)
    assert first.exists() and second.exists() and len(retired) == 2 and retired.kept_bytes == 200
    retired.retire(third, 100)  # 300 > 250: the oldest goes now, its folders kept
    assert not files_in(first) and files_in(second) and files_in(third) and retired.kept_bytes == 200
    assert (first / "0000").is_dir()
    retired.retire(None, 100)  # nothing written yet
    retired.retire(tmp_path / "never-made", 100)
    assert len(retired) == 2
    retired.delete_all()
    assert not files_in(second) and not files_in(third) and retired.kept_bytes == 0 and len(retired) == 0
    assert (third / "0000").is_dir()
    retired.retire(third, 100)
    retired.delete_all(keep_folders=False)
    assert not third.exists()
    assert RetiredStores.for_folder(tmp_path).budget_bytes > 0


def test_a_run_frees_no_store_before_it_ends_and_keeps_the_usual_names(tmp_path: Path) -> None:
    """The slowdown this avoids: ext4 without a journal skips recently freed inodes one by one."""
    opened: list[tuple[Path, int]] = []

    class RecordingPngStore(PngFilesStore):
        info = dataclasses.replace(storage.backend_info("png"), name="png-recorded")

        def __init__(self, path, mode="r", **options):
            if mode == "w":  # how many stores of this run are on disk as this one starts
                run_dir = Path(path).parents[2]
                opened.append((Path(path), len([p for p in run_dir.glob("*/*/*") if p.is_dir()])))
            super().__init__(path, mode, **options)

    def run(keep: bool):
        opened.clear()
        plan = Experiment(
            backends=["png-recorded"],
            counts=[20, 30],
            operations=["write_batch", "write_one", "read_all"],
            repeats=3,
            source="sample",
            work_dir=str(tmp_path / "runs"),
            keep=keep,
        )
        return run_experiment(plan)

    storage.register_backend(RecordingPngStore)
    try:
        summary = run(keep=False)
        assert summary.status == "finished", summary.error
        writes = [path for path, _ in opened]
        assert len(writes) == 2 * 2 * 4  # two counts, write_batch and write_one: a warm-up and 3 repeats each
        assert len(set(writes)) == len(writes)  # never the folder a previous repeat used
        assert [alive for _, alive in opened] == list(range(len(opened)))  # none deleted mid-run
        assert not [p for p in Path(summary.run_dir).rglob("*") if p.is_file()]  # its folders stay a while
        assert (Path(summary.run_dir) / "png-recorded" / "20").is_dir()
        if mark_top_of_hierarchy(tmp_path / "runs"):
            assert flags_of(tmp_path / "runs") & FS_TOPDIR_FL

        kept = run(keep=True)
        cell = Path(kept.run_dir) / "png-recorded" / "20"
        assert sorted(p.name for p in cell.iterdir()) == ["store", "write_one"]  # earlier repeats deleted
        assert all(m.verified for m in kept.measurements)
        with storage.open_store("png-recorded", cell / "store") as store:
            assert len(store) == 20
    finally:
        storage.unregister_backend("png-recorded")


def test_an_ended_runs_folders_stay_for_ten_minutes_without_their_files(tmp_path: Path) -> None:
    work = tmp_path / "runs"
    names = ("20261201-000000-abcdef", "20261130-230000-123456", "20261201-000100-fedcba", "notes")
    ended, old, live, other = (work / name for name in names)
    for folder in (ended, old, live, other):
        make_store(folder / "png" / "10" / "store")
    delete_files(ended)
    delete_files(old)
    assert (ended / "png" / "10" / "store" / "0000").is_dir()
    assert not [p for p in ended.rglob("*") if p.is_file()]
    eleven_minutes_ago = time.time() - 660
    for folder in (old, live, other):
        os.utime(folder, (eleven_minutes_ago, eleven_minutes_ago))
    assert remove_spent_run_folders(work) == [old.name]
    assert not old.exists() and ended.is_dir() and live.is_dir() and other.is_dir()  # recent, live, not a run
    assert remove_spent_run_folders(work, older_than=-1) == [ended.name]  # a live run always holds files
    assert live.is_dir()


def test_run_ids_are_the_folder_names_that_cleanup_recognises() -> None:
    run_ids = {new_run_id() for _ in range(50)}
    assert len(run_ids) == 50
    assert all(RUN_FOLDER_NAME.fullmatch(run_id) for run_id in run_ids)
    assert not RUN_FOLDER_NAME.fullmatch("notes") and not RUN_FOLDER_NAME.fullmatch(min(run_ids) + "x")
