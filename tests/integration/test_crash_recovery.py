"""Killing a worker with SIGKILL mid-stream loses nothing and reorders nothing."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.producer import EventProducer
from tests.integration.events import message, numbers
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, write_registration

EVENTS_PER_APPSERVICE = 400


def assert_delivered_once_in_order(appservice: RecordingAppservice, expected: list[int]) -> None:
    delivered = appservice.delivered()  # also asserts: a repeated txn id always has the same body
    assert numbers([e for r in delivered for e in r.events]) == expected
    ids = [int(r.txn_id) for r in delivered]
    assert ids == sorted(ids), "txn ids went backwards"


@pytest.mark.parametrize("wipe_state", [False, True], ids=["warm-state", "state-rebuilt-from-changelog"])
async def test_sigkill_mid_stream_then_restart_delivers_everything_in_order(
    appservice_factory: Callable[[], RecordingAppservice],
    registrations: Path,
    worker: WorkerProcess,
    producer: EventProducer,
    wipe_state: bool,
) -> None:
    alpha, beta = appservice_factory(), appservice_factory()
    for appservice_id, appservice in (("alpha", alpha), ("beta", beta)):
        await appservice.start()
        appservice.delay_s = 0.01  # keep transactions in flight while we kill
        write_registration(registrations, appservice_id, appservice.url)
    worker.start()
    for n in range(EVENTS_PER_APPSERVICE):
        producer.send_event(message(n, sender="@alpha_a:example.org"))
        producer.send_event(message(10_000 + n, sender="@beta_b:example.org"))
    producer.flush()
    await alpha.wait_for_requests(3)
    worker.kill()
    killed_at = len(alpha.delivered_events()) + len(beta.delivered_events())
    if wipe_state:
        shutil.rmtree(worker.data_dir)
    await asyncio.sleep(0.5)
    worker.start()
    await alpha.wait_for_events(EVENTS_PER_APPSERVICE, timeout_s=60)
    await beta.wait_for_events(EVENTS_PER_APPSERVICE, timeout_s=60)
    assert killed_at < 2 * EVENTS_PER_APPSERVICE, "the kill came too late to test anything"
    assert_delivered_once_in_order(alpha, list(range(EVENTS_PER_APPSERVICE)))
    assert_delivered_once_in_order(beta, [10_000 + n for n in range(EVENTS_PER_APPSERVICE)])


@pytest.mark.parametrize("wipe_state", [False, True], ids=["warm-state", "state-rebuilt-from-changelog"])
async def test_events_produced_while_a_worker_dies_and_restarts_all_arrive_in_order(
    appservice_factory: Callable[[], RecordingAppservice],
    registrations: Path,
    worker: WorkerProcess,
    producer: EventProducer,
    wipe_state: bool,
) -> None:
    appservice = appservice_factory()
    await appservice.start()
    write_registration(registrations, "alpha", appservice.url)
    worker.start()
    total = 3000
    rooms = [f"!room{r}:example.org" for r in range(8)]  # spread over every input partition

    async def produce_steadily() -> None:
        for n in range(total):
            producer.send_event(message(n, sender="@alpha_a:example.org", room=rooms[n % len(rooms)]))
            if n % 100 == 99:
                producer.flush()
                await asyncio.sleep(0.05)
        producer.flush()

    producing = asyncio.create_task(produce_steadily())
    await appservice.wait_for_events(300, timeout_s=30)
    worker.kill()
    if wipe_state:
        shutil.rmtree(worker.data_dir)
    worker.start(wait=False)
    await producing
    restarts = 0
    for _ in range(600):  # a supervisor's job: restart on exit code 70, here for at most 60 s
        if len(set(appservice.delivered_events_ids())) >= total:
            break
        restarts += worker.restart_if_it_asked()
        await asyncio.sleep(0.1)
    events = await appservice.wait_for_events(total, timeout_s=30)
    delivered = numbers(events)
    assert sorted(set(delivered)) == list(range(total)), f"{total - len(set(delivered))} events never arrived"
    for room in range(len(rooms)):
        in_room = [n for n in dict.fromkeys(delivered) if n % len(rooms) == room]
        assert in_room == sorted(in_room), f"room {room} out of order"


UNCLEAN = "did not stop cleanly"


async def test_local_tables_survive_a_clean_stop_and_are_rebuilt_after_a_sigkill(
    appservice_factory: Callable[[], RecordingAppservice],
    registrations: Path,
    worker: WorkerProcess,
    producer: EventProducer,
) -> None:
    bridge = appservice_factory()
    await bridge.start()
    write_registration(registrations, "bridge", bridge.url)
    worker.start()
    producer.send_event(message(0))
    producer.flush()
    await bridge.wait_for_events(1)
    worker.stop()  # SIGTERM: every changelog record acknowledged, the tables marked clean
    worker.start()
    assert UNCLEAN not in worker.log_text()
    producer.send_event(message(1))
    producer.flush()
    await bridge.wait_for_events(2)
    worker.kill()
    worker.start()
    assert UNCLEAN in worker.log_text().split("===== start 3 =====")[1]
    producer.send_event(message(2))
    producer.flush()
    await bridge.wait_for_events(3)
    assert numbers(bridge.delivered_events()) == [0, 1, 2]
