"""The per-appservice state machine: transitions, batching, backoff, parking."""

from __future__ import annotations

import pytest

from streams.errors import InvariantBroken
from streams.machine import (
    _TRANSITIONS,
    AppserviceState,
    CameUp,
    Enqueue,
    ForgetTxn,
    FormTxn,
    Ignored,
    Input,
    Item,
    ItemKind,
    ItemsArrived,
    MachineConfig,
    Phase,
    PingSucceeded,
    Resume,
    RetryDue,
    ScheduleRetry,
    SendTxn,
    SourcePosition,
    TxnFailed,
    TxnSucceeded,
    WentDown,
    step,
)
from streams.matrix import TxnID

CONFIG = MachineConfig(unit_ms=1000)
NOW = 1_700_000_000_000


def items(*offsets: int, kind: ItemKind = ItemKind.EVENT, partition: int = 0) -> ItemsArrived:
    return ItemsArrived(tuple(Item(kind, SourcePosition(partition, o), b'{"o":%d}' % o) for o in offsets))


def run(state: AppserviceState, *inputs: Input, now: int = NOW) -> tuple[AppserviceState, list[object]]:
    out: list[object] = []
    for event in inputs:
        state, commands = step(state, event, now, CONFIG)
        out.extend(commands)
    return state, out


def formed(commands: list[object]) -> list[tuple[int, int, int, int]]:
    return [c.txn.counts for c in commands if isinstance(c, FormTxn)]


def test_idle_appservice_sends_first_item_at_once_alone() -> None:
    state, out = run(AppserviceState(), items(1, 2, 3))
    assert formed(out) == [(1, 0, 0, 0)]
    assert state.phase is Phase.SENDING
    assert state.queued == (2, 0, 0, 0)
    assert [type(c) for c in out] == [Enqueue, FormTxn, SendTxn, Enqueue]


def test_items_arriving_while_sending_go_together_in_next_txn() -> None:
    state, out = run(AppserviceState(), items(1))
    txn = state.inflight
    assert txn is not None
    state, _ = run(state, items(2), items(3))
    state, out = run(state, TxnSucceeded(txn.txn_id))
    assert formed(out) == [(2, 0, 0, 0)]


def test_200_items_behind_a_held_txn_arrive_as_1_100_99() -> None:
    state, out = run(AppserviceState(), *[items(o) for o in range(200)])
    sizes = formed(out)
    while state.inflight is not None:
        state, out = run(state, TxnSucceeded(state.inflight.txn_id))
        sizes += formed(out)
    assert sizes == [(1, 0, 0, 0), (100, 0, 0, 0), (99, 0, 0, 0)]


def test_kinds_have_independent_limits() -> None:
    state, _ = run(AppserviceState(), items(0))
    assert state.inflight is not None
    first = state.inflight.txn_id
    state, _ = run(
        state,
        items(*range(1, 151)),
        items(*range(151, 301), kind=ItemKind.EPHEMERAL),
        items(*range(301, 451), kind=ItemKind.TO_DEVICE),
    )
    state, out = run(state, TxnSucceeded(first))
    assert formed(out) == [(100, 100, 100, 0)]
    assert state.inflight is not None
    state, out = run(state, TxnSucceeded(state.inflight.txn_id))
    assert formed(out) == [(50, 50, 50, 0)]


def test_replayed_items_are_dropped_by_source_position() -> None:
    state, _ = run(AppserviceState(), items(5, 6))
    state, out = run(state, items(5, 6, 7))
    assert state.queued == (2, 0, 0, 0)  # 6 from the first batch, 7 now
    assert [c.payloads for c in out if isinstance(c, Enqueue)] == [(b'{"o":7}',)]


def test_positions_are_tracked_per_input_partition() -> None:
    state, _ = run(AppserviceState(), items(5, partition=0))
    state, _ = run(state, items(1, partition=1))
    assert state.queued == (1, 0, 0, 0)


