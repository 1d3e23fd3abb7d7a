"""One writer per store, across processes: an OS lock on a file in the store folder.

Two processes appending to one store at once lost or garbled images on every backend
(LMDB's own lock serialises its transactions, not our batches, manifests and rollbacks).
So a store opened with ``"w"`` or ``"a"`` takes an exclusive ``flock`` on ``.writer.lock``
in its folder and holds it until it is closed; the file holds the writer's process id, so
a second writer is told whose write it waits for (:class:`~storage.errors.StoreInUseError`).

``flock`` belongs to the open file, so the kernel lets it go when the writer exits, however
it ends: a writer killed midway leaves the file behind but not the lock, which is how a
reader tells a write under way (:func:`live_writer` finds the lock held by a live process)
from one that was interrupted. A forked child that inherited the descriptor keeps the
lock held after its parent died; a holder whose recorded process is gone is therefore not
live, and a new writer takes the lock file over.

The file is removed when the writer closes (while still holding the lock), so a store
folder at rest holds only the store's own files. Taking a lock checks that the file locked
is still the one at the path, so a writer that opened the file just before another removed
it tries again instead of locking a file nobody else sees.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from .errors import StoreInUseError

LOCK_NAME = ".writer.lock"


def _pid_is_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _read_pid(descriptor: int) -> int:
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else 0
    except OSError:
        return 0


def live_writer(folder: str | os.PathLike[str]) -> int | None:
    """The id of the live process that writes the store in ``folder``, or None if no write is under way."""
    try:
        descriptor = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(descriptor)
            return pid if _pid_is_alive(pid) else None
        except OSError:
            return None
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def in_use_message(folder: Path, pid: int) -> str:
    """Who writes the store in ``folder``, and what to do: the words of every refusal."""
    if pid == os.getpid():
        return (
            f"the store at {folder} is already open for writing in this process (pid {pid}) by another store "
            "object: close that one first, or write through it"
        )
    return (
        f"the store at {folder} is being written by pid {pid}: wait for that write to end (the process "
        "closes the store), or stop that process, then open it again"
    )


class WriterLock:
    """The exclusive lock of one store's writer, held from :meth:`acquire` until :meth:`release`."""

    def __init__(self, folder: Path, descriptor: int) -> None:
        self.folder = folder
        self._descriptor = descriptor

    @classmethod
    def acquire(cls, folder: str | os.PathLike[str]) -> WriterLock:
        """Lock ``folder`` for writing, or raise :class:`StoreInUseError` naming the live holder.

        Raises OSError when the lock file cannot be created (a read-only folder, say).
        """
        folder = Path(folder)
        path = folder / LOCK_NAME
        for _ in range(8):
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(descriptor)
                os.close(descriptor)
                if _pid_is_alive(pid):
                    raise StoreInUseError(in_use_message(folder, pid)) from None
                _remove_if_same(path, pid)  # held by an orphan of a writer that is gone: take it over
                continue
            except BaseException:
                os.close(descriptor)
                raise
            if _is_current(path, descriptor):
                pid = str(os.getpid()).encode()
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, pid, 0)
                return cls(folder, descriptor)
            os.close(descriptor)  # removed (or replaced) after we opened it: lock the one at the path
        raise StoreInUseError(f"the store at {folder} keeps changing writers; try again")

    def moved_to(self, folder: Path) -> None:
        """The folder was renamed (a store replaced atomically): the lock file went with it."""
        self.folder = folder

    def release(self) -> None:
        """Remove the lock file (still locked, so no other writer holds it), then let the lock go."""
        if self._descriptor < 0:
            return
        with contextlib.suppress(OSError):
            if _is_current(self.folder / LOCK_NAME, self._descriptor):
                os.unlink(self.folder / LOCK_NAME)
        os.close(self._descriptor)
        self._descriptor = -1

    def forget_after_fork(self) -> None:
        """In a forked child: the lock is the parent's; drop this copy of the descriptor without unlocking."""
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1


def _is_current(path: Path, descriptor: int) -> bool:
    """Whether ``descriptor`` is the file now at ``path`` (not one removed after it was opened)."""
    try:
        at_path, held = os.stat(path), os.fstat(descriptor)
    except OSError:
        return False
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


def _remove_if_same(path: Path, pid: int) -> None:
    """Remove a lock file left held by a dead writer's orphan, unless another writer took it meanwhile."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        if _read_pid(descriptor) == pid:
            os.unlink(path)
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise
    finally:
        os.close(descriptor)
