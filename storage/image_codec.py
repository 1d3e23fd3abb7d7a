"""Decoding, encoding and resizing images with Pillow: the one codec every path shares.

Reads of encoded stores, the folder listing, the torch datasets and verification all
decode through :func:`decode` and the channel rules of :func:`pixels_of`, and resize
through :func:`resize_image` (see :mod:`storage.encodings` for the choices made).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .encodings import SOURCE, EncodedImage, Encoding, encoding_for_resized, resized_size, shaped, sniff_format
from .errors import BadImageFileError, EncodingError

_RESAMPLE = Image.Resampling.BILINEAR  # encodings.RESAMPLING_FILTER names it


def channels_of_mode(image: Image.Image) -> int:
    """How many channels :func:`pixels_of` gives for ``image``'s mode (known before decoding)."""
    mode = image.mode
    if mode in ("L", "1") or mode.startswith("I;16"):
        return 1
    if mode == "RGBA" or (mode == "P" and "transparency" in image.info) or {"A", "a"} & set(image.getbands()):
        return 4
    return 3


def decoded_shape(image: Image.Image) -> tuple[int, ...]:
    """The shape :func:`pixels_of` gives for ``image``, read from its header only."""
    width, height = image.size
    channels = channels_of_mode(image)
    return (height, width) if channels == 1 else (height, width, channels)


