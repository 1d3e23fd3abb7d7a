"""Photo folders as users have them: broken files, lying extensions, odd modes, rotated and huge photos.

A file that cannot be used (truncated, empty, unreadable, a link that leads nowhere) gets
an error naming it and what to do, or is skipped with ``--skip-bad`` / ``skip_bad=True``,
before anything is written, so nothing already stored is lost. Odd files that can be used
are read by their content and decoded by one set of rules on every path (``read_one``,
``read_batch``, ``read_all``, verification), kept bytes included: a PNG named ``.jpg`` is a
PNG, CMYK becomes RGB, 16-bit grayscale keeps its high byte, and EXIF orientation is not
applied. Expected pixels come from Pillow itself.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import storage
from storage import encodings
from storage.datasets import SkippedFilesWarning, load_source
from storage.datasets.image_folder import list_image_folder
from storage.errors import BadImageFileError
from storage.image_codec import EncodedImages
from storage.verify import verify_store

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((REPO_ROOT / "data" / "imagenet-sample").glob("*/*.JPEG"))
ORIENTATION = 0x0112  # the EXIF tag; 6 says "rotate 90 degrees clockwise to show upright"


def real_photo(index: int, size: tuple[int, int] | None = None, mode: str = "RGB") -> Image.Image:
    """One of the bundled ImageNet photos, in ``mode``, resized to ``size`` (width, height) if given."""
    with Image.open(PHOTOS[index]) as photo:
        image = photo.convert(mode)
    return image.resize(size, Image.Resampling.BILINEAR) if size else image


def saved(path: Path, image: Image.Image, image_format: str, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=image_format, **options)
    return path


def rgb48_png(pixels: np.ndarray) -> bytes:
    """A real 16-bit-per-channel RGB PNG of ``pixels`` (uint16, H x W x 3); Pillow cannot write one."""
    height, width, _ = pixels.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


SIXTEEN_BIT_RGB = (np.arange(24 * 18 * 3, dtype=np.uint32).reshape(24, 18, 3) * 1111 % 65536).astype(np.uint16)


def good_photos(folder: Path, count: int = 3) -> list[Path]:
    """``count`` real photos copied as they are into ``folder/good``."""
    (folder / "good").mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(PHOTOS[index], folder / "good" / f"photo{index}.jpg")) for index in range(count)]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storage", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


# -- files that cannot be used ------------------------------------------------------------------


def make_truncated(folder: Path) -> tuple[Path, str]:
    data = PHOTOS[4].read_bytes()
    path = folder / "bad" / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated: the JPEG's end-of-image marker is missing"


def make_empty(folder: Path) -> tuple[Path, str]:
    path = folder / "bad" / "empty.jpg"
    path.write_bytes(b"")
    return path, "is empty (0 bytes)"


def make_dangling_link(folder: Path) -> tuple[Path, str]:
    path = folder / "bad" / "dangling.jpg"
    os.symlink("gone.jpg", path)
    return path, "is a symbolic link to gone.jpg, which cannot be followed"


def make_link_loop(folder: Path) -> tuple[Path, str]:
    path = folder / "bad" / "loop.jpg"
    os.symlink("loop.jpg", path)  # a link to itself
    return path, "is a symbolic link to loop.jpg, which cannot be followed (Too many levels of symbolic links)"


def make_unreadable(folder: Path) -> tuple[Path, str]:
    path = Path(shutil.copy(PHOTOS[5], folder / "bad" / "locked.jpg"))
    path.chmod(0)
    if os.access(path, os.R_OK):
        path.chmod(0o644)
        pytest.skip("running as root: a file with mode 000 is still readable, so it cannot be unreadable here")
    return path, "cannot be read (permission denied)"


BAD_FILES = {
    "truncated": make_truncated,
    "empty": make_empty,
    "dangling link": make_dangling_link,
    "link loop": make_link_loop,
    "unreadable": make_unreadable,
}


@pytest.fixture(params=list(BAD_FILES))
def folder_with_a_bad_file(request, tmp_path):
    """A folder of three good photos and one bad file; (folder, good paths, bad path, the problem in words)."""
    folder = tmp_path / "photos"
    good = good_photos(folder)
    (folder / "bad").mkdir()
    bad, problem = BAD_FILES[request.param](folder)
    yield folder, good, bad, problem
    if not bad.is_symlink():
        bad.chmod(0o644)


def test_a_bad_file_is_named_with_what_to_do(folder_with_a_bad_file):
    folder, _, bad, problem = folder_with_a_bad_file
    for call in (lambda: list_image_folder(folder), lambda: load_source(str(folder))):
        with pytest.raises(BadImageFileError) as caught:
            call()
        message = str(caught.value)
        assert str(bad) in message and problem in message
        assert any(remedy in message for remedy in ("delete it", "move it out", "fix or remove the link", "readable"))


def test_skip_bad_leaves_the_bad_file_out_and_says_so(folder_with_a_bad_file):
    folder, good, bad, problem = folder_with_a_bad_file
    skipped: list = []
    with pytest.warns(SkippedFilesWarning, match="skipped 1 unreadable file"):
        images, labels, class_names = list_image_folder(folder, skip_bad=True, skipped=skipped)
    assert [path for path, _ in skipped] == [bad] and problem in skipped[0][1]
    assert [images.file_of(index) for index in range(len(images))] == [str(path) for path in good]
    assert class_names == ["bad", "good"] and labels.tolist() == [1, 1, 1]
    with pytest.warns(SkippedFilesWarning):
        source = load_source(str(folder), skip_bad=True)
    assert len(source.labels) == 3


def test_a_bad_file_found_when_appending_leaves_the_store_as_it_was(tmp_path):
    """A file that breaks after the listing (deleted, cut short) stops the write; the images before it stay."""
    folder = tmp_path / "photos"
    good = good_photos(folder, 4)
    for encoding in ("source", "raw"):
        images, labels, _ = list_image_folder(folder)
        path = tmp_path / encoding
        with storage.open_store("lmdb", path, "w", encoding=encoding) as store:
            store.write_batch(images.select([0, 1]), labels[:2])
        later = good[3].read_bytes()
        good[3].write_bytes(b"")  # emptied after it was listed
        with storage.open_store("lmdb", path, "a") as store:
            with pytest.raises(BadImageFileError, match=f"{good[3]} is empty"):
                store.write_batch(images, labels)
            assert len(store) == 2
        good[3].write_bytes(later)
        with storage.open_store("lmdb", path) as store:
            assert len(store) == 2
            for index in range(2):
                np.testing.assert_array_equal(store.read_one(index)[0], np.asarray(Image.open(good[index])))


@pytest.fixture
def folder_with_bad_files(tmp_path):
    """Good photos and one file of each bad kind that root can make (root reads any file)."""
    folder = tmp_path / "photos"
    good = good_photos(folder)
    (folder / "bad").mkdir()
    bad = dict(maker(folder) for name, maker in BAD_FILES.items() if name != "unreadable")
    return folder, good, bad


def test_convert_names_every_bad_file_and_keeps_an_older_store(tmp_path, folder_with_bad_files):
    folder, good, bad = folder_with_bad_files
    dest = tmp_path / "out"
    with storage.open_store("lmdb", dest, "w", encoding="source") as store:  # a store from an earlier run
        store.write_batch(EncodedImages([good[0].read_bytes()]), [0])
    stopped = run_cli("convert", str(folder), "--to", "lmdb", str(dest), "--keep-encoded", "--no-progress")
    assert stopped.returncode == 1 and len(error_lines(stopped)) == 1
    message = error_lines(stopped)[0]
    assert all(str(path) in message for path in bad) and message.count("--skip-bad") == 1
    with storage.open_store("lmdb", dest) as store:  # the listing failed before the store was touched
        assert store.read_encoded([0])[0] == [good[0].read_bytes()]

    passed = run_cli("convert", str(folder), "--to", "lmdb", str(dest), "--keep-encoded", "--skip-bad", "--no-progress")
    assert passed.returncode == 0, passed.stderr
    for path, problem in bad.items():
        assert f"warning: skipping {path}: it " in passed.stderr and problem.split(":")[0] in passed.stderr
    assert "read back 3 images: they match the source" in passed.stdout
    with storage.open_store("lmdb", dest) as store:
        assert store.read_encoded(range(3))[0] == [path.read_bytes() for path in good]


# -- odd files that can be used -----------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """Real photos with every oddity that decodes: {name: path}, in listing order."""
    folder = tmp_path_factory.mktemp("odd") / "photos"
    good = good_photos(folder, 2)
    odd = folder / "odd"
    png = io.BytesIO()
    real_photo(6, (40, 30)).save(png, format="PNG")
    odd.mkdir(parents=True)
    lying = odd / "b-lying.jpg"
    lying.write_bytes(png.getvalue())
    rotated = real_photo(8, (60, 40))
    exif = rotated.getexif()
    exif[ORIENTATION] = 6
    sixteen = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 109 % 65536).astype(np.uint16)
    files = {
        "good0": good[0],
        "good1": good[1],
        "big": saved(odd / "a-big.jpg", real_photo(7, (2400, 1600)), "JPEG", quality=85),
        "lying": lying,
        "cmyk": saved(odd / "c-cmyk.jpg", real_photo(9, (50, 40), "CMYK"), "JPEG", quality=90),
        "rotated": saved(odd / "d-rotated.jpg", rotated, "JPEG", quality=90, exif=exif),
        "sixteen": saved(odd / "e-sixteen.png", Image.fromarray(sixteen), "PNG"),
        "sixteen-rgb": odd / "f-sixteen-rgb.png",
    }
    files["sixteen-rgb"].write_bytes(rgb48_png(SIXTEEN_BIT_RGB))
    order = ["good0", "good1", "big", "lying", "cmyk", "rotated", "sixteen", "sixteen-rgb"]
    return folder, {name: files[name] for name in order}


def pillow_expected(path: Path) -> np.ndarray:
    """The stated channel rules, applied with Pillow alone: what every path must give for ``path``."""
    with Image.open(path) as image:
        image.load()
        if image.mode == "CMYK":
            return np.asarray(image.convert("RGB"))
        if image.mode.startswith("I;16"):
            return (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        assert image.mode in ("RGB", "L")
        return np.asarray(image)  # EXIF orientation not applied: no ImageOps.exif_transpose


def test_odd_files_are_listed_by_their_content(odd_folder):
    folder, files = odd_folder
    images, _, _ = list_image_folder(folder)
    assert [images.file_of(index) for index in range(len(images))] == [str(path) for path in files.values()]
    formats = dict(zip(files, (images.format_of(index) for index in range(len(images)))))
    assert formats["lying"] == "png" and formats["cmyk"] == "jpeg" and formats["sixteen"] == "png"
    shapes = dict(zip(files, (images.image_shape(index) for index in range(len(images)))))
    assert shapes["big"] == (1600, 2400, 3) and shapes["lying"] == (30, 40, 3) and shapes["cmyk"] == (40, 50, 3)
    assert shapes["rotated"] == (40, 60, 3) and shapes["sixteen"] == (20, 30) and shapes["sixteen-rgb"] == (24, 18, 3)
    for index, path in enumerate(files.values()):
        np.testing.assert_array_equal(images[index], pillow_expected(path), err_msg=str(path))
    sixteen = list(files).index("sixteen-rgb")  # 16 bits a channel keep their 8 most significant bits
    np.testing.assert_array_equal(images[sixteen], (SIXTEEN_BIT_RGB >> 8).astype(np.uint8))


def test_exif_orientation_is_not_applied_on_any_path(tmp_path, odd_folder):
    folder, files = odd_folder
    assert "EXIF orientation is" in encodings.__doc__ and "not applied, on any path" in encodings.__doc__
    with Image.open(files["rotated"]) as image:
        assert image.getexif()[ORIENTATION] == 6
        upright = np.asarray(ImageOps.exif_transpose(image))
    stored = pillow_expected(files["rotated"])
    assert upright.shape == (60, 40, 3) and stored.shape == (40, 60, 3)
    images, labels, _ = list_image_folder(folder)
    position = list(files).index("rotated")
    for encoding in ("source", "raw", "png"):
        with storage.open_store("hdf5", tmp_path / encoding, "w", encoding=encoding) as store:
            store.write_batch(images, labels)
        with storage.open_store("hdf5", tmp_path / encoding) as store:
            np.testing.assert_array_equal(store.read_one(position)[0], stored)
            np.testing.assert_array_equal(store.read_batch([position, 0])[0][0], stored)
            np.testing.assert_array_equal(store.read_all()[0][position], stored)
        assert verify_store("hdf5", tmp_path / encoding, images, labels).verified


@pytest.mark.parametrize(("backend", "encoding"), [("webdataset", "source"), ("lmdb", "raw"), ("parquet", "png")])
def test_odd_files_decode_the_same_on_every_path(tmp_path, odd_folder, backend, encoding):
    folder, files = odd_folder
    images, labels, _ = list_image_folder(folder)
    expected = [pillow_expected(path) for path in files.values()]
    with storage.open_store(backend, tmp_path / "s", "w", encoding=encoding) as store:
        store.write_batch(images, labels)
    with storage.open_store(backend, tmp_path / "s") as store:
        everything, _ = store.read_all()
        order = [7, 6, 4, 3, 2, 0]
        some, _ = store.read_batch(order)
        for index, want in enumerate(expected):
            np.testing.assert_array_equal(store.read_one(index)[0], want, err_msg=f"read_one {index}")
            np.testing.assert_array_equal(everything[index], want, err_msg=f"read_all {index}")
        for position, index in enumerate(order):
            np.testing.assert_array_equal(some[position], expected[index], err_msg=f"read_batch {index}")
        if encoding == "source":
            assert store.read_encoded(range(len(files)))[0] == [path.read_bytes() for path in files.values()]
    assert verify_store(backend, tmp_path / "s", images, labels).verified


def test_kept_bytes_and_member_names_follow_the_real_format(tmp_path, odd_folder):
    folder, files = odd_folder
    dest = tmp_path / "out"
    result = run_cli("convert", str(folder), "--to", "webdataset", str(dest), "--keep-encoded", "--no-progress")
    assert result.returncode == 0, result.stderr
    with tarfile.open(dest / "shard-000000.tar") as archive:
        names = [name for name in archive.getnames() if not name.endswith(".cls")]
        pngs = ("lying", "sixteen", "sixteen-rgb")
        assert names == [f"{index:09d}.{'png' if name in pngs else 'jpg'}" for index, name in enumerate(files)]
        lying = list(files).index("lying")
        assert archive.extractfile(f"{lying:09d}.png").read() == files["lying"].read_bytes()
    with storage.open_store("webdataset", dest) as store:
        data, formats, _ = store.read_encoded([lying])
        assert formats == ["png"] and data == [files["lying"].read_bytes()]


def test_a_huge_photo_among_small_ones_is_fine_and_resized_when_asked(tmp_path, odd_folder):
    folder, files = odd_folder
    big = list(files).index("big")
    dest = tmp_path / "out"
    as_is = run_cli("convert", str(folder), "--to", "npy", str(dest), "--keep-encoded", "--no-progress")
    assert as_is.returncode == 0, as_is.stderr
    with storage.open_store("npy", dest) as store:
        assert store.read_one(big)[0].shape == (1600, 2400, 3)
        assert store.read_encoded([big])[0] == [files["big"].read_bytes()]

    resized = run_cli(
        "convert", str(folder), "--to", "npy", str(dest), "--keep-encoded", "--shorter-side", "256", "--no-progress"
    )
    assert resized.returncode == 0, resized.stderr
    assert "resized to a shorter side of 256 px where larger" in resized.stderr
    assert "match the source (PSNR" in resized.stdout  # resized photos were encoded again: held to the floors
    images, _, _ = list_image_folder(folder)
    with storage.open_store("npy", dest) as store:
        data, formats, _ = store.read_encoded(range(len(files)))
        for index, path in enumerate(files.values()):
            height, width = images.image_shape(index)[:2]
            size = encodings.resized_size(width, height, shorter_side=256)
            shape = store.read_one(index)[0].shape
            assert shape[:2] == (size[1], size[0]), path
            if size == (width, height):
                assert data[index] == path.read_bytes(), f"{path} needed no resizing: its bytes are kept"
        assert store.read_one(big)[0].shape == (256, 384, 3) and formats[big] == "jpeg"
        assert store.backend_state["resize_filter"] == encodings.RESAMPLING_FILTER


def test_skipped_files_warning_names_each_file_once(tmp_path):
    """Many bad files: the warning names five and counts the rest; the log names each."""
    folder = tmp_path / "photos"
    good_photos(folder, 1)
    (folder / "bad").mkdir()
    for index in range(7):
        (folder / "bad" / f"empty{index}.png").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, _, _ = list_image_folder(folder, skip_bad=True)
    messages = [str(warning.message) for warning in caught if issubclass(warning.category, SkippedFilesWarning)]
    assert len(images) == 1 and len(messages) == 1
    assert "skipped 7 unreadable file(s)" in messages[0] and "and 2 more" in messages[0]
