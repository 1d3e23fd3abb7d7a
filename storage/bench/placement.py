"""Where a run puts the stores it writes, so that its own clean-up does not slow its next write.

A benchmark writes a store, deletes it and writes it again, seconds apart. On ext4
without a journal (common on cloud and micro VMs) that is not free: to let a freed inode
reach the disk before it is reused, the allocator skips inodes freed in the last minute
(six while their inode-table block is unwritten), and it checks them one by one, from the
start of the block group, before *every* file it creates. A store of 10,000 PNGs written
where the previous repeat's 10,000 had just been deleted paid about 800 µs per file
instead of about 30 µs, and the figure swung 4x between repeats: it measured the
benchmark's own deletions, not the format.

So a run frees nothing while it measures, within a budget, and starts where no other run
freed anything:

* the work folder that holds the runs is marked as the top of a directory hierarchy
  (``chattr +T``, ext2/3/4's ``FS_TOPDIR_FL``), so ext4's Orlov allocator places each run's
  folder in a block group of its own, preferring groups with few folders and many free
  inodes, as it does for home directories; the run's stores fill fresh inodes there;
* each repeat writes a new folder (:func:`fresh_store_path`), and the stores measured
  already are kept (:class:`RetiredStores`) and deleted when the run ends, unless keeping
  them would take more than a quarter of the free disk space: then the oldest go at once.
  Stores that big are LMDB, HDF5 or NumPy files, whose few files cost nothing to reuse;
* when a run ends, its files are deleted but its folders are kept, empty, for ten minutes
  (:func:`delete_files`, :func:`remove_spent_run_folders`): Orlov prefers the block
  groups with the fewest folders, and a group whose folders had just been deleted would
  be its first choice for the next run's folder, right where the inodes were freed. A
  run leaves dozens of folders (one per store, PNG's folders of 1,000), enough to turn
  the next run away from its group.

The flag is not inherited: folders inside a run stay next to it. On other file systems
the flag is refused and nothing changes (they do not skip freed inodes this way).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import struct
import time
from collections import deque
from pathlib import Path

# <linux/fs.h>: the ioctls are declared with a long argument; ext4 reads and writes an int.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000
RETIRED_SHARE_OF_FREE_SPACE = 0.25  # the most a run keeps of stores it has measured, until it ends
SPENT_FOLDER_SECONDS = 600  # an ended run's empty folder is kept this long (the kernel's window is six minutes)
RUN_FOLDER_NAME = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # what new_run_id makes, and the run's folder is named


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261124-041500-ab12cd`` (UTC time + random); its folder has that name."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def mark_top_of_hierarchy(folder: Path) -> bool:
    """Ask the file system to spread the folders made in ``folder`` over the disk.

    Returns whether the flag is set. Best effort: a file system or platform without
    the flag (tmpfs, XFS, macOS, Windows), or a folder that is not ours, returns False
    and nothing else happens.
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
    """Make ``folder`` (and its parents) and mark it so that the folders made in it spread out."""
    folder.mkdir(parents=True, exist_ok=True)
    mark_top_of_hierarchy(folder)
    return folder


def fresh_store_path(folder: Path, stem: str) -> Path:
    """A path in ``folder`` that no store has used, for one repeat's store: ``<stem>-<random hex>``."""
    while True:
        path = folder / f"{stem}-{secrets.token_hex(4)}"
        if not path.exists():
            return path


class RetiredStores:
    """Stores a run has measured and no longer needs, deleted when the run ends.

    Keeping them means the run frees no inodes while it measures (see the module's
    docstring). The bytes kept are bounded: past ``budget_bytes`` the oldest stores are
    deleted at once.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.kept_bytes = 0
        self._stores: deque[tuple[Path, int]] = deque()

    @classmethod
    def for_folder(cls, folder: Path) -> RetiredStores:
        """A budget of a quarter of the space free where ``folder`` is."""
        return cls(int(shutil.disk_usage(folder).free * RETIRED_SHARE_OF_FREE_SPACE))

    def retire(self, path: Path | None, size_bytes: int) -> None:
        """Keep ``path`` until :meth:`delete_all`, or delete the oldest now if over budget."""
        if path is None or not path.exists():
            return
        self._stores.append((path, size_bytes))
        self.kept_bytes += size_bytes
        while self.kept_bytes > self.budget_bytes and self._stores:
            oldest, size = self._stores.popleft()
            self.kept_bytes -= size
            delete_files(oldest)

    def delete_all(self, keep_folders: bool = True) -> None:
        """Delete every store kept (at the end of the run); by default their empty folders stay."""
        while self._stores:
            path, _ = self._stores.popleft()
            if keep_folders:
                delete_files(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        self.kept_bytes = 0

    def __len__(self) -> int:
        return len(self._stores)


def delete_files(folder: Path) -> None:
    """Delete every file under ``folder`` and keep the folders, empty (see the module's docstring)."""
    if not folder.is_dir():
        return
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                os.unlink(os.path.join(parent, name))
            except FileNotFoundError:
                pass
    os.utime(folder)  # an ended run's age counts from now


def holds_files(folder: Path) -> bool:
    """Whether any file lies anywhere under ``folder``."""
    return any(files for _, _, files in os.walk(folder))


def remove_spent_run_folders(work_dir: Path, older_than: float = SPENT_FOLDER_SECONDS) -> list[str]:
    """Remove the emptied folders of runs that ended more than ``older_than`` seconds ago."""
    removed = []
    if not work_dir.is_dir():
        return removed
    now = time.time()
    for entry in os.scandir(work_dir):
        if not (RUN_FOLDER_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        try:
            if now - entry.stat().st_mtime > older_than and not holds_files(Path(entry.path)):
                shutil.rmtree(entry.path)  # no files: a kept or live run always holds some
                removed.append(entry.name)
        except OSError:
            pass
    return removed
