"""Scenarios 2 (latency at a fixed offered rate) and 4 (isolation: the same with one appservice hung).

The load generator offers ``rate`` events/s round-robin over the appservices
for ``duration_s`` (open loop), each stamped with its produce time; latency is
the sink's arrival time minus that stamp. The first ``warmup_s`` seconds are
plotted but left out of the percentiles (first connections, first sessions).
In isolation, ``as0`` accepts requests and never answers; the others' latency
is compared with scenario 2's, in rounds that alternate hung and reference runs
(``isolation_rounds``, medians compared; see ``_isolation_point``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.broker import broker_pid
from bench.report import BASELINE_SERIES
from bench.results import ScenarioResult, Target
from bench.scenarios.common import (
    Context,
    CpuMeter,
    Sizes,
    ThreadMeter,
    after_warmup,
    bin_series,
    cpu_us_per,
    duplicates_and_missing,
    finish_profile,
    names,
    start_baseline_a,
    start_profile,
)
from bench.scenarios.common import samples as to_samples
from bench.stats import Summary, median, summarize

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
    broker_cores: float | None = None
    changelog_per_txn: float | None = None
    inbox_per_txn: float | None = None
    # The worker's process CPU time (all its threads) over the run and its drain, per delivered txn / event.
    cpu_us_per_txn: float | None = None
    cpu_us_per_event: float | None = None
    cpu_us_per_txn_by_thread: dict[str, float | None] = dataclasses.field(default_factory=dict)


def measure(
    ctx: Context,
    sizes: Sizes,
    label: str,
    hung: str | None = None,
    result: ScenarioResult | None = None,
    baseline: bool = False,
) -> Measured:
    """One run at ``sizes.rate``: through one worker, or through baseline (a) if ``baseline``."""
    with ctx.rig(label) as rig:
        appservices = rig.start_sinks(names("as", sizes.appservices), {hung: "hang"} if hung else None)
        measured = [a for a in appservices if a != hung]
        worker = None if baseline else rig.start_workers(1)[0]
        pid = start_baseline_a(ctx, rig) if worker is None else worker.pid
        generator = rig.generator(linger_ms=1)
        ctx.turn()
        from bench.progress import Progress

        offered_total = max(1, int(sizes.rate * sizes.duration_s))
        progress = Progress(f"{label}: offering {sizes.rate:,.0f}/s", offered_total, "ev")
        profiler = start_profile(ctx, pid, label) if result is not None else None
        broker = broker_pid(ctx.bootstrap)
        # The broker shares the machine's two cores: its CPU is part of each request's cost.
        meter = CpuMeter([pid, rig.sinks.pid()] + ([broker] if broker is not None else []))
        by_thread = ThreadMeter(pid)
        generator.paced(appservices, sizes.rate, sizes.duration_s, progress=progress.update)
        progress.close()
        if result is not None:
            finish_profile(result, profiler, f"latency at {sizes.rate:,.0f}/s")
        offered = sum(generator.stats.per_appservice.get(a, 0) for a in measured)
        delivered = rig.wait_delivered(
            offered, ctx.patience(60.0 + sizes.duration_s), "last deliveries", names=measured, stall_s=10.0
        )
        cores = meter.stop()
        threads = by_thread.stop()
        start_ns = generator.stats.started_ns
        elapsed = (generator.stats.finished_ns - start_ns) / 1e9
        events = rig.sinks.events()
        got = to_samples(events, start_ns, measured)
        duplicates, missing = duplicates_and_missing(got.seq, offered)
        requests = rig.sinks.requests()
        table = requests["names"]
        ok = sum(1 for s, i in zip(requests["status"], requests["as"], strict=True) if s == 200 and table[i] != hung)
        txns = sum(1 for status in requests["status"] if status == 200)
        in_txns = sum(n for n, status in zip(requests["events"], requests["status"], strict=True) if status == 200)
        # Records written per delivered txn: what the worker's CPU per txn is mostly spent on.
        changelog = inbox = None
        if worker is not None and txns:
            changelog = rig.lag.high(rig.changelog_topic(worker)) / txns
            inbox = rig.lag.high(rig.inbox_topic(worker)) / txns
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
            broker_cores=cores[2] if broker is not None else None,
            changelog_per_txn=changelog,
            inbox_per_txn=inbox,
            cpu_us_per_txn=cpu_us_per(meter.seconds[0], txns),
            cpu_us_per_event=cpu_us_per(meter.seconds[0], in_txns),
            cpu_us_per_txn_by_thread={group: cpu_us_per(used, txns) for group, used in threads.items()},
        )


def _config(sizes: Sizes) -> dict[str, object]:
    return {
        "appservices": sizes.appservices,
        "rate_per_s": sizes.rate,
        "duration_s": sizes.duration_s,
        "warmup_s": sizes.warmup_s,
        "producer_linger_ms": 1,
    }


def _add_common(result: ScenarioResult, m: Measured, note: str = "") -> None:
    s = m.summary
    result.add("max", None if s is None else s.max, "ms", note=note)
    result.add("mean", None if s is None else s.mean, "ms")
    result.add("samples (after warm-up)", None if s is None else s.count, "events")
    result.add("offered rate achieved", m.achieved_rate, "events/s")
    result.add("delivered / offered", m.delivered / m.offered if m.offered else None, "x")
    result.add("missing events", m.missing, "events")
    result.add("duplicate events", m.duplicates, "events")
    result.add("events per txn", m.events_per_txn, "events")
    result.add("worker CPU", m.worker_cores, "cores")
    result.add("worker CPU per delivered txn", m.cpu_us_per_txn, "µs", note="process CPU time ÷ txns answered 200")
    result.add("worker CPU per delivered event", m.cpu_us_per_event, "µs")
    for group, us in m.cpu_us_per_txn_by_thread.items():
        result.add(f"worker CPU per delivered txn: {group}", us, "µs")
    result.add("sink process CPU", m.sink_cores, "cores")
    result.add("broker CPU", m.broker_cores, "cores")
    result.add("changelog records per txn", m.changelog_per_txn, "records")
    result.add("inbox records per txn", m.inbox_per_txn, "records")


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
    _add_baseline(ctx, sizes, result, m, "latency")
    if sizes.low_rate:
        low = measure(ctx, _low(sizes), "latency-low")
        at_low = f"at {sizes.low_rate:,.0f}/s"
        result.add(f"p50 {at_low}", None if low.summary is None else low.summary.p50, "ms", note="below capacity")
        result.add(f"p99 {at_low}", None if low.summary is None else low.summary.p99, "ms")
        result.add(f"max {at_low}", None if low.summary is None else low.summary.max, "ms")
        result.add(f"events per txn {at_low}", low.events_per_txn, "events")
        result.add(f"worker CPU {at_low}", low.worker_cores, "cores")
        result.add(f"worker CPU per delivered txn {at_low}", low.cpu_us_per_txn, "µs")
        result.add(f"worker CPU per delivered event {at_low}", low.cpu_us_per_event, "µs")
        result.add(f"broker CPU {at_low}", low.broker_cores, "cores")
        result.series[f"latency {at_low}"] = low.series
        _add_baseline(ctx, _low(sizes), result, low, f"latency {at_low}")
    return result


def _add_baseline(ctx: Context, sizes: Sizes, result: ScenarioResult, worker: Measured, panel: str) -> None:
    """Baseline (a) at the same rate: the latency this job has in Python here without state or Faust.

    It sends each appservice's queued events as soon as its previous PUT
    returned, as the worker does, but stores nothing and commits
    automatically, so a crash loses or repeats events: the floor under the
    worker's figure, not a rival to it.
    """
    at = f"at {sizes.rate:,.0f}/s"
    base = measure(ctx, sizes, f"latency-baseline-{sizes.rate:.0f}", baseline=True)
    b = base.summary
    result.add(f"baseline (a) p50 {at}", None if b is None else b.p50, "ms", note="bare confluent-kafka, no state")
    result.add(f"baseline (a) p99 {at}", None if b is None else b.p99, "ms")
    result.add(f"baseline (a) events per txn {at}", base.events_per_txn, "events")
    result.add(f"baseline (a) CPU {at}", base.worker_cores, "cores")
    result.add(f"baseline (a) CPU per delivered txn {at}", base.cpu_us_per_txn, "µs")
    result.add(f"baseline (a) broker CPU {at}", base.broker_cores, "cores")
    w = worker.summary
    ratio = None if b is None or w is None or not b.p50 else w.p50 / b.p50
    result.add(f"worker p50 / baseline (a) p50 {at}", ratio, "x")
    result.series[f"{panel} {BASELINE_SERIES}"] = base.series


def _isolation_point(ctx: Context, sizes: Sizes, result: ScenarioResult, label: str, rounds: int = 1) -> Measured:
    """Hung runs and reference runs, alternating, ``rounds`` of each; their medians compared.

    The two p99s come from separate runs at the worker's saturation point and
    each moves a lot between runs on a shared machine, so one of each gives
    a ratio far either side of 1 (docs/decisions/bench-isolation-rounds.md). Alternating spreads
    the machine's drift over both sides. Scenario latency's run of this
    invocation, if any, is the first reference. ``max``, ``mean`` and the
    other rows of ``_add_common`` are the first hung run's.
    """
    at = f"at {sizes.rate:,.0f}/s"
    hung: list[Measured] = []
    ref_p50s: list[float] = []
    ref_p99s: list[float] = []
    reference = None
    for round_ in range(rounds):
        hung.append(measure(ctx, sizes, label if round_ == 0 else f"{label}{round_ + 1}", hung="as0"))
        if round_ == 0:
            # Only after a measurement, when this task's turn came: in quick mode
            # its set-up ran alongside scenario latency's, before its figures existed.
            reference = ctx.results.get("latency")
            if reference is not None:
                p99 = reference.value(f"p99 produce→appservice {at}") or reference.value(f"p99 {at}")
                p50 = reference.value(f"p50 produce→appservice {at}") or reference.value(f"p50 {at}")
                if p99 is not None and p50 is not None:
                    ref_p50s.append(p50)
                    ref_p99s.append(p99)
        if len(ref_p99s) <= round_:
            ref = measure(ctx, sizes, f"{label}-reference{round_ + 1}")
            if ref.summary is not None:
                ref_p50s.append(ref.summary.p50)
                ref_p99s.append(ref.summary.p99)
    result.config[f"reference {at}"] = f"{len(ref_p99s)} runs without a hung appservice" + (
        ", the first scenario latency's of this invocation" if reference is not None else ""
    )
    p50s = [m.summary.p50 for m in hung if m.summary is not None]
    p99s = [m.summary.p99 for m in hung if m.summary is not None]
    p99 = median(p99s) if p99s else None
    ref_p99 = median(ref_p99s) if ref_p99s else None
    of = f" (median of {len(p99s)})" if len(p99s) > 1 else ""
    result.add(f"others' p50 {at}{of}", median(p50s) if p50s else None, "ms")
    result.add(f"others' p99 {at}{of}", p99, "ms", note=" ".join(f"{v:.0f}" for v in p99s) if of else "")
    ratio = None if p99 is None or not ref_p99 else p99 / ref_p99
    result.add(f"others' p99 / latency p99 {at}", ratio, "x", Target(TARGET_ISOLATION, "<=", f"latency {at}"))
    ref_of = f" (median of {len(ref_p99s)})" if len(ref_p99s) > 1 else ""
    result.add(f"reference p50 {at}{ref_of}", median(ref_p50s) if ref_p50s else None, "ms")
    result.add(
        f"reference p99 {at}{ref_of}", ref_p99, "ms", note=" ".join(f"{v:.0f}" for v in ref_p99s) if ref_of else ""
    )
    return hung[0]


def run_isolation(ctx: Context, sizes: Sizes) -> ScenarioResult:
    result = ScenarioResult("isolation", config={**_config(sizes), "hung_appservice": "as0"})
    m = _isolation_point(ctx, sizes, result, "isolation", rounds=max(1, sizes.isolation_rounds))
    _add_common(result, m, "first hung run" if sizes.isolation_rounds > 1 else "")
    result.series["isolation"] = m.series
    if sizes.low_rate:
        low = _isolation_point(ctx, _low(sizes), result, "isolation-low")
        result.series[f"isolation at {sizes.low_rate:,.0f}/s"] = low.series
    return result
