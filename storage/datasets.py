"""Where the benchmark images come from: CIFAR-10 (full or the bundled sample) or a folder of images.

Three sources are supported:

* the full CIFAR-10 in its original "python version" layout (``data/cifar-10-batches-py``,
  fetched with :func:`download_cifar10` or ``python -m storage download-cifar10``);
* the bundled sample of 5,085 real CIFAR-10 images (``data/cifar-10-sample``), tracked in
  git so that everything works offline and out of the box;
* any folder of images laid out as ``root/<class name>/<image file>`` (the torchvision
  ``ImageFolder`` convention), in any format and size Pillow reads.

:func:`load_source` picks one of them from a single string (what the CLI and the dashboard
pass around) and tells the two folder layouts apart by their content. Whenever the code
falls back to the sample instead of the full data set it says so, with a
:class:`SampleDataWarning` and a log line, so a benchmark is never silently run on less
data than the user thinks.

The CIFAR-10 batches are Python pickles, and unpickling runs code chosen by whoever wrote
the file. They are therefore read with a restricted unpickler that only rebuilds NumPy
arrays and refuses everything else.

The data folder is ``data/`` next to the ``storage`` package; set the environment
variable ``IMAGE_STORAGE_LAB_DATA`` to use another folder (the bundled sample always comes
from the project itself).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import logging
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .batch import check_labels
from .errors import (
    BadImageFileError,
    CorruptDataError,
    DataNotFoundError,
    DiskSpaceError,
    DownloadError,
    EmptyBatchError,
    ImageTypeError,
)

__all__ = [
    "CIFAR10_ARCHIVE_NAME",
    "CIFAR10_BATCH_FILES",
    "CIFAR10_CLASS_NAMES",
    "CIFAR10_DIR",
    "CIFAR10_DIRNAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATA_DIR",
    "DATA_DIR_ENV",
    "DOWNLOAD_COMMAND",
    "PROJECT_ROOT",
    "SAMPLE_CIFAR10_DIR",
    "DataSource",
    "SampleDataWarning",
    "SkippedFilesWarning",
    "data_dir",
    "describe_available_sources",
    "download_cifar10",
    "load_cifar10",
    "load_image_folder",
    "load_source",
    "take",
]

logger = logging.getLogger("storage.datasets")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = "IMAGE_STORAGE_LAB_DATA"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE_NAME = "cifar-10-python.tar.gz"
CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_BATCH_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CIFAR10_META_FILE = "batches.meta"
CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_FULL_SIZE = 60_000
DOWNLOAD_COMMAND = "python -m storage download-cifar10"
SAMPLE_CIFAR10_DIR = PROJECT_ROOT / "data" / "cifar-10-sample" / CIFAR10_DIRNAME

_IMAGE_SIZE = 32 * 32 * 3
_CHUNK_BYTES = 256 * 1024
# The extracted full data set is a little larger than the gzipped archive (178 MB vs 170 MB).
_EXTRACTED_SIZE_FACTOR = 1.1


class SampleDataWarning(UserWarning):
    """The full CIFAR-10 is absent, so the bundled sample of 5,085 images is used instead."""


class SkippedFilesWarning(UserWarning):
    """``load_image_folder(..., skip_bad=True)`` left out files it could not read."""


def data_dir() -> Path:
    """The data folder: ``$IMAGE_STORAGE_LAB_DATA`` if set, else ``data/`` in the project.

    Read at every call (not only at import) so a test or a launcher can point the library
    at another folder by setting the environment variable.
    """
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override).expanduser() if override else PROJECT_ROOT / "data"


DATA_DIR = data_dir()
CIFAR10_DIR = DATA_DIR / CIFAR10_DIRNAME


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- CIFAR-10


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 pickle may name: what NumPy needs to rebuild an array."""
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


