"""An inbox partition quiet with records past its committed offset is read again from there, once per quiet spell."""

from __future__ import annotations

from streams.stalls import StallWatch


def watch(*partitions: int) -> StallWatch:
    stalls = StallWatch(quiet_s=5.0)
    stalls.owned(partitions, now=100.0)
    return stalls


def test_a_partition_quiet_with_records_past_its_committed_offset_is_read_again_from_it() -> None:
    stalls = watch(2)
    assert stalls.stalled(105.0, ends={2: 60}, committed={2: 59}, rereading=()) == [(2, 59)]


def test_a_partition_is_not_stalled_before_it_has_been_quiet_for_quiet_s() -> None:
    stalls = watch(2)
    assert stalls.stalled(104.9, ends={2: 60}, committed={2: 59}, rereading=()) == []


def test_a_record_arriving_starts_the_quiet_spell_again() -> None:
    stalls = watch(2)
    stalls.arrived(2, 103.0)
    assert stalls.stalled(107.9, ends={2: 60}, committed={2: 59}, rereading=()) == []
    assert stalls.stalled(108.0, ends={2: 60}, committed={2: 59}, rereading=()) == [(2, 59)]


def test_a_partition_committed_to_its_end_is_not_stalled() -> None:
    stalls = watch(2)
    assert stalls.stalled(200.0, ends={2: 60}, committed={2: 60}, rereading=()) == []


def test_a_partition_the_position_guard_is_reading_again_is_left_to_it() -> None:
    stalls = watch(2)
    assert stalls.stalled(200.0, ends={2: 60}, committed={2: 40}, rereading={2}) == []


def test_a_partition_whose_end_is_not_known_yet_is_not_stalled() -> None:
    stalls = watch(2)
    assert stalls.stalled(200.0, ends={2: None}, committed={2: 40}, rereading=()) == []


def test_a_partition_with_nothing_committed_is_read_again_from_its_start() -> None:
    stalls = watch(2)
    assert stalls.stalled(105.0, ends={2: 3}, committed={2: None}, rereading=()) == [(2, 0)]


def test_a_partition_sought_again_waits_a_whole_quiet_spell_before_the_next_seek() -> None:
    stalls = watch(2)
    assert stalls.stalled(105.0, ends={2: 60}, committed={2: 59}, rereading=()) == [(2, 59)]
    assert stalls.stalled(109.9, ends={2: 60}, committed={2: 59}, rereading=()) == []
    assert stalls.stalled(110.0, ends={2: 60}, committed={2: 59}, rereading=()) == [(2, 59)]


def test_only_owned_partitions_are_watched_and_a_new_assignment_starts_each_quiet_spell_afresh() -> None:
    stalls = watch(1, 2)
    stalls.owned([2, 3], now=104.0)
    stalls.arrived(1, 104.0)  # no longer owned: ignored
    ends, committed = {1: 9, 2: 9, 3: 9}, {1: 0, 2: 0, 3: 0}
    assert stalls.stalled(108.0, ends, committed, rereading=()) == []
    assert stalls.stalled(109.0, ends, committed, rereading=()) == [(2, 0), (3, 0)]
