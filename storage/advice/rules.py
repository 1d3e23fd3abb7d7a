"""What rules a format out of a question, each rule one function with its reason in words.

A rule looks at the question, the format and its projection, and returns why the format
cannot be the answer, or None. Rules are checked in this order and the first reason is the
one given (a table lists every format with its reason). The limits of the machine (free disk
and inodes where the store goes, memory) are read once, into :class:`Machine`, so that the
same stored measurements and the same machine give the same advice.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from .. import registry
from ..bench.environment import existing_parent
from ..encodings import parse_encoding
from .candidates import READABLE_BY_OTHERS, has_random_access
from .projection import Projection
from .question import Question, format_bytes

COMFORTABLE_FILES = 1_000_000  # beyond this, listing, copying and backing up a folder of files hurts
INODE_SHARE = 0.5  # a store may take at most half the free inodes


@dataclass(frozen=True)
class Machine:
    """What the machine offers the store: free disk and inodes where it goes, memory."""

    free_bytes: int
    free_inodes: int | None
    memory_bytes: int

    @classmethod
    def here(cls, folder: str) -> Machine:
        place = existing_parent(folder)
        stats = os.statvfs(place)
        inodes = stats.f_favail if stats.f_files else None  # some file systems have no fixed inode count
        return cls(shutil.disk_usage(place).free, inodes, psutil.virtual_memory().total)


Rule = Callable[[Question, Projection, Machine], "str | None"]


def failed(question: Question, projection: Projection, machine: Machine) -> str | None:
    if projection.evidence.refused:
        return f"cannot hold these images: {projection.evidence.refused}"
    if projection.failures:
        return f"failed on this data ({projection.failures[0]})"
    if projection.bytes is None or projection.epoch_s is None:
        return "not measured: it did not fit in the time budget"
    return None


def lossless(question: Question, projection: Projection, machine: Machine) -> str | None:
    if not question.lossless:
        return None
    candidate = projection.evidence.candidate
    options = candidate.options_dict
    exact_format = registry.backend_info(candidate.backend).lossless
    lossless_with = getattr(registry.store_class(candidate.backend), "lossless_with", None)
    if lossless_with is not None:
        exact_format = lossless_with(options)
    encoding = parse_encoding(options.get("encoding", "raw"))
    if not exact_format or not encoding.lossless or projection.lossy:
        return "lossy: it does not give back the images exactly, and lossless was asked for"
    return None


def random_access(question: Question, projection: Projection, machine: Machine) -> str | None:
    if question.access != "random":
        return None
    ok, why = has_random_access(projection.evidence.candidate.backend)
    return None if ok else f"no random access for random lookups: {why}"


def appendable(question: Question, projection: Projection, machine: Machine) -> str | None:
    backend = projection.evidence.candidate.backend
    if question.access == "append" and not registry.backend_info(backend).appendable:
        return f"{backend} cannot take images appended to a finished store"
    return None


def readable_by_others(question: Question, projection: Projection, machine: Machine) -> str | None:
    backend = projection.evidence.candidate.backend
    if question.readable_by_others and backend not in READABLE_BY_OTHERS:
        return f"{backend} is read through its own library, and other tools must read the data without this one"
    return None


def disk_budget(question: Question, projection: Projection, machine: Machine) -> str | None:
    high = projection.bytes.high
    if question.disk_budget_bytes is not None:
        if high > question.disk_budget_bytes:
            return (
                f"over the disk budget: up to {format_bytes(high)} at {question.count:,} images, "
                f"more than the {format_bytes(question.disk_budget_bytes)} allowed"
            )
        return None
    if high > machine.free_bytes:
        return f"up to {format_bytes(high)}, more than the {format_bytes(machine.free_bytes)} free on this disk"
    return None


def file_count(question: Question, projection: Projection, machine: Machine) -> str | None:
    if projection.files is None:
        return None
    files = projection.files.high
    if machine.free_inodes is not None and files > machine.free_inodes * INODE_SHARE:
        return f"{files:,.0f} files: more than half the {machine.free_inodes:,} free inodes of this file system"
    if files > COMFORTABLE_FILES:
        return f"{files:,.0f} files: more than a file system copes with comfortably (listing, copying, backups)"
    return None


RULES: tuple[Rule, ...] = (failed, lossless, random_access, appendable, readable_by_others, disk_budget, file_count)


def ruled_out(question: Question, projection: Projection, machine: Machine) -> str | None:
    """The first reason ``projection``'s format cannot answer ``question``, or None."""
    for rule in RULES:
        reason = rule(question, projection, machine)
        if reason:
            return reason
    return None


def warnings_for(question: Question, projection: Projection, machine: Machine) -> list[str]:
    """What holds the format back without ruling it out: a store larger than memory."""
    notes = []
    if projection.bytes is not None and projection.bytes.value > machine.memory_bytes:
        notes.append(
            f"at {format_bytes(projection.bytes.value)} the store is larger than this machine's "
            f"{format_bytes(machine.memory_bytes)} of memory: the measured reads came from the page cache, "
            "at full size they come from the disk and will be slower than projected"
        )
    if projection.files is not None and COMFORTABLE_FILES / 10 < projection.files.value <= COMFORTABLE_FILES:
        notes.append(f"{projection.files.value:,.0f} files: copying or listing them takes a while")
    return notes
