"""Encoded stores: kept photo bytes come back exactly, re-encodings within their promises, resizing as stated.

Every backend whose class says ``takes_encodings()`` runs the kept-bytes and re-encoding
cases; the others skip them visibly, with the reason, and must refuse the ``encoding``
option instead. Resizing at write time (``max_side``, ``shorter_side``) is tried on every
backend, as every store takes it.

The photos are real files: small JPEGs and PNGs made here with Pillow from the CIFAR-10
sample (RGB, grayscale, RGBA), and a few of the bundled ImageNet photos when the project's
``data/imagenet-sample`` is there. Expected pixels come from Pillow's own decode of the
same bytes, never from the library's decoder.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .. import errors
from ..base import MANIFEST_NAME
from ..encodings import RESAMPLING_FILTER, EncodedImage, resized_size
from ..image_codec import EncodedImages
from ..registry import open_store, store_class
from ..verify import PSNR_IMAGE_FLOOR, PSNR_MEAN_FLOOR, psnr, verify_store
from .fixtures import ConformanceFixtures
from .support import LIBRARY_ROOT, assert_same_image, with_alpha

PHOTO_SAMPLE_DIR = LIBRARY_ROOT / "data" / "imagenet-sample"
"""The bundled ImageNet photos; the suite uses a few of them when they are there."""
SAMPLE_PHOTOS_USED = 3  # two colour photos and one grayscale, a few hundred pixels wide


def file_bytes(pixels: np.ndarray, image_format: str, **save_options) -> bytes:
    """``pixels`` saved by Pillow as a real image file of ``image_format`` (``"JPEG"``, ``"PNG"``)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **save_options)
    return buffer.getvalue()


def pillow_pixels(data: bytes) -> np.ndarray:
    """Pillow's decode of ``data``: the array every read of a kept-bytes store must equal."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.mode in ("L", "RGB", "RGBA"), f"the test photos are L, RGB or RGBA, not {image.mode}"
        return np.array(image)


def sample_photo_files(count: int = SAMPLE_PHOTOS_USED) -> list[bytes]:
    """The bytes of a few bundled ImageNet photos (the first grayscale one among them), or none."""
    paths = sorted(PHOTO_SAMPLE_DIR.glob("*/*.JPEG"))
    if not paths:
        return []
    gray = [path for path in paths if Image.open(path).mode == "L"][:1]
    chosen = gray + [path for path in paths if path not in gray][: count - len(gray)]
    return [path.read_bytes() for path in chosen]


def made_photo_files(cifar_images: np.ndarray) -> list[bytes]:
    """Small real JPEG and PNG files made from CIFAR-10 images: RGB, grayscale and RGBA, odd sizes."""
    gray = (cifar_images[:4].astype(np.uint16).sum(axis=-1) // 3).astype(np.uint8)
    rgba = with_alpha(cifar_images[4:5])[0]
    return [
        file_bytes(cifar_images[0], "JPEG", quality=85),
        file_bytes(np.ascontiguousarray(cifar_images[1][:17, :29]), "JPEG", quality=95),
        file_bytes(gray[2], "JPEG", quality=90),
        file_bytes(cifar_images[3], "PNG"),
        file_bytes(rgba, "PNG"),
        file_bytes(np.ascontiguousarray(gray[3][:9, :30]), "PNG"),
    ]


def formats_of(files: list[bytes]) -> list[str]:
    """Each file's format as Pillow names it, lower case (``"jpeg"``, ``"png"``)."""
    names = []
    for data in files:
        with Image.open(io.BytesIO(data)) as image:
            names.append(image.format.lower())
    return names


def write_encoded(backend: str, path: Path, files: list[bytes], labels, **options) -> np.ndarray:
    with open_store(backend, path, "w", **{"encoding": "source", **options}) as store:
        return store.write_batch(EncodedImages(files), labels)


def manifest_options(path: Path) -> dict:
    return json.loads((path / MANIFEST_NAME).read_text())["options"]


