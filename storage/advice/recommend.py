"""One recommendation and why: the formats ranked on what the question's access pattern needs.

The figure that decides is the one the access pattern spends its time on: a shuffled epoch
through the DataLoader, a sequential scan, a random read's latency, or appending one image
at a time. Among the formats no rule rules out, the lowest projected figure wins; bytes on
disk break a tie. A runner-up whose projected range reaches into the winner's range ties with
it: the measurements cannot tell them apart, so the answer names them together instead of
pretending that one is faster (the winner is still the one named first). Everything else
(the runners-up, what rules the others out) is said beside it, and the whole reasoning is
one table, each row the figures measured and projected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .candidates import READABLE_BY_OTHERS, describe_encoding, has_random_access
from .model import Range
from .projection import Projection
from .question import ACCESS_LABELS, Question, format_bytes

DECIDING_FIGURE = {
    "shuffled": ("epoch_s", "an epoch at {workers} workers"),
    "sequential": ("scan_s", "a full scan"),
    "random": ("random_read_s", "a random read"),
    "append": ("append_s", "appending every image"),
}


@dataclass
class Weighed:
    """One format as weighed: its projection, what rules it out, what holds it back."""

    projection: Projection
    ruled_out: str | None
    warnings: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.projection.evidence.candidate.backend

    @property
    def label(self) -> str:
        return self.projection.evidence.candidate.label

    def to_dict(self) -> dict[str, Any]:
        p = self.projection

        def shown(value: Range | None) -> dict[str, float] | None:
            return None if value is None else value.to_dict()

        return {
            "backend": self.backend,
            "options": p.evidence.candidate.options_dict,
            "measured": p.measured,
            "runs": list(p.evidence.runs),
            "reused_runs": list(p.evidence.reused_runs),
            "projected_bytes": shown(p.bytes),
            "projected_files": shown(p.files),
            "projected_convert_s": shown(p.convert_s),
            "projected_epoch_s": shown(p.epoch_s),
            "epoch_method": p.epoch_method,
            "projected_scan_s": shown(p.scan_s),
            "projected_random_read_s": shown(p.random_read_s),
            "projected_append_s": shown(p.append_s),
            "ruled_out": self.ruled_out,
            "warnings": list(self.warnings),
        }


def deciding(question: Question, weighed: Weighed) -> Range | None:
    return getattr(weighed.projection, DECIDING_FIGURE[question.access][0])


def rank(question: Question, rows: list[Weighed]) -> list[Weighed]:
    """The formats no rule rules out, best first (the deciding figure, then bytes, then the name)."""
    usable = [row for row in rows if row.ruled_out is None and deciding(question, row) is not None]
    return sorted(usable, key=lambda row: (deciding(question, row).value, row.projection.bytes.value, row.label))


def tied(question: Question, ranked: list[Weighed]) -> list[Weighed]:
    """The runners-up whose deciding range overlaps the first's: as fast as it, as far as the samples can tell."""
    if len(ranked) < 2:
        return []
    best = deciding(question, ranked[0])
    return [row for row in ranked[1:] if deciding(question, row).low <= best.high]


