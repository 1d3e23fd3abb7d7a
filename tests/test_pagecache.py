"""Cold-cache eviction: checked by asking the kernel (mincore) which pages stay resident."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pytest

import storage
from storage.bench import pagecache

pytestmark = pytest.mark.skipif(not pagecache.supported(), reason="posix_fadvise/mincore not available here")


@pytest.fixture
def evictable(tmp_path: Path) -> Path:
    works, reason = pagecache.eviction_works(tmp_path)
    if not works:
        pytest.skip(f"the filesystem of {tmp_path} ignores eviction: {reason}")
    return tmp_path


def test_a_freshly_written_file_is_resident(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(40 * pagecache.PAGE_SIZE))
    resident, size = pagecache.file_residency(path)
    assert size == 40 * pagecache.PAGE_SIZE
    assert 0 < resident <= size


@pytest.mark.parametrize("backend", ["png", "lmdb", "hdf5"])
def test_evicting_a_store_leaves_no_page_resident(evictable: Path, backend: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    path = evictable / backend
    with storage.open_store(backend, path, "w") as store:
        store.write_batch(images, np.arange(50))
    before = pagecache.residency(path)
    assert before.files >= 2 and before.resident_bytes > 0

    after = pagecache.evict(path)
    assert after.resident_bytes == 0, f"{after.resident_bytes} bytes stayed resident"
    assert pagecache.residency(path).resident_bytes == 0

    with storage.open_store(backend, path) as store:  # reading brings pages back
        images_read, _ = store.read_all()
    assert np.array_equal(images_read, images)
    assert pagecache.residency(path).resident_bytes > 0


def test_an_open_mapping_keeps_its_pages(evictable: Path) -> None:
    """Why the engine closes every handle (LMDB maps its file) before evicting."""
    path = evictable / "mapped.bin"
    path.write_bytes(os.urandom(16 * pagecache.PAGE_SIZE))
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapping:
        checksum = sum(mapping[i] for i in range(0, len(mapping), pagecache.PAGE_SIZE))
        assert checksum >= 0
        assert pagecache.evict(path).resident_bytes > 0
    assert pagecache.evict(path).resident_bytes == 0


def test_sparse_files_are_checked_without_mapping_their_holes(tmp_path: Path) -> None:
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as file:
        file.truncate(8 << 30)  # an 8 GiB map, as LMDB reserves, holding one page of data
        file.seek(4 << 30)
        file.write(b"x" * pagecache.PAGE_SIZE)
    resident, size = pagecache.file_residency(path)
    assert size == 8 << 30
    assert resident <= 16 * pagecache.PAGE_SIZE


def test_empty_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").touch()
    (tmp_path / "sub").mkdir()
    result = pagecache.residency(tmp_path)
    assert (result.resident_bytes, result.total_bytes, result.files) == (0, 0, 1)
    assert result.fraction == 0.0


def test_tmpfs_is_reported_as_ignoring_eviction() -> None:
    shm = Path("/dev/shm")
    mounts = Path("/proc/mounts").read_text() if Path("/proc/mounts").exists() else ""
    if not shm.is_dir() or not os.access(shm, os.W_OK) or " /dev/shm tmpfs " not in mounts:
        pytest.skip("no writable tmpfs at /dev/shm")
    works, reason = pagecache.eviction_works(shm)
    assert not works
    assert "POSIX_FADV_DONTNEED" in reason
