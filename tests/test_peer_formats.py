"""What the peer backends write is their library's own format, readable by the library alone.

The conformance suite checks the interface; these tests open the files with LitData,
MosaicML Streaming, Lance, Hugging Face ``datasets`` and FFCV directly, as a user of those
libraries would, and check what the parts, shards and versions look like after appends and
cut-off writes. FFCV is an optional extra: its tests skip, saying so, where it is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import storage
from storage.datasets import SAMPLE_CIFAR10_DIR, load_cifar10

ROOT = Path(__file__).resolve().parents[1]


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
    assert dataset.schema.names == ["image", "label", "id"]  # one size: Lance's fixed-size column for tensors
    assert dataset.schema.field("image").type == pa.binary(32 * 32 * 3)
    row = dataset.take([42]).to_pylist()[0]
    assert (row["label"], row["id"]) == (labels[42], 42)
    np.testing.assert_array_equal(np.frombuffer(row["image"], np.uint8).reshape(32, 32, 3), images[42])


def test_lance_turns_variable_when_another_size_comes_and_a_cut_off_turn_restores_the_fixed_rows(
    tmp_path, cifar, monkeypatch
):
    import lance

    images, labels = cifar
    smaller = [image[:20, :24] for image in images[100:110]]
    with storage.open_store("lance", tmp_path / "s", "w") as store:
        store.write_batch(images[:100], labels[:100])
        monkeypatch.setattr(storage.store_class("lance"), "chunk_bytes", 10 * smaller[0].nbytes)  # an append per 10
        with pytest.raises(Cancel):
            store.write_batch(smaller + smaller, list(range(20)), progress=cancel_after_first_chunk)
        versions = [entry["version"] for entry in lance.dataset(store.dataset_uri).versions()]
        schemas = [lance.dataset(store.dataset_uri, version=v).schema.names for v in versions]
        assert ["image", "height", "width", "channels", "label", "id"] in schemas  # it had been rewritten...
        assert schemas[-1] == ["image", "label", "id"]
        assert store.backend_state["layout"] == "fixed"  # ...and the committed fixed rows are what it reads
        np.testing.assert_array_equal(store.read_all()[0], images[:100])
        store.write_batch(smaller, labels[100:110])
        assert store.backend_state["layout"] == "variable"
    dataset = lance.dataset(str(tmp_path / "s" / "images.lance"))
    assert dataset.schema.names == ["image", "height", "width", "channels", "label", "id"]
    with storage.open_store("lance", tmp_path / "s") as store:
        read, read_labels = store.read_all()
    assert [image.shape for image in read] == [(32, 32, 3)] * 100 + [(20, 24, 3)] * 10
    for got, want in zip(read, [*images[:100], *smaller]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(read_labels, labels[:110])


def test_a_lance_store_of_the_variable_layout_written_before_still_reads(tmp_path, cifar):
    """Stores written before the fixed-size column: variable binary plus shape columns, no ``layout``."""
    import json

    import lance

    from storage.formats.lance_store import LANCE_SCHEMA
    from storage.formats.parquet_store import image_table

    images, labels = cifar
    with storage.open_store("lance", tmp_path / "s", "w") as store:
        store.write_batch(images[:10], labels[:10])
    table = image_table(images[:50], labels[:50])[0].append_column("id", pa.array(np.arange(50)))
    written = lance.write_dataset(table, str(tmp_path / "s" / "images.lance"), schema=LANCE_SCHEMA, mode="overwrite")
    manifest = json.loads((tmp_path / "s" / "store.json").read_text())
    manifest["count"] = 50
    manifest["backend_state"] = {
        key: value for key, value in manifest["backend_state"].items() if key not in ("layout", "layout_shape")
    }
    manifest["backend_state"]["version"] = written.version
    (tmp_path / "s" / "store.json").write_text(json.dumps(manifest))
    with storage.open_store("lance", tmp_path / "s") as store:
        read, read_labels = store.read_batch([49, 0, 7])
        everything = store.read_all()[0]
    np.testing.assert_array_equal(read, images[[49, 0, 7]])
    np.testing.assert_array_equal(everything, images[:50])
    np.testing.assert_array_equal(read_labels, labels[[49, 0, 7]])


def test_lance_random_reads_keep_the_order_and_repeats_asked_for(tmp_path, cifar):
    images, labels = cifar
    with storage.open_store("lance", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
    ids = np.array([299, 3, 3, 150, 0, 42])
    with storage.open_store("lance", tmp_path / "s") as store:
        read, read_labels = store.read_batch(ids)
    np.testing.assert_array_equal(read, images[ids])
    np.testing.assert_array_equal(read_labels, labels[ids])


FFCV_MISSING = pytest.mark.skipif(
    not storage.backend_info("ffcv").available,
    reason=f"FFCV is not installed: {storage.backend_info('ffcv').unavailable_reason}",
)
OWN_LIBRARY = {"litdata": "litdata", "mds": "streaming", "lance": "lance", "hf-datasets": "datasets", "ffcv": "ffcv"}


def own_library(loader) -> str:
    """The top package of what does the loading: the dataset of a DataLoader, or FFCV's Loader(s) itself."""
    thing = getattr(loader, "dataset", None) or getattr(loader, "loaders", [loader])[0]
    return type(thing).__module__.split(".")[0]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("backend", ["litdata", "mds", "lance", "hf-datasets"])
