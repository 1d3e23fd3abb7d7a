"""Measurements as pandas frames and Altair charts, and the charts as PNG and SVG files.

Every number comes from the engine's :class:`~storage.bench.Measurement`; this module only
reshapes and draws them:

* :func:`time_chart`: elapsed time against the number of images, log-log, one line per
  format, a panel per operation (writes first, then reads), the min–max spread as a rule;
* :func:`rate_chart`: images per second against the number of images, the same way; the
  count axis of both has a labelled tick at every count measured, and a random read's note
  says it is 1,000 reads whatever the store's size;
* :func:`disk_chart`: apparent and allocated bytes per image of each format, each run at its
  largest count (a format a stopped run measured only at a smaller count at that count);
* :func:`loader_chart`: the training loader's images per second against the DataLoader's
  worker count, one line per format (a format read in its library's own order dotted, in
  its colour), the in-memory ceiling as a dashed grey reference line and, for photos, the
  decode ceiling (the encoded files themselves) as a dashed red one;
* :func:`table_frame`: the same numbers as a readable table; for photos, with what the
  stores kept, the resize, and each store's bytes as a ratio to the source files'
  (:func:`source_ratio_lines` says the same in a sentence per run); :func:`disk_table_frame`:
  its disk columns, one row per store.

Colours follow the registry's order of formats, so a format keeps its colour in every
chart; the colour scale's domain lists the formats by label, so a chart's Vega-Lite spec
names the formats it shows. Several runs are overlaid with one dash pattern per run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import altair as alt
import pandas as pd

from storage import registry
from storage.bench import CACHES, OPERATIONS, Measurement
from storage.bench.experiment import (
    CEILING_BACKEND,
    CEILINGS,
    DECODE_CEILING_BACKEND,
    LOADER,
    RANDOM_READS,
    WRITE_OPERATIONS,
    images_per_sample,
)
from storage.bench.machine_load import was_disturbed
from storage.bench.report import format_megabytes, format_rate, format_seconds

from .state import OPERATION_LABELS

PANEL_WIDTH = 250
PANEL_HEIGHT = 220
PANEL_COLUMNS = 3
COUNT_FORMAT = ","  # every image count and images-per-second figure, axes and tooltips: 1,000,000 and 0.5
LABEL_CHAR_WIDTH = 6  # pixels per character of an axis label (Vega's 10-pixel font: digits and commas)
LABEL_GAP = 4  # pixels kept free between two neighbouring labels
UPRIGHT_LABEL_WIDTH = 12  # pixels a label takes across the axis once turned upright
MAX_PANEL_WIDTH = 4 * PANEL_WIDTH
SAMPLED_READS = ("read_random", "remote_random")  # read min(N, RANDOM_READS) ids of a store of N

# Measurement figures that may be missing (None): kept as floats so charts see numbers.
NUMERIC_COLUMNS = [
    "seconds",
    "seconds_min",
    "seconds_max",
    "seconds_iqr",
    "images_per_second",
    "mb_per_second",
    "apparent_bytes",
    "allocated_bytes",
    "files",
    "bytes_per_image",
    "workers",
    "batch_size",
    "first_batch_seconds",
    "batch_p50_seconds",
    "batch_p99_seconds",
    "ceiling_images_per_second",
    "fraction_of_ceiling",
    "source_bytes",
    "source_ratio",
    "spread",
    "other_cores",
]
CEILING_LABEL = "In memory (no storage)"
DECODE_CEILING_LABEL = "Encoded files (decode ceiling)"
OWN_ORDER_SUFFIX = " (own order)"
COLUMNS = [
    "run",
    "run_label",
    "backend",
    "format",
    "order",
    "count",
    "operation",
    "operation_label",
    "cache",
    "panel",
    "panel_order",
    "kind",
    "repeats",
    "images",
    "timed",
    *NUMERIC_COLUMNS,
    "verified",
    "psnr",
    "error",
    "encoding",
    "resize",
    "disturbed",
]
# What a store kept, in the table's words (the Run page's choices, shorter).
KEEPS_LABELS = {"raw": "pixels", "source": "source bytes", "png": "PNG", "webp": "WebP (lossless)"}


def format_label(backend: str) -> str:
    """A backend's label (``"PNG files + CSV"``); its name if it is not registered here."""
    if backend == CEILING_BACKEND:
        return CEILING_LABEL
    if backend == DECODE_CEILING_BACKEND:
        return DECODE_CEILING_LABEL
    try:
        return registry.backend_info(backend).label
    except Exception:
        return backend


