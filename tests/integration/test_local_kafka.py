"""The local KRaft broker works with both client libraries the project uses.

confluent-kafka (librdkafka, ``partitioner=murmur2_random``) produces keyed
records; aiokafka (what Faust reads with) consumes them in a consumer group,
commits, and a second group member resumes from the committed offsets. The
partition librdkafka picks for each key must equal the one aiokafka's
``DefaultPartitioner`` (Java-compatible murmur2) picks, or Kafka producers and
Faust agents would disagree about co-partitioning.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from agents.local_kafka import LocalKafka
from agents.topics import delete_prefixed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 8
RECORDS = 100
DISTINCT_KEYS = 23

# partition -> [(offset, key, value)] in offset order
Log = dict[int, list[tuple[int, bytes, bytes]]]


@pytest.fixture
def topic(kafka: LocalKafka) -> Iterator[str]:
    """A fresh topic with ``PARTITIONS`` partitions, unique to this test run, deleted after it."""
    name = f"test-local-kafka-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=30)
    yield name
    delete_prefixed(kafka.bootstrap, (name,))


def _produce_with_confluent(bootstrap: str, topic: str) -> Log:
    delivered: Log = defaultdict(list)
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
            return
        partition, offset = msg.partition(), msg.offset()
        key, value = msg.key(), msg.value()
        assert partition is not None and offset is not None
        assert isinstance(key, bytes) and isinstance(value, bytes)
        delivered[partition].append((offset, key, value))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    for i in range(RECORDS):
        key = f"key-{i % DISTINCT_KEYS}".encode()
        producer.produce(topic, key=key, value=str(i).encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0, "confluent-kafka did not deliver everything"
    assert not errors, errors
    assert sum(map(len, delivered.values())) == RECORDS
    return {p: sorted(records) for p, records in delivered.items()}


async def _consume_with_aiokafka(bootstrap: str, topic: str, group: str) -> Log:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: Log = defaultdict(list)
    try:
        async with asyncio.timeout(60):
            while sum(map(len, received.values())) < RECORDS:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, msgs in batches.items():
                    for msg in msgs:
                        assert msg.key is not None and msg.value is not None
                        received[tp.partition].append((msg.offset, msg.key, msg.value))
        await consumer.commit()
        for partition, records in received.items():
            committed = await consumer.committed(TopicPartition(topic, partition))
            assert committed == records[-1][0] + 1
    finally:
        await consumer.stop()
    return dict(received)


async def _resume_positions(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """Join ``group`` again; return the positions it resumes from (no new records)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while len(consumer.assignment()) < PARTITIONS:
                leftovers = await consumer.getmany(timeout_ms=500)
                assert not any(leftovers.values()), "re-read already committed records"
            return {tp.partition: await consumer.position(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()


def test_confluent_produces_aiokafka_consumes_same_partitions(kafka: LocalKafka, topic: str) -> None:
    produced = _produce_with_confluent(kafka.bootstrap, topic)

    # Same key -> same partition in librdkafka murmur2_random and aiokafka.
    partitioner = DefaultPartitioner()
    all_partitions = list(range(PARTITIONS))
    for partition, records in produced.items():
        for _, key, _ in records:
            assert partitioner(key, all_partitions, all_partitions) == partition, key
    assert len(produced) > 1, "keys should spread over several partitions"

    # Produce order is offset order within each partition.
    for records in produced.values():
        values = [int(value) for _, _, value in records]
        assert values == sorted(values)

    group = f"{topic}-group"
    consumed = asyncio.run(_consume_with_aiokafka(kafka.bootstrap, topic, group))
    assert consumed == produced

    positions = asyncio.run(_resume_positions(kafka.bootstrap, topic, group))
    expected = {p: (produced[p][-1][0] + 1 if p in produced else 0) for p in all_partitions}
    assert positions == expected
