"""The deliverer's position guard: replays dropped, skipped records read again, never lost."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from agents.positions import AckFilter, GapDetected, PositionGuard


@dataclass
class FakeLog:
    """A partition log holding every offset below ``end``; ``committed`` as the group left it."""

    end: int = 1_000
    committed_at: int = 0
    topic: str = "app.inbox"
    asked: list[tuple[int, int]] = field(default_factory=list)

    def has_records(self, partition: int, start: int, end: int) -> bool:
        self.asked.append((start, end))
        return start < min(end, self.end)

    def committed(self, partition: int) -> int:
        return self.committed_at


class Store(dict[bytes, bytes]):
    def put(self, key: bytes, value: bytes) -> None:
        self[key] = value

    def delete(self, key: bytes) -> None:
        self.pop(key, None)


def events(*offsets: int, generation: int = 1) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(partition=0, offset=o, generation_id=generation)) for o in offsets]


def offsets(batch: list[Any]) -> list[int]:
    return [e.message.offset for e in batch]


class Harness:
    def __init__(self, log: FakeLog | None = None, timeout_s: float = 30.0) -> None:
        self.log = log or FakeLog()
        self.sought: list[tuple[int, int]] = []
        self.guard = PositionGuard(Store(), self.log, self.seek, reread_timeout_s=timeout_s)

    async def seek(self, partition: int, offset: int) -> None:
        self.sought.append((partition, offset))

    def admit(self, batch: list[Any]) -> tuple[list[int], list[int]]:
        admitted, last, ackable = asyncio.run(self.guard.admit(batch))
        self.guard.advance(0, last)
        return offsets(admitted), offsets(ackable)


def test_consecutive_records_are_admitted_and_acked() -> None:
    h = Harness()
    assert h.admit(events(0, 1, 2)) == ([0, 1, 2], [0, 1, 2])
    assert h.admit(events(3)) == ([3], [3])
    assert h.sought == []


def test_a_replay_is_acked_but_not_admitted_again() -> None:
    h = Harness()
    h.admit(events(0, 1, 2))
    assert h.admit(events(1, 2, 3)) == ([3], [1, 2, 3])


def test_a_jump_over_offsets_holding_no_records_is_accepted() -> None:
    h = Harness(FakeLog(end=0))  # e.g. transaction markers: nothing readable in between
    h.admit(events(0))
    assert h.admit(events(5)) == ([5], [5])


def test_skipped_records_make_the_guard_seek_back_and_hold_later_ones_unacked() -> None:
    h = Harness()
    h.admit(events(0, 1))
    assert h.admit(events(4, 5)) == ([], [])
    assert h.sought == [(0, 2)]
    assert h.admit(events(6)) == ([], []), "still queued from before the seek"
    assert h.admit(events(2, 3, 4, 5, 6)) == ([2, 3, 4, 5, 6], [2, 3, 4, 5, 6])


def test_a_rebalance_during_a_reread_forgets_it() -> None:
    h = Harness()
    h.admit(events(0, 1))
    h.admit(events(4))
    # After a rebalance Faust sought to the committed offset itself.
    assert h.admit(events(2, 3, generation=2)) == ([2, 3], [2, 3])


def test_a_reread_that_never_arrives_ends_the_worker() -> None:
    h = Harness(timeout_s=0.0)
    h.admit(events(0))
    h.admit(events(3))
    with pytest.raises(GapDetected, match="did not come back"):
        h.admit(events(4))


def test_with_no_stored_position_the_committed_offset_is_the_baseline() -> None:
    h = Harness(FakeLog(committed_at=188))
    assert h.admit(events(188, 189)) == ([188, 189], [188, 189])
    assert h.log.asked == [] and h.sought == []


def test_with_no_stored_position_a_start_past_the_committed_offset_is_a_gap() -> None:
    h = Harness(FakeLog(committed_at=188))
    assert h.admit(events(190)) == ([], [])
    assert h.sought == [(0, 188)]


class FakeConsumer:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: Any) -> bool:
        self.acked.append(message.offset)
        return True


def test_the_ack_filter_acks_only_what_was_processed_whatever_faust_acks() -> None:
    consumer = FakeConsumer()
    acks = AckFilter(SimpleNamespace(consumer=consumer))
    batch = events(0, 1, 2)
    assert consumer.ack(batch[1].message) is False  # Faust letting go of a skipped record
    acks.processed([batch[0], batch[2]])
    assert consumer.acked == [0, 2]


def test_a_reread_that_has_not_arrived_is_sought_again() -> None:
    h = Harness()
    h.admit(events(0))
    h.admit(events(3))
    asyncio.run(h.guard.seek_again(after_s=0.0))
    assert h.sought == [(0, 1), (0, 1)]
    assert h.admit(events(1, 2, 3)) == ([1, 2, 3], [1, 2, 3])
    asyncio.run(h.guard.seek_again(after_s=0.0))
    assert h.sought == [(0, 1), (0, 1)], "nothing left to re-read"


def test_a_recent_seek_is_not_repeated() -> None:
    h = Harness()
    h.admit(events(0))
    h.admit(events(3))
    asyncio.run(h.guard.seek_again(after_s=60.0))
    assert h.sought == [(0, 1)]
