"""A source described without loading it, and any slice of it read on its own.

A conversion on many machines cannot hand every image to every worker: the client lists
the source (CIFAR-10 batch files and how many images each holds, or an image folder's
files and labels) and each task reads only its own range of images, straight from the
source files. :func:`list_source` makes that listing; :func:`read_slice` reads a range in
bounded chunks, opening only the batch files (or image files) the range touches.

A range may reach past the end of the source: image ``i`` is then source image
``i % len(source)``, the same cycling as :func:`~storage.datasets.take`, so a benchmark
can convert 100,000 images from the 5,085-image sample.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError
from .cifar10 import (
    CIFAR10_BATCH_FILES,
    CIFAR10_DIRNAME,
    DOWNLOAD_COMMAND,
    SAMPLE_CIFAR10_DIR,
    _channel_major_to_hwc,
    _read_batch,
    _read_class_names,
    _warn_sample,
    batch_folder,
)
from .folder_images import decode_file
from .image_folder import _check_image_root, is_image_name, walk_files
from .locations import data_dir, display_path

SLICE_CHUNK_IMAGES = 4_096  # images per chunk yielded by read_slice for image folders
SLICE_CHUNK_BYTES = 64 * 2**20  # and decoded bytes: 4,096 photos would be 2.5 GB of pixels
Mapper = Callable[[Callable[[Path], int], list[Path]], list[int]]


@dataclass(frozen=True)
class SourceListing:
    """What a source holds, without its pixels: enough for a task to read any range itself.

    Attributes:
        kind: ``"cifar10"``, ``"sample"`` or ``"image-folder"``.
        root: the batch folder (CIFAR-10) or the image folder.
        count: images in the source.
        class_names: the name of each label.
        batch_files: CIFAR-10 only: ``(file name, images in it)`` in reading order.
        files: image folders only: ``(path relative to root, label)`` in reading order.
        description: one human-readable line.
    """

    kind: str
    root: Path
    count: int
    class_names: list[str]
    batch_files: tuple[tuple[str, int], ...] = ()
    files: tuple[tuple[str, int], ...] = field(default=(), repr=False)
    description: str = ""

    @property
    def is_cifar(self) -> bool:
        return self.kind in ("cifar10", "sample")


def list_source(source: str | os.PathLike[str] = "auto", mapper: Mapper | None = None) -> SourceListing:
    """List a source named as :func:`~storage.datasets.load_source` names it.

    CIFAR-10 batch files are unpickled only to count their images, one at a time here
    (memory stays at one batch file), or wherever ``mapper(function, items)`` runs them:
    a cluster passes one that runs each file's count as a task, so the client does not read
    the whole source just to list it. An image folder's files are listed, not decoded.

    Raises:
        DataNotFoundError: the source is missing or in neither layout.
        CorruptDataError: a CIFAR-10 file is damaged.
    """
    mapper = mapper or _map_here
    if isinstance(source, str) and source in ("auto", "sample", "cifar10"):
        return _list_keyword(source, mapper)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(
            f"data source {path} does not exist or is not a folder; pass a CIFAR-10 folder or an image folder"
        )
    folder = batch_folder(path)
    if folder is not None:
        kind = "sample" if folder.resolve() == SAMPLE_CIFAR10_DIR.resolve() else "cifar10"
        return _list_cifar(folder, kind, mapper)
    return _list_image_folder(path)


def _map_here(function: Callable[[Path], int], items: list[Path]) -> list[int]:
    return [function(item) for item in items]


def count_batch_images(path: Path) -> int:
    """How many images one CIFAR-10 batch file holds (it is read and checked whole)."""
    return len(_read_batch(path)[1])


def _list_keyword(keyword: str, mapper: Mapper) -> SourceListing:
    full_dir = data_dir() / CIFAR10_DIRNAME
    has_full = batch_folder(full_dir) == full_dir
    if keyword == "sample" or (keyword == "auto" and not has_full):
        listing = _list_cifar(SAMPLE_CIFAR10_DIR, "sample", mapper)
        if keyword == "auto":
            _warn_sample(full_dir, listing.count, depth=3)
        return listing
    if not has_full:
        raise DataNotFoundError(
            f"the full CIFAR-10 is not at {display_path(full_dir)}; run `{DOWNLOAD_COMMAND}` to fetch it "
            "(170 MB), or use the source 'sample' for the bundled 5,085 images"
        )
    return _list_cifar(full_dir, "cifar10", mapper)


def _list_cifar(folder: Path, kind: str, mapper: Mapper) -> SourceListing:
    names = [name for name in CIFAR10_BATCH_FILES if (folder / name).is_file()]
    batches = list(zip(names, mapper(count_batch_images, [folder / name for name in names])))
    count = sum(size for _, size in batches)
    what = "bundled CIFAR-10 sample" if kind == "sample" else f"CIFAR-10 at {display_path(folder)}"
    return SourceListing(
        kind, folder, count, _read_class_names(folder), tuple(batches), description=f"{what}: {count:,} images"
    )


def _list_image_folder(root: Path) -> SourceListing:
    classes = _check_image_root(root)
    files = [
        (str(path.relative_to(root)), label)
        for label, folder in enumerate(classes)
        for path in walk_files(folder)
        if is_image_name(path)
    ]
    if not files:
        raise DataNotFoundError(
            f"{root} is neither a CIFAR-10 folder nor an image folder with images in its class subfolders; "
            "lay images out as <root>/<class name>/<image file>"
        )
    return SourceListing(
        "image-folder",
        root,
        len(files),
        [folder.name for folder in classes],
        files=tuple(files),
        description=f"image folder {display_path(root)}: {len(files):,} images",
    )


def read_slice(
    listing: SourceListing, start: int, stop: int
) -> Iterator[tuple[np.ndarray | list[np.ndarray], np.ndarray]]:
    """Yield ``(images, labels)`` chunks of images ``start..stop-1``, cycling past the end.

    CIFAR-10 chunks are C-contiguous (n,32,32,3) arrays, one per batch file touched (a
    batch file is read once per pass over it); image-folder chunks are lists of at most
    :data:`SLICE_CHUNK_IMAGES` arrays. Only the files the range touches are opened.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"bad slice {start}..{stop}")
    if listing.count == 0:
        raise DataNotFoundError(f"{listing.root} holds no images")
    reader = _cifar_pieces if listing.is_cifar else _folder_pieces
    position = start
    while position < stop:
        offset = position % listing.count
        length = min(stop - position, listing.count - offset)
        yield from reader(listing, offset, offset + length)
        position += length


def _cifar_pieces(listing: SourceListing, start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Images ``start..stop-1`` (within one pass of the source), one chunk per batch file."""
    first = 0
    for name, size in listing.batch_files:
        low, high = max(start, first), min(stop, first + size)
        if low < high:
            flat, labels = _read_batch(listing.root / name)
            yield _channel_major_to_hwc(flat[low - first : high - first]), labels[low - first : high - first].copy()
            del flat, labels
        first += size
        if first >= stop:
            return


def _folder_pieces(listing: SourceListing, start: int, stop: int) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
    """Chunks of at most ``SLICE_CHUNK_IMAGES`` images and ``SLICE_CHUNK_BYTES`` of pixels."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    held = 0
    for relative, label in listing.files[start:stop]:
        image = decode_file(str(listing.root / relative), None)
        images.append(image)
        labels.append(label)
        held += image.nbytes
        if len(images) >= SLICE_CHUNK_IMAGES or held >= SLICE_CHUNK_BYTES:
            yield images, np.asarray(labels, dtype=np.int64)
            images, labels, held = [], [], 0
    if images:
        yield images, np.asarray(labels, dtype=np.int64)
