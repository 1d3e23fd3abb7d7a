"""The conformance suite (:mod:`storage.testing`) over every registered, available backend.

One test class per backend is made here at collection time from ``storage.backends()``,
so a backend is tested the day it is registered, with no new test code. Where a backend
declares that it lacks a capability (lossy, no variable sizes, no appends, fewer
channels), the matching test checks the clear error instead, or skips visibly with the
reason.
"""

from __future__ import annotations

import pytest

import storage
from storage.testing import StoreConformanceTests

BACKENDS = storage.backends()
WRITER_HOOKS = ("_create", "_open", "_close", "_write_chunk", "_commit", "_rollback", "_stored_count")
"""What the process cases (writers, readers during a write, kills) exercise besides the shared lifecycle."""


def same_writer_code_as(backend: str) -> str | None:
    """The registered backend whose class ``backend``'s extends without overriding a writer hook, if any.

    ``jpeg`` and ``webp`` are PNG files with another codec, ``hdf5-gzip`` is HDF5 with a
    filter: they open, write, commit and roll back with that backend's code, so the
    processes cases (seconds each) run there once, not again for each codec.
    """
    cls = storage.store_class(backend)
    for other in BACKENDS:
        base = storage.store_class(other)
        if base is cls or base not in cls.__mro__:
            continue
        between = cls.__mro__[: cls.__mro__.index(base)]
        if not any(hook in klass.__dict__ for klass in between for hook in WRITER_HOOKS):
            return other
    return None


def conformance_class(backend: str) -> type[StoreConformanceTests]:
    """``TestLmdbStore``: the suite for one backend, named after its store class."""
    name = f"Test{storage.store_class(backend).__name__}"
    attributes = {"backend": backend, "same_process_code_as": same_writer_code_as(backend), "__module__": __name__}
    return type(name, (StoreConformanceTests,), attributes)


for _backend in BACKENDS:
    _suite = conformance_class(_backend)
    assert _suite.__name__ not in globals(), f"two backends share the class name {_suite.__name__}"
    globals()[_suite.__name__] = _suite


def test_every_backend_gets_the_suite():
    tested = {cls.backend for cls in globals().values() if isinstance(cls, type) and cls.__name__.startswith("Test")}
    assert tested == set(BACKENDS)


def test_only_codec_variants_share_the_process_cases():
    shared = {backend: same_writer_code_as(backend) for backend in BACKENDS if same_writer_code_as(backend)}
    assert shared == {
        "jpeg": "png",
        "webp": "png",
        "webp-lossy": "png",
        "lmdb-png": "lmdb",
        "hdf5-gzip": "hdf5",
        "hdf5-lzf": "hdf5",
    }


def test_unknown_backend_lists_the_valid_ones(tmp_path):
    with pytest.raises(storage.UnknownBackendError) as caught:
        storage.open_store("tiff-in-a-zip", tmp_path / "s", "w")
    assert isinstance(caught.value, KeyError)
    message = str(caught.value)
    assert "tiff-in-a-zip" in message and all(name in message for name in BACKENDS)
    with pytest.raises(storage.UnknownBackendError):
        storage.backend_info("nope")
