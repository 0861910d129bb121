"""The scenarios, in the order a full run takes them (isolation after latency: it compares with it)."""

from __future__ import annotations

from collections.abc import Callable

from bench.results import ScenarioResult
from bench.scenarios import catchup, latency, memory, recovery, throughput
from bench.scenarios.common import QUICK, Context, Sizes

Scenario = Callable[[Context, Sizes], ScenarioResult]

SCENARIOS: dict[str, Scenario] = {
    "throughput": throughput.run,
    "latency": latency.run,
    "catch-up": catchup.run,
    "isolation": latency.run_isolation,
    "recovery": recovery.run,
    "memory": memory.run,
}

__all__ = ["QUICK", "SCENARIOS", "Context", "Scenario", "Sizes"]
