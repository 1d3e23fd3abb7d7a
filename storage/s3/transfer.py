"""Moving stores to and from object storage: upload with the manifest last, download, list, delete.

A store is visible at a location only once it is complete: :func:`upload_store` first
deletes the manifest (``store.json``) of any store already there, uploads every other
file, deletes the objects the new store does not have, and uploads the manifest last. An
upload that is cut off (a crash, Ctrl+C, a server that stops) leaves no manifest, so the
prefix opens as no store at all, never as a half-written one.

Every request goes through :func:`retried`: an answer of 5xx (a 503 "slow down"), a
timeout or a dropped connection is tried again after a growing pause (0.2 s, 0.4 s, ...)
up to the location's ``attempts``; then :class:`ObjectStorageError` names the key, the
request and the last answer. A 4xx answer (no such key, access denied) is not retried.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .location import ObjectStorageError, S3Location, redact

MANIFESTS = ("store.json", "sharded.json")
MANIFEST = MANIFESTS[0]
RETRIED_CODES = {"500", "502", "503", "504", "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}
T = TypeVar("T")

_clients = threading.local()


def client_for(location: S3Location) -> Any:
    """One boto3 client per thread, process and endpoint (a client is not to be shared across a fork)."""
    cache = getattr(_clients, "by_endpoint", None)
    if cache is None or getattr(_clients, "pid", None) != os.getpid():
        cache = _clients.by_endpoint = {}
        _clients.pid = os.getpid()
    key = (location.endpoint_url, location.settings)
    if key not in cache:
        cache[key] = location.client()
    return cache[key]


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` is worth another try: a 5xx answer, a timeout, a dropped or refused connection."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, ReadTimeoutError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return code in RETRIED_CODES or status.startswith("5")
    return isinstance(error, (ConnectionError, HTTPClientError, ReadTimeoutError, OSError))


def retried(location: S3Location, what: str, key: str, action: Callable[[], T]) -> T:
    """``action()``, tried again with backoff while it fails in a way worth retrying.

    ``what`` and ``key`` name the request in the error: ``GET s3://image-lab/cifar/store.json``.
    """
    settings = location.settings
    for attempt in range(1, settings.attempts + 1):
        try:
            return action()
        except Exception as error:
            if not is_retryable(error):
                raise _named(location, what, key, error, attempt, retryable=False) from error
            if attempt == settings.attempts:
                raise _named(location, what, key, error, attempt, retryable=True) from error
            time.sleep(settings.backoff_seconds * 2 ** (attempt - 1) * (1 + random.random() / 2))
    raise AssertionError("unreachable")


def _named(location: S3Location, what: str, key: str, error: Exception, attempts: int, retryable: bool):
    where = f"s3://{location.bucket}/{key}"
    tries = f" after {attempts} attempts with backoff" if retryable and attempts > 1 else ""
    reason = redact(f"{type(error).__name__}: {error}")
    if _is_missing(error):
        return ObjectStorageError(f"{what} {where}: no such object ({reason})")
    return ObjectStorageError(
        f"{what} {where} failed{tries} at {location.endpoint}: {reason}; check that the server is running "
        "and reachable, then try again"
    )


def _is_missing(error: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return False
    return str(error.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


def is_missing(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) says the object or bucket does not exist."""
    while error is not None:
        if _is_missing(error):
            return True
        error = error.__cause__
    return False


# -- reading -----------------------------------------------------------------------------


