"""What a benchmark run measures: backends × image counts × operations × cache states × repeats."""

from __future__ import annotations

import contextlib
import importlib.util
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .. import registry
from ..encodings import parse_encoding
from ..errors import StorageError, UnknownBackendError
from ..loader_settings import DECODE_DEVICES, DECODERS, TRANSFORMS

STORAGE_OPERATIONS = ("write_batch", "write_one", "read_all", "read_random", "read_one")
LOADER = "loader"  # one shuffled epoch through a PyTorch DataLoader (imports torch when it runs)
# Stores in object storage (``location``): the upload, a first epoch with nothing cached, a later epoch, random reads.
OBJECT_STORAGE_OPERATIONS = ("upload", "first_epoch", "later_epoch", "remote_random")
EPOCH_OPERATIONS = ("first_epoch", "later_epoch")
OPERATIONS = (*STORAGE_OPERATIONS, LOADER, *OBJECT_STORAGE_OPERATIONS)
DEFAULT_OPERATIONS = STORAGE_OPERATIONS  # the loader is asked for by name: it needs torch and takes longer
WRITE_OPERATIONS = ("write_batch", "write_one")
READ_OPERATIONS = ("read_all", "read_random", "read_one")
CACHES = ("warm", "cold")
DEFAULT_BACKENDS = ["png", "lmdb", "hdf5"]
DEFAULT_COUNTS = [1, 10, 100, 1_000, 10_000, 100_000]
DEFAULT_WORKERS = [0, 2]
DEFAULT_BATCH_SIZE = 256
CEILING_BACKEND = "in-memory"  # the loader's "no storage" ceiling: the same DataLoader over images in memory
DECODE_CEILING_BACKEND = "source-files"  # the kept-bytes ceiling: the same DataLoader over the encoded files
CEILINGS = (CEILING_BACKEND, DECODE_CEILING_BACKEND)

RANDOM_READS = 1_000  # read_random reads min(N, 1,000) shuffled ids
LATENCY_READS = 100  # read_one times min(N, 100) single reads, each on its own
VERIFY_SAMPLE = 1_000  # ids read back to check a store when no full read follows
WARMUP_MAX_COUNT = 1_000  # counts up to this get one unrecorded warm-up repeat


class InvalidExperimentError(StorageError, ValueError):
    """An experiment that cannot run: an unknown operation, a count that is not positive, ..."""


