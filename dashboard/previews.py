"""Images made visible: 32x32 pixels enlarged with nearest-neighbour scaling, and their captions.

Nearest-neighbour scaling repeats each pixel as a block, so what is shown is exactly what
was read back from a store (no smoothing that could hide a wrong pixel). Images larger
than the box are scaled down to fit it instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from storage import registry
from storage.bench import PreviewReady
from storage.bench.results import printable

PREVIEW_SIZE = 128  # 32x32 images become 4x4 blocks per pixel


def to_pil(image: np.ndarray) -> Image.Image:
    """A uint8 (H,W), (H,W,1), (H,W,3) or (H,W,4) array as a Pillow image."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(array, "L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(array, "RGB" if array.shape[2] == 3 else "RGBA")
    raise ValueError(f"cannot show an image of shape {array.shape}; expected (H,W), (H,W,3) or (H,W,4)")


def enlarge(image: np.ndarray, size: int = PREVIEW_SIZE) -> Image.Image:
    """Scale ``image`` to fit a ``size`` x ``size`` box, keeping its proportions.

    Small images grow by a whole factor with nearest-neighbour scaling (a 32x32 image
    becomes 96x96 with 3x3 blocks); larger ones shrink to fit with a smoothing filter.
    """
    picture = to_pil(image)
    width, height = picture.size
    longest = max(width, height, 1)
    if longest <= size:
        factor = max(1, size // longest)
        return picture.resize((width * factor, height * factor), Image.NEAREST)
    scale = size / longest
    return picture.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.LANCZOS)


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """The class name of ``label``, or ``label N`` when there are no names for it."""
    if class_names and 0 <= int(label) < len(class_names):
        return str(class_names[int(label)])
    return f"label {int(label)}"


def caption(image_id: int, label: int, class_names: Sequence[str] | None, verified: bool | None) -> str:
    """``#586 frog ✓ verified``; ``✗ mismatch`` when the round trip failed."""
    text = printable(f"#{image_id} {class_name(label, class_names)}")
    if verified is None:
        return text
    return f"{text} {'✓ verified' if verified else '✗ mismatch'}"


@dataclass
class PreviewRow:
    """One store's preview: its format and the enlarged images with captions."""

    backend: str
    label: str
    count: int
    images: list[Image.Image]
    captions: list[str]
    verified: bool
    psnr: float | None


def preview_counts(previews: Sequence[PreviewReady]) -> list[int]:
    """The image counts previews exist for, largest first."""
    return sorted({preview.count for preview in previews}, reverse=True)


def preview_rows(
    previews: Sequence[PreviewReady], count: int | None = None, size: int = PREVIEW_SIZE
) -> list[PreviewRow]:
    """The previews of one image count (default: the largest), one row per format in registry order."""
    if not previews:
        return []
    if count is None:
        count = preview_counts(previews)[0]
    chosen = [preview for preview in previews if preview.count == count]
    known = registry.backends()
    chosen.sort(key=lambda p: known.index(p.backend) if p.backend in known else len(known))
    rows = []
    for preview in chosen:
        try:
            label = registry.backend_info(preview.backend).label
        except Exception:
            label = preview.backend
        rows.append(
            PreviewRow(
                backend=preview.backend,
                label=label,
                count=preview.count,
                images=[enlarge(image, size) for image in preview.images],
                captions=[
                    caption(image_id, image_label, preview.class_names, preview.verified)
                    for image_id, image_label in zip(preview.ids, preview.labels)
                ],
                verified=preview.verified,
                psnr=preview.psnr,
            )
        )
    return rows