def test_each_peer_loads_through_its_own_dataset_class_every_image_once(backend, workers, tmp_path, cifar):
    """The loader a format's users write: the library's own dataset class shuffles, the batches
    carry ids, and an epoch holds every image exactly once, bit for bit (FFCV's Loader: below)."""
    from storage.torch import make_store_loader

    images, labels = cifar
    with storage.open_store(backend, tmp_path / "s", "w") as store:
        store.write_batch(images[:150], labels[:150])
        store.write_batch(images[150:], labels[150:])  # two parts / two appends
    loader = make_store_loader(backend, tmp_path / "s", 64, workers, seed=3, timeout=120)
    assert own_library(loader) == OWN_LIBRARY[backend]
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


@pytest.mark.parametrize("writer", ["optimize", "binary-writer"])
def test_litdata_is_written_by_optimize_or_its_in_process_writer_and_reads_the_same(writer, tmp_path, cifar):
    """``optimize`` (LitData's own conversion, worker processes) and the in-process BinaryWriter write
    the same samples, in id order; the start method optimize sets for the process is put back."""
    import multiprocessing

    from litdata import StreamingDataset

    images, labels = cifar
    method = multiprocessing.get_start_method(allow_none=True)
    with storage.open_store("litdata", tmp_path / "s", "w", writer=writer) as store:
        store.write_batch(images, labels)
        (part,) = store.part_paths()
    assert multiprocessing.get_start_method(allow_none=True) == method
    names = sorted(path.name for path in part.iterdir())
    assert "index.json" in names and all(name.startswith("chunk-") for name in names if name != "index.json")
    dataset = StreamingDataset(str(part))
    assert [dataset[i]["id"] for i in range(len(dataset))] == list(range(300))
    with storage.open_store("litdata", tmp_path / "s") as store:
        assert store.options["writer"] == writer
        read, read_labels = store.read_all()  # consecutive ids: LitData's windowed slice
        some, _ = store.read_batch([299, 3, 150])  # scattered ids: one read each
    np.testing.assert_array_equal(read, images)
    np.testing.assert_array_equal(read_labels, labels)
    np.testing.assert_array_equal(some, images[[299, 3, 150]])


def test_an_unknown_litdata_writer_is_refused(tmp_path):
    with pytest.raises(storage.StorageError, match="writer 'fast'"):
        storage.open_store("litdata", tmp_path / "s", "w", writer="fast")


