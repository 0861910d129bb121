"""A Faust table seen as a ``KeyValueStore``, written in the right partition.

Faust's RocksDB store and changelog pick the partition of a write from the
*current event* (a context variable set while a stream iterates). Our agents
take events in batches, where no event is current, so ``partition_of`` makes
one event of the batch current while that partition's writes happen. Every
write of a step is for keys owned by that event's partition (the inbox and
the table are co-partitioned by appservice ID), so the local RocksDB shard and
the changelog partition always agree.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event


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

    def get(self, key: bytes) -> bytes | None:
        value = self._table.get(key)
        return value if value is None else bytes(value)

    def put(self, key: bytes, value: bytes) -> None:
        self._table[key] = value

    def delete(self, key: bytes) -> None:
        if self._table.get(key) is not None:
            del self._table[key]
