"""Disk space set aside for a write before it starts, and given back after it ends.

A format library that fills a disk midway cannot always undo what it wrote: HDF5 keeps the
file at the size it reached (31 MB of a 30 MB disk, after a rollback to 6 MB of images).
Blocks reserved past the end of the file first (``fallocate`` with ``FALLOC_FL_KEEP_SIZE``:
the file's size does not change, only its allocation) make a full disk fail before anything
is written; what the write did not use is punched out again afterwards. Where the system
cannot reserve (not Linux, a file system without ``fallocate``) nothing is reserved and
writes go on as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

KEEP_SIZE = 0x01
PUNCH_HOLE = 0x02
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _fallocate = _libc.fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _fallocate = None


def _call(descriptor: int, mode: int, offset: int, length: int) -> bool:
    """``fallocate``; False where the file system cannot, OSError for a real failure (a full disk)."""
    if _fallocate is None or length <= 0:
        return False
    if _fallocate(descriptor, mode, offset, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code))


def reserve_after_end(descriptor: int, length: int) -> int:
    """Reserve ``length`` bytes of blocks after the file's end; return where the reservation ends (0: none)."""
    end = os.fstat(descriptor).st_size
    return end + length if _call(descriptor, KEEP_SIZE, end, length) else 0


def release_after_end(descriptor: int, reserved_until: int) -> None:
    """Give back what is still reserved past the file's end, up to ``reserved_until``."""
    end = os.fstat(descriptor).st_size
    if reserved_until > end:
        try:
            _call(descriptor, PUNCH_HOLE | KEEP_SIZE, end, reserved_until - end)
            # ext4 punches no further than the file's size: blocks reserved past it are freed
            # by truncating the file to the size it has (its data is untouched)
            os.ftruncate(descriptor, end)
        except OSError:
            pass
