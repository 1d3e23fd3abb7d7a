"""Errors raised by the storage library.

Every error derives from :class:`StorageError` (so callers can catch the library's
errors in one place) and from the closest builtin exception (so code that already
catches ``ValueError`` or ``FileNotFoundError`` keeps working). Each message says what
was wrong and what to do about it.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage library raises on purpose."""

    def __str__(self) -> str:
        # KeyError quotes its message; every error here is a sentence, so print it as is.
        return str(self.args[0]) if self.args else self.__class__.__name__


class UnknownBackendError(StorageError, KeyError):
    """A backend name that is not registered."""


class BackendUnavailableError(StorageError, ImportError):
    """The backend is registered but its library is missing or fails to import here."""


class ImageTypeError(StorageError, TypeError):
    """Images or labels of the wrong type (for instance float pixels instead of uint8)."""


class ImageShapeError(StorageError, ValueError):
    """Images of a shape the store cannot hold (wrong rank, channel count, or mixed sizes)."""


class EmptyBatchError(StorageError, ValueError):
    """A write of zero images."""


class LabelError(StorageError, ValueError):
    """Labels that do not match the images (wrong count, not integers, out of range)."""


class StoreNotFoundError(StorageError, FileNotFoundError):
    """Opening for reading or appending a store that does not exist."""


class NotAStoreError(StoreNotFoundError):
    """A path that exists but holds no store: a file, an empty folder, or a folder of other files."""


class WrongBackendError(StorageError, ValueError):
    """Opening a store with a backend other than the one that wrote it."""


class IncompleteStoreError(StorageError, ValueError):
    """A store whose last write was interrupted before it finished."""


class ReadOnlyStoreError(StorageError, PermissionError):
    """Writing to a store opened with mode ``"r"``."""


class StoreNotWritableError(StorageError, PermissionError):
    """A store folder that cannot be created or written (permissions, read-only disk)."""


class StoreInUseError(StorageError, RuntimeError):
    """A store that another process, or another open store of this process, holds in a way that excludes this one.

    A second writer of a store, or a reader that finds a write under way, gets it; the
    message names the writer's process id.
    """


class StoreNotReadableError(StorageError, PermissionError):
    """A store whose files this process may not read."""


class StoreExistsError(StorageError, FileExistsError):
    """Creating a store where a folder that is not a store already holds files."""


class ImageIndexError(StorageError, IndexError):
    """Reading an image id that the store does not hold."""


class CorruptDataError(StorageError, ValueError):
    """A data file or store whose bytes do not parse (truncated, damaged, or not what it claims)."""


class BadImageFileError(StorageError, ValueError):
    """A file in an image folder that is empty or not an image Pillow can read."""


class EncodingError(StorageError, ValueError):
    """Images that cannot be kept in the encoding asked for (no source files to keep, alpha in a JPEG...)."""


class DownloadError(StorageError, ConnectionError):
    """A download that failed (no network, a broken transfer, or a checksum mismatch)."""


class ModeError(StorageError, ValueError):
    """An open mode other than ``"r"``, ``"w"`` or ``"a"``, or an unknown store option."""


class DataNotFoundError(StorageError, FileNotFoundError):
    """A data source (CIFAR-10 folder, image folder, batch file) that does not exist."""


class DiskSpaceError(StorageError, OSError):
    """Not enough free disk space for what was asked."""


class StoreFullError(DiskSpaceError):
    """A write that ran out of disk space: it was rolled back, and every image committed before it is kept."""


class NewerVersionError(StorageError, ValueError):
    """A file written by a newer version of this library, in a format this version does not know."""


class NoChecksumError(StorageError, ValueError):
    """A verified read of images that were written before the store recorded checksums."""


class BadShardError(CorruptDataError):
    """Shards of a sharded store that are missing, incomplete, truncated or from another conversion.

    ``problems`` maps each bad shard's name (``"shard-00002"``) to what is wrong with it.
    """

    def __init__(self, message: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems = dict(problems or {})


class ConversionFailedError(StorageError, RuntimeError):
    """A sharded conversion in which some shards failed; the finished ones are kept for a rerun.

    ``failed`` maps each failed shard's name to the error its task ended with.
    """

    def __init__(self, message: str, failed: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failed = dict(failed or {})
