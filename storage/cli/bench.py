"""``python -m storage bench``: measure backends, print the tables, record the run.

``--distributed`` hands over to :mod:`storage.cli.distributed` (imported only then, for Dask).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from ..bench import Experiment, ResultsDB, RunSummary, estimate_experiment, new_run_id, places, run_experiment
from ..bench.environment import describe
from ..bench.events import MeasurementRecorded, Progress, RunStarted
from ..bench.experiment import (
    DEFAULT_BACKENDS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_COUNTS,
    DEFAULT_OPERATIONS,
    DEFAULT_WORKERS,
    OBJECT_STORAGE_OPERATIONS,
    OPERATIONS,
    experiment_from_params,
)
from ..bench.live import LiveRecorder
from ..bench.report import loader_table, measurements_table, object_storage_table
from ..bench.results.history import clean_name
from ..errors import DiskSpaceError
from .common import (
    EXIT_FAILED,
    SKIP_BAD_HELP,
    UsageError,
    add_encoding_arguments,
    check_source_exists,
    encoding_from_args,
    int_argument,
    loud,
    naming_skip_bad,
    run_parameter,
    write_output,
)

KEPT_LAYOUT = "<backend>/<count>/store, and write_one's at <backend>/<count>/write_one"


# -- the options -----------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "bench",
        parents=[database],
        help="measure backends: write, read, disk use",
        description="Write and read stores of each backend for each image count; print a table and record the run.",
    )
    _add_run_arguments(parser)
    _add_output_arguments(parser)
    _add_object_storage_arguments(parser)
    _add_distributed_arguments(parser)
    parser.set_defaults(run=run_from_args)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What is measured: the run parameters, checked by the benchmark's own rules."""
    parser.add_argument(
        "--backends",
        type=run_parameter("backends"),
        default=list(DEFAULT_BACKENDS),
        help="comma list (default png,lmdb,hdf5)",
    )
    parser.add_argument(
        "--counts",
        type=run_parameter("counts"),
        default=list(DEFAULT_COUNTS),
        help="comma list of image counts (default " + ",".join(map(str, DEFAULT_COUNTS)) + ")",
    )
    parser.add_argument("--repeats", type=int_argument(1), default=3, help="recorded repeats of each measurement (3)")
    parser.add_argument(
        "--ops",
        type=run_parameter("operations"),
        default=None,
        help="comma list of: "
        + ",".join(OPERATIONS)
        + " (default: all but loader, which needs PyTorch; with --distributed: write_batch,read_all,read_random)",
    )
    parser.add_argument(
        "--workers",
        type=run_parameter("workers"),
        default=list(DEFAULT_WORKERS),
        help="DataLoader worker counts for --ops loader (default " + ",".join(map(str, DEFAULT_WORKERS)) + ")",
    )
    parser.add_argument(
        "--batch-size",
        type=int_argument(1, "batch size", "a positive whole number of images"),
        default=DEFAULT_BATCH_SIZE,
        help=f"images per DataLoader batch for --ops loader (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--transform",
        type=run_parameter("transform"),
        default="none",
        help="what --ops loader does to each image: none (as stored; one size needed), train (RandomResizedCrop(224) "
        "+ horizontal flip) or val (Resize(256) + CenterCrop(224)); torchvision v2 transforms, (3,224,224) out",
    )
    parser.add_argument(
        "--decoder",
        type=run_parameter("decoder"),
        default="pillow",
        help="what decodes kept bytes in --ops loader: pillow (default), simplejpeg or torchvision",
    )
    parser.add_argument(
        "--decode-device",
        type=run_parameter("decode_device"),
        default="cpu",
        help="cpu (in the DataLoader workers, default) or cuda (torchvision's decode_jpeg on the GPU, "
        "with --decoder torchvision)",
    )
    parser.add_argument("--cold", action="store_true", help="also measure reads with the page cache evicted")
    parser.add_argument("--source", default="auto", help="sample, cifar10, auto (default) or a folder")
    parser.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    parser.add_argument("--seed", type=int_argument(0), default=0, help="seed of the random ids (0)")
    parser.add_argument(
        "--name", default=None, help="a name for the run (shown in legends, Results and Share; kept in exports)"
    )
    add_encoding_arguments(parser)


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the results and the stores go."""
    parser.add_argument("--json", metavar="FILE", help="write the measurements (with the environment) as JSON")
    parser.add_argument("--csv", metavar="FILE", help="write the measurements as CSV")
    parser.add_argument(
        "--keep",
        action="store_true",
        help=f"keep the stores, under <work-dir>/<run-id>/, each at {KEPT_LAYOUT}; "
        "with --distributed each sharded store is <work-dir>/<run-id>/<backend>/<count>",
    )
    parser.add_argument(
        "--work-dir",
        default=str(places.default_runs_dir()),
        help=f"where runs write their stores (default ${places.RUNS_ENV}, else {places.default_runs_dir()})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_object_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the stores go when the data lives in object storage, and the network the figures are projected to."""
    group = parser.add_argument_group("object storage")
    group.add_argument(
        "--location",
        metavar="s3://BUCKET/PREFIX",
        help="also upload each store there and read it back as its format's users do: "
        + ",".join(OBJECT_STORAGE_OPERATIONS)
        + " (the default operations with --location); credentials from the AWS chain (AWS_ACCESS_KEY_ID, AWS_PROFILE)",
    )
    group.add_argument("--endpoint-url", metavar="URL", help="the S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    group.add_argument(
        "--metrics-url",
        metavar="URL",
        help="the server's Prometheus metrics, to count requests and bytes (default: IMAGE_STORAGE_LAB_S3_METRICS; "
        "python -m storage s3-server prints it)",
    )
    group.add_argument(
        "--network-rtt-ms", type=float, default=20.0, metavar="MS", help="round trip of the network projected to (20)"
    )
    group.add_argument(
        "--network-mbit", type=float, default=1000.0, metavar="MBIT", help="its bandwidth in Mbit/s (1000)"
    )
    group.add_argument(
        "--network-concurrency",
        type=int_argument(1),
        default=None,
        metavar="N",
        help="requests in flight at once on it (default: the readers', DataLoader workers or upload threads)",
    )


