"""What a results file may hold: the one schema exports are written with and imports are checked against.

A results JSON comes from anywhere (another machine, a chat, an attacker), and what it says
ends up in pages, charts and terminals. Every measurement of it is checked field by field:
its type (a count is a whole number, not ``"many"``), its range (no negative seconds, no
NaN), its names (a backend, an operation and a cache state this program knows, a run id
made of letters, digits, ``.``, ``_`` and ``-``), and the run it belongs to. The first
problem found is named, with where it is (``measurement 3: count is 'many', not a whole
number of 1 or more``), and nothing of the file is imported.

Text that passes (a source's description, an error message, a machine's name) may still
hold anything: :func:`printable` writes its control characters as escapes, so a terminal
or a page shows the text, never acts on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ... import registry
from ...encodings import parse_encoding
from ...errors import CorruptDataError, StorageError
from ..experiment import CACHES, CEILINGS, OPERATIONS
from .history import STATUSES

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
TIME_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
MAX_TEXT = 20_000  # characters in one text of a results file
MAX_DEPTH = 8  # nesting of lists and objects in free-form parts (environment, options)
MAX_NUMBER = 1e18  # no figure of a run comes near this; larger ones are not measurements

# A field's check takes its value and says what is wrong with it (None: nothing).
Check = Callable[[Any], "str | None"]


class InvalidResultsError(CorruptDataError):
    """A results file that does not follow the schema; the message names the first problem and where it is."""


def printable(text: object) -> str:
    """``text`` with each control or invisible formatting character written as its escape (``\\x1b``, ``\\n``).

    What a results file names is shown as it is written, and an ANSI sequence, a
    carriage return or a right-to-left override in it cannot move the cursor, recolour a
    terminal or disguise the text around it.
    """
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in str(text))


def shown(value: Any, limit: int = 60) -> str:
    """A value as a problem message quotes it: its repr, escaped, cut at ``limit`` characters."""
    text = printable(repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- checks of one value ---------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(minimum: float = 0.0, nullable: bool = True) -> Check:
    """A finite number of at least ``minimum`` (None allowed when ``nullable``)."""

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not _is_number(value) or not math.isfinite(value) or not minimum <= value <= MAX_NUMBER:
            return f"is {shown(value)}, not a number of {minimum:g} or more"
        return None

    return check


def whole(minimum: int = 0, nullable: bool = True) -> Check:
    """A whole number (an int, not ``True`` nor ``3.5``) of at least ``minimum``."""

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_NUMBER:
            return f"is {shown(value)}, not a whole number of {minimum} or more"
        return None

    return check


def flag(nullable: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if (value is None and nullable) or isinstance(value, bool):
            return None
        return f"is {shown(value)}, not true or false"

    return check


def text(nullable: bool = True, pattern: re.Pattern[str] | None = None, what: str = "") -> Check:
    """Text of at most :data:`MAX_TEXT` characters, matching ``pattern`` (described as ``what``) when given."""

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            return f"is {shown(value)}, not text"
        if len(value) > MAX_TEXT:
            return f"is {len(value):,} characters long, more than the {MAX_TEXT:,} allowed"
        if pattern is not None and not pattern.fullmatch(value):
            return f"is {shown(value)}, not {what}"
        return None

    return check


def one_of(choices: Callable[[], tuple[str, ...] | list[str]], what: str) -> Check:
    """One of the names ``choices()`` gives (read when checked: backends may be registered later)."""

    def check(value: Any) -> str | None:
        known = list(choices())
        if not isinstance(value, str) or value not in known:
            return f"is {shown(value)}, not a known {what} ({', '.join(known)})"
        return None

    return check


def list_of(item: Check, nullable: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, list):
            return f"is {shown(value)}, not a list"
        for index, element in enumerate(value):
            problem = item(element)
            if problem:
                return f"item {index} {problem}"
        return None

    return check


def plain_json(value: Any, depth: int = 0) -> str | None:
    """What is wrong with a free-form value: only text, finite numbers, true/false, null, lists and objects."""
    if depth > MAX_DEPTH:
        return f"is nested more than {MAX_DEPTH} levels deep"
    if value is None or isinstance(value, bool):
        return None
    if _is_number(value):
        return None if math.isfinite(value) else f"is {shown(value)}, not a finite number"
    if isinstance(value, str):
        return text()(value)
    if isinstance(value, list):
        for index, element in enumerate(value):
            problem = plain_json(element, depth + 1)
            if problem:
                return f"item {index} {problem}"
        return None
    if isinstance(value, dict):
        for key, element in value.items():
            problem = text(nullable=False)(key) or plain_json(element, depth + 1)
            if problem:
                return f"field {shown(key)} {problem}"
        return None
    return f"is {shown(value)}, which a results file cannot hold"


def record(fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    """An object whose named fields pass their checks (others only :func:`plain_json`)."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"is {shown(value)}, not an object"
        for name in required:
            if name not in value:
                return f"has no field {name!r}"
        for key, element in value.items():
            problem = fields[key](element) if key in fields else plain_json(element, 1)
            if problem:
                return f"field {shown(key)} {problem}"
        return None

    return check