def format_order(backends: Iterable[str]) -> list[str]:
    """Backends in registry order (unknown ones last, as first seen)."""
    known = registry.backends()
    unique = list(dict.fromkeys(backends))
    return sorted(unique, key=lambda name: (known.index(name) if name in known else len(known), unique.index(name)))


def _panel(operation: str, cache: str, with_cache: bool) -> str:
    label = OPERATION_LABELS.get(operation, operation)
    if operation in WRITE_OPERATIONS or not with_cache:
        return label
    return f"{label} ({cache} cache)"


def _panel_order(operation: str, cache: str) -> int:
    op_index = OPERATIONS.index(operation) if operation in OPERATIONS else len(OPERATIONS)
    cache_index = CACHES.index(cache) if cache in CACHES else len(CACHES)
    write_first = 0 if operation in WRITE_OPERATIONS else 1
    return write_first * 1000 + cache_index * 100 + op_index


def measurements_frame(measurements: Sequence[Measurement], run_labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per measurement, with the columns the charts and the table use.

    Args:
        measurements: from a live run or from the results database.
        run_labels: a short label per run id for legends (default: the run id).
    """
    if not measurements:
        return pd.DataFrame(columns=COLUMNS)
    with_cache = any(m.cache != "warm" for m in measurements if m.operation not in WRITE_OPERATIONS)
    rows = []
    for m in measurements:
        rows.append(
            {
                "run": m.run_id,
                "run_label": (run_labels or {}).get(m.run_id, m.run_id),
                "backend": m.backend,
                "format": format_label(m.backend) + (OWN_ORDER_SUFFIX if m.order == "own" else ""),
                "order": m.order or "",
                "count": int(m.count),
                "operation": m.operation,
                "operation_label": OPERATION_LABELS.get(m.operation, m.operation),
                "cache": m.cache,
                "panel": _panel(m.operation, m.cache, with_cache),
                "panel_order": _panel_order(m.operation, m.cache),
                "kind": "write" if m.operation in WRITE_OPERATIONS else "read",
                "repeats": m.repeats,
                "images": m.images,
                "timed": timed_words(m.operation, int(m.count)),
                "seconds": m.seconds_median,
                "seconds_min": m.seconds_min,
                "seconds_max": m.seconds_max,
                "seconds_iqr": m.seconds_iqr,
                "images_per_second": m.images_per_second,
                "mb_per_second": m.mb_per_second,
                "apparent_bytes": m.apparent_bytes,
                "allocated_bytes": m.allocated_bytes,
                "files": m.files,
                "bytes_per_image": m.bytes_per_image,
                "workers": m.workers,
                "batch_size": m.batch_size,
                "first_batch_seconds": m.first_batch_seconds,
                "batch_p50_seconds": m.batch_p50_seconds,
                "batch_p99_seconds": m.batch_p99_seconds,
                "ceiling_images_per_second": m.ceiling_images_per_second,
                "fraction_of_ceiling": m.fraction_of_ceiling,
                "source_bytes": m.source_bytes,
                "source_ratio": _ratio(m.allocated_bytes, m.source_bytes),
                "verified": bool(m.verified),
                "psnr": m.psnr,
                "error": m.error,
                "encoding": m.encoding or "raw",
                "resize": m.resize or "",
                "spread": spread(m),
                "other_cores": (m.machine_load or {}).get("other_cores"),
                "disturbed": was_disturbed(m.machine_load),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in (*NUMERIC_COLUMNS, "psnr"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def timed_words(operation: str, count: int) -> str:
    """What one timed sample handled, in words: the random reads are 1,000 whatever the store's size."""
    handled = images_per_sample(operation, count)
    if handled == count:
        return f"{count:,} image{'' if count == 1 else 's'}"
    if operation in SAMPLED_READS:
        return f"{handled:,} random reads from a store of {count:,} images"
    return f"{handled:,} image{'' if handled == 1 else 's'} per timed read, from a store of {count:,} images"


def spread(measurement: Measurement) -> float | None:
    """(slowest - fastest) / median of the recorded repeats; None with one repeat or no timing."""
    low, high, median = measurement.seconds_min, measurement.seconds_max, measurement.seconds_median
    if measurement.repeats < 2 or low is None or high is None or not median:
        return None
    return (high - low) / median


def _ratio(stored: float | None, source: float | None) -> float | None:
    """A store's bytes over its source files' bytes (None when either is unknown)."""
    if stored is None or not source:
        return None
    return float(stored) / float(source)


def keeps_label(encoding: str) -> str:
    """``"source bytes"``, ``"JPEG 90"``, ``"pixels"``: what a store kept, in a few words."""
    name, _, quality = str(encoding).partition(":")
    if not quality:
        return KEEPS_LABELS.get(name, name)
    return f"{'JPEG' if name == 'jpeg' else 'WebP'} {quality}"


def source_ratio_lines(frame: pd.DataFrame) -> list[str]:
    """Per run of photos: each format's bytes per image as a ratio to the source files, at its largest count.

    ``["Stores at 100 images against the 11.6 MB of source files: LMDB 1.01× (source bytes), ..."]``;
    nothing for runs without source files (CIFAR-10 arrays).
    """
    rows = frame[frame["source_ratio"].notna() & ~frame["operation"].isin(["write_one", LOADER])]
    lines = []
    for run_label, run_rows in rows.groupby("run_label", sort=False):
        count = int(run_rows["count"].max())
        largest = run_rows[run_rows["count"] == count].drop_duplicates("backend")
        order = format_order(largest["backend"])
        largest = largest.set_index("backend").loc[order]
        parts = [
            f"{row['format']} {row['source_ratio']:.2f}× ({keeps_label(row['encoding'])}"
            + (f", {row['resize']}" if row["resize"] else "")
            + ")"
            for _, row in largest.iterrows()
        ]
        files = float(largest["source_bytes"].iloc[0])
        prefix = f"Run {run_label}: s" if rows["run_label"].nunique() > 1 else "S"
        lines.append(
            f"{prefix}tores of {count:,} photos against their {files / 1e6:,.1f} MB of source files: "
            + ", ".join(parts)
        )
    return lines


# One colour per registered backend, by registration order, so a format keeps its colour
# whichever formats a chart shows (Vega's "tableau10").
PALETTE = (
    "#4c78a8",
    "#f58518",
    "#e45756",
    "#72b7b2",
    "#54a24b",
    "#eeca3b",
    "#b279a2",
    "#ff9da6",
    "#9d755d",
    "#bab0ac",
)


def _formats_domain(frame: pd.DataFrame) -> list[str]:
    order = format_order(frame["backend"])
    labels = dict(zip(frame["backend"], frame["format"]))
    return list(dict.fromkeys(labels[name] for name in order))


def format_colors(backends: Iterable[str]) -> dict[str, str]:
    """A fixed colour per backend: its position in the registry picks it from :data:`PALETTE`."""
    known = registry.backends()
    colors = {}
    for name in format_order(backends):
        index = known.index(name) if name in known else len(known) + len(colors)
        colors[name] = PALETTE[index % len(PALETTE)]
    return colors


def _color(frame: pd.DataFrame, legend: bool = True) -> alt.Color:
    colors = format_colors(frame["backend"])
    labels = dict(zip(frame["backend"], frame["format"]))
    domain = [labels[name] for name in colors]
    return alt.Color(
        "format:N",
        title="Format",
        scale=alt.Scale(domain=domain, range=list(colors.values())),
        legend=alt.Legend(orient="top") if legend else None,
    )


def _loader_color(frame: pd.DataFrame) -> alt.Color:
    """Each format's colour, shared by its line in its library's own order."""
    colors = format_colors(frame["backend"])
    pairs = dict.fromkeys(zip(frame["backend"], frame["format"]))
    ordered = sorted(pairs, key=lambda pair: (list(colors).index(pair[0]), pair[1]))
    return alt.Color(
        "format:N",
        title="Format",
        scale=alt.Scale(domain=[label for _, label in ordered], range=[colors[name] for name, _ in ordered]),
        legend=alt.Legend(orient="top"),
    )


def _panels(frame: pd.DataFrame) -> list[str]:
    ordered = frame.sort_values("panel_order")["panel"]
    return list(dict.fromkeys(ordered))


def _timed_rows(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows with a positive ``column``; the loader (per worker count) has a chart of its own."""
    rows = frame[frame[column].notna() & (frame[column] > 0) & (frame["operation"] != LOADER)]
    return rows.sort_values(["run", "backend", "panel_order", "count"])


def _tooltips(multi_run: bool) -> list[alt.Tooltip]:
    tips = [
        alt.Tooltip("format:N", title="format"),
        alt.Tooltip("operation_label:N", title="operation"),
        alt.Tooltip("cache:N", title="cache"),
        alt.Tooltip("count:Q", title="images in the store", format=COUNT_FORMAT),
        alt.Tooltip("timed:N", title="timed"),
        alt.Tooltip("seconds:Q", title="median (s)", format=".6~g"),
        alt.Tooltip("seconds_min:Q", title="min (s)", format=".6~g"),
        alt.Tooltip("seconds_max:Q", title="max (s)", format=".6~g"),
        alt.Tooltip("seconds_iqr:Q", title="IQR (s)", format=".3~g"),
        alt.Tooltip("repeats:Q", title="repeats"),
        alt.Tooltip("images_per_second:Q", title="images/s", format=",.0f"),
        alt.Tooltip("mb_per_second:Q", title="MB/s", format=",.1f"),
    ]
    if multi_run:
        tips.insert(0, alt.Tooltip("run_label:N", title="run"))
    return tips


def count_ticks(counts: Iterable[int]) -> list[int]:
    """The x axis's ticks: every count measured, so that each point stands on a labelled tick.

    Vega's own ticks on a log axis land on 1, 3, 20, 100, 300, and a count between two of
    them (10,000 beside 20,000) would read as its neighbour.
    """
    return sorted({int(count) for count in counts})


def _tick_gaps(ticks: Sequence[int], domain: Sequence[int], width: float) -> list[float]:
    """The pixels between neighbouring ticks on a log axis ``width`` pixels wide."""
    low, high = (math.log10(value) for value in domain)
    if high <= low:
        return []
    place = [width * (math.log10(tick) - low) / (high - low) for tick in ticks]
    return [right - left for left, right in zip(place, place[1:])]


def _flat_labels_fit(ticks: Sequence[int], gaps: Sequence[float]) -> bool:
    labels = [len(f"{tick:,}") * LABEL_CHAR_WIDTH for tick in ticks]
    return all(gap >= (left + right) / 2 + LABEL_GAP for gap, left, right in zip(gaps, labels, labels[1:]))


def count_axis_layout(counts: Iterable[int], width: int = PANEL_WIDTH) -> tuple[int, int]:
    """The count axis's label angle and the panel's width, so that no two tick labels overlap.

    Flat labels when they fit; upright ones when neighbours are too close (10,000 beside
    20,000 on a 250-pixel panel); and a wider panel when even upright ones would touch.
    """
    ticks = count_ticks(counts)
    domain = count_domain(ticks)
    gaps = _tick_gaps(ticks, domain, width)
    if not gaps or _flat_labels_fit(ticks, gaps):
        return 0, width
    needed = UPRIGHT_LABEL_WIDTH + LABEL_GAP
    return -90, min(MAX_PANEL_WIDTH, max(width, math.ceil(width * needed / min(gaps))))


def count_domain(counts: Iterable[int]) -> list[int]:
    """The x axis's range: from 1 (or the smallest count) to the largest count."""
    values = [int(count) for count in counts]
    return [min(1, min(values)), max(values)] if values else [1, 10]


def _line_chart(frame: pd.DataFrame, column: str, title: str, y_title: str) -> alt.FacetChart | None:
    rows = _timed_rows(frame, column)
    if rows.empty:
        return None
    multi_run = rows["run"].nunique() > 1
    panels = _panels(rows)
    angle, width = count_axis_layout(rows["count"])
    x = alt.X(
        "count:Q",
        title="Number of images in the store",
        scale=alt.Scale(type="log", domain=count_domain(rows["count"]), nice=False),
        axis=alt.Axis(values=count_ticks(rows["count"]), format=COUNT_FORMAT, labelOverlap=False, labelAngle=angle),
    )
    y_format = COUNT_FORMAT if column == "images_per_second" else "~g"
    y = alt.Y(f"{column}:Q", title=y_title, scale=alt.Scale(type="log"), axis=alt.Axis(format=y_format))
    encodings = {"x": x, "y": y, "color": _color(rows), "tooltip": _tooltips(multi_run)}
    detail = ["backend:N"]
    if multi_run:
        run_legend = alt.Legend(orient="bottom", direction="vertical", labelLimit=400)
        encodings["strokeDash"] = alt.StrokeDash("run_label:N", title="Run", legend=run_legend)
        # The points' shapes tell the runs apart too; one legend ("Run", by the dashes) says which is which.
        encodings["shape"] = alt.Shape("run_label:N", title="Run", legend=None)
        detail.append("run_label:N")
    base = alt.Chart().encode(detail=detail)
    line = base.mark_line(point=True, strokeWidth=2).encode(**encodings)
    layers = [line]
    if column == "seconds":  # the spread of the timed samples (min to max), in grey beneath the lines
        spread = base.mark_rule(strokeWidth=2, color="#a0a0a0").encode(
            x=x,
            y=alt.Y("seconds_min:Q", scale=alt.Scale(type="log")),
            y2="seconds_max:Q",
        )
        layers.insert(0, spread)
    layered = alt.layer(*layers).properties(width=width, height=PANEL_HEIGHT)
    return (
        layered.facet(
            facet=alt.Facet(
                "panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=13, labelFontWeight="bold")
            ),
            columns=min(PANEL_COLUMNS, len(panels)),
            data=rows,
        )
        .properties(title=line_title(title, rows))
        .resolve_scale(x="shared", y="shared")
    )


def line_title(title: str, rows: pd.DataFrame) -> alt.TitleParams:
    """The chart's title, and what the count means for random reads, when the chart has them."""
    if not rows["operation"].isin(SAMPLED_READS).any():
        return alt.TitleParams(title)
    note = (
        f"{OPERATION_LABELS['read_random']}: {RANDOM_READS:,} random reads from a store of N images "
        f"(all N when N is under {RANDOM_READS:,}), plotted at N"
    )
    return alt.TitleParams(title, subtitle=note)


def time_chart(frame: pd.DataFrame) -> alt.FacetChart | None:
    """Elapsed time (median, with min–max) against the number of images; None if nothing is timed yet."""
    return _line_chart(frame, "seconds", "Elapsed time against number of images", "Elapsed time (s, median)")


def rate_chart(frame: pd.DataFrame) -> alt.FacetChart | None:
    """Images per second against the number of images; None if nothing is timed yet."""
    return _line_chart(frame, "images_per_second", "Images per second", "Images per second")


DISK_COLUMNS = [
    "run",
    "run_label",
    "backend",
    "format",
    "bar",
    "panel",
    "count",
    "run_count",
    "measure",
    "bytes",
    "per_image",
    "megabytes",
    "files",
]


def _disk_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, format): the largest count that format's disk use was measured at in that run.

    Each run keeps its own largest count, so a run of 10,000 images compared with one of
    20,000 keeps its formats, and a format that a stopped run measured only at a smaller
    count keeps its figures, at the count it reached (``run_count`` is the run's largest).
    """
    rows = frame[frame["allocated_bytes"].notna() & ~frame["operation"].isin(["write_one", LOADER])]
    rows = rows.sort_values("count", kind="stable").drop_duplicates(["run", "backend"], keep="last")
    rows = rows.assign(run_count=rows.groupby("run")["count"].transform("max"))
    order = format_order(rows["backend"])
    return rows.assign(_order=[order.index(name) for name in rows["backend"]]).sort_values(["run", "_order"])


def _disk_bar_label(format_name: str, count: int, run_count: int) -> str:
    """The bar's name: the format, and the count it reached when that is short of its run's largest."""
    return format_name if count == run_count else f"{format_name}\n(only {count:,} images)"


def disk_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Apparent and allocated bytes per (run, format), each at its own largest count (long form).

    ``per_image`` (the bytes over the count) is what the chart draws: it compares stores of
    different counts; ``bar`` names the format and, when it stopped short of its run's
    largest count, the count it reached; ``panel`` names the run and its largest count.
    """
    rows = _disk_rows(frame)
    if rows.empty:
        return pd.DataFrame(columns=DISK_COLUMNS)
    rows = rows.assign(
        bar=[_disk_bar_label(*values) for values in zip(rows["format"], rows["count"], rows["run_count"])],
        panel=[f"{label} · {count:,} images" for label, count in zip(rows["run_label"], rows["run_count"])],
    )
    long = rows.melt(
        id_vars=["run", "run_label", "backend", "format", "bar", "panel", "count", "run_count", "files"],
        value_vars=["apparent_bytes", "allocated_bytes"],
        var_name="measure",
        value_name="bytes",
    )
    long["measure"] = long["measure"].map({"apparent_bytes": "apparent", "allocated_bytes": "allocated"})
    long["per_image"] = long["bytes"] / long["count"]
    long["megabytes"] = long["bytes"] / 1e6
    return long[DISK_COLUMNS]


def disk_title(data: pd.DataFrame) -> alt.TitleParams:
    """What the disk chart shows: bytes per image, at which count, and what a bar marked "only" means."""
    if data["run"].nunique() == 1:
        title = f"Disk use per image, stores of {int(data['run_count'].max()):,} images"
    else:
        title = "Disk use per image, each run at its largest count"
    subtitle = ["apparent = file sizes, allocated = disk blocks, each divided by the store's number of images"]
    if (data["count"] < data["run_count"]).any():
        subtitle.append(
            "“only N images”: the format stopped short of its run's largest count, drawn at the count it reached"
        )
    return alt.TitleParams(title, subtitle=subtitle)


def disk_chart(frame: pd.DataFrame) -> alt.Chart | alt.FacetChart | None:
    """Disk use per image (apparent and allocated), every run's formats at their largest count; None if unknown yet."""
    data = disk_frame(frame)
    if data.empty:
        return None
    bars = list(dict.fromkeys(data["bar"]))
    per_panel = data.groupby("run")["bar"].nunique().max()
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(
                "bar:N",
                title=None,
                sort=bars,
                axis=alt.Axis(labelAngle=0, labelLimit=160, labelExpr="split(datum.label, '\\n')"),
            ),
            xOffset=alt.XOffset("measure:N", sort=["apparent", "allocated"]),
            y=alt.Y("per_image:Q", title="Bytes per image", axis=alt.Axis(format=",.3~r")),
            color=alt.Color(
                "measure:N",
                title="Size",
                sort=["apparent", "allocated"],
                scale=alt.Scale(domain=["apparent", "allocated"], range=["#9ecae9", "#1f77b4"]),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=[
                alt.Tooltip("run_label:N", title="run"),
                alt.Tooltip("format:N", title="format"),
                alt.Tooltip("measure:N", title="size"),
                alt.Tooltip("per_image:Q", title="bytes/image", format=",.0f"),
                alt.Tooltip("megabytes:Q", title="MB", format=",.3~r"),
                alt.Tooltip("files:Q", title="files", format=COUNT_FORMAT),
                alt.Tooltip("count:Q", title="images", format=COUNT_FORMAT),
                alt.Tooltip("run_count:Q", title="run's largest count", format=COUNT_FORMAT),
            ],
        )
        .properties(width=max(360, 120 * int(per_panel)), height=PANEL_HEIGHT)
    )
    if data["run"].nunique() > 1:  # a panel per run, named by its label and its largest count
        header = alt.Header(labelFontWeight="bold", labelLimit=0)
        chart = chart.facet(
            column=alt.Column("panel:N", title=None, sort=list(dict.fromkeys(data["panel"])), header=header)
        )
        chart = chart.resolve_scale(x="independent", xOffset="independent")
    # "pad": the plot keeps its size and the title and legend add to it (Streamlit would squeeze it).
    return chart.properties(title=disk_title(data), autosize=alt.AutoSizeParams(type="pad"))


def _loader_panel(count: int, cache: str, with_cache: bool) -> str:
    return f"{count:,} image{'' if count == 1 else 's'}" + (f" ({cache} cache)" if with_cache else "")


LOADER_MIN_COUNT = 100  # an epoch of fewer images times the workers' start-up, not the reading: not charted


def loader_chart(frame: pd.DataFrame) -> alt.FacetChart | None:
    """Training-loader images/s against DataLoader workers per format, the in-memory ceiling dashed.

    One panel per image count of at least :data:`LOADER_MIN_COUNT` images when there is one
    (and cache state, when both were measured); None if the loader was not measured.
    """
    rows = frame[(frame["operation"] == LOADER) & frame["images_per_second"].notna() & frame["workers"].notna()]
    if rows.empty:
        return None
    if (rows["count"] >= LOADER_MIN_COUNT).any():  # the table still lists the smaller counts
        rows = rows[rows["count"] >= LOADER_MIN_COUNT]
    with_cache = rows["cache"].nunique() > 1
    formats = rows[~rows["backend"].isin(CEILINGS)].copy()
    formats["panel"] = [_loader_panel(c, k, with_cache) for c, k in zip(formats["count"], formats["cache"])]
    measured = rows[rows["backend"].isin(CEILINGS)]
    # The ceiling (measured warm) is the reference line in every panel of its image count.
    panel_counts = dict(zip(formats["panel"], formats["count"])) or {
        _loader_panel(c, "warm", with_cache): c for c in measured["count"]
    }
    ceiling = pd.concat(
        [measured[measured["count"] == count].assign(panel=panel) for panel, count in panel_counts.items()]
    )
    panels = list(panel_counts)
    data = pd.concat([formats.assign(layer="format"), ceiling.assign(layer="ceiling")], ignore_index=True)
    data = data.sort_values(["run", "backend", "count", "workers"])
    multi_run = data["run"].nunique() > 1
    worker_counts = sorted({int(w) for w in data["workers"]})
    x = alt.X("workers:Q", title="DataLoader workers", axis=alt.Axis(values=worker_counts, format="d"))
    y = alt.Y(
        "images_per_second:Q",
        title="Images per second (median epoch)",
        scale=alt.Scale(type="log"),
        axis=alt.Axis(format=COUNT_FORMAT),
    )
    tips = [
        alt.Tooltip("format:N", title="format"),
        alt.Tooltip("workers:Q", title="workers"),
        alt.Tooltip("batch_size:Q", title="batch size", format=COUNT_FORMAT),
        alt.Tooltip("count:Q", title="images", format=COUNT_FORMAT),
        alt.Tooltip("cache:N", title="cache"),
        alt.Tooltip("images_per_second:Q", title="images/s", format=",.0f"),
        alt.Tooltip("fraction_of_ceiling:Q", title="share of ceiling", format=".0%"),
        alt.Tooltip("first_batch_seconds:Q", title="first batch (s)", format=".3~g"),
        alt.Tooltip("batch_p50_seconds:Q", title="batch p50 (s)", format=".3~g"),
        alt.Tooltip("batch_p99_seconds:Q", title="batch p99 (s)", format=".3~g"),
    ]
    if multi_run:
        tips.insert(0, alt.Tooltip("run_label:N", title="run"))
    detail = ["format:N"] + (["run_label:N"] if multi_run else [])
    base = alt.Chart().encode(x=x, y=y, tooltip=tips, detail=detail)
    lines = base.transform_filter(alt.datum.layer == "format").mark_line(point=True, strokeWidth=2)
    own = alt.condition(alt.datum.order == "own", alt.value([2, 2]), alt.value([1, 0]))
    lines = lines.encode(color=_loader_color(formats) if not formats.empty else alt.value("#4c78a8"), strokeDash=own)
    references = [
        base.transform_filter((alt.datum.layer == "ceiling") & (alt.datum.backend == name)).mark_line(
            point=alt.OverlayMarkDef(color=color), strokeDash=[6, 4], color=color, strokeWidth=2
        )
        for name, color in ((CEILING_BACKEND, "#444444"), (DECODE_CEILING_BACKEND, "#b22222"))
    ]
    layered = alt.layer(*references, lines).properties(width=PANEL_WIDTH, height=PANEL_HEIGHT)
    panel_order = sorted(panels, key=lambda panel: (panel_counts[panel], "cold" in panel))
    title = alt.TitleParams(
        "Training loader: images per second against DataLoader workers",
        subtitle=[  # a line each: as one line it ran past the chart's right edge
            "dashed grey: the ceiling, the same DataLoader over the images held in memory (no storage);",
            "dashed red: over the encoded files themselves (the decode ceiling of stores that keep bytes);",
            "dotted: a format in its library's own order",
        ],
    )
    return (
        layered.facet(
            facet=alt.Facet("panel:N", sort=panel_order, title=None, header=alt.Header(labelFontWeight="bold")),
            columns=min(PANEL_COLUMNS, len(panel_order)),
            data=data,
        )
        .properties(title=title)
        .resolve_scale(y="independent")
    )


def chart_spec(chart: alt.TopLevelMixin, validate: bool = True) -> dict:
    """The chart's Vega-Lite spec with its data inline (what the PNG/SVG export renders).

    ``validate=False`` skips the schema check (half the time), for a live page redrawing
    charts whose code the tests have checked.
    """
    return chart.to_dict(validate=validate)


PRELOAD_DESCRIPTION = "chart library preload"


def preload_chart() -> alt.Chart:
    """A chart of one invisible point, 1 pixel square: drawing it makes the browser load its chart library.

    The Run page draws it on every draw of the page, outside the parts that redraw several
    times a second, so the library is loaded before a run starts and the first real chart
    is drawn as soon as it arrives (on two cores, loading it took about a second).
    """
    return (
        alt.Chart(pd.DataFrame({"x": [0]}), description=PRELOAD_DESCRIPTION)
        .mark_point(opacity=0)
        .encode(x=alt.X("x:Q", axis=None), y=alt.Y("x:Q", axis=None))
        .properties(width=1, height=1)
        .configure_view(stroke=None)
    )


def _spec(chart_or_spec: alt.TopLevelMixin | dict) -> dict:
    return chart_or_spec if isinstance(chart_or_spec, dict) else chart_spec(chart_or_spec)


def chart_png(chart: alt.TopLevelMixin | dict, scale: float = 2.0) -> bytes:
    """The chart (an Altair chart or its spec) as a PNG, rendered by vl-convert without a browser."""
    import vl_convert as vlc

    return vlc.vegalite_to_png(_spec(chart), scale=scale)


def chart_svg(chart: alt.TopLevelMixin | dict) -> str:
    """The chart (an Altair chart or its spec) as an SVG document."""
    import vl_convert as vlc

    return vlc.vegalite_to_svg(_spec(chart))


def _bytes(value: float | None) -> str:
    return "-" if value is None or pd.isna(value) else f"{value / 1e6:,.3f}" if value < 1e8 else format_megabytes(value)


DISK_TABLE_COLUMNS = ("MB apparent / allocated", "Files", "Bytes/image", "× source files")


def disk_table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Disk use as a table: one row per store (run, format, count), not one per operation timed on it."""
    rows = frame[frame["allocated_bytes"].notna() & ~frame["operation"].isin(["write_one", LOADER])]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.drop_duplicates(["run", "backend", "count"])
    table = table_frame(rows)
    columns = ["Run"] * ("Run" in table) + ["Format", "Images", *DISK_TABLE_COLUMNS]
    return table[columns]


def table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The measurements as a readable table (one row each), in the order of the charts."""
    if frame.empty:
        return pd.DataFrame()
    multi_run = frame["run"].nunique() > 1
    rows = frame.assign(_order=[format_order(frame["backend"]).index(b) for b in frame["backend"]]).sort_values(
        ["run", "count", "_order", "panel_order"]
    )

    def number(value: float | None, formatter) -> str:
        return "-" if value is None or pd.isna(value) else formatter(float(value))

    table = pd.DataFrame(
        {
            "Format": rows["format"],
            "Images": rows["count"].map(lambda c: f"{c:,}"),
            "Operation": rows["operation_label"],
            "Cache": rows["cache"],
            "Median": rows["seconds"].map(lambda v: number(v, format_seconds)),
            "Min – max": [
                f"{number(low, format_seconds)} – {number(high, format_seconds)}"
                for low, high in zip(rows["seconds_min"], rows["seconds_max"])
            ],
            "IQR": rows["seconds_iqr"].map(lambda v: number(v, format_seconds)),
            "Spread": rows["spread"].map(lambda v: number(v, lambda x: f"±{x / 2:.0%}")),
            "Others' CPU": [
                ("⚠ " if disturbed else "") + number(cores, lambda x: f"{x:.2f} cores")
                for cores, disturbed in zip(rows["other_cores"], rows["disturbed"])
            ],
            "Repeats": rows["repeats"],
            "Images/s": rows["images_per_second"].map(lambda v: number(v, format_rate)),
            "MB/s": rows["mb_per_second"].map(lambda v: number(v, format_rate)),
            "MB apparent / allocated": [
                f"{_bytes(apparent)} / {_bytes(allocated)}"
                for apparent, allocated in zip(rows["apparent_bytes"], rows["allocated_bytes"])
            ],
            "Files": rows["files"].map(lambda v: number(v, lambda x: f"{x:,.0f}")),
            "Bytes/image": rows["bytes_per_image"].map(lambda v: number(v, lambda x: f"{x:,.0f}")),
            "× source files": rows["source_ratio"].map(lambda v: number(v, lambda x: f"{x:.2f}×")),
            "Keeps": rows["encoding"].map(keeps_label),
            "Resize": rows["resize"].map(lambda text: text or "-"),
            "Workers": rows["workers"].map(lambda v: number(v, lambda x: f"{x:.0f}")),
            "Share of ceiling": rows["fraction_of_ceiling"].map(lambda v: number(v, lambda x: f"{x:.0%}")),
            "Verified": [
                f"✗ {error}" if isinstance(error, str) and error else ("✓" if verified else "–")
                for verified, error in zip(rows["verified"], rows["error"])
            ],
        }
    )
    if multi_run:
        table.insert(0, "Run", rows["run_label"])
    return table.reset_index(drop=True)