def _add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="convert to sharded stores on Dask and read them from every worker at once",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="with --distributed: the Dask scheduler (tcp://host:8786); default: a LocalCluster on this machine",
    )
    parser.add_argument(
        "--dask-workers",
        type=int_argument(1),
        default=None,
        metavar="K",
        help="with --distributed and no --scheduler: worker processes of the LocalCluster (default: one per core)",
    )
    parser.add_argument(
        "--shards",
        type=int_argument(1),
        default=None,
        metavar="N",
        help="with --distributed: shards per store (default: K)",
    )


# -- the command -----------------------------------------------------------------------


def run_from_args(args: argparse.Namespace) -> int:
    """Check the folders and the option combinations, then run here or on Dask."""
    check_source_exists(args.source)
    _check_db_folder(args.db)
    _check_work_dir(args.work_dir)
    if args.distributed and args.skip_bad:
        raise UsageError(
            "--skip-bad does not work with --distributed, whose tasks read the source files themselves; "
            "remove the bad files from the folder, or run without --distributed"
        )
    if args.distributed and (encoding_from_args(args) != "raw" or args.max_side or args.shorter_side):
        raise UsageError(
            "--keep-encoded, --encoding, --max-side and --shorter-side do not work with --distributed yet; "
            "run without --distributed"
        )
    if args.distributed and args.location:
        raise UsageError("--location does not work with --distributed yet; run without --distributed")
    if args.distributed:
        from .distributed import bench_distributed

        return bench_distributed(args)
    if args.scheduler or args.dask_workers or args.shards:
        raise UsageError("--scheduler, --dask-workers and --shards go with --distributed")
    experiment = experiment_from_params(
        backends=args.backends,
        counts=args.counts,
        operations=args.ops or list(OBJECT_STORAGE_OPERATIONS if args.location else DEFAULT_OPERATIONS),
        caches=["warm", "cold"] if args.cold else ["warm"],
        repeats=args.repeats,
        source=args.source,
        skip_bad=args.skip_bad,
        seed=args.seed,
        keep=args.keep,
        work_dir=args.work_dir,
        workers=args.workers,
        batch_size=args.batch_size,
        transform=args.transform,
        decoder=args.decoder,
        decode_device=args.decode_device,
        encoding=encoding_from_args(args),
        max_side=args.max_side,
        shorter_side=args.shorter_side,
        location=args.location,
        endpoint_url=args.endpoint_url,
        metrics_url=args.metrics_url,
        network_rtt_ms=args.network_rtt_ms,
        network_mbit=args.network_mbit,
        network_concurrency=args.network_concurrency,
    )
    name = clean_name(args.name)  # a bad name is refused before anything runs
    return run(experiment, args.db, json_path=args.json, csv_path=args.csv, progress=not args.no_progress, name=name)


def run(
    experiment: Experiment,
    db_path: str,
    json_path: str | None = None,
    csv_path: str | None = None,
    progress: bool = True,
    name: str | None = None,
) -> int:
    """Run ``experiment``, recorded in the database at ``db_path`` (named ``name``); print its tables; the exit code."""
    with ResultsDB(db_path) as db:
        estimate = estimate_experiment(experiment, db)
        if not estimate.disk_fits:
            raise DiskSpaceError(estimate.message)
        if not estimate.memory_fits:
            raise UsageError(estimate.message)
        summary = _measure(experiment, db, estimate.seconds, progress, name)
        _print_summary(summary, experiment.keep)
        for path, export in ((json_path, db.export_json), (csv_path, db.export_csv)):
            if path:
                write_output(path, export([summary.run_id]))
                print(f"wrote {path}")
    return _exit_code(summary)


