"""Transactions of many large events: no Kafka record over its limit anywhere, nothing stalls."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.producer import EventProducer
from tests.integration.events import message, numbers
from tests.integration.test_delivery import Factory, started
from tests.support.worker_process import WorkerProcess

EVENT_BYTES = 64 * 1024 - 300  # at the Matrix spec's 64 KiB limit, with the envelope around it


async def test_100_events_of_64_kib_go_out_as_one_6_mb_transaction_and_the_next_ones_follow(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    bridge = await started(appservice_factory, registrations, "bridge")
    worker.start()
    bridge.hold()
    producer.send_event(message(0))
    producer.flush()
    await bridge.wait_for_requests(1)
    for n in range(1, 101):
        event = message(n)
        event["content"]["body"] = "x" * EVENT_BYTES
        producer.send_event(event)
    producer.flush()
    await asyncio.sleep(2.0)  # parked behind the held txn: chunks, then one stored 6 MB txn
    bridge.release()
    requests = await bridge.wait_for_requests(2, timeout_s=60)
    assert [len(r.events) for r in requests[:2]] == [1, 100]
    assert len(requests[1].body) > 6_000_000
    producer.send_event(message(101))
    producer.flush()
    await bridge.wait_for_events(102, timeout_s=30)
    assert numbers(bridge.delivered_events()) == list(range(102))
    assert worker.process is not None and worker.process.poll() is None
    assert worker.starts == 1, "the worker never had to restart"
