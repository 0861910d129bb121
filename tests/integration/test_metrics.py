"""``/metrics``, ``/livez`` and ``/readyz`` of real worker processes, scraped during real runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from agents.producer import EventProducer
from tests.integration.events import message
from tests.support.recording_appservice import RecordingAppservice
from tests.support.scrape import Samples, get, scrape, until, value
from tests.support.worker_process import WorkerProcess, write_registration

Factory = Callable[[], RecordingAppservice]


async def test_an_appservice_taken_down_shows_up_0_a_growing_backlog_and_age_then_recovers(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    bridge = appservice_factory()
    await bridge.start()
    write_registration(registrations, "bridge", bridge.url)
    worker.start()
    # Every worker resumes every appservice after its rebalance: the owner then exports it.
    await until(worker, lambda s: value(s, "appservice_up", appservice="bridge") == 1, 15, "bridge up")
    assert (await get(worker, "/livez"))[0] == 200
    status, text = await get(worker, "/readyz")
    assert (status, text) == (200, "ok\n")

    bridge.fail_next(10_000, 503)  # down: every attempt fails
    producer.send_event(message(0))
    producer.flush()
    samples = await until(worker, lambda s: value(s, "appservice_up", appservice="bridge") == 0, 10, "bridge down")
    assert value(samples, "appservice_state", appservice="bridge", state="idle") == 0
    assert (value(samples, "transactions_failed_total", appservice="bridge", reason="5xx") or 0) >= 1

    for n in range(1, 31):
        producer.send_event(message(n))
    producer.flush()
    # The backlog is read from the machine state at scrape time: it grows as soon as the worker stepped the items.
    samples = await until(
        worker, lambda s: value(s, "appservice_backlog_items", appservice="bridge", kind="event") == 31, 5, "backlog 31"
    )
    assert value(samples, "appservice_up", appservice="bridge") == 0
    assert (value(samples, "appservice_down_since_seconds", appservice="bridge") or 0) > 0
    # The oldest undelivered item (event 0) keeps ageing from scrape to scrape while the appservice is down.
    age = value(samples, "appservice_oldest_undelivered_seconds", appservice="bridge") or 0
    assert age > 0
    await asyncio.sleep(1.0)
    later = value(await scrape(worker), "appservice_oldest_undelivered_seconds", appservice="bridge") or 0
    assert later >= age + 0.9

    bridge._failures.clear()  # back up: the next retry (at most a few seconds away at 100 ms units) succeeds
    await bridge.wait_for_events(31, timeout_s=30)
    samples = await until(
        worker,
        lambda s: (
            value(s, "appservice_up", appservice="bridge") == 1
            and value(s, "appservice_backlog_items", appservice="bridge", kind="event") == 0
        ),
        10,
        "bridge up with an empty backlog",
    )
    assert value(samples, "appservice_state", appservice="bridge", state="idle") == 1
    assert value(samples, "appservice_down_since_seconds", appservice="bridge") == 0
    assert value(samples, "appservice_oldest_undelivered_seconds", appservice="bridge") == 0
    assert value(samples, "items_sent_total", appservice="bridge", kind="event") == 31
    assert (value(samples, "transactions_sent_total", appservice="bridge") or 0) >= 2
    assert (value(samples, "transaction_duration_seconds_count", appservice="bridge") or 0) >= 3
    assert (value(samples, "transaction_retries_total", appservice="bridge") or 0) >= 1
    assert (value(samples, "appservice_last_success_timestamp_seconds", appservice="bridge") or 0) > time.time() - 60
    # The worker's group consumes every partition of inbox and delay (one worker), and lag is reported for them.
    assert value(samples, "assigned_partitions", topic=f"{worker.app_id}.inbox") == 4
    assert value(samples, "assigned_partitions", topic=worker.input_topic) == 4
    assert (value(samples, "rebalances_total") or 0) >= 1
    # Consumer lag of both groups, from librdkafka's statistics (router) and from highwater minus committed (Faust).
    router_group, inbox = f"{worker.app_id}-router", f"{worker.app_id}.inbox"
    samples = await until(
        worker,
        lambda s: all(
            value(s, "consumer_lag", group=group, topic=topic, partition=str(p)) is not None
            for group, topic in ((router_group, worker.input_topic), (worker.app_id, inbox))
            for p in range(4)
        ),
        15,
        "consumer lag of both groups on every partition",
    )
    assert value(samples, "consumer_lag", group=router_group, topic=worker.input_topic, partition="0") == 0


# One appservice per inbox partition (4), as in test_rebalance.
APPSERVICES = ("signal", "sms", "irc", "bridge")


def exported(samples: Samples) -> set[str]:
    return {dict(labels)["appservice"] for name, labels in samples if name == "appservice_streams_appservice_up"}


async def test_two_workers_export_disjoint_appservices_and_a_survivor_takes_over_the_killed_ones(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, tmp_path: Path
) -> None:
    for appservice_id in APPSERVICES:
        appservice = appservice_factory()
        await appservice.start()
        write_registration(registrations, appservice_id, appservice.url)
    other = worker.sibling("other", tmp_path)
    worker.start()
    other.start()
    command = [sys.executable, "-m", "agents.cli", "status", "--json", "--registrations", str(registrations)]
    for w in (worker, other):
        command += ["--worker", f"127.0.0.1:{w.metrics_port}"]
    try:
        # Both workers ready, each appservice exported once, by its owner (the group may rebalance
        # more than once while the second worker joins: wait for a stable split).
        deadline = time.monotonic() + 45
        while True:
            first, second = exported(await scrape(worker)), exported(await scrape(other))
            ready = [(await get(w, "/readyz"))[0] for w in (worker, other)]
            if first | second == set(APPSERVICES) and first and second and not first & second and ready == [200, 200]:
                # `appservice-streams status` over both workers lists each appservice once, from its owner.
                done = await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=60, check=False)
                status = orjson.loads(done.stdout)
                owners = {row["appservice"]: row["worker"] for row in status["appservices"]}
                if done.returncode == 0 and len(status["appservices"]) == len(APPSERVICES):
                    break
            assert time.monotonic() < deadline, f"series not split between ready workers: {first} / {second}, {ready}"
            await asyncio.sleep(0.3)
        assert sorted(owners) == sorted(APPSERVICES) and status["unowned"] == []
        assert {owners[a] for a in first} == {f"127.0.0.1:{worker.metrics_port}"}
        assert [(w["answered"], w["ready"]) for w in status["workers"]] == [(True, True), (True, True)]
        assert all(row["up"] and row["state"] == "idle" for row in status["appservices"])
        other.kill()
        # The survivor's next assignment gives it every partition; the resume after it steps every appservice.
        await until(worker, lambda s: exported(s) == set(APPSERVICES), 60, "the survivor exporting all")
    finally:
        other.stop()


def owner_of(appservice_id: str, *samples: Samples) -> int | None:
    """Which of the scrapes exports ``appservice_id`` (its inbox partition's owner), if exactly one does."""
    owners = [n for n, s in enumerate(samples) if appservice_id in exported(s)]
    return owners[0] if len(owners) == 1 else None


async def test_the_oldest_undelivered_age_survives_a_sigkill_of_the_owner(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer, tmp_path: Path
) -> None:
    bridge = appservice_factory()
    await bridge.start()
    bridge.fail_next(100_000, 503)  # down for the whole test
    write_registration(registrations, "bridge", bridge.url)
    other = worker.sibling("other", tmp_path)
    worker.start()
    other.start()
    workers = (worker, other)
    try:
        # Both in the group and ready, the bridge exported by exactly one of them: its owner.
        deadline = time.monotonic() + 45
        while True:
            scrapes = [await scrape(w) for w in workers]
            ready = [(await get(w, "/readyz"))[0] for w in workers]
            owner_index = owner_of("bridge", *scrapes)
            if owner_index is not None and ready == [200, 200]:
                break
            assert time.monotonic() < deadline, f"no single ready owner of the bridge: {ready}"
            await asyncio.sleep(0.3)
        owner, survivor = workers[owner_index], workers[1 - owner_index]

        for n in range(31):
            producer.send_event(message(n))
        producer.flush()
        samples = await until(
            owner,
            lambda s: (
                value(s, "appservice_backlog_items", appservice="bridge", kind="event") == 31
                and (value(s, "appservice_oldest_undelivered_seconds", appservice="bridge") or 0) >= 5
            ),
            30,
            "31 events parked, the oldest 5 s old",
        )
        before = value(samples, "appservice_oldest_undelivered_seconds", appservice="bridge") or 0

        owner.kill()
        # The survivor takes the partition over and exports the bridge from the state it restored: the age
        # counts from the events' input timestamps, not from the takeover.
        samples = await until(
            survivor,
            lambda s: value(s, "appservice_backlog_items", appservice="bridge", kind="event") == 31,
            90,
            "the survivor exporting the bridge's 31 parked events",
        )
        after = value(samples, "appservice_oldest_undelivered_seconds", appservice="bridge") or 0
        assert after >= before, f"the oldest age went from {before} s to {after} s at the takeover"
    finally:
        other.stop()