def test_mds_reads_a_range_across_shards_in_one_go_per_shard(tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(storage.store_class("mds"), "chunk_bytes", 40 * images[0].nbytes)  # shards of ~40 images
    with storage.open_store("mds", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
        (part,) = store.part_paths()
    assert len(list(part.glob("shard.*.mds"))) > 5
    with storage.open_store("mds", tmp_path / "s") as store:
        middle, middle_labels = store.read_batch(np.arange(37, 263))
    np.testing.assert_array_equal(middle, images[37:263])
    np.testing.assert_array_equal(middle_labels, labels[37:263])


# -- Hugging Face datasets -------------------------------------------------------------------------


def test_hf_parts_open_with_load_from_disk_as_image_datasets(tmp_path, cifar):
    from datasets import Image, load_from_disk

    images, labels = cifar
    with storage.open_store("hf-datasets", tmp_path / "s", "w") as store:
        store.write_batch(images[:200], labels[:200])
        store.write_batch(images[200:], labels[200:])
        parts = store.part_paths()
    assert [part.name for part in parts] == ["00000", "00001"]
    assert {"state.json", "dataset_info.json"} <= {path.name for path in parts[0].iterdir()}
    first = load_from_disk(str(parts[0]))
    assert isinstance(first.features["image"], Image) and first.features["label"].dtype == "int64"
    assert len(first) == 200 and len(load_from_disk(str(parts[1]))) == 100
    row = first[42]  # the library's own decoding: a PIL image
    np.testing.assert_array_equal(np.asarray(row["image"]), images[42])
    assert (row["label"], row["id"]) == (labels[42], 42)
    assert first.cast_column("image", Image(decode=False))[42]["image"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"


def test_hf_keeps_file_bytes_as_they_are_under_encoding_source(tmp_path, cifar):
    import io

    from datasets import Image, load_from_disk
    from PIL import Image as PilImage

    from storage.image_codec import EncodedImages

    images, labels = cifar
    jpegs = []
    for image in images[:20]:
        buffer = io.BytesIO()
        PilImage.fromarray(image).save(buffer, format="JPEG", quality=85)
        jpegs.append(buffer.getvalue())
    with storage.open_store("hf-datasets", tmp_path / "s", "w", encoding="source") as store:
        store.write_batch(EncodedImages(jpegs), labels[:20])
        (part,) = store.part_paths()
    stored = load_from_disk(str(part)).cast_column("image", Image(decode=False))
    assert [row["bytes"] for row in stored["image"]] == jpegs  # HF's own column holds the files' bytes
    with storage.open_store("hf-datasets", tmp_path / "s") as store:
        data, formats, read_labels = store.read_encoded([3, 0, 19])
        image, label = store.read_one(7)
    assert data == [jpegs[3], jpegs[0], jpegs[19]] and formats == ["jpeg"] * 3
    np.testing.assert_array_equal(read_labels, labels[[3, 0, 19]])
    np.testing.assert_array_equal(image, np.asarray(PilImage.open(io.BytesIO(jpegs[7]))))
    assert label == labels[7]


def test_hf_a_batch_of_several_chunks_is_one_saved_dataset_and_leaves_no_staging(tmp_path, cifar, monkeypatch):
    images, labels = cifar
    monkeypatch.setattr(storage.store_class("hf-datasets"), "chunk_images", 64)
    with storage.open_store("hf-datasets", tmp_path / "s", "w") as store:
        store.write_batch(images, labels)
        (part,) = store.part_paths()
    assert not (part / ".staged").exists()
    with storage.open_store("hf-datasets", tmp_path / "s") as store:
        read, read_labels = store.read_batch([299, 0, 150, 150])
    np.testing.assert_array_equal(read, images[[299, 0, 150, 150]])
    np.testing.assert_array_equal(read_labels, labels[[299, 0, 150, 150]])


# -- FFCV ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ffcv_store(tmp_path_factory, cifar):
    """One raw FFCV store of the 300 images in two parts (two appends), written once for the FFCV tests:
    every write starts FFCV's writer processes, each of which compiles FFCV's numba code."""
    images, labels = cifar
    path = tmp_path_factory.mktemp("ffcv") / "s"
    with storage.open_store("ffcv", path, "w") as store:
        store.write_batch(images[:150], labels[:150])
        store.write_batch(images[150:], labels[150:])
    return path


@FFCV_MISSING
def test_ffcv_beton_reads_with_ffcvs_own_reader_and_sequential_loader(ffcv_store, cifar):
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.reader import Reader

    images, labels = cifar
    with storage.open_store("ffcv", ffcv_store) as store:
        assert store.lossless and store.lossless_with({"write_mode": "raw"})
        parts = store.part_paths()
    assert [sorted(path.name for path in part.iterdir()) for part in parts] == [["images.beton"]] * 2  # no spool
    beton = str(parts[1] / "images.beton")
    assert Reader(beton).field_names == ["image", "label", "id"]
    loader = Loader(
        beton,
        batch_size=100,
        num_workers=1,
        order=OrderOption.SEQUENTIAL,
        drop_last=False,
        pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()], "id": [IntDecoder()]},
    )
    batches = [[np.array(part) for part in batch] for batch in loader]  # copies: FFCV reuses its buffers
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images[150:])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]).ravel(), labels[150:])
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]).ravel(), np.arange(150, 300))


