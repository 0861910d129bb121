"""Pure arithmetic on measurements: percentiles, rates, bins, a line fit."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between ranks (numpy's default).

    Raises:
        ValueError: no values, or ``q`` outside [0, 100].
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside [0, 100]")
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction)


def median(values: Iterable[float]) -> float:
    """Raises: ValueError for no values."""
    return percentile(sorted(values), 50)


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p99: float
    max: float
    mean: float


def summarize(values: Iterable[float]) -> Summary | None:
    """Count, p50, p99, max and mean; ``None`` for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Summary(
        len(ordered), percentile(ordered, 50), percentile(ordered, 99), ordered[-1], sum(ordered) / len(ordered)
    )


def steady_rate(arrivals_ns: Sequence[int], low: float = 0.1, high: float = 0.9) -> float | None:
    """Events per second between the ``low`` and ``high`` quantiles of arrival order.

    Leaves out the start (connections, first batches) and the tail (stragglers),
    so the figure is the sustained rate. ``None`` when fewer than 10 arrivals
    or they all share one instant.
    """
    if len(arrivals_ns) < 10:
        return None
    ordered = sorted(arrivals_ns)
    first = int((len(ordered) - 1) * low)
    last = int((len(ordered) - 1) * high)
    span_ns = ordered[last] - ordered[first]
    if span_ns <= 0:
        return None
    return (last - first) * NS_PER_S / span_ns


def overall_rate(count: int, start_ns: int, end_ns: int) -> float | None:
    return None if end_ns <= start_ns else count * NS_PER_S / (end_ns - start_ns)


@dataclass(frozen=True)
class Bin:
    start_s: float
    count: int
    p50: float
    p99: float
    max: float


def bins(times_s: Sequence[float], values: Sequence[float], width_s: float) -> list[Bin]:
    """Group ``values`` by ``times_s`` into consecutive bins of ``width_s``; empty bins are left out.

    Raises:
        ValueError: the sequences differ in length or ``width_s`` is not positive.
    """
    if len(times_s) != len(values):
        raise ValueError("times and values differ in length")
    if width_s <= 0:
        raise ValueError("bin width must be positive")
    grouped: dict[int, list[float]] = {}
    for t, v in zip(times_s, values, strict=True):
        grouped.setdefault(math.floor(t / width_s), []).append(v)
    out = []
    for index in sorted(grouped):
        ordered = sorted(grouped[index])
        out.append(Bin(index * width_s, len(ordered), percentile(ordered, 50), percentile(ordered, 99), ordered[-1]))
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)``.

    Raises:
        ValueError: fewer than two points, different lengths, or all xs equal.
    """
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("need two or more (x, y) pairs")
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all x values are equal")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, mean_y - slope * mean_x
