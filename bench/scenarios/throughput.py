"""Scenario 1, throughput, with both baselines in the same run.

Each consumer (1 worker, 2 workers, baseline a, baseline b) gets its own input
topic and group. It is started and waited for until its partitions are
assigned, then ``throughput_events`` events (~1 KB, round-robin over the
appservices) are produced as fast as possible, and the sustained rate is taken
between the arrival of the 10 % and the 90 % event at the sinks (baseline b:
in its agent), leaving out start-up and stragglers. In quick mode the
consumers start at once and are then measured one after the other.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import procs
from bench.baselines import faust_result
from bench.progress import Progress
from bench.results import ScenarioResult, Target
from bench.rig import Rig
from bench.scenarios.common import (
    Context,
    CpuMeter,
    Sizes,
    finish_profile,
    in_turns,
    names,
    start_baseline_a,
    start_profile,
    wait_ready_line,
)
from bench.stats import median, overall_rate, steady_rate

TARGET_EVENTS_S = 10_000.0
TARGET_VS_FAUST = 0.8


@dataclass
class Run:
    rate: float | None
    overall: float | None = None
    delivered: int = 0
    events_per_txn: float | None = None
    cpu_cores: float | None = None  # per consumer process, mean
    sink_cpu_cores: float | None = None
    peak_rss_mb: float | None = None


def _timeout_s(ctx: Context, count: int) -> float:
    return ctx.patience(60.0 + count / 1000)


def _stall_s(ctx: Context) -> float:
    """Give up after this long without a new event."""
    return 10.0 if ctx.quick else 30.0


def _sink_rates(rig: Rig, count: int, produce_start_ns: int) -> tuple[float | None, float | None, float | None]:
    arrivals = rig.sinks.events()["arrival"]
    requests = rig.sinks.requests()
    ok_txns = sum(1 for status in requests["status"] if status == 200)
    per_txn = len(arrivals) / ok_txns if ok_txns else None
    overall = overall_rate(len(arrivals), produce_start_ns, max(arrivals)) if arrivals else None
    return steady_rate(arrivals), overall, per_txn


def worker_run(ctx: Context, sizes: Sizes, workers: int, label: str, result: ScenarioResult) -> Run:
    with ctx.rig(label) as rig:
        appservices = rig.start_sinks(names("as", sizes.appservices))
        started = rig.start_workers(workers)
        generator = rig.generator(linger_ms=5)
        ctx.turn()
        profiler = start_profile(ctx, started[0].pid, label) if label.endswith("w1-r0") else None
        meter = CpuMeter([w.pid for w in started] + [rig.sinks.pid()])
        generator.bulk(appservices, sizes.throughput_events)
        delivered = rig.wait_delivered(
            sizes.throughput_events,
            _timeout_s(ctx, sizes.throughput_events),
            f"{workers} worker(s)",
            stall_s=_stall_s(ctx),
        )
        cores = meter.stop()
        finish_profile(result, profiler, "throughput, 1 worker")
        rate, overall, per_txn = _sink_rates(rig, sizes.throughput_events, generator.stats.started_ns)
        peaks = [w.peak_rss_mb() or 0.0 for w in started]
        return Run(rate, overall, delivered, per_txn, sum(cores[:-1]) / workers, cores[-1], max(peaks))


def confluent_run(ctx: Context, sizes: Sizes, label: str) -> Run:
    with ctx.rig(label) as rig:
        appservices = rig.start_sinks(names("as", sizes.appservices))
        pid = start_baseline_a(ctx, rig)
        generator = rig.generator(linger_ms=5)
        ctx.turn()
        meter = CpuMeter([pid, rig.sinks.pid()])
        generator.bulk(appservices, sizes.throughput_events)
        delivered = rig.wait_delivered(
            sizes.throughput_events, _timeout_s(ctx, sizes.throughput_events), "baseline (a)", stall_s=_stall_s(ctx)
        )
        cores = meter.stop()
        rate, overall, per_txn = _sink_rates(rig, sizes.throughput_events, generator.stats.started_ns)
        return Run(rate, overall, delivered, per_txn, cores[0], cores[1], procs.peak_rss_mb(pid))


def faust_run(ctx: Context, sizes: Sizes, label: str) -> Run:
    count = sizes.throughput_events
    with ctx.rig(label) as rig:
        appservices = names("as", sizes.appservices)
        from agents.topics import ensure_topic

        ensure_topic(ctx.bootstrap, rig.input_topic, 8)
        result_path = rig.root / "faust.json"
        args = ["-m", "bench.baselines", "faust", "--bootstrap", ctx.bootstrap, "--topic", rig.input_topic]
        args += ["--app-id", rig.app_id, "--expect", str(count), "--result", str(result_path)]
        args += ["--data-dir", str(rig.root / "faust-data")]  # not the current directory: close removes it
        process = procs.spawn(args, log_path=rig.root / "baseline.log")
        rig.others.append(process)
        wait_ready_line(ctx, rig, "baseline.log")
        generator = rig.generator(linger_ms=5)
        ctx.turn()
        meter = CpuMeter([process.pid])
        generator.bulk(appservices, count)
        progress = Progress(f"{label}: baseline (b)", count, "ev")
        start = last_change = time.monotonic()
        doc = faust_result(result_path)
        last = doc["count"]
        while doc["count"] < count and process.poll() is None:
            progress.update(doc["count"])
            now = time.monotonic()
            if doc["count"] != last:
                last, last_change = doc["count"], now
            if now - start > _timeout_s(ctx, count) or now - last_change > _stall_s(ctx):
                break
            time.sleep(0.2)
            doc = faust_result(result_path)
        progress.update(doc["count"])
        progress.close("" if doc["count"] >= count else f"gave up with {count - doc['count']} missing")
        cores = meter.stop()
        marks = doc["marks"]
        step = max(1, count // 10)
        rate = None
        if step in marks and 9 * step in marks and marks[9 * step] > marks[step]:
            rate = 8 * step * 1e9 / (marks[9 * step] - marks[step])
        overall = overall_rate(doc["count"], generator.stats.started_ns, max(marks.values())) if marks else None
        return Run(rate, overall, doc["count"], None, cores[0], None, procs.peak_rss_mb(process.pid))


def _median(runs: list[Run], attribute: str) -> float | None:
    values = [getattr(r, attribute) for r in runs if getattr(r, attribute) is not None]
    return median(values) if values else None


def run(ctx: Context, sizes: Sizes) -> ScenarioResult:
    result = ScenarioResult("throughput")
    result.config = {
        "appservices": sizes.appservices,
        "events": sizes.throughput_events,
        "event_bytes": 1024,
        "workers": list(sizes.workers),
        "repeat": sizes.repeat,
        "partitions": 8,
        "rate_window": "10th to 90th percentile of arrivals",
    }
    faust: list[Run] = []
    confluent: list[Run] = []
    by_workers: dict[int, list[Run]] = {w: [] for w in sizes.workers}
    tasks: list[tuple[list[Run], Callable[[Context], Run]]] = []
    for r in range(sizes.repeat):
        tasks.append((faust, functools.partial(faust_run, sizes=sizes, label=f"tp-faust-r{r}")))
        tasks.append((confluent, functools.partial(confluent_run, sizes=sizes, label=f"tp-confluent-r{r}")))
        for workers in sizes.workers:
            label = f"tp-w{workers}-r{r}"
            task = functools.partial(worker_run, sizes=sizes, workers=workers, label=label, result=result)
            tasks.append((by_workers[workers], task))
    for (runs, _), run_ in zip(tasks, in_turns(ctx, [task for _, task in tasks]), strict=True):
        runs.append(run_)
    note = f"median of {sizes.repeat}" if sizes.repeat > 1 else ""
    base_b = _median(faust, "rate")
    base_a = _median(confluent, "rate")
    result.add("baseline (b) bare Faust agent, iterate only", base_b, "events/s", note=note)
    result.add("baseline (a) bare confluent-kafka, 100/PUT", base_a, "events/s", note=note)
    result.add("baseline (a) CPU", _median(confluent, "cpu_cores"), "cores")
    result.add("baseline (b) CPU", _median(faust, "cpu_cores"), "cores")
    for workers, runs in by_workers.items():
        rate = _median(runs, "rate")
        delivered = min(r.delivered for r in runs)
        tag = f"{workers} worker" + ("s" if workers > 1 else "")
        if workers == 1:
            result.add(f"{tag}: delivered+acked", rate, "events/s", Target(TARGET_EVENTS_S, ">="), note)
            ratio = None if rate is None or not base_b else rate / base_b
            result.add(f"{tag} / baseline (b)", ratio, "x", Target(TARGET_VS_FAUST, ">=", "baseline b"))
            result.add(f"{tag} / baseline (a)", None if rate is None or not base_a else rate / base_a, "x")
        else:
            result.add(f"{tag}: delivered+acked, total", rate, "events/s", note=note)
            result.add(f"{tag}: per worker", None if rate is None else rate / workers, "events/s")
        result.add(f"{tag}: rate from first produce", _median(runs, "overall"), "events/s")
        result.add(f"{tag}: events delivered", delivered, "events", note=f"of {sizes.throughput_events}")
        result.add(f"{tag}: events per txn", _median(runs, "events_per_txn"), "events")
        result.add(f"{tag}: worker CPU (each)", _median(runs, "cpu_cores"), "cores")
        result.add(f"{tag}: sink process CPU", _median(runs, "sink_cpu_cores"), "cores")
        result.add(f"{tag}: worker peak RSS", _median(runs, "peak_rss_mb"), "MB")
    result.series["throughput"] = {
        "runs": [float(len(faust))],
        "baseline_b": [r.rate or 0.0 for r in faust],
        "baseline_a": [r.rate or 0.0 for r in confluent],
        **{f"workers_{w}": [r.rate or 0.0 for r in runs] for w, runs in by_workers.items()},
    }
    return result
