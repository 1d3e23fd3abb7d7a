"""Opening a store's folder and letting it go: the writer's lock, a replacement built beside, the manifest's checks.

The part of :class:`~storage.base.ImageStore` that runs before the first image is read or
written and after the last: a writer takes the store's lock (:mod:`storage.locking`) and
holds it until it closes; ``"w"`` over an existing store writes a new one beside it and
swaps it in at close (:mod:`storage.folders`); opening reads the manifest (checked by
:mod:`storage.manifest`), tells a reader of a store being written who writes it, and checks
the count against what the backend's files hold (``_stored_count``) before anything is
appended. A backend library's exception on the way becomes the library's error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from . import checksums, folders, manifest
from .errors import CorruptDataError, IncompleteStoreError, StorageError, StoreInUseError, WrongBackendError
from .locking import WriterLock, live_writer
from .manifest import FORMAT_VERSION, MANIFEST_NAME, read_manifest, write_file_atomically
from .reading import converts_to_storage_error, damaged_store_error

OPEN_RETRIES = 3  # a reader whose manifest changed while it opened (a writer committed) opens again


class StoreLifecycleMixin:
    """How an :class:`~storage.base.ImageStore` opens its folder, writes its manifest and lets the folder go."""

    def _take_lock(self, folder: Path) -> WriterLock:
        """The writer's lock of ``folder`` (see :mod:`storage.locking`), or why this process cannot write there."""
        try:
            return WriterLock.acquire(folder)
        except OSError as error:
            if manifest.is_disk_full(error):
                raise manifest.disk_full_error(folder, None) from None
            raise manifest.not_writable_error(folder, error) from None

    def _start_new_store(self, options: dict[str, Any]) -> None:
        """A new store; over an existing one, written beside it and swapped in at close (see :mod:`storage.folders`)."""
        final = self.path
        if folders.check_replaceable(final):
            self._replacing = (final, self._take_lock(final))
            self.path = folders.replacement_folder(final)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if isinstance(error, FileExistsError):
                raise
            raise manifest.not_writable_error(self.path, error) from None
        self._writer_lock = self._take_lock(self.path)
        self.options = {**self.default_options, **options}
        self._count = 0
        self.backend_state: dict[str, Any] = {}
        self.class_names: list[str] | None = None
        self._install_encoding()
        self._install_checksums({"algorithm": checksums.DEFAULT_ALGORITHM, "records": 0, "first_id": 0})
        self._guarded(self._create, "creating its files")
        self._backend_open = True
        self._write_manifest("complete")

    def _open_existing_store(self, options: dict[str, Any]) -> None:
        read_manifest(self.path)  # a store is there: only then may a writer put its lock file in the folder
        if self.mode != "r":
            self._writer_lock = self._take_lock(self.path)
        for attempt in range(OPEN_RETRIES):
            found = read_manifest(self.path)
            opened = self._open_from_manifest(found)
            if opened or attempt == OPEN_RETRIES - 1:
                break
            self._guarded(self._close, "closing it")  # a writer committed while this reader opened: again
            self._backend_open = False
        if found["state"] != "complete":
            self._guarded(lambda: self._rollback(self._count), "undoing an interrupted write")
            self._rollback_checksums(self._count)
            self._write_manifest("complete")

    def _open_from_manifest(self, found: dict[str, Any]) -> bool:
        """Open the backend's files as ``found`` describes them; False if the manifest changed meanwhile (a reader)."""
        if found["backend"] != self.info.name:
            raise WrongBackendError(
                f"{self.path} holds a {found['backend']!r} store, not {self.info.name!r}; "
                f"open it with open_store({found['backend']!r}, ...)"
            )
        if found["state"] != "complete" and self.mode == "r":
            self._refuse_incomplete(found)
        self.options = {**self.default_options, **found.get("options", {})}
        self._count = found["count"]
        self.backend_state = dict(found.get("backend_state", {}))
        self.class_names = found.get("class_names")
        self._install_encoding()
        self._install_checksums(found.get("checksums"))
        self._guarded(self._open, "opening its files")
        self._backend_open = True
        stored = self._guarded(self._stored_count, "counting the images in its files")
        if stored is None or stored == self._count or (stored > self._count and found["state"] != "complete"):
            return True
        if self.mode == "r" and (read_manifest(self.path) != found or live_writer(self.path)):
            if stored > self._count:  # a writer appends now: this reader sees what was committed
                return True
            return False
        raise CorruptDataError(
            f"{self.path / MANIFEST_NAME} says {self._count:,} images are committed but the {self.info.name} files "
            f"of the store hold {stored:,}: the manifest or the data is damaged, and appending would overwrite or "
            "lose images. Restore the store from a copy, or write it again from its source"
        )

    def _refuse_incomplete(self, found: dict[str, Any]) -> None:
        """A reader of a store marked ``"writing"``: a live writer is named; a gone one left an interrupted write."""
        pid = live_writer(self.path)
        if pid is not None:
            raise StoreInUseError(
                f"the store at {self.path} is being written by pid {pid}; open it when that write ends "
                f"({found['count']:,} images are committed so far)"
            )
        raise IncompleteStoreError(
            f"the store at {self.path} is incomplete: a write was interrupted after "
            f"{found['count']} images were committed. Reopen it with mode 'a' to keep "
            "those images and go on, or rewrite it with mode 'w'"
        )

    def _guarded(self, step, doing: str):
        """Run a backend hook; a backend library's own exception becomes the library's error naming the store."""
        try:
            return step()
        except Exception as error:
            if not converts_to_storage_error(error):
                raise
            if self.mode != "r" and isinstance(error, OSError):
                raise self._write_error(error, None) from error
            raise damaged_store_error(self.path, error, doing) from error

    def _stored_count(self) -> int | None:
        """How many images the backend's files hold, or None if it cannot tell cheaply; checked against the manifest."""
        return None

    def _let_go_after_failed_open(self) -> None:
        """Close what a store whose opening failed had opened; release its locks and a replacement folder it began."""
        self._closed = True
        if self._backend_open:
            self._backend_open = False
            with contextlib.suppress(Exception):
                self._close()
        if getattr(self, "_writer_lock", None) is not None:
            self._writer_lock.release()
            self._writer_lock = None
        if self._replacing is not None:
            final, old_lock = self._replacing
            self._replacing = None
            if self.path != final:
                shutil.rmtree(self.path, ignore_errors=True)
                self.path = final
            old_lock.release()

    def _write_manifest(self, state: str) -> None:
        found = {
            "backend": self.info.name,
            "format_version": FORMAT_VERSION,
            "count": self._count,
            "state": state,
            "options": self.options,
            "backend_state": self.backend_state,
            "checksums": self._checksums,
        }
        if self.class_names is not None:
            found["class_names"] = self.class_names
        try:
            write_file_atomically(self.path / MANIFEST_NAME, json.dumps(found, indent=1).encode())
        except OSError as error:
            raise self._write_error(error, None) from None

    def _write_error(self, error: BaseException, needed_bytes: int | None) -> StorageError:
        """A write's failure in the library's words: a full disk, a read-only folder, or the store it could not write."""
        if manifest.is_disk_full(error):
            return manifest.disk_full_error(self._final_path, needed_bytes)
        if isinstance(error, StorageError):
            return error
        return manifest.not_writable_error(self._final_path, error)

    @property
    def _final_path(self) -> Path:
        """Where the store is (or will be, once a replacement is swapped in)."""
        return self._replacing[0] if self._replacing is not None else self.path

    def _finish_writing(self) -> None:
        """Swap a replacement in (when its store is complete) and let the writer's locks go."""
        if self._pid != os.getpid():
            for lock in (self._writer_lock, self._replacing[1] if self._replacing else None):
                if lock is not None:
                    lock.forget_after_fork()
            return
        if self._replacing is not None:
            final, old_lock = self._replacing
            self._replacing = None
            if self._writer_lock is not None and read_manifest(self.path).get("state") == "complete":
                old = folders.swap_in(self.path, final)
                old_lock.moved_to(old)
                self._writer_lock.moved_to(final)
                self.path = final
                old_lock.release()
                shutil.rmtree(old, ignore_errors=True)
            else:
                old_lock.release()
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None
