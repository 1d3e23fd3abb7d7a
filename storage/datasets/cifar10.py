"""CIFAR-10 in its original "python version" layout: the full set or the bundled sample.

The batches are Python pickles, and unpickling runs code chosen by whoever wrote the file.
They are therefore read with a restricted unpickler that only rebuilds NumPy arrays and
refuses everything else. Whenever the full set is absent and the bundled sample of 5,085
real images is used instead, a :class:`SampleDataWarning` and a log line say so, so a
benchmark is never silently run on less data than the user thinks.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import pickletools
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    CorruptDataError,
    DataNotFoundError,
)
from .locations import DATA_DIR, PROJECT_ROOT, data_dir, display_path

logger = logging.getLogger("storage.datasets")

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
REPLACE_HINT = f"for the copy in the data folder: delete the folder and run `{DOWNLOAD_COMMAND}`"
SAMPLE_CIFAR10_DIR = PROJECT_ROOT / "data" / "cifar-10-sample" / CIFAR10_DIRNAME

_IMAGE_SIZE = 32 * 32 * 3
MAX_PICKLE_OPERATIONS = 500_000
"""Opcodes one batch file may hold: a real batch of 10,000 images has about 40,000 (labels and file names)."""
MAX_SHARED_REFERENCES = 1_000
"""Memo lookups one batch may make: a real batch makes a few; each one can double what the file builds."""
MAX_BATCH_IMAGES = 1_000_000
CIFAR10_DIR = DATA_DIR / CIFAR10_DIRNAME


class SampleDataWarning(UserWarning):
    """The full CIFAR-10 is absent, so the bundled sample of 5,085 images is used instead."""


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
                "refusing to unpickle it. The file is not a genuine CIFAR-10 batch: replace it with the "
                f"original from cifar-10-python.tar.gz ({REPLACE_HINT})"
            ) from None


def _corrupt(path: Path, problem: str) -> CorruptDataError:
    return CorruptDataError(
        f"{path} is not a readable CIFAR-10 file ({problem}); it is probably truncated or damaged: "
        f"replace it with the original from cifar-10-python.tar.gz ({REPLACE_HINT})"
    )


def _check_what_it_builds(raw: bytes, path: Path) -> None:
    """Refuse a pickle that would build far more than its size says, before unpickling it.

    Shared references (memo lookups) make a pickle of a few KB build nested lists of billions
    of items, which checking the labels then walks for minutes and gigabytes. A CIFAR-10 batch
    makes a handful of them; the limits are far above what a real batch needs.
    """
    operations = shared = 0
    try:
        for opcode, _argument, _position in pickletools.genops(raw):
            operations += 1
            shared += opcode.name in ("GET", "BINGET", "LONG_BINGET")
            if operations > MAX_PICKLE_OPERATIONS or shared > MAX_SHARED_REFERENCES:
                raise _corrupt(
                    path,
                    f"it would build more than a CIFAR-10 batch ever holds ({operations:,} operations, "
                    f"{shared:,} shared references so far); refusing to unpickle it",
                )
    except CorruptDataError:
        raise
    except Exception as error:  # a truncated or damaged pickle
        raise _corrupt(path, f"{type(error).__name__}: {error}") from None


def _unpickle(path: Path) -> Any:
    """Unpickle ``path`` with the restricted unpickler, turning any failure into CorruptDataError."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataNotFoundError(
            f"could not read {path} ({error}); check that the file exists and is readable"
        ) from None
    _check_what_it_builds(raw, path)
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
    if not isinstance(labels, list) or len(labels) > MAX_BATCH_IMAGES or not all(type(x) is int for x in labels):
        raise _corrupt(path, "b'labels' is not a list of integers (one per image, nothing nested)")
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


def batch_folder(root: Path) -> Path | None:
    """The folder holding the batch files: ``root`` itself or ``root/cifar-10-batches-py``."""
    for folder in (root, root / CIFAR10_DIRNAME):
        if any((folder / name).is_file() for name in CIFAR10_BATCH_FILES):
            return folder
    return None


def is_full_cifar10(folder: Path) -> bool:
    """Whether ``folder`` holds all six CIFAR-10 batch files (without reading them)."""
    return all((folder / name).is_file() for name in CIFAR10_BATCH_FILES)


def _channel_major_to_hwc(flat: np.ndarray) -> np.ndarray:
    """CIFAR rows (1,024 red, then green, then blue values) as C-contiguous (N,32,32,3) images."""
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def load_cifar10_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
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
        f"full CIFAR-10 not found at {display_path(full_dir)}; using the bundled sample of {count:,} real "
        f"CIFAR-10 images (run `{DOWNLOAD_COMMAND}` for all {CIFAR10_FULL_SIZE:,})"
    )
    # The warning is what a user sees; the log line is at INFO so that, with logging left
    # unconfigured, Python does not print the same sentence a second time.
    logger.info(message)
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
        return load_default_cifar10(data_dir(), depth=2)[:3]
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(
            f"CIFAR-10 folder {root} does not exist; pass the `{CIFAR10_DIRNAME}` folder (or the folder "
            f"holding it), or run `{DOWNLOAD_COMMAND}` to fetch the data set"
        )
    folder = batch_folder(root)
    if folder is None:
        raise DataNotFoundError(
            f"{root} holds no CIFAR-10 batch files (expected some of {', '.join(CIFAR10_BATCH_FILES)} "
            f"there or in {root / CIFAR10_DIRNAME}); run `{DOWNLOAD_COMMAND}` to fetch the data set"
        )
    return load_cifar10_folder(folder)


def load_default_cifar10(data_folder: Path, depth: int) -> tuple[np.ndarray, np.ndarray, list[str], str, Path]:
    """The full CIFAR-10 under ``data_folder`` if present, else the sample (with a warning)."""
    full_dir = data_folder / CIFAR10_DIRNAME
    if batch_folder(full_dir) == full_dir:
        return (*load_cifar10_folder(full_dir), "cifar10", full_dir)
    images, labels, class_names = load_cifar10_folder(SAMPLE_CIFAR10_DIR)
    _warn_sample(full_dir, len(labels), depth)
    return images, labels, class_names, "sample", SAMPLE_CIFAR10_DIR
