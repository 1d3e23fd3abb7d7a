"""``python -m storage advise``: which format, at the full size, for how the data will be read.

    python -m storage advise --source PATH --count N --access shuffled|sequential|random|append [--workers K]
        [--lossless] [--disk-budget 200GB] [--time-budget 120s] [--db FILE] [--json FILE]

It measures the candidates on a sample of the source (reusing earlier runs that match),
prints the recommendation and the reasoning table, and writes the whole advice as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..bench import places
from .common import UsageError, int_argument, run_parameter


def _size(text: str) -> int:
    from ..advice import InvalidQuestionError, parse_size

    try:
        return parse_size(text)
    except InvalidQuestionError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    from ..advice import InvalidQuestionError, parse_seconds

    try:
        return parse_seconds(text)
    except InvalidQuestionError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    from ..advice.question import ACCESS_PATTERNS, LOCATIONS

    parser = commands.add_parser(
        "advise",
        parents=[database],
        help="which format to use: measured on a sample of your data, projected to its full size",
        usage=(
            "python -m storage advise --source PATH --count N --access shuffled|sequential|random|append "
            "[--workers K] [--lossless] [--disk-budget 200GB] [--time-budget 120s] [--db FILE] [--json FILE]"
        ),
    )
    parser.add_argument("--source", default="sample", help="sample, cifar10 or an image folder (default sample)")
    parser.add_argument("--count", type=int_argument(1), required=True, help="images in the full dataset")
    parser.add_argument("--access", choices=ACCESS_PATTERNS, required=True, help="how the data will be read")
    parser.add_argument("--workers", type=int_argument(0), default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--batch-size", type=int_argument(1), default=256, help="DataLoader batch (default 256)")
    parser.add_argument("--lossless", action="store_true", help="the images must read back exactly")
    parser.add_argument("--disk-budget", type=_size, default=None, help="the most disk the store may take")
    parser.add_argument(
        "--readable-by-others", action="store_true", help="other tools must read it without this library"
    )
    parser.add_argument(
        "--location", choices=LOCATIONS, default="local", help="where the store lives (local disk for now)"
    )
    parser.add_argument("--time-budget", type=_seconds, default=120.0, help="time for measuring (default 120s)")
    parser.add_argument("--backends", type=run_parameter("backends"), default=None, help="formats to weigh")
    parser.add_argument("--pixels", action="store_true", help="photos: store pixels, not the files' own bytes")
    parser.add_argument(
        "--work-dir",
        default=str(places.default_runs_dir()),
        help=f"where the sample's stores are written (default ${places.RUNS_ENV}, else {places.default_runs_dir()})",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="write the advice as JSON (- for stdout)")
    parser.set_defaults(run=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from ..advice import Question

    question = Question(
        source=args.source,
        count=args.count,
        access=args.access,
        workers=args.workers,
        batch_size=args.batch_size,
        lossless=args.lossless,
        disk_budget_bytes=args.disk_budget,
        readable_by_others=args.readable_by_others,
        location=args.location,
        time_budget_s=args.time_budget,
        keep_encoded=not args.pixels,
        backends=tuple(args.backends or ()),
    )
    return run(question, args.db, args.work_dir, args.json)


def run(question, db_path: str, work_dir: str, json_path: str | None) -> int:
    """Advise on ``question``, print it, and write the JSON; exit 0 with a recommendation, 1 without one."""
    from ..advice import advise
    from ..advice.report import reasoning_table
    from ..bench import ResultsDB

    with ResultsDB(db_path) as db:
        advice = advise(question, db, work_dir, on_progress=lambda line: print(line, file=sys.stderr))
    text = json.dumps(advice.to_dict(), indent=2)
    if json_path == "-":
        print(text)
    else:
        print(advice.text)
        print()
        print(reasoning_table(advice))
        if json_path:
            try:
                with open(json_path, "w", encoding="utf-8") as out:
                    out.write(text + "\n")
            except OSError as error:
                raise UsageError(f"cannot write the advice to {json_path}: {error.strerror}") from None
    return 0 if advice.recommended else 1
