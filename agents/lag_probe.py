"""The consumer lag in seconds: the Kafka timestamp of the oldest record not yet committed, read.

``streams.observed.OldestUnconsumed`` decides which partitions to read (those
behind whose committed offset moved since their last reading, bounded); this
module reads them on a thread of its own, woken after each lag report (the
Faust timer's and the router's statistics) (a reading takes a fetch round trip or more: it must hold neither
the timer nor the event loop; one reading at a time, and a wake-up during one
makes one more after it, not a queue). It reads with a confluent-kafka
consumer of its own, assigned (never subscribed: it joins no group and
commits nothing) to each partition at its committed offset, kept until the
first record of each. A fetch returns a batch, not one record, so
the bytes fetched per partition are kept low (16 KB, at least one batch).

Neither group's consumer is used: seeking the router's or Faust's consumer
would move what it delivers next.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from agents.kafka_config import confluent_config
from agents.metrics import Metrics
from agents.thread_names import name_this_thread
from streams.settings import Settings

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 2.0  # per lag interval, all partitions together


class LagProbe:
    """Reads the record at each lagging partition's committed offset and hands its timestamp to ``Metrics.oldest``."""

    def __init__(self, settings: Settings, metrics: Metrics, groups: tuple[str, ...]) -> None:
        self._settings = settings
        self._metrics = metrics
        self._groups = groups
        self._consumer: Consumer | None = None  # made at the first reading: no I/O in the constructor
        self._wake = threading.Event()
        self._starting = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Lags were just taken: read the timestamps they call for (returns at once; the first starts the thread)."""
        with self._starting:  # the router's thread and the loop both wake it
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="lag-probe", daemon=True)
                self._thread.start()
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        name_this_thread("lag-probe")
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            self.read()
        self._close()

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                confluent_config(
                    self._settings,
                    **{
                        # A group id is required by the client; assign() never joins it, nothing is committed.
                        "group.id": f"{self._settings.app_id}-lag-probe",
                        "enable.auto.commit": False,
                        "enable.partition.eof": True,
                        "auto.offset.reset": "earliest",  # an offset deleted by retention: the oldest left
                        "max.partition.fetch.bytes": 16 * 1024,
                        "queued.max.messages.kbytes": 256,
                    },
                )
            )
        return self._consumer

    def read(self, timeout_s: float = READ_TIMEOUT_S) -> int:
        """One reading for every group (blocking); returns how many records were read. Never raises."""
        try:
            return sum(self._read_group(group, timeout_s) for group in self._groups)
        except Exception:
            log.exception("could not read the oldest unconsumed records' timestamps")
            self._close()  # a fresh client next time
            return 0

    def _read_group(self, group: str, timeout_s: float) -> int:
        oldest = self._metrics.oldest
        wanted = oldest.wanted(group, self._metrics.behind(group))
        if not wanted:
            return 0
        consumer = self._client()
        at = {(topic, partition): offset for topic, partition, offset in wanted}
        consumer.assign([TopicPartition(topic, partition, offset) for topic, partition, offset in wanted])
        read = 0
        try:
            deadline = time.monotonic() + timeout_s
            while at and time.monotonic() < deadline:
                message = consumer.poll(0.1)
                if message is None:
                    continue
                topic, partition = message.topic(), message.partition()
                if topic is None or partition is None:
                    continue
                key = (topic, partition)
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at.pop(key, None)  # nothing there any more: caught up since the lag was taken
                    continue
                if key not in at:
                    continue  # a later record of a partition already read
                kind, timestamp_ms = message.timestamp()
                offset = at.pop(key)
                if kind != TIMESTAMP_NOT_AVAILABLE:
                    oldest.found(group, topic, partition, offset, timestamp_ms)
                    read += 1
        finally:
            consumer.unassign()
        return read

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                log.exception("could not close the lag probe's consumer")


__all__ = ["LagProbe"]