def test_txn_ids_start_above_the_clock_in_microseconds() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    assert state.inflight.txn_id == NOW * 1000


def test_txn_ids_strictly_increase_even_if_the_clock_goes_back() -> None:
    state, _ = run(AppserviceState(), items(1), items(2), now=NOW)
    assert state.inflight is not None
    first = state.inflight.txn_id
    state, _ = run(state, TxnSucceeded(first), now=NOW - 60_000)
    assert state.inflight is not None
    assert state.inflight.txn_id == first + 1


def test_failure_marks_down_and_schedules_a_retry_of_the_same_txn() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    state, out = run(state, TxnFailed(txn_id, "HTTP 500"))
    assert state.phase is Phase.BACKING_OFF
    assert out == [WentDown(txn_id, "HTTP 500"), ScheduleRetry(txn_id, NOW + 2000, 1)]


@pytest.mark.parametrize("failures,expected_delay_s", [(1, 2), (2, 4), (3, 8), (4, 16), (9, 512), (12, 512)])
def test_retries_back_off_exponentially_up_to_512_units(failures: int, expected_delay_s: int) -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    delay = None
    for _ in range(failures):
        state, out = run(state, TxnFailed(txn_id, "down"))
        delay = next(c.due_ms for c in out if isinstance(c, ScheduleRetry)) - NOW
        state, out = run(state, RetryDue(txn_id), now=state.retry_at_ms or 0)
        assert out == [SendTxn(txn_id, state.attempt)]
    assert delay == expected_delay_s * 1000


def test_retry_due_sends_the_same_txn_id() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    state, _ = run(state, TxnFailed(txn_id, "x"))
    state, out = run(state, RetryDue(txn_id), now=NOW + 2000)
    assert out == [SendTxn(txn_id, 1)]
    assert state.phase is Phase.RETRYING


def test_early_retry_timer_rearms_instead_of_sending() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    state, _ = run(state, TxnFailed(txn_id, "x"))
    state, out = run(state, RetryDue(txn_id), now=NOW + 1999)
    assert out == [ScheduleRetry(txn_id, NOW + 2000, 1)]
    assert state.phase is Phase.BACKING_OFF


def test_items_are_parked_while_down_and_drain_in_full_txns_after_success() -> None:
    state, _ = run(AppserviceState(), items(0))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    state, _ = run(state, TxnFailed(txn_id, "x"))
    state, out = run(state, *[items(o) for o in range(1, 251)])
    assert formed(out) == [] and not any(isinstance(c, SendTxn) for c in out)
    state, _ = run(state, RetryDue(txn_id), now=NOW + 2000)
    state, out = run(state, TxnSucceeded(txn_id), now=NOW + 2100)
    assert CameUp(txn_id, 2100) in out
    sizes = formed(out)
    while state.inflight is not None:
        state, out = run(state, TxnSucceeded(state.inflight.txn_id))
        sizes += formed(out)
    assert sizes == [(100, 0, 0, 0), (100, 0, 0, 0), (50, 0, 0, 0)]
    assert state.phase is Phase.IDLE and state.attempt == 0


def test_success_resets_the_backoff() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    first = state.inflight.txn_id
    state, _ = run(state, TxnFailed(first, "x"), TxnFailed(first, "x"))  # second is a duplicate
    state, _ = run(state, RetryDue(first), now=NOW + 2000)
    state, _ = run(state, TxnFailed(first, "x"))
    assert state.attempt == 2
    state, _ = run(state, RetryDue(first), now=NOW + 10_000)
    state, _ = run(state, TxnSucceeded(first), items(2))
    assert state.inflight is not None
    state, out = run(state, TxnFailed(state.inflight.txn_id, "x"))
    assert next(c for c in out if isinstance(c, ScheduleRetry)).attempt == 1


