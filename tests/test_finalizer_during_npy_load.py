"""A finalizer that raises while NumPy parses a ``.npy`` header must not fail the test that loads it.

Garbage collection can run a ``__del__`` in the middle of ``np.load``'s
``ast.literal_eval``; pytest's hook for the exception used to format its traceback
right there, with a nested ``ast.parse``, and the load failed with "AST constructor
recursion depth mismatch" (one CI run lost a round-trip test that way). The conftest's
``DeferredUnraisableHook`` formats it later; this test fails without it.
"""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest


class RaisesWhenCollected:
    """A cycle whose finalizer raises, with a traceback that Python 3.11 marks with carets."""

    zero = 0

    def __del__(self) -> None:
        self.ratio = 1 / self.zero


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_npy_headers_parse_while_finalizers_raise():
    saved = io.BytesIO()
    np.save(saved, np.arange(12, dtype=np.uint8).reshape(3, 4))
    thresholds = gc.get_threshold()
    loaded = []
    try:
        # Each first-generation threshold moves the collection to a different point of the
        # load; a few of them land inside the header's parse.
        for threshold in range(2, 40):
            gc.collect()
            gc.set_threshold(threshold, 1000, 1000)
            for _ in range(3):
                garbage = RaisesWhenCollected()
                garbage.cycle = garbage
                del garbage
                loaded.append(np.load(io.BytesIO(saved.getvalue())))
    finally:
        gc.set_threshold(*thresholds)
        gc.collect()
    assert len(loaded) == 38 * 3
    assert all(array.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]] for array in loaded)
