"""TableStore: changelog records handed over in write order, acknowledged in hand-over order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from agents.changelog_producer import Record
from agents.table_store import TableStore, in_partition


class Data(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


class Producer:
    """Hands out one future per group of records; the test decides when Kafka acknowledges."""

    def __init__(self) -> None:
        self.groups: list[tuple[list[bytes], asyncio.Future[dict[int, int]]]] = []

    def produce(self, topic: str, records: Sequence[Record]) -> asyncio.Future[dict[int, int]]:
        future: asyncio.Future[dict[int, int]] = asyncio.get_running_loop().create_future()
        self.groups.append(([key for _, key, _ in records], future))
        return future

    def acknowledge(self, index: int) -> None:
        self.groups[index][1].set_result({0: index})


def table() -> tuple[Any, TableStore, Producer]:
    producer = Producer()
    changelog = SimpleNamespace(get_topic_name=lambda: "app-appservices-changelog")
    faust_table = SimpleNamespace(data=Data(), changelog_topic=changelog)
    return faust_table, TableStore(faust_table, producer), producer  # type: ignore[arg-type]


async def test_a_hand_over_is_acknowledged_only_after_every_earlier_one() -> None:
    faust_table, store, producer = table()
    with in_partition(0):
        store.put(b"a", b"1")
    await store.produce()
    with in_partition(0):
        store.put(b"b", b"2")
    second = asyncio.ensure_future(await store.produce())
    producer.acknowledge(1)  # Kafka answered the later record first
    await asyncio.sleep(0.01)
    assert not second.done(), "the later hand-over waits for the earlier one"
    producer.acknowledge(0)
    await second
    assert faust_table.data.persisted, "each partition's last changelog offset is kept for warm restarts"


async def test_records_reach_the_producer_in_the_order_they_were_written() -> None:
    _, store, producer = table()
    with in_partition(0):
        store.put(b"t", b"body")
        store.put(b"s", b"state")
        store.delete(b"t")
    await store.produce()
    assert [keys for keys, _ in producer.groups] == [[b"t", b"s", b"t"]]
