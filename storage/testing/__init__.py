"""The conformance suite every backend must pass, shipped so that a backend written elsewhere gets it too.

A backend's test file subclasses :class:`StoreConformanceTests` and names the registered
backend; pytest then runs every test of the suite on it::

    # tests/test_my_store.py
    import storage
    from storage.testing import StoreConformanceTests

    from mypackage.my_store import MyStore

    storage.register_backend(MyStore)


    class TestMyStore(StoreConformanceTests):
        backend = "my-format"

Where the backend's :class:`~storage.base.BackendInfo` says it lacks a capability (lossy,
no variable sizes, no appends, fewer channels), the matching test checks the clear error
instead, or skips visibly with the reason. The tests read the CIFAR-10 sample bundled with
the project (override the ``cifar`` fixture to use other images); the kept-bytes cases of
backends that take an ``encoding`` also write real JPEG and PNG files, some of them bundled
ImageNet photos (override ``photo_files``). Those that run other processes (two writers, a
reader during a write, a killed writer, damaged stores read in a fresh interpreter) start
one, which :meth:`~storage.testing.fixtures.ConformanceFixtures.backend_setup_code` tells
how to find the backend.

This package needs pytest and hypothesis; only test code imports it (``import storage``
does not). ``tests/test_conformance.py`` runs it over every registered, available backend.
"""

from __future__ import annotations

from .encodings import EncodingTests
from .integrity import IntegrityTests
from .interruptions import InterruptionTests
from .processes import ProcessTests
from .reads import ReadTests
from .refusals import RefusalTests
from .round_trips import RoundTripTests


class StoreConformanceTests(
    RoundTripTests, ReadTests, RefusalTests, InterruptionTests, EncodingTests, ProcessTests, IntegrityTests
):
    """Every conformance test, for the backend named by the class attribute ``backend``.

    Not collected itself (its name does not start with ``Test``); a subclass that sets
    ``backend`` is.
    """


__all__ = [
    "EncodingTests",
    "IntegrityTests",
    "InterruptionTests",
    "ProcessTests",
    "ReadTests",
    "RefusalTests",
    "RoundTripTests",
    "StoreConformanceTests",
]