@FFCV_MISSING
def test_ffcv_loads_through_its_own_loader_kept_for_every_epoch(ffcv_store, cifar):
    """The training loader's path: FFCV's Loader (one per part, one after the other) made once; each
    epoch a new full shuffle holding every image once, bit for bit, as ``(images, labels, ids, stats)``."""
    from storage.pipeline import Pipeline
    from storage.training import OwnLoaderBatches, close_loader, shuffle_loader

    images, labels = cifar
    loader, described = shuffle_loader("ffcv", ffcv_store, 64, 2, Pipeline(), seed=3)
    assert isinstance(loader, OwnLoaderBatches) and own_library(loader.loader) == "ffcv"
    assert "kept for every epoch" in described
    orders = []
    for _ in range(2):
        seen = []
        for batch_images, batch_labels, batch_ids, stats in loader:
            ids = batch_ids.numpy().copy()
            np.testing.assert_array_equal(batch_images.numpy(), images[ids])
            np.testing.assert_array_equal(batch_labels.numpy(), labels[ids])
            assert stats.shape == (4,)
            seen.extend(ids.tolist())
        assert sorted(seen) == list(range(300)) and seen != sorted(seen)
        orders.append(seen)
    assert orders[0] != orders[1]  # the same Loader shuffles every epoch anew
    close_loader(loader)


@FFCV_MISSING
def test_ffcv_loader_refuses_this_projects_transforms_saying_why(ffcv_store):
    from storage.pipeline import Pipeline
    from storage.torch import LoaderSettingsError
    from storage.training import shuffle_loader

    with pytest.raises(LoaderSettingsError, match="its own pipeline.*--transform none"):
        shuffle_loader("ffcv", ffcv_store, 64, 2, Pipeline("train", "pillow"))


