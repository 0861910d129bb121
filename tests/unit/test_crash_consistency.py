"""A worker killed after any prefix of a step's writes loses nothing on replay.

Faust produces a step's changelog records one by one, so a SIGKILL can leave
any prefix of them durable. The step's inputs were not committed, so they are
processed again against that store. Every (step, prefix) pair is tried here.

Arrival times are part of that state: after any crash and replay, the stored
times (the in-flight txn's earliest, each kind's head chunk's) and the
oldest age read from them are those of a run without a crash.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from streams.codec import MAX_TXN_PART_BYTES, decode_appservice
from streams.delivery import INLINE_BODY_MAX, run_step, state_key
from streams.machine import (
    Input,
    Item,
    ItemKind,
    ItemsArrived,
    MachineConfig,
    Resume,
    RetryDue,
    SourcePosition,
    TxnDeadLettered,
    TxnFailed,
    TxnSucceeded,
    TxnTooLarge,
)
from streams.matrix import AppserviceID, TxnID

AS = AppserviceID("bridge")
CONFIG = MachineConfig(unit_ms=1000)


class LoggingStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.ops: list[tuple[bytes, bytes | None]] = []

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))
        self.data.pop(key, None)


# ~110 bytes per event: a full txn (100) is over INLINE_BODY_MAX and gets its own
# record, smaller ones travel inline in the state; the plan crosses both ways.
# Events 151-160 are ~120 kB each: the txn holding them is over MAX_TXN_PART_BYTES
# and is stored in parts (and they are parked in several backlog chunks first).
PADDING = b"x" * 100
HUGE = range(151, 161)
# Input timestamps grow with the offset (so the oldest undelivered item is the
# first), except event 161's, which an inbox record of the previous release
# brought without one: it arrived when its step read it.
NO_TIME = 161


def input_time(offset: int) -> int | None:
    return None if offset == NO_TIME else 500_000 + 10 * offset


def arrived(*offsets: int) -> ItemsArrived:
    return ItemsArrived(
        tuple(
            Item(
                ItemKind.EVENT,
                SourcePosition(0, o),
                b'{"o":%d,"p":"%s"}' % (o, PADDING * (1200 if o in HUGE else 1)),
                input_time(o),
            )
            for o in offsets
        )
    )


Plan = list[Callable[[TxnID], list[Input]]]
PLAN: Plan = [
    lambda txn: [arrived(0)],
    lambda txn: [arrived(*range(1, 151))],
    lambda txn: [TxnSucceeded(txn)],
    lambda txn: [TxnFailed(txn, "HTTP 500")],
    lambda txn: [arrived(*range(151, 161))],
    lambda txn: [RetryDue(txn)],
    lambda txn: [TxnSucceeded(txn), arrived(161)],
    lambda txn: [TxnSucceeded(txn)],
    lambda txn: [TxnSucceeded(txn)],
]


# Refused as too large (413): a keyed body split, a slice refused again, single items dead-lettered, and an
# inline body split. Delivered: 0-100, 102, 104; dead-lettered: 101, 103.
PLAN_413: Plan = [
    lambda txn: [arrived(0)],
    lambda txn: [arrived(*range(1, 101))],
    lambda txn: [TxnSucceeded(txn)],  # 1-100: over INLINE_BODY_MAX, under its own key
    lambda txn: [TxnTooLarge(txn, "HTTP 413")],  # slice 1-50
    lambda txn: [TxnTooLarge(txn, "HTTP 413")],  # slice 1-25
    lambda txn: [TxnSucceeded(txn)],  # 26-50
    lambda txn: [arrived(101), TxnSucceeded(txn)],  # 51-75
    lambda txn: [TxnSucceeded(txn)],  # 76-100
    lambda txn: [TxnSucceeded(txn)],  # 101
    lambda txn: [TxnTooLarge(txn, "HTTP 413")],
    lambda txn: [TxnDeadLettered(txn)],
    lambda txn: [arrived(102, 103, 104)],  # 102
    lambda txn: [TxnSucceeded(txn)],  # 103-104, inline
    lambda txn: [TxnTooLarge(txn, "HTTP 413")],  # slice 103
    lambda txn: [TxnTooLarge(txn, "HTTP 413")],
    lambda txn: [TxnDeadLettered(txn)],  # slice 104
    lambda txn: [TxnSucceeded(txn)],
]
DELIVERED_413 = [*range(101), 102, 104]
DEAD_413 = [101, 103]


def writes_of_each_step(plan: Plan = PLAN) -> list[int]:
    counts: list[int] = []
    drive(None, counts, plan)
    return counts


# After a step: the oldest arrival it reported, the stored in-flight txn's, and each kind's head chunk's.
Times = tuple[int | None, int | None, tuple[int | None, ...]]


def stored_times(result_oldest: int | None, store: LoggingStore) -> Times:
    stored = decode_appservice(store.data[state_key(AS)])
    heads = tuple(k.head_ms if k.live else None for k in stored.cursor.kinds)
    return result_oldest, stored.inflight_since_ms if stored.machine.inflight else None, heads


def drive(
    crash: tuple[int, int] | None,
    write_counts: list[int] | None = None,
    plan: Plan = PLAN,
    times: list[Times] | None = None,
) -> tuple[list[int], LoggingStore, dict[int, bytes]]:
    delivered, _, store, bodies = drive_with_dead_letters(crash, write_counts, plan, times)
    return delivered, store, bodies


def drive_with_dead_letters(
    crash: tuple[int, int] | None,
    write_counts: list[int] | None = None,
    plan: Plan = PLAN,
    times: list[Times] | None = None,
) -> tuple[list[int], list[int], LoggingStore, dict[int, bytes]]:
    store = LoggingStore()
    inflight = TxnID(0)
    bodies: dict[int, bytes] = {}
    delivered: list[int] = []
    dead: list[int] = []
    now = 1_000_000
    for index, make in enumerate(plan):
        inputs = make(inflight)
        if crash is not None and crash[0] == index:
            before = dict(store.data)
            store.ops.clear()
            run_step(AS, inputs, store, now_ms=now, config=CONFIG)
            survived = store.ops[: crash[1]]
            store.data = before
            for key, value in survived:
                if value is None:
                    store.data.pop(key, None)
                else:
                    store.data[key] = value
            # The restarted worker replays the uncommitted inputs, then every
            # appservice gets the Resume sent after each rebalance.
            inputs = [*inputs, Resume()]
        store.ops.clear()
        result = run_step(AS, inputs, store, now_ms=now, config=CONFIG)  # the (re)played step
        if write_counts is not None:
            write_counts.append(len(store.ops))
        for event in make(inflight):
            if isinstance(event, TxnSucceeded):
                delivered.extend(e["o"] for e in orjson.loads(bodies[event.txn_id])["events"])
            if isinstance(event, TxnDeadLettered):
                dead.extend(e["o"] for e in orjson.loads(bodies[event.txn_id])["events"])
        for send in result.sends:
            inflight = send.txn_id
            assert bodies.setdefault(send.txn_id, send.body) == send.body, "a txn id always carries one body"
        if times is not None:
            times.append(stored_times(result.oldest_ms, store))
        now += 10_000
    return delivered, dead, store, bodies


def times_without_a_crash(plan: Plan = PLAN) -> list[Times]:
    times: list[Times] = []
    drive(None, times=times, plan=plan)
    return times


CASES = [(step, prefix) for step, count in enumerate(writes_of_each_step()) for prefix in range(count)]


def test_the_plan_stores_bodies_both_inline_and_under_their_own_key() -> None:
    sizes = [len(body) for body in drive(None)[2].values()]
    assert min(sizes) <= INLINE_BODY_MAX < max(sizes)


def test_the_plan_stores_a_body_in_parts() -> None:
    assert max(len(body) for body in drive(None)[2].values()) > 2 * MAX_TXN_PART_BYTES


def test_without_a_crash_everything_is_delivered_in_order() -> None:
    delivered, store, _ = drive(None)
    assert delivered == list(range(162))
    assert [k[:2] for k in store.data] == [b"s\x00"], "only the state is left once everything is delivered"


def test_without_a_crash_the_oldest_arrival_is_that_of_the_first_item_not_delivered() -> None:
    oldest = [t[0] for t in times_without_a_crash()]
    # Steps: 0 formed a txn of 0; 1 parked 1-150 (one chunk); 2 delivered 0 (1-100 in flight); 3 failed;
    # 4 parked 151-160; 5 retried; 6 delivered 1-100 (101-160 in flight: 101-150 are the rest of step 1's
    # chunk and keep its time) and event 161 came without a time, at 1,060,000; 7 delivered 101-160; 8, 161.
    assert oldest == [
        input_time(0),
        input_time(0),
        input_time(1),
        input_time(1),
        input_time(1),
        input_time(1),
        input_time(1),
        1_060_000,
        None,
    ]


@pytest.mark.parametrize("crash", CASES, ids=[f"step{s}-after-{p}-writes" for s, p in CASES])
def test_a_crash_after_any_prefix_of_a_step_loses_and_reorders_nothing(crash: tuple[int, int]) -> None:
    delivered, _, _ = drive(crash)
    assert delivered == list(range(162))


CASES_413 = [(step, prefix) for step, count in enumerate(writes_of_each_step(PLAN_413)) for prefix in range(count)]


def test_a_refused_txn_is_delivered_in_slices_and_single_items_dead_lettered() -> None:
    delivered, dead, store, bodies = drive_with_dead_letters(None, plan=PLAN_413)
    assert (delivered, dead) == (DELIVERED_413, DEAD_413)
    assert [k[:2] for k in store.data] == [b"s\x00"], "only the state is left once everything is out"
    assert list(bodies) == sorted(bodies), "txn ids strictly increase"


@pytest.mark.parametrize("crash", CASES_413, ids=[f"step{s}-after-{p}-writes" for s, p in CASES_413])
def test_a_crash_while_splitting_or_dead_lettering_loses_and_reorders_nothing(crash: tuple[int, int]) -> None:
    delivered, dead, _, _ = drive_with_dead_letters(crash, plan=PLAN_413)
    assert (delivered, dead) == (DELIVERED_413, DEAD_413)


@pytest.mark.parametrize("crash", CASES, ids=[f"step{s}-after-{p}-writes" for s, p in CASES])
def test_after_a_crash_at_any_prefix_the_stored_arrival_times_are_those_without_a_crash(
    crash: tuple[int, int],
) -> None:
    times: list[Times] = []
    drive(crash, times=times)
    assert times == times_without_a_crash()


@pytest.mark.parametrize("crash", CASES_413, ids=[f"step{s}-after-{p}-writes" for s, p in CASES_413])
def test_after_a_crash_while_splitting_the_stored_arrival_times_are_those_without_a_crash(
    crash: tuple[int, int],
) -> None:
    times: list[Times] = []
    drive(crash, times=times, plan=PLAN_413)
    assert times == times_without_a_crash(PLAN_413)
