"""``python -m storage export RUN_ID...`` and ``import FILE``: runs out of and into a results database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import StorageError
from .common import UsageError, write_output


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    export = commands.add_parser("export", parents=[database], help="export runs to CSV or JSON")
    export.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    export.add_argument("--format", choices=("csv", "json"), default="json")
    export.add_argument("--output", "-o", metavar="FILE", help="file to write (default: standard output)")
    export.set_defaults(run=export_from_args)

    import_ = commands.add_parser("import", parents=[database], help="import runs from a JSON export")
    import_.add_argument("file", metavar="FILE")
    import_.set_defaults(run=import_from_args)


def export_from_args(args: argparse.Namespace) -> int:
    return export_runs(args.db, args.run_ids, file_format=args.format, output=args.output)


def import_from_args(args: argparse.Namespace) -> int:
    return import_runs(args.db, args.file)


def export_runs(db_path: str, run_ids: list[str], file_format: str = "json", output: str | None = None) -> int:
    """Write the measurements of ``run_ids`` as JSON or CSV to ``output``, or to standard output."""
    from ..bench import ResultsDB

    if not Path(db_path).expanduser().is_file():
        raise UsageError(f"no results database at {db_path}; pass --db with the file your runs were recorded in")
    with ResultsDB(db_path) as db:
        text = db.export_json(run_ids) if file_format == "json" else db.export_csv(run_ids)
    if output:
        write_output(output, text)
        print(f"wrote {len(run_ids)} run(s) to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def import_runs(db_path: str, file: str) -> int:
    """Add the runs of the JSON export ``file`` to the database at ``db_path``; print their ids."""
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"no file {file}")
    known, run_ids = _import_into(Path(db_path).expanduser(), path.read_text())
    for run_id in run_ids:
        print(run_id)
    new_ids = [run_id for run_id in run_ids if run_id not in known]
    already = f"; {len(run_ids) - len(new_ids)} already there, left as they were" if len(new_ids) < len(run_ids) else ""
    print(f"imported {len(new_ids)} run(s) into {db_path}{already}", file=sys.stderr)
    return 0


def _import_into(database: Path, text: str) -> tuple[set[str], list[str]]:
    """The ids the database held before, and the ids imported; a database made for a failed import is removed."""
    from ..bench import ResultsDB

    created = not database.exists()
    try:
        with ResultsDB(database) as db:
            known = {run.id for run in db.list_runs()}
            return known, db.import_json(text)
    except StorageError:
        if created:  # a file that could not be imported leaves no empty database behind
            for leftover in (database, *database.parent.glob(database.name + "-*")):
                leftover.unlink(missing_ok=True)
        raise
