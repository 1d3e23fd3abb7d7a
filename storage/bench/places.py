"""Where results and runs go when nobody says: one setting for the command line, the library and the dashboard.

README promises that the command line and the dashboard share one results database. A
relative ``data/results.sqlite`` broke that promise for a command run from any other
folder: it made a ``data/`` wherever it ran, and ignored the setting the dashboard reads.
So both defaults are the project's own ``data/`` folder, and both follow the same
environment variables:

* ``IMAGE_STORAGE_LAB_DB``: the results database (default ``data/results.sqlite`` of the project);
* ``IMAGE_STORAGE_LAB_RUNS``: the folder each run makes its own folder in (default ``data/runs``).

Both are read at every call, so a launcher or a test can change them at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DB_ENV = "IMAGE_STORAGE_LAB_DB"
RUNS_ENV = "IMAGE_STORAGE_LAB_RUNS"


def default_db_path() -> Path:
    """The results database: ``$IMAGE_STORAGE_LAB_DB``, else the project's ``data/results.sqlite``."""
    override = os.environ.get(DB_ENV)
    return Path(override).expanduser() if override else PROJECT_ROOT / "data" / "results.sqlite"


def default_runs_dir() -> Path:
    """Where runs write their stores: ``$IMAGE_STORAGE_LAB_RUNS``, else the project's ``data/runs``."""
    override = os.environ.get(RUNS_ENV)
    return Path(override).expanduser() if override else PROJECT_ROOT / "data" / "runs"
