"""Real photos kept as their files' bytes: read by the formats' own tools, as small as the files, in bounded memory.

The bundled ImageNet sample (``data/imagenet-sample``, 100 real JPEGs, 5 grayscale) is
written with ``encoding="source"`` and read back by the ``webdataset`` package, ``tar``,
``tarfile`` and ``pyarrow``, as a user of those formats would; the stores are measured
against the files' own bytes, verified by hash, and written from a cycled listing of a
few thousand photos in a child process whose peak memory is measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import storage
from storage.datasets.image_folder import list_image_folder
from storage.verify import verify_store

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = REPO_ROOT / "data" / "imagenet-sample"
KEPT_BYTES_SIZE_LIMIT = 1.03  # the target: a kept-bytes store is at most 3 % above the files


@pytest.fixture(scope="module")
def photos():
    """The bundled photos as a lazy listing, their labels, and each file's bytes in listing order."""
    images, labels, _ = list_image_folder(PHOTOS)
    files = [Path(images.file_of(index)).read_bytes() for index in range(len(images))]
    return images, labels, files


def write_kept(backend: str, path: Path, images, labels, **options) -> None:
    with storage.open_store(backend, path, "w", encoding="source", **options) as store:
        store.write_batch(images, labels)


def test_the_bundled_sample_is_real_imagenet_photos(photos):
    images, labels, files = photos
    assert len(images) == 100 and len(set(labels.tolist())) == 100
    assert all(data[:3] == b"\xff\xd8\xff" for data in files)  # JPEG files, as they are
    gray = [index for index in range(len(images)) if len(images.image_shape(index)) == 2]
    assert len(gray) == 5
    assert sum(map(len, files)) <= 12 * 10**6


# -- the formats' own readers -------------------------------------------------------------------


def test_webdataset_package_reads_the_kept_jpeg_members(tmp_path, photos):
    import webdataset

    images, labels, files = photos
    write_kept("webdataset", tmp_path / "s", images, labels, shard_images=40)
    with storage.open_store("webdataset", tmp_path / "s") as store:
        shards = store.shard_paths()
    assert len(shards) == 3
    samples = list(webdataset.WebDataset(shards, shardshuffle=False))
    assert [sample["__key__"] for sample in samples] == [f"{index:09d}" for index in range(len(files))]
    assert all(set(sample) - {"__key__", "__url__", "__local_path__"} == {"jpg", "cls"} for sample in samples)
    assert [sample["jpg"] for sample in samples] == files
    assert [int(sample["cls"]) for sample in samples] == labels.tolist()


def test_tar_lists_members_by_their_real_extension(tmp_path, photos):
    images, labels, files = photos
    write_kept("webdataset", tmp_path / "s", images.select(range(6)), labels[:6])
    shard = tmp_path / "s" / "shard-000000.tar"
    listed = subprocess.run(["tar", "tf", str(shard)], capture_output=True, text=True, check=True).stdout.split()
    assert listed == [f"{index:09d}.{kind}" for index in range(6) for kind in ("jpg", "cls")]
    with tarfile.open(shard) as archive:
        assert [archive.extractfile(f"{index:09d}.jpg").read() for index in range(6)] == files[:6]
        assert archive.extractfile("000000004.cls").read().decode() == str(labels[4])


def test_parquet_image_column_holds_the_files_bytes(tmp_path, photos):
    import pyarrow.parquet as pq

    images, labels, files = photos
    write_kept("parquet", tmp_path / "s", images, labels)
    parts = sorted((tmp_path / "s").glob("*.parquet"))
    table = pq.read_table(parts[0]) if len(parts) == 1 else None
    assert table is not None, f"one write_batch writes one part, found {parts}"
    assert table.column("image").to_pylist() == files
    assert table.column("label").to_pylist() == labels.tolist()
    shapes = [images.image_shape(index) for index in range(len(images))]
    assert table.column("height").to_pylist() == [shape[0] for shape in shapes]
    assert table.column("width").to_pylist() == [shape[1] for shape in shapes]
    assert table.column("channels").to_pylist() == [shape[2] if len(shape) == 3 else 0 for shape in shapes]


