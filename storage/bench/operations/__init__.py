"""The operations a run measures, one module per family, behind one ``name -> measure`` table.

    measurement = MEASURES[operation](run, cell, cache, workers)

* :mod:`.write`: ``write_batch`` and ``write_one`` (measured once, as "warm"), the store
  written for the reads when ``write_batch`` is not measured, and the previews;
* :mod:`.read`: ``read_all``, ``read_random`` and ``read_one``, in each cache state;
* :mod:`.object_storage`: ``upload``, ``first_epoch``, ``later_epoch`` and ``remote_random``,
  the store at the run's ``location`` in object storage (imported, with boto3, when one runs);
* :mod:`.loader`: ``loader``, one shuffled epoch through a PyTorch DataLoader per worker
  count, and its in-memory ceiling. It imports torch, so it is imported only when a
  loader measurement runs (through :func:`_measure_loader`).

Every measure function takes the same four arguments, the run's state, the cell (one
backend at one count), the cache state and the DataLoader worker count (used by the
loader only), and returns one :class:`~storage.bench.Measurement`, not yet recorded.
"""

from __future__ import annotations

from collections.abc import Callable

from ..events import Measurement
from ..run_state import Cell, Run
from . import read, write

Measure = Callable[[Run, Cell, str, int | None], Measurement]


def _measure_loader(run: Run, cell: Cell, cache: str, workers: int | None) -> Measurement:
    """The loader's measure function, importing torch (with :mod:`.loader`) only when it first runs."""
    from .loader import measure_loader

    return measure_loader(run, cell, cache, workers)


def _object_storage(name: str) -> Measure:
    """An object-storage operation's measure function, importing boto3 (with its module) only when it runs."""

    def measure(run: Run, cell: Cell, cache: str, workers: int | None) -> Measurement:
        from . import object_storage

        return getattr(object_storage, f"measure_{name}")(run, cell, cache, workers)

    return measure


MEASURES: dict[str, Measure] = {
    "write_batch": write.measure_write_batch,
    "write_one": write.measure_write_one,
    "read_all": read.measure_read_all,
    "read_random": read.measure_read_random,
    "read_one": read.measure_read_one,
    "loader": _measure_loader,
    "upload": _object_storage("upload"),
    "first_epoch": _object_storage("first_epoch"),
    "later_epoch": _object_storage("later_epoch"),
    "remote_random": _object_storage("remote_random"),
}

__all__ = ["MEASURES", "Measure"]
