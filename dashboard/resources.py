"""Cached handles the pages share: the results database, loaded data sources, open stores.

Loading CIFAR-10 or opening a store is done once per server process (``st.cache_resource``)
and found again on every rerun, so moving a slider never reloads data. Every function
takes plain, hashable arguments so that the cache keys say what a handle is.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from storage import ImageStore, datasets, detect_backend, open_store, registry, summarize_store
from storage.base import MANIFEST_NAME
from storage.bench import Experiment, ResultsDB, estimate_experiment
from storage.bench.estimate import Estimate
from storage.datasets.image_folder import SKIPPED_FILES_LOGGER
from storage.errors import StorageError, WrongBackendError
from storage.sharded import SHARDED_BACKEND, SHARDED_MANIFEST, ShardedStore, read_sharded_manifest

from . import config
from .state import SOURCE_KEYWORDS


@st.cache_resource(show_spinner=False)
def backends_imported_beside() -> threading.Thread:
    """Every backend's library imported once per server process, on a thread of its own.

    The peers' libraries take seconds to import (MosaicML Streaming, LitData, torch: 6.5 s
    on two cores), which the home page need not wait for: it starts this and draws at once,
    and the Run page finds them imported, or waits only for what is left.
    """
    thread = threading.Thread(target=registry.backends, name="import-backends", daemon=True)
    thread.start()
    return thread


@st.cache_resource(show_spinner=False, on_release=lambda db: db.close())
def _results_db(path: str) -> ResultsDB:
    return ResultsDB(path)


def results_db(path: str | os.PathLike[str] | None = None) -> ResultsDB:
    """The results database (one shared, thread-safe handle per file)."""
    return _results_db(str(Path(path or config.db_path()).resolve()))


def run_params_of(run_id: str) -> dict[str, str]:
    """The Run page's query parameters of a recorded run (none if it is unknown or cannot be read)."""
    from .state import params_of_run

    try:
        record = results_db().get_run(run_id)
        return params_of_run(record.parameters) if record is not None else {}
    except Exception:  # a damaged run: the page says so where it shows the run
        return {}


@dataclass(frozen=True)
class LoadedSource:
    """A data source and the files ``skip_bad`` left out of it: ``(path, problem)`` each."""

    data: datasets.DataSource
    skipped: tuple[tuple[str, str], ...] = ()


class _SkippedFilesLog(logging.Handler):
    """The files this thread's load leaves out, as the library logs them (another session may load meanwhile)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.files: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        args = record.args if isinstance(record.args, tuple) else ()
        self.files.append((str(args[0]), str(args[1])) if len(args) == 2 else (record.getMessage(), ""))


@st.cache_resource(show_spinner="Loading the images…", max_entries=2)
def _loaded_source(source: str, skip_bad: bool) -> LoadedSource:
    log = logging.getLogger(SKIPPED_FILES_LOGGER)
    skipped = _SkippedFilesLog()
    log.addHandler(skipped)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", datasets.SampleDataWarning)
            warnings.simplefilter("ignore", datasets.SkippedFilesWarning)  # the page names the files itself
            data = datasets.load_source(source, skip_bad=skip_bad)
    finally:
        log.removeHandler(skipped)
    return LoadedSource(data, tuple(skipped.files))


def load_source(source: str, skip_bad: bool = False) -> datasets.DataSource:
    """A data source loaded once per process (``auto``, ``sample``, ``cifar10`` or a folder).

    ``skip_bad``: a folder's unreadable files are left out (as the run's ``skip_bad`` does)
    instead of raising BadImageFileError.
    """
    return _loaded_source(source, bool(skip_bad)).data


def skipped_files(source: str, skip_bad: bool = False) -> tuple[tuple[str, str], ...]:
    """The files loading ``source`` with ``skip_bad`` left out: ``(path, problem)`` each, in the folder's order."""
    return _loaded_source(source, bool(skip_bad)).skipped


def clear_source_cache() -> None:
    """Forget loaded sources (after CIFAR-10 was downloaded, ``auto`` means something else)."""
    _loaded_source.clear()


@st.cache_data(show_spinner=False, max_entries=32)
def store_image_bytes(
    source: str,
    encoding: str = "raw",
    max_side: int | None = None,
    shorter_side: int | None = None,
    skip_bad: bool = False,
) -> float:
    """About what one image of ``source`` takes in a store, for the run's disk estimate.

    CIFAR-10 keywords are 3,072 pixel bytes, known without loading. A folder (already
    listed: this reads its listing) is its photos' pixels after the resize, or, for a store
    that keeps encoded bytes, its files' bytes scaled by the share of pixels the resize keeps;
    ``skip_bad`` as the folder was listed with.
    """
    if source in SOURCE_KEYWORDS:
        return 32 * 32 * 3
    images = load_source(source, skip_bad).images
    count = max(1, len(images))
    resized = images.resized(max_side, shorter_side) if hasattr(images, "resized") else images
    pixels = float(resized.nbytes) if hasattr(resized, "nbytes") else float(sum(image.nbytes for image in resized))
    files = getattr(images, "source_bytes", None)
    if encoding == "raw" or not files:
        return pixels / count
    kept = pixels / max(1.0, float(images.nbytes))
    return files * min(1.0, kept) / count


