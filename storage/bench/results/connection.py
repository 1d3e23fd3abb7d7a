"""The results file itself: opening it, its schema and migrations, and the one way to write atomically.

Every job of the results database (history, live progress, previews, export) works through
the :class:`ResultsConnection` it builds on: one SQLite connection, shared between threads
under one lock, and one :meth:`~ResultsConnection.transaction` for writes that must land
together. The schema lives here too, so that what the file holds is read in one place.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ...errors import CorruptDataError, NewerVersionError, StoreNotWritableError

DEFAULT_DB_PATH = "data/results.sqlite"
SCHEMA_VERSION = 5  # 2: the loader operation's columns; 3: live runs (recorded_at, run_progress, previews);
# 4: run_progress.launched_by (command-line runs record their live state too); 5: runs.name, and the
# timed sections and the pages following a run (run_progress.timing_since, timed_sections, run_watchers)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    parameters TEXT NOT NULL,
    environment TEXT NOT NULL,
    source TEXT NOT NULL,
    error TEXT,
    pid INTEGER,
    hostname TEXT,
    process_started REAL,
    imported INTEGER NOT NULL DEFAULT 0,
    name TEXT
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    count INTEGER NOT NULL,
    operation TEXT NOT NULL,
    cache TEXT NOT NULL,
    repeats INTEGER NOT NULL,
    seconds_median REAL,
    seconds_min REAL,
    seconds_max REAL,
    seconds_iqr REAL,
    seconds_per_image REAL,
    images_per_second REAL,
    mb_per_second REAL,
    apparent_bytes INTEGER,
    allocated_bytes INTEGER,
    files INTEGER,
    bytes_per_image REAL,
    verified INTEGER NOT NULL,
    psnr REAL,
    evicted INTEGER,
    error TEXT,
    details TEXT NOT NULL,
    workers INTEGER,
    batch_size INTEGER,
    first_batch_seconds REAL,
    batch_p50_seconds REAL,
    batch_p99_seconds REAL,
    ceiling_images_per_second REAL,
    fraction_of_ceiling REAL
);
CREATE INDEX IF NOT EXISTS measurements_by_run ON measurements(run_id);
CREATE TABLE IF NOT EXISTS samples (
    measurement_id INTEGER NOT NULL REFERENCES measurements(id) ON DELETE CASCADE,
    repeat INTEGER NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (measurement_id, repeat)
);
CREATE TABLE IF NOT EXISTS run_progress (
    run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    launched_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    fraction REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    estimated_seconds REAL,
    stoppable INTEGER NOT NULL DEFAULT 0,
    stop_requested_at REAL,
    first_chart_at REAL,
    launched_by TEXT NOT NULL DEFAULT 'dashboard',
    timing_since REAL
);
CREATE TABLE IF NOT EXISTS timed_sections (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    started_at REAL NOT NULL,  -- the pages were told to hold still
    timer_started_at REAL,  -- the timer started (once the pages had settled)
    ended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS timed_sections_by_run ON timed_sections(run_id);
CREATE TABLE IF NOT EXISTS run_watchers (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    watcher TEXT NOT NULL,
    seen_at REAL NOT NULL,
    shown_items INTEGER NOT NULL DEFAULT 0,
    drawing_since REAL,
    settled_at REAL,
    PRIMARY KEY (run_id, watcher)
);
CREATE TABLE IF NOT EXISTS previews (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    count INTEGER NOT NULL,
    position INTEGER NOT NULL,
    image_id INTEGER NOT NULL,
    label INTEGER NOT NULL,
    png BLOB NOT NULL,
    verified INTEGER NOT NULL,
    psnr REAL,
    PRIMARY KEY (run_id, backend, count, position)
);
"""
# The loader operation's columns (schema version 2), added to older files when they are opened.
_LOADER_COLUMNS = {
    "workers": "INTEGER",
    "batch_size": "INTEGER",
    "first_batch_seconds": "REAL",
    "batch_p50_seconds": "REAL",
    "batch_p99_seconds": "REAL",
    "ceiling_images_per_second": "REAL",
    "fraction_of_ceiling": "REAL",
}
# Measurement fields with a column of their own; the rest go to ``details`` (JSON).
MEASUREMENT_COLUMNS = (
    "run_id backend count operation cache repeats seconds_median seconds_min seconds_max seconds_iqr "
    "seconds_per_image images_per_second mb_per_second apparent_bytes allocated_bytes files bytes_per_image "
    "verified psnr evicted error"
).split() + list(_LOADER_COLUMNS)
_Opened = TypeVar("_Opened", bound="ResultsConnection")
# The columns that tell a results file's ``runs`` table from another program's.
_RUN_COLUMNS = {"id", "started_at", "status", "parameters", "environment", "source"}


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (sortable as text)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class ResultsConnection:
    """One open results file: the connection, its lock, and reads and writes through them.

    Args:
        path: the SQLite file; created (with its folder) if missing.

    Raises:
        CorruptDataError: ``path`` exists but is not a results database.
        StoreNotWritableError: the file cannot be created or opened.
    """

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_DB_PATH) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        if self.path.is_dir():
            raise StoreNotWritableError(f"the results database path {self.path} is a folder; give a file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise StoreNotWritableError(f"cannot open the results database {self.path}: {error}") from None
        try:
            self._setup()
        except NewerVersionError:
            self._connection.close()
            raise
        except sqlite3.DatabaseError as error:
            self._connection.close()
            raise CorruptDataError(
                f"{self.path} is not a results database (SQLite said: {error}); "
                "point to another file, or move this one away"
            ) from None

    def _setup(self) -> None:
        """Refuse another program's file, set the pragmas, create what is missing and migrate."""
        connection = self._connection
        connection.execute("PRAGMA busy_timeout = 30000")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:  # never migrate (or re-stamp) a file of a newer version down
            raise NewerVersionError(
                f"{self.path} was written by a newer version of Image Storage Lab (results schema {version}; this "
                f"version reads schema {SCHEMA_VERSION} at most): upgrade the library to read it, or point --db "
                "at another file"
            )
        existing = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "runs" in existing:
            columns = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
            if not _RUN_COLUMNS <= columns:
                raise sqlite3.DatabaseError("it holds a 'runs' table of another program")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.executescript(_SCHEMA)
        self._migrate()
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _migrate(self) -> None:
        """Bring a file written by an older version up to date: add the columns later versions use.

        Older rows keep NULL there (they measured no loader); nothing else changes, so the
        older version can still read the file.
        """
        connection = self._connection
        present = {row[1] for row in connection.execute("PRAGMA table_info(measurements)")}
        for name, sql_type in _LOADER_COLUMNS.items():
            if name not in present:
                connection.execute(f"ALTER TABLE measurements ADD COLUMN {name} {sql_type}")
        if "recorded_at" not in present:  # schema 3: when each measurement was stored
            connection.execute("ALTER TABLE measurements ADD COLUMN recorded_at REAL")
        progress_columns = {row[1] for row in connection.execute("PRAGMA table_info(run_progress)")}
        if "launched_by" not in progress_columns:  # schema 4: live state of command-line runs too
            connection.execute("ALTER TABLE run_progress ADD COLUMN launched_by TEXT NOT NULL DEFAULT 'dashboard'")
        if "timing_since" not in progress_columns:  # schema 5: a timed call is running (pages hold still)
            connection.execute("ALTER TABLE run_progress ADD COLUMN timing_since REAL")
        run_columns = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
        if "name" not in run_columns:  # schema 5: runs can be named
            connection.execute("ALTER TABLE runs ADD COLUMN name TEXT")

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self: _Opened) -> _Opened:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading and writing -----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Make the block's writes land together or not at all: BEGIN IMMEDIATE, then COMMIT or ROLLBACK.

        IMMEDIATE takes the file's write lock at the start, so a reader in another process
        never sees half of the block, and a second writer waits (``busy_timeout``) instead of
        failing midway. The lock of this object is held throughout, so threads sharing it
        do not interleave their statements. Anything raised in the block (or by the COMMIT)
        rolls it back and is raised again.

        Yields:
            the connection, to execute the block's statements on.
        """
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def _execute(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Cursor:
        """One statement, committed at once (the connection is in autocommit mode)."""
        with self._lock:
            return self._connection.execute(sql, tuple(parameters))

    def _rows(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """The rows of a query, readable by column name."""
        with self._lock:
            cursor = self._connection.cursor()
            cursor.row_factory = sqlite3.Row
            return cursor.execute(sql, tuple(parameters)).fetchall()
