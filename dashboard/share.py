"""The "Share" picture: one PNG of a whole result, to paste in a chat or an issue.

The picture holds what a reader needs to judge the numbers without the dashboard: a
title, the run's settings and data source, the machine it ran on, a table of the main
figures per format at the largest count, the charts (the training loader's too; rendered by
vl-convert, as the chart exports are) and the images read back from each store. It is
composed with Pillow, top to bottom, on a white page.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from storage.bench import Measurement, PreviewReady, RunRecord
from storage.bench.environment import describe

from . import charts, previews, summary
from .state import OPERATION_LABELS, format_counts
from .text import printable

MARGIN = 40
WIDTH_MIN = 1200
CHART_SCALE = 1.5
PREVIEW_SIDE = 64
CAPTION_SLOT = 130  # pixels per image read back: its caption is wrapped (then cut) to fit, never drawn over the next
SHARE_CHARTS = ("time", "rate", "disk", "loader")  # drawn in this order, the first above the images read back
TEXT = (38, 39, 48)
MUTED = (100, 104, 115)
_FONT_FILES = {
    False: ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf"),
    True: ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "DejaVuSans-Bold.ttf"),
}


def font(size: int, bold: bool = False) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for candidate in _FONT_FILES[bold]:
        if Path(candidate).is_file() or "/" not in candidate:
            try:
                return ImageFont.truetype(candidate, size)
            except OSError:
                continue
    return ImageFont.load_default(size=size)


def wrap_text(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """``text`` broken into lines of at most ``width`` pixels (the Share pictures' paragraphs)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}".strip()
            if draw.textlength(trial, font=font) <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


def settings_lines(records: Sequence[RunRecord]) -> list[str]:
    """What each run measured, in words (formats, counts, operations, cache, repeats, source)."""
    lines = []
    for record in records:
        parameters = record.parameters or {}
        operations = ", ".join(OPERATION_LABELS.get(op, op) for op in parameters.get("operations", []))
        source = (record.source or {}).get("description") or (record.source or {}).get("spec", "")
        lines.append(
            printable(
                f"Run {_titled(record)} ({record.status}, started {record.started_at.replace('T', ' ').rstrip('Z')} UTC): "
                f"formats {', '.join(charts.format_label(name) for name in parameters.get('backends', []))}; "
                f"counts {format_counts(parameters.get('counts', []))}; operations {operations}; "
                f"page cache {', '.join(parameters.get('caches', []))}; {parameters.get('repeats', '?')} repeat(s); "
                f"{kept_words(parameters)}{where_words(parameters)}; data: {source}"
            )
        )
    return lines


def kept_words(parameters: dict) -> str:
    """What the run's stores kept and how its images were resized, in words."""
    keeps = "stores keep " + charts.keeps_label(parameters.get("encoding") or "raw")
    if parameters.get("shorter_side"):
        return f"{keeps}; resized to a shorter side of {parameters['shorter_side']} px"
    if parameters.get("max_side"):
        return f"{keeps}; resized to a longest side of {parameters['max_side']} px"
    return keeps


def where_words(parameters: dict) -> str:
    """Where an object-storage run kept its stores and the network it projected to ("" for a local folder)."""
    if not parameters.get("location"):
        return ""
    return (
        f"; stores at {parameters['location']}, projected to {parameters.get('network_rtt_ms', 20):g} ms RTT, "
        f"{parameters.get('network_mbit', 1000):g} Mbit/s"
    )


def machine_lines(records: Sequence[RunRecord]) -> list[str]:
    """One line per distinct machine the runs ran on."""
    seen = []
    for record in records:
        environment = record.environment or {}
        line = describe(environment) if environment else "machine not recorded yet (the run is starting)"
        if line not in seen:
            seen.append(line)
    return seen


def _preview_block(items: Sequence[PreviewReady], width: int) -> Image.Image | None:
    rows = previews.preview_rows(items, size=PREVIEW_SIDE)
    if not rows:
        return None
    label_font, caption_font = font(18, bold=True), font(14)
    label_width = 260
    row_height = PREVIEW_SIDE + 48  # two lines of caption
    block = Image.new("RGB", (width, 40 + row_height * len(rows)), "white")
    draw = ImageDraw.Draw(block)
    draw.text((0, 0), f"Images read back from every store of {rows[0].count:,} images", fill=TEXT, font=font(22, True))
    for index, row in enumerate(rows):
        top = 40 + index * row_height
        mark = "verified" if row.verified else "MISMATCH"
        psnr = f", PSNR {row.psnr:.1f} dB" if row.psnr is not None else ""
        draw.text((0, top + 8), row.label, fill=TEXT, font=label_font)
        draw.text((0, top + 32), mark + psnr, fill=MUTED if row.verified else (200, 30, 30), font=caption_font)
        left = label_width
        for picture, caption in zip(row.images, row.captions):
            block.paste(picture.convert("RGB"), (left, top))
            for number, line in enumerate(caption_lines(caption, caption_font, draw)):
                draw.text((left, top + picture.height + 4 + 17 * number), line, fill=MUTED, font=caption_font)
            left += max(picture.width, CAPTION_SLOT) + 16
    return block


def caption_lines(caption: str, caption_font, draw: ImageDraw.ImageDraw, width: int = CAPTION_SLOT) -> list[str]:
    """An image's caption (``#2830 automobile``, its check mark left out) in at most two lines of ``width`` pixels."""
    text = caption.split(" ✓")[0].split(" ✗")[0]
    lines = wrap_text(text, caption_font, width, draw)[:2]
    for index, line in enumerate(lines):
        while draw.textlength(line, font=caption_font) > width and len(line) > 1:
            line = line[:-2] + "…"
        lines[index] = line
    return lines


def drawn_specs(chart_specs: Mapping[str, dict]) -> list[tuple[str, dict]]:
    """The charts the picture draws, by name, in order: every one of :data:`SHARE_CHARTS` there is."""
    return [(name, chart_specs[name]) for name in SHARE_CHARTS if name in chart_specs]


def _table_block(measurements: Sequence[Measurement], width: int) -> Image.Image | None:
    """The main figures per format at the run's largest count, as the Run page's summary has them."""
    count, rows = summary.figures_table(measurements)
    if not rows:
        return None
    head_font, cell_font, row_height = font(16, bold=True), font(16), 28
    block = Image.new("RGB", (width, 40 + row_height * (len(rows) + 1)), "white")
    draw = ImageDraw.Draw(block)
    draw.text((0, 0), f"The figures at {count:,} image{'s' if count != 1 else ''}", fill=TEXT, font=font(22, True))
    lefts = [0, 300, 480, 680, 900]
    for column, (left, name) in enumerate(zip(lefts, summary.FIGURE_COLUMNS)):
        draw.text((left, 40), name, fill=MUTED if column else TEXT, font=head_font)
    for index, row in enumerate(rows, start=1):
        top = 40 + row_height * index
        for left, cell in zip(lefts, row):
            draw.text((left, top), printable(cell), fill=TEXT, font=cell_font)
    return block


def share_png(
    records: Sequence[RunRecord],
    chart_specs: Mapping[str, dict],
    preview_items: Sequence[PreviewReady] = (),
    title: str | None = None,
    notes: Sequence[str] = (),
    measurements: Sequence[Measurement] = (),
) -> bytes:
    """The whole result as one PNG: title, settings, machine, charts and read-back images.

    Args:
        records: the runs shown (one, or several overlaid).
        chart_specs: Vega-Lite specs by name (``time``, ``rate``, ``disk``, ``loader``), drawn in that order.
        preview_items: images read back from the stores (of one run).
        title: the heading (default: names the run or the number of runs).
        notes: lines said under the settings (for photos: each store against the source files).
        measurements: the run's, for a table of the main figures per format at its largest count.
    """
    import vl_convert as vlc

    pictures = []
    for _, spec in drawn_specs(chart_specs):
        png = vlc.vegalite_to_png(spec, scale=CHART_SCALE)
        pictures.append(Image.open(io.BytesIO(png)).convert("RGB"))
    width = max([WIDTH_MIN, *(picture.width + 2 * MARGIN for picture in pictures)])
    inner = width - 2 * MARGIN
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    heading = title or (
        f"Image Storage Lab · run {_titled(records[0])}"
        if len(records) == 1
        else f"Image Storage Lab · {len(records)} runs"
    )
    blocks: list[tuple[str, object]] = [("title", heading)]
    body, small = font(18), font(16)
    blocks.append(("subtitle", "How fast each format writes and reads the same images, and how much disk it uses."))
    for line in settings_lines(records):
        blocks.append(("text", line))
    for line in notes:
        blocks.append(("text", printable(line)))
    for line in machine_lines(records):
        blocks.append(("muted", f"Machine: {line}"))
    preview_block = _preview_block(preview_items, inner)
    table_block = _table_block(measurements, inner)

    # Measure, then draw.
    fonts = {"title": font(34, True), "subtitle": font(20), "text": body, "muted": small}
    text_height = 0
    wrapped = []
    for kind, value in blocks:
        lines = wrap_text(str(value), fonts[kind], inner, scratch)
        line_height = int(fonts[kind].size * 1.45) if hasattr(fonts[kind], "size") else 22
        wrapped.append((kind, lines, line_height))
        text_height += line_height * len(lines) + 8
    height = MARGIN + text_height + 16
    height += sum(picture.height + 24 for picture in pictures)
    if table_block is not None:
        height += table_block.height + 24
    if preview_block is not None:
        height += preview_block.height + 24
    height += 40 + MARGIN
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    top = MARGIN
    for kind, lines, line_height in wrapped:
        for line in lines:
            draw.text((MARGIN, top), line, fill=MUTED if kind in ("muted", "subtitle") else TEXT, font=fonts[kind])
            top += line_height
        top += 8
    draw.line((MARGIN, top + 4, width - MARGIN, top + 4), fill=(220, 222, 228), width=2)
    top += 16
    if table_block is not None:
        page.paste(table_block, (MARGIN, top))
        top += table_block.height + 24
    for picture in pictures[:1]:
        page.paste(picture, (MARGIN, top))
        top += picture.height + 24
    if preview_block is not None:
        page.paste(preview_block, (MARGIN, top))
        top += preview_block.height + 24
    for picture in pictures[1:]:
        page.paste(picture, (MARGIN, top))
        top += picture.height + 24
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    draw.text(
        (MARGIN, top + 8),
        f"Image Storage Lab · every number measured on the machine above · made {stamp}",
        fill=MUTED,
        font=small,
    )
    output = io.BytesIO()
    page.save(output, format="PNG", optimize=True)
    return output.getvalue()


def _titled(record: RunRecord) -> str:
    """The run's id, and its name in quotes when it has one."""
    return f"{record.id} “{record.name}”" if getattr(record, "name", None) else record.id
