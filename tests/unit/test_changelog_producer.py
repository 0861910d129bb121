"""DeliveryGroup: one future for a group of changelog records, settled once all reports came."""

from __future__ import annotations

import asyncio

import pytest

from agents.changelog_producer import ChangelogDeliveryError, DeliveryGroup


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
