"""``python -m storage runs``: list the recorded runs; ``runs delete RUN_ID...`` removes some."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import UsageError, int_argument

START_ONE = "start one with: python -m storage bench --counts 10,1000"


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "runs",
        parents=[database],
        help="list recorded runs, or delete some",
        usage="python -m storage runs [--db DB] [--limit N]\n       python -m storage runs [--db DB] delete RUN_ID...",
    )
    parser.add_argument("--limit", type=int_argument(1), default=None, help="show only the newest runs")
    parser.set_defaults(run=run_from_args)
    actions = parser.add_subparsers(dest="runs_action", metavar="ACTION")
    delete = actions.add_parser("delete", help="delete runs and their measurements from the results database")
    delete.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    # SUPPRESS: ``runs --db FILE delete ID`` keeps the FILE given before the action.
    delete.add_argument("--db", default=argparse.SUPPRESS, help="results database (as for runs)")
    delete.set_defaults(run=delete_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return run(args.db, limit=args.limit)


def delete_from_args(args: argparse.Namespace) -> int:
    return delete(args.db, args.run_ids)


def run(db_path: str, limit: int | None = None) -> int:
    """Print the newest ``limit`` runs (all without it) of the database at ``db_path``."""
    from ..bench import ResultsDB
    from ..bench.report import runs_table

    if not Path(db_path).expanduser().is_file():  # not created just to say it is empty
        print(f"no results database at {db_path} yet; {START_ONE}")
        return 0
    with ResultsDB(db_path) as db:
        runs = db.list_runs(limit=limit)
    if not runs:
        print(f"no runs recorded in {db_path} yet; {START_ONE}")
        return 0
    print(runs_table(runs))
    return 0


def delete(db_path: str, run_ids: list[str]) -> int:
    """Delete ``run_ids`` from the database at ``db_path``: all of them, or none if one cannot be.

    A run that is still running is refused (its process would go on writing to it): stop
    it first. The stores a run kept (``--keep``) stay in its folder.

    Raises:
        UsageError: no database there.
        RunNotFoundError: an id the database does not hold (nothing is deleted).
    """
    from ..bench import ResultsDB
    from ..bench.results import printable

    if not Path(db_path).expanduser().is_file():
        raise UsageError(f"no results database at {db_path}; pass --db with the file your runs were recorded in")
    with ResultsDB(db_path) as db:
        wanted = list(dict.fromkeys(run_ids))
        records = [db.require_run(run_id) for run_id in wanted]
        running = [record.id for record in records if record.status == "running"]
        if running:
            raise UsageError(
                f"run {', '.join(map(printable, running))} is still running; stop it first "
                "(Ctrl+C where it runs, or Stop on the dashboard's Run page), then delete it"
            )
        for record in records:
            db.delete_run(record.id)
    for run_id in wanted:
        print(printable(run_id))
    print(f"deleted {len(wanted)} run(s) from {db_path}", file=sys.stderr)
    return 0
