"""``python -m storage convert SOURCE --to BACKEND DEST``: write a data set into a new store, then check it.

``--shards N`` hands over to :mod:`storage.cli.distributed` (imported only then, for Dask).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator

from .. import datasets, registry
from .common import (
    EXIT_FAILED,
    SKIP_BAD_HELP,
    UsageError,
    add_encoding_arguments,
    backend_name,
    check_source_exists,
    encoding_from_args,
    int_argument,
    loud,
    naming_skip_bad,
)

VERIFIED_SAMPLE = 1_000  # images read back after the write, spread over the store


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "convert",
        help="turn CIFAR-10 or an image folder into a store",
        description="Write every image of SOURCE (sample, cifar10, auto, or a folder) into a new store at DEST.",
    )
    parser.add_argument("source", metavar="SOURCE")
    parser.add_argument("--to", dest="backend", required=True, type=backend_name, metavar="BACKEND")
    parser.add_argument(
        "dest", metavar="DEST", help="a folder, or s3://bucket/prefix (staged here, uploaded manifest last)"
    )
    parser.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="with an s3:// DEST: the S3 endpoint (default: AWS_ENDPOINT_URL, else AWS); credentials from the AWS chain",
    )
    parser.add_argument("--limit", type=int_argument(1), default=None, help="write only the first N images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    parser.add_argument(
        "--follow-links",
        action="store_true",
        help="image folders: read files that links lead to outside the folder (refused as bad files by default)",
    )
    parser.add_argument(
        "--shards",
        type=int_argument(1),
        default=None,
        metavar="N",
        help="write a sharded store of N shards, one Dask task per shard (rerun to resume a failed conversion)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="with --shards: the Dask scheduler to use (tcp://host:8786); default: a LocalCluster on this machine. "
        "Workers must see SOURCE and DEST at the same paths (a shared file system)",
    )
    parser.add_argument(
        "--workers",
        type=int_argument(1),
        default=None,
        metavar="K",
        help="with --shards and no --scheduler: worker processes of the LocalCluster (default: one per core)",
    )
    add_encoding_arguments(parser)
    parser.set_defaults(run=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    """Check the option combinations, then convert here or, with ``--shards``, on Dask."""
    check_source_exists(args.source)
    options = _store_options(args)
    if args.endpoint_url and not args.dest.startswith("s3://"):
        raise UsageError("--endpoint-url goes with an s3://bucket/prefix DEST")
    if args.shards is not None and args.dest.startswith("s3://"):
        raise UsageError("--shards writes on a shared file system; convert to s3:// without --shards")
    if args.shards is not None and options:
        raise UsageError(
            "--keep-encoded, --encoding, --max-side and --shorter-side do not work with --shards yet; "
            "convert without --shards"
        )
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
        from .distributed import convert_sharded

        return convert_sharded(args)
    return run(
        args.source,
        args.backend,
        args.dest,
        limit=args.limit,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        options=options,
        follow_links=args.follow_links,
        endpoint_url=args.endpoint_url,
    )


def _store_options(args: argparse.Namespace) -> dict:
    """The store options the encoding and resizing flags ask for (none by default)."""
    options: dict = {}
    encoding = encoding_from_args(args)
    if encoding != "raw":
        if not registry.store_class(args.backend).takes_encodings():
            able = [name for name in registry.backends() if registry.store_class(name).takes_encodings()]
            raise UsageError(
                f"the {args.backend} backend cannot keep encoded bytes (--keep-encoded, --encoding {encoding}); "
                f"these can: {', '.join(able)}"
            )
        options["encoding"] = encoding
    for name in ("max_side", "shorter_side"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def run(
    source: str,
    backend: str,
    dest: str,
    limit: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    options: dict | None = None,
    follow_links: bool = False,
    endpoint_url: str | None = None,
) -> int:
    """Write the images of ``source`` (the first ``limit``) into a new ``backend`` store at ``dest``; the exit code.

    ``options`` are the store's (``encoding``, ``max_side``, ``shorter_side``...). An
    ``s3://bucket/prefix`` ``dest`` is written in a staging folder, uploaded with its
    manifest last, and checked by reading it back from the bucket.
    """
    from ..bench.streaming import resized_source
    from ..encoded import check_source_encodable
    from ..encodings import parse_encoding
    from ..verify import verify_store

    options = dict(options or {})
    with naming_skip_bad(skip_bad):
        data = datasets.load_source(source, skip_bad=skip_bad, follow_links=follow_links)
    images, labels = data.images, data.labels
    if limit is not None and limit < len(labels):
        images, labels = datasets.take(images, labels, limit)
    elif limit is not None and limit > len(labels):
        print(f"--limit {limit:,}: the source has {len(labels):,} images; converting all of them", file=sys.stderr)
    images = resized_source(images, options.get("max_side"), options.get("shorter_side"))
    registry.check_backend_takes(backend, images, source)
    check_source_encodable(parse_encoding(options.get("encoding", "raw")), images, f"the images of {source}")
    print(
        f"{data.description}: writing {len(labels):,} images to {dest} ({_what_is_kept(backend, options)})",
        file=sys.stderr,
    )
    if dest.startswith("s3://"):
        options["endpoint_url"] = endpoint_url
    seconds = _write_store(backend, dest, images, labels, list(data.class_names or []), progress, options)
    if dest.startswith("s3://"):
        return _check_uploaded(dest, endpoint_url, images, labels, seconds)
    with registry.open_store(backend, dest, "r") as store:
        count, usage = len(store), store.disk_usage()
    sample = min(count, VERIFIED_SAMPLE)
    check = verify_store(backend, dest, images, labels, range(0, count, max(1, count // sample)))
    print(
        f"wrote {count:,} images to {dest} in {seconds:.1f} s ({count / max(seconds, 1e-9):,.0f} images/s): "
        f"{usage.allocated_bytes / 1e6:,.1f} MB allocated ({usage.apparent_bytes / 1e6:,.1f} MB apparent), "
        f"{usage.files:,} files{_against_source(usage.allocated_bytes, images)}"
    )
    if not check.verified:
        loud(f"VERIFICATION FAILED: {check.error}")
        return EXIT_FAILED
    print(
        f"read back {check.checked:,} images: they match the source"
        + (f" (PSNR {check.psnr:.1f} dB)" if check.psnr else "")
    )
    return 0


def _check_uploaded(dest: str, endpoint_url: str | None, images: object, labels, seconds: float) -> int:
    """Read a sample of the uploaded store back from the bucket, as its format's users read it."""
    import numpy as np

    from ..opener import open_store
    from ..verify import compare

    with open_store(dest, endpoint_url=endpoint_url) as store:
        count, usage, lossless = len(store), store.disk_usage(), store.lossless
        ids = np.arange(0, count, max(1, count // min(count, VERIFIED_SAMPLE)))
        read, read_labels = store.read_batch(ids)
        method = getattr(store, "read_method", "")
    print(
        f"wrote {count:,} images to {dest} in {seconds:.1f} s, the upload included ({count / max(seconds, 1e-9):,.0f} "
        f"images/s): {usage.files:,} objects, {usage.apparent_bytes / 1e6:,.1f} MB; read as: {method}"
    )
    check = compare(read, read_labels, images, labels, ids, lossless)
    if not check.verified:
        loud(f"VERIFICATION FAILED: {check.error}")
        return EXIT_FAILED
    print(f"read back {check.checked:,} images from the bucket: they match the source")
    return 0


@contextlib.contextmanager
def _removed_on_failure(dest: str) -> Iterator[None]:
    """Delete ``dest`` if the block fails and ``dest`` did not exist before it.

    A failed write is rolled back to an empty store marked complete, which a later reader
    would take for a finished conversion. A ``dest`` that existed before is left as the
    store's rollback leaves it: it may hold something the user wants.
    """
    existed = dest.startswith("s3://") or os.path.lexists(dest)  # an s3:// store that fails is never uploaded
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _what_is_kept(backend: str, options: dict) -> str:
    """The backend and, when asked for, its encoding and resizing, in words for the first line."""
    parts = [backend]
    if options.get("encoding", "raw") != "raw":
        parts.append(
            "the source files' bytes" if options["encoding"] == "source" else f"encoded as {options['encoding']}"
        )
    for name, words in (("shorter_side", "shorter side"), ("max_side", "longer side")):
        if options.get(name):
            parts.append(f"resized to a {words} of {options[name]} px where larger")
    return ", ".join(parts)


def _against_source(allocated_bytes: int, images: object) -> str:
    """``"; 1.02x the source files (11.1 MB)"`` for photos, nothing for arrays (which have no files)."""
    source_bytes = getattr(images, "source_bytes", None)
    if not source_bytes:
        return ""
    return f"; {allocated_bytes / source_bytes:.2f}x the source files ({source_bytes / 1e6:,.1f} MB)"


def _open_for_writing(backend: str, dest: str, options: dict):
    if dest.startswith("s3://"):
        from ..opener import open_store

        return open_store(backend, dest, "w", **options)
    return registry.open_store(backend, dest, "w", **options)


def _write_store(
    backend: str,
    dest: str,
    images: object,
    labels: object,
    class_names: list[str],
    progress_bar: bool = True,
    options: dict | None = None,
) -> float:
    """Write every image, and the names of the labels, into a new store at ``dest``; return the seconds it took."""
    from tqdm import tqdm

    started = time.perf_counter()
    with (
        _removed_on_failure(dest),
        tqdm(total=len(labels), file=sys.stderr, unit="img", unit_scale=True, disable=not progress_bar) as bar,
        _open_for_writing(backend, dest, options or {}) as store,
    ):

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        if class_names:
            store.set_class_names(class_names)
        store.write_batch(images, labels, progress=progress)
    return time.perf_counter() - started
