"""Where the dashboard keeps its results database and run folders.

Both default to the project's ``data/`` folder and can be moved with environment
variables (the tests point them into a temporary folder):

* ``IMAGE_STORAGE_LAB_DB``: the results database (default ``data/results.sqlite``);
* ``IMAGE_STORAGE_LAB_RUNS``: the folder each run makes its own folder in (default ``data/runs``).

Both are read at every call, so a launcher or a test can change them at any time, and the
command line follows the same two (``storage.bench.places``).
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.bench import places

PROJECT_ROOT = places.PROJECT_ROOT
DB_ENV = places.DB_ENV
RUNS_ENV = places.RUNS_ENV


def db_path() -> Path:
    """The results database file (the command line's default too)."""
    return places.default_db_path()


def runs_dir() -> Path:
    """The folder runs write their stores in (each run in ``<runs_dir>/<run id>/``)."""
    return places.default_runs_dir()


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the project when it lies inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
