"""A record that can never be forwarded is dead-lettered, and its partition keeps flowing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from agents.local_kafka import LocalKafka
from agents.producer import EventProducer
from agents.topics import ensure_topic
from streams.dead_letter import MAX_VALUE_BYTES
from tests.integration.events import message, numbers
from tests.integration.test_delivery import Factory, started
from tests.support.worker_process import WorkerProcess


def dead_letters(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is not None and record.error() is None:
                found.append(record)
    finally:
        consumer.close()
    return found


def headers(record: Any) -> dict[str, bytes]:
    return dict(record.headers() or [])


async def test_a_compressed_event_too_large_to_forward_is_dead_lettered_and_later_events_flow(
    kafka: LocalKafka, appservice_factory: Factory, registrations: Path, worker: WorkerProcess
) -> None:
    bridge = await started(appservice_factory, registrations, "bridge")
    worker.start()
    # 2 MB uncompressed, a few KB compressed: the broker takes it under its 1 MB
    # limit, and the router could not forward it whole.
    poison = message(0)
    poison["content"]["body"] = "x" * 2_000_000
    compressing = EventProducer(
        kafka.bootstrap, worker.input_topic, **{"compression.type": "gzip", "message.max.bytes": 10_000_000}
    )
    compressing.send_event(message(1))
    compressing.send_event(poison)
    for n in range(2, 32):  # the same room (same partition) and another one
        compressing.send_event(message(n, room="!room:example.org" if n % 2 else "!other:example.org"))
    compressing.flush()

    await bridge.wait_for_events(31, timeout_s=60)
    assert sorted(numbers(bridge.delivered_events())) == list(range(1, 32))
    [letter] = dead_letters(kafka.bootstrap, f"{worker.app_id}.dead-letter", 1)
    assert headers(letter)["reason"] == b"too_large"
    assert int(headers(letter)["size"]) > 2_000_000
    assert headers(letter)["truncated"] == b"true"
    assert len(letter.value()) == MAX_VALUE_BYTES
    assert worker.process is not None and worker.process.poll() is None, "the worker kept running"
    assert worker.starts == 1


async def test_a_record_the_broker_refuses_to_take_on_is_dead_lettered_and_later_events_flow(
    kafka: LocalKafka, appservice_factory: Factory, registrations: Path, worker: WorkerProcess
) -> None:
    # An inbox that takes records of 20 kB at most: a 30 kB event is valid input
    # that the broker refuses for good once routed.
    ensure_topic(kafka.bootstrap, f"{worker.app_id}.inbox", 4, config={"max.message.bytes": "20000"})
    bridge = await started(appservice_factory, registrations, "bridge")
    worker.start()
    producer = EventProducer(kafka.bootstrap, worker.input_topic)
    refused = message(2)
    refused["content"]["body"] = "y" * 30_000
    producer.send_event(message(1))
    producer.send_event(refused)
    for n in range(3, 21):
        producer.send_event(message(n))
    producer.flush()

    await bridge.wait_for_events(19, timeout_s=60)
    assert numbers(bridge.delivered_events()) == [1, *range(3, 21)]
    [letter] = dead_letters(kafka.bootstrap, f"{worker.app_id}.dead-letter", 1)
    assert headers(letter)["reason"] == b"refused"
    assert b"MSG_SIZE_TOO_LARGE" in headers(letter)["detail"] or b"too large" in headers(letter)["detail"].lower()
    assert worker.process is not None and worker.process.poll() is None, "the worker kept running"
