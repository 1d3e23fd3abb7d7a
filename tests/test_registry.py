"""The registry: lazy imports, and a backend whose library fails is reported, not fatal."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import storage
from storage import cli, registry
from storage.errors import UnknownBackendError
from storage.formats import BUILTIN_BACKENDS

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAVY_LIBRARIES = ("zarr", "pyarrow", "webdataset", "hdf5plugin", "torch", "h5py", "lmdb", "PIL", "dask", "distributed")


def fresh_interpreter(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout


def test_import_storage_loads_no_format_library():
    code = (
        "import json, sys, storage\n"
        "storage.backends(available_only=False); storage.backend_info\n"
        f"print(json.dumps([name for name in {list(HEAVY_LIBRARIES)!r} if name in sys.modules]))"
    )
    assert json.loads(fresh_interpreter(code)) == []


def test_the_registered_info_of_every_backend_imports_none_of_them():
    """What the home page lists (its first draw waited seconds for the peers' libraries to import)."""
    code = (
        "import json, sys\n"
        "from storage import registry\n"
        "labels = [registry.registered_info(name).label for name in registry.backends(available_only=False)]\n"
        "heavy = ['streaming', 'litdata', 'lance', 'ffcv', 'datasets', *" + repr(list(HEAVY_LIBRARIES)) + "]\n"
        "print(json.dumps([labels, [name for name in heavy if name in sys.modules],"
        " [name for name in sys.modules if name.startswith('storage.formats.')]]))"
    )
    labels, imported, backend_modules = json.loads(fresh_interpreter(code))
    assert labels == [backend.info.label for backend in BUILTIN_BACKENDS] and "LMDB" in labels
    assert imported == [] and backend_modules == []


def test_a_backend_module_is_imported_on_first_use_only():
    code = (
        "import json, sys, storage\n"
        "before = 'storage.formats.zarr_store' in sys.modules\n"
        "cls = storage.store_class('zarr')\n"
        "print(json.dumps([before, 'storage.formats.zarr_store' in sys.modules, 'zarr' in sys.modules,"
        " 'h5py' in sys.modules, cls.__name__]))"
    )
    assert json.loads(fresh_interpreter(code)) == [False, True, True, False, "ZarrStore"]


def test_store_classes_are_still_reachable_by_their_public_names():
    assert storage.LmdbStore is storage.store_class("lmdb")
    assert storage.Hdf5BloscStore.info.name == "hdf5-blosc"
    with pytest.raises(AttributeError, match="NoSuchStore"):
        storage.NoSuchStore  # noqa: B018


def test_every_builtin_class_takes_its_info_from_the_catalog():
    for builtin in BUILTIN_BACKENDS:
        assert storage.store_class(builtin.info.name).info is builtin.info
        assert storage.store_class(builtin.info.name).__name__ == builtin.class_name


def test_a_backend_that_fails_to_import_is_listed_unavailable_with_the_reason(broken_backend, tmp_path):
    assert "broken-format" in storage.backends(available_only=False)
    assert "broken-format" not in storage.backends()
    info = storage.backend_info("broken-format")
    assert not info.available
    assert "nosuchlib_for_image_storage_lab" in info.unavailable_reason
    assert "pip install nosuchlib-for-image-storage-lab" in info.unavailable_reason
    with pytest.raises(storage.BackendUnavailableError, match="broken-format.*unavailable.*nosuchlib"):
        storage.open_store("broken-format", tmp_path / "never", "w")
    assert not (tmp_path / "never").exists()

    images = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
    for name in ("lmdb", "hdf5", "png"):
        with storage.open_store(name, tmp_path / name, "w") as store:
            store.write_batch(images, [0, 1, 2, 3])
        with storage.open_store(name, tmp_path / name) as store:
            np.testing.assert_array_equal(store.read_all()[0], images)


def test_the_cli_lists_an_unavailable_backend_with_its_reason(broken_backend):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["backends"]) == 0
    lines = out.getvalue().splitlines()
    row = next(line for line in lines if line.startswith("broken-format "))
    assert "unavailable" in row
    assert any(line.startswith("unavailable broken-format:") and "nosuchlib" in line for line in lines)
    assert any(line.startswith("lmdb ") and " available " in line for line in lines)


def test_the_cli_refuses_an_unavailable_backend_by_name(broken_backend, capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--backends", "lmdb,broken-format", "--counts", "1"])
    assert "broken-format' is unavailable here" in capsys.readouterr().err


def test_registering_needs_info_for_a_lazy_backend_and_refuses_a_second_name():
    with pytest.raises(TypeError, match="info="):
        storage.register_backend("somewhere:SomeStore")
    with pytest.raises(ValueError, match="already registered"):
        storage.register_backend("somewhere:OtherLmdb", storage.backend_info("lmdb"))
    assert storage.register_backend(storage.LmdbStore) is storage.LmdbStore  # the same class again is fine
    assert registry.backends(available_only=False).count("lmdb") == 1


def test_the_store_and_the_registry_refuse_images_by_one_rule(tmp_path):
    rgba = np.zeros((2, 4, 4, 4), np.uint8)
    mixed = [np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)]
    for backend, images, words in (("jpeg", rgba, "4 channel"), ("zarr", mixed, "one image (shape|size) per store")):
        with pytest.raises(storage.ImageShapeError, match=words):
            registry.check_backend_takes(backend, images, "under test")
        with storage.open_store(backend, tmp_path / backend, "w") as store:
            with pytest.raises(storage.ImageShapeError, match=words):
                store.write_batch(images, [0, 1])
    zarr, jpeg = storage.backend_info("zarr"), storage.backend_info("jpeg")
    assert zarr.shape_refusal([(4, 4, 3)], store_shape=(4, 4, 3)) is None
    assert zarr.shape_refusal([(4, 4, 3)], store_shape=(5, 4, 3)).shapes == ((5, 4, 3), (4, 4, 3))
    assert jpeg.shape_refusal([(4, 4), (4, 4, 4), (2, 2, 4), (3, 3, 1)]).channels == {4: (4, 4, 4)}
    assert storage.backend_info("png").shape_refusal([(4, 4, 3), (5, 4, 1)]) is None


def test_a_backend_that_pip_alone_cannot_install_names_its_own_install_story(tmp_path, monkeypatch):
    """FFCV builds against system libraries: its message says so instead of "pip install ffcv"."""
    (tmp_path / "needs_system_libraries.py").write_text("import nosuchlib_for_image_storage_lab\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    info = storage.BackendInfo(name="system-format", label="System format", description="Needs system libraries.")
    storage.register_backend(
        "needs_system_libraries:Store",
        info,
        requires=("nosuchlib",),
        install="apt-get install -y libnosuch-dev first, then python3 -m pip install -r requirements-nosuch.txt",
    )
    try:
        reason = storage.backend_info("system-format").unavailable_reason
    finally:
        storage.unregister_backend("system-format")
        sys.modules.pop("needs_system_libraries", None)
    assert "No module named 'nosuchlib_for_image_storage_lab'" in reason
    assert "apt-get install -y libnosuch-dev first" in reason and "pip install nosuchlib" not in reason


def test_a_name_in_the_wrong_case_or_misspelt_gets_a_suggestion() -> None:
    with pytest.raises(UnknownBackendError, match="did you mean 'lmdb'"):
        registry.backend_info("LMDB")
    with pytest.raises(UnknownBackendError, match="did you mean 'hdf5'"):
        registry.store_class("hdf")
    with pytest.raises(UnknownBackendError) as refused:
        registry.store_class("leveldb")
    assert "did you mean" not in str(refused.value) and "registered backends are: png" in str(refused.value)
