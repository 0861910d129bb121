"""Where a new app id starts on the input topic: from now on by default, the whole history on request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from agents.producer import EventProducer
from tests.integration.events import message, numbers
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, write_registration


async def test_a_new_app_id_skips_the_history_by_default_and_keeps_its_place_across_a_restart(
    appservice_factory: Callable[[], RecordingAppservice],
    registrations: Path,
    worker: WorkerProcess,
    producer: EventProducer,
) -> None:
    bridge = appservice_factory()
    write_registration(registrations, "bridge", await bridge.start())
    for n in range(5):
        producer.send_event(message(n))  # history, before the deployment
    producer.flush()
    worker.extra_env["APPSERVICE_STREAMS_START_FROM"] = "latest"
    worker.start()
    for _ in range(200):  # the router's four partitions assigned and their start committed
        if worker.log_text().count("no committed offset, starting from its end") >= 4:
            break
        await asyncio.sleep(0.1)
    worker.kill()  # before it routed anything: its start position must have been committed
    producer.send_event(message(5))
    producer.flush()
    worker.start()
    producer.send_event(message(6))
    producer.flush()
    await bridge.wait_for_requests(1)
    for _ in range(50):
        if sum(len(r.events) for r in bridge.requests) >= 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # nothing more may come
    assert [n for r in bridge.requests for n in numbers(r.events)] == [5, 6]
