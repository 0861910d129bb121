"""Scenarios 2 (latency at a fixed offered rate) and 4 (isolation: the same with one appservice hung).

The load generator offers ``rate`` events/s round-robin over the appservices
for ``duration_s`` (open loop), each stamped with its produce time; latency is
the sink's arrival time minus that stamp. The first ``warmup_s`` seconds are
plotted but left out of the percentiles (first connections, first sessions).
In isolation, ``as0`` accepts requests and never answers; the others' latency
is compared with scenario 2's (measured again as a reference if scenario 2 is
not part of this run).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.results import ScenarioResult, Target
from bench.scenarios.common import (
    Context,
    CpuMeter,
    Sizes,
    after_warmup,
    bin_series,
    duplicates_and_missing,
    finish_profile,
    names,
    start_profile,
)
from bench.scenarios.common import samples as to_samples
from bench.stats import Summary, summarize

TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
TARGET_ISOLATION = 1.10


@dataclass
class Measured:
    summary: Summary | None
    series: dict[str, list[float]]
    offered: int
    delivered: int
    duplicates: int
    missing: int
    achieved_rate: float | None
    events_per_txn: float | None
    worker_cores: float
    sink_cores: float


def measure(
    ctx: Context, sizes: Sizes, label: str, hung: str | None = None, result: ScenarioResult | None = None
) -> Measured:
    with ctx.rig(label) as rig:
        appservices = rig.start_sinks(names("as", sizes.appservices), {hung: "hang"} if hung else None)
        measured = [a for a in appservices if a != hung]
        (worker,) = rig.start_workers(1)
        generator = rig.generator(linger_ms=1)
        ctx.turn()
        from bench.progress import Progress

        offered_total = max(1, int(sizes.rate * sizes.duration_s))
        progress = Progress(f"{label}: offering {sizes.rate:,.0f}/s", offered_total, "ev")
        profiler = start_profile(ctx, worker.pid, label) if result is not None else None
        meter = CpuMeter([worker.pid, rig.sinks.pid()])
        generator.paced(appservices, sizes.rate, sizes.duration_s, progress=progress.update)
        progress.close()
        if result is not None:
            finish_profile(result, profiler, f"latency at {sizes.rate:,.0f}/s")
        offered = sum(generator.stats.per_appservice.get(a, 0) for a in measured)
        delivered = rig.wait_delivered(
            offered, ctx.patience(60.0 + sizes.duration_s), "last deliveries", names=measured, stall_s=10.0
        )
        cores = meter.stop()
        start_ns = generator.stats.started_ns
        elapsed = (generator.stats.finished_ns - start_ns) / 1e9
        events = rig.sinks.events()
        got = to_samples(events, start_ns, measured)
        duplicates, missing = duplicates_and_missing(got.seq, offered)
        requests = rig.sinks.requests()
        table = requests["names"]
        ok = sum(1 for s, i in zip(requests["status"], requests["as"], strict=True) if s == 200 and table[i] != hung)
        return Measured(
            summary=summarize(after_warmup(got, sizes.warmup_s)),
            series=bin_series(got),
            offered=offered,
            delivered=delivered,
            duplicates=duplicates,
            missing=missing,
            achieved_rate=generator.stats.produced / elapsed if elapsed > 0 else None,
            events_per_txn=len(got.seq) / ok if ok else None,
            worker_cores=cores[0],
            sink_cores=cores[1],
        )


def _config(sizes: Sizes) -> dict[str, object]:
    return {
        "appservices": sizes.appservices,
        "rate_per_s": sizes.rate,
        "duration_s": sizes.duration_s,
        "warmup_s": sizes.warmup_s,
        "producer_linger_ms": 1,
    }


def _add_common(result: ScenarioResult, m: Measured) -> None:
    s = m.summary
    result.add("max", None if s is None else s.max, "ms")
    result.add("mean", None if s is None else s.mean, "ms")
    result.add("samples (after warm-up)", None if s is None else s.count, "events")
    result.add("offered rate achieved", m.achieved_rate, "events/s")
    result.add("delivered / offered", m.delivered / m.offered if m.offered else None, "x")
    result.add("missing events", m.missing, "events")
    result.add("duplicate events", m.duplicates, "events")
    result.add("events per txn", m.events_per_txn, "events")
    result.add("worker CPU", m.worker_cores, "cores")
    result.add("sink process CPU", m.sink_cores, "cores")


def _low(sizes: Sizes) -> Sizes:
    return dataclasses.replace(sizes, rate=sizes.low_rate)


def run(ctx: Context, sizes: Sizes) -> ScenarioResult:
    result = ScenarioResult("latency", config=_config(sizes))
    m = measure(ctx, sizes, "latency", result=result)
    s = m.summary
    at = f"at {sizes.rate:,.0f}/s"
    result.add(f"p50 produce→appservice {at}", None if s is None else s.p50, "ms", Target(TARGET_P50_MS, "<="))
    result.add(f"p99 produce→appservice {at}", None if s is None else s.p99, "ms", Target(TARGET_P99_MS, "<="))
    _add_common(result, m)
    result.series["latency"] = m.series
    if sizes.low_rate:
        low = measure(ctx, _low(sizes), "latency-low")
        at_low = f"at {sizes.low_rate:,.0f}/s"
        result.add(f"p50 {at_low}", None if low.summary is None else low.summary.p50, "ms", note="below capacity")
        result.add(f"p99 {at_low}", None if low.summary is None else low.summary.p99, "ms")
        result.add(f"max {at_low}", None if low.summary is None else low.summary.max, "ms")
        result.add(f"events per txn {at_low}", low.events_per_txn, "events")
        result.add(f"worker CPU {at_low}", low.worker_cores, "cores")
        result.series[f"latency {at_low}"] = low.series
    return result


def _p(m: Measured, q: str) -> float | None:
    return None if m.summary is None else float(getattr(m.summary, q))


def _isolation_point(ctx: Context, sizes: Sizes, result: ScenarioResult, label: str) -> Measured:
    at = f"at {sizes.rate:,.0f}/s"
    m = measure(ctx, sizes, label, hung="as0")
    # Only now: in quick mode this scenario's set-up ran alongside scenario latency.
    reference = ctx.results.get("latency")
    ref_p50 = ref_p99 = None
    if reference is not None:
        ref_p99 = reference.value(f"p99 produce→appservice {at}") or reference.value(f"p99 {at}")
        ref_p50 = reference.value(f"p50 produce→appservice {at}") or reference.value(f"p50 {at}")
    if ref_p99 is None:
        ref = measure(ctx, sizes, f"{label}-reference")
        ref_p50, ref_p99 = _p(ref, "p50"), _p(ref, "p99")
        result.config[f"reference {at}"] = "own run without a hung appservice"
    else:
        result.config[f"reference {at}"] = "scenario latency of this run"
    p99 = _p(m, "p99")
    result.add(f"others' p50 {at}", _p(m, "p50"), "ms")
    result.add(f"others' p99 {at}", p99, "ms")
    ratio = None if p99 is None or not ref_p99 else p99 / ref_p99
    result.add(f"others' p99 / latency p99 {at}", ratio, "x", Target(TARGET_ISOLATION, "<=", f"latency {at}"))
    result.add(f"reference p50 {at}", ref_p50, "ms")
    result.add(f"reference p99 {at}", ref_p99, "ms")
    return m


def run_isolation(ctx: Context, sizes: Sizes) -> ScenarioResult:
    result = ScenarioResult("isolation", config={**_config(sizes), "hung_appservice": "as0"})
    m = _isolation_point(ctx, sizes, result, "isolation")
    _add_common(result, m)
    result.series["isolation"] = m.series
    if sizes.low_rate:
        low = _isolation_point(ctx, _low(sizes), result, "isolation-low")
        result.series[f"isolation at {sizes.low_rate:,.0f}/s"] = low.series
    return result
