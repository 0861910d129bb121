"""A Faust table seen as a ``KeyValueStore`` whose changelog writes can be awaited.

Two Faust behaviours shape this module:

* Faust's RocksDB store and changelog pick the partition of a write from the
  *current event* (a context variable set while a stream iterates). Our
  agents take events in batches, where no event is current, so
  ``partition_of`` makes one event of the batch current while that
  partition's reads and writes happen. Every key written in a step belongs to
  that event's partition (inbox and table are co-partitioned by key), so the
  local RocksDB shard and the changelog partition agree.
* ``table[key] = value`` queues a changelog record and forgets its future,
  and Faust's flush-before-commit gives up after 0.1 s of no progress
  (``ProducerBuffer.flush_atmost``), so offsets can be committed before the
  state they depend on is in Kafka. ``TableStore`` writes the local store at
  once and produces the changelog itself in ``produce()``, whose returned
  awaitable waits until Kafka acknowledged every record written before the
  call. The deliverer awaits it before a batch is acked and before any HTTP
  send starts.

Two tasks write: the deliverer's batches and the settling of send outcomes.
``produce()`` hands records to the producer in the order they were written
(one call at a time), so a key's changelog records keep their order, and its
acknowledgement also waits for every earlier call's, so a caller never acts
on records another task handed over but Kafka has not yet taken.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from faust.streams import _current_event, current_event
from faust.types import TP

from agents.changelog_producer import ChangelogProducer, Record
from streams.errors import InvariantBroken


@contextmanager
def partition_of(event: Any) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


@dataclass(frozen=True)
class _Message:
    partition: int


class _PartitionOnly:
    """Stands in for an event where only its partition is read (Faust's RocksDB store)."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


@contextmanager
def in_partition(partition: int) -> Iterator[None]:
    """``partition_of`` for work that has no event of the partition at hand (a send's outcome)."""
    marker = _PartitionOnly(partition)  # held here: the context variable keeps only a weak reference
    with partition_of(marker):
        yield


class TableStore:
    def __init__(self, table: Any, producer: ChangelogProducer) -> None:
        self._table = table
        self._producer = producer
        self._unsent: list[Record] = []
        self._handing_over = asyncio.Lock()
        self._last_acknowledged: Awaitable[None] | None = None

    def _partition(self) -> int:
        event = current_event()
        if event is None:
            raise InvariantBroken("table write outside partition_of(): no partition to write to")
        return int(event.message.partition)

    def get(self, key: bytes) -> bytes | None:
        try:
            return bytes(self._table.data[key])
        except KeyError:
            return None

    def put(self, key: bytes, value: bytes) -> None:
        self._unsent.append((self._partition(), key, value))
        self._table.data[key] = value

    def delete(self, key: bytes) -> None:
        self._unsent.append((self._partition(), key, None))
        del self._table.data[key]

    async def produce(self) -> Awaitable[None]:
        """Hand the changelog records written so far to the producer, in order; return their acknowledgement.

        Records go to our confluent-kafka producer (``agents.changelog_producer``),
        not through Faust's ``send_soon`` buffer (drained one record at a time
        by a background task; over 100 records in it and Faust's conductor
        stops feeding every stream) nor through Faust's aiokafka producer (its
        Python per record): docs/decisions/changelog-producer.md. Awaiting the returned
        awaitable waits until Kafka acknowledged these records and those of
        every earlier call, then stores each partition's last changelog offset
        in RocksDB, as Faust's own callback does, for warm restarts.

        Raises:
            ChangelogDeliveryError: the producer refused a record at once; the
                records are no longer held here, so the caller must exit
                without acking (every caller calls ``fatal``). From the
                awaitable: Kafka refused a record; the caller must not ack its
                inputs.
        """
        async with self._handing_over:
            unsent, self._unsent = self._unsent, []
            earlier = self._last_acknowledged
            if not unsent:
                if earlier is not None:
                    return earlier
                done = asyncio.get_running_loop().create_future()
                done.set_result(None)
                return done
            table = self._table
            topic = table.changelog_topic.get_topic_name()
            pending = self._producer.produce(topic, unsent)

            async def acknowledged() -> None:
                if earlier is not None:
                    await earlier
                for partition, offset in (await pending).items():
                    table.data.set_persisted_offset(TP(topic, partition), offset)

            # A task, so that several callers can await it and it runs even if none does.
            self._last_acknowledged = asyncio.ensure_future(acknowledged())
            return self._last_acknowledged