@dataclass
class Experiment:
    """One benchmark run's parameters; with the same seed and source it repeats exactly.

    Attributes:
        backends: registered backend names.
        counts: image counts; each backend writes a fresh store of each count.
        operations: a subset of :data:`OPERATIONS`.
        caches: a subset of :data:`CACHES`; reads are measured in each cache state, writes
            once (the page cache state before a write does not matter to it).
        repeats: recorded repeats of every measurement.
        source: ``"auto"``, ``"sample"``, ``"cifar10"`` or a folder path.
        skip_bad: an image-folder source skips files it cannot read instead of failing.
        seed: seeds the random ids of ``read_random``, ``read_one`` and the previews.
        keep: keep the stores under ``work_dir/<run id>`` after the run.
        work_dir: where each run makes its own folder.
        preview_ids: how many ids are read back from each store for previews.
        backend_options: options per backend name, passed to ``open_store``.
        workers: DataLoader worker counts the ``loader`` operation is measured with.
        batch_size: images per DataLoader batch for the ``loader`` operation.
        encoding: what the stores keep of each image (see :mod:`storage.encodings`):
            ``"raw"`` pixels, ``"source"`` (each photo file's own bytes; ``--keep-encoded``)
            or a re-encoding (``"png"``, ``"jpeg:90"``, ``"webp"``). Applied to every backend
            that can hold encoded bytes; the others store pixels, and each measurement says
            which it was.
        max_side, shorter_side: resize every image to fit at write time (never enlarging),
            as FFCV's ``max_resolution`` and the 256-px ImageNet copies do; None: as they are.
        transform: what the ``loader`` does to each image (:data:`storage.loader_settings.TRANSFORMS`):
            ``"none"``, ``"train"`` (RandomResizedCrop(224) + flip) or ``"val"`` (Resize(256) + CenterCrop(224)).
        decoder: what decodes kept bytes in the loader: ``"pillow"``, ``"simplejpeg"`` or ``"torchvision"``.
        decode_device: ``"cpu"`` (in the workers) or ``"cuda"`` (torchvision's decode_jpeg on the GPU).
        location: where the object-storage operations put each store: ``s3://bucket/prefix``
            (each store at ``<prefix>/<run id>/<backend>/<count>``); None: a local folder only.
        endpoint_url: the S3 endpoint (None: ``AWS_ENDPOINT_URL``, else AWS); never with credentials in it.
        metrics_url: the server's Prometheus metrics, for requests and bytes (None: not counted).
        network_rtt_ms, network_mbit, network_concurrency: the network each object-storage
            figure is projected to (round trip, bandwidth, requests in flight; None: the readers').
    """

    backends: list[str] = field(default_factory=lambda: list(DEFAULT_BACKENDS))
    counts: list[int] = field(default_factory=lambda: list(DEFAULT_COUNTS))
    operations: list[str] = field(default_factory=lambda: list(DEFAULT_OPERATIONS))
    caches: list[str] = field(default_factory=lambda: ["warm"])
    repeats: int = 3
    source: str = "auto"
    skip_bad: bool = False
    seed: int = 0
    keep: bool = False
    work_dir: str = "data/runs"
    preview_ids: int = 4
    backend_options: dict[str, dict] = field(default_factory=dict)
    workers: list[int] = field(default_factory=lambda: list(DEFAULT_WORKERS))
    batch_size: int = DEFAULT_BATCH_SIZE
    encoding: str = "raw"
    max_side: int | None = None
    shorter_side: int | None = None
    transform: str = "none"
    decoder: str = "pillow"
    decode_device: str = "cpu"
    location: str | None = None
    endpoint_url: str | None = None
    metrics_url: str | None = None
    network_rtt_ms: float = 20.0
    network_mbit: float = 1000.0
    network_concurrency: int | None = None

    def store_options(self, backend: str) -> dict[str, Any]:
        """What ``open_store`` is given for ``backend``: its own options, the encoding where it
        takes one, and the resizing."""
        options: dict[str, Any] = {}
        if self.encoding != "raw" and registry.store_class(backend).takes_encodings():
            options["encoding"] = self.encoding
        for name in ("max_side", "shorter_side"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return {**options, **self.backend_options.get(backend, {})}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


class RunParameterError(InvalidExperimentError):
    """One run parameter that cannot be used.

    ``field`` is the :class:`Experiment` attribute it is for and ``value`` the item refused,
    as it was given (``None`` when nothing was given). The message says what to give
    instead; a surface that names the field its own way (the command line's ``--ops``, the
    Run page's "Operations") puts its name in front.
    """

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value

    def __reduce__(self):
        return type(self), (self.field, self.value, str(self))


_WORKER_COUNT_ERROR = (
    "worker count {value!r} is not a whole number of 0 or more "
    "(0 reads in the main process; N starts N DataLoader worker processes)"
)


def _items(field: str, value: object, empty: str | None) -> list:
    """A list parameter's items: a list (or any iterable) as it is, a text split at its commas.

    ``empty`` is the error for no item at all; ``None`` lets the list be empty.
    """
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise RunParameterError(field, value, f"{field} {value!r} is not a list")
    if not items and empty is not None:
        raise RunParameterError(field, None, empty)
    return items


def _whole_number(field: str, value: object, minimum: int, error: str) -> int:
    """``value``, an int or the text of one (``"20_000"`` too), as an int of at least ``minimum``.

    ``error`` is the message, with ``{value!r}`` where the value goes.
    """
    number = None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = int(value.replace("_", ""))
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
    if number is None or number < minimum:
        raise RunParameterError(field, value, error.format(value=value))
    return number


def _backend_names(value: object) -> list[str]:
    names = _items("backends", value, "choose at least one backend")
    for name in names:
        try:
            reason = registry.backend_info(name).unavailable_reason
        except UnknownBackendError as error:  # its message lists the registered names
            raise RunParameterError("backends", name, str(error)) from None
        if reason:
            raise RunParameterError("backends", name, f"backend {name!r} is unavailable here: {reason}")
    return names


def _image_counts(value: object) -> list[int]:
    items = _items("counts", value, "choose at least one image count")
    return [_whole_number("counts", item, 1, "image count {value!r} is not a positive integer") for item in items]


def _operations(value: object) -> list[str]:
    operations = _items("operations", value, f"choose at least one operation of: {', '.join(OPERATIONS)}")
    for operation in operations:
        if operation not in OPERATIONS:
            raise RunParameterError(
                "operations", operation, f"unknown operation {operation!r}; operations are: {', '.join(OPERATIONS)}"
            )
    return operations


def _caches(value: object) -> list[str]:
    caches = _items("caches", value, None) or ["warm"]
    for cache in caches:
        if cache not in CACHES:
            raise RunParameterError(
                "caches", cache, f"unknown cache state {cache!r}; cache states are: {', '.join(CACHES)}"
            )
    return caches


def _encoding(value: object) -> str:
    try:
        return str(parse_encoding(value))
    except StorageError as error:
        raise RunParameterError("encoding", value, str(error)) from None


def _side(field: str) -> Callable[[object], int | None]:
    what = field.replace("_", " ")

    def check(value: object) -> int | None:
        if value is None or value == "":
            return None
        return _whole_number(field, value, 1, what + " {value!r} is not a whole number of pixels, 1 or more")

    return check


def _choice(field: str, choices: tuple[str, ...]) -> Callable[[object], str]:
    what = field.replace("_", " ")

    def check(value: object) -> str:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in choices:
            raise RunParameterError(field, value, f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
        return text

    return check


def _worker_counts(value: object) -> list[int]:
    items = _items("workers", value, "choose at least one DataLoader worker count (0 reads in the main process)")
    return [_whole_number("workers", item, 0, _WORKER_COUNT_ERROR) for item in items]


# Each run parameter's check: it takes a plain value and returns it converted, items in the order given.
_PARAMETERS: dict[str, Callable[[object], object]] = {
    "backends": _backend_names,
    "counts": _image_counts,
    "operations": _operations,
    "caches": _caches,
    "repeats": lambda value: _whole_number("repeats", value, 1, "repeats {value!r} is not a positive integer"),
    "seed": lambda value: _whole_number("seed", value, 0, "seed {value!r} is not a non-negative integer"),
    "workers": _worker_counts,
    "batch_size": lambda value: _whole_number("batch_size", value, 1, "batch size {value!r} is not a positive integer"),
    "encoding": _encoding,
    "max_side": _side("max_side"),
    "shorter_side": _side("shorter_side"),
    "transform": _choice("transform", TRANSFORMS),
    "decoder": _choice("decoder", DECODERS),
    "decode_device": _choice("decode_device", DECODE_DEVICES),
}


def parse_parameter(field: str, value: object) -> Any:
    """One run parameter from a plain value, checked and converted, its items in the order given.

    A list (``backends``, ``counts``, ``operations``, ``caches``, ``workers``) may be given as
    a list or as the text of one, separated by commas; a number (``repeats``, ``seed``,
    ``batch_size``) as an int or its text. Backends must be registered and available here.

    Raises:
        RunParameterError: naming ``field`` and the value refused.
        KeyError: ``field`` is not one of these parameters.
    """
    return _PARAMETERS[field](value)


def experiment_from_params(**params: Any) -> Experiment:
    """The run that plain values describe, every parameter checked: how the command line and
    the dashboard both build their runs.

    ``params`` are :class:`Experiment` attributes, as :func:`parse_parameter` takes them;
    those left out keep their defaults. The result is normalised as :func:`validate`
    leaves it (counts sorted, operations in their usual order, no name twice).

    Raises:
        RunParameterError: a parameter that cannot be used; ``error.field`` names it.
        TypeError: a name that is not an attribute of :class:`Experiment`.
    """
    if "backends" in params:  # available here, not only registered: a surface offers only those
        params["backends"] = parse_parameter("backends", params["backends"])
    return validate(Experiment(**params))


def validate(experiment: Experiment) -> Experiment:
    """Check every parameter before anything is written; return a normalised copy.

    Raises:
        UnknownBackendError: a backend that is not registered (the message lists the valid ones).
        RunParameterError: anything else that is wrong, said in one sentence naming the field.
    """
    backends = _items("backends", experiment.backends, "choose at least one backend")
    for name in backends:
        registry.backend_info(name)  # raises UnknownBackendError listing the valid names
    counts = parse_parameter("counts", experiment.counts)
    operations = parse_parameter("operations", experiment.operations)
    caches = parse_parameter("caches", experiment.caches)
    loader = LOADER in operations
    if loader and importlib.util.find_spec("torch") is None:
        raise RunParameterError(
            "operations",
            LOADER,
            "the loader operation needs PyTorch, which is not installed: python3 -m pip install -r requirements.txt",
        )
    repeats, seed = parse_parameter("repeats", experiment.repeats), parse_parameter("seed", experiment.seed)
    preview_ids = _whole_number(
        "preview_ids", experiment.preview_ids, 0, "preview_ids {value!r} is not a non-negative integer"
    )
    unknown = sorted(set(experiment.backend_options) - set(backends))
    if unknown:
        raise RunParameterError(
            "backend_options", unknown, f"backend_options name backends that are not in the run: {', '.join(unknown)}"
        )
    workers, batch_size = list(experiment.workers), experiment.batch_size
    transform, decoder, device = experiment.transform, experiment.decoder, experiment.decode_device
    remote = _check_location(experiment, operations)
    if loader or remote:  # unused otherwise, so not held against the run
        workers = sorted(set(parse_parameter("workers", experiment.workers)))
        batch_size = parse_parameter("batch_size", experiment.batch_size)
        transform, decoder = parse_parameter("transform", transform), parse_parameter("decoder", decoder)
        device = _decode_device(parse_parameter("decode_device", device), decoder)
    return replace(
        experiment,
        backends=list(dict.fromkeys(backends)),
        counts=sorted(set(counts)),
        operations=[op for op in OPERATIONS if op in operations],
        caches=[cache for cache in CACHES if cache in caches],
        repeats=repeats,
        source=str(experiment.source),
        skip_bad=bool(experiment.skip_bad),
        seed=seed,
        keep=bool(experiment.keep),
        work_dir=str(experiment.work_dir),
        preview_ids=preview_ids,
        backend_options={name: dict(options) for name, options in experiment.backend_options.items()},
        workers=workers,
        batch_size=batch_size,
        transform=transform,
        decoder=decoder,
        decode_device=device,
        encoding=parse_parameter("encoding", experiment.encoding),
        max_side=parse_parameter("max_side", experiment.max_side),
        shorter_side=parse_parameter("shorter_side", experiment.shorter_side),
        network_rtt_ms=_network_figure("network_rtt_ms", experiment.network_rtt_ms),
        network_mbit=_network_figure("network_mbit", experiment.network_mbit, positive=True),
        network_concurrency=None
        if experiment.network_concurrency is None
        else _whole_number(
            "network_concurrency",
            experiment.network_concurrency,
            1,
            "network concurrency {value!r} is not a positive integer",
        ),
    )


def _decode_device(device: str, decoder: str) -> str:
    """``"cuda"`` only with torchvision's decoder and a CUDA device here."""
    if device != "cuda":
        return device
    if decoder != "torchvision":
        raise RunParameterError(
            "decode_device",
            device,
            f"decoding on a CUDA device is torchvision's decode_jpeg: give decoder 'torchvision', not {decoder!r}",
        )
    import torch

    if not torch.cuda.is_available():
        raise RunParameterError(
            "decode_device", device, "no CUDA device here (torch.cuda.is_available() is False): decode on the cpu"
        )
    return device


def has_own_loader(backend: str) -> bool:
    """Whether ``backend``'s library loads it with its own dataset and sampler (its store class's
    ``torch_shuffles``): the loader then measures that order too, beside the common shuffle."""
    return bool(getattr(registry.store_class(backend), "torch_shuffles", False))


def loader_round(experiment: Experiment, with_ceilings: bool, photos: bool = False) -> list[str]:
    """The backends of one interleaved loader round at one worker count, in the order they take turns.

    The ceilings first (:data:`CEILING_BACKEND`, and for a folder of photos
    :data:`DECODE_CEILING_BACKEND`) when ``with_ceilings``; then every backend, and a backend
    with a loader of its own (:func:`has_own_loader`) a second time, for its own order.
    """
    names = [CEILING_BACKEND, *([DECODE_CEILING_BACKEND] if photos else [])] if with_ceilings else []
    for backend in experiment.backends:
        names.extend([backend, backend] if has_own_loader(backend) else [backend])
    return names


def _check_location(experiment: Experiment, operations: list[str]) -> bool:
    """Whether the run measures object storage; refuses a location that cannot be used, or operations without one."""
    wanted = [op for op in operations if op in OBJECT_STORAGE_OPERATIONS]
    if experiment.location is None:
        if wanted:
            raise RunParameterError(
                "location",
                None,
                f"{', '.join(wanted)} measure a store in object storage: give a location, s3://bucket/prefix",
            )
        return False
    from ..s3 import S3Location

    try:
        S3Location.parse(experiment.location, experiment.endpoint_url)
    except StorageError as error:
        raise RunParameterError("location", experiment.location, str(error)) from None
    for name in ("endpoint_url", "metrics_url"):
        value = getattr(experiment, name)
        if value is not None and ("@" in value.partition("://")[2].partition("/")[0] or "?" in value):
            raise RunParameterError(
                name,
                "(hidden)",
                f"the {name.replace('_', ' ')} carries a user, password or query; give the "
                "credentials through the AWS chain (AWS_ACCESS_KEY_ID, AWS_PROFILE), never in a URL",
            )
    if not wanted:
        raise RunParameterError(
            "operations",
            None,
            f"a location is measured by: {', '.join(OBJECT_STORAGE_OPERATIONS)}; choose at least one",
        )
    return True


def _network_figure(field: str, value: object, positive: bool = False) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not number == number or number < 0 or (positive and number == 0) or number > 1e9:
        raise RunParameterError(field, value, f"{field.replace('_', ' ')} {value!r} is not a number of 0 or more")
    return number


def steps(experiment: Experiment, photos: bool = False) -> list[tuple[str, int, str, str]]:
    """Every measurement of the run, in the order the engine records them.

    Each is (backend, count, operation, cache). Counts are the outer loop, so that all
    backends are measured on the same images close together in time. At each count every
    backend writes first (writes are measured once, as "warm"); then each read operation
    and cache state is one interleaved group: its repeats take turns across the backends
    (A B C A B C ...), so that a change in the machine's load falls on all of them alike.
    The ``loader`` is one interleaved group per cache state and worker count
    (:func:`loader_round`): the ceilings (in the first cache state's groups), then every
    format, twice for a format whose library has an order of its own. ``photos``: the
    source is a folder of photos, which also has the decode ceiling.
    """
    plan = []
    reads = [op for op in experiment.operations if op in READ_OPERATIONS]
    for count in experiment.counts:
        for backend in experiment.backends:
            plan.extend((backend, count, op, "warm") for op in experiment.operations if op in WRITE_OPERATIONS)
        for cache in experiment.caches:
            for operation in reads:
                plan.extend((backend, count, operation, cache) for backend in experiment.backends)
        if LOADER in experiment.operations:
            for position, cache in enumerate(experiment.caches):
                for _ in experiment.workers:
                    for name in loader_round(experiment, position == 0, photos):
                        plan.append((name, count, LOADER, "warm" if name in CEILINGS else cache))
        for backend in experiment.backends:
            plan.extend(object_storage_steps(experiment, backend, count))
    return plan


def object_storage_steps(experiment: Experiment, backend: str, count: int) -> list[tuple[str, int, str, str]]:
    """The object-storage measurements of one backend at one count, in the order they are taken."""
    plan = []
    for operation in OBJECT_STORAGE_OPERATIONS:
        if operation in experiment.operations:
            repeat = len(experiment.workers) if operation in EPOCH_OPERATIONS else 1
            plan.extend((backend, count, operation, "warm") for _ in range(repeat))
    return plan


def images_per_sample(operation: str, count: int) -> int:
    """How many images one timed sample of ``operation`` handles on a store of ``count``."""
    if operation == "read_random":
        return min(count, RANDOM_READS)
    if operation in ("read_one", "upload"):
        return 1 if operation == "read_one" else count
    if operation == "remote_random":
        return min(count, RANDOM_READS)
    return count


def seeded_rng(seed: int, count: int, purpose: str) -> np.random.Generator:
    """A generator fixed by (seed, count, purpose): the same ids for every backend."""
    return np.random.default_rng([seed, count, zlib.crc32(purpose.encode())])


def verified_after_write(experiment: Experiment, operation: str, count: int) -> int:
    """How many images are read back after a write to check it.

    All of them after ``write_batch``, unless ``read_all`` (which checks every image
    anyway) follows; a seeded sample after ``write_one``.
    """
    if operation == "write_batch" and "read_all" not in experiment.operations:
        return count
    return min(count, VERIFY_SAMPLE)
