"""Reads: any order, into a given buffer, empty, iterated, and from forked or spawned processes.

Also what a store keeps beside its images (class names), how it travels to worker
processes (pickled as its path), and what it tells about its size on disk.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from .. import errors
from ..base import measure_disk_usage
from ..registry import open_store, store_class
from ..verify import psnr
from .fixtures import ConformanceFixtures
from .support import MIN_LOSSY_PSNR, assert_same_image, assert_same_images, write_store


class ReadTests(ConformanceFixtures):
    """Stores read back in every way the interface offers, in this process and in others."""

    # -- reading: order, batches, buffers, iteration -----------------------------------------------

    def test_random_order_reads(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images, labels)
        order = np.random.default_rng(7).permutation(len(images))
        with open_store(backend, tmp_path / "s") as store:
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

    def test_read_batch_fills_a_given_buffer(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:50], labels[:50])
        out = np.zeros((50, 32, 32, 3), dtype=np.uint8)
        with open_store(backend, tmp_path / "s") as store:
            read, _ = store.read_all(out=out)
            assert read is out
            assert_same_images(info, images[:50], out)
            with pytest.raises(errors.ImageShapeError, match="out has shape"):
                store.read_all(out=np.zeros((49, 32, 32, 3), dtype=np.uint8))

    def test_empty_read_batch(self, backend, tmp_path, cifar):
        write_store(backend, tmp_path / "s", cifar[0][:3], cifar[1][:3])
        with open_store(backend, tmp_path / "s") as store:
            read, read_labels = store.read_batch([])
            assert len(read) == 0 and len(read_labels) == 0
            assert read.shape == (0, 32, 32, 3) and read.dtype == np.uint8  # stacks with other batches of the store
            assert read_labels.dtype == np.int64

    def test_iteration_is_in_id_order(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:25], labels[:25])
        with open_store(backend, tmp_path / "s") as store:
            pairs = list(store)
        assert [label for _, label in pairs] == labels[:25].tolist()
        assert_same_images(info, images[:25], [image for image, _ in pairs])

    # -- a store opened again, in another process, or on disk --------------------------------------

    def test_reopening_read_only_refuses_writes(self, backend, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:10], labels[:10])
        with open_store(backend, tmp_path / "s", "r") as store:
            assert len(store) == 10
            with pytest.raises(errors.ReadOnlyStoreError, match="read-only") as caught:
                store.write_batch(images[:2], labels[:2])
            assert isinstance(caught.value, PermissionError)
            with pytest.raises(errors.ReadOnlyStoreError):
                store.write_one(images[0], 1)
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == 10

    def test_reading_in_a_forked_child(self, backend, info, tmp_path, cifar):
        """A store opened (and used) before fork must still read correctly in the child."""
        if not store_class(backend).fork_safe:
            pytest.skip(f"{backend} must not be forked once used (fork_safe False): see the spawned-child test")
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:60], labels[:60])
        with open_store(backend, tmp_path / "s") as store:
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

    def test_reading_in_a_spawned_child(self, backend, info, tmp_path, cifar):
        """A store that cannot be forked travels to a spawned worker (as DataLoader workers over it start) and reads there."""
        if store_class(backend).fork_safe:
            pytest.skip(f"{backend} is read in a forked child (see the forked-child test)")
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:60], labels[:60])
        with open_store(backend, tmp_path / "s", "r") as store:
            store.read_one(0)
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                read, read_labels = pool.submit(store.read_batch, np.arange(59, -1, -1)).result(timeout=120)
                child_pid = pool.submit(os.getpid).result(timeout=60)
            assert child_pid != os.getpid()
            assert np.array_equal(read_labels, labels[:60][::-1])
            assert_same_images(info, images[:60][::-1], read)
            read, _ = store.read_batch([0, 1])  # the parent's handles still work
            assert_same_images(info, images[:2], read)

    def test_class_names_are_kept_with_the_store(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        with open_store(backend, tmp_path / "s", "w") as store:
            assert store.class_names is None
            store.set_class_names(["airplane", "automobile", "bird"])
            store.write_batch(images[:4], labels[:4])
        with open_store(backend, tmp_path / "s") as store:
            assert store.class_names == ["airplane", "automobile", "bird"]
            with pytest.raises(errors.ReadOnlyStoreError):
                store.set_class_names(["cat"])
        if info.appendable:
            with open_store(backend, tmp_path / "s", "a") as store:
                store.write_batch(images[4:6], labels[4:6])
            with open_store(backend, tmp_path / "s") as store:
                assert len(store) == 6 and store.class_names == ["airplane", "automobile", "bird"]
        with open_store(backend, tmp_path / "s", "w") as store:  # a new store starts without names
            assert store.class_names is None
            with pytest.raises(errors.LabelError, match="list of strings"):
                store.set_class_names("cat")

    def test_read_only_store_pickles_for_worker_processes(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:5], labels[:5])
        with open_store(backend, tmp_path / "s") as store:
            clone = pickle.loads(pickle.dumps(store))
        try:
            assert len(clone) == 5
            assert_same_image(info, images[4], clone.read_one(4)[0])
        finally:
            clone.close()

    def test_disk_usage_is_plausible(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images, labels)
        with open_store(backend, tmp_path / "s") as store:
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
        assert usage == measure_disk_usage(tmp_path / "s")
