"""Runs carried between machines: export to JSON and CSV, and import of that JSON back.

An export holds every measurement of the runs asked for, each with its run and the
environment it ran in, so results brought from another machine can be compared with
local ones. ``bench --json`` writes the same measurements with the run and environment
given once; both import. Exports are written, and imports checked, by one schema
(:mod:`.schema`): a file that breaks it is refused with its first problem named, and
nothing of it is imported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from ..events import Measurement
from .connection import json_safe, now_iso
from .history import RunHistory, stored_fields
from .schema import InvalidResultsError, check_rows, shown, stored_run_problem

EXPORT_FORMAT = "image-storage-lab/measurements"
# The run's fields after the measurement's own in a CSV export.
_CSV_RUN_FIELDS = ["run_name", "run_started_at", "run_status", "source", "hostname", "cpu_model", "filesystem"]


def _exported_measurements(text: str) -> dict[str, list[dict[str, Any]]]:
    """The measurements of an export, checked, grouped by run id in the order the runs first appear.

    Raises:
        InvalidResultsError: the text is not such an export (the message names the first problem).
    """
    try:
        data = json.loads(text)
    except ValueError as error:
        raise InvalidResultsError(f"the file is not JSON ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("measurements"), list):
        shared = {key: data[key] for key in ("environment", "run") if key in data}
        data = [{**shared, **item} if isinstance(item, dict) else item for item in data["measurements"]]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in check_rows(data):
        grouped.setdefault(item["run_id"], []).append(item)
    return grouped


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """An exported measurement flattened for CSV: lists as JSON, then a few of its run's fields."""
    environment, run = row.pop("environment"), row.pop("run")
    row["samples"] = json.dumps(row["samples"])
    for name in ("per_worker", "machine_load"):
        if row.get(name) is not None:
            row[name] = json.dumps(row[name])
    row.update(
        run_name=run.get("name") or "",
        run_started_at=run["started_at"],
        run_status=run["status"],
        source=run["source"].get("description", ""),
        hostname=environment.get("hostname", ""),
        cpu_model=environment.get("cpu_model", ""),
        filesystem=environment.get("filesystem", {}).get("type", ""),
    )
    return row


class RunExchange(RunHistory):
    """Export of runs to JSON and CSV, and import of exported JSON."""

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
                "name": run.name,
            }
            rows.append(row)
        return rows

    def export_json(self, run_ids: str | Iterable[str]) -> str:
        """The runs' measurements as a JSON list; each item also holds its run and environment.

        Raises:
            InvalidResultsError: a run holds what the schema refuses (written by hand or an old
                version); the message names it, and nothing is written that would not import.
        """
        rows = json_safe(self._export_rows(run_ids))
        check_rows(rows, done="exported")
        return json.dumps(rows, indent=1)

    def export_csv(self, run_ids: str | Iterable[str]) -> str:
        """The runs' measurements as CSV: the measurement columns, then a few of the run's."""
        output = io.StringIO()
        writer = csv.DictWriter(output, fieldnames=Measurement.column_names() + _CSV_RUN_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self._export_rows(run_ids):
            writer.writerow(_csv_row(row))
        return output.getvalue()

    def import_json(self, text: str) -> list[str]:
        """Import runs exported by :meth:`export_json` (or written by ``bench --json``).

        Returns the run ids, in the order they appear. A run already in the database is
        left as it is (importing the same file twice changes nothing).

        Raises:
            InvalidResultsError: the text is not such an export, or breaks the schema; the
                message names the first problem, and nothing is imported.
        """
        imported = []
        for run_id, items in _exported_measurements(text).items():
            imported.append(run_id)
            if self.get_run(run_id) is None:
                self._import_run(run_id, items)
        return imported

    def _import_run(self, run_id: str, items: list[dict[str, Any]]) -> None:
        """Record one exported run and its measurements; a run exported while running is ``interrupted``."""
        run = items[0].get("run") or {}
        environment = items[0].get("environment") or {}
        status = run.get("status", "finished")
        try:
            measurements = [Measurement.from_dict(item) for item in items]
        except (TypeError, ValueError) as error:
            raise InvalidResultsError(f"a measurement of run {shown(run_id)} cannot be read ({error})") from None
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
                name=run.get("name"),
            )
            for measurement in measurements:
                self.add_measurement(measurement)

    def run_problem(self, run_id: str) -> str | None:
        """Why the stored run cannot be shown (None when it can), by the schema imports are checked with.

        A run written by hand into the file, or by an older version, may hold a count that is
        text or a list where a number belongs; a page says so for that run and shows the others.
        """
        record = self.get_run(run_id)
        if record is None:
            return None
        fields = {
            "id": record.id,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "status": record.status,
            "parameters": record.parameters,
            "source": record.source,
            "environment": record.environment,
            "error": record.error,
            "name": record.name,
        }
        try:
            measurements = [
                stored_fields(row)
                for row in self._rows("SELECT * FROM measurements WHERE run_id = ? ORDER BY id", (run_id,))
            ]
        except ValueError as error:  # details that are not JSON
            return f"its measurements cannot be read ({error})"
        return stored_run_problem(fields, measurements)
