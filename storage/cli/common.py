"""What the commands share: exit codes, the one-line usage error, argument types and output files.

An argument type turns one option's text into a value or refuses it with a sentence that
argparse prints after ``argument --OPTION:``; the run parameters (backends, counts,
operations, worker counts) are checked by the benchmark's own rules
(:func:`storage.bench.experiment.parse_parameter`), so a command line and a dashboard refuse
the same values in the same words.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from ..bench.experiment import RunParameterError, parse_parameter
from ..errors import BadImageFileError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
SKIP_BAD_HELP = (
    "image folders: skip files that are empty or not images Pillow reads (each is named on stderr) "
    "instead of stopping at the first; ignored for CIFAR-10, whose batches load whole or not at all"
)


class UsageError(Exception):
    """A bad argument found after parsing (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, with no usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


# -- argument types ------------------------------------------------------------------


def int_argument(minimum: int = 1, name: str = "", expected: str = "") -> Callable[[str], int]:
    """An argument type for a whole number of at least ``minimum``.

    Its error quotes the text given, after ``name`` when the option's own name does not
    say what the number counts: ``batch size '0' is not a positive whole number of images``.
    ``expected`` overrides the words for the range (a positive / non-negative integer).
    """
    expected = expected or {0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"a whole number of {minimum} or more"
    )
    label = f"{name} " if name else ""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{label}{text!r} is not {expected}")
        return value

    return whole_number


def run_parameter(field: str) -> Callable[[str], list]:
    """An argument type for a comma list of one run parameter (``backends``, ``counts``, ...).

    The items are checked by the benchmark's rules and come back in the order given; the
    run normalises them (sorted counts, no repeated backend) when it starts.
    """

    def comma_list(text: str) -> list:
        try:
            return parse_parameter(field, text)
        except RunParameterError as error:
            message = "give a comma-separated list" if error.value is None else str(error)
            raise argparse.ArgumentTypeError(message) from None

    return comma_list


def backend_name(text: str) -> str:
    """An argument type for one backend, registered and available here."""
    if "," in text:
        raise argparse.ArgumentTypeError(f"give one backend, not {text!r}")
    return run_parameter("backends")(text)[0]


def add_encoding_arguments(parser: argparse.ArgumentParser) -> None:
    """What a store keeps of each image, and the resizing at conversion: ``convert`` and ``bench`` alike."""
    group = parser.add_argument_group("what the stores keep")
    group.add_argument(
        "--keep-encoded",
        action="store_true",
        help="keep each source photo's file bytes as they are (encoding 'source'; backends that hold mixed sizes)",
    )
    group.add_argument(
        "--encoding",
        type=run_parameter("encoding"),
        default=None,
        metavar="ENCODING",
        help="raw (decoded pixels, the default), source (= --keep-encoded), png, jpeg, jpeg:QUALITY, webp "
        "(lossless) or webp:QUALITY",
    )
    group.add_argument(
        "--max-side",
        type=run_parameter("max_side"),
        default=None,
        metavar="N",
        help="resize photos whose longer side is above N px to N (never enlarging; Pillow's antialiased bilinear)",
    )
    group.add_argument(
        "--shorter-side",
        type=run_parameter("shorter_side"),
        default=None,
        metavar="N",
        help="resize photos so their shorter side is N px, as the usual 256-px ImageNet copies (never enlarging)",
    )


def encoding_from_args(args: argparse.Namespace) -> str:
    """The encoding ``--keep-encoded`` / ``--encoding`` ask for ("raw" when neither)."""
    if args.keep_encoded and args.encoding not in (None, "source"):
        raise UsageError(f"--keep-encoded keeps the source bytes; it cannot go with --encoding {args.encoding}")
    return "source" if args.keep_encoded else (args.encoding or "raw")


# -- shared checks and output ----------------------------------------------------------


def check_source_exists(source: str) -> None:
    if source not in ("auto", "sample", "cifar10") and not Path(source).expanduser().exists():
        raise UsageError(f"the source folder {source} does not exist")


@contextlib.contextmanager
def naming_skip_bad(skip_bad: bool) -> Iterator[None]:
    """Without ``--skip-bad``, a bad image file's error ends by naming the switch."""
    try:
        yield
    except BadImageFileError as error:
        if skip_bad or "--skip-bad" in str(error):  # a message about several files names it already
            raise
        raise BadImageFileError(f"{error}, or pass --skip-bad to skip such files") from None


def write_output(path: str, text: str) -> None:
    """Write ``text`` to the file an option names, making its folder first."""
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def loud(message: str) -> None:
    """A failure the user must not miss, on stderr: bold red on a terminal."""
    if sys.stderr.isatty():
        message = f"\033[1;31m{message}\033[0m"
    sys.stderr.write(message + "\n")
