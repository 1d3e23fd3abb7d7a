"""The question a user asks, in their own terms: their data, its full size, how it will be read.

Everything here is checked before anything is measured, and each refusal says what to give
instead, in the same words on the command line and the Advise page.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import StorageError

ACCESS_PATTERNS = ("shuffled", "sequential", "random", "append")
ACCESS_LABELS = {
    "shuffled": "shuffled training epochs through a DataLoader",
    "sequential": "sequential scans of the whole dataset",
    "random": "random lookups by id",
    "append": "appended as it arrives, one image at a time",
}
LOCATIONS = ("local",)  # a network file system and object storage join once their stores exist
DEFAULT_TIME_BUDGET_S = 120.0
MAX_SAMPLE_COUNT = 10_000  # the largest count measured: projections go from here to the full size

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_SIZE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_SECONDS = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*(s|sec|min|m|h)?\s*$", re.IGNORECASE)


class InvalidQuestionError(StorageError, ValueError):
    """A question the advice cannot answer as given (a count of 0, an unknown access pattern, ...)."""


def parse_size(text: object) -> int:
    """Bytes from ``"200GB"``, ``"1.5 TB"``, ``"500GiB"`` or a plain number of bytes (units of 1,000 unless ``iB``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text > 0:
        return int(text)
    match = _SIZE.match(str(text))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS or float(match.group(1).replace("_", "")) <= 0:
        raise InvalidQuestionError(
            f"disk budget {text!r} is not a size; give a number and a unit such as 200GB, 1.5TB or 500GiB"
        )
    return int(float(match.group(1).replace("_", "")) * _UNITS[unit])


def parse_seconds(text: object) -> float:
    """Seconds from ``"120s"``, ``"2min"``, ``"1h"`` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text > 0:
        return float(text)
    match = _SECONDS.match(str(text))
    if not match or float(match.group(1).replace("_", "")) <= 0:
        raise InvalidQuestionError(f"time budget {text!r} is not a duration; give seconds such as 120s, 2min or 1h")
    scale = {"min": 60, "m": 60, "h": 3600}.get((match.group(2) or "s").lower(), 1)
    return float(match.group(1).replace("_", "")) * scale


def format_bytes(count: float) -> str:
    """1.4 GB, 143 GB, 820 MB: sizes as a person reads them (units of 1,000)."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if abs(count) >= size:
            value = count / size
            return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{count:,.0f} B"


@dataclass(frozen=True)
class Question:
    """Which format should hold this dataset?

    Attributes:
        source: the data, read as a sample: ``"sample"``, ``"cifar10"`` or an image folder.
        count: how many images the full dataset has (1,281,167 for ImageNet's training set).
        access: how it will be read, one of :data:`ACCESS_PATTERNS`.
        workers: DataLoader worker processes of a shuffled epoch.
        batch_size: images per DataLoader batch.
        lossless: the images must read back exactly as the source holds them.
        disk_budget_bytes: the most disk the store may take (None: the free space where it goes).
        readable_by_others: other tools must read it without this library (a tar or a folder of files).
        location: where the store lives (``"local"`` disk for now).
        time_budget_s: how long the measurements on the sample may take.
        keep_encoded: photos: stores that can keep each file's own bytes do (else they hold pixels).
        max_side, shorter_side: resize at conversion, as ``convert`` does.
    """

    source: str = "sample"
    count: int = 100_000
    access: str = "shuffled"
    workers: int = 2
    batch_size: int = 256
    lossless: bool = False
    disk_budget_bytes: int | None = None
    readable_by_others: bool = False
    location: str = "local"
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    keep_encoded: bool = True
    max_side: int | None = None
    shorter_side: int | None = None
    backends: tuple[str, ...] = field(default_factory=tuple)
    """Formats to weigh (empty: the usual candidates for this kind of data)."""
    max_sample_count: int = MAX_SAMPLE_COUNT
    """The largest count measured on the sample (``benchmarks/advice_accuracy.py`` lowers it for photos)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["backends"] = list(self.backends)
        return data


def check_question(question: Question) -> Question:
    """``question`` with every field checked.

    Raises:
        InvalidQuestionError: naming the field and what to give instead.
    """
    if not isinstance(question.count, int) or isinstance(question.count, bool) or question.count < 1:
        raise InvalidQuestionError(f"image count {question.count!r} is not a positive whole number of images")
    if question.access not in ACCESS_PATTERNS:
        raise InvalidQuestionError(f"access pattern {question.access!r} is not one of: {', '.join(ACCESS_PATTERNS)}")
    if not isinstance(question.workers, int) or question.workers < 0:
        raise InvalidQuestionError(f"worker count {question.workers!r} is not a whole number of 0 or more")
    if question.location not in LOCATIONS:
        raise InvalidQuestionError(
            f"location {question.location!r} is not supported yet; the advice measures stores on: "
            + ", ".join(LOCATIONS)
        )
    if not isinstance(question.max_sample_count, int) or question.max_sample_count < 1:
        raise InvalidQuestionError(f"largest sample count {question.max_sample_count!r} is not a positive whole number")
    if question.time_budget_s <= 0:
        raise InvalidQuestionError(f"time budget {question.time_budget_s!r} is not a positive number of seconds")
    if question.disk_budget_bytes is not None and question.disk_budget_bytes <= 0:
        raise InvalidQuestionError(f"disk budget {question.disk_budget_bytes!r} is not a positive number of bytes")
    return question
