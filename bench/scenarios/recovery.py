"""Scenario 5, recovery: SIGKILL a worker that holds ``recovery_events`` parked events, then restart it.

Set-up: one appservice (``rp``) is down and has the parked events; a few
healthy ones get a live load of ``recovery_live_rate`` events/s throughout.
The worker is killed and started again at once, first with its RocksDB
state kept (warm), then a second time with its data folder wiped, so the
state is rebuilt from the changelog (cold). "Delivery resumes" is the first
event a healthy sink receives after the kill (the killed process was reaped
first, so nothing it sent counts). At the end ``rp`` comes back and must get
every parked event exactly once.
"""

from __future__ import annotations

import time

from bench.load import LoadGenerator, PacedThread
from bench.results import ScenarioResult, Target
from bench.rig import Rig
from bench.scenarios.common import Context, Sizes, duplicates_and_missing, names
from bench.stats import NS_PER_S

TARGETS_S = {"warm": 5.0, "cold": 30.0}
PARKED = "rp"
RETRY_UNIT_MS = 10  # backoff cap 5.12 s, so rp's retry after the restart comes soon
RETRY_UNIT_MS_QUICK = 1  # cap 0.512 s: quick mode does not wait seconds for rp's next retry
LIVE_SEQ = 1 << 40  # the live generator's seqs, apart from the parked ones


def _first_arrival_after(rig: Rig, healthy: list[str], after_ns: int) -> int | None:
    stats = rig.sinks.stats()
    if not any(stats.get(n, {}).get("last_ns", 0) > after_ns for n in healthy):
        return None
    doc = rig.sinks.events()
    table = doc["names"]
    wanted = set(healthy)
    found = [at for at, i in zip(doc["arrival"], doc["as"], strict=True) if at > after_ns and table[i] in wanted]
    return min(found) if found else None


def generator_position(generator: LoadGenerator) -> int:
    """How many live events had been queued (the next one's index)."""
    return generator.stats.produced


def run(ctx: Context, sizes: Sizes) -> ScenarioResult:
    count = sizes.recovery_events
    retry_unit_ms = RETRY_UNIT_MS_QUICK if ctx.quick else RETRY_UNIT_MS
    healthy = names("rh", min(5, sizes.appservices))
    result = ScenarioResult(
        "recovery",
        config={
            "parked_events": count,
            "healthy_appservices": len(healthy),
            "live_rate_per_s": sizes.recovery_live_rate,
            "retry_unit_ms": retry_unit_ms,
        },
    )
    with ctx.rig("recovery") as rig:
        rig.start_sinks([*healthy, PARKED], {PARKED: "down"})
        (worker,) = rig.start_workers(1, retry_unit_ms=retry_unit_ms)
        parked_generator = rig.generator(linger_ms=5)
        live_generator = rig.generator(linger_ms=1, first_seq=LIVE_SEQ)
        ctx.turn()
        parked_generator.bulk([PARKED], count)
        park_s = rig.wait_parked(worker, ctx.patience(60.0 + count / 500), "parking", count)
        result.add("time to park", park_s, "s")
        live = PacedThread(live_generator, healthy, sizes.recovery_live_rate, duration_s=600.0)
        live.start()
        kills: list[list[object]] = []
        try:
            rig.wait_until(lambda: rig.sinks.delivered() > 0, ctx.patience(30.0), 0.1)
            for mode in ("warm", "cold"):
                # Live load flowing for a while before the kill. Not less in quick mode: a
                # SIGKILL ~0.1 s after the warm restart resumed delivery made the cold start
                # exit with GapDetected.
                time.sleep(0.5 if ctx.quick else 1.0)
                kill_ns = time.time_ns()
                kills.append([mode, kill_ns, generator_position(live_generator)])
                worker.kill()  # reaped: nothing it sent can arrive later
                dead_ns = time.time_ns()
                if mode == "cold":
                    worker.wipe_state()
                worker.start()
                worker.wait_ready(ctx.patience(120.0))
                result.add(f"{mode}: SIGKILL → worker ready", (time.time_ns() - kill_ns) / NS_PER_S, "s")
                resumed: list[int] = []

                def arrived(after: int = dead_ns, into: list[int] = resumed) -> bool:
                    first = _first_arrival_after(rig, healthy, after)
                    if first is not None:
                        into.append(first)
                    return first is not None or rig.all_exited()

                rig.wait_until(arrived, ctx.patience(120.0), 0.05)
                resume_s = (resumed[0] - kill_ns) / NS_PER_S if resumed else None
                result.add(
                    f"{mode}: SIGKILL → delivery resumes",
                    resume_s,
                    "s",
                    Target(TARGETS_S[mode], "<="),
                    note="RocksDB kept" if mode == "warm" else "RocksDB wiped, rebuilt from changelog",
                )
                result.add(f"{mode}: worker RSS after restart", worker.rss_mb(), "MB")
            up_ns = time.time_ns()
            rig.sinks.set_mode(PARKED, "ok")
            got = rig.wait_delivered(count, ctx.patience(60.0 + count / 1000), "parked after restarts", names=[PARKED])
            stats = rig.sinks.stats()[PARKED]
            result.add("parked: sink up → first event", (stats["first_ns"] - up_ns) / NS_PER_S if got else None, "s")
            result.add("parked: sink up → all delivered", (stats["last_ns"] - up_ns) / NS_PER_S if got else None, "s")
        finally:
            live.stop()
        rig.wait_delivered(
            live_generator.stats.produced, ctx.patience(30.0), "live stragglers", names=healthy, stall_s=3.0
        )
        doc = rig.sinks.events()

        def left_behind() -> dict[int, int]:
            lags = rig.lag.least_lag_by_partition(rig.groups(worker), rig.input_topic)
            return {p: n for p, n in lags.items() if n}

        # Up to one commit interval, so a partition that moves shows no lag.
        rig.wait_until(lambda: not left_behind(), 1.2, 0.1)
        stalled = left_behind()
        result.add(
            "input partitions left behind",
            len(stalled),
            "partitions",
            note=", ".join(f"p{p}: {n} behind" for p, n in sorted(stalled.items())),
        )
        if live.error is not None:
            result.config["live_load_error"] = repr(live.error)
    table = doc["names"]
    parked_seqs = [s for s, i in zip(doc["seq"], doc["as"], strict=True) if table[i] == PARKED]
    live_seqs = [s for s, i in zip(doc["seq"], doc["as"], strict=True) if table[i] != PARKED]
    dup_p, miss_p = duplicates_and_missing(parked_seqs, count)
    dup_l, miss_l = duplicates_and_missing(live_seqs, live_generator.stats.produced)
    result.add("parked: missing / duplicate events", miss_p + dup_p, "events", note=f"{miss_p} missing, {dup_p} dup")
    result.add("live: missing / duplicate events", miss_l + dup_l, "events", note=f"{miss_l} missing, {dup_l} dup")
    if miss_l:
        # Which ones: live seqs go round-robin over the healthy appservices from LIVE_SEQ on.
        seen = set(live_seqs)
        lost = [s for s in range(LIVE_SEQ, LIVE_SEQ + live_generator.stats.produced) if s not in seen]
        result.config["live_missing"] = [[healthy[(s - LIVE_SEQ) % len(healthy)], s - LIVE_SEQ] for s in lost[:50]]
        result.config["kill_times_ns"] = kills
    return result
