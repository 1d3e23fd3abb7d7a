"""Download the full CIFAR-10 (170 MB) with an md5 check and a safe, all-or-nothing extraction."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import (
    CorruptDataError,
    DataNotFoundError,
    DiskSpaceError,
    DownloadError,
)
from .cifar10 import (
    CIFAR10_ARCHIVE_NAME,
    CIFAR10_DIRNAME,
    CIFAR10_MD5,
    CIFAR10_URL,
    DOWNLOAD_COMMAND,
    batch_folder,
    is_full_cifar10,
    load_cifar10_folder,
)
from .locations import DATA_DIR_ENV, data_dir

logger = logging.getLogger("storage.datasets")

_CHUNK_BYTES = 256 * 1024
# The extracted full data set is a little larger than the gzipped archive (178 MB vs 170 MB).
_EXTRACTED_SIZE_FACTOR = 1.1


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _check_free_space(folder: Path, total: int | None) -> None:
    if not total:
        return
    needed = int(total * (1 + _EXTRACTED_SIZE_FACTOR))
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(
            f"downloading and extracting CIFAR-10 needs about {needed / 1e6:,.0f} MB in {folder}, "
            f"but only {free / 1e6:,.0f} MB are free; free some space or set {DATA_DIR_ENV} to another folder"
        )


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _fetch(
    url: str,
    part: Path,
    archive: Path,
    timeout: float,
    progress: bool,
    on_progress: Callable[[int, int | None], None] | None,
) -> str:
    """Stream ``url`` into ``part``; return the md5 of what was received."""
    from tqdm import tqdm

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"{url} answered HTTP {error.code} ({error.reason}); check the URL, or download the archive "
            f"by hand and place it at {archive}"
        ) from None
    except ValueError as error:
        raise DownloadError(f"{url!r} is not a URL that can be downloaded ({error}); pass an http(s) URL") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"could not reach {url}: {reason}; check your connection or download the archive by hand "
            f"and place it at {archive}"
        ) from None
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    with response, open(part, "wb") as file:
        total = _content_length(response)
        _check_free_space(part.parent, total)
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=archive.name, disable=not progress
        ) as bar:
            if on_progress is not None:
                on_progress(0, total)
            try:
                for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                    file.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                    if on_progress is not None:
                        on_progress(done, total)
            except (OSError, http.client.HTTPException) as error:
                raise DownloadError(
                    f"the download of {url} broke off after {done:,} bytes ({error}); run it again to retry"
                ) from None
    if total is not None and done != total:
        raise DownloadError(f"the download of {url} stopped after {done:,} of {total:,} bytes; run it again to retry")
    return digest.hexdigest()


def _download_archive(
    url: str,
    archive: Path,
    md5: str | None,
    timeout: float,
    progress: bool,
    on_progress: Callable[[int, int | None], None] | None,
) -> None:
    """Download ``url`` to ``archive`` via a ``.part`` file that is removed on any failure."""
    part = archive.with_name(archive.name + ".part")
    _remove(part)
    logger.info("downloading %s to %s", url, archive)
    try:
        received_md5 = _fetch(url, part, archive, timeout, progress, on_progress)
        if md5 is not None and received_md5 != md5.lower():
            raise DownloadError(
                f"the file downloaded from {url} has md5 {received_md5}, expected {md5}; the transfer was "
                "damaged or the server sent something else. The partial file was removed: run it again to retry"
            )
        os.replace(part, archive)
    except BaseException:
        _remove(part)
        raise


def _unsafe_member_reason(member: tarfile.TarInfo, target: Path) -> str | None:
    """Why extracting ``member`` into ``target`` would be unsafe, or None if it is fine."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        return "it has an absolute path"
    destination = (target / name).resolve()
    if not destination.is_relative_to(target):
        return "it would be written outside the target folder"
    if member.issym() or member.islnk():
        base = destination.parent if member.issym() else target
        link = (base / member.linkname).resolve()
        if os.path.isabs(member.linkname) or not link.is_relative_to(target):
            return f"it links to {member.linkname!r}, outside the target folder"
        return None
    if not (member.isfile() or member.isdir()):
        return "it is a device file or FIFO, which a data archive never contains"
    return None


def _safe_members(tar: tarfile.TarFile, target: Path, archive: Path, fate: str) -> list[tarfile.TarInfo]:
    """All members of ``tar``, refusing the archive if any would escape ``target``."""
    members = tar.getmembers()
    for member in members:
        reason = _unsafe_member_reason(member, target)
        if reason is not None:
            raise DownloadError(
                f"refusing to extract {archive}: member {member.name!r} is unsafe ({reason}). The archive is "
                f"not the official CIFAR-10 one; {fate}"
            )
    return members


