"""Where a store lives in object storage: ``s3://bucket/prefix``, the endpoint, and how to reach it.

An :class:`S3Location` is a bucket and a key prefix, plus the endpoint to talk to: the
one given (``--endpoint-url``), else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (the
variables botocore reads), else AWS itself. Credentials are never part of a location:
they come from the standard AWS chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE`` with ``~/.aws/credentials`` or ``AWS_SHARED_CREDENTIALS_FILE``, ...) each
time a client is made, so a location can be printed, recorded with a result and sent to a
worker process without carrying a secret. :func:`redact` removes the credentials in use
from any text, as a last guard for error messages that go into results.

The retry and timeout settings (:class:`TransferSettings`) go with the location to every
library that reads it, so each one gives up after the same few tries with backoff.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import StorageError

SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
ATTEMPTS_VARIABLE = "IMAGE_STORAGE_LAB_S3_ATTEMPTS"
TIMEOUT_VARIABLE = "IMAGE_STORAGE_LAB_S3_TIMEOUT"
# DNS-style bucket names, as S3 and SeaweedFS take them: 3-63 of a-z, 0-9, '.', '-', starting and ending alphanumeric.
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class InvalidLocationError(StorageError, ValueError):
    """An ``s3://`` URL that names no bucket, or a bucket name S3 does not take."""


class ObjectStorageError(StorageError, ConnectionError):
    """Object storage that did not answer as it should, after the retries; the message names the key."""


class NoCredentialsError(ObjectStorageError):
    """No credentials in the standard AWS chain (environment, profile, ...)."""


def is_s3_url(path: object) -> bool:
    """Whether ``path`` is an ``s3://`` URL (a text; a ``Path`` never is)."""
    return isinstance(path, str) and path.startswith(SCHEME)


def _setting(variable: str, default: float) -> float:
    try:
        return float(os.environ.get(variable, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class TransferSettings:
    """How hard every client tries: ``attempts`` with exponential backoff from ``backoff_seconds``.

    ``IMAGE_STORAGE_LAB_S3_ATTEMPTS`` and ``IMAGE_STORAGE_LAB_S3_TIMEOUT`` (seconds to
    wait for an answer) change the defaults: 5 attempts, 30 s.
    """

    attempts: int = field(default_factory=lambda: max(1, int(_setting(ATTEMPTS_VARIABLE, 5))))
    backoff_seconds: float = 0.2
    connect_timeout: float = 5.0
    read_timeout: float = field(default_factory=lambda: _setting(TIMEOUT_VARIABLE, 30.0))
    concurrency: int = 8
    """Requests in flight at once for an upload or a download of many objects."""


@dataclass(frozen=True)
class S3Location:
    """A key prefix in a bucket, and the endpoint that serves it."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    settings: TransferSettings = field(default_factory=TransferSettings)

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None) -> S3Location:
        """The location of ``s3://bucket/prefix``; the endpoint as given, else from the environment."""
        if not is_s3_url(url):
            raise InvalidLocationError(f"{url!r} is not an s3:// URL: give s3://bucket/prefix")
        bucket, _, prefix = url[len(SCHEME) :].partition("/")
        if not BUCKET_PATTERN.fullmatch(bucket) or ".." in bucket:
            raise InvalidLocationError(
                f"{bucket!r} in {url!r} is not a bucket name S3 takes: 3 to 63 lower-case letters, digits, "
                "'-' and '.', starting and ending with a letter or digit (for example s3://image-lab/cifar)"
            )
        endpoint = endpoint_url or next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
        return cls(bucket, prefix.strip("/"), endpoint.rstrip("/") if endpoint else None)

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    def key(self, name: str = "") -> str:
        """The object key of ``name`` under the prefix (``name`` uses ``/`` between folders)."""
        return "/".join(part for part in (self.prefix, name.strip("/")) if part)

    def child(self, name: str) -> S3Location:
        return replace(self, prefix=self.key(name))

    def relative(self, key: str) -> str:
        """``key`` as a path below the prefix."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    @property
    def endpoint(self) -> str:
        """The endpoint in words for results and messages: its URL without any user or query, or AWS."""
        return safe_url(self.endpoint_url) if self.endpoint_url else "AWS (no endpoint URL given)"

    @property
    def allows_http(self) -> bool:
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))

    def __str__(self) -> str:
        return self.url

    # -- clients -----------------------------------------------------------------------

    def region(self) -> str:
        import boto3

        return os.environ.get("AWS_REGION") or boto3.Session().region_name or DEFAULT_REGION

    def credentials(self) -> Any:
        """The frozen credentials of the standard AWS chain, or :class:`NoCredentialsError` saying what to set."""
        import boto3

        found = boto3.Session().get_credentials()
        if found is None:
            raise NoCredentialsError(
                f"no credentials for {self.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                "(python -m storage s3-server prints what to set for its server)"
            )
        return found.get_frozen_credentials()

    def client(self, attempts: int | None = None) -> Any:
        """A boto3 S3 client for this endpoint; its own retries are off (``attempts``: 1) unless asked for,
        since :func:`storage.s3.transfer.retried` retries and names the key."""
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": attempts or 1, "mode": "standard"},
            connect_timeout=self.settings.connect_timeout,
            read_timeout=self.settings.read_timeout,
            max_pool_connections=max(10, self.settings.concurrency * 2),
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region(), config=config
        )


def safe_url(url: str) -> str:
    """``url`` without a user name, password, query or fragment: what may be written into results."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact(text: str) -> str:
    """``text`` with the access key and secret of the credentials in use replaced by ``***``."""
    try:
        import boto3

        found = boto3.Session().get_credentials()
        secrets = [] if found is None else [found.access_key, found.secret_key, found.token]
    except Exception:  # no boto3, a broken profile: nothing to hide that this process knows
        secrets = []
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


__all__ = [
    "InvalidLocationError",
    "NoCredentialsError",
    "ObjectStorageError",
    "S3Location",
    "TransferSettings",
    "is_s3_url",
    "redact",
    "safe_url",
]
