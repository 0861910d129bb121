"""A worker's topics exist, with their partition counts and compaction, before Faust subscribes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from agents.local_kafka import LocalKafka
from agents.topics import delete_prefixed, ensure_worker_topics
from streams.settings import Settings, from_environment


def kafka_env(kafka: LocalKafka) -> dict[str, str]:
    # The broker under test, never the default 127.0.0.1:9092 (another port may be in use).
    return {"MATRIX_SERVER_NAME": "example.org", "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}


@pytest.fixture(autouse=True)
def delete_the_topics_made(kafka: LocalKafka, run_id: str) -> Iterator[None]:
    yield
    delete_prefixed(kafka.bootstrap, (f"topics-{run_id}", f"rooms-{run_id}"))


def test_every_topic_a_worker_reads_is_created_before_it_starts(kafka: LocalKafka, run_id: str) -> None:
    settings = from_environment(
        Path("registrations"),
        {**kafka_env(kafka), "APPSERVICE_STREAMS_APP_ID": f"topics-{run_id}"},
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
        {**kafka_env(kafka), "APPSERVICE_STREAMS_APP_ID": f"rooms-{run_id}"},
        input_topic=f"rooms-{run_id}.events",
        input_partitions=6,
    )
    ensure_worker_topics(settings)
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10).topics
    assert len(topics[settings.rooms_topic].partitions) == len(topics[settings.input_topic].partitions) == 6


def test_on_one_broker_topics_get_one_replica_and_the_configured_retention(kafka: LocalKafka, run_id: str) -> None:
    settings = from_environment(
        Path("registrations"),
        {
            **kafka_env(kafka),
            "APPSERVICE_STREAMS_APP_ID": f"topics-{run_id}",
            "APPSERVICE_STREAMS_RETENTION_MS": "3600000",
        },
        input_topic=f"topics-{run_id}.events",
        partitions=2,
        input_partitions=2,
    )
    decided = ensure_worker_topics(settings)
    assert (decided.replication.factor, decided.replication.min_insync_replicas) == (1, 1)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    leader = f"topics-{run_id}-__assignor-__leader"  # Faust's, created by us with the same replication
    assert leader in topics
    for name in (settings.inbox_topic, settings.delay_topic, settings.rooms_topic, leader):
        assert {len(p.replicas) for p in topics[name].partitions.values()} == {1}
    resources = {
        name: ConfigResource(ResourceType.TOPIC, name) for name in (settings.inbox_topic, settings.rooms_topic)
    }
    configs = {name: admin.describe_configs([r])[r].result(10) for name, r in resources.items()}
    assert configs[settings.inbox_topic]["retention.ms"].value == "3600000"
    assert configs[settings.inbox_topic]["min.insync.replicas"].value == "1"
    assert configs[settings.rooms_topic]["retention.ms"].value != "3600000"  # compacted: Kafka's default


def test_a_retention_changed_since_the_topics_were_made_is_applied_to_them(kafka: LocalKafka, run_id: str) -> None:
    def settings(retention_ms: str) -> Settings:
        env = {**kafka_env(kafka), "APPSERVICE_STREAMS_APP_ID": f"topics-{run_id}"}
        env["APPSERVICE_STREAMS_RETENTION_MS"] = retention_ms
        return from_environment(Path("r"), env, input_topic=f"topics-{run_id}.events", partitions=1, input_partitions=1)

    ensure_worker_topics(settings("3600000"))
    ensure_worker_topics(settings("7200000"))
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for name in (f"topics-{run_id}.inbox", f"topics-{run_id}.delay"):
        resource = ConfigResource(ResourceType.TOPIC, name)
        assert admin.describe_configs([resource])[resource].result(10)["retention.ms"].value == "7200000"
