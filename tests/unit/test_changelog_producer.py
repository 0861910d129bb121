"""The changelog producer: one future per group of records, settled once all reports came, and never silently stuck."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agents.changelog_producer import ChangelogDeliveryError, ChangelogProducer, DeliveryGroup


class Report:
    """The parts of a confluent-kafka Message a delivery report is read for."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition = partition
        self._offset = offset

    def topic(self) -> str:
        return "app-appservices-changelog"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def group(count: int) -> tuple[DeliveryGroup, asyncio.Future[dict[int, int]]]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[dict[int, int]] = loop.create_future()
    return DeliveryGroup(count, future, loop), future


async def test_the_group_resolves_to_each_partitions_last_offset_once_every_record_is_acknowledged() -> None:
    reports, future = group(3)
    reports.delivered(None, Report(2, 40))
    reports.delivered(None, Report(5, 7))
    await asyncio.sleep(0)
    assert not future.done(), "one record is still unacknowledged"
    reports.delivered(None, Report(2, 41))
    assert await future == {2: 41, 5: 7}


async def test_one_refused_record_fails_the_whole_group_naming_it() -> None:
    reports, future = group(2)
    reports.delivered("Broker: Message size too large", Report(3, -1))  # type: ignore[arg-type]
    reports.delivered(None, Report(3, 9))
    with pytest.raises(ChangelogDeliveryError, match=r"app-appservices-changelog\[3\]: Broker: Message size"):
        await future


async def test_a_group_whose_waiter_gave_up_is_left_alone() -> None:
    reports, future = group(1)
    future.cancel()
    reports.delivered(None, Report(0, 1))
    await asyncio.sleep(0)
    assert future.cancelled()


class FakeProducer:
    """Acknowledges every queued record at the next poll; ``fail_poll`` makes poll raise instead."""

    def __init__(self) -> None:
        self.queued: list[tuple[int, bytes, Any]] = []
        self.fail_poll: BaseException | None = None
        self._next_offset = 0

    def produce(self, topic: str, value: bytes | None, key: bytes, partition: int, on_delivery: Any) -> None:
        self.queued.append((partition, key, on_delivery))

    def poll(self, timeout: float) -> int:
        if self.fail_poll is not None:
            raise self.fail_poll
        served, self.queued = self.queued, []
        for partition, _, on_delivery in served:
            on_delivery(None, Report(partition, self._next_offset))
            self._next_offset += 1
        time.sleep(0.001)
        return len(served)

    def flush(self, timeout: float) -> int:
        return 0


def producer_with(fake: FakeProducer) -> tuple[ChangelogProducer, list[str]]:
    failures: list[str] = []
    producer = ChangelogProducer({}, lambda exc, where: failures.append(f"{where}: {exc}"), lambda _: fake)  # type: ignore[arg-type, return-value]
    return producer, failures


async def test_a_group_is_acknowledged_from_the_poll_thread() -> None:
    producer, _ = producer_with(FakeProducer())
    try:
        offsets = await asyncio.wait_for(producer.produce("changelog", [(1, b"s", b"v"), (1, b"t", None)]), 5)
    finally:
        producer.close()
    assert offsets == {1: 1}


async def test_a_failing_poll_thread_ends_the_worker_instead_of_leaving_acknowledgements_pending() -> None:
    fake = FakeProducer()
    fake.fail_poll = RuntimeError("event loop is closed")
    producer, failures = producer_with(fake)
    producer.produce("changelog", [(0, b"s", b"v")])
    for _ in range(500):
        if failures:
            break
        await asyncio.sleep(0.01)
    producer.close()
    assert failures == ["changelog producer: event loop is closed"]


async def test_records_produced_after_close_are_never_acknowledged() -> None:
    producer, _ = producer_with(FakeProducer())
    await producer.produce("changelog", [(0, b"s", b"v")])
    producer.close()
    late = producer.produce("changelog", [(0, b"s", b"w")])
    assert late.cancelled(), "a step written during shutdown must not ack its inputs"
    assert not producer.everything_acknowledged(), "its changes are in the local tables only"


async def test_a_producer_that_flushed_everything_at_close_says_so() -> None:
    producer, _ = producer_with(FakeProducer())
    await producer.produce("changelog", [(0, b"s", b"v")])
    producer.close()
    assert producer.everything_acknowledged()


async def test_a_producer_that_had_a_record_refused_never_says_everything_was_acknowledged() -> None:
    fake = FakeProducer()
    producer, _ = producer_with(fake)
    future = producer.produce("changelog", [(0, b"s", b"v")])
    [(_, _, on_delivery)] = fake.queued
    fake.queued.clear()
    on_delivery("Broker: Message size too large", Report(0, -1))
    with pytest.raises(ChangelogDeliveryError):
        await asyncio.wait_for(future, 5)
    producer.close()
    assert not producer.everything_acknowledged()


async def test_a_producer_that_never_produced_is_clean_at_close() -> None:
    producer, _ = producer_with(FakeProducer())
    producer.close()
    assert producer.everything_acknowledged()
