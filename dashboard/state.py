"""Page controls <-> URL query parameters, so that a link reproduces what someone saw.

Plain Python (no Streamlit): the pages read ``st.query_params`` into these dataclasses on
load, use them as the widgets' starting values, and write them back whenever a control
changes. Values that cannot be used (an unknown format, a count that is not a number) are
dropped with a note the page shows, never a crash.

Run page::

    ?formats=png,lmdb&max_count=1000&counts=5000&ops=write_batch,read_all&caches=warm,cold
     &repeats=1&source=auto&keep=1&run=<run id>

(``max_count=0``: no powers of ten, only the ``counts`` given.)

with, for photos, ``&source=photos`` (the bundled ImageNet sample) or a folder (and
``&skip_bad=1`` to leave out the folder's files that cannot be read), ``&encoding=source`` (what the stores keep: ``raw`` pixels, ``source`` for the photos' own
bytes, ``png``, ``jpeg:90``, ``webp``) and ``&shorter_side=256`` or ``&max_side=512``; and,
with the training loader among the operations, ``&workers=0,2&batch_size=256``.

``cold=1`` is accepted as a shorthand for ``caches=warm,cold``. Results page:
``?runs=<id>,<id>``. Explore page: ``?backend=lmdb&path=data/runs/<id>/lmdb/1000/store&id=7&page=2``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from storage.bench import CACHES, OPERATIONS, Experiment
from storage.bench.experiment import (  # noqa: F401 (pages use LOADER)
    DEFAULT_BATCH_SIZE,
    DEFAULT_WORKERS,
    LOADER,
    RunParameterError,
    experiment_from_params,
)
from storage.datasets import PROJECT_ROOT
from storage.encodings import parse_encoding
from storage.errors import StorageError

COUNT_STEPS = (1, 10, 100, 1_000, 10_000, 100_000)
NO_STEPS = 0  # the slider's "none": no powers of ten, only the other counts (a run of 10 and 20 images)
MAX_COUNT_CHOICES = (NO_STEPS, *COUNT_STEPS)
DEFAULT_FORMATS = ("png", "lmdb", "hdf5")  # the three formats of the original article
DEFAULT_MAX_COUNT = 1_000
DEFAULT_OPERATIONS = ("write_batch", "read_all", "read_random")
DEFAULT_CACHES = ("warm",)
DEFAULT_REPEATS = 3  # one repeat is too noisy on a shared machine (LMDB writes varied 15x between runs)
MAX_REPEATS = 50
SOURCE_KEYWORDS = ("auto", "sample", "cifar10")  # CIFAR-10, in memory
PHOTOS = "photos"  # the bundled ImageNet sample, a folder of real photos
BUNDLED_PHOTOS = PROJECT_ROOT / "data" / "imagenet-sample"
FOLDER = "folder"  # the source selectbox's choice for "a folder path"

# What the stores keep of each image (the engine's ``encoding``), as the Run page offers it.
ENCODING_LABELS = {
    "raw": "Pixels (decoded)",
    "source": "The photos' own bytes (as in the files)",
    "png": "Re-encoded as PNG",
    "jpeg:90": "Re-encoded as JPEG 90",
    "webp": "Re-encoded as WebP (lossless)",
}
# How images are resized at write time: never, to a shorter side of N pixels, to a longest side of N.
RESIZE_LABELS = {"none": "As they are", "shorter": "Shorter side", "longest": "Longest side"}
RESIZE_PARAMS = {"shorter": "shorter_side", "longest": "max_side"}
DEFAULT_SIDE = 256
MAX_SIDE = 8_192

OPERATION_LABELS = {
    "write_batch": "write a batch",
    "write_one": "write one at a time",
    "read_all": "read all",
    "read_random": "read random ids",
    "read_one": "read one (latency)",
    "loader": "training loader",
    "upload": "upload to S3",
    "first_epoch": "first epoch from S3",
    "later_epoch": "later epoch from S3",
    "remote_random": "random reads from S3",
}
WORKER_CHOICES = (0, 1, 2, 4, 8)  # DataLoader worker counts offered for the training loader
MAX_BATCH_SIZE = 65_536


def split_list(value: str | Sequence[str] | None) -> list[str]:
    """``"a,b , c"`` (or repeated parameters ``["a", "b,c"]``) as ``["a", "b", "c"]``."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    items = []
    for text in values:
        items.extend(part.strip() for part in str(text).split(","))
    return [item for item in items if item]


