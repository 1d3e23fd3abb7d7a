"""Where data lives: the project's ``data/`` folder, or ``$IMAGE_STORAGE_LAB_DATA``.

The bundled sample always comes from the project itself; downloads, stores and results go
to the data folder, which a test or a launcher can move by setting the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
DATA_DIR_ENV = "IMAGE_STORAGE_LAB_DATA"


def data_dir() -> Path:
    """The data folder: ``$IMAGE_STORAGE_LAB_DATA`` if set, else ``data/`` in the project.

    Read at every call (not only at import) so a test or a launcher can point the library
    at another folder by setting the environment variable.
    """
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override).expanduser() if override else PROJECT_ROOT / "data"


DATA_DIR = data_dir()


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
