"""The loader as training runs it: decoders, transforms, persistent workers, one shuffle for all, the ceilings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import storage
from storage.bench import Experiment, InvalidExperimentError, Progress, ResultsDB, run_experiment
from storage.bench.experiment import CEILING_BACKEND, DECODE_CEILING_BACKEND, steps
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10, load_source
from storage.pipeline import Pipeline, PipelineError, cuda_unavailable_reason, in_shape
from storage.training import (
    FileSource,
    MemorySource,
    PipelineDataset,
    StoreSource,
    own_order_loader,
    shuffle_loader,
    training_loader,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTOS = REPO_ROOT / "data" / "imagenet-sample"


@pytest.fixture(scope="module")
def photos():
    return load_source(str(PHOTOS))


@pytest.fixture(scope="module")
def photo_bytes(photos):
    return [Path(photos.images.file_of(i)).read_bytes() for i in range(len(photos.labels))]


@pytest.fixture(scope="module")
def cifar():
    images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
    return images[:600], labels[:600]


# -- decoders and transforms -----------------------------------------------------------


def test_the_three_decoders_give_identical_pixels_on_the_sample_photos(photo_bytes):
    decoders = {name: Pipeline(decoder=name) for name in ("pillow", "simplejpeg", "torchvision")}
    grayscale = 0
    for data in photo_bytes:
        decoded = {name: in_shape(pipeline.decode(data), None) for name, pipeline in decoders.items()}
        pillow = decoded["pillow"]
        grayscale += pillow.ndim == 2
        rgb = np.repeat(pillow[:, :, np.newaxis], 3, axis=2) if pillow.ndim == 2 else pillow
        np.testing.assert_array_equal(decoded["simplejpeg"], rgb)
        np.testing.assert_array_equal(decoded["torchvision"], rgb)
    assert len(photo_bytes) == 100 and grayscale > 0  # the sample has grayscale JPEGs, decoded alike


@pytest.mark.parametrize("transform", ["train", "val"])
def test_transforms_give_224_square_uint8_tensors_from_photos_of_any_size(photo_bytes, transform):
    pipeline = Pipeline(transform, "simplejpeg")
    batch, decode_seconds, transform_seconds = pipeline.batch(photo_bytes[:12])
    assert batch.dtype == torch.uint8 and tuple(batch.shape) == (12, 3, 224, 224)
    assert decode_seconds > 0 and transform_seconds > 0
    again, _, _ = pipeline.batch(photo_bytes[:12])
    if transform == "val":
        assert torch.equal(batch, again)  # resize and centre crop: the same every time
    else:
        assert not torch.equal(batch, again)  # random crops and flips


def test_bad_pipeline_settings_are_named():
    with pytest.raises(PipelineError, match="unknown transform 'flip'"):
        Pipeline("flip")
    with pytest.raises(PipelineError, match="unknown decoder 'turbo'"):
        Pipeline(decoder="turbo")
    with pytest.raises(PipelineError, match="decoder 'torchvision'"):
        Pipeline(decoder="pillow", device="cuda")


@pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=f"no CUDA decoding here: {cuda_unavailable_reason()}")
def test_torchvision_decodes_a_batch_on_the_cuda_device(photo_bytes):
    pipeline = Pipeline("val", "torchvision", device="cuda")
    on_device, decode_seconds, _ = pipeline.batch_on_device(photo_bytes[:16])
    assert on_device.is_cuda and tuple(on_device.shape) == (16, 3, 224, 224) and decode_seconds > 0
    on_cpu, _, _ = Pipeline("val", "torchvision").batch(photo_bytes[:16])
    difference = (on_device.cpu().int() - on_cpu.int()).abs().float().mean()
    assert difference < 2.0  # nvJPEG's IDCT may differ from libjpeg-turbo's by a level here and there


# -- persistent workers and one shuffle for every format -----------------------------------


def record_pid(folder: str, worker_id: int) -> None:
    Path(folder, f"worker-{worker_id}-{os.getpid()}").touch()


def test_workers_stay_alive_across_epochs(tmp_path, photos):
    with storage.open_store("lmdb", tmp_path / "s", "w", encoding="source") as store:
        store.write_batch(photos.images, photos.labels)
    dataset = PipelineDataset(StoreSource("lmdb", tmp_path / "s"), Pipeline("train", "simplejpeg"))
    import functools

    pids = tmp_path / "pids"
    pids.mkdir()
    loader = training_loader(dataset, 25, 2, seed=1, worker_init_fn=functools.partial(record_pid, str(pids)))
    epochs = []
    for _ in range(3):
        seen, ids = set(), []
        for images, labels, batch_ids, stats in loader:
            assert tuple(images.shape) == (len(batch_ids), 3, 224, 224)
            np.testing.assert_array_equal(labels.numpy(), photos.labels[batch_ids.numpy()])
            seen.add(int(stats[3]))
            ids.extend(batch_ids.tolist())
        assert sorted(ids) == list(range(100))
        epochs.append(seen)
    assert len(list(pids.iterdir())) == 2  # worker_init ran once per worker, not once per epoch
    assert epochs[0] == epochs[1] == epochs[2] == {int(name.name.split("-")[2]) for name in pids.iterdir()}
    assert os.getpid() not in epochs[0]


def consecutive_share(ids: list[int]) -> float:
    """The share of neighbours in an epoch's order that are consecutive ids (a full shuffle: about 1/N)."""
    order = np.asarray(ids)
    return float(np.mean(np.diff(order) == 1))


