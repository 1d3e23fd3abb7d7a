"""What each of the added formats promises beyond the conformance suite.

The suite checks that every backend stores and returns images; these tests check that
each one writes what it says (real JPEG/WebP files, a raw file NumPy can map, a Zarr v3
array with shards, tar shards the ``webdataset`` package reads, Parquet files pyarrow
reads, PNG values in LMDB, HDF5 compression filters) and undoes a cut-off write in its
own files.
"""

from __future__ import annotations

import io
import os
import re
import tarfile

import h5py
import lmdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset
import zarr
from PIL import Image, JpegImagePlugin

import storage
from storage import mapped_files
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10
from storage.formats import lmdb_store, npy_store, webdataset_store
from storage.formats.image_files import LossyWebpFilesStore

NEW_BACKENDS = [
    "npy",
    "jpeg",
    "webp",
    "lmdb-png",
    "hdf5-gzip",
    "hdf5-lzf",
    "hdf5-blosc",
    "zarr",
    "webdataset",
    "parquet",
]


@pytest.fixture(scope="module")
def cifar():
    images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
    return images[:300], labels[:300]


def psnr(expected: np.ndarray, actual: np.ndarray) -> float:
    error = np.mean((expected.astype(np.float64) - actual.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


def write(backend: str, path, images, labels, **options):
    with storage.open_store(backend, path, "w", **options) as store:
        store.write_batch(images, labels)


class Cancel(Exception):
    pass


def cancel_after(images: int):
    def progress(done: int, total: int) -> None:
        if done >= images:
            raise Cancel()

    return progress


def test_every_new_backend_is_registered_with_its_capabilities():
    assert set(NEW_BACKENDS) | {"webp-lossy"} <= set(storage.backends())
    assert not storage.backend_info("webp-lossy").lossless and storage.backend_info("webp").lossless
    assert storage.backend_info("hdf5-blosc").variable_shapes is False
    assert storage.backend_info("zarr").variable_shapes is False
    assert storage.backend_info("jpeg").channels == (1, 3)
    assert not storage.backend_info("jpeg").lossless


@pytest.mark.parametrize("backend", NEW_BACKENDS)
def test_options_are_recorded_and_bad_ones_refused(backend, tmp_path, cifar):
    write(backend, tmp_path / "s", cifar[0][:3], cifar[1][:3])
    with storage.open_store(backend, tmp_path / "s") as store:
        assert store.options == storage.store_class(backend).default_options
    bad = {
        "jpeg": {"quality": 0},
        "webp": {"method": 9},
        "lmdb-png": {"compress_level": 10},
        "hdf5-gzip": {"compression": "lzf"},
        "hdf5-lzf": {"compression_opts": 3},
        "hdf5-blosc": {"cname": "brotli"},
        "zarr": {"compressor": "bz2"},
        "webdataset": {"payload": "jpg"},
        "parquet": {"compression": "bz2"},
        "npy": {"compression": "gzip"},
    }[backend]
    with pytest.raises(storage.ModeError):
        storage.open_store(backend, tmp_path / "t", "w", **bad)


# -- jpeg and webp ------------------------------------------------------------------------------


def test_jpeg_files_are_jpegs_at_quality_95_with_full_chroma(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("jpeg", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
        path = store.codec.path(17)
    assert path.endswith(".jpg")
    with Image.open(path) as picture:
        assert picture.format == "JPEG" and picture.size == (32, 32)
        assert JpegImagePlugin.get_sampling(picture) == 0  # 4:4:4
        np.testing.assert_array_equal(np.asarray(picture), storage.open_store("jpeg", tmp_path / "s").read_one(17)[0])
    with storage.open_store("jpeg", tmp_path / "s") as store:
        read, _ = store.read_all()
    values = [psnr(want, got) for want, got in zip(images, read)]
    assert np.mean(values) > 38 and min(values) > 35


def test_jpeg_quality_trades_size_for_fidelity(tmp_path, cifar):
    images, labels = cifar
    sizes, fidelity = {}, {}
    for quality in (50, 95):
        write("jpeg", tmp_path / str(quality), images, labels, quality=quality)
        with storage.open_store("jpeg", tmp_path / str(quality)) as store:
            sizes[quality] = store.disk_usage().apparent_bytes
            fidelity[quality] = psnr(images, store.read_all()[0])
    assert sizes[50] < sizes[95] and fidelity[50] < fidelity[95]


def test_jpeg_refuses_alpha_with_a_clear_error(tmp_path, cifar):
    rgba = np.concatenate([cifar[0][:2], np.full((2, 32, 32, 1), 255, np.uint8)], axis=-1)
    with storage.open_store("jpeg", tmp_path / "s", "w") as store:
        with pytest.raises(storage.ImageShapeError, match="4 channel"):
            store.write_batch(rgba, [0, 1])
        assert len(store) == 0


def test_webp_is_lossless_even_under_transparent_pixels(tmp_path, cifar):
    rgba = np.concatenate([cifar[0][:8], np.zeros((8, 32, 32, 1), np.uint8)], axis=-1)  # fully transparent
    with storage.open_store("webp", tmp_path / "s", "w") as store:
        store.write_batch(rgba, range(8))
        path = store.codec.path(3)
    with Image.open(path) as picture:
        assert picture.format == "WEBP"
        np.testing.assert_array_equal(np.asarray(picture), rgba[3])
    with storage.open_store("webp", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_all()[0], rgba)


def test_webp_lossy_is_registered_and_is_smaller_than_lossless(tmp_path, cifar):
    images, labels = cifar
    assert storage.store_class("webp-lossy") is LossyWebpFilesStore
    write("webp-lossy", tmp_path / "lossy", images, labels)
    write("webp", tmp_path / "lossless", images, labels)
    with storage.open_store("webp-lossy", tmp_path / "lossy") as lossy:
        read, read_labels = lossy.read_all()
        lossy_bytes = lossy.disk_usage().apparent_bytes
    np.testing.assert_array_equal(read_labels, labels)
    assert psnr(images, read) > 33
    with storage.open_store("webp", tmp_path / "lossless") as lossless:
        assert lossy_bytes < 0.6 * lossless.disk_usage().apparent_bytes


# -- npy ------------------------------------------------------------------------------------------


def test_npy_data_file_is_the_raw_array_and_the_index_is_plain_numpy(tmp_path, cifar):
    images, labels = cifar
    write("npy", tmp_path / "s", images, labels)
    mapped = np.memmap(tmp_path / "s" / "images.u8", dtype=np.uint8, mode="r").reshape(images.shape)
    np.testing.assert_array_equal(mapped, images)
    del mapped
    index = np.fromfile(tmp_path / "s" / "index.bin", dtype=npy_store.RECORD)
    np.testing.assert_array_equal(index["label"], labels)
    np.testing.assert_array_equal(index["offset"], np.arange(len(images)) * images[0].nbytes)
    assert set(index["channels"]) == {3}


def test_npy_mixed_sizes_sit_end_to_end(tmp_path, cifar):
    images = [cifar[0][0], cifar[0][1][:5, :7], cifar[0][2][:, :, 0]]
    write("npy", tmp_path / "s", images, [0, 1, 2])
    raw = (tmp_path / "s" / "images.u8").read_bytes()
    assert raw == b"".join(image.tobytes() for image in images)
    index = np.fromfile(tmp_path / "s" / "index.bin", dtype=npy_store.RECORD)
    assert index["offset"].tolist() == [0, 3072, 3072 + 105]
    assert index[2]["channels"] == 0


def test_npy_cancelled_append_truncates_both_files(tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(npy_store.NpyStore, "chunk_images", 16)
    write("npy", tmp_path / "s", images[:20], labels[:20])
    with storage.open_store("npy", tmp_path / "s", "a") as store:
        with pytest.raises(Cancel):
            store.write_batch(images[20:100], labels[20:100], progress=cancel_after(32))
    assert os.path.getsize(tmp_path / "s" / "images.u8") == 20 * images[0].nbytes
    assert os.path.getsize(tmp_path / "s" / "index.bin") == 20 * npy_store.RECORD.itemsize


def test_npy_reads_through_a_map_that_close_releases(tmp_path, cifar):
    images, labels = cifar
    write("npy", tmp_path / "s", images, labels)
    store = storage.open_store("npy", tmp_path / "s")
    store.read_batch([5, 1, 200])
    assert store._map is not None
    store.close()
    assert store._map is None


def test_npy_gathers_from_a_big_store_without_mapping_it(tmp_path, cifar, monkeypatch):
    """Above the mapped budget random ids are read with pread: the same images, no map."""
    images, labels = cifar
    write("npy", tmp_path / "s", images, labels)
    monkeypatch.setattr(mapped_files, "BUDGET_BYTES", 1024)
    with storage.open_store("npy", tmp_path / "s") as store:
        ids = [199, 5, 1, 5, 120]
        read, read_labels = store.read_batch(ids)
        np.testing.assert_array_equal(read, images[ids])
        np.testing.assert_array_equal(read_labels, labels[ids])
        assert store._map is None


# -- zarr -----------------------------------------------------------------------------------------


def test_zarr_is_a_sharded_v3_array_any_zarr_reader_opens(tmp_path, cifar):
    images, labels = cifar
    write("zarr", tmp_path / "s", images, labels, shard_images=128)
    group = zarr.open_group(str(tmp_path / "s" / "images.zarr"), mode="r")
    array = group["images"]
    assert array.metadata.zarr_format == 3
    assert array.shape == images.shape and array.dtype == np.uint8
    assert array.chunks == (1, 32, 32, 3) and array.shards == (128, 32, 32, 3)
    assert type(array.compressors[0]).__name__ == "ZstdCodec"
    np.testing.assert_array_equal(array[:], images)
    np.testing.assert_array_equal(group["labels"][:], labels)
    shard_files = os.listdir(tmp_path / "s" / "images.zarr" / "images" / "c")
    assert sorted(shard_files, key=int) == ["0", "1", "2"]  # 300 images in shards of 128


def test_zarr_cancelled_append_shrinks_the_array_and_deletes_its_shards(tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(storage.store_class("zarr"), "chunk_images", 64)
    write("zarr", tmp_path / "s", images[:100], labels[:100], shard_images=50)
    with storage.open_store("zarr", tmp_path / "s", "a") as store:
        with pytest.raises(Cancel):
            store.write_batch(images[100:300], labels[100:300], progress=cancel_after(128))
    group = zarr.open_group(str(tmp_path / "s" / "images.zarr"), mode="r")
    assert group["images"].shape[0] == 100 and group["labels"].shape[0] == 100
    assert sorted(os.listdir(tmp_path / "s" / "images.zarr" / "images" / "c"), key=int) == ["0", "1"]


@pytest.mark.parametrize("compressor", [None, "blosc", "gzip"])
def test_zarr_compressor_option(tmp_path, cifar, compressor):
    images, labels = cifar
    write("zarr", tmp_path / "s", images[:40], labels[:40], compressor=compressor)
    with storage.open_store("zarr", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_all()[0], images[:40])
    array = zarr.open_group(str(tmp_path / "s" / "images.zarr"), mode="r")["images"]
    assert len(array.compressors) == (0 if compressor is None else 1)


def test_zarr_inner_chunks_of_several_images(tmp_path, cifar):
    images, labels = cifar
    with pytest.raises(storage.ModeError, match="multiple"):
        storage.open_store("zarr", tmp_path / "bad", "w", shard_images=100, chunk_images=30)
    write("zarr", tmp_path / "s", images[:7], labels[:7], shard_images=40, chunk_images=10)
    with storage.open_store("zarr", tmp_path / "s", "a") as store:
        store.write_batch(images[7:133], labels[7:133])
        store.write_one(images[133], labels[133])
    array = zarr.open_group(str(tmp_path / "s" / "images.zarr"), mode="r")["images"]
    assert array.chunks == (10, 32, 32, 3) and array.shards == (40, 32, 32, 3)
    with storage.open_store("zarr", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_all()[0], images[:134])
        np.testing.assert_array_equal(store.read_batch([133, 8, 77])[0], images[[133, 8, 77]])


def test_zarr_single_writes_wait_in_the_open_shard_until_it_fills(tmp_path, cifar):
    images, _ = cifar
    with storage.open_store("zarr", tmp_path / "s", "w", shard_images=10) as store:
        for image_id in range(25):
            store.write_one(images[image_id], image_id)
        assert store._written == 20  # two full shards written, five images pending
        np.testing.assert_array_equal(store.read_one(23)[0], images[23])
    with storage.open_store("zarr", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_all()[0], images[:25])


def write_in_pieces(path, images, labels, **options):
    """A batch, an append that ends mid-shard, single images, and an append after them."""
    write("zarr", path, images[:7], labels[:7], **options)
    with storage.open_store("zarr", path, "a") as store:
        store.write_batch(images[7:133], labels[7:133])
        for image_id in range(133, 140):
            store.write_one(images[image_id], labels[image_id])
        store.write_batch(images[140:171], labels[140:171])


@pytest.mark.parametrize("compressor", [None, "zstd", "blosc", "gzip"])
@pytest.mark.parametrize("chunk_images", [1, 10])
def test_zarr_shards_written_here_read_bit_exactly_in_zarr_python(tmp_path, cifar, compressor, chunk_images):
    images, labels = cifar
    images = images.copy()
    images[40:60] = 0  # whole chunks of zeros, which zarr-python itself would leave unwritten
    write_in_pieces(tmp_path / "s", images, labels, shard_images=40, chunk_images=chunk_images, compressor=compressor)
    group = zarr.open_group(str(tmp_path / "s" / "images.zarr"), mode="r")
    array = group["images"]
    assert (
        array.shape == (171, 32, 32, 3)
        and array.chunks == (chunk_images, 32, 32, 3)
        and array.shards == (40, 32, 32, 3)
    )
    np.testing.assert_array_equal(array[:], images[:171])
    np.testing.assert_array_equal(array[133], images[133])
    np.testing.assert_array_equal(group["labels"][:], labels[:171])
    assert not [name for name in os.listdir(tmp_path / "s") if name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("compressor", [None, "zstd", "blosc", "gzip"])
@pytest.mark.parametrize("chunk_images, separator", [(1, "/"), (10, "/"), (4, ".")])
def test_zarr_shards_written_by_zarr_python_read_bit_exactly_here(tmp_path, cifar, compressor, chunk_images, separator):
    """The images array rewritten by zarr-python (its chunk order, all-zero chunks and shards left out)."""
    from storage.formats.zarr_shards import ShardedImages
    from storage.formats.zarr_store import make_compressors

    images, labels = cifar
    write("zarr", tmp_path / "s", images[:170], labels[:170], shard_images=40, chunk_images=chunk_images)
    replaced = images[::-1][:170].copy()
    replaced[80:120] = 0  # a whole shard of zeros: zarr-python writes no file for it
    replaced[7] = 0
    group = zarr.open_group(str(tmp_path / "s" / "images.zarr"), mode="r+")
    group.create_array(
        "images",
        shape=replaced.shape,
        chunks=(chunk_images, 32, 32, 3),
        shards=(40, 32, 32, 3),
        dtype="uint8",
        compressors=make_compressors(compressor, 5),
        fill_value=0,
        chunk_key_encoding={"name": "default", "separator": separator},
        overwrite=True,
    )[:] = replaced
    with storage.open_store("zarr", tmp_path / "s") as store:
        assert isinstance(store._images, ShardedImages)
        np.testing.assert_array_equal(store.read_all()[0], replaced)
        np.testing.assert_array_equal(store.read_batch([169, 7, 90, 3])[0], replaced[[169, 7, 90, 3]])
        np.testing.assert_array_equal(store.read_one(41)[0], replaced[41])
    with storage.open_store("zarr", tmp_path / "s", "a") as store:  # appends into zarr-python's last shard
        store.write_batch(images[:15], labels[:15])
    with storage.open_store("zarr", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_all()[0], np.concatenate([replaced, images[:15]]))


def test_zarr_array_of_another_layout_is_read_and_written_through_zarr_python(tmp_path, cifar):
    from storage.formats.zarr_store import ZarrPythonImages

    images, labels = cifar
    write("zarr", tmp_path / "s", images[:30], labels[:30])
    group = zarr.open_group(str(tmp_path / "s" / "images.zarr"), mode="r+")
    group.create_array("images", shape=(30, 32, 32, 3), chunks=(8, 32, 32, 3), dtype="uint8", overwrite=True)[:] = (
        images[:30]
    )
    with storage.open_store("zarr", tmp_path / "s", "a") as store:  # not sharded: not read here
        assert isinstance(store._images, ZarrPythonImages)
        store.write_batch(images[30:45], labels[30:45])
        np.testing.assert_array_equal(store.read_batch([44, 2])[0], images[[44, 2]])
    with storage.open_store("zarr", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_all()[0], images[:45])


def test_zarr_reads_without_python_zstd(tmp_path, cifar, monkeypatch):
    """numcodecs alone decodes single images when the optional ``zstd`` package is missing."""
    from storage.formats import zarr_shard_format

    images, labels = cifar
    write("zarr", tmp_path / "s", images[:50], labels[:50])
    monkeypatch.setattr(zarr_shard_format, "fast_zstd", None)
    with storage.open_store("zarr", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_one(17)[0], images[17])
        np.testing.assert_array_equal(store.read_batch([40, 2, 17])[0], images[[40, 2, 17]])


@pytest.mark.parametrize("damage", ["index", "chunk"])
def test_zarr_damaged_shard_is_reported_with_its_file(tmp_path, cifar, damage):
    images, labels = cifar
    write("zarr", tmp_path / "s", images[:100], labels[:100], shard_images=50)
    shard = tmp_path / "s" / "images.zarr" / "images" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-20 if damage == "index" else 1] ^= 0xFF  # an index entry, or a zstd frame's magic number
    shard.write_bytes(bytes(data))
    with storage.open_store("zarr", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_one(3)[0], images[3])  # the other shard is fine
        for read in (lambda: store.read_one(50), lambda: store.read_all(), lambda: store.read_batch([50, 1])):
            with pytest.raises(storage.CorruptDataError, match=re.escape(str(shard))):
                read()


# -- webdataset -----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["npy", "png"])
def test_webdataset_shards_stream_through_the_webdataset_package(tmp_path, cifar, payload):
    images, labels = cifar
    with storage.open_store("webdataset", tmp_path / "s", "w", shard_images=128, payload=payload) as store:
        store.write_batch(images[:200], labels[:200])
    with storage.open_store("webdataset", tmp_path / "s", "a") as store:
        store.write_batch(images[200:], labels[200:])
        shards = store.shard_paths()
    assert [os.path.basename(path) for path in shards] == [f"shard-{n:06d}.tar" for n in range(3)]
    dataset = webdataset.WebDataset(shards, shardshuffle=False).decode("rgb8" if payload == "png" else "l")
    samples = list(dataset)
    assert [sample["__key__"] for sample in samples] == [f"{i:09d}" for i in range(len(images))]
    for sample in samples:
        image_id = int(sample["__key__"])
        np.testing.assert_array_equal(sample[payload], images[image_id])
        assert sample["cls"] == labels[image_id]


def test_webdataset_shards_are_plain_deterministic_tar_files(tmp_path, cifar):
    images, labels = cifar
    for name in ("a", "b"):
        write("webdataset", tmp_path / name, images[:30], labels[:30], shard_images=16)
    for shard in ("shard-000000.tar", "shard-000001.tar"):
        assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()
    with tarfile.open(tmp_path / "a" / "shard-000001.tar") as archive:
        members = archive.getmembers()
    assert [member.name for member in members[:2]] == ["000000016.npy", "000000016.cls"]
    assert len(members) == 2 * 14 and all(member.mtime == 0 for member in members)
    assert np.array_equal(np.load(io.BytesIO(archive_member(tmp_path / "a" / "shard-000001.tar", 0))), images[16])


def archive_member(path, position: int) -> bytes:
    with tarfile.open(path) as archive:
        return archive.extractfile(archive.getmembers()[position]).read()


def test_webdataset_index_points_at_the_pixels(tmp_path, cifar):
    images, labels = cifar
    write("webdataset", tmp_path / "s", images[:20], labels[:20])
    index = np.fromfile(tmp_path / "s" / "index.bin", dtype=webdataset_store.RECORD)
    data = (tmp_path / "s" / "shard-000000.tar").read_bytes()
    for image_id in (0, 7, 19):
        record = index[image_id]
        pixels = data[record["offset"] : record["offset"] + record["size"]]
        assert pixels == images[image_id].tobytes()
    assert index["label"].tolist() == labels[:20].tolist()


def test_webdataset_cancelled_append_leaves_a_valid_tar(tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(storage.store_class("webdataset"), "chunk_images", 8)
    write("webdataset", tmp_path / "s", images[:10], labels[:10], shard_images=16)
    with storage.open_store("webdataset", tmp_path / "s", "a") as store:
        with pytest.raises(Cancel):
            store.write_batch(images[10:60], labels[10:60], progress=cancel_after(24))
    assert sorted(os.listdir(tmp_path / "s")) == ["checksums.bin", "index.bin", "shard-000000.tar", "store.json"]
    with tarfile.open(tmp_path / "s" / "shard-000000.tar") as archive:
        assert len(archive.getmembers()) == 20
    with storage.open_store("webdataset", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_all()[0], images[:10])


# -- parquet --------------------------------------------------------------------------------------


def test_parquet_parts_are_plain_parquet_with_one_row_per_image(tmp_path, cifar):
    images, labels = cifar
    write("parquet", tmp_path / "s", images[:250], labels[:250])
    with storage.open_store("parquet", tmp_path / "s", "a") as store:
        store.write_batch(images[250:], labels[250:])
        parts = store.part_paths()
    assert [os.path.basename(path) for path in parts] == ["part-00000.parquet", "part-00001.parquet"]
    first = pq.ParquetFile(parts[0])
    assert first.schema_arrow.names == ["image", "height", "width", "channels", "label"]
    assert [first.metadata.row_group(i).num_rows for i in range(first.num_row_groups)] == [100, 100, 50]
    table = pq.read_table(parts[0])
    assert table.column("image")[42].as_py() == images[42].tobytes()
    assert table.column("label").to_pylist() == labels[:250].tolist()
    assert set(table.column("channels").to_pylist()) == {3}


def test_parquet_png_encoding(tmp_path, cifar):
    images, labels = cifar
    write("parquet", tmp_path / "s", images[:50], labels[:50], encoding="png")
    table = pq.read_table(tmp_path / "s" / "part-00000.parquet")
    with Image.open(io.BytesIO(table.column("image")[3].as_py())) as picture:
        np.testing.assert_array_equal(np.asarray(picture), images[3])
    with storage.open_store("parquet", tmp_path / "s") as store:
        np.testing.assert_array_equal(store.read_batch([49, 3, 3])[0], images[[49, 3, 3]])


def test_parquet_cancelled_append_removes_its_part(tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(storage.store_class("parquet"), "chunk_images", 50)
    write("parquet", tmp_path / "s", images[:20], labels[:20])
    with storage.open_store("parquet", tmp_path / "s", "a") as store:
        with pytest.raises(Cancel):
            store.write_batch(images[20:300], labels[20:300], progress=cancel_after(150))
    assert sorted(os.listdir(tmp_path / "s")) == ["checksums.bin", "part-00000.parquet", "store.json"]


def test_parquet_single_writes_become_one_part_at_close(tmp_path, cifar):
    images, _ = cifar
    with storage.open_store("parquet", tmp_path / "s", "w", row_group_rows=64) as store:
        for image_id in range(150):
            store.write_one(images[image_id], image_id)
    parts = sorted(os.listdir(tmp_path / "s"))
    assert parts == ["checksums.bin", "part-00000.parquet", "store.json"]
    metadata = pq.ParquetFile(tmp_path / "s" / "part-00000.parquet").metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [64, 64, 22]


# -- lmdb-png -------------------------------------------------------------------------------------


def test_lmdb_png_values_are_png_and_smaller_than_raw_pixels(tmp_path, cifar):
    images, labels = cifar
    write("lmdb-png", tmp_path / "png", images, labels)
    write("lmdb", tmp_path / "raw", images, labels)
    environment = lmdb.open(str(tmp_path / "png"), readonly=True, lock=False)
    with environment.begin() as txn:
        value = txn.get(b"0000000007")
        value_bytes = sum(len(txn.get(b"%010d" % image_id)) for image_id in range(len(images)))
    environment.close()
    header = lmdb_store.HEADER.size
    assert lmdb_store.HEADER.unpack_from(value) == (labels[7], 32, 32, 3)
    assert value[header : header + 8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(value[header:])) as picture:
        np.testing.assert_array_equal(np.asarray(picture), images[7])
    assert value_bytes < images.nbytes
    # On disk the PNG records lose: each takes whole overflow pages, while plain lmdb packs
    # a chunk's raw pixels into one record.
    with storage.open_store("lmdb-png", tmp_path / "png") as png, storage.open_store("lmdb", tmp_path / "raw") as raw:
        assert raw.disk_usage().allocated_bytes < png.disk_usage().allocated_bytes


# -- compressed hdf5 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "compression", "opts"),
    [("hdf5-gzip", "gzip", 4), ("hdf5-lzf", "lzf", None), ("hdf5-blosc", "unknown", None)],
)
def test_hdf5_compression_is_recorded_in_the_file(tmp_path, cifar, backend, compression, opts):
    images, labels = cifar
    write(backend, tmp_path / "s", images, labels)
    with h5py.File(tmp_path / "s" / "images.h5", "r") as file:
        dataset = file["images"]
        assert dataset.compression == compression  # h5py names only its own filters
        assert file.attrs["compression"] == backend.split("-")[1]
        if backend == "hdf5-gzip":
            assert dataset.compression_opts == opts
        if backend == "hdf5-blosc":
            assert "32001" in dataset._filters  # the Blosc filter id
            assert file.attrs["blosc"] == "zstd:5:byte"
        np.testing.assert_array_equal(dataset[:], images)


def test_hdf5_gzip_is_smaller_than_plain_hdf5(tmp_path, cifar):
    images, labels = cifar
    write("hdf5", tmp_path / "plain", images, labels)
    write("hdf5-gzip", tmp_path / "gzip", images, labels)
    plain = storage.measure_disk_usage(tmp_path / "plain").apparent_bytes
    assert storage.measure_disk_usage(tmp_path / "gzip").apparent_bytes < 0.95 * plain


def test_hdf5_blosc_refuses_the_variable_layout(tmp_path, cifar):
    with pytest.raises(storage.ModeError, match="variable-length"):
        storage.open_store("hdf5-blosc", tmp_path / "s", "w", layout="variable")
    write("hdf5-blosc", tmp_path / "s", cifar[0][:4], cifar[1][:4])
    with storage.open_store("hdf5-blosc", tmp_path / "s", "a") as store:
        with pytest.raises(storage.ImageShapeError, match="one image size"):
            store.write_batch([cifar[0][0][:8, :8]], [0])
        assert len(store) == 4
