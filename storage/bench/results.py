"""The results history: every run and every measurement in one embedded SQLite file.

The file (``data/results.sqlite`` by default) is opened in WAL mode and each measurement
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
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ..errors import CorruptDataError, StorageError, StoreNotWritableError
from .events import Measurement, PreviewReady

DEFAULT_DB_PATH = "data/results.sqlite"
EXPORT_FORMAT = "image-storage-lab/measurements"
SCHEMA_VERSION = 4  # 2: the loader operation's columns; 3: live runs (recorded_at, run_progress, previews);
# 4: run_progress.launched_by (command-line runs record their live state too)
STATUSES = ("running", "finished", "cancelled", "failed", "interrupted")

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
    imported INTEGER NOT NULL DEFAULT 0
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
    launched_by TEXT NOT NULL DEFAULT 'dashboard'
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
PREVIEW_MAX_SIDE = 128  # previews of larger images are stored shrunk to this (they only show what was read)
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
_COLUMNS = (
    "run_id backend count operation cache repeats seconds_median seconds_min seconds_max seconds_iqr "
    "seconds_per_image images_per_second mb_per_second apparent_bytes allocated_bytes files bytes_per_image "
    "verified psnr evicted error"
).split() + list(_LOADER_COLUMNS)
_RUN_COLUMNS = {"id", "started_at", "status", "parameters", "environment", "source"}


@dataclass
class RunProgress:
    """A run's live state (see :meth:`ResultsDB.update_progress`); times are seconds since the epoch."""

    run_id: str
    launched_at: float
    updated_at: float
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    message: str = ""
    estimated_seconds: float | None = None
    stoppable: bool = False
    stop_requested_at: float | None = None
    first_chart_at: float | None = None
    launched_by: str = "dashboard"  # or "command line"

    def __post_init__(self) -> None:
        self.stoppable = bool(self.stoppable)


class RunNotFoundError(StorageError, KeyError):
    """A run id that the results database does not hold."""


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (sortable as text)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


@dataclass
class RunRecord:
    """One run as the database holds it; also readable like a dict (``record["status"]``)."""

    id: str
    started_at: str
    finished_at: str | None
    status: str
    parameters: dict[str, Any]
    environment: dict[str, Any]
    source: dict[str, Any]
    error: str | None = None
    pid: int | None = None
    hostname: str | None = None
    imported: bool = False
    measurement_count: int = 0
    backends: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.backends = list(self.parameters.get("backends", []))
        self.counts = list(self.parameters.get("counts", []))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def keys(self) -> list[str]:
        return list(self.to_dict())


