"""The folder a new store is written in, and replacing an old store with it in one step.

Opening ``"w"`` over an existing store used to delete the old store first: a process killed
while it wrote the new one left neither (a 20,000-image PNG store killed midway left 10,457
files and no manifest). Now the new store is written in a folder beside the old one,
``.<name>.replacing-<pid>``, and swapped in when it is closed, with one ``renameat2
(RENAME_EXCHANGE)``: a kill before that leaves the old store as it was (and the unfinished
folder, which the next ``"w"`` of that path removes), a kill after it leaves the new one.
Where the file system cannot exchange two folders, two renames do it, with a short window
in which the path holds neither (the old store then waits beside it, as
``.<name>.replaced-<pid>``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
from pathlib import Path

from .errors import StoreExistsError
from .locking import live_writer
from .manifest import MANIFEST_NAME

RENAME_EXCHANGE = 2
_REPLACING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>replacing|replaced)-(?P<pid>\d+)$")


def holds_a_store(path: Path) -> bool:
    """Whether ``path`` is a folder that a store was written to (it has a manifest)."""
    return (path / MANIFEST_NAME).is_file()


def check_replaceable(path: Path) -> bool:
    """Whether ``path`` holds a store that a new one would replace; refuse a file or a folder of other files."""
    if path.exists() and not path.is_dir():
        raise StoreExistsError(f"{path} is a file; a store is a folder: choose another path")
    if not path.is_dir() or not any(path.iterdir()):
        return False
    if not holds_a_store(path):
        raise StoreExistsError(
            f"{path} holds files that are not an image store; choose a new or empty folder so nothing of yours is deleted"
        )
    return True


def replacement_folder(path: Path) -> Path:
    """The folder beside ``path`` in which this process writes the store that will replace it."""
    remove_stale_replacements(path)
    folder = path.with_name(f".{path.name}.replacing-{os.getpid()}")
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def remove_stale_replacements(path: Path) -> None:
    """Remove folders beside ``path`` left by replacements whose writer is gone (killed midway)."""
    parent = path.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        match = _REPLACING.match(entry.name)
        if not match or match["name"] != path.name or not entry.is_dir():
            continue
        if int(match["pid"]) != os.getpid() and live_writer(entry) is None:
            shutil.rmtree(entry, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd = -100
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot exchange
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))


def swap_in(new_folder: Path, path: Path) -> Path:
    """Put the store in ``new_folder`` at ``path`` in place of the old one; return where the old one went.

    The caller removes the returned folder (the old store) once it no longer needs it.
    """
    if _exchange(new_folder, path):
        return new_folder
    aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
    os.rename(path, aside)
    try:
        os.rename(new_folder, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(aside, path)
        raise
    return aside
