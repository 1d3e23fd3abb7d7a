"""What the peer backends write is their library's own format, readable by the library alone.

The conformance suite checks the interface; these tests open the files with LitData,
MosaicML Streaming and Lance directly, as a user of those libraries would, and check what
the parts, shards and versions look like after appends and cut-off writes.
"""

from __future__ import annotations

import numpy as np
import pytest

import storage
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10


@pytest.fixture(scope="module")
def cifar():
    images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
    return images[:300], labels[:300]


class Cancel(Exception):
    pass


def cancel_after_first_chunk(done: int, total: int) -> None:
    if done < total:
        raise Cancel()


def test_litdata_parts_open_with_litdatas_own_streaming_dataset(tmp_path, cifar):
    from litdata import StreamingDataset

    images, labels = cifar
    with storage.open_store("litdata", tmp_path / "s", "w") as store:
        store.write_batch(images[:200], labels[:200])
        store.write_batch(images[200:], labels[200:])
        parts = store.part_paths()
    assert [part.name for part in parts] == ["00000", "00001"]
    assert sorted(path.name for path in parts[0].iterdir()) == ["chunk-0-0.bin", "index.json"]
    samples = list(StreamingDataset(str(parts[0]))) + list(StreamingDataset(str(parts[1])))
    assert len(samples) == 300
    for index in (0, 199, 200, 299):
        np.testing.assert_array_equal(samples[index]["image"], images[index])
        assert samples[index]["label"] == labels[index]


def test_mds_parts_open_with_streamings_own_streaming_dataset(tmp_path, cifar):
    from streaming import StreamingDataset

    images, labels = cifar
    with storage.open_store("mds", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
        (part,) = store.part_paths()
    assert sorted(path.name for path in part.iterdir()) == ["index.json", "shard.00000.mds"]
    dataset = StreamingDataset(local=str(part), batch_size=1)
    assert len(dataset) == 300
    for index in (0, 150, 299):
        np.testing.assert_array_equal(dataset[index]["image"], images[index])
        assert dataset[index]["label"] == labels[index]


@pytest.mark.parametrize("backend", ["litdata", "mds"])
def test_a_cancelled_batch_leaves_no_part_behind_and_appends_go_on(backend, tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(storage.store_class(backend), "chunk_images", 50)
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        store.write_batch(images[:100], labels[:100])
        with pytest.raises(Cancel):
            store.write_batch(images[100:], labels[100:], progress=cancel_after_first_chunk)
        assert len(store) == 100
    assert sorted(path.name for path in (tmp_path / "s" / "parts").iterdir()) == ["00000"]
    with storage.open_store(backend, tmp_path / "s", "a") as store:
        store.write_one(images[100], labels[100])
        store.write_batch(images[101:], labels[101:])
        assert len(store.part_paths()) == 3  # the write_one image was finished as a part before the batch
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_all()
    np.testing.assert_array_equal(read, images)
    np.testing.assert_array_equal(read_labels, labels)


def test_lance_dataset_opens_with_lance_and_a_cancelled_batch_is_restored_away(tmp_path, cifar, monkeypatch):
    import lance

    images, labels = cifar
    monkeypatch.setattr(storage.store_class("lance"), "chunk_bytes", 50 * images[0].nbytes)  # one append per 50
    with storage.open_store("lance", tmp_path / "s", "w") as store:
        store.write_batch(images[:100], labels[:100])
        committed = store.backend_state["version"]
        with pytest.raises(Cancel):
            store.write_batch(images[100:], labels[100:], progress=cancel_after_first_chunk)
    dataset = lance.dataset(str(tmp_path / "s" / "images.lance"))
    assert dataset.version > committed  # Lance had written rows of the cancelled batch...
    assert dataset.count_rows() == 100  # ...and the committed version is the newest content again
    assert dataset.schema.names == ["image", "height", "width", "channels", "label", "id"]
    row = dataset.take([42]).to_pylist()[0]
    assert (row["height"], row["width"], row["channels"], row["label"], row["id"]) == (32, 32, 3, labels[42], 42)
    np.testing.assert_array_equal(np.frombuffer(row["image"], np.uint8).reshape(32, 32, 3), images[42])


def test_lance_random_reads_keep_the_order_and_repeats_asked_for(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("lance", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
    ids = np.array([299, 3, 3, 150, 0, 42])
    with storage.open_store("lance", tmp_path / "s") as store:
        read, read_labels = store.read_batch(ids)
    np.testing.assert_array_equal(read, images[ids])
    np.testing.assert_array_equal(read_labels, labels[ids])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("backend", ["litdata", "mds", "lance"])
def test_each_peer_loads_through_its_own_dataset_class_every_image_once(backend, workers, tmp_path, cifar):
    """The loader a format's users write: the library's own dataset class shuffles, the
    batches carry ids, and an epoch holds every image exactly once, bit for bit."""
    images, labels = cifar
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        store.write_batch(images[:150], labels[:150])
        store.write_batch(images[150:], labels[150:])  # two parts / two appends
    own_class = {"litdata": "litdata", "mds": "streaming", "lance": "lance"}[backend]
    loader = storage.store_class(backend).torch_loader(tmp_path / "s", 64, workers, seed=3, timeout=120)
    assert type(loader.dataset).__module__.split(".")[0] == own_class
    seen = []
    for batch_images, batch_labels, batch_ids in loader:
        ids = batch_ids.numpy()
        np.testing.assert_array_equal(batch_images.numpy(), images[ids])
        np.testing.assert_array_equal(batch_labels.numpy(), labels[ids])
        seen.extend(ids.tolist())
    assert sorted(seen) == list(range(300))
    assert seen != sorted(seen)  # shuffled


def test_the_engine_measures_the_peers_loader_and_checks_the_epoch(tmp_path):
    from storage.bench import Experiment, ResultsDB, run_experiment

    experiment = Experiment(
        backends=["litdata", "mds", "lance"],
        counts=[600],
        operations=["loader"],
        workers=[0],
        batch_size=128,
        repeats=1,
        source="sample",
        work_dir=str(tmp_path / "runs"),
    )
    summary = run_experiment(experiment, ResultsDB(tmp_path / "r.sqlite"))
    loaders = {m.backend: m for m in summary.measurements if m.operation == "loader"}
    assert set(loaders) >= {"litdata", "mds", "lance"}
    for backend in ("litdata", "mds", "lance"):
        assert loaders[backend].error is None, loaders[backend].error
        assert loaders[backend].verified and loaders[backend].images_per_second > 0