def pixels_of(image: Image.Image) -> np.ndarray:
    """``image`` as a uint8 array whose channel count follows its mode.

    ``L`` gives (H,W), ``RGB`` (H,W,3), ``RGBA`` (H,W,4); ``1`` becomes ``L``; ``LA`` and
    ``PA`` become RGBA; ``P`` becomes RGBA if it has transparency, else RGB; ``CMYK``,
    ``YCbCr`` and other colour modes become RGB. 16-bit grayscale keeps its 8 most
    significant bits (exact for images saved from 8-bit data). 32-bit integer and float
    images have no fixed range and are refused (``ValueError``; callers name the file).
    """
    mode = image.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode.startswith("I;16"):
        return (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise ValueError(f"has {kind} pixels (mode {mode}), which have no fixed 0..255 range")
    if mode == "P":
        return np.asarray(image.convert("RGBA" if "transparency" in image.info else "RGB"))
    if {"A", "a"} & set(image.getbands()):  # LA, PA, RGBa, La, ...
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def open_image(data: bytes | memoryview) -> Image.Image:
    """A Pillow image over ``data``, refusing decompression bombs (nothing decoded yet)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def decode(data: bytes | memoryview) -> np.ndarray:
    """Decode encoded image bytes to pixels with Pillow (the one decoder every path shares)."""
    try:
        with open_image(data) as image:
            image.load()
            return np.array(pixels_of(image))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise BadImageFileError(f"stored image bytes ({sniff_format(data)}) cannot be decoded: {error}") from None


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` at ``size`` with the stated filter (the same call on every path)."""
    if image.size == size:
        return image
    if image.mode in ("P", "1"):  # palette indices cannot be interpolated
        image = image.convert("RGBA" if "transparency" in image.info else ("L" if image.mode == "1" else "RGB"))
    return image.resize(size, _RESAMPLE)


def resize_pixels(pixels: np.ndarray, max_side: int | None = None, shorter_side: int | None = None) -> np.ndarray:
    """Pixels resized as :func:`resized_size` says (the array itself when nothing changes)."""
    height, width = pixels.shape[:2]
    size = resized_size(width, height, max_side, shorter_side)
    if size == (width, height):
        return pixels
    squeezed = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    result = np.asarray(Image.fromarray(squeezed).resize(size, _RESAMPLE))
    return result[:, :, np.newaxis] if pixels.ndim == 3 and pixels.shape[2] == 1 else result


# -- encoding --------------------------------------------------------------------------


def encode(pixels: np.ndarray, encoding: Encoding) -> bytes:
    """Pixels as PNG, JPEG or WebP bytes (``encoding`` is not raw or source)."""
    squeezed = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    image = Image.fromarray(squeezed)
    buffer = io.BytesIO()
    if encoding.name == "png":
        image.save(buffer, format="PNG")
    elif encoding.name == "jpeg":
        if image.mode == "RGBA":
            raise EncodingError("JPEG has no alpha channel: store RGBA images with encoding 'png' or 'webp'")
        image.save(buffer, format="JPEG", quality=encoding.quality)
    elif encoding.name == "webp":
        if encoding.quality is None:
            image.save(buffer, format="WEBP", lossless=True, method=2)
        else:
            image.save(buffer, format="WEBP", quality=encoding.quality, method=2)
    else:
        raise EncodingError(f"encoding {encoding} does not encode pixels; use png, jpeg or webp")
    return buffer.getvalue()


def encoded_image(pixels: np.ndarray, encoding: Encoding) -> EncodedImage:
    """Pixels encoded as :func:`encode` does, with their format and shape."""
    data = encode(pixels, encoding)
    return EncodedImage(data, encoding.name, tuple(pixels.shape))


# -- images given as bytes ------------------------------------------------------------


def describe_bytes(data: bytes, where: str = "image bytes") -> EncodedImage:
    """``data`` with its format and decoded shape, read from its header (nothing decoded)."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
        raise EncodingError(f"{where} must be the non-empty bytes of an image file, not {type(data).__name__}")
    try:
        with open_image(data) as image:
            shape = decoded_shape(image)
            found = sniff_format(data)
            return EncodedImage(bytes(data), found if found != "unknown" else (image.format or found).lower(), shape)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageFileError(f"{where} may be a decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImageFileError(f"{where} are not an image file Pillow can read ({error})") from None


class EncodedImages(Sequence):
    """Images given as the bytes of their files (JPEG, PNG, WebP...), for a store to keep or decode.

    ``store.write_batch(EncodedImages(list_of_bytes), labels)`` keeps those bytes as they
    are in a store written with ``encoding="source"``, and decodes them for any other
    encoding. Each item's format and shape are read from its header now; pixels are decoded
    only when asked for (indexing, :meth:`chunk`).
    """

    def __init__(
        self, items: Sequence[bytes | EncodedImage], max_side: int | None = None, shorter_side: int | None = None
    ) -> None:
        self.items = [
            item if isinstance(item, EncodedImage) else describe_bytes(item, f"item {index}")
            for index, item in enumerate(items)
        ]
        self.max_side, self.shorter_side = max_side, shorter_side
        self._sizes = [self._resized_size(item.shape) for item in self.items]

    def _resized_size(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """The (width, height) an image of ``shape`` is resized to, or None when it stays as it is."""
        height, width = shape[:2]
        size = resized_size(width, height, self.max_side, self.shorter_side)
        return None if size == (width, height) else size

    def resized(self, max_side: int | None, shorter_side: int | None) -> EncodedImages:
        """The same images resized at most to ``max_side``/``shorter_side``; those small enough keep their bytes."""
        return EncodedImages(self.items, max_side, shorter_side)

    def select(self, index: np.ndarray | Sequence[int]) -> EncodedImages:
        """The images at ``index`` (any order, repeats allowed) as a new sequence; nothing is decoded."""
        chosen = [self.items[position] for position in np.asarray(index, dtype=np.int64).tolist()]
        return EncodedImages(chosen, self.max_side, self.shorter_side)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self.chunk(*index.indices(len(self))[:2])
        item, size = self.items[index], self._sizes[index]
        if size is None:
            return shaped(decode(item.data), item.shape)
        return shaped(decode_resized(item.data, size), self.image_shape(index))

    @property
    def any_resized(self) -> bool:
        """Whether resizing changes any of these images (then kept bytes are encoded again)."""
        return any(size is not None for size in self._sizes)

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(self.image_shape(index))) for index in range(len(self)))

    def image_shape(self, index: int) -> tuple[int, ...]:
        shape, size = self.items[index].shape, self._sizes[index]
        return shape if size is None else (size[1], size[0], *shape[2:])

    def distinct_shapes(self) -> set[tuple[int, ...]]:
        return {self.image_shape(index) for index in range(len(self))}

    def chunk(self, start: int, stop: int) -> list[np.ndarray]:
        return [self[index] for index in range(start, stop)]

    def encoded_chunk(self, start: int, stop: int, encoding: Encoding) -> list[EncodedImage]:
        """Items ``start``..``stop`` as a store keeps them under ``encoding``.

        Under ``"source"`` an image that needs no resizing keeps its bytes; a resized one is
        encoded again in its own format (:func:`encoded_again`).
        """
        return [
            self.items[index]
            if encoding.name == SOURCE and self._sizes[index] is None
            else encoded_again(self[index], encoding, self.items[index].format)
            for index in range(start, stop)
        ]


def decode_resized(data: bytes | memoryview, size: tuple[int, int]) -> np.ndarray:
    """Decode image bytes and resize them to ``size`` (width, height) as a folder's photos are."""
    try:
        with open_image(data) as image:
            image.load()
            return np.array(pixels_of(resize_image(image, size)))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise BadImageFileError(f"stored image bytes ({sniff_format(data)}) cannot be decoded: {error}") from None


def encoded_again(pixels: np.ndarray, encoding: Encoding, source_format: str) -> EncodedImage:
    """Pixels of a ``source_format`` file as a store keeps them under ``encoding``.

    Under ``"source"`` (a resized photo, which cannot keep its bytes) they are encoded in
    the file's own format (:func:`~storage.encodings.encoding_for_resized`); JPEG has no
    alpha, so an RGBA image stays exact as PNG.
    """
    target = encoding_for_resized(source_format) if encoding.name == SOURCE else encoding
    if target.name == "jpeg" and encoding.name == SOURCE and pixels.ndim == 3 and pixels.shape[2] == 4:
        target = Encoding("png")
    return encoded_image(pixels, target)
