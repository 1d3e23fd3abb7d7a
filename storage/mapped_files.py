"""Advice to the kernel about this process's memory mappings of one file (Linux; elsewhere nothing).

LMDB reads through a memory map of its whole data file, and every page a read touches
stays mapped into the process, counted in its resident set, until the map is closed: a
warm scan of a 4 GB store leaves the process at 4 GB RSS although the pages belong to the
page cache. ``advise(path, DONTNEED)`` drops this process's mapping of those pages (the
page cache keeps them, a later read maps them again) and ``SEQUENTIAL``/``RANDOM`` choose
the kernel's read-ahead for the access pattern that follows.
"""

from __future__ import annotations

import ctypes
import os
import sys

import numpy as np

NORMAL, RANDOM, SEQUENTIAL, WILLNEED, DONTNEED = 0, 1, 2, 3, 4
BUDGET_BYTES = 512 * 2**20
"""Stores whose mapped file is bigger than this unmap what a bulk read touched, afterwards.

On this project's machine (Linux 6.18, ext4) a page fault maps a whole large folio of the
page cache, so 1,000 random images read through a map leave about 1 GB mapped.
"""

_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL | None:
    """The C library, loaded on first use (importing this module runs nothing: it is imported
    in every worker process that opens an lmdb or npy store); None where madvise is unavailable."""
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            _LIBC = libc
        except (OSError, AttributeError):
            return None
    return _LIBC


def mappings_of(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """(start address, length) of each mapping of ``path`` in this process."""
    if _libc() is None:
        return []
    target = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if not line.rstrip().endswith(target):
                    continue
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == target:
                    start, stop = (int(value, 16) for value in fields[0].split("-"))
                    found.append((start, stop - start))
    except OSError:
        return []
    return found


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def advise_range(start: int, stop: int, advice: int) -> None:
    """``madvise`` the pages holding addresses ``start``..``stop`` (for example ``WILLNEED``)."""
    libc = _libc()
    if libc is None or stop <= start:
        return
    first = start - start % PAGE
    libc.madvise(first, stop - first, advice)


def address_of(buffer) -> int:
    """The address of a buffer (a memoryview into a map, as LMDB's ``buffers=True`` gives)."""
    return int(np.frombuffer(buffer, dtype=np.uint8).__array_interface__["data"][0])


def advise(path: str | os.PathLike[str], advice: int) -> bool:
    """``madvise`` every mapping of ``path`` in this process; False where that is not possible."""
    ranges = mappings_of(path)
    for start, length in ranges:
        _libc().madvise(start, length, advice)
    return bool(ranges)


SCATTERED_READ_MAPPED_BYTES = 32 * 2**20
"""What one scattered read of a big image was seen to map (see :class:`ReadBudget`)."""
READ_MAPPED_BYTES = 128 * 2**20
"""A big store's reads are unmapped after about this much."""
BIG_IMAGE_BYTES = 16 * 2**10
"""Images from this size on are unmapped after every few scattered reads."""


class ReadBudget:
    """Drop a big mapped file's pages from this process once reads have mapped about ``READ_MAPPED_BYTES``.

    Every page a read touches stays mapped in the process (it counts in its RSS) until it
    is unmapped. A loop of ``read_batch`` calls over an LMDB store of 100,000 photos (11 GB)
    mapped 11.6 GB in one reader; and on this kernel one scattered read maps whole
    page-cache folios around each page it touches (the B-tree's pages and the value's): 300
    random ``get`` calls on that store mapped 8.9 GB, about 30 MB each. So a scan counts its
    images' bytes, and a scattered read of a big image counts ``SCATTERED_READ_MAPPED_BYTES``.
    The pages stay in the page cache: the next read of one is a minor fault. Unmapping costs
    about 0.7 ms; a scattered read of a small image (CIFAR's 3 KB, a few microseconds)
    counts its bytes only, as unmapping every few reads would cost many times the reads.
    Files up to ``BUDGET_BYTES`` are never unmapped.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self._images = 0
        self._bytes_per_image: float | None = None
        self._big = False

    def count(self, images: int, scattered: bool, file_bytes, stored_images: int) -> None:
        """Note ``images`` read (``scattered`` or a run); ``file_bytes()`` is the file's size, measured now and then."""
        if self._bytes_per_image is None:  # measured again after each budget's worth (a file that grows)
            used = file_bytes()
            self._bytes_per_image = max(1.0, used / max(1, stored_images))
            self._big = used > BUDGET_BYTES
        per_image = self._bytes_per_image
        if scattered and per_image >= BIG_IMAGE_BYTES:
            per_image = max(per_image, SCATTERED_READ_MAPPED_BYTES)
        self._images += images
        if self._images * per_image < READ_MAPPED_BYTES:
            return
        self._images, self._bytes_per_image = 0, None
        if self._big:
            advise(self.path, DONTNEED)
