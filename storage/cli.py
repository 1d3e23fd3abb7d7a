"""The command line: ``python -m storage bench|runs|export|import|download-cifar10|convert|backends``.

Every error the user can cause (an unknown backend, a bad count, a missing folder, a
file that is not a results database, ...) ends in one line ``error: ...`` on stderr and
a non-zero exit code: 2 for bad arguments, 1 for everything else, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from . import datasets, registry
from .datasets.image_folder import SKIPPED_FILES_LOGGER
from .errors import BadImageFileError, DiskSpaceError, StorageError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
SKIP_BAD_HELP = (
    "image folders: skip files that are empty or not images Pillow reads (each is named on stderr) "
    "instead of stopping at the first; ignored for CIFAR-10, whose batches load whole or not at all"
)
KEPT_LAYOUT = "<backend>/<count>/store, and write_one's at <backend>/<count>/write_one"


class UsageError(Exception):
    """A bad argument found after parsing (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, with no usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


# -- argument types ------------------------------------------------------------------


def _comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give a comma-separated list")
    return items


def backend_list(text: str) -> list[str]:
    names = _comma_list(text)
    valid = registry.backends(available_only=False)
    for name in names:
        if name not in valid:
            raise argparse.ArgumentTypeError(
                f"unknown backend {name!r}; registered backends are: {', '.join(valid) or 'none'}"
            )
        reason = registry.backend_info(name).unavailable_reason
        if reason:
            raise argparse.ArgumentTypeError(f"backend {name!r} is unavailable here: {reason}")
    return names


def count_list(text: str) -> list[int]:
    counts = []
    for item in _comma_list(text):
        try:
            value = int(item.replace("_", ""))
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"image count {item!r} is not a positive integer")
        counts.append(value)
    return counts


def operation_list(text: str) -> list[str]:
    from .bench.experiment import OPERATIONS

    operations = _comma_list(text)
    for operation in operations:
        if operation not in OPERATIONS:
            raise argparse.ArgumentTypeError(
                f"unknown operation {operation!r}; operations are: {', '.join(OPERATIONS)}"
            )
    return operations


def worker_list(text: str) -> list[int]:
    counts = []
    for item in _comma_list(text):
        try:
            value = int(item)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(
                f"worker count {item!r} is not a whole number of 0 or more "
                "(0 reads in the main process; N starts N DataLoader worker processes)"
            )
        counts.append(value)
    return counts


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"batch size {text!r} is not a positive whole number of images")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def backend_name(text: str) -> str:
    return backend_list(text)[0] if "," not in text else _raise(f"give one backend, not {text!r}")


