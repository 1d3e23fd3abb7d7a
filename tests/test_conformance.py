"""The conformance suite: every registered backend must pass every test here.

It is parametrized over ``storage.backends()`` at collection time, so a backend is tested
the day it is registered, with no new test code. Where a backend declares that it lacks a
capability (lossy, no variable sizes, no appends, fewer channels), the matching test
checks the clear error instead, or skips visibly with the reason.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storage
from storage.bench.verify import PSNR_IMAGE_FLOOR, PSNR_MEAN_FLOOR, psnr
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10

BACKENDS = storage.backends()
REPO_ROOT = Path(__file__).resolve().parents[1]
MIN_LOSSY_PSNR = PSNR_MEAN_FLOOR  # mean over the images compared, as the engine verifies
MIN_LOSSY_IMAGE_PSNR = PSNR_IMAGE_FLOOR  # the worst single image


@pytest.fixture(scope="module")
def cifar() -> tuple[np.ndarray, np.ndarray]:
    """Real CIFAR-10 images: lossy codecs behave on photos, not on noise."""
    images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
    return images[:200], labels[:200]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def info(backend):
    return storage.backend_info(backend)


def assert_same_image(info, expected: np.ndarray, actual: np.ndarray) -> None:
    """Bit-exact for lossless backends; same shape and a PSNR the engine accepts for lossy ones."""
    assert actual.dtype == np.uint8
    assert actual.shape == expected.shape
    if info.lossless:
        np.testing.assert_array_equal(actual, expected)
    else:
        assert psnr(expected, actual) >= MIN_LOSSY_IMAGE_PSNR


def assert_same_images(info, expected, actual) -> None:
    """Each image as above; for lossy backends also a mean PSNR of at least 30 dB."""
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert_same_image(info, want, got)
    if not info.lossless and len(expected):
        assert np.mean([psnr(want, got) for want, got in zip(expected, actual)]) >= MIN_LOSSY_PSNR


def write_store(backend: str, path: Path, images, labels) -> np.ndarray:
    with storage.open_store(backend, path, "w") as store:
        return store.write_batch(images, labels)


def mixed_size_images(cifar_images: np.ndarray) -> list[np.ndarray]:
    """Real image crops of several sizes and channel counts."""
    crops = [(32, 32), (17, 23), (8, 31), (29, 5), (1, 1), (32, 12)]
    return [np.ascontiguousarray(cifar_images[i][:h, :w]) for i, (h, w) in enumerate(crops)]


def to_gray(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.uint16).sum(axis=-1) // 3).astype(np.uint8)


def with_alpha(images: np.ndarray) -> np.ndarray:
    alpha = np.broadcast_to(np.linspace(40, 255, images.shape[2], dtype=np.uint8), images.shape[:3])[..., None]
    return np.ascontiguousarray(np.concatenate([images, alpha], axis=-1))


# -- what a backend says about itself ----------------------------------------------------


def test_backend_info_describes_the_backend(backend, info):
    assert info.name == backend
    assert info.label and info.label.strip() == info.label
    assert info.description and "\n" not in info.description and len(info.description) <= 160
    for flag in ("lossless", "random_access", "variable_shapes", "appendable", "compressed", "one_file_per_image"):
        assert isinstance(getattr(info, flag), bool), flag
    assert set(info.channels) <= {1, 3, 4} and 3 in info.channels


def test_store_is_a_context_manager_that_closes(backend, tmp_path, cifar):
    images, labels = cifar
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        store.write_batch(images[:3], labels[:3])
    with pytest.raises(ValueError, match="closed"):
        store.read_one(0)


# -- round trips ---------------------------------------------------------------------------


def test_round_trip_of_many_uniform_images(backend, info, tmp_path, cifar):
    images, labels = cifar
    ids = write_store(backend, tmp_path / "s", images, labels)
    np.testing.assert_array_equal(ids, np.arange(len(images)))
    with storage.open_store(backend, tmp_path / "s") as store:
        assert len(store) == len(images)
        read, read_labels = store.read_all()
        assert isinstance(read, np.ndarray) and read.shape == images.shape
        assert_same_images(info, images, read)
        np.testing.assert_array_equal(read_labels, labels)
        assert read_labels.dtype == np.int64


def test_round_trip_of_one_image(backend, info, tmp_path, cifar):
    images, _ = cifar
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        assert store.write_one(images[7], 3) == 0
        assert store.write_one(images[8], 9) == 1
        assert len(store) == 2
    with storage.open_store(backend, tmp_path / "s") as store:
        image, label = store.read_one(1)
        assert label == 9 and isinstance(label, int)
        assert_same_image(info, images[8], image)


def test_write_one_is_not_lost_without_an_explicit_flush(backend, info, tmp_path, cifar):
    images, _ = cifar
    store = storage.open_store(backend, tmp_path / "s", "w")
    store.write_one(images[0], 1)
    store.close()
    with storage.open_store(backend, tmp_path / "s") as reopened:
        assert len(reopened) == 1
        assert_same_image(info, images[0], reopened.read_one(0)[0])


def test_write_one_images_read_back_before_they_are_flushed(backend, info, tmp_path, cifar):
    """Ids returned by write_one read back at once, even while a write-behind group holds them."""
    images, labels = cifar
    reused = np.empty_like(images[0])  # one buffer for every call, as a loader would
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        store.write_batch(images[:5], labels[:5])
        for image_id in range(5, 25):
            reused[...] = images[image_id]
            assert store.write_one(reused, labels[image_id]) == image_id
        assert len(store) == 25
        image, label = store.read_one(24)
        assert label == labels[24]
        assert_same_image(info, images[24], image)
        if image.flags.writeable:
            image[...] = 0  # the caller's copy: changing it changes nothing stored
        assert_same_image(info, images[24], store.read_one(24)[0])
        assert_same_image(info, images[6], store.read_one(6)[0])
        some, some_labels = store.read_batch([24, 3, 10])
        assert_same_images(info, images[[24, 3, 10]], some)
        assert list(some_labels) == list(labels[[24, 3, 10]])
        assert store.write_one(images[25], labels[25]) == 25  # still takes images after a read
        everything, all_labels = store.read_all()
        assert_same_images(info, images[:26], everything)
        np.testing.assert_array_equal(all_labels, labels[:26])
    with storage.open_store(backend, tmp_path / "s") as store:
        assert len(store) == 26
        assert_same_images(info, images[:26], store.read_all()[0])


def test_write_one_over_several_groups_survives_close(backend, info, tmp_path, cifar):
    images, labels = cifar
    store = storage.open_store(backend, tmp_path / "s", "w")
    store.write_behind_images = 8  # groups of 8 where the backend groups write_one calls
    for image_id in range(30):
        store.write_one(images[image_id], labels[image_id])
    store.close()
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_all()
        assert_same_images(info, images[:30], read)
        np.testing.assert_array_equal(read_labels, labels[:30])


def test_a_failed_group_write_keeps_the_store_and_the_group(backend, info, tmp_path, cifar, monkeypatch):
    """A group is written all-or-nothing: if its write fails, nothing of it is half-stored."""
    if not storage.store_class(backend).write_behind_images:
        pytest.skip(f"{backend} does not use the write-behind group")
    images, labels = cifar
    store_class = storage.store_class(backend)
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        store.write_behind_images = 8
        for image_id in range(8):
            store.write_one(images[image_id], labels[image_id])  # the 8th writes the first group
        real_commit = store_class._commit

        def failing_commit(self, count):
            raise OSError("no space left on device (simulated)")

        monkeypatch.setattr(store_class, "_commit", failing_commit)
        for image_id in range(8, 15):
            store.write_one(images[image_id], labels[image_id])
        with pytest.raises(OSError, match="simulated"):
            store.write_one(images[15], labels[15])
        assert len(store) == 16  # the group is still in memory
        assert json.loads((tmp_path / "s" / "store.json").read_text())["count"] == 8
        monkeypatch.setattr(store_class, "_commit", real_commit)
        store.flush()
        assert json.loads((tmp_path / "s" / "store.json").read_text())["count"] == 16
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_all()
        assert_same_images(info, images[:16], read)
        np.testing.assert_array_equal(read_labels, labels[:16])


def test_single_image_batch(backend, info, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:1], labels[:1])
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_all()
        assert read.shape == (1, 32, 32, 3) and list(read_labels) == [labels[0]]


@pytest.mark.parametrize("layout", ["(N,H,W)", "(N,H,W,1)"])
def test_round_trip_of_grayscale(backend, info, tmp_path, cifar, layout):
    gray = to_gray(cifar[0][:20])
    if layout == "(N,H,W,1)":
        gray = gray[..., None]
    write_store(backend, tmp_path / "s", gray, range(20))
    with storage.open_store(backend, tmp_path / "s") as store:
        read, _ = store.read_all()
        assert read.shape == gray.shape
        assert_same_images(info, gray, read)
        assert store.read_one(5)[0].shape == gray.shape[1:]


def test_round_trip_of_rgba(backend, info, tmp_path, cifar):
    rgba = with_alpha(cifar[0][:20])
    if 4 not in info.channels:
        with pytest.raises(storage.ImageShapeError, match="4 channel"):
            write_store(backend, tmp_path / "s", rgba, range(20))
        return
    write_store(backend, tmp_path / "s", rgba, range(20))
    with storage.open_store(backend, tmp_path / "s") as store:
        read, _ = store.read_all()
        assert read.shape == rgba.shape
        assert_same_images(info, rgba, read)


def test_round_trip_of_mixed_sizes(backend, info, tmp_path, cifar):
    images = mixed_size_images(cifar[0])
    images.append(to_gray(cifar[0][50:51])[0][:9, :13])
    labels = list(range(len(images)))
    if not info.variable_shapes:
        with pytest.raises(storage.ImageShapeError, match="size"):
            write_store(backend, tmp_path / "s", images, labels)
        return
    write_store(backend, tmp_path / "s", images, labels)
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_all()
        assert isinstance(read, list)
        assert [image.shape for image in read] == [image.shape for image in images]
        assert_same_images(info, images, read)
        assert list(read_labels) == labels
        order = [6, 0, 3, 3, 1]
        some, some_labels = store.read_batch(order)
        assert_same_images(info, [images[i] for i in order], some)
        assert list(some_labels) == order


def test_write_one_of_mixed_sizes(backend, info, tmp_path, cifar):
    images = mixed_size_images(cifar[0])
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        store.write_one(images[1], 1)
        if not info.variable_shapes:
            with pytest.raises(storage.ImageShapeError):
                store.write_one(images[0], 0)
            assert len(store) == 1
            store.close()
            with storage.open_store(backend, tmp_path / "s") as reopened:  # the image before the refusal is kept
                assert len(reopened) == 1
                assert_same_image(info, images[1], reopened.read_one(0)[0])
            return
        for label, image in enumerate(images):
            store.write_one(image, label)
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_all()
        assert_same_images(info, [images[1], *images], read)
        assert list(read_labels) == [1, *range(len(images))]


def test_uniform_subset_of_a_mixed_store_reads_as_one_array(backend, info, tmp_path, cifar):
    if not info.variable_shapes:
        pytest.skip(f"{backend} stores one size per store")
    images = [cifar[0][0], cifar[0][1][:10, :10], cifar[0][2]]
    write_store(backend, tmp_path / "s", images, [0, 1, 2])
    with storage.open_store(backend, tmp_path / "s") as store:
        read, _ = store.read_batch([0, 2])
        assert isinstance(read, np.ndarray) and read.shape == (2, 32, 32, 3)


def test_sequence_of_uniform_arrays_is_accepted(backend, info, tmp_path, cifar):
    images, labels = cifar
    as_list = list(images[:10])
    write_store(backend, tmp_path / "s", as_list, list(labels[:10]))
    with storage.open_store(backend, tmp_path / "s") as store:
        read, _ = store.read_all()
        assert isinstance(read, np.ndarray)
        assert_same_images(info, images[:10], read)


def test_append_continues_ids_and_keeps_earlier_images(backend, info, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:30], labels[:30])
    if not info.appendable:
        with pytest.raises(storage.ModeError, match="append"):
            storage.open_store(backend, tmp_path / "s", "a")
        return
    with storage.open_store(backend, tmp_path / "s", "a") as store:
        assert len(store) == 30
        ids = store.write_batch(images[30:50], labels[30:50])
        np.testing.assert_array_equal(ids, np.arange(30, 50))
        assert store.write_one(images[50], labels[50]) == 50
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_all()
        assert_same_images(info, images[:51], read)
        np.testing.assert_array_equal(read_labels, labels[:51])


def test_append_mode_creates_a_missing_store(backend, info, tmp_path, cifar):
    if not info.appendable:
        pytest.skip(f"{backend} cannot append")
    with storage.open_store(backend, tmp_path / "new", "a") as store:
        store.write_batch(cifar[0][:4], cifar[1][:4])
    with storage.open_store(backend, tmp_path / "new") as store:
        assert len(store) == 4


def test_write_mode_replaces_an_existing_store(backend, info, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:40], labels[:40])
    write_store(backend, tmp_path / "s", images[100:105], labels[100:105])
    with storage.open_store(backend, tmp_path / "s") as store:
        assert len(store) == 5
        assert_same_images(info, images[100:105], store.read_all()[0])


def test_random_order_reads(backend, info, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images, labels)
    order = np.random.default_rng(7).permutation(len(images))
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_batch(order)
        assert_same_images(info, images[order], read)
        np.testing.assert_array_equal(read_labels, labels[order])
        repeated, _ = store.read_batch([5, 5, 0, 199, 5])
        assert_same_images(info, images[[5, 5, 0, 199, 5]], repeated)
        for image_id in order[:25].tolist():
            image, label = store.read_one(image_id)
            assert label == labels[image_id]
            assert_same_image(info, images[image_id], image)
        assert store.read_one(np.int64(3))[1] == labels[3]


def test_read_batch_fills_a_given_buffer(backend, info, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:50], labels[:50])
    out = np.zeros((50, 32, 32, 3), dtype=np.uint8)
    with storage.open_store(backend, tmp_path / "s") as store:
        read, _ = store.read_all(out=out)
        assert read is out
        assert_same_images(info, images[:50], out)
        with pytest.raises(storage.ImageShapeError, match="out has shape"):
            store.read_all(out=np.zeros((49, 32, 32, 3), dtype=np.uint8))


def test_empty_read_batch(backend, tmp_path, cifar):
    write_store(backend, tmp_path / "s", cifar[0][:3], cifar[1][:3])
    with storage.open_store(backend, tmp_path / "s") as store:
        read, read_labels = store.read_batch([])
        assert len(read) == 0 and len(read_labels) == 0
        assert read.shape == (0, 32, 32, 3) and read.dtype == np.uint8  # stacks with other batches of the store
        assert read_labels.dtype == np.int64


def test_iteration_is_in_id_order(backend, info, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:25], labels[:25])
    with storage.open_store(backend, tmp_path / "s") as store:
        pairs = list(store)
    assert [label for _, label in pairs] == labels[:25].tolist()
    assert_same_images(info, images[:25], [image for image, _ in pairs])


def test_reopening_read_only_refuses_writes(backend, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:10], labels[:10])
    with storage.open_store(backend, tmp_path / "s", "r") as store:
        assert len(store) == 10
        with pytest.raises(storage.ReadOnlyStoreError, match="read-only") as caught:
            store.write_batch(images[:2], labels[:2])
        assert isinstance(caught.value, PermissionError)
        with pytest.raises(storage.ReadOnlyStoreError):
            store.write_one(images[0], 1)
    with storage.open_store(backend, tmp_path / "s") as store:
        assert len(store) == 10


def test_reading_in_a_forked_child(backend, info, tmp_path, cifar):
    """A store opened (and used) before fork must still read correctly in the child."""
    if not storage.store_class(backend).fork_safe:
        pytest.skip(f"{backend} must not be forked once used (fork_safe False): see the spawned-child test")
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:60], labels[:60])
    with storage.open_store(backend, tmp_path / "s") as store:
        store.read_one(0)
        store.read_batch([1, 2, 3])
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report through the pipe, never return into pytest
            ok = False
            try:
                read, read_labels = store.read_batch(np.arange(59, -1, -1))
                ids = [3, 40, 59]
                ok = bool(np.array_equal(read_labels, labels[:60][::-1])) and all(
                    store.read_one(i)[1] == labels[i] for i in ids
                )
                if info.lossless:
                    ok = ok and bool(np.array_equal(read, images[:60][::-1]))
                else:
                    ok = ok and psnr(images[:60][::-1], read) >= MIN_LOSSY_PSNR
            finally:
                os.write(write_end, b"1" if ok else b"0")
                os._exit(0)
        os.close(write_end)
        answer = os.read(read_end, 1)
        os.waitpid(pid, 0)
        os.close(read_end)
        assert answer == b"1", "the forked child read wrong images"
        read, _ = store.read_batch([0, 1])  # the parent's handles still work
        assert_same_images(info, images[:2], read)


def test_reading_in_a_spawned_child(backend, info, tmp_path, cifar):
    """A store that cannot be forked travels to a spawned worker (as DataLoader workers over it start) and reads there."""
    if storage.store_class(backend).fork_safe:
        pytest.skip(f"{backend} is read in a forked child (see the forked-child test)")
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:60], labels[:60])
    with storage.open_store(backend, tmp_path / "s", "r") as store:
        store.read_one(0)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            read, read_labels = pool.submit(store.read_batch, np.arange(59, -1, -1)).result(timeout=120)
            child_pid = pool.submit(os.getpid).result(timeout=60)
        assert child_pid != os.getpid()
        assert np.array_equal(read_labels, labels[:60][::-1])
        assert_same_images(info, images[:60][::-1], read)
        read, _ = store.read_batch([0, 1])  # the parent's handles still work
        assert_same_images(info, images[:2], read)


def test_class_names_are_kept_with_the_store(backend, info, tmp_path, cifar):
    images, labels = cifar
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        assert store.class_names is None
        store.set_class_names(["airplane", "automobile", "bird"])
        store.write_batch(images[:4], labels[:4])
    with storage.open_store(backend, tmp_path / "s") as store:
        assert store.class_names == ["airplane", "automobile", "bird"]
        with pytest.raises(storage.ReadOnlyStoreError):
            store.set_class_names(["cat"])
    if info.appendable:
        with storage.open_store(backend, tmp_path / "s", "a") as store:
            store.write_batch(images[4:6], labels[4:6])
        with storage.open_store(backend, tmp_path / "s") as store:
            assert len(store) == 6 and store.class_names == ["airplane", "automobile", "bird"]
    with storage.open_store(backend, tmp_path / "s", "w") as store:  # a new store starts without names
        assert store.class_names is None
        with pytest.raises(storage.LabelError, match="list of strings"):
            store.set_class_names("cat")


def test_read_only_store_pickles_for_worker_processes(backend, info, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:5], labels[:5])
    with storage.open_store(backend, tmp_path / "s") as store:
        clone = pickle.loads(pickle.dumps(store))
    try:
        assert len(clone) == 5
        assert_same_image(info, images[4], clone.read_one(4)[0])
    finally:
        clone.close()


def test_disk_usage_is_plausible(backend, info, tmp_path, cifar):
    images, labels = cifar
    write_store(backend, tmp_path / "s", images, labels)
    with storage.open_store(backend, tmp_path / "s") as store:
        usage = store.disk_usage()
    raw_bytes = images.nbytes
    assert usage.files >= 1
    assert usage.allocated_bytes % 512 == 0 and usage.allocated_bytes > 0
    assert usage.apparent_bytes > raw_bytes * 0.05, "far too small to hold the images"
    assert usage.apparent_bytes < raw_bytes * 4 + 4 * 2**20, "far too large for what was stored"
    if info.one_file_per_image:
        assert usage.files >= len(images)
    if info.lossless and not info.compressed:
        assert usage.apparent_bytes >= raw_bytes
    assert usage.bytes_per_image(len(images)) == usage.allocated_bytes / len(images)
    assert usage == storage.measure_disk_usage(tmp_path / "s")


# -- bad input: a clear error, and nothing already stored is lost ---------------------------


@pytest.fixture
def stored(backend, tmp_path, cifar):
    """A store of 12 images, open for appending."""
    images, labels = cifar
    write_store(backend, tmp_path / "s", images[:12], labels[:12])
    mode = "a" if storage.backend_info(backend).appendable else "w"
    if mode == "w":
        pytest.skip(f"{backend} cannot append, so bad appends cannot be tried")
    with storage.open_store(backend, tmp_path / "s", mode) as store:
        yield store


def assert_still_holds_twelve(backend, info, path, cifar):
    with storage.open_store(backend, path) as store:
        assert len(store) == 12
        read, read_labels = store.read_all()
        assert_same_images(info, cifar[0][:12], read)
        np.testing.assert_array_equal(read_labels, cifar[1][:12])


@pytest.mark.parametrize(
    ("make_images", "error", "builtin", "words"),
    [
        (lambda imgs: imgs[:3].astype(np.float32), storage.ImageTypeError, TypeError, "uint8"),
        (lambda imgs: imgs[:3].astype(np.int64), storage.ImageTypeError, TypeError, "uint8"),
        (lambda imgs: imgs[:3, :, :, 0].reshape(3, -1)[0], storage.ImageShapeError, ValueError, "shape"),
        (lambda imgs: imgs[:3].reshape(3, 32, 96), None, None, None),
        (lambda imgs: np.zeros((3, 4, 4, 5), np.uint8), storage.ImageShapeError, ValueError, "channels"),
        (lambda imgs: np.zeros((3, 2, 4, 4, 3), np.uint8), storage.ImageShapeError, ValueError, "shape"),
        (lambda imgs: [imgs[0], "not an image", imgs[1]], storage.ImageTypeError, TypeError, "image 1"),
        (lambda imgs: [imgs[0], imgs[1].astype(float)], storage.ImageTypeError, TypeError, "image 1"),
        (lambda imgs: "images", storage.ImageTypeError, TypeError, "images is a str"),
        (lambda imgs: 42, storage.ImageTypeError, TypeError, "images is a int"),
    ],
)
def test_bad_images_are_refused_and_nothing_is_lost(backend, info, stored, cifar, make_images, error, builtin, words):
    images = make_images(cifar[0])
    if error is None:  # a valid (N,H,W) grayscale reading of the same bytes: accepted
        return
    count = len(images) if hasattr(images, "__len__") and not isinstance(images, (str, int)) else 3
    with pytest.raises(error, match=words) as caught:
        stored.write_batch(images, list(range(count)))
    assert isinstance(caught.value, builtin) and isinstance(caught.value, storage.StorageError)
    assert len(stored) == 12
    stored.close()
    assert_still_holds_twelve(backend, info, stored.path, cifar)


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ([1, 2], "got 2 labels for 3 images"),
        ([1, 2, 3, 4], "got 4 labels for 3 images"),
        ([0.5, 1.0, 2.0], "integers"),
        (["a", "b", "c"], "integers"),
        ([True, False, True], "integers"),
        ("abc", "string"),
        ([[1], [2], [3]], "flat"),
    ],
)
def test_bad_labels_are_refused_and_nothing_is_lost(backend, info, stored, cifar, labels, words):
    with pytest.raises(storage.LabelError, match=words) as caught:
        stored.write_batch(cifar[0][:3], labels)
    assert isinstance(caught.value, ValueError)
    stored.close()
    assert_still_holds_twelve(backend, info, stored.path, cifar)


@pytest.mark.parametrize("empty", [np.empty((0, 32, 32, 3), np.uint8), []])
def test_empty_batch_is_refused(backend, info, stored, cifar, empty):
    with pytest.raises(storage.EmptyBatchError, match="no images") as caught:
        stored.write_batch(empty, [])
    assert isinstance(caught.value, ValueError)
    stored.close()
    assert_still_holds_twelve(backend, info, stored.path, cifar)


def test_bad_single_image_and_label(backend, info, stored, cifar):
    with pytest.raises(storage.ImageShapeError):
        stored.write_one(cifar[0][:2], 1)
    with pytest.raises(storage.ImageTypeError):
        stored.write_one(cifar[0][0].astype(np.float64), 1)
    with pytest.raises(storage.LabelError, match="integers"):
        stored.write_one(cifar[0][0], 1.5)
    with pytest.raises(storage.LabelError, match="integers"):
        stored.write_one(cifar[0][0], None)
    stored.close()
    assert_still_holds_twelve(backend, info, stored.path, cifar)


def test_store_of_one_size_refuses_another_size(backend, info, stored, cifar):
    if info.variable_shapes:
        pytest.skip(f"{backend} stores images of any size")
    with pytest.raises(storage.ImageShapeError, match="size|shape"):
        stored.write_batch(np.zeros((2, 16, 16, 3), np.uint8), [0, 1])
    stored.close()
    assert_still_holds_twelve(backend, info, stored.path, cifar)


@pytest.mark.parametrize("bad_id", [12, 1000, -1, 2.0, "3", None, True])
def test_reading_a_missing_id(backend, stored, bad_id):
    with pytest.raises(storage.ImageIndexError) as caught:
        stored.read_one(bad_id)
    assert isinstance(caught.value, IndexError)
    assert "image id" in str(caught.value)


def test_read_batch_with_a_missing_id(backend, stored):
    with pytest.raises(storage.ImageIndexError, match="12 images"):
        stored.read_batch([0, 5, 12])
    with pytest.raises(storage.ImageIndexError, match="integers"):
        stored.read_batch([0.5, 1.5])


def test_unknown_backend_lists_the_valid_ones(tmp_path):
    with pytest.raises(storage.UnknownBackendError) as caught:
        storage.open_store("tiff-in-a-zip", tmp_path / "s", "w")
    assert isinstance(caught.value, KeyError)
    message = str(caught.value)
    assert "tiff-in-a-zip" in message and all(name in message for name in BACKENDS)
    with pytest.raises(storage.UnknownBackendError):
        storage.backend_info("nope")


def test_unknown_mode_and_option(backend, tmp_path):
    with pytest.raises(storage.ModeError, match="'x'"):
        storage.open_store(backend, tmp_path / "s", "x")
    with pytest.raises(storage.ModeError, match="unknown option"):
        storage.open_store(backend, tmp_path / "s", "w", no_such_option=1)


def test_reading_a_store_that_does_not_exist(backend, tmp_path):
    with pytest.raises(storage.StoreNotFoundError, match="no image store") as caught:
        storage.open_store(backend, tmp_path / "missing", "r")
    assert isinstance(caught.value, FileNotFoundError)


def test_a_folder_that_is_not_a_store(backend, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"precious")
    with pytest.raises(storage.StoreNotFoundError, match="not an image store"):
        storage.open_store(backend, tmp_path / "photos", "r")
    with pytest.raises(storage.StoreExistsError, match="not an image store"):
        storage.open_store(backend, tmp_path / "photos", "w")
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"precious"


def test_opening_one_backends_store_as_another(backend, tmp_path, cifar):
    other = next(name for name in BACKENDS if name != backend)
    write_store(other, tmp_path / "s", cifar[0][:2], [0, 1])
    with pytest.raises(storage.WrongBackendError, match=f"holds a '{other}' store") as caught:
        storage.open_store(backend, tmp_path / "s", "r")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(storage.WrongBackendError):
        storage.open_store(backend, tmp_path / "s", "a")
    with storage.open_store(other, tmp_path / "s") as store:
        assert len(store) == 2


def test_a_path_below_a_file_is_not_writable(backend, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(storage.StoreNotWritableError) as caught:
        storage.open_store(backend, tmp_path / "file" / "store", "w")
    assert isinstance(caught.value, PermissionError)
    with pytest.raises(storage.StoreExistsError, match="is a file"):
        storage.open_store(backend, tmp_path / "file", "w")


def test_an_unwritable_folder(backend):
    """Tries as an unprivileged user in a forked child, since root may write anywhere."""
    parent = Path(tempfile.mkdtemp(prefix="unwritable-"))
    parent.chmod(0o755)
    locked = parent / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = b"not refused"
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            storage.open_store(backend, locked / "store", "w")
        except storage.StoreNotWritableError as error:
            message = b"refused: " + str(error).encode()
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            message = repr(error).encode()
        finally:
            os.write(write_end, message)
            os._exit(0)
    os.close(write_end)
    message = os.read(read_end, 4096).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    assert message.startswith("refused: cannot write to"), message
    assert str(locked / "store") in message
    assert not (locked / "store").exists()
    shutil.rmtree(parent)


# -- interrupted writes: the previous store, or one that says it is incomplete --------------


class Interrupt(Exception):
    pass


@pytest.fixture
def small_chunks(backend, monkeypatch):
    """Stream batches in chunks of 8 so a write can be cut off midway."""
    monkeypatch.setattr(storage.store_class(backend), "chunk_images", 8)


@pytest.mark.parametrize("interruption", [Interrupt, KeyboardInterrupt])
def test_write_interrupted_midway_keeps_the_previous_store(backend, info, stored, cifar, small_chunks, interruption):
    def stop_after_first_chunk(done: int, total: int) -> None:
        if done >= 8:
            raise interruption()

    images, labels = cifar
    with pytest.raises(interruption):
        stored.write_batch(images[12:60], labels[12:60], progress=stop_after_first_chunk)
    assert len(stored) == 12
    stored.write_batch(images[12:14], labels[12:14])  # the store still takes writes
    assert len(stored) == 14
    stored.close()
    with storage.open_store(backend, stored.path) as store:
        read, read_labels = store.read_all()
        assert_same_images(info, images[:14], read)
        np.testing.assert_array_equal(read_labels, labels[:14])


def test_first_write_interrupted_leaves_an_empty_store(backend, info, tmp_path, cifar, small_chunks):
    def stop(done: int, total: int) -> None:
        raise Interrupt()

    with storage.open_store(backend, tmp_path / "s", "w") as store:
        with pytest.raises(Interrupt):
            store.write_batch(cifar[0][:40], cifar[1][:40], progress=stop)
        assert len(store) == 0
    with storage.open_store(backend, tmp_path / "s") as store:
        assert len(store) == 0


def test_killed_write_reports_an_incomplete_store(backend, info, tmp_path, cifar):
    """A process killed midway (no chance to clean up) leaves a store that says so."""
    images, labels = cifar
    path = tmp_path / "s"
    write_store(backend, path, images[:12], labels[:12])
    mode = "a" if info.appendable else "w"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import numpy as np
        import storage
        from storage.datasets import load_cifar10, SAMPLE_CIFAR10_DIR
        images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
        storage.store_class({backend!r}).chunk_images = 8
        def die(done, total):
            if done >= 16:
                os.kill(os.getpid(), signal.SIGKILL)
        store = storage.open_store({backend!r}, {str(path)!r}, {mode!r})
        store.write_batch(images[12:100], labels[12:100], progress=die)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    manifest = json.loads((path / "store.json").read_text())
    assert manifest["state"] == "writing"
    with pytest.raises(storage.IncompleteStoreError, match="interrupted") as caught:
        storage.open_store(backend, path, "r")
    assert isinstance(caught.value, ValueError)
    if not info.appendable:
        return
    with storage.open_store(backend, path, "a") as store:  # recovers the committed images
        assert len(store) == 12
        store.write_batch(images[12:20], labels[12:20])
    with storage.open_store(backend, path) as store:
        read, read_labels = store.read_all()
        assert_same_images(info, images[:20], read)
        np.testing.assert_array_equal(read_labels, labels[:20])


def test_killed_write_one_loses_at_most_the_unwritten_group(backend, info, tmp_path, cifar):
    """write_one then SIGKILL: groups already written stay; the store opens after recovery."""
    images, labels = cifar
    path = tmp_path / "s"
    write_store(backend, path, images[:12], labels[:12])
    if not info.appendable:
        pytest.skip(f"{backend} cannot append")
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import storage
        from storage.datasets import load_cifar10, SAMPLE_CIFAR10_DIR
        images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
        store = storage.open_store({backend!r}, {str(path)!r}, "a")
        store.write_behind_images = 8
        for image_id in range(12, 32):
            store.write_one(images[image_id], labels[image_id])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    if storage.store_class(backend).write_behind_images:
        # 20 images in groups of 8: two groups written, the last 4 were only in memory
        with storage.open_store(backend, path, "r") as store:
            assert len(store) == 12 + 16
            read, read_labels = store.read_all()
            assert_same_images(info, images[:28], read)
            np.testing.assert_array_equal(read_labels, labels[:28])
    with storage.open_store(backend, path, "a") as store:  # recovery: keeps what was committed
        kept = len(store)
        assert 12 <= kept <= 32
        store.write_batch(images[kept : kept + 3], labels[kept : kept + 3])
    with storage.open_store(backend, path) as store:
        read, read_labels = store.read_all()
        assert_same_images(info, images[: kept + 3], read)
        np.testing.assert_array_equal(read_labels, labels[: kept + 3])


def test_damaged_manifest_is_reported(backend, tmp_path, cifar):
    write_store(backend, tmp_path / "s", cifar[0][:2], [0, 1])
    (tmp_path / "s" / "store.json").write_text("{not json")
    with pytest.raises(storage.CorruptDataError, match="damaged"):
        storage.open_store(backend, tmp_path / "s")


# -- properties over shapes and batch sizes ----------------------------------------------------


image_shapes = st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([0, 1, 3, 4])).map(
    lambda hwc: hwc[:2] if hwc[2] == 0 else hwc
)


@pytest.mark.parametrize("property_backend", BACKENDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shapes=st.lists(image_shapes, min_size=1, max_size=12),
    uniform=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_round_trip_over_shapes_and_batch_sizes(property_backend, tmp_path_factory, shapes, uniform, seed):
    info = storage.backend_info(property_backend)
    rng = np.random.default_rng(seed)
    if uniform or not info.variable_shapes:
        shapes = [shapes[0]] * len(shapes)
    shapes = [shape for shape in shapes if (shape[2] if len(shape) == 3 else 1) in info.channels] or [(5, 6, 3)]
    if not info.variable_shapes:
        shapes = [shapes[0]] * len(shapes)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    labels = rng.integers(-(2**40), 2**40, len(images))
    path = tmp_path_factory.mktemp("prop") / "s"
    write_store(property_backend, path, images, labels)
    with storage.open_store(property_backend, path) as store:
        assert len(store) == len(images)
        read, read_labels = store.read_all()
        np.testing.assert_array_equal(read_labels, labels)
        assert [image.shape for image in read] == [image.shape for image in images]
        if info.lossless:
            for want, got in zip(images, read):
                np.testing.assert_array_equal(got, want)


# -- streaming: memory stays bounded whatever the batch size ---------------------------------


class LazyImages(Sequence):
    """Images made on demand, so the caller's input itself takes no memory."""

    def __init__(self, count: int, shape: tuple[int, ...]) -> None:
        self.count, self.shape = count, shape

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return np.full(self.shape, index % 251, dtype=np.uint8)


def test_large_batch_streams_in_bounded_memory(backend, info, tmp_path, monkeypatch):
    """With chunks of 1,000 images, writing 12,000 must never hold most of them at once."""
    monkeypatch.setattr(storage.store_class(backend), "chunk_images", 1000)
    monkeypatch.setattr(storage.store_class(backend), "chunk_bytes", 1000 * 16 * 16 * 3)
    images = LazyImages(12_000, (16, 16, 3))
    total_bytes = len(images) * 16 * 16 * 3
    tracemalloc.start()
    try:
        with storage.open_store(backend, tmp_path / "s", "w") as store:
            store.write_batch(images, np.zeros(len(images), dtype=np.int64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.4 * total_bytes, f"writing held {peak / 2**20:.1f} MiB for {total_bytes / 2**20:.1f} MiB of images"
    with storage.open_store(backend, tmp_path / "s") as store:
        assert len(store) == len(images)
        for image_id in (0, 4097, 11_999):
            assert_same_image(info, images[image_id], store.read_one(image_id)[0])
