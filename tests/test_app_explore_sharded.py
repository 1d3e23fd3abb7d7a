"""The Explore page opens a sharded store (a folder with ``sharded.json``) as ``storage.open_store`` does.

The stores are real: written with ``storage.open_sharded`` into the test's own data root
(``IMAGE_STORAGE_LAB_ROOTS``, see ``test_app_pages.isolated``), three shards of LMDB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_app_pages import (
    EXPLORE,
    assert_clean,
    button,
    errors,
    isolated,  # noqa: F401 (the autouse fixture: a results database and roots of the test's own)
    page,
    shown,
)

import storage

IMAGES = 10
SHARD_IMAGES = 4  # three shards: 4, 4 and 2 images


def sharded_store(path: Path) -> Path:
    """``IMAGES`` 8x8 images, image ``i`` filled with ``i`` and labelled ``i % 3``, in LMDB shards."""
    images = np.stack([np.full((8, 8, 3), index, np.uint8) for index in range(IMAGES)])
    with storage.open_sharded(path, "w", backend="lmdb", shard_images=SHARD_IMAGES) as writer:
        writer.write_batch(images, [index % 3 for index in range(IMAGES)])
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    return sharded_store(tmp_path / "sharded")


def captions(at) -> list[str]:
    return [shown(image.proto.imgs[0].caption) for image in at.image]


def assert_shows_the_sharded_store(at) -> None:
    assert_clean(at)
    assert not at.error, errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == str(IMAGES) and metrics["Format"] == "LMDB, 3 shard(s)"
    assert captions(at)[0].startswith("#7 label 1")  # read by id, from the second shard
    assert len(captions(at)) == 1 + IMAGES  # one page holds every image, across the three shards


def test_a_link_to_a_sharded_store_opens_it_with_or_without_its_shards_backend(store):
    assert_shows_the_sharded_store(page(EXPLORE, path=str(store), id="7"))
    assert_shows_the_sharded_store(page(EXPLORE, path=str(store), backend="lmdb", id="7"))


def test_a_typed_sharded_folder_opens_as_a_sharded_store(store):
    at = page(EXPLORE)
    assert at.selectbox(key="explore_backend").value is None  # no backend is assumed before a folder says
    at.text_input(key="explore_path").set_value(str(store)).run()
    button(at, "Open store").click().run()
    at.number_input(key="explore_id").set_value(7).run()
    assert_shows_the_sharded_store(at)
    assert "backend" not in at.query_params and at.query_params["path"] == str(store)


def test_a_sharded_store_asked_for_as_another_backend_names_its_shards(store):
    at = page(EXPLORE, path=str(store), backend="hdf5")
    assert_clean(at)
    [error] = errors(at)
    assert "sharded store of 'lmdb' shards" in error
    assert "no store.json" not in error and "mode 'w'" not in error


def test_errors_name_no_backend_when_none_was_chosen(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "nothing-here"):
        at = page(EXPLORE, path=str(folder))
        assert_clean(at)
        [error] = errors(at)
        assert "png" not in error.lower() and "no image store" in error


def test_a_sharded_store_is_found_on_disk_once_and_opens_from_the_list(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("IMAGE_STORAGE_LAB_DATA", str(data))
    store = sharded_store(data / "stores" / "cifar-sharded")
    at = page(EXPLORE)
    assert_clean(at)
    found = [option for option in at.selectbox(key="explore_found").options if "images" in option]
    assert found == [f"Sharded store · {IMAGES} images · {store}"]  # its shards are not listed apart
    at.selectbox(key="explore_found").set_value(str(store)).run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Format"] == "LMDB, 3 shard(s)"