# -- size and verification ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["lmdb", "hdf5", "npy", "webdataset"])
def test_kept_bytes_stores_are_hardly_bigger_than_the_files(tmp_path, photos, backend):
    images, labels, files = photos
    write_kept(backend, tmp_path / "s", images, labels)
    with storage.open_store(backend, tmp_path / "s") as store:
        usage = store.disk_usage()
        assert store.read_encoded([0, 99])[0] == [files[0], files[99]]
    file_bytes = sum(map(len, files))
    assert images.source_bytes == file_bytes
    ratio = usage.allocated_bytes / file_bytes
    assert ratio <= KEPT_BYTES_SIZE_LIMIT, f"{backend}: {ratio:.3f}x the files ({usage.allocated_bytes:,} bytes)"


def test_verification_checks_kept_bytes_file_by_file(tmp_path, photos):
    images, labels, files = photos
    write_kept("npy", tmp_path / "s", images, labels)
    assert verify_store("npy", tmp_path / "s", images, labels).verified
    blob = tmp_path / "s" / "images.u8"  # the npy backend's blob: the files' bytes, one after the other
    offset = sum(map(len, files[:7])) + len(files[7]) // 2
    with open(blob, "r+b") as file:  # one byte of photo 7's entropy-coded data changed: it still decodes
        file.seek(offset)
        original = file.read(1)
        file.seek(offset)
        file.write(bytes([original[0] ^ 0x5A]))
    verdict = verify_store("npy", tmp_path / "s", images, labels)
    assert not verdict.verified
    assert "image 7's stored bytes" in verdict.error and images.file_of(7) in verdict.error
    assert "hashes differ" in verdict.error


