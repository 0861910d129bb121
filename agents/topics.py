"""Creating the topics a worker reads before it reads them, and deleting a run's.

Faust creates its own internal topics; the input topic belongs to the
homeserver side, and is created here (if missing) with the configured
partition count, so neither a producer's nor a consumer's auto-creation
decides it. ``delete_prefixed`` removes what a demo, test or benchmark run
created: a dev broker left with thousands of test topics spends its heap on
their metrics.

Replication: every topic the worker creates gets the replication factor and
``min.insync.replicas`` that ``streams.kafka_settings.replication_for``
decides for the cluster (``auto``: 3 and 2 on three brokers or more, else 1
and 1). Kafka never changes an existing topic's replication by itself: an
existing topic with fewer replicas than decided is left as it is, with a
warning saying so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from agents.kafka_admin import Admin, admin_client, cluster_metadata
from streams.errors import ConfigError, KafkaUnavailable
from streams.kafka_settings import PLAINTEXT, KafkaSecurity, Replication, TopicReplication, replication_for
from streams.settings import Settings

log = logging.getLogger(__name__)


ONE_REPLICA = TopicReplication(1, 1)


def cluster_size(metadata: Any) -> int:
    """How many brokers the cluster has: those alive, and those that hold replicas while down.

    Metadata lists live brokers only; counting the replicas' broker ids too
    keeps ``auto`` from choosing one replica because a broker of three
    happened to be down when a worker first started.
    """
    ids = set(metadata.brokers)
    for topic in metadata.topics.values():
        for partition in topic.partitions.values():
            ids.update(partition.replicas)
    return len(ids)


def ensure_topics(
    bootstrap_servers: str,
    wanted: list[tuple[str, int, dict[str, str]]],
    timeout_s: float = 30.0,
    *,
    security: KafkaSecurity = PLAINTEXT,
    replication: TopicReplication = ONE_REPLICA,
) -> dict[str, int]:
    """Create each ``(name, partitions, config)`` unless it exists, wait until the broker lists them all,
    and return every topic's partition count (an existing topic keeps its own).

    Topics created get ``replication.factor`` replicas and its
    ``min.insync.replicas`` (unless ``config`` names one); an existing topic
    with fewer replicas is logged as a warning and left as it is. An
    existing topic whose ``config`` differs (a retention changed since it
    was created) is altered to it.

    Raises:
        ConfigError: librdkafka refuses the client configuration, or the
            broker refuses a topic.
        KafkaUnavailable: the broker cannot be reached, or does not list a
            topic within ``timeout_s``.
    """
    return _ensure(admin_client(bootstrap_servers, security), bootstrap_servers, wanted, timeout_s, replication)


def _ensure(
    admin: Admin,
    bootstrap_servers: str,
    wanted: list[tuple[str, int, dict[str, str]]],
    timeout_s: float,
    replication: TopicReplication,
    metadata: Any = None,
) -> dict[str, int]:
    """``ensure_topics`` with a client (and the cluster's ``metadata``, if just read) the caller has."""
    existing = (metadata or cluster_metadata(admin, bootstrap_servers, timeout_s)).topics
    missing = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication.factor,
            config={"min.insync.replicas": str(replication.min_insync_replicas), **config},
        )
        for name, partitions, config in wanted
        if name not in existing or existing[name].error is not None
    ]
    for name, _, _ in wanted:
        topic = existing.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            replicas = min(len(p.replicas) for p in topic.partitions.values())
            if replicas < replication.factor:
                log.warning(
                    "topic %s has %d replica(s) per partition, fewer than the %d wanted: Kafka does not add"
                    " replicas to an existing topic (kafka-reassign-partitions.sh does)",
                    name,
                    replicas,
                    replication.factor,
                )
    _align_configs(
        admin,
        {name: config for name, _, config in wanted if config and name in existing and existing[name].error is None},
        timeout_s,
    )
    for name, future in (admin.create_topics(missing) if missing else {}).items():
        try:
            future.result(timeout_s)
            log.info("created topic %s", name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise ConfigError(f"cannot create topic {name} on {bootstrap_servers}: {exc}") from exc
    names = [name for name, _, _ in wanted]
    deadline = time.monotonic() + timeout_s
    while True:
        # Created is not yet listed: a consumer assigned in between would not get them.
        try:
            topics = admin.list_topics(timeout=5).topics
        except KafkaException:
            topics = {}
        listed = {n: len(topics[n].partitions) for n in names if n in topics and topics[n].error is None}
        if all(listed.get(n) for n in names):
            return listed
        if time.monotonic() > deadline:
            unlisted = [n for n in names if not listed.get(n)]
            raise KafkaUnavailable(f"topics {unlisted} not listed by {bootstrap_servers} after {timeout_s:.0f} s")
        time.sleep(0.2)


def _align_configs(admin: AdminClient, wanted: dict[str, dict[str, str]], timeout_s: float) -> None:
    """Set, on existing topics, the values of ``wanted`` they do not have; a refusal is logged, not raised.

    Only the keys the worker asks for are touched (others an operator set stay).
    """
    if not wanted:
        return
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in wanted]
    changes: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources).items():
        try:
            current = {key: entry.value for key, entry in future.result(timeout_s).items()}
        except KafkaException as exc:
            log.warning("cannot read the configuration of topic %s: %s", resource.name, exc)
            continue
        differing = {k: v for k, v in wanted[resource.name].items() if current.get(k) != v}
        if differing:
            changes[resource.name] = differing
    if not changes:
        return
    altered = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in c.items()],
        )
        for name, c in changes.items()
    ]
    for resource, future in admin.incremental_alter_configs(altered).items():
        try:
            future.result(timeout_s)
            log.info("topic %s: set %s", resource.name, changes[resource.name])
        except KafkaException as exc:
            log.warning("topic %s: could not set %s: %s", resource.name, changes[resource.name], exc)


