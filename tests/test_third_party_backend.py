"""A backend written outside the library passes the shipped conformance suite by subclassing it.

``NpzFilesStore`` stands for a third party's backend: a subclass of ``storage.ImageStore``
registered with ``storage.register_backend``. Its test class is all such a package needs to
get every conformance test; the two that kill a writing process find the class again in
their fresh interpreter through the suite's default ``backend_setup_code``.
"""

from __future__ import annotations

import numpy as np
import pytest

import storage
from storage.testing import StoreConformanceTests


class NpzFilesStore(storage.ImageStore):
    """One uncompressed ``.npz`` file per image, holding its pixels and its label."""

    info = storage.BackendInfo(
        name="npz-files",
        label="NumPy .npz files",
        description="One uncompressed .npz file per image, pixels and label together: a backend from outside.",
        one_file_per_image=True,
    )

    def _create(self) -> None:
        pass  # the folder is all it needs

    def _open(self) -> None:
        pass  # no handles: each read opens its file

    def _close(self) -> None:
        pass

    def _file(self, image_id: int) -> str:
        # a str, not a Path: pathlib interns each name, and 12,000 names would grow the intern table by megabytes
        return f"{self.path}/{image_id:08d}.npz"

    def _write_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        for offset, (image, label) in enumerate(zip(images, labels)):
            np.savez(self._file(first_id + offset), image=image, label=label)

    def _commit(self, count: int) -> None:
        pass  # the files are written; the manifest written next is what makes them count

    def _rollback(self, count: int) -> None:
        for path in self.path.glob("*.npz"):
            if int(path.stem) >= count:
                path.unlink()

    def _read_one(self, image_id: int) -> tuple[np.ndarray, int]:
        with np.load(self._file(image_id)) as data:
            return data["image"], int(data["label"])


class TestNpzFilesStore(StoreConformanceTests):
    backend = "npz-files"

    @pytest.fixture(autouse=True, scope="class")
    def registered(self):
        storage.register_backend(NpzFilesStore)
        yield
        storage.unregister_backend("npz-files")


def test_the_backend_is_registered_only_while_its_suite_runs():
    assert "npz-files" not in storage.backends(available_only=False)
