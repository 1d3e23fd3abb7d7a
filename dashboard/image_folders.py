"""An image folder as the Run page shows it: every file that stops a run named, its size against the counts.

Plain Python (no Streamlit). The library stops at a folder's bad files and names the first
few in one sentence, as a command line should; a page has the room to list them, one a
line, beside the data source where they were chosen, and to say how to go on (fix them, or
tick **Skip bad files**, the command line's ``--skip-bad``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from storage import datasets
from storage.errors import DataNotFoundError

from .text import plain

SHOWN_BAD_FILES = 10  # a folder with thousands of bad files gets the first ten and how many more


@dataclass(frozen=True)
class BadFile:
    """One file a run cannot use: where it is in the folder and what is wrong with it."""

    name: str  # relative to the image folder
    problem: str  # the library's sentence without the path: "is empty (0 bytes); delete it or ..."


def bad_files(folder: str | os.PathLike[str]) -> list[BadFile]:
    """Every file of the image folder that a run without ``skip_bad`` stops at, in the folder's order.

    Lists the folder again, reading only each file's header, so that every bad file is
    named, not only the first few the library's error has room for.
    """
    root = Path(folder)
    found: list[tuple[Path, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.SkippedFilesWarning)  # the files are listed on the page
        try:
            datasets.list_image_folder(root, skip_bad=True, skipped=found)
        except DataNotFoundError:  # every file is bad: they were listed before this was said
            pass
    return [BadFile(_relative(path, root), message.removeprefix(f"{path} ")) for path, message in found]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def bad_files_message(folder: str, files: Sequence[BadFile], shown: int = SHOWN_BAD_FILES) -> str:
    """Markdown that names the bad files (the first ``shown``, then how many more) and how to go on."""
    what = "1 file" if len(files) == 1 else f"{len(files):,} files"
    lines = [f"**{what} in {plain(folder)} cannot be read**, so the run cannot start:", ""]
    lines.extend(f"- {plain(file.name)}: {plain(file.problem)}" for file in files[:shown])
    if len(files) > shown:
        lines.append(f"- and {len(files) - shown:,} more")
    lines.extend(
        ["", "Fix or remove them, or tick **Skip bad files** to run without them; then press **Check folder**."]
    )
    return "\n".join(lines)


def skipped_message(folder: str, skipped: Sequence[tuple[str, str]], shown: int = SHOWN_BAD_FILES) -> str:
    """One line naming the files **Skip bad files** leaves out (``(path, problem)`` each), the first ``shown``."""
    root = Path(folder)
    named = "; ".join(f"{_relative(Path(path), root)} {problem}".strip() for path, problem in skipped[:shown])
    more = f"; and {len(skipped) - shown:,} more" if len(skipped) > shown else ""
    what = "1 file that cannot be read is" if len(skipped) == 1 else f"{len(skipped):,} files that cannot be read are"
    return f"{what} left out: {named}{more}."


def repeat_note(image_count: int, counts: Sequence[int]) -> str | None:
    """What a count larger than the folder runs on: its images again, in order (None when every count fits).

    The engine cycles through a source that is too small (image ``i`` is image ``i % n``),
    so the reads are measured on repeated pictures; the page says so rather than let a run
    of 1,000 "photos" from a folder of 300 pass unnoticed.
    """
    larger = sorted(count for count in counts if count > image_count)
    if not larger:
        return None
    named = ", ".join(f"{count:,}" for count in larger)
    return (
        f"The folder holds {image_count:,} images: for {named} images they are repeated, in order, to reach the count."
    )
