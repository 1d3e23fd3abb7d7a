"""Evict a store's files from the page cache and check, page by page, that it worked.

Eviction is per file: dirty pages are written back (``os.sync``, then ``fsync`` per file
if pages stay), then ``posix_fadvise(POSIX_FADV_DONTNEED)`` asks the kernel to drop the
file's clean pages. Nothing here needs root, and nothing drops the directory or inode
caches, so "cold" means *page cache evicted*, not *cold disk*.

The kernel may ignore the advice (tmpfs keeps everything in memory; a page that an open
``mmap`` pins stays), so :func:`residency` asks the kernel which pages are resident with
``mincore`` on a read-only mapping, which itself reads nothing from disk. Callers record
the answer instead of assuming that eviction worked. Close every handle on a store
(NumPy memmaps, LMDB environments) before evicting, and reopen it afterwards.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = mmap.PAGESIZE
# mincore needs one byte per page of the mapped range; map large files a window at a time.
_WINDOW_BYTES = 1 << 30

_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value


@dataclass(frozen=True)
class Residency:
    """How much of a set of files sits in the page cache."""

    resident_bytes: int
    total_bytes: int
    files: int

    @property
    def fraction(self) -> float:
        return self.resident_bytes / self.total_bytes if self.total_bytes else 0.0


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.restype = ctypes.c_int
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    return libc


_LIBC: ctypes.CDLL | None = None


def _get_libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = _libc()
    return _LIBC


def supported() -> bool:
    """Whether this platform has ``posix_fadvise`` and ``mincore`` (Linux does)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    try:
        _get_libc()
    except (OSError, AttributeError):
        return False
    return True


def iter_files(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Every regular file under ``path`` (or ``path`` itself if it is a file)."""
    path = Path(path)
    if path.is_file():
        yield path
        return
    for root, _dirs, names in os.walk(path):
        for name in names:
            file = Path(root, name)
            if file.is_file() and not file.is_symlink():
                yield file


def _data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) byte ranges that hold data, skipping holes of sparse files."""
    if not hasattr(os, "SEEK_DATA"):
        yield 0, size
        return
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            return
        try:
            stop = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError:
            stop = size
        yield start, min(stop, size)
        offset = stop


def file_residency(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(resident bytes, size) of one file, asked of the kernel with ``mincore``."""
    libc = _get_libc()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        resident_pages = 0
        for start, stop in _data_ranges(fd, size):
            start -= start % PAGE_SIZE
            for window in range(start, stop, _WINDOW_BYTES):
                length = min(_WINDOW_BYTES, stop - window)
                address = libc.mmap(None, length, _PROT_READ, _MAP_SHARED, fd, window)
                if address in (None, _MAP_FAILED):
                    error = ctypes.get_errno()
                    raise OSError(error, f"mmap of {path} failed: {os.strerror(error)}")
                try:
                    pages = (length + PAGE_SIZE - 1) // PAGE_SIZE
                    vector = (ctypes.c_ubyte * pages)()
                    if libc.mincore(address, length, vector) != 0:
                        error = ctypes.get_errno()
                        raise OSError(error, f"mincore on {path} failed: {os.strerror(error)}")
                    resident_pages += sum(1 for flag in vector if flag & 1)
                finally:
                    libc.munmap(address, length)
        return min(resident_pages * PAGE_SIZE, size), size
    finally:
        os.close(fd)


def residency(path: str | os.PathLike[str]) -> Residency:
    """How many bytes of the files under ``path`` are in the page cache right now."""
    resident = total = files = 0
    for file in iter_files(path):
        file_resident, size = file_residency(file)
        resident += file_resident
        total += size
        files += 1
    return Residency(resident, total, files)


def _advise_dontneed(file: Path, fsync: bool) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        if fsync:
            os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def evict(path: str | os.PathLike[str]) -> Residency:
    """Write back and drop every file under ``path`` from the page cache; return what stays.

    One ``os.sync()`` writes dirty pages back (cheaper than an ``fsync`` per file for a
    folder of 100,000 PNG files); files that still hold pages afterwards are fsynced and
    advised again once.
    """
    os.sync()
    files = list(iter_files(path))
    for file in files:
        _advise_dontneed(file, fsync=False)
    resident = total = 0
    for file in files:
        file_resident, size = file_residency(file)
        if file_resident:
            _advise_dontneed(file, fsync=True)
            file_resident, size = file_residency(file)
        resident += file_resident
        total += size
    return Residency(resident, total, len(files))


def eviction_works(folder: str | os.PathLike[str]) -> tuple[bool, str]:
    """Check, by measuring, whether the filesystem of ``folder`` honours eviction.

    Returns (works, reason). tmpfs, for instance, keeps every page whatever one advises.
    """
    if not supported():
        return False, "posix_fadvise or mincore is not available on this platform"
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".evict-probe-") as probe:
        probe.write(os.urandom(64 * PAGE_SIZE))
        probe.flush()
        os.fsync(probe.fileno())
        before, size = file_residency(probe.name)
        if before == 0:
            return False, "freshly written pages are not reported resident, so residency cannot be checked here"
        _advise_dontneed(Path(probe.name), fsync=True)
        after, _ = file_residency(probe.name)
    if after:
        return False, f"the filesystem keeps pages after POSIX_FADV_DONTNEED ({after} of {size} bytes stay; tmpfs?)"
    return True, "eviction confirmed with mincore"
