"""PyTorch datasets over every registered store, through real DataLoaders with worker processes.

Every sample a loader delivers is checked against the source images in the order the
shuffled sampler gave (bit for bit for lossless formats, the engine's PSNR floors for
lossy ones). ``fork`` runs over every backend; ``spawn`` workers import torch afresh (a few
seconds each), so they run over a representative few, and one test pickles every
backend's dataset the way ``spawn`` sends it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import storage
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10
from storage.torch import (
    LoaderSettingsError,
    MemoryDataset,
    RecordingRandomSampler,
    SampleBatch,
    StoreDataset,
    StoreIterableDataset,
    TransformError,
    collate,
    make_loader,
    make_store_loader,
    store_dataset,
)
from storage.verify import PSNR_IMAGE_FLOOR, PSNR_MEAN_FLOOR, compare, psnr

BACKENDS = storage.backends()
COUNT = 300
BATCH = 64
REPO_ROOT = Path(__file__).resolve().parents[1]
SPAWN_BACKENDS = ["hdf5", "webdataset", "webp-lossy"]  # and lmdb, with persistent workers, below


@pytest.fixture(scope="module")
def cifar() -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
    return images[:COUNT], labels[:COUNT]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, cifar) -> dict[str, Path]:
    """One store of the same 300 real CIFAR-10 images per backend, written once for this module."""
    images, labels = cifar
    folder = tmp_path_factory.mktemp("stores")
    paths = {}
    for backend in BACKENDS:
        with storage.open_store(backend, folder / backend, "w") as store:
            store.write_batch(images, labels)
        paths[backend] = folder / backend
    return paths


def check_epoch(backend: str, loader: DataLoader, cifar) -> None:
    """The epoch delivered every image once, in the sampler's shuffled order, matching the source."""
    images, labels = cifar
    batches = list(loader)
    got_images = torch.cat([batch[0] for batch in batches]).numpy()
    got_labels = torch.cat([batch[1] for batch in batches]).numpy()
    order = np.asarray(loader.sampler.last_order)
    assert sorted(order.tolist()) == list(range(COUNT))
    assert not np.array_equal(order, np.arange(COUNT)), "the epoch was not shuffled"
    assert all(batch[0].dtype == torch.uint8 and batch[0].shape[1:] == (32, 32, 3) for batch in batches)
    assert len(batches) == -(-COUNT // BATCH) and got_labels.dtype == np.int64
    result = compare(got_images, got_labels, images, labels, order, storage.backend_info(backend).lossless)
    assert result.verified, result.error
    if not storage.backend_info(backend).lossless:
        assert result.psnr >= PSNR_MEAN_FLOOR


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_through_a_forked_dataloader(backend, workers, stores, cifar):
    """Forked workers; a format whose library forbids fork (Lance) gets spawned ones by default."""
    dataset = StoreDataset(backend, stores[backend])
    context = "fork" if workers and dataset.fork_safe else None
    loader = make_loader(dataset, BATCH, workers, seed=workers + 1, multiprocessing_context=context)
    if workers and not dataset.fork_safe:
        assert loader.multiprocessing_context.get_start_method() == "spawn"
    check_epoch(backend, loader, cifar)


@pytest.mark.parametrize("backend", SPAWN_BACKENDS)
def test_spawned_workers_read_the_same_images(backend, stores, cifar):
    dataset = StoreDataset(backend, stores[backend])
    loader = make_loader(dataset, BATCH, 2, seed=5, multiprocessing_context="spawn")
    check_epoch(backend, loader, cifar)


def test_persistent_spawned_workers_keep_their_store_across_epochs(stores, cifar):
    dataset = StoreDataset("lmdb", stores["lmdb"])
    loader = make_loader(dataset, BATCH, 2, seed=9, multiprocessing_context="spawn", persistent_workers=True)
    check_epoch("lmdb", loader, cifar)
    first_order = list(loader.sampler.last_order)
    check_epoch("lmdb", loader, cifar)  # the same worker processes, a new order
    assert loader.sampler.last_order != first_order


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_dataset_pickles_without_an_open_store(backend, stores, cifar):
    images, labels = cifar
    dataset = StoreDataset(backend, stores[backend])
    image, label = dataset[7]  # opens the store in this process
    assert dataset.store is dataset.store  # opened once, then reused
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._store is None and len(clone) == COUNT
    clone_image, clone_label = clone[-1]
    assert clone_label == labels[-1] and label == labels[7]
    for expected, got in ((images[7], image), (images[-1], clone_image)):
        assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8 and got.shape == (32, 32, 3)
        if storage.backend_info(backend).lossless:
            assert np.array_equal(got.numpy(), expected)
        else:
            assert psnr(expected, got.numpy()) >= PSNR_IMAGE_FLOOR
    dataset.close()
    clone.close()


def test_default_collate_and_per_sample_reads_give_the_same_batches(stores, cifar):
    """Without the fast collate, torch's default_collate stacks the samples of a SampleBatch."""
    images, labels = cifar
    dataset = StoreDataset("npy", stores["npy"])
    sampler = RecordingRandomSampler(dataset, generator=torch.Generator().manual_seed(3))
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler)  # torch's default collate
    batches = list(loader)
    order = np.asarray(sampler.last_order)
    assert np.array_equal(torch.cat([b[0] for b in batches]).numpy(), images[order])
    assert np.array_equal(torch.cat([b[1] for b in batches]).numpy(), labels[order])
    fast = dataset.__getitems__([5, 1, 9])
    assert isinstance(fast, SampleBatch) and len(fast) == 3
    stacked, fast_labels = collate(fast)
    assert stacked.data_ptr() == fast.images.data_ptr()  # handed over, not copied
    assert np.array_equal(stacked.numpy(), images[[5, 1, 9]]) and fast_labels.tolist() == labels[[5, 1, 9]].tolist()


