"""Folders of images laid out as ``root/<class name>/<image file>`` (torchvision's ``ImageFolder``)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import (
    BadImageFileError,
    DataNotFoundError,
)
from .folder_images import FolderImages, bad_file, folder_files, list_headers

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


def _link_problems(root: Path, paths: list[str], follow_links: bool) -> dict[int, BadImageFileError]:
    """Files that are links leading outside the folder (unless ``follow_links``): bad files.

    A link out of the folder would put another folder's file (``/etc/...``, a mounted share)
    into the store unnoticed; it is skipped with ``skip_bad``, unless ``follow_links`` says to
    read where links lead. Dangling and looping links are left to reading the file, which
    names them as bad files (:func:`~storage.datasets.folder_images.read_file_bytes`).
    """
    if follow_links:
        return {}
    real_root = os.path.realpath(root)
    inside_root = real_root.rstrip(os.sep) + os.sep
    folders: dict[str, str] = {}
    problems: dict[int, BadImageFileError] = {}
    for index, path in enumerate(paths):
        folder = os.path.dirname(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        target = folders[folder]
        if os.path.islink(path):
            if not os.path.exists(path):
                continue  # dangling or a loop: named when it is read
            target = os.path.realpath(path)
        if not (target + os.sep).startswith(inside_root) and target != real_root:
            problems[index] = bad_file(
                path,
                f"leads outside the image folder (to {target})",
                "copy the file into the folder, or let links be followed (--follow-links, follow_links=True)",
            )
    return problems


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


def list_image_folder(
    root: str | os.PathLike[str],
    skip_bad: bool = False,
    skipped: list[tuple[Path, str]] | None = None,
    *,
    max_side: int | None = None,
    shorter_side: int | None = None,
    follow_links: bool = False,
) -> tuple[FolderImages, np.ndarray, list[str]]:
    """List an image folder without decoding it: its photos as a lazy :class:`FolderImages`.

    The same files, order, labels and bad-file handling as :func:`load_image_folder`, but
    only each file's header is read (on all cores); pixels are decoded when a chunk of the
    returned sequence is asked for. ``max_side`` / ``shorter_side`` resize every photo
    that is larger (see :mod:`storage.encodings`). Links that lead outside ``root`` are bad
    files unless ``follow_links``; dangling and looping links always are.

    Raises:
        DataNotFoundError: ``root`` is missing, has no class subfolders, or holds no images.
        BadImageFileError: a file is empty, truncated, not a readable image, or too large
            (unless ``skip_bad``); the message names every bad file found, up to five.
    """
    root = Path(root).expanduser()
    classes = _check_image_root(root)
    paths, labels = folder_files(root, classes, walk_files, _is_listed_image)
    refused = _link_problems(root, paths, follow_links)
    headers = list_headers([path for index, path in enumerate(paths) if index not in refused])
    if refused:
        readable = iter(headers)
        headers = [refused[index] if index in refused else next(readable) for index in range(len(paths))]
    bad = [(Path(path), header) for path, header in zip(paths, headers) if isinstance(header, BadImageFileError)]
    if bad and not skip_bad:
        raise _all_bad_files(bad)
    found_bad: list[tuple[Path, str]] = []
    for path, error in bad:
        _skip(path, error, skipped, found_bad)
    if found_bad:
        _warn_skipped(root, found_bad)
    good = [index for index, header in enumerate(headers) if not isinstance(header, BadImageFileError)]
    if not good:
        raise DataNotFoundError(
            f"no readable images in the class subfolders of {root}; lay images out as "
            "<root>/<class name>/<image file> in a format Pillow reads (PNG, JPEG, ...)"
        )
    images = FolderImages(
        [paths[i] for i in good], [headers[i] for i in good], max_side=max_side, shorter_side=shorter_side
    )
    label_array = np.asarray([labels[i] for i in good], dtype=np.int64)
    return images, label_array, [folder.name for folder in classes]


def _is_listed_image(path: Path) -> bool:
    if is_image_name(path):
        return True
    logger.debug("ignoring %s: not an image file extension", path)
    return False


def _all_bad_files(bad: list[tuple[Path, BadImageFileError]]) -> BadImageFileError:
    """The first bad file's error, naming the others too (a folder is fixed in one pass)."""
    first = bad[0][1]
    if len(bad) == 1:
        return first
    others = ", ".join(str(path) for path, _ in bad[1:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    error = BadImageFileError(f"{first}. {len(bad) - 1} other file(s) cannot be used either: {others}; "
                              "fix or remove them, or skip bad files (--skip-bad, skip_bad=True)")  # fmt: skip
    error.problem = getattr(first, "problem", str(first))
    return error


def load_image_folder(
    root: str | os.PathLike[str],
    skip_bad: bool = False,
    skipped: list[tuple[Path, str]] | None = None,
    follow_links: bool = False,
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Load images stored as ``root/<class name>/<image file>`` (torchvision ImageFolder layout).

    Class names are the sorted subfolder names; label ``i`` is ``class_names[i]``. Files are
    read in sorted order (subfolders of a class included), so the result is deterministic.
    Hidden files and folders (name starting with ``.``) are ignored, and so are files whose
    extension is not one Pillow opens (``.txt``, ``.json``, ...). Multi-frame files give
    their first frame. A file's format is read from its content, whatever its extension.

    Each image keeps its mode where possible (see :func:`storage.image_codec.pixels_of`):
    ``L`` gives (H,W), ``RGB`` (H,W,3) and ``RGBA`` (H,W,4); ``1`` becomes ``L``; ``LA``
    and ``PA`` become RGBA; ``P`` becomes RGBA if it has transparency, else RGB; ``CMYK``,
    ``YCbCr`` and other colour modes become RGB. 16-bit grayscale (``I;16``) keeps its 8
    most significant bits (``value >> 8``), which is exact for images saved from 8-bit
    data. 32-bit integer (``I``) and float (``F``) images have no fixed range, so they are
    refused as BadImageFileError rather than guessed at. EXIF orientation is not applied.

    Everything is decoded into memory, on all cores; for large folders use
    :func:`list_image_folder`, which decodes chunk by chunk as the images are used.

    Args:
        root: The folder holding one subfolder per class.
        skip_bad: Skip unreadable files (empty, truncated, not an image, decompression
            bomb) instead of raising; they are reported with a :class:`SkippedFilesWarning`
            and a log line each (logger ``storage.datasets.skipped``).
        skipped: If given, ``(path, reason)`` is appended for each skipped file.
        follow_links: Read files that links lead to outside ``root``; without it such links
            are bad files (so are dangling and looping links, always).

    Returns:
        ``(images, labels, class_names)``: a list of uint8 arrays of any sizes, int64 labels
        and the class names.

    Raises:
        DataNotFoundError: ``root`` is missing, has no class subfolders, or holds no images.
        BadImageFileError: a file is empty, not a readable image, or too large (unless ``skip_bad``).
    """
    images, labels, class_names = list_image_folder(root, skip_bad, skipped, follow_links=follow_links)
    return images.chunk(0, len(images)), labels, class_names