class ResultsDB:
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

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_DB_PATH, *, mark_stale: bool = True) -> None:
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
        except sqlite3.DatabaseError as error:
            self._connection.close()
            raise CorruptDataError(
                f"{self.path} is not a results database (SQLite said: {error}); "
                "point to another file, or move this one away"
            ) from None
        if mark_stale:
            self.mark_stale_runs()

    def _setup(self) -> None:
        connection = self._connection
        connection.execute("PRAGMA busy_timeout = 30000")
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
        """Bring a file written by an older version up to date: add the loader's columns and recorded_at.

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

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _execute(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._connection.execute(sql, tuple(parameters))

    # -- writing runs ----------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        parameters: dict[str, Any],
        environment: dict[str, Any],
        source: dict[str, Any],
        *,
        status: str = "running",
        started_at: str | None = None,
        finished_at: str | None = None,
        error: str | None = None,
        imported: bool = False,
    ) -> None:
        """Record a run; a live run records this process so that a crash can be detected.

        A run reserved by :meth:`reserve_run` for this very process is filled in (the
        dashboard reserves the id before the process starts, so its address exists at once).
        """
        pid = os.getpid() if not imported else None
        self._execute(
            "INSERT INTO runs (id, started_at, finished_at, status, parameters, environment, source, error,"
            " pid, hostname, process_started, imported) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET status = excluded.status,"
            " parameters = excluded.parameters, environment = excluded.environment, source = excluded.source,"
            " error = excluded.error WHERE runs.pid = excluded.pid AND runs.status = 'running'",
            (
                run_id,
                started_at or now_iso(),
                finished_at,
                status,
                json.dumps(_json_safe(parameters)),
                json.dumps(_json_safe(environment)),
                json.dumps(_json_safe(source)),
                error,
                pid,
                environment.get("hostname") if imported else socket.gethostname(),
                _process_start_time(pid) if pid else None,
                int(imported),
            ),
        )

    def add_measurement(self, measurement: Measurement) -> int:
        """Store one measurement and its samples at once (committed before returning)."""
        data = _json_safe(measurement.to_dict())
        details = {key: value for key, value in data.items() if key not in _COLUMNS}
        values = [data[name] for name in _COLUMNS]
        for index, name in enumerate(_COLUMNS):
            if name in ("verified", "evicted") and values[index] is not None:
                values[index] = int(bool(values[index]))
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                cursor = connection.execute(
                    f"INSERT INTO measurements ({', '.join(_COLUMNS)}, details, recorded_at)"
                    f" VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})",
                    (*values, json.dumps(details), time.time()),
                )
                measurement_id = cursor.lastrowid
                connection.executemany(
                    "INSERT INTO samples (measurement_id, repeat, seconds) VALUES (?, ?, ?)",
                    [(measurement_id, repeat, seconds) for repeat, seconds in enumerate(measurement.samples)],
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return int(measurement_id)

    def finish_run(
        self, run_id: str, status: str, error: str | None = None, environment: dict[str, Any] | None = None
    ) -> None:
        """Set a run's final status (and, optionally, its environment with the final peak RSS)."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        if environment is None:
            self._execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                (status, error, now_iso(), run_id),
            )
        else:
            self._execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ?, environment = ? WHERE id = ?",
                (status, error, now_iso(), json.dumps(_json_safe(environment)), run_id),
            )

    def mark_stale_runs(self) -> list[str]:
        """Mark ``interrupted`` the runs of this host left ``running`` by a process that is gone."""
        host = socket.gethostname()
        stale = []
        rows = self._execute(
            "SELECT id, pid, hostname, process_started, imported FROM runs WHERE status = 'running'"
        ).fetchall()
        for run_id, pid, hostname, started, imported in rows:
            if not imported and hostname != host:
                continue  # another machine's run in a shared file: its process cannot be checked from here
            if imported or not pid or not _process_alive(pid, started):
                stale.append(run_id)
        for run_id in stale:
            self._execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?,"
                " error = COALESCE(error, 'the process running it stopped before the run finished (killed or crashed)')"
                " WHERE id = ? AND status = 'running'",
                (now_iso(), run_id),
            )
        return stale

    def delete_run(self, run_id: str) -> None:
        """Remove a run and its measurements."""
        self._require_run(run_id)
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute(
                    "DELETE FROM samples WHERE measurement_id IN (SELECT id FROM measurements WHERE run_id = ?)",
                    (run_id,),
                )
                connection.execute("DELETE FROM measurements WHERE run_id = ?", (run_id,))
                connection.execute("DELETE FROM run_progress WHERE run_id = ?", (run_id,))
                connection.execute("DELETE FROM previews WHERE run_id = ?", (run_id,))
                connection.execute("DELETE FROM runs WHERE id = ?", (run_id,))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    # -- live state of a run in progress ---------------------------------------------

    def reserve_run(
        self,
        run_id: str,
        parameters: dict[str, Any],
        source: dict[str, Any],
        pid: int,
        *,
        estimated_seconds: float | None = None,
        stoppable: bool = True,
    ) -> None:
        """Record a run about to start in process ``pid``, before that process has loaded anything.

        The run is ``running`` from now on, so its id can be shown, followed and stopped at
        once; the process fills in its environment and source when it gets there (see
        :meth:`create_run`). ``stoppable`` says that the process honours
        :meth:`request_stop`.
        """
        now = time.time()
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute(
                    "INSERT OR IGNORE INTO runs (id, started_at, status, parameters, environment, source,"
                    " pid, hostname, process_started, imported) VALUES (?, ?, 'running', ?, '{}', ?, ?, ?, ?, 0)",
                    (
                        run_id,
                        now_iso(),
                        json.dumps(_json_safe(parameters)),
                        json.dumps(_json_safe(source)),
                        pid,
                        socket.gethostname(),
                        _process_start_time(pid),
                    ),
                )
                connection.execute(
                    "INSERT OR IGNORE INTO run_progress (run_id, launched_at, updated_at, message,"
                    " estimated_seconds, stoppable) VALUES (?, ?, ?, 'starting the benchmark process…', ?, ?)",
                    (run_id, now, now, estimated_seconds, int(stoppable)),
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def update_progress(
        self,
        run_id: str,
        *,
        step: int,
        total_steps: int,
        fraction: float,
        message: str,
        estimated_seconds: float | None = None,
        stoppable: bool | None = None,
        launched_by: str = "dashboard",
    ) -> None:
        """Where a run is now: its step, the fraction of its estimated time done, what it measures.

        ``launched_by`` ("dashboard" or "command line") is kept from the first record of the run.
        """
        now = time.time()
        self._execute(
            "INSERT INTO run_progress (run_id, launched_at, updated_at, step, total_steps, fraction, message,"
            " estimated_seconds, stoppable, launched_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(run_id) DO UPDATE SET updated_at = excluded.updated_at, step = excluded.step,"
            " total_steps = excluded.total_steps, fraction = excluded.fraction, message = excluded.message,"
            " estimated_seconds = COALESCE(excluded.estimated_seconds, run_progress.estimated_seconds),"
            " stoppable = MAX(run_progress.stoppable, excluded.stoppable)",
            (
                run_id,
                now,
                now,
                int(step),
                int(total_steps),
                float(min(1.0, max(0.0, fraction))),
                message,
                estimated_seconds,
                int(bool(stoppable)),
                launched_by,
            ),
        )

    def progress(self, run_id: str) -> RunProgress | None:
        """The live state recorded for a run (None for runs recorded without one, such as imports)."""
        rows = self._rows("SELECT * FROM run_progress WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        row = rows[0]
        return RunProgress(**{name: row[name] for name in row.keys()})

    def request_stop(self, run_id: str) -> bool:
        """Ask a running run to stop (its process checks a few times a second); True if it was running."""
        self._require_run(run_id)
        now = time.time()
        with self._lock:
            cursor = self._connection.execute(
                "UPDATE run_progress SET stop_requested_at = COALESCE(stop_requested_at, ?)"
                " WHERE run_id = ? AND run_id IN (SELECT id FROM runs WHERE status = 'running')",
                (now, run_id),
            )
            return cursor.rowcount > 0

    def stop_requested(self, run_id: str) -> bool:
        rows = self._execute("SELECT stop_requested_at FROM run_progress WHERE run_id = ?", (run_id,)).fetchall()
        return bool(rows) and rows[0][0] is not None

    def note_first_chart(self, run_id: str, at: float | None = None) -> None:
        """Record when a page first drew a chart of this run (kept once: the first page wins)."""
        self._execute(
            "UPDATE run_progress SET first_chart_at = ? WHERE run_id = ? AND first_chart_at IS NULL",
            (time.time() if at is None else at, run_id),
        )

    def measurement_times(self, run_id: str) -> list[float]:
        """When each measurement of the run was stored (seconds since the epoch), in order."""
        rows = self._execute(
            "SELECT recorded_at FROM measurements WHERE run_id = ? AND recorded_at IS NOT NULL ORDER BY id", (run_id,)
        ).fetchall()
        return [row[0] for row in rows]

    def add_preview(self, preview: PreviewReady) -> None:
        """Keep the images a run read back from one store (small PNGs), so its page can show them later."""
        from PIL import Image

        rows = []
        for position, (image_id, image, label) in enumerate(zip(preview.ids, preview.images, preview.labels)):
            picture = _preview_picture(image)
            if picture.width > PREVIEW_MAX_SIDE or picture.height > PREVIEW_MAX_SIDE:
                picture.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.LANCZOS)
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG", optimize=True)
            rows.append(
                (
                    preview.run_id,
                    preview.backend,
                    int(preview.count),
                    position,
                    int(image_id),
                    int(label),
                    buffer.getvalue(),
                    int(bool(preview.verified)),
                    preview.psnr if preview.psnr is None or math.isfinite(preview.psnr) else None,
                )
            )
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(
                    "INSERT OR REPLACE INTO previews (run_id, backend, count, position, image_id, label, png,"
                    " verified, psnr) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def previews(self, run_id: str) -> list[PreviewReady]:
        """The images kept by :meth:`add_preview`, one :class:`PreviewReady` per store, in the order stored."""
        import numpy as np
        from PIL import Image

        rows = self._rows(
            "SELECT * FROM previews WHERE run_id = ? ORDER BY count, rowid",
            (run_id,),
        )
        if not rows:
            return []
        record = self.get_run(run_id)
        class_names = list((record.source or {}).get("class_names") or []) if record else []
        grouped: dict[tuple[str, int], PreviewReady] = {}
        for row in rows:
            key = (row["backend"], row["count"])
            if key not in grouped:
                grouped[key] = PreviewReady(
                    run_id, row["backend"], row["count"], [], [], [], class_names, bool(row["verified"]), row["psnr"]
                )
            preview = grouped[key]
            preview.ids.append(row["image_id"])
            preview.labels.append(row["label"])
            preview.images.append(np.asarray(Image.open(io.BytesIO(row["png"]))))
        return list(grouped.values())

    def count_previews(self, run_id: str) -> int:
        return int(self._execute("SELECT COUNT(*) FROM previews WHERE run_id = ?", (run_id,)).fetchone()[0])

    def changes(self) -> tuple[Any, ...]:
        """A value that changes whenever a run starts, ends, is deleted or records a measurement."""
        with self._lock:
            runs = self._connection.execute(
                "SELECT COUNT(*), MAX(started_at), SUM(status = 'running'), MAX(finished_at) FROM runs"
            ).fetchone()
            measurements = self._connection.execute("SELECT MAX(id), COUNT(*) FROM measurements").fetchone()
        return (*runs, *measurements)

    # -- reading ---------------------------------------------------------------------

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first."""
        sql = (
            "SELECT runs.*, (SELECT COUNT(*) FROM measurements WHERE run_id = runs.id) AS measurement_count"
            " FROM runs ORDER BY started_at DESC, id DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._run_record(row) for row in self._rows(sql)]

    def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or None if the database does not hold it."""
        rows = self._rows(
            "SELECT runs.*, (SELECT COUNT(*) FROM measurements WHERE run_id = runs.id) AS measurement_count"
            " FROM runs WHERE id = ?",
            (run_id,),
        )
        return self._run_record(rows[0]) if rows else None

    def measurements(self, run_ids: str | Iterable[str] | None = None) -> list[Measurement]:
        """Measurements of the given runs (all runs if None), in the order they were taken."""
        if isinstance(run_ids, str):
            run_ids = [run_ids]
        if run_ids is None:
            rows = self._rows("SELECT * FROM measurements ORDER BY id")
        else:
            ids = list(run_ids)
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            rows = self._rows(f"SELECT * FROM measurements WHERE run_id IN ({marks}) ORDER BY run_id, id", ids)
        measurements = []
        for row in rows:
            data = {name: row[name] for name in _COLUMNS}
            data.update(json.loads(row["details"]))
            for name in ("verified", "evicted"):
                if data[name] is not None:
                    data[name] = bool(data[name])
            measurements.append(Measurement.from_dict(data))
        return measurements

    def _rows(self, sql: str, parameters: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.row_factory = sqlite3.Row
            return cursor.execute(sql, tuple(parameters)).fetchall()

    @staticmethod
    def _run_record(row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            id=row["id"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            status=row["status"],
            parameters=json.loads(row["parameters"]),
            environment=json.loads(row["environment"]),
            source=json.loads(row["source"]),
            error=row["error"],
            pid=row["pid"],
            hostname=row["hostname"],
            imported=bool(row["imported"]),
            measurement_count=row["measurement_count"],
        )

    def _require_run(self, run_id: str) -> RunRecord:
        record = self.get_run(run_id)
        if record is None:
            known = [run.id for run in self.list_runs(limit=5)]
            hint = f"; recent runs: {', '.join(known)}" if known else "; the database holds no runs yet"
            raise RunNotFoundError(f"no run {run_id!r} in {self.path}{hint}")
        return record

    # -- export and import -----------------------------------------------------------

    def _export_rows(self, run_ids: str | Iterable[str]) -> list[dict[str, Any]]:
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        runs = {run_id: self._require_run(run_id) for run_id in ids}
        rows = []
        for measurement in self.measurements(ids):
            run = runs[measurement.run_id]
            row = measurement.to_dict()
            row["environment"] = run.environment
            row["run"] = {
                "id": run.id,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "status": run.status,
                "parameters": run.parameters,
                "source": run.source,
                "error": run.error,
            }
            rows.append(row)
        return rows

    def export_json(self, run_ids: str | Iterable[str]) -> str:
        """The runs' measurements as a JSON list; each item also holds its run and environment."""
        return json.dumps(_json_safe(self._export_rows(run_ids)), indent=1)

    def export_csv(self, run_ids: str | Iterable[str]) -> str:
        """The runs' measurements as CSV: the measurement columns, then a few of the run's."""
        extra = ["run_started_at", "run_status", "source", "hostname", "cpu_model", "filesystem"]
        output = io.StringIO()
        writer = csv.DictWriter(output, fieldnames=Measurement.column_names() + extra, lineterminator="\n")
        writer.writeheader()
        for row in self._export_rows(run_ids):
            environment, run = row.pop("environment"), row.pop("run")
            row["samples"] = json.dumps(row["samples"])
            if row.get("per_worker") is not None:
                row["per_worker"] = json.dumps(row["per_worker"])
            row.update(
                run_started_at=run["started_at"],
                run_status=run["status"],
                source=run["source"].get("description", ""),
                hostname=environment.get("hostname", ""),
                cpu_model=environment.get("cpu_model", ""),
                filesystem=environment.get("filesystem", {}).get("type", ""),
            )
            writer.writerow(row)
        return output.getvalue()

    def import_json(self, text: str) -> list[str]:
        """Import runs exported by :meth:`export_json` (or written by ``bench --json``).

        Returns the run ids, in the order they appear. A run already in the database is
        left as it is (importing the same file twice changes nothing).

        Raises:
            CorruptDataError: the text is not such an export.
        """
        try:
            data = json.loads(text)
        except ValueError as error:
            raise CorruptDataError(f"the file is not JSON ({error})") from None
        if isinstance(data, dict) and isinstance(data.get("measurements"), list):
            shared = {key: data[key] for key in ("environment", "run") if key in data}
            data = [{**shared, **item} for item in data["measurements"]]
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise CorruptDataError("the JSON is not a list of measurements exported by this program")
        grouped: dict[str, list[dict[str, Any]]] = {}
        for index, item in enumerate(data):
            missing = {"run_id", "backend", "count", "operation", "cache"} - set(item)
            if missing:
                raise CorruptDataError(f"measurement {index} of the JSON lacks {', '.join(sorted(missing))}")
            grouped.setdefault(str(item["run_id"]), []).append(item)
        imported = []
        for run_id, items in grouped.items():
            imported.append(run_id)
            if self.get_run(run_id) is not None:
                continue
            run = items[0].get("run") or {}
            environment = items[0].get("environment") or {}
            status = run.get("status", "finished")
            try:
                measurements = [Measurement.from_dict(item) for item in items]
            except (TypeError, ValueError) as error:
                raise CorruptDataError(f"a measurement of run {run_id} cannot be read ({error})") from None
            with self._lock:
                self.create_run(
                    run_id,
                    run.get("parameters") or {},
                    environment,
                    run.get("source") or {},
                    status="interrupted" if status == "running" else status,
                    started_at=run.get("started_at") or now_iso(),
                    finished_at=run.get("finished_at"),
                    error=run.get("error"),
                    imported=True,
                )
                for measurement in measurements:
                    self.add_measurement(measurement)
        return imported


def _preview_picture(image: Any):
    """A preview image (uint8 array, grey or colour) as a Pillow image."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(array))


def _process_alive(pid: int, started: float | None) -> bool:
    """Whether the process that started a run still runs (and is that same process)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 1.0
    except (psutil.Error, OSError):
        return False