def _extract(archive: Path, root: Path, fate: str) -> Path:
    """Extract ``archive`` safely into ``root/cifar-10-batches-py``, all or nothing.

    ``fate`` ends each error message: what became of the archive and what to do next.
    """
    final = root / CIFAR10_DIRNAME
    staging = Path(tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=root)).resolve()
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = _safe_members(tar, staging, archive, fate)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise CorruptDataError(f"{archive} is not a readable .tar.gz archive ({error}); {fate}") from None
        extracted = staging / CIFAR10_DIRNAME
        if batch_folder(extracted) != extracted:
            raise CorruptDataError(f"{archive} holds no {CIFAR10_DIRNAME}/ folder with CIFAR-10 batches; {fate}")
        try:
            load_cifar10_folder(extracted)
        except CorruptDataError as error:
            raise CorruptDataError(f"{archive} holds a damaged CIFAR-10 batch ({error}); {fate}") from None
        if final.exists():
            os.replace(final, staging / "previous")
        os.replace(extracted, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_placed_archive(archive: Path, md5: str | None) -> None:
    """Refuse an archive already at ``archive`` whose md5 is wrong, and leave it where it is.

    It may be a file the user put there by hand (the advice when there is no network);
    deleting it and then, offline, asking for it at that very path would go in a circle.
    """
    if md5 is None:
        return
    found = _md5(archive)
    if found != md5.lower():
        raise DownloadError(
            f"the archive at {archive} has md5 {found}, expected {md5.lower()}; it is not the official "
            f"{CIFAR10_ARCHIVE_NAME} or it is incomplete. Delete it and run `{DOWNLOAD_COMMAND}` again, "
            f"or replace it with the real {CIFAR10_ARCHIVE_NAME}"
        )


def _existing_cifar10(folder: Path) -> bool:
    """Whether ``folder`` already holds a complete CIFAR-10 that loads."""
    if not is_full_cifar10(folder):
        return False
    try:
        load_cifar10_folder(folder)
    except (CorruptDataError, DataNotFoundError) as error:
        logger.warning("%s is incomplete or damaged (%s); downloading it again", folder, error)
        return False
    return True


def download_cifar10(
    root: str | os.PathLike[str] | None = None,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
    progress: bool = True,
    timeout: float = 30,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download and extract the full CIFAR-10 (python version, 170 MB, 60,000 images).

    Nothing is done when ``root/cifar-10-batches-py`` already holds all six batches and
    they load; the download is skipped when the archive is already there with the right
    md5. An archive already there with another md5 is refused and left in place: it may
    be one the user put there by hand. The download goes to a ``.part`` file that is
    removed on any failure, and the archive is extracted into a temporary folder that is
    moved into place only once complete, so an interrupted run never leaves a
    half-written folder behind. Archive members that would land outside the target
    folder (absolute paths, ``..``, links pointing outside, device files) are refused.

    Args:
        root: Folder to download into; defaults to the data folder (``data/``).
        url: Where to fetch ``cifar-10-python.tar.gz``.
        md5: Expected md5 of the archive; ``None`` skips the check.
        progress: Whether to show a tqdm progress bar on the terminal.
        timeout: Seconds to wait for the server before giving up.
        on_progress: Called as ``on_progress(done_bytes, total_bytes)`` when the transfer
            starts and after each chunk; ``total_bytes`` is None if the server sends no length.

    Returns:
        The path of the ``cifar-10-batches-py`` folder.

    Raises:
        DownloadError: no network, a broken transfer, an md5 mismatch (of the download or
            of an archive already there), or an unsafe archive.
        CorruptDataError: the archive is not a readable CIFAR-10 .tar.gz.
        DiskSpaceError: not enough free space for the archive and its contents.
    """
    root = Path(root).expanduser() if root is not None else data_dir()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    final = root / CIFAR10_DIRNAME
    if _existing_cifar10(final):
        logger.info("CIFAR-10 already present at %s", final)
        return final
    archive = root / CIFAR10_ARCHIVE_NAME
    if archive.is_file():
        _check_placed_archive(archive, md5)
        logger.info("using the archive already at %s", archive)
        return _extract(archive, root, f"it was left in place: delete it or replace it with the real {archive.name}")
    _download_archive(url, archive, md5, timeout, progress, on_progress)
    try:
        return _extract(archive, root, f"it was deleted, run `{DOWNLOAD_COMMAND}` again")
    except (DownloadError, CorruptDataError):
        _remove(archive)
        raise
