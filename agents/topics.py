"""Creating the topics a worker reads before it reads them.

Faust creates its own internal topics; the input topic belongs to the
homeserver side, and is created here (if missing) with the configured
partition count, so neither a producer's nor a consumer's auto-creation
decides it.
"""

from __future__ import annotations

import logging
import time

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.errors import ConfigError
from streams.settings import Settings

log = logging.getLogger(__name__)


def ensure_topic(
    bootstrap_servers: str, name: str, partitions: int, timeout_s: float = 30.0, config: dict[str, str] | None = None
) -> int:
    """Create ``name`` (with topic ``config``) unless it exists; return its partition count.

    Raises:
        ConfigError: the broker cannot be reached or refuses the topic.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ConfigError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
    existing = metadata.topics.get(name)
    if existing is not None and existing.error is None:
        return len(existing.partitions)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
    )
    try:
        futures[name].result(timeout_s)
        log.info("created topic %s with %d partitions", name, partitions)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise ConfigError(f"cannot create topic {name} on {bootstrap_servers}: {exc}") from exc
    return partitions


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, as Java and aiokafka do).

    The router writes routed items to an inbox partition explicitly; every
    other inbox record is keyed by appservice ID and placed by Faust's
    (aiokafka's) default partitioner. Both must agree, or an appservice's
    state would be split across partitions.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def ensure_worker_topics(settings: Settings) -> None:
    """Create every topic a worker subscribes to before Faust starts.

    Faust creates its own topics at start-up, but if the broker is slow to
    show them (seen right after a broker start), the consumer group's first
    assignment is made without them, and static membership then keeps that
    empty assignment across restarts: the worker logged "owns inbox
    partitions []" for 8 minutes and three restarts, delivering nothing.

    Raises:
        ConfigError: the broker cannot be reached or refuses a topic.
    """
    s = settings
    ensure_topic(s.bootstrap_servers, s.input_topic, s.input_partitions)
    ensure_topic(s.bootstrap_servers, s.inbox_topic, s.partitions)
    ensure_topic(s.bootstrap_servers, s.delay_topic, s.partitions)
    ensure_topic(s.bootstrap_servers, s.dead_letter_topic, 1)
    ensure_topic(s.bootstrap_servers, s.appservices_changelog_topic, s.partitions, config={"cleanup.policy": "compact"})
    _wait_visible(s.bootstrap_servers, [s.input_topic, s.inbox_topic, s.delay_topic, s.appservices_changelog_topic])


def _wait_visible(bootstrap_servers: str, names: list[str], timeout_s: float = 30.0) -> None:
    """Raises: ConfigError when a topic has no partitions in the broker's metadata after ``timeout_s``."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    deadline = time.monotonic() + timeout_s
    missing = names
    while True:
        try:
            topics = admin.list_topics(timeout=5).topics
        except KafkaException:
            topics = {}
        missing = [n for n in names if n not in topics or topics[n].error is not None or not topics[n].partitions]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if missing:
        raise ConfigError(f"topics {missing} not visible on {bootstrap_servers} after {timeout_s:.0f} s")