def list_objects(location: S3Location) -> dict[str, int]:
    """Every object below the prefix (as a folder: ``prefix/...``), as relative path -> size."""
    client = client_for(location)
    prefix = location.key() + "/" if location.prefix else ""
    found: dict[str, int] = {}
    token: str | None = None
    while True:
        arguments = {"Bucket": location.bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = retried(location, "LIST", prefix, lambda a=arguments: client.list_objects_v2(**a))
        for entry in page.get("Contents", []):
            found[location.relative(entry["Key"])] = int(entry["Size"])
        if not page.get("IsTruncated"):
            return found
        token = page["NextContinuationToken"]


def read_object(location: S3Location, name: str) -> bytes:
    """The bytes of object ``name`` below the prefix."""
    key = location.key(name)
    client = client_for(location)
    return retried(location, "GET", key, lambda: client.get_object(Bucket=location.bucket, Key=key)["Body"].read())


def read_range(location: S3Location, name: str, start: int, length: int) -> bytes:
    """``length`` bytes of object ``name`` from ``start``: one ranged GET."""
    key = location.key(name)
    client = client_for(location)

    def get() -> bytes:
        body = client.get_object(Bucket=location.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
        data = body["Body"].read()
        if len(data) != length:
            raise ObjectStorageError(f"GET s3://{location.bucket}/{key} gave {len(data)} of {length} bytes")
        return data

    return retried(location, f"GET (bytes {start}-{start + length - 1})", key, get)


def exists(location: S3Location, name: str) -> bool:
    key = location.key(name)
    client = client_for(location)
    try:
        retried(location, "HEAD", key, lambda: client.head_object(Bucket=location.bucket, Key=key))
    except ObjectStorageError as error:
        if is_missing(error):
            return False
        raise
    return True


@dataclass(frozen=True)
class TransferSummary:
    """What an upload or download moved: objects, bytes and seconds."""

    objects: int
    bytes: int
    seconds: float


def download_prefix(location: S3Location, folder: Path, skip: Iterable[str] = ()) -> TransferSummary:
    """Every object below the prefix into ``folder`` (each written to a temporary name, then renamed)."""
    started = time.perf_counter()
    listing = {name: size for name, size in list_objects(location).items() if name not in set(skip)}
    folder.mkdir(parents=True, exist_ok=True)

    def fetch(name: str) -> None:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.part-{os.getpid()}-{threading.get_ident()}")
        key = location.key(name)
        client = client_for(location)
        retried(location, "GET", key, lambda: client.download_file(location.bucket, key, str(temporary)))
        if temporary.stat().st_size != listing[name]:
            temporary.unlink()
            raise ObjectStorageError(f"GET s3://{location.bucket}/{key} gave a file of the wrong size")
        os.replace(temporary, target)

    _in_parallel(location, fetch, sorted(listing))
    return TransferSummary(len(listing), sum(listing.values()), time.perf_counter() - started)


# -- writing -----------------------------------------------------------------------------


def upload_file(location: S3Location, path: Path, name: str) -> None:
    key = location.key(name)
    client = client_for(location)
    retried(location, "PUT", key, lambda: client.upload_file(str(path), location.bucket, key))


def delete_objects(location: S3Location, names: Iterable[str]) -> None:
    """Delete objects ``names`` below the prefix (1,000 per request)."""
    keys = [location.key(name) for name in names]
    client = client_for(location)
    for start in range(0, len(keys), 1000):
        batch = {"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True}
        retried(
            location, "DELETE", keys[start], lambda b=batch: client.delete_objects(Bucket=location.bucket, Delete=b)
        )


def delete_prefix(location: S3Location) -> int:
    """Delete everything below the prefix, the manifest first (so a store there stops opening at once).

    A bucket that does not exist holds nothing to delete.
    """
    try:
        names = list(list_objects(location))
    except ObjectStorageError as error:
        if is_missing(error):
            return 0
        raise
    manifests = [name for name in names if name in MANIFESTS]
    delete_objects(location, manifests)
    delete_objects(location, [name for name in names if name not in MANIFESTS])
    return len(names)


def ensure_bucket(location: S3Location) -> None:
    """Create the bucket if it does not exist (a test server starts with none)."""
    client = client_for(location)
    try:
        retried(location, "HEAD bucket", "", lambda: client.head_bucket(Bucket=location.bucket))
    except ObjectStorageError as error:
        if not is_missing(error) and "403" not in str(error):
            raise
        retried(location, "CREATE bucket", "", lambda: client.create_bucket(Bucket=location.bucket))


def upload_store(
    location: S3Location, folder: Path, progress: Callable[[int, int], None] | None = None
) -> TransferSummary:
    """Upload the finished store in ``folder`` to ``location``, its manifest last.

    A store already at ``location`` loses its manifest first and its stale objects before the
    new manifest goes up, so at no moment does the prefix open as a mix of two stores.
    ``progress(bytes done, bytes total)`` is called as files finish.

    Raises:
        StoreExistsError: ``location`` holds objects but no store manifest (they are not ours to delete).
        ObjectStorageError: a request failed after its retries (it names the key).
    """
    from ..errors import StoreExistsError

    started = time.perf_counter()
    files = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}
    manifests = [name for name in MANIFESTS if name in files]
    if not manifests:
        raise ObjectStorageError(f"{folder} holds no finished store (no {MANIFEST}); nothing was uploaded")
    ensure_bucket(location)
    existing = list_objects(location)
    if existing and not any(name in existing for name in MANIFESTS):
        raise StoreExistsError(
            f"{location.url} holds {len(existing):,} objects that are not an image store; choose another prefix "
            "so nothing of yours is replaced"
        )
    delete_objects(location, [name for name in MANIFESTS if name in existing])
    total = sum(path.stat().st_size for path in files.values())
    done = [0]
    lock = threading.Lock()

    def put(name: str) -> None:
        upload_file(location, files[name], name)
        with lock:
            done[0] += files[name].stat().st_size
            if progress is not None:
                progress(done[0], total)

    _in_parallel(location, put, [name for name in files if name not in manifests])
    delete_objects(location, [name for name in existing if name not in files])
    for name in manifests:
        put(name)
    return TransferSummary(len(files), total, time.perf_counter() - started)


def _in_parallel(location: S3Location, action: Callable[[str], None], names: list[str]) -> None:
    """``action(name)`` for every name on a few threads; the first failure stops the rest and is raised."""
    if len(names) <= 1:
        for name in names:
            action(name)
        return
    failed = threading.Event()

    def guarded(name: str) -> None:
        if not failed.is_set():
            try:
                action(name)
            except BaseException:
                failed.set()
                raise

    with ThreadPoolExecutor(max_workers=location.settings.concurrency) as pool:
        futures = [pool.submit(guarded, name) for name in names]
        try:
            for future in futures:
                future.result()
        except BaseException:
            failed.set()
            for future in futures:
                future.cancel()
            raise


__all__ = [
    "MANIFEST",
    "MANIFESTS",
    "TransferSummary",
    "client_for",
    "delete_objects",
    "delete_prefix",
    "download_prefix",
    "ensure_bucket",
    "exists",
    "is_missing",
    "is_retryable",
    "list_objects",
    "read_object",
    "read_range",
    "retried",
    "upload_file",
    "upload_store",
]
