"""What keeps stores from being corrupted quietly, beyond the conformance suite's per-backend tests.

The writer's lock itself, ``python -m storage verify`` on plain and sharded stores, sharded
manifests that name shards outside the store, results databases of a newer version, links in
image folders, and CIFAR-10 pickles that would build far more than their size.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import storage
from storage import locking, manifest
from storage.bench import ResultsDB
from storage.bench.results import SCHEMA_VERSION
from storage.cli import main
from storage.datasets import load_cifar10, load_image_folder
from storage.testing.support import sample_images

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar():
    return sample_images(120)


def write(backend: str, path: Path, images, labels) -> Path:
    with storage.open_store(backend, path, "w") as store:
        store.write_batch(images, labels)
    return path


# -- the writer's lock ----------------------------------------------------------------------------


def test_the_lock_names_its_holder_and_goes_with_the_store(tmp_path):
    assert locking.live_writer(tmp_path) is None
    lock = locking.WriterLock.acquire(tmp_path)
    assert locking.live_writer(tmp_path) == os.getpid()
    with pytest.raises(storage.StoreInUseError, match=f"in this process \\(pid {os.getpid()}\\)"):
        locking.WriterLock.acquire(tmp_path)
    lock.release()
    assert not (tmp_path / locking.LOCK_NAME).exists()
    assert locking.live_writer(tmp_path) is None


def test_a_lock_file_left_by_a_dead_writer_is_taken_over(tmp_path):
    """The file of a writer that is gone (its pid no longer runs) is no reason to refuse."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / locking.LOCK_NAME).write_text(dead.stdout.strip())
    assert locking.live_writer(tmp_path) is None
    lock = locking.WriterLock.acquire(tmp_path)
    assert (tmp_path / locking.LOCK_NAME).read_text() == str(os.getpid())
    lock.release()


