"""The names a training loader's settings take, importable without torch (the run parameters check them).

:mod:`storage.pipeline` (which imports torch) does the work these names stand for.
"""

from __future__ import annotations

TRANSFORMS = ("none", "train", "val")
"""``none``: the images as stored; ``train``: RandomResizedCrop(224) + horizontal flip; ``val``: Resize(256) + CenterCrop(224)."""
DECODERS = ("pillow", "simplejpeg", "torchvision")
"""What turns kept bytes into pixels (bytes that are not JPEG are always decoded by Pillow)."""
DECODE_DEVICES = ("cpu", "cuda")
"""Where decoding and transforming run: in the workers, or on a CUDA device in the training process."""

__all__ = ["DECODERS", "DECODE_DEVICES", "TRANSFORMS"]