def nullable(check: Check) -> Check:
    """``check``, or None."""

    def either(value: Any) -> str | None:
        return None if value is None else check(value)

    return either


def _encoding(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"is {shown(value)}, not text"
    try:
        parse_encoding(value)
    except StorageError:
        return f"is {shown(value)}, not an encoding (raw, source, png, jpeg:Q, webp or webp:Q)"
    return None


def known_backends() -> list[str]:
    """Every backend registered here (usable or not), and the loader's ceilings (in memory, the source files)."""
    return [*registry.backends(available_only=False), *CEILINGS]


# -- the schema ------------------------------------------------------------------------

RUN_ID = text(nullable=False, pattern=RUN_ID_PATTERN, what="a run id (letters, digits, '.', '_', '-'; at most 80)")
TIME = text(pattern=TIME_PATTERN, what="a UTC time such as 2026-01-31T12:00:00Z")
SECONDS = number()
BYTES = whole()
BACKEND = one_of(known_backends, "backend")
MACHINE_LOAD = record(
    {
        "load_average": number(),
        "other_cpu_seconds": SECONDS,
        "timed_seconds": SECONDS,
        "other_cores": number(),
        "cores": whole(1),
        "disturbed": flag(nullable=True),
    }
)
RUN_NAME = text(pattern=re.compile(r".{0,100}", re.DOTALL), what="a run name of at most 100 characters")

MEASUREMENT_FIELDS: dict[str, Check] = {
    "run_id": RUN_ID,
    "backend": BACKEND,
    "count": whole(1, nullable=False),
    "operation": one_of(lambda: OPERATIONS, "operation"),
    "cache": one_of(lambda: CACHES, "cache state"),
    "repeats": whole(nullable=False),
    "samples": list_of(number(nullable=False)),
    "seconds_median": SECONDS,
    "seconds_min": SECONDS,
    "seconds_max": SECONDS,
    "seconds_iqr": SECONDS,
    "seconds_per_image": SECONDS,
    "images_per_second": number(),
    "mb_per_second": number(),
    "apparent_bytes": BYTES,
    "allocated_bytes": BYTES,
    "files": whole(),
    "bytes_per_image": number(),
    "verified": flag(),
    "psnr": number(),
    "evicted": flag(nullable=True),
    "error": text(),
    "images": whole(nullable=False),
    "pixel_bytes": whole(nullable=False),
    "includes_sync": flag(),
    "sync_seconds": SECONDS,
    "flush_seconds": SECONDS,
    "resident_bytes": BYTES,
    "warmup": flag(),
    "peak_rss_bytes": BYTES,
    "method": text(nullable=False),
    "workers": whole(),
    "batch_size": whole(1),
    "first_batch_seconds": SECONDS,
    "batch_p50_seconds": SECONDS,
    "batch_p99_seconds": SECONDS,
    "ceiling_images_per_second": number(),
    "fraction_of_ceiling": number(),
    "ceiling": text(),
    "first_epoch_seconds": SECONDS,
    "order": text(),
    "loader_path": text(),
    "transform": text(),
    "decoder": text(),
    "read_seconds_per_batch": SECONDS,
    "decode_seconds_per_batch": SECONDS,
    "transform_seconds_per_batch": SECONDS,
    "images_per_second_per_worker": number(),
    "load_average": number(),
    "other_cpu_seconds": SECONDS,
    "encoding": _encoding,
    "resize": text(nullable=False),
    "source_bytes": BYTES,
    "location": text(),
    "endpoint": text(),
    "read_method": text(),
    "requests": number(),
    "transferred_bytes": number(),
    "requests_by_type": lambda value: None if value is None else record({})(value),
    "projected_seconds": SECONDS,
    "projected_images_per_second": number(),
    "projection": lambda value: None if value is None else record({})(value),
    "cluster_workers": whole(1),
    "shards": whole(1),
    "per_worker": list_of(plain_json, nullable=True),
    "machine_load": nullable(MACHINE_LOAD),
}
"""Every field of a :class:`~storage.bench.Measurement` and what it may hold."""
MEASUREMENT_REQUIRED = ("run_id", "backend", "count", "operation", "cache")

PARAMETER_FIELDS: dict[str, Check] = {
    "backends": list_of(BACKEND),
    "counts": list_of(whole(1, nullable=False)),
    "operations": list_of(one_of(lambda: OPERATIONS, "operation")),
    "caches": list_of(one_of(lambda: CACHES, "cache state")),
    "repeats": whole(1, nullable=False),
    "source": text(),
    "skip_bad": flag(),
    "seed": whole(nullable=False),
    "keep": flag(),
    "work_dir": text(),
    "preview_ids": whole(nullable=False),
    "workers": list_of(whole(nullable=False)),
    "batch_size": whole(1, nullable=False),
    "encoding": _encoding,
    "max_side": whole(1),
    "shorter_side": whole(1),
    "location": text(),
    "endpoint_url": text(),
    "metrics_url": text(),
    "network_rtt_ms": number(),
    "network_mbit": number(),
    "network_concurrency": whole(1),
}
SOURCE_FIELDS: dict[str, Check] = {
    "spec": text(),
    "kind": text(),
    "root": text(),
    "description": text(),
    "images": whole(),
    "class_names": list_of(text(nullable=False)),
}
ENVIRONMENT_FIELDS: dict[str, Check] = {
    "hostname": text(),
    "cpu_model": text(),
    "filesystem": record({"type": text(), "mount_point": text(), "device": text()}),
}
RUN_FIELDS: dict[str, Check] = {
    "id": RUN_ID,
    "started_at": TIME,
    "finished_at": TIME,
    "status": one_of(lambda: STATUSES, "run status"),
    "parameters": record(PARAMETER_FIELDS),
    "source": record(SOURCE_FIELDS),
    "error": text(),
    "name": RUN_NAME,
}
ROW_FIELDS: dict[str, Check] = {
    **MEASUREMENT_FIELDS,
    "run": record(RUN_FIELDS),
    "environment": record(ENVIRONMENT_FIELDS),
}
"""An exported row: a measurement, with its run and the environment it ran in."""


def row_problem(row: Any) -> str | None:
    """What is wrong with one exported row (None if nothing): the first field that breaks the schema."""
    problem = record(ROW_FIELDS, MEASUREMENT_REQUIRED)(row)
    if problem:
        return problem
    run = row.get("run")
    if isinstance(run, dict) and "id" in run and run["id"] != row["run_id"]:
        return f"belongs to run {shown(row['run_id'])}, but its field 'run' is about run {shown(run['id'])}"
    return None


def check_rows(rows: Any, done: str = "imported") -> list[dict[str, Any]]:
    """The rows of a results file, each checked against the schema; ``done`` is what is refused (imported, exported).

    Raises:
        InvalidResultsError: naming the first problem: which measurement, which field, what it holds.
    """
    if not isinstance(rows, list):
        raise InvalidResultsError(f"the JSON is {shown(rows)}, not a list of measurements exported by this program")
    for index, row in enumerate(rows):
        problem = row_problem(row)
        if problem:
            raise InvalidResultsError(f"measurement {index} of the JSON: {_subject(problem)}; nothing was {done}")
    return rows


def _subject(problem: str) -> str:
    """``is 5, not an object`` as ``it is 5, not an object``; ``field 'count' is ...`` as it is."""
    return problem if problem.startswith("field ") else f"it {problem}"


def stored_run_problem(run: Mapping[str, Any], measurements: list[dict[str, Any]]) -> str | None:
    """What stops a run held in a database from being shown (None if nothing), by the same schema.

    ``run`` holds the run's stored fields (``id``, ``status``, ``parameters``, ``source``,
    ``environment``, ...), ``measurements`` its measurements as dicts.
    """
    stored = {**RUN_FIELDS, "environment": record(ENVIRONMENT_FIELDS)}
    fields = {name: run.get(name) for name in stored if name in run}
    problem = record(stored)(fields)
    if problem:
        return f"its record: {_subject(problem)}"
    for index, measurement in enumerate(measurements):
        problem = record(MEASUREMENT_FIELDS, MEASUREMENT_REQUIRED)(measurement)
        if problem:
            return f"its measurement {index}: {_subject(problem)}"
    return None
