"""What a backend is and can do (:class:`BackendInfo`), and what a store takes on disk (:class:`DiskUsage`).

Kept apart from the interface (:mod:`storage.base`, which re-exports both), so the catalog
of formats, the registry and the dashboard read a backend's description without the store's code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from .batch import Shape, image_channels


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and what it can do; the dashboard shows ``label`` and ``description``."""

    name: str
    label: str
    description: str
    lossless: bool = True
    random_access: bool = True
    variable_shapes: bool = True
    appendable: bool = True
    compressed: bool = False
    one_file_per_image: bool = False
    channels: tuple[int, ...] = (1, 3, 4)
    """Channel counts the backend stores; 1 covers both (H,W) and (H,W,1) images."""
    unavailable_reason: str | None = None
    """Why the backend cannot be used here (its library is missing or fails to import), or None."""

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    def shape_refusal(self, shapes: Iterable[Shape], store_shape: Shape | None = None) -> ShapeRefusal | None:
        """Why this backend refuses images of ``shapes`` added to a store of ``store_shape`` images, or None.

        The shape rules, stated once: every channel count must be one of ``channels``, and a
        backend without ``variable_shapes`` holds one shape. A store checks each write with
        them; :func:`storage.registry.check_backend_takes` checks a source before any store
        exists. Each words the refusal for its own context.
        """
        distinct = dict.fromkeys(shapes)
        refused: dict[int, Shape] = {}
        for shape in distinct:
            channels = image_channels(shape)
            if channels not in self.channels:
                refused.setdefault(channels, shape)
        if refused:
            return ShapeRefusal(refused)
        if self.variable_shapes:
            return None
        together = tuple(dict.fromkeys([store_shape, *distinct] if store_shape else distinct))
        return ShapeRefusal({}, together) if len(together) > 1 else None


@dataclass(frozen=True)
class ShapeRefusal:
    """Why a backend refuses some images: channel counts it cannot store, or more than one shape.

    ``channels`` maps each refused channel count to the first shape seen with it. When the
    channels are fine, ``shapes`` lists the distinct shapes (the store's own first) given to
    a backend that holds one shape.
    """

    channels: dict[int, Shape]
    shapes: tuple[Shape, ...] = ()


@dataclass(frozen=True)
class DiskUsage:
    """Bytes a store takes: ``apparent_bytes`` (file sizes) and ``allocated_bytes`` (blocks)."""

    apparent_bytes: int
    allocated_bytes: int
    files: int

    def bytes_per_image(self, count: int) -> float:
        return self.allocated_bytes / count if count else 0.0


def measure_disk_usage(path: str | os.PathLike[str]) -> DiskUsage:
    """Sum ``st_size`` and ``st_blocks * 512`` of every file under ``path``.

    Hard links are counted once. A sparse file (an LMDB map) shows a large apparent
    size and a small allocated one: both numbers are honest, for different questions.
    """
    seen: set[tuple[int, int]] = set()
    apparent = allocated = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            stat = os.lstat(os.path.join(root, name))
            key = (stat.st_dev, stat.st_ino)
            if key in seen:
                continue
            seen.add(key)
            apparent += stat.st_size
            allocated += stat.st_blocks * 512
            files += 1
    return DiskUsage(apparent, allocated, files)
