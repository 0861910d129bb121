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
  state they depend on is in Kafka. ``TableStore`` writes the changelog
  itself and keeps the futures; ``durable()`` waits until Kafka acknowledged
  every one. The agents await it before a batch is acked and before any HTTP
  send starts.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event, current_event

from streams.errors import InvariantBroken


@contextmanager
def partition_of(event: Any) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableStore:
    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: list[asyncio.Future[Any]] = []

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
        self._pending.append(self._table.send_changelog(self._partition(), key, value))
        self._table.data[key] = value

    def delete(self, key: bytes) -> None:
        self._pending.append(self._table.send_changelog(self._partition(), key, None, value_serializer="raw"))
        del self._table.data[key]

    async def durable(self) -> None:
        """Wait until Kafka acknowledged every changelog record written so far.

        Raises:
            Exception: whatever the producer raised for a record it could not
                deliver; the caller must not ack its inputs then.
        """
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
