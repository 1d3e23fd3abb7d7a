"""Fixtures shared by several test files."""

from __future__ import annotations

import sys

import pytest

import storage

BROKEN_MODULE = """
import numpy
import nosuchlib_for_image_storage_lab  # the format library this backend needs is not installed

from storage import ImageStore
"""


@pytest.fixture
def broken_backend(tmp_path, monkeypatch):
    """A registered backend whose module imports a library that is not installed."""
    (tmp_path / "broken_format_store.py").write_text(BROKEN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    info = storage.BackendInfo(name="broken-format", label="Broken format", description="Needs a missing library.")
    storage.register_backend("broken_format_store:BrokenStore", info, requires=("nosuchlib-for-image-storage-lab",))
    yield info
    storage.unregister_backend("broken-format")
    sys.modules.pop("broken_format_store", None)


@pytest.fixture(autouse=True)
def restore_main_module():
    """Put back the ``__main__`` module after each test.

    Streamlit's AppTest runs a page as ``__main__`` and leaves it there; a process started
    with ``spawn`` afterwards (a DataLoader's worker) would run that page again on start.
    """
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
