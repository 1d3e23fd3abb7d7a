"""JPEG and WebP files: the ``png`` layout (one file per image plus ``labels.csv``) with other codecs.

Everything but the bytes of each file comes from :mod:`storage.png_files`: folders of
1,000 files, the labels CSV, rollback, and encoding and decoding in worker processes.
Only the codec differs:

* ``jpeg``: baseline JPEG through Pillow at ``quality`` 95 with full-resolution chroma
  (``subsampling`` "4:4:4"). Pillow's own default, 4:2:0, halves the colour resolution,
  which on 32x32 images costs up to 10 dB: the worst of the first 200 CIFAR-10 images
  comes back at 27.9 dB PSNR with 4:2:0 and 37.1 dB with 4:4:4, for 14% more bytes.
  Lossy, so stores are verified by PSNR against the source rather than bit for bit.
  Gray images, (H,W) or (H,W,1), are stored as 8-bit gray JPEGs. JPEG has no alpha
  channel: the backend declares ``channels=(1, 3)``, so 4-channel images are refused
  with :class:`~storage.errors.ImageShapeError` before anything is written.
* ``webp``: lossless WebP (``exact`` on, so even the colour of fully transparent pixels
  survives); returns every pixel bit for bit, RGBA included. ``method`` 2 by default:
  libwebp's usual 4 costs 11 times the encoding time on 32x32 images for 1% larger files. WebP has no gray mode, so a
  gray image is stored as RGB with three equal channels and the first is read back.
* ``webp-lossy``: lossy WebP at ``quality`` 90. WebP's lossy mode always halves the
  chroma resolution (4:2:0) and has no switch to turn that off, so on 32x32 images a few
  in a hundred come back below 30 dB PSNR (the worst of the first 200 CIFAR-10 images:
  27.7 dB), although the mean is 35.7 dB, above the engine's floors (30 dB mean, 20 dB
  for the worst image). Alpha is kept (losslessly, WebP's default).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import JpegImagePlugin, WebPImagePlugin

from ..batch import Shape
from ..errors import ModeError
from . import BUILTIN_INFO
from .png_files import PngCodec, PngFilesStore, image_to_pil, pil_to_array

JPEG_SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
WEBP_METHODS = range(7)


def _check_quality(backend: str, options: dict[str, Any], low: int, high: int) -> None:
    quality = options.get("quality", low)
    if isinstance(quality, bool) or not isinstance(quality, int) or not low <= quality <= high:
        raise ModeError(f"quality {quality!r} for the {backend} backend must be an integer from {low} to {high}")


def _as_shape(array: np.ndarray, shape: Shape) -> np.ndarray:
    """A decoded ``array`` as the ``shape`` that was written (gray comes back as (H,W))."""
    if array.shape == shape:
        return array
    if array.size != int(np.prod(shape)):
        raise ValueError(f"decoded an image of shape {array.shape} where {shape} was written")
    return array.reshape(shape)


@dataclass(frozen=True)
class JpegCodec(PngCodec):
    """One baseline JPEG per image; small enough to send to worker processes."""

    suffix: ClassVar[str] = ".jpg"

    def encode(self, image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        image_to_pil(image).save(
            buffer, format="JPEG", quality=self.options["quality"], subsampling=self.options["subsampling"]
        )
        return buffer.getvalue()

    def decode(self, data: bytes, shape: Shape) -> np.ndarray:
        with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as picture:
            return pil_to_array(picture, shape)


@dataclass(frozen=True)
class WebpCodec(PngCodec):
    """One WebP per image, lossless or lossy as ``options`` say."""

    suffix: ClassVar[str] = ".webp"
    lossless: ClassVar[bool] = True

    def encode(self, image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        picture = image_to_pil(image)
        if picture.mode == "L":
            picture = picture.convert("RGB")
        picture.save(
            buffer,
            format="WEBP",
            lossless=self.lossless,
            quality=self.options["quality"],
            method=self.options["method"],
            exact=True,
        )
        return buffer.getvalue()

    def decode(self, data: bytes, shape: Shape) -> np.ndarray:
        with WebPImagePlugin.WebPImageFile(io.BytesIO(data)) as picture:
            gray = len(shape) == 2 or shape[2] == 1
            if gray and self.lossless:
                # Lossless WebP kept R = G = B exactly: any one channel is the gray image.
                return _as_shape(np.ascontiguousarray(np.asarray(picture)[:, :, 0]), shape)
            if gray:
                return _as_shape(np.asarray(picture.convert("L")), shape)
            return _as_shape(np.asarray(picture), shape)


@dataclass(frozen=True)
class LossyWebpCodec(WebpCodec):
    lossless: ClassVar[bool] = False


class JpegFilesStore(PngFilesStore):
    """One JPEG file per image and one CSV of labels."""

    info = BUILTIN_INFO["jpeg"]
    default_options = {"quality": 95, "subsampling": "4:4:4", "parallel": True}
    codec_class = JpegCodec

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        _check_quality(self.info.name, options, 1, 100)
        if options.get("subsampling", "4:4:4") not in JPEG_SUBSAMPLINGS:
            raise ModeError(f"subsampling {options['subsampling']!r} is not one of {', '.join(JPEG_SUBSAMPLINGS)}")


class WebpFilesStore(PngFilesStore):
    """One lossless WebP file per image and one CSV of labels."""

    info = BUILTIN_INFO["webp"]
    # For lossless WebP, quality is the compression effort (0 fastest, 100 smallest). Method 2,
    # not libwebp's usual 4: on 32x32 CIFAR images method 4 encodes 11 times slower (2.7 against
    # 0.24 ms per image on one core of the development machine) for files 1% larger.
    default_options = {"quality": 80, "method": 2, "parallel": True}
    codec_class = WebpCodec

    def _check_options(self, options: dict[str, Any]) -> None:
        super()._check_options(options)
        _check_quality(self.info.name, options, 0, 100)
        if options.get("method", self.default_options["method"]) not in WEBP_METHODS:
            raise ModeError(f"method {options['method']!r} must be an integer from 0 (fastest) to 6 (smallest)")


class LossyWebpFilesStore(WebpFilesStore):
    """One lossy WebP file per image and one CSV of labels."""

    info = BUILTIN_INFO["webp-lossy"]
    default_options = {"quality": 90, "method": 4, "parallel": True}
    codec_class = LossyWebpCodec
