"""The package's public names: ``__all__`` is sorted, complete against the catalog, and every name resolves."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from storage import errors, registry
from storage.formats import BUILTIN_BACKENDS

REPO_ROOT = Path(__file__).resolve().parent.parent


def reexported_names() -> set[str]:
    """The names ``storage/__init__.py`` imports from its own modules at the top (``from .base import ImageStore``)."""
    tree = ast.parse(Path(storage.__file__).read_text())
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }


def error_classes() -> set[str]:
    return {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.StorageError)
    }


BUILTIN_CLASSES = {builtin.class_name for builtin in BUILTIN_BACKENDS}


def test_all_is_sorted_without_repeats():
    assert storage.__all__ == sorted(set(storage.__all__))


def test_every_builtin_store_class_and_every_error_is_public():
    assert BUILTIN_CLASSES <= set(storage.__all__)
    assert error_classes() <= set(storage.__all__)


def test_all_is_the_catalog_and_the_reexports_nothing_else():
    expected = (
        BUILTIN_CLASSES
        | error_classes()
        | reexported_names()
        | set(storage._SHARDED_NAMES)
        | set(storage._OPENER_NAMES)
    )
    assert set(storage.__all__) == expected


def test_every_public_name_resolves():
    unavailable = {b.class_name for b in BUILTIN_BACKENDS if not registry.backend_info(b.info.name).available}
    for name in storage.__all__:
        if name in unavailable:
            with pytest.raises(storage.BackendUnavailableError):
                getattr(storage, name)
        else:
            assert getattr(storage, name) is not None, name


def test_import_storage_imports_neither_the_conformance_suite_nor_pytest():
    code = "import json, sys, storage\nprint(json.dumps(['storage.testing' in sys.modules, 'pytest' in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == [False, False]
