"""Scenario 6, memory: a worker's RSS against the number of parked events.

``memory_appservices`` appservices are down (503) so their events spread
over several partitions' RocksDB stores; ``memory_events`` events are parked
in ``memory_steps`` steps. After each step (no lag left) the worker's RSS,
its peak (VmHWM) and its data folder size are read. The default run parks
the target's 1,000,000 events for real (about 75 s here); runs that park fewer
(``--memory-events``, ``--quick``) get the figure compared with the target
extrapolated from the last two points, marked so: the first 100k or so fill
RocksDB's write buffers, after which RSS grows slowly.
"""

from __future__ import annotations

from bench import procs
from bench.results import ScenarioResult, Target
from bench.scenarios.common import Context, Sizes, names
from bench.stats import linear_fit

TARGET_MB = 300.0
TARGET_EVENTS = 1_000_000
# Below this RocksDB's write buffers are still filling: a line through such
# points (a quick run's 0 and 1,000) extrapolates their filling as growth.
MIN_EXTRAPOLATION_EVENTS = 50_000


def run(ctx: Context, sizes: Sizes) -> ScenarioResult:
    result = ScenarioResult(
        "memory",
        config={"events": sizes.memory_events, "steps": sizes.memory_steps, "appservices": sizes.memory_appservices},
    )
    down = names("mem", sizes.memory_appservices)
    parked: list[float] = [0.0]
    with ctx.rig("memory") as rig:
        rig.start_sinks(down, dict.fromkeys(down, "down"))
        (worker,) = rig.start_workers(1, retry_unit_ms=100)
        generator = rig.generator(linger_ms=5)
        ctx.turn()
        rss = [worker.rss_mb() or 0.0]
        peak = [worker.peak_rss_mb() or 0.0]
        disk = [0.0]
        step = max(1, sizes.memory_events // sizes.memory_steps)
        for n in range(1, sizes.memory_steps + 1):
            generator.bulk(down, step)
            total = n * step
            if rig.wait_parked(worker, ctx.patience(60.0 + step / 500), f"parking step {n}", step) is None:
                break
            parked.append(float(total))
            rss.append(worker.rss_mb() or 0.0)
            peak.append(worker.peak_rss_mb() or 0.0)
            disk.append(procs.dir_size_mb(worker.data_dir))
    top = int(parked[-1])
    result.add(f"RSS with {top:,} parked", rss[-1], "MB")
    result.add(f"peak RSS (VmHWM) with {top:,} parked", peak[-1], "MB")
    result.add("RSS idle, nothing parked", rss[0], "MB")
    result.add(f"RocksDB folder with {top:,} parked", disk[-1], "MB")
    if top >= TARGET_EVENTS:
        result.add(f"peak RSS at {TARGET_EVENTS:,} parked", peak[-1], "MB", Target(TARGET_MB, "<="))
    elif len(parked) < 3 or parked[-2] < MIN_EXTRAPOLATION_EVENTS:
        result.add(
            f"peak RSS at {TARGET_EVENTS:,} parked",
            None,
            "MB",
            Target(TARGET_MB, "<="),
            note=f"not extrapolated: two points past {MIN_EXTRAPOLATION_EVENTS:,} parked are needed",
        )
    else:
        # RSS first jumps while RocksDB's write buffers and caches fill, then grows
        # slowly: extrapolate from the last two points (the marginal growth), not
        # from a line through all of them.
        slope, intercept = linear_fit(parked[-2:], peak[-2:])
        result.add(
            f"peak RSS at {TARGET_EVENTS:,} parked (extrapolated)",
            slope * TARGET_EVENTS + intercept,
            "MB",
            Target(TARGET_MB, "<="),
            note=f"from the last two points, {int(parked[-2]):,} and {top:,}",
        )
        result.add("marginal RSS growth per 100k parked", slope * 100_000, "MB")
    result.series["memory"] = {"parked": parked, "rss_mb": rss, "peak_rss_mb": peak, "rocksdb_mb": disk}
    return result
