"""storage.torch's datasets over a sharded store, through real DataLoaders with worker processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import storage
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10
from storage.errors import BadShardError
from storage.torch import LoaderSettingsError, StoreDataset, StoreIterableDataset, make_loader

SHARD_IMAGES = 700  # 5,085 sample images: 7 shards of 700 and one of 185


@pytest.fixture(scope="module")
def cifar() -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
    return images, labels


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, cifar) -> Path:
    images, labels = cifar
    path = tmp_path_factory.mktemp("sharded") / "store"
    with storage.open_sharded(path, "w", backend="lmdb", shard_images=SHARD_IMAGES) as writer:
        writer.write_batch(images, labels)
    return path


def test_the_map_style_dataset_reads_global_ids_in_forked_workers(sharded, cifar):
    images, labels = cifar
    dataset = StoreDataset("sharded", sharded)
    assert len(dataset) == len(labels) and dataset.uniform_shape == (32, 32, 3)
    loader = make_loader(dataset, 256, 2, seed=5, multiprocessing_context="fork")
    batches = list(loader)
    order = np.asarray(loader.sampler.last_order)
    assert sorted(order.tolist()) == list(range(len(labels)))
    np.testing.assert_array_equal(torch.cat([b[0] for b in batches]).numpy(), images[order])
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), labels[order])
    copy = pickle.loads(pickle.dumps(dataset))  # what spawn sends: name and path, no open store
    image, label = copy[4321]
    np.testing.assert_array_equal(image.numpy(), images[4321])
    assert label == labels[4321]


def rank_epoch(path: Path, rank: int, world_size: int, workers: int, **options):
    dataset = StoreIterableDataset("sharded", path, rank=rank, world_size=world_size, return_ids=True, **options)
    context = "fork" if workers else None
    loader = DataLoader(dataset, batch_size=100, num_workers=workers, multiprocessing_context=context)
    ids, images, labels = [], [], []
    for batch_images, batch_labels, batch_ids in loader:
        ids.extend(batch_ids.tolist())
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    assert len(ids) == len(dataset)
    return dataset, ids, np.concatenate(images), np.concatenate(labels)


def test_the_iterable_dataset_gives_whole_shards_to_each_worker_of_each_rank(sharded, cifar):
    images, labels = cifar
    with storage.open_sharded(sharded) as store:
        shards = store.shards
    assert len(shards) == 8
    seen = []
    owners: dict[str, tuple[int, int]] = {}
    for rank in (0, 1):
        dataset, ids, got_images, got_labels = rank_epoch(sharded, rank, 2, 2, shuffle_buffer=50, seed=3)
        np.testing.assert_array_equal(got_images, images[ids])
        np.testing.assert_array_equal(got_labels, labels[ids])
        assert ids != sorted(ids), "the shuffle buffer left the stream in id order"
        seen.extend(ids)
        for worker in (0, 1):
            worker_ids = set(dataset.ids_for(worker, 2))
            for shard in shards:  # a shard is all in one worker's share, or not in it at all
                inside = worker_ids & set(shard.ids)
                assert not inside or inside == set(shard.ids)
                if inside:
                    assert shard.name not in owners
                    owners[shard.name] = (rank, worker)
    assert sorted(seen) == list(range(len(labels)))
    assert len(owners) == 8 and set(owners.values()) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_in_order_without_a_buffer_each_worker_streams_its_shards_in_id_order(sharded):
    dataset, ids, _, _ = rank_epoch(sharded, 0, 1, 0)
    assert ids == list(range(len(dataset)))


def test_too_few_shards_for_the_ranks_and_workers_is_refused(sharded, tmp_path):
    with pytest.raises(LoaderSettingsError, match="8 shard.*9 ranks"):
        StoreIterableDataset("sharded", sharded, rank=0, world_size=9)
    dataset = StoreIterableDataset("sharded", sharded, rank=0, world_size=4)
    with pytest.raises(LoaderSettingsError, match="8 shard.*3 DataLoader worker.*4 rank"):
        dataset.ranges_for(0, 3)


def test_a_bad_shard_is_named_when_the_dataset_is_made(sharded, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(sharded, copy)
    shutil.rmtree(copy / "shard-00005")
    with pytest.raises(BadShardError, match="shard-00005"):
        StoreDataset("sharded", copy)