def epoch_ids(loader) -> list[int]:
    return [i for batch in loader for i in batch[2].tolist()]


@pytest.mark.parametrize("backend", ["lmdb", "npy", "litdata", "mds", "lance"])
def test_every_format_gets_the_same_full_per_sample_shuffle(backend, tmp_path, cifar):
    images, labels = cifar
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
    loader, path = shuffle_loader(backend, tmp_path / "s", 64, 0, Pipeline(), seed=5)
    first, second = epoch_ids(loader), epoch_ids(loader)
    assert sorted(first) == list(range(600)) and first != second  # a new order every epoch
    assert consecutive_share(first) < 0.02, f"{backend}: the epoch came in blocks of consecutive ids"
    assert "RandomSampler" in path
    again, _ = shuffle_loader(backend, tmp_path / "s", 64, 0, Pipeline(), seed=5)
    assert epoch_ids(again) == first  # the seed fixes the orders: every format of a run reads the same ones


def test_lances_own_order_keeps_the_rows_of_a_batch_consecutive_and_says_so(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("lance", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
    loader, path = own_order_loader("lance", tmp_path / "s", 64, 0, Pipeline(), seed=5)
    ids = epoch_ids(loader)
    assert sorted(ids) == list(range(600))
    assert consecutive_share(ids) > 0.8 and "ShardedBatchSampler" in path and "consecutive" in path


def test_a_peers_own_order_decodes_its_kept_bytes_in_the_collate_step(tmp_path, photos):
    with storage.open_store("litdata", tmp_path / "s", "w", encoding="source") as store:
        store.write_batch(photos.images, photos.labels)
    loader, path = own_order_loader("litdata", tmp_path / "s", 20, 2, Pipeline("val", "simplejpeg"), seed=1)
    seen = []
    for images, labels, ids, stats in loader:
        assert tuple(images.shape) == (len(ids), 3, 224, 224)
        np.testing.assert_array_equal(labels.numpy(), photos.labels[ids.numpy()])
        assert np.isnan(float(stats[0])) and float(stats[1]) > 0  # its own iterator reads: not timed apart
        seen.extend(ids.tolist())
    assert sorted(seen) == list(range(100)) and path.startswith("litdata.StreamingDataset in StreamingDataLoader")


@pytest.mark.parametrize("workers", [0, 2])
def test_parquets_own_order_reads_whole_row_groups_through_a_shuffle_buffer(tmp_path, cifar, workers, monkeypatch):
    """Every id once an epoch, a new order each epoch, pixels as stored; each row group read once, not per image."""
    from storage.base import ImageStore

    images, labels = cifar
    with storage.open_store("parquet", tmp_path / "s", "w", row_group_rows=50) as store:
        store.write_batch(images, labels)
    reads = []
    read_batch = ImageStore.read_batch
    monkeypatch.setattr(
        ImageStore, "read_batch", lambda self, ids, *a, **k: reads.append(len(ids)) or read_batch(self, ids, *a, **k)
    )
    loader, path = own_order_loader("parquet", tmp_path / "s", 64, workers, Pipeline(), seed=5)
    orders = []
    for _ in range(2):
        order = []
        for batch, batch_labels, ids, _ in loader:
            np.testing.assert_array_equal(batch.numpy(), images[ids.numpy()])
            np.testing.assert_array_equal(batch_labels.numpy(), labels[ids.numpy()])
            order.extend(ids.tolist())
        orders.append(order)
    assert all(sorted(order) == list(range(600)) for order in orders) and orders[0] != orders[1]
    assert consecutive_share(orders[0]) < 0.5 and "row groups" in path and "shuffle buffer" in path
    if not workers:  # read in this process: one read of 50 images per row group and epoch
        assert reads == [50] * 24


def test_memory_and_file_sources_give_the_same_photos(tmp_path, photos, photo_bytes):
    order = np.arange(150) % 100
    labels = photos.labels[order]
    files = FileSource([photos.images.file_of(i) for i in range(100)], order)
    pixels = MemorySource([in_shape(Pipeline().decode(data), None) for data in photo_bytes], order)
    batches = {}
    for name, source in (("files", files), ("memory", pixels)):
        dataset = PipelineDataset(source, Pipeline("val", "pillow"), labels=labels)
        batches[name] = dataset.__getitems__([3, 149, 0, 103])
    assert torch.equal(batches["files"][0], batches["memory"][0])
    np.testing.assert_array_equal(batches["files"][1].numpy(), labels[[3, 149, 0, 103]])


# -- the engine ------------------------------------------------------------------------


def photo_experiment(tmp_path: Path, **changes) -> Experiment:
    values = dict(
        backends=["lmdb"],
        counts=[120],
        operations=["loader"],
        workers=[0],
        batch_size=40,
        repeats=2,
        source=str(PHOTOS),
        encoding="source",
        shorter_side=64,
        transform="val",
        decoder="simplejpeg",
        work_dir=str(tmp_path / "runs"),
        preview_ids=0,
    )
    values.update(changes)
    return Experiment(**values)


def test_the_decode_ceiling_is_measured_beside_kept_bytes_stores_and_recorded(tmp_path):
    plan = photo_experiment(tmp_path, keep=True)
    with ResultsDB(tmp_path / "r.sqlite") as db:
        summary = run_experiment(plan, db)
        stored = {(m.backend, m.order): m for m in db.measurements(summary.run_id)}
    assert summary.status == "finished", summary.error
    assert [(m.backend, m.count, m.operation, m.cache) for m in summary.measurements] == steps(plan, photos=True)
    decode, memory, lmdb = (stored[(name, "shuffle")] for name in (DECODE_CEILING_BACKEND, CEILING_BACKEND, "lmdb"))
    assert "encoded files themselves" in decode.loader_path and "pixels held in memory" in memory.loader_path
    assert lmdb.ceiling == "decode" and lmdb.ceiling_images_per_second == decode.images_per_second
    assert lmdb.fraction_of_ceiling == pytest.approx(lmdb.images_per_second / decode.images_per_second)
    assert decode.ceiling is None and decode.fraction_of_ceiling is None
    for m in (decode, memory, lmdb):
        assert m.verified and m.error is None and m.transform == "val" and m.decoder == "simplejpeg"
        assert len(m.samples) == 2 and m.first_epoch_seconds > 0  # the first epoch apart, then the repeats
        assert m.transform_seconds_per_batch > 0 and m.read_seconds_per_batch > 0
        assert m.per_worker and m.per_worker[0]["images"] == 2 * 120 and m.images_per_second_per_worker > 0
        assert m.load_average is not None and m.other_cpu_seconds >= 0
    assert memory.decode_seconds_per_batch == 0 and lmdb.decode_seconds_per_batch > 0
    # the ceiling's files are the bytes the store keeps (the resized photos, encoded once each)
    written = sorted((Path(plan.work_dir) / summary.run_id / DECODE_CEILING_BACKEND / "120").iterdir())
    with storage.open_store("lmdb", Path(plan.work_dir) / summary.run_id / "lmdb" / "120" / "store") as store:
        kept, _, _ = store.read_encoded(range(100))
    assert [path.read_bytes() for path in written] == kept


def test_the_loader_refuses_photos_of_several_sizes_without_a_transform(tmp_path):
    with pytest.raises(InvalidExperimentError, match="give --transform train or val"):
        run_experiment(photo_experiment(tmp_path, transform="none"))
    assert not (tmp_path / "runs").exists()


def test_reads_and_loaders_take_turns_across_backends(tmp_path):
    plan = Experiment(
        backends=["npy", "hdf5"],
        counts=[2000],
        operations=["read_all", "loader"],
        workers=[0],
        repeats=2,
        source="sample",
        work_dir=str(tmp_path / "runs"),
        preview_ids=0,
    )
    lines = []

    def note(event) -> None:  # a slow step repeats its line every 0.25 s (Run.tick): each line once
        if isinstance(event, Progress) and (not lines or lines[-1] != event.message):
            lines.append(event.message)

    summary = run_experiment(plan, on_event=note)
    assert summary.status == "finished", summary.error
    reads = [line.split(" · ")[0] for line in lines if "read_all" in line and "repeat" in line]
    assert reads == ["npy", "hdf5", "npy", "hdf5"]  # A B A B, not A A B B
    epochs = [line.split(" · ")[0] for line in lines if "loader" in line and "epoch" in line]
    assert epochs == ["in-memory", "npy", "hdf5"] * 3  # first epochs, then two timed rounds
    for m in summary.measurements:
        assert m.load_average is not None and m.other_cpu_seconds is not None
