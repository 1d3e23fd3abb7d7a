"""The history of runs: each run, its measurements and their samples, and the queries that read them back.

Each measurement is committed as soon as it is taken, so a run that is killed midway keeps
what it had finished; every measurement records when it was stored (``recorded_at``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ...errors import StorageError
from ..events import Measurement
from .connection import MEASUREMENT_COLUMNS, ResultsConnection, json_safe, now_iso
from .processes import process_start_time

STATUSES = ("running", "finished", "cancelled", "failed", "interrupted")
# Columns stored as 0/1 that read back as booleans (None stays None).
_FLAG_COLUMNS = ("verified", "evicted")
_RUN_WITH_COUNT = (
    "SELECT runs.*, (SELECT COUNT(*) FROM measurements WHERE run_id = runs.id) AS measurement_count FROM runs"
)


MAX_NAME = 100  # characters in a run's name


class RunNotFoundError(StorageError, KeyError):
    """A run id that the results database does not hold."""


class InvalidRunNameError(StorageError, ValueError):
    """A run name that cannot be kept (too long)."""


def clean_name(name: str | None) -> str | None:
    """A run's name as kept: stripped, None when blank.

    Raises:
        InvalidRunNameError: longer than :data:`MAX_NAME` characters.
    """
    if name is None:
        return None
    text = " ".join(str(name).split())
    if len(text) > MAX_NAME:
        raise InvalidRunNameError(f"a run name has at most {MAX_NAME} characters; this one has {len(text)}")
    return text or None


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
    name: str | None = None
    backends: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.backends = list(self.parameters.get("backends", []))
        self.counts = list(self.parameters.get("counts", []))

    @property
    def label(self) -> str:
        """How the run is named in legends and lists: its name, else its id."""
        return self.name or self.id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def keys(self) -> list[str]:
        return list(self.to_dict())


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
        name=row["name"],
    )


def _measurement_row(measurement: Measurement) -> tuple[Any, ...]:
    """A measurement as the values of its ``measurements`` row: its columns, then ``details`` (JSON)."""
    data = json_safe(measurement.to_dict())
    details = {key: value for key, value in data.items() if key not in MEASUREMENT_COLUMNS}
    values = [data[name] for name in MEASUREMENT_COLUMNS]
    for index, name in enumerate(MEASUREMENT_COLUMNS):
        if name in _FLAG_COLUMNS and values[index] is not None:
            values[index] = int(bool(values[index]))
    return (*values, json.dumps(details))


def stored_fields(row: sqlite3.Row) -> dict[str, Any]:
    """A ``measurements`` row as the fields of the measurement it stored (not yet checked)."""
    data = {name: row[name] for name in MEASUREMENT_COLUMNS}
    data.update(json.loads(row["details"]))
    for name in _FLAG_COLUMNS:
        if data[name] is not None:
            data[name] = bool(data[name])
    return data


def _measurement(row: sqlite3.Row) -> Measurement:
    """A ``measurements`` row read back as the measurement it stored."""
    return Measurement.from_dict(stored_fields(row))


class RunHistory(ResultsConnection):
    """Runs and their measurements: recording them, finishing and deleting runs, reading them back."""

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
        name: str | None = None,
    ) -> None:
        """Record a run; a live run records this process so that a crash can be detected.

        A run reserved by :meth:`reserve_run` for this very process is filled in (the
        dashboard reserves the id before the process starts, so its address exists at once);
        the name it was reserved with is kept unless ``name`` is given.
        """
        pid = os.getpid() if not imported else None
        self._execute(
            "INSERT INTO runs (id, started_at, finished_at, status, parameters, environment, source, error,"
            " pid, hostname, process_started, imported, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET status = excluded.status,"
            " parameters = excluded.parameters, environment = excluded.environment, source = excluded.source,"
            " error = excluded.error, name = COALESCE(excluded.name, runs.name)"
            " WHERE runs.pid = excluded.pid AND runs.status = 'running'",
            (
                run_id,
                started_at or now_iso(),
                finished_at,
                status,
                json.dumps(json_safe(parameters)),
                json.dumps(json_safe(environment)),
                json.dumps(json_safe(source)),
                error,
                pid,
                environment.get("hostname") if imported else socket.gethostname(),
                process_start_time(pid) if pid else None,
                int(imported),
                clean_name(name),
            ),
        )

    def name_run(self, run_id: str, name: str | None) -> None:
        """Give a run its name (None or blank: no name); shown in legends, lists, Share and exports."""
        self._require_run(run_id)
        self._execute("UPDATE runs SET name = ? WHERE id = ?", (clean_name(name), run_id))

    def add_measurement(self, measurement: Measurement) -> int:
        """Store one measurement and its samples at once (committed before returning)."""
        row = _measurement_row(measurement)
        with self.transaction() as connection:
            cursor = connection.execute(
                f"INSERT INTO measurements ({', '.join(MEASUREMENT_COLUMNS)}, details, recorded_at)"
                f" VALUES ({', '.join('?' * (len(MEASUREMENT_COLUMNS) + 2))})",
                (*row, time.time()),
            )
            measurement_id = cursor.lastrowid
            connection.executemany(
                "INSERT INTO samples (measurement_id, repeat, seconds) VALUES (?, ?, ?)",
                [(measurement_id, repeat, seconds) for repeat, seconds in enumerate(measurement.samples)],
            )
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
                (status, error, now_iso(), json.dumps(json_safe(environment)), run_id),
            )

    def delete_run(self, run_id: str) -> None:
        """Remove a run and its measurements."""
        self._require_run(run_id)
        with self.transaction() as connection:
            connection.execute(
                "DELETE FROM samples WHERE measurement_id IN (SELECT id FROM measurements WHERE run_id = ?)",
                (run_id,),
            )
            connection.execute("DELETE FROM measurements WHERE run_id = ?", (run_id,))
            connection.execute("DELETE FROM run_progress WHERE run_id = ?", (run_id,))
            connection.execute("DELETE FROM timed_sections WHERE run_id = ?", (run_id,))
            connection.execute("DELETE FROM run_watchers WHERE run_id = ?", (run_id,))
            connection.execute("DELETE FROM previews WHERE run_id = ?", (run_id,))
            connection.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # -- reading ---------------------------------------------------------------------

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first."""
        sql = f"{_RUN_WITH_COUNT} ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_run_record(row) for row in self._rows(sql)]

    def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or None if the database does not hold it."""
        rows = self._rows(f"{_RUN_WITH_COUNT} WHERE id = ?", (run_id,))
        return _run_record(rows[0]) if rows else None

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
        return [_measurement(row) for row in rows]

    def changes(self) -> tuple[Any, ...]:
        """A value that changes whenever a run starts, ends, is deleted or records a measurement."""
        with self._lock:
            runs = self._connection.execute(
                "SELECT COUNT(*), MAX(started_at), SUM(status = 'running'), MAX(finished_at) FROM runs"
            ).fetchone()
            measurements = self._connection.execute("SELECT MAX(id), COUNT(*) FROM measurements").fetchone()
        return (*runs, *measurements)

    def require_run(self, run_id: str) -> RunRecord:
        """The run, or a :class:`RunNotFoundError` that names the most recent runs."""
        return self._require_run(run_id)

    def _require_run(self, run_id: str) -> RunRecord:
        """The run, or a :class:`RunNotFoundError` that names the most recent runs."""
        record = self.get_run(run_id)
        if record is None:
            known = [run.id for run in self.list_runs(limit=5)]
            hint = f"; recent runs: {', '.join(known)}" if known else "; the database holds no runs yet"
            raise RunNotFoundError(f"no run {run_id!r} in {self.path}{hint}")
        return record
