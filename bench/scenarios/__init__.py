"""The scenarios, in the order a full run takes them (isolation after latency: it compares with it)."""

from __future__ import annotations

from collections.abc import Callable

from bench.results import ScenarioResult
from bench.scenarios import capacity, catchup, latency, memory, recovery, synapse, throughput
from bench.scenarios.common import QUICK, Context, Sizes

Scenario = Callable[[Context, Sizes], ScenarioResult]

SCENARIOS: dict[str, Scenario] = {
    "throughput": throughput.run,
    "latency": latency.run,
    "capacity": capacity.run,
    "catch-up": catchup.run,
    "isolation": latency.run_isolation,
    "recovery": recovery.run,
    "memory": memory.run,
    "synapse": synapse.run,
}
# Run only when named (--scenario): it needs `make synapse` and minutes of client-API traffic.
OPT_IN = frozenset({"synapse"})

__all__ = ["OPT_IN", "QUICK", "SCENARIOS", "Context", "Scenario", "Sizes"]
