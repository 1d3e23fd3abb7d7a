"""The fixtures every conformance test takes: the backend under test, its info, images, a store.

A test class names its backend with the class attribute ``backend``; the fixture of the
same name hands it to each test, so a subclass may also override the fixture (to
parametrize it, say). The other hook is :meth:`ConformanceFixtures.backend_setup_code`, for
the tests that start a fresh Python interpreter.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import numpy as np
import pytest

from ..base import BackendInfo
from ..registry import backend_info, backend_module, open_store, store_class
from .support import LIBRARY_ROOT, sample_images, write_store


class ConformanceFixtures:
    """The fixtures, and the hooks a backend's test class may set or override."""

    backend: ClassVar[str | None] = None
    """The registered name of the backend under test; a subclass sets it."""

    @pytest.fixture(name="backend")
    def backend_fixture(self) -> str:
        if not self.backend:
            raise TypeError(f"{type(self).__name__} must name the backend it tests: set backend = 'name' on the class")
        return self.backend

    @pytest.fixture
    def info(self, backend) -> BackendInfo:
        return backend_info(backend)

    @pytest.fixture(scope="class")
    def cifar(self) -> tuple[np.ndarray, np.ndarray]:
        """Real CIFAR-10 images: lossy codecs behave on photos, not on noise."""
        return sample_images()

    @pytest.fixture
    def stored(self, backend, tmp_path, cifar):
        """A store of 12 images, open for appending."""
        images, labels = cifar
        write_store(backend, tmp_path / "s", images[:12], labels[:12])
        mode = "a" if backend_info(backend).appendable else "w"
        if mode == "w":
            pytest.skip(f"{backend} cannot append, so bad appends cannot be tried")
        with open_store(backend, tmp_path / "s", mode) as store:
            yield store

    def backend_setup_code(self, backend: str) -> str:
        """Python lines a fresh interpreter runs, after ``import storage``, to know ``backend`` too.

        The tests that kill a writing process run it in a new interpreter, which knows the
        built-in backends only. By default it imports the module that defines the
        backend's class (from where this process imported it) and registers that class;
        a backend registered when its package is imported can return ``"import mypackage"``.
        """
        if backend_module(backend).startswith("storage.formats."):
            return ""
        cls = store_class(backend)
        root = _import_root(sys.modules[cls.__module__])
        return (
            f"sys.path.insert(0, {str(root)!r})\n"
            f"import {cls.__module__} as backend_module\n"
            f"storage.register_backend(backend_module.{cls.__qualname__})\n"
        )

    def fresh_interpreter_script(self, backend: str, body: str) -> str:
        """``body`` preceded by the imports that make ``storage`` and ``backend`` usable in a new interpreter."""
        preamble = f"import sys\nsys.path.insert(0, {str(LIBRARY_ROOT)!r})\nimport storage\n"
        return preamble + self.backend_setup_code(backend) + body


def _import_root(module: ModuleType) -> Path:
    """The ``sys.path`` folder ``module`` was imported from (``a/b/c.py`` for ``b.c`` gives ``a``)."""
    path = Path(module.__file__ or "").resolve()
    depth = module.__name__.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.parents[depth]