def _last(value: str | Sequence[str] | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(value[-1]) if len(value) else None


def parse_count(text: str) -> int:
    """One image count: ``"5000"``, ``"20_000"`` or ``"1e4"``; a positive whole number.

    Raises:
        ValueError: with a sentence a page can show as it is.
    """
    cleaned = text.strip().replace("_", "")
    try:
        value = float(cleaned) if re.fullmatch(r"\d+(\.\d*)?[eE]\d+", cleaned) else int(cleaned)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number of images; write whole numbers such as 5000") from None
    if value != int(value) or value <= 0:
        raise ValueError(f"{text.strip()!r} is not a positive whole number of images")
    return int(value)


def parse_counts(text: str | None) -> list[int]:
    """Counts separated by commas, semicolons or spaces (``"500, 5000 20000"``).

    Raises:
        ValueError: a part is not a positive whole number (the message names it).
    """
    if not text:
        return []
    return [parse_count(part) for part in re.split(r"[,;\s]+", text.strip()) if part]


def counts_for(max_count: int, other_counts: Iterable[int] = ()) -> list[int]:
    """The powers of ten up to ``max_count``, plus ``other_counts``, sorted and unique."""
    counts = {step for step in COUNT_STEPS if step <= max_count}
    counts.update(int(count) for count in other_counts)
    return sorted(counts)


def format_counts(counts: Iterable[int]) -> str:
    return ", ".join(f"{count:,}" for count in counts)


@dataclass
class RunControls:
    """Everything the Run page's controls say."""

    formats: list[str] = field(default_factory=lambda: list(DEFAULT_FORMATS))
    max_count: int = DEFAULT_MAX_COUNT
    other_counts: str = ""
    operations: list[str] = field(default_factory=lambda: list(DEFAULT_OPERATIONS))
    caches: list[str] = field(default_factory=lambda: list(DEFAULT_CACHES))
    repeats: int = DEFAULT_REPEATS
    source: str = "auto"
    keep: bool = False
    run_id: str | None = None
    workers: list[int] = field(default_factory=lambda: list(DEFAULT_WORKERS))
    batch_size: int = DEFAULT_BATCH_SIZE
    encoding: str = "raw"
    resize: str = "none"
    side: int = DEFAULT_SIDE
    location: str = ""  # where the data lives: "" a local folder, else s3://bucket/prefix at AWS_ENDPOINT_URL
    skip_bad: bool = False  # a folder's unreadable files are left out instead of stopping the run

    @property
    def source_kind(self) -> str:
        """``auto``, ``sample``, ``cifar10``, ``photos`` or ``folder``."""
        return self.source if self.source in (*SOURCE_KEYWORDS, PHOTOS) else FOLDER

    @property
    def photos(self) -> bool:
        """Whether the source is a folder of photos (the bundled sample or one given by path)."""
        return self.source_kind in (PHOTOS, FOLDER)

    @property
    def sides(self) -> dict[str, int | None]:
        """The engine's ``max_side`` and ``shorter_side`` for the resize chosen."""
        sides: dict[str, int | None] = {"max_side": None, "shorter_side": None}
        if self.resize in RESIZE_PARAMS:
            sides[RESIZE_PARAMS[self.resize]] = self.side
        return sides

    @property
    def folder(self) -> str:
        return self.source if self.source_kind == FOLDER else ""

    @property
    def skips_bad_files(self) -> bool:
        """Whether the run leaves out bad files: asked for, and a folder given by path to leave them out of."""
        return self.skip_bad and self.source_kind == FOLDER

    def counts(self) -> list[int]:
        """The counts to run. Raises ValueError if "Other counts" holds something that is not a count."""
        return counts_for(self.max_count, parse_counts(self.other_counts))


def parse_run_params(
    params: Mapping[str, str | Sequence[str]], available_backends: Sequence[str]
) -> tuple[RunControls, list[str]]:
    """The Run page's controls from query parameters, and notes on values that were ignored.

    Parameters that are absent keep their defaults, except that the default formats are
    limited to ``available_backends``.
    """
    controls = RunControls(formats=[name for name in DEFAULT_FORMATS if name in available_backends])
    notes: list[str] = []
    if "formats" in params:
        wanted = split_list(params["formats"])
        unknown = [name for name in wanted if name not in available_backends]
        if unknown:
            notes.append(
                f"unknown format(s) {', '.join(unknown)} in the link were ignored; "
                f"the formats are: {', '.join(available_backends)}"
            )
        controls.formats = list(dict.fromkeys(name for name in wanted if name in available_backends))
    extra_counts: list[int] = []
    max_text = _last(params.get("max_count"))
    if max_text and max_text.strip() == str(NO_STEPS):
        controls.max_count = NO_STEPS
    elif max_text:
        try:
            value = parse_count(max_text)
        except ValueError as error:
            notes.append(f"max_count: {error}")
        else:
            steps = [step for step in COUNT_STEPS if step <= value]
            controls.max_count = steps[-1] if steps else COUNT_STEPS[0]
            if value not in COUNT_STEPS:
                extra_counts.append(value)
    counts_text = params.get("counts")
    if counts_text is not None:
        for part in split_list(counts_text):
            try:
                extra_counts.append(parse_count(part))
            except ValueError as error:
                notes.append(f"counts: {error}")
    if extra_counts:
        controls.other_counts = ", ".join(str(count) for count in dict.fromkeys(extra_counts))
    if "ops" in params:
        wanted = split_list(params["ops"])
        unknown = [name for name in wanted if name not in OPERATIONS]
        if unknown:
            notes.append(
                f"unknown operation(s) {', '.join(unknown)} were ignored; operations are: {', '.join(OPERATIONS)}"
            )
        controls.operations = [name for name in OPERATIONS if name in wanted]
    if "caches" in params:
        wanted = split_list(params["caches"])
        unknown = [name for name in wanted if name not in CACHES]
        if unknown:
            notes.append(f"unknown cache state(s) {', '.join(unknown)} were ignored; use warm and/or cold")
        controls.caches = [name for name in CACHES if name in wanted] or list(DEFAULT_CACHES)
    if _last(params.get("cold")) in ("1", "true", "yes") and "cold" not in controls.caches:
        controls.caches = [name for name in CACHES if name in (*controls.caches, "cold")]
    repeats_text = _last(params.get("repeats"))
    if repeats_text:
        try:
            controls.repeats = min(MAX_REPEATS, parse_count(repeats_text))
        except ValueError as error:
            notes.append(f"repeats: {error}")
    source = _last(params.get("source"))
    if source:
        controls.source = source.strip()
    controls.keep = _last(params.get("keep")) in ("1", "true", "yes")
    controls.skip_bad = _last(params.get("skip_bad")) in ("1", "true", "yes")
    _parse_loader_params(params, controls, notes)
    _parse_photo_params(params, controls, notes)
    run_id = _last(params.get("run"))
    controls.run_id = run_id.strip() if run_id and run_id.strip() else None
    return controls, notes


def params_of_run(parameters: Mapping[str, object]) -> dict[str, str]:
    """The Run page's query parameters that set its controls as a recorded run had them.

    ``parameters`` is the run's recorded :class:`Experiment` (``RunRecord.parameters``). The
    counts come back as the powers of ten the run measured in a row from 1 (the slider;
    ``NO_STEPS`` if it did not measure 1 image), plus the others; the bundled photos' folder
    as ``photos``.
    """
    counts = sorted({int(count) for count in parameters.get("counts") or [] if isinstance(count, int)})
    max_count = NO_STEPS
    for step in COUNT_STEPS:
        if step not in counts:
            break
        max_count = step
    source = str(parameters.get("source") or "auto")
    if source not in SOURCE_KEYWORDS and _same_folder(source, BUNDLED_PHOTOS):
        source = PHOTOS
    params = {
        "formats": ",".join(map(str, parameters.get("backends") or [])),
        "max_count": str(max_count),
        "counts": ",".join(str(count) for count in counts if count not in counts_for(max_count)),
        "ops": ",".join(map(str, parameters.get("operations") or [])),
        "caches": ",".join(map(str, parameters.get("caches") or [])),
        "repeats": str(parameters.get("repeats") or DEFAULT_REPEATS),
        "source": source,
        "workers": ",".join(map(str, parameters.get("workers") or [])),
        "batch_size": str(parameters.get("batch_size") or DEFAULT_BATCH_SIZE),
        "encoding": str(parameters.get("encoding") or "raw"),
    }
    for name in RESIZE_PARAMS.values():
        if parameters.get(name):
            params[name] = str(parameters[name])
    if parameters.get("keep"):
        params["keep"] = "1"
    if parameters.get("skip_bad"):
        params["skip_bad"] = "1"
    return {key: value for key, value in params.items() if value}


def _same_folder(path: str, folder: Path) -> bool:
    try:
        return Path(path).expanduser().resolve() == folder.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def _parse_loader_params(params: Mapping[str, str | Sequence[str]], controls: RunControls, notes: list[str]) -> None:
    """``workers=0,2`` and ``batch_size=256``: the training loader's settings."""
    if "workers" in params:
        wanted, bad = [], []
        for part in split_list(params["workers"]):
            (wanted if part.isdigit() and int(part) in WORKER_CHOICES else bad).append(part)
        if bad:
            notes.append(
                f"worker count(s) {', '.join(bad)} were ignored; choose from {', '.join(map(str, WORKER_CHOICES))}"
            )
        controls.workers = sorted({int(part) for part in wanted}) or list(DEFAULT_WORKERS)
    batch_text = _last(params.get("batch_size"))
    if batch_text:
        try:
            controls.batch_size = min(MAX_BATCH_SIZE, parse_count(batch_text))
        except ValueError as error:
            notes.append(f"batch_size: {error}")


def _parse_photo_params(params: Mapping[str, str | Sequence[str]], controls: RunControls, notes: list[str]) -> None:
    """``encoding=source`` and ``shorter_side=256`` or ``max_side=512``: what stores keep, and the resize."""
    encoding = _last(params.get("encoding"))
    if encoding:
        try:
            name = str(parse_encoding(encoding))
        except StorageError:
            name = encoding
        if name in ENCODING_LABELS:
            controls.encoding = name
        else:
            notes.append(f"encoding {encoding!r} was ignored; the choices are: {', '.join(ENCODING_LABELS)}")
    given = [(kind, _last(params.get(name))) for kind, name in RESIZE_PARAMS.items() if _last(params.get(name))]
    if len(given) > 1:
        notes.append("shorter_side and max_side were both given; the shorter side is used")
    if given:
        kind, text = given[0]
        try:
            side = parse_count(text)
        except ValueError as error:
            notes.append(f"{RESIZE_PARAMS[kind]}: {error}")
        else:
            controls.resize, controls.side = kind, min(MAX_SIDE, side)


def run_params(controls: RunControls) -> dict[str, str]:
    """Query parameters that reproduce ``controls`` (the inverse of :func:`parse_run_params`)."""
    params = {
        "formats": ",".join(controls.formats),
        "max_count": str(controls.max_count),
        "ops": ",".join(controls.operations),
        "caches": ",".join(controls.caches),
        "repeats": str(controls.repeats),
        "source": controls.source,
    }
    try:
        slider = counts_for(controls.max_count)
        extra = [count for count in parse_counts(controls.other_counts) if count not in slider]
    except ValueError:
        extra = None
    if extra is None:
        params["counts"] = controls.other_counts  # keep what was typed; the page shows the error
    elif extra:
        params["counts"] = ",".join(str(count) for count in extra)
    if LOADER in controls.operations:
        params["workers"] = ",".join(str(count) for count in controls.workers)
        params["batch_size"] = str(controls.batch_size)
    if controls.encoding != "raw":
        params["encoding"] = controls.encoding
    if controls.resize in RESIZE_PARAMS:
        params[RESIZE_PARAMS[controls.resize]] = str(controls.side)
    if controls.keep:
        params["keep"] = "1"
    if controls.skips_bad_files:
        params["skip_bad"] = "1"
    if controls.run_id:
        params["run"] = controls.run_id
    return params


# The Run page's widget keys, per control.
RUN_WIDGETS = {
    "formats": "run_formats",
    "max_count": "run_max_count",
    "other_counts": "run_other_counts",
    "operations": "run_operations",
    "caches": "run_caches",
    "repeats": "run_repeats",
    "source_kind": "run_source_kind",
    "folder": "run_folder",
    "keep": "run_keep",
    "workers": "run_workers",
    "batch_size": "run_batch_size",
    "encoding": "run_encoding",
    "resize": "run_resize",
    "side": "run_side",
    "location": "run_location",
    "skip_bad": "run_skip_bad",
}
# What a link may set on the Run page; any of them in the address makes the page follow the link.
RUN_LINK_PARAMS = (
    "formats", "max_count", "counts", "ops", "caches", "cold", "repeats", "source",
    "encoding", "shorter_side", "max_side", "workers", "batch_size", "keep", "skip_bad",
)  # fmt: skip


def run_widget_values(controls: RunControls) -> dict[str, object]:
    """The Run page's widget values (by widget key) that show ``controls``."""
    return {
        RUN_WIDGETS["formats"]: list(controls.formats),
        RUN_WIDGETS["max_count"]: controls.max_count,
        RUN_WIDGETS["other_counts"]: controls.other_counts,
        RUN_WIDGETS["operations"]: list(controls.operations),
        RUN_WIDGETS["caches"]: list(controls.caches),
        RUN_WIDGETS["repeats"]: controls.repeats,
        RUN_WIDGETS["source_kind"]: controls.source_kind,
        RUN_WIDGETS["folder"]: controls.folder,
        RUN_WIDGETS["keep"]: controls.keep,
        RUN_WIDGETS["workers"]: list(controls.workers),
        RUN_WIDGETS["batch_size"]: controls.batch_size,
        RUN_WIDGETS["encoding"]: controls.encoding,
        RUN_WIDGETS["resize"]: controls.resize,
        RUN_WIDGETS["side"]: controls.side,
        RUN_WIDGETS["location"]: controls.location,
        RUN_WIDGETS["skip_bad"]: controls.skip_bad,
    }


def controls_from_widgets(values: Mapping[str, object], run_id: str | None = None) -> RunControls:
    """The inverse of :func:`run_widget_values`."""
    kind = values.get(RUN_WIDGETS["source_kind"], "auto")
    folder = str(values.get(RUN_WIDGETS["folder"]) or "").strip()
    return RunControls(
        formats=list(values.get(RUN_WIDGETS["formats"]) or []),
        max_count=int(values.get(RUN_WIDGETS["max_count"], DEFAULT_MAX_COUNT) or NO_STEPS),
        other_counts=str(values.get(RUN_WIDGETS["other_counts"]) or ""),
        operations=list(values.get(RUN_WIDGETS["operations"]) or []),
        caches=list(values.get(RUN_WIDGETS["caches"]) or []),
        repeats=int(values.get(RUN_WIDGETS["repeats"]) or DEFAULT_REPEATS),
        source=folder if kind == FOLDER else str(kind),
        keep=bool(values.get(RUN_WIDGETS["keep"])),
        run_id=run_id,
        workers=sorted(int(count) for count in values.get(RUN_WIDGETS["workers"]) or []),
        batch_size=int(values.get(RUN_WIDGETS["batch_size"]) or DEFAULT_BATCH_SIZE),
        encoding=str(values.get(RUN_WIDGETS["encoding"]) or "raw"),
        resize=str(values.get(RUN_WIDGETS["resize"]) or "none"),
        side=int(values.get(RUN_WIDGETS["side"]) or DEFAULT_SIDE),
        location=str(values.get(RUN_WIDGETS["location"]) or "").strip(),
        skip_bad=bool(values.get(RUN_WIDGETS["skip_bad"])),
    )


# The Run page's label of each run parameter, to name the control a RunParameterError is about.
CONTROL_LABELS = {
    "backends": "Formats",
    "counts": "Number of images",
    "operations": "Operations",
    "caches": "Page cache",
    "repeats": "Repeats",
    "source": "Data source",
    "workers": "DataLoader workers",
    "batch_size": "Batch size",
    "encoding": "Stores keep",
    "max_side": "Resize",
    "shorter_side": "Resize",
    "location": "Where the data lives",
    "skip_bad": "Skip bad files",
}
NO_SOURCE_FILES = (
    "CIFAR-10 is pixels with no encoded files to keep; choose a folder of photos (such as the bundled "
    "ImageNet sample) to keep their bytes, or a re-encoding (PNG, JPEG 90, WebP), or pixels"
)


def experiment_source(controls: RunControls) -> str:
    """The engine's ``source`` for ``controls``: a CIFAR-10 keyword, or the folder of photos."""
    return str(BUNDLED_PHOTOS) if controls.source_kind == PHOTOS else controls.source


def to_experiment(controls: RunControls, work_dir: str, source: str | None = None) -> Experiment:
    """The engine's experiment for ``controls``, checked by the parser the command line uses too.

    ``source``: the folder as the page resolved and allowed it (default: as typed, or the
    bundled photos).

    Raises:
        RunParameterError: a control whose value cannot run; ``CONTROL_LABELS[error.field]`` names it.
        ValueError: "Other counts" is not a list of counts (the message says which part).
    """
    if controls.encoding == "source" and not controls.photos:
        raise RunParameterError("encoding", "source", NO_SOURCE_FILES)
    return experiment_from_params(
        backends=list(controls.formats),
        counts=controls.counts(),
        operations=list(controls.operations),
        caches=list(controls.caches) or list(DEFAULT_CACHES),
        repeats=controls.repeats,
        source=source or experiment_source(controls),
        keep=controls.keep,
        skip_bad=controls.skips_bad_files,
        work_dir=str(work_dir),
        workers=list(controls.workers),
        batch_size=controls.batch_size,
        encoding=controls.encoding,
        location=controls.location or None,
        **controls.sides,
    )


def parse_run_ids(params: Mapping[str, str | Sequence[str]], key: str = "runs") -> list[str]:
    """Run ids from ``?runs=a,b`` (or repeated ``runs``), in order, without duplicates."""
    return list(dict.fromkeys(split_list(params.get(key))))


@dataclass
class ExploreControls:
    backend: str | None = None
    path: str = ""
    image_id: int = 0
    page: int = 1


def parse_explore_params(
    params: Mapping[str, str | Sequence[str]], available_backends: Sequence[str]
) -> tuple[ExploreControls, list[str]]:
    """The Explore page's controls from ``?backend=..&path=..&id=..&page=..``."""
    controls = ExploreControls()
    notes = []
    backend = _last(params.get("backend"))
    if backend:
        if backend in available_backends:
            controls.backend = backend
        else:
            notes.append(
                f"unknown backend {backend!r} in the link was ignored; backends are: {', '.join(available_backends)}"
            )
    controls.path = (_last(params.get("path")) or "").strip()
    for key, attribute, minimum in (("id", "image_id", 0), ("page", "page", 1)):
        text = _last(params.get(key))
        if text:
            try:
                value = int(text)
                if value < minimum:
                    raise ValueError
                setattr(controls, attribute, value)
            except ValueError:
                notes.append(f"{key}={text!r} in the link is not a whole number ≥ {minimum}; it was ignored")
    return controls, notes


def explore_params(controls: ExploreControls) -> dict[str, str]:
    params = {}
    if controls.backend:
        params["backend"] = controls.backend
    if controls.path:
        params["path"] = controls.path
    params["id"] = str(controls.image_id)
    if controls.page > 1:
        params["page"] = str(controls.page)
    return params


def share_url(base: str | None, params: Mapping[str, str]) -> str:
    """``base`` (the page's address, any query string dropped) with ``params``; commas stay readable."""
    query = urlencode({key: value for key, value in params.items() if value not in (None, "")}, safe=",/")
    address = (base or "").split("?", 1)[0].split("#", 1)[0]
    return f"{address}?{query}" if query else address


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0")


def link_hint(url: str) -> str | None:
    """What to tell someone about to share ``url`` when it only works on this computer (None if nothing)."""
    host = urlsplit(url).hostname or ""
    if host not in LOCAL_HOSTS and host.strip("[]") not in LOCAL_HOSTS:
        return None
    return (
        f"“{host}” is this computer: the link opens these runs here, or on another machine that runs the dashboard "
        "on the same results database (replace the address with that machine's). To show the result to someone "
        "else, send the picture from **Share** or the JSON from **Download JSON** (they can import it)."
    )
