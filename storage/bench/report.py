"""Tables of measurements for a terminal and for Markdown: median, spread, rates, disk use."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .events import Measurement
from .results.schema import printable

MEGABYTE = 1_000_000


def format_seconds(seconds: float | None) -> str:
    """1.23 s, 45.6 ms, 78 µs: three significant digits in a readable unit."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.3g} s" if seconds < 1000 else f"{seconds:,.0f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def format_rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_megabytes(value: float | None) -> str:
    if value is None:
        return "-"
    megabytes = value / MEGABYTE
    return f"{megabytes:,.1f}" if megabytes < 100 else f"{megabytes:,.0f}"


def spread(measurement: Measurement) -> str:
    """min–max of the samples (a single sample has no spread)."""
    if measurement.seconds_min is None or measurement.repeats < 2:
        return "-"
    return f"{format_seconds(measurement.seconds_min)}–{format_seconds(measurement.seconds_max)}"


def status_of(measurement: Measurement) -> str:
    if measurement.error and measurement.error.startswith("VERIFICATION FAILED"):
        return "MISMATCH"
    if measurement.error:
        return "ERROR"
    if not measurement.verified:
        return "unverified"
    if measurement.psnr is not None:
        return f"ok ({measurement.psnr:.1f} dB)"
    return "ok"


def _cache_cell(measurement: Measurement) -> str:
    if measurement.cache != "cold":
        return measurement.cache
    if measurement.evicted is False:
        return "cold?"  # eviction was not confirmed by the residency check
    return "cold"


HEADERS = (
    "backend",
    "images",
    "operation",
    "cache",
    "median",
    "min–max",
    "IQR",
    "per image",
    "images/s",
    "MB/s",
    "disk MB",
    "files",
    "B/image",
    "check",
)


def measurement_rows(measurements: Iterable[Measurement]) -> list[list[str]]:
    rows = []
    for m in measurements:
        rows.append(
            [
                m.backend,
                f"{m.count:,}",
                m.operation,
                _cache_cell(m),
                format_seconds(m.seconds_median),
                spread(m),
                format_seconds(m.seconds_iqr) if m.repeats >= 2 else "-",
                format_seconds(m.seconds_per_image),
                format_rate(m.images_per_second),
                format_rate(m.mb_per_second),
                format_megabytes(m.allocated_bytes),
                f"{m.files:,}" if m.files is not None else "-",
                f"{m.bytes_per_image:,.0f}" if m.bytes_per_image is not None else "-",
                status_of(m),
            ]
        )
    return rows


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table: text columns left, numbers right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    numeric = [all(_looks_numeric(row[i]) for row in rows) if rows else False for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).rjust(w) if numeric[i] else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def _looks_numeric(cell: str) -> bool:
    text = str(cell).replace(",", "").replace(".", "").replace(" ", "")
    for unit in ("µs", "ms", "s", "–", "%"):
        text = text.replace(unit, "")
    return text == "-" or text.isdigit()


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(out)


def measurements_table(measurements: Iterable[Measurement], markdown: bool = False) -> str:
    """Every measurement on one line: median and spread, rates, disk use and the check."""
    rows = measurement_rows(measurements)
    return markdown_table(HEADERS, rows) if markdown else text_table(HEADERS, rows)


LOADER_HEADERS = (
    "backend",
    "images",
    "workers",
    "batch",
    "cache",
    "images/s",
    "x ceiling",
    "epoch",
    "min–max",
    "first epoch",
    "first batch",
    "batch p50",
    "batch p99",
    "read/decode/aug per batch",
    "load",
    "check",
)


def format_fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def loader_name(m: Measurement) -> str:
    """The backend, marked when it was read in its library's own order rather than the common shuffle."""
    return f"{m.backend} (own order)" if m.order == "own" else m.backend


def _ceiling_share(m: Measurement) -> str:
    share = format_fraction(m.fraction_of_ceiling)
    return share if m.ceiling != "decode" or share == "-" else f"{share} (decode)"