def test_convert_keep_encoded_prints_the_size_against_the_files_and_verifies(tmp_path, photos):
    images, _, files = photos
    dest = tmp_path / "out"
    result = run_cli("convert", str(PHOTOS), "--to", "lmdb", str(dest), "--keep-encoded", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "the source files' bytes" in result.stderr
    ratio = float(result.stdout.split("x the source files")[0].rsplit(" ", 1)[-1])
    assert 1.0 <= ratio <= KEPT_BYTES_SIZE_LIMIT
    assert "read back 100 images: they match the source" in result.stdout
    assert json.loads((dest / "store.json").read_text())["options"]["encoding"] == "source"
    with storage.open_store("lmdb", dest) as store:
        assert store.read_encoded(range(len(files)))[0] == files
        assert store.class_names == sorted(path.name for path in PHOTOS.iterdir() if path.is_dir())


def test_convert_refuses_kept_bytes_without_files_or_on_a_backend_without_them(tmp_path):
    cifar = run_cli("convert", "sample", "--to", "lmdb", str(tmp_path / "a"), "--keep-encoded", "--limit", "5")
    assert cifar.returncode == 1
    assert "no encoded files" in cifar.stderr and "'png', 'jpeg:90' or 'webp'" in cifar.stderr
    assert not (tmp_path / "a").exists()
    png = run_cli("convert", str(PHOTOS), "--to", "png", str(tmp_path / "b"), "--keep-encoded")
    assert png.returncode == 2 and "cannot keep encoded bytes" in png.stderr and "lmdb" in png.stderr
    assert not (tmp_path / "b").exists()


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storage", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


# -- memory -------------------------------------------------------------------------------------

MEMORY_SCRIPT = """
import json, resource, sys
sys.path.insert(0, {root!r})
import storage
from storage.datasets.image_folder import list_image_folder

def status_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

images, labels, _ = list_image_folder({photos!r})
cycled = images.cycled({count})
start_kb = status_kb("VmHWM")
anonymous = [status_kb("RssAnon")]
with storage.open_store("lmdb", {dest!r}, "w", encoding={encoding!r}) as store:
    store.write_batch(cycled, labels[cycled.order], progress=lambda done, total: anonymous.append(status_kb("RssAnon")))
    count = len(store)
print(json.dumps({{"count": count, "pixel_bytes": cycled.nbytes, "file_bytes": cycled.source_bytes,
    "start_kb": start_kb, "peak_kb": status_kb("VmHWM"), "getrusage_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "peak_anonymous_kb": max(anonymous), "chunks": len(anonymous) - 1}}))
"""


def write_cycled_photos(tmp_path: Path, encoding: str, count: int) -> dict:
    """Write the sample cycled to ``count`` photos into an lmdb store in a fresh interpreter; its memory figures."""
    script = MEMORY_SCRIPT.format(
        root=str(REPO_ROOT), photos=str(PHOTOS), count=count, dest=str(tmp_path / encoding), encoding=encoding
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(("encoding", "count"), [("source", 3_000), ("raw", 1_500)])
def test_writing_thousands_of_photos_keeps_memory_bounded(tmp_path, encoding, count):
    """Peak RSS stays far below the decoded pixels: the listing streams, chunk by chunk.

    The peak is the child's own ``VmHWM``: ``getrusage``'s ``ru_maxrss`` survives ``exec``
    on Linux, so a child of a big pytest process reports its parent's peak. RSS counts the
    LMDB map's written pages too (file-backed, given back at each map growth), so the peak
    of anonymous memory (the process's own) is checked apart, sampled after each chunk.
    """
    figures = write_cycled_photos(tmp_path, encoding, count)
    assert figures["count"] == count and figures["chunks"] > 1
    peak_mb, pixels_mb = figures["peak_kb"] / 1024, figures["pixel_bytes"] / 2**20
    assert pixels_mb > 900, "the test means something only if the pixels are far bigger than the limit"
    assert peak_mb < 700, f"peak RSS {peak_mb:,.0f} MB writing {count:,} photos ({pixels_mb:,.0f} MB of pixels)"
    assert figures["getrusage_kb"] >= figures["peak_kb"]  # the same peak, or the parent's if larger
    assert figures["peak_anonymous_kb"] / 1024 < pixels_mb / 4
    with storage.open_store("lmdb", tmp_path / encoding) as store:
        assert len(store) == count
        if encoding == "source":
            assert store.disk_usage().allocated_bytes <= KEPT_BYTES_SIZE_LIMIT * figures["file_bytes"]


def test_a_listing_holds_no_pixels(photos):
    images, _, _ = photos
    cycled = images.cycled(100_000)
    assert len(cycled) == 100_000 and cycled.nbytes > 60 * 10**9  # 68 GB of pixels, none of them decoded
    assert cycled.order.nbytes == 800_000 and cycled.file_of(100) == images.file_of(0)
    assert os.path.samefile(cycled.file_of(99_999), images.file_of(99))


def mapped_kb(path: Path) -> int:
    """KB of ``path``'s pages mapped into this process now (the Rss of its mappings in smaps)."""
    target, total, inside = os.path.realpath(path), 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields[0]) > 8 and ":" not in fields[0]:
                inside = len(fields) >= 6 and fields[-1] == target
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps (Linux)")
def test_lmdb_reads_of_a_big_store_of_photos_unmap_as_they_go(tmp_path, photos, monkeypatch):
    """A reader of a store bigger than the budget drops the pages its reads mapped every READ_MAPPED_BYTES
    (100,000 photos had mapped 11.6 GB into one reader). Budgets shrunk so the bundled photos are a big store."""
    from storage import mapped_files

    images, labels, _ = photos
    write_kept("lmdb", tmp_path / "s", images, labels)
    data_file = tmp_path / "s" / "data.mdb"
    monkeypatch.setattr(mapped_files, "BUDGET_BYTES", 2**20)
    ids = [int(i) for i in np.random.default_rng(1).permutation(len(labels))]

    def mapped_after_reads(read_budget: int) -> int:
        monkeypatch.setattr(mapped_files, "READ_MAPPED_BYTES", read_budget)
        with storage.open_store("lmdb", tmp_path / "s") as store:
            for image_id in ids:
                store.read_one(image_id)
            for start in range(0, len(ids), 8):
                store.read_batch(list(range(start, min(start + 8, len(ids)))))
            return mapped_kb(data_file)

    unbounded, bounded = mapped_after_reads(2**40), mapped_after_reads(2**20)
    store_kb = data_file.stat().st_size // 1024
    assert unbounded > store_kb // 2  # every page read stays mapped without it
    assert bounded < unbounded // 4


def test_a_kept_bytes_run_is_sized_by_the_files_not_the_pixels(tmp_path, photos):
    """bench --keep-encoded at 100,000 photos asked for 73 GB of disk, the pixels' size, for a store of 11 GB."""
    from storage.bench import Experiment, estimate_experiment

    images, _, _ = photos
    experiment = Experiment(backends=["lmdb"], counts=[100_000], operations=["write_batch"], encoding="source",
                            work_dir=str(tmp_path))  # fmt: skip
    pixels, files = images.nbytes / len(images), images.source_bytes / len(images)
    as_pixels = estimate_experiment(experiment, raw_image_bytes=pixels, source_in_memory=False)
    as_files = estimate_experiment(experiment, raw_image_bytes=pixels, source_in_memory=False, stored_image_bytes=files)
    assert as_files.disk_bytes < as_pixels.disk_bytes / 3  # JPEGs are a fifth of their pixels or less
    assert as_files.disk_bytes >= 100_000 * files  # and never below the files themselves


def test_a_loader_run_over_photos_is_not_sized_as_if_it_held_every_photo(tmp_path, photos):
    """bench --ops loader at 100,000 photos was refused for 26 GB of memory: over a folder, the loader keeps no epoch."""
    from storage.bench import Experiment, estimate_experiment
    from storage.bench.streaming import MEMORY_CEILING_MAX_BYTES

    images, _, _ = photos
    pixels = images.nbytes / len(images)
    experiment = Experiment(backends=["lmdb"], counts=[100_000], operations=["loader"], workers=[2],
                            encoding="source", transform="train", work_dir=str(tmp_path))  # fmt: skip
    folder = estimate_experiment(experiment, raw_image_bytes=pixels, source_in_memory=False)
    assert folder.memory_bytes < 100_000 * pixels / 4
    assert folder.memory_bytes >= min(100_000 * pixels, MEMORY_CEILING_MAX_BYTES)  # the in-memory ceiling's photos
    arrays = estimate_experiment(experiment, raw_image_bytes=pixels, source_in_memory=True)
    assert arrays.memory_bytes >= 100_000 * pixels  # arrays: the loader fills one buffer of the whole count


def test_read_all_slices_of_photos_are_cut_by_their_decoded_bytes(photos, monkeypatch):
    """A streamed read_all of photos holds about PHOTO_SLICE_BYTES of pixels per slice, whatever the average."""
    import math

    from storage.bench.operations import read

    images, _, _ = photos
    budget = 4 * 2**20
    monkeypatch.setattr(read, "PHOTO_SLICE_BYTES", budget)
    count = 3 * len(images)  # cycled, as a bench of more images than the folder has
    bounds = read._slice_bounds(images, count, step=50)
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(stop == next_start for (_, stop), (next_start, _) in zip(bounds, bounds[1:]))
    for start, stop in bounds:
        sizes = [math.prod(images.image_shape(index % len(images))) for index in range(start, stop)]
        assert stop - start <= 50
        assert sum(sizes) <= budget or stop - start == 1  # one image bigger than the budget is a slice alone
    assert len(bounds) > count // 50  # the bytes, not only the count, cut the slices


def test_the_check_against_a_folder_decodes_it_in_pieces_cut_by_their_decoded_bytes(photos, monkeypatch):
    """Verification decodes about _CHUNK_BYTES of the source at once, whatever the average photo's size."""
    import math

    from storage import verify

    images, labels, _ = photos
    budget = 2 * 2**20
    monkeypatch.setattr(verify, "_CHUNK_BYTES", budget)
    # The largest photos in a row, as a folder that repeats its big photos does: an average-sized
    # chunk of them would hold many times the budget.
    by_size = sorted(range(len(images)), key=lambda index: -math.prod(images.image_shape(index)))
    ids = np.array(by_size[:20] + by_size[-20:])
    decoded = []  # (images, bytes of pixels) of each piece decoded for the check
    chunk = type(images).chunk

    def recording_chunk(self, start, stop):
        decoded.append((stop - start, self.nbytes))
        return chunk(self, start, stop)

    monkeypatch.setattr(type(images), "chunk", recording_chunk)
    expected = [images[int(index)] for index in ids]
    assert verify.compare(expected, labels[ids], images, labels, ids, lossless=True).verified
    assert sum(count for count, _ in decoded) == len(ids) and len(decoded) > 2
    assert all(held <= budget or count == 1 for count, held in decoded), decoded
    wrong = [image.copy() for image in expected]
    wrong[-1][0, 0, 0] ^= 1
    assert not verify.compare(wrong, labels[ids], images, labels, ids, lossless=True).verified


def test_verifying_a_store_of_photos_reads_it_in_pieces_cut_by_their_decoded_bytes(tmp_path, photos, monkeypatch):
    """verify_store holds a piece of the store and the source decoded for it: both about _CHUNK_BYTES."""
    import math

    from storage import verify
    from storage.base import ImageStore

    images, labels, _ = photos
    by_size = sorted(range(len(images)), key=lambda index: -math.prod(images.image_shape(index)))
    order = np.array(by_size[:15] + by_size[-15:])  # the largest photos in a row, then the smallest
    source, source_labels = images.select(order), labels[order]
    write_kept("lmdb", tmp_path / "store", source, source_labels)
    budget = 2 * 2**20
    monkeypatch.setattr(verify, "_CHUNK_BYTES", budget)
    pieces = []  # (images, bytes of pixels) of each read_batch call
    read_batch = ImageStore.read_batch

    def recording_read_batch(self, ids, *args, **kwargs):
        found, found_labels = read_batch(self, ids, *args, **kwargs)
        pieces.append((len(found), sum(image.nbytes for image in found)))
        return found, found_labels

    monkeypatch.setattr(ImageStore, "read_batch", recording_read_batch)
    assert verify_store("lmdb", tmp_path / "store", source, source_labels).verified
    assert sum(count for count, _ in pieces) == len(order) and len(pieces) > 2
    assert all(held <= budget or count == 1 for count, held in pieces), pieces


def test_the_estimate_of_a_photo_run_counts_their_decoding(photos):
    """A run on photos decodes them for the store, for reads and for every check: the estimate counts each."""
    from storage.bench import Experiment, estimate_experiment

    images, _, _ = photos
    pixels = images.nbytes / len(images)

    def steps(encoding: str, in_memory: bool) -> list[float]:
        experiment = Experiment(
            backends=["lmdb"], counts=[10_000], operations=["write_batch", "read_all"], encoding=encoding, repeats=1
        )
        return estimate_experiment(experiment, raw_image_bytes=pixels, source_in_memory=in_memory).step_seconds

    (kept_write, kept_read), (raw_write, raw_read) = steps("source", False), steps("raw", False)
    (_, in_memory_read) = steps("raw", True)
    assert kept_write < raw_write  # kept bytes: the source is read, not decoded
    assert kept_read > raw_read > in_memory_read  # the stored bytes decoded, then the source for the check
    assert kept_read > 10_000 * 2 * pixels * 2e-9 / os.cpu_count()  # at least 2 ns a pixel byte per decode


def test_bench_prints_the_engine_s_estimate_made_from_the_photos(tmp_path, photos):
    """The command line printed an estimate for CIFAR-sized images whatever the source."""
    from storage.bench import Experiment, estimate_experiment

    images, _, files = photos
    result = run_cli(
        "bench", "--source", str(PHOTOS), "--backends", "lmdb", "--counts", "100", "--ops", "write_batch",
        "--repeats", "1", "--keep-encoded", "--no-progress",
        "--db", str(tmp_path / "r.sqlite"), "--work-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("estimate:")]
    printed_disk = int(line.split(" MB of disk")[0].rsplit(" ", 1)[-1].replace(",", ""))
    experiment = Experiment(backends=["lmdb"], counts=[100], operations=["write_batch"], repeats=1, encoding="source",
                            work_dir=str(tmp_path / "runs"))  # fmt: skip
    expected = estimate_experiment(
        experiment,
        raw_image_bytes=images.nbytes / len(images),
        source_in_memory=False,
        stored_image_bytes=sum(len(data) for data in files) / len(files),
    )
    assert printed_disk == round(expected.disk_bytes / 1e6)
    assert printed_disk * 1e6 >= sum(len(data) for data in files)  # the files' size, not 100 CIFAR images'
