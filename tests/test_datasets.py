"""Tests of storage.datasets on real files: the bundled CIFAR-10 sample, archives served by a
local HTTP server, and image folders written with Pillow. Nothing here touches the internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import pickle
import shutil
import socket
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from storage import datasets
from storage.datasets import (
    CIFAR10_CLASS_NAMES,
    SAMPLE_CIFAR10_DIR,
    DataSource,
    SampleDataWarning,
    SkippedFilesWarning,
    describe_available_sources,
    download_cifar10,
    load_cifar10,
    load_image_folder,
    load_source,
    take,
)
from storage.datasets.folder_images import FolderImages
from storage.datasets.image_folder import SKIPPED_FILES_LOGGER
from storage.errors import (
    BadImageFileError,
    CorruptDataError,
    DataNotFoundError,
    DownloadError,
    EmptyBatchError,
    ImageTypeError,
    LabelError,
    StorageError,
)

SAMPLE_BATCH_SIZE = 1_017
SAMPLE_SIZE = 5 * SAMPLE_BATCH_SIZE


@pytest.fixture(scope="module")
def raw_batch_1() -> dict:
    with open(SAMPLE_CIFAR10_DIR / "data_batch_1", "rb") as file:
        return pickle.load(file, encoding="bytes")


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return load_cifar10(SAMPLE_CIFAR10_DIR)


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    """An empty data folder, so nothing depends on whether this machine has the full CIFAR-10."""
    home = tmp_path / "data-home"
    home.mkdir()
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(home))
    return home


def copy_sample_files(target: Path, names: list[str]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(SAMPLE_CIFAR10_DIR / name, target / name)
    return target


def write_pickle(path: Path, obj: object, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# --------------------------------------------------------------------------- CIFAR-10 loader


def test_sample_loads_with_expected_shape_and_dtype(sample):
    images, labels, class_names = sample
    assert images.shape == (SAMPLE_SIZE, 32, 32, 3)
    assert images.dtype == np.uint8
    assert images.flags.c_contiguous
    assert labels.shape == (SAMPLE_SIZE,)
    assert labels.dtype == np.int64
    assert class_names == list(CIFAR10_CLASS_NAMES)


def test_sample_first_labels_and_class_names(sample):
    _, labels, class_names = sample
    assert labels[:5].tolist() == [6, 9, 9, 4, 1]
    assert [class_names[label] for label in labels[:5]] == ["frog", "truck", "truck", "deer", "automobile"]


def test_channel_major_rows_become_hwc_pixels(sample, raw_batch_1):
    images = sample[0]
    raw = raw_batch_1[b"data"]
    assert tuple(images[0, 0, 0]) == (raw[0][0], raw[0][1024], raw[0][2048])
    # Image 7, row 5, column 11: offset 5 * 32 + 11 inside each 1,024-value colour plane.
    offset = 5 * 32 + 11
    assert tuple(images[7, 5, 11]) == (raw[7][offset], raw[7][1024 + offset], raw[7][2048 + offset])


def test_batches_are_concatenated_in_order(sample):
    images, labels, _ = sample
    with open(SAMPLE_CIFAR10_DIR / "data_batch_3", "rb") as file:
        raw = pickle.load(file, encoding="bytes")
    start = 2 * SAMPLE_BATCH_SIZE
    assert labels[start : start + SAMPLE_BATCH_SIZE].tolist() == list(raw[b"labels"])
    assert images[start, 31, 31, 2] == raw[b"data"][0][3071]


def test_sample_loads_fast():
    import time

    start = time.perf_counter()
    load_cifar10(SAMPLE_CIFAR10_DIR)
    assert time.perf_counter() - start < 0.5


def test_subset_of_batch_files_loads(tmp_path, raw_batch_1):
    folder = copy_sample_files(tmp_path / "subset", ["data_batch_1", "data_batch_4"])
    images, labels, class_names = load_cifar10(folder)
    assert images.shape == (2 * SAMPLE_BATCH_SIZE, 32, 32, 3)
    assert labels[:SAMPLE_BATCH_SIZE].tolist() == list(raw_batch_1[b"labels"])
    assert class_names == list(CIFAR10_CLASS_NAMES)  # no batches.meta: the standard names


def test_root_may_contain_the_batches_folder(tmp_path):
    copy_sample_files(tmp_path / "parent" / "cifar-10-batches-py", ["data_batch_2", "batches.meta"])
    images, _, _ = load_cifar10(tmp_path / "parent")
    assert len(images) == SAMPLE_BATCH_SIZE


def test_missing_folder_is_data_not_found(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as caught:
        load_cifar10(tmp_path / "nowhere")
    assert "download-cifar10" in str(caught.value)


def test_folder_without_batches_is_data_not_found(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataNotFoundError, match="no CIFAR-10 batch files"):
        load_cifar10(tmp_path)


def test_truncated_batch_is_corrupt_and_named(tmp_path):
    folder = copy_sample_files(tmp_path / "cut", ["data_batch_1"])
    path = folder / "data_batch_1"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDataError) as caught:
        load_cifar10(folder)
    message = str(caught.value)
    assert str(path) in message
    assert "download-cifar10" in message


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_naming_another_callable_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    write_pickle(folder / "data_batch_1", {b"data": _RunsShell(marker), b"labels": [0]})
    with pytest.raises(CorruptDataError, match="refusing to unpickle") as caught:
        load_cifar10(folder)
    assert "system" in str(caught.value)
    assert not marker.exists()


def test_meta_file_is_checked_too(tmp_path):
    folder = copy_sample_files(tmp_path / "meta", ["data_batch_1"])
    write_pickle(folder / "batches.meta", _RunsShell(tmp_path / "pwned"))
    with pytest.raises(CorruptDataError, match="batches.meta"):
        load_cifar10(folder)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "batch, problem",
    [
        ({b"labels": [0]}, "b'data'"),
        ([1, 2, 3], "expected a dict"),
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "pixel values"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, "pixel values"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "not uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "not a list of integers"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels outside"),
    ],
)
def test_batches_of_the_wrong_structure_are_corrupt(tmp_path, batch, problem):
    path = write_pickle(tmp_path / "test_batch", batch)
    with pytest.raises(CorruptDataError, match="test_batch") as caught:
        load_cifar10(tmp_path)
    assert problem in str(caught.value)
    assert str(path) in str(caught.value)


def test_flat_data_of_the_right_size_is_accepted(tmp_path, raw_batch_1):
    flat = raw_batch_1[b"data"][:3].reshape(-1)
    write_pickle(tmp_path / "data_batch_1", {b"data": flat, b"labels": [6, 9, 9]})
    images, labels, _ = load_cifar10(tmp_path)
    assert images.shape == (3, 32, 32, 3)
    assert labels.tolist() == [6, 9, 9]


def test_default_root_falls_back_to_the_sample_and_says_so(data_home, caplog):
    caplog.set_level(logging.INFO)
    with pytest.warns(SampleDataWarning, match="5,085 real CIFAR-10 images") as record:
        images, _, _ = load_cifar10()
    assert len(images) == SAMPLE_SIZE
    assert "download-cifar10" in str(record[0].message)
    assert record[0].filename == __file__  # the warning points at the caller
    assert any("bundled sample" in message for message in caplog.messages)


def test_default_root_prefers_the_full_set(data_home):
    copy_sample_files(data_home / "cifar-10-batches-py", ["data_batch_5", "batches.meta"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampleDataWarning)
        images, _, _ = load_cifar10()
    assert len(images) == SAMPLE_BATCH_SIZE


# --------------------------------------------------------------------------- downloader


def tiny_cifar_archive(extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> bytes:
    """A structurally valid cifar-10-python.tar.gz holding 3 real sample images per batch."""
    with open(SAMPLE_CIFAR10_DIR / "data_batch_1", "rb") as file:
        raw = pickle.load(file, encoding="bytes")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        tar.addfile(folder)
        for index, name in enumerate(datasets.CIFAR10_BATCH_FILES):
            rows = slice(3 * index, 3 * index + 3)
            batch = {b"batch_label": name.encode(), b"labels": raw[b"labels"][rows], b"data": raw[b"data"][rows]}
            add(f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=4))
        add("cifar-10-batches-py/batches.meta", (SAMPLE_CIFAR10_DIR / "batches.meta").read_bytes())
        add("cifar-10-batches-py/readme.html", b"<p>tiny CIFAR-10</p>")
        for info, payload in extra:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Server:
    """A real HTTP server on 127.0.0.1 serving byte strings from a dict, in a thread."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server expects
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.truncate else body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = _Server()
    yield running
    running.close()


