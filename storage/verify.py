"""Compare what a store gives back with the source images: a wrong image is never a number.

Lossless backends must return every pixel bit for bit; lossy ones are held to a PSNR
floor (mean over the images checked, and a lower floor for the worst single image).
Labels must always match exactly. A store that keeps the source files' bytes
(``encoding="source"``) is also checked byte for byte: a hash of each image's stored bytes
against a hash of its file. Verification always runs outside the timers.

A folder of photos is decoded for the check in bounded chunks, on the worker pool, with the
decoder every store uses, so a store's pixels equal its source's exactly when it is lossless.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import registry
from .batch import bounded_runs
from .cycled import CycledImages
from .errors import StorageError

PSNR_MEAN_FLOOR = 30.0  # dB, mean over the images checked
PSNR_IMAGE_FLOOR = 20.0  # dB, the worst single image
PSNR_IDENTICAL = 99.0  # recorded instead of infinity when a lossy store returned exact pixels
_CHUNK = 4096
_CHUNK_BYTES = 64 * 2**20  # pixels decoded at once for the check, so photos stay bounded in memory


@dataclass
class Verification:
    """Whether the images read back are the source images, and if not, the first difference."""

    verified: bool
    checked: int
    psnr: float | None = None
    error: str | None = None


def combine(parts: Sequence[Verification]) -> Verification:
    """One verdict for checks made part by part: the first failure, else all checked, PSNR weighted by images."""
    for part in parts:
        if not part.verified:
            return part
    checked = sum(part.checked for part in parts)
    weighted = [(part.psnr, part.checked) for part in parts if part.psnr is not None]
    mean = sum(value * weight for value, weight in weighted) / max(1, sum(w for _, w in weighted)) if weighted else None
    return Verification(True, checked, psnr=mean)


def psnr(expected: np.ndarray, actual: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of 8-bit images (``PSNR_IDENTICAL`` if equal)."""
    difference = expected.astype(np.float64) - actual.astype(np.float64)
    mse = float(np.mean(difference * difference))
    if mse == 0.0:
        return PSNR_IDENTICAL
    return min(PSNR_IDENTICAL, 10.0 * math.log10(255.0**2 / mse))


def _describe_difference(image_id: int, expected: np.ndarray, actual: np.ndarray) -> str:
    if expected.shape != actual.shape:
        return f"image {image_id} has shape {actual.shape}, the source has {expected.shape}"
    differing = int(np.count_nonzero(expected != actual))
    return f"image {image_id} differs from the source in {differing:,} of {expected.size:,} pixel values"


