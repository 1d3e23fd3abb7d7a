"""What a training pipeline does to each image after reading it: decode, augment, batch, and the time each took.

    from storage.pipeline import Pipeline
    pipeline = Pipeline(transform="train", decoder="simplejpeg")
    images, decode_seconds, transform_seconds = pipeline.batch(encoded_or_pixels)
    # images: (N, 3, 224, 224) uint8, what a model's first layer is fed

* ``transform``: ``"none"`` (the images as stored, (N,H,W[,C]), which needs one size),
  ``"train"`` (``RandomResizedCrop(224)`` and ``RandomHorizontalFlip()``, ImageNet training's
  augmentation) or ``"val"`` (``Resize(256)`` then ``CenterCrop(224)``), torchvision's v2
  transforms on uint8 (C,H,W) tensors, so photos of any size come out (3,224,224).
* ``decoder``: how encoded bytes become pixels: ``"pillow"`` (the decoder every other path of
  this library uses), ``"simplejpeg"`` or ``"torchvision"`` (``torchvision.io.decode_jpeg``).
  All three bundle libjpeg-turbo with the same default settings (accurate DCT, fancy
  upsampling) and give identical pixels on the ImageNet sample; bytes that are not JPEG are
  decoded by Pillow whichever is chosen.
* ``device="cuda"`` decodes whole batches with ``torchvision.io.decode_jpeg(..., device="cuda")``
  and transforms them on the GPU, in the training process (a DataLoader worker cannot use
  CUDA): the workers then only read bytes. It needs ``decoder="torchvision"`` and a CUDA device.

Grayscale pixels become three equal channels and an alpha channel is dropped before a
transform, as ``Image.convert("RGB")`` does. Random augmentation draws from torch's random
generator, which a DataLoader seeds in every worker.

Importing this module imports torch (torchvision when a transform or its decoder is first used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import encodings, image_codec
from .errors import StorageError
from .loader_settings import DECODE_DEVICES as DEVICES
from .loader_settings import DECODERS, TRANSFORMS

CROP = 224  # the side of what train and val transforms give
RESIZE = 256  # val resizes the shorter side to this, then crops the centre


class PipelineError(StorageError, ValueError):
    """A pipeline setting that cannot work here: an unknown transform or decoder, CUDA without a GPU, ..."""


def _choice(kind: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise PipelineError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")
    return value.strip().lower()


def cuda_unavailable_reason() -> str | None:
    """Why batches cannot be decoded on a CUDA device here, or None when they can."""
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False: no CUDA device (or a CPU-only torch) on this machine"
    try:
        import torchvision.io  # noqa: F401
    except ImportError as error:
        return f"torchvision cannot be imported ({error})"
    return None


@dataclass(frozen=True)
class Pipeline:
    """The decode and transform steps applied to each image between the store and the model.

    Raises:
        PipelineError: an unknown ``transform``, ``decoder`` or ``device``; ``device="cuda"``
            without ``decoder="torchvision"`` or without a CUDA device.
    """

    transform: str = "none"
    decoder: str = "pillow"
    device: str = "cpu"
    _compose: list = field(default_factory=list, repr=False, compare=False)  # built on first use, per process

    def __post_init__(self) -> None:
        object.__setattr__(self, "transform", _choice("transform", self.transform, TRANSFORMS))
        object.__setattr__(self, "decoder", _choice("decoder", self.decoder, DECODERS))
        object.__setattr__(self, "device", _choice("decode device", self.device, DEVICES))
        if self.device == "cuda":
            if self.decoder != "torchvision":
                raise PipelineError(
                    f"decoding on a CUDA device is torchvision's decode_jpeg; give decoder 'torchvision', not "
                    f"{self.decoder!r}"
                )
            reason = cuda_unavailable_reason()
            if reason:
                raise PipelineError(f"cannot decode on a CUDA device: {reason}; use the CPU decoders")

    def __getstate__(self) -> dict[str, Any]:
        return {"transform": self.transform, "decoder": self.decoder, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_compose", [])

    @property
    def augments(self) -> bool:
        """Whether images come out as (3,224,224) tensors, whatever size they were."""
        return self.transform != "none"

    @property
    def on_device(self) -> bool:
        """Whether decoding and transforming happen on a CUDA device, in the training process."""
        return self.device == "cuda"

    def describe(self) -> str:
        where = " on the CUDA device" if self.on_device else ""
        return f"transform {self.transform}, decoder {self.decoder}{where}"

    # -- the steps -------------------------------------------------------------------

    def transforms(self):
        """torchvision's v2 transforms for ``transform`` (None for ``"none"``), built once per process."""
        if not self.augments:
            return None
        if not self._compose:
            from torchvision.transforms import v2

            steps = (
                [v2.RandomResizedCrop(CROP, antialias=True), v2.RandomHorizontalFlip()]
                if self.transform == "train"
                else [v2.Resize(RESIZE, antialias=True), v2.CenterCrop(CROP)]
            )
            self._compose.append(v2.Compose(steps))
        return self._compose[0]

    def decode(self, data: bytes | memoryview | np.ndarray) -> np.ndarray | torch.Tensor:
        """One image's encoded bytes as pixels: (H,W[,C]) from Pillow and simplejpeg, (3,H,W) from torchvision."""
        raw = data.reshape(-1) if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
        if encodings.sniff_format(raw[:12].tobytes()) != "jpeg" or self.decoder == "pillow":
            return image_codec.decode(memoryview(raw))
        if self.decoder == "simplejpeg":
            import simplejpeg

            return simplejpeg.decode_jpeg(raw, colorspace="RGB")
        return _torchvision_decode(torch.from_numpy(raw.copy()))

    def batch(
        self,
        items: list,
        out: torch.Tensor | None = None,
        encoded: bool = True,
        shape: tuple[int, ...] | None = None,
    ) -> tuple[Any, float, float]:
        """``items`` (encoded bytes, or pixels when ``encoded`` is False) decoded and transformed.

        Returns the batch (a uint8 tensor; a list of tensors when ``transform`` is ``"none"``
        and the sizes differ), and the seconds spent decoding and transforming. ``out``, when
        given, is filled and returned (one of :meth:`batch_shape`). Without a transform,
        decoded images take ``shape`` (the store's one image shape) where it is given.
        """
        decode_seconds = transform_seconds = 0.0
        transforms = self.transforms()
        results = []
        for item in items:
            started = time.perf_counter()
            pixels = self.decode(item) if encoded else item
            decoded = time.perf_counter()
            decode_seconds += decoded - started if encoded else 0.0
            if transforms is not None:
                pixels = transforms(as_chw(pixels))
            elif encoded:
                pixels = in_shape(pixels, shape)
            results.append(pixels)
            transform_seconds += time.perf_counter() - decoded
        return _stacked(results, out, self.augments), decode_seconds, transform_seconds

    def batch_shape(self, count: int, image_shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """The shape of a batch of ``count`` images, known before reading (None: not known)."""
        if self.augments:
            return (count, 3, CROP, CROP)
        return (count, *image_shape) if image_shape is not None else None

    # -- on a CUDA device ---------------------------------------------------------------

    def batch_on_device(self, items: list, encoded: bool = True) -> tuple[torch.Tensor, float, float]:
        """A batch decoded and transformed on the CUDA device (in the training process), timed with syncs."""
        device = torch.device("cuda")
        torch.cuda.synchronize()
        started = time.perf_counter()
        if encoded:
            tensors = [torch.as_tensor(np.asarray(item, dtype=np.uint8).reshape(-1)) for item in items]
            images = _torchvision_decode(tensors, device="cuda")
        else:
            images = [as_chw(item).to(device, non_blocking=True) for item in items]
        torch.cuda.synchronize()
        decoded = time.perf_counter()
        transforms = self.transforms()
        images = [transforms(image) for image in images] if transforms is not None else images
        batch = torch.stack(images) if self.augments or len({tuple(i.shape) for i in images}) == 1 else images
        torch.cuda.synchronize()
        return batch, decoded - started, time.perf_counter() - decoded


def _torchvision_decode(data: torch.Tensor | list[torch.Tensor], device: str = "cpu"):
    """``torchvision.io.decode_jpeg`` to RGB; its notice that TorchCodec will take over decoding is not repeated."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning
        )
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def as_chw(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Pixels as a 3-channel uint8 (C,H,W) tensor: (H,W) and (H,W,1) repeated, RGBA without its alpha."""
    if isinstance(pixels, torch.Tensor) and pixels.ndim == 3 and pixels.shape[0] == 3:
        return pixels  # torchvision's decoders give (3,H,W) already
    array = np.asarray(pixels)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    tensor = torch.from_numpy(array if array.flags.writeable else array.copy()).permute(2, 0, 1)
    if tensor.shape[0] == 1:
        return tensor.expand(3, -1, -1)
    return tensor[:3]


def _stacked(results: list, out: torch.Tensor | None, augmented: bool) -> Any:
    """The images of a batch in one tensor (``out`` when given), or a list when their sizes differ."""
    if not results:
        return out if out is not None else torch.empty(0, dtype=torch.uint8)
    if not augmented and len({tuple(np.shape(image)) for image in results}) > 1:
        return [torch.as_tensor(np.asarray(image)) for image in results]
    if out is None:
        out = torch.empty((len(results), *np.shape(results[0])), dtype=torch.uint8)
    for position, image in enumerate(results):
        if isinstance(image, torch.Tensor):
            out[position] = image
        else:
            out[position].numpy()[...] = image
    return out


def in_shape(pixels: np.ndarray | torch.Tensor, shape: tuple[int, ...] | None) -> np.ndarray:
    """Decoded pixels (any decoder's layout) as an (H,W[,C]) array of ``shape``, the store's own
    (None: as (H,W,C) with the decoder's channels)."""
    array = pixels.permute(1, 2, 0).numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    if shape is None:
        return np.ascontiguousarray(array)
    channels = 1 if len(shape) == 2 else shape[2]
    if array.ndim == 3 and channels == 1 and array.shape[2] == 3:
        array = array[:, :, 0]  # a grayscale JPEG decoded as RGB: three equal channels
    return encodings.shaped(np.ascontiguousarray(array), shape)


__all__ = [
    "CROP",
    "DECODERS",
    "DEVICES",
    "RESIZE",
    "TRANSFORMS",
    "Pipeline",
    "PipelineError",
    "as_chw",
    "cuda_unavailable_reason",
    "in_shape",
]