@pytest.fixture(scope="module")
def archive_bytes() -> bytes:
    return tiny_cifar_archive()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".part") or p.name.startswith(".cifar-10-extract"))


def test_download_extracts_and_loads(tmp_path, server, archive_bytes):
    server.files["/cifar.tar.gz"] = archive_bytes
    calls: list[tuple[int, int | None]] = []
    root = tmp_path / "data"
    folder = download_cifar10(
        root,
        url=server.url("/cifar.tar.gz"),
        md5=md5_of(archive_bytes),
        progress=True,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert folder == (root / "cifar-10-batches-py").resolve()
    images, labels, class_names = load_cifar10(folder)
    assert images.shape == (18, 32, 32, 3)
    assert labels[:3].tolist() == [6, 9, 9]
    assert class_names[6] == "frog"
    assert (root / "cifar-10-python.tar.gz").read_bytes() == archive_bytes
    assert leftovers(root) == []
    assert calls[0] == (0, len(archive_bytes))
    assert calls[-1] == (len(archive_bytes), len(archive_bytes))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_download_is_skipped_when_the_folder_already_loads(tmp_path, server, archive_bytes):
    server.files["/c.tgz"] = archive_bytes
    kwargs = dict(url=server.url("/c.tgz"), md5=md5_of(archive_bytes), progress=False)
    download_cifar10(tmp_path, **kwargs)
    (tmp_path / "cifar-10-python.tar.gz").unlink()
    assert download_cifar10(tmp_path, **kwargs) == (tmp_path / "cifar-10-batches-py").resolve()
    assert server.requests == ["/c.tgz"]


def test_archive_already_present_is_not_downloaded_again(tmp_path, server, archive_bytes):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(archive_bytes)
    folder = download_cifar10(tmp_path, url=server.url("/absent"), md5=md5_of(archive_bytes), progress=False)
    assert len(load_cifar10(folder)[0]) == 18
    assert server.requests == []


def test_damaged_folder_is_replaced(tmp_path, server, archive_bytes):
    server.files["/c.tgz"] = archive_bytes
    broken = tmp_path / "cifar-10-batches-py"
    broken.mkdir()
    for name in datasets.CIFAR10_BATCH_FILES:
        (broken / name).write_bytes(b"not a pickle")
    folder = download_cifar10(tmp_path, url=server.url("/c.tgz"), md5=md5_of(archive_bytes), progress=False)
    assert len(load_cifar10(folder)[0]) == 18
    assert leftovers(tmp_path) == []


def test_wrong_md5_leaves_nothing_and_a_retry_succeeds(tmp_path, server, archive_bytes):
    server.files["/c.tgz"] = archive_bytes
    with pytest.raises(DownloadError, match="md5") as caught:
        download_cifar10(tmp_path, url=server.url("/c.tgz"), md5="0" * 32, progress=False)
    assert "retry" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    folder = download_cifar10(tmp_path, url=server.url("/c.tgz"), md5=md5_of(archive_bytes), progress=False)
    assert len(load_cifar10(folder)[0]) == 18


def test_archive_already_there_with_the_wrong_md5_is_refused_and_kept(tmp_path, server, archive_bytes):
    server.files["/c.tgz"] = archive_bytes
    placed = tmp_path / "cifar-10-python.tar.gz"
    placed.write_bytes(b"an archive the user placed by hand, but not the right one")
    with pytest.raises(DownloadError) as caught:
        download_cifar10(tmp_path, url=server.url("/c.tgz"), md5=md5_of(archive_bytes), progress=False)
    message = str(caught.value)
    assert f"the archive at {placed} has md5 {md5_of(placed.read_bytes())}, expected {md5_of(archive_bytes)}" in message
    assert "delete it" in message.lower() and "replace it with the real cifar-10-python.tar.gz" in message
    assert placed.read_bytes() == b"an archive the user placed by hand, but not the right one"
    assert server.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]


