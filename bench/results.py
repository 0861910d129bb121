"""What a scenario produces: figures with their targets, plus series for plots."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["<=", ">="]


@dataclass(frozen=True)
class Target:
    """A bound a figure should meet; ``against`` names what the bound is (e.g. ``"baseline b"``)."""

    bound: float
    direction: Direction
    against: str = "absolute"


@dataclass(frozen=True)
class Figure:
    scenario: str
    name: str
    value: float | None
    unit: str
    target: Target | None = None
    note: str = ""
    unjudged: str = ""  # why the target is not judged (e.g. "quick": sizes too small); "" = judged

    @property
    def ratio(self) -> float | None:
        """``value / target``: ≤ 1 meets a ``<=`` target, ≥ 1 meets a ``>=`` target."""
        if self.value is None or self.target is None or self.target.bound == 0:
            return None
        return self.value / self.target.bound

    @property
    def status(self) -> str:
        """``pass`` or ``miss`` against the target, ``info`` without one, ``n/a`` without a value.

        ``n/a (<why>)`` when the figure has a target that is not judged (see ``unjudged``).
        """
        if self.value is None:
            return "n/a"
        if self.target is None:
            return "info"
        if self.unjudged:
            return f"n/a ({self.unjudged})"
        if self.target.direction == "<=":
            return "pass" if self.value <= self.target.bound else "miss"
        return "pass" if self.value >= self.target.bound else "miss"

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": None
            if self.target is None
            else {"bound": self.target.bound, "direction": self.target.direction, "against": self.target.against},
            "ratio": self.ratio,
            "status": self.status,
            "note": self.note,
        }


@dataclass
class ScenarioResult:
    name: str
    figures: list[Figure] = field(default_factory=list)
    # Plot data, e.g. {"latency": {"t_s": [...], "ms": [...]}}; written to the JSON too.
    series: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0

    def add(self, name: str, value: float | None, unit: str, target: Target | None = None, note: str = "") -> Figure:
        figure = Figure(self.name, name, value, unit, target, note)
        self.figures.append(figure)
        return figure

    def without_verdicts(self, why: str) -> None:
        """Keep every figure and its target, but judge none (``why``, e.g. "quick", shows in the status)."""
        self.figures = [dataclasses.replace(f, unjudged=why) if f.target is not None else f for f in self.figures]

    def value(self, name: str) -> float | None:
        for figure in self.figures:
            if figure.name == name:
                return figure.value
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "config": self.config,
            "figures": [f.as_json() for f in self.figures],
            "series": self.series,
        }
