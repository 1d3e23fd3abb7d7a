"""Each format library's own S3 client, pointed at a location's endpoint with the same retries and timeouts.

The libraries read S3 with clients of their own, each configured its own way:

* LitData: ``storage_options`` handed to ``boto3.client(...)`` (``endpoint_url``, a
  botocore ``Config``); LitData's default of 1,000 adaptive retries would wait out a dead
  server for hours, so the location's attempts are set instead.
* MosaicML Streaming: the ``S3_ENDPOINT_URL`` environment variable (its documented way),
  and boto3's chain for the rest.
* Lance: ``storage_options`` of Rust's ``object_store`` (``aws_endpoint``, ``allow_http``,
  keys, ``client_max_retries``...).
* Parquet: ``pyarrow.fs.S3FileSystem(endpoint_override=..., retry_strategy=...)``.
* Zarr: ``zarr.storage.ObjectStore`` over ``obstore.store.S3Store`` (``retry_config``,
  ``client_options``).
* WebDataset: a ``pipe:`` URL running ``aws s3 cp s3://... -`` (WebDataset's documented way
  for S3), which finds the credentials in the same chain; ``AWS_MAX_ATTEMPTS`` bounds its retries.

Credentials are resolved from the standard AWS chain when a client is made and handed to
the library in memory; they are never written into a file, a URL or a command line.
"""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Any

from .location import S3Location


def litdata_storage_options(location: S3Location) -> dict[str, Any]:
    """``storage_options`` for ``litdata.StreamingDataset("s3://...")``: its boto3 client's arguments."""
    from botocore.config import Config

    settings = location.settings
    options: dict[str, Any] = {
        "config": Config(
            retries={"max_attempts": settings.attempts, "mode": "standard"},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            s3={"addressing_style": "path"} if location.endpoint_url else None,
        ),
        "region_name": location.region(),
    }
    if location.endpoint_url:
        options["endpoint_url"] = location.endpoint_url
    if location.allows_http:
        _let_litdata_use_http()
    return options


def _let_litdata_use_http() -> None:
    """LitData 0.2 builds the obstore client of its chunk downloads without ``allow_http``, so an
    ``http://`` endpoint (a server on this machine) fails there with "BadScheme"; allow it."""
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict) and not options.get("allow_http"):
        downloader._OBSTORE_CLIENT_OPTIONS = {**options, "allow_http": True}


def point_streaming_at(location: S3Location) -> None:
    """Streaming reads its endpoint from ``S3_ENDPOINT_URL`` (and its retries from botocore's chain)."""
    if location.endpoint_url:
        os.environ["S3_ENDPOINT_URL"] = location.endpoint_url
    os.environ.setdefault("AWS_MAX_ATTEMPTS", str(location.settings.attempts))
    os.environ.setdefault("AWS_DEFAULT_REGION", location.region())


def lance_storage_options(location: S3Location) -> dict[str, str]:
    """``storage_options`` for ``lance.dataset("s3://...")`` (Rust ``object_store`` settings)."""
    credentials = location.credentials()
    settings = location.settings
    options = {
        "access_key_id": credentials.access_key,
        "secret_access_key": credentials.secret_key,
        "region": location.region(),
        "client_max_retries": str(settings.attempts - 1),
        "client_retry_timeout": str(int(settings.read_timeout * settings.attempts)),
        "timeout": f"{int(settings.read_timeout)}s",
        "connect_timeout": f"{int(settings.connect_timeout)}s",
    }
    if credentials.token:
        options["session_token"] = credentials.token
    if location.endpoint_url:
        options.update(endpoint=location.endpoint_url, allow_http=str(location.allows_http).lower())
        options["virtual_hosted_style_request"] = "false"
    return options


def arrow_filesystem(location: S3Location) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` for the location's endpoint; paths are ``bucket/key``."""
    from pyarrow import fs

    credentials = location.credentials()
    settings = location.settings
    arguments: dict[str, Any] = {
        "access_key": credentials.access_key,
        "secret_key": credentials.secret_key,
        "session_token": credentials.token,
        "region": location.region(),
        "connect_timeout": settings.connect_timeout,
        "request_timeout": settings.read_timeout,
        "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=settings.attempts),
    }
    if location.endpoint_url:
        scheme, _, host = location.endpoint_url.partition("://")
        arguments.update(endpoint_override=host, scheme=scheme, force_virtual_addressing=False)
    return fs.S3FileSystem(**arguments)


def obstore_store(location: S3Location) -> Any:
    """An ``obstore.store.S3Store`` rooted at the location's prefix (for ``zarr.storage.ObjectStore``)."""
    from datetime import timedelta

    from obstore.store import S3Store

    credentials = location.credentials()
    settings = location.settings
    config: dict[str, Any] = {
        "access_key_id": credentials.access_key,
        "secret_access_key": credentials.secret_key,
        "region": location.region(),
    }
    if credentials.token:
        config["session_token"] = credentials.token
    if location.endpoint_url:
        config.update(endpoint=location.endpoint_url, virtual_hosted_style_request=False)
    return S3Store(
        location.bucket,
        prefix=location.prefix or None,
        config=config,
        client_options={
            "allow_http": location.allows_http,
            "timeout": timedelta(seconds=settings.read_timeout),
            "connect_timeout": timedelta(seconds=settings.connect_timeout),
        },
        retry_config={
            "max_retries": settings.attempts - 1,
            "retry_timeout": timedelta(seconds=settings.read_timeout * settings.attempts),
            "backoff": {"init_backoff": timedelta(seconds=settings.backoff_seconds), "base": 2.0},
        },
    )


def aws_cli() -> str | None:
    """The AWS command line (``aws``), or None when it is not installed."""
    return shutil.which("aws")


def pipe_url(location: S3Location, name: str) -> str:
    """WebDataset's ``pipe:`` URL streaming object ``name`` with ``aws s3 cp ... -`` (no credentials in it)."""
    command = ["aws", "s3", "cp", "--quiet", f"s3://{location.bucket}/{location.key(name)}", "-"]
    if location.endpoint_url:
        command[2:2] = ["--endpoint-url", location.endpoint_url]
    return "pipe:" + " ".join(shlex.quote(part) for part in command)


__all__ = [
    "arrow_filesystem",
    "aws_cli",
    "lance_storage_options",
    "litdata_storage_options",
    "obstore_store",
    "pipe_url",
    "point_streaming_at",
]
