"""A store's ``store.json``: written durably and atomically, read against its schema, rolled back in place.

The manifest says which backend wrote the folder, how many images are committed, the
options used and whether a write is under way (see :mod:`storage.base`). Everything else
trusts it, so it is checked when read: a count that is not a whole number (``2.7``,
``1e400``, ``-5``), options that are not a mapping or a state that is neither ``"writing"``
nor ``"complete"`` is a :class:`~storage.errors.CorruptDataError` naming the field, before
anything sizes a buffer by it. (That the count matches the data files is each backend's
check, on open.)

Writes are durable: the file is written under a temporary name, synced, renamed over the
manifest, and the folder is synced, so a write reported done survives a power cut. Before a
batch marks the manifest ``"writing"``, the manifest as it was is kept under a second name
(a hard link: no new space), so a rollback on a full disk puts it back with a rename instead
of writing a new file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import (
    CorruptDataError,
    NewerVersionError,
    StoreFullError,
    StoreNotFoundError,
    StoreNotReadableError,
    StoreNotWritableError,
)

MANIFEST_NAME = "store.json"
PREVIOUS_MANIFEST_NAME = ".store.json.before-write"
FORMAT_VERSION = 1
STATES = ("complete", "writing")
MAX_COUNT = 2**48
"""More images than any store holds (281 trillion): a larger count is a damaged manifest."""
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def sync_folder(folder: Path) -> None:
    """``fsync`` a folder, so a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_file_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` under a temporary name beside ``path``, sync it, rename it over ``path``, sync the folder.

    A failure (a full disk, say) removes the temporary file and leaves ``path`` as it was.
    ``durable=False`` skips both syncs, for files that are rewritten often and rebuilt anyway.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if durable:
        sync_folder(path.parent)


# -- reading and checking -----------------------------------------------------------------


def _damaged(path: Path, problem: str) -> CorruptDataError:
    return CorruptDataError(
        f"{path} is damaged ({problem}); the store cannot be trusted: restore the folder from a copy, "
        "or convert the source into a new store"
    )


def _whole_number(value: object, name: str, path: Path, maximum: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _damaged(path, f"{name} is {value!r}, not a whole number")
    if not 0 <= value <= maximum:
        raise _damaged(path, f"{name} is {value:,}, outside 0..{maximum:,}")
    return value


def check_manifest(manifest: object, path: Path) -> dict[str, Any]:
    """``manifest`` if it has the manifest's fields with their types and ranges, else CorruptDataError."""
    if not isinstance(manifest, dict):
        raise _damaged(path, f"it holds a {type(manifest).__name__}, not an object")
    backend = manifest.get("backend")
    if not isinstance(backend, str) or not backend or len(backend) > 200:
        raise _damaged(path, f"backend is {backend!r}, not a backend name")
    _whole_number(manifest.get("count"), "count", path)
    if manifest.get("state", "complete") not in STATES:
        raise _damaged(path, f"state is {manifest.get('state')!r}, not 'complete' or 'writing'")
    version = manifest.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _damaged(path, f"format_version is {version!r}")
    if version > FORMAT_VERSION:
        raise NewerVersionError(
            f"{path} is of store format {version}, written by a newer version of this library, which reads "
            f"format {FORMAT_VERSION} at most: upgrade the library to read it"
        )
    for name in ("options", "backend_state"):
        if not isinstance(manifest.get(name, {}), dict):
            raise _damaged(path, f"{name} is {type(manifest[name]).__name__}, not a mapping")
    names = manifest.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(name, str) for name in names)):
        raise _damaged(path, "class_names is not a list of names")
    checksums = manifest.get("checksums")
    if checksums is not None:
        if not isinstance(checksums, dict) or not isinstance(checksums.get("algorithm"), str):
            raise _damaged(path, "checksums is not a mapping with an algorithm")
        _whole_number(checksums.get("records"), "checksums.records", path)
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and check a store's manifest, or explain why ``path`` is not a store."""
    manifest_path = path / MANIFEST_NAME
    if not path.exists():
        raise StoreNotFoundError(
            f"no image store at {path}: check the path, or create one with open_store(name, path, 'w')"
        )
    if not manifest_path.is_file():
        raise StoreNotFoundError(
            f"{path} is not an image store (it has no {MANIFEST_NAME}); "
            "point at a folder written by this library, or create one with mode 'w'"
        )
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except PermissionError as error:
        raise StoreNotReadableError(f"cannot read {manifest_path} ({error.strerror}); check its permissions") from None
    except OSError as error:
        raise CorruptDataError(f"cannot read {manifest_path} ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, huge numbers
        raise _damaged(manifest_path, f"not valid JSON: {error}") from None
    return check_manifest(manifest, manifest_path)


# -- rolling back without new space -------------------------------------------------------


def keep_previous(folder: Path) -> None:
    """Keep the manifest as it is now under a second name (a hard link), for :func:`restore_previous`."""
    previous = folder / PREVIOUS_MANIFEST_NAME
    with contextlib.suppress(FileNotFoundError):
        previous.unlink()
    with contextlib.suppress(OSError):  # no hard links here: a rollback writes a new manifest instead
        os.link(folder / MANIFEST_NAME, previous)


def restore_previous(folder: Path) -> bool:
    """Put back the manifest :func:`keep_previous` kept (a rename, needing no space); False if there is none."""
    try:
        os.replace(folder / PREVIOUS_MANIFEST_NAME, folder / MANIFEST_NAME)
    except OSError:
        return False
    sync_folder(folder)
    return True


def drop_previous(folder: Path) -> None:
    with contextlib.suppress(OSError):
        (folder / PREVIOUS_MANIFEST_NAME).unlink()


# -- why a write failed ---------------------------------------------------------------------


def _errors_in(error: BaseException):
    seen = 0
    while error is not None and seen < 8:
        yield error
        error, seen = error.__cause__ or error.__context__, seen + 1


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a full disk or quota, also when a library said so in words."""
    for part in _errors_in(error):
        if isinstance(part, OSError) and part.errno in _DISK_FULL:
            return True
        text = str(part)
        if "No space left on device" in text or "Disk quota exceeded" in text or "ENOSPC" in text:
            return True
    return False


def is_read_only(error: BaseException) -> bool:
    """Whether ``error`` is a read-only file system or a folder this process may not write."""
    for part in _errors_in(error):
        if isinstance(part, OSError) and part.errno in _READ_ONLY:
            return True
        if "Read-only file system" in str(part):
            return True
    return False


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _amount(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MB" if nbytes >= 2**20 else f"{nbytes / 2**10:,.0f} KB"


def disk_full_error(folder: Path, needed_bytes: int | None) -> StoreFullError:
    """The error for a write that ran out of space: the store, the space it needed and the space free."""
    free = free_bytes(folder)
    need = f"about {_amount(needed_bytes)} more" if needed_bytes else "more space"
    have = f"{_amount(free)} are free there" if free is not None else "the free space is unknown"
    return StoreFullError(
        f"the disk holding the store at {folder} is full: the write needed {need} and {have}. The write was "
        "rolled back and every image committed before it is kept: free some space (or write elsewhere) "
        "and write again"
    )


def not_writable_error(folder: Path, error: BaseException) -> StoreNotWritableError:
    detail = getattr(error, "strerror", None) or str(error)
    return StoreNotWritableError(
        f"cannot write to {folder} ({detail}); choose a folder you can write to, or fix its permissions "
        "(a read-only disk cannot take writes)"
    )
