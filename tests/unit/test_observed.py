"""What the worker exports about itself: outcome labels, appservice gauges, ownership, lag, readiness."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.delivery import run_step
from streams.machine import (
    AppserviceState,
    Input,
    Item,
    ItemKind,
    ItemsArrived,
    MachineConfig,
    Phase,
    PingSucceeded,
    Resume,
    RetryDue,
    SourcePosition,
    Txn,
    TxnFailed,
    TxnSucceeded,
)
from streams.matrix import AppserviceID, TxnID
from streams.observed import (
    FROM_START,
    OldestUnconsumed,
    OwnedAppservices,
    group_lag,
    readiness,
    router_committed,
    router_lag,
    undelivered,
    view,
)
from streams.outcome import ConnectFailed, Delivered, FailureReason, HttpError, Outcome, TimedOut, failure_reason

BRIDGE, BOT = AppserviceID("bridge"), AppserviceID("bot")


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Delivered(200), None),
        (HttpError(400, "M_BAD_JSON"), FailureReason.CLIENT_ERROR),
        (HttpError(404), FailureReason.CLIENT_ERROR),
        (HttpError(429, retry_after_ms=1000), FailureReason.CLIENT_ERROR),
        (HttpError(500), FailureReason.SERVER_ERROR),
        (HttpError(503), FailureReason.SERVER_ERROR),
        (HttpError(200, "not JSON"), FailureReason.BAD_RESPONSE),
        (HttpError(302), FailureReason.BAD_RESPONSE),
        (HttpError(101), FailureReason.BAD_RESPONSE),
        (TimedOut("connect"), FailureReason.TIMEOUT),
        (TimedOut("response"), FailureReason.TIMEOUT),
        (ConnectFailed("ConnectionRefusedError"), FailureReason.CONNECT),
        (None, FailureReason.INTERNAL),
    ],
)
def test_every_outcome_maps_to_one_fixed_failure_label(outcome: Outcome | None, reason: FailureReason | None) -> None:
    assert failure_reason(outcome) is reason


def test_failure_labels_are_the_documented_fixed_set() -> None:
    assert [r.value for r in FailureReason] == ["4xx", "5xx", "timeout", "connect", "bad_response", "internal"]


def test_an_idle_appservice_is_up_with_nothing_behind() -> None:
    v = view(AppserviceState(), now_ms=5_000)
    assert (v.up, v.phase, v.backlog, v.down_for_s, v.attempt) == (True, Phase.IDLE, (0, 0, 0, 0), 0.0, 0)


def test_the_backlog_counts_parked_and_in_flight_items_per_kind() -> None:
    state = AppserviceState(phase=Phase.SENDING, inflight=Txn(TxnID(1), (100, 3, 0, 1)), queued=(250, 0, 7, 0))
    assert view(state, now_ms=0).backlog == (350, 3, 7, 1)
    assert undelivered(state) == 361  # what the DOWN and UP log lines say


def test_a_down_appservice_reports_how_long_it_has_been_down() -> None:
    state = AppserviceState(
        phase=Phase.BACKING_OFF,
        inflight=Txn(TxnID(1), (1, 0, 0, 0)),
        attempt=3,
        retry_at_ms=90_000,
        down_since_ms=10_000,
        queued=(30, 0, 0, 0),
    )
    v = view(state, now_ms=70_500)
    assert (v.up, v.phase, v.backlog[0], v.down_for_s, v.attempt) == (False, Phase.BACKING_OFF, 31, 60.5, 3)
    assert view(state, now_ms=9_000).down_for_s == 0  # another worker's clock behind: never negative


def sending(txn_id: int, events: int) -> AppserviceState:
    return AppserviceState(phase=Phase.SENDING, inflight=Txn(TxnID(txn_id), (events, 0, 0, 0)))


def test_only_appservices_of_owned_partitions_are_kept() -> None:
    owned = OwnedAppservices()
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)  # before any assignment: not owned for sure
    assert owned.snapshot() == []
    owned.assigned([1, 2])
    owned.stepped(BRIDGE, 1, sending(7, 2), 1_000)
    owned.stepped(BOT, 3, sending(8, 1), 0)  # a partition of another worker
    assert owned.snapshot() == [(BRIDGE, sending(7, 2), 1_000)]
    assert owned.owns(BRIDGE) and not owned.owns(BOT)


def test_the_latest_step_wins_and_gives_the_counts_of_the_txn_in_flight() -> None:
    owned = OwnedAppservices()
    owned.assigned([1])
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)
    owned.stepped(BRIDGE, 1, sending(9, 100), 0)
    assert owned.snapshot() == [(BRIDGE, sending(9, 100), 0)]
    assert owned.inflight(BRIDGE, 9) == (100, 0, 0, 0)
    assert owned.inflight(BRIDGE, 7) is None  # no longer in flight
    assert owned.inflight(BOT, 9) is None


def test_a_revocation_drops_every_series_and_the_next_assignment_keeps_only_its_partitions() -> None:
    owned = OwnedAppservices()
    owned.assigned([1, 2])
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)
    owned.stepped(BOT, 2, sending(8, 1), 0)
    owned.revoked()
    assert owned.snapshot() == []
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)  # a late step between revocation and assignment
    assert owned.snapshot() == []
    owned.assigned([1])
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)
    owned.assigned([2])  # partition 1 moved away without a revocation seen here
    assert owned.snapshot() == []


def stats(partitions: dict[str, dict[str, int]]) -> dict[str, object]:
    return {"topics": {"matrix.events": {"partitions": partitions}}}


def test_router_lag_is_librdkafkas_consumer_lag_of_assigned_partitions() -> None:
    doc = stats(
        {
            "0": {"consumer_lag": 12, "ls_offset": 40, "committed_offset": 28},
            "1": {"consumer_lag": -1, "ls_offset": 5, "committed_offset": -1001},  # never committed
            "2": {"consumer_lag": -1, "ls_offset": -1001, "committed_offset": -1001},  # end unknown yet
            "3": {"consumer_lag": 4, "ls_offset": 9, "committed_offset": 5},  # not assigned here
            "-1": {"consumer_lag": -1},
        }
    )
    assert router_lag(doc, "matrix.events", [0, 1, 2]) == {0: 12, 1: 5}
    assert router_lag(doc, "other", [0]) == {}
    assert router_lag({}, "matrix.events", [0]) == {}


def test_group_lag_is_highwater_minus_committed() -> None:
    assert group_lag(40, 28) == 12
    assert group_lag(40, 40) == 0
    assert group_lag(0, None) == 0
    assert group_lag(5, None) == 5  # never committed: from offset 0
    assert group_lag(None, 3) is None
    assert group_lag(3, 5) == 0  # a stale highwater never gives a negative lag


def test_readiness_names_every_reason() -> None:
    assert readiness(router_started=True, router_alive=True, assigned=True, rebalancing=False) == []
    assert readiness(router_started=False, router_alive=False, assigned=False, rebalancing=True) == [
        "router not started",
        "no partition assignment",
        "rebalancing",
    ]
    assert readiness(router_started=True, router_alive=False, assigned=True, rebalancing=False) == [
        "router thread ended"
    ]


class Owner:
    """One appservice stepped through ``run_step`` at given times, as the deliverer does; its store outlives owners."""

    def __init__(self) -> None:
        self.store: dict[bytes, bytes] = {}
        self.state = AppserviceState()

    def at(self, now_ms: int, *inputs: Input) -> int | None:
        """Step ``inputs`` at ``now_ms``; when the oldest item not yet delivered arrived."""
        result = run_step(BRIDGE, inputs, DictStore(self.store), now_ms=now_ms, config=MachineConfig())
        self.state = result.state
        return result.oldest_ms

    def txn(self) -> TxnID:
        assert self.state.inflight is not None
        return self.state.inflight.txn_id


class DictStore:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


def items(*offsets: int, kind: ItemKind = ItemKind.EVENT, arrived_ms: int | None = None) -> ItemsArrived:
    return ItemsArrived(tuple(Item(kind, SourcePosition(0, o), b"{}", arrived_ms) for o in offsets))


def test_the_oldest_undelivered_item_ages_from_its_input_timestamp_until_delivered() -> None:
    owner = Owner()
    assert owner.at(1_000) is None  # nothing undelivered
    assert owner.at(2_000, items(0, arrived_ms=1_500)) == 1_500  # formed and in flight at once: undelivered still
    first = owner.txn()
    assert owner.at(3_000, items(*range(1, 31), arrived_ms=2_900)) == 1_500  # parked behind it
    assert owner.at(4_000, TxnFailed(first, "HTTP 503")) == 1_500
    assert owner.at(5_000, items(31, kind=ItemKind.EPHEMERAL, arrived_ms=4_900)) == 1_500
    assert owner.at(9_000, TxnSucceeded(first)) == 2_900  # event 0 delivered: the 30 parked are oldest
    second = owner.txn()
    assert owner.at(9_500, TxnSucceeded(second)) is None  # 30 events and the ephemeral in one txn: all delivered
    assert view(owner.state, 10_000, None).oldest_s == 0


def test_items_left_in_a_partly_taken_chunk_keep_its_time_and_the_next_chunk_brings_its_own() -> None:
    owner = Owner()
    owner.at(1_000, items(0, arrived_ms=1_000))
    first = owner.txn()
    owner.at(2_000, items(*range(1, 151), arrived_ms=2_000))  # 150 parked: one chunk
    owner.at(3_000, items(151, arrived_ms=3_000))  # a second chunk
    assert owner.at(4_000, TxnSucceeded(first)) == 2_000  # the next txn takes 100 of the 150: in flight
    assert owner.at(5_000, TxnSucceeded(owner.txn())) == 2_000  # 50 of the first chunk, and the second, in flight
    assert owner.at(6_000, TxnSucceeded(owner.txn())) is None


def test_an_item_without_a_time_arrived_when_its_step_read_it() -> None:
    assert Owner().at(7_000, items(0)) == 7_000  # an inbox record written by the previous release


def test_a_time_ahead_of_the_steps_clock_counts_as_now() -> None:
    assert Owner().at(7_000, items(0, arrived_ms=9_000)) == 7_000  # a producer's clock ahead: never a negative age


def test_the_oldest_age_survives_a_change_of_owner() -> None:
    owner = Owner()
    owner.at(10_000, items(0, arrived_ms=10_000))
    owner.at(11_000, TxnFailed(owner.txn(), "HTTP 503"))
    owner.at(12_000, items(*range(1, 41), arrived_ms=12_000))
    # Another worker takes the partition over: it has only the store, and steps the Resume every rebalance ends with.
    next_owner = OwnedAppservices()
    next_owner.assigned([0])
    result = run_step(BRIDGE, [Resume()], DictStore(owner.store), now_ms=50_000, config=MachineConfig())
    next_owner.stepped(BRIDGE, 0, result.state, result.oldest_ms)
    [(_, state, oldest_ms)] = next_owner.snapshot()
    assert view(state, 80_000, oldest_ms).oldest_s == 70.0


def test_the_state_keeps_a_constant_size_however_long_the_outage() -> None:
    owner = Owner()
    owner.at(0, items(0, arrived_ms=0))
    owner.at(1, TxnFailed(owner.txn(), "HTTP 503"))
    sizes = []
    for offset in range(1, 2_001):  # one event per step, each at its own time
        owner.at(offset * 250, items(offset, arrived_ms=offset * 250))
        sizes.append(len(owner.store[b"s\x00" + BRIDGE.encode()]))
    assert max(sizes) - sizes[0] <= 12  # counters gain digits (queued, offsets, chunk numbers): nothing per item
    assert owner.at(600_000) == 0


SMALL = MachineConfig(unit_ms=10, max_per_kind=(3, 2, 2, 1_000))
PAYLOAD = b'{"user":"@u:hs"}'  # valid as any kind, a device change included
walk = st.lists(
    st.one_of(
        st.tuples(st.just("items"), st.lists(st.sampled_from(list(ItemKind)), min_size=1, max_size=5)),
        st.tuples(st.sampled_from(["ok", "fail", "due", "ping", "resume"]), st.just([])),
    ),
    max_size=60,
)


def walk_run_step(
    actions: list[tuple[str, list[ItemKind]]], replay: bool, time_of: Callable[[int, int], int | None]
) -> Iterator[tuple[int | None, dict[ItemKind, list[int]], AppserviceState, int]]:
    """The machine through ``run_step`` with a per-item record of undelivered arrival times, per kind FIFO.

    ``time_of(now, n)``: the input timestamp of the step's n-th new item. Yields after each step.
    """
    store: dict[bytes, bytes] = {}
    state, now, offset = AppserviceState(), 0, 0
    pending: dict[ItemKind, list[int]] = {kind: [] for kind in ItemKind}
    for action, kinds in actions:
        now += 1_500
        inflight = state.inflight
        if action == "items":
            batch = []
            for n, kind in enumerate(kinds):
                arrived = time_of(now, n)
                batch.append(Item(kind, SourcePosition(0, offset), PAYLOAD, arrived))
                pending[kind].append(now if arrived is None else min(arrived, now))
                offset += 1
            if replay and offset > len(kinds):  # an already applied item again: dropped by the machine
                batch.insert(0, Item(ItemKind.EVENT, SourcePosition(0, offset - len(kinds) - 1), PAYLOAD, 0))
            event: Input = ItemsArrived(tuple(batch))
        elif inflight is None:
            continue
        elif action == "ok":
            event = TxnSucceeded(inflight.txn_id)
        elif action == "fail":
            event = TxnFailed(inflight.txn_id, "HTTP 500")
        elif action == "due":
            event = RetryDue(inflight.txn_id)
            now = max(now, state.retry_at_ms or 0)
        elif action == "ping":
            event = PingSucceeded()
        else:
            event = Resume()
        result = run_step(BRIDGE, [event], DictStore(store), now_ms=now, config=SMALL)
        state = result.state
        if action == "ok" and inflight is not None:
            for kind in ItemKind:
                del pending[kind][: inflight.counts[kind]]
        assert [len(times) for times in pending.values()] == list(view(state, now).backlog)
        yield result.oldest_ms, pending, state, now


@settings(max_examples=200, deadline=None)
@given(walk, st.booleans())
def test_with_one_time_per_step_the_oldest_arrival_is_exactly_that_of_the_oldest_item_not_delivered(
    actions: list[tuple[str, list[ItemKind]]], replay: bool
) -> None:
    for oldest, pending, _, _ in walk_run_step(actions, replay, lambda now, n: now - 700):
        heads = [times[0] for times in pending.values() if times]
        assert oldest == (min(heads) if heads else None)


def test_router_committed_is_where_the_router_resumes_or_the_log_start() -> None:
    doc = stats({"0": {"committed_offset": 28}, "1": {"committed_offset": -1001}, "3": {"committed_offset": 5}})
    assert router_committed(doc, "matrix.events", [0, 1, 2]) == {0: 28, 1: FROM_START}


def test_oldest_unconsumed_wants_partitions_behind_most_records_first_and_bounded() -> None:
    oldest = OldestUnconsumed()
    behind = {("in", 0): (0, 10), ("in", 1): (5, 20), ("in", 2): (50, FROM_START), ("in", 3): (7, 3)}
    assert oldest.wanted("g", behind) == [("in", 2, FROM_START), ("in", 3, 3), ("in", 1, 20)]
    assert oldest.wanted("g", behind, limit=1) == [("in", 2, FROM_START)]


def test_a_partition_read_is_not_read_again_until_its_committed_offset_moves() -> None:
    oldest = OldestUnconsumed()
    oldest.found("g", "in", 1, 20, 1_000)
    assert oldest.wanted("g", {("in", 1): (5, 20)}) == []
    assert oldest.wanted("g", {("in", 1): (3, 22)}) == [("in", 1, 22)]
    # Until then its age is that of the record read last: an upper bound.
    assert oldest.age_s("g", "in", 1, 3, now_ms=4_000) == 3.0


def test_the_lag_in_seconds_is_the_age_of_the_record_read_and_0_when_caught_up() -> None:
    oldest = OldestUnconsumed()
    assert oldest.age_s("g", "in", 1, 5, now_ms=10_000) is None  # behind, not read yet: no figure
    oldest.found("g", "in", 1, 20, 2_500)
    assert oldest.age_s("g", "in", 1, 5, now_ms=10_000) == 7.5
    assert oldest.age_s("g", "in", 1, 0, now_ms=10_000) == 0.0
    assert oldest.age_s("g", "in", 1, 5, now_ms=1_000) == 0.0  # a producer clock ahead of ours: never negative


def test_a_partition_caught_up_or_gone_is_forgotten_and_read_again_when_behind() -> None:
    oldest = OldestUnconsumed()
    oldest.found("g", "in", 1, 20, 1_000)
    oldest.found("g", "in", 2, 30, 1_000)
    oldest.found("other", "in", 1, 20, 1_000)
    assert oldest.wanted("g", {("in", 1): (0, 25)}) == []  # caught up; partition 2 no longer reported
    assert oldest.age_s("g", "in", 2, 4, now_ms=2_000) is None
    assert oldest.wanted("g", {("in", 1): (4, 20)}) == [("in", 1, 20)]  # behind again at the same offset
    assert oldest.age_s("other", "in", 1, 4, now_ms=2_000) == 1.0  # another group's readings stay


def test_forget_drops_the_readings_of_partitions_no_longer_consumed_here() -> None:
    oldest = OldestUnconsumed()
    oldest.found("g", "in", 1, 20, 1_000)
    oldest.found("g", "in", 2, 20, 1_000)
    oldest.found("g", "other", 1, 20, 1_000)
    oldest.forget("g", "in", keep=[2])
    assert oldest.age_s("g", "in", 1, 4, now_ms=2_000) is None
    assert oldest.age_s("g", "in", 2, 4, now_ms=2_000) == 1.0
    assert oldest.age_s("g", "other", 1, 4, now_ms=2_000) == 1.0


@settings(max_examples=200, deadline=None)
@given(walk, st.booleans(), st.randoms(use_true_random=False))
def test_with_any_times_the_oldest_arrival_is_never_later_than_that_of_an_item_at_the_head(
    actions: list[tuple[str, list[ItemKind]]], replay: bool, rng: random.Random
) -> None:
    """Out-of-order, missing and future times: overstated at most (a chunk's earliest), never understated.

    Only the head of each kind's queue is kept: an item queued behind a later-stamped one counts once it is ahead.
    """

    def time_of(now: int, n: int) -> int | None:
        return None if rng.random() < 0.2 else now + rng.randint(-5_000, 1_000)

    for oldest, pending, _, _ in walk_run_step(actions, replay, time_of):
        heads = [times[0] for times in pending.values() if times]
        assert (oldest is None) == (not heads)
        assert oldest is None or oldest <= min(heads)
