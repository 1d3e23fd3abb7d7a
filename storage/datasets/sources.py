"""One string names a data set: ``auto``, ``sample``, ``cifar10`` or a folder told apart by its content."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    DataNotFoundError,
)
from .cifar10 import (
    CIFAR10_ARCHIVE_NAME,
    CIFAR10_DIRNAME,
    DOWNLOAD_COMMAND,
    SAMPLE_CIFAR10_DIR,
    batch_folder,
    is_full_cifar10,
    load_cifar10_folder,
    load_default_cifar10,
)
from .folder_images import FolderImages, describe_shapes
from .image_folder import class_folders, is_image_name, list_image_folder, walk_files
from .locations import data_dir, display_path


@dataclass(frozen=True, eq=False)
class DataSource:
    """A loaded data set and where it came from.

    Attributes:
        images: An (N,32,32,3) uint8 array for CIFAR-10, or for an image folder a
            :class:`FolderImages`: a sequence of uint8 arrays (which may differ in size)
            listed from the files' headers and decoded chunk by chunk as it is used.
        labels: int64 (N,) labels, indices into ``class_names``.
        class_names: The name of each class.
        kind: ``"cifar10"`` (the full set or a CIFAR folder given by path), ``"sample"``
            (the bundled sample) or ``"image-folder"``.
        root: The folder the images were read from.
        description: One human-readable line, for logs, the CLI and the dashboard.
    """

    images: np.ndarray | FolderImages
    labels: np.ndarray
    class_names: list[str]
    kind: str
    root: Path
    description: str

    def __len__(self) -> int:
        return len(self.labels)


def _cifar_source(images: np.ndarray, labels: np.ndarray, class_names: list[str], kind: str, root: Path) -> DataSource:
    what = "bundled CIFAR-10 sample" if kind == "sample" else f"CIFAR-10 at {display_path(root)}"
    description = f"{what}: {len(labels):,} real images, {len(class_names)} classes"
    return DataSource(images, labels, class_names, kind, root, description)


def _image_folder_source(root: Path, skip_bad: bool = False, follow_links: bool = False) -> DataSource:
    images, labels, class_names = list_image_folder(root, skip_bad=skip_bad, follow_links=follow_links)
    sizes = describe_shapes(images.distinct_shapes())  # sizes and channels: a store holds one shape or many
    description = f"image folder {display_path(root)}: {len(images):,} images, {len(class_names)} classes, {sizes}"
    return DataSource(images, labels, class_names, "image-folder", root, description)


def _has_image_subfolder(root: Path) -> bool:
    for folder in class_folders(root):
        if any(is_image_name(path) for path in walk_files(folder)):
            return True
    return False


def _is_sample(folder: Path) -> bool:
    return folder.resolve() == SAMPLE_CIFAR10_DIR.resolve()


def _source_from_path(path: Path, skip_bad: bool = False, follow_links: bool = False) -> DataSource:
    if not path.exists():
        raise DataNotFoundError(
            f"data source {path} does not exist; pass an existing folder, 'auto', 'sample' or 'cifar10'"
        )
    if not path.is_dir():
        raise DataNotFoundError(
            f"data source {path} is a file; pass a folder (extract archives first, or run `{DOWNLOAD_COMMAND}`)"
        )
    folder = batch_folder(path)
    if folder is not None:
        images, labels, class_names = load_cifar10_folder(folder)
        return _cifar_source(images, labels, class_names, "sample" if _is_sample(folder) else "cifar10", folder)
    if _has_image_subfolder(path):
        return _image_folder_source(path, skip_bad, follow_links)
    raise DataNotFoundError(
        f"{path} is neither a CIFAR-10 folder (data_batch_1..5 / test_batch files, directly or in a "
        f"{CIFAR10_DIRNAME} subfolder) nor an image folder (<root>/<class name>/<image file>); "
        "point to one of these two layouts"
    )


def load_source(
    source: str | os.PathLike[str] = "auto",
    *,
    data_folder: str | os.PathLike[str] | None = None,
    skip_bad: bool = False,
    follow_links: bool = False,
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
        skip_bad: For an image folder, skip files that cannot be read (empty, not an
            image, too large) instead of failing, as ``load_image_folder`` does; CIFAR-10
            sources ignore it.
        follow_links: For an image folder, read the files that links lead to outside it
            (without it such links are bad files, see :func:`list_image_folder`).

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
    return _source_from_path(Path(source).expanduser(), skip_bad, follow_links)


def _source_from_keyword(keyword: str, base: Path) -> DataSource:
    if keyword == "auto":
        images, labels, class_names, kind, root = load_default_cifar10(base, depth=3)
        return _cifar_source(images, labels, class_names, kind, root)
    if keyword == "sample":
        return _cifar_source(*load_cifar10_folder(SAMPLE_CIFAR10_DIR), "sample", SAMPLE_CIFAR10_DIR)
    full_dir = base / CIFAR10_DIRNAME
    if batch_folder(full_dir) != full_dir:
        raise DataNotFoundError(
            f"the full CIFAR-10 is not at {display_path(full_dir)}; run `{DOWNLOAD_COMMAND}` to fetch it "
            "(170 MB), or use the source 'sample' for the bundled 5,085 images"
        )
    return _cifar_source(*load_cifar10_folder(full_dir), "cifar10", full_dir)


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
    complete = is_full_cifar10(full_dir)
    some = batch_folder(full_dir) == full_dir
    return {
        "data_dir": base,
        "cifar10_dir": full_dir,
        "cifar10_present": complete,
        "cifar10_partial": some and not complete,
        "archive_path": base / CIFAR10_ARCHIVE_NAME,
        "archive_present": (base / CIFAR10_ARCHIVE_NAME).is_file(),
        "sample_dir": SAMPLE_CIFAR10_DIR,
        "sample_present": batch_folder(SAMPLE_CIFAR10_DIR) == SAMPLE_CIFAR10_DIR,
        "auto": "cifar10" if some else "sample",
        "download_command": DOWNLOAD_COMMAND,
    }
