"""A worker's topics exist, with their partition counts and compaction, before Faust subscribes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from agents.topics import delete_prefixed, ensure_worker_topics
from streams.local_kafka import LocalKafka
from streams.settings import from_environment


@pytest.fixture(autouse=True)
def delete_the_topics_made(kafka: LocalKafka, run_id: str) -> Iterator[None]:
    yield
    delete_prefixed(kafka.bootstrap, (f"topics-{run_id}", f"rooms-{run_id}"))


def test_every_topic_a_worker_reads_is_created_before_it_starts(kafka: LocalKafka, run_id: str) -> None:
    settings = from_environment(
        Path("registrations"),
        {
            "MATRIX_SERVER_NAME": "example.org",
            "APPSERVICE_STREAMS_APP_ID": f"topics-{run_id}",
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,  # the test's broker, not the default port's
        },
        input_topic=f"topics-{run_id}.events",
        partitions=3,
        input_partitions=5,
    )
    ensure_worker_topics(settings)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    partitions = {
        name: len(topics[name].partitions)
        for name in (
            settings.input_topic,
            settings.inbox_topic,
            settings.delay_topic,
            settings.dead_letter_topic,
            settings.appservices_changelog_topic,
        )
    }
    assert list(partitions.values()) == [5, 3, 3, 1, 3]
    resource = ConfigResource(ResourceType.TOPIC, settings.appservices_changelog_topic)
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["cleanup.policy"].value == "compact"


def test_the_room_changelog_gets_as_many_partitions_as_an_existing_input(kafka: LocalKafka, run_id: str) -> None:
    settings = from_environment(
        Path("registrations"),
        {
            "MATRIX_SERVER_NAME": "example.org",
            "APPSERVICE_STREAMS_APP_ID": f"rooms-{run_id}",
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,  # the test's broker, not the default port's
        },
        input_topic=f"rooms-{run_id}.events",
        input_partitions=6,
    )
    ensure_worker_topics(settings)
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10).topics
    assert len(topics[settings.rooms_topic].partitions) == len(topics[settings.input_topic].partitions) == 6
