"""Checksums written with every batch, checked by ``store.verify()`` and by ``read_*(..., verify=True)``.

:mod:`storage.checksums` says what a checksum covers and how the records are kept. This is
the store's side, written once for every backend (as :mod:`storage.encoded` is for encoded
bytes): each chunk a backend is handed is hashed as it is written, in runs of at most 256 KiB,
and the runs' records are appended to ``checksums.bin`` when the batch commits (the manifest
counts them, so a cut-off write's records are cut away with it). A backend whose files hold
something else than what it was handed (lossy JPEG files) records its own runs, over the
bytes it wrote, and reads them back the same way (:meth:`IntegrityMixin._read_run_checked`).

A verified read reads whole runs through the backend's own read path, hashes what came back
and compares; a run that does not match raises :class:`~storage.errors.CorruptDataError`
naming its images (and the backend's files, where it says which hold them), never wrong
pixels. ``verify()`` reads every run the same way and reports every damaged one, and what
the backend finds wrong with its files, in an :class:`IntegrityReport`.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import checksums
from .batch import stack_if_uniform
from .errors import CorruptDataError, NoChecksumError, StorageError

RUN_READ_BYTES = 16 * 2**20
"""Bytes of images read at once by a verified read (then hashed run by run)."""
HASH_ON_THREAD_BYTES = 2**20
"""A chunk written is hashed on the hashing thread from this size on (a thread hand-off costs tens of µs)."""
REPORTED_PROBLEMS = 20

_hashing_pool: ThreadPoolExecutor | None = None
_hashing_pool_pid = -1


def hashing_pool() -> ThreadPoolExecutor | None:
    """A thread that hashes what was read while the next piece is read (XXH3 releases the GIL); None on one core."""
    global _hashing_pool, _hashing_pool_pid
    if _hashing_pool_pid != os.getpid():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        _hashing_pool = ThreadPoolExecutor(1, thread_name_prefix="checksums") if cores > 1 else None
        _hashing_pool_pid = os.getpid()
    return _hashing_pool


@dataclass
class IntegrityReport:
    """What ``verify()`` found: how many images it checked, and every damaged image or file it found.

    ``damaged`` maps what is damaged (``"images 170..254"``, ``"index.bin"``, ``"shard-00002"``)
    to what is wrong with it. ``unchecked`` counts images that have no checksum (written
    before the store recorded them): they were read, not compared.
    """

    path: Path
    backend: str
    images: int
    checked: int = 0
    unchecked: int = 0
    damaged: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.damaged

    def describe(self) -> str:
        """The report in a few lines, as ``python -m storage verify`` prints it."""
        lines = [
            f"{self.path} ({self.backend}): {self.images:,} images, {self.checked:,} checked against their "
            f"checksums"
            + (f", {self.unchecked:,} without one (written before checksums were recorded)" if self.unchecked else "")
        ]
        if self.ok:
            lines.append("no damage found")
            return "\n".join(lines)
        lines.append(f"DAMAGED: {len(self.damaged)} problem(s)")
        for what, problem in list(self.damaged.items())[:REPORTED_PROBLEMS]:
            lines.append(f"  {what}: {problem}")
        if len(self.damaged) > REPORTED_PROBLEMS:
            lines.append(f"  ... and {len(self.damaged) - REPORTED_PROBLEMS} more")
        return "\n".join(lines)

    def raise_if_damaged(self) -> None:
        if not self.ok:
            raise CorruptDataError(self.describe())

    def merge(self, other: IntegrityReport, prefix: str) -> None:
        """Add a part's report (a shard's) under ``prefix``."""
        self.checked += other.checked
        self.unchecked += other.unchecked
        for what, problem in other.damaged.items():
            self.damaged[f"{prefix}: {what}"] = problem


def images_name(start: int, stop: int) -> str:
    return f"image {start}" if stop - start == 1 else f"images {start}..{stop - 1}"


class IntegrityMixin:
    """How an :class:`~storage.base.ImageStore` records checksums as it writes and checks them as it reads."""

    _checksums: dict[str, Any]
    """The manifest's ``checksums``: ``algorithm``, ``records`` committed, ``first_id`` (the first image covered)."""
    reads_release_the_gil = True
    """Whether the backend's reads of a run wait outside the GIL (a ``preadv``, HDF5's C library).

    Then a verified read hashes each run on a second thread while the next is read. A
    backend that copies in a Python loop (LMDB's records) sets it False: there the hashing
    thread waits for the GIL at every step, and hashing in turn was faster
    (``benchmarks/checksums.py``: 1.5x the time of a plain read against 1.9x)."""

    # -- writing -----------------------------------------------------------------------

    def _install_checksums(self, recorded: dict[str, Any] | None) -> None:
        """Take the manifest's checksum state; a store written before checksums starts them at its count."""
        if recorded is None:
            recorded = {"algorithm": checksums.DEFAULT_ALGORITHM, "records": 0, "first_id": self._count}
        self._checksums = dict(recorded)
        self._checksums.setdefault("first_id", 0)
        self._new_records: list[np.ndarray] = []
        self._hashing: Future | None = None
        self._records_cache: np.ndarray | None = None

    def _checksum_chunk(self, images, labels: np.ndarray, first_id: int) -> None:
        """Hash a chunk as the backend was handed it (pixels or encoded bytes), to be committed with the batch.

        A big chunk is hashed on the hashing thread while the backend writes the next one (at
        most one chunk waits, so memory stays bounded); :meth:`_commit_checksums` waits for it.
        """
        if self._checksums["first_id"] > first_id:  # a store written before checksums: they start here
            self._checksums["first_id"] = first_id
        self._collect_hashing()
        algorithm = self._checksums["algorithm"]
        pool = hashing_pool()
        if pool is not None and isinstance(images, np.ndarray) and images.nbytes >= HASH_ON_THREAD_BYTES:
            self._hashing = pool.submit(checksums.chunk_records, algorithm, images, labels.copy(), first_id)
            return
        self._new_records.append(checksums.chunk_records(algorithm, images, labels, first_id))

    def _collect_hashing(self) -> None:
        """Wait for the chunk being hashed on the hashing thread and keep its records."""
        hashing, self._hashing = self._hashing, None
        if hashing is not None:
            self._new_records.append(hashing.result())

    def _add_checksum_records(self, records: np.ndarray) -> None:
        """For backends that hash what they wrote themselves (see :meth:`_checksum_chunk`)."""
        self._new_records.append(records)

    def _commit_checksums(self) -> None:
        """Append the batch's records to ``checksums.bin``; the next manifest counts them."""
        self._collect_hashing()
        if not self._new_records:
            return
        records = np.concatenate(self._new_records)
        checksums.write_records(self.path, records, self._checksums["records"])
        self._checksums["records"] += len(records)
        self._new_records = []
        self._records_cache = None

    def _rollback_checksums(self, count: int) -> None:
        """Forget records of images ``count``.. (not committed), in memory and in the file."""
        try:
            self._collect_hashing()
        except Exception:  # noqa: BLE001 - the records of a write being undone
            pass
        self._new_records = [records[records["first_id"] < count] for records in self._new_records]
        self._new_records = [records for records in self._new_records if len(records)]
        checksums.cut_records(self.path, self._checksums["records"])
        self._records_cache = None

    # -- reading -----------------------------------------------------------------------

    def _committed_records(self) -> np.ndarray:
        if self._records_cache is None:
            try:
                records = checksums.read_records(self.path, self._checksums["records"])
                checksums.check_records(
                    records, self._checksums["first_id"], self._count, self.path / checksums.LOG_NAME
                )
                self._records_cache = records
            except ValueError as error:
                raise CorruptDataError(f"{error}; the store's checksums are damaged") from None
        return self._records_cache

    def _record_runs(self, records: np.ndarray, first: int, stop: int) -> list[tuple[int, int]]:
        """Records ``first``..``stop`` grouped into runs of about ``RUN_READ_BYTES`` (index ranges)."""
        shape = self._layout_shape
        per_image = int(np.prod(shape)) if shape is not None else checksums.BLOCK_BYTES
        counts = records["count"][first:stop]
        runs, start, total = [], first, 0
        for index, count in enumerate(counts.tolist(), start=first):
            if index > start and total + count * per_image > RUN_READ_BYTES:
                runs.append((start, index))
                start, total = index, 0
            total += count * per_image
        if start < stop:
            runs.append((start, stop))
        return _tapered(runs)

    def _read_run_checked(self, records: np.ndarray, into: np.ndarray | None):
        """Read the images of ``records`` (consecutive runs) as stored, and each run's digest of what came back.

        Returns ``(images, labels, digests)``: pixels (into ``into`` when given) for a raw
        store, encoded bytes for an encoded one. Backends that record their own runs
        (:meth:`_add_checksum_records`) override it to hash what they wrote.
        """
        images, labels = self._read_stored_run(records, into)
        return images, labels, self._run_digests(records, images, labels)

    def _read_stored_run(self, records: np.ndarray, into: np.ndarray | None):
        """The images of ``records`` as the backend stores them (pixels, or encoded bytes), and their labels."""
        start = int(records["first_id"][0])
        ids = np.arange(start, int(records["first_id"][-1] + records["count"][-1]))
        if self._encoding is None:
            return type(self)._read_many(self, ids, into)
        return self._read_encoded_many(ids)

    def _run_digests(self, records: np.ndarray, images, labels: np.ndarray) -> list[int]:
        """The digest of each run of ``records`` over what was read for them (``images`` start at the first)."""
        algorithm, start = self._checksums["algorithm"], int(records["first_id"][0])
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim >= 3:
            return checksums.uniform_run_digests(algorithm, images, labels, records["count"].tolist())
        digests = []
        for first, count in zip(records["first_id"].tolist(), records["count"].tolist()):
            low = first - start
            digests.append(checksums.run_digest(algorithm, images[low : low + count], labels[low : low + count]))
        return digests

    def _scanning(self, start: int, stop: int) -> contextlib.AbstractContextManager:
        """While images ``start``..``stop`` are read in order, piece by piece: a backend may ask for read-ahead."""
        return contextlib.nullcontext()

    def _damage_location(self, start: int, stop: int) -> str:
        """Which of the backend's files hold images ``start``..``stop`` (for messages); empty if it cannot say."""
        return ""

    def _mismatch(self, record: np.void) -> str:
        """What is wrong with the images of a run whose checksum does not match (the report's words)."""
        where = self._damage_location(int(record["first_id"]), int(record["first_id"] + record["count"]))
        return f"do not match the checksum recorded when they were written{' (' + where + ')' if where else ''}"

    def _mismatch_error(self, record: np.void) -> CorruptDataError:
        start = int(record["first_id"])
        return CorruptDataError(
            f"{images_name(start, start + int(record['count']))} of the store at {self.path} {self._mismatch(record)}: "
            "the store is damaged. Restore it from a copy, or write it again from its source"
        )

    def _check_runs(self, records: np.ndarray, digests: list[int]) -> None:
        for record, digest in zip(records, digests):
            if int(record["digest"]) != digest:
                raise self._mismatch_error(record)

    def _read_verified(self, ids: np.ndarray, out: np.ndarray | None):
        """Read ``ids`` (checked, committed) through whole runs whose checksums match, or raise CorruptDataError."""
        records = self._committed_records()
        first_checked = self._checksums["first_id"]
        stop_checked = checksums.covered_stop(records, first_checked)
        low, high = int(ids.min()), int(ids.max())
        if low < first_checked or high >= stop_checked:
            bad = low if low < first_checked else high
            raise NoChecksumError(
                f"image {bad} of the store at {self.path} has no checksum (images {first_checked}..{stop_checked - 1} "
                "have one; the others were written before the store recorded checksums), so it cannot be read "
                "verified: read it without verify=True, or write the store again to record checksums for every image"
            )
        contiguous = high - low == len(ids) - 1 and bool(np.all(np.diff(ids) == 1))
        if contiguous:  # a scan: the records from the first id's to the last's, without sorting 100,000 ids
            first_touched, last_touched = np.searchsorted(records["first_id"], [low, high], side="right") - 1
            touched = np.arange(first_touched, last_touched + 1)
        else:
            touched = np.unique(np.searchsorted(records["first_id"], ids, side="right") - 1)
        uniform = self._layout_shape if self._encoding is None else None
        if uniform is not None:
            return self._read_verified_uniform(ids, out, records, touched, uniform, contiguous)
        found: dict[int, Any] = {}
        found_labels: dict[int, int] = {}
        wanted = set(ids.tolist())
        for run_start, run_stop in _runs_of_touched(touched, self._record_runs(records, 0, len(records))):
            part = records[run_start:run_stop]
            images, labels, digests = self._read_run_checked(part, None)
            self._check_runs(part, digests)
            first = int(part["first_id"][0])
            for offset in range(len(labels)):
                if first + offset in wanted:
                    found[first + offset] = images[offset]
                    found_labels[first + offset] = int(labels[offset])
        picked = [found[image_id] for image_id in ids.tolist()]
        if self._encoding is not None:
            from .encoded import decode_blobs

            picked = [self._in_store_shape(image) for image in decode_blobs(picked)]
        label_array = np.fromiter((found_labels[i] for i in ids.tolist()), dtype=np.int64, count=len(ids))
        return stack_if_uniform(picked, out, self.uniform_shape), label_array

    def _read_verified_uniform(self, ids, out, records, touched, shape, contiguous: bool):
        """A raw store of one shape: runs read into ``out`` itself when the ids are one run of them, else gathered.

        Runs read in place are hashed on another thread while the next run is read, so on a
        machine with a free core the hashing mostly hides behind the reading.
        """
        if out is None:
            out = np.empty((len(ids), *shape), dtype=np.uint8)
        labels = np.empty(len(ids), dtype=np.int64)
        first_id = int(ids[0])
        hashes_beside = type(self)._read_run_checked is IntegrityMixin._read_run_checked and self.reads_release_the_gil
        pool = hashing_pool() if hashes_beside else None
        hashing: list[tuple[np.ndarray, Future]] = []
        scan = self._scanning(first_id, first_id + len(ids)) if contiguous else contextlib.nullcontext()
        with scan:
            try:
                for run_start, run_stop in _runs_of_touched(touched, self._record_runs(records, 0, len(records))):
                    part = records[run_start:run_stop]
                    start = int(part["first_id"][0])
                    stop = int(part["first_id"][-1] + part["count"][-1])
                    if contiguous and first_id <= start and stop <= first_id + len(ids):
                        target = out[start - first_id : stop - first_id]
                        if pool is None:
                            _, labels[start - first_id : stop - first_id], digests = self._read_run_checked(
                                part, target
                            )
                            self._check_runs(part, digests)
                            continue
                        _, run_labels = self._read_stored_run(part, target)
                        labels[start - first_id : stop - first_id] = run_labels
                        hashing.append((part, pool.submit(self._run_digests, part, target, run_labels)))
                        continue
                    images, run_labels, digests = self._read_run_checked(part, None)
                    self._check_runs(part, digests)
                    chosen = np.flatnonzero((ids >= start) & (ids < stop))
                    out[chosen] = images[ids[chosen] - start]
                    labels[chosen] = run_labels[ids[chosen] - start]
            finally:
                finished = [(part, future.result()) for part, future in hashing]
        for part, digests in finished:
            self._check_runs(part, digests)
        return out, labels

    # -- verify ----------------------------------------------------------------------------

    def _verify_files(self) -> dict[str, str]:
        """What the backend finds wrong with its own files beyond what checksums cover (names to problems)."""
        return {}

    def verify(self) -> IntegrityReport:
        """Read every image and compare each run with its checksum; report every damaged image and file.

        Nothing is changed. Images written before the store recorded checksums are read (a
        read error is damage) but cannot be compared. For a raw store of one shape this reads
        at about the speed of ``read_all`` plus the hashing (docs/formats.md has the cost).
        """
        self._ensure_process()
        self._settle_pending()
        report = IntegrityReport(self.path, self.info.name, self._count)
        try:
            records = self._committed_records()
        except CorruptDataError as error:
            report.damaged[checksums.LOG_NAME] = str(error)
            records = np.empty(0, checksums.RECORD)
        first_checked = self._checksums["first_id"] if len(records) else self._count
        stop_checked = checksums.covered_stop(records, first_checked)
        for start, stop in ((0, min(first_checked, self._count)), (stop_checked, self._count)):
            report.unchecked += max(0, stop - start)
            self._read_unchecked(start, stop, report)
        runs = self._record_runs(records, 0, len(records))
        scratch = self._scratch(records, runs)
        with self._scanning(first_checked, stop_checked):
            for run_start, run_stop in runs:
                self._verify_run(records, run_start, run_stop, report, scratch)
        report.damaged.update(self._verify_files())
        return report

    def _scratch(self, records: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray | None:
        """One buffer for every run ``verify`` reads, for a raw store of one shape (fresh memory is slow to touch)."""
        shape = self._layout_shape
        if shape is None or self._encoding is not None or not runs:
            return None
        most = max(int(records["count"][start:stop].sum()) for start, stop in runs)
        return np.empty((most, *shape), dtype=np.uint8)

    def _verify_run(
        self, records: np.ndarray, run_start: int, run_stop: int, report: IntegrityReport, scratch=None
    ) -> None:
        part = records[run_start:run_stop]
        try:
            into = scratch[: int(part["count"].sum())] if scratch is not None else None
            _, _, digests = self._read_run_checked(part, into)
        except (StorageError, Exception) as error:  # noqa: BLE001 - every failure to read is damage, named
            if run_stop - run_start > 1:  # find which runs do not read
                for index in range(run_start, run_stop):
                    self._verify_run(records, index, index + 1, report)
                return
            start = int(part["first_id"][0])
            report.damaged[images_name(start, start + int(part["count"][0]))] = f"cannot be read: {error}"
            return
        for record, digest in zip(part, digests):
            start = int(record["first_id"])
            if int(record["digest"]) == digest:
                report.checked += int(record["count"])
            else:
                report.damaged[images_name(start, start + int(record["count"]))] = self._mismatch(record)

    def _read_unchecked(self, start: int, stop: int, report: IntegrityReport) -> None:
        """Read images without checksums in pieces; a piece that does not read is damage."""
        step = max(1, RUN_READ_BYTES // max(1, int(np.prod(self._layout_shape or (checksums.BLOCK_BYTES,)))))
        for piece in range(start, stop, step):
            piece_stop = min(stop, piece + step)
            try:
                self.read_batch(np.arange(piece, piece_stop))
            except (StorageError, Exception) as error:  # noqa: BLE001 - named in the report
                report.damaged[images_name(piece, piece_stop)] = f"cannot be read: {error}"


def _tapered(runs: list[tuple[int, int]], parts: int = 8) -> list[tuple[int, int]]:
    """``runs`` with the last cut in up to ``parts`` pieces: the hashing of the last piece is
    the one part of a verified read that no reading hides, so it is kept short."""
    if not runs:
        return runs
    start, stop = runs[-1]
    step = max(1, -(-(stop - start) // parts))
    return runs[:-1] + [(first, min(first + step, stop)) for first in range(start, stop, step)]


def _runs_of_touched(touched: np.ndarray, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``runs`` (record index ranges) that hold a touched record, cut down to those records."""
    found = []
    for start, stop in runs:
        inside = touched[(touched >= start) & (touched < stop)]
        if len(inside):
            found.append((int(inside[0]), int(inside[-1]) + 1))
    return found