def _raise(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


# -- the parser ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .bench.experiment import (
        DEFAULT_BACKENDS,
        DEFAULT_BATCH_SIZE,
        DEFAULT_COUNTS,
        DEFAULT_WORKERS,
        OPERATIONS,
    )
    from .bench.results import DEFAULT_DB_PATH

    parser = _Parser(
        prog="python -m storage",
        description="Image Storage Lab: measure how fast and how compactly storage formats keep images.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    database = _Parser(add_help=False)
    database.add_argument("--db", default=DEFAULT_DB_PATH, help=f"results database (default {DEFAULT_DB_PATH})")

    bench = commands.add_parser(
        "bench",
        parents=[database],
        help="measure backends: write, read, disk use",
        description="Write and read stores of each backend for each image count; print a table and record the run.",
    )
    bench.add_argument(
        "--backends", type=backend_list, default=list(DEFAULT_BACKENDS), help="comma list (default png,lmdb,hdf5)"
    )
    bench.add_argument(
        "--counts",
        type=count_list,
        default=list(DEFAULT_COUNTS),
        help="comma list of image counts (default " + ",".join(map(str, DEFAULT_COUNTS)) + ")",
    )
    bench.add_argument("--repeats", type=positive_int, default=3, help="recorded repeats of each measurement (3)")
    bench.add_argument(
        "--ops",
        type=operation_list,
        default=None,
        help="comma list of: "
        + ",".join(OPERATIONS)
        + " (default: all but loader, which needs PyTorch; with --distributed: write_batch,read_all,read_random)",
    )
    bench.add_argument(
        "--workers",
        type=worker_list,
        default=list(DEFAULT_WORKERS),
        help="DataLoader worker counts for --ops loader (default " + ",".join(map(str, DEFAULT_WORKERS)) + ")",
    )
    bench.add_argument(
        "--batch-size",
        type=batch_size,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per DataLoader batch for --ops loader (default {DEFAULT_BATCH_SIZE})",
    )
    bench.add_argument("--cold", action="store_true", help="also measure reads with the page cache evicted")
    bench.add_argument("--source", default="auto", help="sample, cifar10, auto (default) or a folder")
    bench.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    bench.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random ids (0)")
    bench.add_argument("--json", metavar="FILE", help="write the measurements (with the environment) as JSON")
    bench.add_argument("--csv", metavar="FILE", help="write the measurements as CSV")
    bench.add_argument(
        "--keep",
        action="store_true",
        help=f"keep the stores, under <work-dir>/<run-id>/, each at {KEPT_LAYOUT}; "
        "with --distributed each sharded store is <work-dir>/<run-id>/<backend>/<count>",
    )
    bench.add_argument("--work-dir", default="data/runs", help="where runs write their stores (data/runs)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument(
        "--distributed",
        action="store_true",
        help="convert to sharded stores on Dask and read them from every worker at once",
    )
    bench.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="with --distributed: the Dask scheduler (tcp://host:8786); default: a LocalCluster on this machine",
    )
    bench.add_argument(
        "--dask-workers",
        type=positive_int,
        default=None,
        metavar="K",
        help="with --distributed and no --scheduler: worker processes of the LocalCluster (default: one per core)",
    )
    bench.add_argument(
        "--shards",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --distributed: shards per store (default: K)",
    )

    runs = commands.add_parser("runs", parents=[database], help="list recorded runs")
    runs.add_argument("--limit", type=positive_int, default=None, help="show only the newest runs")

    export = commands.add_parser("export", parents=[database], help="export runs to CSV or JSON")
    export.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    export.add_argument("--format", choices=("csv", "json"), default="json")
    export.add_argument("--output", "-o", metavar="FILE", help="file to write (default: standard output)")

    import_ = commands.add_parser("import", parents=[database], help="import runs from a JSON export")
    import_.add_argument("file", metavar="FILE")

    download = commands.add_parser("download-cifar10", help="download the full CIFAR-10 (170 MB)")
    download.add_argument("--root", default=None, help="data folder (default: data/)")

    convert = commands.add_parser(
        "convert",
        help="turn CIFAR-10 or an image folder into a store",
        description="Write every image of SOURCE (sample, cifar10, auto, or a folder) into a new store at DEST.",
    )
    convert.add_argument("source", metavar="SOURCE")
    convert.add_argument("--to", dest="backend", required=True, type=backend_name, metavar="BACKEND")
    convert.add_argument("dest", metavar="DEST")
    convert.add_argument("--limit", type=positive_int, default=None, help="write only the first N images")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    convert.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    convert.add_argument(
        "--shards",
        type=positive_int,
        default=None,
        metavar="N",
        help="write a sharded store of N shards, one Dask task per shard (rerun to resume a failed conversion)",
    )
    convert.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="with --shards: the Dask scheduler to use (tcp://host:8786); default: a LocalCluster on this machine. "
        "Workers must see SOURCE and DEST at the same paths (a shared file system)",
    )
    convert.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="K",
        help="with --shards and no --scheduler: worker processes of the LocalCluster (default: one per core)",
    )

    commands.add_parser("backends", help="list the registered backends")
    return parser


# -- commands ------------------------------------------------------------------------


def _progress_bar(enabled: bool):
    from tqdm import tqdm

    return tqdm(total=1000, file=sys.stderr, disable=not enabled, bar_format="{l_bar}{bar}| {elapsed}<{remaining}")


