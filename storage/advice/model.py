"""A cost model per format, fitted to the counts measured: fixed cost + cost per image, with a range.

Each measured figure (seconds of a write, an epoch, a scan; bytes on disk) is fitted as
``fixed + per_image * count`` by least squares over the counts measured. The range at the
full count comes from the spread of the repeats and from how the cost grew: the same line
fitted to each count's fastest and slowest repeat, and the marginal cost between the two
largest counts carried on from the largest (a cost per image that grows with the size, as
when a store outgrows a cache, shows there first). A random read's latency is fitted
against the logarithm of the store's size (an index lookup deepens as it grows), never
falling.

The fits are plain arithmetic on stored numbers: the same measurements give the same model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Range:
    """A projected figure: the fitted ``value`` and the ``low``..``high`` it may fall in."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}

    def scaled(self, factor: float) -> Range:
        return Range(self.value * factor, self.low * factor, self.high * factor)


@dataclass(frozen=True)
class Line:
    """``fixed + per_image * count``, both at least 0."""

    fixed: float
    per_image: float

    def at(self, count: float) -> float:
        return self.fixed + self.per_image * count


@dataclass(frozen=True)
class Points:
    """One figure measured at several counts: for each count, every repeat's value."""

    counts: tuple[int, ...]
    repeats: tuple[tuple[float, ...], ...]

    @classmethod
    def gather(cls, pairs: Sequence[tuple[int, Sequence[float]]]) -> Points:
        """Points from (count, values) pairs; pairs of the same count (several runs) are pooled."""
        pooled: dict[int, list[float]] = {}
        for count, values in pairs:
            pooled.setdefault(int(count), []).extend(float(v) for v in values if v is not None and math.isfinite(v))
        kept = sorted((count, tuple(values)) for count, values in pooled.items() if values)
        return cls(tuple(c for c, _ in kept), tuple(v for _, v in kept))

    def medians(self) -> list[float]:
        return [float(np.median(values)) for values in self.repeats]

    def lowest(self) -> list[float]:
        return [min(values) for values in self.repeats]

    def highest(self) -> list[float]:
        return [max(values) for values in self.repeats]


def fit_line(counts: Sequence[float], values: Sequence[float]) -> Line:
    """Least squares ``fixed + per_image * count`` with neither below 0 (a count of one: through 0)."""
    x, y = np.asarray(counts, dtype=float), np.asarray(values, dtype=float)
    if len(x) == 1 or np.ptp(x) == 0:
        return Line(0.0, float(y.mean() / x.mean()) if x.mean() else 0.0)
    per_image, fixed = np.polyfit(x, y, 1)
    if per_image < 0:  # noise larger than the growth: a constant cost
        return Line(float(max(y.mean(), 0.0)), 0.0)
    if fixed < 0:  # through the origin instead
        return Line(0.0, float(max((x @ y) / (x @ x), 0.0)))
    return Line(float(fixed), float(per_image))


def project_linear(points: Points, count: int) -> Range | None:
    """A figure that grows with the count (seconds of a write, an epoch or a scan), at ``count``."""
    if not points.counts:
        return None
    value = fit_line(points.counts, points.medians()).at(count)
    candidates = [
        value,
        fit_line(points.counts, points.lowest()).at(count),
        fit_line(points.counts, points.highest()).at(count),
    ]
    if len(points.counts) >= 2:  # the cost per image between the two largest counts, carried on
        (c1, c2), (m1, m2) = points.counts[-2:], points.medians()[-2:]
        marginal = max((m2 - m1) / (c2 - c1), 0.0)
        candidates.append(m2 + marginal * (count - c2))
    return Range(value, max(min(candidates), 0.0), max(candidates))


def project_bytes(points: Points, count: int) -> Range | None:
    """Bytes on disk at ``count``: a line through the stores measured, the range from its worst residual."""
    if not points.counts:
        return None
    medians = points.medians()
    line = fit_line(points.counts, medians)
    value = line.at(count)
    residuals = [abs(line.at(c) - m) / m for c, m in zip(points.counts, medians, strict=True) if m > 0]
    spread = max([0.005, *residuals])  # block rounding and headers: never claimed closer than 0.5 %
    return Range(value, value * (1 - spread), value * (1 + spread))


def project_latency(points: Points, count: int) -> Range | None:
    """Seconds per random read at a store of ``count``: ``a + b * ln(count)``, never falling with the size."""
    if not points.counts:
        return None
    logs = [math.log(c) for c in points.counts]
    medians = points.medians()
    if len(points.counts) >= 2 and np.ptp(logs) > 0:
        slope, intercept = np.polyfit(logs, medians, 1)
        slope = max(float(slope), 0.0)
        value = (float(intercept) if slope > 0 else float(np.mean(medians))) + slope * math.log(count)
        if slope == 0:
            value = float(np.mean(medians))
    else:
        value, slope = medians[-1], 0.0
    value = max(value, medians[-1] if count >= points.counts[-1] else 0.0)
    grow = slope * max(math.log(count) - logs[-1], 0.0)
    low = min(value, min(points.lowest()[-1], value))
    high = max(value, points.highest()[-1] + grow)
    return Range(value, max(low, 0.0), high)
