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
from storage.backends import BUILTIN_BACKENDS

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


def test_a_backend_module_is_imported_on_first_use_only():
    code = (
        "import json, sys, storage\n"
        "before = 'storage.backends.zarr_store' in sys.modules\n"
        "cls = storage.store_class('zarr')\n"
        "print(json.dumps([before, 'storage.backends.zarr_store' in sys.modules, 'zarr' in sys.modules,"
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
