"""Sharded stores converted on a real Dask LocalCluster of 2 worker processes, and read back."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dask.distributed")

import dask  # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402
from PIL import Image  # noqa: E402

import storage  # noqa: E402
from storage import sharded  # noqa: E402
from storage.datasets import load_cifar10, load_image_folder  # noqa: E402
from storage.distributed import convert  # noqa: E402
from storage.errors import BadShardError, ConversionFailedError, IncompleteStoreError  # noqa: E402
from storage.sharded import CONVERSION_PLAN, SHARD_STAMP, SHARDED_MANIFEST, open_sharded  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "data" / "cifar-10-sample" / "cifar-10-batches-py"


@pytest.fixture(scope="module")
def client():
    """One LocalCluster for the module: 2 worker processes of one thread each.

    A task whose worker dies is retried once (allowed-failures 1), so a task that kills
    its worker every time fails after two workers died instead of four.

    Workers are started (and restarted after a kill) with ``spawn``, which runs this
    process's ``__main__`` file again in each worker. Streamlit's AppTest, in the page
    tests, leaves ``__main__`` pointing at the last page it ran, so for this module
    ``__main__`` is a bare module that spawn has nothing to re-run from.
    """
    real_main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
        )
    dask_client = Client(cluster)
    yield dask_client
    dask_client.close()
    cluster.close()
    sys.modules["__main__"] = real_main


@pytest.fixture
def workers(client):
    """The module's client once both workers are up (a test may have killed one)."""
    client.wait_for_workers(2, timeout=60)
    return client


@pytest.fixture(scope="module")
def cifar():
    images, labels, _ = load_cifar10(SAMPLE)
    return images, labels