def assert_pixels_of(files: list[bytes], images) -> None:
    """``images`` are Pillow's decode of ``files``, one for one, exactly."""
    assert len(images) == len(files)
    for position, (data, image) in enumerate(zip(files, images)):
        expected = pillow_pixels(data)
        assert image.dtype == np.uint8, position
        assert image.shape == expected.shape, f"image {position}: {image.shape}, Pillow gives {expected.shape}"
        np.testing.assert_array_equal(image, expected, err_msg=f"image {position}")


class EncodingTests(ConformanceFixtures):
    """Stores written with ``encoding`` ("source", "png", "jpeg:Q") and with resizing options."""

    @pytest.fixture
    def encodable(self, backend) -> None:
        """Skip, saying why, unless the backend keeps encoded bytes."""
        if not store_class(backend).takes_encodings():
            pytest.skip(
                f"{backend} does not keep encoded bytes (takes_encodings() is False: it needs one size per "
                "store or keeps one file per image), so it has no encoding option"
            )

    @pytest.fixture(scope="class")
    def photo_files(self, cifar) -> list[bytes]:
        """Real image files of several formats, modes and sizes (override it to try others)."""
        return made_photo_files(cifar[0]) + sample_photo_files()

    @pytest.fixture
    def photo_labels(self, photo_files) -> np.ndarray:
        return (np.arange(len(photo_files), dtype=np.int64) * 7) % 10

    # -- backends without encodings -----------------------------------------------------------------

    def test_backend_without_encodings_refuses_the_option(self, backend, tmp_path):
        if store_class(backend).takes_encodings():
            pytest.skip(f"{backend} takes encodings: its kept-bytes cases run instead")
        with pytest.raises(errors.ModeError, match="unknown option.*encoding"):
            open_store(backend, tmp_path / "s", "w", encoding="source")
        assert not (tmp_path / "s" / MANIFEST_NAME).exists()

    def test_read_encoded_of_a_raw_store_is_refused(self, backend, tmp_path, cifar):
        with open_store(backend, tmp_path / "s", "w") as store:
            store.write_batch(cifar[0][:3], cifar[1][:3])
        with open_store(backend, tmp_path / "s") as store:
            with pytest.raises(errors.EncodingError, match="encoding 'raw'.*encoding='source'"):
                store.read_encoded([0, 1])

    # -- kept bytes ---------------------------------------------------------------------------------

    def test_kept_bytes_read_back_exactly(self, backend, encodable, tmp_path, photo_files, photo_labels):
        ids = write_encoded(backend, tmp_path / "s", photo_files, photo_labels)
        np.testing.assert_array_equal(ids, np.arange(len(photo_files)))
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == len(photo_files)
            data, names, labels = store.read_encoded(range(len(photo_files)))
            assert [bytes(item) for item in data] == photo_files
            assert names == formats_of(photo_files)
            np.testing.assert_array_equal(labels, photo_labels)
            order = [4, 0, 4, len(photo_files) - 1]
            some, some_names, some_labels = store.read_encoded(np.array(order))
            assert some == [photo_files[i] for i in order] and some_names == [names[i] for i in order]
            np.testing.assert_array_equal(some_labels, photo_labels[order])
            nothing, no_names, no_labels = store.read_encoded([])
            assert nothing == [] and no_names == [] and len(no_labels) == 0
            with pytest.raises(errors.ImageIndexError):
                store.read_encoded([len(photo_files)])

    def test_kept_bytes_decode_as_pillow_does_on_every_read(
        self, backend, encodable, tmp_path, photo_files, photo_labels
    ):
        write_encoded(backend, tmp_path / "s", photo_files, photo_labels)
        with open_store(backend, tmp_path / "s") as store:
            assert store.lossless
            for image_id in range(len(photo_files)):
                image, label = store.read_one(image_id)
                assert label == photo_labels[image_id]
                assert_pixels_of([photo_files[image_id]], [image])
            order = np.random.default_rng(3).permutation(len(photo_files))
            images, labels = store.read_batch(order)
            assert_pixels_of([photo_files[i] for i in order], images)
            np.testing.assert_array_equal(labels, photo_labels[order])
            everything, labels = store.read_all()
            assert_pixels_of(photo_files, everything)
            np.testing.assert_array_equal(labels, photo_labels)
            iterated = list(store)
            assert_pixels_of(photo_files, [image for image, _ in iterated])
            assert [label for _, label in iterated] == photo_labels.tolist()

    def test_write_one_keeps_the_bytes_it_is_given(self, backend, encodable, tmp_path, photo_files):
        with open_store(backend, tmp_path / "s", "w", encoding="source") as store:
            for image_id, data in enumerate(photo_files[:3]):
                assert store.write_one(data, image_id) == image_id
            described = EncodedImages([photo_files[3]]).items[0]
            assert isinstance(described, EncodedImage)
            assert store.write_one(described, 3) == 3
            assert len(store) == 4
            assert_pixels_of([photo_files[3]], [store.read_one(3)[0]])  # read back before any flush
            assert store.read_encoded([1])[0] == [photo_files[1]]
        with open_store(backend, tmp_path / "s") as store:
            data, _, labels = store.read_encoded(range(4))
            assert data == photo_files[:4] and labels.tolist() == [0, 1, 2, 3]
            assert_pixels_of(photo_files[:4], store.read_all()[0])

    def test_appends_keep_the_encoding(self, backend, info, encodable, tmp_path, photo_files, photo_labels):
        if not info.appendable:
            pytest.skip(f"{backend} cannot append")
        write_encoded(backend, tmp_path / "s", photo_files[:3], photo_labels[:3])
        with open_store(backend, tmp_path / "s", "a") as store:  # no encoding given: the manifest's holds
            assert str(store.encoding) == "source"
            assert store.write_batch(EncodedImages(photo_files[3:]), photo_labels[3:]).tolist() == list(
                range(3, len(photo_files))
            )
            assert store.write_one(photo_files[0], 9) == len(photo_files)
        assert manifest_options(tmp_path / "s")["encoding"] == "source"
        with open_store(backend, tmp_path / "s") as store:
            data, _, labels = store.read_encoded(range(len(store)))
            assert data == photo_files + photo_files[:1]
            assert labels.tolist() == [*photo_labels.tolist(), 9]
            assert_pixels_of(photo_files + photo_files[:1], store.read_all()[0])

    def test_the_manifest_records_the_encoding_and_a_reopened_store_reads_the_same(
        self, backend, encodable, tmp_path, photo_files, photo_labels
    ):
        write_encoded(backend, tmp_path / "s", photo_files, photo_labels)
        assert manifest_options(tmp_path / "s")["encoding"] == "source"
        for _ in range(2):  # reopened read-only, twice: nothing about the encoding is lost
            with open_store(backend, tmp_path / "s", "r") as store:
                assert str(store.encoding) == "source"
                assert store.read_encoded(range(len(photo_files)))[0] == photo_files
                assert_pixels_of(photo_files, store.read_all()[0])
                with pytest.raises(errors.ReadOnlyStoreError):
                    store.write_one(photo_files[0], 0)

    def test_verification_compares_kept_bytes_by_hash(self, backend, encodable, tmp_path, photo_files, photo_labels):
        write_encoded(backend, tmp_path / "s", photo_files, photo_labels)
        verdict = verify_store(backend, tmp_path / "s", EncodedImages(photo_files), photo_labels)
        assert verdict.verified and verdict.checked == len(photo_files)
        other = file_bytes(pillow_pixels(photo_files[1]), "JPEG", quality=60)  # the same photo, other bytes
        changed = [*photo_files[:1], other, *photo_files[2:]]
        verdict = verify_store(backend, tmp_path / "s", EncodedImages(changed), photo_labels)
        assert not verdict.verified and "image 1's stored bytes" in verdict.error and "hashes differ" in verdict.error

    # -- refusals ---------------------------------------------------------------------------------

    def test_source_encoding_of_plain_arrays_is_refused_and_nothing_is_written(
        self, backend, info, encodable, tmp_path, cifar, photo_files
    ):
        images, labels = cifar
        with open_store(backend, tmp_path / "s", "w", encoding="source") as store:
            with pytest.raises(errors.EncodingError) as caught:
                store.write_batch(images[:5], labels[:5])
            message = str(caught.value)
            assert "no encoded files" in message and all(name in message for name in ("'png'", "'jpeg", "'webp'"))
            with pytest.raises(errors.EncodingError, match="'png'"):
                store.write_one(images[0], 1)
            assert len(store) == 0
            store.write_batch(EncodedImages(photo_files[:2]), [0, 1])  # the store still takes files
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == 2
            assert store.read_encoded([0, 1])[0] == photo_files[:2]

    def test_jpeg_encoding_refuses_rgba_before_anything_is_written(self, backend, info, encodable, tmp_path, cifar):
        images, labels = cifar
        with open_store(backend, tmp_path / "s", "w", encoding="jpeg:90") as store:
            store.write_batch(images[:4], labels[:4])
        mode = "a" if info.appendable else "w"
        with open_store(backend, tmp_path / "s", mode) as store:
            kept = len(store)
            with pytest.raises(errors.EncodingError, match="alpha.*'png'"):
                store.write_batch(with_alpha(images[4:7]), labels[4:7])
            with pytest.raises(errors.EncodingError, match="alpha"):
                store.write_one(with_alpha(images[7:8])[0], 1)
            with pytest.raises(errors.EncodingError, match="alpha"):
                store.write_one(file_bytes(with_alpha(images[8:9])[0], "PNG"), 1)
            assert len(store) == kept
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == kept
            for image_id in range(kept):
                assert psnr(images[image_id], store.read_one(image_id)[0]) >= PSNR_IMAGE_FLOOR

    # -- re-encodings -----------------------------------------------------------------------------

    def test_png_encoding_is_lossless(self, backend, encodable, tmp_path, cifar):
        images, labels = cifar
        gray = (images[5:8].astype(np.uint16).sum(axis=-1) // 3).astype(np.uint8)
        mixed = [images[0], np.ascontiguousarray(images[1][:13, :27]), *gray, with_alpha(images[8:10])[1]]
        with open_store(backend, tmp_path / "s", "w", encoding="png") as store:
            store.write_batch(mixed, labels[: len(mixed)])
            store.write_one(images[11], 4)
        expected = [*mixed, images[11]]
        with open_store(backend, tmp_path / "s") as store:
            assert store.lossless and manifest_options(tmp_path / "s")["encoding"] == "png"
            read, read_labels = store.read_all()
            assert len(read) == len(expected)
            for want, got in zip(expected, read):
                np.testing.assert_array_equal(got, want)
            assert read_labels.tolist() == [*labels[: len(mixed)].tolist(), 4]
            data, names, _ = store.read_encoded(range(len(expected)))
            assert set(names) == {"png"}
            for want, blob in zip(expected, data):  # the bytes are real PNG files
                np.testing.assert_array_equal(pillow_pixels(blob), want)

    def test_uniform_images_encoded_read_back_as_one_array(self, backend, encodable, tmp_path, cifar):
        images, labels = cifar
        with open_store(backend, tmp_path / "s", "w", encoding="png") as store:
            store.write_batch(images[:20], labels[:20])
        with open_store(backend, tmp_path / "s") as store:
            assert store.uniform_shape == (32, 32, 3)
            read, _ = store.read_all()
            assert isinstance(read, np.ndarray) and read.shape == (20, 32, 32, 3)
            np.testing.assert_array_equal(read, images[:20])
            out = np.zeros((3, 32, 32, 3), np.uint8)
            assert store.read_batch([3, 1, 2], out=out)[0] is out
            np.testing.assert_array_equal(out, images[[3, 1, 2]])

    def test_jpeg_encoding_is_lossy_within_the_psnr_floors(self, backend, encodable, tmp_path, cifar):
        images, labels = cifar
        with open_store(backend, tmp_path / "s", "w", encoding="jpeg:90") as store:
            store.write_batch(images[:30], labels[:30])
        with open_store(backend, tmp_path / "s") as store:
            assert not store.lossless
            assert manifest_options(tmp_path / "s")["encoding"] == "jpeg:90"
            read, read_labels = store.read_all()
            np.testing.assert_array_equal(read_labels, labels[:30])
            values = [psnr(want, got) for want, got in zip(images[:30], read)]
            assert min(values) >= PSNR_IMAGE_FLOOR and np.mean(values) >= PSNR_MEAN_FLOOR
            assert not np.array_equal(read, images[:30])  # lossy: something changed
            data, names, _ = store.read_encoded(range(30))
            assert set(names) == {"jpeg"}
            np.testing.assert_array_equal(pillow_pixels(data[0]), read[0])

    # -- resizing at write time -------------------------------------------------------------------

    def test_max_side_shrinks_and_never_enlarges(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        with open_store(backend, tmp_path / "small", "w", max_side=20) as store:
            store.write_batch(images[:6], labels[:6])
        with open_store(backend, tmp_path / "large", "w", max_side=64, shorter_side=200) as store:
            store.write_batch(images[:6], labels[:6])
        manifest = json.loads((tmp_path / "small" / MANIFEST_NAME).read_text())
        assert manifest["options"]["max_side"] == 20 and manifest["options"].get("shorter_side") is None
        assert manifest["backend_state"]["resize_filter"] == RESAMPLING_FILTER
        with open_store(backend, tmp_path / "small") as store:
            assert store.uniform_shape == (20, 20, 3)
            read, _ = store.read_all()
            for want, got in zip(images[:6], read):
                assert_same_image(info, bilinear(want, (20, 20)), got)
        with open_store(backend, tmp_path / "large") as store:
            read, _ = store.read_all()
            assert read.shape == (6, 32, 32, 3)
            for want, got in zip(images[:6], read):
                assert_same_image(info, want, got)

    def test_shorter_side_resizes_mixed_sizes(self, backend, info, tmp_path, cifar):
        if not info.variable_shapes:
            pytest.skip(f"{backend} holds one image size per store")
        images, labels = cifar
        crops = [np.ascontiguousarray(images[0][:32, :16]), images[1], np.ascontiguousarray(images[2][:8, :30])]
        with open_store(backend, tmp_path / "s", "w", shorter_side=12) as store:
            store.write_batch(crops, labels[:3])
            store.write_one(images[3], 5)
            assert store.read_one(3)[0].shape == (12, 12, 3)  # resized before it is flushed too
        expected_sizes = [(12, 24), (12, 12), (30, 8), (12, 12)]  # (width, height); the 8-px crop is kept
        with open_store(backend, tmp_path / "s") as store:
            read, read_labels = store.read_all()
            assert read_labels.tolist() == [*labels[:3].tolist(), 5]
            for want, size, got in zip([*crops, images[3]], expected_sizes, read):
                assert got.shape == (size[1], size[0], 3)
                assert_same_image(info, bilinear(want, size), got)
            assert store.backend_state.get("resize_filter") == RESAMPLING_FILTER

    def test_kept_bytes_with_shorter_side_keep_small_files_and_resize_large_ones(
        self, backend, encodable, tmp_path, photo_files, photo_labels
    ):
        side = 24
        write_encoded(backend, tmp_path / "s", photo_files, photo_labels, shorter_side=side)
        with open_store(backend, tmp_path / "one", "w", encoding="source", shorter_side=side) as store:
            store.write_one(photo_files[-1], 0)
            before_flush = store.read_one(0)[0]
        with open_store(backend, tmp_path / "one") as store:
            assert before_flush.shape == store.read_one(0)[0].shape
        with open_store(backend, tmp_path / "s") as store:
            assert not store.lossless  # resized photos were encoded again
            data, names, _ = store.read_encoded(range(len(photo_files)))
            images, _ = store.read_all()
            for position, (source, kept, name, image) in enumerate(zip(photo_files, data, names, images)):
                original = pillow_pixels(source)
                height, width = original.shape[:2]
                size = resized_size(width, height, shorter_side=side)
                assert image.shape == (size[1], size[0], *original.shape[2:]), position
                if size == (width, height):
                    assert kept == source, f"image {position} needed no resizing: its bytes are kept"
                    np.testing.assert_array_equal(image, original)
                else:
                    assert name == formats_of([source])[0], "a resized photo is encoded again in its own format"
                    assert psnr(bilinear(original, size), image) >= PSNR_IMAGE_FLOOR


def bilinear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's antialiased bilinear resize of ``pixels`` to ``size`` (width, height): the stated filter."""
    if size == (pixels.shape[1], pixels.shape[0]):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
