"""A folder of photos listed first, then read and decoded lazily, chunk by chunk, on all cores.

ImageNet's 1.28 M training photos decoded at once would need about 2.5 TB of memory.
:class:`FolderImages` holds only the listing: each file's path, label, format and the
shape it decodes to (read from its header, which Pillow reads without decoding). Pixels
are decoded when a chunk is asked for (:meth:`FolderImages.chunk`), on the worker pool of
:mod:`storage.parallel`, and the chunk is dropped by the caller when it is written; the
files' own bytes are read the same way (:meth:`FolderImages.encoded_chunk`) for stores that
keep them. ``write_batch`` takes a :class:`FolderImages` as it takes an array, checks it
from the listing alone, and streams it in bounded chunks, so memory does not grow with
the number of photos.

A listing can be cycled or subset without reading anything (:meth:`FolderImages.select`):
a benchmark cycles 578 photos to 100,000 and decodes only the chunk it is writing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import encodings, image_codec, parallel
from ..encodings import EncodedImage, Encoding
from ..errors import BadImageFileError

HEADERS_PER_TASK = 256  # files whose headers one pool task reads
DECODES_PER_TASK = 8  # photos one pool task decodes (about 20 ms of work each)


@dataclass(frozen=True)
class FileHeader:
    """What a file's header says: its format, and the shape it decodes to before resizing."""

    format: str
    shape: tuple[int, ...]
    size_bytes: int


def bad_file(path: Path | str, problem: str, remedy: str) -> BadImageFileError:
    """The error for a file that cannot be used; ``problem`` stays apart for the skip message."""
    error = BadImageFileError(f"{path} {problem}; {remedy}")
    error.problem = problem
    return error


def _not_readable(path: Path | str, error: BaseException) -> BadImageFileError:
    return bad_file(path, f"is not an image Pillow can read ({error})", "delete it, or move it out of the image folder")


def _bomb(path: Path | str, error: BaseException) -> BadImageFileError:
    match = re.search(r"\((\d+) pixels\)", str(error))
    count = f"{int(match.group(1)):,} pixels" if match else "more pixels than allowed"
    return bad_file(
        path,
        f"has {count}, above Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS), "
        "so it may be a decompression bomb",
        "remove it, or raise the limit if you trust the file",
    )


def read_file_bytes(path: Path | str) -> bytes:
    """The bytes of one image file, or a :class:`BadImageFileError` naming it."""
    try:
        data = Path(path).read_bytes()
    except PermissionError:
        raise bad_file(path, "cannot be read (permission denied)", "make it readable, or move it out") from None
    except OSError as error:
        if os.path.islink(path):  # dangling, or a loop: the link is what the user has to fix
            problem = f"is a symbolic link to {os.readlink(path)}, which cannot be followed ({error.strerror or error})"
            raise bad_file(path, problem, "fix or remove the link") from None
        raise bad_file(path, f"cannot be read ({error.strerror or error})", "check the file, or move it out") from None
    if not data:
        raise bad_file(path, "is empty (0 bytes)", "delete it or replace it with a real image")
    return data


def _check_complete(path: Path | str, data: bytes, image_format: str) -> None:
    """Refuse a truncated JPEG or PNG without decoding it (its end marker is missing)."""
    if image_format == "jpeg" and b"\xff\xd9" not in data[-4096:]:
        raise _not_readable(path, "truncated: the JPEG's end-of-image marker is missing")
    if image_format == "png" and b"IEND" not in data[-64:]:
        raise _not_readable(path, "truncated: the PNG's IEND chunk is missing")


def read_header(path: Path | str) -> FileHeader:
    """The header of one image file: format, decoded shape and size; nothing is decoded.

    The format comes from the content, not the extension: a ``.png`` that holds JPEG data
    is a JPEG (Pillow and torchvision's ImageFolder read it the same way).
    """
    data = read_file_bytes(path)
    image_format = encodings.sniff_format(data)
    _check_complete(path, data, image_format)
    try:
        with image_codec.open_image(data) as image:
            if image.mode in ("I", "F"):
                kind = "32-bit integer" if image.mode == "I" else "floating-point"
                raise bad_file(
                    path,
                    f"has {kind} pixels (mode {image.mode}), which have no fixed 0..255 range",
                    "convert it to an 8-bit image first (for instance scale it and save it as an 8-bit PNG)",
                )
            shape = image_codec.decoded_shape(image)
            if image_format == "unknown":
                image_format = (image.format or "unknown").lower()
    except BadImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb(path, error) from None
    except Exception as error:  # Pillow raises many kinds for a file that is not an image
        raise _not_readable(path, error) from None
    return FileHeader(image_format, shape, len(data))


