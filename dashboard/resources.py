"""Cached handles the pages share: the results database, loaded data sources, open stores.

Loading CIFAR-10 or opening a store is done once per server process (``st.cache_resource``)
and found again on every rerun, so moving a slider never reloads data. Every function
takes plain, hashable arguments so that the cache keys say what a handle is.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from storage import ImageStore, datasets, open_store
from storage.base import MANIFEST_NAME, read_manifest
from storage.bench import ResultsDB
from storage.errors import StorageError

from . import config
from .state import SOURCE_KEYWORDS


@st.cache_resource(show_spinner=False, on_release=lambda db: db.close())
def _results_db(path: str) -> ResultsDB:
    return ResultsDB(path)


def results_db(path: str | os.PathLike[str] | None = None) -> ResultsDB:
    """The results database (one shared, thread-safe handle per file)."""
    return _results_db(str(Path(path or config.db_path()).resolve()))


@st.cache_resource(show_spinner="Loading the images…", max_entries=2)
def load_source(source: str) -> datasets.DataSource:
    """A data source loaded once per process (``auto``, ``sample``, ``cifar10`` or a folder)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.SampleDataWarning)
        return datasets.load_source(source)


def clear_source_cache() -> None:
    """Forget loaded sources (after CIFAR-10 was downloaded, ``auto`` means something else)."""
    load_source.clear()


def mean_image_bytes(source: str) -> float:
    """Pixel bytes of an average image of ``source`` (CIFAR-10: 3,072, known without loading)."""
    if source in SOURCE_KEYWORDS:
        return 32 * 32 * 3
    loaded = load_source(source)
    images = loaded.images
    total = images.nbytes if hasattr(images, "nbytes") else sum(image.nbytes for image in images)
    return total / max(1, len(loaded))


def _store_stamp(path: Path) -> float:
    try:
        return (path / MANIFEST_NAME).stat().st_mtime_ns
    except OSError:
        return -1.0


@st.cache_resource(show_spinner=False, max_entries=8, on_release=lambda store: store.close())
def _open_store(backend: str, path: str, stamp: float) -> ImageStore:
    return open_store(backend, path, "r")


def open_store_cached(backend: str, path: str | os.PathLike[str]) -> ImageStore:
    """A read-only store, opened once and reopened when the store is rewritten.

    Raises the library's errors (StoreNotFoundError, WrongBackendError, ...) unchanged.
    """
    resolved = Path(path).expanduser().resolve()
    return _open_store(backend, str(resolved), _store_stamp(resolved))


@dataclass(frozen=True)
class FoundStore:
    """A store found on disk: its folder, the backend that wrote it and how many images it holds."""

    path: str
    backend: str
    count: int

    @property
    def run_id(self) -> str | None:
        """The run that wrote it, for stores kept under the runs folder."""
        try:
            relative = Path(self.path).resolve().relative_to(config.runs_dir().resolve())
        except ValueError:
            return None
        return relative.parts[0] if relative.parts else None


def backend_written_in(path: str) -> str | None:
    """The backend named in the store manifest at ``path``; None when there is no readable one."""
    try:
        return str(read_manifest(Path(path))["backend"])
    except (StorageError, OSError):
        return None


@st.cache_data(ttl=10, show_spinner=False)
def find_stores(roots: tuple[str, ...], max_depth: int = 5, limit: int = 200) -> list[FoundStore]:
    """Stores (folders holding a ``store.json``) under ``roots``, newest first, each once.

    Roots may lie inside each other (the run folder is inside ``data/``): a store reached
    from two roots is listed once.
    """
    found = []
    seen: set[str] = set()
    for root in roots:
        base = Path(root)
        if not base.is_dir():
            continue
        for folder, names, files in os.walk(base):
            depth = len(Path(folder).relative_to(base).parts)
            if MANIFEST_NAME in files:
                resolved = os.path.realpath(folder)
                if resolved in seen:
                    names[:] = []
                    continue
                seen.add(resolved)
                try:
                    manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text())
                    found.append(
                        (
                            Path(folder).stat().st_mtime,
                            FoundStore(folder, str(manifest["backend"]), int(manifest["count"])),
                        )
                    )
                except (OSError, ValueError, KeyError, TypeError):
                    pass
                names[:] = []  # a store's own subfolders hold no other store
            elif depth >= max_depth:
                names[:] = []
            else:
                names[:] = sorted(name for name in names if not name.startswith("."))
            if len(found) >= limit:
                break
    found.sort(key=lambda item: item[0], reverse=True)
    return [store for _, store in found]


def store_roots() -> tuple[str, ...]:
    """Where the Explore page looks for stores: the runs folder and ``data/``."""
    roots = [config.runs_dir(), datasets.data_dir()]
    return tuple(dict.fromkeys(str(root.resolve()) for root in roots))