def estimate_run(experiment: Experiment, image_bytes: float, source_in_memory: bool = True) -> Estimate:
    """The run's time and disk estimate, refined by the past runs in the results database.

    A past run that cannot be read (a hand-edited count, say) is no reason to refuse this
    one: the estimate is then made from the built-in costs alone.
    """
    try:
        return estimate_experiment(experiment, results_db(), image_bytes, source_in_memory)
    except StorageError:
        raise
    except Exception:  # a damaged run among the past ones
        return estimate_experiment(experiment, None, image_bytes, source_in_memory)


def pixel_only_formats(formats: list[str]) -> list[str]:
    """The formats among ``formats`` that hold only pixels (an ``encoding`` choice does not apply to them)."""
    found = []
    for name in formats:
        try:
            if not registry.store_class(name).takes_encodings():
                found.append(name)
        except StorageError:  # unavailable here: the format picker says so
            continue
    return found


def _store_stamp(path: Path) -> float:
    """When the store's manifest (``store.json``, or a sharded store's ``sharded.json``) last changed."""
    stamps = []
    for name in (MANIFEST_NAME, SHARDED_MANIFEST):
        try:
            stamps.append((path / name).stat().st_mtime_ns)
        except OSError:
            continue
    return float(max(stamps, default=-1))


@st.cache_resource(show_spinner=False, max_entries=8, on_release=lambda store: store.close())
def _open_store(backend: str, path: str, stamp: float) -> ImageStore | ShardedStore:
    return open_store(backend, path, "r")


def open_store_cached(backend: str | None, path: str | os.PathLike[str]) -> ImageStore | ShardedStore:
    """A read-only store, opened once and reopened when the store is rewritten.

    ``backend`` None opens it with the backend its folder names (:func:`storage.detect_backend`),
    a sharded store as one. A sharded store also opens when ``backend`` is its shards'
    backend: sharding is how a store is laid out, not another format.

    Raises the library's errors (StoreNotFoundError, WrongBackendError, ...) unchanged.
    """
    resolved = Path(path).expanduser().resolve()
    return _open_store(_backend_to_open(backend, resolved), str(resolved), _store_stamp(resolved))


def _backend_to_open(backend: str | None, folder: Path) -> str:
    if backend is None:
        return detect_backend(folder)
    if not (folder / SHARDED_MANIFEST).is_file():
        return backend  # a plain store's own backend says, when opened, whether it is the one asked for
    shards = str(read_sharded_manifest(folder)["backend"])
    if shards != backend:
        raise WrongBackendError(
            f"{folder} holds a sharded store of {shards!r} shards, not a {backend!r} store; "
            f"open it as {shards!r}, or let the folder say which backend it is"
        )
    return SHARDED_BACKEND


def format_label(store: ImageStore | ShardedStore) -> str:
    """The store's format as the pages name it: the backend's label, and a sharded store's shard count."""
    if isinstance(store, ShardedStore):
        return f"{store.info.label}, {len(store.shards):,} shard(s)"
    return store.info.label


def backend_label(name: str) -> str:
    """A backend's label for a store found on disk; ``"sharded"`` and backends not registered here by name."""
    if name == SHARDED_BACKEND:
        return "Sharded store"
    try:
        return registry.backend_info(name).label
    except StorageError:
        return name


def class_names_of(store: ImageStore | ShardedStore) -> list[str] | None:
    """The class names the store keeps; a sharded store's are its first shard's (convert names every shard alike)."""
    if isinstance(store, ShardedStore):
        return store.open_shard(0).class_names if store.shards else None
    return store.class_names


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
    """The backend that wrote the store at ``path`` (``"sharded"`` for a sharded store); None when none is there."""
    try:
        return detect_backend(path)
    except (StorageError, OSError):
        return None


@st.cache_data(ttl=10, show_spinner=False)
def find_stores(roots: tuple[str, ...], max_depth: int = 5, limit: int = 200) -> list[FoundStore]:
    """Stores (folders holding a ``store.json``, or a sharded store's ``sharded.json``) under ``roots``, newest first.

    Roots may lie inside each other (the run folder is inside ``data/``): a store reached
    from two roots is listed once, and so is a sharded store (its shards are not listed apart).
    """
    found = []
    seen: set[str] = set()
    for root in roots:
        base = Path(root)
        if not base.is_dir():
            continue
        for folder, names, files in os.walk(base):
            depth = len(Path(folder).relative_to(base).parts)
            if MANIFEST_NAME in files or SHARDED_MANIFEST in files:
                resolved = os.path.realpath(folder)
                if resolved in seen:
                    names[:] = []
                    continue
                seen.add(resolved)
                try:
                    summary = summarize_store(folder)
                    found.append((Path(folder).stat().st_mtime, FoundStore(folder, summary.backend, summary.count)))
                except (StorageError, OSError):
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
