"""Creating the topics a worker reads before it reads them, and deleting a run's.

Faust creates its own internal topics; the input topic belongs to the
homeserver side, and is created here (if missing) with the configured
partition count, so neither a producer's nor a consumer's auto-creation
decides it. ``delete_prefixed`` removes what a demo, test or benchmark run
created: a dev broker left with thousands of test topics spends its heap on
their metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from agents.kafka_logging import LOGGER as KAFKA_LOG
from streams.errors import ConfigError
from streams.settings import Settings

log = logging.getLogger(__name__)


def _admin_config(bootstrap_servers: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap_servers, "logger": KAFKA_LOG}


def ensure_topics(
    bootstrap_servers: str, wanted: list[tuple[str, int, dict[str, str]]], timeout_s: float = 30.0
) -> dict[str, int]:
    """Create each ``(name, partitions, config)`` unless it exists, wait until the broker lists them all,
    and return every topic's partition count (an existing topic keeps its own).

    Raises:
        ConfigError: the broker cannot be reached, refuses a topic, or does
            not list one within ``timeout_s``.
    """
    admin = AdminClient(_admin_config(bootstrap_servers))
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise ConfigError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)
        for name, partitions, config in wanted
        if name not in existing or existing[name].error is not None
    ]
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
            raise ConfigError(f"topics {unlisted} not listed by {bootstrap_servers} after {timeout_s:.0f} s")
        time.sleep(0.2)


def ensure_topic(
    bootstrap_servers: str, name: str, partitions: int, timeout_s: float = 30.0, config: dict[str, str] | None = None
) -> int:
    """``ensure_topics`` for one topic; its partition count.

    Raises:
        ConfigError: as ``ensure_topics``.
    """
    return ensure_topics(bootstrap_servers, [(name, partitions, config or {})], timeout_s)[name]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, as Java and aiokafka do).

    The router writes routed items to an inbox partition explicitly; every
    other inbox record is keyed by appservice ID and placed by Faust's
    (aiokafka's) default partitioner. Both must agree, or an appservice's
    state would be split across partitions.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def ensure_worker_topics(settings: Settings) -> None:
    """Create every topic a worker reads (and the router's room changelog) before Faust starts.

    Faust creates its own topics at start-up, but if the broker is slow to
    show them (seen right after a broker start), the consumer group's first
    assignment is made without them, and static membership then keeps that
    empty assignment across restarts: the worker logged "owns inbox
    partitions []" for 8 minutes and three restarts, delivering nothing.

    Raises:
        ConfigError: the broker cannot be reached or refuses a topic, or the
            room changelog has fewer partitions than the input.
    """
    s = settings
    compact = {"cleanup.policy": "compact"}
    inputs = ensure_topic(s.bootstrap_servers, s.input_topic, s.input_partitions)
    counts = ensure_topics(
        s.bootstrap_servers,
        [
            (s.inbox_topic, s.partitions, {}),
            (s.delay_topic, s.partitions, {}),
            (s.dead_letter_topic, 1, {}),
            (s.appservices_changelog_topic, s.partitions, compact),
            (s.rooms_topic, inputs, compact),
        ],
    )
    if counts[s.rooms_topic] < inputs:
        raise ConfigError(
            f"{s.rooms_topic} has {counts[s.rooms_topic]} partitions and {s.input_topic} {inputs}: the room state"
            " of an input partition lives in the changelog partition of the same number"
        )


def delete_prefixed(bootstrap_servers: str, prefixes: tuple[str, ...], timeout_s: float = 30.0) -> int:
    """Delete the topics and consumer groups whose names start with one of ``prefixes``; return how many topics.

    Best effort: a topic or group that is already gone, or that the broker
    refuses to delete, is skipped.

    Raises:
        KafkaException: the broker cannot be reached to list the topics.
    """
    admin = AdminClient(_admin_config(bootstrap_servers))
    topics = [t for t in admin.list_topics(timeout=timeout_s).topics if t.startswith(prefixes)]
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