_ALLOWED_GLOBALS = _numpy_globals()


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds NumPy arrays and refuses every other class or function.

    A pickle can name any importable callable (``os.system`` for instance) and have it
    called while loading. Genuine CIFAR-10 batches only name the three NumPy globals in
    ``_ALLOWED_GLOBALS``; anything else means the file is not what it claims to be.
    """

    def __init__(self, file: io.BytesIO, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CorruptDataError(
                f"{self._path} asks to load {module}.{name}, which a CIFAR-10 batch never contains; "
                "refusing to unpickle it. The file is not a genuine CIFAR-10 batch: delete it and "
                f"re-download with `{DOWNLOAD_COMMAND}`"
            ) from None


def _corrupt(path: Path, problem: str) -> CorruptDataError:
    return CorruptDataError(
        f"{path} is not a readable CIFAR-10 file ({problem}); it is probably truncated or damaged: "
        f"delete it and re-download with `{DOWNLOAD_COMMAND}`"
    )


def _unpickle(path: Path) -> Any:
    """Unpickle ``path`` with the restricted unpickler, turning any failure into CorruptDataError."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataNotFoundError(
            f"could not read {path} ({error}); check that the file exists and is readable"
        ) from None
    try:
        return _CifarUnpickler(io.BytesIO(raw), path).load()
    except CorruptDataError:
        raise
    except Exception as error:  # a damaged pickle can fail in many ways; all mean the same
        raise _corrupt(path, f"{type(error).__name__}: {error}") from None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The flat (N,3072) uint8 pixels and int64 labels of one CIFAR-10 batch file."""
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise _corrupt(path, f"expected a dict with keys b'data' and b'labels', got {keys}")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise _corrupt(path, f"b'data' is {type(data).__name__} of {getattr(data, 'dtype', '?')}, not uint8 pixels")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise _corrupt(path, "b'labels' is not a list of integers") from None
    if label_array.ndim != 1 or data.size != len(label_array) * _IMAGE_SIZE:
        raise _corrupt(
            path,
            f"{data.size:,} pixel values for {label_array.size:,} labels; "
            f"each image needs exactly {_IMAGE_SIZE:,} values (32x32x3)",
        )
    return data.reshape(len(label_array), _IMAGE_SIZE), label_array


def _read_class_names(folder: Path) -> list[str]:
    """Class names from ``batches.meta``, or the standard ten when the file is absent."""
    path = folder / CIFAR10_META_FILE
    if not path.is_file():
        logger.info("%s not found; using the standard CIFAR-10 class names", path)
        return list(CIFAR10_CLASS_NAMES)
    meta = _unpickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise _corrupt(path, "no b'label_names' list of class names")
    try:
        return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]
    except UnicodeDecodeError:
        raise _corrupt(path, "class names are not valid UTF-8") from None


def _batch_folder(root: Path) -> Path | None:
    """The folder holding the batch files: ``root`` itself or ``root/cifar-10-batches-py``."""
    for folder in (root, root / CIFAR10_DIRNAME):
        if any((folder / name).is_file() for name in CIFAR10_BATCH_FILES):
            return folder
    return None


def _is_full_cifar10(folder: Path) -> bool:
    """Whether ``folder`` holds all six CIFAR-10 batch files (without reading them)."""
    return all((folder / name).is_file() for name in CIFAR10_BATCH_FILES)


def _channel_major_to_hwc(flat: np.ndarray) -> np.ndarray:
    """CIFAR rows (1,024 red, then green, then blue values) as C-contiguous (N,32,32,3) images."""
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _load_cifar10_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files = [folder / name for name in CIFAR10_BATCH_FILES if (folder / name).is_file()]
    batches = [_read_batch(path) for path in files]
    class_names = _read_class_names(folder)
    flat = np.concatenate([data for data, _ in batches]) if len(batches) > 1 else batches[0][0]
    labels = np.concatenate([labels for _, labels in batches])
    for path, (_, batch_labels) in zip(files, batches, strict=True):
        if batch_labels.size and (batch_labels.min() < 0 or batch_labels.max() >= len(class_names)):
            raise _corrupt(path, f"labels outside 0..{len(class_names) - 1}")
    logger.debug("loaded %d CIFAR-10 images from %s", len(labels), folder)
    return _channel_major_to_hwc(flat), labels, class_names


def _warn_sample(full_dir: Path, count: int, depth: int) -> None:
    """Say the sample replaces the full set; ``depth`` frames above the caller is the user's code."""
    message = (
        f"full CIFAR-10 not found at {_display(full_dir)}; using the bundled sample of {count:,} real "
        f"CIFAR-10 images (run `{DOWNLOAD_COMMAND}` for all {CIFAR10_FULL_SIZE:,})"
    )
    logger.warning(message)
    warnings.warn(message, SampleDataWarning, stacklevel=depth + 2)


