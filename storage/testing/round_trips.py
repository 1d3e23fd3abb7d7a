"""Round trips: what goes in comes back, for every shape, layout and way of writing a backend takes.

Where a backend declares that it lacks a capability (lossy, no variable sizes, no appends,
fewer channels), the matching test checks the clear error instead, or skips visibly with
the reason.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .. import errors
from ..registry import backend_info, open_store, store_class
from .fixtures import ConformanceFixtures
from .support import (
    LazyImages,
    assert_same_image,
    assert_same_images,
    mixed_size_images,
    to_gray,
    with_alpha,
    write_store,
)

image_shapes = st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([0, 1, 3, 4])).map(
    lambda hwc: hwc[:2] if hwc[2] == 0 else hwc
)


class RoundTripTests(ConformanceFixtures):
    """Writes (``write_batch``, ``write_one``, appends, rewrites) read back as written."""

    # -- what a backend says about itself ----------------------------------------------------------

    def test_backend_info_describes_the_backend(self, backend, info):
        assert info.name == backend
        assert info.label and info.label.strip() == info.label
        assert info.description and "\n" not in info.description and len(info.description) <= 160
        for flag in ("lossless", "random_access", "variable_shapes", "appendable", "compressed", "one_file_per_image"):
            assert isinstance(getattr(info, flag), bool), flag
        assert set(info.channels) <= {1, 3, 4} and 3 in info.channels

    def test_store_is_a_context_manager_that_closes(self, backend, tmp_path, cifar):
        images, labels = cifar
        with open_store(backend, tmp_path / "s", "w") as store:
            store.write_batch(images[:3], labels[:3])
        with pytest.raises(ValueError, match="closed"):
            store.read_one(0)

    # -- round trips -------------------------------------------------------------------------------

    def test_round_trip_of_many_uniform_images(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        ids = write_store(backend, tmp_path / "s", images, labels)
        np.testing.assert_array_equal(ids, np.arange(len(images)))
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == len(images)
            read, read_labels = store.read_all()
            assert isinstance(read, np.ndarray) and read.shape == images.shape
            assert_same_images(info, images, read)
            np.testing.assert_array_equal(read_labels, labels)
            assert read_labels.dtype == np.int64

    def test_round_trip_of_one_image(self, backend, info, tmp_path, cifar):
        images, _ = cifar
        with open_store(backend, tmp_path / "s", "w") as store:
            assert store.write_one(images[7], 3) == 0
            assert store.write_one(images[8], 9) == 1
            assert len(store) == 2
        with open_store(backend, tmp_path / "s") as store:
            image, label = store.read_one(1)
            assert label == 9 and isinstance(label, int)
            assert_same_image(info, images[8], image)

    def test_write_one_is_not_lost_without_an_explicit_flush(self, backend, info, tmp_path, cifar):
        images, _ = cifar
        store = open_store(backend, tmp_path / "s", "w")
        store.write_one(images[0], 1)
        store.close()
        with open_store(backend, tmp_path / "s") as reopened:
            assert len(reopened) == 1
            assert_same_image(info, images[0], reopened.read_one(0)[0])

    def test_write_one_images_read_back_before_they_are_flushed(self, backend, info, tmp_path, cifar):
        """Ids returned by write_one read back at once, even while a write-behind group holds them."""
        images, labels = cifar
        reused = np.empty_like(images[0])  # one buffer for every call, as a loader would
        with open_store(backend, tmp_path / "s", "w") as store:
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
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == 26
            assert_same_images(info, images[:26], store.read_all()[0])

    def test_write_one_over_several_groups_survives_close(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        store = open_store(backend, tmp_path / "s", "w")
        store.write_behind_images = 8  # groups of 8 where the backend groups write_one calls
        for image_id in range(30):
            store.write_one(images[image_id], labels[image_id])
        store.close()
        with open_store(backend, tmp_path / "s") as store:
            read, read_labels = store.read_all()
            assert_same_images(info, images[:30], read)
            np.testing.assert_array_equal(read_labels, labels[:30])

    def test_a_failed_group_write_keeps_the_store_and_the_group(self, backend, info, tmp_path, cifar, monkeypatch):
        """A group is written all-or-nothing: if its write fails, nothing of it is half-stored."""
        if not store_class(backend).write_behind_images:
            pytest.skip(f"{backend} does not use the write-behind group")
        images, labels = cifar
        backend_class = store_class(backend)
        with open_store(backend, tmp_path / "s", "w") as store:
            store.write_behind_images = 8
            for image_id in range(8):
                store.write_one(images[image_id], labels[image_id])  # the 8th writes the first group
            real_commit = backend_class._commit

            def failing_commit(self, count):
                raise OSError("no space left on device (simulated)")

            monkeypatch.setattr(backend_class, "_commit", failing_commit)
            for image_id in range(8, 15):
                store.write_one(images[image_id], labels[image_id])
            with pytest.raises(OSError, match="simulated"):
                store.write_one(images[15], labels[15])
            assert len(store) == 16  # the group is still in memory
            assert json.loads((tmp_path / "s" / "store.json").read_text())["count"] == 8
            monkeypatch.setattr(backend_class, "_commit", real_commit)
            store.flush()
            assert json.loads((tmp_path / "s" / "store.json").read_text())["count"] == 16
        with open_store(backend, tmp_path / "s") as store:
            read, read_labels = store.read_all()
            assert_same_images(info, images[:16], read)
            np.testing.assert_array_equal(read_labels, labels[:16])

    def test_single_image_batch(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:1], labels[:1])
        with open_store(backend, tmp_path / "s") as store:
            read, read_labels = store.read_all()
            assert read.shape == (1, 32, 32, 3) and list(read_labels) == [labels[0]]

    @pytest.mark.parametrize("layout", ["(N,H,W)", "(N,H,W,1)"])
    def test_round_trip_of_grayscale(self, backend, info, tmp_path, cifar, layout):
        gray = to_gray(cifar[0][:20])
        if layout == "(N,H,W,1)":
            gray = gray[..., None]
        if 1 not in info.channels:
            with pytest.raises(errors.ImageShapeError, match="1 channel"):
                write_store(backend, tmp_path / "s", gray, range(20))
            return
        write_store(backend, tmp_path / "s", gray, range(20))
        with open_store(backend, tmp_path / "s") as store:
            read, _ = store.read_all()
            assert read.shape == gray.shape
            assert_same_images(info, gray, read)
            assert store.read_one(5)[0].shape == gray.shape[1:]

    def test_round_trip_of_rgba(self, backend, info, tmp_path, cifar):
        rgba = with_alpha(cifar[0][:20])
        if 4 not in info.channels:
            with pytest.raises(errors.ImageShapeError, match="4 channel"):
                write_store(backend, tmp_path / "s", rgba, range(20))
            return
        write_store(backend, tmp_path / "s", rgba, range(20))
        with open_store(backend, tmp_path / "s") as store:
            read, _ = store.read_all()
            assert read.shape == rgba.shape
            assert_same_images(info, rgba, read)

    def test_round_trip_of_mixed_sizes(self, backend, info, tmp_path, cifar):
        images = mixed_size_images(cifar[0])
        if 1 in info.channels:
            images.append(to_gray(cifar[0][50:51])[0][:9, :13])
        labels = list(range(len(images)))
        if not info.variable_shapes:
            with pytest.raises(errors.ImageShapeError, match="size"):
                write_store(backend, tmp_path / "s", images, labels)
            return
        write_store(backend, tmp_path / "s", images, labels)
        with open_store(backend, tmp_path / "s") as store:
            read, read_labels = store.read_all()
            assert isinstance(read, list)
            assert [image.shape for image in read] == [image.shape for image in images]
            assert_same_images(info, images, read)
            assert list(read_labels) == labels
            order = [len(images) - 1, 0, 3, 3, 1]
            some, some_labels = store.read_batch(order)
            assert_same_images(info, [images[i] for i in order], some)
            assert list(some_labels) == order

    def test_write_one_of_mixed_sizes(self, backend, info, tmp_path, cifar):
        images = mixed_size_images(cifar[0])
        with open_store(backend, tmp_path / "s", "w") as store:
            store.write_one(images[1], 1)
            if not info.variable_shapes:
                with pytest.raises(errors.ImageShapeError):
                    store.write_one(images[0], 0)
                assert len(store) == 1
                store.close()
                with open_store(backend, tmp_path / "s") as reopened:  # the image before the refusal is kept
                    assert len(reopened) == 1
                    assert_same_image(info, images[1], reopened.read_one(0)[0])
                return
            for label, image in enumerate(images):
                store.write_one(image, label)
        with open_store(backend, tmp_path / "s") as store:
            read, read_labels = store.read_all()
            assert_same_images(info, [images[1], *images], read)
            assert list(read_labels) == [1, *range(len(images))]

    def test_uniform_subset_of_a_mixed_store_reads_as_one_array(self, backend, info, tmp_path, cifar):
        if not info.variable_shapes:
            pytest.skip(f"{backend} stores one size per store")
        images = [cifar[0][0], cifar[0][1][:10, :10], cifar[0][2]]
        write_store(backend, tmp_path / "s", images, [0, 1, 2])
        with open_store(backend, tmp_path / "s") as store:
            read, _ = store.read_batch([0, 2])
            assert isinstance(read, np.ndarray) and read.shape == (2, 32, 32, 3)

    def test_sequence_of_uniform_arrays_is_accepted(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        as_list = list(images[:10])
        write_store(backend, tmp_path / "s", as_list, list(labels[:10]))
        with open_store(backend, tmp_path / "s") as store:
            read, _ = store.read_all()
            assert isinstance(read, np.ndarray)
            assert_same_images(info, images[:10], read)

    def test_append_continues_ids_and_keeps_earlier_images(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:30], labels[:30])
        if not info.appendable:
            with pytest.raises(errors.ModeError, match="append"):
                open_store(backend, tmp_path / "s", "a")
            return
        with open_store(backend, tmp_path / "s", "a") as store:
            assert len(store) == 30
            ids = store.write_batch(images[30:50], labels[30:50])
            np.testing.assert_array_equal(ids, np.arange(30, 50))
            assert store.write_one(images[50], labels[50]) == 50
        with open_store(backend, tmp_path / "s") as store:
            read, read_labels = store.read_all()
            assert_same_images(info, images[:51], read)
            np.testing.assert_array_equal(read_labels, labels[:51])

    def test_append_mode_creates_a_missing_store(self, backend, info, tmp_path, cifar):
        if not info.appendable:
            pytest.skip(f"{backend} cannot append")
        with open_store(backend, tmp_path / "new", "a") as store:
            store.write_batch(cifar[0][:4], cifar[1][:4])
        with open_store(backend, tmp_path / "new") as store:
            assert len(store) == 4

    def test_write_mode_replaces_an_existing_store(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:40], labels[:40])
        write_store(backend, tmp_path / "s", images[100:105], labels[100:105])
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == 5
            assert_same_images(info, images[100:105], store.read_all()[0])

    # -- properties over shapes and batch sizes ----------------------------------------------------

    # One test function serves every backend's class, as one parametrized function did before: hypothesis
    # sees several executors (the classes) and one examples database for all backends, which is what is wanted.
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
    )
    @given(
        shapes=st.lists(image_shapes, min_size=1, max_size=12),
        uniform=st.booleans(),
        seed=st.integers(0, 2**16),
    )
    def test_property_round_trip_over_shapes_and_batch_sizes(self, backend, tmp_path_factory, shapes, uniform, seed):
        info = backend_info(backend)
        rng = np.random.default_rng(seed)
        if uniform or not info.variable_shapes:
            shapes = [shapes[0]] * len(shapes)
        shapes = [shape for shape in shapes if (shape[2] if len(shape) == 3 else 1) in info.channels] or [(5, 6, 3)]
        if not info.variable_shapes:
            shapes = [shapes[0]] * len(shapes)
        images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
        labels = rng.integers(-(2**40), 2**40, len(images))
        path = tmp_path_factory.mktemp("prop") / "s"
        write_store(backend, path, images, labels)
        with open_store(backend, path) as store:
            assert len(store) == len(images)
            read, read_labels = store.read_all()
            np.testing.assert_array_equal(read_labels, labels)
            assert [image.shape for image in read] == [image.shape for image in images]
            if info.lossless:
                for want, got in zip(images, read):
                    np.testing.assert_array_equal(got, want)

    # -- streaming: memory stays bounded whatever the batch size -----------------------------------

    def test_large_batch_streams_in_bounded_memory(self, backend, info, tmp_path, monkeypatch):
        """With chunks of 1,000 images, writing 12,000 must never hold most of them at once.

        A format whose own writer keeps some bytes per image whatever its size says so with
        ``writer_bytes_per_image`` on its store class (FFCV: its work list and allocation
        table); where that is too much to tell from these small images' pixels, the test skips.
        """
        monkeypatch.setattr(store_class(backend), "chunk_images", 1000)
        monkeypatch.setattr(store_class(backend), "chunk_bytes", 1000 * 16 * 16 * 3)
        images = LazyImages(12_000, (16, 16, 3))
        total_bytes = len(images) * 16 * 16 * 3
        kept_per_image = getattr(store_class(backend), "writer_bytes_per_image", 0)
        if kept_per_image * len(images) > 0.1 * total_bytes:
            pytest.skip(
                f"{backend}'s own writer keeps about {kept_per_image} bytes per image whatever the images' size, "
                "too close to these 768-byte images to see whether their pixels stream; check it with larger images"
            )
        tracemalloc.start()
        try:
            with open_store(backend, tmp_path / "s", "w") as store:
                store.write_batch(images, np.zeros(len(images), dtype=np.int64))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 0.4 * total_bytes, (
            f"writing held {peak / 2**20:.1f} MiB for {total_bytes / 2**20:.1f} MiB of images"
        )
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == len(images)
            for image_id in (0, 4097, 11_999):
                assert_same_image(info, images[image_id], store.read_one(image_id)[0])
