"""The command line: ``python -m storage bench|advise|runs|export|import|download-cifar10|convert|verify|backends|s3-server``.

One module per command, as asv's ``commands/``: each has an ``add_parser`` that adds the
command and its options, and a ``run_from_args`` that turns the parsed options into plain
arguments for the library. This module puts the parser together and runs one command.

Every error the user can cause (an unknown backend, a bad count, a missing folder, a
file that is not a results database, ...) ends in one line ``error: ...`` on stderr and
a non-zero exit code: 2 for bad arguments, 1 for everything else, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import NoReturn

from ..datasets.image_folder import SKIPPED_FILES_LOGGER
from ..errors import StorageError
from . import advise, backends, bench, convert, download, export_import, runs, s3_server, verify
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Parser, UsageError

COMMANDS = (
    bench,
    advise,
    runs,
    export_import,
    download,
    convert,
    verify,
    backends,
    s3_server,
)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each parsed command's ``run`` is its ``run_from_args``."""
    from ..bench.places import DB_ENV, default_db_path

    parser = Parser(
        prog="python -m storage",
        description="Image Storage Lab: measure how fast and how compactly storage formats keep images.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    database = Parser(add_help=False)
    database.add_argument(
        "--db", default=str(default_db_path()), help=f"results database (default ${DB_ENV}, else {default_db_path()})"
    )
    for command in COMMANDS:
        command.add_parser(commands, database)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _terminate(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


def _set_up_warnings_and_signals() -> None:
    """Warnings as one ``warning: ...`` line each; SIGTERM ends a command as Ctrl+C does."""
    warnings.showwarning = _show_warning
    # Lance warns at every fork once it is imported. The forks here (the encoding pool, the
    # DataLoader workers of fork-safe formats) never use Lance; its own loaders spawn theirs.
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    logging.getLogger("storage.datasets").setLevel(logging.ERROR)  # its warnings also come as warnings.warn
    logging.getLogger(SKIPPED_FILES_LOGGER).setLevel(logging.WARNING)  # except which file --skip-bad left out, and why
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # a terminated run cleans up and is marked interrupted


def _one_line(error: BaseException) -> str:
    """An error as one line, its control characters escaped: a name from a file cannot drive the terminal."""
    from ..bench.results.schema import printable

    return printable(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code."""
    _set_up_warnings_and_signals()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        sys.stderr.write(f"error: {_one_line(error)}\n")
        return EXIT_USAGE
    except StorageError as error:
        sys.stderr.write(f"error: {_one_line(error)}\n")
        return EXIT_FAILED
    except OSError as error:
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        sys.stderr.write(f"error: {error.strerror or error}{where}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os._exit(EXIT_FAILED)
