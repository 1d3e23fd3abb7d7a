"""The Run page with an image folder of one's own: bad files named beside the data source, skipped on request.

Real folders under the test's own data root (``IMAGE_STORAGE_LAB_ROOTS``, see
``test_app_pages.isolated``): small PNGs written with Pillow, and empty ``.png`` files,
the most common bad file (an interrupted copy). The run that skips them is a real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from test_app_pages import (
    RUN,
    assert_clean,
    button,
    errors,
    isolated,  # noqa: F401 (the autouse fixture: a results database and roots of the test's own)
    page,
    run_view,
    texts,
    wait_for_run,
)

from dashboard import image_folders, state

BACKENDS = ["png", "lmdb", "hdf5"]


def image_folder(root: Path, images: int = 6, empty: int = 0) -> Path:
    """``root/<cat|dog>/<n>.png``: ``images`` real 8x8 PNGs over two classes, and ``empty`` empty ``.png`` files."""
    for index in range(images):
        target = root / ("cat" if index % 2 else "dog") / f"{index:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), index * 7 % 256, np.uint8)).save(target)
    for index in range(empty):
        target = root / "cat" / f"empty-{index:02d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    return root


def checked(folder: Path, **params: str):
    """The Run page on ``folder`` after **Check folder**, as someone who typed it in would see it."""
    at = page(RUN, source=str(folder), formats="png", **params)
    assert_clean(at)
    button(at, "Check folder").click().run()
    assert_clean(at)
    return at


def in_order(node):
    """The page's elements in the order they are drawn, containers opened."""
    children = getattr(node, "children", None)
    if isinstance(children, dict):
        for index in sorted(children):
            yield from in_order(children[index])
    else:
        yield node


def position(at, kind: str, key: str | None = None, containing: str = "") -> int:
    for index, node in enumerate(in_order(at.main)):
        if node.type == kind and (key is None or getattr(node, "key", None) == key):
            if containing in str(getattr(node, "value", "")):
                return index
    raise AssertionError(f"no {kind} {key or ''} containing {containing!r} on the page")


def test_an_empty_png_is_an_error_of_its_own_beside_the_data_source(tmp_path):
    folder = image_folder(tmp_path / "photos", empty=1)
    at = checked(folder)
    [error] = errors(at)
    assert "Other counts" not in error
    assert "1 file in" in error and "cat/empty-00.png: is empty (0 bytes)" in error
    assert "Skip bad files" in error
    # right under the data source, above the controls that follow it
    assert (
        position(at, "selectbox", "run_source_kind") < position(at, "error") < position(at, "selectbox", "run_encoding")
    )
    assert button(at, "Run benchmark").disabled
    assert not button(at, "Check folder").disabled  # to check again once the file is fixed or skipped


def test_every_bad_file_is_named_up_to_ten_then_how_many_more(tmp_path):
    folder = image_folder(tmp_path / "photos", empty=12)
    [error] = errors(checked(folder))
    assert "12 files in" in error
    named = [f"cat/empty-{index:02d}.png" for index in range(12)]
    assert all(name in error for name in named[:10])
    assert not any(name in error for name in named[10:])
    assert "and 2 more" in error


def test_bad_files_lists_every_one_with_its_problem(tmp_path):
    folder = image_folder(tmp_path / "photos", empty=3)
    (folder / "dog" / "notes.png").write_text("not an image")
    found = image_folders.bad_files(folder)
    assert [file.name for file in found] == [
        "cat/empty-00.png",
        "cat/empty-01.png",
        "cat/empty-02.png",
        "dog/notes.png",
    ]
    assert found[0].problem.startswith("is empty (0 bytes)")
    assert "not an image Pillow can read" in found[3].problem
    assert image_folders.bad_files(image_folder(tmp_path / "clean")) == []


def test_a_folder_of_bad_files_only_still_names_them(tmp_path):
    folder = image_folder(tmp_path / "photos", images=0, empty=2)
    assert [file.name for file in image_folders.bad_files(folder)] == ["cat/empty-00.png", "cat/empty-01.png"]


def test_skip_bad_files_leaves_them_out_names_them_and_reaches_the_run(tmp_path):
    folder = image_folder(tmp_path / "photos", empty=2)
    at = checked(folder, max_count="10", ops="write_batch", repeats="1")
    assert errors(at) and button(at, "Run benchmark").disabled
    at.checkbox(key="run_skip_bad").check().run()
    button(at, "Check folder").click().run()
    assert_clean(at)
    assert not errors(at)
    text = texts(at)
    assert "2 files that cannot be read are left out" in text
    assert "cat/empty-00.png is empty (0 bytes)" in text and "cat/empty-01.png" in text
    assert "6 images, 2 classes" in text
    assert at.query_params["skip_bad"] == "1"
    button(at, "Run benchmark").click().run()
    assert_clean(at)
    wait_for_run(at)
    view = run_view(at)
    assert view.record.status == "finished"
    assert view.record.parameters["skip_bad"] is True
    assert view.record.parameters["source"] == str(folder.resolve())


def test_a_link_with_skip_bad_ticks_the_box_and_a_cifar_source_never_skips():
    controls, notes = state.parse_run_params({"source": "/data/photos", "skip_bad": "1"}, BACKENDS)
    assert notes == [] and controls.skip_bad and controls.skips_bad_files
    assert state.run_widget_values(controls)[state.RUN_WIDGETS["skip_bad"]] is True
    assert state.controls_from_widgets(state.run_widget_values(controls)) == controls
    assert state.run_params(controls)["skip_bad"] == "1"
    assert state.to_experiment(controls, "/tmp/runs").skip_bad is True
    assert state.params_of_run({"source": "/data/photos", "skip_bad": True})["skip_bad"] == "1"
    cifar = state.RunControls(source="sample", skip_bad=True)  # ticked, then the source changed
    assert not cifar.skips_bad_files and "skip_bad" not in state.run_params(cifar)
    assert state.to_experiment(cifar, "/tmp/runs").skip_bad is False
    assert not state.parse_run_params({"source": "/data/photos"}, BACKENDS)[0].skip_bad


def test_the_press_run_hint_shows_only_when_the_button_can_be_pressed():
    at = page(RUN, source="sample", max_count="10")
    assert_clean(at)
    assert not button(at, "Run benchmark").disabled
    assert "Press **Run benchmark**" in texts(at)
    at.multiselect(key="run_formats").set_value([]).run()
    assert_clean(at)
    assert button(at, "Run benchmark").disabled
    assert "Press **Run benchmark**" not in texts(at)


def test_a_folder_smaller_than_a_count_says_its_images_are_repeated(tmp_path):
    folder = image_folder(tmp_path / "photos", images=6)
    at = checked(folder, max_count="100")
    assert_clean(at)
    note = next(caption.value for caption in at.caption if "repeated" in caption.value)
    assert "holds 6 images" in texts(at) and "10, 100 images" in texts(at)
    assert position(at, "selectbox", "run_source_kind") < position(at, "caption", containing=note)
    assert not any("repeated" in caption.value for caption in checked(folder, max_count="1").caption)


def test_the_repeat_note_names_only_the_counts_above_the_folder():
    assert image_folders.repeat_note(300, [1, 10, 100]) is None
    note = image_folders.repeat_note(300, [100, 300, 1_000, 10_000])
    assert note.startswith("The folder holds 300 images: for 1,000, 10,000 images they are repeated")
