"""Where a benchmark puts each store it writes, so that its own clean-up does not slow the next write.

A benchmark writes a store, deletes it and writes it again, a few seconds apart. On ext4
without a journal (common on cloud and micro VMs) that is not free: to let a recently
freed inode reach the disk before it is reused, the allocator skips inodes freed in the
last minute (six while their inode-table block is dirty), and it checks them one by one,
from the start of the block group, on *every* file created. A store of 10,000 PNGs
written where the previous repeat's 10,000 were just deleted paid about 800 µs per
file instead of about 30 µs, and the figure swung 4x between repeats: it measured the
benchmark's own deletions, not the format.

Two things keep a new store out of that space, neither of which changes how the store
itself is written:

* the folder that holds the repeats is marked as the top of a directory hierarchy
  (``chattr +T``, ext2/3/4's ``FS_TOPDIR_FL``), so ext4's Orlov allocator places each
  folder made in it in a block group of its own, chosen from the folder's name and
  among groups with more free inodes than average, as it does for home directories;
* each repeat's folder gets a new random name, so the group chosen differs between
  repeats and runs;
* a repeat's store, once measured, is emptied but its folder is kept until the run
  ends: Orlov prefers the groups with the fewest folders, and a group whose last folder
  had just been deleted would be its first choice for the next store.

The flag is not inherited: folders *inside* a store (PNG's folders of 1,000 files) stay
next to their parent, as they would for a user. On other file systems the flag is
refused and nothing changes (they do not skip freed inodes this way).
"""

from __future__ import annotations

import os
import secrets
import shutil
import struct
from pathlib import Path

# <linux/fs.h>: the ioctls are defined with a long argument, read and written as an int.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def mark_top_of_hierarchy(folder: Path) -> bool:
    """Ask the file system to spread folders made in ``folder`` over the disk.

    Returns whether the flag is set. Best effort: a file system or platform without
    the flag (tmpfs, XFS, macOS, Windows) returns False and nothing else happens.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return False
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(descriptor, _FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(descriptor, _FS_IOC_SETFLAGS, struct.pack("i", flags | FS_TOPDIR_FL))
        return True
    except OSError:  # ENOTTY/EOPNOTSUPP: the file system has no such flag; EPERM: not ours
        return False
    finally:
        os.close(descriptor)


def spread_folder(folder: Path) -> Path:
    """Make ``folder`` (and its parents) and mark it so that folders made in it spread out."""
    folder.mkdir(parents=True, exist_ok=True)
    mark_top_of_hierarchy(folder)
    return folder


def fresh_store_path(folder: Path, stem: str) -> Path:
    """A path in ``folder`` that no store has used, for one repeat's store: ``<stem>-<random hex>``."""
    while True:
        path = folder / f"{stem}-{secrets.token_hex(4)}"
        if not path.exists():
            return path


def empty_folder(folder: Path | None) -> None:
    """Delete what ``folder`` holds (frees its disk space) but keep the empty folder itself.

    The empty folder keeps its block group looking used to the allocator until the run's
    folder is deleted, so the next store is not placed over the inodes just freed.
    """
    if folder is None or not folder.is_dir():
        return
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def remove_emptied_folders(folder: Path, keep: set[str]) -> None:
    """Remove the empty folders in ``folder`` other than those named in ``keep``."""
    if not folder.is_dir():
        return
    for entry in os.scandir(folder):
        if entry.name not in keep and entry.is_dir(follow_symlinks=False):
            try:
                os.rmdir(entry.path)
            except OSError:  # not empty: not one this run emptied
                pass