@FFCV_MISSING
def test_ffcv_jpg_mode_is_lossy_smaller_and_read_the_same_by_the_store_and_the_loader(tmp_path, cifar):
    from ffcv.reader import Reader

    from storage.torch import make_store_loader
    from storage.verify import PSNR_IMAGE_FLOOR, psnr

    images, labels = cifar
    with storage.open_store("ffcv", tmp_path / "jpg", "w", write_mode="jpg", jpeg_quality=90) as store:
        store.write_batch(images, labels)
        assert not store.lossless and not store.lossless_with({"write_mode": "jpg"})

    with storage.open_store("ffcv", tmp_path / "jpg") as store:
        read, _ = store.read_all()
        (part,) = store.part_paths()
    sample_bytes = Reader(str(part / "images.beton")).alloc_table["size"]
    assert len(sample_bytes) == 300 and sample_bytes.sum() < images.nbytes / 2  # JPEG bytes, not pixels
    assert not np.array_equal(read, images)
    assert min(psnr(want, got) for want, got in zip(images, read)) >= PSNR_IMAGE_FLOOR
    epoch = {}
    for batch_images, _, batch_ids in make_store_loader("ffcv", tmp_path / "jpg", 64, 0, seed=1):
        epoch.update(zip(batch_ids.tolist(), batch_images.numpy().copy()))
    np.testing.assert_array_equal(np.stack([epoch[i] for i in range(300)]), read)  # one decoder, libffcv's


@FFCV_MISSING
def test_ffcv_quasi_random_order_also_gives_every_image_once(ffcv_store, cifar):
    from storage.torch import make_store_loader

    images, labels = cifar
    seen = []
    for batch_images, batch_labels, batch_ids in make_store_loader("ffcv", ffcv_store, 64, 2, order="quasi_random"):
        ids = batch_ids.numpy()
        np.testing.assert_array_equal(batch_images.numpy(), images[ids])
        np.testing.assert_array_equal(batch_labels.numpy(), labels[ids])
        seen.extend(ids.tolist())
    assert sorted(seen) == list(range(300)) and seen != sorted(seen)


@FFCV_MISSING
def test_ffcv_refuses_what_it_cannot_store_saying_why(tmp_path, cifar):
    images, labels = cifar
    gray = images[:4, :, :, 0]
    with storage.open_store("ffcv", tmp_path / "s", "w") as store:
        with pytest.raises(storage.ImageShapeError, match="1 channel.*stores 3 channel"):
            store.write_batch(gray, labels[:4])
    for options, words in (
        ({"write_mode": "png"}, "write_mode 'png' is not one of FFCV's"),
        ({"write_mode": "smart"}, "needs smart_threshold"),
        ({"jpeg_quality": 0}, "jpeg_quality 0"),
        ({"encoding": "source"}, "unknown option.*encoding"),
    ):
        with pytest.raises(storage.ModeError, match=words):
            storage.open_store("ffcv", tmp_path / "t", "w", **options)