def read_headers(paths: Sequence[str], max_pixels: int | None) -> list[FileHeader | BadImageFileError]:
    """Headers of many files (a pool task): a bad file gives its error in its place.

    ``max_pixels`` is the caller's ``PIL.Image.MAX_IMAGE_PIXELS``: a worker forked before
    the caller changed it would otherwise judge decompression bombs by the old limit.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    found: list[FileHeader | BadImageFileError] = []
    for path in paths:
        try:
            found.append(read_header(path))
        except BadImageFileError as error:
            found.append(error)
    return found


def list_headers(paths: Sequence[str]) -> list[FileHeader | BadImageFileError]:
    """Headers of every file, read on the worker pool in tasks of ``HEADERS_PER_TASK``."""
    ranges = parallel.split_ranges(len(paths), 1, HEADERS_PER_TASK)
    tasks = [(list(paths[start:stop]), Image.MAX_IMAGE_PIXELS) for start, stop in ranges]
    return [header for part in parallel.run_tasks(read_headers, tasks) for header in part]


def decode_file(path: str, size: tuple[int, int] | None) -> np.ndarray:
    """One file's pixels, resized to ``size`` (width, height) when given."""
    data = read_file_bytes(path)
    try:
        with image_codec.open_image(data) as image:
            image.load()
            if size is not None:
                image = image_codec.resize_image(image, size)
            return np.array(image_codec.pixels_of(image))
    except BadImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb(path, error) from None
    except Exception as error:
        raise _not_readable(path, error) from None


def decode_files(jobs: Sequence[tuple[str, tuple[int, int] | None]], max_pixels: int | None) -> list[np.ndarray]:
    """A pool task: decode (and resize) a few files (``max_pixels`` as in :func:`read_headers`)."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    return [decode_file(path, size) for path, size in jobs]


def encode_file(path: str, size: tuple[int, int] | None, encoding: Encoding, image_format: str) -> EncodedImage:
    """One file as a store keeps it under ``encoding``: its own bytes, or pixels encoded again.

    Under ``"source"`` a file that needs no resizing keeps its bytes exactly; one that was
    resized is encoded again in its own format (see :func:`encodings.encoding_for_resized`).
    """
    if encoding.name == encodings.SOURCE and size is None:
        data = read_file_bytes(path)
        with image_codec.open_image(data) as image:
            shape = image_codec.decoded_shape(image)
        return EncodedImage(data, image_format, shape)
    return image_codec.encoded_again(decode_file(path, size), encoding, image_format)


def encode_files(
    jobs: Sequence[tuple[str, tuple[int, int] | None, Encoding, str]], max_pixels: int | None
) -> list[EncodedImage]:
    """A pool task: a few files as :func:`encode_file` gives them."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    return [encode_file(*job) for job in jobs]