def ensure_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int,
    timeout_s: float = 30.0,
    config: dict[str, str] | None = None,
    *,
    security: KafkaSecurity = PLAINTEXT,
    replication: TopicReplication = ONE_REPLICA,
) -> int:
    """``ensure_topics`` for one topic; its partition count.

    Raises:
        ConfigError, KafkaUnavailable: as ``ensure_topics``.
    """
    wanted = [(name, partitions, config or {})]
    return ensure_topics(bootstrap_servers, wanted, timeout_s, security=security, replication=replication)[name]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, as Java and aiokafka do).

    The router writes routed items to an inbox partition explicitly; every
    other inbox record is keyed by appservice ID and placed by Faust's
    (aiokafka's) default partitioner. Both must agree, or an appservice's
    state would be split across partitions.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def ensure_worker_topics(settings: Settings) -> Settings:
    """Create every topic a worker reads (and the router's room changelog) before Faust starts;
    return ``settings`` with the replication decided for this cluster (for Faust's own topics).

    Faust creates its own topics at start-up, but if the broker is slow to
    show them (seen right after a broker start), the consumer group's first
    assignment is made without them, and static membership then keeps that
    empty assignment across restarts: the worker logged "owns inbox
    partitions []" for 8 minutes and three restarts, delivering nothing.

    Raises:
        ConfigError: the broker refuses a topic, the replication asked for
            does not fit the cluster, or the room changelog has fewer
            partitions than the input.
        KafkaUnavailable: as ``ensure_topics``.
    """
    s = settings
    timeout_s = 30.0
    admin = admin_client(s.bootstrap_servers, s.kafka_security)  # one client and one metadata read for all
    metadata = cluster_metadata(admin, s.bootstrap_servers, timeout_s)
    brokers = cluster_size(metadata)
    replication = replication_for(s.replication, brokers)
    log.info(
        "Kafka cluster of %d broker(s): topics created with replication factor %d, min.insync.replicas %d",
        brokers,
        replication.factor,
        replication.min_insync_replicas,
    )
    compact = {"cleanup.policy": "compact"}
    retention = {} if s.retention_ms is None else {"retention.ms": str(s.retention_ms)}
    inputs = _ensure(
        admin, s.bootstrap_servers, [(s.input_topic, s.input_partitions, {})], timeout_s, replication, metadata
    )[s.input_topic]
    counts = _ensure(
        admin,
        s.bootstrap_servers,
        [
            (s.inbox_topic, s.partitions, retention),
            (s.delay_topic, s.partitions, retention),
            (s.dead_letter_topic, 1, {}),
            (s.appservices_changelog_topic, s.partitions, compact),
            (s.rooms_topic, inputs, compact),
            # Faust's leader election topic (faust.assignor.LeaderAssignor).
            (f"{s.app_id}-__assignor-__leader", 1, {}),
        ],
        timeout_s,
        replication,
    )
    if counts[s.rooms_topic] < inputs:
        raise ConfigError(
            f"{s.rooms_topic} has {counts[s.rooms_topic]} partitions and {s.input_topic} {inputs}: the room state"
            " of an input partition lives in the changelog partition of the same number"
        )
    return dataclasses.replace(s, replication=Replication(replication.factor, replication.min_insync_replicas))


def delete_prefixed(
    bootstrap_servers: str, prefixes: tuple[str, ...], timeout_s: float = 30.0, *, security: KafkaSecurity = PLAINTEXT
) -> int:
    """Delete the topics and consumer groups whose names start with one of ``prefixes``; return how many topics.

    Best effort: a topic or group that is already gone, or that the broker
    refuses to delete, is skipped.

    Raises:
        KafkaUnavailable: the broker cannot be reached to list the topics.
    """
    admin = admin_client(bootstrap_servers, security)
    topics = [t for t in cluster_metadata(admin, bootstrap_servers, timeout_s).topics if t.startswith(prefixes)]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=timeout_s).values():
            with contextlib.suppress(KafkaException):
                future.result(timeout_s)
    with contextlib.suppress(KafkaException):
        listed = admin.list_consumer_groups().result(timeout_s)
        groups = [g.group_id for g in listed.valid if g.group_id.startswith(prefixes)]
        if groups:
            for future in admin.delete_consumer_groups(groups).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout_s)
    return len(topics)
