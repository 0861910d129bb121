"""The broker side of the bench: start it if needed, its pid and version, consumer lag."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.procs import ROOT

if TYPE_CHECKING:
    from agents.local_kafka import LocalKafka

# The dev broker's port, as for `appservice-streams kafka start` and the tests (the controller takes the next one).
PORT = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_PORT") or 9092)
BOOTSTRAP = f"127.0.0.1:{PORT}"


def _local() -> LocalKafka:
    from agents.local_kafka import LocalKafka

    return LocalKafka(root=ROOT, port=PORT, controller_port=PORT + 1)


def ensure_running(bootstrap: str = BOOTSTRAP) -> None:
    """Start the local broker when the bootstrap is the local one (idempotent).

    Raises:
        agents.local_kafka.LocalKafkaError: it cannot be started.
    """
    if bootstrap != BOOTSTRAP:
        return
    _local().start()


def broker_pid(bootstrap: str = BOOTSTRAP) -> int | None:
    """The local broker JVM's pid (to measure its CPU); None for another broker or when it is not ours."""
    if bootstrap != BOOTSTRAP:
        return None
    return _local().status().pid


def kafka_version() -> str:
    """The broker's version, from its jar name (or the pinned version in agents/kafka/pom.xml)."""
    for jar in sorted((ROOT / ".kafka" / "libs").glob("kafka_2.13-*.jar")):
        match = re.fullmatch(r"kafka_2\.13-([0-9.]+)\.jar", jar.name)
        if match:
            return match.group(1)
    pom = ROOT / "agents" / "kafka" / "pom.xml"
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text()) if pom.exists() else None
    return match.group(1) if match else "unknown"


class Lag:
    """Consumer-group lag (high watermark minus committed offset), summed over a topic's partitions."""

    def __init__(self, bootstrap: str = BOOTSTRAP) -> None:
        self._bootstrap = bootstrap
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._watermarks = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
        self._groups: dict[str, Consumer] = {}  # one per group, only to read its committed offsets

    def partitions(self, topic: str) -> list[int]:
        metadata = self._admin.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        return [] if found is None or found.error is not None else sorted(found.partitions)

    def high(self, topic: str) -> int:
        return sum(
            self._watermarks.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in self.partitions(topic)
        )

    def committed(self, group: str, topic: str) -> int:
        consumer = self._groups.get(group)
        if consumer is None:
            config = {"bootstrap.servers": self._bootstrap, "group.id": group, "enable.auto.commit": False}
            consumer = self._groups[group] = Consumer(config)
        offsets = consumer.committed([TopicPartition(topic, p) for p in self.partitions(topic)], timeout=10)
        return sum(max(0, tp.offset) for tp in offsets)

    def lag_by_partition(self, group: str, topic: str) -> dict[int, int]:
        """Lag per partition: high watermark minus the group's committed offset (0 when nothing was committed)."""
        consumer = self._groups.get(group)
        if consumer is None:
            config = {"bootstrap.servers": self._bootstrap, "group.id": group, "enable.auto.commit": False}
            consumer = self._groups[group] = Consumer(config)
        partitions = self.partitions(topic)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        out = {}
        for tp in committed:
            high = self._watermarks.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10, cached=False
            )[1]
            out[tp.partition] = max(0, high - max(0, tp.offset))
        return out

    def lag(self, group: str, topic: str) -> int:
        return max(0, self.high(topic) - self.committed(group, topic))

    def least_lag(self, groups: Sequence[str], topic: str) -> int:
        """The lag of whichever of ``groups`` consumes ``topic`` (the others committed nothing on it)."""
        return min(self.lag(group, topic) for group in groups)

    def least_lag_by_partition(self, groups: Sequence[str], topic: str) -> dict[int, int]:
        """``lag_by_partition`` of whichever of ``groups`` consumes each partition."""
        by_group = [self.lag_by_partition(group, topic) for group in groups]
        return {p: min(lags.get(p, 0) for lags in by_group) for p in by_group[0]}

    def close(self) -> None:
        self._watermarks.close()
        for consumer in self._groups.values():
            consumer.close()


def wait_for_no_lag(
    lag: Lag,
    group: str | Sequence[str],
    topics: list[str],
    timeout_s: float,
    on_poll: object = None,
    settle_s: float = 0.0,
    give_up: Callable[[], bool] | None = None,
) -> bool:
    """Wait until every topic's lag for ``group`` is 0; ``False`` on timeout or once ``give_up()`` is true.

    With several groups, a topic's lag is that of the group that consumes it (``Lag.least_lag``).
    """
    groups = [group] if isinstance(group, str) else list(group)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (give_up is not None and give_up()):
        lags = [lag.least_lag(groups, topic) for topic in topics]
        if callable(on_poll):
            on_poll(sum(lags))
        if not any(lags):
            time.sleep(settle_s)
            return True
        time.sleep(0.25)
    return False


__all__ = ["BOOTSTRAP", "Lag", "broker_pid", "ensure_running", "kafka_version", "wait_for_no_lag"]
