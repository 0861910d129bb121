"""Results out: a table for the terminal, a JSON document, a PNG of latency over time and of catch-up."""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.results import Figure, ScenarioResult

HEADERS = ("scenario", "figure", "value", "unit", "target", "ratio", "status")


def format_value(value: float | None) -> str:
    """Numbers as a reader wants them: ``12,345``, ``45.6``, ``3.21``, ``0.0123``; ``-`` for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000 or (float(value).is_integer() and magnitude >= 10):
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_target(figure: Figure) -> str:
    if figure.target is None:
        return ""
    against = "" if figure.target.against == "absolute" else f" ({figure.target.against})"
    return f"{figure.target.direction} {format_value(figure.target.bound)}{against}"


def rows(results: Sequence[ScenarioResult]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for result in results:
        if result.error is not None:
            out.append((result.name, "ERROR", "", "", "", "", result.error.splitlines()[0][:80]))
        for f in result.figures:
            value = format_value(f.value)
            if f.note:
                value += f"  ({f.note})"
            ratio = "" if f.ratio is None else f"{f.ratio:.2f}"
            out.append((result.name, f.name, value, f.unit, format_target(f), ratio, f.status))
    return out


def format_table(results: Sequence[ScenarioResult]) -> str:
    """A plain-text table, one line per figure, columns padded to fit."""
    table = [HEADERS, *rows(results)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            cell.rjust(w) if i in (2, 5) and n else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_info(kafka_version: str) -> dict[str, Any]:
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "kafka": kafka_version,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],  # others' work on the machine skews figures
    }


def document(
    results: Sequence[ScenarioResult], *, started: str, machine: dict[str, Any], argv: Sequence[str], quick: bool
) -> dict[str, Any]:
    figures = [f for r in results for f in r.figures]
    return {
        "started": started,
        "command": ["python", "-m", "bench", *argv],
        "quick": quick,
        "machine": machine,
        "summary": {
            "figures": len(figures),
            "pass": sum(1 for f in figures if f.status == "pass"),
            "miss": sum(1 for f in figures if f.status == "miss"),
            "errors": [r.name for r in results if r.error is not None],
        },
        # False when some target was not judged (quick sizes): pass and miss count only judged ones.
        "targets_judged": not any(f.unjudged for f in figures if f.target is not None),
        "scenarios": [r.as_json() for r in results],
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def plot(results: Sequence[ScenarioResult], path: Path) -> bool:
    """Latency over time (latency, isolation), catch-up progress and memory; ``False`` without matplotlib or data."""
    series = {name: data for r in results for name, data in r.series.items()}
    panels = panel_names(series)
    if not panels:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    columns = min(3, len(panels))
    rows_ = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(4.2 * columns, 3.2 * rows_), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, panels, strict=False):
        data = series[name]
        if name.split()[0] in ("latency", "isolation"):
            ax.plot(data["t_s"], data["p50_ms"], label="p50")
            ax.plot(data["t_s"], data["p99_ms"], label="p99")
            floor = series.get(f"{name} {BASELINE_SERIES}")
            if floor and floor.get("t_s"):
                ax.plot(floor["t_s"], floor["p50_ms"], linestyle="--", color="grey", label="baseline (a) p50")
            ax.set_yscale("log")
            ax.set(title=name, xlabel="s since start", ylabel="produce→appservice ms (0.5 s bins)")
            ax.legend()
        elif name == "catchup":
            ax.plot(data["t_s"], data["events"])
            ax.set(title="catch-up after sink returns", xlabel="s since sink up", ylabel="events received")
        else:
            ax.plot(data["parked"], data["rss_mb"], marker="o", label="RSS")
            ax.plot(data["parked"], data["peak_rss_mb"], marker="x", label="peak (VmHWM)")
            ax.set(title="worker memory", xlabel="events parked", ylabel="MB")
            ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


_PANELS = ("latency", "isolation", "catchup", "memory")
# Suffix of a series drawn on the panel named by the rest of its name (the
# latency scenario's baseline (a) runs beside the worker's).
BASELINE_SERIES = "baseline (a)"


def panel_names(series: dict[str, dict[str, list[float]]]) -> list[str]:
    """The series that get a panel of their own: known kinds with data, not those drawn on another's."""
    return [
        name
        for name in series
        if name.split()[0] in _PANELS and not name.endswith(BASELINE_SERIES) and series[name].get(_x(name))
    ]


def _x(name: str) -> str:
    return "parked" if name == "memory" else "t_s"


def format_profile(label: str, profile: dict[str, Any], limit: int = 12) -> str:
    """The top frames of one py-spy profile, self and inclusive, as percentages of all samples."""
    lines = [f"\nprofile: {label} ({profile['samples']} samples, {profile['svg']})"]
    lines.append("  by category (first match, outermost code of ours wins):")
    lines.extend(f"    {pct:5.1f} %  {name}" for name, pct in profile.get("categories", []))
    for title, key in (("self", "self"), ("inclusive", "inclusive")):
        lines.append(f"  by {title} time:")
        lines.extend(f"    {pct:5.1f} %  {name}" for name, pct in profile[key][:limit])
    return "\n".join(lines)