def _write_output(path: str, text: str) -> None:
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _loud(message: str) -> None:
    if sys.stderr.isatty():
        message = f"\033[1;31m{message}\033[0m"
    sys.stderr.write(message + "\n")


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import Experiment, ResultsDB, estimate_experiment, run_experiment
    from .bench.engine import new_run_id
    from .bench.environment import describe
    from .bench.events import MeasurementRecorded, Progress, RunStarted
    from .bench.experiment import DEFAULT_OPERATIONS
    from .bench.live import LiveRecorder
    from .bench.report import loader_table, measurements_table

    _check_source_exists(args.source)
    _check_db_folder(args.db)
    _check_work_dir(args.work_dir)
    if args.distributed and args.skip_bad:
        raise UsageError(
            "--skip-bad does not work with --distributed, whose tasks read the source files themselves; "
            "remove the bad files from the folder, or run without --distributed"
        )
    if args.distributed:
        from .cli_distributed import bench_distributed

        return bench_distributed(args)
    if args.scheduler or args.dask_workers or args.shards:
        raise UsageError("--scheduler, --dask-workers and --shards go with --distributed")
    args.ops = args.ops or list(DEFAULT_OPERATIONS)
    experiment = Experiment(
        backends=args.backends,
        counts=args.counts,
        operations=args.ops,
        caches=["warm", "cold"] if args.cold else ["warm"],
        repeats=args.repeats,
        source=args.source,
        skip_bad=args.skip_bad,
        seed=args.seed,
        keep=args.keep,
        work_dir=args.work_dir,
        workers=args.workers,
        batch_size=args.batch_size,
    )
    with ResultsDB(args.db) as db:
        estimate = estimate_experiment(experiment, db)
        if not estimate.disk_fits:
            raise DiskSpaceError(estimate.message)
        if not estimate.memory_fits:
            raise UsageError(estimate.message)
        print(f"estimate: {estimate.message}", file=sys.stderr)
        bar = _progress_bar(not args.no_progress)
        done = {"last": 0}

        def on_event(event) -> None:
            if isinstance(event, RunStarted):
                bar.write(f"run {event.run_id}: {describe(event.environment)}", file=sys.stderr)
            elif isinstance(event, Progress):
                target = int(event.fraction * 1000)
                if target > done["last"]:
                    bar.update(target - done["last"])
                    done["last"] = target
                bar.set_description_str(event.message, refresh=False)
            elif isinstance(event, MeasurementRecorded) and event.measurement.error:
                bar.write(
                    f"{event.measurement.backend} {event.measurement.operation}: {event.measurement.error}",
                    file=sys.stderr,
                )

        # Recorded live in the database like a dashboard run: its progress and previews show on
        # the Run page, and Stop there ends it as Ctrl+C does here.
        run_id, cancel, interrupt = new_run_id(), threading.Event(), threading.Event()
        try:
            with (
                LiveRecorder(
                    db, run_id, cancel, forward=on_event, launched_by="command line", estimated_seconds=estimate.seconds
                ) as recorder,
                _signals_set(interrupt),
                _naming_skip_bad(args.skip_bad),
            ):
                summary = run_experiment(experiment, db, recorder.on_event, cancel, run_id=run_id, interrupt=interrupt)
        finally:
            bar.close()
        storage_measurements = [m for m in summary.measurements if m.operation != "loader"]
        loader_measurements = [m for m in summary.measurements if m.operation == "loader"]
        if storage_measurements:
            print(measurements_table(storage_measurements))
        if loader_measurements:
            print(("\n" if storage_measurements else "") + loader_table(loader_measurements))
        print(
            f"\nrun {summary.run_id}: {summary.status} in {summary.wall_seconds:.1f} s, "
            f"peak memory {summary.peak_rss_bytes / 1e6:,.0f} MB; source: {summary.source_description}"
        )
        if args.keep and Path(summary.run_dir).is_dir():
            print(f"kept the stores under {summary.run_dir}/ (each at {KEPT_LAYOUT})")
        if args.json:
            _write_output(args.json, db.export_json([summary.run_id]))
            print(f"wrote {args.json}")
        if args.csv:
            _write_output(args.csv, db.export_csv([summary.run_id]))
            print(f"wrote {args.csv}")
    if summary.status == "finished":
        return 0
    if summary.status == "cancelled":
        _loud(f"run {summary.run_id} was stopped (Stop on the dashboard); what it measured so far is kept")
    elif summary.error and "VERIFICATION FAILED" in summary.error:
        _loud(summary.error)
    else:
        _loud(f"error: run {summary.status}: {summary.error}")
    return EXIT_FAILED