class FolderImages(Sequence):
    """The photos of a listing as a sequence of uint8 arrays, decoded (and resized) on demand.

    Args:
        paths: one path per distinct file.
        headers: each file's :class:`FileHeader`.
        order: which file each image is (indices into ``paths``); cycling and subsets are
            just other orders. Defaults to every file once.
        max_side, shorter_side: resizing applied to every image (never enlarging).
    """

    def __init__(
        self,
        paths: Sequence[str],
        headers: Sequence[FileHeader],
        order: np.ndarray | None = None,
        max_side: int | None = None,
        shorter_side: int | None = None,
    ) -> None:
        self.paths = list(paths)
        self.headers = list(headers)
        self.order = np.arange(len(self.paths), dtype=np.int64) if order is None else np.asarray(order, np.int64)
        self.max_side = max_side
        self.shorter_side = shorter_side
        self._targets = [self._target(header.shape) for header in self.headers]
        self._shapes = [
            self._resized_shape(header.shape, target) for header, target in zip(self.headers, self._targets)
        ]

    # -- the listing ----------------------------------------------------------------

    def _target(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        height, width = shape[:2]
        size = encodings.resized_size(width, height, self.max_side, self.shorter_side)
        return None if size == (width, height) else size

    @staticmethod
    def _resized_shape(shape: tuple[int, ...], target: tuple[int, int] | None) -> tuple[int, ...]:
        return shape if target is None else (target[1], target[0], *shape[2:])

    def __len__(self) -> int:
        return len(self.order)

    def image_shape(self, index: int) -> tuple[int, ...]:
        """The shape image ``index`` decodes to (after resizing), from the listing alone."""
        return self._shapes[self.order[index]]

    def file_of(self, index: int) -> str:
        return self.paths[self.order[index]]

    def format_of(self, index: int) -> str:
        return self.headers[self.order[index]].format

    def distinct_shapes(self) -> set[tuple[int, ...]]:
        return {self._shapes[file] for file in np.unique(self.order)}

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded pixels this sequence stands for (none are held)."""
        per_file = np.array([int(np.prod(shape)) for shape in self._shapes], dtype=np.int64)
        return int(per_file[self.order].sum()) if len(self.order) else 0

    @property
    def source_bytes(self) -> int:
        """Bytes of the files themselves, counted once per image (so cycling counts again)."""
        per_file = np.array([header.size_bytes for header in self.headers], dtype=np.int64)
        return int(per_file[self.order].sum()) if len(self.order) else 0

    @property
    def any_resized(self) -> bool:
        """Whether resizing changes any of these images (then kept bytes are encoded again)."""
        return any(self._targets[file] is not None for file in np.unique(self.order))

    def source_sizes(self) -> np.ndarray:
        """Each image's file size in bytes (int64), in order."""
        return np.array([header.size_bytes for header in self.headers], dtype=np.int64)[self.order]

    def resized(self, max_side: int | None, shorter_side: int | None) -> FolderImages:
        """The same photos, resized to fit ``max_side``/``shorter_side`` too (the tighter limit wins)."""
        return FolderImages(
            self.paths,
            self.headers,
            self.order,
            max_side=_tighter(self.max_side, max_side),
            shorter_side=_tighter(self.shorter_side, shorter_side),
        )

    def select(self, index: np.ndarray | Sequence[int]) -> FolderImages:
        """The images at ``index`` (any order, repeats allowed) as a new sequence; nothing is read."""
        subset = FolderImages.__new__(FolderImages)
        subset.__dict__.update(self.__dict__)
        subset.order = self.order[np.asarray(index, dtype=np.int64)]
        return subset

    def cycled(self, count: int) -> FolderImages:
        """The first ``count`` images, cycling through the listing (image i is image i % len)."""
        return self.select(np.arange(count) % len(self))

    # -- pixels and bytes ------------------------------------------------------------

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self.chunk(*index.indices(len(self))[:2])
        file = self.order[index]
        return decode_file(self.paths[file], self._targets[file])

    def chunk(self, start: int, stop: int) -> list[np.ndarray]:
        """Images ``start``..``stop`` decoded on the worker pool, in order."""
        jobs = [(self.paths[file], self._targets[file]) for file in self.order[start:stop].tolist()]
        return self._on_pool(decode_files, jobs)

    def encoded_chunk(self, start: int, stop: int, encoding: Encoding) -> list[EncodedImage]:
        """Images ``start``..``stop`` as a store keeps them under ``encoding`` (see :func:`encode_file`).

        Kept bytes that need no resizing are read here (a pool would only copy them twice);
        anything to decode or encode runs on the pool.
        """
        files = self.order[start:stop].tolist()
        jobs = [(self.paths[f], self._targets[f], encoding, self.headers[f].format) for f in files]
        if encoding.name == encodings.SOURCE and not any(self._targets[f] is not None for f in files):
            return [
                EncodedImage(read_file_bytes(self.paths[f]), self.headers[f].format, self._shapes[f]) for f in files
            ]
        return self._on_pool(encode_files, jobs)

    @staticmethod
    def _on_pool(function, jobs: list) -> list:
        ranges = parallel.split_ranges(len(jobs), parallel.worker_count(), DECODES_PER_TASK)
        tasks = [(jobs[a:b], Image.MAX_IMAGE_PIXELS) for a, b in ranges]
        return [item for part in parallel.run_tasks(function, tasks) for item in part]


def _tighter(first: int | None, second: int | None) -> int | None:
    return first if second is None else second if first is None else min(first, second)


def describe_shapes(shapes: set[tuple[int, ...]]) -> str:
    """``"one shape"`` or ``"N shapes"``, as the source descriptions say it."""
    return "one shape" if len(shapes) == 1 else f"{len(shapes):,} shapes"


def folder_files(root: Path, classes: Sequence[Path], walk, is_image) -> tuple[list[str], list[int]]:
    """Image files under each class folder, in sorted order, with their labels."""
    paths: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        for path in walk(folder):
            if is_image(path):
                paths.append(os.fspath(path))
                labels.append(label)
    return paths, labels
