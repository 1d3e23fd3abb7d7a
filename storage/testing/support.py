"""What the conformance tests compare with and write: sample images, image checks, odd inputs.

Lossless backends must give every pixel back; lossy ones must keep each image's shape and
a PSNR the benchmark engine accepts (:mod:`storage.verify`), so a test states its
expectation once and it holds for both kinds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from ..base import BackendInfo
from ..datasets import SAMPLE_CIFAR10_DIR, load_cifar10
from ..registry import open_store
from ..verify import PSNR_IMAGE_FLOOR, PSNR_MEAN_FLOOR, psnr

LIBRARY_ROOT = Path(__file__).resolve().parents[2]
"""The folder that holds the ``storage`` package: a fresh interpreter imports it from here."""
MIN_LOSSY_PSNR = PSNR_MEAN_FLOOR  # mean over the images compared, as the engine verifies
MIN_LOSSY_IMAGE_PSNR = PSNR_IMAGE_FLOOR  # the worst single image


@functools.lru_cache(maxsize=1)
def sample_images(count: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` images and labels of the bundled CIFAR-10 sample, read once per process."""
    images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
    return images[:count], labels[:count]


def assert_same_image(info: BackendInfo, expected: np.ndarray, actual: np.ndarray) -> None:
    """Bit-exact for lossless backends; same shape and a PSNR the engine accepts for lossy ones."""
    assert actual.dtype == np.uint8
    assert actual.shape == expected.shape
    if info.lossless:
        np.testing.assert_array_equal(actual, expected)
    else:
        assert psnr(expected, actual) >= MIN_LOSSY_IMAGE_PSNR


def assert_same_images(info: BackendInfo, expected, actual) -> None:
    """Each image as above; for lossy backends also a mean PSNR of at least 30 dB."""
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert_same_image(info, want, got)
    if not info.lossless and len(expected):
        assert np.mean([psnr(want, got) for want, got in zip(expected, actual)]) >= MIN_LOSSY_PSNR


def write_store(backend: str, path: Path, images, labels) -> np.ndarray:
    with open_store(backend, path, "w") as store:
        return store.write_batch(images, labels)


def mixed_size_images(cifar_images: np.ndarray) -> list[np.ndarray]:
    """Real image crops of several sizes and channel counts."""
    crops = [(32, 32), (17, 23), (8, 31), (29, 5), (1, 1), (32, 12)]
    return [np.ascontiguousarray(cifar_images[i][:h, :w]) for i, (h, w) in enumerate(crops)]


def to_gray(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.uint16).sum(axis=-1) // 3).astype(np.uint8)


def with_alpha(images: np.ndarray) -> np.ndarray:
    alpha = np.broadcast_to(np.linspace(40, 255, images.shape[2], dtype=np.uint8), images.shape[:3])[..., None]
    return np.ascontiguousarray(np.concatenate([images, alpha], axis=-1))


class LazyImages(Sequence):
    """Images made on demand, so the caller's input itself takes no memory."""

    def __init__(self, count: int, shape: tuple[int, ...]) -> None:
        self.count, self.shape = count, shape

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return np.full(self.shape, index % 251, dtype=np.uint8)


class Interrupt(Exception):
    pass


def take_images(images: np.ndarray, labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images and labels, the given ones repeated as often as needed (a real array, not a view)."""
    repeats = -(-count // len(images))
    return np.concatenate([images] * repeats)[:count], np.concatenate([labels] * repeats)[:count]


def _mount_command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *arguments], capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size_bytes: int) -> Iterator[Path]:
    """A small file system of its own at ``folder`` for the test (tmpfs of ``size_bytes``), unmounted after.

    Mounting needs root on Linux; elsewhere the test is skipped, saying why.
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("a small file system is mounted for this test, which needs root on Linux")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = _mount_command("-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def remounted_read_only(folder: Path) -> Iterator[None]:
    """The file system mounted at ``folder`` made read-only for the block (as root, ``chmod`` stops nothing)."""
    changed = _mount_command("-o", "remount,ro", str(folder))
    if changed.returncode != 0:
        pytest.skip(f"cannot remount {folder} read-only ({changed.stderr.strip() or changed.returncode})")
    try:
        yield
    finally:
        _mount_command("-o", "remount,rw", str(folder))