@FFCV_MISSING
def test_ffcv_writes_a_large_batch_without_holding_its_pixels(tmp_path, monkeypatch):
    """The conformance suite's images are too small to tell FFCV's per-image bookkeeping from
    pixels; 64x64 images are not: 37 MB streamed in chunks of 300 must never be mostly held."""
    import tracemalloc

    from storage.testing.support import LazyImages

    monkeypatch.setattr(storage.store_class("ffcv"), "chunk_images", 300)
    images = LazyImages(3_000, (64, 64, 3))
    total = len(images) * 64 * 64 * 3
    storage.open_store("ffcv", tmp_path / "warm-up", "w").close()  # the import of FFCV is not the write
    tracemalloc.start()
    try:
        with storage.open_store("ffcv", tmp_path / "s", "w") as store:
            store.write_batch(images, np.zeros(len(images), dtype=np.int64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.4 * total, f"writing held {peak / 2**20:.1f} MiB for {total / 2**20:.1f} MiB of images"
    with storage.open_store("ffcv", tmp_path / "s") as store:
        for image_id in (0, 1777, 2999):
            np.testing.assert_array_equal(store.read_one(image_id)[0], images[image_id])


@FFCV_MISSING
def test_ffcv_a_writer_process_that_fails_ends_the_write_instead_of_hanging(tmp_path, cifar):
    from storage.formats.ffcv_beton import Spool, write_beton

    images, labels = cifar
    spool = Spool(tmp_path / "spool.bin")
    spool.add(images, [image.shape for image in images], labels, np.arange(len(labels)))
    spool.close()
    with open(spool.path, "r+b") as file:
        file.truncate(100 * images[0].nbytes)  # the last 200 images are gone: a worker fails on them
    started = time.monotonic()
    with pytest.raises(storage.StoreNotWritableError, match="writer processes failed"):
        write_beton(spool, tmp_path / "images.beton", write_mode="raw")
    assert time.monotonic() - started < 60


def test_without_ffcv_it_is_listed_unavailable_with_how_to_install_it():
    """The README's commands work without the extra: FFCV is then unavailable, saying how to add it."""
    hide_ffcv = "import sys; sys.modules['ffcv'] = None\n"
    script = hide_ffcv + (
        "import storage\n"
        "info = storage.backend_info('ffcv')\n"
        "assert not info.available and storage.backend_info('lmdb').available\n"
        "print(info.unavailable_reason)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "No module named 'ffcv'" in result.stdout
    assert "apt-get install -y libturbojpeg0-dev libopencv-dev pkg-config" in result.stdout
    assert "requirements-ffcv.txt" in result.stdout and "pip install ffcv" not in result.stdout


@pytest.mark.parametrize("backend", ["hf-datasets", pytest.param("ffcv", marks=FFCV_MISSING)])
def test_the_engine_measures_the_new_peers_and_checks_every_epoch(backend, tmp_path):
    from storage.bench import Experiment, ResultsDB, run_experiment

    experiment = Experiment(
        backends=[backend],
        counts=[1000 if backend == "ffcv" else 400],  # FFCV: 10 batches, more than its Loader has buffers (reused)
        operations=["write_batch", "read_all", "read_random", "loader"],
        workers=[2] if backend == "ffcv" else [0, 2],  # FFCV's workers are threads: w=0 runs one, as w=1
        batch_size=100,
        repeats=1,
        source="sample",
        work_dir=str(tmp_path / "runs"),
    )
    summary = run_experiment(experiment, ResultsDB(tmp_path / "r.sqlite"))
    measured = [m for m in summary.measurements if m.backend == backend]
    assert {m.operation for m in measured} == {"write_batch", "read_all", "read_random", "loader"}
    for measurement in measured:
        assert measurement.error is None, measurement.error
        assert measurement.verified
    for loader in (m for m in measured if m.operation == "loader"):  # one loader: its first epoch, then one more
        assert loader.first_epoch_seconds > 0 and len(loader.samples) == 1
    if backend == "ffcv":
        assert "kept for every epoch" in next(m.loader_path for m in measured if m.operation == "loader")


@FFCV_MISSING
def test_the_engine_checks_ffcv_jpg_stores_as_lossy(tmp_path):
    from storage.bench import Experiment, ResultsDB, run_experiment

    experiment = Experiment(
        backends=["ffcv"],
        counts=[200],
        operations=["write_batch", "read_all"],  # the loader reads what read_all does: the jpg test above
        workers=[0],
        repeats=1,
        source="sample",
        work_dir=str(tmp_path / "runs"),
        backend_options={"ffcv": {"write_mode": "jpg"}},
    )
    summary = run_experiment(experiment, ResultsDB(tmp_path / "r.sqlite"))
    for measurement in (m for m in summary.measurements if m.backend == "ffcv"):
        assert measurement.error is None and measurement.verified, measurement.error


@FFCV_MISSING
def test_the_engine_imports_ffcv_before_timing_a_write():
    """``import ffcv`` compiles numba code (a minute on a loaded machine): a user's script pays it at its
    import, so the engine's write timer must not (the store class's ``load_library``)."""
    from storage.bench.operations.write import load_library

    load_library("npy")  # a backend without the hook: nothing to do
    load_library("ffcv")
    assert "storage.formats.ffcv_beton" in sys.modules and "ffcv.writer" in sys.modules
