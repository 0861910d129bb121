"""``python -m bench`` / ``appservice-streams bench``: run the scenarios, print the table, write JSON and a PNG.

Exit status: 0 when every selected scenario produced figures, 1 when one
failed or produced none, 2 for bad arguments, 130 on Ctrl-C. Targets are
reported (pass/miss) and never change the exit status; with ``--quick`` they
are not judged at all (status ``n/a (quick)``): tiny sizes cannot meet them
or miss them meaningfully. ``--quick`` also lets the scenarios set up (sinks,
topics, workers) at the same time; they still measure one after the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from agents.topics import delete_prefixed
from bench import broker, procs, report
from bench.progress import say
from bench.results import ScenarioResult
from bench.scenarios import OPT_IN, QUICK, SCENARIOS, Context, Sizes
from bench.scenarios.common import Turns


def build_parser() -> argparse.ArgumentParser:
    d = Sizes()
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every scenario yields figures")
    parser.add_argument("--out", default="bench-results", help="folder for the JSON and PNG (default bench-results/)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help=f"run only these (repeatable; default all but {', '.join(sorted(OPT_IN))})",
    )
    parser.add_argument("--bootstrap-servers", default=broker.BOOTSTRAP)
    parser.add_argument("--keep", action="store_true", help="keep temp folders (worker logs, RocksDB) for debugging")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="bench-results/profile",
        help="sample the worker with py-spy in throughput (1 worker) and latency; folder (default %(const)s)",
    )
    parser.add_argument(
        "--source",
        default=str(procs.ROOT),
        help="tree whose agents/ and streams/ the workers run, e.g. a `git archive` of a commit (default: this one)",
    )
    size = parser.add_argument_group("sizes (defaults for a full run; --quick shrinks those not given)")
    size.add_argument("--appservices", type=int, help=f"appservices with healthy sinks (default {d.appservices})")
    size.add_argument("--events", type=int, help=f"throughput: events per run (default {d.throughput_events:,})")
    size.add_argument("--workers", type=int, nargs="+", help="throughput: worker counts (default 1 2)")
    size.add_argument("--repeat", type=int, help="throughput: runs per consumer, medians reported (default 1)")
    size.add_argument("--rate", type=float, help=f"latency/isolation: offered events/s (default {d.rate:,.0f})")
    size.add_argument(
        "--low-rate",
        type=float,
        help=f"latency/isolation: a second point below capacity, 0 = off (default {d.low_rate:g})",
    )
    size.add_argument("--duration", type=float, help=f"latency/isolation: seconds of load (default {d.duration_s:g})")
    size.add_argument("--warmup", type=float, help=f"latency/isolation: seconds left out (default {d.warmup_s:g})")
    size.add_argument(
        "--isolation-rounds",
        type=int,
        help=f"isolation: hung runs, alternating with reference runs, medians compared (default {d.isolation_rounds})",
    )
    size.add_argument(
        "--capacity-rates",
        type=float,
        nargs="+",
        help=f"capacity: rates offered in turn, stopping at the first that misses (default {d.capacity_rates})",
    )
    size.add_argument(
        "--capacity-step", type=float, help=f"capacity: seconds of load per rate (default {d.capacity_step_s:g})"
    )
    size.add_argument("--catchup-events", type=int, help=f"catch-up: events parked (default {d.catchup_events:,})")
    size.add_argument(
        "--catchup-retry-unit-ms", type=int, help=f"catch-up: backoff unit (default {d.catchup_retry_unit_ms})"
    )
    size.add_argument("--recovery-events", type=int, help=f"recovery: events parked (default {d.recovery_events:,})")
    size.add_argument("--memory-events", type=int, help=f"memory: events parked at most (default {d.memory_events:,})")
    size.add_argument(
        "--synapse-outages",
        type=int,
        nargs="+",
        help=f"synapse: messages sent while the appservice is down, one outage each (default {d.synapse_outages})",
    )
    size.add_argument(
        "--synapse-live", type=float, help=f"synapse: seconds of live load (default {d.synapse_live_s:g})"
    )
    size.add_argument("--memory-steps", type=int, help=f"memory: measuring points (default {d.memory_steps})")
    return parser


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else Sizes()
    given = {
        "appservices": args.appservices,
        "throughput_events": args.events,
        "workers": tuple(args.workers) if args.workers else None,
        "repeat": args.repeat,
        "rate": args.rate,
        "low_rate": args.low_rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "isolation_rounds": args.isolation_rounds,
        "capacity_rates": tuple(args.capacity_rates) if args.capacity_rates else None,
        "capacity_step_s": args.capacity_step,
        "catchup_events": args.catchup_events,
        "catchup_retry_unit_ms": args.catchup_retry_unit_ms,
        "recovery_events": args.recovery_events,
        "memory_events": args.memory_events,
        "memory_steps": args.memory_steps,
        "synapse_outages": tuple(args.synapse_outages) if args.synapse_outages else None,
        "synapse_live_s": args.synapse_live,
    }
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_one(name: str, ctx: Context, sizes: Sizes, waited: Callable[[], float] = lambda: 0.0) -> ScenarioResult:
    start = time.monotonic()
    try:
        result = SCENARIOS[name](ctx, sizes)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        result = ScenarioResult(name, error=f"{type(exc).__name__}: {exc}")
        say(traceback.format_exc())
    result.duration_s = time.monotonic() - start - waited()  # its own time, not the wait for its turn
    if ctx.quick:
        result.without_verdicts("quick")
    ctx.results[name] = result
    say(f"   {name}: {result.duration_s:.1f} s, {len(result.figures)} figures" + (" (ERROR)" if result.error else ""))
    return result


def run_scenarios(names: Sequence[str], ctx: Context, sizes: Sizes) -> list[ScenarioResult]:
    """One after the other; in quick mode each in a thread, their set-ups overlapping (see ``Turns``)."""
    if not ctx.quick:
        results = []
        for name in names:
            say(f"== {name}")
            results.append(_run_one(name, ctx, sizes))
        return results
    turns = Turns(ctx, len(names), on_turn=lambda i: say(f"== {names[i]}"))

    def body(index: int) -> None:
        try:
            _run_one(names[index], turns.context(index), sizes, lambda: turns.waited[index])
        finally:
            turns.done(index)

    say(f"setting up {', '.join(names)} at once")
    threads = [threading.Thread(target=body, args=(i,), name=names[i], daemon=True) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [ctx.results[name] for name in names if name in ctx.results]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    sizes = sizes_from(args)
    names = [n for n in SCENARIOS if n in args.scenario] if args.scenario else [n for n in SCENARIOS if n not in OPT_IN]
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    ctx = Context(
        prefix=f"bench-{stamp.lower()}-{uuid.uuid4().hex[:4]}",
        bootstrap=args.bootstrap_servers,
        quick=args.quick,
        keep=args.keep,
        source=Path(args.source).resolve(),
        profile=Path(args.profile) if args.profile else None,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    results: list[ScenarioResult] = []
    interrupted = False
    t0 = time.monotonic()
    try:
        broker.ensure_running(args.bootstrap_servers)
        results = run_scenarios(names, ctx, sizes)
    except KeyboardInterrupt:
        interrupted = True
        results = list(ctx.results.values())
        say("interrupted: stopping every process the bench started")
    finally:
        procs.stop_all()
        try:
            deleted = delete_prefixed(args.bootstrap_servers, (ctx.prefix,))
            say(f"deleted {deleted} topics of this run ({ctx.prefix}*)")
        except Exception as exc:  # cleanup must not hide the results
            say(f"could not delete this run's topics: {exc}")
        signal.signal(signal.SIGTERM, previous)
    total_s = time.monotonic() - t0
    doc = report.document(
        results,
        started=started.isoformat(),
        machine=report.machine_info(broker.kafka_version()),
        argv=argv,
        quick=args.quick,
    )
    doc["sizes"] = dataclasses.asdict(sizes)
    doc["source"] = str(ctx.source)
    doc["total_s"] = round(total_s, 1)
    out = Path(args.out)
    json_path = out / f"bench-{stamp}.json"
    report.write_json(doc, json_path)
    png_path = out / f"bench-{stamp}.png"
    plotted = report.plot(results, png_path)
    print(report.format_table(results))
    for result in results:
        for label, profile in result.config.get("profile", {}).items():
            print(report.format_profile(label, profile))
    verdicts = f"{doc['summary']['pass']} pass, {doc['summary']['miss']} miss"
    if not doc["targets_judged"]:
        verdicts = "targets not judged (quick sizes)" if args.quick else verdicts + ", some targets not judged"
    print(f"\n{verdicts}, total {total_s:.0f} s")
    print(f"results: {json_path}" + (f"\nplot:    {png_path}" if plotted else ""))
    if interrupted:
        return 130
    failed = [r.name for r in results if r.error is not None or not any(f.value is not None for f in r.figures)]
    if failed or len(results) < len(names):
        say(f"scenarios without figures: {', '.join(failed) or 'not run'}")
        return 1
    return 0


__all__ = ["build_parser", "main"]
