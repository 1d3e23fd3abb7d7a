"""The reasoning as a table a person can check against the measurements: one row per format weighed."""

from __future__ import annotations

from .model import Range
from .question import format_bytes
from .recommend import Advice, duration


def _shown(value: Range | None, unit: str) -> str:
    if value is None:
        return "–"
    words = format_bytes if unit == "bytes" else duration
    return f"{words(value.value)} [{words(value.low)}–{words(value.high)}]"


def _largest_measured(measured: dict) -> str:
    counts = sorted({c for entry in measured.values() for c in entry.get("counts", [])})
    return ", ".join(f"{c:,}" for c in counts) if counts else "–"


def reasoning_rows(advice: Advice) -> list[dict[str, str]]:
    """Each format's verdict, what was measured and what it projects to, as text columns."""
    ranked = [row.label for row in advice.ranked]
    rows = []
    for row in advice.rows:
        p = row.projection
        verdict = "recommended" if ranked and row.label == ranked[0] else (
            f"#{ranked.index(row.label) + 1}" if row.label in ranked else "ruled out")  # fmt: skip
        rows.append({
            "format": row.label,
            "verdict": verdict,
            "measured at": _largest_measured(p.measured),
            "reused runs": str(len(p.evidence.reused_runs)),
            "bytes": _shown(p.bytes, "bytes"),
            "convert": _shown(p.convert_s, "s"),
            "epoch" if advice.question.access == "shuffled" else "scan": _shown(
                p.epoch_s if advice.question.access == "shuffled" else p.scan_s, "s"),
            "random read": _shown(p.random_read_s, "s"),
            **({"append": _shown(p.append_s, "s")} if advice.question.access == "append" else {}),
            "why not": row.ruled_out or "; ".join(row.warnings),
        })  # fmt: skip
    order = {label: i for i, label in enumerate(ranked)}
    return sorted(rows, key=lambda r: (order.get(r["format"], len(order)), r["format"]))


def reasoning_table(advice: Advice) -> str:
    """:func:`reasoning_rows` as aligned text, for the command line."""
    rows = reasoning_rows(advice)
    if not rows:
        return "(no formats weighed)"
    names = list(rows[0])
    widths = {name: max(len(name), *(len(row.get(name, "")) for row in rows)) for name in names if name != "why not"}
    lines = ["  ".join(name.ljust(widths[name]) if name in widths else name for name in names)]
    for row in rows:
        lines.append("  ".join(row.get(n, "").ljust(widths[n]) if n in widths else row.get(n, "") for n in names))
    return "\n".join(lines)