def test_retry_after_stretches_the_delay() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    state, out = run(state, TxnFailed(txn_id, "HTTP 429", retry_after_ms=30_000))
    assert ScheduleRetry(txn_id, NOW + 30_000, 1) in out


def test_stale_outcomes_are_ignored() -> None:
    state, _ = run(AppserviceState(), items(1))
    before = state
    state, out = run(state, TxnSucceeded(TxnID(42)), TxnFailed(TxnID(42), "x"), RetryDue(TxnID(42)))
    assert state == before
    assert all(isinstance(c, Ignored) for c in out) and len(out) == 3


def test_late_success_of_an_earlier_attempt_brings_the_appservice_up() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    state, _ = run(state, TxnFailed(txn_id, "timeout"))
    state, out = run(state, TxnSucceeded(txn_id))
    assert state.phase is Phase.IDLE
    assert ForgetTxn(txn_id) in out


def test_resume_resends_what_was_in_flight() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    state, out = run(state, Resume())
    assert out == [SendTxn(state.inflight.txn_id, 0)]


def test_resume_rearms_the_retry_timer_of_a_down_appservice() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    state, _ = run(state, TxnFailed(txn_id, "x"))
    state, out = run(state, Resume())
    assert out == [ScheduleRetry(txn_id, NOW + 2000, 1)]


def test_ping_success_retries_a_backing_off_txn_at_once() -> None:
    state, _ = run(AppserviceState(), items(1))
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    state, _ = run(state, TxnFailed(txn_id, "x"))
    state, out = run(state, PingSucceeded())
    assert out == [SendTxn(txn_id, 1)]
    assert state.phase is Phase.RETRYING


def test_every_phase_has_a_transition_for_every_non_outcome_input() -> None:
    for phase in Phase:
        for kind in (ItemsArrived, Resume, PingSucceeded):
            assert (phase, kind) in _TRANSITIONS


def test_an_impossible_state_raises() -> None:
    with pytest.raises(InvariantBroken):
        step(AppserviceState(phase=Phase.SENDING), Resume(), NOW, CONFIG)


def test_items_parked_in_one_input_become_one_enqueue_per_run_of_a_kind_in_arrival_order() -> None:
    sending, _ = run(AppserviceState(), items(0))
    mixed = ItemsArrived(
        tuple(
            Item(kind, SourcePosition(0, offset), b"%d" % offset)
            for kind, offset in [
                (ItemKind.EVENT, 1),
                (ItemKind.EVENT, 2),
                (ItemKind.EPHEMERAL, 3),
                (ItemKind.EVENT, 4),
                (ItemKind.EVENT, 3),  # a replay: dropped
            ]
        )
    )
    state, out = run(sending, mixed)
    assert out == [
        Enqueue(ItemKind.EVENT, (b"1", b"2"), NOW),  # no input time: arrived now
        Enqueue(ItemKind.EPHEMERAL, (b"3",), NOW),
        Enqueue(ItemKind.EVENT, (b"4",), NOW),
    ]
    assert state.queued == (3, 1, 0, 0)


def test_an_enqueued_run_carries_the_earliest_input_time_of_its_items_and_a_future_time_counts_as_now() -> None:
    sending, _ = run(AppserviceState(), items(0))
    times = [NOW - 50, NOW - 90, NOW + 5_000, None]
    mixed = ItemsArrived(
        tuple(Item(ItemKind.EVENT, SourcePosition(0, 1 + n), b"%d" % n, t) for n, t in enumerate(times))
    )
    _, out = run(sending, mixed)
    assert [(c.arrived_ms, len(c.payloads)) for c in out if isinstance(c, Enqueue)] == [(NOW - 90, 4)]
    _, out = run(sending, ItemsArrived((Item(ItemKind.EVENT, SourcePosition(0, 1), b"1", NOW + 5_000),)))
    assert [c.arrived_ms for c in out if isinstance(c, Enqueue)] == [NOW]
