"""The Advise page's helpers: the question <-> the page's address, the reasoning table, JSON and the Share picture.

An advice is shared by its address: the question's fields and the runs it was drawn from
(``?count=1281167&access=shuffled&workers=8&lossless=1&disk_budget=200GB&runs=<id>,<id>``).
Opening it weighs those stored runs again and measures nothing, so the link shows the same
answer on any machine holding the same results database. Plain Python, tested without
Streamlit.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping

import pandas as pd
from PIL import Image, ImageDraw

from storage.advice import ACCESS_PATTERNS, Advice, InvalidQuestionError, Question, parse_seconds, parse_size
from storage.advice.question import format_bytes
from storage.advice.report import reasoning_rows

from .share import MUTED, TEXT, font, wrap_text
from .text import printable

SOURCES = {"sample": "CIFAR-10: bundled sample", "data/imagenet-sample": "Photos: bundled ImageNet sample"}
_FLAGS = ("lossless", "readable_by_others")
MARGIN, WIDTH_MIN = 40, 1200


def _first(params: Mapping[str, list[str] | str], key: str) -> str | None:
    value = params.get(key)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def question_from_params(params: Mapping[str, list[str] | str]) -> tuple[Question, list[str] | None, list[str]]:
    """The question an address asks, the stored runs it names (None: none named), and what could not be used."""
    notes: list[str] = []
    values: dict[str, object] = {}
    for key, convert in (("count", int), ("workers", int)):
        text = _first(params, key)
        if text is not None:
            try:
                values[key] = max(convert(text), 0 if key == "workers" else 1)
            except ValueError:
                notes.append(f"{key} {text!r} is not a whole number")
    access = _first(params, "access")
    if access is not None:
        if access in ACCESS_PATTERNS:
            values["access"] = access
        else:
            notes.append(f"access {access!r} is not one of {', '.join(ACCESS_PATTERNS)}")
    for name in _FLAGS:
        if _first(params, name) is not None:
            values[name] = _first(params, name) in ("1", "true", "yes")
    for key, parse, field in (
        ("disk_budget", parse_size, "disk_budget_bytes"),
        ("time_budget", parse_seconds, "time_budget_s"),
    ):
        text = _first(params, key)
        if text:
            try:
                values[field] = parse(text)
            except InvalidQuestionError as error:
                notes.append(str(error))
    if _first(params, "source"):
        values["source"] = _first(params, "source")
    names = _first(params, "backends")
    if names:
        values["backends"] = tuple(name for name in names.split(",") if name)
    runs = _first(params, "runs")
    run_ids = [run for run in runs.split(",") if run] if runs else None
    return Question(**values), run_ids, notes


def params_of(question: Question, run_ids: list[str]) -> dict[str, str]:
    """The address of an advice: its question and the runs it stands on."""
    params = {
        "source": question.source,
        "count": str(question.count),
        "access": question.access,
        "workers": str(question.workers),
        "time_budget": f"{question.time_budget_s:g}s",
    }
    for name in _FLAGS:
        if getattr(question, name):
            params[name] = "1"
    if question.disk_budget_bytes is not None:
        params["disk_budget"] = str(question.disk_budget_bytes)
    if question.backends:
        params["backends"] = ",".join(question.backends)
    params["runs"] = ",".join(run_ids)
    return params


def reasoning_frame(advice: Advice) -> pd.DataFrame:
    """The reasoning table, every cell text (names from files escaped)."""
    return pd.DataFrame([{key: printable(value) for key, value in row.items()} for row in reasoning_rows(advice)])


def advice_json(advice: Advice) -> str:
    return json.dumps(advice.to_dict(), indent=2)


def question_words(question: Question) -> str:
    """The question in one line, as the page and the picture say it."""
    parts = [f"{question.count:,} images of {question.source}", question.access]
    if question.access == "shuffled":
        parts[-1] += f" at {question.workers} workers"
    if question.lossless:
        parts.append("lossless")
    if question.disk_budget_bytes is not None:
        parts.append(f"within {format_bytes(question.disk_budget_bytes)}")
    if question.readable_by_others:
        parts.append("readable by other tools")
    return ", ".join(parts)


def advice_png(advice: Advice) -> bytes:
    """The Share picture: the question, the recommendation and the reasoning table, on a white page."""
    rows = reasoning_rows(advice)
    columns = list(rows[0]) if rows else []
    blocks = [("title", "Image Storage Lab · which format?"), ("subtitle", question_words(advice.question)),
              ("text", printable(advice.text))]  # fmt: skip
    blocks += [("muted", printable(note)) for note in advice.notes]
    if advice.machine.get("description"):
        blocks.append(("muted", f"Machine: {printable(advice.machine['description'])}"))
    fonts = {"title": font(32, True), "subtitle": font(20), "text": font(18), "muted": font(15), "table": font(14)}
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [max(scratch.textlength(str(c), font=fonts["table"]), *(scratch.textlength(r[c], font=fonts["table"])
              for r in rows)) + 16 for c in columns if c != "why not"]  # fmt: skip
    width = max(WIDTH_MIN, int(sum(widths)) + 420 + 2 * MARGIN)
    inner = width - 2 * MARGIN
    wrapped = [(kind, wrap_text(str(text), fonts[kind], inner, scratch)) for kind, text in blocks]
    line = 24
    height = MARGIN * 2 + sum(len(lines) * int(fonts[kind].size * 1.45) + 8 for kind, lines in wrapped)
    height += (len(rows) + 1) * line + 60
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    top = MARGIN
    for kind, lines in wrapped:
        for text in lines:
            draw.text((MARGIN, top), text, fill=MUTED if kind in ("muted", "subtitle") else TEXT, font=fonts[kind])
            top += int(fonts[kind].size * 1.45)
        top += 8
    top += 8
    for index, row in enumerate([dict(zip(columns, columns, strict=True)), *rows]):
        left = MARGIN
        for column, column_width in zip(columns, [*widths, inner - sum(widths)], strict=True):
            text = printable(row[column])
            draw.text((left, top), text, fill=TEXT if index else MUTED, font=fonts["table"])
            left += column_width
        top += line
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    draw.text((MARGIN, top + 12), f"every number measured on the machine above · made {stamp}", fill=MUTED,
              font=fonts["muted"])  # fmt: skip
    output = io.BytesIO()
    page.save(output, format="PNG", optimize=True)
    return output.getvalue()
