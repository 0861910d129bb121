"""The changelog's producer: confluent-kafka, with one awaitable acknowledgement per group of records.

The deliverer writes several changelog records per transaction (state,
stored txn, backlog chunks, deletes) and waits for Kafka to acknowledge them
before it sends. Through Faust's producer (aiokafka, pure Python) each record
cost the worker's one interpreter its accumulating, request building and
future resolution; librdkafka does that in C, on its own threads (figures:
docs/decisions/changelog-producer.md).

``produce(topic, records)`` queues a group of records and returns a future
for all of them: it resolves, on the event loop, to each partition's last
acknowledged offset, or to the first delivery error. A poll thread serves
the delivery reports; the loop is woken once per group, not per record.
Records keep their order per partition (idempotent producer, ``acks=all``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.errors import ChangelogDeliveryError

log = logging.getLogger(__name__)

POLL_S = 0.1
FLUSH_TIMEOUT_S = 10.0

Record = tuple[int, bytes, bytes | None]  # partition, key, value (None: a tombstone)


class DeliveryGroup:
    """Counts a group's delivery reports down (on the poll thread) and settles its future once."""

    __slots__ = ("_error", "_future", "_loop", "_offsets", "_on_refused", "_remaining")

    def __init__(
        self,
        count: int,
        future: asyncio.Future[dict[int, int]],
        loop: asyncio.AbstractEventLoop,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._remaining = count
        self._future = future
        self._loop = loop
        self._offsets: dict[int, int] = {}
        self._error: str | None = None
        self._on_refused = on_refused

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        partition = message.partition()
        if error is not None:
            if self._error is None:
                self._error = f"{message.topic()}[{partition}]: {error}"
                if self._on_refused is not None:
                    self._on_refused()
        else:
            offset = message.offset()
            if partition is not None and offset is not None and offset > self._offsets.get(partition, -1):
                self._offsets[partition] = offset
        self._remaining -= 1
        if self._remaining == 0:
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self._future.done():  # cancelled by its waiter
            return
        if self._error is not None:
            self._future.set_exception(ChangelogDeliveryError(self._error))
        else:
            self._future.set_result(self._offsets)


# What the changelog's producer adds to agents.kafka_config.producer_config
# (acks=all, idempotent): a record waits for no batch-mate, batches form by
# themselves while earlier requests are in flight (2 ms measured no better:
# docs/decisions/changelog-producer.md).
CHANGELOG_PRODUCER: dict[str, Any] = {"linger.ms": 0}


class ChangelogProducer:
    """Connects on the first ``produce`` (building the worker's pipeline does no I/O).

    ``config`` is a confluent-kafka producer configuration from
    ``agents.kafka_config.producer_config`` (acks=all, idempotent).

    ``on_fatal(exc, where)`` is called if the poll thread fails: without it no
    acknowledgement would ever come and the deliverer would wait silently.
    """

    def __init__(
        self,
        config: dict[str, Any],
        on_fatal: Callable[[BaseException, str], None],
        create: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self._config = config
        self._on_fatal = on_fatal
        self._create = create
        self._producer: Producer | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed_clean = False  # close() flushed everything it was given
        self._lost = False  # records were refused, or given after close()

    def _started(self) -> Producer:
        if self._producer is not None:
            return self._producer
        producer = self._producer = self._create(self._config)
        self._thread = threading.Thread(
            target=self._serve_reports, args=(producer,), name="changelog-producer", daemon=True
        )
        self._thread.start()
        return producer

    def produce(self, topic: str, records: Sequence[Record]) -> asyncio.Future[dict[int, int]]:
        """Queue ``records`` in order; the future resolves to ``{partition: last offset}`` once all are acked.

        After ``close`` the future is cancelled at once: nothing waiting on it
        may ack its inputs, and they are replayed by the next owner.

        Raises:
            ChangelogDeliveryError: a record librdkafka refuses on the spot
                (over ``message.max.bytes``, say), or its local queue is full
                (100,000 records: the broker has not taken any for a long
                while); a caller must treat the group as not durable. From the
                future: a record Kafka refused.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[int, int]] = loop.create_future()
        if self._stopping.is_set():
            log.debug("changelog producer closed: %d records not produced", len(records))
            self._lost = self._lost or bool(records)
            future.cancel()
            return future
        if not records:
            future.set_result({})
            return future
        producer = self._started()
        group = DeliveryGroup(len(records), future, loop, self._refused)
        try:
            for partition, key, value in records:
                producer.produce(topic, value=value, key=key, partition=partition, on_delivery=group.delivered)
        except (BufferError, KafkaException) as exc:
            raise ChangelogDeliveryError(f"{topic}[{partition}]: not queued: {exc!r}") from exc
        return future

    def _serve_reports(self, producer: Producer) -> None:
        try:
            while not self._stopping.is_set():
                producer.poll(POLL_S)  # raises what a delivery callback raised
        except BaseException as exc:
            self._on_fatal(exc, "changelog producer")

    def close(self) -> None:
        """Deliver what is queued (up to FLUSH_TIMEOUT_S) and stop the poll thread."""
        self._stopping.set()
        if self._producer is None or self._thread is None:
            self._closed_clean = True
            return
        self._thread.join()
        try:
            remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        except Exception as exc:  # KafkaException, or what a delivery callback raised
            log.warning("changelog producer: flush at shutdown failed: %r", exc)
            return
        if remaining:
            # Their groups' futures never resolve; nothing waiting on them acked its inputs.
            log.warning("changelog producer: %d records not acknowledged at shutdown", remaining)
            return
        self._closed_clean = True

    def _refused(self) -> None:  # on the poll thread
        self._lost = True

    def everything_acknowledged(self) -> bool:
        """After ``close``: whether Kafka acknowledged every record this producer was ever given."""
        return self._closed_clean and not self._lost


__all__ = ["ChangelogDeliveryError", "ChangelogProducer", "DeliveryGroup", "Record"]