def compare(
    actual_images: np.ndarray | Sequence[np.ndarray],
    actual_labels: Sequence[int] | np.ndarray,
    source_images: np.ndarray | Sequence[np.ndarray],
    source_labels: np.ndarray,
    ids: Sequence[int] | np.ndarray,
    lossless: bool,
) -> Verification:
    """Check images and labels read for ``ids`` against ``source_images[id]``, ``source_labels[id]``."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(actual_images) != len(ids) or len(actual_labels) != len(ids):
        return Verification(False, 0, error=f"{len(actual_images)} images came back for {len(ids)} ids")
    wrong_labels = np.flatnonzero(np.asarray(actual_labels, dtype=np.int64) != np.asarray(source_labels)[ids])
    if wrong_labels.size:
        at = int(wrong_labels[0])
        return Verification(
            False,
            len(ids),
            error=f"{wrong_labels.size} labels differ from the source; image {int(ids[at])} has label "
            f"{int(actual_labels[at])}, the source {int(source_labels[ids[at]])}",
        )
    if lossless:
        return _compare_exact(actual_images, source_images, ids)
    return _compare_psnr(actual_images, source_images, ids)


def _compare_exact(actual_images, source_images, ids: np.ndarray) -> Verification:
    both_arrays = isinstance(actual_images, np.ndarray) and isinstance(source_images, (np.ndarray, CycledImages))
    if both_arrays and actual_images.shape[1:] == source_images.shape[1:]:
        for start in range(0, len(ids), _CHUNK):
            part = ids[start : start + _CHUNK]
            contiguous = len(part) and part[-1] - part[0] == len(part) - 1 and np.all(np.diff(part) == 1)
            expected = source_images[part[0] : part[-1] + 1] if contiguous else source_images[part]
            got = actual_images[start : start + len(part)]
            if not np.array_equal(got, expected):
                at = start + int(np.flatnonzero((got != expected).reshape(len(part), -1).any(axis=1))[0])
                return Verification(
                    False, len(ids), error=_describe_difference(int(ids[at]), source_images[ids[at]], actual_images[at])
                )
        return Verification(True, len(ids))
    for position, (image_id, expected) in enumerate(zip(ids, _expected_images(source_images, ids))):
        got = np.asarray(actual_images[position])
        if expected.shape != got.shape or not np.array_equal(expected, got):
            return Verification(False, len(ids), error=_describe_difference(int(image_id), expected, got))
    return Verification(True, len(ids))


def _expected_images(source_images, ids: np.ndarray):
    """The source's images at ``ids``, one by one; a folder listing decodes them a chunk at a time on the pool.

    A chunk is cut by each image's own decoded size, not the average: a folder that holds
    large photos in a row would otherwise decode many times ``_CHUNK_BYTES`` at once, on
    top of the slice of the store being checked.
    """
    if not hasattr(source_images, "select"):
        yield from (source_images[int(image_id)] for image_id in ids)
        return
    for start, stop in _decode_bounds(source_images, ids):
        yield from source_images.select(ids[start:stop]).chunk(0, stop - start)


def _decode_bounds(source_images, ids: np.ndarray) -> list[tuple[int, int]]:
    """Positions in ``ids`` decoded together: at most ``_CHUNK`` images and about ``_CHUNK_BYTES`` of pixels."""
    shape_of = getattr(source_images, "image_shape", None)
    if shape_of is None:
        step = _chunk_images(source_images)
        return [(start, min(start + step, len(ids))) for start in range(0, len(ids), step)]
    return bounded_runs((math.prod(shape_of(image_id)) for image_id in ids.tolist()), _CHUNK, _CHUNK_BYTES)


def _chunk_images(source_images) -> int:
    """Ids checked at once: ``_CHUNK``, fewer for big images (``_CHUNK_BYTES`` of pixels)."""
    per_image = getattr(source_images, "nbytes", 0) / max(1, len(source_images))
    return max(1, min(_CHUNK, int(_CHUNK_BYTES // max(1.0, per_image))))


def _compare_psnr(actual_images, source_images, ids: np.ndarray) -> Verification:
    values = []
    for position, (image_id, expected) in enumerate(zip(ids, _expected_images(source_images, ids))):
        got = np.asarray(actual_images[position])
        if expected.shape != got.shape:
            return Verification(False, len(ids), error=_describe_difference(int(image_id), expected, got))
        values.append(psnr(expected, got))
    mean, worst = float(np.mean(values)), float(np.min(values))
    if mean < PSNR_MEAN_FLOOR or worst < PSNR_IMAGE_FLOOR:
        worst_id = int(ids[int(np.argmin(values))])
        return Verification(
            False,
            len(ids),
            psnr=mean,
            error=f"images are too far from the source: mean PSNR {mean:.1f} dB (floor {PSNR_MEAN_FLOOR:.0f}), "
            f"worst {worst:.1f} dB at image {worst_id} (floor {PSNR_IMAGE_FLOOR:.0f})",
        )
    return Verification(True, len(ids), psnr=mean)


def verify_store(
    backend: str,
    path: str | os.PathLike[str],
    source_images: np.ndarray | Sequence[np.ndarray],
    source_labels: np.ndarray,
    ids: Sequence[int] | np.ndarray | None = None,
    lossless: bool | None = None,
) -> Verification:
    """Open the store at ``path`` and check ``ids`` (all images if None) against the source.

    ``lossless`` (default: the store's own, from its backend and encoding) says whether
    pixels must be exact. A store that cannot be opened or read (damaged files) is
    reported as not verified, with the reason, rather than raised.
    """
    try:
        with registry.open_store(backend, path, "r") as store:
            exact = store.lossless if lossless is None else lossless
            kept = _kept_source_bytes(store, source_images)
            if ids is None:
                if len(store) != len(source_labels):
                    return Verification(
                        False, 0, error=f"the store holds {len(store):,} images, the source {len(source_labels):,}"
                    )
                ids = np.arange(len(store))
            ids = np.asarray(ids, dtype=np.int64)
            verdicts: list[Verification] = []
            # Pieces cut by each image's decoded size: the store's images and the source's decoded
            # for them are both held while compared.
            for start, stop in _decode_bounds(source_images, ids):
                part = ids[start:stop]
                checked = sum(verdict.checked for verdict in verdicts)
                if kept and (mismatch := _first_bytes_mismatch(store, source_images, part)) is not None:
                    return Verification(False, checked, error=mismatch)
                images, labels = store.read_batch(part)
                result = compare(images, labels, source_images, source_labels, part, exact)
                if not result.verified:
                    return Verification(False, checked + result.checked, result.psnr, result.error)
                verdicts.append(result)
    except (StorageError, OSError, ValueError, KeyError, RuntimeError) as error:
        return Verification(False, 0, error=f"the store cannot be read back: {type(error).__name__}: {error}")
    return combine(verdicts)


def _kept_source_bytes(store, source_images) -> bool:
    """Whether ``store`` should hold ``source_images``' files byte for byte."""
    encoding = getattr(store, "encoding", None)
    return (
        encoding is not None
        and encoding.name == "source"
        and hasattr(source_images, "encoded_chunk")
        and not getattr(source_images, "any_resized", False)
    )


def image_digest(data: bytes) -> bytes:
    """The hash an image's bytes are compared by (BLAKE2b, 16 bytes)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _first_bytes_mismatch(store, source_images, ids: np.ndarray) -> str | None:
    """The first image whose stored bytes differ from its source file's, said in words; None if all match."""
    stored, _, _ = store.read_encoded(ids)
    files = source_images.select(ids)
    expected = files.encoded_chunk(0, len(ids), store.encoding)
    for position, (got, want) in enumerate(zip(stored, expected)):
        if image_digest(got) != image_digest(want.data):
            source = f"its source file {files.file_of(position)}" if hasattr(files, "file_of") else "the bytes given"
            return (
                f"image {int(ids[position])}'s stored bytes ({len(got):,}) are not those of {source} "
                f"({len(want.data):,} bytes): the hashes differ"
            )
    return None