def test_a_transform_is_applied_to_every_sample(stores, cifar):
    images, labels = cifar
    dataset = StoreDataset("hdf5", stores["hdf5"], transform=lambda image: image.permute(2, 0, 1).float() / 255)
    image, label = dataset[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert torch.allclose(image, torch.from_numpy(images[3]).permute(2, 0, 1).float() / 255)
    loader = make_loader(dataset, BATCH, 0, seed=1)
    batch, batch_labels = next(iter(loader))
    order = loader.sampler.last_order[:BATCH]
    assert batch.shape == (BATCH, 3, 32, 32)
    assert torch.allclose(batch, torch.from_numpy(images[order]).permute(0, 3, 1, 2).float() / 255)
    assert batch_labels.tolist() == labels[order].tolist()


def test_the_in_memory_ceiling_delivers_the_images(cifar):
    images, labels = cifar
    dataset = MemoryDataset(images, labels)
    loader = make_loader(dataset, BATCH, 2, seed=4, multiprocessing_context="fork")
    batches = list(loader)
    order = np.asarray(loader.sampler.last_order)
    assert np.array_equal(torch.cat([b[0] for b in batches]).numpy(), images[order])
    assert np.array_equal(torch.cat([b[1] for b in batches]).numpy(), labels[order])


# -- the iterable dataset ----------------------------------------------------------------------


def epoch_ids(path: Path, rank: int, world_size: int, workers: int, **options) -> list[tuple[int, int]]:
    """(id, position) pairs one rank's DataLoader yields, each image checked against the source."""
    dataset = StoreIterableDataset("webdataset", path, rank=rank, world_size=world_size, return_ids=True, **options)
    loader = DataLoader(
        dataset, batch_size=32, num_workers=workers, multiprocessing_context="fork" if workers else None
    )
    ids, images, labels = [], [], []
    for batch_images, batch_labels, batch_ids in loader:
        ids.extend(batch_ids.tolist())
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    assert len(ids) == len(dataset)
    return ids, np.concatenate(images), np.concatenate(labels)


def test_two_workers_on_each_of_two_ranks_read_every_id_exactly_once(stores, cifar):
    images, labels = cifar
    seen = []
    for rank in (0, 1):
        ids, got_images, got_labels = epoch_ids(stores["webdataset"], rank, 2, 2, shuffle_buffer=40, seed=11)
        assert compare(got_images, got_labels, images, labels, ids, lossless=True).verified
        assert ids != sorted(ids), "the shuffle buffer left the stream in id order"
        seen.extend(ids)
    assert len(seen) == COUNT and sorted(seen) == list(range(COUNT))


def test_the_stream_is_in_order_without_a_buffer_and_repeatable_with_one(stores):
    ids, _, _ = epoch_ids(stores["webdataset"], 0, 1, 0)
    assert ids == list(range(COUNT))
    first, _, _ = epoch_ids(stores["webdataset"], 1, 3, 0, shuffle_buffer=25, seed=2)
    again, _, _ = epoch_ids(stores["webdataset"], 1, 3, 0, shuffle_buffer=25, seed=2)
    assert first == again and sorted(first) == list(range(COUNT // 3, 2 * COUNT // 3))
    dataset = StoreIterableDataset("webdataset", stores["webdataset"], shuffle_buffer=25, seed=2, return_ids=True)
    order = [sample[2] for sample in dataset]
    dataset.set_epoch(1)
    assert [sample[2] for sample in dataset] != order and sorted(order) == list(range(COUNT))


def test_rank_and_world_size_come_from_torch_distributed_when_it_is_initialised(stores, tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        dataset = StoreIterableDataset("lmdb", stores["lmdb"])
        assert (dataset.rank, dataset.world_size) == (0, 1) and len(dataset) == COUNT
        explicit = StoreIterableDataset("lmdb", stores["lmdb"], rank=2, world_size=3)
        assert (explicit.rank, explicit.world_size, len(explicit)) == (2, 3, COUNT - 2 * COUNT // 3)
    finally:
        torch.distributed.destroy_process_group()


# -- bad input -----------------------------------------------------------------------------------


def test_bad_settings_are_refused_with_the_reason(stores, tmp_path):
    dataset = StoreDataset("lmdb", stores["lmdb"])
    with pytest.raises(LoaderSettingsError, match="batch size 0 is not a positive whole number"):
        make_loader(dataset, 0)
    with pytest.raises(LoaderSettingsError, match="worker count -1 is not a whole number of 0 or more"):
        make_loader(dataset, 32, -1)
    with pytest.raises(storage.StoreNotFoundError, match="no image store at"):
        StoreDataset("lmdb", tmp_path / "nothing here")
    with pytest.raises(storage.UnknownBackendError, match="registered backends are"):
        StoreDataset("tiff", stores["lmdb"])
    with pytest.raises(LoaderSettingsError, match="rank 2 of world_size 2"):
        StoreIterableDataset("lmdb", stores["lmdb"], rank=2, world_size=2)
    with pytest.raises(TypeError, match="not callable"):
        StoreDataset("lmdb", stores["lmdb"], transform="resize")


def broken_transform(image: torch.Tensor) -> torch.Tensor:
    if image[0, 0, 0] >= 0:
        raise ValueError("cannot resize to -1 pixels")
    return image


def test_a_batch_of_images_of_several_sizes_is_refused_with_what_to_do(tmp_path):
    images = [np.full((8, 8, 3), 1, np.uint8), np.full((6, 10, 3), 2, np.uint8), np.full((8, 8, 3), 3, np.uint8)]
    with storage.open_store("hdf5", tmp_path / "mixed", "w") as store:
        store.write_batch(images, [0, 1, 2])
    dataset = StoreDataset("hdf5", tmp_path / "mixed")
    with pytest.raises(storage.ImageShapeError, match="cannot stack images of 2 sizes.*transform.*batch_size=1"):
        next(iter(make_loader(dataset, batch_size=3, num_workers=0)))
    singles = [image for image, _ in make_loader(dataset, batch_size=1, num_workers=0)]
    assert sorted(tuple(image.shape) for image in singles) == [(1, 6, 10, 3), (1, 8, 8, 3), (1, 8, 8, 3)]


def test_a_peer_datasets_batch_of_several_sizes_is_refused_with_what_to_do(tmp_path):
    """LitData orders and collates its own dict samples (collate_samples): np.stack's error named no way out."""
    pytest.importorskip("litdata")
    images = [np.full((8, 8, 3), 1, np.uint8), np.full((6, 10, 3), 2, np.uint8), np.full((8, 8, 3), 3, np.uint8)]
    with storage.open_store("litdata", tmp_path / "mixed", "w") as store:
        store.write_batch(images, [0, 1, 2])
    with pytest.raises(storage.ImageShapeError, match="cannot stack images of 2 sizes.*transform.*batch_size=1"):
        next(iter(make_store_loader("litdata", tmp_path / "mixed", 3, 0, seed=1)))
    singles = [batch[0] for batch in make_store_loader("litdata", tmp_path / "mixed", 1, 0, seed=1)]
    assert sorted(tuple(image.shape) for image in singles) == [(1, 6, 10, 3), (1, 8, 8, 3), (1, 8, 8, 3)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_transform_that_raises_names_itself_and_the_image(stores, workers):
    dataset = StoreDataset("lmdb", stores["lmdb"], transform=broken_transform)
    loader = make_loader(dataset, BATCH, workers, seed=0, multiprocessing_context="fork" if workers else None)
    with pytest.raises(TransformError) as caught:
        next(iter(loader))
    message = str(caught.value)
    assert "the transform broken_transform raised ValueError: cannot resize to -1 pixels on image" in message
    assert str(stores["lmdb"]) in message


def dying_transform(image: torch.Tensor) -> torch.Tensor:
    if torch.utils.data.get_worker_info() is not None:
        os._exit(3)  # a worker killed midway (out of memory, a crash in a library)
    return image


def stuck_transform(image: torch.Tensor) -> torch.Tensor:
    if torch.utils.data.get_worker_info() is not None:
        time.sleep(4)  # well past the loader's timeout; the loader then waits for it to end
    return image


def test_a_worker_that_dies_is_an_error_not_a_hang(stores):
    dataset = StoreDataset("lmdb", stores["lmdb"], transform=dying_transform)
    loader = make_loader(dataset, BATCH, 2, seed=0, multiprocessing_context="fork", timeout=20)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="exited unexpectedly|killed"):
        list(loader)
    assert time.perf_counter() - started < 20


def test_a_stuck_worker_times_out(stores):
    dataset = StoreDataset("lmdb", stores["lmdb"], transform=stuck_transform)
    loader = make_loader(dataset, BATCH, 1, seed=0, multiprocessing_context="fork", timeout=1.5)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="timed out after 1.5 seconds"):
        list(loader)
    assert time.perf_counter() - started < 15


def test_importing_the_library_does_not_import_torch(tmp_path):
    """torch comes in with storage.torch, which the engine imports only when it measures the loader.

    (Backends built on a PyTorch library, LitData's and Streaming's, import torch when they
    are loaded; a run of other backends loads neither them nor torch.)
    """
    code = (
        "import sys, storage, storage.bench, storage.cli, storage.bench.engine\n"
        "assert 'torch' not in sys.modules, 'import storage imported torch'\n"
        "from storage.bench import Experiment, run_experiment\n"
        "run_experiment(Experiment(backends=['lmdb'], counts=[20], repeats=1, source='sample', "
        f"work_dir={str(tmp_path / 'runs')!r}))\n"
        "assert 'storage.bench.operations.loader' not in sys.modules, 'a run without the loader loaded it'\n"
        "assert 'torch' not in sys.modules, 'a run without the loader imported torch'\n"
        "import storage.torch\n"
        "assert 'torch' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_interface_and_the_formats_know_nothing_of_storage_torch():
    """Torch support lives in storage.torch alone: it looks a format's hooks up, nobody imports it for that."""
    code = (
        "import sys, storage.base\n"
        "assert not hasattr(storage.base.ImageStore, 'torch_dataset'), 'ImageStore has a torch hook'\n"
        "assert not hasattr(storage.base.ImageStore, 'torch_loader'), 'ImageStore has a torch hook'\n"
        "import storage.formats.mds_store, storage.formats.litdata_store, storage.formats.lance_store\n"
        "assert 'storage.torch' not in sys.modules, 'storage.base or a format imported storage.torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def registered(store_class: type):
    storage.register_backend(store_class)
    try:
        yield store_class.info.name
    finally:
        storage.unregister_backend(store_class.info.name)


def test_a_format_hands_the_loader_its_own_map_style_dataset(stores, cifar):
    images, labels = cifar

    class OwnDatasetStore(storage.NpyStore):
        info = dataclasses.replace(storage.backend_info("npy"), name="npy-own-dataset")

        @classmethod
        def torch_dataset(cls, path, transform=None):
            with storage.open_store("npy", path) as store:
                return MemoryDataset(*store.read_all())

    with registered(OwnDatasetStore) as backend:
        dataset = store_dataset(backend, stores["npy"])
        assert isinstance(dataset, MemoryDataset) and len(dataset) == COUNT
        loader = make_store_loader(backend, stores["npy"], BATCH, 0, seed=7)
    assert isinstance(loader.dataset, MemoryDataset) and isinstance(loader.sampler, RecordingRandomSampler)
    check_epoch("npy", loader, cifar)
    assert isinstance(store_dataset("npy", stores["npy"]), StoreDataset)  # a format without the hook


class _OwnOrder(torch.utils.data.IterableDataset):
    """A library's dataset that shuffles itself and yields dict samples, as LitData's and Streaming's do."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
        self.images, self.labels, self.seed = images, labels, seed

    def __iter__(self):
        for index in np.random.default_rng(self.seed).permutation(len(self.labels)).tolist():
            yield {"image": self.images[index], "label": self.labels[index], "id": index}


def test_a_format_whose_dataset_shuffles_itself_gets_its_seed_and_batches_with_ids(stores, cifar):
    images, labels = cifar
    asked = []

    class OwnOrderStore(storage.NpyStore):
        info = dataclasses.replace(storage.backend_info("npy"), name="npy-own-order")
        torch_shuffles = True

        @classmethod
        def torch_dataset(cls, path, transform=None, *, seed=None, batch_size=None):
            asked.append((seed, batch_size))
            with storage.open_store("npy", path) as store:
                return _OwnOrder(*store.read_all(), seed=5 if seed is None else seed)

    with registered(OwnOrderStore) as backend:
        loader = make_store_loader(backend, stores["npy"], BATCH, 0, seed=3, timeout=120)
        assert asked == [(3, BATCH)] and loader.timeout == 0 and loader.batch_size == BATCH
        seen = []
        for batch_images, batch_labels, batch_ids in loader:
            np.testing.assert_array_equal(batch_images.numpy(), images[batch_ids.numpy()])
            np.testing.assert_array_equal(batch_labels.numpy(), labels[batch_ids.numpy()])
            seen.extend(batch_ids.tolist())
        assert sorted(seen) == list(range(COUNT)) and seen != sorted(seen)
        again = [int(i) for _, _, ids in make_store_loader(backend, stores["npy"], BATCH, seed=3) for i in ids]
        assert again == seen  # the seed is the format's dataset's


def test_a_format_whose_dataset_yields_batches_sets_its_loader_and_workers(stores):
    class Loader(DataLoader):
        """The DataLoader class a format's users load with."""

    class OwnBatchesStore(storage.NpyStore):
        info = dataclasses.replace(storage.backend_info("npy"), name="npy-own-batches")
        torch_shuffles = torch_batches = True
        torch_loader_class = Loader
        fork_safe = False

        @classmethod
        def torch_dataset(cls, path, transform=None, *, seed=None, batch_size=None):
            return _OwnOrder(np.zeros((1, 2, 2, 3), np.uint8), np.zeros(1, np.int64), seed=seed)

        @classmethod
        def torch_worker_init(cls, seed):
            return functools.partial(print, f"worker of seed {seed}")

    with registered(OwnBatchesStore) as backend:
        loader = make_store_loader(backend, stores["npy"], BATCH, 2, seed=11, timeout=30)
    assert type(loader) is Loader and loader.batch_size is None and loader.num_workers == 2
    assert loader.timeout == 30 and loader.worker_init_fn.args == ("worker of seed 11",)
    assert loader.multiprocessing_context.get_start_method() == "spawn"  # not fork-safe
