"""``python -m storage verify PATH [PATH ...]``: read every image of a store and check it against its checksum.

Works on any store folder (the backend is the one its manifest names) and on a sharded store
(every shard's files re-hashed against their stamps, then every shard's images checked). Each
damaged image run or file is named; the exit code is 0 when nothing is damaged and 1 when
something is, so scripts and cron jobs can act on it.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..bench.results.schema import printable
from ..errors import StorageError
from .common import EXIT_FAILED


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "verify",
        help="check a store's images against their checksums",
        description="Read every image of each store (or sharded store) and compare it with the checksum recorded "
        "when it was written; name every damaged image and file. Exit code 1 if anything is damaged.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a store folder (or a sharded store's folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per store instead of text")
    parser.set_defaults(run=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return run(args.paths, as_json=args.json)


def run(paths: list[str], as_json: bool = False) -> int:
    """Verify each store at ``paths``; print what was found; 1 if any is damaged or cannot be opened.

    A store that cannot be opened (a damaged manifest, a write under way) is reported with its
    error and the other paths are still checked.
    """
    from ..opener import open_store

    damaged = False
    for path in paths:
        try:
            with open_store(path) as store:
                report = store.verify()
        except StorageError as error:
            damaged = True
            _print_unopened(path, error, as_json)
            continue
        damaged = damaged or not report.ok
        if as_json:
            print(json.dumps(_report_fields(report)))
        else:
            print(report.describe())
    return EXIT_FAILED if damaged else 0


def _report_fields(report) -> dict:
    return {
        "path": str(report.path),
        "backend": report.backend,
        "images": report.images,
        "checked": report.checked,
        "unchecked": report.unchecked,
        "ok": report.ok,
        "damaged": report.damaged,
    }


def _print_unopened(path: str, error: StorageError, as_json: bool) -> None:
    """A store that could not be opened: one JSON object with ``error``, or a line on stderr."""
    if as_json:
        print(json.dumps({"path": str(path), "ok": False, "error": f"{type(error).__name__}: {error}"}))
    else:
        sys.stderr.write(f"{path}: cannot be checked: {type(error).__name__}: {printable(str(error))}\n")
