"""How a store keeps each image: as decoded pixels, as the source file's own bytes, or re-encoded.

Photos are usually JPEG files a few hundred pixels wide; their decoded pixels are about
5.5 times their bytes. The formats people choose for such data (WebDataset's ``.jpg``
members, LitData's and MDS's JPEG columns, FFCV's ``write_mode='jpg'``, Hugging Face's
``Image`` feature) keep the bytes and decode in the loader's workers. A store's
``encoding`` option says which:

* ``"raw"``: decoded uint8 pixels (the default, and the only choice for CIFAR-10 arrays);
* ``"source"``: each source file's bytes exactly as they are (JPEG, PNG, WebP...);
* ``"png"``, ``"jpeg"`` (quality 90), ``"jpeg:Q"``, ``"webp"`` (lossless) or ``"webp:Q"``
  (lossy at quality Q): pixels encoded by this library with Pillow.

Decoding gives the same array on every path (``read_one``, ``read_batch``, the torch
datasets, verification), following :func:`pixels_of`'s channel rules. EXIF orientation is
not applied, on any path: pixels come in the order they are stored, as with Pillow,
torchvision's ``decode_jpeg`` and ImageFolder by default; kept bytes keep the EXIF tag, so a
viewer still shows the photo upright.

Resizing at conversion (``max_side``, ``shorter_side``) never enlarges, and uses Pillow's
antialiased ``BILINEAR`` filter (what torchvision's ``Resize`` does by default). A photo
that had to be resized cannot keep its bytes: under ``"source"`` it is encoded again in its
own format (JPEG at quality 90, PNG, lossless WebP; other formats as PNG), and the manifest
records that. A photo already small enough keeps its bytes exactly.

This module names and parses encodings and imports only NumPy, so ``import storage`` stays
fast; :mod:`storage.image_codec` decodes, encodes and resizes with Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import ModeError

RAW = "raw"
SOURCE = "source"
DEFAULT_JPEG_QUALITY = 90
RESAMPLING_FILTER = "bilinear (antialiased, Pillow)"
ENCODING_CHOICES = "'raw', 'source', 'png', 'jpeg', 'jpeg:QUALITY', 'webp' (lossless) or 'webp:QUALITY'"

FORMAT_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tif"}
"""The usual file extension of each format name :func:`sniff_format` gives."""


class EncodedImage(NamedTuple):
    """One image's encoded bytes, the name of their format and the shape they decode to."""

    data: bytes
    format: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Encoding:
    """A parsed ``encoding`` option: ``name`` is raw, source, png, jpeg or webp."""

    name: str
    quality: int | None = None

    @property
    def keeps_pixels(self) -> bool:
        return self.name == RAW

    @property
    def lossless(self) -> bool:
        return self.name in (RAW, SOURCE, "png") or (self.name == "webp" and self.quality is None)

    def __str__(self) -> str:
        return self.name if self.quality is None else f"{self.name}:{self.quality}"


def parse_encoding(text: object) -> Encoding:
    """The :class:`Encoding` named by ``text``; a clear error for anything else."""
    if not isinstance(text, str):
        raise ModeError(f"encoding {text!r} is not text; use {ENCODING_CHOICES}")
    name, _, quality_text = text.strip().lower().partition(":")
    if name == "jpg":
        name = "jpeg"
    if name in (RAW, SOURCE, "png") and not quality_text:
        return Encoding(name)
    if name == "jpeg" and not quality_text:
        return Encoding("jpeg", DEFAULT_JPEG_QUALITY)
    if name == "webp" and not quality_text:
        return Encoding("webp")
    if name in ("jpeg", "webp") and quality_text.isdigit() and 1 <= int(quality_text) <= 100:
        return Encoding(name, int(quality_text))
    raise ModeError(f"unknown encoding {text!r}; use {ENCODING_CHOICES} (QUALITY from 1 to 100)")


def sniff_format(data: bytes | memoryview) -> str:
    """The format of encoded image bytes, from their first bytes (``"jpeg"``, ``"png"``, ...)."""
    head = bytes(data[:12])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return "unknown"


# -- resizing --------------------------------------------------------------------------


def resized_size(
    width: int, height: int, max_side: int | None = None, shorter_side: int | None = None
) -> tuple[int, int]:
    """The (width, height) a photo gets under ``max_side`` / ``shorter_side``; never larger.

    ``shorter_side=S`` brings the shorter side to S and ``max_side=M`` the longer side to at
    most M; with both, the smaller scale wins. Sides are rounded to the nearest pixel (at
    least 1), the aspect ratio kept.
    """
    scale = 1.0
    if shorter_side is not None:
        scale = min(scale, shorter_side / min(width, height))
    if max_side is not None:
        scale = min(scale, max_side / max(width, height))
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_side(value: object, name: str) -> int | None:
    """A ``max_side``/``shorter_side`` option: None, or a whole number of pixels >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ModeError(f"{name} must be a whole number of pixels >= 1 (or None for no resizing), not {value!r}")
    return int(value)


def encoding_for_resized(source_format: str) -> Encoding:
    """How a resized photo of ``source_format`` is encoded again under ``encoding="source"``."""
    if source_format == "jpeg":
        return Encoding("jpeg", DEFAULT_JPEG_QUALITY)
    if source_format == "webp":
        return Encoding("webp")
    return Encoding("png")


def shaped(pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Decoded pixels in the shape they were written in: an (H,W,1) image decodes as (H,W)."""
    if pixels.shape == tuple(shape) or pixels.size != int(np.prod(shape)):
        return pixels
    return pixels.reshape(shape)
