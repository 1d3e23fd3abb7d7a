"""LMDB environments of the ``lmdb`` backends: read-only handles shared in a process, and their transactions.

Readers take LMDB's reader lock (``lock=True``): it is what tells a writer in another process
which pages a reader's snapshot still uses, so that a writer appending to the store never
reuses them. Without it (as before), a reader open during an append read pages the writer had
just reused, and got ``MDB_CORRUPTED`` or wrong bytes. Where the lock file cannot be written
(a read-only disk, another user's store) no writer can write either, and readers open without
it. A writer that grew the map makes a reader's next transaction fail with ``MDB_MAP_RESIZED``;
:func:`begin_read` takes the new size and begins again.
"""

from __future__ import annotations

import os
from pathlib import Path

import lmdb

from ..errors import CorruptDataError, StoreInUseError, StoreNotWritableError

_readers: dict[tuple[str, int], list] = {}
_readers_pid = os.getpid()


def _open_read_only(path: Path, readahead: bool) -> lmdb.Environment:
    options = {"readonly": True, "readahead": readahead, "subdir": True, "max_dbs": 0}
    try:
        return lmdb.open(str(path), lock=True, **options)
    except lmdb.Error as error:
        if "already open in this process" in str(error):
            raise
        return lmdb.open(str(path), lock=False, **options)  # no writer can take the lock file either


def _key(path: Path) -> tuple[str, int]:
    """A store's folder and its data file: a store replaced at the same path is another environment."""
    real = os.path.realpath(path)
    try:
        return real, os.stat(os.path.join(real, "data.mdb")).st_ino
    except OSError:
        return real, 0


def acquire_reader(path: Path, readahead: bool) -> lmdb.Environment:
    """A read-only environment for ``path``, shared by every store of this process.

    LMDB allows one open environment per file per process (its locks belong to the
    process), so two read-only stores on one path share a handle. Handles inherited
    through ``fork`` are closed in the child (which only unmaps the child's copy) and
    reopened.
    """
    global _readers_pid
    if _readers_pid != os.getpid():
        for entry in _readers.values():
            entry[0].close()
        _readers.clear()
        _readers_pid = os.getpid()
    key = _key(path)
    if key not in _readers:
        _readers[key] = [_open_read_only(path, readahead), 0]
    _readers[key][1] += 1
    return _readers[key][0]


def release_reader(path: Path, environment: lmdb.Environment) -> None:
    """Drop one user of a shared read-only environment; close it with the last one."""
    if _readers_pid != os.getpid():
        return
    for key, entry in list(_readers.items()):
        if entry[0] is environment:
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del _readers[key]
            return


def begin_read(environment: lmdb.Environment) -> lmdb.Transaction:
    """A read transaction; after a writer grew the map, the environment takes the new size first."""
    try:
        return environment.begin(buffers=True)
    except lmdb.MapResizedError:
        environment.set_mapsize(0)
        return environment.begin(buffers=True)


def open_error(path: Path, error: Exception) -> Exception:
    """The library's error for an environment that would not open: in use, not writable, or damaged."""
    if "already open in this process" in str(error):  # py-lmdb says so with a plain lmdb.Error
        return StoreInUseError(
            f"the LMDB store at {path} is already open in this process by another store object: close that "
            "one first (LMDB allows one open environment per file per process; only read-only stores share one, "
            "so a store open for writing excludes every other)"
        )
    if isinstance(error, (PermissionError, lmdb.ReadonlyError)):
        return StoreNotWritableError(f"cannot open the LMDB store at {path}: {error}; check its permissions")
    return CorruptDataError(f"cannot open the LMDB environment at {path}: {error}")
