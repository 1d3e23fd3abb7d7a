"""What each of the article's three backends promises beyond the conformance suite."""

from __future__ import annotations

import csv
import io
import json
import os

import h5py
import lmdb
import numpy as np
import pytest
from PIL import Image

import storage
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10
from storage.formats import lmdb_store


@pytest.fixture(scope="module")
def cifar():
    images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
    return images[:300], labels[:300]


# -- png -------------------------------------------------------------------------------------


def test_png_files_hold_exactly_pillows_default_bytes(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("png", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
        paths = [store.codec.path(i) for i in (0, 150, 299)]
    for image_id, path in zip((0, 150, 299), paths):
        expected = io.BytesIO()
        Image.fromarray(images[image_id]).save(expected, format="PNG")
        with open(path, "rb") as file:
            assert file.read() == expected.getvalue()
        with Image.open(path) as picture:  # any PNG reader opens them
            np.testing.assert_array_equal(np.asarray(picture), images[image_id])


def test_png_labels_csv_lists_every_image(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("png", tmp_path / "s", "w") as store:
        store.write_batch(images[:5], labels[:5])
        store.write_one(images[5][:, :, 0], 7)
    with open(tmp_path / "s" / "labels.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["label"]) for row in rows] == [*labels[:5].tolist(), 7]
    assert rows[0] == {"id": "0", "label": str(labels[0]), "height": "32", "width": "32", "channels": "3"}
    assert rows[5]["channels"] == "0"


def test_png_batch_with_parallel_off_gives_the_same_store(tmp_path, cifar):
    images, labels = cifar
    for name, parallel in (("a", True), ("b", False)):
        with storage.open_store("png", tmp_path / name, "w", parallel=parallel) as store:
            store.write_batch(images, labels)
    with storage.open_store("png", tmp_path / "a") as first, storage.open_store("png", tmp_path / "b") as second:
        np.testing.assert_array_equal(first.read_all()[0], second.read_all()[0])
        assert open(first.codec.path(42), "rb").read() == open(second.codec.path(42), "rb").read()


def test_png_missing_file_is_reported_as_damage(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("png", tmp_path / "s", "w") as store:
        store.write_batch(images[:10], labels[:10])
        path = store.codec.path(3)
    os.remove(path)
    with storage.open_store("png", tmp_path / "s") as store:
        with pytest.raises(storage.CorruptDataError, match="missing"):
            store.read_one(3)
        with pytest.raises(storage.CorruptDataError, match="missing"):
            store.read_all()


# -- lmdb ------------------------------------------------------------------------------------


def test_lmdb_chunks_are_raw_pixels_with_binary_headers_not_pickle(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images[:3], labels[:3])
        store.write_batch(images[3:15], labels[3:15])
    assert json.loads((tmp_path / "s" / "store.json").read_text())["backend_state"]["layout"] == "chunks"
    with lmdb.open(str(tmp_path / "s"), readonly=True, lock=False) as env, env.begin() as txn:
        keys = list(txn.cursor().iternext(values=False))
        records = {key: txn.get(key) for key in keys if key.isdigit()}
        headers = np.frombuffer(txn.get(b"#chunk:0000000003"), dtype=lmdb_store.HEADER_DTYPE)
    # Pixel records of up to 5 CIFAR images (15,360 bytes: four 4 KiB pages), keyed by their first id.
    assert keys == [b"#chunk:0000000000", b"#chunk:0000000003", *(b"%010d" % i for i in (0, 3, 8, 13))]
    assert records[b"0000000008"] == images[8:13].tobytes()  # the pixels alone, end to end
    assert b"".join(records.values()) == images[:15].tobytes()
    assert lmdb_store.HEADER.size == lmdb_store.HEADER_DTYPE.itemsize == 17
    assert headers["label"].tolist() == labels[3:15].tolist()
    assert {(h, w, c) for h, w, c in headers[["height", "width", "channels"]].tolist()} == {(32, 32, 3)}
    assert not any(record.startswith(b"\x80") for record in records.values())  # no pickle protocol marker


def test_lmdb_a_truncated_record_is_reported_by_scattered_and_run_reads(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images[:20], labels[:20])
    environment = lmdb.open(str(tmp_path / "s"), subdir=True)
    with environment.begin(write=True) as txn:
        txn.put(b"%010d" % 5, images[5].tobytes()[:100])  # the record of images 5..9, cut short
    environment.close()
    with storage.open_store("lmdb", tmp_path / "s") as store:
        assert np.array_equal(store.read_batch([12, 3])[0], images[[12, 3]])  # other records still read
        with pytest.raises(storage.CorruptDataError, match="holds 100 bytes"):
            store.read_batch([12, 7, 3])
        with pytest.raises(storage.CorruptDataError, match="holds 100 bytes"):
            store.read_batch([5, 6, 7])


def test_lmdb_chunks_hold_images_of_different_sizes(tmp_path, cifar):
    images, labels = cifar
    mixed = [images[0], images[1][:20, :30], images[2][:, :, 0], images[3][:7]]
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images[:5], labels[:5])
        store.write_batch(mixed, [1, 2, 3, 4])
    with lmdb.open(str(tmp_path / "s"), readonly=True, lock=False) as env, env.begin() as txn:
        headers = np.frombuffer(txn.get(b"#chunk:0000000005"), dtype=lmdb_store.HEADER_DTYPE)
        assert txn.get(b"0000000005") == b"".join(image.tobytes() for image in mixed)
    assert headers[["height", "width", "channels"]].tolist() == [(32, 32, 3), (20, 30, 3), (32, 32, 0), (7, 32, 3)]
    expected = [*images[:5], *mixed]
    with storage.open_store("lmdb", tmp_path / "s") as store:
        for image_id in (6, 7, 0, 8, 5):
            image, label = store.read_one(image_id)
            np.testing.assert_array_equal(image, expected[image_id])
            assert label == [*labels[:5], 1, 2, 3, 4][image_id]
        read, read_labels = store.read_batch([8, 2, 6, 7])
        for got, image_id in zip(read, [8, 2, 6, 7]):
            np.testing.assert_array_equal(got, expected[image_id])
        assert read_labels.tolist() == [4, labels[2], 2, 3]


def test_lmdb_record_pages_sets_images_per_record(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("lmdb", tmp_path / "one", "w", record_pages=1) as store:
        store.write_batch(images[:20], labels[:20])
    with storage.open_store("lmdb", tmp_path / "many", "w", record_pages=16) as store:
        store.write_batch(images[:50], labels[:50])
    for name, per_record in (("one", 1), ("many", 21)):  # 21 x 3,072 bytes fill 16 pages
        with lmdb.open(str(tmp_path / name), readonly=True, lock=False) as env, env.begin() as txn:
            assert len(txn.get(b"0000000000")) == per_record * 32 * 32 * 3
        with storage.open_store("lmdb", tmp_path / name) as store:
            assert store.options["record_pages"] == (1 if name == "one" else 16)
            np.testing.assert_array_equal(store.read_one(19)[0], images[19])
            np.testing.assert_array_equal(store.read_all()[0], images[: 20 if name == "one" else 50])
    with pytest.raises(storage.ModeError, match="record_pages"):
        storage.open_store("lmdb", tmp_path / "bad", "w", record_pages=0)


def test_lmdb_runs_and_gathers_across_records_and_chunks(tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(lmdb_store.LmdbStore, "chunk_images", 64)
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images[:7], labels[:7])
        store.write_batch(images[7:], labels[7:])
    with storage.open_store("lmdb", tmp_path / "s") as store:
        for start, stop in ((3, 250), (0, 300), (6, 8), (64, 200), (299, 300), (5, 10)):
            read, read_labels = store.read_batch(np.arange(start, stop))
            np.testing.assert_array_equal(read, images[start:stop])
            np.testing.assert_array_equal(read_labels, labels[start:stop])
        for ids in (np.random.default_rng(1).permutation(300)[:50], np.array([5, 5, 6, 4, 299, 0])):
            read, read_labels = store.read_batch(ids)
            np.testing.assert_array_equal(read, images[ids])
            np.testing.assert_array_equal(read_labels, labels[ids])


def write_records_layout_store(path, images, labels, chunk=64):
    """A store as the lmdb backend wrote it before its chunks layout: one record per image."""
    path.mkdir()
    with lmdb.open(str(path), map_size=64 * 2**20) as env, env.begin(write=True) as txn:
        for image_id, (image, label) in enumerate(zip(images, labels.tolist())):
            txn.put(b"%010d" % image_id, lmdb_store.HEADER.pack(label, 32, 32, 3) + image.tobytes())
        for first in range(0, len(images), chunk):
            txn.put(b"#labels:%010d" % first, labels[first : first + chunk].astype("<i8").tobytes())
    manifest = {
        "backend": "lmdb",
        "format_version": 1,
        "count": len(images),
        "state": "complete",
        "options": {"readahead": False},
        "backend_state": {"uniform_shape": [32, 32, 3], "mixed_shapes": False},
    }
    (path / "store.json").write_text(json.dumps(manifest))


def test_lmdb_stores_of_one_record_per_image_are_still_read_and_appended_to(tmp_path, cifar):
    images, labels = cifar
    write_records_layout_store(tmp_path / "old", images[:200], labels[:200])
    with storage.open_store("lmdb", tmp_path / "old") as store:
        np.testing.assert_array_equal(store.read_one(123)[0], images[123])
        assert store.read_one(123)[1] == labels[123]
        read, read_labels = store.read_all()
        np.testing.assert_array_equal(read, images[:200])
        np.testing.assert_array_equal(read_labels, labels[:200])
    with storage.open_store("lmdb", tmp_path / "old", "a") as store:
        store.write_batch(images[200:], labels[200:])
        store.write_one(images[0], 5)
    with lmdb.open(str(tmp_path / "old"), readonly=True, lock=False) as env, env.begin() as txn:
        assert len(txn.get(b"0000000250")) == lmdb_store.HEADER.size + 32 * 32 * 3  # still one record per image
        assert txn.get(b"#chunk:0000000200") is None
    with storage.open_store("lmdb", tmp_path / "old") as store:
        read, read_labels = store.read_all()
        np.testing.assert_array_equal(read, np.concatenate([images, images[:1]]))
        np.testing.assert_array_equal(read_labels, [*labels, 5])
        ids = [250, 3, 299, 300, 17]
        np.testing.assert_array_equal(store.read_batch(ids)[0], np.concatenate([images, images[:1]])[ids])


def test_lmdb_full_disk_is_an_error_before_the_batch_and_keeps_the_store(tmp_path, cifar, monkeypatch):
    """Writes go through LMDB's write map; the space is reserved first, where a full disk can fail cleanly."""
    images, labels = cifar
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images[:100], labels[:100])

        def no_space(fd, offset, length):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(lmdb_store.os, "posix_fallocate", no_space)
        with pytest.raises(storage.StoreFullError, match="is full: the write needed about") as caught:
            store.write_batch(np.concatenate([images] * 20), np.concatenate([labels] * 20))
        assert isinstance(caught.value, OSError)
        assert len(store) == 100
    with storage.open_store("lmdb", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_all()[0], images[:100])


def test_lmdb_closing_a_writer_gives_back_the_write_maps_unused_file_tail(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
        assert os.stat(tmp_path / "s" / "data.mdb").st_size == store._env.info()["map_size"]
        used = (store._env.info()["last_pgno"] + 1) * lmdb_store.PAGE_BYTES
    assert os.stat(tmp_path / "s" / "data.mdb").st_size == used < images.nbytes * 1.1


def test_lmdb_opened_twice_in_one_process_says_it_is_in_use_not_corrupt(tmp_path, cifar):
    images, labels = cifar
    writer = storage.open_store("lmdb", tmp_path / "s", "w")
    writer.write_batch(images[:3], labels[:3])
    with pytest.raises(
        storage.StoreInUseError, match="already open in this process by another store object: close that one first"
    ):
        storage.open_store("lmdb", tmp_path / "s")
    writer.close()
    with storage.open_store("lmdb", tmp_path / "s") as reader:  # nothing was harmed
        assert np.array_equal(reader.read_all()[0], images[:3])


def test_lmdb_map_grows_instead_of_failing(tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(lmdb_store, "INITIAL_MAP_BYTES", 64 * 1024)
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        start_size = store._env.info()["map_size"]
        for start in range(0, 300, 100):
            store.write_batch(images[start : start + 100], labels[start : start + 100])
        for image in images[:50]:
            store.write_one(image, 1)
        assert store._env.info()["map_size"] > start_size
    with storage.open_store("lmdb", tmp_path / "s") as store:
        assert len(store) == 350
        np.testing.assert_array_equal(store.read_all()[0][:300], images)


def test_lmdb_recovers_from_map_full_when_the_estimate_falls_short(tmp_path, cifar, monkeypatch):
    """Even with growth-ahead disabled, MapFullError is answered by a bigger map and a redo."""
    images, labels = cifar
    monkeypatch.setattr(lmdb_store, "INITIAL_MAP_BYTES", 64 * 1024)
    monkeypatch.setattr(lmdb_store.LmdbStore, "_grow_map_for", lambda self, extra: None)
    monkeypatch.setattr(lmdb_store.LmdbStore, "chunk_images", 64)
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
        assert store._env.info()["map_size"] >= len(images) * 3 * 1024
    with storage.open_store("lmdb", tmp_path / "s") as store:
        read, read_labels = store.read_all()
        np.testing.assert_array_equal(read, images)
        np.testing.assert_array_equal(read_labels, labels)


def test_lmdb_batch_committed_in_several_transactions_stays_all_or_nothing(tmp_path, cifar, monkeypatch):
    """A long batch commits every COMMIT_EVERY_BYTES; cut off after some commits, it is undone."""
    images, labels = cifar
    monkeypatch.setattr(lmdb_store, "COMMIT_EVERY_BYTES", 20 * 3072)
    monkeypatch.setattr(lmdb_store.LmdbStore, "chunk_images", 16)
    commits = []
    real_commit_so_far = lmdb_store.LmdbStore._commit_so_far
    monkeypatch.setattr(
        lmdb_store.LmdbStore,
        "_commit_so_far",
        lambda self, next_id: (commits.append(next_id), real_commit_so_far(self, next_id)),
    )

    def stop_late(done, total):
        if done >= 160:
            raise KeyboardInterrupt

    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images[:12], labels[:12])
        with pytest.raises(KeyboardInterrupt):
            store.write_batch(images[12:300], labels[12:300], progress=stop_late)
        assert len(commits) >= 5  # records of the cut-off batch were committed to LMDB...
        assert len(store) == 12
    with storage.open_store("lmdb", tmp_path / "s") as store:  # ...and rolled back
        assert len(store) == 12
        with store._env.begin() as txn:
            assert txn.get(lmdb_store.image_key(12)) is None
        np.testing.assert_array_equal(store.read_all()[0], images[:12])
    with storage.open_store("lmdb", tmp_path / "s", "a") as store:
        store.write_batch(images[12:300], labels[12:300])
    with storage.open_store("lmdb", tmp_path / "s") as store:
        read, read_labels = store.read_all()
        np.testing.assert_array_equal(read, images)
        np.testing.assert_array_equal(read_labels, labels)


def test_lmdb_scans_of_a_big_store_leave_no_pages_mapped(tmp_path, cifar, monkeypatch):
    """Above MAPPED_BUDGET_BYTES a scan unmaps what it read, so RSS does not grow with the store."""
    images, labels = cifar
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(np.concatenate([images] * 20), np.concatenate([labels] * 20))  # 6,000 images
    data_file = tmp_path / "s" / "data.mdb"

    def mapped_kib() -> int:
        lines = open("/proc/self/smaps").read().split("\n")
        for index, line in enumerate(lines):
            if line.endswith(str(data_file.resolve())):
                return sum(int(entry.split()[1]) for entry in lines[index + 1 : index + 20] if entry.startswith("Rss:"))
        return 0

    with storage.open_store("lmdb", tmp_path / "s") as store:
        store.read_all()
        assert mapped_kib() > 6000 * 3  # a small store keeps its pages mapped, for the next read
        monkeypatch.setattr(lmdb_store, "MAPPED_BUDGET_BYTES", 1 << 20)
        read, _ = store.read_all()
        assert mapped_kib() < 1024
        np.testing.assert_array_equal(read[-300:], images)


def test_lmdb_readers_share_one_environment_per_process(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("lmdb", tmp_path / "s", "w") as store:
        store.write_batch(images[:4], labels[:4])
    first = storage.open_store("lmdb", tmp_path / "s")
    second = storage.open_store("lmdb", tmp_path / "s")
    assert first._env is second._env
    first.close()
    np.testing.assert_array_equal(second.read_one(2)[0], images[2])  # still open for the other
    second.close()


# -- hdf5 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_hdf5_compression_is_an_option_recorded_in_the_file(tmp_path, cifar, compression):
    images, labels = cifar
    with storage.open_store("hdf5", tmp_path / "s", "w", compression=compression) as store:
        store.write_batch(images, labels)
    with h5py.File(tmp_path / "s" / "images.h5", "r") as file:
        assert file["images"].compression == compression
        assert file.attrs["compression"] == str(compression)
        assert file["images"].dtype == np.uint8 and file["images"].shape == images.shape
        np.testing.assert_array_equal(file["images"][()], images)  # plain h5py reads it
        np.testing.assert_array_equal(file["labels"][()], labels)
    with storage.open_store("hdf5", tmp_path / "s", "a") as store:  # the option sticks on reopen
        assert store.options["compression"] == compression
        store.write_batch(images[:5], labels[:5])
    with storage.open_store("hdf5", tmp_path / "s") as store:
        assert len(store) == 305


def test_hdf5_chunking_option(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("hdf5", tmp_path / "s", "w", chunk_images=16) as store:
        store.write_batch(images, labels)
    with h5py.File(tmp_path / "s" / "images.h5", "r") as file:
        assert file["images"].chunks == (16, 32, 32, 3)
        assert file["images"].maxshape == (None, 32, 32, 3)


def test_hdf5_uniform_layout_refuses_another_size_with_a_hint(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("hdf5", tmp_path / "s", "w", layout="uniform") as store:
        store.write_batch(images[:4], labels[:4])
        with pytest.raises(storage.ImageShapeError, match="layout='variable'"):
            store.write_batch(np.zeros((2, 8, 8, 3), np.uint8), [0, 1])
        assert len(store) == 4


def test_hdf5_auto_layout_turns_variable_when_another_size_arrives(tmp_path, cifar):
    images, labels = cifar
    small = np.full((2, 8, 8, 3), 7, np.uint8)
    with storage.open_store("hdf5", tmp_path / "s", "w") as store:
        store.write_batch(images[:40], labels[:40])
        store.write_batch(small, [0, 1])
    with h5py.File(tmp_path / "s" / "images.h5", "r") as file:
        assert file.attrs["layout"] == "variable"
    with storage.open_store("hdf5", tmp_path / "s") as store:
        read, read_labels = store.read_all()
        assert [image.shape for image in read] == [(32, 32, 3)] * 40 + [(8, 8, 3)] * 2
        np.testing.assert_array_equal(np.stack(read[:40]), images[:40])
        np.testing.assert_array_equal(read[41], small[1])


def test_hdf5_variable_layout_stores_shapes(tmp_path, cifar):
    images = [cifar[0][0], cifar[0][1][:7, :9], cifar[0][2][:, :, 0]]
    with storage.open_store("hdf5", tmp_path / "s", "w") as store:
        store.write_batch(images, [1, 2, 3])
    with h5py.File(tmp_path / "s" / "images.h5", "r") as file:
        assert file.attrs["layout"] == "variable"
        assert file["shapes"][()].tolist() == [[32, 32, 3], [7, 9, 3], [32, 32, 0]]


def test_hdf5_bad_option_values(tmp_path):
    with pytest.raises(storage.ModeError, match="compression"):
        storage.open_store("hdf5", tmp_path / "s", "w", compression="zip")
    with pytest.raises(storage.ModeError, match="layout"):
        storage.open_store("hdf5", tmp_path / "s", "w", layout="ragged")


def test_hdf5_file_damaged_on_disk_is_reported(tmp_path, cifar):
    with storage.open_store("hdf5", tmp_path / "s", "w") as store:
        store.write_batch(cifar[0][:3], [0, 1, 2])
    (tmp_path / "s" / "images.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(storage.CorruptDataError, match="not a readable HDF5 file"):
        storage.open_store("hdf5", tmp_path / "s")