def assert_reads_back(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    with open_sharded(path) as store:
        assert len(store) == len(labels)
        ids = np.random.default_rng(7).permutation(len(store))
        got, got_labels = store.read_batch(ids)
        np.testing.assert_array_equal(got, images[ids])
        np.testing.assert_array_equal(got_labels, labels[ids])
        for image_id in (0, len(store) - 1, int(ids[0])):
            image, label = store.read_one(image_id)
            np.testing.assert_array_equal(image, images[image_id])
            assert label == labels[image_id]


@pytest.mark.parametrize("backend", ["lmdb", "hdf5", "webdataset"])
def test_the_sample_converts_to_four_shards_that_read_back_bit_exact(workers, cifar, tmp_path, backend):
    images, labels = cifar
    result = convert(str(SAMPLE), backend, tmp_path / "sharded", 4, workers)
    assert (result.count, result.shard_count, result.converted, result.reused) == (5085, 4, [0, 1, 2, 3], [])
    assert len(set(result.shard_workers.values())) == 2, "both workers wrote shards"
    assert_reads_back(tmp_path / "sharded", images, labels)
    with open_sharded(tmp_path / "sharded") as store:
        assert [(s.start, s.stop) for s in store.shards] == [(0, 1272), (1272, 2543), (2543, 3814), (3814, 5085)]
        everything, all_labels = store.read_all()
        np.testing.assert_array_equal(everything, images)
        iterated = [label for _, label in store]
        assert iterated == labels.tolist()
        usage = store.disk_usage()
        for shard in store.shards:  # each shard is an ordinary store of the backend
            with storage.open_store(backend, shard.path) as plain:
                np.testing.assert_array_equal(plain.read_all()[0], images[shard.start : shard.stop])
        shard_bytes = sum(storage.measure_disk_usage(shard.path).apparent_bytes for shard in store.shards)
        top = sum((tmp_path / "sharded" / name).stat().st_size for name in (SHARDED_MANIFEST, CONVERSION_PLAN))
        assert usage.apparent_bytes == shard_bytes + top
    manifest = json.loads((tmp_path / "sharded" / SHARDED_MANIFEST).read_text())
    assert manifest["backend"] == backend and manifest["shard_count"] == 4
    assert manifest["images_per_shard"] == [1272, 1271, 1271, 1271]
    assert [shard["first_id"] for shard in manifest["shards"]] == [0, 1272, 2543, 3814]
    assert all(shard["checksum"].startswith("sha256:") for shard in manifest["shards"])


def test_a_killed_worker_leaves_no_manifest_and_a_rerun_converts_only_the_missing_shard(workers, cifar, tmp_path):
    images, labels = cifar
    dest = tmp_path / "sharded"

    def kill_worker_in_shard_2(shard: int, written: int) -> None:
        if shard == 2:  # after its first chunk, in the middle of the shard's batch
            os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(ConversionFailedError, match="shard-00002.*run the same conversion again") as failure:
        convert(str(SAMPLE), "lmdb", dest, 4, workers, on_chunk=kill_worker_in_shard_2)
    assert list(failure.value.failed) == ["shard-00002"]
    assert "KilledWorker" in failure.value.failed["shard-00002"]
    assert not (dest / SHARDED_MANIFEST).exists()
    with pytest.raises(BadShardError, match="did not finish"):
        open_sharded(dest)
    with pytest.raises(IncompleteStoreError):  # the killed shard's own store.json says it is incomplete
        storage.open_store("lmdb", dest / "shard-00002")
    assert not (dest / "shard-00002" / SHARD_STAMP).exists()
    finished = {name: (dest / name / SHARD_STAMP).stat() for name in ("shard-00000", "shard-00001", "shard-00003")}

    workers.wait_for_workers(2, timeout=60)
    rerun = convert(str(SAMPLE), "lmdb", dest, 4, workers)
    assert (rerun.converted, rerun.reused) == ([2], [0, 1, 3])
    assert rerun.images_converted == 1271
    for name, before in finished.items():  # untouched: the same files, not rewritten
        after = (dest / name / SHARD_STAMP).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert_reads_back(dest, images, labels)


@pytest.fixture(scope="module")
def small_store(client, tmp_path_factory):
    """A finished 4-shard lmdb store of the first 1,200 sample images, copied by tests that damage it."""
    client.wait_for_workers(2, timeout=60)
    folder = tmp_path_factory.mktemp("small") / "store"
    convert(str(SAMPLE), "lmdb", folder, 4, client, limit=1200)
    return folder


def test_a_truncated_shard_is_named_when_the_store_opens(small_store, tmp_path):
    dest = tmp_path / "store"
    shutil.copytree(small_store, dest)
    data = dest / "shard-00001" / "data.mdb"
    os.truncate(data, data.stat().st_size - 4096)
    with pytest.raises(BadShardError, match=r"shard-00001 .*truncated.*data\.mdb") as error:
        open_sharded(dest)
    assert list(error.value.problems) == ["shard-00001"]


def test_a_missing_shard_and_a_shard_from_another_conversion_are_named(workers, small_store, tmp_path):
    dest = tmp_path / "store"
    shutil.copytree(small_store, dest)
    other = tmp_path / "other"
    convert(str(SAMPLE), "lmdb", other, 4, workers, limit=1200)  # the same images, another conversion
    shutil.rmtree(dest / "shard-00003")
    shutil.rmtree(dest / "shard-00000")
    shutil.copytree(other / "shard-00000", dest / "shard-00000")
    with pytest.raises(BadShardError) as error:
        open_sharded(dest)
    assert set(error.value.problems) == {"shard-00000", "shard-00003"}
    assert "from another conversion" in error.value.problems["shard-00000"]
    assert "is missing" in error.value.problems["shard-00003"]
    assert "shard-00000" in str(error.value) and "shard-00003" in str(error.value)

    repaired = convert(str(SAMPLE), "lmdb", dest, 4, workers, limit=1200)
    assert (repaired.converted, repaired.reused) == ([0, 3], [1, 2])
    images, labels, _ = load_cifar10(SAMPLE)
    assert_reads_back(dest, images[:1200], labels[:1200])


def test_a_changed_byte_is_found_by_verify(small_store, tmp_path):
    dest = tmp_path / "store"
    shutil.copytree(small_store, dest)
    stamp = json.loads((dest / "shard-00002" / SHARD_STAMP).read_text())
    name = max(stamp["files"], key=lambda relative: stamp["files"][relative][0])
    with open(dest / "shard-00002" / name, "r+b") as file:
        file.seek(8192 + 100)
        byte = file.read(1)
        file.seek(8192 + 100)
        file.write(bytes([byte[0] ^ 0xFF]))
    with open_sharded(dest):  # the quick check at open sees sizes, not contents
        pass
    with pytest.raises(BadShardError, match=f"shard-00002 .*damaged.*{name}"):
        open_sharded(dest, verify=True)


def test_an_image_folder_of_mixed_sizes_converts(workers, tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "images"
    for index in range(30):
        folder = root / f"class{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        shape = (8 + index, 10 + 2 * index, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{index:03d}.png")
    images, labels, _ = load_image_folder(root)
    convert(str(root), "lmdb", tmp_path / "sharded", 3, workers)
    with open_sharded(tmp_path / "sharded") as store:
        ids = np.arange(len(images))[::-1]
        got, got_labels = store.read_batch(ids)
        assert isinstance(got, list) and len(got) == 30
        for image_id, image in zip(ids, got):
            np.testing.assert_array_equal(image, images[image_id])
        np.testing.assert_array_equal(got_labels, labels[ids])


def test_a_sharded_store_travels_to_other_processes(small_store):
    with open_sharded(small_store) as store:
        copy = pickle.loads(pickle.dumps(store))
        np.testing.assert_array_equal(copy.read_batch([1199, 3, 600])[0], store.read_batch([1199, 3, 600])[0])
        copy.close()


def test_a_sharded_store_reads_like_any_store(small_store):
    """Both satisfy storage.ImageReader, with the same checks and the same errors (named for their kind)."""
    with open_sharded(small_store) as store, storage.open_store("lmdb", store.shards[1].path) as shard:
        assert isinstance(store, storage.ImageReader) and isinstance(shard, storage.ImageReader)
        with pytest.raises(storage.ImageIndexError, match="this sharded store holds 1200 images"):
            store.read_one(1200)
        with pytest.raises(storage.ImageIndexError, match="this store holds 300 images"):
            shard.read_one(300)
        for reader in (store, shard):
            with pytest.raises(storage.ImageIndexError, match="flat sequence of integers"):
                reader.read_batch([0.5, 1.5])
            with pytest.raises(storage.ImageShapeError, match="out has shape"):
                reader.read_batch([0, 1], out=np.empty((3, 32, 32, 3), np.uint8))
            empty, no_labels = reader.read_batch([])
            assert empty.shape == (0, 32, 32, 3) and no_labels.dtype == np.int64
        assert [label for _, label in store] == store.read_all()[1].tolist()
        np.testing.assert_array_equal(store.read_batch(range(300, 600))[0], shard.read_all()[0])


def test_writing_from_this_process_fills_shard_after_shard(cifar, tmp_path, monkeypatch):
    images, labels = cifar
    with open_sharded(tmp_path / "s", "w", backend="hdf5", shard_images=2000) as writer:
        writer.write_batch(images[:1500], labels[:1500])
        writer.write_batch(images[1500:], labels[1500:])
    monkeypatch.setattr(sharded, "MAX_OPEN_SHARDS", 2)
    assert_reads_back(tmp_path / "s", images, labels)
    with open_sharded(tmp_path / "s") as store:
        assert [shard.count for shard in store.shards] == [2000, 2000, 1085]
        store.read_batch([0, 2500, 5000, 10])
        assert len(store._stores) == 2, "only the two most recently used shards stay open"
    with pytest.raises(ValueError):
        with open_sharded(tmp_path / "broken", "w", backend="hdf5", shard_images=100) as writer:
            writer.write_batch(images[:250], labels[:250])
            raise ValueError("the caller failed midway")
    assert not (tmp_path / "broken" / SHARDED_MANIFEST).exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(storage.StoreExistsError):
        open_sharded(tmp_path / "mine", "w", backend="hdf5", shard_images=100)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_command_line_connects_to_an_existing_scheduler(workers, cifar, tmp_path):
    images, labels = cifar
    address = workers.scheduler.address
    command = [sys.executable, "-m", "storage", "convert", str(SAMPLE), "--to", "hdf5", str(tmp_path / "s"),
               "--shards", "4", "--scheduler", address]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert f"the cluster at {address}, 2 worker(s)" in result.stderr
    assert_reads_back(tmp_path / "s", images, labels)
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "wrote 0 images in 0 shard(s)" in again.stdout and "4 shard(s) were already complete" in again.stdout


def test_the_command_line_converts_with_shards_on_a_local_cluster(tmp_path):
    dest = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "storage", "convert", "sample", "--to", "lmdb", str(dest), "--shards", "3",
         "--limit", "2000", "--workers", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "dashboard: http://" in result.stderr and "shards 3/3" in result.stderr
    assert "wrote 2,000 images in 3 shard(s)" in result.stdout and "match the source" in result.stdout
    with open_sharded(dest) as store:
        assert len(store) == 2000 and len(store.shards) == 3
    usage = subprocess.run(
        [sys.executable, "-m", "storage", "convert", "sample", "--to", "lmdb", str(dest), "--scheduler", "tcp://x:1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert usage.returncode == 2 and "--shards" in usage.stderr


def test_bench_distributed_reads_from_both_workers_and_records_the_cluster(workers, tmp_path):
    db = tmp_path / "results.sqlite"
    result = subprocess.run(
        [sys.executable, "-m", "storage", "bench", "--distributed", "--scheduler", workers.scheduler.address, "--backends", "lmdb",
         "--counts", "3000", "--repeats", "1", "--source", "sample", "--db", str(db), "--work-dir", str(tmp_path / "runs")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    from storage.bench import ResultsDB

    with ResultsDB(db) as results:
        (run,) = results.list_runs()
        measurements = {m.operation: m for m in results.measurements(run.id)}
    assert run.status == "finished" and run.parameters["distributed"] is True
    cluster = run.environment["cluster"]
    assert cluster["worker_count"] == 2 and cluster["kind"] == "external" and cluster["dask"]
    assert cluster["scheduler"] == workers.scheduler.address
    assert set(measurements) == {"write_batch", "read_all", "read_random"}
    read_all = measurements["read_all"]
    assert read_all.verified and read_all.images == 3000 and read_all.cluster_workers == 2
    assert len(read_all.per_worker) == 2 and sum(share["images"] for share in read_all.per_worker) == 3000
    assert read_all.images_per_second > 0 and all(share["images_per_second"] > 0 for share in read_all.per_worker)
    assert "images/s aggregate" in result.stderr and "per worker" in result.stdout
    with ResultsDB(db) as results:
        rows = list(csv.DictReader(io.StringIO(results.export_csv([run.id]))))
    exported = {row["operation"]: json.loads(row["per_worker"]) for row in rows}
    assert exported["read_all"] == read_all.per_worker


def test_import_storage_and_open_sharded_do_not_import_dask():
    code = (
        "import json, sys, storage\n"
        "storage.open_sharded, storage.ShardedStore\n"
        "print(json.dumps(['dask' in sys.modules, 'distributed' in sys.modules]))"
    )
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(output.stdout) == [False, False]


def test_whole_shards_are_shared_out_so_each_is_read_once(small_store):
    with open_sharded(small_store) as store:
        parts = [store.shards_for(part, 3) for part in range(3)]
        assert [[shard.name for shard in shards] for shards in parts] == [
            ["shard-00000", "shard-00003"], ["shard-00001"], ["shard-00002"],
        ]  # fmt: skip
        ids = sorted(i for shards in parts for shard in shards for i in shard.ids)
        assert ids == list(range(len(store)))
        assert store.shards_for(4, 6) == ()
        with pytest.raises(ValueError):
            store.shards_for(3, 3)
