"""TableStore: changelog records handed over in write order, acknowledged in hand-over order."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from agents.table_store import TableStore, in_partition


class Data(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


class Producer:
    """Hands out one future per record; the test decides when Kafka acknowledges."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, asyncio.Future[Any]]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int, *_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.records.append((key, future))
        return future

    def acknowledge(self, index: int) -> None:
        self.records[index][1].set_result(SimpleNamespace(partition=0, offset=index))


def table() -> tuple[Any, Producer]:
    producer = Producer()
    changelog = SimpleNamespace(get_topic_name=lambda: "app-appservices-changelog")
    return SimpleNamespace(data=Data(), changelog_topic=changelog, app=SimpleNamespace(producer=producer)), producer


async def test_a_hand_over_is_acknowledged_only_after_every_earlier_one() -> None:
    faust_table, producer = table()
    store = TableStore(faust_table)
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
    faust_table, producer = table()
    store = TableStore(faust_table)
    with in_partition(0):
        store.put(b"t", b"body")
        store.put(b"s", b"state")
        store.delete(b"t")
    await store.produce()
    assert [key for key, _ in producer.records] == [b"t", b"s", b"t"]
