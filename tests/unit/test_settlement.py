"""An outcome is settled after the inbox records that were there when it came, never before."""

from __future__ import annotations

from streams.settlement import Settlement


def test_an_outcome_settles_at_once_when_its_partition_is_stepped_to_its_end() -> None:
    settlement: Settlement[str] = Settlement()
    settlement.stepped(3, 41)
    assert settlement.arrived(3, "txn 7 ok", end_offset=42, now_ms=0)
    assert settlement.waiting() == 0


def test_an_outcome_waits_for_the_records_its_partition_held_when_it_came() -> None:
    settlement: Settlement[str] = Settlement()
    settlement.stepped(3, 10)
    assert not settlement.arrived(3, "txn 7 ok", end_offset=15, now_ms=0)
    assert settlement.stepped(3, 13) == []
    assert settlement.stepped(3, 14) == ["txn 7 ok"]
    assert settlement.waiting() == 0


def test_records_of_other_partitions_free_nothing() -> None:
    settlement: Settlement[str] = Settlement()
    settlement.stepped(3, 10)
    settlement.arrived(3, "txn 7 ok", end_offset=15, now_ms=0)
    assert settlement.stepped(4, 100) == []
    assert settlement.waiting() == 1


def test_waiting_outcomes_are_freed_in_the_order_they_came() -> None:
    settlement: Settlement[str] = Settlement()
    settlement.stepped(0, 0)
    settlement.arrived(0, "a", end_offset=5, now_ms=0)
    settlement.arrived(0, "b", end_offset=9, now_ms=1)
    settlement.arrived(0, "c", end_offset=6, now_ms=2)
    assert settlement.stepped(0, 5) == ["a", "c"]
    assert settlement.stepped(0, 8) == ["b"]


def test_an_unknown_end_or_a_partition_not_yet_stepped_settles_at_once() -> None:
    settlement: Settlement[str] = Settlement()
    assert settlement.arrived(0, "no end known", end_offset=None, now_ms=0)
    assert settlement.arrived(0, "nothing stepped here yet", end_offset=10, now_ms=0)


def test_a_stepped_offset_never_moves_back() -> None:
    settlement: Settlement[str] = Settlement()
    settlement.stepped(0, 20)
    settlement.stepped(0, 5)  # a re-read of older records
    assert settlement.arrived(0, "ok", end_offset=21, now_ms=0)


def test_an_outcome_waiting_too_long_is_freed_as_overdue() -> None:
    settlement: Settlement[str] = Settlement(max_wait_ms=1_000)
    settlement.stepped(0, 0)
    settlement.arrived(0, "old", end_offset=50, now_ms=0)
    settlement.arrived(0, "young", end_offset=50, now_ms=600)
    assert settlement.overdue(now_ms=999) == []
    assert settlement.overdue(now_ms=1_000) == ["old"]
    assert settlement.overdue(now_ms=1_600) == ["young"]
    assert settlement.waiting() == 0