def test_a_second_store_object_in_one_process_is_refused(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("npy", tmp_path / "s", "w") as store:
        store.write_batch(images[:5], labels[:5])
        with pytest.raises(storage.StoreInUseError, match="another store object"):
            storage.open_store("npy", tmp_path / "s", "a")
    with storage.open_store("npy", tmp_path / "s", "a") as store:  # free again once closed
        assert len(store) == 5


RACER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import storage
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10
images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
storage.store_class("lmdb")
Path({go!r}).with_name("ready-{first}").touch()
while not Path({go!r}).exists():
    time.sleep(0.002)
try:
    store = storage.open_store("lmdb", {path!r}, "a")
except storage.StoreInUseError as error:
    print("refused:", error)
    raise SystemExit(3)
time.sleep(1.0)  # hold the store, so the other one opens while this one has it
with store:
    store.write_batch(images[{first} : {first} + 8], labels[{first} : {first} + 8])
"""


def test_two_writers_opening_at_the_same_instant_never_both_write(tmp_path, cifar):
    """Two processes wait for one signal and open an LMDB store with "a": one writes, the other is refused."""
    images, labels = cifar
    path = write("lmdb", tmp_path / "s", images[:12], labels[:12])
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER.format(root=str(ROOT), go=str(go), path=str(path), first=first)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (12, 100)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{first}").exists() for first in (12, 100)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = [racer.communicate(timeout=120) + (racer.returncode,) for racer in racers]
    assert sorted(code for _, _, code in results) == [0, 3], results
    refused = next(out for out, _, code in results if code == 3)
    assert "being written by pid" in refused
    winner = 12 if results[0][2] == 0 else 100
    with storage.open_store(path) as store:
        assert len(store) == 20
        np.testing.assert_array_equal(store.read_all()[0], np.concatenate([images[:12], images[winner : winner + 8]]))
        assert store.verify().ok


# -- manifests ----------------------------------------------------------------------------------


def test_a_failed_manifest_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "store.json"
    target.mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(OSError):
        manifest.write_file_atomically(target, b"{}")
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["store.json"]


def test_the_kept_manifest_is_put_back_with_a_rename(tmp_path, cifar):
    path = write("npy", tmp_path / "s", *cifar)
    before = (path / "store.json").read_bytes()
    manifest.keep_previous(path)
    manifest.write_file_atomically(path / "store.json", b'{"changed": true}')  # a new file, as every write
    assert manifest.restore_previous(path)
    assert (path / "store.json").read_bytes() == before
    assert not (path / manifest.PREVIOUS_MANIFEST_NAME).exists()


def test_a_damaged_manifest_json_is_named(tmp_path, cifar):
    path = write("npy", tmp_path / "s", *cifar)
    (path / "store.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(storage.CorruptDataError, match="not valid JSON"):
        storage.open_store(path)


# -- python -m storage verify ---------------------------------------------------------------------


def test_verify_command_on_a_good_and_a_damaged_store(tmp_path, cifar, capsys):
    images, labels = cifar
    path = write("lmdb", tmp_path / "s", images, labels)
    assert main(["verify", str(path)]) == 0
    assert "120 images, 120 checked against their checksums" in capsys.readouterr().out
    with storage.open_store(path) as store:
        record = store._committed_records()[1]  # the second run: images 85..119
    data = bytearray((path / "data.mdb").read_bytes())
    pixels = images[int(record["first_id"]) + 2].tobytes()
    at = data.find(pixels)
    assert at > 0
    data[at + 100] ^= 0x10
    (path / "data.mdb").write_bytes(bytes(data))
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and f"images {int(record['first_id'])}..119" in out and "data.mdb" in out
    assert main(["verify", "--json", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["checked"] == 85 and report["images"] == 120
    with storage.open_store(path) as store, pytest.raises(storage.CorruptDataError, match="do not match the checksum"):
        store.read_one(int(record["first_id"]) + 2, verify=True)


def test_verify_command_on_a_sharded_store(tmp_path, cifar, capsys):
    images, labels = cifar
    with storage.open_sharded(tmp_path / "sharded", "w", backend="npy", shard_images=50) as writer:
        writer.write_batch(images, labels)
    assert main(["verify", str(tmp_path / "sharded")]) == 0
    assert "120 images, 120 checked" in capsys.readouterr().out
    data = tmp_path / "sharded" / "shard-00001" / "images.u8"
    damaged = bytearray(data.read_bytes())
    damaged[3 * 3072 + 7] ^= 1
    data.write_bytes(bytes(damaged))
    assert main(["verify", str(tmp_path / "sharded")]) == 1
    out = capsys.readouterr().out
    assert "shard-00001" in out and "sha256" in out and "shard-00001: images 0..49" in out
    with storage.open_sharded(tmp_path / "sharded") as store:
        with pytest.raises(storage.CorruptDataError, match="do not match the checksum"):
            store.read_batch([50, 53], verify=True)
        np.testing.assert_array_equal(store.read_batch([1, 110], verify=True)[0], images[[1, 110]])


def test_verify_command_on_a_folder_that_is_no_store_goes_on_to_the_next(tmp_path, cifar, capsys):
    """A path that cannot be opened is named with its error; the paths after it are still checked."""
    good = write("npy", tmp_path / "good", *cifar)
    (tmp_path / "empty").mkdir()
    assert main(["verify", str(tmp_path / "empty"), str(good)]) == 1
    captured = capsys.readouterr()
    assert "empty: cannot be checked: NotAStoreError" in captured.err and "holds no image store" in captured.err
    assert "120 images, 120 checked" in captured.out and "no damage found" in captured.out
    assert main(["verify", "--json", str(tmp_path / "empty"), str(good)]) == 1
    unopened, report = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert unopened["ok"] is False and "NotAStoreError" in unopened["error"]
    assert report["ok"] is True and report["checked"] == 120


# -- sharded manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../elsewhere", "/tmp/other-store", "a/b", "..", ""])
def test_a_sharded_manifest_naming_a_shard_outside_the_store_is_refused(tmp_path, cifar, name):
    images, labels = cifar
    (tmp_path / "elsewhere").mkdir()
    with storage.open_sharded(tmp_path / "sharded", "w", backend="npy", shard_images=60) as writer:
        writer.write_batch(images, labels)
    manifest_path = tmp_path / "sharded" / "sharded.json"
    found = json.loads(manifest_path.read_text())
    found["shards"][0]["name"] = name
    manifest_path.write_text(json.dumps(found))
    with pytest.raises(storage.CorruptDataError, match="not the plain name of a folder inside the store"):
        storage.open_sharded(tmp_path / "sharded")


# -- results databases of a newer version ---------------------------------------------------------


def test_a_results_database_of_a_newer_schema_is_refused_and_left_alone(tmp_path, capsys):
    path = tmp_path / "results.sqlite"
    with ResultsDB(path):
        pass
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 7")
    connection.close()
    with pytest.raises(
        storage.NewerVersionError, match=f"schema 7; this version reads schema {SCHEMA_VERSION} at most"
    ):
        ResultsDB(path)
    assert main(["runs", "--db", str(path)]) == 1
    assert "newer version" in capsys.readouterr().err
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 7


# -- image folders with links ------------------------------------------------------------------------


@pytest.fixture
def folder_with_links(tmp_path):
    root = tmp_path / "photos"
    (root / "cat").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    for index in range(3):
        Image.fromarray(np.full((6, 6, 3), index * 50, np.uint8)).save(root / "cat" / f"{index}.png")
    Image.fromarray(np.full((6, 6, 3), 250, np.uint8)).save(outside / "private.png")
    os.symlink(outside / "private.png", root / "cat" / "outside.png")
    os.symlink(root / "cat" / "0.png", root / "cat" / "inside.png")
    os.symlink(tmp_path / "missing.png", root / "cat" / "dangling.png")
    os.symlink(root / "cat" / "loop-b.png", root / "cat" / "loop-a.png")
    os.symlink(root / "cat" / "loop-a.png", root / "cat" / "loop-b.png")
    return root


def test_links_out_of_an_image_folder_are_refused_unless_followed(folder_with_links):
    with pytest.raises(storage.BadImageFileError, match="cannot be followed") as caught:
        load_image_folder(folder_with_links)
    assert "outside.png" in str(caught.value) and "loop-a.png" in str(caught.value)
    assert "dangling.png" in str(caught.value)
    skipped: list = []
    images, labels, _ = load_image_folder(folder_with_links, skip_bad=True, skipped=skipped)
    assert len(images) == 4  # three files and the link that stays inside
    reasons = {Path(path).name: reason for path, reason in skipped}
    assert set(reasons) == {"outside.png", "dangling.png", "loop-a.png", "loop-b.png"}
    assert "leads outside the image folder" in reasons["outside.png"] and "--follow-links" in reasons["outside.png"]
    assert "cannot be followed" in reasons["dangling.png"] and "symbolic links" in reasons["loop-a.png"]
    followed, _, _ = load_image_folder(folder_with_links, skip_bad=True, follow_links=True)
    assert len(followed) == 5 and any(int(image[0, 0, 0]) == 250 for image in followed)


def test_convert_skips_bad_links_with_skip_bad(folder_with_links, tmp_path, capsys):
    assert main(["convert", str(folder_with_links), "--to", "npy", str(tmp_path / "s"), "--no-progress"]) == 1
    assert "--skip-bad" in capsys.readouterr().err
    assert (
        main(["convert", str(folder_with_links), "--to", "npy", str(tmp_path / "s"), "--skip-bad", "--no-progress"])
        == 0
    )
    with storage.open_store(tmp_path / "s") as store:
        assert len(store) == 4


# -- CIFAR-10 pickles that would build far more than their size ---------------------------------------


def nested_labels(depth: int) -> list:
    """Lists of lists of the same list: ``depth`` levels make 4 * 2**depth labels from a few hundred bytes."""
    labels: list = [1, 2, 3, 4]
    for _ in range(depth):
        labels = [labels, labels]
    return labels


@pytest.mark.parametrize(
    ("labels", "extra"),
    [
        (nested_labels(30), {}),  # 2**30 labels from 30 shared lists: refused before it is walked
        (list(range(4)), {b"filenames": [[b"shared"]] * 5000}),  # thousands of shared references
    ],
    ids=["nested-labels", "shared-references"],
)
def test_a_cifar_pickle_that_would_build_far_more_than_its_size_is_refused_at_once(tmp_path, labels, extra):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": np.zeros(4 * 3072, np.uint8), b"labels": labels, **extra}
    data = pickle.dumps(batch, protocol=4)
    assert len(data) < 60_000
    (folder / "data_batch_1").write_bytes(data)
    started = time.monotonic()
    with pytest.raises(storage.CorruptDataError, match="nothing nested|more than a CIFAR-10 batch ever holds"):
        load_cifar10(tmp_path)
    assert time.monotonic() - started < 5


def test_the_bundled_sample_still_loads():
    images, labels, names = load_cifar10(ROOT / "data" / "cifar-10-sample")
    assert images.shape == (5085, 32, 32, 3) and len(names) == 10


@pytest.mark.parametrize("shape", [(32, 32, 3), (17, 9), (5, 7, 4)])
def test_the_fast_digests_of_one_shape_runs_equal_the_general_ones(shape):
    """Writes and verified reads hash one-shape runs with the fast path; a store written
    either way must verify the other way, so the two may never give different digests."""
    from storage import checksums

    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (300, *shape), dtype=np.uint8)
    labels = rng.integers(0, 1000, 300)
    counts = [1, 85, 7, 120, 87]
    fast = checksums.uniform_run_digests(checksums.DEFAULT_ALGORITHM, images, labels, counts)
    bounds = np.cumsum([0, *counts])
    general = [
        checksums.run_digest(checksums.DEFAULT_ALGORITHM, images[start:stop], labels[start:stop])
        for start, stop in zip(bounds[:-1], bounds[1:])
    ]
    assert fast == general
    images[150, 0, 0] ^= 1  # one bit of the fourth run
    changed = checksums.uniform_run_digests(checksums.DEFAULT_ALGORITHM, images, labels, counts)
    assert [a != b for a, b in zip(changed, fast)] == [False, False, False, True, False]
