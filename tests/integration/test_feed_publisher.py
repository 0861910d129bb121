"""The feed module's Kafka side on the real broker: murmur2 placement by room ID, and a failure it reports."""

from __future__ import annotations

import time
import uuid

import pytest

from agents.local_kafka import LocalKafka
from agents.topics import delete_prefixed, ensure_topic, key_partition
from appservice_streams_synapse.core import members_record, parse_config
from appservice_streams_synapse.kafka import Publisher, PublishFailed
from tests.support.ingest_process import committed_records


def test_records_land_on_the_partition_the_router_expects_in_order(kafka: LocalKafka) -> None:
    topic = f"matrix.events.publisher-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka.bootstrap, topic, 4)
    publisher = Publisher(parse_config({"bootstrap_servers": kafka.bootstrap, "topic": topic}))
    try:
        records = [members_record(f"!room{n % 10}:hs", [f"@u{n}:hs"]) for n in range(40)]
        publisher.publish(records)
        got = committed_records(kafka.bootstrap, topic)
        assert len(got) == 40
        assert all(partition == key_partition(key, 4) for partition, key, _ in got)
        for n in range(10):
            key = f"!room{n}:hs".encode()
            assert [v for _, k, v in got if k == key] == [v for k, v in records if k == key], "a room's order kept"
    finally:
        publisher.close()
        delete_prefixed(kafka.bootstrap, (topic,))


def test_an_unreachable_broker_fails_the_batch_within_the_delivery_timeout() -> None:
    publisher = Publisher(parse_config({"bootstrap_servers": "127.0.0.1:1", "delivery_timeout_s": 1}))
    started = time.monotonic()
    with pytest.raises(PublishFailed):
        publisher.publish([members_record("!r:hs", ["@a:hs"])])
    assert time.monotonic() - started < 7