def _measure(
    experiment: Experiment, db: ResultsDB, estimated_seconds: float, progress: bool, name: str | None = None
) -> RunSummary:
    """Run ``experiment`` with a progress bar on stderr.

    Recorded live in the database like a dashboard run: its progress and previews show on
    the Run page, and Stop there ends it as Ctrl+C does here.
    """
    run_id, cancel, interrupt = new_run_id(), threading.Event(), threading.Event()
    with (
        _ProgressBar(progress) as bar,
        LiveRecorder(
            db,
            run_id,
            cancel,
            forward=bar.on_event,
            launched_by="command line",
            estimated_seconds=estimated_seconds,
            name=name,
        ) as recorder,
        _signals_set(interrupt),
        naming_skip_bad(experiment.skip_bad),
    ):
        try:
            return run_experiment(experiment, db, recorder.on_event, cancel, run_id=run_id, interrupt=interrupt)
        except KeyboardInterrupt:
            _say_what_was_kept(db, run_id, experiment.keep)
            raise


def _say_what_was_kept(db: ResultsDB, run_id: str, kept_stores: bool) -> None:
    """After Ctrl+C: the run's id, how many measurements the database keeps, and where the stores went."""
    try:
        count = len(db.measurements(run_id))
    except Exception:  # the database cannot be read now: the id is what matters
        count = None
    measured = f"{count} measurement(s) kept" if count is not None else "its measurements so far kept"
    stores = "its stores kept" if kept_stores else "its stores deleted"
    loud(f"run {run_id} interrupted: {measured} in {db.path} (python -m storage runs lists it), {stores}")


class _ProgressBar:
    """A tqdm bar on stderr that the run's events move; the run's id and failed measurements are written above it."""

    def __init__(self, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=1000, file=sys.stderr, disable=not enabled, bar_format="{l_bar}{bar}| {elapsed}<{remaining}"
        )
        self.shown = 0  # thousandths of the run

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()

    def on_event(self, event) -> None:
        if isinstance(event, RunStarted):
            if event.estimate:  # the engine's, made from the source itself (a folder's photos, not CIFAR's size)
                self.bar.write(f"estimate: {event.estimate}", file=sys.stderr)
            self.bar.write(f"run {event.run_id}: {describe(event.environment)}", file=sys.stderr)
        elif isinstance(event, Progress):
            target = int(event.fraction * 1000)
            if target > self.shown:
                self.bar.update(target - self.shown)
                self.shown = target
            self.bar.set_description_str(event.message, refresh=False)
        elif isinstance(event, MeasurementRecorded) and event.measurement.error:
            measurement = event.measurement
            self.bar.write(f"{measurement.backend} {measurement.operation}: {measurement.error}", file=sys.stderr)


def _print_summary(summary: RunSummary, kept: bool) -> None:
    remote = [m for m in summary.measurements if m.operation in OBJECT_STORAGE_OPERATIONS]
    storage_measurements = [m for m in summary.measurements if m.operation != "loader" and m not in remote]
    loader_measurements = [m for m in summary.measurements if m.operation == "loader"]
    tables = []
    if storage_measurements:
        tables.append(measurements_table(storage_measurements))
    if loader_measurements:
        tables.append(loader_table(loader_measurements))
    if remote:
        tables.append(object_storage_table(remote))
    if tables:
        print("\n\n".join(tables))
    print(
        f"\nrun {summary.run_id}: {summary.status} in {summary.wall_seconds:.1f} s, "
        f"peak memory {summary.peak_rss_bytes / 1e6:,.0f} MB; source: {summary.source_description}"
    )
    if kept and Path(summary.run_dir).is_dir():
        print(f"kept the stores under {summary.run_dir}/ (each at {KEPT_LAYOUT})")


def _exit_code(summary: RunSummary) -> int:
    """0 for a finished run; else 1, after saying loudly why it did not finish."""
    if summary.status == "finished":
        return 0
    if summary.status == "cancelled":
        loud(f"run {summary.run_id} was stopped (Stop on the dashboard); what it measured so far is kept")
    elif summary.error and "VERIFICATION FAILED" in summary.error:
        loud(summary.error)
    else:
        loud(f"error: run {summary.status}: {summary.error}")
    return EXIT_FAILED


# -- checks and signals ----------------------------------------------------------------


def _check_db_folder(db: str) -> None:
    """Refuse a --db whose folder cannot be made, naming the option, before anything else is created."""
    try:
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"--db {db}: {error.strerror or error}; give a file in a folder this user can write to"
        ) from None


def _check_work_dir(work_dir: str) -> None:
    """Refuse a --work-dir that cannot be made or written to, naming the option."""
    folder = Path(work_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(
            f"--work-dir {work_dir}: {error.strerror or error}; give a folder this user can create and write to"
        ) from None


@contextlib.contextmanager
def _signals_set(interrupt: threading.Event) -> Iterator[None]:
    """While a run measures, Ctrl+C and SIGTERM set ``interrupt`` instead of raising.

    The engine then stops at its next check, within about a second, and ends the run as
    interrupted. A KeyboardInterrupt raised by the handler itself could land anywhere:
    in a ``__del__`` (which drops it, so the run went on) or in a worker pool's start-up
    (which left the pool unable to run anything). A second signal raises at once, for a
    run that no longer reaches its checks.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        if interrupt.is_set():
            raise KeyboardInterrupt
        interrupt.set()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