def duration(seconds: float) -> str:
    """About 4 min, 35 s, 1.2 h, 30 µs: durations in the words a person would use."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _what_it_keeps(weighed: Weighed) -> str:
    kept = describe_encoding(weighed.projection.evidence.candidate.options_dict)
    return "" if kept == "pixels" else f" with {kept} kept"


def _figures(question: Question, weighed: Weighed) -> str:
    p = weighed.projection
    parts = [format_bytes(p.bytes.value)]
    if question.disk_budget_bytes is not None:
        parts[0] += f" (within your {format_bytes(question.disk_budget_bytes)})"
    what = DECIDING_FIGURE["shuffled"][1].format(workers=question.workers)
    if p.epoch_s is not None and question.access == "shuffled":
        parts.append(f"{what} in about {duration(p.epoch_s.value)}")
    elif p.scan_s is not None:
        parts.append(f"a full scan in about {duration(p.scan_s.value)}")
    if question.access == "append" and p.append_s is not None:
        parts.append(f"appending all in about {duration(p.append_s.value)}")
    ok, _ = has_random_access(weighed.backend)
    if p.random_read_s is not None and ok:
        parts.append(f"random reads {duration(p.random_read_s.value)}")
    return ", ".join(parts)


def _beside(question: Question, best: Weighed, other: Weighed) -> str:
    """A runner-up against the recommendation: its size and deciding figure as ratios, and what it offers."""
    size = other.projection.bytes.value / best.projection.bytes.value - 1
    size_words = f"{abs(size) * 100:.0f} % {'larger' if size >= 0 else 'smaller'}"
    figure = deciding(question, other).value / max(deciding(question, best).value, 1e-12)
    text = f"{other.label}{_what_it_keeps(other)} would be {size_words} and {figure:.1f}x as slow"
    extras = []
    if other.backend in READABLE_BY_OTHERS:
        extras.append(f"readable without this library ({READABLE_BY_OTHERS[other.backend]})")
    ok, _ = has_random_access(other.backend)
    if not ok:
        extras.append("has no random access")
    return text + (", but " + " and ".join(extras) if extras else "")


def recommendation_text(question: Question, ranked: list[Weighed], rows: list[Weighed]) -> str:
    """The answer in plain words: the format, its figures, the runners-up, what rules the others out."""
    if not ranked:
        reasons = "; ".join(f"{row.label}: {row.ruled_out}" for row in rows)
        return f"No format weighed meets these constraints at {question.count:,} images. {reasons}."
    best = ranked[0]
    text = f"{best.label}{_what_it_keeps(best)}: {_figures(question, best)}."
    ties = tied(question, ranked)
    if ties:
        names = ", ".join(f"{row.label}{_what_it_keeps(row)}" for row in ties)
        what = DECIDING_FIGURE[question.access][1].format(workers=question.workers)
        smallest = all(best.projection.bytes.value <= row.projection.bytes.value for row in ties)
        text += (
            f" It ties with {names} on {what}: their projected ranges overlap, so the samples cannot tell which "
            f"is faster at {question.count:,} images; {best.label} is named first for its lowest projection"
            + (", and it is the smallest on disk." if smallest else ".")
        )
    if len(ranked) > 1:
        text += " " + "; ".join(_beside(question, best, other) for other in ranked[1:3]) + "."
    out = [row for row in rows if row.ruled_out]
    if out:
        text += " Ruled out: " + "; ".join(f"{row.label} ({row.ruled_out})" for row in out) + "."
    return text


@dataclass
class Advice:
    """The answer to a :class:`Question`: the recommended format, every format weighed, and why."""

    question: Question
    rows: list[Weighed]
    ranked: list[Weighed]
    text: str
    source: dict[str, Any]
    machine: dict[str, Any]
    runs: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def recommended(self) -> Weighed | None:
        return self.ranked[0] if self.ranked else None

    @property
    def tied(self) -> list[Weighed]:
        """The formats the recommendation ties with (see :func:`tied`)."""
        return tied(self.question, self.ranked)

    def to_dict(self) -> dict[str, Any]:
        best = self.recommended
        return {
            "question": self.question.to_dict(),
            "access": ACCESS_LABELS[self.question.access],
            "recommended": None
            if best is None
            else {"backend": best.backend, "options": best.projection.evidence.candidate.options_dict},
            "recommendation": self.text,
            "deciding_figure": DECIDING_FIGURE[self.question.access][0],
            "formats": [row.to_dict() for row in self.rows],
            "ranking": [row.label for row in self.ranked],
            "tied_with_recommended": [row.label for row in self.tied],
            "source": self.source,
            "machine": self.machine,
            "runs": list(self.runs),
            "notes": list(self.notes),
        }
