"""The formats weighed for a question, and what each offers beyond its speed.

The registry's capability flags say what a store of this library can do. The advice also
needs what a format offers to *other* tools: a folder of image files or a tar opens
anywhere; an LMDB or a Lance dataset needs its library (and this one to know its layout).
WebDataset's tar is read in order by every tool that reads it; its random reads come from
the index this library writes beside it, so for random lookups it counts as sequential.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import registry

# Formats that any tool opens without this library: image files in folders, or a tar of them.
READABLE_BY_OTHERS = {
    "png": "a folder of PNG files any image viewer or library opens",
    "jpeg": "a folder of JPEG files any image viewer or library opens",
    "webp": "a folder of WebP files most image libraries open",
    "webp-lossy": "a folder of WebP files most image libraries open",
    "webdataset": "tar shards any tar tool and the webdataset package read",
}
SEQUENTIAL_ONLY = {
    "webdataset": "a tar is read in order: its random reads need this library's own index beside it",
}
# What is weighed when the user names no formats: CIFAR-like arrays, and photo folders (whose
# bytes most of these keep as they are).
ARRAY_CANDIDATES = ("npy", "hdf5", "lmdb", "webdataset", "parquet", "png", "jpeg")
PHOTO_CANDIDATES = ("lmdb", "hdf5", "npy", "webdataset", "parquet", "png")


@dataclass(frozen=True)
class Candidate:
    """One format as the advice weighs it: a backend and the options its store is opened with."""

    backend: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def options_dict(self) -> dict[str, object]:
        return dict(self.options)

    @property
    def label(self) -> str:
        """``lmdb`` or ``lmdb (encoding=source)``: how tables and the recommendation name it."""
        if not self.options:
            return self.backend
        return f"{self.backend} ({', '.join(f'{name}={value}' for name, value in self.options)})"


def default_backends(photos: bool) -> list[str]:
    """The usual candidates available here, for photos or for arrays."""
    names = PHOTO_CANDIDATES if photos else ARRAY_CANDIDATES
    available = set(registry.backends())
    return [name for name in names if name in available]


def has_random_access(backend: str) -> tuple[bool, str]:
    """Whether ``backend`` reads any id without reading the ones before it, and if not, why."""
    if backend in SEQUENTIAL_ONLY:
        return False, SEQUENTIAL_ONLY[backend]
    if not registry.backend_info(backend).random_access:
        return False, f"{backend} reads its images in order only"
    return True, ""


def describe_encoding(options: dict[str, object]) -> str:
    """What the store keeps, in words: ``the files' own bytes``, ``PNG``, ``pixels``."""
    encoding = str(options.get("encoding", "raw"))
    if encoding == "source":
        return "the files' own bytes"
    if encoding == "raw":
        return "pixels"
    return f"{encoding.upper()} re-encoded"