def test_archive_already_there_that_does_not_extract_is_kept(tmp_path):
    placed = tmp_path / "cifar-10-python.tar.gz"
    placed.write_bytes(b"not gzip" * 10)
    with pytest.raises(CorruptDataError, match="not a readable .tar.gz.*left in place"):
        download_cifar10(tmp_path, url="http://127.0.0.1:9/unused", md5=None, progress=False)
    assert placed.read_bytes() == b"not gzip" * 10


def test_truncated_transfer_removes_the_part_file(tmp_path, server, archive_bytes):
    server.files["/c.tgz"] = archive_bytes
    server.truncate.add("/c.tgz")
    with pytest.raises(DownloadError, match="retry"):
        download_cifar10(tmp_path, url=server.url("/c.tgz"), md5=md5_of(archive_bytes), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_a_download_error(tmp_path, server):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_cifar10(tmp_path, url=server.url("/missing.tgz"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_closed_port_is_a_clear_download_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    with pytest.raises(DownloadError) as caught:
        download_cifar10(tmp_path, url=url, progress=False, timeout=5)
    message = str(caught.value)
    assert message.startswith(f"could not reach {url}: ")
    assert "check your connection" in message
    assert str(tmp_path / "cifar-10-python.tar.gz") in message
    assert "Traceback" not in message
    assert caught.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    payload = b"gotcha" if kind == tarfile.REGTYPE else None
    info.size = len(payload) if payload else 0
    return info, payload


@pytest.mark.parametrize(
    "member",
    [
        _member("../evil"),
        _member("cifar-10-batches-py/../../evil"),
        _member("/tmp/image-storage-lab-absolute-evil"),
        _member("cifar-10-batches-py/link", tarfile.SYMTYPE, "../../evil"),
        _member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "../evil"),
        _member("cifar-10-batches-py/dev", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "hardlink-out", "device"],
)
def test_unsafe_archive_members_are_refused(tmp_path, server, member):
    data = tiny_cifar_archive(extra=[member])
    server.files["/evil.tgz"] = data
    root = tmp_path / "inside" / "data"
    with pytest.raises(DownloadError, match="unsafe") as caught:
        download_cifar10(root, url=server.url("/evil.tgz"), md5=md5_of(data), progress=False)
    assert repr(member[0].name) in str(caught.value)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["inside", "inside/data"]
    assert not Path("/tmp/image-storage-lab-absolute-evil").exists()


def test_archive_that_is_not_a_tarball_is_corrupt(tmp_path, server):
    server.files["/junk.tgz"] = b"this is not gzip at all" * 10
    with pytest.raises(CorruptDataError, match="not a readable"):
        download_cifar10(tmp_path, url=server.url("/junk.tgz"), md5=None, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_archive_with_a_damaged_batch_is_corrupt(tmp_path, server):
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    payload = b"\x80\x04broken"
    info.size = len(payload)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(info, io.BytesIO(payload))
    server.files["/damaged.tgz"] = buffer.getvalue()
    with pytest.raises(CorruptDataError, match="damaged CIFAR-10 batch"):
        download_cifar10(tmp_path, url=server.url("/damaged.tgz"), md5=None, progress=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- image folders


def save(path: Path, array: np.ndarray, mode: str | None = None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, **options)
    return path


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "pets"
    save(root / "dog" / "b.png", noise((5, 6), 1))  # L
    save(root / "dog" / "a.png", noise((7, 3, 4), 2))  # RGBA
    save(root / "cat" / "z.jpg", noise((20, 8, 3), 3))  # JPEG RGB
    save(root / "cat" / "m.png", noise((10, 12, 3), 4))  # PNG RGB
    save(root / "cat" / "nested" / "n.png", noise((2, 2, 3), 5))
    save(root / "cat" / ".hidden.png", noise((2, 2), 6))
    save(root / ".cache" / "x.png", noise((2, 2), 7))
    (root / "cat" / "notes.txt").write_text("not an image, ignored by extension")
    (root / "bird").mkdir()  # a class without images keeps its label
    return root


def test_image_folder_shapes_labels_and_order(image_folder):
    images, labels, class_names = load_image_folder(image_folder)
    assert class_names == ["bird", "cat", "dog"]
    assert labels.dtype == np.int64
    assert labels.tolist() == [1, 1, 1, 2, 2]
    # Files of a class folder come before those of its subfolders, as in torchvision.
    assert [image.shape for image in images] == [(10, 12, 3), (20, 8, 3), (2, 2, 3), (7, 3, 4), (5, 6)]
    assert all(image.dtype == np.uint8 for image in images)
    np.testing.assert_array_equal(images[0], noise((10, 12, 3), 4))  # lossless PNG
    np.testing.assert_array_equal(images[4], noise((5, 6), 1))


def test_image_modes_are_converted_sensibly(tmp_path):
    root = tmp_path / "modes"
    rgb = noise((4, 5, 3), 8)
    save(root / "c" / "01-bilevel.png", noise((4, 5), 9), "1")
    save(root / "c" / "02-la.png", noise((4, 5, 2), 10))
    save(root / "c" / "03-palette.png", rgb, "P")
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "c" / "04-palette-transparent.png", transparency=0)
    save(root / "c" / "05-cmyk.jpg", rgb, "CMYK")
    save(root / "c" / "06-sixteen.png", np.full((4, 5), 0xAB12, np.uint16))
    images, _, _ = load_image_folder(root)
    shapes = [image.shape for image in images]
    assert shapes == [(4, 5), (4, 5, 4), (4, 5, 3), (4, 5, 4), (4, 5, 3), (4, 5)]
    assert set(np.unique(images[0])) <= {0, 255}
    assert (images[5] == 0xAB).all()


def test_float_images_are_refused_with_advice(tmp_path):
    save(tmp_path / "c" / "depth.tif", np.ones((3, 3), np.float32))
    with pytest.raises(BadImageFileError, match="depth.tif.*8-bit"):
        load_image_folder(tmp_path)


@pytest.fixture
def folder_with_bad_files(tmp_path) -> Path:
    root = tmp_path / "bad"
    save(root / "a" / "good.png", noise((3, 3, 3), 11))
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "text.png").parent.mkdir(parents=True)
    (root / "b" / "text.png").write_text("I am a text file dressed as a PNG")
    good = save(root / "b" / "ok.jpg", noise((6, 6, 3), 12))
    truncated = root / "b" / "truncated.png"
    data = save(tmp_path / "whole.png", noise((40, 40, 3), 13)).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert good.exists()
    return root


@pytest.mark.parametrize("name, problem", [("a/empty.png", "empty"), ("b/text.png", "not an image")])
def test_bad_file_is_named(folder_with_bad_files, name, problem):
    path = folder_with_bad_files / name
    for other in folder_with_bad_files.rglob("*.png"):
        if other != path and other.name != "good.png":
            other.unlink()
    with pytest.raises(BadImageFileError) as caught:
        load_image_folder(folder_with_bad_files)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_truncated_image_is_bad(folder_with_bad_files):
    (folder_with_bad_files / "a" / "empty.png").unlink()
    (folder_with_bad_files / "b" / "text.png").unlink()
    with pytest.raises(BadImageFileError, match="truncated.png"):
        load_image_folder(folder_with_bad_files)


def test_skip_bad_skips_and_reports(folder_with_bad_files, caplog):
    skipped: list = []
    with pytest.warns(SkippedFilesWarning, match="skipped 3 unreadable") as record:
        images, labels, class_names = load_image_folder(folder_with_bad_files, skip_bad=True, skipped=skipped)
    assert [image.shape for image in images] == [(3, 3, 3), (6, 6, 3)]
    assert labels.tolist() == [0, 1]
    assert class_names == ["a", "b"]
    assert [path.name for path, _ in skipped] == ["empty.png", "text.png", "truncated.png"]
    assert all(isinstance(reason, str) and reason for _, reason in skipped)
    assert "empty.png" in str(record[0].message)
    assert sum("skipping" in message for message in caplog.messages) == 3


def test_skip_messages_say_which_file_and_why(folder_with_bad_files, caplog):
    with pytest.warns(SkippedFilesWarning, match=SKIPPED_FILES_LOGGER):
        load_image_folder(folder_with_bad_files, skip_bad=True)
    messages = [record.getMessage() for record in caplog.records if record.name == SKIPPED_FILES_LOGGER]
    root = folder_with_bad_files
    assert messages[0] == f"skipping {root / 'a' / 'empty.png'}: it is empty (0 bytes)"
    assert messages[1].startswith(f"skipping {root / 'b' / 'text.png'}: it is not an image Pillow can read (")
    assert messages[2].startswith(f"skipping {root / 'b' / 'truncated.png'}: it is not an image Pillow can read (")
    assert not any("delete it" in message for message in messages)


def test_load_source_skips_bad_files_only_when_asked(folder_with_bad_files):
    with pytest.raises(BadImageFileError, match="empty"):
        load_source(str(folder_with_bad_files))
    with pytest.warns(SkippedFilesWarning, match="skipped 3 unreadable"):
        source = load_source(str(folder_with_bad_files), skip_bad=True)
    assert len(source) == 2
    assert len(load_source("sample", skip_bad=True)) == 5085  # CIFAR-10 sources ignore it


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    save(tmp_path / "c" / "bomb.png", np.zeros((40, 40), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # 1,600 pixels: Pillow only warns
    with pytest.raises(BadImageFileError, match=r"bomb\.png has 1,600 pixels.*decompression bomb"):
        load_image_folder(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # more than twice the limit: Pillow raises
    with pytest.raises(BadImageFileError, match="1,600 pixels"):
        load_image_folder(tmp_path)
    skipped: list = []
    with pytest.warns(SkippedFilesWarning), pytest.raises(DataNotFoundError, match="no readable images"):
        load_image_folder(tmp_path, skip_bad=True, skipped=skipped)
    assert [path.name for path, _ in skipped] == ["bomb.png"]


def test_image_folder_layout_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    save(tmp_path / "flat" / "loose.png", noise((2, 2), 14))
    with pytest.raises(DataNotFoundError, match="<class name>"):
        load_image_folder(tmp_path / "flat")
    (tmp_path / "hollow" / "cls").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="no readable images"):
        load_image_folder(tmp_path / "hollow")


# --------------------------------------------------------------------------- take


def test_take_cycles_an_array_in_order():
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    taken, labels = take(images, [10, 11, 12], 7)
    assert isinstance(taken, np.ndarray)
    assert taken.shape == (7, 2, 2)
    assert taken.flags.c_contiguous
    assert labels.dtype == np.int64
    assert labels.tolist() == [10, 11, 12, 10, 11, 12, 10]
    np.testing.assert_array_equal(taken[5], images[2])


def test_take_fewer_than_the_source_and_from_a_list():
    images = [np.full((i + 1, 2), i, np.uint8) for i in range(4)]
    taken, labels = take(images, np.array([0, 1, 2, 3]), 2)
    assert isinstance(taken, list)
    assert [image.shape for image in taken] == [(1, 2), (2, 2)]
    assert labels.tolist() == [0, 1]
    taken, _ = take(tuple(images), [0, 1, 2, 3], 6)
    assert isinstance(taken, list) and taken[4] is images[0]


def test_take_cycles_the_sample_past_its_end(sample):
    images, labels, _ = sample
    taken, taken_labels = take(images, labels, 12_000)
    assert taken.shape == (12_000, 32, 32, 3)
    np.testing.assert_array_equal(taken[SAMPLE_SIZE + 9], images[9])
    assert taken_labels[-1] == labels[(12_000 - 1) % SAMPLE_SIZE]


@pytest.mark.parametrize(
    "n, error",
    [(0, EmptyBatchError), (-3, EmptyBatchError), (2.0, ImageTypeError), (True, ImageTypeError), ("5", ImageTypeError)],
)
def test_take_rejects_bad_n(n, error):
    with pytest.raises(error, match="n is"):
        take(np.zeros((2, 2, 2), np.uint8), [0, 1], n)


def test_take_rejects_empty_or_mismatched_sources():
    with pytest.raises(EmptyBatchError, match="no images"):
        take([], [], 3)
    with pytest.raises(EmptyBatchError):
        take(np.zeros((0, 2, 2), np.uint8), [], 3)
    with pytest.raises(LabelError, match="2 labels for 3 images"):
        take(np.zeros((3, 2, 2), np.uint8), [0, 1], 3)
    with pytest.raises(ImageTypeError):
        take("images", [0], 1)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 12), n=st.integers(1, 60), as_list=st.booleans())
def test_take_property(size, n, as_list):
    source = np.arange(size * 3, dtype=np.uint8).reshape(size, 3)
    labels = np.arange(size) * 7
    taken, taken_labels = take(list(source) if as_list else source, labels, n)
    assert len(taken) == n == len(taken_labels)
    assert isinstance(taken, list) == as_list
    for i in range(n):
        np.testing.assert_array_equal(taken[i], source[i % size])
        assert taken_labels[i] == labels[i % size]


# --------------------------------------------------------------------------- load_source


def test_source_sample():
    source = load_source("sample")
    assert isinstance(source, DataSource)
    assert source.kind == "sample"
    assert len(source) == SAMPLE_SIZE
    assert source.images.shape == (SAMPLE_SIZE, 32, 32, 3)
    assert source.root == SAMPLE_CIFAR10_DIR
    assert source.description == "bundled CIFAR-10 sample: 5,085 real images, 10 classes"


def test_source_auto_warns_when_only_the_sample_exists(data_home):
    with pytest.warns(SampleDataWarning, match="full CIFAR-10 not found") as record:
        source = load_source("auto")
    assert source.kind == "sample"
    assert len(source) == SAMPLE_SIZE
    assert record[0].filename == __file__


def test_source_auto_and_cifar10_use_the_full_set_when_present(tmp_path):
    copy_sample_files(tmp_path / "cifar-10-batches-py", ["data_batch_1", "batches.meta"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampleDataWarning)
        auto = load_source("auto", data_folder=tmp_path)
        full = load_source("cifar10", data_folder=tmp_path)
    assert auto.kind == full.kind == "cifar10"
    assert len(auto) == len(full) == SAMPLE_BATCH_SIZE


def test_source_cifar10_absent_tells_how_to_download(data_home):
    with pytest.raises(DataNotFoundError, match="python -m storage download-cifar10"):
        load_source("cifar10")


def test_cifar_folder_is_recognised_by_content(tmp_path):
    odd = copy_sample_files(tmp_path / "holiday photos (2019)", ["data_batch_2", "data_batch_3"])
    source = load_source(odd)
    assert source.kind == "cifar10"
    assert source.images.shape == (2 * SAMPLE_BATCH_SIZE, 32, 32, 3)
    assert source.root == odd
    copy_sample_files(tmp_path / "wrapper" / "cifar-10-batches-py", ["data_batch_1"])
    assert load_source(str(tmp_path / "wrapper")).kind == "cifar10"


def test_sample_folder_given_by_path_is_the_sample():
    assert load_source(SAMPLE_CIFAR10_DIR.parent).kind == "sample"


def test_image_folder_source(image_folder):
    source = load_source(str(image_folder))
    assert source.kind == "image-folder"
    assert isinstance(source.images, FolderImages)  # listed, decoded only when a chunk is asked for
    assert [image.shape for image in source.images] == [source.images.image_shape(i) for i in range(5)]
    assert len(source) == 5
    assert source.class_names == ["bird", "cat", "dog"]
    assert "5 images, 3 classes" in source.description


def test_keyword_as_a_path_object_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_source(Path("sample"))


@pytest.mark.parametrize("setup", ["empty", "unrelated", "missing", "file"])
def test_unrecognised_paths_are_data_not_found(tmp_path, setup):
    target = tmp_path / "target"
    if setup == "empty":
        target.mkdir()
    elif setup == "unrelated":
        (target / "docs").mkdir(parents=True)
        (target / "docs" / "notes.txt").write_text("hello")
        (target / "data_batch_one.txt").write_text("not a batch")
    elif setup == "file":
        target.write_text("hello")
    with pytest.raises(DataNotFoundError) as caught:
        load_source(target)
    assert isinstance(caught.value, StorageError)
    if setup in ("empty", "unrelated"):
        assert "CIFAR-10 folder" in str(caught.value) and "image folder" in str(caught.value)


def test_path_with_corrupt_cifar_files_is_corrupt_not_unrecognised(tmp_path):
    (tmp_path / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CorruptDataError, match="test_batch"):
        load_source(tmp_path)


def test_describe_available_sources(tmp_path):
    info = describe_available_sources(tmp_path)
    assert info["cifar10_present"] is False
    assert info["cifar10_partial"] is False
    assert info["auto"] == "sample"
    assert info["sample_present"] is True
    assert info["sample_dir"] == SAMPLE_CIFAR10_DIR
    assert info["cifar10_dir"] == tmp_path / "cifar-10-batches-py"
    assert info["download_command"] == "python -m storage download-cifar10"
    copy_sample_files(tmp_path / "cifar-10-batches-py", ["data_batch_1"])
    info = describe_available_sources(tmp_path)
    assert (info["cifar10_present"], info["cifar10_partial"], info["auto"]) == (False, True, "cifar10")


def test_data_dir_follows_the_environment(data_home):
    assert datasets.data_dir() == data_home
    assert describe_available_sources()["data_dir"] == data_home


def test_an_image_folder_description_counts_shapes_with_their_channels(tmp_path):
    save(tmp_path / "a" / "rgb.png", np.zeros((16, 16, 3), np.uint8))
    save(tmp_path / "b" / "rgba.png", np.zeros((16, 16, 4), np.uint8))
    assert load_source(str(tmp_path)).description.endswith("2 images, 2 classes, 2 shapes")
    (tmp_path / "b" / "rgba.png").unlink()
    save(tmp_path / "b" / "rgb.png", np.zeros((16, 16, 3), np.uint8))
    assert load_source(str(tmp_path)).description.endswith("2 images, 2 classes, one shape")
