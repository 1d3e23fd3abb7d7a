"""Folders of images laid out as ``root/<class name>/<image file>`` (torchvision's ``ImageFolder``)."""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import (
    BadImageFileError,
    DataNotFoundError,
)

logger = logging.getLogger("storage.datasets")
SKIPPED_FILES_LOGGER = "storage.datasets.skipped"
"""The logger that names each file ``skip_bad`` leaves out, apart so a quiet caller can still show it."""
skip_log = logging.getLogger(SKIPPED_FILES_LOGGER)


class SkippedFilesWarning(UserWarning):
    """``load_image_folder(..., skip_bad=True)`` left out files it could not read."""


def _image_extensions() -> frozenset[str]:
    """File extensions Pillow can open (``.png``, ``.jpg``, ``.webp``, ``.tif``, ...)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


_IMAGE_EXTENSIONS = _image_extensions()


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in _IMAGE_EXTENSIONS


def walk_files(folder: Path) -> Iterator[Path]:
    """Non-hidden files below ``folder``, in sorted order, subfolders included."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def class_folders(root: Path) -> list[Path]:
    return sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )


def _bad_file(path: Path, problem: str, remedy: str) -> BadImageFileError:
    """The error for a file that cannot be loaded; ``problem`` stays apart for the skip message."""
    error = BadImageFileError(f"{path} {problem}; {remedy}")
    error.problem = problem
    return error


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
        raise _bad_file(
            path,
            f"has {kind} pixels (mode {mode}), which have no fixed 0..255 range",
            "convert it to an 8-bit image first (for instance scale it and save it as an 8-bit PNG)",
        )
    if mode == "P":
        return np.array(image.convert("RGBA" if "transparency" in image.info else "RGB"))
    if {"A", "a"} & set(image.getbands()):  # LA, PA, RGBa, La, ...
        return np.array(image.convert("RGBA"))
    return np.array(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _bomb_error(path: Path, error: Exception) -> BadImageFileError:
    match = re.search(r"\((\d+) pixels\)", str(error))
    count = f"{int(match.group(1)):,} pixels" if match else "more pixels than allowed"
    return _bad_file(
        path,
        f"has {count}, above Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS), "
        "so it may be a decompression bomb",
        "remove it, or raise the limit if you trust the file",
    )


def _read_image(path: Path) -> np.ndarray:
    """Decode ``path`` fully (so truncated files fail here), refusing decompression bombs."""
    if path.stat().st_size == 0:
        raise _bad_file(path, "is empty (0 bytes)", "delete it or replace it with a real image")
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
            raise _bad_file(
                path, f"is not an image Pillow can read ({error})", "delete it, or move it out of the image folder"
            ) from None


def _skip(path: Path, error: BadImageFileError, skipped: list[tuple[Path, str]] | None, found: list) -> None:
    skip_log.warning("skipping %s: it %s", path, getattr(error, "problem", error))
    found.append((path, str(error)))
    if skipped is not None:
        skipped.append((path, str(error)))


def _warn_skipped(root: Path, found: list[tuple[Path, str]]) -> None:
    names = ", ".join(str(path.relative_to(root)) for path, _ in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    warnings.warn(
        f"skipped {len(found)} unreadable file(s) in {root}: {names}{more}; "
        f"see the log (logger {SKIPPED_FILES_LOGGER!r}) for the reason of each",
        SkippedFilesWarning,
        stacklevel=3,
    )


def _check_image_root(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataNotFoundError(
            f"image folder {root} does not exist or is not a folder; pass a folder laid out as "
            "<root>/<class name>/<image file>"
        )
    classes = class_folders(root)
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
            of raising; they are reported with a :class:`SkippedFilesWarning` and a log line
            each (logger ``storage.datasets.skipped``).
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
        for path in walk_files(folder):
            if not is_image_name(path):
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
