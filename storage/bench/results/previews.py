"""A few images read back from each store of a run, kept as small PNGs so its page can show them later."""

from __future__ import annotations

import io
import math
from typing import Any

from ..events import PreviewReady
from .history import RunHistory

PREVIEW_MAX_SIDE = 128  # previews of larger images are stored shrunk to this (they only show what was read)


def _preview_picture(image: Any):
    """A preview image (uint8 array, grey or colour) as a Pillow image."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(array))


def _png(image: Any) -> bytes:
    """A preview image as PNG bytes, shrunk to :data:`PREVIEW_MAX_SIDE` if it is larger."""
    from PIL import Image

    picture = _preview_picture(image)
    if picture.width > PREVIEW_MAX_SIDE or picture.height > PREVIEW_MAX_SIDE:
        picture.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _preview_rows(preview: PreviewReady) -> list[tuple[Any, ...]]:
    """The ``previews`` rows of one store's images, one per image in the order they were read."""
    psnr = preview.psnr if preview.psnr is None or math.isfinite(preview.psnr) else None
    return [
        (
            preview.run_id,
            preview.backend,
            int(preview.count),
            position,
            int(image_id),
            int(label),
            _png(image),
            int(bool(preview.verified)),
            psnr,
        )
        for position, (image_id, image, label) in enumerate(zip(preview.ids, preview.images, preview.labels))
    ]


class RunPreviews(RunHistory):
    """The images each run read back, stored small, and read back as :class:`PreviewReady` events."""

    def add_preview(self, preview: PreviewReady) -> None:
        """Keep the images a run read back from one store (small PNGs), so its page can show them later."""
        rows = _preview_rows(preview)
        with self.transaction() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO previews (run_id, backend, count, position, image_id, label, png,"
                " verified, psnr) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def previews(self, run_id: str) -> list[PreviewReady]:
        """The images kept by :meth:`add_preview`, one :class:`PreviewReady` per store, in the order stored."""
        import numpy as np
        from PIL import Image

        rows = self._rows(
            "SELECT * FROM previews WHERE run_id = ? ORDER BY count, rowid",
            (run_id,),
        )
        if not rows:
            return []
        record = self.get_run(run_id)
        class_names = list((record.source or {}).get("class_names") or []) if record else []
        grouped: dict[tuple[str, int], PreviewReady] = {}
        for row in rows:
            key = (row["backend"], row["count"])
            if key not in grouped:
                grouped[key] = PreviewReady(
                    run_id, row["backend"], row["count"], [], [], [], class_names, bool(row["verified"]), row["psnr"]
                )
            preview = grouped[key]
            preview.ids.append(row["image_id"])
            preview.labels.append(row["label"])
            preview.images.append(np.asarray(Image.open(io.BytesIO(row["png"]))))
        return list(grouped.values())

    def count_previews(self, run_id: str) -> int:
        return int(self._execute("SELECT COUNT(*) FROM previews WHERE run_id = ?", (run_id,)).fetchone()[0])
