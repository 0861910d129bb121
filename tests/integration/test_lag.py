"""Consumer lag scraped from a real worker: it rises while a paused worker holds partitions, then drains."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import replace
from pathlib import Path

from agents.producer import EventProducer
from agents.topics import key_partition
from tests.integration.events import message
from tests.integration.test_metrics import Factory, Samples, scrape
from tests.support.worker_process import WorkerProcess, free_port, write_registration

SESSION_TIMEOUT_S = 6  # the broker's group.min.session.timeout.ms: the shortest a group may have
LAG_INTERVAL_S = 0.25  # lag taken four times a second, so a drain of a second or two is seen
PAUSED_EVENTS = 8_000  # produced over the session timeout: a few seconds of the survivor's work
ROOMS = 64  # keys spread over every input partition
APPSERVICES = ("signal", "sms", "irc", "bridge")  # one per inbox partition (as in test_rebalance)
PARTITIONS = 4  # of each topic
# Of interest to no appservice (the router drops them), on the paused router's input partitions: the
# survivor's router drained a takeover's backlog of the 8,000 alone within one lag interval, so its group's
# lag was seen rising in only some runs (5 of 38 missed it); with this work besides, it shows for 0.6-1.4 s.
NOISE_EVENTS = 100_000
STABLE_S = 3.0  # a rebalance the broker has begun reaches each member at its next heartbeat (every 1.2 s)


def lags(samples: Samples, name: str) -> dict[tuple[str, str, str], float]:
    """(group, topic, partition) → value of ``appservice_streams_<name>``."""
    found = {}
    for (metric, labels), value in samples.items():
        if metric == "appservice_streams_" + name:
            tags = dict(labels)
            found[(tags["group"], tags["topic"], tags["partition"])] = value
    return found


async def test_lag_rises_in_records_and_seconds_under_a_paused_worker_then_drains(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer, tmp_path: Path
) -> None:
    sinks = []
    for appservice_id in APPSERVICES:
        sink = appservice_factory()
        await sink.start()
        write_registration(registrations, appservice_id, sink.url)
        sinks.append(sink)
    fast = {
        "APPSERVICE_STREAMS_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
        "APPSERVICE_STREAMS_LAG_INTERVAL_S": str(LAG_INTERVAL_S),
    }
    survivor = worker  # the fixture stops it and deletes the topics
    survivor.extra_env = fast
    paused = replace(
        worker,
        instance="paused",
        data_dir=tmp_path / "paused-data",
        log_path=tmp_path / "paused.log",
        http_port=free_port(),
        metrics_port=free_port(),
        extra_env=fast,
    )
    survivor.start()
    paused.start()
    try:
        # Both own partitions of each topic (the groups may rebalance twice while the second worker joins).
        def split(s: Samples, o: Samples) -> bool:
            mine, theirs = set(lags(s, "consumer_lag")), set(lags(o, "consumer_lag"))
            topics = {worker.input_topic, f"{worker.app_id}.inbox", f"{worker.app_id}.delay"}
            each = all({key[1] for key in owned} == topics for owned in (mine, theirs))
            return each and len(mine | theirs) == 12 and not mine & theirs

        # ... and the split held for STABLE_S: a group that rebalanced again after the first split seen gave
        # the survivor the partitions taken for held, and their lag never rose (once in 16 runs).
        deadline = time.monotonic() + 30
        seen: tuple[frozenset[tuple[str, str, str]], float] | None = None
        while True:
            theirs = await scrape(paused)
            if split(await scrape(survivor), theirs):
                held = frozenset(lags(theirs, "consumer_lag"))
                if seen is None or seen[0] != held:
                    seen = (held, time.monotonic())
                elif time.monotonic() - seen[1] >= STABLE_S:
                    break
            else:
                seen = None
            assert time.monotonic() < deadline, "partitions not split between the two workers for long"
            await asyncio.sleep(0.3)
        held_input = {int(key[2]) for key in held if key[1] == worker.input_topic}
        noise_rooms = [f"!noise{n}:example.org" for n in range(200)]
        noise_rooms = [room for room in noise_rooms if key_partition(room.encode(), PARTITIONS) in held_input]

        def produce() -> None:
            for n in range(NOISE_EVENTS):
                producer.send_event(message(n, sender="@human:example.org", room=noise_rooms[n % len(noise_rooms)]))
            producer.flush()
            chunk = PAUSED_EVENTS // SESSION_TIMEOUT_S // 4
            for n in range(PAUSED_EVENTS):
                sender = f"@{APPSERVICES[n % len(APPSERVICES)]}_alice:example.org"
                producer.send_event(message(n, sender=sender, room=f"!room{n % ROOMS}:example.org"))
                if n % chunk == chunk - 1:
                    producer.flush()
                    time.sleep(0.25)  # many router batches: many records on the paused worker's inbox
            producer.flush()

        def delivered() -> int:
            return sum(len(sink.delivered_events_ids()) for sink in sinks)

        assert paused.process is not None
        paused.process.send_signal(signal.SIGSTOP)  # alive to the broker until its session times out
        producing = asyncio.create_task(asyncio.to_thread(produce))

        # The survivor takes the paused worker's partitions over and reports them behind, then caught up.
        peak_records: dict[tuple[str, str, str], float] = {}
        peak_seconds: dict[tuple[str, str, str], float] = {}
        timeline = []  # for the failure message
        started = time.monotonic()
        deadline = started + 35  # typically 8-31 s; the whole test stays under 60 s
        while True:
            samples = await scrape(survivor)
            records, seconds = lags(samples, "consumer_lag"), lags(samples, "consumer_lag_seconds")
            timeline.append(
                (
                    round(time.monotonic() - started, 2),
                    {k[1:]: (v, seconds.get(k)) for k, v in records.items() if v or seconds.get(k)},
                )
            )
            for key in held:
                peak_records[key] = max(peak_records.get(key, 0), records.get(key, 0))
                peak_seconds[key] = max(peak_seconds.get(key, 0), seconds.get(key, 0))
            drained = len(seconds) == 12 and not any(records.values()) and not any(seconds.values())
            if producing.done() and drained and delivered() == PAUSED_EVENTS:
                break
            assert time.monotonic() < deadline, f"not drained: {records} {seconds} {delivered()}"
            await asyncio.sleep(0.05)
        await producing

        behind = {key: peak for key, peak in peak_records.items() if peak > 0}
        aged = {key: peak for key, peak in peak_seconds.items() if peak > 0}
        assert behind, f"no lag in records seen on the paused worker's partitions {sorted(held)}: {timeline}"
        # The oldest record not committed was produced as the pause began, and the survivor only got its
        # partition once the session timed out (heartbeats every 1.2 s): its age then is most of the timeout.
        assert aged and max(aged.values()) >= SESSION_TIMEOUT_S / 2, f"{aged} {timeline}"
        # Both groups: the router's input and the Faust group's inbox piled up.
        assert {key[0] for key in behind} == {survivor.app_id, f"{survivor.app_id}-router"}, f"{timeline}"
    finally:
        paused.kill()  # SIGKILL ends a stopped process too
