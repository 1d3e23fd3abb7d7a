"""Where the engine puts each repeat's store (storage.bench.placement), on the real file system."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import struct
import tempfile
from pathlib import Path

import pytest

import storage
from storage.backends.png_files import PngFilesStore
from storage.bench import Experiment, run_experiment
from storage.bench.placement import (
    FS_TOPDIR_FL,
    empty_folder,
    fresh_store_path,
    mark_top_of_hierarchy,
    remove_emptied_folders,
    spread_folder,
)


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


def test_fresh_paths_are_new_and_emptied_folders_stay(tmp_path: Path) -> None:
    paths = {fresh_store_path(tmp_path, "store") for _ in range(50)}
    assert len(paths) == 50 and all(p.parent == tmp_path and p.name.startswith("store-") for p in paths)
    assert not any(p.exists() for p in paths)

    store = tmp_path / "store-x"
    (store / "0000").mkdir(parents=True)
    (store / "0000" / "1.png").write_bytes(b"x" * 100)
    (store / "labels.csv").write_text("0\n")
    empty_folder(store)
    assert store.is_dir() and list(store.iterdir()) == []
    empty_folder(None)  # nothing written yet
    empty_folder(tmp_path / "never-made")

    kept = tmp_path / "store"
    kept.mkdir()
    full = tmp_path / "store-full"
    full.mkdir()
    (full / "f").write_bytes(b"1")
    remove_emptied_folders(tmp_path, keep={"store"})
    assert kept.is_dir() and full.is_dir() and not store.exists()


def test_each_repeat_writes_a_new_folder_and_the_last_keeps_its_name(tmp_path: Path) -> None:
    """The slowdown this avoids: ext4 without a journal skips recently freed inodes one by one."""
    opened: list[tuple[Path, list[str]]] = []

    class RecordingPngStore(PngFilesStore):
        info = dataclasses.replace(storage.backend_info("png"), name="png-recorded")

        def __init__(self, path, mode="r", **options):
            if mode == "w":
                folder = Path(path).parent
                earlier = [p for p, _ in opened if p.parent == folder]
                opened.append((Path(path), [str(e) for e in earlier if e.exists() and any(e.iterdir())]))
            super().__init__(path, mode, **options)

    storage.register_backend(RecordingPngStore)
    try:
        plan = Experiment(
            backends=["png-recorded"],
            counts=[20],
            operations=["write_batch", "write_one", "read_all"],
            repeats=3,
            source="sample",
            work_dir=str(tmp_path / "runs"),
            keep=True,
        )
        summary = run_experiment(plan)
    finally:
        storage.unregister_backend("png-recorded")
    assert summary.status == "finished", summary.error
    writes = [path for path, _ in opened]
    assert len(writes) == 2 * 4  # write_batch and write_one: a warm-up and 3 repeats each
    assert len(set(writes)) == len(writes)  # never the folder a previous repeat used
    assert all(not still_full for _, still_full in opened)  # earlier repeats were emptied first
    assert {p.name.split("-")[0] for p in writes} == {"store", "write_one"}
    cell = Path(summary.run_dir) / "png-recorded" / "20"
    assert sorted(p.name for p in cell.iterdir()) == ["store", "write_one"]  # kept under their usual names
    assert all(m.verified for m in summary.measurements)
    storage.register_backend(RecordingPngStore)
    try:
        with storage.open_store("png-recorded", cell / "store") as store:
            assert len(store) == 20
    finally:
        storage.unregister_backend("png-recorded")