def load_cifar10(root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load CIFAR-10 from its original python batches.

    Any subset of ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` may be present;
    they are concatenated in that order. Class names come from ``batches.meta``, or are the
    standard ten when it is absent.

    Args:
        root: The ``cifar-10-batches-py`` folder or a folder that contains it. ``None``
            means the full data set in the data folder if it is there, else the bundled
            sample, in which case a :class:`SampleDataWarning` says so.

    Returns:
        ``(images, labels, class_names)``: images as a C-contiguous (N,32,32,3) uint8
        array, labels as an int64 (N,) array, class names as a list of str.

    Raises:
        DataNotFoundError: ``root`` does not exist or holds no batch file.
        CorruptDataError: a batch file is truncated, damaged or not a CIFAR-10 batch.
    """
    if root is None:
        return _load_default_cifar10(data_dir(), depth=2)[:3]
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(
            f"CIFAR-10 folder {root} does not exist; pass the `{CIFAR10_DIRNAME}` folder (or the folder "
            f"holding it), or run `{DOWNLOAD_COMMAND}` to fetch the data set"
        )
    folder = _batch_folder(root)
    if folder is None:
        raise DataNotFoundError(
            f"{root} holds no CIFAR-10 batch files (expected some of {', '.join(CIFAR10_BATCH_FILES)} "
            f"there or in {root / CIFAR10_DIRNAME}); run `{DOWNLOAD_COMMAND}` to fetch the data set"
        )
    return _load_cifar10_folder(folder)


def _load_default_cifar10(data_folder: Path, depth: int) -> tuple[np.ndarray, np.ndarray, list[str], str, Path]:
    """The full CIFAR-10 under ``data_folder`` if present, else the sample (with a warning)."""
    full_dir = data_folder / CIFAR10_DIRNAME
    if _batch_folder(full_dir) == full_dir:
        return (*_load_cifar10_folder(full_dir), "cifar10", full_dir)
    images, labels, class_names = _load_cifar10_folder(SAMPLE_CIFAR10_DIR)
    _warn_sample(full_dir, len(labels), depth)
    return images, labels, class_names, "sample", SAMPLE_CIFAR10_DIR


# --------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _check_free_space(folder: Path, total: int | None) -> None:
    if not total:
        return
    needed = int(total * (1 + _EXTRACTED_SIZE_FACTOR))
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(
            f"downloading and extracting CIFAR-10 needs about {needed / 1e6:,.0f} MB in {folder}, "
            f"but only {free / 1e6:,.0f} MB are free; free some space or set {DATA_DIR_ENV} to another folder"
        )


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _fetch(
    url: str,
    part: Path,
    archive: Path,
    timeout: float,
    progress: bool,
    on_progress: Callable[[int, int | None], None] | None,
) -> str:
    """Stream ``url`` into ``part``; return the md5 of what was received."""
    from tqdm import tqdm

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"{url} answered HTTP {error.code} ({error.reason}); check the URL, or download the archive "
            f"by hand and place it at {archive}"
        ) from None
    except ValueError as error:
        raise DownloadError(f"{url!r} is not a URL that can be downloaded ({error}); pass an http(s) URL") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"could not reach {url}: {reason}; check your connection or download the archive by hand "
            f"and place it at {archive}"
        ) from None
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    with response, open(part, "wb") as file:
        total = _content_length(response)
        _check_free_space(part.parent, total)
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=archive.name, disable=not progress
        ) as bar:
            if on_progress is not None:
                on_progress(0, total)
            try:
                for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                    file.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                    if on_progress is not None:
                        on_progress(done, total)
            except (OSError, http.client.HTTPException) as error:
                raise DownloadError(
                    f"the download of {url} broke off after {done:,} bytes ({error}); run it again to retry"
                ) from None
    if total is not None and done != total:
        raise DownloadError(f"the download of {url} stopped after {done:,} of {total:,} bytes; run it again to retry")
    return digest.hexdigest()


def _download_archive(
    url: str,
    archive: Path,
    md5: str | None,
    timeout: float,
    progress: bool,
    on_progress: Callable[[int, int | None], None] | None,
) -> None:
    """Download ``url`` to ``archive`` via a ``.part`` file that is removed on any failure."""
    part = archive.with_name(archive.name + ".part")
    _remove(part)
    logger.info("downloading %s to %s", url, archive)
    try:
        received_md5 = _fetch(url, part, archive, timeout, progress, on_progress)
        if md5 is not None and received_md5 != md5.lower():
            raise DownloadError(
                f"the file downloaded from {url} has md5 {received_md5}, expected {md5}; the transfer was "
                "damaged or the server sent something else. The partial file was removed: run it again to retry"
            )
        os.replace(part, archive)
    except BaseException:
        _remove(part)
        raise


def _unsafe_member_reason(member: tarfile.TarInfo, target: Path) -> str | None:
    """Why extracting ``member`` into ``target`` would be unsafe, or None if it is fine."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        return "it has an absolute path"
    destination = (target / name).resolve()
    if not destination.is_relative_to(target):
        return "it would be written outside the target folder"
    if member.issym() or member.islnk():
        base = destination.parent if member.issym() else target
        link = (base / member.linkname).resolve()
        if os.path.isabs(member.linkname) or not link.is_relative_to(target):
            return f"it links to {member.linkname!r}, outside the target folder"
        return None
    if not (member.isfile() or member.isdir()):
        return "it is a device file or FIFO, which a data archive never contains"
    return None


def _safe_members(tar: tarfile.TarFile, target: Path, archive: Path) -> list[tarfile.TarInfo]:
    """All members of ``tar``, refusing the archive if any would escape ``target``."""
    members = tar.getmembers()
    for member in members:
        reason = _unsafe_member_reason(member, target)
        if reason is not None:
            raise DownloadError(
                f"refusing to extract {archive}: member {member.name!r} is unsafe ({reason}). The archive is "
                f"not the official CIFAR-10 one; it was deleted, run `{DOWNLOAD_COMMAND}` again"
            )
    return members


def _extract(archive: Path, root: Path) -> Path:
    """Extract ``archive`` safely into ``root/cifar-10-batches-py``, all or nothing."""
    final = root / CIFAR10_DIRNAME
    staging = Path(tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=root)).resolve()
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = _safe_members(tar, staging, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise CorruptDataError(
                f"{archive} is not a readable .tar.gz archive ({error}); it was deleted, run `{DOWNLOAD_COMMAND}` again"
            ) from None
        extracted = staging / CIFAR10_DIRNAME
        if _batch_folder(extracted) != extracted:
            raise CorruptDataError(
                f"{archive} holds no {CIFAR10_DIRNAME}/ folder with CIFAR-10 batches; it was deleted, "
                f"run `{DOWNLOAD_COMMAND}` again"
            )
        try:
            _load_cifar10_folder(extracted)
        except CorruptDataError as error:
            raise CorruptDataError(
                f"{archive} holds a damaged CIFAR-10 batch ({error}); it was deleted, run `{DOWNLOAD_COMMAND}` again"
            ) from None
        if final.exists():
            os.replace(final, staging / "previous")
        os.replace(extracted, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _existing_cifar10(folder: Path) -> bool:
    """Whether ``folder`` already holds a complete CIFAR-10 that loads."""
    if not _is_full_cifar10(folder):
        return False
    try:
        _load_cifar10_folder(folder)
    except (CorruptDataError, DataNotFoundError) as error:
        logger.warning("%s is incomplete or damaged (%s); downloading it again", folder, error)
        return False
    return True


def download_cifar10(
    root: str | os.PathLike[str] | None = None,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
    progress: bool = True,
    timeout: float = 30,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download and extract the full CIFAR-10 (python version, 170 MB, 60,000 images).

    Nothing is done when ``root/cifar-10-batches-py`` already holds all six batches and
    they load; the download is skipped when the archive is already there with the right
    md5. The download goes to a ``.part`` file that is removed on any failure, and the
    archive is extracted into a temporary folder that is moved into place only once
    complete, so an interrupted run never leaves a half-written folder behind. Archive
    members that would land outside the target folder (absolute paths, ``..``, links
    pointing outside, device files) are refused.

    Args:
        root: Folder to download into; defaults to the data folder (``data/``).
        url: Where to fetch ``cifar-10-python.tar.gz``.
        md5: Expected md5 of the archive; ``None`` skips the check.
        progress: Whether to show a tqdm progress bar on the terminal.
        timeout: Seconds to wait for the server before giving up.
        on_progress: Called as ``on_progress(done_bytes, total_bytes)`` when the transfer
            starts and after each chunk; ``total_bytes`` is None if the server sends no length.

    Returns:
        The path of the ``cifar-10-batches-py`` folder.

    Raises:
        DownloadError: no network, a broken transfer, an md5 mismatch, or an unsafe archive.
        CorruptDataError: the archive is not a readable CIFAR-10 .tar.gz.
        DiskSpaceError: not enough free space for the archive and its contents.
    """
    root = Path(root).expanduser() if root is not None else data_dir()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    final = root / CIFAR10_DIRNAME
    if _existing_cifar10(final):
        logger.info("CIFAR-10 already present at %s", final)
        return final
    archive = root / CIFAR10_ARCHIVE_NAME
    if archive.is_file() and (md5 is None or _md5(archive) == md5.lower()):
        logger.info("using the archive already at %s", archive)
    else:
        _remove(archive)
        _download_archive(url, archive, md5, timeout, progress, on_progress)
    try:
        return _extract(archive, root)
    except (DownloadError, CorruptDataError):
        _remove(archive)
        raise


# --------------------------------------------------------------------------- image folders


def _image_extensions() -> frozenset[str]:
    """File extensions Pillow can open (``.png``, ``.jpg``, ``.webp``, ``.tif``, ...)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


_IMAGE_EXTENSIONS = _image_extensions()


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in _IMAGE_EXTENSIONS


def _walk_files(folder: Path) -> Iterator[Path]:
    """Non-hidden files below ``folder``, in sorted order, subfolders included."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _class_folders(root: Path) -> list[Path]:
    return sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )


def _pixels(image: Image.Image, path: Path) -> np.ndarray:
    """``image`` as a uint8 array whose channel count follows its mode (see load_image_folder)."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.array(image)
    if mode == "1":
        return np.array(image.convert("L"))
    if mode.startswith("I;16"):
        return (np.array(image).astype(np.uint16) >> 8).astype(np.uint8)
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise BadImageFileError(
            f"{path} has {kind} pixels (mode {mode}), which have no fixed 0..255 range; "
            "convert it to an 8-bit image first (for instance scale it and save it as an 8-bit PNG)"
        )
    if mode == "P":
        return np.array(image.convert("RGBA" if "transparency" in image.info else "RGB"))
    if {"A", "a"} & set(image.getbands()):  # LA, PA, RGBa, La, ...
        return np.array(image.convert("RGBA"))
    return np.array(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _bomb_error(path: Path, error: Exception) -> BadImageFileError:
    match = re.search(r"\((\d+) pixels\)", str(error))
    count = f"{int(match.group(1)):,} pixels" if match else "more pixels than allowed"
    return BadImageFileError(
        f"{path} has {count}, above Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} "
        "(PIL.Image.MAX_IMAGE_PIXELS); it may be a decompression bomb. Remove it, or raise the "
        "limit if you trust the file"
    )


def _read_image(path: Path) -> np.ndarray:
    """Decode ``path`` fully (so truncated files fail here), refusing decompression bombs."""
    if path.stat().st_size == 0:
        raise BadImageFileError(f"{path} is empty (0 bytes); delete it or replace it with a real image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                image.load()
                return _pixels(image, path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _bomb_error(path, error) from None
        except BadImageFileError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
            raise BadImageFileError(
                f"{path} is not an image Pillow can read ({error}); delete it, or move it out of the image folder"
            ) from None


def _skip(path: Path, error: BadImageFileError, skipped: list[tuple[Path, str]] | None, found: list) -> None:
    logger.warning("skipping %s", error)
    found.append((path, str(error)))
    if skipped is not None:
        skipped.append((path, str(error)))


def _warn_skipped(root: Path, found: list[tuple[Path, str]]) -> None:
    names = ", ".join(str(path.relative_to(root)) for path, _ in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    warnings.warn(
        f"skipped {len(found)} unreadable file(s) in {root}: {names}{more}; "
        "see the log (logger 'storage.datasets') for the reason of each",
        SkippedFilesWarning,
        stacklevel=3,
    )


def _check_image_root(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataNotFoundError(
            f"image folder {root} does not exist or is not a folder; pass a folder laid out as "
            "<root>/<class name>/<image file>"
        )
    classes = _class_folders(root)
    if not classes:
        raise DataNotFoundError(
            f"{root} has no class subfolders; lay images out as <root>/<class name>/<image file> "
            "(one subfolder per class, as torchvision's ImageFolder expects)"
        )
    return classes


def load_image_folder(
    root: str | os.PathLike[str],
    skip_bad: bool = False,
    skipped: list[tuple[Path, str]] | None = None,
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Load images stored as ``root/<class name>/<image file>`` (torchvision ImageFolder layout).

    Class names are the sorted subfolder names; label ``i`` is ``class_names[i]``. Files are
    read in sorted order (subfolders of a class included), so the result is deterministic.
    Hidden files and folders (name starting with ``.``) are ignored, and so are files whose
    extension is not one Pillow opens (``.txt``, ``.json``, ...). Multi-frame files give
    their first frame.

    Each image keeps its mode where possible: ``L`` gives (H,W), ``RGB`` (H,W,3) and
    ``RGBA`` (H,W,4); ``1`` becomes ``L``; ``LA`` and ``PA`` become RGBA; ``P`` becomes RGBA
    if it has transparency, else RGB; ``CMYK``, ``YCbCr`` and other colour modes become RGB.
    16-bit grayscale (``I;16``) keeps its 8 most significant bits (``value >> 8``), which is
    exact for images saved from 8-bit data. 32-bit integer (``I``) and float (``F``) images
    have no fixed range, so they are refused as BadImageFileError rather than guessed at.

    Args:
        root: The folder holding one subfolder per class.
        skip_bad: Skip unreadable files (empty, not an image, decompression bomb) instead
            of raising; they are reported with a :class:`SkippedFilesWarning` and the log.
        skipped: If given, ``(path, reason)`` is appended for each skipped file.

    Returns:
        ``(images, labels, class_names)``: a list of uint8 arrays of any sizes, int64 labels
        and the class names.

    Raises:
        DataNotFoundError: ``root`` is missing, has no class subfolders, or holds no images.
        BadImageFileError: a file is empty, not a readable image, or too large (unless ``skip_bad``).
    """
    root = Path(root).expanduser()
    classes = _check_image_root(root)
    images: list[np.ndarray] = []
    labels: list[int] = []
    found_bad: list[tuple[Path, str]] = []
    for label, folder in enumerate(classes):
        for path in _walk_files(folder):
            if not _is_image_name(path):
                logger.debug("ignoring %s: not an image file extension", path)
                continue
            try:
                images.append(_read_image(path))
            except BadImageFileError as error:
                if not skip_bad:
                    raise
                _skip(path, error, skipped, found_bad)
                continue
            labels.append(label)
    if found_bad:
        _warn_skipped(root, found_bad)
    if not images:
        raise DataNotFoundError(
            f"no readable images in the class subfolders of {root}; lay images out as "
            "<root>/<class name>/<image file> in a format Pillow reads (PNG, JPEG, ...)"
        )
    return images, np.asarray(labels, dtype=np.int64), [folder.name for folder in classes]


# --------------------------------------------------------------------------- take


def take(
    images: np.ndarray | Sequence[np.ndarray], labels: object, n: int
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """The first ``n`` images and labels, cycling through the source when it is shorter.

    Benchmarks often need more images than a data set holds (100,000 from CIFAR-10's
    60,000, or from the 5,085-image sample); cycling reuses them in order, so image ``i``
    is source image ``i % len(source)``.

    Args:
        images: An (N,H,W[,C]) array or a sequence of arrays.
        labels: N integer labels.
        n: How many images to return; a positive int.

    Returns:
        ``(images, labels)``: a new C-contiguous array for an array source, or a list (of the
        same array objects, not copies) for a sequence source; labels as an int64 array.

    Raises:
        ImageTypeError: ``n`` is not an int, or ``images`` is neither an array nor a sequence.
        EmptyBatchError: ``n`` is zero or negative, or the source is empty.
        LabelError: ``labels`` do not match ``images``.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise ImageTypeError(f"n is {n!r} ({type(n).__name__}); pass the number of images as a positive int")
    if n <= 0:
        raise EmptyBatchError(f"n is {n}; ask for at least one image")
    if isinstance(images, (str, bytes)) or not isinstance(images, (np.ndarray, Sequence)):
        raise ImageTypeError(f"images is a {type(images).__name__}; pass an array of images or a list of arrays")
    if len(images) == 0:
        raise EmptyBatchError("the source holds no images; load a data set with at least one image")
    label_array = check_labels(labels, len(images))
    index = np.arange(int(n)) % len(images)
    if isinstance(images, np.ndarray):
        return np.ascontiguousarray(images[index]), label_array[index]
    return [images[i] for i in index.tolist()], label_array[index]


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True, eq=False)
class DataSource:
    """A loaded data set and where it came from.

    Attributes:
        images: An (N,32,32,3) uint8 array for CIFAR-10, or a list of uint8 arrays for an
            image folder (whose images may differ in size).
        labels: int64 (N,) labels, indices into ``class_names``.
        class_names: The name of each class.
        kind: ``"cifar10"`` (the full set or a CIFAR folder given by path), ``"sample"``
            (the bundled sample) or ``"image-folder"``.
        root: The folder the images were read from.
        description: One human-readable line, for logs, the CLI and the dashboard.
    """

    images: np.ndarray | list[np.ndarray]
    labels: np.ndarray
    class_names: list[str]
    kind: str
    root: Path
    description: str

    def __len__(self) -> int:
        return len(self.labels)


def _cifar_source(images: np.ndarray, labels: np.ndarray, class_names: list[str], kind: str, root: Path) -> DataSource:
    what = "bundled CIFAR-10 sample" if kind == "sample" else f"CIFAR-10 at {_display(root)}"
    description = f"{what}: {len(labels):,} real images, {len(class_names)} classes"
    return DataSource(images, labels, class_names, kind, root, description)


def _image_folder_source(root: Path) -> DataSource:
    images, labels, class_names = load_image_folder(root)
    shapes = {image.shape[:2] for image in images}
    sizes = "one size" if len(shapes) == 1 else f"{len(shapes)} sizes"
    description = f"image folder {_display(root)}: {len(images):,} images, {len(class_names)} classes, {sizes}"
    return DataSource(images, labels, class_names, "image-folder", root, description)


def _has_image_subfolder(root: Path) -> bool:
    for folder in _class_folders(root):
        if any(_is_image_name(path) for path in _walk_files(folder)):
            return True
    return False


def _is_sample(folder: Path) -> bool:
    return folder.resolve() == SAMPLE_CIFAR10_DIR.resolve()


def _source_from_path(path: Path) -> DataSource:
    if not path.exists():
        raise DataNotFoundError(
            f"data source {path} does not exist; pass an existing folder, 'auto', 'sample' or 'cifar10'"
        )
    if not path.is_dir():
        raise DataNotFoundError(
            f"data source {path} is a file; pass a folder (extract archives first, or run `{DOWNLOAD_COMMAND}`)"
        )
    folder = _batch_folder(path)
    if folder is not None:
        images, labels, class_names = _load_cifar10_folder(folder)
        return _cifar_source(images, labels, class_names, "sample" if _is_sample(folder) else "cifar10", folder)
    if _has_image_subfolder(path):
        return _image_folder_source(path)
    raise DataNotFoundError(
        f"{path} is neither a CIFAR-10 folder (data_batch_1..5 / test_batch files, directly or in a "
        f"{CIFAR10_DIRNAME} subfolder) nor an image folder (<root>/<class name>/<image file>); "
        "point to one of these two layouts"
    )


def load_source(
    source: str | os.PathLike[str] = "auto", *, data_folder: str | os.PathLike[str] | None = None
) -> DataSource:
    """Load a data set named by one string, as the CLI and the dashboard pass it.

    Args:
        source: ``"auto"`` (the full CIFAR-10 if downloaded, else the bundled sample with a
            :class:`SampleDataWarning`), ``"sample"`` (the bundled sample), ``"cifar10"``
            (the full set, which must have been downloaded), or a path to a folder. A folder
            is recognised by its content, whatever its name: CIFAR-10 batch files (directly
            or in a ``cifar-10-batches-py`` subfolder) make it CIFAR-10, subfolders holding
            image files make it an image folder. A ``Path`` is always taken as a path; pass
            ``"./sample"`` for a folder named like a keyword.
        data_folder: The data folder to look in for the full CIFAR-10; defaults to
            :func:`data_dir`.

    Returns:
        A :class:`DataSource`.

    Raises:
        DataNotFoundError: the full set is asked for but absent, or the path is missing or
            in neither layout.
        CorruptDataError: a CIFAR-10 file is damaged.
        BadImageFileError: an image folder holds an unreadable file.
    """
    base = Path(data_folder).expanduser() if data_folder is not None else data_dir()
    if isinstance(source, str) and source in ("auto", "sample", "cifar10"):
        return _source_from_keyword(source, base)
    return _source_from_path(Path(source).expanduser())


def _source_from_keyword(keyword: str, base: Path) -> DataSource:
    if keyword == "auto":
        images, labels, class_names, kind, root = _load_default_cifar10(base, depth=3)
        return _cifar_source(images, labels, class_names, kind, root)
    if keyword == "sample":
        return _cifar_source(*_load_cifar10_folder(SAMPLE_CIFAR10_DIR), "sample", SAMPLE_CIFAR10_DIR)
    full_dir = base / CIFAR10_DIRNAME
    if _batch_folder(full_dir) != full_dir:
        raise DataNotFoundError(
            f"the full CIFAR-10 is not at {_display(full_dir)}; run `{DOWNLOAD_COMMAND}` to fetch it "
            "(170 MB), or use the source 'sample' for the bundled 5,085 images"
        )
    return _cifar_source(*_load_cifar10_folder(full_dir), "cifar10", full_dir)


def describe_available_sources(data_folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What data is on disk, without loading it (for a dashboard home page or ``--help``).

    Args:
        data_folder: The data folder to look in; defaults to :func:`data_dir`.

    Returns:
        A dict with ``data_dir``, ``cifar10_dir`` (Path), ``cifar10_present`` (bool: all six
        batch files are there), ``cifar10_partial`` (bool: only some are), ``archive_path``,
        ``archive_present``, ``sample_dir``, ``sample_present``, ``auto`` (``"cifar10"`` or
        ``"sample"``: what ``load_source("auto")`` would load) and ``download_command``.
    """
    base = Path(data_folder).expanduser() if data_folder is not None else data_dir()
    full_dir = base / CIFAR10_DIRNAME
    complete = _is_full_cifar10(full_dir)
    some = _batch_folder(full_dir) == full_dir
    return {
        "data_dir": base,
        "cifar10_dir": full_dir,
        "cifar10_present": complete,
        "cifar10_partial": some and not complete,
        "archive_path": base / CIFAR10_ARCHIVE_NAME,
        "archive_present": (base / CIFAR10_ARCHIVE_NAME).is_file(),
        "sample_dir": SAMPLE_CIFAR10_DIR,
        "sample_present": _batch_folder(SAMPLE_CIFAR10_DIR) == SAMPLE_CIFAR10_DIR,
        "auto": "cifar10" if some else "sample",
        "download_command": DOWNLOAD_COMMAND,
    }
