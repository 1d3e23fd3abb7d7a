"""The results history: every run and every measurement in one embedded SQLite file.

The file (the project's ``data/results.sqlite`` by default, see ``storage.bench.places``) is opened in WAL mode and each measurement
is committed as soon as it is taken, so a run that is killed midway keeps what it had
finished. A run records the process that runs it (pid, host, process start time); when a
database is opened, runs still marked ``running`` whose process is gone are marked
``interrupted``. Runs export to JSON and CSV, and JSON imports back, so results brought
from another machine can be compared with local ones.

A run in progress also keeps its live state here, keyed by its id, so that any page or
process can follow it: where it is (``run_progress``: step, fraction of the estimated
time, what it measures now), whether someone asked it to stop, and a few images read back
from each store (``previews``, small PNGs). Every measurement records when it was stored
(``recorded_at``, seconds since the epoch), so how soon a page showed it can be checked.

:class:`ResultsDB` is the one class to use. It is put together from one class per job,
each in its own module: ``connection`` (the file, its schema and migrations, and
:meth:`~connection.ResultsConnection.transaction`), ``history`` (runs and measurements),
``progress`` (live state, stop requests, runs whose process is gone), ``previews``,
``exchange`` (export and import) and ``schema`` (what a results file may hold, checked on
export and import alike).
"""

from __future__ import annotations

import os

from .. import places
from .connection import DEFAULT_DB_PATH, SCHEMA_VERSION, now_iso
from .exchange import EXPORT_FORMAT, RunExchange
from .history import STATUSES, RunNotFoundError, RunRecord
from .previews import PREVIEW_MAX_SIDE, RunPreviews
from .progress import LiveProgress, LiveState, RunProgress, Watcher
from .schema import InvalidResultsError, printable

__all__ = [
    "DEFAULT_DB_PATH",
    "EXPORT_FORMAT",
    "InvalidResultsError",
    "LiveState",
    "PREVIEW_MAX_SIDE",
    "SCHEMA_VERSION",
    "STATUSES",
    "Watcher",
    "ResultsDB",
    "RunNotFoundError",
    "RunProgress",
    "RunRecord",
    "now_iso",
    "printable",
]


class ResultsDB(RunExchange, RunPreviews, LiveProgress):
    """The history of runs and their measurements in one SQLite file.

    Use it as a context manager. One object may be shared between threads (a run writes
    from a worker thread while a UI reads): every call holds a lock.

    Args:
        path: the SQLite file; created (with its folder) if missing.
        mark_stale: mark runs left ``running`` by a process that is gone as ``interrupted``.

    Raises:
        CorruptDataError: ``path`` exists but is not a results database.
        StoreNotWritableError: the file cannot be created or opened.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, mark_stale: bool = True) -> None:
        super().__init__(places.default_db_path() if path is None else path)
        if mark_stale:
            self.mark_stale_runs()