def cmd_runs(args: argparse.Namespace) -> int:
    from .bench import ResultsDB
    from .bench.report import runs_table

    if not Path(args.db).expanduser().is_file():  # not created just to say it is empty
        print(f"no results database at {args.db} yet; start one with: python -m storage bench --counts 10,1000")
        return 0
    with ResultsDB(args.db) as db:
        runs = db.list_runs(limit=args.limit)
    if not runs:
        print(f"no runs recorded in {args.db} yet; start one with: python -m storage bench --counts 10,1000")
        return 0
    print(runs_table(runs))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .bench import ResultsDB

    if not Path(args.db).expanduser().is_file():
        raise UsageError(f"no results database at {args.db}; pass --db with the file your runs were recorded in")
    with ResultsDB(args.db) as db:
        text = db.export_json(args.run_ids) if args.format == "json" else db.export_csv(args.run_ids)
    if args.output:
        _write_output(args.output, text)
        print(f"wrote {len(args.run_ids)} run(s) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .bench import ResultsDB

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no file {args.file}")
    text = path.read_text()
    database = Path(args.db).expanduser()
    created = not database.exists()
    try:
        with ResultsDB(database) as db:
            known = {run.id for run in db.list_runs()}
            run_ids = db.import_json(text)
    except StorageError:
        if created:  # a file that could not be imported leaves no empty database behind
            for leftover in (database, *database.parent.glob(database.name + "-*")):
                leftover.unlink(missing_ok=True)
        raise
    for run_id in run_ids:
        print(run_id)
    new_ids = [run_id for run_id in run_ids if run_id not in known]
    already = f"; {len(run_ids) - len(new_ids)} already there, left as they were" if len(new_ids) < len(run_ids) else ""
    print(f"imported {len(new_ids)} run(s) into {args.db}{already}", file=sys.stderr)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    folder = datasets.download_cifar10(root=args.root, progress=True)
    print(f"CIFAR-10 is in {folder}")
    return 0


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


def _check_source_exists(source: str) -> None:
    if source not in ("auto", "sample", "cifar10") and not Path(source).expanduser().exists():
        raise UsageError(f"the source folder {source} does not exist")


@contextlib.contextmanager
def _naming_skip_bad(skip_bad: bool) -> Iterator[None]:
    """Without ``--skip-bad``, a bad image file's error ends by naming the switch."""
    try:
        yield
    except BadImageFileError as error:
        if skip_bad:
            raise
        raise BadImageFileError(f"{error}, or pass --skip-bad to skip such files") from None


@contextlib.contextmanager
def _removed_on_failure(dest: str) -> Iterator[None]:
    """Delete ``dest`` if the block fails and ``dest`` did not exist before it.

    A failed write is rolled back to an empty store marked complete, which a later reader
    would take for a finished conversion. A ``dest`` that existed before is left as the
    store's rollback leaves it: it may hold something the user wants.
    """
    existed = os.path.lexists(dest)
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _write_store(
    backend: str, dest: str, images: object, labels: object, class_names: list[str], progress_bar: bool = True
) -> float:
    """Write every image, and the names of the labels, into a new store at ``dest``; return the seconds it took."""
    from tqdm import tqdm

    started = time.perf_counter()
    with (
        _removed_on_failure(dest),
        tqdm(total=len(labels), file=sys.stderr, unit="img", unit_scale=True, disable=not progress_bar) as bar,
        registry.open_store(backend, dest, "w") as store,
    ):

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        if class_names:
            store.set_class_names(class_names)
        store.write_batch(images, labels, progress=progress)
    return time.perf_counter() - started


def cmd_convert(args: argparse.Namespace) -> int:
    from .bench.verify import verify_store

    source = args.source
    _check_source_exists(source)
    if args.shards is None and (args.scheduler or args.workers):
        raise UsageError("--scheduler and --workers need --shards N (they run a sharded conversion on Dask)")
    if args.shards is not None:
        if args.scheduler and args.workers:
            raise UsageError("--workers sizes a LocalCluster; with --scheduler the cluster has its own workers")
        if args.skip_bad:
            raise UsageError(
                "--skip-bad does not work with --shards, whose tasks read the source files themselves; "
                "remove the bad files from the folder, or convert without --shards"
            )
        from .cli_distributed import convert_sharded

        return convert_sharded(args)
    with _naming_skip_bad(args.skip_bad):
        data = datasets.load_source(source, skip_bad=args.skip_bad)
    images, labels = data.images, data.labels
    if args.limit is not None and args.limit < len(labels):
        images, labels = datasets.take(images, labels, args.limit)
    elif args.limit is not None and args.limit > len(labels):
        print(f"--limit {args.limit:,}: the source has {len(labels):,} images; converting all of them", file=sys.stderr)
    registry.check_backend_takes(args.backend, images, source)
    print(f"{data.description}: writing {len(labels):,} images to {args.dest} ({args.backend})", file=sys.stderr)
    seconds = _write_store(
        args.backend, args.dest, images, labels, list(data.class_names or []), progress_bar=not args.no_progress
    )
    with registry.open_store(args.backend, args.dest, "r") as store:
        count, usage = len(store), store.disk_usage()
    sample = min(count, 1000)
    check = verify_store(args.backend, args.dest, images, labels, range(0, count, max(1, count // sample)))
    print(
        f"wrote {count:,} images to {args.dest} in {seconds:.1f} s: "
        f"{usage.allocated_bytes / 1e6:,.1f} MB allocated ({usage.apparent_bytes / 1e6:,.1f} MB apparent), "
        f"{usage.files:,} files"
    )
    if not check.verified:
        _loud(f"VERIFICATION FAILED: {check.error}")
        return EXIT_FAILED
    print(
        f"read back {check.checked:,} images: they match the source"
        + (f" (PSNR {check.psnr:.1f} dB)" if check.psnr else "")
    )
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from .bench.report import text_table

    rows, unavailable = [], []
    for name in registry.backends(available_only=False):
        info = registry.backend_info(name)
        status = "available" if info.available else "unavailable"
        rows.append([name, info.label, "lossless" if info.lossless else "lossy", status, info.description])
        if not info.available:
            unavailable.append(f"{name}: {info.unavailable_reason}")
    print(text_table(["name", "label", "fidelity", "status", "description"], rows))
    for line in unavailable:
        print(f"unavailable {line}")
    return 0


COMMANDS = {
    "bench": cmd_bench,
    "runs": cmd_runs,
    "export": cmd_export,
    "import": cmd_import,
    "download-cifar10": cmd_download,
    "convert": cmd_convert,
    "backends": cmd_backends,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _terminate(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code."""
    warnings.showwarning = _show_warning
    # Lance warns at every fork once it is imported. The forks here (the encoding pool, the
    # DataLoader workers of fork-safe formats) never use Lance; its own loaders spawn theirs.
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    logging.getLogger("storage.datasets").setLevel(logging.ERROR)  # its warnings also come as warnings.warn
    logging.getLogger(SKIPPED_FILES_LOGGER).setLevel(logging.WARNING)  # except which file --skip-bad left out, and why
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # a terminated run cleans up and is marked interrupted
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_USAGE
    except StorageError as error:
        sys.stderr.write(f"error: {error}\n")
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
