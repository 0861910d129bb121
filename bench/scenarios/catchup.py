"""Scenario 3, catch-up: one appservice down while ``catchup_events`` pile up, then back.

The sink answers 503. One event finds the outage first (its txn fails and the
appservice goes DOWN), as live traffic would; then the ``catchup_events`` are
produced and the worker parks them (done when the worker's groups have no lag
left on the input and inbox topics). Then the sink answers 200 again.
Reported: the drain time from "sink back up" to the last event received,
split into the wait for the next retry (the backoff schedule, with
``APPSERVICE_STREAMS_RETRY_UNIT_MS`` = ``catchup_retry_unit_ms``) and the
drain proper; the distinct transactions that carried the parked events (the
target's figure: 1,000 is 100 events in each); and all the transactions the
sink accepted after it came back, which adds the failed one, retried with its
own id and body as the spec requires.

Without the separate first event, whichever of the parked events reached the
worker first would find the outage alone (the router's first poll returns
one record) and the count would say 1,001 for a run that batched perfectly.
"""

from __future__ import annotations

import time

from bench.results import ScenarioResult, Target
from bench.scenarios.common import Context, CpuMeter, Sizes, downsample, duplicates_and_missing
from bench.stats import NS_PER_S

TARGET_DRAIN_S = 5.0
TARGET_TXNS = 1000.0
APPSERVICE = "cu0"


def run(ctx: Context, sizes: Sizes) -> ScenarioResult:
    count = sizes.catchup_events
    result = ScenarioResult(
        "catch-up",
        config={"events": count, "retry_unit_ms": sizes.catchup_retry_unit_ms, "appservice": APPSERVICE},
    )
    scale = count / 100_000
    with ctx.rig("catchup") as rig:
        rig.start_sinks([APPSERVICE], {APPSERVICE: "down"})
        (worker,) = rig.start_workers(1, retry_unit_ms=sizes.catchup_retry_unit_ms)
        generator = rig.generator(linger_ms=5)
        ctx.turn()
        generator.bulk([APPSERVICE], 1)  # seq 0: finds the outage
        generator.flush()
        if not rig.wait_until(lambda: rig.sinks.stats()[APPSERVICE]["requests"] > 0, ctx.patience(30.0)):
            raise RuntimeError("catch-up: the first event never reached the sink; the worker delivers nothing")
        generator.bulk([APPSERVICE], count)  # seqs 1..count: parked
        park_s = rig.wait_parked(worker, ctx.patience(60.0 + count / 500), "parking", count)
        result.add("time to park (produce → no lag)", park_s, "s")
        result.add("parking rate", None if not park_s else count / park_s, "events/s")
        result.add("worker RSS with events parked", worker.rss_mb(), "MB")
        meter = CpuMeter([worker.pid, rig.sinks.pid()])
        up_ns = time.time_ns()
        rig.sinks.set_mode(APPSERVICE, "ok")
        delivered = rig.wait_delivered(count + 1, ctx.patience(60.0 + count / 1000), "draining") - 1
        cores = meter.stop()
        events = rig.sinks.events()
        requests = rig.sinks.requests()
    arrivals = events["arrival"]
    ok_after = [
        (at, txn)
        for at, txn, status in zip(requests["arrival"], requests["txn"], requests["status"], strict=True)
        if status == 200 and at >= up_ns
    ]
    last_ns = max(arrivals) if arrivals else None
    first_ok_ns = min(at for at, _ in ok_after) if ok_after else None
    accepted = {txn for _, txn in ok_after}
    statuses = zip(requests["txn"], requests["status"], strict=True)
    failed_first = next((txn for txn, status in statuses if status == 503), None)
    txns = len(accepted - {failed_first})
    duplicates, missing = duplicates_and_missing(events["seq"], count + 1)
    drain = None if last_ns is None else (last_ns - up_ns) / NS_PER_S
    note = "" if count == 100_000 else f"target scaled to {count:,} events"
    result.add("drain: sink back up → last event", drain, "s", Target(TARGET_DRAIN_S * scale, "<="), note)
    target = Target(TARGET_TXNS * scale, "<=")
    result.add(f"transactions carrying the {count:,} parked events", txns, "txns", target, note)
    result.add("transactions accepted after the sink came back", len(accepted), "txns", note="+ the failed, retried")
    result.add(
        "wait for first retry (backoff)",
        None if first_ok_ns is None else (first_ok_ns - up_ns) / NS_PER_S,
        "s",
        note=f"retry unit {sizes.catchup_retry_unit_ms} ms",
    )
    pure = None if first_ok_ns is None or last_ns is None else (last_ns - first_ok_ns) / NS_PER_S
    result.add("drain proper: first retry → last event", pure, "s")
    result.add("drain rate", None if not pure else delivered / pure, "events/s")
    result.add("events per txn", delivered / txns if txns else None, "events")
    result.add("failed attempts while down", sum(1 for s in requests["status"] if s == 503), "requests")
    result.add("delivered", delivered, "events", note=f"of {count:,}")
    result.add("missing events", missing, "events")
    result.add("duplicate events", duplicates, "events")
    result.add("worker CPU while draining", cores[0], "cores")
    ordered = sorted(at for at in arrivals if at >= up_ns)
    xs, ys = downsample([(at - up_ns) / NS_PER_S for at in ordered], [float(i + 1) for i in range(len(ordered))])
    result.series["catchup"] = {"t_s": xs, "events": ys}
    return result
