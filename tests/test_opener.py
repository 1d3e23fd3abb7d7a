"""One opener: ``storage.open_store(path)`` and ``storage.detect_backend(path)`` read the backend from the folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import storage
from storage.errors import (
    BadShardError,
    CorruptDataError,
    ModeError,
    NotAStoreError,
    StoreNotFoundError,
    UnknownBackendError,
)
from storage.sharded import CONVERSION_PLAN

IMAGES = np.arange(12 * 4 * 4 * 3, dtype=np.uint8).reshape(12, 4, 4, 3)
LABELS = np.arange(12, dtype=np.int64) % 3


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain"
    with storage.open_store("npy", path, "w") as store:
        store.write_batch(IMAGES, LABELS)
    return path


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    path = tmp_path / "sharded"
    with storage.open_sharded(path, "w", backend="npy", shard_images=5) as writer:
        writer.write_batch(IMAGES, LABELS)
    return path


def test_a_plain_store_is_opened_with_the_backend_its_manifest_names(plain: Path) -> None:
    assert storage.detect_backend(plain) == "npy"
    assert storage.detect_backend(str(plain)) == "npy"
    assert storage.summarize_store(plain) == storage.StoreSummary(plain, "npy", 12)
    with storage.open_store(plain) as store:
        assert isinstance(store, storage.NpyStore) and store.mode == "r"
        images, labels = store.read_all()
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


def test_a_found_backend_takes_a_mode_and_options_by_keyword(plain: Path) -> None:
    with storage.open_store(plain, mode="a") as store:
        store.write_batch(IMAGES[:2], LABELS[:2])
    assert storage.summarize_store(plain).count == 14
    with pytest.raises(ModeError, match="unknown option"):
        storage.open_store(plain, no_such_option=1)


def test_open_store_with_a_backend_name_works_as_before(tmp_path: Path, plain: Path) -> None:
    with storage.open_store(name="npy", path=tmp_path / "kw", mode="w") as store:
        store.write_batch(IMAGES, LABELS)
    with storage.open_store("npy", tmp_path / "kw") as store:
        assert len(store) == 12
    with pytest.raises(storage.WrongBackendError, match="holds a 'npy' store"):
        storage.open_store("lmdb", plain)
    with pytest.raises(UnknownBackendError, match="unknown backend 'nope'"):
        storage.open_store("nope", plain)


def test_a_sharded_store_is_found_and_opens_read_only(sharded: Path) -> None:
    assert storage.detect_backend(sharded) == "sharded"
    assert storage.summarize_store(sharded) == storage.StoreSummary(sharded, "sharded", 12)
    for store in (storage.open_store(sharded), storage.open_store("sharded", sharded, verify=True)):
        with store:
            assert isinstance(store, storage.ShardedStore) and store.mode == "r"
            assert store.backend == "npy" and len(store.shards) == 3
            images, labels = store.read_batch([11, 0, 5])
            np.testing.assert_array_equal(images, IMAGES[[11, 0, 5]])
            np.testing.assert_array_equal(labels, LABELS[[11, 0, 5]])
    with pytest.raises(ModeError, match="opens read-only"):
        storage.open_store(sharded, mode="a")
    with pytest.raises(ModeError, match="takes no backend, shard_images or options"):
        storage.open_store(sharded, map_size=1)


def test_each_shard_of_a_sharded_store_is_a_plain_store(sharded: Path) -> None:
    assert storage.detect_backend(sharded / "shard-00000") == "npy"


def test_an_empty_folder_holds_no_store(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAStoreError, match="empty folder") as raised:
        storage.detect_backend(tmp_path / "empty")
    assert isinstance(raised.value, StoreNotFoundError) and isinstance(raised.value, storage.StorageError)
    with pytest.raises(NotAStoreError, match="store.json or sharded.json"):
        storage.open_store(tmp_path / "empty")


def test_a_folder_of_other_files_holds_no_store(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"not a store")
    with pytest.raises(NotAStoreError, match="a folder of other files"):
        storage.detect_backend(folder)
    with pytest.raises(NotAStoreError, match="is a file, not a store folder"):
        storage.detect_backend(folder / "cat.png")


def test_a_missing_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="nothing is there") as raised:
        storage.detect_backend(tmp_path / "gone")
    assert not isinstance(raised.value, NotAStoreError)
    with pytest.raises(StoreNotFoundError, match=str(tmp_path / "gone")):
        storage.open_store(tmp_path / "gone")


def test_a_backend_name_without_a_path_is_said_to_be_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no folder called "lmdb" here
    with pytest.raises(StoreNotFoundError, match=r"'lmdb' is a backend name, not a store folder"):
        storage.open_store("lmdb")


def test_a_damaged_manifest_or_an_unfinished_conversion_is_named(tmp_path: Path, plain: Path) -> None:
    (plain / "store.json").write_text("{not json")
    with pytest.raises(CorruptDataError, match="store.json is damaged"):
        storage.detect_backend(plain)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / CONVERSION_PLAN).write_text(json.dumps({}))
    with pytest.raises(BadShardError, match="did not finish"):
        storage.detect_backend(unfinished)


def test_an_interrupted_store_still_names_its_backend(plain: Path) -> None:
    manifest = json.loads((plain / "store.json").read_text())
    (plain / "store.json").write_text(json.dumps({**manifest, "state": "writing"}))
    assert storage.detect_backend(plain) == "npy"
    with pytest.raises(storage.IncompleteStoreError):
        storage.open_store(plain)


def test_the_opener_is_imported_on_first_use_only() -> None:
    import subprocess
    import sys

    code = (
        "import sys, storage\n"
        "assert 'storage.opener' not in sys.modules and 'storage.sharded' not in sys.modules\n"
        "from storage import detect_backend, open_store\n"
        "assert 'storage.opener' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True, timeout=120)