def _parts(m: Measurement) -> str:
    values = (m.read_seconds_per_batch, m.decode_seconds_per_batch, m.transform_seconds_per_batch)
    if all(value is None for value in values):
        return "-"
    return " / ".join(format_seconds(value) for value in values)


def loader_rows(measurements: Iterable[Measurement]) -> list[list[str]]:
    rows = []
    for m in measurements:
        rows.append(
            [
                loader_name(m),
                f"{m.count:,}",
                "-" if m.workers is None else str(m.workers),
                "-" if m.batch_size is None else str(m.batch_size),
                _cache_cell(m),
                format_rate(m.images_per_second),
                _ceiling_share(m),
                format_seconds(m.seconds_median),
                spread(m),
                format_seconds(m.first_epoch_seconds),
                format_seconds(m.first_batch_seconds),
                format_seconds(m.batch_p50_seconds),
                format_seconds(m.batch_p99_seconds),
                _parts(m),
                "-" if m.load_average is None else f"{m.load_average:.1f}",
                status_of(m),
            ]
        )
    return rows


def loader_table(measurements: Iterable[Measurement], markdown: bool = False) -> str:
    """The loader operation: images/s per format and worker count, and its share of the in-memory ceiling."""
    rows = loader_rows(measurements)
    return markdown_table(LOADER_HEADERS, rows) if markdown else text_table(LOADER_HEADERS, rows)


OBJECT_STORAGE_HEADERS = (
    "backend",
    "images",
    "operation",
    "workers",
    "seconds",
    "images/s",
    "requests",
    "MB moved",
    "projected s",
    "projected img/s",
    "read as",
    "check",
)


def object_storage_rows(measurements: Iterable[Measurement]) -> list[list[str]]:
    rows = []
    for m in measurements:
        rows.append(
            [
                m.backend,
                f"{m.count:,}",
                m.operation,
                "-" if m.workers is None else str(m.workers),
                format_seconds(m.seconds_median),
                format_rate(m.images_per_second),
                "-" if m.requests is None else f"{m.requests:,.0f}",
                format_megabytes(m.transferred_bytes),
                format_seconds(m.projected_seconds),
                format_rate(m.projected_images_per_second),
                _read_as(m.read_method),
                status_of(m),
            ]
        )
    return rows


def _read_as(method: str | None) -> str:
    """The read method in a word or two: its library's own reads, or downloaded whole first."""
    if not method or method == "upload":
        return "-"
    return "downloaded" if method.startswith("downloaded") else "streamed"


def object_storage_table(measurements: Iterable[Measurement], markdown: bool = False) -> str:
    """The object-storage operations: time, requests and bytes per sample, and the figure on the named network."""
    measurements = list(measurements)
    rows = object_storage_rows(measurements)
    table = markdown_table(OBJECT_STORAGE_HEADERS, rows) if markdown else text_table(OBJECT_STORAGE_HEADERS, rows)
    projection = next((m.projection for m in measurements if m.projection), None)
    where = next((f"{m.location.rsplit('/', 3)[0]} at {m.endpoint}" for m in measurements if m.location), "")
    lines = [table]
    if where:
        lines.append(f"stores at {printable(where)}")
    if projection:
        lines.append(
            f"projected to {projection['rtt_ms']:g} ms RTT, {projection['bandwidth_mbit']:g} Mbit/s: "
            f"{projection['model']}; requests and bytes as the server counted them"
        )
    return "\n".join(lines)


def runs_table(runs: Iterable) -> str:
    """The run list of ``python -m storage runs``."""
    rows = []
    for run in runs:
        source = run.source.get("kind") or run.parameters.get("source", "")
        cells = [
            run.id,
            run.started_at.replace("T", " ").rstrip("Z"),
            run.status + (" (imported)" if run.imported else ""),
            ",".join(map(str, run.backends)),
            ",".join(str(c) for c in run.counts),
            str(source),
            str(run.measurement_count),
        ]
        rows.append([printable(cell) for cell in cells])  # names from a file never drive the terminal
    return text_table(["run id", "started (UTC)", "status", "backends", "counts", "source", "measurements"], rows)
