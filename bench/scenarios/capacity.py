"""Scenario capacity: the highest offered rate at which one worker holds the latency targets, and its CPU per txn.

One worker and one set of sinks; the load generator offers each rate of
``capacity_rates`` in turn, lowest first, for ``capacity_step_s`` and waits
until that step's events are delivered before the next. Per step: p50 and p99
(the step's first ``capacity_warmup_s`` left out: the rate just changed),
events per txn, and the worker's process CPU time (every thread, over the step
and its drain) per delivered txn and per delivered event. CPU per txn moves
less with a shared machine's noise than latency does, so it is the figure to
compare between trees; the rate is the one that answers "how many per worker".

The search stops at the first rate missing p50 ≤ 10 ms or p99 ≤ 50 ms (a
higher one only queues more), so a full run takes at most the rates' steps
plus their drains. The figure is the last rate that held; none held → 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.broker import broker_pid
from bench.load import LoadGenerator
from bench.progress import Progress
from bench.results import ScenarioResult, Target
from bench.rig import Rig
from bench.scenarios.common import Context, CpuMeter, Sizes, ThreadMeter, cpu_us_per, names
from bench.scenarios.common import samples as to_samples
from bench.scenarios.latency import TARGET_P50_MS, TARGET_P99_MS
from bench.stats import Summary, summarize

TARGET_RATE = 1000.0  # events/s one worker should carry within the latency targets (issue #12)


@dataclass(frozen=True)
class Step:
    rate: float
    summary: Summary | None
    offered: int
    delivered: int
    txns: int
    events_in_txns: int
    worker_cpu_s: float
    worker_cpu_s_by_thread: dict[str, float]
    worker_cores: float
    broker_cores: float | None

    @property
    def held(self) -> bool:
        s = self.summary
        return s is not None and self.delivered >= self.offered and s.p50 <= TARGET_P50_MS and s.p99 <= TARGET_P99_MS


def run(ctx: Context, sizes: Sizes) -> ScenarioResult:
    result = ScenarioResult(
        "capacity",
        config={
            "appservices": sizes.appservices,
            "rates_per_s": list(sizes.capacity_rates),
            "step_s": sizes.capacity_step_s,
            "warmup_s": sizes.capacity_warmup_s,
            "stops_at": f"the first rate missing p50 ≤ {TARGET_P50_MS:g} ms or p99 ≤ {TARGET_P99_MS:g} ms",
        },
    )
    steps: list[Step] = []
    with ctx.rig("capacity") as rig:
        appservices = rig.start_sinks(names("as", sizes.appservices))
        worker = rig.start_workers(1)[0]
        generator = rig.generator(linger_ms=1)
        ctx.turn()
        broker = broker_pid(ctx.bootstrap)
        for rate in sizes.capacity_rates:
            steps.append(_step(ctx, rig, generator, appservices, worker.pid, broker, rate, sizes))
            if not steps[-1].held:
                break
    result.add(
        f"max rate holding p50 ≤ {TARGET_P50_MS:g} ms and p99 ≤ {TARGET_P99_MS:g} ms, 1 worker",
        max((s.rate for s in steps if s.held), default=0.0),
        "events/s",
        Target(TARGET_RATE, ">="),
        note=f"rates tried: {', '.join(f'{s.rate:,.0f}' for s in steps)}",
    )
    for step in steps:
        _add_step(result, step)
    return result


def _step(
    ctx: Context,
    rig: Rig,
    generator: LoadGenerator,
    appservices: list[str],
    worker_pid: int,
    broker: int | None,
    rate: float,
    sizes: Sizes,
) -> Step:
    """Offer ``rate`` for one step, wait for its events, and measure it."""
    first_seq = generator.stats.produced  # seqs count up from 0, one per event sent
    txns0, events0 = _delivered_txns(rig)
    progress = Progress(f"capacity: offering {rate:,.0f}/s", max(1, int(rate * sizes.capacity_step_s)), "ev")
    meter = CpuMeter([worker_pid] + ([broker] if broker is not None else []))
    by_thread = ThreadMeter(worker_pid)
    generator.stats.started_ns = 0  # each step's times count from its own start
    generator.paced(appservices, rate, sizes.capacity_step_s, progress=progress.update)
    progress.close()
    produced = generator.stats.produced
    rig.wait_delivered(produced, ctx.patience(60.0 + sizes.capacity_step_s), f"{rate:,.0f}/s drain", stall_s=10.0)
    cores = meter.stop()
    threads = by_thread.stop()
    txns1, events1 = _delivered_txns(rig)
    got = to_samples(rig.sinks.events(), generator.stats.started_ns)
    rows = [(t, ms) for t, ms, seq in zip(got.t_s, got.latency_ms, got.seq, strict=True) if seq >= first_seq]
    return Step(
        rate=rate,
        summary=summarize([ms for t, ms in rows if t >= sizes.capacity_warmup_s]),
        offered=produced - first_seq,
        delivered=len(rows),
        txns=txns1 - txns0,
        events_in_txns=events1 - events0,
        worker_cpu_s=meter.seconds[0],
        worker_cpu_s_by_thread=threads,
        worker_cores=cores[0],
        broker_cores=cores[1] if broker is not None else None,
    )


def _delivered_txns(rig: Rig) -> tuple[int, int]:
    """Txns the sinks answered 200 so far, and the events in them."""
    requests = rig.sinks.requests()
    ok = [n for n, status in zip(requests["events"], requests["status"], strict=True) if status == 200]
    return len(ok), sum(ok)


def _add_step(result: ScenarioResult, step: Step) -> None:
    at = f"at {step.rate:,.0f}/s"
    s = step.summary
    result.add(f"p50 {at}", None if s is None else s.p50, "ms", note="held" if step.held else "missed")
    result.add(f"p99 {at}", None if s is None else s.p99, "ms")
    result.add(f"worker CPU per delivered txn {at}", cpu_us_per(step.worker_cpu_s, step.txns), "µs")
    result.add(f"worker CPU per delivered event {at}", cpu_us_per(step.worker_cpu_s, step.events_in_txns), "µs")
    for group, used in step.worker_cpu_s_by_thread.items():
        result.add(f"worker CPU per delivered txn {at}: {group}", cpu_us_per(used, step.txns), "µs")
    result.add(f"events per txn {at}", step.events_in_txns / step.txns if step.txns else None, "events")
    result.add(f"worker CPU {at}", step.worker_cores, "cores")
    result.add(f"broker CPU {at}", step.broker_cores, "cores")
    if step.delivered < step.offered:
        result.add(f"missing {at}", step.offered - step.delivered, "events")


__all__ = ["TARGET_RATE", "Step", "run"]
