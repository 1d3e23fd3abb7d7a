"""Refusals: bad images, labels, ids, modes and paths each get a clear error, and nothing stored is lost.

Every error is a :class:`~storage.errors.StorageError` and also the builtin exception a
caller would expect (``TypeError``, ``ValueError``, ``IndexError``, ``PermissionError``...).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from .. import errors
from ..registry import backends, open_store
from .fixtures import ConformanceFixtures
from .support import assert_same_images, write_store


def assert_still_holds_twelve(backend, info, path, cifar):
    with open_store(backend, path) as store:
        assert len(store) == 12
        read, read_labels = store.read_all()
        assert_same_images(info, cifar[0][:12], read)
        np.testing.assert_array_equal(read_labels, cifar[1][:12])


class RefusalTests(ConformanceFixtures):
    """What a store refuses, and that a refused write leaves the store as it was."""

    # -- bad input: a clear error, and nothing already stored is lost ------------------------------

    @pytest.mark.parametrize(
        ("make_images", "error", "builtin", "words"),
        [
            (lambda imgs: imgs[:3].astype(np.float32), errors.ImageTypeError, TypeError, "uint8"),
            (lambda imgs: imgs[:3].astype(np.int64), errors.ImageTypeError, TypeError, "uint8"),
            (lambda imgs: imgs[:3, :, :, 0].reshape(3, -1)[0], errors.ImageShapeError, ValueError, "shape"),
            (lambda imgs: imgs[:3].reshape(3, 32, 96), None, None, None),
            (lambda imgs: np.zeros((3, 4, 4, 5), np.uint8), errors.ImageShapeError, ValueError, "channels"),
            (lambda imgs: np.zeros((3, 2, 4, 4, 3), np.uint8), errors.ImageShapeError, ValueError, "shape"),
            (lambda imgs: [imgs[0], "not an image", imgs[1]], errors.ImageTypeError, TypeError, "image 1"),
            (lambda imgs: [imgs[0], imgs[1].astype(float)], errors.ImageTypeError, TypeError, "image 1"),
            (lambda imgs: "images", errors.ImageTypeError, TypeError, "images is a str"),
            (lambda imgs: 42, errors.ImageTypeError, TypeError, "images is a int"),
        ],
    )
    def test_bad_images_are_refused_and_nothing_is_lost(
        self, backend, info, stored, cifar, make_images, error, builtin, words
    ):
        images = make_images(cifar[0])
        if error is None:  # a valid (N,H,W) grayscale reading of the same bytes: accepted
            return
        count = len(images) if hasattr(images, "__len__") and not isinstance(images, (str, int)) else 3
        with pytest.raises(error, match=words) as caught:
            stored.write_batch(images, list(range(count)))
        assert isinstance(caught.value, builtin) and isinstance(caught.value, errors.StorageError)
        assert len(stored) == 12
        stored.close()
        assert_still_holds_twelve(backend, info, stored.path, cifar)

    @pytest.mark.parametrize(
        ("labels", "words"),
        [
            ([1, 2], "got 2 labels for 3 images"),
            ([1, 2, 3, 4], "got 4 labels for 3 images"),
            ([0.5, 1.0, 2.0], "integers"),
            (["a", "b", "c"], "integers"),
            ([True, False, True], "integers"),
            ("abc", "string"),
            ([[1], [2], [3]], "flat"),
        ],
    )
    def test_bad_labels_are_refused_and_nothing_is_lost(self, backend, info, stored, cifar, labels, words):
        with pytest.raises(errors.LabelError, match=words) as caught:
            stored.write_batch(cifar[0][:3], labels)
        assert isinstance(caught.value, ValueError)
        stored.close()
        assert_still_holds_twelve(backend, info, stored.path, cifar)

    @pytest.mark.parametrize("empty", [np.empty((0, 32, 32, 3), np.uint8), []])
    def test_empty_batch_is_refused(self, backend, info, stored, cifar, empty):
        with pytest.raises(errors.EmptyBatchError, match="no images") as caught:
            stored.write_batch(empty, [])
        assert isinstance(caught.value, ValueError)
        stored.close()
        assert_still_holds_twelve(backend, info, stored.path, cifar)

    def test_bad_single_image_and_label(self, backend, info, stored, cifar):
        with pytest.raises(errors.ImageShapeError):
            stored.write_one(cifar[0][:2], 1)
        with pytest.raises(errors.ImageTypeError):
            stored.write_one(cifar[0][0].astype(np.float64), 1)
        with pytest.raises(errors.LabelError, match="integers"):
            stored.write_one(cifar[0][0], 1.5)
        with pytest.raises(errors.LabelError, match="integers"):
            stored.write_one(cifar[0][0], None)
        stored.close()
        assert_still_holds_twelve(backend, info, stored.path, cifar)

    def test_store_of_one_size_refuses_another_size(self, backend, info, stored, cifar):
        if info.variable_shapes:
            pytest.skip(f"{backend} stores images of any size")
        with pytest.raises(errors.ImageShapeError, match="size|shape"):
            stored.write_batch(np.zeros((2, 16, 16, 3), np.uint8), [0, 1])
        stored.close()
        assert_still_holds_twelve(backend, info, stored.path, cifar)

    # -- ids a store does not hold -----------------------------------------------------------------

    @pytest.mark.parametrize("bad_id", [12, 1000, -1, 2.0, "3", None, True])
    def test_reading_a_missing_id(self, backend, stored, bad_id):
        with pytest.raises(errors.ImageIndexError) as caught:
            stored.read_one(bad_id)
        assert isinstance(caught.value, IndexError)
        assert "image id" in str(caught.value)

    def test_read_batch_with_a_missing_id(self, backend, stored):
        with pytest.raises(errors.ImageIndexError, match="12 images"):
            stored.read_batch([0, 5, 12])
        with pytest.raises(errors.ImageIndexError, match="integers"):
            stored.read_batch([0.5, 1.5])

    # -- bad modes, options and paths --------------------------------------------------------------

    def test_unknown_mode_and_option(self, backend, tmp_path):
        with pytest.raises(errors.ModeError, match="'x'"):
            open_store(backend, tmp_path / "s", "x")
        with pytest.raises(errors.ModeError, match="unknown option"):
            open_store(backend, tmp_path / "s", "w", no_such_option=1)

    def test_reading_a_store_that_does_not_exist(self, backend, tmp_path):
        with pytest.raises(errors.StoreNotFoundError, match="no image store") as caught:
            open_store(backend, tmp_path / "missing", "r")
        assert isinstance(caught.value, FileNotFoundError)

    def test_a_folder_that_is_not_a_store(self, backend, tmp_path):
        (tmp_path / "photos").mkdir()
        (tmp_path / "photos" / "cat.jpg").write_bytes(b"precious")
        with pytest.raises(errors.StoreNotFoundError, match="not an image store"):
            open_store(backend, tmp_path / "photos", "r")
        with pytest.raises(errors.StoreExistsError, match="not an image store"):
            open_store(backend, tmp_path / "photos", "w")
        assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"precious"

    def test_opening_one_backends_store_as_another(self, backend, tmp_path, cifar):
        other = next(name for name in backends() if name != backend)
        write_store(other, tmp_path / "s", cifar[0][:2], [0, 1])
        with pytest.raises(errors.WrongBackendError, match=f"holds a '{other}' store") as caught:
            open_store(backend, tmp_path / "s", "r")
        assert isinstance(caught.value, ValueError)
        with pytest.raises(errors.WrongBackendError):
            open_store(backend, tmp_path / "s", "a")
        with open_store(other, tmp_path / "s") as store:
            assert len(store) == 2

    def test_a_path_below_a_file_is_not_writable(self, backend, tmp_path):
        (tmp_path / "file").write_text("x")
        with pytest.raises(errors.StoreNotWritableError) as caught:
            open_store(backend, tmp_path / "file" / "store", "w")
        assert isinstance(caught.value, PermissionError)
        with pytest.raises(errors.StoreExistsError, match="is a file"):
            open_store(backend, tmp_path / "file", "w")

    def test_an_unwritable_folder(self, backend):
        """Tries as an unprivileged user in a forked child, since root may write anywhere."""
        parent = Path(tempfile.mkdtemp(prefix="unwritable-"))
        parent.chmod(0o755)
        locked = parent / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            message = b"not refused"
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                open_store(backend, locked / "store", "w")
            except errors.StoreNotWritableError as error:
                message = b"refused: " + str(error).encode()
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                message = repr(error).encode()
            finally:
                os.write(write_end, message)
                os._exit(0)
        os.close(write_end)
        message = os.read(read_end, 4096).decode()
        os.waitpid(pid, 0)
        os.close(read_end)
        assert message.startswith("refused: cannot write to"), message
        assert str(locked / "store") in message
        assert not (locked / "store").exists()
        shutil.rmtree(parent)
